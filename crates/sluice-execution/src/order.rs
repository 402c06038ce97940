//! The order state machine: every status an order can be in and the events that
//! move it, pure and table-tested.
//!
//! The rule it keeps: **no terminal status without evidence**. A failure is one of
//! three kinds, and only one of them ends the order on our side:
//!
//! * *not sent*: provably never left (refused before the request was written):
//!   terminal, `Rejected` with [`RejectedBy::Sluice`];
//! * *venue rejected*: the exchange answered no: terminal, `Rejected` by the venue;
//! * *ambiguous*: a timeout, a transport error after sending, a 5xx, the
//!   dispatcher's "outcome unknown": the order is `Unknown`, still in flight, and
//!   only venue evidence (a query by client order id, a private-stream event,
//!   reconciliation) ends it.
//!
//! An event that does not fit the status is refused with an [`Illegal`] error, to
//! be logged; nothing panics. Fills are counted once by trade id, whichever way
//! they arrived.

use std::collections::BTreeSet;
use std::fmt;

use sluice_domain::{Decimal, Qty};
use sluice_rate::Time;

/// Where an order stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Status {
    /// Created and journaled; not sent.
    Initialized,
    /// Refused by pre-trade risk (terminal).
    Denied,
    /// Sent (or about to be: journaled first); no answer yet.
    Submitted,
    /// The venue took it.
    Accepted,
    PartiallyFilled,
    /// Terminal.
    Filled,
    /// A cancel was sent; the venue has not confirmed it.
    PendingCancel,
    /// Terminal (fills that happened before the cancel may still arrive).
    Cancelled,
    /// Terminal: refused by the venue, or never sent.
    Rejected,
    /// Terminal: the venue ended it (IOC or FOK leftovers, time in force).
    Expired,
    /// The outcome of sending is not known: in flight until venue evidence ends it.
    Unknown,
}

impl Status {
    pub const ALL: [Status; 11] = [
        Status::Initialized,
        Status::Denied,
        Status::Submitted,
        Status::Accepted,
        Status::PartiallyFilled,
        Status::Filled,
        Status::PendingCancel,
        Status::Cancelled,
        Status::Rejected,
        Status::Expired,
        Status::Unknown,
    ];

    /// Nothing more will happen to the order on the venue.
    pub fn is_terminal(self) -> bool {
        matches!(self, Status::Denied | Status::Filled | Status::Cancelled | Status::Rejected | Status::Expired)
    }

    /// The order may be (or become) live on the venue: it counts as open.
    pub fn is_open(self) -> bool {
        matches!(self, Status::Submitted | Status::Accepted | Status::PartiallyFilled | Status::PendingCancel | Status::Unknown)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Status::Initialized => "initialized",
            Status::Denied => "denied",
            Status::Submitted => "submitted",
            Status::Accepted => "accepted",
            Status::PartiallyFilled => "partially_filled",
            Status::Filled => "filled",
            Status::PendingCancel => "pending_cancel",
            Status::Cancelled => "cancelled",
            Status::Rejected => "rejected",
            Status::Expired => "expired",
            Status::Unknown => "unknown",
        }
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Who ended a rejected order.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RejectedBy {
    /// It never left sluice.
    Sluice,
    Venue,
}

/// One execution of an order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fill {
    /// The venue's trade id: a fill is counted once by it.
    pub trade_id: String,
    pub quantity: Qty,
    pub price: Decimal,
    /// In `fee_asset`; zero when none.
    pub fee: Decimal,
    pub fee_asset: String,
    /// The order rested on the book (maker) rather than took liquidity.
    pub maker: bool,
    pub time: Time,
}

