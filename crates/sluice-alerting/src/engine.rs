//! The one task that owns the samples, the rules' alerts and the groups: it
//! takes heartbeats and probe results in, evaluates every `eval_interval`,
//! publishes each alert that fires or resolves on `alert.<severity>.<name>`,
//! and hands each due group to a delivery task per receiver.
//!
//! A delivery task (one per receiver and group at a time; a newer flush of
//! the same group replaces what it will send) reads the notification log,
//! sends only what the log says is new, claims the record with
//! compare-and-set before sending, and keeps trying a failed send with
//! backoff (or the receiver's `Retry-After`) until it is delivered, another
//! replica has delivered it, or the group has nothing left to say.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prost::Message;
use sluice_proto::alert::v1 as pb;
use sluice_proto::ops::v1::Heartbeat;
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;

use crate::config::AlertingConfig;
use crate::eval::{Alert, Evaluator, State};
use crate::group::{Groups, Route, needs_send};
use crate::matcher::Labels;
use crate::metrics::{Metrics, ProbeLabels, ProbeResultLabels, SeverityLabels};
use crate::nflog::{self, Nflog, now_ms};
use crate::payload::Notification;
use crate::probe::ProbeResult;
use crate::receiver::{Receiver, SendError};
use crate::series::Store;
use crate::silence::{Silences, inhibited_by};
use crate::triage::{Figure, Summary};

/// What feeds the engine.
pub enum Input {
    Heartbeat(Heartbeat),
    Probe(ProbeResult),
    /// The triage asks for every rule's current figures.
    Figures(oneshot::Sender<Vec<Figure>>),
}

/// What the API reads: the alerts as of the last evaluation, and the silences.
#[derive(Default)]
pub struct Shared {
    pub alerts: Mutex<Vec<pb::Alert>>,
    pub silences: Mutex<Silences>,
    /// The last triage summary (when triage is on).
    pub triage: Mutex<Option<Summary>>,
}

/// Everything a delivery needs.
#[derive(Clone)]
pub struct Delivery {
    pub me: String,
    pub nflog: Nflog,
    pub receivers: Arc<BTreeMap<String, Receiver>>,
    pub metrics: Arc<Metrics>,
    pub shutdown: CancellationToken,
}

fn severity_pb(s: crate::rules::Severity) -> pb::Severity {
    match s {
        crate::rules::Severity::Info => pb::Severity::Info,
        crate::rules::Severity::Warning => pb::Severity::Warning,
        crate::rules::Severity::Critical => pb::Severity::Critical,
    }
}

/// An alert on the wire.
pub fn to_pb(a: &Alert, silenced_by: Vec<String>, inhibited_by: Vec<String>) -> pb::Alert {
    let mut annotations = std::collections::HashMap::new();
    annotations.insert("summary".to_owned(), a.summary.clone());
    if !a.description.is_empty() {
        annotations.insert("description".to_owned(), a.description.clone());
    }
    pb::Alert {
        name: a.name.clone(),
        labels: a.labels.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        annotations,
        severity: severity_pb(a.severity) as i32,
        state: match a.state {
            State::Pending => pb::AlertState::Pending,
            State::Firing => pb::AlertState::Firing,
            State::Resolved => pb::AlertState::Resolved,
        } as i32,
        active_at: Some(nflog::ts(a.active_at)),
        fired_at: a.fired_at.map(nflog::ts),
        resolved_at: a.resolved_at.map(nflog::ts),
        value: a.value,
        fingerprint: a.fingerprint.clone(),
        silenced_by,
        inhibited_by,
    }
}

/// Per probe: failures in a row, kept between results.
type ProbeKey = (String, String, String);

/// The engine's state.
pub struct Engine {
    config: Arc<AlertingConfig>,
    store: Store,
    evaluator: Evaluator,
    groups: Groups,
    probe_failures: HashMap<ProbeKey, i64>,
    shared: Arc<Shared>,
    nats: async_nats::Client,
    delivery: Delivery,
    deliveries: HashMap<String, watch::Sender<(Notification, Route)>>,
    metrics: Arc<Metrics>,
    last_prune: i64,
}

