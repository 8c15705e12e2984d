//! Built-in workloads for `tidal bench`, run as `tidal worker …` in their own cgroups: the online TCP
//! service and the offline antagonists (CPU spinner, memory-bandwidth streamer, cache thrasher). Each
//! antagonist counts its work units in a file it maps shared (`UnitCounter`), so offline throughput
//! is measured, not assumed.

use std::hint::black_box;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Spin iterations that take about one microsecond on this CPU.
pub fn calibrate_spin() -> u64 {
    let iters = 2_000_000u64;
    let t = Instant::now();
    spin(iters);
    let us = t.elapsed().as_secs_f64() * 1e6;
    ((iters as f64 / us.max(1.0)) as u64).max(1)
}

#[inline(never)]
pub fn spin(iters: u64) -> u64 {
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    for i in 0..iters {
        x = black_box(x.rotate_left(5) ^ i).wrapping_mul(0x2545_F491_4F6C_DD1D);
    }
    x
}

/// Upper bounds of the server's latency histogram, in seconds: 25 µs × 1.25ⁿ up to about 2 s.
pub fn latency_bounds() -> Vec<f64> {
    (0..52).map(|i| 25e-6 * 1.25f64.powi(i)).collect()
}

/// The server's own latency histogram (intended send time → answer), as Prometheus exposes one.
pub struct LatencyHist {
    bounds: Vec<f64>,
    counts: Vec<AtomicU64>,
    sum_ns: AtomicU64,
    count: AtomicU64,
}

/// The histogram's name on `/metrics`.
pub const LATENCY_METRIC: &str = "tidal_bench_request_duration_seconds";

impl LatencyHist {
    pub fn new() -> LatencyHist {
        let bounds = latency_bounds();
        LatencyHist {
            counts: bounds.iter().map(|_| AtomicU64::new(0)).collect(),
            bounds,
            sum_ns: AtomicU64::new(0),
            count: AtomicU64::new(0),
        }
    }

    pub fn record(&self, ns: u64) {
        let s = ns as f64 / 1e9;
        if let Some(i) = self.bounds.iter().position(|b| s <= *b) {
            self.counts[i].fetch_add(1, Ordering::Relaxed);
        }
        self.sum_ns.fetch_add(ns, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
    }

    /// The text exposition format (cumulative buckets, `+Inf`, sum, count).
    pub fn exposition(&self) -> String {
        let mut out = format!(
            "# HELP {LATENCY_METRIC} Time from a request's intended send time to its answer.\n# TYPE {LATENCY_METRIC} histogram\n"
        );
        let mut cum = 0u64;
        for (b, c) in self.bounds.iter().zip(&self.counts) {
            cum += c.load(Ordering::Relaxed);
            out.push_str(&format!("{LATENCY_METRIC}_bucket{{le=\"{b:.9}\"}} {cum}\n"));
        }
        let count = self.count.load(Ordering::Relaxed);
        out.push_str(&format!("{LATENCY_METRIC}_bucket{{le=\"+Inf\"}} {count}\n"));
        out.push_str(&format!(
            "{LATENCY_METRIC}_sum {:.9}\n{LATENCY_METRIC}_count {count}\n",
            self.sum_ns.load(Ordering::Relaxed) as f64 / 1e9
        ));
        out
    }
}

impl Default for LatencyHist {
    fn default() -> Self {
        Self::new()
    }
}

/// Serves `GET /metrics` (any path) with the latency histogram, one connection at a time.
fn serve_metrics(l: TcpListener, h: Arc<LatencyHist>) {
    for conn in l.incoming() {
        let Ok(mut c) = conn else { continue };
        let _ = c.set_read_timeout(Some(Duration::from_secs(2)));
        let mut req = [0u8; 2048];
        let _ = c.read(&mut req);
        let body = h.exposition();
        let _ = write!(
            c,
            "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        );
    }
}

/// A file-backed working set the service touches on every request (pages the page-cache antagonist
/// can evict: an anonymous one never major-faults without swap).
pub struct WorkingSet {
    ptr: *const u8,
    len: usize,
}

// SAFETY: the mapping is read-only and lives as long as the process; readers only load bytes.
unsafe impl Send for WorkingSet {}
// SAFETY: as above: shared read-only memory.
unsafe impl Sync for WorkingSet {}

impl WorkingSet {
    /// Writes `bytes` of data to `path` (real blocks, so an evicted page is read back from disk)
    /// and maps it.
    pub fn create(path: &str, bytes: u64) -> std::io::Result<WorkingSet> {
        let chunk = vec![0x5au8; 1 << 20];
        let mut f = std::fs::File::create(path)?;
        let mut left = bytes;
        while left > 0 {
            let n = left.min(chunk.len() as u64) as usize;
            f.write_all(&chunk[..n])?;
            left -= n as u64;
        }
        f.sync_all()?;
        let f = std::fs::File::open(path)?;
        use std::os::unix::io::AsRawFd;
        // SAFETY: mapping a regular file read-only and shared; the descriptor is valid here, and
        // the mapping outlives it by design (the kernel keeps the file).
        let p = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                bytes as usize,
                libc::PROT_READ,
                libc::MAP_SHARED,
                f.as_raw_fd(),
                0,
            )
        };
        if p == libc::MAP_FAILED {
            return Err(std::io::Error::last_os_error());
        }
        Ok(WorkingSet {
            ptr: p as *const u8,
            len: bytes as usize,
        })
    }

