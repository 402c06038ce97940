//! The collector against the simulator's WebSocket feeds, the dispatcher (tokens
//! and Binance REST snapshots) and a nats-server the test starts on a free port.
//! Every feed fault must heal by itself, everything on NATS must decode against
//! `proto/`, and afterwards every book must equal the simulator's true book.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::StreamExt;
use prost::Message;
use rust_decimal::Decimal;
use sluice::stack::Stack;
use sluice_domain::{Exchange, Symbol};
use sluice_proto::md::v1 as pb;
use sluice_sim::{FeedFault, SimConfig};

#[derive(Default)]
struct Seen {
    /// Latest depth per subject: (state, bids, asks).
    depth: HashMap<String, (i32, Vec<pb::Level>, Vec<pb::Level>)>,
    /// Latest depth per subject: (exchange sequence, receive time in ns).
    depth_meta: HashMap<String, (u64, i64)>,
    resyncing: HashMap<String, u64>,
    decode_errors: Vec<String>,
    messages: u64,
    heartbeat: Option<pb::CollectorHeartbeat>,
}

fn now_ns() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as i64
}

fn venue_of(subject: &str) -> &str {
    subject.split('.').nth(1).unwrap_or("")
}

async fn wait_for(what: &str, seen: &Arc<Mutex<Seen>>, within: Duration, ok: impl Fn(&Seen) -> bool) {
    let end = tokio::time::Instant::now() + within;
    loop {
        if ok(&seen.lock().unwrap()) {
            return;
        }
        if tokio::time::Instant::now() > end {
            let s = seen.lock().unwrap();
            let states: Vec<String> = s.depth.iter().map(|(k, v)| format!("{k}={}", v.0)).collect();
            panic!("{what}: not within {within:?}; depth states {states:?}, resyncs {:?}", s.resyncing);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn all_live(s: &Seen) -> bool {
    s.depth.len() == 12 && s.depth.values().all(|d| d.0 == pb::BookState::Live as i32)
}

async fn stack(sim_cfg: SimConfig) -> Stack {
    sluice_service::telemetry::init("test");
    sluice::stack::stack(sim_cfg).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_feed_fault_heals_and_books_equal_the_simulator() {
    let st = stack(SimConfig::shipped()).await;
    let _guard = st.stop.clone().drop_guard();
    let (nats, sim, stop) = (&st.nats, &st.sim, &st.stop);
    let ccfg = st.collector_config().unwrap();

    let client = async_nats::connect(nats.url()).await.unwrap();
    let mut sub = client.subscribe("md.>").await.unwrap();
    let mut hb = client.subscribe("collector.heartbeat.>").await.unwrap();
    let seen = Arc::new(Mutex::new(Seen::default()));
    let s2 = seen.clone();
    tokio::spawn(async move {
        loop {
            tokio::select! {
                Some(m) = sub.next() => {
                    let subject = m.subject.to_string();
                    let channel = subject.split('.').nth(2).unwrap_or("");
                    let mut s = s2.lock().unwrap();
                    s.messages += 1;
                    let err = match channel {
                        "trade" => pb::Trade::decode(m.payload.clone()).err(),
                        "ticker" => pb::Ticker::decode(m.payload.clone()).err(),
                        "book" => pb::BookTop::decode(m.payload.clone()).err(),
                        "candle" => pb::Candle::decode(m.payload.clone()).err(),
                        "depth" => match pb::BookDepth::decode(m.payload.clone()) {
                            Ok(d) => {
                                if d.state == pb::BookState::Resyncing as i32 {
                                    *s.resyncing.entry(venue_of(&subject).to_owned()).or_default() += 1;
                                }
                                let src = d.source.clone().unwrap_or_default();
                                s.depth_meta.insert(subject.clone(), (src.sequence, src.receive_ts_ns));
                                s.depth.insert(subject.clone(), (d.state, d.bids, d.asks));
                                None
                            }
                            Err(e) => Some(e),
                        },
                        _ => None,
                    };
                    if let Some(e) = err {
                        s.decode_errors.push(format!("{subject}: {e}"));
                    }
                }
                Some(m) = hb.next() => {
                    let h = pb::CollectorHeartbeat::decode(m.payload).expect("heartbeat decodes");
                    s2.lock().unwrap().heartbeat = Some(h);
                }
                else => break,
            }
        }
    });
    let collector = sluice_collector::start(ccfg, stop.clone()).await.unwrap();
    wait_for("every book live", &seen, Duration::from_secs(30), all_live).await;

    // Faults that force a rebuild: the venue publishes RESYNCING, then is live again.
    let rebuilds = [
        (Exchange::Binance, "binance", FeedFault::SkipSequence),
        (Exchange::Bybit, "bybit", FeedFault::SkipSequence),
        (Exchange::Okx, "okx", FeedFault::SkipSequence),
        (Exchange::Upbit, "upbit", FeedFault::Drop),
        (Exchange::Binance, "binance", FeedFault::Drop),
        (Exchange::Okx, "okx", FeedFault::Silence { ms: 4_000 }),
        (Exchange::Bybit, "bybit", FeedFault::Silence { ms: 4_000 }),
    ];
    for (ex, venue, fault) in rebuilds {
        let before = seen.lock().unwrap().resyncing.get(venue).copied().unwrap_or(0);
        sim.inject_feed(ex, fault);
        let what = format!("{venue} after {fault:?}: resync then live");
        wait_for(&what, &seen, Duration::from_secs(20), |s| s.resyncing.get(venue).copied().unwrap_or(0) > before && all_live(s)).await;
    }
    // Faults healed without a rebuild: a restart's snapshot replaces the book, a
    // stalled burst is applied in order.
    let bybit_seq: HashMap<String, u64> = {
        let s = seen.lock().unwrap();
        s.depth_meta.iter().filter(|(k, _)| venue_of(k) == "bybit").map(|(k, v)| (k.clone(), v.0)).collect()
    };
    let injected = now_ns();
    sim.inject_feed(Exchange::Bybit, FeedFault::Restart);
    sim.inject_feed(Exchange::Binance, FeedFault::Stall { ms: 1_000 });
    sim.inject_feed(Exchange::Upbit, FeedFault::SkipSequence);
    wait_for("bybit restarted (u back to 1), binance and upbit flowing after the faults", &seen, Duration::from_secs(20), |s| {
        let restarted = bybit_seq.iter().all(|(k, before)| s.depth_meta.get(k).is_some_and(|m| m.0 < *before));
        let after = |venue: &str, ns: i64| s.depth_meta.iter().any(|(k, m)| venue_of(k) == venue && m.1 > injected + ns);
        restarted && after("binance", 1_000_000_000) && after("upbit", 200_000_000) && all_live(s)
    })
    .await;

    // Broken frames on every connection are counted and skipped: no reconnect, no
    // resync, the books stay live.
    let (resyncs_before, reconnects_before) = {
        let s = seen.lock().unwrap();
        (s.resyncing.clone(), s.heartbeat.as_ref().map_or(0, |h| h.reconnects))
    };
    for ex in Exchange::ALL {
        sim.inject_feed(ex, FeedFault::Malformed);
    }
    // Five connections (Upbit, Bybit spot and linear, Binance, OKX), three frames each.
    wait_for("15 malformed frames counted", &seen, Duration::from_secs(10), |s| s.heartbeat.as_ref().is_some_and(|h| h.malformed >= 15))
        .await;
    {
        let s = seen.lock().unwrap();
        let h = s.heartbeat.as_ref().unwrap();
        assert_eq!(h.malformed, 15, "{h:?}");
        assert_eq!(h.reconnects, reconnects_before, "a malformed frame must not cost the connection");
        assert_eq!(s.resyncing, resyncs_before, "a malformed frame must not cost a book");
        assert!(all_live(&s));
    }

    // Still markets: the last depth of every book must equal the simulator's book
    // once the collector has caught up with the last step.
    sim.pause_markets(true);
    let lv =
        |v: &[pb::Level]| v.iter().map(|l| (l.price.parse::<Decimal>().unwrap(), l.qty.parse::<Decimal>().unwrap())).collect::<Vec<_>>();
    let truth = |subject: &str| {
        let ex: Exchange = venue_of(subject).split('-').next().unwrap().parse().unwrap();
        let sym: Symbol = subject.rsplit('.').next().unwrap().replacen('-', "/", 1).parse().unwrap();
        let (tb, ta, _) = sim.book(ex, &sym.native(ex)).unwrap();
        (tb, ta)
    };
    let caught_up = |s: &Seen| {
        s.depth.iter().all(|(subject, (_, bids, asks))| {
            let (tb, ta) = truth(subject);
            lv(bids) == tb[..bids.len().min(tb.len())] && lv(asks) == ta[..asks.len().min(ta.len())]
        })
    };
    wait_for("every book equal to the still simulator", &seen, Duration::from_secs(10), caught_up).await;
    let s = std::mem::take(&mut *seen.lock().unwrap());
    for (subject, (state, bids, asks)) in &s.depth {
        let (tb, ta) = truth(subject);
        let n = bids.len();
        assert_eq!(*state, pb::BookState::Live as i32, "{subject}");
        assert!(n >= 10, "{subject}: only {n} levels");
        assert_eq!(lv(bids), tb[..n].to_vec(), "{subject} bids");
        assert_eq!(lv(asks), ta[..asks.len()].to_vec(), "{subject} asks");
    }
    assert!(s.decode_errors.is_empty(), "{:?}", s.decode_errors);
    assert!(s.messages > 1_000, "{} messages", s.messages);
    let h = s.heartbeat.clone().expect("a heartbeat");
    assert_eq!(h.collector, "test");
    assert!(h.reconnects >= 4, "{h:?}");
    assert_eq!(h.malformed, 15, "{h:?}");
    assert!(h.streams.iter().any(|st| st.gaps > 0));
    assert!(h.streams.iter().filter(|st| st.channel == "book").all(|st| st.book_state == pb::BookState::Live as i32), "{h:?}");
    // Every rebuild was paced by the dispatcher: the simulator refused nothing.
    let stats = sim.stats();
    for v in &stats.exchanges {
        assert_eq!(v.feed.refused, 0, "{}", v.exchange);
        assert_eq!(v.feed.rate_limited, 0, "{}", v.exchange);
        assert_eq!(v.rate_limited, 0, "{}", v.exchange);
    }
    stop.cancel();
    collector.wait().await;
}

/// Binance ends connections at a fixed age (24 h; 3 s here). The collector opens
/// the next connection before then and runs both until the new one carries every
/// stream: no reconnect, no resync, and every trade published exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn binance_connections_are_replaced_before_their_cut_off_without_a_gap() {
    let mut sim_cfg = SimConfig::shipped();
    sim_cfg.exchanges.get_mut(&Exchange::Binance).unwrap().feed.max_age_ms = Some(3_000);
    let st = stack(sim_cfg).await;
    let _guard = st.stop.clone().drop_guard();
    let mut ccfg = st.collector_config().unwrap();
    ccfg.feeds.retain(|f| f.exchange == Exchange::Binance);
    ccfg.feeds[0].max_connection_age_ms = Some(3_000);

    let client = async_nats::connect(st.nats.url()).await.unwrap();
    let mut trades = client.subscribe("md.binance.trade.>").await.unwrap();
    let mut depth = client.subscribe("md.binance.depth.>").await.unwrap();
    let mut hb = client.subscribe("collector.heartbeat.>").await.unwrap();
    let collector = sluice_collector::start(ccfg, st.stop.clone()).await.unwrap();

    let mut ids: HashMap<String, Vec<u64>> = HashMap::new();
    let (mut live, mut resyncing_after_live) = (0u64, 0u64);
    let mut last_hb = None;
    let end = tokio::time::Instant::now() + Duration::from_secs(9);
    loop {
        tokio::select! {
            _ = tokio::time::sleep_until(end) => break,
            Some(m) = trades.next() => {
                let t = pb::Trade::decode(m.payload).unwrap();
                ids.entry(m.subject.to_string()).or_default().push(t.trade_id.parse().unwrap());
            }
            Some(m) = depth.next() => {
                let d = pb::BookDepth::decode(m.payload).unwrap();
                if d.state == pb::BookState::Live as i32 {
                    live += 1;
                } else if live > 0 {
                    resyncing_after_live += 1;
                }
            }
            Some(m) = hb.next() => last_hb = Some(pb::CollectorHeartbeat::decode(m.payload).unwrap()),
        }
    }
    let h = last_hb.expect("heartbeats");
    assert!(h.planned_replacements >= 2, "{h:?}");
    assert_eq!(h.reconnects, 0, "a planned replacement is not a reconnect: {h:?}");
    assert!(live > 0);
    assert_eq!(resyncing_after_live, 0, "no book was rebuilt");
    assert_eq!(ids.len(), 3, "{:?}", ids.keys());
    for (subject, seq) in &ids {
        assert!(seq.len() > 20, "{subject}: {} trades", seq.len());
        let broken: Vec<_> = seq.windows(2).filter(|w| w[1] != w[0] + 1).collect();
        assert!(broken.is_empty(), "{subject}: trades missed or repeated at {broken:?}");
    }
    let feed = st.sim.stats().exchange(Exchange::Binance).unwrap().feed.clone();
    assert!(feed.connections >= 3, "{feed:?}");
    assert_eq!(feed.refused + feed.rate_limited, 0, "{feed:?}");
    st.stop.cancel();
    collector.wait().await;
}

/// What arrived on `account.>`, decoded.
#[derive(Default)]
struct Account {
    orders: Vec<(String, acct::OrderUpdate)>,
    fills: Vec<(String, acct::Fill)>,
    balances: Vec<(String, acct::BalanceUpdate)>,
    /// (subject, connected, reason) in order.
    status: Vec<(String, bool, String)>,
    decode_errors: Vec<String>,
}

use sluice_proto::account::v1 as acct;

async fn wait_account(what: &str, seen: &Arc<Mutex<Account>>, within: Duration, ok: impl Fn(&Account) -> bool) {
    let end = tokio::time::Instant::now() + within;
    while !ok(&seen.lock().unwrap()) {
        if tokio::time::Instant::now() > end {
            let s = seen.lock().unwrap();
            panic!(
                "{what}: not within {within:?}; status {:?}, orders {:?}, fills {}, balances {}",
                s.status,
                s.orders.iter().map(|(_, o)| (&o.order_id, o.status)).collect::<Vec<_>>(),
                s.fills.len(),
                s.balances.len()
            );
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn ups(s: &Account, subject: &str) -> usize {
    s.status.iter().filter(|(sub, up, _)| sub == subject && *up).count()
}

/// Places an order through the dispatcher; the exchange's JSON answer.
async fn call(st: &Stack, exchange: &str, method: &str, path: &str, query: &str, body: &str) -> serde_json::Value {
    use sluice_proto::dispatcher::v1::CallRequest;
    let mut client =
        sluice_proto::dispatcher::v1::dispatcher_client::DispatcherClient::connect(format!("http://{}", st.dispatcher.grpc_addr))
            .await
            .unwrap();
    let r = client
        .call(CallRequest {
            exchange: exchange.into(),
            account: "demo".into(),
            method: method.into(),
            path: path.into(),
            query: query.into(),
            body: body.as_bytes().to_vec(),
            ..CallRequest::default()
        })
        .await
        .unwrap()
        .into_inner();
    assert!((200..300).contains(&r.status), "{exchange} {path}: HTTP {} {}", r.status, String::from_utf8_lossy(&r.body));
    serde_json::from_slice(&r.body).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn private_streams_publish_orders_fills_and_balances_with_minted_logins() {
    let st = stack(SimConfig::shipped()).await;
    let _guard = st.stop.clone().drop_guard();
    let mut ccfg = st.collector_config().unwrap();
    ccfg.feeds.clear();
    ccfg.private = vec![
        st.private_stream(Exchange::Upbit, "demo"),
        st.private_stream(Exchange::Bybit, "demo"),
        // The dispatcher signs this one with a wrong secret: refused, retried, counted.
        st.private_stream(Exchange::Bybit, "bad"),
    ];

    let client = async_nats::connect(st.nats.url()).await.unwrap();
    let mut sub = client.subscribe("account.>").await.unwrap();
    let seen = Arc::new(Mutex::new(Account::default()));
    let s2 = seen.clone();
    tokio::spawn(async move {
        while let Some(m) = sub.next().await {
            let subject = m.subject.to_string();
            let mut s = s2.lock().unwrap();
            let r = match subject.rsplit('.').next().unwrap_or("") {
                "order" => acct::OrderUpdate::decode(m.payload).map(|o| s.orders.push((subject.clone(), o))),
                "fill" => acct::Fill::decode(m.payload).map(|f| s.fills.push((subject.clone(), f))),
                "balance" => acct::BalanceUpdate::decode(m.payload).map(|b| s.balances.push((subject.clone(), b))),
                "status" => acct::StreamStatus::decode(m.payload).map(|x| s.status.push((subject.clone(), x.connected, x.reason))),
                other => {
                    s.decode_errors.push(format!("unexpected subject kind {other}"));
                    Ok(())
                }
            };
            if let Err(e) = r {
                s.decode_errors.push(format!("{subject}: {e}"));
            }
        }
    });
    let collector = sluice_collector::start(ccfg, st.stop.clone()).await.unwrap();
    let (up_status, by_status) = ("account.upbit.demo.status", "account.bybit.demo.status");
    wait_account("both demo streams up", &seen, Duration::from_secs(20), |s| ups(s, up_status) == 1 && ups(s, by_status) == 1).await;

    // Upbit: a resting limit buy, a market buy by amount (fills at once), a cancel.
    let resting = call(
        &st,
        "upbit",
        "POST",
        "/v1/orders",
        "",
        r#"{"market":"KRW-BTC","side":"bid","volume":"0.001","price":"50000000","ord_type":"limit","identifier":"rest-1"}"#,
    )
    .await;
    let resting_id = resting["uuid"].as_str().unwrap().to_owned();
    call(
        &st,
        "upbit",
        "POST",
        "/v1/orders",
        "",
        r#"{"market":"KRW-BTC","side":"bid","price":"200000","ord_type":"price","identifier":"mkt-1"}"#,
    )
    .await;
    call(&st, "upbit", "DELETE", "/v1/order", &format!("uuid={resting_id}"), "").await;
    // Bybit: a market buy and a resting limit sell that is then cancelled.
    call(
        &st,
        "bybit",
        "POST",
        "/v5/order/create",
        "",
        r#"{"category":"spot","symbol":"ETHUSDT","side":"Buy","orderType":"Market","qty":"0.5","orderLinkId":"by-mkt"}"#,
    )
    .await;
    call(
        &st,
        "bybit",
        "POST",
        "/v5/order/create",
        "",
        r#"{"category":"spot","symbol":"BTCUSDT","side":"Sell","orderType":"Limit","qty":"0.01","price":"900000","orderLinkId":"by-rest"}"#,
    )
    .await;
    call(&st, "bybit", "POST", "/v5/order/cancel", "", r#"{"category":"spot","symbol":"BTCUSDT","orderLinkId":"by-rest"}"#).await;

    let status_of = |s: &Account, client_id: &str| -> Vec<i32> {
        s.orders.iter().filter(|(_, o)| o.client_order_id == client_id).map(|(_, o)| o.status).collect()
    };
    use acct::OrderStatus as St;
    wait_account("every order's updates", &seen, Duration::from_secs(20), |s| {
        status_of(s, "rest-1") == [St::Open as i32, St::Canceled as i32]
            && status_of(s, "mkt-1").last() == Some(&(St::Filled as i32))
            && status_of(s, "by-mkt") == [St::Filled as i32]
            && status_of(s, "by-rest") == [St::Open as i32, St::Canceled as i32]
            && s.fills.len() == 2
    })
    .await;
    {
        let s = seen.lock().unwrap();
        assert!(s.decode_errors.is_empty(), "{:?}", s.decode_errors);
        let (subject, upbit_fill) = s.fills.iter().find(|(_, f)| f.client_order_id == "mkt-1").unwrap();
        assert_eq!(subject, "account.upbit.demo.fill");
        assert_eq!(
            (upbit_fill.symbol.as_str(), upbit_fill.native.as_str(), upbit_fill.side),
            ("BTC/KRW", "KRW-BTC", acct::Side::Buy as i32)
        );
        let px: Decimal = upbit_fill.price.parse().unwrap();
        let qty: Decimal = upbit_fill.qty.parse().unwrap();
        assert!(px > Decimal::ZERO && qty > Decimal::ZERO && px * qty <= Decimal::from(200_000), "{px} x {qty} within the amount");
        let src = upbit_fill.source.clone().unwrap();
        assert_eq!(
            (src.exchange.as_str(), src.account.as_str(), src.market.as_str(), src.collector.as_str()),
            ("upbit", "demo", "spot", "test")
        );
        assert!(src.exchange_ts_ns > 0 && src.receive_ts_ns >= src.exchange_ts_ns - 5_000_000_000);
        let (_, bybit_fill) = s.fills.iter().find(|(_, f)| f.client_order_id == "by-mkt").unwrap();
        assert_eq!((bybit_fill.symbol.as_str(), bybit_fill.qty.as_str()), ("ETH/USDT", "0.5"));
        // The resting Upbit buy locked its KRW and the cancel freed it.
        let krw: Vec<(String, String)> = s
            .balances
            .iter()
            .filter(|(sub, _)| sub == "account.upbit.demo.balance")
            .flat_map(|(_, b)| b.balances.iter().filter(|b| b.asset == "KRW").map(|b| (b.free.clone(), b.locked.clone())))
            .collect();
        assert_eq!(krw.first().map(|k| k.1.as_str()), Some("50000"), "0.001 at 50,000,000 locked: {krw:?}");
        assert_eq!(krw.last().map(|k| k.1.as_str()), Some("0"), "unlocked after the cancel: {krw:?}");
        assert!(s.balances.iter().any(|(sub, b)| sub == "account.bybit.demo.balance" && b.balances.iter().any(|b| b.asset == "ETH")));
        assert!(!s.status.iter().any(|(sub, up, _)| sub == "account.bybit.bad.status" && *up), "a wrong secret never logs in");
    }

    // A dropped connection and a silent one: each stream says it went down, comes
    // back by itself, and carries the next order.
    st.sim.inject_feed(Exchange::Upbit, FeedFault::Drop);
    st.sim.inject_feed(Exchange::Bybit, FeedFault::Silence { ms: 3_000 });
    wait_account("both streams down and up again", &seen, Duration::from_secs(20), |s| {
        let downs = |subject: &str| s.status.iter().filter(|(sub, up, _)| sub == subject && !*up).count();
        ups(s, up_status) == 2 && ups(s, by_status) == 2 && downs(up_status) == 1 && downs(by_status) == 1
    })
    .await;
    call(
        &st,
        "upbit",
        "POST",
        "/v1/orders",
        "",
        r#"{"market":"KRW-ETH","side":"ask","volume":"0.1","ord_type":"market","identifier":"after-drop"}"#,
    )
    .await;
    call(
        &st,
        "bybit",
        "POST",
        "/v5/order/create",
        "",
        r#"{"category":"spot","symbol":"BTCUSDT","side":"Sell","orderType":"Market","qty":"0.001","orderLinkId":"after-silence"}"#,
    )
    .await;
    wait_account("orders after the faults", &seen, Duration::from_secs(20), |s| {
        status_of(s, "after-drop").last() == Some(&(St::Filled as i32)) && status_of(s, "after-silence") == [St::Filled as i32]
    })
    .await;

    // The account stream keeps every event for the execution service.
    let js = async_nats::jetstream::new(client.clone());
    let expected = {
        let s = seen.lock().unwrap();
        (s.orders.len() + s.fills.len() + s.balances.len() + s.status.len()) as u64
    };
    let mut stream = js.get_stream("ACCOUNT").await.unwrap();
    let kept = stream.info().await.unwrap().state.messages;
    assert!(kept >= expected, "ACCOUNT keeps {kept} of the {expected} messages seen");

    // The heartbeat shows each private stream's state for alerting.
    let mut hb = client.subscribe("collector.heartbeat.test").await.unwrap();
    let beat = tokio::time::timeout(Duration::from_secs(5), hb.next()).await.unwrap().unwrap();
    let beat = pb::CollectorHeartbeat::decode(beat.payload).unwrap();
    let line = |ex: &str, a: &str| beat.private_streams.iter().find(|p| p.exchange == ex && p.account == a).cloned().unwrap();
    let (up, by, bad) = (line("upbit", "demo"), line("bybit", "demo"), line("bybit", "bad"));
    assert!(up.connected && up.events >= 8 && up.reconnects >= 1, "{up:?}");
    assert!(by.connected && by.events >= 7 && by.reconnects >= 1, "{by:?}");
    assert!(!bad.connected && bad.reason.contains("login refused: Signature verification failed") && bad.events == 0, "{bad:?}");

    let metrics = sluice_service::http_client::client().get(format!("http://{}/metrics", collector.ops_addr)).send().await.unwrap();
    let metrics = metrics.text().await.unwrap();
    let rejected = metrics
        .lines()
        .find(|l| {
            l.starts_with("sluice_collector_rejected_total{venue=\"bybit-private\"}")
                || l.starts_with("rejected_total{venue=\"bybit-private\"}")
        })
        .and_then(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .unwrap_or(0);
    assert!(rejected >= 2, "the wrong secret was refused and retried: {rejected}\n{metrics}");
    st.stop.cancel();
    collector.wait().await;
}
