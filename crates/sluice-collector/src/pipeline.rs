//! From parsed market data to NATS messages: keeps each symbol's order book,
//! encodes the `sluice.md.v1` messages and names their subjects, and counts what
//! each stream did. Pure (no I/O), so the benchmark and the tests drive it directly.

use std::collections::HashMap;

use bytes::Bytes;
use prost::Message;
use rust_decimal::Decimal;
use sluice_domain::{Exchange, Symbol};
use sluice_proto::md::v1 as pb;

use crate::book::{Best, Book, Outcome, State};
use crate::config::{Channel, FeedConfig, Market};
use crate::event::{Aggressor, BookMsg, Levels, Md};

/// A message ready for NATS.
#[derive(Debug, Clone)]
pub struct Output {
    pub subject: String,
    pub payload: Bytes,
    /// The book this message shows, if any: when it cannot be published, the next
    /// depth message of that book is sent without waiting for its interval.
    pub book: Option<String>,
}

/// What the connection must do for a book to become whole again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Need {
    /// Subscribe to the book again for a fresh snapshot (Bybit, OKX).
    Resubscribe(String),
    /// Fetch the REST snapshot (Binance).
    RestSnapshot(String),
}

/// How one stream is doing, for metrics, heartbeats and the watchdog.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StreamStat {
    pub messages: u64,
    pub gaps: u64,
    pub resyncs: u64,
    /// Receive time of the last message, ns since the epoch.
    pub last_ns: i64,
    /// The book's state (book streams only).
    pub book: Option<State>,
    /// The highest trade sequence seen (trade streams).
    pub last_seq: u64,
}

struct Names {
    symbol: String,
    subjects: [String; 5],
}

const TRADE: usize = 0;
const TICKER: usize = 1;
const TOP: usize = 2;
const DEPTH: usize = 3;
const CANDLE: usize = 4;

struct Slot {
    book: Book,
    top: Best,
    last_depth_ns: i64,
    /// Publish depth at the next change regardless of the interval.
    force_depth: bool,
    /// Changed since the last depth message (sent by `flush` when the interval ends).
    pending: bool,
}

pub struct Pipeline {
    exchange: Exchange,
    market: &'static str,
    collector: String,
    names: HashMap<String, Names>,
    books: HashMap<String, Slot>,
    depth_levels: usize,
    depth_interval_ns: i64,
    /// Per symbol, per channel (indexed by `Channel::index`): looked up by `&str`,
    /// so counting a message allocates nothing.
    stats: HashMap<String, [StreamStat; 4]>,
    /// Two connections carry the same streams (a planned replacement): a trade
    /// whose sequence is not above the last one seen was already published.
    overlap: bool,
}

fn dec(d: Decimal) -> String {
    d.to_string()
}

fn level(l: Option<(Decimal, Decimal)>) -> Option<pb::Level> {
    l.map(|(p, q)| pb::Level { price: dec(p), qty: dec(q) })
}

fn levels(v: &Levels) -> Vec<pb::Level> {
    v.iter().map(|(p, q)| pb::Level { price: dec(*p), qty: dec(*q) }).collect()
}

fn opt(d: Option<Decimal>) -> String {
    d.map(dec).unwrap_or_default()
}

impl Pipeline {
    pub fn new(feed: &FeedConfig, collector: &str, depth_levels: usize, depth_interval_ms: u64) -> Pipeline {
        let venue = feed.venue();
        let names = feed
            .symbols
            .iter()
            .map(|s: &Symbol| {
                let token = format!("{}-{}", s.base, s.quote);
                let subject = |ch: &str| format!("md.{venue}.{ch}.{token}");
                let n = Names {
                    symbol: s.to_string(),
                    subjects: [subject("trade"), subject("ticker"), subject("book"), subject("depth"), subject("candle")],
                };
                (s.native(feed.exchange), n)
            })
            .collect();
        Pipeline {
            exchange: feed.exchange,
            market: if feed.market == Market::Linear { "linear" } else { "spot" },
            collector: collector.to_owned(),
            names,
            books: HashMap::new(),
            depth_levels,
            depth_interval_ns: (depth_interval_ms as i64) * 1_000_000,
            stats: HashMap::new(),
            overlap: false,
        }
    }