    /// Touches `pages` pseudo-random pages, seeded by `seed`.
    pub fn touch(&self, seed: u64, pages: usize) -> u64 {
        let n = (self.len / 4096).max(1);
        let mut x = seed | 1;
        let mut acc = 0u64;
        for _ in 0..pages {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let off = ((x as usize) % n) * 4096;
            // SAFETY: off < len: inside the mapping.
            acc = acc.wrapping_add(u64::from(unsafe { *self.ptr.add(off) }));
        }
        acc
    }
}

/// Serves 16-byte requests (`id`, intended send time on CLOCK_MONOTONIC) with `work_us` of CPU work
/// each, echoing them, and times each into a histogram served at `/metrics` on a second port
/// (written to `<ready>.metrics` before `<ready>` gets the service port). With a working set, each
/// request also touches 16 of its pages.
pub fn serve(
    port: u16,
    work_us: u64,
    ready: Option<&str>,
    working_set: Option<u64>,
) -> std::io::Result<()> {
    let per_us = calibrate_spin();
    let ws = match (working_set, ready) {
        (Some(b), Some(r)) if b > 0 => Some(Arc::new(WorkingSet::create(&format!("{r}.ws"), b)?)),
        _ => None,
    };
    let l = TcpListener::bind(("127.0.0.1", port))?;
    let hist = Arc::new(LatencyHist::new());
    let ml = TcpListener::bind(("127.0.0.1", 0))?;
    let mport = ml.local_addr()?.port();
    let h = Arc::clone(&hist);
    std::thread::spawn(move || serve_metrics(ml, h));
    if let Some(f) = ready {
        std::fs::write(format!("{f}.metrics"), mport.to_string())?;
        std::fs::write(f, l.local_addr()?.port().to_string())?;
    }
    for conn in l.incoming() {
        let Ok(mut c) = conn else { continue };
        let _ = c.set_nodelay(true);
        let h = Arc::clone(&hist);
        let ws = ws.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 16];
            while c.read_exact(&mut buf).is_ok() {
                black_box(spin(work_us * per_us));
                if let Some(w) = &ws {
                    black_box(w.touch(
                        u64::from_le_bytes(buf[..8].try_into().unwrap_or([0; 8])),
                        16,
                    ));
                }
                let intended = u64::from_le_bytes(buf[8..16].try_into().unwrap_or([0; 8]));
                h.record(crate::mono::mono_ns().saturating_sub(intended));
                if c.write_all(&buf).is_err() {
                    break;
                }
            }
        });
    }
    Ok(())
}

/// Cumulative work units in the first 8 bytes of a file mapped shared (or of anonymous memory when
/// no file is named). The threads add to it and the bench reads the file's mapping: a reading needs
/// no thread of the worker to run. A reporting thread that wrote the count out every 50 ms did, and
/// an offline worker can wait seconds for a CPU: its count then stood still for a whole window.
pub struct UnitCounter {
    map: memmap2::MmapMut,
}

