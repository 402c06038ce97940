//! Request signing, exactly as each exchange documents it (EXCHANGES.md):
//!
//! * Upbit: `Authorization: Bearer <JWT>` signed HS512 with claims `access_key`,
//!   a fresh UUID `nonce`, and, when there are parameters, `query_hash` (hex SHA-512
//!   of the query string, or of the JSON body's fields written as a query string)
//!   with `query_hash_alg = "SHA512"`.
//! * Bybit v5: hex HMAC-SHA256 over timestamp + api key + recv window + (query for
//!   GET, raw body for POST) in `X-BAPI-SIGN`.
//! * Binance: `timestamp` (and `recvWindow`) appended to the query, then hex
//!   HMAC-SHA256 over query + body appended as `signature`; key in `X-MBX-APIKEY`.
//! * OKX v5: base64 HMAC-SHA256 over ISO timestamp + METHOD + path?query + body, with
//!   key, timestamp and passphrase headers.
//!
//! The JWT is assembled here from HMAC primitives rather than with a JWT crate: the
//! HS512 compact form is a few lines, and the JWT crates pull in RSA and elliptic
//! curve code the 2-core build would pay for and sluice never uses.

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use hmac::{Hmac, KeyInit, Mac};
use percent_encoding::percent_decode_str;
use secrecy::{ExposeSecret, SecretString};
use sha2::{Digest, Sha256, Sha512};
use sluice_domain::Exchange;

/// An account's credentials. `Debug` shows `[REDACTED]`; nothing here is ever
/// logged, returned or put in an error message.
#[derive(Debug, Clone)]
pub struct Credentials {
    api_key: SecretString,
    secret: SecretString,
    passphrase: Option<SecretString>,
}

impl Credentials {
    pub fn new(api_key: impl Into<String>, secret: impl Into<String>, passphrase: Option<String>) -> Self {
        Credentials {
            api_key: SecretString::from(api_key.into()),
            secret: SecretString::from(secret.into()),
            passphrase: passphrase.map(SecretString::from),
        }
    }

    pub fn has_passphrase(&self) -> bool {
        self.passphrase.is_some()
    }

    /// Replaces every occurrence of this account's key, secret or passphrase in
    /// `bytes` with `[REDACTED]`. Exchanges sometimes echo credential material
    /// (Bybit's signature error quotes the signed string, API key included), and
    /// nothing the dispatcher returns may carry it.
    pub fn redact(&self, bytes: &[u8]) -> Option<Vec<u8>> {
        let needles: Vec<&[u8]> = [Some(&self.api_key), Some(&self.secret), self.passphrase.as_ref()]
            .into_iter()
            .flatten()
            .map(|s| s.expose_secret().as_bytes())
            .filter(|n| n.len() >= 4)
            .collect();
        let mut out: Option<Vec<u8>> = None;
        let (mut i, mut copied) = (0, 0);
        while i < bytes.len() {
            match needles.iter().find(|n| bytes[i..].starts_with(n)) {
                Some(n) => {
                    let o = out.get_or_insert_with(|| Vec::with_capacity(bytes.len()));
                    o.extend_from_slice(&bytes[copied..i]);
                    o.extend_from_slice(b"[REDACTED]");
                    i += n.len();
                    copied = i;
                }
                None => i += 1,
            }
        }
        out.map(|mut o| {
            o.extend_from_slice(&bytes[copied..]);
            o
        })
    }

    /// The public key id (the API key), for the few places an exchange wants it in a
    /// payload that the dispatcher builds itself.
    pub fn expose_api_key(&self) -> &str {
        self.api_key.expose_secret()
    }

    /// For [`crate::verify`], which checks signatures made with it.
    pub(crate) fn secret(&self) -> &str {
        self.secret.expose_secret()
    }

    pub(crate) fn passphrase(&self) -> Option<&str> {
        self.passphrase.as_ref().map(|p| p.expose_secret())
    }
}

/// A request about to be sent, before signing.
#[derive(Debug, Clone, Copy)]
pub struct Unsigned<'a> {
    pub method: &'a str,
    /// Full path including the version prefix, as sent.
    pub path: &'a str,
    /// Raw query string as sent, without `?`.
    pub query: &'a str,
    pub body: &'a [u8],
}

/// Inputs that vary per call; passed in so signing stays a pure function.
#[derive(Debug, Clone)]
pub struct SignContext {
    pub now_ms: u64,
    /// Upbit's nonce: a fresh UUID per request.
    pub nonce: String,
    pub recv_window_ms: u64,
}

