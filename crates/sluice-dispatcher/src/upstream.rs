//! Sends one admitted call to its exchange: signs it (with the time of sending),
//! sends it over a pooled HTTPS client, reads the whole answer, and reports to the
//! shard when the answer came (the latest moment the exchange could have counted
//! the request) and what it said about the budget.
//!
//! The query is normalised by the URL parser *before* signing, and the signature is
//! computed over exactly what goes on the wire (the parser would otherwise
//! re-encode characters such as the quotes in Binance's `symbols=["A","B"]`).

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use sluice_domain::Exchange;
use sluice_exchange::feedback::observe;
use sluice_exchange::policy::ExchangePolicy;
use sluice_exchange::sign::{Credentials, SignContext, Unsigned, sign};
use sluice_rate::scheduler::Ticket;
use sluice_rate::{Clock, MonotonicClock};
use tokio::sync::mpsc;
use tonic::Status;

use crate::metrics::{ExchangeLabels, Metrics, StatusLabels};
use crate::request::PreparedCall;
use crate::shard::{Answer, CallReply, Done, Failure, Outcome};

/// Removes the account's credential material from an answer (exchanges sometimes
/// echo it in error messages); nothing the dispatcher returns may carry a key.
fn redact(c: &Credentials, body: bytes::Bytes, headers: Vec<(String, String)>) -> (bytes::Bytes, Vec<(String, String)>) {
    let body = c.redact(&body).map_or(body, bytes::Bytes::from);
    let headers = headers
        .into_iter()
        .map(|(k, v)| match c.redact(v.as_bytes()) {
            Some(r) => (k, String::from_utf8_lossy(&r).into_owned()),
            None => (k, v),
        })
        .collect();
    (body, headers)
}

/// How one exchange is reached.
pub(crate) struct Upstream {
    exchange: Exchange,
    policy: Arc<ExchangePolicy>,
    http: reqwest::Client,
    clock: MonotonicClock,
    metrics: Arc<Metrics>,
    timeout: Duration,
}

impl Upstream {
    pub(crate) fn new(
        policy: Arc<ExchangePolicy>,
        egress: Option<IpAddr>,
        timeout: Duration,
        clock: MonotonicClock,
        metrics: Arc<Metrics>,
    ) -> Result<Self, reqwest::Error> {
        // Warm pooled connections keep the dispatcher's own latency low; budgets do
        // not depend on it (an entry is held until its answer, however slow).
        let http = sluice_service::http_client::builder()
            .local_address(egress)
            .pool_max_idle_per_host(256)
            .pool_idle_timeout(Duration::from_secs(90))
            .tcp_nodelay(true)
            .connect_timeout(Duration::from_secs(5))
            .user_agent(concat!("sluice-dispatcher/", env!("CARGO_PKG_VERSION")))
            .build()?;
        // Every answer class exists (at zero) from the start, so an error rate
        // over them is defined before the first error.
        for class in ["2xx", "4xx", "5xx", "transport_error"] {
            let _ = metrics.responses.get_or_create(&StatusLabels { exchange: policy.exchange.to_string(), status: class.into() });
        }
        let _ = metrics.upstream.get_or_create(&ExchangeLabels { exchange: policy.exchange.to_string() });
        Ok(Upstream { exchange: policy.exchange, policy, http, clock, metrics, timeout })
    }

    fn unavailable(&self, what: &str, e: &reqwest::Error) -> Status {
        Status::unavailable(format!("{what} {}: {}", self.exchange, e))
    }

    /// Builds the signed request and the time it may take.
    fn build(&self, call: &PreparedCall) -> Result<(reqwest::RequestBuilder, Duration), Status> {
        let now = self.clock.now();
        let left = call.deadline.saturating_since(now);
        if left.is_zero() {
            return Err(Status::deadline_exceeded("the deadline passed before sending; not sent"));
        }
        let mut url = reqwest::Url::parse(&format!("{}{}", self.policy.base_url, call.path))
            .map_err(|e| Status::invalid_argument(format!("cannot form a URL from path '{}': {e}", call.path)))?;
        url.set_query((!call.query.is_empty()).then_some(call.query.as_str()));
        let query = url.query().unwrap_or("").to_owned();
        let path = url.path().to_owned();
        let mut headers = Vec::new();
        if let Some(creds) = &call.signer {
            let ctx = SignContext {
                now_ms: now.as_millis(),
                nonce: uuid::Uuid::new_v4().to_string(),
                recv_window_ms: self.policy.recv_window.map_or(0, |d| d.as_millis() as u64),
            };
            let signed = sign(self.exchange, creds, Unsigned { method: call.method, path: &path, query: &query, body: &call.body }, &ctx)
                .map_err(|e| Status::invalid_argument(e.to_string()))?;
            url.set_query((!signed.query.is_empty()).then_some(signed.query.as_str()));
            headers = signed.headers;
        }
        let method = reqwest::Method::from_bytes(call.method.as_bytes()).map_err(|_| Status::invalid_argument("bad method"))?;
        let mut rb = self.http.request(method, url).header("accept", "application/json");
        if !call.body.is_empty() {
            rb = rb.header("content-type", self.policy.body_format.content_type()).body(call.body.clone());
        }
        for (k, v) in headers {
            rb = rb.header(k, v);
        }
        Ok((rb, left.min(self.timeout)))
    }

