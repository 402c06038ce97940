//! Features of one symbol, computed exactly from the market data on NATS: returns
//! over several horizons, volatility of one-minute returns, spread, volume, order
//! book imbalance, distance to the window's high and low. Pure: inputs carry
//! their own times, nothing reads a clock.
//!
//! The window keeps trades for `span` (bounded in count too); a return whose
//! horizon reaches past the oldest trade kept is left out rather than guessed.

use std::collections::VecDeque;
use std::time::Duration;

use rust_decimal::{Decimal, MathematicalOps};
use sluice_proto::signal::v1 as pb;

/// Horizons of the returns, by name.
pub const HORIZONS: [(&str, Duration); 4] = [
    ("1m", Duration::from_secs(60)),
    ("5m", Duration::from_secs(300)),
    ("15m", Duration::from_secs(900)),
    ("1h", Duration::from_secs(3600)),
];

/// Decimal places of ratios (returns, volatility, imbalance, distances).
const RATIO_DP: u32 = 8;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Trade {
    ts_ns: i64,
    price: Decimal,
    qty: Decimal,
}

/// The best levels: (price, size) each side.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Top {
    pub bid: (Decimal, Decimal),
    pub ask: (Decimal, Decimal),
    pub ts_ns: i64,
}

/// One symbol's recent market data.
#[derive(Debug, Clone)]
pub struct Window {
    span_ns: i64,
    max_trades: usize,
    trades: VecDeque<Trade>,
    top: Option<Top>,
    /// Summed sizes of the top depth levels: (bids, asks).
    depth: Option<(Decimal, Decimal)>,
}

/// What the model sees, plus the price and time it was taken at.
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    pub last: Decimal,
    pub as_of_ns: i64,
    pub features: pb::Features,
}

fn ratio(d: Decimal) -> String {
    d.round_dp(RATIO_DP).normalize().to_string()
}

fn nanos(d: Duration) -> i64 {
    i64::try_from(d.as_nanos()).unwrap_or(i64::MAX)
}

impl Window {
    /// A window of `span`, holding at most `max_trades` trades (the oldest go first).
    pub fn new(span: Duration, max_trades: usize) -> Window {
        Window { span_ns: nanos(span), max_trades: max_trades.max(2), trades: VecDeque::new(), top: None, depth: None }
    }

    /// A trade; out-of-order ones (older than the newest) are placed in order.
    pub fn trade(&mut self, ts_ns: i64, price: Decimal, qty: Decimal) {
        if price <= Decimal::ZERO || qty < Decimal::ZERO {
            return;
        }
        let t = Trade { ts_ns, price, qty };
        let at = self.trades.partition_point(|x| x.ts_ns <= ts_ns);
        self.trades.insert(at, t);
        let newest = self.trades.back().map_or(ts_ns, |t| t.ts_ns);
        while self.trades.len() > self.max_trades || self.trades.front().is_some_and(|t| newest - t.ts_ns > self.span_ns) {
            self.trades.pop_front();
        }
    }

    /// Older history: each candle's close as a trade at the end of its minute.
    pub fn seed(&mut self, candles: &[crate::backfill::Candle]) {
        for c in candles {
            let end_ns = i64::try_from((c.open_ms + 59_999) * 1_000_000).unwrap_or(i64::MAX);
            self.trade(end_ns, c.close, c.volume);
        }
    }

    pub fn top(&mut self, top: Top) {
        self.top = Some(top);
    }

    /// The book's top levels (price, size), best first.
    pub fn depth(&mut self, bids: &[(Decimal, Decimal)], asks: &[(Decimal, Decimal)]) {
        let sum = |l: &[(Decimal, Decimal)]| l.iter().map(|(_, q)| *q).sum::<Decimal>();
        self.depth = Some((sum(bids), sum(asks)));
    }

    /// The newest trade price and time.
    pub fn last(&self) -> Option<(Decimal, i64)> {
        self.trades.back().map(|t| (t.price, t.ts_ns))
    }

    /// The price at or just before `ts_ns`, if the window reaches back that far.
    fn price_at(&self, ts_ns: i64) -> Option<Decimal> {
        let i = self.trades.partition_point(|t| t.ts_ns <= ts_ns);
        (i > 0).then(|| self.trades[i - 1].price)
    }

    /// The features now, or `None` before the first trade.
    pub fn snapshot(&self) -> Option<Snapshot> {
        let newest = self.trades.back()?;
        let last = newest.price;
        let now = newest.ts_ns;
        let returns = HORIZONS
            .iter()
            .map(|(name, h)| {
                let then = self.price_at(now - nanos(*h));
                pb::HorizonReturn { horizon: (*name).to_owned(), value: then.map(|p| ratio((last - p) / p)).unwrap_or_default() }
            })
            .collect();
        let high = self.trades.iter().map(|t| t.price).max().unwrap_or(last);
        let low = self.trades.iter().map(|t| t.price).min().unwrap_or(last);
        let volume: Decimal = self.trades.iter().map(|t| t.qty).sum();
        let spread_bp = self.top.and_then(|t| {
            let mid = (t.bid.0 + t.ask.0) / Decimal::TWO;
            (!mid.is_zero() && t.ask.0 >= t.bid.0)
                .then(|| ((t.ask.0 - t.bid.0) / mid * Decimal::from(10_000)).round_dp(2).normalize().to_string())
        });
        // Depth sums when there is depth, else the best levels' sizes.
        let sizes = self.depth.or(self.top.map(|t| (t.bid.1, t.ask.1)));
        let imbalance = sizes.and_then(|(b, a)| (!(b + a).is_zero()).then(|| ratio((b - a) / (b + a))));
        let features = pb::Features {
            last_price: last.normalize().to_string(),
            returns,
            volatility: self.volatility().map(ratio).unwrap_or_default(),
            spread_bp: spread_bp.unwrap_or_default(),
            volume: volume.normalize().to_string(),
            book_imbalance: imbalance.unwrap_or_default(),
            to_high: ratio((high - last) / last),
            to_low: ratio((last - low) / last),
            trades: u32::try_from(self.trades.len()).unwrap_or(u32::MAX),
            window: Some(sluice_proto::prost_types::Duration {
                seconds: self.span_ns / 1_000_000_000,
                nanos: (self.span_ns % 1_000_000_000) as i32,
            }),
            as_of_ns: now,
        };
        Some(Snapshot { last, as_of_ns: now, features })
    }