    /// While two connections carry the same streams, trades are published once:
    /// books already skip deltas they have applied, and tickers and candles are
    /// states that may repeat.
    pub fn set_overlap(&mut self, on: bool) {
        self.overlap = on;
    }

    /// Every stream that has seen a message: channel, symbol and its counts.
    pub fn streams(&self) -> impl Iterator<Item = (Channel, &str, StreamStat)> {
        self.stats
            .iter()
            .flat_map(|(n, per)| Channel::ALL.into_iter().map(move |c| (c, n.as_str(), per[c.index()])))
            .filter(|s| s.2.messages > 0)
    }

    /// Receive time of the last message on `channel` of `native`, if any.
    pub fn last_ns(&self, channel: Channel, native: &str) -> Option<i64> {
        self.stats.get(native).map(|p| p[channel.index()].last_ns).filter(|t| *t > 0)
    }

    fn source(&self, n: &Names, native: &str, ts_ms: u64, recv_ns: i64, sequence: u64) -> pb::Source {
        pb::Source {
            exchange: self.exchange.as_str().to_owned(),
            market: self.market.to_owned(),
            symbol: n.symbol.clone(),
            native: native.to_owned(),
            exchange_ts_ns: (ts_ms as i64).saturating_mul(1_000_000),
            receive_ts_ns: recv_ns,
            sequence,
            collector: self.collector.clone(),
        }
    }

    fn count(&mut self, ch: Channel, native: &str, recv_ns: i64, f: impl FnOnce(&mut StreamStat)) {
        let per = match self.stats.get_mut(native) {
            Some(p) => p,
            None => self.stats.entry(native.to_owned()).or_default(),
        };
        let s = &mut per[ch.index()];
        s.messages += 1;
        s.last_ns = recv_ns;
        f(s);
    }

    /// Handles one parsed message. A symbol this pipeline does not serve is ignored.
    pub fn on_md(&mut self, md: Md, recv_ns: i64, out: &mut Vec<Output>, needs: &mut Vec<Need>) {
        match md {
            Md::Trade(t) => {
                let Some(n) = self.names.get(&t.native) else { return };
                // Only Binance's trade ids are known to rise (Upbit's sequential_id
                // is unique but not ordered).
                if self.overlap
                    && self.exchange == Exchange::Binance
                    && t.seq != 0
                    && self.stats.get(&t.native).is_some_and(|p| t.seq <= p[Channel::Trade.index()].last_seq)
                {
                    return;
                }
                let m = pb::Trade {
                    source: Some(self.source(n, &t.native, t.ts_ms, recv_ns, t.seq)),
                    trade_id: t.id,
                    price: dec(t.price),
                    qty: dec(t.qty),
                    aggressor: match t.aggressor {
                        Aggressor::Buyer => pb::Aggressor::Buyer,
                        Aggressor::Seller => pb::Aggressor::Seller,
                        Aggressor::Unknown => pb::Aggressor::Unspecified,
                    } as i32,
                };
                out.push(Output { subject: n.subjects[TRADE].clone(), payload: m.encode_to_vec().into(), book: None });
                self.count(Channel::Trade, &t.native, recv_ns, |s| s.last_seq = s.last_seq.max(t.seq));
            }
            Md::Ticker(t) => {
                let Some(n) = self.names.get(&t.native) else { return };
                let (bid, ask) = (t.bid.unwrap_or_default(), t.ask.unwrap_or_default());
                let m = pb::Ticker {
                    source: Some(self.source(n, &t.native, t.ts_ms, recv_ns, 0)),
                    last: opt(t.last),
                    best_bid: opt(t.bid.map(|b| b.0)),
                    best_bid_qty: if t.bid.is_some() { dec(bid.1) } else { String::new() },
                    best_ask: opt(t.ask.map(|a| a.0)),
                    best_ask_qty: if t.ask.is_some() { dec(ask.1) } else { String::new() },
                    open_24h: opt(t.open),
                    high_24h: opt(t.high),
                    low_24h: opt(t.low),
                    volume_24h: opt(t.volume),
                    quote_volume_24h: opt(t.quote_volume),
                };
                out.push(Output { subject: n.subjects[TICKER].clone(), payload: m.encode_to_vec().into(), book: None });
                self.count(Channel::Ticker, &t.native, recv_ns, |_| {});
            }
            Md::Candle(c) => {
                let Some(n) = self.names.get(&c.native) else { return };
                let m = pb::Candle {
                    source: Some(self.source(n, &c.native, c.ts_ms, recv_ns, 0)),
                    interval: "1m".into(),
                    open_ts_ns: (c.open_ms as i64).saturating_mul(1_000_000),
                    open: dec(c.open),
                    high: dec(c.high),
                    low: dec(c.low),
                    close: dec(c.close),
                    volume: dec(c.volume),
                    quote_volume: dec(c.quote_volume),
                };
                out.push(Output { subject: n.subjects[CANDLE].clone(), payload: m.encode_to_vec().into(), book: None });
                self.count(Channel::Candle, &c.native, recv_ns, |_| {});
            }
            Md::Book(b) => self.on_book(b, recv_ns, out, needs),
        }
    }

