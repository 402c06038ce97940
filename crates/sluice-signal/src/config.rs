//! The signal service's configuration: a TOML file (the shipped
//! `config/signal.toml` by default), with `SLUICE_SIGNAL_*` environment variables
//! over it for what differs per deployment, and the gateway key read from the
//! environment variable the file names (default `HOLYSHEEP_API_KEY`).

use std::net::SocketAddr;

use rust_decimal::Decimal;
use secrecy::SecretString;
use serde::Deserialize;
use sluice_domain::Symbol;

use crate::router::{ModelConfig, Policy};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("signal config: {0}")]
    Parse(String),
    #[error("signal config: {0}")]
    Invalid(String),
}

/// The OpenAI-compatible gateway and its own limits.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GatewayConfig {
    pub base_url: String,
    /// The environment variable holding the key.
    pub api_key_env: String,
    /// Or a file holding it (a mounted Kubernetes Secret); the variable wins when
    /// both are set. No key in either means the offline model.
    #[serde(default)]
    pub api_key_file: Option<std::path::PathBuf>,
    /// The gateway's limits, enforced here before each call (the key lives in
    /// this service, not in the dispatcher).
    pub requests_per_minute: u32,
    pub tokens_per_minute: u32,
}

/// When signals are made.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CadenceConfig {
    /// Every symbol on this schedule...
    pub every_ms: u64,
    /// ...and at once when its price moved this many percent since its last signal.
    pub move_pct: Decimal,
    /// Signals being made at once, over all symbols.
    pub concurrency: usize,
    /// A symbol's work that waited longer than this for a slot is skipped (the
    /// next schedule brings fresh numbers) rather than queued behind the market.
    pub max_wait_ms: u64,
    /// Trades a symbol needs in its window before its first signal.
    pub min_trades: u32,
}

/// Which model plays which role.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RoutingConfig {
    /// Routine analysis of every signal.
    pub routine: String,
    /// Asked to confirm a BUY or SELL of at least `confirm_above` confidence.
    #[serde(default)]
    pub confirm: Option<String>,
    pub confirm_above: f64,
    /// Reads headlines (NATS `news.<BASE>`) when there are any.
    #[serde(default)]
    pub sentiment: Option<String>,
}

/// A symbol to make signals for, from the collector's data of one venue.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SymbolConfig {
    pub venue: String,
    pub symbol: Symbol,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignalConfig {
    pub service: String,
    pub nats_url: String,
    /// How to log in to NATS (`SLUICE_NATS_*` override it).
    #[serde(default)]
    pub nats_auth: sluice_service::credentials::NatsAuth,
    pub ops_listen: SocketAddr,
    /// The features' window.
    pub window_s: u64,
    pub max_trades: usize,
    pub gateway: GatewayConfig,
    pub cadence: CadenceConfig,
    pub routing: RoutingConfig,
    pub policy: Policy,
    #[serde(default)]
    pub models: Vec<ModelConfig>,
    pub symbols: Vec<SymbolConfig>,
    /// Signals are kept this long in the JetStream stream SIGNAL.
    pub stream_max_age_s: u64,
    /// The dispatcher, to backfill each symbol's window with the last hour of
    /// one-minute candles at start (none: the window fills from live trades).
    #[serde(default)]
    pub dispatcher_url: Option<String>,
    /// A file holding the bearer token the dispatcher knows this service by.
    #[serde(default)]
    pub dispatcher_token_file: Option<std::path::PathBuf>,
    /// Set by `load`: the key from the environment, or none (offline).
    #[serde(skip)]
    pub api_key: Option<SecretString>,
}

/// The configuration shipped with sluice.
pub const SHIPPED: &str = include_str!("../../../config/signal.toml");

impl SignalConfig {
    /// The shipped file, `text` instead when given, then the environment.
    pub fn load(text: Option<&str>, env: &dyn Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let mut cfg: SignalConfig = toml::from_str(text.unwrap_or(SHIPPED)).map_err(|e| ConfigError::Parse(e.to_string()))?;
        if let Some(v) = env("SLUICE_SIGNAL_NATS_URL") {
            cfg.nats_url = v;
        }
        cfg.nats_auth.apply_env(env);
        cfg.nats_auth.validate().map_err(|e| ConfigError::Invalid(e.to_string()))?;
        if let Some(v) = env("SLUICE_SIGNAL_OPS_LISTEN") {
            cfg.ops_listen = v.parse().map_err(|_| ConfigError::Invalid(format!("SLUICE_SIGNAL_OPS_LISTEN '{v}' is not an address")))?;
        }
        if let Some(v) = env("SLUICE_SIGNAL_DISPATCHER_URL").filter(|v| !v.is_empty()) {
            cfg.dispatcher_url = Some(v);
        }
        if let Some(v) = env("SLUICE_SIGNAL_DISPATCHER_TOKEN_FILE").filter(|v| !v.is_empty()) {
            cfg.dispatcher_token_file = Some(v.into());
        }
        if let Some(v) = env("SLUICE_SIGNAL_GATEWAY_URL") {
            cfg.gateway.base_url = v;
        }
        // A mounted secret (Kubernetes, Compose) without writing a whole file.
        if let Some(v) = env("SLUICE_SIGNAL_GATEWAY_API_KEY_FILE").filter(|v| !v.is_empty()) {
            cfg.gateway.api_key_file = Some(v.into());
        }
        if let Some(v) = env("SLUICE_SIGNAL_EVERY_MS") {
            cfg.cadence.every_ms = v.parse().map_err(|_| ConfigError::Invalid(format!("SLUICE_SIGNAL_EVERY_MS '{v}' is not a number")))?;
        }
        let from_file = match &cfg.gateway.api_key_file {
            Some(p) => {
                Some(std::fs::read_to_string(p).map_err(|e| ConfigError::Invalid(format!("gateway: api_key_file {}: {e}", p.display())))?)
            }
            None => None,
        };
        cfg.api_key =
            env(&cfg.gateway.api_key_env).or(from_file).filter(|k| !k.trim().is_empty()).map(|k| SecretString::from(k.trim().to_owned()));
        cfg.validate()?;
        Ok(cfg)
    }

