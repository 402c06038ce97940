//! The dispatcher from a foreign client: Python grpcio with stubs generated from
//! `proto/` (`tests/python/dispatcher_grpcio.py`), in the virtual environment that
//! `scripts/python-env` creates under the build folder. Reflection, health, calls
//! and careless requests (see the script).

mod common;

use common::{Setup, harness};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_grpcio_reflects_calls_and_gets_invalid_argument_for_careless_requests() {
    let h = harness(Setup::default()).await;
    let proto = sluice_testkit::repo_root().join("proto").display().to_string();
    let args = vec!["--addr".to_owned(), h.dispatcher.grpc_addr.to_string(), "--proto".to_owned(), proto];
    let (ok, text) = sluice_testkit::run_python("dispatcher_grpcio.py", args).await.unwrap();
    assert!(ok && text.contains("all checks passed"), "{text}");
}
