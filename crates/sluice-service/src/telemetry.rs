//! Logging and traces. Logs: human-readable lines on stderr, filtered by
//! `RUST_LOG` (default `info`), or JSON lines with trace and span ids when
//! `SLUICE_LOG_FORMAT=json` ([`crate::json_log`]). Traces: off unless an OTLP endpoint is named
//! (`SLUICE_OTLP_ENDPOINT`, else OpenTelemetry's own
//! `OTEL_EXPORTER_OTLP_ENDPOINT`, e.g. `http://otel-collector:4318`); then every
//! `tracing` span is also an OpenTelemetry span, exported over OTLP/HTTP
//! (protobuf) in batches, sampled at `SLUICE_TRACE_SAMPLE_RATIO` (default 1) for
//! traces that start here and as their parent says for the rest. Propagation
//! across services is [`crate::trace`].

use std::sync::OnceLock;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::WithExportConfig;
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{Sampler, SdkTracerProvider};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

static PROVIDER: OnceLock<SdkTracerProvider> = OnceLock::new();

/// Where traces go, from the environment.
#[derive(Debug, Clone, PartialEq)]
pub struct TraceConfig {
    /// The OTLP/HTTP endpoint's base (`/v1/traces` is added).
    pub endpoint: String,
    pub sample_ratio: f64,
}

impl TraceConfig {
    /// None: tracing is off. A bad ratio is an error naming the variable.
    pub fn from_env(env: &dyn Fn(&str) -> Option<String>) -> Result<Option<TraceConfig>, String> {
        let Some(endpoint) = env("SLUICE_OTLP_ENDPOINT").or_else(|| env("OTEL_EXPORTER_OTLP_ENDPOINT")).filter(|e| !e.trim().is_empty())
        else {
            return Ok(None);
        };
        let sample_ratio = match env("SLUICE_TRACE_SAMPLE_RATIO") {
            None => 1.0,
            Some(v) => v
                .parse::<f64>()
                .ok()
                .filter(|r| (0.0..=1.0).contains(r))
                .ok_or_else(|| format!("SLUICE_TRACE_SAMPLE_RATIO '{v}' must be a number from 0 to 1"))?,
        };
        Ok(Some(TraceConfig { endpoint: endpoint.trim().trim_end_matches('/').to_owned(), sample_ratio }))
    }
}

fn provider(service: &str, c: &TraceConfig) -> Result<SdkTracerProvider, String> {
    crate::http_client::install_crypto_provider();
    let url = if c.endpoint.ends_with("/v1/traces") { c.endpoint.clone() } else { format!("{}/v1/traces", c.endpoint) };
    let exporter =
        opentelemetry_otlp::SpanExporter::builder().with_http().with_endpoint(url).build().map_err(|e| format!("OTLP exporter: {e}"))?;
    Ok(SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(c.sample_ratio))))
        .with_resource(Resource::builder().with_service_name(service.to_owned()).build())
        .build())
}

/// Installs the global subscriber (and, when configured, the trace exporter).
/// Safe to call twice (the second call is a no-op), so tests that boot several
/// services in one process do not fail.
pub fn init(service: &str) {
    init_with(service, &|k| std::env::var(k).ok());
}

/// [`init`] with the environment passed in.
pub fn init_with(service: &str, env: &dyn Fn(&str) -> Option<String>) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let (format, bad_format) = match crate::json_log::LogFormat::from_env(env) {
        Ok(f) => (f, None),
        Err(e) => (crate::json_log::LogFormat::Text, Some(e)),
    };
    let json = format == crate::json_log::LogFormat::Json;
    let text = (!json).then(|| tracing_subscriber::fmt::layer().with_target(true).with_writer(std::io::stderr));
    let json = json.then(|| crate::json_log::JsonLayer::new(std::io::stderr));
    let (otel, problem) = match TraceConfig::from_env(env).and_then(|c| c.map(|c| provider(service, &c).map(|p| (p, c))).transpose()) {
        Ok(Some((p, c))) => {
            let tracer = p.tracer("sluice");
            // Spans recorded after the fact (crate::trace::record) use the global one.
            opentelemetry::global::set_tracer_provider(p.clone());
            let fresh = PROVIDER.set(p).is_ok();
            (fresh.then(|| tracing_opentelemetry::layer().with_tracer(tracer)), fresh.then_some(Ok(c.endpoint)))
        }
        Ok(None) => (None, None),
        Err(e) => (None, Some(Err(e))),
    };
    let installed = tracing_subscriber::registry().with(filter).with(text).with(json).with(otel).try_init();
    if installed.is_ok() {
        tracing::info!(service, "logging started");
        if let Some(e) = bad_format {
            tracing::warn!(error = %e, "logging as text");
        }
        match problem {
            Some(Ok(endpoint)) => tracing::info!(%endpoint, "exporting traces over OTLP"),
            Some(Err(e)) => tracing::warn!(error = %e, "traces are not exported"),
            None => {}
        }
    }
}

/// Whether a trace exporter is installed.
pub fn exporting() -> bool {
    PROVIDER.get().is_some()
}

/// Sends every finished span still buffered (before exit, or in tests).
pub fn flush() {
    if let Some(p) = PROVIDER.get() {
        let _ = p.force_flush();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tracing_is_off_without_an_endpoint_and_a_bad_ratio_is_named() {
        assert_eq!(TraceConfig::from_env(&|_| None), Ok(None));
        let env = |k: &str| match k {
            "OTEL_EXPORTER_OTLP_ENDPOINT" => Some("http://collector:4318/".to_owned()),
            "SLUICE_TRACE_SAMPLE_RATIO" => Some("0.25".to_owned()),
            _ => None,
        };
        assert_eq!(TraceConfig::from_env(&env), Ok(Some(TraceConfig { endpoint: "http://collector:4318".into(), sample_ratio: 0.25 })));
        let bad = |k: &str| match k {
            "SLUICE_OTLP_ENDPOINT" => Some("http://x:4318".to_owned()),
            "SLUICE_TRACE_SAMPLE_RATIO" => Some("2".to_owned()),
            _ => None,
        };
        assert!(TraceConfig::from_env(&bad).unwrap_err().contains("SLUICE_TRACE_SAMPLE_RATIO '2'"));
    }
}
