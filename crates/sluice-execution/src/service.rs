//! The running service: NATS in (signals through a durable JetStream consumer,
//! market data, the kill switch on `exec.control.state`, and in live mode the
//! collector's private-stream events), the dispatcher's answers, the gRPC API
//! (`sluice.execution.v1.Execution`), and the one engine task they all feed
//! through bounded channels, with a 100 ms tick for reconciliation.
//!
//! A signal is acknowledged only after the engine has journaled what it did with
//! it (placed, denied or skipped), so a crash before that redelivers it, and the
//! order id derived from it makes the redelivery a duplicate, never a second
//! order. A signal that cannot be decided yet (no market data or rules since the
//! start) is negatively acknowledged and comes again. A signal that cannot be
//! decoded is terminated (never redelivered) and counted.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream::{self, consumer};
use futures::StreamExt;
use prometheus_client::registry::Registry;
use prost::Message;
use sluice_proto::execution::v1 as pb;
use sluice_proto::execution::v1::execution_server::{Execution, ExecutionServer};
use sluice_rate::MonotonicClock;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};
use tracing::Instrument;

use crate::config::{AccountId, ExecutionConfig, Mode};
use crate::engine::{Engine, SignalOutcome};
use crate::journal::Journal;
use crate::live::{Live, Outcome};
use crate::metrics::Metrics;
use crate::risk::TradingState;

