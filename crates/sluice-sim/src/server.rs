//! The request pipeline every simulated exchange shares, in the order a real
//! exchange's edge works: network jitter, arrival, route, parameters, credentials,
//! injected faults, rate limits, the handler, usage headers. One std mutex per
//! exchange guards its state; nothing awaits while holding it.

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, Method, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use rand::Rng;
use serde::{Deserialize, Serialize};
use sluice_domain::Exchange;
use sluice_rate::{Clock, MonotonicClock};

use crate::accounts::Account;
use crate::config::{ExchangeConfig, SimConfig};
use crate::limits::{BucketStats, Decision, Limits, ScopeKey};
use crate::market::Market;
use crate::venues::{Ctx, Keys, NonceLog, Reply, SimRequest, Venue};

/// A fault to inject into the next matching requests.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum FaultKind {
    /// Answer the exchange's rate-limit error.
    Throttle,
    /// Ban the request's scope for this long (418 / 403 as the exchange does).
    Ban { ms: u64 },
    /// Answer HTTP 500 (the outcome is unknown to the caller).
    ServerError,
    /// Carry the request out, then answer HTTP 500 instead of its result: the
    /// caller cannot know that it was executed.
    ExecutedThenServerError,
    /// Carry the request out, then hold its answer this long (a caller with a
    /// shorter timeout gives up on a request that was executed).
    SlowAnswer { ms: u64 },
}

impl FaultKind {
    /// The request is carried out before the fault shows.
    fn executes(&self) -> bool {
        matches!(self, FaultKind::ExecutedThenServerError | FaultKind::SlowAnswer { .. })
    }
}

/// A fault and how many requests it applies to.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fault {
    pub kind: FaultKind,
    pub count: u32,
    /// Only requests charging this group; any request when unset.
    #[serde(default)]
    pub group: Option<String>,
}

/// What one simulated exchange saw.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VenueStats {
    pub exchange: String,
    pub requests: u64,
    /// Answered with a 2xx status.
    pub ok: u64,
    /// Genuine rate-limit answers (429 and equivalents), injected ones excluded.
    pub rate_limited: u64,
    /// Requests answered with a ban (418 / 403).
    pub banned: u64,
    /// Bans the server imposed after a genuine violation.
    pub bans_imposed: u64,
    pub injected: u64,
    pub auth_failed: u64,
    pub not_found: u64,
    pub bad_request: u64,
    pub buckets: Vec<BucketStats>,
    /// The WebSocket feed.
    #[serde(default)]
    pub feed: crate::feed::FeedStats,
}

/// Mutable state of one simulated exchange.
pub(crate) struct VenueState {
    pub(crate) market: Market,
    pub(crate) accounts: BTreeMap<String, Account>,
    pub(crate) keys: Keys,
    pub(crate) nonces: NonceLog,
    pub(crate) limits: Limits,
    stats: VenueStats,
    faults: VecDeque<Fault>,
    next_id: u64,
}

/// Settings shared by every exchange of one simulator.
pub(crate) struct Shared {
    pub(crate) clock: MonotonicClock,
    /// Arrival jitter bound in microseconds (changeable at run time).
    pub(crate) jitter_us: AtomicU64,
    /// The markets stand still (tests compare books against a still truth).
    pub(crate) paused: std::sync::atomic::AtomicBool,
}

pub(crate) struct VenueServer {
    pub(crate) venue: Box<dyn Venue>,
    pub(crate) shared: Arc<Shared>,
    pub(crate) state: Mutex<VenueState>,
    pub(crate) feeds: crate::feed::Feeds,
}

