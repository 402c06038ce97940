//! The live venue: orders, cancels and queries through the dispatcher (this
//! service holds no key). Per exchange, a pure module builds the requests and
//! reads the answers into events of the order state machine ([`LiveVenue`]);
//! this module also says what a dispatcher answer proves about whether the
//! request reached the exchange ([`classify`]).
//!
//! Every exchange's order is a limit: a market order under a slippage cap is a
//! limit at the cap with immediate-or-cancel, since Upbit's and Bybit's spot
//! market orders take no price bound (and Bybit's market buy is by quote
//! amount). Queries go by client order id, so an order whose venue id was never
//! learned is still found.

pub mod binance;
pub mod bybit;
pub mod okx;
pub mod upbit;

use sluice_domain::{Decimal, Exchange, Side};
use sluice_proto::dispatcher::v1::{CallRequest, CallResponse, Priority};
use sluice_rate::Time;
use tonic::{Code, Status};

use crate::fills::Tif;
use crate::instrument::Rules;
use crate::order::Event;

/// Where an order lives on the exchange.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target<'a> {
    /// The dispatcher's account name ("demo").
    pub account: &'a str,
    /// The exchange's spelling of the market ("KRW-BTC", "BTCUSDT").
    pub native: &'a str,
    /// Bybit's category ("spot", "linear"); unused elsewhere.
    pub category: &'a str,
}

/// An order to place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Spec<'a> {
    pub target: Target<'a>,
    pub side: Side,
    pub quantity: Decimal,
    /// The limit (for a market order, its slippage cap).
    pub price: Decimal,
    pub tif: Tif,
    pub client_order_id: &'a str,
}

/// What an answer about an order says.
#[derive(Debug, Clone, PartialEq)]
pub enum Read {
    /// These events, in order.
    Events(Vec<Event>),
    /// The exchange has no such order.
    NotFound,
    /// The exchange refused to act for its rate limit: not executed.
    NotSent(String),
    /// The exchange answered that it does not know what happened (a server error
    /// inside a 200 envelope): the outcome is unknown.
    Unknown(String),
}

/// What a cancel's answer says.
#[derive(Debug, Clone, PartialEq)]
pub enum CancelRead {
    /// The exchange took the cancel; it is confirmed by the stream or a query.
    Taken,
    /// It is cancelled (these events).
    Done(Vec<Event>),
    /// Refused (already filled, not found, rate limited): the order stands as it was.
    Refused(String),
}

/// One asset's balance.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Balance {
    pub asset: String,
    pub free: Decimal,
    pub locked: Decimal,
}

/// An order open on the exchange.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenOrder {
    pub venue_order_id: String,
    /// Empty when it has none (placed by another program).
    pub client_order_id: String,
    pub native: String,
}

/// One answer from the exchange, as the dispatcher relayed it.
pub type Answer<'a> = (u16, &'a [u8]);

