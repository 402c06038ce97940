//! Who is in the cluster, as one replica sees it, and what that means for budgets:
//! how many shares a budget is split into when NATS is unreachable, and until when
//! an owner keeps the share of each replica back that may be admitting on its own.
//! Pure: times come in as arguments.
//!
//! A replica cut off from NATS admits on its own ("solo") only inside a window it
//! announced in its heartbeats: not before `solo_from` (by then the others have
//! noticed its absence and what they admitted from the whole budget has left the
//! exchange's windows) and not at or after `solo_until` (its fallback lease). What
//! it admitted may reach the exchange up to its upstream timeout later. So:
//!
//! * an absent replica's share is kept back until `solo_until` + its upstream
//!   timeout (+ the clock skew), and each window keeps it one period longer;
//! * a replica proven gone (its address refuses connections, or a new incarnation
//!   speaks under its name) at time `at` is kept back only for what it may have
//!   admitted before `at`: nothing at all if `at` is before its `solo_from`. That
//!   is how a killed replica costs nothing while a cut-off one is waited for.

use std::collections::BTreeMap;
use std::time::Duration;

use sluice_rate::Time;

/// Timing rules of membership.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Timing {
    pub(crate) absent_after: Duration,
    pub(crate) member_ttl: Duration,
    /// Replicas' clocks differ by at most this much.
    pub(crate) skew: Duration,
}

/// What a replica says of itself in a heartbeat.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct Said {
    pub(crate) incarnation: String,
    /// What it admitted alone in an earlier fallback may reach the exchange until
    /// then (its clock); `Time::ZERO` if nothing.
    pub(crate) fallback_clear: Time,
    pub(crate) egress: Vec<String>,
    /// Its gRPC address, for the death probe ("" when not advertised).
    pub(crate) addr: String,
    /// Were it cut off now, it would admit alone only within [solo_from,
    /// solo_until) of its clock. `solo_until` ZERO: not announced (no bound).
    pub(crate) solo_from: Time,
    pub(crate) solo_until: Time,
    pub(crate) upstream_timeout: Duration,
    /// Alone it takes `floor(limit / share_of)` of each limit (0: not said).
    pub(crate) share_of: u64,
}

/// Another replica as last heard.
#[derive(Debug, Clone)]
pub(crate) struct Member {
    pub(crate) said: Said,
    pub(crate) seen_at: Time,
    /// Heard from since this replica last (re)joined NATS.
    pub(crate) fresh: bool,
    /// A death probe is under way.
    probing: bool,
    probed_at: Time,
}

impl Member {
    /// Until when (this replica's clock) it may have admitted alone, were it gone
    /// at `at`; `None` when it cannot have.
    fn solo_end(&self, at: Time, skew: Duration) -> Option<Time> {
        let never = self.said.solo_until != Time::ZERO && self.said.solo_until <= self.said.solo_from;
        if never || at + skew < self.said.solo_from {
            return None;
        }
        let until = if self.said.solo_until == Time::ZERO { Time::MAX } else { self.said.solo_until + skew };
        Some(at.min(until))
    }

    /// Until when its share must be kept back (before each window's own period),
    /// given that it stopped admitting by `gone_by`.
    fn clear_time(&self, gone_by: Time, skew: Duration) -> Option<Time> {
        let solo = self.solo_end(gone_by, skew).map(|end| end + self.said.upstream_timeout + skew);
        let earlier = (self.said.fallback_clear > Time::ZERO).then(|| self.said.fallback_clear + skew);
        solo.max(earlier)
    }
}

/// The membership view of one replica.
#[derive(Debug)]
pub(crate) struct Members {
    me: String,
    others: BTreeMap<String, Member>,
    /// When this replica last (re)joined NATS: absence counts only while it can hear.
    joined_at: Time,
    /// Replicas gone (proven dead, replaced, left or forgotten) whose lone
    /// admissions may still count: their shares are kept back until these times.
    ghosts: Vec<(Time, u64)>,
}

/// A replica process known to be gone (proven dead, or replaced by a new one):
/// what it was granted can be settled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Gone {
    pub(crate) replica: String,
    pub(crate) incarnation: String,
    /// It sent nothing after this time (this replica's clock).
    pub(crate) by: Time,
    pub(crate) upstream_timeout: Duration,
}

/// What a death probe found at a replica's address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Probe {
    /// The connection was refused: no process serves that address.
    Refused,
    /// Something answered, or nothing did: no proof either way.
    Inconclusive,
}

