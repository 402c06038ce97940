//! Positions and PnL per account and symbol, from fills alone: quantity (signed:
//! short is negative), average cost, realized PnL, fees, and unrealized PnL
//! against a mark (the mid from NATS). Pure and exact.
//!
//! A fill in the position's direction moves the average cost; one against it
//! realizes (price - average) x the closed quantity (sign by direction); one that
//! crosses zero closes the whole position and opens the rest at the fill price.

use sluice_domain::{Decimal, Side};

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Position {
    /// Signed, in the base asset.
    pub qty: Decimal,
    /// Average entry price of the open quantity (0 when flat).
    pub avg_cost: Decimal,
    /// In the quote asset, fees not included.
    pub realized: Decimal,
    /// In the quote asset.
    pub fees: Decimal,
}

impl Position {
    /// Applies one fill.
    pub fn fill(&mut self, side: Side, qty: Decimal, price: Decimal, fee_quote: Decimal) {
        let signed = match side {
            Side::Buy => qty,
            Side::Sell => -qty,
        };
        self.fees += fee_quote;
        let same_direction = self.qty.is_zero() || (self.qty > Decimal::ZERO) == (signed > Decimal::ZERO);
        if same_direction {
            let total = self.qty + signed;
            self.avg_cost = (self.avg_cost * self.qty.abs() + price * qty) / total.abs();
            self.qty = total;
            return;
        }
        let closed = qty.min(self.qty.abs());
        let direction = if self.qty > Decimal::ZERO { Decimal::ONE } else { -Decimal::ONE };
        self.realized += (price - self.avg_cost) * closed * direction;
        self.qty += signed;
        if self.qty.is_zero() {
            self.avg_cost = Decimal::ZERO;
        } else if (self.qty > Decimal::ZERO) != (direction > Decimal::ZERO) {
            // Crossed zero: what is left was opened at this fill.
            self.avg_cost = price;
        }
    }

    /// Unrealized PnL at `mark`.
    pub fn unrealized(&self, mark: Decimal) -> Decimal {
        (mark - self.avg_cost) * self.qty
    }

    /// Realized plus unrealized, less fees.
    pub fn net(&self, mark: Decimal) -> Decimal {
        self.realized + self.unrealized(mark) - self.fees
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> Decimal {
        s.parse().unwrap()
    }

    #[test]
    fn average_cost_realized_and_unrealized_exactly() {
        let mut p = Position::default();
        p.fill(Side::Buy, d("1"), d("100"), d("0.1"));
        p.fill(Side::Buy, d("3"), d("104"), d("0.3"));
        assert_eq!((p.qty, p.avg_cost), (d("4"), d("103")));
        assert_eq!(p.unrealized(d("105")), d("8"));
        p.fill(Side::Sell, d("1"), d("110"), d("0.11"));
        assert_eq!((p.qty, p.avg_cost, p.realized), (d("3"), d("103"), d("7")));
        // Through zero: 3 closed at 90 (-39), 2 opened short at 90.
        p.fill(Side::Sell, d("5"), d("90"), d("0.45"));
        assert_eq!((p.qty, p.avg_cost, p.realized), (d("-2"), d("90"), d("-32")));
        assert_eq!(p.unrealized(d("85")), d("10"), "a short gains when the price falls");
        p.fill(Side::Buy, d("2"), d("80"), d("0.16"));
        assert_eq!((p.qty, p.avg_cost, p.realized), (d("0"), d("0"), d("-12")));
        assert_eq!(p.fees, d("1.12"));
        assert_eq!(p.net(d("1")), d("-13.12"));
    }
}
