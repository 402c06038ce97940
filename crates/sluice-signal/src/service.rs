//! The running service: market data in from NATS (`md.<venue>.trade|book|depth.
//! <BASE-QUOTE>` of the configured symbols, headlines on `news.<BASE>`), signals
//! out on `signal.<venue>.<BASE-QUOTE>`.
//!
//! Cadence: every symbol on a schedule, and at once when its price moved
//! `move_pct` since its last signal. One signal per symbol is in the making at a
//! time; a trigger meanwhile marks it to be made again right after (latest wins,
//! nothing queues), and all symbols share `concurrency` slots. Work that waited
//! for a slot longer than `max_wait_ms` is skipped and counted: the next trigger
//! brings fresh numbers. Features are taken when the work starts, never earlier.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;
use prost::Message;
use rust_decimal::Decimal;
use sluice_proto::md::v1 as md;
use sluice_proto::signal::v1 as pb;
use tokio::sync::Semaphore;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::config::SignalConfig;
use crate::features::{Top, Window};
use crate::gateway::Gateway;
use crate::output::Verdict;
use crate::router::{Answer, CallRecord, Limits, Router};
use crate::{offline, prompt};

/// Headlines kept per base asset.
const HEADLINES: usize = 10;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SignalLabels {
    venue: String,
    symbol: String,
    action: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CallLabels {
    model: String,
    outcome: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TokenLabels {
    model: String,
    kind: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabels {
    reason: String,
}

/// The service's Prometheus metrics (`sluice_signal_…`).
#[derive(Clone, Default)]
pub(crate) struct Metrics {
    signals: Family<SignalLabels, Counter>,
    calls: Family<CallLabels, Counter>,
    tokens: Family<TokenLabels, Counter>,
    /// Micro-dollars, so the counter stays an exact integer.
    cost_micro_usd: Family<CallLabels, Counter>,
    skipped: Family<ReasonLabels, Counter>,
}

impl Metrics {
    fn register(&self, r: &mut Registry) {
        let r = r.sub_registry_with_prefix("sluice_signal");
        r.register("signals", "Signals published", self.signals.clone());
        r.register("model_calls", "Model calls by outcome (ok or the error class)", self.calls.clone());
        r.register("model_tokens", "Tokens per model, prompt and completion", self.tokens.clone());
        r.register("model_cost_micro_usd", "Money spent per model, in millionths of a US dollar", self.cost_micro_usd.clone());
        r.register("skipped", "Signals not made (stale, too few trades)", self.skipped.clone());
    }

    /// Creates the series of `models` at zero.
    fn declare(&self, models: &[String]) {
        for m in models {
            let _ = self.calls.get_or_create(&CallLabels { model: m.clone(), outcome: "ok".into() });
            let _ = self.cost_micro_usd.get_or_create(&CallLabels { model: m.clone(), outcome: String::new() });
        }
    }

    fn call(&self, c: &CallRecord) {
        let l = CallLabels { model: c.model.clone(), outcome: c.outcome.to_owned() };
        self.calls.get_or_create(&l).inc();
        self.tokens.get_or_create(&TokenLabels { model: c.model.clone(), kind: "prompt".into() }).inc_by(c.prompt_tokens);
        self.tokens.get_or_create(&TokenLabels { model: c.model.clone(), kind: "completion".into() }).inc_by(c.completion_tokens);
        let micro = (c.usd * Decimal::from(1_000_000)).round();
        self.cost_micro_usd
            .get_or_create(&CallLabels { model: c.model.clone(), outcome: String::new() })
            .inc_by(u64::try_from(micro).unwrap_or(0));
    }

    fn skip(&self, reason: &str) {
        self.skipped.get_or_create(&ReasonLabels { reason: reason.into() }).inc();
    }
}

/// Who answers: the offline model, or the LLMs through the gateway.
enum Brain {
    Offline,
    Llm(Arc<Router>),
}

/// One symbol's state.
struct Sym {
    venue: String,
    symbol: String,
    window: Window,
    /// The price at its last signal, for the move trigger.
    signalled_at: Option<Decimal>,
    /// The newest trade's receive time.
    newest_ns: i64,
    /// The newest traced trade's trace context.
    trace: Option<sluice_service::trace::Remote>,
    running: bool,
    /// A trigger that came while running: made again right after.
    again: Option<&'static str>,
}

struct Shared {
    config: SignalConfig,
    nats: async_nats::Client,
    brain: Brain,
    syms: Mutex<HashMap<String, Sym>>,
    /// Base asset to its newest headlines.
    news: Mutex<HashMap<String, VecDeque<String>>>,
    slots: Semaphore,
    metrics: Metrics,
}

fn now_ns() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as i64)
}

fn duration(d: Duration) -> sluice_proto::prost_types::Duration {
    sluice_proto::prost_types::Duration { seconds: d.as_secs() as i64, nanos: d.subsec_nanos() as i32 }
}

/// `venue.BASE-QUOTE`, the key of a symbol and the tail of its subjects.
fn key(venue: &str, symbol: &str) -> String {
    format!("{venue}.{}", symbol.replacen('/', "-", 1))
}

/// The subject of a symbol's signals.
pub fn signal_subject(venue: &str, symbol: &str) -> String {
    format!("signal.{}", key(venue, symbol))
}

/// A fresh W3C trace context for one signal's work.
fn traceparent() -> String {
    let trace = uuid::Uuid::new_v4().simple().to_string();
    let span = uuid::Uuid::new_v4().simple().to_string();
    format!("00-{trace}-{}-01", &span[..16])
}

/// Why the service could not start.
#[derive(Debug, thiserror::Error)]
pub enum SignalError {
    #[error("cannot connect to NATS at {url}: {message}")]
    Nats { url: String, message: String },
    #[error(transparent)]
    Ops(#[from] sluice_service::http::OpsError),
    #[error("dispatcher at {url}: {message}")]
    Dispatcher { url: String, message: String },
}

/// A running service.
pub struct Running {
    pub ops_addr: std::net::SocketAddr,
    tasks: Vec<tokio::task::JoinHandle<()>>,
    nats: async_nats::Client,
}

impl Running {
    /// Until every task has stopped; then what is still buffered goes to NATS.
    pub async fn wait(self) {
        for t in self.tasks {
            let _ = t.await;
        }
        sluice_service::shutdown::flush_nats(&self.nats).await;
    }
}

/// Creates the SIGNAL stream, retried until it works.
async fn ensure_stream(nats: &async_nats::Client, max_age_s: u64) -> Result<(), String> {
    let js = async_nats::jetstream::new(nats.clone());
    let want = async_nats::jetstream::stream::Config {
        name: "SIGNAL".into(),
        subjects: vec!["signal.>".into()],
        max_age: Duration::from_secs(max_age_s),
        max_bytes: 256 << 20,
        storage: async_nats::jetstream::stream::StorageType::File,
        discard: async_nats::jetstream::stream::DiscardPolicy::Old,
        ..Default::default()
    };
    js.get_or_create_stream(want).await.map(|_| ()).map_err(|e| e.to_string())
}

/// Starts the inputs, the schedule and the operations endpoint.
pub async fn start(config: SignalConfig, shutdown: CancellationToken) -> Result<Running, SignalError> {
    let nats = config
        .nats_auth
        .options()
        .await
        .map_err(|e| SignalError::Nats { url: config.nats_url.clone(), message: e.to_string() })?
        .name(format!("sluice-signal {}", config.service))
        .retry_on_initial_connect()
        .connect(config.nats_url.as_str())
        .await
        .map_err(|e| SignalError::Nats { url: config.nats_url.clone(), message: e.to_string() })?;
    let metrics = Metrics::default();
    let mut registry = Registry::default();
    metrics.register(&mut registry);
    // Every model's series exist from the start (at zero), so rates and error
    // ratios over them are defined before the first call.
    // (Offline: the offline model's, which stay at zero: it is not called
    // through the gateway and costs nothing.)
    let models: Vec<String> = if config.api_key.is_some() {
        config.models.iter().map(|m| m.name.clone()).collect()
    } else {
        vec![crate::offline::MODEL.to_owned()]
    };
    metrics.declare(&models);
    let brain = match &config.api_key {
        None => Brain::Offline,
        Some(key) => {
            let gw = Gateway::new(sluice_service::http_client::client(), &config.gateway.base_url, key.clone());
            let m = metrics.clone();
            let router = Router::new(gw, config.models.clone(), config.policy.clone(), Box::new(move |c| m.call(c)))
                .with_limits(Limits::new(config.gateway.requests_per_minute, config.gateway.tokens_per_minute));
            Brain::Llm(Arc::new(router))
        }
    };
    let window = Duration::from_secs(config.window_s);
    let syms = config
        .symbols
        .iter()
        .map(|s| {
            let symbol = s.symbol.to_string();
            let sym = Sym {
                venue: s.venue.clone(),
                symbol: symbol.clone(),
                window: Window::new(window, config.max_trades),
                signalled_at: None,
                newest_ns: 0,
                trace: None,
                running: false,
                again: None,
            };
            (key(&s.venue, &symbol), sym)
        })
        .collect();
    let ready = sluice_service::http::Readiness::default();
    let registry = Arc::new(Mutex::new(registry));
    let (ops_addr, ops) = sluice_service::http::serve(config.ops_listen, registry.clone(), ready.clone(), shutdown.clone()).await?;
    let beat = sluice_service::heartbeat::spawn(
        nats.clone(),
        sluice_service::heartbeat::Identity {
            service: "signal".into(),
            instance: config.service.clone(),
            interval: Duration::from_secs(1),
        },
        registry,
        shutdown.clone(),
    );
    // Subscribed before `start` returns (and the server has them, after the
    // flush): nothing published once the service runs is missed.
    let mut subs = Vec::new();
    for subject in ["md.*.trade.*", "md.*.book.*", "md.*.depth.*", "news.*"] {
        subs.push(nats.subscribe(subject).await.map_err(|e| SignalError::Nats { url: config.nats_url.clone(), message: e.to_string() })?);
    }
    nats.flush().await.map_err(|e| SignalError::Nats { url: config.nats_url.clone(), message: e.to_string() })?;
    let offline = matches!(brain, Brain::Offline);
    let shared = Arc::new(Shared {
        slots: Semaphore::new(config.cadence.concurrency),
        config,
        nats,
        brain,
        syms: Mutex::new(syms),
        news: Mutex::new(HashMap::new()),
        metrics,
    });
    if let Some(url) = shared.config.dispatcher_url.clone() {
        let token = sluice_service::credentials::Bearer::from_file(shared.config.dispatcher_token_file.as_deref())
            .map_err(|e| SignalError::Dispatcher { url: url.clone(), message: e.to_string() })?;
        let channel = tonic::transport::Endpoint::from_shared(url.clone())
            .map_err(|e| SignalError::Dispatcher { url: url.clone(), message: e.to_string() })?
            .connect_lazy();
        let client = sluice_proto::dispatcher::v1::dispatcher_client::DispatcherClient::with_interceptor(channel, token);
        tokio::spawn(backfill(shared.clone(), client));
    }
    let tasks = vec![
        ops,
        beat,
        tokio::spawn(keep_stream(shared.nats.clone(), shared.config.stream_max_age_s, shutdown.clone())),
        tokio::spawn(inputs(shared.clone(), subs, shutdown.clone())),
        tokio::spawn(schedule(shared.clone(), shutdown.clone())),
    ];
    ready.set(true);
    tracing::info!(service = %shared.config.service, %ops_addr, offline, symbols = shared.config.symbols.len(), "signal service running");
    Ok(Running { ops_addr, tasks, nats: shared.nats.clone() })
}

/// Runs until `shutdown`.
pub async fn run(config: SignalConfig, shutdown: CancellationToken) -> Result<(), SignalError> {
    start(config, shutdown).await?.wait().await;
    Ok(())
}

/// Seeds every symbol's window with the last hour of one-minute candles from its
/// exchange, through the dispatcher at backfill priority. A symbol whose
/// candles cannot be read fills from live trades only (logged, never fatal).
type Dispatcher = sluice_proto::dispatcher::v1::dispatcher_client::DispatcherClient<
    tonic::service::interceptor::InterceptedService<tonic::transport::Channel, sluice_service::credentials::Bearer>,
>;

async fn backfill(sh: Arc<Shared>, client: Dispatcher) {
    let minutes = u32::try_from(sh.config.window_s / 60).unwrap_or(60).max(1);
    for s in &sh.config.symbols {
        let Some(mut req) = crate::backfill::request(&s.venue, &s.symbol, minutes) else { continue };
        req.timeout = Some(sluice_proto::prost_types::Duration { seconds: 10, nanos: 0 });
        let answer = client.clone().call(req).await;
        let candles = match answer {
            Ok(r) => {
                let r = r.into_inner();
                crate::backfill::read(&s.venue, u16::try_from(r.status).unwrap_or(0), &r.body)
            }
            Err(e) => Err(format!("{:?}: {}", e.code(), e.message())),
        };
        match candles {
            Ok(c) => {
                let k = key(&s.venue, &s.symbol.to_string());
                if let Some(sym) = sh.syms.lock().unwrap_or_else(|p| p.into_inner()).get_mut(&k) {
                    sym.window.seed(&c);
                }
                tracing::info!(venue = %s.venue, symbol = %s.symbol, candles = c.len(), "window backfilled");
            }
            Err(why) => tracing::warn!(venue = %s.venue, symbol = %s.symbol, %why, "cannot backfill; the window fills from live trades"),
        }
    }
}

/// Reads trades, books and headlines into the windows; fires move triggers.
async fn inputs(sh: Arc<Shared>, subs: Vec<async_nats::Subscriber>, stop: CancellationToken) {
    let mut all = futures::stream::select_all(subs);
    loop {
        let m = tokio::select! {
            _ = stop.cancelled() => return,
            m = all.next() => match m {
                Some(m) => m,
                None => return,
            },
        };
        on_message(&sh, m.subject.as_str(), &m.payload, m.headers.as_ref());
    }
}

fn dec(s: &str) -> Option<Decimal> {
    s.parse().ok()
}

/// One NATS message; what does not decode is skipped (a feature is never guessed).
fn on_message(sh: &Arc<Shared>, subject: &str, payload: &[u8], headers: Option<&async_nats::HeaderMap>) {
    let parts: Vec<&str> = subject.split('.').collect();
    if let ["news", base] = parts.as_slice() {
        let text = String::from_utf8_lossy(payload).trim().chars().take(300).collect::<String>();
        if !text.is_empty() {
            let mut news = sh.news.lock().unwrap_or_else(|p| p.into_inner());
            let q = news.entry(base.to_ascii_uppercase()).or_default();
            q.push_front(text);
            q.truncate(HEADLINES);
        }
        return;
    }
    let ["md", venue, channel, sym] = parts.as_slice() else { return };
    let k = format!("{venue}.{sym}");
    let mut trigger = false;
    {
        let mut syms = sh.syms.lock().unwrap_or_else(|p| p.into_inner());
        let Some(s) = syms.get_mut(&k) else { return };
        match *channel {
            "trade" => {
                let Ok(t) = md::Trade::decode(payload) else { return };
                let (Some(p), Some(q)) = (dec(&t.price), dec(&t.qty)) else { return };
                let ts = t.source.map_or(now_ns(), |s| s.receive_ts_ns);
                s.window.trade(ts, p, q);
                s.newest_ns = s.newest_ns.max(ts);
                // The newest trade's trace (when the collector traces): the next
                // signal of this symbol continues it.
                if let Some(r) = sluice_service::trace::remote_nats(headers) {
                    s.trace = Some(r);
                }
                let pct = sh.config.cadence.move_pct;
                trigger = s.signalled_at.is_some_and(|at| !at.is_zero() && ((p - at) / at).abs() * Decimal::ONE_HUNDRED >= pct);
            }
            "book" => {
                let Ok(b) = md::BookTop::decode(payload) else { return };
                let level = |l: &Option<md::Level>| l.as_ref().and_then(|l| Some((dec(&l.price)?, dec(&l.qty)?)));
                if let (Some(bid), Some(ask)) = (level(&b.bid), level(&b.ask)) {
                    s.window.top(Top { bid, ask, ts_ns: b.source.map_or(0, |s| s.receive_ts_ns) });
                }
            }
            "depth" => {
                let Ok(d) = md::BookDepth::decode(payload) else { return };
                let side = |l: &[md::Level]| l.iter().take(10).filter_map(|l| Some((dec(&l.price)?, dec(&l.qty)?))).collect::<Vec<_>>();
                if d.state == md::BookState::Live as i32 {
                    s.window.depth(&side(&d.bids), &side(&d.asks));
                }
            }
            _ => {}
        }
    }
    if trigger {
        fire(sh, &k, "move");
    }
}

/// Every `every_ms`, every symbol.
async fn schedule(sh: Arc<Shared>, stop: CancellationToken) {
    let mut every = tokio::time::interval(Duration::from_millis(sh.config.cadence.every_ms));
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = every.tick() => {}
        }
        let keys: Vec<String> = sh.syms.lock().unwrap_or_else(|p| p.into_inner()).keys().cloned().collect();
        for k in keys {
            fire(&sh, &k, "schedule");
        }
    }
}

