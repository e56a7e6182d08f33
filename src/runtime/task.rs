//! A task: partition `p` of every input topic plus partition `p` of the changelog, with the
//! engine that owns the state of the users hashed there.
//!
//! ```text
//!  interactions[p] ─► queue ─┐
//!                            ├─ Merge ─► Engine ─► effects ─► Output (one transaction)
//!  user-events[p]  ─► queue ─┘                        └─► dirty users ─► changelog[p] at commit
//! ```

use std::collections::{BTreeSet, VecDeque};

use crate::engine::Engine;
use crate::merge::{Head, InputState, Merge, Next};
use crate::model::{InputCoordinates, InputEvent, TimestampMs};
use crate::validate::Limits;

/// An input record as it arrived, decoded or not.
#[derive(Debug)]
pub struct Arrived {
    pub offset: i64,
    /// Arrival order within the task (from 1).
    pub seq: u64,
    pub key: Option<Vec<u8>>,
    pub payload: Option<Vec<u8>>,
    /// The decoded event, why the record is bad input, or that decoding must be retried.
    pub event: Decoded,
}

/// What decoding an input record gave.
#[derive(Debug)]
pub enum Decoded {
    Event(InputEvent),
    /// The record itself is bad: it goes to the dead-letter topic.
    Bad(BadInput),
    /// The environment failed (the schema registry did not answer): the record is good as
    /// far as anyone knows; decode it again later, and hold its task until then.
    Retry(String),
    /// Decoding failed for a reason no retry and no dead letter fixes (the schema registry
    /// refused the connector's credentials): the instance stops.
    Stop(String),
}

/// Why a record is bad input (SPEC §4), with the class named in the DLQ headers.
#[derive(Debug, Clone)]
pub struct BadInput {
    pub class: &'static str,
    pub message: String,
}

impl Arrived {
    /// Bad records go first: they cannot be ordered by event time, and sending them to the
    /// dead-letter topic at once keeps the partition moving.
    fn merge_time(&self) -> TimestampMs {
        match &self.event {
            Decoded::Event(e) => e.occurred_at(),
            Decoded::Bad(_) | Decoded::Retry(_) | Decoded::Stop(_) => TimestampMs::MIN,
        }
    }
}

/// One input partition of a task.
#[derive(Debug, Default)]
pub struct InputQueue {
    pub records: VecDeque<Arrived>,
    /// Nothing more to read right now (the consumer reported the partition's end).
    pub at_end: bool,
    /// Next offset to commit: last processed + 1 (`None`: nothing processed yet).
    pub next_offset: Option<i64>,
    /// The offset last committed, so that an idle task commits nothing.
    pub committed_offset: Option<i64>,
    /// Next offset the consumer will deliver: last received + 1, or the committed offset
    /// the task started from (`None`: unknown yet).
    pub position: Option<i64>,
    /// The high watermark asked of the broker when the task became active. librdkafka's
    /// cached watermark of a partition this instance owned before can be stale until the
    /// first fetch answers; the partition is at its end only once it is past this one too.
    pub fresh_high: Option<i64>,
    /// The broker confirmed this input at its end after every record up to this arrival
    /// number (of any input of the task) had arrived.
    pub verified_seq: u64,
    /// When the broker was last asked to confirm this input's end (wall clock, ms).
    pub confirmed_at: TimestampMs,
    /// The question about this input's end not answered yet: its token, and the arrival
    /// number of the task's last record when it was sent (what its answer can confirm).
    pub asked: Option<(u64, u64)>,
}

/// One task.
pub struct Task {
    pub partition: i32,
    pub engine: Engine,
    /// Interactions (rank 0), then user events (rank 1): the tie order of SPEC §3.
    pub inputs: [InputQueue; 2],
    pub merge: Merge,
    /// Users whose changelog entry must be written before the next commit.
    pub dirty: BTreeSet<String>,
    /// Whether the progress record changed since the last commit.
    pub progress_dirty: bool,
    /// Arrival number of the last record buffered.
    pub last_seq: u64,
    /// Where each input's records come from, named in decisions (built once; the offset is
    /// set per record).
    pub sources: [InputCoordinates; 2],
}

impl Task {
    pub fn new(
        partition: i32,
        topics: [&str; 2],
        limits: Limits,
        (merge_max_wait_ms, merge_fetch_wait_ms): (i64, i64),
        decision_log: bool,
    ) -> Self {
        let mut engine = Engine::new(limits);
        engine.set_decision_log(decision_log);
        Self {
            partition,
            engine,
            inputs: [InputQueue::default(), InputQueue::default()],
            merge: Merge::new(merge_max_wait_ms, merge_fetch_wait_ms),
            dirty: BTreeSet::new(),
            progress_dirty: false,
            last_seq: 0,
            sources: topics.map(|topic| InputCoordinates {
                topic: topic.to_string(),
                partition,
                offset: 0,
            }),
        }
    }

    /// What the merge says about this task's buffered records.
    pub fn next(&mut self, now: TimestampMs) -> Next {
        let states: [InputState; 2] = std::array::from_fn(|i| {
            let q = &self.inputs[i];
            InputState {
                rank: i as u8,
                head: q.records.front().map(|r| Head {
                    occurred_at: r.merge_time(),
                    offset: r.offset,
                }),
                at_end: q.at_end,
                behind: matches!((q.position, q.fresh_high), (Some(p), Some(h)) if p < h),
            }
        });
        self.merge.choose(&states, now)
    }

    /// Whether every input is at its end with nothing buffered: the task is caught up, and
    /// its timers fire by the wall clock.
    pub fn caught_up(&self) -> bool {
        self.inputs.iter().all(|q| q.at_end && q.records.is_empty())
    }

    pub fn buffered(&self) -> usize {
        self.inputs.iter().map(|q| q.records.len()).sum()
    }

    /// The inputs whose next record waits for its decoding to be retried.
    pub fn held_inputs(&self) -> impl Iterator<Item = usize> + '_ {
        self.inputs
            .iter()
            .enumerate()
            .filter(|(_, q)| matches!(q.records.front(), Some(r) if matches!(r.event, Decoded::Retry(_))))
            .map(|(i, _)| i)
    }

    /// Buffers an arrived record on input `i`.
    pub fn push(&mut self, i: usize, mut arrived: Arrived) {
        self.last_seq += 1;
        arrived.seq = self.last_seq;
        let q = &mut self.inputs[i];
        q.at_end = false;
        q.position = Some(arrived.offset + 1);
        q.records.push_back(arrived);
    }

    /// The newest arrival buffered on an input other than `i`, if any.
    pub fn newest_other(&self, i: usize) -> Option<u64> {
        self.inputs
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != i)
            .filter_map(|(_, q)| q.records.back().map(|r| r.seq))
            .max()
    }

    /// Forgets buffered input (after a rewind the consumer delivers it again from the
    /// committed offsets).
    pub fn clear_inputs(&mut self) {
        for q in self.inputs.iter_mut() {
            *q = InputQueue::default();
        }
    }
}
