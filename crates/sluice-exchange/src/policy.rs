//! Rate-limit policies as data. The shipped file (`config/exchanges.toml`) is read
//! first; deployment overrides are merged over it key by key, so a deployment changes
//! one number without copying the rest.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::Deserialize;
use sluice_domain::Exchange;
use sluice_rate::adaptive::AdaptiveSpec;
use sluice_rate::bucket::{BucketSpec, WindowSpec};

use crate::routes::{RouteError, RouteTable};

/// What a budget is counted per.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    /// Per egress IP address.
    Ip,
    /// Per API account (Upbit: per pocket).
    Account,
    /// Per WebSocket connection (named by the caller).
    Connection,
}

impl Scope {
    pub fn as_str(self) -> &'static str {
        match self {
            Scope::Ip => "ip",
            Scope::Account => "account",
            Scope::Connection => "connection",
        }
    }
}

/// How an exchange expects request bodies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BodyFormat {
    Json,
    Form,
}

impl BodyFormat {
    pub fn content_type(self) -> &'static str {
        match self {
            BodyFormat::Json => "application/json; charset=utf-8",
            BodyFormat::Form => "application/x-www-form-urlencoded",
        }
    }
}

/// A policy file that cannot be used; the message names the key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    #[error("policy file is not valid TOML: {0}")]
    Toml(String),
    #[error("policy file: {0}")]
    Shape(String),
    #[error("{exchange}: {message}")]
    Invalid { exchange: String, message: String },
    #[error(transparent)]
    Route(#[from] RouteError),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    adaptive: Option<AdaptiveFile>,
    #[serde(default)]
    exchanges: BTreeMap<String, ExchangeFile>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct AdaptiveFile {
    cut: f64,
    floor: f64,
    hold_ms: u64,
    step: f64,
    interval_ms: u64,
    #[serde(default = "default_probe_below")]
    probe_below: f64,
    #[serde(default = "default_remember_ms")]
    remember_ms: u64,
}

fn default_probe_below() -> f64 {
    AdaptiveSpec::default().probe_below
}

fn default_remember_ms() -> u64 {
    AdaptiveSpec::default().remember.as_millis() as u64
}

impl From<AdaptiveFile> for AdaptiveSpec {
    fn from(a: AdaptiveFile) -> Self {
        AdaptiveSpec {
            cut: a.cut,
            floor: a.floor,
            hold: Duration::from_millis(a.hold_ms),
            step: a.step,
            interval: Duration::from_millis(a.interval_ms),
            probe_below: a.probe_below,
            remember: Duration::from_millis(a.remember_ms),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ExchangeFile {
    #[serde(default)]
    source: Option<String>,
    base_url: String,
    #[serde(default)]
    version_prefixes: Vec<String>,
    body_format: BodyFormat,
    #[serde(default)]
    recv_window_ms: Option<u64>,
    throttle_pause_ms: u64,
    ban_default_ms: u64,
    grant_ttl_ms: u64,
    network_jitter_ms: u64,
    /// The exchange counts in calendar windows (Binance), not sliding ones.
    #[serde(default)]
    calendar_windows: bool,
    #[serde(default)]
    default_group: Option<String>,
    #[serde(default)]
    adaptive: Option<AdaptiveFile>,
    groups: BTreeMap<String, GroupFile>,
    #[serde(default)]
    routes: Vec<RouteFile>,
    #[serde(default)]
    extra_routes: Vec<RouteFile>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct GroupFile {
    scope: Scope,
    windows: Vec<WindowFile>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct WindowFile {
    limit: u64,
    period_ms: u64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RouteFile {
    pub(crate) method: String,
    pub(crate) path: String,
    #[serde(default)]
    pub(crate) auth: Auth,
    pub(crate) class: ClassName,
    pub(crate) charges: Vec<ChargeFile>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ChargeFile {
    pub(crate) group: String,
    #[serde(default = "one")]
    pub(crate) cost: u64,
    #[serde(default)]
    pub(crate) tiers_param: Option<String>,
    #[serde(default)]
    pub(crate) count_param: Option<String>,
    #[serde(default)]
    pub(crate) tiers: Vec<[u64; 2]>,
    #[serde(default)]
    pub(crate) absent_param: Option<String>,
    #[serde(default)]
    pub(crate) absent_cost: Option<u64>,
    #[serde(default)]
    pub(crate) partition: Option<String>,
}

fn one() -> u64 {
    1
}

/// Whether a route needs the caller's account and a signature.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Auth {
    /// Public endpoint.
    #[default]
    None,
    /// Private endpoint: signed with the named account's credentials.
    Signed,
}

/// Priority class names as written in the policy file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum ClassName {
    Order,
    Account,
    MarketData,
    Backfill,
}

impl From<ClassName> for sluice_rate::scheduler::Class {
    fn from(c: ClassName) -> Self {
        use sluice_rate::scheduler::Class;
        match c {
            ClassName::Order => Class::Order,
            ClassName::Account => Class::Account,
            ClassName::MarketData => Class::MarketData,
            ClassName::Backfill => Class::Backfill,
        }
    }
}

/// One group: a scope and the windows of its budget.
#[derive(Debug, Clone, PartialEq)]
pub struct GroupPolicy {
    pub scope: Scope,
    pub windows: Vec<WindowSpec>,
}

/// Everything sluice knows about one exchange.
#[derive(Debug, Clone)]
pub struct ExchangePolicy {
    pub exchange: Exchange,
    /// Where the numbers came from.
    pub source: Option<String>,
    pub base_url: String,
    pub version_prefixes: Vec<String>,
    pub body_format: BodyFormat,
    /// Bybit and Binance: how long a signed request stays valid.
    pub recv_window: Option<Duration>,
    /// Pause after a 429 that names no Retry-After.
    pub throttle_pause: Duration,
    /// Ban length when a ban names no end (Upbit 418, Bybit 403).
    pub ban_default: Duration,
    /// A granted token must be used within this.
    pub grant_ttl: Duration,
    /// Bound on send-to-arrival variation for granted tokens.
    pub network_jitter: Duration,
    /// The exchange counts in calendar windows: usage headers are read against
    /// our count in the same calendar window.
    pub calendar_windows: bool,
    /// Group charged by endpoints missing from the route table; `None` refuses them.
    pub default_group: Option<String>,
    pub adaptive: AdaptiveSpec,
    pub groups: BTreeMap<String, GroupPolicy>,
    pub routes: RouteTable,
}

impl ExchangePolicy {
    /// The bucket specification for a group.
    pub fn bucket_spec(&self, group: &str) -> Option<BucketSpec> {
        self.groups.get(group).map(|g| BucketSpec {
            windows: g.windows.clone(),
            adaptive: self.adaptive.clone(),
            calendar: self.calendar_windows,
        })
    }
}

/// Policies for every configured exchange.
#[derive(Debug, Clone)]
pub struct Policies {
    exchanges: BTreeMap<Exchange, ExchangePolicy>,
}

impl Policies {
    /// The shipped policies, unchanged.
    pub fn shipped() -> Result<Self, PolicyError> {
        Self::load(crate::SHIPPED_POLICIES, &[])
    }

    /// Reads `base`, then merges each override over it in order.
    pub fn load(base: &str, overrides: &[&str]) -> Result<Self, PolicyError> {
        let mut table: toml::Table = base.parse().map_err(|e: toml::de::Error| PolicyError::Toml(e.to_string()))?;
        for o in overrides {
            let over: toml::Table = o.parse().map_err(|e: toml::de::Error| PolicyError::Toml(e.to_string()))?;
            merge(&mut table, over);
        }
        let file: File = toml::Value::Table(table).try_into().map_err(|e: toml::de::Error| PolicyError::Shape(e.to_string()))?;
        let adaptive: AdaptiveSpec = file.adaptive.map(Into::into).unwrap_or_default();
        let mut exchanges = BTreeMap::new();
        for (name, ef) in file.exchanges {
            let exchange: Exchange = name.parse().map_err(|e: sluice_domain::UnknownExchange| PolicyError::Shape(e.to_string()))?;
            exchanges.insert(exchange, build(exchange, ef, &adaptive)?);
        }
        Ok(Policies { exchanges })
    }

    pub fn get(&self, exchange: Exchange) -> Option<&ExchangePolicy> {
        self.exchanges.get(&exchange)
    }

    pub fn iter(&self) -> impl Iterator<Item = &ExchangePolicy> {
        self.exchanges.values()
    }

    /// Replaces an exchange's base URL (pointing it at the simulator is configuration).
    pub fn set_base_url(&mut self, exchange: Exchange, url: String) {
        if let Some(p) = self.exchanges.get_mut(&exchange) {
            p.base_url = url;
        }
    }
}

fn invalid(exchange: Exchange, message: impl Into<String>) -> PolicyError {
    PolicyError::Invalid { exchange: exchange.to_string(), message: message.into() }
}

fn build(exchange: Exchange, f: ExchangeFile, default_adaptive: &AdaptiveSpec) -> Result<ExchangePolicy, PolicyError> {
    let adaptive: AdaptiveSpec = f.adaptive.map(Into::into).unwrap_or_else(|| default_adaptive.clone());
    adaptive.validate().map_err(|m| invalid(exchange, m))?;
    if !(f.base_url.starts_with("http://") || f.base_url.starts_with("https://")) {
        return Err(invalid(exchange, format!("base_url '{}' must start with http:// or https://", f.base_url)));
    }
    for p in &f.version_prefixes {
        if !p.starts_with('/') || p.ends_with('/') {
            return Err(invalid(exchange, format!("version prefix '{p}' must start with '/' and not end with one")));
        }
    }
    let mut groups = BTreeMap::new();
    for (name, g) in f.groups {
        if g.windows.is_empty() {
            return Err(invalid(exchange, format!("group '{name}' has no windows")));
        }
        let mut windows = Vec::new();
        for w in g.windows {
            if w.limit == 0 || w.period_ms == 0 {
                return Err(invalid(exchange, format!("group '{name}': limit and period_ms must be positive")));
            }
            windows.push(WindowSpec { limit: w.limit, period: Duration::from_millis(w.period_ms) });
        }
        groups.insert(name, GroupPolicy { scope: g.scope, windows });
    }
    if let Some(d) = &f.default_group
        && !groups.contains_key(d)
    {
        return Err(invalid(exchange, format!("default_group '{d}' is not a group")));
    }
    let mut route_files = f.routes;
    route_files.extend(f.extra_routes);
    let routes = RouteTable::build(exchange, &route_files, &groups)?;
    Ok(ExchangePolicy {
        exchange,
        source: f.source,
        base_url: f.base_url.trim_end_matches('/').to_owned(),
        version_prefixes: f.version_prefixes,
        body_format: f.body_format,
        recv_window: f.recv_window_ms.map(Duration::from_millis),
        throttle_pause: Duration::from_millis(f.throttle_pause_ms),
        ban_default: Duration::from_millis(f.ban_default_ms),
        grant_ttl: Duration::from_millis(f.grant_ttl_ms),
        network_jitter: Duration::from_millis(f.network_jitter_ms),
        calendar_windows: f.calendar_windows,
        default_group: f.default_group,
        adaptive,
        groups,
        routes,
    })
}

/// Merges `over` into `base`: tables recursively, anything else replaced. Every
/// sluice configuration file layers this way over its shipped defaults.
pub fn merge(base: &mut toml::Table, over: toml::Table) {
    for (k, v) in over {
        match (base.get_mut(&k), v) {
            (Some(toml::Value::Table(b)), toml::Value::Table(o)) => merge(b, o),
            (_, v) => {
                base.insert(k, v);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_policies_load_with_the_brief_numbers() {
        let p = Policies::shipped().unwrap();
        let upbit = p.get(Exchange::Upbit).unwrap();
        assert_eq!(upbit.groups["ticker"].windows, vec![WindowSpec { limit: 10, period: Duration::from_secs(1) }]);
        assert_eq!(upbit.groups["order"].windows[0].limit, 12);
        assert_eq!(upbit.groups["order-cancel-all"].windows[0].period, Duration::from_secs(2));
        assert_eq!(upbit.groups["ws-message"].windows.len(), 2);
        let binance = p.get(Exchange::Binance).unwrap();
        assert_eq!(binance.groups["weight"].windows[0].limit, 6000);
        assert_eq!(binance.groups["orders"].windows[1].period, Duration::from_secs(86_400));
        let bybit = p.get(Exchange::Bybit).unwrap();
        assert_eq!(bybit.groups["ip"].windows[0], WindowSpec { limit: 600, period: Duration::from_secs(5) });
        assert_eq!(p.get(Exchange::Okx).unwrap().groups["market-ticker"].windows[0].limit, 20);
        assert!((upbit.adaptive.cut - 0.8).abs() < 1e-9);
        assert_eq!(upbit.adaptive.hold, Duration::from_secs(300));
        assert_eq!(p.iter().count(), 4);
    }

    #[test]
    fn overrides_change_one_number_and_keep_the_rest() {
        let over = r#"
            [exchanges.upbit.groups.ticker]
            scope = "ip"
            windows = [{ limit = 8, period_ms = 1000 }]
            [exchanges.upbit]
            base_url = "http://127.0.0.1:9999"
        "#;
        let p = Policies::load(crate::SHIPPED_POLICIES, &[over]).unwrap();
        let upbit = p.get(Exchange::Upbit).unwrap();
        assert_eq!(upbit.groups["ticker"].windows[0].limit, 8);
        assert_eq!(upbit.groups["candle"].windows[0].limit, 10);
        assert_eq!(upbit.base_url, "http://127.0.0.1:9999");
    }

    #[test]
    fn bad_files_name_what_is_wrong() {
        let e = Policies::load("[exchanges.kraken]\nbase_url='x'", &[]).unwrap_err();
        assert!(e.to_string().contains("kraken"), "{e}");
        let over = "[exchanges.upbit.groups.ticker]\nscope='ip'\nwindows=[{limit=0, period_ms=1000}]";
        let e = Policies::load(crate::SHIPPED_POLICIES, &[over]).unwrap_err();
        assert!(e.to_string().contains("ticker"), "{e}");
        let over = "[exchanges.upbit]\ndefault_group = 'nope'";
        let e = Policies::load(crate::SHIPPED_POLICIES, &[over]).unwrap_err();
        assert!(e.to_string().contains("nope"), "{e}");
        let e = Policies::load("not toml ===", &[]).unwrap_err();
        assert!(matches!(e, PolicyError::Toml(_)));
        let over = "[exchanges.upbit]\nbogus_key = 1";
        let e = Policies::load(crate::SHIPPED_POLICIES, &[over]).unwrap_err();
        assert!(e.to_string().contains("bogus_key"), "{e}");
    }
}
