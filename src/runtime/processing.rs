//! Processing: the merge and the engine run over each active task's buffered records,
//! inputs are judged at their end or not, paused and resumed, catalog updates reach every
//! task, and task metrics are reported.

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{Offset, TopicPartitionList};
use tracing::{debug, warn};

use super::batch_reader::AHEAD;
use super::catalog_feed::CatalogUpdate;
use super::error::RuntimeError;
use super::input::redecode;
use super::instance::{now_ms, Core, BACKPRESSURE, BATCH};
use super::kafka::cached_high_watermark;
use super::output::Source;
use super::rebalance::GroupContext;
use super::rules::{
    confirm_at, input_at_end, needs_confirmation, Flow, Wakeup, CONFIRM_INTERVAL_MS,
};
use super::task::{BadInput, Decoded, Task};
use crate::merge::Next;
use crate::model::TimestampMs;

/// How many effects a caught-up task's timers produce before they are executed (a burst of
/// due timers is fired and executed in slices of about this size).
const FIRE_SLICE: usize = 4_096;
/// How soon the loop looks again for the answer to a question about an input's end.
const ANSWER_POLL_MS: TimestampMs = 1;
/// How long after a failed confirmation it is asked again.
const CONFIRM_RETRY_MS: i64 = 1_000;

impl Core {
    /// Processes buffered records of every active task.
    pub(super) fn process(
        &mut self,
        now: TimestampMs,
        wake: &mut Wakeup,
    ) -> Result<(), RuntimeError> {
        let mut effects = Vec::new();
        let partitions: Vec<i32> = self.tasks.keys().copied().collect();
        let topics = self.topics.clone();
        let edge = self.edge(now);
        for p in partitions {
            // Nothing is processed before the restore is done and reading was put at the
            // committed offsets (`learn_positions`).
            if self.restorer.is_restoring(p)
                || self.positions_unknown.contains(&p)
                || self.expansion_holds(&self.tasks[&p])
            {
                continue;
            }
            let task = self.tasks.get_mut(&p).expect("listed");
            // A record whose decoding waits for the registry holds its whole task: taking
            // the other input's records first could change the outcome.
            let held: Vec<usize> = task.held_inputs().collect();
            if !held.is_empty() {
                if now < self.retry_at {
                    wake.retry_at = Some(self.retry_at);
                    continue;
                }
                for i in held {
                    let rank = task.coordinates(i).0;
                    let head = task.queue_mut(i).records.front_mut().expect("held");
                    redecode(&self.codecs, rank, head, edge);
                }
                if task.held_inputs().next().is_some() {
                    self.retry_at = now + self.backoff.next_delay_ms();
                    wake.retry_at = Some(self.retry_at);
                    warn!(
                        task = p,
                        "the schema registry does not answer; holding the task"
                    );
                    continue;
                }
                self.backoff.reset();
            }
            let mut taken = 0;
            while taken < BATCH {
                taken += 1;
                let task = self.tasks.get_mut(&p).expect("listed");
                match task.next(now) {
                    Next::Take(i) => {
                        let (rank, from) = task.coordinates(i);
                        if matches!(
                            task.queue(i).records.front().map(|r| &r.event),
                            Some(Decoded::Retry(_))
                        ) {
                            // A record that arrived while the registry did not answer: try
                            // again now (the registry may be back, the schema cached since)
                            // rather than one record per loop turn. If it still waits, the
                            // task is held (above) from the next turn on. Either way the
                            // merge chooses again: the record's event time is known now.
                            let head = task.queue_mut(i).records.front_mut().expect("head exists");
                            redecode(&self.codecs, rank, head, edge);
                            if matches!(head.event, Decoded::Retry(_)) {
                                taken = usize::MAX;
                            }
                            continue;
                        }
                        if let Some(j) = (0..task.input_count()).find(|&j| {
                            j != i && task.queue(j).records.is_empty() && !task.queue(j).at_end
                        }) {
                            let q = task.queue(j);
                            debug!(task = p, waited_for = ?task.coordinates(j), position = ?q.position, fresh_high = ?q.fresh_high,
                                "merge: the bounded wait ran out; taking the other input's record");
                        }
                        // Start loading the user a record some places later in this input
                        // will need: a task's table of many users misses the cache on
                        // nearly every lookup, and misses started early overlap.
                        if let Some(Decoded::Event(ahead)) =
                            task.queue(i).records.get(AHEAD).map(|r| &r.event)
                        {
                            task.engine.prefetch_user(ahead.user_id());
                        }
                        let q = task.queue_mut(i);
                        let arrived = q.records.pop_front().expect("head exists");
                        q.next_offset = Some(arrived.offset + 1);
                        if task.expansion.is_some() {
                            // Side-feed positions and cuts are written with the offsets.
                            task.progress_dirty = true;
                        }
                        match &arrived.event {
                            Decoded::Event(event) => {
                                let source = if i < 2 {
                                    &mut task.sources[i]
                                } else {
                                    &mut task.feed_sources[i - 2]
                                };
                                source.offset = arrived.offset;
                                match task.engine.process(event, Some(source), now, &mut effects) {
                                    Ok(()) => {
                                        task.progress_dirty = true;
                                        self.output.execute(
                                            &self.codecs,
                                            &self.metrics,
                                            task,
                                            &mut effects,
                                        )?;
                                    }
                                    // The edge checks the same range; this is the engine's
                                    // own refusal, untouched state, treated alike. (The raw
                                    // bytes of a decoded record are not kept: the dead letter
                                    // names its coordinates.)
                                    Err(e) => {
                                        let bad = BadInput {
                                            class: e.class(),
                                            message: e.to_string(),
                                        };
                                        let source = Source::of(&topics[rank], from, &arrived);
                                        self.output.dead_letter(&self.metrics, &source, &bad)?;
                                    }
                                }
                            }
                            Decoded::Bad(bad) => {
                                let source = Source::of(&topics[rank], from, &arrived);
                                self.output.dead_letter(&self.metrics, &source, bad)?;
                            }
                            Decoded::Retry(_) => unreachable!("checked above"),
                            Decoded::Stop(message) => {
                                return Err(RuntimeError::Setup(format!(
                                    "decoding {}[{from}] at offset {}: {message}",
                                    topics[rank], arrived.offset
                                )));
                            }
                            Decoded::Skip => {}
                            Decoded::Forward { partition } => {
                                warn!(topic = topics[rank].as_str(), from, offset = arrived.offset, to = partition,
                                    "expansion: a record of a moved user after the cut (its producer was stale past the settle period); forwarded to its owner's partition");
                                // A partition the producer does not know yet fails the
                                // record (retried); the lookup teaches it the partition.
                                self.output.knows_partition(&topics[rank], *partition);
                                self.metrics.expansion_late_records.inc();
                                self.output.forward(
                                    &topics[rank],
                                    *partition,
                                    arrived.key.as_deref(),
                                    arrived.payload.as_deref(),
                                )?;
                            }
                        }
                    }
                    Next::Wait { until } => {
                        wake.merge_deadline =
                            Some(wake.merge_deadline.map_or(until, |d| d.min(until)));
                        taken = usize::MAX;
                    }
                    Next::Idle => {
                        if task.caught_up() {
                            // Nothing left to read: timers fire by the wall clock.
                            match task.engine.next_due() {
                                Some(d) if d <= now => {
                                    debug!(task = p, inputs = ?task.inputs.iter().map(|q| (q.position, q.fresh_high, q.at_end)).collect::<Vec<_>>(), "caught up: timers fire by the wall clock");
                                    task.progress_dirty = true;
                                    // In slices: a burst of due timers is executed a few
                                    // thousand effects at a time, which stay in cache.
                                    loop {
                                        let more = task.engine.advance_to_at_most(
                                            now,
                                            now,
                                            &mut effects,
                                            FIRE_SLICE,
                                        );
                                        if !effects.is_empty() {
                                            self.cadence.hurry();
                                        }
                                        self.output.execute(
                                            &self.codecs,
                                            &self.metrics,
                                            task,
                                            &mut effects,
                                        )?;
                                        if !more {
                                            break;
                                        }
                                        if self.output.held_full() {
                                            // The rest fires once the commit in flight
                                            // has landed (the loop waits for it).
                                            wake.runnable = true;
                                            break;
                                        }
                                    }
                                }
                                Some(d) => {
                                    wake.next_due = Some(wake.next_due.map_or(d, |n| n.min(d)));
                                }
                                None => {}
                            }
                        }
                        taken = usize::MAX;
                    }
                }
            }
            if taken == BATCH {
                // The batch ended with records left: come back without waiting.
                wake.runnable = true;
            }
        }
        Ok(())
    }

