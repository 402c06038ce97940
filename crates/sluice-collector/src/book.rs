//! An order book kept under its exchange's sequence rules. Pure: messages in,
//! outcomes out; the connection decides how to fetch a fresh snapshot.
//!
//! * Upbit: every message is a whole book.
//! * Bybit: a snapshot, then deltas whose `u` rises by exactly one; a snapshot
//!   (with `u` = 1 after a server restart) replaces the book.
//! * OKX: a snapshot, then updates whose `prevSeqId` equals the last `seqId`.
//! * Binance: deltas are buffered until a REST snapshot arrives; those with
//!   `u <= lastUpdateId` are dropped, the first applied must straddle
//!   `lastUpdateId + 1`, and each later one must start at the previous `u + 1`.
//!
//! A gap never merges: the book is cleared and marked resyncing, and stays empty
//! until a fresh snapshot replaces it, so stale levels cannot survive a gap.

use std::collections::{BTreeMap, VecDeque};

use rust_decimal::Decimal;
use sluice_domain::Exchange;

use crate::event::{BookMsg, Levels};

/// Whether the book can be trusted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    Live,
    Resyncing,
}

/// Why a book had to be rebuilt.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resync {
    /// A sequence number was skipped.
    Gap { expected: u64, got: u64 },
    /// The exchange's snapshot is older than the deltas held (Binance): fetch again.
    SnapshotTooOld { last_update_id: u64, first_held: u64 },
    /// More deltas arrived before the snapshot than the buffer holds.
    BufferFull,
}

impl std::fmt::Display for Resync {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Resync::Gap { expected, got } => write!(f, "sequence gap: expected {expected}, got {got}"),
            Resync::SnapshotTooOld { last_update_id, first_held } => {
                write!(f, "snapshot {last_update_id} is older than the first held delta {first_held}")
            }
            Resync::BufferFull => f.write_str("too many deltas before the snapshot"),
        }
    }
}

/// What a message did to the book.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The book changed.
    Applied,
    /// Held until a snapshot comes (Binance before its REST snapshot).
    Buffered,
    /// Older than the book, or arrived while waiting for a snapshot: ignored.
    Stale,
    /// The book was cleared; a fresh snapshot is needed.
    Resync(Resync),
}

/// The best bid and the best ask (price, quantity), if any.
pub type Best = (Option<(Decimal, Decimal)>, Option<(Decimal, Decimal)>);

/// Deltas held while a Binance snapshot is fetched.
const MAX_BUFFER: usize = 4096;

#[derive(Debug, Clone)]
pub struct Book {
    exchange: Exchange,
    bids: BTreeMap<Decimal, Decimal>,
    asks: BTreeMap<Decimal, Decimal>,
    state: State,
    last: u64,
    /// Binance: the book came from a REST snapshot and no delta was applied yet.
    fresh: bool,
    buffer: VecDeque<BookMsg>,
}

fn set(side: &mut BTreeMap<Decimal, Decimal>, levels: &Levels) {
    for (p, q) in levels {
        if q.is_zero() {
            side.remove(p);
        } else {
            side.insert(*p, *q);
        }
    }
}

impl Book {
    pub fn new(exchange: Exchange) -> Book {
        Book {
            exchange,
            bids: BTreeMap::new(),
            asks: BTreeMap::new(),
            state: State::Resyncing,
            last: 0,
            fresh: false,
            buffer: VecDeque::new(),
        }
    }

    pub fn state(&self) -> State {
        self.state
    }

    /// The last sequence number applied.
    pub fn sequence(&self) -> u64 {
        self.last
    }

    /// Forgets everything and waits for a fresh snapshot (a reconnect, a gap).
    pub fn reset(&mut self) {
        self.bids.clear();
        self.asks.clear();
        self.state = State::Resyncing;
        self.fresh = false;
        self.buffer.clear();
    }

    fn replace(&mut self, m: &BookMsg) {
        self.bids.clear();
        self.asks.clear();
        set(&mut self.bids, &m.bids);
        set(&mut self.asks, &m.asks);
        self.last = m.seq;
        self.state = State::Live;
    }

    fn gap(&mut self, expected: u64, got: u64) -> Outcome {
        self.reset();
        Outcome::Resync(Resync::Gap { expected, got })
    }

