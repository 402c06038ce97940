//! The exchange simulator: Upbit, Bybit v5, Binance spot and OKX v5 REST and
//! public WebSocket feeds as strict servers, each exchange on its own listener so
//! that it looks exactly like the real host.
//!
//! It serves the real paths and response shapes, verifies signatures and answers a
//! bad one with that exchange's own error, enforces each exchange's limits the way
//! that exchange counts them, sends the real usage headers, escalates repeated 429s
//! to bans, can inject arrival jitter and faults, and reports what it saw (requests,
//! 429s, the highest cost in any window) for tests and benchmarks.
//!
//! Its limits come from `config/sim.toml`, the simulator's own truth, apart from the
//! dispatcher's policy file.

mod accounts;
pub mod config;
mod feed;
mod limits;
pub mod market;
mod server;
mod venues;

use rust_decimal::Decimal;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use axum::Router;
use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::serve::ListenerExt;
use serde::{Deserialize, Serialize};
use sluice_domain::Exchange;
use sluice_rate::MonotonicClock;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use config::SimConfig;
pub use feed::{FeedFault, FeedStats};
pub use limits::{BucketStats, WindowStats};
pub use server::{Fault, FaultKind, VenueStats};

/// An order as a simulated exchange keeps it (for tests that count what really
/// reached the exchange).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OrderView {
    pub id: String,
    pub client_id: Option<String>,
    pub native: String,
    pub side: sluice_domain::Side,
    pub price: Option<Decimal>,
    pub qty: Decimal,
    pub filled: Decimal,
    /// "open", "filled" or "canceled".
    pub status: &'static str,
    /// Trade ids of its executions, in order.
    pub trades: Vec<String>,
    /// When the request that placed it reached the exchange (ns since the epoch).
    pub arrived_ns: u64,
}

impl OrderView {
    pub(crate) fn of(o: &accounts::SimOrder) -> OrderView {
        OrderView {
            id: o.id.clone(),
            client_id: o.client_id.clone(),
            native: o.native.clone(),
            side: o.side,
            price: o.price,
            qty: o.qty,
            filled: o.filled,
            status: match o.status {
                accounts::OrderStatus::Open => "open",
                accounts::OrderStatus::Filled => "filled",
                accounts::OrderStatus::Canceled => "canceled",
            },
            trades: o.trades.iter().map(|t| t.id.clone()).collect(),
            arrived_ns: o.created_ns,
        }
    }
}

use server::{Shared, VenueServer};
use venues::Venue;

/// Why the simulator could not start.
#[derive(Debug, thiserror::Error)]
pub enum SimError {
    #[error("cannot listen on {addr} for {what}: {source}")]
    Bind { what: String, addr: SocketAddr, source: std::io::Error },
}

/// What the whole simulator saw.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SimStats {
    pub exchanges: Vec<VenueStats>,
}

impl SimStats {
    pub fn exchange(&self, ex: Exchange) -> Option<&VenueStats> {
        self.exchanges.iter().find(|v| v.exchange == ex.as_str())
    }

    /// Genuine rate-limit answers across all exchanges.
    pub fn rate_limited(&self) -> u64 {
        self.exchanges.iter().map(|v| v.rate_limited).sum()
    }

    /// Every window where more arrived than its limit, as readable lines.
    pub fn violations(&self) -> Vec<String> {
        let mut out = Vec::new();
        for v in &self.exchanges {
            for b in &v.buckets {
                for w in &b.windows {
                    if w.max_seen > w.limit {
                        out.push(format!(
                            "{} {} {}: {} in {} ms, limit {}",
                            v.exchange, b.scope, b.group, w.max_seen, w.period_ms, w.limit
                        ));
                    }
                }
            }
        }
        out
    }
}

fn venue(ex: Exchange) -> Box<dyn Venue> {
    match ex {
        Exchange::Upbit => Box::new(venues::upbit::Upbit::new()),
        Exchange::Bybit => Box::new(venues::bybit::Bybit),
        Exchange::Binance => Box::new(venues::binance::Binance),
        Exchange::Okx => Box::new(venues::okx::Okx),
    }
}

/// A running simulator.
pub struct SimHandle {
    addrs: BTreeMap<Exchange, SocketAddr>,
    admin: SocketAddr,
    shared: Arc<Shared>,
    venues: BTreeMap<Exchange, Arc<VenueServer>>,
    tasks: Vec<JoinHandle<()>>,
}

impl SimHandle {
    /// Where `exchange` listens.
    pub fn addr(&self, exchange: Exchange) -> Option<SocketAddr> {
        self.addrs.get(&exchange).copied()
    }

    /// The base URL to point a client at for `exchange`.
    pub fn base_url(&self, exchange: Exchange) -> String {
        self.addr(exchange).map(|a| format!("http://{a}")).unwrap_or_default()
    }

