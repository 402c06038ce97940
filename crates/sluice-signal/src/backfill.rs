//! Backfill, pure: the last hour of one-minute candles of a symbol, read from
//! its exchange through the dispatcher at start, so the features' returns over
//! 5, 15 and 60 minutes exist at once instead of after that long on a fresh
//! start. Each candle's close becomes a trade at the end of its minute (with
//! the candle's volume); live trades follow on top.
//!
//! One request per symbol, in each exchange's own shape: Binance `klines`
//! (oldest first), Upbit `candles/minutes/1` (newest first, at most 200), Bybit
//! `kline` (newest first), OKX `market/candles` (newest first, at most 300).

use rust_decimal::Decimal;
use serde_json::Value;
use sluice_domain::{Exchange, Symbol};
use sluice_proto::dispatcher::v1::{CallRequest, Priority};

/// One closed minute.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candle {
    pub open_ms: u64,
    pub close: Decimal,
    pub volume: Decimal,
}

/// A venue name of the signal config ("binance", "upbit", "bybit",
/// "bybit-linear", "okx") as an exchange and a Bybit category.
pub fn venue(venue: &str) -> Option<(Exchange, &'static str)> {
    match venue {
        "binance" => Some((Exchange::Binance, "spot")),
        "upbit" => Some((Exchange::Upbit, "spot")),
        "bybit" => Some((Exchange::Bybit, "spot")),
        "bybit-linear" => Some((Exchange::Bybit, "linear")),
        "okx" => Some((Exchange::Okx, "spot")),
        _ => None,
    }
}

/// The request for the last `minutes` one-minute candles of `symbol` on `venue`.
pub fn request(venue_name: &str, symbol: &Symbol, minutes: u32) -> Option<CallRequest> {
    let (ex, category) = venue(venue_name)?;
    let native = symbol.native(ex);
    let (path, query) = match ex {
        Exchange::Binance => ("/api/v3/klines", format!("symbol={native}&interval=1m&limit={}", minutes.clamp(1, 1000))),
        Exchange::Upbit => ("/v1/candles/minutes/1", format!("market={native}&count={}", minutes.clamp(1, 200))),
        Exchange::Bybit => ("/v5/market/kline", format!("category={category}&symbol={native}&interval=1&limit={}", minutes.clamp(1, 1000))),
        Exchange::Okx => ("/api/v5/market/candles", format!("instId={native}&bar=1m&limit={}", minutes.clamp(1, 300))),
    };
    Some(CallRequest {
        exchange: ex.as_str().into(),
        method: "GET".into(),
        path: path.into(),
        query,
        priority: Priority::Backfill as i32,
        ..Default::default()
    })
}

fn num(v: &Value, what: &str) -> Result<Decimal, String> {
    match v {
        Value::String(s) => s.parse().map_err(|_| format!("{what} '{s}' is not a number")),
        Value::Number(n) => n.to_string().parse().map_err(|_| format!("{what} {n} is not a decimal")),
        other => Err(format!("{what} is {other}, not a number")),
    }
}

fn millis(v: &Value, what: &str) -> Result<u64, String> {
    match v {
        Value::String(s) => s.parse().map_err(|_| format!("{what} '{s}' is not a time in ms")),
        Value::Number(n) => n.as_u64().ok_or_else(|| format!("{what} {n} is not a time in ms")),
        other => Err(format!("{what} is {other}, not a time")),
    }
}

/// `YYYY-MM-DDTHH:MM:SS` in UTC (Upbit's `candle_date_time_utc`) in ms.
fn utc_ms(s: &str) -> Result<u64, String> {
    let f = time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second]");
    let t = time::PrimitiveDateTime::parse(s, &f).map_err(|e| format!("candle time '{s}': {e}"))?.assume_utc();
    u64::try_from(t.unix_timestamp() * 1000).map_err(|_| format!("candle time '{s}' is before 1970"))
}

