//! `sluice bench execute`: signals on NATS to orders at the exchange, live
//! through the dispatcher, with the execution service as its own process killed
//! with kill -9 and restarted during the run.
//!
//! In-process: a nats-server on a free port, the simulator (markets moving), a
//! dispatcher with the demo keys, and a collector (market data and the private
//! streams of Upbit and Bybit). Two loops, one per market (Upbit BTC-KRW, Bybit
//! BTC-USDT), each publish a signal on the `SIGNAL` stream, alternately BUY and
//! SELL, wait until its order has reached the exchange and ended, then pause
//! `--interval-ms`. Orders are market orders under a 0.5 % cap (a crossing
//! limit, immediate-or-cancel), so each signal is one order that fills.
//!
//! * Latency: from the signal's publication to its order's arrival at the
//!   simulated exchange (the simulator stamps each request when it arrives, in
//!   the same clock), so the exchange's own time is excluded and NATS, the
//!   journal (two acknowledged writes), the dispatcher and the HTTP hop are in.
//!   Signals published while the service was down or starting (until a second
//!   after it serves again, while its market data comes in), or in flight when
//!   it was killed, wait for the restart: they are counted apart and their
//!   catch-up time reported, so p50/p99 describe a running service.
//! * orders: signals whose order reached the exchange; duplicates: orders on the
//!   exchange beyond one per signal (a second order for a signal has another
//!   client id, so it is looked for among every order of the account); lost:
//!   signals with no order within `--settle-s` of the end.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::StreamExt;
use prost::Message;
use sluice_domain::Exchange;
use sluice_proto::execution::v1 as pb;
use sluice_proto::signal::v1 as sig;
use sluice_sim::SimConfig;
use tokio::time::Instant;

use crate::process::Service;
use crate::stack::{Stack, stack};

/// Options of `sluice bench execute`.
#[derive(Debug, Clone, clap::Args)]
pub struct ExecuteArgs {
    /// How long signals are published.
    #[arg(long, default_value_t = 60)]
    pub seconds: u64,
    /// kill -9 of the execution process, evenly spaced over the run, each
    /// followed by a restart.
    #[arg(long, default_value_t = 3)]
    pub kills: u32,
    /// A loop's pause between one signal's order ending and the next signal.
    #[arg(long, default_value_t = 100)]
    pub interval_ms: u64,
    /// After the run, how long orders may take to be found.
    #[arg(long, default_value_t = 30)]
    pub settle_s: u64,
}

const STRATEGIES: &str = r#"
[[strategies]]
venue = "upbit"
symbol = "BTC/KRW"
account = "upbit/demo"
sizing = { fixed_notional = "100000" }
min_confidence = 0.5
buy = "long"
sell = "flat"
order = { type = "market", slippage_cap = "0.005" }
cooldown_ms = 0

[[strategies]]
venue = "bybit"
symbol = "BTC/USDT"
account = "bybit/demo"
sizing = { fixed_notional = "100" }
min_confidence = 0.5
buy = "long"
sell = "flat"
order = { type = "market", slippage_cap = "0.005" }
cooldown_ms = 0
"#;

/// The shipped config, live, with these strategies and room for the bench's rate.
fn config_text() -> String {
    let shipped = sluice_execution::config::SHIPPED;
    let head = shipped.split("[[strategies]]").next().unwrap_or(shipped);
    let mut text = String::new();
    for line in head.lines() {
        let line = match line.split_once(" = ").map(|(k, _)| k) {
            Some("reconcile_every_ms") => "reconcile_every_ms = 2000",
            Some("max_orders_per_minute") => "max_orders_per_minute = 1200",
            Some("max_open_orders") => "max_open_orders = 50",
            _ => line,
        };
        text.push_str(line);
        text.push('\n');
    }
    text.replace("service = \"execution-0\"", "service = \"execution-bench\"\nconfirm_after_ms = 300") + STRATEGIES
}

fn now_ns() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_nanos() as i64)
}

/// One market's loop.
struct Market {
    exchange: Exchange,
    venue: &'static str,
    symbol: &'static str,
    account: &'static str,
}

const MARKETS: [Market; 2] = [
    Market { exchange: Exchange::Upbit, venue: "upbit", symbol: "BTC-KRW", account: "upbit/demo" },
    Market { exchange: Exchange::Bybit, venue: "bybit", symbol: "BTC-USDT", account: "bybit/demo" },
];

