//! A commit in flight while the loop goes on: what is produced meanwhile is held, and
//! reaches the broker — in the order it came — only after the commit has landed, inside
//! the next transaction (exactly-once) or after the flush (at-least-once); an abort drops
//! it. Driven through the runtime's `Output` against the real broker.

mod broker;

use std::time::Duration;

use broker::*;
use campaign_connector::runtime::config::{load, Settings};
use campaign_connector::runtime::output::Output;
use rdkafka::consumer::BaseConsumer;
use rdkafka::TopicPartitionList;

fn settings(w: &World, guarantee: &str) -> Settings {
    let mut env = w.env.clone();
    env.insert(
        "CONNECTOR_PROCESSING_GUARANTEE".into(),
        guarantee.to_string(),
    );
    env.insert("CONNECTOR_INSTANCE_ID".into(), "commit-test".into());
    load(None, env).expect("settings")
}

/// A consumer for the calls that take one; nothing here commits offsets through it.
fn consumer(w: &World) -> BaseConsumer {
    w.client_config()
        .set("group.id", format!("commit-test-{}", w.id))
        .create()
        .unwrap()
}

fn send(out: &mut Output, w: &World, payload: &str) {
    out.forward(&w.topic("dlq"), 0, Some(b"k"), Some(payload.as_bytes()))
        .unwrap();
}

fn payloads(reader: &mut Reader) -> Vec<String> {
    reader
        .records
        .iter()
        .map(|r| String::from_utf8_lossy(r.payload.as_deref().unwrap_or_default()).into_owned())
        .collect()
}

/// Commits what was produced so far and waits for it.
fn commit(out: &mut Output, consumer: &BaseConsumer) {
    let none = TopicPartitionList::new();
    if out.start_commit(consumer, &none).unwrap() {
        out.land(true).expect("in flight").expect("commit landed");
        out.release().unwrap();
    }
}

fn held_until_the_commit_in_flight_has_landed(guarantee: &str) {
    let w = World::new(&format!("held-{}", guarantee.replace('_', "-")), 1);
    w.create_topics();
    let consumer = consumer(&w);
    let mut out = Output::new(&settings(&w, guarantee)).unwrap();
    let none = TopicPartitionList::new();

    send(&mut out, &w, "1");
    assert!(
        out.start_commit(&consumer, &none).unwrap(),
        "work to commit"
    );
    assert!(out.committing());
    send(&mut out, &w, "2");
    send(&mut out, &w, "3");
    assert!(out.held_bytes() > 0, "produced during the commit: held");

    out.land(true).expect("in flight").expect("commit landed");
    // Landed, not yet released: only the record before the commit is anywhere in the topic,
    // committed or not.
    let mut everything = w.uncommitted_reader("dlq");
    everything.drain(Duration::from_secs(2));
    assert_eq!(payloads(&mut everything), ["1"]);

    out.release().unwrap();
    assert_eq!(out.held_bytes(), 0);
    send(&mut out, &w, "4");
    commit(&mut out, &consumer);
    let mut reader = w.reader("dlq");
    reader.read_to_end(Duration::from_secs(30));
    assert_eq!(payloads(&mut reader), ["1", "2", "3", "4"]);
}

#[test]
fn exactly_once_records_produced_during_a_commit_join_the_next_transaction_in_order() {
    held_until_the_commit_in_flight_has_landed("exactly_once");
}

#[test]
fn at_least_once_records_produced_during_a_flush_follow_it_in_order() {
    held_until_the_commit_in_flight_has_landed("at_least_once");
}

#[test]
fn an_abort_drops_the_records_held_for_after_the_commit_in_flight() {
    let w = World::new("held-abort", 1);
    w.create_topics();
    let consumer = consumer(&w);
    let s = settings(&w, "exactly_once");
    let mut out = Output::new(&s).unwrap();
    let none = TopicPartitionList::new();

    send(&mut out, &w, "1");
    assert!(out.start_commit(&consumer, &none).unwrap());
    send(&mut out, &w, "dropped");
    // The abort waits for the commit in flight (it went through: "1" stays committed) and
    // drops what was held for after it.
    out.abort(&s, false).unwrap();
    assert!(!out.committing());
    assert_eq!(out.held_bytes(), 0);
    send(&mut out, &w, "2");
    commit(&mut out, &consumer);

    let mut reader = w.reader("dlq");
    reader.read_to_end(Duration::from_secs(30));
    assert_eq!(payloads(&mut reader), ["1", "2"]);
    let mut everything = w.uncommitted_reader("dlq");
    everything.drain(Duration::from_secs(2));
    assert!(
        !payloads(&mut everything).iter().any(|p| p == "dropped"),
        "a held record reached the broker: {:?}",
        payloads(&mut everything)
    );
}
