//! The collector's configuration: a TOML file, with `SLUICE_COLLECTOR_*`
//! environment variables over it for what differs per deployment (addresses).

use std::net::SocketAddr;

use serde::Deserialize;
use sluice_domain::{Exchange, Symbol};

/// A configuration that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("collector config: {0}")]
    Parse(String),
    #[error("collector config: {0}")]
    Invalid(String),
}

/// A market-data channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Channel {
    Trade,
    Ticker,
    Book,
    Candle,
}

impl Channel {
    pub const ALL: [Channel; 4] = [Channel::Trade, Channel::Ticker, Channel::Book, Channel::Candle];

    /// Its place in [`Channel::ALL`].
    pub fn index(self) -> usize {
        self as usize
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Channel::Trade => "trade",
            Channel::Ticker => "ticker",
            Channel::Book => "book",
            Channel::Candle => "candle",
        }
    }
}

/// Spot or linear (Bybit's USDT perpetuals).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Market {
    #[default]
    Spot,
    Linear,
}

/// One exchange WebSocket endpoint and what to take from it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FeedConfig {
    pub exchange: Exchange,
    #[serde(default)]
    pub market: Market,
    /// The WebSocket URL, e.g. "wss://stream.bybit.com/v5/public/spot".
    pub url: String,
    pub symbols: Vec<Symbol>,
    pub channels: Vec<Channel>,
    /// Symbols per connection: more are spread over more connections.
    #[serde(default = "default_per_connection")]
    pub symbols_per_connection: usize,
    /// Upbit only: DEFAULT, SIMPLE, JSON_LIST or SIMPLE_LIST.
    #[serde(default)]
    pub format: Option<String>,
    /// The age at which the exchange ends a connection (Binance: 24 h, the
    /// default for Binance feeds; none for the others). The collector replaces the
    /// connection before then, overlapping the two. 0 turns it off.
    #[serde(default)]
    pub max_connection_age_ms: Option<u64>,
}

fn default_per_connection() -> usize {
    10
}

impl FeedConfig {
    /// When the exchange cuts connections, if it does.
    pub fn max_connection_age(&self) -> Option<std::time::Duration> {
        let default = match self.exchange {
            Exchange::Binance => Some(86_400_000),
            _ => None,
        };
        self.max_connection_age_ms.or(default).filter(|ms| *ms > 0).map(std::time::Duration::from_millis)
    }

    /// The NATS subject token of this feed: the exchange, or "bybit-linear".
    pub fn venue(&self) -> String {
        match self.market {
            Market::Spot => self.exchange.as_str().to_owned(),
            Market::Linear => format!("{}-linear", self.exchange),
        }
    }
}

/// One account's private stream (orders, fills, balances). The collector logs in
/// with credentials the dispatcher mints for the account: it holds no secret.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrivateConfig {
    /// Upbit or Bybit.
    pub exchange: Exchange,
    /// The account's name in the dispatcher's keyring (a NATS subject token).
    pub account: String,
    /// e.g. "wss://api.upbit.com/websocket/v1/private", "wss://stream.bybit.com/v5/private".
    pub url: String,
    /// Keep-alive interval (default: the exchange's); a stream that answers nothing
    /// for two of them is replaced.
    #[serde(default)]
    pub keepalive_ms: Option<u64>,
}

impl PrivateConfig {
    /// The venue label of its metrics and logs.
    pub fn venue(&self) -> String {
        format!("{}-private", self.exchange)
    }
}

fn default_account_stream() -> StreamConfig {
    StreamConfig { name: "ACCOUNT".into(), max_age_s: 7 * 86_400, max_bytes: 1 << 30 }
}

