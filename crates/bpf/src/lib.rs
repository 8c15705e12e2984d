//! Run-queue latency per cgroup with eBPF. The BPF program (`src/bpf/runq.bpf.c`, CO-RE, built with
//! clang into a libbpf-rs skeleton) stamps each task when it becomes runnable and, when it runs,
//! adds its wait to a per-CPU log2 histogram keyed by its cgroup (v2 id and, where the cpu
//! controller is on a v1 hierarchy, v1 cpu-controller id): every cgroup's, or only those in its
//! watch map, each under one id ([`Scope`]). [`Collector`] loads it (tp_btf where task storage is
//! safe to create there, else raw_tp), sets what it watches, and each read returns the histogram
//! deltas of the cgroups it reads since the previous read that included them. A cgroup id is the
//! inode number of the cgroup's directory in its own hierarchy. The histogram math ([`Hist`]) is
//! pure.
//!
//! Without BPF (the `bpf` feature off, no clang at build time, not root, no BTF, BPF refused)
//! [`Collector::start`] says why, and tidal runs on its other signals.

use serde::{Deserialize, Serialize};
use std::collections::HashMap;

/// log2 slots: slot i counts waits in [2^i, 2^(i+1)) ns.
pub const SLOTS: usize = 32;

/// Which hierarchy a cgroup id belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum IdKind {
    V2,
    V1Cpu,
}

/// Which cgroups' waits the program records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Only those given to `Collector::watch` (the agent: its online workloads), each wait
    /// under one id: the task's v1 cpu id where it has one, else its v2 id (the one the agent
    /// reads). Any other cgroup's wait costs the program two failed hash lookups and nothing
    /// more, and a read copies out only what is watched.
    Watched,
    /// Every cgroup that waits (tests, the bench's own reader, `doctor`).
    All,
}

/// A cgroup as the BPF program keys it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct CgroupKey {
    pub id: u64,
    pub kind: IdKind,
}

/// One cgroup's run-queue waits (or a delta of them).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hist {
    pub slots: [u64; SLOTS],
    pub count: u64,
    pub sum_ns: u64,
    pub max_ns: u64,
}

impl Default for Hist {
    fn default() -> Self {
        Hist {
            slots: [0; SLOTS],
            count: 0,
            sum_ns: 0,
            max_ns: 0,
        }
    }
}

impl Hist {
    /// Adds another CPU's (or cgroup's) counts.
    pub fn merge(&mut self, o: &Hist) {
        for (a, b) in self.slots.iter_mut().zip(o.slots.iter()) {
            *a = a.saturating_add(*b);
        }
        self.count = self.count.saturating_add(o.count);
        self.sum_ns = self.sum_ns.saturating_add(o.sum_ns);
        self.max_ns = self.max_ns.max(o.max_ns);
    }

    /// What was added since `prev` (cumulative counters; a reset gives the new counts). The max
    /// is the all-time max, so a delta keeps the new one only if it grew.
    pub fn since(&self, prev: &Hist) -> Hist {
        if self.count < prev.count {
            return self.clone();
        }
        let mut d = Hist::default();
        for i in 0..SLOTS {
            d.slots[i] = self.slots[i].saturating_sub(prev.slots[i]);
        }
        d.count = self.count - prev.count;
        d.sum_ns = self.sum_ns.saturating_sub(prev.sum_ns);
        d.max_ns = if self.max_ns > prev.max_ns {
            self.max_ns
        } else {
            0
        };
        d
    }

    /// Samples above `x` ns, interpolated inside its log2 slot as [`Hist::quantile_ns`] does.
    pub fn count_above_ns(&self, x: f64) -> f64 {
        let mut above = 0.0;
        for (i, &c) in self.slots.iter().enumerate() {
            let lo = if i == 0 { 0.0 } else { (1u64 << i) as f64 };
            let hi = (1u64 << (i + 1).min(63)) as f64;
            let c = c as f64;
            if x < lo {
                above += c;
            } else if x < hi {
                above += c * ((hi - x) / (hi - lo)).clamp(0.0, 1.0);
            }
        }
        above
    }

    /// Samples in the slots (what quantiles and counts above are taken over).
    pub fn total(&self) -> u64 {
        self.slots.iter().fold(0u64, |a, c| a.saturating_add(*c))
    }

    /// The `q` quantile in ns, interpolated inside its log2 slot; None for an empty histogram.
    pub fn quantile_ns(&self, q: f64) -> Option<f64> {
        let total = self.total();
        if total == 0 || !(q > 0.0 && q <= 1.0) {
            return None;
        }
        let rank = q * total as f64;
        let mut below = 0.0;
        for (i, &c) in self.slots.iter().enumerate() {
            let c = c as f64;
            if c > 0.0 && below + c >= rank {
                let lo = if i == 0 { 0.0 } else { (1u64 << i) as f64 };
                let hi = (1u64 << (i + 1).min(63)) as f64;
                return Some(lo + (hi - lo) * ((rank - below) / c).clamp(0.0, 1.0));
            }
            below += c;
        }
        None
    }
}

