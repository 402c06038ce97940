//! What a level measured: every request's outcome counted by answer and by error
//! kind, and the latency of every answered request in an HDR histogram (three
//! significant digits, so any percentile is within 0.1 % of the true value),
//! never a list of samples: a million requests cost the same memory as ten.
//!
//! Workers keep their own [`Tally`] (no sharing per request) and record latencies
//! into one of a few mutex-guarded histogram shards, so 1,000 connections do not
//! need 1,000 histograms (each is about 270 KB at this range and precision).

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

/// An answer from the target: success or failure is the answer's, not ours.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Answer {
    /// An HTTP status: the response's, the exchange's through the dispatcher, or a
    /// WebSocket upgrade's (101 once the first message arrived).
    Http(u16),
    /// A gRPC status the server sent (the code as a number).
    Grpc(i32),
    /// An order the execution service took and the venue refused.
    Rejected,
}

impl Answer {
    /// 1xx to 3xx and gRPC OK succeed; everything else is a failure.
    pub fn ok(self) -> bool {
        match self {
            Answer::Http(s) => s < 400,
            Answer::Grpc(c) => c == 0,
            Answer::Rejected => false,
        }
    }

    /// `"200"`, `"429"`, `"grpc ResourceExhausted"`.
    pub fn label(self) -> String {
        match self {
            Answer::Http(s) => s.to_string(),
            Answer::Grpc(c) => format!("grpc {:?}", tonic::Code::from(c)),
            Answer::Rejected => "order rejected".to_owned(),
        }
    }
}

/// Why a request got no answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorKind {
    /// No answer within the timeout.
    Timeout,
    /// Nothing listens there (the connection was refused).
    Refused,
    /// The peer reset the connection.
    Reset,
    /// The peer closed the connection before answering.
    Closed,
    /// The connection could not be made for another reason (unreachable, no route,
    /// the name did not resolve).
    Connect,
    /// The TLS handshake failed.
    Tls,
    /// The answer was not the protocol we spoke (bad HTTP, a WebSocket upgrade
    /// refused without a status, a frame that broke the protocol).
    Protocol,
    /// Anything else.
    Other,
}

impl ErrorKind {
    /// The name shown in reports.
    pub fn name(self) -> &'static str {
        match self {
            ErrorKind::Timeout => "timeout",
            ErrorKind::Refused => "refused",
            ErrorKind::Reset => "reset",
            ErrorKind::Closed => "closed",
            ErrorKind::Connect => "connect",
            ErrorKind::Tls => "tls",
            ErrorKind::Protocol => "protocol",
            ErrorKind::Other => "other",
        }
    }

    /// The kind an I/O error stands for.
    pub fn of_io(e: &std::io::Error) -> ErrorKind {
        use std::io::ErrorKind as K;
        match e.kind() {
            K::ConnectionRefused => ErrorKind::Refused,
            K::ConnectionReset | K::BrokenPipe | K::ConnectionAborted => ErrorKind::Reset,
            K::UnexpectedEof => ErrorKind::Closed,
            K::TimedOut => ErrorKind::Timeout,
            K::AddrNotAvailable | K::HostUnreachable | K::NetworkUnreachable | K::NotFound => ErrorKind::Connect,
            K::InvalidData => ErrorKind::Protocol,
            _ => ErrorKind::Other,
        }
    }

    /// The kind of the first I/O error in `e`'s chain of sources, if any.
    pub fn find_io(e: &(dyn std::error::Error + 'static)) -> Option<ErrorKind> {
        let mut cur = Some(e);
        while let Some(err) = cur {
            if let Some(io) = err.downcast_ref::<std::io::Error>() {
                return Some(ErrorKind::of_io(io));
            }
            cur = err.source();
        }
        None
    }
}

/// One request's outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Answer(Answer),
    Error(ErrorKind),
}

impl Outcome {
    /// Whether the request succeeded.
    pub fn ok(self) -> bool {
        matches!(self, Outcome::Answer(a) if a.ok())
    }
}

/// One worker's counts; merged at the end of a level.
#[derive(Debug, Clone, Default)]
pub struct Tally {
    pub answers: BTreeMap<Answer, u64>,
    pub errors: BTreeMap<ErrorKind, u64>,
    /// Open loop: requests started after their intended time because every
    /// connection was busy then.
    pub late: u64,
    /// WebSocket: messages and bytes received after the first.
    pub messages: u64,
    pub bytes: u64,
    /// Exact count, sum, min and max of the recorded latencies (the histogram
    /// rounds; these do not).
    pub samples: u64,
    pub sum_ns: u128,
    pub min_ns: u64,
    pub max_ns: u64,
}

