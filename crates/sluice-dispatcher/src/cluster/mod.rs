//! Dispatcher replicas on one NATS: one budget per bucket whichever replica takes
//! the call, and losing a replica costs neither a stall nor a burst.
//!
//! * Each exchange has one owner, the replica holding its lease in the JetStream
//!   key-value bucket `<prefix>_owners`. Only the owner's shard admits; any other
//!   replica asks it for a grant over NATS request/reply, then sends the call
//!   itself (from its own egress address, so IP budgets stay per address).
//! * Every replica applies every ledger entry (`Sending`, `Settled`) to its own
//!   shard, so each holds a copy of every exchange's ledger. A sender publishes
//!   `Sending` and waits until NATS has it before the request leaves; a new owner
//!   therefore starts from a ledger holding everything that may have been sent.
//! * NATS unreachable: the replica admits on its own from `1/N` of each budget
//!   after a pause sized to what others may still have in flight, and stops in
//!   time for the others to forget it. Owners keep the shares of absent or
//!   recovering replicas back. ARCHITECTURE.md gives the argument.
//! * Idempotency keys live in `<prefix>_idempotency`, so a retry on another
//!   replica is never sent twice.

mod idem;
mod leases;
mod liveness;
mod members;
mod wire;

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_nats::jetstream::{self, kv};
use futures::StreamExt;
use prost::Message;
use sluice_domain::Exchange;
use sluice_proto::cluster::v1 as pb;
use sluice_rate::bucket::Share;
use sluice_rate::{Clock, MonotonicClock, Time};
use tokio::sync::{oneshot, watch};
use tokio_util::sync::CancellationToken;
use tonic::Status;

pub(crate) use idem::{Claim, Claimed, Ending};
use members::{LeaseSeen, Members, Timing};

use crate::config::{ClusterConfig, DispatcherConfig};
use crate::metrics::Metrics;
use crate::request::{BucketKey, PreparedCall, PreparedGrant, egress_key};
use crate::shard::{Answer, Command, Failure, LedgerEvent, Outcome, Reservation, ShardHandle};
use crate::upstream::Upstream;

/// Why clustering could not start.
#[derive(Debug, thiserror::Error)]
pub enum ClusterError {
    #[error("cannot connect to NATS at {url}: {message}")]
    Connect { url: String, message: String },
    #[error("NATS JetStream: {0}")]
    JetStream(String),
}

/// What became of a call handed to the cluster.
pub(crate) enum Routed {
    /// Granted by the owner (or refused), sent from here, finished.
    Done(Result<Answer, Failure>),
    /// NATS is unreachable: admit it on this replica's own share.
    Local(Box<PreparedCall>),
}

/// How this replica decides an exchange's budgets right now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Route {
    /// It owns them.
    Owner,
    /// Another replica owns them.
    Follower(String),
    /// In contact with NATS, but nobody holds the lease yet.
    NoOwner,
    /// NATS is unreachable: admit locally from this replica's share.
    Fallback,
}

#[derive(Debug, Clone)]
struct Held {
    epoch: u64,
    expires: Time,
}

struct State {
    connected: bool,
    last_contact: Time,
    /// When the ledger subscription last started being continuous.
    subscribed_since: Time,
    fallback_since: Option<Time>,
    /// What it admitted alone in its last fallback may reach the exchange until then.
    fallback_clear: Time,
    /// When it last published a heartbeat (the others notice its absence from
    /// the last one they heard).
    hb_sent: Time,
    /// The fallback lease end and share count in the last heartbeat published,
    /// and in the last one NATS confirmed (the ones it keeps to).
    solo_said: Time,
    share_of_said: u64,
    solo_until: Time,
    share_of: u64,
    /// In fallback: it admits alone from this time (before each bucket's window)
    /// until `solo_admit_until`. `Time::MAX` while connected.
    solo_from: Time,
    solo_admit_until: Time,
    /// Shutdown has begun: never admit alone again.
    stopping: bool,
    members: Members,
    leases: BTreeMap<Exchange, LeaseSeen>,
    held: BTreeMap<Exchange, Held>,
    /// The share last sent to the shards.
    share: Share,
}

