//! `sluice bench alert`: a fault injected into the simulator, and the time from
//! the fault to the first notification at a mock webhook, then from the heal
//! to the resolved one. In one process: a nats-server on a free port, the
//! simulator, a dispatcher (its heartbeat on), steady market-data traffic
//! through it (a bot's polling, `sluice load`), and one or two alerting
//! services with the shipped rules, routes and probe interval, notifying the
//! mock. Last line: `detect_ms=<x> notifications=<n>` (n = firing
//! notifications of the fault's group; goal 1).

use std::io::Write;
use std::time::{Duration, Instant};

use clap::{Args, ValueEnum};
use sluice_domain::Exchange;
use sluice_sim::{Fault, FaultKind, SimConfig};

use crate::mock_receiver::MockReceiver;
use crate::stack::stack;

/// Which fault.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum FaultArg {
    /// Every Upbit request answered HTTP 500.
    ServerError,
    /// Every Upbit request answered 3 s late.
    Slow,
}

#[derive(Args, Debug)]
pub struct AlertArgs {
    #[arg(long, value_enum, default_value = "server-error")]
    pub fault: FaultArg,
    /// Seconds of healthy running before the fault.
    #[arg(long, default_value_t = 10)]
    pub warmup_s: u64,
    /// How long the fault lasts.
    #[arg(long, default_value_t = 20)]
    pub fault_s: u64,
    /// Alerting replicas side by side (one notification log).
    #[arg(long, default_value_t = 2)]
    pub replicas: u32,
    /// The bot's calls per second through the dispatcher (all exchanges).
    #[arg(long, default_value_t = 20)]
    pub rps: u32,
}

/// The alert that says what the fault is.
fn expected(f: FaultArg) -> &'static str {
    match f {
        FaultArg::ServerError => "ExchangeErrorRate",
        FaultArg::Slow => "ExchangeUpstreamSlow",
    }
}

pub async fn run(a: AlertArgs, out: &mut impl Write) -> anyhow::Result<()> {
    let s = stack(SimConfig::shipped()).await?;
    let mock = MockReceiver::start(s.stop.clone()).await?;
    let mut replicas = Vec::new();
    for i in 0..a.replicas.max(1) {
        let env = [("SLUICE_ALERT_WEBHOOK_URL", mock.url("webhook")), ("SLUICE_ALERTING_SERVICE", format!("alerting-{i}"))];
        let cfg = s.alerting_config(None, &env)?;
        replicas.push(sluice_alerting::start(cfg, s.stop.clone()).await?);
    }
    let load = crate::load::LoadArgs { dispatcher: s.dispatcher_url(), token_file: None, rps: a.rps, seconds: 0 };
    let stop_load = s.stop.clone();
    tokio::spawn(async move {
        let mut sink = std::io::sink();
        let _ = crate::load::run(load, stop_load, &mut sink).await;
    });
    writeln!(
        out,
        "{} alerting replica(s), shipped rules and routes, {} calls/s of market data through the dispatcher; warming up {} s",
        replicas.len(),
        a.rps,
        a.warmup_s
    )?;
    tokio::time::sleep(Duration::from_secs(a.warmup_s)).await;
    let before = mock.received().len();
    if before > 0 {
        writeln!(out, "note: {before} notifications before the fault")?;
    }
    let kind = match a.fault {
        FaultArg::ServerError => FaultKind::ServerError,
        FaultArg::Slow => FaultKind::SlowAnswer { ms: 3_000 },
    };
    s.sim.inject(Exchange::Upbit, Fault { kind, count: u32::MAX, group: None });
    let fault_at = Instant::now();
    writeln!(out, "t=0 fault: every Upbit request {:?}", a.fault)?;
    let want = expected(a.fault);
    let group_of = |r: &crate::mock_receiver::Received| {
        (r.body["groupLabels"]["alertname"].as_str() == Some(want) && r.body["groupLabels"]["exchange"].as_str() == Some("upbit"))
            .then(|| r.body["status"].as_str().unwrap_or("").to_owned())
    };
    let mut detect = None;
    while fault_at.elapsed() < Duration::from_secs(a.fault_s) {
        if detect.is_none() {
            detect = mock
                .delivered("webhook")
                .iter()
                .skip(before)
                .find(|r| group_of(r).as_deref() == Some("firing"))
                .map(|r| r.at.duration_since(fault_at));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    s.sim.clear_faults(Exchange::Upbit);
    let healed_at = Instant::now();
    writeln!(out, "t={:.1}s healed", fault_at.elapsed().as_secs_f64())?;
    let mut resolve = None;
    let end = healed_at + Duration::from_secs(60);
    while resolve.is_none() && Instant::now() < end {
        resolve = mock
            .delivered("webhook")
            .iter()
            .find(|r| r.at > healed_at && group_of(r).as_deref() == Some("resolved"))
            .map(|r| r.at.duration_since(healed_at));
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Long enough for a second replica or a repeat to show, were there one.
    tokio::time::sleep(Duration::from_secs(3)).await;
    for r in mock.delivered("webhook").iter().skip(before) {
        let alerts = r.body["alerts"].as_array().map(Vec::len).unwrap_or(0);
        writeln!(
            out,
            "  t={:>6.2}s {:<8} {} {} ({alerts} alert{})",
            r.at.duration_since(fault_at).as_secs_f64(),
            r.body["status"].as_str().unwrap_or(""),
            r.body["groupLabels"]["alertname"].as_str().unwrap_or(""),
            r.body["groupLabels"]["exchange"].as_str().unwrap_or(""),
            if alerts == 1 { "" } else { "s" }
        )?;
    }
    let firing = mock.delivered("webhook").iter().filter(|r| group_of(r).as_deref() == Some("firing")).count();
    let resolved = mock.delivered("webhook").iter().filter(|r| group_of(r).as_deref() == Some("resolved")).count();
    let ms = |d: Option<Duration>| d.map(|d| format!("{:.0}", d.as_secs_f64() * 1000.0)).unwrap_or_else(|| "none".into());
    writeln!(out, "{want} upbit: {firing} firing and {resolved} resolved notification(s); resolve_ms={} after the heal", ms(resolve))?;
    writeln!(out, "detect_ms={} notifications={firing}", ms(detect))?;
    s.stop.cancel();
    Ok(())
}
