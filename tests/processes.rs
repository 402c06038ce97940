//! The pipeline with every service as its own process (`sluice::pipeline`: the
//! built binaries, each with its config file and log, as `scripts/up` runs
//! them) against a test NATS and the simulator:
//!
//! - market data flows on NATS, the signal service makes signals from it, and
//!   one trace, received by an OTLP receiver inside the test, spans the
//!   collector, signal, execution and dispatcher processes down to the
//!   simulator call, each hop the previous one's child (the offline model
//!   mostly says HOLD on the simulated market, so a real, traced signal is
//!   republished as a confident BUY with its own headers: every hop of the
//!   trace is the services' own);
//! - in paper mode a signal's order fills against the book on NATS and its
//!   position and PnL appear, over gRPC and on NATS; the exchange answering 500
//!   fires an alert at the webhook and on NATS, and healing it resolves it;
//! - `kill -9` of each service in turn while orders flow (the execution service
//!   and the dispatcher each with an order in flight): each is started again
//!   and the pipeline recovers, with no order lost or doubled;
//! - SIGTERM: every service stops by itself within its grace.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::future::Future;
use std::time::Duration;

use futures::StreamExt;
use prost::Message;
use rust_decimal::Decimal;
use sluice::pipeline::{Options, Pipeline};
use sluice_domain::{Exchange, Side};
use sluice_proto::alert::v1 as alert;
use sluice_proto::execution::v1 as exec;
use sluice_proto::execution::v1::execution_client::ExecutionClient;
use sluice_proto::signal::v1 as pb;
use sluice_sim::{Fault, FaultKind};
use tokio::time::Instant;

/// The account the tests trade (the pipeline sizes its orders at 1M KRW).
const ACCOUNT: &str = "upbit/demo";
const SUBJECT: &str = "signal.upbit.BTC-KRW";

fn now_ns() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as i64
}

/// A confident signal on Upbit BTC/KRW, as the signal service would publish it.
fn signal(id: &str, action: pb::Action) -> pb::Signal {
    pb::Signal {
        venue: "upbit".into(),
        symbol: "BTC/KRW".into(),
        action: action as i32,
        confidence: 0.9,
        model: "test".into(),
        role: "routine".into(),
        trigger: "schedule".into(),
        ts_ns: now_ns(),
        id: id.into(),
        ..Default::default()
    }
}

/// Publishes into the SIGNAL stream and waits for JetStream to have it.
async fn publish(nats: &async_nats::Client, s: &pb::Signal) {
    let js = async_nats::jetstream::new(nats.clone());
    js.publish(SUBJECT, s.encode_to_vec().into()).await.unwrap().await.expect("the SIGNAL stream stores the signal");
}

/// Execution and the dispatcher act on every signal at once (no cooldown) and
/// trade at market (an immediate fill), so each signal is one order.
fn orders_at_once() -> Vec<(String, String)> {
    vec![
        ("cooldown_ms = 30000".into(), "cooldown_ms = 0".into()),
        ("order = { type = \"limit\", offset_bp = \"0\" }".into(), "order = { type = \"market\", slippage_cap = \"0.005\" }".into()),
    ]
}

