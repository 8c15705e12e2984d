//! What tidal reads of a Pod object: the facts classification needs, its QoS class, containers,
//! liveness probes, its pod-level CPU limit as the kubelet computes it, and whether it is ending.
//! Pure: a `Pod` in, plain data out; quantities are parsed here with their errors named.

use crate::classify::PodFacts;
use k8s_openapi::api::core::v1::{Container, ContainerStatus, Pod, PodSpec, PodStatus};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use tidal_model::QosClass;

/// A pod as tidal sees it, before its cgroup is resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodView {
    pub facts: PodFacts,
    pub uid: String,
    pub qos_class: Option<QosClass>,
    /// `containerd://<id>` and the like, from the container statuses.
    pub container_ids: Vec<String>,
    pub liveness_probe: bool,
    pub cpu_limit_milli: Option<u64>,
    pub terminating: bool,
    /// Succeeded or Failed: nothing runs.
    pub finished: bool,
    /// `status.podIP`.
    pub ip: Option<String>,
    /// The sum of the containers' memory requests (None: none declares one).
    pub memory_request: Option<u64>,
    /// The TCP ports its containers declare: (name, number).
    pub ports: Vec<(Option<String>, i32)>,
    /// `spec.hostNetwork`: its IP is the node's.
    pub host_network: bool,
}

/// Milli-CPUs of a CPU quantity ("500m", "2", "1.5", "100u"). None if it is not one.
pub fn cpu_milli(q: &str) -> Option<u64> {
    let q = q.trim();
    let (num, scale) = if let Some(n) = q.strip_suffix('m') {
        (n, 1.0)
    } else if let Some(n) = q.strip_suffix('u') {
        (n, 0.001)
    } else if let Some(n) = q.strip_suffix('n') {
        (n, 0.000_001)
    } else {
        (q, 1000.0)
    };
    let v: f64 = num.parse().ok()?;
    let m = v * scale;
    // A CPU limit is at most a few thousand CPUs; anything else is not a CPU quantity.
    (m.is_finite() && (0.0..=1e10).contains(&m)).then(|| m.ceil() as u64)
}

/// Bytes of a memory quantity ("16Gi", "16000000Ki", "1e9", "512M"). None if it is not one.
pub fn bytes(q: &str) -> Option<u64> {
    let q = q.trim();
    const SUFFIXES: [(&str, f64); 12] = [
        ("Ki", 1024.0),
        ("Mi", 1048576.0),
        ("Gi", 1073741824.0),
        ("Ti", 1099511627776.0),
        ("Pi", 1125899906842624.0),
        ("Ei", 1152921504606846976.0),
        ("k", 1e3),
        ("M", 1e6),
        ("G", 1e9),
        ("T", 1e12),
        ("P", 1e15),
        ("E", 1e18),
    ];
    let (num, mult) = SUFFIXES
        .iter()
        .find_map(|(s, m)| q.strip_suffix(s).map(|n| (n, *m)))
        .unwrap_or((q, 1.0));
    let v: f64 = num.parse().ok()?;
    let b = v * mult;
    (b.is_finite() && (0.0..1.8e19).contains(&b)).then(|| b.round() as u64)
}

fn limit_milli(c: &Container) -> Option<u64> {
    c.resources
        .as_ref()?
        .limits
        .as_ref()?
        .get("cpu")
        .and_then(|q: &Quantity| cpu_milli(&q.0))
}

/// The statuses of a pod's containers, init containers included.
fn statuses(status: Option<&PodStatus>) -> impl Iterator<Item = &ContainerStatus> {
    status.into_iter().flat_map(|s| {
        s.container_statuses
            .iter()
            .flatten()
            .chain(s.init_container_statuses.iter().flatten())
    })
}

/// A container the kubelet restarts when a probe fails, on an app container or a sidecar (an init
/// container that keeps running, `restartPolicy: Always`): a liveness probe, or a startup probe
/// until the container has started (the kubelet stops probing it then, and runs it again after a
/// restart). A frozen container fails them; a readiness probe only takes the pod out of its
/// Service's endpoints.
fn has_kill_probe(spec: &PodSpec, status: Option<&PodStatus>) -> bool {
    let started = |name: &str| statuses(status).any(|c| c.name == name && c.started == Some(true));
    let probed = |c: &Container| {
        c.liveness_probe.is_some() || (c.startup_probe.is_some() && !started(&c.name))
    };
    spec.containers.iter().any(probed)
        || spec
            .init_containers
            .iter()
            .flatten()
            .filter(|c| c.restart_policy.as_deref() == Some("Always"))
            .any(probed)
}

