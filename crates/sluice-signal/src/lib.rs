//! The signal service: market data from NATS to structured trading signals.
//!
//! * [`features`]: exact features per symbol from trades and books (pure).
//! * [`output`]: the answer's JSON schema, repair and validation (pure).
//! * [`cost`]: prices per million tokens and daily budgets (pure).
//! * [`gateway`]: an OpenAI-compatible chat-completions client, streamed.
//! * [`router`]: which model answers; retries, fallbacks, cooldowns, budgets.

pub mod cost;
pub mod features;
pub mod gateway;
pub mod output;
pub mod router;
