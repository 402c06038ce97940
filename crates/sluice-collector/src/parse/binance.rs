//! Binance spot streams, raw or combined (`{"stream","data"}`): `depthUpdate`,
//! `trade`, `24hrTicker`, `kline`, `bookTicker`; `{"result":…,"id":…}` answers.

use serde::Deserialize;

use crate::event::{Aggressor, BookMsg, CandleMsg, Md, ParseError, Parsed, TickerMsg, TradeMsg, dec, levels, peek, shape};

const EX: &str = "binance";

#[derive(Deserialize)]
struct Combined<T> {
    data: T,
}

#[derive(Deserialize)]
struct Depth<'a> {
    #[serde(rename = "E")]
    time: u64,
    s: &'a str,
    #[serde(rename = "U")]
    first: u64,
    u: u64,
    #[serde(borrow)]
    b: Vec<Vec<&'a str>>,
    #[serde(borrow)]
    a: Vec<Vec<&'a str>>,
}

#[derive(Deserialize)]
struct Trade<'a> {
    s: &'a str,
    t: u64,
    p: &'a str,
    q: &'a str,
    #[serde(rename = "T")]
    time: u64,
    /// The buyer was the maker, so the seller took liquidity.
    m: bool,
}

#[derive(Deserialize)]
struct Ticker<'a> {
    #[serde(rename = "E")]
    time: u64,
    s: &'a str,
    c: &'a str,
    b: &'a str,
    #[serde(rename = "B")]
    bq: &'a str,
    a: &'a str,
    #[serde(rename = "A")]
    aq: &'a str,
    o: &'a str,
    h: &'a str,
    l: &'a str,
    v: &'a str,
    q: &'a str,
}

#[derive(Deserialize)]
struct BookTicker<'a> {
    s: &'a str,
    b: &'a str,
    #[serde(rename = "B")]
    bq: &'a str,
    a: &'a str,
    #[serde(rename = "A")]
    aq: &'a str,
}

#[derive(Deserialize)]
struct Kline<'a> {
    #[serde(rename = "E")]
    time: u64,
    #[serde(borrow)]
    k: K<'a>,
}

#[derive(Deserialize)]
struct K<'a> {
    t: u64,
    s: &'a str,
    o: &'a str,
    c: &'a str,
    h: &'a str,
    l: &'a str,
    v: &'a str,
    q: &'a str,
}

#[derive(Deserialize)]
struct Answer {
    #[serde(default)]
    error: Option<serde_json::Value>,
}

fn data<'a, T: Deserialize<'a>>(text: &'a str, combined: bool) -> Result<T, ParseError> {
    if combined {
        serde_json::from_str::<Combined<T>>(text).map(|c| c.data).map_err(|e| shape(EX, e))
    } else {
        serde_json::from_str::<T>(text).map_err(|e| shape(EX, e))
    }
}

