//! Probes of each exchange through the dispatcher: its ticker, its order book
//! and an account call per configured account, every `interval` (30 s by
//! default) at the lowest priority (backfill), so a probe never takes budget
//! from trading. A failed probe, or one slower than `slow_after` (2 s), runs
//! again after `retry_interval` (2 s), so three failures in a row are seen in
//! seconds and a healed exchange within one retry. The latency is the exchange's own round trip as the dispatcher
//! measured it (`CallResponse.upstream`), not the queueing before it.
//!
//! What counts as failed: no answer (a gRPC error: the dispatcher could not
//! reach the exchange), an HTTP status other than 2xx, or a 2xx whose body
//! says it failed (Bybit `retCode`, OKX `code`).

use std::time::Duration;

use sluice_proto::dispatcher::v1::dispatcher_client::DispatcherClient;
use sluice_proto::dispatcher::v1::{CallRequest, Priority};
use sluice_service::credentials::Bearer;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

use crate::config::ProbeTarget;

pub type Dispatcher = DispatcherClient<InterceptedService<Channel, Bearer>>;

/// One probe: what it calls.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Probe {
    pub exchange: String,
    /// "ticker", "orderbook" or "account".
    pub probe: String,
    pub account: String,
    pub path: String,
    pub query: String,
}

/// How one probe ended.
#[derive(Clone, Debug, PartialEq)]
pub struct ProbeResult {
    pub probe: Probe,
    pub ok: bool,
    /// The exchange's round trip, when it answered.
    pub latency_s: Option<f64>,
    pub detail: String,
}

fn split(path: &str) -> (String, String) {
    match path.split_once('?') {
        Some((p, q)) => (p.to_owned(), q.to_owned()),
        None => (path.to_owned(), String::new()),
    }
}

/// Every probe of the configured targets.
pub fn probes(targets: &[ProbeTarget]) -> Vec<Probe> {
    let mut out = Vec::new();
    for t in targets {
        for (name, call) in [("ticker", &t.ticker), ("orderbook", &t.orderbook)] {
            let (path, query) = split(call);
            out.push(Probe { exchange: t.exchange.clone(), probe: name.into(), account: String::new(), path, query });
        }
        if let Some(call) = &t.account_call {
            for a in &t.accounts {
                let (path, query) = split(call);
                out.push(Probe { exchange: t.exchange.clone(), probe: "account".into(), account: a.clone(), path, query });
            }
        }
    }
    out
}

/// Whether a 2xx body says the call failed, and why.
pub fn body_failure(exchange: &str, body: &[u8]) -> Option<String> {
    let v: serde_json::Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(_) => return Some("the answer is not JSON".into()),
    };
    match exchange {
        "bybit" => match v.get("retCode").and_then(|c| c.as_i64()) {
            Some(0) => None,
            Some(c) => Some(format!("retCode {c}: {}", v.get("retMsg").and_then(|m| m.as_str()).unwrap_or(""))),
            None => Some("no retCode in the answer".into()),
        },
        "okx" => match v.get("code").and_then(|c| c.as_str()) {
            Some("0") => None,
            Some(c) => Some(format!("code {c}: {}", v.get("msg").and_then(|m| m.as_str()).unwrap_or(""))),
            None => Some("no code in the answer".into()),
        },
        _ => None,
    }
}

/// Runs one probe once.
pub async fn run_once(client: &mut Dispatcher, p: &Probe, timeout: Duration) -> ProbeResult {
    let req = CallRequest {
        exchange: p.exchange.clone(),
        account: p.account.clone(),
        method: "GET".into(),
        path: p.path.clone(),
        query: p.query.clone(),
        priority: Priority::Backfill as i32,
        timeout: prost_types::Duration::try_from(timeout).ok(),
        ..Default::default()
    };
    let done = |ok, latency_s, detail| ProbeResult { probe: p.clone(), ok, latency_s, detail };
    match client.call(req).await {
        Err(s) => done(false, None, format!("{:?}: {}", s.code(), s.message())),
        Ok(r) => {
            let r = r.into_inner();
            let latency = r.upstream.and_then(|d| Duration::try_from(d).ok()).map(|d| d.as_secs_f64());
            if !(200..300).contains(&r.status) {
                let snippet: String = String::from_utf8_lossy(&r.body).chars().take(120).collect();
                return done(false, latency, format!("HTTP {}: {snippet}", r.status));
            }
            match body_failure(&p.exchange, &r.body) {
                Some(why) => done(false, latency, why),
                None => done(true, latency, format!("HTTP {}", r.status)),
            }
        }
    }
}

