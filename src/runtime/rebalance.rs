//! The group consumer and its rebalance callbacks.
//!
//! **Assignment design.** A task is partition `p` of every input topic; the instance must
//! own all of them or none. The classic protocol runs with the **range** assignor: for
//! topics with equal partition counts it hands partition `p` of every topic to the same
//! member (members and partitions are both sorted, each topic is split the same way), so
//! co-partitioned inputs stay together under any membership. It is eager — every
//! rebalance revokes everything first — so a revocation commits and *suspends* its tasks,
//! and a task handed back by the same rebalance resumes without a restore (nobody else can
//! have owned it in between: every member revoked before the new assignment was made). A
//! task revoked part way through its restore is suspended too, and its restore goes on
//! from where it was rather than from the changelog's beginning: under churn (members
//! joining one after another while large tasks restore) no restore is thrown away by a
//! rebalance that leaves the task where it was.
//! Cooperative-sticky would move fewer partitions but splits topics freely, and a task
//! split across two members has two writers of its changelog. `group_protocol: consumer`
//! (KIP-848) asks the broker for its `range` assignor, which co-partitions as well.
//! Whatever the assignor does, [`Ownership`](super::rules::Ownership) only makes tasks of
//! complete partition sets; half a task stays paused and unprocessed.
//!
//! librdkafka runs these callbacks inside `poll()`, on the loop's own thread. A revocation
//! therefore commits the open transaction itself before the partitions go — the loop that
//! would otherwise drain is the very thread blocked in `poll()`. A *lost* assignment (the
//! group moved on without us: session timeout, a long stall) commits nothing: somebody
//! else may own the tasks already, our open transaction is aborted and its output never
//! becomes visible (the coordinator also rejects our offsets: the generation is stale).

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex, MutexGuard};

use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::KafkaResult;
use rdkafka::{ClientConfig, ClientContext, TopicPartitionList};
use tracing::{info, warn};

use super::batch_reader::{BatchReader, RecordsQueue};
use super::config::{GroupProtocol, Settings};
use super::error::{Recovery, RuntimeError};
use super::instance::Core;
use super::kafka::base_config;
use super::restore::Suspended;

pub struct GroupContext {
    core: Arc<Mutex<Option<Core>>>,
    /// The member's records queue (its [`GroupReader`]'s): every partition is routed to it
    /// before it is assigned. Set while the reader lives.
    records: Mutex<Option<RecordsQueue>>,
}

impl ClientContext for GroupContext {}

pub fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// (rank, partition) of every input partition in the list.
fn input_partitions(core: &Core, tpl: &TopicPartitionList) -> Vec<(usize, i32)> {
    tpl.elements()
        .iter()
        .filter_map(|e| core.topics.rank(e.topic()).map(|r| (r, e.partition())))
        .collect()
}

impl GroupContext {
    /// Routes the records of partitions about to be assigned to the member's records
    /// queue. One that cannot be routed still works: its records come with the consumer's
    /// own events, which the loop serves too.
    fn route_records(&self, consumer: &BaseConsumer<Self>, tpl: &TopicPartitionList) {
        let Some(records) = lock(&self.records).clone() else {
            return;
        };
        for e in tpl.elements() {
            // SAFETY: the queue is set only while its reader (which owns this consumer)
            // lives, and was made for this consumer's client.
            let routed =
                unsafe { records.route(consumer.client().native_ptr(), e.topic(), e.partition()) };
            if let Err(error) = routed {
                warn!(
                    topic = e.topic(),
                    partition = e.partition(),
                    error,
                    "routing a partition's records"
                );
            }
        }
    }

    /// Revoked partitions (see the module doc): their tasks are committed and suspended, or
    /// — `lost`, when somebody else may own them already — their open transaction dropped.
    fn revoke(&self, consumer: &BaseConsumer<Self>, tpl: &TopicPartitionList, lost: bool) {
        self.unroute_records(tpl);
        let mut guard = lock(&self.core);
        let Some(core) = guard.as_mut() else { return };
        let revoked = input_partitions(core, tpl);
        let tasks: Vec<i32> = {
            let mut t: Vec<i32> = revoked.iter().map(|&(_, p)| p).collect();
            t.sort_unstable();
            t.dedup();
            t
        };
        let clean = if lost {
            warn!(?tasks, "assignment lost: the open transaction is aborted");
            false
        } else if core.rewind.is_some() {
            false
        } else {
            match core.commit(consumer) {
                Ok(()) => true,
                Err(e) => {
                    warn!(error = %e, "commit before revocation failed; the tasks' uncommitted work is dropped");
                    false
                }
            }
        };
        if !clean {
            // Drop the open transaction now: the next owner must not wait for it. When the
            // producer cannot abort (the broker is away), the loop re-creates it — which
            // fences the old one — with backoff, instead of blocking this callback.
            core.rewind = if core.output.try_abort() {
                None
            } else {
                Some(Recovery::NewProducer)
            };
            core.offsets_written = None;
            core.suspended.clear();
        }
        // Only an eager rebalance revokes every task before anything is assigned; under
        // KIP-848 a revoked task may be owned elsewhere before this member sees another
        // assignment, so nothing is kept.
        let eager = core.settings.group_protocol == GroupProtocol::Classic;
        for p in &tasks {
            let restore = core.restorer.suspend(*p);
            core.positions_unknown.remove(p);
            if let Some(task) = core.tasks.remove(p) {
                // A task that was restored and committed keeps its state while the
                // rebalance runs, and so does one part way through its restore (it has
                // processed nothing; its engine holds a prefix of the changelog); one with
                // uncommitted work does not.
                if eager && clean && (restore.is_some() || task.dirty.is_empty()) {
                    let changelog_high = match restore {
                        Some(_) => None,
                        None => core.restorer.high_watermark(*p),
                    };
                    core.suspended.insert(
                        *p,
                        Suspended {
                            task,
                            restore,
                            changelog_high,
                        },
                    );
                }
            }
        }
        for key in &revoked {
            core.paused.remove(key);
        }
        core.ownership.revoke(revoked);
        if !clean && !core.tasks.is_empty() && core.rewind.is_none() {
            // Whatever else this instance still owns is rewound to committed state.
            core.rewind = Some(Recovery::Abort);
        }
        info!(?tasks, "tasks revoked");
    }