/// Every cgroup's waits since the previous read.
pub type Deltas = HashMap<CgroupKey, Hist>;

/// Keeps the last cumulative histograms, to hand out deltas.
#[derive(Debug, Default)]
pub struct DeltaTracker {
    prev: HashMap<CgroupKey, Hist>,
}

impl DeltaTracker {
    /// Turns a cumulative reading into deltas since the previous one; a key missing from a
    /// reading (not asked for, or not in the map) is forgotten, so its next delta is its whole
    /// count. `now` is handed back empty, holding the previous reading's room, so a reader
    /// that passes the same map each time allocates nothing for it after the first reads.
    pub fn step(&mut self, now: &mut HashMap<CgroupKey, Hist>) -> Deltas {
        let mut out = HashMap::new();
        for (k, h) in now.iter() {
            let d = match self.prev.get(k) {
                Some(p) => h.since(p),
                None => h.clone(),
            };
            if d.count > 0 {
                out.insert(*k, d);
            }
        }
        std::mem::swap(&mut self.prev, now);
        now.clear();
        out
    }
}

/// The inode of a cgroup directory: the id the BPF program keys it by.
pub fn cgroup_id(dir: &std::path::Path) -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(dir).ok().map(|m| m.ino())
}

#[cfg(tidal_bpf)]
mod loaded {
    use super::{CgroupKey, DeltaTracker, Deltas, Hist, IdKind, Scope, SLOTS};
    use libbpf_rs::skel::{OpenSkel, Skel, SkelBuilder};
    use libbpf_rs::MapCore;
    use std::collections::HashMap;
    use std::mem::MaybeUninit;
    use std::os::fd::AsRawFd;

    mod skel {
        include!(concat!(env!("OUT_DIR"), "/runq.skel.rs"));
    }

    pub struct Collector {
        skel: skel::RunqSkel<'static>,
        tracker: DeltaTracker,
        /// A read's cumulative histograms, and one lookup's per-CPU values: kept between reads so
        /// that a read allocates nothing but its deltas.
        now: HashMap<CgroupKey, Hist>,
        values: PerCpu,
        /// The cgroups in the program's watch map.
        watched: std::collections::HashSet<CgroupKey>,
        /// Buffers for batch reads; None once the kernel refused one (before 5.6: one lookup per
        /// watched cgroup then, and `unbatched` says why).
        batch: Option<Batch>,
        unbatched: Option<String>,
        /// Cgroups that left the watch at the last `watch`: their histograms are deleted again at
        /// the next read, in case the program made one as they left.
        left: Vec<CgroupKey>,
        /// "tp_btf" or "raw_tp".
        pub attach: &'static str,
        /// Why the raw_tp fallback was chosen over tp_btf, when it was.
        pub fallback: Option<String>,
    }

    /// Members of `struct bpf_local_storage_map` that come with an allocator safe in any context
    /// (BPF's own from 6.4, kmalloc_nolock later).
    const SAFE_STORAGE_ALLOC: [&str; 3] = ["bpf_ma", "selem_ma", "use_kmalloc_nolock"];

    /// Whether creating task-local storage from the scheduler tracepoints is safe here. Before
    /// 6.4 the kernel allocates it with a GFP_ATOMIC kmalloc while the run-queue lock is held; an
    /// allocation that wakes kswapd (or a memcg event's worker) then takes a run-queue lock again
    /// and can deadlock the CPU. Read from the kernel's BTF; anything unreadable counts as unsafe.
    pub fn task_storage_alloc_safe() -> Result<(), String> {
        use libbpf_rs::btf::{types::Struct, Btf};
        let btf = Btf::from_vmlinux().map_err(|e| format!("cannot read the kernel's BTF: {e}"))?;
        // By kind: a forward declaration of the same name may come first.
        let smap: Struct = btf
            .type_by_kind::<Struct>()
            .find(|t| t.name().is_some_and(|n| n == "bpf_local_storage_map"))
            .ok_or("the kernel's BTF has no struct bpf_local_storage_map")?;
        let safe = smap.iter().any(|m| {
            m.name
                .and_then(|n| n.to_str())
                .is_some_and(|n| SAFE_STORAGE_ALLOC.contains(&n))
        });
        if safe {
            Ok(())
        } else {
            Err(
                "this kernel (before 6.4) allocates task-local storage under the run-queue lock, \
                 which can deadlock from the scheduler tracepoints"
                    .into(),
            )
        }
    }

