//! Upbit's private WebSocket (`/websocket/v1/private`): the upgrade request carries
//! the same JWT as a REST call (no query hash); a refused login gets an
//! `INVALID_AUTH` error frame and the close. Requests look like the public ones
//! with the types `myOrder` (codes optional: none means every market) and
//! `myAsset` (no codes); frames come in the same four formats.
//!
//! A `myOrder` message shows an order after a change (`state` wait, trade, done,
//! cancel); in a `trade` message `price` and `volume` are the execution's, with its
//! `trade_uuid`. A `myAsset` message lists the currencies whose balance changed.

use std::collections::BTreeSet;

use rust_decimal::Decimal;
use serde_json::{Value, json};
use sluice_domain::Side;

use super::upbit::{Format, Msg, error, stream_type};
use super::{AccountEvents, Cx, Protocol, Tick};
use crate::accounts::{AccountEvent, OrderKind, OrderStatus, SimOrder};
use crate::market::Market;
use crate::venues::num;

pub(crate) struct UpbitPrivate {
    /// The account the upgrade's JWT named, or why it was refused.
    login: Result<String, String>,
    /// Markets of the myOrder subscription; `None` when there is none, empty for all.
    orders: Option<BTreeSet<String>>,
    assets: bool,
    format: Format,
}

impl UpbitPrivate {
    pub(crate) fn new(login: Result<String, String>) -> UpbitPrivate {
        UpbitPrivate { login, orders: None, assets: false, format: Format::Default }
    }

    /// A request: myOrder and myAsset replace the subscription; `None` on an error
    /// (already answered).
    fn parse(&self, text: &str, cx: &mut Cx<'_>) -> Option<(Option<BTreeSet<String>>, bool, Format)> {
        let Ok(Value::Array(parts)) = serde_json::from_str::<Value>(text) else {
            error(cx, "WRONG_FORMAT", "the request must be a JSON array");
            return None;
        };
        if !parts.iter().any(|p| p.get("ticket").and_then(Value::as_str).is_some_and(|t| !t.is_empty())) {
            error(cx, "NO_TICKET", "a ticket field is required");
            return None;
        }
        let (mut orders, mut assets, mut format) = (None, false, Format::Default);
        for p in &parts {
            if let Some(f) = p.get("format") {
                format = Format::parse(f, cx)?;
            }
            let Some(ty) = p.get("type") else { continue };
            match ty.as_str() {
                Some("myOrder") => {
                    let mut codes = BTreeSet::new();
                    for c in p.get("codes").and_then(Value::as_array).into_iter().flatten() {
                        let Some(c) = c.as_str() else {
                            error(cx, "INVALID_PARAM", "codes must be strings");
                            return None;
                        };
                        codes.insert(c.to_owned());
                    }
                    orders = Some(codes);
                }
                Some("myAsset") => {
                    if p.get("codes").is_some() {
                        error(cx, "WRONG_FORMAT", "myAsset takes no codes");
                        return None;
                    }
                    assets = true;
                }
                _ => {
                    error(cx, "INVALID_PARAM", &format!("type {ty} is not served on the private endpoint"));
                    return None;
                }
            }
        }
        if orders.is_none() && !assets {
            error(cx, "NO_TYPE", "a type field is required");
            return None;
        }
        Some((orders, assets, format))
    }
}

fn side(s: Side) -> &'static str {
    match s {
        Side::Buy => "BID",
        Side::Sell => "ASK",
    }
}

fn order_type(o: &SimOrder) -> &'static str {
    match (o.kind, o.side) {
        (OrderKind::Limit, _) => "limit",
        // A market buy is by quote amount ("price"), a market sell by volume.
        (OrderKind::Market, Side::Buy) => "price",
        (OrderKind::Market, Side::Sell) => "market",
    }
}

fn opt(d: Option<Decimal>) -> Value {
    d.map_or(Value::Null, num)
}