impl Members {
    pub(crate) fn new(me: &str, now: Time) -> Self {
        Members { me: me.to_owned(), others: BTreeMap::new(), joined_at: now, ghosts: Vec::new() }
    }

    /// A heartbeat arrived (or a leave notice). Returns the process it proves
    /// gone, if it comes from a new incarnation.
    pub(crate) fn heard(&mut self, now: Time, replica: &str, said: Said, leaving: bool, t: Timing) -> Option<Gone> {
        if replica == self.me {
            return None;
        }
        if leaving {
            // It stops admitting as it leaves (it is connected, so not alone); only
            // an earlier fallback of its may still count.
            let gone = Member { said, seen_at: now, fresh: true, probing: false, probed_at: Time::ZERO };
            let of = self.share_of(&gone);
            let earlier = self.others.remove(replica).and_then(|m| m.clear_time(Time::ZERO, t.skew));
            self.ghost(gone.clear_time(Time::ZERO, t.skew).max(earlier), of);
            return None;
        }
        let mut replaced = None;
        if let Some(old) = self.others.get(replica)
            && old.said.incarnation != said.incarnation
        {
            // A new process under the same name: the old one is gone by now.
            let (clear, of) = (old.clear_time(now, t.skew), self.share_of(old));
            replaced = Some(Gone {
                replica: replica.to_owned(),
                incarnation: old.said.incarnation.clone(),
                by: now + t.skew,
                upstream_timeout: old.said.upstream_timeout,
            });
            self.ghost(clear, of);
        }
        let m = Member { said, seen_at: now, fresh: true, probing: false, probed_at: Time::ZERO };
        self.others.insert(replica.to_owned(), m);
        replaced
    }

    fn ghost(&mut self, clear: Option<Time>, of: u64) {
        if let Some(c) = clear {
            self.ghosts.push((c, of));
        }
    }

    /// The shares `m` splits a budget into when alone.
    fn share_of(&self, m: &Member) -> u64 {
        if m.said.share_of > 0 { m.said.share_of } else { self.count() }
    }

    /// This replica is back in contact with NATS: what it heard before may be old,
    /// and everyone's absence is counted afresh from now.
    pub(crate) fn rejoined(&mut self, now: Time) {
        self.joined_at = now;
        for m in self.others.values_mut() {
            m.fresh = false;
        }
    }

