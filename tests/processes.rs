//! The pipeline with every service as its own process (`sluice::pipeline`: the
//! built binaries, each with its config file and log, as `scripts/up` runs
//! them) against a test NATS and the simulator: market data flows on NATS, the
//! signal service makes signals from it, and one trace, received by an OTLP
//! receiver inside the test, spans the collector, signal, execution and
//! dispatcher processes down to the simulator call, each hop the previous
//! one's child. (The offline model mostly
//! says HOLD on the simulated market, so a real, traced signal is republished
//! as a confident BUY with its own headers: every hop of the trace is the
//! services' own.)

use std::collections::{BTreeSet, HashMap};
use std::time::Duration;

use futures::StreamExt;
use prost::Message;
use sluice::pipeline::{Options, Pipeline};
use sluice_domain::Exchange;
use sluice_proto::signal::v1 as pb;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_service_as_its_own_process_and_one_trace_across_them() {
    let p = Pipeline::start(Options { signal_every_ms: 500, ..Options::default() }).await.unwrap();
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
}
