//! The simulator over real HTTP: each exchange accepts requests signed by sluice's
//! signer (an implementation independent of the simulator's verifier), refuses a
//! wrong secret with that exchange's own error, enforces its limits, sends its
//! usage headers and answers in its real shapes.

use std::time::Duration;

use rust_decimal::Decimal;
use serde_json::Value;
use sluice_domain::Exchange;
use sluice_exchange::sign::{Credentials, SignContext, Unsigned, sign};
use sluice_sim::{Fault, FaultKind, SimConfig, SimHandle};
use tokio_util::sync::CancellationToken;

struct Answer {
    status: u16,
    headers: reqwest::header::HeaderMap,
    json: Value,
}

async fn sim() -> (SimHandle, CancellationToken) {
    let stop = CancellationToken::new();
    let h = sluice_sim::start(SimConfig::shipped(), stop.clone()).await.unwrap();
    (h, stop)
}

fn creds(ex: Exchange, secret_ok: bool) -> Credentials {
    let c = SimConfig::shipped();
    let a = c.account(ex, "demo").unwrap();
    let secret = if secret_ok { a.secret.clone() } else { "wrong-secret".into() };
    Credentials::new(a.api_key.clone(), secret, a.passphrase.clone())
}

async fn call(h: &SimHandle, ex: Exchange, method: &str, path: &str, query: &str, body: &str, signed: Option<&Credentials>) -> Answer {
    let mut query = query.to_owned();
    let mut headers = Vec::new();
    if let Some(c) = signed {
        let ctx =
            SignContext { now_ms: sluice_exchange::feedback::unix_now_ms(), nonce: uuid::Uuid::new_v4().to_string(), recv_window_ms: 5000 };
        let s = sign(ex, c, Unsigned { method, path, query: &query, body: body.as_bytes() }, &ctx).unwrap();
        query = s.query;
        headers = s.headers;
    }
    let url = if query.is_empty() { format!("{}{path}", h.base_url(ex)) } else { format!("{}{path}?{query}", h.base_url(ex)) };
    let client = sluice_service::http_client::client();
    let mut rb = client.request(method.parse().unwrap(), url);
    for (k, v) in headers {
        rb = rb.header(k, v);
    }
    if !body.is_empty() {
        let ct = if ex == Exchange::Binance { "application/x-www-form-urlencoded" } else { "application/json" };
        rb = rb.header("content-type", ct).body(body.to_owned());
    }
    let resp = rb.send().await.unwrap();
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let text = resp.text().await.unwrap();
    Answer { status, headers, json: serde_json::from_str(&text).unwrap_or(Value::String(text)) }
}

#[tokio::test]
async fn upbit_signed_accepted_wrong_secret_refused() {
    let (h, _stop) = sim().await;
    let ok = call(&h, Exchange::Upbit, "GET", "/v1/accounts", "", "", Some(&creds(Exchange::Upbit, true))).await;
    assert_eq!(ok.status, 200, "{}", ok.json);
    assert!(ok.json.as_array().unwrap().iter().any(|a| a["currency"] == "KRW"));
    assert!(ok.headers["remaining-req"].to_str().unwrap().starts_with("group=default; min=1800; sec=29"));
    let body = r#"{"market":"KRW-BTC","side":"bid","volume":"0.001","price":"90000000","ord_type":"limit","identifier":"t-1"}"#;
    let placed = call(&h, Exchange::Upbit, "POST", "/v1/orders", "", body, Some(&creds(Exchange::Upbit, true))).await;
    assert_eq!(placed.status, 201, "{}", placed.json);
    assert_eq!(placed.json["state"], "wait");
    let got = call(&h, Exchange::Upbit, "GET", "/v1/order", "identifier=t-1", "", Some(&creds(Exchange::Upbit, true))).await;
    assert_eq!(got.json["uuid"], placed.json["uuid"]);
    let dup = call(&h, Exchange::Upbit, "POST", "/v1/orders", "", body, Some(&creds(Exchange::Upbit, true))).await;
    assert_eq!(dup.status, 400, "an identifier is unique per account");
    let bad = call(&h, Exchange::Upbit, "GET", "/v1/accounts", "", "", Some(&creds(Exchange::Upbit, false))).await;
    assert_eq!(bad.status, 401);
    assert_eq!(bad.json["error"]["name"], "jwt_verification");
    let anon = call(&h, Exchange::Upbit, "GET", "/v1/accounts", "", "", None).await;
    assert_eq!(anon.status, 401);
}

