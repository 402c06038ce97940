//! An OpenAI-compatible chat-completions client (`POST {base}/chat/completions`,
//! bearer key), streamed so that a slow first token is seen as such: the first
//! content must arrive within `first_token`, the whole answer within `total`.
//! Errors come classified ([`CallError`]) so the router can retry what is worth
//! retrying and never what is not. The key is a `SecretString`: never logged,
//! never in an error.

use std::time::Duration;

use secrecy::{ExposeSecret, SecretString};
use serde_json::{Value, json};
use tokio::time::Instant;

/// How the answer must be shaped.
#[derive(Debug, Clone, PartialEq)]
pub enum Format {
    /// `response_format: json_schema` (strict) with this schema.
    JsonSchema { name: String, schema: Value },
    /// `response_format: json_object`; the schema goes in the prompt and is
    /// checked locally.
    JsonObject,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChatMessage {
    /// "system", "user" or "assistant".
    pub role: &'static str,
    pub content: String,
}

/// One call.
#[derive(Debug, Clone)]
pub struct ChatRequest {
    pub model: String,
    pub messages: Vec<ChatMessage>,
    pub format: Format,
    pub max_tokens: u32,
    pub temperature: f32,
    pub first_token: Duration,
    pub total: Duration,
}

/// A completed answer.
#[derive(Debug, Clone, PartialEq)]
pub struct Completion {
    pub text: String,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    /// The gateway reported no usage: tokens were estimated (4 characters each).
    pub usage_estimated: bool,
    pub first_token: Duration,
    pub elapsed: Duration,
}

/// Why a call failed, by what to do about it.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum CallError {
    /// 401 / 403: the key is wrong or not allowed this model. Never retried.
    #[error("gateway refused the key (HTTP {status}): {message}")]
    Auth { status: u16, message: String },
    /// 429: wait `retry_after` (when the gateway says) before the next call.
    #[error("gateway rate limit (HTTP 429, retry after {retry_after:?}): {message}")]
    RateLimited { retry_after: Option<Duration>, message: String },
    /// 5xx: the gateway or the model failed; worth a retry.
    #[error("gateway error (HTTP {status}): {message}")]
    Server { status: u16, message: String },
    /// 400, 404, 422...: the request itself is wrong for this model (an unknown
    /// model, an unsupported `response_format`). Not retried as is.
    #[error("gateway refused the request (HTTP {status}): {message}")]
    Rejected { status: u16, message: String },
    #[error("no first token within {0:?}")]
    FirstToken(Duration),
    #[error("no complete answer within {0:?}")]
    Timeout(Duration),
    #[error("cannot reach the gateway: {0}")]
    Transport(String),
    #[error("the gateway's answer is not understood: {0}")]
    Malformed(String),
}

impl CallError {
    /// Worth trying again with the same model.
    pub fn retryable(&self) -> bool {
        matches!(
            self,
            CallError::RateLimited { .. }
                | CallError::Server { .. }
                | CallError::FirstToken(_)
                | CallError::Timeout(_)
                | CallError::Transport(_)
                | CallError::Malformed(_)
        )
    }

    /// A short name for metrics.
    pub fn class(&self) -> &'static str {
        match self {
            CallError::Auth { .. } => "auth",
            CallError::RateLimited { .. } => "rate_limited",
            CallError::Server { .. } => "server",
            CallError::Rejected { .. } => "rejected",
            CallError::FirstToken(_) => "first_token_timeout",
            CallError::Timeout(_) => "timeout",
            CallError::Transport(_) => "transport",
            CallError::Malformed(_) => "malformed",
        }
    }
}

/// The gateway: base URL and key.
#[derive(Clone)]
pub struct Gateway {
    http: reqwest::Client,
    base_url: String,
    key: SecretString,
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway").field("base_url", &self.base_url).field("key", &"[REDACTED]").finish()
    }
}

/// Reads the `Retry-After` header: seconds, or an HTTP date.
fn retry_after(headers: &reqwest::header::HeaderMap) -> Option<Duration> {
    let v = headers.get(reqwest::header::RETRY_AFTER)?.to_str().ok()?.trim();
    if let Ok(s) = v.parse::<f64>() {
        return (s.is_finite() && s >= 0.0).then(|| Duration::from_secs_f64(s.min(3600.0)));
    }
    let at = httpdate_to_unix(v)?;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).ok()?.as_secs();
    Some(Duration::from_secs(at.saturating_sub(now).min(3600)))
}

