//! Alertmanager's notification lifecycle, pure: alerts are routed (first
//! matching route), grouped by the route's `group_by` labels, and a group is
//! flushed `group_wait` after its first alert, then every `group_interval`,
//! and at once when its last alert resolves (`resolve_immediately`, so a
//! "resolved" message does not wait a whole interval: Alertmanager issues 1510
//! and 1660). What a flush sends is decided against the notification log
//! ([`needs_send`]), which every replica shares, so a flush by a second
//! replica, or a retry, sends nothing that was already delivered.

use std::collections::{BTreeMap, BTreeSet};

use crate::eval::{Alert, State};
use crate::matcher::{Labels, Matcher, all_match};

/// Where and how the alerts a route matches are notified.
#[derive(Clone, Debug)]
pub struct Route {
    pub matchers: Vec<Matcher>,
    pub receivers: Vec<String>,
    pub group_by: Vec<String>,
    pub group_wait_ms: i64,
    pub group_interval_ms: i64,
    pub repeat_interval_ms: i64,
    pub send_resolved: bool,
    pub resolve_immediately: bool,
}

/// One group's flush: the alerts to tell each receiver about.
#[derive(Clone, Debug, PartialEq)]
pub struct Flush {
    pub route: usize,
    pub group_key: String,
    pub group_labels: Labels,
    pub firing: Vec<Alert>,
    pub resolved: Vec<Alert>,
}

impl Flush {
    pub fn firing_set(&self) -> BTreeSet<String> {
        self.firing.iter().map(|a| a.fingerprint.clone()).collect()
    }

    pub fn resolved_set(&self) -> BTreeSet<String> {
        self.resolved.iter().map(|a| a.fingerprint.clone()).collect()
    }
}

#[derive(Debug)]
struct Group {
    route: usize,
    labels: Labels,
    alerts: BTreeMap<String, Alert>,
    next_flush: i64,
}

/// Every group, and the routes.
#[derive(Debug)]
pub struct Groups {
    routes: Vec<Route>,
    groups: BTreeMap<String, Group>,
}

/// The group key: the route and the grouping labels, the same on every replica.
pub fn group_key(route: usize, labels: &Labels) -> String {
    let l: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v:?}")).collect();
    format!("{route}:{{{}}}", l.join(","))
}

impl Groups {
    pub fn new(routes: Vec<Route>) -> Groups {
        Groups { routes, groups: BTreeMap::new() }
    }

    pub fn routes(&self) -> &[Route] {
        &self.routes
    }

    fn route_of(&self, labels: &Labels) -> Option<usize> {
        self.routes.iter().position(|r| all_match(&r.matchers, labels))
    }

    /// Takes in the alerts that may notify now (firing, and resolved; muted
    /// ones are passed as resolved, since for a receiver they stopped).
    pub fn update<'a>(&mut self, alerts: impl Iterator<Item = &'a Alert>, now: i64) {
        let mut present = BTreeSet::new();
        for a in alerts {
            let Some(route) = self.route_of(&a.labels) else { continue };
            let r = &self.routes[route];
            let labels: Labels = r.group_by.iter().filter_map(|k| a.labels.get(k).map(|v| (k.clone(), v.clone()))).collect();
            let key = group_key(route, &labels);
            if a.state == State::Resolved && !self.groups.contains_key(&key) {
                continue; // Resolved before any group knew it.
            }
            if a.state == State::Pending {
                continue;
            }
            present.insert((key.clone(), a.fingerprint.clone()));
            let g = self.groups.entry(key).or_insert_with(|| Group {
                route,
                labels,
                alerts: BTreeMap::new(),
                next_flush: now + r.group_wait_ms,
            });
            g.alerts.insert(a.fingerprint.clone(), a.clone());
        }
        // An alert that is no longer listed at all has ended: resolve it here.
        for (key, g) in &mut self.groups {
            for (fp, a) in &mut g.alerts {
                if !present.contains(&(key.clone(), fp.clone())) && a.state != State::Resolved {
                    a.state = State::Resolved;
                    a.resolved_at = Some(now);
                }
            }
        }
        for g in self.groups.values_mut() {
            let r = &self.routes[g.route];
            if r.resolve_immediately && !g.alerts.is_empty() && g.alerts.values().all(|a| a.state == State::Resolved) {
                g.next_flush = g.next_flush.min(now);
            }
        }
    }

    /// The groups due at `now`; each is next due a group interval later.
    /// Resolved alerts leave their group once flushed, and a group with no
    /// alert left is dropped.
    pub fn due(&mut self, now: i64) -> Vec<Flush> {
        let mut out = Vec::new();
        for (key, g) in &mut self.groups {
            if g.next_flush > now {
                continue;
            }
            let (resolved, firing): (Vec<Alert>, Vec<Alert>) = g.alerts.values().cloned().partition(|a| a.state == State::Resolved);
            out.push(Flush { route: g.route, group_key: key.clone(), group_labels: g.labels.clone(), firing, resolved });
            g.alerts.retain(|_, a| a.state != State::Resolved);
            g.next_flush = now + self.routes[g.route].group_interval_ms;
        }
        self.groups.retain(|_, g| !g.alerts.is_empty());
        out
    }

    /// When the next group is due (for the service's timer).
    pub fn next_due(&self) -> Option<i64> {
        self.groups.values().map(|g| g.next_flush).min()
    }
}

