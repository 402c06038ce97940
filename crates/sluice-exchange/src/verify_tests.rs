//! Signatures made by [`crate::sign`] (the scheme each exchange documents) verify;
//! anything altered, stale, unknown or missing is refused in the exchange's terms.

use super::*;
use crate::sign::{SignContext, Unsigned, sign};

const NOW: u64 = 1_700_000_000_000;

fn creds() -> Credentials {
    Credentials::new("client-key-1", "client-secret-1", Some("client-pass".into()))
}

/// Signs like a client library would, and returns what the dispatcher receives.
fn signed(ex: Exchange, method: &str, path: &str, query: &str, body: &[u8], at: u64) -> (String, Vec<(String, String)>) {
    let ctx = SignContext { now_ms: at, nonce: format!("nonce-{at}"), recv_window_ms: 5000 };
    let s = sign(ex, &creds(), Unsigned { method, path, query, body }, &ctx).unwrap();
    (s.query, s.headers.into_iter().map(|(n, v)| (n.to_owned(), v)).collect())
}

fn check(ex: Exchange, method: &str, path: &str, query: &str, body: &[u8], headers: &[(String, String)]) -> Result<Verified, Rejection> {
    let c = creds();
    let req = Incoming { method, path, query, body, headers, now_ms: NOW };
    verify(ex, &req, |k| (k == "client-key-1").then_some(&c))
}

#[test]
fn every_scheme_verifies_its_own_signature_and_refuses_an_altered_one() {
    let cases: [(Exchange, &str, &str, &str, &[u8]); 5] = [
        (Exchange::Upbit, "GET", "/v1/orders/open", "market=KRW-BTC", b""),
        (
            Exchange::Upbit,
            "POST",
            "/v1/orders",
            "",
            br#"{"market":"KRW-BTC","side":"bid","volume":"0.01","price":"100","ord_type":"limit"}"#,
        ),
        (Exchange::Bybit, "POST", "/v5/order/create", "", br#"{"category":"spot","symbol":"BTCUSDT"}"#),
        (Exchange::Binance, "GET", "/api/v3/openOrders", "symbol=BTCUSDT", b""),
        (Exchange::Okx, "GET", "/api/v5/trade/orders-pending", "instId=BTC-USDT", b""),
    ];
    for (ex, method, path, query, body) in cases {
        let (q, h) = signed(ex, method, path, query, body, NOW - 100);
        let v = check(ex, method, path, &q, body, &h).unwrap_or_else(|r| panic!("{ex} {path}: {r:?}"));
        assert_eq!(v.api_key, "client-key-1");
        assert_eq!(v.nonce.is_some(), ex == Exchange::Upbit);
        // The same credential over different parameters does not verify.
        let (alt_q, alt_b): (String, Vec<u8>) = if body.is_empty() {
            (q.replacen("BTC", "ETH", 1), Vec::new())
        } else {
            (q.clone(), String::from_utf8_lossy(body).replacen("BTC", "ETH", 1).into_bytes())
        };
        let r = check(ex, method, path, &alt_q, &alt_b, &h).unwrap_err();
        assert_eq!(r.kind, RejectKind::Signature, "{ex} {path}: {r:?}");
    }
}

#[test]
fn refusals_speak_each_exchanges_own_error() {
    // Unknown key.
    let other = Credentials::new("stranger", "s", Some("p".into()));
    let ctx = SignContext { now_ms: NOW, nonce: "n".into(), recv_window_ms: 5000 };
    let unsigned = Unsigned { method: "GET", path: "/api/v3/account", query: "", body: b"" };
    for (ex, code, status) in [
        (Exchange::Upbit, "invalid_access_key", 401),
        (Exchange::Bybit, "10003", 200),
        (Exchange::Binance, "-2015", 401),
        (Exchange::Okx, "50111", 401),
    ] {
        let s = sign(ex, &other, unsigned, &ctx).unwrap();
        let h: Vec<(String, String)> = s.headers.into_iter().map(|(n, v)| (n.to_owned(), v)).collect();
        let r = check(ex, "GET", "/api/v3/account", &s.query, b"", &h).unwrap_err();
        assert_eq!((r.kind, r.code, r.status), (RejectKind::UnknownKey, code, status), "{ex}");
        let body: Value = serde_json::from_str(&r.body(ex, NOW)).unwrap();
        match ex {
            Exchange::Upbit => assert_eq!(body["error"]["name"], "invalid_access_key"),
            Exchange::Bybit => assert_eq!(body["retCode"], 10003),
            Exchange::Binance => assert_eq!(body["code"], -2015),
            Exchange::Okx => assert_eq!(body["code"], "50111"),
        }
    }
    // Nothing at all.
    for ex in Exchange::ALL {
        let r = check(ex, "GET", "/x", "", b"", &[]).unwrap_err();
        assert_eq!(r.kind, RejectKind::Missing, "{ex}");
    }
    // Stale timestamps (Upbit has none; its nonce log is the caller's).
    for ex in [Exchange::Bybit, Exchange::Binance, Exchange::Okx] {
        let (q, h) = signed(ex, "GET", "/p", "a=1", b"", NOW - 60_000);
        assert_eq!(check(ex, "GET", "/p", &q, b"", &h).unwrap_err().kind, RejectKind::Stale, "{ex}");
    }
    // OKX: the passphrase must match.
    let (q, mut h) = signed(Exchange::Okx, "GET", "/p", "", b"", NOW);
    h.iter_mut().filter(|(n, _)| n == "ok-access-passphrase").for_each(|(_, v)| *v = "guess".into());
    assert_eq!(check(Exchange::Okx, "GET", "/p", &q, b"", &h).unwrap_err().code, "50105");
    // A permission refusal carries sluice's reason after the exchange's words.
    let p = Rejection::permission(Exchange::Bybit, "client 'md' may not use priority class order");
    assert_eq!((p.code, p.status), ("10005", 200));
    assert!(p.message.ends_with("(sluice: client 'md' may not use priority class order)"), "{}", p.message);
}

#[test]
fn binance_forwards_without_its_signature_and_timestamp() {
    let (q, h) = signed(Exchange::Binance, "POST", "/api/v3/order", "symbol=BTCUSDT&side=BUY", b"", NOW);
    assert!(check(Exchange::Binance, "POST", "/api/v3/order", &q, b"", &h).unwrap().recv_window_ms == Some(5000));
    let (fq, fb) = strip(Exchange::Binance, &q, b"");
    assert_eq!(fq, "symbol=BTCUSDT&side=BUY&recvWindow=5000");
    assert!(fb.is_empty());
    // python-binance puts everything in the form body, signature last.
    let body = format!("symbol=BTCUSDT&timestamp={NOW}&recvWindow=5000");
    let sig = hex::encode(hmac256("client-secret-1", &[body.as_bytes()]));
    let full = format!("{body}&signature={sig}");
    let hdr = vec![("x-mbx-apikey".to_owned(), "client-key-1".to_owned())];
    assert!(check(Exchange::Binance, "POST", "/api/v3/order", "", full.as_bytes(), &hdr).is_ok());
    assert_eq!(strip(Exchange::Binance, "", full.as_bytes()).1, b"symbol=BTCUSDT&recvWindow=5000");
    // A bare key is no signature.
    let bare = Incoming { method: "GET", path: "/api/v3/ticker/price", query: "", body: b"", headers: &hdr, now_ms: NOW };
    assert!(!is_signed(Exchange::Binance, &bare));
    assert_eq!(strip(Exchange::Okx, "a=1", b"x"), ("a=1".to_owned(), b"x".to_vec()));
}
