//! Upbit's WebSocket (`/websocket/v1`): one JSON array request per subscription
//! set (ticket, types with codes, format), which replaces the previous one; frames
//! are JSON in binary frames, in the DEFAULT, SIMPLE (abbreviated keys), JSON_LIST
//! or SIMPLE_LIST format; every orderbook message is a whole book; text `PING` is
//! answered `{"status":"UP"}`.

use std::collections::BTreeMap;

use rust_decimal::Decimal;
use serde_json::{Map, Value, json};

use super::{Cx, InstTick, Protocol, Tick, utc_date_time};
use crate::market::{Candle, Market, Trade};
use crate::venues::num;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub(super) enum Format {
    #[default]
    Default,
    Simple,
    List,
    SimpleList,
}

impl Format {
    pub(super) fn simple(self) -> bool {
        matches!(self, Format::Simple | Format::SimpleList)
    }
    pub(super) fn list(self) -> bool {
        matches!(self, Format::List | Format::SimpleList)
    }
}

impl Format {
    /// A request's `format` field; an INVALID_PARAM error otherwise.
    pub(super) fn parse(f: &Value, cx: &mut Cx<'_>) -> Option<Format> {
        Some(match f.as_str() {
            Some("DEFAULT") => Format::Default,
            Some("SIMPLE") => Format::Simple,
            Some("JSON_LIST") => Format::List,
            Some("SIMPLE_LIST") => Format::SimpleList,
            _ => {
                error(cx, "INVALID_PARAM", "format must be DEFAULT, SIMPLE, JSON_LIST or SIMPLE_LIST");
                return None;
            }
        })
    }

