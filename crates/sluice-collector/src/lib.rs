//! The collector: keeps WebSocket connections to the exchanges, normalizes what
//! they send into `sluice.md.v1` messages and publishes them on NATS, where a
//! JetStream stream keeps them for replay.
//!
//! * [`parse`]: one pure parser per exchange.
//! * [`book`]: order books under each exchange's sequence rules.
//! * [`pipeline`]: parsed data to subjects and encoded messages.
//! * [`protocol`]: what we send each exchange.
//! * `conn`: one connection's life (tokens, watchdog, backoff, resync).
//! * [`private`]: one account's private stream (minted login, acked publishing).
//! * `health`: metrics and the NATS heartbeat.
//!
//! [`start`] runs everything in-process (tests); [`run`] is what the binary calls.

pub mod book;
pub mod config;
mod conn;
pub mod event;
mod health;
pub mod parse;
pub mod pipeline;
pub mod private;
pub mod protocol;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus_client::registry::Registry;
use prost::Message;
use sluice_proto::dispatcher::v1::dispatcher_client::DispatcherClient;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use config::CollectorConfig;

/// Why the collector could not start.
#[derive(Debug, thiserror::Error)]
pub enum CollectorError {
    #[error("cannot connect to NATS at {url}: {message}")]
    Nats { url: String, message: String },
    #[error("dispatcher URL '{url}': {message}")]
    Dispatcher { url: String, message: String },
    #[error(transparent)]
    Ops(#[from] sluice_service::http::OpsError),
}

/// The subject of a collector's heartbeat.
pub fn heartbeat_subject(collector: &str) -> String {
    format!("collector.heartbeat.{collector}")
}

/// A running collector.
pub struct Running {
    pub ops_addr: SocketAddr,
    tasks: Vec<JoinHandle<()>>,
}

impl Running {
    /// Waits until every connection has stopped (after the shutdown token fired).
    pub async fn wait(self) {
        for t in self.tasks {
            let _ = t.await;
        }
    }
}

fn now_ns() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as i64)
}

/// Creates a JetStream stream over `subjects`, or updates its limits. Retried by
/// the heartbeat until it works: publishing does not wait for it.
async fn ensure_stream(nats: &async_nats::Client, cfg: &config::StreamConfig, subjects: &str) -> Result<(), String> {
    let js = async_nats::jetstream::new(nats.clone());
    let want = async_nats::jetstream::stream::Config {
        name: cfg.name.clone(),
        subjects: vec![subjects.into()],
        max_age: Duration::from_secs(cfg.max_age_s),
        max_bytes: cfg.max_bytes,
        storage: async_nats::jetstream::stream::StorageType::File,
        discard: async_nats::jetstream::stream::DiscardPolicy::Old,
        ..Default::default()
    };
    js.get_or_create_stream(want).await.map(|_| ()).map_err(|e| e.to_string())
}

