//! The dispatcher from the engine's side: every call runs in its own task and
//! its result comes back to the engine as an [`Outcome`] through one bounded
//! channel, so the engine never waits on the network (a slow exchange delays
//! only its own answer) and what was sent is always decided inside the engine.
//! The channel's senders wait when it is full: no outcome is ever dropped.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use sluice_domain::Symbol;
use sluice_proto::dispatcher::v1::dispatcher_client::DispatcherClient;
use sluice_proto::dispatcher::v1::{CallRequest, CallResponse};
use sluice_service::credentials::Bearer;
use tokio::sync::mpsc;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::Channel;

use crate::config::AccountId;
use crate::venue::{Sent, classify};

pub type Dispatcher = DispatcherClient<InterceptedService<Channel, Bearer>>;

/// The answers to several calls read together; `Err` when any of them got none
/// (a failed query is never read as "nothing there").
pub type Answers = Result<Vec<(u16, Vec<u8>)>, String>;

/// What came back.
#[derive(Debug)]
pub enum Outcome {
    /// The answer to an order's creation.
    Created {
        cid: String,
        sent: Sent,
    },
    /// The answer to a cancel.
    Cancel {
        cid: String,
        sent: Sent,
    },
    /// Where an order stands.
    Queried {
        cid: String,
        answers: Answers,
    },
    Rules {
        account: AccountId,
        symbol: Symbol,
        answers: Answers,
    },
    Balances {
        account: AccountId,
        answers: Answers,
    },
    OpenOrders {
        account: AccountId,
        symbol: Symbol,
        answers: Answers,
    },
}

/// Calls through the dispatcher, answered as [`Outcome`]s.
#[derive(Clone)]
pub struct Live {
    client: Dispatcher,
    tx: mpsc::Sender<Outcome>,
    /// Each call's timeout, queueing for budget included.
    timeout: Duration,
    /// Calls sent whose outcome the engine has not been handed yet.
    in_flight: Arc<AtomicUsize>,
}

impl Live {
    pub fn new(client: Dispatcher, tx: mpsc::Sender<Outcome>, timeout: Duration) -> Live {
        Live { client, tx, timeout, in_flight: Arc::default() }
    }

    /// Calls sent whose outcome is not yet in the engine's channel.
    pub fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::Acquire)
    }

    fn with_timeout(&self, mut r: CallRequest) -> tonic::Request<CallRequest> {
        r.timeout = prost_types::Duration::try_from(self.timeout).ok();
        let mut req = tonic::Request::new(r);
        // The gRPC deadline a little past the dispatcher's own, so its answer
        // (DEADLINE_EXCEEDED "not sent", or the exchange's) is the one we read.
        req.set_timeout(self.timeout + Duration::from_secs(2));
        req
    }

    async fn one(&self, r: CallRequest) -> Result<CallResponse, tonic::Status> {
        let mut c = self.client.clone();
        c.call(self.with_timeout(r)).await.map(tonic::Response::into_inner)
    }

    /// Sends the calls together; answered only if every one was.
    async fn many(&self, calls: Vec<CallRequest>) -> Answers {
        let results = futures::future::join_all(calls.into_iter().map(|c| self.one(c))).await;
        results
            .into_iter()
            .map(|r| match classify(r) {
                Sent::Answered { status, body } => Ok((status, body)),
                Sent::NotSent(why) | Sent::Unknown(why) => Err(why),
            })
            .collect()
    }

    /// Runs a dispatcher call on its own, in the span it was asked in (so the
    /// call carries that span's trace to the dispatcher).
    fn spawn(&self, f: impl std::future::Future<Output = Outcome> + Send + 'static) {
        let tx = self.tx.clone();
        let in_flight = self.in_flight.clone();
        in_flight.fetch_add(1, Ordering::AcqRel);
        tokio::spawn(tracing::Instrument::in_current_span(async move {
            let outcome = f.await;
            // Only a stopped engine closes the channel: nothing is left to tell.
            let _ = tx.send(outcome).await;
            in_flight.fetch_sub(1, Ordering::AcqRel);
        }));
    }

    pub fn create(&self, cid: String, req: CallRequest) {
        let me = self.clone();
        self.spawn(async move { Outcome::Created { cid, sent: classify(me.one(req).await) } });
    }

    pub fn cancel(&self, cid: String, req: CallRequest) {
        let me = self.clone();
        self.spawn(async move { Outcome::Cancel { cid, sent: classify(me.one(req).await) } });
    }

    pub fn query(&self, cid: String, calls: Vec<CallRequest>) {
        let me = self.clone();
        self.spawn(async move { Outcome::Queried { cid, answers: me.many(calls).await } });
    }

    pub fn rules(&self, account: AccountId, symbol: Symbol, calls: Vec<CallRequest>) {
        let me = self.clone();
        self.spawn(async move { Outcome::Rules { account, symbol, answers: me.many(calls).await } });
    }

    pub fn balances(&self, account: AccountId, call: CallRequest) {
        let me = self.clone();
        self.spawn(async move { Outcome::Balances { account, answers: me.many(vec![call]).await } });
    }

    pub fn open_orders(&self, account: AccountId, symbol: Symbol, call: CallRequest) {
        let me = self.clone();
        self.spawn(async move { Outcome::OpenOrders { account, symbol, answers: me.many(vec![call]).await } });
    }
}
