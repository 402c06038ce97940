//! Bybit v5 public WebSocket (`/v5/public/spot`, `/v5/public/linear`):
//! `{"op":"subscribe","args":[topics]}` (spot: at most 10 topics a request),
//! `{"op":"ping"}` answered with a pong; `orderbook.{1|50|200|1000}.{symbol}` sends a
//! snapshot and then deltas whose `u` rises by one per message (a snapshot with
//! `u` = 1 means the server restarted), `publicTrade`, `tickers`, `kline.1`.

use std::collections::BTreeMap;

use rust_decimal::Decimal;
use serde_json::{Value, json};

use super::{Cx, InstTick, Protocol, Stats, Tick};
use crate::market::{Levels, Market};
use crate::venues::s;

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Topic {
    Book(usize),
    Trade,
    Ticker,
    Kline,
}

pub(crate) struct Bybit {
    linear: bool,
    /// (topic, symbol) to the book step counter this connection has sent up to.
    subs: BTreeMap<(Topic, String), u64>,
    /// Per symbol, subtracted from the market's book counter: moved by a restart,
    /// so that the restart's snapshot carries `u` = 1.
    base: BTreeMap<String, u64>,
}

impl Bybit {
    pub(crate) fn new(linear: bool) -> Bybit {
        Bybit { linear, subs: BTreeMap::new(), base: BTreeMap::new() }
    }

    fn topic_name(t: &Topic, sym: &str) -> String {
        match t {
            Topic::Book(d) => format!("orderbook.{d}.{sym}"),
            Topic::Trade => format!("publicTrade.{sym}"),
            Topic::Ticker => format!("tickers.{sym}"),
            Topic::Kline => format!("kline.1.{sym}"),
        }
    }

    fn parse_topic(&self, topic: &str) -> Option<(Topic, String)> {
        let mut parts = topic.split('.');
        let t = match (parts.next()?, parts.next()?) {
            ("orderbook", d) => {
                let d: usize = d.parse().ok()?;
                // Bybit v5's depths, spot and linear alike.
                [1, 50, 200, 1000].contains(&d).then_some(Topic::Book(d))?
            }
            ("publicTrade", sym) => return parts.next().is_none().then(|| (Topic::Trade, sym.to_owned())),
            ("tickers", sym) => return parts.next().is_none().then(|| (Topic::Ticker, sym.to_owned())),
            ("kline", "1") => Topic::Kline,
            _ => return None,
        };
        let sym = parts.next()?;
        parts.next().is_none().then(|| (t, sym.to_owned()))
    }

    /// The `u` this connection shows for a book counter.
    fn u(&self, sym: &str, seq: u64) -> u64 {
        seq - self.base.get(sym).copied().unwrap_or(0)
    }

    fn snapshot(&self, t: &Topic, sym: &str, market: &Market, ts: u64) -> Option<Value> {
        let i = market.instrument(sym)?;
        Some(match t {
            Topic::Book(d) => {
                let (b, a) = i.book.top(*d);
                book(*d, sym, "snapshot", (b, a), self.u(sym, i.book.seq), i.book.update_id, ts)
            }
            Topic::Ticker => ticker(self.linear, sym, &Stats::of(i), i.book.update_id, ts, "snapshot"),
            Topic::Trade | Topic::Kline => return None,
        })
    }
}

fn book(depth: usize, sym: &str, kind: &str, (bids, asks): (Levels, Levels), u: u64, uid: u64, ts: u64) -> Value {
    let side = |v: Levels| v.into_iter().map(|(p, q)| json!([s(p), s(q)])).collect::<Vec<_>>();
    json!({
        "topic": Bybit::topic_name(&Topic::Book(depth), sym), "type": kind, "ts": ts,
        "data": { "s": sym, "b": side(bids), "a": side(asks), "u": u, "seq": uid },
        "cts": ts,
    })
}

