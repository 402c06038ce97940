//! Time for the rate engine: nanoseconds on a monotonic line anchored at the Unix
//! epoch, so that values from different processes on synchronised hosts compare
//! (replicas hand buckets over to each other), while within a process time never
//! goes backwards.

use std::fmt;
use std::ops::{Add, Sub};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// A point in time, in nanoseconds since the Unix epoch.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Time(u64);

impl Time {
    pub const ZERO: Time = Time(0);
    /// Used for "not known yet": an entry still in flight is held until `MAX`.
    pub const MAX: Time = Time(u64::MAX);

    pub const fn from_nanos(n: u64) -> Time {
        Time(n)
    }

    pub const fn from_millis(ms: u64) -> Time {
        Time(ms.saturating_mul(1_000_000))
    }

    pub const fn as_nanos(self) -> u64 {
        self.0
    }

    pub const fn as_millis(self) -> u64 {
        self.0 / 1_000_000
    }

    /// `self - earlier`, or zero when `earlier` is later.
    pub fn saturating_since(self, earlier: Time) -> Duration {
        Duration::from_nanos(self.0.saturating_sub(earlier.0))
    }

    /// The next representable instant (used for "strictly after").
    pub const fn next(self) -> Time {
        Time(self.0.saturating_add(1))
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

impl Add<Duration> for Time {
    type Output = Time;
    fn add(self, d: Duration) -> Time {
        Time(self.0.saturating_add(nanos(d)))
    }
}

impl Sub<Duration> for Time {
    type Output = Time;
    fn sub(self, d: Duration) -> Time {
        Time(self.0.saturating_sub(nanos(d)))
    }
}

impl fmt::Debug for Time {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if *self == Time::MAX {
            f.write_str("Time(MAX)")
        } else {
            write!(f, "Time({}.{:09})", self.0 / 1_000_000_000, self.0 % 1_000_000_000)
        }
    }
}

/// A source of [`Time`].
pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> Time;
}

/// The real clock: wall time read once at start, then advanced by the monotonic clock,
/// so it never jumps backwards when NTP steps the wall clock.
#[derive(Debug, Clone)]
pub struct MonotonicClock {
    origin: Instant,
    origin_unix_nanos: u64,
}

impl MonotonicClock {
    pub fn new() -> Self {
        let unix = SystemTime::now().duration_since(UNIX_EPOCH).unwrap_or_default();
        MonotonicClock { origin: Instant::now(), origin_unix_nanos: nanos(unix) }
    }

    /// The [`Instant`] at which this clock will read `t` (for timers).
    pub fn instant_at(&self, t: Time) -> Instant {
        let offset = t.0.saturating_sub(self.origin_unix_nanos);
        self.origin + Duration::from_nanos(offset)
    }
}

impl Default for MonotonicClock {
    fn default() -> Self {
        Self::new()
    }
}

impl Clock for MonotonicClock {
    fn now(&self) -> Time {
        Time(self.origin_unix_nanos.saturating_add(nanos(self.origin.elapsed())))
    }
}

/// A clock that only moves when told to; clones share the same time.
#[derive(Debug, Clone, Default)]
pub struct FakeClock(Arc<AtomicU64>);

impl FakeClock {
    pub fn new(start: Time) -> Self {
        FakeClock(Arc::new(AtomicU64::new(start.0)))
    }

    pub fn advance(&self, d: Duration) {
        self.0.fetch_add(nanos(d), Ordering::SeqCst);
    }

    pub fn set(&self, t: Time) {
        self.0.store(t.0, Ordering::SeqCst);
    }
}

impl Clock for FakeClock {
    fn now(&self) -> Time {
        Time(self.0.load(Ordering::SeqCst))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arithmetic_saturates() {
        assert_eq!(Time::MAX + Duration::from_secs(1), Time::MAX);
        assert_eq!(Time::ZERO - Duration::from_secs(1), Time::ZERO);
        assert_eq!(Time::from_millis(1500).saturating_since(Time::from_millis(500)), Duration::from_secs(1));
        assert_eq!(Time::from_millis(1).saturating_since(Time::from_millis(5)), Duration::ZERO);
    }

    #[test]
    fn fake_clock_clones_share_time() {
        let c = FakeClock::new(Time::from_millis(10));
        let d = c.clone();
        c.advance(Duration::from_millis(5));
        assert_eq!(d.now(), Time::from_millis(15));
    }

    #[test]
    fn monotonic_clock_is_near_wall_time_and_maps_back_to_instants() {
        let c = MonotonicClock::new();
        let t = c.now();
        let wall = SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64;
        assert!(t.as_millis().abs_diff(wall) < 1000);
        let i = c.instant_at(t + Duration::from_millis(20));
        assert!(i > Instant::now());
    }
}
