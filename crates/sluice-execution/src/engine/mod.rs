//! The engine: one task owns every order, position and market view and the paper
//! venue, so deciding never contends on a lock. Every change of an order is
//! journaled (and acknowledged) before it is acted on or published:
//!
//! 1. an order is created as an *intent* (journal entry 1); risk either denies it
//!    (entry 2: `deny`) or it is *submitted* (entry 2: `submit`), and only then
//!    sent to the venue;
//! 2. whatever the venue answers becomes a transition of the state machine
//!    (`order.rs`): checked on a copy first, journaled if it changes anything,
//!    then applied; a fill also moves the position and the paper wallet;
//! 3. events go out on NATS after the journal has them.
//!
//! At start the state is rebuilt from the journal (`rebuild`), the paper venue
//! included, so a kill -9 at any instant loses nothing.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::Arc;

use prost::Message;
use sluice_domain::{Decimal, Exchange, Qty, Side, Symbol};
use sluice_proto::execution::v1 as pb;
use sluice_proto::signal::v1 as sig;
use sluice_rate::{Clock, MonotonicClock, Time};
use tonic::Status;

use crate::config::{AccountId, ExecutionConfig, Strategy};
use crate::fills::{Exec, Tif};
use crate::instrument::Rules;
use crate::journal::{self, Journal};
use crate::live::Live;
use crate::market::Market;
use crate::metrics::Metrics;
use crate::order::{Applied, Event, Fill, OrderState, Status as OrderStatus};
use crate::paper::{PaperEvent, PaperOrder, PaperVenue};
use crate::positions::Position;
use crate::risk::{self, Denial, Intent, OrderRate, TradingState};
use crate::strategy::{self, Action, Holding, Placement, Planned};
use crate::venue::LiveVenue;

mod live;
mod replay;
mod report;

use replay::transition_entry;

/// An order the engine tracks.
#[derive(Debug, Clone)]
pub struct Tracked {
    /// The order as created (the journal's entry 1).
    pub intent: pb::Order,
    pub account: AccountId,
    pub symbol: Symbol,
    pub side: Side,
    /// `<venue>:<BASE-QUOTE>`: the market data it trades against.
    pub market: String,
    pub state: OrderState,
    /// The last journal entry written for it.
    pub seq: u64,
    pub subject: String,
    /// When it was submitted (journaled as about to leave), if it was.
    pub sent_at: Option<Time>,
}

impl Tracked {
    /// The order as the API and events show it.
    pub fn view(&self) -> pb::Order {
        let s = &self.state;
        pb::Order {
            venue_order_id: s.venue_order_id.clone().unwrap_or_default(),
            status: status_number(s.status),
            filled_quantity: s.filled.to_string(),
            average_price: s.average_price().map(|p| p.normalize().to_string()).unwrap_or_default(),
            fees: s.fees.iter().map(|(a, v)| format!("{} {a}", v.normalize())).collect(),
            reason: s.reason.clone().unwrap_or_default(),
            updated_unix_ns: s.updated.as_nanos() as i64,
            ..self.intent.clone()
        }
    }
}

pub fn status_number(s: OrderStatus) -> i32 {
    use pb::OrderStatus as P;
    (match s {
        OrderStatus::Initialized => P::Initialized,
        OrderStatus::Denied => P::Denied,
        OrderStatus::Submitted => P::Submitted,
        OrderStatus::Accepted => P::Accepted,
        OrderStatus::PartiallyFilled => P::PartiallyFilled,
        OrderStatus::Filled => P::Filled,
        OrderStatus::PendingCancel => P::PendingCancel,
        OrderStatus::Cancelled => P::Cancelled,
        OrderStatus::Rejected => P::Rejected,
        OrderStatus::Expired => P::Expired,
        OrderStatus::Unknown => P::Unknown,
    }) as i32
}

fn side_number(s: Side) -> i32 {
    (if s == Side::Buy { pb::Side::Buy } else { pb::Side::Sell }) as i32
}

fn tif_number(t: Tif) -> i32 {
    (match t {
        Tif::Gtc => pb::TimeInForce::Gtc,
        Tif::Ioc => pb::TimeInForce::Ioc,
        Tif::Fok => pb::TimeInForce::Fok,
        Tif::PostOnly => pb::TimeInForce::PostOnly,
    }) as i32
}

