//! Output: the one place effects are executed. Send-commands, decisions, changelog
//! records, dead letters and input offsets all go through [`Output`], inside the open
//! transaction (exactly-once) or before the offsets that cover them (at-least-once).
//!
//! ```text
//!   engine effects ─┐
//!   dead letters ───┼─► Output ─► transactional producer ─► send-commands, decisions,
//!   changelog ──────┤                                       shadow, changelog[p], dlq
//!   input offsets ──┘   commit: send_offsets_to_transaction + commit_transaction
//! ```
//!
//! A `SHADOW` follow-on's effects arrive as [`Effect::Shadow`] and go to the shadow topic
//! only, in the same transaction as everything else: its would-be send-commands never
//! reach `send-commands`, its decisions never the decision log.

use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, ConsumerGroupMetadata};
use rdkafka::error::{KafkaError, KafkaResult, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::ClientContext;
use rdkafka::{ClientConfig, TopicPartitionList};
use tracing::warn;

use super::codecs::Codecs;
use super::config::{ProcessingGuarantee, Settings};
use super::error::RuntimeError;
use super::kafka::{base_config, flush_promptly, PRODUCER_DEFAULTS};
use super::metrics::Metrics;
use super::rules::awaited;
use super::task::{Arrived, BadInput, Task};
use crate::codec::{write_user_state_datum, Codec, EncodeError, OwnDatum};
use crate::engine::Effect;
use crate::model::TaskStateRecord;

/// Bound of a transaction call (commit, offsets). Short enough that the loop keeps its
/// heartbeat while the broker is away; a timed-out commit is repeated (librdkafka allows
/// that for retriable errors), so a short bound loses nothing.
pub const TXN_CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// Bound of an abort: when it does not finish in time the producer is re-created instead,
/// which fences it and aborts the transaction on the broker.
const ABORT_TIMEOUT: Duration = Duration::from_secs(2);
/// `init_transactions` of a new producer: it waits for the previous incarnation's
/// transaction to be aborted.
const INIT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a retriable `init_transactions` failure is retried before it is an error.
const INIT_RETRY: Duration = Duration::from_secs(30);
/// How long past its own bound the loop waits for `send_offsets_to_transaction` before it
/// gives the producer up (see [`send_offsets`]).
const OFFSETS_GRACE: Duration = Duration::from_secs(2);

/// Where a dead letter came from.
pub struct Source<'a> {
    pub topic: &'a str,
    pub partition: i32,
    pub offset: i64,
    pub key: Option<&'a [u8]>,
    pub payload: Option<&'a [u8]>,
}

impl<'a> Source<'a> {
    /// An input record as it arrived on `topic[partition]`.
    pub fn of(topic: &'a str, partition: i32, arrived: &'a Arrived) -> Self {
        Self {
            topic,
            partition,
            offset: arrived.offset,
            key: arrived.key.as_deref(),
            payload: arrived.payload.as_deref(),
        }
    }
}

/// The output producer's context: it counts failed deliveries, the only reports the
/// producer gets (`delivery.report.only.error`). A transaction with a failed record cannot
/// commit (librdkafka makes it abortable); at-least-once has no transaction, so its commit
/// asks here before it commits offsets past records that were never written.
///
/// Every record carries the epoch it was produced in; dropping the output (an abort, a
/// rewind) starts a new epoch, and a failure reported later for a record of an older epoch
/// is not counted: that record's input is processed again anyway.
#[derive(Default)]
pub struct DeliveryWatch {
    epoch: std::sync::atomic::AtomicUsize,
    failed: std::sync::Mutex<Option<(u64, String, KafkaError)>>,
}

impl ClientContext for DeliveryWatch {}

impl ProducerContext for DeliveryWatch {
    type DeliveryOpaque = usize;

    fn delivery(&self, result: &DeliveryResult<'_>, epoch: usize) {
        if let Err((error, message)) = result {
            if epoch != self.epoch() {
                return;
            }
            use rdkafka::message::Message;
            let record = format!("{}[{}]", message.topic(), message.partition());
            let mut failed = self.failed.lock().unwrap_or_else(|p| p.into_inner());
            let count = failed.as_ref().map_or(0, |f| f.0) + 1;
            *failed = Some((count, record, error.clone()));
        }
    }
}

