//! What the engine knows of each market, from the collector's messages on NATS:
//! the book (levels of `BookDepth`, the touch of `BookTop`), the last trade, and
//! when anything last arrived. A book that is resyncing is not trusted: paper
//! orders do not take from it and risk sees no fresh data. Pure: messages and
//! times in, no I/O. A level that does not parse is dropped and counted.

use sluice_domain::{Decimal, Side};
use sluice_proto::md::v1 as md;
use sluice_rate::Time;

use crate::fills::Level;
use crate::strategy::Touch;

/// One market (a venue and a symbol).
#[derive(Debug, Clone, Default)]
pub struct Market {
    /// Bids high to low, asks low to high.
    pub bids: Vec<Level>,
    pub asks: Vec<Level>,
    /// The book is live (not resyncing).
    pub live: bool,
    pub last_trade: Option<(Decimal, Time)>,
    /// When a book or trade message last arrived.
    pub updated: Option<Time>,
    /// Levels or trades that did not parse.
    pub malformed: u64,
}

fn level(l: &md::Level) -> Option<Level> {
    let price: Decimal = l.price.parse().ok()?;
    let qty: Decimal = l.qty.parse().ok()?;
    (price > Decimal::ZERO && qty >= Decimal::ZERO).then_some(Level { price, qty })
}

impl Market {
    fn levels(&mut self, from: &[md::Level]) -> Vec<Level> {
        let parsed: Vec<Level> = from.iter().filter_map(level).filter(|l| l.qty > Decimal::ZERO).collect();
        self.malformed += (from.len() - parsed.len().min(from.len())) as u64;
        parsed
    }

    /// A depth message (the best levels of both sides).
    pub fn depth(&mut self, d: &md::BookDepth, now: Time) {
        self.updated = Some(now);
        if d.state == md::BookState::Live as i32 {
            self.bids = self.levels(&d.bids);
            self.asks = self.levels(&d.asks);
            self.live = true;
        } else {
            self.bids.clear();
            self.asks.clear();
            self.live = false;
        }
    }

    /// A top-of-book message: the best levels replace the first of each side.
    pub fn top(&mut self, t: &md::BookTop, now: Time) {
        self.updated = Some(now);
        if t.state != md::BookState::Live as i32 {
            self.bids.clear();
            self.asks.clear();
            self.live = false;
            return;
        }
        self.live = true;
        for (side, l) in [(&mut self.bids, t.bid.as_ref()), (&mut self.asks, t.ask.as_ref())] {
            if let Some(l) = l.and_then(level) {
                side.retain(|x| x.price != l.price);
                side.insert(0, l);
            }
        }
        // Depth behind a new best must not be better than it.
        if let Some(b) = self.bids.first().map(|l| l.price) {
            self.bids.retain(|x| x.price <= b);
        }
        if let Some(a) = self.asks.first().map(|l| l.price) {
            self.asks.retain(|x| x.price >= a);
        }
    }

    /// A trade; returns its price and size when it parsed.
    pub fn trade(&mut self, t: &md::Trade, now: Time) -> Option<(Decimal, Decimal)> {
        self.updated = Some(now);
        let (Ok(price), Ok(qty)) = (t.price.parse::<Decimal>(), t.qty.parse::<Decimal>()) else {
            self.malformed += 1;
            return None;
        };
        if price <= Decimal::ZERO || qty <= Decimal::ZERO {
            self.malformed += 1;
            return None;
        }
        self.last_trade = Some((price, now));
        Some((price, qty))
    }

    /// The best bid and ask of a live book with both sides.
    pub fn touch(&self) -> Option<Touch> {
        if !self.live {
            return None;
        }
        Some(Touch { bid: self.bids.first()?.price, ask: self.asks.first()?.price })
    }

    /// What an order on `side` takes from: the asks for a buy, the bids for a sell
    /// (nothing while the book is not live).
    pub fn opposite(&self, side: Side) -> &[Level] {
        if !self.live {
            return &[];
        }
        match side {
            Side::Buy => &self.asks,
            Side::Sell => &self.bids,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lv(p: &str, q: &str) -> md::Level {
        md::Level { price: p.into(), qty: q.into() }
    }

    #[test]
    fn books_trades_and_resyncs() {
        let mut m = Market::default();
        let t = Time::from_millis(1);
        m.depth(
            &md::BookDepth {
                state: md::BookState::Live as i32,
                bids: vec![lv("99", "1"), lv("98", "x")],
                asks: vec![lv("101", "2")],
                ..Default::default()
            },
            t,
        );
        assert_eq!(m.touch(), Some(Touch { bid: "99".parse().unwrap(), ask: "101".parse().unwrap() }));
        assert_eq!((m.bids.len(), m.malformed), (1, 1));
        // A new best ask below the old one replaces what is behind it.
        m.top(
            &md::BookTop { state: md::BookState::Live as i32, bid: Some(lv("99", "1")), ask: Some(lv("100", "1")), ..Default::default() },
            t,
        );
        assert_eq!(m.opposite(Side::Buy).iter().map(|l| l.price.to_string()).collect::<Vec<_>>(), vec!["100", "101"]);
        assert_eq!(
            m.trade(&md::Trade { price: "100".into(), qty: "0.5".into(), ..Default::default() }, t),
            Some(("100".parse().unwrap(), "0.5".parse().unwrap()))
        );
        assert_eq!(m.trade(&md::Trade { price: "NaN".into(), qty: "1".into(), ..Default::default() }, t), None);
        m.depth(&md::BookDepth { state: md::BookState::Resyncing as i32, ..Default::default() }, t);
        assert_eq!((m.touch(), m.opposite(Side::Sell).len()), (None, 0));
    }
}
