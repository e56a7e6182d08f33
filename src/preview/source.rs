//! Reads a window of the input topics of a running deployment for a preview — read-only:
//! partitions assigned by hand (no group is joined, so none is formed or rebalanced),
//! auto-commit off and no commit (so no offsets are stored), `read_committed`, nothing
//! produced anywhere.
//!
//! ```text
//!  offsets_for_times(since) ──► start[t][p]      high watermark now (or offsets_for_times(until))
//!                                  │                          │ ──► end[t][p]
//!  interactions[p] ─► buffer ─┐    ▼                          ▼
//!                             ├─ Merge (as a task does) ─► Preview::process(p, …)
//!  user-events[p]  ─► buffer ─┘
//! ```
//!
//! Every partition is read from the first offset whose record time is at or after `since`
//! to the end offset captured when the preview starts: a `read_committed` reader's position
//! passes transaction markers without delivering anything, so "at the end" is the client's
//! position reaching the end offset, not a count of records or a quiet spell. Records
//! written after the start are not read.
//!
//! Each task's two partitions are merged by event time as the connector's tasks merge them
//! ([`crate::merge`]). One difference: the connector stops waiting for an empty partition
//! that is not at its end after `merge_max_wait`, while a preview always waits (every
//! record it waits for is already in the topic) — what the connector does whenever its
//! partitions deliver within `merge_max_wait`. Memory: at
//! most [`BUFFERED`] decoded records per partition (a full partition is paused until its
//! task has taken half of them) plus librdkafka's fetch queue (bounded by
//! `queued.max.messages.kbytes`, 16 MiB unless configured).
//!
//! Records the connector would dead-letter (undecodable, key not the user id, event time
//! out of range or too far ahead of the wall clock) are counted by class and skipped.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};

use super::Preview;
use crate::merge::{Head, InputState, Merge, Next};
use crate::model::{InputCoordinates, InputEvent, TimestampMs};
use crate::runtime::codecs::Codecs;
use crate::runtime::config::Settings;
use crate::runtime::input::{decode_input, EdgeChecks};
use crate::runtime::kafka::{self, base_config, TopicError};
use crate::runtime::task::Decoded;

/// Decoded records held per partition before it is paused.
pub const BUFFERED: usize = 5_000;

/// How long no partition may move before the preview gives up.
const STALL: Duration = Duration::from_secs(120);

/// What went wrong reading the topics.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error(transparent)]
    Topics(#[from] TopicError),
    /// (The Kafka error is part of the message, not a separate source, so that it is
    /// printed once.)
    #[error("{during}: {error}")]
    Kafka { during: String, error: KafkaError },
    #[error(
        "input topics are not co-partitioned: {first} has {first_count} partitions but \
         {second} has {second_count}; the connector refuses to run on them, and a preview \
         cannot form its tasks"
    )]
    NotCoPartitioned {
        first: String,
        first_count: usize,
        second: String,
        second_count: usize,
    },
    #[error("codec setup: {0}")]
    Codec(String),
    #[error("the preview has {tasks} tasks but the input topics have {partitions} partitions")]
    Tasks { tasks: usize, partitions: usize },
    #[error("decoding {topic}[{partition}] at offset {offset}: {message}")]
    Decode {
        topic: String,
        partition: i32,
        offset: i64,
        message: String,
    },
    #[error(
        "no progress for {} s; still short of the end: {}. An open transaction holds a \
         read_committed reader back until it commits or aborts.",
        .seconds,
        .behind.join(", ")
    )]
    Stalled { seconds: u64, behind: Vec<String> },
}

fn kafka(during: impl Into<String>) -> impl FnOnce(KafkaError) -> SourceError {
    let during = during.into();
    move |error| SourceError::Kafka { during, error }
}

/// The window of records to read, by record time (the Kafka timestamp).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Window {
    pub since: TimestampMs,
    /// Read up to the first record at or after this time; `None`: to the end offsets
    /// as they are when the preview starts.
    pub until: Option<TimestampMs>,
}

/// How the reading went.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReadStats {
    /// Input topics (interactions, user events).
    pub topics: [String; 2],
    pub partitions: usize,
    /// Records read, per input topic.
    pub records: [u64; 2],
    /// Records the connector would dead-letter, by class.
    pub bad: BTreeMap<&'static str, u64>,
    /// Records between the start and end offsets (control records included).
    pub expected: u64,
    pub elapsed: Duration,
}