impl DeliveryWatch {
    fn epoch(&self) -> usize {
        self.epoch.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The failed deliveries since the last call: how many, and the last one's partition
    /// and error.
    fn take_failed(&self) -> Option<(u64, String, KafkaError)> {
        self.failed.lock().unwrap_or_else(|p| p.into_inner()).take()
    }

    /// The output produced so far is dropped: failures of it, reported or still to come,
    /// no longer count.
    fn next_epoch(&self) {
        self.epoch
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.take_failed();
    }
}

pub struct Output {
    /// Shared with the helper thread of a commit in flight ([`Output::start_commit`]), and
    /// with one that may still be inside a call the loop stopped waiting for (see
    /// [`send_offsets`]); the loop is its one user otherwise.
    producer: Arc<BaseProducer<DeliveryWatch>>,
    /// A transactional call did not return within its bound: the producer is not used
    /// again, only replaced.
    wedged: bool,
    exactly_once: bool,
    /// A transaction is open (exactly-once) / output is unflushed (at-least-once).
    open: bool,
    send_commands: String,
    decisions: Option<String>,
    changelog: String,
    dlq: String,
    shadow: String,
    buffer: Vec<u8>,
    /// The open transaction holds a send its user waits for (see [`awaited`]).
    awaited: bool,
    /// Partition counts the producer was seen to know, by topic (see `knows_partition`).
    known_partitions: std::collections::HashMap<String, usize>,
    /// The producer's handles of the topics written so far (a handful), replaced with it.
    handles: Vec<TopicHandle>,
    /// The commit running on its helper thread, if one is.
    committing: Option<Committing>,
    /// Records produced while a commit is in flight, for the transaction after it.
    held: Held,
}

/// A commit in flight: exactly-once, the transaction's offsets, flush and commit;
/// at-least-once, the flush of everything produced before it. It runs on a helper thread
/// while the loop goes on processing; what the loop produces meanwhile is held
/// ([`Held`]) and produced when the commit has landed ([`Output::land`]).
struct Committing {
    done: mpsc::Receiver<Result<(), RuntimeError>>,
    /// The input offsets the commit covers (`last processed + 1`).
    offsets: TopicPartitionList,
    started: Instant,
}

/// A commit that went through: the offsets it covers, and when it started.
pub struct Landed {
    pub offsets: TopicPartitionList,
    pub started: Instant,
}

/// How long the loop waits for a commit in flight before it gives its producer up: the
/// offsets' bound and grace, the flush's and the commit's bounds, and a second to spare.
const COMMIT_BOUND: Duration =
    Duration::from_secs(TXN_CALL_TIMEOUT.as_secs() * 2 + OFFSETS_GRACE.as_secs() + 1);

/// Bytes held for after the commit in flight beyond which processing waits for it
/// ([`Output::held_full`]): several times what a commit's duration of full-speed
/// processing produces, and a bound on what a burst of due timers holds.
const HELD_LIMIT: usize = 32 << 20;

/// Records held while a commit is in flight, in the order they were produced: their bytes
/// in one buffer, reused from one commit to the next.
#[derive(Default)]
struct Held {
    bytes: Vec<u8>,
    records: Vec<HeldRecord>,
    /// The topics the records go to (a handful), by index.
    topics: Vec<String>,
}

struct HeldRecord {
    topic: usize,
    partition: Option<i32>,
    key: std::ops::Range<usize>,
    payload: Option<std::ops::Range<usize>>,
    headers: Option<OwnedHeaders>,
}

/// One record for the producer: where it goes and what it holds.
struct Outgoing<'a> {
    topic: &'a str,
    partition: Option<i32>,
    key: &'a [u8],
    payload: Option<&'a [u8]>,
    headers: Option<OwnedHeaders>,
}

impl Held {
    fn push(&mut self, r: Outgoing<'_>) {
        let topic = match self.topics.iter().position(|t| t == r.topic) {
            Some(i) => i,
            None => {
                self.topics.push(r.topic.to_string());
                self.topics.len() - 1
            }
        };
        let mut take = |b: &[u8]| {
            let start = self.bytes.len();
            self.bytes.extend_from_slice(b);
            start..self.bytes.len()
        };
        let key = take(r.key);
        let payload = r.payload.map(take);
        self.records.push(HeldRecord {
            topic,
            partition: r.partition,
            key,
            payload,
            headers: r.headers,
        });
    }

    fn clear(&mut self) {
        self.bytes.clear();
        self.records.clear();
    }
}

/// The producer's handle of one topic, held so that a record is produced to it without the
/// client looking the topic up by name — which takes the client's global lock for writing,
/// once per record — and without a C string built per record. Keeps its producer alive:
/// a handle must be destroyed before the client it belongs to.
struct TopicHandle {
    name: String,
    rkt: std::ptr::NonNull<rdkafka_sys::rd_kafka_topic_t>,
    producer: Arc<BaseProducer<DeliveryWatch>>,
}

// SAFETY: librdkafka's topic handles may be used and destroyed from any thread.
unsafe impl Send for TopicHandle {}

impl TopicHandle {
    fn new(producer: &Arc<BaseProducer<DeliveryWatch>>, name: &str) -> Result<Self, RuntimeError> {
        let c_name = std::ffi::CString::new(name).map_err(|_| {
            RuntimeError::Setup(format!("the topic name {name:?} contains a NUL byte"))
        })?;
        // SAFETY: the client is valid while `producer` lives (the handle keeps it); a null
        // configuration takes the client's default topic configuration.
        let rkt = unsafe {
            rdkafka_sys::rd_kafka_topic_new(
                producer.client().native_ptr(),
                c_name.as_ptr(),
                std::ptr::null_mut(),
            )
        };
        let rkt = std::ptr::NonNull::new(rkt).ok_or_else(|| {
            RuntimeError::Setup(format!("the producer refused a handle for topic {name}"))
        })?;
        Ok(Self {
            name: name.to_string(),
            rkt,
            producer: Arc::clone(producer),
        })
    }
}

impl Drop for TopicHandle {
    fn drop(&mut self) {
        // SAFETY: created by rd_kafka_topic_new and destroyed once, while the client lives
        // (`self.producer` is dropped after this).
        unsafe { rdkafka_sys::rd_kafka_topic_destroy(self.rkt.as_ptr()) };
    }
}

