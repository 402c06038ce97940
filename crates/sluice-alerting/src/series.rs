//! What the rules read: every sample the services' heartbeats carried (and the
//! alerting service's own probes), kept per metric and label set for a bounded
//! time, and the few ways a rule reads them. Pure: times are arguments (ms of
//! wall time, the clock every replica shares), nothing here does I/O.
//!
//! * `last`: each series' latest value, if it is fresh (a series whose source
//!   stopped sending is absent, not frozen at its last value).
//! * `increase`: how much a counter grew over a window (a reset, as after a
//!   restart, counts from zero), summed by the `by` labels.
//! * `ratio`: the increase of one counter over another's, by the `by` labels
//!   (error rate = failed answers over all answers); with fewer than `min_of`
//!   in the window there is no rate (one failed probe in a quiet minute is
//!   not a 100 % error rate).
//! * `age`: seconds since a series' last sample, however old: a heartbeat that
//!   stops is exactly such a series.
//! * `zscore`: how many standard deviations the latest value stands above the
//!   mean of the series' recent history (seed 001's anomaly rule).

use std::collections::{BTreeMap, HashMap, VecDeque};

use crate::matcher::{Labels, Selector};

/// Points kept per series at most, whatever the retention says: a series
/// sampled every 100 ms for 15 minutes.
const MAX_POINTS: usize = 9_000;

#[derive(Debug, Default)]
struct Series {
    points: VecDeque<(i64, f64)>,
    /// How long its latest point counts as current, when its source says
    /// (a probe every 30 s); else the store's `stale_ms`.
    fresh_ms: Option<i64>,
}

/// Every series, by metric name and labels.
#[derive(Debug)]
pub struct Store {
    metrics: HashMap<String, HashMap<Labels, Series>>,
    retention_ms: i64,
}

/// How a rule reads the store.
#[derive(Clone, Debug)]
pub enum Expr {
    Last { sel: Selector, by: Option<Vec<String>> },
    Increase { sel: Selector, over_ms: i64, by: Vec<String> },
    Ratio { num: Selector, den: Selector, over_ms: i64, by: Vec<String>, min_den: f64 },
    Age { sel: Selector },
    ZScore { sel: Selector, history_ms: i64, min_samples: usize },
}

impl Expr {
    /// The longest stretch of history this expression reads.
    pub fn reach_ms(&self) -> i64 {
        match self {
            Expr::Last { .. } | Expr::Age { .. } => 0,
            Expr::Increase { over_ms, .. } | Expr::Ratio { over_ms, .. } => *over_ms,
            Expr::ZScore { history_ms, .. } => *history_ms,
        }
    }

    /// The metrics it reads.
    pub fn metrics(&self) -> Vec<&str> {
        match self {
            Expr::Last { sel, .. } | Expr::Increase { sel, .. } | Expr::Age { sel } | Expr::ZScore { sel, .. } => vec![&sel.metric],
            Expr::Ratio { num, den, .. } => vec![&num.metric, &den.metric],
        }
    }
}

fn project(labels: &Labels, by: &[String]) -> Labels {
    by.iter().filter_map(|k| labels.get(k).map(|v| (k.clone(), v.clone()))).collect()
}

impl Store {
    pub fn new(retention_ms: i64) -> Store {
        Store { metrics: HashMap::new(), retention_ms }
    }

    /// Records `value` of `metric{labels}` at `t`. A point older than the
    /// series' last is ignored (heartbeats can cross on the wire).
    pub fn push(&mut self, metric: &str, labels: Labels, t: i64, value: f64) {
        self.push_fresh_for(metric, labels, t, value, None);
    }

    /// Like [`Store::push`], for a series sampled less often than heartbeats
    /// (a probe): its latest point counts as current for `fresh_ms`.
    pub fn push_fresh_for(&mut self, metric: &str, labels: Labels, t: i64, value: f64, fresh_ms: Option<i64>) {
        if value.is_nan() {
            return; // NaN says nothing.
        }
        let s = self.metrics.entry(metric.to_owned()).or_default().entry(labels).or_default();
        s.fresh_ms = fresh_ms;
        if s.points.back().is_some_and(|&(last, _)| t < last) {
            return;
        }
        s.points.push_back((t, value));
        if s.points.len() > MAX_POINTS {
            s.points.pop_front();
        }
    }

    /// Forgets every series whose labels match `pred` (an instance that left).
    pub fn forget(&mut self, pred: impl Fn(&Labels) -> bool) {
        for series in self.metrics.values_mut() {
            series.retain(|l, _| !pred(l));
        }
    }

