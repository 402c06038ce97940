//! Bucket behaviour, driven with explicit times.
use super::*;

fn ms(n: u64) -> Time {
    Time::from_millis(n)
}

/// Probing is off here (see `unprobed`); its own tests turn it on.
fn bucket(windows: &[(u64, u64)]) -> Bucket {
    bucket_with(windows, unprobed())
}

fn bucket_with(windows: &[(u64, u64)], adaptive: AdaptiveSpec) -> Bucket {
    Bucket::new(BucketSpec {
        windows: windows.iter().map(|&(limit, p)| WindowSpec { limit, period: Duration::from_millis(p) }).collect(),
        adaptive,
        calendar: false,
    })
    .unwrap()
}

/// Probing off, so tests of other rules can fill a window at once.
fn unprobed() -> AdaptiveSpec {
    AdaptiveSpec { probe_below: 1.0, ..AdaptiveSpec::default() }
}

const SECOND: Duration = Duration::from_secs(1);

fn used(n: u64) -> Usage {
    Usage { used: Some(n), ..Usage::default() }
}

#[test]
fn a_full_window_frees_strictly_after_the_response_plus_the_period() {
    let mut b = bucket(&[(2, 1000)]);
    let t0 = ms(10_000);
    assert_eq!(b.earliest(t0, 1), Earliest::Now);
    b.charge(t0, 1, 1, Time::MAX);
    b.charge(t0, 2, 1, Time::MAX);
    assert_eq!(b.earliest(t0, 1), Earliest::AfterSettle, "both in flight: unknown");
    b.settle(ms(10_005), 1, ms(10_005));
    assert_eq!(b.earliest(ms(10_005), 1), Earliest::At(ms(11_005).next()));
    assert_eq!(b.earliest(ms(11_005), 1), Earliest::At(ms(11_005).next()), "inclusive boundary");
    assert_eq!(b.earliest(ms(11_005).next(), 1), Earliest::Now);
}

#[test]
fn weights_and_every_window_count_together() {
    // Binance-like: 10 per 100 ms and 15 per 1 s.
    let mut b = bucket(&[(10, 100), (15, 1000)]);
    let t0 = ms(5_000);
    b.charge(t0, 1, 8, t0);
    assert_eq!(b.earliest(t0, 3), Earliest::At((t0 + Duration::from_millis(100)).next()));
    assert_eq!(b.earliest(t0, 2), Earliest::Now);
    b.charge(t0, 2, 2, t0);
    let later = ms(5_200);
    assert_eq!(b.earliest(later, 5), Earliest::Now, "15 per second leaves 5");
    assert_eq!(b.earliest(later, 6), Earliest::At((t0 + Duration::from_millis(1000)).next()));
    assert_eq!(b.earliest(later, 11), Earliest::Never { limit: 10 });
}

#[test]
fn grants_are_held_until_their_use_by_time() {
    let mut b = bucket(&[(1, 1000)]);
    let t0 = ms(1_000);
    b.charge(t0, 1, 1, ms(1_300));
    assert_eq!(b.earliest(ms(2_000), 1), Earliest::At(ms(2_300).next()));
}

#[test]
fn release_gives_back_an_unsent_request() {
    let mut b = bucket(&[(1, 1000)]);
    b.charge(ms(0), 7, 1, Time::MAX);
    assert_eq!(b.earliest(ms(0), 1), Earliest::AfterSettle);
    b.release(7);
    assert_eq!(b.earliest(ms(0), 1), Earliest::Now);
    assert_eq!(b.status(ms(0)).admitted, 0);
}

