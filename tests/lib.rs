//! Helpers the cross-service tests share. The tests themselves are the other
//! files here, one test binary each (see `Cargo.toml`): in-process services on a
//! real nats-server and the simulator (`alerting`, `collector`, `credentials`,
//! `execution`, `metric_names`, `signal`, `examples`), every service as its own
//! process (`processes`, `replicas`), and the deployment files (`deploy`).

use std::time::Duration;

use tokio::time::Instant;

/// Polls `f` every 50 ms until it holds; fails the test after `limit`, naming `what`.
pub async fn wait_for(what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
    let end = Instant::now() + limit;
    while !f() {
        assert!(Instant::now() < end, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
