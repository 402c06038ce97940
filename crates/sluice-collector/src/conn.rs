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

use crate::config::{Channel, CollectorConfig, FeedConfig};
use crate::event::Parsed;
use crate::health::{ConnHealth, Health};
use crate::pipeline::{Need, Output, Pipeline};
use crate::protocol;

/// The dispatcher, if one is configured: tokens and REST snapshots.
pub(crate) type Dispatcher = Option<DispatcherClient<tonic::transport::Channel>>;

fn now_ns() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as i64)
}

fn pb_duration(d: Duration) -> sluice_proto::prost_types::Duration {
    sluice_proto::prost_types::Duration { seconds: d.as_secs() as i64, nanos: d.subsec_nanos() as i32 }
}

/// Takes one token of `group` from the dispatcher; without a dispatcher, at once.
async fn token(d: &Dispatcher, exchange: Exchange, group: &str, connection: &str) -> Result<(), String> {
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
enum Ended {
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
            // A connection that lived a while earns a fresh start of the backoff.
            if started.elapsed() > Duration::from_secs(60) {
                attempt = 0;
            }
            let cap = self.config.backoff_max_ms;
            let d = self.config.backoff_min_ms.saturating_mul(1 << attempt.min(20)).min(cap);
            let wait = Duration::from_millis(rand::rng().random_range(d / 2..=d.max(1)));
            attempt += 1;
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

    async fn session(
        &self,
        pipeline: &mut Pipeline,
        pub_tx: &mpsc::Sender<Output>,
        health: &ConnHealth,
        stop: &CancellationToken,
    ) -> Ended {
        let ex = self.feed.exchange;
        let conn_id = uuid::Uuid::new_v4().to_string();
        if let Err(e) = token(&self.dispatcher, ex, protocol::CONNECT_GROUP, &conn_id).await {
            return Ended::Failed(e);
        }
        let connect = tokio::time::timeout(Duration::from_secs(10), tokio_tungstenite::connect_async(self.feed.url.as_str()));
        let mut ws = match connect.await {
            Ok(Ok((ws, _))) => ws,
            Ok(Err(e)) => return Ended::Failed(format!("connect {}: {e}", self.feed.url)),
            Err(_) => return Ended::Failed(format!("connect {}: timed out", self.feed.url)),
        };
        for req in protocol::subscribe(&self.feed, &self.natives) {
            if let Some(g) = protocol::message_group(ex)
                && let Err(e) = token(&self.dispatcher, ex, g, &conn_id).await
            {
                return Ended::Failed(e);
            }
            if let Err(e) = ws.send(Message::text(req)).await {
                return Ended::Failed(format!("subscribe: {e}"));
            }
        }
        health.set_connected(true);
        let (snap_tx, mut snap_rx) = mpsc::channel(16);
        let watched: Vec<(Channel, String)> = self
            .natives
            .iter()
            .flat_map(|n| self.feed.channels.iter().filter(|c| matches!(c, Channel::Book | Channel::Ticker)).map(move |c| (*c, n.clone())))
            .collect();
        let subscribed_ns = now_ns();
        let idle_ns = (self.config.idle_ms as i64).saturating_mul(1_000_000);
        let ping = protocol::keepalive(ex);
        let mut keepalive = ping.map(|(every, _)| tokio::time::interval_at(Instant::now() + every, every));
        // Depth flushes follow the depth interval; counts and the watchdog, the heartbeat.
        let mut flush = tokio::time::interval(Duration::from_millis(self.config.depth_interval_ms.max(10)));
        let mut housekeeping = tokio::time::interval(Duration::from_millis(self.config.heartbeat_ms.min(1000)));
        let mut out = Vec::new();
        let mut needs = Vec::new();
        // Binance: every book starts from a REST snapshot.
        if ex == Exchange::Binance && self.feed.channels.contains(&Channel::Book) {
            needs.extend(self.natives.iter().map(|n| Need::RestSnapshot(n.clone())));
        }
        loop {
            for need in needs.drain(..) {
                match need {
                    Need::RestSnapshot(native) => self.fetch_snapshot(native, Duration::ZERO, &snap_tx),
                    Need::Resubscribe(native) => {
                        for req in protocol::resubscribe_book(ex, &native) {
                            if let Some(g) = protocol::message_group(ex)
                                && let Err(e) = token(&self.dispatcher, ex, g, &conn_id).await
                            {
                                return Ended::Failed(e);
                            }
                            if let Err(e) = ws.send(Message::text(req)).await {
                                return Ended::Failed(format!("resubscribe: {e}"));
                            }
                        }
                    }
                }
            }
            tokio::select! {
                _ = stop.cancelled() => {
                    let _ = tokio::time::timeout(SHUTDOWN_GRACE, ws.close(None)).await;
                    return Ended::Stopped;
                }
                frame = ws.next() => {
                    let recv = now_ns();
                    let msg = match frame {
                        None => return Ended::Failed("the exchange closed the connection".into()),
                        Some(Err(e)) => return Ended::Failed(format!("read: {e}")),
                        Some(Ok(Message::Close(c))) => return Ended::Failed(format!("closed by the exchange: {c:?}")),
                        Some(Ok(m)) => m,
                    };
                    // Parsed in place from the frame's bytes: no copy per frame.
                    let text = match &msg {
                        Message::Text(t) => t.as_str(),
                        Message::Binary(b) => match std::str::from_utf8(b) {
                            Ok(t) => t,
                            Err(_) => {
                                health.malformed("a binary frame that is not UTF-8");
                                continue;
                            }
                        },
                        _ => continue,
                    };
                    match crate::parse::parse(ex, text) {
                        Ok(Parsed::Data(mds)) => {
                            for md in mds {
                                pipeline.on_md(md, recv, &mut out, &mut needs);
                            }
                        }
                        Ok(Parsed::Rejected(why)) => {
                            tracing::warn!(venue = %self.feed.venue(), %why, "the exchange refused a request");
                            health.rejected();
                        }
                        Ok(Parsed::Pong | Parsed::Ack | Parsed::Ignored) => {}
                        Err(e) => health.malformed(&e.to_string()),
                    }
                }
                Some((native, r)) = snap_rx.recv() => match r {
                    Ok((last, bids, asks)) => pipeline.on_rest_snapshot(&native, last, bids, asks, now_ns(), &mut out, &mut needs),
                    Err(e) => {
                        tracing::warn!(symbol = %native, error = %e, "depth snapshot failed; retrying");
                        self.fetch_snapshot(native, Duration::from_millis(self.config.backoff_min_ms), &snap_tx);
                    }
                },
                _ = async { keepalive.as_mut().expect("guarded").tick().await }, if keepalive.is_some() => {
                    if let Some((_, text)) = ping
                        && let Err(e) = ws.send(Message::text(text)).await
                    {
                        return Ended::Failed(format!("keep-alive: {e}"));
                    }
                }
                _ = flush.tick() => pipeline.flush(now_ns(), &mut out),
                _ = housekeeping.tick() => {
                    self.health.record(&self.id, pipeline.streams());
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
            for o in out.drain(..) {
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

/// Sends queued messages to NATS, in order.
async fn publish(nats: async_nats::Client, mut rx: mpsc::Receiver<Output>) {
    while let Some(o) = rx.recv().await {
        if let Err(e) = nats.publish(o.subject, o.payload).await {
            tracing::warn!(error = %e, "publishing to NATS failed");
        }
    }
}
