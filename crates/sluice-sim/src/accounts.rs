//! Simulated accounts: balances and orders. Limit orders that do not cross rest and
//! lock funds; market orders and crossing limits fill at once. A resting limit
//! order fills, as maker at its own price, when the market's trades print at or
//! through it, up to each trade's size (so a large order fills in parts). Client
//! order ids are unique per account, as every exchange enforces (that is what
//! makes retries safe).

use std::collections::{BTreeMap, HashMap};

use rust_decimal::Decimal;
use sluice_domain::Side;

use crate::market::Market;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Balance {
    pub(crate) free: Decimal,
    pub(crate) locked: Decimal,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OrderKind {
    Limit,
    Market,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OrderStatus {
    Open,
    Filled,
    Canceled,
}

/// An order as the simulated exchange keeps it.
#[derive(Debug, Clone)]
pub(crate) struct SimOrder {
    pub(crate) id: String,
    pub(crate) client_id: Option<String>,
    pub(crate) native: String,
    pub(crate) side: Side,
    pub(crate) kind: OrderKind,
    pub(crate) price: Option<Decimal>,
    pub(crate) qty: Decimal,
    pub(crate) filled: Decimal,
    /// Quote spent or received by fills.
    pub(crate) filled_quote: Decimal,
    pub(crate) status: OrderStatus,
    pub(crate) created_ms: u64,
    /// When the request that created it arrived, in ns (for latency measurements).
    pub(crate) created_ns: u64,
    pub(crate) updated_ms: u64,
    /// Executions so far (trade ids are `<id>-<n>`).
    pub(crate) fills: u32,
    /// Each execution, in order.
    pub(crate) trades: Vec<SimTrade>,
    /// Ended by its time in force (IOC or FOK with nothing to take), not by a
    /// cancel (Binance says EXPIRED).
    pub(crate) expired: bool,
}

/// One execution of an order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SimTrade {
    pub(crate) id: String,
    pub(crate) price: Decimal,
    pub(crate) qty: Decimal,
    pub(crate) ts_ms: u64,
    /// It rested on the book and a trade reached it (else it took liquidity).
    pub(crate) maker: bool,
}

impl SimOrder {
    pub(crate) fn remaining(&self) -> Decimal {
        self.qty - self.filled
    }

    pub(crate) fn avg_price(&self) -> Decimal {
        if self.filled.is_zero() { Decimal::ZERO } else { (self.filled_quote / self.filled).round_dp(8).normalize() }
    }
}

/// How long a limit order may wait (each exchange's own words map to these).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) enum Tif {
    #[default]
    Gtc,
    /// What does not fill at once is cancelled (the sim fills a crossing order
    /// whole at the touch, so an IOC fills whole or not at all, like a FOK).
    Ioc,
    Fok,
    /// Refused when it would take liquidity.
    PostOnly,
}

/// An order request, already parsed from the exchange's own format.
#[derive(Debug, Clone)]
pub(crate) struct NewOrder {
    pub(crate) native: String,
    pub(crate) side: Side,
    pub(crate) kind: OrderKind,
    pub(crate) price: Option<Decimal>,
    /// Base quantity; for a market buy by quote amount, `None` with `quote_qty` set.
    pub(crate) qty: Option<Decimal>,
    pub(crate) quote_qty: Option<Decimal>,
    pub(crate) client_id: Option<String>,
    pub(crate) tif: Tif,
}

/// Why an order was refused (each venue maps these to its own error).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum OrderError {
    #[error("unknown symbol {0}")]
    UnknownSymbol(String),
    #[error("duplicate client order id {0}")]
    Duplicate(String),
    #[error("insufficient {asset}: need {need}, have {have}")]
    Insufficient { asset: String, need: Decimal, have: Decimal },
    #[error("invalid quantity: {0}")]
    InvalidQty(String),
    #[error("invalid price: {0}")]
    InvalidPrice(String),
    #[error("order not found")]
    NotFound,
    #[error("order is not open")]
    NotOpen,
    #[error("no liquidity")]
    NoLiquidity,
    #[error("a post-only order would take liquidity")]
    WouldTake,
    #[error("order value {value} is below the minimum {min}")]
    BelowMinNotional { value: Decimal, min: Decimal },
}

