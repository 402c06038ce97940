//! The alerting service's configuration: one typed struct from a TOML file
//! (`config/alerting.toml` is shipped), `SLUICE_ALERTING_*` variables, and the
//! rules file (`config/alerts.toml` unless `rules_file` names another). The
//! environment is passed in as a function so tests never touch the process's.
//! Every error names the key; receiver secrets are read here from the
//! environment or a mounted file and kept as `SecretString`.

use std::net::SocketAddr;
use std::path::PathBuf;

use secrecy::SecretString;
use serde::Deserialize;
use sluice_service::credentials::NatsAuth;

use crate::group::Route;
use crate::matcher::parse_matchers;
use crate::rules::{Rule, parse_duration};
use crate::silence::Inhibit;

/// The configuration sluice ships with.
pub const SHIPPED: &str = include_str!("../../../config/alerting.toml");

/// A configuration that cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("alerting config: {0}")]
    Parse(String),
    #[error("alerting config: {0}")]
    Invalid(String),
    #[error(transparent)]
    Rules(#[from] crate::rules::RulesError),
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    service: String,
    nats_url: String,
    #[serde(default)]
    nats_auth: NatsAuth,
    listen: SocketAddr,
    ops_listen: SocketAddr,
    dispatcher_url: Option<String>,
    dispatcher_token_file: Option<PathBuf>,
    rules_file: Option<PathBuf>,
    #[serde(default = "d_eval")]
    eval_interval: String,
    #[serde(default = "d_stale")]
    stale_after: String,
    #[serde(default = "d_hb")]
    heartbeat_interval: String,
    #[serde(default = "d_prefix")]
    bucket_prefix: String,
    #[serde(default)]
    probes: Probes,
    #[serde(default)]
    route: Vec<RawRoute>,
    #[serde(default)]
    receiver: Vec<RawReceiver>,
    #[serde(default)]
    inhibit: Vec<RawInhibit>,
    #[serde(default)]
    triage: RawTriage,
}

fn d_eval() -> String {
    "250ms".into()
}
fn d_stale() -> String {
    "5s".into()
}
fn d_hb() -> String {
    "1s".into()
}
fn d_prefix() -> String {
    "sluice_alert".into()
}

/// The optional LLM triage (`[triage]`), off by default.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTriage {
    #[serde(default)]
    enabled: bool,
    #[serde(default = "d_triage_url")]
    base_url: String,
    #[serde(default = "d_triage_key_env")]
    api_key_env: String,
    api_key_file: Option<PathBuf>,
    #[serde(default = "d_triage_model")]
    model: String,
    #[serde(default = "d_triage_interval")]
    interval: String,
    #[serde(default = "d_triage_timeout")]
    timeout: String,
    #[serde(default = "d_triage_tokens")]
    max_tokens: u32,
}

impl Default for RawTriage {
    fn default() -> Self {
        RawTriage {
            enabled: false,
            base_url: d_triage_url(),
            api_key_env: d_triage_key_env(),
            api_key_file: None,
            model: d_triage_model(),
            interval: d_triage_interval(),
            timeout: d_triage_timeout(),
            max_tokens: d_triage_tokens(),
        }
    }
}

fn d_triage_url() -> String {
    "https://api.holysheep.ai/v1".into()
}
fn d_triage_key_env() -> String {
    "HOLYSHEEP_API_KEY".into()
}
fn d_triage_model() -> String {
    "deepseek-chat".into()
}
fn d_triage_interval() -> String {
    "5m".into()
}
fn d_triage_timeout() -> String {
    "30s".into()
}
fn d_triage_tokens() -> u32 {
    400
}

/// The LLM triage, when enabled: a summary of the figures and open alerts
/// every `interval`, through the signal crate's gateway client.
#[derive(Debug, Clone)]
pub struct TriageConfig {
    pub base_url: String,
    pub api_key: SecretString,
    pub model: String,
    pub interval_ms: i64,
    pub timeout_ms: i64,
    pub max_tokens: u32,
}

