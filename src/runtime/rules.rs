//! The runtime's rules, without I/O: which tasks an instance may process, when to commit,
//! how long the loop may block, when an input is paused or at its end, when a restore is
//! done, and how failures are retried — all functions of what the loop observed and of
//! `now`, so they are tested with a fake clock and scripted broker events
//! (`tests/runtime_rules.rs`), like the engine.
//!
//! ```text
//!   broker events (assignment, positions, high watermarks, errors) ─┐
//!   now ────────────────────────────────────────────────────────────┼─► rules ─► what to do
//!   buffered records, pending timers ───────────────────────────────┘
//! ```

use std::collections::{BTreeMap, BTreeSet};

use crate::model::TimestampMs;

/// Number of input topics of a task (interactions, user events), by rank.
pub const INPUTS: usize = 2;

// ------------------------------------------------------------------------------ ownership

/// What the consumer group gave this instance, and the tasks that follow from it.
///
/// A task — partition `p` of every input topic — may be processed only when the instance
/// holds **all** of its input partitions. The assignor is chosen to keep co-partitioned
/// topics together, but a group in transition (or a member running another assignor)
/// can hand out half a task: those partitions are held paused and never processed, so the
/// task's changelog gets no second writer.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Ownership {
    /// Assigned input partitions, as (rank, partition).
    assigned: BTreeSet<(usize, i32)>,
}

impl Ownership {
    pub fn assign(&mut self, partitions: impl IntoIterator<Item = (usize, i32)>) {
        self.assigned.extend(partitions);
    }

    pub fn revoke(&mut self, partitions: impl IntoIterator<Item = (usize, i32)>) {
        for p in partitions {
            self.assigned.remove(&p);
        }
    }

    pub fn clear(&mut self) {
        self.assigned.clear();
    }

    /// Every assigned input partition, as (rank, partition).
    pub fn assigned(&self) -> impl Iterator<Item = (usize, i32)> + '_ {
        self.assigned.iter().copied()
    }

    /// Tasks whose every input partition is assigned here.
    pub fn complete_tasks(&self) -> BTreeSet<i32> {
        let partitions: BTreeSet<i32> = self.assigned.iter().map(|&(_, p)| p).collect();
        partitions
            .into_iter()
            .filter(|p| (0..INPUTS).all(|rank| self.assigned.contains(&(rank, *p))))
            .collect()
    }

    /// Assigned input partitions whose task is not complete here: held paused.
    pub fn incomplete(&self) -> BTreeSet<(usize, i32)> {
        let complete = self.complete_tasks();
        self.assigned
            .iter()
            .copied()
            .filter(|(_, p)| !complete.contains(p))
            .collect()
    }
}

// ------------------------------------------------------------------------------ restore

/// A changelog partition being replayed.
///
/// Invariant: restored only on proof that the reader's position reached the high
/// watermark captured when the restore began. Under `read_committed` a predecessor's open
/// transaction holds the position below it until that transaction ends; the restore
/// waits rather than take "nothing more for now" for "done".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RestoreProgress {
    /// The high watermark to reach; `None` until it could be read from the broker.
    pub target: Option<i64>,
    /// Next offset the reader will deliver.
    pub position: i64,
    pub records: u64,
    pub started_at: TimestampMs,
}

impl RestoreProgress {
    pub fn new(started_at: TimestampMs) -> Self {
        Self {
            target: None,
            position: 0,
            records: 0,
            started_at,
        }
    }

    /// A record at `offset` was replayed.
    pub fn record(&mut self, offset: i64) {
        self.records += 1;
        self.position = self.position.max(offset.saturating_add(1));
    }

    /// The reader reported its position (control records move it without a message).
    pub fn position(&mut self, position: i64) {
        self.position = self.position.max(position);
    }

    pub fn done(&self) -> bool {
        self.target.is_some_and(|high| self.position >= high)
    }

    /// Records still to read, when known.
    pub fn remaining(&self) -> Option<i64> {
        self.target.map(|high| (high - self.position).max(0))
    }
}

