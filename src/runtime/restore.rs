//! Restoring tasks from their changelog partitions, in bounded steps the loop takes
//! between everything else it does (heartbeats, health, metrics, admin API keep being
//! served), several tasks at once through one reader.
//!
//! Invariant ([`RestoreProgress`]): a task is restored only on proof that the reader's
//! position reached the high watermark captured when its restore began — the end of
//! everything written, committed or not, read at the `read_uncommitted` level (the
//! `read_committed` reader would be told the last stable offset, which stays behind a
//! transaction whose commit returned until its markers are written). The reader is
//! `read_committed`, so a predecessor's open transaction holds the position below that
//! watermark until the transaction is committed or aborted (by its producer, by fencing,
//! or by the transaction timeout); the restore waits rather than take "no more data for
//! now" for "done". A broker that is away is waited for, never an error.

use std::collections::BTreeMap;
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::{Offset, TopicPartitionList};
use tracing::{info, warn};

use super::batch_reader::{BatchReader, Record};
use super::codecs::Codecs;
use super::error::RuntimeError;
use super::metrics::Metrics;
use super::rules::{suspended_changelog_unchanged, RestoreProgress};
use super::task::Task;
use crate::codec::read_state_datum;
use crate::expansion::{parse_marker_key, Marker, PROGRESS_KEY};
use crate::model::{TaskStateRecord, TimestampMs, UserState};

/// Bound of one high-watermark request; the loop tries again later when it fails.
const WATERMARK_TIMEOUT: Duration = Duration::from_millis(1_000);
/// Bound of seeking a changelog partition back to a record to read again.
const SEEK_TIMEOUT: Duration = Duration::from_millis(1_000);
/// Pause between attempts to read a high watermark or to decode through an unavailable
/// schema registry.
const RETRY_MS: i64 = 1_000;

/// A task whose restore finished.
#[derive(Debug, Clone, Copy)]
pub struct Restored {
    pub partition: i32,
    pub progress: RestoreProgress,
}

/// A task released by an eager revocation, kept until the rebalance's assignment is known.
pub struct Suspended {
    pub task: Task,
    /// `Some` for a task revoked part way through its restore: its engine holds the
    /// changelog up to `position`, and its restore goes on from there (towards a high
    /// watermark read again).
    pub restore: Option<RestoreProgress>,
    /// For a committed task: its changelog's high watermark when it was suspended (`None`
    /// when it could not be read). It resumes only if the changelog has not grown by more
    /// than its own last commit's marker since — else somebody else owned it in between (a
    /// generation this member missed) and it is restored.
    pub changelog_high: Option<i64>,
}

impl Suspended {
    /// Whether a committed task may resume with its state as it is (see
    /// [`suspended_changelog_unchanged`]).
    pub fn unchanged(&self, high_now: Option<i64>, marker: i64) -> bool {
        suspended_changelog_unchanged(self.changelog_high, high_now, marker)
    }
}

pub struct Restorer {
    reader: BatchReader,
    /// Reads high watermarks: a client at the `read_uncommitted` level, whose answer
    /// counts every record written, committed or not. (Asked through the
    /// `read_committed` reader, the broker answers with the last stable offset: a
    /// predecessor's transaction whose commit had returned but whose markers were not
    /// written yet was not waited for, and what it wrote was not restored.)
    watermarks: BaseConsumer,
    topic: String,
    restoring: BTreeMap<i32, RestoreProgress>,
    /// No watermark request or read before this (after a failure).
    hold_until: TimestampMs,
    log_interval_ms: i64,
    last_log: TimestampMs,
    last_error_log: TimestampMs,
    /// The last step ended at its budget: more records are queued, read on without waiting.
    backlog: bool,
}

impl Restorer {
    pub fn new(
        reader: BaseConsumer,
        watermarks: BaseConsumer,
        topic: String,
        log_interval_ms: i64,
    ) -> Result<Self, RuntimeError> {
        Ok(Self {
            reader: BatchReader::new(reader).map_err(RuntimeError::Setup)?,
            watermarks,
            topic,
            restoring: BTreeMap::new(),
            hold_until: 0,
            log_interval_ms,
            last_log: 0,
            last_error_log: 0,
            backlog: false,
        })
    }

    pub fn progress(&self) -> &BTreeMap<i32, RestoreProgress> {
        &self.restoring
    }

    /// Whether the last step left records queued (the next one should not wait for more).
    pub fn has_backlog(&self) -> bool {
        self.backlog && !self.restoring.is_empty()
    }

    /// Whether the next step reads (a restore is under way and not held back by a retry).
    pub fn reads_at(&self, now: TimestampMs) -> bool {
        !self.restoring.is_empty() && now >= self.hold_until
    }

    pub fn is_restoring(&self, partition: i32) -> bool {
        self.restoring.contains_key(&partition)
    }

