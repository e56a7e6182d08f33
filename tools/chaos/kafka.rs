//! The harness's own Kafka clients. They talk to the brokers' direct listener, never through
//! the proxies, so the network faults hit only the connector.
//!
//! - a workload producer (idempotent, `acks=all`, the Java client's key hashing) that reports
//!   where each record landed;
//! - the connector group's committed offsets (its progress and lag);
//! - the group's members and assignments (who owns which task);
//! - cluster metadata: partition leaders, coordinators, replica health;
//! - `read_committed` readers that read a topic to its end offsets.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::{ClientContext, Offset, TopicPartitionList};

pub fn client(bootstrap: &str) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", bootstrap)
        // The harness must not be the one that gives up during a broker bounce.
        .set("socket.timeout.ms", "30000")
        .set("log_level", "3");
    c
}

// ------------------------------------------------------------------------------- producer

/// Where a record landed (partition, offset), or why it did not.
type Delivery = Result<(i32, i64), String>;

#[derive(Default)]
pub struct Deliveries {
    /// Index of the record in its batch → its delivery.
    results: Mutex<BTreeMap<usize, Delivery>>,
}

impl ClientContext for Deliveries {}

impl ProducerContext for Deliveries {
    type DeliveryOpaque = Box<usize>;
    fn delivery(&self, result: &DeliveryResult<'_>, index: Box<usize>) {
        let r = match result {
            Ok(m) => Ok((m.partition(), m.offset())),
            Err((e, _)) => Err(e.to_string()),
        };
        self.results
            .lock()
            .expect("deliveries lock")
            .insert(*index, r);
    }
}

pub struct WorkloadProducer {
    producer: BaseProducer<Deliveries>,
    transactional: bool,
}

impl WorkloadProducer {
    /// `transactional_id`: write each batch in one transaction, as an upstream application
    /// with exactly-once output does (its partitions then end in transaction markers).
    pub fn new(bootstrap: &str, transactional_id: Option<&str>) -> Result<Self, String> {
        let mut config = client(bootstrap);
        if let Some(id) = transactional_id {
            config.set("transactional.id", id);
        }
        let producer: BaseProducer<Deliveries> = config
            .set("enable.idempotence", "true")
            .set("acks", "all")
            // Hash keys like the Java client, as the connector's co-partitioning expects.
            .set("partitioner", "murmur2_random")
            .set("linger.ms", "50")
            // Batches small enough for the connector's small fetches (a fetch returns at
            // least one whole batch).
            .set("batch.size", "16384")
            .set("message.timeout.ms", "600000")
            .create_with_context(Deliveries::default())
            .map_err(|e| e.to_string())?;
        if transactional_id.is_some() {
            producer
                .init_transactions(Duration::from_secs(60))
                .map_err(|e| format!("init_transactions: {e}"))?;
        }
        Ok(Self {
            producer,
            transactional: transactional_id.is_some(),
        })
    }

    /// Produces `records` (topic, key, value) in order and waits for every delivery. Returns
    /// where each landed. Idempotence keeps the order within a partition across retries; a
    /// failed delivery fails the run (the input would no longer be what the oracle saw).
    pub fn produce(&self, records: &[(&str, &str, &[u8])]) -> Result<Vec<(i32, i64)>, String> {
        self.producer
            .context()
            .results
            .lock()
            .expect("deliveries lock")
            .clear();
        if self.transactional {
            self.producer
                .begin_transaction()
                .map_err(|e| format!("begin_transaction: {e}"))?;
        }
        for (i, (topic, key, value)) in records.iter().enumerate() {
            let mut record = BaseRecord::with_opaque_to(topic, Box::new(i))
                .key(*key)
                .payload(*value);
            loop {
                match self.producer.send(record) {
                    Ok(()) => break,
                    Err((e, r)) => {
                        // Queue full: let deliveries drain.
                        if !matches!(
                            e.rdkafka_error_code(),
                            Some(rdkafka::types::RDKafkaErrorCode::QueueFull)
                        ) {
                            return Err(format!("produce to {topic}: {e}"));
                        }
                        record = r;
                        self.producer.poll(Duration::from_millis(50));
                    }
                }
            }
            self.producer.poll(Duration::ZERO);
        }
        if self.transactional {
            self.producer
                .commit_transaction(Duration::from_secs(600))
                .map_err(|e| format!("commit_transaction: {e}"))?;
        }
        self.producer
            .flush(Duration::from_secs(600))
            .map_err(|e| format!("flush: {e}"))?;
        let results = std::mem::take(
            &mut *self
                .producer
                .context()
                .results
                .lock()
                .expect("deliveries lock"),
        );
        if results.len() != records.len() {
            return Err(format!(
                "{} of {} deliveries reported",
                results.len(),
                records.len()
            ));
        }
        results.into_values().collect()
    }
}