impl Output {
    pub fn new(settings: &Settings) -> Result<Self, RuntimeError> {
        Ok(Self {
            producer: Arc::new(create_producer(settings)?),
            wedged: false,
            exactly_once: settings.processing_guarantee == ProcessingGuarantee::ExactlyOnce,
            open: false,
            send_commands: settings.topics.send_commands.clone(),
            decisions: settings.decisions_topic().map(str::to_string),
            changelog: settings.topics.changelog.clone(),
            dlq: settings.topics.dlq.clone(),
            shadow: settings.topics.shadow.clone(),
            buffer: Vec::with_capacity(512),
            awaited: false,
            known_partitions: std::collections::HashMap::new(),
            handles: Vec::new(),
            committing: None,
            held: Held::default(),
        })
    }

    pub fn exactly_once(&self) -> bool {
        self.exactly_once
    }

    /// Output waits to be committed: a transaction is open (exactly-once), output is
    /// unflushed (at-least-once), or records are held for after the commit in flight.
    pub fn is_open(&self) -> bool {
        self.open || !self.held.records.is_empty()
    }

    /// A commit is in flight.
    pub fn committing(&self) -> bool {
        self.committing.is_some()
    }

    /// Bytes of the records held for after the commit in flight (their bytes and where
    /// each goes).
    pub fn held_bytes(&self) -> usize {
        self.held.bytes.len() + self.held.records.len() * std::mem::size_of::<HeldRecord>()
    }

    /// Enough is held for after the commit in flight: processing waits for it to land
    /// (and a burst of due timers stops firing until then).
    pub fn held_full(&self) -> bool {
        self.held_bytes() > HELD_LIMIT
    }

    /// Whether a send its user waits for was produced since the last call.
    pub fn take_awaited(&mut self) -> bool {
        std::mem::take(&mut self.awaited)
    }

    /// Whether the producer knows partition `partition` of `topic`; asks the broker for
    /// the topic's metadata if not (partitions added by an expansion are otherwise learned
    /// only at the client's next periodic refresh, and a record for them is refused).
    pub fn knows_partition(&mut self, topic: &str, partition: i32) -> bool {
        if self
            .known_partitions
            .get(topic)
            .is_some_and(|n| *n > partition as usize)
        {
            return true;
        }
        let count = match self
            .producer
            .client()
            .fetch_metadata(Some(topic), Duration::from_secs(2))
        {
            Ok(md) => md.topics().first().map_or(0, |t| t.partitions().len()),
            Err(e) => {
                warn!(topic, error = %e, "reading a topic's metadata for the producer");
                0
            }
        };
        self.known_partitions.insert(topic.to_string(), count);
        count > partition as usize
    }

    /// At-least-once: waits until every record produced so far is written, and fails when
    /// one was not. The commit does this before it writes the changed users' state, so that
    /// a send-command that failed leaves no changelog entry saying it was sent: the rewind
    /// that follows restores the state from before it and sends it again.
    pub fn settle_unless_transactional(&mut self) -> Result<(), RuntimeError> {
        if self.exactly_once || !self.open {
            return Ok(());
        }
        self.usable()?;
        flush_checked(&self.producer, TXN_CALL_TIMEOUT)
    }

    /// The failed delivery behind a failed commit, if one is: a transaction call reports
    /// only that the transaction cannot commit ("erroneous state", "must be aborted"); the
    /// record the broker refused, and why, decides whether retrying can help. The flush
    /// serves the reports still queued.
    pub fn failed_delivery(&self) -> Option<RuntimeError> {
        if !self.wedged {
            let _ = flush_promptly(&self.producer, Duration::from_secs(1));
        }
        self.take_failure()
    }

    /// The failed deliveries reported since the last call, as an error.
    fn take_failure(&self) -> Option<RuntimeError> {
        take_failure(&self.producer)
    }

    /// Waits until every record produced so far is written, when there is no transaction
    /// to make a group of writes atomic.
    pub fn flush_unless_transactional(&mut self) -> Result<(), RuntimeError> {
        if self.exactly_once {
            return Ok(());
        }
        // A hand-off's copies may be many: the longer bound it always had.
        flush_checked(&self.producer, Duration::from_secs(30))
    }

    pub fn changelog_topic(&self) -> &str {
        &self.changelog
    }

    /// Serves delivery reports and transaction events without blocking.
    pub fn poll(&self) {
        self.producer.poll(Duration::ZERO);
    }

    /// The error of any call on a wedged producer: it waits to be replaced.
    fn usable(&self) -> Result<(), RuntimeError> {
        if self.wedged {
            return Err(RuntimeError::Wedged {
                during: "using a producer given up",
                waited_ms: 0,
            });
        }
        Ok(())
    }

    fn begin(&mut self) -> Result<(), RuntimeError> {
        self.usable()?;
        if !self.open {
            if self.exactly_once {
                self.producer
                    .begin_transaction()
                    .map_err(RuntimeError::kafka("beginning a transaction"))?;
            }
            self.open = true;
        }
        Ok(())
    }

    /// Produces one record of the open transaction; a full local queue is drained by
    /// polling, never dropped.
    fn produce(
        &mut self,
        topic: &str,
        partition: Option<i32>,
        key: &[u8],
        payload: Option<&[u8]>,
        headers: Option<OwnedHeaders>,
    ) -> Result<(), RuntimeError> {
        let r = Outgoing {
            topic,
            partition,
            key,
            payload,
            headers,
        };
        // After the records held before them, in the order they came.
        if self.committing.is_some() || !self.held.records.is_empty() {
            self.held.push(r);
            return Ok(());
        }
        self.produce_now(r)
    }

