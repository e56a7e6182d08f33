//! The instance: one consumer-group member, the tasks it owns, one output, one loop.
//!
//! ```text
//!   group consumer ──poll──► input edge (decode, check) ──► Task[p] queues
//!        │  rebalance callbacks (inside poll, on this thread): see `rebalance.rs`
//!   changelog reader ──► Restorer (bounded steps) ──► Task[p] engine, then active
//!   catalog reader ──► every task's engine (a global table)
//!   Task[p]: merge ─► engine ─► effects ──► Output (the one executor, one transaction)
//!   every commit_interval: changelog of changed users + offsets (last processed + 1) ─► commit
//! ```
//!
//! The loop feeds what it observes to the rules (`rules.rs`) and does what they say: how
//! long to block, when to commit, which inputs to pause, when a restore is done, how a
//! failure is retried. Errors are handled by their disposition: *retry* holds the work,
//! backs off with jitter and tries again (a broker restart is ridden out); *dead-letter*
//! sends the record to the DLQ inside the transaction; *stop* ends `run` with the cause.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka::{Offset, TopicPartitionList};
use tracing::{debug, error, info, warn};

use super::admin_api::{self, AdminView};
use super::catalog_feed::{CatalogFeed, CatalogUpdate};
use super::codecs::Codecs;
use super::config::{ProcessingGuarantee, Settings};
use super::error::{recovery, Recovery, RuntimeError};
use super::http::Health;
use super::input::{arrive, redecode, EdgeChecks, InputTopics};
use super::kafka::{cached_high_watermark, check_co_partitioning, standalone_consumer};
use super::metrics::Metrics;
use super::output::{Output, Source};
use super::rebalance::{create_group_consumer, lock, GroupContext};
use super::restore::Restorer;
use super::rules::{
    input_at_end, needs_confirmation, poll_timeout_ms, readiness, Backoff, Backpressure,
    CommitCadence, Disposition, Flow, Ownership, Readiness, RetryBudget, Wakeup,
};
use super::task::{BadInput, Decoded, Task};
use crate::merge::Next;
use crate::model::{Campaign, DecisionOutcome, DecisionReason, InputCoordinates, TimestampMs};

/// Records a task processes before the loop looks at the consumer again.
const BATCH: usize = 2_000;
/// Changelog records replayed per loop iteration (a bounded step).
const RESTORE_STEP: usize = 20_000;
/// Buffered records per input partition above which the partition is paused.
const MAX_BUFFERED: usize = 20_000;
/// The longest the loop blocks in the consumer's poll.
const MAX_POLL_MS: i64 = 100;
/// Bound of a committed-offsets request.
const OFFSETS_TIMEOUT: Duration = Duration::from_secs(5);

pub fn now_ms() -> TimestampMs {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as TimestampMs)
        .unwrap_or(0)
}

/// What the loop and the rebalance callbacks share.
pub struct Core {
    pub settings: Settings,
    pub codecs: Codecs,
    pub output: Output,
    pub restorer: Restorer,
    /// Tasks owned whole by this instance: being restored, or active.
    pub tasks: BTreeMap<i32, Task>,
    /// Tasks committed and released by an eager revocation, kept in case the same
    /// rebalance hands them back (then no restore is needed: nobody else owned them).
    pub suspended: BTreeMap<i32, Task>,
    /// Active tasks whose input positions are not known yet (committed offsets to fetch).
    pub positions_unknown: BTreeSet<i32>,
    pub ownership: Ownership,
    /// The group gave this instance an assignment (possibly empty).
    pub joined: bool,
    pub catalog: BTreeMap<String, Campaign>,
    pub cadence: CommitCadence,
    /// A commit failed in a way that lets the call be repeated: no new work until it went
    /// through.
    pub commit_pending: bool,
    /// Offsets of the pending commit were already added to its transaction.
    pub offsets_sent: bool,
    /// The open transaction must be dropped and every task rewound to committed state.
    pub rewind: Option<Recovery>,
    pub backoff: Backoff,
    pub budget: RetryBudget,
    /// Retries (commit, rewind, decode) wait until then.
    pub retry_at: TimestampMs,
    /// An error that retrying cannot fix: `run` returns it.
    pub fatal: Option<RuntimeError>,
    pub metrics: Arc<Metrics>,
    decisions_reported: HashMap<i32, HashMap<(DecisionOutcome, DecisionReason), u64>>,
    /// Partition count of the inputs (to find the task of a user).
    pub partitions: usize,
    pub topics: Arc<InputTopics>,
    /// Input partitions paused, by (rank, partition).
    pub paused: BTreeSet<(usize, i32)>,
}

