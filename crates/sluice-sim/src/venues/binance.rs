//! Binance spot REST (`/api/v3`): request weights per endpoint and parameters, IP
//! weight in calendar minutes, order counts per account, `{"code","msg"}` errors,
//! HMAC-SHA256 `signature` over query + body with `timestamp`/`recvWindow`,
//! `X-MBX-USED-WEIGHT-1M` on every answer and `X-MBX-ORDER-COUNT-*` on orders,
//! `Retry-After` on 429 and 418.

use std::time::Duration;

use rust_decimal::Decimal;
use serde_json::{Value, json};
use sluice_domain::{Exchange, Side};

use super::{Ctx, Endpoint, Keys, NonceLog, Params, Reply, SimRequest, Venue, dec, fixed, hmac_sha256, same};
use crate::accounts::{NewOrder, OrderError, OrderKey, OrderKind, OrderStatus, SimOrder, Tif};
use crate::config::Scope;
use crate::limits::{Charge, Usage};
use crate::market::Instrument;

pub(crate) struct Binance;

fn err(status: u16, code: i64, msg: &str) -> Reply {
    Reply::json(status, &json!({ "code": code, "msg": msg }))
}

fn f8(d: Decimal) -> String {
    fixed(d, 8)
}

fn interval_suffix(period: Duration) -> String {
    let secs = period.as_secs();
    match secs {
        s if s % 86_400 == 0 => format!("{}D", s / 86_400),
        s if s % 3600 == 0 => format!("{}H", s / 3600),
        s if s % 60 == 0 => format!("{}M", s / 60),
        s => format!("{s}S"),
    }
}

fn ticker24(i: &Instrument, now: u64) -> Value {
    let (bid, ask) = (i.book.best_bid().unwrap_or_default(), i.book.best_ask().unwrap_or_default());
    let change = i.last_price() - i.prev_close;
    let pct = if i.prev_close.is_zero() { Decimal::ZERO } else { (change / i.prev_close * Decimal::ONE_HUNDRED).round_dp(3) };
    json!({
        "symbol": i.native, "priceChange": f8(change), "priceChangePercent": fixed(pct, 3),
        "weightedAvgPrice": f8(if i.day_volume().is_zero() { i.mid } else { i.day_quote_volume() / i.day_volume() }),
        "prevClosePrice": f8(i.prev_close), "lastPrice": f8(i.last_price()),
        "lastQty": f8(i.trades.back().map_or(Decimal::ZERO, |t| t.qty)),
        "bidPrice": f8(bid.0), "bidQty": f8(bid.1), "askPrice": f8(ask.0), "askQty": f8(ask.1),
        "openPrice": f8(i.day_open()), "highPrice": f8(i.day_high()), "lowPrice": f8(i.day_low()),
        "volume": f8(i.day_volume()), "quoteVolume": f8(i.day_quote_volume()),
        "openTime": now - 86_400_000, "closeTime": now,
        "firstId": i.trades.front().map_or(0, |t| t.id), "lastId": i.trades.back().map_or(0, |t| t.id),
        "count": i.trades.len(),
    })
}

fn status(o: &SimOrder) -> &'static str {
    match o.status {
        OrderStatus::Open if !o.filled.is_zero() => "PARTIALLY_FILLED",
        OrderStatus::Open => "NEW",
        OrderStatus::Filled => "FILLED",
        OrderStatus::Canceled if o.expired => "EXPIRED",
        OrderStatus::Canceled => "CANCELED",
    }
}

fn order_json(o: &SimOrder) -> Value {
    json!({
        "symbol": o.native,
        "orderId": o.id.parse::<u64>().unwrap_or_default(),
        "orderListId": -1,
        "clientOrderId": o.client_id.clone().unwrap_or_default(),
        "price": f8(o.price.unwrap_or_default()),
        "origQty": f8(o.qty),
        "executedQty": f8(o.filled),
        "cummulativeQuoteQty": f8(o.filled_quote),
        "status": status(o),
        "timeInForce": "GTC",
        "type": if o.kind == OrderKind::Limit { "LIMIT" } else { "MARKET" },
        "side": if o.side == Side::Buy { "BUY" } else { "SELL" },
        "stopPrice": f8(Decimal::ZERO),
        "icebergQty": f8(Decimal::ZERO),
        "time": o.created_ms,
        "updateTime": o.updated_ms,
        "isWorking": o.status == OrderStatus::Open,
        "workingTime": o.created_ms,
        "origQuoteOrderQty": f8(Decimal::ZERO),
        "selfTradePreventionMode": "NONE",
    })
}