impl RawTriage {
    fn check(&self, env: &dyn Fn(&str) -> Option<String>) -> Result<Option<TriageConfig>, ConfigError> {
        if !self.enabled {
            return Ok(None);
        }
        let bad = |m: String| Err(ConfigError::Invalid(format!("triage: {m}")));
        if !(self.base_url.starts_with("http://") || self.base_url.starts_with("https://")) {
            return bad(format!("base_url '{}' is not an http(s) URL", self.base_url));
        }
        let from_file = match &self.api_key_file {
            Some(p) => {
                Some(std::fs::read_to_string(p).map_err(|e| ConfigError::Invalid(format!("triage: api_key_file {}: {e}", p.display())))?)
            }
            None => None,
        };
        let Some(key) = env(&self.api_key_env).or(from_file).filter(|k| !k.trim().is_empty()) else {
            return bad(format!("enabled, but {} is not set and no api_key_file is given (or set enabled = false)", self.api_key_env));
        };
        let interval_ms = dur("triage.interval", &self.interval)?;
        let timeout_ms = dur("triage.timeout", &self.timeout)?;
        if interval_ms < 10_000 || timeout_ms <= 0 || timeout_ms >= interval_ms {
            return bad("interval must be at least 10s and timeout positive and shorter than interval".into());
        }
        if self.model.trim().is_empty() || self.max_tokens == 0 {
            return bad("model must be named and max_tokens positive".into());
        }
        Ok(Some(TriageConfig {
            base_url: self.base_url.clone(),
            api_key: SecretString::from(key.trim().to_owned()),
            model: self.model.clone(),
            interval_ms,
            timeout_ms,
            max_tokens: self.max_tokens,
        }))
    }
}

/// Probes of each exchange through the dispatcher.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Probes {
    #[serde(default = "d_probe_every")]
    pub interval: String,
    /// After a failure the same probe runs again this soon, so "3 in a row"
    /// takes seconds.
    #[serde(default = "d_probe_retry")]
    pub retry_interval: String,
    #[serde(default = "d_probe_timeout")]
    pub timeout: String,
    /// A probe answered slower than this is followed by another after
    /// `retry_interval` too, so a latency alert resolves soon after the heal.
    #[serde(default = "d_probe_slow")]
    pub slow_after: String,
    #[serde(default)]
    pub exchange: Vec<ProbeTarget>,
}

impl Default for Probes {
    fn default() -> Self {
        Probes {
            interval: d_probe_every(),
            retry_interval: d_probe_retry(),
            timeout: d_probe_timeout(),
            slow_after: d_probe_slow(),
            exchange: Vec::new(),
        }
    }
}

fn d_probe_every() -> String {
    "30s".into()
}
fn d_probe_retry() -> String {
    "2s".into()
}
fn d_probe_timeout() -> String {
    "5s".into()
}
fn d_probe_slow() -> String {
    "2s".into()
}

/// What is probed on one exchange: two public calls and one account call
/// per account.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProbeTarget {
    pub exchange: String,
    /// Path and query of the ticker call, e.g. "/v1/ticker?markets=KRW-BTC".
    pub ticker: String,
    pub orderbook: String,
    #[serde(default)]
    pub accounts: Vec<String>,
    pub account_call: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRoute {
    #[serde(rename = "match", default)]
    matchers: String,
    receivers: Vec<String>,
    #[serde(default = "d_group_by")]
    group_by: Vec<String>,
    #[serde(default = "d_group_wait")]
    group_wait: String,
    #[serde(default = "d_group_interval")]
    group_interval: String,
    #[serde(default = "d_repeat")]
    repeat_interval: String,
    #[serde(default = "d_true")]
    send_resolved: bool,
    #[serde(default = "d_true")]
    resolve_immediately: bool,
}

fn d_group_by() -> Vec<String> {
    vec!["alertname".into(), "exchange".into()]
}
fn d_group_wait() -> String {
    "1s".into()
}
fn d_group_interval() -> String {
    "30s".into()
}
fn d_repeat() -> String {
    "4h".into()
}
fn d_true() -> bool {
    true
}

/// Where notifications go.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ReceiverKind {
    /// A line in the service's log.
    Console,
    /// Alertmanager's webhook JSON.
    Webhook,
    Slack,
    Discord,
    /// PagerDuty Events API v2.
    Pagerduty,
    /// Email over SMTP.
    Email,
}

/// How an SMTP connection is secured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SmtpTls {
    /// Plain connection upgraded with STARTTLS, which the server must offer
    /// (port 587).
    Starttls,
    /// TLS from the first byte (port 465).
    Tls,
    /// No encryption: only for a relay on the same host or in the same pod.
    None,
}