    fn load(btf: bool, sample: u32, scope: Scope) -> Result<skel::RunqSkel<'static>, String> {
        // The skeleton borrows its object for as long as it lives: the agent's lifetime.
        let obj: &'static mut MaybeUninit<libbpf_rs::OpenObject> =
            Box::leak(Box::new(MaybeUninit::uninit()));
        let mut open = skel::RunqSkelBuilder::default()
            .open(obj)
            .map_err(|e| format!("cannot open the BPF object: {e}"))?;
        match open.maps.rodata_data.as_deref_mut() {
            Some(ro) => {
                ro.sample_mask = sample.saturating_sub(1);
                ro.record_all = scope == Scope::All;
            }
            None => {
                return Err(
                    "the BPF object has no read-only data for its sampling rate and scope".into(),
                )
            }
        }
        // Each path creates only its own stamp map: kernels before task storage in tracing
        // programs (5.12) can still load the raw_tp path.
        open.maps
            .tstart
            .set_autocreate(btf)
            .and_then(|_| open.maps.start.set_autocreate(!btf))
            .map_err(|e| format!("cannot choose the BPF stamp map: {e}"))?;
        let p = &mut open.progs;
        p.wakeup_btf.set_autoload(btf);
        p.wakeup_new_btf.set_autoload(btf);
        p.switch_btf.set_autoload(btf);
        p.wakeup_raw.set_autoload(!btf);
        p.wakeup_new_raw.set_autoload(!btf);
        p.switch_raw.set_autoload(!btf);
        let mut s = open
            .load()
            .map_err(|e| format!("the kernel refused the BPF program: {e}"))?;
        s.attach()
            .map_err(|e| format!("cannot attach to the scheduler tracepoints: {e}"))?;
        Ok(s)
    }

    impl Collector {
        /// Every wakeup of every cgroup.
        pub fn start() -> Result<Collector, String> {
            Self::start_sampled(1, Scope::All)
        }

        /// The raw_tp fallback alone (what kernels without tp_btf get), every cgroup, for tests
        /// and comparisons.
        pub fn start_raw_tp(sample: u32) -> Result<Collector, String> {
            super::check_sample(sample)?;
            let skel = load(false, sample, Scope::All)?;
            Collector::new(skel, "raw_tp", Some("asked for".into()))
        }

        /// Records 1 in `sample` wakeups (a power of two up to 1024; anything else is refused) of
        /// the cgroups `scope` says.
        pub fn start_sampled(sample: u32, scope: Scope) -> Result<Collector, String> {
            super::check_sample(sample)?;
            // SAFETY: geteuid has no preconditions.
            if unsafe { libc::geteuid() } != 0 {
                return Err("not root: BPF programs need CAP_BPF and CAP_PERFMON".into());
            }
            if !std::path::Path::new("/sys/kernel/btf/vmlinux").exists() {
                return Err(
                    "no kernel BTF (/sys/kernel/btf/vmlinux): CO-RE programs cannot load".into(),
                );
            }
            let btf = task_storage_alloc_safe().and_then(|()| load(true, sample, scope));
            let (skel, attach, fallback) = match btf {
                Ok(s) => (s, "tp_btf", None),
                Err(e_btf) => match load(false, sample, scope) {
                    Ok(s) => (s, "raw_tp", Some(e_btf)),
                    Err(e_raw) => return Err(format!("tp_btf: {e_btf}; raw_tp: {e_raw}")),
                },
            };
            Collector::new(skel, attach, fallback)
        }

        fn new(
            skel: skel::RunqSkel<'static>,
            attach: &'static str,
            fallback: Option<String>,
        ) -> Result<Collector, String> {
            let values = PerCpu::new(&skel.maps.hists)?;
            // A batch entry's values are one lookup's.
            let batch = Some(Batch::new(values.buf.len()));
            Ok(Collector {
                skel,
                tracker: DeltaTracker::default(),
                now: HashMap::new(),
                values,
                watched: std::collections::HashSet::new(),
                batch,
                unbatched: None,
                left: Vec::new(),
                attach,
                fallback,
            })
        }

        /// The waits of these cgroups since the previous read, if that read included them (else
        /// their whole counts): one lookup per key (the watched read where the kernel has no batch
        /// reads, and tests).
        pub fn read_keys<'a>(
            &mut self,
            keys: impl IntoIterator<Item = &'a CgroupKey>,
        ) -> Result<Deltas, String> {
            let map = &self.skel.maps.hists;
            for k in keys {
                match self.values.lookup(map, &key_bytes(k)) {
                    Ok(Some(h)) => {
                        self.now.insert(*k, h);
                    }
                    Ok(None) => {}
                    Err(e) => {
                        self.now.clear();
                        return Err(format!("{e} (cgroup id {}, {:?})", k.id, k.kind));
                    }
                }
            }
            Ok(self.tracker.step(&mut self.now))
        }

        /// From now on the waits of exactly these cgroups are recorded (with [`Scope::Watched`]):
        /// new ones join the program's watch map, and those left out leave it with their
        /// histograms. The map holds 8192; past that the error says so and the keys already in
        /// stay watched.
        pub fn watch<'a>(
            &mut self,
            keys: impl IntoIterator<Item = &'a CgroupKey>,
        ) -> Result<(), String> {
            let want: std::collections::HashSet<CgroupKey> = keys.into_iter().copied().collect();
            let (watch, hists) = (&self.skel.maps.watch, &self.skel.maps.hists);
            // Those leaving first: they make room. Already gone from a map is no failure.
            let left = &mut self.left;
            self.watched.retain(|k| {
                if want.contains(k) {
                    return true;
                }
                let raw = key_bytes(k);
                let _ = watch.delete(&raw);
                let _ = hists.delete(&raw);
                left.push(*k);
                false
            });
            for k in want {
                if self.watched.contains(&k) {
                    continue;
                }
                watch
                    .update(&key_bytes(&k), &[1], libbpf_rs::MapFlags::ANY)
                    .map_err(|e| {
                        format!(
                            "cannot watch cgroup id {} ({:?}), with {} watched: {e}",
                            k.id,
                            k.kind,
                            self.watched.len()
                        )
                    })?;
                self.watched.insert(k);
            }
            Ok(())
        }

        /// The watched cgroups' waits since the previous read: the histogram map holds only
        /// them, so it is read whole in a batch or a few (one lookup per watched cgroup where the
        /// kernel refuses batch reads, before 5.6 or for a hash bucket fuller than the batch
        /// room, and for a read whose batch failed).
        pub fn read_watched(&mut self) -> Result<Deltas, String> {
            for k in self.left.drain(..) {
                if !self.watched.contains(&k) {
                    let _ = self.skel.maps.hists.delete(&key_bytes(&k));
                }
            }
            let mut failed = None;
            if let Some(b) = self.batch.as_mut() {
                let map = &self.skel.maps.hists;
                match b.read(map, &self.values, &self.watched, &mut self.now) {
                    Ok(()) => return Ok(self.tracker.step(&mut self.now)),
                    Err(Refused(why)) => {
                        self.batch = None;
                        self.unbatched = Some(why);
                    }
                    // Perhaps passing (the kernel's batch buffers, ENOMEM): this read by lookups.
                    Err(Failed(e)) => failed = Some(e),
                }
                self.now.clear();
            }
            let keys: Vec<CgroupKey> = self.watched.iter().copied().collect();
            self.read_keys(&keys).map_err(|e| match failed {
                Some(f) => format!("{f}; then {e}"),
                None => e,
            })
        }

        /// Whether the program records this cgroup's waits (in its watch map).
        pub fn is_watched(&self, key: &CgroupKey) -> bool {
            self.watched.contains(key)
        }

        /// Why reads are one lookup per cgroup, not batches, once a batch read was refused.
        pub fn unbatched(&self) -> Option<&str> {
            self.unbatched.as_deref()
        }

        /// The next read gives each cgroup's whole counts, not deltas (tests).
        #[doc(hidden)]
        pub fn forget_reads(&mut self) {
            self.tracker = DeltaTracker::default();
        }

        /// Reads at most `n` entries per batch from now on (tests: several batches, and a hash
        /// bucket fuller than one).
        #[doc(hidden)]
        pub fn set_batch_entries(&mut self, n: usize) {
            if let Some(b) = self.batch.as_mut() {
                b.size(n.max(1));
            }
        }

        /// Entries per batch now (grown when a bucket did not fit); None once unbatched.
        #[doc(hidden)]
        pub fn batch_entries(&self) -> Option<usize> {
            self.batch.as_ref().map(|b| b.cap)
        }

        /// Puts a histogram of one wait under each of `keys`, as the program would (tests: a map
        /// full enough for its hash buckets to hold several).
        #[doc(hidden)]
        pub fn insert_for_test(&mut self, keys: &[CgroupKey]) -> Result<(), String> {
            let cpus = self.values.buf.len() / self.values.stride;
            let mut values = vec![vec![0u8; self.values.value_size]; cpus];
            // CPU 0's copy: one wait in slot 0, and the count.
            if let Some(v) = values.first_mut() {
                v[..8].copy_from_slice(&1u64.to_ne_bytes());
                v[SLOTS * 8..SLOTS * 8 + 8].copy_from_slice(&1u64.to_ne_bytes());
            }
            for k in keys {
                self.skel
                    .maps
                    .hists
                    .update_percpu(&key_bytes(k), &values, libbpf_rs::MapFlags::ANY)
                    .map_err(|e| format!("cannot put cgroup id {}: {e}", k.id))?;
            }
            Ok(())
        }

        /// Every cgroup's waits since the previous read.
        pub fn read(&mut self) -> Result<Deltas, String> {
            let map = &self.skel.maps.hists;
            for raw in map.keys() {
                if let (Some(k), Ok(Some(h))) = (key_of(&raw), self.values.lookup(map, &raw)) {
                    self.now.insert(k, h);
                }
            }
            Ok(self.tracker.step(&mut self.now))
        }
    }

    /// Room for one lookup of the per-CPU histogram map: one value per possible CPU, each
    /// rounded up to 8 bytes, as the kernel copies them out.
    struct PerCpu {
        buf: Vec<u8>,
        stride: usize,
        value_size: usize,
    }

    impl PerCpu {
        fn new(map: &impl MapCore) -> Result<PerCpu, String> {
            let value_size = map.value_size() as usize;
            let want = (SLOTS + 3) * 8;
            if value_size < want {
                return Err(format!(
                    "the run-queue histogram map's values are {value_size} bytes, not the {want} this reader decodes"
                ));
            }
            let cpus = libbpf_rs::num_possible_cpus()
                .map_err(|e| format!("cannot count the possible CPUs: {e}"))?;
            let stride = value_size.div_ceil(8) * 8;
            let len = stride
                .checked_mul(cpus)
                .ok_or_else(|| format!("{cpus} possible CPUs × {stride} bytes overflows"))?;
            Ok(PerCpu {
                buf: vec![0; len],
                stride,
                value_size,
            })
        }

        /// One cgroup's histogram, its per-CPU copies merged; None when the map has no such key.
        fn lookup(&mut self, map: &impl MapCore, raw: &[u8]) -> Result<Option<Hist>, String> {
            if raw.len() != map.key_size() as usize {
                return Err(format!(
                    "a run-queue key of {} bytes for a map keyed by {}",
                    raw.len(),
                    map.key_size()
                ));
            }
            // SAFETY: the key is the map's key size (checked above) and the buffer holds one
            // aligned value per possible CPU (sized from the map in `new`), all the kernel writes.
            let r = unsafe {
                libbpf_sys::bpf_map_lookup_elem_flags(
                    map.as_fd().as_raw_fd(),
                    raw.as_ptr().cast(),
                    self.buf.as_mut_ptr().cast(),
                    0,
                )
            };
            if r == -libc::ENOENT {
                return Ok(None);
            }
            if r < 0 {
                return Err(format!(
                    "reading the run-queue histograms: {}",
                    std::io::Error::from_raw_os_error(-r)
                ));
            }
            Ok(Some(self.merge(&self.buf)))
        }

        /// One entry's per-CPU copies (laid out as a lookup returns them), merged.
        fn merge(&self, values: &[u8]) -> Hist {
            let mut h = Hist::default();
            for v in values.chunks_exact(self.stride) {
                h.merge(&decode(&v[..self.value_size]));
            }
            h
        }
    }

    /// Room for batch reads of the histogram map, grown when a hash bucket holds more entries
    /// than one batch, up to [`BATCH_BYTES_MAX`].
    struct Batch {
        keys: Vec<u8>,
        values: Vec<u8>,
        per_entry: usize,
        cap: usize,
    }

    /// Why a batch read did not give the map.
    enum BatchErr {
        /// The kernel has no batch reads for this map, or a bucket does not fit the buffers.
        Refused(String),
        Failed(String),
    }
    use BatchErr::{Failed, Refused};

    const KEY_SIZE: usize = 16;
    /// Entries per batch to start with.
    const BATCH_FIRST: usize = 64;
    /// The values of one batch at most (on a host with hundreds of possible CPUs an entry is
    /// tens of KiB).
    const BATCH_BYTES_MAX: usize = 4 << 20;

    impl Batch {
        fn new(per_entry: usize) -> Batch {
            let mut b = Batch {
                keys: Vec::new(),
                values: Vec::new(),
                per_entry,
                cap: 0,
            };
            b.size(BATCH_FIRST.min(b.cap_max()));
            b
        }

        fn cap_max(&self) -> usize {
            (BATCH_BYTES_MAX / self.per_entry.max(1)).max(1)
        }

        fn size(&mut self, cap: usize) {
            self.cap = cap.clamp(1, self.cap_max());
            self.keys.resize(self.cap * KEY_SIZE, 0);
            self.values.resize(self.cap * self.per_entry, 0);
        }

        /// Reads every watched entry into `now` (left half-filled on an error).
        fn read(
            &mut self,
            map: &impl MapCore,
            per_cpu: &PerCpu,
            watched: &std::collections::HashSet<CgroupKey>,
            now: &mut HashMap<CgroupKey, Hist>,
        ) -> Result<(), BatchErr> {
            if map.key_size() as usize != KEY_SIZE {
                return Err(Failed(format!(
                    "the run-queue histogram map is keyed by {} bytes, not {KEY_SIZE}",
                    map.key_size()
                )));
            }
            let fd = map.as_fd().as_raw_fd();
            // The kernel's position between batches (a bucket index for a hash map).
            let (mut token, mut next) = ([0u8; 8], [0u8; 8]);
            let mut first = true;
            loop {
                let mut count = u32::try_from(self.cap).unwrap_or(u32::MAX);
                let opts = libbpf_sys::bpf_map_batch_opts {
                    sz: std::mem::size_of::<libbpf_sys::bpf_map_batch_opts>() as _,
                    elem_flags: 0,
                    flags: 0,
                };
                let in_batch = if first {
                    std::ptr::null_mut()
                } else {
                    token.as_mut_ptr().cast()
                };
                // SAFETY: the key and value buffers hold `count` entries (key: the map's key size,
                // checked above; value: one aligned copy per possible CPU, as for a lookup), and
                // the batch tokens are 8 bytes, more than the kernel's 4 for a hash map.
                let r = unsafe {
                    libbpf_sys::bpf_map_lookup_batch(
                        fd,
                        in_batch,
                        next.as_mut_ptr().cast(),
                        self.keys.as_mut_ptr().cast(),
                        self.values.as_mut_ptr().cast(),
                        &mut count,
                        &opts,
                    )
                };
                let done = r == -libc::ENOENT;
                if r < 0 && !done {
                    if r == -libc::ENOSPC {
                        // One hash bucket holds more than a batch: the same batch again, larger.
                        if self.cap < self.cap_max() {
                            self.size(self.cap.saturating_mul(2));
                            continue;
                        }
                        return Err(Refused(format!(
                            "a hash bucket holds more than {} entries",
                            self.cap
                        )));
                    }
                    // EINVAL: no such command (before 5.6); 524: ENOTSUPP for this map type.
                    if first && (r == -libc::EINVAL || r == -libc::EOPNOTSUPP || r == -524) {
                        return Err(Refused(format!(
                            "the kernel refused a batch read: {}",
                            std::io::Error::from_raw_os_error(-r)
                        )));
                    }
                    return Err(Failed(format!(
                        "reading the run-queue histograms (batch): {}",
                        std::io::Error::from_raw_os_error(-r)
                    )));
                }
                let n = (count as usize).min(self.cap);
                for i in 0..n {
                    let raw = &self.keys[i * KEY_SIZE..(i + 1) * KEY_SIZE];
                    if let Some(k) = key_of(raw).filter(|k| watched.contains(k)) {
                        let v = &self.values[i * self.per_entry..(i + 1) * self.per_entry];
                        now.insert(k, per_cpu.merge(v));
                    }
                }
                if done || n == 0 {
                    break;
                }
                token = next;
                first = false;
            }
            Ok(())
        }
    }

    /// A `struct key` as the BPF program lays it out: u64 id, u32 kind (1 v2, 2 v1 cpu), u32 pad.
    fn key_bytes(k: &CgroupKey) -> [u8; 16] {
        let kind: u32 = match k.kind {
            IdKind::V2 => 1,
            IdKind::V1Cpu => 2,
        };
        let mut raw = [0u8; 16];
        raw[..8].copy_from_slice(&k.id.to_ne_bytes());
        raw[8..12].copy_from_slice(&kind.to_ne_bytes());
        raw
    }

    fn key_of(raw: &[u8]) -> Option<CgroupKey> {
        let id = u64::from_ne_bytes(raw.get(..8)?.try_into().ok()?);
        let kind = match u32::from_ne_bytes(raw.get(8..12)?.try_into().ok()?) {
            1 => IdKind::V2,
            2 => IdKind::V1Cpu,
            _ => return None,
        };
        Some(CgroupKey { id, kind })
    }

    /// A `struct hist` as the BPF program lays it out (native endian u64s).
    fn decode(b: &[u8]) -> Hist {
        let at = |i: usize| {
            b.get(i * 8..i * 8 + 8)
                .and_then(|s| s.try_into().ok())
                .map_or(0, u64::from_ne_bytes)
        };
        let mut h = Hist::default();
        for i in 0..SLOTS {
            h.slots[i] = at(i);
        }
        h.count = at(SLOTS);
        h.sum_ns = at(SLOTS + 1);
        h.max_ns = at(SLOTS + 2);
        h
    }
}

