//! Bybit v5 REST: the `{"retCode","retMsg","result","retExtInfo","time"}` envelope,
//! HMAC-SHA256 signatures over timestamp + key + recv window + payload, per-IP limit
//! answered with HTTP 403 and a ban, per-account limits answered with HTTP 200 and
//! `retCode` 10006, and `X-Bapi-Limit*` headers on account endpoints.

use std::time::Duration;

use rust_decimal::Decimal;
use serde_json::{Value, json};
use sluice_domain::{Exchange, Side};

use super::{Ctx, Endpoint, Keys, NonceLog, Params, Reply, SimRequest, Venue, dec, hmac_sha256, s, same};
use crate::accounts::{NewOrder, OrderError, OrderKey, OrderKind, OrderStatus, SimOrder, Tif};
use crate::config::Scope;
use crate::limits::{Charge, Usage};

pub(crate) struct Bybit;

fn envelope(code: i64, msg: &str, result: Value, now_ms: u64) -> Value {
    json!({ "retCode": code, "retMsg": msg, "result": result, "retExtInfo": {}, "time": now_ms })
}

fn ok(result: Value, now_ms: u64) -> Reply {
    Reply::json(200, &envelope(0, "OK", result, now_ms))
}

fn fail(code: i64, msg: &str, now_ms: u64) -> Reply {
    Reply::json(200, &envelope(code, msg, json!({}), now_ms))
}

fn status(o: &SimOrder, category: &str) -> &'static str {
    let part = !o.filled.is_zero();
    match o.status {
        OrderStatus::Open if part => "PartiallyFilled",
        OrderStatus::Open => "New",
        OrderStatus::Filled => "Filled",
        // Spot names a cancel after fills apart; derivatives say Cancelled.
        OrderStatus::Canceled if part && category == "spot" => "PartiallyFilledCanceled",
        OrderStatus::Canceled => "Cancelled",
    }
}

fn order_json(o: &SimOrder, category: &str) -> Value {
    json!({
        "orderId": o.id,
        "orderLinkId": o.client_id.clone().unwrap_or_default(),
        "symbol": o.native,
        "price": o.price.map_or_else(|| "0".to_owned(), |p| p.normalize().to_string()),
        "qty": s(o.qty),
        "side": if o.side == Side::Buy { "Buy" } else { "Sell" },
        "orderStatus": status(o, category),
        "orderType": if o.kind == OrderKind::Limit { "Limit" } else { "Market" },
        "timeInForce": "GTC",
        "avgPrice": s(o.avg_price()),
        "cumExecQty": s(o.filled),
        "cumExecValue": s(o.filled_quote),
        "cumExecFee": "0",
        "leavesQty": s(if o.status == OrderStatus::Open { o.remaining() } else { Decimal::ZERO }),
        "createdTime": o.created_ms.to_string(),
        "updatedTime": o.updated_ms.to_string(),
        "category": category,
    })
}

fn order_error(e: &OrderError, now_ms: u64) -> Reply {
    match e {
        OrderError::UnknownSymbol(_) => fail(10001, "params error: symbol invalid", now_ms),
        OrderError::Duplicate(_) => fail(110072, "OrderLinkedID is duplicate", now_ms),
        OrderError::Insufficient { .. } => fail(170131, "Insufficient balance.", now_ms),
        OrderError::InvalidQty(m) | OrderError::InvalidPrice(m) => fail(170136, m, now_ms),
        OrderError::WouldTake => fail(170218, "The PostOnly order would take liquidity and was cancelled.", now_ms),
        OrderError::BelowMinNotional { .. } => fail(170140, "Order value exceeded lower limit.", now_ms),
        OrderError::NoLiquidity => fail(170140, "Order value exceeded lower limit.", now_ms),
        OrderError::NotFound | OrderError::NotOpen => fail(170213, "Order does not exist.", now_ms),
    }
}

fn key(p: &Params) -> Option<OrderKey> {
    p.get("orderId")
        .filter(|v| !v.is_empty())
        .map(|v| OrderKey::Id(v.to_owned()))
        .or_else(|| p.get("orderLinkId").filter(|v| !v.is_empty()).map(|v| OrderKey::Client(v.to_owned())))
}

impl Venue for Bybit {
    fn exchange(&self) -> Exchange {
        Exchange::Bybit
    }

