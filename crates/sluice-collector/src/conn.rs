//! One WebSocket connection's life, forever: take a connect token, connect,
//! subscribe (each request on a token), read, keep alive, watch for silence, mend
//! books, and on any failure reconnect after a capped, jittered exponential backoff
//! and subscribe to everything again.

use std::sync::Arc;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use rand::Rng;
use sluice_domain::Exchange;
use sluice_proto::dispatcher::v1::dispatcher_client::DispatcherClient;
use sluice_proto::dispatcher::v1::{AcquireRequest, CallRequest, Priority};
use tokio::sync::mpsc;
use tokio::time::{Instant, sleep};
use tokio_tungstenite::tungstenite::Message;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use crate::config::{Channel, CollectorConfig, FeedConfig};
use crate::event::Parsed;
use crate::health::{ConnHealth, Health};
use crate::pipeline::{Need, Output, Pipeline};
use crate::protocol;

/// The dispatcher, if one is configured: tokens and REST snapshots.
pub(crate) type Dispatcher = Option<
    DispatcherClient<tonic::service::interceptor::InterceptedService<tonic::transport::Channel, sluice_service::credentials::Bearer>>,
>;

pub(crate) fn now_ns() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as i64)
}

pub(crate) fn pb_duration(d: Duration) -> sluice_proto::prost_types::Duration {
    sluice_proto::prost_types::Duration { seconds: d.as_secs() as i64, nanos: d.subsec_nanos() as i32 }
}

/// Takes one token of `group` from the dispatcher; without a dispatcher, at once.
pub(crate) async fn token(d: &Dispatcher, exchange: Exchange, group: &str, connection: &str) -> Result<(), String> {
    let Some(client) = d else { return Ok(()) };
    let req = AcquireRequest {
        exchange: exchange.as_str().to_owned(),
        group: group.to_owned(),
        connection: connection.to_owned(),
        cost: 1,
        priority: Priority::MarketData as i32,
        timeout: Some(pb_duration(Duration::from_secs(30))),
        ..AcquireRequest::default()
    };
    client.clone().acquire(req).await.map(|_| ()).map_err(|s| format!("dispatcher refused a {group} token: {}", s.message()))
}

/// Binance's REST depth snapshot through the dispatcher.
/// A REST depth snapshot: last update id, bids, asks; or why it failed.
type SnapshotResult = Result<(u64, crate::event::Levels, crate::event::Levels), String>;

async fn rest_snapshot(d: Dispatcher, native: String, limit: u32) -> SnapshotResult {
    let Some(mut client) = d else { return Err("no dispatcher configured for REST snapshots".into()) };
    let req = CallRequest {
        exchange: "binance".into(),
        method: "GET".into(),
        path: "/api/v3/depth".into(),
        query: format!("symbol={native}&limit={limit}"),
        priority: Priority::MarketData as i32,
        timeout: Some(pb_duration(Duration::from_secs(30))),
        ..CallRequest::default()
    };
    let r = client.call(req).await.map_err(|s| format!("depth snapshot: {}", s.message()))?.into_inner();
    if r.status != 200 {
        return Err(format!(
            "depth snapshot: HTTP {} {}",
            r.status,
            String::from_utf8_lossy(&r.body).chars().take(200).collect::<String>()
        ));
    }
    #[derive(serde::Deserialize)]
    struct Depth<'a> {
        #[serde(rename = "lastUpdateId")]
        last: u64,
        #[serde(borrow)]
        bids: Vec<Vec<&'a str>>,
        #[serde(borrow)]
        asks: Vec<Vec<&'a str>>,
    }
    let d: Depth = serde_json::from_slice(&r.body).map_err(|e| format!("depth snapshot: {e}"))?;
    let bids = crate::event::levels("binance", &d.bids).map_err(|e| e.to_string())?;
    let asks = crate::event::levels("binance", &d.asks).map_err(|e| e.to_string())?;
    Ok((d.last, bids, asks))
}

