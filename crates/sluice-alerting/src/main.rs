//! `sluice-alerting`: read config, start logging, run until SIGTERM.

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;

/// Alerts on exchange and service trouble: rules over every service's
/// heartbeat and probes of each exchange, notified once per group.
#[derive(Parser)]
#[command(version)]
struct Args {
    /// TOML configuration file (SLUICE_ALERTING_* environment variables override it).
    #[arg(long, env = "SLUICE_ALERTING_CONFIG")]
    config: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    sluice_service::telemetry::init("sluice-alerting");
    let text = match &args.config {
        Some(p) => Some(std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?),
        None => None,
    };
    let config = sluice_alerting::AlertingConfig::load(text.as_deref(), None, &|k| std::env::var(k).ok())?;
    let ran = sluice_alerting::run(config, sluice_service::shutdown::on_signals()).await;
    // Spans still buffered go out before the process ends.
    sluice_service::telemetry::flush();
    ran?;
    Ok(())
}