/// Why the service could not start.
#[derive(Debug, thiserror::Error)]
pub enum ExecutionError {
    #[error("cannot connect to NATS at {url}: {message}")]
    Nats { url: String, message: String },
    #[error("JetStream: {0}")]
    JetStream(String),
    #[error(transparent)]
    Journal(#[from] crate::journal::JournalError),
    #[error("rebuilding from the journal: {0}")]
    Rebuild(String),
    #[error(transparent)]
    Ops(#[from] sluice_service::http::OpsError),
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: std::net::SocketAddr, source: std::io::Error },
    #[error("gRPC: {0}")]
    Grpc(String),
    #[error("dispatcher at {url}: {message}")]
    Dispatcher { url: String, message: String },
}

type Reply<T> = oneshot::Sender<Result<T, Status>>;

/// What the API asks of the engine.
enum Command {
    Submit(pb::SubmitOrderRequest, Reply<pb::Order>),
    Cancel(String, Reply<pb::Order>),
    CancelAll(Option<AccountId>, Reply<Vec<pb::Order>>),
    Get(String, Reply<pb::Order>),
    List(pb::ListOrdersRequest, Reply<Vec<pb::Order>>),
    Positions(Option<AccountId>, Reply<Vec<pb::Position>>),
    Pnl(Option<AccountId>, Reply<pb::PnlReport>),
    GetState(Reply<pb::TradingStateChange>),
    SetState(TradingState, String, &'static str, Reply<pb::TradingStateChange>),
}

/// A running service.
pub struct Running {
    pub grpc_addr: std::net::SocketAddr,
    pub ops_addr: std::net::SocketAddr,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Running {
    pub async fn wait(self) {
        for t in self.tasks {
            let _ = t.await;
        }
    }
}

fn nats_err(url: &str) -> impl Fn(String) -> ExecutionError + '_ {
    move |message| ExecutionError::Nats { url: url.to_owned(), message }
}

/// Connects, rebuilds from the journal, subscribes, serves.
pub async fn start(config: ExecutionConfig, shutdown: CancellationToken) -> Result<Running, ExecutionError> {
    let config = Arc::new(config);
    let url = config.nats_url.clone();
    let nats = config
        .nats_auth
        .options()
        .await
        .map_err(|e| nats_err(&url)(e.to_string()))?
        .name(format!("sluice-execution {}", config.service))
        .retry_on_initial_connect()
        .connect(url.as_str())
        .await
        .map_err(|e| nats_err(&url)(e.to_string()))?;
    let js = jetstream::new(nats.clone());
    js.get_or_create_stream(jetstream::stream::Config {
        name: config.events.name.clone(),
        subjects: vec!["exec.>".into()],
        max_age: Duration::from_secs(config.events.max_age_s),
        storage: jetstream::stream::StorageType::File,
        discard: jetstream::stream::DiscardPolicy::Old,
        ..Default::default()
    })
    .await
    .map_err(|e| ExecutionError::JetStream(format!("events stream {}: {e}", config.events.name)))?;
    let journal = Journal::open(js.clone(), &config.journal.name, Duration::from_secs(config.journal.max_age_s)).await?;

    let metrics = Arc::new(Metrics::default());
    let mut registry = Registry::default();
    metrics.register(&mut registry);
    // The dispatcher: live orders, and instrument rules in both modes. The
    // channel is connected lazily, so a dispatcher that is not up yet delays
    // only the calls, never the start.
    let (out_tx, out_rx) = mpsc::channel::<Outcome>(1024);
    let live = if config.dispatcher_url.is_empty() {
        None
    } else {
        let url = config.dispatcher_url.clone();
        let bad = |m: String| ExecutionError::Dispatcher { url: url.clone(), message: m };
        let channel = tonic::transport::Endpoint::from_shared(url.clone()).map_err(|e| bad(e.to_string()))?.connect_lazy();
        let token =
            sluice_service::credentials::Bearer::from_file(config.dispatcher_token_file.as_deref()).map_err(|e| bad(e.to_string()))?;
        let client = sluice_proto::dispatcher::v1::dispatcher_client::DispatcherClient::with_interceptor(channel, token);
        Some(Live::new(client, out_tx, Duration::from_millis(config.call_timeout_ms)))
    };
    let mut engine = Engine::new(config.clone(), journal, nats.clone(), MonotonicClock::new(), metrics.clone(), live);
    let entries = engine.rebuild().await.map_err(|e| ExecutionError::Rebuild(e.message().to_owned()))?;
    let open = engine.orders.values().filter(|t| t.state.status.is_open()).count();
    tracing::info!(entries, orders = engine.orders.len(), open, "rebuilt from the journal");

    // Market data of every traded symbol, subscribed before serving.
    let mut subs = Vec::new();
    for s in &config.strategies {
        let sym = format!("{}-{}", s.symbol.base, s.symbol.quote);
        for channel in ["depth", "book", "trade"] {
            let subject = format!("md.{}.{channel}.{sym}", s.venue);
            subs.push(nats.subscribe(subject).await.map_err(|e| nats_err(&url)(e.to_string()))?);
        }
    }
    subs.push(nats.subscribe("exec.control.state").await.map_err(|e| nats_err(&url)(e.to_string()))?);
    // Live: each account's private-stream events from the collector.
    if config.mode == Mode::Live {
        let mut accounts: Vec<&AccountId> = config.strategies.iter().map(|s| &s.account).collect();
        accounts.sort();
        accounts.dedup();
        for a in accounts {
            let subject = format!("account.{}.{}.>", a.exchange, a.name);
            subs.push(nats.subscribe(subject).await.map_err(|e| nats_err(&url)(e.to_string()))?);
        }
    }
    nats.flush().await.map_err(|e| nats_err(&url)(e.to_string()))?;

    // The signal consumer exists before start returns (when SIGNAL does), so every
    // signal published from now on is read; otherwise the pull task waits for it.
    let first_consumer = match signal_consumer(&js, &config).await {
        Ok(c) => Some(c),
        Err(e) => {
            tracing::warn!(error = %e, "signals: not yet readable; waiting for the SIGNAL stream");
            None
        }
    };

    let ready = sluice_service::http::Readiness::default();
    let registry = Arc::new(Mutex::new(registry));
    let (ops_addr, ops) = sluice_service::http::serve(config.ops_listen, registry.clone(), ready.clone(), shutdown.clone()).await?;
    let beat = sluice_service::heartbeat::spawn(
        nats.clone(),
        sluice_service::heartbeat::Identity {
            service: "execution".into(),
            instance: config.service.clone(),
            interval: Duration::from_secs(1),
        },
        registry,
        shutdown.clone(),
    );

    // The engine's inputs: API commands and signals through bounded channels
    // (their senders wait when the engine is busy; nothing is dropped).
    let (api_tx, api_rx) = mpsc::channel::<Command>(256);
    let (sig_tx, sig_rx) = mpsc::channel::<jetstream::Message>(64);
    let listener =
        tokio::net::TcpListener::bind(config.listen).await.map_err(|source| ExecutionError::Bind { addr: config.listen, source })?;
    let grpc_addr = listener.local_addr().map_err(|source| ExecutionError::Bind { addr: config.listen, source })?;
    let (health, health_svc) = tonic_health::server::health_reporter();
    health.set_serving::<ExecutionServer<Api>>().await;
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(sluice_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
        .map_err(|e| ExecutionError::Grpc(e.to_string()))?;
    sluice_service::grpc::not_serving_on_shutdown::<ExecutionServer<Api>>(health, shutdown.clone());
    let stop_grpc = shutdown.clone();
    let grpc = tokio::spawn(async move {
        let served = tonic::transport::Server::builder()
            .layer(sluice_service::grpc::OversizeLayer)
            .add_service(health_svc)
            .add_service(reflection)
            .add_service(ExecutionServer::new(Api { tx: api_tx }))
            .serve_with_incoming_shutdown(
                tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true)),
                stop_grpc.cancelled(),
            )
            .await;
        if let Err(e) = served {
            tracing::error!(error = %e, "gRPC server stopped");
        }
    });
    let tasks = vec![
        ops,
        beat,
        grpc,
        tokio::spawn(pull_signals(js, config.clone(), first_consumer, sig_tx, shutdown.clone())),
        tokio::spawn(engine_loop(engine, Inputs { api: api_rx, signals: sig_rx, outcomes: out_rx, subs }, config.clone(), shutdown)),
    ];
    ready.set(true);
    tracing::info!(service = %config.service, mode = ?config.mode, %grpc_addr, %ops_addr, "execution service running");
    Ok(Running { grpc_addr, ops_addr, tasks })
}

/// Runs until `shutdown`.
pub async fn run(config: ExecutionConfig, shutdown: CancellationToken) -> Result<(), ExecutionError> {
    start(config, shutdown).await?.wait().await;
    Ok(())
}

/// The durable consumer of SIGNAL, made if missing. A new one starts with the
/// signals that are still young enough to act on (`max_signal_age_ms` back), so a
/// signal published while the service was starting, or before its consumer first
/// existed, is not missed; older history is never read. An existing consumer
/// keeps its place: what it has not acknowledged comes again.
async fn signal_consumer(js: &jetstream::Context, cfg: &ExecutionConfig) -> Result<consumer::PullConsumer, String> {
    // The SIGNAL stream is the signal service's; until it exists there is nothing to read.
    let stream = js.get_stream("SIGNAL").await.map_err(|e| format!("stream SIGNAL: {e}"))?;
    let start_time = time::OffsetDateTime::now_utc() - cfg.max_signal_age();
    stream
        .get_or_create_consumer(
            &cfg.consumer,
            consumer::pull::Config {
                durable_name: Some(cfg.consumer.clone()),
                filter_subject: "signal.>".into(),
                ack_policy: consumer::AckPolicy::Explicit,
                ack_wait: Duration::from_millis(cfg.signal_ack_wait_ms),
                deliver_policy: consumer::DeliverPolicy::ByStartTime { start_time },
                ..Default::default()
            },
        )
        .await
        .map_err(|e| format!("consumer {}: {e}", cfg.consumer))
}

/// Pulls signals through the durable consumer, forever: a pull that stalls (no
/// idle heartbeat) or a consumer that vanished is made again after a pause.
async fn pull_signals(
    js: jetstream::Context,
    cfg: Arc<ExecutionConfig>,
    mut first: Option<consumer::PullConsumer>,
    tx: mpsc::Sender<jetstream::Message>,
    stop: CancellationToken,
) {
    let mut backoff = Duration::from_millis(200);
    loop {
        let attempt = async {
            let consumer = match first.take() {
                Some(c) => c,
                None => signal_consumer(&js, &cfg).await?,
            };
            let mut messages = consumer
                .stream()
                // Short pulls: a pull request outlives a killed process on the
                // server until it expires, and signals handed to it come again
                // only after that and the ack wait. With 5 s pulls a restart
                // costs at most about 10 s, well inside max_signal_age_ms.
                .max_messages_per_batch(16)
                .heartbeat(Duration::from_secs(2))
                .expires(Duration::from_secs(5))
                .messages()
                .await
                .map_err(|e| format!("pull: {e}"))?;
            loop {
                let m = tokio::select! {
                    _ = stop.cancelled() => return Ok(()),
                    m = messages.next() => m,
                };
                match m {
                    Some(Ok(m)) => {
                        if tx.send(m).await.is_err() {
                            return Ok(());
                        }
                    }
                    Some(Err(e)) => return Err(format!("pulling signals: {e}")),
                    None => return Err("the signal consumer ended".into()),
                }
            }
        };
        match attempt.await {
            Ok(()) => return,
            Err(e) => tracing::warn!(error = %e, retry_ms = backoff.as_millis() as u64, "signals: trying again"),
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(backoff) => {}
        }
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

/// Everything the engine reads.
struct Inputs {
    api: mpsc::Receiver<Command>,
    signals: mpsc::Receiver<jetstream::Message>,
    outcomes: mpsc::Receiver<Outcome>,
    /// Market data, the kill switch and (live) the private streams.
    subs: Vec<async_nats::Subscriber>,
}

async fn engine_loop(mut engine: Engine, inputs: Inputs, cfg: Arc<ExecutionConfig>, stop: CancellationToken) {
    let Inputs { mut api, mut signals, mut outcomes, subs } = inputs;
    let mut md = futures::stream::select_all(subs);
    // Reconciliation, rules, and submits waiting on their first answer.
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            biased;
            _ = stop.cancelled() => break,
            Some(o) = outcomes.recv() => engine.on_outcome(o).await,
            Some(cmd) = api.recv() => on_command(&mut engine, cmd).await,
            Some(m) = md.next() => {
                let subject = m.subject.as_str();
                if subject == "exec.control.state" {
                    on_control(&mut engine, &m.payload).await;
                } else if subject.starts_with("account.") {
                    engine.on_account(subject, &m.payload).await;
                } else {
                    engine.on_md(subject, &m.payload).await;
                }
            }
            Some(m) = signals.recv() => on_signal(&mut engine, m, &cfg).await,
            _ = tick.tick() => engine.on_tick().await,
        }
    }
    // No new signal or API command is taken; the answers of orders and cancels
    // already sent are read and journaled (within the grace), so a restart finds
    // them settled instead of having to reconcile them.
    let grace = tokio::time::sleep(Duration::from_millis(cfg.shutdown_grace_ms));
    tokio::pin!(grace);
    while engine.calls_in_flight() > 0 || !outcomes.is_empty() {
        tokio::select! {
            Some(o) = outcomes.recv() => engine.on_outcome(o).await,
            _ = &mut grace => {
                tracing::warn!(in_flight = engine.calls_in_flight(), "shutdown grace over with calls unanswered; the next run reconciles them");
                break;
            }
        }
    }
    engine.flush_events().await;
    tracing::info!("execution engine stopped");
}

async fn on_signal(engine: &mut Engine, m: jetstream::Message, _cfg: &ExecutionConfig) {
    let signal = match sluice_proto::signal::v1::Signal::decode(m.payload.clone()) {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!(subject = %m.subject, error = %e, "a signal that cannot be decoded: terminated, never traded");
            engine.metrics.signal("malformed");
            let _ = m.ack_with(jetstream::AckKind::Term).await;
            return;
        }
    };
    // `execution.submit` continues the signal's trace (its message headers, else
    // its `traceparent` field); the dispatcher calls it leads to run inside it.
    let span = tracing::info_span!("execution.submit", venue = %signal.venue, symbol = %signal.symbol, signal = %signal.id);
    if let Some(r) =
        sluice_service::trace::remote_nats(m.headers.as_ref()).or_else(|| sluice_service::trace::remote_traceparent(&signal.traceparent))
    {
        sluice_service::trace::adopt_remote(&span, &r);
    }
    match engine.on_signal(&signal).instrument(span.clone()).await {
        Ok(outcome) => {
            if let SignalOutcome::Placed(cid) = &outcome {
                // In the submit span: the line carries the order's trace id.
                span.in_scope(
                    || tracing::info!(venue = %signal.venue, symbol = %signal.symbol, client_order_id = %cid, "signal placed an order"),
                );
            }
            if let SignalOutcome::NotYet(why) = &outcome {
                // Right after a start the market data is not in yet: the signal
                // comes again in a moment (and is skipped as stale once too old).
                tracing::debug!(venue = %signal.venue, symbol = %signal.symbol, why, "signal not decidable yet; asked again");
                let _ = m.ack_with(jetstream::AckKind::Nak(Some(Duration::from_millis(250)))).await;
                return;
            }
            if let Err(e) = m.ack().await {
                tracing::warn!(error = %e, "cannot acknowledge a signal; it will come again and be a duplicate");
            }
        }
        // The journal could not be written: leave the signal unacknowledged, so it
        // comes again (and its order id makes that safe).
        Err(e) => tracing::error!(error = %e.message(), "a signal could not be acted on; it will be redelivered"),
    }
}

