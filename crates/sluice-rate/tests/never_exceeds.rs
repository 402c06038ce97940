//! Property: whatever the arrival pattern, weights, classes, network jitter and timer
//! lateness, what the scheduler admits never puts more than a limit into any window
//! as the exchange receives it, judged by a sliding-window, a fixed-window and a
//! token-bucket server alike; and everything is eventually admitted.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::time::Duration;

use proptest::prelude::*;
use sluice_rate::Time;
use sluice_rate::adaptive::AdaptiveSpec;
use sluice_rate::bucket::{BucketSpec, WindowSpec};
use sluice_rate::scheduler::{BucketId, Class, Hold, Need, Request, Scheduler, SchedulerSpec, Ticket};
use sluice_rate::server::{Counting, ServerWindow, WindowMax};

#[derive(Debug, Clone)]
struct Req {
    at_ms: u64,
    /// 0: first bucket only, 1: second only, 2: both.
    which: u8,
    weight: u64,
    class: usize,
    /// `None` for an HTTP call; `Some(ttl)` for a granted token used within `ttl`.
    grant_ttl_ms: Option<u64>,
    /// Fractions (per mille) drawn for this request's delays.
    jitter_pm: u64,
    proc_pm: u64,
    use_pm: u64,
}

#[derive(Debug, Clone)]
struct Scenario {
    buckets: [Vec<(u64, u64)>; 2],
    jitter_ms: u64,
    proc_ms: u64,
    late_ms: u64,
    reqs: Vec<Req>,
}

fn windows() -> impl Strategy<Value = Vec<(u64, u64)>> {
    (1u64..=12, 50u64..=1500, prop::option::of((1u64..=5, 2u64..=6))).prop_map(|(limit, period, second)| {
        let mut v = vec![(limit, period)];
        if let Some((lm, pm)) = second {
            v.push((limit * lm, period * pm));
        }
        v
    })
}

fn scenario() -> impl Strategy<Value = Scenario> {
    (windows(), windows(), 0u64..=40, 0u64..=20, 0u64..=3).prop_flat_map(|(a, b, jitter_ms, proc_ms, late_ms)| {
        let max_weight = a[0].0.min(b[0].0).min(4);
        let req = (0u64..4000, 0u8..3, 1..=max_weight, 0usize..4, prop::option::of(0u64..200), 0u64..=1000, 0u64..=1000, 0u64..=1000)
            .prop_map(|(at_ms, which, weight, class, grant_ttl_ms, jitter_pm, proc_pm, use_pm)| Req {
                at_ms,
                which,
                weight,
                class,
                grant_ttl_ms,
                jitter_pm,
                proc_pm,
                use_pm,
            });
        prop::collection::vec(req, 1..150).prop_map(move |reqs| Scenario {
            buckets: [a.clone(), b.clone()],
            jitter_ms,
            proc_ms,
            late_ms,
            reqs,
        })
    })
}

#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Event {
    Enqueue(usize),
    Settle(Ticket),
    Poll,
}

fn spec(windows: &[(u64, u64)]) -> BucketSpec {
    BucketSpec {
        windows: windows.iter().map(|&(limit, p)| WindowSpec { limit, period: Duration::from_millis(p) }).collect(),
        adaptive: AdaptiveSpec::default(),
        calendar: false,
    }
}

fn frac(ms: u64, pm: u64) -> Duration {
    Duration::from_micros(ms * pm)
}

/// Runs the scenario; returns each bucket's arrivals (time, cost) and how many requests were admitted.
fn run(sc: &Scenario) -> ([Vec<(Time, u64)>; 2], usize) {
    let t0 = Time::from_millis(1_700_000_000_000);
    let mut sched: Scheduler<usize> = Scheduler::new(SchedulerSpec::default());
    let ids: [BucketId; 2] = [sched.add_bucket(spec(&sc.buckets[0])).unwrap(), sched.add_bucket(spec(&sc.buckets[1])).unwrap()];
    let jitter = Duration::from_millis(sc.jitter_ms);
    let mut events = BinaryHeap::new();
    let mut seq = 0u64;
    let mut push = |events: &mut BinaryHeap<_>, t: Time, e: Event| {
        seq += 1;
        events.push(Reverse((t, seq, e)));
    };
    for (i, r) in sc.reqs.iter().enumerate() {
        push(&mut events, t0 + Duration::from_millis(r.at_ms), Event::Enqueue(i));
    }
    let mut arrivals: [Vec<(Time, u64)>; 2] = [Vec::new(), Vec::new()];
    let mut admitted = 0;
    let mut last_wake = None;
    while let Some(Reverse((now, _, ev))) = events.pop() {
        match ev {
            Event::Enqueue(i) => {
                let r = &sc.reqs[i];
                let needs = match r.which {
                    0 => vec![Need { bucket: ids[0], cost: r.weight }],
                    1 => vec![Need { bucket: ids[1], cost: r.weight }],
                    _ => vec![Need { bucket: ids[0], cost: r.weight }, Need { bucket: ids[1], cost: 1 }],
                };
                let hold = match r.grant_ttl_ms {
                    None => Hold::UntilSettled,
                    Some(ttl) => Hold::For(Duration::from_millis(ttl) + jitter),
                };
                let deadline = now + Duration::from_secs(3600);
                sched
                    .enqueue(now, Request { class: Class::ALL[r.class], deadline, needs, hold, payload: i })
                    .expect("nothing is refused in this scenario");
            }
            Event::Settle(ticket) => sched.settle(now, ticket, now),
            Event::Poll => {}
        }
        let poll = sched.poll(now, |_| true);
        assert!(poll.dropped.is_empty(), "dropped {:?}", poll.dropped);
        for a in poll.admitted {
            admitted += 1;
            let r = &sc.reqs[a.payload];
            let d = frac(sc.jitter_ms, r.jitter_pm);
            let arrival = match r.grant_ttl_ms {
                None => {
                    let response = now + d + frac(sc.proc_ms, r.proc_pm);
                    push(&mut events, response, Event::Settle(a.ticket));
                    now + d
                }
                Some(ttl) => now + frac(ttl, r.use_pm) + d,
            };
            match r.which {
                0 => arrivals[0].push((arrival, r.weight)),
                1 => arrivals[1].push((arrival, r.weight)),
                _ => {
                    arrivals[0].push((arrival, r.weight));
                    arrivals[1].push((arrival, 1));
                }
            }
        }
        if let Some(wake) = poll.next_wake
            && last_wake != Some(wake)
            && wake > now
        {
            last_wake = Some(wake);
            // Real timers fire late, never early.
            let late = Duration::from_micros((wake.as_nanos() / 7919) % (sc.late_ms * 1000 + 1));
            push(&mut events, wake + late, Event::Poll);
        }
    }
    (arrivals, admitted)
}