    /// Under the classic protocol an assignment replaces the one before. librdkafka hands a
    /// member its next assignment without a revocation when the group rejoined before the
    /// member took up the previous one: partitions of the one before that are not in the
    /// new one were taken away unannounced, and another member may own them already. They
    /// are revoked as lost: the open transaction (which may hold their work) is dropped and
    /// the tasks that stay are rewound. (Partitions kept restart at their committed offsets;
    /// the tasks skip what they took already, see `Task::is_new`.)
    fn revoke_replaced(&self, consumer: &BaseConsumer<Self>, tpl: &TopicPartitionList) {
        let gone = {
            let guard = lock(&self.core);
            let Some(core) = guard.as_ref() else { return };
            if core.settings.group_protocol != GroupProtocol::Classic {
                return;
            }
            let kept: BTreeSet<(usize, i32)> = input_partitions(core, tpl).into_iter().collect();
            let mut gone = TopicPartitionList::new();
            for (rank, p) in core.ownership.assigned().filter(|k| !kept.contains(k)) {
                gone.add_partition(&core.topics[rank], p);
            }
            gone
        };
        if gone.count() > 0 {
            warn!(
                partitions = gone.count(),
                "an assignment replaced the one before without a revocation; the partitions it took away are dropped as lost"
            );
            self.revoke(consumer, &gone, true);
        }
    }

    /// Forgets the routes of revoked partitions (the reader stops forwarding them again).
    fn unroute_records(&self, tpl: &TopicPartitionList) {
        if let Some(records) = lock(&self.records).as_ref() {
            for e in tpl.elements() {
                records.unroute(e.topic(), e.partition());
            }
        }
    }
}

/// A member's group consumer, its records read in batches (see `batch_reader.rs`).
pub struct GroupReader(BatchReader<GroupContext>);

impl GroupReader {
    fn new(consumer: BaseConsumer<GroupContext>) -> Result<Self, RuntimeError> {
        let reader = BatchReader::for_group(consumer)
            .map_err(|e| RuntimeError::Setup(format!("reading the inputs in batches: {e}")))?;
        *lock(&reader.consumer().context().records) = Some(reader.records_queue());
        Ok(Self(reader))
    }
}

impl Drop for GroupReader {
    fn drop(&mut self) {
        // The queue goes with the reader; a rebalance served while the consumer closes
        // must not route to it.
        *lock(&self.0.consumer().context().records) = None;
    }
}

impl std::ops::Deref for GroupReader {
    type Target = BatchReader<GroupContext>;
    fn deref(&self) -> &Self::Target {
        &self.0
    }
}

impl ConsumerContext for GroupContext {
    fn pre_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        match rebalance {
            Rebalance::Assign(tpl) => {
                self.revoke_replaced(consumer, tpl);
                self.route_records(consumer, tpl);
            }
            Rebalance::Revoke(tpl) => self.revoke(consumer, tpl, consumer.assignment_lost()),
            Rebalance::Error(_) => {}
        }
    }

    fn post_rebalance(&self, consumer: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        let mut guard = lock(&self.core);
        let Some(core) = guard.as_mut() else { return };
        match rebalance {
            Rebalance::Assign(tpl) => {
                // librdkafka keeps an application pause on a partition across assignments:
                // one paused while it was half a task, or while its task restored, would
                // stay paused for good. Start every assignment resumed; the loop pauses what
                // it must again.
                if let Err(e) = consumer.resume(tpl) {
                    warn!(error = %e, "resuming newly assigned partitions");
                }
                let assigned = input_partitions(core, tpl);
                // An assignment may replace the one before without a revocation (librdkafka
                // does so when the group rejoined before the previous assignment was taken
                // up): what was paused then is resumed now.
                for key in &assigned {
                    core.paused.remove(key);
                }
                core.ownership.assign(assigned);
                core.joined = true;
            }
            // Revoked tasks were handled before the partitions went.
            Rebalance::Revoke(_) => return,
            Rebalance::Error(e) => {
                warn!(error = %e, "rebalance error");
                return;
            }
        }
        if let Err(e) = core.reconcile_tasks() {
            core.failed(e);
        }
    }

    /// An at-least-once member commits offsets without waiting for the answer (see
    /// `Core::commit_due`); a commit that failed is reported here. Nothing is lost by it:
    /// the next commit covers the same partitions with later offsets, and a member that
    /// lost them leaves the records to their next owner, who reads them again.
    fn commit_callback(&self, result: KafkaResult<()>, offsets: &TopicPartitionList) {
        if let Err(e) = result {
            warn!(error = %e, partitions = offsets.count(), "committing input offsets failed");
        }
    }
}