    /// Applies one message from the stream.
    pub fn apply(&mut self, m: BookMsg) -> Outcome {
        match self.exchange {
            Exchange::Upbit => {
                if self.state == State::Live && m.seq < self.last {
                    return Outcome::Stale;
                }
                self.replace(&m);
                Outcome::Applied
            }
            Exchange::Bybit | Exchange::Okx if m.snapshot => {
                self.replace(&m);
                Outcome::Applied
            }
            Exchange::Bybit => {
                if self.state != State::Live || m.seq <= self.last {
                    return Outcome::Stale;
                }
                if m.seq != self.last + 1 {
                    return self.gap(self.last + 1, m.seq);
                }
                self.apply_levels(&m);
                Outcome::Applied
            }
            Exchange::Okx => {
                if self.state != State::Live {
                    return Outcome::Stale;
                }
                let prev = m.prev.unwrap_or(-1);
                if u64::try_from(prev).ok() != Some(self.last) {
                    return self.gap(self.last, u64::try_from(prev).unwrap_or(0));
                }
                self.apply_levels(&m);
                Outcome::Applied
            }
            Exchange::Binance => self.binance(m),
        }
    }

    fn apply_levels(&mut self, m: &BookMsg) {
        set(&mut self.bids, &m.bids);
        set(&mut self.asks, &m.asks);
        self.last = m.seq;
    }

    fn binance(&mut self, m: BookMsg) -> Outcome {
        if self.state != State::Live {
            if self.buffer.len() >= MAX_BUFFER {
                self.reset();
                return Outcome::Resync(Resync::BufferFull);
            }
            self.buffer.push_back(m);
            return Outcome::Buffered;
        }
        if m.seq <= self.last {
            return Outcome::Stale;
        }
        let first = m.first.unwrap_or(m.seq);
        let fits = if self.fresh { first <= self.last + 1 } else { first == self.last + 1 };
        if !fits {
            let expected = self.last + 1;
            self.reset();
            // The delta that showed the gap is the first of the next attempt.
            self.buffer.push_back(m);
            return Outcome::Resync(Resync::Gap { expected, got: first });
        }
        self.fresh = false;
        self.apply_levels(&m);
        Outcome::Applied
    }

    /// Binance: the REST snapshot, then every buffered delta that follows it.
    pub fn rest_snapshot(&mut self, last_update_id: u64, bids: Levels, asks: Levels) -> Outcome {
        while self.buffer.front().is_some_and(|d| d.seq <= last_update_id) {
            self.buffer.pop_front();
        }
        if let Some(first) = self.buffer.front().map(|d| d.first.unwrap_or(d.seq))
            && first > last_update_id + 1
        {
            // Keep the deltas: a newer snapshot will still need them.
            return Outcome::Resync(Resync::SnapshotTooOld { last_update_id, first_held: first });
        }
        self.replace(&BookMsg {
            native: String::new(),
            snapshot: true,
            bids,
            asks,
            seq: last_update_id,
            first: None,
            prev: None,
            ts_ms: 0,
        });
        self.fresh = true;
        let held: Vec<BookMsg> = self.buffer.drain(..).collect();
        for d in held {
            if let Outcome::Resync(r) = self.binance(d) {
                return Outcome::Resync(r);
            }
        }
        Outcome::Applied
    }

    /// The best bid and ask.
    pub fn best(&self) -> Best {
        (self.bids.iter().next_back().map(|(p, q)| (*p, *q)), self.asks.iter().next().map(|(p, q)| (*p, *q)))
    }

