//! Route tables: method + path template (version prefix stripped) to the groups a
//! request charges and its weight. Matching is by template segments (matchit, the
//! router under axum), never by substring: `/v1/candles/minutes/5` is Upbit's candle
//! group because it matches `/candles/minutes/{unit}`.

use std::collections::{BTreeMap, HashMap};

use sluice_domain::Exchange;
use sluice_rate::scheduler::Class;

use crate::params::Params;
use crate::policy::{Auth, ChargeFile, ExchangePolicy, GroupPolicy, RouteFile, Scope};

/// HTTP methods the dispatcher forwards.
pub const METHODS: [&str; 4] = ["GET", "POST", "PUT", "DELETE"];

/// Why a request could not be mapped to a budget.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RouteError {
    #[error("method '{0}' is not one of GET, POST, PUT, DELETE")]
    BadMethod(String),
    #[error("path '{path}' is malformed: {why}")]
    BadPath { path: String, why: &'static str },
    #[error("{exchange} paths start with {prefixes}; '{path}' does not")]
    NoVersionPrefix { exchange: Exchange, path: String, prefixes: String },
    #[error("{exchange} has no route for {method} {path}; add it to the exchange policy's routes or set default_group")]
    UnknownEndpoint { exchange: Exchange, method: String, path: String },
    #[error("{exchange} {route} needs parameter '{param}' to {purpose}")]
    MissingParam { exchange: Exchange, route: String, param: String, purpose: &'static str },
    #[error("{exchange} has no rate group '{group}' ({detail})")]
    UnknownGroup { exchange: Exchange, group: String, detail: String },
    #[error("{exchange} route table: {message}")]
    Config { exchange: Exchange, message: String },
}

#[derive(Debug, Clone)]
struct Charge {
    group: String,
    cost: u64,
    tiers_param: Option<String>,
    count_param: Option<String>,
    tiers: Vec<[u64; 2]>,
    absent_param: Option<String>,
    absent_cost: Option<u64>,
    partition: Option<String>,
}

impl From<&ChargeFile> for Charge {
    fn from(c: &ChargeFile) -> Self {
        Charge {
            group: c.group.clone(),
            cost: c.cost,
            tiers_param: c.tiers_param.clone(),
            count_param: c.count_param.clone(),
            tiers: c.tiers.clone(),
            absent_param: c.absent_param.clone(),
            absent_cost: c.absent_cost,
            partition: c.partition.clone(),
        }
    }
}

impl Charge {
    fn tier(&self, n: u64) -> u64 {
        self.tiers.iter().find(|[bound, _]| n <= *bound).or(self.tiers.last()).map_or(self.cost, |[_, c]| *c)
    }

    fn cost(&self, params: &Params) -> u64 {
        if let Some(p) = &self.absent_param {
            let counted_present = self.count_param.as_ref().is_some_and(|c| params.get(c).is_some());
            if params.get(p).is_none() && !counted_present {
                return self.absent_cost.unwrap_or(self.cost);
            }
        }
        if let Some(p) = &self.count_param
            && let Some(v) = params.get(p)
        {
            let n = serde_json::from_str::<Vec<serde_json::Value>>(v).map(|a| a.len()).unwrap_or_else(|_| v.split(',').count());
            return self.tier(n as u64);
        }
        if let Some(p) = &self.tiers_param
            && let Some(v) = params.get(p)
        {
            // An unparsable value costs the most: the exchange may still count it.
            return v.trim().parse::<u64>().map_or_else(|_| self.tier(u64::MAX), |n| self.tier(n));
        }
        self.cost
    }
}

#[derive(Debug, Clone)]
struct Route {
    method: String,
    template: String,
    auth: Auth,
    class: Class,
    charges: Vec<Charge>,
}

/// The route table of one exchange.
#[derive(Debug, Clone, Default)]
pub struct RouteTable {
    routes: Vec<Route>,
    routers: HashMap<String, matchit::Router<usize>>,
}

/// A budget a request charges.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ResolvedCharge {
    pub group: String,
    pub scope: Scope,
    pub cost: u64,
    /// Splits the group into one bucket per value (OKX: per instrument).
    pub partition: Option<String>,
}

/// What a request is, for the dispatcher.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resolved {
    /// `METHOD /template`, version stripped (for logs and metrics labels).
    pub route: String,
    pub auth: Auth,
    pub class: Class,
    pub charges: Vec<ResolvedCharge>,
    /// True when no route matched and the exchange's default group was used.
    pub defaulted: bool,
}

fn template_params(t: &str) -> impl Iterator<Item = &str> {
    t.split('{').skip(1).filter_map(|s| s.split_once('}').map(|(name, _)| name))
}

