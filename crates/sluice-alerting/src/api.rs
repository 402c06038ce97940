//! The alerting service's API, over gRPC (`sluice.alert.v1.Alerting`) and
//! over HTTP on the ops port (`/api/alerts`, `/api/silences`,
//! `/api/test-alert`), both answering from the same state. Silences live in
//! the JetStream key-value bucket `<prefix>_silences`, so one made on any
//! replica mutes on all of them; each replica watches the bucket.

use std::collections::BTreeMap;
use std::sync::Arc;

use async_nats::jetstream::{self, kv};
use axum::Json;
use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{delete, get, post};
use futures::StreamExt;
use prost::Message;
use serde_json::{Value, json};
use sluice_proto::alert::v1 as pb;
use tonic::{Request, Response, Status};

use crate::engine::Shared;
use crate::eval::test_alert;
use crate::matcher::{Matcher, Op};
use crate::nflog::{ms, now_ms, ts};
use crate::payload::Notification;
use crate::receiver::Receiver;
use crate::silence::{Silence, SilenceError, SilenceState, Silences};

/// The API's state.
#[derive(Clone)]
pub struct Api {
    pub replica: String,
    pub shared: Arc<Shared>,
    pub silences: kv::Store,
    pub receivers: Arc<BTreeMap<String, Receiver>>,
    pub metrics: Arc<crate::metrics::Metrics>,
}

/// Opens the silences bucket and keeps `shared.silences` in step with it.
pub async fn open_silences(
    js: &jetstream::Context,
    prefix: &str,
    shared: Arc<Shared>,
) -> Result<(kv::Store, tokio::task::JoinHandle<()>), String> {
    let store = js
        .create_key_value(kv::Config {
            bucket: format!("{prefix}_silences"),
            description: "sluice alerting: silences, shared by every replica".into(),
            history: 1,
            max_age: std::time::Duration::from_secs(30 * 86_400),
            storage: jetstream::stream::StorageType::File,
            ..Default::default()
        })
        .await
        .map_err(|e| format!("silences bucket: {e}"))?;
    let mut watch = store.watch_with_history(">").await.map_err(|e| format!("silences bucket: {e}"))?;
    let task = tokio::spawn(async move {
        while let Some(entry) = watch.next().await {
            let Ok(entry) = entry else { continue };
            let mut all = shared.silences.lock().unwrap_or_else(|p| p.into_inner());
            if entry.operation != kv::Operation::Put {
                continue;
            }
            match pb::Silence::decode(entry.value.as_ref()).map_err(|e| e.to_string()).and_then(|s| from_pb(&s)) {
                Ok(s) => all.put(s),
                Err(e) => tracing::warn!(key = %entry.key, error = %e, "a silence in the bucket cannot be read; ignored"),
            }
        }
    });
    Ok((store, task))
}

fn op_pb(op: Op) -> pb::MatchOp {
    match op {
        Op::Equal => pb::MatchOp::Equal,
        Op::NotEqual => pb::MatchOp::NotEqual,
        Op::Regex => pb::MatchOp::Regex,
        Op::NotRegex => pb::MatchOp::NotRegex,
    }
}

fn matcher_from_pb(m: &pb::Matcher) -> Result<Matcher, String> {
    let op = match pb::MatchOp::try_from(m.op) {
        Ok(pb::MatchOp::Equal) => Op::Equal,
        Ok(pb::MatchOp::NotEqual) => Op::NotEqual,
        Ok(pb::MatchOp::Regex) => Op::Regex,
        Ok(pb::MatchOp::NotRegex) => Op::NotRegex,
        Err(_) => return Err(format!("matcher on {:?}: unknown op {}", m.name, m.op)),
    };
    Matcher::new(&m.name, op, &m.value).map_err(|e| e.to_string())
}

fn from_pb(s: &pb::Silence) -> Result<Silence, String> {
    Ok(Silence {
        id: s.id.clone(),
        matchers: s.matchers.iter().map(matcher_from_pb).collect::<Result<_, _>>()?,
        starts_at: ms(&s.starts_at).unwrap_or(0),
        ends_at: ms(&s.ends_at).unwrap_or(0),
        created_by: s.created_by.clone(),
        comment: s.comment.clone(),
    })
}

