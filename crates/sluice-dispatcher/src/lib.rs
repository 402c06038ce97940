//! The dispatcher: the one gate between sluice (and other systems) and the
//! exchanges. It alone holds the API keys and every rate-limit budget; callers send
//! exchange REST calls over gRPC and get the exchange's answer back verbatim.
//!
//! * [`config`]: typed configuration (file + environment).
//! * [`keyring`]: credentials from mounted files or the environment.
//! * [`auth`]: the clients allowed to call, and their grants.
//! * `request`: validation of gRPC requests into runnable calls.
//! * `shard`: one task per exchange owning its scheduler and buckets.
//! * `upstream`: signing and sending, reporting when each answer came.
//! * `idempotency`: a key is never sent twice.
//! * `service`: the gRPC service.
//! * `cluster`: replicas sharing every budget over NATS.
//! * [`face`]: the exchanges' own REST APIs, for existing bots.
//!
//! [`start`] runs everything in-process (tests bind port 0); [`run`] is what the
//! binary calls.

pub mod auth;
mod cluster;
pub mod config;
pub mod face;
mod idempotency;
pub mod keyring;
mod metrics;
mod request;
mod service;
mod shard;
pub mod tls;
mod upstream;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use sluice_exchange::policy::{Policies, PolicyError};
use sluice_proto::dispatcher::v1::dispatcher_server::DispatcherServer;
use sluice_rate::scheduler::SchedulerSpec;
use sluice_rate::{MonotonicClock, Time};
use sluice_service::http::Readiness;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub use config::DispatcherConfig;
pub use keyring::Keyring;

