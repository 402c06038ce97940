//! `sluice-execution`: read config, start logging, run until SIGTERM.

use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;

/// Trading signals to orders under pre-trade risk; paper by default.
#[derive(Parser)]
#[command(version)]
struct Args {
    /// TOML configuration file (SLUICE_EXECUTION_* environment variables override it).
    #[arg(long, env = "SLUICE_EXECUTION_CONFIG")]
    config: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    sluice_service::telemetry::init("sluice-execution");
    let text = match &args.config {
        Some(p) => Some(std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?),
        None => None,
    };
    let config = sluice_execution::ExecutionConfig::load(text.as_deref(), &|k| std::env::var(k).ok())?;
    let ran = sluice_execution::run(config, sluice_service::shutdown::on_signals()).await;
    // Spans still buffered go out before the process ends.
    sluice_service::telemetry::flush();
    ran?;
    Ok(())
}
