//! The schema registry as the runtime sees it, on the real broker: an outage holds the
//! affected records — nothing is dead-lettered — and processing resumes when the registry
//! returns; a schema the registry refuses stops the process once, saying why.

mod broker;
mod registry;

use std::time::{Duration, Instant};

use broker::*;
use campaign_connector::codec::Codec;
use campaign_connector::model::InteractionKind::*;
use campaign_connector::model::{InputEvent, Interaction, SendCommand, UserEvent, UserEventType};
use rdkafka::producer::{BaseRecord, Producer};
use registry::FakeRegistry;

fn confluent_world(name: &str, registry: &FakeRegistry) -> World {
    let mut w = World::new(name, 2);
    w.set("ENCODING__FORMAT", "confluent");
    w.set("ENCODING__REGISTRY_URL", &registry.url);
    w.set("ENCODING__REGISTRY_TIMEOUT_MS", "500");
    w
}

fn push_open(id: &str, user: &str) -> Interaction {
    let InputEvent::Interaction(i) =
        interaction(id, user, "free-shipping", PushDirectOpen, now_ms())
    else {
        unreachable!()
    };
    i
}

#[test]
fn a_registry_outage_holds_records_and_processing_resumes_when_it_returns() {
    let registry = FakeRegistry::start();
    let w = confluent_world("registry-outage", &registry);
    w.create_topics();
    w.publish(PROMO_CHAIN);
    let mut instance = w.start("i0");
    instance.wait_log("task restored", Duration::from_secs(60));
    let interactions =
        Codec::<Interaction>::new(w.topic("interactions"), &registry.settings()).unwrap();
    let commands_codec =
        Codec::<SendCommand>::new(w.topic("send-commands"), &registry.settings()).unwrap();
    let users_sent = |reader: &broker::Reader| -> Vec<String> {
        let mut users: Vec<String> = reader
            .records
            .iter()
            .map(|r| {
                commands_codec
                    .decode(r.payload.as_deref().unwrap())
                    .unwrap()
                    .user_id
            })
            .collect();
        users.sort();
        users
    };

    // The registry answers: olga's record is read, her command goes out.
    w.send_raw(
        "interactions",
        "olga",
        &interactions.encode(&push_open("o1", "olga")).unwrap(),
    );
    let mut commands = w.send_commands();
    commands.until_count(1, Duration::from_secs(60));
    // (Reading it also teaches this test's own decoder the command schema's id, so that
    // the test can read commands while the registry is away.)
    assert_eq!(users_sent(&commands), ["olga"]);

    // The registry goes away; pat's record names a writer schema id the connector has not
    // seen yet, so it cannot be decoded without the registry.
    let schema = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/schemas/interaction.avsc"
    ))
    .unwrap();
    let new_id = registry.add(&schema);
    let mut bytes = interactions.encode(&push_open("p1", "pat")).unwrap();
    bytes[1..5].copy_from_slice(&new_id.to_be_bytes());
    registry.fail_with(Some(503));
    let outage = Instant::now();
    w.send_raw("interactions", "pat", &bytes);
    instance.wait_log(
        "the schema registry does not answer",
        Duration::from_secs(60),
    );
    // Held, not dead-lettered, not lost, and the process is still there.
    let mut dlq = w.reader("dlq");
    assert!(
        dlq.read_to_end(Duration::from_secs(30)).is_empty(),
        "dead-lettered during the outage"
    );
    commands.read_to_end(Duration::from_secs(30));
    assert_eq!(users_sent(&commands), ["olga"]);
    assert!(
        instance.child_running(),
        "the connector exited during the outage"
    );

    registry.fail_with(None);
    commands.until_count(2, Duration::from_secs(60));
    println!(
        "processing resumed {:?} after the outage began",
        outage.elapsed()
    );
    assert_eq!(instance.stop(Duration::from_secs(30)), Some(0));
    commands.read_to_end(Duration::from_secs(30));
    assert_eq!(users_sent(&commands), ["olga", "pat"]);
    assert!(
        dlq.read_to_end(Duration::from_secs(30)).is_empty(),
        "nothing dead-lettered"
    );
}

