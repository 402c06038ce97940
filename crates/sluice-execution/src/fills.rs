//! The paper venue's fill model, pure: how an order would execute against the
//! live book and the trades printed on NATS.
//!
//! * Taking liquidity (a market order, or the marketable part of a limit order)
//!   walks the opposite side of the `BookDepth` level by level, at each level's
//!   price, while the price is within the order's limit (a market order's limit
//!   is its slippage cap). What the book cannot fill is left: a market or IOC
//!   order expires it, a GTC limit rests it. FOK fills whole or not at all;
//!   post-only is refused when it would take.
//! * A resting limit order fills from trades: a trade *through* its price (a sell
//!   below a buy's limit, a buy above a sell's) fills it up to the trade's size;
//!   a trade *at* its price fills only `touch_share` of the trade's size (it
//!   waits behind the queue at that level); a trade at a worse price fills nothing.
//!   Resting fills are maker fills at the order's own price.
//! * Fees are the price x quantity x the maker or taker rate, in the quote asset.

use serde::Deserialize;
use sluice_domain::{Decimal, Side};

/// One book level.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Level {
    pub price: Decimal,
    pub qty: Decimal,
}

/// Time in force.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Tif {
    Gtc,
    Ioc,
    Fok,
    PostOnly,
}

/// Maker and taker fee rates (0.001 = 0.1 %).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeeRates {
    pub maker: Decimal,
    pub taker: Decimal,
}

impl FeeRates {
    pub fn fee(&self, price: Decimal, qty: Decimal, maker: bool) -> Decimal {
        price * qty * if maker { self.maker } else { self.taker }
    }
}

/// One execution the model produced.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exec {
    pub price: Decimal,
    pub qty: Decimal,
    pub fee: Decimal,
    pub maker: bool,
}

/// What taking liquidity did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Taken {
    /// These executions; `left` is what the book could not fill within the limit.
    Filled { execs: Vec<Exec>, left: Decimal },
    /// Post-only that would have taken: refused, nothing executed.
    WouldTake,
    /// Fill-or-kill that could not fill whole: nothing executed.
    Killed { available: Decimal },
}

/// Whether `price` is within `limit` for an order on `side`.
fn within(side: Side, price: Decimal, limit: Option<Decimal>) -> bool {
    match (side, limit) {
        (_, None) => true,
        (Side::Buy, Some(l)) => price <= l,
        (Side::Sell, Some(l)) => price >= l,
    }
}

/// Executes an incoming order of `qty` on `side` against `opposite` (asks for a
/// buy, bids for a sell, best first), no worse than `limit`.
pub fn take(side: Side, qty: Decimal, limit: Option<Decimal>, tif: Tif, opposite: &[Level], fees: &FeeRates) -> Taken {
    let crossing: Vec<&Level> = opposite.iter().take_while(|l| within(side, l.price, limit)).collect();
    if tif == Tif::PostOnly {
        return if crossing.is_empty() { Taken::Filled { execs: Vec::new(), left: qty } } else { Taken::WouldTake };
    }
    let available: Decimal = crossing.iter().map(|l| l.qty).sum();
    if tif == Tif::Fok && available < qty {
        return Taken::Killed { available };
    }
    let mut left = qty;
    let mut execs = Vec::new();
    for l in crossing {
        if left.is_zero() {
            break;
        }
        let q = left.min(l.qty);
        if q > Decimal::ZERO {
            execs.push(Exec { price: l.price, qty: q, fee: fees.fee(l.price, q, false), maker: false });
            left -= q;
        }
    }
    Taken::Filled { execs, left }
}

/// The worst price a market order on `side` accepts: `cap` (0.01 = 1 %) away
/// from the best opposite price.
pub fn slippage_limit(side: Side, best: Decimal, cap: Decimal) -> Decimal {
    match side {
        Side::Buy => best * (Decimal::ONE + cap),
        Side::Sell => best * (Decimal::ONE - cap),
    }
}

