//! The offline model: a deterministic indicator strategy behind the same
//! interface as the LLMs, used when no gateway is configured, so the stack
//! produces signals with no network. Same features in, same [`Verdict`] out.
//!
//! The rule ("offline-trend-v1"), with `t = max(volatility, 0.0005)`:
//! * BUY when the 5-minute return is above `t`, the 15-minute return is not
//!   negative and the book is not heavily offered (imbalance >= -0.2);
//! * SELL in the mirror case;
//! * HOLD otherwise.
//!
//! Confidence: half from how far the 5-minute return is past `t` (full at 3t),
//! a quarter from the 15-minute return agreeing, a quarter from the imbalance
//! agreeing, each in 0..1. Levels: the window's low as support and high as
//! resistance, a stop `2t` against the trade. Missing horizons count as zero.

use rust_decimal::Decimal;
use rust_decimal::prelude::ToPrimitive;
use sluice_proto::signal::v1::{self as pb, Action};

use crate::output::Verdict;

/// The offline model's name in signals.
pub const MODEL: &str = "offline-trend-v1";

fn dec(s: &str) -> Decimal {
    s.parse().unwrap_or_default()
}

fn ret(f: &pb::Features, horizon: &str) -> Decimal {
    f.returns.iter().find(|r| r.horizon == horizon).map_or(Decimal::ZERO, |r| dec(&r.value))
}

fn clamp01(d: Decimal) -> Decimal {
    d.max(Decimal::ZERO).min(Decimal::ONE)
}

/// The verdict on `f`.
pub fn decide(f: &pb::Features) -> Verdict {
    let t = dec(&f.volatility).max(Decimal::new(5, 4));
    let (r5, r15, imb) = (ret(f, "5m"), ret(f, "15m"), dec(&f.book_imbalance));
    let last = dec(&f.last_price);
    let limit = Decimal::new(2, 1);
    let action = if r5 > t && r15 >= Decimal::ZERO && imb >= -limit {
        Action::Buy
    } else if r5 < -t && r15 <= Decimal::ZERO && imb <= limit {
        Action::Sell
    } else {
        Action::Hold
    };
    let sign = match action {
        Action::Buy => Decimal::ONE,
        Action::Sell => Decimal::NEGATIVE_ONE,
        _ => Decimal::ZERO,
    };
    let confidence = if action == Action::Hold {
        // Sure of HOLD when nothing moves; less so as the move nears the threshold.
        clamp01(Decimal::ONE - r5.abs() / t) * Decimal::new(5, 1)
    } else {
        let strength = clamp01((r5.abs() - t) / (Decimal::TWO * t));
        let trend = clamp01(r15 * sign / t);
        let book = clamp01(imb * sign);
        strength * Decimal::new(5, 1) + trend * Decimal::new(25, 2) + book * Decimal::new(25, 2)
    };
    let mut key_levels = Vec::new();
    let level = |kind: &str, p: Decimal| pb::KeyLevel { kind: kind.to_owned(), price: p.round_dp(8).normalize().to_string() };
    if !last.is_zero() {
        let high = last * (Decimal::ONE + dec(&f.to_high));
        let low = last * (Decimal::ONE - dec(&f.to_low));
        key_levels.push(level("support", low));
        key_levels.push(level("resistance", high));
        if action != Action::Hold {
            key_levels.push(level("stop", last * (Decimal::ONE - sign * Decimal::TWO * t)));
        }
    }
    Verdict {
        action,
        confidence: confidence.round_dp(2).to_f64().unwrap_or(0.0),
        horizon: "15m".into(),
        rationale: format!(
            "{MODEL}: 5m return {} against threshold {}, 15m return {}, book imbalance {}",
            r5.normalize(),
            t.normalize(),
            r15.normalize(),
            imb.normalize()
        ),
        key_levels,
        repaired: false,
    }
}

#[cfg(test)]
// Confidences parsed or rounded from the same decimal text are the same f64.
#[allow(clippy::float_cmp)]
mod tests {
    use super::*;

    fn features(r5: &str, r15: &str, imb: &str, vol: &str) -> pb::Features {
        let r = |h: &str, v: &str| pb::HorizonReturn { horizon: h.into(), value: v.into() };
        pb::Features {
            last_price: "100".into(),
            returns: vec![r("1m", ""), r("5m", r5), r("15m", r15), r("1h", "")],
            volatility: vol.into(),
            book_imbalance: imb.into(),
            to_high: "0.02".into(),
            to_low: "0.03".into(),
            ..Default::default()
        }
    }

    #[test]
    fn trends_with_the_book_behind_them_are_bought_or_sold() {
        let v = decide(&features("0.003", "0.001", "0.4", "0.001"));
        assert_eq!(v.action, Action::Buy);
        // strength (0.003 - 0.001) / 0.002 = 1 -> 0.5; trend 0.001/0.001 = 1 -> 0.25; book 0.4 -> 0.1.
        assert_eq!(v.confidence, 0.85);
        let levels: Vec<(&str, &str)> = v.key_levels.iter().map(|l| (l.kind.as_str(), l.price.as_str())).collect();
        assert_eq!(levels, [("support", "97"), ("resistance", "102"), ("stop", "99.8")]);
        let v = decide(&features("-0.002", "-0.0005", "-0.1", "0.001"));
        // strength 0.5 -> 0.25; trend 0.5 -> 0.125; book 0.1 -> 0.025.
        assert_eq!((v.action, v.confidence), (Action::Sell, 0.4));
    }

    #[test]
    fn weak_or_contradicted_moves_hold_and_it_is_deterministic() {
        assert_eq!(decide(&features("0.003", "-0.001", "0.4", "0.001")).action, Action::Hold, "15m against");
        assert_eq!(decide(&features("0.003", "0.001", "-0.5", "0.001")).action, Action::Hold, "book against");
        let flat = decide(&features("0", "0", "0", ""));
        assert_eq!((flat.action, flat.confidence), (Action::Hold, 0.5));
        assert!(flat.rationale.contains("threshold 0.0005"), "{}", flat.rationale);
        let f = features("0.004", "0.002", "0.1", "0.0012");
        assert_eq!(decide(&f), decide(&f));
    }
}
