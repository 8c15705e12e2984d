//! Which QoS level a pod runs at. First match wins:
//!
//! 1. tidal's own annotation [`ANNOTATION`] (a level name or number);
//! 2. the peers' markings, so tidal is a drop-in: rubik's `volcano.sh/preemptable: "true"`,
//!    Koordinator's label `koordinator.sh/qosClass`, Katalyst's `katalyst.kubewharf.io/qos_level`,
//!    Volcano's `volcano.sh/qos-level`;
//! 3. PriorityClass value bands (configurable);
//! 4. the pod's QoS class: BestEffort → offline (configurable), others → online; a node daemon
//!    (a DaemonSet's pod, a static pod's mirror) with no marking stays online.
//!
//! System pods are never offline. A value that cannot be read gives the default level (online) and is
//! reported (an Event on the pod, a metric). Pure: pod facts in, level and why out.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use tidal_model::QosLevel;
pub use tidal_policy::kubernetes::{Band, ClassifyConfig};

/// tidal's own annotation.
pub const ANNOTATION: &str = "tidal.io/qos-level";
pub const RUBIK: &str = "volcano.sh/preemptable";
pub const KOORDINATOR: &str = "koordinator.sh/qosClass";
pub const KATALYST: &str = "katalyst.kubewharf.io/qos_level";
pub const VOLCANO: &str = "volcano.sh/qos-level";

/// What classification needs of a pod.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PodFacts {
    pub namespace: String,
    pub name: String,
    pub annotations: BTreeMap<String, String>,
    pub labels: BTreeMap<String, String>,
    pub priority: Option<i32>,
    pub priority_class: Option<String>,
    /// `status.qosClass`: Guaranteed, Burstable or BestEffort.
    pub qos_class: Option<String>,
    /// A node daemon: its controller is a DaemonSet, or it is a static pod's mirror. Such pods
    /// run the node itself (networking, storage, logs) and come straight back when evicted.
    pub node_daemon: bool,
}

/// The marking a level came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Source {
    Tidal,
    Rubik,
    Koordinator,
    Katalyst,
    Volcano,
    PriorityClass,
    QosClass,
    /// A system pod, kept online whatever it was marked.
    System,
    /// A node daemon with no marking: online, whatever its QoS class.
    NodeDaemon,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Classification {
    pub level: QosLevel,
    pub source: Source,
    /// The marking that could not be read (reported as an Event and counted).
    pub invalid: Option<String>,
}

fn get<'a>(p: &'a PodFacts, key: &str) -> Option<&'a str> {
    p.annotations
        .get(key)
        .or_else(|| p.labels.get(key))
        .map(|s| s.trim())
}

fn found(level: QosLevel, source: Source) -> Option<Classification> {
    Some(Classification {
        level,
        source,
        invalid: None,
    })
}

fn invalid(source: Source, key: &str, value: &str, level: QosLevel) -> Option<Classification> {
    Some(Classification {
        level,
        source,
        invalid: Some(format!(
            "{key}={value:?} is not a value tidal knows: the pod runs at {level}"
        )),
    })
}

/// The markings, in order.
fn marked(p: &PodFacts) -> Option<Classification> {
    if let Some(v) = get(p, ANNOTATION) {
        return match v.parse::<QosLevel>() {
            Ok(l) => found(l, Source::Tidal),
            Err(_) => invalid(Source::Tidal, ANNOTATION, v, QosLevel::Online),
        };
    }
    if let Some(v) = get(p, RUBIK) {
        match v {
            "true" => return found(QosLevel::Offline, Source::Rubik),
            "false" => {}
            other => return invalid(Source::Rubik, RUBIK, other, QosLevel::Online),
        }
    }
    if let Some(v) = p.labels.get(KOORDINATOR).map(|s| s.trim()) {
        return match v {
            "SYSTEM" | "LSE" => found(QosLevel::OnlineCritical, Source::Koordinator),
            "LSR" => found(QosLevel::OnlineHigh, Source::Koordinator),
            "LS" => found(QosLevel::Online, Source::Koordinator),
            "BE" => found(QosLevel::Offline, Source::Koordinator),
            other => invalid(Source::Koordinator, KOORDINATOR, other, QosLevel::Online),
        };
    }
    if let Some(v) = get(p, KATALYST) {
        return match v {
            "system_cores" | "dedicated_cores" => found(QosLevel::OnlineCritical, Source::Katalyst),
            "shared_cores" => found(QosLevel::Online, Source::Katalyst),
            "reclaimed_cores" => found(QosLevel::Offline, Source::Katalyst),
            other => invalid(Source::Katalyst, KATALYST, other, QosLevel::Online),
        };
    }
    if let Some(v) = get(p, VOLCANO) {
        // Volcano's own values 2/2/1/-1; Volcano reads any other value as 0 (online).
        return match v {
            "LC" | "HLS" => found(QosLevel::OnlineCritical, Source::Volcano),
            "LS" => found(QosLevel::OnlineHigh, Source::Volcano),
            "BE" => found(QosLevel::Offline, Source::Volcano),
            other => invalid(Source::Volcano, VOLCANO, other, QosLevel::Online),
        };
    }
    None
}