impl VenueServer {
    pub(crate) fn new(venue: Box<dyn Venue>, cfg: &SimConfig, ex_cfg: &ExchangeConfig, shared: Arc<Shared>) -> Self {
        let exchange = venue.exchange();
        let now_ms = shared.clock.now().as_millis();
        let balances = cfg.balances_on(exchange);
        let accounts = cfg.accounts.iter().filter(|a| a.exchange == exchange).map(|a| (a.name.clone(), Account::new(&balances))).collect();
        let state = VenueState {
            market: Market::new(exchange, &cfg.markets, cfg.seed, now_ms),
            accounts,
            keys: Keys::new(&cfg.accounts, exchange),
            nonces: NonceLog::default(),
            limits: Limits::new(ex_cfg),
            stats: VenueStats { exchange: exchange.to_string(), ..VenueStats::default() },
            faults: VecDeque::new(),
            next_id: 1_000_000,
        };
        let feeds = crate::feed::Feeds::new(ex_cfg.feed.clone(), cfg.feed_backlog, state.keys.clone());
        VenueServer { venue, shared, state: Mutex::new(state), feeds }
    }

    pub(crate) fn lock(&self) -> std::sync::MutexGuard<'_, VenueState> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn exchange(&self) -> Exchange {
        self.venue.exchange()
    }

    pub(crate) fn stats(&self) -> VenueStats {
        let st = self.lock();
        let mut s = st.stats.clone();
        s.buckets = st.limits.stats();
        s.feed = self.feeds.stats();
        s
    }

    pub(crate) fn reset(&self) {
        let mut st = self.lock();
        st.limits.reset();
        st.faults.clear();
        st.stats = VenueStats { exchange: self.exchange().to_string(), ..VenueStats::default() };
        self.feeds.reset();
    }

    /// Checks the credentials of a private WebSocket upgrade the way the REST API
    /// checks a request's; the account name, or the exchange's reason.
    pub(crate) fn authenticate_stream(&self, req: &SimRequest) -> Result<String, String> {
        let mut guard = self.lock();
        let st = &mut *guard;
        self.venue.authenticate(req, &crate::venues::Params::default(), &st.keys, &mut st.nonces).map_err(|reply| {
            st.stats.auth_failed += 1;
            String::from_utf8_lossy(&reply.body).into_owned()
        })
    }

    pub(crate) fn inject_feed(&self, fault: crate::feed::FeedFault) {
        // No session open means nobody to hurt: the send error is not a failure.
        let _ = self.feeds.faults.send(fault);
    }

    pub(crate) fn clear_faults(&self) {
        self.lock().faults.clear();
    }

    pub(crate) fn inject(&self, fault: Fault) {
        self.lock().faults.push_back(fault);
    }

    /// Moves the market one step and hands it to the WebSocket sessions. The step is
    /// broadcast under the lock, so a session's snapshot (taken under the same lock)
    /// is exactly ordered against it.
    pub(crate) fn tick(&self) {
        if self.shared.paused.load(Ordering::Relaxed) {
            return;
        }
        let now_ms = self.shared.clock.now().as_millis();
        let mut st = self.lock();
        let events = st.market.step(now_ms);
        self.spread(&mut st, events, now_ms);
    }

    /// Prints one trade now (even while the markets are paused): resting orders
    /// it reaches fill, and the feeds carry it.
    pub(crate) fn print_trade(&self, native: &str, price: rust_decimal::Decimal, qty: rust_decimal::Decimal) -> bool {
        let now_ms = self.shared.clock.now().as_millis();
        let mut st = self.lock();
        let Some(event) = st.market.print_trade(native, price, qty, now_ms) else { return false };
        self.spread(&mut st, vec![event], now_ms);
        true
    }

    /// Hands a step's events to the accounts (resting orders fill from trades) and
    /// to the WebSocket sessions, under the lock, so every private and public
    /// stream sees them in order.
    fn spread(&self, st: &mut VenueState, events: Vec<crate::market::Event>, now_ms: u64) {
        for e in &events {
            if let crate::market::Event::Trade { native, trade } = e {
                for (name, acct) in st.accounts.iter_mut() {
                    acct.on_trade(&st.market, native, trade.price, trade.qty, now_ms);
                    let changes = acct.take_events();
                    if !changes.is_empty() && self.feeds.private.receiver_count() > 0 {
                        let ev = crate::feed::AccountEvents { account: name.clone(), ts_ms: now_ms, events: changes };
                        let _ = self.feeds.private.send(Arc::new(ev));
                    }
                }
            }
        }
        if self.feeds.ticks.receiver_count() > 0 {
            let tick = crate::feed::Tick::build(&st.market, events, now_ms);
            let _ = self.feeds.ticks.send(std::sync::Arc::new(tick));
        }
    }

    /// The order of `account` with client order id `cid`.
    pub(crate) fn order_by_client(&self, account: &str, cid: &str) -> Option<crate::OrderView> {
        let st = self.lock();
        st.accounts.get(account)?.get(&crate::accounts::OrderKey::Client(cid.to_owned())).map(crate::OrderView::of)
    }

    /// Every order of `account`, as the exchange keeps it.
    pub(crate) fn orders(&self, account: &str) -> Vec<crate::OrderView> {
        let st = self.lock();
        let Some(acct) = st.accounts.get(account) else { return Vec::new() };
        acct.orders().map(crate::OrderView::of).collect()
    }

    /// The whole pipeline for one request, after the network delay.
    fn serve(&self, req: SimRequest) -> Reply {
        let v = &*self.venue;
        let at = self.shared.clock.now();
        let mut guard = self.lock();
        let st = &mut *guard;
        st.stats.requests += 1;
        let Some(ep) = v.endpoint(&req.method, &req.path) else {
            st.stats.not_found += 1;
            return v.not_found(&req);
        };
        let params = match v.params(&req) {
            Ok(p) => p,
            Err(reply) => {
                st.stats.bad_request += 1;
                return reply;
            }
        };
        let charges = v.charges(ep, &params);
        let account = if ep.private {
            match v.authenticate(&req, &params, &st.keys, &mut st.nonces) {
                Ok(name) => Some(name),
                Err(reply) => {
                    st.stats.auth_failed += 1;
                    // The gateway counts IP-scoped limits before it looks at the
                    // signature, so a refused request still spends IP budget.
                    let decision = st.limits.admit(at, req.peer, None, &charges);
                    return refused(v, &mut st.stats, decision, &req).err().unwrap_or(reply);
                }
            }
        } else {
            None
        };
        let fault_at = st.faults.iter().position(|f| f.group.as_ref().is_none_or(|g| charges.iter().any(|c| &c.group == g)));
        // A fault that executes the request shows after it; the others replace it.
        let mut after = None;
        let mut instead = None;
        if let Some(i) = fault_at {
            let fault = st.faults[i].clone();
            if fault.count <= 1 {
                st.faults.remove(i);
            } else {
                st.faults[i].count -= 1;
            }
            st.stats.injected += 1;
            if fault.kind.executes() { after = Some(fault.kind) } else { instead = Some(fault.kind) }
        }
        if let Some(kind) = instead {
            let group = charges.first().map(|c| c.group.clone()).unwrap_or_default();
            let scope = st.limits.group(&group).map_or(crate::config::Scope::Ip, |g| g.scope);
            return match kind {
                FaultKind::Throttle => v.throttled(&group, scope, Duration::from_secs(1), req.now_ms),
                FaultKind::Ban { ms } => {
                    let key = match (scope, &account) {
                        (crate::config::Scope::Account, Some(a)) => ScopeKey::Account(a.clone()),
                        _ => ScopeKey::Ip(req.peer),
                    };
                    let until = st.limits.ban(key, at, Some(Duration::from_millis(ms)));
                    v.banned(scope, until.as_millis(), req.now_ms)
                }
                FaultKind::ServerError | FaultKind::ExecutedThenServerError | FaultKind::SlowAnswer { .. } => v.server_error(),
            };
        }
        let decision = st.limits.admit(at, req.peer, account.as_deref(), &charges);
        let usage = match refused(v, &mut st.stats, decision, &req) {
            Ok(usage) => usage,
            Err(reply) => return reply,
        };
        let mut acct = account.as_ref().and_then(|a| st.accounts.get_mut(a));
        if let Some(a) = acct.as_deref_mut() {
            a.arrived_ns = at.as_nanos();
        }
        let ctx = Ctx { req: &req, params: &params, market: &st.market, account: acct, next_id: &mut st.next_id };
        let mut reply = v.handle(ep, ctx);
        reply.headers.extend(v.usage_headers(&usage));
        // The account's changes go to its private streams under the lock, so they
        // reach every stream in the order they happened.
        if let Some(name) = account
            && let Some(acct) = st.accounts.get_mut(&name)
        {
            let events = acct.take_events();
            if !events.is_empty() && self.feeds.private.receiver_count() > 0 {
                let _ = self.feeds.private.send(Arc::new(crate::feed::AccountEvents { account: name, ts_ms: req.now_ms, events }));
            }
        }
        if (200..300).contains(&reply.status) {
            st.stats.ok += 1;
        }
        match after {
            Some(FaultKind::ExecutedThenServerError) => v.server_error(),
            Some(FaultKind::SlowAnswer { ms }) => Reply { delay_ms: ms, ..reply },
            _ => reply,
        }
    }
}