fn order_error(e: &OrderError, cancel: bool) -> Reply {
    match e {
        OrderError::UnknownSymbol(_) => err(400, -1121, "Invalid symbol."),
        OrderError::Duplicate(_) => err(400, -2010, "Duplicate order sent."),
        OrderError::Insufficient { .. } => err(400, -2010, "Account has insufficient balance for requested action."),
        OrderError::InvalidQty(_) => err(400, -1013, "Filter failure: LOT_SIZE"),
        OrderError::InvalidPrice(_) => err(400, -1013, "Filter failure: PRICE_FILTER"),
        OrderError::BelowMinNotional { .. } => err(400, -1013, "Filter failure: NOTIONAL"),
        OrderError::WouldTake => err(400, -2010, "Order would immediately match and take."),
        OrderError::NoLiquidity => err(400, -2010, "Order would immediately match and take."),
        OrderError::NotFound | OrderError::NotOpen if cancel => err(400, -2011, "Unknown order sent."),
        OrderError::NotFound | OrderError::NotOpen => err(400, -2013, "Order does not exist."),
    }
}

fn order_key(p: &Params) -> Option<OrderKey> {
    p.get("orderId").map(|v| OrderKey::Id(v.to_owned())).or_else(|| p.get("origClientOrderId").map(|v| OrderKey::Client(v.to_owned())))
}

/// The request weight of an endpoint, from Binance's documentation.
fn weight(ep: &str, p: &Params) -> u64 {
    match ep {
        "ping" | "time" | "order_post" | "order_delete" | "open_orders_delete" => 1,
        "exchange_info" | "account" => 20,
        "order_test" if p.get("computeCommissionRates") == Some("true") => 20,
        "order_test" => 1,
        "depth" => match p.get("limit").and_then(|l| l.parse::<u64>().ok()).unwrap_or(100) {
            0..=100 => 5,
            101..=500 => 25,
            501..=1000 => 50,
            _ => 250,
        },
        "trades" => 25,
        "agg_trades" => 4,
        "klines" => 2,
        "ticker_24hr" => match (p.get("symbol"), p.get("symbols")) {
            (Some(_), _) => 2,
            (None, Some(list)) => match serde_json::from_str::<Vec<Value>>(list).map_or(usize::MAX, |v| v.len()) {
                0..=20 => 2,
                21..=100 => 40,
                _ => 80,
            },
            (None, None) => 80,
        },
        "ticker_price" | "book_ticker" => {
            if p.get("symbol").is_some() {
                2
            } else {
                4
            }
        }
        "order_get" => 4,
        "my_trades" => {
            if p.get("orderId").is_some() {
                5
            } else {
                20
            }
        }
        "open_orders" => {
            if p.get("symbol").is_some() {
                6
            } else {
                80
            }
        }
        _ => 1,
    }
}

impl Venue for Binance {
    fn exchange(&self) -> Exchange {
        Exchange::Binance
    }