/// The pod's level and where it came from.
pub fn classify(p: &PodFacts, cfg: &ClassifyConfig) -> Classification {
    let c = marked(p)
        .or_else(|| {
            let v = p.priority?;
            cfg.priority_bands
                .iter()
                .find(|b| (b.min..=b.max).contains(&v))
                .and_then(|b| found(b.level, Source::PriorityClass))
        })
        .unwrap_or(match p.qos_class.as_deref() {
            // A BestEffort CNI or log agent frozen as batch work would take the node down with it.
            Some("BestEffort") if p.node_daemon && !cfg.besteffort.is_online() => Classification {
                level: QosLevel::Online,
                source: Source::NodeDaemon,
                invalid: None,
            },
            Some("BestEffort") => Classification {
                level: cfg.besteffort,
                source: Source::QosClass,
                invalid: None,
            },
            _ => Classification {
                level: QosLevel::Online,
                source: Source::QosClass,
                invalid: None,
            },
        });
    let system = cfg.system_namespaces.contains(&p.namespace)
        || p.priority_class
            .as_deref()
            .is_some_and(|c| c == "system-node-critical" || c == "system-cluster-critical");
    if system && !c.level.is_online() {
        return Classification {
            level: QosLevel::Online,
            source: Source::System,
            invalid: c.invalid,
        };
    }
    c
}

