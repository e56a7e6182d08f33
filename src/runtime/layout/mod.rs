//! The layout topic: where `partitions expand` writes the layout of an expansion, and how
//! instances and commands read it (design: `docs/partition-expansion.md`).
//!
//! ```text
//!   partitions expand ──write_layout──► <changelog>-layout [0]  (compacted, key "layout")
//!                                              │
//!                     read_layout ◄────────────┤  once, to the high watermark (checks, commands)
//!                     LayoutFeed  ◄────────────┘  followed, non-blocking (running instances)
//! ```
//!
//! The topic has one partition and one key, so the newest record is the layout. Epochs only
//! grow (a hand-off marker names its epoch); a record that breaks that, a tombstone, or a
//! value that is not a layout is refused by [`read_layout`] and skipped by [`LayoutFeed`].
//!
//! It also classifies the partition counts of the co-partitioned topics against a layout
//! ([`topics_state`]): the states `partitions expand` passes through, and nothing else.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use tracing::{debug, info, warn};

use super::config::Settings;
use super::error::RuntimeError;
use super::kafka::{
    advance_positions, base_config, high_watermark, metadata_consumer, standalone_consumer,
    TopicError,
};
use crate::expansion::{layout_topic, Layout, LAYOUT_KEY};

mod rules;

pub use rules::{topics_state, CoPartitionCounts, TopicCount, TopicsState};
use rules::{LayoutLog, Read};

/// The layout topic's only partition.
const PARTITION: i32 = 0;
/// How long reading the layout topic may make no progress before it is given up.
const READ_STALL: Duration = Duration::from_secs(30);
/// How often [`LayoutFeed`] looks for a layout topic that does not exist yet.
const WATCH_INTERVAL: Duration = Duration::from_secs(1);
/// Records [`LayoutFeed::poll`] reads at most per call (the topic holds a handful).
const POLL_BATCH: usize = 100;
const METADATA_TIMEOUT: Duration = Duration::from_secs(10);

/// Reads the layout topic from its beginning to the high watermark: the newest layout, or
/// `None` when the topic does not exist or holds none. An invalid record is an error that
/// names the topic, partition and offset.
pub fn read_layout(settings: &Settings) -> Result<Option<Layout>, RuntimeError> {
    Ok(read_layout_topic(settings)?)
}

/// [`read_layout`] with the topics' error type (for the co-partitioning check).
pub(crate) fn read_layout_topic(settings: &Settings) -> Result<Option<Layout>, TopicError> {
    let topic = layout_topic(&settings.topics.changelog);
    // The group-less client first: a deployment that never expanded (no layout topic, or
    // an empty one) needs no reader.
    let metadata = metadata_consumer(settings)?;
    if !topic_exists(&metadata, &topic)? {
        return Ok(None);
    }
    let high = high_watermark(&metadata, &topic, PARTITION)?;
    if high == 0 {
        return Ok(None);
    }
    drop(metadata);
    let consumer = standalone_consumer(settings, "layout")?;
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(&topic, PARTITION, Offset::Beginning)?;
    consumer.assign(&tpl)?;
    let mut log = LayoutLog::default();
    let mut position = [0i64];
    let mut progress = Instant::now();
    while position[0] < high {
        let before = position[0];
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                position[0] = m.offset() + 1;
                let read =
                    log.apply(m.key(), m.payload())
                        .map_err(|reason| TopicError::BadLayout {
                            topic: topic.clone(),
                            partition: PARTITION,
                            offset: m.offset(),
                            reason,
                        })?;
                if let Read::OtherKey(key) = read {
                    warn!(
                        topic,
                        offset = m.offset(),
                        key,
                        "layout topic: record of another key skipped"
                    );
                }
            }
            // Transaction markers and compacted gaps move the position without a message.
            Some(Err(KafkaError::PartitionEOF(_))) | None => {
                advance_positions(&consumer, &mut position)
            }
            Some(Err(e)) => debug!(topic, error = %e, "layout reader error; the client retries"),
        }
        if position[0] > before {
            progress = Instant::now();
        } else if progress.elapsed() > READ_STALL {
            return Err(TopicError::LayoutRead {
                topic,
                message: format!(
                    "position {} has not reached the high watermark {high} after {} s without progress",
                    position[0],
                    READ_STALL.as_secs()
                ),
            });
        }
    }
    Ok(log.current)
}