#[test]
fn an_output_schema_the_registry_refuses_stops_the_process_once_with_the_cause() {
    let registry = FakeRegistry::start();
    let mut w = World::new("registry-refuses", 2);
    // Only send-commands use the registry, which refuses their schema (409).
    w.set("ENCODINGS__SEND_COMMANDS__FORMAT", "confluent");
    w.set("ENCODINGS__SEND_COMMANDS__REGISTRY_URL", &registry.url);
    w.create_topics();
    w.publish(PROMO_CHAIN);
    registry.fail_with(Some(409));
    let mut instance = w.start("i0");
    instance.wait_log("task restored", Duration::from_secs(60));
    w.send_events(&[interaction(
        "o1",
        "olga",
        "free-shipping",
        PushDirectOpen,
        now_ms(),
    )]);
    let code = wait_for("the connector to stop", Duration::from_secs(60), || {
        instance.child.try_wait().unwrap().map(|s| s.code())
    });
    assert_ne!(code, Some(0), "a refused schema is an error exit");
    let log = instance.log_text();
    let send_commands = w.topic("send-commands");
    assert!(
        log.contains("refused") && log.contains(&send_commands),
        "the exit message names the refusal and the topic:\n{log}"
    );
    assert_eq!(
        log.matches("stopping: retrying cannot fix this").count(),
        1,
        "stopped once, not in a loop:\n{log}"
    );
    assert!(
        w.send_commands()
            .read_to_end(Duration::from_secs(30))
            .is_empty(),
        "nothing was committed"
    );
}

/// A stop that comes while the catalog is still being read at start-up — here the registry
/// does not answer for the catalog's schema, so the read waits — is a clean stop (exit 0),
/// like a stop at any other moment.
#[test]
fn a_stop_while_the_catalog_waits_for_the_registry_is_a_clean_stop() {
    let registry = FakeRegistry::start();
    let mut w = World::new("registry-catalog-stop", 2);
    w.set("ENCODINGS__CAMPAIGNS__FORMAT", "confluent");
    w.set("ENCODINGS__CAMPAIGNS__REGISTRY_URL", &registry.url);
    w.set("ENCODINGS__CAMPAIGNS__REGISTRY_TIMEOUT_MS", "500");
    w.create_topics();
    w.publish(PROMO_CHAIN);
    registry.fail_with(Some(503));
    let instance = w.start("i0");
    instance.wait_log(
        "catalog record cannot be decoded now",
        Duration::from_secs(60),
    );
    assert_eq!(instance.stop(Duration::from_secs(30)), Some(0));
}

