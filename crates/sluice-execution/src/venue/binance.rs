//! Binance spot's order API as the live venue speaks it through the
//! dispatcher, pure: create (`POST /api/v3/order`, form fields, keyed by
//! `newClientOrderId`), query by `origClientOrderId` with the order's trades
//! (`GET /api/v3/myTrades?orderId=`, once its id is known), cancel by
//! `origClientOrderId`, the rules from `exchangeInfo` (`PRICE_FILTER.tickSize`,
//! `LOT_SIZE`, `NOTIONAL.minNotional` or the older `MIN_NOTIONAL`), balances
//! (`GET /api/v3/account`) and open orders.
//!
//! Errors are `{"code","msg"}` with an HTTP 4xx: -1003 and -1015 are rate
//! limits (not executed), -1007 is Binance's own "send status unknown"; others
//! are refusals. -2013 ("Order does not exist.") on a query is "not found".
//! Binance keeps no private stream in sluice yet: its orders are confirmed by
//! queries alone.

use serde::Deserialize;
use sluice_domain::{Decimal, Exchange, Qty, Side};
use sluice_proto::dispatcher::v1::{CallRequest, Priority};
use sluice_rate::Time;

use super::{Answer, Balance, CancelRead, LiveVenue, OpenOrder, Read, Spec, Target, call, decimal, enc};
use crate::fills::Tif;
use crate::instrument::Rules;
use crate::order::{Event, Fill};

/// Binance spot.
pub struct Binance;