    /// Starts replaying the changelog partition of a task from its beginning.
    pub fn start(&mut self, partition: i32, now: TimestampMs) -> Result<(), RuntimeError> {
        if self.restoring.contains_key(&partition) {
            self.cancel(partition);
        }
        self.assign_at(partition, Offset::Beginning)?;
        self.restoring.insert(partition, RestoreProgress::new(now));
        Ok(())
    }

    /// Assigns a changelog partition to the reader from `offset`, its records routed to
    /// the reader's batches first.
    fn assign_at(&self, partition: i32, offset: Offset) -> Result<(), RuntimeError> {
        self.reader
            .route(&self.topic, partition)
            .map_err(RuntimeError::Setup)?;
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(&self.topic, partition, offset)
            .map_err(RuntimeError::kafka("assigning a changelog partition"))?;
        self.reader
            .consumer()
            .incremental_assign(&tpl)
            .map_err(RuntimeError::kafka("assigning a changelog partition"))
    }

    /// Stops restoring a task that an eager revocation releases, returning how far it got.
    pub fn suspend(&mut self, partition: i32) -> Option<RestoreProgress> {
        let progress = self.restoring.get(&partition).copied();
        self.cancel(partition);
        progress
    }

    /// Goes on with a suspended restore: reading resumes at its position, towards a high
    /// watermark read again (should another member have owned the task in between — a
    /// generation this member missed — what it wrote comes after the position and is read
    /// too).
    pub fn resume(
        &mut self,
        partition: i32,
        mut progress: RestoreProgress,
    ) -> Result<(), RuntimeError> {
        progress.target = None;
        if self.restoring.contains_key(&partition) {
            self.cancel(partition);
        }
        let offset = if progress.position > 0 {
            Offset::Offset(progress.position)
        } else {
            Offset::Beginning
        };
        self.assign_at(partition, offset)?;
        self.restoring.insert(partition, progress);
        Ok(())
    }

    /// The high watermark of a task's changelog partition now, as its restore captures it
    /// (a task waiting for hand-off markers reads its changelog again only when it grew).
    pub fn high_watermark(&self, partition: i32) -> Option<i64> {
        self.read_watermarks(partition).ok().map(|(_, high)| high)
    }

    /// A changelog partition's low and high watermark, counting uncommitted records.
    ///
    /// The watermark client assigns nothing, so librdkafka does not refresh its metadata
    /// for the topic by itself: a partition added by an expansion stays unknown to it
    /// (until the periodic refresh, minutes later). A read that fails for an unknown
    /// partition asks for the topic's metadata, which updates the client's view, before the
    /// caller tries again.
    fn read_watermarks(&self, partition: i32) -> Result<(i64, i64), KafkaError> {
        let read = self
            .watermarks
            .fetch_watermarks(&self.topic, partition, WATERMARK_TIMEOUT);
        if let Err(e) = &read {
            if e.rdkafka_error_code() == Some(RDKafkaErrorCode::UnknownPartition) {
                let _ = self
                    .watermarks
                    .fetch_metadata(Some(&self.topic), WATERMARK_TIMEOUT);
            }
        }
        read
    }

    /// Stops restoring a task (revoked, or restarted from scratch).
    pub fn cancel(&mut self, partition: i32) {
        if self.restoring.remove(&partition).is_some() {
            self.reader.unroute(&self.topic, partition);
            let mut tpl = TopicPartitionList::new();
            tpl.add_partition(&self.topic, partition);
            if let Err(e) = self.reader.consumer().incremental_unassign(&tpl) {
                warn!(partition, error = %e, "unassigning a changelog partition");
            }
        }
    }

    pub fn cancel_all(&mut self) {
        let partitions: Vec<i32> = self.restoring.keys().copied().collect();
        for p in partitions {
            self.cancel(p);
        }
    }

