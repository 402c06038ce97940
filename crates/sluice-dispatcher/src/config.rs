//! The dispatcher's configuration: one typed struct read from an optional TOML file
//! and `SLUICE_DISPATCHER_*` environment variables (environment wins). The
//! environment is passed in as a function, so tests never touch the process's own.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;
use sluice_domain::Exchange;

/// A configuration that cannot be used; the message names the key.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("config file: {0}")]
    Parse(String),
    #[error("environment variable {var}: {message}")]
    Env { var: String, message: String },
    #[error("config: {0}")]
    Invalid(String),
}

/// Everything the dispatcher runs with.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DispatcherConfig {
    /// gRPC listen address.
    pub listen: SocketAddr,
    /// `/metrics`, `/healthz`, `/readyz`.
    pub ops_listen: SocketAddr,
    /// This replica's name (shown in budget status).
    pub replica: String,
    /// Policy files merged over the shipped `config/exchanges.toml`, in order.
    pub policy_files: Vec<PathBuf>,
    /// Per-exchange base URL overrides (pointing at the simulator is configuration).
    pub base_urls: BTreeMap<Exchange, String>,
    /// Per-exchange egress address: requests leave from it, and IP-scoped budgets
    /// are kept per egress address.
    pub egress: BTreeMap<Exchange, IpAddr>,
    /// Directory of mounted credentials: `<dir>/<exchange>/<account>/{api_key,secret,passphrase}`.
    pub credentials_dir: Option<PathBuf>,
    /// Largest request body accepted.
    pub max_body_bytes: usize,
    /// Waiting requests per exchange beyond which calls are refused.
    pub queue_capacity: usize,
    /// Deadline for calls that name none.
    pub default_timeout_ms: u64,
    /// Longest deadline a call may ask for.
    pub max_timeout_ms: u64,
    /// Cap on one HTTP exchange with an exchange.
    pub upstream_timeout_ms: u64,
    /// How long a call with an unknown outcome still counts against budgets.
    pub lost_hold_ms: u64,
    /// Ordering lag per priority class (order, account, market data, backfill).
    pub class_lag_ms: [u64; 4],
    /// How long an idempotency key's answer is kept.
    pub idempotency_ttl_ms: u64,
    /// Most idempotency keys remembered at once.
    pub idempotency_capacity: usize,
    /// Connection-scoped budgets idle this long are dropped.
    pub idle_bucket_ms: u64,
    /// After shutdown begins, health says NOT_SERVING this long before the server
    /// stops accepting (so load balancers move traffic away first).
    pub drain_grace_ms: u64,
}

impl Default for DispatcherConfig {
    fn default() -> Self {
        DispatcherConfig {
            listen: "0.0.0.0:50051".parse().expect("literal"),
            ops_listen: "0.0.0.0:9464".parse().expect("literal"),
            replica: "dispatcher-0".into(),
            policy_files: Vec::new(),
            base_urls: BTreeMap::new(),
            egress: BTreeMap::new(),
            credentials_dir: None,
            max_body_bytes: 64 * 1024,
            queue_capacity: 10_000,
            default_timeout_ms: 10_000,
            max_timeout_ms: 300_000,
            upstream_timeout_ms: 30_000,
            lost_hold_ms: 60_000,
            class_lag_ms: [0, 250, 1_000, 3_000],
            idempotency_ttl_ms: 600_000,
            idempotency_capacity: 100_000,
            idle_bucket_ms: 600_000,
            drain_grace_ms: 2_000,
        }
    }
}

fn parse_env<T: std::str::FromStr>(var: &str, v: &str) -> Result<T, ConfigError>
where
    T::Err: std::fmt::Display,
{
    v.parse().map_err(|e: T::Err| ConfigError::Env { var: var.to_owned(), message: e.to_string() })
}

