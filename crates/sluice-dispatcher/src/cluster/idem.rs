//! Idempotency keys shared by every replica, in the JetStream key-value bucket
//! `<prefix>_idempotency`. A key is claimed with a create (only one replica can
//! win), marked *sent* with a compare-and-set just before the request leaves, and
//! closed with the outcome. A retry on any replica then replays the answer, waits
//! for the first call, takes over a claim whose replica died before sending, or is
//! told that the outcome is unknown. So no key is ever sent twice.

use std::time::Duration;

use async_nats::jetstream::kv;
use prost::Message;
use sha2::{Digest, Sha256};
use sluice_domain::Exchange;
use sluice_proto::cluster::v1::IdempotencyRecord;
use sluice_proto::cluster::v1::idempotency_record::State;
use sluice_proto::dispatcher::v1::CallResponse;
use sluice_rate::{Clock, Time};
use tonic::Status;

use super::{Cluster, wire};
use crate::idempotency::outcome_unknown as unknown;

/// A key this replica claimed.
#[derive(Debug)]
pub(crate) struct Claim {
    key: String,
    revision: u64,
    fingerprint: Vec<u8>,
}

/// What a key's record says to do.
pub(crate) enum Claimed {
    Fresh(Claim),
    Replay(CallResponse),
}

/// How a claimed call ended.
pub(crate) enum Ending {
    Answered(CallResponse),
    NotSent,
    Unknown,
}

fn record_key(exchange: Exchange, account: &str, key: &str) -> String {
    let mut h = Sha256::new();
    for part in [exchange.as_str(), account, key] {
        h.update((part.len() as u64).to_be_bytes());
        h.update(part.as_bytes());
    }
    hex::encode(h.finalize())
}

fn store_error(e: impl std::fmt::Display) -> Status {
    Status::unavailable(format!("the idempotency store (NATS) cannot be reached: {e}; not sent"))
}

impl Cluster {
    /// Claims `key` for this replica, or says what the earlier call with it did.
    pub(crate) async fn claim(
        &self,
        exchange: Exchange,
        account: &str,
        key: &str,
        fingerprint: Vec<u8>,
        deadline: Time,
    ) -> Result<Claimed, Status> {
        let rkey = record_key(exchange, account, key);
        let mine = |revision| Claim { key: rkey.clone(), revision, fingerprint: fingerprint.clone() };
        let pending = IdempotencyRecord {
            state: State::Pending as i32,
            fingerprint: fingerprint.clone(),
            replica: self.me_full(),
            response: Vec::new(),
        };
        loop {
            match self.idem.create(&rkey, pending.encode_to_vec().into()).await {
                Ok(rev) => return Ok(Claimed::Fresh(mine(rev))),
                Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => {}
                Err(e) => return Err(store_error(e)),
            }
            let Some(entry) = self.idem.entry(&rkey).await.map_err(store_error)? else { continue };
            if entry.operation != kv::Operation::Put {
                // Deleted or purged in between: claim it afresh.
                match self.idem.update(&rkey, pending.encode_to_vec().into(), entry.revision).await {
                    Ok(rev) => return Ok(Claimed::Fresh(mine(rev))),
                    Err(_) => continue,
                }
            }
            let rec: IdempotencyRecord = wire::decode("idempotency record", &entry.value).map_err(|e| Status::internal(e.to_string()))?;
            if rec.fingerprint != fingerprint {
                return Err(Status::invalid_argument(format!("idempotency key '{key}' was already used for a different request")));
            }
            let (owner, incarnation) = rec.replica.split_once('/').unwrap_or((rec.replica.as_str(), ""));
            let now = self.clock.now();
            let alive = self.lock().members.alive(owner, incarnation, &self.incarnation, now, self.timing());
            match State::try_from(rec.state) {
                Ok(State::Answered) => {
                    let mut r =
                        CallResponse::decode(rec.response.as_slice()).map_err(|e| Status::internal(format!("stored answer: {e}")))?;
                    r.replayed = true;
                    return Ok(Claimed::Replay(r));
                }
                Ok(State::Unknown) => return Err(unknown(key)),
                // Never sent, or claimed by a replica that died before sending: take it over.
                Ok(State::NotSent) | Ok(State::Pending) if rec.state == State::NotSent as i32 || !alive => {
                    match self.idem.update(&rkey, pending.encode_to_vec().into(), entry.revision).await {
                        Ok(rev) => return Ok(Claimed::Fresh(mine(rev))),
                        Err(_) => continue,
                    }
                }
                Ok(State::Sent) if !alive => return Err(unknown(key)),
                // The first call is still under way: wait for its outcome.
                Ok(State::Pending) | Ok(State::Sent) => {
                    if now >= deadline {
                        return Err(Status::deadline_exceeded(format!("the first call with idempotency key '{key}' is still in flight")));
                    }
                    tokio::time::sleep(Duration::from_millis(50).min(deadline.saturating_since(now))).await;
                }
                _ => return Err(Status::internal(format!("idempotency record of '{key}' has an unknown state"))),
            }
        }
    }

    /// Marks the claimed key as handed to the exchange. Fails (and the call must not
    /// go) if another replica took the claim over meanwhile.
    pub(crate) async fn mark_sent(&self, claim: &mut Claim) -> Result<(), Status> {
        let rec = IdempotencyRecord {
            state: State::Sent as i32,
            fingerprint: claim.fingerprint.clone(),
            replica: self.me_full(),
            response: Vec::new(),
        };
        let rev = self.idem.update(&claim.key, rec.encode_to_vec().into(), claim.revision).await.map_err(|e| {
            if e.kind() == kv::UpdateErrorKind::WrongLastRevision {
                Status::aborted("another replica took this idempotency key over; not sent")
            } else {
                store_error(e)
            }
        })?;
        claim.revision = rev;
        Ok(())
    }

    /// Records how the claimed call ended.
    pub(crate) async fn finish(&self, claim: Claim, ending: Ending) {
        let (state, response) = match ending {
            Ending::Answered(r) => (State::Answered, r.encode_to_vec()),
            Ending::NotSent => (State::NotSent, Vec::new()),
            Ending::Unknown => (State::Unknown, Vec::new()),
        };
        let rec = IdempotencyRecord { state: state as i32, fingerprint: claim.fingerprint, replica: self.me_full(), response };
        if let Err(e) = self.idem.update(&claim.key, rec.encode_to_vec().into(), claim.revision).await {
            // A retry then finds the key "sent" by this live replica and waits, or
            // once it is gone, "unknown": never sent twice.
            tracing::warn!(error = %e, "cannot record the outcome of an idempotent call");
        }
    }
}