/// One replica's membership of the cluster.
pub(crate) struct Cluster {
    me: String,
    incarnation: String,
    cfg: ClusterConfig,
    client: async_nats::Client,
    owners: kv::Store,
    idem: kv::Store,
    shards: BTreeMap<Exchange, ShardHandle>,
    upstreams: BTreeMap<Exchange, Arc<Upstream>>,
    /// Longest window of any bucket: how long a reservation can matter after its time.
    longest_any: Duration,
    egress: Vec<String>,
    /// The gRPC address advertised to the others for death probes ("" if none).
    addr: String,
    state: Mutex<State>,
    /// Bumped at every change of route, so waiting calls look again.
    changed: watch::Sender<u64>,
    counter: AtomicU64,
    clock: MonotonicClock,
    metrics: Arc<Metrics>,
    upstream_timeout: Duration,
    health: tonic_health::server::HealthReporter,
}

fn ms(v: u64) -> Duration {
    Duration::from_millis(v)
}

impl Cluster {
    fn timing(&self) -> Timing {
        Timing { absent_after: ms(self.cfg.absent_after_ms), member_ttl: ms(self.cfg.member_ttl_ms), skew: self.skew() }
    }

    fn skew(&self) -> Duration {
        ms(self.cfg.clock_skew_ms)
    }

    fn use_within(&self) -> Duration {
        ms(self.cfg.grant_use_within_ms)
    }

    fn subject(&self, tail: &str) -> String {
        format!("{}.dispatch.{tail}", self.cfg.prefix)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// This replica's identity in idempotency records: name and incarnation.
    fn me_full(&self) -> String {
        format!("{}/{}", self.me, self.incarnation)
    }

    /// How `exchange`'s budgets are decided now.
    pub(crate) fn route(&self, exchange: Exchange) -> Route {
        let now = self.clock.now();
        let st = self.lock();
        if !st.connected {
            return Route::Fallback;
        }
        if st.held.get(&exchange).is_some_and(|h| now < h.expires) {
            return Route::Owner;
        }
        match st.leases.get(&exchange) {
            Some(l) if l.owner != self.me && now < l.expires + self.skew() => Route::Follower(l.owner.clone()),
            _ => Route::NoOwner,
        }
    }

    /// The replica deciding `exchange`'s budgets, for status ("" when unknown).
    pub(crate) fn owner_of(&self, exchange: Exchange) -> String {
        match self.route(exchange) {
            Route::Owner => self.me.clone(),
            Route::Follower(o) => o,
            Route::NoOwner => String::new(),
            Route::Fallback => format!("{} (fallback)", self.me),
        }
    }

    fn bump(&self) {
        self.changed.send_modify(|v| *v += 1);
    }

    async fn send_shard(&self, exchange: Exchange, cmd: Command) {
        if let Some(s) = self.shards.get(&exchange) {
            s.send(cmd).await;
        }
    }

    /// Status for GetCluster.
    pub(crate) fn status(&self) -> sluice_proto::dispatcher::v1::ClusterStatus {
        use sluice_proto::dispatcher::v1::{ClusterStatus, Member, Ownership};
        let now = self.clock.now();
        let d = |d: Duration| sluice_proto::prost_types::Duration { seconds: d.as_secs() as i64, nanos: d.subsec_nanos() as i32 };
        let st = self.lock();
        let t = self.timing();
        let mut members = vec![Member {
            replica: self.me.clone(),
            alive: true,
            last_seen: Some(d(Duration::ZERO)),
            fallback_clears_in: Some(d(st.fallback_clear.saturating_since(now))),
            egress: self.egress.clone(),
        }];
        for (name, m) in st.members.iter() {
            members.push(Member {
                replica: name.clone(),
                alive: st.members.alive(name, &m.said.incarnation, "", now, t),
                last_seen: Some(d(now.saturating_since(m.seen_at))),
                fallback_clears_in: Some(d(m.said.fallback_clear.saturating_since(now))),
                egress: m.said.egress.clone(),
            });
        }
        let owners = st
            .leases
            .iter()
            .map(|(ex, l)| Ownership {
                exchange: ex.to_string(),
                owner: l.owner.clone(),
                epoch: l.epoch,
                lease_left: Some(d(l.expires.saturating_since(now))),
            })
            .collect();
        ClusterStatus {
            replica: self.me.clone(),
            mode: if st.connected { "connected" } else { "fallback" }.into(),
            members,
            owners,
            fallback_share_of: st.members.count() as u32,
        }
    }
}

/// What a replica runs with, besides its configuration.
pub(crate) struct Parts {
    pub(crate) shards: BTreeMap<Exchange, ShardHandle>,
    pub(crate) upstreams: BTreeMap<Exchange, Arc<Upstream>>,
    /// The longest window of any bucket of any exchange.
    pub(crate) longest: Duration,
    /// The address the gRPC server is bound to.
    pub(crate) bound: std::net::SocketAddr,
    pub(crate) clock: MonotonicClock,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) health: tonic_health::server::HealthReporter,
    /// Fires when shutdown begins (before the gRPC server drains).
    pub(crate) shutdown: CancellationToken,
    /// Fires once the gRPC server has drained.
    pub(crate) stop: CancellationToken,
}