/// A trade printed at `price` for `size`: what it fills of a resting order on
/// `side` at `limit` with `left` to fill.
pub fn on_trade(
    side: Side,
    limit: Decimal,
    left: Decimal,
    price: Decimal,
    size: Decimal,
    touch_share: Decimal,
    fees: &FeeRates,
) -> Option<Exec> {
    let through = match side {
        Side::Buy => price < limit,
        Side::Sell => price > limit,
    };
    let reach = if through {
        size
    } else if price == limit {
        size * touch_share
    } else {
        return None;
    };
    let qty = left.min(reach);
    (qty > Decimal::ZERO).then(|| Exec { price: limit, qty, fee: fees.fee(limit, qty, true), maker: true })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> Decimal {
        s.parse().unwrap()
    }

    fn asks() -> Vec<Level> {
        vec![Level { price: d("100"), qty: d("1") }, Level { price: d("101"), qty: d("2") }, Level { price: d("102"), qty: d("3") }]
    }

    const FEES: FeeRates = FeeRates { maker: Decimal::from_parts(1, 0, 0, false, 3), taker: Decimal::from_parts(2, 0, 0, false, 3) };

    fn filled(t: Taken) -> (Vec<(Decimal, Decimal, Decimal)>, Decimal) {
        match t {
            Taken::Filled { execs, left } => (execs.iter().map(|e| (e.price, e.qty, e.fee)).collect(), left),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_market_order_walks_three_levels_exactly() {
        let (execs, left) = filled(take(Side::Buy, d("4.5"), None, Tif::Ioc, &asks(), &FEES));
        // 1 @ 100, 2 @ 101, 1.5 @ 102; taker fee 0.2 %.
        assert_eq!(execs, vec![(d("100"), d("1"), d("0.200")), (d("101"), d("2"), d("0.404")), (d("102"), d("1.5"), d("0.3060"))]);
        assert_eq!(left, d("0"));
    }

    #[test]
    fn depth_that_runs_out_fills_partly_and_the_cap_stops_the_walk() {
        let (execs, left) = filled(take(Side::Buy, d("10"), None, Tif::Ioc, &asks(), &FEES));
        assert_eq!((execs.len(), left), (3, d("4")));
        // A 1 % cap from the best ask (100) allows up to 101: level 102 is not taken.
        let cap = slippage_limit(Side::Buy, d("100"), d("0.01"));
        let (execs, left) = filled(take(Side::Buy, d("5"), Some(cap), Tif::Ioc, &asks(), &FEES));
        assert_eq!((execs.iter().map(|e| e.1).sum::<Decimal>(), left), (d("3"), d("2")));
        // A sell walks the bids down to its cap.
        let bids = vec![Level { price: d("99"), qty: d("1") }, Level { price: d("97"), qty: d("5") }];
        let (execs, left) = filled(take(Side::Sell, d("3"), Some(slippage_limit(Side::Sell, d("99"), d("0.01"))), Tif::Ioc, &bids, &FEES));
        assert_eq!((execs, left), (vec![(d("99"), d("1"), d("0.198"))], d("2")));
    }

    #[test]
    fn fok_is_whole_or_nothing_and_post_only_never_takes() {
        assert_eq!(take(Side::Buy, d("7"), None, Tif::Fok, &asks(), &FEES), Taken::Killed { available: d("6") });
        assert!(matches!(take(Side::Buy, d("6"), None, Tif::Fok, &asks(), &FEES), Taken::Filled { .. }));
        assert_eq!(take(Side::Buy, d("1"), Some(d("100")), Tif::PostOnly, &asks(), &FEES), Taken::WouldTake);
        assert_eq!(take(Side::Buy, d("1"), Some(d("99.5")), Tif::PostOnly, &asks(), &FEES), Taken::Filled { execs: vec![], left: d("1") });
        // A GTC limit below the ask takes nothing and rests whole.
        assert_eq!(filled(take(Side::Buy, d("2"), Some(d("99")), Tif::Gtc, &asks(), &FEES)), (vec![], d("2")));
    }

    #[test]
    fn a_resting_limit_fills_from_trades_through_it_not_from_worse_ones() {
        let share = d("0.25");
        // A buy at 100: a sell trade at 99.5 goes through it.
        let e = on_trade(Side::Buy, d("100"), d("2"), d("99.5"), d("0.5"), share, &FEES).unwrap();
        assert_eq!((e.price, e.qty, e.fee, e.maker), (d("100"), d("0.5"), d("0.0500"), true));
        // At its price, a quarter of the trade.
        assert_eq!(on_trade(Side::Buy, d("100"), d("2"), d("100"), d("2"), share, &FEES).unwrap().qty, d("0.50"));
        // At a worse price (above a buy's limit): nothing.
        assert_eq!(on_trade(Side::Buy, d("100"), d("2"), d("100.5"), d("9"), share, &FEES), None);
        // Never more than is left.
        assert_eq!(on_trade(Side::Sell, d("100"), d("0.3"), d("101"), d("9"), share, &FEES).unwrap().qty, d("0.3"));
        assert_eq!(on_trade(Side::Sell, d("100"), d("0.3"), d("99"), d("9"), share, &FEES), None);
    }
}
