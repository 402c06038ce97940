//! How exchanges count requests, as strict servers: the simulator enforces limits
//! with these, and tests use them as the judge of the [`crate::bucket`] rule.
//!
//! * [`Counting::Sliding`]: at most `limit` cost with arrival in `[t - W, t]`, both
//!   ends included (the strictest reading of "per second").
//! * [`Counting::Fixed`]: calendar windows `[kW, (k+1)W)` on the Unix clock (Binance:
//!   a request at 00:01:23 counts toward the 00:01 minute).
//! * [`Counting::TokenBucket`]: capacity `limit`, refilled at `limit / W`.
//!
//! [`WindowMax`] watches every arrival, accepted or not, and remembers the highest
//! cost seen in any sliding window: the number tests and benchmarks report.

use std::collections::VecDeque;
use std::time::Duration;

use crate::Time;

/// A counting discipline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Counting {
    Sliding,
    Fixed,
    TokenBucket,
}

impl Counting {
    pub const ALL: [Counting; 3] = [Counting::Sliding, Counting::Fixed, Counting::TokenBucket];

    pub fn as_str(self) -> &'static str {
        match self {
            Counting::Sliding => "sliding",
            Counting::Fixed => "fixed",
            Counting::TokenBucket => "token_bucket",
        }
    }
}

impl std::str::FromStr for Counting {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Counting::ALL
            .into_iter()
            .find(|c| c.as_str() == s)
            .ok_or_else(|| format!("unknown counting '{s}' (known: sliding, fixed, token_bucket)"))
    }
}

/// One server-side limit.
#[derive(Debug, Clone)]
pub struct ServerWindow {
    limit: u64,
    period: Duration,
    counting: Counting,
    /// Sliding: accepted arrivals still inside the window.
    log: VecDeque<(Time, u64)>,
    log_sum: u64,
    /// Fixed: the current calendar window and its count.
    fixed_index: u64,
    fixed_used: u64,
    /// Token bucket: tokens scaled by the period in nanoseconds (exact integers),
    /// as of `bucket_at`.
    scaled_tokens: u128,
    bucket_at: Time,
}

impl ServerWindow {
    pub fn new(limit: u64, period: Duration, counting: Counting) -> Self {
        let period = period.max(Duration::from_nanos(1));
        ServerWindow {
            limit,
            period,
            counting,
            log: VecDeque::new(),
            log_sum: 0,
            fixed_index: 0,
            fixed_used: 0,
            scaled_tokens: u128::from(limit) * period.as_nanos(),
            bucket_at: Time::ZERO,
        }
    }

    pub fn limit(&self) -> u64 {
        self.limit
    }

    pub fn period(&self) -> Duration {
        self.period
    }

    pub fn counting(&self) -> Counting {
        self.counting
    }

    fn catch_up(&mut self, at: Time) {
        match self.counting {
            Counting::Sliding => {
                let threshold = at - self.period;
                while let Some(&(t, c)) = self.log.front() {
                    if t >= threshold {
                        break;
                    }
                    self.log.pop_front();
                    self.log_sum -= c;
                }
            }
            Counting::Fixed => {
                let index = at.as_nanos() / (self.period.as_nanos() as u64).max(1);
                if index != self.fixed_index {
                    self.fixed_index = index;
                    self.fixed_used = 0;
                }
            }
            Counting::TokenBucket => {
                if at > self.bucket_at {
                    let elapsed = u128::from(at.as_nanos() - self.bucket_at.as_nanos());
                    let cap = u128::from(self.limit) * self.period.as_nanos();
                    self.scaled_tokens = (self.scaled_tokens + elapsed * u128::from(self.limit)).min(cap);
                    self.bucket_at = at;
                }
            }
        }
    }

    /// Cost counted in the window that `at` falls in.
    pub fn used(&mut self, at: Time) -> u64 {
        self.catch_up(at);
        match self.counting {
            Counting::Sliding => self.log_sum,
            Counting::Fixed => self.fixed_used,
            Counting::TokenBucket => {
                let whole = self.scaled_tokens / self.period.as_nanos();
                self.limit - u64::try_from(whole).unwrap_or(self.limit).min(self.limit)
            }
        }
    }

    /// What is left for an arrival at `at`.
    pub fn remaining(&mut self, at: Time) -> u64 {
        self.limit.saturating_sub(self.used(at))
    }

    /// Whether an arrival of `cost` at `at` fits (without counting it).
    pub fn fits(&mut self, at: Time, cost: u64) -> bool {
        self.catch_up(at);
        match self.counting {
            Counting::Sliding => self.log_sum + cost <= self.limit,
            Counting::Fixed => self.fixed_used + cost <= self.limit,
            Counting::TokenBucket => self.scaled_tokens >= u128::from(cost) * self.period.as_nanos(),
        }
    }