impl UnitCounter {
    pub fn new(path: Option<&str>) -> std::io::Result<UnitCounter> {
        let map = match path {
            Some(p) => {
                // A new file, never one a previous worker may still have mapped.
                match std::fs::remove_file(p) {
                    Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
                    _ => {}
                }
                let f = std::fs::OpenOptions::new()
                    .read(true)
                    .write(true)
                    .create_new(true)
                    .open(p)?;
                f.set_len(8)?;
                // SAFETY: a file this process created and sized; others only read it.
                unsafe { memmap2::MmapMut::map_mut(&f)? }
            }
            None => memmap2::MmapMut::map_anon(8)?,
        };
        Ok(UnitCounter { map })
    }

    pub fn units(&self) -> &AtomicU64 {
        // SAFETY: the mapping is page-aligned, 8 bytes long at least, and lives as long as self;
        // every access to it goes through this atomic.
        unsafe { &*(self.map.as_ptr() as *const AtomicU64) }
    }
}

/// The counter for `report`, or a message naming the file that could not be mapped.
fn counter(report: Option<&str>) -> Result<Arc<UnitCounter>, String> {
    UnitCounter::new(report)
        .map(Arc::new)
        .map_err(|e| format!("work-unit counter {}: {e}", report.unwrap_or("(memory)")))
}

