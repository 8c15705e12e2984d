//! The `slo:` section: latency objectives of online workloads and how their slack drives the
//! interference ladder (Heracles' shape, every second). Local mode declares objectives here; pods
//! declare theirs with annotations (docs/kubernetes.md), which the agent reads on the pod's own IP.

use super::{ConfigError, Millis};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;

/// A latency, in seconds; YAML takes `5ms`, `500us`, `1.5s` or a plain number of seconds.
#[derive(Debug, Clone, Copy, PartialEq, PartialOrd)]
pub struct Latency(pub f64);

impl Serialize for Latency {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for Latency {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            N(f64),
            S(String),
        }
        match Raw::deserialize(d)? {
            Raw::N(n) => Ok(Latency(n)),
            Raw::S(s) => Latency::parse(&s).map_err(serde::de::Error::custom),
        }
    }
}

impl Latency {
    /// `5ms`, `500us`, `1.5s`, `0.002` (seconds).
    pub fn parse(s: &str) -> Result<Latency, String> {
        let t = s.trim();
        if let Ok(n) = t.parse::<f64>() {
            return Ok(Latency(n));
        }
        humantime::parse_duration(t)
            .map(|d| Latency(d.as_secs_f64()))
            .or_else(|_| {
                // humantime takes no fractions: 1.5ms is 1500us.
                let (num, unit) =
                    t.split_at(t.find(|c: char| c.is_ascii_alphabetic()).unwrap_or(t.len()));
                let scale = match unit.trim() {
                    "s" => 1.0,
                    "ms" => 1e-3,
                    "us" | "µs" => 1e-6,
                    _ => return Err(()),
                };
                num.trim()
                    .parse::<f64>()
                    .map(|v| Latency(v * scale))
                    .map_err(|_| ())
            })
            .map_err(|_| {
                format!(
                    "invalid latency '{}': use e.g. 5ms, 500us or 0.005",
                    s.chars().take(40).collect::<String>()
                )
            })
    }
}

impl fmt::Display for Latency {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.0;
        if s >= 1.0 {
            write!(f, "{s}s")
        } else if s >= 1e-3 {
            write!(f, "{}ms", (s * 1e6).round() / 1e3)
        } else {
            write!(f, "{}us", (s * 1e9).round() / 1e3)
        }
    }
}

/// One latency objective of an online workload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Objective {
    /// The workload it speaks for (a name under the tidal root, such as `online-critical/web`, or
    /// any label for reports).
    pub workload: String,
    /// Where the histogram is: an `http://` URL of a Prometheus/OpenMetrics endpoint.
    pub url: String,
    /// The histogram's name (without `_bucket`).
    pub metric: String,
    /// Only series with these labels.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// The quantile, in (0, 1): 0.99 for p99.
    pub quantile: f64,
    pub target: Latency,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SloConfig {
    /// Each objective is scraped this often; the quantile is over the last interval's requests.
    pub interval: Millis,
    /// A scrape that takes longer is abandoned (the objective then has no reading).
    pub timeout: Millis,
    /// Largest metrics body read.
    pub max_body_bytes: u64,
    /// A reading older than this is stale: no SLO action, PSI rules only.
    pub stale_after: Millis,
    /// Slack below this tightens offline by one step per reading (per `interval`, at most one per
    /// `interference.escalate_every`).
    pub tighten_below: f64,
    /// Slack below this stops offline growing.
    pub hold_below: f64,
    /// Slack above this, for `cpu.grow_after`, releases one step.
    pub release_above: f64,
    /// Fewer requests than this in a window give no reading (a quantile of a handful is noise).
    pub min_requests: u64,
    /// A probe is judged over this time: one followed by tightening within it doubles the wait
    /// before the next (from `probe_first`, up to 8 × this); one that lasts it resets the wait
    /// (0: never probe; else at least two `interval`s). Without probes, a target under
    /// 1 / (1 − `release_above`) × the service's quiet quantile keeps offline tightened for good.
    pub probe_after: Millis,
    /// An objective met with slack of `hold_below` or more this long (ample or not), with steps in
    /// force and no probe still being judged, releases one step to probe, while no probe has
    /// failed since the ladder was last empty or a probe last lasted. Short, so that tightening for
    /// a passing miss (a batch job starting) costs seconds of offline work, not minutes; each
    /// failed probe doubles it. Unset: 2 s, kept within `interval` (1 s at least) and
    /// `probe_after` (see [`SloConfig::probe_first`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub probe_first: Option<Millis>,
    pub objectives: Vec<Objective>,
}

impl Default for SloConfig {
    fn default() -> Self {
        SloConfig {
            interval: Millis(1_000),
            timeout: Millis(300),
            max_body_bytes: 4 << 20,
            stale_after: Millis(3_000),
            tighten_below: 0.0,
            hold_below: 0.10,
            release_above: 0.30,
            min_requests: 20,
            probe_after: Millis(30_000),
            probe_first: None,
            objectives: Vec::new(),
        }
    }
}