    /// Drops points older than the retention, and series left empty.
    pub fn prune(&mut self, now: i64) {
        let keep_from = now - self.retention_ms;
        for series in self.metrics.values_mut() {
            for s in series.values_mut() {
                // Keep one point before the cut, so an increase over the whole
                // retention still has a starting value.
                while s.points.len() > 1 && s.points[1].0 <= keep_from {
                    s.points.pop_front();
                }
            }
            series.retain(|_, s| s.points.back().is_some_and(|&(t, _)| t >= keep_from));
        }
        self.metrics.retain(|_, s| !s.is_empty());
    }

    fn select<'a>(&'a self, sel: &'a Selector) -> impl Iterator<Item = (&'a Labels, &'a Series)> + 'a {
        self.metrics
            .get(&sel.metric)
            .into_iter()
            .flat_map(move |m| m.iter().filter(move |(l, _)| crate::matcher::all_match(&sel.matchers, l)))
    }

    /// Evaluates `expr` at `now`; a series whose latest point is older than
    /// `stale_ms` is absent (except for `age`, which measures exactly that).
    pub fn eval(&self, expr: &Expr, now: i64, stale_ms: i64) -> Vec<(Labels, f64)> {
        let fresh = |s: &Series| s.points.back().is_some_and(|&(t, _)| now - t <= s.fresh_ms.unwrap_or(stale_ms).max(stale_ms));
        match expr {
            Expr::Last { sel, by } => {
                let mut out: BTreeMap<Labels, f64> = BTreeMap::new();
                for (l, s) in self.select(sel).filter(|(_, s)| fresh(s)) {
                    let v = s.points.back().map(|p| p.1).unwrap_or(0.0);
                    let key = match by {
                        Some(by) => project(l, by),
                        None => l.clone(),
                    };
                    // Several series into one: the worst (largest) speaks.
                    let e = out.entry(key).or_insert(f64::NEG_INFINITY);
                    *e = e.max(v);
                }
                out.into_iter().collect()
            }
            Expr::Increase { sel, over_ms, by } => self.increases(sel, now, *over_ms, by, stale_ms).into_iter().collect(),
            Expr::Ratio { num, den, over_ms, by, min_den } => {
                let n = self.increases(num, now, *over_ms, by, stale_ms);
                let d = self.increases(den, now, *over_ms, by, stale_ms);
                d.into_iter()
                    .filter(|(_, d)| *d > 0.0 && *d >= *min_den)
                    .map(|(k, d)| {
                        let n = n.get(&k).copied().unwrap_or(0.0);
                        (k, n / d)
                    })
                    .collect()
            }
            Expr::Age { sel } => self
                .select(sel)
                .filter_map(|(l, s)| s.points.back().map(|&(t, _)| (l.clone(), ((now - t).max(0) as f64) / 1000.0)))
                .collect(),
            Expr::ZScore { sel, history_ms, min_samples } => self
                .select(sel)
                .filter(|(_, s)| fresh(s))
                .filter_map(|(l, s)| zscore(s, now - history_ms, *min_samples).map(|z| (l.clone(), z)))
                .collect(),
        }
    }

    /// Counter growth over `[now - over, now]`, summed by `by`; only series with
    /// a fresh point and a point to start from.
    fn increases(&self, sel: &Selector, now: i64, over_ms: i64, by: &[String], stale_ms: i64) -> BTreeMap<Labels, f64> {
        let from = now - over_ms;
        let mut out = BTreeMap::new();
        for (l, s) in self.select(sel) {
            let Some(&(last_t, _)) = s.points.back() else { continue };
            if now - last_t > s.fresh_ms.unwrap_or(stale_ms).max(stale_ms) {
                continue;
            }
            // Start at the last point at or before the window's start; a series
            // born inside the window starts from zero (its first value is
            // growth seen, as a new counter is).
            let start = s.points.iter().rposition(|&(t, _)| t <= from);
            let mut grew = match start {
                Some(_) => 0.0,
                None => s.points.front().map(|p| p.1).unwrap_or(0.0),
            };
            let begin = start.unwrap_or(0);
            for w in s.points.range(begin..).collect::<Vec<_>>().windows(2) {
                let (a, b) = (w[0].1, w[1].1);
                grew += if b >= a { b - a } else { b };
            }
            *out.entry(project(l, by)).or_insert(0.0) += grew;
        }
        out
    }
}

