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
//!
//! The limit of each window is what the exchange has shown, not only what the policy
//! says (see [`crate::adaptive`]). To read the exchange's answers against *its*
//! window at the request's arrival, the bucket also keeps a log of when each of its
//! requests was admitted: a 429's evidence is the cost admitted in the window before
//! the refused request, and a remaining header is compared with the cost admitted
//! in the window up to it, not with whatever happens to be held when the answer is
//! read.
//!
//! Another program's spending, seen in usage headers, is reserved as a whole: the
//! most it was seen to spend in one window, over the last few windows, is kept
//! free (over [`memory`](crate::adaptive::memory)). Holding only what was seen would leave nothing for
//! what that program sends later in the same window, and it would meet a full
//! window (and, on Binance, earn the ban for both of us). And while others spend
//! on a window, our own requests are spread over it (at most a fifth of our part
//! in any tenth of the window): a burst at the start would fill the window before
//! their later requests, and leave us no answers to watch them by until it ends.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::ops::Bound;
use std::time::Duration;

use crate::Time;
use crate::adaptive::{AdaptiveSpec, Change, Learned, Source, memory};
pub use crate::share::Share;

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
    /// The exchange counts in calendar windows (`[kW, (k+1)W)` of Unix time, as
    /// Binance does): its usage headers are read against our count in the same
    /// calendar window. Admission stays the sliding rule, which is safe either way.
    pub calendar: bool,
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
    /// What this process may hold in the window now: the learned limit, less the
    /// shares of other replicas that may be admitting on their own.
    pub limit: u64,
    /// The limit in the policy file.
    pub configured: u64,
    /// The limit the exchange has shown, when it is below the configured one.
    pub learned: Option<u64>,
    pub learned_from: Option<Source>,
    /// The largest window count the exchange is known to have accepted.
    pub verified: u64,
    /// The lowest count refused within the adaptive `remember` time.
    pub failed: Option<u64>,
    /// Cost counting against the window now (in flight included).
    pub used: u64,
}

/// A point-in-time view of a bucket.
#[derive(Debug, Clone, PartialEq)]
pub struct BucketStatus {
    pub windows: Vec<WindowStatus>,
    /// Share of the configured limit allowed now (the smallest over the windows).
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

/// What the exchange said about one window in an answer (see [`Bucket::observe_usage`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Usage {
    /// The exchange's own count (Binance `X-MBX-USED-WEIGHT-1M`).
    pub used: Option<u64>,
    /// What is left (Upbit `Remaining-Req: sec`, Bybit `X-Bapi-Limit-Status`).
    pub remaining: Option<u64>,
    /// The limit the exchange announces (Bybit `X-Bapi-Limit`).
    pub limit: Option<u64>,
}

type Key = (Time, u64);

#[derive(Debug, Clone)]
struct Window {
    spec: WindowSpec,
    learned: Learned,
    /// Cost of the held entries that still count in this window.
    sum: u64,
    /// The last held entry already expired from this window; everything after it
    /// in key order is included in `sum`.
    cursor: Option<Key>,
    /// The exchange reports usage for this window in headers: what it accepted is
    /// known from them, not inferred from our own count.
    headers: bool,
    /// Others' spending seen in usage headers: increments by when they were seen.
    others: BTreeMap<Key, u64>,
    /// (when, others' spending in the window before it), over `memory`.
    others_peaks: VecDeque<(Time, u64)>,
    /// What is kept free for others, as of `reserve_at` (computed once per instant).
    reserve_val: u64,
    reserve_at: Time,
    /// Calendar windows: the index of the current one, and our cost admitted in it.
    cal_index: u64,
    cal_sum: u64,
}

impl Window {
    fn threshold(&self, now: Time) -> Time {
        now - self.spec.period
    }

    fn counts(&self, key: Key) -> bool {
        self.cursor.is_none_or(|c| key > c)
    }

    /// Others' spending seen in a window reaching back to `from`.
    fn others_since(&self, from: Time) -> u64 {
        self.others.range((from, 0)..).map(|(_, c)| *c).sum()
    }

