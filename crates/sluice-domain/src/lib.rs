//! The trading domain of sluice: which exchanges exist, what an instrument is, and
//! exact money types. Nothing here does I/O or knows about async runtimes, so every
//! other crate can depend on it (the rule ARCHITECTURE.md states for this crate).

mod exchange;
mod instrument;
mod money;

pub use exchange::{Exchange, UnknownExchange};
pub use instrument::{Asset, InstrumentError, Side, Symbol};
pub use money::{MoneyError, Price, Qty};
pub use rust_decimal::Decimal;