/// What the notification log says was last delivered to one receiver for one
/// group.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Delivered {
    pub firing: BTreeSet<String>,
    pub resolved: BTreeSet<String>,
    pub at: Option<i64>,
}

/// Whether `flush` says something `last` has not: new firing alerts, resolved
/// ones (with `send_resolved`), or the same firing set once the repeat
/// interval has passed. Alertmanager's rule, read against the shared log.
pub fn needs_send(route: &Route, last: Option<&Delivered>, firing: &BTreeSet<String>, now: i64) -> bool {
    let Some(last) = last.filter(|l| l.at.is_some()) else {
        // Never delivered: a group whose alerts resolved before its first
        // notification has nothing to say.
        return !firing.is_empty();
    };
    if !firing.is_subset(&last.firing) {
        return true;
    }
    if firing.len() < last.firing.len() && route.send_resolved {
        // Some of what was delivered has resolved, nothing new fires.
        return true;
    }
    !firing.is_empty() && last.at.is_some_and(|at| now - at >= route.repeat_interval_ms)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eval::tests_support::alert;

    fn route() -> Route {
        Route {
            matchers: vec![],
            receivers: vec!["hook".into()],
            group_by: vec!["alertname".into(), "exchange".into()],
            group_wait_ms: 1_000,
            group_interval_ms: 30_000,
            repeat_interval_ms: 3_600_000,
            send_resolved: true,
            resolve_immediately: true,
        }
    }

    fn a(name: &str, exchange: &str, extra: &str) -> Alert {
        alert(
            [("alertname", name), ("exchange", exchange), ("symbol", extra)]
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        )
    }

    #[test]
    fn group_wait_then_interval_then_resolved_at_once() {
        let mut g = Groups::new(vec![route()]);
        let x = a("StaleData", "upbit", "BTC");
        let y = a("StaleData", "upbit", "ETH");
        g.update([&x].into_iter(), 0);
        assert!(g.due(500).is_empty(), "group wait");
        g.update([&x, &y].into_iter(), 900);
        let f = g.due(1_000);
        assert_eq!(f.len(), 1, "one group for both symbols");
        assert_eq!(f[0].firing.len(), 2);
        assert!(g.due(20_000).is_empty(), "group interval");
        let mut y_res = y.clone();
        y_res.state = State::Resolved;
        g.update([&x, &y_res].into_iter(), 20_000);
        assert!(g.due(20_000).is_empty(), "a partial resolve waits for the interval");
        let f = g.due(31_000);
        assert_eq!((f[0].firing.len(), f[0].resolved.len()), (1, 1));
        // The last one stops being listed: resolved, and flushed at once.
        g.update(std::iter::empty(), 40_000);
        let f = g.due(40_000);
        assert_eq!((f[0].firing.len(), f[0].resolved.len()), (0, 1));
        assert!(g.next_due().is_none(), "empty group dropped");
    }

    #[test]
    fn the_log_decides_what_is_new() {
        let r = route();
        let set = |v: &[&str]| v.iter().map(|s| (*s).to_owned()).collect::<BTreeSet<_>>();
        assert!(needs_send(&r, None, &set(&["a"]), 0));
        assert!(!needs_send(&r, None, &set(&[]), 0), "resolved before ever sent");
        let sent = Delivered { firing: set(&["a"]), resolved: set(&[]), at: Some(0) };
        assert!(!needs_send(&r, Some(&sent), &set(&["a"]), 30_000), "same set, within repeat: a second replica sends nothing");
        assert!(needs_send(&r, Some(&sent), &set(&["a", "b"]), 30_000), "a new alert");
        assert!(needs_send(&r, Some(&sent), &set(&["a"]), 3_600_000), "repeat");
        assert!(needs_send(&r, Some(&sent), &set(&[]), 30_000), "resolved");
        let done = Delivered { firing: set(&[]), resolved: set(&["a"]), at: Some(30_000) };
        assert!(!needs_send(&r, Some(&done), &set(&[]), 31_000), "resolved once only");
        let quiet = Route { send_resolved: false, ..route() };
        assert!(!needs_send(&quiet, Some(&sent), &set(&[]), 30_000));
    }

    #[test]
    fn routes_pick_the_first_match_and_pending_never_notifies() {
        let mut critical = route();
        critical.matchers = vec![Matcher::new("severity", crate::matcher::Op::Equal, "critical").unwrap()];
        critical.receivers = vec!["pager".into()];
        let mut g = Groups::new(vec![critical, route()]);
        let mut p = a("X", "upbit", "");
        p.state = State::Pending;
        g.update([&p].into_iter(), 0);
        assert!(g.next_due().is_none());
        let w = a("X", "upbit", "");
        g.update([&w].into_iter(), 0);
        let f = g.due(1_000);
        assert_eq!(f[0].route, 1, "warning goes to the second route");
    }
}