fn fill(exchange: Exchange, route: &str, template: &str, params: &Params, purpose: &'static str) -> Result<String, RouteError> {
    let mut out = template.to_owned();
    for name in template_params(template) {
        let value = params.get(name).ok_or_else(|| RouteError::MissingParam {
            exchange,
            route: route.to_owned(),
            param: name.to_owned(),
            purpose,
        })?;
        out = out.replace(&format!("{{{name}}}"), value);
    }
    Ok(out)
}

/// Checks a request path: absolute, no query or fragment, no dot segments, no
/// whitespace or control characters, bounded length.
pub fn validate_path(path: &str) -> Result<(), RouteError> {
    let bad = |why| Err(RouteError::BadPath { path: path.chars().take(100).collect(), why });
    if path.is_empty() || !path.starts_with('/') {
        return bad("it must start with '/'");
    }
    if path.len() > 1024 {
        return bad("it is longer than 1024 bytes");
    }
    if path.contains(['?', '#']) {
        return bad("put the query in the query field, not in the path");
    }
    if path.chars().any(|c| c.is_whitespace() || c.is_control() || !c.is_ascii()) {
        return bad("it contains whitespace, control or non-ASCII characters");
    }
    if path.split('/').any(|s| s == "." || s == "..") || path.contains("//") {
        return bad("it contains an empty, '.' or '..' segment");
    }
    Ok(())
}

/// Normalises and checks a method name.
pub fn validate_method(method: &str) -> Result<&'static str, RouteError> {
    METHODS.into_iter().find(|m| m.eq_ignore_ascii_case(method)).ok_or_else(|| RouteError::BadMethod(method.to_owned()))
}

impl RouteTable {
    pub(crate) fn build(exchange: Exchange, files: &[RouteFile], groups: &BTreeMap<String, GroupPolicy>) -> Result<Self, RouteError> {
        let config = |message: String| RouteError::Config { exchange, message };
        let mut table = RouteTable::default();
        for f in files {
            let method = validate_method(&f.method).map_err(|e| config(e.to_string()))?;
            validate_path(&f.path.replace(['{', '}'], "")).map_err(|e| config(e.to_string()))?;
            if f.charges.is_empty() {
                return Err(config(format!("{method} {} charges no group", f.path)));
            }
            for c in &f.charges {
                let templated = c.group.contains('{');
                if !templated && !groups.contains_key(&c.group) {
                    return Err(config(format!("{method} {} charges unknown group '{}'", f.path, c.group)));
                }
                if templated && !groups.keys().any(|g| could_fill(&c.group, g)) {
                    return Err(config(format!("{method} {}: no group can match template '{}'", f.path, c.group)));
                }
                if (c.tiers_param.is_some() || c.count_param.is_some()) && c.tiers.is_empty() {
                    return Err(config(format!("{method} {}: tiers_param or count_param needs tiers", f.path)));
                }
            }
            let index = table.routes.len();
            table.routes.push(Route {
                method: method.to_owned(),
                template: f.path.clone(),
                auth: f.auth,
                class: f.class.into(),
                charges: f.charges.iter().map(Charge::from).collect(),
            });
            table
                .routers
                .entry(method.to_owned())
                .or_default()
                .insert(f.path.clone(), index)
                .map_err(|e| config(format!("{method} {}: {e}", f.path)))?;
        }
        Ok(table)
    }

    /// Number of routes.
    pub fn len(&self) -> usize {
        self.routes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }

    /// `METHOD /template` of every route, for listings.
    pub fn describe(&self) -> impl Iterator<Item = String> + '_ {
        self.routes.iter().map(|r| format!("{} {}", r.method, r.template))
    }
}

/// Whether `template` (with `{x}` holes) could produce `group`.
fn could_fill(template: &str, group: &str) -> bool {
    let fixed = template.split_once('{').map_or(template, |(head, _)| head);
    let tail = template.rsplit_once('}').map_or("", |(_, t)| t);
    group.starts_with(fixed) && group.ends_with(tail) && group.len() > fixed.len() + tail.len()
}

