//! `sluice loadtest` as users run it: the binary's exit code under thresholds,
//! the files it writes, its refusal of remote targets; and `bench sweep`
//! through a real dispatcher.

use std::process::Command;
use std::time::Duration;

use sluice_loadtest::serve::serve;

fn sluice() -> Command {
    Command::new(env!("CARGO_BIN_EXE_sluice"))
}

/// A local target answering in 2 ms, for the binary to load.
async fn target() -> (std::net::SocketAddr, tokio::sync::oneshot::Sender<()>) {
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let s = serve("127.0.0.1:0".parse().unwrap(), &"2ms".parse().unwrap(), Duration::from_millis(50), async move {
        let _ = rx.await;
    })
    .await
    .unwrap();
    (s.addr, tx)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_threshold_exits_2_and_a_met_one_exits_0_with_its_files() {
    let (addr, _stop) = target().await;
    let url = format!("http://{addr}/ticker");
    let run = |extra: Vec<String>| {
        let mut c = sluice();
        c.args(["loadtest", "http", &url, "--levels", "2,4", "--requests", "20", "--no-progress"]).args(extra);
        c
    };

    // Every answer takes at least 2 ms: a p99 under 1 ms cannot be met.
    let mut failing = run(vec!["--threshold".into(), "p99<1ms".into()]);
    let out = tokio::task::spawn_blocking(move || failing.output().unwrap()).await.unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(2), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("THRESHOLD p99<1ms failed at concurrency 2"), "{stdout}");
    assert!(stdout.contains("THRESHOLD p99<1ms failed at concurrency 4"), "{stdout}");

    let dir = std::env::temp_dir().join(format!("sluice-loadtest-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (json, csv, svg) = (dir.join("r.json"), dir.join("r.csv"), dir.join("r.svg"));
    let files = vec![
        "--threshold".into(),
        "p99<10s".into(),
        "--threshold".into(),
        "error_rate<1%".into(),
        "--json".into(),
        json.display().to_string(),
        "--csv".into(),
        csv.display().to_string(),
        "--svg".into(),
        svg.display().to_string(),
    ];
    let mut passing = run(files);
    let out = tokio::task::spawn_blocking(move || passing.output().unwrap()).await.unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{stdout}\n{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("thresholds met: p99<10s, error_rate<1%"), "{stdout}");
    let report: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(report["levels"][1]["concurrency"], 4);
    assert_eq!(report["levels"][1]["succeeded"], 80);
    assert_eq!(report["passed"], true);
    assert_eq!(std::fs::read_to_string(&csv).unwrap().lines().count(), 3);
    assert!(std::fs::read_to_string(&svg).unwrap().contains("<polyline"));
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_input_is_named_and_remote_targets_are_refused() {
    let cases: [(&[&str], &str); 5] = [
        (&["loadtest", "ws", "ws://127.0.0.1:9/ws", "--rate", "100"], "--rate does not apply"),
        (&["loadtest", "http", "http://192.0.2.9/api", "--levels", "1"], "--allow-remote"),
        (&["loadtest", "http", "http://127.0.0.1:9/", "--threshold", "p99<fast"], "not a duration"),
        (&["loadtest", "http", "http://127.0.0.1:9/", "--levels", "0"], "level of 0"),
        (&["loadtest", "ws", "http://127.0.0.1:9/ws"], "ws or wss"),
    ];
    for (args, want) in cases {
        let args: Vec<String> = args.iter().map(|s| (*s).to_owned()).collect();
        let out = tokio::task::spawn_blocking(move || sluice().args(&args).arg("--no-progress").output().unwrap()).await.unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_ne!(out.status.code(), Some(0), "{stderr}");
        assert!(stderr.contains(want), "wanted {want}: {stderr}");
    }
}

/// The dispatcher sweep at small levels: every call through the real
/// dispatcher to the simulator succeeds, none is refused for rate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_dispatcher_sweep_answers_every_call() {
    let args = sluice::sweep_bench::SweepArgs {
        exchange: sluice_domain::Exchange::Upbit,
        levels: vec![2, 8],
        requests: 10,
        output: sluice::loadtest::OutputArgs { no_progress: true, ..Default::default() },
    };
    let mut out = Vec::new();
    let report = sluice::sweep_bench::run(args, &mut out).await.unwrap();
    let text = String::from_utf8_lossy(&out);
    assert_eq!(report.levels.len(), 2, "{text}");
    for l in &report.levels {
        assert_eq!((l.total, l.succeeded), (l.concurrency as u64 * 10, l.concurrency as u64 * 10), "{text}");
        assert_eq!(l.statuses.get("200"), Some(&l.total), "{text}");
    }
    assert!(text.contains("simulator 429s: 0"), "{text}");
}