impl Engine {
    pub fn new(config: Arc<AlertingConfig>, shared: Arc<Shared>, nats: async_nats::Client, delivery: Delivery) -> Engine {
        let evaluator = Evaluator::new(config.rules.clone());
        // Keep what the longest rule reads, and at least fifteen minutes.
        let store = Store::new(evaluator.reach_ms().max(900_000) + 60_000);
        let groups = Groups::new(config.routes.clone());
        let metrics = delivery.metrics.clone();
        Engine {
            config,
            store,
            evaluator,
            groups,
            probe_failures: HashMap::new(),
            shared,
            nats,
            delivery,
            deliveries: HashMap::new(),
            metrics,
            last_prune: 0,
        }
    }

    /// Takes one input in.
    pub fn take(&mut self, input: Input, now: i64) {
        match input {
            Input::Figures(reply) => {
                let _ = reply.send(self.figures(now));
            }
            Input::Heartbeat(hb) => {
                if hb.leaving {
                    let (s, i) = (hb.service.clone(), hb.instance.clone());
                    self.store.forget(|l| l.get("service") == Some(&s) && l.get("instance") == Some(&i));
                    tracing::info!(service = %s, instance = %i, "a service left on purpose; its heartbeat is no longer expected");
                    return;
                }
                for (name, labels, value) in crate::ingest::samples(&hb) {
                    self.store.push(&name, labels, now, value);
                }
            }
            Input::Probe(r) => {
                let p = &r.probe;
                let key = (p.exchange.clone(), p.probe.clone(), p.account.clone());
                let failures = self.probe_failures.entry(key).or_insert(0);
                *failures = if r.ok { 0 } else { *failures + 1 };
                let mut labels: Labels = [("exchange".to_owned(), p.exchange.clone()), ("probe".to_owned(), p.probe.clone())].into();
                if !p.account.is_empty() {
                    labels.insert("account".into(), p.account.clone());
                }
                // A probe's figures count until the next probe could have come.
                let fresh = Some(self.config.probe_interval_ms.max(self.config.probe_retry_ms) + self.config.probe_timeout_ms + 1_000);
                self.store.push_fresh_for("sluice_alerting_probe_failures_consecutive", labels.clone(), now, *failures as f64, fresh);
                let ml = ProbeLabels { exchange: p.exchange.clone(), probe: p.probe.clone(), account: p.account.clone() };
                self.metrics.probe_failures.get_or_create(&ml).set(*failures);
                if let Some(lat) = r.latency_s {
                    self.store.push_fresh_for("sluice_alerting_probe_latency_seconds", labels, now, lat, fresh);
                    self.metrics.probe_latency.get_or_create(&ml).set(lat);
                }
                let result = if r.ok { "ok" } else { "failed" };
                self.metrics
                    .probes
                    .get_or_create(&ProbeResultLabels { exchange: p.exchange.clone(), probe: p.probe.clone(), result: result.into() })
                    .inc();
                if !r.ok {
                    tracing::info!(exchange = %p.exchange, probe = %p.probe, account = %p.account, failures = *failures, detail = %r.detail, "probe failed");
                }
            }
        }
    }

    /// Every rule's value per series at `now`, as the rules read it.
    pub fn figures(&self, now: i64) -> Vec<Figure> {
        let mut out = Vec::new();
        for rule in self.evaluator.rules() {
            for (labels, value) in self.store.eval(&rule.expr, now, self.config.stale_after_ms) {
                out.push(Figure { rule: rule.name.clone(), labels, value, condition: rule.condition });
            }
        }
        out
    }

