//! The execution service's configuration: one typed struct from a TOML file
//! (`config/execution.toml` is shipped) and `SLUICE_EXECUTION_*` variables, the
//! environment passed in as a function so tests never touch the process's own.
//! Every error names the key.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use serde::Deserialize;
use sluice_domain::{Decimal, Exchange, Symbol};
use sluice_service::credentials::NatsAuth;

use crate::fills::{FeeRates, Tif};
use crate::risk::Limits;

/// A configuration that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("execution config: {0}")]
    Parse(String),
    #[error("execution config: {0}")]
    Invalid(String),
}

/// Paper (the default) or live through the dispatcher.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    Paper,
    Live,
}

/// An account as "<exchange>/<name>".
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AccountId {
    pub exchange: Exchange,
    pub name: String,
}

impl AccountId {
    pub fn parse(s: &str) -> Result<AccountId, String> {
        let (ex, name) = s.split_once('/').ok_or_else(|| format!("account '{s}' must be \"exchange/name\""))?;
        let exchange = ex.parse::<Exchange>().map_err(|e| format!("account '{s}': {e}"))?;
        if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
            return Err(format!("account '{s}': the name may hold only letters, digits, '-' and '_'"));
        }
        Ok(AccountId { exchange, name: name.to_ascii_lowercase() })
    }
}

impl std::fmt::Display for AccountId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}/{}", self.exchange, self.name)
    }
}

impl<'de> Deserialize<'de> for AccountId {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        AccountId::parse(&String::deserialize(d)?).map_err(serde::de::Error::custom)
    }
}

/// How big an order a signal makes.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "snake_case")]
pub enum Sizing {
    /// This much quote currency per signal.
    FixedNotional(Decimal),
    /// This share of the account's equity (0.1 = 10 %).
    EquityShare(Decimal),
}

/// What a signal's BUY and SELL mean for the target position.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Target {
    /// Hold the sized quantity long.
    Long,
    /// Hold nothing.
    Flat,
    /// Hold the sized quantity short (linear markets with shorting allowed only).
    Short,
}

/// How the order is placed.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, tag = "type", rename_all = "snake_case")]
pub enum OrderStyle {
    /// A limit at the touch (the best price on our side), `offset_bp` basis
    /// points toward the other side (0: join the touch).
    Limit {
        #[serde(default)]
        offset_bp: Decimal,
        #[serde(default = "gtc")]
        time_in_force: Tif,
    },
    /// A market order that walks the book no further than `slippage_cap` (0.005 =
    /// 0.5 %) from the best price.
    Market { slippage_cap: Decimal },
}

fn gtc() -> Tif {
    Tif::Gtc
}

/// Trading rules to use when the exchange's instrument endpoint cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RulesConfig {
    pub tick: Decimal,
    pub lot: Decimal,
    pub min_qty: Decimal,
    pub min_notional: Decimal,
}

/// What a symbol's signals do.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Strategy {
    /// The signal and market data venue (`signal.<venue>.<BASE-QUOTE>`).
    pub venue: String,
    pub symbol: Symbol,
    pub account: AccountId,
    /// Spot can never go short; linear may when `buy`/`sell` say so.
    #[serde(default = "spot")]
    pub market: String,
    pub sizing: Sizing,
    /// Scale the size by the signal's confidence.
    #[serde(default)]
    pub scale_by_confidence: bool,
    pub min_confidence: f64,
    pub buy: Target,
    pub sell: Target,
    pub order: OrderStyle,
    /// No new order on the symbol for this long after one.
    pub cooldown_ms: u64,
    /// Used when the exchange's own rules cannot be read.
    pub rules: Option<RulesConfig>,
}

fn signal_ack_wait() -> u64 {
    5_000
}

fn unknown_grace() -> u64 {
    30_000
}

fn resend_within() -> u64 {
    60_000
}

fn confirm_after() -> u64 {
    1_000
}

fn call_timeout() -> u64 {
    10_000
}

fn submit_wait() -> u64 {
    3_000
}

fn shutdown_grace() -> u64 {
    12_000
}

fn spot() -> String {
    "spot".into()
}

impl Strategy {
    pub fn is_spot(&self) -> bool {
        self.market == "spot"
    }
}

/// The paper venue.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PaperConfig {
    /// A resting order's share of a trade printed at its own price.
    pub touch_share: Decimal,
    /// Fee rates per exchange.
    pub fees: BTreeMap<Exchange, FeeRates>,
    /// Starting balances: account to asset to amount.
    pub balances: BTreeMap<String, BTreeMap<String, Decimal>>,
}

