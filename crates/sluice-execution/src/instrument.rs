//! An instrument's trading rules (tick size, lot step, minimum quantity and
//! notional) and rounding to them. Prices round toward the passive side (a buy
//! never pays more than asked, a sell never gets less), quantities down to the
//! lot step; an order that breaks a rule after rounding is refused, naming it.

use sluice_domain::{Decimal, Side};

/// The rules of one instrument on one exchange.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rules {
    /// Price increment (`PRICE_FILTER.tickSize`, `priceFilter.tickSize`, `tickSz`).
    pub tick: Decimal,
    /// Quantity increment (`LOT_SIZE.stepSize`, `basePrecision`, `lotSz`).
    pub lot: Decimal,
    pub min_qty: Decimal,
    pub max_qty: Option<Decimal>,
    /// Price x quantity at least this (`NOTIONAL.minNotional`, `minOrderAmt`, Upbit `min_total`).
    pub min_notional: Decimal,
}

/// An order the rules refuse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RuleError {
    #[error("quantity {qty} is below the minimum {min}")]
    BelowMinQty { qty: Decimal, min: Decimal },
    #[error("quantity {qty} is above the maximum {max}")]
    AboveMaxQty { qty: Decimal, max: Decimal },
    #[error("quantity {qty} is not a multiple of the lot step {lot}")]
    OffLot { qty: Decimal, lot: Decimal },
    #[error("price {price} is not a multiple of the tick size {tick}")]
    OffTick { price: Decimal, tick: Decimal },
    #[error("notional {notional} (price x quantity) is below the minimum {min}")]
    BelowMinNotional { notional: Decimal, min: Decimal },
    #[error("price {0} must be positive")]
    NonPositivePrice(Decimal),
}

fn floor_to(v: Decimal, step: Decimal) -> Decimal {
    if step <= Decimal::ZERO { v } else { ((v / step).floor() * step).normalize() }
}

fn ceil_to(v: Decimal, step: Decimal) -> Decimal {
    if step <= Decimal::ZERO { v } else { ((v / step).ceil() * step).normalize() }
}

fn on_step(v: Decimal, step: Decimal) -> bool {
    step <= Decimal::ZERO || (v % step).is_zero()
}

impl Rules {
    /// A price on the tick grid, toward the passive side.
    pub fn round_price(&self, price: Decimal, side: Side) -> Decimal {
        match side {
            Side::Buy => floor_to(price, self.tick),
            Side::Sell => ceil_to(price, self.tick),
        }
    }

    /// A quantity down to the lot step.
    pub fn round_qty(&self, qty: Decimal) -> Decimal {
        floor_to(qty, self.lot)
    }

    /// Checks an order as it would be sent (`price` None: a market order, checked
    /// for notional at `reference`).
    pub fn check(&self, qty: Decimal, price: Option<Decimal>, reference: Decimal) -> Result<(), RuleError> {
        if let Some(p) = price {
            if p <= Decimal::ZERO {
                return Err(RuleError::NonPositivePrice(p));
            }
            if !on_step(p, self.tick) {
                return Err(RuleError::OffTick { price: p, tick: self.tick });
            }
        }
        if qty < self.min_qty || qty <= Decimal::ZERO {
            return Err(RuleError::BelowMinQty { qty, min: self.min_qty });
        }
        if let Some(max) = self.max_qty
            && qty > max
        {
            return Err(RuleError::AboveMaxQty { qty, max });
        }
        if !on_step(qty, self.lot) {
            return Err(RuleError::OffLot { qty, lot: self.lot });
        }
        let notional = qty * price.unwrap_or(reference);
        if notional < self.min_notional {
            return Err(RuleError::BelowMinNotional { notional, min: self.min_notional });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> Decimal {
        s.parse().unwrap()
    }

    fn rules() -> Rules {
        Rules { tick: d("0.01"), lot: d("0.00001"), min_qty: d("0.00001"), max_qty: Some(d("9000")), min_notional: d("5") }
    }

    #[test]
    fn rounding_is_passive_and_refusals_name_the_rule() {
        let r = rules();
        assert_eq!(r.round_price(d("60000.019"), Side::Buy), d("60000.01"));
        assert_eq!(r.round_price(d("60000.011"), Side::Sell), d("60000.02"));
        assert_eq!(r.round_qty(d("0.123456789")), d("0.12345"));
        assert!(r.check(d("0.001"), Some(d("60000.01")), d("60000")).is_ok());
        assert_eq!(r.check(d("0.000001"), None, d("60000")), Err(RuleError::BelowMinQty { qty: d("0.000001"), min: d("0.00001") }));
        assert_eq!(
            r.check(d("0.000015"), None, d("60000")).unwrap_err().to_string(),
            "quantity 0.000015 is not a multiple of the lot step 0.00001"
        );
        assert!(matches!(r.check(d("0.001"), Some(d("60000.015")), d("0")), Err(RuleError::OffTick { .. })));
        assert!(matches!(r.check(d("0.00005"), Some(d("60000")), d("0")), Err(RuleError::BelowMinNotional { .. })));
        assert!(matches!(r.check(d("1"), Some(d("-1")), d("0")), Err(RuleError::NonPositivePrice(_))));
        assert!(matches!(r.check(d("9001"), Some(d("1")), d("0")), Err(RuleError::AboveMaxQty { .. })));
    }
}