/// How to find an order.
#[derive(Debug, Clone)]
pub(crate) enum OrderKey {
    Id(String),
    Client(String),
}

/// What changed in an account, for the private WebSocket streams.
#[derive(Debug, Clone)]
pub(crate) enum AccountEvent {
    /// An order's state after a change.
    Order(SimOrder),
    /// One execution, with the order as it stands after it.
    Fill { order: SimOrder, trade_id: String, price: Decimal, qty: Decimal },
    /// The balances that changed, as they are now.
    Balances(Vec<(String, Balance)>),
}

#[derive(Debug, Clone)]
pub(crate) struct Account {
    pub(crate) balances: BTreeMap<String, Balance>,
    orders: BTreeMap<String, SimOrder>,
    by_client: HashMap<String, String>,
    /// Changes since the last `take_events`, in order.
    events: Vec<AccountEvent>,
    /// The arrival time (ns) of the request being handled, stamped on the orders
    /// it creates.
    pub(crate) arrived_ns: u64,
}

fn on_step(v: Decimal, step: Decimal) -> bool {
    (v / step).fract().is_zero()
}

impl Account {
    pub(crate) fn new(balances: &BTreeMap<String, Decimal>) -> Self {
        Account {
            balances: balances.iter().map(|(a, v)| (a.clone(), Balance { free: *v, locked: Decimal::ZERO })).collect(),
            orders: BTreeMap::new(),
            by_client: HashMap::new(),
            events: Vec::new(),
            arrived_ns: 0,
        }
    }

    /// The changes since the last call, in order.
    pub(crate) fn take_events(&mut self) -> Vec<AccountEvent> {
        std::mem::take(&mut self.events)
    }

    fn balances_changed(&mut self, assets: &[&str]) {
        let now: Vec<(String, Balance)> = assets.iter().map(|a| ((*a).to_owned(), *self.balance(a))).collect();
        self.events.push(AccountEvent::Balances(now));
    }

    fn balance(&mut self, asset: &str) -> &mut Balance {
        self.balances.entry(asset.to_owned()).or_default()
    }

    fn take(&mut self, asset: &str, amount: Decimal, lock: bool) -> Result<(), OrderError> {
        let b = self.balance(asset);
        if b.free < amount {
            return Err(OrderError::Insufficient { asset: asset.to_owned(), need: amount, have: b.free });
        }
        b.free -= amount;
        if lock {
            b.locked += amount;
        }
        Ok(())
    }

    pub(crate) fn get(&self, key: &OrderKey) -> Option<&SimOrder> {
        match key {
            OrderKey::Id(id) => self.orders.get(id),
            OrderKey::Client(c) => self.by_client.get(c).and_then(|id| self.orders.get(id)),
        }
    }

    pub(crate) fn orders(&self) -> impl Iterator<Item = &SimOrder> {
        self.orders.values()
    }

