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
use std::sync::mpsc::Receiver;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prometheus::IntCounter;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::TopicPartitionList;
use tracing::{error, info, warn};

use super::admin_api::{self, AdminView};
use super::batch_reader::Record;
use super::catalog_feed::CatalogFeed;
use super::codecs::Codecs;
use super::config::{ProcessingGuarantee, Settings};
use super::ends::Ends;
use super::error::{Recovery, RuntimeError};
use super::expanding::{forwarded, own_arrival, skipped, Arrival, FeedReader};
use super::http::{AdminRequest, Health};
use super::input::{arrive, EdgeChecks, InputTopics};
use super::kafka::{check_co_partitioning, standalone_consumer, uncommitted_watermarks_consumer};
use super::layout::{read_layout, LayoutFeed};
use super::metrics::Metrics;
use super::output::Output;
use super::rebalance::{create_group_consumer, lock, GroupContext, GroupReader};
use super::restore::{Restorer, Suspended};
use super::rules::{
    poll_timeout_ms, readiness, Backoff, Backpressure, CommitCadence, Ownership, Readiness,
    RetryBudget, Wakeup,
};
use super::task::Task;
use crate::expansion::Layout;
use crate::model::{Campaign, DecisionOutcome, DecisionReason, TimestampMs};

/// Records a task processes before the loop looks at the consumer again; also the most
/// input records a member takes in one turn.
pub(super) const BATCH: usize = 2_000;
/// Events taken from the group consumer's own queue in one turn, at most.
const EVENTS_PER_TURN: usize = 64;
/// Changelog records replayed per loop iteration (a bounded step).
const RESTORE_STEP: usize = 20_000;
/// Decoded records a member buffers per input partition, on average (its budget).
pub(super) const MAX_BUFFERED: usize = 5_000;
/// How much a member buffers: the budget above, and 20,000 records above which an input
/// its task is held from taking is paused (`Backpressure`).
pub(super) const BACKPRESSURE: Backpressure = Backpressure {
    per_input: MAX_BUFFERED,
    held_max: 4 * MAX_BUFFERED,
};
/// The longest the loop blocks in the consumer's poll.
const MAX_POLL_MS: i64 = 100;
/// Bound of a committed-offsets request.
pub(super) const OFFSETS_TIMEOUT: Duration = Duration::from_secs(5);

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
    /// Asks the broker where inputs end, off the loop.
    pub ends: Ends,
    /// Tasks owned whole by this instance: being restored, or active.
    pub tasks: BTreeMap<i32, Task>,
    /// Tasks released by an eager revocation — committed, or part way through their
    /// restore — kept in case the same rebalance hands them back (then nothing is restored
    /// again: nobody else owned them in between).
    pub suspended: BTreeMap<i32, Suspended>,
    /// Active tasks whose input positions are not known yet (committed offsets to fetch).
    pub positions_unknown: BTreeSet<i32>,
    /// No read of committed offsets for `positions_unknown` before this (after a failure).
    pub positions_retry_at: TimestampMs,
    pub ownership: Ownership,
    /// The group gave this instance an assignment (possibly empty).
    pub joined: bool,
    pub catalog: BTreeMap<String, Campaign>,
    pub cadence: CommitCadence,
    /// At-least-once: input offsets whose changelog entries were produced after the last
    /// commit's flush, and are committed once the next flush has written them
    /// (`Core::land`).
    pub offsets_written: Option<TopicPartitionList>,
    /// The open transaction must be dropped and every task rewound to committed state.
    pub rewind: Option<Recovery>,
    pub backoff: Backoff,
    pub budget: RetryBudget,
    /// Retries (commit, rewind, decode) wait until then.
    pub retry_at: TimestampMs,
    /// An error that retrying cannot fix: `run` returns it.
    pub fatal: Option<RuntimeError>,
    pub metrics: Arc<Metrics>,
    pub decisions_reported: HashMap<i32, HashMap<(DecisionOutcome, DecisionReason), u64>>,
    /// Partition count of the inputs (to find the task of a user).
    pub partitions: usize,
    pub topics: Arc<InputTopics>,
    /// Input partitions paused, by (rank, partition).
    pub paused: BTreeSet<(usize, i32)>,
    /// `events_consumed` of each input by rank, looked up once rather than per record.
    pub consumed: [IntCounter; 2],
    /// When a consumer error was last logged (they come in bursts).
    pub last_consumer_error_log: TimestampMs,
    /// The newest expansion of the inputs, if any.
    pub layout: Option<Layout>,
    /// Side-feed readers of old tasks during an expansion, by task.
    pub feed_readers: BTreeMap<i32, FeedReader>,
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
            [&self.topics[0], &self.topics[1]],
            self.settings.limits,
            (
                self.settings.merge_max_wait.as_millis() as i64,
                self.settings.merge_fetch_wait.as_millis() as i64,
            ),
            self.settings.decisions_topic().is_some(),
        );
        let mut sink = Vec::new();
        for c in self.catalog.values() {
            // The catalog was validated when it was read.
            let _ = task.engine.apply_campaign(c, now_ms(), &mut sink);
        }
        task
    }
}

