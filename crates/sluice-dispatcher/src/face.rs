//! The exchanges' own REST APIs, served by the dispatcher for bots written against
//! ccxt, pybit, python-binance or any other client of the exchange: a bot changes
//! only its base URL and its key (docs/EXISTING-BOTS.md).
//!
//! A request is handled as the exchange would, then as a gRPC `Call`:
//!
//! 1. A signed request is verified in the exchange's own scheme against the sluice
//!    exchange key it names (`[[clients.exchange_keys]]`); that names the client
//!    and the account. An unknown key or bad signature gets the exchange's own
//!    authentication error. Unsigned requests may reach public endpoints only
//!    (unless `require_credential`).
//! 2. The client's grant is applied (accounts, classes, endpoints); a call beyond
//!    it gets the exchange's own permission error, and is not sent.
//! 3. The bot's credential is stripped, and the call is queued under the same
//!    budgets, priorities and deadlines as a gRPC call, signed with the account's
//!    real key when it leaves.
//! 4. The exchange's answer comes back verbatim (credentials redacted). A call the
//!    dispatcher refused is a 429 or 503 whose body says it came from sluice and
//!    why, with `"sent": false`; one whose fate is unknown is a 504.
//!
//! Sluice's own bodies use a single top-level `"sluice"` key, so no client library
//! mistakes them for an exchange error code and each falls back to the HTTP
//! status (ccxt: 429 `RateLimitExceeded`, 503 `ExchangeNotAvailable`, 504
//! `RequestTimeout`).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use axum::routing::any;
use serde_json::json;
use sluice_domain::Exchange;
use sluice_exchange::verify::{self, Incoming, NonceLog, Rejection};
use sluice_proto::dispatcher::v1::CallRequest;
use sluice_proto::prost_types;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::DispatchError;
use crate::auth::{CallKind, Caller};
use crate::config::ExchangeApiConfig;
use crate::request::{NAME_AN_ACCOUNT, prepare_call};
use crate::service::Inner;
use crate::shard::{Answer, Failure};

/// Where the face listens once bound.
#[derive(Debug, Clone, Default)]
pub struct Addresses {
    /// Every exchange under its name (`/upbit/v1/ticker`).
    pub shared: Option<SocketAddr>,
    /// An exchange at the root.
    pub per_exchange: BTreeMap<Exchange, SocketAddr>,
}

struct Face {
    inner: Arc<Inner>,
    /// Upbit's JWT carries no timestamp: a nonce seen before is a replay.
    nonces: Mutex<NonceLog>,
    require_credential: bool,
}

/// Binds every configured address and serves until `stop`.
pub(crate) async fn start(
    cfg: &ExchangeApiConfig,
    inner: Arc<Inner>,
    stop: CancellationToken,
) -> Result<(Addresses, Vec<JoinHandle<()>>), DispatchError> {
    let face = Arc::new(Face { inner, nonces: Mutex::new(NonceLog::default()), require_credential: cfg.require_credential });
    let mut addrs = Addresses::default();
    let mut tasks = Vec::new();
    if let Some(addr) = cfg.listen {
        let app = Router::new().route("/{exchange}/{*rest}", any(prefixed)).fallback(no_exchange).with_state(face.clone());
        let (bound, task) = serve(addr, app, stop.clone()).await?;
        addrs.shared = Some(bound);
        tasks.push(task);
    }
    for (ex, addr) in &cfg.exchanges {
        let app = Router::new().fallback(rooted).with_state((face.clone(), *ex));
        let (bound, task) = serve(*addr, app, stop.clone()).await?;
        addrs.per_exchange.insert(*ex, bound);
        tasks.push(task);
    }
    tracing::info!(shared = ?addrs.shared, per_exchange = ?addrs.per_exchange, "exchange-compatible REST face serving");
    Ok((addrs, tasks))
}