/// What the reader reports while it reads (about once a second).
#[derive(Debug, Clone, Copy)]
pub struct Progress {
    pub records: u64,
    pub expected: u64,
    pub elapsed: Duration,
    /// The latest event time processed.
    pub event_time: Option<TimestampMs>,
}

/// One input partition: where it starts and ends, where the reader is, what it holds.
struct Input {
    rank: usize,
    partition: i32,
    end: i64,
    position: i64,
    buffer: VecDeque<(i64, InputEvent)>,
    paused: bool,
}

impl Input {
    fn at_end(&self) -> bool {
        self.position >= self.end
    }

    fn state(&self) -> InputState {
        InputState {
            rank: self.rank as u8,
            head: self.buffer.front().map(|(offset, e)| Head {
                occurred_at: e.occurred_at(),
                offset: *offset,
            }),
            at_end: self.at_end(),
            behind: false,
        }
    }
}

/// A consumer that never joins a group: partitions assigned by hand from explicit offsets
/// (librdkafka needs a `group.id` to assign at all, but without a subscription it never
/// joins the group, and with auto-commit off and no commit call it never commits, so the
/// broker never learns of the group); `read_committed`, as the connector reads.
fn reader(settings: &Settings) -> Result<BaseConsumer, SourceError> {
    let mut c = base_config(settings);
    c.set("group.id", format!("{}-preview", settings.application_id))
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("isolation.level", "read_committed")
        .set("auto.offset.reset", "earliest");
    // A partition whose queue is not empty would otherwise be fetched again only after a
    // second (librdkafka's default backoff).
    if c.get("fetch.queue.backoff.ms").is_none() {
        c.set("fetch.queue.backoff.ms", "10");
    }
    // The prefetch queue is the reader's memory beside its own buffers.
    if c.get("queued.max.messages.kbytes").is_none() {
        c.set("queued.max.messages.kbytes", "16384");
    }
    c.create().map_err(kafka("creating the preview's reader"))
}

/// The input topics opened for a preview: partitions assigned from their start offsets,
/// end offsets captured.
pub struct Source {
    consumer: BaseConsumer,
    codecs: Codecs,
    topics: [String; 2],
    partitions: usize,
    inputs: Vec<Input>,
    expected: u64,
    edge: EdgeChecks,
    started: Instant,
}

impl Source {
    /// Connects, checks the inputs are co-partitioned, captures the end offsets, finds the
    /// start offsets of `window.since` and assigns the partitions. `now` is the wall clock
    /// for the edge checks.
    pub fn open(
        settings: &Settings,
        window: Window,
        now: TimestampMs,
    ) -> Result<Self, SourceError> {
        let started = Instant::now();
        kafka::check_connection(settings)?;
        let codecs = Codecs::new(settings).map_err(SourceError::Codec)?;
        let consumer = reader(settings)?;
        let topics = [
            settings.topics.interactions.clone(),
            settings.topics.user_events.clone(),
        ];
        let counts = kafka::partition_counts(&consumer, &[&topics[0], &topics[1]])?;
        let count =
            |t: &String| counts[t.as_str()].ok_or_else(|| TopicError::Missing { topic: t.clone() });
        let (first, second) = (count(&topics[0])?, count(&topics[1])?);
        if first != second {
            return Err(SourceError::NotCoPartitioned {
                first: topics[0].clone(),
                first_count: first,
                second: topics[1].clone(),
                second_count: second,
            });
        }
        let partitions = first;
        // End offsets first, so that "the end" is the moment the preview started.
        let mut inputs = Vec::with_capacity(2 * partitions);
        for (rank, topic) in topics.iter().enumerate() {
            for p in 0..partitions as i32 {
                let high = kafka::high_watermark(&consumer, topic, p)
                    .map_err(kafka(format!("reading the end offset of {topic}[{p}]")))?;
                inputs.push(Input {
                    rank,
                    partition: p,
                    end: high,
                    position: high,
                    buffer: VecDeque::new(),
                    paused: false,
                });
            }
        }
        let starts = offsets_for_time(&consumer, &topics, partitions, window.since)?;
        let ends = match window.until {
            Some(until) => Some(offsets_for_time(&consumer, &topics, partitions, until)?),
            None => None,
        };
        let mut assignment = TopicPartitionList::new();
        let mut expected = 0;
        for (i, input) in inputs.iter_mut().enumerate() {
            if let Some(Some(end)) = ends.as_ref().map(|e| e[i]) {
                input.end = input.end.min(end);
            }
            // No record at or after `since`: nothing to read here.
            input.position = starts[i].unwrap_or(input.end).min(input.end);
            if !input.at_end() {
                expected += (input.end - input.position) as u64;
                assignment
                    .add_partition_offset(
                        &topics[input.rank],
                        input.partition,
                        Offset::Offset(input.position),
                    )
                    .map_err(kafka("building the assignment"))?;
            }
        }
        consumer
            .assign(&assignment)
            .map_err(kafka("assigning the input partitions"))?;
        Ok(Self {
            consumer,
            codecs,
            topics,
            partitions,
            inputs,
            expected,
            edge: EdgeChecks {
                now,
                max_future_skew_ms: settings.max_future_skew.as_millis() as i64,
            },
            started,
        })
    }

