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

/// A killed replica's address refuses connections: the survivors know it is gone,
/// not cut off, and use its share again at once.
fn killed_replica_costs_no_share(r: &ReplicaReport, out: &str) {
    assert!(r.killed.is_some(), "{out}");
    assert_eq!(r.http_429, 0, "{out}");
    assert!(r.violations.is_empty(), "{:?}\n{out}", r.violations);
    assert!(r.max_stall_ms <= 2_000, "stall {} ms\n{out}", r.max_stall_ms);
    assert!(r.ratio_after_kill.is_some_and(|x| x >= 0.97), "ratio after the kill {:?}\n{out}", r.ratio_after_kill);
    // Retried keyed orders: replayed or reported unknown, never sent twice.
    assert_eq!(r.orders_duplicated, 0, "{out}");
    assert!(r.orders_placed > 0, "{out}");
    assert!(r.other_errors.is_empty(), "{:?}\n{out}", r.other_errors);
    assert_eq!(r.modes_at_end.len(), 2, "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn losing_the_owner_costs_no_burst_no_long_stall_and_no_share() {
    let (r, out) = scenario(ReplicaRun { seconds: 22, kill_at: Some(8), order_clients: 3, ..ReplicaRun::default() }).await;
    killed_replica_costs_no_share(&r, &out);
    // Its clients' calls in flight were answered UNAVAILABLE, and they moved on.
    assert!(r.unavailable > 0, "{out}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn losing_a_replica_that_owns_nothing_costs_no_share() {
    let (r, out) =
        scenario(ReplicaRun { seconds: 20, kill_at: Some(6), kill_owner: false, order_clients: 2, ..ReplicaRun::default() }).await;
    killed_replica_costs_no_share(&r, &out);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_stopped_and_restarted_costs_no_burst_and_full_rate_comes_back() {
    let (r, out) =
        scenario(ReplicaRun { seconds: 25, nats_stop_at: Some(5), nats_down_for: 8, order_clients: 1, ..ReplicaRun::default() }).await;
    assert_eq!(r.http_429, 0, "{out}");
    assert!(r.violations.is_empty(), "{:?}\n{out}", r.violations);
    assert_eq!(r.orders_duplicated, 0, "{out}");
    // Health says so while NATS is away, and every replica rejoins by itself.
    assert!(r.modes_while_down.iter().all(|m| m.ends_with("=fallback")) && r.modes_while_down.len() == 3, "{out}");
    assert!(r.modes_at_end.iter().all(|m| m.ends_with("=connected")) && r.modes_at_end.len() == 3, "{out}");
    // The ticker group's own bound: reconnect (up to 1 s), then what was admitted
    // alone reaches the exchange within the upstream timeout (2 s) and leaves the
    // group's one-second window, and the new owner's ledger copy is as old: about
    // 4 s, never the minute of the longest window elsewhere.
    assert!(r.full_rate_after_nats_s.is_some_and(|s| s <= 6.0), "full rate after {:?} s\n{out}", r.full_rate_after_nats_s);
}
