//! Idempotency keys: a call repeated with the same key (per exchange and account)
//! is never sent to the exchange twice. While the first is in flight, repeats wait
//! for its answer; afterwards they get it replayed. A first call that may have
//! reached the exchange without an answer (transport failure) leaves the key
//! "outcome unknown": repeats are refused until the caller has looked (Binance: "a
//! 5xx means the outcome is UNKNOWN: query before retrying"). Reusing a key for a
//! different request is refused.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use sluice_domain::Exchange;
use tokio::sync::watch;
use tonic::Status;

/// The answer shared with repeats.
pub(crate) type Shared = Arc<sluice_proto::dispatcher::v1::CallResponse>;

type Key = (Exchange, String, String);

enum Entry {
    InFlight { fingerprint: Fingerprint, done: watch::Receiver<Option<Shared>> },
    Done { fingerprint: Fingerprint, answer: Shared, expires: Instant },
    Unknown { fingerprint: Fingerprint, expires: Instant },
}

/// What to do with a call carrying a key.
pub(crate) enum Begin {
    /// First of its key: send it, then report through the guard.
    Fresh(Guard),
    /// Another call with this key is in flight: wait for its answer.
    Wait(watch::Receiver<Option<Shared>>),
    /// Already answered: replay.
    Replay(Shared),
    /// The key was used for a different request.
    Mismatch,
    /// An earlier call with this key may have reached the exchange unanswered.
    OutcomeUnknown,
    /// Too many keys remembered.
    Full,
}

/// How a fresh call ended, for its key.
pub(crate) enum Ending {
    Answered(Shared),
    /// Never left the dispatcher: the key is free again.
    NotSent,
    /// May have reached the exchange.
    Unknown,
}

/// The keys remembered by one dispatcher.
pub(crate) struct Idempotency {
    // A std mutex: every operation is a few map lookups and never awaits.
    entries: Mutex<HashMap<Key, Entry>>,
    ttl: Duration,
    capacity: usize,
}

/// Finishes a fresh call's key; dropping it unfinished frees the key.
pub(crate) struct Guard {
    owner: Arc<Idempotency>,
    key: Option<Key>,
    fingerprint: Fingerprint,
    tx: watch::Sender<Option<Shared>>,
}

impl Guard {
    pub(crate) fn finish(mut self, ending: Ending) {
        let Some(key) = self.key.take() else { return };
        let expires = Instant::now() + self.owner.ttl;
        let mut map = self.owner.lock();
        match ending {
            Ending::Answered(answer) => {
                let _ = self.tx.send(Some(answer.clone()));
                map.insert(key, Entry::Done { fingerprint: self.fingerprint, answer, expires });
            }
            Ending::Unknown => {
                map.insert(key, Entry::Unknown { fingerprint: self.fingerprint, expires });
            }
            Ending::NotSent => {
                map.remove(&key);
            }
        }
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        if let Some(key) = self.key.take() {
            self.owner.lock().remove(&key);
        }
    }
}

/// SHA-256 of the request, to catch a key reused for something else. Stable across
/// processes and versions, so replicas compare it too.
pub(crate) type Fingerprint = [u8; 32];

pub(crate) fn fingerprint(method: &str, path: &str, query: &str, body: &[u8]) -> Fingerprint {
    let mut h = Sha256::new();
    for part in [method.as_bytes(), path.as_bytes(), query.as_bytes(), body] {
        // Length-prefixed, so ("ab", "c") and ("a", "bc") differ.
        h.update((part.len() as u64).to_be_bytes());
        h.update(part);
    }
    h.finalize().into()
}

/// The answer to a retry whose first call may have reached the exchange unanswered.
pub(crate) fn outcome_unknown(key: &str) -> Status {
    Status::failed_precondition(format!(
        "an earlier call with idempotency key '{key}' may have reached the exchange without an answer; query its outcome (e.g. by client order id) before retrying"
    ))
}

