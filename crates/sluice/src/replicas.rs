//! `sluice bench dispatch --replicas N`: N dispatcher *processes* on a nats-server
//! started for the run, the simulator as the strict exchange, clients spread over
//! the replicas. Optionally the owner of the exchange's budgets is killed (`kill
//! -9`) mid-run, or NATS is stopped and restarted, to show what that costs.
//!
//! Clients call one market-data endpoint as fast as the budget lets them; on
//! UNAVAILABLE they move to the next replica. Order clients place Upbit orders
//! with an idempotency key and retry a failed call with the same key elsewhere;
//! the simulator answers a reused `identifier` with "already in use", so a key
//! sent twice would show.
//!
//! Reported: ratio (accepted / what the limit allows over the measured time),
//! 429s, the longest stall (the longest time without any successful market data
//! call after load began), the ratio from 3 s after a kill to the end (the
//! survivors must not keep a dead replica's share back), and how long after NATS
//! came back the full rate was reached and kept.

use std::path::PathBuf;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::bail;
use sluice_domain::Exchange;
use sluice_proto::dispatcher::v1::dispatcher_client::DispatcherClient;
use sluice_proto::dispatcher::v1::{CallRequest, GetClusterRequest};
use sluice_sim::{SimConfig, SimHandle};
use tokio_util::sync::CancellationToken;

use crate::process::Service;

pub use sluice_testkit::{Nats, free_port};
use tonic::transport::Channel;

/// What to run.
#[derive(Debug, Clone)]
pub struct ReplicaRun {
    pub replicas: usize,
    /// Market-data clients, spread round-robin over the replicas.
    pub clients: usize,
    pub inflight: usize,
    pub seconds: u64,
    pub jitter_ms: u64,
    /// Kill -9 a replica this many seconds into the load: the owner of Upbit's
    /// budgets when `kill_owner`, else another one.
    pub kill_at: Option<u64>,
    pub kill_owner: bool,
    /// Stop NATS at this second and start it again `nats_down_for` later.
    pub nats_stop_at: Option<u64>,
    pub nats_down_for: u64,
    /// Clients placing keyed Upbit orders (one every 250 ms each).
    pub order_clients: usize,
}

impl Default for ReplicaRun {
    fn default() -> Self {
        ReplicaRun {
            replicas: 3,
            clients: 6,
            inflight: 2,
            seconds: 60,
            jitter_ms: 0,
            kill_at: None,
            kill_owner: true,
            nats_stop_at: None,
            nats_down_for: 6,
            order_clients: 0,
        }
    }
}

/// What a run measured.
#[derive(Debug, Clone, Default)]
pub struct ReplicaReport {
    pub accepted: u64,
    pub allowed: f64,
    pub ratio: f64,
    pub http_429: u64,
    pub violations: Vec<String>,
    pub max_stall_ms: u64,
    /// Calls answered UNAVAILABLE (a replica died with them, or was cut off).
    pub unavailable: u64,
    /// Other gRPC errors, with their codes.
    pub other_errors: Vec<String>,
    pub orders_placed: u64,
    pub orders_replayed: u64,
    /// Keyed orders whose first attempt died with its replica after it may have
    /// been sent: FAILED_PRECONDITION, then found at the exchange by identifier.
    pub orders_unknown: u64,
    /// Keys the exchange saw twice ("identifier already in use"): must be 0.
    pub orders_duplicated: u64,
    pub killed: Option<String>,
    /// Accepted / allowed from 3 s after the kill to the end.
    pub ratio_after_kill: Option<f64>,
    /// Seconds from NATS's restart until every following second ran at 90 % of
    /// the limit or more (`None`: not reached before the end).
    pub full_rate_after_nats_s: Option<f64>,
    /// Accepted per second of the run (one per second mark).
    pub per_second: Vec<f64>,
    /// Modes seen from GetCluster while NATS was down (e.g. "fallback").
    pub modes_while_down: Vec<String>,
    /// Modes at the end of the run.
    pub modes_at_end: Vec<String>,
}

impl ReplicaReport {
    pub fn last_line(&self) -> String {
        format!("ratio={:.4} http_429={} max_stall_ms={}", self.ratio, self.http_429, self.max_stall_ms)
    }
}

/// The `sluice-dispatcher` binary: `SLUICE_DISPATCHER_BIN`, else next to this
/// executable.
pub fn dispatcher_binary() -> anyhow::Result<PathBuf> {
    crate::process::binary("sluice-dispatcher", "SLUICE_DISPATCHER_BIN")
}

