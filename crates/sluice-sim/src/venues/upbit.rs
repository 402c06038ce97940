//! Upbit REST (`/v1`): quotation endpoints per IP, exchange endpoints per account
//! (pocket), JWT authentication (HS256 or HS512) with `query_hash`, numbers as JSON
//! numbers in quotation answers and strings in account answers, errors as
//! `{"error":{"name":…,"message":…}}`, and `Remaining-Req` on every answer.

use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use hmac::{Hmac, KeyInit, Mac};
use percent_encoding::percent_decode_str;
use rust_decimal::Decimal;
use serde_json::{Value, json};
use sha2::{Digest, Sha256, Sha512};
use sluice_domain::{Exchange, Side};

use super::{Ctx, Endpoint, Keys, NonceLog, Params, Reply, SimRequest, Venue, dec, iso_local, num, s, same};
use crate::accounts::{NewOrder, OrderError, OrderKey, OrderKind, OrderStatus, SimOrder, Tif};
use crate::config::Scope;
use crate::limits::{Charge, Usage};
use crate::market::Instrument;

pub(crate) struct Upbit {
    router: matchit::Router<Endpoint>,
}

const ROUTES: &[(&str, &str, &str, bool)] = &[
    ("GET", "/v1/market/all", "market", false),
    ("GET", "/v1/ticker", "ticker", false),
    ("GET", "/v1/ticker/all", "ticker_all", false),
    ("GET", "/v1/orderbook", "orderbook", false),
    ("GET", "/v1/orderbook/instruments", "orderbook_instruments", false),
    ("GET", "/v1/candles/minutes/{unit}", "candles_minutes", false),
    ("GET", "/v1/candles/days", "candles_days", false),
    ("GET", "/v1/trades/ticks", "trades", false),
    ("GET", "/v1/accounts", "accounts", true),
    ("GET", "/v1/orders/chance", "chance", true),
    ("GET", "/v1/order", "get_order", true),
    ("GET", "/v1/orders/open", "open_orders", true),
    ("POST", "/v1/orders", "create_order", true),
    ("POST", "/v1/orders/test", "test_order", true),
    ("DELETE", "/v1/order", "cancel_order", true),
    ("DELETE", "/v1/orders/open", "cancel_all", true),
];

impl Upbit {
    pub(crate) fn new() -> Self {
        let mut router = matchit::Router::new();
        for (m, p, name, private) in ROUTES {
            router.insert(format!("/{m}{p}"), Endpoint { name, private: *private }).expect("routes are distinct");
        }
        Upbit { router }
    }
}

fn error(status: u16, name: &str, message: &str) -> Reply {
    Reply::json(status, &json!({ "error": { "name": name, "message": message } }))
}

/// The string Upbit hashes: the unescaped query, or the JSON body's fields as a
/// query string (written independently of the dispatcher's signer on purpose).
fn param_string(req: &SimRequest) -> Result<String, String> {
    if req.body.iter().all(u8::is_ascii_whitespace) {
        return Ok(percent_decode_str(&req.query).decode_utf8_lossy().into_owned());
    }
    let v: Value = serde_json::from_slice(&req.body).map_err(|e| e.to_string())?;
    let obj = v.as_object().ok_or("body is not an object")?;
    let mut out = Vec::new();
    for (k, v) in obj {
        let items: Vec<&Value> = match v {
            Value::Array(a) => a.iter().collect(),
            Value::Null => vec![],
            other => vec![other],
        };
        for item in items {
            let text = match item {
                Value::String(s) => s.clone(),
                Value::Number(n) => n.to_string(),
                Value::Bool(b) => b.to_string(),
                _ => return Err(format!("field {k} is nested")),
            };
            out.push(format!("{k}={text}"));
        }
    }
    Ok(out.join("&"))
}