    /// When the reserve for others next drops (its current peak ages out).
    fn reserve_drops_at(&self, now: Time) -> Option<Time> {
        let memory = memory(self.spec.period);
        let peak = self.peak(now);
        let aged = self.others_peaks.iter().filter(|(t, c)| *c == peak && *t + memory > now).map(|(t, _)| (*t + memory).next()).max();
        // A rate estimate over a young window shrinks as it ages: look again soon.
        aged.or_else(|| (self.reserve_val > 0).then(|| now + self.spec.period / 10))
    }

    /// The most others were seen to spend in one window lately.
    fn peak(&self, now: Time) -> u64 {
        let from = now - memory(self.spec.period);
        self.others_peaks.iter().filter(|(t, _)| *t >= from).map(|(_, c)| *c).max().unwrap_or(0)
    }

    /// What is kept free for others: the most they spent in one window lately.
    fn compute_reserve(&self, now: Time) -> u64 {
        self.peak(now)
    }

    fn reserve(&self, _now: Time) -> u64 {
        self.reserve_val
    }

    /// The calendar window `at` falls in.
    fn cal_index(&self, at: Time) -> u64 {
        at.as_nanos() / u64::try_from(self.spec.period.as_nanos()).unwrap_or(u64::MAX).max(1)
    }

    fn cal_start(&self, at: Time) -> Time {
        Time::from_nanos(self.cal_index(at) * u64::try_from(self.spec.period.as_nanos()).unwrap_or(u64::MAX).max(1))
    }
}

/// How the exchange treated a logged request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fate {
    Pending,
    Accepted,
    /// Refused as over a limit: the exchange did not count it.
    Refused,
}

#[derive(Debug, Clone, Copy)]
struct Sent {
    cost: u64,
    fate: Fate,
    /// When it stopped counting for the exchange (its answer), once settled.
    settled: Option<Time>,
}

/// How long after its admission an answer is still read against the log (see
/// `prune`): answers are read as they come, and one slower than this is rare.
const LOG_MARGIN: Duration = Duration::from_secs(10);

/// Others' spending is keyed with ids from the top half, so keys never collide
/// with scheduler tickets.
const PHANTOM_ID_BASE: u64 = 1 << 63;

/// One rate-limit budget; see the module documentation for the rule it keeps.
#[derive(Debug, Clone)]
pub struct Bucket {
    windows: Vec<Window>,
    adaptive: AdaptiveSpec,
    calendar: bool,
    /// Entries with a known hold time, ordered by it.
    held: BTreeMap<Key, u64>,
    /// Entries in flight: held until settled. Id to cost.
    open: HashMap<u64, u64>,
    open_cost: u64,
    /// Our requests by admission time, for reading answers against the exchange's
    /// window at their arrival.
    sent: BTreeMap<Key, Sent>,
    sent_at: HashMap<u64, Time>,
    /// The log's requests not yet settled, by admission: the oldest bounds how far
    /// back an answer must look for requests still counting.
    unsettled: BTreeSet<Key>,
    /// How long each settled request in the log counted (settle time less
    /// admission), as a multiset: the longest bounds how long before a window's
    /// start a request that still counts in it can have been admitted. With
    /// `unsettled`, it lets an answer read only the part of the log that can
    /// matter (see `ours_bounds`) instead of all of it.
    spans: BTreeMap<Duration, u32>,
    frozen_until: Time,
    share: Share,
    /// Entries older than this are gone from every window.
    retain: Duration,
    /// The log holds every request admitted since then (a replica's ledger copy
    /// starts when it subscribes); answers about windows reaching further back
    /// are not learnt from.
    log_since: Time,
    /// How far the clocks behind the log may disagree (other replicas' entries
    /// carry their clocks): the bounds on what the exchange may have counted widen
    /// by it.
    skew: Duration,
    next_phantom: u64,
    admitted: u64,
    throttled: u64,
    bans: u64,
    phantom_cost: u64,
}

