//! OKX v5's order API (spot, cash mode) as the live venue speaks it through
//! the dispatcher, pure: create (`POST /api/v5/trade/order`, keyed by
//! `clOrdId`), query by `clOrdId` with the order's fills (`GET
//! /api/v5/trade/fills?ordId=`, once its id is known), cancel by `clOrdId`, the
//! rules from `public/instruments` (`tickSz`, `lotSz`, `minSz`, `maxLmtSz`; OKX
//! states no minimum value for spot), balances and pending orders.
//!
//! Every answer is `{"code","msg","data"}`; an order operation's own result is
//! `data[0].sCode`. 50011 and 50061 are rate limits (not executed); 50001,
//! 50004 and 51149 mean the outcome is unknown (query before retrying); 51603
//! on a query is "not found". OKX keeps no private stream in sluice yet: its
//! orders are confirmed by queries alone.

use serde::Deserialize;
use serde_json::Value;
use sluice_domain::{Decimal, Exchange, Qty, Side};
use sluice_proto::dispatcher::v1::{CallRequest, Priority};
use sluice_rate::Time;

use super::{Answer, Balance, CancelRead, LiveVenue, OpenOrder, Read, Spec, Target, call, decimal, enc};
use crate::fills::Tif;
use crate::instrument::Rules;
use crate::order::{Event, Fill};

/// OKX v5.
pub struct Okx;

#[derive(Debug, Deserialize)]
struct Envelope {
    code: String,
    #[serde(default)]
    msg: String,
    #[serde(default)]
    data: Value,
}

/// What an answer says before its data is read.
enum Outcome {
    Ok(Value),
    Throttled(String),
    Unknown(String),
    Refused(String),
}

fn classify(code: &str, text: String) -> Outcome {
    match code {
        "50011" | "50061" => Outcome::Throttled(text),
        "50001" | "50004" | "51149" => Outcome::Unknown(text),
        _ => Outcome::Refused(text),
    }
}

/// The envelope, and for an order operation its first item's own code.
fn open((status, body): Answer<'_>, what: &str, op: bool) -> Result<Outcome, String> {
    if status >= 500 {
        return Ok(Outcome::Unknown(format!("okx {status}")));
    }
    let e: Envelope = serde_json::from_slice(body).map_err(|err| format!("okx {what} (HTTP {status}): {err}"))?;
    let item = e.data.as_array().and_then(|a| a.first()).cloned().unwrap_or(Value::Null);
    if op && let Some(s) = item["sCode"].as_str().filter(|c| *c != "0") {
        return Ok(classify(s, format!("okx {s}: {}", item["sMsg"].as_str().unwrap_or(""))));
    }
    if e.code != "0" {
        return Ok(classify(&e.code, format!("okx {}: {}", e.code, e.msg)));
    }
    Ok(Outcome::Ok(e.data))
}

fn str_of<'a>(v: &'a Value, k: &str) -> &'a str {
    v[k].as_str().unwrap_or("")
}

impl LiveVenue for Okx {
    fn exchange(&self) -> Exchange {
        Exchange::Okx
    }

    fn create(&self, o: &Spec<'_>) -> CallRequest {
        let ord_type = match o.tif {
            Tif::Gtc => "limit",
            Tif::Ioc => "ioc",
            Tif::Fok => "fok",
            Tif::PostOnly => "post_only",
        };
        let body = serde_json::json!({
            "instId": o.target.native,
            "tdMode": "cash",
            "side": if o.side == Side::Buy { "buy" } else { "sell" },
            "ordType": ord_type,
            "px": o.price.normalize().to_string(),
            "sz": o.quantity.normalize().to_string(),
            "clOrdId": o.client_order_id,
        });
        let mut c = call(
            Exchange::Okx,
            o.target.account,
            "POST",
            "/api/v5/trade/order",
            String::new(),
            body.to_string().into_bytes(),
            Priority::Order,
        );
        c.idempotency_key = o.client_order_id.into();
        c
    }