impl ExchangePolicy {
    /// Strips the version prefix (`/v1/ticker` to `/ticker`).
    pub fn strip_version<'p>(&self, path: &'p str) -> Result<&'p str, RouteError> {
        if self.version_prefixes.is_empty() {
            return Ok(path);
        }
        for p in &self.version_prefixes {
            if let Some(rest) = path.strip_prefix(p.as_str())
                && rest.starts_with('/')
            {
                return Ok(rest);
            }
        }
        Err(RouteError::NoVersionPrefix { exchange: self.exchange, path: path.to_owned(), prefixes: self.version_prefixes.join(" or ") })
    }

    /// Maps a request to the groups it charges, its weight, auth and class.
    pub fn resolve(&self, method: &str, path: &str, params: &Params) -> Result<Resolved, RouteError> {
        let method = validate_method(method)?;
        validate_path(path)?;
        let stripped = self.strip_version(path)?;
        let found = self.routes.routers.get(method).and_then(|r| r.at(stripped).ok()).map(|m| &self.routes.routes[*m.value]);
        let Some(route) = found else {
            let Some(group) = &self.default_group else {
                return Err(RouteError::UnknownEndpoint { exchange: self.exchange, method: method.to_owned(), path: path.to_owned() });
            };
            let scope = self.groups[group].scope;
            return Ok(Resolved {
                route: format!("{method} {stripped}"),
                auth: Auth::None,
                class: Class::MarketData,
                charges: vec![ResolvedCharge { group: group.clone(), scope, cost: 1, partition: None }],
                defaulted: true,
            });
        };
        let name = format!("{} {}", route.method, route.template);
        let mut charges = Vec::with_capacity(route.charges.len());
        for c in &route.charges {
            let group = fill(self.exchange, &name, &c.group, params, "choose its rate group")?;
            let Some(g) = self.groups.get(&group) else {
                let detail = template_params(&c.group)
                    .map(|p| format!("{p}='{}' is not one this route knows", params.get(p).unwrap_or_default()))
                    .collect::<Vec<_>>()
                    .join(", ");
                return Err(RouteError::UnknownGroup { exchange: self.exchange, group, detail });
            };
            let partition = match &c.partition {
                Some(t) => Some(fill(self.exchange, &name, t, params, "pick its per-instrument budget")?),
                None => None,
            };
            charges.push(ResolvedCharge { group, scope: g.scope, cost: c.cost(params), partition });
        }
        Ok(Resolved { route: name, auth: route.auth, class: route.class, charges, defaulted: false })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::Policies;

    fn policies() -> Policies {
        Policies::shipped().unwrap()
    }

    fn resolve(ex: Exchange, method: &str, path: &str, query: &str, body: &str) -> Result<Resolved, RouteError> {
        let p = policies();
        let policy = p.get(ex).unwrap();
        let mut params = Params::from_query(query).unwrap();
        if !body.is_empty() {
            match policy.body_format {
                crate::policy::BodyFormat::Json => params.add_json_body(body.as_bytes()).unwrap(),
                crate::policy::BodyFormat::Form => params.add_form_body(body.as_bytes()).unwrap(),
            }
        }
        policy.resolve(method, path, &params)
    }

    fn groups(r: &Resolved) -> Vec<(String, u64)> {
        r.charges.iter().map(|c| (c.group.clone(), c.cost)).collect()
    }

    #[test]
    fn table_of_routes() {
        struct Case {
            ex: Exchange,
            method: &'static str,
            path: &'static str,
            query: &'static str,
            body: &'static str,
            want: &'static [(&'static str, u64)],
        }
        let cases = [
            Case {
                ex: Exchange::Upbit,
                method: "GET",
                path: "/v1/candles/minutes/5",
                query: "market=KRW-BTC",
                body: "",
                want: &[("candle", 1)],
            },
            Case { ex: Exchange::Upbit, method: "get", path: "/v1/ticker", query: "markets=KRW-BTC", body: "", want: &[("ticker", 1)] },
            Case {
                ex: Exchange::Upbit,
                method: "POST",
                path: "/v1/orders",
                query: "",
                body: r#"{"market":"KRW-BTC"}"#,
                want: &[("order", 1)],
            },
            Case { ex: Exchange::Upbit, method: "DELETE", path: "/v1/orders/open", query: "", body: "", want: &[("order-cancel-all", 1)] },
            Case { ex: Exchange::Upbit, method: "DELETE", path: "/v1/order", query: "uuid=x", body: "", want: &[("default", 1)] },
            Case { ex: Exchange::Binance, method: "GET", path: "/api/v3/depth", query: "symbol=BTCUSDT", body: "", want: &[("weight", 5)] },
            Case {
                ex: Exchange::Binance,
                method: "GET",
                path: "/api/v3/depth",
                query: "symbol=BTCUSDT&limit=500",
                body: "",
                want: &[("weight", 25)],
            },
            Case {
                ex: Exchange::Binance,
                method: "GET",
                path: "/api/v3/depth",
                query: "symbol=BTCUSDT&limit=5000",
                body: "",
                want: &[("weight", 250)],
            },
            Case { ex: Exchange::Binance, method: "GET", path: "/api/v3/ticker/24hr", query: "", body: "", want: &[("weight", 80)] },
            Case {
                ex: Exchange::Binance,
                method: "GET",
                path: "/api/v3/ticker/24hr",
                query: "symbol=BTCUSDT",
                body: "",
                want: &[("weight", 2)],
            },
            Case {
                ex: Exchange::Binance,
                method: "GET",
                path: "/api/v3/ticker/24hr",
                query: r#"symbols=["A","B"]"#,
                body: "",
                want: &[("weight", 2)],
            },
            Case {
                ex: Exchange::Binance,
                method: "POST",
                path: "/api/v3/order",
                query: "symbol=BTCUSDT",
                body: "",
                want: &[("weight", 1), ("orders", 1)],
            },
            Case {
                ex: Exchange::Bybit,
                method: "POST",
                path: "/v5/order/create",
                query: "",
                body: r#"{"category":"spot"}"#,
                want: &[("ip", 1), ("create-spot", 1)],
            },
            Case {
                ex: Exchange::Bybit,
                method: "POST",
                path: "/v5/order/create",
                query: "",
                body: r#"{"category":"linear"}"#,
                want: &[("ip", 1), ("create-linear", 1)],
            },
            Case {
                ex: Exchange::Okx,
                method: "GET",
                path: "/api/v5/market/ticker",
                query: "instId=BTC-USDT",
                body: "",
                want: &[("market-ticker", 1)],
            },
        ];
        for c in cases {
            let r = resolve(c.ex, c.method, c.path, c.query, c.body).unwrap_or_else(|e| panic!("{} {}: {e}", c.method, c.path));
            let want: Vec<_> = c.want.iter().map(|(g, n)| (g.to_string(), *n)).collect();
            assert_eq!(groups(&r), want, "{} {} {}", c.ex, c.method, c.path);
        }
    }

    #[test]
    fn okx_trading_is_partitioned_per_instrument() {
        let r = resolve(Exchange::Okx, "POST", "/api/v5/trade/order", "", r#"{"instId":"BTC-USDT","side":"buy"}"#).unwrap();
        assert_eq!(r.charges[0].partition.as_deref(), Some("BTC-USDT"));
        assert_eq!(r.auth, Auth::Signed);
        assert_eq!(r.class, Class::Order);
    }

    #[test]
    fn unknown_and_malformed_requests_are_named() {
        let e = resolve(Exchange::Upbit, "GET", "/v1/nope", "", "").unwrap_err();
        assert!(e.to_string().contains("GET /v1/nope"), "{e}");
        let e = resolve(Exchange::Upbit, "GET", "/v2/ticker", "", "").unwrap_err();
        assert!(matches!(e, RouteError::NoVersionPrefix { .. }), "{e}");
        let e = resolve(Exchange::Upbit, "PATCH", "/v1/ticker", "", "").unwrap_err();
        assert_eq!(e, RouteError::BadMethod("PATCH".into()));
        for bad in ["v1/ticker", "/v1/ticker?x=1", "/v1/../admin", "/v1//ticker", "/v1/tick er", ""] {
            assert!(matches!(resolve(Exchange::Upbit, "GET", bad, "", ""), Err(RouteError::BadPath { .. })), "{bad}");
        }
        let e = resolve(Exchange::Bybit, "POST", "/v5/order/create", "", r#"{"symbol":"BTCUSDT"}"#).unwrap_err();
        assert!(e.to_string().contains("'category'"), "{e}");
        let e = resolve(Exchange::Bybit, "POST", "/v5/order/create", "", r#"{"category":"moon"}"#).unwrap_err();
        assert!(e.to_string().contains("category='moon'"), "{e}");
    }

    #[test]
    fn a_default_group_catches_unmapped_endpoints_when_configured() {
        let over = "[exchanges.upbit]\ndefault_group = 'market'";
        let p = Policies::load(crate::SHIPPED_POLICIES, &[over]).unwrap();
        let r = p.get(Exchange::Upbit).unwrap().resolve("GET", "/v1/status/wallet", &Params::default()).unwrap();
        assert!(r.defaulted);
        assert_eq!(r.charges[0].group, "market");
    }

    #[test]
    fn route_table_errors_are_caught_at_load() {
        let over = r#"
            [[exchanges.upbit.extra_routes]]
            method = "GET"
            path = "/ticker"
            class = "market_data"
            charges = [{ group = "ticker" }]
        "#;
        let e = Policies::load(crate::SHIPPED_POLICIES, &[over]).unwrap_err();
        assert!(e.to_string().contains("/ticker"), "{e}");
        let over = r#"
            [[exchanges.upbit.extra_routes]]
            method = "GET"
            path = "/status/wallet"
            class = "market_data"
            charges = [{ group = "nothing" }]
        "#;
        let e = Policies::load(crate::SHIPPED_POLICIES, &[over]).unwrap_err();
        assert!(e.to_string().contains("nothing"), "{e}");
    }
}
