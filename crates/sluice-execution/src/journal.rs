//! The order journal: every intent and transition of every order, written to the
//! JetStream stream ORDERS (subject `orders.<exchange>.<account>.<client order id>`)
//! and acknowledged *before* the service acts on it. State is rebuilt from it at
//! start, so a kill -9 at any instant loses nothing: what was acted on was
//! journaled, and an intent journaled but not acted on is found and resolved.
//!
//! Two guards against writing twice or out of order, since `Nats-Msg-Id` alone
//! only de-duplicates within the stream's window (two minutes by default):
//!
//! * each entry carries the expected last sequence *of its subject*: a write that
//!   raced another, or repeats one already stored, is refused by the server;
//! * a publish that timed out may have been stored: it is retried with the same
//!   message id, and a "duplicate" answer or a "wrong last sequence" refusal is
//!   checked against what is stored: if that is this very entry, it was stored;
//!   anything else is a conflict (another writer), never taken as success.

use std::collections::HashMap;
use std::time::Duration;

use async_nats::jetstream::{self, context::Publish, stream};
use futures::StreamExt;
use prost::Message;
use sluice_proto::execution::v1 as pb;

/// Why the journal could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("journal stream {stream}: {message}")]
    Stream { stream: String, message: String },
    #[error("journal write to {subject} not acknowledged: {message}")]
    Write { subject: String, message: String },
    #[error(
        "journal subject {subject} was written by someone else (expected sequence {expected}); another execution process may be running"
    )]
    Conflict { subject: String, expected: u64 },
    #[error("journal entry on {subject} cannot be decoded: {message}")]
    Decode { subject: String, message: String },
}

/// The subject of an order's journal.
pub fn subject(exchange: &str, account: &str, client_order_id: &str) -> String {
    format!("orders.{exchange}.{account}.{client_order_id}")
}

/// The journal, with the last stream sequence of every subject written or read.
pub struct Journal {
    js: jetstream::Context,
    stream: stream::Stream,
    name: String,
    last: HashMap<String, u64>,
    /// How long one write may wait for its acknowledgement.
    ack_timeout: Duration,
}

impl Journal {
    /// Opens (creating when missing) the stream `name` on `orders.>`.
    pub async fn open(js: jetstream::Context, name: &str, max_age: Duration) -> Result<Journal, JournalError> {
        let err = |e: String| JournalError::Stream { stream: name.to_owned(), message: e };
        let stream = js
            .get_or_create_stream(stream::Config {
                name: name.to_owned(),
                subjects: vec!["orders.>".into()],
                storage: stream::StorageType::File,
                max_age,
                // An order's history is never dropped for room: a full stream
                // refuses writes, and the service stops acting rather than forget.
                discard: stream::DiscardPolicy::New,
                duplicate_window: Duration::from_secs(120),
                ..Default::default()
            })
            .await
            .map_err(|e| err(e.to_string()))?;
        Ok(Journal { js, stream, name: name.to_owned(), last: HashMap::new(), ack_timeout: Duration::from_secs(5) })
    }

    /// Every entry in the stream, in order (what the service rebuilds from).
    pub async fn replay(&mut self) -> Result<Vec<(String, pb::JournalEntry)>, JournalError> {
        let name = self.name.clone();
        let err = |e: String| JournalError::Stream { stream: name.clone(), message: e };
        let state = self.stream.info().await.map_err(|e| err(e.to_string()))?.state.clone();
        let total = state.messages;
        let mut out = Vec::with_capacity(total as usize);
        if total == 0 {
            return Ok(out);
        }
        let consumer = self
            .stream
            .create_consumer(jetstream::consumer::push::OrderedConfig {
                deliver_subject: format!("_INBOX.orders-replay.{}", uuid::Uuid::new_v4().simple()),
                filter_subject: "orders.>".into(),
                ..Default::default()
            })
            .await
            .map_err(|e| err(e.to_string()))?;
        let last_seq = state.last_sequence;
        let mut messages = consumer.messages().await.map_err(|e| err(e.to_string()))?;
        while let Some(m) =
            tokio::time::timeout(Duration::from_secs(10), messages.next()).await.map_err(|_| err("replay stalled".into()))?
        {
            let m = m.map_err(|e| err(e.to_string()))?;
            let seq = m.info().map(|i| i.stream_sequence).map_err(|e| err(e.to_string()))?;
            let subject = m.subject.to_string();
            let entry = pb::JournalEntry::decode(m.payload.clone())
                .map_err(|e| JournalError::Decode { subject: subject.clone(), message: e.to_string() })?;
            self.last.insert(subject.clone(), seq);
            out.push((subject, entry));
            if seq >= last_seq {
                break;
            }
        }
        Ok(out)
    }

    /// Appends `entry` to `subject` and waits for the acknowledgement.
    pub async fn append(&mut self, subject: &str, entry: &pb::JournalEntry) -> Result<(), JournalError> {
        let expected = self.last.get(subject).copied().unwrap_or(0);
        let msg_id = format!("{}:{}", entry.client_order_id, entry.seq);
        let payload = bytes::Bytes::from(entry.encode_to_vec());
        let write_err = |m: String| JournalError::Write { subject: subject.to_owned(), message: m };
        let mut last_error = String::new();
        for attempt in 0..3 {
            if attempt > 0 {
                tokio::time::sleep(Duration::from_millis(200 * attempt)).await;
            }
            let publish = Publish::build().payload(payload.clone()).message_id(&msg_id).expected_last_subject_sequence(expected);
            let sent = async { self.js.send_publish(subject.to_owned(), publish).await?.await };
            match tokio::time::timeout(self.ack_timeout, sent).await {
                Ok(Ok(ack)) if ack.duplicate => {
                    // Its message id was stored before: by an earlier attempt of this
                    // write (fine), or by another writer with other content (a conflict).
                    return match self.stream.get_raw_message(ack.sequence).await {
                        Ok(m) if m.payload == payload => {
                            self.last.insert(subject.to_owned(), ack.sequence);
                            Ok(())
                        }
                        Ok(_) => Err(JournalError::Conflict { subject: subject.to_owned(), expected }),
                        Err(e) => Err(write_err(format!("after a duplicate, reading the stored entry: {e}"))),
                    };
                }
                Ok(Ok(ack)) => {
                    self.last.insert(subject.to_owned(), ack.sequence);
                    return Ok(());
                }
                Ok(Err(e)) if e.kind() == jetstream::context::PublishErrorKind::WrongLastSequence => {
                    // Stored by an earlier attempt whose acknowledgement was lost, or
                    // written by someone else: the subject's last message says which.
                    return match self.stream.get_last_raw_message_by_subject(subject).await {
                        Ok(m) if m.payload == payload => {
                            self.last.insert(subject.to_owned(), m.sequence);
                            Ok(())
                        }
                        Ok(_) => Err(JournalError::Conflict { subject: subject.to_owned(), expected }),
                        Err(e) => Err(write_err(format!("after a sequence conflict, reading the subject: {e}"))),
                    };
                }
                Ok(Err(e)) => last_error = e.to_string(),
                Err(_) => last_error = format!("no acknowledgement within {} ms", self.ack_timeout.as_millis()),
            }
        }
        Err(write_err(last_error))
    }
}