fn ticker(linear: bool, sym: &str, st: &Stats, uid: u64, ts: u64, kind: &str) -> Value {
    let pct = if st.prev_close.is_zero() { Decimal::ZERO } else { ((st.last - st.prev_close) / st.prev_close).round_dp(4) };
    let mut data = json!({
        "symbol": sym, "lastPrice": s(st.last), "highPrice24h": s(st.high), "lowPrice24h": s(st.low),
        "prevPrice24h": s(st.prev_close), "volume24h": s(st.volume), "turnover24h": s(st.quote_volume),
        "price24hPcnt": s(pct),
    });
    // Linear tickers carry the best levels; spot tickers do not.
    if linear {
        let (bp, bq) = st.bid.unwrap_or_default();
        let (ap, aq) = st.ask.unwrap_or_default();
        data["bid1Price"] = s(bp);
        data["bid1Size"] = s(bq);
        data["ask1Price"] = s(ap);
        data["ask1Size"] = s(aq);
    }
    json!({ "topic": Bybit::topic_name(&Topic::Ticker, sym), "ts": ts, "type": kind, "cs": uid, "data": data })
}

fn trades(sym: &str, i: &InstTick, ts: u64) -> Value {
    let data: Vec<Value> = i
        .trades
        .iter()
        .map(|t| {
            json!({ "T": t.ts_ms, "s": sym, "S": if t.buyer_taker { "Buy" } else { "Sell" }, "v": s(t.qty), "p": s(t.price),
                    "L": "ZeroPlusTick", "i": t.id.to_string(), "BT": false })
        })
        .collect();
    json!({ "topic": format!("publicTrade.{sym}"), "type": "snapshot", "ts": ts, "data": data })
}