#[tokio::test]
async fn upbit_accepts_hs256_tokens_and_refuses_a_reused_nonce() {
    use base64::Engine;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use hmac::{Hmac, KeyInit, Mac};
    let (h, _stop) = sim().await;
    let cfg = SimConfig::shipped();
    let a = cfg.account(Exchange::Upbit, "demo").unwrap();
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
    let claims = serde_json::json!({ "access_key": a.api_key, "nonce": uuid::Uuid::new_v4().to_string() });
    let payload = URL_SAFE_NO_PAD.encode(claims.to_string());
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(a.secret.as_bytes()).unwrap();
    mac.update(format!("{header}.{payload}").as_bytes());
    let token = format!("{header}.{payload}.{}", URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes()));
    let client = sluice_service::http_client::client();
    let get =
        || client.get(format!("{}/v1/accounts", h.base_url(Exchange::Upbit))).header("authorization", format!("Bearer {token}")).send();
    assert_eq!(get().await.unwrap().status(), 200);
    let again = get().await.unwrap();
    assert_eq!(again.status(), 401);
    let body: Value = serde_json::from_str(&again.text().await.unwrap()).unwrap();
    assert_eq!(body["error"]["name"], "nonce_used");
}

#[tokio::test]
async fn upbit_quotation_shapes_and_the_429_then_418_ladder() {
    let (h, _stop) = sim().await;
    let t = call(&h, Exchange::Upbit, "GET", "/v1/ticker", "markets=KRW-BTC", "", None).await;
    assert_eq!(t.status, 200);
    assert!(t.json[0]["trade_price"].is_number(), "Upbit prices are JSON numbers: {}", t.json);
    let book = call(&h, Exchange::Upbit, "GET", "/v1/orderbook", "markets=KRW-BTC", "", None).await;
    assert_eq!(book.json[0]["orderbook_units"].as_array().unwrap().len(), 30, "count defaults to 30");
    for (count, levels) in [("5", 5), ("30", 30), ("31", 30), ("0", 30)] {
        let book = call(&h, Exchange::Upbit, "GET", "/v1/orderbook", &format!("markets=KRW-BTC&count={count}"), "", None).await;
        assert_eq!(book.json[0]["orderbook_units"].as_array().unwrap().len(), levels, "count={count}: {}", book.json);
    }
    let candles = call(&h, Exchange::Upbit, "GET", "/v1/candles/minutes/1", "market=KRW-BTC&count=3", "", None).await;
    assert_eq!(candles.json.as_array().unwrap().len(), 3);
    let unknown = call(&h, Exchange::Upbit, "GET", "/v1/ticker", "markets=KRW-NOPE", "", None).await;
    assert_eq!(unknown.status, 404);
    // Burst past 10/s in the ticker group: 429s, then a 418 block.
    let mut statuses = Vec::new();
    for _ in 0..25 {
        statuses.push(call(&h, Exchange::Upbit, "GET", "/v1/ticker", "markets=KRW-BTC", "", None).await.status);
    }
    assert!(statuses.contains(&429), "{statuses:?}");
    assert_eq!(*statuses.last().unwrap(), 418, "{statuses:?}");
    let s = h.stats();
    let up = s.exchange(Exchange::Upbit).unwrap();
    assert!(up.rate_limited >= 9 && up.bans_imposed == 1, "{up:?}");
    assert!(!s.violations().is_empty(), "the burst shows as a window over its limit");
}