/// Polls `f` until it has a value; fails the test after `limit`, naming `what`.
async fn until<T, Fut: Future<Output = Option<T>>>(what: &str, limit: Duration, mut f: impl FnMut() -> Fut) -> T {
    let end = Instant::now() + limit;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < end, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The execution service's orders of the account (None while it cannot answer).
async fn orders(grpc: &str) -> Option<Vec<exec::Order>> {
    let mut c = ExecutionClient::connect(format!("http://{grpc}")).await.ok()?;
    let req = exec::ListOrdersRequest { account: ACCOUNT.into(), open_only: false, limit: 1000 };
    Some(c.list_orders(req).await.ok()?.into_inner().orders)
}

fn ended(o: &exec::Order) -> bool {
    use exec::OrderStatus as S;
    [S::Filled, S::Cancelled, S::Expired, S::Rejected, S::Denied].iter().any(|s| *s as i32 == o.status)
}

/// The order `signal_id` caused, once it has ended.
async fn ended_order(grpc: &str, signal_id: &str) -> Option<exec::Order> {
    orders(grpc).await?.into_iter().find(|o| o.signal_id == signal_id && ended(o))
}

fn dec(s: &str) -> Decimal {
    s.parse().unwrap_or_else(|e| panic!("'{s}' is not a decimal: {e}"))
}

/// Waits for a message on `sub` published after this call (older ones are skipped).
async fn fresh(sub: &mut async_nats::Subscriber, what: &str) {
    while let Ok(Some(_)) = tokio::time::timeout(Duration::from_millis(50), sub.next()).await {}
    tokio::time::timeout(Duration::from_secs(30), sub.next()).await.unwrap_or_else(|_| panic!("no {what} within 30 s"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_service_as_its_own_process_and_one_trace_across_them() {
    let mut p = Pipeline::start(Options { signal_every_ms: 500, json_logs: true, ..Options::default() }).await.unwrap();
    let client = async_nats::connect(p.nats.url()).await.unwrap();
    let mut trades = client.subscribe("md.upbit.trade.>").await.unwrap();
    let mut signals = client.subscribe("signal.upbit.BTC-KRW").await.unwrap();
    let first = tokio::time::timeout(Duration::from_secs(30), trades.next()).await.expect("market data on NATS").unwrap();
    assert!(first.headers.as_ref().and_then(|h| h.get("traceparent")).is_some(), "a traced trade");

    let (headers, real) = tokio::time::timeout(Duration::from_secs(60), async {
        loop {
            let m = signals.next().await.unwrap();
            if m.headers.as_ref().and_then(|h| h.get("traceparent")).is_some() {
                break (m.headers.clone().unwrap(), pb::Signal::decode(m.payload).unwrap());
            }
        }
    })
    .await
    .expect("a signal made from traced market data");
    let trace = real.traceparent.split('-').nth(1).unwrap().to_owned();
    let buy = pb::Signal { id: format!("{}-buy", real.id), action: pb::Action::Buy as i32, confidence: 0.9, ..real };
    let want: BTreeSet<&str> = ["sluice-collector", "sluice-signal", "sluice-execution", "sluice-dispatcher"].into();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(40);
    let by_service: HashMap<String, BTreeSet<String>> = loop {
        client.publish_with_headers("signal.upbit.BTC-KRW", headers.clone(), buy.encode_to_vec().into()).await.unwrap();
        tokio::time::sleep(Duration::from_millis(700)).await;
        let mut by: HashMap<String, BTreeSet<String>> = HashMap::new();
        for (service, span) in p.otlp.traced(&trace) {
            by.entry(service).or_default().insert(span.name);
        }
        let upstream = by.get("sluice-dispatcher").is_some_and(|n| n.contains("dispatcher.upstream"));
        if want.iter().all(|s| by.contains_key(*s)) && upstream {
            break by;
        }
        assert!(tokio::time::Instant::now() < deadline, "trace {trace} so far: {by:?}");
    };
    assert!(by_service["sluice-collector"].contains("collector.publish"), "{by_service:?}");
    assert!(by_service["sluice-signal"].contains("signal.decide"), "{by_service:?}");
    assert!(by_service["sluice-execution"].contains("execution.submit"), "{by_service:?}");
    assert!(
        by_service["sluice-dispatcher"].is_superset(&["dispatcher.call", "dispatcher.queue"].map(String::from).into()),
        "{by_service:?}"
    );
    assert!(!p.sim.orders(Exchange::Upbit, "demo").is_empty(), "the order reached the exchange");

    // Each hop is the previous one's child. The signal was republished: several
    // submit spans, one order (its id is the signal's).
    let ours = p.otlp.trace(&trace);
    let ids = |n: &str| ours.iter().filter(|x| x.name == n).map(|x| x.span_id.clone()).collect::<Vec<_>>();
    let parents = |n: &str| ours.iter().filter(|x| x.name == n).map(|x| x.parent_span_id.clone()).collect::<Vec<_>>();
    let one = |n: &str| {
        let v = ids(n);
        assert_eq!(v.len(), 1, "one {n}");
        v[0].clone()
    };
    assert_eq!(parents("signal.decide"), [one("collector.publish")], "the signal continues the trade's trace");
    assert!(parents("execution.submit").iter().all(|p| *p == one("signal.decide")), "the order continues the signal's");
    let submits = ids("execution.submit");
    assert!(parents("dispatcher.call").iter().any(|p| submits.contains(p)), "the dispatcher continues the order's");
    let calls = ids("dispatcher.call");
    for n in ["dispatcher.queue", "dispatcher.upstream"] {
        assert!(parents(n).iter().all(|p| calls.contains(p)), "{n} is the call's");
    }

    // JSON logs: every line of every service is a JSON object, and the
    // execution service's line about the order names the trace and its span.
    for name in ["dispatcher", "collector", "signal", "execution", "alerting"] {
        let log = p.service(name).unwrap().log_text();
        for line in log.lines().filter(|l| !l.trim().is_empty()) {
            let v: serde_json::Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{name}: not JSON ({e}): {line}"));
            assert!(v["timestamp"].is_string() && v["level"].is_string(), "{name}: {line}");
        }
    }
    let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
    let log = p.service("execution").unwrap().log_text();
    let placed: Vec<serde_json::Value> = log
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["message"] == "signal placed an order")
        .collect();
    assert!(
        placed.iter().any(|v| v["trace_id"] == trace.as_str() && submits.iter().any(|s| v["span_id"] == hex(s))),
        "the order's log line carries its trace and the submit span: {placed:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paper_order_fills_with_position_and_pnl_and_an_exchange_outage_alerts_then_resolves() {
    let p = Pipeline::start(Options { paper: true, execution_edits: orders_at_once(), ..Options::default() }).await.unwrap();
    let client = async_nats::connect(p.nats.url()).await.unwrap();
    let mut book = client.subscribe("md.upbit.book.>").await.unwrap();
    let mut events = client.subscribe("exec.upbit.demo.>").await.unwrap();
    let mut alerts = client.subscribe("alert.>").await.unwrap();
    fresh(&mut book, "Upbit book on NATS").await;

    publish(&client, &signal("paper-buy", pb::Action::Buy)).await;
    let order = until("the paper order filled", Duration::from_secs(30), || ended_order(&p.execution_grpc, "paper-buy")).await;
    assert_eq!(order.status, exec::OrderStatus::Filled as i32, "{order:?}");
    assert!(order.paper && dec(&order.filled_quantity) > Decimal::ZERO && !order.average_price.is_empty(), "{order:?}");
    assert!(p.sim.orders(Exchange::Upbit, "demo").is_empty(), "a paper order never reaches the exchange");

    let mut api = ExecutionClient::connect(format!("http://{}", p.execution_grpc)).await.unwrap();
    let positions = api.list_positions(exec::ListPositionsRequest { account: ACCOUNT.into() }).await.unwrap().into_inner().positions;
    let pos = positions.iter().find(|x| x.symbol == "BTC-KRW").unwrap_or_else(|| panic!("no BTC-KRW position: {positions:?}"));
    assert_eq!(dec(&pos.quantity), dec(&order.filled_quantity), "{pos:?}");
    assert_eq!(dec(&pos.average_cost), dec(&order.average_price), "{pos:?}");
    assert!(dec(&pos.mark_price) > Decimal::ZERO && dec(&pos.fees) > Decimal::ZERO, "marked, and the paper fee counted: {pos:?}");
    let _ = dec(&pos.unrealized_pnl);
    let pnl = api.get_pnl(exec::GetPnlRequest { account: ACCOUNT.into() }).await.unwrap().into_inner();
    let acct = pnl.accounts.iter().find(|a| a.account == ACCOUNT).unwrap_or_else(|| panic!("{pnl:?}"));
    assert_eq!(dec(&acct.fees), dec(&pos.fees), "{acct:?}");
    assert!(dec(&acct.equity) > Decimal::ZERO, "{acct:?}");
    let _ = (dec(&acct.realized), dec(&acct.unrealized), dec(&acct.day_pnl));

    // The same on NATS, for subscribers in any language.
    let mut kinds = BTreeSet::new();
    while !["order", "fill", "position"].iter().all(|k| kinds.contains(*k)) {
        let m = tokio::time::timeout(Duration::from_secs(10), events.next()).await.expect("exec events on NATS").unwrap();
        let kind = m.subject.as_str().rsplit('.').next().unwrap().to_owned();
        match kind.as_str() {
            "fill" => assert!(exec::ExecFill::decode(m.payload).unwrap().paper),
            "position" => assert_eq!(exec::Position::decode(m.payload).unwrap().symbol, "BTC-KRW"),
            "order" => assert_eq!(exec::Order::decode(m.payload).unwrap().signal_id, "paper-buy"),
            _ => {}
        }
        kinds.insert(kind);
    }

    // Upbit answers 500 to everything: the probes through the dispatcher fail,
    // an alert fires at the webhook and on NATS; healed, it resolves.
    p.sim.inject(Exchange::Upbit, Fault { kind: FaultKind::ServerError, count: 1_000_000, group: None });
    let webhook = |status: &'static str| {
        let r = &p.receiver;
        move || {
            let hit = r.delivered("webhook").into_iter().find(|d| {
                d.body["status"] == status
                    && d.body["alerts"].as_array().is_some_and(|a| a.iter().any(|x| x["labels"]["exchange"] == "upbit"))
            });
            std::future::ready(hit)
        }
    };
    let fired = until("an Upbit alert at the webhook", Duration::from_secs(40), webhook("firing")).await;
    let name = fired.body["groupLabels"]["alertname"].as_str().unwrap_or_default().to_owned();
    assert!(["ProbeFailing", "ExchangeErrorRate"].contains(&name.as_str()), "{}", fired.body);
    let on_nats = |state: alert::AlertState| {
        let name = name.clone();
        async move |alerts: &mut async_nats::Subscriber| loop {
            let m = tokio::time::timeout(Duration::from_secs(40), alerts.next()).await.expect("alerts on NATS").unwrap();
            let a = alert::Alert::decode(m.payload).unwrap();
            if a.name == name && a.state == state as i32 && a.labels.get("exchange").is_some_and(|e| e == "upbit") {
                break a;
            }
        }
    };
    on_nats(alert::AlertState::Firing)(&mut alerts).await;
    p.sim.clear_faults(Exchange::Upbit);
    until("the alert resolved at the webhook", Duration::from_secs(40), webhook("resolved")).await;
    on_nats(alert::AlertState::Resolved)(&mut alerts).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_of_each_service_in_turn_loses_and_doubles_no_order_and_sigterm_stops_each_within_its_grace() {
    // The signal service makes no Upbit signals here: every Upbit order is the test's.
    let upbit = "[[symbols]]\nvenue = \"upbit\"\nsymbol = \"BTC/KRW\"\n";
    let mut p = Pipeline::start(Options {
        signal_every_ms: 1000,
        execution_edits: orders_at_once(),
        signal_edits: vec![(upbit.into(), String::new())],
        ..Options::default()
    })
    .await
    .unwrap();
    let client = async_nats::connect(p.nats.url()).await.unwrap();
    let mut book = client.subscribe("md.upbit.book.>").await.unwrap();
    let mut made = client.subscribe("signal.binance.>").await.unwrap();
    fresh(&mut book, "Upbit book on NATS").await;

    // Alternate buy and sell (long, then flat): each signal is one order.
    let mut sent: Vec<String> = Vec::new();
    let next = |sent: &mut Vec<String>, step: &str| {
        let action = if sent.len().is_multiple_of(2) { pb::Action::Buy } else { pb::Action::Sell };
        let id = format!("kill-{}-{step}", sent.len());
        sent.push(id.clone());
        signal(&id, action)
    };
    let placed = |p: &Pipeline| p.sim.orders(Exchange::Upbit, "demo").len();
    async fn settled(grpc: &str, id: &str) -> exec::Order {
        let o = until(&format!("the order of {id} ended"), Duration::from_secs(60), || ended_order(grpc, id)).await;
        assert!(dec(&o.filled_quantity) > Decimal::ZERO, "{o:?}");
        o
    }

    let s = next(&mut sent, "first");
    publish(&client, &s).await;
    settled(&p.execution_grpc, &s.id).await;

    // The collector: market data stops, and flows again after the restart.
    p.kill("collector").unwrap();
    p.restart("collector").await.unwrap();
    fresh(&mut book, "Upbit book from the restarted collector").await;
    let s = next(&mut sent, "collector");
    publish(&client, &s).await;
    settled(&p.execution_grpc, &s.id).await;

    // The signal service: a signal published meanwhile is traded; the restarted
    // service makes signals again.
    p.kill("signal").unwrap();
    let s = next(&mut sent, "signal");
    publish(&client, &s).await;
    settled(&p.execution_grpc, &s.id).await;
    p.restart("signal").await.unwrap();
    fresh(&mut made, "a signal from the restarted signal service").await;

    // The execution service and then the dispatcher, each killed while an
    // order it sent is executed at the exchange but not yet answered.
    for victim in ["execution", "dispatcher"] {
        let before = placed(&p);
        p.sim.inject(Exchange::Upbit, Fault { kind: FaultKind::SlowAnswer { ms: 4_000 }, count: 1, group: Some("order".into()) });
        let s = next(&mut sent, victim);
        publish(&client, &s).await;
        until("the order at the exchange", Duration::from_secs(30), || std::future::ready((placed(&p) > before).then_some(()))).await;
        p.kill(victim).unwrap();
        p.restart(victim).await.unwrap();
        settled(&p.execution_grpc, &s.id).await;
    }

    // The alerting service: it serves its API again.
    p.kill("alerting").unwrap();
    p.restart("alerting").await.unwrap();
    let mut alerting =
        sluice_proto::alert::v1::alerting_client::AlertingClient::connect(format!("http://{}", p.alerting_grpc)).await.unwrap();
    alerting.list_alerts(alert::ListAlertsRequest { include_resolved: true }).await.unwrap();
    let s = next(&mut sent, "alerting");
    publish(&client, &s).await;
    settled(&p.execution_grpc, &s.id).await;

    // Every signal is one order, ended, and the exchange has exactly those
    // orders, each once, filled as the execution service says.
    let all = orders(&p.execution_grpc).await.unwrap();
    let venue = p.sim.orders(Exchange::Upbit, "demo");
    let mut by_cid: BTreeMap<String, &sluice_sim::OrderView> = BTreeMap::new();
    for v in &venue {
        let cid = v.client_id.clone().expect("every order carries its client order id");
        assert!(by_cid.insert(cid.clone(), v).is_none(), "{cid} twice at the exchange: {venue:?}");
    }
    assert_eq!(all.len(), sent.len(), "one order per signal: {all:?}");
    let mut position = Decimal::ZERO;
    for id in &sent {
        let mine: Vec<&exec::Order> = all.iter().filter(|o| &o.signal_id == id).collect();
        assert_eq!(mine.len(), 1, "{id}: {all:?}");
        let o = mine[0];
        let v = by_cid.get(&o.client_order_id).unwrap_or_else(|| panic!("{id}: {o:?} not at the exchange: {venue:?}"));
        assert_eq!(dec(&o.filled_quantity), v.filled, "{id}: {o:?} vs {v:?}");
        position += if v.side == Side::Buy { v.filled } else { -v.filled };
    }
    assert_eq!(by_cid.len(), sent.len(), "nothing else at the exchange: {venue:?}");
    let mut api = ExecutionClient::connect(format!("http://{}", p.execution_grpc)).await.unwrap();
    let positions = api.list_positions(exec::ListPositionsRequest { account: ACCOUNT.into() }).await.unwrap().into_inner().positions;
    let held = positions.iter().find(|x| x.symbol == "BTC-KRW").map_or(Decimal::ZERO, |x| dec(&x.quantity));
    assert_eq!(held, position, "the position is the exchange's fills: {positions:?}");

    // SIGTERM: each stops by itself within its grace (the compose file's 20 s;
    // Kubernetes gives 30), the execution service with an order in flight.
    p.sim.inject(Exchange::Upbit, Fault { kind: FaultKind::SlowAnswer { ms: 2_000 }, count: 1, group: Some("order".into()) });
    let before = placed(&p);
    publish(&client, &next(&mut sent, "sigterm")).await;
    until("the order at the exchange", Duration::from_secs(30), || std::future::ready((placed(&p) > before).then_some(()))).await;
    for name in ["execution", "alerting", "signal", "collector", "dispatcher"] {
        let took = p.service(name).unwrap().terminate(Duration::from_secs(20)).await.unwrap_or_else(|e| panic!("{e:#}"));
        println!("{name} stopped {took:?} after SIGTERM");
    }
}
