//! Upbit frames (sent as binary frames holding JSON) in every format: DEFAULT and
//! SIMPLE keys are both accepted (serde aliases), and the list formats are arrays
//! of the same objects. Numbers are JSON numbers, read exactly (serde_json keeps
//! their digits), never through `f64`.

use serde::Deserialize;
use serde_json::Number;

use crate::event::{Aggressor, BookMsg, CandleMsg, Md, ParseError, Parsed, TickerMsg, TradeMsg, dec};

const EX: &str = "upbit";

#[derive(Deserialize)]
struct Unit {
    #[serde(alias = "ap")]
    ask_price: Number,
    #[serde(alias = "bp")]
    bid_price: Number,
    #[serde(alias = "as")]
    ask_size: Number,
    #[serde(alias = "bs")]
    bid_size: Number,
}

#[derive(Deserialize)]
struct Msg<'a> {
    #[serde(alias = "ty")]
    #[serde(rename = "type")]
    kind: &'a str,
    #[serde(alias = "cd")]
    code: &'a str,
    #[serde(alias = "tms", default)]
    timestamp: u64,
    #[serde(alias = "tp", default)]
    trade_price: Option<Number>,
    #[serde(alias = "tv", default)]
    trade_volume: Option<Number>,
    #[serde(alias = "ab", default)]
    ask_bid: Option<&'a str>,
    #[serde(alias = "sid", default)]
    sequential_id: Option<u64>,
    #[serde(alias = "ttms", default)]
    trade_timestamp: Option<u64>,
    #[serde(alias = "op", default)]
    opening_price: Option<Number>,
    #[serde(alias = "hp", default)]
    high_price: Option<Number>,
    #[serde(alias = "lp", default)]
    low_price: Option<Number>,
    #[serde(alias = "atv24h", default)]
    acc_trade_volume_24h: Option<Number>,
    #[serde(alias = "atp24h", default)]
    acc_trade_price_24h: Option<Number>,
    #[serde(alias = "obu", default)]
    orderbook_units: Option<Vec<Unit>>,
    #[serde(alias = "cdttmu", default)]
    candle_date_time_utc: Option<&'a str>,
    #[serde(alias = "catv", default)]
    candle_acc_trade_volume: Option<Number>,
    #[serde(alias = "catp", default)]
    candle_acc_trade_price: Option<Number>,
}

#[derive(Deserialize)]
struct ErrorBody {
    name: String,
    #[serde(default)]
    message: String,
}

#[derive(Deserialize)]
struct Status {
    #[serde(default)]
    error: Option<ErrorBody>,
    #[serde(default)]
    status: Option<String>,
}

fn num(field: &'static str, n: &Number) -> Result<rust_decimal::Decimal, ParseError> {
    dec(EX, field, n.as_str())
}

fn need<'n>(field: &'static str, n: &'n Option<Number>) -> Result<&'n Number, ParseError> {
    n.as_ref().ok_or_else(|| ParseError::Shape { exchange: EX, reason: format!("{field} is missing") })
}

fn opt(field: &'static str, n: &Option<Number>) -> Result<Option<rust_decimal::Decimal>, ParseError> {
    n.as_ref().map(|n| num(field, n)).transpose()
}