    fn endpoint(&self, method: &str, path: &str) -> Option<Endpoint> {
        let e = |name, private| Some(Endpoint { name, private });
        match (method, path) {
            ("GET", "/v5/market/tickers") => e("tickers", false),
            ("GET", "/v5/market/orderbook") => e("orderbook", false),
            ("GET", "/v5/market/kline") => e("kline", false),
            ("GET", "/v5/market/recent-trade") => e("recent_trade", false),
            ("GET", "/v5/market/time") => e("time", false),
            ("GET", "/v5/market/instruments-info") => e("instruments_info", false),
            ("GET", "/v5/order/history") => e("order_history", true),
            ("GET", "/v5/execution/list") => e("execution_list", true),
            ("GET", "/v5/account/wallet-balance") => e("wallet_balance", true),
            // What ccxt's load_markets and create_order ask of a keyed client.
            ("GET", "/v5/asset/coin/query-info") => e("coin_query_info", true),
            ("GET", "/v5/user/query-api") => e("query_api", true),
            ("GET", "/v5/account/info") => e("account_info", true),
            ("GET", "/v5/order/realtime") => e("order_realtime", true),
            ("POST", "/v5/order/create") => e("create", true),
            ("POST", "/v5/order/cancel") => e("cancel", true),
            _ => None,
        }
    }

    fn params(&self, req: &SimRequest) -> Result<Params, Reply> {
        let mut p = Params::default();
        p.add_query(&req.query).map_err(|m| fail(10001, &m, req.now_ms))?;
        p.add_json(&req.body).map_err(|m| fail(10001, &m, req.now_ms))?;
        Ok(p)
    }

    fn charges(&self, ep: Endpoint, params: &Params) -> Vec<Charge> {
        let mut v = vec![Charge { group: "ip".into(), cost: 1, partition: None }];
        let category = params.get("category").unwrap_or("spot");
        let account = match ep.name {
            "wallet_balance" => Some("wallet-balance".to_owned()),
            "order_realtime" => Some("order-realtime".to_owned()),
            "order_history" => Some("order-history".to_owned()),
            "execution_list" => Some("execution-list".to_owned()),
            "create" => Some(format!("create-{category}")),
            "cancel" => Some(format!("cancel-{category}")),
            _ => None,
        };
        if let Some(g) = account {
            v.push(Charge { group: g, cost: 1, partition: None });
        }
        v
    }

    fn authenticate(&self, req: &SimRequest, _params: &Params, keys: &Keys, _nonces: &mut NonceLog) -> Result<String, Reply> {
        let now = req.now_ms;
        let api_key = req.header("x-bapi-api-key").ok_or_else(|| fail(10003, "API key is invalid.", now))?;
        let account = keys.get(api_key).ok_or_else(|| fail(10003, "API key is invalid.", now))?;
        let ts: u64 = req
            .header("x-bapi-timestamp")
            .and_then(|t| t.parse().ok())
            .ok_or_else(|| fail(10002, "invalid request, please check your timestamp and recv_window param", now))?;
        let window: u64 = req.header("x-bapi-recv-window").and_then(|w| w.parse().ok()).unwrap_or(5000);
        // Bybit: server_time - recv_window <= timestamp < server_time + 1000
        if ts + window < now || ts >= now + 1000 {
            return Err(fail(
                10002,
                &format!(
                    "invalid request, please check your server timestamp or recv_window param. req_timestamp[{ts}],server_timestamp[{now}],recv_window[{window}]"
                ),
                now,
            ));
        }
        let payload = if req.method == "GET" { req.query.as_bytes() } else { req.body.as_slice() };
        let mut prehash = format!("{ts}{api_key}{window}").into_bytes();
        prehash.extend_from_slice(payload);
        let expected = hex::encode(hmac_sha256(&account.secret, &prehash));
        let given = req.header("x-bapi-sign").unwrap_or_default();
        if !same(expected.as_bytes(), given.to_ascii_lowercase().as_bytes()) {
            return Err(fail(10004, &format!("error sign! origin_string[{}]", String::from_utf8_lossy(&prehash)), now));
        }
        Ok(account.name.clone())
    }

