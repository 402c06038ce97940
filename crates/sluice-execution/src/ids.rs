//! Client order ids, derived from what caused the order: a redelivered signal
//! yields the same id, so the second placement is refused by the exchange (Upbit
//! `identifier`, Bybit `orderLinkId`, Binance `newClientOrderId` and OKX `clOrdId`
//! are unique per account) and replayed by the dispatcher (the id is also the
//! idempotency key). The form `sl` + 30 hex digits (32 characters, letters and
//! digits) fits every exchange's rules.

use sha2::{Digest, Sha256};
use sluice_domain::Exchange;

/// The client order id for an order caused by `cause` (e.g. a signal's identity
/// and the account), the same every time.
pub fn derive(cause: &str) -> String {
    let h = Sha256::digest(cause.as_bytes());
    format!("sl{}", &hex::encode(h)[..30])
}

/// What identifies a signal across redeliveries: its venue, symbol and time, or
/// its own id when it carries one.
pub fn signal_cause(signal_id: &str, venue: &str, symbol: &str, ts_ns: i64, account: &str) -> String {
    if signal_id.is_empty() { format!("signal|{venue}|{symbol}|{ts_ns}|{account}") } else { format!("signal|{signal_id}|{account}") }
}

/// Checks a caller's own client order id against the exchange's rules.
pub fn check(exchange: Exchange, id: &str) -> Result<(), String> {
    let (max, ok): (usize, fn(char) -> bool) = match exchange {
        // OKX: case-sensitive letters and digits, 1 to 32.
        Exchange::Okx => (32, |c| c.is_ascii_alphanumeric()),
        // Binance: ^[.A-Z:/a-z0-9_-]{1,36}$; Bybit: at most 36; Upbit: kept to the same.
        _ => (36, |c| c.is_ascii_alphanumeric() || ".:/_-".contains(c)),
    };
    if id.is_empty() || id.len() > max || !id.chars().all(ok) {
        let what = if exchange == Exchange::Okx { "letters and digits" } else { "letters, digits and . : / _ -" };
        return Err(format!("client_order_id '{id}' must be 1 to {max} {what} on {exchange}"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_cause_gives_the_same_id_that_every_exchange_takes() {
        let a = derive(&signal_cause("", "upbit", "BTC-KRW", 1_700_000_000_000_000_000, "demo"));
        assert_eq!(a, derive(&signal_cause("", "upbit", "BTC-KRW", 1_700_000_000_000_000_000, "demo")));
        assert_ne!(a, derive(&signal_cause("", "upbit", "BTC-KRW", 1_700_000_000_000_000_001, "demo")));
        assert_ne!(a, derive(&signal_cause("", "upbit", "BTC-KRW", 1_700_000_000_000_000_000, "other")));
        assert_eq!(a.len(), 32);
        for ex in Exchange::ALL {
            check(ex, &a).unwrap();
        }
        assert!(check(Exchange::Okx, "has-dash").is_err());
        assert!(check(Exchange::Binance, "has-dash").is_ok());
        assert!(check(Exchange::Bybit, &"x".repeat(37)).unwrap_err().contains("1 to 36"));
        assert!(check(Exchange::Upbit, "").is_err());
    }
}