/// The address to advertise: configured, else the bound one if it names an interface.
fn advertised(cfg: &ClusterConfig, bound: std::net::SocketAddr) -> String {
    match &cfg.advertise {
        Some(a) => a.clone(),
        None if !bound.ip().is_unspecified() => bound.to_string(),
        None => String::new(),
    }
}

/// Connects, creates the key-value buckets, starts membership, leases, the ledger
/// and the grant service. Shards start admitting nothing until told.
pub(crate) async fn start(config: &DispatcherConfig, cfg: ClusterConfig, parts: Parts) -> Result<Arc<Cluster>, ClusterError> {
    let Parts { shards, upstreams, longest, bound, clock, metrics, health, shutdown, stop } = parts;
    let url = cfg.nats_url.clone();
    let client = cfg
        .nats_auth
        .options()
        .await
        .map_err(|e| ClusterError::Connect { url: url.clone(), message: e.to_string() })?
        .name(format!("sluice-dispatcher {}", config.replica))
        .connection_timeout(Duration::from_secs(2))
        .ping_interval(Duration::from_secs(2))
        // Reconnect quickly and forever: replicas fall back while NATS is away.
        .reconnect_delay_callback(|attempts| Duration::from_millis((attempts as u64 * 100).min(1_000)))
        .max_reconnects(None)
        .connect(url.as_str())
        .await
        .map_err(|e| ClusterError::Connect { url: url.clone(), message: e.to_string() })?;
    let js = jetstream::new(client.clone());
    let owners = js
        .create_key_value(kv::Config {
            bucket: format!("{}_owners", cfg.prefix),
            description: "sluice dispatcher: owner lease per exchange".into(),
            history: 1,
            // On disk, so a NATS restart keeps the epochs (and the bucket) in place.
            storage: jetstream::stream::StorageType::File,
            ..Default::default()
        })
        .await
        .map_err(|e| ClusterError::JetStream(format!("owners bucket: {e}")))?;
    let idem = js
        .create_key_value(kv::Config {
            bucket: format!("{}_idempotency", cfg.prefix),
            description: "sluice dispatcher: idempotency keys".into(),
            history: 1,
            max_age: Duration::from_millis(config.idempotency_ttl_ms),
            // Kept on disk: a NATS restart must not make a sent order sendable again.
            storage: jetstream::stream::StorageType::File,
            ..Default::default()
        })
        .await
        .map_err(|e| ClusterError::JetStream(format!("idempotency bucket: {e}")))?;

    let now = clock.now();
    let egress = Exchange::ALL.iter().map(|ex| format!("{ex}={}", egress_key(config, *ex))).collect();
    let addr = advertised(&cfg, bound);
    if addr.is_empty() && cfg.probe_peers {
        tracing::warn!(
            "no address to advertise (listening on {bound}; set cluster.advertise or SLUICE_DISPATCHER_ADVERTISE): the others cannot \
             tell this replica dead from cut off, and keep its share back for its fallback lease"
        );
    }
    let (changed, _) = watch::channel(0);
    let cluster = Arc::new(Cluster {
        me: config.replica.clone(),
        incarnation: uuid::Uuid::new_v4().simple().to_string()[..12].to_owned(),
        cfg,
        client,
        owners,
        idem,
        shards,
        upstreams,
        longest_any: longest,
        egress,
        addr,
        state: Mutex::new(State {
            connected: true,
            last_contact: now,
            subscribed_since: now,
            fallback_since: None,
            fallback_clear: Time::ZERO,
            hb_sent: now,
            solo_said: Time::ZERO,
            share_of_said: 1,
            solo_until: Time::ZERO,
            share_of: 1,
            solo_from: Time::MAX,
            solo_admit_until: Time::ZERO,
            stopping: false,
            members: Members::new(&config.replica, now),
            leases: BTreeMap::new(),
            held: BTreeMap::new(),
            share: Share::Whole,
        }),
        changed,
        counter: AtomicU64::new(0),
        clock,
        metrics,
        upstream_timeout: Duration::from_millis(config.upstream_timeout_ms),
        health,
    });
    let subscribe = |subject: String| {
        let client = cluster.client.clone();
        async move { client.subscribe(subject.clone()).await.map_err(|e| ClusterError::JetStream(format!("subscribe {subject}: {e}"))) }
    };
    let members = subscribe(cluster.subject("members")).await?;
    let ledger = subscribe(cluster.subject("ledger.*")).await?;
    let grants = subscribe(cluster.subject(&format!("grant.*.{}", cluster.me))).await?;
    cluster.health.set_service_status(CLUSTER_HEALTH, tonic_health::ServingStatus::Serving).await;
    // The ledger copy is complete from the moment the subscriptions stand.
    let subscribed = cluster.clock.now();
    for ex in cluster.shards.keys() {
        cluster.send_shard(*ex, Command::LogSince(subscribed)).await;
    }
    tokio::spawn(cluster.clone().members_loop(members, stop.clone()));
    tokio::spawn(cluster.clone().ledger_loop(ledger, stop.clone()));
    tokio::spawn(cluster.clone().grant_loop(grants, stop.clone()));
    tokio::spawn(cluster.clone().tick_loop(stop));
    let c = cluster.clone();
    tokio::spawn(async move {
        shutdown.cancelled().await;
        c.stopping().await;
    });
    Ok(cluster)
}