/// Why the dispatcher could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum DispatchError {
    #[error("cannot read policy file {path}: {source}")]
    PolicyFile { path: String, source: std::io::Error },
    #[error(transparent)]
    Policy(#[from] PolicyError),
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: SocketAddr, source: std::io::Error },
    #[error("cannot build the HTTP client for {exchange}: {message}")]
    Http { exchange: String, message: String },
    #[error(transparent)]
    Ops(#[from] sluice_service::http::OpsError),
    #[error("gRPC reflection: {0}")]
    Reflection(String),
    #[error("gRPC server: {0}")]
    Server(#[from] tonic::transport::Error),
    #[error("cannot read credentials: {0}")]
    Credentials(std::io::Error),
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    #[error(transparent)]
    Cluster(#[from] cluster::ClusterError),
    #[error("{0}")]
    Heartbeat(String),
}

/// A running dispatcher.
pub struct Running {
    /// Where gRPC is served.
    pub grpc_addr: SocketAddr,
    /// Where `/metrics`, `/healthz` and `/readyz` are served.
    pub ops_addr: SocketAddr,
    /// Where the exchange-compatible REST face listens (empty when not configured).
    pub exchange_api: face::Addresses,
    server: JoinHandle<Result<(), tonic::transport::Error>>,
    ops: JoinHandle<()>,
    faces: Vec<JoinHandle<()>>,
}

impl Running {
    /// Waits until the dispatcher has stopped (after the shutdown token fired).
    pub async fn wait(self) -> Result<(), DispatchError> {
        let served = self.server.await.unwrap_or(Ok(()));
        let _ = self.ops.await;
        for f in self.faces {
            let _ = f.await;
        }
        served.map_err(DispatchError::from)
    }
}

/// Loads the shipped policies, the configured override files and base URLs.
pub fn load_policies(config: &DispatcherConfig) -> Result<Policies, DispatchError> {
    let mut texts = Vec::new();
    for p in &config.policy_files {
        texts.push(std::fs::read_to_string(p).map_err(|source| DispatchError::PolicyFile { path: p.display().to_string(), source })?);
    }
    let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
    let mut policies = Policies::load(sluice_exchange::SHIPPED_POLICIES, &refs)?;
    for (ex, url) in &config.base_urls {
        policies.set_base_url(*ex, url.trim_end_matches('/').to_owned());
    }
    Ok(policies)
}

/// Starts the dispatcher; it runs until `shutdown` is cancelled.
pub async fn start(config: DispatcherConfig, keyring: Keyring, shutdown: CancellationToken) -> Result<Running, DispatchError> {
    let policies = Arc::new(load_policies(&config)?);
    let clients = auth::Clients::load(&config.clients, &|k| std::env::var(k).ok())?;
    let tls = config.tls.clone();
    if clients.open() {
        if !config.listen.ip().is_loopback() {
            tracing::warn!(listen = %config.listen, "no [[clients]] configured: anyone who reaches this port may trade every account");
        }
    } else {
        tracing::info!(clients = ?clients.names(), "callers must present a credential");
    }
    let metrics = metrics::Metrics::new();
    let clock = MonotonicClock::new();
    let spec = SchedulerSpec {
        capacity: config.queue_capacity,
        lag: config.class_lag_ms.map(Duration::from_millis),
        lost_hold: Duration::from_millis(config.lost_hold_ms),
    };
    // Shards and the ops endpoint stop only after the gRPC server has drained, so
    // calls queued when shutdown begins are still sent and /readyz still answers
    // during the grace period. Dropping the guard (start failed) stops them too.
    let workers = CancellationToken::new();
    let workers_guard = workers.clone().drop_guard();
    let mut shards = BTreeMap::new();
    let mut upstreams = BTreeMap::new();
    let mut longest = Duration::ZERO;
    // Replicas admit nothing until they own an exchange or fall back.
    let admit_until = if config.cluster.is_some() { Time::ZERO } else { Time::MAX };
    for policy in policies.iter() {
        let policy = Arc::new(policy.clone());
        let up = upstream::Upstream::new(
            policy.clone(),
            config.egress.get(&policy.exchange).copied(),
            Duration::from_millis(config.upstream_timeout_ms),
            clock.clone(),
            metrics.clone(),
        )
        .map_err(|e| DispatchError::Http { exchange: policy.exchange.to_string(), message: e.to_string() })?;
        let up = Arc::new(up);
        let handle = shard::spawn(
            policy.clone(),
            spec.clone(),
            up.clone(),
            clock.clone(),
            metrics.clone(),
            Duration::from_millis(config.idle_bucket_ms),
            admit_until,
            config.cluster.as_ref().map_or(Duration::ZERO, |c| Duration::from_millis(c.clock_skew_ms)),
            workers.clone(),
        );
        shards.insert(policy.exchange, handle);
        upstreams.insert(policy.exchange, up);
        // The longest window a bucket can have.
        let period = policy.groups.values().flat_map(|g| g.windows.iter().map(|w| w.period)).max().unwrap_or_default();
        longest = longest.max(period);
    }
    tracing::info!(accounts = ?keyring.names(), exchanges = ?shards.keys().collect::<Vec<_>>(), "dispatcher configured");

    let (health, health_svc) = tonic_health::server::health_reporter();
    // Bound first: replicas advertise the address to each other.
    let listener = TcpListener::bind(config.listen).await.map_err(|source| DispatchError::Bind { addr: config.listen, source })?;
    let grpc_addr = listener.local_addr().map_err(|source| DispatchError::Bind { addr: config.listen, source })?;
    let cluster = match config.cluster.clone() {
        Some(c) => {
            let parts = cluster::Parts {
                shards: shards.clone(),
                upstreams,
                longest,
                bound: grpc_addr,
                clock: clock.clone(),
                metrics: metrics.clone(),
                health: health.clone(),
                shutdown: shutdown.clone(),
                stop: workers.clone(),
            };
            Some(cluster::start(&config, c, parts).await?)
        }
        None => None,
    };
    let ready = Readiness::default();
    let (ops_addr, ops) = sluice_service::http::serve(config.ops_listen, metrics.registry.clone(), ready.clone(), workers.clone()).await?;
    // The heartbeat: its own NATS, or the cluster's.
    let beat = config.heartbeat.clone().or_else(|| {
        config.cluster.as_ref().map(|c| config::HeartbeatConfig {
            nats_url: c.nats_url.clone(),
            nats_auth: c.nats_auth.clone(),
            ..Default::default()
        })
    });
    if let Some(h) = beat {
        let id = sluice_service::heartbeat::Identity {
            service: "dispatcher".into(),
            instance: config.replica.clone(),
            interval: Duration::from_millis(h.interval_ms),
        };
        sluice_service::heartbeat::connect_and_spawn(&h.nats_url, &h.nats_auth, id, metrics.registry.clone(), workers.clone())
            .await
            .map_err(DispatchError::Heartbeat)?;
    }

    let max_message = config.max_body_bytes + 64 * 1024;
    let drain_grace = Duration::from_millis(config.drain_grace_ms);
    let idempotency = idempotency::Idempotency::new(Duration::from_millis(config.idempotency_ttl_ms), config.idempotency_capacity);
    let exchange_api = config.exchange_api.clone();
    let inner = Arc::new(service::Inner {
        config,
        policies,
        keyring: Arc::new(keyring),
        clients,
        shards,
        idempotency,
        metrics,
        clock,
        shutdown: shutdown.clone(),
        cluster,
    });
    let svc = DispatcherServer::new(service::DispatcherService { inner: inner.clone() }).max_decoding_message_size(max_message);

    health.set_serving::<DispatcherServer<service::DispatcherService>>().await;
    // Both reflection versions: grpcurl speaks v1, but many libraries (grpcio's
    // reflection client among them) still speak v1alpha.
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(sluice_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let reflection_v1 = reflection().build_v1().map_err(|e| DispatchError::Reflection(e.to_string()))?;
    let reflection_v1alpha = reflection().build_v1alpha().map_err(|e| DispatchError::Reflection(e.to_string()))?;

    // Shutdown: report NOT_SERVING first, give load balancers the grace period,
    // then stop accepting and drain what is in flight.
    let stop_serving = CancellationToken::new();
    {
        let shutdown = shutdown.clone();
        let stop_serving = stop_serving.clone();
        let ready = ready.clone();
        tokio::spawn(async move {
            shutdown.cancelled().await;
            ready.set(false);
            health.set_not_serving::<DispatcherServer<service::DispatcherService>>().await;
            tokio::time::sleep(drain_grace).await;
            stop_serving.cancel();
        });
    }
    // The REST face stops with the gRPC server, after the same grace period.
    let (exchange_api, faces) = match &exchange_api {
        Some(cfg) => face::start(cfg, inner, stop_serving.clone()).await?,
        None => (face::Addresses::default(), Vec::new()),
    };
    let mut builder = tonic::transport::Server::builder();
    if let Some(tls) = &tls {
        // A file that cannot be read fails the start, naming the file.
        builder = builder.tls_config(tls::server_config(tls)?).map_err(DispatchError::Server)?;
    }
    let serving = builder
        // A request above the decoding limit is INVALID_ARGUMENT, like every bad request.
        .layer(sluice_service::grpc::OversizeLayer)
        .add_service(health_svc)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(svc)
        // Small gRPC frames must not wait for Nagle's algorithm (40 ms with delayed ACKs).
        .serve_with_incoming_shutdown(tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true)), async move {
            stop_serving.cancelled().await
        });
    let server = tokio::spawn(async move {
        let served = serving.await;
        drop(workers_guard);
        served
    });
    ready.set(true);
    tracing::info!(%grpc_addr, %ops_addr, "dispatcher serving");
    Ok(Running { grpc_addr, ops_addr, exchange_api, server, ops, faces })
}

/// Runs the dispatcher with credentials from the configured directory and the
/// process environment, until `shutdown`.
pub async fn run(config: DispatcherConfig, shutdown: CancellationToken) -> Result<(), DispatchError> {
    let keyring = Keyring::load(config.credentials_dir.as_deref(), std::env::vars()).map_err(DispatchError::Credentials)?;
    start(config, keyring, shutdown).await?.wait().await
}
