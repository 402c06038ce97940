//! How much of each limit one dispatcher replica may use. Replicas that cannot
//! coordinate split every budget: each takes a `Part`, and one that still
//! coordinates for the others keeps only the `Rest` after the parts of those that
//! may be admitting on their own.
//!
//! A replica that admitted on its own stops at a known time (its fallback lease,
//! or when it rejoined, or when it was proven dead); what it admitted may reach
//! the exchange until that time plus its upstream timeout. Each such replica's
//! part is therefore kept back *until a time*, and a window keeps it back until
//! that time plus its own period: a one-second group is whole again a second after
//! the replica's last request could have arrived, however long the longest window
//! of the exchange is.

use std::time::Duration;

use crate::Time;

/// The share of every limit this process may admit.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum Share {
    #[default]
    Whole,
    /// `floor(limit / of)`: this replica admits on its own.
    Part { of: u64 },
    /// The limit less the parts of other replicas that may be admitting alone:
    /// each `(until, of)` keeps `floor(limit / of)` back (that replica's `Part`)
    /// until `until` plus the window's period (`Time::MAX`: until further notice).
    Rest { reserved: Vec<(Time, u64)> },
}

fn in_force(until: Time, now: Time, period: Duration) -> bool {
    until == Time::MAX || now <= until + period
}

impl Share {
    /// The part of `limit` this share allows in a window of `period` at `now`;
    /// the parts of `of` replicas never sum above `limit`.
    pub fn apply(&self, limit: u64, now: Time, period: Duration) -> u64 {
        match self {
            Share::Whole => limit,
            Share::Part { of } => limit / (*of).max(1),
            Share::Rest { reserved } => {
                let kept: u64 = reserved.iter().filter(|(u, _)| in_force(*u, now, period)).map(|(_, of)| limit / (*of).max(1)).sum();
                limit.saturating_sub(kept)
            }
        }
    }

    /// When the share of a window of `period` next grows (a reservation ends), so
    /// a waiting request is looked at again then.
    pub fn grows_at(&self, now: Time, period: Duration) -> Option<Time> {
        match self {
            Share::Rest { reserved } => {
                reserved.iter().filter(|(u, _)| *u != Time::MAX && in_force(*u, now, period)).map(|(u, _)| (*u + period).next()).min()
            }
            _ => None,
        }
    }

    /// Whether anything is kept back at `now` in a window of `period`.
    pub fn keeps_back(&self, now: Time, period: Duration) -> bool {
        matches!(self, Share::Rest { reserved } if reserved.iter().any(|(u, _)| in_force(*u, now, period)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SECOND: Duration = Duration::from_secs(1);
    const MINUTE: Duration = Duration::from_secs(60);

    fn ms(n: u64) -> Time {
        Time::from_millis(n)
    }

    #[test]
    fn shares_of_replicas_never_sum_above_the_limit() {
        for limit in [1u64, 2, 7, 10, 600, 6000] {
            for of in 1u64..=5 {
                let part = Share::Part { of }.apply(limit, ms(0), SECOND);
                for n in 0..of {
                    let rest = Share::Rest { reserved: vec![(Time::MAX, of); n as usize] }.apply(limit, ms(0), SECOND);
                    assert!(rest + n * part <= limit, "limit {limit} of {of} reserved {n}");
                }
                assert!(part * of <= limit);
            }
        }
    }

    #[test]
    fn a_reservation_ends_one_window_after_its_time_in_each_window() {
        let s = Share::Rest { reserved: vec![(ms(5_000), 3), (Time::MAX, 3)] };
        // Both kept back in a one-second window until 6 s, then only the open one.
        assert_eq!(s.apply(10, ms(6_000), SECOND), 4);
        assert_eq!(s.apply(10, ms(6_001), SECOND), 7);
        assert_eq!(s.grows_at(ms(5_500), SECOND), Some(ms(6_000).next()));
        assert_eq!(s.grows_at(ms(6_001), SECOND), None);
        // A minute window keeps it a minute longer.
        assert_eq!(s.apply(600, ms(30_000), MINUTE), 200);
        assert!(s.keeps_back(ms(70_000), SECOND), "the open reservation stays");
        assert!(!Share::Rest { reserved: vec![(ms(1), 3)] }.keeps_back(ms(1_002), Duration::from_millis(1)));
    }

    #[test]
    fn each_replica_is_kept_back_by_its_own_part() {
        // One cut off when it knew 2 replicas took half; one that knew 3, a third.
        let s = Share::Rest { reserved: vec![(Time::MAX, 2), (Time::MAX, 3)] };
        assert_eq!(s.apply(12, ms(0), SECOND), 12 - 6 - 4);
        assert_eq!(Share::Rest { reserved: vec![(Time::MAX, 1), (Time::MAX, 2)] }.apply(10, ms(0), SECOND), 0);
    }
}