    fn handle(&self, ep: Endpoint, mut ctx: Ctx<'_>) -> Reply {
        let now = ctx.req.now_ms;
        let category = ctx.params.get("category").unwrap_or("spot").to_owned();
        let symbol = ctx.params.get("symbol");
        match ep.name {
            "time" => ok(json!({ "timeSecond": (now / 1000).to_string(), "timeNano": (u128::from(now) * 1_000_000).to_string() }), now),
            "tickers" => {
                let list: Vec<Value> = ctx
                    .market
                    .instruments()
                    .filter(|i| symbol.is_none_or(|s| s == i.native))
                    .map(|i| {
                        let (bid, ask) = (i.book.best_bid().unwrap_or_default(), i.book.best_ask().unwrap_or_default());
                        let pct = if i.prev_close.is_zero() {
                            Decimal::ZERO
                        } else {
                            ((i.last_price() - i.prev_close) / i.prev_close).round_dp(4)
                        };
                        json!({
                            "symbol": i.native, "bid1Price": s(bid.0), "bid1Size": s(bid.1), "ask1Price": s(ask.0), "ask1Size": s(ask.1),
                            "lastPrice": s(i.last_price()), "prevPrice24h": s(i.prev_close), "price24hPcnt": s(pct),
                            "highPrice24h": s(i.day_high()), "lowPrice24h": s(i.day_low()),
                            "turnover24h": s(i.day_quote_volume()), "volume24h": s(i.day_volume()), "usdIndexPrice": s(i.last_price()),
                        })
                    })
                    .collect();
                if list.is_empty() {
                    return fail(10001, "params error: symbol invalid", now);
                }
                ok(json!({ "category": category, "list": list }), now)
            }
            "orderbook" => {
                let Some(inst) = symbol.and_then(|s| ctx.market.instrument(s)) else {
                    return fail(10001, "params error: symbol invalid", now);
                };
                let depth = ctx.params.get("limit").and_then(|l| l.parse::<usize>().ok()).unwrap_or(1).clamp(1, 200);
                let (bids, asks) = inst.book.top(depth);
                let side = |v: Vec<(Decimal, Decimal)>| v.into_iter().map(|(p, q)| json!([s(p), s(q)])).collect::<Vec<_>>();
                ok(
                    json!({ "s": inst.native, "b": side(bids), "a": side(asks), "ts": now, "u": inst.book.seq, "seq": inst.book.update_id, "cts": now }),
                    now,
                )
            }
            "kline" => {
                let Some(inst) = symbol.and_then(|s| ctx.market.instrument(s)) else {
                    return fail(10001, "params error: symbol invalid", now);
                };
                let n = ctx.params.get("limit").and_then(|l| l.parse::<usize>().ok()).unwrap_or(200).clamp(1, 1000);
                let list: Vec<Value> = inst
                    .candles
                    .iter()
                    .rev()
                    .take(n)
                    .map(|c| json!([c.open_ms.to_string(), s(c.open), s(c.high), s(c.low), s(c.close), s(c.volume), s(c.quote_volume)]))
                    .collect();
                ok(json!({ "category": category, "symbol": inst.native, "list": list }), now)
            }
            "recent_trade" => {
                let Some(inst) = symbol.and_then(|s| ctx.market.instrument(s)) else {
                    return fail(10001, "params error: symbol invalid", now);
                };
                let n = ctx.params.get("limit").and_then(|l| l.parse::<usize>().ok()).unwrap_or(60).clamp(1, 1000);
                let list: Vec<Value> = inst
                    .trades
                    .iter()
                    .rev()
                    .take(n)
                    .map(|t| json!({ "execId": t.id.to_string(), "symbol": inst.native, "price": s(t.price), "size": s(t.qty), "side": if t.buyer_taker { "Buy" } else { "Sell" }, "time": t.ts_ms.to_string(), "isBlockTrade": false }))
                    .collect();
                ok(json!({ "category": category, "list": list }), now)
            }
            "coin_query_info" => {
                // Every coin the simulated markets trade, on one chain of its own name.
                let mut coins = ctx.market.assets();
                if let Some(c) = ctx.params.get("coin") {
                    coins.retain(|x| x == c);
                }
                let rows: Vec<Value> = coins
                    .iter()
                    .map(|c| {
                        let chain = json!({ "chainType": c, "confirmation": "1", "withdrawFee": "0", "depositMin": "0", "withdrawMin": "0",
                            "chain": c, "chainDeposit": "1", "chainWithdraw": "1", "minAccuracy": "8", "withdrawPercentageFee": "0",
                            "contractAddress": "", "safeConfirmNumber": "1" });
                        json!({ "name": c, "coin": c, "remainAmount": "1000000", "chains": [chain] })
                    })
                    .collect();
                ok(json!({ "rows": rows }), now)
            }
            "query_api" => {
                let key = ctx.req.header("x-bapi-api-key").unwrap_or_default();
                let permissions = json!({ "ContractTrade": ["Order", "Position"], "Spot": ["SpotTrade"], "Wallet": ["AccountTransfer"],
                    "Options": ["OptionsTrade"], "Derivatives": ["DerivativesTrade"], "CopyTrading": [], "BlockTrade": [], "Exchange": [],
                    "NFT": [], "Affiliate": [] });
                ok(
                    json!({ "id": "1", "note": "simulated", "apiKey": key, "readOnly": 0, "secret": "", "permissions": permissions,
                        "ips": ["*"], "type": 1, "deadlineDay": -1, "expiredAt": "", "createdAt": "2026-01-01T00:00:00Z", "unified": 0,
                        "uta": 1, "userID": 1, "inviterID": 0, "vipLevel": "No VIP", "mktMakerLevel": "0", "affiliateID": 0,
                        "rsaPublicKey": "", "isMaster": true, "parentUid": "0", "kycLevel": "LEVEL_DEFAULT", "kycRegion": "" }),
                    now,
                )
            }
            // A unified trading account (status 5: UTA 2.0), regular margin.
            "account_info" => ok(
                json!({ "marginMode": "REGULAR_MARGIN", "updatedTime": now.to_string(), "unifiedMarginStatus": 5, "dcpStatus": "OFF",
                    "timeWindow": 10, "smpGroup": 0, "isMasterTrader": false, "spotHedgingStatus": "OFF" }),
                now,
            ),
            "wallet_balance" => {
                let Some(acct) = ctx.account.as_deref() else { return fail(10003, "API key is invalid.", now) };
                // USD values at each coin's mid against USDT (USDT at 1), as numeric
                // strings the way Bybit writes them; no positions, so no margin in use.
                let usd = |coin: &str| -> Decimal {
                    if coin == "USDT" || coin == "USDC" {
                        return Decimal::ONE;
                    }
                    ctx.market.instrument(&format!("{coin}USDT")).map_or(Decimal::ZERO, |i| i.mid)
                };
                let money = |d: Decimal| s(d.round_dp(8).normalize());
                let (mut equity, mut available) = (Decimal::ZERO, Decimal::ZERO);
                let coins: Vec<Value> = acct
                    .balances
                    .iter()
                    .map(|(c, b)| {
                        let price = usd(c);
                        equity += (b.free + b.locked) * price;
                        available += b.free * price;
                        json!({
                            "coin": c, "walletBalance": s(b.free + b.locked), "equity": s(b.free + b.locked), "locked": s(b.locked),
                            "usdValue": money((b.free + b.locked) * price), "free": s(b.free), "availableToWithdraw": "",
                            "borrowAmount": "0", "accruedInterest": "0", "totalOrderIM": "0", "totalPositionIM": "0", "totalPositionMM": "0",
                            "unrealisedPnl": "0", "cumRealisedPnl": "0", "bonus": "0", "collateralSwitch": true, "marginCollateral": true,
                            "spotHedgingQty": "0",
                        })
                    })
                    .collect();
                let account = json!({
                    "accountType": ctx.params.get("accountType").unwrap_or("UNIFIED"),
                    "totalEquity": money(equity), "totalWalletBalance": money(equity), "totalMarginBalance": money(equity),
                    "totalAvailableBalance": money(available), "totalPerpUPL": "0", "totalInitialMargin": "0",
                    "totalMaintenanceMargin": "0", "accountIMRate": "0", "accountMMRate": "0", "accountLTV": "0", "coin": coins,
                });
                ok(json!({ "list": [account] }), now)
            }
            "order_realtime" => {
                let Some(acct) = ctx.account.as_deref() else { return fail(10003, "API key is invalid.", now) };
                let list: Vec<Value> = match key(ctx.params) {
                    Some(k) => acct.get(&k).into_iter().map(|o| order_json(o, &category)).collect(),
                    None => acct
                        .orders()
                        .filter(|o| o.status == OrderStatus::Open && symbol.is_none_or(|s| s == o.native))
                        .map(|o| order_json(o, &category))
                        .collect(),
                };
                ok(json!({ "list": list, "nextPageCursor": "", "category": category }), now)
            }
            "instruments_info" => {
                match category.as_str() {
                    "spot" | "linear" => {}
                    // Not simulated: they exist and are empty (ccxt's load_markets asks).
                    "inverse" | "option" => return ok(json!({ "category": category, "list": [], "nextPageCursor": "" }), now),
                    other => return fail(10001, &format!("params error: category {other} is invalid"), now),
                }
                let list: Vec<Value> = ctx
                    .market
                    .instruments()
                    .filter(|i| symbol.is_none_or(|s| s == i.native))
                    .map(|i| {
                        let (base, quote) = (i.symbol.base.to_string(), i.symbol.quote.to_string());
                        // Bybit's two shapes: spot gives precisions and order
                        // amounts, derivatives a quantity step and a minimum value.
                        if category == "spot" {
                            json!({ "symbol": i.native, "baseCoin": base, "quoteCoin": quote, "innovation": "0", "status": "Trading",
                                    "marginTrading": "utaOnly", "stTag": "0",
                                    "lotSizeFilter": { "basePrecision": s(i.lot), "quotePrecision": "0.00000001", "minOrderQty": s(i.lot),
                                                       "maxOrderQty": "10000", "minOrderAmt": s(i.min_notional), "maxOrderAmt": "2000000" },
                                    "priceFilter": { "tickSize": s(i.tick) } })
                        } else {
                            json!({ "symbol": i.native, "contractType": "LinearPerpetual", "status": "Trading", "baseCoin": base, "quoteCoin": quote,
                                    "settleCoin": quote, "priceScale": i.tick.scale().to_string(),
                                    "priceFilter": { "minPrice": s(i.tick), "maxPrice": "1999999.8", "tickSize": s(i.tick) },
                                    "lotSizeFilter": { "maxOrderQty": "1190", "maxMktOrderQty": "500", "minOrderQty": s(i.lot), "qtyStep": s(i.lot),
                                                       "postOnlyMaxOrderQty": "1190", "minNotionalValue": s(i.min_notional) } })
                        }
                    })
                    .collect();
                ok(json!({ "category": category, "list": list, "nextPageCursor": "" }), now)
            }
            "order_history" => {
                let Some(acct) = ctx.account.as_deref() else { return fail(10003, "API key is invalid.", now) };
                // Orders that have ended (and, by id, any order), newest first.
                let mut list: Vec<&SimOrder> = match key(ctx.params) {
                    Some(k) => acct.get(&k).into_iter().collect(),
                    None => acct.orders().filter(|o| o.status != OrderStatus::Open && symbol.is_none_or(|s| s == o.native)).collect(),
                };
                list.sort_by_key(|o| std::cmp::Reverse(o.created_ms));
                let list: Vec<Value> = list.into_iter().take(50).map(|o| order_json(o, &category)).collect();
                ok(json!({ "list": list, "nextPageCursor": "", "category": category }), now)
            }
            "execution_list" => {
                let Some(acct) = ctx.account.as_deref() else { return fail(10003, "API key is invalid.", now) };
                // orderId, then orderLinkId, then symbol, as Bybit ranks them.
                let orders: Vec<&SimOrder> = match key(ctx.params) {
                    Some(k) => acct.get(&k).into_iter().collect(),
                    None => acct.orders().filter(|o| symbol.is_none_or(|s| s == o.native)).collect(),
                };
                let mut list: Vec<(u64, Value)> = Vec::new();
                for o in orders {
                    let side = if o.side == Side::Buy { "Buy" } else { "Sell" };
                    let mut left = o.qty;
                    for t in &o.trades {
                        left -= t.qty;
                        list.push((
                            t.ts_ms,
                            json!({ "symbol": o.native, "orderId": o.id, "orderLinkId": o.client_id.clone().unwrap_or_default(), "side": side,
                                    "orderPrice": o.price.map_or_else(|| "0".to_owned(), |p| p.normalize().to_string()), "orderQty": s(o.qty),
                                    "leavesQty": s(left), "orderType": if o.kind == OrderKind::Limit { "Limit" } else { "Market" },
                                    "execFee": "0", "feeCurrency": "", "execId": t.id, "execPrice": s(t.price), "execQty": s(t.qty),
                                    "execType": "Trade", "execValue": s(t.price * t.qty), "execTime": t.ts_ms.to_string(),
                                    "isMaker": t.maker, "feeRate": "0" }),
                        ));
                    }
                }
                list.sort_by_key(|(t, _)| std::cmp::Reverse(*t));
                let limit = ctx.params.get("limit").and_then(|l| l.parse::<usize>().ok()).unwrap_or(50).clamp(1, 100);
                let list: Vec<Value> = list.into_iter().take(limit).map(|(_, v)| v).collect();
                ok(json!({ "list": list, "nextPageCursor": "", "category": category }), now)
            }
            "create" => {
                let p = ctx.params;
                let side = match p.get("side") {
                    Some("Buy") => Side::Buy,
                    Some("Sell") => Side::Sell,
                    _ => return fail(10001, "params error: side invalid", now),
                };
                let kind = match p.get("orderType") {
                    Some("Limit") => OrderKind::Limit,
                    Some("Market") => OrderKind::Market,
                    _ => return fail(10001, "params error: orderType invalid", now),
                };
                let (price, qty) = match (dec(p, "price"), dec(p, "qty")) {
                    (Ok(a), Ok(b)) => (a, b),
                    (Err(e), _) | (_, Err(e)) => return fail(10001, &format!("params error: {e}"), now),
                };
                if let Some(link) = p.get("orderLinkId")
                    && link.len() > 36
                {
                    return fail(10001, "params error: orderLinkId is longer than 36 characters", now);
                }
                let Some(sym) = symbol else { return fail(10001, "params error: symbol invalid", now) };
                let order = NewOrder {
                    native: sym.to_owned(),
                    side,
                    kind,
                    price: if kind == OrderKind::Limit { price } else { None },
                    qty,
                    quote_qty: None,
                    client_id: p.get("orderLinkId").map(str::to_owned),
                    tif: match p.get("timeInForce") {
                        None | Some("GTC") => Tif::Gtc,
                        Some("IOC") => Tif::Ioc,
                        Some("FOK") => Tif::Fok,
                        Some("PostOnly") => Tif::PostOnly,
                        Some(other) => return fail(10001, &format!("params error: timeInForce {other} invalid"), now),
                    },
                };
                // Spot order ids are long numeric strings; linear ones UUIDs.
                let id = if category == "spot" {
                    (1_900_000_000_000_000_000 + ctx.new_id()).to_string()
                } else {
                    uuid::Uuid::new_v4().to_string()
                };
                let m = ctx.market;
                let Some(acct) = ctx.account.as_deref_mut() else { return fail(10003, "API key is invalid.", now) };
                match acct.place(m, order, id, now) {
                    Ok(o) => ok(json!({ "orderId": o.id, "orderLinkId": o.client_id.unwrap_or_default() }), now),
                    Err(e) => order_error(&e, now),
                }
            }
            "cancel" => {
                let Some(k) = key(ctx.params) else { return fail(10001, "params error: orderId or orderLinkId is required", now) };
                let m = ctx.market;
                let Some(acct) = ctx.account.as_deref_mut() else { return fail(10003, "API key is invalid.", now) };
                match acct.cancel(m, &k, now) {
                    Ok(o) => ok(json!({ "orderId": o.id, "orderLinkId": o.client_id.unwrap_or_default() }), now),
                    Err(e) => order_error(&e, now),
                }
            }
            other => fail(10017, &format!("route not found: {other}"), now),
        }
    }