/// What signing adds: the final query string and headers.
pub struct Signed {
    pub query: String,
    /// Header values derive from secrets: never log them.
    pub headers: Vec<(&'static str, String)>,
}

impl std::fmt::Debug for Signed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<_> = self.headers.iter().map(|(n, _)| *n).collect();
        f.debug_struct("Signed").field("query_len", &self.query.len()).field("headers", &names).finish()
    }
}

/// Why a request could not be signed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignError {
    #[error("upbit signs the body's fields: {0}")]
    UpbitBody(String),
    #[error("okx accounts need a passphrase; this account has none")]
    MissingPassphrase,
    #[error("body is not UTF-8")]
    BodyNotUtf8,
}

fn hmac_sha256(key: &str, parts: &[&[u8]]) -> Vec<u8> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key.as_bytes()).expect("HMAC takes keys of any length");
    for p in parts {
        mac.update(p);
    }
    mac.finalize().into_bytes().to_vec()
}

fn hmac_sha512(key: &str, data: &[u8]) -> Vec<u8> {
    let mut mac = Hmac::<Sha512>::new_from_slice(key.as_bytes()).expect("HMAC takes keys of any length");
    mac.update(data);
    mac.finalize().into_bytes().to_vec()
}

/// Signs a request for `exchange`.
pub fn sign(exchange: Exchange, creds: &Credentials, req: Unsigned<'_>, ctx: &SignContext) -> Result<Signed, SignError> {
    match exchange {
        Exchange::Upbit => sign_upbit(creds, req, ctx),
        Exchange::Bybit => sign_bybit(creds, req, ctx),
        Exchange::Binance => Ok(sign_binance(creds, req, ctx)),
        Exchange::Okx => sign_okx(creds, req, ctx),
    }
}

/// Upbit's parameter string for `query_hash`: the unescaped query, or the JSON
/// body's top-level fields as `key=value` joined by `&` in body order (arrays repeat
/// the key, as Python's `urlencode(doseq=True)` does in Upbit's examples).
pub fn upbit_param_string(query: &str, body: &[u8]) -> Result<String, SignError> {
    if !body.iter().all(u8::is_ascii_whitespace) {
        let v: serde_json::Value = serde_json::from_slice(body).map_err(|e| SignError::UpbitBody(format!("not JSON: {e}")))?;
        let serde_json::Value::Object(map) = v else {
            return Err(SignError::UpbitBody(format!("must be a JSON object, got {}", crate::params::json_kind(&v))));
        };
        let mut parts = Vec::with_capacity(map.len());
        for (k, v) in &map {
            match v {
                serde_json::Value::Array(items) => {
                    for item in items {
                        parts.push(format!(
                            "{k}={}",
                            scalar(item).ok_or_else(|| SignError::UpbitBody(format!("field '{k}' holds a nested value")))?
                        ));
                    }
                }
                serde_json::Value::Null => {}
                other => parts.push(format!(
                    "{k}={}",
                    scalar(other).ok_or_else(|| SignError::UpbitBody(format!("field '{k}' holds a nested object")))?
                )),
            }
        }
        return Ok(parts.join("&"));
    }
    Ok(percent_decode_str(query).decode_utf8_lossy().into_owned())
}

fn scalar(v: &serde_json::Value) -> Option<String> {
    match v {
        serde_json::Value::String(s) => Some(s.clone()),
        serde_json::Value::Number(n) => Some(n.to_string()),
        serde_json::Value::Bool(b) => Some(b.to_string()),
        _ => None,
    }
}

/// Builds Upbit's HS512 JWT for a parameter string (empty: no query claims).
pub fn upbit_jwt(creds: &Credentials, params: &str, nonce: &str) -> String {
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS512","typ":"JWT"}"#);
    let mut claims = serde_json::Map::new();
    claims.insert("access_key".into(), creds.api_key.expose_secret().into());
    claims.insert("nonce".into(), nonce.into());
    if !params.is_empty() {
        claims.insert("query_hash".into(), hex::encode(Sha512::digest(params.as_bytes())).into());
        claims.insert("query_hash_alg".into(), "SHA512".into());
    }
    let payload = URL_SAFE_NO_PAD.encode(serde_json::Value::Object(claims).to_string());
    let signing_input = format!("{header}.{payload}");
    let sig = URL_SAFE_NO_PAD.encode(hmac_sha512(creds.secret.expose_secret(), signing_input.as_bytes()));
    format!("{signing_input}.{sig}")
}