/// What one signal came to.
#[derive(Debug, Clone)]
struct Sent {
    exchange: Exchange,
    cid: String,
    published_ns: i64,
    /// Its order's arrival at the exchange.
    arrived_ns: Option<i64>,
    /// Published while the service was down or starting.
    during_restart: bool,
    /// Journaled as submitted (intent, risk and submit done), by the service's clock.
    submitted_ns: i64,
}

/// The execution process, restarted after each kill; the windows in which it was
/// not serving.
struct Proc {
    text: String,
    env: Vec<(String, String)>,
    current: Option<Service>,
    /// Kill to serving again, in ns since the epoch.
    down: Vec<(i64, i64)>,
}

impl Proc {
    async fn start(&mut self) -> anyhow::Result<()> {
        let bin = crate::process::binary("sluice-execution", "SLUICE_EXECUTION_BIN")?;
        let mut p = Service::spawn("execution-bench", &bin, &self.text, &self.env)?;
        p.logged("execution service running", &["grpc_addr="], Duration::from_secs(30)).await?;
        self.current = Some(p);
        Ok(())
    }

    async fn kill_and_restart(&mut self) -> anyhow::Result<()> {
        let at = now_ns();
        if let Some(p) = self.current.as_mut() {
            p.kill();
        }
        self.start().await?;
        self.down.push((at, now_ns()));
        Ok(())
    }
}

/// What `exec.*.*.order` said of each order, by client order id: its latest
/// status and when it was journaled as submitted (its `updated_unix_ns` then).
type Statuses = Arc<Mutex<HashMap<String, (i32, i64)>>>;

async fn watch_orders(nats: &async_nats::Client) -> anyhow::Result<Statuses> {
    let mut sub = nats.subscribe("exec.*.*.order").await?;
    nats.flush().await?;
    let seen: Statuses = Arc::default();
    let s = seen.clone();
    tokio::spawn(async move {
        while let Some(m) = sub.next().await {
            if let Ok(o) = pb::Order::decode(m.payload) {
                let mut seen = s.lock().unwrap_or_else(|p| p.into_inner());
                let e = seen.entry(o.client_order_id).or_insert((o.status, 0));
                e.0 = o.status;
                if o.status == pb::OrderStatus::Submitted as i32 {
                    e.1 = o.updated_unix_ns;
                }
            }
        }
    });
    Ok(seen)
}

fn ended(status: i32) -> bool {
    use pb::OrderStatus as S;
    [S::Filled, S::Cancelled, S::Rejected, S::Expired, S::Denied].iter().any(|s| *s as i32 == status)
}

/// One market's signals until `end`.
async fn run_loop(
    st: Arc<Stack>,
    m: &'static Market,
    js: async_nats::jetstream::Context,
    statuses: Statuses,
    end: Instant,
    interval: Duration,
    down: Arc<Mutex<bool>>,
) -> anyhow::Result<Vec<Sent>> {
    let mut out = Vec::new();
    let mut i = 0u64;
    while Instant::now() < end {
        let id = format!("bench-{}-{}-{i}", m.venue, std::process::id());
        let action = if i.is_multiple_of(2) { sig::Action::Buy } else { sig::Action::Sell };
        let ts_ns = now_ns();
        let signal = sig::Signal {
            venue: m.venue.into(),
            symbol: m.symbol.into(),
            action: action as i32,
            confidence: 0.9,
            ts_ns,
            id: id.clone(),
            ..Default::default()
        };
        let during_restart = *down.lock().unwrap_or_else(|p| p.into_inner());
        js.publish(format!("signal.{}.{}", m.venue, m.symbol), signal.encode_to_vec().into()).await?.await?;
        let cid = sluice_execution::ids::derive(&sluice_execution::ids::signal_cause(&id, m.venue, m.symbol, ts_ns, m.account));
        // Until its order is at the exchange, then until it has ended here.
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut sent =
            Sent { exchange: m.exchange, cid: cid.clone(), published_ns: ts_ns, arrived_ns: None, during_restart, submitted_ns: 0 };
        while Instant::now() < deadline {
            if sent.arrived_ns.is_none() {
                sent.arrived_ns = st
                    .sim
                    .orders(m.exchange, "demo")
                    .iter()
                    .find(|o| o.client_id.as_deref() == Some(cid.as_str()))
                    .map(|o| o.arrived_ns as i64);
            }
            let done = statuses.lock().unwrap_or_else(|p| p.into_inner()).get(&cid).copied().is_some_and(|(s, _)| ended(s));
            if sent.arrived_ns.is_some() && done {
                break;
            }
            tokio::time::sleep(Duration::from_millis(1)).await;
        }
        sent.submitted_ns = statuses.lock().unwrap_or_else(|p| p.into_inner()).get(&cid).map_or(0, |(_, at)| *at);
        out.push(sent);
        i += 1;
        tokio::time::sleep(interval).await;
    }
    Ok(out)
}

