//! Silences and inhibition: the two ways an alert that fires is kept from
//! notifying. Pure, with the time as an argument.
//!
//! * A **silence** mutes every alert whose labels match all its matchers,
//!   from `starts_at` until `ends_at`; it says who made it and why.
//! * An **inhibition rule** mutes a target alert while a source alert fires
//!   with the same values of the `equal` labels: an exchange that is down
//!   (its error rate fires) inhibits its stale-data and latency alerts, which
//!   say nothing the outage has not already said. An alert never inhibits
//!   itself.

use std::collections::BTreeMap;

use crate::eval::{Alert, State};
use crate::matcher::{Labels, Matcher, all_match};

/// One silence.
#[derive(Clone, Debug)]
pub struct Silence {
    pub id: String,
    pub matchers: Vec<Matcher>,
    pub starts_at: i64,
    pub ends_at: i64,
    pub created_by: String,
    pub comment: String,
}

/// Where a silence stands at a time.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SilenceState {
    Pending,
    Active,
    Expired,
}

impl Silence {
    pub fn state(&self, now: i64) -> SilenceState {
        if now < self.starts_at {
            SilenceState::Pending
        } else if now < self.ends_at {
            SilenceState::Active
        } else {
            SilenceState::Expired
        }
    }
}

/// Why a silence was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SilenceError {
    #[error("a silence needs at least one matcher")]
    NoMatchers,
    #[error("a silence needs matchers that do not all match the empty string (it would mute every alert)")]
    MatchesEverything,
    #[error("ends_at must be after starts_at and in the future")]
    BadTimes,
    #[error("created_by is required: say who silenced it")]
    NoAuthor,
    #[error("no silence {0:?}")]
    NotFound(String),
}

/// Every silence, kept a day after it ends for the record.
#[derive(Debug, Default)]
pub struct Silences {
    all: BTreeMap<String, Silence>,
}

const KEEP_EXPIRED_MS: i64 = 86_400_000;

impl Silences {
    /// Checks a new silence (or one read from another replica).
    pub fn validate(s: &Silence, now: i64) -> Result<(), SilenceError> {
        if s.matchers.is_empty() {
            return Err(SilenceError::NoMatchers);
        }
        if all_match(&s.matchers, &Labels::new()) {
            return Err(SilenceError::MatchesEverything);
        }
        if s.ends_at <= s.starts_at || s.ends_at <= now {
            return Err(SilenceError::BadTimes);
        }
        if s.created_by.trim().is_empty() {
            return Err(SilenceError::NoAuthor);
        }
        Ok(())
    }

    /// Adds or replaces a silence (by id).
    pub fn put(&mut self, s: Silence) {
        self.all.insert(s.id.clone(), s);
    }

    /// Ends a silence at `now`; the silence as it now stands.
    pub fn expire(&mut self, id: &str, now: i64) -> Result<Silence, SilenceError> {
        let s = self.all.get_mut(id).ok_or_else(|| SilenceError::NotFound(id.to_owned()))?;
        if s.ends_at > now {
            s.ends_at = now;
            s.starts_at = s.starts_at.min(now);
        }
        Ok(s.clone())
    }

    pub fn get(&self, id: &str) -> Option<&Silence> {
        self.all.get(id)
    }

    pub fn list(&self) -> impl Iterator<Item = &Silence> {
        self.all.values()
    }

    /// The active silences that mute `labels`.
    pub fn muting(&self, labels: &Labels, now: i64) -> Vec<String> {
        self.all.values().filter(|s| s.state(now) == SilenceState::Active && all_match(&s.matchers, labels)).map(|s| s.id.clone()).collect()
    }

    pub fn prune(&mut self, now: i64) {
        self.all.retain(|_, s| now - s.ends_at < KEEP_EXPIRED_MS);
    }
}

/// One inhibition rule.
#[derive(Clone, Debug)]
pub struct Inhibit {
    pub source: Vec<Matcher>,
    pub target: Vec<Matcher>,
    pub equal: Vec<String>,
}