fn verify_jwt(token: &str, secret: &str) -> Result<Value, &'static str> {
    let mut parts = token.split('.');
    let (Some(h), Some(p), Some(sig), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
        return Err("token is not a JWT");
    };
    let header: Value = URL_SAFE_NO_PAD.decode(h).ok().and_then(|b| serde_json::from_slice(&b).ok()).ok_or("bad JWT header")?;
    let sig = URL_SAFE_NO_PAD.decode(sig).map_err(|_| "bad JWT signature encoding")?;
    let input = format!("{h}.{p}");
    let expected = match header.get("alg").and_then(Value::as_str) {
        Some("HS256") => {
            let mut m = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("any key");
            m.update(input.as_bytes());
            m.finalize().into_bytes().to_vec()
        }
        Some("HS512") => {
            let mut m = Hmac::<Sha512>::new_from_slice(secret.as_bytes()).expect("any key");
            m.update(input.as_bytes());
            m.finalize().into_bytes().to_vec()
        }
        _ => return Err("unsupported JWT algorithm"),
    };
    if !same(&expected, &sig) {
        return Err("JWT signature does not verify");
    }
    URL_SAFE_NO_PAD.decode(p).ok().and_then(|b| serde_json::from_slice(&b).ok()).ok_or("bad JWT payload")
}

fn markets<'a>(ctx: &'a Ctx<'_>, key: &str) -> Result<Vec<&'a Instrument>, Reply> {
    let list = ctx.params.get(key).ok_or_else(|| error(400, "validation_error", &format!("{key} is required")))?;
    list.split(',')
        .map(|m| ctx.market.instrument(m.trim()).ok_or_else(|| error(404, "not_found_market", &format!("Code not found: {}", m.trim()))))
        .collect()
}

fn change(inst: &Instrument) -> (&'static str, Decimal) {
    let d = inst.last_price() - inst.prev_close;
    (
        if d > Decimal::ZERO {
            "RISE"
        } else if d < Decimal::ZERO {
            "FALL"
        } else {
            "EVEN"
        },
        d,
    )
}

fn ticker(inst: &Instrument, now_ms: u64) -> Value {
    let (dir, d) = change(inst);
    let rate = if inst.prev_close.is_zero() { Decimal::ZERO } else { (d / inst.prev_close).round_dp(10) };
    let last_ts = inst.trades.back().map_or(now_ms, |t| t.ts_ms);
    json!({
        "market": inst.native,
        "trade_date": iso_local(last_ts, 0)[..10].replace('-', ""),
        "trade_time": iso_local(last_ts, 0)[11..].replace(':', ""),
        "trade_date_kst": iso_local(last_ts, 9)[..10].replace('-', ""),
        "trade_time_kst": iso_local(last_ts, 9)[11..].replace(':', ""),
        "trade_timestamp": last_ts,
        "opening_price": num(inst.day_open()),
        "high_price": num(inst.day_high()),
        "low_price": num(inst.day_low()),
        "trade_price": num(inst.last_price()),
        "prev_closing_price": num(inst.prev_close),
        "change": dir,
        "change_price": num(d.abs()),
        "change_rate": num(rate.abs()),
        "signed_change_price": num(d),
        "signed_change_rate": num(rate),
        "trade_volume": num(inst.trades.back().map_or(Decimal::ZERO, |t| t.qty)),
        "acc_trade_price": num(inst.day_quote_volume()),
        "acc_trade_price_24h": num(inst.day_quote_volume()),
        "acc_trade_volume": num(inst.day_volume()),
        "acc_trade_volume_24h": num(inst.day_volume()),
        "highest_52_week_price": num(inst.day_high()),
        "highest_52_week_date": iso_local(now_ms, 9)[..10],
        "lowest_52_week_price": num(inst.day_low()),
        "lowest_52_week_date": iso_local(now_ms, 9)[..10],
        "timestamp": now_ms,
    })
}