    /// The control endpoint.
    pub fn admin_addr(&self) -> SocketAddr {
        self.admin
    }

    pub fn stats(&self) -> SimStats {
        SimStats { exchanges: self.venues.values().map(|v| v.stats()).collect() }
    }

    /// Forgets counts, maxima, bans and pending faults.
    pub fn reset(&self) {
        for v in self.venues.values() {
            v.reset();
        }
    }

    /// Sets the arrival jitter bound.
    pub fn set_jitter(&self, bound: Duration) {
        self.shared.jitter_us.store(bound.as_micros() as u64, Ordering::Relaxed);
    }

    /// Queues a fault for the next matching requests to `exchange`.
    pub fn inject(&self, exchange: Exchange, fault: Fault) {
        if let Some(v) = self.venues.get(&exchange) {
            v.inject(fault);
        }
    }

    /// Drops the faults still pending on `exchange` (the exchange is healed).
    pub fn clear_faults(&self, exchange: Exchange) {
        if let Some(v) = self.venues.get(&exchange) {
            v.clear_faults();
        }
    }

    /// Stops or restarts every market's movement (books, trades, feeds).
    pub fn pause_markets(&self, paused: bool) {
        self.shared.paused.store(paused, Ordering::Relaxed);
    }

    /// Injects a fault into every open WebSocket session of `exchange`.
    pub fn inject_feed(&self, exchange: Exchange, fault: FeedFault) {
        if let Some(v) = self.venues.get(&exchange) {
            v.inject_feed(fault);
        }
    }

    /// The simulator's true book of `native` on `exchange` right now: bids high to
    /// low, asks low to high, and the book's update id.
    pub fn book(&self, exchange: Exchange, native: &str) -> Option<(market::Levels, market::Levels, u64)> {
        let v = self.venues.get(&exchange)?;
        let st = v.lock();
        let i = st.market.instrument(native)?;
        let (b, a) = i.book.top(usize::MAX);
        Some((b, a, i.book.update_id))
    }

    /// Prints a trade of `qty` at `price` on `native` now, as another trader's
    /// order would (also while the markets are paused): resting orders it reaches
    /// fill, and the public and private feeds carry it. False for an unknown
    /// exchange or market.
    pub fn print_trade(&self, exchange: Exchange, native: &str, price: Decimal, qty: Decimal) -> bool {
        self.venues.get(&exchange).is_some_and(|v| v.print_trade(native, price, qty))
    }

    /// The order of `account` on `exchange` with client order id `cid`, if any.
    pub fn order_by_client(&self, exchange: Exchange, account: &str, cid: &str) -> Option<OrderView> {
        self.venues.get(&exchange)?.order_by_client(account, cid)
    }

    /// Every order of `account` on `exchange`, as the simulated exchange keeps them.
    pub fn orders(&self, exchange: Exchange, account: &str) -> Vec<OrderView> {
        self.venues.get(&exchange).map(|v| v.orders(account)).unwrap_or_default()
    }

    /// Waits for every task to end (after the shutdown token is cancelled).
    pub async fn join(self) {
        for t in self.tasks {
            let _ = t.await;
        }
    }
}

async fn bind(what: &str, addr: SocketAddr) -> Result<TcpListener, SimError> {
    TcpListener::bind(addr).await.map_err(|source| SimError::Bind { what: what.to_owned(), addr, source })
}