/// The fingerprints of the firing alerts that inhibit `target`.
pub fn inhibited_by<'a>(rules: &[Inhibit], target: &Alert, firing: impl Iterator<Item = &'a Alert> + Clone) -> Vec<String> {
    let mut out = Vec::new();
    for r in rules {
        if !all_match(&r.target, &target.labels) {
            continue;
        }
        for src in firing.clone() {
            if src.state != State::Firing || src.fingerprint == target.fingerprint || !all_match(&r.source, &src.labels) {
                continue;
            }
            if r.equal.iter().all(|k| src.labels.get(k) == target.labels.get(k)) && !out.contains(&src.fingerprint) {
                out.push(src.fingerprint.clone());
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::matcher::{Op, parse_matchers};

    fn silence(matchers: &str, starts: i64, ends: i64) -> Silence {
        Silence {
            id: "s1".into(),
            matchers: parse_matchers(matchers).unwrap(),
            starts_at: starts,
            ends_at: ends,
            created_by: "ops".into(),
            comment: "maintenance".into(),
        }
    }

    fn labels(pairs: &[(&str, &str)]) -> Labels {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    #[test]
    fn a_silence_mutes_from_start_to_end_and_can_be_expired() {
        let mut s = Silences::default();
        let sil = silence(r#"alertname="StaleData", exchange=~"up.*""#, 1_000, 10_000);
        Silences::validate(&sil, 0).unwrap();
        s.put(sil);
        let l = labels(&[("alertname", "StaleData"), ("exchange", "upbit")]);
        assert!(s.muting(&l, 500).is_empty(), "pending");
        assert_eq!(s.muting(&l, 2_000), vec!["s1".to_owned()]);
        assert!(s.muting(&labels(&[("alertname", "StaleData"), ("exchange", "bybit")]), 2_000).is_empty());
        assert_eq!(s.expire("s1", 3_000).unwrap().state(3_000), SilenceState::Expired);
        assert!(s.muting(&l, 3_000).is_empty());
        assert_eq!(s.expire("nope", 3_000).unwrap_err(), SilenceError::NotFound("nope".into()));
    }

    #[test]
    fn bad_silences_are_refused_with_the_reason() {
        assert_eq!(Silences::validate(&silence(r#"a="x""#, 0, 10), 20), Err(SilenceError::BadTimes));
        assert_eq!(Silences::validate(&silence(r#"a=~".*""#, 0, 10), 0), Err(SilenceError::MatchesEverything));
        let mut no_author = silence(r#"a="x""#, 0, 10);
        no_author.created_by = " ".into();
        assert_eq!(Silences::validate(&no_author, 0), Err(SilenceError::NoAuthor));
        no_author.matchers.clear();
        assert_eq!(Silences::validate(&no_author, 0), Err(SilenceError::NoMatchers));
    }

    fn alert(name: &str, exchange: &str, state: State) -> Alert {
        let l = labels(&[("alertname", name), ("exchange", exchange)]);
        let mut a = crate::eval::tests_support::alert(l);
        a.state = state;
        a
    }

    #[test]
    fn an_exchange_down_inhibits_its_own_stale_data_only() {
        let rule = Inhibit {
            source: vec![Matcher::new("alertname", Op::Equal, "ExchangeErrorRate").unwrap()],
            target: vec![Matcher::new("alertname", Op::Regex, "StaleData|ExchangeLatencyHigh").unwrap()],
            equal: vec!["exchange".into()],
        };
        let down = alert("ExchangeErrorRate", "upbit", State::Firing);
        let stale_upbit = alert("StaleData", "upbit", State::Firing);
        let stale_bybit = alert("StaleData", "bybit", State::Firing);
        let all = [down.clone(), stale_upbit.clone(), stale_bybit.clone()];
        assert_eq!(inhibited_by(std::slice::from_ref(&rule), &stale_upbit, all.iter()), vec![down.fingerprint.clone()]);
        assert!(inhibited_by(std::slice::from_ref(&rule), &stale_bybit, all.iter()).is_empty());
        assert!(inhibited_by(std::slice::from_ref(&rule), &down, all.iter()).is_empty());
        let resolved = alert("ExchangeErrorRate", "upbit", State::Resolved);
        assert!(inhibited_by(&[rule], &stale_upbit, [resolved, stale_upbit.clone()].iter()).is_empty());
    }
}
