//! What a bucket learns about an exchange's real limit, one window at a time, and
//! how it recovers. The policy file may be wrong (exchanges change limits without
//! notice; another program may share the key or IP), so the count a window admits
//! is the smallest of:
//!
//! * the configured limit, or a lower one the exchange announced (Bybit
//!   `X-Bapi-Limit`);
//! * the count the last rate-limit answer allowed: a 429 (or its equivalent) to a
//!   request is evidence that the exchange's limit, in that window, is at most
//!   what it had already counted when it refused. The count is cut to that
//!   evidence at once, so the next window is already safe (seed 004 cut the rate
//!   by x0.8 and stretched the period, which kept bursts of the old count within
//!   one real second and earned 429s until the end). It recovers after `hold` by
//!   `step` of the configured limit every `interval` (seed 004's numbers);
//! * what the exchange's "remaining" header (Upbit `Remaining-Req: sec`) says it
//!   leaves sluice: remaining plus every request of sluice's that the exchange may
//!   have counted at that arrival, the smallest such statement over the last
//!   [`memory`] (so another program's busiest moment is left to it). It follows
//!   the exchange both ways, since it is the exchange's own word. Another
//!   program's refused requests are never counted, so what it wanted but did not
//!   get never shows: while its spending is visible (the statements vary), the
//!   window leaves one more request free for two windows every `memory`, and what
//!   the program does with that room shows its real demand. A spell that shows
//!   nothing new doubles the time to the next (up to 16 times), so once its
//!   demand is known the room costs next to nothing.
//!
//! Above what the exchange is known to have accepted in one window (`verified`),
//! requests are probes, taken one at a time (the bucket admits one only when
//! nothing is in flight), so a wrong policy earns one 429, not one per request in
//! flight. Below `probe_below` of the limit nothing is probed, unless a count at
//! or below the limit failed within `remember`. Pure: times come in as arguments.

use std::collections::VecDeque;
use std::time::Duration;

use crate::Time;

/// How long what the exchange says about others' spending is kept (the smallest
/// remaining statement here, the largest spending seen in the bucket): five
/// windows, and at least 30 s. Our answers sample the exchange's window only at
/// our own arrivals, which can stay in step with another program's quiet phase
/// for a few seconds; 30 s of statements catch its busiest moment. A program that
/// stopped gives its share back after that long.
pub fn memory(period: Duration) -> Duration {
    (period * 5).max(Duration::from_secs(30))
}

/// The adaptive policy of a bucket (`[adaptive]` in the policy file).
#[derive(Debug, Clone, PartialEq)]
pub struct AdaptiveSpec {
    /// Factor applied to the limit on a 429 that the evidence does not explain
    /// (the count was already within what the exchange had seen): 0 < cut < 1.
    pub cut: f64,
    /// No cut takes a window below this share of its configured limit.
    pub floor: f64,
    /// How long a cut holds before recovery begins.
    pub hold: Duration,
    /// Share of the configured limit given back at each recovery step.
    pub step: f64,
    /// Time between recovery steps.
    pub interval: Duration,
    /// Below this share of the limit, counts the exchange has not yet shown it
    /// accepts are admitted freely (only the part above is probed one at a time).
    pub probe_below: f64,
    /// A count that failed is remembered this long: probing up to it again goes
    /// one request at a time from what was verified.
    pub remember: Duration,
}

impl Default for AdaptiveSpec {
    fn default() -> Self {
        AdaptiveSpec {
            cut: 0.8,
            floor: 0.25,
            hold: Duration::from_secs(300),
            step: 0.05,
            interval: Duration::from_secs(30),
            probe_below: 0.5,
            remember: Duration::from_secs(3600),
        }
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
        if !(0.0..=1.0).contains(&self.probe_below) {
            return Err(format!("adaptive probe_below must be in [0, 1], got {}", self.probe_below));
        }
        Ok(())
    }
}

