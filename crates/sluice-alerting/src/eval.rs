//! Rules over the store, evaluated every tick: each (rule, series) is an alert
//! that is inactive, pending (holding for less than `for`), firing, or
//! resolved. Pure, with the time as an argument.
//!
//! An alert's identity is its labels: the series' labels (those kept by the
//! rule's `by`), the rule's own labels, `alertname` and `severity`; its
//! fingerprint is a hash of them, the same on every replica, which is what the
//! notification log relies on.

use std::collections::BTreeMap;

use sha2::{Digest, Sha256};

use crate::matcher::Labels;
use crate::rules::{Rule, Severity, render};
use crate::series::Store;

/// Where an alert stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum State {
    Pending,
    Firing,
    Resolved,
}

/// One alert as the lifecycle sees it.
#[derive(Clone, Debug, PartialEq)]
pub struct Alert {
    pub name: String,
    pub labels: Labels,
    pub summary: String,
    pub description: String,
    pub severity: Severity,
    pub state: State,
    pub value: f64,
    pub active_at: i64,
    pub fired_at: Option<i64>,
    pub resolved_at: Option<i64>,
    pub fingerprint: String,
    /// The last time its condition held (for `keep_firing_for`).
    last_held: i64,
}

/// A stable hash of a label set (hex, 16 characters).
pub fn fingerprint(labels: &Labels) -> String {
    let mut h = Sha256::new();
    for (k, v) in labels {
        h.update(k.as_bytes());
        h.update([0xff]);
        h.update(v.as_bytes());
        h.update([0xfe]);
    }
    hex::encode(&h.finalize()[..8])
}

/// What changed in one evaluation.
#[derive(Debug, Default, PartialEq)]
pub struct Changes {
    pub fired: Vec<Alert>,
    pub resolved: Vec<Alert>,
}

/// Every rule's alerts.
pub struct Evaluator {
    rules: Vec<Rule>,
    alerts: BTreeMap<String, Alert>,
    /// How long a resolved alert stays listed.
    keep_resolved_ms: i64,
}

impl Evaluator {
    pub fn new(rules: Vec<Rule>) -> Evaluator {
        Evaluator { rules, alerts: BTreeMap::new(), keep_resolved_ms: 3_600_000 }
    }

    pub fn rules(&self) -> &[Rule] {
        &self.rules
    }

    /// The longest history any rule reads.
    pub fn reach_ms(&self) -> i64 {
        self.rules.iter().map(|r| r.expr.reach_ms() + r.for_ms).max().unwrap_or(0)
    }

    /// Alerts pending, firing and recently resolved.
    pub fn alerts(&self) -> impl Iterator<Item = &Alert> {
        self.alerts.values()
    }

    /// Evaluates every rule at `now`.
    pub fn evaluate(&mut self, store: &Store, now: i64, stale_ms: i64) -> Changes {
        let mut changes = Changes::default();
        let mut seen = std::collections::HashSet::new();
        for rule in &self.rules {
            for (series, value) in store.eval(&rule.expr, now, stale_ms) {
                if !rule.condition.holds(value) {
                    continue;
                }
                let mut labels = series.clone();
                labels.extend(rule.labels.iter().map(|(k, v)| (k.clone(), v.clone())));
                labels.insert("alertname".into(), rule.name.clone());
                labels.insert("severity".into(), rule.severity.as_str().into());
                let fp = fingerprint(&labels);
                seen.insert(fp.clone());
                let summary = render(&rule.summary, &labels, value);
                let description = render(&rule.description, &labels, value);
                let a = self.alerts.entry(fp.clone()).or_insert_with(|| Alert {
                    name: rule.name.clone(),
                    labels: labels.clone(),
                    summary: summary.clone(),
                    description: description.clone(),
                    severity: rule.severity,
                    state: State::Pending,
                    value,
                    active_at: now,
                    fired_at: None,
                    resolved_at: None,
                    fingerprint: fp,
                    last_held: now,
                });
                if a.state == State::Resolved {
                    // It holds again: a new episode.
                    *a = Alert { state: State::Pending, active_at: now, fired_at: None, resolved_at: None, ..a.clone() };
                }
                a.value = value;
                a.summary = summary;
                a.description = description;
                a.last_held = now;
                if a.state == State::Pending && now - a.active_at >= rule.for_ms {
                    a.state = State::Firing;
                    a.fired_at = Some(now);
                    changes.fired.push(a.clone());
                }
            }
        }
        let keep_firing: BTreeMap<&str, i64> = self.rules.iter().map(|r| (r.name.as_str(), r.keep_firing_ms)).collect();
        let keep_resolved = self.keep_resolved_ms;
        self.alerts.retain(|fp, a| {
            if seen.contains(fp) {
                return true;
            }
            match a.state {
                // Never fired: nothing to resolve.
                State::Pending => false,
                State::Firing => {
                    let grace = keep_firing.get(a.name.as_str()).copied().unwrap_or(0);
                    if now - a.last_held >= grace {
                        a.state = State::Resolved;
                        a.resolved_at = Some(now);
                        changes.resolved.push(a.clone());
                    }
                    true
                }
                State::Resolved => a.resolved_at.is_some_and(|t| now - t < keep_resolved),
            }
        });
        changes
    }
}