    /// Counts an arrival (call after [`ServerWindow::fits`] for all windows).
    pub fn take(&mut self, at: Time, cost: u64) {
        self.catch_up(at);
        match self.counting {
            Counting::Sliding => {
                self.log.push_back((at, cost));
                self.log_sum += cost;
            }
            Counting::Fixed => self.fixed_used += cost,
            Counting::TokenBucket => {
                self.scaled_tokens = self.scaled_tokens.saturating_sub(u128::from(cost) * self.period.as_nanos());
            }
        }
    }

    /// When the current window ends (for reset headers).
    pub fn resets_at(&mut self, at: Time) -> Time {
        self.catch_up(at);
        match self.counting {
            Counting::Sliding => self.log.front().map_or(at, |&(t, _)| (t + self.period).next()),
            Counting::Fixed => {
                let p = self.period.as_nanos() as u64;
                Time::from_nanos((self.fixed_index + 1).saturating_mul(p))
            }
            Counting::TokenBucket => at + self.period,
        }
    }
}

/// The highest cost seen in any window `[t - W, t]` over all arrivals.
#[derive(Debug, Clone)]
pub struct WindowMax {
    period: Duration,
    log: VecDeque<(Time, u64)>,
    sum: u64,
    max: u64,
}

impl WindowMax {
    pub fn new(period: Duration) -> Self {
        WindowMax { period, log: VecDeque::new(), sum: 0, max: 0 }
    }

    /// Records an arrival; arrivals must come in time order.
    pub fn record(&mut self, at: Time, cost: u64) {
        let threshold = at - self.period;
        while let Some(&(t, c)) = self.log.front() {
            if t >= threshold {
                break;
            }
            self.log.pop_front();
            self.sum -= c;
        }
        self.log.push_back((at, cost));
        self.sum += cost;
        self.max = self.max.max(self.sum);
    }

    pub fn max(&self) -> u64 {
        self.max
    }

    pub fn period(&self) -> Duration {
        self.period
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Time {
        Time::from_millis(n)
    }

    /// Seed 004's GCRA at 10/s with burst 10: ten at once, then one every 100 ms.
    fn gcra_arrivals() -> Vec<Time> {
        let mut v: Vec<Time> = (0..10).map(|_| ms(10_000)).collect();
        v.extend((1..=9).map(|k| ms(10_000 + 100 * k)));
        v
    }

    #[test]
    fn a_gcra_with_burst_n_breaks_a_strict_sliding_server() {
        let mut w = WindowMax::new(Duration::from_secs(1));
        for t in gcra_arrivals() {
            w.record(t, 1);
        }
        assert_eq!(w.max(), 19, "the algorithm question in EXCHANGES.md");
        let mut s = ServerWindow::new(10, Duration::from_secs(1), Counting::Sliding);
        let accepted = gcra_arrivals()
            .into_iter()
            .filter(|&t| {
                let ok = s.fits(t, 1);
                if ok {
                    s.take(t, 1);
                }
                ok
            })
            .count();
        assert_eq!(accepted, 10);
    }

    #[test]
    fn a_token_bucket_server_accepts_that_gcra() {
        let mut s = ServerWindow::new(10, Duration::from_secs(1), Counting::TokenBucket);
        for t in gcra_arrivals() {
            assert!(s.fits(t, 1), "at {t:?}");
            s.take(t, 1);
        }
    }

    #[test]
    fn fixed_windows_reset_on_the_calendar() {
        let mut s = ServerWindow::new(2, Duration::from_secs(1), Counting::Fixed);
        s.take(ms(5_900), 2);
        assert!(!s.fits(ms(5_999), 1));
        assert!(s.fits(ms(6_000), 1), "a new second");
        assert_eq!(s.resets_at(ms(6_000)), ms(7_000));
    }

    #[test]
    fn sliding_boundaries_are_inclusive() {
        let mut s = ServerWindow::new(1, Duration::from_secs(1), Counting::Sliding);
        s.take(ms(1_000), 1);
        assert_eq!(s.remaining(ms(1_500)), 0);
        assert!(!s.fits(ms(2_000), 1), "exactly one period later still counts");
        assert!(s.fits(ms(2_000).next(), 1));
    }

    #[test]
    fn token_bucket_refills_exactly() {
        let mut s = ServerWindow::new(10, Duration::from_secs(1), Counting::TokenBucket);
        s.take(ms(0), 10);
        assert!(!s.fits(ms(99), 1));
        assert!(s.fits(ms(100), 1));
        assert_eq!(s.used(ms(100)), 9);
    }

    #[test]
    fn parses_counting_names() {
        assert_eq!("fixed".parse::<Counting>(), Ok(Counting::Fixed));
        assert!("leaky".parse::<Counting>().unwrap_err().contains("leaky"));
    }
}
