//! The latency-objective watcher: a thread that scrapes each objective's histogram every
//! `slo.interval` and keeps its windowed quantile, so the control loop never waits on the network.
//! Objectives come from the config (local mode) and from pods' annotations (on the pod's own IP and
//! a port its spec declares, never a loopback or link-local address). Every fetch has a timeout and
//! a body cap, follows no redirect and ignores proxy settings in the environment. Objectives are
//! fetched eight at a time, those read well last time first; one that failed is tried again only
//! in the first half of a round, and after two failures in a row waits an interval, doubling up to
//! 10 s: endpoints that hold their answers back hold a round up only the first time they fail.
//! Only the metric's own lines reach the parser, at most 20 000 of them. A
//! reading older than `slo.stale_after`, or a fetch that failed, gives no signal: the policy then
//! acts on pressure alone. Failures are logged once per objective and counted.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};
use tidal_model::{Signal, SignalKind, WorkloadSnapshot};
use tidal_policy::config::slo::{Objective, SloConfig};
use tidal_snapshot::slo::{count_above, holds_start, increase, parse_histogram, quantile, Buckets};
use tracing::{info, warn};

/// One objective as the watcher scrapes it.
#[derive(Debug, Clone, PartialEq)]
pub struct Spec {
    /// The workload it speaks for (a tidal group, or a pod's `namespace/name`).
    pub workload: String,
    pub url: String,
    pub metric: String,
    pub labels: BTreeMap<String, String>,
    pub quantile: f64,
    pub target: f64,
}

impl Spec {
    /// Its window and state: a change of endpoint, metric, label matchers, quantile or target
    /// makes another objective.
    fn key(&self) -> String {
        format!(
            "{} {} {} {:?} {} {}",
            self.workload, self.url, self.metric, self.labels, self.quantile, self.target
        )
    }
    /// As reasons, `tidal status` and the metrics' `objective` label name it: with its label
    /// matchers, so that two objectives of one workload on one metric stay apart.
    fn what(&self) -> String {
        let labels: Vec<String> = self
            .labels
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect();
        if labels.is_empty() {
            format!("p{} of {}", fmt_q(self.quantile), self.metric)
        } else {
            format!(
                "p{} of {}{{{}}}",
                fmt_q(self.quantile),
                self.metric,
                labels.join(",")
            )
        }
    }
}

fn fmt_q(q: f64) -> String {
    let s = format!("{}", (q * 1000.0).round() / 10.0);
    s.trim_end_matches(".0").to_string()
}

/// Objectives the pods of one node may declare: beyond it (said once) the rest are not read. A
/// node runs 110 pods by the kubelet's default.
pub const MAX_POD_OBJECTIVES: usize = 512;

/// Scrapes in flight at once: an endpoint that holds its answer back costs one of them a timeout,
/// not every objective after it its turn.
const SCRAPERS: usize = 8;

/// The longest wait before an objective that keeps failing is tried again.
const BACKOFF_MAX: Duration = Duration::from_secs(10);

/// The objectives of the config, then those the pods declare (online pods with an IP only, at
/// most [`MAX_POD_OBJECTIVES`]).
pub fn specs(cfg: &[Objective], workloads: &[WorkloadSnapshot]) -> Vec<Spec> {
    let mut out: Vec<Spec> = cfg
        .iter()
        .map(|o| Spec {
            workload: o.workload.clone(),
            url: o.url.clone(),
            metric: o.metric.clone(),
            labels: o.labels.clone(),
            quantile: o.quantile,
            target: o.target.0,
        })
        .collect();
    for w in workloads.iter().filter(|w| w.level.is_online()) {
        let Some(p) = &w.pod else { continue };
        let (Some(s), Some(ip)) = (&p.slo, &p.ip) else {
            continue;
        };
        let Ok(ip) = ip.parse::<std::net::IpAddr>() else {
            continue;
        };
        if !pod_address(&ip) {
            continue;
        }
        if out.len() >= cfg.len().saturating_add(MAX_POD_OBJECTIVES) {
            static SAID: AtomicBool = AtomicBool::new(false);
            if !SAID.swap(true, Ordering::Relaxed) {
                warn!(
                    "more than {MAX_POD_OBJECTIVES} pods declare a latency objective: the rest are not read (logged once)"
                );
            }
            break;
        }
        let host = match ip {
            std::net::IpAddr::V4(a) => a.to_string(),
            std::net::IpAddr::V6(a) => format!("[{a}]"),
        };
        out.push(Spec {
            workload: w.name.clone(),
            url: format!("http://{host}:{}{}", s.port, s.path),
            metric: s.metric.clone(),
            labels: s.labels.clone(),
            quantile: s.quantile,
            target: s.target,
        });
    }
    // The same objective twice would share one window: read once.
    let mut seen = HashSet::new();
    out.retain(|s| seen.insert(s.key()));
    out
}