/// "2026-11-22T13:04:00" (UTC) as Unix milliseconds.
fn utc_ms(s: &str) -> Result<u64, ParseError> {
    let bad = || ParseError::Shape { exchange: EX, reason: format!("'{s}' is not a candle time") };
    let b = s.as_bytes();
    if b.len() < 19 {
        return Err(bad());
    }
    let n = |r: std::ops::Range<usize>| s.get(r).and_then(|x| x.parse::<i64>().ok()).ok_or_else(bad);
    let (y, mo, d, h, mi, se) = (n(0..4)?, n(5..7)?, n(8..10)?, n(11..13)?, n(14..16)?, n(17..19)?);
    // Days from the civil date (Howard Hinnant's algorithm), so no date crate is needed.
    let y2 = if mo <= 2 { y - 1 } else { y };
    let era = y2.div_euclid(400);
    let yoe = y2 - era * 400;
    let doy = (153 * (if mo > 2 { mo - 3 } else { mo + 9 }) + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    u64::try_from(((days * 24 + h) * 60 + mi) * 60 + se).map(|s| s * 1000).map_err(|_| bad())
}

fn one(m: Msg<'_>) -> Result<Md, ParseError> {
    let native = m.code.to_owned();
    Ok(match m.kind {
        "orderbook" => {
            let units = m.orderbook_units.unwrap_or_default();
            let mut bids = Vec::with_capacity(units.len());
            let mut asks = Vec::with_capacity(units.len());
            for u in &units {
                let (bp, bq) = (num("bid_price", &u.bid_price)?, num("bid_size", &u.bid_size)?);
                let (ap, aq) = (num("ask_price", &u.ask_price)?, num("ask_size", &u.ask_size)?);
                // A short book pads missing levels with zeros.
                if !bp.is_zero() {
                    bids.push((bp, bq));
                }
                if !ap.is_zero() {
                    asks.push((ap, aq));
                }
            }
            Md::Book(BookMsg { native, snapshot: true, bids, asks, seq: m.timestamp, first: None, prev: None, ts_ms: m.timestamp })
        }
        "trade" => Md::Trade(TradeMsg {
            native,
            id: m.sequential_id.unwrap_or_default().to_string(),
            price: num("trade_price", need("trade_price", &m.trade_price)?)?,
            qty: num("trade_volume", need("trade_volume", &m.trade_volume)?)?,
            aggressor: match m.ask_bid {
                Some("BID") => Aggressor::Buyer,
                Some("ASK") => Aggressor::Seller,
                _ => Aggressor::Unknown,
            },
            ts_ms: m.trade_timestamp.unwrap_or(m.timestamp),
            seq: m.sequential_id.unwrap_or_default(),
        }),
        "ticker" => Md::Ticker(TickerMsg {
            native,
            last: opt("trade_price", &m.trade_price)?,
            bid: None,
            ask: None,
            open: opt("opening_price", &m.opening_price)?,
            high: opt("high_price", &m.high_price)?,
            low: opt("low_price", &m.low_price)?,
            volume: opt("acc_trade_volume_24h", &m.acc_trade_volume_24h)?,
            quote_volume: opt("acc_trade_price_24h", &m.acc_trade_price_24h)?,
            ts_ms: m.timestamp,
        }),
        k if k.starts_with("candle.") => Md::Candle(CandleMsg {
            native,
            open_ms: utc_ms(m.candle_date_time_utc.unwrap_or(""))?,
            open: num("opening_price", need("opening_price", &m.opening_price)?)?,
            high: num("high_price", need("high_price", &m.high_price)?)?,
            low: num("low_price", need("low_price", &m.low_price)?)?,
            close: num("trade_price", need("trade_price", &m.trade_price)?)?,
            volume: num("candle_acc_trade_volume", need("candle_acc_trade_volume", &m.candle_acc_trade_volume)?)?,
            quote_volume: num("candle_acc_trade_price", need("candle_acc_trade_price", &m.candle_acc_trade_price)?)?,
            ts_ms: m.timestamp,
        }),
        other => return Err(ParseError::Unknown { exchange: EX, what: format!("type {other}") }),
    })
}

pub fn parse(text: &str) -> Result<Parsed, ParseError> {
    let shape = |e: serde_json::Error| ParseError::Shape { exchange: EX, reason: e.to_string() };
    if text.starts_with('[') {
        let list: Vec<Msg> = serde_json::from_str(text).map_err(shape)?;
        return Ok(Parsed::Data(list.into_iter().map(one).collect::<Result<_, _>>()?));
    }
    if text.starts_with("{\"error\"") || text.starts_with("{\"status\"") {
        let s: Status = serde_json::from_str(text).map_err(shape)?;
        return Ok(match (s.error, s.status) {
            (Some(e), _) => Parsed::Rejected(format!("{}: {}", e.name, e.message)),
            (None, Some(_)) => Parsed::Pong,
            (None, None) => Parsed::Ignored,
        });
    }
    let m: Msg = serde_json::from_str(text).map_err(shape)?;
    Ok(Parsed::Data(vec![one(m)?]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_and_simple_orderbooks_read_the_same() {
        let d = r#"{"type":"orderbook","code":"KRW-BTC","timestamp":1746601573804,"total_ask_size":4.79,"total_bid_size":2.65,"orderbook_units":[{"ask_price":137002000,"bid_price":137001000,"ask_size":0.10524366,"bid_size":0.03362094}],"stream_type":"REALTIME","level":0}"#;
        let s = r#"{"ty":"orderbook","cd":"KRW-BTC","tms":1746601573804,"tas":4.79,"tbs":2.65,"obu":[{"ap":137002000,"bp":137001000,"as":0.10524366,"bs":0.03362094}],"st":"REALTIME","lv":0}"#;
        let (a, b) = (parse(d).unwrap(), parse(s).unwrap());
        assert_eq!(a, b);
        let Parsed::Data(v) = a else { panic!() };
        let Md::Book(book) = &v[0] else { panic!() };
        assert!(book.snapshot);
        assert_eq!(book.bids[0].1.to_string(), "0.03362094");
    }

    #[test]
    fn list_format_and_trade() {
        let f = r#"[{"ty":"trade","cd":"KRW-BTC","tp":95000000.0,"tv":0.0001,"ab":"ASK","ttms":5,"sid":17,"tms":6,"st":"REALTIME"}]"#;
        let Parsed::Data(v) = parse(f).unwrap() else { panic!() };
        let Md::Trade(t) = &v[0] else { panic!() };
        assert_eq!((t.price.to_string().as_str(), t.aggressor, t.seq), ("95000000.0", Aggressor::Seller, 17));
    }

    #[test]
    fn errors_status_and_candle_times() {
        assert!(
            matches!(parse(r#"{"error":{"name":"NO_TICKET","message":"x"}}"#).unwrap(), Parsed::Rejected(m) if m.starts_with("NO_TICKET"))
        );
        assert_eq!(parse(r#"{"status":"UP"}"#).unwrap(), Parsed::Pong);
        assert_eq!(utc_ms("1970-01-02T00:00:01").unwrap(), 86_401_000);
        assert_eq!(utc_ms("2026-11-22T00:00:00").unwrap(), 1_795_305_600_000);
        assert!(parse(r#"{"ty":"trade","cd":"KRW-BTC","tms":1}"#).unwrap_err().to_string().contains("trade_price is missing"));
    }
}
