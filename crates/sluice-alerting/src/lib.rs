//! The alerting service: exchange and service trouble detected in seconds,
//! notified once, resolved promptly.
//!
//! Pure modules (no I/O, wall-clock milliseconds as arguments):
//!
//! * [`matcher`]: label matchers and metric selectors.
//! * [`series`]: the samples the rules read, and how they read them.
//! * [`rules`]: rules as configuration, checked with every problem's line.
//! * [`eval`]: rules to alerts: pending, firing, resolved.
//! * [`silence`]: silences and inhibition.
//! * [`group`]: routes, groups and their timing; what the notification log
//!   says still needs sending.
//! * [`payload`]: what each kind of receiver is sent.
//!
//! I/O at the edges:
//!
//! * [`nflog`]: the notification log in JetStream, claimed with
//!   compare-and-set before each send.
//! * [`receiver`]: one attempt to one receiver, and what its answer means.
//! * [`ingest`]: heartbeats into samples (pure).
//! * [`probe`]: the exchanges probed through the dispatcher.
//! * [`triage`]: the optional LLM summary attached to notifications.
//! * [`engine`]: the task that evaluates, groups and hands out deliveries,
//!   and the delivery tasks.
//! * [`api`]: gRPC `sluice.alert.v1.Alerting` and the HTTP `/api/...`.
//! * [`service`]: [`start`] and [`run`].
//!
//! [`config`]: the typed configuration (`config/alerting.toml`).

pub mod api;
pub mod config;
pub mod engine;
pub mod eval;
pub mod group;
pub mod ingest;
pub mod matcher;
pub mod metrics;
pub mod nflog;
pub mod payload;
pub mod probe;
pub mod receiver;
pub mod rules;
pub mod series;
pub mod service;
pub mod silence;
pub mod triage;

pub use config::AlertingConfig;
pub use service::{AlertingError, Running, run, start};