// ------------------------------------------------------------------------------- offsets

/// Reads the connector group's committed offsets (outside the group: OffsetFetch only).
pub struct GroupOffsets {
    consumer: BaseConsumer,
    group: String,
}

impl GroupOffsets {
    pub fn new(bootstrap: &str, group: &str) -> Result<Self, String> {
        // read_uncommitted: OffsetFetch then does not wait for offsets of open transactions
        // (require_stable); it reports what is committed.
        let consumer = client(bootstrap)
            .set("group.id", group)
            .set("enable.auto.commit", "false")
            .set("isolation.level", "read_uncommitted")
            .create()
            .map_err(|e| e.to_string())?;
        Ok(Self {
            consumer,
            group: group.to_string(),
        })
    }

    /// Committed offset of every (topic, partition); 0 where nothing is committed yet,
    /// `None` where the answer was an error.
    pub fn committed(
        &self,
        partitions: &[(String, i32)],
        timeout: Duration,
    ) -> Result<Vec<Option<i64>>, String> {
        let mut tpl = TopicPartitionList::new();
        for (t, p) in partitions {
            tpl.add_partition(t, *p);
        }
        let got = self
            .consumer
            .committed_offsets(tpl, timeout)
            .map_err(|e| e.to_string())?;
        Ok(partitions
            .iter()
            .map(|(t, p)| match got.find_partition(t, *p) {
                Some(e) if e.error().is_err() => None,
                Some(e) => match e.offset() {
                    Offset::Offset(o) => Some(o),
                    _ => Some(0),
                },
                None => None,
            })
            .collect())
    }

    /// The group's state and each member's client id and assigned (topic, partition)s.
    pub fn members(&self, timeout: Duration) -> Result<GroupView, String> {
        let list = self
            .consumer
            .fetch_group_list(Some(&self.group), timeout)
            .map_err(|e| e.to_string())?;
        let Some(g) = list.groups().first() else {
            return Ok(GroupView::default());
        };
        let mut members = Vec::new();
        for m in g.members() {
            let assigned = m.assignment().map(parse_assignment).unwrap_or_default();
            members.push(Member {
                client_id: m.client_id().to_string(),
                member_id: m.id().to_string(),
                assigned,
            });
        }
        members.sort();
        Ok(GroupView {
            state: g.state().to_string(),
            members,
        })
    }
}

/// A member of the group: an instance has one per processing thread, all with the
/// instance's id as client id.
#[derive(Debug, Clone, Default, PartialEq, Eq, PartialOrd, Ord)]
pub struct Member {
    pub client_id: String,
    pub member_id: String,
    pub assigned: BTreeSet<(String, i32)>,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct GroupView {
    pub state: String,
    pub members: Vec<Member>,
}

impl GroupView {
    /// Tasks whose input partitions are not all held by one member.
    pub fn split_tasks(&self, inputs: &[String], partitions: i32) -> Vec<i32> {
        (0..partitions)
            .filter(|p| {
                let holders: Vec<Vec<&str>> = inputs
                    .iter()
                    .map(|t| {
                        self.members
                            .iter()
                            .filter(|m| m.assigned.contains(&(t.clone(), *p)))
                            .map(|m| m.member_id.as_str())
                            .collect()
                    })
                    .collect();
                holders.iter().any(|h| h.len() != 1 || *h != holders[0])
            })
            .collect()
    }

