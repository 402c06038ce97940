//! Runs the levels of a sweep. At each level, `concurrency` clients each open
//! their own connection and warm it up; then, all at once, they either
//!
//! * closed loop: send requests one after another, each as soon as the
//!   previous one is answered, drawing from the level's pool until it is empty
//!   (what most tools do; a stalled server slows the senders, so the stall
//!   shows in few samples), or
//! * open loop: take requests from one schedule at a fixed arrival rate; each
//!   latency runs from the request's intended start, not its actual one, so time
//!   spent waiting for a free connection during a stall is counted (coordinated
//!   omission corrected), and a request taken later than its intended time is
//!   counted as a late start.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use tokio::sync::{Barrier, watch};

use crate::stats::{Latencies, LevelKind, LevelReport, Tally};
use crate::target::Target;

/// How a sweep runs.
#[derive(Debug, Clone)]
pub struct Plan {
    /// Concurrency levels: clients, each with its own connection.
    pub levels: Vec<usize>,
    /// Requests per client at each level, on average: the level sends
    /// `requests x concurrency` from one pool that every client draws from.
    /// WebSocket clients make one session each.
    pub requests: u64,
    pub timeout: Duration,
    /// Requests per client before the level's clock starts (not counted); they
    /// also open the connections, so connecting is not in the latencies.
    pub warmup: u64,
    /// A level ends after this long even if requests remain.
    pub level_time: Option<Duration>,
    /// Open loop at this many requests/s over all clients; closed loop when `None`.
    pub rate: Option<f64>,
    /// Draw a progress bar per level (on a terminal only).
    pub progress: bool,
}

/// A start later than its intended time by more than this counts as late; below
/// it is the scheduler's noise, not a busy connection.
const LATE_AFTER: Duration = Duration::from_millis(1);

/// What every client of a level shares.
struct Level {
    target: Arc<Target>,
    lat: Latencies,
    /// Requests finished, for the progress bar.
    done: AtomicU64,
    /// The next request of the level's pool (open loop: of the schedule).
    next: AtomicU64,
    websocket: bool,
    total: u64,
    warmup: u64,
    timeout: Duration,
    rate: Option<f64>,
    level_time: Option<Duration>,
}

/// Runs every level of `plan` in turn.
pub async fn sweep(target: Arc<Target>, plan: &Plan) -> Vec<LevelReport> {
    let bars =
        MultiProgress::with_draw_target(if plan.progress { ProgressDrawTarget::stderr_with_hz(10) } else { ProgressDrawTarget::hidden() });
    let mut reports = Vec::with_capacity(plan.levels.len());
    for &c in &plan.levels {
        reports.push(level(target.clone(), plan, c, &bars).await);
    }
    reports
}

