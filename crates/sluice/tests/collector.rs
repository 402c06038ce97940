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
use sluice::replicas::Nats;
use sluice_collector::CollectorConfig;
use sluice_dispatcher::{DispatcherConfig, Keyring};
use sluice_domain::{Exchange, Symbol};
use sluice_proto::md::v1 as pb;
use sluice_sim::{FeedFault, SimConfig};
use tokio_util::sync::CancellationToken;

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

/// A nats-server, the simulator and a dispatcher pointed at it.
struct Stack {
    nats: Nats,
    sim: sluice_sim::SimHandle,
    dispatcher: sluice_dispatcher::Running,
    stop: CancellationToken,
}

async fn stack(sim_cfg: SimConfig) -> Stack {
    sluice_service::telemetry::init("test");
    let nats = Nats::start().await.unwrap();
    let stop = CancellationToken::new();
    let sim = sluice_sim::start(sim_cfg, stop.clone()).await.unwrap();
    let mut dcfg = DispatcherConfig::load(None, &|_| None).unwrap();
    dcfg.listen = "127.0.0.1:0".parse().unwrap();
    dcfg.ops_listen = "127.0.0.1:0".parse().unwrap();
    dcfg.drain_grace_ms = 0;
    for ex in Exchange::ALL {
        dcfg.base_urls.insert(ex, sim.base_url(ex));
    }
    let dispatcher = sluice_dispatcher::start(dcfg, Keyring::default(), stop.clone()).await.unwrap();
    Stack { nats, sim, dispatcher, stop }
}

impl Stack {
    /// The shipped collector config pointed at this stack, with quick timers.
    fn collector_config(&self) -> CollectorConfig {
        let ws = |ex: Exchange, path: &str| format!("ws://{}{path}", self.sim.addr(ex).unwrap());
        let env: HashMap<String, String> = [
            ("SLUICE_COLLECTOR_NATS_URL", self.nats.url()),
            ("SLUICE_COLLECTOR_DISPATCHER_URL", format!("http://{}", self.dispatcher.grpc_addr)),
            ("SLUICE_COLLECTOR_OPS_LISTEN", "127.0.0.1:0".into()),
            ("SLUICE_COLLECTOR_NAME", "test".into()),
            ("SLUICE_COLLECTOR_UPBIT_URL", ws(Exchange::Upbit, "/websocket/v1")),
            ("SLUICE_COLLECTOR_BYBIT_URL", ws(Exchange::Bybit, "/v5/public/spot")),
            ("SLUICE_COLLECTOR_BYBIT_LINEAR_URL", ws(Exchange::Bybit, "/v5/public/linear")),
            ("SLUICE_COLLECTOR_BINANCE_URL", ws(Exchange::Binance, "/stream")),
            ("SLUICE_COLLECTOR_OKX_URL", ws(Exchange::Okx, "/ws/v5/public")),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect();
        let mut ccfg = CollectorConfig::load(None, &|k| env.get(k).cloned()).unwrap();
        ccfg.idle_ms = 1_500;
        ccfg.backoff_min_ms = 50;
        ccfg.backoff_max_ms = 400;
        ccfg.heartbeat_ms = 200;
        ccfg
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_feed_fault_heals_and_books_equal_the_simulator() {
    let st = stack(SimConfig::shipped()).await;
    let _guard = st.stop.clone().drop_guard();
    let (nats, sim, stop) = (&st.nats, &st.sim, &st.stop);
    let ccfg = st.collector_config();

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
    let mut ccfg = st.collector_config();
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
