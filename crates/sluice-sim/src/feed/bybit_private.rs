//! Bybit v5 private WebSocket (`/v5/private`): first
//! `{"op":"auth","args":[api_key, expires_ms, hex(hmac_sha256(secret, "GET/realtime" + expires))]}`
//! (refused once `expires` has passed), then `{"op":"subscribe","args":["order",
//! "execution","wallet"]}` (a category suffix such as `order.spot` narrows it);
//! subscribing before logging in is refused. `{"op":"ping"}` is answered with an
//! `op: pong` message. Data: `{"id","topic","creationTime","data":[...]}`.

use std::collections::BTreeSet;

use serde_json::{Value, json};
use sluice_domain::Side;

use super::{AccountEvents, Cx, Protocol, Tick};
use crate::accounts::{AccountEvent, OrderKind, OrderStatus, SimOrder};
use crate::market::Market;
use crate::venues::{hmac_sha256, s, same};

/// The simulated accounts trade spot.
const CATEGORY: &str = "spot";

#[derive(Default)]
pub(crate) struct BybitPrivate {
    /// The account logged in as.
    account: Option<String>,
    topics: BTreeSet<&'static str>,
}

fn side(s: Side) -> &'static str {
    match s {
        Side::Buy => "Buy",
        Side::Sell => "Sell",
    }
}

fn order(o: &SimOrder) -> Value {
    let status = match o.status {
        OrderStatus::Open if o.filled.is_zero() => "New",
        OrderStatus::Open => "PartiallyFilled",
        OrderStatus::Filled => "Filled",
        OrderStatus::Canceled => "Cancelled",
    };
    json!({
        "category": CATEGORY, "symbol": o.native, "orderId": o.id, "orderLinkId": o.client_id.clone().unwrap_or_default(),
        "side": side(o.side), "orderType": if o.kind == OrderKind::Limit { "Limit" } else { "Market" },
        "price": o.price.map_or("0".to_owned(), |p| p.normalize().to_string()), "qty": s(o.qty), "orderStatus": status,
        "avgPrice": if o.filled.is_zero() { json!("") } else { s(o.avg_price()) },
        "cumExecQty": s(o.filled), "cumExecValue": s(o.filled_quote), "cumExecFee": "0",
        "leavesQty": s(if o.status == OrderStatus::Open { o.remaining() } else { rust_decimal::Decimal::ZERO }),
        "timeInForce": if o.kind == OrderKind::Limit { "GTC" } else { "IOC" },
        "createdTime": o.created_ms.to_string(), "updatedTime": o.updated_ms.to_string(),
    })
}

impl BybitPrivate {
    /// Checks an auth request; the account, or Bybit's reason.
    fn login(args: &[Value], cx: &Cx<'_>) -> Result<String, String> {
        let [key, expires, sig] = args else { return Err("Params Error: args must be [api_key, expires, signature]".into()) };
        let (Some(key), Some(sig)) = (key.as_str(), sig.as_str()) else { return Err("Params Error".into()) };
        let expires = expires.as_u64().or_else(|| expires.as_str().and_then(|e| e.parse().ok())).ok_or("Params Error: expires")?;
        let account = cx.keys.get(key).ok_or("Invalid apikey")?;
        if expires <= cx.now_ms {
            return Err(format!("Request expired: expires {expires} <= server time {}", cx.now_ms));
        }
        let want = hex::encode(hmac_sha256(&account.secret, format!("GET/realtime{expires}").as_bytes()));
        if !same(want.as_bytes(), sig.to_ascii_lowercase().as_bytes()) {
            return Err("Signature verification failed".into());
        }
        Ok(account.name.clone())
    }
}

impl Protocol for BybitPrivate {
    fn private(&self) -> bool {
        true
    }

