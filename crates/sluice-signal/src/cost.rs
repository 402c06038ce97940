//! Money: each call's cost from the configured prices per million tokens, exact,
//! and each model's spend per UTC day against its daily budget. Pure: the day is
//! passed in.

use std::collections::HashMap;

use rust_decimal::Decimal;

/// Prices of one model, US dollars per million tokens.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Price {
    pub input_per_m: Decimal,
    pub output_per_m: Decimal,
}

const MILLION: Decimal = Decimal::from_parts(1_000_000, 0, 0, false, 0);

impl Price {
    /// The exact cost of one call.
    pub fn cost(&self, prompt_tokens: u64, completion_tokens: u64) -> Decimal {
        (Decimal::from(prompt_tokens) * self.input_per_m + Decimal::from(completion_tokens) * self.output_per_m) / MILLION
    }
}

/// Days since the Unix epoch, UTC: the budget's day.
pub fn utc_day(unix_ns: i64) -> i64 {
    unix_ns.div_euclid(86_400 * 1_000_000_000)
}

/// Spend per model and day.
#[derive(Debug, Default)]
pub struct Ledger {
    spent: HashMap<String, (i64, Decimal)>,
}

impl Ledger {
    /// Adds a call's cost to `model`'s spend of `day`.
    pub fn add(&mut self, model: &str, day: i64, usd: Decimal) {
        let e = self.spent.entry(model.to_owned()).or_insert((day, Decimal::ZERO));
        if e.0 != day {
            *e = (day, Decimal::ZERO);
        }
        e.1 += usd;
    }

    /// What `model` spent on `day`.
    pub fn spent(&self, model: &str, day: i64) -> Decimal {
        self.spent.get(model).filter(|(d, _)| *d == day).map_or(Decimal::ZERO, |(_, s)| *s)
    }

    /// Whether `model` may take another call on `day` under `budget` (none: no limit).
    pub fn within(&self, model: &str, day: i64, budget: Option<Decimal>) -> bool {
        budget.is_none_or(|b| self.spent(model, day) < b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> Decimal {
        s.parse().unwrap()
    }

    #[test]
    fn seed_prices_give_exact_costs() {
        // The seed's prices: DeepSeek V3 0.42, GPT-4.1 8, Claude 15 per million tokens.
        let deepseek = Price { input_per_m: d("0.42"), output_per_m: d("0.42") };
        assert_eq!(deepseek.cost(1_234, 567), d("0.00075642"));
        let gpt = Price { input_per_m: d("2"), output_per_m: d("8") };
        assert_eq!(gpt.cost(1_000, 250), d("0.004"));
        let claude = Price { input_per_m: d("15"), output_per_m: d("15") };
        assert_eq!(claude.cost(1, 0), d("0.000015"));
        assert_eq!(claude.cost(0, 0), Decimal::ZERO);
    }

    #[test]
    fn budgets_are_per_model_and_utc_day() {
        let mut l = Ledger::default();
        let day = utc_day(1_764_590_400_000_000_000);
        l.add("gpt-4.1", day, d("0.6"));
        l.add("gpt-4.1", day, d("0.4"));
        assert!(!l.within("gpt-4.1", day, Some(d("1"))), "1.0 spent of 1.0");
        assert!(l.within("gpt-4.1", day, None));
        assert!(l.within("deepseek-chat", day, Some(d("1"))));
        assert!(l.within("gpt-4.1", day + 1, Some(d("1"))), "a new day starts from zero");
        l.add("gpt-4.1", day + 1, d("0.1"));
        assert_eq!(l.spent("gpt-4.1", day), Decimal::ZERO, "the old day is gone");
        assert_eq!(utc_day(-1), -1);
    }
}
