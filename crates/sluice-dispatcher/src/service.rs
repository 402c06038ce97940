//! The gRPC face of the dispatcher (`sluice.dispatcher.v1.Dispatcher`): validates,
//! applies idempotency keys, hands calls to the exchange's shard and maps outcomes
//! to responses. An exchange 4xx or 5xx is a normal response; gRPC errors mean the
//! call got no answer from the exchange (see the proto for the codes).

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use sluice_domain::Exchange;
use sluice_exchange::policy::Policies;
use sluice_proto::dispatcher::v1::dispatcher_server::Dispatcher;
use sluice_proto::dispatcher::v1::{
    AcquireRequest, AcquireResponse, BucketStatus, CallRequest, CallResponse, ClusterStatus, GetBudgetsRequest, GetBudgetsResponse,
    GetClusterRequest, Header, Member, MintStreamAuthRequest, MintStreamAuthResponse, WatchBudgetsRequest, WindowStatus,
};
use sluice_proto::prost_types;
use sluice_rate::{Clock, MonotonicClock};
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};
use tracing::Instrument;

use crate::auth::{CallKind, Caller, Clients, Refused};
use crate::cluster::{self, Claimed, Cluster, Route, Routed};
use crate::config::DispatcherConfig;
use crate::idempotency::{self, Begin, Ending, Idempotency};
use crate::keyring::Keyring;
use crate::metrics::Metrics;
use crate::request::{Context, parse_grpc_timeout, prepare_call, prepare_grant};
use crate::shard::{Answer, BucketView, Command, Failure, ShardHandle, Unsent};

pub(crate) struct Inner {
    pub(crate) config: DispatcherConfig,
    pub(crate) policies: Arc<Policies>,
    pub(crate) keyring: Arc<Keyring>,
    pub(crate) clients: Clients,
    pub(crate) shards: BTreeMap<Exchange, ShardHandle>,
    pub(crate) idempotency: Arc<Idempotency>,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) clock: MonotonicClock,
    pub(crate) shutdown: CancellationToken,
    /// Replicas sharing budgets over NATS; `None` for a dispatcher on its own.
    pub(crate) cluster: Option<Arc<Cluster>>,
}

/// The service implementation.
#[derive(Clone)]
pub(crate) struct DispatcherService {
    pub(crate) inner: Arc<Inner>,
}

fn duration(d: Duration) -> prost_types::Duration {
    prost_types::Duration { seconds: d.as_secs() as i64, nanos: d.subsec_nanos() as i32 }
}

fn response(a: &Answer) -> CallResponse {
    CallResponse {
        status: u32::from(a.status),
        headers: a.headers.iter().map(|(n, v)| Header { name: n.clone(), value: v.clone() }).collect(),
        body: a.body.to_vec(),
        queued: Some(duration(a.queued)),
        upstream: Some(duration(a.upstream)),
        replayed: false,
        buckets: a.buckets.clone(),
    }
}

fn replayed(shared: &idempotency::Shared) -> CallResponse {
    let mut r = (**shared).clone();
    r.replayed = true;
    r
}

fn grpc_timeout<T>(req: &Request<T>) -> Option<Duration> {
    req.metadata().get("grpc-timeout").and_then(|v| v.to_str().ok()).and_then(parse_grpc_timeout)
}

pub(crate) fn bucket_status(v: &BucketView, now: sluice_rate::Time) -> BucketStatus {
    BucketStatus {
        exchange: v.key.exchange.to_string(),
        scope: v.key.scope.as_str().to_owned(),
        scope_key: v.key.scope_key.clone(),
        group: v.key.group.clone(),
        partition: v.key.partition.clone().unwrap_or_default(),
        windows: v
            .status
            .windows
            .iter()
            .map(|w| WindowStatus {
                period: Some(duration(w.period)),
                effective_period: Some(duration(w.period)),
                limit: w.limit,
                used: w.used,
                configured_limit: w.configured,
                learned_limit: w.learned.unwrap_or(0),
                learned_from: w.learned_from.map(|s| s.as_str().to_owned()).unwrap_or_default(),
                verified: w.verified,
                failed_count: w.failed.unwrap_or(0),
            })
            .collect(),
        rate_factor: v.status.rate_factor,
        frozen_for: Some(duration(v.status.frozen_until.map_or(Duration::ZERO, |t| t.saturating_since(now)))),
        queued: v.queued as u32,
        in_flight: v.status.in_flight as u32,
        admitted_total: v.status.admitted,
        throttled_total: v.status.throttled,
        bans_total: v.status.bans,
        phantom_cost: v.status.phantom_cost,
        owner: String::new(),
    }
}

