//! The live venue inside the engine: orders, cancels and queries sent through
//! the dispatcher (each in its own task, see `live.rs`), what comes back read by
//! the exchange's pure module into state-machine events, the collector's
//! private-stream events, and reconciliation.
//!
//! What ends an order is always evidence from the venue: an answer, a query by
//! client order id, a stream event. An ambiguous send (a timeout, a transport
//! error, a 5xx) leaves the order UNKNOWN and asks again; an order the venue
//! does not have is ended only once `unknown_grace_ms` has passed since it was
//! sent, so a request still on its way is never written off. A query that gets
//! no answer proves nothing and changes nothing.

use std::time::Duration;

use prost::Message;
use sluice_domain::{Decimal, Qty, Symbol};
use sluice_proto::account::v1 as acct;
use sluice_proto::execution::v1 as pb;
use sluice_rate::Time;
use tonic::Status;

use super::{Engine, NewOrder};
use crate::config::AccountId;
use crate::fills::Tif;
use crate::live::{Answers, Outcome};
use crate::order::{Event, Fill, Status as OrderStatus};
use crate::strategy::Placement;
use crate::venue::{self, CancelRead, Read, Sent, Spec, Target};

fn borrowed(answers: &[(u16, Vec<u8>)]) -> Vec<(u16, &[u8])> {
    answers.iter().map(|(s, b)| (*s, b.as_slice())).collect()
}

impl Engine {
    fn category(&self, account: &AccountId, symbol: &Symbol) -> String {
        self.cfg
            .strategies
            .iter()
            .find(|s| s.account == *account && s.symbol == *symbol)
            .map_or_else(|| "spot".into(), |s| s.market.clone())
    }

    /// Dispatcher calls sent whose outcome has not been handed in yet (live).
    pub fn calls_in_flight(&self) -> usize {
        self.live.as_ref().map_or(0, crate::live::Live::in_flight)
    }

    fn live_or_unavailable(&self) -> Result<&crate::live::Live, Status> {
        self.live.as_ref().ok_or_else(|| Status::failed_precondition("live mode needs dispatcher_url"))
    }

    /// Sends a submitted order (already journaled as `submit`).
    pub(super) fn send_live(&mut self, cid: &str, o: &NewOrder) -> Result<(), Status> {
        let live = self.live_or_unavailable()?.clone();
        let venue = self
            .venues
            .get(&o.account.exchange)
            .ok_or_else(|| Status::failed_precondition(format!("no live venue for {}", o.account.exchange)))?;
        let native = o.symbol.native(o.account.exchange);
        let category = self.category(&o.account, &o.symbol);
        let (price, tif) = match &o.placement {
            Placement::Limit { price, tif } => (*price, *tif),
            Placement::Market { limit } => (*limit, Tif::Ioc),
        };
        let spec = Spec {
            target: Target { account: &o.account.name, native: &native, category: &category },
            side: o.side,
            quantity: o.quantity,
            price,
            tif,
            client_order_id: cid,
        };
        live.create(cid.to_owned(), venue.create(&spec));
        Ok(())
    }

    /// Sends a cancel (already journaled as `cancel_requested`).
    pub(super) fn cancel_live(&mut self, cid: &str) {
        let Some(t) = self.orders.get(cid) else { return };
        let (Some(live), Some(venue)) = (self.live.as_ref(), self.venues.get(&t.account.exchange)) else { return };
        let native = t.symbol.native(t.account.exchange);
        let category = self.category(&t.account, &t.symbol);
        let target = Target { account: &t.account.name, native: &native, category: &category };
        live.cancel(cid.to_owned(), venue.cancel(&target, cid));
    }

    /// Asks the venue where an order stands: now (unless a query of it is in
    /// flight), or once `delay` has passed (the earliest of the times asked for).
    pub(super) fn query_later(&mut self, cid: &str, delay: Duration) {
        if delay.is_zero() {
            self.query_now(cid);
            return;
        }
        let at = self.now() + delay;
        let due = self.query_due.entry(cid.to_owned()).or_insert(at);
        *due = (*due).min(at);
    }

