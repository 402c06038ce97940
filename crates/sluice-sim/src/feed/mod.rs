//! The simulated WebSocket feeds: each exchange's public market-data stream on the
//! same listener as its REST API, in that exchange's own frames, keep-alives and
//! limits, fed by the same market the REST snapshots read. So a book built from a
//! REST or WebSocket snapshot plus the deltas after it equals the simulator's book.
//!
//! Every market step becomes one [`Tick`], broadcast under the venue's lock. A
//! session takes its snapshots under the same lock, so it knows exactly which
//! deltas come after its snapshot. A client more than `feed_backlog` steps behind
//! is cut off as a slow consumer, as the exchanges do.
//!
//! Faults ([`FeedFault`]) hit every open session of an exchange: drop the TCP
//! connection without a close frame, go silent without closing, withhold one book
//! message per symbol (a sequence gap), restart (Bybit: a snapshot with `u` = 1),
//! or stall and then deliver the backlog in one burst, or send broken frames.
//!
//! Private streams (Upbit myOrder/myAsset, Bybit order/execution/wallet) log in
//! with the account's keys and carry its [`AccountEvents`], which the REST
//! pipeline broadcasts under the same lock as the change, in order.

mod binance;
mod bybit;
mod bybit_private;
mod okx;
mod upbit;
mod upbit_private;

use std::collections::{BTreeMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{ConnectInfo, State};
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::{IntoResponse, Response};
use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};
use sluice_domain::Exchange;
use sluice_rate::server::{Counting, ServerWindow};
use sluice_rate::{Clock, Time};
use tokio::sync::broadcast;
use tokio::time::Instant;

use crate::accounts::AccountEvent;
use crate::config::{FeedConfig, WindowConfig};
use crate::market::{Candle, Instrument, LevelChange, Levels, Market, Trade};
use crate::server::VenueServer;
use crate::venues::{Keys, SimRequest};

/// A fault to inject into every open WebSocket session of an exchange.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FeedFault {
    /// Close the TCP connection without a close frame.
    Drop,
    /// Send nothing and read nothing (no pongs either) for this long; the socket stays open.
    Silence { ms: u64 },
    /// Withhold the next book message of every symbol: the client sees a sequence gap.
    SkipSequence,
    /// The exchange restarted. Bybit sends a fresh snapshot with `u` = 1 on the open
    /// connection; the others drop the connection.
    Restart,
    /// Hold everything back for this long, then send the backlog at once (a client
    /// that falls more than `feed_backlog` steps behind is cut off).
    Stall { ms: u64 },
    /// Send three broken frames: JSON cut short, bytes that are not UTF-8, and a
    /// trade in the exchange's own shape whose price is not a number. The stream
    /// goes on normally after them.
    Malformed,
}

/// What the WebSocket feeds of one exchange saw.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FeedStats {
    /// Connections accepted.
    pub connections: u64,
    /// Connections refused because the per-IP connect limit was exceeded.
    pub refused: u64,
    /// Connections closed for breaking a per-connection message or subscribe limit.
    pub rate_limited: u64,
    /// Connections closed as slow consumers.
    pub slow_consumers: u64,
    /// Connections closed for silence (no pong, idle).
    pub idle_closed: u64,
    pub frames_sent: u64,
    /// Client messages answered with the exchange's error (bad JSON, unknown topic...).
    pub bad_requests: u64,
}

/// The best levels and day statistics of an instrument after a step.
#[derive(Debug, Clone)]
pub(crate) struct Stats {
    pub last: Decimal,
    pub prev_close: Decimal,
    pub open: Decimal,
    pub high: Decimal,
    pub low: Decimal,
    pub volume: Decimal,
    pub quote_volume: Decimal,
    pub bid: Option<(Decimal, Decimal)>,
    pub ask: Option<(Decimal, Decimal)>,
}

impl Stats {
    pub(crate) fn of(i: &Instrument) -> Stats {
        Stats {
            last: i.last_price(),
            prev_close: i.prev_close,
            open: i.day_open(),
            high: i.day_high(),
            low: i.day_low(),
            volume: i.day_volume(),
            quote_volume: i.day_quote_volume(),
            bid: i.book.best_bid(),
            ask: i.book.best_ask(),
        }
    }
}

/// One instrument's part of a market step.
#[derive(Debug, Clone)]
pub(crate) struct InstTick {
    pub native: String,
    /// Level changes in update-id order; empty when the book did not change.
    pub changes: Vec<LevelChange>,
    /// The book's step counter and update id after this step.
    pub seq: u64,
    pub update_id: u64,
    pub trades: Vec<Trade>,
    pub stats: Stats,
    /// The best levels after the step (Upbit sends whole books).
    pub top: (Levels, Levels),
    pub candle: Option<Candle>,
}

