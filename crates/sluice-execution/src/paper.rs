//! The paper venue, pure: a wallet per account (free and locked balances), the
//! resting orders, and what an order, a cancel and a printed trade do to them,
//! with the fill model of [`crate::fills`]. The engine drives it exactly as it
//! drives a live exchange (same state machine, risk, journal and events); only
//! the venue differs.
//!
//! Funds are locked when an order is accepted (a buy locks its worst cost plus
//! the taker fee in the quote asset, a sell its quantity in the base asset) and
//! released when it ends; an order the wallet cannot cover is rejected, as an
//! exchange would. Fees are charged in the quote asset. Trade ids are
//! `<client order id>-<n>`, so the same fill rebuilt from the journal after a
//! restart is the same trade.

use std::collections::BTreeMap;

use sluice_domain::{Decimal, Side};

use crate::fills::{self, Exec, FeeRates, Level, Taken, Tif};

/// Free and locked balances per asset.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Wallet {
    pub free: BTreeMap<String, Decimal>,
    pub locked: BTreeMap<String, Decimal>,
}

impl Wallet {
    pub fn free(&self, asset: &str) -> Decimal {
        self.free.get(asset).copied().unwrap_or_default()
    }

    fn add(map: &mut BTreeMap<String, Decimal>, asset: &str, v: Decimal) {
        *map.entry(asset.to_owned()).or_default() += v;
    }
}

/// An order as the paper venue holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PaperOrder {
    pub client_order_id: String,
    pub account: String,
    /// The market's symbol key (venue and symbol), matched against trades.
    pub market: String,
    pub base: String,
    pub quote: String,
    pub side: Side,
    pub quantity: Decimal,
    /// A limit price, or a market order's slippage limit.
    pub limit: Decimal,
    pub tif: Tif,
    /// A market order (never rests).
    pub market_order: bool,
    pub fees: FeeRates,
}

/// What the venue did, in the order it happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PaperEvent {
    Accepted {
        client_order_id: String,
    },
    Fill {
        client_order_id: String,
        trade_id: String,
        exec: Exec,
    },
    /// Ended by its time in force (market, IOC, FOK), what is left unfilled.
    Expired {
        client_order_id: String,
        reason: String,
    },
    Cancelled {
        client_order_id: String,
    },
    Rejected {
        client_order_id: String,
        reason: String,
    },
    CancelFailed {
        client_order_id: String,
        reason: String,
    },
}

#[derive(Debug, Clone)]
struct Resting {
    order: PaperOrder,
    left: Decimal,
    /// Still locked for it (quote for a buy, base for a sell).
    locked: Decimal,
    fills: u64,
}

/// The paper venue.
#[derive(Debug, Default)]
pub struct PaperVenue {
    pub wallets: BTreeMap<String, Wallet>,
    resting: BTreeMap<String, Resting>,
    /// A resting order's share of a trade at its own price.
    pub touch_share: Decimal,
}

impl PaperVenue {
    pub fn new(touch_share: Decimal) -> PaperVenue {
        PaperVenue { wallets: BTreeMap::new(), resting: BTreeMap::new(), touch_share }
    }

    /// Credits a starting balance.
    pub fn deposit(&mut self, account: &str, asset: &str, amount: Decimal) {
        Wallet::add(&mut self.wallets.entry(account.to_owned()).or_default().free, asset, amount);
    }

    /// The open (resting) orders' ids.
    pub fn open_orders(&self) -> impl Iterator<Item = &String> {
        self.resting.keys()
    }

    /// What an order needs locked: a buy its worst cost plus the taker fee, a sell
    /// its quantity.
    fn needs(o: &PaperOrder) -> (String, Decimal) {
        match o.side {
            Side::Buy => (o.quote.clone(), o.quantity * o.limit * (Decimal::ONE + o.fees.taker.max(o.fees.maker))),
            Side::Sell => (o.base.clone(), o.quantity),
        }
    }

