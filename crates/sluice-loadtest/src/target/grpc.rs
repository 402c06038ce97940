//! sluice's own gRPC services as targets: the dispatcher's `Call` (the answer is
//! the exchange's HTTP status, as the caller sees it) and the execution service's
//! `SubmitOrder` (each with a fresh request id, so none is an idempotent replay).
//! Each client has its own channel, hence its own HTTP/2 connection.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use sluice_proto::dispatcher::v1::CallRequest;
use sluice_proto::dispatcher::v1::dispatcher_client::DispatcherClient;
use sluice_proto::execution::v1::execution_client::ExecutionClient;
use sluice_proto::execution::v1::{OrderStatus, SubmitOrderRequest};
use sluice_service::credentials::Bearer;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};

use super::{BadTarget, Conn, Done};
use crate::stats::{Answer, ErrorKind, Outcome};

pub type CallConn = DispatcherClient<InterceptedService<Channel, Bearer>>;
pub type SubmitConn = ExecutionClient<Channel>;

fn endpoint(url: &str) -> Result<Endpoint, BadTarget> {
    let bad = |why: &str| BadTarget::Url(url.to_owned(), why.to_owned());
    let uri: http::Uri = url.parse().map_err(|e: http::uri::InvalidUri| bad(&e.to_string()))?;
    if uri.scheme_str() != Some("http") {
        return Err(bad("a gRPC address here is http://host:port"));
    }
    super::host_port(&uri).ok_or_else(|| bad("it has no host"))?;
    let ep = Endpoint::from_shared(url.to_owned()).map_err(|e| bad(&e.to_string()))?;
    Ok(ep.tcp_nodelay(true))
}

/// A gRPC status: one the server sent is an answer; one tonic made up for a
/// broken transport is an error of the transport's kind.
fn classify(s: &tonic::Status) -> Outcome {
    use std::error::Error;
    match s.source() {
        None => Outcome::Answer(Answer::Grpc(s.code() as i32)),
        Some(src) => Outcome::Error(ErrorKind::find_io(src).unwrap_or(ErrorKind::Closed)),
    }
}

fn connect_error(e: &tonic::transport::Error) -> Outcome {
    Outcome::Error(ErrorKind::find_io(e).unwrap_or(ErrorKind::Connect))
}

/// The dispatcher's `Call`, with one request sent again and again.
pub struct CallTarget {
    url: String,
    endpoint: Endpoint,
    request: CallRequest,
    bearer: Bearer,
}

impl CallTarget {
    pub fn new(url: &str, request: CallRequest, bearer: Bearer) -> Result<CallTarget, BadTarget> {
        Ok(CallTarget { url: url.to_owned(), endpoint: endpoint(url)?, request, bearer })
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn describe(&self) -> String {
        let r = &self.request;
        let q = if r.query.is_empty() { String::new() } else { format!("?{}", r.query) };
        format!("dispatcher Call at {}: {} {} {}{q}", self.url, r.exchange, r.method, r.path)
    }

    pub(super) async fn request(&self, slot: &mut Option<Conn>, timeout: Duration) -> Done {
        let work = async {
            let mut client = match slot.take() {
                Some(Conn::Call(c)) => c,
                _ => match self.endpoint.connect().await {
                    Ok(ch) => DispatcherClient::with_interceptor(ch, self.bearer.clone()),
                    Err(e) => return connect_error(&e),
                },
            };
            let outcome = match client.call(self.request.clone()).await {
                Ok(resp) => Outcome::Answer(Answer::Http(u16::try_from(resp.get_ref().status).unwrap_or(u16::MAX))),
                Err(s) => classify(&s),
            };
            // A channel reconnects by itself: it is kept whatever happened.
            *slot = Some(Conn::Call(client));
            outcome
        };
        Done::now(tokio::time::timeout(timeout, work).await.unwrap_or(Outcome::Error(ErrorKind::Timeout)))
    }
}

/// The execution service's `SubmitOrder`.
pub struct SubmitTarget {
    url: String,
    endpoint: Endpoint,
    order: SubmitOrderRequest,
    /// Request ids are `<prefix>-<n>`: unique per run and per process.
    prefix: String,
    next: AtomicU64,
}

impl SubmitTarget {
    /// `order` is the template; its `request_id` and `client_order_id` are
    /// replaced on every request.
    pub fn new(url: &str, order: SubmitOrderRequest) -> Result<SubmitTarget, BadTarget> {
        let started = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default().as_millis();
        Ok(SubmitTarget {
            url: url.to_owned(),
            endpoint: endpoint(url)?,
            order,
            prefix: format!("lt{started}x{}", std::process::id()),
            next: AtomicU64::new(0),
        })
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn describe(&self) -> String {
        let o = &self.order;
        format!("execution SubmitOrder at {}: {} {} {:?} {}", self.url, o.account, o.symbol, o.side(), o.quantity)
    }

    pub(super) async fn request(&self, slot: &mut Option<Conn>, timeout: Duration) -> Done {
        let work = async {
            let mut client = match slot.take() {
                Some(Conn::Submit(c)) => c,
                _ => match self.endpoint.connect().await {
                    Ok(ch) => ExecutionClient::new(ch),
                    Err(e) => return connect_error(&e),
                },
            };
            let n = self.next.fetch_add(1, Ordering::Relaxed);
            let order =
                SubmitOrderRequest { request_id: format!("{}-{n}", self.prefix), client_order_id: String::new(), ..self.order.clone() };
            let outcome = match client.submit_order(order).await {
                // The venue refused it: answered, but not a success.
                Ok(o) if o.get_ref().status() == OrderStatus::Rejected => Outcome::Answer(Answer::Rejected),
                Ok(_) => Outcome::Answer(Answer::Grpc(0)),
                Err(s) => classify(&s),
            };
            *slot = Some(Conn::Submit(client));
            outcome
        };
        Done::now(tokio::time::timeout(timeout, work).await.unwrap_or(Outcome::Error(ErrorKind::Timeout)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_addresses_are_http_urls() {
        assert!(endpoint("127.0.0.1:50051").is_err());
        assert!(endpoint("https://127.0.0.1:50051").is_err());
        assert!(endpoint("http://127.0.0.1:50051").is_ok());
    }

    #[test]
    fn a_status_the_server_sent_is_an_answer() {
        let s = tonic::Status::resource_exhausted("queue full");
        assert_eq!(classify(&s), Outcome::Answer(Answer::Grpc(8)));
        let io = std::io::Error::from(std::io::ErrorKind::ConnectionReset);
        let broken = tonic::Status::from_error(Box::new(io));
        assert_eq!(classify(&broken), Outcome::Error(ErrorKind::Reset));
    }
}