    fn query_now(&mut self, cid: &str) {
        if self.querying.contains(cid) {
            return;
        }
        let Some(t) = self.orders.get(cid) else { return };
        let (Some(live), Some(venue)) = (self.live.as_ref(), self.venues.get(&t.account.exchange)) else { return };
        let native = t.symbol.native(t.account.exchange);
        let category = self.category(&t.account, &t.symbol);
        let target = Target { account: &t.account.name, native: &native, category: &category };
        live.query(cid.to_owned(), venue.query(&target, cid, t.state.venue_order_id.as_deref()));
        self.querying.insert(cid.to_owned());
        self.query_due.remove(cid);
        self.metrics.query("sent");
    }

    fn confirm_delay(&self) -> Duration {
        Duration::from_millis(self.cfg.confirm_after_ms)
    }

    /// Applies what the venue said, in order. An acceptance of an order already
    /// ended is old news, and a refusal of an order already accepted (Bybit
    /// rejects some asynchronously) ends it as expired.
    async fn apply_venue(&mut self, cid: &str, events: Vec<Event>) -> Result<(), Status> {
        for e in events {
            let Some(status) = self.orders.get(cid).map(|t| t.state.status) else { return Ok(()) };
            let e = match e {
                Event::Accepted { .. } if !status.is_open() => continue,
                Event::Rejected { reason } if !matches!(status, OrderStatus::Submitted | OrderStatus::Unknown) && status.is_open() => {
                    Event::Expired { reason }
                }
                other => other,
            };
            self.transition(cid, e).await?;
        }
        Ok(())
    }

    /// An answer from the dispatcher.
    pub async fn on_outcome(&mut self, o: Outcome) {
        let result = match o {
            Outcome::Created { cid, sent } => self.on_created(&cid, sent).await,
            Outcome::Cancel { cid, sent } => self.on_cancel_answer(&cid, sent).await,
            Outcome::Queried { cid, answers } => {
                self.querying.remove(&cid);
                self.on_queried(&cid, answers).await
            }
            Outcome::Rules { account, symbol, answers } => {
                self.on_rules(account, symbol, answers);
                Ok(())
            }
            Outcome::Balances { account, answers } => {
                self.on_balances(account, answers);
                Ok(())
            }
            Outcome::OpenOrders { account, symbol, answers } => {
                self.on_open_orders(&account, &symbol, answers);
                Ok(())
            }
        };
        if let Err(e) = result {
            tracing::error!(error = %e.message(), "a venue answer could not be journaled; the next query repeats it");
        }
    }

    async fn on_created(&mut self, cid: &str, sent: Sent) -> Result<(), Status> {
        let Some(exchange) = self.orders.get(cid).map(|t| t.account.exchange) else { return Ok(()) };
        let read = match sent {
            Sent::NotSent(reason) => Read::NotSent(reason),
            Sent::Unknown(reason) => Read::Unknown(reason),
            Sent::Answered { status, body } => match self.venues.get(&exchange).map(|v| v.read_create((status, &body))) {
                Some(Ok(r)) => r,
                // A 2xx we cannot read may be an order that exists: unknown.
                Some(Err(e)) => Read::Unknown(format!("unreadable answer: {e}")),
                None => return Ok(()),
            },
        };
        match read {
            Read::Events(events) => {
                self.apply_venue(cid, events).await?;
                // The stream usually confirms; a query makes sure (and is the only
                // confirmation where no private stream runs).
                self.query_later(cid, self.confirm_delay());
            }
            Read::NotSent(reason) => self.transition(cid, Event::NotSent { reason }).await?,
            Read::Unknown(reason) => self.ambiguous(cid, reason).await?,
            Read::NotFound => self.ambiguous(cid, "the create's answer names no order".into()).await?,
        }
        Ok(())
    }

    async fn ambiguous(&mut self, cid: &str, reason: String) -> Result<(), Status> {
        tracing::warn!(client_order_id = cid, %reason, "an order's outcome is unknown; asking the venue");
        self.transition(cid, Event::Ambiguous { reason }).await?;
        self.query_later(cid, self.confirm_delay());
        Ok(())
    }