    /// Reads up to `budget` changelog records into their tasks' engines, and returns the
    /// tasks whose restore is complete. Waits up to `wait` for the first record when none
    /// is queued: while tasks restore, the loop waits here rather than on the group
    /// consumer, so records are taken as soon as they are fetched.
    pub fn step(
        &mut self,
        tasks: &mut BTreeMap<i32, Task>,
        codecs: &Codecs,
        metrics: &Metrics,
        budget: usize,
        wait: Duration,
        now: TimestampMs,
    ) -> Result<Vec<Restored>, RuntimeError> {
        self.backlog = false;
        if self.restoring.is_empty() || now < self.hold_until {
            return Ok(Vec::new());
        }
        self.read_targets(tasks, now);
        let mut read: BTreeMap<i32, u64> = BTreeMap::new();
        // Partitions to read again from an offset (a record that could not be decoded
        // yet), and the error that ends the restore.
        let mut again: Vec<(i32, i64)> = Vec::new();
        let mut fatal: Option<RuntimeError> = None;
        let Self {
            reader,
            restoring,
            topic,
            last_error_log,
            ..
        } = self;
        let mut take_one = |m: Record<'_>, ahead: Option<(i32, &[u8])>| -> bool {
            // A user's state a few records on: its place in the engine's index starts
            // loading now (a table of millions of users misses the cache on each lookup).
            if let Some((p, key)) = ahead {
                if let (Some(task), Some(Ok(user_id))) = (
                    tasks.get(&p),
                    key.strip_prefix(b"u/").map(std::str::from_utf8),
                ) {
                    task.engine.prefetch_user(user_id);
                }
            }
            if fatal.is_some() || again.iter().any(|&(p, _)| p == m.partition) {
                // Read again after the seek (or not at all).
                return false;
            }
            if let Some(code) = m.error {
                // Transport trouble, reported among the records (a broker outage leaves
                // many): librdkafka reconnects by itself, so read on.
                if code != RDKafkaErrorCode::PartitionEOF
                    && now.saturating_sub(*last_error_log) >= RETRY_MS
                {
                    *last_error_log = now;
                    warn!(topic = topic.as_str(), partition = m.partition, error = %code,
                        "changelog reader error; the client retries");
                }
                return true;
            }
            let (Some(progress), Some(task)) =
                (restoring.get_mut(&m.partition), tasks.get_mut(&m.partition))
            else {
                return true;
            };
            match take(codecs, task, &m) {
                Ok(()) => {
                    progress.record(m.offset);
                    *read.entry(m.partition).or_default() += 1;
                    true
                }
                Err(Taken::Later(message)) => {
                    warn!(topic = topic.as_str(), partition = m.partition, offset = m.offset, error = %message,
                        "changelog record cannot be decoded now; retrying");
                    again.push((m.partition, m.offset));
                    false
                }
                Err(Taken::Bad(message)) => {
                    fatal = Some(RuntimeError::Restore {
                        topic: topic.clone(),
                        partition: m.partition,
                        offset: m.offset,
                        message,
                    });
                    false
                }
            }
        };
        // The consumer's own queue: the client's log lines and errors, served through the
        // connector's logging. (Records are routed to the batches; one that came here
        // anyway is restored like the others.)
        let mut client_error: Option<KafkaError> = None;
        let mut go_on = true;
        for _ in 0..64 {
            match reader.consumer().poll(Duration::ZERO) {
                None => break,
                Some(Ok(m)) => {
                    if !take_one(Record::of_message(&m), None) {
                        go_on = false;
                        break;
                    }
                }
                Some(Err(e)) => client_error = Some(e),
            }
        }
        let taken = if go_on {
            reader.read(wait, budget, |m, _leftover, ahead| take_one(m, ahead))
        } else {
            0
        };
        if let Some(e) = client_error {
            if now.saturating_sub(*last_error_log) >= RETRY_MS {
                *last_error_log = now;
                warn!(topic = topic.as_str(), error = %e, "changelog reader error; the client retries");
            }
        }
        if let Some(e) = fatal {
            return Err(e);
        }
        for &(partition, offset) in &again {
            self.hold_until = now + RETRY_MS;
            // The records after it were taken from the client already: its position is
            // past them until the seek is done. A seek that fails is replaced by assigning
            // the partition again at the record — never leave it where it is.
            let sought = self.reader.consumer().seek(
                &self.topic,
                partition,
                Offset::Offset(offset),
                SEEK_TIMEOUT,
            );
            if let Err(e) = sought {
                warn!(topic = self.topic, partition, offset, error = %e,
                    "seeking the changelog back failed; assigning the partition again at the record");
                let mut tpl = TopicPartitionList::new();
                tpl.add_partition(&self.topic, partition);
                self.reader
                    .consumer()
                    .incremental_unassign(&tpl)
                    .map_err(RuntimeError::kafka("reassigning a changelog partition"))?;
                self.assign_at(partition, Offset::Offset(offset))?;
            }
        }
        self.backlog = taken >= budget && again.is_empty();
        // Counted once per step: a label lookup per record cost more than the engine's work.
        for (partition, records) in read {
            metrics
                .restore_records
                .with_label_values(&[partition.to_string().as_str()])
                .inc_by(records);
        }
        // Control records (transaction markers) move the position without a message: ask
        // the client where it is.
        // (Not for a partition sought back just now: until the seek has taken effect its
        // position counts records this step did not restore.)
        if let Ok(positions) = self.reader.consumer().position() {
            for e in positions.elements_for_topic(&self.topic) {
                if again.iter().any(|&(p, _)| p == e.partition()) {
                    continue;
                }
                if let (Some(progress), Offset::Offset(o)) =
                    (self.restoring.get_mut(&e.partition()), e.offset())
                {
                    progress.position(o);
                }
            }
        }
        if now.saturating_sub(self.last_log) >= self.log_interval_ms {
            self.last_log = now;
            for (p, r) in &self.restoring {
                info!(
                    topic = self.topic,
                    partition = p,
                    position = r.position,
                    high = r.target,
                    records = r.records,
                    "restoring"
                );
            }
        }
        let done: Vec<i32> = self
            .restoring
            .iter()
            .filter(|(_, r)| r.done())
            .map(|(p, _)| *p)
            .collect();
        let mut finished = Vec::with_capacity(done.len());
        for partition in done {
            let progress = self.restoring[&partition];
            self.cancel(partition);
            finished.push(Restored {
                partition,
                progress,
            });
        }
        Ok(finished)
    }

    /// Captures the high watermark of partitions that have none yet, and sizes their
    /// engines' tables for what is to come.
    fn read_targets(&mut self, tasks: &mut BTreeMap<i32, Task>, now: TimestampMs) {
        let missing: Vec<i32> = self
            .restoring
            .iter()
            .filter(|(_, r)| r.target.is_none())
            .map(|(p, _)| *p)
            .collect();
        for partition in missing {
            match self.read_watermarks(partition) {
                Ok((low, high)) => {
                    if let Some(r) = self.restoring.get_mut(&partition) {
                        r.target = Some(high);
                    }
                    if let Some(task) = tasks.get_mut(&partition) {
                        // At most one user per record; a compacted log has fewer. A resumed
                        // restore has room for what it read already.
                        let read = self.restoring.get(&partition).map_or(0, |r| r.records);
                        let records = (high - low).clamp(0, 50_000_000) as u64;
                        task.engine
                            .reserve_users(records.saturating_sub(read) as usize);
                    }
                }
                Err(e) => {
                    warn!(topic = self.topic, partition, error = %e,
                        "reading the changelog's high watermark; retrying");
                    self.hold_until = now + RETRY_MS;
                    return;
                }
            }
        }
    }
}

