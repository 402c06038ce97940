//! OKX v5 REST (`/api/v5`): the `{"code","msg","data"}` envelope with string codes,
//! base64 HMAC-SHA256 over ISO timestamp + METHOD + path?query + body with key,
//! passphrase and timestamp headers (30 s tolerance), per-endpoint limits (trading
//! per instrument), and HTTP 429 with code 50011 when exceeded.

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use std::collections::BTreeMap;

use rust_decimal::Decimal;
use serde_json::{Value, json};
use sluice_domain::{Exchange, Side};

use super::{Ctx, Endpoint, Keys, NonceLog, Params, Reply, SimRequest, Venue, dec, hmac_sha256, s, same};
use crate::accounts::{NewOrder, OrderError, OrderKey, OrderKind, OrderStatus, SimOrder, Tif};
use crate::config::Scope;
use crate::limits::{Charge, Usage};

pub(crate) struct Okx;

fn envelope(status: u16, code: &str, msg: &str, data: Value) -> Reply {
    Reply::json(status, &json!({ "code": code, "msg": msg, "data": data }))
}

fn ok(data: Value) -> Reply {
    envelope(200, "0", "", data)
}

fn auth_fail(code: &str, msg: &str) -> Reply {
    envelope(401, code, msg, json!([]))
}

fn state(o: &SimOrder) -> &'static str {
    match o.status {
        OrderStatus::Open if !o.filled.is_zero() => "partially_filled",
        OrderStatus::Open => "live",
        OrderStatus::Filled => "filled",
        OrderStatus::Canceled => "canceled",
    }
}

fn order_json(o: &SimOrder) -> Value {
    json!({
        "instType": "SPOT", "instId": o.native, "ordId": o.id, "clOrdId": o.client_id.clone().unwrap_or_default(), "tag": "",
        "px": o.price.map_or_else(String::new, |p| p.normalize().to_string()), "sz": s(o.qty),
        "ordType": if o.kind == OrderKind::Limit { "limit" } else { "market" },
        "side": if o.side == Side::Buy { "buy" } else { "sell" }, "tdMode": "cash", "state": state(o),
        "accFillSz": s(o.filled), "fillSz": s(o.filled), "avgPx": if o.filled.is_zero() { String::new() } else { o.avg_price().to_string() },
        "cTime": o.created_ms.to_string(), "uTime": o.updated_ms.to_string(),
    })
}

/// OKX's per-order code and message for a refused order.
fn op_code(e: &OrderError) -> (&'static str, &'static str) {
    match e {
        OrderError::UnknownSymbol(_) => ("51001", "Instrument ID does not exist"),
        OrderError::Duplicate(_) => ("51016", "Duplicated clOrdId"),
        OrderError::Insufficient { .. } => ("51008", "Order failed. Insufficient balance"),
        OrderError::InvalidQty(_) => ("51121", "Order quantity must be a multiple of the lot size"),
        OrderError::InvalidPrice(_) => ("51006", "Order price is not within the price limit"),
        OrderError::WouldTake => ("51021", "The post-only order would take liquidity"),
        OrderError::BelowMinNotional { .. } => ("51020", "Your order should meet or exceed the minimum order amount"),
        OrderError::NoLiquidity => ("51020", "Your order should meet or exceed the minimum order amount"),
        OrderError::NotFound => ("51603", "Order does not exist"),
        OrderError::NotOpen => ("51400", "Order cancellation failed as the order has been filled, canceled or does not exist"),
    }
}

fn item(ord_id: &str, cl: &str, now: u64, code: &str, msg: &str) -> Value {
    json!({ "ordId": ord_id, "clOrdId": cl, "tag": "", "ts": now.to_string(), "sCode": code, "sMsg": msg })
}

fn op_fail(e: &OrderError, ord_id: &str, cl: &str, now: u64) -> Reply {
    let (code, msg) = op_code(e);
    envelope(200, "1", "All operations failed", json!([item(ord_id, cl, now, code, msg)]))
}

