//! What every sluice service binary shares, so each `main.rs` stays a few lines:
//! read config, [`telemetry::init`], build a [`shutdown::on_signals`] token, call the
//! service's `run(config, shutdown)`.

pub mod credentials;
pub mod duration;
pub mod grpc;
pub mod heartbeat;
pub mod http;
pub mod http_client;
pub mod json_log;
pub mod shutdown;
pub mod telemetry;
pub mod trace;