impl Protocol for Bybit {
    fn on_text(&mut self, text: &str, market: &Market, cx: &mut Cx<'_>) {
        let conn = cx.conn_id.to_string();
        let Ok(req) = serde_json::from_str::<Value>(text) else {
            cx.bad_requests += 1;
            cx.json(&json!({ "success": false, "ret_msg": format!("error:invalid json, {text}"), "conn_id": conn, "op": "" }));
            return;
        };
        let req_id = req.get("req_id").cloned().unwrap_or(json!(""));
        let op = req.get("op").and_then(Value::as_str).unwrap_or("");
        match op {
            "ping" => cx.json(&json!({ "success": true, "ret_msg": "pong", "conn_id": conn, "req_id": req_id, "op": "ping" })),
            "subscribe" | "unsubscribe" => {
                let args: Vec<String> = req
                    .get("args")
                    .and_then(Value::as_array)
                    .map(|a| a.iter().filter_map(|v| v.as_str().map(str::to_owned)).collect())
                    .unwrap_or_default();
                let fail = |cx: &mut Cx<'_>, msg: String| {
                    cx.bad_requests += 1;
                    cx.json(&json!({ "success": false, "ret_msg": msg, "conn_id": conn, "req_id": req_id, "op": op }));
                };
                if args.is_empty() {
                    return fail(cx, "error:args is empty".into());
                }
                if let Some(max) = cx.config.max_args.filter(|_| !self.linear)
                    && args.len() > max
                {
                    return fail(cx, format!("error:args size >{max}"));
                }
                let mut parsed = Vec::new();
                for a in &args {
                    match self.parse_topic(a) {
                        Some((t, sym)) if market.instrument(&sym).is_some() => parsed.push((t, sym)),
                        _ => return fail(cx, format!("error:handler not found,topic:{a}")),
                    }
                }
                cx.json(&json!({ "success": true, "ret_msg": "", "conn_id": conn, "req_id": req_id, "op": op }));
                for (t, sym) in parsed {
                    if op == "unsubscribe" {
                        self.subs.remove(&(t, sym));
                        continue;
                    }
                    let seq = market.instrument(&sym).map_or(0, |i| i.book.seq);
                    if let Some(v) = self.snapshot(&t, &sym, market, cx.now_ms) {
                        cx.json(&v);
                    }
                    self.subs.insert((t, sym), seq);
                }
            }
            _ => {
                cx.bad_requests += 1;
                cx.json(
                    &json!({ "success": false, "ret_msg": format!("error:unknown op {op}"), "conn_id": conn, "req_id": req_id, "op": op }),
                );
            }
        }
    }

    fn on_tick(&mut self, tick: &Tick, cx: &mut Cx<'_>) {
        let mut out = Vec::new();
        let base = &self.base;
        let u = |sym: &str, seq: u64| seq - base.get(sym).copied().unwrap_or(0);
        for ((t, sym), sent) in self.subs.iter_mut() {
            let Some(i) = tick.insts.iter().find(|i| &i.native == sym) else { continue };
            match t {
                // Steps already in the snapshot this connection sent are skipped.
                Topic::Book(_) if i.changes.is_empty() || i.seq <= *sent => {}
                Topic::Book(d) => {
                    *sent = i.seq;
                    if cx.withheld(sym) {
                        continue;
                    }
                    let v = if *d == 1 {
                        let (b, a) = &i.top;
                        let top = (b.iter().take(1).copied().collect(), a.iter().take(1).copied().collect());
                        book(1, sym, "snapshot", top, u(sym, i.seq), i.update_id, tick.ts_ms)
                    } else {
                        let (mut b, mut a) = (Vec::new(), Vec::new());
                        for c in &i.changes {
                            if c.bid { &mut b } else { &mut a }.push(json!([s(c.price), s(c.qty)]));
                        }
                        json!({
                            "topic": Bybit::topic_name(t, sym), "type": "delta", "ts": tick.ts_ms,
                            "data": { "s": sym, "b": b, "a": a, "u": u(sym, i.seq), "seq": i.update_id }, "cts": tick.ts_ms,
                        })
                    };
                    out.push(v);
                }
                Topic::Trade if !i.trades.is_empty() => out.push(trades(sym, i, tick.ts_ms)),
                Topic::Ticker if !i.trades.is_empty() || !i.changes.is_empty() => {
                    out.push(ticker(self.linear, sym, &i.stats, i.update_id, tick.ts_ms, if self.linear { "delta" } else { "snapshot" }));
                }
                Topic::Kline if !i.trades.is_empty() => {
                    if let Some(c) = &i.candle {
                        out.push(json!({ "topic": format!("kline.1.{sym}"), "type": "snapshot", "ts": tick.ts_ms, "data": [{
                            "start": c.open_ms, "end": c.open_ms + 59_999, "interval": "1", "open": s(c.open), "close": s(c.close),
                            "high": s(c.high), "low": s(c.low), "volume": s(c.volume), "turnover": s(c.quote_volume),
                            "confirm": false, "timestamp": tick.ts_ms }] }));
                    }
                }
                _ => {}
            }
        }
        for v in out {
            cx.json(&v);
        }
    }

    fn restart(&mut self, market: &Market, cx: &mut Cx<'_>) -> bool {
        // After a restart every book starts again from a snapshot with u = 1.
        let books: Vec<(usize, String)> =
            self.subs.keys().filter_map(|(t, sym)| if let Topic::Book(d) = t { Some((*d, sym.clone())) } else { None }).collect();
        for (d, sym) in books {
            let Some(i) = market.instrument(&sym) else { continue };
            self.base.insert(sym.clone(), i.book.seq.saturating_sub(1));
            let v = book(d, &sym, "snapshot", i.book.top(d), 1, i.book.update_id, cx.now_ms);
            cx.json(&v);
            self.subs.insert((Topic::Book(d), sym), i.book.seq);
        }
        true
    }

    fn book_symbols(&self) -> Vec<String> {
        self.subs.keys().filter(|(t, _)| matches!(t, Topic::Book(_))).map(|(_, s)| s.clone()).collect()
    }

    fn bad_trade(&self) -> String {
        json!({"topic": "publicTrade.BTCUSDT", "type": "snapshot", "ts": 1,
            "data": [{"T": 1, "s": "BTCUSDT", "S": "Buy", "v": "1", "p": "not-a-price", "i": "1", "BT": false}]})
        .to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bybits_four_book_depths_are_served_on_spot_and_linear() {
        for linear in [false, true] {
            let b = Bybit::new(linear);
            for d in [1, 50, 200, 1000] {
                assert_eq!(b.parse_topic(&format!("orderbook.{d}.BTCUSDT")), Some((Topic::Book(d), "BTCUSDT".to_owned())));
            }
            assert_eq!(b.parse_topic("orderbook.500.BTCUSDT"), None);
            assert_eq!(b.parse_topic("orderbook.50.BTCUSDT.x"), None);
        }
    }
}
