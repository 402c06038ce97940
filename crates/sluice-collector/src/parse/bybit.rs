//! Bybit v5 public topics: `orderbook.N.SYM` (snapshot, then deltas with `u`),
//! `publicTrade.SYM`, `tickers.SYM` (linear sends partial deltas: every field is
//! optional), `kline.1.SYM`; `{"op":…,"success":…}` answers and pongs.

use serde::Deserialize;

use crate::event::{Aggressor, BookMsg, CandleMsg, Md, ParseError, Parsed, TickerMsg, TradeMsg, dec, levels, peek, shape};

const EX: &str = "bybit";

#[derive(Deserialize)]
struct Msg<T> {
    #[serde(rename = "type", default)]
    kind: Option<String>,
    ts: u64,
    data: T,
}

#[derive(Deserialize)]
struct Book<'a> {
    s: &'a str,
    #[serde(borrow)]
    b: Vec<Vec<&'a str>>,
    #[serde(borrow)]
    a: Vec<Vec<&'a str>>,
    u: u64,
}

#[derive(Deserialize)]
struct Trade<'a> {
    #[serde(rename = "T")]
    time: u64,
    s: &'a str,
    #[serde(rename = "S")]
    side: &'a str,
    v: &'a str,
    p: &'a str,
    i: &'a str,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Ticker<'a> {
    symbol: &'a str,
    last_price: Option<&'a str>,
    high_price24h: Option<&'a str>,
    low_price24h: Option<&'a str>,
    prev_price24h: Option<&'a str>,
    volume24h: Option<&'a str>,
    turnover24h: Option<&'a str>,
    bid1_price: Option<&'a str>,
    bid1_size: Option<&'a str>,
    ask1_price: Option<&'a str>,
    ask1_size: Option<&'a str>,
}

#[derive(Deserialize)]
struct Kline<'a> {
    start: u64,
    open: &'a str,
    close: &'a str,
    high: &'a str,
    low: &'a str,
    volume: &'a str,
    turnover: &'a str,
}

#[derive(Deserialize)]
struct OpAnswer {
    #[serde(default)]
    success: Option<bool>,
    #[serde(default)]
    ret_msg: String,
    op: String,
}

fn opt(field: &'static str, v: Option<&str>) -> Result<Option<rust_decimal::Decimal>, ParseError> {
    v.filter(|s| !s.is_empty()).map(|s| dec(EX, field, s)).transpose()
}

fn pair(p: Option<&str>, q: Option<&str>) -> Result<Option<(rust_decimal::Decimal, rust_decimal::Decimal)>, ParseError> {
    Ok(match (opt("bid1Price", p)?, opt("bid1Size", q)?) {
        (Some(p), Some(q)) => Some((p, q)),
        _ => None,
    })
}