fn tif_of(n: i32) -> Tif {
    match pb::TimeInForce::try_from(n) {
        Ok(pb::TimeInForce::Ioc) => Tif::Ioc,
        Ok(pb::TimeInForce::Fok) => Tif::Fok,
        Ok(pb::TimeInForce::PostOnly) => Tif::PostOnly,
        _ => Tif::Gtc,
    }
}

/// The subject an event of `kind` about `account` goes out on.
pub fn event_subject(account: &AccountId, kind: &str) -> String {
    format!("exec.{}.{}.{kind}", account.exchange, account.name)
}

/// What became of a signal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SignalOutcome {
    Placed(String),
    /// Its order exists already (a redelivery).
    Duplicate(String),
    Skipped(&'static str),
    /// Not decidable yet (no market data or trading rules since the start):
    /// asked again shortly, until it is too old.
    NotYet(&'static str),
    Denied(&'static str),
    /// Older than `max_signal_age`.
    Stale,
    /// Not for any configured strategy, or unreadable.
    Ignored(String),
}

/// A new order, before it is journaled.
struct NewOrder {
    account: AccountId,
    symbol: Symbol,
    market: String,
    side: Side,
    quantity: Decimal,
    placement: Placement,
    market_order: bool,
    client_order_id: String,
    signal_id: String,
    reduce_only: bool,
    spot: bool,
}

/// Where an order goes once it is known (a gRPC call waiting for it).
pub type OrderReply = tokio::sync::oneshot::Sender<Result<pb::Order, Status>>;

pub struct Engine {
    cfg: Arc<ExecutionConfig>,
    journal: Journal,
    nats: async_nats::Client,
    clock: MonotonicClock,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) orders: BTreeMap<String, Tracked>,
    positions: BTreeMap<(String, String), Position>,
    pub(crate) markets: HashMap<String, Market>,
    paper: PaperVenue,
    pub(crate) trading: (TradingState, pb::TradingStateChange),
    rates: HashMap<String, OrderRate>,
    last_order: HashMap<String, Time>,
    /// Realized PnL per account at the start of the UTC day (and that day).
    day_start: HashMap<String, (u64, Decimal)>,
    /// Calls through the dispatcher (live orders; instrument rules in both modes).
    live: Option<Live>,
    /// Each exchange's order API (live mode).
    venues: HashMap<Exchange, Box<dyn LiveVenue>>,
    /// Orders with a query in flight (one at a time each).
    querying: HashSet<String>,
    /// Queries to send once their time comes (confirmations after an answer).
    query_due: HashMap<String, Time>,
    /// Instrument rules read from the exchanges, by account and symbol.
    learned_rules: HashMap<(AccountId, Symbol), Rules>,
    /// Live balances per account: asset to (free, locked).
    balances: HashMap<AccountId, BTreeMap<String, (Decimal, Decimal)>>,
    /// Private streams known down (a reconnect triggers reconciliation).
    streams_down: HashSet<AccountId>,
    /// Open orders on the exchanges that this service did not place, reported once.
    foreign: BTreeSet<String>,
    /// When this run of the service began: an order submitted before it may
    /// have died with the previous run before its request left.
    started: Time,
    /// Orders sent again under their idempotency key after a restart (once each).
    resent: HashSet<String>,
    /// gRPC submits waiting for their live order's first answer.
    waiters: HashMap<String, Vec<(Time, OrderReply)>>,
    /// When reconciliation and the rules refresh are next due.
    next_reconcile: Time,
    /// When the PnL gauges are next set.
    next_export: Time,
    next_rules: Time,
}

fn market_key(venue: &str, symbol: &Symbol) -> String {
    format!("{venue}:{}-{}", symbol.base, symbol.quote)
}

fn dec(s: &str) -> Decimal {
    s.parse().unwrap_or_default()
}

impl Engine {
    pub fn new(
        cfg: Arc<ExecutionConfig>,
        journal: Journal,
        nats: async_nats::Client,
        clock: MonotonicClock,
        metrics: Arc<Metrics>,
        live: Option<Live>,
    ) -> Engine {
        let mut paper = PaperVenue::new(cfg.paper.touch_share);
        for (account, assets) in &cfg.paper.balances {
            for (asset, amount) in assets {
                paper.deposit(account, asset, *amount);
            }
        }
        let now = clock.now();
        let trading = pb::TradingStateChange {
            state: pb::TradingState::Active as i32,
            reason: "started".into(),
            by: "start".into(),
            time_unix_ns: now.as_nanos() as i64,
        };
        Engine {
            journal,
            nats,
            clock,
            metrics,
            orders: BTreeMap::new(),
            positions: BTreeMap::new(),
            markets: HashMap::new(),
            paper,
            trading: (TradingState::Active, trading),
            rates: HashMap::new(),
            last_order: HashMap::new(),
            day_start: HashMap::new(),
            venues: if cfg.mode == crate::config::Mode::Live {
                cfg.strategies.iter().map(|s| (s.account.exchange, crate::venue::of(s.account.exchange))).collect()
            } else {
                HashMap::new()
            },
            live,
            querying: HashSet::new(),
            query_due: HashMap::new(),
            learned_rules: HashMap::new(),
            balances: HashMap::new(),
            streams_down: HashSet::new(),
            foreign: BTreeSet::new(),
            started: now,
            resent: HashSet::new(),
            waiters: HashMap::new(),
            next_reconcile: now,
            next_export: now,
            next_rules: now,
            cfg,
        }
    }

    fn paper_mode(&self) -> bool {
        self.cfg.mode == crate::config::Mode::Paper
    }

    pub fn now(&self) -> Time {
        self.clock.now()
    }

    /// The strategy of signals from `venue` on `symbol`.
    fn strategy(&self, venue: &str, symbol: &Symbol) -> Option<&Strategy> {
        self.cfg.strategies.iter().find(|s| s.venue == venue && s.symbol == *symbol)
    }

    /// The instrument's rules: the exchange's own (read through the dispatcher
    /// and refreshed every `rules_every_ms`), else the configured fallback.
    fn rules(&self, account: &AccountId, symbol: &Symbol) -> Option<Rules> {
        if let Some(r) = self.learned_rules.get(&(account.clone(), symbol.clone())) {
            return Some(r.clone());
        }
        let s = self.cfg.strategies.iter().find(|s| s.account == *account && s.symbol == *symbol)?;
        s.rules.as_ref().map(|r| Rules { tick: r.tick, lot: r.lot, min_qty: r.min_qty, max_qty: None, min_notional: r.min_notional })
    }

    // ---------------------------------------------------------------- input

    /// A signal from the SIGNAL stream (already decoded).
    pub async fn on_signal(&mut self, s: &sig::Signal) -> Result<SignalOutcome, Status> {
        let now = self.now();
        let Ok(symbol) = s.symbol.replace('-', "/").parse::<Symbol>() else {
            return Ok(SignalOutcome::Ignored(format!("symbol '{}' is not BASE-QUOTE", s.symbol)));
        };
        let age = now.saturating_since(Time::from_nanos(s.ts_ns.max(0) as u64));
        if age > self.cfg.max_signal_age() {
            self.metrics.signal("stale");
            return Ok(SignalOutcome::Stale);
        }
        let Some(st) = self.strategy(&s.venue, &symbol).cloned() else {
            return Ok(SignalOutcome::Ignored(format!("no strategy for {} {}", s.venue, s.symbol)));
        };
        let cid = crate::ids::derive(&crate::ids::signal_cause(&s.id, &s.venue, &s.symbol, s.ts_ns, &st.account.to_string()));
        if let Some(t) = self.orders.get(&cid) {
            if t.state.status == OrderStatus::Initialized {
                self.resume(&cid).await?;
                self.metrics.signal("resumed");
                return Ok(SignalOutcome::Placed(cid));
            }
            self.metrics.signal("duplicate");
            return Ok(SignalOutcome::Duplicate(cid));
        }
        let action = match sig::Action::try_from(s.action) {
            Ok(sig::Action::Buy) => Action::Buy,
            Ok(sig::Action::Sell) => Action::Sell,
            _ => Action::Hold,
        };
        let key = market_key(&s.venue, &symbol);
        let touch = self.markets.get(&key).and_then(Market::touch);
        let Some(rules) = self.rules(&st.account, &symbol) else {
            self.metrics.signal("no_rules");
            return Ok(SignalOutcome::NotYet("no_rules"));
        };
        let Some(touch) = touch else {
            self.metrics.signal("no_market_data");
            return Ok(SignalOutcome::NotYet("no_market_data"));
        };
        let holding =
            Holding { position: self.position_qty(&st.account, &symbol), equity: self.equity(&st.account, &symbol.quote.to_string()) };
        let planned = match strategy::plan(&st, action, s.confidence, holding, touch, &rules, self.last_order.get(&key).copied(), now) {
            Ok(p) => p,
            Err(skip) => {
                self.metrics.signal(skip.kind());
                return Ok(SignalOutcome::Skipped(skip.kind()));
            }
        };
        let Planned { side, quantity, placement, reduce_only } = planned;
        let market_order = matches!(placement, Placement::Market { .. });
        let order = NewOrder {
            account: st.account.clone(),
            symbol,
            market: key.clone(),
            side,
            quantity,
            placement,
            market_order,
            client_order_id: cid.clone(),
            signal_id: if s.id.is_empty() { format!("{}:{}:{}", s.venue, s.symbol, s.ts_ns) } else { s.id.clone() },
            reduce_only,
            spot: st.is_spot(),
        };
        self.last_order.insert(key, now);
        match self.place(order).await? {
            o if o.status == pb::OrderStatus::Denied as i32 => {
                self.metrics.signal("denied");
                Ok(SignalOutcome::Denied("denied"))
            }
            _ => {
                self.metrics.signal("placed");
                Ok(SignalOutcome::Placed(cid))
            }
        }
    }

    /// An order from the gRPC API.
    pub async fn submit(&mut self, r: pb::SubmitOrderRequest) -> Result<pb::Order, Status> {
        let invalid = |m: String| Err(Status::invalid_argument(m));
        let account = AccountId::parse(&r.account).map_err(Status::invalid_argument)?;
        let symbol: Symbol = r
            .symbol
            .replace('-', "/")
            .parse()
            .map_err(|_| Status::invalid_argument(format!("symbol '{}' must be BASE-QUOTE, e.g. BTC-KRW", r.symbol)))?;
        let Some(st) = self.cfg.strategies.iter().find(|s| s.account == account && s.symbol == symbol).cloned() else {
            return invalid(format!("no market {} is configured for account {account}", r.symbol));
        };
        let side = match pb::Side::try_from(r.side) {
            Ok(pb::Side::Buy) => Side::Buy,
            Ok(pb::Side::Sell) => Side::Sell,
            _ => return invalid("side must be SIDE_BUY or SIDE_SELL".into()),
        };
        let quantity: Decimal =
            r.quantity.parse().map_err(|_| Status::invalid_argument(format!("quantity '{}' is not a decimal number", r.quantity)))?;
        let client_order_id = match (r.client_order_id.is_empty(), r.request_id.is_empty()) {
            (false, _) => {
                crate::ids::check(account.exchange, &r.client_order_id).map_err(Status::invalid_argument)?;
                r.client_order_id.clone()
            }
            (true, false) => crate::ids::derive(&format!("request|{}|{account}", r.request_id)),
            (true, true) => crate::ids::derive(&format!("request|{}", uuid::Uuid::new_v4())),
        };
        if let Some(existing) = self.orders.get(&client_order_id) {
            if existing.state.status == OrderStatus::Initialized {
                return self.resume(&client_order_id).await;
            }
            return Ok(existing.view());
        }
        let rules =
            self.rules(&account, &symbol).ok_or_else(|| Status::failed_precondition(format!("no trading rules known for {symbol}")))?;
        let key = market_key(&st.venue, &symbol);
        let touch = self.markets.get(&key).and_then(Market::touch);
        let (placement, market_order) = match pb::OrderType::try_from(r.r#type) {
            Ok(pb::OrderType::Limit) => {
                let price: Decimal =
                    r.price.parse().map_err(|_| Status::invalid_argument(format!("price '{}' is not a decimal number", r.price)))?;
                if price <= Decimal::ZERO {
                    return invalid(format!("price {price} must be positive"));
                }
                (Placement::Limit { price, tif: tif_of(r.time_in_force) }, false)
            }
            Ok(pb::OrderType::Market) => {
                let Some(t) = touch else {
                    return Err(Status::failed_precondition(format!("no live book for {symbol}: a market order needs one")));
                };
                let cap = match &st.order {
                    crate::config::OrderStyle::Market { slippage_cap } => *slippage_cap,
                    _ => Decimal::new(5, 3),
                };
                let best = if side == Side::Buy { t.ask } else { t.bid };
                (Placement::Market { limit: rules.round_price(crate::fills::slippage_limit(side, best, cap), side) }, true)
            }
            _ => return invalid("type must be ORDER_TYPE_LIMIT or ORDER_TYPE_MARKET".into()),
        };
        let reference = touch.map_or(placement.worst_price(), |t| t.mid());
        let price = if market_order { None } else { Some(placement.worst_price()) };
        rules.check(quantity, price, reference).map_err(|e| Status::invalid_argument(format!("{symbol}: {e}")))?;
        let order = NewOrder {
            account,
            symbol,
            market: key,
            side,
            quantity,
            placement,
            market_order,
            client_order_id,
            signal_id: String::new(),
            reduce_only: r.reduce_only,
            spot: st.is_spot(),
        };
        let placed = self.place(order).await?;
        if placed.status == pb::OrderStatus::Denied as i32 {
            return Err(Status::failed_precondition(format!("refused by risk: {}", placed.reason)));
        }
        Ok(placed)
    }

    // ---------------------------------------------------------------- orders

    fn position_qty(&self, account: &AccountId, symbol: &Symbol) -> Decimal {
        self.positions.get(&(account.to_string(), symbol.to_string())).map_or(Decimal::ZERO, |p| p.qty)
    }

    /// Checks a new order against risk and journals it with that first decision
    /// in one entry (its intent and `deny` or `submit`, one write for a new
    /// order), then denies it or sends it.
    async fn place(&mut self, o: NewOrder) -> Result<pb::Order, Status> {
        let now = self.now();
        self.roll_day(now);
        let quantity = Qty::new(o.quantity).map_err(|e| Status::invalid_argument(e.to_string()))?;
        let (order_type, tif) = match &o.placement {
            Placement::Limit { tif, .. } => (pb::OrderType::Limit, *tif),
            Placement::Market { .. } => (pb::OrderType::Market, Tif::Ioc),
        };
        let intent = pb::Order {
            client_order_id: o.client_order_id.clone(),
            account: o.account.to_string(),
            symbol: format!("{}-{}", o.symbol.base, o.symbol.quote),
            side: side_number(o.side),
            r#type: order_type as i32,
            time_in_force: tif_number(tif),
            quantity: o.quantity.normalize().to_string(),
            price: o.placement.worst_price().normalize().to_string(),
            status: pb::OrderStatus::Initialized as i32,
            filled_quantity: "0".into(),
            signal_id: o.signal_id.clone(),
            paper: self.paper_mode(),
            reduce_only: o.reduce_only,
            created_unix_ns: now.as_nanos() as i64,
            updated_unix_ns: now.as_nanos() as i64,
            ..Default::default()
        };
        let verdict = self.verdict(&o, now);
        let first = match &verdict {
            Err(d) => Event::Deny { reason: d.to_string() },
            Ok(()) => Event::Submit,
        };
        let cid = o.client_order_id.clone();
        let mut state = OrderState::new(cid.clone(), quantity, now);
        state.apply(&first, now).map_err(|e| Status::internal(e.to_string()))?;
        let subject = journal::subject(o.account.exchange.as_str(), &o.account.name, &cid);
        let entry = pb::JournalEntry {
            client_order_id: cid.clone(),
            seq: 1,
            time_unix_ns: now.as_nanos() as i64,
            entry: Some(pb::journal_entry::Entry::Intent(intent.clone())),
            then: Some(transition_entry(&first, &state, &intent)),
        };
        self.journal.append(&subject, &entry).await.map_err(|e| Status::unavailable(format!("{e}; nothing was sent")))?;
        let sent_at = (first == Event::Submit).then_some(now);
        let tracked = Tracked {
            intent,
            account: o.account.clone(),
            symbol: o.symbol.clone(),
            side: o.side,
            market: o.market.clone(),
            state,
            seq: 2,
            subject,
            sent_at,
        };
        self.orders.insert(cid.clone(), tracked);
        self.metrics.orders_created.inc();
        self.metrics.transition(first.name());
        let view = self.view(&cid);
        self.publish(&event_subject(&o.account, "order"), view.encode_to_vec()).await;
        self.carry_out(o, verdict, now).await
    }

    /// Risk's verdict on an order now.
    fn verdict(&mut self, o: &NewOrder, now: Time) -> Result<(), Denial> {
        let x = self.exposure(o, now);
        let check = Intent { side: o.side, quantity: o.quantity, price: o.placement.worst_price(), spot: o.spot };
        let state = self.trading.0;
        let rate = self.rates.entry(o.account.to_string()).or_default();
        if o.reduce_only && !risk::reduces(o.side, o.quantity, x.position) {
            return Err(Denial::NotReducing { state: "reduce-only order", position: x.position });
        }
        risk::check(self.cfg.limits(&o.account), state, &check, &x, rate, now)
    }

    /// What follows a journaled decision: the denial published, or the order sent.
    async fn carry_out(&mut self, o: NewOrder, verdict: Result<(), Denial>, now: Time) -> Result<pb::Order, Status> {
        let cid = o.client_order_id.clone();
        if let Err(denial) = verdict {
            self.metrics.denial(denial.kind());
            let d = pb::Denial {
                account: o.account.to_string(),
                symbol: format!("{}-{}", o.symbol.base, o.symbol.quote),
                client_order_id: cid.clone(),
                kind: denial.kind().into(),
                message: denial.to_string(),
                signal_id: o.signal_id.clone(),
                time_unix_ns: now.as_nanos() as i64,
            };
            self.publish(&event_subject(&o.account, "denial"), d.encode_to_vec()).await;
            return Ok(self.view(&cid));
        }
        self.send(&cid, &o).await?;
        Ok(self.view(&cid))
    }

    /// Checks an order journaled without a decision against risk, journals the
    /// decision, then denies or sends it.
    async fn decide(&mut self, o: NewOrder) -> Result<pb::Order, Status> {
        let now = self.now();
        let cid = o.client_order_id.clone();
        let verdict = self.verdict(&o, now);
        let first = match &verdict {
            Err(d) => Event::Deny { reason: d.to_string() },
            Ok(()) => Event::Submit,
        };
        self.transition(&cid, first).await?;
        self.carry_out(o, verdict, now).await
    }

    /// An order journaled but never checked or sent (the service stopped in
    /// between): its signal or client order id came again, so it goes on from
    /// where it stopped, under today's risk. It never left, so this sends it once.
    async fn resume(&mut self, cid: &str) -> Result<pb::Order, Status> {
        let o = self.new_order_of(cid)?;
        tracing::info!(client_order_id = cid, "resuming an order journaled before a stop, never sent");
        self.decide(o).await
    }

    /// A journaled order as it was made.
    fn new_order_of(&self, cid: &str) -> Result<NewOrder, Status> {
        let Some(t) = self.orders.get(cid) else { return Err(Status::not_found(format!("no order {cid}"))) };
        let Some(st) = self.cfg.strategies.iter().find(|s| s.account == t.account && s.symbol == t.symbol) else {
            return Err(Status::failed_precondition(format!("order {cid}: its market is no longer configured")));
        };
        let price = dec(&t.intent.price);
        let market_order = t.intent.r#type == pb::OrderType::Market as i32;
        let placement =
            if market_order { Placement::Market { limit: price } } else { Placement::Limit { price, tif: tif_of(t.intent.time_in_force) } };
        Ok(NewOrder {
            account: t.account.clone(),
            symbol: t.symbol.clone(),
            market: t.market.clone(),
            side: t.side,
            quantity: t.state.quantity.get(),
            placement,
            market_order,
            client_order_id: cid.to_owned(),
            signal_id: t.intent.signal_id.clone(),
            reduce_only: t.intent.reduce_only,
            spot: st.is_spot(),
        })
    }

    /// Orders journaled but never checked or sent, and not asked for again
    /// within `max_signal_age_ms`, end denied: their cause is too old to act on.
    async fn expire_unsent(&mut self, now: Time) {
        let age = self.cfg.max_signal_age();
        let old: Vec<String> = self
            .orders
            .iter()
            .filter(|(_, t)| t.state.status == OrderStatus::Initialized)
            .filter(|(_, t)| now.saturating_since(Time::from_nanos(t.intent.created_unix_ns.max(0) as u64)) > age)
            .map(|(k, _)| k.clone())
            .collect();
        for cid in old {
            let reason = "never checked or sent (the service stopped after journaling it), and too old to send now".to_owned();
            if let Err(e) = self.transition(&cid, Event::Deny { reason }).await {
                tracing::warn!(client_order_id = %cid, error = %e.message(), "cannot end an unsent order");
            }
        }
    }

    /// Sends a submitted order to the venue and applies what it answers.
    async fn send(&mut self, cid: &str, o: &NewOrder) -> Result<(), Status> {
        if !self.paper_mode() {
            // Through the dispatcher; until its answer comes the order stays submitted.
            return self.send_live(cid, o);
        }
        let fees = self.cfg.paper.fees.get(&o.account.exchange).copied().ok_or_else(|| Status::internal("no paper fees"))?;
        let (limit, tif) = match &o.placement {
            Placement::Limit { price, tif } => (*price, *tif),
            Placement::Market { limit } => (*limit, Tif::Ioc),
        };
        let order = PaperOrder {
            client_order_id: cid.to_owned(),
            account: o.account.to_string(),
            market: o.market.clone(),
            base: o.symbol.base.to_string(),
            quote: o.symbol.quote.to_string(),
            side: o.side,
            quantity: o.quantity,
            limit,
            tif,
            market_order: o.market_order,
            fees,
        };
        let opposite = self.markets.get(&o.market).map(|m| m.opposite(o.side).to_vec()).unwrap_or_default();
        let events = self.paper.submit(order, &opposite);
        self.apply_paper(events).await
    }

    /// Turns what the paper venue did into transitions.
    async fn apply_paper(&mut self, events: Vec<PaperEvent>) -> Result<(), Status> {
        let now = self.now();
        for e in events {
            let (cid, event) = match e {
                PaperEvent::Accepted { client_order_id } => (client_order_id, Event::Accepted { venue_order_id: None }),
                PaperEvent::Fill { client_order_id, trade_id, exec } => (client_order_id, Event::Fill(fill_of(&trade_id, &exec, now)?)),
                PaperEvent::Expired { client_order_id, reason } => (client_order_id, Event::Expired { reason }),
                PaperEvent::Cancelled { client_order_id } => (client_order_id, Event::Cancelled { reason: "cancelled".into() }),
                PaperEvent::Rejected { client_order_id, reason } => (client_order_id, Event::Rejected { reason }),
                PaperEvent::CancelFailed { client_order_id, reason } => (client_order_id, Event::CancelFailed { reason }),
            };
            let event = match event {
                // The paper venue charges fees in the quote asset.
                Event::Fill(mut f) => {
                    f.fee_asset = self.orders.get(&cid).map(|t| t.symbol.quote.to_string()).unwrap_or_default();
                    Event::Fill(f)
                }
                other => other,
            };
            self.transition(&cid, event).await?;
        }
        Ok(())
    }

    /// Applies one event to an order: checked on a copy, journaled if it changes
    /// anything, then applied and published. An illegal event is logged and
    /// refused; nothing changes.
    pub(crate) async fn transition(&mut self, cid: &str, event: Event) -> Result<(), Status> {
        let now = self.now();
        let Some(t) = self.orders.get(cid) else {
            tracing::warn!(client_order_id = cid, event = event.name(), "an event for an order this service does not know");
            return Ok(());
        };
        let mut next = t.state.clone();
        match next.apply(&event, now) {
            Ok(Applied::Duplicate) => return Ok(()),
            Ok(Applied::Moved { .. }) => {}
            Err(illegal) => {
                self.metrics.illegal.inc();
                tracing::warn!(error = %illegal, "refused an illegal order transition");
                return Ok(());
            }
        }
        let seq = t.seq + 1;
        let (subject, account, symbol, side) = (t.subject.clone(), t.account.clone(), t.symbol.clone(), t.side);
        let transition = transition_entry(&event, &next, &t.intent);
        let entry = pb::JournalEntry {
            client_order_id: cid.to_owned(),
            seq,
            time_unix_ns: now.as_nanos() as i64,
            entry: Some(pb::journal_entry::Entry::Transition(transition.clone())),
            then: None,
        };
        self.journal.append(&subject, &entry).await.map_err(|e| Status::unavailable(e.to_string()))?;
        if let Some(t) = self.orders.get_mut(cid) {
            t.state = next;
            t.seq = seq;
            if event == Event::Submit {
                t.sent_at = Some(now);
            }
        }
        if let Event::Fill(f) = &event {
            self.on_fill(&account, &symbol, side, f);
            if let Some(ef) = transition.fill {
                self.publish(&event_subject(&account, "fill"), ef.encode_to_vec()).await;
            }
            if let Some(p) = self.position_view(&account, &symbol) {
                self.publish(&event_subject(&account, "position"), p.encode_to_vec()).await;
            }
        }
        let view = self.view(cid);
        self.metrics.transition(event.name());
        self.publish(&event_subject(&account, "order"), view.encode_to_vec()).await;
        if view.status != pb::OrderStatus::Submitted as i32
            && let Some(waiting) = self.waiters.remove(cid)
        {
            for (_, w) in waiting {
                let _ = w.send(Ok(view.clone()));
            }
        }
        Ok(())
    }

    fn on_fill(&mut self, account: &AccountId, symbol: &Symbol, side: Side, f: &Fill) {
        let fee_quote = if f.fee_asset == symbol.quote.as_str() { f.fee } else { f.fee * f.price };
        self.positions.entry((account.to_string(), symbol.to_string())).or_default().fill(side, f.quantity.get(), f.price, fee_quote);
        self.metrics.fills.inc();
    }

    /// Cancels one order.
    pub async fn cancel(&mut self, cid: &str) -> Result<pb::Order, Status> {
        let Some(t) = self.orders.get(cid) else { return Err(Status::not_found(format!("no order {cid}"))) };
        if t.state.status.is_terminal() {
            return Err(Status::failed_precondition(format!("order {cid} is already {}", t.state.status)));
        }
        self.transition(cid, Event::CancelRequested).await?;
        if self.paper_mode() {
            let e = self.paper.cancel(cid);
            self.apply_paper(vec![e]).await?;
        } else {
            self.cancel_live(cid);
        }
        Ok(self.view(cid))
    }

    /// Cancels every open order (of one account, or all).
    pub async fn cancel_all(&mut self, account: Option<&AccountId>) -> Vec<pb::Order> {
        let open: Vec<String> = self
            .orders
            .iter()
            .filter(|(_, t)| t.state.status.is_open() && account.is_none_or(|a| *a == t.account))
            .map(|(k, _)| k.clone())
            .collect();
        let mut out = Vec::new();
        for cid in open {
            match self.cancel(&cid).await {
                Ok(o) => out.push(o),
                Err(e) => tracing::warn!(client_order_id = %cid, error = %e.message(), "cannot cancel"),
            }
        }
        out
    }

    /// The kill switch (and its release).
    pub async fn set_state(&mut self, state: TradingState, reason: &str, by: &str) -> pb::TradingStateChange {
        let number = match state {
            TradingState::Active => pb::TradingState::Active,
            TradingState::Reducing => pb::TradingState::Reducing,
            TradingState::Halted => pb::TradingState::Halted,
        } as i32;
        let change =
            pb::TradingStateChange { state: number, reason: reason.into(), by: by.into(), time_unix_ns: self.now().as_nanos() as i64 };
        tracing::warn!(state = state.as_str(), reason, by, "trading state set");
        self.trading = (state, change.clone());
        self.metrics.trading_state.set(number as i64);
        self.publish("exec.state", change.encode_to_vec()).await;
        if state == TradingState::Halted {
            let cancelled = self.cancel_all(None).await;
            tracing::warn!(orders = cancelled.len(), "halted: every open order cancelled");
        }
        change
    }

    // ---------------------------------------------------------------- market data

    /// A market data message on `subject` (`md.<venue>.<channel>.<BASE-QUOTE>`).
    pub async fn on_md(&mut self, subject: &str, payload: &[u8]) {
        let mut parts = subject.split('.');
        let (Some("md"), Some(venue), Some(channel), Some(sym)) = (parts.next(), parts.next(), parts.next(), parts.next()) else { return };
        let key = format!("{venue}:{sym}");
        let now = self.now();
        let m = self.markets.entry(key.clone()).or_default();
        match channel {
            "depth" => {
                if let Ok(d) = sluice_proto::md::v1::BookDepth::decode(payload) {
                    m.depth(&d, now);
                }
            }
            "book" => {
                if let Ok(t) = sluice_proto::md::v1::BookTop::decode(payload) {
                    m.top(&t, now);
                }
            }
            "trade" => {
                let Ok(t) = sluice_proto::md::v1::Trade::decode(payload) else { return };
                if let Some((price, size)) = m.trade(&t, now)
                    && self.paper_mode()
                {
                    let events = self.paper.on_trade(&key, price, size);
                    if let Err(e) = self.apply_paper(events).await {
                        tracing::error!(error = %e.message(), "a paper fill could not be journaled");
                    }
                }
            }
            _ => {}
        }
    }

    // ---------------------------------------------------------------- start

    /// The events still buffered go to NATS (at shutdown).
    pub async fn flush_events(&self) {
        sluice_service::shutdown::flush_nats(&self.nats).await;
    }

    async fn publish(&self, subject: &str, payload: Vec<u8>) {
        if let Err(e) = self.nats.publish(subject.to_owned(), payload.into()).await {
            tracing::warn!(%subject, error = %e, "cannot publish an event");
        }
    }
}

/// A paper execution as a fill of the state machine.
fn fill_of(trade_id: &str, e: &Exec, now: Time) -> Result<Fill, Status> {
    let quantity = Qty::new(e.qty).map_err(|err| Status::internal(err.to_string()))?;
    Ok(Fill { trade_id: trade_id.to_owned(), quantity, price: e.price, fee: e.fee, fee_asset: String::new(), maker: e.maker, time: now })
}
