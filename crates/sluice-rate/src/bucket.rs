//! One rate-limit budget: every window an exchange publishes for one scope (an IP or
//! an account) and one group, checked and charged together.
//!
//! The bucket is a weighted sliding log. Each entry is *held until* the latest moment
//! the exchange could have counted it: for an HTTP call that is when its response came
//! back (the request cannot arrive after its own answer), and until then it is held
//! forever; for a token granted to a caller who sends by itself it is the grant's
//! use-by time plus the configured network jitter. A request of cost `c` is admitted
//! at `t` only if, in every window of length `W`, the cost of entries held until
//! `t - W` or later, plus `c`, stays within the limit.
//!
//! Why that cannot exceed a strict server: take any server window `[x, x + W]` and
//! the last-admitted request `k` that arrived in it. Every other request `i` in it
//! arrived at or after `x >= arrival(k) - W >= admitted(k) - W`, and `held(i) >=
//! arrival(i)`, so `i` still counted when `k` was admitted; hence the window holds at
//! most the limit. Fixed windows are windows too, and a token bucket with burst >= N
//! accepts anything a sliding window of N accepts. The price is the return trip of
//! each response (about 1 % at 10 ms), not a guessed jitter bound.

use std::collections::{BTreeMap, HashMap};
use std::ops::Bound;
use std::time::Duration;

use crate::Time;
use crate::adaptive::{Adaptive, AdaptiveSpec};

/// One published limit: at most `limit` cost in any `period`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowSpec {
    pub limit: u64,
    pub period: Duration,
}

/// Everything a bucket is configured with.
#[derive(Debug, Clone, PartialEq)]
pub struct BucketSpec {
    pub windows: Vec<WindowSpec>,
    pub adaptive: AdaptiveSpec,
}

/// A bucket specification that cannot work.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    #[error("a bucket needs at least one window")]
    NoWindows,
    #[error("window {index}: limit must be at least 1")]
    ZeroLimit { index: usize },
    #[error("window {index}: period must be positive")]
    ZeroPeriod { index: usize },
    #[error("{0}")]
    Adaptive(String),
}

impl BucketSpec {
    pub fn validate(&self) -> Result<(), SpecError> {
        if self.windows.is_empty() {
            return Err(SpecError::NoWindows);
        }
        for (index, w) in self.windows.iter().enumerate() {
            if w.limit == 0 {
                return Err(SpecError::ZeroLimit { index });
            }
            if w.period.is_zero() {
                return Err(SpecError::ZeroPeriod { index });
            }
        }
        self.adaptive.validate().map_err(SpecError::Adaptive)
    }
}

/// When a request of some cost could be admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Earliest {
    /// Right now.
    Now,
    /// At this time, if nothing else is charged first.
    At(Time),
    /// Not before some request now in flight is settled.
    AfterSettle,
    /// Never: the cost is above a window's limit.
    Never { limit: u64 },
}

/// Usage of one window, for status and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WindowStatus {
    /// The configured period.
    pub period: Duration,
    /// The period in force (longer while the adaptive layer has cut the rate).
    pub effective_period: Duration,
    /// The configured limit, or a lower one announced by the exchange.
    pub limit: u64,
    /// Cost counting against the window now (in flight included).
    pub used: u64,
}

/// A point-in-time view of a bucket.
#[derive(Debug, Clone, PartialEq)]
pub struct BucketStatus {
    pub windows: Vec<WindowStatus>,
    /// Share of the configured rate currently allowed.
    pub rate_factor: f64,
    /// The bucket admits nothing before this time (a 429 pause or a ban).
    pub frozen_until: Option<Time>,
    pub in_flight: u64,
    pub admitted: u64,
    pub throttled: u64,
    pub bans: u64,
    /// Cost added from server feedback beyond what sluice itself sent.
    pub phantom_cost: u64,
}

