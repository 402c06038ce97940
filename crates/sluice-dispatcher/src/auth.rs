//! Who may call the dispatcher, and what for. Each configured client has a
//! credential (a bearer token in gRPC metadata, or the fingerprint of its TLS
//! client certificate) and a grant: which calls, exchanges, accounts, priority
//! classes and endpoints. With no clients configured the dispatcher is open (the
//! offline default); it says so at start when it listens beyond loopback.
//!
//! Tokens are kept only as SHA-256 digests, compared by lookup; no message or log
//! line ever carries one. A missing or unknown credential is UNAUTHENTICATED; a
//! call outside the grant is PERMISSION_DENIED naming what was refused.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;

use serde::Deserialize;
use sha2::{Digest, Sha256};
use sluice_domain::Exchange;
use sluice_rate::scheduler::Class;
use tonic::Status;
use tonic::metadata::MetadataMap;

use sluice_exchange::sign::Credentials;

use crate::config::ConfigError;
use crate::keyring::normalize_account;

/// The dispatcher's calls, as grants name them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CallKind {
    /// `Call`: exchange REST requests.
    Call,
    /// `Acquire`: WebSocket connect and message tokens.
    Acquire,
    /// `MintStreamAuth`: private stream logins.
    MintStreamAuth,
    /// `GetBudgets`, `WatchBudgets`, `GetCluster`.
    Read,
}

impl CallKind {
    const ALL: [CallKind; 4] = [CallKind::Call, CallKind::Acquire, CallKind::MintStreamAuth, CallKind::Read];

    fn rpc(self) -> &'static str {
        match self {
            CallKind::Call => "Call",
            CallKind::Acquire => "Acquire",
            CallKind::MintStreamAuth => "MintStreamAuth",
            CallKind::Read => "GetBudgets, WatchBudgets or GetCluster",
        }
    }
}

/// A client as configured (`[[clients]]`).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClientConfig {
    /// Shown in logs and metrics.
    pub name: String,
    /// A file holding the bearer token (a mounted Kubernetes Secret).
    pub token_file: Option<PathBuf>,
    /// An environment variable holding the bearer token.
    pub token_env: Option<String>,
    /// The token's SHA-256 in hex, so the configuration holds no secret.
    pub token_sha256: Option<String>,
    /// With TLS: the SHA-256 (hex) of the client's certificate, as an alternative
    /// to a token.
    pub cert_sha256: Option<String>,
    /// Calls it may make: "call", "acquire", "mint_stream_auth", "read". Default all.
    pub calls: Option<Vec<CallKind>>,
    /// Exchanges it may use ("*" for all). Default all.
    pub exchanges: Option<Vec<String>>,
    /// Accounts it may use, as "exchange/account" ("upbit/*", "*/demo", "*").
    /// Default none: public endpoints only.
    #[serde(default)]
    pub accounts: Vec<String>,
    /// Priority classes it may use: "order", "account", "market_data",
    /// "backfill". Default all.
    pub classes: Option<Vec<String>>,
    /// Endpoints it may call, as "METHOD PATH" with the exchange's own path; "*"
    /// for any method, a path ending in "*" for a prefix ("GET /v1/*"). Default all.
    pub endpoints: Option<Vec<String>>,
    /// Keys it signs with on the exchange-compatible REST face, in the exchange's
    /// own scheme, one per exchange account it trades there.
    #[serde(default)]
    pub exchange_keys: Vec<ExchangeKeyConfig>,
}

/// A sluice-issued key for the exchange-compatible REST face (`[[clients.exchange_keys]]`):
/// the bot puts `api_key` and the secret where its library wants the exchange's.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExchangeKeyConfig {
    pub exchange: String,
    /// The account its calls use (the client must be granted it).
    pub account: String,
    /// The key id the bot sends (not secret).
    pub api_key: String,
    /// A file holding the secret (a mounted Kubernetes Secret).
    pub secret_file: Option<PathBuf>,
    /// An environment variable holding the secret.
    pub secret_env: Option<String>,
    /// OKX: the passphrase, from a file or a variable.
    pub passphrase_file: Option<PathBuf>,
    pub passphrase_env: Option<String>,
}

