//! The trading pipeline with every service as its own process (the built
//! binaries, each with its config file and log, as `scripts/up` runs them) on a
//! nats-server and the simulator started here, all exporting their traces to an
//! OTLP receiver started here: the dispatcher (the simulator's demo keys), the
//! collector (every feed and the private streams on the simulator), the signal
//! service (the offline model, or a gateway named in the options), the
//! execution service (live on the simulator, its Upbit orders a fixed size, or
//! paper) and the alerting service (probing the simulator through the
//! dispatcher every second, notifying a mock webhook receiver started here).
//! Any service can be killed and started again on the same addresses.
//! For the cross-service tests and `sluice bench tick`.

use std::time::Duration;

use anyhow::Context;
use sluice_domain::Exchange;
use sluice_sim::{SimConfig, SimHandle};
use sluice_testkit::Nats;
use sluice_testkit::otlp::Receiver;
use tokio_util::sync::CancellationToken;

use crate::mock_receiver::MockReceiver;
use crate::process::{Service, binary};
use crate::stack::{collector_feed_env, sim_key_env};

/// How the pipeline runs.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// The signal service's schedule (ms).
    pub signal_every_ms: u64,
    /// An OpenAI-compatible gateway for the signal service (None: offline model).
    pub gateway_url: Option<String>,
    /// Replacements in the shipped execution config (after the fixed Upbit size).
    pub execution_edits: Vec<(String, String)>,
    /// Replacements in the shipped signal config.
    pub signal_edits: Vec<(String, String)>,
    /// The execution service in paper mode (fills simulated against the book on
    /// NATS) instead of live on the simulator.
    pub paper: bool,
    /// Every service logs JSON lines (`SLUICE_LOG_FORMAT=json`).
    pub json_logs: bool,
}

/// A running pipeline; dropping it stops everything.
pub struct Pipeline {
    pub nats: Nats,
    pub otlp: Receiver,
    pub sim: SimHandle,
    /// The alerting service's webhook receiver (path `webhook`).
    pub receiver: MockReceiver,
    pub dispatcher_url: String,
    pub execution_grpc: String,
    pub alerting_grpc: String,
    pub services: Vec<Service>,
    /// The dispatcher's config with the address it bound, for a restart on it
    /// (the other services keep their dispatcher_url).
    dispatcher_text: String,
    _stop: tokio_util::sync::DropGuard,
}

/// Each service's name, the line it logs when it serves, and the address keys on it.
const MARKERS: [(&str, &str, &[&str]); 5] = [
    ("dispatcher", "dispatcher serving", &["grpc_addr="]),
    ("collector", "collector running", &[]),
    ("signal", "signal service running", &[]),
    ("execution", "execution service running", &["grpc_addr="]),
    ("alerting", "alerting serving", &["grpc_addr="]),
];

