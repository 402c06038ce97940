//! The running service: NATS in (every service's heartbeat on `heartbeat.>`),
//! probes out through the dispatcher, the engine task between them, alerts
//! out on NATS and to the receivers, the API over gRPC and HTTP, and its own
//! heartbeat. [`start`] returns once it serves; [`run`] until shutdown.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream;
use futures::StreamExt;
use prometheus_client::registry::Registry;
use prost::Message;
use sluice_proto::alert::v1::alerting_server::AlertingServer;
use sluice_proto::ops::v1::Heartbeat;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::api::Api;
use crate::config::AlertingConfig;
use crate::engine::{Delivery, Engine, Input, Shared};
use crate::metrics::{Metrics, ResultLabels};
use crate::nflog::Nflog;
use crate::receiver::Receiver;

/// Why the service could not start.
#[derive(Debug, thiserror::Error)]
pub enum AlertingError {
    #[error("cannot connect to NATS at {url}: {message}")]
    Nats { url: String, message: String },
    #[error("JetStream: {0}")]
    JetStream(String),
    #[error(transparent)]
    Ops(#[from] sluice_service::http::OpsError),
    #[error("cannot listen on {addr}: {source}")]
    Bind { addr: std::net::SocketAddr, source: std::io::Error },
    #[error("gRPC: {0}")]
    Grpc(String),
    #[error("dispatcher at {url}: {message}")]
    Dispatcher { url: String, message: String },
}

/// A running service.
pub struct Running {
    pub grpc_addr: std::net::SocketAddr,
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

/// Connects, subscribes, serves.
pub async fn start(config: AlertingConfig, shutdown: CancellationToken) -> Result<Running, AlertingError> {
    let config = Arc::new(config);
    let url = config.nats_url.clone();
    let nats_err = |message: String| AlertingError::Nats { url: url.clone(), message };
    let nats = config
        .nats_auth
        .options()
        .await
        .map_err(|e| nats_err(e.to_string()))?
        .name(format!("sluice-alerting {}", config.service))
        .retry_on_initial_connect()
        .connect(url.as_str())
        .await
        .map_err(|e| nats_err(e.to_string()))?;
    let js = jetstream::new(nats.clone());
    let nflog = Nflog::open(&js, &config.bucket_prefix).await.map_err(|e| AlertingError::JetStream(e.to_string()))?;
    let shared = Arc::new(Shared::default());
    let (silences, silence_watch) =
        crate::api::open_silences(&js, &config.bucket_prefix, shared.clone()).await.map_err(AlertingError::JetStream)?;

    let metrics = Arc::new(Metrics::default());
    let mut registry = Registry::default();
    metrics.register(&mut registry);
    for r in &config.receivers {
        for result in ["delivered", "failed", "refused", "skipped"] {
            metrics.notified_zero(&r.name, result);
        }
    }
    let registry = Arc::new(Mutex::new(registry));
    let receivers: Arc<BTreeMap<String, Receiver>> =
        Arc::new(config.receivers.iter().map(|r| (r.name.clone(), Receiver::new(r.clone()))).collect());

    // Inputs through one bounded channel: heartbeats wait for the engine when it
    // is busy (a heartbeat is small and the engine quick), probes likewise.
    let (in_tx, in_rx) = mpsc::channel::<Input>(4096);
    let mut tasks = vec![silence_watch];
    let mut sub = nats.subscribe("heartbeat.>").await.map_err(|e| nats_err(e.to_string()))?;
    nats.flush().await.map_err(|e| nats_err(e.to_string()))?;
    {
        let tx = in_tx.clone();
        let metrics = metrics.clone();
        let stop = shutdown.clone();
        tasks.push(tokio::spawn(async move {
            loop {
                let msg = tokio::select! {
                    m = sub.next() => match m { Some(m) => m, None => return },
                    _ = stop.cancelled() => return,
                };
                match Heartbeat::decode(msg.payload.as_ref()) {
                    Ok(hb) if !hb.service.is_empty() && !hb.instance.is_empty() => {
                        metrics.heartbeats.get_or_create(&ResultLabels { result: "ok".into() }).inc();
                        if tx.send(Input::Heartbeat(hb)).await.is_err() {
                            return;
                        }
                    }
                    Ok(_) | Err(_) => {
                        metrics.heartbeats.get_or_create(&ResultLabels { result: "malformed".into() }).inc();
                        tracing::debug!(subject = %msg.subject, "a heartbeat that cannot be read (no service or instance, or not a Heartbeat)");
                    }
                }
            }
        }));
    }

    // Probes through the dispatcher.
    if let Some(durl) = &config.dispatcher_url {
        let bad = |m: String| AlertingError::Dispatcher { url: durl.clone(), message: m };
        let channel = tonic::transport::Endpoint::from_shared(durl.clone()).map_err(|e| bad(e.to_string()))?.connect_lazy();
        let token =
            sluice_service::credentials::Bearer::from_file(config.dispatcher_token_file.as_deref()).map_err(|e| bad(e.to_string()))?;
        let client = sluice_proto::dispatcher::v1::dispatcher_client::DispatcherClient::with_interceptor(channel, token);
        let (ptx, mut prx) = mpsc::channel(256);
        let ms = |v: i64| Duration::from_millis(v.max(1) as u64);
        let probes = crate::probe::probes(&config.probes);
        tracing::info!(probes = probes.len(), every_ms = config.probe_interval_ms, "probing the exchanges through the dispatcher");
        let timing = crate::probe::Timing {
            every: ms(config.probe_interval_ms),
            retry: ms(config.probe_retry_ms),
            timeout: ms(config.probe_timeout_ms),
            slow_after: ms(config.probe_slow_ms),
        };
        tasks.extend(crate::probe::spawn(client, probes, timing, ptx, shutdown.clone()));
        let tx = in_tx.clone();
        tasks.push(tokio::spawn(async move {
            while let Some(r) = prx.recv().await {
                if tx.send(Input::Probe(r)).await.is_err() {
                    return;
                }
            }
        }));
    }
    if let Some(t) = &config.triage {
        tracing::info!(model = %t.model, every_ms = t.interval_ms, "LLM triage on");
        let gateway = sluice_signal::gateway::Gateway::new(sluice_service::http_client::client(), &t.base_url, t.api_key.clone());
        let task = crate::triage::run(t.clone(), gateway, in_tx.clone(), shared.clone(), metrics.clone(), shutdown.clone());
        tasks.push(tokio::spawn(task));
    }
    drop(in_tx);

    let delivery =
        Delivery { me: config.service.clone(), nflog, receivers: receivers.clone(), metrics: metrics.clone(), shutdown: shutdown.clone() };
    let engine = Engine::new(config.clone(), shared.clone(), nats.clone(), delivery);
    tasks.push(tokio::spawn(crate::engine::run(engine, in_rx, Duration::from_millis(config.eval_interval_ms as u64), shutdown.clone())));

    let api = Api { replica: config.service.clone(), shared, silences, receivers, metrics: metrics.clone() };
    let ready = sluice_service::http::Readiness::default();
    let (ops_addr, ops) = sluice_service::http::serve_with(
        config.ops_listen,
        registry.clone(),
        ready.clone(),
        crate::api::router(api.clone()),
        shutdown.clone(),
    )
    .await?;
    tasks.push(ops);

    let listener =
        tokio::net::TcpListener::bind(config.listen).await.map_err(|source| AlertingError::Bind { addr: config.listen, source })?;
    let grpc_addr = listener.local_addr().map_err(|source| AlertingError::Bind { addr: config.listen, source })?;
    let (health, health_svc) = tonic_health::server::health_reporter();
    health.set_serving::<AlertingServer<Api>>().await;
    sluice_service::grpc::not_serving_on_shutdown::<AlertingServer<Api>>(health, shutdown.clone());
    let reflect = |b: tonic_reflection::server::Builder<'static>| {
        b.register_encoded_file_descriptor_set(sluice_proto::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let reflection = reflect(tonic_reflection::server::Builder::configure()).build_v1().map_err(|e| AlertingError::Grpc(e.to_string()))?;
    let reflection_alpha =
        reflect(tonic_reflection::server::Builder::configure()).build_v1alpha().map_err(|e| AlertingError::Grpc(e.to_string()))?;
    let stop_grpc = shutdown.clone();
    tasks.push(tokio::spawn(async move {
        let served = tonic::transport::Server::builder()
            .layer(sluice_service::grpc::OversizeLayer)
            .add_service(health_svc)
            .add_service(reflection)
            .add_service(reflection_alpha)
            .add_service(AlertingServer::new(api))
            .serve_with_incoming_shutdown(
                tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true)),
                stop_grpc.cancelled(),
            )
            .await;
        if let Err(e) = served {
            tracing::error!(error = %e, "gRPC server stopped");
        }
    }));

    let id = sluice_service::heartbeat::Identity {
        service: "alerting".into(),
        instance: config.service.clone(),
        interval: Duration::from_millis(config.heartbeat_interval_ms as u64),
    };
    tasks.push(sluice_service::heartbeat::spawn(nats.clone(), id, registry, shutdown.clone()));
    ready.set(true);
    tracing::info!(%grpc_addr, %ops_addr, rules = config.rules.len(), receivers = config.receivers.len(), "alerting serving");
    Ok(Running { grpc_addr, ops_addr, tasks, nats })
}

/// Starts and runs until `shutdown`.
pub async fn run(config: AlertingConfig, shutdown: CancellationToken) -> Result<(), AlertingError> {
    let running = start(config, shutdown).await?;
    running.wait().await;
    Ok(())
}