pub fn parse(text: &str) -> Result<Parsed, ParseError> {
    let Some(topic) = peek(text, "\"topic\":\"") else {
        if text.contains("\"op\"") {
            let a: OpAnswer = serde_json::from_str(text).map_err(|e| shape(EX, e))?;
            return Ok(match (a.success, a.op.as_str()) {
                (Some(false), _) => Parsed::Rejected(a.ret_msg),
                (_, "ping" | "pong") => Parsed::Pong,
                (_, "subscribe" | "unsubscribe") => Parsed::Ack,
                _ => Parsed::Ignored,
            });
        }
        return Err(ParseError::Unknown { exchange: EX, what: text.chars().take(60).collect() });
    };
    let kind = topic.split('.').next().unwrap_or("");
    let md = match kind {
        "orderbook" => {
            let m: Msg<Book> = serde_json::from_str(text).map_err(|e| shape(EX, e))?;
            vec![Md::Book(BookMsg {
                native: m.data.s.to_owned(),
                snapshot: m.kind.as_deref() == Some("snapshot"),
                bids: levels(EX, &m.data.b)?,
                asks: levels(EX, &m.data.a)?,
                seq: m.data.u,
                first: None,
                prev: None,
                ts_ms: m.ts,
            })]
        }
        "publicTrade" => {
            let m: Msg<Vec<Trade>> = serde_json::from_str(text).map_err(|e| shape(EX, e))?;
            m.data
                .iter()
                .map(|t| {
                    Ok(Md::Trade(TradeMsg {
                        native: t.s.to_owned(),
                        id: t.i.to_owned(),
                        price: dec(EX, "p", t.p)?,
                        qty: dec(EX, "v", t.v)?,
                        aggressor: match t.side {
                            "Buy" => Aggressor::Buyer,
                            "Sell" => Aggressor::Seller,
                            _ => Aggressor::Unknown,
                        },
                        ts_ms: t.time,
                        seq: 0,
                    }))
                })
                .collect::<Result<_, ParseError>>()?
        }
        "tickers" => {
            let m: Msg<Ticker> = serde_json::from_str(text).map_err(|e| shape(EX, e))?;
            let t = &m.data;
            vec![Md::Ticker(TickerMsg {
                native: t.symbol.to_owned(),
                last: opt("lastPrice", t.last_price)?,
                bid: pair(t.bid1_price, t.bid1_size)?,
                ask: pair(t.ask1_price, t.ask1_size)?,
                open: opt("prevPrice24h", t.prev_price24h)?,
                high: opt("highPrice24h", t.high_price24h)?,
                low: opt("lowPrice24h", t.low_price24h)?,
                volume: opt("volume24h", t.volume24h)?,
                quote_volume: opt("turnover24h", t.turnover24h)?,
                ts_ms: m.ts,
            })]
        }
        "kline" => {
            let m: Msg<Vec<Kline>> = serde_json::from_str(text).map_err(|e| shape(EX, e))?;
            let native = topic.rsplit('.').next().unwrap_or("").to_owned();
            m.data
                .iter()
                .map(|k| {
                    Ok(Md::Candle(CandleMsg {
                        native: native.clone(),
                        open_ms: k.start,
                        open: dec(EX, "open", k.open)?,
                        high: dec(EX, "high", k.high)?,
                        low: dec(EX, "low", k.low)?,
                        close: dec(EX, "close", k.close)?,
                        volume: dec(EX, "volume", k.volume)?,
                        quote_volume: dec(EX, "turnover", k.turnover)?,
                        ts_ms: m.ts,
                    }))
                })
                .collect::<Result<_, ParseError>>()?
        }
        other => return Err(ParseError::Unknown { exchange: EX, what: format!("topic {other}") }),
    };
    Ok(Parsed::Data(md))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn orderbook_snapshot_and_delta() {
        let s = r#"{"topic":"orderbook.50.BTCUSDT","type":"snapshot","ts":1672304484978,"data":{"s":"BTCUSDT","b":[["16493.50","0.006"]],"a":[["16611.00","0.029"]],"u":18521288,"seq":7961638724},"cts":1672304484976}"#;
        let Parsed::Data(v) = parse(s).unwrap() else { panic!() };
        let Md::Book(b) = &v[0] else { panic!() };
        assert!(b.snapshot);
        assert_eq!(b.seq, 18521288);
        let d = s.replace("snapshot", "delta");
        let Parsed::Data(v) = parse(&d).unwrap() else { panic!() };
        assert!(matches!(&v[0], Md::Book(b) if !b.snapshot));
    }

    #[test]
    fn answers() {
        assert_eq!(parse(r#"{"success":true,"ret_msg":"pong","conn_id":"x","op":"ping"}"#).unwrap(), Parsed::Pong);
        assert_eq!(parse(r#"{"success":true,"ret_msg":"","conn_id":"x","req_id":"","op":"subscribe"}"#).unwrap(), Parsed::Ack);
        assert_eq!(
            parse(r#"{"success":false,"ret_msg":"error:handler not found,topic:x","conn_id":"x","op":"subscribe"}"#).unwrap(),
            Parsed::Rejected("error:handler not found,topic:x".into())
        );
    }

    #[test]
    fn linear_ticker_delta_may_leave_fields_out() {
        let f = r#"{"topic":"tickers.BTCUSDT","type":"delta","ts":1,"cs":2,"data":{"symbol":"BTCUSDT","bid1Price":"17215.50","bid1Size":"84.489"}}"#;
        let Parsed::Data(v) = parse(f).unwrap() else { panic!() };
        let Md::Ticker(t) = &v[0] else { panic!() };
        assert_eq!(t.last, None);
        assert_eq!(t.bid.unwrap().0.to_string(), "17215.50");
    }
}
