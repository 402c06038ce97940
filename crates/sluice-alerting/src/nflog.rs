//! The notification log: one `NotificationRecord` per receiver and group in a
//! JetStream key-value bucket, shared by every alerting replica. A sender
//! claims the record with compare-and-set on its revision *before* it sends,
//! and records what it delivered after, so:
//!
//! * a second replica flushing the same group finds the delivery (or the
//!   claim) and sends nothing;
//! * a failed attempt leaves `retry_at` (backoff, or the receiver's
//!   `Retry-After`); when it comes, every replica may try, and the one whose
//!   compare-and-set wins is the only sender;
//! * a replica that dies mid-send holds its claim only until `claim_until`
//!   (the receiver's timeout plus a margin); then another takes over. Had the
//!   receiver accepted the lost attempt, that one notification is sent twice:
//!   at-least-once is the price of never losing one.
//!
//! Times are wall-clock milliseconds: replicas are assumed to agree to well
//! under a second (NTP), as the claim margin is two seconds.

use std::collections::BTreeSet;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_nats::jetstream::{self, kv};
use prost::Message;
use sha2::{Digest, Sha256};
use sluice_proto::alert::v1::NotificationRecord;

use crate::group::Delivered;

/// Why the log could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum NflogError {
    #[error("notification log: {0}")]
    Store(String),
}

/// The key of a receiver's record of a group: a hash, since KV keys allow only
/// a few characters.
pub fn key(receiver: &str, group_key: &str) -> String {
    let mut h = Sha256::new();
    h.update(receiver.as_bytes());
    h.update([0]);
    h.update(group_key.as_bytes());
    hex::encode(&h.finalize()[..16])
}

/// Backoff after the `attempt`-th failure: 1 s, 2 s, 4 s ... at most 60 s.
pub fn backoff_ms(attempt: u32) -> i64 {
    1_000i64.saturating_mul(1 << attempt.saturating_sub(1).min(6)).min(60_000)
}

pub(crate) fn ts(ms: i64) -> prost_types::Timestamp {
    prost_types::Timestamp { seconds: ms.div_euclid(1000), nanos: (ms.rem_euclid(1000) * 1_000_000) as i32 }
}

pub(crate) fn ms(t: &Option<prost_types::Timestamp>) -> Option<i64> {
    t.as_ref().map(|t| t.seconds * 1000 + i64::from(t.nanos) / 1_000_000)
}

/// Wall-clock now in milliseconds.
pub fn now_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

/// What the log says of one receiver and group now.
#[derive(Debug, Clone, Default)]
pub struct Read {
    pub record: Option<NotificationRecord>,
    pub revision: Option<u64>,
}

impl Read {
    pub fn delivered(&self) -> Option<Delivered> {
        let r = self.record.as_ref()?;
        Some(Delivered {
            firing: r.firing.iter().cloned().collect(),
            resolved: r.resolved.iter().cloned().collect(),
            at: ms(&r.delivered_at),
        })
    }

    /// Whether another sender holds the record now.
    pub fn claimed_by_other(&self, me: &str, now: i64) -> Option<i64> {
        let r = self.record.as_ref()?;
        let until = ms(&r.claim_until)?;
        (!r.claimed_by.is_empty() && r.claimed_by != me && until > now).then_some(until)
    }

    /// When a failed attempt may be retried, if that is still to come.
    pub fn retry_at(&self, now: i64) -> Option<i64> {
        ms(&self.record.as_ref()?.retry_at).filter(|&t| t > now)
    }
}

/// The log in its bucket.
#[derive(Clone)]
pub struct Nflog {
    store: kv::Store,
}

fn err(e: impl std::fmt::Display) -> NflogError {
    NflogError::Store(e.to_string())
}

impl Nflog {
    /// Opens (or makes) the bucket `<prefix>_nflog`; records older than a week
    /// without a write are dropped (a group that fires longer is written at
    /// every repeat).
    pub async fn open(js: &jetstream::Context, prefix: &str) -> Result<Nflog, NflogError> {
        let store = js
            .create_key_value(kv::Config {
                bucket: format!("{prefix}_nflog"),
                description: "sluice alerting: what was notified, per receiver and group".into(),
                history: 1,
                max_age: Duration::from_secs(7 * 86_400),
                storage: jetstream::stream::StorageType::File,
                ..Default::default()
            })
            .await
            .map_err(err)?;
        Ok(Nflog { store })
    }