/// The usage of an admitted request, or the exchange's refusal (rate-limit answer
/// with its usage headers, or ban), counted in the stats.
fn refused(v: &dyn Venue, stats: &mut VenueStats, decision: Decision, req: &SimRequest) -> Result<Vec<crate::limits::Usage>, Reply> {
    match decision {
        Decision::Admitted(usage) => Ok(usage),
        Decision::Throttled { group, scope, retry_after, usage } => {
            stats.rate_limited += 1;
            tracing::debug!(exchange = %v.exchange(), %group, peer = %req.peer, "rate limited");
            let mut reply = v.throttled(&group, scope, retry_after, req.now_ms);
            reply.headers.extend(v.usage_headers(&usage));
            Err(reply)
        }
        Decision::Banned { scope, until, fresh } => {
            stats.banned += 1;
            if fresh {
                stats.bans_imposed += 1;
                tracing::info!(exchange = %v.exchange(), peer = %req.peer, until_ms = until.as_millis(), "ban imposed");
            }
            Err(v.banned(scope, until.as_millis(), req.now_ms))
        }
    }
}

/// The axum handler: every path of an exchange's listener comes here.
pub(crate) async fn handle(
    State(server): State<Arc<VenueServer>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    method: Method,
    uri: Uri,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let jitter_us = server.shared.jitter_us.load(Ordering::Relaxed);
    if jitter_us > 0 {
        // tokio's timer rounds sleeps up to whole milliseconds, so the delay is up to
        // about 1 ms longer than drawn: slightly more jitter, never less.
        let d = rand::rng().random_range(0..=jitter_us);
        tokio::time::sleep(Duration::from_micros(d)).await;
    }
    let req = SimRequest {
        method: method.as_str().to_ascii_uppercase(),
        path: uri.path().to_owned(),
        query: uri.query().unwrap_or("").to_owned(),
        headers: headers.iter().map(|(k, v)| (k.as_str().to_ascii_lowercase(), v.to_str().unwrap_or("").to_owned())).collect(),
        body: body.to_vec(),
        peer: peer.ip(),
        now_ms: server.shared.clock.now().as_millis(),
    };
    let reply = server.serve(req);
    if reply.delay_ms > 0 {
        tokio::time::sleep(Duration::from_millis(reply.delay_ms)).await;
    }
    into_response(reply)
}

fn into_response(r: Reply) -> Response {
    let mut resp = (StatusCode::from_u16(r.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR), r.body).into_response();
    for (k, v) in r.headers {
        if let (Ok(name), Ok(value)) = (HeaderName::try_from(k), HeaderValue::try_from(v)) {
            resp.headers_mut().append(name, value);
        }
    }
    resp
}