/// The pod-level CPU limit the kubelet sets: the containers' limits summed when every container
/// has one (at least the largest init container's), plus the pod overhead; else unlimited.
fn pod_cpu_limit(pod: &Pod) -> Option<u64> {
    let spec = pod.spec.as_ref()?;
    let mut sum: u64 = 0;
    for c in &spec.containers {
        sum = sum.saturating_add(limit_milli(c)?);
    }
    let mut max_init = 0;
    for c in spec.init_containers.iter().flatten() {
        max_init = max_init.max(limit_milli(c)?);
    }
    let overhead = spec
        .overhead
        .as_ref()
        .and_then(|o| o.get("cpu"))
        .and_then(|q| cpu_milli(&q.0))
        .unwrap_or(0);
    Some(sum.max(max_init).saturating_add(overhead))
}

/// Reads a Pod object.
/// A static pod's mirror carries this annotation (the kubelet's own pods).
const MIRROR: &str = "kubernetes.io/config.mirror";

/// Whether the pod is a node daemon: controlled by a DaemonSet, or a static pod's mirror.
fn node_daemon(pod: &Pod) -> bool {
    let md = &pod.metadata;
    md.owner_references
        .iter()
        .flatten()
        .any(|o| o.kind == "DaemonSet" && o.controller == Some(true))
        || md
            .annotations
            .as_ref()
            .is_some_and(|a| a.contains_key(MIRROR))
}

