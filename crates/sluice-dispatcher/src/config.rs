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
    /// Per-exchange name of the public address this replica's requests reach the
    /// exchange from (behind NAT it differs from the bind address). IP-scoped
    /// budgets are keyed by it, so replicas behind one address share one IP budget
    /// and replicas behind different addresses keep their own. Default: the
    /// `egress` address, else "default".
    pub egress_key: BTreeMap<Exchange, String>,
    /// Replicas: one budget across every dispatcher on the same NATS. Absent: this
    /// dispatcher is alone and keeps its budgets in memory.
    pub cluster: Option<ClusterConfig>,
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
    /// Who may call, with what credential, and what for (`[[clients]]`). None: open
    /// to anyone who reaches the port (the offline default).
    pub clients: Vec<crate::auth::ClientConfig>,
    /// TLS on the gRPC port (and client certificates as credentials).
    pub tls: Option<crate::tls::TlsConfig>,
    /// Where the dispatcher says it is alive, with its metrics
    /// (`heartbeat.dispatcher.<replica>`), for the alerting service. Replicas
    /// use the cluster's NATS when this is not set; a single dispatcher sends
    /// none unless it is (`SLUICE_DISPATCHER_HEARTBEAT_NATS_URL`).
    pub heartbeat: Option<HeartbeatConfig>,
    /// The exchanges' own REST APIs, served for existing bots (`[exchange_api]`).
    pub exchange_api: Option<ExchangeApiConfig>,
}

/// Where the exchange-compatible REST face listens. A bot changes its library's
/// base URL to one of these and its key to a sluice exchange key
/// (`[[clients.exchange_keys]]`); see docs/EXISTING-BOTS.md.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ExchangeApiConfig {
    /// One address for every exchange, each under its name:
    /// `http://host:port/upbit/v1/ticker`.
    pub listen: Option<SocketAddr>,
    /// An address per exchange serving its paths at the root, for libraries
    /// that cannot take a base path.
    pub exchanges: BTreeMap<Exchange, SocketAddr>,
    /// Public endpoints too need a client's signature (default: anyone who
    /// reaches the port may read market data, as on the exchange).
    pub require_credential: bool,
}

/// The heartbeat's NATS and interval.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HeartbeatConfig {
    pub nats_url: String,
    pub nats_auth: sluice_service::credentials::NatsAuth,
    pub interval_ms: u64,
}

impl Default for HeartbeatConfig {
    fn default() -> Self {
        HeartbeatConfig { nats_url: "nats://127.0.0.1:4222".into(), nats_auth: Default::default(), interval_ms: 1_000 }
    }
}