    /// Places an order under `id`.
    pub(crate) fn place(&mut self, market: &Market, o: NewOrder, id: String, now_ms: u64) -> Result<SimOrder, OrderError> {
        let inst = market.instrument(&o.native).ok_or_else(|| OrderError::UnknownSymbol(o.native.clone()))?;
        if let Some(c) = &o.client_id
            && self.by_client.contains_key(c)
        {
            return Err(OrderError::Duplicate(c.clone()));
        }
        let (base, quote) = (inst.symbol.base.to_string(), inst.symbol.quote.to_string());
        let (best_bid, best_ask) = (inst.book.best_bid().map(|l| l.0), inst.book.best_ask().map(|l| l.0));
        if let Some(p) = o.price
            && (p <= Decimal::ZERO || !on_step(p, inst.tick))
        {
            return Err(OrderError::InvalidPrice(format!("{p} is not a positive multiple of the tick {}", inst.tick)));
        }
        // Quantity: given, or (market buy by amount) what the amount buys at the best ask.
        let qty = match (o.qty, o.quote_qty, o.kind, o.side) {
            (Some(q), _, _, _) => q,
            (None, Some(amount), OrderKind::Market, Side::Buy) => {
                let ask = best_ask.ok_or(OrderError::NoLiquidity)?;
                ((amount / ask) / inst.lot).floor() * inst.lot
            }
            _ => return Err(OrderError::InvalidQty("missing quantity".into())),
        };
        if qty <= Decimal::ZERO || !on_step(qty, inst.lot) {
            return Err(OrderError::InvalidQty(format!("{qty} is not a positive multiple of the lot {}", inst.lot)));
        }
        // The order's value at its own price, or (market) at the touch it takes.
        let reference = o.price.or(match o.side {
            Side::Buy => best_ask,
            Side::Sell => best_bid,
        });
        if let Some(px) = reference
            && px * qty < inst.min_notional
        {
            return Err(OrderError::BelowMinNotional { value: px * qty, min: inst.min_notional });
        }
        let mut order = SimOrder {
            id: id.clone(),
            client_id: o.client_id.clone(),
            native: o.native.clone(),
            side: o.side,
            kind: o.kind,
            price: o.price,
            qty,
            filled: Decimal::ZERO,
            filled_quote: Decimal::ZERO,
            status: OrderStatus::Open,
            created_ms: now_ms,
            created_ns: self.arrived_ns,
            updated_ms: now_ms,
            fills: 0,
            trades: Vec::new(),
            expired: false,
        };
        // The price it fills at now, if it fills now.
        let fill_at = match (o.kind, o.side) {
            (OrderKind::Market, Side::Buy) => Some(best_ask.ok_or(OrderError::NoLiquidity)?),
            (OrderKind::Market, Side::Sell) => Some(best_bid.ok_or(OrderError::NoLiquidity)?),
            (OrderKind::Limit, Side::Buy) => o.price.filter(|p| best_ask.is_some_and(|a| *p >= a)),
            (OrderKind::Limit, Side::Sell) => o.price.filter(|p| best_bid.is_some_and(|b| *p <= b)),
        };
        if o.kind == OrderKind::Limit {
            match (o.tif, fill_at) {
                (Tif::PostOnly, Some(_)) => return Err(OrderError::WouldTake),
                (Tif::Ioc | Tif::Fok, None) => {
                    // Nothing to take now: it ends at once, holding nothing.
                    order.status = OrderStatus::Canceled;
                    order.expired = true;
                    self.events.push(AccountEvent::Order(order.clone()));
                    if let Some(c) = o.client_id {
                        self.by_client.insert(c, id.clone());
                    }
                    self.orders.insert(id, order.clone());
                    return Ok(order);
                }
                _ => {}
            }
        }
        match (fill_at, o.side) {
            (Some(px), Side::Buy) => {
                self.take(&quote, px * qty, false)?;
                self.balance(&base).free += qty;
            }
            (Some(px), Side::Sell) => {
                self.take(&base, qty, false)?;
                self.balance(&quote).free += px * qty;
            }
            (None, Side::Buy) => self.take(&quote, o.price.unwrap_or_default() * qty, true)?,
            (None, Side::Sell) => self.take(&base, qty, true)?,
        }
        if let Some(px) = fill_at {
            order.filled = qty;
            order.filled_quote = px * qty;
            order.status = OrderStatus::Filled;
            order.fills = 1;
            order.trades.push(SimTrade { id: format!("{id}-1"), price: px, qty, ts_ms: now_ms, maker: false });
            self.events.push(AccountEvent::Fill { order: order.clone(), trade_id: format!("{id}-1"), price: px, qty });
        }
        self.events.push(AccountEvent::Order(order.clone()));
        self.balances_changed(&[&base, &quote]);
        if let Some(c) = o.client_id {
            self.by_client.insert(c, id.clone());
        }
        self.orders.insert(id, order.clone());
        Ok(order)
    }

