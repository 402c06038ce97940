//! Liveness: heartbeats, falling back when NATS is unreachable, rejoining, and
//! telling a dead replica from a cut-off one.
//!
//! Each heartbeat announces this replica's solo window: were it cut off right
//! after, it would admit alone (from its `1/N` share) no earlier than `solo_from`
//! and no later than `solo_until` (its fallback lease from this contact). A
//! heartbeat counts as announced once a later flush confirms NATS had it; the
//! replica keeps to the last announced lease, so the others always know at least
//! as late an end as the one it keeps. See ARCHITECTURE.md, "Replicas".

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use prost::Message;
use sluice_proto::cluster::v1 as pb;
use sluice_rate::bucket::Share;
use sluice_rate::{Clock, Time};
use tokio_util::sync::CancellationToken;

use super::members::{self, Probe};
use super::{CLUSTER_HEALTH, Cluster, ms, wire};
use crate::metrics::ExchangeLabels;
use crate::shard::Command;

impl Cluster {
    pub(super) async fn members_loop(self: Arc<Self>, mut sub: async_nats::Subscriber, stop: CancellationToken) {
        loop {
            let msg = tokio::select! {
                _ = stop.cancelled() => break,
                m = sub.next() => match m { Some(m) => m, None => break },
            };
            let hb: pb::Heartbeat = match wire::decode("heartbeat", &msg.payload) {
                Ok(h) => h,
                Err(e) => {
                    tracing::warn!(error = %e, "ignoring a malformed heartbeat");
                    continue;
                }
            };
            let now = self.clock.now();
            let t = self.timing();
            let replaced = self.lock().members.heard(now, &hb.replica, wire::said(&hb), hb.leaving, t);
            if let Some(gone) = replaced {
                tracing::info!(replica = %gone.replica, "replica restarted: its earlier process is gone");
                self.settle_gone(&gone).await;
            }
        }
        // Leaving on purpose: tell the others at once so they stop keeping a share
        // back (but for what an earlier fallback may still have in the windows).
        let clear = self.lock().fallback_clear;
        let hb = pb::Heartbeat {
            replica: self.me.clone(),
            incarnation: self.incarnation.clone(),
            leaving: true,
            fallback_clear_unix_ns: wire::ns(clear),
            upstream_timeout_ms: self.upstream_timeout.as_millis() as u64,
            ..Default::default()
        };
        let _ = self.client.publish(self.subject("members"), hb.encode_to_vec().into()).await;
        let _ = tokio::time::timeout(Duration::from_millis(500), self.client.flush()).await;
    }

    /// How long after its last heartbeat a cut-off replica waits before admitting
    /// alone (each bucket adds its own window): the others notice its absence
    /// within the absence timeout plus a heartbeat (they look once a heartbeat);
    /// what they admitted from the whole budget until then leaves within the
    /// use-by time and is answered within the upstream timeout; plus the clock
    /// skew and 50 ms for delivery.
    pub(super) fn solo_pause(&self) -> Duration {
        ms(self.cfg.absent_after_ms + self.cfg.heartbeat_ms + self.cfg.grant_use_within_ms + self.cfg.clock_skew_ms + 50)
            + self.upstream_timeout
    }

