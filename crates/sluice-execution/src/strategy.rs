//! From a signal to an order: the symbol's strategy says what BUY and SELL mean
//! (a target position), how big the position is (fixed notional or a share of
//! equity, optionally scaled by confidence) and how to place the order (a limit at
//! the touch plus an offset, or a market order under a slippage cap); the order
//! moves the position to the target, rounded to the instrument's rules. Pure.

use std::time::Duration;

use sluice_domain::{Decimal, Side};
use sluice_rate::Time;

use crate::config::{OrderStyle, Sizing, Strategy, Target};
use crate::fills::{Tif, slippage_limit};
use crate::instrument::{RuleError, Rules};

/// A signal's action.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Buy,
    Sell,
    Hold,
}

/// The best prices now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Touch {
    pub bid: Decimal,
    pub ask: Decimal,
}

impl Touch {
    pub fn mid(&self) -> Decimal {
        (self.bid + self.ask) / Decimal::TWO
    }
}

/// How the order is to be placed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Placement {
    Limit {
        price: Decimal,
        tif: Tif,
    },
    /// Walks the book no further than this price.
    Market {
        limit: Decimal,
    },
}

impl Placement {
    /// The worst price the order may execute at (for risk).
    pub fn worst_price(&self) -> Decimal {
        match self {
            Placement::Limit { price, .. } => *price,
            Placement::Market { limit } => *limit,
        }
    }
}

/// An order to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Planned {
    pub side: Side,
    pub quantity: Decimal,
    pub placement: Placement,
    /// It only moves the position toward zero.
    pub reduce_only: bool,
}

/// Why a signal places no order.
#[derive(Debug, Clone, PartialEq)]
pub enum Skip {
    Hold,
    LowConfidence {
        confidence: f64,
        min: f64,
    },
    Cooldown {
        left: Duration,
    },
    AtTarget,
    /// The move is too small to trade (below the minimum quantity or notional).
    TooSmall(RuleError),
}

impl Skip {
    pub fn kind(&self) -> &'static str {
        match self {
            Skip::Hold => "hold",
            Skip::LowConfidence { .. } => "low_confidence",
            Skip::Cooldown { .. } => "cooldown",
            Skip::AtTarget => "at_target",
            Skip::TooSmall(_) => "too_small",
        }
    }
}

/// What the account holds, for sizing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Holding {
    /// Signed position in the base asset.
    pub position: Decimal,
    /// The account's equity in the symbol's quote currency.
    pub equity: Decimal,
}