/// Where and how an email receiver sends.
#[derive(Debug, Clone)]
pub struct EmailConfig {
    pub host: String,
    pub port: u16,
    pub tls: SmtpTls,
    /// Logs in with this user and the receiver's secret (the SMTP password)
    /// when given.
    pub username: Option<String>,
    pub from: lettre::message::Mailbox,
    pub to: Vec<lettre::message::Mailbox>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawReceiver {
    name: String,
    kind: ReceiverKind,
    /// The secret (webhook URL, PagerDuty's routing key, or the SMTP
    /// password) from this environment variable, or this mounted file.
    secret_env: Option<String>,
    secret_file: Option<PathBuf>,
    /// PagerDuty's events endpoint (the default is PagerDuty's own).
    url: Option<String>,
    #[serde(default = "d_probe_timeout")]
    timeout: String,
    // Email only.
    smtp_host: Option<String>,
    smtp_port: Option<u16>,
    smtp_tls: Option<SmtpTls>,
    username: Option<String>,
    from: Option<String>,
    #[serde(default)]
    to: Vec<String>,
}

/// One receiver, its secret read.
#[derive(Debug, Clone)]
pub struct ReceiverConfig {
    pub name: String,
    pub kind: ReceiverKind,
    /// The webhook URL (Slack, Discord, webhook), routing key (PagerDuty) or
    /// SMTP password (email).
    pub secret: Option<SecretString>,
    pub url: Option<String>,
    pub timeout_ms: i64,
    /// For `kind = "email"`.
    pub email: Option<EmailConfig>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawInhibit {
    source: String,
    target: String,
    #[serde(default)]
    equal: Vec<String>,
}

/// An email receiver's settings, checked; `None` for other kinds, which may
/// not carry them.
fn email_config(r: &RawReceiver, has_password: bool) -> Result<Option<EmailConfig>, String> {
    let name = &r.name;
    if r.kind != ReceiverKind::Email {
        let stray = [("smtp_host", r.smtp_host.is_some()), ("smtp_port", r.smtp_port.is_some()), ("smtp_tls", r.smtp_tls.is_some())]
            .into_iter()
            .chain([("username", r.username.is_some()), ("from", r.from.is_some()), ("to", !r.to.is_empty())])
            .find(|(_, set)| *set);
        return match stray {
            Some((key, _)) => Err(format!("receiver '{name}': {key} is for kind = \"email\" only")),
            None => Ok(None),
        };
    }
    let host = r.smtp_host.clone().filter(|h| !h.trim().is_empty()).ok_or(format!("receiver '{name}' (email) needs smtp_host"))?;
    let tls = r.smtp_tls.unwrap_or(SmtpTls::Starttls);
    let port = r.smtp_port.unwrap_or(match tls {
        SmtpTls::Starttls => 587,
        SmtpTls::Tls => 465,
        SmtpTls::None => 25,
    });
    let mailbox = |key: &str, v: &str| {
        v.parse::<lettre::message::Mailbox>().map_err(|e| format!("receiver '{name}': {key} '{v}' is not an email address ({e})"))
    };
    let from = mailbox("from", r.from.as_deref().ok_or(format!("receiver '{name}' (email) needs from"))?)?;
    if r.to.is_empty() {
        return Err(format!("receiver '{name}' (email) needs to = [\"...\"], at least one address"));
    }
    let to = r.to.iter().map(|v| mailbox("to", v)).collect::<Result<Vec<_>, _>>()?;
    match (&r.username, has_password) {
        (Some(_), false) => return Err(format!("receiver '{name}': username needs the password in secret_env or secret_file")),
        (None, true) => return Err(format!("receiver '{name}': a password (secret_env or secret_file) needs a username")),
        _ => {}
    }
    Ok(Some(EmailConfig { host, port, tls, username: r.username.clone(), from, to }))
}

/// The whole configuration, checked.
#[derive(Debug, Clone)]
pub struct AlertingConfig {
    pub service: String,
    pub nats_url: String,
    pub nats_auth: NatsAuth,
    pub listen: SocketAddr,
    pub ops_listen: SocketAddr,
    pub dispatcher_url: Option<String>,
    pub dispatcher_token_file: Option<PathBuf>,
    pub rules: Vec<Rule>,
    pub eval_interval_ms: i64,
    pub stale_after_ms: i64,
    pub heartbeat_interval_ms: i64,
    pub bucket_prefix: String,
    pub probe_interval_ms: i64,
    pub probe_retry_ms: i64,
    pub probe_timeout_ms: i64,
    pub probe_slow_ms: i64,
    pub probes: Vec<ProbeTarget>,
    pub routes: Vec<Route>,
    pub receivers: Vec<ReceiverConfig>,
    pub inhibit: Vec<Inhibit>,
    pub triage: Option<TriageConfig>,
}

fn dur(key: &str, v: &str) -> Result<i64, ConfigError> {
    parse_duration(v).map_err(|e| ConfigError::Invalid(format!("{key}: {e}")))
}

impl AlertingConfig {
    /// Reads `text` (the shipped file when `None`), the environment, and the
    /// rules (`rules_text` when given, else `rules_file`, else the shipped rules).
    pub fn load(text: Option<&str>, rules_text: Option<(&str, &str)>, env: &dyn Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let mut raw: RawConfig = toml::from_str(text.unwrap_or(SHIPPED)).map_err(|e| ConfigError::Parse(e.to_string()))?;
        let var = |k: &str| env(&format!("SLUICE_ALERTING_{k}")).filter(|v| !v.is_empty());
        if let Some(v) = var("NATS_URL") {
            raw.nats_url = v;
        }
        if let Some(v) = var("DISPATCHER_URL") {
            raw.dispatcher_url = Some(v);
        }
        if let Some(v) = var("DISPATCHER_TOKEN_FILE") {
            raw.dispatcher_token_file = Some(v.into());
        }
        if let Some(v) = var("SERVICE") {
            raw.service = v;
        }
        if let Some(v) = var("RULES_FILE") {
            raw.rules_file = Some(v.into());
        }
        for (key, slot) in [("LISTEN", &mut raw.listen), ("OPS_LISTEN", &mut raw.ops_listen)] {
            if let Some(v) = var(key) {
                *slot = v.parse().map_err(|_| ConfigError::Invalid(format!("SLUICE_ALERTING_{key} '{v}' is not an address")))?;
            }
        }
        raw.nats_auth.apply_env(env);
        raw.nats_auth.validate().map_err(|e| ConfigError::Invalid(e.to_string()))?;
        let rules = match (rules_text, &raw.rules_file) {
            (Some((text, name)), _) => crate::rules::parse(text, name)?,
            (None, Some(path)) => {
                let text =
                    std::fs::read_to_string(path).map_err(|e| ConfigError::Invalid(format!("rules_file {}: {e}", path.display())))?;
                crate::rules::parse(&text, &path.display().to_string())?
            }
            (None, None) => crate::rules::parse(crate::rules::SHIPPED, "config/alerts.toml")?,
        };
        Self::check(raw, rules, env)
    }

