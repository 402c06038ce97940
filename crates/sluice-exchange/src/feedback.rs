//! What an exchange's response says about the budget: usage headers, rate-limit
//! answers, bans. The dispatcher applies these to its buckets, and only ever to
//! tighten them (another program may share the key or the IP).
//!
//! | exchange | usage | throttled | banned |
//! |---|---|---|---|
//! | Upbit | `Remaining-Req: group=…; min=…; sec=N` | 429 | 418 |
//! | Bybit | `X-Bapi-Limit`, `X-Bapi-Limit-Status`, `X-Bapi-Limit-Reset-Timestamp` | `retCode` 10006 (account), 10018 (IP) | HTTP 403 |
//! | Binance | `X-MBX-USED-WEIGHT-1M`, `X-MBX-ORDER-COUNT-10S/1D` | 429 (`-1015`: orders) | 418 |
//! | OKX | none | 429, `code` 50011 (50061 sub-account) | none |

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sluice_domain::Exchange;

use crate::policy::Scope;

/// One fact learned from a response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Observation {
    /// The exchange's own count for a window this request fell in.
    Usage {
        /// Which kind of bucket it describes; `None`: the request's own.
        scope: Option<Scope>,
        period: Duration,
        used: Option<u64>,
        remaining: Option<u64>,
        limit: Option<u64>,
        /// Upbit names the group it counted the request in.
        group: Option<String>,
    },
    /// Rate limited (429 or equivalent).
    Throttled { scope: Option<Scope>, retry_after: Option<Duration> },
    /// Banned: nothing may go to this scope until the ban ends.
    Banned { scope: Option<Scope>, duration: Option<Duration> },
}

fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    headers.iter().find(|(n, _)| n.eq_ignore_ascii_case(name)).map(|(_, v)| v.trim())
}

/// `Retry-After` as seconds or an HTTP date, relative to `now_ms`.
pub fn retry_after(headers: &[(String, String)], now_ms: u64) -> Option<Duration> {
    let v = header(headers, "retry-after")?;
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let at = httpdate::parse_http_date(v).ok()?;
    let at_ms = at.duration_since(UNIX_EPOCH).ok()?.as_millis() as u64;
    Some(Duration::from_millis(at_ms.saturating_sub(now_ms)))
}

/// Milliseconds since the Unix epoch, for callers without a clock of their own.
pub fn unix_now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_millis() as u64)
}

/// Parses Upbit's `Remaining-Req: group=default; min=1800; sec=29`.
pub fn parse_remaining_req(v: &str) -> Option<(String, u64)> {
    let mut group = None;
    let mut sec = None;
    for part in v.split(';') {
        let (k, val) = part.trim().split_once('=')?;
        match k.trim() {
            "group" => group = Some(val.trim().to_owned()),
            "sec" => sec = val.trim().parse().ok(),
            _ => {}
        }
    }
    Some((group?, sec?))
}

/// Parses Binance's interval suffix (`1M`, `10S`, `1D`, `1H`).
fn binance_interval(suffix: &str) -> Option<Duration> {
    let (num, unit) = suffix.split_at(suffix.len().checked_sub(1)?);
    let n: u64 = num.parse().ok()?;
    let unit_secs = match unit.to_ascii_uppercase().as_str() {
        "S" => 1,
        "M" => 60,
        "H" => 3600,
        "D" => 86_400,
        _ => return None,
    };
    Some(Duration::from_secs(n * unit_secs))
}

fn json_field(body: &[u8], name: &str) -> Option<serde_json::Value> {
    let v: serde_json::Value = serde_json::from_slice(body).ok()?;
    v.get(name).cloned()
}

