//! The load generator as its own process, placed in the scenario's online group next to the server:
//! the client is part of the latency path, so it gets the same protection as the service it measures
//! (left in the bench's own cgroup it would queue behind every offline task at the top level).

use super::loadgen::{self, Arrivals, LoadResult, Schedule, Window};
use crate::cli::WorkerArgs;
use hdrhistogram::serialization::{Deserializer, Serializer, V2Serializer};
use serde::{Deserialize, Serialize};

pub use crate::mono::{instant_of, mono_ns};

#[derive(Serialize, Deserialize)]
struct Output {
    start_mono_ns: u64,
    sent: u64,
    received: u64,
    lost: u64,
    /// V2-serialised histograms, hex.
    windows: Vec<String>,
}

pub fn segments_arg(s: &Schedule) -> String {
    s.segments
        .iter()
        .map(|(t, r)| format!("{t}:{r}"))
        .collect::<Vec<_>>()
        .join(",")
}

pub fn windows_arg(w: &[(u64, u64)]) -> String {
    w.iter()
        .map(|(a, b)| format!("{a}-{b}"))
        .collect::<Vec<_>>()
        .join(",")
}

fn parse_pairs<A: std::str::FromStr, B: std::str::FromStr>(
    s: &str,
    sep: char,
    what: &str,
) -> Result<Vec<(A, B)>, String> {
    s.split(',')
        .filter(|x| !x.trim().is_empty())
        .map(|x| {
            let (a, b) = x
                .split_once(sep)
                .ok_or_else(|| format!("bad {what} '{x}'"))?;
            Ok((
                a.trim().parse().map_err(|_| format!("bad {what} '{x}'"))?,
                b.trim().parse().map_err(|_| format!("bad {what} '{x}'"))?,
            ))
        })
        .collect()
}

/// Hex of a serialised histogram.
pub fn to_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Bytes from hex; a character that is not a hex digit (or an odd length) is an error naming where.
pub fn from_hex(h: &str) -> Result<Vec<u8>, String> {
    if !h.len().is_multiple_of(2) {
        return Err(format!("odd-length hex ({} digits)", h.len()));
    }
    h.as_bytes()
        .chunks(2)
        .enumerate()
        .map(|(i, pair)| {
            std::str::from_utf8(pair)
                .ok()
                .and_then(|p| u8::from_str_radix(p, 16).ok())
                .ok_or_else(|| format!("bad hex digit at offset {}", 2 * i))
        })
        .collect()
}

/// Decodes one window's histogram (V2 serialisation, hex).
pub fn decode_hist(h: &str) -> Result<hdrhistogram::Histogram<u64>, String> {
    let bytes = from_hex(h)?;
    Deserializer::new()
        .deserialize(&mut bytes.as_slice())
        .map_err(|e| format!("{e:?}"))
}

/// `tidal worker loadgen`: runs the schedule and writes the result file.
pub fn worker_main(a: &WorkerArgs) -> Result<(), String> {
    if !(a.duration.is_finite() && a.duration > 0.0 && a.duration <= 2.0 * crate::cli::MAX_SECONDS)
    {
        return Err(format!(
            "--duration {}: must be > 0 and at most 7200 s",
            a.duration
        ));
    }
    let segments: Vec<(f64, f64)> = parse_pairs(&a.segments, ':', "segment")?;
    for (t, r) in &segments {
        if !(t.is_finite() && *t >= 0.0 && r.is_finite() && *r >= 0.0 && *r <= crate::cli::MAX_RATE)
        {
            return Err(format!(
                "bad segment {t}:{r}: times ≥ 0, rates between 0 and {}",
                crate::cli::MAX_RATE
            ));
        }
    }
    let sched = Schedule {
        arrivals: if a.constant {
            Arrivals::Constant
        } else {
            Arrivals::Poisson
        },
        segments,
        duration_s: a.duration,
        seed: a.seed,
    };
    let windows: Vec<(u64, u64)> = parse_pairs(&a.windows, '-', "window")?;
    let out = a.out.clone().ok_or("--out is required")?;
    let ready = a.ready_file.clone();
    let mut start_mono = 0;
    let r = loadgen::run(a.port, a.connections, &sched, &windows, |_| {
        start_mono = mono_ns();
        if let Some(f) = &ready {
            let _ = std::fs::write(f, start_mono.to_string());
        }
    })
    .map_err(|e| format!("port {}: {e}", a.port))?;
    let mut hex = Vec::new();
    for w in &r.windows {
        let mut buf = Vec::new();
        V2Serializer::new()
            .serialize(&w.hist, &mut buf)
            .map_err(|e| format!("histogram: {e:?}"))?;
        hex.push(to_hex(&buf));
    }
    let o = Output {
        start_mono_ns: start_mono,
        sent: r.sent,
        received: r.received,
        lost: r.lost,
        windows: hex,
    };
    let text = serde_json::to_string(&o).map_err(|e| e.to_string())?;
    std::fs::write(&out, text).map_err(|e| format!("{out}: {e}"))
}