    /// Every heartbeat: probe NATS, publish the heartbeat, keep leases, set shares.
    pub(super) async fn tick_loop(self: Arc<Self>, stop: CancellationToken) {
        let mut tick = tokio::time::interval(ms(self.cfg.heartbeat_ms));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => break,
                _ = tick.tick() => {}
            }
            let started = self.clock.now();
            let probe = tokio::time::timeout(ms(self.cfg.heartbeat_ms * 2), self.client.flush()).await;
            let contact = matches!(probe, Ok(Ok(()))) && self.client.connection_state() == async_nats::connection::State::Connected;
            if contact {
                self.in_contact(started).await;
            } else {
                self.out_of_contact().await;
            }
            self.publish_metrics();
        }
        // Stop admitting: whatever waits is refused and asked again elsewhere.
        for ex in self.shards.keys() {
            self.send_shard(*ex, Command::AdmitUntil(Time::ZERO)).await;
        }
    }

    /// Shutdown has begun: a replica alone stops admitting before its listener
    /// closes, so a refused connection never meets a replica still sending alone.
    pub(super) async fn stopping(&self) {
        let alone = {
            let mut st = self.lock();
            st.stopping = true;
            !st.connected
        };
        if alone {
            for ex in self.shards.keys() {
                self.send_shard(*ex, Command::AdmitUntil(Time::ZERO)).await;
            }
        }
    }

    async fn in_contact(self: &Arc<Self>, now: Time) {
        let lease = ms(self.cfg.fallback_lease_ms);
        let rejoined = {
            let mut st = self.lock();
            st.last_contact = now;
            if st.connected {
                // This flush came after the last heartbeat: NATS has it, so the others
                // know the lease it announced. That is the one this replica keeps.
                st.solo_until = st.solo_said;
                st.share_of = st.share_of_said;
                None
            } else {
                st.connected = true;
                st.subscribed_since = now;
                st.members.rejoined(now);
                // Alone it admitted nothing before `solo_from` and nothing from now
                // on; what it did admit may reach the exchange for the upstream
                // timeout, and the owners keep its share back until then.
                if now >= st.solo_from {
                    let clear = now.min(st.solo_admit_until) + self.upstream_timeout;
                    st.fallback_clear = st.fallback_clear.max(clear);
                }
                st.solo_from = Time::MAX;
                st.fallback_since.take()
            }
        };
        if let Some(since) = rejoined {
            tracing::info!(offline_ms = now.saturating_since(since).as_millis() as u64, "NATS reachable again; rejoining the cluster");
            self.health.set_service_status(CLUSTER_HEALTH, tonic_health::ServingStatus::Serving).await;
            for ex in self.shards.keys() {
                // Until it owns an exchange again it admits nothing for it.
                self.send_shard(*ex, Command::AdmitUntil(Time::ZERO)).await;
                // Its copy of the ledger missed what others sent while it was away.
                self.send_shard(*ex, Command::LogSince(now)).await;
            }
            self.bump();
        }
        let (fallback_clear, share_of) = {
            let st = self.lock();
            (st.fallback_clear, st.members.count())
        };
        let sent = self.clock.now();
        let hb = pb::Heartbeat {
            replica: self.me.clone(),
            incarnation: self.incarnation.clone(),
            fallback_clear_unix_ns: if fallback_clear > now { wire::ns(fallback_clear) } else { 0 },
            leaving: false,
            egress: self.egress.clone(),
            addr: self.addr.clone(),
            solo_from_unix_ns: wire::ns(sent + self.solo_pause()),
            solo_until_unix_ns: wire::ns(now + lease),
            upstream_timeout_ms: self.upstream_timeout.as_millis() as u64,
            share_of,
        };
        if let Err(e) = self.client.publish(self.subject("members"), hb.encode_to_vec().into()).await {
            tracing::warn!(error = %e, "cannot publish heartbeat");
        }
        let forgotten = {
            let mut st = self.lock();
            st.hb_sent = sent;
            st.solo_said = now + lease;
            st.share_of_said = share_of;
            st.members.prune(now, self.timing(), self.longest_any)
        };
        for f in forgotten {
            tracing::warn!(replica = %f, "replica absent past the member ttl: forgotten");
        }
        self.spawn_probes(now);
        self.keep_leases().await;
        self.update_share().await;
    }

    /// Sends the shards the share they may admit while in contact: the whole
    /// budget less what absent, gone or recovering replicas may still have in it.
    async fn update_share(&self) {
        let changed = {
            let mut st = self.lock();
            if !st.connected {
                return;
            }
            let reserved = st.members.reservations(self.clock.now(), self.timing(), self.longest_any);
            let share = if reserved.is_empty() { Share::Whole } else { Share::Rest { reserved } };
            (share != st.share).then(|| {
                st.share = share.clone();
                share
            })
        };
        if let Some(share) = changed {
            tracing::debug!(?share, "share changed");
            for ex in self.shards.keys() {
                self.send_shard(*ex, Command::Share(share.clone())).await;
            }
        }
    }

    /// Probes replicas that went silent at their advertised addresses: a refused
    /// connection proves the process gone (see `members`).
    fn spawn_probes(self: &Arc<Self>, now: Time) {
        if !self.cfg.probe_peers {
            return;
        }
        let due = self.lock().members.due_for_probe(now, self.timing());
        for (replica, incarnation, addr) in due {
            let this = self.clone();
            tokio::spawn(async move {
                let result = probe(&addr, ms(this.cfg.absent_after_ms)).await;
                let at = this.clock.now();
                let t = this.timing();
                let gone = this.lock().members.probed(&replica, &incarnation, result, at, t);
                if let Some(gone) = gone {
                    tracing::warn!(%replica, %addr, "replica gone (its address refuses connections): its share is used again, but for what it may have sent alone");
                    this.settle_gone(&gone).await;
                    this.update_share().await;
                }
            });
        }
    }

    /// What a gone replica was granted reaches the exchange, if at all, by its
    /// last possible send plus its upstream timeout: settled then, not counted
    /// as an unknown outcome for `lost_hold`.
    async fn settle_gone(&self, gone: &members::Gone) {
        for ex in self.shards.keys() {
            let cmd = Command::Gone {
                sender: format!("{}/{}/", gone.replica, gone.incarnation),
                dead_by: gone.by,
                use_within: self.use_within(),
                upstream: gone.upstream_timeout,
            };
            self.send_shard(*ex, cmd).await;
        }
    }

    pub(super) async fn out_of_contact(&self) {
        let entered = {
            let mut st = self.lock();
            if st.connected {
                st.connected = false;
                st.held.clear();
                st.fallback_since = Some(st.last_contact);
                // The others, who admit from the whole budget until they notice,
                // are given the pause; its own lease is the last one announced.
                st.solo_from = st.hb_sent + self.solo_pause();
                st.solo_admit_until = if st.stopping { Time::ZERO } else { st.solo_until };
                Some((st.share_of.max(1), st.solo_from, st.solo_admit_until, st.last_contact))
            } else {
                None
            }
        };
        let Some((of, pause, until, since)) = entered else { return };
        tracing::error!(share_of = of, "NATS unreachable: admitting on this replica's own share of every budget");
        self.health.set_service_status(CLUSTER_HEALTH, tonic_health::ServingStatus::NotServing).await;
        if until <= pause {
            tracing::warn!(
                fallback_lease_ms = self.cfg.fallback_lease_ms,
                "the fallback lease ends before the pause after which this replica could admit alone: nothing is sent until NATS is back"
            );
        } else {
            tracing::info!(
                pause_ms = pause.saturating_since(since).as_millis() as u64,
                lease_ms = until.saturating_since(since).as_millis() as u64,
                "fallback: each bucket admits after the pause plus its window, and nothing once the lease ends"
            );
        }
        self.lock().share = Share::Part { of };
        for shard in self.shards.values() {
            // What the others admit alone from now on is not in this copy of the
            // ledger: the exchange's counts would read it as a stranger's.
            shard.send(Command::LogSince(Time::MAX)).await;
            shard.send(Command::Share(Share::Part { of })).await;
            shard.send(Command::Pause { until: pause, per_window: true }).await;
            shard.send(Command::AdmitUntil(until)).await;
        }
        self.bump();
    }

    pub(super) fn publish_metrics(&self) {
        let st = self.lock();
        let now = self.clock.now();
        self.metrics.cluster_connected.set(i64::from(st.connected));
        self.metrics.cluster_members.set(st.members.count() as i64);
        self.metrics.cluster_alive.set(st.members.alive_count(now, self.timing()) as i64);
        let reserved = match &st.share {
            Share::Rest { reserved } => reserved.iter().filter(|(u, _)| *u > now).count(),
            _ => 0,
        };
        self.metrics.cluster_reserved.set(reserved as i64);
        for ex in self.shards.keys() {
            let owned = st.connected && st.held.get(ex).is_some_and(|h| now < h.expires);
            self.metrics.cluster_owned.get_or_create(&ExchangeLabels { exchange: ex.to_string() }).set(i64::from(owned));
        }
    }
}

/// Whether anything serves `addr`: only a refused connection is an answer.
async fn probe(addr: &str, within: Duration) -> Probe {
    match tokio::time::timeout(within, tokio::net::TcpStream::connect(addr)).await {
        Ok(Err(e)) if e.kind() == std::io::ErrorKind::ConnectionRefused => Probe::Refused,
        _ => Probe::Inconclusive,
    }
}