/// Starts every connection, the heartbeat and the operations endpoint.
pub async fn start(config: CollectorConfig, shutdown: CancellationToken) -> Result<Running, CollectorError> {
    // wss:// feeds use rustls with the same `ring` provider as every HTTP client.
    sluice_service::http_client::install_crypto_provider();
    let config = Arc::new(config);
    let nats = config
        .nats_auth
        .options()
        .await
        .map_err(|e| CollectorError::Nats { url: config.nats_url.clone(), message: e.to_string() })?
        .name(format!("sluice-collector {}", config.collector))
        .retry_on_initial_connect()
        .connect(config.nats_url.as_str())
        .await
        .map_err(|e| CollectorError::Nats { url: config.nats_url.clone(), message: e.to_string() })?;
    let dispatcher = match &config.dispatcher_url {
        Some(url) => {
            let ch = tonic::transport::Endpoint::from_shared(url.clone())
                .map_err(|e| CollectorError::Dispatcher { url: url.clone(), message: e.to_string() })?
                .connect_lazy();
            let token = sluice_service::credentials::Bearer::from_file(config.dispatcher_token_file.as_deref())
                .map_err(|e| CollectorError::Dispatcher { url: url.clone(), message: e.to_string() })?;
            Some(DispatcherClient::with_interceptor(ch, token))
        }
        None => None,
    };
    let mut registry = Registry::default();
    let health = health::Health::new(&config.collector, &mut registry);
    let ready = sluice_service::http::Readiness::default();
    let registry = Arc::new(Mutex::new(registry));
    let (ops_addr, ops) = sluice_service::http::serve(config.ops_listen, registry.clone(), ready.clone(), shutdown.clone()).await?;
    // The heartbeat every service sends (its metrics by name), beside the
    // collector's own richer one below.
    let id = sluice_service::heartbeat::Identity {
        service: "collector".into(),
        instance: config.collector.clone(),
        interval: Duration::from_millis(config.heartbeat_ms),
    };
    let mut tasks = vec![ops, sluice_service::heartbeat::spawn(nats.clone(), id, registry, shutdown.clone())];
    for feed in &config.feeds {
        let natives: Vec<String> = feed.symbols.iter().map(|s| s.native(feed.exchange)).collect();
        for (i, chunk) in natives.chunks(feed.symbols_per_connection).enumerate() {
            let mut f = feed.clone();
            f.symbols = feed.symbols.iter().filter(|s| chunk.contains(&s.native(feed.exchange))).cloned().collect();
            let c = conn::Conn {
                feed: f,
                natives: chunk.to_vec(),
                config: config.clone(),
                dispatcher: dispatcher.clone(),
                nats: nats.clone(),
                health: health.clone(),
                id: format!("{}-{i}", feed.venue()),
            };
            tasks.push(tokio::spawn(c.run(shutdown.clone())));
        }
    }
    for p in &config.private {
        let s = private::PrivateStream {
            cfg: p.clone(),
            config: config.clone(),
            dispatcher: dispatcher.clone(),
            nats: nats.clone(),
            health: health.clone(),
        };
        tasks.push(tokio::spawn(s.run(shutdown.clone())));
    }
    let (hb_nats, hb_cfg, stop) = (nats.clone(), config.clone(), shutdown.clone());
    tasks.push(tokio::spawn(async move {
        let subject = heartbeat_subject(&hb_cfg.collector);
        let mut every = tokio::time::interval(Duration::from_millis(hb_cfg.heartbeat_ms));
        // The replay stream, and the account stream when there are private streams.
        let mut streams: Vec<(&config::StreamConfig, &str)> = vec![(&hb_cfg.stream, "md.>")];
        if !hb_cfg.private.is_empty() {
            streams.push((&hb_cfg.account_stream, "account.>"));
        }
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = every.tick() => {}
            }
            let mut pending = Vec::new();
            for (cfg, subjects) in streams.drain(..) {
                if let Err(e) = ensure_stream(&hb_nats, cfg, subjects).await {
                    tracing::warn!(stream = %cfg.name, error = %e, "cannot set up the stream yet; retrying");
                    pending.push((cfg, subjects));
                }
            }
            streams = pending;
            let hb = health.heartbeat(now_ns());
            if let Err(e) = hb_nats.publish(subject.clone(), hb.encode_to_vec().into()).await {
                tracing::warn!(error = %e, "heartbeat not published");
            }
        }
        let _ = tokio::time::timeout(conn::SHUTDOWN_GRACE, hb_nats.flush()).await;
    }));
    ready.set(true);
    tracing::info!(collector = %config.collector, %ops_addr, feeds = config.feeds.len(), private = config.private.len(), "collector running");
    Ok(Running { ops_addr, tasks })
}

/// Runs until `shutdown`.
pub async fn run(config: CollectorConfig, shutdown: CancellationToken) -> Result<(), CollectorError> {
    start(config, shutdown).await?.wait().await;
    Ok(())
}
