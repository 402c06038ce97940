//! `sluice bench tick`: tick to order sent, end to end across the services as
//! separate processes (`crate::pipeline`), from their own traces. The signal
//! service asks a mock OpenAI-compatible gateway that answers at once, BUY for
//! `--flip-s` seconds then SELL, each with confidence 0.9, so the real chain
//! trades: a trade published by the collector, the signal decided on it, the
//! order submitted by the execution service (live, market orders, no cooldown),
//! sent by the dispatcher to the simulator.
//!
//! For every trace with an order sent: from the trade's `collector.publish`
//! start to the `dispatcher.upstream` start (the order leaving for the
//! exchange), and the share of each step: waiting for the signal's schedule
//! (the trade published until `signal.decide` starts: signals are made on a
//! cadence, from the newest trade), `signal.decide` (features and the model),
//! the signal's way to the execution service (NATS and JetStream), the execution
//! service until its dispatcher call (risk, the journal's acknowledged writes),
//! and the dispatcher until the order leaves (validation, the wait for budget,
//! signing). Last line: `tick_to_order_p50_ms=<x> tick_to_order_p99_ms=<y> orders=<n>`.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::bail;
use axum::Json;
use clap::Args;
use serde_json::Value;
use sluice_testkit::otlp::Span;

use crate::percentile;
use crate::pipeline::{Options, Pipeline};

#[derive(Args, Debug)]
pub struct TickArgs {
    /// How long the pipeline trades.
    #[arg(long, default_value_t = 60)]
    pub seconds: u64,
    /// The mock model's answer flips between BUY and SELL this often.
    #[arg(long, default_value_t = 4)]
    pub flip_s: u64,
    /// The signal service's schedule.
    #[arg(long, default_value_t = 1000)]
    pub every_ms: u64,
}

/// The steps, in order, as (name, from, to) over a trace's span times.
const STEPS: [&str; 5] =
    ["signal schedule wait", "signal.decide", "signal to execution", "execution to dispatcher", "dispatcher to exchange"];

async fn chat(axum::extract::State(flip_s): axum::extract::State<u64>, Json(body): Json<Value>) -> axum::response::Response {
    let now = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default().as_secs();
    let action = if (now / flip_s.max(1)).is_multiple_of(2) { "BUY" } else { "SELL" };
    crate::signal_bench::mock_answer(&body, action, 0.9)
}

/// One trace's step durations (ms) and total, when it holds an order sent.
fn steps(spans: &[Span]) -> Option<([f64; 5], f64)> {
    let first = |name: &str| spans.iter().filter(|s| s.name == name).min_by_key(|s| s.start_time_unix_nano);
    let (p, d, e, c, u) = (
        first("collector.publish")?,
        first("signal.decide")?,
        first("execution.submit")?,
        first("dispatcher.call")?,
        first("dispatcher.upstream")?,
    );
    let ms = |a: u64, b: u64| b.saturating_sub(a) as f64 / 1e6;
    let sent = u.start_time_unix_nano;
    let parts = [
        ms(p.start_time_unix_nano, d.start_time_unix_nano),
        ms(d.start_time_unix_nano, d.end_time_unix_nano),
        ms(d.end_time_unix_nano, e.start_time_unix_nano),
        ms(e.start_time_unix_nano, c.start_time_unix_nano),
        ms(c.start_time_unix_nano, sent),
    ];
    Some((parts, ms(p.start_time_unix_nano, sent)))
}