/// The alert a test notification carries: "SluiceTestAlert", firing now,
/// from `replica`.
pub fn test_alert(replica: &str, now: i64) -> Alert {
    let labels: Labels = [
        ("alertname".to_owned(), "SluiceTestAlert".to_owned()),
        ("severity".to_owned(), "info".to_owned()),
        ("replica".to_owned(), replica.to_owned()),
    ]
    .into();
    Alert {
        name: "SluiceTestAlert".into(),
        fingerprint: fingerprint(&labels),
        labels,
        summary: format!("A test notification from {replica}: this receiver works."),
        description: String::new(),
        severity: Severity::Info,
        state: State::Firing,
        value: 1.0,
        active_at: now,
        fired_at: Some(now),
        resolved_at: None,
        last_held: now,
    }
}

/// Alerts made by hand, for other modules' tests.
#[cfg(test)]
pub(crate) mod tests_support {
    use super::*;

    pub(crate) fn alert(labels: Labels) -> Alert {
        Alert {
            name: labels.get("alertname").cloned().unwrap_or_default(),
            fingerprint: fingerprint(&labels),
            labels,
            summary: String::new(),
            description: String::new(),
            severity: Severity::Warning,
            state: State::Firing,
            value: 1.0,
            active_at: 0,
            fired_at: Some(0),
            resolved_at: None,
            last_held: 0,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::rules::parse;

    fn rules(text: &str) -> Vec<Rule> {
        parse(text, "t").unwrap()
    }

    fn ex(e: &str) -> Labels {
        [("exchange".to_owned(), e.to_owned())].into()
    }

    #[test]
    fn pending_for_then_firing_then_resolved_after_keep_firing() {
        let mut ev = Evaluator::new(rules(
            "[[rule]]\nname = \"Slow\"\nlast = \"lat\"\nabove = 2\nfor = \"3s\"\nkeep_firing_for = \"2s\"\nseverity = \"warning\"\nsummary = \"{{exchange}} {{value}}\"\n",
        ));
        let mut st = Store::new(600_000);
        let mut fired_at = None;
        for t in 0..=10 {
            let now = t * 1000;
            st.push("lat", ex("upbit"), now, if t <= 5 { 3.0 } else { 1.0 });
            let c = ev.evaluate(&st, now, 5_000);
            if !c.fired.is_empty() {
                assert_eq!(c.fired[0].summary, "upbit 3");
                assert_eq!(c.fired[0].labels["alertname"], "Slow");
                fired_at = Some(now);
            }
            if !c.resolved.is_empty() {
                // Held last at 5 s; 2 s of keep_firing_for.
                assert_eq!(now, 7_000);
                assert_eq!(fired_at, Some(3_000));
                return;
            }
        }
        panic!("never resolved");
    }

    #[test]
    fn a_blip_shorter_than_for_never_fires_and_series_are_separate() {
        let mut ev = Evaluator::new(rules(
            "[[rule]]\nname = \"Slow\"\nlast = \"lat\"\nabove = 2\nfor = \"2s\"\nseverity = \"warning\"\nsummary = \"s\"\n",
        ));
        let mut st = Store::new(600_000);
        st.push("lat", ex("upbit"), 0, 5.0);
        st.push("lat", ex("bybit"), 0, 5.0);
        assert!(ev.evaluate(&st, 0, 5_000).fired.is_empty());
        st.push("lat", ex("upbit"), 1000, 1.0);
        st.push("lat", ex("bybit"), 1000, 5.0);
        ev.evaluate(&st, 1000, 5_000);
        st.push("lat", ex("upbit"), 2000, 5.0);
        st.push("lat", ex("bybit"), 2000, 5.0);
        let c = ev.evaluate(&st, 2000, 5_000);
        assert_eq!(c.fired.len(), 1);
        assert_eq!(c.fired[0].labels["exchange"], "bybit");
        assert_eq!(ev.alerts().filter(|a| a.state == State::Pending).count(), 1, "upbit pending again from 2 s");
    }

    #[test]
    fn fingerprints_are_stable_and_distinct() {
        let a = fingerprint(&ex("upbit"));
        assert_eq!(a, fingerprint(&ex("upbit")));
        assert_ne!(a, fingerprint(&ex("bybit")));
        assert_eq!(a.len(), 16);
    }
}