/// Reads a client's result file back into a [`LoadResult`].
pub fn read_result(path: &std::path::Path) -> Result<LoadResult, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let o: Output = serde_json::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut windows = Vec::new();
    for (i, h) in o.windows.iter().enumerate() {
        let hist =
            decode_hist(h).map_err(|e| format!("histogram {i} in {}: {e}", path.display()))?;
        windows.push(Window { hist });
    }
    Ok(LoadResult {
        windows,
        sent: o.sent,
        received: o.received,
        lost: o.lost,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hist::{new_hist, record};

    #[test]
    fn arguments_and_results_round_trip() {
        let s = Schedule {
            arrivals: Arrivals::Poisson,
            segments: vec![(0.0, 100.0), (3.5, 600.5)],
            duration_s: 6.0,
            seed: 3,
        };
        let segs: Vec<(f64, f64)> = parse_pairs(&segments_arg(&s), ':', "segment").unwrap();
        assert_eq!(segs, s.segments);
        let w = vec![(1u64, 2u64), (3, u64::MAX)];
        assert_eq!(
            parse_pairs::<u64, u64>(&windows_arg(&w), '-', "window").unwrap(),
            w
        );
        assert!(parse_pairs::<u64, u64>("x", '-', "window").is_err());

        let mut h = new_hist();
        for v in [1_000u64, 2_000_000, 50_000_000] {
            record(&mut h, v);
        }
        let mut buf = Vec::new();
        V2Serializer::new().serialize(&h, &mut buf).unwrap();
        let o = Output {
            start_mono_ns: 5,
            sent: 3,
            received: 3,
            lost: 0,
            windows: vec![to_hex(&buf)],
        };
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("r.json");
        std::fs::write(&p, serde_json::to_string(&o).unwrap()).unwrap();
        let r = read_result(&p).unwrap();
        assert_eq!(r.windows[0].hist.len(), 3);
        assert_eq!(r.windows[0].hist.max(), h.max());
        // A bad digit is an error, not a zero byte.
        let mut bad = to_hex(&buf);
        bad.replace_range(4..5, "g");
        assert!(decode_hist(&bad).unwrap_err().contains("offset 4"));
    }

    proptest::proptest! {
        #[test]
        fn histogram_codec_never_panics(h in "[0-9a-fg]{0,200}") {
            let _ = decode_hist(&h);
        }

        #[test]
        fn histogram_codec_round_trips(vals in proptest::collection::vec(1_000u64..60_000_000_000, 0..50)) {
            let mut h = new_hist();
            for v in &vals {
                record(&mut h, *v);
            }
            let mut buf = Vec::new();
            V2Serializer::new().serialize(&h, &mut buf).unwrap();
            let back = decode_hist(&to_hex(&buf)).unwrap();
            proptest::prop_assert_eq!(back.len(), h.len());
        }
    }
}
