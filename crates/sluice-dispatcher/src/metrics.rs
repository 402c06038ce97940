//! The dispatcher's Prometheus metrics: usage against limit per bucket and window,
//! queue depth, queue wait, upstream latency, 429s and bans (each also logged).

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, Mutex};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct BucketLabels {
    pub(crate) exchange: String,
    pub(crate) scope: String,
    pub(crate) key: String,
    pub(crate) group: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct WindowLabels {
    #[prometheus(flatten)]
    pub(crate) bucket: BucketLabels,
    pub(crate) window_ms: u64,
}

/// A configured client's name (from a closed set: the configuration) and why.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct ClientLabels {
    pub(crate) client: String,
    pub(crate) reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct ExchangeLabels {
    pub(crate) exchange: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct ClassLabels {
    pub(crate) exchange: String,
    pub(crate) class: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct StatusLabels {
    pub(crate) exchange: String,
    pub(crate) status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct OutcomeLabels {
    pub(crate) exchange: String,
    pub(crate) outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct ReasonLabels {
    pub(crate) exchange: String,
    pub(crate) reason: String,
}

fn latency_buckets() -> impl Iterator<Item = f64> {
    [0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0].into_iter()
}

/// Every metric the dispatcher exports.
pub(crate) struct Metrics {
    pub(crate) registry: Arc<Mutex<Registry>>,
    pub(crate) window_used: Family<WindowLabels, Gauge>,
    pub(crate) window_limit: Family<WindowLabels, Gauge>,
    pub(crate) window_configured: Family<WindowLabels, Gauge>,
    pub(crate) window_learned: Family<WindowLabels, Gauge>,
    pub(crate) window_usage_ratio: Family<WindowLabels, Gauge<f64, AtomicU64>>,
    pub(crate) rate_factor: Family<BucketLabels, Gauge<f64, AtomicU64>>,
    pub(crate) frozen: Family<BucketLabels, Gauge>,
    pub(crate) queue_depth: Family<ExchangeLabels, Gauge>,
    pub(crate) in_flight: Family<ExchangeLabels, Gauge>,
    pub(crate) queue_wait: Family<ClassLabels, Histogram>,
    pub(crate) upstream: Family<ExchangeLabels, Histogram>,
    pub(crate) responses: Family<StatusLabels, Counter>,
    pub(crate) throttled: Family<BucketLabels, Counter>,
    pub(crate) bans: Family<BucketLabels, Counter>,
    pub(crate) rejected: Family<ReasonLabels, Counter>,
    pub(crate) refused_clients: Family<ClientLabels, Counter>,
    pub(crate) exchange_api: Family<OutcomeLabels, Counter>,
    pub(crate) cluster_connected: Gauge,
    pub(crate) cluster_members: Gauge,
    pub(crate) cluster_alive: Gauge,
    pub(crate) cluster_reserved: Gauge,
    pub(crate) cluster_owned: Family<ExchangeLabels, Gauge>,
}

impl Metrics {
    pub(crate) fn new() -> Arc<Self> {
        let window_used = Family::<WindowLabels, Gauge>::default();
        let window_limit = Family::<WindowLabels, Gauge>::default();
        let window_configured = Family::<WindowLabels, Gauge>::default();
        let window_learned = Family::<WindowLabels, Gauge>::default();
        let window_usage_ratio = Family::<WindowLabels, Gauge<f64, AtomicU64>>::default();
        let rate_factor = Family::<BucketLabels, Gauge<f64, AtomicU64>>::default();
        let frozen = Family::<BucketLabels, Gauge>::default();
        let queue_depth = Family::<ExchangeLabels, Gauge>::default();
        let in_flight = Family::<ExchangeLabels, Gauge>::default();
        let queue_wait = Family::<ClassLabels, Histogram>::new_with_constructor(|| Histogram::new(latency_buckets()));
        let upstream = Family::<ExchangeLabels, Histogram>::new_with_constructor(|| Histogram::new(latency_buckets()));
        let responses = Family::<StatusLabels, Counter>::default();
        let throttled = Family::<BucketLabels, Counter>::default();
        let bans = Family::<BucketLabels, Counter>::default();
        let rejected = Family::<ReasonLabels, Counter>::default();
        let refused_clients = Family::<ClientLabels, Counter>::default();
        let exchange_api = Family::<OutcomeLabels, Counter>::default();
        let cluster_connected = Gauge::default();
        let cluster_members = Gauge::default();
        let cluster_alive = Gauge::default();
        let cluster_reserved = Gauge::default();
        let cluster_owned = Family::<ExchangeLabels, Gauge>::default();
        let mut r = Registry::with_prefix("sluice_dispatcher");
        r.register("bucket_window_used", "Cost counting against a bucket window now, in flight included", window_used.clone());
        r.register(
            "bucket_window_limit",
            "What this replica may hold in a bucket window now (learned limit less other replicas' fallback shares)",
            window_limit.clone(),
        );
        r.register("bucket_window_configured_limit", "Limit of a bucket window in the policy file", window_configured.clone());
        r.register(
            "bucket_window_learned_limit",
            "Limit of a bucket window as the exchange has shown it, when below the configured one (0: none)",
            window_learned.clone(),
        );
        r.register("bucket_window_usage_ratio", "Used over limit of a bucket window", window_usage_ratio.clone());
        r.register("bucket_rate_factor", "Learned over configured limit, the smallest over a bucket's windows", rate_factor.clone());
        r.register("bucket_frozen", "1 while a bucket is paused or banned", frozen.clone());
        r.register("queue_depth", "Calls waiting for budget", queue_depth.clone());
        r.register("in_flight", "Calls sent and not yet answered", in_flight.clone());
        r.register("queue_wait_seconds", "Time a call waited for budget", queue_wait.clone());
        r.register("upstream_seconds", "Time from sending to an exchange until its whole answer was read", upstream.clone());
        r.register("responses", "Exchange answers by HTTP status class", responses.clone());
        r.register("http_429", "Rate-limit answers (429 and equivalents) per bucket", throttled.clone());
        r.register("bans", "Bans (418, 403) per bucket", bans.clone());
        r.register("rejected", "Calls refused before reaching an exchange, by reason", rejected.clone());
        r.register(
            "client_refused",
            "Calls refused for their credential (unauthenticated) or grant (permission_denied), by client",
            refused_clients.clone(),
        );
        r.register(
            "exchange_api_requests",
            "Requests to the exchange-compatible REST face, by outcome (answered, a refusal's reason, or sluice's own refusal)",
            exchange_api.clone(),
        );
        r.register(
            "cluster_connected",
            "1 while this replica coordinates through NATS; 0 in fallback (admitting on its own share)",
            cluster_connected.clone(),
        );
        r.register("cluster_members", "Replicas known (this one included): the number of shares in fallback", cluster_members.clone());
        r.register("cluster_alive", "Replicas heard from recently (this one included)", cluster_alive.clone());
        r.register("cluster_reserved_shares", "Shares an owner keeps back for absent or recovering replicas", cluster_reserved.clone());
        r.register("cluster_owner", "1 for each exchange whose budgets this replica owns", cluster_owned.clone());
        Arc::new(Metrics {
            registry: Arc::new(Mutex::new(r)),
            window_used,
            window_limit,
            window_configured,
            window_learned,
            window_usage_ratio,
            rate_factor,
            frozen,
            queue_depth,
            in_flight,
            queue_wait,
            upstream,
            responses,
            throttled,
            bans,
            rejected,
            refused_clients,
            exchange_api,
            cluster_connected,
            cluster_members,
            cluster_alive,
            cluster_reserved,
            cluster_owned,
        })
    }

    pub(crate) fn refuse_client(&self, client: &str, code: tonic::Code) {
        let reason = if code == tonic::Code::Unauthenticated { "unauthenticated" } else { "permission_denied" };
        self.refused_clients.get_or_create(&ClientLabels { client: client.to_owned(), reason: reason.to_owned() }).inc();
    }

    pub(crate) fn exchange_api(&self, exchange: &str, outcome: &str) {
        self.exchange_api.get_or_create(&OutcomeLabels { exchange: exchange.to_owned(), outcome: outcome.to_owned() }).inc();
    }

    pub(crate) fn reject(&self, exchange: &str, reason: &str) {
        self.rejected.get_or_create(&ReasonLabels { exchange: exchange.to_owned(), reason: reason.to_owned() }).inc();
    }
}
