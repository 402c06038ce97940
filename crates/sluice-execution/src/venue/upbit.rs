//! Upbit's order API as the live venue speaks it through the dispatcher, pure:
//! the requests (create, query and cancel by `identifier`, the client order id)
//! and what each answer means as events of the order state machine.
//!
//! An order is always a limit: a market order with a slippage cap is a limit at
//! the cap with `time_in_force: "ioc"` (Upbit's market orders take no price
//! bound). A query lists the order's executions (`trades`): each becomes a fill
//! with its own trade id, so a fill seen on the private stream and again here
//! counts once. Upbit gives the order's fee (`paid_fee`), not each trade's: it
//! is shared out over the trades by volume, in the quote currency.

use serde::Deserialize;
use sluice_domain::{Decimal, Qty, Side};
use sluice_proto::dispatcher::v1::{CallRequest, Priority};
use sluice_rate::Time;

use crate::order::{Event, Fill};

/// An order to place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spec<'a> {
    pub account: &'a str,
    /// Upbit's spelling, e.g. "KRW-BTC".
    pub market: &'a str,
    pub side: Side,
    pub volume: Decimal,
    pub price: Decimal,
    /// Immediate or cancel (a market order under a cap).
    pub ioc: bool,
    pub identifier: &'a str,
}

fn call(account: &str, method: &str, path: &str, query: String, body: Vec<u8>, priority: Priority, key: &str) -> CallRequest {
    CallRequest {
        exchange: "upbit".into(),
        account: account.into(),
        method: method.into(),
        path: path.into(),
        query,
        body,
        priority: priority as i32,
        idempotency_key: key.into(),
        ..Default::default()
    }
}

fn enc(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, percent_encoding::NON_ALPHANUMERIC).to_string()
}

/// `POST /v1/orders`, keyed by the identifier in the dispatcher too.
pub fn create(o: &Spec<'_>) -> CallRequest {
    let mut body = serde_json::json!({
        "market": o.market,
        "side": if o.side == Side::Buy { "bid" } else { "ask" },
        "volume": o.volume.normalize().to_string(),
        "price": o.price.normalize().to_string(),
        "ord_type": "limit",
        "identifier": o.identifier,
    });
    if o.ioc {
        body["time_in_force"] = "ioc".into();
    }
    call(o.account, "POST", "/v1/orders", String::new(), body.to_string().into_bytes(), Priority::Order, o.identifier)
}

/// `GET /v1/order?identifier=…`: found even when its uuid was never learned.
pub fn query(account: &str, identifier: &str) -> CallRequest {
    call(account, "GET", "/v1/order", format!("identifier={}", enc(identifier)), Vec::new(), Priority::Account, "")
}

/// `DELETE /v1/order?identifier=…`.
pub fn cancel(account: &str, identifier: &str) -> CallRequest {
    call(account, "DELETE", "/v1/order", format!("identifier={}", enc(identifier)), Vec::new(), Priority::Order, "")
}

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
}

/// What an answer means.
#[derive(Debug, Clone, PartialEq)]
pub enum Read {
    /// These events, in order.
    Events(Vec<Event>),
    /// Upbit has no such order (`order_not_found`).
    NotFound,
}

fn error_text(body: &[u8]) -> String {
    match serde_json::from_slice::<ApiError>(body) {
        Ok(e) => format!("{}: {}", e.error.name, e.error.message),
        Err(_) => String::from_utf8_lossy(body).chars().take(200).collect(),
    }
}

/// The answer to `create` (2xx: accepted; 4xx: rejected by Upbit).
pub fn read_create(status: u16, body: &[u8]) -> Result<Read, String> {
    if !(200..300).contains(&status) {
        return Ok(Read::Events(vec![Event::Rejected { reason: format!("upbit {status}: {}", error_text(body)) }]));
    }
    let o: Order = serde_json::from_slice(body).map_err(|e| format!("upbit order answer: {e}"))?;
    Ok(Read::Events(vec![Event::Accepted { venue_order_id: Some(o.uuid) }]))
}

