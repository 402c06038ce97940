//! The trading pipeline with every service as its own process (the built
//! binaries, each with its config file and log, as `scripts/up` runs them) on a
//! nats-server and the simulator started here, all exporting their traces to an
//! OTLP receiver started here: the dispatcher (the simulator's demo keys), the
//! collector (every feed and the private streams on the simulator), the signal
//! service (the offline model, or a gateway named in the options) and the
//! execution service (live on the simulator, its Upbit orders a fixed size).
//! For the cross-service tests and `sluice bench tick`.

use std::time::Duration;

use anyhow::Context;
use sluice_domain::Exchange;
use sluice_sim::{SimConfig, SimHandle};
use sluice_testkit::Nats;
use sluice_testkit::otlp::Receiver;
use tokio_util::sync::CancellationToken;

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
}

/// A running pipeline; dropping it stops everything.
pub struct Pipeline {
    pub nats: Nats,
    pub otlp: Receiver,
    pub sim: SimHandle,
    pub dispatcher_url: String,
    pub execution_grpc: String,
    pub services: Vec<Service>,
    _stop: tokio_util::sync::DropGuard,
}

/// Starts `bin` and waits for its `marker` line; the values of `keys` there.
async fn start(
    name: &str,
    bin: &str,
    text: &str,
    env: &[(String, String)],
    marker: &str,
    keys: &[&str],
) -> anyhow::Result<(Service, Vec<String>)> {
    let path = binary(bin, &format!("SLUICE_{}_BIN", name.to_ascii_uppercase()))?;
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
        let common =
            vec![("SLUICE_OTLP_ENDPOINT".to_owned(), otlp.endpoint.clone()), ("OTEL_BSP_SCHEDULE_DELAY".to_owned(), "200".to_owned())];
        let mut services = Vec::new();

        let mut denv = keys.clone();
        denv.extend(with(&common, &[("SLUICE_DISPATCHER_HEARTBEAT_NATS_URL", nats.url())]));
        let dtext = format!(
            "listen = '127.0.0.1:0'\nops_listen = '127.0.0.1:0'\ndrain_grace_ms = 0\n[base_urls]\n{}",
            Exchange::ALL.iter().map(|ex| format!("{ex} = '{}'\n", sim.base_url(*ex))).collect::<String>()
        );
        let (d, found) = start("dispatcher", "sluice-dispatcher", &dtext, &denv, "dispatcher serving", &["grpc_addr="]).await?;
        services.push(d);
        let dispatcher_url = format!("http://{}", found[0]);

        let mut cenv = with(
            &common,
            &[
                ("SLUICE_COLLECTOR_NATS_URL", nats.url()),
                ("SLUICE_COLLECTOR_DISPATCHER_URL", dispatcher_url.clone()),
                ("SLUICE_COLLECTOR_OPS_LISTEN", "127.0.0.1:0".into()),
            ],
        );
        cenv.extend(collector_feed_env(&sim));
        services.push(start("collector", "sluice-collector", sluice_collector::config::SHIPPED, &cenv, "collector running", &[]).await?.0);

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
        services.push(start("signal", "sluice-signal", &stext, &senv, "signal service running", &[]).await?.0);

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
                ("SLUICE_EXECUTION_MODE", "live".into()),
            ],
        );
        let (e, found) = start("execution", "sluice-execution", &etext, &eenv, "execution service running", &["grpc_addr="]).await?;
        services.push(e);
        let execution_grpc = found.first().cloned().context("the execution service's address")?;
        Ok(Pipeline { nats, otlp, sim, dispatcher_url, execution_grpc, services, _stop: guard })
    }
}
