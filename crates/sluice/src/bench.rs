//! `sluice bench dispatch`: K clients, each with its own gRPC connection, call one
//! market-data endpoint through the dispatcher as fast as it lets them, for S
//! seconds, against the simulator (strict counting, J ms of arrival jitter).
//!
//! * ratio = requests the exchange accepted during the run / what its limit allows
//!   in that time (limit x S / window, in requests of the endpoint's weight).
//! * http_429 = rate-limit answers the exchange gave (all exchanges).
//! * overhead = the dispatcher's own added latency when the budget does not bind:
//!   a second phase with the limit raised a thousandfold on both sides, one client
//!   calling in a loop; per call, client round trip minus the exchange round trip
//!   the dispatcher measured.
//!
//! `--limiter gcra` runs the same load without the dispatcher: the K clients share
//! one `governor` GCRA limiter (burst = limit) and call the simulator directly, the
//! usual in-process answer to rate limits, for comparison.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use sluice_dispatcher::{DispatcherConfig, Keyring};
use sluice_domain::Exchange;
use sluice_proto::dispatcher::v1::CallRequest;
use sluice_proto::dispatcher::v1::dispatcher_client::DispatcherClient;
use sluice_sim::{SimConfig, SimHandle};
use tokio_util::sync::CancellationToken;

/// Which limiter stands between the clients and the exchange.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Limiter {
    /// Through the dispatcher.
    Sluice,
    /// A shared governor GCRA limiter with burst = limit, straight to the exchange.
    Gcra,
}

/// Options of `sluice bench dispatch`.
#[derive(Debug, Clone, clap::Args)]
pub struct DispatchArgs {
    #[arg(long, default_value = "upbit")]
    pub exchange: Exchange,
    #[arg(long, default_value_t = 3)]
    pub clients: usize,
    /// Calls each client keeps outstanding.
    #[arg(long, default_value_t = 4)]
    pub inflight: usize,
    #[arg(long, default_value_t = 60)]
    pub seconds: u64,
    /// Arrival jitter the simulated network adds, uniform in [0, J] ms.
    #[arg(long, default_value_t = 10)]
    pub jitter_ms: u64,
    /// How the simulated exchange counts: sliding, fixed or token_bucket.
    #[arg(long, default_value = "sliding")]
    pub counting: String,
    #[arg(long, value_enum, default_value = "sluice")]
    pub limiter: Limiter,
    /// Calls in the overhead phase (0 skips it).
    #[arg(long, default_value_t = 2000)]
    pub overhead_calls: usize,
    /// Above 1: that many dispatcher processes on one nats-server (Upbit only; see
    /// `replicas`). The last line is then `ratio=… http_429=… max_stall_ms=…`.
    #[arg(long, default_value_t = 1)]
    pub replicas: usize,
    /// With replicas: kill -9 the owner of the budgets this many seconds in.
    #[arg(long)]
    pub kill_owner_at: Option<u64>,
    /// With replicas: kill -9 a replica that does not own the budgets this many seconds in.
    #[arg(long, conflicts_with = "kill_owner_at")]
    pub kill_other_at: Option<u64>,
    /// With replicas: stop NATS this many seconds in...
    #[arg(long)]
    pub nats_stop_at: Option<u64>,
    /// ...and start it again this many seconds later.
    #[arg(long, default_value_t = 6)]
    pub nats_down_for: u64,
    /// With replicas: clients placing keyed orders, retried on another replica.
    #[arg(long, default_value_t = 3)]
    pub order_clients: usize,
}

impl DispatchArgs {
    /// The replicas scenario these arguments describe.
    pub fn replica_run(&self) -> crate::replicas::ReplicaRun {
        crate::replicas::ReplicaRun {
            replicas: self.replicas,
            clients: self.clients,
            inflight: self.inflight,
            seconds: self.seconds,
            jitter_ms: self.jitter_ms,
            kill_at: self.kill_owner_at.or(self.kill_other_at),
            kill_owner: self.kill_other_at.is_none(),
            nats_stop_at: self.nats_stop_at,
            nats_down_for: self.nats_down_for,
            order_clients: self.order_clients,
        }
    }
}

