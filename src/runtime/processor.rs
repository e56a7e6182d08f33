//! The instance: one consumer-group member that owns some tasks, one producer, one loop.
//!
//! ```text
//!   group consumer ──poll──► route by partition ──► Task[p] queues
//!        │  rebalance callbacks (run inside poll, on this thread)
//!        │    revoke: commit, then drop the tasks     assign: create, restore before use
//!   catalog reader ──► every task's engine (a global table)
//!   Task[p]: merge ─► engine ─► effects ──► Output: the transactional producer
//!   every commit_interval: changelog of dirty users + offsets (last processed + 1) ─► commit
//! ```
//!
//! Everything happens on one thread. librdkafka runs the rebalance callbacks inside
//! `poll()`, so a revocation can finish the open transaction before the partitions go — the
//! callback does the draining itself because the loop that would otherwise do it is the very
//! thread blocked in `poll()`. The shared state therefore sits behind a mutex that the loop
//! releases around `poll()`.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::{KafkaError, KafkaResult};
use rdkafka::message::{BorrowedMessage, Header, Message, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use thiserror::Error;
use tracing::{debug, info, warn};

use super::codecs::Codecs;
use super::config::{GroupProtocol, ProcessingGuarantee, Settings};
use super::http::{partition_for_key, AdminRequest, Health};
use super::kafka::{base_config, check_co_partitioning, standalone_consumer, TopicError};
use super::metrics::Metrics;
use super::restore::{restore_partition, RestoreError};
use super::task::{Arrived, BadInput, Task};
use crate::engine::Effect;
use crate::merge::Next;
use crate::model::{
    Campaign, DecisionOutcome, DecisionReason, InputCoordinates, InputEvent, TimestampMs,
};

/// How long blocking producer and consumer calls may take before the instance gives up on
/// the transaction and re-synchronises.
const CALL_TIMEOUT: Duration = Duration::from_secs(30);
/// Records a task processes before the loop looks at the consumer again.
const BATCH: usize = 2_000;
/// Buffered records per input partition above which the partition is paused.
const MAX_BUFFERED: usize = 20_000;

#[derive(Debug, Error)]
pub enum RuntimeError {
    #[error(transparent)]
    Topics(#[from] TopicError),
    #[error(transparent)]
    Restore(#[from] RestoreError),
    #[error("kafka: {0}")]
    Kafka(#[from] KafkaError),
    #[error("codec setup: {0}")]
    Codec(String),
    #[error("fatal: {0}")]
    Fatal(String),
}

fn now_ms() -> TimestampMs {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as TimestampMs)
        .unwrap_or(0)
}

/// What the loop and the rebalance callbacks share.
struct Core {
    settings: Settings,
    codecs: Codecs,
    producer: BaseProducer,
    restore_reader: BaseConsumer,
    tasks: BTreeMap<i32, Task>,
    /// Partitions assigned but not restored yet.
    to_restore: Vec<i32>,
    /// The catalog as last read (a task created later starts from it).
    catalog: BTreeMap<String, Campaign>,
    /// A transaction is open (exactly-once) / output is unflushed (at-least-once).
    in_transaction: bool,
    /// The transaction must be aborted and every task re-synchronised from committed state.
    needs_resync: bool,
    /// The producer cannot be trusted to abort (fenced, fatal, or an outcome unknown after a
    /// timeout): re-create it, which fences the old one, instead of retrying.
    needs_new_producer: bool,
    last_commit: Instant,
    shutdown: Arc<AtomicBool>,
    metrics: Arc<Metrics>,
    /// Decision counts already added to the metrics, by task.
    decisions_reported: HashMap<i32, HashMap<(DecisionOutcome, DecisionReason), u64>>,
    /// Partition count of the inputs (to find the task of a user).
    partitions: usize,
    /// The input topics by rank, shared so the hot path does not copy their names.
    input_topics: Arc<InputTopics>,
}

/// The input topics by rank (interactions, user events), also as C strings for librdkafka.
struct InputTopics {
    names: [String; 2],
    c_names: [std::ffi::CString; 2],
}

impl std::ops::Index<usize> for InputTopics {
    type Output = String;
    fn index(&self, rank: usize) -> &String {
        &self.names[rank]
    }
}

impl InputTopics {
    fn new(settings: &Settings) -> Result<Self, RuntimeError> {
        let names = [
            settings.topics.interactions.clone(),
            settings.topics.user_events.clone(),
        ];
        let c = |n: &String| {
            std::ffi::CString::new(n.as_str())
                .map_err(|_| RuntimeError::Fatal(format!("topic name {n:?} contains a NUL byte")))
        };
        Ok(Self {
            c_names: [c(&names[0])?, c(&names[1])?],
            names,
        })
    }
}

struct GroupContext {
    core: Arc<Mutex<Option<Core>>>,
}

impl ClientContext for GroupContext {}

impl ConsumerContext for GroupContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let Rebalance::Revoke(tpl) = rebalance else {
            return;
        };
        let mut guard = lock(&self.core);
        let Some(core) = guard.as_mut() else { return };
        let partitions: Vec<i32> = tpl.elements().iter().map(|e| e.partition()).collect();
        if consumer.assignment_lost() {
            // Someone else may own these tasks already: our uncommitted work is void.
            warn!(
                ?partitions,
                "assignment lost: aborting the open transaction"
            );
            core.needs_resync = true;
        } else if let Err(e) = core.commit(consumer) {
            warn!(error = %e, "commit before revocation failed; re-synchronising");
            core.failed(&e);
        }
        for p in &partitions {
            core.tasks.remove(p);
            core.decisions_reported.remove(p);
            core.to_restore.retain(|q| q != p);
        }
        info!(?partitions, "tasks revoked");
    }

    fn post_rebalance(&self, _consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let Rebalance::Assign(tpl) = rebalance else {
            return;
        };
        let mut guard = lock(&self.core);
        let Some(core) = guard.as_mut() else { return };
        let mut partitions: Vec<i32> = tpl.elements().iter().map(|e| e.partition()).collect();
        partitions.sort_unstable();
        partitions.dedup();
        for p in partitions {
            if !core.tasks.contains_key(&p) {
                core.tasks.insert(p, core.new_task(p));
                core.to_restore.push(p);
            }
        }
        info!(tasks = ?core.tasks.keys().collect::<Vec<_>>(), "tasks assigned");
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

impl Core {
    fn new_task(&self, partition: i32) -> Task {
        let mut task = Task::new(
            partition,
            self.settings.limits,
            self.settings.merge_max_wait.as_millis() as i64,
            self.settings.decisions_topic().is_some(),
        );
        let mut sink = Vec::new();
        for c in self.catalog.values() {
            // The catalog was validated when it was read.
            let _ = task.engine.apply_campaign(c, now_ms(), &mut sink);
        }
        task
    }

    /// Classifies a failure: an abortable transaction error is aborted and rewound; fencing,
    /// fatal and indefinite errors (timeouts: the outcome is unknown) also re-create the
    /// producer. Nothing is retried blindly.
    fn failed(&mut self, error: &RuntimeError) {
        self.needs_resync = true;
        let abortable = matches!(
            error,
            RuntimeError::Kafka(KafkaError::Transaction(e)) if e.txn_requires_abort() && !e.is_fatal() && !e.is_retriable()
        );
        if !abortable {
            self.needs_new_producer = true;
        }
    }

    fn exactly_once(&self) -> bool {
        self.settings.processing_guarantee == ProcessingGuarantee::ExactlyOnce
    }

    /// Opens the transaction on first output.
    fn begin(&mut self) -> KafkaResult<()> {
        if !self.in_transaction {
            if self.exactly_once() {
                self.producer.begin_transaction()?;
            }
            self.in_transaction = true;
        }
        Ok(())
    }

    /// Produces one record; a full local queue is drained by polling, never dropped.
    fn produce(
        &mut self,
        topic: &str,
        partition: Option<i32>,
        key: &[u8],
        payload: Option<&[u8]>,
        headers: Option<OwnedHeaders>,
    ) -> KafkaResult<()> {
        self.begin()?;
        let mut record: BaseRecord<'_, [u8], [u8]> = BaseRecord::to(topic).key(key);
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
                Err((
                    KafkaError::MessageProduction(rdkafka::types::RDKafkaErrorCode::QueueFull),
                    r,
                )) => {
                    record = r;
                    self.producer.poll(Duration::from_millis(10));
                }
                Err((e, _)) => return Err(e),
            }
        }
    }

    /// Executes the effects of one task, in the one place effects are executed.
    fn execute(&mut self, partition: i32, effects: &mut Vec<Effect>) -> Result<(), RuntimeError> {
        for effect in effects.drain(..) {
            match effect {
                Effect::Send(command) => {
                    self.metrics.send_commands.inc();
                    let late_ms = (command.emitted_at - command.due_at).max(0);
                    self.metrics.fire_lateness.observe(late_ms as f64 / 1000.0);
                    let bytes = self
                        .codecs
                        .send_commands
                        .encode(&command)
                        .map_err(|e| RuntimeError::Fatal(e.to_string()))?;
                    let topic = self.settings.topics.send_commands.clone();
                    self.produce(&topic, None, command.user_id.as_bytes(), Some(&bytes), None)?;
                }
                Effect::Decision(decision) => {
                    if let Some(topic) = self.settings.decisions_topic().map(str::to_string) {
                        let bytes = self
                            .codecs
                            .decisions
                            .encode(&decision)
                            .map_err(|e| RuntimeError::Fatal(e.to_string()))?;
                        self.produce(
                            &topic,
                            None,
                            decision.user_id.as_bytes(),
                            Some(&bytes),
                            None,
                        )?;
                    }
                }
                Effect::PutState(record) => {
                    let bytes = self
                        .codecs
                        .changelog
                        .encode(&record)
                        .map_err(|e| RuntimeError::Fatal(e.to_string()))?;
                    let topic = self.settings.topics.changelog.clone();
                    self.produce(
                        &topic,
                        Some(partition),
                        record.changelog_key().as_bytes(),
                        Some(&bytes),
                        None,
                    )?;
                }
                Effect::UserChanged { user_id } => {
                    if let Some(task) = self.tasks.get_mut(&partition) {
                        task.dirty.insert(user_id.into());
                    }
                }
            }
        }
        Ok(())
    }

    /// Sends a bad record to the dead-letter topic, with headers naming what was wrong and
    /// where it came from.
    fn dead_letter(
        &mut self,
        topic: &str,
        partition: i32,
        offset: i64,
        key: Option<&[u8]>,
        payload: Option<&[u8]>,
        bad: &BadInput,
    ) -> KafkaResult<()> {
        warn!(topic, partition, offset, class = bad.class, error = %bad.message, "bad input to the dead-letter topic");
        self.metrics
            .dlq_records
            .with_label_values(&[topic, bad.class])
            .inc();
        let (p, o) = (partition.to_string(), offset.to_string());
        let headers = OwnedHeaders::new()
            .insert(Header {
                key: "error.class",
                value: Some(bad.class),
            })
            .insert(Header {
                key: "error.message",
                value: Some(bad.message.as_str()),
            })
            .insert(Header {
                key: "source.topic",
                value: Some(topic),
            })
            .insert(Header {
                key: "source.partition",
                value: Some(p.as_str()),
            })
            .insert(Header {
                key: "source.offset",
                value: Some(o.as_str()),
            });
        let dlq = self.settings.topics.dlq.clone();
        self.produce(&dlq, None, key.unwrap_or_default(), payload, Some(headers))
    }

    /// Processes buffered records of every restored task. Returns whether anything is left.
    fn process(&mut self) -> Result<bool, RuntimeError> {
        let now = now_ms();
        let mut more = false;
        let mut effects = Vec::new();
        let partitions: Vec<i32> = self.tasks.keys().copied().collect();
        let topics = self.input_topics.clone();
        for p in partitions {
            if self.to_restore.contains(&p) {
                continue;
            }
            for _ in 0..BATCH {
                let task = self.tasks.get_mut(&p).expect("listed");
                match task.next(now) {
                    Next::Take(i) => {
                        let arrived = task.inputs[i].records.pop_front().expect("head exists");
                        task.inputs[i].next_offset = Some(arrived.offset + 1);
                        match &arrived.event {
                            Ok(event) => {
                                let source = InputCoordinates {
                                    topic: topics[i].clone(),
                                    partition: p,
                                    offset: arrived.offset,
                                };
                                match task.engine.process(event, Some(&source), now, &mut effects) {
                                    Ok(()) => {
                                        task.progress_dirty = true;
                                        self.execute(p, &mut effects)?;
                                    }
                                    // Refused untouched (time out of range): bad input.
                                    Err(e) => {
                                        let bad = BadInput {
                                            class: e.class(),
                                            message: e.to_string(),
                                        };
                                        self.dead_letter(
                                            &topics[i],
                                            p,
                                            arrived.offset,
                                            arrived.key.as_deref(),
                                            arrived.payload.as_deref(),
                                            &bad,
                                        )?;
                                    }
                                }
                            }
                            Err(bad) => {
                                self.dead_letter(
                                    &topics[i],
                                    p,
                                    arrived.offset,
                                    arrived.key.as_deref(),
                                    arrived.payload.as_deref(),
                                    bad,
                                )?;
                            }
                        }
                    }
                    Next::Wait { .. } => break,
                    Next::Idle => {
                        if task.caught_up() {
                            // Nothing left to read: timers fire by the wall clock.
                            if task.engine.next_due().is_some_and(|d| d <= now) {
                                task.engine.advance_to(now, now, &mut effects);
                                task.progress_dirty = true;
                                self.execute(p, &mut effects)?;
                            }
                        }
                        break;
                    }
                }
            }
            if self.tasks.get(&p).is_some_and(
                |t| matches!(t.inputs.iter().map(|q| q.records.len()).max(), Some(n) if n > 0),
            ) {
                more = true;
            }
        }
        Ok(more)
    }

    /// Pending timers, decisions, lag and overdue timers of every task, into the metrics.
    fn report_task_metrics<C: ConsumerContext>(&mut self, consumer: &BaseConsumer<C>) {
        let now = now_ms();
        let topics = self.input_topics.clone();
        let mut overdue = 0usize;
        for (p, task) in &self.tasks {
            let label = p.to_string();
            self.metrics
                .pending_timers
                .with_label_values(&[label.as_str()])
                .set(task.engine.pending_count() as i64);
            overdue += task.engine.timers_due_before(now - 60_000);
            let reported = self.decisions_reported.entry(*p).or_default();
            for (outcome, reason, n) in task.engine.counters().decision_counts() {
                let seen = reported.entry((outcome, reason)).or_default();
                if n > *seen {
                    self.metrics
                        .decisions
                        .with_label_values(&[outcome.as_str(), reason.as_str()])
                        .inc_by(n - *seen);
                    *seen = n;
                }
            }
            for (i, q) in task.inputs.iter().enumerate() {
                let high = super::kafka::cached_high_watermark(consumer, &topics.c_names[i], *p);
                if let (Some(high), Some(position)) = (high, q.position) {
                    self.metrics
                        .consumer_lag
                        .with_label_values(&[topics[i].as_str(), label.as_str()])
                        .set((high - position).max(0) + q.records.len() as i64);
                }
            }
        }
        self.metrics.overdue_timers.set(overdue as i64);
    }

    /// Writes dirty state, commits offsets (last processed + 1) and the transaction.
    fn commit<C: ConsumerContext>(
        &mut self,
        consumer: &BaseConsumer<C>,
    ) -> Result<(), RuntimeError> {
        let mut offsets = TopicPartitionList::new();
        let mut writes: Vec<(i32, String, Option<Vec<u8>>)> = Vec::new();
        let topics = self.input_topics.clone();
        for (p, task) in self.tasks.iter_mut() {
            for user in std::mem::take(&mut task.dirty) {
                let (key, value) = task.engine.user_changelog_record(&user);
                let bytes = value.map(|v| {
                    self.codecs
                        .changelog
                        .encode(&v)
                        .expect("state records encode")
                });
                writes.push((*p, key, bytes));
            }
            if std::mem::take(&mut task.progress_dirty) {
                if let Some(record) = task.engine.progress_record() {
                    let bytes = self
                        .codecs
                        .changelog
                        .encode(&record)
                        .expect("state records encode");
                    writes.push((*p, record.changelog_key(), Some(bytes)));
                }
            }
            for (i, q) in task.inputs.iter().enumerate() {
                if let Some(next) = q.next_offset.filter(|n| Some(*n) != q.committed_offset) {
                    offsets.add_partition_offset(&topics[i], *p, Offset::Offset(next))?;
                }
            }
        }
        let changelog = self.settings.topics.changelog.clone();
        for (p, key, value) in writes {
            self.produce(&changelog, Some(p), key.as_bytes(), value.as_deref(), None)?;
        }
        if offsets.count() > 0 {
            self.begin()?;
        }
        if !self.in_transaction {
            self.last_commit = Instant::now();
            return Ok(());
        }
        let started = Instant::now();
        if self.exactly_once() {
            // The group metadata is read right before the call: after a rebalance the
            // generation changes, and offsets sent with a stale one would be rejected.
            let metadata = consumer
                .group_metadata()
                .ok_or_else(|| RuntimeError::Fatal("no consumer group metadata".into()))?;
            if offsets.count() > 0 {
                self.producer
                    .send_offsets_to_transaction(&offsets, &metadata, CALL_TIMEOUT)?;
            }
            self.producer.commit_transaction(CALL_TIMEOUT)?;
        } else {
            // At-least-once: output first, then the offsets that cover it.
            self.producer.flush(CALL_TIMEOUT)?;
            if offsets.count() > 0 {
                consumer.commit(&offsets, rdkafka::consumer::CommitMode::Sync)?;
            }
        }
        self.in_transaction = false;
        self.last_commit = Instant::now();
        self.metrics
            .commit_seconds
            .observe(started.elapsed().as_secs_f64());
        self.report_task_metrics(consumer);
        for task in self.tasks.values_mut() {
            for q in task.inputs.iter_mut() {
                q.committed_offset = q.next_offset;
            }
        }
        debug!(took_ms = started.elapsed().as_millis() as u64, "committed");
        Ok(())
    }
}

/// Runs the connector until `shutdown` is set.
pub fn run(settings: Settings, shutdown: Arc<AtomicBool>) -> Result<(), RuntimeError> {
    let partitions = check_co_partitioning(&settings)?;
    info!(partitions, "topics checked");
    let codecs = Codecs::new(&settings).map_err(RuntimeError::Codec)?;
    let metrics = Arc::new(Metrics::new());
    let health = Arc::new(Health::default());
    health.heartbeat_ms.store(now_ms(), Ordering::Relaxed);
    health.set_ready(false, "loading the catalog");
    let admin = match &settings.http_listen {
        Some(listen) => Some(
            super::http::start(
                listen,
                settings.admin_token.clone(),
                metrics.clone(),
                health.clone(),
            )
            .map_err(RuntimeError::Fatal)?
            .0,
        ),
        None => None,
    };

    let mut catalog_reader = super::catalog_feed::CatalogFeed::start(&settings)?;
    let producer = create_producer(&settings)?;
    let restore_reader = standalone_consumer(&settings, "restore")?;
    let core = Arc::new(Mutex::new(Some(Core {
        settings: settings.clone(),
        codecs,
        producer,
        restore_reader,
        tasks: BTreeMap::new(),
        to_restore: Vec::new(),
        catalog: BTreeMap::new(),
        in_transaction: false,
        needs_resync: false,
        needs_new_producer: false,
        last_commit: Instant::now(),
        shutdown: shutdown.clone(),
        metrics: metrics.clone(),
        decisions_reported: HashMap::new(),
        partitions,
        input_topics: Arc::new(InputTopics::new(&settings)?),
    })));

    // Every instance reads the whole catalog before it processes anything.
    {
        let mut guard = lock(&core);
        let c = guard.as_mut().expect("set");
        catalog_reader.load_all(&c.codecs, &mut c.catalog, &shutdown)?;
        info!(campaigns = c.catalog.len(), "catalog loaded");
    }

    let consumer = create_group_consumer(&settings, core.clone())?;
    let t = &settings.topics;
    consumer.subscribe(&[t.interactions.as_str(), t.user_events.as_str()])?;
    let ranks: HashMap<String, usize> =
        [(t.interactions.clone(), 0), (t.user_events.clone(), 1)].into();

    let mut paused: Vec<(String, i32)> = Vec::new();
    while !shutdown.load(Ordering::Relaxed) {
        let busy = {
            let guard = lock(&core);
            guard
                .as_ref()
                .is_some_and(|c| c.tasks.values().any(|t| t.buffered() > 0))
        };
        // Poll without holding the lock: rebalance callbacks take it inside poll().
        let polled = consumer.poll(if busy {
            Duration::ZERO
        } else {
            Duration::from_millis(20)
        });
        let mut guard = lock(&core);
        let c = guard.as_mut().expect("set");
        if let Some(result) = polled {
            route(c, &ranks, result)?;
            // Drain whatever else is ready without blocking.
            for _ in 0..BATCH {
                drop(guard);
                let Some(result) = consumer.poll(Duration::ZERO) else {
                    guard = lock(&core);
                    break;
                };
                guard = lock(&core);
                route(guard.as_mut().expect("set"), &ranks, result)?;
            }
        }
        let c = guard.as_mut().expect("set");
        c.producer.poll(Duration::ZERO);
        health.heartbeat_ms.store(now_ms(), Ordering::Relaxed);
        if let Some(admin) = &admin {
            while let Ok(request) = admin.try_recv() {
                answer_admin(c, &consumer, request);
            }
        }
        // Catalog updates reach every task.
        let updates = catalog_reader.poll_updates(&c.codecs)?;
        apply_catalog(c, updates)?;
        if c.needs_resync {
            resync(c, &consumer)?;
        }
        restore_pending(c, &consumer)?;
        let ready = c.to_restore.is_empty();
        health.set_ready(ready, if ready { "" } else { "restoring tasks" });
        c.metrics.ready.set(ready as i64);
        refresh_ends(c, &consumer);
        backpressure(c, &consumer, &mut paused)?;
        if let Err(e) = c.process() {
            warn!(error = %e, "processing failed; re-synchronising");
            c.failed(&e);
            continue;
        }
        if c.last_commit.elapsed() >= c.settings.commit_interval {
            if let Err(e) = c.commit(&consumer) {
                warn!(error = %e, "commit failed; re-synchronising from committed state");
                c.failed(&e);
            }
        }
    }

    info!("shutting down: finishing the transaction");
    {
        let mut guard = lock(&core);
        let c = guard.as_mut().expect("set");
        if !c.needs_resync {
            if let Err(e) = c.commit(&consumer) {
                warn!(error = %e, "final commit failed; the next owner resumes from the last commit");
                if c.exactly_once() {
                    let _ = c.producer.abort_transaction(CALL_TIMEOUT);
                }
            }
        }
    }
    consumer.unsubscribe();
    // Leave the group before dropping the shared state the callbacks use.
    let _ = consumer.poll(Duration::from_millis(100));
    drop(consumer);
    lock(&core).take();
    info!("stopped");
    Ok(())
}

fn create_producer(settings: &Settings) -> Result<BaseProducer, RuntimeError> {
    let mut c = base_config(settings);
    // Java-compatible partitioning of send-commands by user id.
    c.set("partitioner", "murmur2_random")
        .set("enable.idempotence", "true")
        .set("linger.ms", "5");
    if settings.processing_guarantee == ProcessingGuarantee::ExactlyOnce {
        c.set("transactional.id", settings.transactional_id()).set(
            "transaction.timeout.ms",
            settings.transaction_timeout.as_millis().to_string(),
        );
    }
    let producer: BaseProducer = c.create()?;
    if settings.processing_guarantee == ProcessingGuarantee::ExactlyOnce {
        // Fences any earlier incarnation of this instance and aborts its open transaction.
        producer.init_transactions(CALL_TIMEOUT)?;
    }
    Ok(producer)
}

fn create_group_consumer(
    settings: &Settings,
    core: Arc<Mutex<Option<Core>>>,
) -> Result<BaseConsumer<GroupContext>, RuntimeError> {
    let mut c = base_config(settings);
    c.set("group.id", &settings.application_id)
        // The admin API names owners by client id.
        .set("client.id", &settings.instance_id)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        // Only committed transactions are input; committed offsets are fetched stable.
        .set("isolation.level", "read_committed")
        .set("auto.offset.reset", "earliest");
    if settings.static_membership {
        c.set("group.instance.id", &settings.instance_id);
    }
    match settings.group_protocol {
        GroupProtocol::Classic => {
            c.set("partition.assignment.strategy", "cooperative-sticky");
        }
        GroupProtocol::Consumer => {
            c.set("group.protocol", "consumer");
            // Under KIP-848 these are the broker's settings; librdkafka refuses them.
            for key in [
                "session.timeout.ms",
                "heartbeat.interval.ms",
                "partition.assignment.strategy",
            ] {
                if c.get(key).is_some() {
                    warn!(
                        key,
                        "ignored with group_protocol consumer (set on the broker)"
                    );
                    c.remove(key);
                }
            }
        }
    }
    Ok(c.create_with_context(GroupContext { core })?)
}

/// Puts a polled message (or event) into its task.
fn route(
    c: &mut Core,
    ranks: &HashMap<String, usize>,
    result: KafkaResult<BorrowedMessage<'_>>,
) -> Result<(), RuntimeError> {
    match result {
        Ok(m) => {
            c.metrics
                .events_consumed
                .with_label_values(&[m.topic()])
                .inc();
            let Some(&rank) = ranks.get(m.topic()) else {
                return Ok(());
            };
            let partition = m.partition();
            let arrived = arrive(&c.codecs, rank, &m);
            if let Some(task) = c.tasks.get_mut(&partition) {
                let q = &mut task.inputs[rank];
                q.at_end = false;
                q.position = Some(arrived.offset + 1);
                q.records.push_back(arrived);
            }
            Ok(())
        }
        // Which input reached its end is worked out from positions (`refresh_ends`).
        Err(KafkaError::PartitionEOF(_)) => Ok(()),
        Err(e) => {
            warn!(error = %e, "consumer error");
            Ok(())
        }
    }
}

/// Decodes an input record into an event, or says why it is bad input (SPEC §4).
fn arrive(codecs: &Codecs, rank: usize, m: &BorrowedMessage<'_>) -> Arrived {
    let key = m.key().map(<[u8]>::to_vec);
    let payload = m.payload().map(<[u8]>::to_vec);
    let event = decode_input(codecs, rank, m.key(), m.payload());
    Arrived {
        offset: m.offset(),
        key,
        payload,
        event,
    }
}

fn decode_input(
    codecs: &Codecs,
    rank: usize,
    key: Option<&[u8]>,
    payload: Option<&[u8]>,
) -> Result<InputEvent, BadInput> {
    let bad = |class: &'static str, message: String| BadInput { class, message };
    let bytes = payload.ok_or_else(|| bad("empty_value", "the record has no value".into()))?;
    let event = if rank == 0 {
        codecs
            .interactions
            .decode(bytes)
            .map(InputEvent::Interaction)
    } else {
        codecs.user_events.decode(bytes).map(InputEvent::UserEvent)
    }
    .map_err(|e| bad("undecodable", e.to_string()))?;
    if event.user_id().is_empty() {
        return Err(bad("empty_user_id", "user_id is empty".into()));
    }
    if event.event_id().is_empty() {
        return Err(bad("empty_event_id", "event_id is empty".into()));
    }
    let key = key.map(String::from_utf8_lossy);
    if key.as_deref() != Some(event.user_id()) {
        return Err(bad(
            "key_mismatch",
            format!(
                "record key {:?} is not the user id {:?}",
                key.unwrap_or_default(),
                event.user_id()
            ),
        ));
    }
    Ok(event)
}

/// Applies catalog updates to the stored catalog and every task.
fn apply_catalog(
    c: &mut Core,
    updates: Vec<super::catalog_feed::CatalogUpdate>,
) -> Result<(), RuntimeError> {
    use super::catalog_feed::CatalogUpdate;
    let now = now_ms();
    let mut effects = Vec::new();
    for update in updates {
        match update {
            CatalogUpdate::Upsert(campaign) => {
                let partitions: Vec<i32> = c.tasks.keys().copied().collect();
                for p in partitions {
                    let task = c.tasks.get_mut(&p).expect("listed");
                    if let Err(e) = task.engine.apply_campaign(&campaign, now, &mut effects) {
                        warn!(error = %e, "catalog record rejected");
                    }
                    c.execute(p, &mut effects)?;
                }
                c.catalog.insert(campaign.campaign_id.clone(), *campaign);
            }
            CatalogUpdate::Delete(id) => {
                let partitions: Vec<i32> = c.tasks.keys().copied().collect();
                for p in partitions {
                    let task = c.tasks.get_mut(&p).expect("listed");
                    task.engine.remove_campaign(&id, now, &mut effects);
                    c.execute(p, &mut effects)?;
                }
                c.catalog.remove(&id);
            }
            CatalogUpdate::Bad {
                partition,
                offset,
                key,
                payload,
                error,
            } => {
                let topic = c.settings.topics.campaigns.clone();
                c.dead_letter(
                    &topic,
                    partition,
                    offset,
                    key.as_deref(),
                    payload.as_deref(),
                    &error,
                )?;
            }
        }
    }
    Ok(())
}

/// Restores tasks assigned since the last iteration, before any of their input is processed.
fn restore_pending(
    c: &mut Core,
    consumer: &BaseConsumer<GroupContext>,
) -> Result<(), RuntimeError> {
    while let Some(p) = c.to_restore.first().copied() {
        // Where the inputs resume: the committed offsets (fetched stable under
        // read_committed, so an open transaction's offsets are not taken for committed).
        let topics = c.input_topics.clone();
        let mut tpl = TopicPartitionList::new();
        for t in &topics.names {
            tpl.add_partition(t, p);
        }
        let committed = consumer.committed_offsets(tpl, CALL_TIMEOUT)?;
        let topic = c.settings.topics.changelog.clone();
        let task = c.tasks.get_mut(&p).expect("assigned tasks exist");
        c.metrics.restore_in_progress.set(c.to_restore.len() as i64);
        let restored = restore_partition(
            &c.restore_reader,
            &topic,
            p,
            &c.codecs,
            &mut task.engine,
            c.settings.restore_log_interval,
            &c.shutdown,
        )?;
        info!(
            partition = p,
            records = restored.records,
            pending = task.engine.pending_count(),
            ms = restored.elapsed.as_millis() as u64,
            "task restored"
        );
        for (i, t) in topics.names.iter().enumerate() {
            if let Some(Offset::Offset(o)) = committed.find_partition(t, p).map(|e| e.offset()) {
                let q = &mut task.inputs[i];
                q.position = Some(q.position.map_or(o, |known| known.max(o)));
            }
        }
        c.metrics
            .restore_duration
            .with_label_values(&[p.to_string().as_str()])
            .set(restored.elapsed.as_secs_f64());
        c.metrics
            .restore_records
            .with_label_values(&[p.to_string().as_str()])
            .inc_by(restored.records);
        c.decisions_reported.remove(&p);
        c.to_restore.remove(0);
    }
    c.metrics.restore_in_progress.set(0);
    Ok(())
}

/// Aborts the open transaction (or re-creates a fenced producer) and rebuilds every task
/// from committed state: the changelog, and the inputs from their committed offsets.
fn resync(c: &mut Core, consumer: &BaseConsumer<GroupContext>) -> Result<(), RuntimeError> {
    warn!("re-synchronising every task from committed state");
    c.metrics.transaction_aborts.inc();
    if c.exactly_once() && (c.in_transaction || c.needs_new_producer) {
        let aborted = !c.needs_new_producer && c.producer.abort_transaction(CALL_TIMEOUT).is_ok();
        if !aborted {
            warn!("re-creating the producer (its transactional id fences the old one)");
            c.producer = create_producer(&c.settings)?;
        }
    }
    c.needs_new_producer = false;
    c.in_transaction = false;
    let assignment = consumer.assignment()?;
    let committed = consumer.committed_offsets(assignment, CALL_TIMEOUT)?;
    let mut seek = TopicPartitionList::new();
    for e in committed.elements() {
        let offset = match e.offset() {
            Offset::Offset(o) => Offset::Offset(o),
            _ => Offset::Beginning,
        };
        seek.add_partition_offset(e.topic(), e.partition(), offset)?;
    }
    consumer.seek_partitions(seek, CALL_TIMEOUT)?;
    let partitions: Vec<i32> = c.tasks.keys().copied().collect();
    for p in partitions {
        let task = c.new_task(p);
        c.tasks.insert(p, task);
        if !c.to_restore.contains(&p) {
            c.to_restore.push(p);
        }
    }
    c.needs_resync = false;
    Ok(())
}

/// Marks each input partition with nothing buffered as at its end when its position (last
/// received + 1, or the committed offset it started from) reached the high watermark the
/// client last saw (for `read_committed`, the last stable
/// offset). A task with every input at its end is caught up and fires by the wall clock.
fn refresh_ends(c: &mut Core, consumer: &BaseConsumer<GroupContext>) {
    let topics = c.input_topics.clone();
    for (p, task) in c.tasks.iter_mut() {
        for (i, q) in task.inputs.iter_mut().enumerate() {
            let high = super::kafka::cached_high_watermark(consumer, &topics.c_names[i], *p);
            q.at_end = q.records.is_empty()
                && match (q.position, high) {
                    (Some(position), Some(high)) => position >= high,
                    // Nothing received and nothing to receive.
                    (None, Some(0)) => true,
                    _ => false,
                };
        }
    }
}

/// Pauses input partitions with too much buffered, resumes them when drained.
fn backpressure(
    c: &mut Core,
    consumer: &BaseConsumer<GroupContext>,
    paused: &mut Vec<(String, i32)>,
) -> Result<(), RuntimeError> {
    let topics = c.input_topics.clone();
    let mut pause = TopicPartitionList::new();
    let mut resume = TopicPartitionList::new();
    for (p, task) in &c.tasks {
        for (i, q) in task.inputs.iter().enumerate() {
            let key = (topics[i].clone(), *p);
            let is_paused = paused.contains(&key);
            if q.records.len() > MAX_BUFFERED && !is_paused {
                pause.add_partition(&topics[i], *p);
                paused.push(key);
            } else if q.records.len() < MAX_BUFFERED / 2 && is_paused {
                resume.add_partition(&topics[i], *p);
                paused.retain(|k| k != &key);
            }
        }
    }
    if pause.count() > 0 {
        consumer.pause(&pause)?;
    }
    if resume.count() > 0 {
        consumer.resume(&resume)?;
    }
    Ok(())
}

/// Answers an admin question from the tasks this instance owns.
fn answer_admin(c: &mut Core, consumer: &BaseConsumer<GroupContext>, request: AdminRequest) {
    use serde_json::json;
    match request {
        AdminRequest::Tasks { reply } => {
            let tasks: Vec<_> = c
                .tasks
                .iter()
                .map(|(p, t)| {
                    json!({
                        "task": p,
                        "restored": !c.to_restore.contains(p),
                        "users": t.engine.user_count(),
                        "pending_timers": t.engine.pending_count(),
                        "stream_time": t.engine.clock().map(crate::time::format_timestamp),
                        "buffered_records": t.buffered(),
                    })
                })
                .collect();
            let _ = reply.send((
                200,
                json!({"instance": c.settings.instance_id, "tasks": tasks}),
            ));
        }
        AdminRequest::User { user_id, reply } => {
            let task = partition_for_key(user_id.as_bytes(), c.partitions);
            let answer = match c.tasks.get(&task) {
                Some(t) if !c.to_restore.contains(&task) => {
                    let state = t.engine.export_user(&user_id);
                    let pending: Vec<_> = state
                        .iter()
                        .flat_map(|s| s.pending.iter())
                        .map(|p| {
                            json!({
                                "follow_on_id": p.follow_on_id,
                                "follow_on_version": p.follow_on_version,
                                "due_at": crate::time::format_timestamp(p.due_at),
                                // The decision that led here: SCHEDULED by this trigger.
                                "scheduled_by": {
                                    "decision": "SCHEDULED",
                                    "trigger_event_id": p.trigger.event_id,
                                    "trigger_campaign_id": p.trigger.campaign_id,
                                    "trigger_kind": p.trigger.kind.symbol(),
                                    "triggered_at": crate::time::format_timestamp(p.trigger.occurred_at),
                                },
                            })
                        })
                        .collect();
                    let receipts: Vec<_> = state
                        .iter()
                        .flat_map(|s| s.receipts.iter())
                        .map(|r| {
                            json!({
                                "follow_on_id": r.follow_on_id,
                                // The decision that led here: the last send (FIRED or SENT).
                                "last_sent_at": crate::time::format_timestamp(r.last_sent_at),
                            })
                        })
                        .collect();
                    (
                        200,
                        json!({
                            "user_id": user_id,
                            "task": task,
                            "instance": c.settings.instance_id,
                            "pending": pending,
                            "receipts": receipts,
                        }),
                    )
                }
                Some(_) => (
                    503,
                    json!({"user_id": user_id, "task": task, "error": "the task is being restored"}),
                ),
                None => (
                    409,
                    json!({
                        "user_id": user_id,
                        "task": task,
                        "owned_here": false,
                        "owner_instance": owner_of(c, consumer, task),
                        "error": format!("task {task} is owned by another instance; ask it"),
                    }),
                ),
            };
            let _ = reply.send(answer);
        }
    }
}

/// The instance (client id) that owns input partition `task`, from the group's description
/// (classic protocol). `None` when it cannot be told.
fn owner_of(c: &Core, consumer: &BaseConsumer<GroupContext>, task: i32) -> Option<String> {
    let groups = consumer
        .fetch_group_list(Some(&c.settings.application_id), Duration::from_secs(5))
        .ok()?;
    let group = groups
        .groups()
        .iter()
        .find(|g| g.name() == c.settings.application_id)?;
    for member in group.members() {
        let assignment = member
            .assignment()
            .and_then(decode_assignment)
            .unwrap_or_default();
        if assignment.iter().any(|(topic, partitions)| {
            *topic == c.settings.topics.interactions && partitions.contains(&task)
        }) {
            return Some(member.client_id().to_string());
        }
    }
    None
}

/// The consumer protocol's assignment bytes: version (i16), then topics, each a string
/// (i16 length) and an array of i32 partitions (i32 count).
fn decode_assignment(bytes: &[u8]) -> Option<Vec<(String, Vec<i32>)>> {
    let mut at = 2usize;
    let mut take = |n: usize| {
        let slice = bytes.get(at..at + n)?;
        at += n;
        Some(slice)
    };
    let topics = i32::from_be_bytes(take(4)?.try_into().ok()?);
    let mut out = Vec::new();
    for _ in 0..topics.max(0) {
        let len = i16::from_be_bytes(take(2)?.try_into().ok()?) as usize;
        let topic = String::from_utf8_lossy(take(len)?).into_owned();
        let count = i32::from_be_bytes(take(4)?.try_into().ok()?);
        let mut partitions = Vec::new();
        for _ in 0..count.max(0) {
            partitions.push(i32::from_be_bytes(take(4)?.try_into().ok()?));
        }
        out.push((topic, partitions));
    }
    Some(out)
}
