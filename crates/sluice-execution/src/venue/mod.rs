//! The live venue: orders, cancels and queries through the dispatcher (this
//! service holds no key). Per exchange, a pure module builds the requests and
//! reads the answers into events of the order state machine; this module says
//! what a dispatcher answer proves about whether the request reached the
//! exchange.

pub mod upbit;

use sluice_proto::dispatcher::v1::CallResponse;
use tonic::{Code, Status};

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