/// The endpoint each exchange is benchmarked on, its group, and its weight.
pub(crate) fn target(ex: Exchange) -> (&'static str, &'static str, &'static str, u64) {
    match ex {
        Exchange::Upbit => ("/v1/ticker", "markets=KRW-BTC", "ticker", 1),
        Exchange::Bybit => ("/v5/market/tickers", "category=spot&symbol=BTCUSDT", "ip", 1),
        Exchange::Binance => ("/api/v3/depth", "symbol=BTCUSDT&limit=100", "weight", 5),
        Exchange::Okx => ("/api/v5/market/ticker", "instId=BTC-USDT", "market-ticker", 1),
    }
}

/// A call that waits up to two windows (plus 10 s) for budget, so that with a
/// long window (Binance: a minute) clients queue rather than spin on refusals.
fn request(exchange: Exchange, path: &str, query: &str, period_ms: u64) -> CallRequest {
    let wait = Duration::from_millis((2 * period_ms + 10_000).min(290_000));
    CallRequest {
        exchange: exchange.to_string(),
        method: "GET".into(),
        path: path.into(),
        query: query.into(),
        timeout: Some(sluice_proto::prost_types::Duration { seconds: wait.as_secs() as i64, nanos: wait.subsec_nanos() as i32 }),
        ..CallRequest::default()
    }
}

/// What a run measured.
#[derive(Debug, Clone)]
pub struct Report {
    pub accepted: u64,
    pub allowed: f64,
    pub ratio: f64,
    pub http_429: u64,
    pub max_in_window: u64,
    pub limit: u64,
    pub grpc_errors: u64,
    pub overhead_p50_ms: Option<f64>,
    pub overhead_p99_ms: Option<f64>,
}

impl Report {
    /// The last line the issue specifies.
    pub fn last_line(&self) -> String {
        let overhead = self.overhead_p99_ms.map_or_else(|| "n/a".to_owned(), |v| format!("{v:.3}"));
        format!("ratio={:.4} http_429={} overhead_p99_ms={overhead}", self.ratio, self.http_429)
    }
}

/// A market-data group's limit raised to ten million per period on both sides,
/// so that no budget binds: the simulator's table and the dispatcher's policy
/// (counted per IP, as every benchmarked endpoint is).
pub(crate) fn unbound_group(ex: Exchange, group: &str, period_ms: u64) -> (String, String) {
    let table = format!("[exchanges.{ex}.groups.{group}]\n");
    let windows = format!("windows = [{{ limit = 10000000, period_ms = {period_ms} }}]\n");
    (format!("{table}{windows}"), format!("{table}scope = 'ip'\n{windows}"))
}

fn sim_config(args: &DispatchArgs, raise: Option<(&str, u64)>) -> anyhow::Result<SimConfig> {
    let mut over = format!("jitter_ms = {}\n[exchanges.{ex}]\ncounting = '{}'\n", args.jitter_ms, args.counting, ex = args.exchange);
    if let Some((group, period_ms)) = raise {
        over.push_str(&unbound_group(args.exchange, group, period_ms).0);
    }
    SimConfig::load(&[&over]).context("simulator config")
}

pub(crate) async fn start_dispatcher(
    sim: &SimHandle,
    stop: &CancellationToken,
    policy: Option<String>,
) -> anyhow::Result<(sluice_dispatcher::Running, Option<std::path::PathBuf>)> {
    let mut cfg = DispatcherConfig::load(None, &|_| None)?;
    cfg.listen = "127.0.0.1:0".parse()?;
    cfg.ops_listen = "127.0.0.1:0".parse()?;
    cfg.drain_grace_ms = 0;
    for ex in Exchange::ALL {
        cfg.base_urls.insert(ex, sim.base_url(ex));
    }
    let file = match policy {
        Some(text) => {
            let p = std::env::temp_dir().join(format!("sluice-bench-{}.toml", std::process::id()));
            std::fs::write(&p, text)?;
            cfg.policy_files.push(p.clone());
            Some(p)
        }
        None => None,
    };
    let running = sluice_dispatcher::start(cfg, Keyring::default(), stop.clone()).await?;
    Ok((running, file))
}