/// One market step, as every session receives it.
#[derive(Debug)]
pub(crate) struct Tick {
    pub ts_ms: u64,
    pub insts: Vec<InstTick>,
}

/// Levels of the book sent whole (Upbit's orderbook, Bybit's depth 1 and snapshots).
pub(crate) const TOP_LEVELS: usize = 50;

impl Tick {
    pub(crate) fn build(market: &Market, events: Vec<crate::market::Event>, ts_ms: u64) -> Tick {
        let mut by: BTreeMap<String, (Vec<LevelChange>, Vec<Trade>)> = BTreeMap::new();
        for e in events {
            match e {
                crate::market::Event::Book { native, changes } => by.entry(native).or_default().0.extend(changes),
                crate::market::Event::Trade { native, trade } => by.entry(native).or_default().1.push(trade),
            }
        }
        let insts = market
            .instruments()
            .map(|i| {
                let (changes, trades) = by.remove(&i.native).unwrap_or_default();
                InstTick {
                    native: i.native.clone(),
                    changes,
                    seq: i.book.seq,
                    update_id: i.book.update_id,
                    trades,
                    stats: Stats::of(i),
                    top: i.book.top(TOP_LEVELS),
                    candle: i.candles.back().cloned(),
                }
            })
            .collect();
        Tick { ts_ms, insts }
    }
}

/// An account's changes from one request, for its private streams.
#[derive(Debug)]
pub(crate) struct AccountEvents {
    pub account: String,
    pub ts_ms: u64,
    pub events: Vec<AccountEvent>,
}

/// The feeds' shared state inside a [`VenueServer`].
pub(crate) struct Feeds {
    pub(crate) ticks: broadcast::Sender<Arc<Tick>>,
    pub(crate) private: broadcast::Sender<Arc<AccountEvents>>,
    /// The exchange's API keys, for private streams that log in with a message.
    keys: Keys,
    pub(crate) faults: broadcast::Sender<FeedFault>,
    pub(crate) config: FeedConfig,
    connects: std::sync::Mutex<BTreeMap<IpAddr, Vec<ServerWindow>>>,
    stats: std::sync::Mutex<FeedStats>,
    next_conn: AtomicU64,
}

fn windows(cfg: &[WindowConfig]) -> Vec<ServerWindow> {
    cfg.iter().map(|w| ServerWindow::new(w.limit, w.period(), Counting::Sliding)).collect()
}

/// Takes one from every window, or none when one of them is full.
fn take(ws: &mut [ServerWindow], at: Time) -> bool {
    if ws.iter_mut().all(|w| w.fits(at, 1)) {
        ws.iter_mut().for_each(|w| w.take(at, 1));
        true
    } else {
        false
    }
}

impl Feeds {
    pub(crate) fn new(config: FeedConfig, backlog: usize, keys: Keys) -> Feeds {
        Feeds {
            ticks: broadcast::channel(backlog.max(1)).0,
            private: broadcast::channel(backlog.max(1)).0,
            keys,
            faults: broadcast::channel(16).0,
            config,
            connects: std::sync::Mutex::new(BTreeMap::new()),
            stats: std::sync::Mutex::new(FeedStats::default()),
            next_conn: AtomicU64::new(1),
        }
    }

    pub(crate) fn stats(&self) -> FeedStats {
        self.stats.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    pub(crate) fn reset(&self) {
        *self.stats.lock().unwrap_or_else(|p| p.into_inner()) = FeedStats::default();
        self.connects.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }

    fn count(&self, f: impl FnOnce(&mut FeedStats)) {
        f(&mut self.stats.lock().unwrap_or_else(|p| p.into_inner()));
    }

    fn admit_connect(&self, ip: IpAddr, at: Time) -> bool {
        let mut all = self.connects.lock().unwrap_or_else(|p| p.into_inner());
        let ws = all.entry(ip).or_insert_with(|| windows(&self.config.connect));
        take(ws, at)
    }
}

/// The WebSocket paths an exchange serves.
pub(crate) fn paths(exchange: Exchange) -> &'static [&'static str] {
    match exchange {
        Exchange::Upbit => &["/websocket/v1", UPBIT_PRIVATE],
        Exchange::Bybit => &["/v5/public/spot", "/v5/public/linear", "/v5/private"],
        Exchange::Binance => &["/ws", "/ws/{*streams}", "/stream"],
        Exchange::Okx => &["/ws/v5/public"],
    }
}