/// How long shutdown waits for a close handshake or for NATS to take what is queued.
pub(crate) const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);

/// Why a connection ended.
#[derive(Debug)]
pub(crate) enum Ended {
    Stopped,
    Failed(String),
}

/// Everything one connection task needs.
pub(crate) struct Conn {
    pub(crate) feed: FeedConfig,
    pub(crate) natives: Vec<String>,
    pub(crate) config: Arc<CollectorConfig>,
    pub(crate) dispatcher: Dispatcher,
    pub(crate) nats: async_nats::Client,
    pub(crate) health: Arc<Health>,
    pub(crate) id: String,
}

impl Conn {
    /// Runs until `stop`: reconnecting forever with backoff.
    pub(crate) async fn run(self, stop: CancellationToken) {
        let venue = self.feed.venue();
        let conn_health = self.health.connection(&self.id, &venue);
        let mut pipeline = Pipeline::new(&self.feed, &self.config.collector, self.config.depth_levels, self.config.depth_interval_ms);
        let (pub_tx, pub_rx) = mpsc::channel::<Output>(self.config.publish_queue);
        let publisher = tokio::spawn(publish(self.nats.clone(), pub_rx));
        let mut attempt: u32 = 0;
        loop {
            let started = Instant::now();
            // The session watches `stop` while it reads; this also covers its
            // token, connect and subscribe steps.
            let ended = tokio::select! {
                e = self.session(&mut pipeline, &pub_tx, &conn_health, &stop) => e,
                _ = stop.cancelled() => Ended::Stopped,
            };
            conn_health.set_connected(false);
            self.health.record(&self.id, pipeline.streams());
            let why = match ended {
                Ended::Stopped => break,
                Ended::Failed(why) => why,
            };
            let wait = backoff(&self.config, &mut attempt, started);
            conn_health.reconnected();
            tracing::warn!(%venue, conn = %self.id, reason = %why, wait_ms = wait.as_millis() as u64, "connection lost; reconnecting");
            let mut out = Vec::new();
            pipeline.reset_books(now_ns(), &mut out);
            for o in out {
                let _ = pub_tx.try_send(o);
            }
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = sleep(wait) => {}
            }
        }
        drop(pub_tx);
        // NATS may be gone too at shutdown: drain for a moment, never hang.
        let mut publisher = publisher;
        if tokio::time::timeout(SHUTDOWN_GRACE, &mut publisher).await.is_err() {
            publisher.abort();
            tracing::warn!(%venue, "NATS did not take the last messages before shutdown; they were not published");
        }
    }

    /// Fetches Binance's REST snapshot of `native` after `wait`; the answer comes
    /// back to the session through `tx`.
    fn fetch_snapshot(&self, native: String, wait: Duration, tx: &mpsc::Sender<(String, SnapshotResult)>) {
        let (d, tx, limit) = (self.dispatcher.clone(), tx.clone(), self.config.binance_snapshot_limit);
        tokio::spawn(async move {
            sleep(wait).await;
            let r = rest_snapshot(d, native.clone(), limit).await;
            let _ = tx.send((native, r)).await;
        });
    }

    /// Takes a connect token, connects and subscribes to everything: a new link.
    async fn open(&self) -> Result<Link, String> {
        let ex = self.feed.exchange;
        let conn_id = uuid::Uuid::new_v4().to_string();
        token(&self.dispatcher, ex, protocol::CONNECT_GROUP, &conn_id).await?;
        let connect = tokio::time::timeout(Duration::from_secs(10), tokio_tungstenite::connect_async(self.feed.url.as_str()));
        let ws = match connect.await {
            Ok(Ok((ws, _))) => ws,
            Ok(Err(e)) => return Err(format!("connect {}: {e}", self.feed.url)),
            Err(_) => return Err(format!("connect {}: timed out", self.feed.url)),
        };
        let mut link = Link { ws, conn_id, opened: Instant::now(), requests: 0, acks: 0, data: 0, acked: protocol::acknowledges(ex) };
        for req in protocol::subscribe(&self.feed, &self.natives) {
            link.send(self, req).await.map_err(|e| format!("subscribe: {e}"))?;
            link.requests += 1;
        }
        Ok(link)
    }

    /// One frame into the pipeline; true when it was an answer to our requests.
    fn on_frame(&self, msg: &Message, recv: i64, pipeline: &mut Pipeline, st: &mut Scratch, health: &ConnHealth) -> Frame {
        // Parsed in place from the frame's bytes: no copy per frame.
        let text = match msg {
            Message::Text(t) => t.as_str(),
            Message::Binary(b) => match std::str::from_utf8(b) {
                Ok(t) => t,
                Err(_) => {
                    health.malformed("a binary frame that is not UTF-8");
                    return Frame::Other;
                }
            },
            _ => return Frame::Other,
        };
        match crate::parse::parse(self.feed.exchange, text) {
            Ok(Parsed::Data(mds)) => {
                for md in mds {
                    pipeline.on_md(md, recv, &mut st.out, &mut st.needs);
                }
                Frame::Data
            }
            Ok(Parsed::Rejected(why)) => {
                tracing::warn!(venue = %self.feed.venue(), %why, "the exchange refused a request");
                health.rejected();
                Frame::Ack
            }
            Ok(Parsed::Ack) => Frame::Ack,
            Ok(Parsed::Pong | Parsed::Ignored) => Frame::Other,
            Err(e) => {
                health.malformed(&e.to_string());
                Frame::Other
            }
        }
    }

    /// One session: a link, replaced before its cut-off when the exchange has
    /// one, until it fails or `stop`.
    async fn session(
        &self,
        pipeline: &mut Pipeline,
        pub_tx: &mpsc::Sender<Output>,
        health: &ConnHealth,
        stop: &CancellationToken,
    ) -> Ended {
        let ex = self.feed.exchange;
        let mut link = match self.open().await {
            Ok(l) => l,
            Err(e) => return Ended::Failed(e),
        };
        health.set_connected(true);
        let (snap_tx, mut snap_rx) = mpsc::channel(16);
        let watched: Vec<(Channel, String)> = self
            .natives
            .iter()
            .flat_map(|n| self.feed.channels.iter().filter(|c| matches!(c, Channel::Book | Channel::Ticker)).map(move |c| (*c, n.clone())))
            .collect();
        let mut subscribed_ns = now_ns();
        let idle_ns = (self.config.idle_ms as i64).saturating_mul(1_000_000);
        let ping = protocol::keepalive(ex);
        let mut keepalive = ping.map(|(every, _)| tokio::time::interval_at(Instant::now() + every, every));
        // Depth flushes follow the depth interval; counts and the watchdog, the heartbeat.
        let mut flush = tokio::time::interval(Duration::from_millis(self.config.depth_interval_ms.max(10)));
        let mut housekeeping = tokio::time::interval(Duration::from_millis(self.config.heartbeat_ms.min(1000)));
        let mut st = Scratch::default();
        // Binance: every book starts from a REST snapshot.
        if ex == Exchange::Binance && self.feed.channels.contains(&Channel::Book) {
            st.needs.extend(self.natives.iter().map(|n| Need::RestSnapshot(n.clone())));
        }
        // A connection the exchange will cut at a fixed age is replaced before then
        // by a second one, opened while the first still runs (see `overlap_plan`).
        let plan = self.feed.max_connection_age().map(overlap_plan);
        let mut next: Option<Link> = None;
        let mut opening: Option<Opening<'_>> = None;
        let mut next_ready: Option<Instant> = None;
        // The old link may have been behind the new one: trades stay deduplicated a
        // while after a switch.
        let mut switched_at: Option<Instant> = None;
        let mut plan_at = plan.map(|p| link.opened + p.replace_after);
        loop {
            for need in st.needs.drain(..) {
                match need {
                    Need::RestSnapshot(native) => self.fetch_snapshot(native, Duration::ZERO, &snap_tx),
                    Need::Resubscribe(native) => {
                        for req in protocol::resubscribe_book(ex, &native) {
                            if let Err(e) = link.send(self, req).await {
                                return Ended::Failed(format!("resubscribe: {e}"));
                            }
                        }
                    }
                }
            }
            tokio::select! {
                _ = stop.cancelled() => {
                    let _ = tokio::time::timeout(SHUTDOWN_GRACE, link.ws.close(None)).await;
                    if let Some(mut n) = next.take() {
                        let _ = tokio::time::timeout(SHUTDOWN_GRACE, n.ws.close(None)).await;
                    }
                    return Ended::Stopped;
                }
                frame = link.ws.next() => {
                    let recv = now_ns();
                    match frame {
                        Some(Ok(m)) if !m.is_close() => {
                            let kind = self.on_frame(&m, recv, pipeline, &mut st, health);
                            link.count(kind);
                        }
                        other => {
                            let why = match other {
                                None => "the exchange closed the connection".to_owned(),
                                Some(Err(e)) => format!("read: {e}"),
                                Some(Ok(m)) => format!("closed by the exchange: {m:?}"),
                            };
                            // Cut while its successor already runs: the successor takes over.
                            match next.take() {
                                Some(n) => {
                                    tracing::info!(venue = %self.feed.venue(), reason = %why, "connection ended during its planned replacement; the new one takes over");
                                    link = n;
                                    next_ready = None;
                                    switched_at = Some(Instant::now());
                                    plan_at = plan.map(|p| link.opened + p.replace_after);
                                    health.planned();
                                }
                                None => return Ended::Failed(why),
                            }
                        }
                    }
                }
                frame = async { next.as_mut().expect("guarded").ws.next().await }, if next.is_some() => {
                    let recv = now_ns();
                    match frame {
                        Some(Ok(m)) if !m.is_close() => {
                            let kind = self.on_frame(&m, recv, pipeline, &mut st, health);
                            let n = next.as_mut().expect("guarded");
                            n.count(kind);
                            if next_ready.is_none() && n.subscribed() {
                                next_ready = Some(Instant::now() + plan.map_or(Duration::ZERO, |p| p.grace));
                            }
                        }
                        _ => {
                            // The replacement failed: keep the old one, try again soon.
                            tracing::warn!(venue = %self.feed.venue(), "the replacement connection failed; retrying");
                            next = None;
                            next_ready = None;
                            plan_at = Some(Instant::now() + Duration::from_millis(self.config.backoff_min_ms));
                        }
                    }
                }
                _ = sleep_until_opt(plan_at), if plan_at.is_some() && next.is_none() && opening.is_none() => {
                    plan_at = None;
                    tracing::info!(venue = %self.feed.venue(), age_s = link.opened.elapsed().as_secs(), "opening the planned replacement connection");
                    // Opened beside the running link, which keeps being read meanwhile.
                    opening = Some(Box::pin(self.open()));
                }
                opened = async { opening.as_mut().expect("guarded").await }, if opening.is_some() => {
                    opening = None;
                    match opened {
                        Ok(n) => {
                            pipeline.set_overlap(true);
                            next = Some(n);
                        }
                        Err(e) => {
                            tracing::warn!(venue = %self.feed.venue(), error = %e, "the planned replacement could not connect; retrying");
                            plan_at = Some(Instant::now() + Duration::from_millis(self.config.backoff_min_ms));
                        }
                    }
                }
                _ = sleep_until_opt(next_ready), if next_ready.is_some() => {
                    // Both links have carried every stream for the grace period: the
                    // old one can go. Trades seen on both were published once.
                    let mut old = std::mem::replace(&mut link, next.take().expect("ready implies a next link"));
                    next_ready = None;
                    plan_at = plan.map(|p| link.opened + p.replace_after);
                    subscribed_ns = now_ns();
                    switched_at = Some(Instant::now());
                    health.planned();
                    tracing::info!(venue = %self.feed.venue(), "switched to the replacement connection");
                    tokio::spawn(async move {
                        let _ = tokio::time::timeout(SHUTDOWN_GRACE, old.ws.close(None)).await;
                    });
                }
                Some((native, r)) = snap_rx.recv() => match r {
                    Ok((last, bids, asks)) => pipeline.on_rest_snapshot(&native, last, bids, asks, now_ns(), &mut st.out, &mut st.needs),
                    Err(e) => {
                        tracing::warn!(symbol = %native, error = %e, "depth snapshot failed; retrying");
                        self.fetch_snapshot(native, Duration::from_millis(self.config.backoff_min_ms), &snap_tx);
                    }
                },
                _ = async { keepalive.as_mut().expect("guarded").tick().await }, if keepalive.is_some() => {
                    if let Some((_, text)) = ping {
                        if let Err(e) = link.ws.send(Message::text(text)).await {
                            return Ended::Failed(format!("keep-alive: {e}"));
                        }
                        if let Some(n) = next.as_mut() {
                            let _ = n.ws.send(Message::text(text)).await;
                        }
                    }
                }
                _ = flush.tick() => pipeline.flush(now_ns(), &mut st.out),
                _ = housekeeping.tick() => {
                    self.health.record(&self.id, pipeline.streams());
                    if next.is_none() && switched_at.is_none_or(|t| t.elapsed() > Duration::from_secs(5)) {
                        pipeline.set_overlap(false);
                    }
                    // Per subscription: a book or ticker silent past idle_ms means
                    // the socket is open but dead. (Trades and candles may be
                    // legitimately quiet.)
                    let now = now_ns();
                    let silent = |(ch, native): &&(Channel, String)| {
                        let last = pipeline.last_ns(*ch, native).unwrap_or(0).max(subscribed_ns);
                        now - last > idle_ns
                    };
                    if let Some((ch, native)) = watched.iter().find(silent) {
                        health.stale();
                        return Ended::Failed(format!("{} {native} silent for over {} ms", ch.as_str(), self.config.idle_ms));
                    }
                }
            }
            for o in st.out.drain(..) {
                if let Err(mpsc::error::TrySendError::Full(o)) = pub_tx.try_send(o) {
                    // NATS is behind: count it and make the book's next depth go out
                    // at once, so consumers are never left with a silent stale book.
                    health.dropped();
                    if let Some(native) = &o.book {
                        pipeline.dropped(native);
                    }
                }
            }
        }
    }
}

