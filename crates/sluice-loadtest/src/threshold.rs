//! Pass/fail rules for CI: `p99<500ms`, `error_rate<1%`, `rps>=2000`. Every level
//! must meet every rule; the command exits non-zero when one does not.

use serde::Serialize;

use crate::stats::LevelReport;
use sluice_service::duration::parse as parse_duration;

/// What a rule measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Metric {
    Avg,
    P50,
    P95,
    P99,
    Min,
    Max,
    /// Failed / total, a fraction (the rule may say `1%` or `0.01`).
    ErrorRate,
    /// Finished requests per second.
    Rps,
}

impl Metric {
    fn latency(self) -> bool {
        matches!(self, Metric::Avg | Metric::P50 | Metric::P95 | Metric::P99 | Metric::Min | Metric::Max)
    }

    fn name(self) -> &'static str {
        match self {
            Metric::Avg => "avg",
            Metric::P50 => "p50",
            Metric::P95 => "p95",
            Metric::P99 => "p99",
            Metric::Min => "min",
            Metric::Max => "max",
            Metric::ErrorRate => "error_rate",
            Metric::Rps => "rps",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum Op {
    #[serde(rename = "<")]
    Lt,
    #[serde(rename = "<=")]
    Le,
    #[serde(rename = ">")]
    Gt,
    #[serde(rename = ">=")]
    Ge,
}

impl Op {
    fn holds(self, left: f64, right: f64) -> bool {
        match self {
            Op::Lt => left < right,
            Op::Le => left <= right,
            Op::Gt => left > right,
            Op::Ge => left >= right,
        }
    }

    fn symbol(self) -> &'static str {
        match self {
            Op::Lt => "<",
            Op::Le => "<=",
            Op::Gt => ">",
            Op::Ge => ">=",
        }
    }
}

/// One rule. Latencies are held in milliseconds, error rates as fractions.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Threshold {
    pub text: String,
    pub metric: Metric,
    pub op: Op,
    pub value: f64,
}

/// A rule that could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BadThreshold {
    #[error("threshold '{0}': expected <metric><op><value>, as in p99<500ms or error_rate<1%")]
    Shape(String),
    #[error("threshold '{0}': unknown metric (avg, p50, p95, p99, min, max, error_rate, rps)")]
    Metric(String),
    #[error("threshold '{0}': {1}")]
    Value(String, String),
}

impl std::str::FromStr for Threshold {
    type Err = BadThreshold;

    fn from_str(text: &str) -> Result<Threshold, BadThreshold> {
        let t: String = text.chars().filter(|c| !c.is_whitespace()).collect();
        let at = t.find(['<', '>']).ok_or_else(|| BadThreshold::Shape(text.to_owned()))?;
        let (name, rest) = t.split_at(at);
        let (op, value) = if let Some(v) = rest.strip_prefix("<=") {
            (Op::Le, v)
        } else if let Some(v) = rest.strip_prefix(">=") {
            (Op::Ge, v)
        } else if let Some(v) = rest.strip_prefix('<') {
            (Op::Lt, v)
        } else {
            (Op::Gt, &rest[1..])
        };
        let metric = match name.to_ascii_lowercase().as_str() {
            "avg" | "mean" => Metric::Avg,
            "p50" | "median" => Metric::P50,
            "p95" => Metric::P95,
            "p99" => Metric::P99,
            "min" => Metric::Min,
            "max" => Metric::Max,
            "error_rate" | "errors" => Metric::ErrorRate,
            "rps" => Metric::Rps,
            "" => return Err(BadThreshold::Shape(text.to_owned())),
            _ => return Err(BadThreshold::Metric(text.to_owned())),
        };
        let bad = |why: &str| BadThreshold::Value(text.to_owned(), why.to_owned());
        let value = if metric.latency() {
            parse_duration(value).map_err(|e| bad(&e.to_string()))?.as_secs_f64() * 1e3
        } else if metric == Metric::ErrorRate {
            match value.strip_suffix('%') {
                Some(p) => p.parse::<f64>().map_err(|_| bad("a percentage, as in 1% or 0.5%"))? / 100.0,
                None => value.parse::<f64>().map_err(|_| bad("a fraction or a percentage, as in 0.01 or 1%"))?,
            }
        } else {
            value.parse::<f64>().map_err(|_| bad("a number of requests per second"))?
        };
        if !value.is_finite() || value < 0.0 {
            return Err(bad("must be a non-negative number"));
        }
        Ok(Threshold { text: t, metric, op, value })
    }
}

/// A rule a level broke.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Breach {
    pub threshold: String,
    pub concurrency: usize,
    /// The level's value, `None` when it had no answered request to time.
    pub actual: Option<f64>,
}

impl std::fmt::Display for Breach {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.actual {
            Some(v) => write!(f, "{} failed at concurrency {}: it was {}", self.threshold, self.concurrency, fmt_value(&self.threshold, v)),
            None => write!(f, "{} failed at concurrency {}: no request was answered", self.threshold, self.concurrency),
        }
    }
}