/// Starts a signal for `k`, or marks it to be made again when one is under way.
fn fire(sh: &Arc<Shared>, k: &str, trigger: &'static str) {
    {
        let mut syms = sh.syms.lock().unwrap_or_else(|p| p.into_inner());
        let Some(s) = syms.get_mut(k) else { return };
        if s.running {
            // A move is not hidden behind a later schedule tick.
            s.again = Some(if s.again == Some("move") { "move" } else { trigger });
            return;
        }
        s.running = true;
        // The move trigger fires once per move: the reference is this price now.
        s.signalled_at = s.window.last().map(|(p, _)| p).or(s.signalled_at);
    }
    let (sh, k) = (sh.clone(), k.to_owned());
    tokio::spawn(async move {
        let mut trigger = trigger;
        loop {
            make(&sh, &k, trigger).await;
            let mut syms = sh.syms.lock().unwrap_or_else(|p| p.into_inner());
            let Some(s) = syms.get_mut(&k) else { return };
            match s.again.take() {
                Some(t) => trigger = t,
                None => {
                    s.running = false;
                    return;
                }
            }
        }
    });
}

/// Makes and publishes one signal, as span `signal.decide` under the newest
/// traced trade's span.
async fn make(sh: &Shared, k: &str, trigger: &'static str) {
    // The parent is set before the span starts (it cannot be changed after).
    let parent = sh.syms.lock().unwrap_or_else(|p| p.into_inner()).get(k).and_then(|s| s.trace.clone());
    let span = tracing::info_span!("signal.decide", symbol = %k, trigger);
    if let Some(r) = &parent {
        sluice_service::trace::adopt_remote(&span, r);
    }
    decide(sh, k, trigger, &span).instrument(span.clone()).await;
}

