//! The optional LLM triage (seed 001's five-minute AI analysis): every
//! `interval`, the rules' current figures and the open alerts go to a model
//! through the signal crate's gateway client, and its short summary is kept
//! for the notifications that follow.
//!
//! The triage never holds a notification back: notifications take the last
//! summary if it is fresh (at most two intervals old) and go without one
//! otherwise. A gateway that fails, answers late or answers nonsense only
//! costs the summary (counted in `sluice_alerting_triage_total{result}`).
//!
//! [`messages`] and [`parse`] are pure; [`run`] is the periodic task.

use std::sync::Arc;
use std::time::Duration;

use sluice_proto::alert::v1 as pb;
use sluice_signal::gateway::{ChatMessage, ChatRequest, Format, Gateway};
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;

use crate::config::TriageConfig;
use crate::engine::{Input, Shared};
use crate::matcher::Labels;
use crate::metrics::{Metrics, ResultLabels};
use crate::rules::Condition;

/// At most this many figures go into one question (those that hold first).
const MAX_FIGURES: usize = 60;
/// At most this many open alerts go into one question.
const MAX_ALERTS: usize = 40;
/// A summary is cut to this many characters.
const MAX_SUMMARY: usize = 1_000;

/// One rule's current value for one series.
#[derive(Clone, Debug, PartialEq)]
pub struct Figure {
    pub rule: String,
    pub labels: Labels,
    pub value: f64,
    pub condition: Condition,
}

impl Figure {
    fn holds(&self) -> bool {
        self.condition.holds(self.value)
    }
}

/// The last summary and when it was made.
#[derive(Clone, Debug, PartialEq)]
pub struct Summary {
    pub text: String,
    pub at_ms: i64,
}

/// The summary to attach at `now`: the last one, if at most two intervals old.
pub fn fresh(last: Option<&Summary>, now: i64, interval_ms: i64) -> Option<String> {
    last.filter(|s| now - s.at_ms <= 2 * interval_ms).map(|s| s.text.clone())
}

fn labels_text(l: &Labels) -> String {
    let parts: Vec<String> = l.iter().map(|(k, v)| format!("{k}={v}")).collect();
    format!("{{{}}}", parts.join(","))
}

fn when(ms: i64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(ms as i128 * 1_000_000).unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    t.format(&time::format_description::well_known::Rfc3339).unwrap_or_default()
}

const SYSTEM: &str = "You are the on-call assistant of sluice, a crypto trading platform whose dispatcher \
    calls the exchanges (Upbit, Bybit, Binance, OKX) under their rate limits. You are given the alert \
    rules' current figures and the open alerts. Write a triage for the engineer on call: what is wrong, \
    the likely cause, and what to check first; say plainly when all is well. At most four sentences, \
    no speculation beyond the figures. Answer with one JSON object: {\"summary\": \"...\"}.";

/// The question: the open alerts and the figures, bounded in size.
pub fn messages(figures: &[Figure], alerts: &[pb::Alert], now: i64) -> Vec<ChatMessage> {
    let mut user = vec![format!("Time: {}", when(now))];
    let open: Vec<&pb::Alert> = alerts.iter().filter(|a| a.state != pb::AlertState::Resolved as i32).collect();
    if open.is_empty() {
        user.push("Open alerts: none.".into());
    } else {
        user.push(format!("Open alerts ({}):", open.len()));
        for a in open.iter().take(MAX_ALERTS) {
            let state = match pb::AlertState::try_from(a.state) {
                Ok(pb::AlertState::Pending) => "pending",
                Ok(pb::AlertState::Firing) => "firing",
                _ => "?",
            };
            let sev = match pb::Severity::try_from(a.severity) {
                Ok(pb::Severity::Critical) => "critical",
                Ok(pb::Severity::Warning) => "warning",
                Ok(pb::Severity::Info) => "info",
                _ => "?",
            };
            // The name and severity are said already.
            let labels: Labels =
                a.labels.iter().filter(|(k, _)| *k != "alertname" && *k != "severity").map(|(k, v)| (k.clone(), v.clone())).collect();
            let summary = a.annotations.get("summary").map(String::as_str).unwrap_or("");
            let muted = if a.silenced_by.is_empty() && a.inhibited_by.is_empty() { "" } else { " (muted)" };
            user.push(format!("- {} {} {}{} {}: {}", a.name, sev, state, muted, labels_text(&labels), summary));
        }
    }
    let mut figs: Vec<&Figure> = figures.iter().collect();
    figs.sort_by(|a, b| b.holds().cmp(&a.holds()).then_with(|| a.rule.cmp(&b.rule)));
    user.push(format!("Figures ({} series; rule, series, value, threshold):", figures.len()));
    for f in figs.iter().take(MAX_FIGURES) {
        let (cmp, t) = match f.condition {
            Condition::Above(t) => ("above", t),
            Condition::Below(t) => ("below", t),
        };
        let mark = if f.holds() { " HOLDS" } else { "" };
        user.push(format!("- {} {} = {:.4} (alerts {cmp} {t}){mark}", f.rule, labels_text(&f.labels), f.value));
    }
    if figs.len() > MAX_FIGURES {
        user.push(format!("... and {} more that do not hold.", figs.len() - MAX_FIGURES));
    }
    vec![ChatMessage { role: "system", content: SYSTEM.into() }, ChatMessage { role: "user", content: user.join("\n") }]
}