/// Places one order of `POST /trade/order` or of a batch: its result item,
/// `Err` when refused.
fn place_one(ctx: &mut Ctx<'_>, p: &Params, now: u64) -> Result<Value, Value> {
    let cl = p.get("clOrdId").unwrap_or_default().to_owned();
    let bad = |msg: &str| item("", &cl, now, "51000", msg);
    let side = match p.get("side") {
        Some("buy") => Side::Buy,
        Some("sell") => Side::Sell,
        _ => return Err(bad("Parameter side error")),
    };
    let (kind, tif) = match p.get("ordType") {
        Some("limit") => (OrderKind::Limit, Tif::Gtc),
        Some("post_only") => (OrderKind::Limit, Tif::PostOnly),
        Some("ioc") => (OrderKind::Limit, Tif::Ioc),
        Some("fok") => (OrderKind::Limit, Tif::Fok),
        Some("market") => (OrderKind::Market, Tif::Gtc),
        _ => return Err(bad("Parameter ordType error")),
    };
    let (Ok(px), Ok(sz)) = (dec(p, "px"), dec(p, "sz")) else { return Err(bad("Parameter px or sz error")) };
    let Some(id) = p.get("instId").filter(|i| ctx.market.instrument(i).is_some()) else {
        return Err(item("", &cl, now, "51001", "Instrument ID does not exist"));
    };
    let ord_id = ctx.new_id().to_string();
    let order = NewOrder {
        native: id.to_owned(),
        side,
        kind,
        price: px,
        qty: sz,
        quote_qty: None,
        client_id: Some(cl.clone()).filter(|c| !c.is_empty()),
        tif,
    };
    let m = ctx.market;
    let Some(acct) = ctx.account.as_deref_mut() else { return Err(item("", &cl, now, "50111", "Invalid OK-ACCESS-KEY.")) };
    match acct.place(m, order, ord_id, now) {
        Ok(o) => Ok(item(&o.id, &o.client_id.unwrap_or_default(), now, "0", "Order placed")),
        Err(e) => {
            let (code, msg) = op_code(&e);
            Err(item("", &cl, now, code, msg))
        }
    }
}

/// The orders of a `batch-orders` body (a JSON array of objects, 1 to 20).
fn batch(p: &Params) -> Result<Vec<Params>, String> {
    let raw = p.get(BATCH).ok_or("the body must be a JSON array of orders")?;
    let list: Vec<serde_json::Map<String, Value>> = serde_json::from_str(raw).map_err(|e| format!("body: {e}"))?;
    if list.is_empty() || list.len() > 20 {
        return Err(format!("a batch holds 1 to 20 orders, not {}", list.len()));
    }
    Ok(list
        .into_iter()
        .map(|o| {
            let mut q = Params::default();
            for (k, v) in o {
                q.push(k, if let Value::String(s) = v { s } else { v.to_string() });
            }
            q
        })
        .collect())
}

/// Where a batch body is kept among the parameters.
const BATCH: &str = "\u{0}batch";

fn key(p: &Params) -> Option<OrderKey> {
    p.get("ordId")
        .filter(|v| !v.is_empty())
        .map(|v| OrderKey::Id(v.to_owned()))
        .or_else(|| p.get("clOrdId").filter(|v| !v.is_empty()).map(|v| OrderKey::Client(v.to_owned())))
}

impl Venue for Okx {
    fn exchange(&self) -> Exchange {
        Exchange::Okx
    }

    fn endpoint(&self, method: &str, path: &str) -> Option<Endpoint> {
        let e = |name, private| Some(Endpoint { name, private });
        match (method, path) {
            ("GET", "/api/v5/market/ticker") => e("ticker", false),
            ("GET", "/api/v5/market/books") => e("books", false),
            ("GET", "/api/v5/market/candles") => e("candles", false),
            ("GET", "/api/v5/public/time") => e("time", false),
            ("GET", "/api/v5/public/instruments") => e("instruments", false),
            ("GET", "/api/v5/account/balance") => e("balance", true),
            // ccxt's load_markets asks it of a keyed client.
            ("GET", "/api/v5/asset/currencies") => e("currencies", true),
            ("POST", "/api/v5/trade/order") => e("order", true),
            // ccxt places its orders here by default.
            ("POST", "/api/v5/trade/batch-orders") => e("batch_orders", true),
            ("GET", "/api/v5/market/trades") => e("trades", false),
            ("POST", "/api/v5/trade/cancel-order") => e("cancel", true),
            ("GET", "/api/v5/trade/order") => e("get_order", true),
            ("GET", "/api/v5/trade/orders-pending") => e("orders_pending", true),
            ("GET", "/api/v5/trade/fills") => e("fills", true),
            // The last three months of fills (ccxt's fetch_my_trades); all of them here.
            ("GET", "/api/v5/trade/fills-history") => e("fills_history", true),
            _ => None,
        }
    }