/// (latest - mean) / stddev over the points before the latest since `from`.
/// The deviation is floored at 5 % of the mean: a perfectly steady series
/// would otherwise call any wobble infinitely anomalous.
fn zscore(s: &Series, from: i64, min_samples: usize) -> Option<f64> {
    let &(_, last) = s.points.back()?;
    let hist: Vec<f64> = s.points.iter().rev().skip(1).take_while(|&&(t, _)| t >= from).map(|p| p.1).collect();
    if hist.len() < min_samples.max(2) {
        return None;
    }
    let n = hist.len() as f64;
    let mean = hist.iter().sum::<f64>() / n;
    let var = hist.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1.0);
    let sd = var.sqrt().max(mean.abs() * 0.05).max(f64::MIN_POSITIVE);
    Some((last - mean) / sd)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn l(pairs: &[(&str, &str)]) -> Labels {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    fn sel(s: &str) -> Selector {
        Selector::parse(s).unwrap()
    }

    #[test]
    fn ratio_of_increases_by_exchange_with_a_reset() {
        let mut st = Store::new(600_000);
        for (t, ok, bad) in [(0, 100.0, 0.0), (10_000, 150.0, 0.0), (20_000, 190.0, 5.0), (30_000, 10.0, 8.0)] {
            st.push("resp_total", l(&[("exchange", "upbit"), ("status", "2xx")]), t, ok);
            st.push("resp_total", l(&[("exchange", "upbit"), ("status", "5xx")]), t, bad);
        }
        // Over the last 20 s: 2xx grew 40 then reset to 10 (50 in all); 5xx 8.
        let e = Expr::Ratio {
            num: sel(r#"resp_total{status="5xx"}"#),
            den: sel("resp_total"),
            over_ms: 20_000,
            by: vec!["exchange".into()],
            min_den: 0.0,
        };
        let got = st.eval(&e, 30_000, 5_000);
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].0, l(&[("exchange", "upbit")]));
        assert!((got[0].1 - 8.0 / 58.0).abs() < 1e-12, "{got:?}");
        // Too few answers to speak of a rate: nothing.
        let sparse =
            Expr::Ratio { num: sel(r#"resp_total{status="5xx"}"#), den: sel("resp_total"), over_ms: 20_000, by: vec![], min_den: 59.0 };
        assert!(st.eval(&sparse, 30_000, 5_000).is_empty());
        // Stale: nothing.
        assert!(st.eval(&e, 40_000, 5_000).is_empty());
    }

    #[test]
    fn last_is_absent_when_stale_and_age_grows() {
        let mut st = Store::new(600_000);
        st.push("up", l(&[("service", "collector")]), 1_000, 1.0);
        let last = Expr::Last { sel: sel("up"), by: None };
        assert_eq!(st.eval(&last, 2_000, 3_000).len(), 1);
        assert!(st.eval(&last, 5_000, 3_000).is_empty());
        let age = Expr::Age { sel: sel(r#"up{service="collector"}"#) };
        assert!((st.eval(&age, 7_500, 3_000)[0].1 - 6.5).abs() < 1e-9);
        st.push_fresh_for("probe", Labels::new(), 1_000, 1.0, Some(30_000));
        assert_eq!(st.eval(&Expr::Last { sel: sel("probe"), by: None }, 20_000, 3_000).len(), 1, "a probe counts until its next");
        st.forget(|l| l.get("service").is_some_and(|s| s == "collector"));
        assert!(st.eval(&age, 7_500, 3_000).is_empty());
    }

    #[test]
    fn zscore_flags_a_jump_not_a_wobble() {
        let mut st = Store::new(600_000);
        let k = l(&[("exchange", "bybit")]);
        for i in 0..20 {
            st.push("lat", k.clone(), i * 1000, 0.100 + if i % 2 == 0 { 0.002 } else { -0.002 });
        }
        let e = Expr::ZScore { sel: sel("lat"), history_ms: 60_000, min_samples: 10 };
        st.push("lat", k.clone(), 20_000, 0.104);
        assert!(st.eval(&e, 20_000, 5_000)[0].1 < 2.0);
        st.push("lat", k, 21_000, 0.300);
        assert!(st.eval(&e, 21_000, 5_000)[0].1 > 2.0);
    }

    #[test]
    fn prune_keeps_a_starting_point() {
        let mut st = Store::new(10_000);
        for t in (0..=30_000).step_by(1000) {
            st.push("c_total", Labels::new(), t, t as f64);
        }
        st.prune(30_000);
        let e = Expr::Increase { sel: sel("c_total"), over_ms: 10_000, by: vec![] };
        assert!((st.eval(&e, 30_000, 5_000)[0].1 - 10_000.0).abs() < 1e-9);
    }
}
