//! A pod's latency objective, from its annotations. The agent runs as root on the node, so a pod's
//! word is not trusted: the objective may only name a port the pod's own spec declares (by number
//! or name) and a plain path; the agent fetches it on the pod's own IP, with no redirects, no proxy
//! and with time and size caps (see the agent's SLO watcher). A hostNetwork pod, whose IP is the
//! node's, may declare none. Pure: annotations and ports in.

use std::collections::BTreeMap;
use tidal_model::PodSlo;
use tidal_policy::config::slo::{check_objective, Latency, Objective};

pub const PORT: &str = "tidal.io/slo-port";
pub const PATH: &str = "tidal.io/slo-path";
pub const METRIC: &str = "tidal.io/slo-metric";
pub const LABELS: &str = "tidal.io/slo-labels";
pub const QUANTILE: &str = "tidal.io/slo-quantile";
pub const TARGET: &str = "tidal.io/slo-target";

const KEYS: [&str; 6] = [PORT, PATH, METRIC, LABELS, QUANTILE, TARGET];

fn path_ok(p: &str) -> bool {
    p.starts_with('/')
        && p.len() <= 256
        && !p.contains("..")
        && !p.contains("//")
        && p.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"/._-~".contains(&b))
}

/// `k=v,k2=v2` (values may be quoted).
fn labels(s: &str) -> Result<BTreeMap<String, String>, String> {
    let mut out = BTreeMap::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (k, v) = part
            .split_once('=')
            .ok_or_else(|| format!("{LABELS}: '{part}' is not name=value"))?;
        out.insert(k.trim().to_string(), v.trim().trim_matches('"').to_string());
    }
    if out.len() > 16 {
        return Err(format!("{LABELS}: at most 16 matchers"));
    }
    Ok(out)
}

/// The objective the annotations declare: None if they declare none, an error (for an Event) if
/// they declare one tidal cannot take.
pub fn pod_slo(
    annotations: &BTreeMap<String, String>,
    ports: &[(Option<String>, i32)],
    host_network: bool,
) -> Result<Option<PodSlo>, String> {
    if !KEYS.iter().any(|k| annotations.contains_key(*k)) {
        return Ok(None);
    }
    if host_network {
        // Its IP is the node's: a declared port would be any service on the node.
        return Err(
            "a hostNetwork pod cannot declare a latency objective: its IP is the node's, so tidal would fetch a node port, not the pod's"
                .into(),
        );
    }
    let get = |k: &str| annotations.get(k).map(|v| v.trim());
    let need = |k: &str| {
        get(k).ok_or_else(|| {
            format!("{k} is missing (a latency objective needs {PORT}, {METRIC} and {TARGET})")
        })
    };
    let port_s = need(PORT)?;
    let port = ports
        .iter()
        .find(|(name, n)| name.as_deref() == Some(port_s) || n.to_string() == port_s)
        .map(|(_, n)| *n)
        .ok_or_else(|| {
            format!("{PORT}={port_s:?} is not a TCP port the pod's containers declare")
        })?;
    let port = u16::try_from(port)
        .ok()
        .filter(|p| *p > 0)
        .ok_or_else(|| format!("{PORT}: {port} is not a port"))?;
    let path = get(PATH).unwrap_or("/metrics");
    if !path_ok(path) {
        return Err(format!(
            "{PATH}={path:?}: a plain absolute path (letters, digits, / . _ - ~), no '..'"
        ));
    }
    let quantile = match get(QUANTILE) {
        Some(q) => q
            .parse::<f64>()
            .map_err(|_| format!("{QUANTILE}={q:?} is not a number"))?,
        None => 0.99,
    };
    let target = Latency::parse(need(TARGET)?).map_err(|e| format!("{TARGET}: {e}"))?;
    let o = Objective {
        workload: "pod".into(),
        url: format!("http://pod:{port}{path}"),
        metric: need(METRIC)?.to_string(),
        labels: labels(get(LABELS).unwrap_or(""))?,
        quantile,
        target,
    };
    if let Some((f, why)) = check_objective(&o).into_iter().next() {
        return Err(format!("latency objective {f}: {why}"));
    }
    Ok(Some(PodSlo {
        port,
        path: path.to_string(),
        metric: o.metric,
        labels: o.labels,
        quantile,
        target: target.0,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ann(kv: &[(&str, &str)]) -> BTreeMap<String, String> {
        kv.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn a_declared_port_and_a_plain_path_only() {
        let ports = vec![(Some("metrics".to_string()), 9090), (None, 8080)];
        let base = [
            (PORT, "metrics"),
            (METRIC, "http_request_duration_seconds"),
            (TARGET, "50ms"),
        ];
        let s = pod_slo(&ann(&base), &ports, false).unwrap().unwrap();
        assert_eq!(
            (s.port, s.path.as_str(), s.quantile, s.target),
            (9090, "/metrics", 0.99, 0.05)
        );
        let mut by_number = base.to_vec();
        by_number[0] = (PORT, "8080");
        by_number.push((LABELS, "handler=\"/api\",code=200"));
        let s = pod_slo(&ann(&by_number), &ports, false).unwrap().unwrap();
        assert_eq!(s.port, 8080);
        assert_eq!(s.labels.get("handler").map(String::as_str), Some("/api"));
        assert_eq!(pod_slo(&ann(&[]), &ports, false).unwrap(), None);
        assert_eq!(pod_slo(&ann(&[]), &ports, true).unwrap(), None);
        // On the host's network the pod IP is the node's: refused, with why.
        let e = pod_slo(&ann(&base), &ports, true).unwrap_err();
        assert!(e.contains("hostNetwork"), "{e}");
        for bad in [
            vec![(PORT, "22"), (METRIC, "m"), (TARGET, "5ms")],
            vec![(PORT, "metrics"), (METRIC, "m")],
            vec![
                (PORT, "metrics"),
                (METRIC, "m"),
                (TARGET, "5ms"),
                (PATH, "/../../latest/meta-data"),
            ],
            vec![
                (PORT, "metrics"),
                (METRIC, "m"),
                (TARGET, "5ms"),
                (PATH, "http://169.254.169.254/"),
            ],
            vec![
                (PORT, "metrics"),
                (METRIC, "m"),
                (TARGET, "5ms"),
                (QUANTILE, "2"),
            ],
            vec![(PORT, "metrics"), (METRIC, "bad-name"), (TARGET, "5ms")],
        ] {
            assert!(
                pod_slo(&ann(&bad), &ports, false).is_err(),
                "{bad:?} accepted"
            );
        }
    }

    proptest::proptest! {
        #[test]
        fn annotations_never_panic(port in "\\PC{0,12}", path in "\\PC{0,40}", target in "\\PC{0,10}", labels in "\\PC{0,40}") {
            let a = ann(&[(PORT, &port), (PATH, &path), (METRIC, "m"), (TARGET, &target), (LABELS, &labels)]);
            let _ = pod_slo(&a, &[(Some("p".into()), 80)], false);
        }
    }
}
