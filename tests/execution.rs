//! The execution service live, in-process, on a real nats-server: orders go
//! through the dispatcher to the simulator, confirmations come from the
//! collector's private streams (Upbit myOrder, Bybit order/execution) and from
//! queries by client order id. What the simulator holds is the truth every
//! assertion is checked against.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use prost::Message;
use rust_decimal::Decimal;
use sluice::stack::{Stack, stack};
use sluice_domain::Exchange;
use sluice_proto::execution::v1 as pb;
use sluice_proto::execution::v1::execution_client::ExecutionClient;
use sluice_sim::{Fault, FaultKind, SimConfig};
use tonic::transport::Channel;

/// Live strategies on the two exchanges with private streams.
const STRATEGIES: &str = r#"
[[strategies]]
venue = "upbit"
symbol = "BTC/KRW"
account = "upbit/demo"
sizing = { fixed_notional = "100000" }
min_confidence = 0.6
buy = "long"
sell = "flat"
order = { type = "limit", offset_bp = "0" }
cooldown_ms = 0

[[strategies]]
venue = "bybit"
symbol = "BTC/USDT"
account = "bybit/demo"
sizing = { fixed_notional = "100" }
min_confidence = 0.6
buy = "long"
sell = "flat"
order = { type = "limit", offset_bp = "0" }
cooldown_ms = 0
"#;

/// Live strategies on the two exchanges without a private stream.
const REST_ONLY: &str = r#"
[[strategies]]
venue = "binance"
symbol = "BTC/USDT"
account = "binance/demo"
sizing = { fixed_notional = "100" }
min_confidence = 0.6
buy = "long"
sell = "flat"
order = { type = "limit", offset_bp = "0" }
cooldown_ms = 0

[[strategies]]
venue = "okx"
symbol = "BTC/USDT"
account = "okx/demo"
sizing = { fixed_notional = "100" }
min_confidence = 0.6
buy = "long"
sell = "flat"
order = { type = "market", slippage_cap = "0.005" }
cooldown_ms = 0
"#;

/// The shipped execution config's text with the Upbit and Bybit strategies and
/// these timers.
fn live_text(timers: &[(&str, u64)]) -> String {
    config_text(timers, STRATEGIES)
}

/// The shipped execution config's text with these strategies and timers.
fn config_text(timers: &[(&str, u64)], strategies: &str) -> String {
    let shipped = sluice_execution::config::SHIPPED;
    let head = shipped.split("[[strategies]]").next().unwrap();
    let (top, tables) = head.split_at(head.find("\n[").unwrap());
    let mut text = top.to_owned();
    for (k, v) in timers {
        text = text.lines().filter(|l| !l.starts_with(&format!("{k} ="))).collect::<Vec<_>>().join("\n");
        text.push_str(&format!("\n{k} = {v}"));
    }
    text.push_str(tables);
    text.push_str(strategies);
    text
}

/// That config pointed at the stack, in live mode.
fn live_config(st: &Stack, timers: &[(&str, u64)]) -> sluice_execution::ExecutionConfig {
    st.execution_config(Some(&live_text(timers)), "live").unwrap()
}