    /// [`Output::produce`] into the producer.
    fn produce_now(&mut self, r: Outgoing<'_>) -> Result<(), RuntimeError> {
        self.begin()?;
        let epoch = self.producer.context().epoch();
        let Outgoing {
            topic,
            partition,
            key,
            payload,
            headers,
        } = r;
        if headers.is_none() {
            return self.produce_plain(topic, partition, key, payload, epoch);
        }
        let mut record: BaseRecord<'_, [u8], [u8], usize> =
            BaseRecord::with_opaque_to(topic, epoch).key(key);
        if let Some(p) = partition {
            record = record.partition(p);
        }
        if let Some(v) = payload {
            record = record.payload(v);
        }
        if let Some(h) = headers {
            record = record.headers(h);
        }
        loop {
            match self.producer.send(record) {
                Ok(()) => return Ok(()),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                    record = r;
                    self.producer.poll(Duration::from_millis(10));
                }
                Err((e, _)) => return Err(RuntimeError::kafka("producing a record")(e)),
            }
        }
    }

    /// [`Output::produce`] of a record without headers, through the topic's handle.
    fn produce_plain(
        &mut self,
        topic: &str,
        partition: Option<i32>,
        key: &[u8],
        payload: Option<&[u8]>,
        epoch: usize,
    ) -> Result<(), RuntimeError> {
        let i = match self.handles.iter().position(|h| h.name == topic) {
            Some(i) => i,
            None => {
                self.handles.push(TopicHandle::new(&self.producer, topic)?);
                self.handles.len() - 1
            }
        };
        let handle = &self.handles[i];
        let (value, value_len) = payload.map_or((std::ptr::null_mut(), 0), |v| {
            (v.as_ptr() as *mut std::ffi::c_void, v.len())
        });
        use rdkafka_sys::rd_kafka_vtype_t::*;
        loop {
            // SAFETY: the client and the topic handle are valid (the handle holds the
            // client); key and value are copied by the client (`RD_KAFKA_MSG_F_COPY`)
            // before the call returns; the opaque is a plain number, handed back as it is
            // to the delivery report (the producer context's `usize`).
            let code = unsafe {
                rdkafka_sys::rd_kafka_producev(
                    handle.producer.client().native_ptr(),
                    RD_KAFKA_VTYPE_RKT,
                    handle.rkt.as_ptr(),
                    RD_KAFKA_VTYPE_PARTITION,
                    partition.unwrap_or(-1),
                    RD_KAFKA_VTYPE_MSGFLAGS,
                    rdkafka_sys::RD_KAFKA_MSG_F_COPY,
                    RD_KAFKA_VTYPE_VALUE,
                    value,
                    value_len,
                    RD_KAFKA_VTYPE_KEY,
                    key.as_ptr() as *mut std::ffi::c_void,
                    key.len(),
                    RD_KAFKA_VTYPE_OPAQUE,
                    epoch as *mut std::ffi::c_void,
                    RD_KAFKA_VTYPE_END,
                )
            };
            match RDKafkaErrorCode::from(code) {
                RDKafkaErrorCode::NoError => return Ok(()),
                RDKafkaErrorCode::QueueFull => self.producer.poll(Duration::from_millis(10)),
                e => {
                    return Err(RuntimeError::kafka("producing a record")(
                        KafkaError::MessageProduction(e),
                    ))
                }
            }
        }
    }

    /// Encodes `value` into the reused buffer and produces it to `topic` (partitioned by
    /// `key`, the user id).
    fn encode_and_produce<T>(
        &mut self,
        codec: &Codec<T>,
        record: &'static str,
        topic: &str,
        key: &[u8],
        value: &T,
    ) -> Result<(), RuntimeError>
    where
        T: apache_avro::AvroSchema + serde::Serialize + serde::de::DeserializeOwned + OwnDatum,
    {
        let mut buf = std::mem::take(&mut self.buffer);
        buf.clear();
        let r = codec
            .encode_into(value, &mut buf)
            .map_err(|source| RuntimeError::Encode {
                record,
                topic: topic.to_string(),
                source: Box::new(source),
            })
            .and_then(|()| self.produce(topic, None, key, Some(&buf), None));
        self.buffer = buf;
        r
    }

    /// Executes one task's effects. State changes of users are noted on the task and
    /// written at commit ([`Output::write_state`]), once per user per transaction.
    pub fn execute(
        &mut self,
        codecs: &Codecs,
        metrics: &Metrics,
        task: &mut Task,
        effects: &mut Vec<Effect>,
    ) -> Result<(), RuntimeError> {
        let partition = task.partition;
        for effect in effects.drain(..) {
            match effect {
                Effect::Send(command) => {
                    metrics.send_commands.inc();
                    let late_ms = (command.emitted_at.saturating_sub(command.due_at)).max(0);
                    metrics.fire_lateness.observe(late_ms as f64 / 1000.0);
                    self.awaited |= awaited(command.due_at, command.emitted_at);
                    let topic = std::mem::take(&mut self.send_commands);
                    let r = self.encode_and_produce(
                        &codecs.send_commands,
                        "send-command",
                        &topic,
                        command.user_id.as_bytes(),
                        &command,
                    );
                    self.send_commands = topic;
                    r?;
                }
                Effect::Decision(decision) => {
                    let Some(topic) = self.decisions.take() else {
                        continue;
                    };
                    let r = self.encode_and_produce(
                        &codecs.decisions,
                        "decision",
                        &topic,
                        decision.user_id.as_bytes(),
                        &decision,
                    );
                    self.decisions = Some(topic);
                    r?;
                }
                Effect::Shadow(record) => {
                    let what = if record.send_command.is_some() {
                        "send_command"
                    } else {
                        "decision"
                    };
                    metrics.shadow_records.with_label_values(&[what]).inc();
                    let topic = std::mem::take(&mut self.shadow);
                    let r = self.encode_and_produce(
                        &codecs.shadow,
                        "shadow record",
                        &topic,
                        record.user_id().as_bytes(),
                        &record,
                    );
                    self.shadow = topic;
                    r?;
                }
                Effect::PutState(record) => {
                    let bytes = self.encode_state(codecs, &record)?;
                    self.write_changelog(
                        partition,
                        record.changelog_key().as_bytes(),
                        Some(&bytes),
                    )?;
                }
                Effect::UserChanged { user_id, slot } => {
                    task.dirty.insert(user_id, slot);
                }
            }
        }
        Ok(())
    }

    /// Writes the changelog entries of the task's changed users and its progress record.
    pub fn write_state(&mut self, codecs: &Codecs, task: &mut Task) -> Result<(), RuntimeError> {
        // Users' entries: written from the engine's tables into buffers reused for every
        // user (Avro); a record is built only for the JSON encoding.
        let (mut key, mut value) = (Vec::with_capacity(32), Vec::with_capacity(128));
        for (user, slot) in std::mem::take(&mut task.dirty) {
            key.clear();
            key.extend_from_slice(b"u/");
            key.extend_from_slice(user.as_bytes());
            value.clear();
            let present = match task.engine.user_state_view_at(slot, &user) {
                None => false,
                Some(view) => {
                    match codecs
                        .changelog
                        .encode_own_datum(&mut value, |out| write_user_state_datum(out, &view))
                    {
                        Some(encoded) => encoded.map_err(|e| self.state_encode_error(e))?,
                        None => {
                            let record = TaskStateRecord {
                                user: Some(view.to_state()),
                                rule: None,
                                progress: None,
                            };
                            value = self.encode_state(codecs, &record)?;
                        }
                    }
                    true
                }
            };
            self.write_changelog(task.partition, &key, present.then_some(&value[..]))?;
        }
        let encode = |record: &TaskStateRecord| self.encode_state(codecs, record);
        let mut writes: Vec<(String, Option<Vec<u8>>)> = Vec::new();
        if std::mem::take(&mut task.progress_dirty) {
            if let Some(record) = task.engine.progress_record() {
                writes.push((record.changelog_key(), Some(encode(&record)?)));
            }
            // Cuts found and side-feed positions, in the transaction of the offsets.
            if let Some(progress) = task.expansion_progress() {
                let json = serde_json::to_vec(&progress).expect("progress serializes");
                writes.push((crate::expansion::PROGRESS_KEY.to_string(), Some(json)));
            }
        }
        for (key, value) in writes {
            self.write_changelog(task.partition, key.as_bytes(), value.as_deref())?;
        }
        Ok(())
    }

    /// Writes a record to changelog partition `partition` (an expansion's hand-off: moved
    /// users, rule snapshots, markers, tombstones).
    pub fn write_changelog(
        &mut self,
        partition: i32,
        key: &[u8],
        value: Option<&[u8]>,
    ) -> Result<(), RuntimeError> {
        // Lent out for the call rather than copied: this runs once per changed user.
        let topic = std::mem::take(&mut self.changelog);
        let r = self.produce(&topic, Some(partition), key, value, None);
        self.changelog = topic;
        r
    }

    /// Encodes a state record for the changelog.
    pub fn encode_state(
        &self,
        codecs: &Codecs,
        record: &TaskStateRecord,
    ) -> Result<Vec<u8>, RuntimeError> {
        codecs
            .changelog
            .encode(record)
            .map_err(|source| self.state_encode_error(source))
    }

    fn state_encode_error(&self, source: EncodeError) -> RuntimeError {
        RuntimeError::Encode {
            record: "state record",
            topic: self.changelog.clone(),
            source: Box::new(source),
        }
    }

    /// Forwards an input record, as it arrived, to partition `partition` of its topic:
    /// a record written by a producer still stale after an expansion's settle period, for
    /// the task that owns its user now.
    pub fn forward(
        &mut self,
        topic: &str,
        partition: i32,
        key: Option<&[u8]>,
        payload: Option<&[u8]>,
    ) -> Result<(), RuntimeError> {
        self.produce(
            topic,
            Some(partition),
            key.unwrap_or_default(),
            payload,
            None,
        )
    }

    /// Sends a bad record to the dead-letter topic, with headers naming what was wrong and
    /// where it came from.
    pub fn dead_letter(
        &mut self,
        metrics: &Metrics,
        source: &Source<'_>,
        bad: &BadInput,
    ) -> Result<(), RuntimeError> {
        warn!(topic = source.topic, partition = source.partition, offset = source.offset,
            class = bad.class, error = %bad.message, "bad input to the dead-letter topic");
        metrics
            .dlq_records
            .with_label_values(&[source.topic, bad.class])
            .inc();
        let (p, o) = (source.partition.to_string(), source.offset.to_string());
        let headers = [
            ("error.class", bad.class),
            ("error.message", bad.message.as_str()),
            ("source.topic", source.topic),
            ("source.partition", p.as_str()),
            ("source.offset", o.as_str()),
        ]
        .into_iter()
        .fold(OwnedHeaders::new(), |h, (key, value)| {
            h.insert(Header {
                key,
                value: Some(value),
            })
        });
        let dlq = self.dlq.clone();
        self.produce(
            &dlq,
            None,
            source.key.unwrap_or_default(),
            source.payload,
            Some(headers),
        )
    }

    /// Starts committing what was produced so far, on a helper thread, and returns at once;
    /// [`Output::land`] takes the outcome, and records produced meanwhile are held for
    /// after it. Returns `false` when there is nothing to commit.
    ///
    /// Exactly-once: the open transaction with the input offsets (`last processed + 1`),
    /// which go in with the consumer group metadata read right before the call — after a
    /// rebalance the generation changes, and the coordinator rejects offsets of a member
    /// that no longer owns them, which is what fences a zombie. At-least-once: the flush
    /// of the output; the caller commits the offsets once it has landed.
    pub fn start_commit<C: ConsumerContext>(
        &mut self,
        consumer: &BaseConsumer<C>,
        offsets: &TopicPartitionList,
    ) -> Result<bool, RuntimeError> {
        debug_assert!(self.committing.is_none(), "one commit at a time");
        if offsets.count() > 0 {
            self.begin()?;
        }
        if !self.open {
            return Ok(false);
        }
        self.usable()?;
        let producer = Arc::clone(&self.producer);
        let work: Box<dyn FnOnce() -> Result<(), RuntimeError> + Send> = if self.exactly_once {
            let joining = if offsets.count() > 0 {
                let metadata = consumer
                    .group_metadata()
                    .ok_or_else(|| RuntimeError::Setup("no consumer group metadata".into()))?;
                Some((offsets.clone(), metadata))
            } else {
                None
            };
            Box::new(move || transact(&producer, joining))
        } else {
            Box::new(move || flush_checked(&producer, TXN_CALL_TIMEOUT))
        };
        let (done, result) = mpsc::sync_channel(1);
        std::thread::Builder::new()
            .name("commit".into())
            .spawn(move || {
                let _ = done.send(work());
            })
            .map_err(|e| RuntimeError::Setup(format!("starting a commit: {e}")))?;
        self.committing = Some(Committing {
            done: result,
            offsets: offsets.clone(),
            started: Instant::now(),
        });
        Ok(true)
    }

    /// The outcome of the commit in flight once it is known — waiting for it when `wait` —
    /// or `None` while it runs (or when none does). A commit that has not ended within
    /// [`COMMIT_BOUND`] gives the producer up: it is only replaced (see
    /// [`Output::abort`]). After a commit that went through, the caller produces the held
    /// records ([`Output::release`]); after one that failed, they wait for the abort that
    /// drops them.
    pub fn land(&mut self, wait: bool) -> Option<Result<Landed, RuntimeError>> {
        let c = self.committing.as_ref()?;
        let left = COMMIT_BOUND.saturating_sub(c.started.elapsed());
        let outcome = if wait {
            c.done.recv_timeout(left).ok()
        } else {
            match c.done.try_recv() {
                Ok(r) => Some(r),
                Err(mpsc::TryRecvError::Empty) if !left.is_zero() => return None,
                Err(_) => None,
            }
        };
        let c = self.committing.take().expect("checked above");
        Some(match outcome {
            Some(Ok(())) => {
                self.open = false;
                Ok(Landed {
                    offsets: c.offsets,
                    started: c.started,
                })
            }
            Some(Err(e)) => {
                self.wedged |= matches!(e, RuntimeError::Wedged { .. });
                Err(e)
            }
            None => {
                self.wedged = true;
                Err(RuntimeError::Wedged {
                    during: "committing",
                    waited_ms: COMMIT_BOUND.as_millis() as u64,
                })
            }
        })
    }

    /// Produces the records held while the commit before them was in flight, in the order
    /// they came: exactly-once into the next transaction, at-least-once for the next flush.
    pub fn release(&mut self) -> Result<(), RuntimeError> {
        if self.held.records.is_empty() {
            return Ok(());
        }
        let mut held = std::mem::take(&mut self.held);
        let mut result = Ok(());
        for r in held.records.drain(..) {
            let key = &held.bytes[r.key];
            let payload = r.payload.map(|p| &held.bytes[p]);
            result = self.produce_now(Outgoing {
                topic: &held.topics[r.topic],
                partition: r.partition,
                key,
                payload,
                headers: r.headers,
            });
            if result.is_err() {
                // The caller rewinds: the output is dropped, the inputs processed again.
                break;
            }
        }
        held.clear();
        self.held = held;
        result
    }

    /// Waits, at most `bound`, for the commit in flight to end before the transaction is
    /// dropped (librdkafka takes one transaction call at a time); `false` when it did not
    /// end in time — the producer is then given up. A commit that went through leaves no
    /// transaction to abort.
    fn stop_committing(&mut self, bound: Duration) -> bool {
        let Some(c) = self.committing.take() else {
            return true;
        };
        match c.done.recv_timeout(bound) {
            Ok(Ok(())) => {
                self.open = false;
                true
            }
            Ok(Err(e)) => {
                self.wedged |= matches!(e, RuntimeError::Wedged { .. });
                true
            }
            Err(_) => {
                self.wedged = true;
                false
            }
        }
    }

    /// At-least-once, a commit done when it returns: the output is flushed, then the
    /// offsets that cover it are committed.
    pub fn flush_and_commit<C: ConsumerContext>(
        &mut self,
        consumer: &BaseConsumer<C>,
        offsets: &TopicPartitionList,
    ) -> Result<(), RuntimeError> {
        debug_assert!(!self.exactly_once && self.committing.is_none());
        if offsets.count() > 0 {
            self.begin()?;
        }
        if !self.open {
            return Ok(());
        }
        self.usable()?;
        flush_checked(&self.producer, TXN_CALL_TIMEOUT)?;
        if offsets.count() > 0 {
            consumer
                .commit(offsets, rdkafka::consumer::CommitMode::Sync)
                .map_err(RuntimeError::kafka("committing offsets"))?;
        }
        self.open = false;
        Ok(())
    }

    /// Aborts the open transaction if the producer can, within a short bound; `false` when it
    /// could not (the caller re-creates the producer later, from the loop, with backoff).
    pub fn try_abort(&mut self) -> bool {
        self.held.clear();
        if !self.stop_committing(ABORT_TIMEOUT) {
            return false;
        }
        if !self.open {
            return true;
        }
        if self.wedged {
            return false;
        }
        let aborted = !self.exactly_once || self.producer.abort_transaction(ABORT_TIMEOUT).is_ok();
        if aborted {
            // The tasks are dropped or rewound: what failed is processed again.
            self.producer.context().next_epoch();
            self.open = false;
        }
        aborted
    }

    /// Drops the open transaction's output: aborts it, or — when the producer cannot be
    /// trusted to (fenced, fatal, an abort that does not finish) — re-creates the producer,
    /// whose `init_transactions` fences the old one and aborts its transaction.
    pub fn abort(&mut self, settings: &Settings, new_producer: bool) -> Result<(), RuntimeError> {
        self.held.clear();
        let new_producer = !self.stop_committing(ABORT_TIMEOUT) || new_producer;
        if self.exactly_once {
            let aborted = !new_producer
                && !self.wedged
                && (!self.open || self.producer.abort_transaction(ABORT_TIMEOUT).is_ok());
            if !aborted {
                warn!("re-creating the producer (its transactional id fences the old one)");
                self.replace_producer(settings)?;
            }
        } else if new_producer || self.wedged {
            self.replace_producer(settings)?;
        } else {
            // Unflushed at-least-once output may still be delivered: harmless, the inputs
            // are re-processed and produce the same command ids.
            let _ = flush_promptly(&self.producer, ABORT_TIMEOUT);
        }
        // What failed is processed again from the committed offsets.
        self.producer.context().next_epoch();
        self.open = false;
        Ok(())
    }

    /// A new producer in place of the current one. A wedged producer is still referenced by
    /// the helper thread stuck in its call: dropping our reference here does not block.
    fn replace_producer(&mut self, settings: &Settings) -> Result<(), RuntimeError> {
        // The handles belong to the old producer (and keep it alive).
        self.handles.clear();
        self.producer = Arc::new(create_producer(settings)?);
        self.wedged = false;
        Ok(())
    }
}

