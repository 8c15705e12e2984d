//! A local HTTP server that speaks enough of the Kubernetes API for tests (and the benchmark's
//! kubelet-tree layout, where it stands in for the apiserver on loopback), from recorded
//! real-format JSON: pod list and watch (ADDED/MODIFIED/DELETED/BOOKMARK events, `410 Gone`, a
//! dropped connection), the Node, its status patch, the Eviction API (with a PodDisruptionBudget's
//! 429) and events. The real `kube` client talks to it over plain HTTP on loopback. Every request
//! is recorded for the test to assert on.

use serde_json::{json, Value};
use std::collections::VecDeque;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// One request as the server received it.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub method: String,
    /// Path and query, as sent.
    pub target: String,
    pub body: String,
}

/// What the server answers to the next watch request.
#[derive(Debug, Clone)]
pub enum WatchReply {
    /// These events (`(type, object)`), then the connection is dropped.
    Events(Vec<(String, Value)>),
    /// A `410 Gone` ERROR event: the client must list again.
    Gone,
}

#[derive(Debug, Default)]
pub struct Script {
    /// The pods a list returns.
    pub pods: Vec<Value>,
    pub resource_version: u64,
    pub watches: VecDeque<WatchReply>,
    /// Status codes for successive evictions (201 once the queue is empty).
    pub evictions: VecDeque<u16>,
    pub node: Value,
    /// Status code for node-status patches (200, or 409 for a conflict).
    pub patch_code: u16,
    /// Watch requests wait while this is set (so a test sees the list before any event).
    pub hold_watches: bool,
    pub log: Vec<Recorded>,
}

/// The running server.
#[derive(Clone)]
pub struct MockApi {
    pub addr: SocketAddr,
    pub script: Arc<Mutex<Script>>,
    stopped: Arc<std::sync::atomic::AtomicBool>,
}

fn lock(s: &Mutex<Script>) -> std::sync::MutexGuard<'_, Script> {
    match s.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
}

fn status(code: u16, reason: &str, message: &str) -> Value {
    json!({
        "kind": "Status", "apiVersion": "v1", "metadata": {},
        "status": if code < 300 { "Success" } else { "Failure" },
        "message": message, "reason": reason, "code": code
    })
}

impl MockApi {
    /// Starts serving on a free loopback port.
    pub fn start(node: Value) -> std::io::Result<MockApi> {
        let l = TcpListener::bind("127.0.0.1:0")?;
        let addr = l.local_addr()?;
        let script = Arc::new(Mutex::new(Script {
            node,
            patch_code: 200,
            resource_version: 100,
            ..Script::default()
        }));
        let s = Arc::clone(&script);
        let stopped = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let st = Arc::clone(&stopped);
        std::thread::spawn(move || {
            for c in l.incoming().flatten() {
                if st.load(std::sync::atomic::Ordering::Relaxed) {
                    break;
                }
                let s = Arc::clone(&s);
                std::thread::spawn(move || {
                    let _ = serve(c, &s);
                });
            }
        });
        Ok(MockApi {
            addr,
            script,
            stopped,
        })
    }

    /// Stops accepting connections (the listener closes).
    pub fn stop(&self) {
        self.stopped
            .store(true, std::sync::atomic::Ordering::Relaxed);
        let _ = TcpStream::connect(self.addr);
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub fn with<R>(&self, f: impl FnOnce(&mut Script) -> R) -> R {
        f(&mut lock(&self.script))
    }

    pub fn requests(&self) -> Vec<Recorded> {
        lock(&self.script).log.clone()
    }

    /// A kubeconfig that points at this server (for a child process: `KUBECONFIG=`).
    pub fn kubeconfig(&self) -> String {
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: mock\n  cluster:\n    server: {}\ncontexts:\n- name: mock\n  context:\n    cluster: mock\n    user: mock\ncurrent-context: mock\nusers:\n- name: mock\n  user:\n    token: mock\n",
            self.url()
        )
    }
}

fn respond(c: &mut TcpStream, code: u16, body: &Value) -> std::io::Result<()> {
    let b = body.to_string();
    write!(
        c,
        "HTTP/1.1 {code} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{b}",
        b.len()
    )?;
    c.flush()
}

fn chunk(c: &mut TcpStream, s: &str) -> std::io::Result<()> {
    write!(c, "{:x}\r\n{s}\r\n", s.len())?;
    c.flush()
}