async fn until<T>(what: &str, within: Duration, mut f: impl AsyncFnMut() -> Option<T>) -> T {
    let end = tokio::time::Instant::now() + within;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(tokio::time::Instant::now() < end, "{what}: not within {within:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn order(api: &mut ExecutionClient<Channel>, cid: &str) -> pb::Order {
    api.get_order(pb::GetOrderRequest { client_order_id: cid.into() }).await.unwrap().into_inner()
}

fn status(o: &pb::Order) -> pb::OrderStatus {
    pb::OrderStatus::try_from(o.status).unwrap_or(pb::OrderStatus::Unspecified)
}

fn limit(account: &str, symbol: &str, price: Decimal, qty: &str, cid: &str) -> pb::SubmitOrderRequest {
    pb::SubmitOrderRequest {
        account: account.into(),
        symbol: symbol.into(),
        side: pb::Side::Buy as i32,
        r#type: pb::OrderType::Limit as i32,
        time_in_force: pb::TimeInForce::Gtc as i32,
        quantity: qty.into(),
        price: price.to_string(),
        client_order_id: cid.into(),
        ..Default::default()
    }
}

/// Waits until the service takes orders on `symbol` (its rules read, market data
/// flowing): probes with fresh ids, each cancelled once accepted.
async fn ready(api: &mut ExecutionClient<Channel>, account: &str, symbol: &str, price: Decimal, qty: &str) {
    let mut n = 0;
    until("rules and market data", Duration::from_secs(20), async || {
        n += 1;
        let cid = format!("probe{n}{}", symbol.replace('-', ""));
        match api.submit_order(limit(account, symbol, price, qty, &cid)).await {
            Ok(o) => {
                let _ = api.cancel_order(pb::CancelOrderRequest { client_order_id: o.into_inner().client_order_id }).await;
                Some(())
            }
            Err(e) if e.message().contains("market data") || e.message().contains("no trading rules") => None,
            Err(e) => panic!("{symbol}: {e:?}"),
        }
    })
    .await;
}

/// The fills published on `exec.>`, by account and trade id.
type Fills = Arc<Mutex<BTreeMap<String, usize>>>;

async fn count_fills(nats: &async_nats::Client) -> Fills {
    let mut sub = nats.subscribe("exec.*.*.fill").await.unwrap();
    nats.flush().await.unwrap();
    let fills: Fills = Arc::default();
    let f = fills.clone();
    tokio::spawn(async move {
        while let Some(m) = sub.next().await {
            if let Ok(x) = pb::ExecFill::decode(m.payload) {
                *f.lock().unwrap().entry(format!("{}/{}", x.account, x.trade_id)).or_default() += 1;
            }
        }
    });
    fills
}

/// A price this far under the best bid, on the exchange's tick: the market's
/// own trades will not reach it during a test.
fn below_bid(st: &Stack, ex: Exchange, native: &str, ticks: i64) -> Decimal {
    let (bids, _, _) = st.sim.book(ex, native).unwrap();
    let tick = bids[0].0 - bids[1].0;
    bids[0].0 - tick * Decimal::from(ticks)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_orders_fill_in_parts_cancel_and_survive_a_cut_private_stream() {
    sluice_service::telemetry::init("test");
    let st = stack(SimConfig::shipped()).await.unwrap();
    let _guard = st.stop.clone().drop_guard();
    let mut ccfg = st.collector_config().unwrap();
    ccfg.feeds.retain(|f| matches!(f.exchange, Exchange::Upbit | Exchange::Bybit) && f.market == Default::default());
    ccfg.private = vec![st.private_stream(Exchange::Upbit, "demo"), st.private_stream(Exchange::Bybit, "demo")];
    let nats = async_nats::connect(st.nats.url()).await.unwrap();
    let mut statuses = nats.subscribe("account.*.demo.status").await.unwrap();
    let fills = count_fills(&nats).await;
    let _collector = sluice_collector::start(ccfg, st.stop.clone()).await.unwrap();
    let mut up = std::collections::BTreeSet::new();
    while up.len() < 2 {
        let m = tokio::time::timeout(Duration::from_secs(20), statuses.next()).await.expect("both private streams up").unwrap();
        if sluice_proto::account::v1::StreamStatus::decode(m.payload).unwrap().connected {
            up.insert(m.subject.to_string());
        }
    }

    // Confirmations can only come from the streams: queries are rare and late.
    let cfg = live_config(&st, &[("reconcile_every_ms", 600_000), ("confirm_after_ms", 600_000)]);
    let running = sluice_execution::start(cfg, st.stop.clone()).await.unwrap();
    let mut api = ExecutionClient::connect(format!("http://{}", running.grpc_addr)).await.unwrap();
    let cases = [
        (Exchange::Upbit, "upbit/demo", "BTC-KRW", "KRW-BTC", "0.001", "0.0004"),
        (Exchange::Bybit, "bybit/demo", "BTC-USDT", "BTCUSDT", "0.001", "0.0004"),
    ];
    for (ex, account, symbol, native, qty, part) in cases {
        let cid = format!("live{}part", ex.as_str());
        let price = below_bid(&st, ex, native, 500);
        // Risk needs market data first (the collector's).
        ready(&mut api, account, symbol, price, qty).await;
        let placed = api.submit_order(limit(account, symbol, price, qty, &cid)).await.unwrap().into_inner();
        assert_eq!(status(&placed), pb::OrderStatus::Accepted, "{ex}: the answer waits for the exchange's: {placed:?}");
        assert!(!placed.venue_order_id.is_empty(), "{ex}: {placed:?}");

        // Another trader's sell reaches it for part of its size.
        assert!(st.sim.print_trade(ex, native, price, part.parse().unwrap()));
        let partial = until("the partial fill from the stream", Duration::from_secs(10), async || {
            let o = order(&mut api, &cid).await;
            (status(&o) == pb::OrderStatus::PartiallyFilled).then_some(o)
        })
        .await;
        assert_eq!((partial.filled_quantity.as_str(), partial.average_price.as_str()), (part, price.normalize().to_string().as_str()));

        // A cancel: pending until the stream says it is cancelled.
        let pending = api.cancel_order(pb::CancelOrderRequest { client_order_id: cid.clone() }).await.unwrap().into_inner();
        assert_eq!(status(&pending), pb::OrderStatus::PendingCancel, "{ex}");
        let done = until("the cancel confirmed by the stream", Duration::from_secs(10), async || {
            let o = order(&mut api, &cid).await;
            (status(&o) == pb::OrderStatus::Cancelled).then_some(o)
        })
        .await;
        assert_eq!(done.filled_quantity, part, "{ex}: the part filled before the cancel stays");
        let on_sim: Vec<_> = st.sim.orders(ex, "demo").into_iter().filter(|o| o.client_id.as_deref() == Some(cid.as_str())).collect();
        assert_eq!(on_sim.len(), 1, "{ex}: one order on the exchange");
        assert_eq!((on_sim[0].status, on_sim[0].filled.to_string()), ("canceled", part.to_owned()));
    }

    // The private stream is cut and an order fills while it is down: the fill
    // came on no stream, and the reconnect's reconciliation finds it, once.
    for (ex, account, symbol, native, qty, _) in cases {
        let cid = format!("live{}cut", ex.as_str());
        let price = below_bid(&st, ex, native, 500);
        let placed = api.submit_order(limit(account, symbol, price, qty, &cid)).await.unwrap().into_inner();
        assert_eq!(status(&placed), pb::OrderStatus::Accepted, "{ex}: {placed:?}");
        st.sim.inject_feed(ex, sluice_sim::FeedFault::Drop);
        // Printed once the collector has seen the stream go (so on no stream).
        let down = format!("account.{}.demo.status", ex.as_str());
        loop {
            let m = tokio::time::timeout(Duration::from_secs(10), statuses.next()).await.expect("the stream reported down").unwrap();
            if m.subject.as_str() == down && !sluice_proto::account::v1::StreamStatus::decode(m.payload).unwrap().connected {
                break;
            }
        }
        assert!(st.sim.print_trade(ex, native, price, qty.parse().unwrap()));
        let filled = until("the fill found by reconciliation", Duration::from_secs(20), async || {
            let o = order(&mut api, &cid).await;
            (status(&o) == pb::OrderStatus::Filled).then_some(o)
        })
        .await;
        assert_eq!(filled.filled_quantity, qty, "{ex}");
        let trades = st.sim.orders(ex, "demo").into_iter().find(|o| o.client_id.as_deref() == Some(cid.as_str())).unwrap().trades;
        assert_eq!(trades.len(), 1, "{ex}");
        // Whatever else arrives late, each trade is counted once.
        tokio::time::sleep(Duration::from_millis(500)).await;
        let key = format!("{account}/{}", trades[0]);
        assert_eq!(fills.lock().unwrap().get(&key).copied(), Some(1), "{ex}: published once");
    }
    let positions = api.list_positions(pb::ListPositionsRequest::default()).await.unwrap().into_inner().positions;
    let held: BTreeMap<String, String> = positions.into_iter().map(|p| (p.account, p.quantity)).collect();
    assert_eq!(held.get("upbit/demo").map(String::as_str), Some("0.0014"), "0.0004 + 0.001, each fill once: {held:?}");
    assert_eq!(held.get("bybit/demo").map(String::as_str), Some("0.0014"), "{held:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_order_whose_answer_is_lost_is_found_by_its_client_id_and_never_sent_twice() {
    sluice_service::telemetry::init("test");
    let st = stack(SimConfig::shipped()).await.unwrap();
    let _guard = st.stop.clone().drop_guard();
    let mut ccfg = st.collector_config().unwrap();
    ccfg.feeds.retain(|f| f.exchange == Exchange::Upbit);
    let _collector = sluice_collector::start(ccfg, st.stop.clone()).await.unwrap();
    // No private stream: only queries can say what became of an order. A call
    // gives up after 1.5 s; an order absent 4 s after it was sent never arrived.
    let cfg = live_config(
        &st,
        &[
            ("reconcile_every_ms", 1_000),
            ("confirm_after_ms", 300),
            ("call_timeout_ms", 1_500),
            ("unknown_grace_ms", 4_000),
            ("submit_wait_ms", 500),
        ],
    );
    let running = sluice_execution::start(cfg, st.stop.clone()).await.unwrap();
    let mut api = ExecutionClient::connect(format!("http://{}", running.grpc_addr)).await.unwrap();
    let price = below_bid(&st, Exchange::Upbit, "KRW-BTC", 500);
    let submit = |cid: &str| limit("upbit/demo", "BTC-KRW", price, "0.001", cid);
    ready(&mut api, "upbit/demo", "BTC-KRW", price, "0.001").await;

    let group = Some("order".to_owned());
    let cases = [
        // Placed, then the exchange answers 500: it exists.
        ("lost500", FaultKind::ExecutedThenServerError, pb::OrderStatus::Accepted, 1),
        // Placed, the answer comes after the call gave up: it exists.
        ("lostslow", FaultKind::SlowAnswer { ms: 4_000 }, pb::OrderStatus::Accepted, 1),
        // A 500 before anything happened: it never existed, and is ended so
        // only once the grace has passed.
        ("never500", FaultKind::ServerError, pb::OrderStatus::Rejected, 0),
    ];
    for (cid, fault, resolved, on_exchange) in cases {
        st.sim.inject(Exchange::Upbit, Fault { kind: fault.clone(), count: 1, group: group.clone() });
        let first = api.submit_order(submit(cid)).await.unwrap().into_inner();
        let first_status = status(&first);
        // The submit answers after `submit_wait_ms`; the query by client id
        // (after `confirm_after_ms`) may already have found an executed order.
        let found_early = on_exchange == 1 && first_status == resolved;
        assert!(matches!(first_status, pb::OrderStatus::Unknown | pb::OrderStatus::Submitted) || found_early, "{cid}: {first:?}");
        let o = until("the unknown order resolved from the exchange", Duration::from_secs(20), async || {
            let o = order(&mut api, cid).await;
            (status(&o) == resolved).then_some(o)
        })
        .await;
        let on_sim = st.sim.orders(Exchange::Upbit, "demo").into_iter().filter(|x| x.client_id.as_deref() == Some(cid)).count();
        assert_eq!(on_sim, on_exchange, "{cid}: {o:?}");
        if resolved == pb::OrderStatus::Accepted {
            assert!(!o.venue_order_id.is_empty(), "{cid}: the venue id learned from the query");
        } else {
            assert!(o.reason.contains("never arrived"), "{cid}: {o:?}");
        }
        // Submitting the same client order id again is the same order, not a new one.
        let again = api.submit_order(submit(cid)).await.unwrap().into_inner();
        assert_eq!(again.client_order_id, cid);
        let on_sim = st.sim.orders(Exchange::Upbit, "demo").into_iter().filter(|x| x.client_id.as_deref() == Some(cid)).count();
        assert_eq!(on_sim, on_exchange, "{cid}: never re-sent");
    }
}

/// The execution service as its own process, pointed at the stack.
async fn execution_process(st: &Stack, text: &str) -> (sluice::process::Service, ExecutionClient<Channel>) {
    let bin = sluice::process::binary("sluice-execution", "SLUICE_EXECUTION_BIN").unwrap();
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
    let mut p = sluice::process::Service::spawn("execution", &bin, text, &env).unwrap();
    let addr = p.logged("execution service running", &["grpc_addr="], Duration::from_secs(30)).await.unwrap();
    let api = ExecutionClient::connect(format!("http://{}", addr[0])).await.unwrap();
    (p, api)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_after_the_order_left_and_before_its_answer_one_order_exists_and_is_resolved() {
    sluice_service::telemetry::init("test");
    let st = stack(SimConfig::shipped()).await.unwrap();
    let _guard = st.stop.clone().drop_guard();
    let mut ccfg = st.collector_config().unwrap();
    ccfg.feeds.retain(|f| f.exchange == Exchange::Upbit);
    let _collector = sluice_collector::start(ccfg, st.stop.clone()).await.unwrap();
    // No stream: the restarted process can learn the order's fate only by asking.
    let text = live_text(&[("reconcile_every_ms", 2_000), ("confirm_after_ms", 500), ("submit_wait_ms", 300)]);
    let (mut first, mut api) = execution_process(&st, &text).await;
    let price = below_bid(&st, Exchange::Upbit, "KRW-BTC", 500);
    ready(&mut api, "upbit/demo", "BTC-KRW", price, "0.001").await;

    // The exchange takes the order and holds its answer; the process dies meanwhile.
    st.sim.inject(Exchange::Upbit, Fault { kind: FaultKind::SlowAnswer { ms: 5_000 }, count: 1, group: Some("order".into()) });
    let cid = "killedinflight1";
    let sent = api.submit_order(limit("upbit/demo", "BTC-KRW", price, "0.001", cid)).await.unwrap().into_inner();
    assert_eq!(status(&sent), pb::OrderStatus::Submitted, "{sent:?}");
    let on_sim =
        |st: &Stack| st.sim.orders(Exchange::Upbit, "demo").into_iter().filter(|o| o.client_id.as_deref() == Some(cid)).collect::<Vec<_>>();
    until("the order on the exchange", Duration::from_secs(10), async || (!on_sim(&st).is_empty()).then_some(())).await;
    first.kill();

    let (_second, mut api) = execution_process(&st, &text).await;
    let resolved = until("the order resolved from the exchange", Duration::from_secs(20), async || {
        let o = order(&mut api, cid).await;
        (status(&o) == pb::OrderStatus::Accepted).then_some(o)
    })
    .await;
    let placed = on_sim(&st);
    assert_eq!(placed.len(), 1, "exactly one order on the exchange: {placed:?}");
    assert_eq!(resolved.venue_order_id, placed[0].id, "its state came from the exchange");
    // Long after the held answer would have come: still one.
    tokio::time::sleep(Duration::from_secs(1)).await;
    assert_eq!(on_sim(&st).len(), 1);

    // The journal agrees: intent, submit, then the venue's acceptance with its id.
    let nats = async_nats::connect(st.nats.url()).await.unwrap();
    let mut journal =
        sluice_execution::journal::Journal::open(async_nats::jetstream::new(nats), "ORDERS", Duration::from_secs(3600)).await.unwrap();
    let entries: Vec<pb::JournalEntry> =
        journal.replay().await.unwrap().into_iter().filter(|(_, e)| e.client_order_id == cid).map(|(_, e)| e).collect();
    // (The intent and its first decision are one write.)
    let events: Vec<String> = entries
        .iter()
        .flat_map(|e| match &e.entry {
            Some(pb::journal_entry::Entry::Intent(_)) => {
                std::iter::once("intent".to_owned()).chain(e.then.as_ref().map(|t| t.event.clone())).collect()
            }
            Some(pb::journal_entry::Entry::Transition(t)) => vec![t.event.clone()],
            None => vec!["?".to_owned()],
        })
        .collect();
    assert_eq!(events, ["intent", "submit", "accepted"], "{entries:?}");
    let Some(pb::journal_entry::Entry::Transition(t)) = &entries[1].entry else { unreachable!() };
    assert_eq!(t.venue_order_id, placed[0].id);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binance_and_okx_orders_are_confirmed_by_queries_alone() {
    sluice_service::telemetry::init("test");
    let st = stack(SimConfig::shipped()).await.unwrap();
    let _guard = st.stop.clone().drop_guard();
    let mut ccfg = st.collector_config().unwrap();
    ccfg.feeds.retain(|f| matches!(f.exchange, Exchange::Binance | Exchange::Okx));
    let _collector = sluice_collector::start(ccfg, st.stop.clone()).await.unwrap();
    let nats = async_nats::connect(st.nats.url()).await.unwrap();
    let fills = count_fills(&nats).await;
    let text = config_text(&[("reconcile_every_ms", 500), ("confirm_after_ms", 200)], REST_ONLY);
    let running = sluice_execution::start(st.execution_config(Some(&text), "live").unwrap(), st.stop.clone()).await.unwrap();
    let mut api = ExecutionClient::connect(format!("http://{}", running.grpc_addr)).await.unwrap();
    for (ex, account, native) in [(Exchange::Binance, "binance/demo", "BTCUSDT"), (Exchange::Okx, "okx/demo", "BTC-USDT")] {
        let price = below_bid(&st, ex, native, 500);
        ready(&mut api, account, "BTC-USDT", price, "0.001").await;
        let before = fills.lock().unwrap().len();
        let cid = format!("rest{}", ex.as_str());
        let placed = api.submit_order(limit(account, "BTC-USDT", price, "0.001", &cid)).await.unwrap().into_inner();
        assert_eq!(status(&placed), pb::OrderStatus::Accepted, "{ex}: {placed:?}");
        // Part of it fills; only a query can tell.
        assert!(st.sim.print_trade(ex, native, price, "0.0004".parse().unwrap()));
        let partial = until("the partial fill from a query", Duration::from_secs(10), async || {
            let o = order(&mut api, &cid).await;
            (status(&o) == pb::OrderStatus::PartiallyFilled).then_some(o)
        })
        .await;
        assert_eq!(partial.filled_quantity, "0.0004", "{ex}");
        api.cancel_order(pb::CancelOrderRequest { client_order_id: cid.clone() }).await.unwrap();
        let done = until("the cancel confirmed", Duration::from_secs(10), async || {
            let o = order(&mut api, &cid).await;
            (status(&o) == pb::OrderStatus::Cancelled).then_some(o)
        })
        .await;
        assert_eq!(done.filled_quantity, "0.0004", "{ex}");
        let on_sim = st.sim.order_by_client(ex, "demo", &cid).unwrap();
        assert_eq!((on_sim.status, on_sim.trades.len()), ("canceled", 1), "{ex}");
        // The fill's publication may trail the order's state on a loaded
        // machine: wait for it, then give a repeat the time to show.
        until("the fill published", Duration::from_secs(10), async || (fills.lock().unwrap().len() > before).then_some(())).await;
        tokio::time::sleep(Duration::from_millis(700)).await;
        let published = fills.lock().unwrap().iter().filter(|(k, _)| k.starts_with(account)).map(|(_, n)| *n).collect::<Vec<_>>();
        assert_eq!(
            (fills.lock().unwrap().len(), published),
            (before + 1, vec![1]),
            "{ex}: each fill published once, however often queried"
        );

        // A market order under its cap: a crossing limit, immediate-or-cancel.
        let market = pb::SubmitOrderRequest {
            r#type: pb::OrderType::Market as i32,
            price: String::new(),
            client_order_id: format!("mkt{}", ex.as_str()),
            ..limit(account, "BTC-USDT", price, "0.001", "")
        };
        let m = api.submit_order(market).await.unwrap().into_inner();
        let filled = until("the market order filled", Duration::from_secs(10), async || {
            let o = order(&mut api, &m.client_order_id).await;
            (status(&o) == pb::OrderStatus::Filled).then_some(o)
        })
        .await;
        assert_eq!(filled.filled_quantity, "0.001", "{ex}");
    }
}

/// `sluice loadtest submit` against a paper execution service: every request
/// is a new order (a fresh request id each, never an idempotent replay), every
/// one is answered, and past the risk limits (20 open orders, 30 a minute) the
/// refusals are counted as the answers they are.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn loadtest_submit_places_distinct_orders_until_risk_refuses() {
    use sluice_loadtest::target::SubmitTarget;
    use sluice_loadtest::{Plan, Target};
    let st = stack(SimConfig::shipped()).await.unwrap();
    let _guard = st.stop.clone().drop_guard();
    let mut ccfg = st.collector_config().unwrap();
    ccfg.feeds.retain(|f| f.exchange == Exchange::Upbit && f.market == Default::default());
    let _collector = sluice_collector::start(ccfg, st.stop.clone()).await.unwrap();
    let running = sluice_execution::start(st.execution_config(None, "paper").unwrap(), st.stop.clone()).await.unwrap();
    let url = format!("http://{}", running.grpc_addr);
    let mut api = ExecutionClient::connect(url.clone()).await.unwrap();
    let price = below_bid(&st, Exchange::Upbit, "KRW-BTC", 20);
    ready(&mut api, "upbit/demo", "BTC-KRW", price, "0.0001").await;

    let order = limit("upbit/demo", "BTC-KRW", price, "0.0001", "");
    let target = Target::Submit(SubmitTarget::new(&url, order).unwrap());
    let plan =
        Plan { levels: vec![4], requests: 10, timeout: Duration::from_secs(10), warmup: 0, level_time: None, rate: None, progress: false };
    let report = sluice_loadtest::run(target, &plan, &[], false, &mut |_| {}).await.unwrap();
    let level = &report.levels[0];
    let placed = level.statuses.get("grpc Ok").copied().unwrap_or(0);
    let refused = level.statuses.get("grpc FailedPrecondition").copied().unwrap_or(0);
    assert_eq!((level.total, placed + refused), (40, 40), "{level:?}");
    assert!(level.errors.is_empty(), "{level:?}");
    assert!((1..=20).contains(&placed) && refused >= 20, "{level:?}");
    // Each placed order is its own, resting below the bid.
    let open = api
        .list_orders(pb::ListOrdersRequest { account: "upbit/demo".into(), open_only: true, limit: 100 })
        .await
        .unwrap()
        .into_inner()
        .orders;
    assert_eq!(open.len() as u64, placed, "{open:?}");
}