/// Reads the answer to [`request`] into candles, oldest first.
pub fn read(venue_name: &str, status: u16, body: &[u8]) -> Result<Vec<Candle>, String> {
    let (ex, _) = venue(venue_name).ok_or_else(|| format!("no backfill for venue '{venue_name}'"))?;
    if !(200..300).contains(&status) {
        return Err(format!("{ex} answered {status}: {}", String::from_utf8_lossy(body).chars().take(160).collect::<String>()));
    }
    let v: Value = serde_json::from_slice(body).map_err(|e| format!("{ex} candles: {e}"))?;
    let rows = |v: &Value| v.as_array().cloned().ok_or_else(|| format!("{ex} candles: not a list"));
    let mut out = match ex {
        // [openTime, open, high, low, close, volume, ...]
        Exchange::Binance => rows(&v)?
            .iter()
            .map(|r| Ok(Candle { open_ms: millis(&r[0], "openTime")?, close: num(&r[4], "close")?, volume: num(&r[5], "volume")? }))
            .collect::<Result<Vec<_>, String>>()?,
        Exchange::Upbit => rows(&v)?
            .iter()
            .map(|r| {
                let t = r["candle_date_time_utc"].as_str().ok_or("candle_date_time_utc missing")?;
                Ok(Candle {
                    open_ms: utc_ms(t)?,
                    close: num(&r["trade_price"], "trade_price")?,
                    volume: num(&r["candle_acc_trade_volume"], "volume")?,
                })
            })
            .collect::<Result<Vec<_>, String>>()?,
        Exchange::Bybit => {
            if v["retCode"].as_i64() != Some(0) {
                return Err(format!("bybit {}: {}", v["retCode"], v["retMsg"]));
            }
            rows(&v["result"]["list"])?
                .iter()
                .map(|r| Ok(Candle { open_ms: millis(&r[0], "startTime")?, close: num(&r[4], "close")?, volume: num(&r[5], "volume")? }))
                .collect::<Result<Vec<_>, String>>()?
        }
        Exchange::Okx => {
            if v["code"].as_str() != Some("0") {
                return Err(format!("okx {}: {}", v["code"], v["msg"]));
            }
            rows(&v["data"])?
                .iter()
                .map(|r| Ok(Candle { open_ms: millis(&r[0], "ts")?, close: num(&r[4], "close")?, volume: num(&r[5], "vol")? }))
                .collect::<Result<Vec<_>, String>>()?
        }
    };
    out.sort_by_key(|c| c.open_ms);
    out.dedup_by_key(|c| c.open_ms);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> Decimal {
        s.parse().unwrap()
    }

    #[test]
    fn each_exchanges_candles_oldest_first() {
        let sym: Symbol = "BTC/USDT".parse().unwrap();
        let r = request("bybit-linear", &sym, 60).unwrap();
        assert_eq!(
            (r.exchange.as_str(), r.path.as_str(), r.query.as_str()),
            ("bybit", "/v5/market/kline", "category=linear&symbol=BTCUSDT&interval=1&limit=60")
        );
        assert_eq!(request("upbit", &"BTC/KRW".parse().unwrap(), 500).unwrap().query, "market=KRW-BTC&count=200");
        assert!(request("kraken", &sym, 60).is_none());

        let binance = br#"[[1700000000000,"1","2","0.5","1.5","10",1700000059999,"15",3,"5","7","0"],[1700000060000,"1.5","2","1","1.8","4",1700000119999,"7",2,"1","2","0"]]"#;
        assert_eq!(read("binance", 200, binance).unwrap()[1], Candle { open_ms: 1_700_000_060_000, close: d("1.8"), volume: d("4") });
        let upbit = br#"[{"market":"KRW-BTC","candle_date_time_utc":"2023-11-14T22:14:00","trade_price":95000000,"candle_acc_trade_volume":0.5},
                        {"market":"KRW-BTC","candle_date_time_utc":"2023-11-14T22:13:00","trade_price":94990000,"candle_acc_trade_volume":1.25}]"#;
        let u = read("upbit", 200, upbit).unwrap();
        assert_eq!((u[0].open_ms, u[0].close, u[1].volume), (1_700_000_000_000 - 20_000, d("94990000"), d("0.5")));
        let bybit = br#"{"retCode":0,"retMsg":"OK","result":{"list":[["1700000060000","1","1","1","3","2","6"],["1700000000000","1","1","1","2","1","2"]]}}"#;
        assert_eq!(read("bybit", 200, bybit).unwrap().iter().map(|c| c.close).collect::<Vec<_>>(), [d("2"), d("3")]);
        let okx = br#"{"code":"0","msg":"","data":[["1700000060000","1","1","1","7","2","1","1","1"]]}"#;
        assert_eq!(read("okx", 200, okx).unwrap()[0].close, d("7"));
        assert!(read("okx", 200, br#"{"code":"50011","msg":"Too Many Requests","data":[]}"#).unwrap_err().contains("50011"));
        assert!(read("binance", 429, b"{}").unwrap_err().contains("429"));
        assert!(read("binance", 200, br#"[[1,"x","2","0.5","oops","10"]]"#).unwrap_err().contains("close 'oops'"));
    }
}