    /// A trade printed on `native` at `price` for `qty`: resting limit orders it
    /// reaches (a buy at or above the price, a sell at or below) fill at their own
    /// price, oldest first, up to the trade's size.
    pub(crate) fn on_trade(&mut self, market: &Market, native: &str, price: Decimal, qty: Decimal, now_ms: u64) {
        let Some(inst) = market.instrument(native) else { return };
        let (base, quote) = (inst.symbol.base.to_string(), inst.symbol.quote.to_string());
        let reached = |o: &SimOrder| match (o.side, o.price) {
            (Side::Buy, Some(p)) => price <= p,
            (Side::Sell, Some(p)) => price >= p,
            _ => false,
        };
        let mut due: Vec<(u64, String)> = self
            .orders
            .values()
            .filter(|o| o.status == OrderStatus::Open && o.kind == OrderKind::Limit && o.native == native && reached(o))
            .map(|o| (o.created_ms, o.id.clone()))
            .collect();
        if due.is_empty() {
            return;
        }
        due.sort();
        let mut left = qty;
        for (_, id) in due {
            if left <= Decimal::ZERO {
                break;
            }
            let Some(o) = self.orders.get_mut(&id) else { continue };
            let (px, q) = (o.price.unwrap_or_default(), o.remaining().min(left));
            left -= q;
            o.filled += q;
            o.filled_quote += px * q;
            o.fills += 1;
            o.trades.push(SimTrade { id: format!("{id}-{}", o.fills), price: px, qty: q, ts_ms: now_ms, maker: true });
            o.updated_ms = now_ms;
            if o.remaining().is_zero() {
                o.status = OrderStatus::Filled;
            }
            let (side, trade_id, order) = (o.side, format!("{id}-{}", o.fills), o.clone());
            match side {
                Side::Buy => {
                    self.balance(&quote).locked -= px * q;
                    self.balance(&base).free += q;
                }
                Side::Sell => {
                    self.balance(&base).locked -= q;
                    self.balance(&quote).free += px * q;
                }
            }
            self.events.push(AccountEvent::Fill { order: order.clone(), trade_id, price: px, qty: q });
            self.events.push(AccountEvent::Order(order));
        }
        self.balances_changed(&[&base, &quote]);
    }