/// Whether a task suspended by an eager revocation, committed, may resume with its state as
/// it is: its changelog's high watermark `now` is at most `marker` beyond the one read when
/// it was suspended (`then`). `marker` is 1 under exactly-once — the marker of the commit
/// made at the revocation may be written after `then` was read — and 0 otherwise. Anything
/// more was written by somebody else (an owner in a generation this member missed): the task
/// is restored. A watermark that could not be read counts as changed.
pub fn suspended_changelog_unchanged(then: Option<i64>, now: Option<i64>, marker: i64) -> bool {
    match (then, now) {
        (Some(then), Some(now)) => now <= then + marker,
        _ => false,
    }
}

// ------------------------------------------------------------------------------ inputs

/// Whether an input partition has nothing left to read right now: nothing buffered, and
/// its position (last received + 1, or the committed offset it resumed from) reached the
/// high watermark the client last saw (for `read_committed`, the last stable offset).
pub fn input_at_end(buffered: usize, position: Option<i64>, high: Option<i64>) -> bool {
    buffered == 0
        && match (position, high) {
            (Some(position), Some(high)) => position >= high,
            // Nothing received and nothing to receive.
            (None, Some(0)) => true,
            _ => false,
        }
}

/// Whether an empty input that looks at its end must be confirmed by the broker before the
/// merge may pass it by: the client's cached watermark is only as fresh as the last fetch
/// response parsed for that partition, and records of the other input (arrival number
/// `newest_other`) may have come from a response whose part for this partition is still
/// being parsed. `verified_seq`: the newest arrival the last confirmation covered.
pub fn needs_confirmation(
    looks_at_end: bool,
    newest_other: Option<u64>,
    verified_seq: u64,
) -> bool {
    looks_at_end && newest_other.is_some_and(|seq| seq > verified_seq)
}

/// How often an input's end may be confirmed by the broker (one request covers every
/// record that arrived before it). Between confirmations the merge waits, so records
/// gather and a quiet input costs one request per interval, not one per record.
pub const CONFIRM_INTERVAL_MS: i64 = 10;

/// When an input whose end needs confirming may be confirmed: now, or at the returned time.
pub fn confirm_at(last_confirmed: TimestampMs, now: TimestampMs) -> Option<TimestampMs> {
    let next = last_confirmed.saturating_add(CONFIRM_INTERVAL_MS);
    (next > now).then_some(next)
}

/// How much a member buffers. Pausing an input partition makes the client drop what it
/// prefetched for it and fetch that again on resume, so only an input its task is *held*
/// from taking (the merge waits for another input with nothing buffered and not at its
/// end, or the task takes nothing now: its head waits for the schema registry, an
/// expansion holds it) is paused, above `held_max` records — a stalled sibling or an
/// outage must not let it grow without bound — and resumed once no longer held or drained
/// below half of `per_input`.
/// An input the task can go on taking from keeps running; memory is bounded by the
/// member's budget instead, `per_input` records per input partition on average, above
/// which the loop polls one record a turn and the client's own prefetch limit holds the
/// rest, undecoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backpressure {
    pub per_input: usize,
    pub held_max: usize,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flow {
    Pause,
    Resume,
    Keep,
}

impl Backpressure {
    /// Whether an input partition with `buffered` records is paused or resumed; `held`:
    /// its task cannot take from it now (see above).
    pub fn decide(&self, buffered: usize, paused: bool, held: bool) -> Flow {
        if !paused && held && buffered > self.held_max {
            Flow::Pause
        } else if paused && (!held || buffered < self.per_input / 2) {
            Flow::Resume
        } else {
            Flow::Keep
        }
    }

    /// Whether a member holding `buffered` decoded records over `inputs` input partitions
    /// takes only one record a poll. Not while a task is held (`any_held`): the records it
    /// waits for come through the same poll.
    pub fn over_budget(&self, buffered: usize, inputs: usize, any_held: bool) -> bool {
        !any_held && buffered >= self.per_input.saturating_mul(inputs.max(1))
    }
}

// ------------------------------------------------------------------------------ the loop