    /// One evaluation at `now`: alerts, their publication, groups, deliveries.
    pub async fn evaluate(&mut self, now: i64) {
        if now - self.last_prune > 10_000 {
            self.store.prune(now);
            self.shared.silences.lock().unwrap_or_else(|p| p.into_inner()).prune(now);
            self.last_prune = now;
        }
        let changes = self.evaluator.evaluate(&self.store, now, self.config.stale_after_ms);
        let alerts: Vec<Alert> = self.evaluator.alerts().cloned().collect();
        let firing: Vec<&Alert> = alerts.iter().filter(|a| a.state == State::Firing).collect();
        let mut effective = Vec::with_capacity(alerts.len());
        let mut listed = Vec::with_capacity(alerts.len());
        let mut by_sev: BTreeMap<&'static str, i64> = [("info", 0), ("warning", 0), ("critical", 0)].into();
        {
            let silences = self.shared.silences.lock().unwrap_or_else(|p| p.into_inner());
            self.metrics.silences.set(silences.list().filter(|s| s.state(now) == crate::silence::SilenceState::Active).count() as i64);
            for a in &alerts {
                let silenced = silences.muting(&a.labels, now);
                let inhibited =
                    if a.state == State::Firing { inhibited_by(&self.config.inhibit, a, firing.iter().copied()) } else { Vec::new() };
                if a.state == State::Firing {
                    *by_sev.entry(a.severity.as_str()).or_default() += 1;
                }
                let mut e = a.clone();
                if !silenced.is_empty() || !inhibited.is_empty() {
                    // Muted: for the receivers it has stopped.
                    e.state = State::Resolved;
                }
                effective.push(e);
                listed.push(to_pb(a, silenced, inhibited));
            }
        }
        for (sev, n) in by_sev {
            self.metrics.alerts.get_or_create(&SeverityLabels { severity: sev.into() }).set(n);
        }
        *self.shared.alerts.lock().unwrap_or_else(|p| p.into_inner()) = listed;
        for a in changes.fired.iter().chain(&changes.resolved) {
            let subject = format!("alert.{}.{}", a.severity.as_str(), a.name);
            let msg = to_pb(a, Vec::new(), Vec::new());
            if let Err(e) = self.nats.publish(subject, msg.encode_to_vec().into()).await {
                tracing::warn!(error = %e, alert = %a.name, "alert not published on NATS");
            }
            if a.state == State::Firing {
                tracing::warn!(alert = %a.name, labels = ?a.labels, "firing: {}", a.summary);
            } else {
                tracing::info!(alert = %a.name, labels = ?a.labels, "resolved: {}", a.summary);
            }
        }
        self.groups.update(effective.iter(), now);
        let due = self.groups.due(now);
        // The last triage if fresh (read only when something is due); a
        // notification never waits for one.
        let triage =
            self.config.triage.as_ref().filter(|_| !due.is_empty()).and_then(|t| {
                crate::triage::fresh(self.shared.triage.lock().unwrap_or_else(|p| p.into_inner()).as_ref(), now, t.interval_ms)
            });
        for f in due {
            let route = self.groups.routes()[f.route].clone();
            for receiver in &route.receivers {
                let n = Notification {
                    receiver: receiver.clone(),
                    group_key: f.group_key.clone(),
                    group_labels: f.group_labels.clone(),
                    firing: f.firing.clone(),
                    resolved: f.resolved.clone(),
                    triage: triage.clone(),
                };
                self.deliver(n, route.clone());
            }
        }
        self.deliveries.retain(|_, tx| !tx.is_closed());
    }

    fn deliver(&mut self, n: Notification, route: Route) {
        let key = nflog::key(&n.receiver, &n.group_key);
        if let Some(tx) = self.deliveries.get(&key).filter(|tx| !tx.is_closed()) {
            // A delivery of this group is under way: it sends the newest.
            tx.send_replace((n, route));
            return;
        }
        let (tx, rx) = watch::channel((n, route));
        self.deliveries.insert(key.clone(), tx);
        tokio::spawn(deliver(self.delivery.clone(), key, rx));
    }
}

async fn sleep_until(ms: i64, shutdown: &CancellationToken) -> bool {
    let wait = (ms - now_ms()).max(10) as u64;
    tokio::select! {
        _ = tokio::time::sleep(Duration::from_millis(wait)) => true,
        _ = shutdown.cancelled() => false,
    }
}