    fn params(&self, req: &SimRequest) -> Result<Params, Reply> {
        let mut p = Params::default();
        p.add_query(&req.query).map_err(|m| envelope(400, "50014", &m, json!([])))?;
        if req.body.trim_ascii_start().starts_with(b"[") {
            // batch-orders: an array, read by its handler.
            p.push(BATCH.to_owned(), String::from_utf8_lossy(&req.body).into_owned());
        } else {
            p.add_json(&req.body).map_err(|m| envelope(400, "50014", &m, json!([])))?;
        }
        Ok(p)
    }

    fn charges(&self, ep: Endpoint, params: &Params) -> Vec<Charge> {
        if ep.name == "batch_orders" {
            // Each order of a batch counts, per instrument (OKX: 300 orders / 2 s).
            let orders = batch(params).unwrap_or_default();
            let mut per: BTreeMap<String, u64> = BTreeMap::new();
            for o in &orders {
                *per.entry(o.get("instId").unwrap_or_default().to_owned()).or_default() += 1;
            }
            return per
                .into_iter()
                .map(|(inst, n)| Charge { group: "trade-batch-orders".into(), cost: n, partition: Some(inst) })
                .collect();
        }
        let group = match ep.name {
            "trades" => "market-trades",
            "ticker" => "market-ticker",
            "books" => "market-books",
            "candles" => "market-candles",
            "instruments" => "public-instruments",
            "balance" => "account-balance",
            "currencies" => "asset-currencies",
            "order" => "trade-order",
            "cancel" => "trade-cancel",
            "get_order" => "trade-get-order",
            "orders_pending" => "trade-orders-pending",
            "fills" => "trade-fills",
            "fills_history" => "trade-fills-history",
            _ => return vec![],
        };
        vec![Charge { group: group.into(), cost: 1, partition: params.get("instId").map(str::to_owned) }]
    }

    fn authenticate(&self, req: &SimRequest, _params: &Params, keys: &Keys, _nonces: &mut NonceLog) -> Result<String, Reply> {
        let api_key = req
            .header("ok-access-key")
            .filter(|k| !k.is_empty())
            .ok_or_else(|| auth_fail("50103", "Request header OK-ACCESS-KEY cannot be empty."))?;
        let ts = req
            .header("ok-access-timestamp")
            .filter(|t| !t.is_empty())
            .ok_or_else(|| auth_fail("50107", "Request header OK-ACCESS-TIMESTAMP cannot be empty."))?;
        let pass = req
            .header("ok-access-passphrase")
            .filter(|p| !p.is_empty())
            .ok_or_else(|| auth_fail("50104", "Request header OK-ACCESS-PASSPHRASE cannot be empty."))?;
        let sign = req
            .header("ok-access-sign")
            .filter(|p| !p.is_empty())
            .ok_or_else(|| auth_fail("50106", "Request header OK-ACCESS-SIGN cannot be empty."))?;
        let account = keys.get(api_key).ok_or_else(|| auth_fail("50111", "Invalid OK-ACCESS-KEY."))?;
        let parsed = time::OffsetDateTime::parse(ts, &time::format_description::well_known::Rfc3339)
            .map_err(|_| auth_fail("50112", "Invalid OK-ACCESS-TIMESTAMP."))?;
        let ts_ms = parsed.unix_timestamp_nanos() / 1_000_000;
        if (ts_ms - i128::from(req.now_ms)).abs() > 30_000 {
            return Err(auth_fail("50102", "Timestamp request expired."));
        }
        if account.passphrase.as_deref() != Some(pass) {
            return Err(auth_fail("50105", "Invalid OK-ACCESS-PASSPHRASE."));
        }
        let path = if req.query.is_empty() { req.path.clone() } else { format!("{}?{}", req.path, req.query) };
        let mut prehash = format!("{ts}{}{path}", req.method).into_bytes();
        prehash.extend_from_slice(&req.body);
        let expected = STANDARD.encode(hmac_sha256(&account.secret, &prehash));
        if !same(expected.as_bytes(), sign.as_bytes()) {
            return Err(auth_fail("50113", "Invalid Sign."));
        }
        Ok(account.name.clone())
    }