    /// A new order against the opposite side of the book (best first).
    pub fn submit(&mut self, o: PaperOrder, opposite: &[Level]) -> Vec<PaperEvent> {
        let cid = o.client_order_id.clone();
        if o.quantity <= Decimal::ZERO || o.limit <= Decimal::ZERO {
            return vec![PaperEvent::Rejected { client_order_id: cid, reason: "quantity and price must be positive".into() }];
        }
        if self.resting.contains_key(&cid) {
            return vec![PaperEvent::Rejected { client_order_id: cid, reason: "duplicate client order id".into() }];
        }
        let (asset, need) = Self::needs(&o);
        let wallet = self.wallets.entry(o.account.clone()).or_default();
        let free = wallet.free(&asset);
        if free < need {
            return vec![PaperEvent::Rejected {
                client_order_id: cid,
                reason: format!("insufficient balance: needs {need} {asset}, {free} free"),
            }];
        }
        let tif = if o.market_order { Tif::Ioc } else { o.tif };
        let taken = fills::take(o.side, o.quantity, Some(o.limit), tif, opposite, &o.fees);
        let (execs, left) = match taken {
            Taken::WouldTake => {
                return vec![PaperEvent::Rejected { client_order_id: cid, reason: "post-only order would take liquidity".into() }];
            }
            Taken::Killed { available } => {
                return vec![
                    PaperEvent::Accepted { client_order_id: cid.clone() },
                    PaperEvent::Expired { client_order_id: cid, reason: format!("fill-or-kill: only {available} available") },
                ];
            }
            Taken::Filled { execs, left } => (execs, left),
        };
        Wallet::add(&mut wallet.free, &asset, -need);
        Wallet::add(&mut wallet.locked, &asset, need);
        let mut r = Resting { order: o, left: Decimal::ZERO, locked: need, fills: 0 };
        let mut events = vec![PaperEvent::Accepted { client_order_id: cid.clone() }];
        for e in execs {
            events.push(self.settle_fill(&mut r, e));
        }
        r.left = left;
        if left.is_zero() {
            self.release(&mut r);
        } else if matches!(tif, Tif::Ioc) {
            self.release(&mut r);
            let why = if r.order.market_order { "market order: the book ran out within the slippage cap" } else { "immediate-or-cancel" };
            events.push(PaperEvent::Expired { client_order_id: cid, reason: format!("{why}; {left} unfilled") });
        } else {
            self.resting.insert(cid, r);
        }
        events
    }

    /// Moves funds for one execution and names it.
    fn settle_fill(&mut self, r: &mut Resting, e: Exec) -> PaperEvent {
        let o = &r.order;
        let wallet = self.wallets.entry(o.account.clone()).or_default();
        let cost = e.price * e.qty;
        match o.side {
            Side::Buy => {
                let spent = cost + e.fee;
                Wallet::add(&mut wallet.locked, &o.quote, -spent);
                r.locked -= spent;
                Wallet::add(&mut wallet.free, &o.base, e.qty);
            }
            Side::Sell => {
                Wallet::add(&mut wallet.locked, &o.base, -e.qty);
                r.locked -= e.qty;
                Wallet::add(&mut wallet.free, &o.quote, cost - e.fee);
            }
        }
        r.fills += 1;
        PaperEvent::Fill { client_order_id: o.client_order_id.clone(), trade_id: format!("{}-{}", o.client_order_id, r.fills), exec: e }
    }

    /// Gives back what an ended order still had locked.
    fn release(&mut self, r: &mut Resting) {
        let asset = if r.order.side == Side::Buy { &r.order.quote } else { &r.order.base };
        let wallet = self.wallets.entry(r.order.account.clone()).or_default();
        Wallet::add(&mut wallet.locked, asset, -r.locked);
        Wallet::add(&mut wallet.free, asset, r.locked);
        r.locked = Decimal::ZERO;
    }

    /// Puts an order back as the journal left it (after a restart): its funds
    /// locked as at acceptance, its fills (`filled` for `notional` with `fees`)
    /// paid, and, when still `open`, resting with the rest; else released.
    pub fn restore(&mut self, o: PaperOrder, filled: Decimal, notional: Decimal, fees: Decimal, open: bool, fills: u64) {
        let (asset, need) = Self::needs(&o);
        let wallet = self.wallets.entry(o.account.clone()).or_default();
        Wallet::add(&mut wallet.free, &asset, -need);
        Wallet::add(&mut wallet.locked, &asset, need);
        let consumed = match o.side {
            Side::Buy => {
                Wallet::add(&mut wallet.locked, &o.quote, -(notional + fees));
                Wallet::add(&mut wallet.free, &o.base, filled);
                notional + fees
            }
            Side::Sell => {
                Wallet::add(&mut wallet.locked, &o.base, -filled);
                Wallet::add(&mut wallet.free, &o.quote, notional - fees);
                filled
            }
        };
        let left = o.quantity - filled;
        let mut r = Resting { order: o, left, locked: need - consumed, fills };
        if open && left > Decimal::ZERO {
            self.resting.insert(r.order.client_order_id.clone(), r);
        } else {
            self.release(&mut r);
        }
    }

    pub fn cancel(&mut self, client_order_id: &str) -> PaperEvent {
        match self.resting.remove(client_order_id) {
            Some(mut r) => {
                self.release(&mut r);
                PaperEvent::Cancelled { client_order_id: client_order_id.to_owned() }
            }
            None => PaperEvent::CancelFailed { client_order_id: client_order_id.to_owned(), reason: "no such open order".into() },
        }
    }