/// What a frame was, for a link's counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Frame {
    Data,
    Ack,
    Other,
}

/// Buffers reused across frames.
#[derive(Default)]
struct Scratch {
    out: Vec<Output>,
    needs: Vec<Need>,
}

/// A replacement link being opened beside the running one.
type Opening<'a> = std::pin::Pin<Box<dyn std::future::Future<Output = Result<Link, String>> + Send + 'a>>;

type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// One open WebSocket and what it has carried.
struct Link {
    ws: Ws,
    /// Our id for it in the dispatcher's connection-scoped budgets.
    conn_id: String,
    opened: Instant,
    requests: usize,
    acks: usize,
    data: u64,
    /// The exchange answers subscribe requests (all but Upbit).
    acked: bool,
}

impl Link {
    /// Sends one request on a token of the exchange's message budget.
    async fn send(&mut self, conn: &Conn, text: String) -> Result<(), String> {
        let ex = conn.feed.exchange;
        if let Some(g) = protocol::message_group(ex) {
            token(&conn.dispatcher, ex, g, &self.conn_id).await?;
        }
        self.ws.send(Message::text(text)).await.map_err(|e| e.to_string())
    }

    fn count(&mut self, f: Frame) {
        match f {
            Frame::Data => self.data += 1,
            Frame::Ack => self.acks += 1,
            Frame::Other => {}
        }
    }

