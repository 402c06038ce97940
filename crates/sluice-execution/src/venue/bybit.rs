//! Bybit v5's order API as the live venue speaks it through the dispatcher,
//! pure: create, cancel and query by `orderLinkId` (the client order id),
//! `instruments-info` rules (spot and linear shapes), wallet balances and open
//! orders.
//!
//! Every answer is the `{"retCode","retMsg","result"}` envelope, usually with
//! HTTP 200: `retCode` 0 is success; 10006 and 10018 are rate limits (the
//! request was not executed); 10000 and 10016 are Bybit's own timeout and
//! server error (the outcome is unknown); anything else is a refusal.
//!
//! A query is three calls read together: `order/realtime` (open orders),
//! `order/history` (ended ones; Bybit writes it asynchronously, so a just-ended
//! order may be in either) and `execution/list` (each fill by `execId`, the id
//! the private stream's execution carries, so a fill seen on both counts once).
//! Only when both order lists answered and neither has it is the order not found.

use serde::Deserialize;
use sluice_domain::{Decimal, Exchange, Qty, Side};
use sluice_proto::dispatcher::v1::{CallRequest, Priority};
use sluice_rate::Time;

use super::{Answer, Balance, CancelRead, LiveVenue, OpenOrder, Read, Spec, Target, call, decimal, enc};
use crate::fills::Tif;
use crate::instrument::Rules;
use crate::order::{Event, Fill};

/// Bybit v5.
pub struct Bybit;

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Envelope {
    ret_code: i64,
    #[serde(default)]
    ret_msg: String,
    #[serde(default)]
    result: serde_json::Value,
}

#[derive(Debug, Deserialize)]
struct List<T> {
    #[serde(default = "Vec::new")]
    list: Vec<T>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Order {
    order_id: String,
    #[serde(default)]
    order_link_id: String,
    #[serde(default)]
    symbol: String,
    order_status: String,
    #[serde(default)]
    reject_reason: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Execution {
    exec_id: String,
    exec_price: String,
    exec_qty: String,
    #[serde(default)]
    exec_fee: String,
    #[serde(default)]
    fee_currency: String,
    #[serde(default)]
    exec_type: String,
    #[serde(default)]
    exec_time: String,
    #[serde(default)]
    is_maker: bool,
}

/// What an envelope says, before its result is read.
enum Outcome<T> {
    Ok(T),
    /// Rate limited: not executed.
    Throttled(String),
    /// Bybit's own timeout or server error: unknown.
    Unknown(String),
    Refused(String),
}

fn open<T: serde::de::DeserializeOwned>((status, body): Answer<'_>, what: &str) -> Result<Outcome<T>, String> {
    if status == 403 {
        return Ok(Outcome::Throttled(format!("bybit 403: {}", String::from_utf8_lossy(body).chars().take(120).collect::<String>())));
    }
    if status >= 500 {
        return Ok(Outcome::Unknown(format!("bybit {status}")));
    }
    // The result's shape is known only on success (a refusal carries `{}`).
    let e: Envelope = serde_json::from_slice(body).map_err(|err| format!("bybit {what} answer (HTTP {status}): {err}"))?;
    let text = format!("bybit {}: {}", e.ret_code, e.ret_msg);
    Ok(match e.ret_code {
        0 => Outcome::Ok(serde_json::from_value(e.result).map_err(|err| format!("bybit {what} result: {err}"))?),
        10006 | 10018 => Outcome::Throttled(text),
        10000 | 10016 => Outcome::Unknown(text),
        _ => Outcome::Refused(text),
    })
}

fn time_in_force(t: Tif) -> &'static str {
    match t {
        Tif::Gtc => "GTC",
        Tif::Ioc => "IOC",
        Tif::Fok => "FOK",
        Tif::PostOnly => "PostOnly",
    }
}

fn by_link(path: &str, t: &Target<'_>, cid: &str, priority: Priority) -> CallRequest {
    call(Exchange::Bybit, t.account, "GET", path, format!("category={}&orderLinkId={}", enc(t.category), enc(cid)), Vec::new(), priority)
}

impl LiveVenue for Bybit {
    fn exchange(&self) -> Exchange {
        Exchange::Bybit
    }

