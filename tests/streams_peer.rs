//! The Kafka Streams application of the benchmark suite (`bench/streams-peer/`) implements
//! the same rule as the connector: over one small stream of the benchmark's workload, both
//! produce exactly the send-commands (user, trigger event, due time) that the workload's model
//! of the rule says, on the real broker.
//!
//! Event times lie 10 to 16 minutes ahead of the wall clock, so every send fires by stream
//! time (none by the wall clock while the test runs) and the sets are comparable: those due
//! at least a minute before the end of the stream. The application is fetched and compiled by
//! `scripts/java/streams-peer.sh` (Maven Central, `javac`); without a JDK 17 and Maven the test
//! fails saying so.

mod broker;
#[path = "../benches/common/workload.rs"]
mod workload;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use broker::*;
use campaign_connector::codec::{Codec, EncodingSettings};
use campaign_connector::model::{InputEvent, Interaction, UserEvent};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};
use workload::{campaigns_yaml, Params, Send, Workload};

const EVENTS: u64 = 1_500;
const DELAY_MS: i64 = 60_000;

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// Fetches and compiles the application; its class path. Panics with what is missing.
fn streams_classpath() -> String {
    let out = Command::new(root().join("scripts/java/streams-peer.sh"))
        .current_dir(root())
        .output()
        .unwrap_or_else(|e| panic!("running scripts/java/streams-peer.sh: {e}"));
    assert!(
        out.status.success(),
        "the Kafka Streams application cannot be built (it needs a JDK 17 with javac and Maven, \
         which scripts/setup.sh installs): {}",
        String::from_utf8_lossy(&out.stderr).trim()
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Produces the events with the record timestamp at `occurred_at` (Kafka Streams orders
/// records and keeps stream time by it).
fn produce(w: &World, events: &[InputEvent]) {
    let producer = w.producer();
    let interactions: Codec<Interaction> =
        Codec::new(w.topic("interactions"), &EncodingSettings::avro()).unwrap();
    let user_events: Codec<UserEvent> =
        Codec::new(w.topic("user-events"), &EncodingSettings::avro()).unwrap();
    for e in events {
        let (topic, bytes) = match e {
            InputEvent::Interaction(i) => {
                (w.topic("interactions"), interactions.encode(i).unwrap())
            }
            InputEvent::UserEvent(u) => (w.topic("user-events"), user_events.encode(u).unwrap()),
        };
        producer
            .send(
                BaseRecord::to(&topic)
                    .key(e.user_id())
                    .payload(&bytes)
                    .timestamp(e.occurred_at()),
            )
            .unwrap();
    }
    producer.flush(Duration::from_secs(30)).unwrap();
}

/// Waits until `group` has committed offsets covering every input record.
fn wait_committed(w: &World, group: &str, total: u64, mut alive: impl FnMut()) {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &w.bootstrap)
        .set("group.id", group)
        // Under read_committed librdkafka asks for stable offsets, which an open
        // transaction holds back; the last committed ones are what is wanted here.
        .set("isolation.level", "read_uncommitted")
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    for topic in [w.topic("interactions"), w.topic("user-events")] {
        for p in 0..w.partitions {
            tpl.add_partition(&topic, p);
        }
    }
    wait_for(
        &format!("group {group} to commit all {total} input records"),
        Duration::from_secs(90),
        || {
            alive();
            let committed: i64 = consumer
                .committed_offsets(tpl.clone(), Duration::from_secs(10))
                .ok()?
                .elements()
                .iter()
                .map(|e| match e.offset() {
                    Offset::Offset(o) => o,
                    _ => 0,
                })
                .sum();
            (committed as u64 >= total).then_some(())
        },
    );
}

/// The send-commands of an output topic due by `cutoff`, as (user, trigger, due).
fn sends(w: &World, role: &str, cutoff: i64) -> BTreeSet<Send> {
    let mut reader = w.reader(role);
    reader.read_to_end(Duration::from_secs(30));
    reader
        .commands()
        .into_iter()
        .filter(|c| c.due_at <= cutoff)
        .map(|c| (c.user_id, c.trigger.event_id, c.due_at))
        .collect()
}

fn stop(mut child: Child) {
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(60) {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn kafka_streams_application_sends_what_the_connector_sends() {
    let classpath = streams_classpath();
    let mut w = World::new("streams-peer", 2);
    w.set("MAX_FUTURE_SKEW", "2h");
    w.create_topics();
    w.publish(&campaigns_yaml(DELAY_MS, DELAY_MS));

    // Six delays of event time, starting 10 minutes ahead of the wall clock.
    let start = now_ms() + 600_000;
    let step = 6 * DELAY_MS / EVENTS as i64;
    let mut workload = Workload::new(Params {
        seed: 42,
        users: EVENTS / 8,
        start_ms: start,
        step_ms: step,
        delay_ms: DELAY_MS,
        reeligible_ms: DELAY_MS,
    });
    let events: Vec<InputEvent> = (0..EVENTS).map(|_| workload.next_event().1).collect();
    let last = events.last().unwrap().occurred_at();
    let cutoff = last - 60_000;
    let expected: BTreeSet<Send> = workload.sends_until(cutoff).into_iter().collect();
    let stats = &workload.stats;
    assert!(
        expected.len() > 50 && stats.cancelled > 20 && stats.already_pending > 20,
        "the small stream exercises the rule: {}",
        stats.describe()
    );
    produce(&w, &events);

    // The connector.
    let connector = w.start("i0");
    let group = w.env["CONNECTOR_APPLICATION_ID"].clone();
    wait_committed(&w, &group, EVENTS, || {});
    assert_eq!(connector.stop(Duration::from_secs(60)), Some(0));
    let from_connector = sends(&w, "send-commands", cutoff);

    // The Kafka Streams application, over the same topics, to its own output.
    let output = w.topic("streams-send-commands");
    let admin = Command::new(env!("CARGO_BIN_EXE_campaign-connector"))
        .args(["topics", "create"])
        .envs(&w.env)
        .env("CONNECTOR_TOPICS__SEND_COMMANDS", &output)
        .output()
        .unwrap();
    assert!(admin.status.success(), "creating {output}");
    let app = format!("streams-{}", w.id);
    let state = w.dir.path().join("streams-state");
    let log = w.dir.path().join("streams.log");
    let mut streams = Command::new("java")
        .args([
            "-Xmx512m",
            "-XX:+UseSerialGC",
            "-XX:TieredStopAtLevel=1",
            "-Dorg.slf4j.simpleLogger.defaultLogLevel=warn",
            "-cp",
            &classpath,
            "CampaignStreams",
            "--bootstrap",
            &w.bootstrap,
            "--application-id",
            &app,
            "--interactions",
            &w.topic("interactions"),
            "--user-events",
            &w.topic("user-events"),
            "--output",
            &output,
            "--schemas",
            root().join("schemas").to_str().unwrap(),
            "--state-dir",
            state.to_str().unwrap(),
            "--delay-s",
            &(DELAY_MS / 1000).to_string(),
            "--reeligible-s",
            &(DELAY_MS / 1000).to_string(),
        ])
        .stdin(Stdio::null())
        .stdout(std::fs::File::create(&log).unwrap())
        .stderr(std::fs::File::create(w.dir.path().join("streams.err")).unwrap())
        .spawn()
        .unwrap_or_else(|e| {
            panic!("java (17+) is needed to run the Kafka Streams application: {e}")
        });
    wait_committed(&w, &app, EVENTS, || {
        if let Ok(Some(status)) = streams.try_wait() {
            panic!(
                "the Kafka Streams application exited ({status}): {}",
                std::fs::read_to_string(w.dir.path().join("streams.err")).unwrap_or_default()
            );
        }
    });
    stop(streams);
    let from_streams = sends(&w, "streams-send-commands", cutoff);

    let diff = |a: &BTreeSet<Send>, b: &BTreeSet<Send>| {
        a.difference(b).take(5).cloned().collect::<Vec<_>>()
    };
    assert_eq!(
        from_connector,
        expected,
        "connector vs the model: missing {:?}, extra {:?}",
        diff(&expected, &from_connector),
        diff(&from_connector, &expected)
    );
    assert_eq!(
        from_streams,
        expected,
        "Kafka Streams vs the model: missing {:?}, extra {:?}",
        diff(&expected, &from_streams),
        diff(&from_streams, &expected)
    );
}