async fn serve(addr: SocketAddr, app: Router, stop: CancellationToken) -> Result<(SocketAddr, JoinHandle<()>), DispatchError> {
    let listener = TcpListener::bind(addr).await.map_err(|source| DispatchError::Bind { addr, source })?;
    let bound = listener.local_addr().map_err(|source| DispatchError::Bind { addr, source })?;
    let task = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, app).with_graceful_shutdown(async move { stop.cancelled().await }).await {
            tracing::warn!(error = %e, %bound, "exchange-compatible REST face stopped");
        }
    });
    Ok((bound, task))
}

/// A request as the handlers hand it on.
struct Req {
    exchange: Exchange,
    method: Method,
    path: String,
    query: String,
    headers: Vec<(String, String)>,
    body: Bytes,
}

async fn prefixed(
    State(face): State<Arc<Face>>,
    Path((exchange, rest)): Path<(String, String)>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Ok(exchange) = exchange.parse::<Exchange>() else {
        return sluice_error(
            StatusCode::NOT_FOUND,
            "unknown_exchange",
            &format!("no exchange '{exchange}': use /upbit, /bybit, /binance or /okx"),
            false,
        );
    };
    let req = Req {
        exchange,
        method,
        path: format!("/{rest}"),
        query: uri.query().unwrap_or_default().to_owned(),
        headers: lower(&headers),
        body,
    };
    face.handle(req).await
}

async fn rooted(
    State((face, exchange)): State<(Arc<Face>, Exchange)>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let req = Req {
        exchange,
        method,
        path: uri.path().to_owned(),
        query: uri.query().unwrap_or_default().to_owned(),
        headers: lower(&headers),
        body,
    };
    face.handle(req).await
}

async fn no_exchange() -> Response {
    sluice_error(StatusCode::NOT_FOUND, "unknown_exchange", "paths start with the exchange: /upbit, /bybit, /binance or /okx", false)
}