/// Cloud metadata services outside the link-local ranges: AWS's IPv6 endpoint and Alibaba
/// Cloud's. An address in a pod's status is the kubelet's, but the agent runs as root on the node
/// and a metadata answer is the node's credentials: never, whatever the status says.
const METADATA_V4: [std::net::Ipv4Addr; 1] = [std::net::Ipv4Addr::new(100, 100, 100, 200)];
const METADATA_V6: [std::net::Ipv6Addr; 1] =
    [std::net::Ipv6Addr::new(0xfd00, 0xec2, 0, 0, 0, 0, 0, 0x254)];

/// Whether a pod's IP may be fetched: never loopback, unspecified, link-local (where most cloud
/// metadata services answer) or another known metadata address, whatever the pod's status says.
fn pod_address(ip: &std::net::IpAddr) -> bool {
    let v4 = |a: &std::net::Ipv4Addr| {
        !(a.is_loopback() || a.is_unspecified() || a.is_link_local() || METADATA_V4.contains(a))
    };
    match ip {
        std::net::IpAddr::V4(a) => v4(a),
        std::net::IpAddr::V6(a) => match a.to_ipv4_mapped() {
            Some(m) => v4(&m),
            None => {
                !(a.is_loopback()
                    || a.is_unspecified()
                    || (a.segments()[0] & 0xffc0) == 0xfe80
                    || METADATA_V6.contains(a))
            }
        },
    }
}

/// The last reading of one objective.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Reading {
    pub workload: String,
    pub what: String,
    pub target_s: f64,
    /// The quantile over the last window; None if the window had too few requests, held the
    /// service's first requests, or the fetch failed.
    pub observed_s: Option<f64>,
    pub slack: Option<f64>,
    pub requests: Option<f64>,
    /// Seconds since the last good reading (None: never).
    pub age_s: Option<f64>,
    pub stale: bool,
    pub error: Option<String>,
    pub scrape_errors: u64,
}

struct State {
    spec: Spec,
    last_ok: Option<Instant>,
    observed: Option<f64>,
    /// How far the window's count over the target exceeds the quantile's allowance (sd).
    excess_z: Option<f64>,
    requests: Option<f64>,
    error: Option<String>,
    errors: u64,
    prev: Option<Buckets>,
    /// Fetches failed in a row, and when the next may be tried ([`backoff`]).
    failures: u32,
    retry_at: Option<Instant>,
}

/// After the second failure in a row an objective waits an interval before its next try, twice
/// that after the third, and so on up to [`BACKOFF_MAX`]: an endpoint that never answers costs a
/// scraper a timeout now and then, not each round.
fn backoff(failures: u32, interval: Duration) -> Option<Duration> {
    let doublings = failures.checked_sub(2)?;
    Some(
        interval
            .saturating_mul(1u32 << doublings.min(16))
            .min(BACKOFF_MAX),
    )
}

/// Up to a quarter more than `d`, fixed per objective: objectives that failed together do not
/// all try again in the same round.
fn spread(d: Duration, key: &str) -> Duration {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    key.hash(&mut h);
    d.saturating_add(d.mul_f64((h.finish() % 1000) as f64 / 4000.0))
}

/// One fetch: the histogram or why not, and when it was read.
type Fetched = Option<(Result<Buckets, String>, Instant)>;

/// The order a round fetches in: objectives read well last time first, then those trying again
/// after a failure, longest waiting first. The second list starts at the returned index.
fn round_order(specs: &[Spec], prevs: &HashMap<String, Prev>, now: Instant) -> (Vec<usize>, usize) {
    let mut fresh = Vec::new();
    let mut retries = Vec::new();
    for (i, s) in specs.iter().enumerate() {
        match prevs.get(&s.key()) {
            Some(p) if p.retry_at.is_some_and(|t| now < t) => {}
            Some(p) if p.failures > 0 => retries.push((p.retry_at, i)),
            _ => fresh.push(i),
        }
    }
    retries.sort();
    let n = fresh.len();
    fresh.extend(retries.into_iter().map(|(_, i)| i));
    (fresh, n)
}

