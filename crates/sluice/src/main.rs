//! `sluice`: parse the command line and hand it to the library.

use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(version, about = "sluice: benchmarks, the live summary, and calls through the dispatcher")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Benchmarks.
    Bench {
        #[command(subcommand)]
        which: Bench,
    },
    /// Live summary of budgets, queues and 429s.
    Top(sluice::top::TopArgs),
    /// One exchange request through the dispatcher.
    Call(sluice::call::CallArgs),
    /// Steady market-data traffic through the dispatcher.
    Load(sluice::load::LoadArgs),
    /// A concurrency sweep or fixed-rate load against an HTTP or WebSocket
    /// endpoint, the dispatcher or the execution service: latency percentiles,
    /// errors by kind, thresholds (exit 2 when one fails), JSON, CSV and a chart.
    Loadtest(sluice::loadtest::LoadtestArgs),
    /// A local webhook receiver: prints each notification it is sent.
    Receive(sluice::receive::ReceiveArgs),
    /// One GET of a service's /readyz or /healthz: exit 0 on a 2xx answer.
    Health(sluice::health::HealthArgs),
    /// Configuration files.
    Config {
        #[command(subcommand)]
        which: ConfigCmd,
    },
}

#[derive(Subcommand)]
enum ConfigCmd {
    /// Reads each file as its service would and names every problem (kind from the file name, or --kind; rules: each with its line).
    Check(sluice::config_check::FilesArgs),
}

#[derive(Subcommand)]
enum Bench {
    /// The dispatcher against the simulator: achieved/allowed, 429s, added latency.
    Dispatch(sluice::bench::DispatchArgs),
    /// The collector's pipeline: frames/s on one core and wire-to-NATS latency.
    Collect(sluice::collect_bench::CollectArgs),
    /// The signal service through a mock gateway: tick-to-signal without the
    /// model's time, and money per 1,000 signals at the shipped routing.
    Signal(sluice::signal_bench::SignalArgs),
    /// The execution service live: signals to orders at the exchange through the
    /// dispatcher, with the execution process killed and restarted.
    Execute(sluice::execute_bench::ExecuteArgs),
    /// A fault in the simulator to the first notification at a mock webhook,
    /// and the heal to the resolved one.
    Alert(sluice::alert_bench::AlertArgs),
    /// ccxt processes sharing one Upbit account, directly and through the
    /// dispatcher's exchange-compatible face: accepted, 429s, bans, latency.
    Bots(sluice::bots_bench::BotsArgs),
    /// Tick to order sent across the services as separate processes, and the
    /// share of each step, from their own traces.
    Tick(sluice::tick_bench::TickArgs),
    /// A loadtest sweep of gRPC clients (default 10 to 1,000) through one
    /// dispatcher, with budgets that do not bind: its capacity and latency.
    Sweep(sluice::sweep_bench::SweepArgs),
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let mut out = std::io::stdout();
    match cli.command {
        Command::Bench { which: Bench::Dispatch(a) } if a.replicas > 1 => {
            if a.exchange != sluice_domain::Exchange::Upbit || a.limiter != sluice::bench::Limiter::Sluice {
                anyhow::bail!("--replicas runs Upbit through sluice only");
            }
            sluice::replicas::run(a.replica_run(), &mut out).await?;
        }
        Command::Bench { which: Bench::Dispatch(a) } => {
            sluice::bench::dispatch(a, &mut out).await?;
        }
        Command::Bench { which: Bench::Collect(a) } => sluice::collect_bench::run(a, &mut out).await?,
        Command::Bench { which: Bench::Signal(a) } => sluice::signal_bench::run(a, &mut out).await?,
        Command::Bench { which: Bench::Alert(a) } => sluice::alert_bench::run(a, &mut out).await?,
        Command::Bench { which: Bench::Execute(a) } => sluice::execute_bench::run(a, &mut out).await?,
        Command::Bench { which: Bench::Bots(a) } => sluice::bots_bench::run(a, &mut out).await?,
        Command::Bench { which: Bench::Tick(a) } => sluice::tick_bench::run(a, &mut out).await?,
        Command::Bench { which: Bench::Sweep(a) } => {
            sluice::sweep_bench::run(a, &mut out).await?;
        }
        Command::Top(a) => sluice::top::run(a, &mut out).await?,
        Command::Health(a) => sluice::health::run(a, &mut out).await?,
        Command::Call(a) => sluice::call::run(a, &mut out).await?,
        Command::Config { which: ConfigCmd::Check(a) } => sluice::config_check::run_files(a, &mut out)?,
        Command::Receive(a) => sluice::receive::run(a, sluice_service::shutdown::on_signals()).await?,
        Command::Load(a) => sluice::load::run(a, sluice_service::shutdown::on_signals(), &mut out).await?,
        Command::Loadtest(a) => {
            if !sluice::loadtest::run(a, &mut out).await? {
                use std::io::Write as _;
                out.flush()?;
                // 2: the run finished and a threshold failed (1 is an error).
                std::process::exit(2);
            }
        }
    }
    Ok(())
}
