//! The dispatcher over real gRPC against the simulator as a strict server.

// Printing what the exchange saw makes a failure readable.
#![allow(clippy::print_stderr)]

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::{Setup, dur, harness, json, req, timeout};
use sluice_domain::Exchange;
use sluice_proto::dispatcher::v1::{AcquireRequest, CallRequest, GetBudgetsRequest, MintStreamAuthRequest, Priority, WatchBudgetsRequest};
use sluice_sim::{Fault, FaultKind};
use tonic::Code;

/// Shrinks two long-window limits (identically on both sides) so a few seconds of
/// load binds every bucket; the Upbit and OKX limits stay the real ones.
const SIM_SMALL: &str = r#"
jitter_ms = 5
[exchanges.bybit.groups.ip]
windows = [{ limit = 30, period_ms = 1000 }]
[exchanges.binance.groups.weight]
windows = [{ limit = 100, period_ms = 2000 }]
"#;
const POLICY_SMALL: &str = r#"
[exchanges.bybit.groups.ip]
scope = "ip"
windows = [{ limit = 30, period_ms = 1000 }]
[exchanges.binance.groups.weight]
scope = "ip"
windows = [{ limit = 100, period_ms = 2000 }]
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn many_concurrent_clients_never_earn_a_429_nor_exceed_a_window() {
    let h = harness(Setup { sim_overrides: vec![SIM_SMALL.into()], policy_overrides: vec![POLICY_SMALL.into()], ..Setup::default() }).await;
    let calls = [
        req("upbit", "GET", "/v1/ticker", "markets=KRW-BTC"),
        req("upbit", "GET", "/v1/candles/minutes/1", "market=KRW-BTC&count=2"),
        req("bybit", "GET", "/v5/market/tickers", "category=spot&symbol=BTCUSDT"),
        req("binance", "GET", "/api/v3/depth", "symbol=BTCUSDT&limit=100"),
        req("binance", "GET", "/api/v3/ticker/24hr", "symbol=ETHUSDT"),
        req("okx", "GET", "/api/v5/market/ticker", "instId=BTC-USDT"),
    ];
    let end = Instant::now() + Duration::from_secs(5);
    let ok = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let mut tasks = Vec::new();
    for i in 0..16 {
        let mut client = h.client.clone();
        let calls = calls.clone();
        let (ok, errors) = (ok.clone(), errors.clone());
        tasks.push(tokio::spawn(async move {
            let mut n = i;
            while Instant::now() < end {
                let r = CallRequest { timeout: timeout(Duration::from_secs(20)), ..calls[n % calls.len()].clone() };
                n += 1;
                match client.call(r).await {
                    Ok(resp) if resp.get_ref().status == 200 => ok.fetch_add(1, Ordering::Relaxed),
                    Ok(resp) => panic!("exchange answered {}: {}", resp.get_ref().status, String::from_utf8_lossy(&resp.get_ref().body)),
                    Err(e) => {
                        eprintln!("grpc error: {e}");
                        errors.fetch_add(1, Ordering::Relaxed)
                    }
                };
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let stats = h.sim.stats();
    for v in &stats.exchanges {
        for b in &v.buckets {
            eprintln!("{} {} {}: accepted {} windows {:?}", v.exchange, b.scope, b.group, b.accepted, b.windows);
        }
    }
    assert_eq!(stats.rate_limited(), 0, "{stats:#?}");
    assert!(stats.violations().is_empty(), "{:?}", stats.violations());
    assert!(stats.exchanges.iter().all(|v| v.bans_imposed == 0 && v.banned == 0));
    assert_eq!(errors.load(Ordering::Relaxed), 0);
    // The budgets were used, not merely respected: Upbit's ticker group alone
    // allows 10/s; over 5 s at least half of that went through.
    let upbit = stats.exchange(Exchange::Upbit).unwrap();
    let ticker = upbit.buckets.iter().find(|b| b.group == "ticker").unwrap();
    assert!(ticker.accepted >= 25, "ticker accepted {}", ticker.accepted);
    assert!(ok.load(Ordering::Relaxed) > 150);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_cuts_the_count_to_the_evidence_pauses_then_recovers_in_steps() {
    let policy = r#"
        [adaptive]
        cut = 0.8
        floor = 0.3
        hold_ms = 1000
        step = 0.1
        interval_ms = 200
        [exchanges.upbit]
        throttle_pause_ms = 700
    "#;
    let mut h = harness(Setup { policy_overrides: vec![policy.into()], ..Setup::default() }).await;
    let ticker = |h: &mut common::Harness| {
        let mut c = h.client.clone();
        async move {
            let b = c.get_budgets(GetBudgetsRequest { exchange: "upbit".into() }).await.unwrap().into_inner();
            b.buckets.into_iter().find(|b| b.group == "ticker").unwrap()
        }
    };
    h.sim.inject(Exchange::Upbit, Fault { kind: FaultKind::Throttle, count: 1, group: Some("ticker".into()) });
    let r = h.client.call(req("upbit", "GET", "/v1/ticker", "markets=KRW-BTC")).await.unwrap().into_inner();
    assert_eq!(r.status, 429, "the exchange's answer comes back verbatim");
    assert_eq!(json(&r)["error"]["name"], "too_many_requests");
    // Refused with nothing of ours counted: no number is proven, so seed 004's
    // factor cuts the count (x0.8 of 10), and the period is never stretched.
    let t = ticker(&mut h).await;
    let w = &t.windows[0];
    assert_eq!((w.configured_limit, w.learned_limit, w.learned_from.as_str()), (10, 8, "rate-limit answer"));
    assert_eq!(w.limit, 8);
    assert_eq!(dur(&w.effective_period), Duration::from_secs(1), "the period is never stretched");
    assert_eq!(t.throttled_total, 1);
    assert!((t.rate_factor - 0.8).abs() < 1e-9, "{}", t.rate_factor);
    assert!(dur(&t.frozen_for) > Duration::from_millis(500), "paused after the 429");
    // The next call waits out the pause before it is sent.
    let t0 = Instant::now();
    let r = h.client.call(req("upbit", "GET", "/v1/ticker", "markets=KRW-BTC")).await.unwrap().into_inner();
    assert_eq!(r.status, 200);
    assert!(dur(&r.queued) >= Duration::from_millis(500), "queued {:?}", dur(&r.queued));
    assert!(t0.elapsed() >= Duration::from_millis(500));
    // After the hold (1 s) the count recovers 1 (10 % of 10) every 200 ms back to 10.
    let mut limits = Vec::new();
    for _ in 0..500 {
        let t = ticker(&mut h).await;
        let limit = t.windows[0].limit;
        if limits.last() != Some(&limit) {
            limits.push(limit);
        }
        if limit == 10 {
            assert_eq!(t.windows[0].learned_limit, 0, "fully recovered: nothing learned shows");
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(limits.last(), Some(&10), "recovered: {limits:?}");
    assert!(limits.len() >= 3, "in steps, not at once: {limits:?}");
    assert_eq!(h.sim.stats().rate_limited(), 0, "only the injected 429, no genuine one");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_418_freezes_the_whole_scope_until_the_ban_ends_then_it_resumes() {
    let mut h = harness(Setup::default()).await;
    h.sim.inject(Exchange::Upbit, Fault { kind: FaultKind::Ban { ms: 1500 }, count: 1, group: Some("ticker".into()) });
    let banned_at = Instant::now();
    let r = h.client.call(req("upbit", "GET", "/v1/ticker", "markets=KRW-BTC")).await.unwrap().into_inner();
    assert_eq!(r.status, 418);
    // Another group of the same IP scope is frozen too; a short deadline fails fast, unsent.
    let t0 = Instant::now();
    let e = h
        .client
        .call(CallRequest { timeout: timeout(Duration::from_millis(300)), ..req("upbit", "GET", "/v1/orderbook", "markets=KRW-BTC") })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::DeadlineExceeded, "{}", e.message());
    assert!(t0.elapsed() < Duration::from_millis(250), "refused at once, not after waiting: {:?}", t0.elapsed());
    // With time enough it waits for the ban to end, then goes.
    let r = h
        .client
        .call(CallRequest { timeout: timeout(Duration::from_secs(5)), ..req("upbit", "GET", "/v1/candles/minutes/1", "market=KRW-BTC") })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(r.status, 200);
    assert!(banned_at.elapsed() >= Duration::from_millis(1500), "sent only after the ban: {:?}", banned_at.elapsed());
    let up = h.sim.stats();
    let up = up.exchange(Exchange::Upbit).unwrap();
    assert_eq!(up.banned, 0, "nothing was sent into the ban");
    assert_eq!(up.injected, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_the_right_code_and_a_message_naming_the_problem() {
    let extra = vec![("SLUICE_OKX_HALF_API_KEY".to_owned(), "k".to_owned())];
    let mut h = harness(Setup { extra_env: extra, ..Setup::default() }).await;
    let cases: Vec<(CallRequest, Code, &str)> = vec![
        (req("kraken", "GET", "/v1/ticker", ""), Code::InvalidArgument, "unknown exchange 'kraken'"),
        (req("upbit", "GET", "/v1/nothing/here", ""), Code::InvalidArgument, "no route for GET /v1/nothing/here"),
        (CallRequest { account: "ghost".into(), ..req("upbit", "GET", "/v1/accounts", "") }, Code::NotFound, "no account 'ghost'"),
        (
            CallRequest { account: "half".into(), ..req("okx", "GET", "/api/v5/account/balance", "") },
            Code::FailedPrecondition,
            "has no secret",
        ),
        (req("upbit", "GET", "/v1/accounts", ""), Code::InvalidArgument, "name an account"),
        (
            CallRequest { body: vec![b'{'; 100_000], account: "demo".into(), ..req("upbit", "POST", "/v1/orders", "") },
            Code::InvalidArgument,
            "body is 100000 bytes",
        ),
        (req("upbit", "FETCH", "/v1/ticker", ""), Code::InvalidArgument, "method 'FETCH'"),
        (CallRequest { priority: 42, ..req("upbit", "GET", "/v1/ticker", "markets=KRW-BTC") }, Code::InvalidArgument, "priority 42"),
        (req("upbit", "GET", "/v1/ticker", "markets=%E0%A4%A"), Code::InvalidArgument, "query"),
        (
            CallRequest { body: b"[1]".to_vec(), account: "demo".into(), ..req("okx", "POST", "/api/v5/trade/order", "") },
            Code::InvalidArgument,
            "JSON object",
        ),
    ];
    for (r, code, needle) in cases {
        let e = h.client.call(r.clone()).await.expect_err(&format!("{} {} accepted", r.method, r.path));
        assert_eq!(e.code(), code, "{} {}: {}", r.method, r.path, e.message());
        assert!(e.message().contains(needle), "'{}' lacks '{needle}'", e.message());
    }
    // Beyond the gRPC decoding limit too: INVALID_ARGUMENT like any bad request.
    let e = h.client.call(CallRequest { body: vec![b'x'; 2 * 1024 * 1024], ..req("upbit", "POST", "/v1/orders", "") }).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "{e:?}");
    assert!(e.message().contains("larger than this server accepts"), "{}", e.message());
    let long = CallRequest { timeout: timeout(Duration::from_secs(3600)), ..req("upbit", "GET", "/v1/ticker", "markets=KRW-BTC") };
    let e = h.client.call(long).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().contains("timeout 3600000 ms is above the dispatcher's maximum"), "{}", e.message());
    let odd = CallRequest {
        timeout: Some(common::prost_types::Duration { seconds: 1, nanos: 2_000_000_000 }),
        ..req("upbit", "GET", "/v1/ticker", "markets=KRW-BTC")
    };
    let e = h.client.call(odd).await.unwrap_err();
    assert!(e.message().contains("normalised"), "{}", e.message());
    let e =
        h.client.acquire(AcquireRequest { exchange: "upbit".into(), group: "nope".into(), ..AcquireRequest::default() }).await.unwrap_err();
    assert!(e.message().contains("no group 'nope'"), "{}", e.message());
    let mint = |exchange: &str, account: &str| MintStreamAuthRequest { exchange: exchange.into(), account: account.into() };
    let stream_cases = [
        (mint("binance", "demo"), Code::InvalidArgument, "listen key"),
        (mint("kraken", "demo"), Code::InvalidArgument, "unknown exchange 'kraken'"),
        (mint("upbit", ""), Code::InvalidArgument, "account is required"),
        (mint("upbit", "ghost"), Code::NotFound, "no account 'ghost'"),
        (mint("okx", "half"), Code::FailedPrecondition, "has no secret"),
    ];
    for (r, code, needle) in stream_cases {
        let e = h.client.mint_stream_auth(r.clone()).await.expect_err(&format!("{r:?} minted"));
        assert_eq!(e.code(), code, "{r:?}: {}", e.message());
        assert!(e.message().contains(needle), "'{}' lacks '{needle}'", e.message());
    }
    let bybit = h.client.mint_stream_auth(mint("bybit", "demo")).await.unwrap().into_inner();
    assert!(bybit.login_message.contains(r#""op":"auth""#), "{}", bybit.login_message);
    let upbit = h.client.mint_stream_auth(mint("upbit", "demo")).await.unwrap().into_inner();
    assert_eq!(upbit.headers[0].name, "authorization");
    assert!(upbit.valid_for.is_some_and(|d| d.seconds > 0));
    // The dispatcher still serves.
    let r = h.client.call(req("upbit", "GET", "/v1/ticker", "markets=KRW-BTC")).await.unwrap().into_inner();
    assert_eq!(r.status, 200);
    assert_eq!(h.sim.stats().exchange(Exchange::Upbit).unwrap().requests, 1, "no bad request reached the exchange");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn signed_calls_are_accepted_on_every_exchange_and_a_wrong_secret_gets_the_exchanges_own_error() {
    let mut h = harness(Setup::default()).await;
    let private = [
        ("upbit", "/v1/accounts", ""),
        ("bybit", "/v5/account/wallet-balance", "accountType=UNIFIED"),
        ("binance", "/api/v3/account", ""),
        ("okx", "/api/v5/account/balance", "ccy=USDT"),
    ];
    for (ex, path, query) in private {
        let good = h.client.call(CallRequest { account: "demo".into(), ..req(ex, "GET", path, query) }).await.unwrap().into_inner();
        let body = json(&good);
        let accepted = match ex {
            "upbit" | "binance" => good.status == 200,
            "bybit" => body["retCode"] == 0,
            _ => body["code"] == "0",
        };
        assert!(accepted, "{ex}: {} {body}", good.status);
        let bad = h.client.call(CallRequest { account: "bad".into(), ..req(ex, "GET", path, query) }).await.unwrap().into_inner();
        let body = json(&bad);
        match ex {
            "upbit" => assert_eq!((bad.status, body["error"]["name"].as_str()), (401, Some("jwt_verification"))),
            "bybit" => assert_eq!(body["retCode"], 10004, "{body}"),
            "binance" => assert_eq!((bad.status, body["code"].as_i64()), (400, Some(-1022))),
            _ => assert_eq!((bad.status, body["code"].as_str()), (401, Some("50113"))),
        }
        let text = String::from_utf8_lossy(&bad.body);
        assert!(!text.contains("not-the-secret") && !text.contains("-api-key"), "no credential echoes back: {text}");
    }
    // Orders with bodies sign too, including Binance's quoted list parameters.
    let order = h
        .client
        .call(CallRequest {
            account: "demo".into(),
            body: br#"{"category":"spot","symbol":"BTCUSDT","side":"Buy","orderType":"Limit","qty":"0.01","price":"60000","orderLinkId":"sig-1"}"#.to_vec(),
            ..req("bybit", "POST", "/v5/order/create", "")
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(json(&order)["retCode"], 0, "{}", json(&order));
    let list = h.client.call(req("binance", "GET", "/api/v3/ticker/24hr", r#"symbols=["BTCUSDT","ETHUSDT"]"#)).await.unwrap().into_inner();
    assert_eq!(list.status, 200, "{}", json(&list));
    assert_eq!(json(&list).as_array().unwrap().len(), 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idempotency_key_is_never_sent_twice() {
    let h = harness(Setup::default()).await;
    let order = CallRequest {
        account: "demo".into(),
        idempotency_key: "order-7".into(),
        body: br#"{"market":"KRW-BTC","side":"bid","volume":"0.001","price":"90000000","ord_type":"limit","identifier":"order-7"}"#
            .to_vec(),
        ..req("upbit", "POST", "/v1/orders", "")
    };
    let mut tasks = Vec::new();
    for _ in 0..6 {
        let mut c = h.client.clone();
        let o = order.clone();
        tasks.push(tokio::spawn(async move { c.call(o).await.unwrap().into_inner() }));
    }
    let mut answers = Vec::new();
    for t in tasks {
        answers.push(t.await.unwrap());
    }
    assert!(answers.iter().all(|a| a.status == 201), "{:?}", answers.iter().map(|a| a.status).collect::<Vec<_>>());
    assert_eq!(answers.iter().filter(|a| !a.replayed).count(), 1, "one sent, the rest replayed");
    assert!(answers.iter().all(|a| a.body == answers[0].body));
    let mut c = h.client.clone();
    let again = c.call(order.clone()).await.unwrap().into_inner();
    assert!(again.replayed);
    let e = c.call(CallRequest { body: b"{}".to_vec(), ..order.clone() }).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);
    assert!(e.message().contains("different request"));
    let open = c
        .call(CallRequest { account: "demo".into(), ..req("upbit", "GET", "/v1/orders/open", "market=KRW-BTC") })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(json(&open).as_array().unwrap().len(), 1, "exactly one order reached the exchange");
    let up = h.sim.stats();
    let orders = up.exchange(Exchange::Upbit).unwrap().buckets.iter().find(|b| b.group == "order").unwrap().accepted;
    assert_eq!(orders, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_throttled_keyed_order_is_sent_again_on_retry_and_placed_once() {
    let mut h = harness(Setup::default()).await;
    h.sim.inject(Exchange::Upbit, Fault { kind: FaultKind::Throttle, count: 1, group: Some("order".into()) });
    let order = CallRequest {
        account: "demo".into(),
        idempotency_key: "retry-1".into(),
        timeout: timeout(Duration::from_secs(5)),
        body: br#"{"market":"KRW-BTC","side":"bid","volume":"0.001","price":"90000000","ord_type":"limit","identifier":"retry-1"}"#
            .to_vec(),
        ..req("upbit", "POST", "/v1/orders", "")
    };
    let first = h.client.call(order.clone()).await.unwrap().into_inner();
    assert_eq!(first.status, 429, "the exchange's refusal comes back verbatim");
    // The same key again: not a replay of the 429, but sent (after the pause) and placed.
    let second = h.client.call(order.clone()).await.unwrap().into_inner();
    assert_eq!(second.status, 201, "{}", json(&second));
    assert!(!second.replayed);
    // From now on the key replays the order that was placed.
    let third = h.client.call(order.clone()).await.unwrap().into_inner();
    assert!(third.replayed);
    assert_eq!(third.body, second.body);
    let open = h
        .client
        .call(CallRequest { account: "demo".into(), ..req("upbit", "GET", "/v1/orders/open", "market=KRW-BTC") })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(json(&open).as_array().unwrap().len(), 1, "placed exactly once");
    let stats = h.sim.stats();
    let up = stats.exchange(Exchange::Upbit).unwrap();
    assert_eq!(up.injected, 1);
    assert_eq!(up.buckets.iter().find(|b| b.group == "order").unwrap().accepted, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_that_cannot_go_before_its_deadline_fails_fast_and_is_never_sent_late() {
    let mut h = harness(Setup::default()).await;
    // Fill Upbit's ticker budget (10 per second).
    let mut tasks = Vec::new();
    for _ in 0..10 {
        let mut c = h.client.clone();
        tasks.push(tokio::spawn(async move { c.call(req("upbit", "GET", "/v1/ticker", "markets=KRW-BTC")).await.unwrap() }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let before = h.sim.stats().exchange(Exchange::Upbit).unwrap().requests;
    let t0 = Instant::now();
    let e = h
        .client
        .call(CallRequest { timeout: timeout(Duration::from_millis(200)), ..req("upbit", "GET", "/v1/ticker", "markets=KRW-BTC") })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::DeadlineExceeded, "{}", e.message());
    assert!(e.message().contains("upbit/ip:default/ticker"), "{}", e.message());
    assert!(t0.elapsed() < Duration::from_millis(150), "failed fast: {:?}", t0.elapsed());
    // A call willing to wait goes out when the budget frees; had the refused one been
    // queued after all, it would have gone out first and the exchange would see two.
    let r = h
        .client
        .call(CallRequest { timeout: timeout(Duration::from_secs(5)), ..req("upbit", "GET", "/v1/ticker", "markets=KRW-BTC") })
        .await;
    assert_eq!(r.unwrap().into_inner().status, 200);
    assert_eq!(h.sim.stats().exchange(Exchange::Upbit).unwrap().requests, before + 1, "and never sent");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_refuses_with_resource_exhausted() {
    let h = harness(Setup { tweak: Box::new(|c| c.queue_capacity = 5), ..Setup::default() }).await;
    let mut tasks = Vec::new();
    for _ in 0..40 {
        let mut c = h.client.clone();
        tasks.push(tokio::spawn(async move { c.call(req("upbit", "GET", "/v1/ticker", "markets=KRW-BTC")).await }));
    }
    let mut exhausted = 0;
    for t in tasks {
        if let Err(e) = t.await.unwrap() {
            assert_eq!(e.code(), Code::ResourceExhausted, "{}", e.message());
            assert!(e.message().contains("queue is full"));
            exhausted += 1;
        }
    }
    assert!(exhausted > 0);
    assert_eq!(h.sim.stats().rate_limited(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acquire_grants_websocket_tokens_from_the_same_budgets() {
    let h = harness(Setup::default()).await;
    let mut tasks = Vec::new();
    for _ in 0..7 {
        let mut c = h.client.clone();
        tasks.push(tokio::spawn(async move {
            c.acquire(AcquireRequest { exchange: "upbit".into(), group: "ws-connect".into(), ..AcquireRequest::default() })
                .await
                .unwrap()
                .into_inner()
        }));
    }
    let mut queued: Vec<Duration> = Vec::new();
    for t in tasks {
        let g = t.await.unwrap();
        assert_eq!(dur(&g.use_within), Duration::from_millis(250));
        assert_eq!(g.bucket, "upbit/ip:default/ws-connect");
        queued.push(dur(&g.queued));
    }
    queued.sort();
    assert!(queued[4] < Duration::from_millis(200), "five at once: {queued:?}");
    // The sixth waits until the first five (held for use-by + jitter) leave the 1 s window.
    assert!(queued[5] >= Duration::from_millis(1200), "{queued:?}");
    let mut c = h.client.clone();
    let g = c
        .acquire(AcquireRequest {
            exchange: "upbit".into(),
            group: "ws-message".into(),
            connection: "conn-1".into(),
            cost: 5,
            ..AcquireRequest::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(g.bucket, "upbit/connection:conn-1/ws-message");
    let e = c
        .acquire(AcquireRequest {
            exchange: "upbit".into(),
            group: "ws-message".into(),
            connection: "conn-1".into(),
            cost: 6,
            ..AcquireRequest::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument, "6 can never fit in 5 per second: {}", e.message());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn budgets_status_stream_metrics_health_and_reflection() {
    let mut h = harness(Setup::default()).await;
    h.client
        .call(CallRequest { priority: Priority::MarketData as i32, ..req("binance", "GET", "/api/v3/depth", "symbol=BTCUSDT&limit=500") })
        .await
        .unwrap();
    let b = h.client.get_budgets(GetBudgetsRequest::default()).await.unwrap().into_inner();
    assert_eq!(b.replica, "dispatcher-0");
    let weight = b.buckets.iter().find(|b| b.exchange == "binance" && b.group == "weight").unwrap();
    assert_eq!(weight.windows[0].limit, 6000);
    assert_eq!(weight.windows[0].used, 25, "depth with limit 500 weighs 25");
    assert_eq!(weight.admitted_total, 1);
    let e = h.client.get_budgets(GetBudgetsRequest { exchange: "nasdaq".into() }).await.unwrap_err();
    assert_eq!(e.code(), Code::InvalidArgument);

    let mut stream = h
        .client
        .watch_budgets(WatchBudgetsRequest { exchange: "binance".into(), interval: timeout(Duration::from_millis(100)) })
        .await
        .unwrap()
        .into_inner();
    for _ in 0..2 {
        let update = stream.message().await.unwrap().unwrap();
        assert!(update.buckets.iter().all(|b| b.exchange == "binance"));
    }

    // Gauges are published by the shard's housekeeping tick (every 250 ms): poll.
    let http = sluice_service::http_client::client();
    let mut metrics = String::new();
    for _ in 0..200 {
        metrics = http.get(format!("http://{}/metrics", h.dispatcher.ops_addr)).send().await.unwrap().text().await.unwrap();
        if metrics.contains("sluice_dispatcher_bucket_window_used") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    for name in [
        "sluice_dispatcher_bucket_window_used",
        "sluice_dispatcher_bucket_window_limit",
        "sluice_dispatcher_queue_depth",
        "sluice_dispatcher_queue_wait_seconds_bucket",
        "sluice_dispatcher_upstream_seconds_bucket",
    ] {
        assert!(metrics.contains(name), "missing {name}");
    }
    assert!(metrics.contains(r#"group="weight""#));

    let channel = tonic::transport::Channel::from_shared(format!("http://{}", h.dispatcher.grpc_addr)).unwrap().connect().await.unwrap();
    let mut health = tonic_health::pb::health_client::HealthClient::new(channel.clone());
    let status = health
        .check(tonic_health::pb::HealthCheckRequest { service: "sluice.dispatcher.v1.Dispatcher".into() })
        .await
        .unwrap()
        .into_inner()
        .status;
    assert_eq!(status, tonic_health::pb::health_check_response::ServingStatus::Serving as i32);

    use tonic_reflection::pb::v1::ServerReflectionRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
    let mut refl = ServerReflectionClient::new(channel.clone());
    let req = ServerReflectionRequest { host: String::new(), message_request: Some(MessageRequest::ListServices(String::new())) };
    let mut resp = refl.server_reflection_info(tokio_stream::iter(vec![req])).await.unwrap().into_inner();
    let Some(MessageResponse::ListServicesResponse(list)) = resp.message().await.unwrap().unwrap().message_response else {
        panic!("no service list")
    };
    assert!(list.service.iter().any(|s| s.name == "sluice.dispatcher.v1.Dispatcher"), "{:?}", list.service);
    // The older v1alpha protocol too (grpcio's reflection client speaks it).
    {
        use tonic_reflection::pb::v1alpha as alpha;
        let mut refl = alpha::server_reflection_client::ServerReflectionClient::new(channel);
        let req = alpha::ServerReflectionRequest {
            host: String::new(),
            message_request: Some(alpha::server_reflection_request::MessageRequest::FileContainingSymbol(
                "sluice.dispatcher.v1.Dispatcher".into(),
            )),
        };
        let mut resp = refl.server_reflection_info(tokio_stream::iter(vec![req])).await.unwrap().into_inner();
        let answer = resp.message().await.unwrap().unwrap().message_response;
        let Some(alpha::server_reflection_response::MessageResponse::FileDescriptorResponse(files)) = answer else {
            panic!("v1alpha reflection did not describe the dispatcher: {answer:?}")
        };
        assert!(!files.file_descriptor_proto.is_empty());
    }

    h.stop.cancel();
    h.dispatcher.wait().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transport_failure_is_unavailable_and_an_unknown_outcome_blocks_a_blind_retry() {
    use tokio::io::AsyncReadExt;
    // An "exchange" that reads the request and hangs up without answering.
    let hangup = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let hangup_addr = hangup.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((mut s, _)) = hangup.accept().await {
            tokio::spawn(async move {
                let mut buf = [0u8; 8192];
                let _ = s.read(&mut buf).await;
            });
        }
    });
    // And one where nothing listens.
    let closed = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap().local_addr().unwrap();
    let mut h = harness(Setup {
        tweak: Box::new(move |c| {
            c.base_urls.insert(Exchange::Okx, format!("http://{hangup_addr}"));
            c.base_urls.insert(Exchange::Bybit, format!("http://{closed}"));
        }),
        ..Setup::default()
    })
    .await;
    let order = CallRequest {
        account: "demo".into(),
        idempotency_key: "hangup-1".into(),
        body: br#"{"instId":"BTC-USDT","tdMode":"cash","side":"buy","ordType":"limit","px":"60000","sz":"0.01","clOrdId":"hangup1"}"#
            .to_vec(),
        ..req("okx", "POST", "/api/v5/trade/order", "")
    };
    let e = h.client.call(order.clone()).await.unwrap_err();
    assert_eq!(e.code(), Code::Unavailable, "{}", e.message());
    assert!(e.message().contains("outcome unknown"), "{}", e.message());
    let e = h.client.call(order).await.unwrap_err();
    assert_eq!(e.code(), Code::FailedPrecondition, "never blindly re-sent: {}", e.message());

    let refused = CallRequest { idempotency_key: "refused-1".into(), ..req("bybit", "GET", "/v5/market/time", "") };
    for _ in 0..2 {
        let e = h.client.call(refused.clone()).await.unwrap_err();
        assert_eq!(e.code(), Code::Unavailable, "{}", e.message());
        assert!(e.message().contains("cannot connect"), "nothing was sent, so the key stays free: {}", e.message());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_queued_when_shutdown_begins_is_still_sent_and_answered() {
    let h = harness(Setup::default()).await;
    // Fill Upbit's ticker budget, then queue one more call behind it.
    let mut fill = Vec::new();
    for _ in 0..10 {
        let mut c = h.client.clone();
        fill.push(tokio::spawn(async move { c.call(req("upbit", "GET", "/v1/ticker", "markets=KRW-BTC")).await.unwrap() }));
    }
    for t in fill {
        t.await.unwrap();
    }
    let mut c = h.client.clone();
    let queued = tokio::spawn(async move { c.call(req("upbit", "GET", "/v1/ticker", "markets=KRW-BTC")).await });
    // Shut down once the call is waiting in the queue.
    let mut status = h.client.clone();
    let give_up = Instant::now() + Duration::from_secs(10);
    loop {
        let b = status.get_budgets(GetBudgetsRequest { exchange: "upbit".into() }).await.unwrap().into_inner();
        if b.buckets.iter().any(|b| b.group == "ticker" && b.queued == 1) {
            break;
        }
        assert!(Instant::now() < give_up, "the call never waited in the queue: {:?}", b.buckets.iter().find(|b| b.group == "ticker"));
        tokio::task::yield_now().await;
    }
    h.stop.cancel();
    let answer = queued.await.unwrap().expect("drained, not failed").into_inner();
    assert_eq!(answer.status, 200);
    h.dispatcher.wait().await.unwrap();
    assert_eq!(h.sim.stats().rate_limited(), 0);
}
