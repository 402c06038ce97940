//! The rate engine of sluice, with no I/O and no async runtime: every decision takes
//! the current [`Time`] as an argument, so tests drive it with a [`FakeClock`].
//!
//! * [`bucket`]: one rate-limit budget (all the windows an exchange publishes for one
//!   scope and group), kept as a weighted sliding log whose entries are held until the
//!   latest moment the exchange could have counted them.
//! * [`adaptive`]: the slow-down after a 429 and the slow recovery afterwards.
//! * [`scheduler`]: the queue in front of the buckets: priority classes that cannot
//!   starve each other, deadlines, bounded capacity, requests that charge several
//!   buckets at once.
//! * [`share`]: the part of each limit a dispatcher replica may use when replicas
//!   cannot coordinate, and what an owner keeps back for them, window by window.
//! * [`server`]: how exchanges count (sliding window, fixed window, token bucket), used
//!   by the simulator to enforce limits and by tests as the judge.

pub mod adaptive;
pub mod bucket;
pub mod scheduler;
pub mod server;
pub mod share;
mod time;

pub use time::{Clock, FakeClock, MonotonicClock, Time};
