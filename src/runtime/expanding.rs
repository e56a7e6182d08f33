//! The runtime's side of an expansion of the inputs (`docs/partition-expansion.md`): which
//! phase a task is in, the side feeds an old task reads until their cut, the hand-off of
//! moved users in one transaction, and new owners waiting for every origin's marker.
//!
//! ```text
//!  SideFeeds ──(own inputs and every feed at their cut)──► hand-off (one transaction:
//!     moved users and rule snapshots to their new changelog partitions, tombstones here,
//!     a marker to every destination, input offsets at the cut) ──► restore again
//!  WaitingForOrigins ──(every origin's marker in the changelog)──► restore again ──► Done
//! ```

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use tracing::{info, warn};

use super::batch_reader::Record;
use super::error::RuntimeError;
use super::input::arrive;
use super::instance::{Core, BATCH, MAX_BUFFERED};
use super::kafka::standalone_consumer;
use super::rebalance::GroupContext;
use super::task::{Arrived, Decoded, Feed, InputQueue, Phase, Task, TaskExpansion};
use crate::expansion::{fate, marker_key, Fate, Layout, Marker, Side};
use crate::model::{InputCoordinates, TimestampMs};

/// How long after the cut time an input with no record past it is cut at its end.
const IDLE_CUT_AFTER_MS: i64 = 5_000;
/// How often a task waiting for its origins reads its changelog again.
const RECHECK_MS: i64 = 500;
/// How much earlier than the layout's time an old partition is read as a side feed: room
/// for producers' clocks behind the operation's.
const CLOCK_MARGIN_MS: i64 = 60_000;
/// How often a task whose side feeds do not all exist yet looks at the topics again.
const FEED_METADATA_MS: i64 = 1_000;

/// The client an old task reads its side feeds with (no group: positions are kept in the
/// task's changelog, in the transaction).
pub struct FeedReader {
    pub consumer: BaseConsumer,
    checked_at: TimestampMs,
    error_logged_at: TimestampMs,
}

/// What becomes of a record of a task's own input on arrival.
pub enum Arrival {
    Decode,
    Skip,
    Forward(i32),
    /// After the cut while the task still keeps its old users: read again after the
    /// hand-off (the input is paused at its cut).
    Drop,
}

/// The arrival of a record of own input `rank`: dropped when the task took it already
/// ([`Task::is_new`]), else as the task's expansion, if any, decides. Finds the input's
/// cut (the first record at or after the cut time).
pub fn own_arrival(
    task: &mut Task,
    rank: usize,
    offset: i64,
    timestamp: Option<i64>,
    key: Option<&[u8]>,
) -> Arrival {
    if !task.is_new(rank, offset) {
        return Arrival::Drop;
    }
    let Task {
        partition,
        expansion,
        marker_cuts,
        progress_dirty,
        ..
    } = task;
    let partition = *partition;
    let Some(x) = expansion.as_mut() else {
        return Arrival::Decode;
    };
    match x.phase {
        Phase::WaitingForOrigins => Arrival::Drop,
        Phase::SideFeeds => {
            if x.cuts[rank].is_none() && x.layout.past_cut(timestamp) {
                x.cuts[rank] = Some(offset);
                *progress_dirty = true;
                info!(
                    task = partition,
                    input = rank,
                    offset,
                    "expansion: cut found in an own input"
                );
            }
            if x.cuts[rank].is_some_and(|c| offset >= c) {
                x.reached[rank] = true;
                return Arrival::Drop;
            }
            match fate(&x.layout, partition, true, Side::Before, key) {
                Fate::Process => Arrival::Decode,
                _ => Arrival::Skip,
            }
        }
        Phase::Done => {
            let Some(user) = key.filter(|k| !k.is_empty()) else {
                // No user to route by: bad input, dead-lettered here.
                return Arrival::Decode;
            };
            // The cut the user's old task used in this partition: before it, that task
            // processed the record.
            let origin = x.layout.old_owner(user);
            let cut = marker_cuts.get(&(x.layout.epoch, origin, rank, partition));
            if cut.is_some_and(|c| offset < *c) {
                return Arrival::Skip;
            }
            match fate(&x.layout, partition, true, Side::After, Some(user)) {
                Fate::Process => Arrival::Decode,
                Fate::Skip => Arrival::Skip,
                Fate::Forward(q) => Arrival::Forward(q),
            }
        }
    }
}