    /// Sample standard deviation of the returns between consecutive one-minute
    /// closes (the last trade of each minute); `None` with fewer than two returns.
    fn volatility(&self) -> Option<Decimal> {
        const MINUTE: i64 = 60_000_000_000;
        let mut closes: Vec<Decimal> = Vec::new();
        let mut bar = None;
        for t in &self.trades {
            let b = t.ts_ns.div_euclid(MINUTE);
            if bar == Some(b) {
                *closes.last_mut().expect("a bar has a close") = t.price;
            } else {
                closes.push(t.price);
                bar = Some(b);
            }
        }
        let rets: Vec<Decimal> = closes.windows(2).map(|w| (w[1] - w[0]) / w[0]).collect();
        if rets.len() < 2 {
            return None;
        }
        let n = Decimal::from(rets.len());
        let mean = rets.iter().sum::<Decimal>() / n;
        let var = rets.iter().map(|r| (r - mean) * (r - mean)).sum::<Decimal>() / (n - Decimal::ONE);
        var.sqrt()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> Decimal {
        s.parse().unwrap()
    }

    const S: i64 = 1_000_000_000;

    #[test]
    fn a_backfilled_window_has_every_horizon_at_once() {
        let mut w = Window::new(Duration::from_secs(3600), 1000);
        let candles: Vec<crate::backfill::Candle> = (0..61u64)
            .map(|m| crate::backfill::Candle { open_ms: m * 60_000, close: Decimal::from(100 + m), volume: Decimal::ONE })
            .collect();
        w.seed(&candles);
        w.trade(61 * 60 * S, d("200"), d("1"));
        let f = w.snapshot().unwrap().features;
        for h in ["1m", "5m", "15m"] {
            assert!(f.returns.iter().any(|r| r.horizon == h && !r.value.is_empty()), "{h}: {:?}", f.returns);
        }
        assert!(!f.volatility.is_empty());
    }

    #[test]
    fn returns_reach_only_as_far_back_as_the_window() {
        let mut w = Window::new(Duration::from_secs(3600), 10_000);
        assert!(w.snapshot().is_none());
        w.trade(0, d("100"), d("1"));
        w.trade(60 * S, d("101"), d("2"));
        w.trade(5 * 60 * S, d("99"), d("1"));
        w.trade(6 * 60 * S, d("102"), d("0.5"));
        let f = w.snapshot().unwrap().features;
        let r: Vec<(&str, &str)> = f.returns.iter().map(|r| (r.horizon.as_str(), r.value.as_str())).collect();
        // 1m: vs 99 at 5:00 (the price at or before 5:00); 5m: vs 101 at 1:00.
        assert_eq!(r, [("1m", "0.03030303"), ("5m", "0.00990099"), ("15m", ""), ("1h", "")]);
        assert_eq!((f.last_price.as_str(), f.volume.as_str(), f.trades), ("102", "4.5", 4));
        assert_eq!((f.to_high.as_str(), f.to_low.as_str()), ("0", "0.02941176"));
    }

    #[test]
    fn volatility_spread_and_imbalance_are_exact() {
        let mut w = Window::new(Duration::from_secs(3600), 10_000);
        // Minute closes 100, 110, 99: returns +0.1 and -0.1; sample sd = sqrt(0.02) = 0.14142136.
        for (m, p) in [(0, "100"), (1, "110"), (2, "99")] {
            w.trade(m * 60 * S + S, d(p), d("1"));
        }
        w.top(Top { bid: (d("98.9"), d("3")), ask: (d("99.1"), d("1")), ts_ns: 0 });
        let f = w.snapshot().unwrap().features;
        assert_eq!(f.volatility, "0.14142136");
        // Spread 0.2 on a mid of 99: 20.20 bp; sizes 3 vs 1: +0.5.
        assert_eq!((f.spread_bp.as_str(), f.book_imbalance.as_str()), ("20.2", "0.5"));
        w.depth(&[(d("98.9"), d("1")), (d("98.8"), d("1"))], &[(d("99.1"), d("6"))]);
        assert_eq!(w.snapshot().unwrap().features.book_imbalance, "-0.5");
    }

    #[test]
    fn the_window_is_bounded_in_time_and_count_and_keeps_order() {
        let mut w = Window::new(Duration::from_secs(60), 3);
        w.trade(10 * S, d("2"), d("1"));
        w.trade(5 * S, d("1"), d("1"));
        assert_eq!(w.last(), Some((d("2"), 10 * S)), "an older trade does not become the last");
        w.trade(100 * S, d("3"), d("1"));
        assert_eq!(w.snapshot().unwrap().features.trades, 1, "trades older than the span are gone");
        for i in 0..5 {
            w.trade(101 * S + i, d("4"), d("1"));
        }
        assert_eq!(w.snapshot().unwrap().features.trades, 3);
        w.trade(102 * S, d("0"), d("1"));
        w.trade(102 * S, d("5"), d("-1"));
        assert_eq!(w.snapshot().unwrap().features.trades, 3, "nonsense trades are ignored");
    }
}
