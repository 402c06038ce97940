//! `sluice top`: a live summary of the dispatcher's budgets (usage against limit,
//! rate factor, queue, in flight, 429s, bans), of what the simulator saw, of the
//! live prices the collector publishes on NATS (best bid and ask of every book
//! with its age and state), the latest signals, and the execution service (its
//! trading state, PnL per account, open orders, positions and the latest fills),
//! refreshed from the dispatcher's WatchBudgets stream.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::io::IsTerminal;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use prost::Message;
use rust_decimal::Decimal;
use sluice_proto::execution::v1 as ex;
use sluice_proto::md::v1 as md;

use sluice_proto::dispatcher::v1::{GetBudgetsResponse, WatchBudgetsRequest};
use sluice_sim::SimStats;

/// Options of `sluice top`.
#[derive(Debug, Clone, clap::Args)]
pub struct TopArgs {
    /// The dispatcher's gRPC address.
    #[arg(long, default_value = "http://127.0.0.1:50051", env = "SLUICE_DISPATCHER_URL")]
    pub dispatcher: String,
    /// A file holding a bearer token, when the dispatcher names its clients.
    #[arg(long, env = "SLUICE_TOKEN_FILE")]
    pub token_file: Option<std::path::PathBuf>,
    /// The simulator's control endpoint, to show what the exchanges saw.
    #[arg(long, env = "SLUICE_SIM_ADMIN_URL")]
    pub sim: Option<String>,
    #[arg(long, default_value_t = 1000)]
    pub interval_ms: u64,
    /// Print one summary and exit.
    #[arg(long)]
    pub once: bool,
    /// NATS, to show the collector's live prices (`md.*.book.*` and its heartbeat,
    /// which also carries its private streams' state) and the latest signals.
    #[arg(long, env = "SLUICE_NATS_URL")]
    pub nats: Option<String>,
    /// The execution service's gRPC address, to show its trading state, PnL,
    /// open orders and positions (and, with --nats, its latest fills).
    #[arg(long, env = "SLUICE_EXECUTION_URL")]
    pub execution: Option<String>,
    /// The alerting service's gRPC address, to show the alerts open now.
    #[arg(long, env = "SLUICE_ALERTING_URL")]
    pub alerting: Option<String>,
}

/// The latest best levels of every book and the collectors' last heartbeats, as
/// read from NATS.
#[derive(Debug, Default)]
pub struct Board {
    /// (venue, symbol) to the last top of book.
    pub tops: BTreeMap<(String, String), md::BookTop>,
    pub heartbeats: BTreeMap<String, md::CollectorHeartbeat>,
    /// (venue, symbol) to its latest signal.
    pub signals: BTreeMap<(String, String), sluice_proto::signal::v1::Signal>,
    /// The execution service's latest fills, newest last.
    pub fills: std::collections::VecDeque<ex::ExecFill>,
}

/// Fills kept for the summary.
const FILLS_SHOWN: usize = 8;

impl Board {
    /// Takes one NATS message; anything that does not decode is ignored (a
    /// summary is no place to fail).
    pub fn take(&mut self, subject: &str, payload: &[u8]) {
        let parts: Vec<&str> = subject.split('.').collect();
        match parts.as_slice() {
            ["md", venue, "book", symbol] => {
                if let Ok(t) = md::BookTop::decode(payload) {
                    self.tops.insert(((*venue).to_owned(), symbol.replacen('-', "/", 1)), t);
                }
            }
            ["collector", "heartbeat", name] => {
                if let Ok(h) = md::CollectorHeartbeat::decode(payload) {
                    self.heartbeats.insert((*name).to_owned(), h);
                }
            }
            ["exec", _, _, "fill"] => {
                if let Ok(f) = ex::ExecFill::decode(payload) {
                    self.fills.push_back(f);
                    while self.fills.len() > FILLS_SHOWN {
                        self.fills.pop_front();
                    }
                }
            }
            ["signal", venue, symbol] => {
                if let Ok(s) = sluice_proto::signal::v1::Signal::decode(payload) {
                    self.signals.insert(((*venue).to_owned(), symbol.replacen('-', "/", 1)), s);
                }
            }
            _ => {}
        }
    }