/// A verified exchange key: whose it is and which account it trades.
#[derive(Debug)]
pub struct ExchangeKey {
    pub client: Arc<Client>,
    pub account: String,
    /// The key and secret the bot signs with (never the exchange's).
    pub credentials: Credentials,
}

/// What a client may do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Grant {
    calls: Vec<CallKind>,
    /// `None`: every exchange.
    exchanges: Option<Vec<Exchange>>,
    accounts: Vec<(String, String)>,
    classes: Vec<Class>,
    endpoints: Option<Vec<(String, String)>>,
}

/// A known client.
#[derive(Debug)]
pub struct Client {
    pub name: String,
    grant: Grant,
}

/// Who is calling: a known client, or anyone (open mode).
#[derive(Debug, Clone)]
pub struct Caller(Option<Arc<Client>>);

/// A refusal, before it becomes a gRPC status.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refused {
    /// The client's name, "unknown" when unauthenticated.
    pub client: String,
    pub code: tonic::Code,
    pub message: String,
}

impl Refused {
    pub fn status(&self) -> Status {
        Status::new(self.code, self.message.clone())
    }
}

fn class_name(c: Class) -> &'static str {
    c.as_str()
}

fn parse_class(s: &str) -> Option<Class> {
    [Class::Order, Class::Account, Class::MarketData, Class::Backfill].into_iter().find(|c| c.as_str() == s)
}

/// `pattern` matches `value`: "*", an exact match, or a prefix ending in "*".
fn matches(pattern: &str, value: &str) -> bool {
    pattern == "*" || pattern == value || pattern.strip_suffix('*').is_some_and(|p| value.starts_with(p))
}

impl Grant {
    fn parse(c: &ClientConfig) -> Result<Grant, String> {
        let exchanges = match &c.exchanges {
            Some(list) if !list.iter().any(|e| e == "*") => Some(
                list.iter()
                    .map(|e| e.parse::<Exchange>().map_err(|_| format!("exchanges: unknown exchange '{e}'")))
                    .collect::<Result<Vec<_>, _>>()?,
            ),
            _ => None,
        };
        let accounts = c
            .accounts
            .iter()
            .map(|a| match a.as_str() {
                "*" => Ok(("*".to_owned(), "*".to_owned())),
                _ => match a.split_once('/') {
                    Some((ex, acct)) if !ex.is_empty() && !acct.is_empty() => {
                        if ex != "*" && ex.parse::<Exchange>().is_err() {
                            return Err(format!("accounts: unknown exchange in '{a}'"));
                        }
                        let acct = if acct == "*" { "*".to_owned() } else { normalize_account(acct) };
                        Ok((ex.to_owned(), acct))
                    }
                    _ => Err(format!("accounts: '{a}' must be \"exchange/account\" or \"*\"")),
                },
            })
            .collect::<Result<Vec<_>, _>>()?;
        let classes = match &c.classes {
            None => vec![Class::Order, Class::Account, Class::MarketData, Class::Backfill],
            Some(list) => list
                .iter()
                .map(|s| parse_class(s).ok_or_else(|| format!("classes: '{s}' is not order, account, market_data or backfill")))
                .collect::<Result<Vec<_>, _>>()?,
        };
        let endpoints = match &c.endpoints {
            None => None,
            Some(list) => Some(
                list.iter()
                    .map(|e| match e.split_once(' ') {
                        Some((m, p)) if (m == "*" || ["GET", "POST", "PUT", "DELETE"].contains(&m)) && (p == "*" || p.starts_with('/')) => {
                            Ok((m.to_owned(), p.to_owned()))
                        }
                        _ => Err(format!("endpoints: '{e}' must be \"METHOD /path\" (METHOD GET, POST, PUT, DELETE or *)")),
                    })
                    .collect::<Result<Vec<_>, _>>()?,
            ),
        };
        Ok(Grant { calls: c.calls.clone().unwrap_or_else(|| CallKind::ALL.to_vec()), exchanges, accounts, classes, endpoints })
    }
}

