//! Open-loop load generator. Requests leave on a precomputed schedule (constant or Poisson arrivals,
//! optionally stepping to a new rate) whatever the server does, and each latency is measured from the
//! request's *intended* send time: a stalled server shows up as latency for every request it delayed
//! (no coordinated omission).

use super::hist::{new_hist, record};
use hdrhistogram::Histogram;
use rand::{Rng, SeedableRng};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arrivals {
    Constant,
    Poisson,
}

/// Rate `rate` per second from `start_s` on; segments in time order.
#[derive(Debug, Clone, PartialEq)]
pub struct Schedule {
    pub arrivals: Arrivals,
    pub segments: Vec<(f64, f64)>,
    pub duration_s: f64,
    pub seed: u64,
}

impl Schedule {
    pub fn constant_rate(arrivals: Arrivals, rate: f64, duration_s: f64) -> Self {
        Schedule {
            arrivals,
            segments: vec![(0.0, rate)],
            duration_s,
            seed: 42,
        }
    }

    fn rate_at(&self, t: f64) -> f64 {
        self.segments
            .iter()
            .rev()
            .find(|(s, _)| t >= *s)
            .map_or(0.0, |(_, r)| *r)
    }

    /// Intended send times in ns from the start, in order, computed as they are needed: the
    /// schedule takes no memory however long it is.
    pub fn times(&self) -> Times<'_> {
        Times {
            s: self,
            rng: rand::rngs::StdRng::seed_from_u64(self.seed),
            t: 0.0,
        }
    }
}

/// The send times of a [`Schedule`], one at a time.
pub struct Times<'a> {
    s: &'a Schedule,
    rng: rand::rngs::StdRng,
    t: f64,
}

impl Iterator for Times<'_> {
    type Item = u64;
    fn next(&mut self) -> Option<u64> {
        loop {
            let r = self.s.rate_at(self.t);
            if !(r.is_finite() && r > 0.0) {
                // Jump to the next segment with traffic.
                let next = self
                    .s
                    .segments
                    .iter()
                    .find(|(st, rr)| *st > self.t && *rr > 0.0)?;
                self.t = next.0;
                continue;
            }
            let gap = match self.s.arrivals {
                Arrivals::Constant => 1.0 / r,
                Arrivals::Poisson => {
                    let u: f64 = self.rng.random_range(f64::EPSILON..1.0);
                    -u.ln() / r
                }
            };
            self.t += gap;
            if self.t.is_nan() || self.t >= self.s.duration_s {
                return None;
            }
            return Some((self.t * 1e9) as u64);
        }
    }
}

/// A TCP client connection for the load generator, with Nagle off.
pub fn connect(port: u16) -> std::io::Result<TcpStream> {
    let s = TcpStream::connect(("127.0.0.1", port))?;
    s.set_nodelay(true)?;
    Ok(s)
}

/// Latencies of requests whose intended time falls in `[from_ns, to_ns)`.
pub struct Window {
    pub hist: Histogram<u64>,
}

pub struct LoadResult {
    pub windows: Vec<Window>,
    pub sent: u64,
    pub received: u64,
    /// Requests with no answer by the deadline (recorded as latency up to the deadline).
    pub lost: u64,
}