/// How much of each limit this process may use. Dispatcher replicas that cannot
/// coordinate split every budget: each takes `Part`, and one that still coordinates
/// for the others keeps only the `Rest` after the parts of those that may not.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Share {
    #[default]
    Whole,
    /// `floor(limit / of)`.
    Part { of: u64 },
    /// `limit - reserved * floor(limit / of)`.
    Rest { of: u64, reserved: u64 },
}

impl Share {
    /// The part of `limit` this share allows; the parts of `of` replicas never sum
    /// above `limit`.
    pub fn apply(self, limit: u64) -> u64 {
        match self {
            Share::Whole => limit,
            Share::Part { of } => limit / of.max(1),
            Share::Rest { of, reserved } => limit.saturating_sub(reserved.saturating_mul(limit / of.max(1))),
        }
    }
}

type Key = (Time, u64);

#[derive(Debug, Clone)]
struct Window {
    spec: WindowSpec,
    /// `spec.limit`, or lower if the exchange announced a lower limit.
    limit: u64,
    /// `spec.period` stretched by the adaptive factor.
    period: Duration,
    /// Cost of the entries that still count in this window.
    sum: u64,
    /// The last held entry already expired from this window; everything after it
    /// in key order is included in `sum`.
    cursor: Option<Key>,
}

impl Window {
    fn threshold(&self, now: Time) -> Time {
        now - self.period
    }

    fn counts(&self, key: Key) -> bool {
        self.cursor.is_none_or(|c| key > c)
    }
}

/// Phantom entries (server feedback) use ids from the top half, scheduler tickets
/// the bottom half, so they never collide.
const PHANTOM_ID_BASE: u64 = 1 << 63;

/// One rate-limit budget; see the module documentation for the rule it keeps.
#[derive(Debug, Clone)]
pub struct Bucket {
    windows: Vec<Window>,
    /// Entries with a known hold time, ordered by it.
    held: BTreeMap<Key, u64>,
    /// Entries in flight: held until settled. Id to cost.
    open: HashMap<u64, u64>,
    open_cost: u64,
    adaptive: Adaptive,
    /// The factor the window periods are currently stretched by.
    factor: f64,
    frozen_until: Time,
    /// Admits nothing from this time on (see [`Bucket::close_from`]).
    closed_from: Time,
    share: Share,
    /// Entries older than this are gone from every window even at the floor factor.
    retain: Duration,
    next_phantom: u64,
    admitted: u64,
    throttled: u64,
    bans: u64,
    phantom_cost: u64,
}

fn stretch(period: Duration, factor: f64) -> Duration {
    if factor >= 1.0 { period } else { Duration::from_secs_f64(period.as_secs_f64() / factor) }
}

impl Bucket {
    pub fn new(spec: BucketSpec) -> Result<Self, SpecError> {
        spec.validate()?;
        let longest = spec.windows.iter().map(|w| w.period).max().unwrap_or_default();
        let retain = stretch(longest, spec.adaptive.floor) + Duration::from_millis(1);
        let windows = spec.windows.iter().map(|&w| Window { spec: w, limit: w.limit, period: w.period, sum: 0, cursor: None }).collect();
        Ok(Bucket {
            windows,
            held: BTreeMap::new(),
            open: HashMap::new(),
            open_cost: 0,
            adaptive: Adaptive::new(spec.adaptive),
            factor: 1.0,
            frozen_until: Time::ZERO,
            closed_from: Time::MAX,
            share: Share::Whole,
            retain,
            next_phantom: PHANTOM_ID_BASE,
            admitted: 0,
            throttled: 0,
            bans: 0,
            phantom_cost: 0,
        })
    }

    /// The smallest limit over the windows: no single request may cost more.
    pub fn max_cost(&self) -> u64 {
        self.windows.iter().map(|w| w.limit).min().unwrap_or(0)
    }

    /// Limits this bucket to a share of each window (see [`Share`]).
    pub fn set_share(&mut self, share: Share) {
        self.share = share;
    }

    /// What window `w` may hold under the current share.
    fn cap(&self, w: &Window) -> u64 {
        self.share.apply(w.limit)
    }