pub fn skipped(offset: i64) -> Arrived {
    Arrived {
        offset,
        seq: 0,
        key: None,
        payload: None,
        event: Decoded::Skip,
    }
}

pub fn forwarded(m: &Record<'_>, partition: i32) -> Arrived {
    Arrived {
        offset: m.offset,
        seq: 0,
        key: m.key.map(<[u8]>::to_vec),
        payload: m.payload.map(<[u8]>::to_vec),
        event: Decoded::Forward { partition },
    }
}

impl Core {
    /// A new layout was read: old tasks start reading their side feeds.
    pub(super) fn learn_layout(&mut self, layout: Layout) {
        if self.layout == Some(layout) {
            return;
        }
        info!(
            epoch = layout.epoch,
            from = layout.from,
            to = layout.to,
            cut_at = layout.cut_at,
            "expansion: layout read"
        );
        self.layout = Some(layout);
        self.partitions = self.partitions.max(layout.to as usize);
        let partitions: Vec<i32> = self.tasks.keys().copied().collect();
        for p in partitions {
            if self.restorer.is_restoring(p) {
                // Its activation finds the layout.
                continue;
            }
            let task = self.tasks.get_mut(&p).expect("listed");
            let current = task.expansion.as_ref().map(|x| x.layout.epoch);
            if current.is_some_and(|e| e >= layout.epoch) {
                continue;
            }
            if layout.is_origin(p) && task.recheck_at.is_none() {
                start_side_feeds(task, layout, [None, None], &[]);
                task.progress_dirty = true;
            } else {
                // A task waiting (for a layout, or for markers of an older one), or of a
                // partition the layout does not grow from: restored again, it takes its
                // phase from the new layout.
                task.recheck_at = Some(0);
                task.restored_high = None;
            }
        }
    }

    /// Puts a task that became active into its phase of the expansion, if there is one.
    pub(super) fn enter_expansion(&mut self, p: i32, now: TimestampMs) {
        let layout = self.layout;
        let partitions = self.partitions;
        let Some(task) = self.tasks.get_mut(&p) else {
            return;
        };
        let restored = task.restored_expansion.take();
        let Some(layout) = layout else {
            if p as usize >= partitions {
                // A partition added by an expansion whose layout was not read yet.
                warn!(
                    task = p,
                    "a task beyond the known partition count, without a layout: waiting"
                );
                task.recheck_at = Some(now + RECHECK_MS);
            }
            return;
        };
        if task
            .expansion
            .as_ref()
            .is_some_and(|x| x.layout.epoch == layout.epoch)
        {
            // Resumed from suspension: reading of the side feeds resumes where it was taken.
            for f in &mut task.feeds {
                f.start = f.queue.next_offset.unwrap_or(f.start);
                f.queue = InputQueue {
                    position: Some(f.start),
                    ..InputQueue::default()
                };
                f.exists = false;
                f.reached = false;
                f.held = false;
            }
            self.feed_readers.remove(&p);
            return;
        }
        // A new incarnation of the task: whatever its reader held belongs to an old one.
        self.feed_readers.remove(&p);
        let Some(task) = self.tasks.get_mut(&p) else {
            return;
        };
        let restored = restored.filter(|x| x.epoch == layout.epoch);
        let cuts = restored.as_ref().map_or([None, None], |x| x.cuts);
        let epoch = layout.epoch;
        let all_origins = layout
            .origins(p)
            .iter()
            .all(|o| task.markers.contains(&(epoch, *o)));
        if all_origins {
            task.expansion = Some(TaskExpansion {
                layout,
                phase: Phase::Done,
                cuts,
                reached: [false; 2],
            });
        } else if layout.is_origin(p) && !task.markers.contains(&(epoch, p)) {
            let feeds = restored.map(|x| x.feeds).unwrap_or_default();
            start_side_feeds(task, layout, cuts, &feeds);
        } else {
            task.expansion = Some(TaskExpansion {
                layout,
                phase: Phase::WaitingForOrigins,
                cuts,
                reached: [false; 2],
            });
            task.recheck_at = Some(now + RECHECK_MS);
        }
        info!(task = p, phase = ?task.phase(), "expansion: task active");
    }

