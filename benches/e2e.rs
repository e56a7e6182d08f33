//! End-to-end throughput against the real local broker (on the same machine): a backlog of
//! input events is produced first, then the connector is started and timed until its
//! committed input offsets reach the end of the backlog. Prints a table.
//!
//! Run with `scripts/bench-e2e.sh` (starts the broker, builds in release mode). Needs
//! `KAFKA_BOOTSTRAP` and `E2E_CONNECTOR_BIN` (the release binary).

use std::collections::BTreeMap;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use campaign_connector::codec::{Codec, EncodingSettings};
use campaign_connector::model::*;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};

const PARTITIONS: i32 = 6;

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

const CAMPAIGNS: &str = r#"
campaigns:
  - campaign_id: abandoned-cart
    name: Abandoned cart push
    status: ACTIVE
  - campaign_id: cart-email
    name: Cart reminder email
    status: ACTIVE
    published_at: 2020-01-01T00:00:00Z
    follow_on:
      trigger: {campaign_id: abandoned-cart, kinds: [PUSH_RECEIVED]}
      delay: 1d
      exceptions:
        - purchase: {}
      message: {channel: EMAIL, template_id: cart-15-off}
"#;

struct Run {
    name: &'static str,
    env: Vec<(&'static str, &'static str)>,
}