/// Runs the connector until `shutdown` is set, or until an error that retrying cannot fix.
pub fn run(settings: Settings, shutdown: Arc<AtomicBool>) -> Result<(), RuntimeError> {
    let partitions = check_co_partitioning(&settings)?;
    info!(
        partitions,
        threads = settings.processing_threads,
        "topics checked"
    );
    let metrics = Arc::new(Metrics::new());
    let members: Vec<Settings> = (0..settings.processing_threads)
        .map(|k| settings.member(k))
        .collect();
    let health: Vec<Arc<Health>> = members
        .iter()
        .map(|_| {
            let h = Arc::new(Health::default());
            h.heartbeat_ms.store(now_ms(), Ordering::Relaxed);
            h.set_ready(false, "loading the catalog");
            h
        })
        .collect();
    let mut admin: Vec<Option<Receiver<AdminRequest>>> = match &settings.http_listen {
        Some(listen) => super::http::start(
            listen,
            settings.admin_token.clone(),
            metrics.clone(),
            &settings.instance_id,
            health.clone(),
        )
        .map_err(RuntimeError::Setup)?
        .0
        .into_iter()
        .map(Some)
        .collect(),
        None => members.iter().map(|_| None).collect(),
    };
    // One member loop per processing thread: each a consumer-group member with its own
    // consumer, transactional producer and tasks, so nothing on the hot path is shared.
    let threads: Vec<_> = members
        .into_iter()
        .enumerate()
        .map(|(k, member)| {
            let (metrics, health, shutdown) =
                (metrics.clone(), health[k].clone(), shutdown.clone());
            let admin = admin[k].take();
            std::thread::Builder::new()
                .name(format!("member-{k}"))
                .spawn(move || {
                    let result =
                        run_member(member, partitions, shutdown.clone(), metrics, health, admin);
                    if result.is_err() {
                        // One member cannot go on: the instance stops (and restarts whole).
                        shutdown.store(true, Ordering::Relaxed);
                    }
                    result
                })
                .map_err(|e| RuntimeError::Setup(format!("starting processing thread {k}: {e}")))
        })
        .collect::<Result<_, _>>()?;
    wait_for_members(threads, &shutdown, STOP_GRACE)
}

/// How long the member loops have, once the instance is told to stop, to finish their
/// transactions and leave the group.
const STOP_GRACE: Duration = Duration::from_secs(45);

