//! Checking a request that a client signed in an exchange's own scheme, as the
//! exchange would check it, and the exchange's own error answer when it fails.
//! The dispatcher's exchange-compatible REST face uses this: a bot signs with a
//! sluice client credential exactly as it would sign for the exchange, so its
//! library needs no change, and a refusal raises the error the library raises
//! against the exchange (ccxt's `AuthenticationError`, pybit's retCode, ...).
//!
//! * Upbit: `Authorization: Bearer <JWT>`, HS256 or HS512, `access_key`, `nonce`,
//!   and `query_hash` over the parameters (the caller keeps the nonce log).
//! * Bybit v5: `X-BAPI-*` headers, hex HMAC-SHA256 over timestamp + key + recv
//!   window + (query for GET, body otherwise); the timestamp within the window.
//! * Binance: `X-MBX-APIKEY`, `timestamp`, `recvWindow` (at most 60 s) and a hex
//!   HMAC-SHA256 `signature` over query + body (the signature removed).
//! * OKX v5: `OK-ACCESS-*` headers, base64 HMAC-SHA256 over timestamp + METHOD +
//!   path?query + body, the passphrase, and a timestamp within 30 s.
//!
//! Messages never carry a secret; they are the exchange's own wording.

use std::collections::{HashSet, VecDeque};

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use hmac::{Hmac, KeyInit, Mac};
use serde_json::{Value, json};
use sha2::{Digest, Sha256, Sha512};
use sluice_domain::Exchange;

use crate::sign::{Credentials, upbit_param_string};

/// A request as it arrived.
#[derive(Debug, Clone, Copy)]
pub struct Incoming<'a> {
    pub method: &'a str,
    /// The exchange's own path (what OKX signs), without any routing prefix.
    pub path: &'a str,
    /// The raw query string, without `?`.
    pub query: &'a str,
    pub body: &'a [u8],
    /// Header names in lower case.
    pub headers: &'a [(String, String)],
    pub now_ms: u64,
}

impl Incoming<'_> {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(n, _)| n == name).map(|(_, v)| v.trim()).filter(|v| !v.is_empty())
    }
}

/// What a verified signature tells.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// The key the client signed with.
    pub api_key: String,
    /// Upbit's nonce: the caller refuses one it saw before ([`Rejection::nonce_reused`]).
    pub nonce: Option<String>,
    /// The client's own patience (Bybit's recv window, Binance's `recvWindow`).
    pub recv_window_ms: Option<u64>,
}

/// Why a request was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RejectKind {
    /// No credential, or a part of it missing.
    Missing,
    /// A key nobody issued.
    UnknownKey,
    /// A credential that cannot be read (bad JWT, bad timestamp).
    Malformed,
    /// A timestamp outside the allowed window.
    Stale,
    /// OKX: the passphrase does not match.
    Passphrase,
    /// The signature does not verify, or does not cover these parameters.
    Signature,
    /// Upbit: the nonce was used before.
    NonceReused,
    /// A valid client asking for more than it was granted.
    Permission,
}

impl RejectKind {
    /// A metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            RejectKind::Missing => "missing",
            RejectKind::UnknownKey => "unknown_key",
            RejectKind::Malformed => "malformed",
            RejectKind::Stale => "stale",
            RejectKind::Passphrase => "passphrase",
            RejectKind::Signature => "signature",
            RejectKind::NonceReused => "nonce_reused",
            RejectKind::Permission => "permission",
        }
    }
}

/// A refusal in the exchange's own terms: HTTP status, error code and message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub kind: RejectKind,
    pub status: u16,
    /// Upbit's error name, or the numeric code of the others (as text).
    pub code: &'static str,
    pub message: String,
}

fn reject(kind: RejectKind, status: u16, code: &'static str, message: impl Into<String>) -> Rejection {
    Rejection { kind, status, code, message: message.into() }
}

