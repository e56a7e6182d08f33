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

use std::sync::Arc;
use std::time::Duration;

use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::ClientConfig;
use rdkafka::ClientContext;
use tracing::warn;

mod transaction;

pub use transaction::Landed;
use transaction::{Committing, Held};

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

/// Bound of a transaction call (commit, offsets). Short enough that a broker that is away
/// is noticed in seconds; a timed-out commit rewinds, and what it held is processed again.
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

/// One record for the producer: where it goes and what it holds.
struct Outgoing<'a> {
    topic: &'a str,
    partition: Option<i32>,
    key: &'a [u8],
    payload: Option<&'a [u8]>,
    headers: Option<OwnedHeaders>,
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
        self.open || !self.held.is_empty()
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
        if self.committing.is_some() || !self.held.is_empty() {
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

    /// The producer lingers 50 ms, reports failed deliveries only and compresses with LZ4,
    /// unless the operator says otherwise.
    #[test]
    fn the_producer_defaults_apply_unless_the_operator_says_otherwise() {
        for (key, default, variable, set) in [
            ("linger.ms", "50", "CONNECTOR_KAFKA__LINGER_MS", "20"),
            (
                "delivery.report.only.error",
                "true",
                "CONNECTOR_KAFKA__DELIVERY_REPORT_ONLY_ERROR",
                "false",
            ),
            (
                "compression.type",
                "lz4",
                "CONNECTOR_KAFKA__COMPRESSION_TYPE",
                "zstd",
            ),
        ] {
            assert_eq!(
                producer_setting(&[], key).as_deref(),
                Some(default),
                "{key}"
            );
            assert_eq!(
                producer_setting(&[(variable, set)], key).as_deref(),
                Some(set),
                "{key} set by {variable}"
            );
        }
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