    /// Books whose last top is live and carries both sides.
    pub fn live(&self) -> usize {
        self.tops.values().filter(|t| t.state == md::BookState::Live as i32 && t.bid.is_some() && t.ask.is_some()).count()
    }
}

/// Renders the live prices (pure, for tests); `now_ns` gives each book's age.
pub fn render_prices(board: &Board, now_ns: i64) -> String {
    let mut out = String::new();
    for (name, h) in &board.heartbeats {
        let _ = writeln!(
            out,
            "collector {name}: {} connections, {} reconnects, {} dropped, {} malformed",
            h.connections, h.reconnects, h.dropped, h.malformed
        );
    }
    for p in board.heartbeats.values().flat_map(|h| &h.private_streams) {
        let state = if p.connected { "up".to_owned() } else { format!("DOWN ({})", p.reason) };
        let _ = writeln!(out, "private {}/{}: {state}; {} events, {} reconnects", p.exchange, p.account, p.events, p.reconnects);
    }
    if !board.signals.is_empty() {
        let _ = writeln!(
            out,
            "{:<13} {:<10} {:<6} {:>5} {:<18} {:<9} {:>8} {:>10}",
            "VENUE", "SYMBOL", "SIGNAL", "CONF", "MODEL", "TRIGGER", "AGE", "COST_USD"
        );
        for ((venue, symbol), s) in &board.signals {
            let action = s.action().as_str_name().trim_start_matches("ACTION_");
            let age_s = (now_ns - s.ts_ns).max(0) / 1_000_000_000;
            let cost = s.cost.as_ref().map_or("-", |c| c.usd.as_str());
            let _ = writeln!(
                out,
                "{venue:<13} {symbol:<10} {action:<6} {:>5.2} {:<18} {:<9} {:>7}s {cost:>10}",
                s.confidence, s.model, s.trigger, age_s
            );
        }
    }
    if board.tops.is_empty() {
        let _ = writeln!(out, "no prices on NATS yet");
        return out;
    }
    let _ = writeln!(out, "{:<13} {:<10} {:>16} {:>16} {:>10} {:>8}  STATE", "VENUE", "SYMBOL", "BID", "ASK", "SPREAD_BP", "AGE");
    for ((venue, symbol), t) in &board.tops {
        let px = |l: &Option<md::Level>| l.as_ref().and_then(|l| l.price.parse::<Decimal>().ok());
        let (bid, ask) = (px(&t.bid), px(&t.ask));
        let spread = match (bid, ask) {
            (Some(b), Some(a)) if !(a + b).is_zero() => format!("{:.2}", (a - b) / ((a + b) / Decimal::TWO) * Decimal::from(10_000)),
            _ => "-".into(),
        };
        let shown = |d: Option<Decimal>| d.map_or_else(|| "-".to_owned(), |d| d.normalize().to_string());
        let age_ms = t.source.as_ref().map_or(0, |s| (now_ns - s.receive_ts_ns).max(0) / 1_000_000);
        let state = if t.state == md::BookState::Live as i32 { "live" } else { "RESYNCING" };
        let _ = writeln!(out, "{venue:<13} {symbol:<10} {:>16} {:>16} {spread:>10} {:>6}ms  {state}", shown(bid), shown(ask), age_ms);
    }
    out
}

/// The alerts pending or firing now.
async fn open_alerts(url: &str) -> anyhow::Result<Vec<sluice_proto::alert::v1::Alert>> {
    use sluice_proto::alert::v1 as al;
    let mut c = al::alerting_client::AlertingClient::connect(url.to_owned()).await?;
    Ok(c.list_alerts(al::ListAlertsRequest { include_resolved: false }).await?.into_inner().alerts)
}