/// The gRPC health service name that says whether this replica coordinates
/// through NATS (SERVING) or admits on its own share (NOT_SERVING).
pub(crate) const CLUSTER_HEALTH: &str = "sluice.dispatcher.v1.Cluster";

impl Cluster {
    async fn ledger_loop(self: Arc<Self>, mut sub: async_nats::Subscriber, stop: CancellationToken) {
        loop {
            let msg = tokio::select! {
                _ = stop.cancelled() => break,
                m = sub.next() => match m { Some(m) => m, None => break },
            };
            let Some(exchange) = msg.subject.rsplit('.').next().and_then(|s| s.parse::<Exchange>().ok()) else { continue };
            match self.ledger_event(exchange, &msg.payload) {
                // Waits for room: a ledger entry is never dropped.
                Ok(ev) => self.send_shard(exchange, Command::Ledger(Box::new(ev))).await,
                Err(e) => tracing::warn!(%exchange, error = %e, "ignoring a malformed ledger entry"),
            }
        }
    }

    fn ledger_event(&self, exchange: Exchange, payload: &[u8]) -> Result<LedgerEvent, wire::WireError> {
        let e: pb::LedgerEntry = wire::decode("ledger entry", payload)?;
        match e.entry {
            Some(pb::ledger_entry::Entry::Sending(s)) => Ok(LedgerEvent::Sending {
                grant_id: e.grant_id,
                admitted: wire::time(s.admitted_unix_ns),
                charges: wire::needs(&s.charges, exchange)?,
                bound: wire::time(s.bound_unix_ns),
                held_until: (s.held_until_unix_ns > 0).then(|| wire::time(s.held_until_unix_ns)),
            }),
            Some(pb::ledger_entry::Entry::Settled(s)) => Ok(LedgerEvent::Settled {
                outcome: wire::outcome(&s)?,
                admitted_at: wire::time(s.admitted_unix_ns),
                route: s.route,
                grant_id: e.grant_id,
            }),
            None => Err(wire::WireError::Field("ledger entry without a body".into())),
        }
    }

