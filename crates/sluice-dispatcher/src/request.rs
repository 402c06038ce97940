//! Turns a gRPC request into something a shard can run, or into a gRPC error that
//! names the problem: every field is checked here, before anything is queued.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use sluice_domain::Exchange;
use sluice_exchange::params::Params;
use sluice_exchange::policy::{Auth, BodyFormat, ExchangePolicy, Policies, Scope};
use sluice_exchange::routes::RouteError;
use sluice_exchange::sign::Credentials;
use sluice_proto::dispatcher::v1::{AcquireRequest, CallRequest, Priority};
use sluice_proto::prost_types;
use sluice_rate::Time;
use sluice_rate::scheduler::Class;
use tonic::Status;

use crate::config::DispatcherConfig;
use crate::keyring::{KeyError, Keyring, normalize_account};

/// Identifies one budget.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct BucketKey {
    pub(crate) exchange: Exchange,
    pub(crate) scope: Scope,
    /// Egress address, account name or connection id.
    pub(crate) scope_key: String,
    pub(crate) group: String,
    pub(crate) partition: Option<String>,
}

impl fmt::Display for BucketKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}:{}/{}", self.exchange, self.scope.as_str(), self.scope_key, self.group)?;
        if let Some(p) = &self.partition {
            write!(f, "/{p}")?;
        }
        Ok(())
    }
}

/// A validated exchange call (Debug shows the signer redacted).
#[derive(Debug)]
pub(crate) struct PreparedCall {
    pub(crate) exchange: Exchange,
    pub(crate) method: &'static str,
    pub(crate) path: String,
    pub(crate) query: String,
    pub(crate) body: Bytes,
    /// Signs the request when the endpoint is private.
    pub(crate) signer: Option<Arc<Credentials>>,
    pub(crate) account: Option<String>,
    pub(crate) route: String,
    pub(crate) class: Class,
    pub(crate) needs: Vec<(BucketKey, u64)>,
    pub(crate) deadline: Time,
    pub(crate) idempotency_key: Option<String>,
}

/// A validated token request.
#[derive(Debug)]
pub(crate) struct PreparedGrant {
    pub(crate) exchange: Exchange,
    pub(crate) class: Class,
    pub(crate) need: (BucketKey, u64),
    pub(crate) deadline: Time,
    pub(crate) use_within: Duration,
    pub(crate) hold: Duration,
}

/// What preparation needs to know.
pub(crate) struct Context<'a> {
    pub(crate) policies: &'a Policies,
    pub(crate) keyring: &'a Keyring,
    pub(crate) config: &'a DispatcherConfig,
    pub(crate) now: Time,
    /// The gRPC deadline (`grpc-timeout`), if the caller set one.
    pub(crate) grpc_timeout: Option<Duration>,
}

/// How every "this needs an account" refusal ends: the exchange-compatible face
/// turns it into the exchange's own "credential missing" answer.
pub(crate) const NAME_AN_ACCOUNT: &str = "name an account";

fn invalid(msg: impl Into<String>) -> Status {
    Status::invalid_argument(msg.into())
}

pub(crate) fn route_status(e: RouteError) -> Status {
    invalid(e.to_string())
}

pub(crate) fn key_status(e: KeyError) -> Status {
    match e {
        KeyError::NotFound { .. } => Status::not_found(e.to_string()),
        KeyError::Incomplete { .. } => Status::failed_precondition(e.to_string()),
    }
}

/// The egress key of IP-scoped budgets for `exchange`.
pub(crate) fn egress_key(config: &DispatcherConfig, exchange: Exchange) -> String {
    if let Some(k) = config.egress_key.get(&exchange) {
        return k.clone();
    }
    config.egress.get(&exchange).map_or_else(|| "default".to_owned(), |ip| ip.to_string())
}

fn exchange_policy<'a>(policies: &'a Policies, name: &str) -> Result<(Exchange, &'a ExchangePolicy), Status> {
    if name.is_empty() {
        return Err(invalid("exchange is required (upbit, bybit, binance or okx)"));
    }
    let ex: Exchange = name.parse().map_err(|e: sluice_domain::UnknownExchange| invalid(e.to_string()))?;
    let p = policies.get(ex).ok_or_else(|| invalid(format!("exchange '{ex}' is not configured on this dispatcher")))?;
    Ok((ex, p))
}