/// Whether `topic` exists. A topic the broker does not know is missing; any other error of
/// the topic (no leader right after creation) is an error, not "no layout".
fn topic_exists(
    consumer: &BaseConsumer<impl rdkafka::consumer::ConsumerContext>,
    topic: &str,
) -> Result<bool, TopicError> {
    let metadata = consumer.fetch_metadata(None, METADATA_TIMEOUT)?;
    let Some(m) = metadata.topics().iter().find(|m| m.name() == topic) else {
        return Ok(false);
    };
    match m.error().map(RDKafkaErrorCode::from) {
        None => Ok(!m.partitions().is_empty()),
        Some(RDKafkaErrorCode::UnknownTopicOrPartition) => Ok(false),
        Some(code) => Err(TopicError::LayoutRead {
            topic: topic.into(),
            message: format!("metadata of the topic: {code}"),
        }),
    }
}

/// Follows the layout topic in a running instance: [`LayoutFeed::poll`] never blocks.
///
/// A deployment that never expanded has no layout topic; the feed then looks for it every
/// few seconds (on a thread of its own: a metadata request blocks) and assigns it once it
/// exists, from the beginning, so the first layout ever written is read.
pub struct LayoutFeed {
    consumer: BaseConsumer,
    topic: String,
    log: LayoutLog,
    /// A layout newer than the one last returned was read.
    fresh: bool,
    /// While the topic does not exist: the thread that looks for it.
    watch: Option<TopicWatch>,
    assigned: bool,
}

impl LayoutFeed {
    /// Assigns partition 0 of the layout topic from the beginning, or starts looking for the
    /// topic when it does not exist yet.
    pub fn start(settings: &Settings) -> Result<Self, RuntimeError> {
        let topic = layout_topic(&settings.topics.changelog);
        let consumer = standalone_consumer(settings, "layout")?;
        let mut feed = Self {
            consumer,
            topic,
            log: LayoutLog::default(),
            fresh: false,
            watch: None,
            assigned: false,
        };
        match topic_exists(&feed.consumer, &feed.topic) {
            Ok(true) => {
                feed.assign()?;
                feed.assigned = true;
            }
            Ok(false) => feed.watch = Some(TopicWatch::start(settings.clone(), &feed.topic)?),
            Err(e) => {
                warn!(topic = feed.topic, error = %e, "cannot tell whether the layout topic exists; looking again");
                feed.watch = Some(TopicWatch::start(settings.clone(), &feed.topic)?);
            }
        }
        Ok(feed)
    }

    fn assign(&self) -> Result<(), RuntimeError> {
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(&self.topic, PARTITION, Offset::Beginning)
            .map_err(RuntimeError::kafka("assigning the layout topic"))?;
        self.consumer
            .assign(&tpl)
            .map_err(RuntimeError::kafka("assigning the layout topic"))?;
        info!(topic = self.topic, "following the layout topic");
        Ok(())
    }

    /// The newest layout, when one was read since the last call that differs from the one
    /// returned then (the first call after start returns the layout already written, if
    /// any). Reads at most a small batch, without waiting. A bad record is logged and
    /// skipped: the layout in force stays.
    pub fn poll(&mut self) -> Option<Layout> {
        if !self.assigned {
            if let Some(watch) = &self.watch {
                if !watch.found() {
                    return None;
                }
                self.watch = None;
            }
            if let Err(e) = self.assign() {
                warn!(topic = self.topic, error = %e, "assigning the layout topic failed; trying again");
                return None;
            }
            self.assigned = true;
        }
        for _ in 0..POLL_BATCH {
            match self.consumer.poll(Duration::ZERO) {
                Some(Ok(m)) => match self.log.apply(m.key(), m.payload()) {
                    Ok(Read::New(layout)) => {
                        info!(
                            topic = self.topic,
                            offset = m.offset(),
                            epoch = layout.epoch,
                            from = layout.from,
                            to = layout.to,
                            cut_at = layout.cut_at,
                            "layout read"
                        );
                        self.fresh = true;
                    }
                    Ok(Read::Unchanged) => {}
                    Ok(Read::OtherKey(key)) => {
                        warn!(
                            topic = self.topic,
                            offset = m.offset(),
                            key,
                            "layout topic: record of another key skipped"
                        )
                    }
                    Err(reason) => {
                        warn!(
                            topic = self.topic,
                            partition = PARTITION,
                            offset = m.offset(),
                            reason,
                            "bad layout record skipped"
                        )
                    }
                },
                Some(Err(KafkaError::PartitionEOF(_))) | None => break,
                Some(Err(e)) => {
                    debug!(topic = self.topic, error = %e, "layout reader error; the client retries")
                }
            }
        }
        if !self.fresh {
            return None;
        }
        self.fresh = false;
        self.log.current
    }
}

/// A thread that looks for a topic every few seconds and says when it exists. Dropping it
/// tells the thread to stop.
struct TopicWatch {
    found: Receiver<()>,
    stop: Arc<AtomicBool>,
}