    /// The instances (client ids) in the group.
    pub fn instances(&self) -> BTreeSet<&str> {
        self.members.iter().map(|m| m.client_id.as_str()).collect()
    }

    /// Every input partition assigned to exactly one member.
    pub fn fully_assigned(&self, inputs: &[String], partitions: i32) -> bool {
        inputs.iter().all(|t| {
            (0..partitions).all(|p| {
                self.members
                    .iter()
                    .filter(|m| m.assigned.contains(&(t.clone(), p)))
                    .count()
                    == 1
            })
        })
    }
}

/// The consumer protocol's Assignment: version (i16), [topic (string), [partition (i32)]],
/// user data. Anything unreadable yields what was read so far.
fn parse_assignment(bytes: &[u8]) -> BTreeSet<(String, i32)> {
    let mut out = BTreeSet::new();
    let mut r = bytes;
    let take = |r: &mut &[u8], n: usize| -> Option<Vec<u8>> {
        (r.len() >= n).then(|| {
            let (a, b) = r.split_at(n);
            *r = b;
            a.to_vec()
        })
    };
    let i16_ = |r: &mut &[u8]| take(r, 2).map(|b| i16::from_be_bytes([b[0], b[1]]));
    let i32_ = |r: &mut &[u8]| take(r, 4).map(|b| i32::from_be_bytes([b[0], b[1], b[2], b[3]]));
    let _version = i16_(&mut r);
    let Some(topics) = i32_(&mut r) else {
        return out;
    };
    for _ in 0..topics.max(0) {
        let Some(len) = i16_(&mut r) else { return out };
        let Some(name) = take(&mut r, len.max(0) as usize) else {
            return out;
        };
        let name = String::from_utf8_lossy(&name).into_owned();
        let Some(n) = i32_(&mut r) else { return out };
        for _ in 0..n.max(0) {
            let Some(p) = i32_(&mut r) else { return out };
            out.insert((name.clone(), p));
        }
    }
    out
}

// ------------------------------------------------------------------------------- metadata

pub struct Cluster {
    consumer: BaseConsumer,
}

/// Java's `String.hashCode`, for the coordinator a key maps to.
fn java_hash(s: &str) -> i32 {
    s.encode_utf16()
        .fold(0i32, |h, c| h.wrapping_mul(31).wrapping_add(i32::from(c)))
}

/// Kafka's `Utils.abs`.
fn kafka_abs(n: i32) -> i32 {
    if n == i32::MIN {
        0
    } else {
        n.abs()
    }
}

impl Cluster {
    pub fn new(bootstrap: &str) -> Result<Self, String> {
        let consumer = client(bootstrap)
            .set("group.id", "chaos-metadata")
            .create()
            .map_err(|e| e.to_string())?;
        Ok(Self { consumer })
    }

    /// Leader of every partition of `topic`.
    pub fn leaders(&self, topic: &str) -> Result<Vec<(i32, i32)>, String> {
        let md = self
            .consumer
            .fetch_metadata(Some(topic), Duration::from_secs(10))
            .map_err(|e| e.to_string())?;
        Ok(md
            .topics()
            .first()
            .map(|t| {
                t.partitions()
                    .iter()
                    .map(|p| (p.id(), p.leader()))
                    .collect()
            })
            .unwrap_or_default())
    }

    /// The broker coordinating `key` in an internal topic (`__transaction_state` for a
    /// transactional id, `__consumer_offsets` for a group).
    pub fn coordinator(&self, internal_topic: &str, key: &str) -> Result<i32, String> {
        let leaders = self.leaders(internal_topic)?;
        if leaders.is_empty() {
            return Err(format!("{internal_topic} has no partitions yet"));
        }
        let p = kafka_abs(java_hash(key)) % leaders.len() as i32;
        leaders
            .iter()
            .find(|(id, _)| *id == p)
            .map(|(_, l)| *l)
            .ok_or_else(|| format!("{internal_topic}[{p}] not found"))
    }

