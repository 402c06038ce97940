//! Dispatcher replicas as separate processes on a nats-server the test starts, the
//! simulator as the strict exchange (see `sluice::replicas`). Each run is bounded
//! in time and stops by itself.

use sluice::replicas::{ReplicaReport, ReplicaRun, run};

async fn scenario(r: ReplicaRun) -> (ReplicaReport, String) {
    let mut out = Vec::new();
    let report = run(r, &mut out).await;
    let text = String::from_utf8_lossy(&out).into_owned();
    match report {
        Ok(rep) => (rep, text),
        Err(e) => panic!("{e:#}\n{text}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_replicas_share_one_budget() {
    let (r, out) = scenario(ReplicaRun { seconds: 60, order_clients: 2, ..ReplicaRun::default() }).await;
    assert_eq!(r.http_429, 0, "{out}");
    assert!(r.violations.is_empty(), "{:?}\n{out}", r.violations);
    assert!(r.ratio >= 0.97, "ratio {}\n{out}", r.ratio);
    assert_eq!(r.orders_duplicated, 0, "{out}");
    assert!(r.orders_placed > 0, "{out}");
    assert!(r.other_errors.is_empty(), "{:?}\n{out}", r.other_errors);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn losing_the_owner_costs_no_burst_and_no_long_stall() {
    let (r, out) = scenario(ReplicaRun { seconds: 25, kill_owner_at: Some(10), order_clients: 3, ..ReplicaRun::default() }).await;
    assert!(r.killed.is_some(), "{out}");
    assert_eq!(r.http_429, 0, "{out}");
    assert!(r.violations.is_empty(), "{:?}\n{out}", r.violations);
    assert!(r.max_stall_ms <= 2_000, "stall {} ms\n{out}", r.max_stall_ms);
    // Its clients' calls in flight were answered UNAVAILABLE, and they moved on.
    assert!(r.unavailable > 0, "{out}");
    // Retried keyed orders: replayed or reported unknown, never sent twice.
    assert_eq!(r.orders_duplicated, 0, "{out}");
    assert!(r.orders_placed > 0, "{out}");
    assert!(r.other_errors.is_empty(), "{:?}\n{out}", r.other_errors);
    assert_eq!(r.modes_at_end.len(), 2, "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_stopped_and_restarted_costs_no_burst() {
    let (r, out) =
        scenario(ReplicaRun { seconds: 25, nats_stop_at: Some(5), nats_down_for: 8, order_clients: 1, ..ReplicaRun::default() }).await;
    assert_eq!(r.http_429, 0, "{out}");
    assert!(r.violations.is_empty(), "{:?}\n{out}", r.violations);
    assert_eq!(r.orders_duplicated, 0, "{out}");
    // Health says so while NATS is away, and every replica rejoins by itself.
    assert!(r.modes_while_down.iter().all(|m| m.ends_with("=fallback")) && r.modes_while_down.len() == 3, "{out}");
    assert!(r.modes_at_end.iter().all(|m| m.ends_with("=connected")) && r.modes_at_end.len() == 3, "{out}");
}