    fn check(raw: RawConfig, rules: Vec<Rule>, env: &dyn Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let bad = |m: String| Err(ConfigError::Invalid(m));
        if raw.service.is_empty() || !raw.service.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
            return bad(format!("service '{}' may hold only letters, digits, '-' and '_'", raw.service));
        }
        if raw.bucket_prefix.is_empty() || !raw.bucket_prefix.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-') {
            return bad(format!("bucket_prefix '{}' may hold only letters, digits, '-' and '_'", raw.bucket_prefix));
        }
        let mut receivers = Vec::new();
        for r in &raw.receiver {
            if receivers.iter().any(|x: &ReceiverConfig| x.name == r.name) {
                return bad(format!("receiver '{}' is defined twice", r.name));
            }
            let secret = match (&r.secret_env, &r.secret_file) {
                (Some(_), Some(_)) => return bad(format!("receiver '{}': give secret_env or secret_file, not both", r.name)),
                (Some(var), None) => match env(var).filter(|v| !v.trim().is_empty()) {
                    Some(v) => Some(SecretString::from(v.trim().to_owned())),
                    None => return bad(format!("receiver '{}': environment variable {var} is not set", r.name)),
                },
                (None, Some(path)) => match std::fs::read_to_string(path) {
                    Ok(v) if !v.trim().is_empty() => Some(SecretString::from(v.trim().to_owned())),
                    Ok(_) => return bad(format!("receiver '{}': secret_file {} is empty", r.name, path.display())),
                    Err(e) => return bad(format!("receiver '{}': secret_file {}: {e}", r.name, path.display())),
                },
                (None, None) => None,
            };
            if secret.is_none() && !matches!(r.kind, ReceiverKind::Console | ReceiverKind::Email) {
                return bad(format!("receiver '{}' ({:?}) needs secret_env or secret_file (its URL or routing key)", r.name, r.kind));
            }
            let email = email_config(r, secret.is_some()).map_err(ConfigError::Invalid)?;
            receivers.push(ReceiverConfig {
                name: r.name.clone(),
                kind: r.kind,
                secret,
                url: r.url.clone(),
                timeout_ms: dur(&format!("receiver '{}' timeout", r.name), &r.timeout)?,
                email,
            });
        }
        let mut routes = Vec::new();
        for (i, r) in raw.route.iter().enumerate() {
            let matchers = parse_matchers(&r.matchers).map_err(|e| ConfigError::Invalid(format!("route {}: match: {e}", i + 1)))?;
            for name in &r.receivers {
                if !receivers.iter().any(|x| &x.name == name) {
                    return bad(format!("route {}: no receiver named '{name}'", i + 1));
                }
            }
            let route = Route {
                matchers,
                receivers: r.receivers.clone(),
                group_by: r.group_by.clone(),
                group_wait_ms: dur("group_wait", &r.group_wait)?,
                group_interval_ms: dur("group_interval", &r.group_interval)?,
                repeat_interval_ms: dur("repeat_interval", &r.repeat_interval)?,
                send_resolved: r.send_resolved,
                resolve_immediately: r.resolve_immediately,
            };
            if route.group_interval_ms <= 0 || route.repeat_interval_ms < route.group_interval_ms {
                return bad(format!("route {}: group_interval must be positive and repeat_interval at least group_interval", i + 1));
            }
            routes.push(route);
        }
        if routes.is_empty() {
            return bad("at least one [[route]] is needed (an empty match = every alert)".into());
        }
        let inhibit = raw
            .inhibit
            .iter()
            .enumerate()
            .map(|(i, r)| {
                let m = |s: &str| parse_matchers(s).map_err(|e| ConfigError::Invalid(format!("inhibit {}: {e}", i + 1)));
                Ok(Inhibit { source: m(&r.source)?, target: m(&r.target)?, equal: r.equal.clone() })
            })
            .collect::<Result<Vec<_>, ConfigError>>()?;
        for p in &raw.probes.exchange {
            if !["upbit", "bybit", "binance", "okx"].contains(&p.exchange.as_str()) {
                return bad(format!("probes: exchange '{}' is not upbit, bybit, binance or okx", p.exchange));
            }
            if !p.accounts.is_empty() && p.account_call.is_none() {
                return bad(format!("probes: exchange '{}' lists accounts but no account_call", p.exchange));
            }
        }
        let triage = raw.triage.check(env)?;
        let c = AlertingConfig {
            service: raw.service,
            nats_url: raw.nats_url,
            nats_auth: raw.nats_auth,
            listen: raw.listen,
            ops_listen: raw.ops_listen,
            dispatcher_url: raw.dispatcher_url.filter(|u| !u.is_empty()),
            dispatcher_token_file: raw.dispatcher_token_file,
            rules,
            eval_interval_ms: dur("eval_interval", &raw.eval_interval)?,
            stale_after_ms: dur("stale_after", &raw.stale_after)?,
            heartbeat_interval_ms: dur("heartbeat_interval", &raw.heartbeat_interval)?,
            bucket_prefix: raw.bucket_prefix,
            probe_interval_ms: dur("probes.interval", &raw.probes.interval)?,
            probe_retry_ms: dur("probes.retry_interval", &raw.probes.retry_interval)?,
            probe_timeout_ms: dur("probes.timeout", &raw.probes.timeout)?,
            probe_slow_ms: dur("probes.slow_after", &raw.probes.slow_after)?,
            probes: raw.probes.exchange,
            routes,
            receivers,
            inhibit,
            triage,
        };
        if c.eval_interval_ms <= 0 || c.heartbeat_interval_ms <= 0 || c.probe_interval_ms <= 0 || c.probe_retry_ms <= 0 {
            return bad("eval_interval, heartbeat_interval, probes.interval and probes.retry_interval must be positive".into());
        }
        Ok(c)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shipped_config_loads_with_its_webhook_secret_from_the_environment() {
        let env = |k: &str| (k == "SLUICE_ALERT_WEBHOOK_URL").then(|| "http://127.0.0.1:1/hook".to_owned());
        let c = AlertingConfig::load(None, None, &env).unwrap();
        assert!(c.rules.len() >= 8);
        assert!(!c.routes.is_empty());
        let hook = c.receivers.iter().find(|r| r.kind == ReceiverKind::Webhook).unwrap();
        assert!(!format!("{hook:?}").contains("127.0.0.1:1"), "the secret never shows in Debug");
    }

