//! The signal service: market data from NATS to structured trading signals.
//!
//! * [`features`]: exact features per symbol from trades and books (pure).
//! * [`output`]: the answer's JSON schema, repair and validation (pure).
//! * [`cost`]: prices per million tokens and daily budgets (pure).
//! * [`prompt`]: the versioned questions (pure).
//! * [`offline`]: the deterministic model used without a gateway (pure).
//! * [`gateway`]: an OpenAI-compatible chat-completions client, streamed.
//! * [`router`]: which model answers; retries, fallbacks, cooldowns, budgets,
//!   the gateway's own limits.
//! * [`service`]: NATS in and out, cadence, metrics; [`start`] and [`run`].

pub mod backfill;
pub mod config;
pub mod cost;
pub mod features;
pub mod gateway;
pub mod offline;
pub mod output;
pub mod prompt;
pub mod router;
pub mod service;

pub use config::SignalConfig;
pub use service::{Running, SignalError, run, signal_subject, start};