    /// The expansion's work in one loop turn: tasks waiting for origins read their
    /// changelog again, side feeds are read, tasks at their cut hand off.
    pub(super) fn step_expansion(
        &mut self,
        consumer: &BaseConsumer<GroupContext>,
        now: TimestampMs,
    ) -> Result<(), RuntimeError> {
        // Read again: a task waiting for markers (its restore finds them) or for a layout.
        let due: Vec<i32> = self
            .tasks
            .iter()
            .filter(|(p, t)| {
                t.recheck_at.is_some_and(|at| at <= now) && !self.restorer.is_restoring(**p)
            })
            .map(|(p, _)| *p)
            .collect();
        for p in due {
            // Nothing new in the changelog: no marker came; look again later.
            let restored_high = self.tasks[&p].restored_high;
            if restored_high.is_some() && self.restorer.high_watermark(p) == restored_high {
                self.tasks.get_mut(&p).expect("listed").recheck_at = Some(now + RECHECK_MS);
                continue;
            }
            let task = self.new_task(p);
            self.tasks.insert(p, task);
            self.positions_unknown.remove(&p);
            self.feed_readers.remove(&p);
            self.restorer.start(p, now)?;
        }
        self.feed_readers.retain(|p, _| {
            self.tasks
                .get(p)
                .is_some_and(|t| t.phase() == Some(Phase::SideFeeds))
        });
        let feeding: Vec<i32> = self
            .tasks
            .iter()
            .filter(|(p, t)| {
                t.phase() == Some(Phase::SideFeeds)
                    && !self.restorer.is_restoring(**p)
                    && !self.positions_unknown.contains(p)
            })
            .map(|(p, _)| *p)
            .collect();
        for p in feeding {
            self.read_feeds(p, now)?;
            self.cut_idle_inputs(p, now)?;
            if self.tasks[&p].ready_to_hand_off() {
                self.hand_off(consumer, p, now)?;
            }
        }
        Ok(())
    }

