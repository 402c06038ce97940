//! One dispatch shard per exchange: a single task owns the exchange's scheduler and
//! buckets, so deciding who goes next never contends on a lock (seed 004's central
//! queue with one dispatching task). Admitted calls are sent by their own tasks,
//! which report back when the answer came (that is when the budget entry settles)
//! together with what the answer said about the budget.
//!
//! Commands arrive on a bounded channel; when it is full the caller is refused with
//! RESOURCE_EXHAUSTED rather than queued without bound.
//!
//! With replicas (see `cluster`) the shard of every replica keeps a copy of the
//! exchange's ledger: it applies every ledger entry any replica publishes. Only the
//! shard of the exchange's owner admits (`Reserve`, for calls any replica sends);
//! the others admit nothing (`admit_until` is in the past) until they own the
//! exchange or fall back to their own share.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use sluice_domain::Exchange;
use sluice_exchange::feedback::Observation;
use sluice_exchange::policy::{ExchangePolicy, Scope};
use sluice_rate::bucket::{BucketStatus, Share, Usage};
use sluice_rate::scheduler::{Admitted, BucketId, Dropped, Hold, Need, Refusal, Request, Scheduler, SchedulerSpec, Ticket};
use sluice_rate::{Clock, MonotonicClock, Time};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tonic::Status;

use crate::metrics::{BucketLabels, ClassLabels, ExchangeLabels, Metrics, WindowLabels};
use crate::request::{BucketKey, PreparedCall, PreparedGrant};
use crate::upstream::Upstream;

/// The exchange's answer to a call.
#[derive(Debug)]
pub(crate) struct Answer {
    pub(crate) status: u16,
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) body: bytes::Bytes,
    pub(crate) queued: Duration,
    pub(crate) upstream: Duration,
    pub(crate) buckets: Vec<String>,
    /// The answer proves the exchange did not execute the request: a rate-limit
    /// answer or a ban (see [`not_executed`]). Its idempotency key is then free
    /// for a retry instead of replaying the refusal.
    pub(crate) not_executed: bool,
}

/// Whether an answer proves the request was refused before the exchange acted on
/// it: 429/418, Bybit's 403 ban and retCode 10006/10018, OKX 50011/50061, Binance
/// -1003/-1015. Exactly the answers the feedback parser reads as throttled or banned.
pub(crate) fn not_executed(observations: &[Observation]) -> bool {
    observations.iter().any(|o| matches!(o, Observation::Throttled { .. } | Observation::Banned { .. }))
}

/// Why a call got no answer, and whether it may have reached the exchange.
#[derive(Debug)]
pub(crate) enum Failure {
    NotSent(Status),
    Unknown(Status),
}

impl Failure {
    pub(crate) fn into_status(self) -> Status {
        match self {
            Failure::NotSent(s) | Failure::Unknown(s) => s,
        }
    }
}

/// A granted token.
#[derive(Debug)]
pub(crate) struct Granted {
    pub(crate) use_within: Duration,
    pub(crate) queued: Duration,
    pub(crate) bucket: String,
}

/// A bucket as status and metrics see it.
#[derive(Debug, Clone)]
pub(crate) struct BucketView {
    pub(crate) key: BucketKey,
    pub(crate) status: BucketStatus,
    pub(crate) queued: usize,
}

pub(crate) type CallReply = oneshot::Sender<Result<Answer, Failure>>;

/// A call or token another replica (or this one) asks the owner to admit.
#[derive(Debug)]
pub(crate) struct Reservation {
    pub(crate) grant_id: String,
    pub(crate) class: sluice_rate::scheduler::Class,
    pub(crate) deadline: Time,
    pub(crate) needs: Vec<(BucketKey, u64)>,
    /// `None`: held until settled (an HTTP call); else a token held this long.
    pub(crate) hold: Option<Duration>,
    pub(crate) route: String,
    /// An unsettled call counts as answered (unknown) at admission plus this.
    pub(crate) settle_within: Duration,
}

/// One entry of an exchange's ledger, as every replica applies it.
#[derive(Debug)]
pub(crate) enum LedgerEvent {
    /// A granted request is about to leave for the exchange.
    Sending { grant_id: String, admitted: Time, charges: Vec<(BucketKey, u64)>, bound: Time, held_until: Option<Time> },
    /// How it ended.
    Settled { grant_id: String, outcome: Outcome, admitted_at: Time, route: String },
}

pub(crate) type ReserveReply = oneshot::Sender<Result<Time, Status>>;

