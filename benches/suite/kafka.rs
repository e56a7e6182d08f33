//! The benchmark's own Kafka clients: producing the workload, creating topics, watching a
//! group's committed offsets, reading an output topic to its end.

use std::time::{Duration, Instant};

use campaign_connector::codec::{Codec, EncodingSettings};
use campaign_connector::model::{InputEvent, Interaction, SendCommand, UserEvent};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};

use crate::process::now_ms;

const TIMEOUT: Duration = Duration::from_secs(10);

/// The two input topics of one workload.
#[derive(Clone, Debug)]
pub struct Inputs {
    pub interactions: String,
    pub user_events: String,
}

impl Inputs {
    pub fn both(&self) -> [&str; 2] {
        [&self.interactions, &self.user_events]
    }
}

/// Produces input events, Avro single-object encoded as the connector reads them by default,
/// keyed by user id, with the record timestamp set to `occurred_at` (Kafka Streams orders by it).
pub struct EventProducer {
    producer: BaseProducer,
    interactions: Codec<Interaction>,
    user_events: Codec<UserEvent>,
    inputs: Inputs,
    buf: Vec<u8>,
    pub sent: u64,
}

impl EventProducer {
    /// `linger_ms`: 20 for a backlog, a few for a live stream.
    pub fn new(bootstrap: &str, inputs: &Inputs, linger_ms: u32) -> Self {
        let producer: BaseProducer = ClientConfig::new()
            .set("bootstrap.servers", bootstrap)
            .set("partitioner", "murmur2_random")
            .set("linger.ms", linger_ms.to_string())
            .set("queue.buffering.max.messages", "1000000")
            .create()
            .expect("producer");
        Self {
            producer,
            interactions: Codec::new(&inputs.interactions, &EncodingSettings::avro()).unwrap(),
            user_events: Codec::new(&inputs.user_events, &EncodingSettings::avro()).unwrap(),
            inputs: inputs.clone(),
            buf: Vec::with_capacity(512),
            sent: 0,
        }
    }

    pub fn send(&mut self, event: &InputEvent) {
        self.buf.clear();
        let topic = match event {
            InputEvent::Interaction(i) => {
                self.interactions.encode_into(i, &mut self.buf).unwrap();
                &self.inputs.interactions
            }
            InputEvent::UserEvent(u) => {
                self.user_events.encode_into(u, &mut self.buf).unwrap();
                &self.inputs.user_events
            }
        };
        let mut record = BaseRecord::to(topic)
            .key(event.user_id())
            .payload(&self.buf)
            .timestamp(event.occurred_at());
        loop {
            match self.producer.send(record) {
                Ok(()) => break,
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                    record = r;
                    self.producer.poll(Duration::from_millis(5));
                }
                Err((e, _)) => panic!("producing: {e}"),
            }
        }
        self.sent += 1;
    }

    pub fn poll(&self) {
        self.producer.poll(Duration::ZERO);
    }

    pub fn flush(&self) {
        self.producer
            .flush(Duration::from_secs(300))
            .expect("flushing the workload");
    }
}

/// Creates plain topics (existing ones are left alone).
pub fn create_topics(bootstrap: &str, names: &[&str], partitions: i32) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .create()
        .expect("admin client");
    let topics: Vec<NewTopic> = names
        .iter()
        .map(|n| NewTopic::new(n, partitions, TopicReplication::Fixed(1)))
        .collect();
    let options = AdminOptions::new().operation_timeout(Some(TIMEOUT));
    let results = futures_executor::block_on(admin.create_topics(topics.iter(), &options))
        .expect("create topics");
    for r in results {
        match r {
            Ok(_) | Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => panic!("creating {topic}: {code}"),
        }
    }
}

/// Watches the committed offsets of a consumer group on the input topics.
pub struct CommitWatch {
    consumer: BaseConsumer,
    group: String,
    tpl: TopicPartitionList,
    last: std::cell::Cell<u64>,
}

impl CommitWatch {
    pub fn new(bootstrap: &str, group: &str, inputs: &Inputs, partitions: i32) -> Self {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", bootstrap)
            .set("group.id", group)
            .set("enable.auto.commit", "false")
            // librdkafka asks for *stable* offsets under read_committed: with a transaction
            // open nearly all the time, the answer would be "unstable, retry" for seconds.
            // Read uncommitted, the broker answers with the last committed offsets at once.
            .set("isolation.level", "read_uncommitted")
            .create()
            .expect("consumer");
        let mut tpl = TopicPartitionList::new();
        for topic in inputs.both() {
            for p in 0..partitions {
                tpl.add_partition(topic, p);
            }
        }
        // Connected and the group looked up before the system starts: the first such call
        // of a fresh client waits for its broker connections (about a second), which would
        // put the window's start late.
        let _ = consumer.fetch_metadata(None, TIMEOUT);
        let _ = consumer.fetch_group_list(Some(group), TIMEOUT);
        Self {
            consumer,
            group: group.to_string(),
            tpl,
            last: std::cell::Cell::new(0),
        }
    }