    fn read_create(&self, a: Answer<'_>) -> Result<Read, String> {
        Ok(match open(a, "trade/order", true)? {
            Outcome::Ok(data) => {
                let id = data.as_array().and_then(|a| a.first()).map(|d| str_of(d, "ordId").to_owned()).filter(|s| !s.is_empty());
                Read::Events(vec![Event::Accepted { venue_order_id: id }])
            }
            Outcome::Throttled(r) => Read::NotSent(r),
            Outcome::Unknown(r) => Read::Unknown(r),
            Outcome::Refused(r) => Read::Events(vec![Event::Rejected { reason: r }]),
        })
    }

    fn cancel(&self, t: &Target<'_>, cid: &str) -> CallRequest {
        let body = serde_json::json!({ "instId": t.native, "clOrdId": cid });
        call(Exchange::Okx, t.account, "POST", "/api/v5/trade/cancel-order", String::new(), body.to_string().into_bytes(), Priority::Order)
    }

    fn read_cancel(&self, a: Answer<'_>) -> CancelRead {
        match open(a, "trade/cancel-order", true) {
            Ok(Outcome::Ok(_)) => CancelRead::Taken,
            Ok(Outcome::Throttled(r) | Outcome::Unknown(r) | Outcome::Refused(r)) | Err(r) => CancelRead::Refused(r),
        }
    }

    fn query(&self, t: &Target<'_>, cid: &str, venue_order_id: Option<&str>) -> Vec<CallRequest> {
        let inst = enc(t.native);
        let mut calls = vec![call(
            Exchange::Okx,
            t.account,
            "GET",
            "/api/v5/trade/order",
            format!("instId={inst}&clOrdId={}", enc(cid)),
            Vec::new(),
            Priority::Account,
        )];
        if let Some(id) = venue_order_id {
            let q = format!("instType=SPOT&instId={inst}&ordId={}", enc(id));
            calls.push(call(Exchange::Okx, t.account, "GET", "/api/v5/trade/fills", q, Vec::new(), Priority::Account));
        }
        calls
    }