    /// Brokers in the metadata, and partitions (of any topic) with fewer in-sync replicas
    /// than replicas or without a leader.
    pub fn health(&self) -> Result<(usize, usize), String> {
        let md = self
            .consumer
            .fetch_metadata(None, Duration::from_secs(10))
            .map_err(|e| e.to_string())?;
        let degraded = md
            .topics()
            .iter()
            .flat_map(|t| t.partitions())
            .filter(|p| p.leader() < 0 || p.isr().len() < p.replicas().len())
            .count();
        Ok((md.brokers().len(), degraded))
    }
}

// ------------------------------------------------------------------------------- readers

/// A record read back.
#[derive(Debug, Clone)]
pub struct Read {
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub payload: Option<Vec<u8>>,
    pub headers: BTreeMap<String, String>,
}

/// Watermarks of every partition of `topic`: (low, high) as `isolation` sees them — for
/// `read_committed` the high one is the last stable offset.
pub fn watermarks(bootstrap: &str, topic: &str, isolation: &str) -> Result<Vec<i64>, String> {
    let c: BaseConsumer = client(bootstrap)
        .set("group.id", "chaos-watermarks")
        .set("isolation.level", isolation)
        .create()
        .map_err(|e| e.to_string())?;
    let md = c
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .map_err(|e| e.to_string())?;
    let n = md.topics().first().map_or(0, |t| t.partitions().len());
    (0..n as i32)
        .map(|p| {
            c.fetch_watermarks(topic, p, Duration::from_secs(10))
                .map(|(_, h)| h)
                .map_err(|e| format!("{topic}[{p}]: {e}"))
        })
        .collect()
}

/// Last stable offsets of one topic (the end a `read_committed` reader sees), from a client
/// kept open (for sampling). Not the high watermark: records of a transaction still open
/// (a commit held up by a broker restart or a stall) are below the high watermark long
/// before they are committed, and a sample must not count them as written yet.
pub struct Watermarks {
    consumer: BaseConsumer,
    topic: String,
    partitions: i32,
}

impl Watermarks {
    pub fn new(bootstrap: &str, topic: &str, partitions: i32) -> Result<Self, String> {
        let consumer = client(bootstrap)
            .set("group.id", "chaos-watermarks")
            .set("isolation.level", "read_committed")
            .create()
            .map_err(|e| e.to_string())?;
        Ok(Self {
            consumer,
            topic: topic.to_string(),
            partitions,
        })
    }

