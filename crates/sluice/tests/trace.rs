//! One trace from a tick to the exchange call, received by an OTLP/HTTP
//! receiver inside the test: the collector publishes a trade (`collector.publish`,
//! its context in the message's headers), the signal service decides on it
//! (`signal.decide`), the execution service submits an order (`execution.submit`)
//! through the dispatcher (`dispatcher.call`, `dispatcher.queue`,
//! `dispatcher.upstream`) to the simulator. The services run in-process, on
//! their real NATS and gRPC hops. The offline model mostly says HOLD on the
//! simulated market, so the test republishes a real signal (its headers, so
//! its trace) as a confident BUY: the hops it exercises are the services' own.
//! Its own test binary: the trace exporter is process-wide.

use std::collections::HashMap;
use std::time::Duration;

use futures::StreamExt;
use prost::Message;
use rust_decimal::Decimal;
use sluice::stack::stack;
use sluice_domain::Exchange;
use sluice_proto::signal::v1 as pb;
use sluice_signal::SignalConfig;
use sluice_sim::SimConfig;
use sluice_testkit::otlp::{Receiver, Span};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_trace_follows_a_tick_through_signal_order_dispatcher_and_exchange() {
    let otlp = Receiver::start().await.unwrap();
    let endpoint = otlp.endpoint.clone();
    sluice_service::telemetry::init_with("sluice", &|k| (k == "SLUICE_OTLP_ENDPOINT").then(|| endpoint.clone()));

    let st = stack(SimConfig::shipped()).await.unwrap();
    let _guard = st.stop.clone().drop_guard();
    let mut ccfg = st.collector_config().unwrap();
    ccfg.feeds.retain(|f| f.exchange == Exchange::Upbit);
    let _collector = sluice_collector::start(ccfg, st.stop.clone()).await.unwrap();

    let env: HashMap<&str, String> = [("SLUICE_SIGNAL_NATS_URL", st.nats.url()), ("SLUICE_SIGNAL_OPS_LISTEN", "127.0.0.1:0".into())].into();
    let mut scfg = SignalConfig::load(None, &|k| env.get(k).cloned()).unwrap();
    scfg.symbols.retain(|s| s.venue == "upbit" && s.symbol.to_string() == "BTC/KRW");
    scfg.cadence.every_ms = 500;
    scfg.cadence.min_trades = 1;
    scfg.cadence.move_pct = Decimal::ONE_HUNDRED;
    let nats = async_nats::connect(st.nats.url()).await.unwrap();
    let mut signals = nats.subscribe("signal.upbit.BTC-KRW").await.unwrap();
    let _signal = sluice_signal::start(scfg, st.stop.clone()).await.unwrap();
    // The shipped config, live on the simulator, its Upbit order a fixed 1M KRW
    // (5 % of the demo account's equity is over its per-order limit).
    let shipped = sluice_execution::config::SHIPPED;
    let text = shipped.replace("sizing = { equity_share = \"0.05\" }", "sizing = { fixed_notional = \"1000000\" }");
    assert_ne!(text, shipped);
    let execution = sluice_execution::start(st.execution_config(Some(&text), "live").unwrap(), st.stop.clone()).await.unwrap();

    // A signal made from a traced trade: its headers carry the trace.
    let (headers, real) = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let m = signals.next().await.unwrap();
            if m.headers.as_ref().and_then(|h| h.get("traceparent")).is_some() {
                break (m.headers.clone().unwrap(), pb::Signal::decode(m.payload).unwrap());
            }
        }
    })
    .await
    .expect("a traced signal");
    let trace = real.traceparent.split('-').nth(1).unwrap().to_owned();
    assert_eq!(headers.get("traceparent").unwrap().as_str(), real.traceparent, "field and header agree");

    // The same signal, made a confident BUY, until the execution service acts on
    // it (it waits for market data and the venue's rules first).
    let buy = pb::Signal { id: format!("{}-buy", real.id), action: pb::Action::Buy as i32, confidence: 0.9, ..real };
    let names = ["collector.publish", "signal.decide", "execution.submit", "dispatcher.call", "dispatcher.queue", "dispatcher.upstream"];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(40);
    let metrics_url = format!("http://{}/metrics", execution.ops_addr);
    let ours: Vec<Span> = loop {
        nats.publish_with_headers("signal.upbit.BTC-KRW", headers.clone(), buy.encode_to_vec().into()).await.unwrap();
        tokio::time::sleep(Duration::from_millis(500)).await;
        sluice_service::telemetry::flush();
        let ours: Vec<Span> = otlp.trace(&trace);
        if names.iter().all(|n| ours.iter().any(|x| x.name == *n)) {
            break ours;
        }
        if tokio::time::Instant::now() >= deadline {
            let m = sluice_service::http_client::client().get(&metrics_url).send().await.unwrap().text().await.unwrap();
            let lines: Vec<&str> = m.lines().filter(|l| l.contains("signals_total") || l.contains("denials_total")).collect();
            panic!("spans of trace {trace}: {:?}; execution: {lines:?}", ours.iter().map(|x| &x.name).collect::<Vec<_>>());
        }
    };
    // The signal republished: several submit spans, one order (its id is the signal's).
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
    assert!(!st.sim.orders(Exchange::Upbit, "demo").is_empty(), "the order reached the exchange");
}