    fn on_text(&mut self, text: &str, _market: &Market, cx: &mut Cx<'_>) {
        let conn = cx.conn_id.to_string();
        let Ok(req) = serde_json::from_str::<Value>(text) else {
            cx.bad_requests += 1;
            cx.json(&json!({ "success": false, "ret_msg": format!("error:invalid json, {text}"), "conn_id": conn, "op": "" }));
            return;
        };
        let req_id = req.get("req_id").cloned().unwrap_or(json!(""));
        let op = req.get("op").and_then(Value::as_str).unwrap_or("");
        let args: Vec<Value> = req.get("args").and_then(Value::as_array).cloned().unwrap_or_default();
        let answer = |cx: &mut Cx<'_>, r: Result<(), String>| {
            let (ok, msg) = match r {
                Ok(()) => (true, String::new()),
                Err(m) => {
                    cx.bad_requests += 1;
                    (false, m)
                }
            };
            cx.json(&json!({ "success": ok, "ret_msg": msg, "op": op, "conn_id": conn, "req_id": req_id }));
        };
        match op {
            "ping" => {
                cx.json(&json!({ "req_id": req_id, "op": "pong", "args": [cx.now_ms.to_string()], "conn_id": conn }));
            }
            "auth" if self.account.is_some() => answer(cx, Err("Repeat auth".into())),
            "auth" => {
                let r = Self::login(&args, cx).map(|name| self.account = Some(name));
                answer(cx, r);
            }
            "subscribe" | "unsubscribe" => {
                if self.account.is_none() {
                    return answer(cx, Err("Request not authorized".into()));
                }
                let mut topics = Vec::new();
                for a in &args {
                    // "order", or "order.spot": the simulated accounts only trade spot.
                    let t = match a.as_str().map(|t| t.split_once('.').map_or((t, None), |(t, c)| (t, Some(c)))) {
                        Some(("order", c)) if c.is_none_or(|c| c == CATEGORY) => "order",
                        Some(("execution", c)) if c.is_none_or(|c| c == CATEGORY) => "execution",
                        Some(("wallet", None)) => "wallet",
                        _ => return answer(cx, Err(format!("error:handler not found,topic:{a}"))),
                    };
                    topics.push(t);
                }
                if topics.is_empty() {
                    return answer(cx, Err("error:args is empty".into()));
                }
                for t in topics {
                    if op == "subscribe" {
                        self.topics.insert(t);
                    } else {
                        self.topics.remove(t);
                    }
                }
                answer(cx, Ok(()));
            }
            _ => answer(cx, Err(format!("error:unknown op {op}"))),
        }
    }

    fn on_account(&mut self, ev: &AccountEvents, cx: &mut Cx<'_>) {
        if self.account.as_deref() != Some(ev.account.as_str()) {
            return;
        }
        let ts = ev.ts_ms;
        let (mut orders, mut execs, mut wallet) = (Vec::new(), Vec::new(), Vec::new());
        for e in &ev.events {
            match e {
                AccountEvent::Order(o) => orders.push(order(o)),
                AccountEvent::Fill { order: o, trade_id, price, qty } => execs.push(json!({
                    "category": CATEGORY, "symbol": o.native, "execId": trade_id, "execPrice": s(*price), "execQty": s(*qty),
                    "execValue": s(*price * *qty), "execFee": "0", "feeRate": "0", "execType": "Trade", "isMaker": false,
                    "orderId": o.id, "orderLinkId": o.client_id.clone().unwrap_or_default(), "side": side(o.side),
                    "orderPrice": o.price.map_or("0".to_owned(), |p| p.normalize().to_string()), "orderQty": s(o.qty),
                    "orderType": if o.kind == OrderKind::Limit { "Limit" } else { "Market" },
                    "leavesQty": s(o.remaining()), "execTime": o.updated_ms.to_string(), "seq": o.updated_ms,
                })),
                AccountEvent::Balances(b) => wallet.extend(b.iter().map(
                    |(coin, b)| json!({ "coin": coin, "walletBalance": s(b.free + b.locked), "locked": s(b.locked), "free": s(b.free) }),
                )),
            }
        }
        let mut send = |topic: &'static str, data: Value| {
            if self.topics.contains(topic) {
                let id = format!("{}-{topic}-{ts}", cx.conn_id);
                cx.json(&json!({ "id": id, "topic": topic, "creationTime": ts, "data": data }));
            }
        };
        // Executions first, then the order they changed, then the wallet, as Bybit sends them.
        if !execs.is_empty() {
            send("execution", Value::Array(execs));
        }
        if !orders.is_empty() {
            send("order", Value::Array(orders));
        }
        if !wallet.is_empty() {
            send("wallet", json!([{ "accountType": "UNIFIED", "coin": wallet }]));
        }
    }

    fn on_tick(&mut self, _tick: &Tick, _cx: &mut Cx<'_>) {}

    fn book_symbols(&self) -> Vec<String> {
        Vec::new()
    }

    fn bad_trade(&self) -> String {
        json!({ "id": "x", "topic": "execution", "creationTime": 1,
                "data": [{ "category": "spot", "symbol": "BTCUSDT", "execId": "1", "execPrice": "not-a-price", "execQty": "1",
                           "orderId": "1", "side": "Buy", "execTime": "1" }] })
        .to_string()
    }
}
