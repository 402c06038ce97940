//! `sluice-sim`: the exchange simulator as a process (for `scripts/up` and manual use).

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use sluice_domain::Exchange;

/// Simulated Upbit, Bybit, Binance and OKX REST servers on loopback.
#[derive(Parser)]
#[command(version)]
struct Args {
    /// A TOML file merged over the shipped config/sim.toml.
    #[arg(long, env = "SLUICE_SIM_CONFIG")]
    config: Option<PathBuf>,
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1")]
    bind: IpAddr,
    /// Control endpoint on this port; upbit, bybit, binance and okx on the next four.
    /// 0 picks free ports.
    #[arg(long, default_value_t = 0)]
    port_base: u16,
    /// Arrival jitter bound in milliseconds.
    #[arg(long)]
    jitter_ms: Option<u64>,
    /// Write the simulated accounts' credentials into this directory in the
    /// dispatcher's mounted-secret layout (<dir>/<exchange>/<account>/…), then exit.
    #[arg(long)]
    write_credentials: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let text = match &args.config {
        Some(p) => Some(std::fs::read_to_string(p).with_context(|| format!("reading {}", p.display()))?),
        None => None,
    };
    let mut cfg = sluice_sim::SimConfig::load(&text.iter().map(String::as_str).collect::<Vec<_>>())?;
    if let Some(dir) = &args.write_credentials {
        for a in &cfg.accounts {
            let d = dir.join(a.exchange.as_str()).join(&a.name);
            std::fs::create_dir_all(&d).with_context(|| format!("creating {}", d.display()))?;
            std::fs::write(d.join("api_key"), &a.api_key)?;
            std::fs::write(d.join("secret"), &a.secret)?;
            if let Some(p) = &a.passphrase {
                std::fs::write(d.join("passphrase"), p)?;
            }
        }
        return Ok(());
    }
    sluice_service::telemetry::init("sluice-sim");
    if let Some(j) = args.jitter_ms {
        cfg.jitter_ms = j;
    }
    if args.port_base != 0 {
        cfg.admin = Some(SocketAddr::new(args.bind, args.port_base));
        for (i, ex) in Exchange::ALL.into_iter().enumerate() {
            cfg.listen.insert(ex, SocketAddr::new(args.bind, args.port_base + 1 + i as u16));
        }
    }
    sluice_sim::run(cfg, sluice_service::shutdown::on_signals()).await?;
    Ok(())
}
