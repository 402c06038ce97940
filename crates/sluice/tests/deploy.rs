//! The deployment files, offline (no Docker engine): `tests/python/validate_deploy.py`
//! checks docker-compose.yml and its live override against the Compose
//! Specification's schema and against the repository (commands, files,
//! addresses, ports, health checks, Prometheus targets, the Dockerfile), and
//! the example configuration in `deploy/config/` reads as its service reads it.

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
    for (kind, file) in [(Kind::Dispatcher, "deploy/config/dispatcher.live.toml"), (Kind::Dispatcher, "config/dispatcher.offline.toml")] {
        let mut out = Vec::new();
        sluice::config_check::run(CheckArgs { kind, file: root.join(file) }, &mut out).unwrap_or_else(|e| panic!("{file}: {e}"));
    }
}