fn class_of(p: i32, default: Class) -> Result<Class, Status> {
    match Priority::try_from(p) {
        Ok(Priority::Unspecified) => Ok(default),
        Ok(Priority::Order) => Ok(Class::Order),
        Ok(Priority::Account) => Ok(Class::Account),
        Ok(Priority::MarketData) => Ok(Class::MarketData),
        Ok(Priority::Backfill) => Ok(Class::Backfill),
        Err(_) => Err(invalid(format!("priority {p} is not a Priority value (0 to 4)"))),
    }
}

/// A `google.protobuf.Duration` field as a positive `Duration`: it must be
/// normalised (`0 <= nanos < 1e9`, not negative) and not zero.
pub(crate) fn duration_field(field: &str, d: &prost_types::Duration) -> Result<Duration, Status> {
    if d.seconds < 0 || d.nanos < 0 || d.nanos >= 1_000_000_000 {
        return Err(invalid(format!(
            "{field} must be a positive, normalised duration (seconds >= 0, 0 <= nanos < 1000000000); got seconds={} nanos={}",
            d.seconds, d.nanos
        )));
    }
    if d.seconds == 0 && d.nanos == 0 {
        return Err(invalid(format!("{field} must be positive")));
    }
    Ok(Duration::new(d.seconds as u64, d.nanos as u32))
}

fn deadline(ctx: &Context<'_>, timeout: Option<&prost_types::Duration>) -> Result<Time, Status> {
    let max = ctx.config.max_timeout();
    let asked = match timeout {
        Some(d) => {
            let t = duration_field("timeout", d)?;
            if t > max {
                return Err(invalid(format!(
                    "timeout {} ms is above the dispatcher's maximum {} ms (max_timeout_ms)",
                    t.as_millis(),
                    ctx.config.max_timeout_ms
                )));
            }
            Some(t)
        }
        None => None,
    };
    // A long gRPC deadline is the caller's patience, not a request: the dispatcher
    // waits at most its maximum and then says DEADLINE_EXCEEDED.
    let t = match (asked, ctx.grpc_timeout.map(|g| g.min(max))) {
        (Some(a), Some(g)) => a.min(g),
        (Some(a), None) => a,
        (None, Some(g)) => g,
        (None, None) => ctx.config.default_timeout(),
    };
    Ok(ctx.now + t)
}

fn check_idempotency_key(k: &str) -> Result<Option<String>, Status> {
    if k.is_empty() {
        return Ok(None);
    }
    if k.len() > 128 || !k.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(invalid("idempotency_key must be 1 to 128 printable ASCII characters"));
    }
    Ok(Some(k.to_owned()))
}

fn check_account_name(a: &str) -> Result<(), Status> {
    if a.len() > 64 || !a.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
        return Err(invalid("account must be up to 64 letters, digits, '-' or '_'"));
    }
    Ok(())
}