/// When the open transaction is committed: every `interval`, and at once when asked
/// (revocation, shutdown). Sends their users wait for are *urgent* — those a caught-up task
/// fired by the wall clock, and any send emitted on time ([`awaited`]) — so they are
/// committed as soon as `URGENT_GAP_MS` has passed since the last commit rather than at the
/// next interval. A task working through a backlog fires sends long past due and keeps the
/// interval (fewer, larger transactions).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CommitCadence {
    pub interval_ms: i64,
    pub last: TimestampMs,
    /// The open transaction holds output fired by the wall clock.
    pub urgent: bool,
}

/// The least time between two commits when the open one is urgent. Not less: the broker
/// completes a transaction (writes its markers) after its commit returned, and the next
/// transaction's first `AddPartitionsToTxn` and `AddOffsetsToTxn` are refused
/// (`CONCURRENT_TRANSACTIONS`) and retried with backoff until it has — commits 10 ms apart
/// met that nearly every time, and the loop, blocked in those commits, fired late.
pub const URGENT_GAP_MS: i64 = 50;

/// How late a send may be emitted and still count as on time (see [`awaited`]).
pub const AWAITED_LATENESS_MS: i64 = 1_000;

/// Whether a send is one its user waits for now: emitted at most [`AWAITED_LATENESS_MS`]
/// after it was due. A task that keeps up with live input fires by stream time, which
/// trails the wall clock by the inputs' latency, so its sends are due moments ago; a task
/// working through a backlog (a restart, a replay, lag) fires sends that were due long
/// before, for which the commit interval adds little.
pub fn awaited(due_at: TimestampMs, emitted_at: TimestampMs) -> bool {
    emitted_at.saturating_sub(due_at) <= AWAITED_LATENESS_MS
}

impl CommitCadence {
    pub fn new(interval_ms: i64, now: TimestampMs) -> Self {
        Self {
            interval_ms,
            last: now,
            urgent: false,
        }
    }

    pub fn due(&self, now: TimestampMs) -> bool {
        now >= self.next_at()
    }

    /// Output fired by the wall clock joined the open transaction.
    pub fn hurry(&mut self) {
        self.urgent = true;
    }

    pub fn committed(&mut self, now: TimestampMs) {
        self.last = now;
        self.urgent = false;
    }

    pub fn next_at(&self) -> TimestampMs {
        let gap = if self.urgent {
            URGENT_GAP_MS.min(self.interval_ms)
        } else {
            self.interval_ms
        };
        self.last.saturating_add(gap)
    }
}

/// What the loop knows when it decides how long to wait for the broker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Wakeup {
    /// A task can take a record right now.
    pub runnable: bool,
    /// A task restore is under way and reads next: the loop waits on the changelog reader
    /// (at most 10 ms) instead of the group consumer.
    pub restoring: bool,
    /// The earliest moment a waiting merge gives up on an empty input.
    pub merge_deadline: Option<TimestampMs>,
    /// The earliest due time of a caught-up task's timers.
    pub next_due: Option<TimestampMs>,
    /// When the open transaction must be committed (`None`: nothing to commit).
    pub commit_at: Option<TimestampMs>,
    /// A retry that waits for its backoff.
    pub retry_at: Option<TimestampMs>,
}

impl Wakeup {
    /// Nothing to do: the loop may block for its longest poll.
    pub fn idle() -> Self {
        Self {
            runnable: false,
            restoring: false,
            merge_deadline: None,
            next_due: None,
            commit_at: None,
            retry_at: None,
        }
    }
}

/// How long the loop may block in the consumer's poll: not at all when there is work, else
/// until the earliest thing it must do, at most `max_ms` (so admin requests, the catalog
/// and health keep being served). Waiting instead of spinning keeps an idle or merge-waiting
/// instance off the CPU.
pub fn poll_timeout_ms(w: &Wakeup, now: TimestampMs, max_ms: i64) -> i64 {
    if w.runnable {
        return 0;
    }
    let cap = if w.restoring { max_ms.min(10) } else { max_ms };
    [w.merge_deadline, w.next_due, w.commit_at, w.retry_at]
        .into_iter()
        .flatten()
        .map(|at| at.saturating_sub(now).clamp(0, cap))
        .min()
        .unwrap_or(cap)
}

// ------------------------------------------------------------------------------ failures