#[tokio::test]
async fn bybit_signed_accepted_wrong_secret_refused_and_limit_headers() {
    let (h, _stop) = sim().await;
    let ok = call(&h, Exchange::Bybit, "GET", "/v5/account/wallet-balance", "accountType=UNIFIED", "", Some(&creds(Exchange::Bybit, true)))
        .await;
    assert_eq!(ok.json["retCode"], 0, "{}", ok.json);
    assert_eq!(ok.headers["x-bapi-limit"], "50");
    assert_eq!(ok.headers["x-bapi-limit-status"], "49");
    // Totals and per-coin USD values as numeric strings, as ccxt and pybit read them.
    let acct = &ok.json["result"]["list"][0];
    for k in ["totalEquity", "totalWalletBalance", "totalAvailableBalance", "totalMarginBalance", "totalInitialMargin"] {
        let v = acct[k].as_str().unwrap_or_else(|| panic!("{k} missing: {acct}"));
        assert!(v.parse::<f64>().is_ok(), "{k} = {v:?}");
    }
    assert!(acct["totalEquity"].as_str().unwrap().parse::<f64>().unwrap() > 100_000.0, "USDT plus coins at their price: {acct}");
    let coins: Vec<&str> = acct["coin"].as_array().unwrap().iter().map(|c| c["coin"].as_str().unwrap()).collect();
    assert_eq!(coins, ["BTC", "ETH", "SOL", "USDT"], "no KRW on Bybit");
    assert!(acct["coin"].as_array().unwrap().iter().all(|c| c["usdValue"].as_str().unwrap().parse::<f64>().is_ok()));
    let body =
        r#"{"category":"spot","symbol":"BTCUSDT","side":"Buy","orderType":"Limit","qty":"0.01","price":"60000","orderLinkId":"b-1"}"#;
    let placed = call(&h, Exchange::Bybit, "POST", "/v5/order/create", "", body, Some(&creds(Exchange::Bybit, true))).await;
    assert_eq!(placed.json["retCode"], 0, "{}", placed.json);
    assert_eq!(placed.json["result"]["orderLinkId"], "b-1");
    let id = placed.json["result"]["orderId"].as_str().unwrap();
    assert!(id.len() >= 19 && id.chars().all(|c| c.is_ascii_digit()), "spot order ids are long numeric strings: {id}");
    let bad =
        call(&h, Exchange::Bybit, "GET", "/v5/account/wallet-balance", "accountType=UNIFIED", "", Some(&creds(Exchange::Bybit, false)))
            .await;
    assert_eq!(bad.json["retCode"], 10004);
    assert!(bad.json["retMsg"].as_str().unwrap().starts_with("error sign!"));
    // Past the per-account limit (50/s): HTTP 200 with retCode 10006, headers once.
    let mut last = None;
    for _ in 0..50 {
        last = Some(
            call(&h, Exchange::Bybit, "GET", "/v5/account/wallet-balance", "accountType=UNIFIED", "", Some(&creds(Exchange::Bybit, true)))
                .await,
        );
    }
    let over = last.unwrap();
    assert_eq!((over.status, over.json["retCode"].as_i64()), (200, Some(10006)), "{}", over.json);
    assert_eq!(over.headers.get_all("x-bapi-limit-status").iter().count(), 1);
    assert_eq!(over.headers["x-bapi-limit-status"], "0");
    let tickers = call(&h, Exchange::Bybit, "GET", "/v5/market/tickers", "category=spot&symbol=BTCUSDT", "", None).await;
    assert!(tickers.json["result"]["list"][0]["lastPrice"].is_string());
}

#[tokio::test]
async fn binance_signed_accepted_wrong_secret_refused_and_weight_headers() {
    let (h, _stop) = sim().await;
    let ok = call(&h, Exchange::Binance, "GET", "/api/v3/account", "", "", Some(&creds(Exchange::Binance, true))).await;
    assert_eq!(ok.status, 200, "{}", ok.json);
    assert!(ok.json["balances"].as_array().unwrap().iter().any(|b| b["asset"] == "USDT"));
    assert_eq!(ok.headers["x-mbx-used-weight-1m"], "20");
    let placed = call(
        &h,
        Exchange::Binance,
        "POST",
        "/api/v3/order",
        "symbol=BTCUSDT&side=BUY&type=LIMIT&timeInForce=GTC&quantity=0.01&price=60000&newClientOrderId=n-1",
        "",
        Some(&creds(Exchange::Binance, true)),
    )
    .await;
    assert_eq!(placed.status, 200, "{}", placed.json);
    assert_eq!(placed.json["status"], "NEW");
    assert_eq!(placed.headers["x-mbx-order-count-10s"], "1");
    let bad = call(&h, Exchange::Binance, "GET", "/api/v3/account", "", "", Some(&creds(Exchange::Binance, false))).await;
    assert_eq!(bad.status, 400);
    assert_eq!(bad.json["code"], -1022);
    let depth = call(&h, Exchange::Binance, "GET", "/api/v3/depth", "symbol=BTCUSDT&limit=500", "", None).await;
    assert_eq!(depth.headers["x-mbx-used-weight-1m"].to_str().unwrap().parse::<u64>().unwrap(), 20 + 1 + 20 + 25);
}

