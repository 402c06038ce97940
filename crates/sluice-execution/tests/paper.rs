//! The execution service in paper mode, in-process, on a real nats-server: market
//! data and signals are published on NATS as the collector and the signal
//! service publish them; orders, fills and positions are read back over gRPC and
//! from the `exec.>` events.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::StreamExt;
use prost::Message;
use sluice_execution::ExecutionConfig;
use sluice_proto::execution::v1 as pb;
use sluice_proto::execution::v1::execution_client::ExecutionClient;
use sluice_proto::md::v1 as md;
use sluice_proto::signal::v1 as sig;
use sluice_testkit::Nats;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

fn now_ns() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_nanos() as i64
}

fn config(nats: &Nats) -> ExecutionConfig {
    let text = sluice_execution::config::SHIPPED
        .replace("listen = \"127.0.0.1:50061\"", "listen = \"127.0.0.1:0\"")
        .replace("ops_listen = \"127.0.0.1:9467\"", "ops_listen = \"127.0.0.1:0\"")
        .replace("cooldown_ms = 30000", "cooldown_ms = 0");
    let url = nats.url();
    ExecutionConfig::load(Some(&text), &move |k| (k == "SLUICE_EXECUTION_NATS_URL").then(|| url.clone())).unwrap()
}

async fn publish_book(nats: &async_nats::Client, bid: &str, ask: &str) {
    let lv = |p: &str, q: &str| md::Level { price: p.into(), qty: q.into() };
    let d = md::BookDepth {
        state: md::BookState::Live as i32,
        bids: vec![lv(bid, "1")],
        asks: vec![lv(ask, "1"), lv("60100", "5")],
        ..Default::default()
    };
    nats.publish("md.binance.depth.BTC-USDT", d.encode_to_vec().into()).await.unwrap();
    nats.flush().await.unwrap();
}

async fn publish_trade(nats: &async_nats::Client, price: &str, qty: &str) {
    let t = md::Trade { price: price.into(), qty: qty.into(), trade_id: format!("t{}", now_ns()), ..Default::default() };
    nats.publish("md.binance.trade.BTC-USDT", t.encode_to_vec().into()).await.unwrap();
    nats.flush().await.unwrap();
}

fn signal(id: &str, action: sig::Action, ts_ns: i64) -> sig::Signal {
    sig::Signal {
        venue: "binance".into(),
        symbol: "BTC-USDT".into(),
        action: action as i32,
        confidence: 0.9,
        ts_ns,
        id: id.into(),
        ..Default::default()
    }
}

async fn publish_signal(js: &async_nats::jetstream::Context, s: &sig::Signal) {
    js.publish("signal.binance.BTC-USDT", s.encode_to_vec().into()).await.unwrap().await.unwrap();
}

