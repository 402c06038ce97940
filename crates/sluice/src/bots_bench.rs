//! `sluice bench bots`: many ccxt processes sharing one Upbit account, as
//! Hummingbot or Freqtrade users run them, each with ccxt's own rate limiter on
//! (`tests/python/ccxt_bots.py`, in the virtual environment of
//! `scripts/python-env`). Two legs in one run, each against a fresh simulator
//! so that a ban earned in one does not carry over: the processes calling the
//! simulator directly, then the same processes through the dispatcher's
//! exchange-compatible face with a sluice exchange key. For each: accepted
//! calls, 429s and bans (as the bots saw them and as the simulator counted
//! them), HTTP latency p50/p99 as the bots saw it, and through the dispatcher
//! the wait for budget (`x-sluice-queued-ms`) and the dispatcher's own part
//! (`x-sluice-own-ms`: verifying, preparing, signing, relaying). Last line:
//! `direct_429=<n> direct_bans=<n> face_429=<n> face_bans=<n> overhead_p99_ms=<x>`.

use std::io::Write;

use anyhow::{Context, bail};
use clap::Args;
use serde_json::{Value, json};
use sluice_dispatcher::DispatcherConfig;
use sluice_domain::Exchange;
use sluice_sim::SimConfig;
use tokio_util::sync::CancellationToken;

use crate::stack::sim_keyring;

#[derive(Args, Debug)]
pub struct BotsArgs {
    /// Bot processes on the one account.
    #[arg(long, default_value_t = 8)]
    pub processes: u32,
    /// How long each leg runs.
    #[arg(long, default_value_t = 60)]
    pub seconds: u64,
    /// Turn ccxt's own rate limiter off (default on, as users run it).
    #[arg(long)]
    pub no_limiter: bool,
}

/// The bots' sluice key (any secret of 16 or more characters serves).
const BOT_KEY: &str = "bench-bot-upbit-key";
const BOT_SECRET: &str = "bench-bot-secret-4c1e7a9d2b";

struct TempFile(std::path::PathBuf);

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

fn temp(name: &str, text: &str) -> anyhow::Result<TempFile> {
    let p = std::env::temp_dir().join(format!("sluice-bots-{}-{name}", std::process::id()));
    std::fs::write(&p, text).with_context(|| format!("writing {}", p.display()))?;
    Ok(TempFile(p))
}

/// One leg: the bots against a fresh simulator, directly or through the face.
async fn leg(a: &BotsArgs, through: bool) -> anyhow::Result<Value> {
    let stop = CancellationToken::new();
    let _guard = stop.clone().drop_guard();
    let sim_cfg = SimConfig::shipped();
    let keyring = sim_keyring(&sim_cfg.accounts)?;
    let sim = sluice_sim::start(sim_cfg, stop.clone()).await?;
    let mut files = Vec::new();
    let base = if through {
        let secret = temp("secret", BOT_SECRET)?;
        let text = format!(
            "[[clients]]\nname = 'bots'\naccounts = ['upbit/demo']\n\
             [[clients.exchange_keys]]\nexchange = 'upbit'\naccount = 'demo'\napi_key = '{BOT_KEY}'\nsecret_file = '{}'\n\
             [exchange_api]\nlisten = '127.0.0.1:0'\n",
            secret.0.display()
        );
        let mut cfg = DispatcherConfig::load(Some(&text), &|_| None)?;
        cfg.listen = "127.0.0.1:0".parse()?;
        cfg.ops_listen = "127.0.0.1:0".parse()?;
        cfg.drain_grace_ms = 0;
        for ex in Exchange::ALL {
            cfg.base_urls.insert(ex, sim.base_url(ex));
        }
        let running = sluice_dispatcher::start(cfg, keyring, stop.clone()).await?;
        files.push(secret);
        let addr = running.exchange_api.shared.context("the face did not start")?;
        format!("http://{addr}/upbit")
    } else {
        sim.base_url(Exchange::Upbit)
    };
    let mut args: Vec<String> =
        ["--exchange", "upbit", "--base", &base, "--processes", &a.processes.to_string(), "--seconds", &a.seconds.to_string()]
            .iter()
            .map(|s| s.to_string())
            .collect();
    if through {
        let keys = temp("keys.json", &json!({ "apiKey": BOT_KEY, "secret": BOT_SECRET }).to_string())?;
        args.extend(["--keys".to_owned(), keys.0.display().to_string()]);
        files.push(keys);
    }
    if a.no_limiter {
        args.push("--no-limiter".into());
    }
    let (ok, text) = sluice_testkit::run_python("ccxt_bots.py", args).await?;
    let last = text.lines().last().unwrap_or_default();
    let mut report: Value = match serde_json::from_str(last) {
        Ok(v) if ok => v,
        _ => bail!("ccxt_bots.py failed:\n{text}"),
    };
    let stats = sim.stats();
    let upbit = stats.exchange(Exchange::Upbit).cloned().unwrap_or_default();
    report["sim_429"] = json!(upbit.rate_limited);
    report["sim_banned"] = json!(upbit.banned);
    report["sim_bans_imposed"] = json!(upbit.bans_imposed);
    Ok(report)
}

fn ms(v: &Value) -> String {
    v.as_f64().map_or_else(|| "-".to_owned(), |x| format!("{x:.2}"))
}

pub async fn run(a: BotsArgs, out: &mut impl Write) -> anyhow::Result<()> {
    if a.processes == 0 || a.seconds == 0 {
        bail!("--processes and --seconds must be positive");
    }
    let limiter = if a.no_limiter { "off" } else { "on" };
    writeln!(out, "{} ccxt processes on one Upbit account for {} s each leg, ccxt's rate limiter {limiter}", a.processes, a.seconds)?;
    let direct = leg(&a, false).await?;
    let face = leg(&a, true).await?;
    writeln!(
        out,
        "{:<7} {:>8} {:>6} {:>7} {:>8} {:>7} {:>8} {:>7} {:>7} {:>8} {:>8} {:>7} {:>7}",
        "leg",
        "accepted",
        "per_s",
        "bot_429",
        "bot_bans",
        "sim_429",
        "sim_bans",
        "p50_ms",
        "p99_ms",
        "wait_p50",
        "wait_p99",
        "own_p50",
        "own_p99"
    )?;
    for (name, r) in [("direct", &direct), ("sluice", &face)] {
        writeln!(
            out,
            "{:<7} {:>8} {:>6} {:>7} {:>8} {:>7} {:>8} {:>7} {:>7} {:>8} {:>8} {:>7} {:>7}",
            name,
            r["ok"].to_string(),
            r["ok_per_s"].to_string(),
            r["http_429"].to_string(),
            r["http_418"].to_string(),
            r["sim_429"].to_string(),
            r["sim_bans_imposed"].to_string(),
            ms(&r["p50_ms"]),
            ms(&r["p99_ms"]),
            ms(&r["queued_p50_ms"]),
            ms(&r["queued_p99_ms"]),
            ms(&r["overhead_p50_ms"]),
            ms(&r["overhead_p99_ms"]),
        )?;
        if let Some(errors) = r["errors"].as_array().filter(|e| !e.is_empty()) {
            writeln!(out, "  {name} errors (first {}): {}", errors.len(), Value::Array(errors.clone()))?;
        }
    }
    writeln!(
        out,
        "direct_429={} direct_bans={} face_429={} face_bans={} overhead_p99_ms={}",
        direct["sim_429"],
        direct["sim_bans_imposed"],
        face["sim_429"],
        face["sim_bans_imposed"],
        ms(&face["overhead_p99_ms"])
    )?;
    Ok(())
}