/// Fetches and parses `specs[i]` for each `i` of `order`, [`SCRAPERS`] at a time (this thread one
/// of them). Those from `retries_from` on (objectives that failed last time) are started only
/// until `retry_until`: endpoints that never answer cannot hold a round up for long, and those not
/// started go first next round. None for those not fetched.
fn scrape_all(
    agent: &ureq::Agent,
    specs: &[Spec],
    order: &[usize],
    retries_from: usize,
    retry_until: Instant,
    cap: u64,
) -> Vec<Fetched> {
    let out: Vec<Mutex<Fetched>> = specs.iter().map(|_| Mutex::new(None)).collect();
    let next = std::sync::atomic::AtomicUsize::new(0);
    let work = || loop {
        let k = next.fetch_add(1, Ordering::Relaxed);
        let Some(&i) = order.get(k) else { break };
        if k >= retries_from && Instant::now() >= retry_until {
            break;
        }
        let s = &specs[i];
        // A fault in the parser costs this reading, not the watcher.
        let got = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            fetch(agent, &s.url, cap).and_then(|text| parse_histogram(&text, &s.metric, &s.labels))
        }))
        .unwrap_or_else(|_| Err("the metrics could not be parsed (parser fault)".into()))
        .map_err(|e| one_line(&e));
        *lock(&out[i]) = Some((got, Instant::now()));
    };
    std::thread::scope(|scope| {
        for _ in 1..order.len().min(SCRAPERS) {
            // A helper that cannot start leaves its share to the others.
            if std::thread::Builder::new()
                .name("tidal-slo-fetch".into())
                .spawn_scoped(scope, work)
                .is_err()
            {
                break;
            }
        }
        work();
    });
    out.into_iter()
        .map(|m| m.into_inner().unwrap_or_else(|p| p.into_inner()))
        .collect()
}

struct Inner {
    cfg: Mutex<SloConfig>,
    specs: Mutex<Vec<Spec>>,
    /// Signalled when the objectives change or the watcher stops: the thread sleeps on it.
    changed: Condvar,
    states: Mutex<BTreeMap<String, State>>,
    stop: AtomicBool,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
}

pub struct SloWatch {
    inner: Arc<Inner>,
}

impl Drop for SloWatch {
    fn drop(&mut self) {
        self.inner.stop.store(true, Ordering::Relaxed);
        // Under the lock the thread checks `stop` under, so the wake-up cannot fall between.
        let _g = lock(&self.inner.specs);
        self.inner.changed.notify_all();
    }
}

impl SloWatch {
    pub fn start(cfg: &SloConfig) -> SloWatch {
        // At start-up (inside the agent's first run-queue window, which is not read), not at the
        // first scrape: the first parse costs milliseconds of CPU at the agent's online priority,
        // and the waits it caused in the service were read as interference.
        if !tidal_snapshot::slo::warm_up() {
            warn!("the metrics parser did not read its own sample; objectives may not be readable");
        }
        let inner = Arc::new(Inner {
            cfg: Mutex::new(cfg.clone()),
            specs: Mutex::new(Vec::new()),
            changed: Condvar::new(),
            states: Mutex::new(BTreeMap::new()),
            stop: AtomicBool::new(false),
        });
        let i = Arc::clone(&inner);
        if let Err(e) = std::thread::Builder::new()
            .name("tidal-slo".into())
            .spawn(move || run(&i))
        {
            warn!("cannot start the latency-objective watcher: {e}; objectives are not read");
        }
        SloWatch { inner }
    }

    pub fn set_config(&self, cfg: &SloConfig) {
        *lock(&self.inner.cfg) = cfg.clone();
    }

    pub fn set_specs(&self, specs: Vec<Spec>) {
        let mut cur = lock(&self.inner.specs);
        if *cur != specs {
            *cur = specs;
            self.inner.changed.notify_all();
        }
    }

    /// Fresh signals for the policy, and every objective's reading for reports.
    pub fn read(&self) -> (Vec<Signal>, Vec<Reading>) {
        let stale_after = Duration::from_millis(lock(&self.inner.cfg).stale_after.0);
        let states = lock(&self.inner.states);
        let mut sig = Vec::new();
        let mut out = Vec::new();
        for st in states.values() {
            let age = st.last_ok.map(|t| t.elapsed());
            let stale = age.is_none_or(|a| a > stale_after);
            let slack = st.observed.map(|o| Signal::slack_of(o, st.spec.target));
            if let (false, Some(o), Some(sl)) = (stale, st.observed, slack) {
                sig.push(Signal {
                    kind: SignalKind::Slo,
                    workload: st.spec.workload.clone(),
                    what: st.spec.what(),
                    observed: o,
                    target: st.spec.target,
                    slack: sl,
                    age_ms: age.map(|a| a.as_millis().min(u128::from(u64::MAX)) as u64),
                    excess_z: st.excess_z,
                });
            }
            out.push(Reading {
                workload: st.spec.workload.clone(),
                what: st.spec.what(),
                target_s: st.spec.target,
                observed_s: st.observed,
                slack,
                requests: st.requests,
                age_s: age.map(|a| a.as_secs_f64()),
                stale,
                error: st.error.clone(),
                scrape_errors: st.errors,
            });
        }
        (sig, out)
    }
}

fn fetch(agent: &ureq::Agent, url: &str, cap: u64) -> Result<String, String> {
    let mut r = agent.get(url).call().map_err(|e| e.to_string())?;
    let status = r.status().as_u16();
    if status != 200 {
        return Err(format!("HTTP {status}"));
    }
    r.body_mut()
        .with_config()
        .limit(cap)
        .read_to_string()
        .map_err(|e| format!("body: {e}"))
}