/// A JetStream stream this service writes.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamConfig {
    pub name: String,
    pub max_age_s: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExecutionConfig {
    pub service: String,
    pub mode: Mode,
    pub nats_url: String,
    #[serde(default)]
    pub nats_auth: NatsAuth,
    /// gRPC.
    pub listen: SocketAddr,
    pub ops_listen: SocketAddr,
    /// Orders, cancels, queries and instrument rules go through it.
    pub dispatcher_url: String,
    #[serde(default)]
    pub dispatcher_token_file: Option<std::path::PathBuf>,
    /// Signals are read through this durable JetStream consumer of SIGNAL.
    pub consumer: String,
    /// A signal older than this is skipped and counted, never traded.
    pub max_signal_age_ms: u64,
    /// A signal pulled but not acknowledged (the service died with it) comes
    /// again after this long; keep it well under `max_signal_age_ms`, so a
    /// restart does not leave it to go stale.
    #[serde(default = "signal_ack_wait")]
    pub signal_ack_wait_ms: u64,
    pub reconcile_every_ms: u64,
    /// Instrument rules are read again this often.
    pub rules_every_ms: u64,
    /// An order whose send was ambiguous, or that was sent before a restart, and
    /// that the exchange still does not have this long after it was sent, never
    /// arrived: it ends rejected. Keep it above the dispatcher's upstream timeout.
    #[serde(default = "unknown_grace")]
    pub unknown_grace_ms: u64,
    /// An order submitted by an earlier run of the service, never answered, that
    /// the exchange does not have, is sent again under its idempotency key if it
    /// is younger than this (its request may have died with that run). Keep it
    /// well under the dispatcher's `idempotency_ttl_ms` (10 min).
    #[serde(default = "resend_within")]
    pub resend_within_ms: u64,
    /// A query confirms a live order this long after its create or cancel was
    /// answered (the private stream usually confirms first).
    #[serde(default = "confirm_after")]
    pub confirm_after_ms: u64,
    /// Each call through the dispatcher, queueing for budget included.
    #[serde(default = "call_timeout")]
    pub call_timeout_ms: u64,
    /// A gRPC SubmitOrder in live mode waits this long for the exchange's first
    /// answer before it returns the order as SUBMITTED.
    #[serde(default = "submit_wait")]
    pub submit_wait_ms: u64,
    /// On SIGTERM, the answers of calls already sent (orders, cancels) are
    /// awaited this long before the process ends, so their outcome is journaled
    /// now rather than reconciled by the next run. Above `call_timeout_ms`, and
    /// under the orchestrator's grace (30 s in `k8s/`, 20 s in compose).
    #[serde(default = "shutdown_grace")]
    pub shutdown_grace_ms: u64,
    pub journal: StreamConfig,
    pub events: StreamConfig,
    /// Risk limits of every account, notional amounts in its quote currency...
    pub risk: Limits,
    /// ...unless the account has its own (an account trading in KRW needs other
    /// numbers than one trading in USDT).
    #[serde(default)]
    pub account_risk: BTreeMap<String, Limits>,
    pub paper: PaperConfig,
    #[serde(default)]
    pub strategies: Vec<Strategy>,
}

/// The configuration shipped with sluice.
pub const SHIPPED: &str = include_str!("../../../config/execution.toml");

