//! One account's private stream (Upbit myOrder/myAsset, Bybit order/execution/
//! wallet), forever: take a connect token, ask the dispatcher to mint a login
//! (Upbit: a JWT header on the upgrade; Bybit: a signed auth message), connect, log
//! in, subscribe, keep alive, and publish every event on `account.<exchange>.
//! <account>.<kind>` through JetStream with an acknowledgement.
//!
//! Invariants: the collector never holds or logs a secret (the minted login is
//! used for one connection and dropped); an event read from the exchange is
//! never dropped: the queue to NATS blocks instead of overflowing, and a publish
//! that is not acknowledged is retried (fills and order updates carry a
//! `Nats-Msg-Id`, so a retry is not stored twice). While the stream is down the
//! exchange's events are not seen: a `StreamStatus` says so on the way down and up.

use std::sync::Arc;
use std::time::Duration;

use futures::{SinkExt, StreamExt};
use prost::Message as _;
use sluice_proto::account::v1::{Source, StreamStatus};
use sluice_proto::dispatcher::v1::MintStreamAuthRequest;
use tokio::sync::mpsc;
use tokio::time::{Instant, sleep};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::{HeaderName, HeaderValue};
use tokio_util::sync::CancellationToken;

use crate::config::{CollectorConfig, PrivateConfig};
use crate::conn::{Dispatcher, Ended, SHUTDOWN_GRACE, backoff, now_ns, token};
use crate::health::{ConnHealth, Health};
use crate::parse::private::{AccountMsg, PrivateParsed, parse};
use crate::protocol;

/// How long the exchange has to accept a login or a connect.
const STEP_TIMEOUT: Duration = Duration::from_secs(10);

/// The subject of one kind of account event ("order", "fill", "balance", "status").
pub fn account_subject(exchange: &str, account: &str, kind: &str) -> String {
    format!("account.{exchange}.{account}.{kind}")
}

/// A message for JetStream.
struct Outgoing {
    subject: String,
    payload: bytes::Bytes,
    /// JetStream's de-duplication id, when the event has a natural one.
    id: Option<String>,
}

/// Everything one private stream task needs.
pub(crate) struct PrivateStream {
    pub(crate) cfg: PrivateConfig,
    pub(crate) config: Arc<CollectorConfig>,
    pub(crate) dispatcher: Dispatcher,
    pub(crate) nats: async_nats::Client,
    pub(crate) health: Arc<Health>,
}

type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

impl PrivateStream {
    fn source(&self, market: &str, exchange_ts_ms: u64, recv: i64) -> Source {
        Source {
            exchange: self.cfg.exchange.as_str().to_owned(),
            market: market.to_owned(),
            account: self.cfg.account.clone(),
            exchange_ts_ns: (exchange_ts_ms as i64).saturating_mul(1_000_000),
            receive_ts_ns: recv,
            collector: self.config.collector.clone(),
        }
    }

    /// This stream's line in the collector's heartbeat.
    fn state(&self, f: impl FnOnce(&mut sluice_proto::md::v1::PrivateStreamHealth)) {
        self.health.private_stream(self.cfg.exchange.as_str(), &self.cfg.account, f);
    }

    fn subject(&self, kind: &str) -> String {
        account_subject(self.cfg.exchange.as_str(), &self.cfg.account, kind)
    }

    fn status(&self, connected: bool, reason: String) -> Outgoing {
        let now = now_ns();
        let msg = StreamStatus { source: Some(self.source("", 0, now)), connected, reason };
        let id = format!("{}.{}.status.{now}", self.cfg.exchange, self.cfg.account);
        Outgoing { subject: self.subject("status"), payload: msg.encode_to_vec().into(), id: Some(id) }
    }