    /// Messages in this format: one frame each, or one list frame.
    pub(super) fn send(self, msgs: Vec<Msg>, cx: &mut Cx<'_>) {
        if msgs.is_empty() {
            return;
        }
        let simple = self.simple();
        if self.list() {
            cx.json(&Value::Array(msgs.into_iter().map(|m| m.render(simple)).collect()));
        } else {
            for m in msgs {
                cx.json(&m.render(simple));
            }
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Kind {
    Ticker,
    Trade,
    Orderbook,
    Candle,
}

#[derive(Debug, Clone)]
struct Sub {
    /// Orderbook units requested (the ".N" suffix); whole book otherwise.
    units: usize,
    realtime: bool,
}

#[derive(Default)]
pub(crate) struct Upbit {
    subs: BTreeMap<(Kind, String), Sub>,
    format: Format,
}

pub(super) fn error(cx: &mut Cx<'_>, name: &str, message: &str) {
    cx.bad_requests += 1;
    cx.json(&json!({ "error": { "name": name, "message": message } }));
}

/// A message with its DEFAULT and SIMPLE keys side by side.
pub(super) struct Msg(pub(super) Vec<(&'static str, &'static str, Value)>);

impl Msg {
    pub(super) fn render(self, simple: bool) -> Value {
        let mut m = Map::new();
        for (d, s, v) in self.0 {
            m.insert(if simple { s } else { d }.to_owned(), v);
        }
        Value::Object(m)
    }
}

pub(super) fn stream_type(snapshot: bool) -> Value {
    Value::String(if snapshot { "SNAPSHOT" } else { "REALTIME" }.into())
}

fn ticker(i: &InstTick, ts: u64, snapshot: bool) -> Msg {
    let s = &i.stats;
    let change = s.last - s.prev_close;
    let word = if change > Decimal::ZERO {
        "RISE"
    } else if change < Decimal::ZERO {
        "FALL"
    } else {
        "EVEN"
    };
    let rate = if s.prev_close.is_zero() { Decimal::ZERO } else { (change / s.prev_close).round_dp(8) };
    let (date, tm) = utc_date_time(ts);
    let last_trade = i.trades.last();
    Msg(vec![
        ("type", "ty", json!("ticker")),
        ("code", "cd", json!(i.native)),
        ("opening_price", "op", num(s.open)),
        ("high_price", "hp", num(s.high)),
        ("low_price", "lp", num(s.low)),
        ("trade_price", "tp", num(s.last)),
        ("prev_closing_price", "pcp", num(s.prev_close)),
        ("change", "c", json!(word)),
        ("change_price", "cp", num(change.abs())),
        ("signed_change_price", "scp", num(change)),
        ("change_rate", "cr", num(rate.abs())),
        ("signed_change_rate", "scr", num(rate)),
        ("trade_volume", "tv", num(last_trade.map_or(Decimal::ZERO, |t| t.qty))),
        ("acc_trade_volume_24h", "atv24h", num(s.volume)),
        ("acc_trade_price_24h", "atp24h", num(s.quote_volume)),
        ("trade_date", "tdt", json!(date)),
        ("trade_time", "ttm", json!(tm)),
        ("trade_timestamp", "ttms", json!(last_trade.map_or(ts, |t| t.ts_ms))),
        ("ask_bid", "ab", json!(if last_trade.is_some_and(|t| !t.buyer_taker) { "ASK" } else { "BID" })),
        ("market_state", "ms", json!("ACTIVE")),
        ("timestamp", "tms", json!(ts)),
        ("stream_type", "st", stream_type(snapshot)),
    ])
}

fn trade(native: &str, t: &Trade, prev_close: Decimal, snapshot: bool) -> Msg {
    let (date, tm) = utc_date_time(t.ts_ms);
    Msg(vec![
        ("type", "ty", json!("trade")),
        ("code", "cd", json!(native)),
        ("trade_price", "tp", num(t.price)),
        ("trade_volume", "tv", num(t.qty)),
        // ASK: a seller hit the bid; BID: a buyer lifted the ask.
        ("ask_bid", "ab", json!(if t.buyer_taker { "BID" } else { "ASK" })),
        ("prev_closing_price", "pcp", num(prev_close)),
        ("trade_date", "td", json!(date)),
        ("trade_time", "ttm", json!(tm)),
        ("trade_timestamp", "ttms", json!(t.ts_ms)),
        ("sequential_id", "sid", json!(t.id)),
        ("timestamp", "tms", json!(t.ts_ms)),
        ("stream_type", "st", stream_type(snapshot)),
    ])
}

fn orderbook(i: &InstTick, units: usize, ts: u64, snapshot: bool, simple: bool) -> Msg {
    let (bids, asks) = &i.top;
    let n = units.min(bids.len().max(asks.len()));
    let zero = (Decimal::ZERO, Decimal::ZERO);
    let list: Vec<Value> = (0..n)
        .map(|k| {
            let (ap, aq) = asks.get(k).copied().unwrap_or(zero);
            let (bp, bq) = bids.get(k).copied().unwrap_or(zero);
            let keys = if simple { ["ap", "bp", "as", "bs"] } else { ["ask_price", "bid_price", "ask_size", "bid_size"] };
            json!({ keys[0]: num(ap), keys[1]: num(bp), keys[2]: num(aq), keys[3]: num(bq) })
        })
        .collect();
    let total = |v: &[(Decimal, Decimal)]| num(v.iter().take(n).map(|l| l.1).sum());
    Msg(vec![
        ("type", "ty", json!("orderbook")),
        ("code", "cd", json!(i.native)),
        ("timestamp", "tms", json!(ts)),
        ("total_ask_size", "tas", total(asks)),
        ("total_bid_size", "tbs", total(bids)),
        ("orderbook_units", "obu", Value::Array(list)),
        ("stream_type", "st", stream_type(snapshot)),
        ("level", "lv", json!(0)),
    ])
}

fn candle(native: &str, c: &Candle, ts: u64, snapshot: bool) -> Msg {
    let t = time::OffsetDateTime::from_unix_timestamp((c.open_ms / 1000) as i64).unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    let kst = t + time::Duration::hours(9);
    let fmt = |t: time::OffsetDateTime| {
        format!("{:04}-{:02}-{:02}T{:02}:{:02}:{:02}", t.year(), t.month() as u8, t.day(), t.hour(), t.minute(), t.second())
    };
    Msg(vec![
        ("type", "ty", json!("candle.1m")),
        ("code", "cd", json!(native)),
        ("candle_date_time_utc", "cdttmu", json!(fmt(t))),
        ("candle_date_time_kst", "cdttmk", json!(fmt(kst))),
        ("opening_price", "op", num(c.open)),
        ("high_price", "hp", num(c.high)),
        ("low_price", "lp", num(c.low)),
        ("trade_price", "tp", num(c.close)),
        ("candle_acc_trade_volume", "catv", num(c.volume)),
        ("candle_acc_trade_price", "catp", num(c.quote_volume)),
        ("timestamp", "tms", json!(ts)),
        ("stream_type", "st", stream_type(snapshot)),
    ])
}

impl Upbit {
    fn parse(&mut self, text: &str, cx: &mut Cx<'_>) -> Option<Vec<(Kind, String, Sub, bool)>> {
        let Ok(Value::Array(parts)) = serde_json::from_str::<Value>(text) else {
            error(cx, "WRONG_FORMAT", "the request must be a JSON array");
            return None;
        };
        if !parts.iter().any(|p| p.get("ticket").and_then(Value::as_str).is_some_and(|t| !t.is_empty())) {
            error(cx, "NO_TICKET", "a ticket field is required");
            return None;
        }
        let mut format = Format::Default;
        let mut wanted = Vec::new();
        for p in &parts {
            if let Some(f) = p.get("format") {
                format = Format::parse(f, cx)?;
            }
            let Some(ty) = p.get("type") else { continue };
            let kind = match ty.as_str() {
                Some("ticker") => Kind::Ticker,
                Some("trade") => Kind::Trade,
                Some("orderbook") => Kind::Orderbook,
                Some("candle.1m") => Kind::Candle,
                _ => {
                    error(cx, "INVALID_PARAM", &format!("unknown type {ty}"));
                    return None;
                }
            };
            let Some(codes) = p.get("codes").and_then(Value::as_array).filter(|c| !c.is_empty()) else {
                error(cx, "NO_CODES", "codes are required");
                return None;
            };
            let only_snapshot = p.get("is_only_snapshot").and_then(Value::as_bool).unwrap_or(false);
            let only_realtime = p.get("is_only_realtime").and_then(Value::as_bool).unwrap_or(false);
            for c in codes {
                let Some(code) = c.as_str() else {
                    error(cx, "INVALID_PARAM", "codes must be strings");
                    return None;
                };
                let (native, units) = match code.split_once('.') {
                    Some((n, u)) if kind == Kind::Orderbook => match u.parse::<usize>() {
                        Ok(u) if (1..=30).contains(&u) => (n.to_owned(), u),
                        _ => {
                            error(cx, "INVALID_PARAM", &format!("bad orderbook unit count in {code}"));
                            return None;
                        }
                    },
                    _ => (code.to_owned(), 30),
                };
                wanted.push((kind, native, Sub { units, realtime: !only_snapshot }, !only_realtime));
            }
        }
        if wanted.is_empty() {
            error(cx, "NO_TYPE", "a type field is required");
            return None;
        }
        self.format = format;
        Some(wanted)
    }

    fn send(&self, msgs: Vec<Msg>, cx: &mut Cx<'_>) {
        self.format.send(msgs, cx);
    }
}

impl Protocol for Upbit {
    fn on_text(&mut self, text: &str, market: &Market, cx: &mut Cx<'_>) {
        if text.trim() == "PING" {
            cx.json(&json!({ "status": "UP" }));
            return;
        }
        let Some(wanted) = self.parse(text, cx) else { return };
        // A new request replaces the subscription of the connection.
        self.subs.clear();
        let mut snaps = Vec::new();
        let simple = self.format.simple();
        for (kind, native, sub, snapshot) in wanted {
            let Some(inst) = market.instrument(&native) else {
                // Upbit answers unknown codes with silence; nothing to send.
                continue;
            };
            if snapshot {
                let view = InstTick {
                    native: native.clone(),
                    changes: Vec::new(),
                    seq: inst.book.seq,
                    update_id: inst.book.update_id,
                    trades: inst.trades.back().cloned().into_iter().collect(),
                    stats: super::Stats::of(inst),
                    top: inst.book.top(super::TOP_LEVELS),
                    candle: inst.candles.back().cloned(),
                };
                match kind {
                    Kind::Ticker => snaps.push(ticker(&view, cx.now_ms, true)),
                    Kind::Orderbook => snaps.push(orderbook(&view, sub.units, cx.now_ms, true, simple)),
                    Kind::Trade => snaps.extend(view.trades.iter().map(|t| trade(&native, t, inst.prev_close, true))),
                    Kind::Candle => snaps.extend(view.candle.iter().map(|c| candle(&native, c, cx.now_ms, true))),
                }
            }
            if sub.realtime {
                self.subs.insert((kind, native), sub);
            }
        }
        self.send(snaps, cx);
    }

    fn on_tick(&mut self, tick: &Tick, cx: &mut Cx<'_>) {
        let simple = self.format.simple();
        let mut msgs = Vec::new();
        for ((kind, native), sub) in &self.subs {
            let Some(i) = tick.insts.iter().find(|i| &i.native == native) else { continue };
            match kind {
                Kind::Ticker if !i.trades.is_empty() => msgs.push(ticker(i, tick.ts_ms, false)),
                Kind::Trade => msgs.extend(i.trades.iter().map(|t| trade(native, t, i.stats.prev_close, false))),
                Kind::Orderbook if !i.changes.is_empty() && !cx.withheld(native) => {
                    msgs.push(orderbook(i, sub.units, tick.ts_ms, false, simple));
                }
                Kind::Candle if !i.trades.is_empty() => msgs.extend(i.candle.iter().map(|c| candle(native, c, tick.ts_ms, false))),
                _ => {}
            }
        }
        self.send(msgs, cx);
    }

    fn book_symbols(&self) -> Vec<String> {
        self.subs.keys().filter(|(k, _)| *k == Kind::Orderbook).map(|(_, n)| n.clone()).collect()
    }

    fn binary(&self) -> bool {
        true
    }

    fn bad_trade(&self) -> String {
        let m = Msg(vec![
            ("type", "ty", json!("trade")),
            ("code", "cd", json!("KRW-BTC")),
            ("trade_price", "tp", json!("not-a-price")),
            ("trade_volume", "tv", json!(1)),
            ("ask_bid", "ab", json!("BID")),
            ("timestamp", "tms", json!(1)),
            ("stream_type", "st", stream_type(false)),
        ])
        .render(self.format.simple());
        if self.format.list() { Value::Array(vec![m]) } else { m }.to_string()
    }
}