/// Why a window admits less than its configured limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// A rate-limit answer showed the exchange refusing at this count.
    Throttled,
    /// The exchange's remaining-requests header says it leaves sluice this much.
    Remaining,
    /// The exchange announced a lower limit in a header.
    Announced,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Throttled => "rate-limit answer",
            Source::Remaining => "remaining header",
            Source::Announced => "announced limit",
        }
    }
}

/// A change of a window's limit, for the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Change {
    pub period: Duration,
    pub configured: u64,
    pub from: u64,
    pub to: u64,
    /// What the exchange had counted (the evidence), when a 429 caused it.
    pub evidence: Option<u64>,
    pub source: Source,
}

/// What one window has learned.
#[derive(Debug, Clone)]
pub struct Learned {
    configured: u64,
    period: Duration,
    /// The configured limit, or a lower one the exchange announced.
    ceiling: u64,
    /// After a rate-limit answer: the count the evidence allowed, and when.
    cut: Option<(u64, Time)>,
    /// The lowest count seen refused, and when.
    failed: Option<(u64, Time)>,
    /// Remaining-header statements over the last [`memory`]: (when, the most it
    /// leaves us, the least).
    implied: VecDeque<(Time, u64, u64)>,
    /// The smallest of them, kept when they age out (a burst after a quiet spell
    /// must not forget what the exchange said).
    implied_min: Option<u64>,
    /// One request is left free until then (see the module docs), and the next
    /// such spell may begin at `next_yield`, `yield_every` after the last; the
    /// smallest statement when the last began shows whether it taught anything.
    yield_until: Time,
    next_yield: Time,
    yield_every: Duration,
    min_at_yield: Option<u64>,
    /// The largest window count the exchange is known to have accepted.
    verified: u64,
}

impl Learned {
    pub fn new(configured: u64, period: Duration) -> Self {
        Learned {
            configured,
            period,
            ceiling: configured,
            cut: None,
            failed: None,
            implied: VecDeque::new(),
            implied_min: None,
            yield_until: Time::ZERO,
            next_yield: Time::ZERO,
            yield_every: memory(period),
            min_at_yield: None,
            verified: 0,
        }
    }

    fn step_size(&self, spec: &AdaptiveSpec) -> u64 {
        ((spec.step * self.configured as f64).ceil() as u64).max(1)
    }

    fn floor_count(&self, spec: &AdaptiveSpec) -> u64 {
        ((spec.floor * self.configured as f64).ceil() as u64).clamp(1, self.configured)
    }

    /// The count allowed after the last cut, recovering in steps.
    fn cut_limit(&self, now: Time, spec: &AdaptiveSpec) -> u64 {
        let Some((level, at)) = self.cut else { return u64::MAX };
        let recover_from = at + spec.hold;
        if now < recover_from {
            return level;
        }
        let steps = now.saturating_since(recover_from).as_nanos() / spec.interval.as_nanos().max(1);
        level.saturating_add(self.step_size(spec).saturating_mul(u64::try_from(steps).unwrap_or(u64::MAX)))
    }

    /// The count this window admits at `now`.
    pub fn limit(&self, now: Time, spec: &AdaptiveSpec) -> u64 {
        let limit = self.base(now, spec);
        if now < self.yield_until { limit.saturating_sub(1).max(1) } else { limit }
    }

    /// The limit learnt, without the request left free for another program.
    pub fn base(&self, now: Time, spec: &AdaptiveSpec) -> u64 {
        self.ceiling.min(self.cut_limit(now, spec)).min(self.implied_min.unwrap_or(u64::MAX))
    }

    /// What binds the limit below the configured one, if anything does.
    pub fn source(&self, now: Time, spec: &AdaptiveSpec) -> Option<Source> {
        let limit = self.base(now, spec);
        if limit >= self.configured {
            return None;
        }
        if self.implied_min == Some(limit) {
            Some(Source::Remaining)
        } else if self.cut_limit(now, spec) == limit {
            Some(Source::Throttled)
        } else {
            Some(Source::Announced)
        }
    }

    pub fn configured(&self) -> u64 {
        self.configured
    }