/// Renders the open alerts (pure, for tests): firing first, worst first.
pub fn render_alerts(alerts: &[sluice_proto::alert::v1::Alert]) -> String {
    use sluice_proto::alert::v1 as al;
    let mut out = String::new();
    let firing = alerts.iter().filter(|a| a.state == al::AlertState::Firing as i32).count();
    let _ = writeln!(out, "\nalerts: {firing} firing, {} pending", alerts.len() - firing);
    let mut sorted: Vec<&al::Alert> = alerts.iter().collect();
    sorted.sort_by_key(|a| (a.state != al::AlertState::Firing as i32, -a.severity, a.name.clone()));
    for a in sorted.iter().take(12) {
        let sev = al::Severity::try_from(a.severity)
            .map(|s| s.as_str_name().trim_start_matches("SEVERITY_").to_ascii_lowercase())
            .unwrap_or_default();
        let state = if a.state == al::AlertState::Firing as i32 { "FIRING" } else { "pending" };
        let muted = if !a.silenced_by.is_empty() {
            " (silenced)"
        } else if !a.inhibited_by.is_empty() {
            " (inhibited)"
        } else {
            ""
        };
        let summary = a.annotations.get("summary").map(String::as_str).unwrap_or("");
        let _ = writeln!(out, "  {state:<7} {sev:<8} {:<24} {summary}{muted}", a.name);
    }
    out
}

/// What the execution service said, for one summary.
#[derive(Debug, Default)]
pub struct ExecView {
    pub state: ex::TradingStateChange,
    pub pnl: ex::PnlReport,
    pub open: Vec<ex::Order>,
    pub positions: Vec<ex::Position>,
}

/// Asks the execution service for one summary.
async fn exec_view(url: &str) -> anyhow::Result<ExecView> {
    let mut c = ex::execution_client::ExecutionClient::connect(url.to_owned()).await?;
    Ok(ExecView {
        state: c.get_trading_state(ex::GetTradingStateRequest {}).await?.into_inner(),
        pnl: c.get_pnl(ex::GetPnlRequest::default()).await?.into_inner(),
        open: c.list_orders(ex::ListOrdersRequest { open_only: true, limit: 10, ..Default::default() }).await?.into_inner().orders,
        positions: c.list_positions(ex::ListPositionsRequest::default()).await?.into_inner().positions,
    })
}

fn side(n: i32) -> &'static str {
    if n == ex::Side::Sell as i32 { "sell" } else { "buy" }
}

/// Renders the execution service's summary (pure, for tests).
pub fn render_execution(v: &ExecView, fills: &std::collections::VecDeque<ex::ExecFill>) -> String {
    let mut out = String::new();
    let state = v.state.state().as_str_name().trim_start_matches("TRADING_STATE_");
    let _ = writeln!(out, "execution: {state} (set by {}: {})", v.state.by, v.state.reason);
    let _ = writeln!(out, "{:<14} {:>14} {:>14} {:>12} {:>14} {:>16}", "ACCOUNT", "REALIZED", "UNREALIZED", "FEES", "DAY_PNL", "EQUITY");
    for a in &v.pnl.accounts {
        let _ =
            writeln!(out, "{:<14} {:>14} {:>14} {:>12} {:>14} {:>16}", a.account, a.realized, a.unrealized, a.fees, a.day_pnl, a.equity);
    }
    if v.positions.iter().any(|p| p.quantity != "0") {
        let _ = writeln!(out, "{:<14} {:<10} {:>14} {:>14} {:>14} {:>14}", "POSITION", "SYMBOL", "QTY", "AVG_COST", "MARK", "UNREALIZED");
        for p in v.positions.iter().filter(|p| p.quantity != "0") {
            let _ = writeln!(
                out,
                "{:<14} {:<10} {:>14} {:>14} {:>14} {:>14}",
                p.account, p.symbol, p.quantity, p.average_cost, p.mark_price, p.unrealized_pnl
            );
        }
    }
    if v.open.is_empty() {
        let _ = writeln!(out, "no open orders");
    } else {
        let _ = writeln!(out, "{:<34} {:<10} {:<4} {:>12} {:>14} {:>12}  STATUS", "OPEN ORDER", "SYMBOL", "SIDE", "QTY", "PRICE", "FILLED");
        for o in &v.open {
            let status = o.status().as_str_name().trim_start_matches("ORDER_STATUS_").to_ascii_lowercase();
            let _ = writeln!(
                out,
                "{:<34} {:<10} {:<4} {:>12} {:>14} {:>12}  {status}",
                o.client_order_id,
                o.symbol,
                side(o.side),
                o.quantity,
                o.price,
                o.filled_quantity
            );
        }
    }
    if !fills.is_empty() {
        let _ = writeln!(out, "{:<14} {:<10} {:<4} {:>12} {:>14} {:>12}  TRADE", "FILL", "SYMBOL", "SIDE", "QTY", "PRICE", "FEE");
        for f in fills.iter().rev() {
            let fee = if f.fee_asset.is_empty() { f.fee.clone() } else { format!("{} {}", f.fee, f.fee_asset) };
            let _ = writeln!(
                out,
                "{:<14} {:<10} {:<4} {:>12} {:>14} {:>12}  {}",
                f.account,
                f.symbol,
                side(f.side),
                f.quantity,
                f.price,
                fee,
                f.trade_id
            );
        }
    }
    out
}