    /// Marks which inputs are at their end, from positions and the high watermarks the
    /// client last saw.
    ///
    /// The client's cached watermark of an empty input can lag behind records of the other
    /// input that arrived in the same fetch: librdkafka updates each partition's watermark
    /// as it parses that partition's part of a response, while the loop may already be
    /// looking at the other partition's records. Taking those records because the empty
    /// input "is at its end" would put them ahead of earlier records still being parsed.
    /// So an empty input counts as at its end for the merge only once the broker confirmed
    /// it after the other input's newest record arrived.
    ///
    /// The broker is asked off the loop ([`Ends`](super::ends::Ends)): until the answer has come the input is
    /// not at its end (the merge waits for it, other tasks go on). An answer confirms the
    /// records that had arrived when the question was sent, and only if the input's
    /// position is still past the end the broker reported.
    pub(super) fn refresh_ends(
        &mut self,
        consumer: &BaseConsumer<GroupContext>,
        now: TimestampMs,
        wake: &mut Wakeup,
    ) -> Result<(), RuntimeError> {
        while let Some(answer) = self.ends.answered() {
            // Answers to a task's earlier incarnation (dropped, rewound, resumed) are not
            // about its records: only the question an input still waits for counts.
            let asked = |q: &super::task::InputQueue| q.asked.map(|(token, _)| token);
            let found = self.tasks.get(&answer.partition).and_then(|t| {
                (asked(&t.inputs[answer.rank]) == Some(answer.token))
                    .then_some((t.partition, answer.rank))
            });
            // A side feed's question: asked by an old task about another partition.
            let found = found.or_else(|| {
                self.tasks.values().find_map(|t| {
                    (2..t.input_count())
                        .find(|&i| asked(t.queue(i)) == Some(answer.token))
                        .map(|i| (t.partition, i))
                })
            });
            let Some((p, i)) = found else {
                continue;
            };
            let q = self.tasks.get_mut(&p).expect("found").queue_mut(i);
            let Some((_, asked_seq)) = q.asked else {
                continue;
            };
            q.asked = None;
            // A read that failed leaves the input unconfirmed, nothing else: the merge keeps
            // waiting (boundedly) and the end is asked again later. It is no reason to drop
            // the open transaction.
            let high = match answer.high {
                Ok(high) => high,
                Err(e) => {
                    warn!(task = answer.partition, input = self.topics[answer.rank].as_str(), error = %e,
                        "confirming an input's end failed; asking again later");
                    q.confirmed_at = now + CONFIRM_RETRY_MS - CONFIRM_INTERVAL_MS;
                    continue;
                }
            };
            q.fresh_high = Some(q.fresh_high.map_or(high, |f| f.max(high)));
            if input_at_end(q.records.len(), q.position, Some(high)) {
                q.verified_seq = q.verified_seq.max(asked_seq);
            }
        }
        // Where the client is: past every record delivered and past transaction markers,
        // which a `read_committed` consumer passes without delivering a message (input
        // written by an upstream exactly-once application ends in one).
        let client_positions = consumer.position().ok();
        for (p, task) in self.tasks.iter_mut() {
            // Nothing of a task is processed before its restore is done and its positions
            // are known.
            if self.restorer.is_restoring(*p)
                || self.positions_unknown.contains(p)
                || task.recheck_at.is_some()
            {
                continue;
            }
            let reader = self.feed_readers.get(p).map(|r| &r.consumer);
            let feed_positions = match (reader, task.feeds.is_empty()) {
                (Some(r), false) => r.position().ok(),
                _ => None,
            };
            for i in 0..task.input_count() {
                let (rank, partition) = task.coordinates(i);
                let (cached, positions) = if i < 2 {
                    (
                        cached_high_watermark(consumer, &self.topics.c_names[rank], *p),
                        client_positions.as_ref(),
                    )
                } else {
                    (
                        reader.and_then(|r| {
                            cached_high_watermark(r, &self.topics.c_names[rank], partition)
                        }),
                        feed_positions.as_ref(),
                    )
                };
                let newest_other = task.newest_other(i);
                let last_seq = task.last_seq;
                let q = task.queue_mut(i);
                if let (Some(known), Some(Offset::Offset(client))) = (
                    q.position,
                    positions
                        .and_then(|tpl| tpl.find_partition(&self.topics[rank], partition))
                        .map(|e| e.offset()),
                ) {
                    // Only forward, and only once the task knows where it resumed: every
                    // message delivered is already in the queue.
                    q.position = Some(known.max(client));
                }
                // Not at the end before the broker said where the end is.
                let high = q
                    .fresh_high
                    .map(|fresh| cached.map_or(fresh, |c| c.max(fresh)));
                q.at_end = input_at_end(q.records.len(), q.position, high);
                if needs_confirmation(q.at_end, newest_other, q.verified_seq) {
                    // Not before the broker confirmed it: the merge waits, and more records
                    // gather meanwhile.
                    q.at_end = false;
                    let later = if q.asked.is_some() {
                        // Look for the answer again shortly.
                        now + ANSWER_POLL_MS
                    } else if let Some(later) = confirm_at(q.confirmed_at, now) {
                        later
                    } else {
                        q.confirmed_at = now;
                        q.asked = Some((self.ends.ask(rank, partition)?, last_seq));
                        now + ANSWER_POLL_MS
                    };
                    wake.retry_at = Some(wake.retry_at.map_or(later, |r| r.min(later)));
                }
            }
        }
        Ok(())
    }