    fn create(&self, o: &Spec<'_>) -> CallRequest {
        let body = serde_json::json!({
            "category": o.target.category,
            "symbol": o.target.native,
            "side": if o.side == Side::Buy { "Buy" } else { "Sell" },
            "orderType": "Limit",
            "qty": o.quantity.normalize().to_string(),
            "price": o.price.normalize().to_string(),
            "timeInForce": time_in_force(o.tif),
            "orderLinkId": o.client_order_id,
        });
        let mut c = call(
            Exchange::Bybit,
            o.target.account,
            "POST",
            "/v5/order/create",
            String::new(),
            body.to_string().into_bytes(),
            Priority::Order,
        );
        c.idempotency_key = o.client_order_id.into();
        c
    }

    fn read_create(&self, a: Answer<'_>) -> Result<Read, String> {
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Created {
            order_id: String,
        }
        Ok(match open::<Created>(a, "order/create")? {
            Outcome::Ok(c) => Read::Events(vec![Event::Accepted { venue_order_id: Some(c.order_id) }]),
            Outcome::Throttled(r) => Read::NotSent(r),
            Outcome::Unknown(r) => Read::Unknown(r),
            Outcome::Refused(r) => Read::Events(vec![Event::Rejected { reason: r }]),
        })
    }

    fn cancel(&self, t: &Target<'_>, cid: &str) -> CallRequest {
        let body = serde_json::json!({ "category": t.category, "symbol": t.native, "orderLinkId": cid });
        call(Exchange::Bybit, t.account, "POST", "/v5/order/cancel", String::new(), body.to_string().into_bytes(), Priority::Order)
    }

    fn read_cancel(&self, a: Answer<'_>) -> CancelRead {
        match open::<serde_json::Value>(a, "order/cancel") {
            Ok(Outcome::Ok(_)) => CancelRead::Taken,
            Ok(Outcome::Throttled(r) | Outcome::Unknown(r) | Outcome::Refused(r)) | Err(r) => CancelRead::Refused(r),
        }
    }

    fn query(&self, t: &Target<'_>, cid: &str, _venue_order_id: Option<&str>) -> Vec<CallRequest> {
        vec![
            by_link("/v5/order/realtime", t, cid, Priority::Account),
            by_link("/v5/order/history", t, cid, Priority::Account),
            by_link("/v5/execution/list", t, cid, Priority::Account),
        ]
    }

