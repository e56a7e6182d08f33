//! What the harness knows about the run while it goes on, shared by its threads: where the
//! input ends (the producer), how far the connector group has committed (the monitor), and
//! what was observed on the way.
//!
//! Lag is measured on committed offsets (`last processed + 1`), the only progress a crashed
//! instance cannot take back.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use crate::kafka::GroupView;

#[derive(Default)]
pub struct Progress {
    /// (topic, partition) of every input partition: interactions 0..n, then user events.
    pub inputs: Vec<(String, i32)>,
    /// End offset of each input partition (what the producer has written).
    pub ends: Vec<i64>,
    /// The group's committed offset of each input partition, last sampled.
    pub committed: Vec<i64>,
    pub sampled_at: Option<Instant>,
    /// When the committed offsets last moved by at least 100 records (or the run started),
    /// and their sum then.
    pub last_progress: Option<Instant>,
    pub progress_mark: i64,
    /// Set when the group made no progress for too long with work to do: the run gives up.
    pub gave_up: Option<String>,
    /// `ends` before chunk k was produced: where chunk k starts in each partition.
    pub chunk_starts: Vec<Vec<i64>>,
    pub input_records: usize,
    pub producer_done: bool,
    /// The producer writes chunks below this; `segment_written`: it has, and waits.
    pub target_chunk: usize,
    pub segment_written: bool,
    /// The chunk before which the producer thread should apply the next edit to the oracle.
    pub edit_requested: Option<usize>,
    /// Per edit: (name, evidence follow-on, per task: the drops the oracle made).
    pub edit_drops: Vec<(String, String, Vec<usize>)>,
    /// Per task: the changelog's end offset while the task still had input to process
    /// (records below it were written before the task could be caught up).
    pub changelog_cut: Vec<i64>,
    pub producer_error: Option<String>,
    /// (when, total lag) samples.
    pub lag: Vec<(Instant, i64)>,
    /// Stable group states that split a task between members: (when, tasks).
    pub split_tasks: Vec<(Instant, Vec<i32>)>,
    pub group: GroupView,
    pub group_at: Option<Instant>,
    pub notes: Vec<String>,
}

pub type SharedProgress = Arc<Mutex<Progress>>;

pub fn lock(p: &SharedProgress) -> MutexGuard<'_, Progress> {
    p.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Progress {
    pub fn total_lag(&self) -> i64 {
        self.ends
            .iter()
            .zip(&self.committed)
            .map(|(e, c)| (e - c).max(0))
            .sum()
    }

    /// Committed share of the input, 0..=1.
    pub fn fraction_done(&self) -> f64 {
        let total: i64 = self.ends.iter().sum();
        let done: i64 = self
            .committed
            .iter()
            .zip(&self.ends)
            .map(|(c, e)| (*c).min(*e))
            .sum();
        if total == 0 {
            0.0
        } else {
            done as f64 / total as f64
        }
    }

    /// Every input partition's committed offset has reached `target`.
    pub fn reached(&self, target: &[i64]) -> bool {
        self.committed.len() == target.len()
            && self.committed.iter().zip(target).all(|(c, t)| c >= t)
    }

    /// The chunk each input partition is in (by committed offset): the lowest and highest.
    pub fn chunk_span(&self) -> (usize, usize) {
        let chunk_of = |i: usize| {
            self.chunk_starts
                .iter()
                .rposition(|s| self.committed.get(i).is_some_and(|c| *c >= s[i]))
                .unwrap_or(0)
        };
        let chunks: BTreeSet<usize> = (0..self.inputs.len()).map(chunk_of).collect();
        (
            chunks.first().copied().unwrap_or(0),
            chunks.last().copied().unwrap_or(0),
        )
    }

    /// How long the group has had work but committed nothing.
    pub fn stalled_for(&self) -> Duration {
        match self.last_progress {
            Some(t) if self.total_lag() > 0 => t.elapsed(),
            _ => Duration::ZERO,
        }
    }

    /// Largest total lag seen in `[from, to]`.
    pub fn max_lag_between(&self, from: Instant, to: Instant) -> i64 {
        self.lag
            .iter()
            .filter(|(t, _)| *t >= from && *t <= to)
            .map(|(_, l)| *l)
            .max()
            .unwrap_or(0)
    }
}

/// Waits until `done` holds on the shared progress, or `deadline` passes (returns false).
pub fn wait_until(
    p: &SharedProgress,
    deadline: Duration,
    mut done: impl FnMut(&Progress) -> bool,
) -> bool {
    let started = Instant::now();
    let mut told = Instant::now();
    loop {
        {
            let g = lock(p);
            if done(&g) {
                return true;
            }
            if told.elapsed() > Duration::from_secs(30) {
                told = Instant::now();
                crate::say(&format!(
                    "… {:.0} % of the input committed, lag {}, no progress for {:.0} s",
                    g.fraction_done() * 100.0,
                    g.total_lag(),
                    g.stalled_for().as_secs_f64()
                ));
            }
        }
        if started.elapsed() > deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}