/// What happens to an order.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// Pre-trade risk refused it.
    Deny {
        reason: String,
    },
    /// It is about to leave (journaled before the request is written).
    Submit,
    /// It provably never left.
    NotSent {
        reason: String,
    },
    /// The venue refused it.
    Rejected {
        reason: String,
    },
    /// No answer that says what happened: timeout, transport error after
    /// sending, a 5xx, "outcome unknown".
    Ambiguous {
        reason: String,
    },
    /// The venue took it (its id, when known).
    Accepted {
        venue_order_id: Option<String>,
    },
    Fill(Fill),
    /// A cancel is about to leave.
    CancelRequested,
    /// The cancel was refused or never left; the order stands as it was.
    CancelFailed {
        reason: String,
    },
    /// The venue says it is cancelled.
    Cancelled {
        reason: String,
    },
    /// The venue says it ended unfilled (or partly filled) by its time in force.
    Expired {
        reason: String,
    },
}

impl Event {
    pub fn name(&self) -> &'static str {
        match self {
            Event::Deny { .. } => "deny",
            Event::Submit => "submit",
            Event::NotSent { .. } => "not_sent",
            Event::Rejected { .. } => "rejected",
            Event::Ambiguous { .. } => "ambiguous",
            Event::Accepted { .. } => "accepted",
            Event::Fill(_) => "fill",
            Event::CancelRequested => "cancel_requested",
            Event::CancelFailed { .. } => "cancel_failed",
            Event::Cancelled { .. } => "cancelled",
            Event::Expired { .. } => "expired",
        }
    }
}

/// An event that does not fit the order's status; refused, to be logged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("order {client_order_id}: {event} is not possible while {status}{detail}")]
pub struct Illegal {
    pub client_order_id: String,
    pub status: Status,
    pub event: &'static str,
    pub detail: String,
}

/// What an event did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    /// The status went from one to the other (possibly the same, with new data).
    Moved { from: Status, to: Status },
    /// Already known (a fill by a trade id already counted, an acceptance of an
    /// accepted order): nothing changed.
    Duplicate,
}

/// The state of one order as the state machine keeps it.
#[derive(Debug, Clone, PartialEq)]
pub struct OrderState {
    pub client_order_id: String,
    pub venue_order_id: Option<String>,
    pub quantity: Qty,
    pub status: Status,
    /// Executed so far, from the fills counted.
    pub filled: Qty,
    /// Sum of price x quantity over the fills (the average price is this / filled).
    pub filled_notional: Decimal,
    /// Fees per asset.
    pub fees: Vec<(String, Decimal)>,
    pub reason: Option<String>,
    pub rejected_by: Option<RejectedBy>,
    pub trade_ids: BTreeSet<String>,
    pub updated: Time,
}

impl OrderState {
    pub fn new(client_order_id: impl Into<String>, quantity: Qty, now: Time) -> OrderState {
        OrderState {
            client_order_id: client_order_id.into(),
            venue_order_id: None,
            quantity,
            status: Status::Initialized,
            filled: Qty::ZERO,
            filled_notional: Decimal::ZERO,
            fees: Vec::new(),
            reason: None,
            rejected_by: None,
            trade_ids: BTreeSet::new(),
            updated: now,
        }
    }

    /// What is left to fill.
    pub fn remaining(&self) -> Decimal {
        (self.quantity.get() - self.filled.get()).max(Decimal::ZERO)
    }

    /// The average fill price, once anything filled.
    pub fn average_price(&self) -> Option<Decimal> {
        (!self.filled.is_zero()).then(|| self.filled_notional / self.filled.get())
    }

    fn illegal(&self, event: &Event, detail: impl Into<String>) -> Illegal {
        Illegal { client_order_id: self.client_order_id.clone(), status: self.status, event: event.name(), detail: detail.into() }
    }

    /// The status an open order has from its fills alone.
    fn by_fills(&self) -> Status {
        if self.filled.is_zero() { Status::Accepted } else { Status::PartiallyFilled }
    }