/// The configured clients, by credential.
#[derive(Debug, Default)]
pub struct Clients {
    by_token: HashMap<[u8; 32], Arc<Client>>,
    by_cert: HashMap<[u8; 32], Arc<Client>>,
    /// By exchange, then key id (looked up per request without allocating).
    by_exchange_key: HashMap<Exchange, HashMap<String, ExchangeKey>>,
}

fn digest(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

fn hex32(name: &str, field: &str, v: &str) -> Result<[u8; 32], ConfigError> {
    let bytes = hex::decode(v.trim()).ok().filter(|b| b.len() == 32);
    bytes
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| ConfigError::Invalid(format!("clients '{name}': {field} must be 64 hex digits (a SHA-256)")))
}

/// Tokens shorter than this are refused: a guessable token is no credential.
const MIN_TOKEN: usize = 16;

/// A secret from a file or a variable (exactly one of them, unless optional).
fn read_secret(
    who: &str,
    what: &str,
    file: Option<&PathBuf>,
    var: Option<&String>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Option<String>, ConfigError> {
    match (file, var) {
        (Some(_), Some(_)) => Err(ConfigError::Invalid(format!("{who}: give {what}_file or {what}_env, not both"))),
        (Some(path), None) => std::fs::read_to_string(path)
            .map(|t| Some(t.trim().to_owned()))
            .map_err(|e| ConfigError::Invalid(format!("{who}: cannot read {what}_file {}: {e}", path.display()))),
        (None, Some(var)) => env(var)
            .map(|t| Some(t.trim().to_owned()))
            .ok_or_else(|| ConfigError::Invalid(format!("{who}: environment variable {var} is not set"))),
        (None, None) => Ok(None),
    }
}

fn exchange_key(
    client: &Arc<Client>,
    k: &ExchangeKeyConfig,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<(Exchange, ExchangeKey), ConfigError> {
    let who = format!("clients '{}': exchange_keys '{}'", client.name, k.api_key);
    let bad = |m: String| ConfigError::Invalid(format!("{who}: {m}"));
    let exchange: Exchange = k.exchange.parse().map_err(|_| bad(format!("unknown exchange '{}'", k.exchange)))?;
    if k.api_key.len() < 8 || !k.api_key.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(bad("api_key must be at least 8 printable characters".into()));
    }
    let account = normalize_account(&k.account);
    if account.is_empty() || !Caller(Some(client.clone())).may_use_account(exchange, &account) {
        return Err(bad(format!("account {exchange}/{account} is not among the client's accounts")));
    }
    let secret = read_secret(&who, "secret", k.secret_file.as_ref(), k.secret_env.as_ref(), env)?
        .ok_or_else(|| bad("no secret (secret_file or secret_env)".into()))?;
    if secret.len() < MIN_TOKEN {
        return Err(bad(format!("the secret is shorter than {MIN_TOKEN} characters")));
    }
    let passphrase = read_secret(&who, "passphrase", k.passphrase_file.as_ref(), k.passphrase_env.as_ref(), env)?;
    if exchange == Exchange::Okx && passphrase.is_none() {
        return Err(bad("okx keys need a passphrase (passphrase_file or passphrase_env)".into()));
    }
    let credentials = Credentials::new(k.api_key.clone(), secret, passphrase);
    Ok((exchange, ExchangeKey { client: client.clone(), account, credentials }))
}

impl Clients {
    /// Loads the clients, reading token files and variables now; errors name the
    /// client and the field, never a value.
    pub fn load(configs: &[ClientConfig], env: &dyn Fn(&str) -> Option<String>) -> Result<Clients, ConfigError> {
        let mut clients = Clients::default();
        let mut names = std::collections::HashSet::new();
        for c in configs {
            if c.name.is_empty() || !names.insert(c.name.clone()) {
                return Err(ConfigError::Invalid(format!("clients: every client needs a distinct name ('{}')", c.name)));
            }
            let grant = Grant::parse(c).map_err(|e| ConfigError::Invalid(format!("clients '{}': {e}", c.name)))?;
            let client = Arc::new(Client { name: c.name.clone(), grant });
            let token = read_secret(&format!("clients '{}'", c.name), "token", c.token_file.as_ref(), c.token_env.as_ref(), env)?;
            let mut digests = Vec::new();
            if let Some(t) = token {
                let t = t.trim();
                if t.len() < MIN_TOKEN {
                    return Err(ConfigError::Invalid(format!("clients '{}': the token is shorter than {MIN_TOKEN} characters", c.name)));
                }
                digests.push(digest(t.as_bytes()));
            }
            if let Some(h) = &c.token_sha256 {
                digests.push(hex32(&c.name, "token_sha256", h)?);
            }
            let cert = c.cert_sha256.as_deref().map(|h| hex32(&c.name, "cert_sha256", h)).transpose()?;
            if digests.is_empty() && cert.is_none() && c.exchange_keys.is_empty() {
                return Err(ConfigError::Invalid(format!(
                    "clients '{}': no credential (token_file, token_env, token_sha256, cert_sha256 or exchange_keys)",
                    c.name
                )));
            }
            for k in &c.exchange_keys {
                let (exchange, key) = exchange_key(&client, k, env)?;
                let keys = clients.by_exchange_key.entry(exchange).or_default();
                if let Some(other) = keys.get(&k.api_key) {
                    return Err(ConfigError::Invalid(format!(
                        "clients '{}' and '{}' both use {exchange} exchange key '{}'",
                        other.client.name, c.name, k.api_key
                    )));
                }
                keys.insert(k.api_key.clone(), key);
            }
            for d in digests {
                if let Some(other) = clients.by_token.insert(d, client.clone()) {
                    return Err(ConfigError::Invalid(format!("clients '{}' and '{}' have the same token", other.name, c.name)));
                }
            }
            if let Some(d) = cert
                && let Some(other) = clients.by_cert.insert(d, client.clone())
            {
                return Err(ConfigError::Invalid(format!("clients '{}' and '{}' have the same certificate", other.name, c.name)));
            }
        }
        Ok(clients)
    }

    /// No clients configured: anyone may do anything.
    pub fn open(&self) -> bool {
        self.by_token.is_empty() && self.by_cert.is_empty() && self.by_exchange_key.is_empty()
    }

    /// The exchange key `api_key` issued for `exchange`, if any.
    pub fn exchange_key(&self, exchange: Exchange, api_key: &str) -> Option<&ExchangeKey> {
        self.by_exchange_key.get(&exchange)?.get(api_key)
    }

    pub fn names(&self) -> Vec<String> {
        let keys = self.by_exchange_key.values().flat_map(HashMap::values).map(|k| &k.client);
        let mut n: Vec<String> = self.by_token.values().chain(self.by_cert.values()).chain(keys).map(|c| c.name.clone()).collect();
        n.sort();
        n.dedup();
        n
    }

    /// Who is calling, from the `authorization: Bearer <token>` metadata or the
    /// TLS client certificate (DER) the connection presented.
    pub fn authenticate(&self, metadata: &MetadataMap, cert_der: Option<&[u8]>) -> Result<Caller, Refused> {
        if self.open() {
            return Ok(Caller(None));
        }
        let unauthenticated =
            |message: &str| Refused { client: "unknown".into(), code: tonic::Code::Unauthenticated, message: message.into() };
        if let Some(c) = cert_der.and_then(|der| self.by_cert.get(&digest(der))) {
            return Ok(Caller(Some(c.clone())));
        }
        let Some(value) = metadata.get("authorization") else {
            return Err(unauthenticated("a credential is required: send metadata 'authorization: Bearer <token>'"));
        };
        let token = value.to_str().ok().and_then(|v| v.strip_prefix("Bearer ").or_else(|| v.strip_prefix("bearer ")));
        let Some(token) = token.map(str::trim) else {
            return Err(unauthenticated("the authorization metadata must be 'Bearer <token>'"));
        };
        match self.by_token.get(&digest(token.as_bytes())) {
            Some(c) => Ok(Caller(Some(c.clone()))),
            None => Err(unauthenticated("the bearer token is not known to this dispatcher")),
        }
    }
}

impl Caller {
    /// Anyone (open mode).
    pub fn anyone() -> Caller {
        Caller(None)
    }

    /// The client an exchange key belongs to.
    pub fn of(client: &Arc<Client>) -> Caller {
        Caller(Some(client.clone()))
    }

    pub fn name(&self) -> &str {
        self.0.as_ref().map_or("open", |c| c.name.as_str())
    }

    fn deny(&self, what: String) -> Refused {
        Refused {
            client: self.name().to_owned(),
            code: tonic::Code::PermissionDenied,
            message: format!("client '{}' may not {what}", self.name()),
        }
    }

    /// May it make this kind of call?
    pub fn may(&self, kind: CallKind) -> Result<(), Refused> {
        match &self.0 {
            Some(c) if !c.grant.calls.contains(&kind) => Err(self.deny(format!("call {}", kind.rpc()))),
            _ => Ok(()),
        }
    }

    /// May it use this exchange?
    pub fn may_use_exchange(&self, exchange: Exchange) -> bool {
        self.0.as_ref().is_none_or(|c| c.grant.exchanges.as_ref().is_none_or(|l| l.contains(&exchange)))
    }

    /// May it use this account (already normalised) of this exchange?
    pub fn may_use_account(&self, exchange: Exchange, account: &str) -> bool {
        self.0.as_ref().is_none_or(|c| c.grant.accounts.iter().any(|(ex, a)| matches(ex, exchange.as_str()) && matches(a, account)))
    }

    /// Checks exchange and account (as the caller named them, before any lookup,
    /// so a refused client learns nothing about which accounts exist).
    pub fn check_target(&self, exchange: &str, account: &str) -> Result<(), Refused> {
        // An unknown exchange is the validator's to report.
        let Ok(ex) = exchange.parse::<Exchange>() else { return Ok(()) };
        if !self.may_use_exchange(ex) {
            return Err(self.deny(format!("use exchange {ex}")));
        }
        if !account.is_empty() {
            let a = normalize_account(account);
            if !self.may_use_account(ex, &a) {
                return Err(self.deny(format!("use account {ex}/{a}")));
            }
        }
        Ok(())
    }

    /// May it send at this priority class?
    pub fn check_class(&self, class: Class) -> Result<(), Refused> {
        match &self.0 {
            Some(c) if !c.grant.classes.contains(&class) => Err(self.deny(format!("use priority class {}", class_name(class)))),
            _ => Ok(()),
        }
    }

    /// May it call this endpoint (the exchange's own method and path)?
    pub fn check_endpoint(&self, exchange: &str, method: &str, path: &str) -> Result<(), Refused> {
        let Some(c) = &self.0 else { return Ok(()) };
        let Some(list) = &c.grant.endpoints else { return Ok(()) };
        let method = method.to_ascii_uppercase();
        if list.iter().any(|(m, p)| (m == "*" || *m == method) && matches(p, path)) {
            return Ok(());
        }
        Err(self.deny(format!("call {method} {path} on {exchange}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn client(toml_text: &str) -> ClientConfig {
        toml::from_str(toml_text).unwrap()
    }

    fn bearer(token: &str) -> MetadataMap {
        let mut m = MetadataMap::new();
        m.insert("authorization", format!("Bearer {token}").parse().unwrap());
        m
    }

    const MD: &str = "md-script-token-0123456789";
    const ROUTER: &str = "order-router-token-0123456789";

    fn clients() -> Clients {
        let env = |k: &str| (k == "ROUTER_TOKEN").then(|| ROUTER.to_owned());
        let md = client(&format!(
            "name = 'md'\ntoken_sha256 = '{}'\ncalls = ['call', 'read']\nexchanges = ['upbit', 'binance']\n\
             classes = ['market_data', 'backfill']\nendpoints = ['GET /v1/*', 'GET /api/v3/depth']",
            hex::encode(digest(MD.as_bytes()))
        ));
        let router = client("name = 'router'\ntoken_env = 'ROUTER_TOKEN'\naccounts = ['upbit/demo', 'bybit/*']");
        Clients::load(&[md, router], &env).unwrap()
    }

    #[test]
    fn a_token_names_the_client_and_anything_else_is_unauthenticated() {
        let c = clients();
        assert_eq!(c.authenticate(&bearer(MD), None).unwrap().name(), "md");
        assert_eq!(c.authenticate(&bearer(ROUTER), None).unwrap().name(), "router");
        for m in [MetadataMap::new(), bearer("wrong-token-0123456789")] {
            let e = c.authenticate(&m, None).unwrap_err();
            assert_eq!(e.code, tonic::Code::Unauthenticated);
            assert!(!e.message.contains(MD) && !e.message.contains(ROUTER), "{}", e.message);
        }
        let mut basic = MetadataMap::new();
        basic.insert("authorization", "Basic abc".parse().unwrap());
        assert!(c.authenticate(&basic, None).unwrap_err().message.contains("Bearer"));
        assert!(Clients::default().authenticate(&MetadataMap::new(), None).is_ok(), "open without clients");
    }

    #[test]
    fn grants_refuse_what_they_do_not_name() {
        let c = clients();
        let md = c.authenticate(&bearer(MD), None).unwrap();
        assert!(md.may(CallKind::Call).is_ok() && md.may(CallKind::Read).is_ok());
        let e = md.may(CallKind::MintStreamAuth).unwrap_err();
        assert_eq!((e.code, e.message.as_str()), (tonic::Code::PermissionDenied, "client 'md' may not call MintStreamAuth"));
        assert!(md.check_target("upbit", "").is_ok());
        assert_eq!(md.check_target("okx", "").unwrap_err().message, "client 'md' may not use exchange okx");
        assert_eq!(md.check_target("upbit", "demo").unwrap_err().message, "client 'md' may not use account upbit/demo");
        assert!(md.check_class(Class::MarketData).is_ok());
        assert_eq!(md.check_class(Class::Order).unwrap_err().message, "client 'md' may not use priority class order");
        assert!(md.check_endpoint("upbit", "GET", "/v1/ticker").is_ok());
        assert!(md.check_endpoint("binance", "get", "/api/v3/depth").is_ok());
        assert_eq!(
            md.check_endpoint("upbit", "POST", "/v1/orders").unwrap_err().message,
            "client 'md' may not call POST /v1/orders on upbit"
        );

        let router = c.authenticate(&bearer(ROUTER), None).unwrap();
        assert!(router.check_target("upbit", "demo").is_ok() && router.check_target("bybit", "Any_One").is_ok());
        assert!(router.check_target("upbit", "other").is_err() && router.check_target("okx", "demo").is_err());
        assert!(router.check_class(Class::Order).is_ok() && router.check_endpoint("okx", "DELETE", "/x").is_ok());
    }

    #[test]
    fn bad_client_configs_name_the_client_and_field() {
        let load = |t: &str| Clients::load(&[client(t)], &|_| None).unwrap_err().to_string();
        assert!(load("name = 'a'").contains("clients 'a': no credential"));
        assert!(load("name = 'a'\ntoken_env = 'NOPE'").contains("NOPE is not set"));
        assert!(load("name = 'a'\ntoken_sha256 = 'xyz'").contains("token_sha256 must be 64 hex digits"));
        assert!(load("name = 'a'\ntoken_sha256 = '00'\nexchanges = ['kraken']").contains("unknown exchange 'kraken'"));
        assert!(load("name = 'a'\ntoken_sha256 = '00'\naccounts = ['demo']").contains("\"exchange/account\""));
        assert!(load("name = 'a'\ntoken_sha256 = '00'\nclasses = ['urgent']").contains("classes: 'urgent'"));
        assert!(load("name = 'a'\ntoken_sha256 = '00'\nendpoints = ['/v1/x']").contains("METHOD /path"));
        let short = Clients::load(&[client("name = 'a'\ntoken_env = 'T'")], &|_| Some("short".into())).unwrap_err().to_string();
        assert!(short.contains("shorter than 16") && !short.contains("short\""), "{short}");
        let h = hex::encode(digest(MD.as_bytes()));
        let twice = [client(&format!("name = 'a'\ntoken_sha256 = '{h}'")), client(&format!("name = 'b'\ntoken_sha256 = '{h}'"))];
        assert!(Clients::load(&twice, &|_| None).unwrap_err().to_string().contains("'a' and 'b' have the same token"));
    }

    #[test]
    fn exchange_keys_name_their_client_and_account() {
        let env = |k: &str| match k {
            "BOT_SECRET" => Some("bot-secret-0123456789".to_owned()),
            "OKX_PASS" => Some("pass".to_owned()),
            _ => None,
        };
        let key = |ex: &str, acct: &str, extra: &str| {
            format!(
                "[[exchange_keys]]\nexchange = '{ex}'\naccount = '{acct}'\napi_key = 'bot-{ex}-key'\nsecret_env = 'BOT_SECRET'\n{extra}"
            )
        };
        let bot = client(&format!(
            "name = 'bot'\naccounts = ['upbit/main', 'okx/*']\n{}{}",
            key("upbit", "Main", ""),
            key("okx", "x", "passphrase_env = 'OKX_PASS'")
        ));
        let c = Clients::load(&[bot], &env).unwrap();
        assert!(!c.open(), "exchange keys alone close the dispatcher to anonymous gRPC callers");
        let k = c.exchange_key(Exchange::Upbit, "bot-upbit-key").unwrap();
        assert_eq!((k.client.name.as_str(), k.account.as_str()), ("bot", "main"));
        assert!(c.exchange_key(Exchange::Bybit, "bot-upbit-key").is_none(), "a key belongs to one exchange");
        assert!(c.exchange_key(Exchange::Okx, "bot-okx-key").unwrap().credentials.has_passphrase());
        assert!(!format!("{:?}", k).contains("bot-secret"), "Debug redacts the secret");

        let load = |t: String| Clients::load(&[client(&t)], &env).unwrap_err().to_string();
        assert!(load(format!("name = 'b'\naccounts = ['upbit/main']\n{}", key("upbit", "other", ""))).contains("upbit/other is not among"));
        assert!(load(format!("name = 'b'\naccounts = ['*']\n{}", key("okx", "x", ""))).contains("need a passphrase"));
        assert!(load(format!("name = 'b'\naccounts = ['*']\n{}", key("kraken", "x", ""))).contains("unknown exchange 'kraken'"));
        let short = |k: &str| (k == "BOT_SECRET").then(|| "short".to_owned());
        let t = format!("name = 'b'\naccounts = ['*']\n{}", key("upbit", "x", ""));
        assert!(Clients::load(&[client(&t)], &short).unwrap_err().to_string().contains("shorter than 16"));
        let both = [
            client(&format!("name = 'a'\naccounts = ['*']\n{}", key("upbit", "x", ""))),
            client(&format!("name = 'b'\naccounts = ['*']\n{}", key("upbit", "y", ""))),
        ];
        assert!(Clients::load(&both, &env).unwrap_err().to_string().contains("'a' and 'b' both use upbit exchange key"));
    }
}