fn run(inner: &Inner) {
    let mut logged: HashSet<String> = HashSet::new();
    let mut thin: HashSet<String> = HashSet::new();
    // Objectives read at least once: the first good read is said, so an operator sees it works.
    let mut read: HashSet<String> = HashSet::new();
    let mut next = Instant::now();
    let stopped = || inner.stop.load(Ordering::Relaxed);
    while !stopped() {
        let now = Instant::now();
        if now < next {
            // Until the next scrape, the objectives changing or the watcher stopping.
            let g = lock(&inner.specs);
            if !stopped() {
                drop(inner.changed.wait_timeout(g, next - now));
            }
            continue;
        }
        let specs = lock(&inner.specs).clone();
        if specs.is_empty() {
            lock(&inner.states).clear();
            // An objective declared again is said again.
            logged.clear();
            thin.clear();
            read.clear();
            // Objectives come with the first tick, after this thread starts: scraped as soon as
            // they come, the first window opens then, not an interval later. (The timeout is a
            // bound only: the condition is checked under the lock the change is made under.)
            let g = lock(&inner.specs);
            drop(
                inner
                    .changed
                    .wait_timeout_while(g, Duration::from_secs(5), |s| s.is_empty() && !stopped()),
            );
            continue;
        }
        let cfg = lock(&inner.cfg).clone();
        let interval = Duration::from_millis(cfg.interval.0.max(100));
        next = now + interval;
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_millis(cfg.timeout.0)))
            .max_redirects(0)
            // Straight to the address: a node's HTTP_PROXY must not carry pod-chosen fetches.
            .proxy(None)
            .http_status_as_error(false)
            .build()
            .into();
        let keys: HashSet<String> = specs.iter().map(Spec::key).collect();
        // Pods come and go: what was said of one gone is forgotten with it.
        logged.retain(|k| keys.contains(k));
        thin.retain(|k| keys.contains(k));
        read.retain(|k| keys.contains(k));
        let mut prevs: HashMap<String, Prev> = {
            let mut st = lock(&inner.states);
            st.retain(|k, _| keys.contains(k));
            st.iter()
                .map(|(k, s)| {
                    (
                        k.clone(),
                        Prev {
                            buckets: s.prev.clone(),
                            last_ok: s.last_ok,
                            errors: s.errors,
                            failures: s.failures,
                            retry_at: s.retry_at,
                            error: s.error.clone(),
                        },
                    )
                })
                .collect()
        };
        let (order, retries_from) = round_order(&specs, &prevs, now);
        let fetched = scrape_all(
            &agent,
            &specs,
            &order,
            retries_from,
            now + interval / 2,
            cfg.max_body_bytes,
        );
        for (spec, got) in specs.into_iter().zip(fetched) {
            let key = spec.key();
            let p = prevs.remove(&key).unwrap_or_default();
            let (prev, last_ok, mut errors) = (p.buckets, p.last_ok, p.errors);
            let (mut failures, mut retry_at) = (p.failures, p.retry_at);
            let Some((got, at)) = got else {
                // Waiting out its back-off, or not reached this round: as it was.
                lock(&inner.states).insert(
                    key,
                    State {
                        spec,
                        last_ok,
                        observed: None,
                        excess_z: None,
                        requests: None,
                        error: p.error,
                        errors,
                        prev,
                        failures,
                        retry_at,
                    },
                );
                continue;
            };
            match &got {
                Ok(_) => (failures, retry_at) = (0, None),
                Err(_) => {
                    failures = failures.saturating_add(1);
                    // From the round's start: a wait of one interval skips one round.
                    retry_at = backoff(failures, interval).map(|d| now + spread(d, &key));
                }
            }
            let (observed, excess_z, requests, error, cur, ok_at) = match got {
                Ok(cur) => {
                    let first = !read.contains(&key);
                    if first {
                        read.insert(key.clone());
                    }
                    if logged.remove(&key) {
                        info!(
                            "latency objective of {}: {} readable again",
                            spec.workload, spec.url
                        );
                    } else if first {
                        info!(
                            "latency objective of {}: {} ≤ {} read from {}, every {} ms",
                            spec.workload,
                            spec.what(),
                            tidal_policy::config::slo::Latency(spec.target),
                            spec.url,
                            cfg.interval.0.max(100)
                        );
                    }
                    let j = judge(prev.as_ref(), &cur, &spec, &cfg);
                    // A window with too few requests says nothing; it is not a failure, but
                    // the objective goes stale if it lasts: said once, and once when it ends.
                    let ok_at = if j.observed.is_some() {
                        if thin.remove(&key) {
                            info!(
                                "latency objective of {}: enough requests again",
                                spec.workload
                            );
                        }
                        Some(at)
                    } else {
                        if j.started {
                            info!(
                                "latency objective of {}: the service's first requests (it had counted none, or restarted); read from the next window",
                                spec.workload
                            );
                        } else if j.thin && thin.insert(key.clone()) {
                            info!(
                                "latency objective of {}: {} (no reading until there are more; logged once)",
                                spec.workload,
                                j.error.as_deref().unwrap_or("no requests in the window")
                            );
                        }
                        last_ok
                    };
                    (
                        j.observed,
                        j.excess_z,
                        j.requests,
                        j.error,
                        Some(cur),
                        ok_at,
                    )
                }
                Err(e) => {
                    errors += 1;
                    if logged.insert(key.clone()) {
                        warn!(
                            "latency objective of {}: cannot read {} ({e}); pressure rules only until it can (logged once)",
                            spec.workload, spec.url
                        );
                    }
                    (None, None, None, Some(e), prev.clone(), last_ok)
                }
            };
            lock(&inner.states).insert(
                key,
                State {
                    spec,
                    last_ok: ok_at,
                    observed,
                    excess_z,
                    requests,
                    error,
                    errors,
                    prev: cur,
                    failures,
                    retry_at,
                },
            );
        }
    }
}

