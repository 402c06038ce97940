//! `sluice receive --listen 127.0.0.1:9469`: a local webhook receiver for the
//! offline stack, so the demo shows what a real receiver would get. Each POST
//! (Alertmanager's webhook JSON, or a Slack or Discord message) is printed as
//! one line per alert and answered 200.

use std::io::Write;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use axum::Router;
use axum::extract::State;
use axum::routing::post;
use clap::Args;
use tokio_util::sync::CancellationToken;

#[derive(Args, Debug)]
pub struct ReceiveArgs {
    #[arg(long, default_value = "127.0.0.1:9469")]
    pub listen: SocketAddr,
}

/// One notification body as lines (pure, for tests).
pub fn describe(body: &serde_json::Value) -> Vec<String> {
    if let Some(alerts) = body.get("alerts").and_then(|a| a.as_array()) {
        let status = body["status"].as_str().unwrap_or("?");
        let group = body["groupKey"].as_str().unwrap_or("");
        return alerts
            .iter()
            .map(|a| {
                let name = a["labels"]["alertname"].as_str().unwrap_or("?");
                let summary = a["annotations"]["summary"].as_str().unwrap_or("");
                format!("{status:<8} {:<8} {name}: {summary}  [{group}]", a["status"].as_str().unwrap_or("?"))
            })
            .collect();
    }
    let text = body.get("text").or_else(|| body.get("content")).and_then(|t| t.as_str()).unwrap_or("");
    vec![text.replace('\n', " | ")]
}

type Out = Arc<Mutex<Box<dyn Write + Send>>>;

async fn take(State(out): State<Out>, body: axum::body::Bytes) -> &'static str {
    let lines = match serde_json::from_slice::<serde_json::Value>(&body) {
        Ok(v) => describe(&v),
        Err(e) => vec![format!("a body that is not JSON ({e})")],
    };
    let mut o = out.lock().unwrap_or_else(|p| p.into_inner());
    for l in lines {
        let _ = writeln!(o, "{l}");
    }
    let _ = o.flush();
    "ok"
}

/// Serves until `shutdown`.
pub async fn run(a: ReceiveArgs, shutdown: CancellationToken) -> anyhow::Result<()> {
    let out: Out = Arc::new(Mutex::new(Box::new(std::io::stdout())));
    let app = Router::new().route("/{*path}", post(take)).with_state(out);
    let listener = tokio::net::TcpListener::bind(a.listen).await.map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", a.listen))?;
    axum::serve(listener, app).with_graceful_shutdown(async move { shutdown.cancelled().await }).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn webhook_and_chat_bodies() {
        let hook = serde_json::json!({"status":"firing","groupKey":"g","alerts":[{"status":"firing","labels":{"alertname":"StaleData"},"annotations":{"summary":"old"}}]});
        assert_eq!(describe(&hook), vec!["firing   firing   StaleData: old  [g]".to_owned()]);
        assert_eq!(describe(&serde_json::json!({"text":"a\nb"})), vec!["a | b".to_owned()]);
    }
}