#[cfg(tidal_bpf)]
pub use loaded::{task_storage_alloc_safe, Collector};

/// Turns the kernel's BPF run-time statistics on for as long as the returned descriptor is open.
#[cfg(tidal_bpf)]
pub fn enable_stats() -> Result<std::os::fd::OwnedFd, String> {
    use std::os::fd::FromRawFd;
    // SAFETY: a plain syscall wrapper; a non-negative result is a new descriptor we own.
    let fd = unsafe { libbpf_sys::bpf_enable_stats(libbpf_sys::BPF_STATS_RUN_TIME) };
    if fd < 0 {
        return Err(format!(
            "cannot turn BPF statistics on: {}",
            std::io::Error::from_raw_os_error(-fd)
        ));
    }
    // SAFETY: fd was just returned by the kernel and nothing else owns it.
    Ok(unsafe { std::os::fd::OwnedFd::from_raw_fd(fd) })
}

#[cfg(not(tidal_bpf))]
pub fn enable_stats() -> Result<std::os::fd::OwnedFd, String> {
    Err("tidal was built without its BPF program".into())
}

/// `sample` must be a power of two from 1 to 1024.
pub fn check_sample(sample: u32) -> Result<(), String> {
    if sample.is_power_of_two() && sample <= 1024 {
        Ok(())
    } else {
        Err(format!(
            "sample {sample}: must be a power of two from 1 to 1024"
        ))
    }
}

