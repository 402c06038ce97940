//! Which model answers, and what happens when it cannot: per call, retries by
//! error class (never after a refused key; after a 429 not before its
//! `Retry-After`), then the model's fallback; a model that keeps failing cools
//! down; a model past its daily budget is skipped for the cheap one (or, when so
//! configured, nothing is called). A valid answer is parsed with repair; an
//! invalid one is asked again once with the validation error; after that the
//! signal is HOLD with confidence 0 and the reason. Every call's tokens and money
//! are counted, failed ones included.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use rust_decimal::Decimal;
use tokio::time::Instant;

use crate::cost::{Ledger, Price, utc_day};
use crate::gateway::{CallError, ChatMessage, ChatRequest, Completion, Format, Gateway};
use crate::output::{self, Verdict};

/// One model as configured.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// The gateway's model name, e.g. "deepseek-chat".
    pub name: String,
    /// `{ input_per_m = "0.42", output_per_m = "0.42" }`, US dollars.
    pub price: Price,
    /// The model takes `response_format: json_schema`; otherwise `json_object`
    /// with the schema in the prompt, validated here.
    #[serde(default)]
    pub json_schema: bool,
    /// US dollars a UTC day; none: no limit.
    #[serde(default)]
    pub daily_budget_usd: Option<Decimal>,
    pub first_token_ms: u64,
    pub total_ms: u64,
    pub max_tokens: u32,
    pub temperature: f32,
    /// Tried next when this one fails or cools down.
    #[serde(default)]
    pub fallback: Option<String>,
}

/// Retry and cooldown rules.
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    /// Calls to one model for one question, retries included.
    pub attempts: u32,
    pub backoff_ms: u64,
    /// Consecutive failed questions after which a model cools down.
    pub failures_to_cool: u32,
    pub cooldown_ms: u64,
    /// The longest `Retry-After` worth waiting for; longer ones go to the fallback.
    pub max_retry_after_ms: u64,
    /// A model past its budget: "cheap" routes to `cheap_model`, "stop" calls nothing.
    pub over_budget: OverBudget,
    pub cheap_model: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OverBudget {
    Cheap,
    Stop,
}

/// The outcome of one question: a verdict (or HOLD), who answered, what it cost.
#[derive(Debug, Clone, PartialEq)]
pub struct Answer {
    pub verdict: Verdict,
    /// The model whose answer this is; empty when none answered.
    pub model: String,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub usd: Decimal,
    pub latency: Duration,
    pub calls: u32,
    /// Empty when the first-choice model answered validly at once.
    pub fallback_reason: String,
}

/// What one call to a model did.
#[derive(Debug, Clone, PartialEq)]
pub struct CallRecord {
    pub model: String,
    /// "ok" or the error class.
    pub outcome: &'static str,
    pub prompt_tokens: u64,
    pub completion_tokens: u64,
    pub usd: Decimal,
}

#[derive(Debug, Default)]
struct Health {
    failures: u32,
    cool_until: Option<Instant>,
}

/// A function told of every call, for metrics.
pub type Observer = Box<dyn Fn(&CallRecord) + Send + Sync>;

/// The gateway's own limits, requests and tokens per minute, taken before each
/// call (tokens estimated as the prompt's characters / 4 plus `max_tokens`).
pub struct Limits {
    requests: governor::DefaultDirectRateLimiter,
    tokens: governor::DefaultDirectRateLimiter,
    tokens_per_minute: u32,
}

impl Limits {
    pub fn new(requests_per_minute: u32, tokens_per_minute: u32) -> Limits {
        let per_min = |n: u32| governor::Quota::per_minute(std::num::NonZeroU32::new(n.max(1)).expect("at least 1"));
        Limits {
            requests: governor::RateLimiter::direct(per_min(requests_per_minute)),
            tokens: governor::RateLimiter::direct(per_min(tokens_per_minute)),
            tokens_per_minute: tokens_per_minute.max(1),
        }
    }

    async fn take(&self, tokens: u64) {
        self.requests.until_ready().await;
        // A call larger than a minute's tokens waits for a whole minute's worth.
        let n = u32::try_from(tokens).unwrap_or(u32::MAX).clamp(1, self.tokens_per_minute);
        let n = std::num::NonZeroU32::new(n).expect("clamped to at least 1");
        let _ = self.tokens.until_n_ready(n).await;
    }
}

