//! Sending one notification to one receiver, and what its answer means: a 2xx
//! is delivered; a 429 or a 5xx, a timeout or a connection failure is worth
//! another attempt (a 429's `Retry-After` says when); any other 4xx will not
//! get better by trying again. The retrying itself is the notification log's
//! (`crate::nflog`): it survives this replica, and only one sender retries.
//!
//! Email goes over SMTP (lettre): a permanent refusal (5xx) is final, a
//! transient one (4xx), a timeout or a lost connection is retried.
//!
//! Secrets (webhook URLs, PagerDuty routing keys, SMTP passwords) stay in
//! `SecretString` and never reach an error: transport errors are shown
//! without their URL.

use std::time::Duration;

use secrecy::ExposeSecret;

use lettre::transport::smtp::authentication::Credentials;
use lettre::{AsyncSmtpTransport, AsyncTransport, Tokio1Executor};

use crate::config::{EmailConfig, ReceiverConfig, ReceiverKind, SmtpTls};
use crate::payload::{self, Notification};

const PAGERDUTY_EVENTS: &str = "https://events.pagerduty.com/v2/enqueue";

/// How an attempt ended, when it did not deliver.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SendError {
    /// Try again, not before `after` when the receiver said so.
    Retry { reason: String, after: Option<Duration> },
    /// The receiver refused the message itself; trying again will not help.
    Refused(String),
}

impl std::fmt::Display for SendError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SendError::Retry { reason, .. } => write!(f, "{reason} (will retry)"),
            SendError::Refused(r) => write!(f, "{r} (not retried)"),
        }
    }
}

type Smtp = AsyncSmtpTransport<Tokio1Executor>;

/// A receiver ready to send.
#[derive(Clone)]
pub struct Receiver {
    pub config: ReceiverConfig,
    http: reqwest::Client,
    /// For email: the SMTP transport, or why it could not be made (a TLS set-up
    /// that failed), which every send then reports.
    smtp: Option<Result<Smtp, String>>,
}

impl std::fmt::Debug for Receiver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Receiver").field("config", &self.config).finish_non_exhaustive()
    }
}

/// The SMTP transport of an email receiver: its TLS mode, port, timeout and
/// login.
fn smtp(e: &EmailConfig, password: Option<&secrecy::SecretString>, timeout: Duration) -> Result<Smtp, String> {
    let builder = match e.tls {
        SmtpTls::Starttls => Smtp::starttls_relay(&e.host).map_err(|err| format!("SMTP STARTTLS set-up for {}: {err}", e.host))?,
        SmtpTls::Tls => Smtp::relay(&e.host).map_err(|err| format!("SMTP TLS set-up for {}: {err}", e.host))?,
        SmtpTls::None => Smtp::builder_dangerous(&e.host),
    };
    let mut builder = builder.port(e.port).timeout(Some(timeout));
    if let (Some(user), Some(pw)) = (&e.username, password) {
        builder = builder.credentials(Credentials::new(user.clone(), pw.expose_secret().to_owned()));
    }
    Ok(builder.build())
}

/// What an SMTP failure means for delivery: a permanent refusal (5xx: an
/// unknown mailbox, a refused login) will be refused again.
fn classify_smtp(e: &lettre::transport::smtp::Error) -> SendError {
    if e.is_permanent() {
        SendError::Refused(format!("the SMTP server refused the message: {e}"))
    } else if e.is_timeout() {
        SendError::Retry { reason: format!("SMTP timed out: {e}"), after: None }
    } else {
        SendError::Retry { reason: format!("SMTP: {e}"), after: None }
    }
}

/// `Retry-After` as seconds or an HTTP date.
pub fn retry_after(value: &str, now: std::time::SystemTime) -> Option<Duration> {
    let v = value.trim();
    if let Ok(s) = v.parse::<u64>() {
        return Some(Duration::from_secs(s.min(3_600)));
    }
    let at = httpdate::parse_http_date(v).ok()?;
    Some(at.duration_since(now).unwrap_or_default().min(Duration::from_secs(3_600)))
}

/// What an HTTP answer means for delivery.
pub fn classify(status: u16, retry_after_header: Option<&str>, body: &str) -> Result<String, SendError> {
    let snippet: String = body.chars().take(200).collect();
    match status {
        200..=299 => Ok(format!("HTTP {status}")),
        429 => Err(SendError::Retry {
            reason: format!("HTTP 429 from the receiver: {snippet}"),
            after: retry_after_header.and_then(|v| retry_after(v, std::time::SystemTime::now())),
        }),
        408 | 500..=599 => Err(SendError::Retry { reason: format!("HTTP {status} from the receiver: {snippet}"), after: None }),
        _ => Err(SendError::Refused(format!("HTTP {status} from the receiver: {snippet}"))),
    }
}