async fn decide(sh: &Shared, k: &str, trigger: &'static str, span: &tracing::Span) {
    let asked = Instant::now();
    let Ok(_slot) = sh.slots.acquire().await else { return };
    if asked.elapsed() > Duration::from_millis(sh.config.cadence.max_wait_ms) {
        sh.metrics.skip("stale");
        return;
    }
    let (venue, symbol, snap, newest_ns) = {
        let syms = sh.syms.lock().unwrap_or_else(|p| p.into_inner());
        let Some(s) = syms.get(k) else { return };
        (s.venue.clone(), s.symbol.clone(), s.window.snapshot(), s.newest_ns)
    };
    let Some(snap) = snap.filter(|s| s.features.trades >= sh.config.cadence.min_trades) else {
        sh.metrics.skip("too_few_trades");
        return;
    };
    let f = snap.features;
    let (verdict, answer, role) = match &sh.brain {
        Brain::Offline => (offline::decide(&f), None, "offline"),
        Brain::Llm(router) => {
            let (a, role) = ask(sh, router, &venue, &symbol, &f).await;
            (a.verdict.clone(), Some(a), role)
        }
    };
    {
        let mut syms = sh.syms.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(s) = syms.get_mut(k) {
            s.signalled_at = Some(snap.last);
        }
    }
    let mut signal = build(&venue, &symbol, verdict, answer.as_ref(), role, f, trigger, newest_ns);
    // Traced: the signal carries this span's context, in its field and in the
    // message's headers (the execution service continues the trace).
    let mut headers = async_nats::HeaderMap::new();
    if let Some(tp) = sluice_service::trace::traceparent(span) {
        signal.traceparent = tp;
        sluice_service::trace::inject_nats(span, &mut headers);
    }
    sh.metrics
        .signals
        .get_or_create(&SignalLabels { venue: venue.clone(), symbol: symbol.clone(), action: signal.action().as_str_name().to_owned() })
        .inc();
    let (subject, payload) = (signal_subject(&venue, &symbol), signal.encode_to_vec().into());
    let sent = if headers.is_empty() {
        sh.nats.publish(subject, payload).await
    } else {
        sh.nats.publish_with_headers(subject, headers, payload).await
    };
    if let Err(e) = sent {
        tracing::warn!(error = %e, %venue, %symbol, "signal not published");
    }
}