async fn on_control(engine: &mut Engine, payload: &[u8]) {
    match pb::SetTradingStateRequest::decode(payload) {
        Ok(r) => match trading_state(r.state) {
            Ok(s) => {
                engine.set_state(s, &r.reason, "nats").await;
            }
            Err(e) => tracing::warn!(error = %e.message(), "ignoring a trading state command"),
        },
        Err(e) => tracing::warn!(error = %e, "ignoring a malformed trading state command"),
    }
}

fn trading_state(n: i32) -> Result<TradingState, Status> {
    match pb::TradingState::try_from(n) {
        Ok(pb::TradingState::Active) => Ok(TradingState::Active),
        Ok(pb::TradingState::Reducing) => Ok(TradingState::Reducing),
        Ok(pb::TradingState::Halted) => Ok(TradingState::Halted),
        _ => Err(Status::invalid_argument(format!("state {n} is not ACTIVE, REDUCING or HALTED"))),
    }
}

fn account_filter(s: &str) -> Result<Option<AccountId>, Status> {
    if s.is_empty() { Ok(None) } else { AccountId::parse(s).map(Some).map_err(Status::invalid_argument) }
}

async fn on_command(engine: &mut Engine, cmd: Command) {
    match cmd {
        Command::Submit(r, reply) => match engine.submit(r).await {
            // Live: answered once the exchange has (or `submit_wait_ms` passed).
            Ok(o) => engine.answer_when_settled(o, reply),
            Err(e) => {
                let _ = reply.send(Err(e));
            }
        },
        Command::Cancel(cid, reply) => {
            let _ = reply.send(engine.cancel(&cid).await);
        }
        Command::CancelAll(a, reply) => {
            let _ = reply.send(Ok(engine.cancel_all(a.as_ref()).await));
        }
        Command::Get(cid, reply) => {
            let o = engine.orders.get(&cid).map(crate::engine::Tracked::view).ok_or_else(|| Status::not_found(format!("no order {cid}")));
            let _ = reply.send(o);
        }
        Command::List(r, reply) => {
            let filter = match account_filter(&r.account) {
                Ok(f) => f,
                Err(e) => {
                    let _ = reply.send(Err(e));
                    return;
                }
            };
            let limit = if r.limit == 0 { 100 } else { r.limit as usize };
            let mut orders: Vec<pb::Order> = engine
                .orders
                .values()
                .filter(|t| filter.as_ref().is_none_or(|a| *a == t.account) && (!r.open_only || t.state.status.is_open()))
                .map(crate::engine::Tracked::view)
                .collect();
            orders.sort_by_key(|o| std::cmp::Reverse(o.created_unix_ns));
            orders.truncate(limit);
            let _ = reply.send(Ok(orders));
        }
        Command::Positions(a, reply) => {
            let _ = reply.send(Ok(engine.positions_of(a.as_ref())));
        }
        Command::Pnl(a, reply) => {
            let _ = reply.send(Ok(engine.pnl(a.as_ref())));
        }
        Command::GetState(reply) => {
            let _ = reply.send(Ok(engine.trading.1.clone()));
        }
        Command::SetState(s, reason, by, reply) => {
            let _ = reply.send(Ok(engine.set_state(s, &reason, by).await));
        }
    }
}

