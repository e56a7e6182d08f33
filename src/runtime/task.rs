//! A task: partition `p` of every input topic plus partition `p` of the changelog, with the
//! engine that owns the state of the users hashed there.
//!
//! ```text
//!  interactions[p] ─► queue ─┐
//!                            ├─ Merge ─► Engine ─► effects ─► Output (one transaction)
//!  user-events[p]  ─► queue ─┘                        └─► dirty users ─► changelog[p] at commit
//! ```

use std::collections::{BTreeSet, VecDeque};

use compact_str::CompactString;

use crate::engine::{Engine, SlotHint};
use crate::expansion::{ExpansionProgress, FeedProgress, Layout};
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
    /// Another task processes it (an expansion's ownership before or after a cut): taken
    /// without effect.
    Skip,
    /// A record after its partition's cut of a user another task owns now: forwarded to
    /// that task's partition (its raw key and value are kept), timestamped when forwarded
    /// so that it counts as after the cut there too.
    Forward {
        partition: i32,
    },
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
            Decoded::Bad(_)
            | Decoded::Retry(_)
            | Decoded::Stop(_)
            | Decoded::Skip
            | Decoded::Forward { .. } => TimestampMs::MIN,
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

/// A partition an old task reads besides its own during an expansion, until its cut.
#[derive(Debug)]
pub struct Feed {
    pub rank: usize,
    pub partition: i32,
    pub queue: InputQueue,
    /// The offset of the partition's cut, once a record at or after the cut time was read.
    pub cut: Option<i64>,
    /// The partition exists (the inputs may not have grown yet).
    pub exists: bool,
    /// Where reading started: the committed side-feed position.
    pub start: i64,
    /// The record at the cut was read: every record before it has arrived.
    pub reached: bool,
    /// Paused on its reader: its queue is full.
    pub held: bool,
    /// Where to start is looked up by the layout's time (an old partition, no position
    /// saved yet).
    pub by_time: bool,
}

impl Feed {
    /// Every record before the cut was taken: nothing more comes from this feed.
    pub fn closed(&self) -> bool {
        self.reached && self.queue.records.is_empty()
    }

    pub fn progress(&self) -> FeedProgress {
        FeedProgress {
            rank: self.rank,
            partition: self.partition,
            next: self.queue.next_offset.unwrap_or(self.start),
            cut: self.cut,
        }
    }
}

/// Where a task stands in an expansion.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// An old task keeps its users until the cut, reading the partitions refreshed
    /// producers may write them to.
    SideFeeds,
    /// Waits for the hand-off of every task that can give it users.
    WaitingForOrigins,
    /// Every origin handed over: the task owns the users the new count names.
    Done,
}

impl Phase {
    pub fn as_metric(self) -> i64 {
        match self {
            Phase::SideFeeds => 1,
            Phase::WaitingForOrigins => 2,
            Phase::Done => 3,
        }
    }
}

/// A task's part in an expansion.
#[derive(Debug, Clone)]
pub struct TaskExpansion {
    pub layout: Layout,
    pub phase: Phase,
    /// The cut of each own input (by rank), once found.
    pub cuts: [Option<i64>; 2],
    /// The record at the cut of each own input was read (every record before it arrived).
    pub reached: [bool; 2],
}

