//! Test harness: the simulator and a dispatcher pointed at it, both in-process on
//! port 0, and a gRPC client.

#![allow(dead_code, unreachable_pub)]

use std::path::PathBuf;
use std::time::Duration;

use sluice_dispatcher::{DispatcherConfig, Keyring, Running};
use sluice_domain::Exchange;
use sluice_proto::dispatcher::v1::dispatcher_client::DispatcherClient;
use sluice_proto::dispatcher::v1::{CallRequest, CallResponse};
use sluice_sim::{SimConfig, SimHandle};
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

pub struct Harness {
    pub sim: SimHandle,
    pub dispatcher: Running,
    pub client: DispatcherClient<Channel>,
    /// Stops the dispatcher (the simulated exchanges live on until the harness drops).
    pub stop: CancellationToken,
    _sim_stop: tokio_util::sync::DropGuard,
    _files: Vec<TempFile>,
}

pub struct TempFile(pub PathBuf);

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

pub fn temp_file(text: &str) -> TempFile {
    let p = std::env::temp_dir().join(format!("sluice-test-{}-{}.toml", std::process::id(), uuid::Uuid::new_v4()));
    std::fs::write(&p, text).unwrap();
    TempFile(p)
}

/// Credentials of the simulator's demo accounts, plus an account `bad` on every
/// exchange with a wrong secret.
pub fn sim_env(sim: &SimConfig) -> Vec<(String, String)> {
    let mut env = Vec::new();
    for a in &sim.accounts {
        let ex = a.exchange.as_str().to_ascii_uppercase();
        for (name, secret) in [("DEMO", a.secret.as_str()), ("BAD", "not-the-secret")] {
            env.push((format!("SLUICE_{ex}_{name}_API_KEY"), a.api_key.clone()));
            env.push((format!("SLUICE_{ex}_{name}_SECRET"), secret.to_owned()));
            if let Some(p) = &a.passphrase {
                env.push((format!("SLUICE_{ex}_{name}_PASSPHRASE"), p.clone()));
            }
        }
    }
    env
}

pub struct Setup {
    pub sim_overrides: Vec<String>,
    pub policy_overrides: Vec<String>,
    pub tweak: Box<dyn FnOnce(&mut DispatcherConfig)>,
    pub extra_env: Vec<(String, String)>,
}

impl Default for Setup {
    fn default() -> Self {
        Setup { sim_overrides: vec![], policy_overrides: vec![], tweak: Box::new(|_| {}), extra_env: vec![] }
    }
}

pub async fn harness(setup: Setup) -> Harness {
    sluice_service::telemetry::init("test");
    let stop = CancellationToken::new();
    let sim_stop = CancellationToken::new();
    let sim_cfg = SimConfig::load(&setup.sim_overrides.iter().map(String::as_str).collect::<Vec<_>>()).unwrap();
    let mut env = sim_env(&sim_cfg);
    env.extend(setup.extra_env);
    let sim = sluice_sim::start(sim_cfg, sim_stop.clone()).await.unwrap();
    let files: Vec<TempFile> = setup.policy_overrides.iter().map(|t| temp_file(t)).collect();
    let mut cfg = DispatcherConfig::load(None, &|_| None).unwrap();
    cfg.listen = "127.0.0.1:0".parse().unwrap();
    cfg.ops_listen = "127.0.0.1:0".parse().unwrap();
    cfg.drain_grace_ms = 0;
    cfg.policy_files = files.iter().map(|f| f.0.clone()).collect();
    for ex in Exchange::ALL {
        cfg.base_urls.insert(ex, sim.base_url(ex));
    }
    (setup.tweak)(&mut cfg);
    let keyring = Keyring::load(None, env).unwrap();
    let dispatcher = sluice_dispatcher::start(cfg, keyring, stop.clone()).await.unwrap();
    // Lazy: a dispatcher serving TLS is reached by the test's own TLS client instead.
    let client = DispatcherClient::new(Channel::from_shared(format!("http://{}", dispatcher.grpc_addr)).unwrap().connect_lazy());
    Harness { sim, dispatcher, client, stop, _sim_stop: sim_stop.drop_guard(), _files: files }
}

pub fn req(exchange: &str, method: &str, path: &str, query: &str) -> CallRequest {
    CallRequest { exchange: exchange.into(), method: method.into(), path: path.into(), query: query.into(), ..CallRequest::default() }
}

pub fn timeout(d: Duration) -> Option<prost_types::Duration> {
    Some(prost_types::Duration { seconds: d.as_secs() as i64, nanos: d.subsec_nanos() as i32 })
}

pub fn dur(d: &Option<prost_types::Duration>) -> Duration {
    d.as_ref().map_or(Duration::ZERO, |d| Duration::new(d.seconds as u64, d.nanos as u32))
}

pub fn json(r: &CallResponse) -> serde_json::Value {
    serde_json::from_slice(&r.body).unwrap_or(serde_json::Value::Null)
}

pub use sluice_proto::prost_types;
