//! What each receiver is sent, built from one notification: Alertmanager's
//! webhook JSON (version 4), a Slack incoming-webhook message, a Discord
//! webhook message, a PagerDuty Events v2 event (the group key as
//! `dedup_key`, so PagerDuty itself folds repeats into one incident and a
//! resolve closes it), and an email's subject and plain-text body. Pure.

use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::eval::{Alert, State};
use crate::matcher::Labels;
use crate::rules::Severity;

/// One notification to one receiver.
#[derive(Clone, Debug)]
pub struct Notification {
    pub receiver: String,
    pub group_key: String,
    pub group_labels: Labels,
    pub firing: Vec<Alert>,
    pub resolved: Vec<Alert>,
    /// The periodic triage summary, when there is one.
    pub triage: Option<String>,
}

impl Notification {
    pub fn status(&self) -> &'static str {
        if self.firing.is_empty() { "resolved" } else { "firing" }
    }

    fn all(&self) -> impl Iterator<Item = &Alert> {
        self.firing.iter().chain(&self.resolved)
    }

    /// Labels every alert of the notification shares.
    pub fn common_labels(&self) -> Labels {
        let mut it = self.all();
        let Some(first) = it.next() else { return Labels::new() };
        let mut common = first.labels.clone();
        for a in it {
            common.retain(|k, v| a.labels.get(k) == Some(v));
        }
        common
    }

    fn worst(&self) -> Severity {
        self.all().map(|a| a.severity).max().unwrap_or(Severity::Info)
    }

    /// One line per alert, for chat receivers.
    pub fn text(&self) -> String {
        let mut lines = Vec::new();
        let title = match self.status() {
            "firing" => format!("[FIRING:{}] {}", self.firing.len(), group_title(&self.group_labels)),
            _ => format!("[RESOLVED] {}", group_title(&self.group_labels)),
        };
        lines.push(title);
        for a in &self.firing {
            lines.push(format!("• {} ({}): {}", a.name, a.severity.as_str(), a.summary));
        }
        for a in &self.resolved {
            lines.push(format!("✓ resolved {}: {}", a.name, a.summary));
        }
        if let Some(t) = &self.triage {
            lines.push(format!("Triage: {t}"));
        }
        lines.join("\n")
    }
}

fn group_title(l: &Labels) -> String {
    l.values().cloned().collect::<Vec<_>>().join(" ")
}

fn rfc3339(ms: i64) -> String {
    let t = time::OffsetDateTime::from_unix_timestamp_nanos(ms as i128 * 1_000_000).unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    t.format(&time::format_description::well_known::Rfc3339).unwrap_or_default()
}

fn alert_json(a: &Alert) -> Value {
    let status = if a.state == State::Resolved { "resolved" } else { "firing" };
    let mut annotations = serde_json::Map::new();
    annotations.insert("summary".into(), a.summary.clone().into());
    if !a.description.is_empty() {
        annotations.insert("description".into(), a.description.clone().into());
    }
    json!({
        "status": status,
        "labels": a.labels,
        "annotations": annotations,
        "startsAt": rfc3339(a.fired_at.unwrap_or(a.active_at)),
        // Alertmanager's "not ended" time.
        "endsAt": a.resolved_at.map(rfc3339).unwrap_or_else(|| "0001-01-01T00:00:00Z".into()),
        "generatorURL": "",
        "fingerprint": a.fingerprint,
    })
}

/// Alertmanager's webhook body (version 4), so receivers written for it work.
pub fn webhook(n: &Notification) -> Value {
    let common = n.common_labels();
    let first = n.firing.first().or(n.resolved.first());
    let mut common_annotations = serde_json::Map::new();
    if let Some(a) = first.filter(|_| n.all().all(|x| x.summary == first.map(|f| f.summary.as_str()).unwrap_or(""))) {
        common_annotations.insert("summary".into(), a.summary.clone().into());
    }
    if let Some(t) = &n.triage {
        common_annotations.insert("triage".into(), t.clone().into());
    }
    json!({
        "version": "4",
        "groupKey": n.group_key,
        "truncatedAlerts": 0,
        "status": n.status(),
        "receiver": n.receiver,
        "groupLabels": n.group_labels,
        "commonLabels": common,
        "commonAnnotations": common_annotations,
        "externalURL": "",
        "alerts": n.all().map(alert_json).collect::<Vec<_>>(),
    })
}