    pub fn ends(&self) -> Result<Vec<i64>, String> {
        (0..self.partitions)
            .map(|p| {
                self.consumer
                    .fetch_watermarks(&self.topic, p, Duration::from_secs(5))
                    .map(|(_, h)| h)
                    .map_err(|e| e.to_string())
            })
            .collect()
    }
}

/// Waits until no transaction is open on `topic` (last stable offset = high watermark on
/// every partition): then a `read_committed` reader that reaches the end has seen
/// everything that will ever be visible.
pub fn wait_stable(bootstrap: &str, topic: &str, deadline: Duration) -> Result<Vec<i64>, String> {
    let started = Instant::now();
    loop {
        let high = watermarks(bootstrap, topic, "read_uncommitted")?;
        let stable = watermarks(bootstrap, topic, "read_committed")?;
        if high == stable {
            return Ok(high);
        }
        if started.elapsed() > deadline {
            return Err(format!(
                "{topic}: transactions still open after {deadline:?} (high {high:?}, stable {stable:?})"
            ));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Reads every partition of `topic` with `read_committed` until its position reaches `ends`.
pub fn read_to(
    bootstrap: &str,
    topic: &str,
    ends: &[i64],
    deadline: Duration,
) -> Result<Vec<Read>, String> {
    let c: BaseConsumer = client(bootstrap)
        .set("group.id", "chaos-verifier")
        .set("isolation.level", "read_committed")
        .set("enable.auto.commit", "false")
        .set("enable.partition.eof", "false")
        .create()
        .map_err(|e| e.to_string())?;
    let mut tpl = TopicPartitionList::new();
    for p in 0..ends.len() as i32 {
        tpl.add_partition_offset(topic, p, Offset::Beginning)
            .map_err(|e| e.to_string())?;
    }
    c.assign(&tpl).map_err(|e| e.to_string())?;
    let started = Instant::now();
    let mut out = Vec::new();
    loop {
        // The position moves past transaction markers too, so it reaches the end offset.
        let pos = c.position().map_err(|e| e.to_string())?;
        let done = (0..ends.len() as i32).all(|p| {
            let end = ends[p as usize];
            end == 0
                || matches!(pos.find_partition(topic, p).map(|e| e.offset()),
                            Some(Offset::Offset(o)) if o >= end)
        });
        if done {
            return Ok(out);
        }
        if started.elapsed() > deadline {
            return Err(format!(
                "{topic}: not read to its end offsets {ends:?} within {deadline:?} (position {pos:?})"
            ));
        }
        match c.poll(Duration::from_millis(200)) {
            Some(Ok(m)) => {
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
                out.push(Read {
                    partition: m.partition(),
                    offset: m.offset(),
                    key: m.key().map(<[u8]>::to_vec),
                    payload: m.payload().map(<[u8]>::to_vec),
                    headers,
                });
            }
            Some(Err(e)) => return Err(format!("{topic}: {e}")),
            None => {}
        }
    }
}

/// A `read_committed` reader of a whole topic from its beginning, read as records arrive
/// (for conditions such as "the expected number of commands is there" while instances run).
pub struct Tail {
    consumer: BaseConsumer,
}

impl Tail {
    pub fn new(bootstrap: &str, topic: &str, partitions: i32) -> Result<Self, String> {
        let consumer: BaseConsumer = client(bootstrap)
            .set("group.id", "chaos-tail")
            .set("isolation.level", "read_committed")
            .set("enable.auto.commit", "false")
            .create()
            .map_err(|e| e.to_string())?;
        let mut tpl = TopicPartitionList::new();
        for p in 0..partitions {
            tpl.add_partition_offset(topic, p, Offset::Beginning)
                .map_err(|e| e.to_string())?;
        }
        consumer.assign(&tpl).map_err(|e| e.to_string())?;
        Ok(Self { consumer })
    }

    /// Hands every record that arrives within `d` to `f` (partition, key, value).
    pub fn poll_for(&mut self, d: Duration, mut f: impl FnMut(i32, Option<&[u8]>, Option<&[u8]>)) {
        let until = Instant::now() + d;
        while Instant::now() < until {
            if let Some(Ok(m)) = self.consumer.poll(Duration::from_millis(50)) {
                f(m.partition(), m.key(), m.payload());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn java_string_hash_and_assignment_bytes() {
        assert_eq!(java_hash(""), 0);
        assert_eq!(java_hash("abc"), 96354);
        // "polygenelubricants".hashCode() == Integer.MIN_VALUE, which Utils.abs maps to 0.
        assert_eq!(java_hash("polygenelubricants"), i32::MIN);
        assert_eq!(kafka_abs(i32::MIN), 0);
        let mut b = vec![0, 3, 0, 0, 0, 1, 0, 2];
        b.extend_from_slice(b"ab");
        b.extend_from_slice(&[0, 0, 0, 2, 0, 0, 0, 4, 0, 0, 0, 5, 0, 0, 0, 0]);
        let got = parse_assignment(&b);
        assert_eq!(
            got.into_iter().collect::<Vec<_>>(),
            [("ab".to_string(), 4), ("ab".to_string(), 5)]
        );
    }
}