/// An error that may quote what an endpoint sent, fit for one log line: no control characters,
/// at most 300 characters.
fn one_line(e: &str) -> String {
    e.chars()
        .take(300)
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// What the watcher keeps of an objective from one round to the next.
#[derive(Default)]
struct Prev {
    buckets: Option<Buckets>,
    last_ok: Option<Instant>,
    errors: u64,
    failures: u32,
    retry_at: Option<Instant>,
    error: Option<String>,
}

/// What one scrape says of its objective against the scrape before it.
#[derive(Debug, PartialEq)]
struct Judged {
    /// The quantile over the window: a reading.
    observed: Option<f64>,
    excess_z: Option<f64>,
    /// Requests in the window (None: no window yet).
    requests: Option<f64>,
    /// Why there is no reading.
    error: Option<String>,
    /// The window holds the service's first requests ([`holds_start`]).
    started: bool,
    /// The window had fewer than `slo.min_requests`.
    thin: bool,
}

/// Judges the window from `prev` to `cur`. It gives a reading when there was a scrape before, the
/// window does not hold the service's start (a target for its steady state does not describe its
/// warm-up: in the bench, the first window held the load generator's start and tightened offline
/// for it) and it has `slo.min_requests`.
fn judge(prev: Option<&Buckets>, cur: &Buckets, spec: &Spec, cfg: &SloConfig) -> Judged {
    let Some(prev) = prev else {
        return Judged {
            observed: None,
            excess_z: None,
            requests: None,
            error: Some("first scrape: no window yet".into()),
            started: false,
            thin: false,
        };
    };
    let window = increase(Some(prev), cur);
    let n = window.total();
    let started = holds_start(prev, cur);
    let thin = !started && (n < cfg.min_requests as f64 || n <= 0.0);
    let error = if started {
        Some("the service's first requests (it had counted none, or restarted): not judged".into())
    } else if thin {
        Some(format!(
            "{n:.0} requests in the window (fewer than slo.min_requests {})",
            cfg.min_requests
        ))
    } else {
        None
    };
    let observed = if error.is_none() {
        quantile(spec.quantile, &window)
    } else {
        None
    };
    let excess_z = observed
        .and_then(|_| window_excess(spec.target, spec.quantile, cfg.tighten_below, &window, n));
    Judged {
        observed,
        excess_z,
        requests: Some(n),
        error,
        started,
        thin,
    }
}

/// How far a window's count of requests slower than where the objective tightens (its target at
/// `tighten_below` 0) exceeds what the quantile allows, as a normal deviate
/// ([`Signal::excess_z`]): the noise test then judges the same miss the slack does. None when the
/// window has no buckets or no requests.
fn window_excess(
    target: f64,
    quantile: f64,
    tighten_below: f64,
    window: &Buckets,
    n: f64,
) -> Option<f64> {
    let over = count_above(target * (1.0 - tighten_below), window)?;
    Signal::excess_z(over, n, quantile)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tidal_model::{ForeignGroup, PodInfo, PodRef, PodSlo, QosClass, QosLevel, Target};

    /// 10 000 requests: 9 800 under 1 ms, 100 in (1 ms, 2 ms], 100 over 2 ms.
    fn window() -> Buckets {
        Buckets(vec![
            (0.001, 9_800.0),
            (0.002, 9_900.0),
            (f64::INFINITY, 10_000.0),
        ])
    }

    #[test]
    fn the_noise_count_is_taken_over_where_the_objective_tightens() {
        let w = window();
        // p99 ≤ 2 ms: 100 over it, exactly what p99 allows, so about no excess (the binomial
        // tail of its mean is a little over a half).
        let at_target = window_excess(0.002, 0.99, 0.0, &w, 10_000.0).unwrap();
        assert!(at_target.abs() < 0.1, "{at_target}");
        let mean = Signal::excess_z(100.0, 10_000.0, 0.99).unwrap();
        assert!((at_target - mean).abs() < 1e-6, "{at_target} {mean}");
        // tighten_below 0.5 tightens at 1 ms: 200 over, 100 allowed, about ten deviations out.
        let tighter = window_excess(0.002, 0.99, 0.5, &w, 10_000.0).unwrap();
        let twice = Signal::excess_z(200.0, 10_000.0, 0.99).unwrap();
        assert!((tighter - twice).abs() < 1e-6, "{tighter} {twice}");
        assert!((8.0..10.1).contains(&tighter), "{tighter}");
        // A target of 1 ms reads the same as 2 ms with tighten_below 0.5.
        let same = window_excess(0.001, 0.99, 0.0, &w, 10_000.0).unwrap();
        assert!((same - tighter).abs() < 1e-9);
        // No requests, no buckets: unknown, not zero.
        assert_eq!(window_excess(0.002, 0.99, 0.0, &w, 0.0), None);
        assert_eq!(window_excess(0.002, 0.99, 0.0, &Buckets(vec![]), 1.0), None);
    }

    #[test]
    fn a_window_is_judged_after_the_first_scrape_and_the_service_s_start() {
        let spec = Spec {
            workload: "online-critical/web".into(),
            url: "http://127.0.0.1:1/metrics".into(),
            metric: "m".into(),
            labels: BTreeMap::new(),
            quantile: 0.99,
            target: 0.005,
        };
        let cfg = SloConfig::default();
        // Cumulative counts: `fast` under 1 ms, `slow` in (10 ms, 50 ms].
        let at = |fast: f64, slow: f64| {
            Buckets(vec![
                (0.001, fast),
                (0.01, fast),
                (0.05, fast + slow),
                (f64::INFINITY, fast + slow),
            ])
        };
        let first = judge(None, &at(0.0, 0.0), &spec, &cfg);
        assert_eq!(first.observed, None);
        assert_eq!(first.requests, None);
        assert!(first.error.is_some_and(|e| e.contains("first scrape")));
        // The service's first requests, slow ones: not judged.
        let start = judge(Some(&at(0.0, 0.0)), &at(0.0, 500.0), &spec, &cfg);
        assert!(start.started && !start.thin);
        assert_eq!((start.observed, start.excess_z), (None, None));
        assert_eq!(start.requests, Some(500.0));
        // The window after it is: a miss, far beyond noise.
        let next = judge(Some(&at(0.0, 500.0)), &at(0.0, 1000.0), &spec, &cfg);
        assert!(!next.started && next.error.is_none());
        assert!(next.observed.is_some_and(|o| o > 0.04), "{next:?}");
        assert!(next.excess_z.is_some_and(|z| z > 3.0), "{next:?}");
        // Fast requests meet the target.
        let met = judge(Some(&at(0.0, 1000.0)), &at(500.0, 1000.0), &spec, &cfg);
        assert!(met.observed.is_some_and(|o| o <= 0.001), "{met:?}");
        // Too few requests: no reading, said as such.
        let thin = judge(Some(&at(500.0, 1000.0)), &at(505.0, 1000.0), &spec, &cfg);
        assert!(thin.thin && !thin.started && thin.observed.is_none());
        assert!(thin.error.is_some_and(|e| e.contains("min_requests")));
        // A restart (the counts went down): its first window is not judged either.
        let restart = judge(Some(&at(500.0, 1000.0)), &at(0.0, 300.0), &spec, &cfg);
        assert!(restart.started && restart.observed.is_none());
        // No requests at all is thin, not a start.
        let idle = judge(Some(&at(0.0, 0.0)), &at(0.0, 0.0), &spec, &cfg);
        assert!(idle.thin && !idle.started);
        // Also where any count would do: an empty window is never a reading.
        let any = SloConfig {
            min_requests: 0,
            ..SloConfig::default()
        };
        let empty = judge(Some(&at(0.0, 0.0)), &at(0.0, 0.0), &spec, &any);
        assert!(empty.thin && empty.error.is_some() && empty.observed.is_none());
    }

    fn pod(name: &str, level: QosLevel, ip: &str, slo: Option<PodSlo>) -> WorkloadSnapshot {
        let g = ForeignGroup::new(&format!("kubepods/pod{}", name.replace('/', "-"))).unwrap();
        let mut w = WorkloadSnapshot::unread(Target::Foreign(g), level, name);
        w.pod = Some(PodInfo {
            pod: PodRef {
                namespace: "ns".into(),
                name: name.into(),
                uid: name.into(),
            },
            qos_class: QosClass::Burstable,
            containers: vec![],
            liveness_probe: false,
            tier_idle: false,
            cpu_limit_milli: None,
            terminating: false,
            node_daemon: false,
            eviction_refused: false,
            memory_request: None,
            ip: Some(ip.to_string()),
            slo,
        });
        w
    }

    fn pod_slo(port: u16, path: &str) -> PodSlo {
        PodSlo {
            port,
            path: path.into(),
            metric: "request_duration_seconds".into(),
            labels: BTreeMap::new(),
            quantile: 0.99,
            target: 0.005,
        }
    }

    #[test]
    fn a_pod_objective_is_fetched_on_the_pod_ip_and_its_declared_port_only() {
        let ws = vec![
            pod(
                "ns/web",
                QosLevel::Online,
                "10.1.2.3",
                Some(pod_slo(8080, "/metrics")),
            ),
            pod(
                "ns/v6",
                QosLevel::OnlineHigh,
                "fd00::5",
                Some(pod_slo(9090, "/m")),
            ),
            // Offline pods' objectives are not read; nor are pods without one.
            pod(
                "ns/batch",
                QosLevel::Offline,
                "10.1.2.4",
                Some(pod_slo(8080, "/metrics")),
            ),
            pod("ns/plain", QosLevel::Online, "10.1.2.5", None),
            // Addresses a pod's status must never send the agent to.
            pod(
                "ns/lo",
                QosLevel::Online,
                "127.0.0.1",
                Some(pod_slo(80, "/metrics")),
            ),
            pod(
                "ns/meta",
                QosLevel::Online,
                "169.254.169.254",
                Some(pod_slo(80, "/latest")),
            ),
            pod(
                "ns/mapped",
                QosLevel::Online,
                "::ffff:169.254.169.254",
                Some(pod_slo(80, "/x")),
            ),
            pod(
                "ns/ll6",
                QosLevel::Online,
                "fe80::1",
                Some(pod_slo(80, "/x")),
            ),
            pod(
                "ns/aws6",
                QosLevel::Online,
                "fd00:ec2::254",
                Some(pod_slo(80, "/latest")),
            ),
            pod(
                "ns/aliyun",
                QosLevel::Online,
                "100.100.100.200",
                Some(pod_slo(80, "/latest")),
            ),
            pod(
                "ns/aliyun-mapped",
                QosLevel::Online,
                "::ffff:100.100.100.200",
                Some(pod_slo(80, "/latest")),
            ),
            pod(
                "ns/any",
                QosLevel::Online,
                "0.0.0.0",
                Some(pod_slo(80, "/x")),
            ),
            pod(
                "ns/bad",
                QosLevel::Online,
                "web.example",
                Some(pod_slo(80, "/x")),
            ),
        ];
        let got: Vec<(String, String)> = specs(&[], &ws)
            .into_iter()
            .map(|s| (s.workload, s.url))
            .collect();
        assert_eq!(
            got,
            vec![
                (
                    "ns/web".to_string(),
                    "http://10.1.2.3:8080/metrics".to_string()
                ),
                ("ns/v6".to_string(), "http://[fd00::5]:9090/m".to_string()),
            ]
        );
    }

    #[test]
    fn an_objective_that_keeps_failing_waits_longer_up_to_a_bound() {
        let i = Duration::from_secs(1);
        assert_eq!(backoff(0, i), None);
        assert_eq!(backoff(1, i), None, "one failure: tried again next round");
        assert_eq!(backoff(2, i), Some(i));
        assert_eq!(backoff(3, i), Some(2 * i));
        assert_eq!(backoff(5, i), Some(8 * i));
        assert_eq!(backoff(6, i), Some(BACKOFF_MAX));
        assert_eq!(backoff(u32::MAX, Duration::MAX), Some(BACKOFF_MAX));
    }

    #[test]
    fn endpoints_that_hold_their_answer_back_are_fetched_side_by_side_with_the_rest() {
        use std::io::{Read, Write};
        use std::sync::atomic::AtomicUsize;
        // Holds every connection open without a word, counting how many it holds at once.
        let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let silent_addr = silent.local_addr().unwrap();
        let held = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        {
            let (held, most) = (Arc::clone(&held), Arc::clone(&most));
            std::thread::spawn(move || {
                for mut c in silent.incoming().flatten() {
                    let n = held.fetch_add(1, Ordering::SeqCst) + 1;
                    most.fetch_max(n, Ordering::SeqCst);
                    let held = Arc::clone(&held);
                    // Until the client gives up and closes.
                    std::thread::spawn(move || {
                        let mut buf = [0u8; 1024];
                        while c.read(&mut buf).is_ok_and(|n| n > 0) {}
                        held.fetch_sub(1, Ordering::SeqCst);
                    });
                }
            });
        }
        let good = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let good_addr = good.local_addr().unwrap();
        std::thread::spawn(move || {
            for mut c in good.incoming().flatten() {
                let mut buf = [0u8; 1024];
                let _ = c.read(&mut buf);
                let body =
                    "# TYPE m histogram\nm_bucket{le=\"0.001\"} 5\nm_bucket{le=\"+Inf\"} 6\n";
                let _ = write!(
                    c,
                    "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
            }
        });
        let spec = |addr: std::net::SocketAddr| Spec {
            workload: "w".into(),
            url: format!("http://{addr}/metrics"),
            metric: "m".into(),
            labels: BTreeMap::new(),
            quantile: 0.99,
            target: 0.005,
        };
        let mut specs: Vec<Spec> = (0..12).map(|_| spec(silent_addr)).collect();
        specs.insert(6, spec(good_addr));
        // One not in the round's order: not fetched.
        specs.push(spec(good_addr));
        let order: Vec<usize> = (0..13).collect();
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .timeout_global(Some(Duration::from_millis(1500)))
            .build()
            .into();
        let far = Instant::now() + Duration::from_secs(3600);
        let got = scrape_all(&agent, &specs, &order, order.len(), far, 1 << 20);
        assert_eq!(got.len(), specs.len());
        assert!(got[13].is_none(), "not in the order, not fetched");
        assert_eq!(
            got[6].as_ref().and_then(|(r, _)| r.as_ref().ok()),
            Some(&Buckets(vec![(0.001, 5.0), (f64::INFINITY, 6.0)]))
        );
        for (i, g) in got.iter().enumerate().filter(|(i, _)| ![6, 13].contains(i)) {
            assert!(matches!(g, Some((Err(_), _))), "{i}: {g:?}");
        }
        // The silent endpoint held several of them at once: they did not wait in a line (one in
        // a line could show two, a close not yet seen as the next comes).
        let most = most.load(Ordering::SeqCst);
        assert!(most >= 4, "{most} at once");
    }

    #[test]
    fn a_round_reads_objectives_read_well_first_then_retries_longest_waiting_first_and_none_past_their_time(
    ) {
        let spec = |w: &str| Spec {
            workload: w.into(),
            url: "http://10.0.0.1:80/metrics".into(),
            metric: "m".into(),
            labels: BTreeMap::new(),
            quantile: 0.99,
            target: 0.005,
        };
        let specs: Vec<Spec> = ["new", "ok", "retry-late", "waiting", "retry-early"]
            .into_iter()
            .map(spec)
            .collect();
        let now = Instant::now();
        let prev = |failures: u32, retry_at: Option<Instant>| Prev {
            failures,
            retry_at,
            ..Prev::default()
        };
        let mut prevs = HashMap::new();
        prevs.insert(specs[1].key(), prev(0, None));
        prevs.insert(
            specs[2].key(),
            prev(3, Some(now - Duration::from_millis(10))),
        );
        prevs.insert(specs[3].key(), prev(4, Some(now + Duration::from_secs(5))));
        prevs.insert(specs[4].key(), prev(1, None));
        let (order, retries_from) = round_order(&specs, &prevs, now);
        assert_eq!(order, vec![0, 1, 4, 2], "waiting (3) is not in this round");
        assert_eq!(retries_from, 2);
        // Retries past their time are not started: nothing is fetched from an address that
        // would fail (a refused port).
        let unreachable: Vec<Spec> = (0..3)
            .map(|i| Spec {
                url: "http://127.0.0.1:1/metrics".into(),
                ..spec(&format!("w{i}"))
            })
            .collect();
        let agent: ureq::Agent = ureq::Agent::config_builder().build().into();
        let got = scrape_all(&agent, &unreachable, &[0, 1, 2], 1, now, 1 << 10);
        assert!(matches!(got[0], Some((Err(_), _))), "the fresh one is read");
        assert!(got[1].is_none() && got[2].is_none(), "{got:?}");
    }

    #[test]
    fn objectives_differing_in_labels_quantile_or_target_are_apart_and_duplicates_are_read_once() {
        let base = Objective {
            workload: "online/web".into(),
            url: "http://127.0.0.1:9/metrics".into(),
            metric: "m".into(),
            labels: BTreeMap::new(),
            quantile: 0.99,
            target: tidal_policy::config::slo::Latency(0.005),
        };
        let mut api = base.clone();
        api.labels.insert("handler".into(), "/api".into());
        let p50 = Objective {
            quantile: 0.5,
            ..base.clone()
        };
        let got = specs(&[base.clone(), api, p50, base], &[]);
        let whats: Vec<String> = got.iter().map(Spec::what).collect();
        assert_eq!(
            whats,
            vec!["p99 of m", "p99 of m{handler=/api}", "p50 of m"]
        );
        let keys: HashSet<String> = got.iter().map(Spec::key).collect();
        assert_eq!(keys.len(), 3);
    }

    #[test]
    fn quantile_names() {
        assert_eq!(fmt_q(0.99), "99");
        assert_eq!(fmt_q(0.999), "99.9");
        assert_eq!(fmt_q(0.5), "50");
    }
}