    /// A trade printed on `market` at `price` for `size`: resting orders it goes
    /// through (or touches) fill, oldest first by client order id order.
    pub fn on_trade(&mut self, market: &str, price: Decimal, size: Decimal) -> Vec<PaperEvent> {
        let ids: Vec<String> = self.resting.iter().filter(|(_, r)| r.order.market == market).map(|(k, _)| k.clone()).collect();
        let mut events = Vec::new();
        let mut left_of_trade = size;
        for id in ids {
            if left_of_trade <= Decimal::ZERO {
                break;
            }
            let Some(mut r) = self.resting.remove(&id) else { continue };
            if let Some(e) = fills::on_trade(r.order.side, r.order.limit, r.left, price, left_of_trade, self.touch_share, &r.order.fees) {
                left_of_trade -= e.qty;
                r.left -= e.qty;
                events.push(self.settle_fill(&mut r, e));
            }
            if r.left.is_zero() {
                self.release(&mut r);
            } else {
                self.resting.insert(id, r);
            }
        }
        events
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(s: &str) -> Decimal {
        s.parse().unwrap()
    }

    const FEES: FeeRates = FeeRates { maker: Decimal::from_parts(1, 0, 0, false, 3), taker: Decimal::from_parts(1, 0, 0, false, 3) };

    fn order(cid: &str, side: Side, qty: &str, limit: &str, tif: Tif) -> PaperOrder {
        PaperOrder {
            client_order_id: cid.into(),
            account: "binance/demo".into(),
            market: "binance:BTC-USDT".into(),
            base: "BTC".into(),
            quote: "USDT".into(),
            side,
            quantity: d(qty),
            limit: d(limit),
            tif,
            market_order: false,
            fees: FEES,
        }
    }

    fn asks() -> Vec<Level> {
        vec![Level { price: d("100"), qty: d("1") }, Level { price: d("101"), qty: d("1") }]
    }

    fn venue() -> PaperVenue {
        let mut v = PaperVenue::new(d("0.5"));
        v.deposit("binance/demo", "USDT", d("1000"));
        v
    }

    #[test]
    fn a_marketable_gtc_buy_takes_then_rests_and_the_wallet_follows() {
        let mut v = venue();
        let ev = v.submit(order("a", Side::Buy, "3", "101", Tif::Gtc), &asks());
        assert!(matches!(ev[0], PaperEvent::Accepted { .. }));
        assert_eq!(ev.iter().filter(|e| matches!(e, PaperEvent::Fill { .. })).count(), 2);
        let w = &v.wallets["binance/demo"];
        // Locked 3 x 101 x 1.001 = 303.303; spent 100.1 + 101.101; 1 left resting.
        assert_eq!((w.free("BTC"), w.locked["USDT"]), (d("2"), d("102.102")));
        assert_eq!(w.free("USDT"), d("1000") - d("303.303"));
        // A sell trade through 101 fills the rest at 101, as maker.
        let ev = v.on_trade("binance:BTC-USDT", d("100.5"), d("5"));
        assert_eq!(ev.len(), 1);
        let w = &v.wallets["binance/demo"];
        assert_eq!((w.free("BTC"), w.locked["USDT"]), (d("3"), d("0")));
        assert_eq!(w.free("USDT"), d("1000") - d("100.1") - d("101.101") - d("101.101"));
        assert_eq!(v.open_orders().count(), 0);
    }

    #[test]
    fn a_restored_venue_holds_what_the_live_one_held() {
        let mut live = venue();
        live.submit(order("a", Side::Buy, "3", "101", Tif::Gtc), &asks());
        let mut back = venue();
        // What the journal says of "a": 2 filled for 201 with 0.201 in fees, open.
        back.restore(order("a", Side::Buy, "3", "101", Tif::Gtc), d("2"), d("201"), d("0.201"), true, 2);
        assert_eq!(back.wallets, live.wallets);
        assert_eq!(back.open_orders().collect::<Vec<_>>(), live.open_orders().collect::<Vec<_>>());
        // The next fill continues the trade ids.
        let ev = back.on_trade("binance:BTC-USDT", d("100"), d("1"));
        assert!(matches!(&ev[0], PaperEvent::Fill { trade_id, .. } if trade_id == "a-3"));
    }

    #[test]
    fn rejections_expiries_and_cancels_release_funds() {
        let mut v = venue();
        let r = v.submit(order("big", Side::Buy, "20", "100", Tif::Gtc), &asks());
        assert!(matches!(&r[0], PaperEvent::Rejected { reason, .. } if reason.contains("insufficient balance")));
        let r = v.submit(order("po", Side::Buy, "1", "100", Tif::PostOnly), &asks());
        assert!(matches!(&r[0], PaperEvent::Rejected { reason, .. } if reason.contains("post-only")));
        let r = v.submit(order("fok", Side::Buy, "3", "101", Tif::Fok), &asks());
        assert!(matches!(&r[1], PaperEvent::Expired { .. }));
        let r = v.submit(PaperOrder { market_order: true, ..order("mkt", Side::Buy, "3", "100.5", Tif::Ioc) }, &asks());
        assert!(matches!(r.last().unwrap(), PaperEvent::Expired { reason, .. } if reason.contains("2 unfilled")));
        v.submit(order("rest", Side::Buy, "1", "90", Tif::Gtc), &asks());
        assert_eq!(v.cancel("rest"), PaperEvent::Cancelled { client_order_id: "rest".into() });
        assert!(matches!(v.cancel("rest"), PaperEvent::CancelFailed { .. }));
        let w = &v.wallets["binance/demo"];
        assert_eq!(w.locked.get("USDT").copied().unwrap_or_default(), d("0"), "nothing stays locked");
        assert_eq!(w.free("USDT"), d("1000") - d("100.1"), "only the market order's one fill was paid");
    }
}