/// Sends `schedule` to `127.0.0.1:port` over `conns` connections and measures every request.
/// `on_start` is called with the start instant (the scenario step clock).
pub fn run(
    port: u16,
    conns: usize,
    schedule: &Schedule,
    windows: &[(u64, u64)],
    on_start: impl FnOnce(Instant),
) -> std::io::Result<LoadResult> {
    let mut streams = Vec::new();
    for _ in 0..conns.max(1) {
        streams.push(connect(port)?);
    }
    let hists: Arc<Mutex<Vec<Histogram<u64>>>> =
        Arc::new(Mutex::new(windows.iter().map(|_| new_hist()).collect()));
    let received = Arc::new(AtomicU64::new(0));
    let done = Arc::new(AtomicBool::new(false));
    let start = Instant::now();
    // Requests carry their intended send time on CLOCK_MONOTONIC, so the server can time them too.
    let base = crate::mono::mono_ns();
    on_start(start);
    let win: Arc<Vec<(u64, u64)>> = Arc::new(windows.to_vec());
    let outstanding: Arc<Vec<Mutex<std::collections::VecDeque<u64>>>> = Arc::new(
        (0..streams.len())
            .map(|_| Mutex::new(Default::default()))
            .collect(),
    );
    let mut readers = Vec::new();
    for (i, s) in streams.iter().enumerate() {
        let mut r: TcpStream = s.try_clone()?;
        r.set_read_timeout(Some(Duration::from_millis(200)))?;
        let (hists, received, done, win, outstanding) = (
            Arc::clone(&hists),
            Arc::clone(&received),
            Arc::clone(&done),
            Arc::clone(&win),
            Arc::clone(&outstanding),
        );
        readers.push(std::thread::spawn(move || {
            let mut local: Vec<Histogram<u64>> = win.iter().map(|_| new_hist()).collect();
            let mut buf = [0u8; 16];
            let mut got = 0usize;
            loop {
                match r.read(&mut buf[got..]) {
                    Ok(0) => break,
                    Ok(k) => {
                        got += k;
                        if got < 16 {
                            continue;
                        }
                        got = 0;
                        let now = start.elapsed().as_nanos() as u64;
                        let intended = u64::from_le_bytes(buf[8..16].try_into().unwrap_or([0; 8]))
                            .saturating_sub(base);
                        if let Ok(mut q) = outstanding[i].lock() {
                            q.pop_front();
                        }
                        for (h, (f, t)) in local.iter_mut().zip(win.iter()) {
                            if intended >= *f && intended < *t {
                                record(h, now.saturating_sub(intended));
                            }
                        }
                        received.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e)
                        if e.kind() == std::io::ErrorKind::WouldBlock
                            || e.kind() == std::io::ErrorKind::TimedOut =>
                    {
                        if done.load(Ordering::Relaxed) {
                            break;
                        }
                    }
                    Err(_) => break,
                }
            }
            if let Ok(mut hs) = hists.lock() {
                for (h, l) in hs.iter_mut().zip(local.iter()) {
                    let _ = h.add(l);
                }
            }
        }));
    }
    let mut writers: Vec<TcpStream> = streams;
    let mut sent = 0u64;
    for (id, t) in schedule.times().enumerate() {
        let now = start.elapsed().as_nanos() as u64;
        if t > now {
            std::thread::sleep(Duration::from_nanos(t - now));
        }
        let c = id % writers.len();
        let mut msg = [0u8; 16];
        msg[..8].copy_from_slice(&(id as u64).to_le_bytes());
        msg[8..].copy_from_slice(&base.saturating_add(t).to_le_bytes());
        if let Ok(mut q) = outstanding[c].lock() {
            q.push_back(t);
        }
        if writers[c].write_all(&msg).is_err() {
            break;
        }
        sent += 1;
    }
    // Wait for the stragglers, then count what never came back.
    let deadline = Instant::now() + Duration::from_secs(2);
    while received.load(Ordering::Relaxed) < sent && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(5));
    }
    done.store(true, Ordering::Relaxed);
    for w in &writers {
        let _ = w.shutdown(std::net::Shutdown::Both);
    }
    for r in readers {
        let _ = r.join();
    }
    writers.clear();
    let end = start.elapsed().as_nanos() as u64;
    let mut hs = match Arc::try_unwrap(hists) {
        Ok(m) => m.into_inner().unwrap_or_default(),
        Err(a) => a.lock().map(|h| h.clone()).unwrap_or_default(),
    };
    let mut lost = 0;
    for q in outstanding.iter() {
        if let Ok(q) = q.lock() {
            for intended in q.iter() {
                lost += 1;
                for (h, (f, t)) in hs.iter_mut().zip(windows.iter()) {
                    if intended >= f && intended < t {
                        record(h, end.saturating_sub(*intended));
                    }
                }
            }
        }
    }
    Ok(LoadResult {
        windows: hs.into_iter().map(|hist| Window { hist }).collect(),
        sent,
        received: received.load(Ordering::Relaxed),
        lost,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hist::summarize;
    use std::net::TcpListener;

    #[test]
    fn constant_schedule_is_evenly_spaced() {
        let s = Schedule::constant_rate(Arrivals::Constant, 1000.0, 1.0);
        let t: Vec<u64> = s.times().collect();
        assert!((998..=1000).contains(&t.len()), "{}", t.len());
        assert!(t.windows(2).all(|w| (w[1] - w[0]).abs_diff(1_000_000) < 10));
    }

    #[test]
    fn poisson_schedule_has_the_right_mean_rate_and_steps() {
        let s = Schedule::constant_rate(Arrivals::Poisson, 5000.0, 4.0);
        let n = s.times().count() as f64;
        assert!((n / 4.0 - 5000.0).abs() < 250.0, "rate {}", n / 4.0);
        let step = Schedule {
            arrivals: Arrivals::Constant,
            segments: vec![(0.0, 100.0), (1.0, 1000.0)],
            duration_s: 2.0,
            seed: 1,
        };
        let t: Vec<u64> = step.times().collect();
        let before = t.iter().filter(|x| **x < 1_000_000_000).count();
        let after = t.len() - before;
        assert!(
            (99..=101).contains(&before) && (999..=1001).contains(&after),
            "{before} {after}"
        );
    }

    /// A server that answers at once except for one 300 ms stall: an open-loop client must see every
    /// request that queued behind the stall as slow, so the p99 reflects it.
    #[test]
    fn a_stalled_server_shows_up_as_latency() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = l.local_addr().unwrap().port();
        std::thread::spawn(move || {
            for c in l.incoming() {
                let mut c = c.unwrap();
                std::thread::spawn(move || {
                    let mut buf = [0u8; 16];
                    let mut n = 0;
                    while c.read_exact(&mut buf).is_ok() {
                        n += 1;
                        if n == 200 {
                            std::thread::sleep(Duration::from_millis(300));
                        }
                        if c.write_all(&buf).is_err() {
                            break;
                        }
                    }
                });
            }
        });
        let s = Schedule::constant_rate(Arrivals::Constant, 1000.0, 1.0);
        let r = run(port, 1, &s, &[(0, u64::MAX)], |_| {}).unwrap();
        assert_eq!(r.sent, r.received);
        let lat = summarize(&r.windows[0].hist);
        // ~300 of 1000 requests were delayed by up to 300 ms.
        assert!(lat.p99_us > 100_000.0, "{lat:?}");
        assert!(lat.p50_us < 150_000.0, "{lat:?}");
        assert!(lat.max_us >= 250_000.0, "{lat:?}");
    }
}