    fn slot(&mut self, native: &str) -> &mut Slot {
        let ex = self.exchange;
        self.books.entry(native.to_owned()).or_insert_with(|| Slot {
            book: Book::new(ex),
            top: (None, None),
            last_depth_ns: 0,
            force_depth: true,
            pending: false,
        })
    }

    fn on_book(&mut self, b: BookMsg, recv_ns: i64, out: &mut Vec<Output>, needs: &mut Vec<Need>) {
        if !self.names.contains_key(&b.native) {
            return;
        }
        let native = b.native.clone();
        let (ts, seq) = (b.ts_ms, b.seq);
        let outcome = self.slot(&native).book.apply(b);
        self.after(&native, outcome, ts, seq, recv_ns, out, needs);
    }

    /// Binance: the REST snapshot of `native` arrived.
    #[allow(clippy::too_many_arguments)]
    pub fn on_rest_snapshot(
        &mut self,
        native: &str,
        last_update_id: u64,
        bids: Levels,
        asks: Levels,
        recv_ns: i64,
        out: &mut Vec<Output>,
        needs: &mut Vec<Need>,
    ) {
        if !self.names.contains_key(native) {
            return;
        }
        let outcome = self.slot(native).book.rest_snapshot(last_update_id, bids, asks);
        self.after(native, outcome, 0, last_update_id, recv_ns, out, needs);
    }

    #[allow(clippy::too_many_arguments)]
    fn after(&mut self, native: &str, outcome: Outcome, ts_ms: u64, seq: u64, recv_ns: i64, out: &mut Vec<Output>, needs: &mut Vec<Need>) {
        self.outcome(native, outcome, ts_ms, seq, recv_ns, out, needs);
        self.note_book_state(native);
    }

    /// Copies a book's state into its stream's counts (for the heartbeat).
    fn note_book_state(&mut self, native: &str) {
        let state = self.books.get(native).map(|s| s.book.state());
        if let Some(per) = self.stats.get_mut(native) {
            per[Channel::Book.index()].book = state;
        }
    }

    #[allow(clippy::too_many_arguments)]
    fn outcome(
        &mut self,
        native: &str,
        outcome: Outcome,
        ts_ms: u64,
        seq: u64,
        recv_ns: i64,
        out: &mut Vec<Output>,
        needs: &mut Vec<Need>,
    ) {
        let exchange = self.exchange;
        match outcome {
            Outcome::Applied => {
                self.count(Channel::Book, native, recv_ns, |_| {});
                self.publish_book(native, ts_ms, seq, recv_ns, out);
            }
            Outcome::Buffered | Outcome::Stale => self.count(Channel::Book, native, recv_ns, |_| {}),
            Outcome::Resync(why) => {
                let gap = matches!(why, crate::book::Resync::Gap { .. });
                tracing::info!(%exchange, symbol = native, reason = %why, "book resync");
                self.count(Channel::Book, native, recv_ns, |s| {
                    s.resyncs += 1;
                    s.gaps += u64::from(gap);
                });
                self.publish_resyncing(native, recv_ns, out);
                needs.push(if exchange == Exchange::Binance {
                    Need::RestSnapshot(native.to_owned())
                } else {
                    Need::Resubscribe(native.to_owned())
                });
            }
        }
    }