async fn until<T>(what: &str, mut f: impl AsyncFnMut() -> Option<T>) -> T {
    let end = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(tokio::time::Instant::now() < end, "{what}: not within 10 s");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn orders(c: &mut ExecutionClient<Channel>) -> Vec<pb::Order> {
    c.list_orders(pb::ListOrdersRequest::default()).await.unwrap().into_inner().orders
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signals_become_paper_orders_once_under_risk_and_survive_a_restart() {
    sluice_service::telemetry::init("test");
    let nats = Nats::start().await.unwrap();
    let client = async_nats::connect(nats.url()).await.unwrap();
    let js = async_nats::jetstream::new(client.clone());
    js.get_or_create_stream(async_nats::jetstream::stream::Config {
        name: "SIGNAL".into(),
        subjects: vec!["signal.>".into()],
        ..Default::default()
    })
    .await
    .unwrap();
    let mut events = client.subscribe("exec.>").await.unwrap();

    let stop = CancellationToken::new();
    let running = sluice_execution::start(config(&nats), stop.clone()).await.unwrap();
    let mut api = ExecutionClient::connect(format!("http://{}", running.grpc_addr)).await.unwrap();
    publish_book(&client, "60000", "60010").await;

    // A BUY: a limit at the bid, resting (not marketable).
    let s1 = signal("sig-1", sig::Action::Buy, now_ns());
    publish_signal(&js, &s1).await;
    let placed = until("the order", async || orders(&mut api).await.into_iter().next()).await;
    assert_eq!((placed.status, placed.price.as_str(), placed.quantity.as_str()), (pb::OrderStatus::Accepted as i32, "60000", "0.00749"));
    assert_eq!((placed.signal_id.as_str(), placed.paper), ("sig-1", true));

    // Redelivered (the same signal again): no second order.
    publish_signal(&js, &s1).await;
    // Older than max_signal_age: never traded.
    publish_signal(&js, &signal("sig-old", sig::Action::Buy, now_ns() - 60_000_000_000)).await;
    // A trade through the bid fills the resting order (maker, 0.1 %).
    publish_trade(&client, "59990", "1").await;
    let filled = until("the fill", async || orders(&mut api).await.into_iter().find(|o| o.status == pb::OrderStatus::Filled as i32)).await;
    assert_eq!((filled.filled_quantity.as_str(), filled.average_price.as_str()), ("0.00749", "60000"));
    assert_eq!(filled.fees, vec!["0.4494 USDT".to_owned()]);
    assert_eq!(orders(&mut api).await.len(), 1, "one order for the signal, none for its redelivery or the stale one");
    let positions = api.list_positions(pb::ListPositionsRequest::default()).await.unwrap().into_inner().positions;
    assert_eq!((positions[0].quantity.as_str(), positions[0].average_cost.as_str()), ("0.00749", "60000"));

    // gRPC: a price 20 % off the last trade is a fat finger.
    let limit = |price: &str, cid: &str| pb::SubmitOrderRequest {
        account: "binance/demo".into(),
        symbol: "BTC-USDT".into(),
        side: pb::Side::Buy as i32,
        r#type: pb::OrderType::Limit as i32,
        time_in_force: pb::TimeInForce::Gtc as i32,
        quantity: "0.001".into(),
        price: price.into(),
        client_order_id: cid.into(),
        ..Default::default()
    };
    let e = api.submit_order(limit("48000", "fatfinger1")).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::FailedPrecondition);
    assert!(e.message().contains("from the last trade"), "{}", e.message());
    // Bad input names the problem.
    let e = api.submit_order(pb::SubmitOrderRequest { quantity: "lots".into(), ..limit("59000", "bad1") }).await.unwrap_err();
    assert!(e.code() == tonic::Code::InvalidArgument && e.message().contains("'lots'"), "{e:?}");
    let e = api.submit_order(pb::SubmitOrderRequest { quantity: "0.000001".into(), ..limit("59000", "bad2") }).await.unwrap_err();
    assert!(e.message().contains("below the minimum"), "{e:?}");
    let e = api.submit_order(pb::SubmitOrderRequest { symbol: "DOGE-USDT".into(), ..limit("59000", "bad3") }).await.unwrap_err();
    assert!(e.message().contains("DOGE-USDT"), "{e:?}");
    // A resting order, then the kill switch: HALTED cancels it and refuses new ones.
    let resting = api.submit_order(limit("59500", "resting1")).await.unwrap().into_inner();
    assert_eq!(resting.status, pb::OrderStatus::Accepted as i32);
    let again = api.submit_order(limit("59500", "resting1")).await.unwrap().into_inner();
    assert_eq!(again.client_order_id, "resting1", "the same client order id is the same order");
    let halted = api
        .set_trading_state(pb::SetTradingStateRequest { state: pb::TradingState::Halted as i32, reason: "test".into() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(halted.state, pb::TradingState::Halted as i32);
    let cancelled = api.get_order(pb::GetOrderRequest { client_order_id: "resting1".into() }).await.unwrap().into_inner();
    assert_eq!(cancelled.status, pb::OrderStatus::Cancelled as i32);
    let e = api.submit_order(limit("59500", "afterhalt")).await.unwrap_err();
    assert!(e.message().contains("halted"), "{}", e.message());

    // The events: the order's transitions, the fill, the position, the denials, the state.
    let mut kinds = std::collections::BTreeMap::<String, usize>::new();
    while let Ok(Some(m)) = tokio::time::timeout(Duration::from_millis(300), events.next()).await {
        *kinds.entry(m.subject.split('.').next_back().unwrap_or("").to_owned()).or_default() += 1;
    }
    for k in ["order", "fill", "position", "denial", "state"] {
        assert!(kinds.get(k).copied().unwrap_or(0) > 0, "no {k} event: {kinds:?}");
    }

    // Restart: everything comes back from the journal.
    let before = orders(&mut api).await;
    stop.cancel();
    running.wait().await;
    let stop2 = CancellationToken::new();
    let running = sluice_execution::start(config(&nats), stop2.clone()).await.unwrap();
    let mut api = ExecutionClient::connect(format!("http://{}", running.grpc_addr)).await.unwrap();
    let after = orders(&mut api).await;
    let key = |o: &pb::Order| (o.client_order_id.clone(), o.status, o.filled_quantity.clone(), o.fees.clone());
    assert_eq!(after.iter().map(key).collect::<Vec<_>>(), before.iter().map(key).collect::<Vec<_>>());
    let positions = api.list_positions(pb::ListPositionsRequest::default()).await.unwrap().into_inner().positions;
    assert_eq!(positions[0].quantity, "0.00749");
    stop2.cancel();
    running.wait().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signal_before_market_data_waits_and_an_order_journaled_but_never_sent_resumes() {
    sluice_service::telemetry::init("test");
    let nats = Nats::start().await.unwrap();
    let client = async_nats::connect(nats.url()).await.unwrap();
    let js = async_nats::jetstream::new(client.clone());
    js.get_or_create_stream(async_nats::jetstream::stream::Config {
        name: "SIGNAL".into(),
        subjects: vec!["signal.>".into()],
        ..Default::default()
    })
    .await
    .unwrap();

    // A run that stopped right after journaling an order's intent: nothing was
    // checked or sent.
    let s2 = signal("sig-2", sig::Action::Buy, now_ns());
    let cid = sluice_execution::ids::derive(&sluice_execution::ids::signal_cause("sig-2", "binance", "BTC-USDT", s2.ts_ns, "binance/demo"));
    let mut journal = sluice_execution::journal::Journal::open(js.clone(), "ORDERS", Duration::from_secs(3600)).await.unwrap();
    let intent = pb::Order {
        client_order_id: cid.clone(),
        account: "binance/demo".into(),
        symbol: "BTC-USDT".into(),
        side: pb::Side::Buy as i32,
        r#type: pb::OrderType::Limit as i32,
        time_in_force: pb::TimeInForce::Gtc as i32,
        quantity: "0.00749".into(),
        price: "60000".into(),
        status: pb::OrderStatus::Initialized as i32,
        signal_id: "sig-2".into(),
        paper: true,
        created_unix_ns: now_ns(),
        ..Default::default()
    };
    let subject = sluice_execution::journal::subject("binance", "demo", &cid);
    let entry = pb::JournalEntry {
        client_order_id: cid.clone(),
        seq: 1,
        time_unix_ns: now_ns(),
        entry: Some(pb::journal_entry::Entry::Intent(intent)),
        then: None,
    };
    journal.append(&subject, &entry).await.unwrap();

    let stop = CancellationToken::new();
    let running = sluice_execution::start(config(&nats), stop.clone()).await.unwrap();
    let mut api = ExecutionClient::connect(format!("http://{}", running.grpc_addr)).await.unwrap();
    let rebuilt = api.get_order(pb::GetOrderRequest { client_order_id: cid.clone() }).await.unwrap().into_inner();
    assert_eq!(rebuilt.status, pb::OrderStatus::Initialized as i32);

    // Signals with no market data yet: not dropped, decided once it comes.
    publish_signal(&js, &signal("sig-3", sig::Action::Buy, now_ns())).await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert!(orders(&mut api).await.iter().all(|o| o.signal_id != "sig-3"), "nothing to decide on yet");
    publish_book(&client, "60000", "60010").await;
    let placed = until("the waiting signal's order", async || orders(&mut api).await.into_iter().find(|o| o.signal_id == "sig-3")).await;
    assert_eq!(placed.status, pb::OrderStatus::Accepted as i32, "{placed:?}");

    // The journaled order's signal comes again: it goes on from where it stopped.
    publish_signal(&js, &s2).await;
    let resumed = until("the resumed order", async || {
        let o = api.get_order(pb::GetOrderRequest { client_order_id: cid.clone() }).await.unwrap().into_inner();
        (o.status != pb::OrderStatus::Initialized as i32).then_some(o)
    })
    .await;
    assert_eq!(resumed.status, pb::OrderStatus::Accepted as i32, "checked, then sent once: {resumed:?}");
    assert_eq!(orders(&mut api).await.iter().filter(|o| o.client_order_id == cid).count(), 1);
    stop.cancel();
    running.wait().await;
}
