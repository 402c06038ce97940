//! How the collector is doing: Prometheus metrics per stream and per venue, and
//! the `CollectorHeartbeat` published on NATS for alerting. Connections report
//! their per-stream counts here once per housekeeping tick, so the hot path never
//! takes a lock.

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use sluice_proto::md::v1 as pb;

use crate::book::State;
use crate::config::Channel;
use crate::pipeline::StreamStat;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StreamLabels {
    venue: String,
    channel: String,
    symbol: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct VenueLabels {
    venue: String,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AccountLabels {
    exchange: String,
    account: String,
}

#[derive(Default)]
struct Conn {
    venue: String,
    stats: HashMap<(Channel, String), StreamStat>,
}

/// Shared by every connection of one collector.
pub(crate) struct Health {
    collector: String,
    messages: Family<StreamLabels, Counter>,
    gaps: Family<StreamLabels, Counter>,
    resyncs: Family<StreamLabels, Counter>,
    age: Family<StreamLabels, Gauge>,
    reconnects: Family<VenueLabels, Counter>,
    planned: Family<VenueLabels, Counter>,
    malformed: Family<VenueLabels, Counter>,
    dropped: Family<VenueLabels, Counter>,
    stale: Family<VenueLabels, Counter>,
    rejected: Family<VenueLabels, Counter>,
    account_events: Family<VenueLabels, Counter>,
    private_up: Family<AccountLabels, Gauge>,
    connected: Gauge,
    conns: Mutex<HashMap<String, Conn>>,
    /// "exchange/account" to its private stream's state, for the heartbeat.
    private: Mutex<std::collections::BTreeMap<String, pb::PrivateStreamHealth>>,
    totals: [AtomicU64; 4],
}

const RECONNECTS: usize = 0;
const DROPPED: usize = 1;
const MALFORMED: usize = 2;
const PLANNED: usize = 3;

impl Health {
    pub(crate) fn new(collector: &str, registry: &mut Registry) -> Arc<Health> {
        let h = Health {
            collector: collector.to_owned(),
            messages: Family::default(),
            gaps: Family::default(),
            resyncs: Family::default(),
            age: Family::default(),
            reconnects: Family::default(),
            planned: Family::default(),
            malformed: Family::default(),
            dropped: Family::default(),
            stale: Family::default(),
            rejected: Family::default(),
            account_events: Family::default(),
            private_up: Family::default(),
            connected: Gauge::default(),
            conns: Mutex::new(HashMap::new()),
            private: Mutex::new(std::collections::BTreeMap::new()),
            totals: Default::default(),
        };
        let r = registry.sub_registry_with_prefix("sluice_collector");
        r.register("messages", "Market-data messages received per stream", h.messages.clone());
        r.register("gaps", "Sequence gaps detected per book", h.gaps.clone());
        r.register("resyncs", "Book rebuilds (gaps, restarts, stale snapshots) per book", h.resyncs.clone());
        r.register("stream_age_ms", "Time since each stream's last message", h.age.clone());
        r.register("reconnects", "WebSocket reconnects per venue", h.reconnects.clone());
        r.register(
            "planned_replacements",
            "Connections replaced before the exchange's cut-off, overlapping the old one",
            h.planned.clone(),
        );
        r.register("malformed", "Frames that could not be parsed (skipped) per venue", h.malformed.clone());
        r.register("dropped", "Messages not published because NATS was behind, per venue", h.dropped.clone());
        r.register("stale_connections", "Connections replaced because a subscription went silent", h.stale.clone());
        r.register("rejected", "Requests the exchange refused (private streams: logins too)", h.rejected.clone());
        r.register("account_events", "Orders, fills and balances read from private streams", h.account_events.clone());
        r.register("connections", "Open WebSocket connections", h.connected.clone());
        r.register("private_stream_up", "1 while an account's private stream is connected and logged in", h.private_up.clone());
        Arc::new(h)
    }

    /// A handle for one connection task.
    pub(crate) fn connection(self: &Arc<Self>, id: &str, venue: &str) -> ConnHealth {
        self.conns.lock().unwrap_or_else(|p| p.into_inner()).insert(id.to_owned(), Conn { venue: venue.to_owned(), ..Conn::default() });
        // The venue's counters exist (at zero) from its first connection.
        let vl = VenueLabels { venue: venue.to_owned() };
        for f in [&self.reconnects, &self.planned, &self.malformed, &self.dropped, &self.stale, &self.rejected] {
            let _ = f.get_or_create(&vl);
        }
        ConnHealth { health: self.clone(), venue: VenueLabels { venue: venue.to_owned() }, connected: AtomicI64::new(0) }
    }

    /// A connection's per-stream counts now; counters move by the difference.
    pub(crate) fn record<'a>(&self, id: &str, streams: impl Iterator<Item = (Channel, &'a str, StreamStat)>) {
        let mut conns = self.conns.lock().unwrap_or_else(|p| p.into_inner());
        let Some(c) = conns.get_mut(id) else { return };
        for (ch, sym, now) in streams {
            let k = (ch, sym.to_owned());
            let before = c.stats.get(&k).copied().unwrap_or_default();
            let l = StreamLabels { venue: c.venue.clone(), channel: ch.as_str().to_owned(), symbol: k.1.clone() };
            self.messages.get_or_create(&l).inc_by(now.messages - before.messages);
            self.gaps.get_or_create(&l).inc_by(now.gaps - before.gaps);
            self.resyncs.get_or_create(&l).inc_by(now.resyncs - before.resyncs);
            c.stats.insert(k, now);
        }
    }

    /// Changes the heartbeat's view of the private stream of `exchange`/`account`.
    pub(crate) fn private_stream(&self, exchange: &str, account: &str, f: impl FnOnce(&mut pb::PrivateStreamHealth)) {
        let mut all = self.private.lock().unwrap_or_else(|p| p.into_inner());
        let p = all.entry(format!("{exchange}/{account}")).or_insert_with(|| pb::PrivateStreamHealth {
            exchange: exchange.to_owned(),
            account: account.to_owned(),
            ..Default::default()
        });
        f(p);
        let labels = AccountLabels { exchange: exchange.to_owned(), account: account.to_owned() };
        self.private_up.get_or_create(&labels).set(i64::from(p.connected));
    }

    /// The heartbeat now, with every stream's age; also refreshes the age gauges.
    pub(crate) fn heartbeat(&self, now_ns: i64) -> pb::CollectorHeartbeat {
        let conns = self.conns.lock().unwrap_or_else(|p| p.into_inner());
        let mut streams = Vec::new();
        for c in conns.values() {
            for ((ch, sym), s) in &c.stats {
                let age_ms = (now_ns.saturating_sub(s.last_ns) / 1_000_000).max(0) as u64;
                let l = StreamLabels { venue: c.venue.clone(), channel: ch.as_str().to_owned(), symbol: sym.clone() };
                self.age.get_or_create(&l).set(age_ms as i64);
                streams.push(pb::StreamHealth {
                    venue: c.venue.clone(),
                    channel: ch.as_str().to_owned(),
                    symbol: sym.clone(),
                    age_ms,
                    messages: s.messages,
                    gaps: s.gaps,
                    resyncs: s.resyncs,
                    book_state: match s.book {
                        Some(State::Live) => pb::BookState::Live as i32,
                        Some(State::Resyncing) => pb::BookState::Resyncing as i32,
                        None => pb::BookState::Unspecified as i32,
                    },
                });
            }
        }
        streams.sort_by(|a, b| (&a.venue, &a.channel, &a.symbol).cmp(&(&b.venue, &b.channel, &b.symbol)));
        pb::CollectorHeartbeat {
            collector: self.collector.clone(),
            ts_ns: now_ns,
            connections: self.connected.get().max(0) as u32,
            reconnects: self.totals[RECONNECTS].load(Ordering::Relaxed),
            dropped: self.totals[DROPPED].load(Ordering::Relaxed),
            malformed: self.totals[MALFORMED].load(Ordering::Relaxed),
            planned_replacements: self.totals[PLANNED].load(Ordering::Relaxed),
            streams,
            private_streams: self.private.lock().unwrap_or_else(|p| p.into_inner()).values().cloned().collect(),
        }
    }
}