    fn publish_resyncing(&mut self, native: &str, recv_ns: i64, out: &mut Vec<Output>) {
        let Some(n) = self.names.get(native) else { return };
        let source = self.source(n, native, 0, recv_ns, 0);
        let state = pb::BookState::Resyncing as i32;
        let top = pb::BookTop { source: Some(source.clone()), state, bid: None, ask: None };
        let depth = pb::BookDepth { source: Some(source), state, bids: Vec::new(), asks: Vec::new() };
        out.push(Output { subject: n.subjects[TOP].clone(), payload: top.encode_to_vec().into(), book: None });
        out.push(Output { subject: n.subjects[DEPTH].clone(), payload: depth.encode_to_vec().into(), book: None });
        let slot = self.slot(native);
        slot.top = (None, None);
        slot.force_depth = true;
    }

    fn publish_book(&mut self, native: &str, ts_ms: u64, seq: u64, recv_ns: i64, out: &mut Vec<Output>) {
        let levels_n = self.depth_levels;
        let interval = self.depth_interval_ns;
        let Some(slot) = self.books.get_mut(native) else { return };
        let best = slot.book.best();
        let top_changed = best != slot.top;
        let depth_due = slot.force_depth || recv_ns - slot.last_depth_ns >= interval;
        slot.pending = !depth_due;
        if !top_changed && !depth_due {
            return;
        }
        let depth = depth_due.then(|| slot.book.top(levels_n));
        if depth.is_some() {
            slot.last_depth_ns = recv_ns;
            slot.force_depth = false;
        }
        slot.top = best;
        let Some(n) = self.names.get(native) else { return };
        let source = self.source(n, native, ts_ms, recv_ns, seq);
        let state = pb::BookState::Live as i32;
        if top_changed {
            let m = pb::BookTop { source: Some(source.clone()), state, bid: level(best.0), ask: level(best.1) };
            out.push(Output { subject: n.subjects[TOP].clone(), payload: m.encode_to_vec().into(), book: Some(native.to_owned()) });
        }
        if let Some((bids, asks)) = depth {
            let m = pb::BookDepth { source: Some(source), state, bids: levels(&bids), asks: levels(&asks) };
            out.push(Output { subject: n.subjects[DEPTH].clone(), payload: m.encode_to_vec().into(), book: Some(native.to_owned()) });
        }
    }

    /// Sends the depth of every live book that changed after its last depth message
    /// once its interval has passed, so the last state of a quiet book is not held back.
    pub fn flush(&mut self, now_ns: i64, out: &mut Vec<Output>) {
        let due: Vec<String> = self
            .books
            .iter()
            .filter(|(_, s)| s.pending && s.book.state() == State::Live && now_ns - s.last_depth_ns >= self.depth_interval_ns)
            .map(|(n, _)| n.clone())
            .collect();
        for n in due {
            if let Some(s) = self.books.get_mut(&n) {
                s.force_depth = true;
            }
            let seq = self.books.get(&n).map_or(0, |s| s.book.sequence());
            self.publish_book(&n, 0, seq, now_ns, out);
        }
    }

    /// After a reconnect every book waits for a fresh snapshot; consumers are told.
    pub fn reset_books(&mut self, recv_ns: i64, out: &mut Vec<Output>) {
        let natives: Vec<String> = self.books.keys().cloned().collect();
        for n in natives {
            if let Some(s) = self.books.get_mut(&n) {
                s.book.reset();
            }
            self.note_book_state(&n);
            self.publish_resyncing(&n, recv_ns, out);
        }
    }

    /// A message about `native`'s book could not be published: its consumers have a
    /// stale picture, so the next depth goes out at once.
    pub fn dropped(&mut self, native: &str) {
        if let Some(s) = self.books.get_mut(native) {
            s.force_depth = true;
            s.top = (None, None);
        }
    }

    /// The state and best levels of a book (for tests and the live summary).
    pub fn book(&self, native: &str) -> Option<(State, Levels, Levels)> {
        self.books.get(native).map(|s| {
            let (b, a) = s.book.top(usize::MAX);
            (s.book.state(), b, a)
        })
    }
}