    pub async fn read(&self, key: &str) -> Result<Read, NflogError> {
        match self.store.entry(key).await.map_err(err)? {
            Some(e) if e.operation == kv::Operation::Put => {
                let record =
                    NotificationRecord::decode(e.value.as_ref()).map_err(|e| NflogError::Store(format!("a record cannot be read: {e}")))?;
                Ok(Read { record: Some(record), revision: Some(e.revision) })
            }
            Some(e) => Ok(Read { record: None, revision: Some(e.revision) }),
            None => Ok(Read::default()),
        }
    }

    /// Writes `record` if the record is still at `revision` (none: absent);
    /// the new revision, or `None` when another writer was first.
    pub async fn cas(&self, key: &str, record: &NotificationRecord, revision: Option<u64>) -> Result<Option<u64>, NflogError> {
        let value = record.encode_to_vec().into();
        let written = match revision {
            None => match self.store.create(key, value).await {
                Ok(r) => Ok(r),
                Err(e) if e.kind() == kv::CreateErrorKind::AlreadyExists => return Ok(None),
                Err(e) => Err(err(e)),
            },
            Some(rev) => match self.store.update(key, value, rev).await {
                Ok(r) => Ok(r),
                Err(e) if e.kind() == kv::UpdateErrorKind::WrongLastRevision => return Ok(None),
                Err(e) => Err(err(e)),
            },
        };
        written.map(Some)
    }
}

/// The record of a claim by `me` on top of what was read.
pub fn claimed(read: &Read, key_receiver: &str, group_key: &str, me: &str, now: i64, claim_ms: i64) -> NotificationRecord {
    let mut r = read.record.clone().unwrap_or_else(|| NotificationRecord {
        group_key: group_key.to_owned(),
        receiver: key_receiver.to_owned(),
        ..Default::default()
    });
    r.claimed_by = me.to_owned();
    r.claim_until = Some(ts(now + claim_ms));
    r.attempt += 1;
    r.retry_at = None;
    r
}

/// The record after a delivery.
pub fn delivered(mut r: NotificationRecord, firing: &BTreeSet<String>, resolved: &BTreeSet<String>, now: i64) -> NotificationRecord {
    r.firing = firing.iter().cloned().collect();
    r.resolved = resolved.iter().cloned().collect();
    r.delivered_at = Some(ts(now));
    r.claimed_by.clear();
    r.claim_until = None;
    r.attempt = 0;
    r.retry_at = None;
    r.last_error.clear();
    r
}

/// The record after a failed attempt: free for whoever comes at `retry_at`.
pub fn failed(mut r: NotificationRecord, error: &str, after: Option<Duration>, now: i64) -> NotificationRecord {
    let wait = backoff_ms(r.attempt).max(after.map(|d| d.as_millis() as i64).unwrap_or(0));
    r.claimed_by.clear();
    r.claim_until = None;
    r.retry_at = Some(ts(now + wait));
    r.last_error = error.chars().take(300).collect();
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn claims_backoff_and_delivery_records() {
        assert_eq!((backoff_ms(1), backoff_ms(2), backoff_ms(3), backoff_ms(30)), (1_000, 2_000, 4_000, 60_000));
        let fresh = Read::default();
        let c = claimed(&fresh, "hook", "g", "a", 1_000, 7_000);
        assert_eq!((c.attempt, ms(&c.claim_until)), (1, Some(8_000)));
        let read = Read { record: Some(c.clone()), revision: Some(1) };
        assert_eq!(read.claimed_by_other("b", 2_000), Some(8_000));
        assert_eq!(read.claimed_by_other("a", 2_000), None);
        assert_eq!(read.claimed_by_other("b", 9_000), None, "a dead sender's claim ends");
        let f = failed(c, "HTTP 500", Some(Duration::from_secs(5)), 2_000);
        let read = Read { record: Some(f.clone()), revision: Some(2) };
        assert_eq!(read.retry_at(2_500), Some(7_000), "Retry-After beats the 1 s backoff");
        assert_eq!(read.claimed_by_other("b", 2_500), None);
        let again = claimed(&read, "hook", "g", "b", 7_000, 7_000);
        assert_eq!(again.attempt, 2);
        let set: BTreeSet<String> = ["x".to_owned()].into();
        let d = delivered(again, &set, &BTreeSet::new(), 7_100);
        let read = Read { record: Some(d), revision: Some(3) };
        assert_eq!(read.delivered().unwrap().firing, set);
        assert_eq!(read.delivered().unwrap().at, Some(7_100));
        assert!(read.retry_at(7_200).is_none() && read.claimed_by_other("a", 7_200).is_none());
        assert_eq!(key("hook", "g").len(), 32);
    }
}