pub(crate) enum Command {
    Call {
        call: Box<PreparedCall>,
        reply: CallReply,
    },
    Grant {
        grant: Box<PreparedGrant>,
        reply: oneshot::Sender<Result<Granted, Status>>,
    },
    Status {
        reply: oneshot::Sender<Vec<BucketView>>,
    },
    Reserve {
        res: Box<Reservation>,
        reply: ReserveReply,
    },
    Ledger(Box<LedgerEvent>),
    /// The share of every limit this replica may admit.
    Share(Share),
    /// Admit nothing before `until` plus, when `per_window`, each bucket's longest window.
    Pause {
        until: Time,
        per_window: bool,
    },
    /// Admit nothing at or after this time (ownership lease);
    /// what waits then is refused as UNAVAILABLE so its caller asks again.
    AdmitUntil(Time),
    /// A replica is gone (proven dead) by `dead_by`: the requests it was granted
    /// (grant ids starting with `sender`) were sent, if at all, before then and
    /// before their use-by time, and reach the exchange within `upstream` of it.
    Gone {
        sender: String,
        dead_by: Time,
        use_within: Duration,
        upstream: Duration,
    },
    /// The ledger copy holds everything since this time (it subscribed or rejoined;
    /// `Time::MAX` while cut off from NATS, when the others' admissions go unseen):
    /// answers about earlier windows are not learnt from.
    LogSince(Time),
}

/// How a sent call ended, reported by its send task.
#[derive(Debug)]
pub(crate) enum Outcome {
    /// The exchange answered at `at`.
    Answered { at: Time, observations: Vec<Observation> },
    /// It never left: give the budget back.
    NotSent,
    /// It may have reached the exchange; no answer came.
    Unknown { at: Time },
}

pub(crate) struct Done {
    pub(crate) ticket: Ticket,
    pub(crate) outcome: Outcome,
}

/// What the shard remembers of a call it sent, until its send task reports.
struct Sent {
    admitted_at: Time,
    route: String,
    ids: Vec<BucketId>,
}

enum JobKind {
    Call { call: Box<PreparedCall>, reply: CallReply },
    Grant { grant: Box<PreparedGrant>, reply: oneshot::Sender<Result<Granted, Status>> },
    Reserve { res: Box<Reservation>, reply: ReserveReply },
}

/// A reservation this shard admitted, until its sender reports how it ended.
struct Issued {
    /// `None` for tokens, which are held for a fixed time and never settled.
    ticket: Option<Ticket>,
    admitted_at: Time,
    route: String,
    ids: Vec<BucketId>,
    /// Settled as unknown at this time if no report came.
    expires: Time,
}

/// An answer, as the buckets it charged apply it.
struct Answered<'a> {
    ids: &'a [BucketId],
    /// The request's id in the buckets (its ticket, or the copied entry's id).
    entry: u64,
    route: &'a str,
    admitted_at: Time,
    at: Time,
}

/// A ledger entry admitted by another replica, copied into this shard's buckets.
struct Copied {
    entry: u64,
    admitted: Time,
    ids: Vec<BucketId>,
    bound: Time,
    open: bool,
}

/// Ids of copied entries live between scheduler tickets and phantom entries.
const COPIED_ID_BASE: u64 = 1 << 62;

struct Job {
    kind: JobKind,
    ids: Vec<BucketId>,
}

impl Job {
    fn alive(&self) -> bool {
        match &self.kind {
            JobKind::Call { reply, .. } => !reply.is_closed(),
            JobKind::Grant { reply, .. } => !reply.is_closed(),
            JobKind::Reserve { reply, .. } => !reply.is_closed(),
        }
    }

    fn fail(self, status: Status) {
        match self.kind {
            JobKind::Call { reply, .. } => {
                let _ = reply.send(Err(Failure::NotSent(status)));
            }
            JobKind::Grant { reply, .. } => {
                let _ = reply.send(Err(status));
            }
            JobKind::Reserve { reply, .. } => {
                let _ = reply.send(Err(status));
            }
        }
    }
}

/// The sending side of a shard.
#[derive(Clone)]
pub(crate) struct ShardHandle {
    tx: mpsc::Sender<Command>,
}

/// Why a command could not be handed to a shard.
pub(crate) enum Unsent {
    /// The shard's command channel is full.
    Saturated,
    /// The shard has stopped (the dispatcher is shutting down).
    Stopped,
}

impl ShardHandle {
    /// Hands a command to the shard without waiting.
    pub(crate) fn try_send(&self, cmd: Command) -> Result<(), Unsent> {
        self.tx.try_send(cmd).map_err(|e| match e {
            mpsc::error::TrySendError::Full(_) => Unsent::Saturated,
            mpsc::error::TrySendError::Closed(_) => Unsent::Stopped,
        })
    }

