//! A long restore never blocks the instance: while a fresh process restores many pending
//! timers from the changelog, `/healthz` answers 200 with a loop that ran moments ago,
//! `/readyz` answers 503 with the restore's progress, and only once every timer is back
//! does it turn 200. The restore time is printed.
//!
//! `RESTORE_TIMERS` sets the number of timers (default 100,000; `scripts/restore-check.sh`
//! runs it in release mode with 2,000,000).

mod broker;

use std::time::{Duration, Instant};

use broker::*;
use campaign_connector::codec::{Codec, EncodingSettings};
use campaign_connector::model::{InputEvent, Interaction, InteractionKind::*};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseRecord, Producer};

fn timers() -> usize {
    std::env::var("RESTORE_TIMERS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100_000)
}

/// Produces one trigger per user, fast (the local queue is drained when full).
fn produce_triggers(w: &World, users: usize, t: i64) {
    let producer = w.producer();
    let codec: Codec<Interaction> =
        Codec::new(w.topic("interactions"), &EncodingSettings::avro()).unwrap();
    let topic = w.topic("interactions");
    for i in 0..users {
        let user = format!("user-{i:08}");
        let InputEvent::Interaction(event) =
            interaction(&format!("t-{i}"), &user, "abandoned-cart", PushReceived, t)
        else {
            unreachable!()
        };
        let bytes = codec.encode(&event).unwrap();
        let mut record = BaseRecord::to(&topic).key(&user).payload(&bytes);
        loop {
            match producer.send(record) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                    record = r;
                    producer.poll(Duration::from_millis(5));
                }
                Err((e, _)) => panic!("producing: {e}"),
            }
        }
    }
    producer.flush(Duration::from_secs(120)).unwrap();
}

/// Schedules a pending timer for each of `count` users (`u000`, …) with a first instance,
/// waits until every timer is committed, and stops the instance; returns the users.
fn schedule_and_stop(w: &World, count: usize) -> Vec<String> {
    let first = w.start("i0");
    first.wait_log("task restored", Duration::from_secs(60));
    let users: Vec<String> = (0..count).map(|i| format!("u{i:03}")).collect();
    let t = now_ms();
    w.send_events(
        &users
            .iter()
            .map(|u| interaction(&format!("{u}-t"), u, "abandoned-cart", PushReceived, t))
            .collect::<Vec<_>>(),
    );
    wait_scheduled(w, users.len());
    assert_eq!(first.stop(Duration::from_secs(60)), Some(0));
    users
}

/// A transactional producer of the world's with a transaction begun: a predecessor whose
/// transaction is still open. (Its timeout is long enough for a slow machine: the broker
/// would abort it otherwise.)
fn open_transaction(w: &World) -> rdkafka::producer::BaseProducer {
    let predecessor: rdkafka::producer::BaseProducer = w
        .client_config()
        .set("transactional.id", format!("predecessor-{}", w.id))
        .set("transaction.timeout.ms", "300000")
        .create()
        .unwrap();
    predecessor
        .init_transactions(Duration::from_secs(30))
        .unwrap();
    predecessor.begin_transaction().unwrap();
    predecessor
}

/// The loop's age in a `/healthz` body ("ok: the processing loop ran 12 ms ago").
fn loop_age_ms(body: &str) -> i64 {
    body.split_whitespace()
        .find_map(|w| w.parse().ok())
        .unwrap_or_else(|| panic!("no loop age in {body:?}"))
}