/// Why a changelog record was not restored.
enum Taken {
    /// It cannot be decoded now (the schema registry did not answer): read it again later.
    Later(String),
    /// It never will be.
    Bad(String),
}

/// Restores one changelog record into its task.
fn take(codecs: &Codecs, task: &mut Task, m: &Record<'_>) -> Result<(), Taken> {
    // An expansion's records: the task's progress in it, and hand-off markers.
    if let Some(key) = m.key.filter(|k| k.starts_with(b"x/")) {
        if key == PROGRESS_KEY.as_bytes() {
            task.restored_expansion = m.payload.and_then(|v| serde_json::from_slice(v).ok());
        } else if let Some((epoch, origin)) = parse_marker_key(key) {
            let marker: Marker = m
                .payload
                .and_then(|v| serde_json::from_slice(v).ok())
                .ok_or_else(|| Taken::Bad("a hand-off marker without its cuts".into()))?;
            task.markers.insert((epoch, origin));
            for (rank, p, cut) in marker.cuts {
                task.marker_cuts.insert((epoch, origin, rank, p), cut);
            }
        }
        return Ok(());
    }
    // Nearly every record is a user's state written by this build: read in place.
    if let Some(view) = m
        .payload
        .filter(|_| m.key.is_some())
        .and_then(|v| codecs.changelog.own_datum(v))
        .and_then(read_state_datum)
    {
        return task
            .engine
            .restore_parts(view.user.as_ref(), view.stream_time)
            .map_err(|e| Taken::Bad(e.to_string()));
    }
    match decode(codecs, m.key, m.payload) {
        Ok(Some(record)) => task
            .engine
            .restore(&record)
            .map_err(|e| Taken::Bad(e.to_string())),
        Ok(None) => Ok(()),
        Err((true, message)) => Err(Taken::Later(message)),
        Err((false, message)) => Err(Taken::Bad(message)),
    }
}

/// A changelog record into what the engine restores. A tombstone of a user key is that
/// user's empty state; tombstones of other keys restore nothing. Errors say whether a
/// retry may help (the schema registry did not answer).
fn decode(
    codecs: &Codecs,
    key: Option<&[u8]>,
    payload: Option<&[u8]>,
) -> Result<Option<TaskStateRecord>, (bool, String)> {
    let key = key.ok_or((false, "changelog record without a key".to_string()))?;
    match payload {
        Some(bytes) => codecs
            .changelog
            .decode(bytes)
            .map(Some)
            .map_err(|e| (e.is_retriable(), e.to_string())),
        None => Ok(key.strip_prefix(b"u/").map(|user_id| TaskStateRecord {
            user: Some(UserState {
                user_id: String::from_utf8_lossy(user_id).into_owned(),
                pending: vec![],
                receipts: vec![],
            }),
            rule: None,
            progress: None,
        })),
    }
}