fn park() -> ! {
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

/// Runs `threads` copies of `body`, each adding its work units to the shared counter.
pub fn antagonist(
    threads: usize,
    report: Option<String>,
    body: fn(&AtomicU64),
) -> Result<(), String> {
    let units = counter(report.as_deref())?;
    for _ in 0..threads.max(1) {
        let u = Arc::clone(&units);
        std::thread::spawn(move || loop {
            body(u.units());
        });
    }
    park()
}

/// MemAvailable in bytes, from `/proc/meminfo`.
pub fn mem_available() -> Option<u64> {
    let t = std::fs::read_to_string("/proc/meminfo").ok()?;
    t.lines()
        .find(|l| l.starts_with("MemAvailable:"))?
        .split_whitespace()
        .nth(1)?
        .parse::<u64>()
        .ok()
        .map(|kb| kb * 1024)
}

/// Anonymous memory growing towards `target` bytes in chunks of up to 64 MiB, every page touched,
/// then touched again and again (one unit = one MiB touched). `threads` grow it in parallel: page
/// faults bound one thread's pace (under 0.5 GiB/s in a VM whose freed memory the host takes back).
/// It stops growing while MemAvailable is under `margin` (counting chunks other threads have taken
/// but not touched yet), so it never drives the node into the kernel's OOM killer by itself; a
/// cgroup limit or eviction may still stop it, which is what the benchmark measures.
pub fn memory_hog(
    target: u64,
    margin: u64,
    threads: usize,
    report: Option<String>,
) -> Result<(), String> {
    let units = counter(report.as_deref())?;
    let growth = Arc::new(Growth {
        target,
        margin,
        taken: Mutex::new((0, 0)),
    });
    for _ in 0..threads.max(1) {
        let (u, g) = (Arc::clone(&units), Arc::clone(&growth));
        std::thread::spawn(move || grow(&g, u.units()));
    }
    park()
}

/// What the hog's threads share: bytes taken in all, and of those, bytes not yet touched.
struct Growth {
    target: u64,
    margin: u64,
    taken: Mutex<(u64, u64)>,
}

impl Growth {
    const CHUNK: u64 = 64 << 20;

    /// The next chunk's size, when the target and the margin leave room for it.
    fn take(&self) -> Option<u64> {
        self.take_with(mem_available())
    }

    /// [`Growth::take`] against `avail` bytes available (None: unknown, so no growth).
    fn take_with(&self, avail: Option<u64>) -> Option<u64> {
        let mut t = self.taken.lock().ok()?;
        let (held, pending) = *t;
        let n = self.target.saturating_sub(held).min(Self::CHUNK);
        let room = avail.is_some_and(|a| a > self.margin.saturating_add(pending).saturating_add(n));
        if n == 0 || !room {
            return None;
        }
        *t = (held + n, pending + n);
        Some(n)
    }

    fn touched(&self, n: u64) {
        if let Ok(mut t) = self.taken.lock() {
            t.1 = t.1.saturating_sub(n);
        }
    }
}

fn grow(g: &Growth, u: &AtomicU64) {
    let mut chunks: Vec<Vec<u8>> = Vec::new();
    loop {
        if let Some(n) = g.take() {
            let mut c = vec![0u8; n as usize];
            for i in (0..c.len()).step_by(4096) {
                c[i] = 1;
            }
            g.touched(n);
            chunks.push(c);
            u.fetch_add(n >> 20, Ordering::Relaxed);
            continue;
        }
        for c in chunks.iter_mut() {
            for i in (0..c.len()).step_by(4096) {
                c[i] = c[i].wrapping_add(1);
            }
            u.fetch_add(c.len() as u64 >> 20, Ordering::Relaxed);
        }
        if chunks.is_empty() {
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// Streams reads of a large file through the page cache (one unit = one MiB read). The file is
/// created sparse, so filling the cache costs no disk writes.
pub fn pagecache(
    path: &str,
    bytes: u64,
    threads: usize,
    report: Option<String>,
) -> std::io::Result<()> {
    let f = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(path)?;
    if f.metadata()?.len() < bytes {
        f.set_len(bytes)?;
    }
    drop(f);
    let units = counter(report.as_deref()).map_err(std::io::Error::other)?;
    for t in 0..threads.max(1) {
        let u = Arc::clone(&units);
        let path = path.to_string();
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 1 << 20];
            let Ok(mut f) = std::fs::File::open(&path) else {
                return;
            };
            use std::io::Seek;
            // Threads start at different offsets so they do not share pages.
            let _ = f.seek(std::io::SeekFrom::Start(
                (t as u64 * bytes / threads.max(1) as u64) & !0xfffff,
            ));
            loop {
                match f.read(&mut buf) {
                    Ok(0) => {
                        let _ = f.seek(std::io::SeekFrom::Start(0));
                    }
                    Ok(_) => {
                        u.units().fetch_add(1, Ordering::Relaxed);
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(100)),
                }
            }
        });
    }
    park()
}

/// Restricts this process (and the threads it starts) to one CPU.
pub fn pin(cpu: usize) -> std::io::Result<()> {
    if cpu >= libc::CPU_SETSIZE as usize {
        return Err(std::io::Error::from_raw_os_error(libc::EINVAL));
    }
    // SAFETY: cpu_set_t is plain data; CPU_SET writes inside it (cpu < CPU_SETSIZE).
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Wakes every millisecond, works `work_us` µs, and sleeps again: each wake-up is one run-queue
/// wait, and the work makes it compete for its share like a real service.
pub fn prober(work_us: u64) {
    let per_us = calibrate_spin();
    loop {
        std::thread::sleep(Duration::from_millis(1));
        black_box(spin(work_us.saturating_mul(per_us)));
    }
}

/// Two threads bounce a byte over two pipes, paced in 1 ms slots to `rate` switches per second
/// (one round trip is two switches when both threads share a CPU).
pub fn pingpong(rate: f64) -> std::io::Result<()> {
    use std::io::{Read, Write};
    if !(rate.is_finite() && rate > 0.0 && rate <= 1e6) {
        return Err(std::io::Error::other(format!(
            "--rate {rate}: must be > 0 and at most 1000000"
        )));
    }
    let (mut ping_r, mut ping_w) = std::io::pipe()?;
    let (mut pong_r, mut pong_w) = std::io::pipe()?;
    std::thread::spawn(move || {
        let mut b = [0u8; 1];
        while ping_r.read_exact(&mut b).is_ok() {
            if pong_w.write_all(&b).is_err() {
                break;
            }
        }
    });
    let per_slot = rate / 2.0 / 1000.0;
    let slot = Duration::from_millis(1);
    let mut owed = 0.0;
    let mut next = std::time::Instant::now();
    let mut b = [1u8; 1];
    loop {
        owed += per_slot;
        while owed >= 1.0 {
            ping_w.write_all(&b)?;
            pong_r.read_exact(&mut b)?;
            owed -= 1.0;
        }
        next += slot;
        let now = std::time::Instant::now();
        if next > now {
            std::thread::sleep(next - now);
        } else {
            // Behind (the CPU was busy): do not try to catch up in a burst.
            next = now;
        }
    }
}

/// One unit = one million spin iterations.
pub fn cpu_unit(u: &AtomicU64) {
    black_box(spin(1_000_000));
    u.fetch_add(1, Ordering::Relaxed);
}

/// One unit = one 8 MiB buffer copied (memory bandwidth).
pub fn stream_unit(u: &AtomicU64) {
    thread_local! {
        static BUFS: std::cell::RefCell<(Vec<u8>, Vec<u8>)> =
            std::cell::RefCell::new((vec![1u8; 8 << 20], vec![0u8; 8 << 20]));
    }
    BUFS.with(|b| {
        let mut b = b.borrow_mut();
        let (src, dst) = &mut *b;
        dst.copy_from_slice(src);
        black_box(&dst);
    });
    u.fetch_add(1, Ordering::Relaxed);
}

/// One unit = 256 Ki dependent random reads over 64 MiB (thrashes the last-level cache).
pub fn cache_unit(u: &AtomicU64) {
    thread_local! {
        static TABLE: Vec<u32> = {
            let n = (64 << 20) / 4;
            let mut v: Vec<u32> = (0..n as u32).collect();
            let mut x = 0x1234_5678u64;
            for i in (1..n).rev() {
                x ^= x << 13; x ^= x >> 7; x ^= x << 17;
                v.swap(i, (x % (i as u64 + 1)) as usize);
            }
            v
        };
    }
    TABLE.with(|t| {
        let mut i = 0usize;
        for _ in 0..(256 << 10) {
            i = t[i] as usize;
        }
        black_box(i);
    });
    u.fetch_add(1, Ordering::Relaxed);
}

/// Reads a worker's unit counter (`UnitCounter`). A worker that has not made its file yet has done
/// no unit: 0. An unreadable file is None.
pub fn read_report(path: &std::path::Path) -> Option<u64> {
    let f = match std::fs::File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Some(0),
        Err(_) => return None,
    };
    // Mapped, not read: an atomic load of the worker's own page cannot see half an increment.
    // SAFETY: read-only; the worker only ever changes it through the atomic.
    let map = unsafe { memmap2::Mmap::map(&f) }.ok()?;
    if map.len() < 8 {
        // Created, not sized yet.
        return Some(0);
    }
    // SAFETY: page-aligned and 8 bytes long at least; the mapping outlives the load.
    let units = unsafe { &*(map.as_ptr() as *const AtomicU64) };
    Some(units.load(Ordering::Relaxed))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The service's `/metrics` over loopback, read as the agent reads it: its quantile is the
    /// recorded latencies' (within a bucket, 25%).
    #[test]
    fn the_service_serves_its_latency_histogram_on_metrics() {
        let h = Arc::new(LatencyHist::new());
        // 990 requests at 100 µs, 10 at 5 ms: p99 at the top of the 100 µs bucket, p99.9 near 5 ms.
        for _ in 0..990 {
            h.record(100_000);
        }
        for _ in 0..10 {
            h.record(5_000_000);
        }
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        let served = Arc::clone(&h);
        std::thread::spawn(move || serve_metrics(l, served));
        let mut c = std::net::TcpStream::connect(addr).unwrap();
        write!(c, "GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n").unwrap();
        let mut text = String::new();
        c.read_to_string(&mut text).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        let b = tidal_snapshot::slo::parse_histogram(body, LATENCY_METRIC, &Default::default())
            .unwrap();
        assert_eq!(b.total(), 1000.0);
        let p50 = tidal_snapshot::slo::quantile(0.5, &b).unwrap();
        assert!((80e-6..=125e-6).contains(&p50), "{p50}");
        let p999 = tidal_snapshot::slo::quantile(0.999, &b).unwrap();
        assert!((4e-3..=6.25e-3).contains(&p999), "{p999}");
    }

    #[test]
    fn the_memory_hog_grows_in_chunks_to_its_target_and_keeps_its_margin() {
        const MIB: u64 = 1 << 20;
        let g = Growth {
            target: 100 * MIB,
            margin: 1024 * MIB,
            taken: Mutex::new((0, 0)),
        };
        // Unknown available memory: no growth.
        assert_eq!(g.take_with(None), None);
        let plenty = Some(8192 * MIB);
        assert_eq!(g.take_with(plenty), Some(64 * MIB));
        // A chunk taken but not touched yet counts against the margin: 1024 + 64 pending + 36 is
        // over 1114 available (without the pending chunk it would fit).
        assert_eq!(g.take_with(Some(1114 * MIB)), None);
        g.touched(64 * MIB);
        assert_eq!(g.take_with(Some(1114 * MIB)), Some(36 * MIB));
        g.touched(36 * MIB);
        // The target reached: no more.
        assert_eq!(g.take_with(plenty), None);
    }

    fn major_faults() -> i64 {
        // SAFETY: getrusage(2) fills the struct it is given.
        let mut u: libc::rusage = unsafe { std::mem::zeroed() };
        assert_eq!(unsafe { libc::getrusage(libc::RUSAGE_THREAD, &mut u) }, 0);
        u.ru_majflt
    }

    #[test]
    fn the_working_set_is_a_file_on_disk_so_an_evicted_page_costs_a_major_fault() {
        // On disk, beside the test binary (/tmp may be tmpfs, whose pages are never read back
        // from a device).
        let exe = std::env::current_exe().unwrap();
        let dir = tempfile::tempdir_in(exe.parent().unwrap()).unwrap();
        let path = dir.path().join("ws");
        let bytes = 8u64 << 20;
        let ws = WorkingSet::create(path.to_str().unwrap(), bytes).unwrap();
        // Real blocks, not a sparse file: an evicted page has data to read back.
        use std::os::unix::fs::MetadataExt;
        let m = std::fs::metadata(&path).unwrap();
        assert_eq!(m.len(), bytes);
        assert!(m.blocks() * 512 >= bytes, "{} blocks", m.blocks());
        // Dropped from the cache (as a streaming reader's pages push them out) before anything
        // maps them (a mapped page stays), the pages are read back from the file: major faults,
        // as the bench counts them.
        let f = std::fs::File::open(&path).unwrap();
        use std::os::unix::io::AsRawFd;
        // SAFETY: fadvise on a descriptor this test opened.
        let rc = unsafe { libc::posix_fadvise(f.as_raw_fd(), 0, 0, libc::POSIX_FADV_DONTNEED) };
        assert_eq!(rc, 0);
        let before = major_faults();
        assert_eq!(ws.touch(2, 64), 64 * 0x5a);
        assert!(major_faults() > before, "no major fault after eviction");
        // A working set just written is in the page cache: touching it reads no disk.
        let cached = WorkingSet::create(dir.path().join("ws2").to_str().unwrap(), bytes).unwrap();
        let before = major_faults();
        assert_eq!(cached.touch(1, 64), 64 * 0x5a);
        assert_eq!(major_faults(), before);
    }

    #[test]
    fn the_unit_counter_is_read_from_its_file_without_the_worker_writing_it_out() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("offline.0");
        // Not made yet: no unit done.
        assert_eq!(read_report(&path), Some(0));
        let c = UnitCounter::new(path.to_str()).unwrap();
        assert_eq!(read_report(&path), Some(0));
        c.units().fetch_add(41, Ordering::Relaxed);
        c.units().fetch_add(1, Ordering::Relaxed);
        // Nothing was written out: the file's page is the counter.
        assert_eq!(read_report(&path), Some(42));
        // Created but not sized (a worker caught between open and set_len): still 0, not junk.
        let short = dir.path().join("offline.1");
        std::fs::write(&short, b"").unwrap();
        assert_eq!(read_report(&short), Some(0));
        // A directory where the file should be: unreadable, not 0.
        assert_eq!(read_report(dir.path()), None);
        // An anonymous counter for a worker run by hand.
        let anon = UnitCounter::new(None).unwrap();
        anon.units().fetch_add(3, Ordering::Relaxed);
        assert_eq!(anon.units().load(Ordering::Relaxed), 3);
    }
}
