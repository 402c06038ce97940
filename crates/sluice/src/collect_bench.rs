//! `sluice bench collect`: how fast the collector's pipeline turns exchange frames
//! into NATS messages on one core, and how long a frame takes from the wire to a
//! NATS subscriber. Frames are Bybit v5 order-book deltas and trades made from the
//! simulator's market (real shapes and sequence numbers), fed from memory so the
//! socket is not what is measured; NATS is a real nats-server on a free port.

use std::time::{Duration, Instant};

use futures::StreamExt;
use prost::Message;
use serde_json::json;
use sluice_collector::config::{Channel, FeedConfig, Market as Venue};
use sluice_collector::event::Parsed;
use sluice_collector::pipeline::{Output, Pipeline};
use sluice_domain::Exchange;
use sluice_proto::md::v1 as pb;
use sluice_sim::SimConfig;
use sluice_sim::market::{Event, Market};

use crate::replicas::Nats;

/// Options of `sluice bench collect`.
#[derive(Debug, Clone, clap::Args)]
pub struct CollectArgs {
    /// Frames pushed through the pipeline as fast as it goes.
    #[arg(long, default_value_t = 300_000)]
    pub frames: usize,
    /// Frames per second in the latency phase (paced, well under saturation).
    #[arg(long, default_value_t = 20_000)]
    pub latency_rate: u64,
    #[arg(long, default_value_t = 3)]
    pub latency_seconds: u64,
}

fn now_ns() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as i64)
}

/// Bybit frames from the simulated market: (frame, is_book).
fn frames(n: usize) -> Vec<(String, bool)> {
    let cfg = SimConfig::shipped();
    let mut m = Market::new(Exchange::Bybit, &cfg.markets, 7, 1_700_000_000_000);
    let mut u: std::collections::HashMap<String, u64> = std::collections::HashMap::new();
    let mut out = Vec::with_capacity(n);
    // The snapshots each book starts from.
    for i in m.instruments() {
        let (b, a) = i.book.top(50);
        let side = |v: Vec<(rust_decimal::Decimal, rust_decimal::Decimal)>| {
            v.iter().map(|(p, q)| json!([p.to_string(), q.to_string()])).collect::<Vec<_>>()
        };
        u.insert(i.native.clone(), 1);
        out.push((json!({"topic": format!("orderbook.50.{}", i.native), "type": "snapshot", "ts": 1, "data": {"s": i.native, "b": side(b), "a": side(a), "u": 1, "seq": 1}, "cts": 1}).to_string(), true));
    }
    let mut t = 1_700_000_000_000u64;
    while out.len() < n {
        t += 100;
        for e in m.step(t) {
            match e {
                Event::Book { native, changes } => {
                    let k = u.entry(native.clone()).or_default();
                    *k += 1;
                    let (mut b, mut a) = (Vec::new(), Vec::new());
                    for c in changes.iter().take(8) {
                        if c.bid { &mut b } else { &mut a }.push(json!([c.price.to_string(), c.qty.to_string()]));
                    }
                    out.push((json!({"topic": format!("orderbook.50.{native}"), "type": "delta", "ts": t, "data": {"s": native, "b": b, "a": a, "u": *k, "seq": *k}, "cts": t}).to_string(), true));
                }
                Event::Trade { native, trade } => {
                    out.push((json!({"topic": format!("publicTrade.{native}"), "type": "snapshot", "ts": t, "data": [{"T": t, "s": native, "S": if trade.buyer_taker {"Buy"} else {"Sell"}, "v": trade.qty.to_string(), "p": trade.price.to_string(), "L": "PlusTick", "i": trade.id.to_string(), "BT": false}]}).to_string(), false));
                }
            }
        }
    }
    out.truncate(n);
    out
}

fn feed() -> FeedConfig {
    FeedConfig {
        exchange: Exchange::Bybit,
        market: Venue::Spot,
        url: "ws://127.0.0.1:1/v5/public/spot".into(),
        symbols: ["BTC/USDT", "ETH/USDT", "SOL/USDT"].iter().map(|s| s.parse().expect("symbol")).collect(),
        channels: vec![Channel::Trade, Channel::Book],
        symbols_per_connection: 10,
        format: None,
        max_connection_age_ms: None,
    }
}

pub(crate) fn percentile(sorted: &[i64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i] as f64 / 1000.0
}

