//! Upbit's order API as the live venue speaks it through the dispatcher, pure:
//! create, query and cancel by `identifier` (the client order id), the tick
//! policy (`GET /v1/orderbook/instruments`) and minimum total (`GET
//! /v1/orders/chance`), balances (`GET /v1/accounts`) and open orders.
//!
//! A query (`GET /v1/order?identifier=`) lists the order's executions
//! (`trades`): each becomes a fill with its own trade id, the same uuid the
//! private stream's `trade_uuid` carries, so a fill seen on both counts once.
//! Upbit gives the order's fee (`paid_fee`), not each trade's: it is shared
//! out over the trades by volume, in the quote currency. A cancel is answered
//! with the order as it stood ("wait"): that it is cancelled shows on the
//! stream or in the next query.

use serde::Deserialize;
use sluice_domain::{Decimal, Exchange, Qty, Side};
use sluice_proto::dispatcher::v1::{CallRequest, Priority};
use sluice_rate::Time;

use super::{Answer, Balance, CancelRead, LiveVenue, OpenOrder, Read, Spec, Target, call, decimal, enc};
use crate::fills::Tif;
use crate::instrument::Rules;
use crate::order::{Event, Fill};

/// Upbit.
pub struct Upbit;

#[derive(Debug, Deserialize)]
struct ApiError {
    error: ErrorBody,
}

#[derive(Debug, Deserialize)]
struct ErrorBody {
    name: String,
    message: String,
}

#[derive(Debug, Deserialize)]
struct Trade {
    uuid: String,
    price: Decimal,
    volume: Decimal,
    created_at: String,
}

#[derive(Debug, Deserialize)]
struct Order {
    uuid: String,
    state: String,
    #[serde(default)]
    executed_volume: Decimal,
    #[serde(default)]
    paid_fee: Decimal,
    #[serde(default)]
    trades: Vec<Trade>,
    #[serde(default)]
    market: String,
    #[serde(default)]
    identifier: Option<String>,
}

fn error_text(body: &[u8]) -> String {
    match serde_json::from_slice::<ApiError>(body) {
        Ok(e) => format!("{}: {}", e.error.name, e.error.message),
        Err(_) => String::from_utf8_lossy(body).chars().take(200).collect(),
    }
}

fn error_name(body: &[u8]) -> Option<String> {
    serde_json::from_slice::<ApiError>(body).ok().map(|e| e.error.name)
}

/// An ISO 8601 time with an offset (`2026-12-02T15:42:23+09:00`).
fn time_of(s: &str) -> Option<Time> {
    let t = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).ok()?;
    u64::try_from(t.unix_timestamp_nanos()).ok().map(Time::from_nanos)
}

fn ok(status: u16) -> bool {
    (200..300).contains(&status)
}

impl LiveVenue for Upbit {
    fn exchange(&self) -> Exchange {
        Exchange::Upbit
    }

    fn create(&self, o: &Spec<'_>) -> CallRequest {
        let mut body = serde_json::json!({
            "market": o.target.native,
            "side": if o.side == Side::Buy { "bid" } else { "ask" },
            "volume": o.quantity.normalize().to_string(),
            "price": o.price.normalize().to_string(),
            "ord_type": "limit",
            "identifier": o.client_order_id,
        });
        let tif = match o.tif {
            Tif::Gtc => None,
            Tif::Ioc => Some("ioc"),
            Tif::Fok => Some("fok"),
            Tif::PostOnly => Some("post_only"),
        };
        if let Some(t) = tif {
            body["time_in_force"] = t.into();
        }
        let mut c =
            call(Exchange::Upbit, o.target.account, "POST", "/v1/orders", String::new(), body.to_string().into_bytes(), Priority::Order);
        c.idempotency_key = o.client_order_id.into();
        c
    }