/// `Sun, 06 Nov 1994 08:49:37 GMT` to Unix seconds.
fn httpdate_to_unix(s: &str) -> Option<u64> {
    let fmt = time::macros::format_description!("[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT");
    let t = time::PrimitiveDateTime::parse(s, &fmt).ok()?;
    u64::try_from(t.assume_utc().unix_timestamp()).ok()
}

/// The `message` of an OpenAI-style error body, or the body's start.
fn error_message(body: &str) -> String {
    serde_json::from_str::<Value>(body)
        .ok()
        .and_then(|v| v.pointer("/error/message").and_then(Value::as_str).map(str::to_owned))
        .unwrap_or_else(|| body.chars().take(300).collect())
}

fn estimate_tokens(chars: usize) -> u64 {
    (chars as u64).div_ceil(4)
}

impl Gateway {
    /// `base_url` such as "https://api.holysheep.ai/v1".
    pub fn new(http: reqwest::Client, base_url: &str, key: SecretString) -> Gateway {
        Gateway { http, base_url: base_url.trim_end_matches('/').to_owned(), key }
    }

    fn body(req: &ChatRequest) -> Value {
        let messages: Vec<Value> = req.messages.iter().map(|m| json!({ "role": m.role, "content": m.content })).collect();
        let format = match &req.format {
            Format::JsonSchema { name, schema } => {
                json!({ "type": "json_schema", "json_schema": { "name": name, "strict": true, "schema": schema } })
            }
            Format::JsonObject => json!({ "type": "json_object" }),
        };
        json!({
            "model": req.model, "messages": messages, "response_format": format, "max_tokens": req.max_tokens,
            "temperature": req.temperature, "stream": true, "stream_options": { "include_usage": true },
        })
    }

    /// One chat completion, streamed.
    pub async fn complete(&self, req: &ChatRequest) -> Result<Completion, CallError> {
        let started = Instant::now();
        let deadline = started + req.total;
        let first_deadline = started + req.first_token.min(req.total);
        let send = self
            .http
            .post(format!("{}/chat/completions", self.base_url))
            .bearer_auth(self.key.expose_secret())
            .json(&Self::body(req))
            .send();
        // The headers count as the first sign of life only with content; until the
        // first token the shorter deadline applies.
        let resp = match tokio::time::timeout_at(first_deadline, send).await {
            Err(_) => return Err(CallError::FirstToken(req.first_token)),
            Ok(Err(e)) => return Err(CallError::Transport(e.without_url().to_string())),
            Ok(Ok(r)) => r,
        };
        let status = resp.status().as_u16();
        if status != 200 {
            let after = retry_after(resp.headers());
            let body = tokio::time::timeout_at(deadline, resp.text()).await.ok().and_then(Result::ok).unwrap_or_default();
            let message = error_message(&body);
            return Err(match status {
                401 | 403 => CallError::Auth { status, message },
                429 => CallError::RateLimited { retry_after: after, message },
                500..=599 => CallError::Server { status, message },
                _ => CallError::Rejected { status, message },
            });
        }
        let streamed = resp
            .headers()
            .get(reqwest::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|ct| ct.starts_with("text/event-stream"));
        if !streamed {
            // A gateway that ignores `stream` answers with one JSON body.
            let body = match tokio::time::timeout_at(deadline, resp.bytes()).await {
                Err(_) => return Err(CallError::Timeout(req.total)),
                Ok(Err(e)) => return Err(CallError::Transport(e.without_url().to_string())),
                Ok(Ok(b)) => b,
            };
            let v: Value = serde_json::from_slice(&body).map_err(|e| CallError::Malformed(e.to_string()))?;
            let text = v.pointer("/choices/0/message/content").and_then(Value::as_str).unwrap_or_default().to_owned();
            let elapsed = started.elapsed();
            return Ok(Self::finish(req, text, v.get("usage"), elapsed, elapsed));
        }
        self.read_stream(req, resp, started, first_deadline, deadline).await
    }