fn cut(s: &str, max: usize) -> String {
    if s.chars().count() <= max {
        return s.to_owned();
    }
    let mut out: String = s.chars().take(max.saturating_sub(1)).collect();
    out.push('…');
    out
}

fn color(n: &Notification) -> (&'static str, u32) {
    match (n.status(), n.worst()) {
        ("resolved", _) => ("#2eb886", 0x2eb886),
        (_, Severity::Critical) => ("#d00000", 0xd00000),
        (_, Severity::Warning) => ("#daa038", 0xdaa038),
        _ => ("#439fe0", 0x439fe0),
    }
}

/// A Slack incoming-webhook message (text for notifications and the
/// attachment for the colour bar; Slack cuts text at 40,000 characters).
pub fn slack(n: &Notification) -> Value {
    let text = cut(&n.text(), 3_000);
    json!({ "text": text, "attachments": [{ "color": color(n).0, "text": text, "fallback": text }] })
}

/// A Discord webhook message (content at most 2,000 characters, an embed's
/// description at most 4,096).
pub fn discord(n: &Notification) -> Value {
    let text = n.text();
    let title = text.lines().next().unwrap_or_default();
    json!({
        "content": cut(title, 2_000),
        "embeds": [{ "title": cut(title, 256), "description": cut(&text, 4_096), "color": color(n).1 }],
        "allowed_mentions": { "parse": [] },
    })
}

/// PagerDuty's `dedup_key`: at most 255 characters, the same for a group on
/// every replica.
pub fn dedup_key(group_key: &str) -> String {
    let h = Sha256::digest(group_key.as_bytes());
    format!("sluice-{}", hex::encode(&h[..16]))
}

/// A PagerDuty Events v2 event: trigger while anything fires, resolve when
/// the group has resolved.
pub fn pagerduty(n: &Notification, routing_key: &str) -> Value {
    let action = if n.firing.is_empty() { "resolve" } else { "trigger" };
    let severity = match n.worst() {
        Severity::Critical => "critical",
        Severity::Warning => "warning",
        Severity::Info => "info",
    };
    let summary = n.firing.first().or(n.resolved.first()).map(|a| format!("{}: {}", a.name, a.summary)).unwrap_or_default();
    let mut event = json!({
        "routing_key": routing_key,
        "event_action": action,
        "dedup_key": dedup_key(&n.group_key),
    });
    if action == "trigger" {
        event["payload"] = json!({
            "summary": cut(&summary, 1_024),
            "source": "sluice-alerting",
            "severity": severity,
            "group": n.group_labels.get("exchange").cloned().unwrap_or_default(),
            "class": n.group_labels.get("alertname").cloned().unwrap_or_default(),
            "custom_details": { "firing": n.text(), "num_firing": n.firing.len(), "num_resolved": n.resolved.len() },
        });
    }
    event
}