    /// Hands a command to the shard, waiting for room (cluster bookkeeping that
    /// must not be dropped).
    pub(crate) async fn send(&self, cmd: Command) {
        let _ = self.tx.send(cmd).await;
    }

    pub(crate) async fn status(&self) -> Option<Vec<BucketView>> {
        let (reply, rx) = oneshot::channel();
        self.tx.send(Command::Status { reply }).await.ok()?;
        rx.await.ok()
    }
}

struct Shard {
    exchange: Exchange,
    policy: Arc<ExchangePolicy>,
    sched: Scheduler<Job>,
    ids: HashMap<BucketKey, BucketId>,
    keys: HashMap<BucketId, BucketKey>,
    last_used: HashMap<BucketId, Time>,
    /// Bans by scope, applied to buckets created while they last.
    bans: HashMap<(Scope, String), Time>,
    /// Calls handed to send tasks and not yet reported back.
    sent: HashMap<Ticket, Sent>,
    upstream: Arc<Upstream>,
    clock: MonotonicClock,
    metrics: Arc<Metrics>,
    done_tx: mpsc::Sender<Done>,
    next_wake: Option<Time>,
    idle_bucket: Duration,
    warned: HashSet<(String, String)>,
    issued: HashMap<String, Issued>,
    copied: HashMap<String, Copied>,
    /// Attempts their asker abandoned before a grant came: given back if admitted later.
    cancelled: HashMap<String, Time>,
    /// Grant-id prefixes of replicas proven gone, until when they are remembered:
    /// what they still wait for is never admitted.
    gone: HashMap<String, Time>,
    next_copied: u64,
    /// What the cluster imposes on every bucket, those created later included.
    imposed: Imposed,
    /// Replicas' clocks may differ this much (0 on a single dispatcher): ledger
    /// copies carry other replicas' times.
    clock_skew: Duration,
    admit_until: Time,
}

/// Limits the cluster puts on every bucket of the shard (see `Command`).
#[derive(Debug, Clone)]
struct Imposed {
    share: Share,
    paused_until: Time,
    /// Each bucket is paused until this plus its longest window.
    paused_window_base: Time,
    log_since: Time,
}

impl Imposed {
    fn apply(&self, b: &mut sluice_rate::bucket::Bucket) {
        b.set_share(self.share.clone());
        b.set_log_since(self.log_since);
        b.pause_until(self.paused_until.max(self.paused_window_base + b.longest_period()));
    }
}

/// Starts the shard of one exchange; it runs until `stop` (which the dispatcher
/// fires only after the gRPC server has drained, so queued calls still go out).
#[allow(clippy::too_many_arguments)]
pub(crate) fn spawn(
    policy: Arc<ExchangePolicy>,
    spec: SchedulerSpec,
    upstream: Arc<Upstream>,
    clock: MonotonicClock,
    metrics: Arc<Metrics>,
    idle_bucket: Duration,
    admit_until: Time,
    clock_skew: Duration,
    stop: CancellationToken,
) -> ShardHandle {
    // Commands are small; the scheduler's own capacity bounds what waits.
    let (tx, rx) = mpsc::channel(4096);
    let (done_tx, done_rx) = mpsc::channel(4096);
    let shard = Shard {
        exchange: policy.exchange,
        policy,
        sched: Scheduler::new(spec),
        ids: HashMap::new(),
        keys: HashMap::new(),
        last_used: HashMap::new(),
        bans: HashMap::new(),
        sent: HashMap::new(),
        upstream,
        clock,
        metrics,
        done_tx,
        next_wake: None,
        idle_bucket,
        warned: HashSet::new(),
        issued: HashMap::new(),
        copied: HashMap::new(),
        cancelled: HashMap::new(),
        gone: HashMap::new(),
        next_copied: COPIED_ID_BASE,
        imposed: Imposed { share: Share::Whole, paused_until: Time::ZERO, paused_window_base: Time::ZERO, log_since: Time::ZERO },
        clock_skew,
        admit_until,
    };
    tokio::spawn(shard.run(rx, done_rx, stop));
    ShardHandle { tx }
}

fn ms(d: Duration) -> u128 {
    d.as_millis()
}