/// An ISO 8601 time with an offset (`2026-12-02T15:42:23+09:00`).
fn time_of(s: &str) -> Option<Time> {
    let t = time::OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339).ok()?;
    u64::try_from(t.unix_timestamp_nanos()).ok().map(Time::from_nanos)
}

/// The answer to a query: the order accepted, each of its executions, and how it
/// ended (`cancel`; `done` is the fills themselves). `fee_asset` is the market's
/// quote currency.
pub fn read_order(status: u16, body: &[u8], fee_asset: &str, now: Time) -> Result<Read, String> {
    if status == 404 {
        return match serde_json::from_slice::<ApiError>(body) {
            Ok(e) if e.error.name == "order_not_found" => Ok(Read::NotFound),
            _ => Err(format!("upbit 404: {}", error_text(body))),
        };
    }
    if !(200..300).contains(&status) {
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

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> Decimal {
        s.parse().unwrap()
    }

    #[test]
    fn requests_carry_the_identifier_everywhere() {
        let spec = Spec {
            account: "demo",
            market: "KRW-BTC",
            side: Side::Buy,
            volume: d("0.0100"),
            price: d("95000000"),
            ioc: true,
            identifier: "sl00ab",
        };
        let c = create(&spec);
        assert_eq!(
            (c.method.as_str(), c.path.as_str(), c.idempotency_key.as_str(), c.priority),
            ("POST", "/v1/orders", "sl00ab", Priority::Order as i32)
        );
        let body: serde_json::Value = serde_json::from_slice(&c.body).unwrap();
        assert_eq!(
            body,
            serde_json::json!({"market": "KRW-BTC", "side": "bid", "volume": "0.01", "price": "95000000", "ord_type": "limit", "identifier": "sl00ab", "time_in_force": "ioc"})
        );
        assert_eq!(query("demo", "sl00ab").query, "identifier=sl00ab");
        assert_eq!(cancel("demo", "sl 1").query, "identifier=sl%201");
    }

    #[test]
    fn answers_become_events() {
        let rejected = read_create(400, br#"{"error":{"name":"insufficient_funds_bid","message":"not enough KRW"}}"#).unwrap();
        assert_eq!(rejected, Read::Events(vec![Event::Rejected { reason: "upbit 400: insufficient_funds_bid: not enough KRW".into() }]));
        let accepted = read_create(201, br#"{"uuid":"u-1","state":"wait","market":"KRW-BTC"}"#).unwrap();
        assert_eq!(accepted, Read::Events(vec![Event::Accepted { venue_order_id: Some("u-1".into()) }]));
        let body = br#"{"uuid":"u-1","state":"cancel","market":"KRW-BTC","executed_volume":"0.3","paid_fee":"30",
            "trades":[{"uuid":"t1","price":"100","volume":"0.1","funds":"10","created_at":"2026-12-02T15:00:00+09:00"},
                      {"uuid":"t2","price":"101","volume":"0.2","funds":"20.2","created_at":"2026-12-02T15:00:01+09:00"}]}"#;
        let Read::Events(ev) = read_order(200, body, "KRW", Time::ZERO).unwrap() else { panic!() };
        assert_eq!(ev.len(), 4);
        let Event::Fill(f) = &ev[2] else { panic!() };
        assert_eq!((f.trade_id.as_str(), f.fee, f.time.as_millis()), ("t2", d("20"), 1_796_191_201_000));
        assert!(matches!(ev[3], Event::Cancelled { .. }));
        assert_eq!(
            read_order(404, br#"{"error":{"name":"order_not_found","message":"no order"}}"#, "KRW", Time::ZERO).unwrap(),
            Read::NotFound
        );
        assert!(read_order(200, br#"{"uuid":"u","state":"weird"}"#, "KRW", Time::ZERO).unwrap_err().contains("weird"));
    }
}
