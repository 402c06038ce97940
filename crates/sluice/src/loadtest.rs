//! `sluice loadtest`: the command line of [`sluice_loadtest`]. One subcommand per
//! kind of target (`http`, `ws`, `call`, `submit`) with the sweep's options, and
//! `serve`, a local target with a known latency to calibrate against.

use std::io::Write as _;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context;
use bytes::Bytes;
use sluice_loadtest::target::{CallTarget, HttpTarget, SubmitTarget, WsTarget};
use sluice_loadtest::{Plan, RunReport, Target, Threshold};
use sluice_proto::dispatcher::v1::CallRequest;
use sluice_proto::execution::v1::{OrderType, Side, SubmitOrderRequest};
use sluice_service::credentials::Bearer;
use tokio_util::sync::CancellationToken;

fn duration(s: &str) -> Result<Duration, String> {
    sluice_service::duration::parse(s).map_err(|e| e.to_string())
}

/// Options of `sluice loadtest`.
#[derive(Debug, clap::Args)]
pub struct LoadtestArgs {
    #[command(subcommand)]
    pub target: TargetCmd,
}

/// What to load.
#[derive(Debug, clap::Subcommand)]
pub enum TargetCmd {
    /// An HTTP endpoint: one kept-alive connection per client.
    Http {
        /// http:// or https:// URL.
        url: String,
        #[arg(long, short = 'm', default_value = "GET")]
        method: String,
        /// A request header, `Name: value` (repeatable).
        #[arg(long = "header", short = 'H')]
        headers: Vec<String>,
        /// The request body.
        #[arg(long, conflicts_with = "body_file")]
        body: Option<String>,
        /// The request body, from a file.
        #[arg(long)]
        body_file: Option<PathBuf>,
        #[command(flatten)]
        sweep: SweepArgs,
    },
    /// A WebSocket endpoint: per client, connect, send the subscribe message, time
    /// the first message, then count messages for the receive period.
    Ws {
        /// ws:// or wss:// URL.
        url: String,
        /// The message sent right after connecting.
        #[arg(long)]
        subscribe: Option<String>,
        #[arg(long, default_value = "5s", value_parser = duration)]
        receive_for: Duration,
        #[command(flatten)]
        sweep: SweepArgs,
    },
    /// The dispatcher's Call: one exchange request, sent again and again.
    Call {
        #[arg(long, default_value = "http://127.0.0.1:50051", env = "SLUICE_DISPATCHER_URL")]
        dispatcher: String,
        /// A file holding a bearer token, when the dispatcher names its clients.
        #[arg(long, env = "SLUICE_TOKEN_FILE")]
        token_file: Option<PathBuf>,
        #[arg(long, default_value = "upbit")]
        exchange: String,
        #[arg(long, default_value = "GET")]
        method: String,
        #[arg(long, default_value = "/v1/ticker")]
        path: String,
        #[arg(long, default_value = "markets=KRW-BTC")]
        query: String,
        /// A named account, for private endpoints.
        #[arg(long, default_value = "")]
        account: String,
        #[arg(long, default_value = "")]
        body: String,
        #[command(flatten)]
        sweep: SweepArgs,
    },
    /// The execution service's SubmitOrder, each with a fresh request id.
    Submit {
        #[arg(long, default_value = "http://127.0.0.1:50061", env = "SLUICE_EXECUTION_URL")]
        execution: String,
        #[arg(long, default_value = "paper")]
        account: String,
        #[arg(long, default_value = "KRW-BTC")]
        symbol: String,
        #[arg(long, value_enum, default_value = "buy")]
        side: OrderSide,
        /// Limit price; a market order without it.
        #[arg(long)]
        price: Option<String>,
        #[arg(long, default_value = "0.0001")]
        quantity: String,
        #[command(flatten)]
        sweep: SweepArgs,
    },
    /// A local HTTP and WebSocket target with a known latency distribution.
    Serve {
        #[arg(long, default_value = "127.0.0.1:8089")]
        listen: std::net::SocketAddr,
        /// Delays and their shares, as 2ms:98,40ms:1.5,300ms:0.5 (or one 5ms).
        #[arg(long, default_value = "0ms")]
        delays: sluice_loadtest::serve::Delays,
        /// On /ws: a message this often after the first.
        #[arg(long, default_value = "100ms", value_parser = duration)]
        ws_every: Duration,
    },
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum OrderSide {
    Buy,
    Sell,
}

/// The sweep: levels, bounds, mode, thresholds and outputs.
#[derive(Debug, Clone, clap::Args)]
pub struct SweepArgs {
    /// Concurrency levels (clients, each with its own connection).
    #[arg(long, value_delimiter = ',', default_values_t = [10usize, 50, 100, 500, 1000])]
    pub levels: Vec<usize>,
    /// Requests per client at each level (open loop: requests x clients in all).
    #[arg(long, short = 'n', default_value_t = 100)]
    pub requests: u64,
    #[arg(long, default_value = "30s", value_parser = duration)]
    pub timeout: Duration,
    /// Requests per client before the level's clock starts (not counted).
    #[arg(long, default_value_t = 1)]
    pub warmup: u64,
    /// End a level after this long even if requests remain.
    #[arg(long, value_parser = duration)]
    pub level_time: Option<Duration>,
    /// Open loop: this many requests/s over all clients, latency from each
    /// request's intended start.
    #[arg(long)]
    pub rate: Option<f64>,
    /// Fail (exit 2) unless every level meets it: p99<500ms, error_rate<1%, rps>100 (repeatable).
    #[arg(long = "threshold")]
    pub thresholds: Vec<Threshold>,
    /// Allow a target off this machine (exchanges limit and ban by IP).
    #[arg(long)]
    pub allow_remote: bool,
    #[command(flatten)]
    pub output: OutputArgs,
}

/// Where the report goes besides the terminal.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct OutputArgs {
    /// Write the whole report as JSON here.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// Write a CSV row per level here.
    #[arg(long)]
    pub csv: Option<PathBuf>,
    /// Write the chart (latency percentiles and throughput against concurrency) here.
    #[arg(long)]
    pub svg: Option<PathBuf>,
    /// No progress bars.
    #[arg(long)]
    pub no_progress: bool,
}