    async fn on_cancel_answer(&mut self, cid: &str, sent: Sent) -> Result<(), Status> {
        let Some(exchange) = self.orders.get(cid).map(|t| t.account.exchange) else { return Ok(()) };
        match sent {
            Sent::NotSent(reason) => {
                self.transition(cid, Event::CancelFailed { reason }).await?;
            }
            Sent::Unknown(reason) => {
                tracing::warn!(client_order_id = cid, %reason, "a cancel's outcome is unknown; asking the venue");
            }
            Sent::Answered { status, body } => match self.venues.get(&exchange).map(|v| v.read_cancel((status, &body))) {
                Some(CancelRead::Done(events)) => self.apply_venue(cid, events).await?,
                Some(CancelRead::Refused(reason)) => {
                    // Often "already filled": the query says what it became.
                    self.transition(cid, Event::CancelFailed { reason }).await?;
                }
                Some(CancelRead::Taken) | None => {}
            },
        }
        self.query_later(cid, self.confirm_delay());
        Ok(())
    }

    async fn on_queried(&mut self, cid: &str, answers: Answers) -> Result<(), Status> {
        let Some(t) = self.orders.get(cid) else { return Ok(()) };
        let (exchange, quote, status, sent_at) = (t.account.exchange, t.symbol.quote.to_string(), t.state.status, t.sent_at);
        let answers = match answers {
            Ok(a) => a,
            Err(why) => {
                self.metrics.query("failed");
                tracing::debug!(client_order_id = cid, %why, "a query got no answer; nothing is concluded");
                return Ok(());
            }
        };
        let now = self.now();
        let Some(read) = self.venues.get(&exchange).map(|v| v.read_query(&borrowed(&answers), &quote, now)) else { return Ok(()) };
        match read {
            Ok(Read::Events(events)) => {
                self.metrics.query("found");
                let knew_id = self.orders.get(cid).is_some_and(|t| t.state.venue_order_id.is_some());
                self.apply_venue(cid, events).await?;
                // Some venues list fills by their own order id only: once a query
                // has taught it, the next query can ask for them.
                let knows_id = self.orders.get(cid).is_some_and(|t| t.state.venue_order_id.is_some());
                if !knew_id && knows_id && self.orders.get(cid).is_some_and(|t| t.state.status.is_open()) {
                    self.query_now(cid);
                }
            }
            Ok(Read::NotFound) => {
                self.metrics.query("not_found");
                let grace = Duration::from_millis(self.cfg.unknown_grace_ms);
                let old = sent_at.is_some_and(|at| now.saturating_since(at) >= grace);
                let before_restart = sent_at.is_some_and(|at| at < self.started);
                let young = sent_at.is_some_and(|at| now.saturating_since(at) < Duration::from_millis(self.cfg.resend_within_ms));
                match status {
                    // Submitted by the previous run, never answered, not at the
                    // exchange: its request may have died with that run before it
                    // left. Sent again under the same idempotency key, which the
                    // dispatcher never sends twice (it replays or waits for the
                    // first, or says its outcome is unknown).
                    OrderStatus::Submitted if before_restart && young && !self.resent.contains(cid) => {
                        self.resent.insert(cid.to_owned());
                        tracing::warn!(
                            client_order_id = cid,
                            "sent before a restart, never answered, not at the exchange: sent again under its idempotency key"
                        );
                        let o = self.new_order_of(cid)?;
                        self.send_live(cid, &o)?;
                    }
                    OrderStatus::Submitted | OrderStatus::Unknown if old => {
                        let secs = grace.as_secs();
                        let reason = format!("{exchange} has no such order {secs} s after it was sent: it never arrived");
                        tracing::warn!(client_order_id = cid, %reason, "an unknown order resolved as never placed");
                        self.transition(cid, Event::Rejected { reason }).await?;
                    }
                    // Perhaps still on its way: asked again at the next reconciliation.
                    OrderStatus::Submitted | OrderStatus::Unknown => {}
                    other => {
                        tracing::warn!(client_order_id = cid, status = %other, "the venue does not list an order it accepted; asked again later")
                    }
                }
            }
            Ok(Read::NotSent(why) | Read::Unknown(why)) | Err(why) => {
                self.metrics.query("failed");
                tracing::warn!(client_order_id = cid, %why, "a query's answer says nothing; nothing is concluded");
            }
        }
        Ok(())
    }

