//! The execution service's Prometheus metrics (`sluice_execution_…`): what became
//! of signals, orders created, transitions by event, fills, risk denials by
//! reason, illegal transitions refused, venue queries, orders unknown and
//! foreign, the trading state, and per account its equity, the UTC day's PnL
//! and how much of its daily loss limit is used (figures for dashboards and
//! alerts; the amounts themselves stay exact decimals inside).

use std::sync::atomic::AtomicU64;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct KindLabels {
    pub(crate) kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct AccountLabels {
    pub(crate) account: String,
}

#[derive(Debug, Default)]
pub struct Metrics {
    pub(crate) equity: Family<AccountLabels, Gauge<f64, AtomicU64>>,
    pub(crate) day_pnl: Family<AccountLabels, Gauge<f64, AtomicU64>>,
    pub(crate) daily_loss_used: Family<AccountLabels, Gauge<f64, AtomicU64>>,
    signals: Family<KindLabels, Counter>,
    transitions: Family<KindLabels, Counter>,
    denials: Family<KindLabels, Counter>,
    pub(crate) orders_created: Counter,
    pub(crate) fills: Counter,
    pub(crate) illegal: Counter,
    queries: Family<KindLabels, Counter>,
    /// Orders in UNKNOWN now.
    pub(crate) unknown_orders: Gauge,
    /// Open orders on the exchanges that this service did not place.
    pub(crate) foreign_orders: Gauge,
    /// 1 active, 2 reducing, 3 halted (the proto's numbers).
    pub(crate) trading_state: Gauge,
}

impl Metrics {
    pub fn register(&self, r: &mut Registry) {
        let r = r.sub_registry_with_prefix("sluice_execution");
        r.register("signals", "Signals by what became of them (placed, duplicate, stale, denied, or why skipped)", self.signals.clone());
        r.register("orders_created", "Orders created (journaled)", self.orders_created.clone());
        r.register("transitions", "Order transitions by event", self.transitions.clone());
        r.register("fills", "Fills counted (each venue trade once)", self.fills.clone());
        r.register("denials", "Orders refused by pre-trade risk, by reason", self.denials.clone());
        r.register("illegal_transitions", "Events refused by the order state machine", self.illegal.clone());
        r.register("queries", "Order queries to the venue by result (sent, found, not_found, failed)", self.queries.clone());
        r.register("unknown_orders", "Orders whose outcome is not known yet", self.unknown_orders.clone());
        r.register(
            "foreign_orders",
            "Open orders on the exchanges this service did not place (reported, left alone)",
            self.foreign_orders.clone(),
        );
        r.register("trading_state", "1 active, 2 reducing, 3 halted", self.trading_state.clone());
        r.register("equity", "Each account's equity in its quote currency (a figure; amounts stay exact inside)", self.equity.clone());
        r.register("day_pnl", "Each account's realized and unrealized PnL less fees since the UTC day began", self.day_pnl.clone());
        r.register(
            "daily_loss_used_ratio",
            "Each account's loss today over its daily loss limit (0 without a limit or a loss; 1 = the limit)",
            self.daily_loss_used.clone(),
        );
        self.trading_state.set(1);
    }

    pub(crate) fn signal(&self, kind: &str) {
        self.signals.get_or_create(&KindLabels { kind: kind.to_owned() }).inc();
    }

    pub(crate) fn transition(&self, event: &str) {
        self.transitions.get_or_create(&KindLabels { kind: event.to_owned() }).inc();
    }

    pub(crate) fn query(&self, result: &str) {
        self.queries.get_or_create(&KindLabels { kind: result.to_owned() }).inc();
    }

    pub(crate) fn denial(&self, kind: &str) {
        self.denials.get_or_create(&KindLabels { kind: kind.to_owned() }).inc();
    }
}