impl Shard {
    async fn run(mut self, mut rx: mpsc::Receiver<Command>, mut done_rx: mpsc::Receiver<Done>, stop: CancellationToken) {
        let mut tick = tokio::time::interval(Duration::from_millis(250));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            let wake = self.next_wake.map(|t| tokio::time::Instant::from_std(self.clock.instant_at(t)));
            tokio::select! {
                biased;
                _ = stop.cancelled() => break,
                Some(done) = done_rx.recv() => self.on_done(done),
                cmd = rx.recv() => match cmd {
                    Some(c) => self.on_command(c),
                    None => break,
                },
                _ = tokio::time::sleep_until(wake.unwrap_or_else(tokio::time::Instant::now)), if wake.is_some() => {}
                _ = tick.tick() => self.housekeeping(),
            }
            self.pump();
        }
        // Whatever still waits will not be sent: say so.
        let poll = self.sched.poll(Time::MAX, |_| false);
        for (job, _) in poll.dropped {
            job.fail(Status::unavailable("the dispatcher is shutting down; the call was not sent"));
        }
    }

    fn bucket_for(&mut self, key: &BucketKey) -> Result<BucketId, Status> {
        if let Some(id) = self.ids.get(key) {
            return Ok(*id);
        }
        let spec = self.policy.bucket_spec(&key.group).ok_or_else(|| Status::internal(format!("no policy for group {}", key.group)))?;
        let id = self.sched.add_bucket(spec).map_err(|e| Status::internal(format!("group {}: {e}", key.group)))?;
        let now = self.clock.now();
        self.bans.retain(|_, until| *until > now);
        if let Some(until) = self.bans.get(&(key.scope, key.scope_key.clone()))
            && let Some(b) = self.sched.bucket_mut(id)
        {
            b.on_banned(*until);
        }
        if let Some(b) = self.sched.bucket_mut(id) {
            self.imposed.apply(b);
            b.set_clock_skew(self.clock_skew);
        }
        self.ids.insert(key.clone(), id);
        self.keys.insert(id, key.clone());
        Ok(id)
    }

    fn on_command(&mut self, cmd: Command) {
        let now = self.clock.now();
        let (class, deadline, needs, hold, kind) = match cmd {
            Command::Status { reply } => {
                let _ = reply.send(self.views());
                return;
            }
            Command::Call { call, reply } => {
                (call.class, call.deadline, call.needs.clone(), Hold::UntilSettled, JobKind::Call { call, reply })
            }
            Command::Grant { grant, reply } => {
                (grant.class, grant.deadline, vec![grant.need.clone()], Hold::For(grant.hold), JobKind::Grant { grant, reply })
            }
            Command::Reserve { res, reply } => {
                let hold = res.hold.map_or(Hold::UntilSettled, Hold::For);
                (res.class, res.deadline, res.needs.clone(), hold, JobKind::Reserve { res, reply })
            }
            Command::Ledger(event) => return self.on_ledger(*event, now),
            Command::Share(share) => return self.impose(|i| i.share = share),
            Command::Pause { until, per_window: false } => return self.impose(|i| i.paused_until = i.paused_until.max(until)),
            Command::Pause { until, per_window: true } => {
                return self.impose(|i| i.paused_window_base = i.paused_window_base.max(until));
            }
            Command::AdmitUntil(t) => {
                self.admit_until = t;
                return;
            }
            Command::LogSince(t) => return self.impose(|i| i.log_since = t),
            Command::Gone { sender, dead_by, use_within, upstream } => return self.gone(&sender, dead_by, use_within, upstream, now),
        };
        let mut ids = Vec::with_capacity(needs.len());
        let mut sched_needs = Vec::with_capacity(needs.len());
        for (key, cost) in &needs {
            match self.bucket_for(key) {
                Ok(id) => {
                    ids.push(id);
                    sched_needs.push(Need { bucket: id, cost: *cost });
                }
                Err(s) => return Job { kind, ids }.fail(s),
            }
        }
        let job = Job { kind, ids };
        if let Err((refusal, job)) = self.sched.enqueue(now, Request { class, deadline, needs: sched_needs, hold, payload: job }) {
            let (reason, status) = self.refusal_status(&refusal, now, deadline);
            self.metrics.reject(self.exchange.as_str(), reason);
            job.fail(status);
        }
    }

    /// Changes what the cluster imposes and applies it to every bucket.
    fn impose(&mut self, change: impl FnOnce(&mut Imposed)) {
        change(&mut self.imposed);
        let ids: Vec<BucketId> = self.sched.bucket_ids().collect();
        for id in ids {
            if let Some(b) = self.sched.bucket_mut(id) {
                self.imposed.apply(b);
            }
        }
    }

    fn key_name(&self, id: BucketId) -> String {
        self.keys.get(&id).map_or_else(|| format!("{id:?}"), ToString::to_string)
    }

    fn refusal_status(&self, r: &Refusal, now: Time, deadline: Time) -> (&'static str, Status) {
        match r {
            Refusal::QueueFull { capacity } => (
                "queue_full",
                Status::resource_exhausted(format!("the {} queue is full ({capacity} calls waiting); retry later", self.exchange)),
            ),
            Refusal::CostAboveLimit { bucket, cost, limit } => (
                "cost_above_limit",
                Status::invalid_argument(format!(
                    "this call costs {cost} on {}, above its limit {limit}: it can never be sent",
                    self.key_name(*bucket)
                )),
            ),
            Refusal::DeadlinePassed => ("deadline", Status::deadline_exceeded("the deadline passed before the call was queued; not sent")),
            Refusal::DeadlineUnreachable { bucket, earliest } => (
                "deadline",
                Status::deadline_exceeded(format!(
                    "{} frees budget in {} ms, after the deadline in {} ms; not sent",
                    self.key_name(*bucket),
                    ms(earliest.saturating_since(now)),
                    ms(deadline.saturating_since(now))
                )),
            ),
            Refusal::UnknownBucket(b) => ("internal", Status::internal(format!("unknown bucket {b:?}"))),
        }
    }

    /// Admits what may go, fails what cannot go in time, sets the next wake-up.
    fn pump(&mut self) {
        let now = self.clock.now();
        if now >= self.admit_until {
            // Not (or no longer) allowed to admit here: whoever waits asks again,
            // at the owner or after this replica rejoins.
            for (job, _) in self.sched.poll(Time::MAX, |_| false).dropped {
                self.metrics.reject(self.exchange.as_str(), "not_owner");
                job.fail(Status::unavailable("this replica does not decide these budgets now; not sent"));
            }
            self.next_wake = None;
            return;
        }
        let poll = self.sched.poll(now, Job::alive);
        for a in poll.admitted {
            self.start(a);
        }
        for (job, why) in poll.dropped {
            let names: Vec<String> = job.ids.iter().map(|id| self.key_name(*id)).collect();
            let (reason, status) = match why {
                Dropped::Abandoned => continue,
                Dropped::DeadlineExceeded => {
                    ("deadline", Status::deadline_exceeded(format!("the deadline came while waiting for {}; not sent", names.join(", "))))
                }
                Dropped::DeadlineUnreachable { earliest } => (
                    "deadline",
                    Status::deadline_exceeded(format!(
                        "{} frees budget only in {} ms, after the deadline; not sent",
                        names.join(", "),
                        ms(earliest.saturating_since(now))
                    )),
                ),
                Dropped::CostAboveLimit { bucket, cost, limit } => (
                    "cost_above_limit",
                    Status::invalid_argument(format!(
                        "{} now allows at most {limit}, below this call's cost {cost}; not sent",
                        self.key_name(bucket)
                    )),
                ),
            };
            self.metrics.reject(self.exchange.as_str(), reason);
            job.fail(status);
        }
        self.next_wake = match poll.next_wake {
            Some(t) => Some(t.min(self.admit_until)),
            None if self.sched.is_empty() => None,
            None => Some(self.admit_until),
        };
    }

    fn start(&mut self, a: Admitted<Job>) {
        let queued = a.admitted_at.saturating_since(a.enqueued_at);
        self.metrics
            .queue_wait
            .get_or_create(&ClassLabels { exchange: self.exchange.to_string(), class: a.class.as_str().to_owned() })
            .observe(queued.as_secs_f64());
        for id in &a.payload.ids {
            self.last_used.insert(*id, a.admitted_at);
        }
        let buckets: Vec<String> = a.payload.ids.iter().map(|id| self.key_name(*id)).collect();
        match a.payload.kind {
            JobKind::Grant { grant, reply } => {
                let _ = reply.send(Ok(Granted { use_within: grant.use_within, queued, bucket: buckets.join(",") }));
            }
            JobKind::Call { call, reply } => {
                self.sent.insert(a.ticket, Sent { admitted_at: a.admitted_at, route: call.route.clone(), ids: a.payload.ids });
                tokio::spawn(self.upstream.clone().send(call, reply, a.ticket, queued, buckets, self.done_tx.clone()));
            }
            JobKind::Reserve { res, reply } => {
                let (ticket, expires) = match res.hold {
                    None => (Some(a.ticket), a.admitted_at + res.settle_within),
                    Some(hold) => (None, a.admitted_at + hold),
                };
                let gone = self.gone.keys().any(|p| res.grant_id.starts_with(p.as_str()));
                if gone || self.cancelled.remove(&res.grant_id).is_some() || reply.send(Ok(a.admitted_at)).is_err() {
                    // The asker left before hearing of it: nothing will be sent.
                    if ticket.is_some() {
                        self.sched.release(a.ticket);
                    }
                    return;
                }
                let issued = Issued { ticket, admitted_at: a.admitted_at, route: res.route, ids: a.payload.ids, expires };
                self.issued.insert(res.grant_id, issued);
            }
        }
    }

    /// Applies a ledger entry: a request this shard admitted is settled, and one
    /// admitted elsewhere is copied into the buckets (so whoever owns the exchange
    /// next starts from it).
    fn on_ledger(&mut self, event: LedgerEvent, now: Time) {
        match event {
            LedgerEvent::Sending { grant_id, admitted, charges, bound, held_until } => {
                if self.issued.contains_key(&grant_id) || self.copied.contains_key(&grant_id) {
                    return;
                }
                let entry = self.next_copied;
                self.next_copied += 1;
                let mut ids = Vec::with_capacity(charges.len());
                for (key, cost) in &charges {
                    let Ok(id) = self.bucket_for(key) else { continue };
                    if let Some(b) = self.sched.bucket_mut(id) {
                        // Logged at its real admission, so answers are read against
                        // the exchange's window as it was.
                        b.charge_admitted(now, admitted.min(now), entry, *cost, held_until.unwrap_or(Time::MAX));
                    }
                    self.last_used.insert(id, now);
                    ids.push(id);
                }
                self.copied.insert(grant_id, Copied { entry, admitted, ids, bound, open: held_until.is_none() });
            }
            LedgerEvent::Settled { grant_id, outcome, admitted_at, route } => {
                if let Some(issued) = self.issued.remove(&grant_id) {
                    let Some(ticket) = issued.ticket else { return };
                    self.sent.insert(ticket, Sent { admitted_at: issued.admitted_at, route: issued.route, ids: issued.ids });
                    self.on_done(Done { ticket, outcome });
                } else if matches!(outcome, Outcome::NotSent) && !self.copied.contains_key(&grant_id) {
                    // An abandoned attempt, perhaps still waiting here.
                    self.cancelled.insert(grant_id, now + Duration::from_secs(60));
                } else if let Some(c) = self.copied.remove(&grant_id) {
                    let lost_hold = self.sched.spec().lost_hold;
                    match outcome {
                        Outcome::Answered { at, observations } => {
                            self.settle_copied(&c, now, Some(at));
                            // The same feedback the sender's owner applies, so copies agree.
                            let answer = Answered { ids: &c.ids, entry: c.entry, route: &route, admitted_at, at };
                            self.apply_all(&answer, now, observations);
                        }
                        Outcome::Unknown { at } => self.settle_copied(&c, now, Some(at + lost_hold)),
                        Outcome::NotSent => self.settle_copied(&c, now, None),
                    }
                }
            }
        }
    }

    fn settle_copied(&mut self, c: &Copied, now: Time, held_until: Option<Time>) {
        if !c.open {
            return;
        }
        for id in &c.ids {
            if let Some(b) = self.sched.bucket_mut(*id) {
                match held_until {
                    Some(t) => b.settle(now, c.entry, t),
                    None => b.release(c.entry),
                }
            }
        }
    }

    /// Settles what a dead replica was granted or announced: it can have arrived
    /// no later than its last possible send plus the upstream timeout.
    fn gone(&mut self, sender: &str, dead_by: Time, use_within: Duration, upstream: Duration, now: Time) {
        self.gone.insert(sender.to_owned(), now + Duration::from_secs(300));
        let mine: Vec<String> = self.issued.keys().filter(|g| g.starts_with(sender)).cloned().collect();
        for g in mine {
            if let Some(i) = self.issued.remove(&g)
                && let Some(ticket) = i.ticket
            {
                self.sched.settle(now, ticket, dead_by.min(i.admitted_at + use_within) + upstream);
            }
        }
        let copies: Vec<String> = self.copied.keys().filter(|g| g.starts_with(sender)).cloned().collect();
        for g in copies {
            if let Some(c) = self.copied.remove(&g) {
                self.settle_copied(&c, now, Some(dead_by.min(c.admitted + use_within) + upstream));
            }
        }
    }

    /// Requests whose sender never reported: counted as unknown outcomes.
    fn expire_unsettled(&mut self, now: Time) {
        self.cancelled.retain(|_, until| *until > now);
        self.gone.retain(|_, until| *until > now);
        let lost_hold = self.sched.spec().lost_hold;
        let late: Vec<String> = self.issued.iter().filter(|(_, i)| i.expires <= now).map(|(g, _)| g.clone()).collect();
        for g in late {
            if let Some(i) = self.issued.remove(&g)
                && let Some(ticket) = i.ticket
            {
                tracing::warn!(exchange = %self.exchange, grant = %g, "no report for a granted call; counting it as an unknown outcome");
                self.sched.settle_unknown(now, ticket, i.expires);
            }
        }
        let late: Vec<String> = self.copied.iter().filter(|(_, c)| c.bound <= now).map(|(g, _)| g.clone()).collect();
        for g in late {
            if let Some(c) = self.copied.remove(&g) {
                let bound = c.bound;
                self.settle_copied(&c, now, Some(bound + lost_hold));
            }
        }
    }

    fn on_done(&mut self, d: Done) {
        let now = self.clock.now();
        let Some(sent) = self.sent.remove(&d.ticket) else { return };
        match d.outcome {
            Outcome::NotSent => self.sched.release(d.ticket),
            Outcome::Unknown { at } => self.sched.settle_unknown(now, d.ticket, at),
            Outcome::Answered { at, observations } => {
                self.sched.settle(now, d.ticket, at);
                let answer = Answered { ids: &sent.ids, entry: d.ticket.id(), route: &sent.route, admitted_at: sent.admitted_at, at };
                self.apply_all(&answer, now, observations);
            }
        }
    }

    /// The request's buckets of `scope` (all of them when the answer names none, or
    /// when none of its buckets has that scope).
    fn targets(&self, needs: &[BucketId], scope: Option<Scope>) -> Vec<BucketId> {
        let matching: Vec<BucketId> =
            needs.iter().copied().filter(|id| scope.is_none_or(|s| self.keys.get(id).is_some_and(|k| k.scope == s))).collect();
        if matching.is_empty() { needs.to_vec() } else { matching }
    }

    fn labels(key: &BucketKey) -> BucketLabels {
        BucketLabels {
            exchange: key.exchange.to_string(),
            scope: key.scope.as_str().to_owned(),
            key: key.scope_key.clone(),
            group: key.group.clone(),
        }
    }

    /// Applies everything an answer said to the buckets it charged; an answer that
    /// was not a refusal also tells them the exchange accepted the request.
    fn apply_all(&mut self, a: &Answered<'_>, now: Time, observations: Vec<Observation>) {
        let accepted = !not_executed(&observations);
        // The exchange's own counts in this answer: on a refusal they are the evidence.
        let counts: Vec<(Option<Scope>, Duration, u64)> = observations
            .iter()
            .filter_map(|o| match o {
                Observation::Usage { scope, period, used, remaining, limit, .. } => {
                    Some((*scope, *period, used.or_else(|| Some(limit.as_ref()?.saturating_sub(*remaining.as_ref()?)))?))
                }
                _ => None,
            })
            .collect();
        for obs in observations {
            self.apply(a, now, obs, accepted, &counts);
        }
        if accepted {
            for id in a.ids {
                if let Some(b) = self.sched.bucket_mut(*id) {
                    b.on_accepted(now, a.entry);
                }
            }
        }
    }

    /// Logs a learned limit: the operator should fix the policy file.
    fn learned(&self, key: &BucketKey, route: &str, change: &sluice_rate::adaptive::Change) {
        tracing::warn!(bucket = %key, %route, window_ms = change.period.as_millis() as u64, policy = change.configured,
            from = change.from, exchange_allows = change.to, evidence = change.evidence, source = change.source.as_str(),
            "the exchange allows less than the policy says: learned a lower limit (fix the policy file if it stays)");
    }

    fn apply(&mut self, a: &Answered<'_>, now: Time, obs: Observation, accepted: bool, counts: &[(Option<Scope>, Duration, u64)]) {
        let (needs, route, admitted_at, at) = (a.ids, a.route, a.admitted_at, a.at);
        match obs {
            Observation::Usage { scope, period, used, remaining, limit, group } => {
                for id in self.targets(needs, scope) {
                    let Some(key) = self.keys.get(&id).cloned() else { continue };
                    if let Some(g) = &group
                        && *g != key.group
                        && self.warned.insert((route.to_owned(), g.clone()))
                    {
                        tracing::warn!(exchange = %self.exchange, %route, exchange_group = %g, policy_group = %key.group,
                                "the exchange counts this route in another group than the policy says; fix the route table");
                    }
                    let Some(b) = self.sched.bucket_mut(id) else { continue };
                    let usage = Usage { used, remaining, limit };
                    if let Some(Some(change)) = b.observe_usage(now, at, a.entry, admitted_at, period, usage, accepted) {
                        self.learned(&key, route, &change);
                    }
                }
            }
            Observation::Throttled { scope, retry_after } => {
                let resume = at + retry_after.unwrap_or(self.policy.throttle_pause);
                for id in self.targets(needs, scope) {
                    let Some(key) = self.keys.get(&id).cloned() else { continue };
                    let own: Vec<(Duration, u64)> =
                        counts.iter().filter(|(s, _, _)| s.is_none_or(|s| s == key.scope)).map(|(_, p, u)| (*p, *u)).collect();
                    let change = self.sched.bucket_mut(id).and_then(|b| b.on_throttled(now, a.entry, admitted_at, resume, &own));
                    self.metrics.throttled.get_or_create(&Self::labels(&key)).inc();
                    tracing::warn!(bucket = %key, %route, retry_after_ms = retry_after.map(|d| d.as_millis() as u64),
                        "exchange answered with a rate-limit error");
                    if let Some(change) = change {
                        self.learned(&key, route, &change);
                    }
                }
            }
            Observation::Banned { scope, duration } => {
                let until = at + duration.unwrap_or(self.policy.ban_default);
                let scopes: HashSet<(Scope, String)> =
                    self.targets(needs, scope).iter().filter_map(|id| self.keys.get(id)).map(|k| (k.scope, k.scope_key.clone())).collect();
                for s in scopes {
                    let frozen: Vec<BucketId> =
                        self.keys.iter().filter(|(_, k)| k.scope == s.0 && k.scope_key == s.1).map(|(id, _)| *id).collect();
                    for id in frozen {
                        if let Some(b) = self.sched.bucket_mut(id) {
                            b.on_banned(until);
                        }
                    }
                    tracing::error!(exchange = %self.exchange, scope = s.0.as_str(), key = %s.1, %route, ban_ms = until.saturating_since(now).as_millis() as u64,
                        "exchange banned this scope; nothing goes to it until the ban ends");
                    self.metrics
                        .bans
                        .get_or_create(&BucketLabels {
                            exchange: self.exchange.to_string(),
                            scope: s.0.as_str().to_owned(),
                            key: s.1.clone(),
                            group: "*".into(),
                        })
                        .inc();
                    let entry = self.bans.entry(s).or_insert(until);
                    *entry = (*entry).max(until);
                }
            }
        }
    }

    fn views(&mut self) -> Vec<BucketView> {
        let now = self.clock.now();
        self.sched
            .status(now)
            .into_iter()
            .filter_map(|(id, status, queued)| self.keys.get(&id).map(|key| BucketView { key: key.clone(), status, queued }))
            .collect()
    }

    /// Publishes metrics and drops idle per-connection buckets.
    fn housekeeping(&mut self) {
        let now = self.clock.now();
        self.expire_unsettled(now);
        let views = self.views();
        let ex = self.exchange.to_string();
        // Per-connection budgets come and go with sockets: as metric labels they
        // would pile up forever, so they are left out (GetBudgets still shows them).
        for v in views.iter().filter(|v| v.key.scope != Scope::Connection) {
            let bl = Self::labels(&v.key);
            for w in &v.status.windows {
                let wl = WindowLabels { bucket: bl.clone(), window_ms: w.period.as_millis() as u64 };
                self.metrics.window_used.get_or_create(&wl).set(w.used as i64);
                self.metrics.window_limit.get_or_create(&wl).set(w.limit as i64);
                self.metrics.window_configured.get_or_create(&wl).set(w.configured as i64);
                self.metrics.window_learned.get_or_create(&wl).set(w.learned.unwrap_or(0) as i64);
                self.metrics.window_usage_ratio.get_or_create(&wl).set(w.used as f64 / w.limit.max(1) as f64);
            }
            self.metrics.rate_factor.get_or_create(&bl).set(v.status.rate_factor);
            // At zero until the first one, so `increase()` over them is defined.
            let _ = self.metrics.throttled.get_or_create(&bl);
            let _ = self.metrics.bans.get_or_create(&bl);
            self.metrics.frozen.get_or_create(&bl).set(i64::from(v.status.frozen_until.is_some()));
        }
        let el = ExchangeLabels { exchange: ex };
        self.metrics.queue_depth.get_or_create(&el).set(self.sched.len() as i64);
        self.metrics.in_flight.get_or_create(&el).set(self.sched.in_flight() as i64);
        let idle: Vec<BucketId> = views
            .iter()
            .filter(|v| {
                v.key.scope == Scope::Connection && v.queued == 0 && v.status.in_flight == 0 && v.status.windows.iter().all(|w| w.used == 0)
            })
            .filter_map(|v| self.ids.get(&v.key).copied())
            .filter(|id| self.last_used.get(id).is_none_or(|t| now.saturating_since(*t) > self.idle_bucket))
            .collect();
        for id in idle {
            if self.sched.remove_bucket(id) {
                if let Some(key) = self.keys.remove(&id) {
                    self.ids.remove(&key);
                }
                self.last_used.remove(&id);
            }
        }
    }
}