    fn on_rules(&mut self, account: AccountId, symbol: Symbol, answers: Answers) {
        let native = symbol.native(account.exchange);
        let read = answers.and_then(|a| venue::of(account.exchange).read_rules(&borrowed(&a), &native));
        match read {
            Ok(r) => {
                let key = (account.clone(), symbol.clone());
                if self.learned_rules.get(&key) != Some(&r) {
                    tracing::info!(%account, %symbol, tick = %r.tick, lot = %r.lot, min_qty = %r.min_qty, min_notional = %r.min_notional,
                        "instrument rules from the exchange");
                }
                self.learned_rules.insert(key, r);
            }
            Err(why) => {
                let fallback =
                    if self.rules(&account, &symbol).is_some() { "the last known or configured rules stay" } else { "no rules yet" };
                tracing::warn!(%account, %symbol, %why, "cannot read the instrument's rules; {fallback}");
            }
        }
    }

    fn on_balances(&mut self, account: AccountId, answers: Answers) {
        let Some(venue) = self.venues.get(&account.exchange) else { return };
        let read = answers.and_then(|a| a.first().map(|(s, b)| venue.read_balances((*s, b))).unwrap_or_else(|| Err("no answer".into())));
        match read {
            Ok(list) => {
                let b = self.balances.entry(account).or_default();
                b.clear();
                for x in list {
                    b.insert(x.asset, (x.free, x.locked));
                }
            }
            Err(why) => tracing::warn!(%account, %why, "cannot read balances"),
        }
    }

    /// Orders open on the exchange that the journal does not know are another
    /// program's: reported (logged once, counted), never touched. One the journal
    /// knows but holds as ended is asked about again.
    fn on_open_orders(&mut self, account: &AccountId, symbol: &Symbol, answers: Answers) {
        let Some(venue) = self.venues.get(&account.exchange) else { return };
        let read = answers.and_then(|a| a.first().map(|(s, b)| venue.read_open_orders((*s, b))).unwrap_or_else(|| Err("no answer".into())));
        let open = match read {
            Ok(o) => o,
            // Never "nothing open": a failed list changes nothing.
            Err(why) => return tracing::warn!(%account, %symbol, %why, "cannot list open orders"),
        };
        let mut recheck = Vec::new();
        for o in open {
            match self.orders.get(&o.client_order_id) {
                Some(t) if t.state.status.is_terminal() => recheck.push(o.client_order_id.clone()),
                Some(_) => {}
                None => {
                    if self.foreign.insert(o.venue_order_id.clone()) {
                        tracing::warn!(%account, %symbol, venue_order_id = %o.venue_order_id, client_order_id = %o.client_order_id,
                            "an open order on the exchange that this service did not place; left alone");
                    }
                }
            }
        }
        self.metrics.foreign_orders.set(self.foreign.len() as i64);
        for cid in recheck {
            tracing::warn!(client_order_id = %cid, "open on the exchange but ended here; asking again");
            self.query_later(&cid, Duration::ZERO);
        }
    }

    /// Queries every order that may still change (of one account, or all), the
    /// balances and the open orders of each traded market.
    pub fn reconcile(&mut self, account: Option<&AccountId>, why: &str) {
        if self.paper_mode() || self.live.is_none() {
            return;
        }
        let open: Vec<String> = self
            .orders
            .iter()
            .filter(|(_, t)| t.state.status.is_open() && account.is_none_or(|a| *a == t.account))
            .map(|(k, _)| k.clone())
            .collect();
        tracing::debug!(orders = open.len(), why, "reconciling");
        for cid in &open {
            self.query_later(cid, Duration::ZERO);
        }
        let markets: Vec<(AccountId, Symbol)> = self
            .cfg
            .strategies
            .iter()
            .filter(|s| account.is_none_or(|a| *a == s.account))
            .map(|s| (s.account.clone(), s.symbol.clone()))
            .collect();
        let Some(live) = self.live.clone() else { return };
        let mut seen = std::collections::HashSet::new();
        for (a, sym) in markets {
            let Some(venue) = self.venues.get(&a.exchange) else { continue };
            if seen.insert(a.clone()) {
                live.balances(a.clone(), venue.balances(&a.name));
            }
            let native = sym.native(a.exchange);
            let category = self.category(&a, &sym);
            let target = Target { account: &a.name, native: &native, category: &category };
            live.open_orders(a.clone(), sym.clone(), venue.open_orders(&target));
        }
    }

