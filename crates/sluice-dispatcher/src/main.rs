//! `sluice-dispatcher`: read config, start logging, run until SIGTERM.

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;

/// The one gate to the exchanges: holds every API key and rate-limit budget.
#[derive(Parser)]
#[command(version)]
struct Args {
    /// TOML configuration file (SLUICE_DISPATCHER_* environment variables override it).
    #[arg(long, env = "SLUICE_DISPATCHER_CONFIG")]
    config: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    sluice_service::telemetry::init("sluice-dispatcher");
    let text = match &args.config {
        Some(p) => Some(std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?),
        None => None,
    };
    let config = sluice_dispatcher::DispatcherConfig::load(text.as_deref(), &|k| std::env::var(k).ok())?;
    let ran = sluice_dispatcher::run(config, sluice_service::shutdown::on_signals()).await;
    // Spans still buffered go out before the process ends.
    sluice_service::telemetry::flush();
    ran?;
    Ok(())
}