/// One task.
pub struct Task {
    pub partition: i32,
    pub engine: Engine,
    /// Interactions (rank 0), then user events (rank 1): the tie order of SPEC §3.
    pub inputs: [InputQueue; 2],
    pub merge: Merge,
    /// Users whose changelog entry must be written before the next commit (a hash set of
    /// inline ids: one change per event, where a sorted set of strings cost an allocation
    /// and a walk of string comparisons each; the writes' order within a commit is free).
    pub dirty: hashbrown::HashMap<CompactString, SlotHint>,
    /// Whether the progress record changed since the last commit.
    pub progress_dirty: bool,
    /// Arrival number of the last record buffered.
    pub last_seq: u64,
    /// Where each input's records come from, named in decisions (built once; the offset is
    /// set per record).
    pub sources: [InputCoordinates; 2],
    /// Side feeds during an expansion (after the own inputs in the merge's numbering).
    pub feeds: Vec<Feed>,
    pub feed_sources: Vec<InputCoordinates>,
    pub expansion: Option<TaskExpansion>,
    /// What the changelog said about an expansion: the task's progress record, and the
    /// hand-off markers found (epoch, origin).
    pub restored_expansion: Option<ExpansionProgress>,
    pub markers: BTreeSet<(u32, i32)>,
    /// The origins' cuts from their markers: (epoch, origin, rank, partition) → offset.
    pub marker_cuts: std::collections::BTreeMap<(u32, i32, usize, i32), i64>,
    /// While waiting for origins: when the changelog is read again for their markers.
    pub recheck_at: Option<TimestampMs>,
    /// The changelog's high watermark the last restore read to.
    pub restored_high: Option<i64>,
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
            dirty: hashbrown::HashMap::new(),
            progress_dirty: false,
            last_seq: 0,
            sources: topics.map(|topic| InputCoordinates {
                topic: topic.to_string(),
                partition,
                offset: 0,
            }),
            feeds: Vec::new(),
            feed_sources: Vec::new(),
            expansion: None,
            restored_expansion: None,
            markers: BTreeSet::new(),
            marker_cuts: std::collections::BTreeMap::new(),
            recheck_at: None,
            restored_high: None,
        }
    }

    /// The phase of the task's expansion, if one is under way or done.
    pub fn phase(&self) -> Option<Phase> {
        self.expansion.as_ref().map(|x| x.phase)
    }

    /// Input `i` in the merge's numbering: own inputs, then side feeds.
    pub fn queue(&self, i: usize) -> &InputQueue {
        match i {
            0 | 1 => &self.inputs[i],
            _ => &self.feeds[i - 2].queue,
        }
    }

    pub fn queue_mut(&mut self, i: usize) -> &mut InputQueue {
        match i {
            0 | 1 => &mut self.inputs[i],
            _ => &mut self.feeds[i - 2].queue,
        }
    }

    /// (rank, partition) of input `i`.
    pub fn coordinates(&self, i: usize) -> (usize, i32) {
        match i {
            0 | 1 => (i, self.partition),
            _ => (self.feeds[i - 2].rank, self.feeds[i - 2].partition),
        }
    }

    pub fn input_count(&self) -> usize {
        2 + self.feeds.len()
    }

    /// Whether own input `i` has reached its cut while the task keeps its old users: what
    /// follows waits for the hand-off.
    pub fn own_closed(&self, i: usize) -> bool {
        matches!(&self.expansion, Some(x) if x.phase == Phase::SideFeeds && x.reached[i])
            && self.inputs[i].records.is_empty()
    }

    /// Every input reached its cut with everything before it taken: time to hand off.
    pub fn ready_to_hand_off(&self) -> bool {
        self.phase() == Some(Phase::SideFeeds)
            && (0..2).all(|i| self.own_closed(i))
            && self.feeds.iter().all(|f| f.exists && f.closed())
    }

    /// The task's expansion progress record.
    pub fn expansion_progress(&self) -> Option<ExpansionProgress> {
        self.expansion.as_ref().map(|x| ExpansionProgress {
            epoch: x.layout.epoch,
            cuts: x.cuts,
            feeds: self.feeds.iter().map(Feed::progress).collect(),
        })
    }

    /// What the merge says about this task's buffered records.
    pub fn next(&mut self, now: TimestampMs) -> Next {
        let state = |rank: usize, q: &InputQueue, closed: bool| InputState {
            rank: rank as u8,
            head: q.records.front().map(|r| Head {
                occurred_at: r.merge_time(),
                offset: r.offset,
            }),
            // An input past its cut has nothing more for this task: no wait for it.
            at_end: q.at_end || closed,
            behind: !closed && matches!((q.position, q.fresh_high), (Some(p), Some(h)) if p < h),
        };
        if self.feeds.is_empty() && self.expansion.is_none() {
            let states: [InputState; 2] = std::array::from_fn(|i| state(i, &self.inputs[i], false));
            return self.merge.choose(&states, now);
        }
        let mut states: Vec<InputState> = (0..2)
            .map(|i| state(i, &self.inputs[i], self.own_closed(i)))
            .collect();
        states.extend(
            self.feeds
                .iter()
                .map(|f| state(f.rank, &f.queue, f.closed())),
        );
        self.merge.choose(&states, now)
    }

    /// Whether an input other than `i` has nothing buffered and is not at its end (nor past
    /// its cut): the merge cannot pass it by, so records of `i` wait for it.
    pub fn lags_behind_input(&self, i: usize) -> bool {
        let lagging = |q: &InputQueue, closed: bool| q.records.is_empty() && !q.at_end && !closed;
        (0..2).any(|j| j != i && lagging(&self.inputs[j], self.own_closed(j)))
            || self
                .feeds
                .iter()
                .enumerate()
                .any(|(k, f)| k + 2 != i && lagging(&f.queue, f.closed()))
    }

    /// Whether every input is at its end with nothing buffered: the task is caught up, and
    /// its timers fire by the wall clock.
    pub fn caught_up(&self) -> bool {
        let done = |q: &InputQueue| q.at_end && q.records.is_empty();
        if let Some(x) = self
            .expansion
            .as_ref()
            .filter(|x| x.phase == Phase::SideFeeds)
        {
            // Once an input reached its cut, later records of this task's users may be in
            // partitions it no longer reads: the wall clock is the new owners' to follow.
            if x.reached.iter().any(|r| *r) || self.feeds.iter().any(|f| f.reached) {
                return false;
            }
            return self.inputs.iter().all(done)
                && self.feeds.iter().all(|f| f.exists && done(&f.queue));
        }
        self.inputs.iter().all(done)
    }

    pub fn buffered(&self) -> usize {
        self.inputs.iter().map(|q| q.records.len()).sum::<usize>()
            + self
                .feeds
                .iter()
                .map(|f| f.queue.records.len())
                .sum::<usize>()
    }

    /// The inputs whose next record waits for its decoding to be retried.
    pub fn held_inputs(&self) -> impl Iterator<Item = usize> + '_ {
        (0..self.input_count()).filter(|&i| {
            matches!(self.queue(i).records.front(), Some(r) if matches!(r.event, Decoded::Retry(_)))
        })
    }

    /// Buffers an arrived record on input `i`.
    /// Whether a record at `offset` of input `i` is new to the task: not before where the
    /// input stands. One before it came again (the client started the partition over at
    /// its committed offset, as when an assignment replaced the one before without a
    /// revocation and the task stayed, with what it took since); taken twice, it would be
    /// processed twice.
    pub fn is_new(&self, i: usize, offset: i64) -> bool {
        self.queue(i).position.is_none_or(|next| offset >= next)
    }

    pub fn push(&mut self, i: usize, mut arrived: Arrived) {
        self.last_seq += 1;
        arrived.seq = self.last_seq;
        let q = self.queue_mut(i);
        q.at_end = false;
        q.position = Some(arrived.offset + 1);
        q.records.push_back(arrived);
    }

    /// The newest arrival buffered on an input other than `i`, if any.
    pub fn newest_other(&self, i: usize) -> Option<u64> {
        (0..self.input_count())
            .filter(|j| *j != i)
            .filter_map(|j| self.queue(j).records.back().map(|r| r.seq))
            .max()
    }

    /// Forgets buffered input (after a rewind the consumer delivers it again from the
    /// committed offsets).
    pub fn clear_inputs(&mut self) {
        for q in self.inputs.iter_mut() {
            *q = InputQueue::default();
        }
        // The record at a cut comes again too.
        if let Some(x) = self.expansion.as_mut() {
            x.reached = [false; 2];
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn arrived(offset: i64) -> Arrived {
        Arrived {
            offset,
            seq: 0,
            key: None,
            payload: None,
            event: Decoded::Retry(String::new()),
        }
    }

    #[test]
    fn a_record_before_where_an_input_stands_is_not_new_until_the_inputs_are_cleared() {
        let mut task = Task::new(0, ["i", "u"], Limits::default(), (500, 50), false);
        // Before the task knows where its inputs stand, everything is new.
        assert!(task.is_new(0, 0) && task.is_new(1, 7));
        for offset in 3..6 {
            assert!(task.is_new(0, offset));
            task.push(0, arrived(offset));
        }
        // The client started over at an earlier offset: those records were taken.
        assert!(!task.is_new(0, 3) && !task.is_new(0, 5));
        assert!(task.is_new(0, 6) && task.is_new(0, 9));
        // Each input on its own.
        assert!(task.is_new(1, 0));
        // After a rewind everything is delivered again, and taken again.
        task.clear_inputs();
        assert!(task.is_new(0, 3));
    }
}