/// Runs every probe on its own schedule until `shutdown`; results go to `out`
/// (its sender waits when the engine is busy: no result is dropped).
/// How often each probe runs.
#[derive(Clone, Copy, Debug)]
pub struct Timing {
    pub every: Duration,
    pub retry: Duration,
    pub timeout: Duration,
    pub slow_after: Duration,
}

impl Timing {
    /// The wait before the next run of a probe that ended as `r`.
    pub fn next(&self, r: &ProbeResult) -> Duration {
        let slow = r.latency_s.is_some_and(|l| l > self.slow_after.as_secs_f64());
        if r.ok && !slow { self.every } else { self.retry }
    }
}

pub fn spawn(
    client: Dispatcher,
    probes: Vec<Probe>,
    timing: Timing,
    out: mpsc::Sender<ProbeResult>,
    shutdown: CancellationToken,
) -> Vec<tokio::task::JoinHandle<()>> {
    let n = probes.len().max(1) as u32;
    probes
        .into_iter()
        .enumerate()
        .map(|(i, p)| {
            let mut client = client.clone();
            let out = out.clone();
            let shutdown = shutdown.clone();
            // Spread the first probes over a second so they do not all queue at once.
            let first = Duration::from_millis(1_000) * i as u32 / n;
            tokio::spawn(async move {
                let mut wait = first;
                loop {
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => {}
                        _ = shutdown.cancelled() => return,
                    }
                    let r = tokio::select! {
                        r = run_once(&mut client, &p, timing.timeout) => r,
                        _ = shutdown.cancelled() => return,
                    };
                    wait = timing.next(&r);
                    if out.send(r).await.is_err() {
                        return;
                    }
                }
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_that_say_they_failed() {
        assert_eq!(body_failure("bybit", br#"{"retCode":0,"result":{}}"#), None);
        assert_eq!(body_failure("bybit", br#"{"retCode":10002,"retMsg":"timestamp"}"#).unwrap(), "retCode 10002: timestamp");
        assert_eq!(body_failure("okx", br#"{"code":"0","data":[]}"#), None);
        assert!(body_failure("okx", br#"{"code":"50001","msg":"busy"}"#).unwrap().contains("50001"));
        assert_eq!(body_failure("upbit", br#"[{"market":"KRW-BTC"}]"#), None);
        assert!(body_failure("upbit", b"<html>").is_some());
    }

    #[test]
    fn failed_and_slow_probes_come_again_soon() {
        let s = Duration::from_secs;
        let t = Timing { every: s(30), retry: s(2), timeout: s(5), slow_after: s(2) };
        let p = Probe {
            exchange: "upbit".into(),
            probe: "ticker".into(),
            account: String::new(),
            path: "/v1/ticker".into(),
            query: String::new(),
        };
        let r = |ok, latency_s| ProbeResult { probe: p.clone(), ok, latency_s, detail: String::new() };
        assert_eq!(t.next(&r(true, Some(0.01))), s(30));
        assert_eq!(t.next(&r(true, Some(3.0))), s(2));
        assert_eq!(t.next(&r(false, None)), s(2));
    }

    #[test]
    fn probes_per_target() {
        let t = ProbeTarget {
            exchange: "upbit".into(),
            ticker: "/v1/ticker?markets=KRW-BTC".into(),
            orderbook: "/v1/orderbook?markets=KRW-BTC".into(),
            accounts: vec!["demo".into()],
            account_call: Some("/v1/accounts".into()),
        };
        let p = probes(&[t]);
        assert_eq!(p.len(), 3);
        assert_eq!((p[0].path.as_str(), p[0].query.as_str()), ("/v1/ticker", "markets=KRW-BTC"));
        assert_eq!((p[2].probe.as_str(), p[2].account.as_str(), p[2].query.as_str()), ("account", "demo", ""));
    }
}