    fn read_query(&self, answers: &[Answer<'_>], fee_asset: &str, now: Time) -> Result<Read, String> {
        let &[realtime, history, executions] = answers else {
            return Err(format!("bybit order query: {} answers, expected 3", answers.len()));
        };
        let mut found = None;
        for (a, what) in [(realtime, "order/realtime"), (history, "order/history")] {
            match open::<List<Order>>(a, what)? {
                Outcome::Ok(l) => {
                    if found.is_none() {
                        found = l.list.into_iter().next();
                    }
                }
                Outcome::Throttled(r) | Outcome::Unknown(r) | Outcome::Refused(r) => return Err(format!("{what}: {r}")),
            }
        }
        let Some(o) = found else { return Ok(Read::NotFound) };
        let execs = match open::<List<Execution>>(executions, "execution/list")? {
            Outcome::Ok(l) => l.list,
            Outcome::Throttled(r) | Outcome::Unknown(r) | Outcome::Refused(r) => return Err(format!("execution/list: {r}")),
        };
        let mut events = Vec::new();
        if o.order_status == "Rejected" {
            events.push(Event::Rejected { reason: format!("bybit rejected it: {}", o.reject_reason) });
            return Ok(Read::Events(events));
        }
        events.push(Event::Accepted { venue_order_id: Some(o.order_id.clone()) });
        // Oldest first, as they happened (Bybit lists newest first).
        let mut fills = Vec::new();
        for e in execs.iter().filter(|e| e.exec_type.is_empty() || e.exec_type == "Trade") {
            let quantity = Qty::new(decimal("execQty", &e.exec_qty)?).map_err(|err| format!("bybit execution {}: {err}", e.exec_id))?;
            let ms: u64 = e.exec_time.parse().unwrap_or(0);
            fills.push(Fill {
                trade_id: e.exec_id.clone(),
                quantity,
                price: decimal("execPrice", &e.exec_price)?,
                fee: if e.exec_fee.is_empty() { Decimal::ZERO } else { decimal("execFee", &e.exec_fee)? },
                fee_asset: if e.fee_currency.is_empty() { fee_asset.to_owned() } else { e.fee_currency.clone() },
                maker: e.is_maker,
                time: if ms > 0 { Time::from_millis(ms) } else { now },
            });
        }
        fills.sort_by_key(|f| f.time);
        events.extend(fills.into_iter().map(Event::Fill));
        match o.order_status.as_str() {
            "New" | "PartiallyFilled" | "Untriggered" | "Triggered" | "Created" | "Filled" => {}
            "Cancelled" | "PartiallyFilledCanceled" | "Deactivated" => {
                events.push(Event::Cancelled { reason: format!("{} on bybit", o.order_status) });
            }
            other => return Err(format!("bybit order {} ({}): unknown status '{other}'", o.order_id, o.order_link_id)),
        }
        Ok(Read::Events(events))
    }

    fn rules(&self, t: &Target<'_>) -> Vec<CallRequest> {
        let q = format!("category={}&symbol={}", enc(t.category), enc(t.native));
        vec![call(Exchange::Bybit, "", "GET", "/v5/market/instruments-info", q, Vec::new(), Priority::Backfill)]
    }

    /// Spot: `basePrecision` is the quantity step, `minOrderAmt` the minimum
    /// value; linear: `qtyStep` and `minNotionalValue`.
    fn read_rules(&self, answers: &[Answer<'_>], native: &str) -> Result<Rules, String> {
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Lot {
            #[serde(default)]
            base_precision: Option<String>,
            #[serde(default)]
            qty_step: Option<String>,
            min_order_qty: String,
            #[serde(default)]
            max_order_qty: Option<String>,
            #[serde(default)]
            min_order_amt: Option<String>,
            #[serde(default)]
            min_notional_value: Option<String>,
        }
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Price {
            tick_size: String,
        }
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Instrument {
            symbol: String,
            lot_size_filter: Lot,
            price_filter: Price,
        }
        let &[a] = answers else { return Err("bybit rules: expected 1 answer".into()) };
        let list = match open::<List<Instrument>>(a, "instruments-info")? {
            Outcome::Ok(l) => l.list,
            Outcome::Throttled(r) | Outcome::Unknown(r) | Outcome::Refused(r) => return Err(r),
        };
        let i = list.into_iter().find(|i| i.symbol == native).ok_or_else(|| format!("bybit lists no instrument {native}"))?;
        let l = &i.lot_size_filter;
        let step = l.qty_step.as_deref().or(l.base_precision.as_deref()).ok_or_else(|| format!("bybit {native}: no quantity step"))?;
        let min_value = l.min_notional_value.as_deref().or(l.min_order_amt.as_deref()).unwrap_or("0");
        Ok(Rules {
            tick: decimal("tickSize", &i.price_filter.tick_size)?,
            lot: decimal("qtyStep", step)?,
            min_qty: decimal("minOrderQty", &l.min_order_qty)?,
            max_qty: l.max_order_qty.as_deref().map(|m| decimal("maxOrderQty", m)).transpose()?,
            min_notional: decimal("minOrderAmt", min_value)?,
        })
    }

    fn balances(&self, account: &str) -> CallRequest {
        call(Exchange::Bybit, account, "GET", "/v5/account/wallet-balance", "accountType=UNIFIED".into(), Vec::new(), Priority::Account)
    }

    fn read_balances(&self, a: Answer<'_>) -> Result<Vec<Balance>, String> {
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Coin {
            coin: String,
            wallet_balance: String,
            #[serde(default)]
            locked: String,
        }
        #[derive(Deserialize)]
        struct Wallet {
            #[serde(default)]
            coin: Vec<Coin>,
        }
        let wallets = match open::<List<Wallet>>(a, "wallet-balance")? {
            Outcome::Ok(l) => l.list,
            Outcome::Throttled(r) | Outcome::Unknown(r) | Outcome::Refused(r) => return Err(r),
        };
        let mut out = Vec::new();
        for c in wallets.into_iter().flat_map(|w| w.coin) {
            let total = decimal("walletBalance", &c.wallet_balance)?;
            let locked = if c.locked.is_empty() { Decimal::ZERO } else { decimal("locked", &c.locked)? };
            out.push(Balance { asset: c.coin, free: total - locked, locked });
        }
        Ok(out)
    }

    fn open_orders(&self, t: &Target<'_>) -> CallRequest {
        let q = format!("category={}&symbol={}", enc(t.category), enc(t.native));
        call(Exchange::Bybit, t.account, "GET", "/v5/order/realtime", q, Vec::new(), Priority::Account)
    }

    fn read_open_orders(&self, a: Answer<'_>) -> Result<Vec<OpenOrder>, String> {
        match open::<List<Order>>(a, "order/realtime")? {
            Outcome::Ok(l) => Ok(l
                .list
                .into_iter()
                .map(|o| OpenOrder { venue_order_id: o.order_id, client_order_id: o.order_link_id, native: o.symbol })
                .collect()),
            Outcome::Throttled(r) | Outcome::Unknown(r) | Outcome::Refused(r) => Err(r),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> Decimal {
        s.parse().unwrap()
    }

    fn target() -> Target<'static> {
        Target { account: "demo", native: "BTCUSDT", category: "spot" }
    }

    #[test]
    fn requests_say_the_category_and_the_link_id() {
        let spec = Spec {
            target: target(),
            side: Side::Sell,
            quantity: d("0.010"),
            price: d("65000.0"),
            tif: Tif::PostOnly,
            client_order_id: "sl1",
        };
        let c = Bybit.create(&spec);
        assert_eq!((c.path.as_str(), c.idempotency_key.as_str()), ("/v5/order/create", "sl1"));
        let body: serde_json::Value = serde_json::from_slice(&c.body).unwrap();
        assert_eq!(
            body,
            serde_json::json!({"category":"spot","symbol":"BTCUSDT","side":"Sell","orderType":"Limit","qty":"0.01","price":"65000","timeInForce":"PostOnly","orderLinkId":"sl1"})
        );
        let q: Vec<String> = Bybit.query(&target(), "sl1", None).into_iter().map(|c| format!("{} {}", c.path, c.query)).collect();
        assert_eq!(
            q,
            [
                "/v5/order/realtime category=spot&orderLinkId=sl1",
                "/v5/order/history category=spot&orderLinkId=sl1",
                "/v5/execution/list category=spot&orderLinkId=sl1"
            ]
        );
    }

    #[test]
    fn envelopes_say_accepted_refused_throttled_or_unknown() {
        let r = |b: &[u8]| Bybit.read_create((200, b)).unwrap();
        assert_eq!(
            r(br#"{"retCode":0,"retMsg":"OK","result":{"orderId":"1","orderLinkId":"sl1"}}"#),
            Read::Events(vec![Event::Accepted { venue_order_id: Some("1".into()) }])
        );
        assert!(matches!(r(br#"{"retCode":10006,"retMsg":"Too many visits!","result":{}}"#), Read::NotSent(_)));
        assert!(matches!(r(br#"{"retCode":10016,"retMsg":"Server error.","result":{}}"#), Read::Unknown(_)));
        assert!(
            matches!(r(br#"{"retCode":170131,"retMsg":"Insufficient balance.","result":{}}"#), Read::Events(e) if matches!(e[0], Event::Rejected { .. }))
        );
        assert!(matches!(Bybit.read_create((403, b"access too frequent")).unwrap(), Read::NotSent(_)));
        assert!(Bybit.read_create((200, b"<html>")).is_err());
        assert_eq!(Bybit.read_cancel((200, br#"{"retCode":0,"retMsg":"OK","result":{"orderId":"1"}}"#)), CancelRead::Taken);
        assert!(matches!(
            Bybit.read_cancel((200, br#"{"retCode":170213,"retMsg":"Order does not exist.","result":{}}"#)),
            CancelRead::Refused(_)
        ));
    }

    #[test]
    fn a_query_reads_status_and_fills_from_three_answers() {
        let empty: &[u8] = br#"{"retCode":0,"retMsg":"OK","result":{"list":[]}}"#;
        let hist: &[u8] = br#"{"retCode":0,"retMsg":"OK","result":{"list":[{"orderId":"9","orderLinkId":"sl1","symbol":"BTCUSDT","orderStatus":"PartiallyFilledCanceled"}]}}"#;
        let execs: &[u8] = br#"{"retCode":0,"retMsg":"OK","result":{"list":[
            {"execId":"9-2","execPrice":"100","execQty":"0.2","execFee":"0.02","feeCurrency":"USDT","execType":"Trade","execTime":"2000","isMaker":true},
            {"execId":"9-1","execPrice":"100","execQty":"0.1","execFee":"","feeCurrency":"","execType":"Trade","execTime":"1000","isMaker":true}]}}"#;
        let Read::Events(ev) = Bybit.read_query(&[(200, empty), (200, hist), (200, execs)], "USDT", Time::ZERO).unwrap() else { panic!() };
        assert_eq!(ev.len(), 4);
        let ids: Vec<&str> = ev.iter().filter_map(|e| if let Event::Fill(f) = e { Some(f.trade_id.as_str()) } else { None }).collect();
        assert_eq!(ids, ["9-1", "9-2"], "oldest first");
        assert!(matches!(&ev[3], Event::Cancelled { .. }));
        assert_eq!(Bybit.read_query(&[(200, empty), (200, empty), (200, empty)], "USDT", Time::ZERO).unwrap(), Read::NotFound);
        let throttled: &[u8] = br#"{"retCode":10006,"retMsg":"Too many visits!","result":{}}"#;
        assert!(Bybit.read_query(&[(200, empty), (200, throttled), (200, empty)], "USDT", Time::ZERO).is_err(), "no answer is no evidence");
    }

    #[test]
    fn rules_from_both_shapes_and_balances() {
        let spot: &[u8] = br#"{"retCode":0,"retMsg":"OK","result":{"category":"spot","list":[{"symbol":"BTCUSDT","lotSizeFilter":{"basePrecision":"0.000001","minOrderQty":"0.000048","maxOrderQty":"71","minOrderAmt":"1"},"priceFilter":{"tickSize":"0.01"}}]}}"#;
        let r = Bybit.read_rules(&[(200, spot)], "BTCUSDT").unwrap();
        assert_eq!((r.tick, r.lot, r.min_qty, r.max_qty, r.min_notional), (d("0.01"), d("0.000001"), d("0.000048"), Some(d("71")), d("1")));
        let linear: &[u8] = br#"{"retCode":0,"retMsg":"OK","result":{"category":"linear","list":[{"symbol":"BTCUSDT","lotSizeFilter":{"qtyStep":"0.001","minOrderQty":"0.001","maxOrderQty":"1190","minNotionalValue":"5"},"priceFilter":{"tickSize":"0.10"}}]}}"#;
        assert_eq!(Bybit.read_rules(&[(200, linear)], "BTCUSDT").unwrap().lot, d("0.001"));
        let wallet: &[u8] = br#"{"retCode":0,"retMsg":"OK","result":{"list":[{"accountType":"UNIFIED","coin":[{"coin":"USDT","walletBalance":"100","locked":"10"}]}]}}"#;
        assert_eq!(Bybit.read_balances((200, wallet)).unwrap(), vec![Balance { asset: "USDT".into(), free: d("90"), locked: d("10") }]);
    }
}