    /// Reads every traded instrument's rules from its exchange.
    pub fn refresh_rules(&mut self) {
        let Some(live) = self.live.clone() else { return };
        for s in &self.cfg.strategies {
            let native = s.symbol.native(s.account.exchange);
            let target = Target { account: &s.account.name, native: &native, category: &s.market };
            live.rules(s.account.clone(), s.symbol.clone(), venue::of(s.account.exchange).rules(&target));
        }
    }

    /// The engine's clock: reconciliation and rules when due, and gRPC submits
    /// that waited long enough for their first answer get the order as it stands.
    pub async fn on_tick(&mut self) {
        let now = self.now();
        if now >= self.next_export {
            self.export_pnl();
            self.next_export = now + Duration::from_secs(1);
        }
        if now >= self.next_rules {
            self.refresh_rules();
            self.next_rules = now + Duration::from_millis(self.cfg.rules_every_ms);
        }
        if now >= self.next_reconcile {
            self.expire_unsent(now).await;
            self.reconcile(None, "schedule");
            self.next_reconcile = now + Duration::from_millis(self.cfg.reconcile_every_ms);
        }
        let due: Vec<String> = self.query_due.iter().filter(|(_, at)| **at <= now).map(|(k, _)| k.clone()).collect();
        for cid in due {
            self.query_due.remove(&cid);
            if self.orders.get(&cid).is_some_and(|t| t.state.status.is_open()) {
                self.query_now(&cid);
            }
        }
        let wait = Duration::from_millis(self.cfg.submit_wait_ms);
        let due: Vec<String> = self
            .waiters
            .iter()
            .filter(|(_, w)| w.iter().any(|(at, _)| now.saturating_since(*at) >= wait))
            .map(|(k, _)| k.clone())
            .collect();
        for cid in due {
            let view = self.view(&cid);
            for (_, w) in self.waiters.remove(&cid).unwrap_or_default() {
                let _ = w.send(Ok(view.clone()));
            }
        }
        let unknown = self.orders.values().filter(|t| t.state.status == OrderStatus::Unknown).count();
        self.metrics.unknown_orders.set(unknown as i64);
    }

    /// A gRPC submit answered once its live order has its first answer.
    pub fn answer_when_settled(&mut self, order: pb::Order, reply: super::OrderReply) {
        if order.status != pb::OrderStatus::Submitted as i32 || self.paper_mode() {
            let _ = reply.send(Ok(order));
            return;
        }
        let now = self.now();
        self.waiters.entry(order.client_order_id).or_default().push((now, reply));
    }

    // ---------------------------------------------------------------- private streams