/// The failed deliveries reported since the last call, as an error.
fn take_failure(producer: &BaseProducer<DeliveryWatch>) -> Option<RuntimeError> {
    producer
        .context()
        .take_failed()
        .map(|(count, record, source)| RuntimeError::Delivery {
            count,
            record,
            source,
        })
}

/// Flushes, then reports the failed deliveries the flush served (every report is served
/// by it).
fn flush_checked(
    producer: &BaseProducer<DeliveryWatch>,
    timeout: Duration,
) -> Result<(), RuntimeError> {
    flush_promptly(producer, timeout).map_err(RuntimeError::kafka("flushing output"))?;
    take_failure(producer).map_or(Ok(()), Err)
}

/// Commits the open transaction, with the input offsets joining it when given: they make
/// their round trips (on a thread of their own, see [`send_offsets`]) while the
/// transaction's records are flushed, then `commit_transaction` — whose own flush, slower,
/// finds nothing left.
fn transact(
    producer: &Arc<BaseProducer<DeliveryWatch>>,
    joining: Option<(TopicPartitionList, ConsumerGroupMetadata)>,
) -> Result<(), RuntimeError> {
    let started = Instant::now();
    let sending = match joining {
        Some((offsets, metadata)) => Some(send_offsets(producer, offsets, metadata)?),
        None => None,
    };
    let flush = flush_promptly(producer, TXN_CALL_TIMEOUT)
        .map_err(RuntimeError::kafka("writing the transaction's records"));
    let flushed = started.elapsed();
    if let Some(sending) = sending {
        offsets_sent(sending)?;
    }
    let offsets_done = started.elapsed();
    flush?;
    producer
        .commit_transaction(TXN_CALL_TIMEOUT)
        .map_err(RuntimeError::kafka("committing the transaction"))?;
    tracing::debug!(
        flush_ms = flushed.as_millis() as u64,
        offsets_ms = offsets_done.as_millis() as u64,
        end_ms = (started.elapsed() - offsets_done).as_millis() as u64,
        "transaction committed"
    );
    Ok(())
}