/// Waits for every member loop; once the instance is stopping, for at most `grace`:
/// a loop stuck in a client call must not keep the process from exiting (its open
/// transaction is aborted when the next owner's producer fences it, or by the transaction
/// timeout).
fn wait_for_members(
    mut threads: Vec<std::thread::JoinHandle<Result<(), RuntimeError>>>,
    shutdown: &AtomicBool,
    grace: Duration,
) -> Result<(), RuntimeError> {
    let mut first_error = None;
    let mut stopping_since: Option<std::time::Instant> = None;
    while !threads.is_empty() {
        let (done, running): (Vec<_>, Vec<_>) = threads.into_iter().partition(|t| t.is_finished());
        threads = running;
        for t in done {
            let result = t.join().unwrap_or_else(|_| {
                Err(RuntimeError::Setup("a processing thread panicked".into()))
            });
            if let Err(e) = result {
                first_error.get_or_insert(e);
            }
        }
        if threads.is_empty() {
            break;
        }
        if shutdown.load(Ordering::Relaxed) {
            let since = *stopping_since.get_or_insert_with(std::time::Instant::now);
            if since.elapsed() >= grace {
                let stuck: Vec<String> = threads
                    .iter()
                    .map(|t| t.thread().name().unwrap_or("member").to_string())
                    .collect();
                error!(
                    ?stuck,
                    grace_s = STOP_GRACE.as_secs(),
                    "member loops did not stop in time; exiting without them"
                );
                return Err(first_error.unwrap_or_else(|| {
                    RuntimeError::Setup(format!(
                        "stopping: {} did not finish within {:?} (stuck in a client call); exiting without them",
                        stuck.join(", "),
                        grace
                    ))
                }));
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    first_error.map_or(Ok(()), Err)
}

/// One member loop: a consumer-group member with its tasks, until `shutdown` is set or an
/// error that retrying cannot fix.
fn run_member(
    settings: Settings,
    partitions: usize,
    shutdown: Arc<AtomicBool>,
    metrics: Arc<Metrics>,
    health: Arc<Health>,
    admin: Option<Receiver<AdminRequest>>,
) -> Result<(), RuntimeError> {
    let codecs = Codecs::new(&settings).map_err(RuntimeError::Codec)?;
    let mut catalog_reader = CatalogFeed::start(&settings)?;
    let output = Output::new(&settings)?;
    let restorer = Restorer::new(
        standalone_consumer(&settings, "restore")?,
        uncommitted_watermarks_consumer(&settings)?,
        settings.topics.changelog.clone(),
        settings.restore_log_interval.as_millis() as i64,
    )?;
    let topics = Arc::new(InputTopics::new(
        &settings.topics.interactions,
        &settings.topics.user_events,
    )?);
    let ends = Ends::start(&settings, topics.clone())?;
    let consumed = [0, 1].map(|i| {
        metrics
            .events_consumed
            .with_label_values(&[topics[i].as_str()])
    });
    let seed = now_ms() as u64 ^ (std::process::id() as u64) << 32;
    let core = Arc::new(Mutex::new(Some(Core {
        codecs,
        output,
        restorer,
        ends,
        tasks: BTreeMap::new(),
        suspended: BTreeMap::new(),
        positions_unknown: BTreeSet::new(),
        positions_retry_at: 0,
        ownership: Ownership::default(),
        joined: false,
        catalog: BTreeMap::new(),
        cadence: CommitCadence::new(settings.commit_interval.as_millis() as i64, now_ms()),
        offsets_written: None,
        rewind: None,
        backoff: Backoff::new(100, 10_000, seed),
        budget: RetryBudget::new(10, settings.retry_budget.as_millis() as i64),
        retry_at: 0,
        fatal: None,
        metrics: metrics.clone(),
        decisions_reported: HashMap::new(),
        partitions,
        topics,
        paused: BTreeSet::new(),
        consumed,
        last_consumer_error_log: 0,
        layout: None,
        feed_readers: BTreeMap::new(),
        settings: settings.clone(),
    })));

    // Every instance reads the whole catalog before it joins the group.
    {
        let mut guard = lock(&core);
        let c = guard.as_mut().expect("set");
        let heartbeat = || health.heartbeat_ms.store(now_ms(), Ordering::Relaxed);
        if !catalog_reader.load_all(&c.codecs, &mut c.catalog, &shutdown, &heartbeat)? {
            info!("stopped while loading the catalog");
            return Ok(());
        }
        info!(campaigns = c.catalog.len(), "catalog loaded");
        // An expansion under way or done decides what each task owns: known before any.
        if let Some(layout) = read_layout(&settings)? {
            c.learn_layout(layout);
        }
    }
    let mut layout_feed = LayoutFeed::start(&settings)?;

    let reader = create_group_consumer(&settings, core.clone())?;
    let consumer = reader.consumer();
    let t = &settings.topics;
    consumer
        .subscribe(&[t.interactions.as_str(), t.user_events.as_str()])
        .map_err(RuntimeError::kafka("subscribing to the inputs"))?;

    let mut wake = Wakeup::idle();
    let mut last_metrics = 0;
    let result = loop {
        if shutdown.load(Ordering::Relaxed) {
            break Ok(());
        }
        // The consumer's own queue first, without holding the lock: rebalance and commit
        // callbacks run inside its poll and take it.
        let events_left = serve_group_events(&reader, &core);
        let timeout = poll_timeout_ms(&wake, now_ms(), MAX_POLL_MS);
        // While tasks restore, the loop waits on the changelog reader instead (in the
        // restore step): its records are the work, the inputs are read in passing.
        let timeout = Duration::from_millis(timeout as u64);
        let (group_wait, restore_wait) = if events_left {
            (Duration::ZERO, Duration::ZERO)
        } else if wake.restoring {
            (Duration::ZERO, timeout)
        } else {
            (timeout, Duration::ZERO)
        };
        let mut guard = lock(&core);
        let c = guard.as_mut().expect("set");
        // Over its budget the member takes one record a turn; the rest stays in the
        // client's prefetch (bounded, undecoded) until the tasks worked some off. The wait
        // for the first record ends early when an event reaches the consumer's queue.
        let max = if c.over_budget() { 1 } else { BATCH };
        // One reading of the clock for the batch's edge checks, once it has a record.
        let mut edge = None;
        reader.read(group_wait, max, |record, _, _| {
            let edge = *edge.get_or_insert_with(|| c.edge(now_ms()));
            route(c, record, edge);
            true
        });
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
                    layout: c.layout,
                    tasks: &c.tasks,
                    restoring: &restoring,
                };
                admin_api::answer(&view, consumer, request);
            }
        }
        if let Some(e) = c.fatal.take() {
            break Err(e);
        }
        wake = Wakeup::idle();
        if let Some(layout) = layout_feed.poll() {
            c.learn_layout(layout);
        }
        if let Err(e) = step(
            c,
            consumer,
            &mut catalog_reader,
            now,
            restore_wait,
            &mut wake,
        ) {
            c.failed(e);
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
        health
            .restoring
            .store(c.restorer.progress().len() as i64, Ordering::Relaxed);
        if now - last_metrics >= 1_000 {
            last_metrics = now;
            let overdue = c.report_task_metrics(consumer);
            health.overdue.store(overdue as i64, Ordering::Relaxed);
        }
    };

    if result.is_err() {
        // The instance stops (and restarts whole): the other members stop now, before this
        // one leaves the group and its tasks move to them — taken over, they would meet the
        // same failure, or go on without this member's work.
        shutdown.store(true, Ordering::Relaxed);
    }
    info!("shutting down: finishing the transaction");
    {
        let mut guard = lock(&core);
        let c = guard.as_mut().expect("set");
        if result.is_ok() && c.rewind.is_none() {
            if let Err(e) = c.commit(consumer) {
                warn!(error = %e, "final commit failed; the next owner resumes from the last commit");
                let _ = c.output.abort(&c.settings, false);
                // Nor may the revocation below commit what this commit could not.
                c.rewind.get_or_insert(Recovery::Abort);
            }
        } else {
            let _ = c.output.abort(&c.settings, false);
            // The revocation that leaving the group brings must not commit either: the
            // tasks' input positions and changed users are those of the output just
            // dropped (after a fatal error, e.g. a record the broker refuses).
            c.rewind.get_or_insert(Recovery::Abort);
        }
    }
    consumer.unsubscribe();
    // Leave the group before dropping the shared state the callbacks use.
    let _ = consumer.poll(Duration::from_millis(100));
    drop(reader);
    lock(&core).take();
    info!("stopped");
    result
}

/// How often an idle loop looks whether the commit in flight has ended.
const LAND_LOOK_MS: i64 = 2;

/// One iteration's work after polling.
fn step(
    c: &mut Core,
    consumer: &BaseConsumer<GroupContext>,
    catalog_reader: &mut CatalogFeed,
    now: TimestampMs,
    restore_wait: Duration,
    wake: &mut Wakeup,
) -> Result<(), RuntimeError> {
    // The commit in flight, once it has ended: the held records follow it.
    c.land(consumer, false)?;
    if let Some(how) = c.rewind {
        if now < c.retry_at {
            wake.retry_at = Some(c.retry_at);
            return Ok(());
        }
        c.rewind(consumer, how)?;
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
        restorer.step(tasks, codecs, metrics, RESTORE_STEP, restore_wait, now)?
    };
    // The restore step may have waited for its reader.
    let now = if restore_wait.is_zero() {
        now
    } else {
        now_ms()
    };
    let restores_ended = !finished.is_empty() && c.restorer.progress().is_empty();
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
        if let Some(task) = c.tasks.get_mut(&done.partition) {
            task.restored_high = done.progress.target;
        }
        c.activate(done.partition)?;
    }
    if restores_ended {
        super::memory::release_freed_memory();
    }
    // The next iteration waits on the changelog reader only if it will read it.
    wake.restoring = c.restorer.reads_at(now);
    if c.restorer.has_backlog() {
        wake.runnable = true;
    }
    c.learn_positions(consumer, now);
    c.step_expansion(consumer, now)?;
    c.refresh_ends(consumer, now, wake)?;
    c.flow_control(consumer)?;
    if c.output.held_full() {
        // Records held for after the commit in flight: enough waiting in memory.
        c.land(consumer, true)?;
    }
    c.process(now, wake)?;
    if c.output.take_awaited() {
        c.cadence.hurry();
    }
    if c.cadence.due(now_ms()) {
        c.commit_due(consumer)?;
    }
    if c.output.is_open()
        || c.offsets_written.is_some()
        || c.tasks
            .values()
            .any(|t| t.progress_dirty || !t.dirty.is_empty())
    {
        wake.commit_at = Some(c.cadence.next_at());
    }
    if c.output.committing() {
        // Its end is not a broker event the wait would see: looked for every few ms.
        let look = now_ms() + LAND_LOOK_MS;
        wake.commit_at = Some(wake.commit_at.map_or(look, |t| t.min(look)));
    }
    Ok(())
}