/// The gRPC face: each call is a command to the engine.
struct Api {
    tx: mpsc::Sender<Command>,
}

impl Api {
    async fn ask<T>(&self, make: impl FnOnce(Reply<T>) -> Command) -> Result<Response<T>, Status> {
        let (reply, rx) = oneshot::channel();
        self.tx.try_send(make(reply)).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => Status::resource_exhausted("the execution engine is busy; retry"),
            mpsc::error::TrySendError::Closed(_) => Status::unavailable("the execution service is shutting down"),
        })?;
        rx.await.map_err(|_| Status::unavailable("the execution service is shutting down"))?.map(Response::new)
    }
}

#[tonic::async_trait]
impl Execution for Api {
    async fn submit_order(&self, r: Request<pb::SubmitOrderRequest>) -> Result<Response<pb::Order>, Status> {
        let r = r.into_inner();
        self.ask(|reply| Command::Submit(r, reply)).await
    }

    async fn cancel_order(&self, r: Request<pb::CancelOrderRequest>) -> Result<Response<pb::Order>, Status> {
        let cid = r.into_inner().client_order_id;
        if cid.is_empty() {
            return Err(Status::invalid_argument("client_order_id is required"));
        }
        self.ask(|reply| Command::Cancel(cid, reply)).await
    }