    /// 2xx: accepted; 4xx: rejected by Upbit.
    fn read_create(&self, (status, body): Answer<'_>) -> Result<Read, String> {
        if !ok(status) {
            return Ok(Read::Events(vec![Event::Rejected { reason: format!("upbit {status}: {}", error_text(body)) }]));
        }
        let o: Order = serde_json::from_slice(body).map_err(|e| format!("upbit order answer: {e}"))?;
        Ok(Read::Events(vec![Event::Accepted { venue_order_id: Some(o.uuid) }]))
    }

    fn cancel(&self, t: &Target<'_>, cid: &str) -> CallRequest {
        call(Exchange::Upbit, t.account, "DELETE", "/v1/order", format!("identifier={}", enc(cid)), Vec::new(), Priority::Order)
    }

    fn read_cancel(&self, (status, body): Answer<'_>) -> CancelRead {
        if !ok(status) {
            return CancelRead::Refused(format!("upbit {status}: {}", error_text(body)));
        }
        match serde_json::from_slice::<Order>(body) {
            Ok(o) if o.state == "cancel" => CancelRead::Done(vec![Event::Cancelled { reason: "cancelled on upbit".into() }]),
            _ => CancelRead::Taken,
        }
    }

    fn query(&self, t: &Target<'_>, cid: &str, _venue_order_id: Option<&str>) -> Vec<CallRequest> {
        vec![call(Exchange::Upbit, t.account, "GET", "/v1/order", format!("identifier={}", enc(cid)), Vec::new(), Priority::Account)]
    }