fn marker(name: &str) -> anyhow::Result<(&'static str, &'static [&'static str])> {
    MARKERS.iter().find(|m| m.0 == name).map(|m| (m.1, m.2)).with_context(|| format!("no service '{name}' in the pipeline"))
}

/// Starts `bin` and waits for its `marker` line; the values of `keys` there.
async fn start(name: &str, text: &str, env: &[(String, String)]) -> anyhow::Result<(Service, Vec<String>)> {
    let (marker, keys) = marker(name)?;
    let path = binary(&format!("sluice-{name}"), &format!("SLUICE_{}_BIN", name.to_ascii_uppercase()))?;
    let mut s = Service::spawn(name, &path, text, env)?;
    match s.logged(marker, keys, Duration::from_secs(60)).await {
        Ok(v) => Ok((s, v)),
        Err(e) => Err(e.context(format!("{name} did not start: {}", s.log_tail()))),
    }
}

fn with(common: &[(String, String)], pairs: &[(&str, String)]) -> Vec<(String, String)> {
    common.iter().cloned().chain(pairs.iter().map(|(k, v)| ((*k).to_owned(), v.clone()))).collect()
}

impl Pipeline {
    pub async fn start(o: Options) -> anyhow::Result<Pipeline> {
        let nats = Nats::start().await?;
        let otlp = Receiver::start().await?;
        let stop = CancellationToken::new();
        let guard = stop.clone().drop_guard();
        let sim_cfg = SimConfig::shipped();
        let keys = sim_key_env(&sim_cfg.accounts);
        let sim = sluice_sim::start(sim_cfg, stop.clone()).await?;
        // Every process exports its spans to the receiver, promptly.
        let mut common =
            vec![("SLUICE_OTLP_ENDPOINT".to_owned(), otlp.endpoint.clone()), ("OTEL_BSP_SCHEDULE_DELAY".to_owned(), "200".to_owned())];
        if o.json_logs {
            common.push(("SLUICE_LOG_FORMAT".to_owned(), "json".to_owned()));
        }
        let mut services = Vec::new();

        let mut denv = keys.clone();
        denv.extend(with(&common, &[("SLUICE_DISPATCHER_HEARTBEAT_NATS_URL", nats.url())]));
        let dtext = format!(
            "listen = '127.0.0.1:0'\nops_listen = '127.0.0.1:0'\ndrain_grace_ms = 0\n[base_urls]\n{}",
            Exchange::ALL.iter().map(|ex| format!("{ex} = '{}'\n", sim.base_url(*ex))).collect::<String>()
        );
        let (d, found) = start("dispatcher", &dtext, &denv).await?;
        services.push(d);
        let dispatcher_url = format!("http://{}", found[0]);
        let dispatcher_text = dtext.replacen("listen = '127.0.0.1:0'", &format!("listen = '{}'", found[0]), 1);

        let mut cenv = with(
            &common,
            &[
                ("SLUICE_COLLECTOR_NATS_URL", nats.url()),
                ("SLUICE_COLLECTOR_DISPATCHER_URL", dispatcher_url.clone()),
                ("SLUICE_COLLECTOR_OPS_LISTEN", "127.0.0.1:0".into()),
            ],
        );
        cenv.extend(collector_feed_env(&sim));
        services.push(start("collector", sluice_collector::config::SHIPPED, &cenv).await?.0);

        let mut senv = with(
            &common,
            &[
                ("SLUICE_SIGNAL_NATS_URL", nats.url()),
                ("SLUICE_SIGNAL_OPS_LISTEN", "127.0.0.1:0".into()),
                ("SLUICE_SIGNAL_EVERY_MS", o.signal_every_ms.max(100).to_string()),
            ],
        );
        match &o.gateway_url {
            Some(url) => senv
                .extend([("SLUICE_SIGNAL_GATEWAY_URL".to_owned(), url.clone()), ("HOLYSHEEP_API_KEY".to_owned(), "bench-key".to_owned())]),
            // The offline model, whatever this process's own environment holds.
            None => senv.push(("HOLYSHEEP_API_KEY".to_owned(), String::new())),
        }
        let mut stext = sluice_signal::config::SHIPPED.replace("min_trades = ", "min_trades = 1 # ");
        for (from, to) in &o.signal_edits {
            anyhow::ensure!(stext.contains(from.as_str()), "the shipped signal config has no '{from}'");
            stext = stext.replace(from.as_str(), to);
        }
        services.push(start("signal", &stext, &senv).await?.0);

        // Live on the simulator; the Upbit order a fixed 1M KRW (5 % of the demo
        // account's equity is over its per-order limit).
        let shipped = sluice_execution::config::SHIPPED;
        let mut etext = shipped.replace("sizing = { equity_share = \"0.05\" }", "sizing = { fixed_notional = \"1000000\" }");
        anyhow::ensure!(etext != shipped, "the shipped execution config no longer sizes Upbit by equity share");
        for (from, to) in &o.execution_edits {
            anyhow::ensure!(etext.contains(from.as_str()), "the shipped execution config has no '{from}'");
            etext = etext.replace(from.as_str(), to);
        }
        let eenv = with(
            &common,
            &[
                ("SLUICE_EXECUTION_NATS_URL", nats.url()),
                ("SLUICE_EXECUTION_DISPATCHER_URL", dispatcher_url.clone()),
                ("SLUICE_EXECUTION_LISTEN", "127.0.0.1:0".into()),
                ("SLUICE_EXECUTION_OPS_LISTEN", "127.0.0.1:0".into()),
                ("SLUICE_EXECUTION_MODE", if o.paper { "paper" } else { "live" }.into()),
            ],
        );
        let (e, found) = start("execution", &etext, &eenv).await?;
        services.push(e);
        let execution_grpc = found[0].clone();

        // Probes every second; a notification a moment after an alert starts or ends.
        let receiver = MockReceiver::start(stop.clone()).await?;
        let mut atext = sluice_alerting::config::SHIPPED.to_owned();
        for (from, to) in [
            ("interval = \"30s\"", "interval = \"1s\""),
            ("retry_interval = \"2s\"", "retry_interval = \"500ms\""),
            ("group_wait = \"1s\"", "group_wait = \"500ms\""),
            ("group_interval = \"30s\"", "group_interval = \"2s\""),
        ] {
            anyhow::ensure!(atext.contains(from), "the shipped alerting config has no '{from}'");
            atext = atext.replacen(from, to, 1);
        }
        let aenv = with(
            &common,
            &[
                ("SLUICE_ALERTING_NATS_URL", nats.url()),
                ("SLUICE_ALERTING_DISPATCHER_URL", dispatcher_url.clone()),
                ("SLUICE_ALERTING_LISTEN", "127.0.0.1:0".into()),
                ("SLUICE_ALERTING_OPS_LISTEN", "127.0.0.1:0".into()),
                ("SLUICE_ALERT_WEBHOOK_URL", receiver.url("webhook")),
            ],
        );
        let (a, found) = start("alerting", &atext, &aenv).await?;
        services.push(a);
        let alerting_grpc = found[0].clone();
        Ok(Pipeline { nats, otlp, sim, receiver, dispatcher_url, execution_grpc, alerting_grpc, services, dispatcher_text, _stop: guard })
    }

    /// The running service `name` (dispatcher, collector, signal, execution, alerting).
    pub fn service(&mut self, name: &str) -> anyhow::Result<&mut Service> {
        self.services.iter_mut().find(|s| s.name == name).with_context(|| format!("no service '{name}' in the pipeline"))
    }

    /// `kill -9` of `name`.
    pub fn kill(&mut self, name: &str) -> anyhow::Result<()> {
        self.service(name)?.kill();
        Ok(())
    }

    /// Starts `name` again (killing it first if it runs) and waits until it
    /// serves: the dispatcher on the address it had, the others wherever they
    /// bind (their new gRPC addresses are kept here).
    pub async fn restart(&mut self, name: &str) -> anyhow::Result<()> {
        let (marker, keys) = marker(name)?;
        let text = (name == "dispatcher").then(|| self.dispatcher_text.clone());
        let found = self.service(name)?.restart(text.as_deref(), marker, keys).await?;
        match name {
            "execution" => self.execution_grpc = found[0].clone(),
            "alerting" => self.alerting_grpc = found[0].clone(),
            _ => {}
        }
        Ok(())
    }
}
