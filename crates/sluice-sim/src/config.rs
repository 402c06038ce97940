//! The simulator's configuration: its own copy of each exchange's truth (limits and
//! how they are counted), its accounts and its market. Defaults ship in
//! `config/sim.toml`; a file given on the command line is merged over them.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use rust_decimal::Decimal;
use serde::Deserialize;
use sluice_domain::{Exchange, Symbol};
use sluice_exchange::policy::merge;
use sluice_rate::server::Counting;

/// The simulator configuration shipped with sluice.
pub const SHIPPED: &str = include_str!("../../../config/sim.toml");

/// A configuration that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("simulator config: {0}")]
    Parse(String),
    #[error("simulator config: {0}")]
    Invalid(String),
}

/// What a budget is counted per, on the simulated server.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    Ip,
    Account,
}

/// What the server does when a group's limit is exceeded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnExceed {
    /// Answer the exchange's rate-limit error (429 or its equivalent).
    #[default]
    Throttle,
    /// Ban the scope at once (Bybit's IP limit: 403, wait 10 minutes).
    Ban,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WindowConfig {
    pub limit: u64,
    pub period_ms: u64,
}

impl WindowConfig {
    pub fn period(&self) -> Duration {
        Duration::from_millis(self.period_ms)
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GroupConfig {
    pub scope: Scope,
    #[serde(default)]
    pub on_exceed: OnExceed,
    /// Count separately per value of this request parameter (OKX: per instrument).
    #[serde(default)]
    pub per: Option<String>,
    pub windows: Vec<WindowConfig>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExchangeConfig {
    counting: String,
    pub ban_after_429s: u32,
    pub ban_window_ms: u64,
    pub ban_ms: u64,
    pub ban_max_ms: u64,
    pub groups: BTreeMap<String, GroupConfig>,
    /// The WebSocket feed's rules.
    pub feed: FeedConfig,
}

/// How an exchange's WebSocket feed treats its clients.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeedConfig {
    /// New connections per IP; more are refused with HTTP 429.
    pub connect: Vec<WindowConfig>,
    /// Messages a client may send on one connection; more close it.
    #[serde(default)]
    pub messages: Vec<WindowConfig>,
    /// Subscribe requests a client may send on one connection (OKX); more are refused.
    #[serde(default)]
    pub subscribes: Vec<WindowConfig>,
    /// Topics in one subscribe request (Bybit spot: 10).
    #[serde(default)]
    pub max_args: Option<usize>,
    /// Streams on one connection (Binance: 1024).
    #[serde(default)]
    pub max_streams: Option<usize>,
    /// Closes a connection when nothing passed either way for this long.
    #[serde(default)]
    pub idle_close_ms: Option<u64>,
    /// The server pings this often and closes when no pong came within `pong_within_ms`.
    #[serde(default)]
    pub ping_every_ms: Option<u64>,
    #[serde(default)]
    pub pong_within_ms: Option<u64>,
    /// Connections end after this long (Binance: 24 h).
    #[serde(default)]
    pub max_age_ms: Option<u64>,
}

impl ExchangeConfig {
    pub fn counting(&self) -> Counting {
        self.counting.parse().unwrap_or(Counting::Sliding)
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccountConfig {
    pub exchange: Exchange,
    pub name: String,
    pub api_key: String,
    pub secret: String,
    #[serde(default)]
    pub passphrase: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MarketConfig {
    pub symbol: Symbol,
    pub exchanges: Vec<Exchange>,
    pub price: Decimal,
    pub tick: Decimal,
    pub lot: Decimal,
    /// The smallest order value (price x quantity) the exchanges accept; when
    /// unset, 5,000 for KRW markets and 5 otherwise (Upbit's `min_total`,
    /// Binance's `NOTIONAL`, OKX's and Bybit's minimum order amounts).
    #[serde(default)]
    pub min_notional: Option<Decimal>,
}

impl MarketConfig {
    pub fn min_notional(&self) -> Decimal {
        self.min_notional.unwrap_or_else(|| if self.symbol.quote.as_str() == "KRW" { Decimal::from(5000) } else { Decimal::from(5) })
    }
}

/// Everything the simulator runs with.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SimConfig {
    pub seed: u64,
    pub jitter_ms: u64,
    pub tick_ms: u64,
    /// Market steps a WebSocket client may fall behind before it is cut off as a
    /// slow consumer, as the exchanges do.
    pub feed_backlog: usize,
    pub exchanges: BTreeMap<Exchange, ExchangeConfig>,
    pub accounts: Vec<AccountConfig>,
    /// Starting balances; an account holds those of the assets its exchange
    /// trades (see [`SimConfig::balances_on`]).
    pub balances: BTreeMap<String, Decimal>,
    pub markets: Vec<MarketConfig>,
    /// Where each exchange listens; unset means 127.0.0.1 on a free port.
    #[serde(default)]
    pub listen: BTreeMap<Exchange, SocketAddr>,
    /// The control endpoint (stats, faults, jitter); unset means a free port.
    #[serde(default)]
    pub admin: Option<SocketAddr>,
}

impl SimConfig {
    /// An account's starting balances on `exchange`: only the assets that
    /// exchange trades (a base or quote of one of its markets), so Upbit
    /// accounts hold KRW and no USDT-only coin, and the others no KRW.
    pub fn balances_on(&self, exchange: Exchange) -> BTreeMap<String, Decimal> {
        let traded: std::collections::BTreeSet<String> = self
            .markets
            .iter()
            .filter(|m| m.exchanges.contains(&exchange))
            .flat_map(|m| [m.symbol.base.to_string(), m.symbol.quote.to_string()])
            .collect();
        self.balances.iter().filter(|(a, _)| traded.contains(*a)).map(|(a, v)| (a.clone(), *v)).collect()
    }

    /// The shipped configuration.
    pub fn shipped() -> Self {
        Self::load(&[]).expect("the shipped simulator config is valid")
    }

    /// The shipped configuration with overrides merged over it in order.
    pub fn load(overrides: &[&str]) -> Result<Self, ConfigError> {
        let mut table: toml::Table = SHIPPED.parse().map_err(|e: toml::de::Error| ConfigError::Parse(e.to_string()))?;
        for o in overrides {
            let over: toml::Table = o.parse().map_err(|e: toml::de::Error| ConfigError::Parse(e.to_string()))?;
            merge(&mut table, over);
        }
        let cfg: SimConfig = toml::Value::Table(table).try_into().map_err(|e: toml::de::Error| ConfigError::Parse(e.to_string()))?;
        cfg.validate()?;
        Ok(cfg)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        for (ex, c) in &self.exchanges {
            c.counting.parse::<Counting>().map_err(|e| ConfigError::Invalid(format!("{ex}: {e}")))?;
            let f = &c.feed;
            if f.connect.iter().chain(&f.messages).chain(&f.subscribes).any(|w| w.limit == 0 || w.period_ms == 0) {
                return Err(ConfigError::Invalid(format!("{ex} feed: windows need a positive limit and period")));
            }
            for (name, g) in &c.groups {
                if g.windows.is_empty() || g.windows.iter().any(|w| w.limit == 0 || w.period_ms == 0) {
                    return Err(ConfigError::Invalid(format!("{ex} group '{name}': windows need a positive limit and period")));
                }
            }
        }
        for m in &self.markets {
            if m.price <= Decimal::ZERO || m.tick <= Decimal::ZERO || m.lot <= Decimal::ZERO {
                return Err(ConfigError::Invalid(format!("market {}: price, tick and lot must be positive", m.symbol)));
            }
        }
        Ok(())
    }

    /// The account named `name` on `exchange`.
    pub fn account(&self, exchange: Exchange, name: &str) -> Option<&AccountConfig> {
        self.accounts.iter().find(|a| a.exchange == exchange && a.name == name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_config_carries_the_brief_numbers() {
        let c = SimConfig::shipped();
        let upbit = &c.exchanges[&Exchange::Upbit];
        assert_eq!(upbit.groups["ticker"].windows[0].limit, 10);
        assert_eq!(upbit.counting(), Counting::Sliding);
        assert_eq!(c.exchanges[&Exchange::Binance].counting(), Counting::Fixed);
        assert_eq!(c.exchanges[&Exchange::Bybit].groups["ip"].on_exceed, OnExceed::Ban);
        assert_eq!(c.account(Exchange::Okx, "demo").unwrap().passphrase.as_deref(), Some("sim-okx-passphrase"));
        assert_eq!(c.markets.len(), 5);
        let held = |e| c.balances_on(e).into_keys().collect::<Vec<_>>();
        assert_eq!(held(Exchange::Upbit), ["BTC", "ETH", "KRW"]);
        for e in [Exchange::Bybit, Exchange::Binance, Exchange::Okx] {
            assert_eq!(held(e), ["BTC", "ETH", "SOL", "USDT"], "{e:?}");
        }
    }

    #[test]
    fn overrides_merge_and_bad_values_are_named() {
        let c = SimConfig::load(&["jitter_ms = 10\n[exchanges.upbit]\ncounting = 'token_bucket'"]).unwrap();
        assert_eq!(c.jitter_ms, 10);
        assert_eq!(c.exchanges[&Exchange::Upbit].counting(), Counting::TokenBucket);
        let e = SimConfig::load(&["[exchanges.upbit]\ncounting = 'leaky'"]).unwrap_err();
        assert!(e.to_string().contains("leaky"), "{e}");
    }
}