#[test]
fn server_usage_only_tightens() {
    let mut b = bucket(&[(10, 1000)]);
    let t0 = ms(50_000);
    for id in 0..3 {
        b.charge(t0, id, 1, t0);
    }
    // The server saw only 2 of ours so far: nothing to learn.
    b.observe_usage(t0, t0, 2, t0, SECOND, used(2), true);
    assert_eq!(b.status(t0).windows[0].used, 3);
    // The server counts 8: 5 are someone else's.
    b.observe_usage(t0, t0, 2, t0, SECOND, used(8), true);
    let s = b.status(t0);
    assert_eq!(s.windows[0].used, 8);
    assert_eq!(s.phantom_cost, 5);
    // A lower announced limit replaces ours; a higher one does not.
    b.observe_usage(t0, t0, 2, t0, SECOND, Usage { limit: Some(20), ..Usage::default() }, true);
    assert_eq!(b.status(t0).windows[0].limit, 10);
    let change = b.observe_usage(t0, t0, 2, t0, SECOND, Usage { limit: Some(9), ..Usage::default() }, true).unwrap().unwrap();
    assert_eq!((change.to, change.source), (9, Source::Announced));
    assert_eq!(b.status(t0).windows[0].limit, 9);
    assert!(b.observe_usage(t0, t0, 2, t0, Duration::from_secs(60), used(1), true).is_none(), "no such window");
}

#[test]
fn others_spending_is_counted_once_and_its_step_kept_free() {
    let mut b = bucket(&[(100, 1000)]);
    let t0 = ms(50_000);
    b.charge(t0, 1, 1, Time::MAX);
    b.settle(t0, 1, t0);
    // The exchange counts 6: 5 are another program's.
    b.observe_usage(t0, t0, 1, t0, SECOND, used(6), true);
    b.charge(t0, 2, 1, Time::MAX);
    b.settle(t0, 2, t0);
    // Then 9: 2 of ours, the 5 already known, and 2 more of theirs.
    b.observe_usage(t0, t0, 2, t0, SECOND, used(9), true);
    let s = b.status(t0);
    assert_eq!((s.phantom_cost, s.windows[0].used), (7, 9), "their 7 of a window are kept free for them");
    // While they spend, ours is spread: a fifth of our 93 in any tenth of the window.
    assert_eq!(b.earliest(t0, 16), Earliest::Now);
    assert_eq!(b.earliest(t0, 17), Earliest::At((t0 + Duration::from_millis(100)).next()));
    // Their share is still kept when their spending has left the window (they go
    // on spending while we are quiet), and given back 30 s after they stopped.
    let t1 = t0 + Duration::from_secs(2);
    assert_eq!(b.status(t1).windows[0].used, 7);
    assert_eq!(b.earliest(t0 + Duration::from_secs(31), 100), Earliest::Now);
}

#[test]
fn usage_is_compared_with_ours_in_the_exchanges_window_at_arrival() {
    let mut b = bucket(&[(10, 1000)]);
    let t0 = ms(50_000);
    for id in 0..10 {
        b.charge(t0, id, 1, Time::MAX);
        b.settle(t0, id, t0);
    }
    // A request admitted at t0 + 999 ms arrives at once (the server counts our
    // ten), but its answer is processed at t0 + 1005 ms, when our ten have left
    // our own window. They are not someone else's.
    let admitted = t0 + Duration::from_millis(999);
    let later = t0 + Duration::from_millis(1005);
    b.charge(admitted, 99, 1, Time::MAX);
    // And requests admitted after it, already in flight, did not count there yet.
    for id in 100..105 {
        b.charge(later, id, 1, Time::MAX);
    }
    b.observe_usage(later, later, 99, admitted, SECOND, used(11), true);
    assert_eq!(b.status(later).phantom_cost, 0);
    // Those five may have arrived before it (arrival jitter reorders): up to 16
    // can be ours, only what is above is someone else's.
    b.observe_usage(later, later, 99, admitted, SECOND, used(16), true);
    assert_eq!(b.status(later).phantom_cost, 0);
    b.observe_usage(later, later, 99, admitted, SECOND, used(18), true);
    assert_eq!(b.status(later).phantom_cost, 2);
}