/// `send_offsets_to_transaction`, bounded by its caller.
///
/// librdkafka does not always honour the call's timeout: the offsets go to the group
/// coordinator through a coordinator request whose own timeout is never checked, and when
/// the cached coordinator is a broker that left the cluster's metadata (a broker shut down
/// cleanly) the request waits for a broker state change that may never come. So the call
/// runs on a thread of its own; when it has not returned `OFFSETS_GRACE` after its bound,
/// [`offsets_sent`] says the producer is wedged (retried with a new producer, whose
/// `init_transactions` fences this one and aborts its transaction), and the thread keeps
/// the old producer until the call returns, then destroys it.
fn send_offsets(
    producer: &Arc<BaseProducer<DeliveryWatch>>,
    offsets: TopicPartitionList,
    metadata: ConsumerGroupMetadata,
) -> Result<mpsc::Receiver<KafkaResult<()>>, RuntimeError> {
    let producer = Arc::clone(producer);
    let (done, result) = mpsc::sync_channel(1);
    std::thread::Builder::new()
        .name("txn-offsets".into())
        .spawn(move || {
            let r = producer.send_offsets_to_transaction(&offsets, &metadata, TXN_CALL_TIMEOUT);
            let _ = done.send(r);
        })
        .map_err(|e| RuntimeError::Setup(format!("starting a transaction call: {e}")))?;
    Ok(result)
}