    async fn cancel_all(&self, r: Request<pb::CancelAllRequest>) -> Result<Response<pb::CancelAllResponse>, Status> {
        let a = account_filter(&r.get_ref().account)?;
        let orders = self.ask(|reply| Command::CancelAll(a, reply)).await?.into_inner();
        Ok(Response::new(pb::CancelAllResponse { orders }))
    }

    async fn get_order(&self, r: Request<pb::GetOrderRequest>) -> Result<Response<pb::Order>, Status> {
        let cid = r.into_inner().client_order_id;
        self.ask(|reply| Command::Get(cid, reply)).await
    }

    async fn list_orders(&self, r: Request<pb::ListOrdersRequest>) -> Result<Response<pb::ListOrdersResponse>, Status> {
        let r = r.into_inner();
        let orders = self.ask(|reply| Command::List(r, reply)).await?.into_inner();
        Ok(Response::new(pb::ListOrdersResponse { orders }))
    }

    async fn list_positions(&self, r: Request<pb::ListPositionsRequest>) -> Result<Response<pb::ListPositionsResponse>, Status> {
        let a = account_filter(&r.get_ref().account)?;
        let positions = self.ask(|reply| Command::Positions(a, reply)).await?.into_inner();
        Ok(Response::new(pb::ListPositionsResponse { positions }))
    }

    async fn get_pnl(&self, r: Request<pb::GetPnlRequest>) -> Result<Response<pb::PnlReport>, Status> {
        let a = account_filter(&r.get_ref().account)?;
        self.ask(|reply| Command::Pnl(a, reply)).await
    }

    async fn get_trading_state(&self, _r: Request<pb::GetTradingStateRequest>) -> Result<Response<pb::TradingStateChange>, Status> {
        self.ask(Command::GetState).await
    }

    async fn set_trading_state(&self, r: Request<pb::SetTradingStateRequest>) -> Result<Response<pb::TradingStateChange>, Status> {
        let r = r.into_inner();
        let s = trading_state(r.state)?;
        self.ask(|reply| Command::SetState(s, r.reason, "grpc", reply)).await
    }
}