    pub fn verified(&self) -> u64 {
        self.verified
    }

    /// The lowest count refused, if one was within `remember`.
    pub fn failed(&self, now: Time, spec: &AdaptiveSpec) -> Option<u64> {
        self.failed.filter(|(_, at)| now < *at + spec.remember).map(|(c, _)| c)
    }

    /// The exchange announced its limit: a lower one replaces ours, never a higher.
    pub fn announce(&mut self, now: Time, spec: &AdaptiveSpec, limit: u64) -> Option<Change> {
        let from = self.base(now, spec);
        self.ceiling = self.ceiling.min(limit.max(1));
        let to = self.base(now, spec);
        (to < from).then_some(Change {
            period: self.period,
            configured: self.configured,
            from,
            to,
            evidence: None,
            source: Source::Announced,
        })
    }

    /// The exchange accepted a window holding `count`.
    pub fn verify(&mut self, count: u64) {
        self.verified = self.verified.max(count.min(self.ceiling));
    }

    /// The exchange's remaining header, read at `now`, says it leaves sluice `at_most`
    /// in its window (remaining plus everything of ours it may have counted) and at
    /// least `at_least` (remaining plus what it surely counted): the first bounds the
    /// limit, the second is known to be accepted.
    pub fn on_remaining(&mut self, now: Time, spec: &AdaptiveSpec, at_most: u64, at_least: u64) -> Option<Change> {
        let from = self.base(now, spec);
        let horizon = now - memory(self.period);
        while self.implied.front().is_some_and(|(t, _, _)| *t < horizon) {
            self.implied.pop_front();
        }
        self.implied.push_back((now, at_most, at_least));
        self.implied_min = self.implied.iter().map(|(_, c, _)| *c).min();
        // Another program spends when one statement's most falls below another's
        // least (requests in flight blur each statement, never across that line):
        // leave it room now and then, so what it was refused shows too.
        let least = self.implied.iter().map(|(_, _, c)| *c).max();
        if least > self.implied_min && now >= self.next_yield {
            let base = memory(self.period);
            self.yield_every = match self.min_at_yield {
                Some(before) if self.implied_min >= Some(before) => (self.yield_every * 2).min(base * 16),
                _ => base,
            };
            self.min_at_yield = self.implied_min;
            self.yield_until = now + self.period * 2;
            self.next_yield = now + self.yield_every;
        }
        let to = self.base(now, spec);
        // Accepted before is no proof for a count above what is left to us now
        // (another program came): rising again is probed.
        self.verified = self.verified.min(to);
        self.verify(at_least);
        (to < from).then_some(Change {
            period: self.period,
            configured: self.configured,
            from,
            to,
            evidence: None,
            source: Source::Remaining,
        })
    }

    /// A request of `cost` admitted at `admitted_at` was refused as over the limit,
    /// when the exchange had counted `evidence` in this window. Cuts the count to
    /// the evidence, never below `floor`. Evidence at or above the limit now is
    /// already answered by it (the limit fell after the request was admitted). A
    /// refusal with nothing counted proves no number: someone else spends, or the
    /// exchange erred; the count is cut by seed 004's `cut`, unless the request
    /// predates the last cut.
    pub fn on_throttled(&mut self, now: Time, spec: &AdaptiveSpec, admitted_at: Time, evidence: u64, cost: u64) -> Option<Change> {
        let from = self.base(now, spec);
        let stale = self.cut.is_some_and(|(_, at)| admitted_at <= at);
        let target = if evidence >= from {
            return None;
        } else if evidence > 0 {
            evidence
        } else if !stale {
            (from as f64 * spec.cut).floor() as u64
        } else {
            return None;
        };
        let to = target.max(self.floor_count(spec)).min(from);
        let refused = evidence.saturating_add(cost);
        self.failed = match self.failed {
            Some((f, at)) if now < at + spec.remember && f <= refused => Some((f, now)),
            _ => Some((refused, now)),
        };
        self.cut = Some((to, now));
        self.verified = self.verified.min(to);
        (to < from).then_some(Change {
            period: self.period,
            configured: self.configured,
            from,
            to,
            evidence: Some(evidence),
            source: Source::Throttled,
        })
    }