impl Idempotency {
    pub(crate) fn new(ttl: Duration, capacity: usize) -> Arc<Self> {
        Arc::new(Idempotency { entries: Mutex::new(HashMap::new()), ttl, capacity })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Key, Entry>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(crate) fn begin(self: &Arc<Self>, exchange: Exchange, account: &str, key: &str, fp: Fingerprint) -> Begin {
        let k = (exchange, account.to_owned(), key.to_owned());
        let now = Instant::now();
        let mut map = self.lock();
        match map.get(&k) {
            Some(Entry::InFlight { fingerprint, done }) => {
                return if *fingerprint == fp { Begin::Wait(done.clone()) } else { Begin::Mismatch };
            }
            Some(Entry::Done { fingerprint, answer, expires }) if *expires > now => {
                return if *fingerprint == fp { Begin::Replay(answer.clone()) } else { Begin::Mismatch };
            }
            Some(Entry::Unknown { fingerprint, expires }) if *expires > now => {
                return if *fingerprint == fp { Begin::OutcomeUnknown } else { Begin::Mismatch };
            }
            _ => {}
        }
        if map.len() >= self.capacity {
            map.retain(|_, e| match e {
                Entry::InFlight { .. } => true,
                Entry::Done { expires, .. } | Entry::Unknown { expires, .. } => *expires > now,
            });
            if map.len() >= self.capacity {
                return Begin::Full;
            }
        }
        let (tx, rx) = watch::channel(None);
        map.insert(k.clone(), Entry::InFlight { fingerprint: fp, done: rx });
        Begin::Fresh(Guard { owner: self.clone(), key: Some(k), fingerprint: fp, tx })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_proto::dispatcher::v1::CallResponse;

    fn answer(status: u32) -> Shared {
        Arc::new(CallResponse { status, ..CallResponse::default() })
    }

    #[tokio::test]
    async fn repeats_wait_then_replay_and_never_run_twice() {
        let idem = Idempotency::new(Duration::from_secs(60), 10);
        let Begin::Fresh(guard) = idem.begin(Exchange::Upbit, "a", "k1", [7; 32]) else { panic!() };
        let Begin::Wait(mut rx) = idem.begin(Exchange::Upbit, "a", "k1", [7; 32]) else { panic!("in flight: wait") };
        assert!(matches!(idem.begin(Exchange::Upbit, "a", "k1", [8; 32]), Begin::Mismatch));
        assert!(matches!(idem.begin(Exchange::Upbit, "b", "k1", [8; 32]), Begin::Fresh(_)), "keys are per account");
        guard.finish(Ending::Answered(answer(201)));
        rx.changed().await.unwrap();
        assert_eq!(rx.borrow().as_ref().unwrap().status, 201);
        let Begin::Replay(a) = idem.begin(Exchange::Upbit, "a", "k1", [7; 32]) else { panic!() };
        assert_eq!(a.status, 201);
    }

    #[test]
    fn unsent_frees_the_key_and_unknown_blocks_it() {
        let idem = Idempotency::new(Duration::from_secs(60), 10);
        let Begin::Fresh(g) = idem.begin(Exchange::Okx, "a", "k", [1; 32]) else { panic!() };
        g.finish(Ending::NotSent);
        let Begin::Fresh(g) = idem.begin(Exchange::Okx, "a", "k", [1; 32]) else { panic!("free again") };
        g.finish(Ending::Unknown);
        assert!(matches!(idem.begin(Exchange::Okx, "a", "k", [1; 32]), Begin::OutcomeUnknown));
        let Begin::Fresh(g) = idem.begin(Exchange::Okx, "a", "other", [1; 32]) else { panic!() };
        drop(g);
        assert!(matches!(idem.begin(Exchange::Okx, "a", "other", [1; 32]), Begin::Fresh(_)), "a dropped guard frees its key");
    }

    #[test]
    fn bounded() {
        let idem = Idempotency::new(Duration::from_secs(60), 2);
        let mut keep = Vec::new();
        for k in ["a", "b"] {
            let Begin::Fresh(g) = idem.begin(Exchange::Okx, "x", k, [1; 32]) else { panic!() };
            keep.push(g);
        }
        assert!(matches!(idem.begin(Exchange::Okx, "x", "c", [1; 32]), Begin::Full));
        assert_eq!(fingerprint("GET", "/a", "q", b""), fingerprint("GET", "/a", "q", b""));
        assert_ne!(fingerprint("GET", "/a", "q", b""), fingerprint("GET", "/a", "q2", b""));
    }
}