    /// Applies `event` at `now`, or refuses it without changing anything.
    pub fn apply(&mut self, event: &Event, now: Time) -> Result<Applied, Illegal> {
        use Status as S;
        let from = self.status;
        let to = match (from, event) {
            (S::Initialized, Event::Deny { reason }) => {
                self.reason = Some(reason.clone());
                S::Denied
            }
            (S::Initialized, Event::Submit) => S::Submitted,
            (S::Submitted, Event::NotSent { reason }) => {
                self.reason = Some(reason.clone());
                self.rejected_by = Some(RejectedBy::Sluice);
                S::Rejected
            }
            (S::Submitted | S::Unknown, Event::Rejected { reason }) => {
                self.reason = Some(reason.clone());
                self.rejected_by = Some(RejectedBy::Venue);
                S::Rejected
            }
            (S::Submitted, Event::Ambiguous { reason }) => {
                self.reason = Some(reason.clone());
                S::Unknown
            }
            // Asking again while it is already unknown changes nothing.
            (S::Unknown, Event::Ambiguous { .. }) => return Ok(Applied::Duplicate),
            (S::Submitted | S::Unknown, Event::Accepted { venue_order_id }) => {
                self.learn_venue_id(venue_order_id);
                self.by_fills()
            }
            (S::Accepted | S::PartiallyFilled | S::PendingCancel, Event::Accepted { venue_order_id }) => {
                let learned = self.venue_order_id.is_none() && venue_order_id.is_some();
                self.learn_venue_id(venue_order_id);
                if !learned {
                    return Ok(Applied::Duplicate);
                }
                from
            }
            (_, Event::Fill(f)) => return self.fill(event, f, now),
            (S::Submitted | S::Accepted | S::PartiallyFilled | S::Unknown, Event::CancelRequested) => S::PendingCancel,
            (S::PendingCancel, Event::CancelRequested) => return Ok(Applied::Duplicate),
            (S::PendingCancel, Event::CancelFailed { reason }) => {
                self.reason = Some(reason.clone());
                if self.venue_order_id.is_some() || !self.filled.is_zero() { self.by_fills() } else { S::Submitted }
            }
            (S::Submitted | S::Accepted | S::PartiallyFilled | S::PendingCancel | S::Unknown, Event::Cancelled { reason }) => {
                self.reason = Some(reason.clone());
                S::Cancelled
            }
            (S::Cancelled, Event::Cancelled { .. }) | (S::Expired, Event::Expired { .. }) => return Ok(Applied::Duplicate),
            (S::Submitted | S::Accepted | S::PartiallyFilled | S::PendingCancel | S::Unknown, Event::Expired { reason }) => {
                self.reason = Some(reason.clone());
                S::Expired
            }
            _ => return Err(self.illegal(event, "")),
        };
        self.status = to;
        self.updated = now;
        Ok(Applied::Moved { from, to })
    }

    fn learn_venue_id(&mut self, id: &Option<String>) {
        if self.venue_order_id.is_none() {
            self.venue_order_id.clone_from(id);
        }
    }

