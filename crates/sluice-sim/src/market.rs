//! The simulated market of one exchange: per instrument a mid price on a random walk,
//! an order book around it with an update id that rises with every change, trades,
//! and one-minute candles. Seeded, so runs repeat; exact decimals throughout.

use std::collections::{BTreeMap, VecDeque};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rust_decimal::Decimal;
use rust_decimal::prelude::ToPrimitive;
use sluice_domain::{Exchange, Symbol};

use crate::config::MarketConfig;

/// Levels kept on each side of a book.
pub const DEPTH: usize = 50;
const KEEP_TRADES: usize = 1000;
const KEEP_CANDLES: usize = 1000;
const MINUTE_MS: u64 = 60_000;

/// Price and quantity levels, best first.
pub type Levels = Vec<(Decimal, Decimal)>;

/// An order book: price to quantity on each side.
#[derive(Debug, Clone, Default)]
pub struct Book {
    pub bids: BTreeMap<Decimal, Decimal>,
    pub asks: BTreeMap<Decimal, Decimal>,
    /// Rises by one with every level change (Binance `u`, OKX `seqId`).
    pub update_id: u64,
    /// Rises by one with every step that changed the book (Bybit `u`).
    pub seq: u64,
}

impl Book {
    pub fn best_bid(&self) -> Option<(Decimal, Decimal)> {
        self.bids.iter().next_back().map(|(p, q)| (*p, *q))
    }

    pub fn best_ask(&self) -> Option<(Decimal, Decimal)> {
        self.asks.iter().next().map(|(p, q)| (*p, *q))
    }

    /// The best `n` levels: bids high to low, asks low to high.
    pub fn top(&self, n: usize) -> (Levels, Levels) {
        let bids = self.bids.iter().rev().take(n).map(|(p, q)| (*p, *q)).collect();
        let asks = self.asks.iter().take(n).map(|(p, q)| (*p, *q)).collect();
        (bids, asks)
    }
}

/// One trade on the tape.
#[derive(Debug, Clone)]
pub struct Trade {
    pub id: u64,
    pub price: Decimal,
    pub qty: Decimal,
    /// True when the buyer took liquidity.
    pub buyer_taker: bool,
    pub ts_ms: u64,
}

/// A one-minute candle.
#[derive(Debug, Clone)]
pub struct Candle {
    pub open_ms: u64,
    pub open: Decimal,
    pub high: Decimal,
    pub low: Decimal,
    pub close: Decimal,
    pub volume: Decimal,
    pub quote_volume: Decimal,
    pub trades: u64,
}

/// A change to a book level (quantity zero removes it), for the feeds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LevelChange {
    pub bid: bool,
    pub price: Decimal,
    pub qty: Decimal,
    pub update_id: u64,
}

/// Something that happened in the market during a step.
#[derive(Debug, Clone)]
pub enum Event {
    Book { native: String, changes: Vec<LevelChange> },
    Trade { native: String, trade: Trade },
}

/// One instrument's state.
#[derive(Debug, Clone)]
pub struct Instrument {
    pub symbol: Symbol,
    pub native: String,
    pub tick: Decimal,
    pub lot: Decimal,
    /// The smallest order value accepted.
    pub min_notional: Decimal,
    pub mid: Decimal,
    pub book: Book,
    pub trades: VecDeque<Trade>,
    /// Oldest first; the last one is the current minute.
    pub candles: VecDeque<Candle>,
    /// The price 24 hours ago (previous close).
    pub prev_close: Decimal,
    next_trade_id: u64,
    /// The market's current regime and how many steps it has left.
    regime: Regime,
    regime_left: u32,
}

/// How a market moves for a while: trends (a drift of a tick every few steps on
/// top of the noise) and ranges (noise pulled back toward where the range
/// began), so trend-following signals have something to find.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Regime {
    Up,
    Down,
    Range { centre: Decimal },
}

impl Instrument {
    pub fn last_price(&self) -> Decimal {
        self.trades.back().map_or(self.mid, |t| t.price)
    }

    /// Candles of the last 24 hours (as many as are kept).
    pub fn day(&self) -> impl Iterator<Item = &Candle> {
        let n = self.candles.len().saturating_sub(24 * 60);
        self.candles.iter().skip(n)
    }

    pub fn day_high(&self) -> Decimal {
        self.day().map(|c| c.high).max().unwrap_or(self.mid)
    }

    pub fn day_low(&self) -> Decimal {
        self.day().map(|c| c.low).min().unwrap_or(self.mid)
    }

    pub fn day_volume(&self) -> Decimal {
        self.day().map(|c| c.volume).sum()
    }

    pub fn day_quote_volume(&self) -> Decimal {
        self.day().map(|c| c.quote_volume).sum()
    }