    fn handle(&self, ep: Endpoint, mut ctx: Ctx<'_>) -> Reply {
        let now = ctx.req.now_ms;
        let inst_id = ctx.params.get("instId");
        let inst = inst_id.and_then(|i| ctx.market.instrument(i));
        let unknown = || envelope(400, "51001", "Instrument ID does not exist", json!([]));
        match ep.name {
            "time" => ok(json!([{ "ts": now.to_string() }])),
            "ticker" => {
                let Some(i) = inst else { return unknown() };
                let (b, a) = (i.book.best_bid().unwrap_or_default(), i.book.best_ask().unwrap_or_default());
                ok(json!([{
                    "instType": "SPOT", "instId": i.native, "last": s(i.last_price()), "lastSz": s(i.trades.back().map_or(Decimal::ZERO, |t| t.qty)),
                    "askPx": s(a.0), "askSz": s(a.1), "bidPx": s(b.0), "bidSz": s(b.1), "open24h": s(i.day_open()), "high24h": s(i.day_high()),
                    "low24h": s(i.day_low()), "volCcy24h": s(i.day_quote_volume()), "vol24h": s(i.day_volume()), "ts": now.to_string(),
                    "sodUtc0": s(i.day_open()), "sodUtc8": s(i.day_open()),
                }]))
            }
            "books" => {
                let Some(i) = inst else { return unknown() };
                let n = ctx.params.get("sz").and_then(|v| v.parse::<usize>().ok()).unwrap_or(1).clamp(1, 400);
                let (bids, asks) = i.book.top(n);
                let side = |v: Vec<(Decimal, Decimal)>| v.into_iter().map(|(p, q)| json!([s(p), s(q), "0", "1"])).collect::<Vec<_>>();
                ok(json!([{ "asks": side(asks), "bids": side(bids), "ts": now.to_string() }]))
            }
            "candles" => {
                let Some(i) = inst else { return unknown() };
                let n = ctx.params.get("limit").and_then(|v| v.parse::<usize>().ok()).unwrap_or(100).clamp(1, 300);
                let last = i.candles.len().saturating_sub(1);
                let list: Vec<Value> = i
                    .candles
                    .iter()
                    .enumerate()
                    .rev()
                    .take(n)
                    .map(|(k, c)| {
                        json!([
                            c.open_ms.to_string(),
                            s(c.open),
                            s(c.high),
                            s(c.low),
                            s(c.close),
                            s(c.volume),
                            s(c.quote_volume),
                            s(c.quote_volume),
                            if k == last { "0" } else { "1" }
                        ])
                    })
                    .collect();
                ok(Value::Array(list))
            }
            "currencies" => {
                // Every currency the simulated markets trade, one chain each.
                let mut ccys = ctx.market.assets();
                if let Some(filter) = ctx.params.get("ccy") {
                    let wanted: Vec<&str> = filter.split(',').collect();
                    ccys.retain(|c| wanted.contains(&c.as_str()));
                }
                let data: Vec<Value> = ccys
                    .iter()
                    .map(|c| {
                        json!({ "ccy": c, "name": c, "logoLink": "", "chain": format!("{c}-{c}"), "canDep": true, "canWd": true,
                            "canInternal": true, "minDep": "0", "minWd": "0", "maxWd": "1000000", "wdTickSz": "8", "wdQuota": "10000000",
                            "usedWdQuota": "0", "fee": "0", "minFee": "0", "maxFee": "0", "mainNet": true, "needTag": false,
                            "minDepArrivalConfirm": "1", "minWdUnlockConfirm": "1", "depQuotaFixed": "", "usedDepQuotaFixed": "",
                            "depQuoteDailyLayer2": "", "minInternal": "0", "maxInternal": "1000000", "burningFeeRate": "", "ctAddr": "",
                            "depEstOpenTime": "", "wdEstOpenTime": "" })
                    })
                    .collect();
                ok(Value::Array(data))
            }
            "balance" => {
                let Some(acct) = ctx.account.as_deref() else { return auth_fail("50111", "Invalid OK-ACCESS-KEY.") };
                let filter: Option<Vec<&str>> = ctx.params.get("ccy").map(|c| c.split(',').collect());
                let details: Vec<Value> = acct
                    .balances
                    .iter()
                    .filter(|(c, _)| filter.as_ref().is_none_or(|f| f.contains(&c.as_str())))
                    .map(|(c, b)| json!({ "ccy": c, "eq": s(b.free + b.locked), "cashBal": s(b.free + b.locked), "availBal": s(b.free), "frozenBal": s(b.locked), "uTime": now.to_string() }))
                    .collect();
                ok(json!([{ "totalEq": "", "uTime": now.to_string(), "details": details }]))
            }
            "order" => {
                let p = ctx.params;
                if inst_id.is_none() {
                    return unknown();
                }
                match place_one(&mut ctx, p, now) {
                    Ok(it) => ok(json!([it])),
                    Err(it) => envelope(200, "1", "All operations failed", json!([it])),
                }
            }
            "batch_orders" => {
                let orders = match batch(ctx.params) {
                    Ok(o) => o,
                    Err(m) => return envelope(400, "50014", &m, json!([])),
                };
                let results: Vec<Result<Value, Value>> = orders.iter().map(|p| place_one(&mut ctx, p, now)).collect();
                let placed = results.iter().filter(|r| r.is_ok()).count();
                let items: Vec<Value> = results.into_iter().map(|r| r.unwrap_or_else(|e| e)).collect();
                match placed {
                    n if n == items.len() => ok(Value::Array(items)),
                    0 => envelope(200, "1", "All operations failed", Value::Array(items)),
                    _ => envelope(200, "2", "Batch operation partially succeeded", Value::Array(items)),
                }
            }
            "trades" => {
                let Some(i) = inst else { return unknown() };
                let n = ctx.params.get("limit").and_then(|l| l.parse::<usize>().ok()).unwrap_or(100).clamp(1, 500);
                let list: Vec<Value> = i
                    .trades
                    .iter()
                    .rev()
                    .take(n)
                    .map(|t| {
                        json!({ "instId": i.native, "tradeId": t.id.to_string(), "px": s(t.price), "sz": s(t.qty),
                            "side": if t.buyer_taker { "buy" } else { "sell" }, "source": "0", "ts": t.ts_ms.to_string() })
                    })
                    .collect();
                ok(Value::Array(list))
            }
            "cancel" => {
                let Some(k) = key(ctx.params) else {
                    return envelope(400, "50014", "Parameter ordId or clOrdId cannot be empty", json!([]));
                };
                let m = ctx.market;
                let Some(acct) = ctx.account.as_deref_mut() else { return auth_fail("50111", "Invalid OK-ACCESS-KEY.") };
                match acct.cancel(m, &k, now) {
                    Ok(o) => ok(
                        json!([{ "clOrdId": o.client_id.unwrap_or_default(), "ordId": o.id, "ts": now.to_string(), "sCode": "0", "sMsg": "" }]),
                    ),
                    Err(e) => op_fail(&e, "", "", now),
                }
            }
            "instruments" => {
                let kind = ctx.params.get("instType").unwrap_or("");
                match kind {
                    "SPOT" => {}
                    // Only spot is simulated: the other kinds exist and are empty
                    // (ccxt's load_markets asks for each).
                    "MARGIN" | "SWAP" | "FUTURES" | "OPTION" => return ok(json!([])),
                    _ => return envelope(400, "51000", "Parameter instType error", json!([])),
                }
                let only = ctx.params.get("instId");
                let list: Vec<Value> = ctx
                    .market
                    .instruments()
                    .filter(|i| only.is_none_or(|x| x == i.native))
                    .map(|i| {
                        json!({ "instType": "SPOT", "instId": i.native, "uly": "", "instFamily": "", "baseCcy": i.symbol.base.to_string(),
                                "quoteCcy": i.symbol.quote.to_string(), "settleCcy": "", "ctVal": "", "ctMult": "", "ctValCcy": "",
                                "listTime": "1548133413000", "expTime": "", "lever": "10", "tickSz": s(i.tick), "lotSz": s(i.lot),
                                "minSz": s(i.lot), "ctType": "", "state": "live", "ruleType": "normal", "maxLmtSz": "10000",
                                "maxMktSz": "1000000", "maxLmtAmt": "20000000", "maxMktAmt": "1000000", "maxTwapSz": "", "maxIcebergSz": "",
                                "maxTriggerSz": "", "maxStopSz": "" })
                    })
                    .collect();
                ok(Value::Array(list))
            }
            "orders_pending" => {
                let Some(acct) = ctx.account.as_deref() else { return auth_fail("50111", "Invalid OK-ACCESS-KEY.") };
                let only = ctx.params.get("instId");
                let list: Vec<Value> =
                    acct.orders().filter(|o| o.status == OrderStatus::Open && only.is_none_or(|i| i == o.native)).map(order_json).collect();
                ok(Value::Array(list))
            }
            "fills" | "fills_history" => {
                let Some(acct) = ctx.account.as_deref() else { return auth_fail("50111", "Invalid OK-ACCESS-KEY.") };
                let (inst, ord) = (ctx.params.get("instId"), ctx.params.get("ordId"));
                let mut list: Vec<(u64, Value)> = Vec::new();
                for o in acct.orders().filter(|o| inst.is_none_or(|i| i == o.native) && ord.is_none_or(|id| id == o.id)) {
                    for t in &o.trades {
                        let side = if o.side == Side::Buy { "buy" } else { "sell" };
                        list.push((
                            t.ts_ms,
                            json!({ "instType": "SPOT", "instId": o.native, "tradeId": super::numeric_trade_id(&t.id).to_string(),
                                    "ordId": o.id, "clOrdId": o.client_id.clone().unwrap_or_default(), "billId": super::numeric_trade_id(&t.id).to_string(),
                                    "tag": "", "fillPx": s(t.price), "fillSz": s(t.qty), "fillIdxPx": "", "fillPnl": "0", "side": side, "posSide": "net",
                                    "execType": if t.maker { "M" } else { "T" }, "feeCcy": "USDT", "fee": "0", "ts": t.ts_ms.to_string(),
                                    "fillTime": t.ts_ms.to_string() }),
                        ));
                    }
                }
                // Newest first, as OKX lists them.
                list.sort_by_key(|(t, _)| std::cmp::Reverse(*t));
                ok(Value::Array(list.into_iter().take(100).map(|(_, v)| v).collect()))
            }
            "get_order" => {
                let Some(acct) = ctx.account.as_deref() else { return auth_fail("50111", "Invalid OK-ACCESS-KEY.") };
                match key(ctx.params).and_then(|k| acct.get(&k)) {
                    Some(o) => ok(json!([order_json(o)])),
                    None => envelope(200, "51603", "Order does not exist", json!([])),
                }
            }
            _ => envelope(404, "404", "Not Found", json!([])),
        }
    }

    fn throttled(&self, _group: &str, _scope: Scope, _retry_after: Duration, _now_ms: u64) -> Reply {
        envelope(429, "50011", "Too Many Requests", json!([]))
    }

    fn banned(&self, _scope: Scope, _until_ms: u64, _now_ms: u64) -> Reply {
        envelope(429, "50011", "Too Many Requests", json!([]))
    }

    fn not_found(&self, _req: &SimRequest) -> Reply {
        envelope(404, "404", "Not Found", json!([]))
    }

    fn server_error(&self) -> Reply {
        envelope(500, "50001", "Service temporarily unavailable. Try again later", json!([]))
    }

    fn usage_headers(&self, _usage: &[Usage]) -> Vec<(String, String)> {
        Vec::new()
    }
}
