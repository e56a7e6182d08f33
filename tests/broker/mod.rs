//! Harness for integration tests against the real local Kafka broker that
//! `scripts/test.sh` starts (its address comes in `KAFKA_BOOTSTRAP`). Every test gets fresh
//! random topic and group names; waits are conditions with deadlines, never bare sleeps.
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use campaign_connector::codec::{Codec, EncodingSettings};
use campaign_connector::model::*;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};

pub fn bootstrap() -> String {
    std::env::var("KAFKA_BOOTSTRAP").expect(
        "KAFKA_BOOTSTRAP is not set: run the suite with scripts/test.sh, which starts the local Kafka broker",
    )
}

pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64
}

/// Waits until `check` returns `Some`, or panics with `what` after `deadline`.
pub fn wait_for<T>(what: &str, deadline: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let started = Instant::now();
    loop {
        if let Some(v) = check() {
            return v;
        }
        if started.elapsed() > deadline {
            panic!("timed out after {deadline:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// Waits until `check` returns `Ok`, or panics after `deadline` naming `what` and the last
/// `Err` it returned (what the wait saw so far, e.g. counts).
pub fn wait_until<T>(
    what: &str,
    deadline: Duration,
    mut check: impl FnMut() -> Result<T, String>,
) -> T {
    let started = Instant::now();
    loop {
        match check() {
            Ok(v) => return v,
            Err(seen) if started.elapsed() > deadline => {
                panic!("timed out after {deadline:?} waiting for {what}; last seen: {seen}")
            }
            Err(_) => std::thread::sleep(Duration::from_millis(50)),
        }
    }
}

/// One test's world: topic names, config environment, and helpers.
pub struct World {
    pub id: String,
    pub bootstrap: String,
    pub dir: tempfile::TempDir,
    pub env: BTreeMap<String, String>,
    pub partitions: i32,
    /// Extra librdkafka properties of the test's own clients (producer, readers), e.g.
    /// security settings; empty for the plaintext test broker.
    pub client: BTreeMap<String, String>,
}

impl World {
    pub fn new(name: &str, partitions: i32) -> Self {
        Self::with_bootstrap(name, partitions, bootstrap())
    }

    /// A world on another broker (e.g. the secured one of `tests/kafka_security.rs`).
    pub fn with_bootstrap(name: &str, partitions: i32, bootstrap: String) -> Self {
        let id = format!("{name}-{:x}", now_ms() ^ (std::process::id() as i64) << 20);
        let mut env = BTreeMap::new();
        let mut set = |k: &str, v: String| {
            env.insert(format!("CONNECTOR_{k}"), v);
        };
        set("BOOTSTRAP_SERVERS", bootstrap.clone());
        set("APPLICATION_ID", format!("cc-{id}"));
        set("PARTITIONS", partitions.to_string());
        set("COMMIT_INTERVAL", "100ms".into());
        set("TRANSACTION_TIMEOUT", "10s".into());
        set("MERGE_MAX_WAIT", "200ms".into());
        for (key, topic) in [
            ("INTERACTIONS", "interactions"),
            ("USER_EVENTS", "user-events"),
            ("CAMPAIGNS", "campaigns"),
            ("SEND_COMMANDS", "send-commands"),
            ("CHANGELOG", "changelog"),
            ("DECISIONS", "decisions"),
            ("DLQ", "dlq"),
            ("SHADOW", "shadow"),
        ] {
            set(&format!("TOPICS__{key}"), format!("{topic}-{id}"));
        }
        // Quick failure detection for tests that kill instances.
        set("KAFKA__SESSION_TIMEOUT_MS", "6000".into());
        set("KAFKA__HEARTBEAT_INTERVAL_MS", "500".into());
        Self {
            id,
            bootstrap,
            dir: tempfile::tempdir().unwrap(),
            env,
            partitions,
            client: BTreeMap::new(),
        }
    }

    /// Processing threads (group members) per instance: as configured, else the
    /// connector's default, one per core.
    pub fn threads(&self) -> usize {
        self.env
            .get("CONNECTOR_PROCESSING_THREADS")
            .and_then(|t| t.parse().ok())
            .filter(|t| *t > 0)
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
    }

    pub fn topic(&self, role: &str) -> String {
        format!("{role}-{}", self.id)
    }

    pub fn set(&mut self, key: &str, value: &str) {
        self.env
            .insert(format!("CONNECTOR_{key}"), value.to_string());
    }

    /// Runs a CLI command to completion; returns (success, stdout, stderr).
    pub fn cli(&self, args: &[&str]) -> (bool, String, String) {
        let out = Command::new(env!("CARGO_BIN_EXE_campaign-connector"))
            .args(args)
            .envs(&self.env)
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }

    pub fn create_topics(&self) {
        let (ok, out, err) = self.cli(&["topics", "create"]);
        assert!(ok, "topics create failed: {out}{err}");
    }

    /// Writes a campaigns file and publishes it.
    pub fn publish(&self, yaml: &str) {
        let path = self.dir.path().join(format!("campaigns-{}.yaml", now_ms()));
        std::fs::write(&path, yaml).unwrap();
        let (ok, out, err) = self.cli(&["campaigns", "publish", path.to_str().unwrap()]);
        assert!(ok, "campaigns publish failed: {out}{err}");
    }

    /// Starts a connector instance.
    pub fn start(&self, instance: &str) -> Instance {
        let log = self.dir.path().join(format!("{instance}.log"));
        // A restarted instance keeps its earlier life's log beside it.
        for n in 1.. {
            let earlier = self.dir.path().join(format!("{instance}.{n}.log"));
            if !log.exists() || !earlier.exists() {
                if log.exists() {
                    std::fs::rename(&log, &earlier).unwrap();
                }
                break;
            }
        }
        let file = std::fs::File::create(&log).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_campaign-connector"))
            .arg("run")
            .envs(&self.env)
            .env("CONNECTOR_INSTANCE_ID", instance)
            // Each instance its own HTTP port, unless the test chose one.
            .env(
                "CONNECTOR_HTTP_LISTEN",
                self.env
                    .get("CONNECTOR_HTTP_LISTEN")
                    .cloned()
                    .unwrap_or_else(|| format!("127.0.0.1:{}", free_port())),
            )
            .env(
                "RUST_LOG",
                std::env::var("TEST_CONNECTOR_LOG")
                    .unwrap_or_else(|_| "info,campaign_connector=debug".into()),
            )
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .unwrap();
        Instance { child, log }
    }

    /// The base configuration of the test's own clients.
    pub fn client_config(&self) -> ClientConfig {
        let mut c = ClientConfig::new();
        c.set("bootstrap.servers", &self.bootstrap);
        for (k, v) in &self.client {
            c.set(k, v);
        }
        c
    }

    pub fn producer(&self) -> BaseProducer {
        self.client_config()
            .set("partitioner", "murmur2_random")
            .create()
            .unwrap()
    }

    /// Produces input events (Avro single-object encoding, keyed by user id) and flushes.
    pub fn send_events(&self, events: &[InputEvent]) {
        let producer = self.producer();
        self.produce_events(&producer, events);
        producer.flush(Duration::from_secs(10)).unwrap();
    }

    /// Produces input events in one transaction, as an upstream exactly-once application
    /// does: every partition written ends with a transaction marker, which a
    /// `read_committed` reader passes without a message.
    pub fn send_events_in_a_transaction(&self, events: &[InputEvent]) {
        let producer: BaseProducer = self
            .client_config()
            .set("partitioner", "murmur2_random")
            .set(
                "transactional.id",
                format!("upstream-{}-{}", self.id, now_ms()),
            )
            .create()
            .unwrap();
        producer.init_transactions(Duration::from_secs(30)).unwrap();
        producer.begin_transaction().unwrap();
        self.produce_events(&producer, events);
        producer
            .commit_transaction(Duration::from_secs(30))
            .unwrap();
    }

    fn produce_events(&self, producer: &BaseProducer, events: &[InputEvent]) {
        let interactions: Codec<Interaction> =
            Codec::new(self.topic("interactions"), &EncodingSettings::avro()).unwrap();
        let user_events: Codec<UserEvent> =
            Codec::new(self.topic("user-events"), &EncodingSettings::avro()).unwrap();
        for e in events {
            let (topic, bytes) = match e {
                InputEvent::Interaction(i) => {
                    (self.topic("interactions"), interactions.encode(i).unwrap())
                }
                InputEvent::UserEvent(u) => {
                    (self.topic("user-events"), user_events.encode(u).unwrap())
                }
            };
            producer
                .send(BaseRecord::to(&topic).key(e.user_id()).payload(&bytes))
                .unwrap();
        }
    }

    /// Produces raw bytes to a topic.
    pub fn send_raw(&self, role: &str, key: &str, payload: &[u8]) {
        let producer = self.producer();
        producer
            .send(BaseRecord::to(&self.topic(role)).key(key).payload(payload))
            .unwrap();
        producer.flush(Duration::from_secs(10)).unwrap();
    }

    /// A `read_committed` reader of a whole topic.
    pub fn reader(&self, role: &str) -> Reader {
        self.reader_of_topic(&self.topic(role))
    }

    /// A `read_committed` reader of a whole topic given by its full name (e.g. a topic the
    /// connector names after one of the world's).
    pub fn reader_of_topic(&self, topic: &str) -> Reader {
        self.reader_with_isolation(topic, "read_committed")
    }

    /// A reader of a whole topic that also sees what is not committed (open and aborted
    /// transactions): for explaining a failure, never for asserting output.
    pub fn uncommitted_reader(&self, role: &str) -> Reader {
        self.reader_with_isolation(&self.topic(role), "read_uncommitted")
    }

    fn reader_with_isolation(&self, topic: &str, isolation: &str) -> Reader {
        let consumer: BaseConsumer = self
            .client_config()
            .set("group.id", format!("reader-{}-{topic}", self.id))
            .set("isolation.level", isolation)
            .set("enable.auto.commit", "false")
            .create()
            .unwrap();
        let metadata = consumer
            .fetch_metadata(Some(topic), Duration::from_secs(10))
            .unwrap();
        let mut tpl = TopicPartitionList::new();
        for p in metadata.topics()[0].partitions() {
            tpl.add_partition_offset(topic, p.id(), Offset::Beginning)
                .unwrap();
        }
        consumer.assign(&tpl).unwrap();
        Reader {
            consumer,
            records: Vec::new(),
        }
    }

    pub fn send_commands(&self) -> Reader {
        self.reader("send-commands")
    }

    /// The group's own description (classic protocol): each member's client id (the
    /// instance id) and its assigned partitions by topic. `None` while the group is not
    /// stable.
    pub fn group_assignments(&self) -> Option<Vec<Member>> {
        let consumer: BaseConsumer = self.client_config().create().unwrap();
        let group_id = self.env["CONNECTOR_APPLICATION_ID"].clone();
        let groups = consumer
            .fetch_group_list(Some(&group_id), Duration::from_secs(10))
            .ok()?;
        let group = groups.groups().iter().find(|g| g.name() == group_id)?;
        if group.state() != "Stable" {
            return None;
        }
        let mut members = Vec::new();
        for m in group.members() {
            let decoded = campaign_connector::runtime::admin_api::decode_assignment(
                m.assignment().unwrap_or_default(),
            )?;
            let mut by_topic: BTreeMap<String, Vec<i32>> = BTreeMap::new();
            for (topic, mut partitions) in decoded {
                partitions.sort_unstable();
                by_topic.entry(topic).or_default().extend(partitions);
            }
            members.push((m.client_id().to_string(), by_topic));
        }
        members.sort();
        Some(members)
    }

    /// Whether the group's committed offsets of both inputs are at their end offsets.
    pub fn inputs_committed(&self) -> bool {
        let consumer: BaseConsumer = self
            .client_config()
            .set("group.id", &self.env["CONNECTOR_APPLICATION_ID"])
            .create()
            .unwrap();
        let mut tpl = TopicPartitionList::new();
        for topic in [self.topic("interactions"), self.topic("user-events")] {
            for p in 0..self.partitions {
                tpl.add_partition(&topic, p);
            }
        }
        let Ok(committed) = consumer.committed_offsets(tpl, Duration::from_secs(10)) else {
            return false;
        };
        committed.elements().iter().all(|e| {
            let end = consumer
                .fetch_watermarks(e.topic(), e.partition(), Duration::from_secs(10))
                .map(|(_, high)| high);
            match (e.offset(), end) {
                (_, Ok(0)) => true,
                (Offset::Offset(at), Ok(high)) => at >= high,
                _ => false,
            }
        })
    }

    /// Waits until the group is stable with the member loops of `instances` instances (they
    /// share the instance id as client id) holding every input partition, and returns its
    /// description.
    pub fn stable_group(&self, instances: usize, deadline: Duration) -> Vec<Member> {
        let inputs = [self.topic("interactions"), self.topic("user-events")];
        wait_for(
            &format!("a stable group of {instances} instances holding every input partition"),
            deadline,
            || {
                let group = self.group_assignments()?;
                let held: usize = group
                    .iter()
                    .flat_map(|(_, a)| inputs.iter().filter_map(|t| a.get(t)))
                    .map(Vec::len)
                    .sum();
                let clients: std::collections::BTreeSet<&str> =
                    group.iter().map(|(client, _)| client.as_str()).collect();
                (clients.len() == instances
                    && group.len() == instances * self.threads()
                    && held == 2 * self.partitions as usize)
                    .then_some(group)
            },
        )
    }
}

impl Drop for World {
    /// A failed test keeps its directory (instance logs, configs) for a look afterwards.
    fn drop(&mut self) {
        // KEEP_TEST_FILES=1 keeps them after a passing test too (to read its logs).
        if std::thread::panicking() || std::env::var_os("KEEP_TEST_FILES").is_some() {
            let dir = std::mem::replace(&mut self.dir, tempfile::tempdir().unwrap());
            eprintln!(
                "--- the test's files (instance logs) are kept in {}",
                dir.keep().display()
            );
        }
    }
}

/// Fails with every decision about the users that differ, when the committed commands are
/// not the expected ones.
pub fn assert_commands(w: &World, expected: &BTreeSet<String>) {
    let got = committed_users(w);
    if &got == expected {
        return;
    }
    let differ: BTreeSet<&String> = got.symmetric_difference(expected).collect();
    let mut decisions = w.reader("decisions");
    decisions.read_to_end(Duration::from_secs(60));
    let mut story = String::new();
    for d in decisions.decisions() {
        if differ.contains(&d.user_id) {
            story.push_str(&format!(
                "{} {:?} {:?} trigger {:?} cause {:?} at {:?}\n",
                d.user_id, d.outcome, d.reason, d.trigger_event_id, d.cause_event_id, d.source
            ));
        }
    }
    panic!(
        "extra: {:?}\nmissing: {:?}\ntheir decisions:\n{story}",
        got.difference(expected).collect::<Vec<_>>(),
        expected.difference(&got).collect::<Vec<_>>()
    );
}

/// Explains commands that did not arrive, for a failure message: the users missing from
/// what `reader` read, every record about them in the send-commands and decision topics
/// including uncommitted ones (partition, offset, outcome), and per send-commands
/// partition the reader's position, the last stable offset and the high watermark.
pub fn explain_missing(w: &World, reader: &Reader, expected: &BTreeSet<String>) -> String {
    let got: BTreeSet<String> = reader.commands().into_iter().map(|c| c.user_id).collect();
    let missing: BTreeSet<&String> = expected.difference(&got).collect();
    let mut out = format!("missing ({}): {missing:?}\n", missing.len());
    let mut commands = w.uncommitted_reader("send-commands");
    commands.drain(Duration::from_secs(5));
    let codec: Codec<SendCommand> = Codec::new("send-commands", &EncodingSettings::avro()).unwrap();
    for r in &commands.records {
        if let Ok(c) = codec.decode(r.payload.as_deref().unwrap_or_default()) {
            if missing.contains(&c.user_id) {
                out.push_str(&format!(
                    "  uncommitted read: command for {} at send-commands[{}]@{}\n",
                    c.user_id, r.partition, r.offset
                ));
            }
        }
    }
    let mut decisions = w.uncommitted_reader("decisions");
    decisions.drain(Duration::from_secs(5));
    for (r, d) in decisions.records.iter().zip(decisions.decisions()) {
        if missing.contains(&d.user_id) {
            out.push_str(&format!(
                "  uncommitted read: decision {:?} {:?} for {} at decisions[{}]@{}\n",
                d.outcome, d.reason, d.user_id, r.partition, r.offset
            ));
        }
    }
    let position = reader.consumer.position().ok();
    let topic = w.topic("send-commands");
    for (p, (low, high)) in commands.watermarks() {
        let stable = reader
            .consumer
            .fetch_watermarks(&topic, p, Duration::from_secs(10))
            .map(|(_, h)| h);
        let at = position
            .as_ref()
            .and_then(|t| t.find_partition(&topic, p))
            .map(|e| e.offset());
        out.push_str(&format!(
            "  send-commands[{p}]: reader at {at:?}, low {low}, last stable {stable:?}, high {high}\n"
        ));
    }
    out
}

/// Reads every committed command to the end offsets; fails on a duplicate command id.
pub fn committed_users(w: &World) -> BTreeSet<String> {
    let mut reader = w.send_commands();
    reader.read_to_end(Duration::from_secs(60));
    let mut ids = BTreeSet::new();
    let mut users = BTreeSet::new();
    for c in reader.commands() {
        assert!(
            ids.insert(c.command_id.clone()),
            "command {} twice",
            c.command_id
        );
        assert!(
            users.insert(c.user_id.clone()),
            "user {} got two commands",
            c.user_id
        );
        assert!(
            c.emitted_at >= c.due_at,
            "{} fired before its due time",
            c.user_id
        );
    }
    users
}

/// Waits until at least `at_least` SCHEDULED decisions are committed: the timers are
/// pending, in the changelog.
pub fn wait_scheduled(w: &World, at_least: usize) {
    let mut decisions = w.reader("decisions");
    wait_for("committed schedules", Duration::from_secs(60), || {
        decisions.drain(Duration::from_millis(200));
        (decisions
            .decisions()
            .iter()
            .filter(|d| d.outcome == DecisionOutcome::Scheduled)
            .count()
            >= at_least)
            .then_some(())
    });
}

/// Panics unless every member holds the same partitions of both inputs: no task split.
pub fn assert_tasks_whole(w: &World, group: &[Member], when: &str) {
    let (i, u) = (w.topic("interactions"), w.topic("user-events"));
    for (member, assignment) in group {
        let interactions = assignment.get(&i).cloned().unwrap_or_default();
        let user_events = assignment.get(&u).cloned().unwrap_or_default();
        assert_eq!(
            interactions, user_events,
            "{when}: member {member} holds interactions {interactions:?} but user-events {user_events:?}"
        );
    }
}

/// A group member as the group describes it: its client id (the instance id) and its
/// assigned partitions by topic.
pub type Member = (String, BTreeMap<String, Vec<i32>>);

/// A record read back.
#[derive(Debug, Clone)]
pub struct Read {
    pub partition: i32,
    pub offset: i64,
    pub key: Option<String>,
    pub payload: Option<Vec<u8>>,
    pub headers: BTreeMap<String, String>,
}

pub struct Reader {
    consumer: BaseConsumer,
    pub records: Vec<Read>,
}

impl Reader {
    /// Reads whatever is there now (up to `for_at_least`).
    pub fn drain(&mut self, for_at_least: Duration) {
        let started = Instant::now();
        while started.elapsed() < for_at_least {
            if let Some(Ok(m)) = self.consumer.poll(Duration::from_millis(100)) {
                let headers = m
                    .headers()
                    .map(|h| {
                        h.iter()
                            .map(|x| {
                                (
                                    x.key.to_string(),
                                    String::from_utf8_lossy(x.value.unwrap_or_default())
                                        .into_owned(),
                                )
                            })
                            .collect()
                    })
                    .unwrap_or_default();
                self.records.push(Read {
                    partition: m.partition(),
                    offset: m.offset(),
                    key: m.key().map(|k| String::from_utf8_lossy(k).into_owned()),
                    payload: m.payload().map(<[u8]>::to_vec),
                    headers,
                });
            }
        }
    }

    /// Reads until the position of every partition reached its high watermark as it is
    /// now: everything committed before the call has been read, and nothing more can be
    /// in the topic unless something writes after it. Call it once the writers stopped
    /// (an open transaction keeps a `read_committed` position below the high watermark).
    pub fn read_to_end(&mut self, deadline: Duration) -> &[Read] {
        let assignment = self.consumer.assignment().unwrap();
        let mut high = BTreeMap::new();
        for e in assignment.elements() {
            let (_, h) = self
                .consumer
                .fetch_watermarks(e.topic(), e.partition(), Duration::from_secs(10))
                .unwrap();
            high.insert(e.partition(), h);
        }
        let started = Instant::now();
        loop {
            let position = self.consumer.position().unwrap();
            let behind: Vec<(i32, i64, i64)> = high
                .iter()
                .filter_map(|(p, h)| {
                    let at = match position.elements().iter().find(|e| e.partition() == *p) {
                        Some(e) => match e.offset() {
                            Offset::Offset(o) => o,
                            _ => 0,
                        },
                        None => 0,
                    };
                    (at < *h).then_some((*p, at, *h))
                })
                .collect();
            if behind.is_empty() {
                return &self.records;
            }
            assert!(
                started.elapsed() < deadline,
                "not at the end after {deadline:?}: (partition, position, high) {behind:?}"
            );
            self.drain(Duration::from_millis(200));
        }
    }

    /// Each assigned partition's low and high watermark, as the broker reports them to this
    /// reader's isolation level.
    pub fn watermarks(&self) -> Vec<(i32, (i64, i64))> {
        let assignment = self.consumer.assignment().unwrap();
        assignment
            .elements()
            .iter()
            .filter_map(|e| {
                self.consumer
                    .fetch_watermarks(e.topic(), e.partition(), Duration::from_secs(10))
                    .ok()
                    .map(|w| (e.partition(), w))
            })
            .collect()
    }

    /// Reads until at least `n` records arrived, or panics after `deadline`.
    pub fn until_count(&mut self, n: usize, deadline: Duration) -> &[Read] {
        let started = Instant::now();
        while self.records.len() < n {
            assert!(
                started.elapsed() < deadline,
                "timed out after {deadline:?}: {} of {n} records read",
                self.records.len()
            );
            self.drain(Duration::from_millis(200));
        }
        &self.records
    }

    pub fn commands(&self) -> Vec<SendCommand> {
        let codec: Codec<SendCommand> =
            Codec::new("send-commands", &EncodingSettings::avro()).unwrap();
        self.records
            .iter()
            .map(|r| codec.decode(r.payload.as_deref().unwrap()).unwrap())
            .collect()
    }

    /// The records of the shadow topic.
    pub fn shadow_records(&self) -> Vec<ShadowRecord> {
        let codec: Codec<ShadowRecord> = Codec::new("shadow", &EncodingSettings::avro()).unwrap();
        self.records
            .iter()
            .map(|r| codec.decode(r.payload.as_deref().unwrap()).unwrap())
            .collect()
    }

    pub fn decisions(&self) -> Vec<Decision> {
        let codec: Codec<Decision> = Codec::new("decisions", &EncodingSettings::avro()).unwrap();
        self.records
            .iter()
            .map(|r| codec.decode(r.payload.as_deref().unwrap()).unwrap())
            .collect()
    }

    /// Reads the decision log until `found` finds what the test waits for among the
    /// decisions read so far (committed ones: the reader is `read_committed`); panics after
    /// `deadline`, naming `what`.
    pub fn until_decisions<T>(
        &mut self,
        what: &str,
        deadline: Duration,
        mut found: impl FnMut(Vec<Decision>) -> Option<T>,
    ) -> T {
        wait_for(what, deadline, || {
            self.drain(Duration::from_millis(200));
            found(self.decisions())
        })
    }
}

/// A running connector process.
pub struct Instance {
    pub child: Child,
    pub log: PathBuf,
}

impl Instance {
    /// Sends the process a signal by name (`STOP` freezes it, `CONT` wakes it).
    pub fn signal(&self, name: &str) {
        let status = Command::new("kill")
            .arg(format!("-{name}"))
            .arg(self.child.id().to_string())
            .status()
            .unwrap();
        assert!(status.success(), "kill -{name}");
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Waits until the log says `needle` (e.g. that tasks are restored).
    pub fn wait_log(&self, needle: &str, deadline: Duration) {
        wait_for(&format!("log line {needle:?}"), deadline, || {
            self.log_text().contains(needle).then_some(())
        });
    }

    /// Whether the process is still running.
    pub fn child_running(&mut self) -> bool {
        self.child.try_wait().unwrap().is_none()
    }

    /// SIGKILL: no chance to commit or leave the group.
    pub fn kill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// SIGTERM, then waits for a clean exit; returns the exit status code.
    pub fn stop(mut self, deadline: Duration) -> Option<i32> {
        let pid = self.child.id() as i32;
        unsafe_kill(pid, 15);
        let started = Instant::now();
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status.code();
            }
            if started.elapsed() > deadline {
                let _ = self.child.kill();
                panic!(
                    "instance did not stop within {deadline:?}; log:\n{}",
                    self.log_text()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        // KEEP_TEST_FILES=1 keeps them after a passing test too (to read its logs).
        if std::thread::panicking() || std::env::var_os("KEEP_TEST_FILES").is_some() {
            let log = self.log_text();
            let tail: Vec<&str> = log.lines().rev().take(40).collect();
            eprintln!("--- last lines of {}:", self.log.display());
            for line in tail.into_iter().rev() {
                eprintln!("{line}");
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn unsafe_kill(pid: i32, signal: i32) {
    let _ = Command::new("kill")
        .arg(format!("-{signal}"))
        .arg(pid.to_string())
        .status();
}

pub fn write_file(dir: &std::path::Path, name: &str, text: &str) -> PathBuf {
    let path = dir.join(name);
    let mut f = std::fs::File::create(&path).unwrap();
    f.write_all(text.as_bytes()).unwrap();
    path
}

pub fn interaction(
    event_id: &str,
    user: &str,
    campaign: &str,
    kind: InteractionKind,
    t: i64,
) -> InputEvent {
    InputEvent::Interaction(Interaction {
        event_id: event_id.into(),
        user_id: user.into(),
        campaign_id: campaign.into(),
        kind,
        qualifier: None,
        occurred_at: t,
        user_time_zone: None,
        properties: BTreeMap::new(),
    })
}

pub fn user_event(
    event_id: &str,
    user: &str,
    event_type: UserEventType,
    name: Option<&str>,
    t: i64,
) -> InputEvent {
    InputEvent::UserEvent(UserEvent {
        event_id: event_id.into(),
        user_id: user.into(),
        event_type,
        name: name.map(str::to_string),
        occurred_at: t,
        user_time_zone: None,
        properties: BTreeMap::new(),
    })
}

/// A free port on 127.0.0.1 (bound, then released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A plain HTTP GET; returns the status and the body.
pub fn http_get(addr: &str, path: &str, token: Option<&str>) -> Option<(u16, String)> {
    use std::io::Read;
    let mut stream = std::net::TcpStream::connect(addr).ok()?;
    stream
        .set_read_timeout(Some(Duration::from_secs(15)))
        .ok()?;
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Connection: close\r\n\r\n"
    )
    .ok()?;
    let mut text = String::new();
    stream.read_to_string(&mut text).ok()?;
    let status = text.split_whitespace().nth(1)?.parse().ok()?;
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Some((status, body))
}

/// The abandoned-cart push and its follow-on email after `delay`, cancelled by a purchase.
pub fn cart_campaigns(delay: &str) -> String {
    format!(
        r#"
campaigns:
  - campaign_id: abandoned-cart
    name: Abandoned cart push
    status: ACTIVE
  - campaign_id: cart-email
    name: Cart reminder email
    status: ACTIVE
    published_at: 2020-01-01T00:00:00Z
    follow_on:
      trigger: {{campaign_id: abandoned-cart, kinds: [PUSH_RECEIVED]}}
      delay: {delay}
      exceptions:
        - purchase: {{}}
      message: {{channel: EMAIL, template_id: cart-15-off}}
"#
    )
}

/// A promo chain: opening the free-shipping push sends step 2 at once.
pub const PROMO_CHAIN: &str = r#"
campaigns:
  - campaign_id: free-shipping
    name: Free shipping
    status: ACTIVE
  - campaign_id: promo-2
    name: Promo step 2
    status: ACTIVE
    published_at: 2020-01-01T00:00:00Z
    follow_on:
      trigger: {campaign_id: free-shipping, kinds: [PUSH_DIRECT_OPEN]}
      delay: immediate
      message: {channel: PUSH, template_id: promo-2}
"#;

impl World {
    /// Writes the world's configuration (its `CONNECTOR_*` settings, nested the way the
    /// connector reads them from the environment) to a config file, for commands given
    /// `--config FILE`. JSON, which is YAML.
    pub fn config_file(&self) -> PathBuf {
        use campaign_connector::runtime::config::{ENV_PREFIX, NOT_KEYS};
        let mut tree = serde_json::Map::new();
        for (key, value) in &self.env {
            let Some(rest) = key
                .strip_prefix(ENV_PREFIX)
                .filter(|k| !NOT_KEYS.contains(k))
            else {
                continue;
            };
            let mut path: Vec<String> = rest.split("__").map(|s| s.to_ascii_lowercase()).collect();
            if path[0] == "kafka" && path.len() == 2 {
                // librdkafka keys use dots.
                path[1] = path[1].replace('_', ".");
            }
            // A list is written as one (`[a, b]`), everything else as text, as from the
            // environment.
            let value = serde_yaml_ng::from_str::<serde_json::Value>(value)
                .ok()
                .filter(serde_json::Value::is_array)
                .unwrap_or_else(|| serde_json::Value::String(value.clone()));
            let (last, parents) = path.split_last().unwrap();
            let mut node = &mut tree;
            for p in parents {
                node = node
                    .entry(p.clone())
                    .or_insert_with(|| serde_json::Value::Object(Default::default()))
                    .as_object_mut()
                    .unwrap();
            }
            node.insert(last.clone(), value);
        }
        let text = serde_json::to_string_pretty(&serde_json::Value::Object(tree)).unwrap();
        write_file(self.dir.path(), "config.yaml", &text)
    }

    /// Starts a CLI command with the world's configuration in the environment, without
    /// waiting for it (e.g. an operation that runs while the test produces traffic).
    pub fn spawn_cli(&self, args: &[&str]) -> CliRun {
        let name = format!("cli-{}", now_ms());
        let (stdout, stderr) = (
            self.dir.path().join(format!("{name}.out")),
            self.dir.path().join(format!("{name}.err")),
        );
        let child = Command::new(env!("CARGO_BIN_EXE_campaign-connector"))
            .args(args)
            .envs(&self.env)
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&stdout).unwrap())
            .stderr(std::fs::File::create(&stderr).unwrap())
            .spawn()
            .unwrap();
        CliRun {
            command: args.join(" "),
            child,
            started: Instant::now(),
            stdout,
            stderr,
        }
    }

    /// The partition count of a topic given by its full name; `None` when it does not exist.
    pub fn partition_count(&self, topic: &str) -> Option<usize> {
        let consumer: BaseConsumer = self.client_config().create().unwrap();
        let metadata = consumer
            .fetch_metadata(Some(topic), Duration::from_secs(10))
            .unwrap();
        metadata
            .topics()
            .iter()
            .find(|t| t.name() == topic && t.error().is_none())
            .map(|t| t.partitions().len())
            .filter(|n| *n > 0)
    }

    /// A producer of input events to partitions the caller chooses.
    pub fn event_producer(&self) -> EventProducer {
        EventProducer {
            producer: self.producer(),
            interactions: self.topic("interactions"),
            user_events: self.topic("user-events"),
            interaction_codec: Codec::new(self.topic("interactions"), &EncodingSettings::avro())
                .unwrap(),
            user_event_codec: Codec::new(self.topic("user-events"), &EncodingSettings::avro())
                .unwrap(),
        }
    }
}

/// A CLI command running in the background; killed if dropped before it ended.
pub struct CliRun {
    pub command: String,
    child: Child,
    started: Instant,
    stdout: PathBuf,
    stderr: PathBuf,
}

/// How a CLI command ended: success, stdout, stderr, and how long it ran.
#[derive(Debug)]
pub struct CliDone {
    pub ok: bool,
    pub stdout: String,
    pub stderr: String,
    pub took: Duration,
}

impl CliRun {
    /// `Some` once the command has ended.
    pub fn try_finish(&mut self) -> Option<CliDone> {
        let status = self.child.try_wait().unwrap()?;
        Some(CliDone {
            ok: status.success(),
            stdout: std::fs::read_to_string(&self.stdout).unwrap_or_default(),
            stderr: std::fs::read_to_string(&self.stderr).unwrap_or_default(),
            took: self.started.elapsed(),
        })
    }

    /// How long it has been running.
    pub fn running_for(&self) -> Duration {
        self.started.elapsed()
    }

    /// Waits for the end; panics (and kills it) after `deadline`, with what it wrote so far.
    pub fn wait(mut self, deadline: Duration) -> CliDone {
        loop {
            if let Some(done) = self.try_finish() {
                return done;
            }
            if self.started.elapsed() > deadline {
                panic!(
                    "`{}` did not end within {deadline:?}; its output so far:\n{}{}",
                    self.command,
                    std::fs::read_to_string(&self.stdout).unwrap_or_default(),
                    std::fs::read_to_string(&self.stderr).unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for CliRun {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Produces input events (Avro single-object encoding, keyed by user id) to a partition the
/// caller chooses, as an upstream producer with a partition count of its own does — one
/// whose metadata is stale after the inputs grew, or one that has refreshed it.
pub struct EventProducer {
    producer: BaseProducer,
    interactions: String,
    user_events: String,
    interaction_codec: Codec<Interaction>,
    user_event_codec: Codec<UserEvent>,
}

impl EventProducer {
    /// Produces one event to `partition` of its topic (the local queue is drained when
    /// full; a partition the client does not know yet is waited for, up to 30 s). Returns
    /// the topic.
    pub fn send_to(&self, event: &InputEvent, partition: i32) -> &str {
        use rdkafka::error::{KafkaError, RDKafkaErrorCode};
        let (topic, bytes) = match event {
            InputEvent::Interaction(i) => (
                &self.interactions,
                self.interaction_codec.encode(i).unwrap(),
            ),
            InputEvent::UserEvent(u) => {
                (&self.user_events, self.user_event_codec.encode(u).unwrap())
            }
        };
        let started = Instant::now();
        let mut record = BaseRecord::to(topic)
            .key(event.user_id())
            .payload(&bytes)
            .partition(partition);
        loop {
            match self.producer.send(record) {
                Ok(()) => return topic,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                    record = r;
                    self.producer.poll(Duration::from_millis(5));
                }
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::UnknownPartition), r))
                    if started.elapsed() < Duration::from_secs(30) =>
                {
                    // The client's metadata predates the partition: ask again.
                    record = r;
                    let _ = self
                        .producer
                        .client()
                        .fetch_metadata(Some(topic), Duration::from_secs(5));
                    std::thread::sleep(Duration::from_millis(100));
                }
                Err((e, _)) => panic!("producing to {topic} partition {partition}: {e}"),
            }
        }
    }

    /// Serves delivery reports without waiting (call it now and then while producing;
    /// librdkafka sends on its own within its linger time).
    pub fn poll(&self) {
        self.producer.poll(Duration::ZERO);
    }

    /// Waits until everything produced is acknowledged.
    pub fn flush(&self) {
        self.producer
            .flush(Duration::from_secs(30))
            .unwrap_or_else(|e| panic!("flushing the event producer: {e}"));
    }
}

/// The simulator's JSONL input: one `{"interaction": ...}` or `{"user_event": ...}` per
/// line, in the given order.
pub fn events_jsonl(events: &[InputEvent]) -> String {
    let mut text = String::with_capacity(events.len() * 256);
    for e in events {
        let line = match e {
            InputEvent::Interaction(i) => serde_json::json!({ "interaction": i }),
            InputEvent::UserEvent(u) => serde_json::json!({ "user_event": u }),
        };
        text.push_str(&line.to_string());
        text.push('\n');
    }
    text
}

/// A send-command as `simulate --format jsonl` prints it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimulatedSend {
    pub user_id: String,
    pub campaign_id: String,
    pub command_id: String,
    pub trigger_event_id: String,
    pub due_at: i64,
}

impl World {
    /// Runs `simulate` with a campaigns file on `events` in the given order (both written
    /// into the world's directory); returns its send-commands. Fails unless it exits 0.
    pub fn simulate(&self, campaigns_yaml: &str, events: &[InputEvent]) -> Vec<SimulatedSend> {
        let events_file = write_file(
            self.dir.path(),
            "simulate-events.jsonl",
            &events_jsonl(events),
        );
        let campaigns_file = write_file(self.dir.path(), "simulate-campaigns.yaml", campaigns_yaml);
        let out = Command::new(env!("CARGO_BIN_EXE_campaign-connector"))
            .arg("simulate")
            .arg("--campaigns")
            .arg(&campaigns_file)
            .arg("--events")
            .arg(&events_file)
            .args(["--format", "jsonl"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "simulate failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = |v: &serde_json::Value| {
            v.as_str()
                .unwrap_or_else(|| panic!("not a string in simulate's output: {v}"))
                .to_string()
        };
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|line| {
                let v: serde_json::Value =
                    serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
                let c = v.get("send_command")?;
                Some(SimulatedSend {
                    user_id: text(&c["user_id"]),
                    campaign_id: text(&c["campaign_id"]),
                    command_id: text(&c["command_id"]),
                    trigger_event_id: text(&c["trigger"]["event_id"]),
                    due_at: campaign_connector::time::parse_timestamp(&text(&c["due_at"])).unwrap(),
                })
            })
            .collect()
    }
}
