//! Stand-ins for Slack, Discord, PagerDuty and a webhook on one local port
//! (paths `/slack`, `/discord`, `/pagerduty`, `/webhook`), for the alerting
//! tests and `sluice bench alert`: each POST is recorded with its time and
//! body, and answered from a script (say 500, 500, then 200; or 429 with a
//! `Retry-After`), then 200 (PagerDuty: 202 with its JSON) once the script
//! has run out.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::IntoResponse;
use axum::routing::post;
use tokio_util::sync::CancellationToken;

/// One scripted answer.
#[derive(Clone, Debug)]
pub struct Answer {
    pub status: u16,
    pub retry_after: Option<String>,
}

/// One request the mock took.
#[derive(Clone, Debug)]
pub struct Received {
    pub path: String,
    pub at: Instant,
    pub status: u16,
    pub body: serde_json::Value,
}

#[derive(Default)]
struct Inner {
    script: HashMap<String, VecDeque<Answer>>,
    received: Vec<Received>,
}

/// The running mock.
#[derive(Clone)]
pub struct MockReceiver {
    pub addr: SocketAddr,
    inner: Arc<Mutex<Inner>>,
}

impl MockReceiver {
    pub async fn start(stop: CancellationToken) -> anyhow::Result<MockReceiver> {
        let inner = Arc::new(Mutex::new(Inner::default()));
        let app = Router::new().route("/{path}", post(take)).with_state(inner.clone());
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        tokio::spawn(async move {
            let _ = axum::serve(listener, app).with_graceful_shutdown(async move { stop.cancelled().await }).await;
        });
        Ok(MockReceiver { addr, inner })
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}/{path}", self.addr)
    }

    /// The next answers on `path`, in order.
    pub fn script(&self, path: &str, answers: Vec<Answer>) {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).script.insert(path.to_owned(), answers.into());
    }

    pub fn received(&self) -> Vec<Received> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).received.clone()
    }

    /// Requests on `path` that were answered 2xx (delivered).
    pub fn delivered(&self, path: &str) -> Vec<Received> {
        self.received().into_iter().filter(|r| r.path == path && (200..300).contains(&r.status)).collect()
    }
}

async fn take(State(inner): State<Arc<Mutex<Inner>>>, Path(path): Path<String>, body: axum::body::Bytes) -> impl IntoResponse {
    let body: serde_json::Value = serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null);
    let mut st = inner.lock().unwrap_or_else(|p| p.into_inner());
    let answer = st.script.get_mut(&path).and_then(VecDeque::pop_front);
    let (status, retry_after) = match answer {
        Some(a) => (a.status, a.retry_after),
        None if path == "pagerduty" => (202, None),
        None => (200, None),
    };
    st.received.push(Received { path: path.clone(), at: Instant::now(), status, body });
    let mut headers = HeaderMap::new();
    if let Some(v) = retry_after.and_then(|v| HeaderValue::from_str(&v).ok()) {
        headers.insert("retry-after", v);
    }
    let text = if path == "pagerduty" && status == 202 { r#"{"status":"success","message":"Event processed"}"# } else { "ok" };
    (StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR), headers, text)
}
