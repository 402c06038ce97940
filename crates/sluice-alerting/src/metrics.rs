//! The alerting service's own metrics (`sluice_alerting_*`), which its
//! heartbeat also carries.

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProbeLabels {
    pub exchange: String,
    pub probe: String,
    pub account: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ProbeResultLabels {
    pub exchange: String,
    pub probe: String,
    pub result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct NotifyLabels {
    pub receiver: String,
    /// delivered, failed, refused, skipped (already sent, or sent by another
    /// replica), test_delivered, test_failed
    pub result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SeverityLabels {
    pub severity: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ResultLabels {
    pub result: String,
}

/// Every metric the alerting service exports.
#[derive(Default)]
pub struct Metrics {
    pub probes: Family<ProbeResultLabels, Counter>,
    pub probe_latency: Family<ProbeLabels, Gauge<f64, AtomicU64>>,
    pub probe_failures: Family<ProbeLabels, Gauge>,
    pub alerts: Family<SeverityLabels, Gauge>,
    pub notifications: Family<NotifyLabels, Counter>,
    pub heartbeats: Family<ResultLabels, Counter>,
    pub silences: Gauge,
    pub triage: Family<ResultLabels, Counter>,
}

impl Metrics {
    pub fn register(&self, r: &mut Registry) {
        let r = r.sub_registry_with_prefix("sluice_alerting");
        r.register("probes", "Probes of the exchanges by result (ok, failed)", self.probes.clone());
        r.register("probe_latency_seconds", "The exchange's round trip in the last probe that got an answer", self.probe_latency.clone());
        r.register("probe_failures_consecutive", "Failures in a row of each probe (0 after a success)", self.probe_failures.clone());
        r.register("alerts", "Alerts firing now, by severity (silenced and inhibited included)", self.alerts.clone());
        r.register("notifications", "Notification attempts by receiver and result", self.notifications.clone());
        r.register("heartbeats", "Heartbeats read (ok) or refused (malformed)", self.heartbeats.clone());
        r.register("silences_active", "Silences in force now", self.silences.clone());
        r.register("triage", "LLM triage attempts by result (ok, or the gateway's error class, or malformed)", self.triage.clone());
    }

    /// Creates a receiver's series at zero.
    pub fn notified_zero(&self, receiver: &str, result: &str) {
        let _ = self.notifications.get_or_create(&NotifyLabels { receiver: receiver.to_owned(), result: result.to_owned() });
    }

    pub fn notified(&self, receiver: &str, result: &str) {
        self.notifications.get_or_create(&NotifyLabels { receiver: receiver.to_owned(), result: result.to_owned() }).inc();
    }
}
