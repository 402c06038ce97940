//! OKX v5 public WebSocket (`/ws/v5/public`):
//! `{"op":"subscribe","args":[{"channel":"books","instId":"BTC-USDT"}]}`, text
//! `ping` answered `pong`; `books` sends a snapshot and then updates chained by
//! `prevSeqId` = the previous message's `seqId`. The CRC32 checksum is retired
//! and sent as 0; `tickers` and `trades` as OKX writes them.

use std::collections::BTreeMap;

use rust_decimal::Decimal;
use serde_json::{Value, json};

use super::{Cx, Protocol, Tick};
use crate::market::{Levels, Market};
use crate::venues::s;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
enum Channel {
    Books,
    Tickers,
    Trades,
}

#[derive(Default)]
pub(crate) struct Okx {
    /// (channel, instId) to the last book update id sent on it.
    subs: BTreeMap<(Channel, String), u64>,
    subscribes: Option<Vec<sluice_rate::server::ServerWindow>>,
}

fn side(v: &Levels) -> Vec<Value> {
    v.iter().map(|(p, q)| json!([s(*p), s(*q), "0", "1"])).collect()
}

fn ticker(inst: &str, st: &super::Stats, ts: u64, last_qty: Decimal) -> Value {
    let (bp, bq) = st.bid.unwrap_or_default();
    let (ap, aq) = st.ask.unwrap_or_default();
    json!({ "instType": "SPOT", "instId": inst, "last": s(st.last), "lastSz": s(last_qty), "askPx": s(ap), "askSz": s(aq),
            "bidPx": s(bp), "bidSz": s(bq), "open24h": s(st.open), "high24h": s(st.high), "low24h": s(st.low),
            "volCcy24h": s(st.quote_volume), "vol24h": s(st.volume), "sodUtc0": s(st.open), "sodUtc8": s(st.open),
            "ts": ts.to_string() })
}

