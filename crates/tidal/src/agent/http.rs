//! The HTTP endpoint: `/metrics` (OpenMetrics), `/healthz`, `/state` (JSON). Runs on its own thread
//! with a small tokio runtime so the control loop never waits on a client.

use super::Shared;
use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;
use std::sync::Arc;

/// Asks the control loop for a full per-workload reading and waits (≤ 1 s) until it is taken.
async fn fresh(s: &Shared) {
    let gen = s.generation.load(std::sync::atomic::Ordering::Acquire);
    s.wanted.store(true, std::sync::atomic::Ordering::Relaxed);
    for _ in 0..100 {
        if s.generation.load(std::sync::atomic::Ordering::Acquire) != gen {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
}

async fn metrics(State(s): State<Arc<Shared>>) -> impl IntoResponse {
    fresh(&s).await;
    let body = match s.metrics.lock() {
        Ok(m) => m.encode(),
        Err(_) => String::new(),
    };
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        body,
    )
}

async fn state(State(s): State<Arc<Shared>>) -> impl IntoResponse {
    fresh(&s).await;
    let body = match s.view.lock() {
        Ok(v) => {
            serde_json::to_string_pretty(&*v).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"))
        }
        Err(_) => "{\"error\":\"state unavailable\"}".to_string(),
    };
    ([(header::CONTENT_TYPE, "application/json")], body)
}

async fn healthz(State(s): State<Arc<Shared>>) -> impl IntoResponse {
    // Healthy while the control loop keeps ticking.
    let age = s.last_tick_age_ms();
    // A degraded source (apiserver unreachable) is said, not failed: the agent keeps enforcing
    // the last known workloads, and restarting it would not bring the apiserver back.
    let source = match s.view.lock() {
        Ok(v) => v.source_health.detail.clone(),
        Err(p) => p.into_inner().source_health.detail.clone(),
    };
    if age < 5_000 {
        (
            axum::http::StatusCode::OK,
            match source {
                Some(d) => format!("ok (last tick {age} ms ago); source degraded: {d}\n"),
                None => format!("ok (last tick {age} ms ago)\n"),
            },
        )
    } else {
        (
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            format!("control loop stalled: last tick {age} ms ago\n"),
        )
    }
}

pub fn spawn(listener: std::net::TcpListener, shared: Arc<Shared>) -> std::io::Result<()> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()?;
    std::thread::Builder::new()
        .name("tidal-http".into())
        .spawn(move || {
            rt.block_on(async move {
                let app = Router::new()
                    .route("/metrics", get(metrics))
                    .route("/healthz", get(healthz))
                    .route("/state", get(state))
                    .with_state(shared);
                match tokio::net::TcpListener::from_std(listener) {
                    Ok(l) => {
                        if let Err(e) = axum::serve(l, app).await {
                            tracing::error!("http server stopped: {e}");
                        }
                    }
                    Err(e) => tracing::error!("http listener: {e}"),
                }
            })
        })?;
    Ok(())
}