/// One dispatcher process.
pub struct Replica {
    pub name: String,
    pub grpc: String,
    pub ops: String,
    process: Service,
}

impl Replica {
    /// Kill -9.
    pub fn kill(&mut self) {
        self.process.kill();
    }

    /// Waits for the replica to log where it serves, and records the addresses.
    pub async fn serving(&mut self, within: Duration) -> anyhow::Result<()> {
        let found = self.process.logged("dispatcher serving", &["grpc_addr=", "ops_addr="], within).await?;
        (self.grpc, self.ops) = (format!("http://{}", found[0]), format!("http://{}", found[1]));
        Ok(())
    }

    /// The last lines of its log, for a failing test to show.
    pub fn log_tail(&self) -> String {
        self.process.log_tail()
    }
}

/// Cluster timing used by these runs (a faster heartbeat than the defaults, so
/// runs are short; the upstream timeout bounds the fallback pause).
fn replica_config(name: &str, nats: &str, sim: &SimHandle) -> String {
    // Port 0: the replica picks free ports itself and logs them. Choosing them here
    // and handing them over raced with other tests taking the same ports.
    let mut text = format!(
        "listen = '127.0.0.1:0'\nops_listen = '127.0.0.1:0'\nreplica = '{name}'\ndrain_grace_ms = 0\n\
         upstream_timeout_ms = 2000\nlost_hold_ms = 2000\n[base_urls]\n"
    );
    for ex in Exchange::ALL {
        text.push_str(&format!("{ex} = '{}'\n", sim.base_url(ex)));
    }
    text.push_str(&format!(
        "[cluster]\nnats_url = '{nats}'\nheartbeat_ms = 100\nabsent_after_ms = 400\nmember_ttl_ms = 20000\nlease_ttl_ms = 500\n\
         clock_skew_ms = 20\ngrant_use_within_ms = 150\nfallback_lease_ms = 10000\n"
    ));
    text
}

/// Starts replica `name` pointed at `nats` and the simulator.
pub fn spawn_replica(name: &str, nats: &str, sim: &SimHandle, sim_cfg: &SimConfig) -> anyhow::Result<Replica> {
    let mut env = Vec::new();
    for a in &sim_cfg.accounts {
        let ex = a.exchange.as_str().to_ascii_uppercase();
        env.push((format!("SLUICE_{ex}_DEMO_API_KEY"), a.api_key.clone()));
        env.push((format!("SLUICE_{ex}_DEMO_SECRET"), a.secret.clone()));
        if let Some(p) = &a.passphrase {
            env.push((format!("SLUICE_{ex}_DEMO_PASSPHRASE"), p.clone()));
        }
    }
    let process = Service::spawn(name, &dispatcher_binary()?, &replica_config(name, nats, sim), &env)?;
    Ok(Replica { name: name.into(), grpc: String::new(), ops: String::new(), process })
}

async fn connect(url: &str, within: Duration) -> anyhow::Result<DispatcherClient<Channel>> {
    let end = Instant::now() + within;
    loop {
        match DispatcherClient::connect(url.to_owned()).await {
            Ok(c) => return Ok(c),
            Err(e) if Instant::now() > end => bail!("cannot reach {url}: {e}"),
            Err(_) => tokio::time::sleep(Duration::from_millis(100)).await,
        }
    }
}