/// `slo.probe_first` where it is not set.
pub const PROBE_FIRST_DEFAULT: Millis = Millis(2_000);

impl SloConfig {
    /// The room before the first probe: as set, else 2 s kept within one `interval` (1 s at least)
    /// and `probe_after`, so that a config valid before the field existed stays valid.
    pub fn probe_first(&self) -> Millis {
        self.probe_first.unwrap_or_else(|| {
            let least = self.interval.0.max(1_000);
            let most = if self.probe_after.0 == 0 {
                u64::MAX
            } else {
                self.probe_after.0
            };
            Millis(PROBE_FIRST_DEFAULT.0.max(least).min(most))
        })
    }
}

fn err(e: &mut Vec<ConfigError>, ok: bool, field: &str, reason: String) {
    if !ok {
        e.push(ConfigError {
            field: format!("slo.{field}"),
            reason,
        });
    }
}

/// Checks an objective's fields (also used for pod-declared ones); each problem with its field.
pub fn check_objective(o: &Objective) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut bad = |f: &str, why: String| out.push((f.to_string(), why));
    if !(o.quantile.is_finite() && o.quantile > 0.0 && o.quantile < 1.0) {
        bad(
            "quantile",
            format!("must be in (0, 1), e.g. 0.99 (got {})", o.quantile),
        );
    }
    if !(o.target.0.is_finite() && o.target.0 >= 1e-6 && o.target.0 <= 60.0) {
        bad(
            "target",
            format!("must be between 1us and 60s (got {})", o.target.0),
        );
    }
    let name_ok = |s: &str| {
        !s.is_empty()
            && s.len() <= 200
            && s.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
            && !s.starts_with(|c: char| c.is_ascii_digit())
    };
    if !name_ok(&o.metric) {
        bad(
            "metric",
            format!(
                "'{}' is not a metric name",
                o.metric.chars().take(80).collect::<String>()
            ),
        );
    }
    for k in o.labels.keys() {
        if !name_ok(k) {
            bad(
                "labels",
                format!(
                    "'{}' is not a label name",
                    k.chars().take(80).collect::<String>()
                ),
            );
        }
    }
    if !(o.url.starts_with("http://")
        && o.url.len() <= 2048
        && !o.url.contains(char::is_whitespace))
    {
        bad(
            "url",
            format!(
                "must be an http:// URL (got '{}')",
                o.url.chars().take(80).collect::<String>()
            ),
        );
    }
    if o.workload.is_empty() || o.workload.len() > 256 {
        bad(
            "workload",
            "must name the workload (1 to 256 characters)".into(),
        );
    }
    out
}