/// A myOrder message; `trade` is the execution of a `trade` message.
fn my_order(o: &SimOrder, trade: Option<(&str, Decimal, Decimal)>, ts: u64) -> Msg {
    let state = match (trade, o.status) {
        (Some(_), _) => "trade",
        (None, OrderStatus::Open) => "wait",
        (None, OrderStatus::Filled) => "done",
        (None, OrderStatus::Canceled) => "cancel",
    };
    let (price, volume) = match trade {
        Some((_, p, q)) => (Some(p), Some(q)),
        None => (o.price, (o.kind == OrderKind::Limit || o.side == Side::Sell).then_some(o.qty)),
    };
    let locked = match (o.status, o.side) {
        (OrderStatus::Open, Side::Buy) => o.price.unwrap_or_default() * o.remaining(),
        (OrderStatus::Open, Side::Sell) => o.remaining(),
        _ => Decimal::ZERO,
    };
    let zero = num(Decimal::ZERO);
    Msg(vec![
        ("type", "ty", json!("myOrder")),
        ("code", "cd", json!(o.native)),
        ("uuid", "uid", json!(o.id)),
        ("ask_bid", "ab", json!(side(o.side))),
        ("order_type", "ot", json!(order_type(o))),
        ("state", "s", json!(state)),
        ("trade_uuid", "tuid", trade.map_or(Value::Null, |t| json!(t.0))),
        ("price", "p", opt(price)),
        ("avg_price", "ap", num(o.avg_price())),
        ("volume", "v", opt(volume)),
        ("remaining_volume", "rv", num(if o.status == OrderStatus::Open { o.remaining() } else { Decimal::ZERO })),
        ("executed_volume", "ev", num(o.filled)),
        ("trades_count", "tc", json!(u64::from(!o.filled.is_zero()))),
        ("reserved_fee", "rsf", zero.clone()),
        ("remaining_fee", "rmf", zero.clone()),
        ("paid_fee", "pf", zero.clone()),
        ("locked", "l", num(locked)),
        ("executed_funds", "ef", num(o.filled_quote)),
        ("time_in_force", "tif", Value::Null),
        ("trade_fee", "tf", if trade.is_some() { zero } else { Value::Null }),
        ("is_maker", "im", if trade.is_some() { json!(false) } else { Value::Null }),
        ("identifier", "id", o.client_id.as_ref().map_or(Value::Null, |c| json!(c))),
        ("trade_timestamp", "ttms", if trade.is_some() { json!(o.updated_ms) } else { Value::Null }),
        ("order_timestamp", "otms", json!(o.created_ms)),
        ("timestamp", "tms", json!(ts)),
        ("stream_type", "st", stream_type(false)),
    ])
}

fn my_asset(balances: &[(String, crate::accounts::Balance)], ts: u64, simple: bool) -> Msg {
    let keys = if simple { ["cu", "b", "l"] } else { ["currency", "balance", "locked"] };
    let list: Vec<Value> = balances.iter().map(|(a, b)| json!({ keys[0]: a, keys[1]: num(b.free), keys[2]: num(b.locked) })).collect();
    Msg(vec![
        ("type", "ty", json!("myAsset")),
        ("asset_uuid", "astuid", json!(uuid_like(ts))),
        ("assets", "ast", Value::Array(list)),
        ("asset_timestamp", "asttms", json!(ts)),
        ("timestamp", "tms", json!(ts)),
        ("stream_type", "st", stream_type(false)),
    ])
}

/// An id shaped like Upbit's asset uuid, unique per millisecond here.
fn uuid_like(ts: u64) -> String {
    format!("00000000-0000-4000-8000-{ts:012x}")
}

impl Protocol for UpbitPrivate {
    fn on_open(&mut self, cx: &mut Cx<'_>) {
        if let Err(why) = &self.login {
            let why = why.clone();
            error(cx, "INVALID_AUTH", &format!("authentication failed: {why}"));
            cx.close = Some((1008, "INVALID_AUTH".into()));
        }
    }

    fn private(&self) -> bool {
        true
    }

    fn on_text(&mut self, text: &str, _market: &Market, cx: &mut Cx<'_>) {
        if text.trim() == "PING" {
            cx.json(&json!({ "status": "UP" }));
            return;
        }
        if let Some((orders, assets, format)) = self.parse(text, cx) {
            (self.orders, self.assets, self.format) = (orders, assets, format);
        }
    }

    fn on_account(&mut self, ev: &AccountEvents, cx: &mut Cx<'_>) {
        if self.login.as_deref() != Ok(ev.account.as_str()) {
            return;
        }
        let wanted = |native: &str| self.orders.as_ref().is_some_and(|c| c.is_empty() || c.contains(native));
        let mut msgs = Vec::new();
        for e in &ev.events {
            match e {
                AccountEvent::Order(o) if wanted(&o.native) => msgs.push(my_order(o, None, ev.ts_ms)),
                AccountEvent::Fill { order, trade_id, price, qty } if wanted(&order.native) => {
                    msgs.push(my_order(order, Some((trade_id, *price, *qty)), ev.ts_ms));
                }
                AccountEvent::Balances(b) if self.assets => msgs.push(my_asset(b, ev.ts_ms, self.format.simple())),
                _ => {}
            }
        }
        self.format.send(msgs, cx);
    }

    fn on_tick(&mut self, _tick: &Tick, _cx: &mut Cx<'_>) {}

    fn book_symbols(&self) -> Vec<String> {
        Vec::new()
    }

    fn binary(&self) -> bool {
        true
    }

    fn bad_trade(&self) -> String {
        json!({ "type": "myOrder", "code": "KRW-BTC", "uuid": "x", "state": "trade", "price": "not-a-price", "volume": 1,
                "ask_bid": "BID", "timestamp": 1, "stream_type": "REALTIME" })
        .to_string()
    }
}