    /// A fill: counted once by trade id, never above the order's quantity. It may
    /// come after a cancel or an expiry (what executed before the venue ended the
    /// order), and it is itself evidence that an unknown order was accepted.
    fn fill(&mut self, event: &Event, f: &Fill, now: Time) -> Result<Applied, Illegal> {
        use Status as S;
        if self.trade_ids.contains(&f.trade_id) {
            return Ok(Applied::Duplicate);
        }
        let from = self.status;
        if matches!(from, S::Initialized | S::Denied | S::Rejected) {
            return Err(self.illegal(event, format!(" (trade {})", f.trade_id)));
        }
        if f.quantity.is_zero() {
            return Err(self.illegal(event, format!(" (trade {} has no quantity)", f.trade_id)));
        }
        let filled = self.filled.get() + f.quantity.get();
        if filled > self.quantity.get() {
            return Err(self.illegal(event, format!(" (trade {} of {} would fill {filled} of {})", f.trade_id, f.quantity, self.quantity)));
        }
        self.trade_ids.insert(f.trade_id.clone());
        self.filled = Qty::new(filled).unwrap_or(self.filled);
        self.filled_notional += f.price * f.quantity.get();
        if !f.fee.is_zero() {
            match self.fees.iter_mut().find(|(a, _)| *a == f.fee_asset) {
                Some((_, v)) => *v += f.fee,
                None => self.fees.push((f.fee_asset.clone(), f.fee)),
            }
        }
        let to = match from {
            // Ended on the venue already: the fill is what executed before that.
            S::Cancelled | S::Expired | S::Filled => from,
            _ if filled == self.quantity.get() => S::Filled,
            // A cancel in flight stays in flight.
            S::PendingCancel => S::PendingCancel,
            _ => S::PartiallyFilled,
        };
        self.status = to;
        self.updated = now;
        Ok(Applied::Moved { from, to })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Status as S;

    fn qty(s: &str) -> Qty {
        s.parse().unwrap()
    }

    fn fill(id: &str, q: &str) -> Event {
        Event::Fill(Fill {
            trade_id: id.into(),
            quantity: qty(q),
            price: "100".parse().unwrap(),
            fee: "0.1".parse().unwrap(),
            fee_asset: "USDT".into(),
            maker: false,
            time: Time::ZERO,
        })
    }

    fn events() -> Vec<Event> {
        let r = || "r".to_owned();
        vec![
            Event::Deny { reason: r() },
            Event::Submit,
            Event::NotSent { reason: r() },
            Event::Rejected { reason: r() },
            Event::Ambiguous { reason: r() },
            Event::Accepted { venue_order_id: Some("v1".into()) },
            fill("t-new", "0.4"),
            Event::CancelRequested,
            Event::CancelFailed { reason: r() },
            Event::Cancelled { reason: r() },
            Event::Expired { reason: r() },
        ]
    }

    /// An order of 1.0 in `status`, with 0.4 already filled where the status
    /// implies fills (and for the terminal ones that may carry them).
    fn order_in(status: S) -> OrderState {
        let mut o = OrderState::new("c1", qty("1"), Time::ZERO);
        if matches!(status, S::PartiallyFilled | S::Filled) {
            o.filled = qty(if status == S::Filled { "1" } else { "0.4" });
            o.trade_ids.insert("t-old".into());
        }
        if matches!(status, S::Accepted | S::PartiallyFilled | S::PendingCancel | S::Filled) {
            o.venue_order_id = Some("v0".into());
        }
        o.status = status;
        o
    }

    /// Every (status, event) pair: the status it leads to, `Dup` for "already
    /// known", or `X` for refused.
    #[test]
    fn every_transition_and_the_refusal_of_every_illegal_one() {
        #[derive(Debug, PartialEq)]
        enum R {
            To(S),
            Dup,
            X,
        }
        use R::{Dup, To, X};
        // Columns: deny, submit, not_sent, rejected, ambiguous, accepted, fill(0.4),
        // cancel_requested, cancel_failed, cancelled, expired.
        let table: [(S, [R; 11]); 11] = [
            (S::Initialized, [To(S::Denied), To(S::Submitted), X, X, X, X, X, X, X, X, X]),
            (S::Denied, [X, X, X, X, X, X, X, X, X, X, X]),
            (
                S::Submitted,
                [
                    X,
                    X,
                    To(S::Rejected),
                    To(S::Rejected),
                    To(S::Unknown),
                    To(S::Accepted),
                    To(S::PartiallyFilled),
                    To(S::PendingCancel),
                    X,
                    To(S::Cancelled),
                    To(S::Expired),
                ],
            ),
            (S::Accepted, [X, X, X, X, X, Dup, To(S::PartiallyFilled), To(S::PendingCancel), X, To(S::Cancelled), To(S::Expired)]),
            (S::PartiallyFilled, [X, X, X, X, X, Dup, To(S::PartiallyFilled), To(S::PendingCancel), X, To(S::Cancelled), To(S::Expired)]),
            // A further fill would exceed the quantity.
            (S::Filled, [X, X, X, X, X, X, X, X, X, X, X]),
            (S::PendingCancel, [X, X, X, X, X, Dup, To(S::PendingCancel), Dup, To(S::Accepted), To(S::Cancelled), To(S::Expired)]),
            // Fills that executed before the cancel still count.
            (S::Cancelled, [X, X, X, X, X, X, To(S::Cancelled), X, X, Dup, X]),
            (S::Rejected, [X, X, X, X, X, X, X, X, X, X, X]),
            (S::Expired, [X, X, X, X, X, X, To(S::Expired), X, X, X, Dup]),
            (
                S::Unknown,
                [
                    X,
                    X,
                    X,
                    To(S::Rejected),
                    Dup,
                    To(S::Accepted),
                    To(S::PartiallyFilled),
                    To(S::PendingCancel),
                    X,
                    To(S::Cancelled),
                    To(S::Expired),
                ],
            ),
        ];
        assert_eq!(table.iter().map(|(s, _)| *s).collect::<Vec<_>>(), S::ALL.to_vec(), "one row per status");
        for (status, row) in table {
            for (event, expected) in events().iter().zip(row) {
                let mut o = order_in(status);
                let before = o.clone();
                let got = match o.apply(event, Time::from_millis(5)) {
                    Ok(Applied::Moved { from, to }) => {
                        assert_eq!(from, status);
                        assert_eq!(o.status, to);
                        To(to)
                    }
                    Ok(Applied::Duplicate) => {
                        assert_eq!(o.status, before.status, "{status} {}: a duplicate changes nothing", event.name());
                        Dup
                    }
                    Err(e) => {
                        assert_eq!(o, before, "{status} {}: a refused event changes nothing", event.name());
                        assert!(e.to_string().contains(status.as_str()) && e.to_string().contains(event.name()), "{e}");
                        X
                    }
                };
                assert_eq!(got, expected, "{status} + {}", event.name());
            }
        }
    }

    #[test]
    fn fills_count_once_by_trade_id_and_never_above_the_quantity() {
        let mut o = order_in(S::Submitted);
        assert_eq!(o.apply(&fill("a", "0.25"), Time::ZERO).unwrap(), Applied::Moved { from: S::Submitted, to: S::PartiallyFilled });
        assert_eq!(o.apply(&fill("a", "0.25"), Time::ZERO).unwrap(), Applied::Duplicate, "the same trade by another path");
        o.apply(&fill("b", "0.5"), Time::ZERO).unwrap();
        assert_eq!((o.filled, o.remaining()), (qty("0.75"), "0.25".parse().unwrap()));
        assert!(o.apply(&fill("c", "0.5"), Time::ZERO).is_err(), "0.5 more would exceed 1.0");
        o.apply(&fill("d", "0.25"), Time::ZERO).unwrap();
        assert_eq!(o.status, S::Filled);
        assert_eq!(o.average_price(), Some("100".parse().unwrap()));
        assert_eq!(o.fees, vec![("USDT".to_owned(), "0.3".parse().unwrap())]);
    }

    #[test]
    fn an_unknown_order_ends_only_on_venue_evidence() {
        let mut o = order_in(S::Submitted);
        o.apply(&Event::Ambiguous { reason: "timeout after sending".into() }, Time::ZERO).unwrap();
        assert_eq!(o.status, S::Unknown);
        assert!(o.status.is_open() && !o.status.is_terminal());
        // Not sent is impossible once it may have left.
        assert!(o.apply(&Event::NotSent { reason: "x".into() }, Time::ZERO).is_err());
        // The venue's answer to a query by client id ends it.
        o.apply(&Event::Accepted { venue_order_id: Some("v9".into()) }, Time::ZERO).unwrap();
        assert_eq!((o.status, o.venue_order_id.as_deref()), (S::Accepted, Some("v9")));
    }

    #[test]
    fn a_failed_cancel_puts_the_order_back_as_it_was() {
        let mut o = order_in(S::PartiallyFilled);
        o.apply(&Event::CancelRequested, Time::ZERO).unwrap();
        o.apply(&Event::CancelFailed { reason: "not sent".into() }, Time::ZERO).unwrap();
        assert_eq!(o.status, S::PartiallyFilled);
        let mut s = order_in(S::Submitted);
        s.apply(&Event::CancelRequested, Time::ZERO).unwrap();
        s.apply(&Event::CancelFailed { reason: "order not found yet".into() }, Time::ZERO).unwrap();
        assert_eq!(s.status, S::Submitted, "not known to be accepted: still only submitted");
    }
}