    /// Reads what the side feeds of task `p` have, without blocking.
    fn read_feeds(&mut self, p: i32, now: TimestampMs) -> Result<(), RuntimeError> {
        if !self.feed_readers.contains_key(&p) {
            let consumer = standalone_consumer(&self.settings, "feeds")?;
            self.feed_readers.insert(
                p,
                FeedReader {
                    consumer,
                    checked_at: 0,
                    error_logged_at: 0,
                },
            );
        }
        let edge = self.edge(now);
        let Core {
            tasks,
            feed_readers,
            topics,
            ends,
            codecs,
            ..
        } = self;
        let task = tasks.get_mut(&p).expect("listed");
        let reader = feed_readers.get_mut(&p).expect("created");
        if task.feeds.iter().any(|f| !f.exists) && now - reader.checked_at >= FEED_METADATA_MS {
            reader.checked_at = now;
            let mut counts = [0usize; 2];
            for (rank, count) in counts.iter_mut().enumerate() {
                if let Ok(md) = reader
                    .consumer
                    .fetch_metadata(Some(&topics[rank]), Duration::from_millis(1_000))
                {
                    *count = md.topics().first().map_or(0, |t| t.partitions().len());
                }
            }
            let mut newly = Vec::new();
            for (j, f) in task.feeds.iter_mut().enumerate() {
                if !f.exists && counts[f.rank] > f.partition as usize {
                    f.exists = true;
                    newly.push(j);
                }
            }
            if !newly.is_empty() {
                // An old partition holds records of other tasks' users only from the growth
                // on: reading it starts at the layout's time (less a margin for producers'
                // clocks), not at its beginning.
                let layout = task.expansion.as_ref().expect("side feeds").layout;
                let mut times = TopicPartitionList::new();
                for j in &newly {
                    let f = &task.feeds[*j];
                    if f.by_time {
                        let at = layout.created_at - CLOCK_MARGIN_MS;
                        times
                            .add_partition_offset(&topics[f.rank], f.partition, Offset::Offset(at))
                            .map_err(RuntimeError::kafka("looking up side-feed offsets"))?;
                    }
                }
                if times.count() > 0 {
                    let found = reader
                        .consumer
                        .offsets_for_times(times, Duration::from_secs(5))
                        .map_err(RuntimeError::kafka("looking up side-feed offsets by time"))?;
                    for e in found.elements() {
                        let Some(rank) = topics.rank(e.topic()) else {
                            continue;
                        };
                        let Some(f) = task
                            .feeds
                            .iter_mut()
                            .find(|f| f.rank == rank && f.partition == e.partition())
                        else {
                            continue;
                        };
                        let start = match e.offset() {
                            Offset::Offset(o) => o,
                            // No record that late: from the end.
                            _ => {
                                reader
                                    .consumer
                                    .fetch_watermarks(
                                        e.topic(),
                                        e.partition(),
                                        Duration::from_secs(5),
                                    )
                                    .map_err(RuntimeError::kafka("reading a side feed's end"))?
                                    .1
                            }
                        };
                        f.start = start;
                        f.by_time = false;
                        f.queue.position = Some(start);
                    }
                }
                for f in task.feeds.iter_mut() {
                    f.held = false;
                }
                let mut tpl = TopicPartitionList::new();
                for f in task.feeds.iter().filter(|f| f.exists && !f.reached) {
                    let at = f.queue.position.unwrap_or(f.start);
                    tpl.add_partition_offset(&topics[f.rank], f.partition, Offset::Offset(at))
                        .map_err(RuntimeError::kafka("assigning side feeds"))?;
                }
                reader
                    .consumer
                    .assign(&tpl)
                    .map_err(RuntimeError::kafka("assigning side feeds"))?;
                for j in newly {
                    let (rank, partition) = (task.feeds[j].rank, task.feeds[j].partition);
                    let token = ends.ask(rank, partition)?;
                    let seq = task.last_seq;
                    let q = &mut task.feeds[j].queue;
                    q.asked = Some((token, seq));
                    q.confirmed_at = now;
                    info!(
                        task = p,
                        input = topics[rank].as_str(),
                        partition,
                        from = at_offset(q),
                        "expansion: reading a side feed"
                    );
                }
            }
        }
        // Backpressure per feed: a full feed is paused, the others keep coming (the merge
        // may be waiting for one of them).
        for f in task.feeds.iter_mut().filter(|f| f.exists && !f.reached) {
            let len = f.queue.records.len();
            let pause = if !f.held && len >= MAX_BUFFERED {
                true
            } else if f.held && len < MAX_BUFFERED / 2 {
                false
            } else {
                continue;
            };
            let mut tpl = TopicPartitionList::new();
            tpl.add_partition(&topics[f.rank], f.partition);
            let done = if pause {
                reader.consumer.pause(&tpl)
            } else {
                reader.consumer.resume(&tpl)
            };
            done.map_err(RuntimeError::kafka("pausing or resuming a side feed"))?;
            f.held = pause;
        }
        let layout = task.expansion.as_ref().expect("side feeds").layout;
        for _ in 0..BATCH {
            let m = match reader.consumer.poll(Duration::ZERO) {
                None => break,
                Some(Ok(m)) => m,
                Some(Err(e)) => {
                    if now - reader.error_logged_at >= 1_000 {
                        reader.error_logged_at = now;
                        warn!(task = p, error = %e, "side-feed reader error (the client retries)");
                    }
                    continue;
                }
            };
            let Some(rank) = topics.rank(m.topic()) else {
                continue;
            };
            let Some(j) = task
                .feeds
                .iter()
                .position(|f| f.rank == rank && f.partition == m.partition())
            else {
                continue;
            };
            let offset = m.offset();
            let f = &mut task.feeds[j];
            if f.reached {
                continue;
            }
            if f.cut.is_none() && layout.past_cut(m.timestamp().to_millis()) {
                f.cut = Some(offset);
                task.progress_dirty = true;
                info!(
                    task = p,
                    input = topics[rank].as_str(),
                    partition = f.partition,
                    offset,
                    "expansion: cut found in a side feed"
                );
            }
            if f.cut.is_some_and(|c| offset >= c) {
                f.reached = true;
                let mut tpl = TopicPartitionList::new();
                tpl.add_partition(&topics[rank], f.partition);
                let _ = reader.consumer.pause(&tpl);
                continue;
            }
            let arrived = match fate(&layout, p, false, Side::Before, m.key()) {
                Fate::Process => arrive(codecs, rank, offset, m.key(), m.payload(), edge),
                _ => skipped(offset),
            };
            task.push(2 + j, arrived);
        }
        Ok(())
    }