    #[test]
    fn a_missing_secret_and_an_unknown_receiver_are_named() {
        let e = AlertingConfig::load(None, None, &|_| None).unwrap_err().to_string();
        assert!(e.contains("SLUICE_ALERT_WEBHOOK_URL is not set"), "{e}");
        let text = SHIPPED.replace("receivers = [\"console\", \"webhook\"]", "receivers = [\"console\", \"nobody\"]");
        let env = |k: &str| (k == "SLUICE_ALERT_WEBHOOK_URL").then(|| "http://x".to_owned());
        let e = AlertingConfig::load(Some(&text), None, &env).unwrap_err().to_string();
        assert!(e.contains("no receiver named 'nobody'"), "{e}");
    }

    const MAIL: &str = r#"
[[receiver]]
name = "mail"
kind = "email"
smtp_host = "smtp.example.com"
username = "alerts"
secret_env = "SMTP_PASSWORD"
from = "sluice <alerts@example.com>"
to = ["oncall@example.com"]
"#;

    fn with_mail(extra: &str) -> Result<AlertingConfig, ConfigError> {
        let text = format!("{SHIPPED}\n{extra}");
        let env = |k: &str| match k {
            "SLUICE_ALERT_WEBHOOK_URL" => Some("http://x".to_owned()),
            "SMTP_PASSWORD" => Some("pw-secret".to_owned()),
            _ => None,
        };
        AlertingConfig::load(Some(&text), None, &env)
    }