fn main() {
    let bootstrap =
        std::env::var("KAFKA_BOOTSTRAP").expect("KAFKA_BOOTSTRAP (run scripts/bench-e2e.sh)");
    let bin =
        std::env::var("E2E_CONNECTOR_BIN").expect("E2E_CONNECTOR_BIN (run scripts/bench-e2e.sh)");
    let events: u64 = std::env::var("E2E_EVENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(200_000);
    let runs = [
        Run {
            name: "exactly_once, commit 100 ms",
            env: vec![("CONNECTOR_COMMIT_INTERVAL", "100ms")],
        },
        Run {
            name: "exactly_once, commit 1 s",
            env: vec![("CONNECTOR_COMMIT_INTERVAL", "1s")],
        },
        Run {
            name: "at_least_once, commit 100 ms",
            env: vec![
                ("CONNECTOR_PROCESSING_GUARANTEE", "at_least_once"),
                ("CONNECTOR_COMMIT_INTERVAL", "100ms"),
            ],
        },
    ];
    let mut rows = Vec::new();
    for (n, run) in runs.iter().enumerate() {
        let id = format!("e2e{n}-{:x}", now_ms());
        let mut env: Vec<(String, String)> = vec![
            ("CONNECTOR_BOOTSTRAP_SERVERS".into(), bootstrap.clone()),
            ("CONNECTOR_APPLICATION_ID".into(), format!("cc-{id}")),
            ("CONNECTOR_PARTITIONS".into(), PARTITIONS.to_string()),
            ("CONNECTOR_TOPICS__DECISIONS".into(), String::new()),
            ("CONNECTOR_HTTP_LISTEN".into(), String::new()),
        ];
        for (key, topic) in [
            ("INTERACTIONS", "interactions"),
            ("USER_EVENTS", "user-events"),
            ("CAMPAIGNS", "campaigns"),
            ("SEND_COMMANDS", "send-commands"),
            ("CHANGELOG", "changelog"),
            ("DLQ", "dlq"),
        ] {
            env.push((format!("CONNECTOR_TOPICS__{key}"), format!("{topic}-{id}")));
        }
        env.extend(run.env.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        let cli = |args: &[&str]| {
            let status = Command::new(&bin)
                .args(args)
                .envs(env.clone())
                .stdout(Stdio::null())
                .status()
                .unwrap();
            assert!(status.success(), "{args:?} failed");
        };
        cli(&["topics", "create"]);
        let file = std::env::temp_dir().join(format!("{id}.yaml"));
        std::fs::write(&file, CAMPAIGNS).unwrap();
        cli(&["campaigns", "publish", file.to_str().unwrap()]);

        produce(&bootstrap, &id, events);
        let started = Instant::now();
        let mut child = Command::new(&bin)
            .arg("run")
            .envs(env.clone())
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let elapsed = wait_committed(&bootstrap, &format!("cc-{id}"), &id, events, started);
        let _ = Command::new("kill")
            .arg("-15")
            .arg(child.id().to_string())
            .status();
        let _ = child.wait();
        rows.push((run.name, events, elapsed));
    }
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    println!("\nend-to-end throughput (broker and connector on the same {cpus} cores; {PARTITIONS} partitions)\n");
    println!(
        "{:<30}  {:>9}  {:>9}  {:>12}",
        "mode", "events", "seconds", "events/s"
    );
    println!(
        "{}  {}  {}  {}",
        "-".repeat(30),
        "-".repeat(9),
        "-".repeat(9),
        "-".repeat(12)
    );
    for (name, n, secs) in rows {
        println!("{name:<30}  {n:>9}  {secs:>9.2}  {:>12.0}", n as f64 / secs);
    }
    println!("\n(time from process start, including catalog load and group join, until every input offset is committed)");
}

/// A backlog: 30 % cart pushes, 9 % purchases, the rest unrelated interactions.
fn produce(bootstrap: &str, id: &str, events: u64) {
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("partitioner", "murmur2_random")
        .set("linger.ms", "20")
        .set("queue.buffering.max.messages", "1000000")
        .create()
        .unwrap();
    let interactions: Codec<Interaction> =
        Codec::new(format!("interactions-{id}"), &EncodingSettings::avro()).unwrap();
    let user_events: Codec<UserEvent> =
        Codec::new(format!("user-events-{id}"), &EncodingSettings::avro()).unwrap();
    let t0 = now_ms() - 3_600_000;
    for i in 0..events {
        let user = format!("user-{:015}", (i * 7_919) % 100_000);
        let t = t0 + i as i64;
        let (topic, bytes) = match i % 100 {
            0..=29 => (
                format!("interactions-{id}"),
                interactions
                    .encode(&interaction(
                        i,
                        &user,
                        "abandoned-cart",
                        InteractionKind::PushReceived,
                        t,
                    ))
                    .unwrap(),
            ),
            30..=38 => (
                format!("user-events-{id}"),
                user_events
                    .encode(&UserEvent {
                        event_id: format!("ev-{i}"),
                        user_id: user.clone(),
                        event_type: UserEventType::Purchase,
                        name: None,
                        occurred_at: t,
                        user_time_zone: None,
                        properties: BTreeMap::new(),
                    })
                    .unwrap(),
            ),
            _ => (
                format!("interactions-{id}"),
                interactions
                    .encode(&interaction(
                        i,
                        &user,
                        "newsletter",
                        InteractionKind::EmailOpen,
                        t,
                    ))
                    .unwrap(),
            ),
        };
        loop {
            match producer.send(BaseRecord::to(&topic).key(&user).payload(&bytes)) {
                Ok(()) => break,
                Err(_) => producer.poll(Duration::from_millis(5)),
            }
        }
    }
    producer.flush(Duration::from_secs(60)).unwrap();
}

fn interaction(i: u64, user: &str, campaign: &str, kind: InteractionKind, t: i64) -> Interaction {
    Interaction {
        event_id: format!("ev-{i}"),
        user_id: user.into(),
        campaign_id: campaign.into(),
        kind,
        qualifier: None,
        occurred_at: t,
        user_time_zone: None,
        properties: BTreeMap::new(),
    }
}

/// Seconds until the group's committed offsets cover all `events`.
fn wait_committed(bootstrap: &str, group: &str, id: &str, events: u64, started: Instant) -> f64 {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", group)
        .create()
        .unwrap();
    let mut tpl = TopicPartitionList::new();
    for topic in [format!("interactions-{id}"), format!("user-events-{id}")] {
        for p in 0..PARTITIONS {
            tpl.add_partition(&topic, p);
        }
    }
    loop {
        let committed = consumer
            .committed_offsets(tpl.clone(), Duration::from_secs(10))
            .unwrap();
        let sum: i64 = committed
            .elements()
            .iter()
            .map(|e| match e.offset() {
                Offset::Offset(o) => o,
                _ => 0,
            })
            .sum();
        if sum as u64 >= events {
            return started.elapsed().as_secs_f64();
        }
        assert!(
            started.elapsed() < Duration::from_secs(600),
            "no progress: {sum} of {events} committed"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}