#[tokio::test]
async fn okx_signed_accepted_wrong_secret_refused() {
    let (h, _stop) = sim().await;
    let ok = call(&h, Exchange::Okx, "GET", "/api/v5/account/balance", "ccy=USDT", "", Some(&creds(Exchange::Okx, true))).await;
    assert_eq!(ok.json["code"], "0", "{}", ok.json);
    assert_eq!(ok.json["data"][0]["details"][0]["ccy"], "USDT");
    let body = r#"{"instId":"BTC-USDT","tdMode":"cash","side":"buy","ordType":"limit","px":"60000","sz":"0.01","clOrdId":"o1"}"#;
    let placed = call(&h, Exchange::Okx, "POST", "/api/v5/trade/order", "", body, Some(&creds(Exchange::Okx, true))).await;
    assert_eq!(placed.json["data"][0]["sCode"], "0", "{}", placed.json);
    let bad = call(&h, Exchange::Okx, "GET", "/api/v5/account/balance", "", "", Some(&creds(Exchange::Okx, false))).await;
    assert_eq!(bad.status, 401);
    assert_eq!(bad.json["code"], "50113");
    for _ in 0..20 {
        call(&h, Exchange::Okx, "GET", "/api/v5/market/ticker", "instId=BTC-USDT", "", None).await;
    }
    let over = call(&h, Exchange::Okx, "GET", "/api/v5/market/ticker", "instId=BTC-USDT", "", None).await;
    assert_eq!(over.status, 429);
    assert_eq!(over.json["code"], "50011");
}

#[tokio::test]
async fn injected_faults_and_jitter() {
    let (h, _stop) = sim().await;
    h.inject(Exchange::Binance, Fault { kind: FaultKind::Ban { ms: 300 }, count: 1, group: None });
    let banned_at = std::time::Instant::now();
    let banned = call(&h, Exchange::Binance, "GET", "/api/v3/time", "", "", None).await;
    assert_eq!(banned.status, 418);
    assert!(banned.headers.contains_key("retry-after"));
    assert_eq!(call(&h, Exchange::Binance, "GET", "/api/v3/time", "", "", None).await.status, 418, "the ban holds");
    let mut status = 418;
    while status == 418 && banned_at.elapsed() < Duration::from_secs(5) {
        tokio::time::sleep(Duration::from_millis(20)).await;
        status = call(&h, Exchange::Binance, "GET", "/api/v3/time", "", "", None).await.status;
    }
    assert_eq!(status, 200, "and ends");
    assert!(banned_at.elapsed() >= Duration::from_millis(300), "not before its time: {:?}", banned_at.elapsed());
    h.set_jitter(Duration::from_millis(30));
    let t0 = std::time::Instant::now();
    for _ in 0..5 {
        call(&h, Exchange::Binance, "GET", "/api/v3/time", "", "", None).await;
    }
    assert!(t0.elapsed() > Duration::from_millis(5), "jitter delays requests");
    let s = h.stats();
    assert_eq!(s.exchange(Exchange::Binance).unwrap().injected, 1);
}