    /// The longest configured window.
    pub fn longest_period(&self) -> Duration {
        self.windows.iter().map(|w| w.spec.period).max().unwrap_or_default()
    }

    /// The configured windows.
    pub fn window_specs(&self) -> impl Iterator<Item = WindowSpec> + '_ {
        self.windows.iter().map(|w| w.spec)
    }

    /// Brings the windows up to `now`: applies the adaptive factor, expires entries,
    /// forgets entries no window can see any more.
    fn refresh(&mut self, now: Time) {
        let factor = self.adaptive.factor(now);
        if (factor - self.factor).abs() > f64::EPSILON {
            self.factor = factor;
            for w in &mut self.windows {
                w.period = stretch(w.spec.period, factor);
            }
            self.rebuild(now);
        } else {
            for i in 0..self.windows.len() {
                self.advance(i, now);
            }
        }
        self.prune(now);
    }

    fn advance(&mut self, i: usize, now: Time) {
        let w = &mut self.windows[i];
        let threshold = w.threshold(now);
        let start = w.cursor.map_or(Bound::Unbounded, Bound::Excluded);
        for (&key, &cost) in self.held.range((start, Bound::Unbounded)) {
            if key.0 >= threshold {
                break;
            }
            w.sum -= cost;
            w.cursor = Some(key);
        }
    }

    /// Recomputes every window from the log (after the periods changed).
    fn rebuild(&mut self, now: Time) {
        for w in &mut self.windows {
            let threshold = w.threshold(now);
            w.sum = self.open_cost;
            w.cursor = None;
            for (&key, &cost) in &self.held {
                if key.0 < threshold {
                    w.cursor = Some(key);
                } else {
                    w.sum += cost;
                }
            }
        }
    }

    fn prune(&mut self, now: Time) {
        let horizon = now - self.retain;
        while let Some((&key, _)) = self.held.first_key_value() {
            if key.0 >= horizon {
                break;
            }
            self.held.pop_first();
        }
    }

    /// When a request of `cost` could be admitted, given what is charged now.
    pub fn earliest(&mut self, now: Time, cost: u64) -> Earliest {
        self.refresh(now);
        if let Some(w) = self.windows.iter().find(|w| cost > w.limit) {
            return Earliest::Never { limit: w.limit };
        }
        // Above the current share but within the limit: possible once the share grows.
        if self.windows.iter().any(|w| cost > self.cap(w)) || now >= self.closed_from {
            return Earliest::AfterSettle;
        }
        let mut t = now.max(self.frozen_until);
        for w in &self.windows {
            let need = (w.sum + cost).saturating_sub(self.cap(w));
            if need == 0 {
                continue;
            }
            match Self::free_time(&self.held, w, need) {
                Some(at) => t = t.max(at),
                None => return Earliest::AfterSettle,
            }
        }
        if t == now { Earliest::Now } else { Earliest::At(t) }
    }

    /// A lower bound on [`Bucket::earliest`] that assumes everything in flight settles
    /// right now: if even this is too late, waiting cannot help.
    pub fn earliest_optimistic(&mut self, now: Time, cost: u64) -> Earliest {
        match self.earliest(now, cost) {
            Earliest::AfterSettle => {}
            other => return other,
        }
        if self.windows.iter().any(|w| cost > self.cap(w)) || now >= self.closed_from {
            return Earliest::AfterSettle;
        }
        let mut t = now.max(self.frozen_until);
        for w in &self.windows {
            let need = (w.sum + cost).saturating_sub(self.cap(w));
            if need == 0 {
                continue;
            }
            let from_held = Self::free_time(&self.held, w, need);
            // What the held entries cannot free, in-flight entries free one window
            // after they settle, which is now at the earliest.
            let at = from_held.unwrap_or_else(|| (now + w.period).next());
            t = t.max(at);
        }
        if t == now { Earliest::Now } else { Earliest::At(t) }
    }

    /// The time at which `need` cost of held entries has left window `w`.
    fn free_time(held: &BTreeMap<Key, u64>, w: &Window, need: u64) -> Option<Time> {
        let start = w.cursor.map_or(Bound::Unbounded, Bound::Excluded);
        let mut freed = 0;
        for (&key, &cost) in held.range((start, Bound::Unbounded)) {
            freed += cost;
            if freed >= need {
                // The entry counts while held >= t - W, so it is gone strictly after held + W.
                return Some((key.0 + w.period).next());
            }
        }
        None
    }

    /// Charges `cost` under `id`, held until `hold` (`Time::MAX` while in flight, to
    /// be settled later). The caller checked [`Bucket::earliest`] at `now`.
    pub fn charge(&mut self, now: Time, id: u64, cost: u64, hold: Time) {
        self.refresh(now);
        self.admitted += 1;
        if hold == Time::MAX {
            self.open.insert(id, cost);
            self.open_cost += cost;
            for w in &mut self.windows {
                w.sum += cost;
            }
        } else {
            self.insert_held((hold, id), cost);
        }
    }

    fn insert_held(&mut self, key: Key, cost: u64) {
        *self.held.entry(key).or_insert(0) += cost;
        for w in &mut self.windows {
            if w.counts(key) {
                w.sum += cost;
            }
        }
    }

    /// The in-flight entry `id` is settled: the exchange cannot have counted it after
    /// `held_until` (its response time, or later for an unknown outcome).
    pub fn settle(&mut self, now: Time, id: u64, held_until: Time) {
        let Some(cost) = self.open.remove(&id) else { return };
        self.open_cost -= cost;
        let key = (held_until, id);
        *self.held.entry(key).or_insert(0) += cost;
        for w in &mut self.windows {
            // It was counted while open; a window that already moved past this key
            // will never expire it, so it stops counting there now.
            if !w.counts(key) {
                w.sum -= cost;
            }
        }
        self.refresh(now);
    }

    /// The in-flight entry `id` was never sent: forget it.
    pub fn release(&mut self, id: u64) {
        if let Some(cost) = self.open.remove(&id) {
            self.open_cost -= cost;
            self.admitted = self.admitted.saturating_sub(1);
            for w in &mut self.windows {
                w.sum -= cost;
            }
        }
    }

    /// Adds cost that someone else spent (seen in server feedback), held until `at`.
    pub fn add_phantom(&mut self, now: Time, at: Time, cost: u64) {
        if cost == 0 {
            return;
        }
        self.refresh(now);
        let id = self.next_phantom;
        self.next_phantom += 1;
        self.phantom_cost += cost;
        self.insert_held((at.max(now), id), cost);
    }

    /// The exchange reported `used` cost in its window of `period` that ended when
    /// a request admitted at `admitted_at` arrived (its answer came at `at`), and
    /// optionally its limit. Only ever tightens: a lower announced limit replaces
    /// ours, and used cost above everything sluice could have had in that window is
    /// someone else's (another program on the key or IP), held until `at`.
    /// Returns false when the bucket has no window of that period.
    pub fn observe_usage(&mut self, now: Time, at: Time, admitted_at: Time, period: Duration, used: u64, limit: Option<u64>) -> bool {
        self.refresh(now);
        let Some(i) = self.windows.iter().position(|w| w.spec.period == period) else { return false };
        if let Some(l) = limit.filter(|&l| l > 0) {
            let w = &mut self.windows[i];
            w.limit = w.limit.min(l);
        }
        // The server's window lies within [admitted_at - period, at]; anything of ours
        // in it is held until admitted_at - period or later.
        let since = admitted_at - period;
        let ours = self.open_cost + self.held.range((since, 0)..).map(|(_, c)| *c).sum::<u64>();
        if used > ours {
            self.add_phantom(now, at, used - ours);
        }
        true
    }

    /// The exchange answered 429 (or its equivalent) to a request admitted at
    /// `admitted_at`: cut the rate and pause until `resume_at`.
    pub fn on_throttled(&mut self, now: Time, admitted_at: Time, resume_at: Time) -> bool {
        self.throttled += 1;
        let cut = self.adaptive.on_throttled(now, admitted_at);
        self.frozen_until = self.frozen_until.max(resume_at);
        self.refresh(now);
        cut
    }

    /// The scope is banned until `until`: admit nothing before.
    pub fn on_banned(&mut self, until: Time) {
        self.bans += 1;
        self.frozen_until = self.frozen_until.max(until);
    }

    /// Admits nothing at or after `base` minus the longest window (stretched as far
    /// as the adaptive layer may stretch it): whatever it admits has left every
    /// window by `base`. `Time::MAX` reopens it.
    pub fn close_from(&mut self, base: Time) {
        self.closed_from = if base == Time::MAX { Time::MAX } else { base - self.retain };
    }

    /// Admits nothing before `until` (not a ban: the dispatcher does not know what
    /// others spent, so it waits until that can no longer count).
    pub fn pause_until(&mut self, until: Time) {
        self.frozen_until = self.frozen_until.max(until);
    }

    /// The time the bucket is frozen until, if it is frozen at `now`.
    pub fn frozen_until(&self, now: Time) -> Option<Time> {
        (self.frozen_until > now).then_some(self.frozen_until)
    }

    /// When the adaptive factor next changes (to wake a waiting queue).
    pub fn next_rate_change(&self, now: Time) -> Option<Time> {
        self.adaptive.next_change(now)
    }

    pub fn status(&mut self, now: Time) -> BucketStatus {
        self.refresh(now);
        BucketStatus {
            windows: self
                .windows
                .iter()
                .map(|w| WindowStatus { period: w.spec.period, effective_period: w.period, limit: self.cap(w), used: w.sum })
                .collect(),
            rate_factor: self.factor,
            frozen_until: self.frozen_until(now),
            in_flight: self.open.len() as u64,
            admitted: self.admitted,
            throttled: self.throttled,
            bans: self.bans,
            phantom_cost: self.phantom_cost,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Time {
        Time::from_millis(n)
    }

    fn bucket(windows: &[(u64, u64)]) -> Bucket {
        Bucket::new(BucketSpec {
            windows: windows.iter().map(|&(limit, p)| WindowSpec { limit, period: Duration::from_millis(p) }).collect(),
            adaptive: AdaptiveSpec::default(),
        })
        .unwrap()
    }

    #[test]
    fn a_full_window_frees_strictly_after_the_response_plus_the_period() {
        let mut b = bucket(&[(2, 1000)]);
        let t0 = ms(10_000);
        assert_eq!(b.earliest(t0, 1), Earliest::Now);
        b.charge(t0, 1, 1, Time::MAX);
        b.charge(t0, 2, 1, Time::MAX);
        assert_eq!(b.earliest(t0, 1), Earliest::AfterSettle, "both in flight: unknown");
        b.settle(ms(10_005), 1, ms(10_005));
        assert_eq!(b.earliest(ms(10_005), 1), Earliest::At(ms(11_005).next()));
        assert_eq!(b.earliest(ms(11_005), 1), Earliest::At(ms(11_005).next()), "inclusive boundary");
        assert_eq!(b.earliest(ms(11_005).next(), 1), Earliest::Now);
    }

    #[test]
    fn weights_and_every_window_count_together() {
        // Binance-like: 10 per 100 ms and 15 per 1 s.
        let mut b = bucket(&[(10, 100), (15, 1000)]);
        let t0 = ms(5_000);
        b.charge(t0, 1, 8, t0);
        assert_eq!(b.earliest(t0, 3), Earliest::At((t0 + Duration::from_millis(100)).next()));
        assert_eq!(b.earliest(t0, 2), Earliest::Now);
        b.charge(t0, 2, 2, t0);
        let later = ms(5_200);
        assert_eq!(b.earliest(later, 5), Earliest::Now, "15 per second leaves 5");
        assert_eq!(b.earliest(later, 6), Earliest::At((t0 + Duration::from_millis(1000)).next()));
        assert_eq!(b.earliest(later, 11), Earliest::Never { limit: 10 });
    }

    #[test]
    fn grants_are_held_until_their_use_by_time() {
        let mut b = bucket(&[(1, 1000)]);
        let t0 = ms(1_000);
        b.charge(t0, 1, 1, ms(1_300));
        assert_eq!(b.earliest(ms(2_000), 1), Earliest::At(ms(2_300).next()));
    }

    #[test]
    fn release_gives_back_an_unsent_request() {
        let mut b = bucket(&[(1, 1000)]);
        b.charge(ms(0), 7, 1, Time::MAX);
        assert_eq!(b.earliest(ms(0), 1), Earliest::AfterSettle);
        b.release(7);
        assert_eq!(b.earliest(ms(0), 1), Earliest::Now);
        assert_eq!(b.status(ms(0)).admitted, 0);
    }

    #[test]
    fn server_usage_only_tightens() {
        let mut b = bucket(&[(10, 1000)]);
        let t0 = ms(50_000);
        for id in 0..3 {
            b.charge(t0, id, 1, t0);
        }
        let second = Duration::from_secs(1);
        // The server saw only 2 of ours so far: nothing to learn.
        b.observe_usage(t0, t0, t0, second, 2, None);
        assert_eq!(b.status(t0).windows[0].used, 3);
        // The server counts 8: 5 are someone else's.
        b.observe_usage(t0, t0, t0, second, 8, None);
        let s = b.status(t0);
        assert_eq!(s.windows[0].used, 8);
        assert_eq!(s.phantom_cost, 5);
        // A lower announced limit replaces ours; a higher one does not.
        b.observe_usage(t0, t0, t0, second, 0, Some(20));
        assert_eq!(b.status(t0).windows[0].limit, 10);
        b.observe_usage(t0, t0, t0, second, 0, Some(9));
        assert_eq!(b.status(t0).windows[0].limit, 9);
        assert!(!b.observe_usage(t0, t0, t0, Duration::from_secs(60), 1, None), "no such window");
    }

    #[test]
    fn usage_counted_at_arrival_is_compared_with_what_could_have_been_in_that_window() {
        let mut b = bucket(&[(10, 1000)]);
        let t0 = ms(50_000);
        for id in 0..10 {
            b.charge(t0, id, 1, t0);
        }
        // A request admitted at t0 + 999 ms arrives at once (the server counts our
        // ten), but its answer is processed at t0 + 1005 ms, when our ten have left
        // our own window. They are not someone else's.
        let admitted = t0 + Duration::from_millis(999);
        let later = t0 + Duration::from_millis(1005);
        b.charge(admitted, 99, 1, later);
        b.observe_usage(later, later, admitted, Duration::from_secs(1), 11, None);
        assert_eq!(b.status(later).phantom_cost, 0);
        b.observe_usage(later, later, admitted, Duration::from_secs(1), 13, None);
        assert_eq!(b.status(later).phantom_cost, 2);
    }

    #[test]
    fn a_429_pauses_and_stretches_the_window() {
        let mut b = bucket(&[(10, 1000)]);
        let t0 = ms(100_000);
        b.charge(t0, 1, 10, t0);
        assert!(b.on_throttled(t0, t0, t0 + Duration::from_secs(1)));
        let s = b.status(t0);
        assert!((s.rate_factor - 0.8).abs() < 1e-9);
        assert_eq!(s.windows[0].effective_period, Duration::from_millis(1250));
        assert_eq!(s.frozen_until, Some(t0 + Duration::from_secs(1)));
        // The entry held at t0 now frees only after the stretched period.
        assert_eq!(b.earliest(t0, 1), Earliest::At((t0 + Duration::from_millis(1250)).next()));
    }

    #[test]
    fn a_cut_recounts_entries_that_had_already_expired() {
        let mut b = bucket(&[(1, 1000)]);
        let t0 = ms(100_000);
        b.charge(t0, 1, 1, t0);
        let t1 = t0 + Duration::from_millis(1100);
        assert_eq!(b.earliest(t1, 1), Earliest::Now);
        b.on_throttled(t1, t1, t1);
        // With the period stretched to 1.25 s, the entry at t0 counts again.
        assert_eq!(b.earliest(t1, 1), Earliest::At((t0 + Duration::from_millis(1250)).next()));
    }

    #[test]
    fn bans_freeze_until_their_end() {
        let mut b = bucket(&[(10, 1000)]);
        b.on_banned(ms(9_000));
        assert_eq!(b.earliest(ms(1_000), 1), Earliest::At(ms(9_000)));
        assert_eq!(b.earliest(ms(9_000), 1), Earliest::Now);
        assert_eq!(b.status(ms(9_000)).bans, 1);
    }

    #[test]
    fn optimistic_bound_assumes_in_flight_settles_now() {
        let mut b = bucket(&[(1, 1000)]);
        b.charge(ms(0), 1, 1, Time::MAX);
        assert_eq!(b.earliest_optimistic(ms(500), 1), Earliest::At(ms(1_500).next()));
    }

    #[test]
    fn old_entries_are_forgotten() {
        let mut b = bucket(&[(5, 1000)]);
        for i in 0..1000 {
            b.charge(ms(i * 10), i, 1, ms(i * 10));
        }
        assert!(b.held.len() < 300, "kept {}", b.held.len());
    }

    #[test]
    fn shares_of_replicas_never_sum_above_the_limit() {
        for limit in [1u64, 2, 7, 10, 600, 6000] {
            for of in 1u64..=5 {
                let part = Share::Part { of }.apply(limit);
                for reserved in 0..of {
                    let rest = Share::Rest { of, reserved }.apply(limit);
                    assert!(rest + reserved * part <= limit, "limit {limit} of {of} reserved {reserved}");
                }
                assert!(part * of <= limit);
            }
        }
        let mut b = bucket(&[(10, 1000)]);
        b.set_share(Share::Part { of: 3 });
        for i in 0..3 {
            assert_eq!(b.earliest(ms(0), 1), Earliest::Now);
            b.charge(ms(0), i, 1, ms(0));
        }
        assert!(matches!(b.earliest(ms(0), 1), Earliest::At(_)));
        // Above the share but within the limit: wait, never refuse outright.
        assert_eq!(b.earliest(ms(0), 5), Earliest::AfterSettle);
        assert_eq!(b.earliest(ms(0), 11), Earliest::Never { limit: 10 });
        b.set_share(Share::Whole);
        assert_eq!(b.earliest(ms(0), 1), Earliest::Now);
    }

    #[test]
    fn a_pause_is_not_a_ban() {
        let mut b = bucket(&[(10, 1000)]);
        b.pause_until(ms(500));
        assert_eq!(b.earliest(ms(0), 1), Earliest::At(ms(500)));
        assert_eq!(b.status(ms(0)).bans, 0);
        // Closed early enough that anything admitted leaves the window by the base.
        b.close_from(ms(3000));
        assert!(matches!(b.earliest(ms(600), 1), Earliest::Now));
        assert_eq!(b.earliest(ms(2500), 1), Earliest::AfterSettle);
        b.close_from(Time::MAX);
        assert_eq!(b.earliest(ms(2500), 1), Earliest::Now);
    }

    #[test]
    fn spec_errors_name_the_window() {
        let e = Bucket::new(BucketSpec {
            windows: vec![WindowSpec { limit: 1, period: Duration::from_secs(1) }, WindowSpec { limit: 0, period: Duration::from_secs(1) }],
            adaptive: AdaptiveSpec::default(),
        })
        .unwrap_err();
        assert_eq!(e, SpecError::ZeroLimit { index: 1 });
    }
}