    async fn grant_loop(self: Arc<Self>, mut sub: async_nats::Subscriber, stop: CancellationToken) {
        loop {
            let msg = tokio::select! {
                _ = stop.cancelled() => break,
                m = sub.next() => match m { Some(m) => m, None => break },
            };
            let Some(reply) = msg.reply.clone() else { continue };
            let this = self.clone();
            tokio::spawn(async move {
                let answer = this.serve_grant(&msg.subject, &msg.payload).await;
                let _ = this.client.publish(reply, answer.encode_to_vec().into()).await;
            });
        }
    }

    /// The owner's side of a grant request.
    async fn serve_grant(&self, subject: &str, payload: &[u8]) -> pb::GrantReply {
        use pb::grant_reply::Result as R;
        let refused =
            |code: tonic::Code, message: String| pb::GrantReply { result: Some(R::Refused(pb::Refusal { code: code as i32, message })) };
        let Some(exchange) = subject.split('.').rev().nth(1).and_then(|s| s.parse::<Exchange>().ok()) else {
            return refused(tonic::Code::InvalidArgument, format!("no exchange in subject {subject}"));
        };
        if self.route(exchange) != Route::Owner {
            return pb::GrantReply { result: Some(R::NotOwner(self.owner_of(exchange))) };
        }
        let req: pb::GrantRequest = match wire::decode("grant request", payload) {
            Ok(r) => r,
            Err(e) => return refused(tonic::Code::InvalidArgument, e.to_string()),
        };
        let parsed = wire::needs(&req.charges, exchange).and_then(|needs| Ok((needs, wire::class(req.class)?)));
        let (needs, class) = match parsed {
            Ok(p) => p,
            Err(e) => return refused(tonic::Code::InvalidArgument, e.to_string()),
        };
        let res = Reservation {
            grant_id: req.grant_id,
            class,
            deadline: wire::time(req.deadline_unix_ns),
            needs,
            hold: (req.hold_ns > 0).then(|| Duration::from_nanos(req.hold_ns)),
            route: req.route,
            settle_within: self.settle_within(),
        };
        match self.reserve_local(exchange, res).await {
            Ok(at) => pb::GrantReply { result: Some(R::AdmittedUnixNs(wire::ns(at))) },
            Err(s) => refused(s.code(), s.message().to_owned()),
        }
    }

    /// After admission, a call is sent within the use-by time and answered or
    /// abandoned within the upstream timeout; a report then takes a moment.
    fn settle_within(&self) -> Duration {
        self.use_within() + self.upstream_timeout + Duration::from_secs(1)
    }

    async fn reserve_local(&self, exchange: Exchange, res: Reservation) -> Result<Time, Status> {
        let shard =
            self.shards.get(&exchange).ok_or_else(|| Status::invalid_argument(format!("exchange '{exchange}' is not configured")))?;
        let (reply, rx) = oneshot::channel();
        shard
            .try_send(Command::Reserve { res: Box::new(res), reply })
            .map_err(|_| Status::resource_exhausted(format!("the {exchange} dispatch queue is saturated; retry later")))?;
        rx.await.map_err(|_| Status::unavailable("the dispatcher is shutting down"))?
    }

    fn next_grant_id(&self) -> String {
        format!("{}/{}/{}", self.me, self.incarnation, self.counter.fetch_add(1, Ordering::Relaxed))
    }