/// Waits for the offsets [`send_offsets`] sent, within the call's bound and
/// [`OFFSETS_GRACE`] (measured from here: the flush before took at most its own).
fn offsets_sent(result: mpsc::Receiver<KafkaResult<()>>) -> Result<(), RuntimeError> {
    match result.recv_timeout(TXN_CALL_TIMEOUT + OFFSETS_GRACE) {
        Ok(r) => r.map_err(RuntimeError::kafka("sending offsets to the transaction")),
        Err(_) => Err(RuntimeError::Wedged {
            during: "sending offsets to the transaction",
            waited_ms: (TXN_CALL_TIMEOUT + OFFSETS_GRACE).as_millis() as u64,
        }),
    }
}

/// The output producer's client configuration: the pass-through properties, what the
/// contract needs (Java-compatible partitioning, idempotence, the transactional id), and
/// defaults the pass-through may override.
fn producer_config(settings: &Settings) -> ClientConfig {
    let mut c = base_config(settings);
    // Java-compatible partitioning of send-commands by user id.
    c.set("partitioner", "murmur2_random")
        .set("enable.idempotence", "true");
    // Defaults, not rules: the pass-through overrides them.
    for (key, value) in PRODUCER_DEFAULTS {
        if c.get(key).is_none() {
            c.set(key, value);
        }
    }
    let exactly_once = settings.processing_guarantee == ProcessingGuarantee::ExactlyOnce;
    if exactly_once {
        c.set("transactional.id", settings.transactional_id()).set(
            "transaction.timeout.ms",
            settings.transaction_timeout.as_millis().to_string(),
        );
    }
    c
}