    /// The count above which requests are probes, or `None` when the exchange has
    /// been seen to accept the whole `cap`.
    pub fn probe_line(&self, now: Time, spec: &AdaptiveSpec, cap: u64) -> Option<u64> {
        if self.verified >= cap {
            return None;
        }
        let failed_below = self.failed(now, spec).is_some_and(|f| f <= cap);
        let free = if failed_below { 0 } else { (spec.probe_below * cap as f64).floor() as u64 };
        Some(self.verified.max(free))
    }

    /// When the limit next rises by a recovery step, if it is still below its ceiling.
    pub fn next_change(&self, now: Time, spec: &AdaptiveSpec) -> Option<Time> {
        let (_, at) = self.cut?;
        if self.cut_limit(now, spec) >= self.ceiling {
            return None;
        }
        let recover_from = at + spec.hold;
        if now < recover_from {
            return Some(recover_from + spec.interval);
        }
        let interval = spec.interval.as_nanos().max(1);
        let steps = now.saturating_since(recover_from).as_nanos() / interval + 1;
        Some(recover_from + Duration::from_nanos(u64::try_from(steps * interval).unwrap_or(u64::MAX)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(s: u64) -> Time {
        Time::from_millis(s * 1000)
    }

    fn spec() -> AdaptiveSpec {
        AdaptiveSpec::default()
    }

    #[test]
    fn a_429_cuts_the_count_to_the_evidence_then_recovers_in_steps() {
        let s = spec();
        let mut l = Learned::new(12, Duration::from_secs(1));
        assert_eq!(l.limit(at(0), &s), 12);
        // Refused when the exchange had counted 8 of ours: its limit is 8.
        let c = l.on_throttled(at(100), &s, at(100), 8, 1).unwrap();
        assert_eq!((c.from, c.to, c.evidence, c.source), (12, 8, Some(8), Source::Throttled));
        assert_eq!(l.limit(at(100), &s), 8);
        assert_eq!(l.source(at(100), &s), Some(Source::Throttled));
        assert_eq!(l.failed(at(100), &s), Some(9));
        // Later answers to requests of the same burst only lower to their evidence.
        assert!(l.on_throttled(at(100), &s, at(99), 10, 1).is_none());
        assert_eq!(l.limit(at(100), &s), 8);
        assert_eq!(l.limit(at(399), &s), 8, "holds 300 s");
        assert_eq!(l.limit(at(430), &s), 9, "then 5 % of 12 (rounded up to 1) every 30 s");
        assert_eq!(l.next_change(at(430), &s), Some(at(460)));
        assert_eq!(l.limit(at(600), &s), 12);
        assert_eq!(l.next_change(at(600), &s), None);
        assert_eq!(l.source(at(600), &s), None);
    }

    #[test]
    fn a_429_with_nothing_counted_cuts_by_the_factor_but_never_below_the_floor() {
        let s = spec();
        let mut l = Learned::new(10, Duration::from_secs(1));
        // Refused although none of ours was counted: someone else spends, or the
        // exchange erred. No number is proven: seed 004's x0.8.
        assert_eq!(l.on_throttled(at(1), &s, at(1), 0, 1).unwrap().to, 8);
        assert!(l.on_throttled(at(1), &s, at(1), 0, 1).is_none(), "sent before the cut: no second cut");
        assert_eq!(l.on_throttled(at(2), &s, at(2), 0, 1).unwrap().to, 6);
        for t in 3..10 {
            l.on_throttled(at(t), &s, at(t), 0, 1);
        }
        assert_eq!(l.limit(at(10), &s), 3, "floor: 25 % of 10, rounded up");
        // Evidence at or above the limit is already answered by it.
        assert!(l.on_throttled(at(11), &s, at(11), 5, 1).is_none());
        assert_eq!(l.limit(at(11), &s), 3);
    }

    #[test]
    fn the_remaining_header_follows_the_exchange_both_ways() {
        let s = spec();
        let mut l = Learned::new(12, Duration::from_secs(1));
        let c = l.on_remaining(at(10), &s, 9, 3).unwrap();
        assert_eq!((c.from, c.to, c.source), (12, 9, Source::Remaining));
        assert_eq!(l.verified(), 3, "only what it surely counted is known to be accepted");
        // The smallest statement of the window binds (another program's busiest moment).
        let t = at(10) + Duration::from_millis(100);
        l.on_remaining(t, &s, 8, 8);
        assert_eq!(l.verified(), 8);
        // Blurred statements (requests in flight) do not show another program...
        l.on_remaining(t + Duration::from_millis(50), &s, 10, 8);
        assert_eq!(l.limit(t + Duration::from_millis(50), &s), 8);
        // ...one whose least is above another's most does: another program spends.
        // One request is left free for two windows so it can show what it wants;
        // then the smallest binds again.
        let shown = t + Duration::from_millis(100);
        l.on_remaining(shown, &s, 10, 9);
        assert_eq!(l.limit(shown, &s), 7);
        assert_eq!(l.source(shown, &s), Some(Source::Remaining));
        assert_eq!(l.limit(shown + Duration::from_secs(2), &s), 8, "after two windows");
        // Kept when the statements stop.
        l.on_remaining(at(12), &s, 5, 5);
        assert_eq!(l.limit(at(100), &s), 5);
        assert_eq!(l.verified(), 5);
        // The other program stopped: once its low statements aged out (30 s), the
        // limit rises (the spell of room for it that the varying statements start
        // ends after two windows).
        l.on_remaining(at(41), &s, 8, 6);
        assert_eq!(l.limit(at(43), &s), 5, "still within memory");
        l.on_remaining(at(200), &s, 8, 6);
        assert_eq!(l.limit(at(200), &s), 8);
        assert_eq!(l.verified(), 6, "above 6 is probed again");
        assert!(l.on_remaining(at(300), &s, 20, 8).is_none());
        assert_eq!(l.limit(at(300), &s), 12, "never above the configured limit");
    }

    #[test]
    fn announced_limits_only_lower() {
        let s = spec();
        let mut l = Learned::new(20, Duration::from_secs(1));
        assert!(l.announce(at(0), &s, 50).is_none());
        assert_eq!(l.announce(at(0), &s, 10).unwrap().to, 10);
        assert_eq!(l.source(at(0), &s), Some(Source::Announced));
    }

    #[test]
    fn probes_go_above_what_was_verified_and_up_to_a_failed_count_from_zero() {
        let s = spec();
        let mut l = Learned::new(12, Duration::from_secs(1));
        assert_eq!(l.probe_line(at(0), &s, 12), Some(6), "half is free before anything is known");
        l.verify(9);
        assert_eq!(l.probe_line(at(0), &s, 12), Some(9));
        l.verify(12);
        assert_eq!(l.probe_line(at(0), &s, 12), None, "the whole limit was accepted");
        l.on_throttled(at(10), &s, at(10), 7, 1);
        assert_eq!(l.verified(), 7);
        assert_eq!(l.probe_line(at(10), &s, 7), None);
        // Recovered to 8, the count that failed: every request above 7 is a probe.
        assert_eq!(l.probe_line(at(400), &s, 8), Some(7));
        // An hour later the failure is forgotten: half is free again.
        assert_eq!(l.probe_line(at(10 + 3601), &s, 10), Some(7));
        assert_eq!(l.failed(at(10 + 3601), &s), None);
    }

    #[test]
    fn validation_names_the_bad_number() {
        let bad = AdaptiveSpec { cut: 1.5, ..AdaptiveSpec::default() };
        assert!(bad.validate().unwrap_err().contains("cut"));
        let bad = AdaptiveSpec { probe_below: 2.0, ..AdaptiveSpec::default() };
        assert!(bad.validate().unwrap_err().contains("probe_below"));
    }
}