impl Receiver {
    pub fn new(config: ReceiverConfig) -> Receiver {
        let timeout = Duration::from_millis(config.timeout_ms.max(1) as u64);
        let smtp = config.email.as_ref().map(|e| smtp(e, config.secret.as_ref(), timeout));
        Receiver { config, http: sluice_service::http_client::client(), smtp }
    }

    pub fn name(&self) -> &str {
        &self.config.name
    }

    /// One attempt.
    pub async fn send(&self, n: &Notification) -> Result<String, SendError> {
        let secret = self.config.secret.as_ref().map(|s| s.expose_secret().to_owned()).unwrap_or_default();
        let (url, body) = match self.config.kind {
            ReceiverKind::Console => {
                tracing::warn!(receiver = %self.config.name, group = %n.group_key, status = n.status(), "{}", n.text());
                return Ok("logged".into());
            }
            ReceiverKind::Webhook => (secret, payload::webhook(n)),
            ReceiverKind::Slack => (secret, payload::slack(n)),
            ReceiverKind::Discord => (secret, payload::discord(n)),
            ReceiverKind::Pagerduty => (self.config.url.clone().unwrap_or_else(|| PAGERDUTY_EVENTS.into()), payload::pagerduty(n, &secret)),
            ReceiverKind::Email => return self.send_email(n).await,
        };
        let timeout = Duration::from_millis(self.config.timeout_ms.max(1) as u64);
        let sent = self.http.post(url).timeout(timeout).header("content-type", "application/json").body(body.to_string()).send().await;
        let resp = match sent {
            Ok(r) => r,
            Err(e) => {
                let e = e.without_url();
                let what = if e.is_timeout() {
                    "timed out"
                } else if e.is_connect() {
                    "cannot connect"
                } else {
                    "transport error"
                };
                return Err(SendError::Retry { reason: format!("{what}: {e}"), after: None });
            }
        };
        let status = resp.status().as_u16();
        let ra = resp.headers().get("retry-after").and_then(|v| v.to_str().ok()).map(str::to_owned);
        let text = resp.text().await.unwrap_or_default();
        classify(status, ra.as_deref(), &text)
    }

    async fn send_email(&self, n: &Notification) -> Result<String, SendError> {
        let (Some(e), Some(transport)) = (&self.config.email, &self.smtp) else {
            return Err(SendError::Refused("an email receiver without its SMTP settings".into()));
        };
        let transport = transport.as_ref().map_err(|why| SendError::Refused(why.clone()))?;
        let (subject, body) = payload::email(n);
        let mut message = lettre::Message::builder().from(e.from.clone()).subject(subject);
        for to in &e.to {
            message = message.to(to.clone());
        }
        let message = message
            .header(lettre::message::header::ContentType::TEXT_PLAIN)
            .body(body)
            .map_err(|err| SendError::Refused(format!("the email cannot be built: {err}")))?;
        // lettre's timeout is per command; this bounds the whole exchange.
        let whole = Duration::from_millis(self.config.timeout_ms.max(1) as u64) * 3;
        match tokio::time::timeout(whole, transport.send(message)).await {
            Err(_) => Err(SendError::Retry { reason: format!("SMTP timed out after {whole:?}"), after: None }),
            Ok(Err(err)) => Err(classify_smtp(&err)),
            Ok(Ok(resp)) => Ok(format!("SMTP {}", resp.code())),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_classified() {
        assert!(classify(202, None, "").is_ok());
        assert_eq!(
            classify(429, Some("7"), "slow down"),
            Err(SendError::Retry { reason: "HTTP 429 from the receiver: slow down".into(), after: Some(Duration::from_secs(7)) })
        );
        assert!(matches!(classify(503, None, ""), Err(SendError::Retry { after: None, .. })));
        assert!(matches!(classify(404, None, "no_service"), Err(SendError::Refused(_))));
        let now = std::time::SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000_000);
        let later = httpdate::fmt_http_date(now + Duration::from_secs(30));
        assert_eq!(retry_after(&later, now), Some(Duration::from_secs(30)));
        assert_eq!(retry_after("soon", now), None);
    }
}

#[cfg(test)]
#[path = "receiver_email_tests.rs"]
mod email_tests;