/// Everything `exchange`'s response says about the budget.
pub fn observe(exchange: Exchange, status: u16, headers: &[(String, String)], body: &[u8], now_ms: u64) -> Vec<Observation> {
    let mut out = Vec::new();
    let ra = retry_after(headers, now_ms);
    match exchange {
        Exchange::Upbit => {
            if let Some((group, sec)) = header(headers, "remaining-req").and_then(parse_remaining_req) {
                out.push(Observation::Usage {
                    scope: None,
                    period: Duration::from_secs(1),
                    used: None,
                    remaining: Some(sec),
                    limit: None,
                    group: Some(group),
                });
            }
            match status {
                429 => out.push(Observation::Throttled { scope: None, retry_after: ra }),
                418 => out.push(Observation::Banned { scope: None, duration: ra }),
                _ => {}
            }
        }
        Exchange::Bybit => {
            let limit = header(headers, "x-bapi-limit").and_then(|v| v.parse().ok());
            let remaining = header(headers, "x-bapi-limit-status").and_then(|v| v.parse().ok());
            let reset_ms: Option<u64> = header(headers, "x-bapi-limit-reset-timestamp").and_then(|v| v.parse().ok());
            if remaining.is_some() {
                out.push(Observation::Usage {
                    scope: Some(Scope::Account),
                    period: Duration::from_secs(1),
                    used: None,
                    remaining,
                    limit,
                    group: None,
                });
            }
            let until_reset = reset_ms.map(|r| Duration::from_millis(r.saturating_sub(now_ms)));
            if status == 403 {
                out.push(Observation::Banned { scope: Some(Scope::Ip), duration: ra });
            } else if status == 429 {
                out.push(Observation::Throttled { scope: None, retry_after: ra.or(until_reset) });
            } else {
                match json_field(body, "retCode").and_then(|v| v.as_i64()) {
                    Some(10006) => out.push(Observation::Throttled { scope: Some(Scope::Account), retry_after: ra.or(until_reset) }),
                    Some(10018) => out.push(Observation::Throttled { scope: Some(Scope::Ip), retry_after: ra }),
                    _ => {}
                }
            }
        }
        Exchange::Binance => {
            for (name, value) in headers {
                let lower = name.to_ascii_lowercase();
                let (scope, suffix) = if let Some(s) = lower.strip_prefix("x-mbx-used-weight-") {
                    (Scope::Ip, s)
                } else if let Some(s) = lower.strip_prefix("x-mbx-order-count-") {
                    (Scope::Account, s)
                } else {
                    continue;
                };
                if let (Some(period), Ok(used)) = (binance_interval(suffix), value.trim().parse()) {
                    out.push(Observation::Usage {
                        scope: Some(scope),
                        period,
                        used: Some(used),
                        remaining: None,
                        limit: None,
                        group: None,
                    });
                }
            }
            let code = json_field(body, "code").and_then(|v| v.as_i64());
            match status {
                429 => {
                    let scope = if code == Some(-1015) { Scope::Account } else { Scope::Ip };
                    out.push(Observation::Throttled { scope: Some(scope), retry_after: ra });
                }
                418 => {
                    let from_msg = json_field(body, "msg")
                        .and_then(|m| banned_until(m.as_str()?))
                        .map(|until| Duration::from_millis(until.saturating_sub(now_ms)));
                    out.push(Observation::Banned { scope: Some(Scope::Ip), duration: ra.or(from_msg) });
                }
                _ => {}
            }
        }
        Exchange::Okx => {
            let code = json_field(body, "code").and_then(|v| v.as_str().map(str::to_owned));
            match (status, code.as_deref()) {
                (_, Some("50061")) => out.push(Observation::Throttled { scope: Some(Scope::Account), retry_after: ra }),
                (429, _) | (_, Some("50011")) => out.push(Observation::Throttled { scope: None, retry_after: ra }),
                _ => {}
            }
        }
    }
    out
}

