//! Pre-trade risk: one order intent checked against the limits, the trading state
//! and what the engine knows now (position, exposure, open orders, the day's PnL,
//! the market). Pure: the time comes in as an argument, so tests use a fake clock.
//!
//! Each refusal is a typed [`Denial`] whose `kind` labels metrics and whose text
//! names the numbers. An order that only reduces a position passes the checks
//! that exist to stop risk growing (REDUCING, the daily loss, position and
//! exposure limits), so a desk can always get out.

use std::collections::VecDeque;
use std::fmt;
use std::time::Duration;

use serde::Deserialize;
use sluice_domain::{Decimal, Side};
use sluice_rate::Time;

/// What the service may do now.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TradingState {
    Active,
    /// Only orders that reduce a position.
    Reducing,
    /// Nothing but cancels; every open order is cancelled.
    Halted,
}

impl TradingState {
    pub fn as_str(self) -> &'static str {
        match self {
            TradingState::Active => "active",
            TradingState::Reducing => "reducing",
            TradingState::Halted => "halted",
        }
    }
}

/// Limits, per account (notional amounts in the symbol's quote currency). `None`:
/// not limited.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    pub max_order_notional: Option<Decimal>,
    /// Per symbol: |position + same-side open orders| x price.
    pub max_position_notional: Option<Decimal>,
    /// Sum over symbols of |position| x mark, with the order.
    pub max_gross_exposure: Option<Decimal>,
    pub max_open_orders: Option<usize>,
    pub max_orders_per_minute: Option<usize>,
    /// Realized plus unrealized PnL since the UTC day began, as a positive loss.
    pub daily_loss_limit: Option<Decimal>,
    /// The order's price may differ from the last trade by at most this share
    /// (0.05 = 5 %): a fat finger is refused.
    pub price_band: Option<Decimal>,
    /// Market data older than this refuses every order on the symbol.
    #[serde(rename = "max_data_age_ms", with = "millis")]
    pub max_data_age: Duration,
}

mod millis {
    use serde::{Deserialize, Deserializer};
    use std::time::Duration;

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        Ok(Duration::from_millis(u64::deserialize(d)?))
    }
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            max_order_notional: None,
            max_position_notional: None,
            max_gross_exposure: None,
            max_open_orders: Some(50),
            max_orders_per_minute: Some(60),
            daily_loss_limit: None,
            price_band: Some(Decimal::new(5, 2)),
            max_data_age: Duration::from_secs(5),
        }
    }
}

/// The order being checked.
#[derive(Debug, Clone, PartialEq)]
pub struct Intent {
    pub side: Side,
    pub quantity: Decimal,
    /// The limit price, or for a market order the worst price its slippage cap
    /// allows.
    pub price: Decimal,
    /// The market may not be sold short (spot).
    pub spot: bool,
}

/// What the engine knows about the account and the symbol at the time of the check.
#[derive(Debug, Clone, PartialEq)]
pub struct Exposure {
    /// Signed position in the base asset (spot: what is held).
    pub position: Decimal,
    /// Open orders' remaining quantity on the order's side, on this symbol.
    pub open_same_side: Decimal,
    /// Sum over the account's symbols of |position| x mark, without this order.
    pub gross: Decimal,
    pub open_orders: usize,
    /// Realized plus unrealized since the UTC day began.
    pub day_pnl: Decimal,
    /// The last trade's price and when it was seen, if any.
    pub last_trade: Option<(Decimal, Time)>,
    /// When the symbol's market data last arrived (book or trade).
    pub market_time: Option<Time>,
}

/// Why an order was refused.
#[derive(Debug, Clone, PartialEq)]
pub enum Denial {
    Halted,
    /// REDUCING, or past the daily loss: only reducing orders.
    NotReducing {
        state: &'static str,
        position: Decimal,
    },
    /// Spot cannot be sold short.
    Short {
        quantity: Decimal,
        held: Decimal,
    },
    OrderNotional {
        notional: Decimal,
        max: Decimal,
    },
    Position {
        notional: Decimal,
        max: Decimal,
    },
    GrossExposure {
        gross: Decimal,
        max: Decimal,
    },
    OpenOrders {
        open: usize,
        max: usize,
    },
    OrderRate {
        in_last_minute: usize,
        max: usize,
    },
    DailyLoss {
        loss: Decimal,
        max: Decimal,
    },
    PriceBand {
        price: Decimal,
        last: Decimal,
        band: Decimal,
    },
    StaleData {
        age: Duration,
        max: Duration,
    },
    NoMarketData,
    InvalidOrder {
        reason: String,
    },
}