impl OutputArgs {
    /// The table on `out`, then the report as JSON, CSV and the chart to the
    /// paths given.
    pub fn write(&self, report: &RunReport, out: &mut (dyn std::io::Write + Send)) -> anyhow::Result<()> {
        write!(out, "{}", report.table())?;
        let files = [(&self.json, report.json()), (&self.csv, report.csv()), (&self.svg, sluice_loadtest::svg::chart(report))];
        for (path, text) in files {
            if let Some(p) = path {
                std::fs::write(p, text).with_context(|| format!("writing {}", p.display()))?;
                writeln!(out, "wrote {}", p.display())?;
            }
        }
        Ok(())
    }
}

impl SweepArgs {
    fn plan(&self) -> Plan {
        Plan {
            levels: self.levels.clone(),
            requests: self.requests,
            timeout: self.timeout,
            warmup: self.warmup,
            level_time: self.level_time,
            rate: self.rate,
            progress: !self.output.no_progress,
        }
    }
}

/// Runs `sluice loadtest`; `Ok(false)` when a threshold failed.
pub async fn run(a: LoadtestArgs, out: &mut (dyn std::io::Write + Send)) -> anyhow::Result<bool> {
    let (target, sweep) = match a.target {
        TargetCmd::Http { url, method, headers, body, body_file, sweep } => {
            let body = match (body, body_file) {
                (Some(b), _) => Bytes::from(b),
                (None, Some(f)) => Bytes::from(std::fs::read(&f).with_context(|| format!("reading the body from {}", f.display()))?),
                (None, None) => Bytes::new(),
            };
            (Target::Http(HttpTarget::new(&url, &method, &headers, body)?), sweep)
        }
        TargetCmd::Ws { url, subscribe, receive_for, sweep } => (Target::WebSocket(WsTarget::new(&url, subscribe, receive_for)?), sweep),
        TargetCmd::Call { dispatcher, token_file, exchange, method, path, query, account, body, sweep } => {
            let request = CallRequest {
                exchange,
                account,
                method,
                path,
                query,
                body: body.into_bytes(),
                // No `timeout`: the dispatcher's default applies (a longer one than
                // its maximum would be refused); the client gives up at --timeout.
                ..CallRequest::default()
            };
            let bearer = Bearer::from_file(token_file.as_deref())?;
            (Target::Call(CallTarget::new(&dispatcher, request, bearer)?), sweep)
        }
        TargetCmd::Submit { execution, account, symbol, side, price, quantity, sweep } => {
            let mut order =
                SubmitOrderRequest { account, symbol, quantity, price: price.clone().unwrap_or_default(), ..Default::default() };
            order.set_side(match side {
                OrderSide::Buy => Side::Buy,
                OrderSide::Sell => Side::Sell,
            });
            order.set_type(if price.is_some() { OrderType::Limit } else { OrderType::Market });
            (Target::Submit(SubmitTarget::new(&execution, order)?), sweep)
        }
        TargetCmd::Serve { listen, delays, ws_every } => {
            let stop = sluice_service::shutdown::on_signals();
            serve(listen, &delays, ws_every, stop, out).await?;
            return Ok(true);
        }
    };
    let report = sluice_loadtest::run(target, &sweep.plan(), &sweep.thresholds, sweep.allow_remote, &mut |w| {
        let _ = writeln!(std::io::stderr(), "{w}");
    })
    .await?;
    sweep.output.write(&report, out)?;
    Ok(report.passed)
}

/// `sluice loadtest serve`: until interrupted.
pub async fn serve(
    listen: std::net::SocketAddr,
    delays: &sluice_loadtest::serve::Delays,
    ws_every: Duration,
    stop: CancellationToken,
    out: &mut (dyn std::io::Write + Send),
) -> anyhow::Result<()> {
    let served = sluice_loadtest::serve::serve(listen, delays, ws_every, stop.cancelled_owned())
        .await
        .with_context(|| format!("listening on {listen}"))?;
    writeln!(out, "serving http://{a}/ (any path) and ws://{a}/ws; delays {delays}", a = served.addr)?;
    out.flush()?;
    let _ = served.task.await;
    Ok(())
}