impl TopicWatch {
    fn start(settings: Settings, topic: &str) -> Result<Self, RuntimeError> {
        let (tx, rx) = mpsc::channel();
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let topic = topic.to_string();
        std::thread::Builder::new()
            .name("layout-watch".into())
            .spawn(move || {
                let mut consumer = None;
                while !stopped.load(Ordering::Relaxed) {
                    if consumer.is_none() {
                        consumer = standalone_consumer(&settings, "layout")
                            .map_err(
                                |e| warn!(topic, error = %e, "creating the layout topic watcher"),
                            )
                            .ok();
                    }
                    match consumer.as_ref().map(|c| topic_exists(c, &topic)) {
                        Some(Ok(true)) => {
                            let _ = tx.send(());
                            return;
                        }
                        Some(Err(e)) => debug!(topic, error = %e, "looking for the layout topic"),
                        Some(Ok(false)) | None => {}
                    }
                    let slept = Instant::now();
                    while slept.elapsed() < WATCH_INTERVAL && !stopped.load(Ordering::Relaxed) {
                        std::thread::sleep(Duration::from_millis(100));
                    }
                }
            })
            .map_err(|e| {
                RuntimeError::Setup(format!(
                    "starting the thread that looks for the layout topic: {e}"
                ))
            })?;
        Ok(Self { found: rx, stop })
    }

    /// Whether the topic exists now (the thread then has ended).
    fn found(&self) -> bool {
        self.found.try_recv().is_ok()
    }
}

impl Drop for TopicWatch {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Writes `layout` to the layout topic (created when missing: one partition, compacted)
/// and waits until the broker has it. Returns the record's offset.
pub fn write_layout(settings: &Settings, layout: &Layout) -> Result<i64, RuntimeError> {
    let topic = layout_topic(&settings.topics.changelog);
    let bytes = layout.to_json();
    // A layout the readers would refuse is never written.
    Layout::from_json(&bytes)
        .map_err(|e| RuntimeError::Setup(format!("not writing layout to {topic}: {e}")))?;
    create_layout_topic(settings, &topic)?;
    let producer: BaseProducer<Delivery> = base_config(settings)
        .set("enable.idempotence", "true")
        .create_with_context(Delivery::default())
        .map_err(RuntimeError::kafka("creating the layout producer"))?;
    producer
        .send(
            BaseRecord::to(&topic)
                .partition(PARTITION)
                .key(LAYOUT_KEY)
                .payload(&bytes),
        )
        .map_err(|(e, _)| RuntimeError::Kafka {
            during: "writing the layout",
            source: e,
        })?;
    producer
        .flush(Duration::from_secs(30))
        .map_err(RuntimeError::kafka("writing the layout"))?;
    let delivered = producer
        .context()
        .result
        .lock()
        .ok()
        .and_then(|mut r| r.take());
    match delivered {
        Some(Ok(offset)) => {
            info!(
                topic,
                offset,
                epoch = layout.epoch,
                from = layout.from,
                to = layout.to,
                "layout written"
            );
            Ok(offset)
        }
        Some(Err(e)) => Err(RuntimeError::Kafka {
            during: "writing the layout",
            source: e,
        }),
        None => Err(RuntimeError::Setup(format!(
            "writing the layout to {topic}: no delivery report after the flush"
        ))),
    }
}

/// The delivery report of the one record a layout producer sends.
#[derive(Default)]
struct Delivery {
    result: Mutex<Option<Result<i64, KafkaError>>>,
}

impl ClientContext for Delivery {}

impl ProducerContext for Delivery {
    type DeliveryOpaque = ();

    fn delivery(&self, report: &DeliveryResult<'_>, _: ()) {
        if let Ok(mut r) = self.result.lock() {
            *r = Some(match report {
                Ok(m) => Ok(m.offset()),
                Err((e, _)) => Err(e.clone()),
            });
        }
    }
}

/// Creates the layout topic when it does not exist: one partition (one key, read whole by
/// every instance), compacted (the newest layout is all that matters), replicated like the
/// topics `topics create` makes.
fn create_layout_topic(settings: &Settings, topic: &str) -> Result<(), RuntimeError> {
    let admin: AdminClient<DefaultClientContext> = base_config(settings)
        .create()
        .map_err(RuntimeError::kafka("creating the admin client"))?;
    let new = NewTopic::new(
        topic,
        1,
        TopicReplication::Fixed(settings.replication_factor),
    )
    .set("cleanup.policy", "compact");
    let options = AdminOptions::new().operation_timeout(Some(METADATA_TIMEOUT));
    let results = futures_executor::block_on(admin.create_topics([&new], &options))
        .map_err(RuntimeError::kafka("creating the layout topic"))?;
    for r in results {
        match r {
            Ok(name) => info!(topic = name, "layout topic created"),
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => {
                return Err(TopicError::Create {
                    topic,
                    message: code.to_string(),
                }
                .into())
            }
        }
    }
    Ok(())
}