/// One exchange's order API, pure.
pub trait LiveVenue: Send + Sync {
    fn exchange(&self) -> Exchange;
    /// `POST` the order, keyed by its client order id in the dispatcher too.
    fn create(&self, o: &Spec<'_>) -> CallRequest;
    fn read_create(&self, a: Answer<'_>) -> Result<Read, String>;
    fn cancel(&self, t: &Target<'_>, client_order_id: &str) -> CallRequest;
    fn read_cancel(&self, a: Answer<'_>) -> CancelRead;
    /// The calls that together say where an order stands and what filled
    /// (`venue_order_id` when known: Binance and OKX list fills by it only).
    fn query(&self, t: &Target<'_>, client_order_id: &str, venue_order_id: Option<&str>) -> Vec<CallRequest>;
    /// Reads the answers to [`LiveVenue::query`], in the same order. `fee_asset`
    /// is used where the exchange does not name one.
    fn read_query(&self, answers: &[Answer<'_>], fee_asset: &str, now: Time) -> Result<Read, String>;
    /// The calls that give an instrument's trading rules.
    fn rules(&self, t: &Target<'_>) -> Vec<CallRequest>;
    fn read_rules(&self, answers: &[Answer<'_>], native: &str) -> Result<Rules, String>;
    fn balances(&self, account: &str) -> CallRequest;
    fn read_balances(&self, a: Answer<'_>) -> Result<Vec<Balance>, String>;
    /// The account's open orders on one market.
    fn open_orders(&self, t: &Target<'_>) -> CallRequest;
    fn read_open_orders(&self, a: Answer<'_>) -> Result<Vec<OpenOrder>, String>;
}

/// The live venue of `exchange`.
pub fn of(exchange: Exchange) -> Box<dyn LiveVenue> {
    match exchange {
        Exchange::Upbit => Box::new(upbit::Upbit),
        Exchange::Bybit => Box::new(bybit::Bybit),
        Exchange::Binance => Box::new(binance::Binance),
        Exchange::Okx => Box::new(okx::Okx),
    }
}

/// A call through the dispatcher.
pub(crate) fn call(
    exchange: Exchange,
    account: &str,
    method: &str,
    path: &str,
    query: String,
    body: Vec<u8>,
    priority: Priority,
) -> CallRequest {
    CallRequest {
        exchange: exchange.as_str().into(),
        account: account.into(),
        method: method.into(),
        path: path.into(),
        query,
        body,
        priority: priority as i32,
        ..Default::default()
    }
}

/// RFC 3986's unreserved characters stay as they are; everything else is
/// percent-encoded.
const QUERY: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC.remove(b'-').remove(b'.').remove(b'_').remove(b'~');

pub(crate) fn enc(s: &str) -> String {
    percent_encoding::utf8_percent_encode(s, QUERY).to_string()
}

/// A decimal parsed from an exchange's string, naming the field when it is not one.
pub(crate) fn decimal(field: &str, v: &str) -> Result<Decimal, String> {
    v.parse().map_err(|_| format!("{field} '{v}' is not a decimal number"))
}

/// What a call through the dispatcher proves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sent {
    /// The exchange answered.
    Answered { status: u16, body: Vec<u8> },
    /// It provably never reached the exchange (refused before sending, or a
    /// rate-limit answer, which the exchange does not execute).
    NotSent(String),
    /// It may have reached the exchange: only a query can tell.
    Unknown(String),
}

/// Reads the dispatcher's answer (see `dispatcher.proto` for the codes).
pub fn classify(result: Result<CallResponse, Status>) -> Sent {
    match result {
        Ok(r) => {
            let status = u16::try_from(r.status).unwrap_or(0);
            match status {
                // Throttled or banned: not executed (the dispatcher frees its key too).
                429 | 418 => Sent::NotSent(format!("the exchange answered {status}: rate limited, not executed")),
                500..=599 => Sent::Unknown(format!("the exchange answered {status}: its outcome is unknown")),
                _ => Sent::Answered { status, body: r.body },
            }
        }
        Err(s) => {
            let msg = s.message().to_owned();
            // The dispatcher says "not sent" whenever a request provably did not
            // leave; a timeout of our own call says nothing of the kind.
            if msg.contains("not sent") {
                return Sent::NotSent(msg);
            }
            match s.code() {
                Code::InvalidArgument | Code::NotFound | Code::PermissionDenied | Code::Unauthenticated | Code::ResourceExhausted => {
                    Sent::NotSent(format!("{:?}: {msg}", s.code()))
                }
                // A missing secret is refused before sending; an idempotency key
                // whose first call "may have reached" the exchange is not.
                Code::FailedPrecondition if !msg.contains("may have reached") => Sent::NotSent(format!("{:?}: {msg}", s.code())),
                _ => Sent::Unknown(format!("{:?}: {msg}", s.code())),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn answer(status: u32) -> Result<CallResponse, Status> {
        Ok(CallResponse { status, body: b"{}".to_vec(), ..Default::default() })
    }

    #[test]
    fn only_proof_of_not_sending_ends_an_order_on_our_side() {
        assert!(matches!(classify(answer(201)), Sent::Answered { status: 201, .. }));
        assert!(matches!(classify(answer(400)), Sent::Answered { status: 400, .. }));
        assert!(matches!(classify(answer(429)), Sent::NotSent(_)));
        assert!(matches!(classify(answer(503)), Sent::Unknown(_)));
        let not_sent = [
            Status::deadline_exceeded("ticker frees budget only in 900 ms, after the deadline; not sent"),
            Status::unavailable("this replica does not decide these budgets now; not sent"),
            Status::resource_exhausted("the upbit queue is full"),
            Status::invalid_argument("body is too large"),
            Status::permission_denied("client 'x' may not use account upbit/demo"),
            Status::failed_precondition("account upbit/demo has no secret"),
        ];
        for s in not_sent {
            assert!(matches!(classify(Err(s.clone())), Sent::NotSent(_)), "{s:?}");
        }
        let unknown = [
            Status::unavailable("transport error"),
            Status::deadline_exceeded("Timeout expired"),
            Status::failed_precondition("an earlier call with idempotency key 'k' may have reached the exchange without an answer"),
            Status::unknown("connection reset"),
        ];
        for s in unknown {
            assert!(matches!(classify(Err(s.clone())), Sent::Unknown(_)), "{s:?}");
        }
    }
}