#[derive(Debug, Deserialize)]
struct ApiError {
    code: i64,
    #[serde(default)]
    msg: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Order {
    symbol: String,
    order_id: u64,
    #[serde(default)]
    client_order_id: String,
    status: String,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Trade {
    id: u64,
    price: String,
    qty: String,
    #[serde(default)]
    commission: String,
    #[serde(default)]
    commission_asset: String,
    time: u64,
    #[serde(default)]
    is_maker: bool,
}

fn ok(status: u16) -> bool {
    (200..300).contains(&status)
}

fn error_of(status: u16, body: &[u8]) -> (Option<i64>, String) {
    match serde_json::from_slice::<ApiError>(body) {
        Ok(e) => (Some(e.code), format!("binance {status} {}: {}", e.code, e.msg)),
        Err(_) => (None, format!("binance {status}: {}", String::from_utf8_lossy(body).chars().take(160).collect::<String>())),
    }
}

fn form(pairs: &[(&str, &str)]) -> Vec<u8> {
    pairs.iter().map(|(k, v)| format!("{k}={}", enc(v))).collect::<Vec<_>>().join("&").into_bytes()
}

impl LiveVenue for Binance {
    fn exchange(&self) -> Exchange {
        Exchange::Binance
    }

    fn create(&self, o: &Spec<'_>) -> CallRequest {
        let (qty, price) = (o.quantity.normalize().to_string(), o.price.normalize().to_string());
        let side = if o.side == Side::Buy { "BUY" } else { "SELL" };
        let mut fields = vec![("symbol", o.target.native), ("side", side)];
        match o.tif {
            Tif::PostOnly => fields.push(("type", "LIMIT_MAKER")),
            Tif::Gtc => fields.extend([("type", "LIMIT"), ("timeInForce", "GTC")]),
            Tif::Ioc => fields.extend([("type", "LIMIT"), ("timeInForce", "IOC")]),
            Tif::Fok => fields.extend([("type", "LIMIT"), ("timeInForce", "FOK")]),
        }
        fields.extend([
            ("quantity", qty.as_str()),
            ("price", price.as_str()),
            ("newClientOrderId", o.client_order_id),
            ("newOrderRespType", "RESULT"),
        ]);
        let mut c = call(Exchange::Binance, o.target.account, "POST", "/api/v3/order", String::new(), form(&fields), Priority::Order);
        c.idempotency_key = o.client_order_id.into();
        c
    }

    fn read_create(&self, (status, body): Answer<'_>) -> Result<Read, String> {
        if !ok(status) {
            let (code, text) = error_of(status, body);
            return Ok(match code {
                Some(-1003 | -1015) => Read::NotSent(text),
                Some(-1007) => Read::Unknown(text),
                _ => Read::Events(vec![Event::Rejected { reason: text }]),
            });
        }
        let o: Order = serde_json::from_slice(body).map_err(|e| format!("binance order answer: {e}"))?;
        let mut events = vec![Event::Accepted { venue_order_id: Some(o.order_id.to_string()) }];
        if o.status == "EXPIRED" || o.status == "EXPIRED_IN_MATCH" {
            events.push(Event::Expired { reason: format!("{} on binance", o.status) });
        }
        Ok(Read::Events(events))
    }

    fn cancel(&self, t: &Target<'_>, cid: &str) -> CallRequest {
        let q = format!("symbol={}&origClientOrderId={}", enc(t.native), enc(cid));
        call(Exchange::Binance, t.account, "DELETE", "/api/v3/order", q, Vec::new(), Priority::Order)
    }

    /// Binance cancels at once: the answer is the order cancelled.
    fn read_cancel(&self, (status, body): Answer<'_>) -> CancelRead {
        if !ok(status) {
            return CancelRead::Refused(error_of(status, body).1);
        }
        match serde_json::from_slice::<Order>(body) {
            Ok(o) if o.status == "CANCELED" => CancelRead::Done(vec![Event::Cancelled { reason: "cancelled on binance".into() }]),
            _ => CancelRead::Taken,
        }
    }

    fn query(&self, t: &Target<'_>, cid: &str, venue_order_id: Option<&str>) -> Vec<CallRequest> {
        let sym = enc(t.native);
        let mut calls = vec![call(
            Exchange::Binance,
            t.account,
            "GET",
            "/api/v3/order",
            format!("symbol={sym}&origClientOrderId={}", enc(cid)),
            Vec::new(),
            Priority::Account,
        )];
        if let Some(id) = venue_order_id {
            calls.push(call(
                Exchange::Binance,
                t.account,
                "GET",
                "/api/v3/myTrades",
                format!("symbol={sym}&orderId={}", enc(id)),
                Vec::new(),
                Priority::Account,
            ));
        }
        calls
    }

    fn read_query(&self, answers: &[Answer<'_>], fee_asset: &str, now: Time) -> Result<Read, String> {
        let Some(&(status, body)) = answers.first() else { return Err("binance order query: no answer".into()) };
        if !ok(status) {
            let (code, text) = error_of(status, body);
            return if code == Some(-2013) { Ok(Read::NotFound) } else { Err(text) };
        }
        let o: Order = serde_json::from_slice(body).map_err(|e| format!("binance order: {e}"))?;
        let mut events = Vec::new();
        if o.status == "REJECTED" {
            return Ok(Read::Events(vec![Event::Rejected { reason: "REJECTED on binance".into() }]));
        }
        events.push(Event::Accepted { venue_order_id: Some(o.order_id.to_string()) });
        if let Some(&(s2, trades)) = answers.get(1) {
            if !ok(s2) {
                return Err(error_of(s2, trades).1);
            }
            let list: Vec<Trade> = serde_json::from_slice(trades).map_err(|e| format!("binance myTrades: {e}"))?;
            for t in list {
                let quantity = Qty::new(decimal("qty", &t.qty)?).map_err(|e| format!("binance trade {}: {e}", t.id))?;
                events.push(Event::Fill(Fill {
                    trade_id: t.id.to_string(),
                    quantity,
                    price: decimal("price", &t.price)?,
                    fee: if t.commission.is_empty() { Decimal::ZERO } else { decimal("commission", &t.commission)? },
                    fee_asset: if t.commission_asset.is_empty() { fee_asset.to_owned() } else { t.commission_asset },
                    maker: t.is_maker,
                    time: if t.time > 0 { Time::from_millis(t.time) } else { now },
                }));
            }
        }
        match o.status.as_str() {
            "NEW" | "PARTIALLY_FILLED" | "PENDING_NEW" | "FILLED" => {}
            "CANCELED" | "PENDING_CANCEL" => events.push(Event::Cancelled { reason: "cancelled on binance".into() }),
            "EXPIRED" | "EXPIRED_IN_MATCH" => events.push(Event::Expired { reason: format!("{} on binance", o.status) }),
            other => return Err(format!("binance order {} ({}): unknown status '{other}'", o.order_id, o.client_order_id)),
        }
        let _ = o.symbol;
        Ok(Read::Events(events))
    }

    fn rules(&self, t: &Target<'_>) -> Vec<CallRequest> {
        vec![call(
            Exchange::Binance,
            "",
            "GET",
            "/api/v3/exchangeInfo",
            format!("symbol={}", enc(t.native)),
            Vec::new(),
            Priority::Backfill,
        )]
    }

    fn read_rules(&self, answers: &[Answer<'_>], native: &str) -> Result<Rules, String> {
        #[derive(Deserialize)]
        #[serde(rename_all = "camelCase")]
        struct Filter {
            filter_type: String,
            #[serde(default)]
            tick_size: Option<String>,
            #[serde(default)]
            step_size: Option<String>,
            #[serde(default)]
            min_qty: Option<String>,
            #[serde(default)]
            max_qty: Option<String>,
            #[serde(default)]
            min_notional: Option<String>,
        }
        #[derive(Deserialize)]
        struct Symbol {
            symbol: String,
            filters: Vec<Filter>,
        }
        #[derive(Deserialize)]
        struct Info {
            symbols: Vec<Symbol>,
        }
        let &[(status, body)] = answers else { return Err("binance rules: expected 1 answer".into()) };
        if !ok(status) {
            return Err(error_of(status, body).1);
        }
        let info: Info = serde_json::from_slice(body).map_err(|e| format!("binance exchangeInfo: {e}"))?;
        let s = info.symbols.into_iter().find(|s| s.symbol == native).ok_or_else(|| format!("binance lists no symbol {native}"))?;
        let find = |t: &str| s.filters.iter().find(|f| f.filter_type == t);
        let need = |v: Option<&String>, what: &str| v.ok_or_else(|| format!("binance {native}: no {what}")).and_then(|v| decimal(what, v));
        let price = find("PRICE_FILTER").ok_or_else(|| format!("binance {native}: no PRICE_FILTER"))?;
        let lot = find("LOT_SIZE").ok_or_else(|| format!("binance {native}: no LOT_SIZE"))?;
        let notional = find("NOTIONAL").or_else(|| find("MIN_NOTIONAL")).and_then(|f| f.min_notional.as_ref());
        let max = match lot.max_qty.as_ref() {
            Some(m) => Some(decimal("maxQty", m)?.normalize()),
            None => None,
        };
        Ok(Rules {
            tick: need(price.tick_size.as_ref(), "tickSize")?.normalize(),
            lot: need(lot.step_size.as_ref(), "stepSize")?.normalize(),
            min_qty: need(lot.min_qty.as_ref(), "minQty")?.normalize(),
            max_qty: max,
            min_notional: notional.map(|n| decimal("minNotional", n)).transpose()?.unwrap_or_default().normalize(),
        })
    }

    fn balances(&self, account: &str) -> CallRequest {
        call(Exchange::Binance, account, "GET", "/api/v3/account", "omitZeroBalances=true".into(), Vec::new(), Priority::Account)
    }

    fn read_balances(&self, (status, body): Answer<'_>) -> Result<Vec<Balance>, String> {
        #[derive(Deserialize)]
        struct Row {
            asset: String,
            free: String,
            locked: String,
        }
        #[derive(Deserialize)]
        struct Account {
            balances: Vec<Row>,
        }
        if !ok(status) {
            return Err(error_of(status, body).1);
        }
        let a: Account = serde_json::from_slice(body).map_err(|e| format!("binance account: {e}"))?;
        a.balances
            .into_iter()
            .map(|r| {
                Ok(Balance {
                    free: decimal("free", &r.free)?.normalize(),
                    locked: decimal("locked", &r.locked)?.normalize(),
                    asset: r.asset,
                })
            })
            .collect()
    }

    fn open_orders(&self, t: &Target<'_>) -> CallRequest {
        call(Exchange::Binance, t.account, "GET", "/api/v3/openOrders", format!("symbol={}", enc(t.native)), Vec::new(), Priority::Account)
    }

    fn read_open_orders(&self, (status, body): Answer<'_>) -> Result<Vec<OpenOrder>, String> {
        if !ok(status) {
            return Err(error_of(status, body).1);
        }
        let list: Vec<Order> = serde_json::from_slice(body).map_err(|e| format!("binance open orders: {e}"))?;
        Ok(list
            .into_iter()
            .map(|o| OpenOrder { venue_order_id: o.order_id.to_string(), client_order_id: o.client_order_id, native: o.symbol })
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> Decimal {
        s.parse().unwrap()
    }

    fn target() -> Target<'static> {
        Target { account: "demo", native: "BTCUSDT", category: "" }
    }

    #[test]
    fn orders_are_form_fields_keyed_by_the_client_id() {
        let spec =
            Spec { target: target(), side: Side::Buy, quantity: d("0.0100"), price: d("65000.10"), tif: Tif::Ioc, client_order_id: "sl1" };
        let c = Binance.create(&spec);
        assert_eq!(
            String::from_utf8(c.body).unwrap(),
            "symbol=BTCUSDT&side=BUY&type=LIMIT&timeInForce=IOC&quantity=0.01&price=65000.1&newClientOrderId=sl1&newOrderRespType=RESULT"
        );
        assert_eq!(c.idempotency_key, "sl1");
        let maker = Binance.create(&Spec { tif: Tif::PostOnly, ..spec.clone() });
        assert!(String::from_utf8(maker.body).unwrap().contains("type=LIMIT_MAKER&quantity"), "no timeInForce for LIMIT_MAKER");
        assert_eq!(Binance.query(&target(), "sl1", None).len(), 1);
        let q = Binance.query(&target(), "sl1", Some("77"));
        assert_eq!((q[1].path.as_str(), q[1].query.as_str()), ("/api/v3/myTrades", "symbol=BTCUSDT&orderId=77"));
    }

    #[test]
    fn answers_say_accepted_refused_throttled_unknown_and_what_filled() {
        let accepted = Binance.read_create((200, br#"{"symbol":"BTCUSDT","orderId":77,"clientOrderId":"sl1","status":"NEW"}"#)).unwrap();
        assert_eq!(accepted, Read::Events(vec![Event::Accepted { venue_order_id: Some("77".into()) }]));
        let expired = Binance.read_create((200, br#"{"symbol":"BTCUSDT","orderId":78,"clientOrderId":"sl2","status":"EXPIRED"}"#)).unwrap();
        assert!(matches!(expired, Read::Events(e) if matches!(e[1], Event::Expired { .. })));
        assert!(
            matches!(Binance.read_create((400, br#"{"code":-2010,"msg":"Account has insufficient balance"}"#)).unwrap(), Read::Events(e) if matches!(e[0], Event::Rejected { .. }))
        );
        assert!(matches!(Binance.read_create((400, br#"{"code":-1015,"msg":"Too many new orders"}"#)).unwrap(), Read::NotSent(_)));
        assert!(matches!(
            Binance
                .read_create((400, br#"{"code":-1007,"msg":"Timeout waiting for response from backend server. Send status unknown"}"#))
                .unwrap(),
            Read::Unknown(_)
        ));
        let order: &[u8] = br#"{"symbol":"BTCUSDT","orderId":77,"clientOrderId":"sl1","status":"CANCELED"}"#;
        let trades: &[u8] = br#"[{"symbol":"BTCUSDT","id":77001,"orderId":77,"price":"65000.10000000","qty":"0.00400000","commission":"0.00000400","commissionAsset":"BTC","time":1700000000000,"isMaker":true}]"#;
        let Read::Events(ev) = Binance.read_query(&[(200, order), (200, trades)], "USDT", Time::ZERO).unwrap() else { panic!() };
        let Event::Fill(f) = &ev[1] else { panic!("{ev:?}") };
        assert_eq!((f.trade_id.as_str(), f.fee, f.fee_asset.as_str(), f.maker), ("77001", d("0.000004"), "BTC", true));
        assert!(matches!(ev[2], Event::Cancelled { .. }));
        assert_eq!(
            Binance.read_query(&[(400, br#"{"code":-2013,"msg":"Order does not exist."}"#)], "USDT", Time::ZERO).unwrap(),
            Read::NotFound
        );
        assert!(Binance.read_query(&[(400, br#"{"code":-1021,"msg":"Timestamp outside recvWindow"}"#)], "USDT", Time::ZERO).is_err());
        assert!(matches!(Binance.read_cancel((200, order)), CancelRead::Done(_)));
        assert!(matches!(Binance.read_cancel((400, br#"{"code":-2011,"msg":"Unknown order sent."}"#)), CancelRead::Refused(_)));
    }

    #[test]
    fn filters_become_rules_and_balances_read() {
        let body: &[u8] = br#"{"timezone":"UTC","symbols":[{"symbol":"BTCUSDT","filters":[
            {"filterType":"PRICE_FILTER","minPrice":"0.01000000","maxPrice":"1000000.00000000","tickSize":"0.01000000"},
            {"filterType":"LOT_SIZE","minQty":"0.00001000","maxQty":"9000.00000000","stepSize":"0.00001000"},
            {"filterType":"NOTIONAL","minNotional":"5.00000000","applyMinToMarket":true}]}]}"#;
        let r = Binance.read_rules(&[(200, body)], "BTCUSDT").unwrap();
        assert_eq!((r.tick, r.lot, r.min_qty, r.max_qty, r.min_notional), (d("0.01"), d("0.00001"), d("0.00001"), Some(d("9000")), d("5")));
        assert!(Binance.read_rules(&[(400, br#"{"code":-1121,"msg":"Invalid symbol."}"#)], "NOPE").unwrap_err().contains("-1121"));
        assert!(
            Binance
                .read_rules(&[(200, br#"{"symbols":[{"symbol":"BTCUSDT","filters":[]}]}"#)], "BTCUSDT")
                .unwrap_err()
                .contains("PRICE_FILTER")
        );
        let acct: &[u8] = br#"{"balances":[{"asset":"USDT","free":"100.00000000","locked":"5.00000000"}]}"#;
        assert_eq!(Binance.read_balances((200, acct)).unwrap(), vec![Balance { asset: "USDT".into(), free: d("100"), locked: d("5") }]);
    }
}