fn now_ns() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as i64)
}

/// Keeps `board` up to date from NATS until the connection ends.
async fn watch_prices(url: &str, board: Arc<Mutex<Board>>) -> anyhow::Result<()> {
    let client = crate::connect::nats(url).await?;
    let mut books = client.subscribe("md.*.book.*").await?;
    let mut beats = client.subscribe("collector.heartbeat.*").await?;
    let mut signals = client.subscribe("signal.*.*").await?;
    let mut fills = client.subscribe("exec.*.*.fill").await?;
    // Signals come a minute apart: the latest of each symbol is read from the
    // SIGNAL stream at once (the live subscription brings the ones after).
    let js = async_nats::jetstream::new(client.clone());
    if let Ok(stream) = js.get_stream("SIGNAL").await {
        let cfg = async_nats::jetstream::consumer::pull::OrderedConfig {
            filter_subject: "signal.>".into(),
            deliver_policy: async_nats::jetstream::consumer::DeliverPolicy::LastPerSubject,
            ..Default::default()
        };
        if let Ok(mut c) = stream.create_consumer(cfg).await
            && let Ok(pending) = c.info().await.map(|i| i.num_pending)
            && let Ok(mut msgs) = c.messages().await
        {
            for _ in 0..pending {
                match tokio::time::timeout(Duration::from_secs(2), msgs.next()).await {
                    Ok(Some(Ok(m))) => board.lock().unwrap_or_else(|p| p.into_inner()).take(m.subject.as_str(), &m.payload),
                    _ => break,
                }
            }
        }
    }
    tokio::spawn(async move {
        loop {
            let m = tokio::select! {
                Some(m) = books.next() => m,
                Some(m) = beats.next() => m,
                Some(m) = signals.next() => m,
                Some(m) = fills.next() => m,
                else => break,
            };
            board.lock().unwrap_or_else(|p| p.into_inner()).take(m.subject.as_str(), &m.payload);
        }
    });
    Ok(())
}

fn secs(d: &Option<sluice_proto::prost_types::Duration>) -> f64 {
    d.as_ref().map_or(0.0, |d| d.seconds as f64 + f64::from(d.nanos) / 1e9)
}

fn window_name(s: f64) -> String {
    match s {
        s if s >= 86_400.0 && s % 86_400.0 == 0.0 => format!("{}d", s / 86_400.0),
        s if s >= 60.0 && s % 60.0 == 0.0 => format!("{}m", s / 60.0),
        s if s.fract() == 0.0 => format!("{s}s"),
        s => format!("{:.0}ms", s * 1000.0),
    }
}