/// A restart while the registry is away, with the changelog written through it: the new
/// process cannot decode its changelog yet, so the restore waits (read again from where it
/// stopped, records of every partition in the same read kept) and completes when the
/// registry returns — every pending timer restored once, and each fires once.
#[test]
fn a_restore_waits_for_the_registry_and_keeps_every_changelog_record() {
    let registry = FakeRegistry::start();
    let mut w = World::new("registry-restore", 2);
    w.set("ENCODINGS__CHANGELOG__FORMAT", "confluent");
    w.set("ENCODINGS__CHANGELOG__REGISTRY_URL", &registry.url);
    w.set("ENCODINGS__CHANGELOG__REGISTRY_TIMEOUT_MS", "500");
    // One member restores both tasks through one reader.
    w.set("PROCESSING_THREADS", "1");
    w.create_topics();
    w.publish(&cart_campaigns("25s"));
    // Each changelog partition begins with tombstones of users nobody knows: read without
    // the registry, so that the restore meets its first undecodable record part way
    // through a read, with records of both partitions read with it.
    let producer = w.producer();
    let changelog = w.topic("changelog");
    for p in 0..2 {
        for i in 0..50 {
            let key = format!("u/ghost-{p}-{i}");
            let record: BaseRecord<'_, str, [u8]> =
                BaseRecord::to(&changelog).key(key.as_str()).partition(p);
            producer.send(record).map_err(|(e, _)| e).unwrap();
        }
    }
    producer.flush(Duration::from_secs(30)).unwrap();
    let instance = w.start("i0");
    instance.wait_log("task restored", Duration::from_secs(60));
    // Users on both partitions, each with one pending timer.
    let users: Vec<String> = (0..12).map(|i| format!("user-{i}")).collect();
    let t = now_ms();
    let events: Vec<InputEvent> = users
        .iter()
        .map(|u| interaction(&format!("{u}-c"), u, "abandoned-cart", PushReceived, t))
        .collect();
    w.send_events(&events);
    let mut decisions = w.reader("decisions");
    decisions.until_count(users.len(), Duration::from_secs(60));
    assert_eq!(instance.stop(Duration::from_secs(30)), Some(0));
    // What the restore must read: every changelog record once, none twice.
    let written: Vec<usize> = {
        let mut changelog = w.reader("changelog");
        let records = changelog.read_to_end(Duration::from_secs(30));
        (0..2)
            .map(|p| records.iter().filter(|r| r.partition == p).count())
            .collect()
    };

    registry.fail_with(Some(503));
    let mut again = w.start("i0");
    // Both tasks meet it (each partition is sought back and read again) before the
    // registry returns.
    wait_for(
        "both changelog partitions waiting for the registry",
        Duration::from_secs(60),
        || {
            let log = again.log_text();
            (0..2)
                .all(|p| {
                    log.lines().any(|l| {
                        l.contains("changelog record cannot be decoded now")
                            && l.contains(&format!("partition={p} "))
                    })
                })
                .then_some(())
        },
    );
    assert!(
        again.child_running(),
        "the connector exited during the outage"
    );
    registry.fail_with(None);

    let mut commands = w.send_commands();
    commands.until_count(users.len(), Duration::from_secs(90));
    let log = again.log_text();
    for (p, n) in written.iter().enumerate() {
        let line = format!("task restored task={p} records={n} ");
        assert!(log.contains(&line), "no `{line}` in the log:\n{log}");
    }
    assert_eq!(again.stop(Duration::from_secs(30)), Some(0));
    commands.read_to_end(Duration::from_secs(30));
    let mut sent: Vec<String> = commands
        .records
        .iter()
        .map(|r| r.key.clone().expect("a command's key"))
        .collect();
    sent.sort();
    let mut expected = users.clone();
    expected.sort();
    assert_eq!(sent, expected, "each pending timer fired once");
    assert!(
        w.reader("dlq")
            .read_to_end(Duration::from_secs(10))
            .is_empty(),
        "nothing dead-lettered"
    );
}

/// The sum of `connector_input_buffered_records` over the partitions of `topic` in a
/// `/metrics` body.
fn buffered(metrics: &str, topic: &str) -> i64 {
    let label = format!("topic=\"{topic}\"");
    metrics
        .lines()
        .filter(|l| l.starts_with("connector_input_buffered_records{") && l.contains(&label))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<i64>().ok())
        .sum()
}

