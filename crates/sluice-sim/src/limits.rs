//! How a simulated exchange enforces its limits: per scope key (client IP or
//! account) and group, every window counted in the exchange's own way (see
//! `sluice_rate::server`), escalation from repeated 429s to bans, and a record of
//! the highest cost that arrived in any window, accepted or not.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::fmt;
use std::net::IpAddr;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use sluice_rate::Time;
use sluice_rate::server::{Counting, ServerWindow, WindowMax};

use crate::config::{ExchangeConfig, GroupConfig, OnExceed, Scope};

/// Who a budget belongs to on the server.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum ScopeKey {
    Ip(IpAddr),
    Account(String),
}

impl fmt::Display for ScopeKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ScopeKey::Ip(ip) => write!(f, "ip:{ip}"),
            ScopeKey::Account(a) => write!(f, "account:{a}"),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct BucketKey {
    scope: ScopeKey,
    group: String,
    partition: Option<String>,
}

/// A group and cost a request charges, with its partition value if the group is
/// split per parameter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Charge {
    pub(crate) group: String,
    pub(crate) cost: u64,
    pub(crate) partition: Option<String>,
}

/// The state of one window after a request was counted, for usage headers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Usage {
    pub(crate) group: String,
    pub(crate) scope: Scope,
    pub(crate) period: Duration,
    pub(crate) limit: u64,
    pub(crate) used: u64,
    pub(crate) resets_at: Time,
}

/// The server's decision on one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Decision {
    Admitted(Vec<Usage>),
    /// Over a limit: the exchange's rate-limit answer.
    Throttled {
        group: String,
        scope: Scope,
        retry_after: Duration,
        usage: Vec<Usage>,
    },
    /// The scope is banned until `until`; `fresh` when this request caused it.
    Banned {
        scope: Scope,
        until: Time,
        fresh: bool,
    },
}

#[derive(Debug, Clone, Default)]
struct Ban {
    until: Time,
    level: u32,
}

#[derive(Debug, Default)]
struct Bucket {
    windows: Vec<ServerWindow>,
    maxes: Vec<WindowMax>,
    accepted: u64,
    limited: u64,
}

/// Statistics of one bucket: what the exchange saw.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BucketStats {
    pub scope: String,
    pub group: String,
    pub partition: Option<String>,
    pub accepted: u64,
    pub rate_limited: u64,
    pub windows: Vec<WindowStats>,
}

/// One window: its limit and the highest cost that arrived in any such window.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WindowStats {
    pub limit: u64,
    pub period_ms: u64,
    pub max_seen: u64,
}

/// All limits of one simulated exchange.
#[derive(Debug)]
pub(crate) struct Limits {
    counting: Counting,
    groups: BTreeMap<String, GroupConfig>,
    ban_after_429s: u32,
    ban_window: Duration,
    ban_base: Duration,
    ban_max: Duration,
    buckets: HashMap<BucketKey, Bucket>,
    bans: HashMap<ScopeKey, Ban>,
    recent_429s: HashMap<ScopeKey, VecDeque<Time>>,
}

impl Limits {
    pub(crate) fn new(cfg: &ExchangeConfig) -> Self {
        Limits {
            counting: cfg.counting(),
            groups: cfg.groups.clone(),
            ban_after_429s: cfg.ban_after_429s,
            ban_window: Duration::from_millis(cfg.ban_window_ms),
            ban_base: Duration::from_millis(cfg.ban_ms),
            ban_max: Duration::from_millis(cfg.ban_max_ms),
            buckets: HashMap::new(),
            bans: HashMap::new(),
            recent_429s: HashMap::new(),
        }
    }

    pub(crate) fn group(&self, name: &str) -> Option<&GroupConfig> {
        self.groups.get(name)
    }

    fn key(&self, c: &Charge, ip: IpAddr, account: Option<&str>) -> Option<(BucketKey, &GroupConfig)> {
        let g = self.groups.get(&c.group)?;
        let scope = match g.scope {
            Scope::Ip => ScopeKey::Ip(ip),
            Scope::Account => ScopeKey::Account(account?.to_owned()),
        };
        let partition = if g.per.is_some() { c.partition.clone() } else { None };
        Some((BucketKey { scope, group: c.group.clone(), partition }, g))
    }

    fn bucket(&mut self, key: &BucketKey, g: &GroupConfig) -> &mut Bucket {
        let counting = self.counting;
        self.buckets.entry(key.clone()).or_insert_with(|| Bucket {
            windows: g.windows.iter().map(|w| ServerWindow::new(w.limit, w.period(), counting)).collect(),
            maxes: g.windows.iter().map(|w| WindowMax::new(w.period())).collect(),
            accepted: 0,
            limited: 0,
        })
    }