fn to_pb(s: &Silence, now: i64) -> pb::Silence {
    pb::Silence {
        id: s.id.clone(),
        matchers: s.matchers.iter().map(|m| pb::Matcher { name: m.name.clone(), value: m.value.clone(), op: op_pb(m.op) as i32 }).collect(),
        starts_at: Some(ts(s.starts_at)),
        ends_at: Some(ts(s.ends_at)),
        created_by: s.created_by.clone(),
        comment: s.comment.clone(),
        state: match s.state(now) {
            SilenceState::Pending => pb::SilenceState::Pending,
            SilenceState::Active => pb::SilenceState::Active,
            SilenceState::Expired => pb::SilenceState::Expired,
        } as i32,
    }
}

/// Why an API call failed.
#[derive(Debug)]
pub enum ApiError {
    Invalid(String),
    NotFound(String),
    Store(String),
}

impl From<SilenceError> for ApiError {
    fn from(e: SilenceError) -> Self {
        match e {
            SilenceError::NotFound(_) => ApiError::NotFound(e.to_string()),
            e => ApiError::Invalid(e.to_string()),
        }
    }
}

impl From<ApiError> for Status {
    fn from(e: ApiError) -> Self {
        match e {
            ApiError::Invalid(m) => Status::invalid_argument(m),
            ApiError::NotFound(m) => Status::not_found(m),
            ApiError::Store(m) => Status::unavailable(m),
        }
    }
}

impl Api {
    fn alerts(&self, include_resolved: bool) -> Vec<pb::Alert> {
        let all = self.shared.alerts.lock().unwrap_or_else(|p| p.into_inner());
        all.iter().filter(|a| include_resolved || a.state != pb::AlertState::Resolved as i32).cloned().collect()
    }

    /// Validates, stores and applies a new silence.
    pub async fn create_silence(&self, req: pb::CreateSilenceRequest) -> Result<pb::Silence, ApiError> {
        let now = now_ms();
        let s = Silence {
            id: uuid::Uuid::new_v4().to_string(),
            matchers: req.matchers.iter().map(matcher_from_pb).collect::<Result<_, _>>().map_err(ApiError::Invalid)?,
            starts_at: ms(&req.starts_at).unwrap_or(now),
            ends_at: ms(&req.ends_at).unwrap_or(0),
            created_by: req.created_by,
            comment: req.comment,
        };
        Silences::validate(&s, now)?;
        self.put(&s, now).await?;
        tracing::info!(id = %s.id, by = %s.created_by, matchers = ?s.matchers.iter().map(ToString::to_string).collect::<Vec<_>>(), "silence created: {}", s.comment);
        Ok(to_pb(&s, now))
    }

    async fn put(&self, s: &Silence, now: i64) -> Result<(), ApiError> {
        self.silences
            .put(&s.id, to_pb(s, now).encode_to_vec().into())
            .await
            .map_err(|e| ApiError::Store(format!("silences bucket: {e}")))?;
        self.shared.silences.lock().unwrap_or_else(|p| p.into_inner()).put(s.clone());
        Ok(())
    }

    pub async fn expire_silence(&self, id: &str) -> Result<pb::Silence, ApiError> {
        let now = now_ms();
        let s = self.shared.silences.lock().unwrap_or_else(|p| p.into_inner()).expire(id, now)?;
        self.put(&s, now).await?;
        tracing::info!(id = %s.id, "silence expired");
        Ok(to_pb(&s, now))
    }

    fn list_silences(&self, include_expired: bool) -> Vec<pb::Silence> {
        let now = now_ms();
        let all = self.shared.silences.lock().unwrap_or_else(|p| p.into_inner());
        all.list().filter(|s| include_expired || s.state(now) != SilenceState::Expired).map(|s| to_pb(s, now)).collect()
    }