/// Validates a call: exchange, method, path, query, body, account, priority,
/// deadline, idempotency key; resolves its budgets.
pub(crate) fn prepare_call(req: &CallRequest, ctx: &Context<'_>) -> Result<PreparedCall, Status> {
    let (exchange, policy) = exchange_policy(ctx.policies, &req.exchange)?;
    if req.method.is_empty() {
        return Err(invalid("method is required (GET, POST, PUT or DELETE)"));
    }
    if req.path.is_empty() {
        return Err(invalid("path is required, e.g. /v1/ticker"));
    }
    if req.body.len() > ctx.config.max_body_bytes {
        return Err(invalid(format!("body is {} bytes; the limit is {}", req.body.len(), ctx.config.max_body_bytes)));
    }
    let query = req.query.strip_prefix('?').unwrap_or(&req.query);
    if query.len() > 8192 || query.chars().any(|c| c.is_whitespace() || c.is_control() || c == '#') {
        return Err(invalid("query must be a URL-encoded string without spaces or '#', at most 8192 bytes"));
    }
    let mut params = Params::from_query(query).map_err(|e| invalid(e.to_string()))?;
    let method = sluice_exchange::routes::validate_method(&req.method).map_err(route_status)?;
    if !req.body.is_empty() {
        if method == "GET" {
            return Err(invalid("a GET request carries no body; put parameters in query"));
        }
        match policy.body_format {
            BodyFormat::Json => params.add_json_body(&req.body).map_err(|e| invalid(e.to_string()))?,
            BodyFormat::Form => params.add_form_body(&req.body).map_err(|e| invalid(e.to_string()))?,
        }
    }
    let resolved = policy.resolve(method, &req.path, &params).map_err(route_status)?;
    let account = if req.account.is_empty() {
        None
    } else {
        check_account_name(&req.account)?;
        Some(normalize_account(&req.account))
    };
    let signer = match (resolved.auth, &account) {
        (Auth::Signed, None) => return Err(invalid(format!("{exchange} {} is private: {NAME_AN_ACCOUNT}", resolved.route))),
        (Auth::Signed, Some(a)) => Some(ctx.keyring.get(exchange, a).map_err(key_status)?),
        (Auth::None, Some(a)) if resolved.defaulted => Some(ctx.keyring.get(exchange, a).map_err(key_status)?),
        (Auth::None, _) => None,
    };
    let mut needs = Vec::with_capacity(resolved.charges.len());
    for c in resolved.charges {
        let scope_key = match c.scope {
            Scope::Ip => egress_key(ctx.config, exchange),
            Scope::Account => match &account {
                Some(a) => a.clone(),
                None => return Err(invalid(format!("{exchange} {} is counted per account: {NAME_AN_ACCOUNT}", resolved.route))),
            },
            Scope::Connection => {
                return Err(invalid(format!("{exchange} {} charges a per-connection group; that is for Acquire", resolved.route)));
            }
        };
        needs.push((BucketKey { exchange, scope: c.scope, scope_key, group: c.group, partition: c.partition }, c.cost));
    }
    Ok(PreparedCall {
        exchange,
        method,
        path: req.path.clone(),
        query: query.to_owned(),
        body: Bytes::from(req.body.clone()),
        signer,
        account,
        route: resolved.route,
        class: class_of(req.priority, resolved.class)?,
        needs,
        deadline: deadline(ctx, req.timeout.as_ref())?,
        idempotency_key: check_idempotency_key(&req.idempotency_key)?,
    })
}

/// Validates a token request against the exchange's groups.
pub(crate) fn prepare_grant(req: &AcquireRequest, ctx: &Context<'_>) -> Result<PreparedGrant, Status> {
    let (exchange, policy) = exchange_policy(ctx.policies, &req.exchange)?;
    if req.group.is_empty() {
        return Err(invalid("group is required, e.g. ws-connect"));
    }
    let group = policy.groups.get(&req.group).ok_or_else(|| {
        let names: Vec<&str> = policy.groups.keys().map(String::as_str).filter(|g| g.starts_with("ws")).collect();
        invalid(format!("{exchange} has no group '{}' (token groups: {})", req.group, names.join(", ")))
    })?;
    let scope_key = match group.scope {
        Scope::Ip => egress_key(ctx.config, exchange),
        Scope::Account => {
            if req.account.is_empty() {
                return Err(invalid(format!("{exchange} group '{}' is counted per account: name an account", req.group)));
            }
            check_account_name(&req.account)?;
            let a = normalize_account(&req.account);
            ctx.keyring.get(exchange, &a).map_err(key_status)?;
            a
        }
        Scope::Connection => {
            if req.connection.is_empty() || req.connection.len() > 128 {
                return Err(invalid(format!(
                    "{exchange} group '{}' is counted per connection: name the connection (1 to 128 characters)",
                    req.group
                )));
            }
            req.connection.clone()
        }
    };
    let cost = u64::from(req.cost.max(1));
    Ok(PreparedGrant {
        exchange,
        class: class_of(req.priority, Class::MarketData)?,
        need: (BucketKey { exchange, scope: group.scope, scope_key, group: req.group.clone(), partition: None }, cost),
        deadline: deadline(ctx, req.timeout.as_ref())?,
        use_within: policy.grant_ttl,
        hold: policy.grant_ttl + policy.network_jitter,
    })
}