    /// Bans `scope` now, for longer each time it is banned again.
    pub(crate) fn ban(&mut self, scope: ScopeKey, at: Time, duration: Option<Duration>) -> Time {
        let base = self.ban_base;
        let max = self.ban_max;
        let ban = self.bans.entry(scope).or_default();
        let d = duration.unwrap_or_else(|| base.saturating_mul(2u32.saturating_pow(ban.level)).min(max));
        ban.level += 1;
        ban.until = at + d;
        ban.until
    }

    /// Whether `scope` is banned at `at`.
    pub(crate) fn banned_until(&self, scope: &ScopeKey, at: Time) -> Option<Time> {
        self.bans.get(scope).map(|b| b.until).filter(|u| *u > at)
    }

    /// Decides on a request arriving at `at` from `ip` (and `account` when signed).
    pub(crate) fn admit(&mut self, at: Time, ip: IpAddr, account: Option<&str>, charges: &[Charge]) -> Decision {
        let keyed: Vec<(BucketKey, GroupConfig, u64)> =
            charges.iter().filter_map(|c| self.key(c, ip, account).map(|(k, g)| (k, g.clone(), c.cost))).collect();
        for (k, g, _) in &keyed {
            if let Some(until) = self.banned_until(&k.scope, at) {
                return Decision::Banned { scope: g.scope, until, fresh: false };
            }
        }
        for (k, g, cost) in &keyed {
            for m in &mut self.bucket(k, g).maxes {
                m.record(at, *cost);
            }
        }
        let mut failing = None;
        for (k, g, cost) in &keyed {
            let b = self.bucket(k, g);
            if let Some(i) = (0..b.windows.len()).find(|&i| !b.windows[i].fits(at, *cost)) {
                failing = Some((k.clone(), g.clone(), i));
                break;
            }
        }
        let Some((key, g, wi)) = failing else {
            let mut usage = Vec::new();
            for (k, g, cost) in &keyed {
                let b = self.bucket(k, g);
                b.accepted += 1;
                for w in &mut b.windows {
                    w.take(at, *cost);
                    usage.push(Usage {
                        group: k.group.clone(),
                        scope: g.scope,
                        period: w.period(),
                        limit: w.limit(),
                        used: w.used(at),
                        resets_at: w.resets_at(at),
                    });
                }
            }
            return Decision::Admitted(usage);
        };
        if g.on_exceed == OnExceed::Ban {
            let until = self.ban(key.scope.clone(), at, None);
            return Decision::Banned { scope: g.scope, until, fresh: true };
        }
        let usage: Vec<Usage> = {
            let b = self.bucket(&key, &g);
            b.limited += 1;
            b.windows
                .iter_mut()
                .map(|w| Usage {
                    group: key.group.clone(),
                    scope: g.scope,
                    period: w.period(),
                    limit: w.limit(),
                    used: w.used(at),
                    resets_at: w.resets_at(at),
                })
                .collect()
        };
        let retry_after = usage[wi].resets_at.saturating_since(at);
        if self.ban_after_429s > 0 {
            let window = self.ban_window;
            let recent = self.recent_429s.entry(key.scope.clone()).or_default();
            recent.push_back(at);
            while recent.front().is_some_and(|t| at.saturating_since(*t) > window) {
                recent.pop_front();
            }
            if recent.len() as u32 >= self.ban_after_429s {
                recent.clear();
                let until = self.ban(key.scope.clone(), at, None);
                return Decision::Banned { scope: g.scope, until, fresh: true };
            }
        }
        Decision::Throttled { group: key.group, scope: g.scope, retry_after, usage }
    }

    pub(crate) fn stats(&self) -> Vec<BucketStats> {
        let mut v: Vec<_> = self
            .buckets
            .iter()
            .map(|(k, b)| BucketStats {
                scope: k.scope.to_string(),
                group: k.group.clone(),
                partition: k.partition.clone(),
                accepted: b.accepted,
                rate_limited: b.limited,
                windows: b
                    .windows
                    .iter()
                    .zip(&b.maxes)
                    .map(|(w, m)| WindowStats { limit: w.limit(), period_ms: w.period().as_millis() as u64, max_seen: m.max() })
                    .collect(),
            })
            .collect();
        v.sort_by(|a, b| (&a.scope, &a.group, &a.partition).cmp(&(&b.scope, &b.group, &b.partition)));
        v
    }