    /// Forgets replicas absent longer than the member ttl (while this one could
    /// hear), and ghosts whose time has passed every window (`longest`).
    pub(crate) fn prune(&mut self, now: Time, t: Timing, longest: Duration) -> Vec<String> {
        let joined = self.joined_at;
        let gone: Vec<String> = self
            .others
            .iter()
            .filter(|(_, m)| now.saturating_since(m.seen_at.max(joined)) > t.member_ttl)
            .map(|(n, _)| n.clone())
            .collect();
        for g in &gone {
            if let Some(m) = self.others.remove(g) {
                let (clear, of) = (self.keep_until(&m, now, t), self.share_of(&m));
                self.ghost(clear, of);
            }
        }
        self.ghosts.retain(|&(c, _)| c == Time::MAX || c + longest >= now);
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

    /// Until when `m`'s share must be kept back as things stand at `now`.
    fn keep_until(&self, m: &Member, now: Time, t: Timing) -> Option<Time> {
        if Self::is_alive(m, now, t) {
            // Speaking: only an earlier fallback of its may still count.
            return m.clear_time(Time::ZERO, t.skew);
        }
        if !m.fresh {
            // Not heard since this replica rejoined: it may have been alone all
            // that time. Kept back until it speaks or is forgotten.
            return Some(self.joined_at + t.member_ttl);
        }
        // Silent while this replica listened: cut off or dead; alone at most
        // until its fallback lease ends.
        m.clear_time(Time::MAX, t.skew)
    }

    /// The times until which each absent, gone or recovering replica's share is
    /// kept back (a window adds its own period); see [`sluice_rate::share::Share`].
    pub(crate) fn reservations(&self, now: Time, t: Timing, longest: Duration) -> Vec<(Time, u64)> {
        let mut v: Vec<(Time, u64)> = self.others.values().filter_map(|m| Some((self.keep_until(m, now, t)?, self.share_of(m)))).collect();
        v.extend(self.ghosts.iter().copied());
        v.retain(|&(c, _)| c == Time::MAX || c + longest >= now);
        v.sort();
        v
    }

    /// Replicas to probe now: silent longer than the absence timeout, with an
    /// address, not probed within that timeout. Marked as being probed.
    pub(crate) fn due_for_probe(&mut self, now: Time, t: Timing) -> Vec<(String, String, String)> {
        let joined = self.joined_at;
        let mut out = Vec::new();
        for (name, m) in self.others.iter_mut() {
            let silent = now.saturating_since(m.seen_at.max(joined)) > t.absent_after;
            if silent && !m.said.addr.is_empty() && !m.probing && now.saturating_since(m.probed_at) >= t.absent_after {
                m.probing = true;
                m.probed_at = now;
                out.push((name.clone(), m.said.incarnation.clone(), m.said.addr.clone()));
            }
        }
        out
    }

    /// A probe of `replica` (as `incarnation`) finished at `at`. When it proved
    /// the replica gone, the replica is forgotten (its share kept back only for
    /// what it may have admitted alone before `at`) and returned.
    pub(crate) fn probed(&mut self, replica: &str, incarnation: &str, result: Probe, at: Time, t: Timing) -> Option<Gone> {
        let m = self.others.get_mut(replica)?;
        if m.said.incarnation != incarnation {
            return None;
        }
        m.probing = false;
        // It spoke while the probe ran: alive after all.
        if result == Probe::Inconclusive || Self::is_alive(m, at, t) {
            return None;
        }
        let m = self.others.remove(replica)?;
        let of = self.share_of(&m);
        self.ghost(m.clear_time(at, t.skew), of);
        Some(Gone {
            replica: replica.to_owned(),
            incarnation: incarnation.to_owned(),
            by: at + t.skew,
            upstream_timeout: m.said.upstream_timeout,
        })
    }

    /// Whether `replica` with `incarnation` is known alive now (this one always is).
    pub(crate) fn alive(&self, replica: &str, incarnation: &str, my_incarnation: &str, now: Time, t: Timing) -> bool {
        if replica == self.me {
            return incarnation == my_incarnation;
        }
        self.others.get(replica).is_some_and(|m| m.said.incarnation == incarnation && Self::is_alive(m, now, t))
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

    const T: Timing = Timing { absent_after: Duration::from_secs(1), member_ttl: Duration::from_secs(100), skew: Duration::ZERO };
    const LONGEST: Duration = Duration::from_secs(60);

    fn s(n: u64) -> Time {
        Time::from_millis(n * 1000)
    }

    /// A heartbeat sent at `at`: alone from 3 s after it, until 20 s after it,
    /// with a 2 s upstream timeout.
    fn said(inc: &str, at: u64) -> Said {
        Said {
            incarnation: inc.into(),
            addr: "10.0.0.2:50051".into(),
            solo_from: s(at + 3),
            solo_until: s(at + 20),
            upstream_timeout: Duration::from_secs(2),
            share_of: 3,
            ..Said::default()
        }
    }

    #[test]
    fn a_silent_replica_is_kept_back_until_its_lease_ends_and_its_requests_arrive() {
        let mut m = Members::new("a", s(0));
        m.heard(s(0), "b", said("1", 0), false, T);
        m.heard(s(0), "c", said("1", 0), false, T);
        assert_eq!((m.count(), m.reservations(s(0), T, LONGEST)), (3, vec![]));
        // c stops talking: after the absence timeout its share is kept back until
        // its lease (20 s) plus its upstream timeout (2 s).
        m.heard(s(2), "b", said("1", 2), false, T);
        assert_eq!(m.reservations(s(2), T, LONGEST), vec![(s(22), 3)]);
        // Past that plus the longest window it no longer matters.
        m.heard(s(83), "b", said("1", 83), false, T);
        assert_eq!(m.reservations(s(83), T, LONGEST), vec![]);
    }

    #[test]
    fn a_replica_proven_dead_before_it_could_be_alone_costs_nothing() {
        let mut m = Members::new("a", s(0));
        m.heard(s(10), "b", said("1", 10), false, T);
        assert!(m.due_for_probe(s(11), T).is_empty(), "not silent long enough yet");
        let probes = m.due_for_probe(s(12), T);
        assert_eq!(probes, vec![("b".into(), "1".into(), "10.0.0.2:50051".into())]);
        assert!(m.due_for_probe(s(12), T).is_empty(), "one probe at a time");
        assert_eq!(m.reservations(s(12), T, LONGEST), vec![(s(32), 3)]);
        // Refused at 12 s, before its earliest lone admission (13 s): nothing kept.
        let gone = m.probed("b", "1", Probe::Refused, s(12), T).unwrap();
        assert_eq!((gone.incarnation.as_str(), gone.by, gone.upstream_timeout), ("1", s(12), Duration::from_secs(2)));
        assert_eq!((m.count(), m.reservations(s(12), T, LONGEST)), (1, vec![]));
    }

    #[test]
    fn a_replica_proven_dead_while_it_may_have_been_alone_is_kept_for_what_it_sent() {
        let mut m = Members::new("a", s(0));
        m.heard(s(10), "b", said("1", 10), false, T);
        // A probe that finds nothing proves nothing.
        m.due_for_probe(s(12), T);
        assert!(m.probed("b", "1", Probe::Inconclusive, s(12), T).is_none());
        // Proven gone at 15 s, after it may have begun alone at 13 s: its requests
        // may arrive until 15 + 2 s.
        m.due_for_probe(s(15), T);
        assert!(m.probed("b", "1", Probe::Refused, s(15), T).is_some());
        assert_eq!(m.reservations(s(15), T, LONGEST), vec![(s(17), 3)]);
        // A stale probe of an earlier incarnation changes nothing.
        m.heard(s(16), "c", said("2", 16), false, T);
        assert!(m.probed("c", "1", Probe::Refused, s(16), T).is_none());
        assert_eq!(m.count(), 2);
    }

    #[test]
    fn a_replica_whose_lease_ends_before_its_pause_is_never_kept_back() {
        let mut m = Members::new("a", s(0));
        m.heard(s(0), "b", Said { solo_until: s(2), ..said("1", 0) }, false, T);
        assert_eq!(m.reservations(s(5), T, LONGEST), vec![]);
    }

    #[test]
    fn a_new_incarnation_proves_the_old_one_gone() {
        let mut m = Members::new("a", s(0));
        m.heard(s(10), "b", said("1", 10), false, T);
        // Restarted within a second: it was never alone.
        let gone = m.heard(s(11), "b", said("2", 11), false, T).unwrap();
        assert_eq!((gone.incarnation.as_str(), gone.by), ("1", s(11)));
        assert!(m.heard(s(12), "b", said("2", 12), false, T).is_none());
        assert_eq!(m.reservations(s(11), T, LONGEST), vec![]);
        // Restarted after 29 s of silence: the old one may have been alone from 15 s
        // to its lease end (32 s); its requests arrive by 34 s.
        m.heard(s(41), "b", said("3", 41), false, T);
        assert_eq!(m.reservations(s(41), T, LONGEST), vec![(s(34), 3)]);
        assert_eq!(m.count(), 2);
    }

    #[test]
    fn recovering_and_leaving_replicas_keep_their_earlier_fallback_back() {
        let mut m = Members::new("a", s(0));
        let back = Said { fallback_clear: s(8), ..said("1", 3) };
        m.heard(s(3), "b", back.clone(), false, T);
        assert_eq!(m.reservations(s(3), T, LONGEST), vec![(s(8), 3)]);
        // It leaves: the earlier fallback still counts, then ages out.
        m.heard(s(4), "b", back, true, T);
        assert_eq!((m.count(), m.reservations(s(4), T, LONGEST)), (1, vec![(s(8), 3)]));
        m.prune(s(69), T, LONGEST);
        assert_eq!(m.reservations(s(69), T, LONGEST), vec![]);
    }

    #[test]
    fn after_rejoining_nobody_counts_as_alive_until_heard_and_absence_restarts() {
        let mut m = Members::new("a", s(0));
        m.heard(s(0), "b", said("1", 0), false, T);
        m.rejoined(s(20));
        assert!(!m.alive("b", "1", "x", s(20), T));
        assert_eq!(m.reservations(s(20), T, LONGEST), vec![(s(120), 3)]);
        assert!(m.prune(s(25), T, LONGEST).is_empty(), "absence counts from the rejoin");
        assert!(m.due_for_probe(s(20), T).is_empty(), "given the absence timeout to speak first");
        m.heard(s(21), "b", said("1", 21), false, T);
        assert!(m.alive("b", "1", "x", s(21), T));
        assert!(!m.alive("b", "2", "x", s(21), T), "another incarnation is another process");
        assert_eq!(m.reservations(s(21), T, LONGEST), vec![]);
        // Forgotten after the member ttl with its lease long over.
        assert_eq!(m.prune(s(200), T, LONGEST), vec!["b".to_owned()]);
        assert_eq!((m.count(), m.reservations(s(200), T, LONGEST)), (1, vec![]));
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