impl Bucket {
    pub fn new(spec: BucketSpec) -> Result<Self, SpecError> {
        spec.validate()?;
        let longest = spec.windows.iter().map(|w| w.period).max().unwrap_or_default();
        let windows = spec
            .windows
            .iter()
            .map(|&w| Window {
                spec: w,
                learned: Learned::new(w.limit, w.period),
                sum: 0,
                cursor: None,
                headers: false,
                others: BTreeMap::new(),
                others_peaks: VecDeque::new(),
                reserve_val: 0,
                reserve_at: Time::ZERO,
                cal_index: 0,
                cal_sum: 0,
            })
            .collect();
        Ok(Bucket {
            windows,
            adaptive: spec.adaptive,
            calendar: spec.calendar,
            held: BTreeMap::new(),
            open: HashMap::new(),
            open_cost: 0,
            sent: BTreeMap::new(),
            sent_at: HashMap::new(),
            unsettled: BTreeSet::new(),
            spans: BTreeMap::new(),
            frozen_until: Time::ZERO,
            share: Share::Whole,
            retain: longest + Duration::from_millis(1),
            log_since: Time::ZERO,
            skew: Duration::ZERO,
            next_phantom: PHANTOM_ID_BASE,
            admitted: 0,
            throttled: 0,
            bans: 0,
            phantom_cost: 0,
        })
    }

    /// The smallest limit over the windows now: no single request may cost more.
    pub fn max_cost(&self, now: Time) -> u64 {
        self.windows.iter().map(|w| w.learned.limit(now, &self.adaptive)).min().unwrap_or(0)
    }

    /// Entries of the log may come from clocks this far apart (dispatcher replicas).
    pub fn set_clock_skew(&mut self, skew: Duration) {
        self.skew = skew;
    }

    /// The log is complete from `since` on (see `log_since`).
    pub fn set_log_since(&mut self, since: Time) {
        self.log_since = since;
    }

    /// Whether window `i` of a request admitted at `admitted` lies within the log
    /// (the log began before it, and the answer came within `LOG_MARGIN`).
    fn trusted(&self, i: usize, admitted: Time, now: Time) -> bool {
        admitted - self.windows[i].spec.period >= self.log_since && now.saturating_since(admitted) <= LOG_MARGIN
    }

    /// Limits this bucket to a share of each window (see [`Share`]).
    pub fn set_share(&mut self, share: Share) {
        self.share = share;
    }

    /// What window `w` may hold now under the learned limit and the current share.
    fn cap(&self, w: &Window, now: Time) -> u64 {
        self.share.apply(w.learned.limit(now, &self.adaptive), now, w.spec.period)
    }

    /// Above the current share but within the limit: possible once the share
    /// grows (when a reservation ends), else once something settles.
    fn over_share(&self, now: Time, cost: u64) -> Option<Earliest> {
        let short: Vec<&Window> = self.windows.iter().filter(|w| cost > self.cap(w, now)).collect();
        if short.is_empty() {
            return None;
        }
        let grows = short.iter().map(|w| self.share.grows_at(now, w.spec.period)).collect::<Option<Vec<Time>>>();
        Some(match grows.and_then(|g| g.into_iter().max()) {
            Some(at) => Earliest::At(at.max(self.frozen_until)),
            None => Earliest::AfterSettle,
        })
    }

    /// The longest configured window.
    pub fn longest_period(&self) -> Duration {
        self.windows.iter().map(|w| w.spec.period).max().unwrap_or_default()
    }

