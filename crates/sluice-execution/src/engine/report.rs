//! What the engine reports and weighs, read-only: the order and position views
//! the API and events show, PnL per account, equity, the exposure risk checks
//! against, and the UTC day's PnL.

use sluice_domain::{Decimal, Symbol};
use sluice_proto::execution::v1 as pb;
use sluice_rate::Time;

use super::{Engine, NewOrder, Tracked};
use crate::config::AccountId;
use crate::positions::Position;
use crate::risk::Exposure;

/// An amount as shown (API, events): kept exact inside, shown to 8 decimal
/// places (an average cost is a quotient with no end).
fn shown(d: Decimal) -> String {
    d.round_dp(8).normalize().to_string()
}

impl Engine {
    /// The account's equity in `quote`. Paper: the wallet's `quote` plus every
    /// position in it marked to the mid. Live: the exchange's balances, `quote`
    /// plus each traded base asset marked to the mid (what the account holds,
    /// whoever bought it).
    pub(super) fn equity(&self, account: &AccountId, quote: &str) -> Decimal {
        let acct = account.to_string();
        if !self.paper_mode() {
            let Some(b) = self.balances.get(account) else { return Decimal::ZERO };
            let total = |asset: &str| b.get(asset).map_or(Decimal::ZERO, |(f, l)| *f + *l);
            let held: Decimal = self
                .cfg
                .strategies
                .iter()
                .filter(|s| s.account == *account && s.symbol.quote.as_str() == quote)
                .filter_map(|s| self.mark(&s.symbol.to_string()).map(|m| total(s.symbol.base.as_str()) * m))
                .sum();
            return total(quote) + held;
        }
        let cash =
            self.paper.wallets.get(&acct).map_or(Decimal::ZERO, |w| {
                w.free.get(quote).copied().unwrap_or_default() + w.locked.get(quote).copied().unwrap_or_default()
            });
        let held: Decimal = self
            .positions
            .iter()
            .filter(|((a, s), _)| *a == acct && s.ends_with(&format!("/{quote}")))
            .map(|((_, s), p)| {
                let mid = self.mark(s).unwrap_or(p.avg_cost);
                p.qty * mid
            })
            .sum();
        cash + held
    }

    /// The mid of a symbol ("BASE/QUOTE") on whichever venue has it.
    pub(super) fn mark(&self, symbol: &str) -> Option<Decimal> {
        let dash = symbol.replace('/', "-");
        self.markets.iter().find(|(k, _)| k.ends_with(&format!(":{dash}"))).and_then(|(_, m)| m.touch()).map(|t| t.mid())
    }

    pub(super) fn exposure(&self, o: &NewOrder, now: Time) -> Exposure {
        let acct = o.account.to_string();
        let open: Vec<&Tracked> = self.orders.values().filter(|t| t.account == o.account && t.state.status.is_open()).collect();
        let open_same_side = open.iter().filter(|t| t.symbol == o.symbol && t.side == o.side).map(|t| t.state.remaining()).sum::<Decimal>();
        let gross = self
            .positions
            .iter()
            .filter(|((a, _), _)| *a == acct)
            .map(|((_, s), p)| p.qty.abs() * self.mark(s).unwrap_or(p.avg_cost))
            .sum();
        let market = self.markets.get(&o.market);
        Exposure {
            position: self.position_qty(&o.account, &o.symbol),
            open_same_side,
            gross,
            open_orders: open.len(),
            day_pnl: self.day_pnl(&acct, now),
            last_trade: market.and_then(|m| m.last_trade),
            market_time: market.and_then(|m| m.updated),
        }
    }

    /// Realized and unrealized PnL (less fees) of `account` since the UTC day began.
    pub(super) fn day_pnl(&self, account: &str, now: Time) -> Decimal {
        let total: Decimal =
            self.positions.iter().filter(|((a, _), _)| a == account).map(|((_, s), p)| p.net(self.mark(s).unwrap_or(p.avg_cost))).sum();
        let day = now.as_nanos() / 86_400_000_000_000;
        match self.day_start.get(account) {
            Some((d, start)) if *d == day => total - start,
            _ => Decimal::ZERO,
        }
    }

    /// Keeps each account's PnL at the start of the UTC day.
    pub(super) fn roll_day(&mut self, now: Time) {
        let day = now.as_nanos() / 86_400_000_000_000;
        let accounts: Vec<String> = self.cfg.strategies.iter().map(|s| s.account.to_string()).collect();
        for a in accounts {
            if self.day_start.get(&a).is_none_or(|(d, _)| *d != day) {
                let total: Decimal =
                    self.positions.iter().filter(|((x, _), _)| *x == a).map(|((_, s), p)| p.net(self.mark(s).unwrap_or(p.avg_cost))).sum();
                self.day_start.insert(a, (day, total));
            }
        }
    }