/// Runs the benchmark and prints its report, ending with
/// `p50_ms=… p99_ms=… orders=… duplicates=… lost=…`.
pub async fn run(args: ExecuteArgs, out: &mut impl std::io::Write) -> anyhow::Result<()> {
    let st = Arc::new(stack(SimConfig::shipped()).await?);
    let _guard = st.stop.clone().drop_guard();
    let mut ccfg = st.collector_config()?;
    ccfg.feeds.retain(|f| matches!(f.exchange, Exchange::Upbit | Exchange::Bybit) && f.market == Default::default());
    ccfg.private = vec![st.private_stream(Exchange::Upbit, "demo"), st.private_stream(Exchange::Bybit, "demo")];
    sluice_collector::start(ccfg, st.stop.clone()).await?;
    let nats = async_nats::connect(st.nats.url()).await?;
    let js = async_nats::jetstream::new(nats.clone());
    js.get_or_create_stream(async_nats::jetstream::stream::Config {
        name: "SIGNAL".into(),
        subjects: vec!["signal.>".into()],
        ..Default::default()
    })
    .await?;
    let statuses = watch_orders(&nats).await?;
    let env: Vec<(String, String)> = [
        ("SLUICE_EXECUTION_NATS_URL", st.nats.url()),
        ("SLUICE_EXECUTION_DISPATCHER_URL", st.dispatcher_url()),
        ("SLUICE_EXECUTION_LISTEN", "127.0.0.1:0".into()),
        ("SLUICE_EXECUTION_OPS_LISTEN", "127.0.0.1:0".into()),
        ("SLUICE_EXECUTION_MODE", "live".into()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v))
    .collect();
    let mut proc = Proc { text: config_text(), env, current: None, down: Vec::new() };
    proc.start().await?;
    // Market data and the instruments' rules before the first signal.
    tokio::time::sleep(Duration::from_secs(3)).await;
    writeln!(out, "execution process up; {} s of signals on 2 markets, {} kills", args.seconds, args.kills)?;

    let started = Instant::now();
    let end = started + Duration::from_secs(args.seconds);
    let down = Arc::new(Mutex::new(false));
    let mut loops = Vec::new();
    for m in &MARKETS {
        loops.push(tokio::spawn(run_loop(
            st.clone(),
            m,
            js.clone(),
            statuses.clone(),
            end,
            Duration::from_millis(args.interval_ms),
            down.clone(),
        )));
    }
    for k in 1..=args.kills {
        let at = started + Duration::from_secs(args.seconds) * k / (args.kills + 1);
        tokio::time::sleep_until(at).await;
        *down.lock().unwrap_or_else(|p| p.into_inner()) = true;
        proc.kill_and_restart().await?;
        *down.lock().unwrap_or_else(|p| p.into_inner()) = false;
        let (a, b) = proc.down.last().copied().unwrap_or_default();
        writeln!(out, "t={:>3}s kill -9, serving again after {} ms", at.duration_since(started).as_secs(), (b - a) / 1_000_000)?;
    }
    let mut sent = Vec::new();
    for l in loops {
        sent.extend(l.await??);
    }

    // Late arrivals: orders of signals not yet seen at the exchange.
    let settle = Instant::now() + Duration::from_secs(args.settle_s);
    while sent.iter().any(|s| s.arrived_ns.is_none()) && Instant::now() < settle {
        for s in sent.iter_mut().filter(|s| s.arrived_ns.is_none()) {
            s.arrived_ns = st
                .sim
                .orders(s.exchange, "demo")
                .iter()
                .find(|o| o.client_id.as_deref() == Some(s.cid.as_str()))
                .map(|o| o.arrived_ns as i64);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Duplicates: every order of the accounts beyond one per signal.
    let mut per_cid: BTreeMap<String, usize> = BTreeMap::new();
    for ex in [Exchange::Upbit, Exchange::Bybit] {
        for o in st.sim.orders(ex, "demo") {
            *per_cid.entry(o.client_id.unwrap_or_default()).or_default() += 1;
        }
    }
    let expected: std::collections::BTreeSet<&str> = sent.iter().map(|s| s.cid.as_str()).collect();
    let total_orders: usize = per_cid.values().sum();
    let orders = sent.iter().filter(|s| s.arrived_ns.is_some()).count();
    let duplicates = total_orders.saturating_sub(per_cid.keys().filter(|c| expected.contains(c.as_str())).count());
    let lost = sent.iter().filter(|s| s.arrived_ns.is_none()).count();

    // A restart is in a signal's way when the signal was published while the
    // process was down or starting (until a second after it serves again: its
    // market data comes in first), or before a kill with its order after it.
    let warm = 1_000_000_000;
    let hit = |s: &Sent| {
        s.during_restart
            || proc.down.iter().any(|(a, b)| {
                (s.published_ns >= *a && s.published_ns <= b + warm) || (s.published_ns <= *a && s.arrived_ns.is_none_or(|t| t >= *a))
            })
    };
    let mut running: Vec<f64> =
        sent.iter().filter(|s| !hit(s)).filter_map(|s| s.arrived_ns.map(|t| (t - s.published_ns) as f64 / 1e6)).collect();
    running.sort_by(f64::total_cmp);
    let mut caught: Vec<f64> =
        sent.iter().filter(|s| hit(s)).filter_map(|s| s.arrived_ns.map(|t| (t - s.published_ns) as f64 / 1e6)).collect();
    caught.sort_by(f64::total_cmp);
    let (p50, p99) = (crate::percentile(&running, 50.0), crate::percentile(&running, 99.0));
    writeln!(out, "signals: {} ({} with a running service, {} waited for a restart)", sent.len(), running.len(), caught.len())?;
    writeln!(
        out,
        "signal to order at the exchange, running service: p50 {p50:.3} ms, p90 {:.3} ms, p99 {p99:.3} ms, max {:.3} ms",
        crate::percentile(&running, 90.0),
        running.last().copied().unwrap_or(0.0)
    )?;
    // Where the time goes, for the running service: up to the submit journaled
    // (NATS delivery, the intent and submit written), then to the exchange
    // (the dispatcher and the HTTP hop).
    let mut to_submit: Vec<f64> = Vec::new();
    let mut to_exchange: Vec<f64> = Vec::new();
    for s in sent.iter().filter(|s| !hit(s) && s.submitted_ns > 0) {
        if let Some(t) = s.arrived_ns {
            to_submit.push((s.submitted_ns - s.published_ns) as f64 / 1e6);
            to_exchange.push((t - s.submitted_ns) as f64 / 1e6);
        }
    }
    to_submit.sort_by(f64::total_cmp);
    to_exchange.sort_by(f64::total_cmp);
    writeln!(
        out,
        "  signal to submit journaled: p50 {:.3} ms, p99 {:.3} ms; submit to the exchange: p50 {:.3} ms, p99 {:.3} ms",
        crate::percentile(&to_submit, 50.0),
        crate::percentile(&to_submit, 99.0),
        crate::percentile(&to_exchange, 50.0),
        crate::percentile(&to_exchange, 99.0)
    )?;
    if !caught.is_empty() {
        writeln!(
            out,
            "signals that waited for a restart: median {:.0} ms, max {:.0} ms",
            crate::percentile(&caught, 50.0),
            caught.last().copied().unwrap_or(0.0)
        )?;
    }
    // The dispatcher's own view of the orders' wait for budget.
    if let Ok(text) = reqwest::get(format!("http://{}/metrics", st.dispatcher.ops_addr)).await?.text().await {
        let sum = |name: &str| -> f64 {
            text.lines()
                .filter(|l| l.starts_with(name) && l.contains("class=\"order\""))
                .filter_map(|l| l.rsplit(' ').next().and_then(|v| v.parse::<f64>().ok()))
                .sum()
        };
        let (wait, n) = (sum("sluice_dispatcher_queue_wait_seconds_sum"), sum("sluice_dispatcher_queue_wait_seconds_count"));
        if n > 0.0 {
            writeln!(out, "  the dispatcher's queue wait for orders: mean {:.3} ms over {n} calls", wait / n * 1e3)?;
        }
    }
    writeln!(out, "orders on the exchanges: {total_orders} (for {} distinct client ids)", per_cid.len())?;
    for s in sent.iter().filter(|s| s.arrived_ns.is_none()) {
        writeln!(out, "lost: {} {} published at {} ns", s.exchange, s.cid, s.published_ns)?;
    }
    writeln!(out, "p50_ms={p50:.3} p99_ms={p99:.3} orders={orders} duplicates={duplicates} lost={lost}")?;
    drop(proc);
    Ok(())
}