    /// Whether the member buffers as many decoded records as it may (see
    /// `Backpressure::over_budget`): the loop then takes one record a poll.
    pub(super) fn over_budget(&self) -> bool {
        let buffered = self.tasks.values().map(Task::buffered).sum();
        let inputs = self.tasks.values().map(Task::input_count).sum();
        let any_held = self.tasks.values().any(|t| {
            (0..t.input_count()).any(|i| !t.queue(i).records.is_empty() && t.lags_behind_input(i))
        });
        BACKPRESSURE.over_budget(buffered, inputs, any_held)
    }

    /// Pauses inputs of restoring or half-owned tasks and inputs held with too much
    /// buffered (`Backpressure`); resumes the others.
    pub(super) fn flow_control(
        &mut self,
        consumer: &BaseConsumer<GroupContext>,
    ) -> Result<(), RuntimeError> {
        let incomplete = self.ownership.incomplete();
        let mut pause = TopicPartitionList::new();
        let mut resume = TopicPartitionList::new();
        let mut wanted: Vec<((usize, i32), bool)> = Vec::new();
        let at_cut = self.inputs_at_cut();
        for (p, task) in &self.tasks {
            // A task that takes nothing now (its head waits for the schema registry, its
            // positions are being learnt, an expansion holds it) holds all its inputs.
            let stuck = task.held_inputs().next().is_some()
                || self.positions_unknown.contains(p)
                || self.expansion_holds(task);
            for (i, q) in task.inputs.iter().enumerate() {
                let key = (i, *p);
                let paused = self.paused.contains(&key);
                // An old task's input at its cut waits for the hand-off; a task waiting for
                // its origins reads nothing.
                if self.restorer.is_restoring(*p)
                    || task.recheck_at.is_some()
                    || at_cut.contains(&key)
                {
                    // Nothing is processed before the restore is done.
                    if !paused {
                        wanted.push((key, true));
                    }
                    continue;
                }
                let held = stuck || task.lags_behind_input(i);
                match BACKPRESSURE.decide(q.records.len(), paused, held) {
                    Flow::Pause => wanted.push((key, true)),
                    Flow::Resume => wanted.push((key, false)),
                    Flow::Keep => {}
                }
            }
        }
        for key in incomplete {
            if !self.paused.contains(&key) {
                wanted.push((key, true));
            }
        }
        for ((i, p), pause_it) in wanted {
            if pause_it && self.paused.insert((i, p)) {
                pause.add_partition(&self.topics[i], p);
            } else if !pause_it && self.paused.remove(&(i, p)) {
                resume.add_partition(&self.topics[i], p);
            }
        }
        if pause.count() > 0 {
            consumer
                .pause(&pause)
                .map_err(RuntimeError::kafka("pausing inputs"))?;
        }
        if resume.count() > 0 {
            consumer
                .resume(&resume)
                .map_err(RuntimeError::kafka("resuming inputs"))?;
        }
        Ok(())
    }

