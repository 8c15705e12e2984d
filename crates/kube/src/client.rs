//! The apiserver side, on its own thread with a small tokio runtime, as kube-runtime runs a
//! controller: a watcher/reflector of this node's pods (it relists after 410 Gone, follows
//! bookmarks, and reconnects with backoff after a dropped connection), the Node's capacity, and the
//! requests the agent makes: evictions through the Eviction API, Events, and the node-status patch
//! for batch resources (server-side apply under the `tidal` field manager, never forced).
//!
//! The agent's control loop never waits on the network: it reads the reflector's store and the
//! shared state here, and hands requests over a channel.

use crate::batch::{Batch, NodeCapacity};
use crate::pods;
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Node, ObjectReference, Pod};
use k8s_openapi::api::policy::v1::Eviction;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{DeleteOptions, ObjectMeta, Preconditions};
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::reflector::{self, Store};
use kube::runtime::{watcher, WatchStreamExt};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tidal_model::PodRef;
use tokio::sync::mpsc;
use tracing::{info, warn};

/// The resource names Koordinator publishes too.
pub const BATCH_CPU: &str = "kubernetes.io/batch-cpu";
pub const BATCH_MEMORY: &str = "kubernetes.io/batch-memory";
/// The field manager of tidal's node-status patches.
pub const FIELD_MANAGER: &str = "tidal";

/// A request for the apiserver.
#[derive(Debug, Clone)]
pub enum Request {
    Evict {
        pod: PodRef,
        reason: String,
    },
    Event {
        pod: PodRef,
        warning: bool,
        reason: String,
        note: String,
    },
    Publish(Batch),
}

impl Request {
    /// What it asks, for a log line.
    pub fn name(&self) -> &'static str {
        match self {
            Request::Evict { .. } => "eviction",
            Request::Event { .. } => "event",
            Request::Publish(_) => "batch resources",
        }
    }
}

/// The longest an apiserver request (other than the watch, which has its own) may take.
const REQUEST_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// The watch's state as the agent reports it.
#[derive(Debug, Clone, Default)]
pub struct Health {
    /// The first full list arrived.
    pub synced: bool,
    /// The last watch error, while it lasts (cleared by the next event).
    pub error: Option<String>,
    pub error_since: Option<Instant>,
}

/// What the apiserver thread and the agent share.
pub struct Shared {
    pub store: Store<Pod>,
    pub health: Mutex<Health>,
    pub node: Mutex<Option<NodeCapacity>>,
    /// Counts by event name (evictions, refusals, patch conflicts, watch errors…).
    pub counters: Mutex<BTreeMap<&'static str, u64>>,
    /// The last batch patch failed for a reason other than a conflict: publish again.
    pub republish: AtomicBool,
    /// Pods whose eviction a PodDisruptionBudget refused, by uid, and when: the policy leaves
    /// them for [`REFUSED_FOR`] and tries the next candidate.
    pub refused: Mutex<BTreeMap<String, Instant>>,
}

/// How long a pod whose eviction a disruption budget refused is left out of the candidates.
pub const REFUSED_FOR: std::time::Duration = std::time::Duration::from_secs(60);

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
}

impl Shared {
    pub fn count(&self, what: &'static str) {
        *lock(&self.counters).entry(what).or_default() += 1;
    }
    pub fn health(&self) -> Health {
        lock(&self.health).clone()
    }
    pub fn node(&self) -> Option<NodeCapacity> {
        *lock(&self.node)
    }
    pub fn counters(&self) -> BTreeMap<&'static str, u64> {
        lock(&self.counters).clone()
    }
    /// Whether a budget refused the pod's eviction within [`REFUSED_FOR`].
    pub fn refused_recently(&self, uid: &str) -> bool {
        lock(&self.refused)
            .get(uid)
            .is_some_and(|at| at.elapsed() < REFUSED_FOR)
    }

    /// Records a refusal; older ones are forgotten here (once per refusal, not per pod read).
    fn refused_now(&self, uid: &str) {
        let mut r = lock(&self.refused);
        r.retain(|_, at| at.elapsed() < REFUSED_FOR);
        r.insert(uid.to_string(), Instant::now());
    }
}

/// How to reach the apiserver.
pub enum Connect {
    /// In-cluster service account, else `KUBECONFIG` / `~/.kube/config`.
    Infer,
    Config(Box<kube::Config>),
}

/// The running apiserver thread.
pub struct Handle {
    pub shared: Arc<Shared>,
    tx: mpsc::UnboundedSender<Request>,
}