    /// Waits for a grant for `needs` from whoever owns the exchange; `None` when
    /// this replica fell back meanwhile (the caller then admits locally).
    #[allow(clippy::too_many_arguments)]
    async fn obtain(
        &self,
        exchange: Exchange,
        grant_id: &str,
        class: sluice_rate::scheduler::Class,
        deadline: Time,
        needs: &[(BucketKey, u64)],
        hold: Option<Duration>,
        route: &str,
    ) -> Result<Option<(Time, String)>, Status> {
        let mut changed = self.changed.subscribe();
        let mut attempt = 0u32;
        loop {
            // Each attempt has its own id: an abandoned one is cancelled by id, so a
            // grant its owner still issues is given back at once.
            attempt += 1;
            let grant_id = format!("{grant_id}.{attempt}");
            let now = self.clock.now();
            if now >= deadline {
                return Err(Status::deadline_exceeded("no grant came before the deadline; not sent"));
            }
            let left = deadline.saturating_since(now);
            let retry: Status = match self.route(exchange) {
                Route::Fallback => return Ok(None),
                Route::NoOwner => Status::unavailable("no replica owns the budgets yet"),
                Route::Owner => {
                    let res = Reservation {
                        grant_id: grant_id.clone(),
                        class,
                        deadline,
                        needs: needs.to_vec(),
                        hold,
                        route: route.to_owned(),
                        settle_within: self.settle_within(),
                    };
                    match self.reserve_local(exchange, res).await {
                        Ok(at) => return Ok(Some((at, grant_id))),
                        // The lease moved while it waited: ask the new owner.
                        Err(s) if s.code() == tonic::Code::Unavailable => s,
                        Err(s) => return Err(s),
                    }
                }
                Route::Follower(owner) => {
                    let req = pb::GrantRequest {
                        grant_id: grant_id.clone(),
                        requester: self.me.clone(),
                        charges: wire::charges(needs),
                        class: wire::class_number(class),
                        deadline_unix_ns: wire::ns(deadline),
                        hold_ns: hold.map_or(0, |h| h.as_nanos() as u64),
                        route: route.to_owned(),
                    };
                    let subject = self.subject(&format!("grant.{exchange}.{owner}"));
                    let request = async_nats::Request::new().payload(req.encode_to_vec().into()).timeout(Some(left));
                    let asked = self.client.send_request(subject, request);
                    let answer = tokio::select! {
                        a = asked => a,
                        // The owner changed (it died, or this replica fell back): ask again.
                        _ = wait_change(&mut changed) => {
                            self.cancel(exchange, &grant_id, route).await;
                            continue;
                        }
                    };
                    match answer {
                        Ok(msg) => match wire::decode::<pb::GrantReply>("grant reply", &msg.payload).map(|r| r.result) {
                            Ok(Some(pb::grant_reply::Result::AdmittedUnixNs(at))) => return Ok(Some((wire::time(at), grant_id))),
                            Ok(Some(pb::grant_reply::Result::Refused(r))) => {
                                let status = Status::new(tonic::Code::from_i32(r.code), r.message);
                                if status.code() != tonic::Code::Unavailable {
                                    return Err(status);
                                }
                                status
                            }
                            Ok(Some(pb::grant_reply::Result::NotOwner(_))) => {
                                Status::unavailable("asked a replica that no longer owns the budgets")
                            }
                            Ok(None) | Err(_) => Status::internal("malformed grant reply"),
                        },
                        Err(e) => {
                            self.cancel(exchange, &grant_id, route).await;
                            Status::unavailable(format!("grant request to {owner}: {e}"))
                        }
                    }
                }
            };
            tracing::debug!(%exchange, reason = %retry.message(), "asking for the grant again");
            // Wait for a change of route, but look again soon in any case.
            let _ = tokio::time::timeout(ms(self.cfg.heartbeat_ms).min(left), wait_change(&mut changed)).await;
        }
    }

    /// Gives back whatever an abandoned attempt may still be granted.
    async fn cancel(&self, exchange: Exchange, grant_id: &str, route: &str) {
        self.settle(exchange, grant_id, &Outcome::NotSent, Time::ZERO, route).await;
    }

    /// Publishes a ledger entry about `exchange`.
    async fn publish_ledger(&self, exchange: Exchange, grant_id: &str, entry: pb::ledger_entry::Entry) -> Result<(), Status> {
        let e = pb::LedgerEntry { grant_id: grant_id.to_owned(), sender: self.me.clone(), entry: Some(entry) };
        self.client
            .publish(self.subject(&format!("ledger.{exchange}")), e.encode_to_vec().into())
            .await
            .map_err(|e| Status::unavailable(format!("cannot publish to NATS: {e}")))
    }

