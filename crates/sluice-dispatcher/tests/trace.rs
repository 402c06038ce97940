//! A trace through the dispatcher, received by an OTLP/HTTP receiver inside the
//! test: a gRPC call carrying a W3C `traceparent` becomes `dispatcher.call`
//! under the caller's span, with `dispatcher.queue` (its wait for budget) and
//! `dispatcher.upstream` (the simulator's round trip) under it, their durations
//! as attributes. Its own test binary: the trace exporter is process-wide.

mod common;

use std::time::Duration;

use common::{Setup, harness, req};
use sluice_testkit::otlp::{AnyValue, Receiver, attr, hex};

const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER: &str = "00f067aa0ba902b7";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_carrying_a_traceparent_is_traced_through_queue_and_upstream() {
    let otlp = Receiver::start().await.unwrap();
    let endpoint = otlp.endpoint.clone();
    sluice_service::telemetry::init_with("dispatcher", &|k| (k == "SLUICE_OTLP_ENDPOINT").then(|| endpoint.clone()));

    let mut h = harness(Setup::default()).await;
    let mut call = tonic::Request::new(req("upbit", "GET", "/v1/ticker", "markets=KRW-BTC"));
    call.metadata_mut().insert("traceparent", format!("00-{TRACE}-{CALLER}-01").parse().unwrap());
    let answer = h.client.call(call).await.unwrap().into_inner();
    assert_eq!(answer.status, 200);

    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let (outer, queue, upstream) = loop {
        sluice_service::telemetry::flush();
        let s = otlp.trace(TRACE);
        let find = |n: &str| s.iter().find(|x| x.name == n).cloned();
        if let (Some(a), Some(b), Some(c)) = (find("dispatcher.call"), find("dispatcher.queue"), find("dispatcher.upstream")) {
            break (a, b, c);
        }
        let names: Vec<String> = otlp.spans().into_iter().map(|s| s.name).collect();
        assert!(std::time::Instant::now() < deadline, "spans received: {names:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(hex(&outer.parent_span_id), CALLER, "the call's span is the caller's child");
    assert_eq!(queue.parent_span_id, outer.span_id);
    assert_eq!(upstream.parent_span_id, outer.span_id);
    assert!(queue.end_time_unix_nano <= upstream.start_time_unix_nano, "the wait comes before the round trip");
    assert!(matches!(attr(&queue, "sluice.queue_wait_ms"), Some(AnyValue::DoubleValue(_))), "{queue:?}");
    assert!(matches!(attr(&upstream, "http.response.status_code"), Some(AnyValue::IntValue(200))), "{upstream:?}");
    assert!(matches!(attr(&outer, "path"), Some(AnyValue::StringValue(p)) if p == "/v1/ticker"), "{outer:?}");
}