    /// Sends a test alert through the receivers named (all when none) at once,
    /// without the notification log: it is a test of the path, not an alert.
    pub async fn test(&self, names: &[String]) -> Result<Vec<pb::ReceiverResult>, ApiError> {
        for n in names {
            if !self.receivers.contains_key(n) {
                return Err(ApiError::NotFound(format!("no receiver named {n:?}")));
            }
        }
        let now = now_ms();
        let alert = test_alert(&self.replica, now);
        let mut out = Vec::new();
        for (name, r) in self.receivers.iter().filter(|(n, _)| names.is_empty() || names.contains(n)) {
            let n = Notification {
                receiver: name.clone(),
                group_key: format!("test:{}:{now}", self.replica),
                group_labels: [("alertname".to_owned(), "SluiceTestAlert".to_owned())].into(),
                firing: vec![alert.clone()],
                resolved: vec![],
                triage: None,
            };
            let res = r.send(&n).await;
            self.metrics.notified(name, if res.is_ok() { "test_delivered" } else { "test_failed" });
            out.push(pb::ReceiverResult {
                receiver: name.clone(),
                ok: res.is_ok(),
                detail: match res {
                    Ok(d) => d,
                    Err(e) => e.to_string(),
                },
                attempts: 1,
            });
        }
        Ok(out)
    }
}

#[tonic::async_trait]
impl pb::alerting_server::Alerting for Api {
    async fn list_alerts(&self, r: Request<pb::ListAlertsRequest>) -> Result<Response<pb::ListAlertsResponse>, Status> {
        Ok(Response::new(pb::ListAlertsResponse { alerts: self.alerts(r.get_ref().include_resolved), replica: self.replica.clone() }))
    }

    async fn create_silence(&self, r: Request<pb::CreateSilenceRequest>) -> Result<Response<pb::Silence>, Status> {
        Ok(Response::new(Api::create_silence(self, r.into_inner()).await?))
    }

    async fn list_silences(&self, r: Request<pb::ListSilencesRequest>) -> Result<Response<pb::ListSilencesResponse>, Status> {
        Ok(Response::new(pb::ListSilencesResponse { silences: self.list_silences(r.get_ref().include_expired) }))
    }

    async fn expire_silence(&self, r: Request<pb::ExpireSilenceRequest>) -> Result<Response<pb::Silence>, Status> {
        Ok(Response::new(Api::expire_silence(self, &r.get_ref().id).await?))
    }

    async fn send_test_alert(&self, r: Request<pb::SendTestAlertRequest>) -> Result<Response<pb::SendTestAlertResponse>, Status> {
        Ok(Response::new(pb::SendTestAlertResponse { results: self.test(&r.get_ref().receivers).await? }))
    }
}

// ---- HTTP: the same, as JSON ----

fn rfc3339(t: &Option<prost_types::Timestamp>) -> Value {
    match ms(t) {
        Some(m) => {
            let t = time::OffsetDateTime::from_unix_timestamp_nanos(m as i128 * 1_000_000).unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
            t.format(&time::format_description::well_known::Rfc3339).map(Value::from).unwrap_or(Value::Null)
        }
        None => Value::Null,
    }
}

fn alert_json(a: &pb::Alert) -> Value {
    let state = pb::AlertState::try_from(a.state)
        .map(|s| s.as_str_name().trim_start_matches("ALERT_STATE_").to_ascii_lowercase())
        .unwrap_or_default();
    let severity = pb::Severity::try_from(a.severity)
        .map(|s| s.as_str_name().trim_start_matches("SEVERITY_").to_ascii_lowercase())
        .unwrap_or_default();
    let labels: BTreeMap<_, _> = a.labels.iter().collect();
    let annotations: BTreeMap<_, _> = a.annotations.iter().collect();
    json!({
        "name": a.name, "state": state, "severity": severity, "labels": labels, "annotations": annotations,
        "value": a.value, "fingerprint": a.fingerprint, "activeAt": rfc3339(&a.active_at), "firedAt": rfc3339(&a.fired_at),
        "resolvedAt": rfc3339(&a.resolved_at), "silencedBy": a.silenced_by, "inhibitedBy": a.inhibited_by,
    })
}

fn silence_json(s: &pb::Silence) -> Value {
    let state = pb::SilenceState::try_from(s.state)
        .map(|s| s.as_str_name().trim_start_matches("SILENCE_STATE_").to_ascii_lowercase())
        .unwrap_or_default();
    let matchers: Vec<String> = s.matchers.iter().filter_map(|m| matcher_from_pb(m).ok()).map(|m| m.to_string()).collect();
    json!({ "id": s.id, "matchers": matchers, "startsAt": rfc3339(&s.starts_at), "endsAt": rfc3339(&s.ends_at), "createdBy": s.created_by, "comment": s.comment, "state": state })
}