    /// An input of task `p` that got no record at or after the cut time, and is at its end
    /// some time after it, is cut at its end: otherwise an idle partition would hold the
    /// hand-off (and the task's timers) until a record comes. Origins need not agree on
    /// such a cut: each one's cuts travel in its marker and decide for its own users.
    fn cut_idle_inputs(&mut self, p: i32, now: TimestampMs) -> Result<(), RuntimeError> {
        let Core {
            tasks,
            feed_readers,
            topics,
            ..
        } = self;
        let task = tasks.get_mut(&p).expect("listed");
        let Some(layout) = task.expansion.as_ref().map(|x| x.layout) else {
            return Ok(());
        };
        if now < layout.cut_at + IDLE_CUT_AFTER_MS {
            return Ok(());
        }
        let idle = |q: &InputQueue| q.at_end && q.records.is_empty();
        for i in 0..2 {
            let q = &task.inputs[i];
            let x = task.expansion.as_ref().expect("checked");
            if x.cuts[i].is_some() || !idle(q) {
                continue;
            }
            let Some(end) = q.position else {
                continue;
            };
            let x = task.expansion.as_mut().expect("checked");
            x.cuts[i] = Some(end);
            x.reached[i] = true;
            task.progress_dirty = true;
            info!(
                task = p,
                input = topics[i].as_str(),
                offset = end,
                "expansion: no record after the cut time; cut at the end"
            );
        }
        let reader = feed_readers.get(&p).map(|r| &r.consumer);
        for f in task.feeds.iter_mut() {
            if f.cut.is_some() || !f.exists || !idle(&f.queue) {
                continue;
            }
            let Some(end) = f.queue.position else {
                continue;
            };
            f.cut = Some(end);
            f.reached = true;
            task.progress_dirty = true;
            if let Some(reader) = reader {
                let mut tpl = TopicPartitionList::new();
                tpl.add_partition(&topics[f.rank], f.partition);
                let _ = reader.pause(&tpl);
            }
            info!(
                task = p,
                input = topics[f.rank].as_str(),
                partition = f.partition,
                offset = end,
                "expansion: no record after the cut time in a side feed; cut at its end"
            );
        }
        Ok(())
    }

    /// Task `p` reached its cut everywhere: its moved users, with the rule snapshots their
    /// timers need, go to their new changelog partitions, markers to every destination, and
    /// the input offsets stop at the cut — in one transaction, committed now. The task is
    /// then restored again, without the users it gave away.
    fn hand_off(
        &mut self,
        consumer: &BaseConsumer<GroupContext>,
        p: i32,
        now: TimestampMs,
    ) -> Result<(), RuntimeError> {
        let started = std::time::Instant::now();
        let x = self.tasks[&p].expansion.clone().expect("side feeds");
        let layout = x.layout;
        let last = layout.to as i32 - 1;
        let changelog = self.output.changelog_topic().to_string();
        if !self.output.knows_partition(&changelog, last) {
            warn!(
                task = p,
                topic = changelog.as_str(),
                partitions = layout.to,
                "expansion: the changelog does not show every new partition yet; handing off later"
            );
            return Ok(());
        }
        // The hand-off's writes are ordered among themselves and with what came before:
        // no commit runs under them.
        self.land(consumer, true)?;
        let task = self.tasks.get_mut(&p).expect("listed");
        for (i, cut) in x.cuts.iter().enumerate() {
            task.inputs[i].next_offset = *cut;
        }
        task.progress_dirty = true;
        // The task's own changes first: the tombstones below come after them (at-least-once:
        // after its outputs are written, as at a commit).
        self.output.settle_unless_transactional()?;
        self.output.write_state(&self.codecs, task)?;
        let destinations = layout.destinations(p);
        let mut moved: BTreeMap<i32, usize> = BTreeMap::new();
        let mut tombstones: Vec<String> = Vec::new();
        for record in task.engine.export_all() {
            if record.rule.is_some() {
                let value = self.output.encode_state(&self.codecs, &record)?;
                for d in destinations.iter().filter(|d| **d != p) {
                    self.output.write_changelog(
                        *d,
                        record.changelog_key().as_bytes(),
                        Some(&value),
                    )?;
                }
            } else if let Some(user) = &record.user {
                let d = layout.new_owner(user.user_id.as_bytes());
                if d != p {
                    let key = record.changelog_key();
                    let value = self.output.encode_state(&self.codecs, &record)?;
                    self.output
                        .write_changelog(d, key.as_bytes(), Some(&value))?;
                    tombstones.push(key);
                    *moved.entry(d).or_default() += 1;
                }
            }
        }
        // Without a transaction (at-least-once) the copies must be written before the
        // originals are removed: a crash in between then leaves a user in both places, and
        // the hand-off done again writes the same state.
        self.output.flush_unless_transactional()?;
        for key in &tombstones {
            self.output.write_changelog(p, key.as_bytes(), None)?;
        }
        let task = &self.tasks[&p];
        let mut cuts: Vec<(usize, i32, i64)> = (0..2)
            .filter_map(|i| x.cuts[i].map(|c| (i, p, c)))
            .collect();
        cuts.extend(
            task.feeds
                .iter()
                .filter_map(|f| f.cut.map(|c| (f.rank, f.partition, c))),
        );
        let marker = serde_json::to_string(&Marker {
            epoch: layout.epoch,
            origin: p,
            cuts,
        })
        .expect("a marker serializes");
        for d in &destinations {
            self.output.write_changelog(
                *d,
                marker_key(layout.epoch, p).as_bytes(),
                Some(marker.as_bytes()),
            )?;
        }
        self.commit(consumer)?;
        info!(task = p, moved = ?moved, took_ms = started.elapsed().as_millis() as u64,
            "expansion: users handed over");
        self.metrics
            .expansion_handoffs
            .inc_by(moved.values().sum::<usize>() as u64);
        let task = self.new_task(p);
        self.tasks.insert(p, task);
        self.positions_unknown.remove(&p);
        self.feed_readers.remove(&p);
        self.restorer.start(p, now)?;
        Ok(())
    }