impl Tally {
    /// Counts an outcome; `latency` is recorded for answers only (a timeout's
    /// latency is the timeout, a refusal's says nothing about the server).
    pub fn add(&mut self, outcome: Outcome, latency: Duration, shard: &Latencies, worker: usize) {
        match outcome {
            Outcome::Answer(a) => {
                *self.answers.entry(a).or_default() += 1;
                let ns = u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX);
                self.min_ns = if self.samples == 0 { ns } else { self.min_ns.min(ns) };
                self.max_ns = self.max_ns.max(ns);
                self.sum_ns += u128::from(ns);
                self.samples += 1;
                shard.record(worker, ns);
            }
            Outcome::Error(k) => *self.errors.entry(k).or_default() += 1,
        }
    }

    /// Adds another worker's counts.
    pub fn merge(&mut self, o: &Tally) {
        for (k, v) in &o.answers {
            *self.answers.entry(*k).or_default() += v;
        }
        for (k, v) in &o.errors {
            *self.errors.entry(*k).or_default() += v;
        }
        self.late += o.late;
        self.messages += o.messages;
        self.bytes += o.bytes;
        if o.samples > 0 {
            self.min_ns = if self.samples == 0 { o.min_ns } else { self.min_ns.min(o.min_ns) };
            self.max_ns = self.max_ns.max(o.max_ns);
        }
        self.samples += o.samples;
        self.sum_ns += o.sum_ns;
    }

    pub fn succeeded(&self) -> u64 {
        self.answers.iter().filter(|(a, _)| a.ok()).map(|(_, n)| n).sum()
    }

    pub fn total(&self) -> u64 {
        self.answers.values().sum::<u64>() + self.errors.values().sum::<u64>()
    }
}

/// The highest latency the histograms hold (an hour); longer ones count as an hour.
const HIGHEST_NS: u64 = 3_600_000_000_000;

/// A few histogram shards that workers record into.
pub struct Latencies {
    shards: Vec<Mutex<Histogram<u64>>>,
}

impl Latencies {
    /// `shards` histograms (at least one).
    pub fn new(shards: usize) -> Latencies {
        let make = || Mutex::new(Histogram::new_with_bounds(1, HIGHEST_NS, 3).expect("1 ns to 1 h at 3 digits is a valid range"));
        Latencies { shards: (0..shards.max(1)).map(|_| make()).collect() }
    }

    fn record(&self, worker: usize, ns: u64) {
        let mut h = self.shards[worker % self.shards.len()].lock().unwrap_or_else(|p| p.into_inner());
        h.saturating_record(ns.max(1));
    }

    /// All shards in one histogram.
    pub fn merged(&self) -> Histogram<u64> {
        let mut all = Histogram::new_with_bounds(1, HIGHEST_NS, 3).expect("valid range");
        for s in &self.shards {
            let h = s.lock().unwrap_or_else(|p| p.into_inner());
            // Same bounds and precision: adding cannot fail.
            let _ = all.add(&*h);
        }
        all
    }
}

/// Latency summary in milliseconds.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Latency {
    pub avg: f64,
    pub p50: f64,
    pub p95: f64,
    pub p99: f64,
    pub min: f64,
    pub max: f64,
}

impl Latency {
    /// From the merged histogram (percentiles) and the exact tally (avg, min, max);
    /// `None` when nothing was answered.
    pub fn of(h: &Histogram<u64>, t: &Tally) -> Option<Latency> {
        if t.samples == 0 {
            return None;
        }
        let ms = |ns: u64| ns as f64 / 1e6;
        // The histogram's value at a quantile is its bucket's highest equivalent
        // value: never below the true one, and above it by at most 0.1 %. Clamped
        // into [min, max], which are exact.
        let q = |p: f64| ms(h.value_at_quantile(p).clamp(t.min_ns, t.max_ns));
        Some(Latency {
            avg: t.sum_ns as f64 / t.samples as f64 / 1e6,
            p50: q(0.50),
            p95: q(0.95),
            p99: q(0.99),
            min: ms(t.min_ns),
            max: ms(t.max_ns),
        })
    }
}

/// Everything one level measured.
#[derive(Debug, Clone, Serialize)]
pub struct LevelReport {
    /// Connections (clients) at this level.
    pub concurrency: usize,
    /// Open loop: the intended arrival rate, requests/s.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rate: Option<f64>,
    pub total: u64,
    pub succeeded: u64,
    pub failed: u64,
    /// Every answer by status, successes included (`"200"`, `"429"`, `"grpc Unavailable"`).
    pub statuses: BTreeMap<String, u64>,
    /// The answers among `statuses` that count as failures.
    #[serde(skip)]
    pub failed_statuses: BTreeMap<String, u64>,
    /// Requests that got no answer, by kind.
    pub errors: BTreeMap<String, u64>,
    /// Latency of the answered requests (open loop: from each one's intended start).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub latency_ms: Option<Latency>,
    /// Finished requests (any outcome) per second of the level.
    pub rps: f64,
    /// Failed / total.
    pub error_rate: f64,
    pub duration_s: f64,
    /// Open loop: requests that could not start at their intended time.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub late_starts: Option<u64>,
    /// WebSocket: messages received after the first, and their rate.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub messages: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub messages_per_s: Option<f64>,
}

/// What kind of level it was, for the parts of the report that depend on it.
#[derive(Debug, Clone, Copy, Default)]
pub struct LevelKind {
    pub rate: Option<f64>,
    pub websocket: bool,
}

