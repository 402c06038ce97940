//! Shutdown: one `CancellationToken` per process, cancelled on SIGINT or SIGTERM
//! (what Kubernetes sends before killing a pod), and the last NATS flush.

use tokio_util::sync::CancellationToken;

/// A token cancelled when the process receives SIGINT or SIGTERM.
pub fn on_signals() -> CancellationToken {
    let token = CancellationToken::new();
    let t = token.clone();
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutdown signal received");
        t.cancel();
    });
    token
}

/// Sends what the client still buffers (core NATS publishes are buffered; a
/// process that ends without this can lose its last messages), waiting at most
/// two seconds for an unreachable server.
pub async fn flush_nats(nats: &async_nats::Client) {
    match tokio::time::timeout(std::time::Duration::from_secs(2), nats.flush()).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => tracing::warn!(error = %e, "last NATS flush failed"),
        Err(_) => tracing::warn!("last NATS flush timed out"),
    }
}

#[cfg(unix)]
async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for SIGTERM; only Ctrl-C stops this process");
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

#[cfg(not(unix))]
async fn wait_for_signal() {
    let _ = tokio::signal::ctrl_c().await;
}