    /// The order accepted, each of its executions, and how it ended (`cancel`;
    /// `done` is the fills themselves).
    fn read_query(&self, answers: &[Answer<'_>], fee_asset: &str, now: Time) -> Result<Read, String> {
        let &[(status, body)] = answers else { return Err(format!("upbit order query: {} answers, expected 1", answers.len())) };
        if status == 404 {
            return match error_name(body).as_deref() {
                Some("order_not_found") => Ok(Read::NotFound),
                _ => Err(format!("upbit 404: {}", error_text(body))),
            };
        }
        if !ok(status) {
            return Err(format!("upbit {status}: {}", error_text(body)));
        }
        let o: Order = serde_json::from_slice(body).map_err(|e| format!("upbit order answer: {e}"))?;
        let mut events = vec![Event::Accepted { venue_order_id: Some(o.uuid.clone()) }];
        let traded: Decimal = o.trades.iter().map(|t| t.volume).sum();
        for t in &o.trades {
            let quantity = Qty::new(t.volume).map_err(|e| format!("upbit trade {}: {e}", t.uuid))?;
            let fee = if traded.is_zero() { Decimal::ZERO } else { o.paid_fee * t.volume / traded };
            events.push(Event::Fill(Fill {
                trade_id: t.uuid.clone(),
                quantity,
                price: t.price,
                fee,
                fee_asset: fee_asset.to_owned(),
                maker: false,
                time: time_of(&t.created_at).unwrap_or(now),
            }));
        }
        if traded < o.executed_volume {
            tracing::warn!(market = %o.market, uuid = %o.uuid, executed = %o.executed_volume, listed = %traded,
                "upbit reports more executed than its trades list; the rest comes from the next query or the stream");
        }
        match o.state.as_str() {
            "cancel" => events.push(Event::Cancelled { reason: "cancelled on upbit".into() }),
            "wait" | "watch" | "done" => {}
            other => return Err(format!("upbit order {}: unknown state '{other}'", o.uuid)),
        }
        Ok(Read::Events(events))
    }

    fn rules(&self, t: &Target<'_>) -> Vec<CallRequest> {
        let m = enc(t.native);
        vec![
            call(Exchange::Upbit, "", "GET", "/v1/orderbook/instruments", format!("markets={m}"), Vec::new(), Priority::Backfill),
            call(Exchange::Upbit, t.account, "GET", "/v1/orders/chance", format!("market={m}"), Vec::new(), Priority::Backfill),
        ]
    }

    /// The tick from the tick policy, the minimum total from the order chance;
    /// volumes go to 8 decimals.
    fn read_rules(&self, answers: &[Answer<'_>], native: &str) -> Result<Rules, String> {
        let &[(s1, ticks), (s2, chance)] = answers else { return Err("upbit rules: expected 2 answers".into()) };
        if !ok(s1) || !ok(s2) {
            let (s, b) = if ok(s1) { (s2, chance) } else { (s1, ticks) };
            return Err(format!("upbit {s}: {}", error_text(b)));
        }
        #[derive(Deserialize)]
        struct Tick {
            market: String,
            tick_size: String,
        }
        #[derive(Deserialize)]
        struct Side {
            min_total: String,
        }
        #[derive(Deserialize)]
        struct Market {
            bid: Side,
            ask: Side,
        }
        #[derive(Deserialize)]
        struct Chance {
            market: Market,
        }
        let list: Vec<Tick> = serde_json::from_slice(ticks).map_err(|e| format!("upbit orderbook/instruments: {e}"))?;
        let t = list.iter().find(|t| t.market == native).ok_or_else(|| format!("upbit has no tick policy for {native}"))?;
        let c: Chance = serde_json::from_slice(chance).map_err(|e| format!("upbit orders/chance: {e}"))?;
        let lot = Decimal::new(1, 8);
        let min_notional = decimal("min_total", &c.market.bid.min_total)?.max(decimal("min_total", &c.market.ask.min_total)?);
        Ok(Rules { tick: decimal("tick_size", &t.tick_size)?, lot, min_qty: lot, max_qty: None, min_notional })
    }

    fn balances(&self, account: &str) -> CallRequest {
        call(Exchange::Upbit, account, "GET", "/v1/accounts", String::new(), Vec::new(), Priority::Account)
    }

    fn read_balances(&self, (status, body): Answer<'_>) -> Result<Vec<Balance>, String> {
        if !ok(status) {
            return Err(format!("upbit {status}: {}", error_text(body)));
        }
        #[derive(Deserialize)]
        struct Row {
            currency: String,
            balance: String,
            locked: String,
        }
        let rows: Vec<Row> = serde_json::from_slice(body).map_err(|e| format!("upbit accounts: {e}"))?;
        rows.into_iter()
            .map(|r| Ok(Balance { free: decimal("balance", &r.balance)?, locked: decimal("locked", &r.locked)?, asset: r.currency }))
            .collect()
    }

    fn open_orders(&self, t: &Target<'_>) -> CallRequest {
        call(Exchange::Upbit, t.account, "GET", "/v1/orders/open", format!("market={}", enc(t.native)), Vec::new(), Priority::Account)
    }

    fn read_open_orders(&self, (status, body): Answer<'_>) -> Result<Vec<OpenOrder>, String> {
        if !ok(status) {
            return Err(format!("upbit {status}: {}", error_text(body)));
        }
        let list: Vec<Order> = serde_json::from_slice(body).map_err(|e| format!("upbit open orders: {e}"))?;
        Ok(list
            .into_iter()
            .map(|o| OpenOrder { venue_order_id: o.uuid, client_order_id: o.identifier.unwrap_or_default(), native: o.market })
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
        Target { account: "demo", native: "KRW-BTC", category: "" }
    }

    #[test]
    fn requests_carry_the_identifier_everywhere() {
        let spec = Spec {
            target: target(),
            side: Side::Buy,
            quantity: d("0.0100"),
            price: d("95000000"),
            tif: Tif::Ioc,
            client_order_id: "sl00ab",
        };
        let c = Upbit.create(&spec);
        assert_eq!(
            (c.method.as_str(), c.path.as_str(), c.idempotency_key.as_str(), c.priority),
            ("POST", "/v1/orders", "sl00ab", Priority::Order as i32)
        );
        let body: serde_json::Value = serde_json::from_slice(&c.body).unwrap();
        assert_eq!(
            body,
            serde_json::json!({"market": "KRW-BTC", "side": "bid", "volume": "0.01", "price": "95000000", "ord_type": "limit", "identifier": "sl00ab", "time_in_force": "ioc"})
        );
        assert_eq!(Upbit.query(&target(), "sl00ab", None)[0].query, "identifier=sl00ab");
        assert_eq!(Upbit.cancel(&target(), "sl 1").query, "identifier=sl%201");
        assert_eq!(Upbit.rules(&target())[0].query, "markets=KRW-BTC");
    }

    #[test]
    fn answers_become_events() {
        let rejected = Upbit.read_create((400, br#"{"error":{"name":"insufficient_funds_bid","message":"not enough KRW"}}"#)).unwrap();
        assert_eq!(rejected, Read::Events(vec![Event::Rejected { reason: "upbit 400: insufficient_funds_bid: not enough KRW".into() }]));
        let accepted = Upbit.read_create((201, br#"{"uuid":"u-1","state":"wait","market":"KRW-BTC"}"#)).unwrap();
        assert_eq!(accepted, Read::Events(vec![Event::Accepted { venue_order_id: Some("u-1".into()) }]));
        let body = br#"{"uuid":"u-1","state":"cancel","market":"KRW-BTC","executed_volume":"0.3","paid_fee":"30",
            "trades":[{"uuid":"t1","price":"100","volume":"0.1","funds":"10","created_at":"2026-12-02T15:00:00+09:00"},
                      {"uuid":"t2","price":"101","volume":"0.2","funds":"20.2","created_at":"2026-12-02T15:00:01+09:00"}]}"#;
        let Read::Events(ev) = Upbit.read_query(&[(200, body)], "KRW", Time::ZERO).unwrap() else { panic!() };
        assert_eq!(ev.len(), 4);
        let Event::Fill(f) = &ev[2] else { panic!() };
        assert_eq!((f.trade_id.as_str(), f.fee, f.time.as_millis()), ("t2", d("20"), 1_796_191_201_000));
        assert!(matches!(ev[3], Event::Cancelled { .. }));
        let missing: &[u8] = br#"{"error":{"name":"order_not_found","message":"no order"}}"#;
        assert_eq!(Upbit.read_query(&[(404, missing)], "KRW", Time::ZERO).unwrap(), Read::NotFound);
        assert!(Upbit.read_query(&[(200, br#"{"uuid":"u","state":"weird"}"#)], "KRW", Time::ZERO).unwrap_err().contains("weird"));
        assert!(Upbit.read_query(&[(500, b"oops")], "KRW", Time::ZERO).is_err(), "a failed query is no evidence");
        assert_eq!(Upbit.read_cancel((200, br#"{"uuid":"u","state":"wait"}"#)), CancelRead::Taken);
        assert!(matches!(Upbit.read_cancel((404, missing)), CancelRead::Refused(r) if r.contains("order_not_found")));
    }

    #[test]
    fn rules_balances_and_open_orders() {
        let ticks: &[u8] = br#"[{"market":"KRW-BTC","quote_currency":"KRW","tick_size":"1000","supported_levels":["0","10000"]}]"#;
        let chance: &[u8] = br#"{"bid_fee":"0.0005","market":{"id":"KRW-BTC","bid":{"currency":"KRW","min_total":"5000"},"ask":{"currency":"BTC","min_total":"5000"}}}"#;
        let r = Upbit.read_rules(&[(200, ticks), (200, chance)], "KRW-BTC").unwrap();
        assert_eq!((r.tick, r.lot, r.min_notional), (d("1000"), d("0.00000001"), d("5000")));
        assert!(Upbit.read_rules(&[(200, ticks), (200, chance)], "KRW-ETH").unwrap_err().contains("KRW-ETH"));
        let b = Upbit.read_balances((200, br#"[{"currency":"KRW","balance":"100","locked":"5","avg_buy_price":"0"}]"#)).unwrap();
        assert_eq!(b, vec![Balance { asset: "KRW".into(), free: d("100"), locked: d("5") }]);
        let open = Upbit
            .read_open_orders((
                200,
                br#"[{"uuid":"u","state":"wait","market":"KRW-BTC","identifier":"x"},{"uuid":"v","state":"wait","market":"KRW-BTC"}]"#,
            ))
            .unwrap();
        assert_eq!((open[0].client_order_id.as_str(), open[1].client_order_id.as_str()), ("x", ""));
    }
}
