//! Binance spot WebSocket: raw streams (`/ws`, `/ws/<stream>`, `/ws/<anything>`) or combined
//! (`/stream?streams=a/b`, each message wrapped as `{"stream","data"}`);
//! `{"method":"SUBSCRIBE"|"UNSUBSCRIBE"|"LIST_SUBSCRIPTIONS","params":[…],"id":n}`;
//! the server pings and closes silent clients. The diff depth stream carries
//! `U`/`u` update ids that match REST `/api/v3/depth`'s `lastUpdateId`.

use std::collections::BTreeSet;

use rust_decimal::Decimal;
use serde_json::{Value, json};

use super::{Cx, InstTick, Protocol, Tick};
use crate::market::Market;
use crate::venues::fixed;

fn f8(d: Decimal) -> String {
    fixed(d, 8)
}

#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
enum Stream {
    Trade,
    /// The diff depth stream (`@depth`, `@depth@100ms`).
    Diff,
    /// A partial book of the best 5, 10 or 20 levels.
    Partial(usize),
    BookTicker,
    Ticker,
    MiniTicker,
    Kline,
}

pub(crate) struct Binance {
    combined: bool,
    /// (stream, upper-case symbol, the name as subscribed).
    subs: BTreeSet<(String, Stream, String)>,
}

fn parse_stream(name: &str) -> Option<(String, Stream)> {
    let (sym, rest) = name.split_once('@')?;
    if sym.is_empty() || sym.chars().any(|c| !c.is_ascii_lowercase() && !c.is_ascii_digit()) {
        return None;
    }
    let stream = match rest {
        "trade" => Stream::Trade,
        "depth" | "depth@100ms" | "depth@1000ms" => Stream::Diff,
        "bookTicker" => Stream::BookTicker,
        "ticker" => Stream::Ticker,
        "miniTicker" => Stream::MiniTicker,
        "kline_1m" => Stream::Kline,
        r => {
            let levels = r.strip_prefix("depth")?;
            let levels = levels.strip_suffix("@100ms").or_else(|| levels.strip_suffix("@1000ms")).unwrap_or(levels);
            match levels.parse::<usize>().ok()? {
                n @ (5 | 10 | 20) => Stream::Partial(n),
                _ => return None,
            }
        }
    };
    Some((sym.to_ascii_uppercase(), stream))
}

impl Binance {
    pub(crate) fn new(combined: bool) -> Binance {
        Binance { combined, subs: BTreeSet::new() }
    }

    fn add(&mut self, name: &str, max: Option<usize>) -> Result<(), String> {
        let (sym, stream) = parse_stream(name).ok_or_else(|| format!("Invalid request: invalid stream name {name}"))?;
        if max.is_some_and(|m| self.subs.len() >= m) {
            return Err("Invalid request: too many streams on this connection".into());
        }
        self.subs.insert((sym, stream, name.to_owned()));
        Ok(())
    }

    fn wrap(&self, name: &str, data: Value) -> Value {
        if self.combined { json!({ "stream": name, "data": data }) } else { data }
    }
}