/// One connection's view of [`Health`].
pub(crate) struct ConnHealth {
    health: Arc<Health>,
    venue: VenueLabels,
    connected: AtomicI64,
}

impl ConnHealth {
    pub(crate) fn set_connected(&self, up: bool) {
        let v = i64::from(up);
        let was = self.connected.swap(v, Ordering::Relaxed);
        self.health.connected.inc_by(v - was);
    }

    pub(crate) fn is_connected(&self) -> bool {
        self.connected.load(Ordering::Relaxed) > 0
    }

    pub(crate) fn reconnected(&self) {
        self.health.reconnects.get_or_create(&self.venue).inc();
        self.health.totals[RECONNECTS].fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn planned(&self) {
        self.health.planned.get_or_create(&self.venue).inc();
        self.health.totals[PLANNED].fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn malformed(&self, why: &str) {
        tracing::debug!(venue = %self.venue.venue, %why, "malformed frame skipped");
        self.health.malformed.get_or_create(&self.venue).inc();
        self.health.totals[MALFORMED].fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn dropped(&self) {
        self.health.dropped.get_or_create(&self.venue).inc();
        self.health.totals[DROPPED].fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn stale(&self) {
        self.health.stale.get_or_create(&self.venue).inc();
    }

    pub(crate) fn rejected(&self) {
        self.health.rejected.get_or_create(&self.venue).inc();
    }

    pub(crate) fn account_event(&self) {
        self.health.account_events.get_or_create(&self.venue).inc();
    }
}
