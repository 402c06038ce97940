//! `sluice top`: a live summary of the dispatcher's budgets (usage against limit,
//! rate factor, queue, in flight, 429s, bans) and of what the simulator saw,
//! refreshed from the dispatcher's WatchBudgets stream.

use std::fmt::Write as _;
use std::io::IsTerminal;
use std::time::Duration;

use sluice_proto::dispatcher::v1::dispatcher_client::DispatcherClient;
use sluice_proto::dispatcher::v1::{GetBudgetsResponse, WatchBudgetsRequest};
use sluice_sim::SimStats;

/// Options of `sluice top`.
#[derive(Debug, Clone, clap::Args)]
pub struct TopArgs {
    /// The dispatcher's gRPC address.
    #[arg(long, default_value = "http://127.0.0.1:50051", env = "SLUICE_DISPATCHER_URL")]
    pub dispatcher: String,
    /// The simulator's control endpoint, to show what the exchanges saw.
    #[arg(long, env = "SLUICE_SIM_ADMIN_URL")]
    pub sim: Option<String>,
    #[arg(long, default_value_t = 1000)]
    pub interval_ms: u64,
    /// Print one summary and exit.
    #[arg(long)]
    pub once: bool,
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
        let scope = format!("{}:{}", bucket.scope, bucket.scope_key);
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
    loop {
        let client = match DispatcherClient::connect(args.dispatcher.clone()).await {
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
            let text = render(&update, sim.as_ref());
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
                    WindowStatus { period: Some(PDuration { seconds: 10, nanos: 0 }), limit: 100, used: 7, ..WindowStatus::default() },
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
        assert!(text.contains("7/100") && text.contains("70/200000"), "{text}");
        assert!(text.contains("10s") && text.contains("1d"), "{text}");
        assert!(text.contains("0.80") && text.contains("2.0s"), "{text}");
        assert!(text.contains("simulated exchanges: 0 requests"), "{text}");
    }
}