/// The JetStream stream that keeps market data for replay.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamConfig {
    pub name: String,
    pub max_age_s: u64,
    pub max_bytes: i64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CollectorConfig {
    /// This collector's name, in heartbeats and message sources.
    pub collector: String,
    pub nats_url: String,
    /// The dispatcher that grants connect and subscribe tokens and fetches REST
    /// snapshots. Without one, nothing is paced: only for benchmarks.
    #[serde(default)]
    pub dispatcher_url: Option<String>,
    /// A file holding this collector's bearer token for the dispatcher (when the
    /// dispatcher names its clients).
    #[serde(default)]
    pub dispatcher_token_file: Option<std::path::PathBuf>,
    /// How to log in to NATS (`SLUICE_NATS_*` override it).
    #[serde(default)]
    pub nats_auth: sluice_service::credentials::NatsAuth,
    pub ops_listen: SocketAddr,
    pub stream: StreamConfig,
    pub heartbeat_ms: u64,
    /// A subscription silent this long gets its connection replaced.
    pub idle_ms: u64,
    pub backoff_min_ms: u64,
    pub backoff_max_ms: u64,
    /// Levels in `md.*.depth.*` messages, published at most every `depth_interval_ms`.
    pub depth_levels: usize,
    pub depth_interval_ms: u64,
    /// Messages waiting for NATS per connection; beyond it they are dropped and counted.
    pub publish_queue: usize,
    /// Binance REST snapshot size (`limit` of `/api/v3/depth`).
    pub binance_snapshot_limit: u32,
    #[serde(default)]
    pub feeds: Vec<FeedConfig>,
    /// Keeps `account.>` (private streams' events), so none is lost while the
    /// execution service is away.
    #[serde(default = "default_account_stream")]
    pub account_stream: StreamConfig,
    #[serde(default)]
    pub private: Vec<PrivateConfig>,
}

/// The configuration shipped with sluice (the offline stack's feeds).
pub const SHIPPED: &str = include_str!("../../../config/collector.toml");