/// The LLM path: sentiment when there are headlines, the routine model, and the
/// strong model to confirm a confident BUY or SELL. Costs add up over all of them.
async fn ask(sh: &Shared, router: &Router, venue: &str, symbol: &str, f: &pb::Features) -> (Answer, &'static str) {
    let r = &sh.config.routing;
    let base = symbol.split('/').next().unwrap_or("").to_owned();
    let headlines: Vec<String> =
        sh.news.lock().unwrap_or_else(|p| p.into_inner()).get(&base).map(|q| q.iter().cloned().collect()).unwrap_or_default();
    let mut spent = (0u64, 0u64, Decimal::ZERO, Duration::ZERO, 0u32);
    let mut add = |a: &Answer| {
        spent = (spent.0 + a.prompt_tokens, spent.1 + a.completion_tokens, spent.2 + a.usd, spent.3 + a.latency, spent.4 + a.calls);
        spent
    };
    let mut mood = None;
    if let (Some(model), false) = (&r.sentiment, headlines.is_empty()) {
        let a = router.ask(model, prompt::sentiment(symbol, &headlines)).await;
        add(&a);
        if !a.model.is_empty() {
            mood = Some(format!("{} with confidence {}: {}", a.verdict.action.as_str_name(), a.verdict.confidence, a.verdict.rationale));
        }
    }
    let question = prompt::analysis(venue, symbol, f, mood.as_deref());
    let mut answer = router.ask(&r.routine, question.clone()).await;
    let mut role = "routine";
    let mut total = add(&answer);
    let strong = answer.verdict.action != pb::Action::Hold && answer.verdict.confidence >= r.confirm_above;
    if let (Some(model), true) = (&r.confirm, strong) {
        let confirm = router.ask(model, question).await;
        total = add(&confirm);
        // The strong model's word stands when it gave one.
        if !confirm.model.is_empty() {
            let mut reason = answer.fallback_reason.clone();
            if !confirm.fallback_reason.is_empty() {
                reason = [reason, confirm.fallback_reason.clone()].into_iter().filter(|s| !s.is_empty()).collect::<Vec<_>>().join("; ");
            }
            answer = Answer { fallback_reason: reason, ..confirm };
            role = "confirm";
        }
    }
    (answer.prompt_tokens, answer.completion_tokens, answer.usd, answer.latency, answer.calls) = total;
    (answer, role)
}