/// Parse-only cost per frame of one kind, in ns.
fn parse_only(frames: &[(String, bool)], book: bool) -> f64 {
    let picked: Vec<&String> = frames.iter().filter(|f| f.1 == book).map(|f| &f.0).take(100_000).collect();
    let start = Instant::now();
    let mut n = 0usize;
    for f in &picked {
        if let Ok(Parsed::Data(v)) = sluice_collector::parse::parse(Exchange::Bybit, f) {
            n += v.len();
        }
    }
    std::hint::black_box(n);
    start.elapsed().as_nanos() as f64 / picked.len().max(1) as f64
}

/// One frame as the collector handles it: stamped, parsed, applied, published.
/// Returns the NATS messages it became.
async fn pump(pipeline: &mut Pipeline, frame: &str, client: &async_nats::Client, outs: &mut Vec<Output>) -> anyhow::Result<u64> {
    let recv = now_ns();
    // The frames hold no gaps, so nothing is ever needed back from the exchange.
    let mut needs = Vec::new();
    if let Ok(Parsed::Data(v)) = sluice_collector::parse::parse(Exchange::Bybit, frame) {
        for md in v {
            pipeline.on_md(md, recv, outs, &mut needs);
        }
    }
    let n = outs.len() as u64;
    for o in outs.drain(..) {
        client.publish(o.subject, o.payload).await?;
    }
    Ok(n)
}

pub async fn run(a: CollectArgs, out: &mut dyn std::io::Write) -> anyhow::Result<()> {
    let frames = frames(a.frames);
    let books = frames.iter().filter(|f| f.1).count();
    writeln!(out, "frames: {} ({} book deltas, {} trade frames), Bybit v5 format", frames.len(), books, frames.len() - books)?;
    writeln!(
        out,
        "parse only: book delta {:.2} us, trade {:.2} us",
        parse_only(&frames, true) / 1000.0,
        parse_only(&frames, false) / 1000.0
    )?;

    let nats = Nats::start().await?;
    let client = async_nats::connect(nats.url()).await?;
    // Throughput: parse, normalize, encode and publish, one task on one thread.
    let mut pipeline = Pipeline::new(&feed(), "bench", 20, 100);
    let mut outs = Vec::new();
    let mut published = 0u64;
    let start = Instant::now();
    for (f, _) in &frames {
        published += pump(&mut pipeline, f, &client, &mut outs).await?;
    }
    client.flush().await?;
    let secs = start.elapsed().as_secs_f64();
    let msgs_per_s = frames.len() as f64 / secs;
    writeln!(out, "throughput: {} frames in {:.2} s = {:.0} frames/s, {} NATS messages", frames.len(), secs, msgs_per_s, published)?;

    // Latency: paced frames, each stamped when read, timed when a subscriber has it.
    let sub_client = async_nats::connect(nats.url()).await?;
    let mut sub = sub_client.subscribe("md.>").await?;
    sub_client.flush().await?;
    let collector = tokio::spawn(async move {
        let mut lat = Vec::new();
        while let Ok(Some(m)) = tokio::time::timeout(Duration::from_secs(2), sub.next()).await {
            let at = now_ns();
            let source = if m.subject.contains(".trade.") {
                pb::Trade::decode(m.payload).ok().and_then(|t| t.source)
            } else if m.subject.contains(".book.") {
                pb::BookTop::decode(m.payload).ok().and_then(|t| t.source)
            } else {
                pb::BookDepth::decode(m.payload).ok().and_then(|t| t.source)
            };
            if let Some(s) = source {
                lat.push(at - s.receive_ts_ns);
            }
        }
        lat
    });
    let mut pipeline = Pipeline::new(&feed(), "bench", 20, 100);
    let every = Duration::from_nanos(1_000_000_000 / a.latency_rate.max(1));
    let total = (a.latency_rate * a.latency_seconds) as usize;
    let begin = Instant::now();
    for (i, (f, _)) in frames.iter().cycle().take(total).enumerate() {
        let due = begin + every * i as u32;
        if let Some(w) = due.checked_duration_since(Instant::now()) {
            tokio::time::sleep(w).await;
        }
        pump(&mut pipeline, f, &client, &mut outs).await?;
        client.flush().await?;
    }
    let mut lat = collector.await?;
    lat.sort_unstable();
    let (p50, p99) = (percentile(&lat, 0.50), percentile(&lat, 0.99));
    writeln!(
        out,
        "latency wire-to-subscriber at {} frames/s: {} samples, p50 {:.0} us, p99 {:.0} us",
        a.latency_rate,
        lat.len(),
        p50,
        p99
    )?;
    writeln!(out, "msgs_per_s={msgs_per_s:.0} p50_us={p50:.0} p99_us={p99:.0}")?;
    Ok(())
}