    /// No key: the offline model makes every signal.
    pub fn offline(&self) -> bool {
        self.api_key.is_none()
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let bad = |m: String| Err(ConfigError::Invalid(m));
        if self.symbols.is_empty() {
            return bad("no symbols".into());
        }
        if self.cadence.every_ms == 0 || self.cadence.concurrency == 0 || self.cadence.move_pct <= Decimal::ZERO {
            return bad("cadence: every_ms, concurrency and move_pct must be positive".into());
        }
        if self.gateway.requests_per_minute == 0 || self.gateway.tokens_per_minute == 0 {
            return bad("gateway: requests_per_minute and tokens_per_minute must be positive".into());
        }
        if !(self.gateway.base_url.starts_with("http://") || self.gateway.base_url.starts_with("https://")) {
            return bad(format!("gateway: base_url '{}' is not an http(s) URL", self.gateway.base_url));
        }
        if !(0.0..=1.0).contains(&self.routing.confirm_above) {
            return bad("routing: confirm_above must be within 0..1".into());
        }
        let known = |n: &str| self.models.iter().any(|m| m.name == n);
        let named =
            [Some(&self.routing.routine), self.routing.confirm.as_ref(), self.routing.sentiment.as_ref(), Some(&self.policy.cheap_model)];
        for n in named.into_iter().flatten() {
            if !known(n) {
                return bad(format!("routing names model '{n}', which has no [[models]] entry"));
            }
        }
        for m in &self.models {
            if let Some(f) = &m.fallback
                && !known(f)
            {
                return bad(format!("model {}: fallback '{f}' has no [[models]] entry", m.name));
            }
            if m.max_tokens == 0 || m.total_ms == 0 || m.first_token_ms == 0 {
                return bad(format!("model {}: max_tokens, total_ms and first_token_ms must be positive", m.name));
            }
        }
        for s in &self.symbols {
            if !matches!(s.venue.as_str(), "upbit" | "bybit" | "bybit-linear" | "binance" | "okx") {
                return bad(format!("symbol {}: unknown venue '{}'", s.symbol, s.venue));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_config_is_offline_without_a_key_and_online_with_one() {
        let c = SignalConfig::load(None, &|_| None).unwrap();
        assert!(c.offline());
        assert_eq!((c.gateway.base_url.as_str(), c.gateway.api_key_env.as_str()), ("https://api.holysheep.ai/v1", "HOLYSHEEP_API_KEY"));
        let prices: Vec<(&str, String)> = c.models.iter().map(|m| (m.name.as_str(), m.price.input_per_m.to_string())).collect();
        assert!(prices.contains(&("deepseek-chat", "0.42".into())) && prices.contains(&("gpt-4.1", "8".into())), "{prices:?}");
        let env = |k: &str| (k == "HOLYSHEEP_API_KEY").then(|| "sk-x".to_owned());
        let c = SignalConfig::load(None, &env).unwrap();
        assert!(!c.offline());
        assert!(!format!("{c:?}").contains("sk-x"), "the key never shows");
    }

    #[test]
    fn the_key_can_come_from_a_mounted_file() {
        let dir = std::env::temp_dir().join(format!("sluice-signal-key-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let file = dir.join("api_key");
        std::fs::write(&file, "sk-from-file\n").unwrap();
        let text = SHIPPED.replace(
            "api_key_env = \"HOLYSHEEP_API_KEY\"",
            &format!("api_key_env = \"HOLYSHEEP_API_KEY\"\napi_key_file = {:?}", file.display().to_string()),
        );
        let c = SignalConfig::load(Some(&text), &|_| None).unwrap();
        assert!(!c.offline());
        let missing = text.replace(&file.display().to_string(), "/nonexistent/key");
        let e = SignalConfig::load(Some(&missing), &|_| None).unwrap_err();
        assert!(e.to_string().contains("api_key_file /nonexistent/key"), "{e}");
        // Or named by the environment, over the shipped file.
        let path = file.display().to_string();
        let c = SignalConfig::load(None, &|k| (k == "SLUICE_SIGNAL_GATEWAY_API_KEY_FILE").then(|| path.clone())).unwrap();
        assert!(!c.offline());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn unknown_models_and_venues_are_named() {
        let text = SHIPPED.replace("routine = \"deepseek-chat\"", "routine = \"gpt-9\"");
        let e = SignalConfig::load(Some(&text), &|_| None).unwrap_err();
        assert!(e.to_string().contains("routing names model 'gpt-9'"), "{e}");
        let text = SHIPPED.replacen("venue = \"binance\"", "venue = \"kraken\"", 1);
        let e = SignalConfig::load(Some(&text), &|_| None).unwrap_err();
        assert!(e.to_string().contains("unknown venue 'kraken'"), "{e}");
    }
}