    /// Sends an admitted call and reports how it ended, to the shard and the caller.
    pub(crate) async fn send(
        self: Arc<Self>,
        call: Box<PreparedCall>,
        reply: CallReply,
        ticket: Ticket,
        queued: Duration,
        buckets: Vec<String>,
        done: mpsc::Sender<Done>,
    ) {
        let report = |outcome| Done { ticket, outcome };
        // The caller left while the call waited: do not send it at all.
        if reply.is_closed() {
            let _ = done.send(report(Outcome::NotSent)).await;
            return;
        }
        let (outcome, result) = self.execute(&call, queued, buckets).await;
        let _ = done.send(report(outcome)).await;
        let _ = reply.send(result);
    }

    /// Signs and sends one call; says how it ended for the budget and for the caller.
    pub(crate) async fn execute(&self, call: &PreparedCall, queued: Duration, buckets: Vec<String>) -> (Outcome, Result<Answer, Failure>) {
        let (request, timeout) = match self.build(call) {
            Ok(r) => r,
            Err(status) => return (Outcome::NotSent, Err(Failure::NotSent(status))),
        };
        let started = self.clock.now();
        let (outcome, result) = match request.timeout(timeout).send().await {
            Ok(resp) => {
                let status = resp.status().as_u16();
                let headers: Vec<(String, String)> = resp
                    .headers()
                    .iter()
                    .map(|(k, v)| (k.as_str().to_owned(), String::from_utf8_lossy(v.as_bytes()).into_owned()))
                    .collect();
                match resp.bytes().await {
                    Ok(body) => {
                        let at = self.clock.now();
                        let (body, headers) = match &call.signer {
                            Some(c) => redact(c, body, headers),
                            None => (body, headers),
                        };
                        let observations = observe(self.exchange, status, &headers, &body, at.as_millis());
                        let upstream = at.saturating_since(started);
                        let labels = ExchangeLabels { exchange: self.exchange.to_string() };
                        self.metrics.upstream.get_or_create(&labels).observe(upstream.as_secs_f64());
                        let class = format!("{}xx", status / 100);
                        self.metrics.responses.get_or_create(&StatusLabels { exchange: labels.exchange, status: class }).inc();
                        let not_executed = crate::shard::not_executed(&observations);
                        let answer = Answer { status, headers, body, queued, upstream, buckets, not_executed };
                        (Outcome::Answered { at, observations }, Ok(answer))
                    }
                    Err(e) => {
                        let s = self.unavailable("the answer was cut off from", &e.without_url());
                        (Outcome::Unknown { at: self.clock.now() }, Err(Failure::Unknown(s)))
                    }
                }
            }
            Err(e) => {
                let e = e.without_url();
                if e.is_connect() || e.is_builder() {
                    (Outcome::NotSent, Err(Failure::NotSent(self.unavailable("cannot connect to", &e))))
                } else {
                    let s = self.unavailable("transport failure toward", &e);
                    let s = Status::unavailable(format!("{}; the request may have reached the exchange (outcome unknown)", s.message()));
                    (Outcome::Unknown { at: self.clock.now() }, Err(Failure::Unknown(s)))
                }
            }
        };
        if result.is_err() {
            tracing::warn!(exchange = %self.exchange, route = %call.route, "call got no answer");
            // Counted beside the answers, so an error rate sees an exchange that
            // does not answer at all.
            let labels = StatusLabels { exchange: self.exchange.to_string(), status: "transport_error".into() };
            self.metrics.responses.get_or_create(&labels).inc();
        }
        (outcome, result)
    }
}