/// Starts every configured exchange and the control endpoint.
pub async fn start(cfg: SimConfig, shutdown: CancellationToken) -> Result<SimHandle, SimError> {
    let shared = Arc::new(Shared { clock: MonotonicClock::new(), jitter_us: (cfg.jitter_ms * 1000).into(), paused: false.into() });
    let mut addrs = BTreeMap::new();
    let mut venues = BTreeMap::new();
    let mut tasks = Vec::new();
    let loopback: SocketAddr = "127.0.0.1:0".parse().expect("literal address");
    for (ex, ex_cfg) in &cfg.exchanges {
        let server = Arc::new(VenueServer::new(venue(*ex), &cfg, ex_cfg, shared.clone()));
        let addr = cfg.listen.get(ex).copied().unwrap_or(loopback);
        let listener = bind(ex.as_str(), addr).await?;
        let bound = listener.local_addr().map_err(|source| SimError::Bind { what: ex.to_string(), addr, source })?;
        let mut app = Router::new();
        for path in feed::paths(*ex) {
            app = app.route(path, get(feed::upgrade));
        }
        let app = app.fallback(server::handle).with_state(server.clone());
        let stop = shutdown.clone();
        // Answers go out at once, as an exchange's edge sends them (no Nagle delay).
        let listener = listener.tap_io(|tcp| {
            let _ = tcp.set_nodelay(true);
        });
        tasks.push(tokio::spawn(async move {
            let served = axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>())
                .with_graceful_shutdown(async move { stop.cancelled().await })
                .await;
            if let Err(e) = served {
                tracing::warn!(error = %e, "simulator listener stopped");
            }
        }));
        let ticker = server.clone();
        let stop = shutdown.clone();
        let every = Duration::from_millis(cfg.tick_ms.max(1));
        tasks.push(tokio::spawn(async move {
            let mut interval = tokio::time::interval(every);
            interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            loop {
                tokio::select! {
                    _ = stop.cancelled() => break,
                    _ = interval.tick() => ticker.tick(),
                }
            }
        }));
        addrs.insert(*ex, bound);
        venues.insert(*ex, server);
    }
    let admin_listener = bind("admin", cfg.admin.unwrap_or(loopback)).await?;
    let admin = admin_listener.local_addr().map_err(|source| SimError::Bind { what: "admin".into(), addr: loopback, source })?;
    let control = Control { venues: venues.clone(), shared: shared.clone(), addrs: addrs.clone() };
    let app = Router::new()
        .route("/stats", get(stats))
        .route("/addrs", get(list_addrs))
        .route("/reset", post(reset))
        .route("/jitter", post(jitter))
        .route("/fault", post(fault).delete(clear_faults))
        .route("/feed-fault", post(feed_fault))
        .with_state(control);
    let stop = shutdown.clone();
    tasks.push(tokio::spawn(async move {
        let _ = axum::serve(admin_listener, app).with_graceful_shutdown(async move { stop.cancelled().await }).await;
    }));
    Ok(SimHandle { addrs, admin, shared, venues, tasks })
}

/// Runs the simulator until `shutdown`.
pub async fn run(cfg: SimConfig, shutdown: CancellationToken) -> Result<(), SimError> {
    let handle = start(cfg, shutdown.clone()).await?;
    for (ex, addr) in &handle.addrs {
        tracing::info!(exchange = %ex, %addr, "simulated exchange listening");
    }
    tracing::info!(addr = %handle.admin, "simulator control endpoint listening");
    shutdown.cancelled().await;
    handle.join().await;
    Ok(())
}

#[derive(Clone)]
struct Control {
    venues: BTreeMap<Exchange, Arc<VenueServer>>,
    shared: Arc<Shared>,
    addrs: BTreeMap<Exchange, SocketAddr>,
}

async fn stats(State(c): State<Control>) -> axum::Json<SimStats> {
    axum::Json(SimStats { exchanges: c.venues.values().map(|v| v.stats()).collect() })
}

async fn list_addrs(State(c): State<Control>) -> axum::Json<BTreeMap<Exchange, SocketAddr>> {
    axum::Json(c.addrs)
}

async fn reset(State(c): State<Control>) -> StatusCode {
    for v in c.venues.values() {
        v.reset();
    }
    StatusCode::NO_CONTENT
}

#[derive(Deserialize)]
struct JitterQuery {
    ms: u64,
}

async fn jitter(State(c): State<Control>, Query(q): Query<JitterQuery>) -> StatusCode {
    c.shared.jitter_us.store(q.ms * 1000, Ordering::Relaxed);
    StatusCode::NO_CONTENT
}

#[derive(Deserialize)]
struct FaultRequest {
    exchange: Exchange,
    #[serde(flatten)]
    fault: Fault,
}

async fn fault(State(c): State<Control>, axum::Json(f): axum::Json<FaultRequest>) -> (StatusCode, String) {
    match c.venues.get(&f.exchange) {
        Some(v) => {
            v.inject(f.fault);
            (StatusCode::NO_CONTENT, String::new())
        }
        None => (StatusCode::NOT_FOUND, format!("{} is not simulated", f.exchange)),
    }
}

#[derive(Deserialize)]
struct ExchangeQuery {
    exchange: Exchange,
}

/// `DELETE /fault?exchange=upbit`: the pending faults are dropped.
async fn clear_faults(State(c): State<Control>, axum::extract::Query(q): axum::extract::Query<ExchangeQuery>) -> (StatusCode, String) {
    match c.venues.get(&q.exchange) {
        Some(v) => {
            v.clear_faults();
            (StatusCode::NO_CONTENT, String::new())
        }
        None => (StatusCode::NOT_FOUND, format!("{} is not simulated", q.exchange)),
    }
}

#[derive(Deserialize)]
struct FeedFaultRequest {
    exchange: Exchange,
    fault: FeedFault,
}

async fn feed_fault(State(c): State<Control>, axum::Json(f): axum::Json<FeedFaultRequest>) -> (StatusCode, String) {
    match c.venues.get(&f.exchange) {
        Some(v) => {
            v.inject_feed(f.fault);
            (StatusCode::NO_CONTENT, String::new())
        }
        None => (StatusCode::NOT_FOUND, format!("{} is not simulated", f.exchange)),
    }
}