type HttpResult = (StatusCode, Json<Value>);

fn http_err(e: ApiError) -> HttpResult {
    let (code, m) = match e {
        ApiError::Invalid(m) => (StatusCode::BAD_REQUEST, m),
        ApiError::NotFound(m) => (StatusCode::NOT_FOUND, m),
        ApiError::Store(m) => (StatusCode::SERVICE_UNAVAILABLE, m),
    };
    (code, Json(json!({ "error": m })))
}

async fn http_alerts(State(api): State<Api>) -> HttpResult {
    let alerts: Vec<Value> = api.alerts(false).iter().map(alert_json).collect();
    (StatusCode::OK, Json(json!({ "alerts": alerts, "replica": api.replica })))
}

async fn http_silences(State(api): State<Api>) -> HttpResult {
    let s: Vec<Value> = api.list_silences(true).iter().map(silence_json).collect();
    (StatusCode::OK, Json(json!({ "silences": s })))
}

/// `{"matchers": "alertname=\"StaleData\", exchange=\"upbit\"", "duration": "2h"
/// (or "endsAt": RFC 3339), "createdBy": "...", "comment": "..."}`
async fn http_create_silence(State(api): State<Api>, body: axum::body::Bytes) -> HttpResult {
    let v: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => return http_err(ApiError::Invalid(format!("the body is not JSON: {e}"))),
    };
    let text = |k: &str| v.get(k).and_then(Value::as_str).unwrap_or("").to_owned();
    let matchers = match crate::matcher::parse_matchers(&text("matchers")) {
        Ok(m) => m,
        Err(e) => return http_err(ApiError::Invalid(format!("matchers: {e}"))),
    };
    let now = now_ms();
    let ends_at = match (v.get("duration").and_then(Value::as_str), v.get("endsAt").and_then(Value::as_str)) {
        (Some(d), None) => match crate::rules::parse_duration(d) {
            Ok(d) => now + d,
            Err(e) => return http_err(ApiError::Invalid(format!("duration: {e}"))),
        },
        (None, Some(t)) => match time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339) {
            Ok(t) => (t.unix_timestamp_nanos() / 1_000_000) as i64,
            Err(e) => return http_err(ApiError::Invalid(format!("endsAt {t:?}: {e}"))),
        },
        _ => return http_err(ApiError::Invalid("give exactly one of duration (\"2h\") or endsAt (RFC 3339)".into())),
    };
    let req = pb::CreateSilenceRequest {
        matchers: matchers.iter().map(|m| pb::Matcher { name: m.name.clone(), value: m.value.clone(), op: op_pb(m.op) as i32 }).collect(),
        starts_at: None,
        ends_at: Some(ts(ends_at)),
        created_by: text("createdBy"),
        comment: text("comment"),
    };
    match api.create_silence(req).await {
        Ok(s) => (StatusCode::OK, Json(silence_json(&s))),
        Err(e) => http_err(e),
    }
}

async fn http_expire_silence(State(api): State<Api>, Path(id): Path<String>) -> HttpResult {
    match api.expire_silence(&id).await {
        Ok(s) => (StatusCode::OK, Json(silence_json(&s))),
        Err(e) => http_err(e),
    }
}

async fn http_test(State(api): State<Api>) -> HttpResult {
    match api.test(&[]).await {
        Ok(results) => {
            let all_ok = results.iter().all(|r| r.ok);
            let r: Vec<Value> = results.iter().map(|r| json!({ "receiver": r.receiver, "ok": r.ok, "detail": r.detail })).collect();
            (if all_ok { StatusCode::OK } else { StatusCode::BAD_GATEWAY }, Json(json!({ "results": r })))
        }
        Err(e) => http_err(e),
    }
}

/// The HTTP routes, for the ops port.
pub fn router(api: Api) -> Router {
    Router::new()
        .route("/api/alerts", get(http_alerts))
        .route("/api/silences", get(http_silences).post(http_create_silence))
        .route("/api/silences/{id}", delete(http_expire_silence))
        .route("/api/test-alert", post(http_test))
        .with_state(api)
}
