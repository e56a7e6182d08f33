//! Event time of the run. The workload lives in the past, in a five-day window that ends
//! nine days before the week of the run began:
//!
//! ```text
//!   t0 ───── 5 days of events ───── t1 ─ ≥ 1 day ─┐ run (wall clock) ... ┌─ ≥ 9 days ─ t0 + 30 days
//!   every short delay (≤ 8 days) is due before ───┘                      └── every 30-day timer is due after
//! ```
//!
//! So while the connector has a backlog its timers fire by stream time only, and once it is
//! caught up at the very end the wall clock fires every short timer and none of the long
//! ones: which timers fire never depends on when, on the wall clock, the connector got there.
//! Anchoring to the week makes a seed reproduce the same input all week.

use campaign_connector::model::TimestampMs;

pub const SEC: i64 = 1_000;
pub const MIN: i64 = 60 * SEC;
pub const HOUR: i64 = 60 * MIN;
pub const DAY: i64 = 24 * HOUR;

#[derive(Debug, Clone, Copy)]
pub struct Timeline {
    pub t0: TimestampMs,
    pub t1: TimestampMs,
    pub chunks: usize,
    /// The wall clock when the run started.
    pub run_start: TimestampMs,
}

impl Timeline {
    pub fn new(run_start: TimestampMs, chunks: usize) -> Self {
        // 1970-01-01 was a Thursday: Monday 00:00 UTC of the week of `run_start`.
        let days = run_start.div_euclid(DAY);
        let monday = (days - (days + 3).rem_euclid(7)) * DAY;
        let t0 = monday - 14 * DAY;
        Self {
            t0,
            t1: t0 + 5 * DAY,
            chunks,
            run_start,
        }
    }

    /// Chunk `k` holds the events with `chunk_start(k) <= occurred_at < chunk_start(k + 1)`.
    pub fn chunk_start(&self, k: usize) -> TimestampMs {
        self.t0 + (self.t1 - self.t0) * k as i64 / self.chunks as i64
    }
}