/// Accepted requests, the highest cost in any window, and 429s so far.
fn accepted_in(sim: &SimHandle, ex: Exchange, group: &str) -> (u64, u64, u64) {
    let s = sim.stats();
    let v = s.exchange(ex).cloned().unwrap_or_default();
    let b = v.buckets.iter().find(|b| b.group == group);
    let accepted = b.map_or(0, |b| b.accepted);
    let max = b.and_then(|b| b.windows.first()).map_or(0, |w| w.max_seen);
    (accepted, max, s.rate_limited())
}

/// Runs `sluice bench dispatch`.
pub async fn dispatch(args: DispatchArgs, out: &mut dyn std::io::Write) -> anyhow::Result<Report> {
    if args.clients == 0 || args.inflight == 0 || args.seconds == 0 {
        bail!("--clients, --inflight and --seconds must be positive");
    }
    let (path, query, group, weight) = target(args.exchange);
    let stop = CancellationToken::new();
    let cfg = sim_config(&args, None)?;
    let window = cfg
        .exchanges
        .get(&args.exchange)
        .and_then(|e| e.groups.get(group))
        .map(|g| g.windows[0].clone())
        .context("no such group in the simulator")?;
    let sim = sluice_sim::start(cfg, stop.clone()).await?;
    let per_window = window.limit / weight;
    writeln!(
        out,
        "bench dispatch: {} {path}?{query} (group {group}, weight {weight}): {} requests per {} ms, {} counting, jitter {} ms",
        args.exchange, per_window, window.period_ms, args.counting, args.jitter_ms
    )?;
    writeln!(out, "{} clients x {} in flight for {} s through {:?}", args.clients, args.inflight, args.seconds, args.limiter)?;

    let errors = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let end = started + Duration::from_secs(args.seconds);
    let mut tasks = Vec::new();
    let mut dispatcher = None;
    match args.limiter {
        Limiter::Sluice => {
            let (running, _file) = start_dispatcher(&sim, &stop, None).await?;
            for _ in 0..args.clients {
                let client = DispatcherClient::connect(format!("http://{}", running.grpc_addr)).await?;
                for _ in 0..args.inflight {
                    let mut c = client.clone();
                    let errors = errors.clone();
                    let r = request(args.exchange, path, query, window.period_ms);
                    tasks.push(tokio::spawn(async move {
                        while Instant::now() < end {
                            if c.call(r.clone()).await.is_err() {
                                errors.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    }));
                }
            }
            dispatcher = Some(running);
        }
        Limiter::Gcra => {
            let per = Duration::from_millis(window.period_ms) / u32::try_from(per_window.max(1))?;
            let burst = NonZeroU32::new(u32::try_from(per_window)?).context("limit below one request")?;
            let quota = governor::Quota::with_period(per).context("zero period")?.allow_burst(burst);
            let limiter = Arc::new(governor::RateLimiter::direct(quota));
            let url = format!("{}{path}?{query}", sim.base_url(args.exchange));
            for _ in 0..args.clients {
                let http = sluice_service::http_client::client();
                for _ in 0..args.inflight {
                    let (http, limiter, url, errors) = (http.clone(), limiter.clone(), url.clone(), errors.clone());
                    tasks.push(tokio::spawn(async move {
                        while Instant::now() < end {
                            limiter.until_ready().await;
                            if http.get(&url).send().await.and_then(|r| r.error_for_status()).is_err() {
                                errors.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    }));
                }
            }
        }
    }
    let mut last = (0, 0, 0);
    let mut samples = vec![0u64];
    for s in 1..=args.seconds {
        tokio::time::sleep_until((started + Duration::from_secs(s)).into()).await;
        let now = accepted_in(&sim, args.exchange, group);
        writeln!(
            out,
            "t={s:>3}s accepted={:>6} (+{:>4}) max_in_window={}/{} http_429={}",
            now.0,
            now.0 - last.0,
            now.1,
            window.limit,
            now.2
        )?;
        last = now;
        samples.push(now.0);
    }
    let (accepted, max_in_window, http_429) = accepted_in(&sim, args.exchange, group);
    for t in tasks {
        let _ = t.await;
    }
    let allowed = per_window as f64 * (args.seconds * 1000) as f64 / window.period_ms as f64;
    // The first window is free on any server; the second half shows the steady rate.
    let half = (args.seconds / 2) as usize;
    let steady_allowed = per_window as f64 * ((args.seconds - half as u64) * 1000) as f64 / window.period_ms as f64;
    let steady = (samples[args.seconds as usize] - samples[half]) as f64 / steady_allowed;
    let mut report = Report {
        accepted,
        allowed,
        ratio: accepted as f64 / allowed,
        http_429,
        max_in_window,
        limit: window.limit,
        grpc_errors: errors.load(Ordering::Relaxed),
        overhead_p50_ms: None,
        overhead_p99_ms: None,
    };
    stop.cancel();
    if let Some(d) = dispatcher {
        let _ = d.wait().await;
    }
    sim.join().await;

    if args.limiter == Limiter::Sluice && args.overhead_calls > 0 {
        let (p50, p99) = overhead(&args, path, query, group, window.period_ms).await?;
        report.overhead_p50_ms = Some(p50);
        report.overhead_p99_ms = Some(p99);
        writeln!(out, "overhead (budget not binding, {} sequential calls): p50={p50:.3} ms p99={p99:.3} ms", args.overhead_calls)?;
    }
    writeln!(
        out,
        "accepted {} of {:.0} allowed; second half {steady:.4} of allowed; highest in any window {}/{}; grpc errors {}",
        report.accepted, report.allowed, report.max_in_window, report.limit, report.grpc_errors
    )?;
    writeln!(out, "{}", report.last_line())?;
    Ok(report)
}

/// The dispatcher's added latency with a budget that never binds.
async fn overhead(args: &DispatchArgs, path: &str, query: &str, group: &str, period_ms: u64) -> anyhow::Result<(f64, f64)> {
    let stop = CancellationToken::new();
    let sim =
        sluice_sim::start(sim_config(&DispatchArgs { jitter_ms: 0, ..args.clone() }, Some((group, period_ms)))?, stop.clone()).await?;
    let (_, policy) = unbound_group(args.exchange, group, period_ms);
    let (running, file) = start_dispatcher(&sim, &stop, Some(policy)).await?;
    let mut client = DispatcherClient::connect(format!("http://{}", running.grpc_addr)).await?;
    let r = request(args.exchange, path, query, period_ms);
    let mut samples = Vec::with_capacity(args.overhead_calls);
    for i in 0..args.overhead_calls + 50 {
        let t0 = Instant::now();
        let resp = client.call(r.clone()).await?.into_inner();
        let rtt = t0.elapsed();
        let upstream = resp.upstream.map_or(Duration::ZERO, |d| Duration::new(d.seconds as u64, d.nanos as u32));
        // The first 50 warm connections and caches.
        if i >= 50 {
            samples.push(rtt.saturating_sub(upstream).as_secs_f64() * 1000.0);
        }
    }
    samples.sort_by(f64::total_cmp);
    stop.cancel();
    let _ = running.wait().await;
    sim.join().await;
    if let Some(f) = file {
        let _ = std::fs::remove_file(f);
    }
    Ok((crate::percentile(&samples, 50.0), crate::percentile(&samples, 99.0)))
}