impl Denial {
    /// A short label (metrics, NATS).
    pub fn kind(&self) -> &'static str {
        match self {
            Denial::Halted => "halted",
            Denial::NotReducing { .. } => "not_reducing",
            Denial::Short { .. } => "short",
            Denial::OrderNotional { .. } => "order_notional",
            Denial::Position { .. } => "position",
            Denial::GrossExposure { .. } => "gross_exposure",
            Denial::OpenOrders { .. } => "open_orders",
            Denial::OrderRate { .. } => "order_rate",
            Denial::DailyLoss { .. } => "daily_loss",
            Denial::PriceBand { .. } => "price_band",
            Denial::StaleData { .. } => "stale_data",
            Denial::NoMarketData => "no_market_data",
            Denial::InvalidOrder { .. } => "invalid_order",
        }
    }
}

impl fmt::Display for Denial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Denial::Halted => write!(f, "trading is halted: only cancels are accepted"),
            Denial::NotReducing { state, position } => {
                write!(f, "{state}: only orders that reduce the position ({position}) are accepted")
            }
            Denial::Short { quantity, held } => write!(f, "spot cannot be sold short: selling {quantity} with {held} held"),
            Denial::OrderNotional { notional, max } => write!(f, "order notional {notional} is above the maximum {max}"),
            Denial::Position { notional, max } => write!(f, "the position would be {notional} in notional, above the maximum {max}"),
            Denial::GrossExposure { gross, max } => write!(f, "gross exposure would be {gross}, above the maximum {max}"),
            Denial::OpenOrders { open, max } => write!(f, "{open} orders are open; the maximum is {max}"),
            Denial::OrderRate { in_last_minute, max } => write!(f, "{in_last_minute} orders in the last minute; the maximum is {max}"),
            Denial::DailyLoss { loss, max } => write!(f, "today's loss {loss} has reached the limit {max}: only reducing orders"),
            Denial::PriceBand { price, last, band } => {
                write!(f, "price {price} is more than {} % from the last trade {last}", band * Decimal::ONE_HUNDRED)
            }
            Denial::StaleData { age, max } => {
                write!(f, "market data is {} ms old, older than {} ms", age.as_millis(), max.as_millis())
            }
            Denial::NoMarketData => write!(f, "no market data for the symbol yet"),
            Denial::InvalidOrder { reason } => f.write_str(reason),
        }
    }
}

/// The times of recent orders of an account, for the order rate.
#[derive(Debug, Clone, Default)]
pub struct OrderRate {
    times: VecDeque<Time>,
}

impl OrderRate {
    const WINDOW: Duration = Duration::from_secs(60);

    /// Orders sent in the minute before `now`.
    pub fn in_last_minute(&mut self, now: Time) -> usize {
        while self.times.front().is_some_and(|t| *t + Self::WINDOW <= now) {
            self.times.pop_front();
        }
        self.times.len()
    }

    /// An order was let through at `now`.
    pub fn record(&mut self, now: Time) {
        self.times.push_back(now);
    }
}

/// Whether the order only reduces the position (opposite side, not beyond it).
pub fn reduces(side: Side, quantity: Decimal, position: Decimal) -> bool {
    match side {
        Side::Sell => position > Decimal::ZERO && quantity <= position,
        Side::Buy => position < Decimal::ZERO && quantity <= -position,
    }
}