    /// Pending timers, decisions and lag of every task, into the metrics. Returns the timers
    /// more than a minute past due (an upper bound: cancelled sends may still hold an entry).
    pub(super) fn report_task_metrics(&mut self, consumer: &BaseConsumer<GroupContext>) -> usize {
        let now = now_ms();
        let mut overdue = 0usize;
        for (p, task) in &self.tasks {
            let label = p.to_string();
            self.metrics
                .pending_timers
                .with_label_values(&[label.as_str()])
                .set(task.engine.pending_count() as i64);
            overdue += task.engine.timers_due_before(now - 60_000);
            if let Some(phase) = task.phase() {
                self.metrics
                    .expansion_phase
                    .with_label_values(&[label.as_str()])
                    .set(phase.as_metric());
            }
            let reported = self.decisions_reported.entry(*p).or_default();
            for (outcome, reason, n) in task.engine.counters().decision_counts() {
                let seen = reported.entry((outcome, reason)).or_default();
                if n > *seen {
                    self.metrics
                        .decisions
                        .with_label_values(&[outcome.as_str(), reason.as_str()])
                        .inc_by(n - *seen);
                    *seen = n;
                }
            }
            for (i, q) in task.inputs.iter().enumerate() {
                self.metrics
                    .input_buffered
                    .with_label_values(&[self.topics[i].as_str(), label.as_str()])
                    .set(q.records.len() as i64);
                let high = cached_high_watermark(consumer, &self.topics.c_names[i], *p);
                if let (Some(high), Some(position)) = (high, q.position) {
                    self.metrics
                        .consumer_lag
                        .with_label_values(&[self.topics[i].as_str(), label.as_str()])
                        .set((high - position).max(0) + q.records.len() as i64);
                }
            }
        }
        overdue
    }