/// The tracepoint and attach kind of each of the program's functions, by program name.
#[cfg(tidal_bpf)]
const PROGRAMS: [(&str, &str, &str); 6] = [
    ("wakeup_btf", "sched_wakeup", "tp_btf"),
    ("wakeup_new_btf", "sched_wakeup_new", "tp_btf"),
    ("switch_btf", "sched_switch", "tp_btf"),
    ("wakeup_raw", "sched_wakeup", "raw_tp"),
    ("wakeup_new_raw", "sched_wakeup_new", "raw_tp"),
    ("switch_raw", "sched_switch", "raw_tp"),
];

/// The ids of the BPF programs process `pid` holds (the `prog_id:` lines of its
/// `/proc/<pid>/fdinfo`), so a reader can tell its programs from another process's.
pub fn prog_ids_of(pid: u32) -> Result<Vec<u32>, String> {
    let dir = format!("/proc/{pid}/fdinfo");
    let rd = std::fs::read_dir(&dir).map_err(|e| format!("{dir}: {e}"))?;
    let mut ids: Vec<u32> = rd
        .filter_map(|e| e.ok())
        .filter_map(|e| std::fs::read_to_string(e.path()).ok())
        .filter_map(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("prog_id:")?.trim().parse().ok())
        })
        .collect();
    ids.sort_unstable();
    ids.dedup();
    Ok(ids)
}