/// Runs one level of `concurrency` clients.
pub async fn level(target: Arc<Target>, plan: &Plan, concurrency: usize, bars: &MultiProgress) -> LevelReport {
    let websocket = target.is_websocket();
    let per_client = if websocket { 1 } else { plan.requests };
    let shards = std::thread::available_parallelism().map_or(4, |n| n.get() * 2).min(16).min(concurrency.max(1));
    let shared = Arc::new(Level {
        target,
        lat: Latencies::new(shards),
        done: AtomicU64::new(0),
        next: AtomicU64::new(0),
        websocket,
        total: per_client * concurrency as u64,
        warmup: if websocket { 0 } else { plan.warmup },
        timeout: plan.timeout,
        rate: plan.rate,
        level_time: plan.level_time,
    });
    let bar = bars.add(ProgressBar::new(shared.total));
    bar.set_style(
        ProgressStyle::with_template("{prefix:>6} [{bar:30}] {pos}/{len} {elapsed:>4} {msg}")
            .expect("a valid template")
            .progress_chars("=> "),
    );
    bar.set_prefix(format!("c={concurrency}"));
    bar.set_message(if shared.warmup > 0 { "warming up" } else { "connecting" });

    // Every client arrives here after warming up; the clock starts when all have.
    let ready = Arc::new(Barrier::new(concurrency + 1));
    let (start_tx, start_rx) = watch::channel(None::<Instant>);
    let mut clients = tokio::task::JoinSet::new();
    for id in 0..concurrency {
        let (shared, ready, start_rx) = (shared.clone(), ready.clone(), start_rx.clone());
        clients.spawn(client(id, shared, ready, start_rx));
    }
    ready.wait().await;
    let start = Instant::now();
    let _ = start_tx.send(Some(start));
    bar.set_message("");

    let mut tally = Tally::default();
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    loop {
        tokio::select! {
            joined = clients.join_next() => match joined {
                Some(Ok(t)) => tally.merge(&t),
                // A client that panicked lost its counts; the rest still report.
                Some(Err(_)) => {}
                None => break,
            },
            _ = tick.tick() => bar.set_position(shared.done.load(Ordering::Relaxed)),
        }
    }
    let duration = start.elapsed();
    let kind = LevelKind { rate: shared.rate, websocket };
    let report = LevelReport::new(concurrency, kind, &tally, &shared.lat.merged(), duration);
    bar.set_position(shared.done.load(Ordering::Relaxed));
    bar.finish_with_message(match &report.latency_ms {
        Some(l) => format!("p50 {:.3} ms  p99 {:.3} ms  {:.0} req/s  {} failed", l.p50, l.p99, report.rps, report.failed),
        None => format!("nothing answered, {} failed", report.failed),
    });
    report
}

async fn client(id: usize, lv: Arc<Level>, ready: Arc<Barrier>, mut start_rx: watch::Receiver<Option<Instant>>) -> Tally {
    let mut conn = None;
    let mut scratch = Tally::default();
    for _ in 0..lv.warmup {
        lv.target.request(&mut conn, lv.timeout, &mut scratch).await;
    }
    ready.wait().await;
    let start = match start_rx.wait_for(Option::is_some).await.map(|s| *s) {
        Ok(Some(s)) => s,
        // The level was abandoned: nothing to measure.
        _ => return Tally::default(),
    };
    let deadline = lv.level_time.map(|t| start + t);
    let mut tally = Tally::default();
    match lv.rate {
        None => {
            // The level's requests are one pool: a client that drew fast answers
            // takes more, so all stay busy to the end (a fixed share each would
            // leave fewer and fewer clients working while the last finish).
            // A WebSocket client makes its one session.
            let mut mine = 0;
            while if lv.websocket { mine < 1 } else { lv.next.fetch_add(1, Ordering::Relaxed) < lv.total } {
                mine += 1;
                if deadline.is_some_and(|d| Instant::now() >= d) {
                    break;
                }
                let sent = Instant::now();
                let done = lv.target.request(&mut conn, lv.timeout, &mut tally).await;
                tally.add(done.outcome, done.end.saturating_duration_since(sent), &lv.lat, id);
                lv.done.fetch_add(1, Ordering::Relaxed);
            }
        }
        Some(rate) => loop {
            let i = lv.next.fetch_add(1, Ordering::Relaxed);
            if i >= lv.total {
                break;
            }
            let intended = start + Duration::from_secs_f64(i as f64 / rate);
            if deadline.is_some_and(|d| intended >= d) {
                break;
            }
            // An idle client always holds the next request of the schedule and
            // sleeps until its time; taking one already overdue means every
            // client was busy when it was due.
            if Instant::now() > intended + LATE_AFTER {
                tally.late += 1;
            } else {
                tokio::time::sleep_until(intended.into()).await;
            }
            let done = lv.target.request(&mut conn, lv.timeout, &mut tally).await;
            tally.add(done.outcome, done.end.saturating_duration_since(intended), &lv.lat, id);
            lv.done.fetch_add(1, Ordering::Relaxed);
        },
    }
    tally
}