#[test]
fn a_429_cuts_the_count_to_what_the_exchange_had_counted() {
    // The policy says 12/s, the exchange allows 8: a burst of 12 in one poll.
    let mut b = bucket_with(&[(12, 1000)], unprobed());
    let t0 = ms(100_000);
    for id in 0..12 {
        assert_eq!(b.earliest(t0, 1), Earliest::Now);
        b.charge(t0, id, 1, Time::MAX);
    }
    let t1 = t0 + Duration::from_millis(2);
    for id in 0..8 {
        b.settle(t1, id, t1);
        b.on_accepted(t1, id);
    }
    // Four refusals come back, in any order; each lowers to its evidence.
    let mut cuts = Vec::new();
    for id in [9, 8, 11, 10] {
        b.settle(t1, id, t1);
        cuts.push(b.on_throttled(t1, id, t0, t1 + SECOND, &[]).map(|c| c.to));
    }
    let s = b.status(t1);
    assert_eq!(s.windows[0].learned, Some(8), "the eight it accepted: {cuts:?}");
    assert_eq!(s.windows[0].learned_from, Some(Source::Throttled));
    assert_eq!(s.windows[0].configured, 12);
    assert_eq!(s.windows[0].failed, Some(9));
    assert_eq!(s.throttled, 4);
    assert!((s.rate_factor - 8.0 / 12.0).abs() < 1e-9);
    assert_eq!(s.frozen_until, Some(t1 + SECOND), "paused until the window rolls");
    // The refused ones do not count against the window; the next window holds 8.
    assert_eq!(b.earliest(t1 + SECOND, 1), Earliest::At((t1 + SECOND).next()));
    let t2 = t1 + SECOND + Duration::from_millis(1);
    for id in 20..28 {
        assert_eq!(b.earliest(t2, 1), Earliest::Now, "request {id}");
        b.charge(t2, id, 1, t2);
    }
    assert!(matches!(b.earliest(t2, 1), Earliest::At(_)), "a ninth waits for the next window");
}

#[test]
fn the_exchanges_own_count_on_a_refusal_is_the_evidence() {
    let mut b = bucket_with(&[(6000, 60_000)], unprobed());
    let t0 = ms(1_000_000);
    b.charge(t0, 1, 10, Time::MAX);
    b.settle(t0, 1, t0);
    let c = b.on_throttled(t0, 1, t0, t0 + SECOND, &[(Duration::from_secs(60), 4000)]).unwrap();
    assert_eq!((c.from, c.to, c.evidence), (6000, 3990, Some(3990)), "its count less this request's weight");
}

#[test]
fn of_several_windows_the_fullest_learns() {
    // Binance orders: 100 per 10 s and 200,000 per day; 50 sent in 10 s then a 429.
    let mut b = bucket_with(&[(100, 10_000), (200_000, 86_400_000)], unprobed());
    let t0 = ms(100_000_000);
    for id in 0..51 {
        b.charge(t0, id, 1, t0);
    }
    let c = b.on_throttled(t0, 50, t0, t0, &[]).unwrap();
    assert_eq!((c.period, c.to), (Duration::from_secs(10), 50));
    let s = b.status(t0);
    assert_eq!(s.windows[1].learned, None, "the day window keeps its limit");
}

#[test]
fn above_what_was_verified_requests_go_one_at_a_time() {
    let mut b = bucket_with(&[(12, 1000)], AdaptiveSpec::default());
    let t0 = ms(10_000);
    // Half the limit goes at once before anything is known.
    for id in 0..6 {
        assert_eq!(b.earliest(t0, 1), Earliest::Now, "request {id}");
        b.charge(t0, id, 1, Time::MAX);
    }
    assert_eq!(b.earliest(t0, 1), Earliest::AfterSettle, "a probe waits until nothing is in flight");
    let t1 = t0 + Duration::from_millis(1);
    for id in 0..6 {
        b.settle(t1, id, t1);
        b.on_accepted(t1, id);
    }
    assert_eq!(b.status(t1).windows[0].verified, 6);
    // One probe at a time: each accepted one raises what is known to be accepted.
    for id in 6..12 {
        assert_eq!(b.earliest(t1, 1), Earliest::Now, "probe {id}");
        b.charge(t1, id, 1, Time::MAX);
        assert_ne!(b.earliest(t1, 1), Earliest::Now, "one probe in flight at a time");
        b.settle(t1, id, t1);
        b.on_accepted(t1, id);
    }
    assert_eq!(b.status(t1).windows[0].verified, 12);
    // The whole limit was accepted: no more probing, the next window goes at once.
    let t2 = t1 + SECOND + Duration::from_millis(1);
    for id in 20..32 {
        assert_eq!(b.earliest(t2, 1), Earliest::Now, "request {id}");
        b.charge(t2, id, 1, Time::MAX);
    }
}