/// An email: a subject line (the chat title, at most 200 characters and on
/// one line, so no header can be smuggled in) and a plain-text body with each
/// alert's labels, start and, once resolved, end.
pub fn email(n: &Notification) -> (String, String) {
    let text = n.text();
    let title = text.lines().next().unwrap_or_default().replace(['\r', '\n'], " ");
    let mut body = vec![text.clone(), String::new()];
    for a in n.all() {
        let state = if a.state == State::Resolved { "resolved" } else { "firing" };
        body.push(format!("{} [{state}, {}]", a.name, a.severity.as_str()));
        body.push(format!("  summary: {}", a.summary));
        if !a.description.is_empty() {
            body.push(format!("  description: {}", a.description));
        }
        let labels: Vec<String> = a.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        body.push(format!("  labels: {}", labels.join(", ")));
        body.push(format!("  since: {}", rfc3339(a.fired_at.unwrap_or(a.active_at))));
        if let Some(t) = a.resolved_at {
            body.push(format!("  resolved at: {}", rfc3339(t)));
        }
        body.push(String::new());
    }
    body.push(format!("group: {}", n.group_key));
    body.push("sent by sluice-alerting".into());
    (cut(&title, 200), body.join("\n"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::eval::tests_support::alert;

    fn n() -> Notification {
        let mut a = alert(
            [
                ("alertname".to_owned(), "ExchangeErrorRate".to_owned()),
                ("exchange".to_owned(), "upbit".to_owned()),
                ("severity".to_owned(), "critical".to_owned()),
            ]
            .into(),
        );
        a.severity = Severity::Critical;
        a.summary = "upbit: 100 % errors".into();
        Notification {
            receiver: "hook".into(),
            group_key: "0:{alertname=\"ExchangeErrorRate\",exchange=\"upbit\"}".into(),
            group_labels: [("alertname".to_owned(), "ExchangeErrorRate".to_owned()), ("exchange".to_owned(), "upbit".to_owned())].into(),
            firing: vec![a],
            resolved: vec![],
            triage: None,
        }
    }

    #[test]
    fn webhook_has_alertmanagers_shape() {
        let v = webhook(&n());
        assert_eq!(v["version"], "4");
        assert_eq!(v["status"], "firing");
        assert_eq!(v["alerts"][0]["labels"]["exchange"], "upbit");
        assert_eq!(v["alerts"][0]["endsAt"], "0001-01-01T00:00:00Z");
        assert_eq!(v["commonLabels"]["severity"], "critical");
        assert_eq!(v["alerts"][0]["startsAt"], "1970-01-01T00:00:00Z");
    }

    #[test]
    fn pagerduty_triggers_then_resolves_under_one_dedup_key() {
        let mut x = n();
        let t = pagerduty(&x, "rk");
        assert_eq!(t["event_action"], "trigger");
        assert_eq!(t["payload"]["severity"], "critical");
        let key = t["dedup_key"].clone();
        assert!(key.as_str().unwrap().len() <= 255);
        let mut a = x.firing.pop().unwrap();
        a.state = State::Resolved;
        x.resolved.push(a);
        let r = pagerduty(&x, "rk");
        assert_eq!((r["event_action"].as_str(), &r["dedup_key"]), (Some("resolve"), &key));
        assert!(r.get("payload").is_none());
    }

    #[test]
    fn email_has_one_subject_line_and_every_alert_in_its_body() {
        let mut x = n();
        x.group_labels.insert("exchange".into(), "upbit\r\nBcc: someone@example.com".into());
        x.triage = Some("upbit's REST API is failing; trading there is paused".into());
        let (subject, body) = email(&x);
        assert!(subject.starts_with("[FIRING:1] ExchangeErrorRate upbit"), "{subject}");
        assert!(!subject.contains('\n') && !subject.contains('\r'), "{subject:?}");
        assert!(body.contains("summary: upbit: 100 % errors"), "{body}");
        assert!(body.contains("labels: alertname=ExchangeErrorRate, exchange=upbit, severity=critical"), "{body}");
        assert!(body.contains("Triage: upbit's REST API is failing"), "{body}");
        let mut a = x.firing.pop().unwrap();
        a.state = State::Resolved;
        a.resolved_at = Some(60_000);
        x.resolved.push(a);
        let (subject, body) = email(&x);
        assert!(subject.starts_with("[RESOLVED]"), "{subject}");
        assert!(body.contains("resolved at: 1970-01-01T00:01:00Z"), "{body}");
    }

    #[test]
    fn chat_messages_stay_within_limits() {
        let mut x = n();
        x.firing[0].summary = "x".repeat(10_000);
        assert!(discord(&x)["embeds"][0]["description"].as_str().unwrap().chars().count() <= 4_096);
        assert!(slack(&x)["text"].as_str().unwrap().chars().count() <= 3_000);
        assert!(slack(&n())["text"].as_str().unwrap().starts_with("[FIRING:1] ExchangeErrorRate upbit"));
    }
}