impl Rejection {
    /// Upbit's answer to a nonce seen before.
    pub fn nonce_reused() -> Rejection {
        reject(RejectKind::NonceReused, 401, "nonce_used", "이미 요청한 nonce값이 다시 사용되었습니다.")
    }

    /// The exchange's answer to a key without the permission asked for; `reason`
    /// (sluice's own words: which grant refused it) follows the exchange's message.
    pub fn permission(exchange: Exchange, reason: &str) -> Rejection {
        let (status, code, msg) = match exchange {
            Exchange::Upbit => (401, "out_of_scope", "권한이 부족합니다."),
            Exchange::Bybit => (200, "10005", "Permission denied, please check your API key permissions."),
            Exchange::Binance => (401, "-2015", "Invalid API-key, IP, or permissions for action."),
            Exchange::Okx => (401, "50120", "API key doesn't have permission to perform this operation."),
        };
        reject(RejectKind::Permission, status, code, format!("{msg} (sluice: {reason})"))
    }

    /// The answer's body, shaped as `exchange` shapes its errors.
    pub fn body(&self, exchange: Exchange, now_ms: u64) -> String {
        let v = match exchange {
            Exchange::Upbit => json!({ "error": { "name": self.code, "message": self.message } }),
            Exchange::Bybit => json!({
                "retCode": self.code.parse::<i64>().unwrap_or(10001), "retMsg": self.message,
                "result": {}, "retExtInfo": {}, "time": now_ms,
            }),
            Exchange::Binance => json!({ "code": self.code.parse::<i64>().unwrap_or(-1000), "msg": self.message }),
            Exchange::Okx => json!({ "code": self.code, "msg": self.message, "data": [] }),
        };
        v.to_string()
    }
}

/// Whether the request carries a signature at all. A bare Binance API key is not
/// one (python-binance sends its key on public calls too), nor is anything else
/// that proves nothing.
pub fn is_signed(exchange: Exchange, req: &Incoming<'_>) -> bool {
    match exchange {
        Exchange::Upbit => req.header("authorization").is_some(),
        Exchange::Bybit => req.header("x-bapi-sign").is_some() || req.header("x-bapi-api-key").is_some(),
        Exchange::Binance => param(req.query, "signature").is_some() || param(&String::from_utf8_lossy(req.body), "signature").is_some(),
        Exchange::Okx => req.header("ok-access-sign").is_some() || req.header("ok-access-key").is_some(),
    }
}

/// Verifies `req`'s signature; `lookup` finds the credentials issued under a key.
pub fn verify<'c>(exchange: Exchange, req: &Incoming<'_>, lookup: impl Fn(&str) -> Option<&'c Credentials>) -> Result<Verified, Rejection> {
    match exchange {
        Exchange::Upbit => verify_upbit(req, lookup),
        Exchange::Bybit => verify_bybit(req, lookup),
        Exchange::Binance => verify_binance(req, lookup),
        Exchange::Okx => verify_okx(req, lookup),
    }
}

/// The query and body to forward once verified: Binance's `signature` and
/// `timestamp` removed (the dispatcher stamps and signs afresh when it sends);
/// the other exchanges sign in headers, which are never forwarded.
pub fn strip(exchange: Exchange, query: &str, body: &[u8]) -> (String, Vec<u8>) {
    if exchange != Exchange::Binance {
        return (query.to_owned(), body.to_vec());
    }
    let keep = |s: &str| -> String {
        s.split('&')
            .filter(|kv| !kv.is_empty() && !matches!(kv.split('=').next(), Some("signature" | "timestamp")))
            .collect::<Vec<_>>()
            .join("&")
    };
    (keep(query), keep(String::from_utf8_lossy(body).trim()).into_bytes())
}

fn param<'s>(s: &'s str, name: &str) -> Option<&'s str> {
    s.split('&').find_map(|kv| kv.split_once('=').filter(|(k, _)| *k == name).map(|(_, v)| v))
}