/// The summary in a model's answer, mended when it can be (code fences,
/// prose around the object, trailing commas); one paragraph, cut to size.
pub fn parse(text: &str) -> Result<String, String> {
    let json = sluice_signal::output::repair(text).ok_or("the answer holds no JSON object")?;
    let v: serde_json::Value = serde_json::from_str(&json).map_err(|e| format!("the answer is not JSON: {e}"))?;
    let s = v.get("summary").and_then(|s| s.as_str()).ok_or("the answer has no \"summary\" string")?;
    let one: String = s.split_whitespace().collect::<Vec<_>>().join(" ");
    if one.is_empty() {
        return Err("the summary is empty".into());
    }
    Ok(one.chars().take(MAX_SUMMARY).collect())
}

/// Why a triage produced nothing: a metric label and the message.
struct Failed {
    label: &'static str,
    why: String,
}

/// Asks the engine for the figures, then the model for a summary.
async fn once(cfg: &TriageConfig, gateway: &Gateway, engine: &mpsc::Sender<Input>, shared: &Shared) -> Result<String, Failed> {
    let stopped = || Failed { label: "stopped", why: "the engine has stopped".into() };
    let (tx, rx) = oneshot::channel();
    engine.send(Input::Figures(tx)).await.map_err(|_| stopped())?;
    let figures = rx.await.map_err(|_| stopped())?;
    let alerts = shared.alerts.lock().unwrap_or_else(|p| p.into_inner()).clone();
    let timeout = Duration::from_millis(cfg.timeout_ms as u64);
    let req = ChatRequest {
        model: cfg.model.clone(),
        messages: messages(&figures, &alerts, crate::nflog::now_ms()),
        format: Format::JsonObject,
        max_tokens: cfg.max_tokens,
        temperature: 0.2,
        first_token: timeout,
        total: timeout,
    };
    let answer = gateway.complete(&req).await.map_err(|e| Failed { label: e.class(), why: e.to_string() })?;
    parse(&answer.text).map_err(|why| Failed { label: "malformed", why })
}

/// Every `interval` (the first a few seconds after start, once heartbeats
/// have come in): a summary into `shared.triage`.
pub async fn run(
    cfg: TriageConfig,
    gateway: Gateway,
    engine: mpsc::Sender<Input>,
    shared: Arc<Shared>,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) {
    let every = Duration::from_millis(cfg.interval_ms as u64);
    let mut next = tokio::time::Instant::now() + every.min(Duration::from_secs(5));
    loop {
        tokio::select! {
            _ = tokio::time::sleep_until(next) => {}
            _ = shutdown.cancelled() => return,
        }
        next += every;
        let result = tokio::select! {
            r = once(&cfg, &gateway, &engine, &shared) => r,
            _ = shutdown.cancelled() => return,
        };
        let label = match result {
            Ok(text) => {
                tracing::info!(model = %cfg.model, "triage: {text}");
                *shared.triage.lock().unwrap_or_else(|p| p.into_inner()) = Some(Summary { text, at_ms: crate::nflog::now_ms() });
                "ok"
            }
            Err(f) => {
                tracing::warn!(model = %cfg.model, result = f.label, "triage failed; notifications go without it: {}", f.why);
                f.label
            }
        };
        metrics.triage.get_or_create(&ResultLabels { result: label.to_owned() }).inc();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fig(rule: &str, exchange: &str, value: f64, t: f64) -> Figure {
        Figure { rule: rule.into(), labels: [("exchange".to_owned(), exchange.to_owned())].into(), value, condition: Condition::Above(t) }
    }

    #[test]
    fn the_question_puts_open_alerts_and_holding_figures_first() {
        let mut figures: Vec<Figure> = (0..70).map(|i| fig("ExchangeLatencyHigh", &format!("x{i:02}"), 0.1, 2.0)).collect();
        figures.push(fig("ExchangeErrorRate", "upbit", 0.92, 0.5));
        let alert = pb::Alert {
            name: "ExchangeErrorRate".into(),
            labels: [("exchange".to_owned(), "upbit".to_owned())].into(),
            annotations: [("summary".to_owned(), "upbit: 92 % errors".to_owned())].into(),
            severity: pb::Severity::Critical as i32,
            state: pb::AlertState::Firing as i32,
            ..Default::default()
        };
        let m = messages(&figures, &[alert], 0);
        assert_eq!(m[0].role, "system");
        let user = &m[1].content;
        assert!(user.contains("- ExchangeErrorRate critical firing {exchange=upbit}: upbit: 92 % errors"), "{user}");
        let first_figure = user.lines().find(|l| l.starts_with("- ExchangeErrorRate {")).unwrap();
        assert!(first_figure.ends_with("HOLDS"), "{first_figure}");
        assert!(user.find(first_figure).unwrap() < user.find("ExchangeLatencyHigh").unwrap());
        assert!(user.contains("... and 11 more that do not hold."), "{user}");
        let m = messages(&[], &[], 0);
        assert!(m[1].content.contains("Open alerts: none."));
    }

    #[test]
    fn answers_are_mended_or_refused_by_name() {
        assert_eq!(parse("```json\n{\"summary\": \"Upbit  answers\n503.\",}\n```").unwrap(), "Upbit answers 503.");
        assert!(parse("All is well.").unwrap_err().contains("no JSON object"));
        assert!(parse("{\"verdict\": \"ok\"}").unwrap_err().contains("no \"summary\""));
        assert!(parse("{\"summary\": \"  \"}").unwrap_err().contains("empty"));
        assert_eq!(parse(&format!("{{\"summary\": \"{}\"}}", "a".repeat(5_000))).unwrap().len(), MAX_SUMMARY);
    }

    #[test]
    fn a_summary_is_attached_for_two_intervals_only() {
        let s = Summary { text: "fine".into(), at_ms: 1_000 };
        assert_eq!(fresh(Some(&s), 1_000 + 600_000, 300_000), Some("fine".into()));
        assert_eq!(fresh(Some(&s), 1_001 + 600_000, 300_000), None);
        assert_eq!(fresh(None, 0, 300_000), None);
    }
}
