//! The operations endpoint of a service: `/metrics` (Prometheus text), `/healthz`
//! (the process is alive) and `/readyz` (it serves; turns false when shutdown begins
//! so Kubernetes stops sending traffic before the drain).

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::State;
use axum::http::{StatusCode, header};
use axum::response::IntoResponse;
use axum::routing::get;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Readiness shared between a service and its operations endpoint.
#[derive(Debug, Clone, Default)]
pub struct Readiness(Arc<AtomicBool>);

impl Readiness {
    pub fn set(&self, ready: bool) {
        self.0.store(ready, Ordering::SeqCst);
    }

    pub fn get(&self) -> bool {
        self.0.load(Ordering::SeqCst)
    }
}

/// Why the endpoint could not start.
#[derive(Debug, thiserror::Error)]
pub enum OpsError {
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
}

#[derive(Clone)]
struct Ops {
    // A std mutex: encoding is quick and never awaits while holding it.
    registry: Arc<Mutex<Registry>>,
    ready: Readiness,
}

async fn metrics(State(ops): State<Ops>) -> impl IntoResponse {
    let mut text = String::new();
    let encoded = {
        let registry = ops.registry.lock().unwrap_or_else(|p| p.into_inner());
        prometheus_client::encoding::text::encode(&mut text, &registry)
    };
    match encoded {
        Ok(()) => (StatusCode::OK, [(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], text),
        Err(e) => (StatusCode::INTERNAL_SERVER_ERROR, [(header::CONTENT_TYPE, "text/plain")], format!("encoding metrics failed: {e}")),
    }
}

async fn healthz() -> &'static str {
    "ok"
}

async fn readyz(State(ops): State<Ops>) -> (StatusCode, &'static str) {
    if ops.ready.get() { (StatusCode::OK, "ready") } else { (StatusCode::SERVICE_UNAVAILABLE, "not ready") }
}

/// Serves the endpoint on `addr` (port 0 picks one) until `shutdown`; returns the
/// bound address.
pub async fn serve(
    addr: SocketAddr,
    registry: Arc<Mutex<Registry>>,
    ready: Readiness,
    shutdown: CancellationToken,
) -> Result<(SocketAddr, JoinHandle<()>), OpsError> {
    serve_with(addr, registry, ready, Router::new(), shutdown).await
}

/// Like [`serve`], with a service's own routes beside the operations ones
/// (the alerting service's `/api/...`).
pub async fn serve_with(
    addr: SocketAddr,
    registry: Arc<Mutex<Registry>>,
    ready: Readiness,
    extra: Router,
    shutdown: CancellationToken,
) -> Result<(SocketAddr, JoinHandle<()>), OpsError> {
    let listener = TcpListener::bind(addr).await.map_err(|source| OpsError::Bind { addr, source })?;
    let bound = listener.local_addr().map_err(|source| OpsError::Bind { addr, source })?;
    let app = Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .with_state(Ops { registry, ready })
        .merge(extra);
    let task = tokio::spawn(async move {
        let served = axum::serve(listener, app).with_graceful_shutdown(async move { shutdown.cancelled().await }).await;
        if let Err(e) = served {
            tracing::warn!(error = %e, "operations endpoint stopped");
        }
    });
    Ok((bound, task))
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::metrics::counter::Counter;

    #[tokio::test]
    async fn serves_metrics_health_and_readiness() {
        let mut registry = Registry::default();
        let c: Counter = Counter::default();
        registry.register("demo_events", "demo", c.clone());
        c.inc();
        let ready = Readiness::default();
        let stop = CancellationToken::new();
        let (addr, task) =
            serve("127.0.0.1:0".parse().unwrap(), Arc::new(Mutex::new(registry)), ready.clone(), stop.clone()).await.unwrap();
        let client = crate::http_client::client();
        let text = client.get(format!("http://{addr}/metrics")).send().await.unwrap().text().await.unwrap();
        assert!(text.contains("demo_events_total 1"), "{text}");
        assert_eq!(client.get(format!("http://{addr}/readyz")).send().await.unwrap().status(), 503);
        ready.set(true);
        assert_eq!(client.get(format!("http://{addr}/readyz")).send().await.unwrap().status(), 200);
        assert_eq!(client.get(format!("http://{addr}/healthz")).send().await.unwrap().status(), 200);
        stop.cancel();
        task.await.unwrap();
    }
}