    /// The number of tasks (partitions of each input topic).
    pub fn partitions(&self) -> usize {
        self.partitions
    }

    /// Reads to the end offsets and feeds every task's records to `preview` (one task per
    /// partition) in the task's event-time order.
    pub fn read(
        mut self,
        preview: &mut Preview,
        progress: &mut dyn FnMut(&Progress),
    ) -> Result<ReadStats, SourceError> {
        let partitions = self.partitions;
        if preview.tasks() != partitions {
            return Err(SourceError::Tasks {
                tasks: preview.tasks(),
                partitions,
            });
        }
        let (consumer, topics, inputs) = (&self.consumer, &self.topics, &mut self.inputs);
        let mut stats = ReadStats {
            topics: topics.clone(),
            partitions,
            expected: self.expected,
            ..ReadStats::default()
        };
        let mut merges: Vec<Merge> = (0..partitions)
            .map(|_| Merge::new(i64::MAX, i64::MAX))
            .collect();
        let mut event_time = None;
        let mut last_report = Instant::now();
        let mut last_move = Instant::now();
        while !inputs.iter().all(|i| i.at_end() && i.buffer.is_empty()) {
            let polled = consumer.poll(Duration::from_millis(100));
            let quiet = polled.is_none();
            let mut moved = false;
            match polled {
                Some(Ok(m)) => {
                    let Some(rank) = topics.iter().position(|t| t == m.topic()) else {
                        continue;
                    };
                    let input = &mut inputs[rank * partitions + m.partition() as usize];
                    if m.offset() < input.end {
                        stats.records[rank] += 1;
                        match decode_input(&self.codecs, rank, m.key(), m.payload(), self.edge) {
                            Decoded::Event(e) => input.buffer.push_back((m.offset(), e)),
                            Decoded::Bad(bad) => *stats.bad.entry(bad.class).or_default() += 1,
                            // Only the runtime's expansion routing makes these.
                            Decoded::Skip | Decoded::Forward { .. } => {}
                            Decoded::Retry(message) | Decoded::Stop(message) => {
                                return Err(SourceError::Decode {
                                    topic: m.topic().to_string(),
                                    partition: m.partition(),
                                    offset: m.offset(),
                                    message,
                                })
                            }
                        }
                    }
                    input.position = input.position.max(m.offset() + 1);
                    moved = true;
                    drain_task(
                        inputs,
                        partitions,
                        m.partition(),
                        &mut merges,
                        topics,
                        preview,
                        &mut event_time,
                    );
                }
                Some(Err(e)) => {
                    tracing::warn!(error = %e, "preview reader error; the client retries");
                }
                None => {}
            }
            // Transaction markers move a read_committed reader without a message: ask the
            // client where it is (after a quiet poll, and now and then regardless).
            if quiet || last_report.elapsed() >= Duration::from_secs(1) {
                if advance_positions(consumer, topics, partitions, inputs) {
                    moved = true;
                }
                for p in 0..partitions as i32 {
                    drain_task(
                        inputs,
                        partitions,
                        p,
                        &mut merges,
                        topics,
                        preview,
                        &mut event_time,
                    );
                }
            }
            pause_and_resume(consumer, topics, inputs)?;
            if moved {
                last_move = Instant::now();
            } else if last_move.elapsed() > STALL {
                let behind = inputs
                    .iter()
                    .filter(|i| !i.at_end())
                    .map(|i| {
                        format!(
                            "{}[{}] at offset {} of {}",
                            topics[i.rank], i.partition, i.position, i.end
                        )
                    })
                    .collect();
                return Err(SourceError::Stalled {
                    seconds: STALL.as_secs(),
                    behind,
                });
            }
            if last_report.elapsed() >= Duration::from_secs(1) {
                last_report = Instant::now();
                progress(&Progress {
                    records: stats.records.iter().sum(),
                    expected: self.expected,
                    elapsed: self.started.elapsed(),
                    event_time,
                });
            }
        }
        stats.elapsed = self.started.elapsed();
        Ok(stats)
    }
}