pub fn parse(text: &str) -> Result<Parsed, ParseError> {
    let combined = text.starts_with("{\"stream\"");
    let Some(kind) = peek(text, "\"e\":\"") else {
        if text.contains("\"id\"") && (text.contains("\"result\"") || text.contains("\"error\"")) {
            let a: Answer = serde_json::from_str(text).map_err(|e| shape(EX, e))?;
            return Ok(match a.error {
                Some(e) => Parsed::Rejected(e.to_string()),
                None => Parsed::Ack,
            });
        }
        if text.contains("\"B\":\"") && text.contains("\"u\":") {
            let t: BookTicker = data(text, combined)?;
            return Ok(Parsed::Data(vec![Md::Ticker(TickerMsg {
                native: t.s.to_owned(),
                bid: Some((dec(EX, "b", t.b)?, dec(EX, "B", t.bq)?)),
                ask: Some((dec(EX, "a", t.a)?, dec(EX, "A", t.aq)?)),
                ..TickerMsg::default()
            })]));
        }
        return Err(ParseError::Unknown { exchange: EX, what: text.chars().take(60).collect() });
    };
    let md = match kind {
        "depthUpdate" => {
            let d: Depth = data(text, combined)?;
            Md::Book(BookMsg {
                native: d.s.to_owned(),
                snapshot: false,
                bids: levels(EX, &d.b)?,
                asks: levels(EX, &d.a)?,
                seq: d.u,
                first: Some(d.first),
                prev: None,
                ts_ms: d.time,
            })
        }
        "trade" => {
            let t: Trade = data(text, combined)?;
            Md::Trade(TradeMsg {
                native: t.s.to_owned(),
                id: t.t.to_string(),
                price: dec(EX, "p", t.p)?,
                qty: dec(EX, "q", t.q)?,
                aggressor: if t.m { Aggressor::Seller } else { Aggressor::Buyer },
                ts_ms: t.time,
                seq: t.t,
            })
        }
        "24hrTicker" => {
            let t: Ticker = data(text, combined)?;
            Md::Ticker(TickerMsg {
                native: t.s.to_owned(),
                last: Some(dec(EX, "c", t.c)?),
                bid: Some((dec(EX, "b", t.b)?, dec(EX, "B", t.bq)?)),
                ask: Some((dec(EX, "a", t.a)?, dec(EX, "A", t.aq)?)),
                open: Some(dec(EX, "o", t.o)?),
                high: Some(dec(EX, "h", t.h)?),
                low: Some(dec(EX, "l", t.l)?),
                volume: Some(dec(EX, "v", t.v)?),
                quote_volume: Some(dec(EX, "q", t.q)?),
                ts_ms: t.time,
            })
        }
        "kline" => {
            let k: Kline = data(text, combined)?;
            Md::Candle(CandleMsg {
                native: k.k.s.to_owned(),
                open_ms: k.k.t,
                open: dec(EX, "o", k.k.o)?,
                high: dec(EX, "h", k.k.h)?,
                low: dec(EX, "l", k.k.l)?,
                close: dec(EX, "c", k.k.c)?,
                volume: dec(EX, "v", k.k.v)?,
                quote_volume: dec(EX, "q", k.k.q)?,
                ts_ms: k.time,
            })
        }
        other => return Err(ParseError::Unknown { exchange: EX, what: format!("event type {other}") }),
    };
    Ok(Parsed::Data(vec![md]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn combined_depth_update_keeps_both_update_ids() {
        let f = r#"{"stream":"btcusdt@depth","data":{"e":"depthUpdate","E":1700000000123,"s":"BTCUSDT","U":157,"u":160,"b":[["0.0024","10"]],"a":[["0.0026","0"]]}}"#;
        let Parsed::Data(v) = parse(f).unwrap() else { panic!() };
        let Md::Book(b) = &v[0] else { panic!() };
        assert_eq!((b.first, b.seq, b.native.as_str()), (Some(157), 160, "BTCUSDT"));
        assert_eq!(b.asks[0].1.to_string(), "0");
        assert_eq!(b.bids[0].0.to_string(), "0.0024");
    }

    #[test]
    fn trade_aggressor_comes_from_the_maker_flag() {
        let f = r#"{"e":"trade","E":1,"s":"BNBBTC","t":12345,"p":"0.001","q":"100","T":2,"m":true,"M":true}"#;
        let Parsed::Data(v) = parse(f).unwrap() else { panic!() };
        let Md::Trade(t) = &v[0] else { panic!() };
        assert_eq!((t.aggressor, t.id.as_str(), t.ts_ms), (Aggressor::Seller, "12345", 2));
    }

    #[test]
    fn answers_and_garbage() {
        assert_eq!(parse(r#"{"result":null,"id":1}"#).unwrap(), Parsed::Ack);
        assert!(matches!(parse(r#"{"error":{"code":2,"msg":"Invalid request"},"id":1}"#).unwrap(), Parsed::Rejected(_)));
        assert!(parse(r#"{"e":"depthUpdate","E":1}"#).is_err());
        assert!(
            parse(r#"{"e":"trade","E":1,"s":"X","t":1,"p":"x1","q":"1","T":1,"m":true}"#).unwrap_err().to_string().contains("'x1' in p")
        );
        assert!(parse("not json").is_err());
    }
}
