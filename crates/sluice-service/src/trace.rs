//! Traces across services: the W3C trace context (`traceparent`, `tracestate`)
//! carried in gRPC metadata and in NATS message headers, so one trace follows a
//! tick through the signal, the order, the dispatcher and the exchange call.
//!
//! Spans are `tracing` spans; with an OTLP endpoint configured
//! ([`crate::telemetry::init`]) the `tracing-opentelemetry` layer turns them into
//! OpenTelemetry spans and exports them. Propagation is OpenTelemetry's own
//! `TraceContextPropagator`; what is written here is only the two carriers it
//! needs (tonic's `MetadataMap` and async-nats's `HeaderMap` implement neither
//! `Injector` nor `Extractor`, and the tonic middleware crates for this pin
//! other OpenTelemetry versions than the ones the workspace builds).

use std::time::SystemTime;

use opentelemetry::Context;
pub use opentelemetry::KeyValue;
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::{Span as _, TraceContextExt, Tracer as _};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tonic::metadata::{KeyRef, MetadataKey, MetadataMap, MetadataValue};
use tracing_opentelemetry::OpenTelemetrySpanExt;

struct MetadataInjector<'a>(&'a mut MetadataMap);

impl Injector for MetadataInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        if let (Ok(k), Ok(v)) = (MetadataKey::from_bytes(key.as_bytes()), MetadataValue::try_from(value.as_str())) {
            self.0.insert(k, v);
        }
    }
}

struct MetadataExtractor<'a>(&'a MetadataMap);

impl Extractor for MetadataExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|v| v.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0
            .keys()
            .filter_map(|k| match k {
                KeyRef::Ascii(k) => Some(k.as_str()),
                KeyRef::Binary(_) => None,
            })
            .collect()
    }
}

struct NatsInjector<'a>(&'a mut async_nats::HeaderMap);

impl Injector for NatsInjector<'_> {
    fn set(&mut self, key: &str, value: String) {
        self.0.insert(key, value.as_str());
    }
}

struct NatsExtractor<'a>(&'a async_nats::HeaderMap);

impl Extractor for NatsExtractor<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).map(|v| v.as_str())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.iter().map(|(k, _)| k.as_ref()).collect()
    }
}

/// Writes `span`'s trace context into gRPC metadata (nothing when tracing is off).
pub fn inject_grpc(span: &tracing::Span, meta: &mut MetadataMap) {
    let cx = span.context();
    if cx.span().span_context().is_valid() {
        TraceContextPropagator::new().inject_context(&cx, &mut MetadataInjector(meta));
    }
}

/// Makes the trace context a gRPC request carries `span`'s parent.
pub fn adopt_grpc(span: &tracing::Span, meta: &MetadataMap) {
    adopt(span, TraceContextPropagator::new().extract(&MetadataExtractor(meta)));
}

/// Writes `span`'s trace context into NATS headers (nothing when tracing is off).
pub fn inject_nats(span: &tracing::Span, headers: &mut async_nats::HeaderMap) {
    let cx = span.context();
    if cx.span().span_context().is_valid() {
        TraceContextPropagator::new().inject_context(&cx, &mut NatsInjector(headers));
    }
}

/// Makes the trace context a NATS message carries `span`'s parent.
pub fn adopt_nats(span: &tracing::Span, headers: Option<&async_nats::HeaderMap>) {
    if let Some(h) = headers {
        adopt(span, TraceContextPropagator::new().extract(&NatsExtractor(h)));
    }
}

/// A trace context received with a message, kept to parent work done later
/// (the signal made from the newest trade).
#[derive(Debug, Clone)]
pub struct Remote(Context);

/// The trace context a NATS message carries, if any.
pub fn remote_nats(headers: Option<&async_nats::HeaderMap>) -> Option<Remote> {
    let cx = TraceContextPropagator::new().extract(&NatsExtractor(headers?));
    cx.span().span_context().is_valid().then_some(Remote(cx))
}

/// The trace context of a `traceparent` value (a message field), if valid.
pub fn remote_traceparent(value: &str) -> Option<Remote> {
    let mut meta = MetadataMap::new();
    meta.insert("traceparent", value.parse().ok()?);
    let cx = TraceContextPropagator::new().extract(&MetadataExtractor(&meta));
    cx.span().span_context().is_valid().then_some(Remote(cx))
}

/// Makes `remote` `span`'s parent.
pub fn adopt_remote(span: &tracing::Span, remote: &Remote) {
    adopt(span, remote.0.clone());
}

/// Whether spans are exported: per-message spans are made only then.
pub fn enabled() -> bool {
    crate::telemetry::exporting()
}

/// The `traceparent` of `span`, for a message field (the signal's), or None
/// when tracing is off.
pub fn traceparent(span: &tracing::Span) -> Option<String> {
    let mut meta = MetadataMap::new();
    inject_grpc(span, &mut meta);
    meta.get("traceparent").and_then(|v| v.to_str().ok()).map(str::to_owned)
}

/// Records a finished child of `parent` with its own start and end: work whose
/// times are known only afterwards (a call's wait for budget, its round trip).
/// Nothing when `parent` is not traced.
pub fn record(parent: &tracing::Span, name: &'static str, start: SystemTime, end: SystemTime, attributes: Vec<KeyValue>) {
    let cx = parent.context();
    if !cx.span().span_context().is_valid() {
        return;
    }
    let tracer = opentelemetry::global::tracer("sluice");
    let mut span = tracer.span_builder(name).with_start_time(start).with_attributes(attributes).start_with_context(&tracer, &cx);
    span.end_with_timestamp(end);
}

fn adopt(span: &tracing::Span, parent: Context) {
    if parent.span().span_context().is_valid() {
        // Fails only when no OpenTelemetry layer is installed: then nothing is traced.
        let _ = span.set_parent(parent);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn carriers_read_and_write_the_w3c_headers() {
        let mut meta = MetadataMap::new();
        meta.insert("traceparent", PARENT.parse().unwrap());
        let cx = TraceContextPropagator::new().extract(&MetadataExtractor(&meta));
        assert_eq!(cx.span().span_context().trace_id().to_string(), "4bf92f3577b34da6a3ce929d0e0e4736");
        let mut out = async_nats::HeaderMap::new();
        TraceContextPropagator::new().inject_context(&cx, &mut NatsInjector(&mut out));
        assert_eq!(out.get("traceparent").map(|v| v.as_str()), Some(PARENT));
        let back = TraceContextPropagator::new().extract(&NatsExtractor(&out));
        assert_eq!(back.span().span_context(), cx.span().span_context());
        let mut meta2 = MetadataMap::new();
        TraceContextPropagator::new().inject_context(&back, &mut MetadataInjector(&mut meta2));
        assert_eq!(meta2.get("traceparent").unwrap(), PARENT);
    }

    #[test]
    fn without_an_exporter_nothing_is_written() {
        let span = tracing::info_span!("x");
        let mut meta = MetadataMap::new();
        inject_grpc(&span, &mut meta);
        assert!(meta.is_empty());
        assert_eq!(traceparent(&span), None);
    }
}