#[test]
fn the_remaining_header_reveals_a_lower_limit_before_any_429() {
    // Upbit: policy 12/s, the exchange 8/s, saying what is left in each answer.
    let mut b = bucket_with(&[(12, 1000)], AdaptiveSpec::default());
    let t0 = ms(10_000);
    for id in 0..3 {
        b.charge(t0, id, 1, Time::MAX);
    }
    let t1 = t0 + Duration::from_millis(1);
    b.settle(t1, 0, t1);
    // Three of ours arrived; the exchange says 5 are left: it allows 8.
    let change = b.observe_usage(t1, t1, 0, t0, SECOND, Usage { remaining: Some(5), ..Usage::default() }, true).unwrap().unwrap();
    assert_eq!((change.from, change.to, change.source), (12, 8, Source::Remaining));
    let s = b.status(t1);
    // Only this answer's own request surely arrived: 1 + 5 are known to be accepted.
    assert_eq!((s.windows[0].limit, s.windows[0].learned, s.windows[0].verified), (8, Some(8), 6));
    assert_eq!(s.phantom_cost, 0, "a lower limit, not someone else's traffic");
}

#[test]
fn an_answer_read_after_it_settled_still_sees_the_window_before_its_request() {
    let mut b = bucket_with(&[(10, 1000)], AdaptiveSpec::default());
    let t0 = ms(10_000);
    for id in 0..7 {
        b.charge(t0, id, 1, Time::MAX);
        b.settle(t0 + Duration::from_millis(1), id, t0 + Duration::from_millis(1));
    }
    // Admitted 999 ms later; its answer is read 4 ms after that, when the seven
    // have left our own window, but they were in the exchange's at its arrival.
    let admitted = t0 + Duration::from_millis(999);
    let read = t0 + Duration::from_millis(1003);
    b.charge(admitted, 9, 1, Time::MAX);
    b.settle(read, 9, read);
    let change = b.observe_usage(read, read, 9, admitted, SECOND, Usage { remaining: Some(2), ..Usage::default() }, true).unwrap();
    assert_eq!(change, None, "2 left after our 8: the exchange allows 10, as configured");
}

#[test]
fn bans_freeze_until_their_end() {
    let mut b = bucket(&[(10, 1000)]);
    b.on_banned(ms(9_000));
    assert_eq!(b.earliest(ms(1_000), 1), Earliest::At(ms(9_000)));
    assert_eq!(b.earliest(ms(9_000), 1), Earliest::Now);
    assert_eq!(b.status(ms(9_000)).bans, 1);
}

#[test]
fn optimistic_bound_assumes_in_flight_settles_now() {
    let mut b = bucket(&[(1, 1000)]);
    b.charge(ms(0), 1, 1, Time::MAX);
    assert_eq!(b.earliest_optimistic(ms(500), 1), Earliest::At(ms(1_500).next()));
}

#[test]
fn old_entries_are_forgotten() {
    let mut b = bucket(&[(5, 1000)]);
    for i in 0..1000 {
        b.charge(ms(i * 10), i, 1, ms(i * 10));
    }
    assert!(b.held.len() < 300, "kept {}", b.held.len());
    // The log keeps 10 s (answers are read against it) plus a window.
    assert!(b.sent.len() < 1200 && b.sent_at.len() < 1200, "log kept {}", b.sent.len());
}

#[test]
fn a_share_below_the_cost_waits_for_the_reservation_to_end() {
    let mut b = bucket_with(&[(10, 1000)], unprobed());
    b.set_share(Share::Part { of: 3 });
    for i in 0..3 {
        assert_eq!(b.earliest(ms(0), 1), Earliest::Now);
        b.charge(ms(0), i, 1, ms(0));
    }
    assert!(matches!(b.earliest(ms(0), 1), Earliest::At(_)));
    // Above the share but within the limit: wait, never refuse outright.
    assert_eq!(b.earliest(ms(0), 5), Earliest::AfterSettle);
    assert_eq!(b.earliest(ms(0), 11), Earliest::Never { limit: 10 });
    b.set_share(Share::Whole);
    assert_eq!(b.earliest(ms(0), 1), Earliest::Now);
    // Two parts kept back until 2 s: a request that needs them waits until 3 s
    // (one window later), not until something settles.
    b.set_share(Share::Rest { reserved: vec![(ms(2000), 3), (ms(2000), 3)] });
    assert_eq!(b.earliest(ms(500), 5), Earliest::At(ms(3000).next()));
    assert_eq!(b.earliest(ms(3001), 5), Earliest::Now);
}