pub struct Router {
    gateway: Gateway,
    models: HashMap<String, ModelConfig>,
    policy: Policy,
    state: Mutex<(HashMap<String, Health>, Ledger)>,
    observer: Observer,
    limits: Option<Limits>,
    /// A 429's Retry-After holds every call to the gateway, not just the retry.
    paused_until: Mutex<Option<Instant>>,
}

/// A HOLD that says why.
pub fn hold(reason: &str) -> Verdict {
    Verdict {
        action: sluice_proto::signal::v1::Action::Hold,
        confidence: 0.0,
        horizon: String::new(),
        rationale: reason.to_owned(),
        key_levels: Vec::new(),
        repaired: false,
    }
}

fn now_ns() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_nanos() as i64)
}

impl Router {
    pub fn new(gateway: Gateway, models: Vec<ModelConfig>, policy: Policy, observer: Observer) -> Router {
        let models = models.into_iter().map(|m| (m.name.clone(), m)).collect();
        Router {
            gateway,
            models,
            policy,
            state: Mutex::new((HashMap::new(), Ledger::default())),
            observer,
            limits: None,
            paused_until: Mutex::new(None),
        }
    }

    /// Enforces the gateway's limits before every call.
    pub fn with_limits(mut self, limits: Limits) -> Router {
        self.limits = Some(limits);
        self
    }

    /// The configured model `name`.
    pub fn model(&self, name: &str) -> Option<&ModelConfig> {
        self.models.get(name)
    }

