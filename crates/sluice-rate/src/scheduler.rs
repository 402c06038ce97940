//! The queue in front of the buckets, one per dispatch shard, driven by one task so
//! that deciding who goes next never contends on a lock (seed 004's central queue).
//!
//! * Priority classes without starvation: a request of class `c` enqueued at `t` is
//!   ordered as if it arrived at `t + lag[c]`, so orders go first, yet a backfill
//!   request waits at most its lag behind later orders.
//! * A request may charge several buckets (an IP weight and an account order count);
//!   it is admitted only when all of them admit it, atomically.
//! * Head-of-line per bucket: once a request is refused by a bucket, later requests
//!   may not take that bucket's capacity in the same pass, so a heavy request is
//!   never starved by light ones; requests on other buckets go on.
//! * Deadlines: a request that cannot be admitted before its deadline fails at once;
//!   none is admitted at or after its deadline.
//! * Bounded: the queue refuses beyond its capacity.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use crate::Time;
use crate::bucket::{Bucket, BucketSpec, BucketStatus, Earliest, SpecError};

/// Priority classes, highest first.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Class {
    /// Order placement and cancels.
    Order,
    /// Account queries: balances, open orders.
    Account,
    /// Market data.
    MarketData,
    /// Historical backfill.
    Backfill,
}

impl Class {
    pub const ALL: [Class; 4] = [Class::Order, Class::Account, Class::MarketData, Class::Backfill];

    pub fn index(self) -> usize {
        self as usize
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Class::Order => "order",
            Class::Account => "account",
            Class::MarketData => "market_data",
            Class::Backfill => "backfill",
        }
    }
}

/// Scheduler settings.
#[derive(Debug, Clone, PartialEq)]
pub struct SchedulerSpec {
    /// Waiting requests beyond this are refused.
    pub capacity: usize,
    /// Ordering lag per class, indexed by [`Class::index`].
    pub lag: [Duration; 4],
    /// How long after a failure with unknown outcome its entry still counts (the
    /// request may still reach the exchange).
    pub lost_hold: Duration,
}

impl Default for SchedulerSpec {
    fn default() -> Self {
        SchedulerSpec {
            capacity: 10_000,
            lag: [Duration::ZERO, Duration::from_millis(250), Duration::from_secs(1), Duration::from_secs(3)],
            lost_hold: Duration::from_secs(60),
        }
    }
}

/// Index of a bucket inside one scheduler.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct BucketId(pub u32);

/// A bucket a request charges, and by how much.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Need {
    pub bucket: BucketId,
    pub cost: u64,
}

/// How long an admitted request's charge is held.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hold {
    /// Until [`Scheduler::settle`] says when its response came back.
    UntilSettled,
    /// A fixed time from admission (a token the caller spends by itself: its use-by
    /// time plus the network jitter bound).
    For(Duration),
}

/// A request waiting for budget.
#[derive(Debug)]
pub struct Request<T> {
    pub class: Class,
    pub deadline: Time,
    pub needs: Vec<Need>,
    pub hold: Hold,
    pub payload: T,
}

/// Identifies an admitted request until it is settled.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Ticket(u64);

impl Ticket {
    pub fn id(self) -> u64 {
        self.0
    }
}

/// Why a request was refused at the door.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("the queue is full ({capacity} waiting)")]
    QueueFull { capacity: usize },
    #[error("no bucket {0:?}")]
    UnknownBucket(BucketId),
    #[error("cost {cost} is above the bucket's limit {limit}")]
    CostAboveLimit { bucket: BucketId, cost: u64, limit: u64 },
    #[error("the deadline has already passed")]
    DeadlinePassed,
    #[error("the budget frees only after the deadline")]
    DeadlineUnreachable { bucket: BucketId, earliest: Time },
}

/// Why a waiting request left the queue without being admitted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dropped {
    /// Its deadline came while it waited.
    DeadlineExceeded,
    /// The budget would free only at `earliest`, after its deadline.
    DeadlineUnreachable { earliest: Time },
    /// A bucket's limit fell below its cost (the exchange announced a lower limit).
    CostAboveLimit { bucket: BucketId, cost: u64, limit: u64 },
    /// Whoever waited for it is gone.
    Abandoned,
}

/// A request that may go now.
#[derive(Debug)]
pub struct Admitted<T> {
    pub ticket: Ticket,
    pub class: Class,
    pub enqueued_at: Time,
    pub admitted_at: Time,
    pub payload: T,
}