    /// One event, with its source, as a JetStream message.
    fn outgoing(&self, ts_ms: u64, market: &str, msg: AccountMsg, recv: i64) -> Outgoing {
        let source = Some(self.source(market, ts_ms, recv));
        let ex = self.cfg.exchange.as_str();
        let acct = &self.cfg.account;
        match msg {
            AccountMsg::Order(mut o) => {
                o.source = source;
                // With the exchange's time: an amended order keeps its status and fill.
                let id = format!("{ex}.{acct}.order.{}.{}.{}.{ts_ms}", o.order_id, o.exchange_status, o.filled_qty);
                Outgoing { subject: self.subject("order"), payload: o.encode_to_vec().into(), id: Some(id) }
            }
            AccountMsg::Fill(mut f) => {
                f.source = source;
                let id = format!("{ex}.{acct}.fill.{}", f.trade_id);
                Outgoing { subject: self.subject("fill"), payload: f.encode_to_vec().into(), id: Some(id) }
            }
            AccountMsg::Balance(mut b) => {
                b.source = source;
                Outgoing { subject: self.subject("balance"), payload: b.encode_to_vec().into(), id: None }
            }
        }
    }

    /// Runs until `stop`, reconnecting forever with backoff.
    pub(crate) async fn run(self, stop: CancellationToken) {
        let venue = self.cfg.venue();
        let health = self.health.connection(&format!("{venue}-{}", self.cfg.account), &venue);
        self.state(|p| p.reason = "connecting".into());
        let (tx, rx) = mpsc::channel::<Outgoing>(self.config.publish_queue);
        let publisher = tokio::spawn(publish_acked(self.nats.clone(), rx, self.config.clone()));
        let mut attempt = 0;
        loop {
            let started = Instant::now();
            let ended = tokio::select! {
                e = self.session(&tx, &health, &stop) => e,
                _ = stop.cancelled() => Ended::Stopped,
            };
            let was_up = health.is_connected();
            health.set_connected(false);
            let why = match ended {
                Ended::Stopped => {
                    if was_up {
                        let _ = tx.send(self.status(false, "collector stopping".into())).await;
                    }
                    break;
                }
                Ended::Failed(why) => why,
            };
            if was_up {
                let _ = tx.send(self.status(false, why.clone())).await;
            }
            self.state(|p| {
                p.connected = false;
                p.reason = why.clone();
                p.reconnects += 1;
            });
            let wait = backoff(&self.config, &mut attempt, started);
            health.reconnected();
            tracing::warn!(%venue, account = %self.cfg.account, reason = %why, wait_ms = wait.as_millis() as u64, "private stream lost; reconnecting");
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = sleep(wait) => {}
            }
        }
        drop(tx);
        let mut publisher = publisher;
        if tokio::time::timeout(SHUTDOWN_GRACE, &mut publisher).await.is_err() {
            publisher.abort();
            tracing::warn!(%venue, "NATS did not acknowledge the last account events before shutdown");
        }
    }

    /// Connects with a freshly minted login; the socket once the exchange accepted
    /// it, and our id for it in the dispatcher's connection-scoped budgets.
    async fn connect(&self, health: &ConnHealth) -> Result<(Ws, String), String> {
        let ex = self.cfg.exchange;
        let Some(client) = &self.dispatcher else { return Err("no dispatcher to mint a login".into()) };
        let conn_id = uuid::Uuid::new_v4().to_string();
        token(&self.dispatcher, ex, protocol::CONNECT_GROUP, &conn_id).await?;
        let req = MintStreamAuthRequest { exchange: ex.as_str().to_owned(), account: self.cfg.account.clone() };
        // Secret-derived: used for this connection only, never logged.
        let login = client
            .clone()
            .mint_stream_auth(req)
            .await
            .map_err(|s| format!("the dispatcher minted no login for {ex} account {}: {}", self.cfg.account, s.message()))?
            .into_inner();
        let mut request = self.cfg.url.as_str().into_client_request().map_err(|e| format!("url {}: {e}", self.cfg.url))?;
        for h in &login.headers {
            let name = HeaderName::from_bytes(h.name.as_bytes()).map_err(|_| format!("minted header name '{}' is invalid", h.name))?;
            let value = HeaderValue::from_str(&h.value).map_err(|_| format!("minted header {} has an invalid value", h.name))?;
            request.headers_mut().insert(name, value);
        }
        let mut ws = match tokio::time::timeout(STEP_TIMEOUT, tokio_tungstenite::connect_async(request)).await {
            Ok(Ok((ws, _))) => ws,
            Ok(Err(e)) => return Err(format!("connect {}: {e}", self.cfg.url)),
            Err(_) => return Err(format!("connect {}: timed out", self.cfg.url)),
        };
        if !login.login_message.is_empty() {
            ws.send(Message::text(login.login_message)).await.map_err(|e| format!("login: {e}"))?;
            let deadline = Instant::now() + STEP_TIMEOUT;
            loop {
                let frame = tokio::time::timeout_at(deadline, ws.next()).await.map_err(|_| "login: no answer".to_owned())?;
                let text = match frame {
                    Some(Ok(Message::Text(t))) => t,
                    Some(Ok(m)) if !m.is_close() => continue,
                    other => return Err(format!("login: the connection ended ({other:?})")),
                };
                match parse(ex, text.as_str()) {
                    Ok(PrivateParsed::LoggedIn) => break,
                    Ok(PrivateParsed::LoginRefused(why)) => {
                        health.rejected();
                        return Err(format!("login refused: {why}"));
                    }
                    Ok(_) => {}
                    Err(e) => health.malformed(&e.to_string()),
                }
            }
        }
        Ok((ws, conn_id))
    }

    /// One connection, until it fails or `stop`.
    async fn session(&self, tx: &mpsc::Sender<Outgoing>, health: &ConnHealth, stop: &CancellationToken) -> Ended {
        let ex = self.cfg.exchange;
        let (mut ws, conn_id) = match self.connect(health).await {
            Ok(c) => c,
            Err(e) => return Ended::Failed(e),
        };
        let (every, ping) = protocol::keepalive(ex).unwrap_or((Duration::from_secs(20), "ping"));
        let every = self.cfg.keepalive_ms.map_or(every, Duration::from_millis);
        // The subscription, then (Upbit, which does not answer subscriptions) a
        // keep-alive: the exchange answers in order, so its answer shows the
        // subscription is in place. Only then is the stream reported up.
        let mut requests = protocol::private_subscribe(ex).into_iter().collect::<Vec<_>>();
        if !protocol::acknowledges(ex) {
            requests.push(ping.to_owned());
        }
        for req in requests {
            if let Some(g) = protocol::message_group(ex)
                && let Err(e) = token(&self.dispatcher, ex, g, &conn_id).await
            {
                return Ended::Failed(e);
            }
            if let Err(e) = ws.send(Message::text(req)).await {
                return Ended::Failed(format!("subscribe: {e}"));
            }
        }
        let subscribed_at = Instant::now();
        let mut confirmed = false;
        let mut keepalive = tokio::time::interval_at(Instant::now() + every, every);
        let mut last_in = Instant::now();
        loop {
            tokio::select! {
                _ = stop.cancelled() => {
                    let _ = tokio::time::timeout(SHUTDOWN_GRACE, ws.close(None)).await;
                    return Ended::Stopped;
                }
                frame = ws.next() => {
                    let recv = now_ns();
                    last_in = Instant::now();
                    let text = match &frame {
                        Some(Ok(Message::Text(t))) => t.as_str(),
                        Some(Ok(Message::Binary(b))) => match std::str::from_utf8(b) {
                            Ok(t) => t,
                            Err(_) => {
                                health.malformed("a binary frame that is not UTF-8");
                                continue;
                            }
                        },
                        Some(Ok(m)) if !m.is_close() => continue,
                        None => return Ended::Failed("the exchange closed the connection".into()),
                        Some(Err(e)) => return Ended::Failed(format!("read: {e}")),
                        Some(Ok(m)) => return Ended::Failed(format!("closed by the exchange: {m:?}")),
                    };
                    match parse(ex, text) {
                        Ok(PrivateParsed::Data(events)) => {
                            for (ts, market, msg) in events {
                                health.account_event();
                                self.state(|p| p.events += 1);
                                // Blocks while NATS is behind: an event is never dropped.
                                if tx.send(self.outgoing(ts, market, msg, recv)).await.is_err() {
                                    return Ended::Stopped;
                                }
                            }
                        }
                        Ok(PrivateParsed::LoginRefused(why)) => {
                            health.rejected();
                            return Ended::Failed(format!("login refused: {why}"));
                        }
                        Ok(PrivateParsed::Rejected(why)) => {
                            // A refused subscription carries nothing: try again from the start.
                            health.rejected();
                            return Ended::Failed(format!("the exchange refused the subscription: {why}"));
                        }
                        Ok(PrivateParsed::Ack | PrivateParsed::Pong) if !confirmed => {
                            confirmed = true;
                            health.set_connected(true);
                            self.state(|p| {
                                p.connected = true;
                                p.reason.clear();
                            });
                            tracing::info!(venue = %self.cfg.venue(), account = %self.cfg.account, "private stream up");
                            if tx.send(self.status(true, String::new())).await.is_err() {
                                return Ended::Stopped;
                            }
                        }
                        Ok(PrivateParsed::LoggedIn | PrivateParsed::Ack | PrivateParsed::Pong | PrivateParsed::Ignored) => {}
                        Err(e) => health.malformed(&e.to_string()),
                    }
                }
                _ = tokio::time::sleep_until(subscribed_at + STEP_TIMEOUT), if !confirmed => {
                    return Ended::Failed("the exchange did not confirm the subscription".into());
                }
                _ = keepalive.tick() => {
                    // Private streams are quiet when nothing trades; the keep-alive's
                    // answer is what shows the socket is alive.
                    if last_in.elapsed() > every * 2 {
                        health.stale();
                        return Ended::Failed(format!("no answer to keep-alives for {} ms", last_in.elapsed().as_millis()));
                    }
                    if let Some(g) = protocol::message_group(ex)
                        && let Err(e) = token(&self.dispatcher, ex, g, &conn_id).await
                    {
                        return Ended::Failed(e);
                    }
                    if let Err(e) = ws.send(Message::text(ping)).await {
                        return Ended::Failed(format!("keep-alive: {e}"));
                    }
                }
            }
        }
    }
}