    /// Applies catalog updates to the stored catalog and every active task (a task being
    /// restored gets the whole catalog again when it becomes active).
    pub(super) fn apply_catalog(
        &mut self,
        updates: Vec<CatalogUpdate>,
    ) -> Result<(), RuntimeError> {
        let now = now_ms();
        let mut effects = Vec::new();
        for update in updates {
            match update {
                CatalogUpdate::Upsert(campaign) => {
                    for task in self.tasks.values_mut() {
                        if self.restorer.is_restoring(task.partition) {
                            continue;
                        }
                        if let Err(e) = task.engine.apply_campaign(&campaign, now, &mut effects) {
                            warn!(error = %e, "catalog record rejected");
                        }
                        self.output
                            .execute(&self.codecs, &self.metrics, task, &mut effects)?;
                    }
                    self.catalog.insert(campaign.campaign_id.clone(), *campaign);
                }
                CatalogUpdate::Delete(id) => {
                    for task in self.tasks.values_mut() {
                        if self.restorer.is_restoring(task.partition) {
                            continue;
                        }
                        task.engine.remove_campaign(&id, now, &mut effects);
                        self.output
                            .execute(&self.codecs, &self.metrics, task, &mut effects)?;
                    }
                    self.catalog.remove(&id);
                }
                // Never returned by the feed: it reads such records again itself.
                CatalogUpdate::Retry(_) => {}
                CatalogUpdate::Bad {
                    partition,
                    offset,
                    key,
                    payload,
                    error,
                } => {
                    // Every instance reads the whole catalog; the owner of the task with the
                    // catalog partition's number dead-letters a bad record, so it is
                    // dead-lettered once.
                    let task = partition.rem_euclid(self.partitions.max(1) as i32);
                    if self.tasks.contains_key(&task) {
                        let source = Source {
                            topic: &self.settings.topics.campaigns,
                            partition,
                            offset,
                            key: key.as_deref(),
                            payload: payload.as_deref(),
                        };
                        self.output.dead_letter(&self.metrics, &source, &error)?;
                    } else {
                        warn!(partition, offset, class = error.class, error = %error.message,
                            "bad catalog record (dead-lettered by the owner of task {task})");
                    }
                }
            }
        }
        Ok(())
    }
}