fn lower(headers: &HeaderMap) -> Vec<(String, String)> {
    headers.iter().filter_map(|(n, v)| v.to_str().ok().map(|v| (n.as_str().to_owned(), v.to_owned()))).collect()
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// An answer of sluice's own: `{"sluice": {"error", "message", "sent"}}`.
fn sluice_error(status: StatusCode, error: &str, message: &str, sent_unknown: bool) -> Response {
    let sent = if sent_unknown { json!("unknown") } else { json!(false) };
    let body = json!({ "sluice": { "error": error, "message": message, "sent": sent } }).to_string();
    let mut r = (status, [(axum::http::header::CONTENT_TYPE, "application/json")], body).into_response();
    if let Ok(v) = HeaderValue::from_str(error) {
        r.headers_mut().insert(HeaderName::from_static("x-sluice-refused"), v);
    }
    if status == StatusCode::TOO_MANY_REQUESTS {
        r.headers_mut().insert(axum::http::header::RETRY_AFTER, HeaderValue::from_static("1"));
    }
    r
}

/// The exchange's own error answer.
fn exchange_error(exchange: Exchange, r: &Rejection) -> Response {
    let status = StatusCode::from_u16(r.status).unwrap_or(StatusCode::UNAUTHORIZED);
    (status, [(axum::http::header::CONTENT_TYPE, "application/json")], r.body(exchange, now_ms())).into_response()
}

/// Headers that describe one hop, not the answer.
const HOP: [&str; 6] = ["connection", "keep-alive", "transfer-encoding", "content-length", "upgrade", "te"];

fn answer(a: &Answer, arrived: Instant) -> Response {
    let mut r = Response::new(axum::body::Body::from(a.body.clone()));
    *r.status_mut() = StatusCode::from_u16(a.status).unwrap_or(StatusCode::BAD_GATEWAY);
    let h = r.headers_mut();
    for (n, v) in &a.headers {
        if HOP.contains(&n.as_str()) {
            continue;
        }
        if let (Ok(n), Ok(v)) = (HeaderName::from_bytes(n.as_bytes()), HeaderValue::from_str(v)) {
            h.append(n, v);
        }
    }
    // Where the time went: waiting for budget, at the exchange, and the rest
    // (verifying, preparing, signing, relaying: the dispatcher's own part).
    let own = arrived.elapsed().saturating_sub(a.queued + a.upstream);
    for (name, d) in [("x-sluice-queued-ms", a.queued), ("x-sluice-upstream-ms", a.upstream), ("x-sluice-own-ms", own)] {
        if let Ok(v) = HeaderValue::from_str(&format!("{:.3}", d.as_secs_f64() * 1e3)) {
            h.insert(HeaderName::from_static(name), v);
        }
    }
    r
}

/// A call the dispatcher did not complete, by gRPC code: never sent (429, 503,
/// 400) or possibly sent (504).
fn failure(f: Failure) -> (Response, &'static str) {
    let (s, unknown) = match f {
        Failure::NotSent(s) => (s, false),
        Failure::Unknown(s) => (s, true),
    };
    if unknown {
        return (sluice_error(StatusCode::GATEWAY_TIMEOUT, "outcome_unknown", s.message(), true), "outcome_unknown");
    }
    let (status, error) = match s.code() {
        tonic::Code::ResourceExhausted => (StatusCode::TOO_MANY_REQUESTS, "queue_full"),
        tonic::Code::DeadlineExceeded => (StatusCode::SERVICE_UNAVAILABLE, "deadline"),
        tonic::Code::InvalidArgument => (StatusCode::BAD_REQUEST, "invalid_request"),
        tonic::Code::Aborted | tonic::Code::Unavailable => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
        _ => (StatusCode::SERVICE_UNAVAILABLE, "not_sent"),
    };
    (sluice_error(status, error, s.message(), false), error)
}

impl Face {
    fn count(&self, exchange: Exchange, outcome: &str) {
        self.inner.metrics.exchange_api(exchange.as_str(), outcome);
    }

    fn refuse(&self, exchange: Exchange, client: &str, r: &Rejection) -> Response {
        self.count(exchange, r.kind.as_str());
        let code = if r.kind == verify::RejectKind::Permission { tonic::Code::PermissionDenied } else { tonic::Code::Unauthenticated };
        self.inner.metrics.refuse_client(client, code);
        tracing::warn!(%exchange, client, reason = r.kind.as_str(), "exchange-compatible REST face refused a caller");
        exchange_error(exchange, r)
    }

    async fn handle(&self, req: Req) -> Response {
        let arrived = Instant::now();
        let ex = req.exchange;
        let inner = &self.inner;
        if req.body.len() > inner.config.max_body_bytes {
            self.count(ex, "invalid");
            let msg = format!("body is {} bytes; the limit is {}", req.body.len(), inner.config.max_body_bytes);
            return sluice_error(StatusCode::PAYLOAD_TOO_LARGE, "invalid_request", &msg, false);
        }
        let incoming = Incoming {
            method: req.method.as_str(),
            path: &req.path,
            query: &req.query,
            body: &req.body,
            headers: &req.headers,
            now_ms: now_ms(),
        };
        // Who is calling: a verified exchange key, or nobody (public endpoints only).
        let mut window = None;
        let key = if verify::is_signed(ex, &incoming) {
            // The verifier finds the key; the same lookup names the client and account.
            let found = std::cell::Cell::new(None);
            let verified = verify::verify(ex, &incoming, |k| {
                let key = inner.clients.exchange_key(ex, k);
                found.set(key);
                key.map(|key| &key.credentials)
            });
            let (verified, key) = match (verified, found.get()) {
                (Ok(v), Some(key)) => (v, key),
                (Err(r), _) => return self.refuse(ex, "unknown", &r),
                // A signature verifies only against a key that was found.
                (Ok(_), None) => return sluice_error(StatusCode::INTERNAL_SERVER_ERROR, "internal", "verified without a key", false),
            };
            if let Some(n) = &verified.nonce {
                let fresh = self.nonces.lock().unwrap_or_else(|p| p.into_inner()).fresh(&format!("{}:{n}", verified.api_key));
                if !fresh {
                    return self.refuse(ex, &key.client.name, &Rejection::nonce_reused());
                }
            }
            window = verified.recv_window_ms;
            Some(key)
        } else {
            None
        };
        let missing = || verify::verify(ex, &incoming, |_| None).err();
        if key.is_none()
            && self.require_credential
            && let Some(r) = missing()
        {
            return self.refuse(ex, "unknown", &r);
        }
        let caller = key.map_or_else(Caller::anyone, |k| Caller::of(&k.client));
        let account = key.map(|k| k.account.clone()).unwrap_or_default();
        let granted = caller
            .may(CallKind::Call)
            .and_then(|()| caller.check_target(ex.as_str(), &account))
            .and_then(|()| caller.check_endpoint(ex.as_str(), req.method.as_str(), &req.path));
        if let Err(r) = granted {
            return self.refuse(ex, caller.name(), &Rejection::permission(ex, &r.message));
        }
        // The bot's credential goes no further: the real key signs when the call leaves.
        let (query, body) = verify::strip(ex, &req.query, &req.body);
        // The bot's own patience (recvWindow) bounds the wait, as the exchange would.
        let timeout = window
            .map(Duration::from_millis)
            .filter(|w| !w.is_zero())
            .map_or(inner.config.default_timeout(), |w| w.min(inner.config.default_timeout()));
        let call = CallRequest {
            exchange: ex.as_str().to_owned(),
            method: req.method.as_str().to_owned(),
            path: req.path.clone(),
            query,
            body,
            account,
            timeout: Some(prost_types::Duration { seconds: timeout.as_secs() as i64, nanos: timeout.subsec_nanos() as i32 }),
            ..CallRequest::default()
        };
        let prepared = match prepare_call(&call, &inner.context(None)) {
            Ok(p) => p,
            Err(s) if key.is_none() && s.message().ends_with(NAME_AN_ACCOUNT) => {
                // A private endpoint without a signature: the exchange's own
                // "credential missing" answer.
                return match missing() {
                    Some(r) => self.refuse(ex, "unknown", &r),
                    None => sluice_error(StatusCode::UNAUTHORIZED, "unauthenticated", s.message(), false),
                };
            }
            Err(s) => {
                let (r, outcome) = failure(Failure::NotSent(s));
                self.count(ex, outcome);
                return r;
            }
        };
        if let Err(r) = caller.check_class(prepared.class) {
            return self.refuse(ex, caller.name(), &Rejection::permission(ex, &r.message));
        }
        match inner.dispatch(prepared).await {
            Ok(a) => {
                self.count(ex, "answered");
                answer(&a, arrived)
            }
            Err(f) => {
                let (r, outcome) = failure(f);
                self.count(ex, outcome);
                r
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_say_they_came_from_sluice_and_whether_sent() {
        let (r, o) = failure(Failure::NotSent(tonic::Status::resource_exhausted("the upbit dispatch queue is saturated")));
        assert_eq!((r.status(), o), (StatusCode::TOO_MANY_REQUESTS, "queue_full"));
        assert_eq!(r.headers()["retry-after"], "1");
        assert_eq!(r.headers()["x-sluice-refused"], "queue_full");
        let (r, o) = failure(Failure::NotSent(tonic::Status::deadline_exceeded("no budget before the deadline")));
        assert_eq!((r.status(), o), (StatusCode::SERVICE_UNAVAILABLE, "deadline"));
        let (r, o) = failure(Failure::Unknown(tonic::Status::unavailable("connection reset")));
        assert_eq!((r.status(), o), (StatusCode::GATEWAY_TIMEOUT, "outcome_unknown"));
    }
}