impl Core {
    pub fn exactly_once(&self) -> bool {
        self.settings.processing_guarantee == ProcessingGuarantee::ExactlyOnce
    }

    pub fn edge(&self, now: TimestampMs) -> EdgeChecks {
        EdgeChecks {
            now,
            max_future_skew_ms: self.settings.max_future_skew.as_millis() as i64,
        }
    }

    /// A fresh task, with the catalog as last read.
    pub fn new_task(&self, partition: i32) -> Task {
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

    /// Acts on a failure by its disposition.
    pub fn failed(&mut self, e: RuntimeError, during_commit: bool) {
        let now = now_ms();
        if e.disposition() == Disposition::Stop {
            error!(error = %e, "stopping: retrying cannot fix this");
            self.fatal.get_or_insert(e);
            return;
        }
        if !self.budget.failed(&e.signature(), now) {
            let seconds = self.budget_span_s();
            error!(error = %e, "stopping: the same failure keeps repeating");
            self.fatal.get_or_insert(RuntimeError::Exhausted {
                attempts: self.budget.streak(),
                seconds,
                last: e.to_string(),
            });
            return;
        }
        let delay = self.backoff.next_delay_ms();
        self.retry_at = now + delay;
        match recovery(&e) {
            Recovery::RepeatCall if during_commit => {
                warn!(error = %e, retry_in_ms = delay, "commit failed; repeating it");
                self.commit_pending = true;
            }
            r => {
                warn!(error = %e, retry_in_ms = delay, "rewinding every task to committed state");
                self.commit_pending = false;
                self.rewind = Some(match (self.rewind, r) {
                    (Some(Recovery::NewProducer), _) | (_, Recovery::NewProducer) => {
                        Recovery::NewProducer
                    }
                    _ => Recovery::Abort,
                });
            }
        }
    }

    fn budget_span_s(&self) -> i64 {
        self.settings.retry_budget.as_secs() as i64
    }

    /// Work went through: the failure streak ends.
    fn succeeded(&mut self) {
        if self.budget.streak() > 0 {
            info!("recovered");
        }
        self.budget.succeeded();
        self.backoff.reset();
    }

    /// Writes changed state, commits the input offsets and the transaction.
    pub fn commit(&mut self, consumer: &BaseConsumer<GroupContext>) -> Result<(), RuntimeError> {
        let started = Instant::now();
        let mut offsets = TopicPartitionList::new();
        for task in self.tasks.values_mut() {
            self.output.write_state(&self.codecs, task)?;
            for (i, q) in task.inputs.iter().enumerate() {
                if let Some(next) = q.next_offset.filter(|n| Some(*n) != q.committed_offset) {
                    offsets
                        .add_partition_offset(&self.topics[i], task.partition, Offset::Offset(next))
                        .map_err(RuntimeError::kafka("listing offsets"))?;
                }
            }
        }
        let had_work = self.output.is_open() || offsets.count() > 0;
        self.output
            .commit(consumer, &offsets, &mut self.offsets_sent)?;
        self.offsets_sent = false;
        self.commit_pending = false;
        self.cadence.committed(now_ms());
        for task in self.tasks.values_mut() {
            for q in task.inputs.iter_mut() {
                q.committed_offset = q.next_offset;
            }
        }
        if had_work {
            self.metrics
                .commit_seconds
                .observe(started.elapsed().as_secs_f64());
            debug!(took_ms = started.elapsed().as_millis() as u64, "committed");
        }
        self.succeeded();
        Ok(())
    }

    /// Drops the open transaction and rewinds every task to committed state: the inputs
    /// are sought back to their committed offsets and the tasks restored from the changelog.
    fn rewind(
        &mut self,
        consumer: &BaseConsumer<GroupContext>,
        how: Recovery,
    ) -> Result<(), RuntimeError> {
        warn!("rewinding every task to committed state");
        self.metrics.transaction_aborts.inc();
        self.output
            .abort(&self.settings, how == Recovery::NewProducer)?;
        self.offsets_sent = false;
        self.commit_pending = false;
        let assignment = consumer
            .assignment()
            .map_err(RuntimeError::kafka("reading the assignment"))?;
        if assignment.count() > 0 {
            let committed = consumer
                .committed_offsets(assignment, OFFSETS_TIMEOUT)
                .map_err(RuntimeError::kafka("fetching committed offsets"))?;
            let mut seek = TopicPartitionList::new();
            for e in committed.elements() {
                let offset = match e.offset() {
                    Offset::Offset(o) => Offset::Offset(o),
                    _ => Offset::Beginning,
                };
                seek.add_partition_offset(e.topic(), e.partition(), offset)
                    .map_err(RuntimeError::kafka("seeking to committed offsets"))?;
            }
            consumer
                .seek_partitions(seek, OFFSETS_TIMEOUT)
                .map_err(RuntimeError::kafka("seeking to committed offsets"))?;
        }
        self.suspended.clear();
        let partitions: Vec<i32> = self.tasks.keys().copied().collect();
        self.restorer.cancel_all();
        let now = now_ms();
        for p in partitions {
            let task = self.new_task(p);
            self.tasks.insert(p, task);
            self.restorer.start(p, now)?;
            self.decisions_reported.remove(&p);
        }
        self.rewind = None;
        Ok(())
    }

    /// A task that finished restoring (or came back from suspension) becomes active: the
    /// current catalog is applied again (a campaign stopped meanwhile drops its timers) and
    /// its input positions are learned from the committed offsets.
    fn activate(&mut self, partition: i32) -> Result<(), RuntimeError> {
        let now = now_ms();
        let mut effects = Vec::new();
        let catalog: Vec<Campaign> = self.catalog.values().cloned().collect();
        if let Some(task) = self.tasks.get_mut(&partition) {
            for c in &catalog {
                let _ = task.engine.apply_campaign(c, now, &mut effects);
            }
            self.output
                .execute(&self.codecs, &self.metrics, task, &mut effects)?;
        }
        self.positions_unknown.insert(partition);
        Ok(())
    }

    /// Learns where the inputs of newly active tasks resume: their committed offsets
    /// (fetched *stable* under `read_committed`, so an open transaction's offsets are not
    /// taken for committed).
    fn learn_positions(
        &mut self,
        consumer: &BaseConsumer<GroupContext>,
    ) -> Result<(), RuntimeError> {
        if self.positions_unknown.is_empty() {
            return Ok(());
        }
        let mut tpl = TopicPartitionList::new();
        for p in &self.positions_unknown {
            for t in &self.topics.names {
                tpl.add_partition(t, *p);
            }
        }
        let committed = consumer
            .committed_offsets(tpl, OFFSETS_TIMEOUT)
            .map_err(RuntimeError::kafka("fetching committed offsets"))?;
        let mut highs = BTreeMap::new();
        for p in &self.positions_unknown {
            for (i, t) in self.topics.names.iter().enumerate() {
                let (_, high) = consumer
                    .fetch_watermarks(t, *p, OFFSETS_TIMEOUT)
                    .map_err(RuntimeError::kafka("fetching high watermarks"))?;
                highs.insert((i, *p), high);
            }
        }
        for p in std::mem::take(&mut self.positions_unknown) {
            let Some(task) = self.tasks.get_mut(&p) else {
                continue;
            };
            for (i, t) in self.topics.names.iter().enumerate() {
                let q = &mut task.inputs[i];
                q.fresh_high = highs.get(&(i, p)).copied();
                debug!(task = p, input = t.as_str(), committed = ?committed.find_partition(t, p).map(|e| e.offset()), fresh_high = ?q.fresh_high, "input positions learned");
                match committed.find_partition(t, p).map(|e| e.offset()) {
                    Some(Offset::Offset(o)) => {
                        q.position = Some(q.position.map_or(o, |known| known.max(o)));
                        q.committed_offset.get_or_insert(o);
                    }
                    // Nothing committed yet: reading starts at the beginning.
                    _ => {
                        q.position.get_or_insert(0);
                    }
                }
            }
        }
        Ok(())
    }

    /// Processes buffered records of every active task.
    fn process(&mut self, now: TimestampMs, wake: &mut Wakeup) -> Result<(), RuntimeError> {
        let mut effects = Vec::new();
        let partitions: Vec<i32> = self.tasks.keys().copied().collect();
        let topics = self.topics.clone();
        let edge = self.edge(now);
        for p in partitions {
            if self.restorer.is_restoring(p) {
                continue;
            }
            let task = self.tasks.get_mut(&p).expect("listed");
            // A record whose decoding waits for the registry holds its whole task: taking
            // the other input's records first could change the outcome.
            let held: Vec<usize> = task.held_inputs().collect();
            if !held.is_empty() {
                if now < self.retry_at {
                    wake.retry_at = Some(self.retry_at);
                    continue;
                }
                for i in held {
                    let head = task.inputs[i].records.front_mut().expect("held");
                    redecode(&self.codecs, i, head, edge);
                }
                if task.held_inputs().next().is_some() {
                    self.retry_at = now + self.backoff.next_delay_ms();
                    wake.retry_at = Some(self.retry_at);
                    warn!(
                        task = p,
                        "the schema registry does not answer; holding the task"
                    );
                    continue;
                }
                self.backoff.reset();
            }
            let mut taken = 0;
            while taken < BATCH {
                taken += 1;
                let task = self.tasks.get_mut(&p).expect("listed");
                match task.next(now) {
                    Next::Take(i) => {
                        if matches!(
                            task.inputs[i].records.front().map(|r| &r.event),
                            Some(Decoded::Retry(_))
                        ) {
                            taken = usize::MAX;
                            continue;
                        }
                        let arrived = task.inputs[i].records.pop_front().expect("head exists");
                        task.inputs[i].next_offset = Some(arrived.offset + 1);
                        match &arrived.event {
                            Decoded::Event(event) => {
                                let source = InputCoordinates {
                                    topic: topics[i].clone(),
                                    partition: p,
                                    offset: arrived.offset,
                                };
                                match task.engine.process(event, Some(&source), now, &mut effects) {
                                    Ok(()) => {
                                        task.progress_dirty = true;
                                        self.output.execute(
                                            &self.codecs,
                                            &self.metrics,
                                            task,
                                            &mut effects,
                                        )?;
                                    }
                                    // The edge checks the same range; this is the engine's
                                    // own refusal, untouched state, treated alike.
                                    Err(e) => {
                                        let bad = BadInput {
                                            class: e.class(),
                                            message: e.to_string(),
                                        };
                                        let source = Source {
                                            topic: &topics[i],
                                            partition: p,
                                            offset: arrived.offset,
                                            key: arrived.key.as_deref(),
                                            payload: arrived.payload.as_deref(),
                                        };
                                        self.output.dead_letter(&self.metrics, &source, &bad)?;
                                    }
                                }
                            }
                            Decoded::Bad(bad) => {
                                let source = Source {
                                    topic: &topics[i],
                                    partition: p,
                                    offset: arrived.offset,
                                    key: arrived.key.as_deref(),
                                    payload: arrived.payload.as_deref(),
                                };
                                self.output.dead_letter(&self.metrics, &source, bad)?;
                            }
                            Decoded::Retry(_) => unreachable!("checked above"),
                            Decoded::Stop(message) => {
                                return Err(RuntimeError::Setup(format!(
                                    "decoding {}[{p}] at offset {}: {message}",
                                    topics[i], arrived.offset
                                )));
                            }
                        }
                    }
                    Next::Wait { until } => {
                        wake.merge_deadline =
                            Some(wake.merge_deadline.map_or(until, |d| d.min(until)));
                        taken = usize::MAX;
                    }
                    Next::Idle => {
                        if task.caught_up() {
                            // Nothing left to read: timers fire by the wall clock.
                            match task.engine.next_due() {
                                Some(d) if d <= now => {
                                    debug!(task = p, inputs = ?task.inputs.iter().map(|q| (q.position, q.fresh_high, q.at_end)).collect::<Vec<_>>(), "caught up: timers fire by the wall clock");
                                    task.engine.advance_to(now, now, &mut effects);
                                    task.progress_dirty = true;
                                    self.output.execute(
                                        &self.codecs,
                                        &self.metrics,
                                        task,
                                        &mut effects,
                                    )?;
                                }
                                Some(d) => {
                                    wake.next_due = Some(wake.next_due.map_or(d, |n| n.min(d)));
                                }
                                None => {}
                            }
                        }
                        taken = usize::MAX;
                    }
                }
            }
            if taken == BATCH {
                // The batch ended with records left: come back without waiting.
                wake.runnable = true;
            }
        }
        Ok(())
    }

    /// Marks which inputs are at their end, from positions and the high watermarks the
    /// client last saw.
    ///
    /// The client's cached watermark of an empty input can lag behind records of the other
    /// input that arrived in the same fetch: librdkafka updates each partition's watermark
    /// as it parses that partition's part of a response, while the loop may already be
    /// looking at the other partition's records. Taking those records because the empty
    /// input "is at its end" would put them ahead of earlier records still being parsed.
    /// So an empty input counts as at its end for the merge only once the broker confirmed
    /// it after the other input's newest record arrived.
    fn refresh_ends(&mut self, consumer: &BaseConsumer<GroupContext>) -> Result<(), RuntimeError> {
        for (p, task) in self.tasks.iter_mut() {
            for i in 0..task.inputs.len() {
                let cached = cached_high_watermark(consumer, &self.topics.c_names[i], *p);
                let newest_other = task.newest_other(i);
                let last_seq = task.last_seq;
                let q = &mut task.inputs[i];
                // Not at the end before the broker said where the end is.
                let high = q
                    .fresh_high
                    .map(|fresh| cached.map_or(fresh, |c| c.max(fresh)));
                q.at_end = input_at_end(q.records.len(), q.position, high);
                if needs_confirmation(q.at_end, newest_other, q.verified_seq) {
                    let (_, high) = consumer
                        .fetch_watermarks(&self.topics[i], *p, OFFSETS_TIMEOUT)
                        .map_err(RuntimeError::kafka("fetching high watermarks"))?;
                    q.fresh_high = Some(q.fresh_high.map_or(high, |f| f.max(high)));
                    q.at_end = input_at_end(q.records.len(), q.position, Some(high));
                    if q.at_end {
                        q.verified_seq = last_seq;
                    }
                }
            }
        }
        Ok(())
    }

    /// Pauses inputs with too much buffered and inputs of half-owned tasks; resumes the
    /// others.
    fn flow_control(&mut self, consumer: &BaseConsumer<GroupContext>) -> Result<(), RuntimeError> {
        let rules = Backpressure {
            max_buffered: MAX_BUFFERED,
        };
        let incomplete = self.ownership.incomplete();
        let mut pause = TopicPartitionList::new();
        let mut resume = TopicPartitionList::new();
        let mut wanted: Vec<((usize, i32), bool)> = Vec::new();
        for (p, task) in &self.tasks {
            for (i, q) in task.inputs.iter().enumerate() {
                let key = (i, *p);
                let paused = self.paused.contains(&key);
                if self.restorer.is_restoring(*p) {
                    // Nothing is processed before the restore is done.
                    if !paused {
                        wanted.push((key, true));
                    }
                    continue;
                }
                match rules.decide(q.records.len(), paused) {
                    Flow::Pause => wanted.push((key, true)),
                    Flow::Resume => wanted.push((key, false)),
                    Flow::Keep => {}
                }
            }
        }
        for key in incomplete {
            if !self.paused.contains(&key) {
                wanted.push((key, true));
            }
        }
        for ((i, p), pause_it) in wanted {
            if pause_it && self.paused.insert((i, p)) {
                pause.add_partition(&self.topics[i], p);
            } else if !pause_it && self.paused.remove(&(i, p)) {
                resume.add_partition(&self.topics[i], p);
            }
        }
        if pause.count() > 0 {
            consumer
                .pause(&pause)
                .map_err(RuntimeError::kafka("pausing inputs"))?;
        }
        if resume.count() > 0 {
            consumer
                .resume(&resume)
                .map_err(RuntimeError::kafka("resuming inputs"))?;
        }
        Ok(())
    }

    /// Pending timers, decisions and lag of every task, into the metrics.
    fn report_task_metrics(&mut self, consumer: &BaseConsumer<GroupContext>) {
        let now = now_ms();
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
                let high = cached_high_watermark(consumer, &self.topics.c_names[i], *p);
                if let (Some(high), Some(position)) = (high, q.position) {
                    self.metrics
                        .consumer_lag
                        .with_label_values(&[self.topics[i].as_str(), label.as_str()])
                        .set((high - position).max(0) + q.records.len() as i64);
                }
            }
        }
        self.metrics.overdue_timers.set(overdue as i64);
    }

    /// Applies catalog updates to the stored catalog and every active task (a task being
    /// restored gets the whole catalog again when it becomes active).
    fn apply_catalog(&mut self, updates: Vec<CatalogUpdate>) -> Result<(), RuntimeError> {
        let now = now_ms();
        let mut effects = Vec::new();
        for update in updates {
            match update {
                CatalogUpdate::Upsert(campaign) => {
                    for task in self.tasks.values_mut() {
                        if self.restorer.is_restoring(task.partition) {
                            continue;
                        }
                        if let Err(e) = task.engine.apply_campaign(&campaign, now, &mut effects) {
                            warn!(error = %e, "catalog record rejected");
                        }
                        self.output
                            .execute(&self.codecs, &self.metrics, task, &mut effects)?;
                    }
                    self.catalog.insert(campaign.campaign_id.clone(), *campaign);
                }
                CatalogUpdate::Delete(id) => {
                    for task in self.tasks.values_mut() {
                        if self.restorer.is_restoring(task.partition) {
                            continue;
                        }
                        task.engine.remove_campaign(&id, now, &mut effects);
                        self.output
                            .execute(&self.codecs, &self.metrics, task, &mut effects)?;
                    }
                    self.catalog.remove(&id);
                }
                // Never returned by the feed: it reads such records again itself.
                CatalogUpdate::Retry(_) => {}
                CatalogUpdate::Bad {
                    partition,
                    offset,
                    key,
                    payload,
                    error,
                } => {
                    // Every instance reads the whole catalog; the owner of the task with the
                    // catalog partition's number dead-letters a bad record, so it is
                    // dead-lettered once.
                    let task = partition.rem_euclid(self.partitions.max(1) as i32);
                    if self.tasks.contains_key(&task) {
                        let source = Source {
                            topic: &self.settings.topics.campaigns,
                            partition,
                            offset,
                            key: key.as_deref(),
                            payload: payload.as_deref(),
                        };
                        self.output.dead_letter(&self.metrics, &source, &error)?;
                    } else {
                        warn!(partition, offset, class = error.class, error = %error.message,
                            "bad catalog record (dead-lettered by the owner of task {task})");
                    }
                }
            }
        }
        Ok(())
    }

    /// Creates, resumes or drops tasks after the assignment changed.
    pub fn reconcile_tasks(&mut self) -> Result<(), RuntimeError> {
        let complete = self.ownership.complete_tasks();
        let now = now_ms();
        let gone: Vec<i32> = self
            .tasks
            .keys()
            .copied()
            .filter(|p| !complete.contains(p))
            .collect();
        for p in gone {
            self.restorer.cancel(p);
            self.tasks.remove(&p);
            self.positions_unknown.remove(&p);
            self.decisions_reported.remove(&p);
        }
        for p in complete {
            if self.tasks.contains_key(&p) {
                continue;
            }
            if let Some(mut task) = self.suspended.remove(&p) {
                task.clear_inputs();
                self.tasks.insert(p, task);
                self.positions_unknown.insert(p);
                info!(
                    task = p,
                    "task resumed without a restore (committed, not moved)"
                );
            } else {
                let task = self.new_task(p);
                self.tasks.insert(p, task);
                self.restorer.start(p, now)?;
            }
        }
        self.suspended.clear();
        let incomplete = self.ownership.incomplete();
        if !incomplete.is_empty() {
            warn!(partitions = ?incomplete, "input partitions assigned without the rest of their task: held paused, not processed");
        }
        info!(tasks = ?self.tasks.keys().collect::<Vec<_>>(), "tasks assigned");
        Ok(())
    }
}

