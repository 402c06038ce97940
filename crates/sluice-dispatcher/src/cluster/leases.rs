//! Owner leases: one replica per exchange decides its budgets, holding a lease in
//! the `<prefix>_owners` key-value bucket (compare-and-set on the revision). A
//! replica takes a free lease while it owns fewer than its fair part; a new owner
//! waits until whatever the old one granted is in its ledger copy.

use async_nats::jetstream::kv;
use bytes::Bytes;
use prost::Message;
use sluice_domain::Exchange;
use sluice_proto::cluster::v1 as pb;
use sluice_rate::{Clock, Time};

use super::members::{self, LeaseAction, LeaseSeen};
use super::{Cluster, Held, ms, wire};
use crate::shard::Command;

impl Cluster {
    pub(super) async fn keep_leases(&self) {
        let exchanges: Vec<Exchange> = self.shards.keys().copied().collect();
        for &ex in &exchanges {
            let key = ex.as_str();
            let entry = match tokio::time::timeout(ms(self.cfg.heartbeat_ms * 2), self.owners.entry(key)).await {
                Ok(Ok(e)) => e,
                Ok(Err(e)) => {
                    tracing::debug!(exchange = %ex, error = %e, "cannot read lease");
                    continue;
                }
                Err(_) => continue,
            };
            let seen = entry.as_ref().filter(|e| e.operation == kv::Operation::Put).and_then(|e| {
                let l: pb::Lease = wire::decode("lease", &e.value).ok()?;
                Some((LeaseSeen { owner: l.owner, epoch: l.epoch, expires: wire::time(l.expires_unix_ns) }, e.revision))
            });
            let revision = entry.as_ref().map(|e| e.revision);
            let now = self.clock.now();
            let (owned, fair) = {
                let st = self.lock();
                let alive = st.members.alive_count(now, self.timing()) as usize;
                let owned = st.held.iter().filter(|(_, h)| now < h.expires).count();
                (owned, exchanges.len().div_ceil(alive.max(1)))
            };
            let action =
                members::lease_action(seen.as_ref().map(|(l, _)| l), &self.me, now, self.skew(), ms(self.cfg.lease_ttl_ms), owned, fair);
            match action {
                LeaseAction::Leave => {
                    let (lost, moved) = {
                        let mut st = self.lock();
                        let moved = match &seen {
                            Some((l, _)) => st.leases.insert(ex, l.clone()).is_none_or(|old| old.owner != l.owner || old.epoch != l.epoch),
                            None => false,
                        };
                        (st.held.remove(&ex).is_some(), moved)
                    };
                    if lost {
                        tracing::warn!(exchange = %ex, "lost the lease");
                        self.send_shard(ex, Command::AdmitUntil(Time::ZERO)).await;
                    }
                    if lost || moved {
                        // Calls waiting on the old owner ask the new one now.
                        self.bump();
                    }
                }
                LeaseAction::Renew | LeaseAction::Take { .. } => {
                    let epoch = match action {
                        LeaseAction::Take { epoch } => epoch,
                        _ => seen.as_ref().map_or(1, |(l, _)| l.epoch),
                    };
                    let expires = now + ms(self.cfg.lease_ttl_ms);
                    let value: Bytes =
                        pb::Lease { owner: self.me.clone(), epoch, expires_unix_ns: wire::ns(expires) }.encode_to_vec().into();
                    let write = async {
                        match revision {
                            Some(rev) => self.owners.update(key, value, rev).await.map_err(|e| e.to_string()),
                            None => self.owners.create(key, value).await.map_err(|e| e.to_string()),
                        }
                    };
                    // Never let a lost NATS hold the heartbeat up: an unconfirmed write is a lost lease.
                    let write =
                        tokio::time::timeout(ms(self.cfg.heartbeat_ms * 2), write).await.unwrap_or_else(|_| Err("timed out".into()));
                    match write {
                        Ok(_) => self.hold_lease(ex, epoch, expires, seen.as_ref().map(|(l, _)| l.clone())).await,
                        Err(e) => {
                            // Someone else wrote first: re-read next tick.
                            tracing::debug!(exchange = %ex, error = %e, "lease write lost a race");
                            if self.lock().held.remove(&ex).is_some() {
                                self.send_shard(ex, Command::AdmitUntil(Time::ZERO)).await;
                                self.bump();
                            }
                        }
                    }
                }
            }
        }
    }

    async fn hold_lease(&self, ex: Exchange, epoch: u64, expires: Time, previous: Option<LeaseSeen>) {
        let (taken, subscribed_since) = {
            let mut st = self.lock();
            let taken = st.held.get(&ex).is_none_or(|h| h.epoch != epoch);
            st.held.insert(ex, Held { epoch, expires });
            st.leases.insert(ex, LeaseSeen { owner: self.me.clone(), epoch, expires });
            (taken, st.subscribed_since)
        };
        if taken {
            // The previous owner admitted until its lease ended; what it granted
            // is published within the use-by time. And a ledger copy that began
            // recently misses what was sent before it began.
            if let Some(p) = &previous {
                let until = p.expires + self.use_within() + self.skew() + ms(50);
                self.send_shard(ex, Command::Pause { until, per_window: false }).await;
            }
            let until = subscribed_since + self.use_within() + self.upstream_timeout + self.skew();
            self.send_shard(ex, Command::Pause { until, per_window: true }).await;
            tracing::info!(exchange = %ex, epoch, previous = previous.as_ref().map(|p| p.owner.as_str()).unwrap_or(""), "took the lease");
        }
        // Never admit past the lease, whatever the clocks say.
        self.send_shard(ex, Command::AdmitUntil(expires - self.skew())).await;
        if taken {
            self.bump();
        }
    }
}