    /// The best `n` levels: bids high to low, asks low to high.
    pub fn top(&self, n: usize) -> (Levels, Levels) {
        (self.bids.iter().rev().take(n).map(|(p, q)| (*p, *q)).collect(), self.asks.iter().take(n).map(|(p, q)| (*p, *q)).collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> Decimal {
        s.parse().unwrap()
    }

    fn msg(snapshot: bool, seq: u64, bids: &[(&str, &str)], asks: &[(&str, &str)]) -> BookMsg {
        let l = |v: &[(&str, &str)]| v.iter().map(|(p, q)| (d(p), d(q))).collect();
        BookMsg { native: "X".into(), snapshot, bids: l(bids), asks: l(asks), seq, first: None, prev: None, ts_ms: 0 }
    }

    #[test]
    fn bybit_gap_clears_and_the_next_snapshot_replaces_never_merges() {
        let mut b = Book::new(Exchange::Bybit);
        assert_eq!(b.apply(msg(false, 5, &[("1", "1")], &[])), Outcome::Stale, "a delta before any snapshot");
        assert_eq!(b.apply(msg(true, 10, &[("100", "1"), ("99", "2")], &[("101", "1")])), Outcome::Applied);
        assert_eq!(b.apply(msg(false, 11, &[("99", "0")], &[("102", "3")])), Outcome::Applied);
        assert_eq!(b.top(5).0, vec![(d("100"), d("1"))]);
        assert_eq!(b.apply(msg(false, 13, &[("98", "1")], &[])), Outcome::Resync(Resync::Gap { expected: 12, got: 13 }));
        assert_eq!(b.state(), State::Resyncing);
        assert_eq!(b.best(), (None, None));
        assert_eq!(b.apply(msg(false, 14, &[("97", "1")], &[])), Outcome::Stale);
        // Restart: u = 1 replaces whatever was there.
        assert_eq!(b.apply(msg(true, 1, &[("50", "1")], &[("51", "1")])), Outcome::Applied);
        assert_eq!(b.top(5), (vec![(d("50"), d("1"))], vec![(d("51"), d("1"))]));
        assert_eq!(b.apply(msg(false, 2, &[("50", "0")], &[])), Outcome::Applied);
        assert_eq!(b.best().0, None);
    }

    #[test]
    fn okx_follows_the_prev_seq_chain() {
        let mut b = Book::new(Exchange::Okx);
        let mut s = msg(true, 100, &[("10", "1")], &[("11", "1")]);
        s.prev = Some(-1);
        assert_eq!(b.apply(s), Outcome::Applied);
        let mut u = msg(false, 105, &[("10", "2")], &[]);
        u.prev = Some(100);
        assert_eq!(b.apply(u), Outcome::Applied);
        let mut u = msg(false, 111, &[], &[]);
        u.prev = Some(107);
        assert!(matches!(b.apply(u), Outcome::Resync(Resync::Gap { .. })));
    }

    #[test]
    fn binance_buffers_until_the_snapshot_and_drops_what_it_covers() {
        let mut b = Book::new(Exchange::Binance);
        let diff = |first, last, bid: (&str, &str)| {
            let mut m = msg(false, last, &[bid], &[]);
            m.first = Some(first);
            m
        };
        assert_eq!(b.apply(diff(1, 5, ("10", "1"))), Outcome::Buffered);
        assert_eq!(b.apply(diff(6, 9, ("10", "3"))), Outcome::Buffered);
        assert_eq!(b.apply(diff(10, 12, ("9", "1"))), Outcome::Buffered);
        // Snapshot at 7: 1..5 is covered and dropped, 6..9 straddles 8, 10..12 follows.
        assert_eq!(b.rest_snapshot(7, vec![(d("10"), d("2"))], vec![(d("11"), d("1"))]), Outcome::Applied);
        assert_eq!(b.top(5).0, vec![(d("10"), d("3")), (d("9"), d("1"))]);
        assert_eq!(b.sequence(), 12);
        assert_eq!(b.apply(diff(14, 15, ("9", "0"))), Outcome::Resync(Resync::Gap { expected: 13, got: 14 }));
        // A snapshot older than what is held is refused, and the deltas are kept.
        assert!(matches!(b.rest_snapshot(3, vec![], vec![]), Outcome::Resync(Resync::SnapshotTooOld { .. })));
        assert_eq!(b.rest_snapshot(14, vec![(d("9"), d("5"))], vec![]), Outcome::Applied);
        assert_eq!(b.top(5).0, vec![], "14..15 applied after the snapshot at 14 removed 9");
    }

    #[test]
    fn upbit_takes_every_message_whole() {
        let mut b = Book::new(Exchange::Upbit);
        assert_eq!(b.apply(msg(true, 10, &[("1", "1"), ("2", "1")], &[])), Outcome::Applied);
        assert_eq!(b.apply(msg(true, 11, &[("1", "5")], &[])), Outcome::Applied);
        assert_eq!(b.top(5).0, vec![(d("1"), d("5"))]);
        assert_eq!(b.apply(msg(true, 9, &[("3", "1")], &[])), Outcome::Stale);
    }
}