/// What the caller does with an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Disposition {
    /// The environment failed (broker or registry unreachable, a timeout, a coordinator
    /// move): hold what is affected, back off, try again. Never dead-letter, never exit.
    Retry,
    /// The record itself is bad: to the dead-letter topic, inside the transaction.
    DeadLetter,
    /// Configuration, a bug, or an error that repeats identically past the retry budget:
    /// exit non-zero once, naming the cause.
    Stop,
}

/// Exponential backoff with jitter, from `base_ms` doubling up to `max_ms`; the jitter
/// comes from a seeded generator so that tests are deterministic.
#[derive(Debug, Clone)]
pub struct Backoff {
    base_ms: i64,
    max_ms: i64,
    attempt: u32,
    seed: u64,
}

impl Backoff {
    pub fn new(base_ms: i64, max_ms: i64, seed: u64) -> Self {
        Self {
            base_ms: base_ms.max(1),
            max_ms: max_ms.max(base_ms.max(1)),
            attempt: 0,
            seed: seed | 1,
        }
    }

    /// The wait before the next attempt: between half and all of the exponential step.
    pub fn next_delay_ms(&mut self) -> i64 {
        let step = self
            .base_ms
            .saturating_mul(1i64 << self.attempt.min(20))
            .min(self.max_ms);
        self.attempt = self.attempt.saturating_add(1);
        // xorshift64: cheap, deterministic jitter.
        self.seed ^= self.seed << 13;
        self.seed ^= self.seed >> 7;
        self.seed ^= self.seed << 17;
        let half = step / 2;
        half + (self.seed % (step - half + 1) as u64) as i64
    }

    pub fn reset(&mut self) {
        self.attempt = 0;
    }

    pub fn attempts(&self) -> u32 {
        self.attempt
    }
}

/// Counts consecutive failures of one kind. Transient trouble is ridden out; the same
/// failure over and over for longer than `max_span_ms` and at least `max_attempts` times
/// means retrying cannot help: stop once, with the cause, instead of looping forever.
#[derive(Debug, Clone)]
pub struct RetryBudget {
    max_attempts: u32,
    max_span_ms: i64,
    current: Option<(String, u32, TimestampMs)>,
}

impl RetryBudget {
    pub fn new(max_attempts: u32, max_span_ms: i64) -> Self {
        Self {
            max_attempts,
            max_span_ms,
            current: None,
        }
    }

    /// Records a failure with its signature (what failed and why, without variable parts
    /// such as offsets). Returns whether retrying may still help.
    pub fn failed(&mut self, signature: &str, now: TimestampMs) -> bool {
        match &mut self.current {
            Some((sig, n, _)) if sig == signature => *n = n.saturating_add(1),
            _ => self.current = Some((signature.to_string(), 1, now)),
        }
        let (_, n, since) = self.current.as_ref().expect("set above");
        !(*n >= self.max_attempts && now.saturating_sub(*since) >= self.max_span_ms)
    }

    /// Work went through: the streak ends.
    pub fn succeeded(&mut self) {
        self.current = None;
    }

    pub fn streak(&self) -> u32 {
        self.current.as_ref().map_or(0, |(_, n, _)| *n)
    }
}

// ------------------------------------------------------------------------------ readiness

/// What `/readyz` reports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Readiness {
    Ready,
    NotReady(String),
}

/// Ready means: the catalog is loaded, the instance has joined the group and received an
/// assignment, no assigned task is half-owned, and every task is restored.
pub fn readiness(
    catalog_loaded: bool,
    joined: bool,
    incomplete: usize,
    restoring: &BTreeMap<i32, RestoreProgress>,
) -> Readiness {
    if !catalog_loaded {
        return Readiness::NotReady("loading the catalog".into());
    }
    if !joined {
        return Readiness::NotReady("joining the consumer group".into());
    }
    if !restoring.is_empty() {
        let remaining: i64 = restoring.values().filter_map(|r| r.remaining()).sum();
        let read: u64 = restoring.values().map(|r| r.records).sum();
        return Readiness::NotReady(format!(
            "restoring {} task(s): {read} changelog records read, {remaining} to go",
            restoring.len()
        ));
    }
    if incomplete > 0 {
        return Readiness::NotReady(format!(
            "{incomplete} input partition(s) assigned without the rest of their task; waiting for the group"
        ));
    }
    Readiness::Ready
}