    /// Forgets counts, maxima and bans (between benchmark phases).
    pub(crate) fn reset(&mut self) {
        self.buckets.clear();
        self.bans.clear();
        self.recent_429s.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::SimConfig;
    use sluice_domain::Exchange;

    fn ms(n: u64) -> Time {
        Time::from_millis(n)
    }

    fn ticker() -> Vec<Charge> {
        vec![Charge { group: "ticker".into(), cost: 1, partition: None }]
    }

    #[test]
    fn upbit_throttles_then_escalates_to_a_growing_ban() {
        let cfg = SimConfig::shipped();
        let mut l = Limits::new(&cfg.exchanges[&Exchange::Upbit]);
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        for i in 0..10 {
            assert!(matches!(l.admit(ms(1_000 + i), ip, None, &ticker()), Decision::Admitted(_)));
        }
        for i in 0..9 {
            assert!(matches!(l.admit(ms(1_100 + i), ip, None, &ticker()), Decision::Throttled { .. }), "429 #{i}");
        }
        let Decision::Banned { until, fresh: true, .. } = l.admit(ms(1_200), ip, None, &ticker()) else { panic!("tenth 429 bans") };
        assert_eq!(until, ms(31_200));
        assert!(matches!(l.admit(ms(20_000), ip, None, &ticker()), Decision::Banned { fresh: false, .. }));
        assert_eq!(l.ban(ScopeKey::Ip(ip), ms(40_000), None), ms(100_000), "second ban lasts twice as long");
        let s = l.stats();
        assert_eq!(s[0].windows[0].max_seen, 20, "every arrival counts toward the maximum");
        assert_eq!(s[0].accepted, 10);
    }

    #[test]
    fn bybit_ip_limit_bans_at_once_and_accounts_are_separate() {
        let cfg = SimConfig::shipped();
        let mut l = Limits::new(&cfg.exchanges[&Exchange::Bybit]);
        let ip: IpAddr = "127.0.0.2".parse().unwrap();
        let ipc = vec![Charge { group: "ip".into(), cost: 1, partition: None }];
        for i in 0..600 {
            assert!(matches!(l.admit(ms(i), ip, None, &ipc), Decision::Admitted(_)));
        }
        assert!(matches!(l.admit(ms(700), ip, None, &ipc), Decision::Banned { fresh: true, .. }));
        let acct = vec![Charge { group: "create-spot".into(), cost: 1, partition: None }];
        let other: IpAddr = "127.0.0.3".parse().unwrap();
        for i in 0..20 {
            assert!(matches!(l.admit(ms(800 + i), other, Some("demo"), &acct), Decision::Admitted(_)));
        }
        let Decision::Throttled { group, .. } = l.admit(ms(900), other, Some("demo"), &acct) else { panic!() };
        assert_eq!(group, "create-spot");
    }

    #[test]
    fn binance_counts_weight_in_calendar_minutes() {
        let cfg = SimConfig::shipped();
        let mut l = Limits::new(&cfg.exchanges[&Exchange::Binance]);
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        let heavy = vec![Charge { group: "weight".into(), cost: 3000, partition: None }];
        assert!(matches!(l.admit(ms(120_000), ip, None, &heavy), Decision::Admitted(_)));
        assert!(matches!(l.admit(ms(150_000), ip, None, &heavy), Decision::Admitted(_)));
        let Decision::Throttled { retry_after, .. } = l.admit(ms(170_000), ip, None, &heavy) else { panic!() };
        assert_eq!(retry_after, Duration::from_secs(10), "until the next calendar minute");
        assert!(matches!(l.admit(ms(180_000), ip, None, &heavy), Decision::Admitted(_)));
        assert_eq!(
            l.stats()[0].windows[0].max_seen,
            12_000,
            "the sliding maximum sees every arrival in [120 s, 180 s], the refused one too"
        );
    }

    #[test]
    fn okx_trading_counts_per_instrument() {
        let cfg = SimConfig::shipped();
        let mut l = Limits::new(&cfg.exchanges[&Exchange::Okx]);
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        let c = |inst: &str| vec![Charge { group: "trade-order".into(), cost: 60, partition: Some(inst.into()) }];
        assert!(matches!(l.admit(ms(0), ip, Some("a"), &c("BTC-USDT")), Decision::Admitted(_)));
        assert!(matches!(l.admit(ms(1), ip, Some("a"), &c("ETH-USDT")), Decision::Admitted(_)));
        assert!(matches!(l.admit(ms(2), ip, Some("a"), &c("BTC-USDT")), Decision::Throttled { .. }));
    }
}
