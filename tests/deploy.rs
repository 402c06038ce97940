//! The deployment files, offline (no Docker engine, no cluster):
//! `tests/python/validate_deploy.py` checks docker-compose.yml and its live
//! override against the Compose Specification's schema and against the
//! repository (commands, files, addresses, ports, health checks, Prometheus
//! targets, the Dockerfile); `tests/python/validate_k8s.py` renders each
//! Kubernetes overlay with kustomize and validates every object against the
//! Kubernetes 1.32 schemas and sluice's production rules; the example
//! configuration in `deploy/config/` reads as its service reads it.

use sluice::config_check::{CheckArgs, Kind};

/// Every binary the workspace builds: crates with a `main.rs`, each named after
/// its folder (the flat layout's rule, checked here too).
fn binaries() -> Vec<String> {
    let root = sluice_testkit::repo_root();
    let mut bins = Vec::new();
    for entry in std::fs::read_dir(root.join("crates")).unwrap() {
        let dir = entry.unwrap().path();
        if !dir.join("src/main.rs").exists() {
            continue;
        }
        let name = dir.file_name().unwrap().to_string_lossy().into_owned();
        let manifest = std::fs::read_to_string(dir.join("Cargo.toml")).unwrap();
        assert!(manifest.contains(&format!("[[bin]]\nname = \"{name}\"")), "{name}: its binary is named after its folder");
        bins.push(name);
    }
    bins.sort();
    bins
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn compose_files_pass_the_compose_schema_and_match_the_repository() {
    let bins = binaries();
    assert!(bins.len() >= 7, "{bins:?}");
    let root = sluice_testkit::repo_root().display().to_string();
    let (ok, text) =
        sluice_testkit::run_python("validate_deploy.py", vec!["--root".into(), root, "--bins".into(), bins.join(",")]).await.unwrap();
    assert!(ok && text.contains("all checks passed"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_compose_file_is_refused_naming_each_problem() {
    let root = sluice_testkit::repo_root();
    let good = std::fs::read_to_string(root.join("docker-compose.yml")).unwrap();
    let broken = good
        .replace("command: [\"sluice-collector\"]", "command: [\"sluice-colector\"]")
        .replace("http://sim:18082", "http://sim:18182")
        .replace("\n  read_only: true\n", "\n  read_only: true\n  restartt: always\n");
    assert_ne!(broken, good);
    let path = std::env::temp_dir().join(format!("sluice-compose-{}.yml", std::process::id()));
    std::fs::write(&path, broken).unwrap();
    let args = vec![
        "--root".into(),
        root.display().to_string(),
        "--bins".into(),
        binaries().join(","),
        "--compose".into(),
        path.display().to_string(),
    ];
    let (ok, text) = sluice_testkit::run_python("validate_deploy.py", args).await.unwrap();
    let _ = std::fs::remove_file(&path);
    assert!(!ok, "{text}");
    for needle in ["command 'sluice-colector'", "sim does not listen on 18182", "schema: "] {
        assert!(text.contains(needle), "'{needle}' not in:\n{text}");
    }
}

#[test]
fn the_example_configurations_read_as_their_services_read_them() {
    let root = sluice_testkit::repo_root();
    for (kind, file) in [
        (Kind::Dispatcher, "deploy/config/dispatcher.live.toml"),
        (Kind::Dispatcher, "config/dispatcher.offline.toml"),
        (Kind::Dispatcher, "k8s/overlays/live/dispatcher.toml"),
        (Kind::Collector, "deploy/config/collector.live.toml"),
        (Kind::Execution, "deploy/config/execution.live.toml"),
    ] {
        let mut out = Vec::new();
        sluice::config_check::run(CheckArgs { kind, file: root.join(file) }, &mut out).unwrap_or_else(|e| panic!("{file}: {e}"));
    }
    // Its receiver's secret comes from the environment, as in the deployments.
    let text = std::fs::read_to_string(root.join("deploy/config/alerting.live.toml")).unwrap();
    let env = |k: &str| (k == "SLUICE_ALERT_WEBHOOK_URL").then(|| "https://hooks.example.invalid/sluice".to_owned());
    let cfg = sluice_alerting::AlertingConfig::load(Some(&text), None, &env).unwrap_or_else(|e| panic!("alerting.live.toml: {e}"));
    assert!(!cfg.probes.is_empty(), "the live alerting config probes the exchanges");
}

/// The live examples trade, stream and probe the dispatcher's "main" accounts
/// at the exchanges' own addresses: nothing in them points at the simulator
/// or its demo accounts.
#[test]
fn the_live_examples_name_the_exchanges_and_the_main_accounts() {
    let root = sluice_testkit::repo_root();
    for file in ["collector", "execution", "alerting"] {
        let text = std::fs::read_to_string(root.join(format!("deploy/config/{file}.live.toml"))).unwrap();
        let settings: String = text.lines().filter(|l| !l.trim_start().starts_with('#')).collect::<Vec<_>>().join("\n");
        for bad in ["demo", "127.0.0.1", "ws://"] {
            assert!(!settings.contains(bad), "{file}.live.toml: '{bad}' in a live config");
        }
        assert!(settings.contains("main"), "{file}.live.toml names no main account");
    }
}

async fn validate_k8s(root: &std::path::Path, overlays: &[std::path::PathBuf]) -> (bool, String) {
    let mut args = vec!["--root".to_owned(), root.display().to_string(), "--bins".into(), binaries().join(",")];
    for o in overlays {
        args.extend(["--overlay".to_owned(), o.display().to_string()]);
    }
    sluice_testkit::run_python("validate_k8s.py", args).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kubernetes_overlays_render_and_pass_the_kubernetes_schemas_and_production_rules() {
    let (ok, text) = validate_k8s(&sluice_testkit::repo_root(), &[]).await;
    assert!(ok && text.contains("offline: ") && text.contains("live: ") && text.contains("all checks passed"), "{text}");
}

/// Copies `from` into `to` (a small tree of text files).
fn copy_tree(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let p = entry.unwrap().path();
        let target = to.join(p.file_name().unwrap());
        if p.is_dir() {
            copy_tree(&p, &target);
        } else {
            std::fs::copy(&p, &target).unwrap();
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_manifest_is_refused_naming_each_problem() {
    let root = sluice_testkit::repo_root();
    let tmp = std::env::temp_dir().join(format!("sluice-k8s-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    copy_tree(&root.join("k8s"), &tmp.join("k8s"));
    copy_tree(&root.join("config"), &tmp.join("config"));
    let edit = |file: &str, from: &str, to: &str| {
        let p = tmp.join(file);
        let text = std::fs::read_to_string(&p).unwrap();
        assert!(text.contains(from), "{file} lacks {from}");
        std::fs::write(&p, text.replacen(from, to, 1)).unwrap();
    };
    edit("k8s/base/dispatcher.yaml", "  replicas: 3\n", "  replicas: 3\n  replicaz: 2\n");
    edit("k8s/base/collector.yaml", "readOnlyRootFilesystem: true", "readOnlyRootFilesystem: false");
    edit("k8s/base/signal.yaml", "http://dispatcher:50051", "http://dispatcher:50052");
    edit("k8s/base/execution.yaml", "            - configMapRef: { name: sluice-telemetry }\n", "");
    let (ok, text) = validate_k8s(&tmp, &[tmp.join("k8s/overlays/offline")]).await;
    let _ = std::fs::remove_dir_all(&tmp);
    assert!(!ok, "{text}");
    for needle in [
        "'replicaz' was unexpected",
        "collector/collector: needs a read-only root filesystem",
        "Service dispatcher has no port 50052",
        "execution/execution: does not read the ConfigMap sluice-telemetry",
    ] {
        assert!(text.contains(needle), "'{needle}' not in:\n{text}");
    }
}
