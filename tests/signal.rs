//! The signal service against a nats-server the test starts on a free port: market
//! data in on `md.>`, signals out on `signal.>`, decoded against `proto/`. Offline
//! (no key: the deterministic model) and through a mock OpenAI-compatible gateway
//! (sentiment, routine and confirmation models, costs added up exactly).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use futures::StreamExt;
use prost::Message;
use rust_decimal::Decimal;
use serde_json::{Value, json};
use sluice::replicas::Nats;
use sluice_proto::md::v1 as md;
use sluice_proto::signal::v1 as pb;
use sluice_signal::SignalConfig;
use tokio_util::sync::CancellationToken;

fn now_ns() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as i64
}

async fn trade(nats: &async_nats::Client, price: &str) {
    let t = md::Trade {
        source: Some(md::Source { exchange: "binance".into(), symbol: "BTC/USDT".into(), receive_ts_ns: now_ns(), ..Default::default() }),
        trade_id: "1".into(),
        price: price.into(),
        qty: "0.5".into(),
        aggressor: 1,
    };
    nats.publish("md.binance.trade.BTC-USDT", t.encode_to_vec().into()).await.unwrap();
}

async fn book(nats: &async_nats::Client) {
    let l = |p: &str, q: &str| Some(md::Level { price: p.into(), qty: q.into() });
    let b = md::BookTop { source: None, state: md::BookState::Live as i32, bid: l("64999", "3"), ask: l("65001", "1") };
    nats.publish("md.binance.book.BTC-USDT", b.encode_to_vec().into()).await.unwrap();
}

fn config(nats: &Nats, env: &[(&str, String)]) -> SignalConfig {
    let mut env: HashMap<String, String> = env.iter().map(|(k, v)| ((*k).to_owned(), v.clone())).collect();
    env.insert("SLUICE_SIGNAL_NATS_URL".into(), nats.url());
    env.insert("SLUICE_SIGNAL_OPS_LISTEN".into(), "127.0.0.1:0".into());
    let mut c = SignalConfig::load(None, &|k| env.get(k).cloned()).unwrap();
    c.symbols.retain(|s| s.venue == "binance" && s.symbol.to_string() == "BTC/USDT");
    c.cadence.every_ms = 400;
    c.cadence.min_trades = 5;
    c.cadence.move_pct = Decimal::ONE;
    c
}