impl LevelReport {
    /// The report of a level that ran `concurrency` connections for `duration`.
    pub fn new(concurrency: usize, kind: LevelKind, t: &Tally, h: &Histogram<u64>, duration: Duration) -> LevelReport {
        let total = t.total();
        let succeeded = t.succeeded();
        let secs = duration.as_secs_f64();
        let per_s = |n: u64| if secs > 0.0 { n as f64 / secs } else { 0.0 };
        LevelReport {
            concurrency,
            rate: kind.rate,
            total,
            succeeded,
            failed: total - succeeded,
            statuses: t.answers.iter().map(|(a, n)| (a.label(), *n)).collect(),
            failed_statuses: t.answers.iter().filter(|(a, _)| !a.ok()).map(|(a, n)| (a.label(), *n)).collect(),
            errors: t.errors.iter().map(|(k, n)| (k.name().to_owned(), *n)).collect(),
            latency_ms: Latency::of(h, t),
            rps: per_s(total),
            error_rate: if total == 0 { 0.0 } else { (total - succeeded) as f64 / total as f64 },
            duration_s: secs,
            late_starts: kind.rate.map(|_| t.late),
            messages: kind.websocket.then_some(t.messages),
            messages_per_s: kind.websocket.then(|| per_s(t.messages)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answered(samples: impl IntoIterator<Item = Duration>) -> (Tally, Histogram<u64>) {
        let lat = Latencies::new(4);
        let mut t = Tally::default();
        for (i, d) in samples.into_iter().enumerate() {
            t.add(Outcome::Answer(Answer::Http(200)), d, &lat, i);
        }
        (t, lat.merged())
    }

    /// 1 µs .. 10 ms in 1 µs steps: the true p50 is 5 ms, p95 9.5 ms, p99 9.9 ms.
    #[test]
    fn percentiles_are_within_the_histograms_precision() {
        let (t, h) = answered((1..=10_000).map(Duration::from_micros));
        let l = Latency::of(&h, &t).unwrap();
        for (got, want) in [(l.p50, 5.0), (l.p95, 9.5), (l.p99, 9.9)] {
            assert!(got >= want && got <= want * 1.001, "{got} vs {want}");
        }
        assert!((l.min - 0.001).abs() < 1e-12 && (l.max - 10.0).abs() < 1e-12, "{l:?}");
        assert!((l.avg - 5.0005).abs() < 1e-9, "{l:?}");
    }

    #[test]
    fn a_skewed_distribution_keeps_its_tail() {
        // 980 at 2 ms, 15 at 40 ms, 5 at 300 ms.
        let samples = std::iter::repeat_n(2, 980).chain(std::iter::repeat_n(40, 15)).chain(std::iter::repeat_n(300, 5));
        let (t, h) = answered(samples.map(Duration::from_millis));
        let l = Latency::of(&h, &t).unwrap();
        assert!((2.0..=2.002).contains(&l.p50), "{l:?}");
        assert!((2.0..=2.002).contains(&l.p95), "{l:?}");
        assert!((40.0..=40.04).contains(&l.p99), "{l:?}");
        assert!((l.max - 300.0).abs() < 1e-12, "{l:?}");
    }

    #[test]
    fn outcomes_are_counted_by_status_and_kind() {
        let lat = Latencies::new(1);
        let mut a = Tally::default();
        let mut b = Tally::default();
        let ms = Duration::from_millis(1);
        a.add(Outcome::Answer(Answer::Http(200)), ms, &lat, 0);
        a.add(Outcome::Answer(Answer::Http(429)), ms, &lat, 0);
        b.add(Outcome::Error(ErrorKind::Timeout), Duration::from_secs(30), &lat, 0);
        b.add(Outcome::Error(ErrorKind::Refused), Duration::ZERO, &lat, 0);
        b.add(Outcome::Answer(Answer::Grpc(8)), ms, &lat, 0);
        a.merge(&b);
        let r = LevelReport::new(10, LevelKind::default(), &a, &lat.merged(), Duration::from_secs(2));
        assert_eq!((r.total, r.succeeded, r.failed), (5, 1, 4));
        assert_eq!(r.statuses.get("429"), Some(&1));
        assert_eq!(r.statuses.get("grpc ResourceExhausted"), Some(&1));
        assert_eq!(r.errors.get("timeout"), Some(&1));
        assert_eq!(r.errors.get("refused"), Some(&1));
        assert!((r.error_rate - 0.8).abs() < 1e-12);
        assert!((r.rps - 2.5).abs() < 1e-12);
        // Three answers timed; the timeout and the refusal are not latencies.
        assert_eq!(a.samples, 3);
    }

    #[test]
    fn io_errors_name_their_kind() {
        use std::io::{Error, ErrorKind as K};
        assert_eq!(ErrorKind::of_io(&Error::from(K::ConnectionRefused)), ErrorKind::Refused);
        assert_eq!(ErrorKind::of_io(&Error::from(K::ConnectionReset)), ErrorKind::Reset);
        let wrapped: Box<dyn std::error::Error> = Box::new(Error::other(Error::from(K::BrokenPipe)));
        // The outer error is itself an io::Error of kind Other.
        assert_eq!(ErrorKind::find_io(wrapped.as_ref()), Some(ErrorKind::Other));
    }
}