    /// An event from the collector on `account.<exchange>.<account>.<kind>`.
    pub async fn on_account(&mut self, subject: &str, payload: &[u8]) {
        let mut parts = subject.split('.');
        let (Some("account"), Some(ex), Some(name), Some(kind)) = (parts.next(), parts.next(), parts.next(), parts.next()) else { return };
        let Ok(account) = AccountId::parse(&format!("{ex}/{name}")) else { return };
        let result = match kind {
            "order" => match acct::OrderUpdate::decode(payload) {
                Ok(u) => self.on_order_update(u).await,
                Err(e) => return tracing::warn!(%subject, error = %e, "an order update that cannot be decoded"),
            },
            "fill" => match acct::Fill::decode(payload) {
                Ok(f) => self.on_stream_fill(f).await,
                Err(e) => return tracing::warn!(%subject, error = %e, "a fill that cannot be decoded"),
            },
            "balance" => {
                if let Ok(b) = acct::BalanceUpdate::decode(payload) {
                    let dec = |s: &str| s.parse::<Decimal>().unwrap_or_default();
                    let mine = self.balances.entry(account).or_default();
                    for x in b.balances {
                        mine.insert(x.asset, (dec(&x.free), dec(&x.locked)));
                    }
                }
                Ok(())
            }
            "status" => {
                if let Ok(s) = acct::StreamStatus::decode(payload) {
                    if !s.connected {
                        tracing::warn!(%account, reason = %s.reason, "private stream down; orders are confirmed by queries until it is back");
                        self.streams_down.insert(account);
                    } else if self.streams_down.remove(&account) {
                        // What happened while it was down came on no stream: ask.
                        self.reconcile(Some(&account), "private stream back");
                    }
                }
                Ok(())
            }
            _ => Ok(()),
        };
        if let Err(e) = result {
            tracing::error!(error = %e.message(), "a stream event could not be journaled; reconciliation repeats it");
        }
    }

    /// The order a stream event is about: by client order id, else by venue id.
    fn order_of(&self, cid: &str, venue_id: &str) -> Option<String> {
        if !cid.is_empty() && self.orders.contains_key(cid) {
            return Some(cid.to_owned());
        }
        (!venue_id.is_empty())
            .then(|| self.orders.iter().find(|(_, t)| t.state.venue_order_id.as_deref() == Some(venue_id)).map(|(k, _)| k.clone()))
            .flatten()
    }

    async fn on_order_update(&mut self, u: acct::OrderUpdate) -> Result<(), Status> {
        let Some(cid) = self.order_of(&u.client_order_id, &u.order_id) else { return Ok(()) };
        let accepted = Event::Accepted { venue_order_id: (!u.order_id.is_empty()).then(|| u.order_id.clone()) };
        let events = match acct::OrderStatus::try_from(u.status) {
            Ok(acct::OrderStatus::Open | acct::OrderStatus::PartiallyFilled | acct::OrderStatus::Filled) => vec![accepted],
            Ok(acct::OrderStatus::Canceled) => {
                vec![accepted, Event::Cancelled { reason: format!("{} on the venue (stream)", u.exchange_status) }]
            }
            Ok(acct::OrderStatus::Rejected) => vec![Event::Rejected { reason: format!("{} on the venue (stream)", u.exchange_status) }],
            _ => Vec::new(),
        };
        self.apply_venue(&cid, events).await?;
        // The stream says filled but a fill is missing: the query has them all.
        let filled = self.orders.get(&cid).map(|t| t.state.filled.get()).unwrap_or_default();
        let said: Decimal = u.filled_qty.parse().unwrap_or_default();
        if said > filled {
            self.query_later(&cid, self.confirm_delay());
        }
        Ok(())
    }

    async fn on_stream_fill(&mut self, f: acct::Fill) -> Result<(), Status> {
        let Some(cid) = self.order_of(&f.client_order_id, &f.order_id) else { return Ok(()) };
        let (Ok(qty), Ok(price)) = (f.qty.parse::<Decimal>(), f.price.parse::<Decimal>()) else {
            tracing::warn!(client_order_id = %cid, qty = %f.qty, price = %f.price, "a stream fill with unreadable numbers; the query will have it");
            self.query_later(&cid, Duration::ZERO);
            return Ok(());
        };
        let Ok(quantity) = Qty::new(qty) else { return Ok(()) };
        let quote = self.orders.get(&cid).map(|t| t.symbol.quote.to_string()).unwrap_or_default();
        let ts = f.source.as_ref().map_or(0, |s| s.exchange_ts_ns);
        let fill = Fill {
            trade_id: f.trade_id.clone(),
            quantity,
            price,
            fee: f.fee.parse().unwrap_or_default(),
            fee_asset: if f.fee_asset.is_empty() { quote } else { f.fee_asset.clone() },
            maker: f.maker,
            time: if ts > 0 { Time::from_nanos(ts as u64) } else { self.now() },
        };
        self.apply_venue(&cid, vec![Event::Fill(fill)]).await
    }
}