/// The first offset of every input partition whose record time is at or after `time`
/// (`None`: no such record), in the order of the inputs (topic by rank, then partition).
fn offsets_for_time(
    consumer: &BaseConsumer,
    topics: &[String; 2],
    partitions: usize,
    time: TimestampMs,
) -> Result<Vec<Option<i64>>, SourceError> {
    let mut query = TopicPartitionList::new();
    for topic in topics {
        for p in 0..partitions as i32 {
            query
                .add_partition_offset(topic, p, Offset::Offset(time))
                .map_err(kafka("building the offsets-for-times request"))?;
        }
    }
    let found = consumer
        .offsets_for_times(query, Duration::from_secs(30))
        .map_err(kafka(format!(
            "finding the offsets of record time {}",
            crate::time::format_timestamp(time)
        )))?;
    let mut offsets = Vec::with_capacity(2 * partitions);
    for topic in topics {
        for p in 0..partitions as i32 {
            let e = found.find_partition(topic, p);
            if let Some(Err(err)) = e.as_ref().map(|e| e.error()) {
                return Err(SourceError::Kafka {
                    during: format!("finding the offset of record time in {topic}[{p}]"),
                    error: err,
                });
            }
            offsets.push(match e.map(|e| e.offset()) {
                Some(Offset::Offset(o)) => Some(o),
                _ => None,
            });
        }
    }
    Ok(offsets)
}

/// Hands task `p`'s records to the preview for as long as the merge can choose one.
fn drain_task(
    inputs: &mut [Input],
    partitions: usize,
    p: i32,
    merges: &mut [Merge],
    topics: &[String; 2],
    preview: &mut Preview,
    event_time: &mut Option<TimestampMs>,
) {
    let (a, b) = (p as usize, partitions + p as usize);
    loop {
        let states = [inputs[a].state(), inputs[b].state()];
        let i = match merges[p as usize].choose(&states, 0) {
            Next::Take(i) => [a, b][i],
            Next::Wait { .. } | Next::Idle => return,
        };
        let input = &mut inputs[i];
        let (offset, event) = input.buffer.pop_front().expect("the merge took a head");
        let source = InputCoordinates {
            topic: topics[input.rank].clone(),
            partition: p,
            offset,
        };
        *event_time = Some(event_time.map_or(event.occurred_at(), |t: TimestampMs| {
            t.max(event.occurred_at())
        }));
        preview.process(p as usize, &event, &source);
    }
}

/// Moves each input's position up to the client's; true if any moved.
fn advance_positions(
    consumer: &BaseConsumer,
    topics: &[String; 2],
    partitions: usize,
    inputs: &mut [Input],
) -> bool {
    let Ok(positions) = consumer.position() else {
        return false;
    };
    let mut moved = false;
    for e in positions.elements() {
        let (Some(rank), Offset::Offset(o)) =
            (topics.iter().position(|t| t == e.topic()), e.offset())
        else {
            continue;
        };
        let input = &mut inputs[rank * partitions + e.partition() as usize];
        // Only up to the end: what lies beyond is not read.
        let o = o.min(input.end);
        if o > input.position {
            input.position = o;
            moved = true;
        }
    }
    moved
}

/// Pauses a partition that is done or whose buffer is full, resumes one that has room.
fn pause_and_resume(
    consumer: &BaseConsumer,
    topics: &[String; 2],
    inputs: &mut [Input],
) -> Result<(), SourceError> {
    let mut pause = TopicPartitionList::new();
    let mut resume = TopicPartitionList::new();
    for input in inputs.iter_mut() {
        let stop = input.at_end() || input.buffer.len() >= BUFFERED;
        if stop && !input.paused {
            pause.add_partition(&topics[input.rank], input.partition);
            input.paused = true;
        } else if !stop && input.paused && input.buffer.len() <= BUFFERED / 2 {
            resume.add_partition(&topics[input.rank], input.partition);
            input.paused = false;
        }
    }
    if pause.count() > 0 {
        consumer
            .pause(&pause)
            .map_err(kafka("pausing input partitions"))?;
    }
    if resume.count() > 0 {
        consumer
            .resume(&resume)
            .map_err(kafka("resuming input partitions"))?;
    }
    Ok(())
}
