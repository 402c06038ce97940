//! OKX v5 public channels: `books` (snapshot, then updates chained by
//! `prevSeqId`), `tickers`, `trades`; `{"event":…}` answers; the text `pong`.

use serde::Deserialize;

use crate::event::{Aggressor, BookMsg, Md, ParseError, Parsed, TickerMsg, TradeMsg, dec, levels, peek, shape};

const EX: &str = "okx";

#[derive(Deserialize)]
struct Msg<'a, T> {
    #[serde(borrow)]
    arg: Arg<'a>,
    #[serde(default)]
    action: Option<&'a str>,
    data: Vec<T>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Arg<'a> {
    inst_id: &'a str,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Book<'a> {
    #[serde(borrow)]
    asks: Vec<Vec<&'a str>>,
    #[serde(borrow)]
    bids: Vec<Vec<&'a str>>,
    ts: &'a str,
    seq_id: i64,
    prev_seq_id: i64,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Trade<'a> {
    trade_id: &'a str,
    px: &'a str,
    sz: &'a str,
    side: &'a str,
    ts: &'a str,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct Ticker<'a> {
    last: &'a str,
    ask_px: &'a str,
    ask_sz: &'a str,
    bid_px: &'a str,
    bid_sz: &'a str,
    open24h: &'a str,
    high24h: &'a str,
    low24h: &'a str,
    vol24h: &'a str,
    vol_ccy24h: &'a str,
    ts: &'a str,
}

#[derive(Deserialize)]
struct Event {
    event: String,
    #[serde(default)]
    code: String,
    #[serde(default)]
    msg: String,
}

fn ms(s: &str) -> Result<u64, ParseError> {
    s.parse().map_err(|_| ParseError::Shape { exchange: EX, reason: format!("'{s}' is not a time stamp") })
}

fn opt_pair(p: &str, q: &str) -> Result<Option<(rust_decimal::Decimal, rust_decimal::Decimal)>, ParseError> {
    if p.is_empty() { Ok(None) } else { Ok(Some((dec(EX, "px", p)?, dec(EX, "sz", q)?))) }
}

pub fn parse(text: &str) -> Result<Parsed, ParseError> {
    if text == "pong" {
        return Ok(Parsed::Pong);
    }
    if text.starts_with("{\"event\"") {
        let e: Event = serde_json::from_str(text).map_err(|e| shape(EX, e))?;
        return Ok(match e.event.as_str() {
            "subscribe" | "unsubscribe" => Parsed::Ack,
            "error" => Parsed::Rejected(format!("{} {}", e.code, e.msg)),
            _ => Parsed::Ignored,
        });
    }
    let Some(channel) = peek(text, "\"channel\":\"") else {
        return Err(ParseError::Unknown { exchange: EX, what: text.chars().take(60).collect() });
    };
    let md = match channel {
        "books" => {
            let m: Msg<Book> = serde_json::from_str(text).map_err(|e| shape(EX, e))?;
            let snapshot = m.action == Some("snapshot");
            m.data
                .iter()
                .map(|b| {
                    Ok(Md::Book(BookMsg {
                        native: m.arg.inst_id.to_owned(),
                        snapshot,
                        bids: levels(EX, &b.bids)?,
                        asks: levels(EX, &b.asks)?,
                        seq: u64::try_from(b.seq_id).unwrap_or(0),
                        first: None,
                        prev: Some(b.prev_seq_id),
                        ts_ms: ms(b.ts)?,
                    }))
                })
                .collect::<Result<_, ParseError>>()?
        }
        "trades" => {
            let m: Msg<Trade> = serde_json::from_str(text).map_err(|e| shape(EX, e))?;
            m.data
                .iter()
                .map(|t| {
                    Ok(Md::Trade(TradeMsg {
                        native: m.arg.inst_id.to_owned(),
                        id: t.trade_id.to_owned(),
                        price: dec(EX, "px", t.px)?,
                        qty: dec(EX, "sz", t.sz)?,
                        aggressor: if t.side == "buy" { Aggressor::Buyer } else { Aggressor::Seller },
                        ts_ms: ms(t.ts)?,
                        seq: 0,
                    }))
                })
                .collect::<Result<_, ParseError>>()?
        }
        "tickers" => {
            let m: Msg<Ticker> = serde_json::from_str(text).map_err(|e| shape(EX, e))?;
            m.data
                .iter()
                .map(|t| {
                    Ok(Md::Ticker(TickerMsg {
                        native: m.arg.inst_id.to_owned(),
                        last: Some(dec(EX, "last", t.last)?),
                        bid: opt_pair(t.bid_px, t.bid_sz)?,
                        ask: opt_pair(t.ask_px, t.ask_sz)?,
                        open: Some(dec(EX, "open24h", t.open24h)?),
                        high: Some(dec(EX, "high24h", t.high24h)?),
                        low: Some(dec(EX, "low24h", t.low24h)?),
                        volume: Some(dec(EX, "vol24h", t.vol24h)?),
                        quote_volume: Some(dec(EX, "volCcy24h", t.vol_ccy24h)?),
                        ts_ms: ms(t.ts)?,
                    }))
                })
                .collect::<Result<_, ParseError>>()?
        }
        other => return Err(ParseError::Unknown { exchange: EX, what: format!("channel {other}") }),
    };
    Ok(Parsed::Data(md))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn book_update_carries_the_chain_and_a_zero_checksum_is_fine() {
        let f = r#"{"arg":{"channel":"books","instId":"BTC-USDT"},"action":"update","data":[{"asks":[["8476.98","415","0","13"]],"bids":[],"ts":"1597026383085","checksum":0,"prevSeqId":123,"seqId":130}]}"#;
        let Parsed::Data(v) = parse(f).unwrap() else { panic!() };
        let Md::Book(b) = &v[0] else { panic!() };
        assert_eq!((b.seq, b.prev, b.snapshot), (130, Some(123), false));
    }

    #[test]
    fn events() {
        assert_eq!(parse("pong").unwrap(), Parsed::Pong);
        assert_eq!(parse(r#"{"event":"subscribe","arg":{"channel":"books","instId":"BTC-USDT"},"connId":"a"}"#).unwrap(), Parsed::Ack);
        assert!(matches!(
            parse(r#"{"event":"error","code":"60018","msg":"Wrong URL or channel:books,instId:X doesn't exist.","connId":"a","arg":{"channel":"books"}}"#).unwrap(),
            Parsed::Rejected(m) if m.starts_with("60018")
        ));
    }
}
