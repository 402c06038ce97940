//! The exchanges sluice speaks to, with their canonical lowercase names.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// An exchange sluice can route to. The lowercase name is the wire form (gRPC
/// requests, NATS subjects, configuration keys) and never changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Exchange {
    Upbit,
    Bybit,
    Binance,
    Okx,
}

impl Exchange {
    /// Every exchange, in a stable order (used for listings and error messages).
    pub const ALL: [Exchange; 4] = [Exchange::Upbit, Exchange::Bybit, Exchange::Binance, Exchange::Okx];

    /// The canonical lowercase name.
    pub const fn as_str(self) -> &'static str {
        match self {
            Exchange::Upbit => "upbit",
            Exchange::Bybit => "bybit",
            Exchange::Binance => "binance",
            Exchange::Okx => "okx",
        }
    }
}

impl fmt::Display for Exchange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A name that is not one of [`Exchange::ALL`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown exchange '{0}' (known: upbit, bybit, binance, okx)")]
pub struct UnknownExchange(pub String);

impl FromStr for Exchange {
    type Err = UnknownExchange;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Exchange::ALL.into_iter().find(|e| e.as_str().eq_ignore_ascii_case(s.trim())).ok_or_else(|| UnknownExchange(s.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_names_case_insensitively_and_rejects_others() {
        assert_eq!("UpBit".parse::<Exchange>(), Ok(Exchange::Upbit));
        assert_eq!(" okx ".parse::<Exchange>(), Ok(Exchange::Okx));
        let err = "kraken".parse::<Exchange>().unwrap_err();
        assert!(err.to_string().contains("kraken"));
        for e in Exchange::ALL {
            assert_eq!(e.as_str().parse::<Exchange>(), Ok(e));
        }
    }
}