/// Publishes through JetStream in order, each message retried until the stream
/// acknowledges it (NATS down, the stream not created yet).
async fn publish_acked(nats: async_nats::Client, mut rx: mpsc::Receiver<Outgoing>, config: Arc<CollectorConfig>) {
    // A publish before the stream exists reaches plain subscribers but is not kept,
    // and its retry would reach them twice: the stream comes first.
    let mut attempt = 0;
    while let Err(e) = crate::ensure_stream(&nats, &config.account_stream, "account.>").await {
        let wait = backoff(&config, &mut attempt, Instant::now());
        tracing::warn!(stream = %config.account_stream.name, error = %e, "cannot set up the account stream yet; retrying");
        sleep(wait).await;
    }
    let js = async_nats::jetstream::new(nats);
    while let Some(o) = rx.recv().await {
        let mut attempt = 0;
        loop {
            let mut headers = async_nats::HeaderMap::new();
            if let Some(id) = &o.id {
                headers.insert(async_nats::header::NATS_MESSAGE_ID, id.as_str());
            }
            let r = match js.publish_with_headers(o.subject.clone(), headers, o.payload.clone()).await {
                Ok(ack) => ack.await.map(|_| ()).map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            };
            match r {
                Ok(()) => break,
                Err(e) => {
                    let wait = backoff(&config, &mut attempt, Instant::now());
                    tracing::warn!(subject = %o.subject, error = %e, wait_ms = wait.as_millis() as u64, "account event not acknowledged; retrying");
                    sleep(wait).await;
                }
            }
        }
    }
}