fn hmac256(secret: &str, parts: &[&[u8]]) -> Vec<u8> {
    let mut m = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes keys of any length");
    for p in parts {
        m.update(p);
    }
    m.finalize().into_bytes().to_vec()
}

/// Constant-time equality, so timing tells nothing about a signature.
fn same(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn verify_upbit<'c>(req: &Incoming<'_>, lookup: impl Fn(&str) -> Option<&'c Credentials>) -> Result<Verified, Rejection> {
    let jwt_fail = |m: &str| reject(RejectKind::Malformed, 401, "jwt_verification", m);
    let auth = req
        .header("authorization")
        .ok_or_else(|| reject(RejectKind::Missing, 401, "jwt_verification", "Authorization header is missing"))?;
    let token = auth.strip_prefix("Bearer ").ok_or_else(|| jwt_fail("Authorization must be 'Bearer <JWT>'"))?;
    let mut parts = token.split('.');
    let (Some(h), Some(p), Some(sig), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
        return Err(jwt_fail("the token is not a JWT"));
    };
    let decode = |s: &str| URL_SAFE_NO_PAD.decode(s).ok().and_then(|b| serde_json::from_slice::<Value>(&b).ok());
    let header = decode(h).ok_or_else(|| jwt_fail("the JWT header is not JSON"))?;
    let claims = decode(p).ok_or_else(|| jwt_fail("the JWT payload is not JSON"))?;
    let access = claims.get("access_key").and_then(Value::as_str).ok_or_else(|| jwt_fail("the access_key claim is missing"))?;
    let creds = lookup(access).ok_or_else(|| reject(RejectKind::UnknownKey, 401, "invalid_access_key", "잘못된 엑세스 키입니다."))?;
    let secret = creds.secret().as_bytes();
    let input = format!("{h}.{p}");
    let expected = match header.get("alg").and_then(Value::as_str) {
        Some("HS256") => {
            Hmac::<Sha256>::new_from_slice(secret).expect("any key").chain_update(input.as_bytes()).finalize().into_bytes().to_vec()
        }
        Some("HS512") => {
            Hmac::<Sha512>::new_from_slice(secret).expect("any key").chain_update(input.as_bytes()).finalize().into_bytes().to_vec()
        }
        _ => return Err(jwt_fail("the JWT algorithm must be HS256 or HS512")),
    };
    let given = URL_SAFE_NO_PAD.decode(sig).map_err(|_| jwt_fail("the JWT signature is not base64url"))?;
    if !same(&expected, &given) {
        return Err(reject(RejectKind::Signature, 401, "jwt_verification", "Jwt 토큰 검증에 실패했습니다."));
    }
    let nonce = claims.get("nonce").and_then(Value::as_str).ok_or_else(|| jwt_fail("the nonce claim is missing"))?;
    let params =
        upbit_param_string(req.query, req.body).map_err(|e| reject(RejectKind::Malformed, 400, "validation_error", e.to_string()))?;
    if !params.is_empty() {
        let hash = |s: &str| match claims.get("query_hash_alg").and_then(Value::as_str).unwrap_or("SHA512") {
            "SHA256" => Some(hex::encode(Sha256::digest(s.as_bytes()))),
            "SHA512" => Some(hex::encode(Sha512::digest(s.as_bytes()))),
            _ => None,
        };
        let given = claims.get("query_hash").and_then(Value::as_str).unwrap_or_default();
        // Some libraries hash the query as sent (still percent-encoded); both name
        // the same parameters.
        let raw = if req.body.iter().all(u8::is_ascii_whitespace) { req.query } else { "" };
        if ![params.as_str(), raw].iter().filter(|s| !s.is_empty()).any(|s| hash(s).is_some_and(|w| same(w.as_bytes(), given.as_bytes()))) {
            return Err(reject(RejectKind::Signature, 401, "invalid_query_payload", "Jwt 토큰의 쿼리 정보가 요청과 일치하지 않습니다."));
        }
    }
    Ok(Verified { api_key: access.to_owned(), nonce: Some(nonce.to_owned()), recv_window_ms: None })
}