pub fn view(pod: &Pod) -> PodView {
    let md = &pod.metadata;
    let spec = pod.spec.as_ref();
    let status = pod.status.as_ref();
    let phase = status.and_then(|s| s.phase.as_deref());
    PodView {
        facts: PodFacts {
            namespace: md.namespace.clone().unwrap_or_default(),
            name: md.name.clone().unwrap_or_default(),
            annotations: md.annotations.clone().unwrap_or_default(),
            labels: md.labels.clone().unwrap_or_default(),
            priority: spec.and_then(|s| s.priority),
            priority_class: spec.and_then(|s| s.priority_class_name.clone()),
            qos_class: status.and_then(|s| s.qos_class.clone()),
            node_daemon: node_daemon(pod),
        },
        uid: md.uid.clone().unwrap_or_default(),
        qos_class: status
            .and_then(|s| s.qos_class.as_deref())
            .and_then(QosClass::parse),
        container_ids: statuses(status)
            .filter_map(|c| c.container_id.clone())
            .filter(|id| !id.is_empty())
            .collect(),
        liveness_probe: spec.is_some_and(|s| has_kill_probe(s, status)),
        cpu_limit_milli: pod_cpu_limit(pod),
        terminating: md.deletion_timestamp.is_some(),
        finished: matches!(phase, Some("Succeeded") | Some("Failed")),
        ip: status.and_then(|s| s.pod_ip.clone()),
        memory_request: spec.and_then(|s| {
            let reqs: Vec<u64> = s
                .containers
                .iter()
                .filter_map(|c| c.resources.as_ref()?.requests.as_ref()?.get("memory"))
                .filter_map(|q| bytes(&q.0))
                .collect();
            (!reqs.is_empty()).then(|| reqs.iter().fold(0u64, |a, b| a.saturating_add(*b)))
        }),
        // The app containers' ports and native sidecars' (init containers that run for the
        // pod's life); a run-once init container's port is not the pod's service.
        ports: spec
            .into_iter()
            .flat_map(|s| {
                let sidecars = s
                    .init_containers
                    .iter()
                    .flatten()
                    .filter(|c| c.restart_policy.as_deref() == Some("Always"));
                s.containers.iter().chain(sidecars)
            })
            .flat_map(|c| c.ports.iter().flatten())
            .filter(|p| p.protocol.as_deref().is_none_or(|p| p == "TCP"))
            .map(|p| (p.name.clone(), p.container_port))
            .collect(),
        host_network: spec.and_then(|s| s.host_network).unwrap_or(false),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantities() {
        assert_eq!(cpu_milli("500m"), Some(500));
        assert_eq!(cpu_milli("2"), Some(2000));
        assert_eq!(cpu_milli("1.5"), Some(1500));
        assert_eq!(cpu_milli("x"), None);
        assert_eq!(cpu_milli("-1"), None);
        assert_eq!(cpu_milli("1e30"), None);
        assert_eq!(bytes("16Gi"), Some(16 << 30));
        assert_eq!(bytes("16302244Ki"), Some(16302244 * 1024));
        assert_eq!(bytes("1e9"), Some(1_000_000_000));
        assert_eq!(bytes("512M"), Some(512_000_000));
        assert_eq!(bytes("lots"), None);
        assert_eq!(bytes("1e40"), None);
    }

    #[test]
    fn a_recorded_pod_reads_as_the_kubelet_sees_it() {
        let pod: Pod =
            serde_json::from_str(include_str!("../tests/data/pod-besteffort.json")).unwrap();
        let v = view(&pod);
        assert_eq!(v.facts.namespace, "batch");
        assert_eq!(v.qos_class, Some(QosClass::BestEffort));
        assert_eq!(v.container_ids.len(), 1);
        assert!(v.container_ids[0].starts_with("containerd://"));
        assert!(!v.liveness_probe);
        assert_eq!(v.cpu_limit_milli, None);
        let pod: Pod =
            serde_json::from_str(include_str!("../tests/data/pod-burstable-probe.json")).unwrap();
        let v = view(&pod);
        assert!(v.liveness_probe);
        // 500m + 1500m, with a 250m init container below the sum.
        assert_eq!(v.cpu_limit_milli, Some(2000));
    }

    #[test]
    fn startup_probes_and_sidecar_probes_make_a_pod_unfreezable_readiness_does_not() {
        let pod = |mut spec: serde_json::Value| -> Pod {
            let started = spec
                .as_object_mut()
                .and_then(|o| o.remove("__started"))
                .and_then(|v| v.as_str().map(String::from));
            let status = match started {
                Some(n) => serde_json::json!({"containerStatuses": [{"name": n, "started": true,
                    "ready": true, "restartCount": 0, "image": "i", "imageID": ""}]}),
                None => serde_json::json!({}),
            };
            serde_json::from_value(serde_json::json!({
                "metadata": {"name": "p", "namespace": "n", "uid": "u"},
                "spec": spec,
                "status": status,
            }))
            .unwrap()
        };
        let probe = serde_json::json!({"exec": {"command": ["true"]}});
        let cases = [
            (serde_json::json!({"containers": [{"name": "a"}]}), false),
            (
                serde_json::json!({"containers": [{"name": "a", "readinessProbe": probe}]}),
                false,
            ),
            (
                serde_json::json!({"containers": [{"name": "a", "startupProbe": probe}]}),
                true,
            ),
            // Started: the kubelet no longer runs its startup probe.
            (
                serde_json::json!({"containers": [{"name": "a", "startupProbe": probe}],
                    "__started": "a"}),
                false,
            ),
            (
                serde_json::json!({"containers": [{"name": "a", "livenessProbe": probe}]}),
                true,
            ),
            // A sidecar (an init container that keeps running) is probed like an app container.
            (
                serde_json::json!({"containers": [{"name": "a"}], "initContainers": [
                    {"name": "s", "restartPolicy": "Always", "livenessProbe": probe}]}),
                true,
            ),
            // A plain init container cannot carry a liveness probe that matters once it is done.
            (
                serde_json::json!({"containers": [{"name": "a"}], "initContainers": [
                    {"name": "i", "startupProbe": probe}]}),
                false,
            ),
        ];
        for (spec, want) in cases {
            assert_eq!(view(&pod(spec.clone())).liveness_probe, want, "{spec}");
        }
    }

    #[test]
    fn the_ports_an_objective_may_name_are_the_app_containers_and_sidecars_tcp_ones() {
        let pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": "p", "namespace": "n", "uid": "u"},
            "spec": {
                "containers": [{"name": "a", "ports": [
                    {"name": "http", "containerPort": 8080},
                    {"name": "dns", "containerPort": 53, "protocol": "UDP"}]}],
                "initContainers": [
                    {"name": "s", "restartPolicy": "Always", "ports": [
                        {"name": "metrics", "containerPort": 9090}]},
                    {"name": "once", "ports": [{"name": "setup", "containerPort": 7000}]}]
            }
        }))
        .unwrap();
        assert_eq!(
            view(&pod).ports,
            vec![
                (Some("http".to_string()), 8080),
                (Some("metrics".to_string()), 9090)
            ]
        );
    }

    #[test]
    fn a_daemon_set_s_pod_and_a_static_pod_s_mirror_are_node_daemons() {
        let pod = |md: serde_json::Value| -> Pod {
            serde_json::from_value(serde_json::json!({"metadata": md, "spec": {"containers": []}}))
                .unwrap()
        };
        let owned = |kind: &str, controller: bool| {
            pod(
                serde_json::json!({"name": "p", "namespace": "n", "uid": "u",
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": kind, "name": "x",
                    "uid": "o", "controller": controller}]}),
            )
        };
        assert!(view(&owned("DaemonSet", true)).facts.node_daemon);
        assert!(!view(&owned("DaemonSet", false)).facts.node_daemon);
        assert!(!view(&owned("ReplicaSet", true)).facts.node_daemon);
        let mirror = pod(
            serde_json::json!({"name": "p", "namespace": "n", "uid": "u",
            "annotations": {"kubernetes.io/config.mirror": "abc"}}),
        );
        assert!(view(&mirror).facts.node_daemon);
    }

    proptest::proptest! {
        #[test]
        fn quantity_parsers_never_panic(t in "\\PC{0,40}") {
            let _ = cpu_milli(&t);
            let _ = bytes(&t);
        }
    }
}