    /// Every subscribe request answered (Upbit answers none) and data flowing.
    fn subscribed(&self) -> bool {
        self.data > 0 && (!self.acked || self.acks >= self.requests)
    }
}

/// When to replace a connection the exchange cuts at `max_age`, and how long
/// both run together once the new one carries everything.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Overlap {
    replace_after: Duration,
    grace: Duration,
}

/// A tenth of the age ahead of the cut, at most ten minutes; both connections
/// then run side by side for a third of that lead, at most a second, so frames
/// still in flight on the old one arrive before it is closed.
fn overlap_plan(max_age: Duration) -> Overlap {
    let lead = (max_age / 10).min(Duration::from_secs(600));
    Overlap { replace_after: max_age - lead, grace: (lead / 3).min(Duration::from_secs(1)) }
}

/// The wait before the next reconnect: random in [d/2, d], d doubling from
/// `backoff_min_ms` to `backoff_max_ms`; a connection that lived a minute earns a
/// fresh start.
pub(crate) fn backoff(config: &CollectorConfig, attempt: &mut u32, started: Instant) -> Duration {
    if started.elapsed() > Duration::from_secs(60) {
        *attempt = 0;
    }
    let d = config.backoff_min_ms.saturating_mul(1 << (*attempt).min(20)).min(config.backoff_max_ms);
    *attempt += 1;
    Duration::from_millis(rand::rng().random_range(d / 2..=d.max(1)))
}