fn sign_upbit(creds: &Credentials, req: Unsigned<'_>, ctx: &SignContext) -> Result<Signed, SignError> {
    let params = upbit_param_string(req.query, req.body)?;
    let jwt = upbit_jwt(creds, &params, &ctx.nonce);
    Ok(Signed { query: req.query.to_owned(), headers: vec![("authorization", format!("Bearer {jwt}"))] })
}

fn sign_bybit(creds: &Credentials, req: Unsigned<'_>, ctx: &SignContext) -> Result<Signed, SignError> {
    let ts = ctx.now_ms.to_string();
    let window = ctx.recv_window_ms.to_string();
    let payload: &[u8] = if req.method.eq_ignore_ascii_case("GET") { req.query.as_bytes() } else { req.body };
    std::str::from_utf8(payload).map_err(|_| SignError::BodyNotUtf8)?;
    let key = creds.api_key.expose_secret();
    let sig = hex::encode(hmac_sha256(creds.secret.expose_secret(), &[ts.as_bytes(), key.as_bytes(), window.as_bytes(), payload]));
    Ok(Signed {
        query: req.query.to_owned(),
        headers: vec![
            ("x-bapi-api-key", key.to_owned()),
            ("x-bapi-timestamp", ts),
            ("x-bapi-recv-window", window),
            ("x-bapi-sign", sig),
            ("x-bapi-sign-type", "2".into()),
        ],
    })
}

fn has_param(query: &str, name: &str) -> bool {
    query.split('&').any(|p| p.split('=').next() == Some(name))
}

fn sign_binance(creds: &Credentials, req: Unsigned<'_>, ctx: &SignContext) -> Signed {
    let mut query = req.query.trim_start_matches('&').to_owned();
    let push = |q: &mut String, kv: String| {
        if !q.is_empty() {
            q.push('&');
        }
        q.push_str(&kv);
    };
    // A parameter the caller already put in the form body is not added again:
    // Binance would read the query's copy and ignore the caller's.
    let body = String::from_utf8_lossy(req.body);
    let given = |name: &str| has_param(&query, name) || has_param(body.trim(), name);
    let (has_window, has_timestamp) = (given("recvWindow"), given("timestamp"));
    if !has_window && ctx.recv_window_ms > 0 {
        push(&mut query, format!("recvWindow={}", ctx.recv_window_ms));
    }
    if !has_timestamp {
        push(&mut query, format!("timestamp={}", ctx.now_ms));
    }
    let sig = hex::encode(hmac_sha256(creds.secret.expose_secret(), &[query.as_bytes(), req.body]));
    push(&mut query, format!("signature={sig}"));
    Signed { query, headers: vec![("x-mbx-apikey", creds.api_key.expose_secret().to_owned())] }
}

/// How a private WebSocket connection logs in. Derived from secrets: never log it.
pub struct StreamAuth {
    /// Headers for the upgrade request (Upbit's JWT).
    pub headers: Vec<(&'static str, String)>,
    /// The first message to send once connected (Bybit `auth`, OKX `login`).
    pub login: Option<String>,
    /// How long it may be used.
    pub valid_for_ms: u64,
}

impl std::fmt::Debug for StreamAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<_> = self.headers.iter().map(|(n, _)| *n).collect();
        f.debug_struct("StreamAuth").field("headers", &names).field("login", &self.login.as_ref().map(|_| "[REDACTED]")).finish()
    }
}

/// Why a private stream login cannot be minted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StreamAuthError {
    #[error("binance private streams use a listen key: create one with Call POST /api/v3/userDataStream")]
    ListenKey,
    #[error(transparent)]
    Sign(#[from] SignError),
}

/// How long a minted stream login is good for: Bybit's `expires` is set this far
/// ahead; Upbit's nonce and OKX's timestamp are checked against a similar window.
pub const STREAM_AUTH_VALID_MS: u64 = 10_000;

