//! Instruments: a base and a quote asset, and how each exchange spells the pair.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::Exchange;

/// Why an asset or symbol was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InstrumentError {
    #[error("'{0}' is not an asset code (1 to 20 letters or digits)")]
    BadAsset(String),
    #[error("'{symbol}' is not a {exchange} symbol: {why}")]
    BadSymbol { exchange: Exchange, symbol: String, why: &'static str },
    #[error("'{0}' is not a symbol of the form BASE/QUOTE")]
    BadCanonical(String),
}

/// An asset code such as `BTC` or `KRW`, always uppercase.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Asset(String);

impl Asset {
    /// An asset code, uppercased; refused unless 1 to 20 ASCII letters or digits.
    pub fn new(code: &str) -> Result<Self, InstrumentError> {
        let ok = (1..=20).contains(&code.len()) && code.bytes().all(|b| b.is_ascii_alphanumeric());
        if ok { Ok(Asset(code.to_ascii_uppercase())) } else { Err(InstrumentError::BadAsset(code.to_owned())) }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl TryFrom<String> for Asset {
    type Error = InstrumentError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Asset::new(&s)
    }
}

impl From<Asset> for String {
    fn from(a: Asset) -> String {
        a.0
    }
}

impl fmt::Display for Asset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A spot pair in canonical form `BASE/QUOTE`; [`Symbol::native`] gives each
/// exchange's spelling (`KRW-BTC` on Upbit, `BTCUSDT` on Bybit and Binance,
/// `BTC-USDT` on OKX).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Symbol {
    pub base: Asset,
    pub quote: Asset,
}

/// Quote assets recognised when splitting a concatenated symbol such as
/// `ETHBTC`. Longest first so `FDUSD` wins over `USD`.
const CONCAT_QUOTES: [&str; 12] = ["FDUSD", "USDT", "USDC", "TUSD", "BUSD", "USDE", "EUR", "TRY", "BTC", "ETH", "BNB", "DAI"];

impl Symbol {
    pub fn new(base: Asset, quote: Asset) -> Self {
        Symbol { base, quote }
    }

    /// The exchange's own spelling of this pair.
    pub fn native(&self, exchange: Exchange) -> String {
        match exchange {
            Exchange::Upbit => format!("{}-{}", self.quote, self.base),
            Exchange::Bybit | Exchange::Binance => format!("{}{}", self.base, self.quote),
            Exchange::Okx => format!("{}-{}", self.base, self.quote),
        }
    }

    /// Parses an exchange's own spelling.
    pub fn from_native(exchange: Exchange, s: &str) -> Result<Self, InstrumentError> {
        let bad = |why| InstrumentError::BadSymbol { exchange, symbol: s.to_owned(), why };
        match exchange {
            Exchange::Upbit | Exchange::Okx => {
                let (a, b) = s.split_once('-').ok_or_else(|| bad("expected a '-' between the assets"))?;
                let (a, b) = (Asset::new(a).map_err(|_| bad("bad asset code"))?, Asset::new(b).map_err(|_| bad("bad asset code"))?);
                Ok(if exchange == Exchange::Upbit { Symbol::new(b, a) } else { Symbol::new(a, b) })
            }
            Exchange::Bybit | Exchange::Binance => {
                let upper = s.to_ascii_uppercase();
                let quote = CONCAT_QUOTES
                    .iter()
                    .find(|q| upper.len() > q.len() && upper.ends_with(*q))
                    .ok_or_else(|| bad("unknown quote asset"))?;
                let base = &upper[..upper.len() - quote.len()];
                Ok(Symbol::new(Asset::new(base).map_err(|_| bad("bad asset code"))?, Asset::new(quote).map_err(|_| bad("bad asset code"))?))
            }
        }
    }
}

impl fmt::Display for Symbol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.base, self.quote)
    }
}

impl FromStr for Symbol {
    type Err = InstrumentError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (b, q) = s.split_once('/').ok_or_else(|| InstrumentError::BadCanonical(s.to_owned()))?;
        Ok(Symbol::new(Asset::new(b)?, Asset::new(q)?))
    }
}

impl TryFrom<String> for Symbol {
    type Error = InstrumentError;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<Symbol> for String {
    fn from(s: Symbol) -> String {
        s.to_string()
    }
}

/// Order side.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Side {
    Buy,
    Sell,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn native_spellings_round_trip() {
        let btc_krw: Symbol = "BTC/KRW".parse().unwrap();
        assert_eq!(btc_krw.native(Exchange::Upbit), "KRW-BTC");
        assert_eq!(Symbol::from_native(Exchange::Upbit, "KRW-BTC").unwrap(), btc_krw);

        let btc_usdt: Symbol = "btc/usdt".parse().unwrap();
        for ex in Exchange::ALL {
            let native = btc_usdt.native(ex);
            assert_eq!(Symbol::from_native(ex, &native).unwrap(), btc_usdt, "{ex} {native}");
        }
        assert_eq!(Symbol::from_native(Exchange::Binance, "ETHFDUSD").unwrap().quote.as_str(), "FDUSD");
    }

    #[test]
    fn refuses_malformed_symbols_with_a_reason() {
        let err = Symbol::from_native(Exchange::Upbit, "KRWBTC").unwrap_err();
        assert!(err.to_string().contains("KRWBTC"));
        assert!(Symbol::from_native(Exchange::Binance, "USDT").is_err());
        assert!(Symbol::from_native(Exchange::Binance, "BTCXYZ").is_err());
        assert!("BTC".parse::<Symbol>().is_err());
        assert!(Asset::new("BT C").is_err());
    }
}