pub async fn run(a: TickArgs, out: &mut impl std::io::Write) -> anyhow::Result<()> {
    if a.seconds == 0 || a.flip_s == 0 {
        bail!("--seconds and --flip-s must be positive");
    }
    let app = axum::Router::new().route("/v1/chat/completions", axum::routing::post(chat)).with_state(a.flip_s);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let gateway = format!("http://{}/v1", listener.local_addr()?);
    tokio::spawn(async move { axum::serve(listener, app).await });
    let edit = |from: &str, to: &str| (from.to_owned(), to.to_owned());
    let p = Pipeline::start(Options {
        signal_every_ms: a.every_ms,
        gateway_url: Some(gateway),
        // Every flip is an order: no cooldown, market orders (they fill at once).
        execution_edits: vec![
            edit("cooldown_ms = 30000", "cooldown_ms = 0"),
            edit("order = { type = \"limit\", offset_bp = \"0\" }", "order = { type = \"market\", slippage_cap = \"0.005\" }"),
        ],
        // The mock is the gateway: its limits are not what is measured.
        signal_edits: vec![
            edit("requests_per_minute = 60", "requests_per_minute = 1000000"),
            edit("tokens_per_minute = 200_000", "tokens_per_minute = 1000000000"),
        ],
        ..Options::default()
    })
    .await?;
    writeln!(
        out,
        "every service its own process; trading for {} s (model flips every {} s, signals every {} ms)",
        a.seconds, a.flip_s, a.every_ms
    )?;
    tokio::time::sleep(Duration::from_secs(a.seconds)).await;
    // The last spans leave their processes within the exporters' 200 ms delay.
    tokio::time::sleep(Duration::from_secs(2)).await;

    let mut traces: BTreeMap<Vec<u8>, Vec<Span>> = BTreeMap::new();
    for s in p.otlp.spans() {
        traces.entry(s.trace_id.clone()).or_default().push(s);
    }
    let measured: Vec<([f64; 5], f64)> = traces.values().filter_map(|t| steps(t)).collect();
    if measured.is_empty() {
        bail!("no trace reached an order in {} s ({} traces)", a.seconds, traces.len());
    }
    let mut totals: Vec<f64> = measured.iter().map(|(_, t)| *t).collect();
    totals.sort_by(f64::total_cmp);
    let (p50, p99) = (percentile(&totals, 50.0), percentile(&totals, 99.0));
    let sum: f64 = totals.iter().sum();
    writeln!(out, "orders traced: {}; tick to order sent p50 {p50:.2} ms, p99 {p99:.2} ms", measured.len())?;
    writeln!(out, "{:<26} {:>10} {:>10} {:>8}", "step", "p50_ms", "p99_ms", "share")?;
    for (i, name) in STEPS.iter().enumerate() {
        let mut v: Vec<f64> = measured.iter().map(|(parts, _)| parts[i]).collect();
        let share = v.iter().sum::<f64>() / sum * 100.0;
        v.sort_by(f64::total_cmp);
        writeln!(out, "{name:<26} {:>10.2} {:>10.2} {share:>7.1}%", percentile(&v, 50.0), percentile(&v, 99.0))?;
    }
    writeln!(out, "tick_to_order_p50_ms={p50:.2} tick_to_order_p99_ms={p99:.2} orders={}", measured.len())?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn span(name: &str, start_ms: u64, end_ms: u64) -> Span {
        Span { name: name.into(), start_time_unix_nano: start_ms * 1_000_000, end_time_unix_nano: end_ms * 1_000_000, ..Default::default() }
    }

    #[test]
    fn a_trace_splits_into_its_steps_and_one_without_an_order_does_not_count() {
        let t = vec![
            span("collector.publish", 100, 101),
            span("signal.decide", 180, 185),
            span("execution.submit", 187, 195),
            span("dispatcher.call", 190, 199),
            span("dispatcher.upstream", 192, 199),
        ];
        let (parts, total) = steps(&t).unwrap();
        // Whole milliseconds here, so the floats are exact.
        let ms = |x: f64| x.round() as i64;
        assert_eq!(parts.map(ms), [80, 5, 2, 3, 2]);
        assert_eq!(ms(total), 92);
        assert_eq!(ms(parts.iter().sum::<f64>()), ms(total), "the steps add up to the whole");
        assert!(steps(&t[..3]).is_none(), "no order sent, no figure");
    }
}