fn create_producer(settings: &Settings) -> Result<BaseProducer<DeliveryWatch>, RuntimeError> {
    let exactly_once = settings.processing_guarantee == ProcessingGuarantee::ExactlyOnce;
    let producer: BaseProducer<DeliveryWatch> = producer_config(settings)
        .create_with_context(DeliveryWatch::default())
        .map_err(RuntimeError::kafka("creating the producer"))?;
    if exactly_once {
        // Fences any earlier incarnation of this instance and aborts its open transaction.
        // The broker answers CONCURRENT_TRANSACTIONS (retriable) while it still completes
        // that incarnation's last commit or abort — a process restarted at once after a stop
        // meets it: asked again until `INIT_RETRY` has passed, not given up at start-up.
        let started = std::time::Instant::now();
        loop {
            match producer.init_transactions(INIT_TIMEOUT) {
                Ok(()) => break,
                Err(KafkaError::Transaction(e))
                    if e.is_retriable() && started.elapsed() < INIT_RETRY =>
                {
                    warn!(error = %e, "initialising transactions; asking again");
                    std::thread::sleep(Duration::from_millis(200));
                }
                Err(e) => return Err(RuntimeError::kafka("initialising transactions")(e)),
            }
        }
    }
    Ok(producer)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::config::load;

    fn producer_setting(env: &[(&str, &str)], key: &str) -> Option<String> {
        let env = env.iter().map(|(k, v)| (k.to_string(), v.to_string()));
        let settings = load(None, env.collect::<Vec<_>>()).unwrap();
        producer_config(&settings).get(key).map(str::to_string)
    }

    #[test]
    fn the_producer_lingers_50_ms_unless_the_operator_says_otherwise() {
        assert_eq!(producer_setting(&[], "linger.ms").as_deref(), Some("50"));
        assert_eq!(
            producer_setting(&[("CONNECTOR_KAFKA__LINGER_MS", "20")], "linger.ms").as_deref(),
            Some("20")
        );
    }

    #[test]
    fn the_producer_reports_failed_deliveries_only_unless_the_operator_says_otherwise() {
        let key = "delivery.report.only.error";
        assert_eq!(producer_setting(&[], key).as_deref(), Some("true"));
        assert_eq!(
            producer_setting(
                &[("CONNECTOR_KAFKA__DELIVERY_REPORT_ONLY_ERROR", "false")],
                key
            )
            .as_deref(),
            Some("false")
        );
    }

    #[test]
    fn what_the_contract_needs_is_not_overridden() {
        let env = [
            ("CONNECTOR_KAFKA__PARTITIONER", "random"),
            ("CONNECTOR_APPLICATION_ID", "app"),
            ("CONNECTOR_INSTANCE_ID", "i7"),
        ];
        assert_eq!(
            producer_setting(&env, "partitioner").as_deref(),
            Some("murmur2_random")
        );
        assert_eq!(
            producer_setting(&env, "transactional.id").as_deref(),
            Some("app-i7")
        );
    }
}