/// A task whose next record waits for the registry takes nothing until it answers; the
/// records behind that one are buffered up to a bound (the input is paused above 20,000
/// decoded records), not for as long as the outage lasts — and every one of them is
/// processed once the registry is back.
#[test]
fn a_task_held_by_a_registry_outage_buffers_a_bounded_number_of_records() {
    const BEHIND: usize = 40_000;
    let registry = FakeRegistry::start();
    let mut w = World::new("registry-bound", 1);
    w.set("ENCODING__FORMAT", "confluent");
    w.set("ENCODING__REGISTRY_URL", &registry.url);
    w.set("ENCODING__REGISTRY_TIMEOUT_MS", "500");
    let http = format!("127.0.0.1:{}", free_port());
    w.set("HTTP_LISTEN", &http);
    // One member: a second one joining during the outage would move the task, whose
    // restore then waits for the registry too.
    w.set("PROCESSING_THREADS", "1");
    w.create_topics();
    w.publish(PROMO_CHAIN);
    let mut instance = w.start("i0");
    instance.wait_log("task restored", Duration::from_secs(60));
    w.stable_group(1, Duration::from_secs(60));
    let interactions =
        Codec::<Interaction>::new(w.topic("interactions"), &registry.settings()).unwrap();
    // A first record while the registry answers: its writer schema is known from then on.
    w.send_raw(
        "interactions",
        "olga",
        &interactions.encode(&push_open("o1", "olga")).unwrap(),
    );
    let user_events =
        Codec::<UserEvent>::new(w.topic("user-events"), &registry.settings()).unwrap();
    let session = |n: usize| {
        let InputEvent::UserEvent(e) = user_event(
            &format!("s{n}"),
            &format!("s{n:05}"),
            UserEventType::SessionStart,
            None,
            now_ms(),
        ) else {
            unreachable!()
        };
        user_events.encode(&e).unwrap()
    };
    w.send_raw("user-events", "s00000", &session(0));
    let mut commands = w.send_commands();
    commands.until_count(1, Duration::from_secs(60));

    // The registry goes away; pat's record names a schema id not seen yet and holds the
    // task. Many records the connector could decode come after it, on both inputs (so
    // that neither waits for the other: the task is held by the registry alone).
    let schema = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/schemas/interaction.avsc"
    ))
    .unwrap();
    let new_id = registry.add(&schema);
    let mut held = interactions.encode(&push_open("p1", "pat")).unwrap();
    held[1..5].copy_from_slice(&new_id.to_be_bytes());
    registry.fail_with(Some(503));
    let topic = w.topic("interactions");
    let producer = w.producer();
    producer
        .send(BaseRecord::to(&topic).key("pat").payload(&held))
        .unwrap();
    let sessions = w.topic("user-events");
    for n in 1..=BEHIND {
        let user = format!("u{n:05}");
        let bytes = interactions
            .encode(&push_open(&format!("e{n}"), &user))
            .unwrap();
        let other = format!("s{n:05}");
        let session = session(n);
        for (topic, key, bytes) in [(&topic, &user, &bytes), (&sessions, &other, &session)] {
            loop {
                match producer.send(BaseRecord::to(topic).key(key).payload(bytes)) {
                    Ok(()) => break,
                    Err(_) => producer.poll(Duration::from_millis(10)),
                }
            }
        }
    }
    producer.flush(Duration::from_secs(60)).unwrap();
    instance.wait_log(
        "the schema registry does not answer",
        Duration::from_secs(60),
    );

    // The task reads until both inputs reach the bound, then no further while the outage
    // lasts.
    let read = || {
        http_get(&http, "/metrics", None)
            .map(|(_, body)| (buffered(&body, &topic), buffered(&body, &sessions)))
            .unwrap_or((0, 0))
    };
    let reached = wait_for(
        "both inputs at their bound",
        Duration::from_secs(60),
        || {
            let (i, u) = read();
            (i >= 20_000 && u >= 20_000).then_some((i, u))
        },
    );
    let mut most = reached;
    let watching = Instant::now();
    while watching.elapsed() < Duration::from_secs(5) {
        let (i, u) = read();
        most = (most.0.max(i), most.1.max(u));
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(
        most.0 <= 22_001 && most.1 <= 22_001,
        "{most:?} records buffered behind a held record, interactions and user events \
         (bound: 20,000 each and one poll's batch)"
    );
    assert!(
        instance.child_running(),
        "the connector exited during the outage"
    );

    registry.fail_with(None);
    commands.until_count(BEHIND + 2, Duration::from_secs(180));
    assert_eq!(instance.stop(Duration::from_secs(30)), Some(0));
    assert_eq!(
        commands.read_to_end(Duration::from_secs(30)).len(),
        BEHIND + 2,
        "every record behind the held one processed once"
    );
}