/// Renders one summary (pure, for tests).
pub fn render(b: &GetBudgetsResponse, sim: Option<&SimStats>) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "sluice dispatcher {}  ({} budgets)", b.replica, b.buckets.len());
    let _ = writeln!(
        out,
        "{:<8} {:<20} {:<18} {:>13} {:>6} {:>5} {:>6} {:>5} {:>5} {:>4}  FROZEN",
        "EXCHANGE", "SCOPE", "GROUP", "USED/LIMIT", "WINDOW", "RATE", "QUEUE", "INFL", "429", "BANS"
    );
    let mut rows: Vec<_> = b.buckets.iter().collect();
    rows.sort_by(|a, b| (&a.exchange, &a.scope, &a.scope_key, &a.group).cmp(&(&b.exchange, &b.scope, &b.scope_key, &b.group)));
    for bucket in rows {
        // Connection ids are UUIDs: their first 8 characters keep the table aligned.
        let key = if bucket.scope == "connection" { bucket.scope_key.get(..8).unwrap_or(&bucket.scope_key) } else { &bucket.scope_key };
        let scope = format!("{}:{key}", bucket.scope);
        let group = if bucket.partition.is_empty() { bucket.group.clone() } else { format!("{}/{}", bucket.group, bucket.partition) };
        let frozen = secs(&bucket.frozen_for);
        for (i, w) in bucket.windows.iter().enumerate() {
            let first = i == 0;
            let _ = writeln!(
                out,
                "{:<8} {:<20} {:<18} {:>13} {:>6} {:>5} {:>6} {:>5} {:>5} {:>4}  {}",
                if first { bucket.exchange.as_str() } else { "" },
                if first { scope.as_str() } else { "" },
                if first { group.as_str() } else { "" },
                format!("{}/{}", w.used, w.limit),
                window_name(secs(&w.period)),
                if first { format!("{:.2}", bucket.rate_factor) } else { String::new() },
                if first { bucket.queued.to_string() } else { String::new() },
                if first { bucket.in_flight.to_string() } else { String::new() },
                if first { bucket.throttled_total.to_string() } else { String::new() },
                if first { bucket.bans_total.to_string() } else { String::new() },
                if first && frozen > 0.0 { format!("{frozen:.1}s") } else { String::new() },
            );
        }
    }
    // Where the exchange allows less than the policy file says: the operator should
    // fix the policy (GetBudgets and the metrics say the same).
    let learned: Vec<String> = b
        .buckets
        .iter()
        .flat_map(|bucket| bucket.windows.iter().map(move |w| (bucket, w)))
        .filter(|(_, w)| w.learned_limit > 0)
        .map(|(bucket, w)| {
            let per = window_name(secs(&w.period));
            format!(
                "  {}/{}:{}/{} per {per}: policy {}, exchange allows {} ({})",
                bucket.exchange, bucket.scope, bucket.scope_key, bucket.group, w.configured_limit, w.learned_limit, w.learned_from
            )
        })
        .collect();
    if !learned.is_empty() {
        let _ = writeln!(out, "learned limits below the policy:\n{}", learned.join("\n"));
    }
    if let Some(s) = sim {
        let requests: u64 = s.exchanges.iter().map(|v| v.requests).sum();
        let banned: u64 = s.exchanges.iter().map(|v| v.banned).sum();
        let worst = s
            .exchanges
            .iter()
            .flat_map(|v| v.buckets.iter().flat_map(move |b| b.windows.iter().map(move |w| (v.exchange.as_str(), b.group.as_str(), w))))
            .max_by(|a, b| (a.2.max_seen * b.2.limit).cmp(&(b.2.max_seen * a.2.limit)));
        let _ = write!(out, "simulated exchanges: {requests} requests, {} answered 429, {banned} refused by a ban", s.rate_limited());
        if let Some((ex, g, w)) = worst {
            let _ = write!(out, "; fullest window {ex}/{g} {}/{} per {} ms", w.max_seen, w.limit, w.period_ms);
        }
        let _ = writeln!(out);
        if !s.violations().is_empty() {
            let _ = writeln!(out, "WINDOWS OVER THEIR LIMIT: {}", s.violations().join("; "));
        }
    }
    out
}