/// Delivers one receiver's notification of one group (see the module text).
async fn deliver(d: Delivery, key: String, mut rx: watch::Receiver<(Notification, Route)>) {
    loop {
        let (n, route) = rx.borrow_and_update().clone();
        let Some(receiver) = d.receivers.get(&n.receiver) else {
            tracing::error!(receiver = %n.receiver, "no such receiver");
            return;
        };
        let now = now_ms();
        let read = match d.nflog.read(&key).await {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(error = %e, "notification log unreadable; trying again in 1 s");
                if !sleep_until(now + 1_000, &d.shutdown).await {
                    return;
                }
                continue;
            }
        };
        let firing: std::collections::BTreeSet<String> = n.firing.iter().map(|a| a.fingerprint.clone()).collect();
        let resolved: std::collections::BTreeSet<String> = n.resolved.iter().map(|a| a.fingerprint.clone()).collect();
        if !needs_send(&route, read.delivered().as_ref(), &firing, now) {
            d.metrics.notified(&n.receiver, "skipped");
            return;
        }
        if let Some(until) = read.claimed_by_other(&d.me, now) {
            if !sleep_until(until + 10, &d.shutdown).await {
                return;
            }
            continue;
        }
        if let Some(at) = read.retry_at(now) {
            if !sleep_until(at, &d.shutdown).await {
                return;
            }
            continue;
        }
        let claim_ms = receiver.config.timeout_ms + 2_000;
        let claim = nflog::claimed(&read, &n.receiver, &n.group_key, &d.me, now, claim_ms);
        let rev = match d.nflog.cas(&key, &claim, read.revision).await {
            Ok(Some(rev)) => rev,
            // Another replica wrote first: read again and see what it did.
            Ok(None) => continue,
            Err(e) => {
                tracing::warn!(error = %e, "notification log unwritable; trying again in 1 s");
                if !sleep_until(now + 1_000, &d.shutdown).await {
                    return;
                }
                continue;
            }
        };
        let attempt = claim.attempt;
        let result = receiver.send(&n).await;
        let done = now_ms();
        let record = match &result {
            Ok(detail) => {
                d.metrics.notified(&n.receiver, "delivered");
                tracing::info!(receiver = %n.receiver, group = %n.group_key, status = n.status(), attempt, "{detail}");
                nflog::delivered(claim, &firing, &resolved, done)
            }
            Err(SendError::Refused(why)) => {
                // The receiver refuses the message itself (a 4xx): trying again
                // would be refused again. Recorded as sent so it is not repeated;
                // loud in the log and the metrics.
                d.metrics.notified(&n.receiver, "refused");
                tracing::error!(receiver = %n.receiver, group = %n.group_key, attempt, "notification refused: {why}");
                let mut r = nflog::delivered(claim, &firing, &resolved, done);
                r.last_error = why.chars().take(300).collect();
                r
            }
            Err(SendError::Retry { reason, after }) => {
                d.metrics.notified(&n.receiver, "failed");
                tracing::warn!(receiver = %n.receiver, group = %n.group_key, attempt, "notification failed: {reason}");
                nflog::failed(claim, reason, *after, done)
            }
        };
        match d.nflog.cas(&key, &record, Some(rev)).await {
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "notification log: the outcome of a send could not be recorded"),
        }
        if result.is_ok() || matches!(result, Err(SendError::Refused(_))) {
            // Delivered; but a newer flush may have come meanwhile: go round once
            // more, and the log decides whether it says anything new.
            if !rx.has_changed().unwrap_or(false) {
                return;
            }
        }
    }
}

/// Runs the engine until `shutdown`.
pub async fn run(mut engine: Engine, mut inputs: mpsc::Receiver<Input>, every: Duration, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            Some(input) = inputs.recv() => engine.take(input, now_ms()),
            _ = tick.tick() => engine.evaluate(now_ms()).await,
            _ = shutdown.cancelled() => return,
        }
    }
}