pub fn create_group_consumer(
    settings: &Settings,
    core: Arc<Mutex<Option<Core>>>,
) -> Result<GroupReader, RuntimeError> {
    let context = GroupContext {
        core,
        records: Mutex::new(None),
    };
    let consumer = group_consumer_config(settings)
        .create_with_context(context)
        .map_err(RuntimeError::kafka("creating the group consumer"))?;
    GroupReader::new(consumer)
}

/// The group consumer's client configuration: what correctness needs, and defaults the
/// pass-through may override.
fn group_consumer_config(settings: &Settings) -> ClientConfig {
    let mut c = base_config(settings);
    c.set("group.id", &settings.application_id)
        // The admin API names owners by client id: the instance, whichever of its member
        // loops owns the task.
        .set("client.id", &settings.instance_id)
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        // Only committed transactions are input; committed offsets are fetched stable.
        .set("isolation.level", "read_committed")
        .set("auto.offset.reset", "earliest");
    // librdkafka waits this long before fetching again for a partition whose local
    // queue was non-empty; its 1 s default makes a busy task consume in bursts.
    if c.get("fetch.queue.backoff.ms").is_none() {
        c.set("fetch.queue.backoff.ms", "10");
    }
    // The loop keeps decoded records of every task buffered (a budget of `MAX_BUFFERED`
    // per input on average); librdkafka's own prefetch of 64 MB per member on top of that
    // only costs memory. 8 MB still holds tens of thousands of records per member.
    if c.get("queued.max.messages.kbytes").is_none() {
        c.set("queued.max.messages.kbytes", "8192");
    }
    // New input partitions (an expansion) join the group when the client sees them in
    // its metadata; librdkafka's 5-minute default would leave them unread that long.
    if c.get("topic.metadata.refresh.interval.ms").is_none() {
        c.set("topic.metadata.refresh.interval.ms", "5000");
    }
    if settings.static_membership {
        c.set("group.instance.id", settings.member_id());
    }
    match settings.group_protocol {
        GroupProtocol::Classic => {
            // Range keeps co-partitioned topics together (see the module doc); it is not
            // a tuning knob, so a pass-through value is overridden, loudly.
            if c.get("partition.assignment.strategy")
                .is_some_and(|s| s != "range")
            {
                warn!("kafka.partition.assignment.strategy ignored: tasks need the range assignor");
            }
            c.set("partition.assignment.strategy", "range");
            // A member learns that the group rebalances from a heartbeat's answer; at the
            // 3 s default, a member restoring the tasks it got alone (the instance's other
            // members joined a moment later) went on restoring tasks about to move for
            // seconds. A heartbeat twice a second costs the coordinator next to nothing.
            if c.get("heartbeat.interval.ms").is_none() {
                c.set("heartbeat.interval.ms", "500");
            }
        }
        GroupProtocol::Consumer => {
            c.set("group.protocol", "consumer");
            if c.get("group.remote.assignor").is_none() {
                c.set("group.remote.assignor", "range");
            }
            // Under KIP-848 these are the broker's settings; librdkafka refuses them.
            for key in [
                "session.timeout.ms",
                "heartbeat.interval.ms",
                "partition.assignment.strategy",
            ] {
                if c.get(key).is_some() {
                    warn!(
                        key,
                        "ignored with group_protocol consumer (set on the broker)"
                    );
                    c.remove(key);
                }
            }
        }
    }
    c
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::config::load;

    fn consumer_setting(env: &[(&str, &str)], key: &str) -> Option<String> {
        let env = env.iter().map(|(k, v)| (k.to_string(), v.to_string()));
        let settings = load(None, env.collect::<Vec<_>>()).unwrap();
        group_consumer_config(&settings)
            .get(key)
            .map(str::to_string)
    }

    #[test]
    fn the_group_consumer_heartbeats_twice_a_second_unless_the_operator_says_otherwise() {
        let key = "heartbeat.interval.ms";
        assert_eq!(consumer_setting(&[], key).as_deref(), Some("500"));
        assert_eq!(
            consumer_setting(&[("CONNECTOR_KAFKA__HEARTBEAT_INTERVAL_MS", "3000")], key).as_deref(),
            Some("3000")
        );
        // Under KIP-848 the broker sets it, and librdkafka refuses it.
        assert_eq!(
            consumer_setting(&[("CONNECTOR_GROUP_PROTOCOL", "consumer")], key),
            None
        );
    }
}
