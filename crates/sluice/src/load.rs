//! `sluice load`: steady public market-data traffic through the dispatcher (a mix
//! over every exchange), so budgets, queues and the live summary have something to
//! show before the collector and the other services exist. Paced, bounded in time
//! when asked, and it prints a line every few seconds.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::Context;
use sluice_proto::dispatcher::v1::CallRequest;
use tokio_util::sync::CancellationToken;

/// Options of `sluice load`.
#[derive(Debug, Clone, clap::Args)]
pub struct LoadArgs {
    #[arg(long, default_value = "http://127.0.0.1:50051", env = "SLUICE_DISPATCHER_URL")]
    pub dispatcher: String,
    /// A file holding a bearer token, when the dispatcher names its clients.
    #[arg(long, env = "SLUICE_TOKEN_FILE")]
    pub token_file: Option<std::path::PathBuf>,
    /// Calls started per second, over all exchanges.
    #[arg(long, default_value_t = 20)]
    pub rps: u32,
    /// Stop after this long (0: until interrupted).
    #[arg(long, default_value_t = 0)]
    pub seconds: u64,
}

/// The calls the load cycles through.
pub fn mix() -> Vec<CallRequest> {
    let r = |ex: &str, path: &str, query: &str| CallRequest {
        exchange: ex.into(),
        method: "GET".into(),
        path: path.into(),
        query: query.into(),
        ..CallRequest::default()
    };
    vec![
        r("upbit", "/v1/ticker", "markets=KRW-BTC,KRW-ETH"),
        r("upbit", "/v1/orderbook", "markets=KRW-BTC"),
        r("upbit", "/v1/candles/minutes/1", "market=KRW-BTC&count=5"),
        r("bybit", "/v5/market/tickers", "category=spot&symbol=BTCUSDT"),
        r("bybit", "/v5/market/orderbook", "category=spot&symbol=ETHUSDT&limit=50"),
        r("binance", "/api/v3/depth", "symbol=BTCUSDT&limit=100"),
        r("binance", "/api/v3/ticker/24hr", "symbol=SOLUSDT"),
        r("okx", "/api/v5/market/ticker", "instId=BTC-USDT"),
        r("okx", "/api/v5/market/books", "instId=ETH-USDT&sz=20"),
    ]
}

pub async fn run(a: LoadArgs, stop: CancellationToken, out: &mut (dyn std::io::Write + Send)) -> anyhow::Result<()> {
    let client = crate::connect::dispatcher(&a.dispatcher, a.token_file.as_deref())
        .await
        .with_context(|| format!("connecting to {}", a.dispatcher))?;
    let calls = mix();
    let n = Arc::new(Counters::default());
    // At most this many calls outstanding: beyond it the load waits rather than piling up.
    let permits = Arc::new(tokio::sync::Semaphore::new(256));
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / f64::from(a.rps.max(1))));
    let started = Instant::now();
    let mut report = Instant::now();
    let mut i = 0usize;
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tick.tick() => {}
        }
        if a.seconds > 0 && started.elapsed() >= Duration::from_secs(a.seconds) {
            break;
        }
        let Ok(permit) = permits.clone().acquire_owned().await else { break };
        let mut c = client.clone();
        let r =
            CallRequest { timeout: Some(sluice_proto::prost_types::Duration { seconds: 10, nanos: 0 }), ..calls[i % calls.len()].clone() };
        i += 1;
        let counts = n.clone();
        tokio::spawn(async move {
            counts.sent.fetch_add(1, Ordering::Relaxed);
            match c.call(r).await {
                Ok(resp) if resp.get_ref().status < 300 => counts.ok.fetch_add(1, Ordering::Relaxed),
                Ok(_) => counts.other.fetch_add(1, Ordering::Relaxed),
                Err(_) => counts.errors.fetch_add(1, Ordering::Relaxed),
            };
            drop(permit);
        });
        if report.elapsed() >= Duration::from_secs(5) {
            report = Instant::now();
            writeln!(out, "load: {}", n.line())?;
        }
    }
    writeln!(out, "load done: {}", n.line())?;
    Ok(())
}

#[derive(Default)]
struct Counters {
    sent: AtomicU64,
    ok: AtomicU64,
    other: AtomicU64,
    errors: AtomicU64,
}

impl Counters {
    fn line(&self) -> String {
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        format!("sent {} ok {} non-2xx {} errors {}", g(&self.sent), g(&self.ok), g(&self.other), g(&self.errors))
    }
}