fn order_json(o: &SimOrder, market: &crate::market::Market) -> Value {
    let state = match o.status {
        OrderStatus::Open => "wait",
        OrderStatus::Filled => "done",
        OrderStatus::Canceled => "cancel",
    };
    let quote = market.instrument(&o.native).map(|i| i.symbol.quote.to_string()).unwrap_or_default();
    let locked = match (o.status, o.side) {
        (OrderStatus::Open, Side::Buy) => o.price.unwrap_or_default() * o.remaining(),
        (OrderStatus::Open, Side::Sell) => o.remaining(),
        _ => Decimal::ZERO,
    };
    let ord_type = match (o.kind, o.side) {
        (OrderKind::Limit, _) => "limit",
        (OrderKind::Market, Side::Buy) => "price",
        (OrderKind::Market, Side::Sell) => "market",
    };
    let mut v = json!({
        "uuid": o.id,
        "side": if o.side == Side::Buy { "bid" } else { "ask" },
        "ord_type": ord_type,
        "price": o.price.map(s),
        "state": state,
        "market": o.native,
        "created_at": format!("{}+09:00", iso_local(o.created_ms, 9)),
        "volume": s(o.qty),
        "remaining_volume": s(o.remaining()),
        "reserved_fee": "0",
        "remaining_fee": "0",
        "paid_fee": "0",
        "locked": s(locked),
        "executed_volume": s(o.filled),
        "executed_funds": s(o.filled_quote),
        "trades_count": o.trades.len(),
        "unit_currency": quote,
    });
    if let Some(c) = &o.client_id {
        v["identifier"] = json!(c);
    }
    v
}

fn order_error(e: OrderError, side: Side) -> Reply {
    let suffix = if side == Side::Buy { "bid" } else { "ask" };
    match e {
        OrderError::UnknownSymbol(m) => error(400, "validation_error", &format!("market {m} does not exist")),
        OrderError::Duplicate(c) => error(400, "validation_error", &format!("identifier {c} is already in use")),
        OrderError::Insufficient { .. } => error(400, &format!("insufficient_funds_{suffix}"), "매수/매도 가능 잔고가 부족합니다."),
        OrderError::InvalidQty(m) | OrderError::InvalidPrice(m) => error(400, &format!("create_{suffix}_error"), &m),
        OrderError::WouldTake => error(400, &format!("create_{suffix}_error"), "post_only order would be executed immediately"),
        OrderError::BelowMinNotional { min, .. } => {
            error(400, &format!("under_min_total_{suffix}"), &format!("최소주문금액 이상으로 주문해주세요 (minimum {min})"))
        }
        OrderError::NoLiquidity => error(400, &format!("create_{suffix}_error"), "no liquidity"),
        OrderError::NotFound => error(404, "order_not_found", "주문을 찾지 못했습니다."),
        OrderError::NotOpen => error(400, "order_not_open", "이미 체결되었거나 취소된 주문입니다."),
    }
}

fn order_key(p: &Params) -> Option<OrderKey> {
    p.get("uuid").map(|u| OrderKey::Id(u.to_owned())).or_else(|| p.get("identifier").map(|i| OrderKey::Client(i.to_owned())))
}