impl Inner {
    /// Who is calling, and whether it may make this kind of call at all.
    fn caller<T>(&self, req: &Request<T>, kind: CallKind) -> Result<Caller, Status> {
        let cert = crate::tls::client_cert(req);
        let caller = self.clients.authenticate(req.metadata(), cert.as_deref()).map_err(|r| self.refused(r))?;
        caller.may(kind).map_err(|r| self.refused(r))?;
        Ok(caller)
    }

    /// Counts and logs a refused caller (by its configured name; never a credential).
    fn refused(&self, r: Refused) -> Status {
        self.metrics.refuse_client(&r.client, r.code);
        tracing::warn!(client = %r.client, code = ?r.code, reason = %r.message, "refused a caller");
        r.status()
    }

    pub(crate) fn context(&self, grpc_timeout: Option<Duration>) -> Context<'_> {
        Context { policies: &self.policies, keyring: &self.keyring, config: &self.config, now: self.clock.now(), grpc_timeout }
    }

    fn shard(&self, ex: Exchange) -> Result<&ShardHandle, Status> {
        self.shards.get(&ex).ok_or_else(|| Status::invalid_argument(format!("exchange '{ex}' is not configured on this dispatcher")))
    }

    pub(crate) async fn dispatch(&self, call: crate::request::PreparedCall) -> Result<Answer, Failure> {
        let call = match &self.cluster {
            Some(c) => match c.call(call, None).await {
                Routed::Done(r) => return r,
                Routed::Local(call) => call,
            },
            None => Box::new(call),
        };
        let exchange = call.exchange;
        let shard = self.shard(exchange).map_err(Failure::NotSent)?;
        let (reply, rx) = oneshot::channel();
        shard.try_send(Command::Call { call, reply }).map_err(|e| Failure::NotSent(self.unsent(exchange, e)))?;
        rx.await.unwrap_or_else(|_| Err(Failure::Unknown(Status::unavailable("the dispatcher stopped before the call finished"))))
    }

    fn unsent(&self, exchange: Exchange, e: Unsent) -> Status {
        match e {
            Unsent::Saturated => {
                self.metrics.reject(exchange.as_str(), "shard_full");
                Status::resource_exhausted(format!("the {exchange} dispatch queue is saturated; retry later"))
            }
            Unsent::Stopped => Status::unavailable("the dispatcher is shutting down; the call was not sent"),
        }
    }

    /// Budgets the caller may see: its exchanges, and of account budgets only its accounts.
    pub(crate) async fn budgets(&self, exchange: &str, caller: &Caller) -> Result<GetBudgetsResponse, Status> {
        let filter: Option<Exchange> = if exchange.is_empty() {
            None
        } else {
            Some(exchange.parse().map_err(|e: sluice_domain::UnknownExchange| Status::invalid_argument(e.to_string()))?)
        };
        if let Some(ex) = filter {
            caller.check_target(ex.as_str(), "").map_err(|r| self.refused(r))?;
        }
        let mut buckets = Vec::new();
        for (ex, shard) in &self.shards {
            if filter.is_some_and(|f| f != *ex) || !caller.may_use_exchange(*ex) {
                continue;
            }
            let views = shard.status().await.ok_or_else(|| Status::unavailable("the dispatcher is shutting down"))?;
            let now = self.clock.now();
            let owner = self.cluster.as_ref().map(|c| c.owner_of(*ex)).unwrap_or_default();
            let visible =
                |v: &&BucketView| v.key.scope != sluice_exchange::policy::Scope::Account || caller.may_use_account(*ex, &v.key.scope_key);
            buckets.extend(views.iter().filter(visible).map(|v| BucketStatus { owner: owner.clone(), ..bucket_status(v, now) }));
        }
        Ok(GetBudgetsResponse { buckets, replica: self.config.replica.clone() })
    }
}