/// How replicas find each other and share budgets (see ARCHITECTURE.md).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ClusterConfig {
    /// NATS server(s), comma-separated.
    pub nats_url: String,
    /// How to log in to NATS (`SLUICE_NATS_*` override it).
    pub nats_auth: sluice_service::credentials::NatsAuth,
    /// Prefix of every subject and key-value bucket, so deployments can share a NATS.
    pub prefix: String,
    /// How often each replica says it is alive.
    pub heartbeat_ms: u64,
    /// A replica not heard from this long is absent: owners keep its fallback
    /// share back (it may be cut off from NATS and admitting on its own).
    pub absent_after_ms: u64,
    /// An absent replica is forgotten after this long (it no longer counts when
    /// budgets are split). At least the fallback lease plus the upstream timeout.
    pub member_ttl_ms: u64,
    /// A replica cut off from NATS admits on its own share only until this long
    /// after its last contact, then nothing until it is back: so the others know
    /// when its share is theirs again, even if they cannot tell whether it died
    /// or was cut off. 0: never admit alone.
    pub fallback_lease_ms: u64,
    /// The gRPC address ("host:port") the other replicas can reach this one at,
    /// e.g. "$(POD_IP):50051". A replica that stops speaking is probed there; a
    /// refused connection proves it gone, and its share is used again at once.
    /// Default: the listen address when it names an interface (not 0.0.0.0).
    pub advertise: Option<String>,
    /// Probe silent replicas at their advertised addresses.
    pub probe_peers: bool,
    /// An owner's lease on an exchange's budgets; a dead owner's exchanges move
    /// to a live replica within about this long.
    pub lease_ttl_ms: u64,
    /// Largest clock difference assumed between replicas (leases are compared in
    /// unix time).
    pub clock_skew_ms: u64,
    /// A granted call must leave within this long, or is not sent.
    pub grant_use_within_ms: u64,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            nats_url: "nats://127.0.0.1:4222".into(),
            nats_auth: Default::default(),
            prefix: "sluice".into(),
            heartbeat_ms: 200,
            absent_after_ms: 1_000,
            member_ttl_ms: 60_000,
            fallback_lease_ms: 45_000,
            advertise: None,
            probe_peers: true,
            lease_ttl_ms: 1_000,
            clock_skew_ms: 50,
            grant_use_within_ms: 250,
        }
    }
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
            egress_key: BTreeMap::new(),
            cluster: None,
            credentials_dir: None,
            max_body_bytes: 64 * 1024,
            queue_capacity: 10_000,
            default_timeout_ms: 10_000,
            max_timeout_ms: 300_000,
            upstream_timeout_ms: 10_000,
            lost_hold_ms: 60_000,
            class_lag_ms: [0, 250, 1_000, 3_000],
            idempotency_ttl_ms: 600_000,
            idempotency_capacity: 100_000,
            idle_bucket_ms: 600_000,
            drain_grace_ms: 2_000,
            clients: Vec::new(),
            tls: None,
            heartbeat: None,
            exchange_api: None,
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
        if let Some(v) = var("NATS_URL") {
            // Naming a NATS server turns clustering on with defaults for the rest.
            cfg.cluster.get_or_insert_with(ClusterConfig::default).nats_url = v;
        }
        if let Some(v) = var("HEARTBEAT_NATS_URL") {
            cfg.heartbeat.get_or_insert_with(HeartbeatConfig::default).nats_url = v;
        }
        if let Some(h) = cfg.heartbeat.as_mut() {
            h.nats_auth.apply_env(env);
            h.nats_auth.validate().map_err(|e| ConfigError::Invalid(format!("heartbeat.{e}")))?;
            if h.interval_ms == 0 {
                return Err(ConfigError::Invalid("heartbeat.interval_ms must be positive".into()));
            }
        }
        if let Some(c) = cfg.cluster.as_mut() {
            c.nats_auth.apply_env(env);
            c.nats_auth.validate().map_err(|e| ConfigError::Invalid(format!("cluster.{e}")))?;
        }
        if let Some(v) = var("ADVERTISE") {
            let Some(c) = cfg.cluster.as_mut() else {
                return Err(ConfigError::Env {
                    var: "SLUICE_DISPATCHER_ADVERTISE".into(),
                    message: "only replicas advertise an address: set SLUICE_DISPATCHER_NATS_URL or [cluster] too".into(),
                });
            };
            c.advertise = Some(v);
        }
        if let Some(v) = var("EXCHANGE_API_LISTEN") {
            cfg.exchange_api.get_or_insert_with(ExchangeApiConfig::default).listen =
                Some(parse_env("SLUICE_DISPATCHER_EXCHANGE_API_LISTEN", &v)?);
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
            if let Some(v) = var(&format!("{up}_EGRESS_KEY")) {
                cfg.egress_key.insert(ex, v);
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
        if let Some(c) = &self.cluster {
            if c.heartbeat_ms == 0 || c.absent_after_ms <= c.heartbeat_ms {
                return Err(ConfigError::Invalid("cluster.absent_after_ms must exceed cluster.heartbeat_ms (both positive)".into()));
            }
            if c.lease_ttl_ms <= 2 * c.clock_skew_ms || c.lease_ttl_ms < 3 * c.heartbeat_ms {
                return Err(ConfigError::Invalid(
                    "cluster.lease_ttl_ms must exceed twice cluster.clock_skew_ms and three heartbeats".into(),
                ));
            }
            // A replica is forgotten only once whatever it admitted alone has reached
            // the exchange (three heartbeats: its last contact may follow the last
            // heartbeat heard by that much).
            let alone = c.fallback_lease_ms + self.upstream_timeout_ms + 3 * c.heartbeat_ms + c.clock_skew_ms;
            if c.member_ttl_ms <= c.absent_after_ms || c.member_ttl_ms < alone {
                return Err(ConfigError::Invalid(format!(
                    "cluster.member_ttl_ms must exceed cluster.absent_after_ms and be at least cluster.fallback_lease_ms + \
                     upstream_timeout_ms + 3 heartbeats + clock_skew_ms ({alone})"
                )));
            }
            if let Some(a) = &c.advertise
                && a.rsplit_once(':').is_none_or(|(host, port)| host.is_empty() || port.parse::<u16>().is_err())
            {
                return Err(ConfigError::Invalid(format!("cluster.advertise '{a}' must be host:port")));
            }
            if c.grant_use_within_ms == 0 || c.grant_use_within_ms >= c.lease_ttl_ms {
                // A granted call's ledger entry must reach NATS before a new owner takes
                // over from the ledger (see ARCHITECTURE.md).
                return Err(ConfigError::Invalid("cluster.grant_use_within_ms must be positive and below cluster.lease_ttl_ms".into()));
            }
            if c.prefix.is_empty() || !c.prefix.chars().all(|ch| ch.is_ascii_alphanumeric() || ch == '-' || ch == '_') {
                return Err(ConfigError::Invalid(format!("cluster.prefix '{}' may hold only letters, digits, '-' and '_'", c.prefix)));
            }
        }
        if !self.replica.chars().all(|ch| ch.is_ascii_alphanumeric() || ch == '-' || ch == '_') || self.replica.is_empty() {
            // The name is part of NATS subjects.
            return Err(ConfigError::Invalid(format!("replica '{}' may hold only letters, digits, '-' and '_'", self.replica)));
        }
        if let Some(api) = &self.exchange_api
            && api.listen.is_none()
            && api.exchanges.is_empty()
        {
            return Err(ConfigError::Invalid("exchange_api: give listen, or an address per exchange in [exchange_api.exchanges]".into()));
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
        let e = DispatcherConfig::load(Some("[cluster]\nheartbeat_ms = 50\nlease_ttl_ms = 300\ngrant_use_within_ms = 500"), &env(&[]))
            .unwrap_err();
        assert!(e.to_string().contains("grant_use_within_ms"), "{e}");
        let e = DispatcherConfig::load(Some("[cluster]\nmember_ttl_ms = 30000"), &env(&[])).unwrap_err();
        assert!(e.to_string().contains("fallback_lease_ms"), "{e}");
        let e = DispatcherConfig::load(
            None,
            &env(&[("SLUICE_DISPATCHER_ADVERTISE", "10.1.2.3"), ("SLUICE_DISPATCHER_NATS_URL", "nats://n:4222")]),
        )
        .unwrap_err();
        assert!(e.to_string().contains("cluster.advertise '10.1.2.3'"), "{e}");
        let e = DispatcherConfig::load(Some("[exchange_api]\nrequire_credential = true"), &env(&[])).unwrap_err();
        assert!(e.to_string().contains("exchange_api: give listen"), "{e}");
        let e = DispatcherConfig::load(None, &env(&[("SLUICE_DISPATCHER_REPLICA", "a.b")])).unwrap_err();
        assert!(e.to_string().contains("replica 'a.b'"), "{e}");
    }

    #[test]
    fn a_nats_url_turns_clustering_on() {
        let cfg = DispatcherConfig::load(None, &env(&[("SLUICE_DISPATCHER_NATS_URL", "nats://127.0.0.1:4333")])).unwrap();
        let c = cfg.cluster.unwrap();
        assert_eq!(c.nats_url, "nats://127.0.0.1:4333");
        assert_eq!(c.lease_ttl_ms, 1_000);
    }
}