    /// Cancels an open order and unlocks what it held.
    pub(crate) fn cancel(&mut self, market: &Market, key: &OrderKey, now_ms: u64) -> Result<SimOrder, OrderError> {
        let id = match key {
            OrderKey::Id(id) => id.clone(),
            OrderKey::Client(c) => self.by_client.get(c).cloned().ok_or(OrderError::NotFound)?,
        };
        let order = self.orders.get(&id).cloned().ok_or(OrderError::NotFound)?;
        if order.status != OrderStatus::Open {
            return Err(OrderError::NotOpen);
        }
        let inst = market.instrument(&order.native).ok_or_else(|| OrderError::UnknownSymbol(order.native.clone()))?;
        let (asset, amount) = match order.side {
            Side::Buy => (inst.symbol.quote.to_string(), order.price.unwrap_or_default() * order.remaining()),
            Side::Sell => (inst.symbol.base.to_string(), order.remaining()),
        };
        let b = self.balance(&asset);
        b.locked -= amount;
        b.free += amount;
        let o = self.orders.get_mut(&id).expect("present above");
        o.status = OrderStatus::Canceled;
        o.updated_ms = now_ms;
        let o = o.clone();
        self.events.push(AccountEvent::Order(o.clone()));
        self.balances_changed(&[&asset]);
        Ok(o)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::SimConfig;
    use sluice_domain::Exchange;

    fn setup() -> (Market, Account) {
        let cfg = SimConfig::shipped();
        (Market::new(Exchange::Binance, &cfg.markets, 1, 1_700_000_000_000), Account::new(&cfg.balances))
    }

    fn limit(side: Side, price: &str, qty: &str, client: Option<&str>) -> NewOrder {
        NewOrder {
            native: "BTCUSDT".into(),
            side,
            kind: OrderKind::Limit,
            price: Some(price.parse().unwrap()),
            qty: Some(qty.parse().unwrap()),
            quote_qty: None,
            client_id: client.map(str::to_owned),
            tif: Tif::Gtc,
        }
    }

    #[test]
    fn resting_orders_lock_and_cancels_unlock() {
        let (m, mut a) = setup();
        let before = a.balances["USDT"];
        let o = a.place(&m, limit(Side::Buy, "60000", "0.5", Some("c1")), "1".into(), 0).unwrap();
        assert_eq!(o.status, OrderStatus::Open);
        assert_eq!(a.balances["USDT"].locked, "30000".parse().unwrap());
        let c = a.cancel(&m, &OrderKey::Client("c1".into()), 1).unwrap();
        assert_eq!(c.status, OrderStatus::Canceled);
        assert_eq!(a.balances["USDT"], before);
        assert_eq!(a.cancel(&m, &OrderKey::Id("1".into()), 2).unwrap_err(), OrderError::NotOpen);
    }

    #[test]
    fn duplicates_bad_steps_and_insufficient_funds_are_refused() {
        let (m, mut a) = setup();
        a.place(&m, limit(Side::Buy, "60000", "0.1", Some("dup")), "1".into(), 0).unwrap();
        assert_eq!(
            a.place(&m, limit(Side::Buy, "60000", "0.1", Some("dup")), "2".into(), 0).unwrap_err(),
            OrderError::Duplicate("dup".into())
        );
        assert!(matches!(a.place(&m, limit(Side::Buy, "60000.05", "0.1", None), "3".into(), 0), Err(OrderError::InvalidPrice(_))));
        assert!(matches!(a.place(&m, limit(Side::Buy, "60000", "0.0000001", None), "4".into(), 0), Err(OrderError::InvalidQty(_))));
        assert!(matches!(a.place(&m, limit(Side::Buy, "60000", "100", None), "5".into(), 0), Err(OrderError::Insufficient { .. })));
    }

    #[test]
    fn resting_orders_fill_in_parts_from_trades_that_reach_them() {
        let (m, mut a) = setup();
        let usdt = a.balances["USDT"].free;
        let o = a.place(&m, limit(Side::Buy, "60000", "0.5", Some("r1")), "o1".into(), 1).unwrap();
        assert_eq!(o.status, OrderStatus::Open);
        a.take_events();
        // A trade above the limit does not reach it; one at it fills 0.2; one
        // through it the remaining 0.3 (of its 0.4).
        a.on_trade(&m, "BTCUSDT", "60001".parse().unwrap(), "1".parse().unwrap(), 2);
        assert!(a.take_events().is_empty());
        a.on_trade(&m, "BTCUSDT", "60000".parse().unwrap(), "0.2".parse().unwrap(), 3);
        a.on_trade(&m, "BTCUSDT", "59990".parse().unwrap(), "0.4".parse().unwrap(), 4);
        let o = a.get(&OrderKey::Client("r1".into())).unwrap();
        assert_eq!(
            (o.status, o.filled, o.avg_price(), o.fills),
            (OrderStatus::Filled, "0.5".parse().unwrap(), "60000".parse().unwrap(), 2)
        );
        let fills: Vec<String> = a
            .take_events()
            .into_iter()
            .filter_map(|e| match e {
                AccountEvent::Fill { trade_id, .. } => Some(trade_id),
                _ => None,
            })
            .collect();
        assert_eq!(fills, vec!["o1-1", "o1-2"]);
        assert_eq!(a.balances["BTC"].free - "0.5".parse::<Decimal>().unwrap(), SimConfig::shipped().balances["BTC"]);
        assert_eq!(a.balances["USDT"].free, usdt - "30000".parse::<Decimal>().unwrap());
        assert_eq!(a.balances["USDT"].locked, Decimal::ZERO);
    }

    #[test]
    fn market_orders_fill_at_the_touch() {
        let (m, mut a) = setup();
        let ask = m.instrument("BTCUSDT").unwrap().book.best_ask().unwrap().0;
        let o = NewOrder {
            native: "BTCUSDT".into(),
            side: Side::Buy,
            kind: OrderKind::Market,
            price: None,
            qty: Some("0.01".parse().unwrap()),
            quote_qty: None,
            client_id: None,
            tif: Tif::Gtc,
        };
        let o = a.place(&m, o, "9".into(), 0).unwrap();
        assert_eq!(o.status, OrderStatus::Filled);
        assert_eq!(o.avg_price(), ask);
        assert_eq!(a.balances["BTC"].free, "2.01".parse().unwrap());
    }
}