/// Checks `order` at `now`; the first refusal found, in the order a desk reads
/// them: the state, the market, then the limits.
pub fn check(limits: &Limits, state: TradingState, order: &Intent, x: &Exposure, rate: &mut OrderRate, now: Time) -> Result<(), Denial> {
    if order.quantity <= Decimal::ZERO || order.price <= Decimal::ZERO {
        return Err(Denial::InvalidOrder {
            reason: format!("quantity {} and price {} must both be positive", order.quantity, order.price),
        });
    }
    if state == TradingState::Halted {
        return Err(Denial::Halted);
    }
    let reducing = reduces(order.side, order.quantity, x.position);
    if state == TradingState::Reducing && !reducing {
        return Err(Denial::NotReducing { state: "reducing", position: x.position });
    }
    if order.spot && order.side == Side::Sell && order.quantity > x.position {
        return Err(Denial::Short { quantity: order.quantity, held: x.position.max(Decimal::ZERO) });
    }
    let Some(market_time) = x.market_time else { return Err(Denial::NoMarketData) };
    let age = now.saturating_since(market_time);
    if age > limits.max_data_age {
        return Err(Denial::StaleData { age, max: limits.max_data_age });
    }
    if let (Some(band), Some((last, _))) = (limits.price_band, x.last_trade)
        && last > Decimal::ZERO
        && ((order.price - last).abs() / last) > band
    {
        return Err(Denial::PriceBand { price: order.price, last, band });
    }
    let notional = order.quantity * order.price;
    if let Some(max) = limits.max_order_notional
        && notional > max
    {
        return Err(Denial::OrderNotional { notional, max });
    }
    if let (Some(max), false) = (limits.daily_loss_limit, reducing) {
        let loss = -x.day_pnl;
        if loss >= max {
            return Err(Denial::DailyLoss { loss, max });
        }
    }
    if !reducing {
        let signed = match order.side {
            Side::Buy => x.position + x.open_same_side + order.quantity,
            Side::Sell => x.position - x.open_same_side - order.quantity,
        };
        let position_notional = signed.abs() * order.price;
        if let Some(max) = limits.max_position_notional
            && position_notional > max
        {
            return Err(Denial::Position { notional: position_notional, max });
        }
        if let Some(max) = limits.max_gross_exposure {
            let gross = x.gross + notional;
            if gross > max {
                return Err(Denial::GrossExposure { gross, max });
            }
        }
    }
    if let Some(max) = limits.max_open_orders
        && x.open_orders >= max
    {
        return Err(Denial::OpenOrders { open: x.open_orders, max });
    }
    if let Some(max) = limits.max_orders_per_minute {
        let n = rate.in_last_minute(now);
        if n >= max {
            return Err(Denial::OrderRate { in_last_minute: n, max });
        }
    }
    rate.record(now);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use sluice_rate::{Clock, FakeClock};

    fn d(s: &str) -> Decimal {
        s.parse().unwrap()
    }

    fn limits() -> Limits {
        Limits {
            max_order_notional: Some(d("1000")),
            max_position_notional: Some(d("2000")),
            max_gross_exposure: Some(d("5000")),
            max_open_orders: Some(3),
            max_orders_per_minute: Some(5),
            daily_loss_limit: Some(d("100")),
            price_band: Some(d("0.05")),
            max_data_age: Duration::from_secs(5),
        }
    }

    fn buy(q: &str, p: &str) -> Intent {
        Intent { side: Side::Buy, quantity: d(q), price: d(p), spot: true }
    }

    fn sell(q: &str, p: &str) -> Intent {
        Intent { side: Side::Sell, ..buy(q, p) }
    }

    fn flat(now: Time) -> Exposure {
        Exposure {
            position: Decimal::ZERO,
            open_same_side: Decimal::ZERO,
            gross: Decimal::ZERO,
            open_orders: 0,
            day_pnl: Decimal::ZERO,
            last_trade: Some((d("100"), now)),
            market_time: Some(now),
        }
    }

    #[test]
    fn each_limit_denies_with_its_reason() {
        let clock = FakeClock::new(Time::from_millis(1_000_000));
        let now = clock.now();
        let l = limits();
        let deny = |o: Intent, x: Exposure| check(&l, TradingState::Active, &o, &x, &mut OrderRate::default(), now).unwrap_err();
        assert!(check(&l, TradingState::Active, &buy("5", "100"), &flat(now), &mut OrderRate::default(), now).is_ok());
        let cases: Vec<(Denial, &str)> = vec![
            (deny(buy("11", "100"), flat(now)), "order_notional"),
            (deny(buy("9", "100"), Exposure { position: d("12"), ..flat(now) }), "position"),
            (deny(buy("5", "100"), Exposure { open_same_side: d("16"), ..flat(now) }), "position"),
            (deny(buy("9", "100"), Exposure { gross: d("4500"), ..flat(now) }), "gross_exposure"),
            (deny(buy("1", "100"), Exposure { open_orders: 3, ..flat(now) }), "open_orders"),
            (deny(buy("1", "100"), Exposure { day_pnl: d("-100"), ..flat(now) }), "daily_loss"),
            (deny(buy("1", "106"), flat(now)), "price_band"),
            (deny(buy("1", "94"), flat(now)), "price_band"),
            (deny(buy("1", "100"), Exposure { market_time: Some(now - Duration::from_secs(6)), ..flat(now) }), "stale_data"),
            (deny(buy("1", "100"), Exposure { market_time: None, ..flat(now) }), "no_market_data"),
            (deny(sell("1", "100"), flat(now)), "short"),
            (deny(buy("0", "100"), flat(now)), "invalid_order"),
        ];
        for (denial, kind) in cases {
            assert_eq!(denial.kind(), kind, "{denial}");
        }
        assert_eq!(
            deny(buy("1", "106"), flat(now)).to_string(),
            "price 106 is more than 5.00 % from the last trade 100",
            "the text names the numbers"
        );
    }

    #[test]
    fn the_order_rate_counts_a_sliding_minute() {
        let clock = FakeClock::new(Time::from_millis(0));
        let l = limits();
        let mut rate = OrderRate::default();
        for _ in 0..5 {
            let now = clock.now();
            check(&l, TradingState::Active, &buy("1", "100"), &flat(now), &mut rate, now).unwrap();
            clock.advance(Duration::from_secs(10));
        }
        let now = clock.now();
        let e = check(&l, TradingState::Active, &buy("1", "100"), &flat(now), &mut rate, now).unwrap_err();
        assert_eq!(e, Denial::OrderRate { in_last_minute: 5, max: 5 });
        // A minute after the first, one place is free again.
        clock.advance(Duration::from_secs(10));
        let now = clock.now();
        assert!(check(&l, TradingState::Active, &buy("1", "100"), &flat(now), &mut rate, now).is_ok());
    }

    #[test]
    fn reducing_halted_and_past_the_loss_only_reduce() {
        let now = Time::from_millis(5_000);
        let l = limits();
        let long = Exposure { position: d("3"), ..flat(now) };
        let mut rate = OrderRate::default();
        assert_eq!(check(&l, TradingState::Halted, &sell("1", "100"), &long, &mut rate, now), Err(Denial::Halted));
        assert!(check(&l, TradingState::Reducing, &sell("3", "100"), &long, &mut rate, now).is_ok());
        let beyond = check(&l, TradingState::Reducing, &sell("4", "100"), &long, &mut rate, now).unwrap_err();
        assert_eq!(beyond.kind(), "not_reducing", "selling past the position is not reducing");
        assert_eq!(check(&l, TradingState::Reducing, &buy("1", "100"), &long, &mut rate, now).unwrap_err().kind(), "not_reducing");
        // Past the daily loss: reducing still goes (and bigger than the limits allow).
        let losing = Exposure { day_pnl: d("-150"), position: d("30"), ..flat(now) };
        assert!(check(&l, TradingState::Active, &sell("9", "100"), &losing, &mut rate, now).is_ok());
        assert_eq!(check(&l, TradingState::Active, &buy("1", "100"), &losing, &mut rate, now).unwrap_err().kind(), "daily_loss");
        // A short on a linear market may grow, within the limits.
        let linear = Intent { spot: false, ..sell("5", "100") };
        assert!(check(&l, TradingState::Active, &linear, &flat(now), &mut rate, now).is_ok());
    }
}
