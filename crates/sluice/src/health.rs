//! `sluice health URL`: one GET, success on a 2xx answer. The container image's
//! health check (the runtime image has no curl), and anything else that wants
//! to ask a service's `/readyz` or `/healthz` from a shell.

use std::io::Write;
use std::time::Duration;

use anyhow::bail;
use clap::Args;

#[derive(Args, Debug)]
pub struct HealthArgs {
    /// What to ask, e.g. http://127.0.0.1:9464/readyz.
    #[arg(env = "SLUICE_HEALTH_URL")]
    pub url: String,
    /// Give up after this long.
    #[arg(long, default_value_t = 3_000)]
    pub timeout_ms: u64,
}

/// Asks once; an error names the status or the failure.
pub async fn run(a: HealthArgs, out: &mut impl Write) -> anyhow::Result<()> {
    let client = sluice_service::http_client::builder().timeout(Duration::from_millis(a.timeout_ms)).build()?;
    let answer = match client.get(&a.url).send().await {
        Ok(r) => r,
        Err(e) => bail!("{}: no answer: {e}", a.url),
    };
    let status = answer.status();
    if !status.is_success() {
        bail!("{}: {status}", a.url);
    }
    writeln!(out, "{}: {status}", a.url)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_service::http::{Readiness, serve};
    use tokio_util::sync::CancellationToken;

    #[tokio::test]
    async fn a_ready_service_passes_and_an_unready_or_absent_one_fails() {
        let stop = CancellationToken::new();
        let _guard = stop.clone().drop_guard();
        let ready = Readiness::default();
        let registry = std::sync::Arc::new(std::sync::Mutex::new(prometheus_client::registry::Registry::default()));
        let (addr, _task) = serve("127.0.0.1:0".parse().unwrap(), registry, ready.clone(), stop.clone()).await.unwrap();
        let ask = |path: &str| HealthArgs { url: format!("http://{addr}{path}"), timeout_ms: 2_000 };
        let mut out = Vec::new();
        run(ask("/healthz"), &mut out).await.unwrap();
        let e = run(ask("/readyz"), &mut out).await.unwrap_err().to_string();
        assert!(e.contains("503"), "not ready yet: {e}");
        ready.set(true);
        run(ask("/readyz"), &mut out).await.unwrap();
        let e = run(HealthArgs { url: "http://127.0.0.1:1/healthz".into(), timeout_ms: 500 }, &mut out).await.unwrap_err();
        assert!(e.to_string().contains("no answer"), "{e}");
    }
}