    /// Waits out a gateway-wide pause and takes the limits' tokens.
    async fn before_call(&self, req: &ChatRequest) {
        let until = *self.paused_until.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(t) = until {
            tokio::time::sleep_until(t).await;
        }
        if let Some(l) = &self.limits {
            let chars: usize = req.messages.iter().map(|m| m.content.len()).sum();
            l.take((chars as u64).div_ceil(4) + u64::from(req.max_tokens)).await;
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, (HashMap<String, Health>, Ledger)> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// What `model` spent today.
    pub fn spent_today(&self, model: &str) -> Decimal {
        self.lock().1.spent(model, utc_day(now_ns()))
    }

    fn cooling(&self, model: &str) -> bool {
        self.lock().0.get(model).and_then(|h| h.cool_until).is_some_and(|t| t > Instant::now())
    }

    fn over_budget(&self, m: &ModelConfig) -> bool {
        !self.lock().1.within(&m.name, utc_day(now_ns()), m.daily_budget_usd)
    }

    /// Records a question's end for `model`: a success resets its failures; enough
    /// failures in a row, or a refused key, cool it down.
    fn settle(&self, model: &str, ok: bool, auth: bool) {
        let mut st = self.lock();
        let h = st.0.entry(model.to_owned()).or_default();
        if ok {
            *h = Health::default();
            return;
        }
        h.failures += 1;
        if auth || h.failures >= self.policy.failures_to_cool {
            // A refused key will not heal by itself soon: ten cooldowns.
            let d = Duration::from_millis(self.policy.cooldown_ms) * if auth { 10 } else { 1 };
            h.cool_until = Some(Instant::now() + d);
            h.failures = 0;
        }
    }

    fn charge(&self, m: &ModelConfig, outcome: &'static str, c: Option<&Completion>, ans: &mut Answer) {
        let (p, o) = c.map_or((0, 0), |c| (c.prompt_tokens, c.completion_tokens));
        let usd = m.price.cost(p, o);
        self.lock().1.add(&m.name, utc_day(now_ns()), usd);
        ans.prompt_tokens += p;
        ans.completion_tokens += o;
        ans.usd += usd;
        ans.calls += 1;
        (self.observer)(&CallRecord { model: m.name.clone(), outcome, prompt_tokens: p, completion_tokens: o, usd });
    }

    /// Asks `first` (then its fallbacks) the question in `messages`.
    pub async fn ask(&self, first: &str, messages: Vec<ChatMessage>) -> Answer {
        let mut ans = Answer {
            verdict: hold(""),
            model: String::new(),
            prompt_tokens: 0,
            completion_tokens: 0,
            usd: Decimal::ZERO,
            latency: Duration::ZERO,
            calls: 0,
            fallback_reason: String::new(),
        };
        let mut reasons: Vec<String> = Vec::new();
        let mut tried: Vec<String> = Vec::new();
        let mut next = Some(first.to_owned());
        while let Some(name) = next.take() {
            if tried.contains(&name) {
                break;
            }
            tried.push(name.clone());
            let Some(m) = self.models.get(&name) else {
                reasons.push(format!("{name}: not configured"));
                break;
            };
            if self.over_budget(m) {
                reasons.push(format!("{name}: daily budget spent"));
                next = match self.policy.over_budget {
                    OverBudget::Cheap if name != self.policy.cheap_model => Some(self.policy.cheap_model.clone()),
                    _ => None,
                };
                continue;
            }
            if self.cooling(&name) {
                reasons.push(format!("{name}: cooling down after failures"));
                next = m.fallback.clone();
                continue;
            }
            match self.ask_model(m, &messages, &mut ans, &mut reasons).await {
                Some(v) => {
                    ans.verdict = v;
                    ans.model = name;
                    ans.fallback_reason = reasons.join("; ");
                    return ans;
                }
                None => next = m.fallback.clone(),
            }
        }
        reasons.push("no valid answer: HOLD".into());
        ans.fallback_reason = reasons.join("; ");
        ans.verdict = hold(&ans.fallback_reason);
        ans
    }

    /// One model: calls with retries, then a re-ask if the answer is invalid. The
    /// verdict, or `None` (the reason pushed) to try the fallback.
    async fn ask_model(&self, m: &ModelConfig, messages: &[ChatMessage], ans: &mut Answer, reasons: &mut Vec<String>) -> Option<Verdict> {
        let mut format = if m.json_schema {
            Format::JsonSchema { name: output::SCHEMA_NAME.into(), schema: output::schema() }
        } else {
            Format::JsonObject
        };
        let mut msgs = messages.to_vec();
        let mut reasked = false;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let req = ChatRequest {
                model: m.name.clone(),
                messages: msgs.clone(),
                format: format.clone(),
                max_tokens: m.max_tokens,
                temperature: m.temperature,
                first_token: Duration::from_millis(m.first_token_ms),
                total: Duration::from_millis(m.total_ms),
            };
            self.before_call(&req).await;
            let started = Instant::now();
            let result = self.gateway.complete(&req).await;
            ans.latency += started.elapsed();
            match result {
                Ok(c) => {
                    self.charge(m, "ok", Some(&c), ans);
                    match output::parse(&c.text) {
                        Ok(v) => {
                            self.settle(&m.name, true, false);
                            if v.repaired {
                                reasons.push(format!("{}: answer repaired", m.name));
                            }
                            return Some(v);
                        }
                        Err(e) if !reasked => {
                            // Once: the answer and what is wrong with it go back.
                            reasons.push(format!("{}: invalid answer ({e}), asked again", m.name));
                            reasked = true;
                            msgs.push(ChatMessage { role: "assistant", content: c.text.chars().take(4_000).collect() });
                            msgs.push(ChatMessage {
                                role: "user",
                                content: format!(
                                    "That answer is invalid: {e}. Reply with only the JSON object, following the schema exactly."
                                ),
                            });
                        }
                        Err(e) => {
                            reasons.push(format!("{}: invalid again ({e})", m.name));
                            self.settle(&m.name, false, false);
                            return None;
                        }
                    }
                }
                Err(e) => {
                    self.charge(m, e.class(), None, ans);
                    // A model that does not take json_schema: once more with json_object.
                    if let (CallError::Rejected { .. }, Format::JsonSchema { .. }) = (&e, &format) {
                        reasons.push(format!("{}: json_schema refused ({e}); json_object instead", m.name));
                        format = Format::JsonObject;
                        continue;
                    }
                    let backoff = Duration::from_millis(self.policy.backoff_ms << (attempt - 1).min(6));
                    let wait = match &e {
                        CallError::RateLimited { retry_after: Some(after), .. } => {
                            let mut p = self.paused_until.lock().unwrap_or_else(|p| p.into_inner());
                            let until = Instant::now() + *after;
                            *p = Some(p.map_or(until, |t| t.max(until)));
                            *after
                        }
                        _ => backoff,
                    };
                    let too_long = wait > Duration::from_millis(self.policy.max_retry_after_ms);
                    if !e.retryable() || attempt >= self.policy.attempts || too_long {
                        reasons.push(format!("{}: {e}", m.name));
                        self.settle(&m.name, false, matches!(e, CallError::Auth { .. }));
                        return None;
                    }
                    tracing::debug!(model = %m.name, error = %e, wait_ms = wait.as_millis() as u64, "model call failed; retrying");
                    tokio::time::sleep(wait).await;
                }
            }
        }
    }
}
