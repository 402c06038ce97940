//! Exact prices and quantities. Floating point never touches money in sluice: a
//! price that is not exactly representable is a bug waiting for a reconciliation.

use std::fmt;
use std::str::FromStr;

use rust_decimal::Decimal;
use serde::{Deserialize, Serialize};

/// Why a price or quantity was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MoneyError {
    #[error("'{0}' is not a decimal number")]
    NotDecimal(String),
    #[error("price must be positive, got {0}")]
    NonPositivePrice(Decimal),
    #[error("quantity must not be negative, got {0}")]
    NegativeQty(Decimal),
}

/// A strictly positive exact price.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "Decimal", into = "Decimal")]
pub struct Price(Decimal);

impl Price {
    /// A price, refused unless strictly positive.
    pub fn new(value: Decimal) -> Result<Self, MoneyError> {
        if value > Decimal::ZERO { Ok(Price(value.normalize())) } else { Err(MoneyError::NonPositivePrice(value)) }
    }

    /// The exact value.
    pub fn get(self) -> Decimal {
        self.0
    }
}

impl TryFrom<Decimal> for Price {
    type Error = MoneyError;
    fn try_from(value: Decimal) -> Result<Self, Self::Error> {
        Price::new(value)
    }
}

impl From<Price> for Decimal {
    fn from(p: Price) -> Decimal {
        p.0
    }
}

impl FromStr for Price {
    type Err = MoneyError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Price::new(parse_decimal(s)?)
    }
}

impl fmt::Display for Price {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A non-negative exact quantity (zero is a valid quantity: an emptied book level).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize)]
#[serde(try_from = "Decimal", into = "Decimal")]
pub struct Qty(Decimal);

impl Qty {
    pub const ZERO: Qty = Qty(Decimal::ZERO);

    /// A quantity, refused when negative.
    pub fn new(value: Decimal) -> Result<Self, MoneyError> {
        if value >= Decimal::ZERO { Ok(Qty(value.normalize())) } else { Err(MoneyError::NegativeQty(value)) }
    }

    /// The exact value.
    pub fn get(self) -> Decimal {
        self.0
    }

    /// Whether this is zero.
    pub fn is_zero(self) -> bool {
        self.0.is_zero()
    }
}

impl TryFrom<Decimal> for Qty {
    type Error = MoneyError;
    fn try_from(value: Decimal) -> Result<Self, Self::Error> {
        Qty::new(value)
    }
}

impl From<Qty> for Decimal {
    fn from(q: Qty) -> Decimal {
        q.0
    }
}

impl FromStr for Qty {
    type Err = MoneyError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Qty::new(parse_decimal(s)?)
    }
}

impl fmt::Display for Qty {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// Parses plain and scientific notation ("1e-8" appears in some exchange payloads).
fn parse_decimal(s: &str) -> Result<Decimal, MoneyError> {
    let t = s.trim();
    Decimal::from_str_exact(t).or_else(|_| Decimal::from_scientific(t)).map_err(|_| MoneyError::NotDecimal(s.to_owned()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_of_inputs() {
        struct Case {
            input: &'static str,
            price: Option<&'static str>,
            qty: Option<&'static str>,
        }
        let cases = [
            Case { input: "0.1", price: Some("0.1"), qty: Some("0.1") },
            Case { input: "65000.50", price: Some("65000.5"), qty: Some("65000.5") },
            Case { input: "0", price: None, qty: Some("0") },
            Case { input: "-1", price: None, qty: None },
            Case { input: "1e-8", price: Some("0.00000001"), qty: Some("0.00000001") },
            Case { input: "abc", price: None, qty: None },
            Case { input: "NaN", price: None, qty: None },
        ];
        for c in cases {
            let p = c.input.parse::<Price>().ok().map(|p| p.to_string());
            assert_eq!(p.as_deref(), c.price, "price {}", c.input);
            let q = c.input.parse::<Qty>().ok().map(|q| q.to_string());
            assert_eq!(q.as_deref(), c.qty, "qty {}", c.input);
        }
    }

    #[test]
    fn sums_are_exact() {
        let a: Qty = "0.1".parse().unwrap();
        let b: Qty = "0.2".parse().unwrap();
        assert_eq!((a.get() + b.get()).to_string(), "0.3");
    }
}