impl DispatcherConfig {
    /// Reads `file` (if any), then applies the environment.
    pub fn load(file: Option<&str>, env: &dyn Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let mut cfg: DispatcherConfig = match file {
            Some(text) => toml::from_str(text).map_err(|e| ConfigError::Parse(e.to_string()))?,
            None => DispatcherConfig::default(),
        };
        let var = |name: &str| env(&format!("SLUICE_DISPATCHER_{name}"));
        if let Some(v) = var("LISTEN") {
            cfg.listen = parse_env("SLUICE_DISPATCHER_LISTEN", &v)?;
        }
        if let Some(v) = var("OPS_LISTEN") {
            cfg.ops_listen = parse_env("SLUICE_DISPATCHER_OPS_LISTEN", &v)?;
        }
        if let Some(v) = var("REPLICA") {
            cfg.replica = v;
        }
        if let Some(v) = var("CREDENTIALS_DIR") {
            cfg.credentials_dir = Some(PathBuf::from(v));
        }
        if let Some(v) = var("POLICY_FILES") {
            cfg.policy_files = v.split(':').filter(|p| !p.is_empty()).map(PathBuf::from).collect();
        }
        for ex in Exchange::ALL {
            let up = ex.as_str().to_ascii_uppercase();
            if let Some(v) = var(&format!("{up}_BASE_URL")) {
                cfg.base_urls.insert(ex, v);
            }
            if let Some(v) = var(&format!("{up}_EGRESS")) {
                cfg.egress.insert(ex, parse_env(&format!("SLUICE_DISPATCHER_{up}_EGRESS"), &v)?);
            }
        }
        cfg.validate()?;
        Ok(cfg)
    }

    fn validate(&self) -> Result<(), ConfigError> {
        if self.max_body_bytes == 0 || self.queue_capacity == 0 {
            return Err(ConfigError::Invalid("max_body_bytes and queue_capacity must be positive".into()));
        }
        if self.default_timeout_ms == 0 || self.default_timeout_ms > self.max_timeout_ms {
            return Err(ConfigError::Invalid("default_timeout_ms must be positive and at most max_timeout_ms".into()));
        }
        for (ex, url) in &self.base_urls {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return Err(ConfigError::Invalid(format!("base_urls.{ex} '{url}' must start with http:// or https://")));
            }
        }
        Ok(())
    }

    pub fn default_timeout(&self) -> Duration {
        Duration::from_millis(self.default_timeout_ms)
    }

    pub fn max_timeout(&self) -> Duration {
        Duration::from_millis(self.max_timeout_ms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let m: HashMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        move |k| m.get(k).cloned()
    }

    #[test]
    fn file_then_environment() {
        let file = r#"
            listen = "127.0.0.1:7000"
            replica = "a"
            [base_urls]
            upbit = "http://127.0.0.1:18081"
        "#;
        let cfg = DispatcherConfig::load(
            Some(file),
            &env(&[("SLUICE_DISPATCHER_REPLICA", "b"), ("SLUICE_DISPATCHER_BINANCE_EGRESS", "10.0.0.7")]),
        )
        .unwrap();
        assert_eq!(cfg.listen.port(), 7000);
        assert_eq!(cfg.replica, "b", "environment wins");
        assert_eq!(cfg.base_urls[&Exchange::Upbit], "http://127.0.0.1:18081");
        assert_eq!(cfg.egress[&Exchange::Binance].to_string(), "10.0.0.7");
        assert_eq!(cfg.max_body_bytes, 64 * 1024, "defaults fill the rest");
    }

    #[test]
    fn errors_name_the_key() {
        let e = DispatcherConfig::load(None, &env(&[("SLUICE_DISPATCHER_LISTEN", "nowhere")])).unwrap_err();
        assert!(e.to_string().contains("SLUICE_DISPATCHER_LISTEN"), "{e}");
        let e = DispatcherConfig::load(Some("bogus = 1"), &env(&[])).unwrap_err();
        assert!(e.to_string().contains("bogus"), "{e}");
        let e = DispatcherConfig::load(Some("[base_urls]\nokx = 'ftp://x'"), &env(&[])).unwrap_err();
        assert!(e.to_string().contains("base_urls.okx"), "{e}");
    }
}