fn fmt_value(rule: &str, v: f64) -> String {
    if rule.starts_with("error") {
        format!("{:.3}%", v * 100.0)
    } else if rule.starts_with("rps") {
        format!("{v:.1} req/s")
    } else {
        format!("{v:.3} ms")
    }
}

impl Threshold {
    /// The level's value of this metric.
    pub fn actual(&self, level: &LevelReport) -> Option<f64> {
        let l = level.latency_ms.as_ref();
        match self.metric {
            Metric::Avg => l.map(|l| l.avg),
            Metric::P50 => l.map(|l| l.p50),
            Metric::P95 => l.map(|l| l.p95),
            Metric::P99 => l.map(|l| l.p99),
            Metric::Min => l.map(|l| l.min),
            Metric::Max => l.map(|l| l.max),
            Metric::ErrorRate => Some(level.error_rate),
            Metric::Rps => Some(level.rps),
        }
    }

    /// Whether `level` meets the rule; a latency rule on a level with nothing
    /// answered fails (no evidence is not a pass).
    pub fn check(&self, level: &LevelReport) -> Option<Breach> {
        let actual = self.actual(level);
        match actual {
            Some(v) if self.op.holds(v, self.value) => None,
            _ => Some(Breach { threshold: self.text.clone(), concurrency: level.concurrency, actual }),
        }
    }
}

/// Every breach of every rule over every level.
pub fn check_all(rules: &[Threshold], levels: &[LevelReport]) -> Vec<Breach> {
    levels.iter().flat_map(|l| rules.iter().filter_map(move |r| r.check(l))).collect()
}

impl std::fmt::Display for Threshold {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}{}{}", self.metric.name(), self.op.symbol(), self.value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::stats::{Latencies, LevelKind, Tally};
    use std::time::Duration;

    fn t(s: &str) -> Threshold {
        s.parse().unwrap()
    }

    #[test]
    fn reads_rules() {
        assert_eq!((t("p99<500ms").metric, t("p99<500ms").op), (Metric::P99, Op::Lt));
        assert_eq!(t("error_rate<=0.05").op, Op::Le);
        assert_eq!((t("rps>=2000").metric, t("rps>=2000").op), (Metric::Rps, Op::Ge));
        for (rule, want) in
            [("p99<500ms", 500.0), ("error_rate < 1%", 0.01), ("rps>=2000", 2000.0), ("p50<2s", 2000.0), ("max>250us", 0.25)]
        {
            assert!((t(rule).value - want).abs() < 1e-9, "{rule}: {}", t(rule).value);
        }
    }

    #[test]
    fn names_what_is_wrong_with_a_rule() {
        assert!(matches!("p99".parse::<Threshold>(), Err(BadThreshold::Shape(_))));
        assert!(matches!("p42<5ms".parse::<Threshold>(), Err(BadThreshold::Metric(_))));
        assert!(matches!("p99<5".parse::<Threshold>(), Err(BadThreshold::Value(..))));
        assert!(matches!("error_rate<lots".parse::<Threshold>(), Err(BadThreshold::Value(..))));
        assert!(matches!("<5ms".parse::<Threshold>(), Err(BadThreshold::Shape(_))));
        let e = "p99<5".parse::<Threshold>().unwrap_err().to_string();
        assert!(e.contains("p99<5") && e.contains("duration"), "{e}");
    }

    fn level(latency: Duration, ok: u64, failed: u64) -> LevelReport {
        let lat = Latencies::new(1);
        let mut tally = Tally::default();
        for _ in 0..ok {
            tally.add(crate::stats::Outcome::Answer(crate::stats::Answer::Http(200)), latency, &lat, 0);
        }
        for _ in 0..failed {
            tally.add(crate::stats::Outcome::Error(crate::stats::ErrorKind::Timeout), latency, &lat, 0);
        }
        LevelReport::new(10, LevelKind::default(), &tally, &lat.merged(), Duration::from_secs(1))
    }

    #[test]
    fn every_level_must_meet_every_rule() {
        let rules = [t("p99<500ms"), t("error_rate<1%")];
        assert!(check_all(&rules, &[level(Duration::from_millis(20), 100, 0)]).is_empty());
        let slow = check_all(&rules, &[level(Duration::from_millis(20), 100, 0), level(Duration::from_millis(700), 100, 0)]);
        assert_eq!(slow.len(), 1);
        assert!(slow[0].to_string().contains("p99<500ms failed"), "{}", slow[0]);
        let failing = check_all(&rules, &[level(Duration::from_millis(20), 98, 2)]);
        assert_eq!(failing.len(), 1);
        assert!(failing[0].to_string().contains("2.000%"), "{}", failing[0]);
    }

    #[test]
    fn a_level_with_no_answer_fails_latency_rules() {
        let b = check_all(&[t("p99<500ms")], &[level(Duration::ZERO, 0, 5)]);
        assert_eq!(b.len(), 1);
        assert_eq!(b[0].actual, None);
    }
}