/// Parses the gRPC `grpc-timeout` header ("100m", "5S", "1H").
pub(crate) fn parse_grpc_timeout(v: &str) -> Option<Duration> {
    let (num, unit) = v.split_at(v.len().checked_sub(1)?);
    let n: u64 = num.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n * 3600),
        "M" => Duration::from_secs(n * 60),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::Code;

    fn ctx<'a>(p: &'a Policies, k: &'a Keyring, c: &'a DispatcherConfig) -> Context<'a> {
        Context { policies: p, keyring: k, config: c, now: Time::from_millis(1_000_000), grpc_timeout: None }
    }

    fn call(ex: &str, method: &str, path: &str) -> CallRequest {
        CallRequest { exchange: ex.into(), method: method.into(), path: path.into(), ..CallRequest::default() }
    }

    fn setup() -> (Policies, Keyring, DispatcherConfig) {
        let keys = Keyring::load(
            None,
            vec![
                ("SLUICE_UPBIT_DEMO_API_KEY".into(), "a".into()),
                ("SLUICE_UPBIT_DEMO_SECRET".into(), "s".into()),
                ("SLUICE_OKX_X_API_KEY".into(), "a".into()),
            ],
        )
        .unwrap();
        (Policies::shipped().unwrap(), keys, DispatcherConfig::default())
    }

    #[test]
    fn table_of_bad_requests() {
        let (p, k, c) = setup();
        let cases: Vec<(CallRequest, Code, &str)> = vec![
            (call("", "GET", "/v1/ticker"), Code::InvalidArgument, "exchange is required"),
            (call("kraken", "GET", "/v1/ticker"), Code::InvalidArgument, "unknown exchange 'kraken'"),
            (call("upbit", "", "/v1/ticker"), Code::InvalidArgument, "method is required"),
            (call("upbit", "PATCH", "/v1/ticker"), Code::InvalidArgument, "method 'PATCH'"),
            (call("upbit", "GET", ""), Code::InvalidArgument, "path is required"),
            (call("upbit", "GET", "/v1/nope"), Code::InvalidArgument, "no route for GET /v1/nope"),
            (call("upbit", "GET", "/v1/../etc"), Code::InvalidArgument, "malformed"),
            (CallRequest { query: "a=%FF".into(), ..call("upbit", "GET", "/v1/ticker") }, Code::InvalidArgument, "query"),
            (CallRequest { query: "a b".into(), ..call("upbit", "GET", "/v1/ticker") }, Code::InvalidArgument, "query"),
            (
                CallRequest { body: b"{}".to_vec(), ..call("upbit", "GET", "/v1/ticker") },
                Code::InvalidArgument,
                "GET request carries no body",
            ),
            (CallRequest { body: vec![b'x'; 70_000], ..call("upbit", "POST", "/v1/orders") }, Code::InvalidArgument, "body is 70000 bytes"),
            (CallRequest { body: b"{not json".to_vec(), ..call("upbit", "POST", "/v1/orders") }, Code::InvalidArgument, "not valid JSON"),
            (call("upbit", "GET", "/v1/accounts"), Code::InvalidArgument, "private: name an account"),
            (
                CallRequest { account: "ghost".into(), ..call("upbit", "GET", "/v1/accounts") },
                Code::NotFound,
                "no account 'ghost' for upbit",
            ),
            (
                CallRequest { account: "x".into(), ..call("okx", "GET", "/api/v5/account/balance") },
                Code::FailedPrecondition,
                "has no secret",
            ),
            (CallRequest { account: "bad name!".into(), ..call("upbit", "GET", "/v1/accounts") }, Code::InvalidArgument, "account must be"),
            (CallRequest { priority: 9, ..call("upbit", "GET", "/v1/ticker") }, Code::InvalidArgument, "priority 9"),
            (
                CallRequest { timeout: Some(prost_types::Duration { seconds: -1, nanos: 0 }), ..call("upbit", "GET", "/v1/ticker") },
                Code::InvalidArgument,
                "timeout must be a positive",
            ),
            (
                CallRequest { timeout: Some(prost_types::Duration { seconds: 0, nanos: 0 }), ..call("upbit", "GET", "/v1/ticker") },
                Code::InvalidArgument,
                "timeout must be positive",
            ),
            (
                CallRequest { timeout: Some(prost_types::Duration { seconds: 3600, nanos: 0 }), ..call("upbit", "GET", "/v1/ticker") },
                Code::InvalidArgument,
                "timeout 3600000 ms is above the dispatcher's maximum 300000 ms",
            ),
            (
                CallRequest {
                    timeout: Some(prost_types::Duration { seconds: 1, nanos: 1_500_000_000 }),
                    ..call("upbit", "GET", "/v1/ticker")
                },
                Code::InvalidArgument,
                "timeout must be a positive, normalised duration",
            ),
            (
                CallRequest { timeout: Some(prost_types::Duration { seconds: 2, nanos: -5 }), ..call("upbit", "GET", "/v1/ticker") },
                Code::InvalidArgument,
                "nanos=-5",
            ),
            (CallRequest { idempotency_key: "a b".into(), ..call("upbit", "GET", "/v1/ticker") }, Code::InvalidArgument, "idempotency_key"),
            (
                CallRequest {
                    body: br#"{"symbol":"BTCUSDT"}"#.to_vec(),
                    account: "demo".into(),
                    ..call("bybit", "POST", "/v5/order/create")
                },
                Code::InvalidArgument,
                "needs parameter 'category'",
            ),
        ];
        for (req, code, needle) in cases {
            let e = match prepare_call(&req, &ctx(&p, &k, &c)) {
                Ok(_) => panic!("accepted {req:?}"),
                Err(e) => e,
            };
            assert_eq!(e.code(), code, "{req:?}: {}", e.message());
            assert!(e.message().contains(needle), "{:?}: '{}' lacks '{needle}'", req.path, e.message());
        }
    }

    #[test]
    fn a_good_call_resolves_its_budgets_and_deadline() {
        let (p, k, c) = setup();
        let req = CallRequest {
            query: "market=KRW-BTC&count=5".into(),
            timeout: Some(prost_types::Duration { seconds: 2, nanos: 0 }),
            ..call("UPBIT", "get", "/v1/candles/minutes/1")
        };
        let mut cx = ctx(&p, &k, &c);
        cx.grpc_timeout = Some(Duration::from_millis(500));
        let pc = prepare_call(&req, &cx).unwrap();
        assert_eq!(pc.method, "GET");
        assert_eq!(pc.needs.len(), 1);
        assert_eq!(pc.needs[0].0.to_string(), "upbit/ip:default/candle");
        assert_eq!(pc.class, Class::MarketData);
        assert_eq!(pc.deadline, Time::from_millis(1_000_500), "the shorter of field and gRPC deadline");
        cx.grpc_timeout = Some(Duration::from_secs(86_400));
        let long = prepare_call(&call("upbit", "GET", "/v1/ticker"), &cx).unwrap();
        assert_eq!(long.deadline, Time::from_millis(1_000_000 + 300_000), "a long gRPC deadline is held to the maximum");
        let signed = CallRequest { account: "Demo".into(), priority: Priority::Backfill as i32, ..call("upbit", "GET", "/v1/accounts") };
        let pc = prepare_call(&signed, &cx).unwrap();
        assert!(pc.signer.is_some());
        assert_eq!(pc.needs[0].0.to_string(), "upbit/account:demo/default");
        assert_eq!(pc.class, Class::Backfill);
    }

    #[test]
    fn grants_check_group_scope_and_names() {
        let (p, k, c) = setup();
        let cx = ctx(&p, &k, &c);
        let g = prepare_grant(
            &AcquireRequest {
                exchange: "upbit".into(),
                group: "ws-message".into(),
                connection: "c1".into(),
                cost: 0,
                ..AcquireRequest::default()
            },
            &cx,
        )
        .unwrap();
        assert_eq!(g.need.0.to_string(), "upbit/connection:c1/ws-message");
        assert_eq!(g.need.1, 1);
        let e = prepare_grant(&AcquireRequest { exchange: "upbit".into(), group: "ws-message".into(), ..AcquireRequest::default() }, &cx)
            .unwrap_err();
        assert!(e.message().contains("per connection"), "{}", e.message());
        let e = prepare_grant(&AcquireRequest { exchange: "upbit".into(), group: "ws-foo".into(), ..AcquireRequest::default() }, &cx)
            .unwrap_err();
        assert!(e.message().contains("no group 'ws-foo'"), "{}", e.message());
    }

    #[test]
    fn grpc_timeouts_parse() {
        assert_eq!(parse_grpc_timeout("250m"), Some(Duration::from_millis(250)));
        assert_eq!(parse_grpc_timeout("3S"), Some(Duration::from_secs(3)));
        assert_eq!(parse_grpc_timeout("x"), None);
        assert_eq!(parse_grpc_timeout(""), None);
    }
}