/// The order a signal calls for, or why none.
#[allow(clippy::too_many_arguments)]
pub fn plan(
    s: &Strategy,
    action: Action,
    confidence: f64,
    holding: Holding,
    touch: Touch,
    rules: &Rules,
    last_order: Option<Time>,
    now: Time,
) -> Result<Planned, Skip> {
    let target = match action {
        Action::Hold => return Err(Skip::Hold),
        Action::Buy => s.buy,
        Action::Sell => s.sell,
    };
    if confidence < s.min_confidence {
        return Err(Skip::LowConfidence { confidence, min: s.min_confidence });
    }
    if let Some(at) = last_order {
        let until = at + Duration::from_millis(s.cooldown_ms);
        if now < until {
            return Err(Skip::Cooldown { left: until.saturating_since(now) });
        }
    }
    let mid = touch.mid();
    let notional = match &s.sizing {
        Sizing::FixedNotional(n) => *n,
        Sizing::EquityShare(share) => holding.equity * share,
    };
    let scale = if s.scale_by_confidence { Decimal::try_from(confidence).unwrap_or(Decimal::ONE).min(Decimal::ONE) } else { Decimal::ONE };
    let size = if mid > Decimal::ZERO { notional * scale / mid } else { Decimal::ZERO };
    let wanted = match target {
        Target::Long => size,
        Target::Flat => Decimal::ZERO,
        Target::Short => -size,
    };
    let delta = wanted - holding.position;
    let side = if delta > Decimal::ZERO { Side::Buy } else { Side::Sell };
    let quantity = rules.round_qty(delta.abs());
    if quantity.is_zero() {
        return Err(Skip::AtTarget);
    }
    let placement = match &s.order {
        OrderStyle::Limit { offset_bp, time_in_force } => {
            let offset = *offset_bp / Decimal::from(10_000);
            let raw = match side {
                Side::Buy => touch.bid * (Decimal::ONE + offset),
                Side::Sell => touch.ask * (Decimal::ONE - offset),
            };
            Placement::Limit { price: rules.round_price(raw, side), tif: *time_in_force }
        }
        OrderStyle::Market { slippage_cap } => {
            let best = if side == Side::Buy { touch.ask } else { touch.bid };
            Placement::Market { limit: rules.round_price(slippage_limit(side, best, *slippage_cap), side) }
        }
    };
    let price = match &placement {
        Placement::Limit { price, .. } => Some(*price),
        Placement::Market { .. } => None,
    };
    rules.check(quantity, price, mid).map_err(Skip::TooSmall)?;
    let reduce_only =
        holding.position != Decimal::ZERO && wanted.abs() < holding.position.abs() && wanted * holding.position >= Decimal::ZERO;
    Ok(Planned { side, quantity, placement, reduce_only })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::AccountId;

    fn d(s: &str) -> Decimal {
        s.parse().unwrap()
    }

    fn strategy(order: OrderStyle) -> Strategy {
        Strategy {
            venue: "binance".into(),
            symbol: "BTC/USDT".parse().unwrap(),
            account: AccountId::parse("binance/demo").unwrap(),
            market: "spot".into(),
            sizing: Sizing::FixedNotional(d("1000")),
            scale_by_confidence: true,
            min_confidence: 0.6,
            buy: Target::Long,
            sell: Target::Flat,
            order,
            cooldown_ms: 30_000,
            rules: None,
        }
    }

    fn rules() -> Rules {
        Rules { tick: d("0.01"), lot: d("0.0001"), min_qty: d("0.0001"), max_qty: None, min_notional: d("5") }
    }

    const TOUCH: Touch = Touch { bid: Decimal::from_parts(99_990, 0, 0, false, 1), ask: Decimal::from_parts(100_010, 0, 0, false, 1) };

    fn flat() -> Holding {
        Holding { position: Decimal::ZERO, equity: d("10000") }
    }

    #[test]
    fn a_buy_goes_long_by_the_sized_amount_at_the_touch() {
        let s = strategy(OrderStyle::Limit { offset_bp: d("0"), time_in_force: Tif::Gtc });
        let p = plan(&s, Action::Buy, 0.8, flat(), TOUCH, &rules(), None, Time::ZERO).unwrap();
        // 1000 x 0.8 / mid 10000 = 0.08 at the bid.
        assert_eq!(
            p,
            Planned {
                side: Side::Buy,
                quantity: d("0.08"),
                placement: Placement::Limit { price: d("9999"), tif: Tif::Gtc },
                reduce_only: false
            }
        );
        // Already long 0.05: buys the rest.
        let p = plan(&s, Action::Buy, 0.8, Holding { position: d("0.05"), ..flat() }, TOUCH, &rules(), None, Time::ZERO).unwrap();
        assert_eq!(p.quantity, d("0.03"));
    }

    #[test]
    fn a_sell_goes_flat_reducing_under_a_slippage_cap() {
        let s = strategy(OrderStyle::Market { slippage_cap: d("0.005") });
        let p = plan(&s, Action::Sell, 0.9, Holding { position: d("0.3"), ..flat() }, TOUCH, &rules(), None, Time::ZERO).unwrap();
        assert_eq!((p.side, p.quantity, p.reduce_only), (Side::Sell, d("0.3"), true));
        // 0.5 % under the bid 9999, rounded up to the tick for a sell.
        assert_eq!(p.placement, Placement::Market { limit: d("9949.01") });
    }

    #[test]
    fn skips_say_why() {
        let s = strategy(OrderStyle::Limit { offset_bp: d("5"), time_in_force: Tif::Gtc });
        let r = rules();
        assert_eq!(plan(&s, Action::Hold, 0.9, flat(), TOUCH, &r, None, Time::ZERO), Err(Skip::Hold));
        assert_eq!(plan(&s, Action::Buy, 0.5, flat(), TOUCH, &r, None, Time::ZERO).unwrap_err().kind(), "low_confidence");
        let now = Time::from_millis(100_000);
        let e = plan(&s, Action::Buy, 0.9, flat(), TOUCH, &r, Some(now - Duration::from_secs(10)), now).unwrap_err();
        assert_eq!(e, Skip::Cooldown { left: Duration::from_secs(20) });
        assert_eq!(plan(&s, Action::Sell, 0.9, flat(), TOUCH, &r, None, Time::ZERO), Err(Skip::AtTarget), "flat already");
        let tiny = Strategy { sizing: Sizing::FixedNotional(d("3")), ..s };
        assert_eq!(plan(&tiny, Action::Buy, 0.9, flat(), TOUCH, &r, None, Time::ZERO).unwrap_err().kind(), "too_small");
    }
}
