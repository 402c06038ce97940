//! Who is in the cluster, as one replica sees it, and what that means for budgets:
//! how many shares a budget is split into when NATS is unreachable, and how many
//! of them an owner keeps back for replicas that may be admitting on their own.
//! Pure: times come in as arguments.

use std::collections::BTreeMap;
use std::time::Duration;

use sluice_rate::Time;

/// Timing rules of membership.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Timing {
    pub(crate) absent_after: Duration,
    pub(crate) member_ttl: Duration,
}

/// Another replica as last heard.
#[derive(Debug, Clone)]
pub(crate) struct Member {
    pub(crate) incarnation: String,
    pub(crate) seen_at: Time,
    /// Heard from since this replica last (re)joined NATS.
    pub(crate) fresh: bool,
    /// It may hold budget admitted on its own share until then.
    pub(crate) fallback_clear: Time,
    pub(crate) egress: Vec<String>,
}

/// The membership view of one replica.
#[derive(Debug)]
pub(crate) struct Members {
    me: String,
    others: BTreeMap<String, Member>,
    /// When this replica last (re)joined NATS: absence counts only while it can hear.
    joined_at: Time,
}

impl Members {
    pub(crate) fn new(me: &str, now: Time) -> Self {
        Members { me: me.to_owned(), others: BTreeMap::new(), joined_at: now }
    }

    /// A heartbeat arrived (or a leave notice).
    pub(crate) fn heard(&mut self, now: Time, replica: &str, incarnation: &str, fallback_clear: Time, leaving: bool, egress: Vec<String>) {
        if replica == self.me {
            return;
        }
        if leaving {
            self.others.remove(replica);
            return;
        }
        self.others
            .insert(replica.to_owned(), Member { incarnation: incarnation.to_owned(), seen_at: now, fresh: true, fallback_clear, egress });
    }

    /// This replica is back in contact with NATS: what it heard before may be old,
    /// and everyone's absence is counted afresh from now.
    pub(crate) fn rejoined(&mut self, now: Time) {
        self.joined_at = now;
        for m in self.others.values_mut() {
            m.fresh = false;
        }
    }

    /// Forgets replicas absent longer than the member ttl (while this one could hear).
    pub(crate) fn prune(&mut self, now: Time, t: Timing) -> Vec<String> {
        let joined = self.joined_at;
        let gone: Vec<String> = self
            .others
            .iter()
            .filter(|(_, m)| now.saturating_since(m.seen_at.max(joined)) > t.member_ttl)
            .map(|(n, _)| n.clone())
            .collect();
        for g in &gone {
            self.others.remove(g);
        }
        gone
    }

    /// Every known replica, this one included: the number of shares a budget is
    /// split into when replicas cannot coordinate.
    pub(crate) fn count(&self) -> u64 {
        self.others.len() as u64 + 1
    }

    fn is_alive(m: &Member, now: Time, t: Timing) -> bool {
        m.fresh && now.saturating_since(m.seen_at) <= t.absent_after
    }

    /// Replicas whose share an owner must keep back: absent ones (they may be cut
    /// off from NATS and admitting on their share) and those still holding budget
    /// they admitted on their share.
    pub(crate) fn reserved(&self, now: Time, t: Timing) -> u64 {
        self.others.values().filter(|m| !Self::is_alive(m, now, t) || m.fallback_clear > now).count() as u64
    }

    /// Whether `replica` with `incarnation` is known alive now (this one always is).
    pub(crate) fn alive(&self, replica: &str, incarnation: &str, my_incarnation: &str, now: Time, t: Timing) -> bool {
        if replica == self.me {
            return incarnation == my_incarnation;
        }
        self.others.get(replica).is_some_and(|m| m.incarnation == incarnation && Self::is_alive(m, now, t))
    }

    pub(crate) fn alive_count(&self, now: Time, t: Timing) -> u64 {
        1 + self.others.values().filter(|m| Self::is_alive(m, now, t)).count() as u64
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = (&String, &Member)> {
        self.others.iter()
    }
}

/// What a replica should do about one exchange's lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum LeaseAction {
    /// It holds the lease: extend it.
    Renew,
    /// Nobody holds a live lease: take it, with this epoch.
    Take { epoch: u64 },
    /// Someone else holds it (or should take it): leave it.
    Leave,
}

/// A lease as read from the owners bucket.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct LeaseSeen {
    pub(crate) owner: String,
    pub(crate) epoch: u64,
    pub(crate) expires: Time,
}