/// Waits until every replica sees all the others alive and agrees on Upbit's owner.
pub async fn wait_formed(clients: &mut [DispatcherClient<Channel>], within: Duration) -> anyhow::Result<String> {
    let end = Instant::now() + within;
    let n = clients.len();
    loop {
        let mut owners = Vec::new();
        for c in clients.iter_mut() {
            let Ok(s) = c.get_cluster(GetClusterRequest {}).await.map(|r| r.into_inner()) else { break };
            let alive = s.members.iter().filter(|m| m.alive).count();
            let owner = s.owners.iter().find(|o| o.exchange == "upbit").map(|o| o.owner.clone());
            if alive == n && s.mode == "connected" {
                owners.extend(owner);
            }
        }
        if owners.len() == n && owners.iter().all(|o| *o == owners[0]) {
            return Ok(owners[0].clone());
        }
        if Instant::now() > end {
            bail!("the replicas did not agree on an owner within {within:?} (saw {owners:?})");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn ticker() -> CallRequest {
    CallRequest {
        exchange: "upbit".into(),
        method: "GET".into(),
        path: "/v1/ticker".into(),
        query: "markets=KRW-BTC".into(),
        timeout: Some(sluice_proto::prost_types::Duration { seconds: 5, nanos: 0 }),
        ..CallRequest::default()
    }
}

fn order(identifier: &str) -> CallRequest {
    CallRequest {
        exchange: "upbit".into(),
        account: "demo".into(),
        method: "POST".into(),
        path: "/v1/orders".into(),
        body: serde_json::json!({ "market": "KRW-BTC", "side": "bid", "volume": "0.01", "price": "1000000", "ord_type": "limit", "identifier": identifier })
            .to_string()
            .into_bytes(),
        idempotency_key: identifier.into(),
        timeout: Some(sluice_proto::prost_types::Duration { seconds: 5, nanos: 0 }),
        ..CallRequest::default()
    }
}

#[derive(Default, Clone)]
struct Tally {
    successes: Vec<Instant>,
    unavailable: u64,
    /// Distinct UNAVAILABLE messages (a few), to tell why.
    unavailable_why: Vec<String>,
    other: Vec<String>,
    placed: u64,
    replayed: u64,
    unknown: u64,
    duplicated: u64,
}

fn accepted(sim: &SimHandle) -> u64 {
    let s = sim.stats();
    s.exchange(Exchange::Upbit).and_then(|v| v.buckets.iter().find(|b| b.group == "ticker")).map_or(0, |b| b.accepted)
}

/// One keyed order: retried with the same key on the next replica until it has an
/// outcome. Unknown outcomes are looked up at the exchange by identifier.
async fn place(clients: &[DispatcherClient<Channel>], start: usize, tally: &Mutex<Tally>) {
    let id = uuid_like();
    for attempt in 0..clients.len() * 4 {
        let mut c = clients[(start + attempt) % clients.len()].clone();
        match c.call(order(&id)).await {
            Ok(r) => {
                let r = r.into_inner();
                let mut t = tally.lock().unwrap_or_else(|p| p.into_inner());
                if String::from_utf8_lossy(&r.body).contains("already in use") {
                    t.duplicated += 1;
                } else if r.replayed {
                    t.replayed += 1;
                } else {
                    t.placed += 1;
                }
                return;
            }
            Err(s) if s.code() == tonic::Code::FailedPrecondition => {
                tally.lock().unwrap_or_else(|p| p.into_inner()).unknown += 1;
                return;
            }
            Err(s) if matches!(s.code(), tonic::Code::Unavailable | tonic::Code::Unknown) => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            Err(s) => {
                tally.lock().unwrap_or_else(|p| p.into_inner()).other.push(format!("order: {:?} {}", s.code(), s.message()));
                return;
            }
        }
    }
}

fn uuid_like() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    format!("bench-{}-{}-{}", std::process::id(), unix_ms(), N.fetch_add(1, Ordering::Relaxed))
}

fn unix_ms() -> u128 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_millis())
}

