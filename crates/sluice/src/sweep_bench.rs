//! `sluice bench sweep`: how many gRPC clients one dispatcher carries. A
//! `sluice loadtest call` sweep (default 10 to 1,000 clients, 100 calls each,
//! each client on its own HTTP/2 connection) through an in-process dispatcher to
//! the simulator, with the endpoint's limit raised a thousandfold on both sides
//! so that no budget binds: what is measured is the dispatcher's own capacity
//! and latency under concurrency, not the exchange's limit.

use std::time::Duration;

use anyhow::Context;
use sluice_domain::Exchange;
use sluice_loadtest::target::CallTarget;
use sluice_loadtest::{Plan, RunReport, Target};
use sluice_proto::dispatcher::v1::CallRequest;
use sluice_service::credentials::Bearer;
use tokio_util::sync::CancellationToken;

/// Options of `sluice bench sweep`.
#[derive(Debug, Clone, clap::Args)]
pub struct SweepArgs {
    #[arg(long, default_value = "upbit")]
    pub exchange: Exchange,
    #[arg(long, value_delimiter = ',', default_values_t = [10usize, 50, 100, 500, 1000])]
    pub levels: Vec<usize>,
    /// Calls per client at each level.
    #[arg(long, default_value_t = 100)]
    pub requests: u64,
    #[command(flatten)]
    pub output: crate::loadtest::OutputArgs,
}

/// Runs the sweep and writes the table (and the files asked for).
pub async fn run(a: SweepArgs, out: &mut (dyn std::io::Write + Send)) -> anyhow::Result<RunReport> {
    let (path, query, group, _weight) = crate::bench::target(a.exchange);
    let period_ms = 1_000;
    let (sim_table, policy) = crate::bench::unbound_group(a.exchange, group, period_ms);
    let sim_cfg = sluice_sim::SimConfig::load(&[&format!("jitter_ms = 0\n{sim_table}")]).context("simulator config")?;
    let stop = CancellationToken::new();
    let sim = sluice_sim::start(sim_cfg, stop.clone()).await?;
    let (running, file) = crate::bench::start_dispatcher(&sim, &stop, Some(policy)).await?;
    let url = format!("http://{}", running.grpc_addr);
    writeln!(
        out,
        "bench sweep: {} clients x {} calls of {} {path}?{query} through the dispatcher at {url}, budgets raised (not binding)",
        a.levels.iter().map(ToString::to_string).collect::<Vec<_>>().join("/"),
        a.requests,
        a.exchange
    )?;
    let timeout = Duration::from_secs(30);
    let request = CallRequest {
        exchange: a.exchange.to_string(),
        method: "GET".into(),
        path: path.into(),
        query: query.into(),
        timeout: Some(sluice_proto::prost_types::Duration { seconds: timeout.as_secs() as i64, nanos: 0 }),
        ..CallRequest::default()
    };
    let plan = Plan {
        levels: a.levels.clone(),
        requests: a.requests,
        timeout,
        warmup: 1,
        level_time: None,
        rate: None,
        progress: !a.output.no_progress,
    };
    let target = Target::Call(CallTarget::new(&url, request, Bearer::none())?);
    let result = sluice_loadtest::run(target, &plan, &[], false, &mut |_| {}).await;
    let http_429 = sim.stats().rate_limited();
    stop.cancel();
    let _ = running.wait().await;
    sim.join().await;
    if let Some(f) = file {
        let _ = std::fs::remove_file(f);
    }
    let report = result?;
    a.output.write(&report, out)?;
    writeln!(out, "simulator 429s: {http_429}")?;
    Ok(report)
}