/// The outcome of one [`Scheduler::poll`].
#[derive(Debug)]
pub struct Poll<T> {
    pub admitted: Vec<Admitted<T>>,
    pub dropped: Vec<(T, Dropped)>,
    /// Poll again at this time at the latest (absent new requests or settlements).
    pub next_wake: Option<Time>,
}

#[derive(Debug)]
struct Waiting<T> {
    id: u64,
    class: Class,
    enqueued_at: Time,
    deadline: Time,
    needs: Vec<Need>,
    hold: Hold,
    payload: T,
}

type Key = (Time, u64);

enum Decision {
    Admit,
    Drop(Dropped),
}

/// The queue and the buckets of one shard.
#[derive(Debug)]
pub struct Scheduler<T> {
    spec: SchedulerSpec,
    buckets: HashMap<BucketId, Bucket>,
    next_bucket: u32,
    waiting: BTreeMap<Key, Waiting<T>>,
    by_deadline: BTreeSet<(Time, Key)>,
    /// Admitted requests still held until settled: which buckets they charged.
    open: HashMap<u64, Vec<BucketId>>,
    next_id: u64,
}

impl<T> Scheduler<T> {
    pub fn new(spec: SchedulerSpec) -> Self {
        Scheduler {
            spec,
            buckets: HashMap::new(),
            next_bucket: 0,
            waiting: BTreeMap::new(),
            by_deadline: BTreeSet::new(),
            open: HashMap::new(),
            next_id: 1,
        }
    }

    pub fn spec(&self) -> &SchedulerSpec {
        &self.spec
    }

    pub fn add_bucket(&mut self, spec: BucketSpec) -> Result<BucketId, SpecError> {
        let bucket = Bucket::new(spec)?;
        let id = BucketId(self.next_bucket);
        self.next_bucket += 1;
        self.buckets.insert(id, bucket);
        Ok(id)
    }

    /// Removes a bucket nobody waits on (per-connection buckets of closed sockets).
    /// Returns false, and keeps it, while a request waits on it or holds it open.
    pub fn remove_bucket(&mut self, id: BucketId) -> bool {
        let busy = self.waiting.values().any(|w| w.needs.iter().any(|n| n.bucket == id)) || self.open.values().any(|bs| bs.contains(&id));
        if !busy {
            self.buckets.remove(&id);
        }
        !busy
    }

    pub fn bucket_mut(&mut self, id: BucketId) -> Option<&mut Bucket> {
        self.buckets.get_mut(&id)
    }