/// Upbit's private endpoint, authenticated by the JWT in the upgrade request.
const UPBIT_PRIVATE: &str = "/websocket/v1/private";

/// What a session gives its exchange's protocol to work with.
pub(crate) struct Cx<'a> {
    pub out: &'a mut Vec<Message>,
    pub now_ms: u64,
    pub conn_id: u64,
    /// Set to close the connection (after what is in `out`) with this code and reason.
    pub close: Option<(u16, String)>,
    /// Natives whose next book message is withheld (the skip-sequence fault).
    pub withhold: &'a mut HashSet<String>,
    pub bad_requests: u64,
    pub config: &'a FeedConfig,
    pub keys: &'a Keys,
}

impl Cx<'_> {
    pub(crate) fn text(&mut self, s: String) {
        self.out.push(Message::Text(s.into()));
    }

    pub(crate) fn json(&mut self, v: &serde_json::Value) {
        self.text(v.to_string());
    }

    /// True once per native while the skip-sequence fault is armed.
    pub(crate) fn withheld(&mut self, native: &str) -> bool {
        self.withhold.remove(native)
    }
}

/// One exchange's WebSocket protocol on one connection.
pub(crate) trait Protocol: Send {
    /// Subscriptions named in the URL (Binance); an error refuses the upgrade.
    fn url_streams(&mut self, _path: &str, _query: &str, _market: &Market) -> Result<(), String> {
        Ok(())
    }
    /// The connection is open: a first frame or a refusal (a failed login).
    fn on_open(&mut self, _cx: &mut Cx<'_>) {}
    /// Reads account events instead of market steps.
    fn private(&self) -> bool {
        false
    }
    /// One request's changes to an account (private streams only).
    fn on_account(&mut self, _ev: &AccountEvents, _cx: &mut Cx<'_>) {}
    /// A text message from the client (the market is locked, for snapshots).
    fn on_text(&mut self, text: &str, market: &Market, cx: &mut Cx<'_>);
    /// Frames for one market step.
    fn on_tick(&mut self, tick: &Tick, cx: &mut Cx<'_>);
    /// The exchange restarted; false when the protocol drops the connection instead.
    fn restart(&mut self, _market: &Market, _cx: &mut Cx<'_>) -> bool {
        false
    }
    /// Symbols with a book subscription (the skip-sequence fault withholds them).
    fn book_symbols(&self) -> Vec<String>;
    /// Sends frames as binary (Upbit sends its JSON in binary frames).
    fn binary(&self) -> bool {
        false
    }
    /// A trade in this exchange's shape whose price is not a number (the malformed
    /// fault).
    fn bad_trade(&self) -> String;
}

/// The malformed fault's frames, in the protocol's framing.
fn malformed(proto: &dyn Protocol) -> Vec<Message> {
    vec![
        Message::Text(r#"{"topic":"orderbook.50.BTCUSDT","type":"delta","data":{"b":[["6"#.into()),
        Message::Binary(axum::body::Bytes::from_static(&[0xff, 0xfe, 0x00, 0x7b])),
        Message::Text(proto.bad_trade().into()),
    ]
}

/// The protocol of `path`; Upbit's private one with the outcome of its login.
fn protocol(exchange: Exchange, path: &str, login: Option<Result<String, String>>) -> Box<dyn Protocol> {
    match exchange {
        Exchange::Upbit => match login {
            Some(login) => Box::new(upbit_private::UpbitPrivate::new(login)),
            None => Box::new(upbit::Upbit::default()),
        },
        Exchange::Bybit if path == "/v5/private" => Box::new(bybit_private::BybitPrivate::default()),
        Exchange::Bybit => Box::new(bybit::Bybit::new(path.ends_with("linear"))),
        Exchange::Binance => Box::new(binance::Binance::new(path.starts_with("/stream"))),
        Exchange::Okx => Box::new(okx::Okx::default()),
    }
}

/// The axum handler for every WebSocket path.
pub(crate) async fn upgrade(
    State(server): State<Arc<VenueServer>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    uri: Uri,
    headers: HeaderMap,
    ws: WebSocketUpgrade,
) -> Response {
    let feeds = &server.feeds;
    let exchange = server.exchange();
    if !feeds.admit_connect(peer.ip(), server.shared.clock.now()) {
        feeds.count(|s| s.refused += 1);
        tracing::debug!(%exchange, %peer, "websocket connect over the limit: refused");
        return (StatusCode::TOO_MANY_REQUESTS, "Too many requests").into_response();
    }
    // Upbit checks the JWT of the upgrade request; the refusal comes as an error
    // frame on the opened socket.
    let login = (exchange == Exchange::Upbit && uri.path() == UPBIT_PRIVATE).then(|| {
        let req = SimRequest {
            method: "GET".into(),
            path: uri.path().to_owned(),
            query: String::new(),
            headers: headers.iter().map(|(k, v)| (k.as_str().to_ascii_lowercase(), v.to_str().unwrap_or("").to_owned())).collect(),
            body: Vec::new(),
            peer: peer.ip(),
            now_ms: server.shared.clock.now().as_millis(),
        };
        server.authenticate_stream(&req)
    });
    let mut proto = protocol(exchange, uri.path(), login);
    {
        let st = server.lock();
        if let Err(why) = proto.url_streams(uri.path(), uri.query().unwrap_or(""), &st.market) {
            feeds.count(|s| s.bad_requests += 1);
            return (StatusCode::BAD_REQUEST, why).into_response();
        }
    }
    feeds.count(|s| s.connections += 1);
    let conn_id = feeds.next_conn.fetch_add(1, Ordering::Relaxed);
    ws.on_upgrade(move |socket| session(server, proto, socket, conn_id))
}

/// Why a session ended.
enum End {
    ClientGone,
    Dropped,
    Close(u16, String),
}

async fn session(server: Arc<VenueServer>, mut proto: Box<dyn Protocol>, mut socket: WebSocket, conn_id: u64) {
    let feeds = &server.feeds;
    let cfg = feeds.config.clone();
    let private = proto.private();
    let mut ticks = (!private).then(|| feeds.ticks.subscribe());
    let mut accounts = private.then(|| feeds.private.subscribe());
    let mut faults = feeds.faults.subscribe();
    let started = Instant::now();
    let mut messages = windows(&cfg.messages);
    let mut last_in = Instant::now();
    let mut last_out = Instant::now();
    let mut last_pong = Instant::now();
    let mut silent_until: Option<Instant> = None;
    let mut stalled_until: Option<Instant> = None;
    let mut withhold = HashSet::new();
    let mut out = Vec::new();
    let mut housekeeping = tokio::time::interval(Duration::from_millis(100));
    let mut next_ping = cfg.ping_every_ms.map(|ms| Instant::now() + Duration::from_millis(ms));
    let mut refused = {
        let mut cx = Cx {
            out: &mut out,
            now_ms: server.shared.clock.now().as_millis(),
            conn_id,
            close: None,
            withhold: &mut withhold,
            bad_requests: 0,
            config: &cfg,
            keys: &feeds.keys,
        };
        proto.on_open(&mut cx);
        cx.close.take()
    };
    let end = 'run: loop {
        let mut close = refused.take();
        let mut bad = 0;
        {
            let mut cx = Cx {
                out: &mut out,
                now_ms: server.shared.clock.now().as_millis(),
                conn_id,
                close: None,
                withhold: &mut withhold,
                bad_requests: 0,
                config: &cfg,
                keys: &feeds.keys,
            };
            let silent = silent_until.is_some();
            let stalled = stalled_until.is_some();
            tokio::select! {
                _ = tokio::time::sleep_until(silent_until.unwrap_or(started)), if silent => silent_until = None,
                _ = tokio::time::sleep_until(stalled_until.unwrap_or(started)), if stalled => stalled_until = None,
                m = socket.recv(), if !silent => match m {
                    None | Some(Err(_)) | Some(Ok(Message::Close(_))) => break 'run End::ClientGone,
                    Some(Ok(m)) => {
                        last_in = Instant::now();
                        if !take(&mut messages, server.shared.clock.now()) {
                            feeds.count(|s| s.rate_limited += 1);
                            break 'run End::Close(1008, "too many messages".into());
                        }
                        match m {
                            Message::Text(t) => {
                                let st = server.lock();
                                proto.on_text(t.as_str(), &st.market, &mut cx);
                            }
                            Message::Binary(b) => match std::str::from_utf8(&b) {
                                Ok(t) => {
                                    let st = server.lock();
                                    proto.on_text(t, &st.market, &mut cx);
                                }
                                Err(_) => cx.close = Some((1003, "binary frames are not understood".into())),
                            },
                            Message::Pong(_) => last_pong = Instant::now(),
                            _ => {}
                        }
                    }
                },
                t = recv(&mut ticks), if ticks.is_some() && !silent && !stalled => match t {
                    Ok(tick) => proto.on_tick(&tick, &mut cx),
                    Err(e) => break 'run behind(feeds, e),
                },
                e = recv(&mut accounts), if accounts.is_some() && !silent && !stalled => match e {
                    Ok(ev) => proto.on_account(&ev, &mut cx),
                    Err(e) => break 'run behind(feeds, e),
                },
                f = faults.recv() => match f {
                    Ok(FeedFault::Drop) => break 'run End::Dropped,
                    Ok(FeedFault::Silence { ms }) => silent_until = Some(Instant::now() + Duration::from_millis(ms)),
                    Ok(FeedFault::Stall { ms }) => stalled_until = Some(Instant::now() + Duration::from_millis(ms)),
                    Ok(FeedFault::SkipSequence) => cx.withhold.extend(proto.book_symbols()),
                    Ok(FeedFault::Malformed) => cx.out.extend(malformed(&*proto)),
                    Ok(FeedFault::Restart) => {
                        let st = server.lock();
                        if !proto.restart(&st.market, &mut cx) {
                            break 'run End::Dropped;
                        }
                    }
                    Err(_) => {}
                },
                _ = housekeeping.tick(), if !silent => {
                    let now = Instant::now();
                    if let Some(ms) = cfg.idle_close_ms
                        && now.duration_since(last_in.max(last_out)) > Duration::from_millis(ms)
                    {
                        feeds.count(|s| s.idle_closed += 1);
                        break 'run End::Close(1000, "idle".into());
                    }
                    if let Some(ms) = cfg.pong_within_ms
                        && next_ping.is_some()
                        && now.duration_since(last_pong.max(started)) > Duration::from_millis(ms + cfg.ping_every_ms.unwrap_or(0))
                    {
                        feeds.count(|s| s.idle_closed += 1);
                        break 'run End::Close(1000, "no pong".into());
                    }
                    if let Some(at) = next_ping
                        && now >= at
                    {
                        cx.out.push(Message::Ping(Vec::new().into()));
                        next_ping = cfg.ping_every_ms.map(|ms| now + Duration::from_millis(ms));
                    }
                    if let Some(ms) = cfg.max_age_ms
                        && now.duration_since(started) > Duration::from_millis(ms)
                    {
                        break 'run End::Close(1000, "connection reached its maximum age".into());
                    }
                }
            }
            close = close.or(cx.close.take());
            bad += cx.bad_requests;
        }
        if bad > 0 {
            feeds.count(|s| s.bad_requests += bad);
        }
        let n = out.len() as u64;
        for m in out.drain(..) {
            let m = match m {
                Message::Text(t) if proto.binary() => Message::Binary(axum::body::Bytes::from(t.as_str().as_bytes().to_vec())),
                m => m,
            };
            if socket.send(m).await.is_err() {
                break 'run End::ClientGone;
            }
        }
        if n > 0 {
            last_out = Instant::now();
            feeds.count(|s| s.frames_sent += n);
        }
        if let Some((code, reason)) = close {
            break End::Close(code, reason);
        }
    };
    match end {
        End::Close(code, reason) => {
            let _ = socket.send(Message::Close(Some(CloseFrame { code, reason: reason.into() }))).await;
        }
        // Dropping the socket ends the TCP connection with no close frame.
        End::Dropped | End::ClientGone => {}
    }
}

/// The next message of an optional receiver (the select guard checks it is there).
async fn recv<T: Clone>(rx: &mut Option<broadcast::Receiver<T>>) -> Result<T, broadcast::error::RecvError> {
    match rx {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

/// How a session ends when its broadcast failed: a lagging client is a slow consumer.
fn behind(feeds: &Feeds, e: broadcast::error::RecvError) -> End {
    match e {
        broadcast::error::RecvError::Lagged(_) => {
            feeds.count(|s| s.slow_consumers += 1);
            End::Close(1008, "slow consumer: too far behind".into())
        }
        broadcast::error::RecvError::Closed => End::Close(1001, "server shutting down".into()),
    }
}

/// Milliseconds as Upbit and Bybit write dates ("2026-11-22", "13:04:05").
pub(crate) fn utc_date_time(ms: u64) -> (String, String) {
    let t = time::OffsetDateTime::from_unix_timestamp((ms / 1000) as i64).unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    let date = format!("{:04}{:02}{:02}", t.year(), t.month() as u8, t.day());
    let tm = format!("{:02}{:02}{:02}", t.hour(), t.minute(), t.second());
    (date, tm)
}