/// A call with an idempotency key among replicas: the key is claimed in the shared
/// store first, so a retry on any replica is never sent twice.
async fn shared_key_call(c: &Cluster, call: crate::request::PreparedCall, key: &str) -> Result<CallResponse, Status> {
    if c.route(call.exchange) == Route::Fallback {
        return Err(Status::unavailable(
            "NATS is unreachable, so idempotency keys cannot be checked across replicas; not sent (retry, or send without a key)",
        ));
    }
    let fp = idempotency::fingerprint(call.method, &call.path, &call.query, &call.body).to_vec();
    let account = call.account.clone().unwrap_or_default();
    match c.claim(call.exchange, &account, key, fp, call.deadline).await? {
        Claimed::Replay(r) => Ok(r),
        // With a claim the cluster never hands the call back for local admission.
        Claimed::Fresh(mut claim) => match c.call(call, Some(&mut claim)).await {
            Routed::Local(_) => {
                c.finish(claim, cluster::Ending::NotSent).await;
                Err(Status::unavailable("NATS is unreachable, so idempotency keys cannot be checked across replicas; not sent"))
            }
            Routed::Done(r) => keyed_ending(c, claim, r).await,
        },
    }
}

/// Records how a keyed call ended and answers its caller.
async fn keyed_ending(c: &Cluster, claim: cluster::Claim, result: Result<Answer, Failure>) -> Result<CallResponse, Status> {
    match result {
        // Refused unexecuted (429, ban): the key is free, a retry is sent again.
        Ok(answer) if answer.not_executed => {
            c.finish(claim, cluster::Ending::NotSent).await;
            Ok(response(&answer))
        }
        Ok(answer) => {
            let r = response(&answer);
            c.finish(claim, cluster::Ending::Answered(r.clone())).await;
            Ok(r)
        }
        // Another replica took the key over: its record is not ours to close.
        Err(Failure::NotSent(s)) if s.code() == tonic::Code::Aborted => Err(s),
        Err(Failure::NotSent(s)) => {
            c.finish(claim, cluster::Ending::NotSent).await;
            Err(s)
        }
        Err(Failure::Unknown(s)) => {
            c.finish(claim, cluster::Ending::Unknown).await;
            Err(s)
        }
    }
}

impl DispatcherService {
    /// `Call`, inside its span.
    async fn call_traced(&self, request: Request<CallRequest>) -> Result<Response<CallResponse>, Status> {
        let inner = &self.inner;
        let caller = inner.caller(&request, CallKind::Call)?;
        let timeout = grpc_timeout(&request);
        let req = request.into_inner();
        // Checked on the names as given, before any lookup: a refused client learns
        // nothing about which accounts exist.
        caller
            .check_target(&req.exchange, &req.account)
            .and_then(|()| caller.check_endpoint(&req.exchange, &req.method, &req.path))
            .map_err(|r| inner.refused(r))?;
        let call = prepare_call(&req, &inner.context(timeout)).inspect_err(|s| {
            // Labels come from a closed set, never from what the caller typed.
            let exchange = req.exchange.parse::<Exchange>().map_or("unknown", Exchange::as_str);
            inner.metrics.reject(exchange, if s.code() == tonic::Code::InvalidArgument { "invalid" } else { "account" });
        })?;
        caller.check_class(call.class).map_err(|r| inner.refused(r))?;
        let Some(key) = call.idempotency_key.clone() else {
            return inner.dispatch(call).await.map(|a| Response::new(response(&a))).map_err(Failure::into_status);
        };
        if let Some(c) = &inner.cluster {
            return shared_key_call(c, call, &key).await.map(Response::new);
        }
        let fp = idempotency::fingerprint(call.method, &call.path, &call.query, &call.body);
        let (exchange, account, deadline) = (call.exchange, call.account.clone().unwrap_or_default(), call.deadline);
        let mut call = Some(call);
        loop {
            match inner.idempotency.begin(exchange, &account, &key, fp) {
                Begin::Fresh(guard) => {
                    let Some(call) = call.take() else { return Err(Status::internal("call already dispatched")) };
                    return match inner.dispatch(call).await {
                        Ok(answer) => {
                            let r = response(&answer);
                            // Only an answer that may have executed is replayed; a
                            // rate-limit refusal frees the key for a retry.
                            let ending = if answer.not_executed { Ending::NotSent } else { Ending::Answered(Arc::new(r.clone())) };
                            guard.finish(ending);
                            Ok(Response::new(r))
                        }
                        Err(Failure::NotSent(s)) => {
                            guard.finish(Ending::NotSent);
                            Err(s)
                        }
                        Err(Failure::Unknown(s)) => {
                            guard.finish(Ending::Unknown);
                            Err(s)
                        }
                    };
                }
                Begin::Wait(mut rx) => {
                    let wait = deadline.saturating_since(inner.clock.now());
                    let waited = tokio::time::timeout(wait, async {
                        loop {
                            if let Some(a) = rx.borrow().clone() {
                                return Some(a);
                            }
                            if rx.changed().await.is_err() {
                                return rx.borrow().clone();
                            }
                        }
                    })
                    .await;
                    match waited {
                        Ok(Some(a)) => return Ok(Response::new(replayed(&a))),
                        // The first call ended without an answer: look at the key again
                        // (free if it was never sent, "unknown" if it may have been).
                        Ok(None) => continue,
                        Err(_) => {
                            return Err(Status::deadline_exceeded(format!(
                                "the first call with idempotency key '{key}' is still in flight"
                            )));
                        }
                    }
                }
                Begin::Replay(a) => return Ok(Response::new(replayed(&a))),
                Begin::Mismatch => {
                    return Err(Status::invalid_argument(format!("idempotency key '{key}' was already used for a different request")));
                }
                Begin::OutcomeUnknown => return Err(idempotency::outcome_unknown(&key)),
                Begin::Full => return Err(Status::resource_exhausted("too many idempotency keys are remembered; retry later")),
            }
        }
    }
}

