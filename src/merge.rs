//! The event-time merge of a task's input partitions (SPEC §3), as pure logic.
//!
//! A task reads partition `p` of every input topic. Records are handed to the engine in
//! event-time order across those partitions, so that how the topics happened to interleave
//! on arrival never changes the outcome:
//!
//! ```text
//!  interactions[p] ──► head (t=5, off 17) ─┐
//!                                          ├─► choose ──► Take(i) / Wait{until} / Idle
//!  user-events[p]  ──► (empty, not at end) ┘
//! ```
//!
//! The next record is the head with the smallest `(occurred_at, topic rank, offset)`;
//! ties go to the lower topic rank (interactions before user events). Within a partition
//! records stay in offset order. A partition with nothing buffered that is *not* at its
//! end may still hold an earlier record, so the merge waits for it — but only for a bounded
//! time, after which it proceeds without it (a stalled producer must not stall the task).
//! A partition at its end (position = high watermark) is not waited for. A partition the
//! broker has confirmed to hold records past the position (*behind*) is waited for longer:
//! those records exist and are on their way (a fetch that starts slowly after an
//! assignment, a leader moving), and taking the other input's records first would put
//! them ahead of earlier ones.

use crate::model::TimestampMs;

/// The buffered head of one input partition of a task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Head {
    pub occurred_at: TimestampMs,
    pub offset: i64,
}

/// What the merge knows about one input partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct InputState {
    /// Tie-break between topics at equal event time: lower goes first.
    pub rank: u8,
    /// The next buffered record, if any.
    pub head: Option<Head>,
    /// Everything up to the high watermark has been read: nothing earlier can turn up.
    pub at_end: bool,
    /// The broker confirmed records past the position that have not arrived yet.
    pub behind: bool,
}

/// The merge's answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Next {
    /// Hand the head of input `i` to the engine.
    Take(usize),
    /// An input is empty but not at its end: wait until the wall clock reaches `until`
    /// (or until it gets a record), then ask again.
    Wait { until: TimestampMs },
    /// Nothing is buffered anywhere.
    Idle,
}

/// The merge of one task's inputs. Holds only when it started waiting.
#[derive(Debug, Clone, Default)]
pub struct Merge {
    max_wait_ms: i64,
    fetch_wait_ms: i64,
    waiting_since: Option<TimestampMs>,
}

impl Merge {
    /// `max_wait_ms`: how long to wait for an empty partition that is not at its end;
    /// `fetch_wait_ms`: how long for one that is *behind* (never less than `max_wait_ms`).
    pub fn new(max_wait_ms: i64, fetch_wait_ms: i64) -> Self {
        Self {
            max_wait_ms,
            fetch_wait_ms: fetch_wait_ms.max(max_wait_ms),
            waiting_since: None,
        }
    }

    /// Chooses what to do next given the inputs and the wall clock `now`.
    pub fn choose(&mut self, inputs: &[InputState], now: TimestampMs) -> Next {
        let best = inputs
            .iter()
            .enumerate()
            .filter_map(|(i, s)| s.head.map(|h| ((h.occurred_at, s.rank, h.offset, i), i)))
            .min_by_key(|(key, _)| *key)
            .map(|(_, i)| i);
        let Some(best) = best else {
            self.waiting_since = None;
            return Next::Idle;
        };
        let mut lagging = inputs.iter().filter(|s| s.head.is_none() && !s.at_end);
        if let Some(first) = lagging.next() {
            let behind = first.behind || lagging.any(|s| s.behind);
            let bound = if behind {
                self.fetch_wait_ms
            } else {
                self.max_wait_ms
            };
            let since = *self.waiting_since.get_or_insert(now);
            let until = since.saturating_add(bound);
            if now < until {
                return Next::Wait { until };
            }
        }
        self.waiting_since = None;
        Next::Take(best)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn input(rank: u8, head: Option<(i64, i64)>, at_end: bool) -> InputState {
        InputState {
            behind: false,
            rank,
            head: head.map(|(occurred_at, offset)| Head {
                occurred_at,
                offset,
            }),
            at_end,
        }
    }

    #[test]
    fn takes_the_earliest_event_time_then_the_lower_rank() {
        let mut m = Merge::new(100, 100);
        let inputs = [
            input(0, Some((20, 5)), false),
            input(1, Some((10, 9)), false),
        ];
        assert_eq!(m.choose(&inputs, 0), Next::Take(1));
        let tie = [
            input(1, Some((10, 1)), false),
            input(0, Some((10, 7)), false),
        ];
        assert_eq!(m.choose(&tie, 0), Next::Take(1), "interactions win a tie");
    }

    #[test]
    fn waits_a_bounded_time_for_an_empty_partition_that_is_not_at_its_end() {
        let mut m = Merge::new(100, 100);
        let inputs = [input(0, Some((10, 0)), false), input(1, None, false)];
        assert_eq!(m.choose(&inputs, 1_000), Next::Wait { until: 1_100 });
        assert_eq!(m.choose(&inputs, 1_050), Next::Wait { until: 1_100 });
        assert_eq!(m.choose(&inputs, 1_100), Next::Take(0));
        // The wait starts afresh after a take.
        assert_eq!(m.choose(&inputs, 1_200), Next::Wait { until: 1_300 });
    }

    #[test]
    fn waits_longer_for_a_partition_the_broker_says_has_records() {
        let mut m = Merge::new(100, 5_000);
        let behind = InputState {
            behind: true,
            ..input(1, None, false)
        };
        let inputs = [input(0, Some((10, 0)), false), behind];
        assert_eq!(m.choose(&inputs, 1_000), Next::Wait { until: 6_000 });
        assert_eq!(m.choose(&inputs, 1_100), Next::Wait { until: 6_000 });
        assert_eq!(m.choose(&inputs, 6_000), Next::Take(0));
        // A fetch wait shorter than the plain one is the plain one.
        let mut m = Merge::new(100, 10);
        assert_eq!(m.choose(&inputs, 0), Next::Wait { until: 100 });
    }

    #[test]
    fn does_not_wait_for_a_partition_at_its_end() {
        let mut m = Merge::new(100, 100);
        let inputs = [input(0, Some((10, 0)), false), input(1, None, true)];
        assert_eq!(m.choose(&inputs, 0), Next::Take(0));
        assert_eq!(
            m.choose(&[input(0, None, true), input(1, None, false)], 0),
            Next::Idle
        );
    }
}
