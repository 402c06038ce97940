//! What sluice knows about each exchange, as pure functions and data:
//!
//! * [`policy`]: rate-limit policies loaded from the shipped `config/exchanges.toml`
//!   and per-deployment overrides: groups, scopes, windows, adaptive settings.
//! * [`routes`]: which group(s) and weight a request charges, by method and path
//!   template (never by substring), and which need signing.
//! * [`params`]: request parameters read from a query string or body.
//! * [`sign`]: request signing for Upbit (JWT), Bybit, Binance and OKX (HMAC).
//! * [`verify`]: checking a request signed in an exchange's own scheme, and the
//!   exchange's own error answer when it fails.
//! * [`feedback`]: what a response says about the budget (usage headers, 429, bans).
//!
//! Nothing here performs I/O; the dispatcher does that.

pub mod feedback;
pub mod params;
pub mod policy;
pub mod routes;
pub mod sign;
pub mod verify;

/// The policy file shipped with sluice (the default when no file is given).
pub const SHIPPED_POLICIES: &str = include_str!("../../../config/exchanges.toml");