fn verify_bybit<'c>(req: &Incoming<'_>, lookup: impl Fn(&str) -> Option<&'c Credentials>) -> Result<Verified, Rejection> {
    let fail = |kind, code, msg: &str| reject(kind, 200, code, msg);
    let key = req.header("x-bapi-api-key").ok_or_else(|| fail(RejectKind::Missing, "10003", "API key is invalid."))?;
    let creds = lookup(key).ok_or_else(|| fail(RejectKind::UnknownKey, "10003", "API key is invalid."))?;
    let stale = "invalid request, please check your server timestamp or recv_window param";
    let ts: u64 = req.header("x-bapi-timestamp").and_then(|t| t.parse().ok()).ok_or_else(|| fail(RejectKind::Missing, "10002", stale))?;
    let window: u64 = match req.header("x-bapi-recv-window") {
        None => 5000,
        Some(w) => w.parse().map_err(|_| fail(RejectKind::Malformed, "10001", "recv_window must be a number of milliseconds"))?,
    };
    // Bybit: server_time - recv_window <= timestamp < server_time + 1000.
    if ts.saturating_add(window) < req.now_ms || ts >= req.now_ms + 1000 {
        return Err(fail(
            RejectKind::Stale,
            "10002",
            &format!("{stale}. req_timestamp[{ts}],server_timestamp[{}],recv_window[{window}]", req.now_ms),
        ));
    }
    let sign =
        req.header("x-bapi-sign").ok_or_else(|| fail(RejectKind::Missing, "10004", "error sign! the X-BAPI-SIGN header is missing"))?;
    let payload: &[u8] = if req.method.eq_ignore_ascii_case("GET") { req.query.as_bytes() } else { req.body };
    let expected =
        hex::encode(hmac256(creds.secret(), &[ts.to_string().as_bytes(), key.as_bytes(), window.to_string().as_bytes(), payload]));
    if !same(expected.as_bytes(), sign.to_ascii_lowercase().as_bytes()) {
        return Err(fail(RejectKind::Signature, "10004", "error sign! please check your signature generation algorithm"));
    }
    Ok(Verified { api_key: key.to_owned(), nonce: None, recv_window_ms: Some(window) })
}

fn verify_binance<'c>(req: &Incoming<'_>, lookup: impl Fn(&str) -> Option<&'c Credentials>) -> Result<Verified, Rejection> {
    let key = req.header("x-mbx-apikey").ok_or_else(|| reject(RejectKind::Missing, 401, "-2014", "API-key format invalid."))?;
    let creds =
        lookup(key).ok_or_else(|| reject(RejectKind::UnknownKey, 401, "-2015", "Invalid API-key, IP, or permissions for action."))?;
    let body = String::from_utf8_lossy(req.body);
    let body = body.trim();
    let get = |name: &str| param(req.query, name).or_else(|| param(body, name)).filter(|v| !v.is_empty());
    let mandatory = |name: &str| {
        reject(RejectKind::Missing, 400, "-1102", format!("Mandatory parameter '{name}' was not sent, was empty/null, or malformed."))
    };
    let ts: u64 = get("timestamp").and_then(|t| t.parse().ok()).ok_or_else(|| mandatory("timestamp"))?;
    let window: u64 = match get("recvWindow") {
        None => 5000,
        Some(w) => {
            w.parse().map_err(|_| reject(RejectKind::Malformed, 400, "-1100", "Illegal characters found in parameter 'recvWindow'."))?
        }
    };
    if window > 60_000 {
        return Err(reject(RejectKind::Malformed, 400, "-1131", "recvWindow must be less than 60000"));
    }
    if ts > req.now_ms + 1000 {
        return Err(reject(RejectKind::Stale, 400, "-1021", "Timestamp for this request was 1000ms ahead of the server's time."));
    }
    if req.now_ms.saturating_sub(ts) > window {
        return Err(reject(RejectKind::Stale, 400, "-1021", "Timestamp for this request is outside of the recvWindow."));
    }
    let sig = get("signature").ok_or_else(|| mandatory("signature"))?;
    let without = |s: &str| s.split('&').filter(|kv| !kv.starts_with("signature=")).collect::<Vec<_>>().join("&");
    let expected = hex::encode(hmac256(creds.secret(), &[without(req.query).as_bytes(), without(body).as_bytes()]));
    if !same(expected.as_bytes(), sig.to_ascii_lowercase().as_bytes()) {
        return Err(reject(RejectKind::Signature, 400, "-1022", "Signature for this request is not valid."));
    }
    Ok(Verified { api_key: key.to_owned(), nonce: None, recv_window_ms: Some(window) })
}

