//! JSON log lines (`SLUICE_LOG_FORMAT=json`): one object per line on stderr, for
//! log collectors (Loki, Elasticsearch, Cloud Logging) that index fields
//! rather than parse text. Each line carries `timestamp` (RFC 3339, UTC),
//! `level`, `target`, `message`, the event's other `fields`, the names of the
//! `spans` it happened in and, when traces are on, the OpenTelemetry
//! `trace_id` and `span_id` of the current span, so a log line leads to its
//! trace and a trace to its lines.

use std::fmt;
use std::io::Write as _;
use std::sync::OnceLock;

use opentelemetry::trace::TraceContextExt as _;
use serde_json::{Map, Value};
use tracing::dispatcher::WeakDispatch;
use tracing::field::{Field, Visit};
use tracing::{Dispatch, Event, Subscriber};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::{Context, Layer};
use tracing_subscriber::registry::LookupSpan;

/// How log lines are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LogFormat {
    /// Human-readable lines (the default).
    Text,
    Json,
}

impl LogFormat {
    /// From `SLUICE_LOG_FORMAT` ("text" or "json"; unset is text). A bad value
    /// is an error naming the variable.
    pub fn from_env(env: &dyn Fn(&str) -> Option<String>) -> Result<LogFormat, String> {
        match env("SLUICE_LOG_FORMAT").as_deref().map(str::trim) {
            None | Some("") | Some("text") => Ok(LogFormat::Text),
            Some("json") => Ok(LogFormat::Json),
            Some(other) => Err(format!("SLUICE_LOG_FORMAT '{other}' must be 'text' or 'json'")),
        }
    }
}

/// The layer that writes [`LogFormat::Json`] lines to `W`. A layer of its own
/// rather than an fmt formatter: the OpenTelemetry context of the event's span
/// is read through the subscriber it is registered with, which a formatter
/// cannot reach while the event is being dispatched.
pub struct JsonLayer<W> {
    writer: W,
    dispatch: OnceLock<WeakDispatch>,
}

impl<W> JsonLayer<W> {
    pub fn new(writer: W) -> JsonLayer<W> {
        JsonLayer { writer, dispatch: OnceLock::new() }
    }
}

/// Collects an event's fields as JSON values (numbers and booleans stay typed).
struct Fields(Map<String, Value>);

impl Visit for Fields {
    fn record_debug(&mut self, field: &Field, value: &dyn fmt::Debug) {
        self.0.insert(field.name().to_owned(), Value::String(format!("{value:?}")));
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.0.insert(field.name().to_owned(), Value::String(value.to_owned()));
    }
    fn record_i64(&mut self, field: &Field, value: i64) {
        self.0.insert(field.name().to_owned(), Value::from(value));
    }
    fn record_u64(&mut self, field: &Field, value: u64) {
        self.0.insert(field.name().to_owned(), Value::from(value));
    }
    fn record_bool(&mut self, field: &Field, value: bool) {
        self.0.insert(field.name().to_owned(), Value::from(value));
    }
    fn record_f64(&mut self, field: &Field, value: f64) {
        self.0.insert(field.name().to_owned(), serde_json::Number::from_f64(value).map_or(Value::Null, Value::Number));
    }
}