    fn endpoint(&self, method: &str, path: &str) -> Option<Endpoint> {
        let e = |name, private| Some(Endpoint { name, private });
        match (method, path) {
            ("GET", "/api/v3/ping") => e("ping", false),
            ("GET", "/api/v3/time") => e("time", false),
            ("GET", "/api/v3/exchangeInfo") => e("exchange_info", false),
            ("GET", "/api/v3/depth") => e("depth", false),
            ("GET", "/api/v3/trades") => e("trades", false),
            ("GET", "/api/v3/aggTrades") => e("agg_trades", false),
            ("GET", "/api/v3/klines") => e("klines", false),
            ("GET", "/api/v3/ticker/24hr") => e("ticker_24hr", false),
            ("GET", "/api/v3/ticker/price") => e("ticker_price", false),
            ("GET", "/api/v3/ticker/bookTicker") => e("book_ticker", false),
            ("GET", "/api/v3/account") => e("account", true),
            // SAPI: ccxt's load_markets asks for the coins of a keyed client.
            ("GET", "/sapi/v1/capital/config/getall") => e("capital_config", true),
            ("GET", "/sapi/v1/margin/allPairs") => e("margin_pairs", true),
            ("GET", "/sapi/v1/margin/isolated/allPairs") => e("isolated_pairs", true),
            // Futures are not simulated; their exchange info exists and lists
            // nothing (ccxt's default load_markets asks for it, on the futures hosts).
            ("GET", "/fapi/v1/exchangeInfo") => e("futures_info", false),
            ("GET", "/dapi/v1/exchangeInfo") => e("futures_info", false),
            ("POST", "/api/v3/order") => e("order_post", true),
            // Checked like an order, never placed, not counted as one.
            ("POST", "/api/v3/order/test") => e("order_test", true),
            ("GET", "/api/v3/order") => e("order_get", true),
            ("DELETE", "/api/v3/order") => e("order_delete", true),
            ("GET", "/api/v3/openOrders") => e("open_orders", true),
            ("GET", "/api/v3/myTrades") => e("my_trades", true),
            ("DELETE", "/api/v3/openOrders") => e("open_orders_delete", true),
            _ => None,
        }
    }

    fn params(&self, req: &SimRequest) -> Result<Params, Reply> {
        let mut p = Params::default();
        p.add_query(&req.query).map_err(|m| err(400, -1100, &format!("Illegal characters found in a parameter: {m}")))?;
        let body = String::from_utf8_lossy(&req.body).into_owned();
        p.add_query(body.trim()).map_err(|m| err(400, -1100, &format!("Illegal characters found in a parameter: {m}")))?;
        Ok(p)
    }

    fn charges(&self, ep: Endpoint, params: &Params) -> Vec<Charge> {
        match ep.name {
            // SAPI weighs on its own per-IP budget (12,000 a minute).
            "capital_config" | "isolated_pairs" => return vec![Charge { group: "sapi-ip".into(), cost: 10, partition: None }],
            "margin_pairs" => return vec![Charge { group: "sapi-ip".into(), cost: 1, partition: None }],
            // The futures hosts have their own weight budgets.
            "futures_info" => return vec![Charge { group: "futures-weight".into(), cost: 1, partition: None }],
            _ => {}
        }
        let mut v = vec![Charge { group: "weight".into(), cost: weight(ep.name, params), partition: None }];
        if ep.name == "order_post" {
            v.push(Charge { group: "orders".into(), cost: 1, partition: None });
        }
        v
    }

    fn authenticate(&self, req: &SimRequest, params: &Params, keys: &Keys, _nonces: &mut NonceLog) -> Result<String, Reply> {
        let api_key = req.header("x-mbx-apikey").filter(|k| !k.is_empty()).ok_or_else(|| err(401, -2014, "API-key format invalid."))?;
        let account = keys.get(api_key).ok_or_else(|| err(401, -2015, "Invalid API-key, IP, or permissions for action."))?;
        let ts: u64 = params
            .get("timestamp")
            .and_then(|t| t.parse().ok())
            .ok_or_else(|| err(400, -1102, "Mandatory parameter 'timestamp' was not sent, was empty/null, or malformed."))?;
        let window: u64 = params.get("recvWindow").and_then(|w| w.parse().ok()).unwrap_or(5000);
        if window > 60_000 {
            return Err(err(400, -1131, "recvWindow must be less than 60000"));
        }
        if ts > req.now_ms + 1000 {
            return Err(err(400, -1021, "Timestamp for this request was 1000ms ahead of the server's time."));
        }
        if req.now_ms - ts > window {
            return Err(err(400, -1021, "Timestamp for this request is outside of the recvWindow."));
        }
        // The signed payload is the query (without the signature) followed by the body.
        let strip = |s: &str| -> (String, Option<String>) {
            let mut sig = None;
            let rest: Vec<&str> = s
                .split('&')
                .filter(|kv| match kv.strip_prefix("signature=") {
                    Some(v) => {
                        sig = Some(v.to_owned());
                        false
                    }
                    None => true,
                })
                .collect();
            (rest.join("&"), sig)
        };
        let (query, q_sig) = strip(&req.query);
        let body = String::from_utf8_lossy(&req.body).into_owned();
        let (body, b_sig) = strip(body.trim());
        let sig = q_sig
            .or(b_sig)
            .ok_or_else(|| err(400, -1102, "Mandatory parameter 'signature' was not sent, was empty/null, or malformed."))?;
        let expected = hex::encode(hmac_sha256(&account.secret, format!("{query}{body}").as_bytes()));
        if !same(expected.as_bytes(), sig.to_ascii_lowercase().as_bytes()) {
            return Err(err(400, -1022, "Signature for this request is not valid."));
        }
        Ok(account.name.clone())
    }