/// Runs the connector until `shutdown` is set, or until an error that retrying cannot fix.
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
            .map_err(RuntimeError::Setup)?
            .0,
        ),
        None => None,
    };
    let mut catalog_reader = CatalogFeed::start(&settings)?;
    let output = Output::new(&settings)?;
    let restorer = Restorer::new(
        standalone_consumer(&settings, "restore")?,
        settings.topics.changelog.clone(),
        settings.restore_log_interval.as_millis() as i64,
    );
    let seed = now_ms() as u64 ^ (std::process::id() as u64) << 32;
    let core = Arc::new(Mutex::new(Some(Core {
        codecs,
        output,
        restorer,
        tasks: BTreeMap::new(),
        suspended: BTreeMap::new(),
        positions_unknown: BTreeSet::new(),
        ownership: Ownership::default(),
        joined: false,
        catalog: BTreeMap::new(),
        cadence: CommitCadence::new(settings.commit_interval.as_millis() as i64, now_ms()),
        commit_pending: false,
        offsets_sent: false,
        rewind: None,
        backoff: Backoff::new(100, 10_000, seed),
        budget: RetryBudget::new(10, settings.retry_budget.as_millis() as i64),
        retry_at: 0,
        fatal: None,
        metrics: metrics.clone(),
        decisions_reported: HashMap::new(),
        partitions,
        topics: Arc::new(InputTopics::new(
            &settings.topics.interactions,
            &settings.topics.user_events,
        )?),
        paused: BTreeSet::new(),
        settings: settings.clone(),
    })));

    // Every instance reads the whole catalog before it joins the group.
    {
        let mut guard = lock(&core);
        let c = guard.as_mut().expect("set");
        let heartbeat = || health.heartbeat_ms.store(now_ms(), Ordering::Relaxed);
        catalog_reader.load_all(&c.codecs, &mut c.catalog, &shutdown, &heartbeat)?;
        info!(campaigns = c.catalog.len(), "catalog loaded");
    }

    let consumer = create_group_consumer(&settings, core.clone())?;
    let t = &settings.topics;
    consumer
        .subscribe(&[t.interactions.as_str(), t.user_events.as_str()])
        .map_err(RuntimeError::kafka("subscribing to the inputs"))?;

    let mut wake = Wakeup {
        runnable: false,
        restoring: false,
        merge_deadline: None,
        next_due: None,
        commit_at: None,
        retry_at: None,
    };
    let mut last_metrics = 0;
    let result = loop {
        if shutdown.load(Ordering::Relaxed) {
            break Ok(());
        }
        // Poll without holding the lock: rebalance callbacks take it inside poll().
        let timeout = poll_timeout_ms(&wake, now_ms(), MAX_POLL_MS);
        let polled = consumer.poll(Duration::from_millis(timeout as u64));
        let mut guard = lock(&core);
        let c = guard.as_mut().expect("set");
        if let Some(result) = polled {
            route(c, result);
            for _ in 0..BATCH {
                drop(guard);
                let next = consumer.poll(Duration::ZERO);
                guard = lock(&core);
                match next {
                    Some(result) => route(guard.as_mut().expect("set"), result),
                    None => break,
                }
            }
        }
        let c = guard.as_mut().expect("set");
        let now = now_ms();
        c.output.poll();
        health.heartbeat_ms.store(now, Ordering::Relaxed);
        if let Some(admin) = &admin {
            while let Ok(request) = admin.try_recv() {
                let restorer = &c.restorer;
                let restoring = |p: i32| restorer.is_restoring(p);
                let view = AdminView {
                    instance_id: &c.settings.instance_id,
                    group_id: &c.settings.application_id,
                    interactions_topic: &c.settings.topics.interactions,
                    partitions: c.partitions,
                    tasks: &c.tasks,
                    restoring: &restoring,
                };
                admin_api::answer(&view, &consumer, request);
            }
        }
        if let Some(e) = c.fatal.take() {
            break Err(e);
        }
        wake = Wakeup {
            runnable: false,
            restoring: false,
            merge_deadline: None,
            next_due: None,
            commit_at: None,
            retry_at: None,
        };
        if let Err(e) = step(c, &consumer, &mut catalog_reader, now, &mut wake) {
            let in_commit = c.commit_pending;
            c.failed(e, in_commit);
        }
        if let Some(e) = c.fatal.take() {
            break Err(e);
        }
        let state = readiness(
            true,
            c.joined,
            c.ownership.incomplete().len(),
            c.restorer.progress(),
        );
        match &state {
            Readiness::Ready => health.set_ready(true, ""),
            Readiness::NotReady(why) => health.set_ready(false, why),
        }
        c.metrics.ready.set((state == Readiness::Ready) as i64);
        c.metrics
            .restore_in_progress
            .set(c.restorer.progress().len() as i64);
        if now - last_metrics >= 1_000 {
            last_metrics = now;
            c.report_task_metrics(&consumer);
        }
    };

    info!("shutting down: finishing the transaction");
    {
        let mut guard = lock(&core);
        let c = guard.as_mut().expect("set");
        if result.is_ok() && c.rewind.is_none() {
            if let Err(e) = c.commit(&consumer) {
                warn!(error = %e, "final commit failed; the next owner resumes from the last commit");
                let _ = c.output.abort(&c.settings, false);
            }
        } else {
            let _ = c.output.abort(&c.settings, false);
        }
    }
    consumer.unsubscribe();
    // Leave the group before dropping the shared state the callbacks use.
    let _ = consumer.poll(Duration::from_millis(100));
    drop(consumer);
    lock(&core).take();
    info!("stopped");
    result
}