impl Handle {
    /// Hands a request over; false if the thread is gone.
    pub fn send(&self, r: Request) -> bool {
        self.tx.send(r).is_ok()
    }
}

/// Node capacity and allocatable from a Node object.
pub fn capacity(node: &Node) -> Option<NodeCapacity> {
    let st = node.status.as_ref()?;
    let cap = st.capacity.as_ref()?;
    let alloc = st.allocatable.as_ref().unwrap_or(cap);
    let cpu = |m: &BTreeMap<String, k8s_openapi::apimachinery::pkg::api::resource::Quantity>| {
        m.get("cpu")
            .and_then(|q| pods::cpu_milli(&q.0))
            .map(|v| v as f64 / 1000.0)
    };
    let mem = |m: &BTreeMap<String, k8s_openapi::apimachinery::pkg::api::resource::Quantity>| {
        m.get("memory")
            .and_then(|q| pods::bytes(&q.0))
            .map(|v| v as f64)
    };
    let batch = |k: &str| alloc.get(k).and_then(|q| pods::bytes(&q.0));
    Some(NodeCapacity {
        capacity_cpus: cpu(cap)?,
        capacity_bytes: mem(cap)?,
        allocatable_cpus: cpu(alloc)?,
        allocatable_bytes: mem(alloc)?,
        published: match (batch(BATCH_CPU), batch(BATCH_MEMORY)) {
            (Some(cpu_milli), Some(memory_bytes)) => Some(Batch {
                cpu_milli,
                memory_bytes,
            }),
            _ => None,
        },
    })
}

/// The server-side-apply body that sets the batch resources in node status.
pub fn batch_patch(node: &str, b: Batch) -> serde_json::Value {
    let values = serde_json::json!({
        BATCH_CPU: b.cpu_milli.to_string(),
        BATCH_MEMORY: b.memory_bytes.to_string(),
    });
    serde_json::json!({
        "apiVersion": "v1",
        "kind": "Node",
        "metadata": { "name": node },
        "status": { "capacity": values.clone(), "allocatable": values },
    })
}

/// An event's note: the API caps it at 1 KiB (bytes, not characters), cut at a character's end.
fn event_note(note: &str) -> String {
    note.char_indices()
        .take_while(|(i, c)| i + c.len_utf8() <= 1000)
        .map(|(_, c)| c)
        .collect()
}

fn pod_reference(p: &PodRef) -> ObjectReference {
    ObjectReference {
        api_version: Some("v1".into()),
        kind: Some("Pod".into()),
        name: Some(p.name.clone()),
        namespace: Some(p.namespace.clone()),
        uid: Some(p.uid.clone()),
        ..ObjectReference::default()
    }
}

/// Starts the apiserver thread for `node`.
pub fn start(connect: Connect, node: String, events: bool) -> Result<Handle, String> {
    let (store, writer) = reflector::store::<Pod>();
    let shared = Arc::new(Shared {
        store,
        health: Mutex::new(Health::default()),
        node: Mutex::new(None),
        counters: Mutex::new(BTreeMap::new()),
        republish: AtomicBool::new(false),
        refused: Mutex::new(BTreeMap::new()),
    });
    let (tx, rx) = mpsc::unbounded_channel();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the Kubernetes client runtime: {e}"))?;
    let mut config = match connect {
        Connect::Config(c) => *c,
        Connect::Infer => rt
            .block_on(kube::Config::infer())
            .map_err(|e| format!("cannot find the apiserver (in-cluster or KUBECONFIG): {e}"))?,
    };
    // A PodDisruptionBudget's 429 must reach tidal (logged, asked again after the eviction
    // interval), not be retried inside the client; the watcher has its own backoff.
    config.default_retry = false;
    let sh = Arc::clone(&shared);
    std::thread::Builder::new()
        .name("tidal-kube".into())
        .spawn(move || rt.block_on(run(config, node, events, writer, sh, rx)))
        .map_err(|e| format!("cannot start the Kubernetes client thread: {e}"))?;
    Ok(Handle { shared, tx })
}

