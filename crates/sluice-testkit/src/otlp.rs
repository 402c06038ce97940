//! An OTLP/HTTP trace receiver on a free loopback port: what the services'
//! exporters send to `<endpoint>/v1/traces` (protobuf) is decoded and kept, so a
//! test can look for its spans and their parents.

use std::sync::{Arc, Mutex};

use axum::body::Bytes;
use axum::extract::State;
use axum::routing::post;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
pub use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
pub use opentelemetry_proto::tonic::trace::v1::Span;
use prost::Message;

/// Each span with the `service.name` of the process that sent it.
type Spans = Arc<Mutex<Vec<(String, Span)>>>;

/// A running receiver.
pub struct Receiver {
    /// For `SLUICE_OTLP_ENDPOINT`.
    pub endpoint: String,
    spans: Spans,
}

async fn receive(State(spans): State<Spans>, body: Bytes) -> &'static str {
    if let Ok(r) = ExportTraceServiceRequest::decode(body) {
        let mut s = spans.lock().unwrap_or_else(|p| p.into_inner());
        for rs in r.resource_spans {
            let service = rs
                .resource
                .as_ref()
                .and_then(|r| r.attributes.iter().find(|a| a.key == "service.name"))
                .and_then(|a| a.value.as_ref())
                .and_then(|v| match &v.value {
                    Some(AnyValue::StringValue(s)) => Some(s.clone()),
                    _ => None,
                })
                .unwrap_or_default();
            for ss in rs.scope_spans {
                s.extend(ss.spans.into_iter().map(|span| (service.clone(), span)));
            }
        }
    }
    ""
}

impl Receiver {
    /// Listens on 127.0.0.1 (a free port) until the runtime ends.
    pub async fn start() -> anyhow::Result<Receiver> {
        let spans: Spans = Arc::default();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let endpoint = format!("http://{}", listener.local_addr()?);
        let app = axum::Router::new().route("/v1/traces", post(receive)).with_state(spans.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        Ok(Receiver { endpoint, spans })
    }

    /// Every span received so far.
    pub fn spans(&self) -> Vec<Span> {
        self.spans.lock().unwrap_or_else(|p| p.into_inner()).iter().map(|(_, s)| s.clone()).collect()
    }

    /// The spans of one trace (hex trace id).
    pub fn trace(&self, trace_id: &str) -> Vec<Span> {
        self.traced(trace_id).into_iter().map(|(_, s)| s).collect()
    }

    /// The spans of one trace, each with the service that sent it.
    pub fn traced(&self, trace_id: &str) -> Vec<(String, Span)> {
        let s = self.spans.lock().unwrap_or_else(|p| p.into_inner());
        s.iter().filter(|(_, x)| hex(&x.trace_id) == trace_id).cloned().collect()
    }
}

/// An id as lower-case hex, as `traceparent` writes it.
pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// A span's attribute.
pub fn attr<'a>(s: &'a Span, key: &str) -> Option<&'a AnyValue> {
    s.attributes.iter().find(|a| a.key == key).and_then(|a| a.value.as_ref()).and_then(|v| v.value.as_ref())
}