    /// Publishes `Sending` and waits until NATS has it: only then may the request go.
    async fn announce(
        &self,
        exchange: Exchange,
        grant_id: &str,
        needs: &[(BucketKey, u64)],
        admitted: Time,
        held_until: Option<Time>,
    ) -> Result<(), Status> {
        let sending = pb::Sending {
            charges: wire::charges(needs),
            admitted_unix_ns: wire::ns(admitted),
            bound_unix_ns: wire::ns(admitted + self.settle_within()),
            held_until_unix_ns: held_until.map_or(0, wire::ns),
        };
        self.publish_ledger(exchange, grant_id, pb::ledger_entry::Entry::Sending(sending)).await?;
        match tokio::time::timeout(self.use_within(), self.client.flush()).await {
            Ok(Ok(())) => Ok(()),
            _ => Err(Status::unavailable("NATS did not confirm the ledger entry; not sent")),
        }
    }

    async fn settle(&self, exchange: Exchange, grant_id: &str, outcome: &Outcome, admitted: Time, route: &str) {
        let s = wire::settled(outcome, admitted, route);
        if let Err(e) = self.publish_ledger(exchange, grant_id, pb::ledger_entry::Entry::Settled(s)).await {
            // The owner then counts it until its bound: conservative, never lost.
            tracing::warn!(%exchange, error = %e.message(), "cannot publish how a call ended");
        }
    }

    /// Runs one call through the cluster: grant from the owner, ledger entry,
    /// idempotency mark, send from here, report. In fallback the call comes back
    /// as `Local`: the local shard admits and sends it on this replica's share.
    pub(crate) async fn call(&self, call: PreparedCall, mut claim: Option<&mut Claim>) -> Routed {
        let exchange = call.exchange;
        let call_id = self.next_grant_id();
        let enqueued = self.clock.now();
        loop {
            let granted = match self.obtain(exchange, &call_id, call.class, call.deadline, &call.needs, None, &call.route).await {
                Ok(g) => g,
                Err(s) => return Routed::Done(Err(Failure::NotSent(s))),
            };
            let Some((admitted, grant_id)) = granted else {
                if claim.is_some() {
                    return Routed::Done(Err(Failure::NotSent(Status::unavailable(
                        "NATS is unreachable, so idempotency keys cannot be checked across replicas; not sent",
                    ))));
                }
                return Routed::Local(Box::new(call));
            };
            // Too late to use: give it back and ask again.
            if self.clock.now() >= admitted + self.use_within() {
                self.settle(exchange, &grant_id, &Outcome::NotSent, admitted, &call.route).await;
                continue;
            }
            if let Some(c) = claim.as_deref_mut()
                && let Err(s) = self.mark_sent(c).await
            {
                self.settle(exchange, &grant_id, &Outcome::NotSent, admitted, &call.route).await;
                return Routed::Done(Err(Failure::NotSent(s)));
            }
            if let Err(s) = self.announce(exchange, &grant_id, &call.needs, admitted, None).await {
                self.settle(exchange, &grant_id, &Outcome::NotSent, admitted, &call.route).await;
                return Routed::Done(Err(Failure::NotSent(s)));
            }
            let Some(upstream) = self.upstreams.get(&exchange) else {
                return Routed::Done(Err(Failure::NotSent(Status::internal(format!("no upstream for {exchange}")))));
            };
            let buckets = call.needs.iter().map(|(k, _)| k.to_string()).collect();
            let (outcome, result) = upstream.execute(&call, admitted.saturating_since(enqueued), buckets).await;
            self.settle(exchange, &grant_id, &outcome, admitted, &call.route).await;
            return Routed::Done(result);
        }
    }

    /// A token (Acquire) through the cluster. `None`: fall back to the local shard.
    pub(crate) async fn grant(&self, g: &PreparedGrant) -> Result<Option<Duration>, Status> {
        let grant_id = self.next_grant_id();
        let needs = [g.need.clone()];
        let enqueued = self.clock.now();
        let Some((admitted, grant_id)) = self.obtain(g.exchange, &grant_id, g.class, g.deadline, &needs, Some(g.hold), "acquire").await?
        else {
            return Ok(None);
        };
        // A token is used elsewhere: its entry is held for the fixed hold, settled at once.
        self.announce(g.exchange, &grant_id, &needs, admitted, Some(admitted + g.hold)).await?;
        Ok(Some(admitted.saturating_since(enqueued)))
    }
}

async fn wait_change(rx: &mut watch::Receiver<u64>) {
    if rx.changed().await.is_err() {
        std::future::pending::<()>().await;
    }
}