    pub fn bucket_ids(&self) -> impl Iterator<Item = BucketId> + '_ {
        self.buckets.keys().copied()
    }

    /// Waiting requests.
    pub fn len(&self) -> usize {
        self.waiting.len()
    }

    pub fn is_empty(&self) -> bool {
        self.waiting.is_empty()
    }

    /// Admitted requests not yet settled.
    pub fn in_flight(&self) -> usize {
        self.open.len()
    }

    /// Queues a request, or refuses it (handing the payload back).
    pub fn enqueue(&mut self, now: Time, req: Request<T>) -> Result<Ticket, (Refusal, T)> {
        for n in &req.needs {
            let Some(b) = self.buckets.get_mut(&n.bucket) else {
                return Err((Refusal::UnknownBucket(n.bucket), req.payload));
            };
            if n.cost > b.max_cost(now) {
                let limit = b.max_cost(now);
                return Err((Refusal::CostAboveLimit { bucket: n.bucket, cost: n.cost, limit }, req.payload));
            }
        }
        if now >= req.deadline {
            return Err((Refusal::DeadlinePassed, req.payload));
        }
        for n in &req.needs {
            let b = self.buckets.get_mut(&n.bucket).expect("checked above");
            if let Earliest::At(earliest) = b.earliest_optimistic(now, n.cost)
                && earliest >= req.deadline
            {
                return Err((Refusal::DeadlineUnreachable { bucket: n.bucket, earliest }, req.payload));
            }
        }
        if self.waiting.len() >= self.spec.capacity {
            return Err((Refusal::QueueFull { capacity: self.spec.capacity }, req.payload));
        }
        let id = self.next_id;
        self.next_id += 1;
        let key = (now + self.spec.lag[req.class.index()], id);
        self.by_deadline.insert((req.deadline, key));
        self.waiting.insert(
            key,
            Waiting {
                id,
                class: req.class,
                enqueued_at: now,
                deadline: req.deadline,
                needs: req.needs,
                hold: req.hold,
                payload: req.payload,
            },
        );
        Ok(Ticket(id))
    }

    /// Admits what can go at `now`, drops what cannot go in time or is no longer
    /// wanted (`alive` returns false), and says when to poll next.
    pub fn poll(&mut self, now: Time, mut alive: impl FnMut(&T) -> bool) -> Poll<T> {
        let mut out = Poll { admitted: Vec::new(), dropped: Vec::new(), next_wake: None };

        while let Some(&(deadline, key)) = self.by_deadline.first() {
            if deadline > now {
                break;
            }
            self.by_deadline.pop_first();
            if let Some(w) = self.waiting.remove(&key) {
                out.dropped.push((w.payload, Dropped::DeadlineExceeded));
            }
        }

        let mut wake: Option<Time> = None;
        let mut blocked: Vec<BucketId> = Vec::new();
        let mut decisions: Vec<(Key, Decision)> = Vec::new();
        let mut refusing: Vec<BucketId> = Vec::new();
        for (&key, w) in &self.waiting {
            if !alive(&w.payload) {
                decisions.push((key, Decision::Drop(Dropped::Abandoned)));
                continue;
            }
            if w.needs.iter().any(|n| blocked.contains(&n.bucket)) {
                continue;
            }
            refusing.clear();
            let mut at = now;
            let mut after_settle = false;
            let mut never = None;
            for n in &w.needs {
                let Some(b) = self.buckets.get_mut(&n.bucket) else {
                    never = Some(Dropped::CostAboveLimit { bucket: n.bucket, cost: n.cost, limit: 0 });
                    break;
                };
                match b.earliest(now, n.cost) {
                    Earliest::Now => {}
                    Earliest::At(t) => {
                        at = at.max(t);
                        refusing.push(n.bucket);
                    }
                    Earliest::AfterSettle => {
                        after_settle = true;
                        refusing.push(n.bucket);
                    }
                    Earliest::Never { limit } => {
                        never = Some(Dropped::CostAboveLimit { bucket: n.bucket, cost: n.cost, limit });
                        break;
                    }
                }
            }
            if let Some(reason) = never {
                decisions.push((key, Decision::Drop(reason)));
            } else if refusing.is_empty() {
                let hold = match w.hold {
                    Hold::UntilSettled => Time::MAX,
                    Hold::For(d) => now + d,
                };
                for n in &w.needs {
                    if let Some(b) = self.buckets.get_mut(&n.bucket) {
                        b.charge(now, w.id, n.cost, hold);
                    }
                }
                if w.hold == Hold::UntilSettled {
                    self.open.insert(w.id, w.needs.iter().map(|n| n.bucket).collect());
                }
                decisions.push((key, Decision::Admit));
            } else if !after_settle && at >= w.deadline {
                decisions.push((key, Decision::Drop(Dropped::DeadlineUnreachable { earliest: at })));
            } else {
                if !after_settle {
                    wake = min_time(wake, Some(at));
                }
                for &id in &refusing {
                    if let Some(b) = self.buckets.get(&id) {
                        wake = min_time(wake, b.next_rate_change(now));
                    }
                }
                blocked.extend_from_slice(&refusing);
                if blocked.len() >= self.buckets.len() {
                    break;
                }
            }
        }

        for (key, decision) in decisions {
            let Some(w) = self.waiting.remove(&key) else { continue };
            self.by_deadline.remove(&(w.deadline, key));
            match decision {
                Decision::Admit => out.admitted.push(Admitted {
                    ticket: Ticket(w.id),
                    class: w.class,
                    enqueued_at: w.enqueued_at,
                    admitted_at: now,
                    payload: w.payload,
                }),
                Decision::Drop(reason) => out.dropped.push((w.payload, reason)),
            }
        }
        let first_deadline = self.by_deadline.first().map(|&(d, _)| d);
        out.next_wake = min_time(wake, first_deadline);
        out
    }

    /// The admitted request's response came back at `at`: it cannot be counted later.
    pub fn settle(&mut self, now: Time, ticket: Ticket, at: Time) {
        if let Some(buckets) = self.open.remove(&ticket.0) {
            for id in buckets {
                if let Some(b) = self.buckets.get_mut(&id) {
                    b.settle(now, ticket.0, at);
                }
            }
        }
    }

    /// The admitted request failed at `at` with an unknown outcome (it may still
    /// reach the exchange): keep it counted for the configured lost hold.
    pub fn settle_unknown(&mut self, now: Time, ticket: Ticket, at: Time) {
        let hold = at + self.spec.lost_hold;
        self.settle(now, ticket, hold);
    }

    /// The admitted request was never sent: give its budget back.
    pub fn release(&mut self, ticket: Ticket) {
        if let Some(buckets) = self.open.remove(&ticket.0) {
            for id in buckets {
                if let Some(b) = self.buckets.get_mut(&id) {
                    b.release(ticket.0);
                }
            }
        }
    }

    /// Status of every bucket with its waiting count.
    pub fn status(&mut self, now: Time) -> Vec<(BucketId, BucketStatus, usize)> {
        let mut queued: HashMap<BucketId, usize> = HashMap::new();
        for w in self.waiting.values() {
            for n in &w.needs {
                *queued.entry(n.bucket).or_default() += 1;
            }
        }
        let mut v: Vec<_> = self.buckets.iter_mut().map(|(&id, b)| (id, b.status(now), queued.get(&id).copied().unwrap_or(0))).collect();
        v.sort_by_key(|(id, _, _)| *id);
        v
    }
}