/// Run counts and run times of the loaded programs named like tidal's (only those in `ids` when
/// given). Counted only while BPF statistics are on.
#[cfg(tidal_bpf)]
pub fn loaded_stats(ids: Option<&[u32]>) -> Result<Vec<ProgStats>, String> {
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    let errno = || std::io::Error::last_os_error();
    let mut out = Vec::new();
    let mut id = 0u32;
    loop {
        let mut next = 0u32;
        // SAFETY: `next` is a valid u32 for the kernel to fill.
        if unsafe { libbpf_sys::bpf_prog_get_next_id(id, &mut next) } != 0 {
            let e = errno();
            if e.raw_os_error() == Some(libc::ENOENT) {
                break;
            }
            return Err(format!("listing BPF programs (after id {id}): {e}"));
        }
        id = next;
        if ids.is_some_and(|only| !only.contains(&id)) {
            continue;
        }
        // SAFETY: a plain syscall wrapper; a non-negative result is a new descriptor we own.
        let fd = unsafe { libbpf_sys::bpf_prog_get_fd_by_id(id) };
        if fd < 0 {
            let e = errno();
            if e.raw_os_error() == Some(libc::ENOENT) {
                continue; // unloaded meanwhile
            }
            return Err(format!("opening BPF program {id}: {e}"));
        }
        // SAFETY: fd was just returned by the kernel and nothing else owns it.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let mut info = libbpf_sys::bpf_prog_info::default();
        let mut len = std::mem::size_of::<libbpf_sys::bpf_prog_info>() as u32;
        // SAFETY: info is a valid bpf_prog_info of `len` bytes for the kernel to fill.
        let r = unsafe {
            libbpf_sys::bpf_obj_get_info_by_fd(
                fd.as_raw_fd(),
                (&mut info as *mut libbpf_sys::bpf_prog_info).cast(),
                &mut len,
            )
        };
        if r != 0 {
            return Err(format!("reading BPF program {id}'s info: {}", errno()));
        }
        let name: Vec<u8> = info
            .name
            .iter()
            .take_while(|c| **c != 0)
            .map(|c| *c as u8)
            .collect();
        if let Some((_, tp, attach)) = PROGRAMS.iter().find(|(n, _, _)| n.as_bytes() == name) {
            out.push(ProgStats {
                tracepoint: tp,
                attach,
                run_cnt: info.run_cnt,
                run_time_ns: info.run_time_ns,
            });
        }
    }
    Ok(out)
}

