//! The simulator from real client libraries, in the virtual environment that
//! `scripts/python-env` creates under the build folder: ccxt (REST and WebSocket,
//! `tests/python/ccxt_sim.py`) on all four exchanges, pybit and
//! python-binance (`tests/python/pybit_binance_sim.py`), each pointed at the
//! simulator as a user points it at the real exchange. With ccxt's own rate
//! limiter on, nothing may be refused for going too fast.

use sluice_domain::Exchange;
use sluice_sim::SimConfig;
use tokio_util::sync::CancellationToken;

/// Runs `script` with `args`, asserting that every check in it passed.
async fn run(script: &str, args: Vec<String>) {
    let (ok, text) = sluice_testkit::run_python(script, args).await.unwrap();
    assert!(ok && text.contains("all checks passed"), "{text}");
}

fn url_args(sim: &sluice_sim::SimHandle, exchanges: &[Exchange]) -> Vec<String> {
    exchanges.iter().flat_map(|ex| [format!("--{}", ex.as_str()), sim.base_url(*ex)]).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ccxt_loads_markets_reads_the_market_and_places_fetches_and_cancels_orders_on_all_four() {
    let stop = CancellationToken::new();
    let _guard = stop.clone().drop_guard();
    let sim = sluice_sim::start(SimConfig::shipped(), stop.clone()).await.unwrap();
    run("ccxt_sim.py", url_args(&sim, &Exchange::ALL)).await;
    let stats = sim.stats();
    assert_eq!(stats.rate_limited(), 0, "ccxt's own limiter kept it under every limit: {:?}", stats.violations());
    // Every exchange was really called: markets, book, orders.
    for ex in Exchange::ALL {
        assert!(stats.exchange(ex).is_some_and(|v| v.requests >= 10), "{ex}: {:?}", stats.exchange(ex));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pybit_and_python_binance_read_the_market_and_place_and_cancel_orders() {
    let stop = CancellationToken::new();
    let _guard = stop.clone().drop_guard();
    let sim = sluice_sim::start(SimConfig::shipped(), stop.clone()).await.unwrap();
    run("pybit_binance_sim.py", url_args(&sim, &[Exchange::Bybit, Exchange::Binance])).await;
    let placed: Vec<String> = sim.orders(Exchange::Binance, "demo").into_iter().filter_map(|o| o.client_id).collect();
    assert_eq!(placed, ["pbn-1"], "the test order left nothing behind");
    assert!(sim.order_by_client(Exchange::Bybit, "demo", "pybit-1").is_some_and(|o| o.status == "canceled"));
}