fn verify_okx<'c>(req: &Incoming<'_>, lookup: impl Fn(&str) -> Option<&'c Credentials>) -> Result<Verified, Rejection> {
    let header = |name: &str, code: &'static str| {
        req.header(name)
            .ok_or_else(|| reject(RejectKind::Missing, 401, code, format!("Request header {} cannot be empty.", name.to_ascii_uppercase())))
    };
    let key = header("ok-access-key", "50103")?;
    let pass = header("ok-access-passphrase", "50104")?;
    let sign = header("ok-access-sign", "50106")?;
    let ts = header("ok-access-timestamp", "50107")?;
    let creds = lookup(key).ok_or_else(|| reject(RejectKind::UnknownKey, 401, "50111", "Invalid OK-ACCESS-KEY."))?;
    let parsed = time::OffsetDateTime::parse(ts, &time::format_description::well_known::Rfc3339)
        .map_err(|_| reject(RejectKind::Malformed, 401, "50112", "Invalid OK-ACCESS-TIMESTAMP."))?;
    let ts_ms = parsed.unix_timestamp_nanos() / 1_000_000;
    if (ts_ms - i128::from(req.now_ms)).abs() > 30_000 {
        return Err(reject(RejectKind::Stale, 401, "50102", "Timestamp request expired."));
    }
    if !creds.passphrase().is_some_and(|p| same(p.as_bytes(), pass.as_bytes())) {
        return Err(reject(RejectKind::Passphrase, 401, "50105", "Invalid OK-ACCESS-PASSPHRASE."));
    }
    let path = if req.query.is_empty() { req.path.to_owned() } else { format!("{}?{}", req.path, req.query) };
    let method = req.method.to_ascii_uppercase();
    let expected = STANDARD.encode(hmac256(creds.secret(), &[ts.as_bytes(), method.as_bytes(), path.as_bytes(), req.body]));
    if !same(expected.as_bytes(), sign.as_bytes()) {
        return Err(reject(RejectKind::Signature, 401, "50113", "Invalid Sign."));
    }
    Ok(Verified { api_key: key.to_owned(), nonce: None, recv_window_ms: None })
}

/// Nonces already used (Upbit refuses a repeated nonce), bounded: the oldest
/// are forgotten past the capacity.
#[derive(Debug, Default)]
pub struct NonceLog {
    seen: HashSet<String>,
    order: VecDeque<String>,
}

impl NonceLog {
    const CAP: usize = 200_000;

    /// Records `nonce`; false when it was used before.
    pub fn fresh(&mut self, nonce: &str) -> bool {
        if !self.seen.insert(nonce.to_owned()) {
            return false;
        }
        self.order.push_back(nonce.to_owned());
        if self.order.len() > Self::CAP
            && let Some(old) = self.order.pop_front()
        {
            self.seen.remove(&old);
        }
        true
    }
}

#[cfg(test)]
#[path = "verify_tests.rs"]
mod tests;