/// `POST /v1/orders`, or with `test` Upbit's `POST /v1/orders/test`: validated and
/// answered exactly like an order, in the order group's budget, but not placed.
fn create_order(mut ctx: Ctx<'_>, test: bool) -> Reply {
    let p = ctx.params;
    let side = match p.get("side") {
        Some("bid") => Side::Buy,
        Some("ask") => Side::Sell,
        _ => return error(400, "validation_error", "side must be bid or ask"),
    };
    let (price, volume) = match (dec(p, "price"), dec(p, "volume")) {
        (Ok(a), Ok(b)) => (a, b),
        (Err(e), _) | (_, Err(e)) => return error(400, "validation_error", &e),
    };
    let order = match p.get("ord_type") {
        Some("limit") => NewOrder {
            native: String::new(),
            side,
            kind: OrderKind::Limit,
            price,
            qty: volume,
            quote_qty: None,
            client_id: None,
            tif: Tif::Gtc,
        },
        Some("price") if side == Side::Buy => NewOrder {
            native: String::new(),
            side,
            kind: OrderKind::Market,
            price: None,
            qty: None,
            quote_qty: price,
            client_id: None,
            tif: Tif::Gtc,
        },
        Some("market") if side == Side::Sell => NewOrder {
            native: String::new(),
            side,
            kind: OrderKind::Market,
            price: None,
            qty: volume,
            quote_qty: None,
            client_id: None,
            tif: Tif::Gtc,
        },
        _ => return error(400, "validation_error", "ord_type must be limit, price (market bid) or market (market ask)"),
    };
    let Some(market) = p.get("market") else { return error(400, "validation_error", "market is required") };
    let tif = match p.get("time_in_force") {
        None | Some("") => Tif::Gtc,
        Some("ioc") => Tif::Ioc,
        Some("fok") => Tif::Fok,
        Some("post_only") => Tif::PostOnly,
        Some(other) => return error(400, "validation_error", &format!("time_in_force {other} must be ioc, fok or post_only")),
    };
    let order = NewOrder { native: market.to_owned(), client_id: p.get("identifier").map(str::to_owned), tif, ..order };
    let id = uuid::Uuid::new_v4().to_string();
    let now = ctx.req.now_ms;
    let m = ctx.market;
    let Some(acct) = ctx.account.as_deref_mut() else { return error(401, "jwt_verification", "no account") };
    let placed = if test { acct.clone().place(m, order, id, now) } else { acct.place(m, order, id, now) };
    match placed {
        Ok(o) => Reply::json(201, &order_json(&o, m)),
        Err(e) => order_error(e, side),
    }
}

impl Venue for Upbit {
    fn exchange(&self) -> Exchange {
        Exchange::Upbit
    }

    fn endpoint(&self, method: &str, path: &str) -> Option<Endpoint> {
        self.router.at(&format!("/{method}{path}")).ok().map(|m| *m.value)
    }

    fn params(&self, req: &SimRequest) -> Result<Params, Reply> {
        let mut p = Params::default();
        p.add_query(&req.query).map_err(|e| error(400, "validation_error", &e))?;
        p.add_json(&req.body).map_err(|e| error(400, "validation_error", &e))?;
        Ok(p)
    }

    fn charges(&self, ep: Endpoint, _params: &Params) -> Vec<Charge> {
        let group = match ep.name {
            "market" => "market",
            "ticker" | "ticker_all" => "ticker",
            "orderbook" | "orderbook_instruments" => "orderbook",
            "candles_minutes" | "candles_days" => "candle",
            "trades" => "trade",
            "create_order" | "test_order" => "order",
            "cancel_all" => "order-cancel-all",
            _ => "default",
        };
        vec![Charge { group: group.into(), cost: 1, partition: None }]
    }

    fn authenticate(&self, req: &SimRequest, _params: &Params, keys: &Keys, nonces: &mut NonceLog) -> Result<String, Reply> {
        let auth = req.header("authorization").ok_or_else(|| error(401, "jwt_verification", "Authorization header is missing"))?;
        let token = auth.strip_prefix("Bearer ").ok_or_else(|| error(401, "jwt_verification", "Authorization must be 'Bearer <JWT>'"))?;
        let unverified: Value = token
            .split('.')
            .nth(1)
            .and_then(|p| URL_SAFE_NO_PAD.decode(p).ok())
            .and_then(|b| serde_json::from_slice(&b).ok())
            .ok_or_else(|| error(401, "jwt_verification", "malformed JWT"))?;
        let access = unverified
            .get("access_key")
            .and_then(Value::as_str)
            .ok_or_else(|| error(401, "jwt_verification", "access_key claim missing"))?;
        let account = keys.get(access).ok_or_else(|| error(401, "invalid_access_key", "잘못된 엑세스 키입니다."))?;
        let claims = verify_jwt(token, &account.secret).map_err(|m| error(401, "jwt_verification", m))?;
        let nonce = claims.get("nonce").and_then(Value::as_str).ok_or_else(|| error(401, "jwt_verification", "nonce claim missing"))?;
        let params = param_string(req).map_err(|m| error(400, "validation_error", &m))?;
        if !params.is_empty() {
            let alg = claims.get("query_hash_alg").and_then(Value::as_str).unwrap_or("SHA512");
            let want = match alg {
                "SHA512" => hex::encode(Sha512::digest(params.as_bytes())),
                "SHA256" => hex::encode(Sha256::digest(params.as_bytes())),
                _ => return Err(error(401, "invalid_query_payload", "unsupported query_hash_alg")),
            };
            if claims.get("query_hash").and_then(Value::as_str) != Some(want.as_str()) {
                return Err(error(401, "invalid_query_payload", "query_hash does not match the request parameters"));
            }
        }
        if !nonces.fresh(&format!("{access}:{nonce}")) {
            return Err(error(401, "nonce_used", "이미 요청한 nonce값이 다시 사용되었습니다."));
        }
        Ok(account.name.clone())
    }

