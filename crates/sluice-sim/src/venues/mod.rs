//! What each simulated exchange does differently: its paths, how it authenticates,
//! what it charges, the shape of its answers and of its errors. The request pipeline
//! in `server.rs` is shared; a [`Venue`] fills in the exchange.

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Duration;

use hmac::{Hmac, KeyInit, Mac};
use percent_encoding::percent_decode_str;
use rust_decimal::Decimal;
use sha2::Sha256;
use sluice_domain::Exchange;

use crate::accounts::Account;
use crate::config::{AccountConfig, Scope};
use crate::limits::{Charge, Usage};
use crate::market::Market;

pub(crate) mod binance;
pub(crate) mod bybit;
pub(crate) mod okx;
pub(crate) mod upbit;

/// An HTTP answer.
#[derive(Debug, Clone)]
pub(crate) struct Reply {
    pub(crate) status: u16,
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) body: Vec<u8>,
    /// Held this long before it is sent (an injected slow answer).
    pub(crate) delay_ms: u64,
}

impl Reply {
    pub(crate) fn json(status: u16, v: &serde_json::Value) -> Reply {
        Reply {
            status,
            headers: vec![("content-type".into(), "application/json;charset=UTF-8".into())],
            body: v.to_string().into_bytes(),
            delay_ms: 0,
        }
    }

    pub(crate) fn text(status: u16, s: &str) -> Reply {
        Reply { status, headers: vec![("content-type".into(), "text/plain".into())], body: s.as_bytes().to_vec(), delay_ms: 0 }
    }

    pub(crate) fn with_header(mut self, name: &str, value: String) -> Reply {
        self.headers.push((name.to_owned(), value));
        self
    }
}

/// A request as the pipeline hands it to a venue.
#[derive(Debug, Clone)]
pub(crate) struct SimRequest {
    pub(crate) method: String,
    pub(crate) path: String,
    pub(crate) query: String,
    /// Lowercase names.
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) body: Vec<u8>,
    pub(crate) peer: IpAddr,
    pub(crate) now_ms: u64,
}

impl SimRequest {
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.as_str())
    }
}

/// Decoded request parameters (query, then body fields).
#[derive(Debug, Clone, Default)]
pub(crate) struct Params(Vec<(String, String)>);

impl Params {
    pub(crate) fn push(&mut self, name: String, value: String) {
        self.0.push((name, value));
    }

    pub(crate) fn get(&self, name: &str) -> Option<&str> {
        self.0.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    pub(crate) fn add_query(&mut self, q: &str) -> Result<(), String> {
        for pair in q.split('&').filter(|p| !p.is_empty()) {
            let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
            let dec = |s: &str| {
                percent_decode_str(&s.replace('+', " "))
                    .decode_utf8()
                    .map(|c| c.into_owned())
                    .map_err(|_| format!("bad encoding in '{pair}'"))
            };
            self.0.push((dec(k)?, dec(v)?));
        }
        Ok(())
    }

    pub(crate) fn add_json(&mut self, body: &[u8]) -> Result<(), String> {
        if body.iter().all(u8::is_ascii_whitespace) {
            return Ok(());
        }
        let v: serde_json::Value = serde_json::from_slice(body).map_err(|e| format!("body is not JSON: {e}"))?;
        let serde_json::Value::Object(map) = v else { return Err("body must be a JSON object".into()) };
        for (k, v) in map {
            let s = match v {
                serde_json::Value::String(s) => s,
                other => other.to_string(),
            };
            self.0.push((k, s));
        }
        Ok(())
    }
}

/// A route a venue serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Endpoint {
    pub(crate) name: &'static str,
    pub(crate) private: bool,
}

/// The simulated exchange's API keys.
#[derive(Debug, Clone, Default)]
pub(crate) struct Keys {
    by_api_key: HashMap<String, AccountConfig>,
}

impl Keys {
    pub(crate) fn new(accounts: &[AccountConfig], exchange: Exchange) -> Self {
        Keys { by_api_key: accounts.iter().filter(|a| a.exchange == exchange).map(|a| (a.api_key.clone(), a.clone())).collect() }
    }