/// Runs the replicas scenario and reports.
pub async fn run(args: ReplicaRun, out: &mut dyn std::io::Write) -> anyhow::Result<ReplicaReport> {
    if args.replicas == 0 || args.clients == 0 || args.inflight == 0 || args.seconds == 0 {
        bail!("--replicas, --clients, --inflight and --seconds must be positive");
    }
    let stop = CancellationToken::new();
    let sim_cfg = SimConfig::load(&[&format!("jitter_ms = {}\n", args.jitter_ms)])?;
    let sim = sluice_sim::start(sim_cfg.clone(), stop.clone()).await?;
    let mut nats = Nats::start().await?;
    let mut replicas = Vec::new();
    for i in 0..args.replicas {
        replicas.push(spawn_replica(&format!("dispatcher-{i}"), &nats.url(), &sim, &sim_cfg)?);
    }
    let mut clients = Vec::new();
    for r in &mut replicas {
        r.serving(Duration::from_secs(30)).await?;
        clients.push(connect(&r.grpc, Duration::from_secs(30)).await?);
    }
    let owner = match wait_formed(&mut clients, Duration::from_secs(30)).await {
        Ok(o) => o,
        Err(e) => {
            for r in &replicas {
                writeln!(out, "--- {} log:\n{}", r.name, r.log_tail())?;
            }
            return Err(e);
        }
    };
    writeln!(out, "{} replicas formed; upbit budgets owned by {owner}", args.replicas)?;
    // Wait until the budget flows (a new owner first waits out what it cannot know).
    let mut probe = clients[0].clone();
    let warm_end = Instant::now() + Duration::from_secs(30);
    while probe.call(ticker()).await.is_err() {
        if Instant::now() > warm_end {
            bail!("no call succeeded within 30 s of the cluster forming");
        }
    }

    let tally = Arc::new(Mutex::new(Tally::default()));
    let started = Instant::now();
    let end = started + Duration::from_secs(args.seconds);
    let base = accepted(&sim);
    let base_429 = sim.stats().rate_limited();
    let mut tasks = Vec::new();
    for k in 0..args.clients {
        for _ in 0..args.inflight {
            let clients = clients.clone();
            let tally = tally.clone();
            tasks.push(tokio::spawn(async move {
                let mut at = k % clients.len();
                while Instant::now() < end {
                    let mut c = clients[at].clone();
                    match c.call(ticker()).await {
                        Ok(_) => tally.lock().unwrap_or_else(|p| p.into_inner()).successes.push(Instant::now()),
                        Err(s) if matches!(s.code(), tonic::Code::Unavailable | tonic::Code::Unknown) => {
                            {
                                let mut t = tally.lock().unwrap_or_else(|p| p.into_inner());
                                t.unavailable += 1;
                                let why = s.message().chars().take(120).collect::<String>();
                                if t.unavailable_why.len() < 5 && !t.unavailable_why.contains(&why) {
                                    t.unavailable_why.push(why);
                                }
                            }
                            // Its replica died or is cut off: go to the next one, without spinning.
                            at = (at + 1) % clients.len();
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                        Err(s) if s.code() == tonic::Code::DeadlineExceeded => {}
                        Err(s) => tally.lock().unwrap_or_else(|p| p.into_inner()).other.push(format!("{:?} {}", s.code(), s.message())),
                    }
                }
            }));
        }
    }
    for k in 0..args.order_clients {
        let clients = clients.clone();
        let tally = tally.clone();
        tasks.push(tokio::spawn(async move {
            while Instant::now() < end {
                place(&clients, k, &tally).await;
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
        }));
    }

    let mut report = ReplicaReport::default();
    let mut nats_back_at = None;
    // (when, accepted so far) at each second mark.
    let mut samples = vec![(started, base)];
    let (mut killed_at, mut restarted_at) = (None, None);
    for s in 1..=args.seconds {
        tokio::time::sleep_until((started + Duration::from_secs(s)).into()).await;
        let acc = accepted(&sim);
        let prev = samples.last().copied().unwrap_or((started, base));
        samples.push((Instant::now(), acc));
        report.per_second.push((acc - prev.1) as f64 / Instant::now().saturating_duration_since(prev.0).as_secs_f64().max(1e-3));
        if args.kill_at == Some(s) {
            let mut c = clients[0].clone();
            let owner = match c.get_cluster(GetClusterRequest {}).await {
                Ok(st) => st.into_inner().owners.into_iter().find(|o| o.exchange == "upbit").map(|o| o.owner),
                Err(_) => None,
            };
            let victim = replicas.iter_mut().find(|r| (Some(&r.name) == owner.as_ref()) == args.kill_owner);
            if let Some(r) = victim {
                r.kill();
                let what = if args.kill_owner { "the owner" } else { "a non-owner" };
                writeln!(out, "t={s:>3}s killed {what} {} (kill -9) at unix ms {}", r.name, unix_ms())?;
                report.killed = Some(r.name.clone());
                killed_at = Some(samples.len() - 1);
            }
        }
        if args.nats_stop_at == Some(s) {
            nats.stop();
            nats_back_at = Some(s + args.nats_down_for);
            writeln!(out, "t={s:>3}s stopped NATS")?;
        }
        if nats_back_at.is_some_and(|b| s + 1 == b) {
            for (i, r) in replicas.iter().enumerate() {
                let mut c = clients[i].clone();
                if let Ok(st) = c.get_cluster(GetClusterRequest {}).await {
                    report.modes_while_down.push(format!("{}={}", r.name, st.into_inner().mode));
                }
            }
        }
        if nats_back_at == Some(s) {
            nats.restart().await?;
            writeln!(out, "t={s:>3}s started NATS again")?;
            restarted_at = Some(samples.len() - 1);
        }
        let t = tally.lock().unwrap_or_else(|p| p.into_inner());
        writeln!(
            out,
            "t={s:>3}s accepted={:>5} (+{:>2}) unavailable={} http_429={}",
            acc - base,
            acc - prev.1,
            t.unavailable,
            sim.stats().rate_limited() - base_429
        )?;
    }
    // Upbit's ticker group: 10 requests per second per IP.
    let rate = |from: usize| {
        let ((t0, a0), (t1, a1)) = (samples[from], samples[samples.len() - 1]);
        (a1 - a0) as f64 / (10.0 * t1.saturating_duration_since(t0).as_secs_f64().max(1e-3))
    };
    if let Some(k) = killed_at
        && k + 3 < samples.len() - 1
    {
        report.ratio_after_kill = Some(rate(k + 3));
        writeln!(out, "ratio from 3 s after the kill to the end: {:.4}", rate(k + 3))?;
    }
    if let Some(r) = restarted_at {
        // The first second mark after which every whole second ran at 90 % or more.
        let per = &report.per_second;
        let back = (r..per.len()).find(|&i| per[i..].iter().all(|&x| x >= 9.0));
        report.full_rate_after_nats_s = back.map(|i| samples[i].0.saturating_duration_since(samples[r].0).as_secs_f64());
        match report.full_rate_after_nats_s {
            Some(s) => writeln!(out, "full rate (>= 9 of 10 every second) from {s:.1} s after NATS came back")?,
            None => writeln!(out, "full rate not reached after NATS came back")?,
        }
    }
    for t in tasks {
        let _ = t.await;
    }
    let measured = started.elapsed();
    for (i, r) in replicas.iter().enumerate() {
        if report.killed.as_ref() == Some(&r.name) {
            continue;
        }
        let mut c = clients[i].clone();
        if let Ok(st) = c.get_cluster(GetClusterRequest {}).await {
            report.modes_at_end.push(format!("{}={}", r.name, st.into_inner().mode));
        }
    }
    let t = tally.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let mut stamps = t.successes.clone();
    stamps.sort();
    let mut last = started;
    let (mut stall, mut stall_from) = (Duration::ZERO, Duration::ZERO);
    for s in stamps.iter().chain(std::iter::once(&end)) {
        if s.saturating_duration_since(last) > stall {
            stall = s.saturating_duration_since(last);
            stall_from = last.saturating_duration_since(started);
        }
        last = (*s).max(last);
    }
    writeln!(out, "longest stall: {} ms from t={:.3}s", stall.as_millis(), stall_from.as_secs_f64())?;
    let stats = sim.stats();
    report.accepted = accepted(&sim) - base;
    // Upbit's ticker group: 10 requests per second per IP.
    report.allowed = 10.0 * measured.as_secs_f64();
    report.ratio = report.accepted as f64 / report.allowed;
    report.http_429 = stats.rate_limited() - base_429;
    report.violations = stats.violations();
    report.max_stall_ms = stall.as_millis() as u64;
    report.unavailable = t.unavailable;
    report.other_errors = t.other.clone();
    report.orders_placed = t.placed;
    report.orders_replayed = t.replayed;
    report.orders_unknown = t.unknown;
    report.orders_duplicated = t.duplicated;
    let t_why = t.unavailable_why.clone();
    writeln!(
        out,
        "accepted {} of {:.0} allowed; unavailable {}; other errors {}; orders placed {} replayed {} unknown {} duplicated {}",
        report.accepted,
        report.allowed,
        report.unavailable,
        report.other_errors.len(),
        report.orders_placed,
        report.orders_replayed,
        report.orders_unknown,
        report.orders_duplicated
    )?;
    for why in &t_why {
        writeln!(out, "unavailable because: {why}")?;
    }
    for e in report.other_errors.iter().take(5) {
        writeln!(out, "other error: {e}")?;
    }
    if !report.modes_while_down.is_empty() {
        writeln!(out, "modes while NATS was down: {}", report.modes_while_down.join(" "))?;
    }
    writeln!(out, "modes at the end: {}", report.modes_at_end.join(" "))?;
    writeln!(out, "{}", report.last_line())?;
    drop(replicas);
    drop(nats);
    stop.cancel();
    sim.join().await;
    Ok(report)
}
