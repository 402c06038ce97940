//! The dispatcher from a foreign client: Python grpcio with stubs generated from
//! `proto/` (`tests/python/dispatcher_grpcio.py`), in the virtual environment that
//! `scripts/python-env` creates under the build folder. Reflection, health, calls
//! and careless requests (see the script).

mod common;

use std::path::PathBuf;
use std::process::Command;

use common::{Setup, harness};

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The virtual environment's interpreter (created on first use).
fn python() -> PathBuf {
    let out = Command::new("bash").arg(root().join("scripts/python-env")).output().expect("bash runs scripts/python-env");
    assert!(out.status.success(), "scripts/python-env failed:\n{}", String::from_utf8_lossy(&out.stderr));
    PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_grpcio_reflects_calls_and_gets_invalid_argument_for_careless_requests() {
    let python = tokio::task::spawn_blocking(python).await.unwrap();
    let h = harness(Setup::default()).await;
    let addr = h.dispatcher.grpc_addr.to_string();
    let out = tokio::task::spawn_blocking(move || {
        Command::new(python)
            .arg(root().join("tests/python/dispatcher_grpcio.py"))
            .args(["--addr", &addr, "--proto"])
            .arg(root().join("proto"))
            .output()
    })
    .await
    .unwrap()
    .unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success() && text.contains("all checks passed"), "{text}");
}
