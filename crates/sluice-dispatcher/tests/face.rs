//! The exchange-compatible REST face from outside: real client libraries (ccxt,
//! pybit, python-binance, in `tests/python/`) changed only in base URL and key,
//! through the dispatcher to the simulator; many bot processes at once on one
//! account and one budget, with no 429 reaching the simulator; wrong secrets and
//! a market-data-only client refused in the exchange's own terms; a call the
//! dispatcher cannot send in time refused by sluice and never sent.

mod common;

use std::time::{SystemTime, UNIX_EPOCH};

use common::{Harness, Setup, TempFile, harness, temp_file};
use serde_json::{Value, json};
use sluice_domain::Exchange;
use sluice_exchange::sign::{Credentials, SignContext, Unsigned, sign};

const BOT_SECRET: &str = "bot-secret-5f1e9a7c3b2d4e6f";
const MD_SECRET: &str = "md-secret-8a2c4e6f0b1d3f5a";
const PASSPHRASE: &str = "bot-passphrase";

fn key(who: &str, ex: Exchange) -> String {
    format!("{who}-{ex}-key-0001")
}

/// The bot and market-data clients, with an exchange key each on every
/// exchange (the secrets in files, as a mounted Secret would hold them).
fn clients(files: &[TempFile; 3]) -> String {
    let mut t = String::new();
    for (who, classes) in [("bot", ""), ("md", "classes = ['market_data', 'backfill']\n")] {
        let secret = if who == "bot" { &files[0] } else { &files[1] };
        t.push_str(&format!("[[clients]]\nname = '{who}'\naccounts = ['*/demo']\n{classes}"));
        for ex in Exchange::ALL {
            t.push_str(&format!(
                "[[clients.exchange_keys]]\nexchange = '{ex}'\naccount = 'demo'\napi_key = '{}'\nsecret_file = '{}'\n",
                key(who, ex),
                secret.0.display()
            ));
            if ex == Exchange::Okx {
                t.push_str(&format!("passphrase_file = '{}'\n", files[2].0.display()));
            }
        }
    }
    t
}

fn key_file(who: &str, secret: &str) -> TempFile {
    let keys: serde_json::Map<String, Value> = Exchange::ALL
        .iter()
        .map(|ex| {
            let mut k = json!({ "apiKey": key(who, *ex), "secret": secret });
            if *ex == Exchange::Okx {
                k["password"] = json!(PASSPHRASE);
            }
            (ex.as_str().to_owned(), k)
        })
        .collect();
    temp_file(&Value::Object(keys).to_string())
}

async fn face(policy: Vec<String>) -> (Harness, [TempFile; 3]) {
    face_with(policy, "").await
}

async fn face_with(policy: Vec<String>, api_extra: &str) -> (Harness, [TempFile; 3]) {
    let files = [temp_file(BOT_SECRET), temp_file(MD_SECRET), temp_file(PASSPHRASE)];
    let text = format!(
        "{}\n[exchange_api]\nlisten = '127.0.0.1:0'\n{api_extra}\n[exchange_api.exchanges]\nbybit = '127.0.0.1:0'\n",
        clients(&files)
    );
    let h = harness(Setup {
        policy_overrides: policy,
        tweak: Box::new(move |c| {
            let parsed: sluice_dispatcher::DispatcherConfig = toml::from_str(&text).unwrap();
            c.clients = parsed.clients;
            c.exchange_api = parsed.exchange_api;
        }),
        ..Setup::default()
    })
    .await;
    (h, files)
}

async fn python(script: &str, args: Vec<String>) -> String {
    let (ok, text) = sluice_testkit::run_python(script, args).await.unwrap();
    assert!(ok, "{script}: {text}");
    text
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ccxt_pybit_and_python_binance_work_through_the_face_with_sluice_keys() {
    let (h, _files) = face(Vec::new()).await;
    let url = format!("http://{}", h.dispatcher.exchange_api.shared.unwrap());
    let (bot, md) = (key_file("bot", BOT_SECRET), key_file("md", MD_SECRET));
    let args = vec!["--face".into(), url, "--keys".into(), bot.0.display().to_string(), "--md-keys".into(), md.0.display().to_string()];
    let text = python("face_clients.py", args).await;
    assert!(text.contains("all checks passed"), "{text}");
    let stats = h.sim.stats();
    assert_eq!(stats.rate_limited(), 0, "{:?}", stats.violations());
    // The orders went to the real account, signed with its real key.
    for ex in Exchange::ALL {
        assert!(!h.sim.orders(ex, "demo").is_empty(), "{ex}: no order reached the account");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_bot_processes_share_one_budget_and_none_sees_a_429() {
    let (h, _files) = face(Vec::new()).await;
    let base = format!("http://{}/upbit", h.dispatcher.exchange_api.shared.unwrap());
    let bot = temp_file(&json!({ "apiKey": key("bot", Exchange::Upbit), "secret": BOT_SECRET }).to_string());
    // Six processes with ccxt's own limiter off: each would send 30 or more
    // calls a second on an account that allows 30 in all.
    let args = [
        "--exchange",
        "upbit",
        "--base",
        &base,
        "--keys",
        &bot.0.display().to_string(),
        "--processes",
        "6",
        "--seconds",
        "5",
        "--no-limiter",
    ];
    let text = python("ccxt_bots.py", args.iter().map(|s| s.to_string()).collect()).await;
    let report: Value = serde_json::from_str(text.lines().last().unwrap_or_default()).unwrap_or_else(|e| panic!("{e}: {text}"));
    assert_eq!(report["http_429"], 0, "{report}");
    assert_eq!(report["http_418"], 0, "{report}");
    assert_eq!(report["other"], 0, "{report}");
    assert!(report["ok"].as_u64().unwrap() >= 60, "the budget was used: {report}");
    assert_eq!(h.sim.stats().rate_limited(), 0, "{:?}", h.sim.stats().violations());
}

async fn json_body(r: reqwest::Response) -> Value {
    let bytes = r.bytes().await.unwrap();
    serde_json::from_slice(&bytes).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&bytes)))
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis() as u64
}

