//! What a load test sends to: an HTTP endpoint, a WebSocket endpoint, the
//! dispatcher's `Call` or the execution service's `SubmitOrder`. Each simulated
//! client owns one [`Conn`] (its own TCP connection, as a real client would) and
//! makes it again after a failure that breaks it.

mod grpc;
mod http;
mod ws;

use std::time::{Duration, Instant};

pub use grpc::{CallConn, CallTarget, SubmitConn, SubmitTarget};
pub use http::{HttpConn, HttpTarget};
pub use ws::WsTarget;

use crate::stats::{Outcome, Tally};

/// A target, ready to connect to.
pub enum Target {
    Http(HttpTarget),
    WebSocket(WsTarget),
    Call(CallTarget),
    Submit(SubmitTarget),
}

/// One client's connection, made on its first request.
pub enum Conn {
    Http(http::HttpConn),
    Call(CallConn),
    Submit(SubmitConn),
}

/// When a request ended and how: latency is `end` minus its (intended) start.
#[derive(Debug, Clone, Copy)]
pub struct Done {
    pub outcome: Outcome,
    pub end: Instant,
}

impl Done {
    fn now(outcome: Outcome) -> Done {
        Done { outcome, end: Instant::now() }
    }
}

impl Target {
    /// The address the load goes to, for the loopback check and the report.
    pub fn url(&self) -> &str {
        match self {
            Target::Http(t) => t.url(),
            Target::WebSocket(t) => t.url(),
            Target::Call(t) => t.url(),
            Target::Submit(t) => t.url(),
        }
    }

    /// A short description for the report's heading.
    pub fn describe(&self) -> String {
        match self {
            Target::Http(t) => t.describe(),
            Target::WebSocket(t) => t.describe(),
            Target::Call(t) => t.describe(),
            Target::Submit(t) => t.describe(),
        }
    }

    /// Whether a "request" is a WebSocket session (one per connection, whose
    /// latency is connect-to-first-message, followed by a receive period).
    pub fn is_websocket(&self) -> bool {
        matches!(self, Target::WebSocket(_))
    }

    /// One request on `conn` (connecting first when it is empty), within
    /// `timeout`. A failure that leaves the connection unusable empties `conn`.
    /// WebSocket messages received after the first are added to `tally`.
    pub async fn request(&self, conn: &mut Option<Conn>, timeout: Duration, tally: &mut Tally) -> Done {
        match self {
            Target::Http(t) => t.request(conn, timeout).await,
            Target::WebSocket(t) => t.session(timeout, tally).await,
            Target::Call(t) => t.request(conn, timeout).await,
            Target::Submit(t) => t.request(conn, timeout).await,
        }
    }
}

/// A target that could not be set up from what the user gave.
#[derive(Debug, thiserror::Error)]
pub enum BadTarget {
    #[error("'{0}' is not a URL this target takes: {1}")]
    Url(String, String),
    #[error("header '{0}': write it as 'Name: value'")]
    Header(String),
    #[error("{0}")]
    Other(String),
}

/// Host and port of a URL, with the scheme's default port.
pub fn host_port(uri: &::http::Uri) -> Option<(String, u16)> {
    let host = uri.host()?.trim_start_matches('[').trim_end_matches(']').to_owned();
    let port = uri.port_u16().or(match uri.scheme_str() {
        Some("https" | "wss") => Some(443),
        Some("http" | "ws") => Some(80),
        _ => None,
    })?;
    Some((host, port))
}