type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn ws(h: &SimHandle, ex: Exchange, path: &str, headers: &[(&'static str, String)]) -> Ws {
    use tokio_tungstenite::tungstenite::client::IntoClientRequest;
    let mut req = format!("ws://{}{path}", h.addr(ex).unwrap()).into_client_request().unwrap();
    for (k, v) in headers {
        req.headers_mut().insert(*k, v.parse().unwrap());
    }
    tokio_tungstenite::connect_async(req).await.unwrap().0
}

/// The next frame as JSON (Upbit's come in binary frames).
async fn next_json(ws: &mut Ws) -> Value {
    use futures::StreamExt;
    use tokio_tungstenite::tungstenite::Message;
    loop {
        let m = tokio::time::timeout(Duration::from_secs(5), ws.next()).await.expect("a frame within 5 s").expect("open").unwrap();
        match m {
            Message::Text(t) => return serde_json::from_str(t.as_str()).unwrap(),
            Message::Binary(b) => return serde_json::from_slice(&b).unwrap(),
            Message::Close(c) => return Value::String(format!("closed: {c:?}")),
            _ => {}
        }
    }
}

async fn send(ws: &mut Ws, text: &str) {
    use futures::SinkExt;
    ws.send(tokio_tungstenite::tungstenite::Message::text(text.to_owned())).await.unwrap();
}

fn stream_login(ex: Exchange, c: &Credentials) -> sluice_exchange::sign::StreamAuth {
    let ctx =
        SignContext { now_ms: sluice_exchange::feedback::unix_now_ms(), nonce: uuid::Uuid::new_v4().to_string(), recv_window_ms: 5000 };
    sluice_exchange::sign::stream_auth(ex, c, &ctx).unwrap()
}

#[tokio::test]
async fn upbit_private_stream_checks_the_jwt_and_carries_my_order_and_my_asset() {
    let (h, _stop) = sim().await;
    let bad = stream_login(Exchange::Upbit, &creds(Exchange::Upbit, false));
    let mut refused = ws(&h, Exchange::Upbit, "/websocket/v1/private", &bad.headers).await;
    assert_eq!(next_json(&mut refused).await["error"]["name"], "INVALID_AUTH");

    let good = stream_login(Exchange::Upbit, &creds(Exchange::Upbit, true));
    let mut s = ws(&h, Exchange::Upbit, "/websocket/v1/private", &good.headers).await;
    send(&mut s, r#"[{"ticket":"t"},{"type":"myAsset","codes":["KRW-BTC"]}]"#).await;
    assert_eq!(next_json(&mut s).await["error"]["name"], "WRONG_FORMAT", "myAsset takes no codes");
    send(&mut s, r#"[{"ticket":"t"},{"type":"myOrder","codes":["KRW-BTC"]},{"type":"myAsset"},{"format":"SIMPLE"}]"#).await;
    send(&mut s, "PING").await;
    assert_eq!(next_json(&mut s).await["status"], "UP");
    let body = r#"{"market":"KRW-BTC","side":"bid","price":"100000","ord_type":"price","identifier":"ws-1"}"#;
    let placed = call(&h, Exchange::Upbit, "POST", "/v1/orders", "", body, Some(&creds(Exchange::Upbit, true))).await;
    assert_eq!(placed.status, 201, "{}", placed.json);
    let trade = next_json(&mut s).await;
    assert_eq!(
        (trade["ty"].as_str(), trade["s"].as_str(), trade["id"].as_str()),
        (Some("myOrder"), Some("trade"), Some("ws-1")),
        "{trade}"
    );
    assert!(trade["tuid"].is_string() && trade["ab"] == "BID" && trade["ot"] == "price");
    let done = next_json(&mut s).await;
    assert_eq!(done["s"], "done", "{done}");
    let asset = next_json(&mut s).await;
    assert_eq!(asset["ty"], "myAsset", "{asset}");
    let currencies: Vec<&str> = asset["ast"].as_array().unwrap().iter().filter_map(|a| a["cu"].as_str()).collect();
    assert_eq!(currencies, ["BTC", "KRW"]);
}

#[tokio::test]
async fn bybit_private_stream_wants_a_signed_unexpired_login_before_subscribing() {
    let (h, _stop) = sim().await;
    let mut s = ws(&h, Exchange::Bybit, "/v5/private", &[]).await;
    send(&mut s, r#"{"op":"subscribe","args":["order"]}"#).await;
    let r = next_json(&mut s).await;
    assert_eq!((r["success"].as_bool(), r["ret_msg"].as_str()), (Some(false), Some("Request not authorized")), "{r}");
    let bad = stream_login(Exchange::Bybit, &creds(Exchange::Bybit, false));
    send(&mut s, bad.login.as_deref().unwrap()).await;
    let r = next_json(&mut s).await;
    assert_eq!((r["op"].as_str(), r["success"].as_bool()), (Some("auth"), Some(false)), "{r}");
    let c = creds(Exchange::Bybit, true);
    let expired =
        format!(r#"{{"op":"auth","args":["{}",1000,"00"]}}"#, SimConfig::shipped().account(Exchange::Bybit, "demo").unwrap().api_key);
    send(&mut s, &expired).await;
    assert!(next_json(&mut s).await["ret_msg"].as_str().unwrap().starts_with("Request expired"));
    send(&mut s, stream_login(Exchange::Bybit, &c).login.as_deref().unwrap()).await;
    assert_eq!(next_json(&mut s).await["success"], true);
    send(&mut s, r#"{"op":"subscribe","args":["order","execution","wallet"]}"#).await;
    assert_eq!(next_json(&mut s).await["success"], true);
    send(&mut s, r#"{"op":"ping"}"#).await;
    assert_eq!(next_json(&mut s).await["op"], "pong");
    let body = r#"{"category":"spot","symbol":"BTCUSDT","side":"Buy","orderType":"Market","qty":"0.01","orderLinkId":"ws-2"}"#;
    let placed = call(&h, Exchange::Bybit, "POST", "/v5/order/create", "", body, Some(&c)).await;
    assert_eq!(placed.json["retCode"], 0, "{}", placed.json);
    let topics: Vec<String> = [next_json(&mut s).await, next_json(&mut s).await, next_json(&mut s).await]
        .iter()
        .map(|m| m["topic"].as_str().unwrap_or("?").to_owned())
        .collect();
    assert_eq!(topics, ["execution", "order", "wallet"]);
}

#[tokio::test]
async fn instrument_rules_come_in_each_exchanges_shape() {
    let (h, _stop) = sim().await;
    let up = call(&h, Exchange::Upbit, "GET", "/v1/orderbook/instruments", "markets=KRW-BTC", "", None).await;
    assert_eq!((up.json[0]["market"].as_str(), up.json[0]["tick_size"].as_str()), (Some("KRW-BTC"), Some("1000")), "{}", up.json);
    let chance = call(&h, Exchange::Upbit, "GET", "/v1/orders/chance", "market=KRW-BTC", "", Some(&creds(Exchange::Upbit, true))).await;
    assert_eq!(chance.json["market"]["bid"]["min_total"], "5000", "{}", chance.json);
    let by = call(&h, Exchange::Bybit, "GET", "/v5/market/instruments-info", "category=spot&symbol=BTCUSDT", "", None).await;
    let i = &by.json["result"]["list"][0];
    assert_eq!((i["priceFilter"]["tickSize"].as_str(), i["lotSizeFilter"]["basePrecision"].as_str()), (Some("0.1"), Some("0.000001")));
    assert_eq!(i["lotSizeFilter"]["minOrderAmt"], "5");
    let lin = call(&h, Exchange::Bybit, "GET", "/v5/market/instruments-info", "category=linear&symbol=BTCUSDT", "", None).await;
    assert_eq!(lin.json["result"]["list"][0]["lotSizeFilter"]["qtyStep"], "0.000001", "{}", lin.json);
    let bn = call(&h, Exchange::Binance, "GET", "/api/v3/exchangeInfo", "symbol=BTCUSDT", "", None).await;
    let symbols = bn.json["symbols"].as_array().unwrap();
    assert_eq!(symbols.len(), 1);
    let filter = |t: &str| symbols[0]["filters"].as_array().unwrap().iter().find(|f| f["filterType"] == t).cloned().unwrap();
    assert_eq!(
        (filter("PRICE_FILTER")["tickSize"].as_str(), filter("NOTIONAL")["minNotional"].as_str()),
        (Some("0.10000000"), Some("5.00000000"))
    );
    assert_eq!(call(&h, Exchange::Binance, "GET", "/api/v3/exchangeInfo", "symbol=NOPE", "", None).await.json["code"], -1121);
    let okx = call(&h, Exchange::Okx, "GET", "/api/v5/public/instruments", "instType=SPOT&instId=BTC-USDT", "", None).await;
    assert_eq!((okx.json["data"][0]["tickSz"].as_str(), okx.json["data"][0]["lotSz"].as_str()), (Some("0.1"), Some("0.000001")));
    // Below the minimum value: the exchange's own refusal.
    let small = r#"{"market":"KRW-BTC","side":"bid","volume":"0.00001","price":"90000000","ord_type":"limit"}"#;
    let refused = call(&h, Exchange::Upbit, "POST", "/v1/orders", "", small, Some(&creds(Exchange::Upbit, true))).await;
    assert_eq!((refused.status, refused.json["error"]["name"].as_str()), (400, Some("under_min_total_bid")), "{}", refused.json);
}

#[tokio::test]
async fn bybit_lists_closed_orders_and_executions_and_faults_can_hide_an_executed_order() {
    let (h, _stop) = sim().await;
    h.pause_markets(true);
    let c = creds(Exchange::Bybit, true);
    let ask = h.book(Exchange::Bybit, "BTCUSDT").unwrap().1[0].0;
    let body = format!(
        r#"{{"category":"spot","symbol":"BTCUSDT","side":"Buy","orderType":"Limit","qty":"0.01","price":"{}","orderLinkId":"hist-1"}}"#,
        ask - Decimal::from(100)
    );
    let placed = call(&h, Exchange::Bybit, "POST", "/v5/order/create", "", &body, Some(&c)).await;
    assert_eq!(placed.json["retCode"], 0, "{}", placed.json);
    // Another trader's sell reaches it for 0.004 of its 0.01.
    assert!(h.print_trade(Exchange::Bybit, "BTCUSDT", ask - Decimal::from(100), "0.004".parse().unwrap()));
    let open = call(&h, Exchange::Bybit, "GET", "/v5/order/realtime", "category=spot&orderLinkId=hist-1", "", Some(&c)).await;
    assert_eq!(open.json["result"]["list"][0]["orderStatus"], "PartiallyFilled", "{}", open.json);
    let cancel = r#"{"category":"spot","symbol":"BTCUSDT","orderLinkId":"hist-1"}"#;
    assert_eq!(call(&h, Exchange::Bybit, "POST", "/v5/order/cancel", "", cancel, Some(&c)).await.json["retCode"], 0);
    let hist = call(&h, Exchange::Bybit, "GET", "/v5/order/history", "category=spot&orderLinkId=hist-1", "", Some(&c)).await;
    assert_eq!(hist.json["result"]["list"][0]["orderStatus"], "PartiallyFilledCanceled", "{}", hist.json);
    let execs = call(&h, Exchange::Bybit, "GET", "/v5/execution/list", "category=spot&orderLinkId=hist-1", "", Some(&c)).await;
    let list = execs.json["result"]["list"].as_array().unwrap();
    assert_eq!(list.len(), 1, "{}", execs.json);
    assert_eq!((list[0]["execQty"].as_str(), list[0]["isMaker"].as_bool()), (Some("0.004"), Some(true)));

    // Executed, then a 500: the order exists although the caller saw a failure.
    h.inject(Exchange::Bybit, Fault { kind: FaultKind::ExecutedThenServerError, count: 1, group: Some("create-spot".into()) });
    let hidden = body.replace("hist-1", "hidden-1");
    assert_eq!(call(&h, Exchange::Bybit, "POST", "/v5/order/create", "", &hidden, Some(&c)).await.status, 500);
    // Executed, answered late.
    h.inject(Exchange::Bybit, Fault { kind: FaultKind::SlowAnswer { ms: 400 }, count: 1, group: Some("create-spot".into()) });
    let started = std::time::Instant::now();
    let slow = body.replace("hist-1", "slow-1");
    assert_eq!(call(&h, Exchange::Bybit, "POST", "/v5/order/create", "", &slow, Some(&c)).await.json["retCode"], 0);
    assert!(started.elapsed() >= Duration::from_millis(400));
    let ids: Vec<Option<String>> = h.orders(Exchange::Bybit, "demo").into_iter().map(|o| o.client_id).collect();
    for id in ["hist-1", "hidden-1", "slow-1"] {
        assert_eq!(ids.iter().filter(|c| c.as_deref() == Some(id)).count(), 1, "{id} in {ids:?}");
    }
}

#[tokio::test]
async fn what_ccxt_asks_of_a_keyed_client_is_served_in_the_exchanges_shapes() {
    let (h, _stop) = sim().await;
    let by = Some(creds(Exchange::Bybit, true));
    let coins = call(&h, Exchange::Bybit, "GET", "/v5/asset/coin/query-info", "", "", by.as_ref()).await;
    let rows: Vec<&str> = coins.json["result"]["rows"].as_array().unwrap().iter().map(|r| r["coin"].as_str().unwrap()).collect();
    assert_eq!(rows, ["BTC", "ETH", "SOL", "USDT"], "{}", coins.json);
    let info = call(&h, Exchange::Bybit, "GET", "/v5/account/info", "", "", by.as_ref()).await;
    assert_eq!(info.json["result"]["unifiedMarginStatus"], 5);
    let api = call(&h, Exchange::Bybit, "GET", "/v5/user/query-api", "", "", by.as_ref()).await;
    assert_eq!(api.json["result"]["readOnly"], 0, "{}", api.json);
    let inverse = call(&h, Exchange::Bybit, "GET", "/v5/market/instruments-info", "category=inverse", "", None).await;
    assert_eq!(inverse.json["result"]["list"], serde_json::json!([]));
    let odd = call(&h, Exchange::Bybit, "GET", "/v5/market/instruments-info", "category=moon", "", None).await;
    assert_eq!(odd.json["retCode"], 10001);

    let ok = Some(creds(Exchange::Okx, true));
    let ccys = call(&h, Exchange::Okx, "GET", "/api/v5/asset/currencies", "", "", ok.as_ref()).await;
    assert_eq!(ccys.json["data"].as_array().unwrap().len(), 4, "{}", ccys.json);
    let futures = call(&h, Exchange::Okx, "GET", "/api/v5/public/instruments", "instType=FUTURES", "", None).await;
    assert_eq!((futures.json["code"].as_str(), futures.json["data"].as_array().map(Vec::len)), (Some("0"), Some(0)));
    let trades = call(&h, Exchange::Okx, "GET", "/api/v5/market/trades", "instId=BTC-USDT&limit=5", "", None).await;
    let n = trades.json["data"].as_array().unwrap().len();
    assert!((1..=5).contains(&n), "at most the limit, newest first: {}", trades.json);
    // A batch: one good order, one for an unknown instrument.
    let body = r#"[{"instId":"BTC-USDT","tdMode":"cash","side":"buy","ordType":"limit","px":"30000","sz":"0.001","clOrdId":"b1"},
                   {"instId":"NOPE-USDT","tdMode":"cash","side":"buy","ordType":"limit","px":"1","sz":"1","clOrdId":"b2"}]"#;
    let placed = call(&h, Exchange::Okx, "POST", "/api/v5/trade/batch-orders", "", body, ok.as_ref()).await;
    assert_eq!(placed.json["code"], "2", "{}", placed.json);
    assert_eq!((placed.json["data"][0]["sCode"].as_str(), placed.json["data"][1]["sCode"].as_str()), (Some("0"), Some("51001")));
    let fills = call(&h, Exchange::Okx, "GET", "/api/v5/trade/fills-history", "instType=SPOT", "", ok.as_ref()).await;
    assert_eq!(fills.json["code"], "0", "{}", fills.json);

    let bn = Some(creds(Exchange::Binance, true));
    let cfg = call(&h, Exchange::Binance, "GET", "/sapi/v1/capital/config/getall", "", "", bn.as_ref()).await;
    let usdt = cfg.json.as_array().unwrap().iter().find(|c| c["coin"] == "USDT").unwrap();
    assert_eq!(usdt["free"], "100000.00000000", "{usdt}");
    assert_eq!(usdt["networkList"][0]["network"], "USDT");
    let pairs = call(&h, Exchange::Binance, "GET", "/sapi/v1/margin/allPairs", "", "", bn.as_ref()).await;
    assert!(pairs.json.as_array().unwrap().iter().any(|p| p["symbol"] == "BTCUSDT" && p["id"].is_u64()), "{}", pairs.json);
    let fut = call(&h, Exchange::Binance, "GET", "/fapi/v1/exchangeInfo", "", "", None).await;
    assert_eq!(fut.json["symbols"], serde_json::json!([]));
    assert!(h.print_trade(Exchange::Binance, "BTCUSDT", "65000".parse().unwrap(), "0.01".parse().unwrap()));
    let agg = call(&h, Exchange::Binance, "GET", "/api/v3/aggTrades", "symbol=BTCUSDT&limit=3", "", None).await;
    assert!(agg.json[0]["a"].is_u64() && agg.json[0]["p"].is_string(), "{}", agg.json);
    assert_eq!(agg.headers["x-mbx-used-weight-1m"], "4", "aggTrades weighs 4 (and SAPI and futures calls weigh elsewhere)");
    // A test order is checked like an order and never placed.
    let body = |q: &str| format!("symbol=BTCUSDT&side=BUY&type=LIMIT&timeInForce=GTC&quantity={q}&price=50000&newClientOrderId=t-{q}");
    let good = call(&h, Exchange::Binance, "POST", "/api/v3/order/test", "", &body("0.001"), bn.as_ref()).await;
    assert_eq!((good.status, good.json.clone()), (200, serde_json::json!({})));
    let tiny = call(&h, Exchange::Binance, "POST", "/api/v3/order/test", "", &body("0.00001"), bn.as_ref()).await;
    assert_eq!(tiny.status, 400, "under the lot size: {}", tiny.json);
    assert!(
        h.orders(Exchange::Binance, "demo").iter().all(|o| !o.client_id.as_deref().unwrap_or("").starts_with("t-")),
        "nothing was placed"
    );
}