impl<S, W> Layer<S> for JsonLayer<W>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    W: for<'w> MakeWriter<'w> + 'static,
{
    fn on_register_dispatch(&self, subscriber: &Dispatch) {
        let _ = self.dispatch.set(subscriber.downgrade());
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let meta = event.metadata();
        let mut line = Map::new();
        let now = time::OffsetDateTime::now_utc().format(&time::format_description::well_known::Rfc3339).unwrap_or_default();
        line.insert("timestamp".into(), Value::String(now));
        line.insert("level".into(), Value::String(meta.level().as_str().to_owned()));
        line.insert("target".into(), Value::String(meta.target().to_owned()));
        let mut fields = Fields(Map::new());
        event.record(&mut fields);
        let mut fields = fields.0;
        if let Some(m) = fields.remove("message") {
            line.insert("message".into(), m);
        }
        if !fields.is_empty() {
            line.insert("fields".into(), Value::Object(fields));
        }
        let span_id = ctx.event_span(event).map(|s| s.id());
        if let Some(scope) = ctx.event_scope(event) {
            let spans: Vec<Value> = scope.from_root().map(|s| Value::String(s.name().to_owned())).collect();
            line.insert("spans".into(), Value::Array(spans));
        }
        // No span's extensions are borrowed here: reading the context may
        // borrow them mutably. The subscriber is the one this layer was
        // registered with while it lives (a scoped one, in tests); a global
        // default is leaked when installed, so that weak reference dies and the
        // global one is asked for (it is reachable during a dispatch).
        let context = |id: &tracing::span::Id| match self.dispatch.get().and_then(WeakDispatch::upgrade) {
            Some(d) => tracing_opentelemetry::get_otel_context(id, &d),
            None => tracing::dispatcher::get_default(|d| tracing_opentelemetry::get_otel_context(id, d)),
        };
        if let Some(cx) = span_id.as_ref().and_then(context) {
            let span = cx.span();
            let sc = span.span_context();
            if sc.is_valid() {
                line.insert("trace_id".into(), Value::String(sc.trace_id().to_string()));
                line.insert("span_id".into(), Value::String(sc.span_id().to_string()));
            }
        }
        let mut text = Value::Object(line).to_string();
        text.push('\n');
        // One write per line, so lines from several threads never interleave.
        let _ = self.writer.make_writer_for(meta).write_all(text.as_bytes());
    }
}

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::sync::{Arc, Mutex};

    use opentelemetry::trace::TracerProvider as _;
    use tracing_opentelemetry::OpenTelemetrySpanExt as _;
    use tracing_subscriber::layer::SubscriberExt as _;

    use super::*;

    #[derive(Clone, Default)]
    struct Buffer(Arc<Mutex<Vec<u8>>>);

    impl Write for Buffer {
        fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(b);
            Ok(b.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    fn lines(buf: &Buffer) -> Vec<Value> {
        let text = String::from_utf8(buf.0.lock().unwrap().clone()).unwrap();
        text.lines().map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}"))).collect()
    }

    #[test]
    fn each_line_is_json_with_fields_spans_and_the_trace_of_its_span() {
        let buf = Buffer::default();
        let out = buf.clone();
        let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder().build();
        let subscriber = tracing_subscriber::registry()
            .with(JsonLayer::new(move || out.clone()))
            .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
        let (trace_id, span_id) = tracing::subscriber::with_default(subscriber, || {
            tracing::info!(count = 3_u64, "outside any span");
            let span = tracing::info_span!("execution.submit", venue = "upbit");
            let _in = span.enter();
            tracing::warn!(client_order_id = "sl0123", ok = false, ratio = 0.5, "order \"sent\"");
            let sc = span.context().span().span_context().clone();
            (sc.trace_id().to_string(), sc.span_id().to_string())
        });
        let got = lines(&buf);
        assert_eq!(got.len(), 2, "{got:?}");
        assert_eq!(got[0]["message"], "outside any span");
        assert_eq!(got[0]["level"], "INFO");
        assert_eq!(got[0]["fields"]["count"], 3);
        assert!(got[0].get("trace_id").is_none() && got[0].get("spans").is_none(), "{}", got[0]);
        let w = &got[1];
        assert_eq!(w["message"], "order \"sent\"");
        assert_eq!(w["level"], "WARN");
        assert_eq!(w["fields"]["client_order_id"], "sl0123");
        assert_eq!(w["fields"]["ok"], false);
        assert_eq!(w["fields"]["ratio"], 0.5);
        assert_eq!(w["spans"], serde_json::json!(["execution.submit"]));
        assert_eq!(w["trace_id"], trace_id.as_str());
        assert_eq!(w["span_id"], span_id.as_str());
        assert_eq!(trace_id.len(), 32);
        let ts = w["timestamp"].as_str().unwrap();
        assert!(ts.len() >= 20 && ts.ends_with('Z') && ts.as_bytes()[10] == b'T', "RFC 3339 in UTC: {ts}");
    }

    #[test]
    fn the_format_comes_from_the_environment_and_a_bad_one_is_named() {
        assert_eq!(LogFormat::from_env(&|_| None), Ok(LogFormat::Text));
        assert_eq!(LogFormat::from_env(&|_| Some("json".into())), Ok(LogFormat::Json));
        assert!(LogFormat::from_env(&|_| Some("xml".into())).unwrap_err().contains("SLUICE_LOG_FORMAT 'xml'"));
    }
}