/// The two phases of an answered call as spans under `span`: the wait for
/// budget (`dispatcher.queue`) and the exchange's round trip
/// (`dispatcher.upstream`), each with its duration as an attribute.
fn record_phases(span: &tracing::Span, arrived: SystemTime, answered: SystemTime, r: &CallResponse) {
    use sluice_service::trace::{KeyValue, record};
    if r.replayed {
        return;
    }
    let d = |x: &Option<prost_types::Duration>| x.as_ref().map_or(Duration::ZERO, |d| Duration::new(d.seconds as u64, d.nanos as u32));
    let (queued, upstream) = (d(&r.queued), d(&r.upstream));
    // The wait starts when the call arrives; the round trip ends when the answer
    // is in (what lies between is validation, signing and the hand-offs).
    record(
        span,
        "dispatcher.queue",
        arrived,
        arrived + queued,
        vec![KeyValue::new("sluice.queue_wait_ms", queued.as_secs_f64() * 1e3), KeyValue::new("sluice.buckets", r.buckets.join(","))],
    );
    let sent = answered.checked_sub(upstream).unwrap_or(arrived).max(arrived + queued);
    record(
        span,
        "dispatcher.upstream",
        sent,
        answered,
        vec![
            KeyValue::new("sluice.upstream_ms", upstream.as_secs_f64() * 1e3),
            KeyValue::new("http.response.status_code", i64::from(r.status)),
        ],
    );
}

#[tonic::async_trait]
impl Dispatcher for DispatcherService {
    async fn call(&self, request: Request<CallRequest>) -> Result<Response<CallResponse>, Status> {
        let r = request.get_ref();
        let span = tracing::info_span!("dispatcher.call", exchange = %r.exchange, method = %r.method, path = %r.path);
        sluice_service::trace::adopt_grpc(&span, request.metadata());
        let arrived = SystemTime::now();
        let result = self.call_traced(request).instrument(span.clone()).await;
        if let Ok(answer) = &result {
            record_phases(&span, arrived, SystemTime::now(), answer.get_ref());
        }
        result
    }

    async fn acquire(&self, request: Request<AcquireRequest>) -> Result<Response<AcquireResponse>, Status> {
        let inner = &self.inner;
        let caller = inner.caller(&request, CallKind::Acquire)?;
        caller.check_target(&request.get_ref().exchange, &request.get_ref().account).map_err(|r| inner.refused(r))?;
        let timeout = grpc_timeout(&request);
        let grant = prepare_grant(request.get_ref(), &inner.context(timeout))?;
        caller.check_class(grant.class).map_err(|r| inner.refused(r))?;
        let exchange = grant.exchange;
        if let Some(c) = &inner.cluster
            && let Some(queued) = c.grant(&grant).await?
        {
            return Ok(Response::new(AcquireResponse {
                use_within: Some(duration(grant.use_within)),
                queued: Some(duration(queued)),
                bucket: grant.need.0.to_string(),
            }));
        }
        let (reply, rx) = oneshot::channel();
        inner.shard(exchange)?.try_send(Command::Grant { grant: Box::new(grant), reply }).map_err(|e| inner.unsent(exchange, e))?;
        let g = rx.await.map_err(|_| Status::unavailable("the dispatcher stopped"))??;
        Ok(Response::new(AcquireResponse { use_within: Some(duration(g.use_within)), queued: Some(duration(g.queued)), bucket: g.bucket }))
    }