    pub(crate) fn view(&self, cid: &str) -> pb::Order {
        self.orders.get(cid).map(Tracked::view).unwrap_or_default()
    }

    pub(crate) fn position_view(&self, account: &AccountId, symbol: &Symbol) -> Option<pb::Position> {
        let key = (account.to_string(), symbol.to_string());
        let p = self.positions.get(&key)?;
        let mark = self.mark(&key.1);
        Some(pb::Position {
            account: key.0.clone(),
            symbol: format!("{}-{}", symbol.base, symbol.quote),
            quantity: p.qty.normalize().to_string(),
            average_cost: shown(p.avg_cost),
            realized_pnl: shown(p.realized),
            unrealized_pnl: mark.map(|m| shown(p.unrealized(m))).unwrap_or_default(),
            fees: shown(p.fees),
            mark_price: mark.map(|m| m.normalize().to_string()).unwrap_or_default(),
            updated_unix_ns: self.now().as_nanos() as i64,
        })
    }

    pub(crate) fn positions_of(&self, account: Option<&AccountId>) -> Vec<pb::Position> {
        let keys: Vec<(String, String)> = self.positions.keys().cloned().collect();
        keys.iter()
            .filter_map(|(a, s)| {
                let acct = AccountId::parse(a).ok()?;
                if account.is_some_and(|x| *x != acct) {
                    return None;
                }
                self.position_view(&acct, &s.parse().ok()?)
            })
            .collect()
    }

    pub(crate) fn pnl(&self, account: Option<&AccountId>) -> pb::PnlReport {
        let now = self.now();
        let mut accounts: Vec<AccountId> = self.cfg.strategies.iter().map(|s| s.account.clone()).collect();
        accounts.sort();
        accounts.dedup();
        let report = accounts
            .into_iter()
            .filter(|a| account.is_none_or(|x| x == a))
            .map(|a| {
                let acct = a.to_string();
                let mine: Vec<(&String, &Position)> =
                    self.positions.iter().filter(|((x, _), _)| *x == acct).map(|((_, s), p)| (s, p)).collect();
                let realized: Decimal = mine.iter().map(|(_, p)| p.realized).sum();
                let unrealized: Decimal = mine.iter().map(|(s, p)| self.mark(s).map_or(Decimal::ZERO, |m| p.unrealized(m))).sum();
                let fees: Decimal = mine.iter().map(|(_, p)| p.fees).sum();
                let quotes: Vec<String> =
                    self.cfg.strategies.iter().filter(|s| s.account == a).map(|s| s.symbol.quote.to_string()).collect();
                let equity: Decimal = quotes.first().map_or(Decimal::ZERO, |q| self.equity(&a, q));
                pb::AccountPnl {
                    account: acct.clone(),
                    realized: shown(realized),
                    unrealized: shown(unrealized),
                    fees: shown(fees),
                    day_pnl: shown(self.day_pnl(&acct, now)),
                    equity: shown(equity),
                }
            })
            .collect();
        pb::PnlReport { accounts: report }
    }

    /// Sets each account's equity, day PnL and daily-loss-used gauges.
    pub(crate) fn export_pnl(&self) {
        // A figure for dashboards: through its decimal text, exact to f64's precision.
        let f = |d: Decimal| d.to_string().parse::<f64>().unwrap_or(0.0);
        let now = self.now();
        let mut accounts: Vec<AccountId> = self.cfg.strategies.iter().map(|s| s.account.clone()).collect();
        accounts.sort();
        accounts.dedup();
        for a in accounts {
            let acct = a.to_string();
            let labels = crate::metrics::AccountLabels { account: acct.clone() };
            let day = self.day_pnl(&acct, now);
            let quote = self.cfg.strategies.iter().find(|s| s.account == a).map(|s| s.symbol.quote.to_string());
            let equity = quote.map_or(Decimal::ZERO, |q| self.equity(&a, &q));
            let used = match self.cfg.limits(&a).daily_loss_limit {
                Some(limit) if limit > Decimal::ZERO && day < Decimal::ZERO => f(-day / limit),
                _ => 0.0,
            };
            self.metrics.equity.get_or_create(&labels).set(f(equity));
            self.metrics.day_pnl.get_or_create(&labels).set(f(day));
            self.metrics.daily_loss_used.get_or_create(&labels).set(used);
        }
    }
}