#[allow(clippy::too_many_arguments)]
fn build(
    venue: &str,
    symbol: &str,
    v: Verdict,
    a: Option<&Answer>,
    role: &str,
    f: pb::Features,
    trigger: &str,
    newest_ns: i64,
) -> pb::Signal {
    let now = now_ns();
    let tick_to_signal = Duration::from_nanos(u64::try_from(now.saturating_sub(newest_ns)).unwrap_or(0));
    pb::Signal {
        venue: venue.to_owned(),
        symbol: symbol.to_owned(),
        action: v.action as i32,
        confidence: v.confidence,
        horizon: v.horizon,
        rationale: v.rationale,
        key_levels: v.key_levels,
        model: a.map_or_else(|| offline::MODEL.to_owned(), |a| a.model.clone()),
        role: role.to_owned(),
        prompt_version: if a.is_some() { prompt::VERSION.to_owned() } else { offline::MODEL.to_owned() },
        features: Some(f),
        cost: Some(pb::Cost {
            prompt_tokens: a.map_or(0, |a| a.prompt_tokens),
            completion_tokens: a.map_or(0, |a| a.completion_tokens),
            usd: a.map_or(Decimal::ZERO, |a| a.usd).normalize().to_string(),
        }),
        model_latency: Some(duration(a.map_or(Duration::ZERO, |a| a.latency))),
        tick_to_signal: Some(duration(tick_to_signal)),
        fallback_reason: a.map(|a| a.fallback_reason.clone()).unwrap_or_default(),
        trigger: trigger.to_owned(),
        traceparent: traceparent(),
        ts_ns: now,
        id: uuid::Uuid::new_v4().to_string(),
    }
}

/// Keeps the SIGNAL stream in place (retried each minute until it works).
pub(crate) async fn keep_stream(nats: async_nats::Client, max_age_s: u64, stop: CancellationToken) {
    loop {
        match ensure_stream(&nats, max_age_s).await {
            Ok(()) => return,
            Err(e) => tracing::warn!(error = %e, "cannot set up the SIGNAL stream yet; retrying"),
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(5)) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_and_trace_context() {
        assert_eq!(signal_subject("binance", "BTC/USDT"), "signal.binance.BTC-USDT");
        let t = traceparent();
        let parts: Vec<&str> = t.split('-').collect();
        assert_eq!((parts.len(), parts[0], parts[1].len(), parts[2].len(), parts[3]), (4, "00", 32, 16, "01"));
    }
}
