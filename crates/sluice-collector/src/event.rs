//! What the parsers make of an exchange frame: market data in exact decimals, still
//! keyed by the exchange's own symbol, or a control answer (pong, subscribe ack,
//! the exchange's error). Pure data; no I/O.

use rust_decimal::Decimal;

/// Price and quantity levels as the exchange sent them (quantity 0 removes a level).
pub type Levels = Vec<(Decimal, Decimal)>;

/// Who took liquidity.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Aggressor {
    Buyer,
    Seller,
    Unknown,
}

#[derive(Debug, Clone, PartialEq)]
pub struct TradeMsg {
    pub native: String,
    pub id: String,
    pub price: Decimal,
    pub qty: Decimal,
    pub aggressor: Aggressor,
    pub ts_ms: u64,
    /// The exchange's sequence for trades, when it has one (Upbit `sequential_id`).
    pub seq: u64,
}

#[derive(Debug, Clone, PartialEq, Default)]
pub struct TickerMsg {
    pub native: String,
    pub last: Option<Decimal>,
    pub bid: Option<(Decimal, Decimal)>,
    pub ask: Option<(Decimal, Decimal)>,
    pub open: Option<Decimal>,
    pub high: Option<Decimal>,
    pub low: Option<Decimal>,
    pub volume: Option<Decimal>,
    pub quote_volume: Option<Decimal>,
    pub ts_ms: u64,
}

/// A book message and the sequence fields its exchange's rules need.
#[derive(Debug, Clone, PartialEq)]
pub struct BookMsg {
    pub native: String,
    /// Replaces the whole book (Upbit always; Bybit and OKX snapshots).
    pub snapshot: bool,
    pub bids: Levels,
    pub asks: Levels,
    /// Bybit `u`, Binance `u`, OKX `seqId`, Upbit's time stamp.
    pub seq: u64,
    /// Binance `U`: the first update id in the message.
    pub first: Option<u64>,
    /// OKX `prevSeqId`.
    pub prev: Option<i64>,
    pub ts_ms: u64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct CandleMsg {
    pub native: String,
    pub open_ms: u64,
    pub open: Decimal,
    pub high: Decimal,
    pub low: Decimal,
    pub close: Decimal,
    pub volume: Decimal,
    pub quote_volume: Decimal,
    pub ts_ms: u64,
}

/// Normalized market data from one frame.
#[derive(Debug, Clone, PartialEq)]
pub enum Md {
    Trade(TradeMsg),
    Ticker(TickerMsg),
    Book(BookMsg),
    Candle(CandleMsg),
}

/// What a frame was.
#[derive(Debug, Clone, PartialEq)]
pub enum Parsed {
    Data(Vec<Md>),
    /// An answer to our keep-alive.
    Pong,
    /// The exchange accepted a subscribe request.
    Ack,
    /// The exchange refused something we sent; its words.
    Rejected(String),
    /// Known and of no use here (status messages and the like).
    Ignored,
}

/// A frame that could not be understood. Counted and skipped, never fatal.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    #[error("{exchange}: not JSON of a known shape: {reason}")]
    Shape { exchange: &'static str, reason: String },
    #[error("{exchange}: '{value}' in {field} is not a decimal")]
    Decimal { exchange: &'static str, field: &'static str, value: String },
    #[error("{exchange}: unknown message {what}")]
    Unknown { exchange: &'static str, what: String },
}

/// An exact decimal from its text ("65000.10", "1e-8").
pub fn dec(exchange: &'static str, field: &'static str, s: &str) -> Result<Decimal, ParseError> {
    s.parse::<Decimal>().or_else(|_| Decimal::from_scientific(s)).map_err(|_| ParseError::Decimal {
        exchange,
        field,
        value: s.chars().take(40).collect(),
    })
}

/// Levels from `[["price","qty",…],…]` as borrowed strings.
pub fn levels(exchange: &'static str, raw: &[Vec<&str>]) -> Result<Levels, ParseError> {
    raw.iter()
        .map(|l| match l.as_slice() {
            [p, q, ..] => Ok((dec(exchange, "price", p)?, dec(exchange, "qty", q)?)),
            _ => Err(ParseError::Shape { exchange, reason: "a book level needs a price and a quantity".into() }),
        })
        .collect()
}

/// The text between `"key":"` and the next quote, without parsing the frame.
pub fn peek<'a>(text: &'a str, key: &str) -> Option<&'a str> {
    let i = text.find(key)? + key.len();
    let rest = &text[i..];
    let end = rest.find('"')?;
    Some(&rest[..end])
}

pub fn shape(exchange: &'static str, e: serde_json::Error) -> ParseError {
    ParseError::Shape { exchange, reason: e.to_string() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decimals_are_exact_and_bad_ones_are_named() {
        assert_eq!(dec("x", "p", "65000.10").unwrap().to_string(), "65000.10");
        assert_eq!(dec("x", "p", "1e-8").unwrap().to_string(), "0.00000001");
        let e = dec("binance", "price", "abc").unwrap_err();
        assert_eq!(e.to_string(), "binance: 'abc' in price is not a decimal");
    }

    #[test]
    fn peek_reads_a_string_field() {
        assert_eq!(peek(r#"{"e":"trade","s":"X"}"#, r#""e":""#), Some("trade"));
        assert_eq!(peek(r#"{"s":"X"}"#, r#""e":""#), None);
    }
}