    fn throttled(&self, _group: &str, scope: Scope, _retry_after: Duration, now_ms: u64) -> Reply {
        let code = if scope == Scope::Ip { 10018 } else { 10006 };
        fail(code, "Too many visits!", now_ms)
    }

    fn banned(&self, _scope: Scope, _until_ms: u64, _now_ms: u64) -> Reply {
        Reply::text(403, "403 Forbidden: access too frequent. Please wait at least 10 minutes.")
    }

    fn not_found(&self, req: &SimRequest) -> Reply {
        Reply::json(404, &envelope(10017, "route not found", json!({}), req.now_ms))
    }

    fn server_error(&self) -> Reply {
        Reply::json(500, &json!({ "retCode": 10016, "retMsg": "Server error.", "result": {}, "retExtInfo": {}, "time": 0 }))
    }

    fn usage_headers(&self, usage: &[Usage]) -> Vec<(String, String)> {
        usage
            .iter()
            .find(|u| u.scope == Scope::Account)
            .map(|u| {
                vec![
                    ("x-bapi-limit".to_owned(), u.limit.to_string()),
                    ("x-bapi-limit-status".to_owned(), u.limit.saturating_sub(u.used).to_string()),
                    ("x-bapi-limit-reset-timestamp".to_owned(), u.resets_at.as_millis().to_string()),
                ]
            })
            .unwrap_or_default()
    }
}