/// Mints the login of one private WebSocket connection:
///
/// * Upbit: the JWT (no query claims) in `Authorization: Bearer`.
/// * Bybit: `{"op":"auth","args":[api_key, expires, signature]}` with the hex
///   HMAC-SHA256 of `"GET/realtime" + expires` (ms).
/// * OKX: `{"op":"login","args":[{apiKey, passphrase, timestamp, sign}]}` with the
///   base64 HMAC-SHA256 of `timestamp + "GET" + "/users/self/verify"`, the
///   timestamp in seconds.
pub fn stream_auth(exchange: Exchange, creds: &Credentials, ctx: &SignContext) -> Result<StreamAuth, StreamAuthError> {
    let valid_for_ms = STREAM_AUTH_VALID_MS;
    match exchange {
        Exchange::Upbit => {
            let jwt = upbit_jwt(creds, "", &ctx.nonce);
            Ok(StreamAuth { headers: vec![("authorization", format!("Bearer {jwt}"))], login: None, valid_for_ms })
        }
        Exchange::Bybit => {
            let expires = ctx.now_ms + valid_for_ms;
            let sig = hex::encode(hmac_sha256(creds.secret.expose_secret(), &[b"GET/realtime", expires.to_string().as_bytes()]));
            let login = serde_json::json!({ "op": "auth", "args": [creds.api_key.expose_secret(), expires, sig] }).to_string();
            Ok(StreamAuth { headers: Vec::new(), login: Some(login), valid_for_ms })
        }
        Exchange::Okx => {
            let passphrase = creds.passphrase.as_ref().ok_or(SignError::MissingPassphrase)?;
            let ts = (ctx.now_ms / 1000).to_string();
            let sign = STANDARD.encode(hmac_sha256(creds.secret.expose_secret(), &[ts.as_bytes(), b"GET/users/self/verify"]));
            let args = serde_json::json!({
                "apiKey": creds.api_key.expose_secret(),
                "passphrase": passphrase.expose_secret(),
                "timestamp": ts,
                "sign": sign,
            });
            Ok(StreamAuth {
                headers: Vec::new(),
                login: Some(serde_json::json!({ "op": "login", "args": [args] }).to_string()),
                valid_for_ms,
            })
        }
        Exchange::Binance => Err(StreamAuthError::ListenKey),
    }
}

/// OKX's timestamp format: ISO 8601 UTC with milliseconds.
pub fn okx_timestamp(now_ms: u64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(now_ms) * 1_000_000).unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    let fmt = time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z");
    t.format(&fmt).unwrap_or_default()
}