    /// The configured windows.
    pub fn window_specs(&self) -> impl Iterator<Item = WindowSpec> + '_ {
        self.windows.iter().map(|w| w.spec)
    }

    /// Brings the windows up to `now`: expires entries, forgets entries no window
    /// can see any more.
    fn refresh(&mut self, now: Time) {
        for i in 0..self.windows.len() {
            self.advance(i, now);
        }
        self.prune(now);
        for w in &mut self.windows {
            if w.reserve_at != now {
                w.reserve_val = w.compute_reserve(now);
                w.reserve_at = now;
            }
        }
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

    fn prune(&mut self, now: Time) {
        let horizon = now - self.retain;
        while let Some((&key, _)) = self.held.first_key_value() {
            if key.0 >= horizon {
                break;
            }
            self.held.pop_first();
        }
        for w in &mut self.windows {
            let from = now - w.spec.period * 2;
            while w.others.first_key_value().is_some_and(|(k, _)| k.0 < from) {
                w.others.pop_first();
            }
            let from = now - memory(w.spec.period);
            while w.others_peaks.front().is_some_and(|(t, _)| *t < from) {
                w.others_peaks.pop_front();
            }
        }
        // An answer is read against the window before its request's admission, so
        // the log reaches a window back from any request still in flight, and from
        // any admitted within `LOG_MARGIN` (answers are read just after they settle;
        // slower ones are not learnt from).
        let oldest_open = self.unsettled.first().map_or(now, |k| k.0);
        let log_horizon = oldest_open.min(now - LOG_MARGIN) - self.retain;
        while self.sent.first_key_value().is_some_and(|(k, _)| k.0 < log_horizon) {
            if let Some((key, s)) = self.sent.pop_first() {
                self.unindex(key, &s);
                self.sent_at.remove(&key.1);
            }
        }
    }

    /// Adds a logged request to `unsettled` or `spans`.
    fn index(&mut self, key: Key, s: &Sent) {
        match s.settled {
            None => {
                self.unsettled.insert(key);
            }
            Some(h) => *self.spans.entry(h.saturating_since(key.0)).or_insert(0) += 1,
        }
    }

    /// Takes a logged request out of `unsettled` or `spans`.
    fn unindex(&mut self, key: Key, s: &Sent) {
        match s.settled {
            None => {
                self.unsettled.remove(&key);
            }
            Some(h) => {
                let span = h.saturating_since(key.0);
                if let Some(n) = self.spans.get_mut(&span) {
                    *n -= 1;
                    if *n == 0 {
                        self.spans.remove(&span);
                    }
                }
            }
        }
    }

    /// When a request of `cost` could be admitted, given what is charged now.
    pub fn earliest(&mut self, now: Time, cost: u64) -> Earliest {
        self.refresh(now);
        if let Some(limit) = self.windows.iter().map(|w| w.learned.limit(now, &self.adaptive)).find(|&l| cost > l) {
            return Earliest::Never { limit };
        }
        if let Some(e) = self.over_share(now, cost) {
            return e;
        }
        let mut t = now.max(self.frozen_until);
        for w in &self.windows {
            let reserve = w.reserve(now);
            let need = (w.sum + cost + reserve).saturating_sub(self.cap(w, now));
            if need == 0 {
                continue;
            }
            // A replica's part kept back may be given back before entries leave:
            // look again then.
            let grows = self.share.grows_at(now, w.spec.period);
            match (Self::free_time(&self.held, w, need), grows) {
                (Some(at), _) => t = t.max(grows.map_or(at, |g| g.min(at))),
                (None, Some(g)) => t = t.max(g),
                // What is kept for others is given back when their peak ages out.
                (None, None) if reserve > 0 && need <= reserve + self.held_in(w) => {
                    t = t.max(w.reserve_drops_at(now).unwrap_or(now)).max(Self::free_time(&self.held, w, self.held_in(w)).unwrap_or(now));
                }
                (None, None) => return Earliest::AfterSettle,
            }
        }
        // While others spend on the window, spread ours over it (see the module docs).
        // So too while the limit is what a remaining header leaves us: answers that
        // come back one at a time bound our own count tightly, so the readings show
        // the other program's busiest moment instead of its quietest one.
        for w in &self.windows {
            let reserve = w.reserve(now);
            let left_to_us = w.learned.source(now, &self.adaptive) == Some(Source::Remaining);
            if reserve == 0 && !left_to_us {
                continue;
            }
            let tenth = w.spec.period / 10;
            let part = ((self.cap(w, now).saturating_sub(reserve)) / 5).max(cost);
            let recent: Vec<(Time, u64)> =
                self.sent.range((now - tenth, 0)..).filter(|(_, s)| s.fate != Fate::Refused).map(|(k, s)| (k.0, s.cost)).collect();
            let mut over = (recent.iter().map(|(_, c)| c).sum::<u64>() + cost).saturating_sub(part);
            for (at, c) in recent {
                if over == 0 {
                    break;
                }
                over = over.saturating_sub(c);
                t = t.max((at + tenth).next());
            }
        }
        if t > now {
            return Earliest::At(t);
        }
        // Above what the exchange has shown it accepts, one request at a time: a
        // wrong limit then costs one refusal, not one per request in flight.
        if self.open_cost > 0
            && self.windows.iter().any(|w| {
                let line = w.learned.probe_line(now, &self.adaptive, self.cap(w, now));
                line.is_some_and(|line| w.sum + w.reserve(now) + cost > line)
            })
        {
            return Earliest::AfterSettle;
        }
        Earliest::Now
    }

    /// A lower bound on [`Bucket::earliest`] that assumes everything in flight settles
    /// right now: if even this is too late, waiting cannot help.
    pub fn earliest_optimistic(&mut self, now: Time, cost: u64) -> Earliest {
        match self.earliest(now, cost) {
            Earliest::AfterSettle => {}
            other => return other,
        }
        if let Some(e) = self.over_share(now, cost) {
            return e;
        }
        let mut t = now.max(self.frozen_until);
        for w in &self.windows {
            let need = (w.sum + cost + w.reserve(now)).saturating_sub(self.cap(w, now));
            if need == 0 {
                continue;
            }
            let from_held = Self::free_time(&self.held, w, need);
            // What the held entries cannot free, in-flight entries free one window
            // after they settle, which is now at the earliest.
            let at = from_held.unwrap_or_else(|| (now + w.spec.period).next());
            t = t.max(at);
        }
        if t == now { Earliest::Now } else { Earliest::At(t) }
    }

    /// Cost of the held (settled) entries still counting in window `w`.
    fn held_in(&self, w: &Window) -> u64 {
        w.sum - self.open_cost.min(w.sum)
    }

    /// The time at which `need` cost of held entries has left window `w`.
    fn free_time(held: &BTreeMap<Key, u64>, w: &Window, need: u64) -> Option<Time> {
        let start = w.cursor.map_or(Bound::Unbounded, Bound::Excluded);
        let mut freed = 0;
        for (&key, &cost) in held.range((start, Bound::Unbounded)) {
            freed += cost;
            if freed >= need {
                // The entry counts while held >= t - W, so it is gone strictly after held + W.
                return Some((key.0 + w.spec.period).next());
            }
        }
        None
    }

    /// Charges `cost` under `id`, held until `hold` (`Time::MAX` while in flight, to
    /// be settled later). The caller checked [`Bucket::earliest`] at `now`.
    pub fn charge(&mut self, now: Time, id: u64, cost: u64, hold: Time) {
        self.charge_admitted(now, now, id, cost, hold);
    }

    /// [`Bucket::charge`] for a request admitted at `admitted` (not later than
    /// `now`) elsewhere: another replica's, copied from the ledger.
    pub fn charge_admitted(&mut self, now: Time, admitted: Time, id: u64, cost: u64, hold: Time) {
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
        let settled = (hold != Time::MAX).then_some(hold);
        let entry = Sent { cost, fate: Fate::Pending, settled };
        if let Some(old) = self.sent.insert((admitted, id), entry) {
            self.unindex((admitted, id), &old);
        }
        self.index((admitted, id), &entry);
        self.sent_at.insert(id, admitted);
        let calendar = self.calendar;
        for w in &mut self.windows {
            if calendar {
                let idx = w.cal_index(admitted);
                if idx > w.cal_index {
                    (w.cal_index, w.cal_sum) = (idx, 0);
                }
                // A copy admitted in a calendar window already past counts there only.
                if idx == w.cal_index {
                    w.cal_sum += cost;
                }
            }
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
        if let Some(&at) = self.sent_at.get(&id)
            && let Some(&before) = self.sent.get(&(at, id))
        {
            let after = Sent { settled: Some(held_until), ..before };
            self.unindex((at, id), &before);
            self.index((at, id), &after);
            self.sent.insert((at, id), after);
        }
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
        if let Some(at) = self.sent_at.remove(&id)
            && let Some(s) = self.sent.remove(&(at, id))
        {
            self.unindex((at, id), &s);
            if s.fate != Fate::Refused {
                self.uncount(at, s.cost);
            }
        }
    }

    /// The logged request `id` and its fate from now on.
    fn set_fate(&mut self, id: u64, fate: Fate) -> Option<(Time, u64)> {
        let at = *self.sent_at.get(&id)?;
        let s = self.sent.get_mut(&(at, id))?;
        let was = s.fate;
        s.fate = fate;
        let cost = s.cost;
        if fate == Fate::Refused && was != Fate::Refused {
            self.uncount(at, cost);
        }
        Some((at, cost))
    }

    /// A logged request no longer counts as ours at the exchange (refused, or never sent).
    fn uncount(&mut self, at: Time, cost: u64) {
        let calendar = self.calendar;
        for w in &mut self.windows {
            if calendar && w.cal_index(at) == w.cal_index {
                w.cal_sum -= cost;
            }
        }
    }

    /// Every request of ours the exchange may have counted in window `i` when
    /// request `id` (admitted at `admitted`, answered at `at`) arrived: requests
    /// sent after it may have arrived first (arrival jitter), and a request sent
    /// before the window began but answered after it may have arrived in it. An
    /// exchange's count above this is someone else's, never a reordering of ours.
    fn ours_may_have_counted(&self, i: usize, id: u64, admitted: Time, at: Time) -> u64 {
        let w = &self.windows[i];
        if !self.calendar {
            return self.ours_bounds(i, id, admitted, at).0;
        }
        let start = w.cal_start(admitted);
        let (from, to) = (Bound::Included((start, 0)), Bound::Included((at, u64::MAX)));
        let inside: u64 = if w.cal_index(admitted) == w.cal_index {
            // The running sum of the current calendar window, less what came after the answer.
            let later: u64 = self
                .sent
                .range((Bound::Excluded((at, u64::MAX)), Bound::Unbounded))
                .filter(|(_, s)| s.fate != Fate::Refused)
                .map(|(_, s)| s.cost)
                .sum();
            w.cal_sum.saturating_sub(later)
        } else {
            // An answer from the previous calendar window, read after it ended.
            self.sent.range((from, to)).filter(|(_, s)| s.fate != Fate::Refused).map(|(_, s)| s.cost).sum()
        };
        let straddling: u64 = self
            .sent
            .range((start - w.spec.period, 0)..(start, 0))
            .filter(|(_, s)| s.fate != Fate::Refused && s.settled.is_none_or(|h| h >= start))
            .map(|(_, s)| s.cost)
            .sum();
        inside + straddling
    }

    /// Where the exchange's window for a request admitted at `admitted` begins.
    fn window_start(&self, i: usize, admitted: Time) -> Time {
        let w = &self.windows[i];
        if self.calendar { w.cal_start(admitted) } else { admitted - w.spec.period }
    }

    /// Window `i`: others spent `cost` more than we had seen, learnt at `now`.
    fn add_others(&mut self, i: usize, now: Time, cost: u64) {
        if cost == 0 {
            return;
        }
        let id = self.next_phantom;
        self.next_phantom += 1;
        self.phantom_cost += cost;
        let calendar = self.calendar;
        let w = &mut self.windows[i];
        w.others.insert((now, id), cost);
        // What they spend in one window. A sliding window's count is read whole at
        // each answer. A calendar window's count restarts at its start, and what
        // they spend after our last answer in it is never read: scale what they
        // spent so far in it to the whole window (at least a tenth of it watched).
        let spent = if calendar {
            let start = w.cal_start(now);
            let so_far = w.others_since(start) as f64;
            let elapsed = now.saturating_since(start).max(w.spec.period / 10);
            (so_far * w.spec.period.as_secs_f64() / elapsed.as_secs_f64()).ceil() as u64
        } else {
            w.others_since(now - w.spec.period)
        };
        w.others_peaks.push_back((now, spent));
        // The reserve changed at this instant.
        w.reserve_val = w.compute_reserve(now);
    }

    /// Every request of ours the exchange may have counted when request `id`
    /// (admitted at `admitted`, answered at `at`) arrived, and those it surely
    /// counted, in window `i`: `(at_most, at_least)`. At most: admitted before the
    /// answer, not refused, not answered before the window. At least: accepted and
    /// answered before `id` was sent, and sent within a window of its answer.
    ///
    /// Only part of the log can count: a request admitted before `from` counts
    /// (at most) only if it was still unsettled or settled at or after `from`, so
    /// it was admitted no earlier than the oldest unsettled request or `from` less
    /// the longest span in the log; every other term starts at or after `to` or
    /// `admitted`. The scan starts at the earliest of those, not at the log's
    /// start: with high rates the log holds many windows of requests.
    fn ours_bounds(&self, i: usize, id: u64, admitted: Time, at: Time) -> (u64, u64) {
        let period = self.windows[i].spec.period;
        let skew = self.skew;
        let (from, to) = (admitted - period - skew, at - period + skew);
        let longest = self.spans.last_key_value().map_or(Duration::ZERO, |(d, _)| *d);
        let mut start = (from - longest).min(to).min(admitted);
        if let Some(&(t, _)) = self.unsettled.first() {
            start = start.min(t);
        }
        let mut most = 0;
        let mut least = 0;
        for (&(t, other), s) in self.sent.range((start, 0)..=(at + skew, u64::MAX)) {
            if s.fate == Fate::Refused {
                continue;
            }
            if s.settled.is_none_or(|h| h >= from) {
                most += s.cost;
            }
            if other == id || (t <= at && s.fate == Fate::Accepted && t >= to && s.settled.is_some_and(|h| h + skew <= admitted)) {
                least += s.cost;
            }
        }
        (most, least)
    }

    /// The exchange answered request `id` (admitted at `admitted_at`, answered at
    /// `at`) and, with the answer, described its window of `period` (`accepted`:
    /// the request itself was not refused). Returns `None` when the bucket has no
    /// window of that period; else the limit change it caused, if any.
    ///
    /// * An announced limit lower than ours replaces it.
    /// * A count (`used`, or announced limit less `remaining`) above everything of
    ///   ours in the exchange's window at arrival is someone else's (another
    ///   program on the key or IP): a phantom entry, held until `at`.
    /// * `remaining` alone (Upbit) says what the exchange leaves sluice: remaining
    ///   plus ours in that window. That may be a lower limit or another program;
    ///   either way it is what may be sent, and it is learned (see `adaptive`).
    #[allow(clippy::too_many_arguments)]
    pub fn observe_usage(
        &mut self,
        now: Time,
        at: Time,
        id: u64,
        admitted_at: Time,
        period: Duration,
        usage: Usage,
        accepted: bool,
    ) -> Option<Option<Change>> {
        self.refresh(now);
        let i = self.windows.iter().position(|w| w.spec.period == period)?;
        let spec = self.adaptive.clone();
        let mut change = usage.limit.filter(|&l| l > 0).and_then(|l| self.windows[i].learned.announce(now, &spec, l));
        let admitted = self.sent_at.get(&id).copied().unwrap_or(admitted_at);
        if !self.trusted(i, admitted, now) {
            return Some(change);
        }
        let mut ours = self.ours_may_have_counted(i, id, admitted, at);
        if !accepted && let Some(s) = self.sent.get(&(admitted, id)).filter(|s| s.fate != Fate::Refused) {
            // Refused: the exchange did not count this one.
            ours = ours.saturating_sub(s.cost);
        }
        let used = usage.used.or_else(|| Some(usage.limit?.saturating_sub(usage.remaining?)));
        self.windows[i].headers |= used.is_some() || usage.remaining.is_some();
        match (used, usage.remaining) {
            (Some(used), _) => {
                // Others' spending already seen in that window is not new.
                let seen = ours + self.windows[i].others_since(self.window_start(i, admitted));
                if used > seen {
                    self.add_others(i, now, used - seen);
                }
                if accepted {
                    self.windows[i].learned.verify(used);
                }
            }
            (None, Some(remaining)) => {
                // Our share of what it counted is uncertain (requests in flight may
                // arrive in either order): the limit is bounded by the most, and only
                // the least is known to be accepted.
                let (most, least) = self.ours_bounds(i, id, admitted, at);
                let least = if accepted { least } else { 0 };
                let w = &mut self.windows[i];
                change = change.or(w.learned.on_remaining(now, &spec, remaining.saturating_add(most), remaining.saturating_add(least)));
            }
            (None, None) => {}
        }
        Some(change)
    }

    /// The exchange answered request `id` without refusing it: windows whose usage
    /// no header reports learn what the exchange accepted from our own log (every
    /// accepted request admitted in the last period arrived within one period).
    pub fn on_accepted(&mut self, now: Time, id: u64) {
        self.refresh(now);
        if self.set_fate(id, Fate::Accepted).is_none() {
            return;
        }
        for i in 0..self.windows.len() {
            let w = &self.windows[i];
            if w.headers || w.learned.verified() >= self.cap(w, now) || !self.trusted(i, now - w.spec.period, now) {
                continue;
            }
            let from = w.threshold(now);
            let count: u64 = self.sent.range((from, 0)..).filter(|(_, s)| s.fate == Fate::Accepted).map(|(_, s)| s.cost).sum();
            self.windows[i].learned.verify(count);
        }
    }

    /// The exchange refused request `id` (admitted at `admitted_at`) as over a
    /// limit: pause until `resume_at`, and cut the window the refusal most likely
    /// came from to what the exchange had counted. `server_used` is the exchange's
    /// own count per window period, where the refusal carried one.
    pub fn on_throttled(
        &mut self,
        now: Time,
        id: u64,
        admitted_at: Time,
        resume_at: Time,
        server_used: &[(Duration, u64)],
    ) -> Option<Change> {
        self.throttled += 1;
        self.frozen_until = self.frozen_until.max(resume_at);
        self.refresh(now);
        let (admitted, cost) = self.set_fate(id, Fate::Refused).unwrap_or((admitted_at, 1));
        // Evidence per window: the exchange's count where it gave one (less this
        // request, in case it counted it); else every request of ours it may have
        // counted at that arrival (requests sent after this one may have arrived
        // first), plus others' spending seen. Refusals of one burst are read in
        // turn, each lowering to its evidence, so the last one read is exact.
        let evidence: Vec<u64> = (0..self.windows.len())
            .map(|i| match server_used.iter().find(|(p, _)| *p == self.windows[i].spec.period) {
                Some((_, used)) => used.saturating_sub(cost),
                None => self.ours_may_have_counted(i, id, admitted, now) + self.windows[i].others_since(self.window_start(i, admitted)),
            })
            .collect();
        // The window the refusal came from: the fullest by its evidence (ties: the shorter).
        let i = (0..self.windows.len()).max_by(|&a, &b| {
            let ratio = |i: usize| (evidence[i] + cost) as f64 / self.windows[i].learned.limit(now, &self.adaptive).max(1) as f64;
            ratio(a).total_cmp(&ratio(b)).then(self.windows[b].spec.period.cmp(&self.windows[a].spec.period))
        })?;
        if !self.trusted(i, admitted, now) {
            return None;
        }
        let spec = self.adaptive.clone();
        self.windows[i].learned.on_throttled(now, &spec, admitted, evidence[i], cost)
    }

    /// The scope is banned until `until`: admit nothing before.
    pub fn on_banned(&mut self, until: Time) {
        self.bans += 1;
        self.frozen_until = self.frozen_until.max(until);
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

    /// When a learned limit next recovers a step (to wake a waiting queue).
    pub fn next_rate_change(&self, now: Time) -> Option<Time> {
        self.windows.iter().filter_map(|w| w.learned.next_change(now, &self.adaptive)).min()
    }

    pub fn status(&mut self, now: Time) -> BucketStatus {
        self.refresh(now);
        let spec = &self.adaptive;
        let windows: Vec<WindowStatus> = self
            .windows
            .iter()
            .map(|w| {
                let learned = w.learned.base(now, spec);
                WindowStatus {
                    period: w.spec.period,
                    limit: self.cap(w, now),
                    configured: w.spec.limit,
                    learned: (learned < w.spec.limit).then_some(learned),
                    learned_from: w.learned.source(now, spec),
                    verified: w.learned.verified(),
                    failed: w.learned.failed(now, spec),
                    used: w.sum + w.reserve(now),
                }
            })
            .collect();
        let rate_factor =
            self.windows.iter().map(|w| w.learned.base(now, spec) as f64 / w.spec.limit.max(1) as f64).fold(1.0_f64, f64::min);
        BucketStatus {
            windows,
            rate_factor,
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
mod tests;
