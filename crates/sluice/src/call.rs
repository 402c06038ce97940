//! `sluice call`: one exchange request through the dispatcher, printed like curl.

use std::time::Duration;

use anyhow::Context;
use sluice_proto::dispatcher::v1::{CallRequest, CallResponse};

/// Options of `sluice call`.
#[derive(Debug, Clone, clap::Args)]
pub struct CallArgs {
    #[arg(long, default_value = "http://127.0.0.1:50051", env = "SLUICE_DISPATCHER_URL")]
    pub dispatcher: String,
    /// A file holding a bearer token, when the dispatcher names its clients.
    #[arg(long, env = "SLUICE_TOKEN_FILE")]
    pub token_file: Option<std::path::PathBuf>,
    #[arg(long)]
    pub exchange: String,
    #[arg(long, default_value = "GET")]
    pub method: String,
    #[arg(long)]
    pub path: String,
    #[arg(long, default_value = "")]
    pub query: String,
    #[arg(long, default_value = "")]
    pub body: String,
    #[arg(long, default_value = "")]
    pub account: String,
    #[arg(long, default_value = "")]
    pub idempotency_key: String,
    #[arg(long, default_value_t = 10_000)]
    pub timeout_ms: u64,
    /// Print response headers too.
    #[arg(long)]
    pub headers: bool,
}

fn secs(d: &Option<sluice_proto::prost_types::Duration>) -> f64 {
    d.as_ref().map_or(0.0, |d| d.seconds as f64 * 1000.0 + f64::from(d.nanos) / 1e6)
}

/// Formats an answer for the terminal.
pub fn format(r: &CallResponse, headers: bool) -> String {
    let mut s = format!(
        "HTTP {}  queued {:.1} ms  upstream {:.1} ms  budgets {}{}\n",
        r.status,
        secs(&r.queued),
        secs(&r.upstream),
        r.buckets.join(","),
        if r.replayed { "  (replayed)" } else { "" }
    );
    if headers {
        for h in &r.headers {
            s.push_str(&format!("{}: {}\n", h.name, h.value));
        }
    }
    let body = serde_json::from_slice::<serde_json::Value>(&r.body)
        .ok()
        .and_then(|v| serde_json::to_string_pretty(&v).ok())
        .unwrap_or_else(|| String::from_utf8_lossy(&r.body).into_owned());
    s.push_str(&body);
    s.push('\n');
    s
}

pub async fn run(a: CallArgs, out: &mut dyn std::io::Write) -> anyhow::Result<()> {
    let mut client = crate::connect::dispatcher(&a.dispatcher, a.token_file.as_deref())
        .await
        .with_context(|| format!("connecting to {}", a.dispatcher))?;
    let t = Duration::from_millis(a.timeout_ms);
    let req = CallRequest {
        exchange: a.exchange,
        account: a.account,
        method: a.method,
        path: a.path,
        query: a.query,
        body: a.body.into_bytes(),
        idempotency_key: a.idempotency_key,
        timeout: Some(sluice_proto::prost_types::Duration { seconds: t.as_secs() as i64, nanos: t.subsec_nanos() as i32 }),
        ..CallRequest::default()
    };
    let r = client.call(req).await.map_err(|s| anyhow::anyhow!("{:?}: {}", s.code(), s.message()))?.into_inner();
    write!(out, "{}", format(&r, a.headers))?;
    Ok(())
}