async fn sleep_until_opt(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Sends queued messages to NATS, in order. With traces exported, each trade
/// is a `collector.publish` span whose context rides in the message's headers,
/// so the signal made from it (and the order, and the exchange call) continue
/// its trace. Only trades: signals are made from trades, and a span for every
/// book and depth update would flood the exporter's queue. Without traces, no
/// span is made.
async fn publish(nats: async_nats::Client, mut rx: mpsc::Receiver<Output>) {
    while let Some(o) = rx.recv().await {
        let sent = if sluice_service::trace::enabled() && o.subject.contains(".trade.") {
            let span = tracing::info_span!("collector.publish", subject = %o.subject);
            let mut headers = async_nats::HeaderMap::new();
            sluice_service::trace::inject_nats(&span, &mut headers);
            nats.publish_with_headers(o.subject, headers, o.payload).instrument(span).await
        } else {
            nats.publish(o.subject, o.payload).await
        };
        if let Err(e) = sent {
            tracing::warn!(error = %e, "publishing to NATS failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The exchanges are reached over wss://: the client must open with a TLS
    /// ClientHello (record type 0x16), not refuse the scheme or send plain HTTP.
    #[tokio::test]
    async fn wss_urls_speak_tls() {
        use tokio::io::AsyncReadExt;
        sluice_service::http_client::install_crypto_provider();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let server = tokio::spawn(async move {
            let (mut sock, _) = listener.accept().await.unwrap();
            let mut first = [0u8; 3];
            sock.read_exact(&mut first).await.unwrap();
            first
        });
        let url = format!("wss://localhost:{port}/ws");
        let client = tokio::spawn(async move { tokio_tungstenite::connect_async(url.as_str()).await.map(|_| ()) });
        let first = tokio::time::timeout(Duration::from_secs(5), server).await.unwrap().unwrap();
        assert_eq!(first[0], 0x16, "a TLS handshake record");
        assert_eq!(first[1], 0x03, "TLS 1.x");
        client.abort();
    }

    #[test]
    fn binance_connections_are_replaced_ten_minutes_before_the_24_hour_cut() {
        let p = overlap_plan(Duration::from_secs(86_400));
        assert_eq!(p.replace_after, Duration::from_secs(86_400 - 600));
        assert_eq!(p.grace, Duration::from_secs(1));
        let short = overlap_plan(Duration::from_millis(3_000));
        assert_eq!((short.replace_after, short.grace), (Duration::from_millis(2_700), Duration::from_millis(100)));
    }
}