/// Binance's "IP banned until 1659146400000." message.
fn banned_until(msg: &str) -> Option<u64> {
    let rest = msg.split("until").nth(1)?;
    let digits: String = rest.trim_start().chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn h(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(a, b)| (a.to_string(), b.to_string())).collect()
    }

    #[test]
    fn upbit_remaining_req_and_errors() {
        assert_eq!(parse_remaining_req("group=default; min=1800; sec=29"), Some(("default".into(), 29)));
        assert_eq!(parse_remaining_req("garbage"), None);
        let obs = observe(Exchange::Upbit, 429, &h(&[("Remaining-Req", "group=ticker; min=600; sec=0")]), b"", 0);
        assert_eq!(
            obs,
            vec![
                Observation::Usage {
                    scope: None,
                    period: Duration::from_secs(1),
                    used: None,
                    remaining: Some(0),
                    limit: None,
                    group: Some("ticker".into())
                },
                Observation::Throttled { scope: None, retry_after: None },
            ]
        );
        let obs = observe(Exchange::Upbit, 418, &h(&[("Retry-After", "30")]), b"", 0);
        assert_eq!(obs, vec![Observation::Banned { scope: None, duration: Some(Duration::from_secs(30)) }]);
    }

    #[test]
    fn bybit_headers_and_ret_codes() {
        let headers = h(&[("X-Bapi-Limit", "20"), ("X-Bapi-Limit-Status", "3"), ("X-Bapi-Limit-Reset-Timestamp", "1000500")]);
        let obs = observe(Exchange::Bybit, 200, &headers, br#"{"retCode":10006,"retMsg":"Too many visits!"}"#, 1_000_000);
        assert_eq!(
            obs[0],
            Observation::Usage {
                scope: Some(Scope::Account),
                period: Duration::from_secs(1),
                used: None,
                remaining: Some(3),
                limit: Some(20),
                group: None
            }
        );
        assert_eq!(obs[1], Observation::Throttled { scope: Some(Scope::Account), retry_after: Some(Duration::from_millis(500)) });
        let obs = observe(Exchange::Bybit, 200, &[], br#"{"retCode":10018}"#, 0);
        assert_eq!(obs, vec![Observation::Throttled { scope: Some(Scope::Ip), retry_after: None }]);
        let obs = observe(Exchange::Bybit, 403, &[], b"access too frequent", 0);
        assert_eq!(obs, vec![Observation::Banned { scope: Some(Scope::Ip), duration: None }]);
        assert!(observe(Exchange::Bybit, 200, &[], br#"{"retCode":0}"#, 0).is_empty());
    }

    #[test]
    fn binance_weights_orders_and_bans() {
        let headers = h(&[("X-MBX-USED-WEIGHT-1M", "1200"), ("x-mbx-order-count-10s", "7"), ("X-MBX-ORDER-COUNT-1D", "70")]);
        let obs = observe(Exchange::Binance, 200, &headers, b"{}", 0);
        assert_eq!(obs.len(), 3);
        assert!(obs.contains(&Observation::Usage {
            scope: Some(Scope::Ip),
            period: Duration::from_secs(60),
            used: Some(1200),
            remaining: None,
            limit: None,
            group: None
        }));
        assert!(obs.contains(&Observation::Usage {
            scope: Some(Scope::Account),
            period: Duration::from_secs(86_400),
            used: Some(70),
            remaining: None,
            limit: None,
            group: None
        }));
        let obs =
            observe(Exchange::Binance, 429, &h(&[("Retry-After", "7")]), br#"{"code":-1003,"msg":"Too much request weight used"}"#, 0);
        assert_eq!(obs, vec![Observation::Throttled { scope: Some(Scope::Ip), retry_after: Some(Duration::from_secs(7)) }]);
        let obs = observe(Exchange::Binance, 429, &[], br#"{"code":-1015,"msg":"Too many new orders"}"#, 0);
        assert_eq!(obs, vec![Observation::Throttled { scope: Some(Scope::Account), retry_after: None }]);
        let body =
            br#"{"code":-1003,"msg":"Way too much request weight used; IP banned until 1659146400000. Please use WebSocket Streams."}"#;
        let obs = observe(Exchange::Binance, 418, &[], body, 1_659_146_280_000);
        assert_eq!(obs, vec![Observation::Banned { scope: Some(Scope::Ip), duration: Some(Duration::from_secs(120)) }]);
    }

    #[test]
    fn okx_codes() {
        let obs = observe(Exchange::Okx, 429, &[], br#"{"code":"50011","msg":"Too Many Requests"}"#, 0);
        assert_eq!(obs, vec![Observation::Throttled { scope: None, retry_after: None }]);
        let obs = observe(Exchange::Okx, 200, &[], br#"{"code":"50061","msg":"sub-account"}"#, 0);
        assert_eq!(obs, vec![Observation::Throttled { scope: Some(Scope::Account), retry_after: None }]);
        assert!(observe(Exchange::Okx, 200, &[], br#"{"code":"0"}"#, 0).is_empty());
    }

    #[test]
    fn retry_after_accepts_http_dates() {
        let headers = h(&[("Retry-After", "Thu, 01 Jan 1970 00:01:40 GMT")]);
        assert_eq!(retry_after(&headers, 40_000), Some(Duration::from_secs(60)));
        assert_eq!(retry_after(&h(&[("Retry-After", "soon")]), 0), None);
    }
}
