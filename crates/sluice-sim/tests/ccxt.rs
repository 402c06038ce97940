//! The simulator from a real client library: ccxt (REST) in the virtual
//! environment that `scripts/python-env` creates under the build folder
//! (`tests/python/ccxt_sim.py`), pointed at each simulated exchange as a user
//! points it at the real one. Its own rate limiter on, it must never be
//! refused for going too fast.

use std::path::PathBuf;
use std::process::Command;

use sluice_domain::Exchange;
use sluice_sim::SimConfig;
use tokio_util::sync::CancellationToken;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The virtual environment's interpreter (created on first use).
fn python() -> PathBuf {
    let out = Command::new("bash").arg(root().join("scripts/python-env")).output().expect("bash runs scripts/python-env");
    assert!(out.status.success(), "scripts/python-env failed:\n{}", String::from_utf8_lossy(&out.stderr));
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ccxt_loads_markets_reads_the_market_and_places_fetches_and_cancels_orders_on_all_four() {
    let python = tokio::task::spawn_blocking(python).await.unwrap();
    let stop = CancellationToken::new();
    let _guard = stop.clone().drop_guard();
    let sim = sluice_sim::start(SimConfig::shipped(), stop.clone()).await.unwrap();
    let mut args = Vec::new();
    for ex in Exchange::ALL {
        args.push(format!("--{}", ex.as_str()));
        args.push(sim.base_url(ex));
    }
    let out = tokio::task::spawn_blocking(move || Command::new(python).arg(root().join("tests/python/ccxt_sim.py")).args(&args).output())
        .await
        .unwrap()
        .unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success() && text.contains("all checks passed"), "{text}");
    let stats = sim.stats();
    assert_eq!(stats.rate_limited(), 0, "ccxt's own limiter kept it under every limit: {:?}", stats.violations());
    // Every exchange was really called: markets, book, orders.
    for ex in Exchange::ALL {
        assert!(stats.exchange(ex).is_some_and(|v| v.requests >= 10), "{ex}: {:?}", stats.exchange(ex));
    }
}