    fn handle(&self, ep: Endpoint, mut ctx: Ctx<'_>) -> Reply {
        let now = ctx.req.now_ms;
        match ep.name {
            "market" => {
                let list: Vec<Value> = ctx
                    .market
                    .instruments()
                    .map(|i| json!({ "market": i.native, "korean_name": i.symbol.base.to_string(), "english_name": i.symbol.base.to_string() }))
                    .collect();
                Reply::json(200, &Value::Array(list))
            }
            "ticker" => match markets(&ctx, "markets") {
                Ok(insts) => Reply::json(200, &Value::Array(insts.into_iter().map(|i| ticker(i, now)).collect())),
                Err(r) => r,
            },
            "ticker_all" => Reply::json(200, &Value::Array(ctx.market.instruments().map(|i| ticker(i, now)).collect())),
            "orderbook" => match markets(&ctx, "markets") {
                Ok(insts) => {
                    // `count` 1 to 30; Upbit answers its default 30 for anything
                    // else (its v1.5.8 notice: out-of-range values take the default).
                    let count =
                        ctx.params.get("count").and_then(|c| c.parse::<usize>().ok()).filter(|c| (1..=30).contains(c)).unwrap_or(30);
                    let books: Vec<Value> = insts
                        .into_iter()
                        .map(|i| {
                            let (bids, asks) = i.book.top(count);
                            let units: Vec<Value> = bids
                                .iter()
                                .zip(&asks)
                                .map(|(b, a)| json!({ "ask_price": num(a.0), "bid_price": num(b.0), "ask_size": num(a.1), "bid_size": num(b.1) }))
                                .collect();
                            json!({
                                "market": i.native,
                                "timestamp": now,
                                "total_ask_size": num(asks.iter().map(|l| l.1).sum()),
                                "total_bid_size": num(bids.iter().map(|l| l.1).sum()),
                                "orderbook_units": units,
                                "level": 0,
                            })
                        })
                        .collect();
                    Reply::json(200, &Value::Array(books))
                }
                Err(r) => r,
            },
            // Upbit's tick policy per market (its "호가 정책 조회", since v1.5.9).
            "orderbook_instruments" => match markets(&ctx, "markets") {
                Ok(insts) => {
                    let list: Vec<Value> = insts
                        .into_iter()
                        .map(|i| {
                            let levels: Vec<Value> = [0u32, 1, 10, 100].iter().map(|k| s(i.tick * Decimal::from(*k))).collect();
                            json!({ "market": i.native, "quote_currency": i.symbol.quote.to_string(), "tick_size": s(i.tick), "supported_levels": levels })
                        })
                        .collect();
                    Reply::json(200, &Value::Array(list))
                }
                Err(r) => r,
            },
            "candles_minutes" | "candles_days" => {
                let Some(inst) = ctx.params.get("market").and_then(|m| ctx.market.instrument(m)) else {
                    return error(404, "not_found_market", "Code not found");
                };
                let count = ctx.params.get("count").and_then(|c| c.parse::<usize>().ok()).unwrap_or(1).clamp(1, 200);
                let unit = ctx.req.path.rsplit('/').next().and_then(|u| u.parse::<u64>().ok()).unwrap_or(1);
                let list: Vec<Value> = inst
                    .candles
                    .iter()
                    .rev()
                    .take(count)
                    .map(|c| {
                        json!({
                            "market": inst.native,
                            "candle_date_time_utc": iso_local(c.open_ms, 0),
                            "candle_date_time_kst": iso_local(c.open_ms, 9),
                            "opening_price": num(c.open),
                            "high_price": num(c.high),
                            "low_price": num(c.low),
                            "trade_price": num(c.close),
                            "timestamp": c.open_ms + 59_999,
                            "candle_acc_trade_price": num(c.quote_volume),
                            "candle_acc_trade_volume": num(c.volume),
                            "unit": unit,
                        })
                    })
                    .collect();
                Reply::json(200, &Value::Array(list))
            }
            "trades" => {
                let Some(inst) = ctx.params.get("market").and_then(|m| ctx.market.instrument(m)) else {
                    return error(404, "not_found_market", "Code not found");
                };
                let count = ctx.params.get("count").and_then(|c| c.parse::<usize>().ok()).unwrap_or(1).clamp(1, 500);
                let list: Vec<Value> = inst
                    .trades
                    .iter()
                    .rev()
                    .take(count)
                    .map(|t| {
                        json!({
                            "market": inst.native,
                            "trade_date_utc": iso_local(t.ts_ms, 0)[..10],
                            "trade_time_utc": iso_local(t.ts_ms, 0)[11..],
                            "timestamp": t.ts_ms,
                            "trade_price": num(t.price),
                            "trade_volume": num(t.qty),
                            "prev_closing_price": num(inst.prev_close),
                            "change_price": num(t.price - inst.prev_close),
                            "ask_bid": if t.buyer_taker { "BID" } else { "ASK" },
                            "sequential_id": t.id,
                        })
                    })
                    .collect();
                Reply::json(200, &Value::Array(list))
            }
            "accounts" => {
                let Some(acct) = ctx.account.as_deref() else { return error(401, "jwt_verification", "no account") };
                let list: Vec<Value> = acct
                    .balances
                    .iter()
                    .map(|(asset, b)| {
                        json!({
                            "currency": asset,
                            "balance": s(b.free),
                            "locked": s(b.locked),
                            "avg_buy_price": "0",
                            "avg_buy_price_modified": false,
                            "unit_currency": "KRW",
                        })
                    })
                    .collect();
                Reply::json(200, &Value::Array(list))
            }
            "chance" => {
                let Some(inst) = ctx.params.get("market").and_then(|m| ctx.market.instrument(m)) else {
                    return error(400, "validation_error", "market is required");
                };
                let Some(acct) = ctx.account.as_deref() else { return error(401, "jwt_verification", "no account") };
                let bal = |a: &str| acct.balances.get(a).copied().unwrap_or_default();
                let (base, quote) = (inst.symbol.base.to_string(), inst.symbol.quote.to_string());
                let (bb, qb) = (bal(&base), bal(&quote));
                Reply::json(
                    200,
                    &json!({
                        "bid_fee": "0.0005",
                        "ask_fee": "0.0005",
                        "market": { "id": inst.native, "name": inst.symbol.to_string(), "order_types": ["limit"], "order_sides": ["ask", "bid"],
                                    "bid": { "currency": quote, "min_total": s(inst.min_notional) }, "ask": { "currency": base, "min_total": s(inst.min_notional) },
                                    "max_total": "1000000000", "state": "active" },
                        "bid_account": { "currency": quote, "balance": s(qb.free), "locked": s(qb.locked), "avg_buy_price": "0", "avg_buy_price_modified": false, "unit_currency": "KRW" },
                        "ask_account": { "currency": base, "balance": s(bb.free), "locked": s(bb.locked), "avg_buy_price": "0", "avg_buy_price_modified": false, "unit_currency": "KRW" },
                    }),
                )
            }
            "get_order" => {
                let Some(key) = order_key(ctx.params) else { return error(400, "validation_error", "uuid or identifier is required") };
                let Some(acct) = ctx.account.as_deref() else { return error(401, "jwt_verification", "no account") };
                match acct.get(&key) {
                    Some(o) => {
                        let mut v = order_json(o, ctx.market);
                        // Each execution, as Upbit lists them on a single order.
                        let side = if o.side == Side::Buy { "bid" } else { "ask" };
                        let trades: Vec<Value> = o
                            .trades
                            .iter()
                            .map(|t| {
                                json!({
                                    "market": o.native,
                                    "uuid": t.id,
                                    "price": s(t.price),
                                    "volume": s(t.qty),
                                    "funds": s(t.price * t.qty),
                                    "side": side,
                                    "created_at": format!("{}+09:00", iso_local(t.ts_ms, 9)),
                                })
                            })
                            .collect();
                        v["trades"] = Value::Array(trades);
                        Reply::json(200, &v)
                    }
                    None => order_error(OrderError::NotFound, Side::Buy),
                }
            }
            "open_orders" => {
                let Some(acct) = ctx.account.as_deref() else { return error(401, "jwt_verification", "no account") };
                let filter = ctx.params.get("market");
                let list: Vec<Value> = acct
                    .orders()
                    .filter(|o| o.status == OrderStatus::Open && filter.is_none_or(|m| m == o.native))
                    .map(|o| order_json(o, ctx.market))
                    .collect();
                Reply::json(200, &Value::Array(list))
            }
            "create_order" => create_order(ctx, false),
            "test_order" => create_order(ctx, true),
            "cancel_order" => {
                let Some(key) = order_key(ctx.params) else { return error(400, "validation_error", "uuid or identifier is required") };
                let m = ctx.market;
                let Some(acct) = ctx.account.as_deref_mut() else { return error(401, "jwt_verification", "no account") };
                // Upbit answers a cancel with the order as it stood when the cancel
                // was taken ("wait"); that it is cancelled shows on the private
                // stream and in the next query.
                let before = acct.get(&key).cloned();
                match (acct.cancel(m, &key, now), before) {
                    (Ok(_), Some(o)) => Reply::json(200, &order_json(&o, m)),
                    (Ok(o), None) => Reply::json(200, &order_json(&o, m)),
                    (Err(e), _) => order_error(e, Side::Buy),
                }
            }
            "cancel_all" => {
                let m = ctx.market;
                let Some(acct) = ctx.account.as_deref_mut() else { return error(401, "jwt_verification", "no account") };
                let open: Vec<String> = acct.orders().filter(|o| o.status == OrderStatus::Open).map(|o| o.id.clone()).collect();
                let mut done = Vec::new();
                for id in open {
                    if let Ok(o) = acct.cancel(m, &OrderKey::Id(id), now) {
                        done.push(json!({ "uuid": o.id, "market": o.native, "identifier": o.client_id }));
                    }
                }
                Reply::json(200, &json!({ "success": { "count": done.len(), "orders": done }, "failed": { "count": 0, "orders": [] } }))
            }
            other => error(404, "not_found", &format!("no handler for {other}")),
        }
    }

    fn throttled(&self, _group: &str, _scope: Scope, _retry_after: Duration, _now_ms: u64) -> Reply {
        error(429, "too_many_requests", "Too many API requests.")
    }

    fn banned(&self, _scope: Scope, until_ms: u64, now_ms: u64) -> Reply {
        let secs = until_ms.saturating_sub(now_ms).div_ceil(1000);
        error(418, "too_many_requests", &format!("과도한 요청으로 {secs}초 동안 요청이 차단되었습니다. (blocked for {secs} seconds)"))
            .with_header("retry-after", secs.to_string())
    }

    fn not_found(&self, req: &SimRequest) -> Reply {
        error(404, "not_found", &format!("{} {} does not exist", req.method, req.path))
    }

    fn server_error(&self) -> Reply {
        error(500, "server_error", "일시적인 오류가 발생했습니다.")
    }

    fn usage_headers(&self, usage: &[Usage]) -> Vec<(String, String)> {
        usage
            .iter()
            .find(|u| u.period == Duration::from_secs(1) || usage.len() == 1)
            .map(|u| vec![("remaining-req".to_owned(), format!("group={}; min=1800; sec={}", u.group, u.limit.saturating_sub(u.used)))])
            .unwrap_or_default()
    }
}