#[cfg(not(tidal_bpf))]
pub fn loaded_stats(_ids: Option<&[u32]>) -> Result<Vec<ProgStats>, String> {
    Ok(Vec::new())
}

/// One program's cost counters.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ProgStats {
    pub tracepoint: &'static str,
    /// "tp_btf" or "raw_tp".
    pub attach: &'static str,
    pub run_cnt: u64,
    pub run_time_ns: u64,
}

/// Built without the BPF program: nothing to create.
#[cfg(not(tidal_bpf))]
pub fn task_storage_alloc_safe() -> Result<(), String> {
    Err("tidal was built without its BPF program".into())
}

/// Built without the BPF program: every start says why.
#[cfg(not(tidal_bpf))]
pub struct Collector {
    pub attach: &'static str,
    pub fallback: Option<String>,
}

#[cfg(not(tidal_bpf))]
impl Collector {
    pub fn start_sampled(sample: u32, _scope: Scope) -> Result<Collector, String> {
        check_sample(sample)?;
        Self::start()
    }
    pub fn start_raw_tp(sample: u32) -> Result<Collector, String> {
        Self::start_sampled(sample, Scope::All)
    }
    pub fn start() -> Result<Collector, String> {
        Err("tidal was built without its BPF program (no clang at build time, or without the `bpf` feature): apt-get install clang libelf-dev and rebuild".into())
    }
    pub fn read(&mut self) -> Result<Deltas, String> {
        Ok(Deltas::new())
    }
    pub fn read_keys<'a>(
        &mut self,
        _keys: impl IntoIterator<Item = &'a CgroupKey>,
    ) -> Result<Deltas, String> {
        Ok(Deltas::new())
    }
    pub fn watch<'a>(
        &mut self,
        _keys: impl IntoIterator<Item = &'a CgroupKey>,
    ) -> Result<(), String> {
        Ok(())
    }
    pub fn read_watched(&mut self) -> Result<Deltas, String> {
        Ok(Deltas::new())
    }
    pub fn unbatched(&self) -> Option<&str> {
        None
    }
    pub fn is_watched(&self, _key: &CgroupKey) -> bool {
        false
    }
    #[doc(hidden)]
    pub fn forget_reads(&mut self) {}
    #[doc(hidden)]
    pub fn set_batch_entries(&mut self, _n: usize) {}
    #[doc(hidden)]
    pub fn batch_entries(&self) -> Option<usize> {
        None
    }
    #[doc(hidden)]
    pub fn insert_for_test(&mut self, _keys: &[CgroupKey]) -> Result<(), String> {
        Err("built without BPF".into())
    }
}

