//! Built-in workloads for `tidal bench`, run as `tidal worker …` in their own cgroups: the online TCP
//! service and the offline antagonists (CPU spinner, memory-bandwidth streamer, cache thrasher). Each
//! antagonist reports cumulative work units to a file, so offline throughput is measured, not assumed.

use std::hint::black_box;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
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

/// Serves 16-byte requests (`id`, intended send time on CLOCK_MONOTONIC) with `work_us` of CPU work
/// each, echoing them, and times each into a histogram served at `/metrics` on a second port
/// (written to `<ready>.metrics` before `<ready>` gets the service port).
pub fn serve(port: u16, work_us: u64, ready: Option<&str>) -> std::io::Result<()> {
    let per_us = calibrate_spin();
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
        std::thread::spawn(move || {
            let mut buf = [0u8; 16];
            while c.read_exact(&mut buf).is_ok() {
                black_box(spin(work_us * per_us));
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

fn report_loop(path: String, units: Arc<AtomicU64>, stop: Arc<AtomicBool>) {
    let start = Instant::now();
    while !stop.load(Ordering::Relaxed) {
        let line = format!(
            "{} {:.6}\n",
            units.load(Ordering::Relaxed),
            start.elapsed().as_secs_f64()
        );
        let tmp = format!("{path}.tmp");
        if std::fs::write(&tmp, line).is_ok() {
            let _ = std::fs::rename(&tmp, &path);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Runs `threads` copies of `body`, each adding its work units to a shared counter.
pub fn antagonist(threads: usize, report: Option<String>, body: fn(&AtomicU64)) {
    let units = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    for _ in 0..threads.max(1) {
        let u = Arc::clone(&units);
        std::thread::spawn(move || loop {
            body(&u);
        });
    }
    match report {
        Some(p) => report_loop(p, units, stop),
        None => loop {
            std::thread::sleep(Duration::from_secs(3600));
        },
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

/// Reads a worker's report file: (units, seconds since the worker started). A worker that has not
/// written its first report yet has done no unit: (0, 0). An unreadable report is None.
pub fn read_report(path: &std::path::Path) -> Option<(u64, f64)> {
    let s = match std::fs::read_to_string(path) {
        Ok(s) => s,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Some((0, 0.0)),
        Err(_) => return None,
    };
    let mut it = s.split_whitespace();
    Some((it.next()?.parse().ok()?, it.next()?.parse().ok()?))
}