fn event(stream: &Stream, sym: &str, i: &InstTick, ts: u64) -> Vec<Value> {
    let side = |v: &[(Decimal, Decimal)], n: usize| v.iter().take(n).map(|(p, q)| json!([f8(*p), f8(*q)])).collect::<Vec<_>>();
    match stream {
        Stream::Trade => i
            .trades
            .iter()
            .map(|t| {
                json!({ "e": "trade", "E": ts, "s": sym, "t": t.id, "p": f8(t.price), "q": f8(t.qty), "T": t.ts_ms,
                        "m": !t.buyer_taker, "M": true })
            })
            .collect(),
        Stream::Diff if !i.changes.is_empty() => {
            let (mut b, mut a) = (Vec::new(), Vec::new());
            for c in &i.changes {
                if c.bid { &mut b } else { &mut a }.push(json!([f8(c.price), f8(c.qty)]));
            }
            let first = i.changes.first().map_or(i.update_id, |c| c.update_id);
            vec![json!({ "e": "depthUpdate", "E": ts, "s": sym, "U": first, "u": i.update_id, "b": b, "a": a })]
        }
        Stream::Partial(n) if !i.changes.is_empty() => {
            vec![json!({ "lastUpdateId": i.update_id, "bids": side(&i.top.0, *n), "asks": side(&i.top.1, *n) })]
        }
        Stream::BookTicker if !i.changes.is_empty() => {
            let (bp, bq) = i.stats.bid.unwrap_or_default();
            let (ap, aq) = i.stats.ask.unwrap_or_default();
            vec![json!({ "u": i.update_id, "s": sym, "b": f8(bp), "B": f8(bq), "a": f8(ap), "A": f8(aq) })]
        }
        Stream::Ticker if !i.trades.is_empty() => {
            let st = &i.stats;
            let (bp, bq) = st.bid.unwrap_or_default();
            let (ap, aq) = st.ask.unwrap_or_default();
            let change = st.last - st.open;
            let pct = if st.open.is_zero() { Decimal::ZERO } else { (change / st.open * Decimal::ONE_HUNDRED).round_dp(3) };
            let w = if st.volume.is_zero() { st.last } else { st.quote_volume / st.volume };
            let last_qty = i.trades.last().map_or(Decimal::ZERO, |t| t.qty);
            vec![json!({
                "e": "24hrTicker", "E": ts, "s": sym, "p": f8(change), "P": pct.to_string(), "w": f8(w), "x": f8(st.prev_close),
                "c": f8(st.last), "Q": f8(last_qty), "b": f8(bp), "B": f8(bq), "a": f8(ap), "A": f8(aq), "o": f8(st.open),
                "h": f8(st.high), "l": f8(st.low), "v": f8(st.volume), "q": f8(st.quote_volume), "O": ts.saturating_sub(86_400_000),
                "C": ts, "F": 0, "L": i.trades.last().map_or(0, |t| t.id), "n": 0,
            })]
        }
        Stream::MiniTicker if !i.trades.is_empty() => {
            let st = &i.stats;
            vec![json!({
                "e": "24hrMiniTicker", "E": ts, "s": sym, "c": f8(st.last), "o": f8(st.open), "h": f8(st.high), "l": f8(st.low),
                "v": f8(st.volume), "q": f8(st.quote_volume),
            })]
        }
        Stream::Kline if !i.trades.is_empty() => i
            .candle
            .iter()
            .map(|c| {
                json!({ "e": "kline", "E": ts, "s": sym, "k": {
                    "t": c.open_ms, "T": c.open_ms + 59_999, "s": sym, "i": "1m", "f": 0, "L": 0, "o": f8(c.open), "c": f8(c.close),
                    "h": f8(c.high), "l": f8(c.low), "v": f8(c.volume), "n": c.trades, "x": false, "q": f8(c.quote_volume),
                    "V": "0.00000000", "Q": "0.00000000", "B": "0" } })
            })
            .collect(),
        _ => Vec::new(),
    }
}

impl Protocol for Binance {
    fn url_streams(&mut self, path: &str, query: &str, _market: &Market) -> Result<(), String> {
        let names: Vec<String> = if let Some(rest) = path.strip_prefix("/ws/") {
            // A segment that names no stream (ccxt connects to `/ws/<n>` and then
            // sends SUBSCRIBE) opens a connection with nothing subscribed, as
            // Binance does; a malformed stream name (`sym@...`) is refused.
            rest.split('/').filter(|s| s.contains('@')).map(str::to_owned).collect()
        } else {
            query
                .split('&')
                .filter_map(|kv| kv.strip_prefix("streams="))
                .flat_map(|v| v.split('/'))
                .filter(|s| !s.is_empty())
                .map(|s| percent_encoding::percent_decode_str(s).decode_utf8_lossy().into_owned())
                .collect()
        };
        for n in names {
            self.add(&n, Some(1024))?;
        }
        Ok(())
    }