/// Decides about one exchange's lease. A replica takes a free lease only while it
/// owns fewer than its fair part of the exchanges, unless the lease has been free
/// for a whole lease period (then anyone takes it, so no exchange stays ownerless).
pub(crate) fn lease_action(
    seen: Option<&LeaseSeen>,
    me: &str,
    now: Time,
    skew: Duration,
    lease_ttl: Duration,
    owned: usize,
    fair: usize,
) -> LeaseAction {
    match seen {
        Some(l) if l.owner == me && now < l.expires => LeaseAction::Renew,
        // Another owner's lease counts until its end plus the clock skew.
        Some(l) if now < l.expires + skew => LeaseAction::Leave,
        Some(l) => {
            let free_for = now.saturating_since(l.expires + skew);
            if owned < fair || free_for > lease_ttl { LeaseAction::Take { epoch: l.epoch + 1 } } else { LeaseAction::Leave }
        }
        None => LeaseAction::Take { epoch: 1 },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: Timing = Timing { absent_after: Duration::from_secs(1), member_ttl: Duration::from_secs(10) };

    fn s(n: u64) -> Time {
        Time::from_millis(n * 1000)
    }

    #[test]
    fn absent_and_recovering_replicas_keep_their_share_until_forgotten() {
        let mut m = Members::new("a", s(0));
        m.heard(s(0), "b", "1", Time::ZERO, false, vec![]);
        m.heard(s(0), "c", "1", Time::ZERO, false, vec![]);
        assert_eq!((m.count(), m.reserved(s(0), T)), (3, 0));
        // c stops talking: after the absence timeout its share is kept back.
        m.heard(s(2), "b", "1", Time::ZERO, false, vec![]);
        assert_eq!(m.reserved(s(2), T), 1);
        // b comes back from a fallback: its share stays back until it clears.
        m.heard(s(3), "b", "1", s(8), false, vec![]);
        assert_eq!(m.reserved(s(3), T), 2);
        m.heard(s(9), "b", "1", s(8), false, vec![]);
        assert_eq!(m.reserved(s(9), T), 1);
        // c is forgotten after the member ttl: one share less, nothing kept back.
        assert_eq!(m.prune(s(11), T), vec!["c".to_owned()]);
        assert_eq!((m.count(), m.reserved(s(11) - Duration::from_secs(2), T)), (2, 0));
    }

    #[test]
    fn after_rejoining_nobody_counts_as_alive_until_heard_and_absence_restarts() {
        let mut m = Members::new("a", s(0));
        m.heard(s(0), "b", "1", Time::ZERO, false, vec![]);
        m.rejoined(s(20));
        assert!(!m.alive("b", "1", "x", s(20), T));
        assert_eq!(m.reserved(s(20), T), 1);
        assert!(m.prune(s(25), T).is_empty(), "absence counts from the rejoin");
        m.heard(s(21), "b", "1", Time::ZERO, false, vec![]);
        assert!(m.alive("b", "1", "x", s(21), T));
        assert!(!m.alive("b", "2", "x", s(21), T), "another incarnation is another process");
        m.heard(s(21), "b", "1", Time::ZERO, true, vec![]);
        assert_eq!(m.count(), 1, "a leaving replica is forgotten at once");
    }

    #[test]
    fn leases_are_renewed_respected_and_taken_when_free() {
        let ttl = Duration::from_millis(1200);
        let skew = Duration::from_millis(50);
        let mine = LeaseSeen { owner: "a".into(), epoch: 3, expires: s(10) };
        assert_eq!(lease_action(Some(&mine), "a", s(9), skew, ttl, 1, 2), LeaseAction::Renew);
        assert_eq!(lease_action(Some(&mine), "b", s(9), skew, ttl, 0, 2), LeaseAction::Leave);
        // Expired, but within the skew: still the old owner's.
        assert_eq!(lease_action(Some(&mine), "b", s(10) + Duration::from_millis(20), skew, ttl, 0, 2), LeaseAction::Leave);
        assert_eq!(lease_action(Some(&mine), "b", s(11), skew, ttl, 0, 2), LeaseAction::Take { epoch: 4 });
        // A replica with its fair part leaves a free lease to others for a while.
        assert_eq!(lease_action(Some(&mine), "b", s(11), skew, ttl, 2, 2), LeaseAction::Leave);
        assert_eq!(lease_action(Some(&mine), "b", s(12), skew, ttl, 2, 2), LeaseAction::Take { epoch: 4 });
        assert_eq!(lease_action(None, "b", s(0), skew, ttl, 5, 1), LeaseAction::Take { epoch: 1 });
    }
}
