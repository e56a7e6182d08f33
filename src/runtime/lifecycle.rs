//! Task lifecycle: tasks made of complete partition sets after an assignment (created and
//! restored, or resumed from suspension), activated after their restore, and their input
//! positions learned from the committed offsets.

use std::collections::{BTreeMap, BTreeSet};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::{Offset, TopicPartitionList};
use tracing::{debug, info, warn};

use super::error::RuntimeError;
use super::instance::{now_ms, Core, OFFSETS_TIMEOUT};
use super::rebalance::GroupContext;
use super::restore::Suspended;
use crate::model::Campaign;

/// How long after a failed read of committed offsets or watermarks it is tried again.
const POSITIONS_RETRY_MS: i64 = 1_000;

impl Core {
    /// Creates, resumes or drops tasks after the assignment changed.
    pub fn reconcile_tasks(&mut self) -> Result<(), RuntimeError> {
        let complete = self.ownership.complete_tasks();
        let now = now_ms();
        let gone: Vec<i32> = self
            .tasks
            .keys()
            .copied()
            .filter(|p| !complete.contains(p))
            .collect();
        for p in gone {
            self.restorer.cancel(p);
            self.tasks.remove(&p);
            self.positions_unknown.remove(&p);
            self.decisions_reported.remove(&p);
        }
        for p in complete {
            if self.tasks.contains_key(&p) {
                continue;
            }
            let marker = i64::from(self.exactly_once());
            let suspended = self.suspended.remove(&p).filter(|s| {
                s.restore.is_some() || s.unchanged(self.restorer.high_watermark(p), marker)
            });
            if let Some(Suspended {
                mut task, restore, ..
            }) = suspended
            {
                task.clear_inputs();
                self.tasks.insert(p, task);
                match restore {
                    Some(progress) => {
                        self.restorer.resume(p, progress)?;
                        info!(
                            task = p,
                            position = progress.position,
                            records = progress.records,
                            "task's restore resumed where the revocation left it (not moved)"
                        );
                    }
                    None => {
                        // Catalog updates that arrived while it was suspended did not reach
                        // it: the catalog as it is now is applied again, as after a restore.
                        self.activate(p)?;
                        info!(
                            task = p,
                            "task resumed without a restore (committed, not moved)"
                        );
                    }
                }
            } else {
                let task = self.new_task(p);
                self.tasks.insert(p, task);
                self.restorer.start(p, now)?;
            }
        }
        self.suspended.clear();
        let incomplete = self.ownership.incomplete();
        if !incomplete.is_empty() {
            warn!(partitions = ?incomplete, "input partitions assigned without the rest of their task: held paused, not processed");
        }
        info!(tasks = ?self.tasks.keys().collect::<Vec<_>>(), "tasks assigned");
        Ok(())
    }

    /// A task that finished restoring (or came back from suspension) becomes active: the
    /// current catalog is applied again (a campaign stopped meanwhile drops its timers) and
    /// its input positions are learned from the committed offsets.
    pub(super) fn activate(&mut self, partition: i32) -> Result<(), RuntimeError> {
        let now = now_ms();
        let mut effects = Vec::new();
        let catalog: Vec<Campaign> = self.catalog.values().cloned().collect();
        if let Some(task) = self.tasks.get_mut(&partition) {
            for c in &catalog {
                let _ = task.engine.apply_campaign(c, now, &mut effects);
            }
            self.output
                .execute(&self.codecs, &self.metrics, task, &mut effects)?;
        }
        self.positions_unknown.insert(partition);
        // A changelog partition an expansion added is refused by a producer that has not
        // seen it in its metadata yet: teach it now rather than fail the first write.
        let changelog = self.output.changelog_topic().to_string();
        self.output.knows_partition(&changelog, partition);
        self.enter_expansion(partition, now);
        Ok(())
    }