/// Whether this build carries the BPF program.
pub const BUILT_WITH_BPF: bool = cfg!(tidal_bpf);

#[cfg(test)]
mod tests {
    use super::*;

    fn hist(slots: &[(usize, u64)]) -> Hist {
        let mut h = Hist::default();
        for (i, c) in slots {
            h.slots[*i] = *c;
            h.count += c;
        }
        h
    }

    #[test]
    fn quantiles_from_log2_slots() {
        // 99 waits in [1024, 2048) ns, one in [2^20, 2^21).
        let h = hist(&[(10, 99), (20, 1)]);
        let p50 = h.quantile_ns(0.5).unwrap();
        assert!((1024.0..2048.0).contains(&p50), "{p50}");
        let p99 = h.quantile_ns(0.99).unwrap();
        assert!(p99 <= 2048.0, "{p99}");
        let p999 = h.quantile_ns(0.999).unwrap();
        assert!(p999 >= (1u64 << 20) as f64, "{p999}");
        assert_eq!(Hist::default().quantile_ns(0.99), None);
    }

    #[test]
    fn counts_above_interpolate_inside_the_slot() {
        let h = hist(&[(10, 99), (20, 1)]);
        assert_eq!(h.total(), 100);
        assert_eq!(h.count_above_ns(0.0), 100.0);
        // Halfway through [1024, 2048): half its 99, and the one far above.
        assert!((h.count_above_ns(1536.0) - 50.5).abs() < 1e-9);
        assert_eq!(h.count_above_ns(4096.0), 1.0);
        assert_eq!(h.count_above_ns((1u64 << 22) as f64), 0.0);
    }

    #[test]
    fn deltas_and_resets() {
        let k = CgroupKey {
            id: 7,
            kind: IdKind::V2,
        };
        let mut t = DeltaTracker::default();
        let mut now = HashMap::new();
        let mut step = |slots: &[(usize, u64)]| {
            now.insert(k, hist(slots));
            let d = t.step(&mut now);
            assert!(now.is_empty(), "the reading's map is handed back empty");
            d
        };
        let d = step(&[(10, 5)]);
        assert_eq!(d[&k].count, 5);
        let d = step(&[(10, 5), (12, 3)]);
        assert_eq!(d[&k].count, 3);
        assert_eq!(d[&k].slots[12], 3);
        // Nothing new: no entry.
        let d = step(&[(10, 5), (12, 3)]);
        assert!(!d.contains_key(&k));
        // The map was recreated (counts went down): the new counts are the delta.
        let d = step(&[(11, 2)]);
        assert_eq!(d[&k].count, 2);
        // A cgroup missing from one reading is forgotten: its next reading is a delta from 0.
        let other = CgroupKey {
            id: 8,
            kind: IdKind::V1Cpu,
        };
        let mut now = HashMap::new();
        now.insert(k, hist(&[(11, 2)]));
        now.insert(other, hist(&[(3, 4)]));
        let d = t.step(&mut now);
        assert_eq!((d.len(), d[&other].count), (1, 4), "k unchanged, other new");
        now.insert(k, hist(&[(11, 2)]));
        assert!(t.step(&mut now).is_empty(), "k unchanged, other not read");
        now.insert(other, hist(&[(3, 4)]));
        assert_eq!(t.step(&mut now)[&other].count, 4, "other forgotten");
    }
}