async fn run(
    config: kube::Config,
    node: String,
    events: bool,
    writer: reflector::store::Writer<Pod>,
    shared: Arc<Shared>,
    mut rx: mpsc::UnboundedReceiver<Request>,
) {
    let client = match kube::Client::try_from(config) {
        Ok(c) => c,
        Err(e) => {
            let mut h = lock(&shared.health);
            h.error = Some(format!("cannot build the Kubernetes client: {e}"));
            h.error_since = Some(Instant::now());
            warn!("cannot build the Kubernetes client: {e}");
            return;
        }
    };
    let pods: Api<Pod> = Api::all(client.clone());
    let wc = watcher::Config::default().fields(&format!("spec.nodeName={node}"));
    let stream = reflector::reflector(writer, watcher(pods, wc)).default_backoff();
    let mut stream = std::pin::pin!(stream);
    let recorder = Recorder::new(
        client.clone(),
        Reporter {
            controller: "tidal".into(),
            instance: Some(node.clone()),
        },
    );
    let nodes: Api<Node> = Api::all(client.clone());
    let mut node_tick = tokio::time::interval(Duration::from_secs(60));
    // One publication at a time, the latest value: a rise and a fall in flight together could
    // land in the wrong order as separate requests.
    let (publish_tx, mut publish_rx) = tokio::sync::watch::channel::<Option<Batch>>(None);
    {
        let (c, sh, node) = (client.clone(), Arc::clone(&shared), node.clone());
        tokio::spawn(async move {
            while publish_rx.changed().await.is_ok() {
                let Some(b) = *publish_rx.borrow_and_update() else {
                    continue;
                };
                if tokio::time::timeout(REQUEST_TIMEOUT, publish(c.clone(), &sh, &node, b))
                    .await
                    .is_err()
                {
                    sh.count("request_timeouts");
                    sh.republish.store(true, Ordering::Relaxed);
                    warn!(
                        "node {node}: publishing batch resources gave no answer within {} s",
                        REQUEST_TIMEOUT.as_secs()
                    );
                }
            }
        });
    }
    loop {
        tokio::select! {
            ev = stream.next() => match ev {
                Some(Ok(e)) => {
                    let mut h = lock(&shared.health);
                    if let Some(err) = h.error.take() {
                        info!("apiserver watch recovered (was: {err})");
                    }
                    h.error_since = None;
                    if matches!(e, watcher::Event::InitDone) {
                        if !h.synced {
                            info!("pods of node {node} listed");
                        }
                        h.synced = true;
                    }
                }
                Some(Err(e)) => {
                    shared.count("watch_errors");
                    let mut h = lock(&shared.health);
                    if h.error.is_none() {
                        warn!("apiserver watch failed: {e}; enforcing the last known pods until it recovers (logged once)");
                        h.error_since = Some(Instant::now());
                    }
                    h.error = Some(e.to_string());
                }
                None => break,
            },
            _ = node_tick.tick() => {
                // Bounded: a connection that hangs must not hold up the watch in this loop.
                match tokio::time::timeout(REQUEST_TIMEOUT, nodes.get(&node)).await {
                    Ok(Ok(n)) => match capacity(&n) {
                        Some(c) => *lock(&shared.node) = Some(c),
                        None => warn!("node {node} has no readable capacity"),
                    },
                    Ok(Err(kube::Error::Api(s))) if s.code == 404 => {
                        shared.count("node_read_errors");
                        warn!("node {node} does not exist: is NODE_NAME (or kubernetes.node_name) this node's name? No pods are listed for it");
                    }
                    Ok(Err(e)) => {
                        shared.count("node_read_errors");
                        warn!("cannot read node {node}: {e}");
                    }
                    Err(_) => {
                        shared.count("node_read_errors");
                        warn!("cannot read node {node}: no answer within {} s", REQUEST_TIMEOUT.as_secs());
                    }
                }
            }
            req = rx.recv() => match req {
                Some(Request::Publish(b)) => {
                    publish_tx.send_replace(Some(b));
                }
                Some(r) => {
                    let (c, sh, rec, node) = (client.clone(), Arc::clone(&shared), recorder.clone(), node.clone());
                    tokio::spawn(async move {
                        let what = r.name();
                        if tokio::time::timeout(REQUEST_TIMEOUT, serve(c, &sh, &rec, &node, events, r)).await.is_err() {
                            sh.count("request_timeouts");
                            warn!("apiserver request ({what}) gave no answer within {} s", REQUEST_TIMEOUT.as_secs());
                        }
                    });
                }
                None => break,
            },
        }
    }
}

