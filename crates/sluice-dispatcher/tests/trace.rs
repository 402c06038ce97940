//! A trace through the dispatcher, received by an OTLP/HTTP receiver inside the
//! test: a gRPC call carrying a W3C `traceparent` becomes `dispatcher.call`
//! under the caller's span, with `dispatcher.queue` (its wait for budget) and
//! `dispatcher.upstream` (the simulator's round trip) under it, their durations
//! as attributes. Its own test binary: the trace exporter is process-wide.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::State;
use axum::routing::post;
use common::{Setup, harness, req};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;

type Spans = Arc<Mutex<Vec<Span>>>;

async fn receive(State(spans): State<Spans>, body: Bytes) -> &'static str {
    if let Ok(r) = ExportTraceServiceRequest::decode(body) {
        let mut s = spans.lock().unwrap();
        for rs in r.resource_spans {
            for ss in rs.scope_spans {
                s.extend(ss.spans);
            }
        }
    }
    ""
}

fn attr<'a>(s: &'a Span, key: &str) -> Option<&'a AnyValue> {
    s.attributes.iter().find(|a| a.key == key).and_then(|a| a.value.as_ref()).and_then(|v| v.value.as_ref())
}

const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER: &str = "00f067aa0ba902b7";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_carrying_a_traceparent_is_traced_through_queue_and_upstream() {
    let spans: Spans = Arc::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", listener.local_addr().unwrap());
    let app = axum::Router::new().route("/v1/traces", post(receive)).with_state(spans.clone());
    tokio::spawn(async move { axum::serve(listener, app).await });
    sluice_service::telemetry::init_with("dispatcher", &|k| (k == "SLUICE_OTLP_ENDPOINT").then(|| endpoint.clone()));

    let mut h = harness(Setup::default()).await;
    let mut call = tonic::Request::new(req("upbit", "GET", "/v1/ticker", "markets=KRW-BTC"));
    call.metadata_mut().insert("traceparent", format!("00-{TRACE}-{CALLER}-01").parse().unwrap());
    let answer = h.client.call(call).await.unwrap().into_inner();
    assert_eq!(answer.status, 200);

    let hex = |b: &[u8]| b.iter().map(|x| format!("{x:02x}")).collect::<String>();
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let (outer, queue, upstream) = loop {
        sluice_service::telemetry::flush();
        {
            let s = spans.lock().unwrap();
            let find = |n: &str| s.iter().find(|x| x.name == n && hex(&x.trace_id) == TRACE).cloned();
            if let (Some(a), Some(b), Some(c)) = (find("dispatcher.call"), find("dispatcher.queue"), find("dispatcher.upstream")) {
                break (a, b, c);
            }
        }
        assert!(
            std::time::Instant::now() < deadline,
            "spans received: {:?}",
            spans.lock().unwrap().iter().map(|s| &s.name).collect::<Vec<_>>()
        );
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