    fn handle(&self, ep: Endpoint, mut ctx: Ctx<'_>) -> Reply {
        let now = ctx.req.now_ms;
        let symbol = ctx.params.get("symbol");
        let inst = symbol.and_then(|s| ctx.market.instrument(s));
        let need_inst = || err(400, -1121, "Invalid symbol.");
        match ep.name {
            "ping" => Reply::json(200, &json!({})),
            "time" => Reply::json(200, &json!({ "serverTime": now })),
            "exchange_info" => {
                // `symbol=X` or `symbols=["X","Y"]` narrows the list; an unknown one is -1121.
                let wanted: Option<Vec<String>> = match (ctx.params.get("symbol"), ctx.params.get("symbols")) {
                    (Some(one), _) => Some(vec![one.to_owned()]),
                    (None, Some(list)) => match serde_json::from_str::<Vec<String>>(list) {
                        Ok(v) => Some(v),
                        Err(_) => return err(400, -1100, "Illegal characters found in parameter 'symbols'."),
                    },
                    (None, None) => None,
                };
                if let Some(w) = &wanted
                    && w.iter().any(|n| ctx.market.instrument(n).is_none())
                {
                    return err(400, -1121, "Invalid symbol.");
                }
                let symbols: Vec<Value> = ctx
                    .market
                    .instruments()
                    .filter(|i| wanted.as_ref().is_none_or(|w| w.contains(&i.native)))
                    .map(|i| {
                        json!({ "symbol": i.native, "status": "TRADING", "baseAsset": i.symbol.base.to_string(), "baseAssetPrecision": 8,
                                "quoteAsset": i.symbol.quote.to_string(), "quotePrecision": 8, "quoteAssetPrecision": 8,
                                "baseCommissionPrecision": 8, "quoteCommissionPrecision": 8,
                                "orderTypes": ["LIMIT", "LIMIT_MAKER", "MARKET", "STOP_LOSS_LIMIT", "TAKE_PROFIT_LIMIT"],
                                "icebergAllowed": true, "ocoAllowed": true, "otoAllowed": true, "quoteOrderQtyMarketAllowed": true,
                                "allowTrailingStop": true, "cancelReplaceAllowed": true, "isSpotTradingAllowed": true, "isMarginTradingAllowed": false,
                                "filters": [
                                    { "filterType": "PRICE_FILTER", "minPrice": f8(i.tick), "maxPrice": "1000000.00000000", "tickSize": f8(i.tick) },
                                    { "filterType": "LOT_SIZE", "minQty": f8(i.lot), "maxQty": "9000.00000000", "stepSize": f8(i.lot) },
                                    { "filterType": "NOTIONAL", "minNotional": f8(i.min_notional), "applyMinToMarket": true,
                                      "maxNotional": "9000000.00000000", "applyMaxToMarket": false, "avgPriceMins": 5 },
                                    { "filterType": "MARKET_LOT_SIZE", "minQty": "0.00000000", "maxQty": "100.00000000", "stepSize": "0.00000000" },
                                    { "filterType": "MAX_NUM_ORDERS", "maxNumOrders": 200 },
                                ],
                                "permissions": [], "permissionSets": [["SPOT"]], "defaultSelfTradePreventionMode": "EXPIRE_MAKER",
                                "allowedSelfTradePreventionModes": ["NONE", "EXPIRE_TAKER", "EXPIRE_MAKER", "EXPIRE_BOTH"] })
                    })
                    .collect();
                Reply::json(
                    200,
                    &json!({ "timezone": "UTC", "serverTime": now, "rateLimits": [
                    { "rateLimitType": "REQUEST_WEIGHT", "interval": "MINUTE", "intervalNum": 1, "limit": 6000 },
                    { "rateLimitType": "ORDERS", "interval": "SECOND", "intervalNum": 10, "limit": 100 },
                    { "rateLimitType": "ORDERS", "interval": "DAY", "intervalNum": 1, "limit": 200000 }], "symbols": symbols }),
                )
            }
            "depth" => {
                let Some(i) = inst else { return need_inst() };
                let n = ctx.params.get("limit").and_then(|l| l.parse::<usize>().ok()).unwrap_or(100).clamp(1, 5000);
                let (bids, asks) = i.book.top(n);
                let side = |v: Vec<(Decimal, Decimal)>| v.into_iter().map(|(p, q)| json!([f8(p), f8(q)])).collect::<Vec<_>>();
                Reply::json(200, &json!({ "lastUpdateId": i.book.update_id, "bids": side(bids), "asks": side(asks) }))
            }
            // Each simulated trade is its own aggregate (one taker order, one
            // price), so aggTrades lists the same trades in its own shape.
            "trades" | "agg_trades" => {
                let Some(i) = inst else { return need_inst() };
                let n = ctx.params.get("limit").and_then(|l| l.parse::<usize>().ok()).unwrap_or(500).clamp(1, 1000);
                // The newest `n`, oldest first.
                let list: Vec<Value> = i
                    .trades
                    .iter()
                    .skip(i.trades.len().saturating_sub(n))
                    .map(|t| {
                        if ep.name == "trades" {
                            json!({ "id": t.id, "price": f8(t.price), "qty": f8(t.qty), "quoteQty": f8(t.price * t.qty), "time": t.ts_ms, "isBuyerMaker": !t.buyer_taker, "isBestMatch": true })
                        } else {
                            json!({ "a": t.id, "p": f8(t.price), "q": f8(t.qty), "f": t.id, "l": t.id, "T": t.ts_ms, "m": !t.buyer_taker, "M": true })
                        }
                    })
                    .collect();
                Reply::json(200, &Value::Array(list))
            }
            "klines" => {
                let Some(i) = inst else { return need_inst() };
                let n = ctx.params.get("limit").and_then(|l| l.parse::<usize>().ok()).unwrap_or(500).clamp(1, 1000);
                let skip = i.candles.len().saturating_sub(n);
                let list: Vec<Value> = i
                    .candles
                    .iter()
                    .skip(skip)
                    .map(|c| {
                        json!([
                            c.open_ms,
                            f8(c.open),
                            f8(c.high),
                            f8(c.low),
                            f8(c.close),
                            f8(c.volume),
                            c.open_ms + 59_999,
                            f8(c.quote_volume),
                            c.trades,
                            f8(c.volume / Decimal::TWO),
                            f8(c.quote_volume / Decimal::TWO),
                            "0"
                        ])
                    })
                    .collect();
                Reply::json(200, &Value::Array(list))
            }
            "ticker_24hr" => match (symbol, ctx.params.get("symbols")) {
                (Some(_), _) => inst.map_or_else(need_inst, |i| Reply::json(200, &ticker24(i, now))),
                (None, Some(list)) => {
                    let Ok(names) = serde_json::from_str::<Vec<String>>(list) else {
                        return err(400, -1100, "Illegal characters found in parameter 'symbols'.");
                    };
                    let mut out = Vec::new();
                    for n in names {
                        match ctx.market.instrument(&n) {
                            Some(i) => out.push(ticker24(i, now)),
                            None => return need_inst(),
                        }
                    }
                    Reply::json(200, &Value::Array(out))
                }
                (None, None) => Reply::json(200, &Value::Array(ctx.market.instruments().map(|i| ticker24(i, now)).collect())),
            },
            "ticker_price" => match symbol {
                Some(_) => inst.map_or_else(need_inst, |i| Reply::json(200, &json!({ "symbol": i.native, "price": f8(i.last_price()) }))),
                None => Reply::json(
                    200,
                    &Value::Array(ctx.market.instruments().map(|i| json!({ "symbol": i.native, "price": f8(i.last_price()) })).collect()),
                ),
            },
            "book_ticker" => {
                let bt = |i: &Instrument| {
                    let (b, a) = (i.book.best_bid().unwrap_or_default(), i.book.best_ask().unwrap_or_default());
                    json!({ "symbol": i.native, "bidPrice": f8(b.0), "bidQty": f8(b.1), "askPrice": f8(a.0), "askQty": f8(a.1) })
                };
                match symbol {
                    Some(_) => inst.map_or_else(need_inst, |i| Reply::json(200, &bt(i))),
                    None => Reply::json(200, &Value::Array(ctx.market.instruments().map(bt).collect())),
                }
            }
            "margin_pairs" | "isolated_pairs" => {
                let list: Vec<Value> = ctx
                    .market
                    .instruments()
                    .enumerate()
                    .map(|(n, i)| {
                        let mut p = json!({ "symbol": i.native, "base": i.symbol.base.to_string(), "quote": i.symbol.quote.to_string(),
                            "isMarginTrade": true, "isBuyAllowed": true, "isSellAllowed": true });
                        if ep.name == "margin_pairs" {
                            p["id"] = json!(n as u64 + 1);
                        }
                        p
                    })
                    .collect();
                Reply::json(200, &Value::Array(list))
            }
            "futures_info" => Reply::json(
                200,
                &json!({ "timezone": "UTC", "serverTime": now, "futuresType": "U_MARGINED", "rateLimits": [], "exchangeFilters": [],
                    "assets": [], "symbols": [] }),
            ),
            "capital_config" => {
                let coins = ctx.market.assets();
                let balances = ctx.account.as_deref().map(|a| &a.balances);
                let list: Vec<Value> = coins
                    .iter()
                    .map(|c| {
                        let b = balances.and_then(|b| b.get(c)).copied().unwrap_or_default();
                        let network = json!({ "network": c, "coin": c, "name": c, "isDefault": true, "depositEnable": true,
                            "withdrawEnable": true, "withdrawFee": "0", "withdrawMin": "0", "withdrawMax": "9999999999",
                            "withdrawIntegerMultiple": "0.00000001", "minConfirm": 1, "unLockConfirm": 0, "busy": false,
                            "resetAddressStatus": false, "sameAddress": false, "specialTips": "", "depositDesc": "", "withdrawDesc": "" });
                        json!({ "coin": c, "name": c, "depositAllEnable": true, "withdrawAllEnable": true, "trading": true,
                            "isLegalMoney": false, "free": f8(b.free), "locked": f8(b.locked), "freeze": "0", "withdrawing": "0",
                            "ipoing": "0", "ipoable": "0", "storage": "0", "networkList": [network] })
                    })
                    .collect();
                Reply::json(200, &Value::Array(list))
            }
            "account" => {
                let Some(acct) = ctx.account.as_deref() else { return err(401, -2015, "Invalid API-key, IP, or permissions for action.") };
                let balances: Vec<Value> =
                    acct.balances.iter().map(|(a, b)| json!({ "asset": a, "free": f8(b.free), "locked": f8(b.locked) })).collect();
                Reply::json(
                    200,
                    &json!({
                        "makerCommission": 10, "takerCommission": 10, "buyerCommission": 0, "sellerCommission": 0,
                        "commissionRates": { "maker": "0.00100000", "taker": "0.00100000", "buyer": "0.00000000", "seller": "0.00000000" },
                        "canTrade": true, "canWithdraw": true, "canDeposit": true, "brokered": false, "requireSelfTradePrevention": false,
                        "preventSor": false, "updateTime": now, "accountType": "SPOT", "balances": balances, "permissions": ["SPOT"], "uid": 1_000_001,
                    }),
                )
            }
            "order_post" | "order_test" => {
                let p = ctx.params;
                let side = match p.get("side") {
                    Some("BUY") => Side::Buy,
                    Some("SELL") => Side::Sell,
                    _ => return err(400, -1102, "Mandatory parameter 'side' was not sent, was empty/null, or malformed."),
                };
                let (kind, maker) = match p.get("type") {
                    Some("LIMIT") => (OrderKind::Limit, false),
                    Some("LIMIT_MAKER") => (OrderKind::Limit, true),
                    Some("MARKET") => (OrderKind::Market, false),
                    _ => return err(400, -1116, "Invalid orderType."),
                };
                let tif = match (maker, p.get("timeInForce")) {
                    (true, None) => Tif::PostOnly,
                    (true, Some(_)) => return err(400, -1106, "Parameter 'timeInForce' sent when not required."),
                    (false, None | Some("GTC")) => Tif::Gtc,
                    (false, Some("IOC")) => Tif::Ioc,
                    (false, Some("FOK")) => Tif::Fok,
                    (false, Some(_)) => return err(400, -1115, "Invalid timeInForce."),
                };
                let (price, qty, quote_qty) = match (dec(p, "price"), dec(p, "quantity"), dec(p, "quoteOrderQty")) {
                    (Ok(a), Ok(b), Ok(c)) => (a, b, c),
                    _ => return err(400, -1100, "Illegal characters found in a parameter."),
                };
                if kind == OrderKind::Limit && (price.is_none() || (!maker && p.get("timeInForce").is_none())) {
                    return err(400, -1102, "Mandatory parameter 'price' or 'timeInForce' was not sent, was empty/null, or malformed.");
                }
                let Some(sym) = symbol else {
                    return err(400, -1102, "Mandatory parameter 'symbol' was not sent, was empty/null, or malformed.");
                };
                let id = ctx.new_id().to_string();
                let client = p.get("newClientOrderId").map(str::to_owned).unwrap_or_else(|| format!("sim{id}"));
                let order = NewOrder { native: sym.to_owned(), side, kind, price, qty, quote_qty, client_id: Some(client), tif };
                let m = ctx.market;
                let Some(acct) = ctx.account.as_deref_mut() else {
                    return err(401, -2015, "Invalid API-key, IP, or permissions for action.");
                };
                if ep.name == "order_test" {
                    // Every check of a real order, on a copy of the account.
                    return match acct.clone().place(m, order, id, now) {
                        Ok(_) => Reply::json(200, &json!({})),
                        Err(e) => order_error(&e, false),
                    };
                }
                match acct.place(m, order, id, now) {
                    Ok(o) => {
                        let mut v = order_json(&o);
                        v["transactTime"] = json!(now);
                        v["fills"] = if o.filled.is_zero() {
                            json!([])
                        } else {
                            json!([{ "price": f8(o.avg_price()), "qty": f8(o.filled), "commission": f8(Decimal::ZERO), "commissionAsset": "BNB", "tradeId": o.id.parse::<u64>().unwrap_or_default() }])
                        };
                        Reply::json(200, &v)
                    }
                    Err(e) => order_error(&e, false),
                }
            }
            "order_get" => {
                let Some(acct) = ctx.account.as_deref() else { return err(401, -2015, "Invalid API-key, IP, or permissions for action.") };
                match order_key(ctx.params).and_then(|k| acct.get(&k)) {
                    Some(o) => Reply::json(200, &order_json(o)),
                    None => order_error(&OrderError::NotFound, false),
                }
            }
            "order_delete" => {
                let Some(k) = order_key(ctx.params) else {
                    return err(400, -1102, "Param 'origClientOrderId' or 'orderId' must be sent, but both were empty/null!");
                };
                let m = ctx.market;
                let Some(acct) = ctx.account.as_deref_mut() else {
                    return err(401, -2015, "Invalid API-key, IP, or permissions for action.");
                };
                match acct.cancel(m, &k, now) {
                    Ok(o) => {
                        let mut v = order_json(&o);
                        v["origClientOrderId"] = json!(o.client_id);
                        v["transactTime"] = json!(now);
                        Reply::json(200, &v)
                    }
                    Err(e) => order_error(&e, true),
                }
            }
            "my_trades" => {
                let Some(acct) = ctx.account.as_deref() else { return err(401, -2015, "Invalid API-key, IP, or permissions for action.") };
                let Some(sym) = symbol else {
                    return err(400, -1102, "Mandatory parameter 'symbol' was not sent, was empty/null, or malformed.");
                };
                let only = ctx.params.get("orderId");
                let mut list: Vec<(u64, Value)> = Vec::new();
                for o in acct.orders().filter(|o| o.native == sym && only.is_none_or(|id| id == o.id)) {
                    for t in &o.trades {
                        list.push((
                            t.ts_ms,
                            json!({ "symbol": o.native, "id": super::numeric_trade_id(&t.id), "orderId": o.id.parse::<u64>().unwrap_or_default(),
                                    "orderListId": -1, "price": f8(t.price), "qty": f8(t.qty), "quoteQty": f8(t.price * t.qty),
                                    "commission": f8(Decimal::ZERO), "commissionAsset": "BNB", "time": t.ts_ms,
                                    "isBuyer": o.side == Side::Buy, "isMaker": t.maker, "isBestMatch": true }),
                        ));
                    }
                }
                list.sort_by_key(|(t, _)| *t);
                let n = ctx.params.get("limit").and_then(|l| l.parse::<usize>().ok()).unwrap_or(500).clamp(1, 1000);
                let skip = list.len().saturating_sub(n);
                Reply::json(200, &Value::Array(list.into_iter().skip(skip).map(|(_, v)| v).collect()))
            }
            "open_orders" => {
                let Some(acct) = ctx.account.as_deref() else { return err(401, -2015, "Invalid API-key, IP, or permissions for action.") };
                let list: Vec<Value> = acct
                    .orders()
                    .filter(|o| o.status == OrderStatus::Open && symbol.is_none_or(|s| s == o.native))
                    .map(order_json)
                    .collect();
                Reply::json(200, &Value::Array(list))
            }
            "open_orders_delete" => {
                let m = ctx.market;
                let Some(acct) = ctx.account.as_deref_mut() else {
                    return err(401, -2015, "Invalid API-key, IP, or permissions for action.");
                };
                let ids: Vec<String> = acct
                    .orders()
                    .filter(|o| o.status == OrderStatus::Open && symbol.is_none_or(|s| s == o.native))
                    .map(|o| o.id.clone())
                    .collect();
                let done: Vec<Value> =
                    ids.into_iter().filter_map(|id| acct.cancel(m, &OrderKey::Id(id), now).ok()).map(|o| order_json(&o)).collect();
                Reply::json(200, &Value::Array(done))
            }
            _ => err(404, -1000, "An unknown error occurred while processing the request."),
        }
    }