impl SloConfig {
    pub fn validate(&self, tick: Millis, e: &mut Vec<ConfigError>) {
        let iv = self.interval;
        // Read every tick whatever the tick: the interval is the scrape's own.
        let _ = tick;
        err(
            e,
            iv >= Millis(100) && iv <= Millis(60_000),
            "interval",
            format!("must be between 100ms and 1m (got {iv})"),
        );
        err(
            e,
            self.timeout >= Millis(10) && self.timeout <= iv,
            "timeout",
            format!(
                "must be between 10ms and slo.interval {iv} (got {})",
                self.timeout
            ),
        );
        err(
            e,
            (1024..=(64 << 20)).contains(&self.max_body_bytes),
            "max_body_bytes",
            format!(
                "must be between 1024 and 67108864 (got {})",
                self.max_body_bytes
            ),
        );
        err(
            e,
            self.stale_after >= iv && self.stale_after <= Millis(600_000),
            "stale_after",
            format!(
                "must be between slo.interval {iv} and 10m (got {})",
                self.stale_after
            ),
        );
        for (f, v) in [
            ("tighten_below", self.tighten_below),
            ("hold_below", self.hold_below),
            ("release_above", self.release_above),
        ] {
            err(
                e,
                v.is_finite() && (-1.0..=1.0).contains(&v),
                f,
                format!("must be a slack between -1 and 1 (got {v})"),
            );
        }
        err(
            e,
            self.tighten_below <= self.hold_below && self.hold_below <= self.release_above,
            "hold_below",
            format!(
                "needs tighten_below ≤ hold_below ≤ release_above (got {} ≤ {} ≤ {})",
                self.tighten_below, self.hold_below, self.release_above
            ),
        );
        let pa = self.probe_after;
        // A probe is judged by the readings that follow it: at least two intervals of them.
        let least = Millis(iv.0.saturating_mul(2).max(1_000));
        err(
            e,
            pa == Millis(0) || (pa >= least && pa <= Millis(600_000)),
            "probe_after",
            format!(
                "must be 0 (never probe) or between {least} (1s, and two slo.interval) and 10m (got {pa})"
            ),
        );
        // The stretch with room before a probe holds at least one reading. Checked only where set:
        // the default fits itself to the other two.
        if let Some(pf) = self.probe_first {
            let least_first = Millis(iv.0.max(1_000));
            err(
                e,
                pa == Millis(0) || (pf >= least_first && pf <= pa),
                "probe_first",
                format!("must be between {least_first} (1s, and slo.interval) and slo.probe_after ({pa}) (got {pf})"),
            );
        }
        err(
            e,
            self.min_requests <= 1_000_000,
            "min_requests",
            format!("must be at most 1000000 (got {})", self.min_requests),
        );
        err(
            e,
            self.objectives.len() <= 64,
            "objectives",
            format!("at most 64 objectives (got {})", self.objectives.len()),
        );
        for (i, o) in self.objectives.iter().enumerate() {
            for (f, why) in check_objective(o) {
                e.push(ConfigError {
                    field: format!("slo.objectives[{i}].{f}"),
                    reason: why,
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latencies_take_units() {
        assert_eq!(Latency::parse("5ms").unwrap().0, 0.005);
        assert!((Latency::parse("1.5ms").unwrap().0 - 0.0015).abs() < 1e-12);
        assert!((Latency::parse("500us").unwrap().0 - 0.0005).abs() < 1e-12);
        assert_eq!(Latency::parse("0.25").unwrap().0, 0.25);
        assert!(Latency::parse("soon").is_err());
        assert_eq!(Latency(0.0015).to_string(), "1.5ms");
        assert_eq!(Latency(0.0005).to_string(), "500us");
    }

    #[test]
    fn objectives_are_checked_field_by_field() {
        let o = Objective {
            workload: String::new(),
            url: "file:///etc/passwd".into(),
            metric: "9bad".into(),
            labels: [("a-b".to_string(), "x".to_string())].into_iter().collect(),
            quantile: 1.5,
            target: Latency(f64::NAN),
        };
        let fields: Vec<String> = check_objective(&o).into_iter().map(|(f, _)| f).collect();
        for f in ["quantile", "target", "metric", "labels", "url", "workload"] {
            assert!(
                fields.contains(&f.to_string()),
                "{f} missing from {fields:?}"
            );
        }
    }

    #[test]
    fn the_first_probe_waits_at_least_a_reading_and_at_most_the_judging_time() {
        let fields = |c: &SloConfig| {
            let mut e = Vec::new();
            c.validate(Millis(100), &mut e);
            e.into_iter().map(|e| e.field).collect::<Vec<_>>()
        };
        let mut c = SloConfig::default();
        assert!(fields(&c).is_empty(), "{:?}", fields(&c));
        assert_eq!(c.probe_first(), Millis(2_000));
        for (first, ok) in [(999, false), (1_000, true), (30_000, true), (30_001, false)] {
            c.probe_first = Some(Millis(first));
            assert_eq!(
                fields(&c).is_empty(),
                ok,
                "probe_first {first}: {:?}",
                fields(&c)
            );
        }
        // Under a longer interval the stretch holds at least one reading.
        c.interval = Millis(5_000);
        c.timeout = Millis(300);
        c.stale_after = Millis(10_000);
        c.probe_first = Some(Millis(2_000));
        assert_eq!(fields(&c), vec!["slo.probe_first".to_string()]);
        // Unset, it fits itself: a config valid before the field existed stays valid.
        c.probe_first = None;
        assert!(fields(&c).is_empty(), "{:?}", fields(&c));
        assert_eq!(c.probe_first(), Millis(5_000));
        let quick = SloConfig {
            interval: Millis(500),
            timeout: Millis(300),
            probe_after: Millis(1_000),
            ..SloConfig::default()
        };
        assert!(fields(&quick).is_empty(), "{:?}", fields(&quick));
        assert_eq!(quick.probe_first(), Millis(1_000));
        // From YAML: set, it is taken as written and checked; unset, it fits itself.
        let yaml = |t: &str| crate::Config::from_yaml(t).map(|c| c.slo.probe_first());
        assert_eq!(yaml("slo:\n  probe_first: 3s\n"), Ok(Millis(3_000)));
        assert_eq!(
            yaml("slo:\n  interval: 5s\n  stale_after: 10s\n"),
            Ok(Millis(5_000))
        );
        let bad = crate::Config::from_yaml("slo:\n  probe_first: 500ms\n")
            .err()
            .unwrap_or_default();
        assert!(
            bad.iter()
                .any(|e| e.field == "slo.probe_first" && e.reason.contains("500ms")),
            "{bad:?}"
        );
        // Probes off: the first wait is not used.
        c.probe_first = Some(Millis(2_000));
        c.probe_after = Millis(0);
        assert!(fields(&c).is_empty(), "{:?}", fields(&c));
    }

    proptest::proptest! {
        #[test]
        fn latency_parsing_never_panics(t in "\\PC{0,30}") {
            let _ = Latency::parse(&t);
        }
    }
}