    /// Learns where the inputs of newly active tasks resume: their committed offsets
    /// (fetched *stable* under `read_committed`, so an open transaction's offsets are not
    /// taken for committed). These are reads: when one fails, the tasks stay unknown (not
    /// processed) and are asked about again later — no reason to drop the transaction and
    /// restore every task again.
    pub(super) fn learn_positions(
        &mut self,
        consumer: &BaseConsumer<GroupContext>,
        now: crate::model::TimestampMs,
    ) {
        if self.positions_unknown.is_empty() || now < self.positions_retry_at {
            return;
        }
        if let Err(e) = self.try_learn_positions(consumer) {
            self.positions_retry_at = now + POSITIONS_RETRY_MS;
            warn!(error = %e, tasks = ?self.positions_unknown, retry_in_ms = POSITIONS_RETRY_MS,
                "learning where the inputs resume failed; asking again later");
        }
    }

    fn try_learn_positions(
        &mut self,
        consumer: &BaseConsumer<GroupContext>,
    ) -> Result<(), RuntimeError> {
        let mut tpl = TopicPartitionList::new();
        for p in &self.positions_unknown {
            for t in &self.topics.names {
                tpl.add_partition(t, *p);
            }
        }
        let committed = consumer
            .committed_offsets(tpl, OFFSETS_TIMEOUT)
            .map_err(RuntimeError::kafka("fetching committed offsets"))?;
        // Asked on a client of its own: on the group consumer the request would wait
        // behind its long-polling fetch.
        let inputs: Vec<(usize, i32)> = self
            .positions_unknown
            .iter()
            .flat_map(|p| (0..self.topics.names.len()).map(move |i| (i, *p)))
            .collect();
        let answers = self.ends.ask_and_wait(&inputs)?;
        let highs: BTreeMap<(usize, i32), i64> = inputs.into_iter().zip(answers).collect();
        // Reading starts at the committed offsets, whatever the consumer did before: it may
        // have delivered records while the task did not exist yet (half of it assigned, or
        // dropped and assigned again without the partitions moving) or while it restored,
        // and a rewind's seek may not have reached a partition. Without this seek such
        // records would never come again and the task would wait for them for good.
        let mut seek = TopicPartitionList::new();
        let mut starts: BTreeMap<(usize, i32), Option<i64>> = BTreeMap::new();
        for p in &self.positions_unknown {
            for (i, t) in self.topics.names.iter().enumerate() {
                let start = match committed.find_partition(t, *p).map(|e| e.offset()) {
                    Some(Offset::Offset(o)) => Some(o),
                    _ => None,
                };
                starts.insert((i, *p), start);
                seek.add_partition_offset(t, *p, start.map_or(Offset::Beginning, Offset::Offset))
                    .map_err(RuntimeError::kafka("seeking to committed offsets"))?;
            }
        }
        let sought = consumer
            .seek_partitions(seek, OFFSETS_TIMEOUT)
            .map_err(RuntimeError::kafka("seeking to committed offsets"))?;
        let mut failed: BTreeSet<i32> = BTreeSet::new();
        for e in sought.elements() {
            match e.error() {
                Ok(()) => {}
                // Not fetching yet: the assignment starts it at the committed offset.
                Err(KafkaError::OffsetFetch(RDKafkaErrorCode::State)) => {}
                Err(err) => {
                    warn!(task = e.partition(), input = e.topic(), error = %err,
                        "seeking an input to its committed offset failed; trying again later");
                    failed.insert(e.partition());
                }
            }
        }
        for p in std::mem::take(&mut self.positions_unknown) {
            if failed.contains(&p) {
                self.positions_unknown.insert(p);
                continue;
            }
            let Some(task) = self.tasks.get_mut(&p) else {
                continue;
            };
            // What arrived before the seek comes again.
            task.clear_inputs();
            for (i, t) in self.topics.names.iter().enumerate() {
                let q = &mut task.inputs[i];
                q.fresh_high = highs.get(&(i, p)).copied();
                let start = starts.get(&(i, p)).copied().flatten();
                debug!(task = p, input = t.as_str(), committed = ?start, fresh_high = ?q.fresh_high, "input positions learned");
                // Nothing committed yet: reading starts at the beginning.
                q.position = Some(start.unwrap_or(0));
                q.committed_offset = start;
            }
        }
        if !self.positions_unknown.is_empty() {
            self.positions_retry_at = now_ms() + POSITIONS_RETRY_MS;
        }
        Ok(())
    }
}