    /// Whether the group has (at least) `members` members and is done rebalancing: from
    /// then on every member of the system fetches (start-up — JVM, catalog load, group join,
    /// and the rebalance a later member's join causes — is behind it).
    pub fn group_stable(&self, members: usize) -> bool {
        self.consumer
            .fetch_group_list(Some(&self.group), TIMEOUT)
            .map(|list| {
                list.groups()
                    .iter()
                    .any(|g| g.state() == "Stable" && g.members().len() >= members.max(1))
            })
            .unwrap_or(false)
    }

    /// The sum of the committed offsets (records covered by commits); the last answer when
    /// the broker does not answer.
    pub fn committed(&self) -> u64 {
        if let Ok(c) = self.consumer.committed_offsets(self.tpl.clone(), TIMEOUT) {
            let sum = c
                .elements()
                .iter()
                .map(|e| match e.offset() {
                    Offset::Offset(o) => o.max(0) as u64,
                    _ => 0,
                })
                .sum();
            self.last.set(sum);
        }
        self.last.get()
    }
}

/// A `read_committed` reader of every partition of a topic, from the beginning.
pub struct OutputReader {
    consumer: BaseConsumer,
    topic: String,
}

/// A record read: when it arrived (wall clock, ms) and its value.
pub struct Received {
    pub at_ms: i64,
    pub payload: Vec<u8>,
}

impl OutputReader {
    pub fn new(bootstrap: &str, topic: &str) -> Self {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", bootstrap)
            .set("group.id", format!("bench-reader-{topic}"))
            .set("enable.auto.commit", "false")
            .set("isolation.level", "read_committed")
            .set("fetch.queue.backoff.ms", "10")
            .create()
            .expect("consumer");
        let metadata = consumer
            .fetch_metadata(Some(topic), TIMEOUT)
            .expect("metadata");
        let mut tpl = TopicPartitionList::new();
        for p in metadata.topics()[0].partitions() {
            tpl.add_partition_offset(topic, p.id(), Offset::Beginning)
                .unwrap();
        }
        consumer.assign(&tpl).expect("assign");
        Self {
            consumer,
            topic: topic.to_string(),
        }
    }

    /// Whatever arrives within `wait`.
    pub fn poll(&self, wait: Duration, out: &mut Vec<Received>) {
        let until = Instant::now() + wait;
        let mut left = wait;
        loop {
            match self.consumer.poll(left) {
                Some(Ok(m)) => out.push(Received {
                    at_ms: now_ms(),
                    payload: m.payload().unwrap_or_default().to_vec(),
                }),
                Some(Err(e)) => eprintln!("reading {}: {e}", self.topic),
                None => {}
            }
            left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return;
            }
        }
    }

    /// Reads until the position of every partition reaches its high watermark as it is now
    /// (for `read_committed`, its writers must have stopped).
    pub fn read_to_end(&self, out: &mut Vec<Received>) {
        let assignment = self.consumer.assignment().expect("assignment");
        let high: Vec<(i32, i64)> = assignment
            .elements()
            .iter()
            .map(|e| {
                let (_, h) = self
                    .consumer
                    .fetch_watermarks(e.topic(), e.partition(), TIMEOUT)
                    .expect("watermarks");
                (e.partition(), h)
            })
            .collect();
        let started = Instant::now();
        loop {
            let position = self.consumer.position().expect("position");
            let behind = high.iter().any(|(p, h)| {
                let at = position
                    .elements()
                    .iter()
                    .find(|e| e.partition() == *p)
                    .and_then(|e| match e.offset() {
                        Offset::Offset(o) => Some(o),
                        _ => None,
                    })
                    .unwrap_or(0);
                at < *h
            });
            if !behind {
                return;
            }
            assert!(
                started.elapsed() < Duration::from_secs(300),
                "{} not read to its end after 5 minutes",
                self.topic
            );
            self.poll(Duration::from_millis(200), out);
        }
    }
}

/// Decodes send-commands (Avro single-object, as both the connector and the Kafka Streams
/// application write them).
pub fn decode_commands(records: &[Received]) -> Vec<SendCommand> {
    let codec: Codec<SendCommand> = Codec::new("send-commands", &EncodingSettings::avro()).unwrap();
    records
        .iter()
        .map(|r| codec.decode(&r.payload).expect("a send-command"))
        .collect()
}