impl ExecutionConfig {
    /// The shipped file, or `text` instead, then the environment.
    pub fn load(text: Option<&str>, env: &dyn Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let mut cfg: ExecutionConfig = toml::from_str(text.unwrap_or(SHIPPED)).map_err(|e| ConfigError::Parse(e.to_string()))?;
        let var = |k: &str| env(&format!("SLUICE_EXECUTION_{k}")).filter(|v| !v.is_empty());
        if let Some(v) = var("NATS_URL") {
            cfg.nats_url = v;
        }
        if let Some(v) = var("DISPATCHER_URL") {
            cfg.dispatcher_url = v;
        }
        if let Some(v) = var("DISPATCHER_TOKEN_FILE") {
            cfg.dispatcher_token_file = Some(v.into());
        }
        if let Some(v) = var("MODE") {
            cfg.mode = match v.as_str() {
                "paper" => Mode::Paper,
                "live" => Mode::Live,
                _ => return Err(ConfigError::Invalid(format!("SLUICE_EXECUTION_MODE '{v}' must be paper or live"))),
            };
        }
        for (key, slot) in [("LISTEN", &mut cfg.listen), ("OPS_LISTEN", &mut cfg.ops_listen)] {
            if let Some(v) = var(key) {
                *slot = v.parse().map_err(|_| ConfigError::Invalid(format!("SLUICE_EXECUTION_{key} '{v}' is not an address")))?;
            }
        }
        cfg.nats_auth.apply_env(env);
        cfg.validate()?;
        Ok(cfg)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let bad = |m: String| Err(ConfigError::Invalid(m));
        if self.consumer.is_empty() || !self.consumer.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
            return bad(format!("consumer '{}' may hold only letters, digits, '-' and '_'", self.consumer));
        }
        if self.max_signal_age_ms == 0 || self.reconcile_every_ms == 0 || self.rules_every_ms == 0 || self.call_timeout_ms == 0 {
            return bad("max_signal_age_ms, reconcile_every_ms, rules_every_ms and call_timeout_ms must be positive".into());
        }
        if self.signal_ack_wait_ms < 1_000 || self.signal_ack_wait_ms >= self.max_signal_age_ms {
            return bad(format!(
                "signal_ack_wait_ms {} must be at least 1000 and below max_signal_age_ms {}",
                self.signal_ack_wait_ms, self.max_signal_age_ms
            ));
        }
        if self.mode == Mode::Live && self.dispatcher_url.is_empty() {
            return bad("mode = \"live\" needs dispatcher_url (orders go through the dispatcher)".into());
        }
        if !(Decimal::ZERO..=Decimal::ONE).contains(&self.paper.touch_share) {
            return bad(format!("paper.touch_share {} must be between 0 and 1", self.paper.touch_share));
        }
        for (account, assets) in &self.paper.balances {
            AccountId::parse(account).map_err(|e| ConfigError::Invalid(format!("paper.balances: {e}")))?;
            if let Some((asset, v)) = assets.iter().find(|(_, v)| **v < Decimal::ZERO) {
                return bad(format!("paper.balances.\"{account}\".{asset} is negative ({v})"));
            }
        }
        for account in self.account_risk.keys() {
            AccountId::parse(account).map_err(|e| ConfigError::Invalid(format!("account_risk: {e}")))?;
        }
        let mut seen = std::collections::BTreeSet::new();
        for s in &self.strategies {
            let name = format!("strategies {}/{}", s.venue, s.symbol);
            if !seen.insert((s.venue.clone(), s.symbol.clone())) {
                return bad(format!("{name} is configured twice"));
            }
            if !(0.0..=1.0).contains(&s.min_confidence) {
                return bad(format!("{name}: min_confidence {} must be between 0 and 1", s.min_confidence));
            }
            if s.market != "spot" && s.market != "linear" {
                return bad(format!("{name}: market '{}' must be spot or linear", s.market));
            }
            if s.is_spot() && (s.buy == Target::Short || s.sell == Target::Short) {
                return bad(format!("{name}: a spot market cannot be held short"));
            }
            let positive = match &s.sizing {
                Sizing::FixedNotional(v) => *v > Decimal::ZERO,
                Sizing::EquityShare(v) => *v > Decimal::ZERO && *v <= Decimal::ONE,
            };
            if !positive {
                return bad(format!("{name}: sizing must be a positive notional or a share in (0, 1]"));
            }
            if let OrderStyle::Market { slippage_cap } = &s.order
                && !(*slippage_cap > Decimal::ZERO && *slippage_cap < Decimal::ONE)
            {
                return bad(format!("{name}: slippage_cap {slippage_cap} must be between 0 and 1"));
            }
            if !self.paper.fees.contains_key(&s.account.exchange) {
                return bad(format!("{name}: paper.fees has no rates for {}", s.account.exchange));
            }
        }
        Ok(())
    }

    /// The risk limits of `account`.
    pub fn limits(&self, account: &AccountId) -> &Limits {
        self.account_risk.get(&account.to_string()).unwrap_or(&self.risk)
    }

    pub fn max_signal_age(&self) -> Duration {
        Duration::from_millis(self.max_signal_age_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_file_loads_and_the_environment_wins() {
        let env = |k: &str| match k {
            "SLUICE_EXECUTION_MODE" => Some("live".to_owned()),
            "SLUICE_EXECUTION_NATS_URL" => Some("nats://127.0.0.1:1".to_owned()),
            _ => None,
        };
        let c = ExecutionConfig::load(None, &env).unwrap();
        assert_eq!((c.mode, c.nats_url.as_str()), (Mode::Live, "nats://127.0.0.1:1"));
        assert!(!c.strategies.is_empty());
        assert_eq!(ExecutionConfig::load(None, &|_| None).unwrap().mode, Mode::Paper, "paper by default");
    }

    #[test]
    fn errors_name_the_key() {
        let base = SHIPPED.to_owned();
        let e = ExecutionConfig::load(None, &|k| (k == "SLUICE_EXECUTION_MODE").then(|| "yolo".into())).unwrap_err();
        assert!(e.to_string().contains("SLUICE_EXECUTION_MODE 'yolo'"), "{e}");
        let e = ExecutionConfig::load(Some(&base.replace("min_confidence = 0.6", "min_confidence = 1.5")), &|_| None).unwrap_err();
        assert!(e.to_string().contains("min_confidence 1.5"), "{e}");
        let e = ExecutionConfig::load(Some(&base.replace("account = \"upbit/demo\"", "account = \"upbit\"")), &|_| None).unwrap_err();
        assert!(e.to_string().contains("\"exchange/name\""), "{e}");
        let e = ExecutionConfig::load(Some(&format!("{base}\nbogus = 1\n")), &|_| None).unwrap_err();
        assert!(e.to_string().contains("bogus"), "{e}");
        assert!(AccountId::parse("kraken/x").unwrap_err().contains("kraken"));
    }
}