    async fn mint_stream_auth(&self, request: Request<MintStreamAuthRequest>) -> Result<Response<MintStreamAuthResponse>, Status> {
        let caller = self.inner.caller(&request, CallKind::MintStreamAuth)?;
        let req = request.into_inner();
        caller.check_target(&req.exchange, &req.account).map_err(|r| self.inner.refused(r))?;
        let exchange: Exchange =
            req.exchange.parse().map_err(|_| Status::invalid_argument(format!("unknown exchange '{}'", req.exchange)))?;
        if req.account.trim().is_empty() {
            return Err(Status::invalid_argument("account is required: name the account whose stream this is"));
        }
        let creds = self.inner.keyring.get(exchange, &req.account).map_err(crate::request::key_status)?;
        let ctx = sluice_exchange::sign::SignContext {
            now_ms: self.inner.clock.now().as_millis(),
            nonce: uuid::Uuid::new_v4().to_string(),
            recv_window_ms: 0,
        };
        let auth = sluice_exchange::sign::stream_auth(exchange, &creds, &ctx).map_err(|e| match e {
            sluice_exchange::sign::StreamAuthError::Sign(s) => Status::failed_precondition(s.to_string()),
            other => Status::invalid_argument(other.to_string()),
        })?;
        tracing::debug!(%exchange, account = %req.account, "minted a private stream login");
        Ok(Response::new(MintStreamAuthResponse {
            headers: auth.headers.into_iter().map(|(name, value)| Header { name: name.to_owned(), value }).collect(),
            login_message: auth.login.unwrap_or_default(),
            valid_for: Some(duration(Duration::from_millis(auth.valid_for_ms))),
        }))
    }

    async fn get_budgets(&self, request: Request<GetBudgetsRequest>) -> Result<Response<GetBudgetsResponse>, Status> {
        let caller = self.inner.caller(&request, CallKind::Read)?;
        Ok(Response::new(self.inner.budgets(&request.get_ref().exchange, &caller).await?))
    }

    async fn get_cluster(&self, request: Request<GetClusterRequest>) -> Result<Response<ClusterStatus>, Status> {
        let inner = &self.inner;
        inner.caller(&request, CallKind::Read)?;
        Ok(Response::new(match &inner.cluster {
            Some(c) => c.status(),
            None => ClusterStatus {
                replica: inner.config.replica.clone(),
                mode: "single".into(),
                members: vec![Member { replica: inner.config.replica.clone(), alive: true, ..Default::default() }],
                owners: Vec::new(),
                fallback_share_of: 1,
            },
        }))
    }

    type WatchBudgetsStream = ReceiverStream<Result<GetBudgetsResponse, Status>>;

    async fn watch_budgets(&self, request: Request<WatchBudgetsRequest>) -> Result<Response<Self::WatchBudgetsStream>, Status> {
        let caller = self.inner.caller(&request, CallKind::Read)?;
        let req = request.into_inner();
        let every = match &req.interval {
            Some(d) => crate::request::duration_field("interval", d)?,
            None => Duration::from_secs(1),
        }
        .max(Duration::from_millis(100));
        // Validate the filter before streaming, so a bad one is an error, not an empty stream.
        self.inner.budgets(&req.exchange, &caller).await?;
        let (tx, rx) = mpsc::channel(4);
        let inner = self.inner.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            loop {
                tokio::select! {
                    _ = inner.shutdown.cancelled() => break,
                    _ = tx.closed() => break,
                    _ = tick.tick() => {
                        let update = inner.budgets(&req.exchange, &caller).await;
                        let stop = update.is_err();
                        if tx.send(update).await.is_err() || stop {
                            break;
                        }
                    }
                }
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }
}