#[test]
fn a_pause_is_not_a_ban() {
    let mut b = bucket(&[(10, 1000)]);
    b.pause_until(ms(500));
    assert_eq!(b.earliest(ms(0), 1), Earliest::At(ms(500)));
    assert_eq!(b.status(ms(0)).bans, 0);
}

#[test]
fn spec_errors_name_the_window() {
    let e = Bucket::new(BucketSpec {
        windows: vec![WindowSpec { limit: 1, period: Duration::from_secs(1) }, WindowSpec { limit: 0, period: Duration::from_secs(1) }],
        adaptive: AdaptiveSpec::default(),
        calendar: false,
    })
    .unwrap_err();
    assert_eq!(e, SpecError::ZeroLimit { index: 1 });
}

/// `ours_bounds` reads only the part of the log that can count; it must give
/// exactly what reading the whole log gives, whatever the mix of open, settled,
/// long-held, refused, released and ledger-copied requests.
#[test]
fn reading_part_of_the_log_equals_reading_all_of_it() {
    fn whole_log(b: &Bucket, i: usize, id: u64, admitted: Time, at: Time) -> (u64, u64) {
        let period = b.windows[i].spec.period;
        let skew = b.skew;
        let (from, to) = (admitted - period - skew, at - period + skew);
        let (mut most, mut least) = (0, 0);
        for (&(t, other), s) in b.sent.range(..=(at + skew, u64::MAX)) {
            if s.fate == Fate::Refused {
                continue;
            }
            if s.settled.is_none_or(|h| h >= from) {
                most += s.cost;
            }
            if other == id || (t <= at && s.fate == Fate::Accepted && t >= to && s.settled.is_some_and(|h| h + skew <= admitted)) {
                least += s.cost;
            }
        }
        (most, least)
    }
    // xorshift: repeatable, no dependency.
    let mut state = 0x2545_F491_4F6C_DD1Du64;
    let mut rnd = move |n: u64| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state % n.max(1)
    };
    let mut b = bucket(&[(1_000_000, 1000), (1_000_000, 100)]);
    let mut now = ms(30_000);
    let mut open: Vec<u64> = Vec::new();
    let mut id = 0;
    let mut checked = 0;
    for _ in 0..4000 {
        now = now + Duration::from_millis(rnd(15));
        match rnd(10) {
            0..=3 => {
                id += 1;
                b.charge(now, id, 1 + rnd(3), Time::MAX);
                open.push(id);
            }
            4 => {
                // Another replica's, admitted earlier, held for a while.
                id += 1;
                let admitted = now - Duration::from_millis(rnd(400));
                b.charge_admitted(now, admitted, id, 1, now + Duration::from_millis(rnd(2_000)));
            }
            5..=7 if !open.is_empty() => {
                let done = open.swap_remove(rnd(open.len() as u64) as usize);
                // Now and then an unknown outcome, held long after the answer.
                let held = if rnd(15) == 0 { now + Duration::from_millis(rnd(4_000)) } else { now };
                b.settle(now, done, held);
                b.set_fate(done, if rnd(6) == 0 { Fate::Refused } else { Fate::Accepted });
            }
            8 if !open.is_empty() => {
                let gone = open.swap_remove(rnd(open.len() as u64) as usize);
                b.release(gone);
            }
            _ => b.refresh(now),
        }
        let keys: Vec<Key> = b.sent.keys().copied().collect();
        for _ in 0..3 {
            let Some(&(t, which)) = keys.get(rnd(keys.len() as u64) as usize) else { break };
            let at = t + Duration::from_millis(rnd(600));
            for w in 0..2 {
                assert_eq!(
                    b.ours_bounds(w, which, t, at),
                    whole_log(&b, w, which, t, at),
                    "request {which} admitted {t:?}, answered {at:?}"
                );
                checked += 1;
            }
        }
    }
    assert!(checked > 10_000, "{checked}");
    assert!(b.unsettled.len() == open.len(), "the index follows the open requests");
}