    /// Whether task `p` must not process input now: it waits to be read again, or not
    /// every side feed exists yet.
    pub(super) fn expansion_holds(&self, task: &Task) -> bool {
        task.recheck_at.is_some()
            || (task.phase() == Some(Phase::SideFeeds) && task.feeds.iter().any(|f| !f.exists))
    }

    /// Own inputs of old tasks that reached their cut: paused until the hand-off.
    pub(super) fn inputs_at_cut(&self) -> BTreeSet<(usize, i32)> {
        let mut out = BTreeSet::new();
        for (p, t) in &self.tasks {
            if let Some(x) = t.expansion.as_ref().filter(|x| x.phase == Phase::SideFeeds) {
                for (i, reached) in x.reached.iter().enumerate() {
                    if *reached {
                        out.insert((i, *p));
                    }
                }
            }
        }
        out
    }
}

fn at_offset(q: &InputQueue) -> i64 {
    q.position.unwrap_or(0)
}

/// Starts the side-feed phase of an old task: a feed per input topic and partition that
/// refreshed producers may write its users to, from its committed position.
fn start_side_feeds(
    task: &mut Task,
    layout: Layout,
    cuts: [Option<i64>; 2],
    restored: &[crate::expansion::FeedProgress],
) {
    let p = task.partition;
    task.feeds.clear();
    task.feed_sources.clear();
    for x in layout.feeds(p) {
        for rank in 0..2 {
            let saved = restored.iter().find(|f| f.rank == rank && f.partition == x);
            let start = saved.map_or(0, |f| f.next);
            let by_time = saved.is_none() && layout.is_origin(x);
            task.feeds.push(Feed {
                rank,
                partition: x,
                queue: InputQueue {
                    position: Some(start),
                    ..InputQueue::default()
                },
                cut: saved.and_then(|f| f.cut),
                exists: false,
                start,
                reached: false,
                held: false,
                by_time,
            });
            task.feed_sources.push(InputCoordinates {
                topic: task.sources[rank].topic.clone(),
                partition: x,
                offset: 0,
            });
        }
    }
    task.expansion = Some(TaskExpansion {
        layout,
        phase: Phase::SideFeeds,
        cuts,
        reached: [false; 2],
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::validate::Limits;

    fn layout() -> Layout {
        Layout {
            epoch: 1,
            from: 6,
            to: 12,
            cut_at: 1_000,
            created_at: 0,
        }
    }

    fn task(p: i32) -> Task {
        Task::new(p, ["i", "u"], Limits::default(), (500, 50), false)
    }

    fn user_of(l: &Layout, old: i32, new: i32) -> String {
        (0..)
            .map(|i| format!("user-{i}"))
            .find(|u| l.old_owner(u.as_bytes()) == old && l.new_owner(u.as_bytes()) == new)
            .expect("some user hashes there")
    }

    fn arrival(t: &mut Task, rank: usize, offset: i64, ts: i64, key: &str) -> &'static str {
        match own_arrival(t, rank, offset, Some(ts), Some(key.as_bytes())) {
            Arrival::Decode => "decode",
            Arrival::Skip => "skip",
            Arrival::Forward(_) => "forward",
            Arrival::Drop => "drop",
        }
    }

    #[test]
    fn a_record_the_task_took_already_is_dropped_when_it_comes_again() {
        let mut t = task(2);
        for offset in 3..6 {
            assert_eq!(arrival(&mut t, 0, offset, 1, "u"), "decode");
            t.push(
                0,
                crate::runtime::task::Arrived {
                    offset,
                    seq: 0,
                    key: None,
                    payload: None,
                    event: crate::runtime::task::Decoded::Skip,
                },
            );
        }
        // The client started the partition over at its committed offset.
        assert_eq!(arrival(&mut t, 0, 4, 1, "u"), "drop");
        assert_eq!(arrival(&mut t, 0, 6, 1, "u"), "decode");
        assert_eq!(
            arrival(&mut t, 1, 0, 1, "u"),
            "decode",
            "each input on its own"
        );
    }

    #[test]
    fn an_old_task_stops_at_its_cut_and_hands_off_once_every_feed_is_closed() {
        let l = layout();
        let mut t = task(2);
        start_side_feeds(&mut t, l, [None, None], &[]);
        assert_eq!(t.feeds.len(), 2, "partition 8 of both inputs");
        let u = user_of(&l, 2, 8);
        assert_eq!(arrival(&mut t, 0, 4, 999, &u), "decode");
        // The first record at or after the cut time is the cut; what follows waits.
        assert_eq!(arrival(&mut t, 0, 5, 1_000, &u), "drop");
        assert_eq!(arrival(&mut t, 0, 6, 900, &u), "drop");
        assert_eq!(t.expansion.as_ref().unwrap().cuts, [Some(5), None]);
        assert!(t.own_closed(0) && !t.own_closed(1));
        assert!(
            !t.caught_up(),
            "past a cut, the wall clock is the new owner's"
        );
        assert_eq!(arrival(&mut t, 1, 0, 1_500, &u), "drop");
        assert!(!t.ready_to_hand_off(), "the side feeds are still open");
        for f in &mut t.feeds {
            f.exists = true;
            f.cut = Some(3);
            f.reached = true;
        }
        assert!(t.ready_to_hand_off());
        // A record of the cut read again (after a seek) does not reopen the input.
        t.clear_inputs();
        assert!(
            !t.ready_to_hand_off(),
            "the record at the cut must be read again"
        );
    }

    #[test]
    fn a_new_owner_skips_what_precedes_its_cut_and_forwards_stale_records_after_it() {
        let l = layout();
        let mut t = task(8);
        t.expansion = Some(TaskExpansion {
            layout: l,
            phase: Phase::Done,
            cuts: [None, None],
            reached: [false; 2],
        });
        let mine = user_of(&l, 2, 8);
        let stays = user_of(&l, 2, 2);
        let other = user_of(&l, 3, 9);
        // Task 2 handed off with its cut in interactions[8] at offset 1.
        t.marker_cuts.insert((1, 2, 0, 8), 1);
        assert_eq!(
            arrival(&mut t, 0, 0, 10, &mine),
            "skip",
            "its old owner read it"
        );
        assert_eq!(
            arrival(&mut t, 0, 1, 10, &mine),
            "decode",
            "the origin's cut decides"
        );
        assert_eq!(arrival(&mut t, 0, 2, 1_000, &mine), "decode");
        assert_eq!(arrival(&mut t, 0, 3, 1_100, &stays), "forward");
        assert_eq!(
            arrival(&mut t, 1, 0, 10, &mine),
            "decode",
            "no cut in user events: after"
        );
        assert_eq!(
            arrival(&mut t, 0, 4, 1_100, &other),
            "forward",
            "a wrong partition"
        );
        assert!(matches!(
            own_arrival(&mut t, 0, 4, Some(1_200), None),
            Arrival::Decode
        ));
    }

    #[test]
    fn a_task_waiting_for_its_origins_takes_nothing() {
        let l = layout();
        let mut t = task(8);
        t.expansion = Some(TaskExpansion {
            layout: l,
            phase: Phase::WaitingForOrigins,
            cuts: [None, None],
            reached: [false; 2],
        });
        assert_eq!(arrival(&mut t, 0, 0, 1_000, &user_of(&l, 2, 8)), "drop");
    }
}
