//! Sending one notification to one receiver, and what its answer means: a 2xx
//! is delivered; a 429 or a 5xx, a timeout or a connection failure is worth
//! another attempt (a 429's `Retry-After` says when); any other 4xx will not
//! get better by trying again. The retrying itself is the notification log's
//! (`crate::nflog`): it survives this replica, and only one sender retries.
//!
//! Secrets (webhook URLs, PagerDuty routing keys) stay in `SecretString` and
//! never reach an error: transport errors are shown without their URL.

use std::time::Duration;

use secrecy::ExposeSecret;

use crate::config::{ReceiverConfig, ReceiverKind};
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

/// A receiver ready to send.
#[derive(Clone, Debug)]
pub struct Receiver {
    pub config: ReceiverConfig,
    http: reqwest::Client,
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
        Receiver { config, http: sluice_service::http_client::client() }
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