    pub(crate) fn get(&self, api_key: &str) -> Option<&AccountConfig> {
        self.by_api_key.get(api_key)
    }
}

pub(crate) use sluice_exchange::verify::NonceLog;

/// What a handler may touch.
pub(crate) struct Ctx<'a> {
    pub(crate) req: &'a SimRequest,
    pub(crate) params: &'a Params,
    pub(crate) market: &'a Market,
    pub(crate) account: Option<&'a mut Account>,
    pub(crate) next_id: &'a mut u64,
}

impl Ctx<'_> {
    pub(crate) fn new_id(&mut self) -> u64 {
        *self.next_id += 1;
        *self.next_id
    }
}

/// One simulated exchange.
pub(crate) trait Venue: Send + Sync + 'static {
    fn exchange(&self) -> Exchange;
    fn endpoint(&self, method: &str, path: &str) -> Option<Endpoint>;
    fn params(&self, req: &SimRequest) -> Result<Params, Reply>;
    fn charges(&self, ep: Endpoint, params: &Params) -> Vec<Charge>;
    /// Checks the request's credentials; the account name on success.
    fn authenticate(&self, req: &SimRequest, params: &Params, keys: &Keys, nonces: &mut NonceLog) -> Result<String, Reply>;
    fn handle(&self, ep: Endpoint, ctx: Ctx<'_>) -> Reply;
    fn throttled(&self, group: &str, scope: Scope, retry_after: Duration, now_ms: u64) -> Reply;
    fn banned(&self, scope: Scope, until_ms: u64, now_ms: u64) -> Reply;
    fn not_found(&self, req: &SimRequest) -> Reply;
    fn server_error(&self) -> Reply;
    fn usage_headers(&self, usage: &[Usage]) -> Vec<(String, String)>;
}

/// A numeric trade id for exchanges whose ids are numbers (Binance, OKX): the
/// order's numeric id and the execution's place in it (`"<order>-<n>"`).
pub(crate) fn numeric_trade_id(trade_id: &str) -> u64 {
    let (order, n) = trade_id.rsplit_once('-').unwrap_or((trade_id, "0"));
    order.parse::<u64>().unwrap_or(0).saturating_mul(1000).saturating_add(n.parse::<u64>().unwrap_or(0))
}

/// A decimal as a JSON number, exactly (serde_json keeps the digits).
pub(crate) fn num(d: Decimal) -> serde_json::Value {
    serde_json::Value::Number(d.normalize().to_string().parse().expect("a decimal is a JSON number"))
}

/// A decimal as a JSON string.
pub(crate) fn s(d: Decimal) -> serde_json::Value {
    serde_json::Value::String(d.normalize().to_string())
}

/// A decimal with a fixed number of places, as Binance writes them ("0.10000000").
pub(crate) fn fixed(d: Decimal, dp: u32) -> String {
    let mut r = d.round_dp(dp);
    r.rescale(dp);
    r.to_string()
}

pub(crate) fn hmac_sha256(key: &str, data: &[u8]) -> Vec<u8> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key.as_bytes()).expect("any key length");
    mac.update(data);
    mac.finalize().into_bytes().to_vec()
}

/// Constant-time comparison of two signatures.
pub(crate) fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Parses a positive decimal parameter.
pub(crate) fn dec(p: &Params, name: &str) -> Result<Option<Decimal>, String> {
    match p.get(name) {
        None | Some("") => Ok(None),
        Some(v) => v.parse::<Decimal>().map(Some).map_err(|_| format!("{name} '{v}' is not a number")),
    }
}

/// `YYYY-MM-DDTHH:MM:SS` in UTC plus `offset_h` hours (Upbit candle times).
pub(crate) fn iso_local(ms: u64, offset_h: i64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp((ms / 1000) as i64 + offset_h * 3600).unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    format!("{:04}-{:02}-{:02}T{:02}:{:02}:{:02}", t.year(), t.month() as u8, t.day(), t.hour(), t.minute(), t.second())
}
