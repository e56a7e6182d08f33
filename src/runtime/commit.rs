//! The instance's side of the transaction: committing (changelog of changed users, input
//! offsets, commit), acting on failures by their disposition, and rewinding every task to
//! committed state when the open transaction has to be dropped.

use std::time::Instant;

use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::{Offset, TopicPartitionList};
use tracing::{debug, error, info, warn};

use super::error::{recovery, Recovery, RuntimeError};
use super::instance::{now_ms, Core, OFFSETS_TIMEOUT};
use super::rebalance::GroupContext;
use super::rules::Disposition;

impl Core {
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

    pub(super) fn budget_span_s(&self) -> i64 {
        self.settings.retry_budget.as_secs() as i64
    }

    /// Work went through: the failure streak ends.
    pub(super) fn succeeded(&mut self) {
        if self.budget.streak() > 0 {
            info!("recovered");
        }
        self.budget.succeeded();
        self.backoff.reset();
    }

    /// Writes changed state, commits the input offsets and the transaction: everything
    /// processed so far is committed when it returns (a revocation, a shutdown, a retry).
    pub fn commit(&mut self, consumer: &BaseConsumer<GroupContext>) -> Result<(), RuntimeError> {
        self.commit_as(consumer, false)
    }

    /// The commit the cadence asks for. Exactly-once it is [`Core::commit`]. At-least-once
    /// it is pipelined, so that the loop waits for one flush a commit instead of two and
    /// for no offset-commit round trip: its flush writes the outputs produced so far *and*
    /// the changelog entries the previous commit produced, whose input offsets are then
    /// committed (without waiting for the answer); it produces the changed users' entries
    /// and keeps their offsets for the next commit. The order each record depends on
    /// holds — outputs written before the state saying they were, state written before
    /// the offsets past its inputs — and a crash in between leaves state at most one
    /// interval ahead of the committed offsets, the same as a commit that failed after its
    /// changelog was written: the inputs are read again (at-least-once) and the state
    /// already holds what they did.
    pub fn commit_due(
        &mut self,
        consumer: &BaseConsumer<GroupContext>,
    ) -> Result<(), RuntimeError> {
        let pipelined = !self.output.exactly_once();
        self.commit_as(consumer, pipelined)
    }

    fn commit_as(
        &mut self,
        consumer: &BaseConsumer<GroupContext>,
        pipelined: bool,
    ) -> Result<(), RuntimeError> {
        let started = Instant::now();
        let mut offsets = TopicPartitionList::new();
        // At-least-once: the outputs are written before the state that says they were.
        self.output.settle_unless_transactional()?;
        if let Some(written) = self.offsets_written.take() {
            // The previous commit's changelog entries were written by the flush above. A
            // commit that must be done when it returns waits for the answer.
            let mode = if pipelined {
                CommitMode::Async
            } else {
                CommitMode::Sync
            };
            consumer
                .commit(&written, mode)
                .map_err(RuntimeError::kafka("committing offsets"))?;
            self.committed(&written);
        }
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
        if pipelined && offsets.count() > 0 {
            self.offsets_written = Some(offsets);
            self.commit_pending = false;
            self.cadence.committed(now_ms());
            self.committed_work(consumer, started);
            return Ok(());
        }
        if let Err(e) = self
            .output
            .commit(consumer, &offsets, &mut self.offsets_sent)
        {
            // A record the broker refused is the cause of whatever the call says.
            return Err(self.output.failed_delivery().unwrap_or(e));
        }
        self.offsets_sent = false;
        self.commit_pending = false;
        self.cadence.committed(now_ms());
        for task in self.tasks.values_mut() {
            for q in task.inputs.iter_mut() {
                q.committed_offset = q.next_offset;
            }
        }
        if had_work {
            self.committed_work(consumer, started);
        } else {
            self.succeeded();
        }
        Ok(())
    }

    /// A commit that had work went through.
    fn committed_work(&mut self, consumer: &BaseConsumer<GroupContext>, started: Instant) {
        // Decisions and pending timers are visible as soon as they are committed.
        self.report_task_metrics(consumer);
        self.metrics
            .commit_seconds
            .observe(started.elapsed().as_secs_f64());
        debug!(took_ms = started.elapsed().as_millis() as u64, "committed");
        self.succeeded();
    }

    /// Notes offsets committed on the tasks' inputs they belong to.
    fn committed(&mut self, offsets: &TopicPartitionList) {
        for e in offsets.elements() {
            let (Some(i), Offset::Offset(next)) = (self.topics.rank(e.topic()), e.offset()) else {
                continue;
            };
            if let Some(q) = self
                .tasks
                .get_mut(&e.partition())
                .and_then(|t| t.inputs.get_mut(i))
            {
                q.committed_offset = Some(next);
            }
        }
    }

    /// Drops the open transaction and rewinds every task to committed state: the inputs
    /// are sought back to their committed offsets and the tasks restored from the changelog.
    pub(super) fn rewind(
        &mut self,
        consumer: &BaseConsumer<GroupContext>,
        how: Recovery,
    ) -> Result<(), RuntimeError> {
        warn!("rewinding every task to committed state");
        self.metrics.transaction_aborts.inc();
        self.output
            .abort(&self.settings, how == Recovery::NewProducer)?;
        self.offsets_sent = false;
        self.offsets_written = None;
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
        let now = now_ms();
        for p in partitions {
            if self.restorer.is_restoring(p) {
                // A task still restoring has processed nothing, so the dropped transaction
                // holds nothing of it: its restore goes on (starting it again would let a
                // failure that repeats faster than a restore takes keep it from ever
                // finishing). Its inputs were sought back with the others.
                if let Some(task) = self.tasks.get_mut(&p) {
                    task.clear_inputs();
                }
                continue;
            }
            let task = self.new_task(p);
            self.tasks.insert(p, task);
            self.restorer.start(p, now)?;
            self.decisions_reported.remove(&p);
        }
        self.rewind = None;
        Ok(())
    }
}