fn min_time(a: Option<Time>, b: Option<Time>) -> Option<Time> {
    match (a, b) {
        (Some(x), Some(y)) => Some(x.min(y)),
        (x, None) => x,
        (None, y) => y,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::adaptive::AdaptiveSpec;
    use crate::bucket::WindowSpec;

    fn ms(n: u64) -> Time {
        Time::from_millis(n)
    }

    fn spec(limit: u64, period_ms: u64) -> BucketSpec {
        // Probing (see `adaptive`) is the bucket's business; these tests are about the queue.
        let adaptive = AdaptiveSpec { probe_below: 1.0, ..AdaptiveSpec::default() };
        BucketSpec { windows: vec![WindowSpec { limit, period: Duration::from_millis(period_ms) }], adaptive, calendar: false }
    }

    fn req(class: Class, deadline: Time, needs: Vec<Need>, payload: &'static str) -> Request<&'static str> {
        Request { class, deadline, needs, hold: Hold::UntilSettled, payload }
    }

    fn names(p: &Poll<&'static str>) -> Vec<&'static str> {
        p.admitted.iter().map(|a| a.payload).collect()
    }

    #[test]
    fn higher_classes_go_first_but_the_lowest_is_not_starved() {
        let mut s = Scheduler::new(SchedulerSpec::default());
        let b = s.add_bucket(spec(1, 1000)).unwrap();
        let need = vec![Need { bucket: b, cost: 1 }];
        let far = ms(1_000_000);
        s.enqueue(ms(0), req(Class::Backfill, far, need.clone(), "backfill")).unwrap();
        s.enqueue(ms(0), req(Class::MarketData, far, need.clone(), "md")).unwrap();
        s.enqueue(ms(0), req(Class::Order, far, need.clone(), "order")).unwrap();
        let p = s.poll(ms(0), |_| true);
        assert_eq!(names(&p), ["order"]);
        s.settle(ms(0), p.admitted[0].ticket, ms(0));
        // Orders keep arriving; market data (lag 1 s) still gets through before an
        // order enqueued more than 1 s after it.
        s.enqueue(ms(1_500), req(Class::Order, far, need.clone(), "late order")).unwrap();
        let p = s.poll(ms(1_500), |_| true);
        assert_eq!(names(&p), ["md"]);
        s.settle(ms(1_500), p.admitted[0].ticket, ms(1_500));
        let p = s.poll(ms(2_501), |_| true);
        assert_eq!(names(&p), ["late order"]);
    }

    #[test]
    fn a_request_on_another_bucket_is_not_blocked() {
        let mut s = Scheduler::new(SchedulerSpec::default());
        let a = s.add_bucket(spec(1, 1000)).unwrap();
        let b = s.add_bucket(spec(1, 1000)).unwrap();
        let far = ms(1_000_000);
        s.enqueue(ms(0), req(Class::Order, far, vec![Need { bucket: a, cost: 1 }], "a1")).unwrap();
        s.enqueue(ms(0), req(Class::Order, far, vec![Need { bucket: a, cost: 1 }], "a2")).unwrap();
        s.enqueue(ms(0), req(Class::Backfill, far, vec![Need { bucket: b, cost: 1 }], "b1")).unwrap();
        let p = s.poll(ms(0), |_| true);
        assert_eq!(names(&p), ["a1", "b1"]);
        assert_eq!(p.next_wake, Some(far), "a2 waits for a1 to settle: only its deadline is a known time");
        s.settle(ms(3), p.admitted[0].ticket, ms(3));
        let p = s.poll(ms(3), |_| true);
        assert!(p.admitted.is_empty());
        assert_eq!(p.next_wake, Some(ms(1_003).next()));
    }

    #[test]
    fn a_heavy_request_is_not_starved_by_light_ones() {
        let mut s = Scheduler::new(SchedulerSpec::default());
        let b = s.add_bucket(spec(10, 1000)).unwrap();
        let far = ms(1_000_000);
        let first = s.enqueue(ms(0), req(Class::Order, far, vec![Need { bucket: b, cost: 6 }], "six")).unwrap();
        let p = s.poll(ms(0), |_| true);
        s.settle(ms(0), first, ms(0));
        assert_eq!(p.admitted.len(), 1);
        s.enqueue(ms(1), req(Class::Order, far, vec![Need { bucket: b, cost: 8 }], "heavy")).unwrap();
        s.enqueue(ms(2), req(Class::Order, far, vec![Need { bucket: b, cost: 1 }], "light")).unwrap();
        let p = s.poll(ms(2), |_| true);
        assert!(p.admitted.is_empty(), "light may not jump the heavy request");
        let p = s.poll(ms(1_000).next(), |_| true);
        assert_eq!(names(&p), ["heavy", "light"], "once the heavy one fits, the light one fits beside it");
    }

    #[test]
    fn all_needs_are_charged_together_or_not_at_all() {
        let mut s = Scheduler::new(SchedulerSpec::default());
        let ip = s.add_bucket(spec(10, 1000)).unwrap();
        let acct = s.add_bucket(spec(1, 1000)).unwrap();
        let far = ms(1_000_000);
        let both = vec![Need { bucket: ip, cost: 1 }, Need { bucket: acct, cost: 1 }];
        s.enqueue(ms(0), req(Class::Order, far, both.clone(), "o1")).unwrap();
        s.enqueue(ms(0), req(Class::Order, far, both.clone(), "o2")).unwrap();
        let p = s.poll(ms(0), |_| true);
        assert_eq!(names(&p), ["o1"]);
        let st = s.status(ms(0));
        assert_eq!(st[0].1.windows[0].used, 1, "o2 charged nothing on the IP bucket");
        assert_eq!(st[1].2, 1, "o2 waits on the account bucket");
    }

    #[test]
    fn deadlines_fail_fast_and_are_never_admitted_late() {
        let mut s = Scheduler::new(SchedulerSpec::default());
        let b = s.add_bucket(spec(1, 1000)).unwrap();
        let need = vec![Need { bucket: b, cost: 1 }];
        let t = s.enqueue(ms(0), req(Class::Order, ms(10_000), need.clone(), "first")).unwrap();
        s.poll(ms(0), |_| true);
        s.settle(ms(1), t, ms(1));
        // Frees at 1.001 s: a 500 ms deadline cannot be met, refuse at the door.
        let err = s.enqueue(ms(2), req(Class::Order, ms(500), need.clone(), "hopeless")).unwrap_err();
        assert!(matches!(err.0, Refusal::DeadlineUnreachable { .. }), "{err:?}");
        // Queued behind another: dropped when its time is clearly unreachable.
        s.enqueue(ms(3), req(Class::Order, ms(5_000), need.clone(), "ahead")).unwrap();
        s.enqueue(ms(4), req(Class::Order, ms(1_500), need.clone(), "behind")).unwrap();
        let p = s.poll(ms(1_001).next(), |_| true);
        assert_eq!(names(&p), ["ahead"]);
        let p = s.poll(ms(1_500), |_| true);
        assert_eq!(p.dropped.len(), 1);
        assert_eq!(p.dropped[0].0, "behind");
        assert_eq!(p.dropped[0].1, Dropped::DeadlineExceeded);
        assert!(s.is_empty());
    }

    #[test]
    fn refusals_name_the_problem() {
        let mut s = Scheduler::new(SchedulerSpec { capacity: 1, ..SchedulerSpec::default() });
        let b = s.add_bucket(spec(5, 1000)).unwrap();
        let far = ms(1_000_000);
        let e = s.enqueue(ms(0), req(Class::Order, far, vec![Need { bucket: b, cost: 6 }], "x")).unwrap_err();
        assert_eq!(e.0, Refusal::CostAboveLimit { bucket: b, cost: 6, limit: 5 });
        let e = s.enqueue(ms(0), req(Class::Order, far, vec![Need { bucket: BucketId(99), cost: 1 }], "x")).unwrap_err();
        assert_eq!(e.0, Refusal::UnknownBucket(BucketId(99)));
        let e = s.enqueue(ms(10), req(Class::Order, ms(10), vec![Need { bucket: b, cost: 1 }], "x")).unwrap_err();
        assert_eq!(e.0, Refusal::DeadlinePassed);
        s.enqueue(ms(0), req(Class::Order, far, vec![Need { bucket: b, cost: 1 }], "x")).unwrap();
        let e = s.enqueue(ms(0), req(Class::Order, far, vec![Need { bucket: b, cost: 1 }], "y")).unwrap_err();
        assert_eq!(e.0, Refusal::QueueFull { capacity: 1 });
    }

    #[test]
    fn abandoned_requests_leave_without_spending() {
        let mut s = Scheduler::new(SchedulerSpec::default());
        let b = s.add_bucket(spec(5, 1000)).unwrap();
        s.enqueue(ms(0), req(Class::Order, ms(9_000), vec![Need { bucket: b, cost: 1 }], "gone")).unwrap();
        let p = s.poll(ms(0), |p| *p != "gone");
        assert_eq!(p.dropped[0].1, Dropped::Abandoned);
        assert_eq!(s.status(ms(0))[0].1.windows[0].used, 0);
    }

    #[test]
    fn released_and_unknown_outcomes() {
        let mut s = Scheduler::new(SchedulerSpec { lost_hold: Duration::from_secs(5), ..SchedulerSpec::default() });
        let b = s.add_bucket(spec(1, 1000)).unwrap();
        let far = ms(1_000_000);
        let t = s.enqueue(ms(0), req(Class::Order, far, vec![Need { bucket: b, cost: 1 }], "a")).unwrap();
        s.poll(ms(0), |_| true);
        s.release(t);
        let t = s.enqueue(ms(0), req(Class::Order, far, vec![Need { bucket: b, cost: 1 }], "b")).unwrap();
        assert_eq!(s.poll(ms(0), |_| true).admitted.len(), 1, "released budget is back");
        s.settle_unknown(ms(100), t, ms(100));
        s.enqueue(ms(200), req(Class::Order, far, vec![Need { bucket: b, cost: 1 }], "c")).unwrap();
        let p = s.poll(ms(200), |_| true);
        assert_eq!(p.next_wake, Some(ms(6_100).next()), "unknown outcome counts 5 s past the failure");
    }

    #[test]
    fn grants_hold_for_a_fixed_time() {
        let mut s = Scheduler::new(SchedulerSpec::default());
        let b = s.add_bucket(spec(1, 1000)).unwrap();
        let far = ms(1_000_000);
        let r = |p| Request {
            class: Class::MarketData,
            deadline: far,
            needs: vec![Need { bucket: b, cost: 1 }],
            hold: Hold::For(Duration::from_millis(200)),
            payload: p,
        };
        s.enqueue(ms(0), r("g1")).unwrap();
        assert_eq!(s.poll(ms(0), |_| true).admitted.len(), 1);
        assert_eq!(s.in_flight(), 0, "grants need no settlement");
        s.enqueue(ms(0), r("g2")).unwrap();
        assert_eq!(s.poll(ms(0), |_| true).next_wake, Some(ms(1_200).next()));
    }

    #[test]
    fn buckets_in_use_are_not_removed() {
        let mut s = Scheduler::new(SchedulerSpec::default());
        let b = s.add_bucket(spec(1, 1000)).unwrap();
        let t = s.enqueue(ms(0), req(Class::Order, ms(9_000), vec![Need { bucket: b, cost: 1 }], "a")).unwrap();
        s.poll(ms(0), |_| true);
        assert!(!s.remove_bucket(b));
        s.settle(ms(1), t, ms(1));
        assert!(s.remove_bucket(b));
        assert!(s.bucket_mut(b).is_none());
    }
}
