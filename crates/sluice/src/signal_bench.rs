//! `sluice bench signal`: the signal service in-process with the shipped config
//! (its routing, models and prices), a nats-server on a free port, and a mock
//! OpenAI-compatible gateway on port 0 that answers at once. Trades for a few
//! symbols go in on `md.>`, each 1.5 % away from the one before, so every trade
//! is a move trigger; every signal that comes out is timed and costed.
//!
//! * Tick to signal without the model: the signal's `tick_to_signal` (the
//!   triggering trade received to signal made) minus its `model_latency`.
//! * Money per 1,000 signals: the signals' own `cost.usd`. The mock counts
//!   tokens as characters / 4 of what it was sent and what it answers (real
//!   tokenizers differ), and its answers cycle HOLD 0.5, BUY 0.8, SELL 0.4,
//!   HOLD 0.6, so one routine answer in four is confident enough (>= 0.7) for
//!   the confirmation model. With `--headlines`, every symbol has a headline,
//!   so the sentiment model is asked too.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use futures::StreamExt;
use prost::Message;
use rust_decimal::Decimal;
use serde_json::{Value, json};
use sluice_proto::md::v1 as md;
use sluice_proto::signal::v1 as pb;
use tokio_util::sync::CancellationToken;

use crate::collect_bench::percentile;
use crate::replicas::Nats;

/// Options of `sluice bench signal`.
#[derive(Debug, Clone, clap::Args)]
pub struct SignalArgs {
    /// Signals to collect.
    #[arg(long, default_value_t = 400)]
    pub signals: usize,
    /// Between one symbol's trades (each one a move trigger), in ms.
    #[arg(long, default_value_t = 50)]
    pub interval_ms: u64,
    /// Give every symbol a headline, so the sentiment model is asked as well.
    #[arg(long)]
    pub headlines: bool,
}

const ANSWERS: [(&str, f64); 4] = [("HOLD", 0.5), ("BUY", 0.8), ("SELL", 0.4), ("HOLD", 0.6)];

async fn chat(State(n): State<Arc<AtomicU64>>, Json(body): Json<Value>) -> axum::response::Response {
    let i = n.fetch_add(1, Ordering::Relaxed) as usize;
    let (action, confidence) = ANSWERS[i % ANSWERS.len()];
    mock_answer(&body, action, confidence)
}

/// An OpenAI-compatible streamed answer (server-sent events) carrying a signal
/// verdict, with usage counted as characters / 4 of what was sent and answered:
/// the mock gateway of the benches.
pub fn mock_answer(body: &Value, action: &str, confidence: f64) -> axum::response::Response {
    use axum::response::IntoResponse;
    let answer = json!({ "action": action, "confidence": confidence, "horizon": "1h",
        "rationale": "Short-term momentum with a balanced book; no strong edge either way.",
        "key_levels": [{ "kind": "support", "price": "64000" }, { "kind": "resistance", "price": "66000" }] })
    .to_string();
    let sent: usize = body["messages"].as_array().map_or(0, |m| m.iter().map(|m| m["content"].as_str().map_or(0, str::len)).sum());
    let usage = json!({ "prompt_tokens": sent.div_ceil(4), "completion_tokens": answer.len().div_ceil(4) });
    let events = format!(
        "data: {}\n\ndata: {}\n\ndata: [DONE]\n\n",
        json!({ "choices": [{ "delta": { "content": answer } }] }),
        json!({ "choices": [], "usage": usage })
    );
    ([("content-type", "text/event-stream")], events).into_response()
}

fn nanos(d: &Option<sluice_proto::prost_types::Duration>) -> i64 {
    d.as_ref().map_or(0, |d| d.seconds * 1_000_000_000 + i64::from(d.nanos))
}