/// Signs a Bybit request as pybit would, with a given recv window.
fn bybit_signed(client: &reqwest::Client, url: String, secret: &str, window: u64) -> reqwest::RequestBuilder {
    let creds = Credentials::new(key("bot", Exchange::Bybit), secret, None);
    let ctx = SignContext { now_ms: now_ms(), nonce: String::new(), recv_window_ms: window };
    let query = url.split_once('?').map_or("", |(_, q)| q).to_owned();
    let s = sign(Exchange::Bybit, &creds, Unsigned { method: "GET", path: "/v5/order/realtime", query: &query, body: b"" }, &ctx).unwrap();
    s.headers.into_iter().fold(client.get(url), |r, (n, v)| r.header(n, v))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_call_that_cannot_go_within_the_bots_window_is_refused_by_sluice_and_never_sent() {
    // One open-orders call per 10 s on the account: the second waits, past its
    // 300 ms recv window.
    let policy = "[exchanges.bybit.groups.order-realtime]\nwindows = [{ limit = 1, period_ms = 10_000 }]\n".to_owned();
    let (h, _files) = face(vec![policy]).await;
    // Bybit's own address: its paths at the root.
    let url = format!("http://{}/v5/order/realtime?category=spot&symbol=BTCUSDT", h.dispatcher.exchange_api.per_exchange[&Exchange::Bybit]);
    let http = sluice_service::http_client::client();
    let first = bybit_signed(&http, url.clone(), BOT_SECRET, 5_000).send().await.unwrap();
    assert_eq!(first.status(), 200);
    assert!(first.headers().contains_key("x-sluice-queued-ms"));
    let body = json_body(first).await;
    assert_eq!(body["retCode"], 0, "the exchange's own answer, verbatim: {body}");
    let sent_before = h.sim.stats().exchange(Exchange::Bybit).map_or(0, |v| v.requests);
    let second = bybit_signed(&http, url.clone(), BOT_SECRET, 300).send().await.unwrap();
    let status = second.status().as_u16();
    let refused = second.headers().get("x-sluice-refused").map(|v| v.to_str().unwrap().to_owned());
    let body = json_body(second).await;
    assert!(status == 429 || status == 503, "{status} {body}");
    assert_eq!(body["sluice"]["sent"], false, "{body}");
    assert!(refused.is_some(), "{body}");
    assert_eq!(h.sim.stats().exchange(Exchange::Bybit).map_or(0, |v| v.requests), sent_before, "never sent");

    // A wrong secret: Bybit's own sign error, and nothing sent.
    let bad = bybit_signed(&http, url, "not-the-bot-secret-at-all", 5_000).send().await.unwrap();
    let body = json_body(bad).await;
    assert_eq!(body["retCode"], 10004, "{body}");
    assert_eq!(h.sim.stats().exchange(Exchange::Bybit).map_or(0, |v| v.requests), sent_before);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_require_credential_even_public_endpoints_need_a_signature() {
    let (h, _files) = face_with(Vec::new(), "require_credential = true").await;
    let url = format!("http://{}/upbit/v1/ticker?markets=KRW-BTC", h.dispatcher.exchange_api.shared.unwrap());
    let r = sluice_service::http_client::client().get(url).send().await.unwrap();
    assert_eq!(r.status(), 401);
    let body = json_body(r).await;
    assert_eq!(body["error"]["name"], "jwt_verification", "Upbit's own answer to a missing credential: {body}");
    assert_eq!(h.sim.stats().exchange(Exchange::Upbit).map_or(0, |v| v.requests), 0, "nothing sent");
}