async fn next_signal(sub: &mut async_nats::Subscriber, within: Duration, ok: impl Fn(&pb::Signal) -> bool) -> pb::Signal {
    let end = tokio::time::Instant::now() + within;
    loop {
        let m = tokio::time::timeout_at(end, sub.next()).await.expect("a signal in time").expect("subscription open");
        assert_eq!(m.subject.as_str(), "signal.binance.BTC-USDT");
        let s = pb::Signal::decode(m.payload).expect("a signal decodes against proto/");
        if ok(&s) {
            return s;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offline_signals_come_on_schedule_and_on_a_move() {
    sluice_service::telemetry::init("test");
    let nats = Nats::start().await.unwrap();
    let stop = CancellationToken::new();
    let _guard = stop.clone().drop_guard();
    let client = async_nats::connect(nats.url()).await.unwrap();
    let mut sub = client.subscribe("signal.>").await.unwrap();
    let running = sluice_signal::start(config(&nats, &[]), stop.clone()).await.unwrap();
    book(&client).await;
    for p in ["65000", "65010", "65020", "65030", "65040", "65050"] {
        trade(&client, p).await;
    }
    let s = next_signal(&mut sub, Duration::from_secs(10), |s| s.trigger == "schedule").await;
    assert_eq!((s.model.as_str(), s.role.as_str(), s.prompt_version.as_str()), ("offline-trend-v1", "offline", "offline-trend-v1"));
    let f = s.features.clone().unwrap();
    assert_eq!(
        (f.last_price.as_str(), f.trades, f.volume.as_str(), f.spread_bp.as_str(), f.book_imbalance.as_str()),
        ("65050", 6, "3", "0.31", "0.5")
    );
    assert_eq!(s.cost.clone().unwrap().usd, "0");
    assert!(s.traceparent.starts_with("00-") && s.tick_to_signal.is_some() && s.ts_ns > 0);
    assert!(s.rationale.contains("offline-trend-v1"), "{}", s.rationale);

    // A 2 % jump: a signal at once, marked as made by the move.
    trade(&client, "66400").await;
    let s = next_signal(&mut sub, Duration::from_secs(5), |s| s.trigger == "move").await;
    assert_eq!(s.features.unwrap().last_price, "66400");
    let metrics = sluice_service::http_client::client().get(format!("http://{}/metrics", running.ops_addr)).send().await.unwrap();
    let text = metrics.text().await.unwrap();
    assert!(text.contains("sluice_signal_signals_total{venue=\"binance\",symbol=\"BTC/USDT\""), "{text}");
}

/// Calls per model; every answer is a confident BUY with 1,000 + 200 tokens.
type Calls = Arc<Mutex<HashMap<String, u32>>>;

async fn chat(State(calls): State<Calls>, Json(body): Json<Value>) -> axum::response::Response {
    use axum::response::IntoResponse;
    let model = body["model"].as_str().unwrap_or("").to_owned();
    *calls.lock().unwrap().entry(model).or_default() += 1;
    let answer = r#"{"action":"BUY","confidence":0.8,"horizon":"1h","rationale":"Up.","key_levels":[]}"#;
    let events = format!(
        "data: {}\n\ndata: {}\n\ndata: [DONE]\n\n",
        json!({ "choices": [{ "delta": { "content": answer } }] }),
        json!({ "choices": [], "usage": { "prompt_tokens": 1000, "completion_tokens": 200 } })
    );
    ([("content-type", "text/event-stream")], events).into_response()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn through_a_gateway_sentiment_routine_and_confirmation_add_up() {
    sluice_service::telemetry::init("test");
    let nats = Nats::start().await.unwrap();
    let calls: Calls = Arc::default();
    let app = axum::Router::new().route("/v1/chat/completions", axum::routing::post(chat)).with_state(calls.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let gateway = format!("http://{}/v1", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });

    let stop = CancellationToken::new();
    let _guard = stop.clone().drop_guard();
    let client = async_nats::connect(nats.url()).await.unwrap();
    let mut sub = client.subscribe("signal.>").await.unwrap();
    let cfg = config(&nats, &[("HOLYSHEEP_API_KEY", "sk-test".into()), ("SLUICE_SIGNAL_GATEWAY_URL", gateway)]);
    assert!(!cfg.offline());
    sluice_signal::start(cfg, stop.clone()).await.unwrap();
    client.publish("news.BTC", "Spot ETF inflows hit a record".into()).await.unwrap();
    book(&client).await;
    for p in ["65000", "65010", "65020", "65030", "65040"] {
        trade(&client, p).await;
    }
    let s = next_signal(&mut sub, Duration::from_secs(10), |_| true).await;
    assert_eq!(
        (s.action, s.model.as_str(), s.role.as_str(), s.prompt_version.as_str()),
        (pb::Action::Buy as i32, "gpt-4.1", "confirm", "v1")
    );
    let c = s.cost.unwrap();
    // Claude (sentiment) 1,200 tokens at 15, DeepSeek (routine) at 0.42, GPT-4.1 (confirm) at 8 per million:
    // 0.018 + 0.000504 + 0.0096.
    assert_eq!((c.prompt_tokens, c.completion_tokens, c.usd.as_str()), (3_000, 600, "0.028104"));
    assert_eq!(s.fallback_reason, "");
    let calls = calls.lock().unwrap().clone();
    assert_eq!((calls["claude-sonnet-4-5"], calls["deepseek-chat"], calls["gpt-4.1"]), (1, 1, 1), "{calls:?}");
}

/// A gateway that takes 1.5 s per answer.
async fn slow_chat(State(calls): State<Calls>, Json(body): Json<Value>) -> axum::response::Response {
    tokio::time::sleep(Duration::from_millis(1_500)).await;
    chat(State(calls), Json(body)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn work_that_waited_too_long_for_a_slot_is_skipped_not_queued() {
    sluice_service::telemetry::init("test");
    let nats = Nats::start().await.unwrap();
    let calls: Calls = Arc::default();
    let app = axum::Router::new().route("/v1/chat/completions", axum::routing::post(slow_chat)).with_state(calls.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let gateway = format!("http://{}/v1", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let stop = CancellationToken::new();
    let _guard = stop.clone().drop_guard();
    let client = async_nats::connect(nats.url()).await.unwrap();
    let mut cfg = config(&nats, &[("HOLYSHEEP_API_KEY", "sk-test".into()), ("SLUICE_SIGNAL_GATEWAY_URL", gateway)]);
    // Two symbols on a 1 s schedule, one slot, answers taking 1.5 s: one
    // symbol's work always waits for the slot longer than max_wait_ms.
    cfg.symbols = SignalConfig::load(None, &|_| None).unwrap().symbols.into_iter().filter(|s| s.venue == "binance").collect();
    assert_eq!(cfg.symbols.len(), 2);
    cfg.cadence.concurrency = 1;
    cfg.cadence.max_wait_ms = 300;
    cfg.cadence.every_ms = 1_000;
    cfg.routing.confirm = None;
    cfg.routing.sentiment = None;
    let running = sluice_signal::start(cfg, stop.clone()).await.unwrap();
    for sym in ["BTC-USDT", "ETH-USDT"] {
        for _ in 0..6 {
            let src = md::Source { receive_ts_ns: now_ns(), ..Default::default() };
            let t = md::Trade { source: Some(src), price: "100".into(), qty: "1".into(), ..Default::default() };
            client.publish(format!("md.binance.trade.{sym}"), t.encode_to_vec().into()).await.unwrap();
        }
    }
    client.flush().await.unwrap();
    let started = tokio::time::Instant::now();
    let http = sluice_service::http_client::client();
    let url = format!("http://{}/metrics", running.ops_addr);
    let mut stale = 0;
    while stale == 0 {
        assert!(started.elapsed() < Duration::from_secs(15), "no stale work skipped");
        tokio::time::sleep(Duration::from_millis(200)).await;
        let text = http.get(&url).send().await.unwrap().text().await.unwrap();
        stale = text
            .lines()
            .find(|l| l.starts_with("sluice_signal_skipped_total{reason=\"stale\"}"))
            .and_then(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
            .unwrap_or(0);
    }
    // Nothing piled up: the one slot made at most one call per 1.5 s.
    let made: u32 = calls.lock().unwrap().values().sum();
    let bound = (started.elapsed().as_millis() / 1_500) as u32 + 2;
    assert!(made <= bound, "{made} calls in {:?}: work queued up", started.elapsed());
}