#[test]
fn a_long_restore_keeps_health_live_and_readiness_honest() {
    let n = timers();
    let mut w = World::new("restore", 2);
    w.create_topics();
    w.publish(&cart_campaigns("7d"));
    // Ingest: the connector schedules one timer per user and writes them to the changelog.
    let first = w.start("i0");
    first.wait_log("task restored", Duration::from_secs(60));
    let started = Instant::now();
    produce_triggers(&w, n, now_ms());
    let mut decisions = w.reader("decisions");
    decisions.until_count(n, Duration::from_secs(600));
    println!("ingest of {n} triggers: {:?}", started.elapsed());
    assert_eq!(first.stop(Duration::from_secs(120)), Some(0));
    drop(decisions);

    // A fresh process restores them all.
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    w.set("HTTP_LISTEN", &addr);
    let second = w.start("i0");
    let started = Instant::now();
    let mut restoring_seen = None;
    let mut worst_age = 0;
    let mut health_checks = 0;
    let ready_after = loop {
        assert!(
            started.elapsed() < Duration::from_secs(600),
            "not ready after 10 minutes"
        );
        if let Some((status, body)) = http_get(&addr, "/healthz", None) {
            assert_eq!(status, 200, "/healthz failed during the restore: {body}");
            worst_age = worst_age.max(loop_age_ms(&body));
            health_checks += 1;
        }
        match http_get(&addr, "/readyz", None) {
            Some((200, _)) => break started.elapsed(),
            Some((503, body)) if body.contains("restoring") => {
                restoring_seen.get_or_insert(body);
            }
            _ => {}
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let log = second.log_text();
    let restored: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("task restored"))
        .collect();
    println!("restore of {n} timers: ready after {ready_after:?}; {restored:#?}");
    println!(
        "/healthz checks during the restore: {health_checks}, oldest loop heartbeat {worst_age} ms"
    );
    let progress = restoring_seen.expect("/readyz never reported the restore's progress");
    assert!(progress.contains("changelog records read"), "{progress}");
    assert!(
        health_checks > 0,
        "the HTTP server did not answer during the restore"
    );
    assert!(
        worst_age < 2_000,
        "the loop stalled for {worst_age} ms during the restore"
    );
    // Every timer came back before ready.
    let (status, tasks) = http_get(&addr, "/admin/tasks", None).unwrap();
    assert_eq!(status, 200, "{tasks}");
    let tasks: serde_json::Value = serde_json::from_str(&tasks).unwrap();
    let pending: u64 = tasks["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["pending_timers"].as_u64().unwrap())
        .sum();
    assert_eq!(pending as usize, n);
    assert_eq!(second.stop(Duration::from_secs(120)), Some(0));
}

/// A task's changelog may end in a transaction of its previous owner that is still open, or
/// whose commit returned while its markers are not written yet (the window in which a
/// moved task's new owner starts its restore). The restore waits for that transaction and
/// brings back what it wrote: here the pending timers of twenty users, copied into a fresh
/// world's changelog by a transaction held open, fire once it is committed.
#[test]
fn a_restore_waits_for_the_changelogs_open_transaction_and_keeps_what_it_wrote() {
    // Pending timers in a first world's changelog.
    let source = World::new("restore-source", 1);
    source.create_topics();
    source.publish(&cart_campaigns("25s"));
    let users = schedule_and_stop(&source, 20);
    let mut changelog = source.reader("changelog");
    changelog.read_to_end(Duration::from_secs(60));

    // The same state (users and rule snapshots) in a second world's changelog, written by
    // a transaction that stays open while the connector starts.
    let w = World::new("restore-open-txn", 1);
    w.create_topics();
    w.publish(&cart_campaigns("25s"));
    let predecessor = open_transaction(&w);
    let topic = w.topic("changelog");
    let mut copied = 0;
    for r in &changelog.records {
        let Some(key) = r.key.as_deref() else {
            continue;
        };
        if !(key.starts_with("u/") || key.starts_with("r/")) {
            continue;
        }
        let mut record = BaseRecord::to(&topic).key(key);
        if let Some(payload) = &r.payload {
            record = record.payload(payload);
        }
        predecessor.send(record).map_err(|(e, _)| e).unwrap();
        copied += 1;
    }
    assert!(copied > users.len(), "{copied} changelog records copied");
    predecessor.flush(Duration::from_secs(30)).unwrap();

    let second = w.start("i0");
    // The restore's target counts the open transaction's records (its last stable offset
    // would be 0, and the restore done at once with nothing).
    second.wait_log(
        &format!("partition=0 position=0 high={copied} records=0"),
        Duration::from_secs(60),
    );
    // Until the transaction ends, the restore does not.
    std::thread::sleep(Duration::from_secs(2));
    assert!(
        !second.log_text().contains("task restored"),
        "the task was restored past its changelog's open transaction:\n{}",
        second.log_text()
    );
    predecessor
        .commit_transaction(Duration::from_secs(30))
        .unwrap();
    second.wait_log("task restored", Duration::from_secs(60));
    let mut commands = w.send_commands();
    commands.until_count(users.len(), Duration::from_secs(90));
    assert_eq!(second.stop(Duration::from_secs(60)), Some(0));
    assert_commands(&w, &users.into_iter().collect());
}

/// `connector_restore_records_total` of one task in a `/metrics` body (0 when absent).
fn restored_records(metrics: &str, task: i32) -> u64 {
    let series = format!("connector_restore_records_total{{task=\"{task}\"}} ");
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(series.as_str()))
        .map(|v| v.trim().parse().unwrap())
        .unwrap_or(0)
}

/// A task revoked part way through its restore and handed back by the same rebalance goes
/// on from where it was, not from the changelog's beginning: an instance restores two tasks
/// up to a transaction held open at the end of their changelogs, a second instance joins
/// (every task is revoked, one comes back), and once the transaction commits the task that
/// stayed has read each of its changelog records exactly once — and both instances hold
/// every pending timer.
#[test]
fn a_restore_interrupted_by_a_rebalance_that_keeps_the_task_goes_on_where_it_was() {
    let mut w = World::new("restore-resume", 2);
    w.set("PROCESSING_THREADS", "1");
    w.set("RESTORE_LOG_INTERVAL", "200ms");
    w.create_topics();
    w.publish(&cart_campaigns("7d"));
    let users = schedule_and_stop(&w, 300);
    let mut changelog = w.reader("changelog");
    let committed: Vec<u64> = {
        let records = changelog.read_to_end(Duration::from_secs(60));
        (0..2)
            .map(|p| records.iter().filter(|r| r.partition == p).count() as u64)
            .collect()
    };
    assert!(committed.iter().all(|&n| n > 20), "{committed:?}");

    // A transaction held open at the end of both changelog partitions (a tombstone of a
    // user nobody knows in each): the restores read up to it and wait.
    let predecessor = open_transaction(&w);
    let topic = w.topic("changelog");
    for p in 0..2 {
        let key = format!("u/nobody-{p}");
        let record: BaseRecord<'_, str, [u8]> =
            BaseRecord::to(&topic).key(key.as_str()).partition(p);
        predecessor.send(record).map_err(|(e, _)| e).unwrap();
    }
    predecessor.flush(Duration::from_secs(30)).unwrap();

    let addr0 = format!("127.0.0.1:{}", free_port());
    w.set("HTTP_LISTEN", &addr0);
    let i0 = w.start("i0");
    wait_for(
        "both tasks restored up to the open transaction",
        Duration::from_secs(60),
        || {
            let (_, body) = http_get(&addr0, "/metrics", None)?;
            (0..2)
                .all(|p| restored_records(&body, p) == committed[p as usize])
                .then_some(())
        },
    );
    assert!(!i0.log_text().contains("task restored"));

    // A second instance joins: every task is revoked, one comes back to the first.
    let addr1 = format!("127.0.0.1:{}", free_port());
    w.set("HTTP_LISTEN", &addr1);
    let i1 = w.start("i1");
    i0.wait_log("restore resumed", Duration::from_secs(60));
    let log = i0.log_text();
    let line = log.lines().find(|l| l.contains("restore resumed")).unwrap();
    let kept: i32 = line
        .split_whitespace()
        .find_map(|w| w.strip_prefix("task="))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no task in {line:?}"));
    predecessor
        .commit_transaction(Duration::from_secs(30))
        .unwrap();
    i0.wait_log("task restored", Duration::from_secs(60));
    i1.wait_log("task restored", Duration::from_secs(60));

    // The task that stayed read its committed records once, then the transaction's record.
    let (_, metrics) = http_get(&addr0, "/metrics", None).unwrap();
    assert_eq!(
        restored_records(&metrics, kept),
        committed[kept as usize] + 1,
        "task {kept} restored again from the beginning:\n{log}"
    );
    let pending = |addr: &str| -> u64 {
        let (status, body) = http_get(addr, "/admin/tasks", None).unwrap();
        assert_eq!(status, 200, "{body}");
        let tasks: serde_json::Value = serde_json::from_str(&body).unwrap();
        tasks["tasks"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| t["pending_timers"].as_u64().unwrap())
            .sum()
    };
    let held = wait_for("every timer held", Duration::from_secs(30), || {
        let held = pending(&addr0) + pending(&addr1);
        (held == users.len() as u64).then_some(held)
    });
    assert_eq!(held, users.len() as u64);
    assert_eq!(i0.stop(Duration::from_secs(60)), Some(0));
    assert_eq!(i1.stop(Duration::from_secs(60)), Some(0));
}

/// The restore's batched reader: a stop part way through a read still shows the rest of
/// what that read took from the client (those records left the client's queue; the
/// restore keeps or re-reads them), each record once, and reads no further.
#[test]
fn the_batched_reader_shows_every_record_it_took_once_even_past_a_stop() {
    use campaign_connector::runtime::batch_reader::BatchReader;
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::{Offset, TopicPartitionList};

    let w = World::new("batch-reader", 2);
    w.create_topics();
    let topic = w.topic("changelog");
    let producer = w.producer();
    for p in 0..2 {
        for i in 0..30 {
            let key = format!("k-{p}-{i}");
            let record: BaseRecord<'_, str, [u8]> =
                BaseRecord::to(&topic).key(key.as_str()).partition(p);
            producer.send(record).map_err(|(e, _)| e).unwrap();
        }
    }
    producer.flush(Duration::from_secs(30)).unwrap();

    let consumer: BaseConsumer = w
        .client_config()
        .set("group.id", format!("batch-reader-{}", now_ms()))
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let reader = BatchReader::new(consumer).unwrap();
    let mut tpl = TopicPartitionList::new();
    for p in 0..2 {
        reader.route(&topic, p).unwrap();
        tpl.add_partition_offset(&topic, p, Offset::Beginning)
            .unwrap();
    }
    reader.consumer().assign(&tpl).unwrap();
    // Both partitions' records fetched into the reader's queue.
    wait_for("60 records queued", Duration::from_secs(30), || {
        (reader.queued() >= 60).then_some(())
    });
    let started = Instant::now();

    // Stop at the eleventh record, part way through the first partition queued.
    let mut shown: Vec<(i32, i64, bool)> = Vec::new();
    let mut named_ahead: Vec<Option<(i32, String)>> = Vec::new();
    let seen = reader.read(Duration::from_secs(10), 1_000, |r, leftover, ahead| {
        assert!(r.error.is_none(), "{:?}", r.error);
        assert_eq!(r.topic, topic);
        assert!(r.timestamp.is_some_and(|t| t > 0), "{:?}", r.timestamp);
        assert_eq!(
            r.key.map(|k| String::from_utf8_lossy(k).into_owned()),
            Some(format!("k-{}-{}", r.partition, r.offset))
        );
        shown.push((r.partition, r.offset, leftover));
        named_ahead.push(ahead.map(|(p, k)| (p, String::from_utf8_lossy(k).into_owned())));
        shown.len() != 11
    });
    // The record named ahead is the one shown that many places later.
    for (i, ahead) in named_ahead.iter().enumerate() {
        if let Some((p, key)) = ahead {
            let (q, o, _) = shown[i + campaign_connector::runtime::batch_reader::AHEAD];
            assert_eq!((*p, key.clone()), (q, format!("k-{q}-{o}")));
        }
    }
    assert!(named_ahead.iter().any(Option::is_some));
    assert_eq!(seen, shown.len());
    // Past the first record it took only what was queued, without waiting for more.
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    assert!(seen > 11, "the read took more than it needed: {shown:?}");
    let first = shown[10].0;
    assert!(
        shown[..11].iter().all(|&(p, _, l)| p == first && !l),
        "{shown:?}"
    );
    assert!(shown[11..].iter().all(|&(_, _, l)| l), "{shown:?}");
    assert!(
        shown[11..].iter().any(|&(p, _, _)| p != first),
        "the other partition's records taken with the stop are shown too: {shown:?}"
    );

    // Whatever was not shown comes with the next reads: every record exactly once.
    while shown.len() < 60 {
        let n = reader.read(Duration::from_secs(10), 1_000, |r, _, _| {
            shown.push((r.partition, r.offset, false));
            true
        });
        assert!(n > 0, "records missing: {shown:?}");
    }
    let mut all: Vec<(i32, i64)> = shown.iter().map(|&(p, o, _)| (p, o)).collect();
    all.sort();
    let expected: Vec<(i32, i64)> = (0..2).flat_map(|p| (0..30).map(move |o| (p, o))).collect();
    assert_eq!(all, expected);
}

/// Records keyed `k-0`, `k-1`, … (no value) in partition 0 of `topic`.
fn produce_keys(w: &World, topic: &str, count: usize) {
    let producer = w.producer();
    for i in 0..count {
        let key = format!("k-{i}");
        let record: BaseRecord<'_, str, [u8]> =
            BaseRecord::to(topic).key(key.as_str()).partition(0);
        producer.send(record).map_err(|(e, _)| e).unwrap();
    }
    producer.flush(Duration::from_secs(30)).unwrap();
}

/// A group consumer's batched reader: a wait for records ends as soon as an event (here
/// the group's first assignment) reaches the consumer's own queue, which the caller then
/// serves with `poll`; records of a partition routed to the reader come in its batches.
#[test]
fn a_group_readers_wait_for_records_ends_when_the_consumer_gets_an_event() {
    use campaign_connector::runtime::batch_reader::BatchReader;
    use rdkafka::consumer::{BaseConsumer, Consumer};

    let w = World::new("group-reader", 1);
    w.create_topics();
    let topic = w.topic("changelog");
    produce_keys(&w, &topic, 5);

    let consumer: BaseConsumer = w
        .client_config()
        .set("group.id", format!("group-reader-{}", now_ms()))
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .create()
        .unwrap();
    let reader = BatchReader::for_group(consumer).unwrap();
    // Routed before the group assigns it (as the connector's rebalance callback does).
    reader.route(&topic, 0).unwrap();
    reader.consumer().subscribe(&[topic.as_str()]).unwrap();

    // Nothing is assigned yet, so no record can come: the wait ends with the assignment.
    let started = Instant::now();
    let n = reader.read(Duration::from_secs(60), 100, |r, _, _| {
        panic!("a record before the assignment was served: {:?}", r.offset)
    });
    assert_eq!(n, 0);
    assert!(
        started.elapsed() < Duration::from_secs(30),
        "the wait was not cut short: {:?}",
        started.elapsed()
    );
    assert!(reader.events_queued() > 0);

    // Serving the consumer's queue runs the assignment; the records come in batches.
    let mut keys = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while keys.len() < 5 && Instant::now() < deadline {
        if let Some(m) = reader.consumer().poll(Duration::ZERO) {
            panic!("a routed partition's record came on the consumer's queue: {m:?}");
        }
        reader.read(Duration::from_millis(200), 100, |r, _, _| {
            assert_eq!((r.topic, r.partition), (topic.as_str(), 0));
            keys.push(String::from_utf8_lossy(r.key.unwrap()).into_owned());
            true
        });
    }
    assert_eq!(keys, (0..5).map(|i| format!("k-{i}")).collect::<Vec<_>>());
}

/// A partition routed to a batched reader keeps its records coming there after librdkafka
/// stopped fetching it and started again (an assignment replacing the one before, as a
/// group may hand a member without a revocation): the stop drops the partition's
/// forwarding, and nothing but the reader's own routing forwards it again.
#[test]
fn a_routed_partition_keeps_coming_to_the_reader_after_its_assignment_is_replaced() {
    use campaign_connector::runtime::batch_reader::{BatchReader, REROUTE_EVERY};
    use rdkafka::consumer::{BaseConsumer, Consumer};
    use rdkafka::Message;
    use rdkafka::{Offset, TopicPartitionList};

    let w = World::new("reroute", 1);
    w.create_topics();
    let topic = w.topic("changelog");
    produce_keys(&w, &topic, 10);

    let consumer: BaseConsumer = w
        .client_config()
        .set("group.id", format!("reroute-{}", now_ms()))
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let reader = BatchReader::new(consumer).unwrap();
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(&topic, 0, Offset::Beginning)
        .unwrap();
    reader.route(&topic, 0).unwrap();
    let read_all = |what: &str| {
        let mut offsets = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        while offsets.len() < 10 && Instant::now() < deadline {
            reader.read(Duration::from_millis(200), 100, |r, _, _| {
                assert!(r.error.is_none(), "{:?}", r.error);
                offsets.push(r.offset);
                true
            });
        }
        assert_eq!(offsets, (0..10).collect::<Vec<i64>>(), "{what}");
    };
    reader.consumer().assign(&tpl).unwrap();
    read_all("the first assignment");

    // The same partition assigned again from the beginning: librdkafka stops fetching it
    // (dropping its forwarding, on its own thread) and starts again.
    reader.consumer().assign(&tpl).unwrap();
    let started = Instant::now();
    read_all("the replacing assignment");
    assert!(
        started.elapsed() < Duration::from_secs(10) + REROUTE_EVERY * 10,
        "{:?}",
        started.elapsed()
    );
    assert_eq!(
        reader
            .consumer()
            .poll(Duration::from_millis(100))
            .map(|m| m.map(|m| m.offset())),
        None,
        "a routed partition's record came on the consumer's queue"
    );

    // A partition forgotten is no longer forwarded again: after another replacing
    // assignment its records stay away from the reader.
    reader.unroute(&topic, 0);
    reader.consumer().assign(&tpl).unwrap();
    let mut late = 0;
    let deadline = Instant::now() + REROUTE_EVERY * 20;
    while Instant::now() < deadline {
        late += reader.read(Duration::from_millis(100), 100, |_, _, _| true);
    }
    assert_eq!(late, 0, "an unrouted partition's records still came");
}