    fn on_text(&mut self, text: &str, _market: &Market, cx: &mut Cx<'_>) {
        let req: Value = match serde_json::from_str(text) {
            Ok(v) => v,
            Err(_) => {
                cx.bad_requests += 1;
                cx.json(&json!({ "error": { "code": 3, "msg": "Invalid JSON: expected value at line 1 column 1" } }));
                return;
            }
        };
        let id = req.get("id").cloned().unwrap_or(Value::Null);
        let params: Vec<String> = req
            .get("params")
            .and_then(Value::as_array)
            .map(|a| a.iter().filter_map(|v| v.as_str().map(str::to_owned)).collect())
            .unwrap_or_default();
        match req.get("method").and_then(Value::as_str) {
            Some("SUBSCRIBE") => {
                for p in &params {
                    if let Err(msg) = self.add(p, cx.config.max_streams) {
                        cx.bad_requests += 1;
                        cx.json(&json!({ "error": { "code": 2, "msg": msg }, "id": id }));
                        return;
                    }
                }
                cx.json(&json!({ "result": null, "id": id }));
            }
            Some("UNSUBSCRIBE") => {
                self.subs.retain(|(_, _, n)| !params.contains(n));
                cx.json(&json!({ "result": null, "id": id }));
            }
            Some("LIST_SUBSCRIPTIONS") => {
                let names: Vec<&str> = self.subs.iter().map(|(_, _, n)| n.as_str()).collect();
                cx.json(&json!({ "result": names, "id": id }));
            }
            _ => {
                cx.bad_requests += 1;
                cx.json(&json!({ "error": { "code": 2, "msg": "Invalid request: unknown method" }, "id": id }));
            }
        }
    }

    fn on_tick(&mut self, tick: &Tick, cx: &mut Cx<'_>) {
        let mut out = Vec::new();
        for (sym, stream, name) in &self.subs {
            let Some(i) = tick.insts.iter().find(|i| &i.native == sym) else { continue };
            if *stream == Stream::Diff && !i.changes.is_empty() && cx.withheld(sym) {
                continue;
            }
            for data in event(stream, sym, i, tick.ts_ms) {
                out.push(self.wrap(name, data));
            }
        }
        for v in out {
            cx.json(&v);
        }
    }

    fn book_symbols(&self) -> Vec<String> {
        self.subs.iter().filter(|(_, s, _)| *s == Stream::Diff).map(|(sym, _, _)| sym.clone()).collect()
    }

    fn bad_trade(&self) -> String {
        let data = json!({"e": "trade", "E": 1, "s": "BTCUSDT", "t": 1, "p": "not-a-price", "q": "1", "T": 1, "m": true});
        self.wrap("btcusdt@trade", data).to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::SimConfig;
    use sluice_domain::Exchange;

    #[test]
    fn ccxts_ws_path_opens_empty_and_named_streams_are_checked() {
        let cfg = SimConfig::shipped();
        let market = Market::new(Exchange::Binance, &cfg.markets, 1, 1_700_000_000_000);
        let mut b = Binance::new(false);
        assert!(b.url_streams("/ws/1", "", &market).is_ok(), "ccxt's /ws/<n>: a connection, nothing subscribed yet");
        assert!(b.subs.is_empty());
        assert!(b.url_streams("/ws/btcusdt@miniTicker/btcusdt@trade", "", &market).is_ok());
        assert_eq!(b.subs.len(), 2);
        assert!(b.url_streams("/ws/btcusdt@nonsense", "", &market).is_err());
        assert_eq!(parse_stream("btcusdt@miniTicker"), Some(("BTCUSDT".into(), Stream::MiniTicker)));
    }
}