fn judge(windows: &[(u64, u64)], arrivals: &mut [(Time, u64)]) -> Result<(), String> {
    arrivals.sort();
    for &(limit, period_ms) in windows {
        let period = Duration::from_millis(period_ms);
        let mut max = WindowMax::new(period);
        let mut servers: Vec<ServerWindow> = Counting::ALL.iter().map(|&c| ServerWindow::new(limit, period, c)).collect();
        for &(t, cost) in arrivals.iter() {
            max.record(t, cost);
            for s in &mut servers {
                if !s.fits(t, cost) {
                    return Err(format!("{:?} server ({limit} per {period_ms} ms) refuses cost {cost} at {t:?}", s.counting()));
                }
                s.take(t, cost);
            }
        }
        if max.max() > limit {
            return Err(format!("{} in one {period_ms} ms window, limit {limit}", max.max()));
        }
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 300, ..ProptestConfig::default() })]

    #[test]
    fn no_window_is_ever_exceeded(sc in scenario()) {
        let (mut arrivals, admitted) = run(&sc);
        prop_assert_eq!(admitted, sc.reqs.len(), "everything is admitted eventually");
        for (i, arr) in arrivals.iter_mut().enumerate() {
            if let Err(e) = judge(&sc.buckets[i], arr) {
                prop_assert!(false, "bucket {}: {}", i, e);
            }
        }
    }
}

/// Saturating load at Upbit's 10/s with 10 ms of uniform arrival jitter: the
/// scheduler runs at 99 % or more of the allowed rate and never exceeds it.
#[test]
fn saturated_throughput_is_at_least_99_percent() {
    let t0 = Time::from_millis(1_700_000_000_000);
    let mut sched: Scheduler<u64> = Scheduler::new(SchedulerSpec::default());
    let b = sched.add_bucket(spec(&[(10, 1000)])).unwrap();
    let mut rng = 0x2545F4914F6CDD1Du64;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    #[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
    enum Ev {
        Issue,
        Wake,
        Settle(Ticket),
    }
    let mut events = BinaryHeap::new();
    let mut n = 0u64;
    // Three clients keeping four calls each outstanding: a new call when one returns.
    for _ in 0..12 {
        n += 1;
        events.push(Reverse((t0, n, Ev::Issue)));
    }
    let end = t0 + Duration::from_secs(60);
    let mut arrivals = Vec::new();
    while let Some(Reverse((now, _, ev))) = events.pop() {
        if now >= end {
            break;
        }
        match ev {
            Ev::Settle(t) => {
                sched.settle(now, t, now);
                n += 1;
                events.push(Reverse((now, n, Ev::Issue)));
            }
            Ev::Issue => {
                let req = Request {
                    class: Class::MarketData,
                    deadline: now + Duration::from_secs(30),
                    needs: vec![Need { bucket: b, cost: 1 }],
                    hold: Hold::UntilSettled,
                    payload: n,
                };
                sched.enqueue(now, req).unwrap();
            }
            Ev::Wake => {}
        }
        let poll = sched.poll(now, |_| true);
        for a in poll.admitted {
            let d = Duration::from_micros(next() % 10_001);
            arrivals.push((now + d, 1));
            n += 1;
            // The answer returns 300 us after the request arrives.
            events.push(Reverse((now + d + Duration::from_micros(300), n, Ev::Settle(a.ticket))));
        }
        if let Some(w) = poll.next_wake {
            n += 1;
            // A timer fires up to 1 ms late (tokio's wheel); model 0.5 ms.
            events.push(Reverse((w + Duration::from_micros(500), n, Ev::Wake)));
        }
    }
    let sent = arrivals.iter().filter(|(t, _)| *t < end).count() as f64;
    let ratio = sent / 600.0;
    assert!(ratio >= 0.99, "ratio {ratio}");
    judge(&[(10, 1000)], &mut arrivals).unwrap();
}