pub async fn run(args: SignalArgs, out: &mut impl std::io::Write) -> anyhow::Result<()> {
    let nats = Nats::start().await?;
    let answered = Arc::new(AtomicU64::new(0));
    let app = axum::Router::new().route("/v1/chat/completions", axum::routing::post(chat)).with_state(answered.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let gateway = format!("http://{}/v1", listener.local_addr()?);
    tokio::spawn(async move { axum::serve(listener, app).await });

    let env = |k: &str| match k {
        "SLUICE_SIGNAL_NATS_URL" => Some(nats.url()),
        "SLUICE_SIGNAL_OPS_LISTEN" => Some("127.0.0.1:0".to_owned()),
        "SLUICE_SIGNAL_GATEWAY_URL" => Some(gateway.clone()),
        "HOLYSHEEP_API_KEY" => Some("sk-bench".to_owned()),
        _ => None,
    };
    let mut cfg = sluice_signal::SignalConfig::load(None, &env)?;
    // Moves trigger the signals measured; the schedule (whose signals are not
    // counted) sets each symbol's first reference price.
    cfg.cadence.every_ms = 1_000;
    cfg.cadence.min_trades = 2;
    // The mock is the gateway: its limits are not what is measured here.
    cfg.gateway.requests_per_minute = 1_000_000;
    cfg.gateway.tokens_per_minute = 1_000_000_000;
    let symbols: Vec<(String, String)> = cfg.symbols.iter().map(|s| (s.venue.clone(), s.symbol.to_string())).collect();
    let stop = CancellationToken::new();
    let _guard = stop.clone().drop_guard();
    sluice_signal::start(cfg, stop.clone()).await?;

    let client = async_nats::connect(nats.url()).await?;
    let mut sub = client.subscribe("signal.>").await?;
    // Trades: alternately 65,000 and 66,000 (1.5 % apart, past the 0.5 % move).
    let (feed, stop2) = (client.clone(), stop.clone());
    let syms = symbols.clone();
    let (headlines, interval_ms) = (args.headlines, args.interval_ms);
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(Duration::from_millis(interval_ms.max(1)));
        let mut i: i64 = 0;
        loop {
            tokio::select! {
                _ = stop2.cancelled() => return,
                _ = tick.tick() => {}
            }
            i += 1;
            // Headlines now and then (the first may come before the service listens).
            if headlines && i % 20 == 1 {
                for (_, s) in &syms {
                    let base = s.split('/').next().unwrap_or("");
                    let _ = feed.publish(format!("news.{base}"), "Exchange reports record spot volumes".into()).await;
                }
            }
            for (venue, s) in &syms {
                let price = Decimal::from(if i % 2 == 0 { 65_000 } else { 66_000 });
                let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as i64);
                let t = md::Trade {
                    source: Some(md::Source { receive_ts_ns: now, ..Default::default() }),
                    trade_id: i.to_string(),
                    price: price.to_string(),
                    qty: "0.01".into(),
                    aggressor: 1,
                };
                let _ = feed.publish(format!("md.{venue}.trade.{}", s.replacen('/', "-", 1)), t.encode_to_vec().into()).await;
            }
        }
    });

    let mut ex_model: Vec<i64> = Vec::with_capacity(args.signals);
    let mut usd = Decimal::ZERO;
    let mut by_model: BTreeMap<String, usize> = BTreeMap::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    while ex_model.len() < args.signals {
        let Ok(Some(m)) = tokio::time::timeout_at(deadline, sub.next()).await else {
            anyhow::bail!("only {} signals within 120 s", ex_model.len());
        };
        let s = pb::Signal::decode(m.payload)?;
        if s.trigger != "move" {
            continue;
        }
        // In ns: `percentile` reports microseconds.
        ex_model.push((nanos(&s.tick_to_signal) - nanos(&s.model_latency)).max(0));
        usd += s.cost.as_ref().and_then(|c| c.usd.parse::<Decimal>().ok()).unwrap_or_default();
        *by_model.entry(format!("{} ({})", s.model, s.role)).or_default() += 1;
    }
    ex_model.sort_unstable();
    let n = ex_model.len();
    let per_1000 = (usd * Decimal::from(1000) / Decimal::from(n)).round_dp(6);
    let (p50, p99) = (percentile(&ex_model, 0.50), percentile(&ex_model, 0.99));
    writeln!(out, "symbols: {}, signals: {n}, model calls: {}", symbols.len(), answered.load(Ordering::Relaxed))?;
    writeln!(out, "answered by: {by_model:?}")?;
    writeln!(out, "tick to signal without the model: p50 {p50:.0} us, p99 {p99:.0} us")?;
    writeln!(out, "cost: {usd} USD for {n} signals = {per_1000} USD per 1,000 signals")?;
    writeln!(out, "signals={n} ex_model_p50_us={p50:.0} ex_model_p99_us={p99:.0} usd_per_1000={per_1000}")?;
    Ok(())
}