async fn sim_stats(http: &reqwest::Client, url: &Option<String>) -> Option<SimStats> {
    let url = url.as_ref()?;
    let body = http.get(format!("{}/stats", url.trim_end_matches('/'))).send().await.ok()?.bytes().await.ok()?;
    serde_json::from_slice(&body).ok()
}

/// Runs `sluice top` until interrupted (or once).
pub async fn run(args: TopArgs, out: &mut dyn std::io::Write) -> anyhow::Result<()> {
    let http = sluice_service::http_client::client();
    let tty = std::io::stdout().is_terminal() && !args.once;
    let board = Arc::new(Mutex::new(Board::default()));
    if let Some(url) = &args.nats {
        watch_prices(url, board.clone()).await?;
        if args.once {
            // One summary must show prices: wait for the first live books.
            let until = tokio::time::Instant::now() + Duration::from_secs(10);
            while board.lock().unwrap_or_else(|p| p.into_inner()).live() == 0 {
                if tokio::time::Instant::now() > until {
                    anyhow::bail!("no live prices on NATS at {url} within 10 s: is the collector running?");
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            // Let the other venues' books arrive too.
            tokio::time::sleep(Duration::from_millis(1_500)).await;
        }
    }
    loop {
        let client = match crate::connect::dispatcher(&args.dispatcher, args.token_file.as_deref()).await {
            Ok(c) => c,
            Err(e) => {
                if args.once {
                    anyhow::bail!("cannot reach the dispatcher at {}: {e}", args.dispatcher);
                }
                writeln!(out, "waiting for the dispatcher at {} ({e})", args.dispatcher)?;
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        let interval = Duration::from_millis(args.interval_ms.max(100));
        let req = WatchBudgetsRequest {
            exchange: String::new(),
            interval: Some(sluice_proto::prost_types::Duration {
                seconds: interval.as_secs() as i64,
                nanos: interval.subsec_nanos() as i32,
            }),
        };
        let mut stream = match client.clone().watch_budgets(req).await {
            Ok(s) => s.into_inner(),
            Err(e) => {
                writeln!(out, "the dispatcher refused the budget stream: {e}")?;
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        while let Ok(Some(update)) = stream.message().await {
            let sim = sim_stats(&http, &args.sim).await;
            let mut text = render(&update, sim.as_ref());
            if args.nats.is_some() {
                text.push_str(&render_prices(&board.lock().unwrap_or_else(|p| p.into_inner()), now_ns()));
            }
            if let Some(url) = &args.execution {
                match exec_view(url).await {
                    Ok(v) => text.push_str(&render_execution(&v, &board.lock().unwrap_or_else(|p| p.into_inner()).fills)),
                    Err(e) if args.once => anyhow::bail!("cannot reach the execution service at {url}: {e}"),
                    Err(e) => {
                        let _ = writeln!(text, "execution service at {url}: {e}");
                    }
                }
            }
            if let Some(url) = &args.alerting {
                match open_alerts(url).await {
                    Ok(a) => text.push_str(&render_alerts(&a)),
                    Err(e) if args.once => anyhow::bail!("cannot reach the alerting service at {url}: {e}"),
                    Err(e) => {
                        let _ = writeln!(text, "alerting service at {url}: {e}");
                    }
                }
            }
            if tty {
                write!(out, "\x1b[2J\x1b[H{text}")?;
            } else {
                writeln!(out, "{text}")?;
            }
            out.flush()?;
            if args.once {
                return Ok(());
            }
        }
        writeln!(out, "budget stream ended; reconnecting")?;
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_proto::dispatcher::v1::{BucketStatus, WindowStatus};
    use sluice_proto::prost_types::Duration as PDuration;

    #[test]
    fn renders_every_window_and_the_simulators_view() {
        let b = GetBudgetsResponse {
            replica: "d-0".into(),
            buckets: vec![BucketStatus {
                exchange: "binance".into(),
                scope: "account".into(),
                scope_key: "demo".into(),
                group: "orders".into(),
                windows: vec![
                    WindowStatus {
                        period: Some(PDuration { seconds: 10, nanos: 0 }),
                        limit: 80,
                        used: 7,
                        configured_limit: 100,
                        learned_limit: 80,
                        learned_from: "rate-limit answer".into(),
                        ..WindowStatus::default()
                    },
                    WindowStatus {
                        period: Some(PDuration { seconds: 86_400, nanos: 0 }),
                        limit: 200_000,
                        used: 70,
                        ..WindowStatus::default()
                    },
                ],
                rate_factor: 0.8,
                frozen_for: Some(PDuration { seconds: 2, nanos: 0 }),
                throttled_total: 1,
                ..BucketStatus::default()
            }],
        };
        let text = render(&b, Some(&SimStats::default()));
        assert!(text.contains("account:demo"), "{text}");
        assert!(text.contains("7/80") && text.contains("70/200000"), "{text}");
        assert!(text.contains("binance/account:demo/orders per 10s: policy 100, exchange allows 80 (rate-limit answer)"), "{text}");
        assert!(text.contains("10s") && text.contains("1d"), "{text}");
        assert!(text.contains("0.80") && text.contains("2.0s"), "{text}");
        assert!(text.contains("simulated exchanges: 0 requests"), "{text}");
    }

    #[test]
    fn renders_live_prices_from_nats_messages() {
        let mut board = Board::default();
        let level = |p: &str| Some(md::Level { price: p.into(), qty: "1".into() });
        let top = md::BookTop {
            source: Some(md::Source { receive_ts_ns: 1_000_000_000, ..md::Source::default() }),
            state: md::BookState::Live as i32,
            bid: level("99.5"),
            ask: level("100.50"),
        };
        board.take("md.binance.book.BTC-USDT", &top.encode_to_vec());
        let resyncing = md::BookTop { state: md::BookState::Resyncing as i32, ..md::BookTop::default() };
        board.take("md.okx.book.ETH-USDT", &resyncing.encode_to_vec());
        board.take("md.okx.book.ETH-USDT.extra", b"ignored");
        board.take("md.okx.book.SOL-USDT", b"\xff not protobuf");
        let hb = md::CollectorHeartbeat { connections: 5, reconnects: 2, ..md::CollectorHeartbeat::default() };
        board.take("collector.heartbeat.c-0", &hb.encode_to_vec());
        assert_eq!(board.live(), 1);
        let text = render_prices(&board, 1_250_000_000);
        assert!(text.contains("collector c-0: 5 connections, 2 reconnects"), "{text}");
        let btc = text.lines().find(|l| l.contains("BTC/USDT")).unwrap();
        // Spread 1 on a mid of 100: 100 basis points; 250 ms old.
        assert!(
            btc.contains("99.5") && btc.contains("100.5") && btc.contains("100.00") && btc.contains("250ms") && btc.ends_with("live"),
            "{btc}"
        );
        assert!(text.lines().any(|l| l.contains("ETH/USDT") && l.ends_with("RESYNCING")), "{text}");
        assert!(!text.contains("SOL/USDT"), "{text}");

        let streams = vec![
            md::PrivateStreamHealth {
                exchange: "bybit".into(),
                account: "demo".into(),
                reason: "login refused".into(),
                ..Default::default()
            },
            md::PrivateStreamHealth { exchange: "upbit".into(), account: "demo".into(), connected: true, events: 3, ..Default::default() },
        ];
        let hb = md::CollectorHeartbeat { private_streams: streams, ..hb };
        board.take("collector.heartbeat.c-0", &hb.encode_to_vec());
        let text = render_prices(&board, 1_250_000_000);
        assert!(text.contains("private bybit/demo: DOWN (login refused); 0 events"), "{text}");
        assert!(text.contains("private upbit/demo: up; 3 events, 0 reconnects"), "{text}");

        use sluice_proto::signal::v1 as sig;
        let s = sig::Signal {
            action: sig::Action::Buy as i32,
            confidence: 0.85,
            model: "offline-trend-v1".into(),
            trigger: "move".into(),
            ts_ns: 250_000_000,
            cost: Some(sig::Cost { usd: "0".into(), ..Default::default() }),
            ..Default::default()
        };
        board.take("signal.binance.BTC-USDT", &s.encode_to_vec());
        let text = render_prices(&board, 2_250_000_000);
        let line = text.lines().find(|l| l.starts_with("binance") && l.contains("BUY")).unwrap_or_default();
        assert!(
            line.contains("BTC/USDT")
                && line.contains("0.85")
                && line.contains("offline-trend-v1")
                && line.contains("move")
                && line.contains("2s"),
            "{text}"
        );
    }

    #[test]
    fn renders_open_alerts_firing_first() {
        use sluice_proto::alert::v1 as al;
        let a = |name: &str, state: al::AlertState, sev: al::Severity| al::Alert {
            name: name.into(),
            state: state as i32,
            severity: sev as i32,
            annotations: [("summary".to_owned(), format!("{name} says"))].into(),
            ..Default::default()
        };
        let text = render_alerts(&[
            a("Slow", al::AlertState::Pending, al::Severity::Warning),
            a("Down", al::AlertState::Firing, al::Severity::Critical),
        ]);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[1], "alerts: 1 firing, 1 pending");
        assert!(lines[2].contains("FIRING") && lines[2].contains("critical") && lines[2].contains("Down says"), "{text}");
        assert!(lines[3].contains("pending"), "{text}");
    }

    #[test]
    fn renders_the_execution_service() {
        let mut board = Board::default();
        for i in 0..10 {
            let f = ex::ExecFill {
                account: "binance/demo".into(),
                symbol: "BTC-USDT".into(),
                trade_id: format!("t{i}"),
                side: ex::Side::Buy as i32,
                price: "65000".into(),
                quantity: "0.01".into(),
                fee: "0.65".into(),
                fee_asset: "USDT".into(),
                ..Default::default()
            };
            board.take("exec.binance.demo.fill", &f.encode_to_vec());
        }
        assert_eq!(board.fills.len(), FILLS_SHOWN, "only the latest are kept");
        let v = ExecView {
            state: ex::TradingStateChange {
                state: ex::TradingState::Halted as i32,
                reason: "drill".into(),
                by: "grpc".into(),
                time_unix_ns: 0,
            },
            pnl: ex::PnlReport {
                accounts: vec![ex::AccountPnl {
                    account: "binance/demo".into(),
                    realized: "12.5".into(),
                    unrealized: "-3".into(),
                    fees: "1.3".into(),
                    day_pnl: "8.2".into(),
                    equity: "10008.2".into(),
                }],
            },
            open: vec![ex::Order {
                client_order_id: "sl1".into(),
                symbol: "BTC-USDT".into(),
                side: ex::Side::Sell as i32,
                quantity: "0.01".into(),
                price: "66000".into(),
                status: ex::OrderStatus::PartiallyFilled as i32,
                filled_quantity: "0.004".into(),
                ..Default::default()
            }],
            positions: vec![ex::Position {
                account: "binance/demo".into(),
                symbol: "BTC-USDT".into(),
                quantity: "0.02".into(),
                average_cost: "64000".into(),
                mark_price: "63850".into(),
                unrealized_pnl: "-3".into(),
                ..Default::default()
            }],
        };
        let text = render_execution(&v, &board.fills);
        assert!(text.starts_with("execution: HALTED (set by grpc: drill)"), "{text}");
        assert!(text.lines().any(|l| l.starts_with("binance/demo") && l.contains("12.5") && l.contains("10008.2")), "{text}");
        assert!(
            text.lines().any(|l| l.starts_with("sl1") && l.contains("sell") && l.contains("0.004") && l.ends_with("partially_filled")),
            "{text}"
        );
        assert!(text.lines().any(|l| l.contains("64000") && l.contains("63850")), "{text}");
        assert!(text.lines().any(|l| l.contains("0.65 USDT") && l.ends_with("t9")), "the newest fill first: {text}");
        assert!(!text.contains(" t1\n"), "{text}");
    }
}
