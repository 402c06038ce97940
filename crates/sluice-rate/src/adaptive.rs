//! The adaptive layer of seed 004, every number configurable: the first 429 cuts the
//! bucket's rate (x0.8, never below 0.5), the cut holds (300 s), then the rate
//! recovers in steps (5 % every 30 s). Several 429s caused by requests that were
//! already sent before the cut count as one: only a request admitted after the last
//! cut can prove the cut was not enough.

use std::time::Duration;

use crate::Time;

/// The adaptive policy of a bucket.
#[derive(Debug, Clone, PartialEq)]
pub struct AdaptiveSpec {
    /// Factor applied to the current rate on a 429 (0 < cut < 1).
    pub cut: f64,
    /// The rate never drops below this share of the configured rate.
    pub floor: f64,
    /// How long a cut holds before recovery begins.
    pub hold: Duration,
    /// Share of the configured rate given back at each recovery step.
    pub step: f64,
    /// Time between recovery steps.
    pub interval: Duration,
}

impl Default for AdaptiveSpec {
    fn default() -> Self {
        AdaptiveSpec { cut: 0.8, floor: 0.5, hold: Duration::from_secs(300), step: 0.05, interval: Duration::from_secs(30) }
    }
}

impl AdaptiveSpec {
    /// Checks the numbers make sense, naming the first that does not.
    pub fn validate(&self) -> Result<(), String> {
        if !(self.cut > 0.0 && self.cut < 1.0) {
            return Err(format!("adaptive cut must be in (0, 1), got {}", self.cut));
        }
        if !(self.floor > 0.0 && self.floor <= 1.0) {
            return Err(format!("adaptive floor must be in (0, 1], got {}", self.floor));
        }
        if !(self.step > 0.0 && self.step <= 1.0) {
            return Err(format!("adaptive step must be in (0, 1], got {}", self.step));
        }
        if self.interval.is_zero() {
            return Err("adaptive interval must be positive".into());
        }
        Ok(())
    }
}

/// The adaptive state of one bucket.
#[derive(Debug, Clone)]
pub struct Adaptive {
    spec: AdaptiveSpec,
    /// Rate factor right after the last cut.
    factor_at_cut: f64,
    /// When the last cut happened; `None` means the rate was never cut.
    last_cut: Option<Time>,
    cuts: u64,
}

impl Adaptive {
    pub fn new(spec: AdaptiveSpec) -> Self {
        Adaptive { spec, factor_at_cut: 1.0, last_cut: None, cuts: 0 }
    }

    pub fn spec(&self) -> &AdaptiveSpec {
        &self.spec
    }

    /// The share of the configured rate allowed at `now`, in `[floor, 1]`.
    pub fn factor(&self, now: Time) -> f64 {
        let Some(cut_at) = self.last_cut else { return 1.0 };
        let recover_from = cut_at + self.spec.hold;
        if now < recover_from {
            return self.factor_at_cut;
        }
        let steps = now.saturating_since(recover_from).as_nanos() / self.spec.interval.as_nanos().max(1);
        (self.factor_at_cut + self.spec.step * steps as f64).min(1.0)
    }

    /// When the factor next changes, if it is still below 1.
    pub fn next_change(&self, now: Time) -> Option<Time> {
        let cut_at = self.last_cut?;
        if self.factor(now) >= 1.0 {
            return None;
        }
        let recover_from = cut_at + self.spec.hold;
        if now < recover_from {
            return Some(recover_from + self.spec.interval);
        }
        let interval = self.spec.interval.as_nanos().max(1);
        let steps = now.saturating_since(recover_from).as_nanos() / interval + 1;
        Some(recover_from + Duration::from_nanos(u64::try_from(steps * interval).unwrap_or(u64::MAX)))
    }

    /// A 429 came back for a request admitted at `admitted_at`. Returns whether the
    /// rate was cut (it is not when the request predates the last cut).
    pub fn on_throttled(&mut self, now: Time, admitted_at: Time) -> bool {
        if self.last_cut.is_some_and(|cut| admitted_at <= cut) {
            return false;
        }
        let current = self.factor(now);
        self.factor_at_cut = (current * self.spec.cut).max(self.spec.floor);
        self.last_cut = Some(now);
        self.cuts += 1;
        true
    }

    /// How many cuts happened so far.
    pub fn cuts(&self) -> u64 {
        self.cuts
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: u64) -> Time {
        Time::from_millis(s * 1000)
    }

    #[test]
    fn seed_004_schedule() {
        let mut a = Adaptive::new(AdaptiveSpec::default());
        assert!((a.factor(at(10)) - 1.0).abs() < 1e-12);
        assert!(a.on_throttled(at(100), at(99)));
        assert!((a.factor(at(100)) - 0.8).abs() < 1e-9);
        assert!((a.factor(at(399)) - 0.8).abs() < 1e-9, "holds 300 s");
        assert!((a.factor(at(400)) - 0.8).abs() < 1e-9);
        assert!((a.factor(at(430)) - 0.85).abs() < 1e-9, "one step after 30 s");
        assert!((a.factor(at(520)) - 1.0).abs() < 1e-9, "fully recovered after four steps");
        assert_eq!(a.next_change(at(600)), None);
    }

    #[test]
    fn cuts_compound_down_to_the_floor_and_ignore_stale_429s() {
        let mut a = Adaptive::new(AdaptiveSpec::default());
        assert!(a.on_throttled(at(10), at(9)));
        assert!(!a.on_throttled(at(10), at(9)), "same burst, sent before the cut");
        assert!(a.on_throttled(at(20), at(15)));
        assert!((a.factor(at(20)) - 0.64).abs() < 1e-9);
        assert!(a.on_throttled(at(30), at(25)));
        assert!((a.factor(at(30)) - 0.512).abs() < 1e-9);
        assert!(a.on_throttled(at(40), at(35)));
        assert!((a.factor(at(40)) - 0.5).abs() < 1e-9, "floor");
        assert_eq!(a.cuts(), 4);
    }

    #[test]
    fn next_change_points_at_the_next_step() {
        let mut a = Adaptive::new(AdaptiveSpec::default());
        a.on_throttled(at(0), at(0));
        assert_eq!(a.next_change(at(5)), Some(at(330)));
        assert_eq!(a.next_change(at(330)), Some(at(360)));
        assert_eq!(a.next_change(at(345)), Some(at(360)));
    }

    #[test]
    fn validation_names_the_bad_number() {
        let spec = AdaptiveSpec { cut: 1.5, ..AdaptiveSpec::default() };
        assert!(spec.validate().unwrap_err().contains("cut"));
    }
}