    fn read_query(&self, answers: &[Answer<'_>], fee_asset: &str, now: Time) -> Result<Read, String> {
        let Some(&first) = answers.first() else { return Err("okx order query: no answer".into()) };
        let order = match open(first, "trade/order", false)? {
            Outcome::Ok(d) => d.as_array().and_then(|a| a.first()).cloned().ok_or("okx trade/order: no order in the answer")?,
            Outcome::Refused(r) if r.starts_with("okx 51603") => return Ok(Read::NotFound),
            Outcome::Throttled(r) | Outcome::Unknown(r) | Outcome::Refused(r) => return Err(r),
        };
        let state = str_of(&order, "state");
        let mut events = vec![Event::Accepted { venue_order_id: Some(str_of(&order, "ordId").to_owned()).filter(|s| !s.is_empty()) }];
        if let Some(&second) = answers.get(1) {
            let fills = match open(second, "trade/fills", false)? {
                Outcome::Ok(d) => d.as_array().cloned().unwrap_or_default(),
                Outcome::Throttled(r) | Outcome::Unknown(r) | Outcome::Refused(r) => return Err(r),
            };
            let mut got = Vec::new();
            for f in &fills {
                let id = str_of(f, "tradeId").to_owned();
                let quantity = Qty::new(decimal("fillSz", str_of(f, "fillSz"))?).map_err(|e| format!("okx fill {id}: {e}"))?;
                // OKX writes fees as negative amounts (a rebate is positive).
                let fee = match str_of(f, "fee") {
                    "" => Decimal::ZERO,
                    v => -decimal("fee", v)?,
                };
                let ms: u64 = str_of(f, "ts").parse().unwrap_or(0);
                got.push(Fill {
                    trade_id: id,
                    quantity,
                    price: decimal("fillPx", str_of(f, "fillPx"))?,
                    fee,
                    fee_asset: Some(str_of(f, "feeCcy")).filter(|c| !c.is_empty()).unwrap_or(fee_asset).to_owned(),
                    maker: str_of(f, "execType") == "M",
                    time: if ms > 0 { Time::from_millis(ms) } else { now },
                });
            }
            got.sort_by_key(|f| f.time);
            events.extend(got.into_iter().map(Event::Fill));
        }
        match state {
            "live" | "partially_filled" | "filled" => {}
            "canceled" | "mmp_canceled" => events.push(Event::Cancelled { reason: format!("{state} on okx") }),
            other => return Err(format!("okx order {}: unknown state '{other}'", str_of(&order, "ordId"))),
        }
        Ok(Read::Events(events))
    }

    fn rules(&self, t: &Target<'_>) -> Vec<CallRequest> {
        let q = format!("instType=SPOT&instId={}", enc(t.native));
        vec![call(Exchange::Okx, "", "GET", "/api/v5/public/instruments", q, Vec::new(), Priority::Backfill)]
    }

    fn read_rules(&self, answers: &[Answer<'_>], native: &str) -> Result<Rules, String> {
        let &[a] = answers else { return Err("okx rules: expected 1 answer".into()) };
        let data = match open(a, "public/instruments", false)? {
            Outcome::Ok(d) => d,
            Outcome::Throttled(r) | Outcome::Unknown(r) | Outcome::Refused(r) => return Err(r),
        };
        let i = data
            .as_array()
            .and_then(|l| l.iter().find(|i| str_of(i, "instId") == native))
            .ok_or_else(|| format!("okx lists no instrument {native}"))?;
        let max = str_of(i, "maxLmtSz");
        Ok(Rules {
            tick: decimal("tickSz", str_of(i, "tickSz"))?,
            lot: decimal("lotSz", str_of(i, "lotSz"))?,
            min_qty: decimal("minSz", str_of(i, "minSz"))?,
            max_qty: if max.is_empty() { None } else { Some(decimal("maxLmtSz", max)?) },
            min_notional: Decimal::ZERO,
        })
    }

    fn balances(&self, account: &str) -> CallRequest {
        call(Exchange::Okx, account, "GET", "/api/v5/account/balance", String::new(), Vec::new(), Priority::Account)
    }

    fn read_balances(&self, a: Answer<'_>) -> Result<Vec<Balance>, String> {
        let data = match open(a, "account/balance", false)? {
            Outcome::Ok(d) => d,
            Outcome::Throttled(r) | Outcome::Unknown(r) | Outcome::Refused(r) => return Err(r),
        };
        let mut out = Vec::new();
        for d in data.as_array().and_then(|a| a.first()).and_then(|a| a["details"].as_array()).cloned().unwrap_or_default() {
            let num = |k: &str| match str_of(&d, k) {
                "" => Ok(Decimal::ZERO),
                v => decimal(k, v),
            };
            out.push(Balance { asset: str_of(&d, "ccy").to_owned(), free: num("availBal")?, locked: num("frozenBal")? });
        }
        Ok(out)
    }

    fn open_orders(&self, t: &Target<'_>) -> CallRequest {
        let q = format!("instType=SPOT&instId={}", enc(t.native));
        call(Exchange::Okx, t.account, "GET", "/api/v5/trade/orders-pending", q, Vec::new(), Priority::Account)
    }

    fn read_open_orders(&self, a: Answer<'_>) -> Result<Vec<OpenOrder>, String> {
        match open(a, "trade/orders-pending", false)? {
            Outcome::Ok(d) => Ok(d
                .as_array()
                .cloned()
                .unwrap_or_default()
                .iter()
                .map(|o| OpenOrder {
                    venue_order_id: str_of(o, "ordId").to_owned(),
                    client_order_id: str_of(o, "clOrdId").to_owned(),
                    native: str_of(o, "instId").to_owned(),
                })
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
        Target { account: "demo", native: "BTC-USDT", category: "" }
    }

    #[test]
    fn orders_carry_the_client_id_and_answers_their_own_code() {
        let spec =
            Spec { target: target(), side: Side::Sell, quantity: d("0.010"), price: d("65000.0"), tif: Tif::Fok, client_order_id: "sl1" };
        let body: Value = serde_json::from_slice(&Okx.create(&spec).body).unwrap();
        assert_eq!(
            body,
            serde_json::json!({"instId":"BTC-USDT","tdMode":"cash","side":"sell","ordType":"fok","px":"65000","sz":"0.01","clOrdId":"sl1"})
        );
        let r = |b: &[u8]| Okx.read_create((200, b)).unwrap();
        assert_eq!(
            r(br#"{"code":"0","msg":"","data":[{"ordId":"9","clOrdId":"sl1","sCode":"0","sMsg":""}]}"#),
            Read::Events(vec![Event::Accepted { venue_order_id: Some("9".into()) }])
        );
        assert!(
            matches!(r(br#"{"code":"1","msg":"All operations failed","data":[{"ordId":"","clOrdId":"sl1","sCode":"51008","sMsg":"Insufficient balance"}]}"#), Read::Events(e) if matches!(e[0], Event::Rejected { .. }))
        );
        assert!(matches!(Okx.read_create((429, br#"{"code":"50011","msg":"Too Many Requests","data":[]}"#)).unwrap(), Read::NotSent(_)));
        assert!(matches!(r(br#"{"code":"1","msg":"","data":[{"sCode":"51149","sMsg":"Order timed out"}]}"#), Read::Unknown(_)));
        let q = Okx.query(&target(), "sl1", Some("9"));
        assert_eq!((q[1].path.as_str(), q[1].query.as_str()), ("/api/v5/trade/fills", "instType=SPOT&instId=BTC-USDT&ordId=9"));
    }

    #[test]
    fn a_query_reads_the_state_and_each_fill() {
        let order: &[u8] = br#"{"code":"0","msg":"","data":[{"ordId":"9","clOrdId":"sl1","state":"canceled","accFillSz":"0.3"}]}"#;
        let fills: &[u8] = br#"{"code":"0","msg":"","data":[
            {"tradeId":"9002","ordId":"9","fillPx":"101","fillSz":"0.2","fee":"-0.02","feeCcy":"USDT","execType":"M","ts":"2000"},
            {"tradeId":"9001","ordId":"9","fillPx":"100","fillSz":"0.1","fee":"","feeCcy":"","execType":"T","ts":"1000"}]}"#;
        let Read::Events(ev) = Okx.read_query(&[(200, order), (200, fills)], "USDT", Time::ZERO).unwrap() else { panic!() };
        let got: Vec<(&str, Decimal, bool)> =
            ev.iter().filter_map(|e| if let Event::Fill(f) = e { Some((f.trade_id.as_str(), f.fee, f.maker)) } else { None }).collect();
        assert_eq!(got, [("9001", d("0"), false), ("9002", d("0.02"), true)]);
        assert!(matches!(ev.last(), Some(Event::Cancelled { .. })));
        assert_eq!(
            Okx.read_query(&[(200, br#"{"code":"51603","msg":"Order does not exist","data":[]}"#)], "USDT", Time::ZERO).unwrap(),
            Read::NotFound
        );
        let bal: &[u8] = br#"{"code":"0","data":[{"details":[{"ccy":"USDT","availBal":"90","frozenBal":"10"}]}]}"#;
        assert_eq!(Okx.read_balances((200, bal)).unwrap(), vec![Balance { asset: "USDT".into(), free: d("90"), locked: d("10") }]);
        let inst: &[u8] = br#"{"code":"0","msg":"","data":[{"instType":"SPOT","instId":"BTC-USDT","tickSz":"0.1","lotSz":"0.00000001","minSz":"0.00001","maxLmtSz":"9999999999"}]}"#;
        assert_eq!(Okx.read_rules(&[(200, inst)], "BTC-USDT").unwrap().tick, d("0.1"));
    }
}