    async fn read_stream(
        &self,
        req: &ChatRequest,
        mut resp: reqwest::Response,
        started: Instant,
        first_deadline: Instant,
        deadline: Instant,
    ) -> Result<Completion, CallError> {
        let mut text = String::new();
        let mut usage: Option<Value> = None;
        let mut first: Option<Duration> = None;
        let mut pending = String::new();
        loop {
            let until = if first.is_none() { first_deadline } else { deadline };
            let chunk = match tokio::time::timeout_at(until, resp.chunk()).await {
                Err(_) if first.is_none() => return Err(CallError::FirstToken(req.first_token)),
                Err(_) => return Err(CallError::Timeout(req.total)),
                Ok(Err(e)) => return Err(CallError::Transport(e.without_url().to_string())),
                Ok(Ok(None)) => break,
                Ok(Ok(Some(c))) => c,
            };
            pending.push_str(&String::from_utf8_lossy(&chunk));
            // Server-sent events: one `data:` line per event, events end with a blank line.
            while let Some(nl) = pending.find('\n') {
                let line: String = pending.drain(..=nl).collect();
                let Some(data) = line.trim().strip_prefix("data:") else { continue };
                let data = data.trim();
                if data == "[DONE]" {
                    let elapsed = started.elapsed();
                    return Ok(Self::finish(req, text, usage.as_ref(), first.unwrap_or(elapsed), elapsed));
                }
                let v: Value = serde_json::from_str(data).map_err(|e| CallError::Malformed(format!("stream event: {e}")))?;
                if let Some(m) = v.pointer("/error/message").and_then(Value::as_str) {
                    return Err(CallError::Server { status: 200, message: m.to_owned() });
                }
                if let Some(c) = v.pointer("/choices/0/delta/content").and_then(Value::as_str)
                    && !c.is_empty()
                {
                    first.get_or_insert_with(|| started.elapsed());
                    text.push_str(c);
                }
                if let Some(u) = v.get("usage").filter(|u| !u.is_null()) {
                    usage = Some(u.clone());
                }
            }
        }
        if first.is_none() {
            return Err(CallError::Malformed("the stream ended without content".into()));
        }
        let elapsed = started.elapsed();
        Ok(Self::finish(req, text, usage.as_ref(), first.unwrap_or(elapsed), elapsed))
    }

    fn finish(req: &ChatRequest, text: String, usage: Option<&Value>, first_token: Duration, elapsed: Duration) -> Completion {
        let tokens = |k: &str| usage.and_then(|u| u.get(k)).and_then(Value::as_u64);
        let (prompt, completion, estimated) = match (tokens("prompt_tokens"), tokens("completion_tokens")) {
            (Some(p), Some(c)) => (p, c, false),
            _ => {
                let prompt_chars: usize = req.messages.iter().map(|m| m.content.len()).sum();
                (estimate_tokens(prompt_chars), estimate_tokens(text.len()), true)
            }
        };
        Completion { text, prompt_tokens: prompt, completion_tokens: completion, usage_estimated: estimated, first_token, elapsed }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_after_reads_seconds_and_dates() {
        let mut h = reqwest::header::HeaderMap::new();
        h.insert(reqwest::header::RETRY_AFTER, "2".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::from_secs(2)));
        h.insert(reqwest::header::RETRY_AFTER, "0.5".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::from_millis(500)));
        h.insert(reqwest::header::RETRY_AFTER, "Sun, 06 Nov 1994 08:49:37 GMT".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::ZERO), "a date in the past: now");
        assert_eq!(httpdate_to_unix("Sun, 06 Nov 1994 08:49:37 GMT"), Some(784_111_777));
        h.insert(reqwest::header::RETRY_AFTER, "soon".parse().unwrap());
        assert_eq!(retry_after(&h), None);
    }

    #[test]
    fn error_messages_come_from_the_body() {
        assert_eq!(error_message(r#"{"error":{"message":"Incorrect API key","type":"invalid_request_error"}}"#), "Incorrect API key");
        assert_eq!(error_message("upstream down"), "upstream down");
    }

    #[test]
    fn the_key_never_shows_in_debug() {
        let g = Gateway::new(sluice_service::http_client::client(), "http://x/v1/", SecretString::from("sk-very-secret"));
        let s = format!("{g:?}");
        assert!(!s.contains("sk-very-secret") && s.contains("http://x/v1"), "{s}");
    }
}
