//! An in-process stack for cross-service tests and benchmarks: a nats-server on
//! a free port, the simulator, a dispatcher holding every simulated account's
//! keys (as "demo", and as "bad" with a wrong secret), and configs for a
//! collector and an execution service pointed at them.

use std::collections::HashMap;

use sluice_alerting::AlertingConfig;
use sluice_collector::CollectorConfig;
use sluice_collector::config::PrivateConfig;
use sluice_dispatcher::{DispatcherConfig, Keyring};
use sluice_domain::Exchange;
use sluice_execution::ExecutionConfig;
use sluice_sim::SimConfig;
use tokio_util::sync::CancellationToken;

use crate::replicas::Nats;

/// A nats-server, the simulator and a dispatcher pointed at it.
pub struct Stack {
    pub nats: Nats,
    pub sim: sluice_sim::SimHandle,
    pub dispatcher: sluice_dispatcher::Running,
    /// Stops the simulator, the dispatcher and whatever else was started with it.
    pub stop: CancellationToken,
}

/// Starts the stack.
pub async fn stack(sim_cfg: SimConfig) -> anyhow::Result<Stack> {
    let nats = Nats::start().await?;
    let stop = CancellationToken::new();
    let accounts = sim_cfg.accounts.clone();
    let sim = sluice_sim::start(sim_cfg, stop.clone()).await?;
    let mut dcfg = DispatcherConfig::load(None, &|_| None)?;
    dcfg.listen = "127.0.0.1:0".parse()?;
    dcfg.ops_listen = "127.0.0.1:0".parse()?;
    dcfg.drain_grace_ms = 0;
    // Its heartbeat, with its figures, for the alerting service.
    dcfg.heartbeat = Some(sluice_dispatcher::config::HeartbeatConfig { nats_url: nats.url(), ..Default::default() });
    for ex in Exchange::ALL {
        dcfg.base_urls.insert(ex, sim.base_url(ex));
    }
    let keyring = sim_keyring(&accounts)?;
    let dispatcher = sluice_dispatcher::start(dcfg, keyring, stop.clone()).await?;
    Ok(Stack { nats, sim, dispatcher, stop })
}

/// The collector's feed addresses (`SLUICE_COLLECTOR_<VENUE>_URL`, public and
/// private) pointed at the simulator's WebSockets.
pub fn collector_feed_env(sim: &sluice_sim::SimHandle) -> Vec<(String, String)> {
    let ws = |ex: Exchange, path: &str| format!("ws://{}{path}", sim.addr(ex).map(|a| a.to_string()).unwrap_or_default());
    [
        ("UPBIT", ws(Exchange::Upbit, "/websocket/v1")),
        ("BYBIT", ws(Exchange::Bybit, "/v5/public/spot")),
        ("BYBIT_LINEAR", ws(Exchange::Bybit, "/v5/public/linear")),
        ("BINANCE", ws(Exchange::Binance, "/stream")),
        ("OKX", ws(Exchange::Okx, "/ws/v5/public")),
        ("UPBIT_PRIVATE", ws(Exchange::Upbit, "/websocket/v1/private")),
        ("BYBIT_PRIVATE", ws(Exchange::Bybit, "/v5/private")),
    ]
    .into_iter()
    .map(|(venue, url)| (format!("SLUICE_COLLECTOR_{venue}_URL"), url))
    .collect()
}

/// The simulator's accounts as the dispatcher's: each as `demo`, and as `bad`
/// with a wrong secret (for the refusal paths).
pub fn sim_keyring(accounts: &[sluice_sim::config::AccountConfig]) -> anyhow::Result<Keyring> {
    Ok(Keyring::load(None, sim_key_env(accounts))?)
}

/// The same accounts as the dispatcher's environment variables
/// (`SLUICE_<EXCHANGE>_<ACCOUNT>_API_KEY`, ...), for a dispatcher process.
pub fn sim_key_env(accounts: &[sluice_sim::config::AccountConfig]) -> Vec<(String, String)> {
    let mut env = Vec::new();
    for a in accounts {
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

impl Stack {
    pub fn dispatcher_url(&self) -> String {
        format!("http://{}", self.dispatcher.grpc_addr)
    }

    /// A WebSocket URL on the simulator.
    pub fn ws(&self, ex: Exchange, path: &str) -> String {
        format!("ws://{}{path}", self.sim.addr(ex).map(|a| a.to_string()).unwrap_or_default())
    }

    /// The shipped collector config pointed at this stack, market data only,
    /// with quick timers.
    pub fn collector_config(&self) -> anyhow::Result<CollectorConfig> {
        let env: HashMap<String, String> = [
            ("SLUICE_COLLECTOR_NATS_URL", self.nats.url()),
            ("SLUICE_COLLECTOR_DISPATCHER_URL", self.dispatcher_url()),
            ("SLUICE_COLLECTOR_OPS_LISTEN", "127.0.0.1:0".into()),
            ("SLUICE_COLLECTOR_NAME", "test".into()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .chain(collector_feed_env(&self.sim))
        .collect();
        let mut ccfg = CollectorConfig::load(None, &|k| env.get(k).cloned())?;
        ccfg.private.clear();
        ccfg.idle_ms = 1_500;
        ccfg.backoff_min_ms = 50;
        ccfg.backoff_max_ms = 400;
        ccfg.heartbeat_ms = 200;
        Ok(ccfg)
    }

    /// A private stream of a simulated account, with a quick keep-alive (Upbit's
    /// keep-alives spend its 100 messages a minute, so less often there).
    pub fn private_stream(&self, ex: Exchange, account: &str) -> PrivateConfig {
        let path = if ex == Exchange::Upbit { "/websocket/v1/private" } else { "/v5/private" };
        PrivateConfig {
            exchange: ex,
            account: account.into(),
            url: self.ws(ex, path),
            keepalive_ms: Some(if ex == Exchange::Upbit { 1_000 } else { 300 }),
        }
    }

    /// The execution service's config (`text`, else the shipped one) pointed at
    /// this stack, listening on spare ports.
    pub fn execution_config(&self, text: Option<&str>, mode: &str) -> anyhow::Result<ExecutionConfig> {
        let env: HashMap<String, String> = [
            ("SLUICE_EXECUTION_NATS_URL", self.nats.url()),
            ("SLUICE_EXECUTION_DISPATCHER_URL", self.dispatcher_url()),
            ("SLUICE_EXECUTION_LISTEN", "127.0.0.1:0".into()),
            ("SLUICE_EXECUTION_OPS_LISTEN", "127.0.0.1:0".into()),
            ("SLUICE_EXECUTION_MODE", mode.into()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        Ok(ExecutionConfig::load(text, &|k| env.get(k).cloned())?)
    }

    /// An alerting service's config (`text`, else the shipped one) pointed at
    /// this stack, listening on spare ports; `env` adds variables (receiver
    /// secrets, `SLUICE_ALERTING_SERVICE` for a second replica).
    pub fn alerting_config(&self, text: Option<&str>, env: &[(&str, String)]) -> anyhow::Result<AlertingConfig> {
        let mut all: HashMap<String, String> = [
            ("SLUICE_ALERTING_NATS_URL", self.nats.url()),
            ("SLUICE_ALERTING_DISPATCHER_URL", self.dispatcher_url()),
            ("SLUICE_ALERTING_LISTEN", "127.0.0.1:0".into()),
            ("SLUICE_ALERTING_OPS_LISTEN", "127.0.0.1:0".into()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        all.extend(env.iter().map(|(k, v)| ((*k).to_owned(), v.clone())));
        Ok(AlertingConfig::load(text, None, &|k| all.get(k).cloned())?)
    }
}
