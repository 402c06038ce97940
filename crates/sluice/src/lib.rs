//! The `sluice` command line, as a library so tests can run each command in-process:
//!
//! * [`alert_bench`]: `sluice bench alert`, a simulator fault to the first notification.
//! * [`bench`]: `sluice bench dispatch`, the dispatcher against the simulator.
//! * [`bots_bench`]: `sluice bench bots`, ccxt processes on one account, directly and through the dispatcher's exchange-compatible face.
//! * [`execute_bench`]: `sluice bench execute`, signals to orders with the execution process killed.
//! * [`sweep_bench`]: `sluice bench sweep`, a loadtest sweep of 10 to 1,000 gRPC clients through one dispatcher.
//! * [`tick_bench`]: `sluice bench tick`, tick to order sent across the services as processes, from their traces.
//! * [`top`]: `sluice top`, the live summary of budgets, queues and 429s.
//! * [`call`]: `sluice call`, one exchange request through the dispatcher.
//! * [`health`]: `sluice health URL`, one GET that succeeds on 2xx (the image's health check).
//! * [`config_check`]: `sluice config check`, a configuration file read as its service would.
//! * [`load`]: `sluice load`, steady market-data traffic through the dispatcher.
//! * [`loadtest`]: `sluice loadtest`, concurrency sweeps and fixed-rate load with thresholds and reports.
//! * [`connect`]: the dispatcher and NATS connections, with credentials.
//! * [`receive`]: `sluice receive`, a local webhook receiver that prints what it gets.
//! * [`replicas`]: `sluice bench dispatch --replicas N`, dispatcher processes on one NATS.
//! * [`pipeline`]: every service as its own process, with an OTLP receiver, for the cross-service tests and `bench tick`.
//! * [`stack`]: NATS, the simulator and a dispatcher in-process, for tests and benches.
//! * [`mock_receiver`]: Slack, Discord, PagerDuty and webhook stand-ins for the alerting tests.

pub mod alert_bench;
pub mod bench;
pub mod bots_bench;
pub mod call;
pub mod collect_bench;
pub mod config_check;
pub mod connect;
pub mod execute_bench;
pub mod health;
pub mod load;
pub mod loadtest;
pub mod mock_receiver;
pub mod pipeline;
pub mod process;
pub mod receive;
pub mod replicas;
pub mod signal_bench;
pub mod stack;
pub mod sweep_bench;
pub mod tick_bench;
pub mod top;

/// Percentile of a sorted slice (nearest rank).
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

#[cfg(test)]
mod tests {
    // Nearest rank returns an element of the slice itself, so equality is exact.
    #[allow(clippy::float_cmp)]
    #[test]
    fn nearest_rank_percentiles() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(super::percentile(&v, 50.0), 50.0);
        assert_eq!(super::percentile(&v, 99.0), 99.0);
        assert_eq!(super::percentile(&v, 100.0), 100.0);
        assert_eq!(super::percentile(&[], 99.0), 0.0);
    }
}