/// One iteration's work after polling.
fn step(
    c: &mut Core,
    consumer: &BaseConsumer<GroupContext>,
    catalog_reader: &mut CatalogFeed,
    now: TimestampMs,
    wake: &mut Wakeup,
) -> Result<(), RuntimeError> {
    if c.rewind.is_some() || c.commit_pending {
        if now < c.retry_at {
            wake.retry_at = Some(c.retry_at);
            return Ok(());
        }
        if let Some(how) = c.rewind {
            c.rewind(consumer, how)?;
        } else {
            c.commit(consumer)?;
        }
    }
    let updates = catalog_reader.poll_updates(&c.codecs);
    c.apply_catalog(updates)?;
    let finished = {
        let Core {
            restorer,
            tasks,
            codecs,
            metrics,
            ..
        } = c;
        restorer.step(tasks, codecs, metrics, RESTORE_STEP, now)?
    };
    for done in finished {
        let task = &c.tasks[&done.partition];
        let seconds = (now - done.progress.started_at) as f64 / 1000.0;
        info!(
            task = done.partition,
            records = done.progress.records,
            pending = task.engine.pending_count(),
            seconds,
            "task restored"
        );
        let label = done.partition.to_string();
        c.metrics
            .restore_duration
            .with_label_values(&[label.as_str()])
            .set(seconds);
        // The series exists even when the changelog was empty.
        c.metrics
            .restore_records
            .with_label_values(&[label.as_str()])
            .inc_by(0);
        c.activate(done.partition)?;
    }
    wake.restoring = !c.restorer.progress().is_empty();
    c.learn_positions(consumer)?;
    c.refresh_ends(consumer)?;
    c.flow_control(consumer)?;
    c.process(now, wake)?;
    if c.cadence.due(now_ms()) {
        c.commit(consumer)?;
    }
    if c.output.is_open()
        || c.tasks
            .values()
            .any(|t| t.progress_dirty || !t.dirty.is_empty())
    {
        wake.commit_at = Some(c.cadence.next_at());
    }
    Ok(())
}

/// Puts a polled message into its task (or ignores what belongs to no task here).
fn route(c: &mut Core, result: Result<BorrowedMessage<'_>, KafkaError>) {
    match result {
        Ok(m) => {
            c.metrics
                .events_consumed
                .with_label_values(&[m.topic()])
                .inc();
            let Some(rank) = c.topics.rank(m.topic()) else {
                return;
            };
            let partition = m.partition();
            // A task being restored has its inputs paused; what was fetched before the
            // pause took effect waits in its queues.
            let edge = c.edge(now_ms());
            if let Some(task) = c.tasks.get_mut(&partition) {
                task.push(rank, arrive(&c.codecs, rank, &m, edge));
            }
        }
        // Which input reached its end is worked out from positions (`refresh_ends`).
        Err(KafkaError::PartitionEOF(_)) => {}
        Err(e) => warn!(error = %e, "consumer error (the client retries by itself)"),
    }
}