fn serve(mut c: TcpStream, s: &Mutex<Script>) -> std::io::Result<()> {
    c.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut r = BufReader::new(c.try_clone()?);
    let mut line = String::new();
    r.read_line(&mut line)?;
    let mut parts = line.split_whitespace();
    let method = parts.next().unwrap_or("").to_string();
    let target = parts.next().unwrap_or("").to_string();
    let mut len = 0usize;
    loop {
        let mut h = String::new();
        if r.read_line(&mut h)? == 0 || h == "\r\n" {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            if k.eq_ignore_ascii_case("content-length") {
                len = v.trim().parse().unwrap_or(0).min(1 << 20);
            }
        }
    }
    let mut body = vec![0; len];
    r.read_exact(&mut body)?;
    let body = String::from_utf8_lossy(&body).to_string();
    lock(s).log.push(Recorded {
        method: method.clone(),
        target: target.clone(),
        body: body.clone(),
    });
    let path = target.split('?').next().unwrap_or("");
    let watch = target.contains("watch=true") || target.contains("watch=1");
    match (method.as_str(), path) {
        ("GET", "/api/v1/pods") if watch => {
            for _ in 0..600 {
                if !lock(s).hold_watches {
                    break;
                }
                std::thread::sleep(Duration::from_millis(50));
            }
            let reply = lock(s).watches.pop_front();
            write!(
                c,
                "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
            )?;
            match reply {
                Some(WatchReply::Events(evs)) => {
                    for (t, o) in evs {
                        chunk(&mut c, &format!("{}\n", json!({"type": t, "object": o})))?;
                    }
                    // Dropped without the closing chunk: the client sees a broken stream.
                }
                Some(WatchReply::Gone) => {
                    let st = status(410, "Expired", "too old resource version: 1 (100)");
                    chunk(
                        &mut c,
                        &format!("{}\n", json!({"type": "ERROR", "object": st})),
                    )?;
                    write!(c, "0\r\n\r\n")?;
                }
                None => {
                    // A quiet watch: hold it a while, then end it as the apiserver's timeout does.
                    std::thread::sleep(Duration::from_secs(3));
                    write!(c, "0\r\n\r\n")?;
                }
            }
            c.flush()
        }
        ("GET", "/api/v1/pods") => {
            let (pods, rv) = {
                let g = lock(s);
                (g.pods.clone(), g.resource_version)
            };
            respond(
                &mut c,
                200,
                &json!({"kind": "PodList", "apiVersion": "v1",
                        "metadata": {"resourceVersion": rv.to_string()}, "items": pods}),
            )
        }
        ("POST", p) if p.ends_with("/eviction") || p.ends_with("/eviction?") => {
            let code = lock(s).evictions.pop_front().unwrap_or(201);
            let st = if code == 429 {
                let mut v = status(
                    429,
                    "TooManyRequests",
                    "Cannot evict pod as it would violate the pod's disruption budget.",
                );
                v["details"] = json!({"causes": [{"reason": "DisruptionBudget",
                    "message": "The disruption budget web-pdb needs 2 healthy pods and has 2 currently"}]});
                v
            } else {
                status(code, "", "")
            };
            respond(&mut c, code, &st)
        }
        ("POST", p) if p.starts_with("/apis/events.k8s.io/v1/") => {
            let v: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
            respond(&mut c, 201, &v)
        }
        ("PATCH", p) if p.starts_with("/apis/events.k8s.io/v1/") => {
            let v: Value = serde_json::from_str(&body).unwrap_or(Value::Null);
            respond(&mut c, 200, &v)
        }
        ("GET", p) if p.starts_with("/api/v1/nodes/") => {
            let n = lock(s).node.clone();
            respond(&mut c, 200, &n)
        }
        ("PATCH", p) if p.starts_with("/api/v1/nodes/") && p.ends_with("/status") => {
            let (code, n) = {
                let g = lock(s);
                (g.patch_code, g.node.clone())
            };
            if code == 409 {
                respond(
                    &mut c,
                    409,
                    &status(409, "Conflict", "Apply failed with 1 conflict: conflict with \"koordlet\" using v1: .status.capacity.kubernetes.io/batch-cpu"),
                )
            } else {
                respond(&mut c, code, &n)
            }
        }
        _ => respond(&mut c, 404, &status(404, "NotFound", "not in the mock")),
    }
}