    #[test]
    fn an_email_receiver_gets_starttls_on_587_and_its_mistakes_are_named() {
        let c = with_mail(MAIL).unwrap();
        let mail = c.receivers.iter().find(|r| r.name == "mail").unwrap();
        let e = mail.email.as_ref().unwrap();
        assert_eq!((e.tls, e.port, e.host.as_str()), (SmtpTls::Starttls, 587, "smtp.example.com"));
        assert_eq!(e.to[0].email.to_string(), "oncall@example.com");
        assert!(!format!("{mail:?}").contains("pw-secret"));

        let err = |text: String| with_mail(&text).unwrap_err().to_string();
        let e = err(MAIL.replace("to = [\"oncall@example.com\"]", "to = [\"oncall at example\"]"));
        assert!(e.contains("to 'oncall at example' is not an email address"), "{e}");
        let e = err(MAIL.replace("smtp_host = \"smtp.example.com\"\n", ""));
        assert!(e.contains("'mail' (email) needs smtp_host"), "{e}");
        let e = err(MAIL.replace("username = \"alerts\"\n", ""));
        assert!(e.contains("needs a username"), "{e}");
        let e = err(MAIL.replace("to = [\"oncall@example.com\"]", ""));
        assert!(e.contains("needs to = "), "{e}");
        let e = err(MAIL.replace("kind = \"email\"", "kind = \"slack\""));
        assert!(e.contains("is for kind = \"email\" only"), "{e}");
        let e = err(MAIL.replace("smtp_host", "smtp_hots"));
        assert!(e.contains("smtp_hots"), "{e}");
    }

    #[test]
    fn triage_is_off_by_default_and_needs_its_key_when_on() {
        let env = |k: &str| match k {
            "SLUICE_ALERT_WEBHOOK_URL" => Some("http://x".to_owned()),
            "LLM_KEY" => Some("sk-triage".to_owned()),
            _ => None,
        };
        assert!(AlertingConfig::load(None, None, &env).unwrap().triage.is_none());
        let on = SHIPPED.replace("enabled = false", "enabled = true");
        let e = AlertingConfig::load(Some(&on), None, &env).unwrap_err().to_string();
        assert!(e.contains("HOLYSHEEP_API_KEY is not set"), "{e}");
        let on = on.replace("\"HOLYSHEEP_API_KEY\"", "\"LLM_KEY\"").replace("\"5m\"", "\"1m\"");
        let t = AlertingConfig::load(Some(&on), None, &env).unwrap().triage.unwrap();
        assert_eq!((t.interval_ms, t.timeout_ms, t.model.as_str()), (60_000, 30_000, "deepseek-chat"));
        assert!(!format!("{t:?}").contains("sk-triage"));
        let e = AlertingConfig::load(Some(&on.replace("\"1m\"", "\"5s\"")), None, &env).unwrap_err().to_string();
        assert!(e.contains("interval must be at least 10s"), "{e}");
    }
}