impl Protocol for Okx {
    fn on_text(&mut self, text: &str, market: &Market, cx: &mut Cx<'_>) {
        let conn = format!("{:08x}", cx.conn_id);
        if text == "ping" {
            cx.text("pong".into());
            return;
        }
        let err = |cx: &mut Cx<'_>, code: &str, msg: String| {
            cx.bad_requests += 1;
            cx.json(&json!({ "event": "error", "code": code, "msg": msg, "connId": conn }));
        };
        let Ok(req) = serde_json::from_str::<Value>(text) else {
            return err(cx, "60012", format!("Invalid request: {text}"));
        };
        let op = req.get("op").and_then(Value::as_str).unwrap_or("");
        if op != "subscribe" && op != "unsubscribe" {
            return err(cx, "60012", format!("Invalid request: {text}"));
        }
        let windows = self.subscribes.get_or_insert_with(|| super::windows(&cx.config.subscribes));
        if !super::take(windows, sluice_rate::Time::from_millis(cx.now_ms)) {
            err(cx, "60014", "Requests too frequent.".into());
            cx.close = Some((4004, "too many subscribe requests".into()));
            return;
        }
        let Some(args) = req.get("args").and_then(Value::as_array).filter(|a| !a.is_empty()) else {
            return err(cx, "60012", format!("Invalid request: {text}"));
        };
        for a in args {
            let (Some(ch), Some(inst)) = (a.get("channel").and_then(Value::as_str), a.get("instId").and_then(Value::as_str)) else {
                return err(cx, "60012", format!("Invalid request: {text}"));
            };
            let channel = match ch {
                "books" => Channel::Books,
                "tickers" => Channel::Tickers,
                "trades" => Channel::Trades,
                _ => {
                    return err(
                        cx,
                        "60018",
                        format!(
                            "Wrong URL or channel:{ch},instId:{inst} doesn't exist. Please use the correct URL, channel and parameters referring to API document."
                        ),
                    );
                }
            };
            let Some(i) = market.instrument(inst) else {
                return err(
                    cx,
                    "60018",
                    format!(
                        "Wrong URL or channel:{ch},instId:{inst} doesn't exist. Please use the correct URL, channel and parameters referring to API document."
                    ),
                );
            };
            cx.json(&json!({ "event": op, "arg": { "channel": ch, "instId": inst }, "connId": conn }));
            if op == "unsubscribe" {
                self.subs.remove(&(channel, inst.to_owned()));
                continue;
            }
            let arg = json!({ "channel": ch, "instId": inst });
            match channel {
                Channel::Books => {
                    let (b, a) = i.book.top(400);
                    let data = json!([{ "asks": side(&a), "bids": side(&b), "ts": cx.now_ms.to_string(), "checksum": 0,
                                        "prevSeqId": -1, "seqId": i.book.update_id }]);
                    cx.json(&json!({ "arg": arg, "action": "snapshot", "data": data }));
                }
                Channel::Tickers => {
                    let last = i.trades.back().map_or(Decimal::ZERO, |t| t.qty);
                    cx.json(&json!({ "arg": arg, "data": [ticker(inst, &super::Stats::of(i), cx.now_ms, last)] }));
                }
                Channel::Trades => {}
            }
            self.subs.insert((channel, inst.to_owned()), i.book.update_id);
        }
    }

    fn on_tick(&mut self, tick: &Tick, cx: &mut Cx<'_>) {
        let mut out = Vec::new();
        for ((ch, inst), sent) in self.subs.iter_mut() {
            let Some(i) = tick.insts.iter().find(|i| &i.native == inst) else { continue };
            match ch {
                Channel::Books if !i.changes.is_empty() && i.update_id > *sent => {
                    let prev = *sent;
                    *sent = i.update_id;
                    if cx.withheld(inst) {
                        continue;
                    }
                    let (mut b, mut a) = (Vec::new(), Vec::new());
                    for c in i.changes.iter().filter(|c| c.update_id > prev) {
                        if c.bid { &mut b } else { &mut a }.push(json!([
                            s(c.price),
                            s(c.qty),
                            "0",
                            if c.qty.is_zero() { "0" } else { "1" }
                        ]));
                    }
                    out.push(json!({ "arg": { "channel": "books", "instId": inst }, "action": "update", "data": [{
                        "asks": a, "bids": b, "ts": tick.ts_ms.to_string(), "checksum": 0, "prevSeqId": prev, "seqId": i.update_id }] }));
                }
                Channel::Tickers if !i.trades.is_empty() || !i.changes.is_empty() => {
                    let last = i.trades.last().map_or(Decimal::ZERO, |t| t.qty);
                    out.push(
                        json!({ "arg": { "channel": "tickers", "instId": inst }, "data": [ticker(inst, &i.stats, tick.ts_ms, last)] }),
                    );
                }
                Channel::Trades if !i.trades.is_empty() => {
                    let data: Vec<Value> = i
                        .trades
                        .iter()
                        .map(|t| {
                            json!({ "instId": inst, "tradeId": t.id.to_string(), "px": s(t.price), "sz": s(t.qty),
                                    "side": if t.buyer_taker { "buy" } else { "sell" }, "ts": t.ts_ms.to_string(), "count": "1" })
                        })
                        .collect();
                    out.push(json!({ "arg": { "channel": "trades", "instId": inst }, "data": data }));
                }
                _ => {}
            }
        }
        for v in out {
            cx.json(&v);
        }
    }

    fn book_symbols(&self) -> Vec<String> {
        self.subs.keys().filter(|(c, _)| *c == Channel::Books).map(|(_, i)| i.clone()).collect()
    }

    fn bad_trade(&self) -> String {
        json!({"arg": {"channel": "trades", "instId": "BTC-USDT"},
            "data": [{"instId": "BTC-USDT", "tradeId": "1", "px": "not-a-price", "sz": "1", "side": "buy", "ts": "1"}]})
        .to_string()
    }
}
