//! The execution service: trading signals to orders under pre-trade risk, in
//! paper mode by default, live through the dispatcher; every intent and
//! transition journaled before it is acted on, so no order is lost or doubled.
//!
//! Pure modules (no I/O, times as arguments, tested with a fake clock):
//!
//! * [`order`]: the order state machine; no terminal status without evidence.
//! * [`risk`]: pre-trade risk and the trading state (ACTIVE, REDUCING, HALTED).
//! * [`fills`]: the paper venue's fill model against the book and the trades.
//! * [`positions`]: positions, average cost, realized and unrealized PnL.
//! * [`instrument`]: tick size, lot step, minimum quantity and notional.
//! * [`ids`]: client order ids derived from what caused the order.
//! * [`strategy`]: a signal to an order: target position, size, placement.
//! * [`paper`]: the paper venue's wallets and resting orders.
//! * [`market`]: books and trades from NATS, as the engine reads them.
//!
//! I/O at the edges:
//!
//! * [`journal`]: every intent and transition on JetStream, before acting.
//! * [`engine`]: the one task that owns orders, positions, markets and the paper
//!   venue, rebuilt from the journal at start.
//! * [`venue`]: each exchange's order API (pure: requests built, answers read
//!   into state-machine events), and what a dispatcher answer proves about
//!   whether an order left.
//! * [`live`]: the dispatcher calls, each in its own task, answered to the
//!   engine as outcomes.
//! * [`service`]: signals (durable consumer), market data, the kill switch, the
//!   gRPC API; [`start`] and [`run`].
//!
//! [`config`]: the typed configuration (`config/execution.toml`).

pub mod config;
pub mod engine;
pub mod fills;
pub mod ids;
pub mod instrument;
pub mod journal;
pub mod live;
pub mod market;
pub mod metrics;
pub mod order;
pub mod paper;
pub mod positions;
pub mod risk;
pub mod service;
pub mod strategy;
pub mod venue;

pub use config::ExecutionConfig;
pub use service::{ExecutionError, Running, run, start};