/// Serves the group consumer's own queue: rebalances and commit results (their callbacks
/// run inside `poll`), errors, and the records of a partition that could not be routed to
/// the member's records queue. Returns whether events are still waiting (a turn takes a
/// bounded number; the next one then does not wait for records).
fn serve_group_events(reader: &GroupReader, core: &Mutex<Option<Core>>) -> bool {
    for _ in 0..EVENTS_PER_TURN {
        match reader.consumer().poll(Duration::ZERO) {
            Some(result) => {
                let mut guard = lock(core);
                let c = guard.as_mut().expect("set");
                match result {
                    Ok(m) => {
                        let edge = c.edge(now_ms());
                        route(c, Record::of_message(&m), edge);
                    }
                    Err(e) => c.consumer_error(&e),
                }
            }
            None if reader.events_queued() == 0 => return false,
            None => {}
        }
    }
    reader.events_queued() > 0
}

/// Puts a record into its task (or ignores what belongs to no task here).
fn route(c: &mut Core, m: Record<'_>, edge: EdgeChecks) {
    if let Some(code) = m.error {
        c.consumer_error(&KafkaError::MessageConsumption(code));
        return;
    }
    let Some(rank) = c.topics.rank(m.topic) else {
        c.metrics
            .events_consumed
            .with_label_values(&[m.topic])
            .inc();
        return;
    };
    c.consumed[rank].inc();
    // A task being restored has its inputs paused; what was fetched before the pause took
    // effect waits in its queues.
    if let Some(task) = c.tasks.get_mut(&m.partition) {
        let arrived = match own_arrival(task, rank, m.offset, m.timestamp, m.key) {
            Arrival::Decode => arrive(&c.codecs, rank, m.offset, m.key, m.payload, edge),
            Arrival::Skip => skipped(m.offset),
            Arrival::Forward(q) => forwarded(&m, q),
            Arrival::Drop => return,
        };
        task.push(rank, arrived);
    }
}