impl CollectorConfig {
    /// The shipped file, `text` merged over it, then the environment.
    pub fn load(text: Option<&str>, env: &dyn Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let mut cfg: CollectorConfig = toml::from_str(text.unwrap_or(SHIPPED)).map_err(|e| ConfigError::Parse(e.to_string()))?;
        if let Some(v) = env("SLUICE_COLLECTOR_NATS_URL") {
            cfg.nats_url = v;
        }
        if let Some(v) = env("SLUICE_COLLECTOR_DISPATCHER_URL") {
            cfg.dispatcher_url = Some(v).filter(|s| !s.is_empty());
        }
        if let Some(v) = env("SLUICE_COLLECTOR_DISPATCHER_TOKEN_FILE") {
            cfg.dispatcher_token_file = Some(v.into()).filter(|p: &std::path::PathBuf| !p.as_os_str().is_empty());
        }
        cfg.nats_auth.apply_env(env);
        cfg.nats_auth.validate().map_err(|e| ConfigError::Invalid(e.to_string()))?;
        if let Some(v) = env("SLUICE_COLLECTOR_OPS_LISTEN") {
            cfg.ops_listen = v.parse().map_err(|_| ConfigError::Invalid(format!("SLUICE_COLLECTOR_OPS_LISTEN '{v}' is not an address")))?;
        }
        if let Some(v) = env("SLUICE_COLLECTOR_NAME") {
            cfg.collector = v;
        }
        let url_key = |venue: String| format!("SLUICE_COLLECTOR_{}_URL", venue.replace('-', "_").to_ascii_uppercase());
        for f in &mut cfg.feeds {
            if let Some(v) = env(&url_key(f.venue())) {
                f.url = v;
            }
        }
        for p in &mut cfg.private {
            if let Some(v) = env(&url_key(p.venue())) {
                p.url = v;
            }
        }
        cfg.validate()?;
        Ok(cfg)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let bad = |m: String| Err(ConfigError::Invalid(m));
        if self.heartbeat_ms == 0 || self.idle_ms == 0 || self.backoff_min_ms == 0 || self.backoff_max_ms < self.backoff_min_ms {
            return bad("heartbeat_ms, idle_ms and backoff_min_ms must be positive and backoff_max_ms >= backoff_min_ms".into());
        }
        if self.publish_queue == 0 || self.depth_levels == 0 {
            return bad("publish_queue and depth_levels must be positive".into());
        }
        for f in &self.feeds {
            if !(f.url.starts_with("ws://") || f.url.starts_with("wss://")) {
                return bad(format!("feed {}: url '{}' is not a ws:// or wss:// URL", f.venue(), f.url));
            }
            if f.symbols.is_empty() || f.channels.is_empty() || f.symbols_per_connection == 0 {
                return bad(format!("feed {}: needs symbols, channels and a positive symbols_per_connection", f.venue()));
            }
            if f.market == Market::Linear && f.exchange != Exchange::Bybit {
                return bad(format!("feed {}: only Bybit has a linear market here", f.venue()));
            }
            if f.exchange == Exchange::Binance && f.channels.contains(&Channel::Book) && self.dispatcher_url.is_none() {
                return bad("feed binance: books need REST snapshots, which come through the dispatcher; set dispatcher_url".into());
            }
            if f.exchange == Exchange::Okx && f.channels.contains(&Channel::Candle) {
                return bad("feed okx: candles are on OKX's business endpoint, which the collector does not read yet".into());
            }
        }
        for p in &self.private {
            let name = format!("private {} {}", p.exchange, p.account);
            if !matches!(p.exchange, Exchange::Upbit | Exchange::Bybit) {
                return bad(format!("{name}: private streams are read from Upbit and Bybit only"));
            }
            if p.account.is_empty() || !p.account.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
                return bad(format!("{name}: the account name must be letters, digits, '-' or '_' (it is a NATS subject token)"));
            }
            if !(p.url.starts_with("ws://") || p.url.starts_with("wss://")) {
                return bad(format!("{name}: url '{}' is not a ws:// or wss:// URL", p.url));
            }
            if self.dispatcher_url.is_none() {
                return bad(format!("{name}: the login comes from the dispatcher; set dispatcher_url"));
            }
            if p.keepalive_ms == Some(0) {
                return bad(format!("{name}: keepalive_ms must be positive"));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_config_loads_and_env_overrides_addresses() {
        let env = |k: &str| match k {
            "SLUICE_COLLECTOR_NATS_URL" => Some("nats://127.0.0.1:1".to_owned()),
            "SLUICE_COLLECTOR_BYBIT_LINEAR_URL" => Some("ws://127.0.0.1:2/v5/public/linear".to_owned()),
            "SLUICE_COLLECTOR_BYBIT_PRIVATE_URL" => Some("ws://127.0.0.1:3/v5/private".to_owned()),
            _ => None,
        };
        let c = CollectorConfig::load(None, &env).unwrap();
        assert_eq!(c.nats_url, "nats://127.0.0.1:1");
        let private = c.private.iter().find(|p| p.exchange == Exchange::Bybit).unwrap();
        assert_eq!((private.account.as_str(), private.url.as_str()), ("demo", "ws://127.0.0.1:3/v5/private"));
        assert_eq!(c.account_stream.name, "ACCOUNT");
        let linear = c.feeds.iter().find(|f| f.venue() == "bybit-linear").unwrap();
        assert_eq!(linear.url, "ws://127.0.0.1:2/v5/public/linear");
    }

    #[test]
    fn bad_private_streams_are_named() {
        let text = SHIPPED.replace("account = \"demo\"\nurl = \"ws://127.0.0.1:18082", "account = \"de.mo\"\nurl = \"ws://127.0.0.1:18082");
        let e = CollectorConfig::load(Some(&text), &|_| None).unwrap_err();
        assert!(e.to_string().contains("private bybit de.mo: the account name must be"), "{e}");
        let text = SHIPPED.replace("exchange = \"upbit\"\naccount", "exchange = \"okx\"\naccount");
        let e = CollectorConfig::load(Some(&text), &|_| None).unwrap_err();
        assert!(e.to_string().contains("private okx demo: private streams are read from Upbit and Bybit only"), "{e}");
    }

    #[test]
    fn bad_feeds_are_named() {
        let text = SHIPPED.replace("ws://127.0.0.1:18081", "http://x");
        let e = CollectorConfig::load(Some(&text), &|_| None).unwrap_err();
        assert!(e.to_string().contains("feed upbit: url 'http://x/websocket/v1' is not a ws://"), "{e}");
    }
}
