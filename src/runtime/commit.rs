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
    /// Acts on a failure by its disposition: a retriable one rewinds every task to
    /// committed state once the backoff has passed (with a new producer when the one there
    /// is cannot be trusted).
    pub fn failed(&mut self, e: RuntimeError) {
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
        warn!(error = %e, retry_in_ms = delay, "rewinding every task to committed state");
        self.rewind = Some(match (self.rewind, recovery(&e)) {
            (Some(Recovery::NewProducer), _) | (_, Recovery::NewProducer) => Recovery::NewProducer,
            _ => Recovery::Abort,
        });
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
    /// processed so far is committed when it returns (a revocation, a shutdown, a hand-off).
    pub fn commit(&mut self, consumer: &BaseConsumer<GroupContext>) -> Result<(), RuntimeError> {
        self.commit_as(consumer, false)
    }

    /// The commit the cadence asks for: it runs while the loop goes on processing (see
    /// [`Core::commit_as`]).
    pub fn commit_due(
        &mut self,
        consumer: &BaseConsumer<GroupContext>,
    ) -> Result<(), RuntimeError> {
        self.commit_as(consumer, true)
    }

    /// Commits what was processed so far; `in_flight` leaves the commit running on its
    /// helper thread (what the loop produces meanwhile is held for after it, and
    /// [`Core::land`] takes the outcome), otherwise it is done when this returns. One
    /// commit at a time: the one in flight lands first.
    ///
    /// Exactly-once the changed users' changelog entries join the transaction before it
    /// commits. At-least-once the commit in flight is the flush of the outputs produced so
    /// far; the changed users' entries are produced after it (they are held while it runs)
    /// — outputs written before the state saying they were — and the input offsets wait
    /// for the next flush, which writes those entries — state written before the offsets
    /// past its inputs. A crash in between leaves state at most one interval ahead of the
    /// committed offsets, the same as a commit that failed after its changelog was written:
    /// the inputs are read again (at-least-once) and the state already holds what they did.
    fn commit_as(
        &mut self,
        consumer: &BaseConsumer<GroupContext>,
        in_flight: bool,
    ) -> Result<(), RuntimeError> {
        if self.output.committing() {
            let waiting = Instant::now();
            self.land(consumer, true)?;
            debug!(
                waited_ms = waiting.elapsed().as_millis() as u64,
                "the commit before was still in flight"
            );
        }
        let exactly_once = self.output.exactly_once();
        if !exactly_once && !in_flight {
            return self.flush_and_commit(consumer);
        }
        if exactly_once {
            self.write_states()?;
        }
        let offsets = self.offsets_to_commit()?;
        let started = self.output.start_commit(consumer, &offsets)?;
        if !exactly_once {
            // Held until the flush has landed (produced at once when nothing was in it).
            self.write_states()?;
        }
        if !started {
            // Nothing was left to write: the entries the kept offsets wait for are written.
            self.commit_written(consumer, CommitMode::Async)?;
            self.succeeded();
            return Ok(());
        }
        self.cadence.committed(now_ms());
        if !in_flight {
            self.land(consumer, true)?;
        }
        Ok(())
    }

    /// Takes the outcome of the commit in flight, if one is — waiting for it when `wait` —
    /// and produces the records held while it ran. A failed commit is the error (the loop
    /// rewinds, and the rewind drops the held records).
    pub(super) fn land(
        &mut self,
        consumer: &BaseConsumer<GroupContext>,
        wait: bool,
    ) -> Result<(), RuntimeError> {
        let Some(outcome) = self.output.land(wait) else {
            return Ok(());
        };
        // A record the broker refused is the cause of whatever the call says.
        let landed = outcome.map_err(|e| self.output.failed_delivery().unwrap_or(e))?;
        if self.output.exactly_once() {
            self.committed(&landed.offsets);
        } else {
            // The flush wrote the changelog entries the commit before produced: their
            // offsets are committed, without waiting for the answer (a failure is logged;
            // the next commit covers the same partitions). This commit's offsets wait for
            // the flush that writes its entries.
            self.commit_written(consumer, CommitMode::Async)?;
            if landed.offsets.count() > 0 {
                self.offsets_written = Some(landed.offsets);
            }
        }
        self.output.release()?;
        self.committed_work(consumer, landed.started);
        Ok(())
    }

    /// At-least-once, a commit that must be done when it returns (a revocation, a
    /// shutdown, a hand-off): the outputs are flushed, the offsets kept from the
    /// last commit committed, the changed users' entries written and the offsets past
    /// them committed, each waiting for the step before.
    fn flush_and_commit(
        &mut self,
        consumer: &BaseConsumer<GroupContext>,
    ) -> Result<(), RuntimeError> {
        let started = Instant::now();
        // The outputs are written before the state that says they were.
        self.output.settle_unless_transactional()?;
        self.commit_written(consumer, CommitMode::Sync)?;
        self.write_states()?;
        let offsets = self.offsets_to_commit()?;
        let had_work = self.output.is_open() || offsets.count() > 0;
        self.output.flush_and_commit(consumer, &offsets)?;
        self.cadence.committed(now_ms());
        self.committed(&offsets);
        if had_work {
            self.committed_work(consumer, started);
        } else {
            self.succeeded();
        }
        Ok(())
    }

    /// At-least-once: commits the offsets kept until the changelog entries of their inputs
    /// were written (the caller knows they are).
    fn commit_written(
        &mut self,
        consumer: &BaseConsumer<GroupContext>,
        mode: CommitMode,
    ) -> Result<(), RuntimeError> {
        if let Some(written) = self.offsets_written.take() {
            consumer
                .commit(&written, mode)
                .map_err(RuntimeError::kafka("committing offsets"))?;
            self.committed(&written);
        }
        Ok(())
    }

    /// Produces the changelog entries of every task's changed users (and progress).
    fn write_states(&mut self) -> Result<(), RuntimeError> {
        for task in self.tasks.values_mut() {
            self.output.write_state(&self.codecs, task)?;
        }
        Ok(())
    }

    /// The input offsets processed past the committed ones (`last processed + 1`).
    fn offsets_to_commit(&self) -> Result<TopicPartitionList, RuntimeError> {
        let mut offsets = TopicPartitionList::new();
        for task in self.tasks.values() {
            for (i, q) in task.inputs.iter().enumerate() {
                if let Some(next) = q.next_offset.filter(|n| Some(*n) != q.committed_offset) {
                    offsets
                        .add_partition_offset(&self.topics[i], task.partition, Offset::Offset(next))
                        .map_err(RuntimeError::kafka("listing offsets"))?;
                }
            }
        }
        Ok(offsets)
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
        self.offsets_written = None;
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