async fn serve(
    client: kube::Client,
    shared: &Shared,
    recorder: &Recorder,
    node: &str,
    events: bool,
    r: Request,
) {
    match r {
        Request::Evict { pod, reason } => {
            let (warning, ev_reason, note) = match evict(&client, &pod).await {
                Ok(_) => {
                    shared.count("evictions");
                    info!("evicted pod {pod}: {reason}");
                    (true, "TidalEvicted", reason)
                }
                // A budget's refusal says so; a 429 without it is the apiserver asking clients
                // to slow down (priority and fairness): asked again later, the pod not set aside.
                Err(kube::Error::Api(s))
                    if s.code == 429 && s.message.to_lowercase().contains("disruption budget") =>
                {
                    // Set aside before counted: the count is what watchers wait on.
                    shared.refused_now(&pod.uid);
                    shared.count("evictions_refused");
                    warn!("eviction of pod {pod} refused by a PodDisruptionBudget ({}); the next candidate is tried, this pod again after {} s", s.message, REFUSED_FOR.as_secs());
                    (
                        true,
                        "TidalEvictionBlocked",
                        format!("{reason}; refused: {}", s.message),
                    )
                }
                Err(kube::Error::Api(s)) if s.code == 429 => {
                    shared.count("eviction_errors");
                    warn!("eviction of pod {pod} not taken now: the apiserver asks to slow down ({}); asked again after the eviction interval", s.message);
                    return;
                }
                Err(e) => {
                    shared.count("eviction_errors");
                    warn!("cannot evict pod {pod}: {e}");
                    return;
                }
            };
            if events {
                event(shared, recorder, &pod, warning, ev_reason, note).await;
            }
        }
        Request::Event {
            pod,
            warning,
            reason,
            note,
        } => {
            if events {
                event(shared, recorder, &pod, warning, &reason, note).await;
            }
        }
        Request::Publish(b) => publish(client, shared, node, b).await,
    }
}

/// Sets the batch resources in the node's status.
async fn publish(client: kube::Client, shared: &Shared, node: &str, b: Batch) {
    let nodes: Api<Node> = Api::all(client);
    let pp = PatchParams::apply(FIELD_MANAGER);
    match nodes
        .patch_status(node, &pp, &Patch::Apply(batch_patch(node, b)))
        .await
    {
        Ok(_) => {
            shared.count("batch_patches");
            info!(
                "node {node}: {BATCH_CPU}={} {BATCH_MEMORY}={}",
                b.cpu_milli, b.memory_bytes
            );
        }
        Err(kube::Error::Api(s)) if s.code == 409 => {
            shared.count("batch_patch_conflicts");
            warn!("node {node}: another manager owns the batch resources ({}); tidal leaves them to it", s.message);
        }
        Err(e) => {
            shared.count("batch_patch_errors");
            shared.republish.store(true, Ordering::Relaxed);
            warn!("node {node}: cannot publish batch resources: {e}");
        }
    }
}

/// The policy/v1 Eviction for a pod, with its UID as a precondition (a pod recreated under the
/// same name is not evicted in its place).
pub fn eviction_body(pod: &PodRef) -> Eviction {
    Eviction {
        metadata: ObjectMeta {
            name: Some(pod.name.clone()),
            namespace: Some(pod.namespace.clone()),
            ..ObjectMeta::default()
        },
        delete_options: Some(DeleteOptions {
            preconditions: Some(Preconditions {
                uid: Some(pod.uid.clone()),
                resource_version: None,
            }),
            ..DeleteOptions::default()
        }),
    }
}

/// POSTs the Eviction. (kube's `Api::evict` writes the options as `delete_options`, which the
/// apiserver ignores, losing the UID precondition; the body here is the API's own type.)
async fn evict(client: &kube::Client, pod: &PodRef) -> Result<serde_json::Value, kube::Error> {
    let body = serde_json::to_vec(&eviction_body(pod)).map_err(kube::Error::SerdeError)?;
    let req = http::Request::post(format!(
        "/api/v1/namespaces/{}/pods/{}/eviction",
        pod.namespace, pod.name
    ))
    .header(http::header::CONTENT_TYPE, "application/json")
    .body(body)
    .map_err(kube::Error::HttpError)?;
    client.request::<serde_json::Value>(req).await
}

async fn event(
    shared: &Shared,
    recorder: &Recorder,
    pod: &PodRef,
    warning: bool,
    reason: &str,
    note: String,
) {
    let ev = Event {
        type_: if warning {
            EventType::Warning
        } else {
            EventType::Normal
        },
        reason: reason.to_string(),
        note: Some(event_note(&note)),
        action: reason.trim_start_matches("Tidal").to_string(),
        secondary: None,
    };
    match recorder.publish(&ev, &pod_reference(pod)).await {
        Ok(()) => shared.count("events"),
        Err(e) => {
            shared.count("event_errors");
            warn!("cannot record event {reason} on pod {pod}: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn an_event_note_fits_the_api_s_kib_in_bytes() {
        let wide = "é".repeat(800);
        let n = super::event_note(&wide);
        assert!(n.len() <= 1000 && n.len() >= 998, "{}", n.len());
        assert!(n.chars().all(|c| c == 'é'));
        assert_eq!(super::event_note("short"), "short");
    }
}