fn sign_okx(creds: &Credentials, req: Unsigned<'_>, ctx: &SignContext) -> Result<Signed, SignError> {
    let passphrase = creds.passphrase.as_ref().ok_or(SignError::MissingPassphrase)?;
    let ts = okx_timestamp(ctx.now_ms);
    let method = req.method.to_ascii_uppercase();
    let path = if req.query.is_empty() { req.path.to_owned() } else { format!("{}?{}", req.path, req.query) };
    let sig = STANDARD.encode(hmac_sha256(creds.secret.expose_secret(), &[ts.as_bytes(), method.as_bytes(), path.as_bytes(), req.body]));
    Ok(Signed {
        query: req.query.to_owned(),
        headers: vec![
            ("ok-access-key", creds.api_key.expose_secret().to_owned()),
            ("ok-access-sign", sig),
            ("ok-access-timestamp", ts),
            ("ok-access-passphrase", passphrase.expose_secret().to_owned()),
        ],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx() -> SignContext {
        SignContext { now_ms: 1_499_827_319_559, nonce: "6f5570df-d8bc-4daf-85b4-976733feb624".into(), recv_window_ms: 5000 }
    }

    fn header<'a>(s: &'a Signed, name: &str) -> &'a str {
        s.headers.iter().find(|(n, _)| *n == name).map(|(_, v)| v.as_str()).unwrap()
    }

    /// Binance's published example (spot API docs, "SIGNED endpoint examples").
    #[test]
    fn binance_matches_the_documented_example() {
        let creds = Credentials::new(
            "vmPUZE6mv9SD5VNHk4HlWFsOr6aKE2zvsw0MuIgwCIPy6utIco14y7Ju91duEh8A",
            "NhqPtmdSJYdKjVHjA7PZj4Mge3R5YNiP1e3UZjInClVN65XAbvqqM6A7H5fATj0j",
            None,
        );
        let q = "symbol=LTCBTC&side=BUY&type=LIMIT&timeInForce=GTC&quantity=1&price=0.1&recvWindow=5000&timestamp=1499827319559";
        let s = sign(Exchange::Binance, &creds, Unsigned { method: "POST", path: "/api/v3/order", query: q, body: b"" }, &ctx()).unwrap();
        assert_eq!(s.query, format!("{q}&signature=c8db56825ae71d6d79447849e617115f4a920fa2acdcab2b053c4b2838bd6b71"));
        assert_eq!(header(&s, "x-mbx-apikey"), "vmPUZE6mv9SD5VNHk4HlWFsOr6aKE2zvsw0MuIgwCIPy6utIco14y7Ju91duEh8A");
    }

    #[test]
    fn binance_adds_timestamp_and_recv_window() {
        let creds = Credentials::new("k", "s", None);
        let s = sign(Exchange::Binance, &creds, Unsigned { method: "GET", path: "/api/v3/account", query: "", body: b"" }, &ctx()).unwrap();
        assert!(s.query.starts_with("recvWindow=5000&timestamp=1499827319559&signature="), "{}", s.query);
        let body = b"symbol=BTCUSDT&recvWindow=9000";
        let s = sign(Exchange::Binance, &creds, Unsigned { method: "POST", path: "/api/v3/order", query: "", body }, &ctx()).unwrap();
        assert!(s.query.starts_with("timestamp=1499827319559&signature="), "a recvWindow in the body is not added again: {}", s.query);
    }

    // The expected values below were computed with Python's hmac/hashlib, an
    // implementation independent of this one.
    #[test]
    fn bybit_signs_query_for_get_and_body_for_post() {
        let creds = Credentials::new("XXXXXXXXXX", "YYYYYYYYYY", None);
        let get = sign(
            Exchange::Bybit,
            &creds,
            Unsigned { method: "GET", path: "/v5/order/realtime", query: "category=spot&symbol=BTCUSDT", body: b"" },
            &ctx(),
        )
        .unwrap();
        assert_eq!(header(&get, "x-bapi-sign"), "0a036aaabdd8a710e6156bde5420e3e1c030446dfd0baf95ecbe702ded4b5040");
        let body = br#"{"category":"spot","symbol":"BTCUSDT","side":"Buy","orderType":"Limit","qty":"0.1","price":"15600"}"#;
        let post = sign(Exchange::Bybit, &creds, Unsigned { method: "POST", path: "/v5/order/create", query: "", body }, &ctx()).unwrap();
        assert_eq!(header(&post, "x-bapi-sign"), "9118d4bca8a278eacb8e5583839bd00f90f9590c92afa4f014df34639ed71174");
        assert_eq!(header(&post, "x-bapi-timestamp"), "1499827319559");
        assert_eq!(header(&post, "x-bapi-recv-window"), "5000");
    }

    #[test]
    fn okx_signs_timestamp_method_path_and_body() {
        let creds = Credentials::new("key", "secret", Some("pass".into()));
        let body = br#"{"instId":"BTC-USDT","tdMode":"cash","side":"buy","ordType":"limit","px":"2.15","sz":"2"}"#;
        let s = sign(Exchange::Okx, &creds, Unsigned { method: "post", path: "/api/v5/trade/order", query: "", body }, &ctx()).unwrap();
        assert_eq!(header(&s, "ok-access-timestamp"), "2017-07-12T02:41:59.559Z");
        assert_eq!(header(&s, "ok-access-sign"), "Qu6ViauDqg7S2sAFQvZlrILyF8VXtb9rDFAEz5bKeEE=");
        assert_eq!(header(&s, "ok-access-passphrase"), "pass");
        let no_pass = Credentials::new("key", "secret", None);
        assert_eq!(
            sign(Exchange::Okx, &no_pass, Unsigned { method: "GET", path: "/x", query: "", body: b"" }, &ctx()).unwrap_err(),
            SignError::MissingPassphrase
        );
    }

    #[test]
    fn upbit_jwt_carries_the_query_hash_and_verifies() {
        let creds = Credentials::new("access", "secret", None);
        let s = sign(
            Exchange::Upbit,
            &creds,
            Unsigned { method: "GET", path: "/v1/order", query: "uuid=abc&states%5B%5D=wait", body: b"" },
            &ctx(),
        )
        .unwrap();
        let token = header(&s, "authorization").strip_prefix("Bearer ").unwrap();
        let parts: Vec<&str> = token.split('.').collect();
        assert_eq!(parts.len(), 3);
        let claims: serde_json::Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap();
        assert_eq!(claims["access_key"], "access");
        assert_eq!(claims["nonce"], "6f5570df-d8bc-4daf-85b4-976733feb624");
        assert_eq!(claims["query_hash"], hex::encode(Sha512::digest(b"uuid=abc&states[]=wait")));
        assert_eq!(claims["query_hash_alg"], "SHA512");
        let expected = URL_SAFE_NO_PAD.encode(hmac_sha512("secret", format!("{}.{}", parts[0], parts[1]).as_bytes()));
        assert_eq!(parts[2], expected);
    }

    #[test]
    fn upbit_body_fields_become_the_param_string() {
        let body = br#"{"market":"KRW-BTC","side":"bid","volume":"0.01","price":"100","ord_type":"limit","identifiers":["a","b"]}"#;
        assert_eq!(
            upbit_param_string("", body).unwrap(),
            "market=KRW-BTC&side=bid&volume=0.01&price=100&ord_type=limit&identifiers=a&identifiers=b"
        );
        assert!(upbit_param_string("", b"[1]").unwrap_err().to_string().contains("JSON object"));
        assert!(upbit_param_string("", br#"{"a":{"b":1}}"#).is_err());
        let creds = Credentials::new("access", "secret", None);
        let s = sign(Exchange::Upbit, &creds, Unsigned { method: "GET", path: "/v1/accounts", query: "", body: b"" }, &ctx()).unwrap();
        let token = header(&s, "authorization").strip_prefix("Bearer ").unwrap();
        let claims: serde_json::Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(token.split('.').nth(1).unwrap()).unwrap()).unwrap();
        assert!(claims.get("query_hash").is_none(), "no parameters, no hash");
    }

    #[test]
    fn redaction_removes_every_credential_echo() {
        let creds = Credentials::new("my-api-key", "my-secret", Some("my-pass".into()));
        let body = br#"{"retMsg":"error sign! origin_string[1499827319559my-api-key5000]","p":"my-pass"}"#;
        let out = String::from_utf8(creds.redact(body).unwrap()).unwrap();
        assert_eq!(out, r#"{"retMsg":"error sign! origin_string[1499827319559[REDACTED]5000]","p":"[REDACTED]"}"#);
        assert!(creds.redact(b"nothing to hide").is_none());
    }

    // Expected signatures computed with Python's hmac/hashlib.
    #[test]
    fn stream_logins_are_signed_as_each_exchange_documents() {
        let creds = Credentials::new("key", "secret", Some("pass".into()));
        let bybit = stream_auth(Exchange::Bybit, &creds, &ctx()).unwrap();
        let v: serde_json::Value = serde_json::from_str(bybit.login.as_deref().unwrap()).unwrap();
        assert_eq!(v["op"], "auth");
        assert_eq!(v["args"][0], "key");
        assert_eq!(v["args"][1], 1_499_827_329_559u64);
        assert_eq!(v["args"][2], "055a26dae42bf8d172f0f498cfbe98948a9d2fc060843e07d2e8ab9063cff45c");
        let okx = stream_auth(Exchange::Okx, &creds, &ctx()).unwrap();
        let v: serde_json::Value = serde_json::from_str(okx.login.as_deref().unwrap()).unwrap();
        assert_eq!(v["args"][0]["timestamp"], "1499827319");
        assert_eq!(v["args"][0]["sign"], "k4vtacXFV+wzJmpMxo0Z2167XFXNEfLD2wPTcv+mKY4=");
        let upbit = stream_auth(Exchange::Upbit, &creds, &ctx()).unwrap();
        assert!(upbit.headers[0].1.starts_with("Bearer ey"));
        assert!(upbit.login.is_none());
        assert_eq!(stream_auth(Exchange::Binance, &creds, &ctx()).unwrap_err(), StreamAuthError::ListenKey);
        let shown = format!("{bybit:?} {upbit:?}");
        assert!(!shown.contains("key\"") && !shown.contains("Bearer") && shown.contains("REDACTED"), "{shown}");
    }

    #[test]
    fn debug_never_shows_secrets() {
        let creds = Credentials::new("my-api-key", "my-secret", Some("my-pass".into()));
        let dbg = format!("{creds:?}");
        assert!(!dbg.contains("my-api-key") && !dbg.contains("my-secret") && !dbg.contains("my-pass"), "{dbg}");
        let s = sign(Exchange::Bybit, &creds, Unsigned { method: "GET", path: "/v5/x", query: "", body: b"" }, &ctx()).unwrap();
        assert!(!format!("{s:?}").contains("my-api-key"));
    }
}
