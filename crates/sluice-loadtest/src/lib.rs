//! `sluice loadtest`: seed 003's concurrency sweep as a tool. It loads an HTTP
//! endpoint, a WebSocket endpoint, the dispatcher's `Call` or the execution
//! service's `SubmitOrder` at each of several concurrency levels (or at a fixed
//! arrival rate, open loop, with coordinated omission corrected), and reports per
//! level the outcomes by status and error kind and the latency percentiles from
//! an HDR histogram; thresholds turn the report into a CI verdict.
//!
//! * [`target`]: what is loaded, one connection per simulated client.
//! * [`runner`]: the levels, closed or open loop.
//! * [`stats`], [`threshold`], [`report`], [`svg`]: pure; what was measured and
//!   how it is judged and shown.
//! * [`guard`]: loopback only, unless the user allows a remote target.
//! * [`serve`]: a target with a known latency distribution, for calibration.

pub mod guard;
pub mod report;
pub mod runner;
pub mod serve;
pub mod stats;
pub mod svg;
pub mod target;
pub mod threshold;

use std::sync::Arc;

pub use report::RunReport;
pub use runner::Plan;
pub use target::Target;
pub use threshold::Threshold;

/// Why a load test did not run.
#[derive(Debug, thiserror::Error)]
pub enum LoadtestError {
    #[error(transparent)]
    Guard(#[from] guard::GuardError),
    #[error("{0}")]
    Plan(String),
}

impl Plan {
    /// Names the first thing wrong with the plan.
    pub fn validate(&self) -> Result<(), LoadtestError> {
        let bad = |s: &str| Err(LoadtestError::Plan(s.to_owned()));
        if self.levels.is_empty() {
            return bad("no concurrency levels: give at least one, as in --levels 10,50,100");
        }
        if self.levels.contains(&0) {
            return bad("a concurrency level of 0 sends nothing: every level must be at least 1");
        }
        if self.requests == 0 {
            return bad("--requests must be at least 1");
        }
        if self.timeout.is_zero() {
            return bad("--timeout must be positive");
        }
        if let Some(r) = self.rate
            && !(r.is_finite() && r > 0.0)
        {
            return bad("--rate must be a positive number of requests per second");
        }
        if self.level_time.is_some_and(|t| t.is_zero()) {
            return bad("--level-time must be positive");
        }
        Ok(())
    }
}

/// Checks the target's address (`warn` gets the warning when a remote one is
/// allowed), runs the sweep and judges it by `thresholds`.
pub async fn run(
    target: Target,
    plan: &Plan,
    thresholds: &[Threshold],
    allow_remote: bool,
    warn: &mut (dyn FnMut(&str) + Send),
) -> Result<RunReport, LoadtestError> {
    plan.validate()?;
    if target.is_websocket() && plan.rate.is_some() {
        return Err(LoadtestError::Plan(
            "--rate does not apply to WebSocket sessions (each client makes one, all at once); leave it out".into(),
        ));
    }
    if let Some(w) = guard::check(target.url(), allow_remote).await? {
        warn(&w);
    }
    let description = target.describe();
    let url = target.url().to_owned();
    let levels = runner::sweep(Arc::new(target), plan).await;
    let breaches = threshold::check_all(thresholds, &levels);
    Ok(RunReport {
        target: description,
        url,
        mode: if plan.rate.is_some() { "open" } else { "closed" },
        rate: plan.rate,
        requests_per_client: plan.requests,
        warmup_per_client: plan.warmup,
        timeout_ms: plan.timeout.as_secs_f64() * 1e3,
        level_time_s: plan.level_time.map(|t| t.as_secs_f64()),
        levels,
        thresholds: thresholds.iter().map(|t| t.text.clone()).collect(),
        passed: breaches.is_empty(),
        breaches,
    })
}