impl Core {
    /// A consumer error: the client retries by itself. A broker outage queues one per
    /// reconnect attempt: a few are logged. Which input reached its end is worked out from
    /// positions (`refresh_ends`), not from end-of-partition events.
    fn consumer_error(&mut self, e: &KafkaError) {
        if matches!(
            e,
            KafkaError::PartitionEOF(_)
                | KafkaError::MessageConsumption(RDKafkaErrorCode::PartitionEOF)
        ) {
            return;
        }
        let now = now_ms();
        if now.saturating_sub(self.last_consumer_error_log) >= 1_000 {
            self.last_consumer_error_log = now;
            warn!(error = %e, "consumer error (the client retries by itself)");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(name: &str, run_ms: u64) -> std::thread::JoinHandle<Result<(), RuntimeError>> {
        std::thread::Builder::new()
            .name(name.into())
            .spawn(move || {
                std::thread::sleep(Duration::from_millis(run_ms));
                Ok(())
            })
            .unwrap()
    }

    #[test]
    fn a_member_stuck_past_the_grace_does_not_keep_the_instance_from_stopping() {
        let shutdown = AtomicBool::new(true);
        let started = std::time::Instant::now();
        let result = wait_for_members(
            vec![member("member-0", 0), member("member-1", 60_000)],
            &shutdown,
            Duration::from_millis(300),
        );
        let e = result.expect_err("a stuck member is an error");
        assert!(e.to_string().contains("member-1"), "{e}");
        assert!(started.elapsed() < Duration::from_secs(10));
    }

    #[test]
    fn members_that_stop_in_time_end_cleanly() {
        let shutdown = AtomicBool::new(true);
        let result = wait_for_members(
            vec![member("member-0", 50), member("member-1", 100)],
            &shutdown,
            Duration::from_secs(30),
        );
        assert!(result.is_ok());
    }
}