/// A running pod's level once it has one: it does not move from offline to online unless allowed.
pub fn settle(previous: Option<QosLevel>, now: QosLevel, cfg: &ClassifyConfig) -> QosLevel {
    match previous {
        Some(p) if !p.is_online() && now.is_online() && !cfg.allow_promotion => p,
        _ => now,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pod(ann: &[(&str, &str)], labels: &[(&str, &str)], qos: &str) -> PodFacts {
        PodFacts {
            namespace: "default".into(),
            name: "p".into(),
            annotations: ann
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            priority: None,
            priority_class: None,
            qos_class: Some(qos.into()),
            node_daemon: false,
        }
    }

    #[test]
    fn a_node_daemon_with_no_marking_stays_online_and_a_marked_one_is_as_marked() {
        let cfg = ClassifyConfig::default();
        let daemon = |ann: &[(&str, &str)]| PodFacts {
            namespace: "calico-system".into(),
            node_daemon: true,
            ..pod(ann, &[], "BestEffort")
        };
        let c = classify(&daemon(&[]), &cfg);
        assert_eq!((c.level, c.source), (QosLevel::Online, Source::NodeDaemon));
        let c = classify(&daemon(&[(ANNOTATION, "offline")]), &cfg);
        assert_eq!((c.level, c.source), (QosLevel::Offline, Source::Tidal));
        // Not a daemon: BestEffort is offline by default.
        let c = classify(&pod(&[], &[], "BestEffort"), &cfg);
        assert_eq!((c.level, c.source), (QosLevel::Offline, Source::QosClass));
    }

    /// Every annotation and label, valid and not: (annotations, labels, qos class, level, source,
    /// invalid?).
    #[test]
    fn classification_table() {
        use QosLevel::*;
        let cfg = ClassifyConfig::default();
        type Pairs<'a> = &'a [(&'a str, &'a str)];
        let table: Vec<(Pairs, Pairs, &str, QosLevel, Source, bool)> = vec![
            (
                &[(ANNOTATION, "offline-low")],
                &[],
                "Guaranteed",
                OfflineLow,
                Source::Tidal,
                false,
            ),
            (
                &[(ANNOTATION, "-1")],
                &[],
                "Guaranteed",
                Offline,
                Source::Tidal,
                false,
            ),
            (
                &[(ANNOTATION, "2")],
                &[],
                "BestEffort",
                OnlineCritical,
                Source::Tidal,
                false,
            ),
            (
                &[(ANNOTATION, "batch")],
                &[],
                "BestEffort",
                Online,
                Source::Tidal,
                true,
            ),
            (
                &[(RUBIK, "true")],
                &[],
                "Guaranteed",
                Offline,
                Source::Rubik,
                false,
            ),
            (
                &[],
                &[(RUBIK, "true")],
                "Guaranteed",
                Offline,
                Source::Rubik,
                false,
            ),
            (
                &[(RUBIK, "yes")],
                &[],
                "Burstable",
                Online,
                Source::Rubik,
                true,
            ),
            (
                &[],
                &[(KOORDINATOR, "SYSTEM")],
                "Burstable",
                OnlineCritical,
                Source::Koordinator,
                false,
            ),
            (
                &[],
                &[(KOORDINATOR, "LSE")],
                "Burstable",
                OnlineCritical,
                Source::Koordinator,
                false,
            ),
            (
                &[],
                &[(KOORDINATOR, "LSR")],
                "Burstable",
                OnlineHigh,
                Source::Koordinator,
                false,
            ),
            (
                &[],
                &[(KOORDINATOR, "LS")],
                "Burstable",
                Online,
                Source::Koordinator,
                false,
            ),
            (
                &[],
                &[(KOORDINATOR, "BE")],
                "Burstable",
                Offline,
                Source::Koordinator,
                false,
            ),
            (
                &[],
                &[(KOORDINATOR, "XX")],
                "BestEffort",
                Online,
                Source::Koordinator,
                true,
            ),
            (
                &[(KATALYST, "system_cores")],
                &[],
                "Burstable",
                OnlineCritical,
                Source::Katalyst,
                false,
            ),
            (
                &[(KATALYST, "dedicated_cores")],
                &[],
                "Burstable",
                OnlineCritical,
                Source::Katalyst,
                false,
            ),
            (
                &[(KATALYST, "shared_cores")],
                &[],
                "Burstable",
                Online,
                Source::Katalyst,
                false,
            ),
            (
                &[(KATALYST, "reclaimed_cores")],
                &[],
                "Burstable",
                Offline,
                Source::Katalyst,
                false,
            ),
            (
                &[(KATALYST, "other_cores")],
                &[],
                "Burstable",
                Online,
                Source::Katalyst,
                true,
            ),
            (
                &[(VOLCANO, "LC")],
                &[],
                "Burstable",
                OnlineCritical,
                Source::Volcano,
                false,
            ),
            (
                &[(VOLCANO, "HLS")],
                &[],
                "Burstable",
                OnlineCritical,
                Source::Volcano,
                false,
            ),
            (
                &[(VOLCANO, "LS")],
                &[],
                "Burstable",
                OnlineHigh,
                Source::Volcano,
                false,
            ),
            (
                &[(VOLCANO, "BE")],
                &[],
                "Burstable",
                Offline,
                Source::Volcano,
                false,
            ),
            (
                &[(VOLCANO, "ZZ")],
                &[],
                "BestEffort",
                Online,
                Source::Volcano,
                true,
            ),
            (&[], &[], "BestEffort", Offline, Source::QosClass, false),
            (&[], &[], "Burstable", Online, Source::QosClass, false),
            (&[], &[], "Guaranteed", Online, Source::QosClass, false),
            // First match wins: tidal's annotation over the peers'.
            (
                &[(ANNOTATION, "online"), (RUBIK, "true")],
                &[],
                "BestEffort",
                Online,
                Source::Tidal,
                false,
            ),
            (
                &[(RUBIK, "true"), (VOLCANO, "LC")],
                &[],
                "Burstable",
                Offline,
                Source::Rubik,
                false,
            ),
        ];
        for (ann, labels, qos, level, source, bad) in table {
            let c = classify(&pod(ann, labels, qos), &cfg);
            assert_eq!(
                (c.level, c.source, c.invalid.is_some()),
                (level, source, bad),
                "{ann:?} {labels:?} {qos}"
            );
        }
    }

    #[test]
    fn priority_bands_and_system_pods() {
        let cfg = ClassifyConfig::default();
        let mut p = pod(&[], &[], "Burstable");
        p.priority = Some(5500);
        assert_eq!(classify(&p, &cfg).level, QosLevel::Offline);
        p.priority = Some(3100);
        assert_eq!(classify(&p, &cfg).level, QosLevel::OfflineLow);
        p.priority = Some(0);
        assert_eq!(classify(&p, &cfg).source, Source::QosClass);
        // A system pod is never offline, whatever it is marked.
        let mut s = pod(&[(RUBIK, "true")], &[], "BestEffort");
        s.namespace = "kube-system".into();
        assert_eq!(classify(&s, &cfg).level, QosLevel::Online);
        assert_eq!(classify(&s, &cfg).source, Source::System);
        let mut s = pod(&[], &[], "BestEffort");
        s.priority_class = Some("system-node-critical".into());
        assert!(classify(&s, &cfg).level.is_online());
    }

    #[test]
    fn a_running_offline_pod_stays_offline_unless_allowed() {
        let mut cfg = ClassifyConfig::default();
        assert_eq!(
            settle(Some(QosLevel::Offline), QosLevel::Online, &cfg),
            QosLevel::Offline
        );
        assert_eq!(
            settle(Some(QosLevel::Online), QosLevel::Offline, &cfg),
            QosLevel::Offline
        );
        assert_eq!(settle(None, QosLevel::Online, &cfg), QosLevel::Online);
        cfg.allow_promotion = true;
        assert_eq!(
            settle(Some(QosLevel::Offline), QosLevel::Online, &cfg),
            QosLevel::Online
        );
    }
}