    pub fn day_open(&self) -> Decimal {
        self.day().next().map_or(self.mid, |c| c.open)
    }
}

/// The market of one exchange.
#[derive(Debug)]
pub struct Market {
    pub exchange: Exchange,
    instruments: BTreeMap<String, Instrument>,
    rng: StdRng,
}

fn round_to(v: Decimal, step: Decimal) -> Decimal {
    ((v / step).floor() * step).normalize()
}

impl Market {
    pub fn new(exchange: Exchange, markets: &[MarketConfig], seed: u64, now_ms: u64) -> Self {
        let mut rng = StdRng::seed_from_u64(seed ^ (exchange as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
        let mut instruments = BTreeMap::new();
        for m in markets.iter().filter(|m| m.exchanges.contains(&exchange)) {
            let native = m.symbol.native(exchange);
            let mid = round_to(m.price, m.tick);
            let candles = history(&mut rng, mid, m.tick, m.lot, now_ms);
            let prev_close = candles.front().map_or(mid, |c| c.open);
            let mut inst = Instrument {
                symbol: m.symbol.clone(),
                native: native.clone(),
                tick: m.tick,
                lot: m.lot,
                mid,
                book: Book::default(),
                trades: VecDeque::new(),
                candles,
                prev_close,
                next_trade_id: 1,
                regime: Regime::Range { centre: mid },
                regime_left: 0,
                min_notional: m.min_notional(),
            };
            let _ = rebuild_book(&mut rng, &mut inst);
            instruments.insert(native, inst);
        }
        Market { exchange, instruments, rng }
    }

    pub fn instrument(&self, native: &str) -> Option<&Instrument> {
        self.instruments.get(native)
    }

    pub fn instruments(&self) -> impl Iterator<Item = &Instrument> {
        self.instruments.values()
    }

    /// Every asset its instruments trade (base or quote), in order: the coins
    /// an exchange's currency lists name.
    pub fn assets(&self) -> Vec<String> {
        let set: std::collections::BTreeSet<String> =
            self.instruments().flat_map(|i| [i.symbol.base.to_string(), i.symbol.quote.to_string()]).collect();
        set.into_iter().collect()
    }

    /// Prints a trade of `qty` at `price` on `native` now (a test's or the control
    /// endpoint's doing, as if another trader had taken that liquidity): it is on
    /// the tape, in the candle and in the events like any other trade.
    pub fn print_trade(&mut self, native: &str, price: Decimal, qty: Decimal, now_ms: u64) -> Option<Event> {
        let inst = self.instruments.get_mut(native)?;
        let buyer_taker = inst.book.best_ask().is_some_and(|(a, _)| price >= a);
        let trade = Trade { id: inst.next_trade_id, price, qty, buyer_taker, ts_ms: now_ms };
        inst.next_trade_id += 1;
        record_trade(inst, &trade);
        Some(Event::Trade { native: native.to_owned(), trade })
    }

    /// Moves the market one step: prices walk (trending or ranging), books
    /// change, trades print.
    pub fn step(&mut self, now_ms: u64) -> Vec<Event> {
        let mut events = Vec::new();
        for inst in self.instruments.values_mut() {
            if inst.regime_left == 0 {
                // A regime lasts 30 s to 3 min at the shipped 100 ms step.
                inst.regime_left = self.rng.random_range(300..=1800);
                inst.regime = match self.rng.random_range(0..3u8) {
                    0 => Regime::Up,
                    1 => Regime::Down,
                    _ => Regime::Range { centre: inst.mid },
                };
            }
            inst.regime_left -= 1;
            let noise: i64 = self.rng.random_range(-2..=2);
            // Trends drift about 0.5 % of the price in five minutes (3,000 steps),
            // whatever the tick, in whole ticks drawn so the mean is right; ranges
            // lean back toward where they began.
            let trend = || {
                let ticks = inst.mid * Decimal::new(17, 7) / inst.tick;
                let whole = ticks.trunc();
                (whole, (ticks - whole).to_f64().unwrap_or(0.0).clamp(0.0, 1.0))
            };
            let drift: i64 = match inst.regime {
                Regime::Up | Regime::Down => {
                    let (whole, frac) = trend();
                    let step = whole.to_i64().unwrap_or(0) + i64::from(self.rng.random_bool(frac));
                    if inst.regime == Regime::Up { step } else { -step }
                }
                Regime::Range { centre } if inst.mid > centre + inst.tick * Decimal::from(20) => -1,
                Regime::Range { centre } if inst.mid < centre - inst.tick * Decimal::from(20) => 1,
                Regime::Range { .. } => 0,
            };
            let moved = inst.mid + inst.tick * Decimal::from(noise + drift);
            if moved > inst.tick * Decimal::from(10) {
                inst.mid = moved;
            }
            let mut changes = rebuild_book(&mut self.rng, inst);
            for _ in 0..3 {
                let bid = self.rng.random_bool(0.5);
                let side = if bid { &inst.book.bids } else { &inst.book.asks };
                if side.is_empty() {
                    continue;
                }
                let i = self.rng.random_range(0..side.len());
                let price = *side.keys().nth(i).expect("index in range");
                let qty = random_qty(&mut self.rng, inst.lot);
                inst.book.update_id += 1;
                if bid {
                    inst.book.bids.insert(price, qty)
                } else {
                    inst.book.asks.insert(price, qty)
                };
                changes.push(LevelChange { bid, price, qty, update_id: inst.book.update_id });
            }
            if !changes.is_empty() {
                inst.book.seq += 1;
                events.push(Event::Book { native: inst.native.clone(), changes });
            }
            for _ in 0..self.rng.random_range(0..=2) {
                let buyer_taker = self.rng.random_bool(0.5);
                let level = if buyer_taker { inst.book.best_ask() } else { inst.book.best_bid() };
                let Some((price, _)) = level else { continue };
                let qty = round_to(random_qty(&mut self.rng, inst.lot) / Decimal::from(10), inst.lot).max(inst.lot);
                let trade = Trade { id: inst.next_trade_id, price, qty, buyer_taker, ts_ms: now_ms };
                inst.next_trade_id += 1;
                record_trade(inst, &trade);
                events.push(Event::Trade { native: inst.native.clone(), trade });
            }
        }
        events
    }
}

fn random_qty(rng: &mut StdRng, lot: Decimal) -> Decimal {
    // Between 0.01 and 1 of the base asset, in whole lots.
    let units = if lot < Decimal::ONE { (Decimal::ONE / lot).floor() } else { Decimal::ONE };
    let k = Decimal::from(rng.random_range(1..=100u32));
    round_to(lot * units * k / Decimal::from(100), lot).max(lot)
}

/// Re-centres the book on the mid price and fills it to [`DEPTH`] levels a side.
fn rebuild_book(rng: &mut StdRng, inst: &mut Instrument) -> Vec<LevelChange> {
    let mut changes = Vec::new();
    let best_bid = inst.mid - inst.tick;
    let best_ask = inst.mid + inst.tick;
    let lowest_bid = best_bid - inst.tick * Decimal::from(DEPTH as u64 - 1);
    let highest_ask = best_ask + inst.tick * Decimal::from(DEPTH as u64 - 1);
    let book = &mut inst.book;
    let stale_bids: Vec<Decimal> = book.bids.keys().filter(|p| **p > best_bid || **p < lowest_bid).copied().collect();
    for p in stale_bids {
        book.bids.remove(&p);
        book.update_id += 1;
        changes.push(LevelChange { bid: true, price: p, qty: Decimal::ZERO, update_id: book.update_id });
    }
    let stale_asks: Vec<Decimal> = book.asks.keys().filter(|p| **p < best_ask || **p > highest_ask).copied().collect();
    for p in stale_asks {
        book.asks.remove(&p);
        book.update_id += 1;
        changes.push(LevelChange { bid: false, price: p, qty: Decimal::ZERO, update_id: book.update_id });
    }
    for i in 0..DEPTH as u64 {
        let off = inst.tick * Decimal::from(i);
        for (bid, price) in [(true, best_bid - off), (false, best_ask + off)] {
            if price <= Decimal::ZERO {
                continue;
            }
            let side = if bid { &mut book.bids } else { &mut book.asks };
            if let std::collections::btree_map::Entry::Vacant(e) = side.entry(price) {
                let qty = random_qty(rng, inst.lot);
                e.insert(qty);
                book.update_id += 1;
                changes.push(LevelChange { bid, price, qty, update_id: book.update_id });
            }
        }
    }
    changes
}

fn record_trade(inst: &mut Instrument, t: &Trade) {
    let open_ms = t.ts_ms - t.ts_ms % MINUTE_MS;
    let quote = t.price * t.qty;
    match inst.candles.back_mut() {
        Some(c) if c.open_ms == open_ms => {
            c.high = c.high.max(t.price);
            c.low = c.low.min(t.price);
            c.close = t.price;
            c.volume += t.qty;
            c.quote_volume += quote;
            c.trades += 1;
        }
        _ => {
            inst.candles.push_back(Candle {
                open_ms,
                open: t.price,
                high: t.price,
                low: t.price,
                close: t.price,
                volume: t.qty,
                quote_volume: quote,
                trades: 1,
            });
            if inst.candles.len() > KEEP_CANDLES {
                inst.candles.pop_front();
            }
        }
    }
    inst.trades.push_back(t.clone());
    if inst.trades.len() > KEEP_TRADES {
        inst.trades.pop_front();
    }
}

/// Past candles ending at `mid`, walked backwards.
fn history(rng: &mut StdRng, mid: Decimal, tick: Decimal, lot: Decimal, now_ms: u64) -> VecDeque<Candle> {
    let mut out = VecDeque::with_capacity(300);
    let mut close = mid;
    let current = now_ms - now_ms % MINUTE_MS;
    // Newest first, each pushed in front: the deque ends oldest to newest.
    for k in 0..300u64 {
        let steps: i64 = rng.random_range(-20..=20);
        let open = (close - tick * Decimal::from(steps)).max(tick);
        let high = open.max(close) + tick * Decimal::from(rng.random_range(0..=10u32));
        let low = (open.min(close) - tick * Decimal::from(rng.random_range(0..=10u32))).max(tick);
        let volume = random_qty(rng, lot) * Decimal::from(rng.random_range(1..=50u32));
        let avg = (high + low) / Decimal::TWO;
        out.push_front(Candle {
            open_ms: current - (k + 1) * MINUTE_MS,
            open,
            high,
            low,
            close,
            volume,
            quote_volume: (volume * avg).round_dp(8),
            trades: rng.random_range(1..=200),
        });
        close = open;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::SimConfig;

    #[test]
    fn books_stay_sane_and_update_ids_rise() {
        let cfg = SimConfig::shipped();
        let mut m = Market::new(Exchange::Binance, &cfg.markets, 1, 1_700_000_000_000);
        let mut last = m.instrument("BTCUSDT").unwrap().book.update_id;
        for i in 0..500 {
            let events = m.step(1_700_000_000_000 + i * 100);
            for e in &events {
                if let Event::Book { changes, native } = e {
                    if native != "BTCUSDT" {
                        continue;
                    }
                    for c in changes {
                        assert_eq!(c.update_id, last + 1);
                        last = c.update_id;
                    }
                }
            }
            let inst = m.instrument("BTCUSDT").unwrap();
            let (bid, ask) = (inst.book.best_bid().unwrap().0, inst.book.best_ask().unwrap().0);
            assert!(bid < ask, "crossed book {bid} >= {ask}");
            assert_eq!(inst.book.bids.len(), DEPTH);
            assert!(inst.book.bids.keys().all(|p| (*p / inst.tick).fract().is_zero()), "prices on the tick");
        }
    }

    #[test]
    fn the_history_ends_at_the_last_minute_at_the_price_now() {
        let cfg = SimConfig::shipped();
        let now = 1_700_000_030_000;
        let m = Market::new(Exchange::Binance, &cfg.markets, 1, now);
        let i = m.instrument("BTCUSDT").unwrap();
        let (first, last) = (i.candles.front().unwrap(), i.candles.back().unwrap());
        assert_eq!(last.open_ms, now - now % MINUTE_MS - MINUTE_MS, "the newest candle is the last whole minute");
        assert_eq!(last.close, i.mid);
        assert!(
            first.open_ms < last.open_ms && i.candles.iter().zip(i.candles.iter().skip(1)).all(|(a, b)| a.open_ms < b.open_ms),
            "oldest first"
        );
    }

    #[test]
    fn markets_trend_for_minutes_not_only_wander() {
        let cfg = SimConfig::shipped();
        let mut m = Market::new(Exchange::Binance, &cfg.markets, 3, 1_700_000_000_000);
        let mut mids = Vec::new();
        for i in 0..9000u64 {
            m.step(1_700_000_000_000 + i * 100);
            mids.push(m.instrument("BTCUSDT").unwrap().mid);
        }
        // Noise alone moves BTCUSDT about 0.01 % in five minutes; a trend 0.5 %.
        let five_min = 3000;
        let biggest = (0..mids.len() - five_min).map(|t| ((mids[t + five_min] - mids[t]) / mids[t]).abs()).max().unwrap();
        assert!(biggest > Decimal::new(3, 3), "largest five-minute move {biggest}");
    }

    #[test]
    fn same_seed_same_market() {
        let cfg = SimConfig::shipped();
        let mut a = Market::new(Exchange::Okx, &cfg.markets, 9, 1_700_000_000_000);
        let mut b = Market::new(Exchange::Okx, &cfg.markets, 9, 1_700_000_000_000);
        for i in 0..50 {
            a.step(1_700_000_000_000 + i * 100);
            b.step(1_700_000_000_000 + i * 100);
        }
        assert_eq!(a.instrument("BTC-USDT").unwrap().mid, b.instrument("BTC-USDT").unwrap().mid);
        let (ca, cb) = (&a.instrument("BTC-USDT").unwrap().candles, &b.instrument("BTC-USDT").unwrap().candles);
        assert!(ca.len() >= 300);
        assert_eq!(ca.back().unwrap().close, cb.back().unwrap().close);
    }
}
