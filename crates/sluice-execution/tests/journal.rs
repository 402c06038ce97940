//! The order journal on a real nats-server: entries come back in order after a
//! restart, a retried write is stored once, and a second writer on the same
//! order is refused instead of interleaving.

use std::time::Duration;

use sluice_execution::journal::{Journal, JournalError, subject};
use sluice_proto::execution::v1 as pb;
use sluice_testkit::Nats;

fn entry(cid: &str, seq: u64, event: &str) -> pb::JournalEntry {
    pb::JournalEntry {
        client_order_id: cid.into(),
        seq,
        time_unix_ns: seq as i64,
        entry: Some(if seq == 1 {
            pb::journal_entry::Entry::Intent(pb::Order { client_order_id: cid.into(), quantity: "1".into(), ..Default::default() })
        } else {
            pb::journal_entry::Entry::Transition(pb::Transition { event: event.into(), ..Default::default() })
        }),
        then: None,
    }
}

async fn open(nats: &Nats) -> Journal {
    let client = async_nats::connect(nats.url()).await.unwrap();
    Journal::open(async_nats::jetstream::new(client), "ORDERS", Duration::from_secs(3600)).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn entries_replay_in_order_retries_store_once_and_a_second_writer_is_refused() {
    let nats = Nats::start().await.unwrap();
    let a = subject("upbit", "demo", "sl0001");
    let b = subject("upbit", "demo", "sl0002");
    let mut j = open(&nats).await;
    assert!(j.replay().await.unwrap().is_empty());
    j.append(&a, &entry("sl0001", 1, "")).await.unwrap();
    j.append(&b, &entry("sl0002", 1, "")).await.unwrap();
    j.append(&a, &entry("sl0001", 2, "submit")).await.unwrap();
    // The same entry again (its acknowledgement was lost): stored once.
    j.append(&a, &entry("sl0001", 2, "submit")).await.unwrap();

    // A restarted process sees everything, in order, and goes on from there.
    let mut j2 = open(&nats).await;
    let replayed = j2.replay().await.unwrap();
    let seen: Vec<(String, u64)> = replayed.iter().map(|(s, e)| (s.clone(), e.seq)).collect();
    assert_eq!(seen, vec![(a.clone(), 1), (b.clone(), 1), (a.clone(), 2)]);
    j2.append(&a, &entry("sl0001", 3, "accepted")).await.unwrap();

    // The first process, unaware, writes a different entry on the same order:
    // refused, never interleaved.
    let e = j.append(&a, &entry("sl0001", 3, "rejected")).await.unwrap_err();
    assert!(matches!(e, JournalError::Conflict { .. }), "{e}");
    let mut j3 = open(&nats).await;
    let events: Vec<String> = j3
        .replay()
        .await
        .unwrap()
        .into_iter()
        .filter(|(s, _)| *s == a)
        .filter_map(|(_, e)| match e.entry {
            Some(pb::journal_entry::Entry::Transition(t)) => Some(t.event),
            _ => None,
        })
        .collect();
    assert_eq!(events, vec!["submit".to_owned(), "accepted".to_owned()]);
}