    fn throttled(&self, group: &str, _scope: Scope, retry_after: Duration, _now_ms: u64) -> Reply {
        let secs = retry_after.as_millis().div_ceil(1000).max(1);
        let r = if group == "orders" {
            err(429, -1015, "Too many new orders; current limit is 100 orders per 10 SECOND.")
        } else {
            err(
                429,
                -1003,
                "Too much request weight used; current limit is 6000 request weight per 1 MINUTE. Please use WebSocket Streams for live updates to avoid polling the API.",
            )
        };
        r.with_header("retry-after", secs.to_string())
    }

    fn banned(&self, _scope: Scope, until_ms: u64, now_ms: u64) -> Reply {
        let secs = until_ms.saturating_sub(now_ms).div_ceil(1000).max(1);
        err(
            418,
            -1003,
            &format!(
                "Way too much request weight used; IP banned until {until_ms}. Please use WebSocket Streams for live updates to avoid bans."
            ),
        )
        .with_header("retry-after", secs.to_string())
    }

    fn not_found(&self, _req: &SimRequest) -> Reply {
        Reply::text(404, "<html><body><h2>404 Not found</h2></body></html>")
    }

    fn server_error(&self) -> Reply {
        err(500, -1000, "An unknown error occurred while processing the request.")
    }

    fn usage_headers(&self, usage: &[Usage]) -> Vec<(String, String)> {
        usage
            .iter()
            .map(|u| {
                let prefix = if u.group == "orders" { "x-mbx-order-count-" } else { "x-mbx-used-weight-" };
                (format!("{prefix}{}", interval_suffix(u.period).to_ascii_lowercase()), u.used.to_string())
            })
            .collect()
    }
}
