//! Kafka clients and topics: the one place that knows librdkafka property names.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, KafkaResult, RDKafkaErrorCode};
use rdkafka::producer::{BaseProducer, Producer, ProducerContext};
use thiserror::Error;

use super::config::Settings;
use super::layout::{topics_state, CoPartitionCounts, TopicCount, TopicsState};
use crate::expansion::{layout_topic, Layout};

const METADATA_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, Error)]
pub enum TopicError {
    #[error("kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error("topic {topic} does not exist (create it with `campaign-connector topics create`)")]
    Missing { topic: String },
    #[error(
        "input topics are not co-partitioned: {first} has {first_count} partitions but {second} has {second_count}; \
         every input topic and the changelog need the same partition count"
    )]
    NotCoPartitioned {
        first: String,
        first_count: usize,
        second: String,
        second_count: usize,
    },
    #[error(
        "topics are not co-partitioned for the expansion in layout topic {layout_topic} \
         (epoch {epoch}: {from} → {to} partitions): {counts}; {reason}. Only `partitions expand` \
         grows these topics (the changelog first, then the inputs); if it was interrupted, run \
         it again with `--to {to}`"
    )]
    NotInLayout {
        layout_topic: String,
        epoch: u32,
        from: u32,
        to: u32,
        /// Every co-partitioned topic with its count.
        counts: String,
        reason: String,
    },
    #[error("layout topic {topic}[{partition}] at offset {offset}: {reason}")]
    BadLayout {
        topic: String,
        partition: i32,
        offset: i64,
        reason: String,
    },
    #[error("reading layout topic {topic}: {message}")]
    LayoutRead { topic: String, message: String },
    #[error("cannot connect to Kafka at {bootstrap}: {reason}")]
    Connect { bootstrap: String, reason: String },
    #[error("creating topic {topic}: {message}")]
    Create { topic: String, message: String },
}

/// The base client configuration: bootstrap servers and the pass-through properties.
pub fn base_config(settings: &Settings) -> ClientConfig {
    let mut c = ClientConfig::new();
    c.set("bootstrap.servers", &settings.bootstrap_servers);
    for (k, v) in &settings.kafka {
        c.set(k, v);
    }
    c
}

/// A consumer outside any group (catalog and restore readers assign partitions by hand).
/// `read_committed`: only data of committed transactions is state.
pub fn standalone_consumer(settings: &Settings, purpose: &str) -> Result<BaseConsumer, TopicError> {
    let mut c = base_config(settings);
    c.set("group.id", format!("{}-{purpose}", settings.application_id))
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("isolation.level", "read_committed")
        .set("auto.offset.reset", "earliest");
    // librdkafka's 1 s default delays the next fetch of a partition whose queue is not
    // empty: a restore would read in bursts a second apart.
    if c.get("fetch.queue.backoff.ms").is_none() {
        c.set("fetch.queue.backoff.ms", "10");
    }
    // A changelog partition added while a long-poll fetch for others is in flight joins
    // the next fetch only: with the default 500 ms wait every restore took half a second
    // before its first record. The restore reader holds partitions only while restoring.
    if purpose == "restore" && c.get("fetch.wait.max.ms").is_none() {
        c.set("fetch.wait.max.ms", "20");
    }
    // Side feeds are partitions an expansion just added: a client that assigned one
    // before its metadata showed it fetches nothing until its next refresh (5 minutes by
    // default).
    if purpose == "feeds" {
        c.set("topic.metadata.refresh.interval.ms", "1000");
    }
    Ok(c.create()?)
}

/// A client for high watermarks that count every record written, committed or not
/// (`read_uncommitted`; librdkafka's default level is `read_committed`, whose answer is the
/// last stable offset). No `group.id`, as [`metadata_consumer`].
pub fn uncommitted_watermarks_consumer(settings: &Settings) -> Result<BaseConsumer, TopicError> {
    Ok(base_config(settings)
        .set("isolation.level", "read_uncommitted")
        .create()?)
}

/// A client for metadata and watermark reads only. Without a `group.id` (which assigning
/// partitions needs, and these never do) the client opens no connection to a group
/// coordinator: dropped right after its reads, a client that had one still authenticating
/// logged a SASL handshake failure.
pub fn metadata_consumer(settings: &Settings) -> Result<BaseConsumer, TopicError> {
    Ok(base_config(settings).create()?)
}

/// Remembers the first error librdkafka reports that explains a failed connection.
#[derive(Default)]
pub struct ConnectionErrors {
    first: std::sync::Mutex<Option<String>>,
}

impl rdkafka::ClientContext for ConnectionErrors {
    fn error(&self, error: rdkafka::error::KafkaError, reason: &str) {
        tracing::warn!(%error, reason, "kafka client error");
        let explains = matches!(
            error.rdkafka_error_code(),
            Some(
                RDKafkaErrorCode::Authentication
                    | RDKafkaErrorCode::SSL
                    | RDKafkaErrorCode::AllBrokersDown
                    | RDKafkaErrorCode::BrokerTransportFailure
                    | RDKafkaErrorCode::Resolve
            )
        );
        if let Ok(mut first) = self.first.lock() {
            if explains && first.is_none() {
                *first = Some(format!("{error} ({reason})"));
            }
        }
    }
}

impl rdkafka::consumer::ConsumerContext for ConnectionErrors {}

/// Connects once and, when that fails, says why: authentication, TLS, unreachable brokers.
/// (librdkafka reports those as events on the client's main queue, which plain requests do
/// not read; polling drains them.)
pub fn check_connection(settings: &Settings) -> Result<(), TopicError> {
    // No `group.id`, as in `metadata_consumer`.
    let consumer: BaseConsumer<ConnectionErrors> =
        base_config(settings).create_with_context(ConnectionErrors::default())?;
    let failed = match consumer.fetch_metadata(None, METADATA_TIMEOUT) {
        Ok(_) => return Ok(()),
        Err(e) => e,
    };
    for _ in 0..30 {
        let _ = consumer.poll(Duration::from_millis(100));
        if consumer
            .context()
            .first
            .lock()
            .map(|f| f.is_some())
            .unwrap_or(false)
        {
            break;
        }
    }
    let reason = consumer
        .context()
        .first
        .lock()
        .ok()
        .and_then(|f| f.clone())
        .unwrap_or_else(|| failed.to_string());
    Err(TopicError::Connect {
        bootstrap: settings.bootstrap_servers.clone(),
        reason,
    })
}

/// The high watermark of a partition. Errors right after a topic was created or a leader
/// moved (no leader yet) are retried for up to 30 s; anything else fails at once.
pub fn high_watermark(
    consumer: &BaseConsumer<impl rdkafka::consumer::ConsumerContext>,
    topic: &str,
    partition: i32,
) -> Result<i64, rdkafka::error::KafkaError> {
    let started = std::time::Instant::now();
    loop {
        match consumer.fetch_watermarks(topic, partition, METADATA_TIMEOUT) {
            Ok((_, high)) => return Ok(high),
            Err(e) if started.elapsed() < Duration::from_secs(30) && is_transient(&e) => {
                std::thread::sleep(Duration::from_millis(200));
            }
            Err(e) => return Err(e),
        }
    }
}

fn is_transient(e: &rdkafka::error::KafkaError) -> bool {
    matches!(
        e.rdkafka_error_code(),
        Some(
            RDKafkaErrorCode::NotLeaderForPartition
                | RDKafkaErrorCode::LeaderNotAvailable
                | RDKafkaErrorCode::UnknownTopicOrPartition
                | RDKafkaErrorCode::RequestTimedOut
                | RDKafkaErrorCode::OperationTimedOut
                | RDKafkaErrorCode::BrokerTransportFailure
        )
    )
}

/// Waits until every partition of `topics` has a leader (after creating them).
fn wait_for_leaders(settings: &Settings, topics: &[&str]) -> Result<(), TopicError> {
    let consumer = metadata_consumer(settings)?;
    let started = std::time::Instant::now();
    loop {
        let metadata = consumer.fetch_metadata(None, METADATA_TIMEOUT)?;
        let ready = topics.iter().all(|t| {
            metadata.topics().iter().any(|m| {
                m.name() == *t
                    && m.error().is_none()
                    && !m.partitions().is_empty()
                    && m.partitions()
                        .iter()
                        .all(|p| p.leader() >= 0 && p.error().is_none())
            })
        });
        if ready {
            return Ok(());
        }
        if started.elapsed() > Duration::from_secs(30) {
            return Err(TopicError::Create {
                topic: topics.join(", "),
                message: "partitions have no leader after 30 s".into(),
            });
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Waits until every record `producer` holds is delivered (or has failed), and returns as
/// soon as that is so, or fails with a timeout at `timeout`.
///
/// The commit path uses it instead of the client's `flush`: that one
/// polls in slices of 100 ms, each run to its end, so a flush that finds a single record in
/// flight lasts at least 100 ms. Every transaction paid that in `commit_transaction` (which
/// flushes first): measured on one local broker, the call took 101–106 ms, of which the
/// broker's `EndTxn` answer took 2–5 ms. Here librdkafka's own flush waits, which sends
/// what lingers at once and wakes up when the last record is acknowledged. That needs the
/// records to be released on acknowledgement: the producer must be configured with
/// `delivery.report.only.error=true` (see [`PRODUCER_DEFAULTS`]); a failed record's
/// report is served between slices.
pub fn flush_promptly<C: ProducerContext>(
    producer: &BaseProducer<C>,
    timeout: Duration,
) -> KafkaResult<()> {
    const SLICE: Duration = Duration::from_millis(10);
    let deadline = Instant::now() + timeout;
    loop {
        let slice = deadline
            .saturating_duration_since(Instant::now())
            .min(SLICE);
        // SAFETY: the handle is valid while `producer` lives, and rd_kafka_flush may be
        // called from any thread.
        let code = unsafe {
            rdkafka_sys::rd_kafka_flush(producer.client().native_ptr(), slice.as_millis() as i32)
        };
        match code {
            rdkafka_sys::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR => return Ok(()),
            rdkafka_sys::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR__TIMED_OUT => {
                // Reports of failed records hold the count up until they are served.
                producer.poll(Duration::ZERO);
                if Instant::now() >= deadline {
                    return Err(KafkaError::Flush(RDKafkaErrorCode::OperationTimedOut));
                }
            }
            other => return Err(KafkaError::Flush(other.into())),
        }
    }
}

/// Producer properties the connector's output producer (and the benchmark's bare copy)
/// uses unless the pass-through sets them: a 50 ms linger; delivery reports only for
/// failed records (nothing reads the others; each report is an event to allocate, queue and
/// serve, and [`flush_promptly`] relies on acknowledged records being released without one);
/// and LZ4-compressed batches (the brokers store, copy and serve fewer bytes, at little
/// cost to the client; `docs/runtime.md`, "Processing").
pub const PRODUCER_DEFAULTS: [(&str, &str); 3] = [
    ("linger.ms", "50"),
    ("delivery.report.only.error", "true"),
    ("compression.type", "lz4"),
];

/// The high watermark the client last saw for a partition, without asking the broker:
/// librdkafka keeps it from fetch responses (for a `read_committed` consumer it is the last
/// stable offset). `None` while unknown.
pub fn cached_high_watermark<C: rdkafka::consumer::ConsumerContext>(
    consumer: &BaseConsumer<C>,
    topic: &std::ffi::CStr,
    partition: i32,
) -> Option<i64> {
    let (mut low, mut high) = (-1i64, -1i64);
    // SAFETY: the client pointer is valid for the consumer's lifetime; the call only reads
    // librdkafka's cached partition state into the two out-parameters.
    let err = unsafe {
        rdkafka_sys::rd_kafka_get_watermark_offsets(
            consumer.client().native_ptr(),
            topic.as_ptr(),
            partition,
            &mut low,
            &mut high,
        )
    };
    (err == rdkafka_sys::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR && high >= 0)
        .then_some(high)
}

/// Moves `position[p]` up to where the consumer is for each assigned partition. Transaction
/// markers advance a `read_committed` reader without delivering a message, so reading "to
/// the high watermark" must ask the client, not count messages.
pub fn advance_positions<C: rdkafka::consumer::ConsumerContext>(
    consumer: &BaseConsumer<C>,
    position: &mut [i64],
) {
    if let Ok(tpl) = consumer.position() {
        for e in tpl.elements() {
            if let (rdkafka::Offset::Offset(o), Some(known)) =
                (e.offset(), position.get_mut(e.partition() as usize))
            {
                *known = (*known).max(o);
            }
        }
    }
}

/// Partition count of each topic (`None`: missing).
pub fn partition_counts(
    consumer: &BaseConsumer<impl rdkafka::consumer::ConsumerContext>,
    topics: &[&str],
) -> Result<BTreeMap<String, Option<usize>>, TopicError> {
    let metadata = consumer.fetch_metadata(None, METADATA_TIMEOUT)?;
    Ok(topics
        .iter()
        .map(|t| {
            let count = metadata
                .topics()
                .iter()
                .find(|m| m.name() == *t && m.error().is_none())
                .map(|m| m.partitions().len())
                .filter(|n| *n > 0);
            (t.to_string(), count)
        })
        .collect())
}

/// Checks that the inputs and the changelog exist and are co-partitioned; returns the
/// partition count a user's task is found with now. (Same count is what can be checked;
/// producers must also use the same partitioner for the same key, e.g. the Java client's
/// murmur2 default.) During an expansion (a layout exists, see [`co_partitioned_count`])
/// that is the layout's new count.
pub fn check_co_partitioning(settings: &Settings) -> Result<usize, TopicError> {
    check_connection(settings)?;
    let consumer = metadata_consumer(settings)?;
    let t = &settings.topics;
    let counts = co_partition_counts(&consumer, settings)?;
    let layout = super::layout::read_layout_topic(settings)?;
    let partitions = co_partitioned_count(&counts, layout.as_ref(), &layout_topic(&t.changelog))?;
    for name in [
        t.campaigns.as_str(),
        t.send_commands.as_str(),
        t.dlq.as_str(),
    ]
    .into_iter()
    .chain(settings.decisions_topic())
    {
        if partition_counts(&consumer, &[name])?[name].is_none() {
            return Err(TopicError::Missing { topic: name.into() });
        }
    }
    // Only shadow follow-ons write there, and publishing one needs the topic (see
    // `shadow_topic_exists`): a deployment that never uses shadow mode need not have it.
    if !shadow_topic_exists(settings)? {
        tracing::warn!(
            topic = t.shadow.as_str(),
            "the shadow topic does not exist: shadow follow-ons cannot be published until it is created (`topics create`)"
        );
    }
    Ok(partitions)
}

/// The partition count a user's task is found with now, from the counts of the inputs and
/// the changelog and the layout (`None`: no expansion was ever made). Without a layout the
/// three must be equal. With one (`from → to`), exactly the states `partitions expand`
/// passes through are accepted — each topic at `from` or `to`, the changelog grown before
/// the inputs — and the count is `to`. Anything else is refused with the topics, their
/// counts and the layout.
pub fn co_partitioned_count(
    counts: &CoPartitionCounts,
    layout: Option<&Layout>,
    layout_topic: &str,
) -> Result<usize, TopicError> {
    Ok(match topics_state(counts, layout, layout_topic)? {
        TopicsState::Settled(n) => n as usize,
        TopicsState::Expanding(l) => l.to as usize,
    })
}

/// Whether the shadow topic exists.
pub fn shadow_topic_exists(settings: &Settings) -> Result<bool, TopicError> {
    let consumer = metadata_consumer(settings)?;
    let name = settings.topics.shadow.as_str();
    Ok(partition_counts(&consumer, &[name])?[name].is_some())
}

/// The partition counts of the inputs and the changelog; a missing topic is an error.
pub fn co_partition_counts(
    consumer: &BaseConsumer,
    settings: &Settings,
) -> Result<CoPartitionCounts, TopicError> {
    let t = &settings.topics;
    let names = [
        t.interactions.as_str(),
        t.user_events.as_str(),
        t.changelog.as_str(),
    ];
    let found = partition_counts(consumer, &names)?;
    let count = |name: &str| -> Result<TopicCount, TopicError> {
        let partitions = found[name].ok_or_else(|| TopicError::Missing { topic: name.into() })?;
        Ok(TopicCount {
            topic: name.into(),
            partitions: u32::try_from(partitions).unwrap_or(u32::MAX),
        })
    };
    Ok(CoPartitionCounts {
        interactions: count(names[0])?,
        user_events: count(names[1])?,
        changelog: count(names[2])?,
    })
}

/// Creates every topic the connector uses (existing ones are left alone): the inputs and
/// the changelog with `partitions`, the catalog and changelog compacted.
pub fn create_topics(settings: &Settings) -> Result<Vec<String>, TopicError> {
    check_connection(settings)?;
    let admin: AdminClient<DefaultClientContext> = base_config(settings).create()?;
    let t = &settings.topics;
    let p = settings.partitions;
    // Created up front, so that every instance follows it from its start and reads a
    // layout the moment `partitions expand` writes it.
    let layout = crate::expansion::layout_topic(&t.changelog);
    let mut specs: Vec<(&str, i32, bool)> = vec![
        (&t.interactions, p, false),
        (&t.user_events, p, false),
        (&t.changelog, p, true),
        (&layout, 1, true),
        (&t.campaigns, 1, true),
        (&t.send_commands, p, false),
        (&t.dlq, 1, false),
        // As many partitions as send-commands: a shadow follow-on's output is as large as
        // the live one's would be.
        (&t.shadow, p, false),
    ];
    if let Some(d) = settings.decisions_topic() {
        specs.push((d, p, false));
    }
    let new: Vec<NewTopic> = specs
        .iter()
        .map(|(name, partitions, compact)| {
            let topic = NewTopic::new(
                name,
                *partitions,
                TopicReplication::Fixed(settings.replication_factor),
            );
            if *compact {
                topic.set("cleanup.policy", "compact")
            } else {
                topic
            }
        })
        .collect();
    let options = AdminOptions::new().operation_timeout(Some(METADATA_TIMEOUT));
    let results = futures_executor::block_on(admin.create_topics(new.iter(), &options))?;
    let mut created = Vec::new();
    for r in results {
        match r {
            Ok(name) => created.push(name),
            Err((_, RDKafkaErrorCode::TopicAlreadyExists)) => {}
            Err((topic, code)) => {
                return Err(TopicError::Create {
                    topic,
                    message: code.to_string(),
                })
            }
        }
    }
    let names: Vec<&str> = specs.iter().map(|(n, _, _)| *n).collect();
    wait_for_leaders(settings, &names)?;
    Ok(created)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flush_serves_failed_deliveries_and_returns_instead_of_waiting_out_its_bound() {
        // Nothing listens there: the record fails when its delivery timeout passes, and its
        // report holds the count up until it is served.
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", "127.0.0.1:9")
            .set("message.timeout.ms", "300");
        for (key, value) in PRODUCER_DEFAULTS {
            config.set(key, value);
        }
        let producer: BaseProducer = config.create().unwrap();
        producer
            .send(
                rdkafka::producer::BaseRecord::to("nowhere")
                    .key("k")
                    .payload("v"),
            )
            .unwrap();
        // The count holds the client's own requests too (a metadata request may be queued
        // at this moment): at least the record.
        assert!(producer.in_flight_count() >= 1);
        flush_promptly(&producer, Duration::from_secs(20)).unwrap();
        assert_eq!(producer.in_flight_count(), 0);
        // And a flush that cannot finish in time says so.
        let stuck: BaseProducer = ClientConfig::new()
            .set("bootstrap.servers", "127.0.0.1:9")
            .set("message.timeout.ms", "60000")
            .create()
            .unwrap();
        stuck
            .send(
                rdkafka::producer::BaseRecord::to("nowhere")
                    .key("k")
                    .payload("v"),
            )
            .unwrap();
        let err = flush_promptly(&stuck, Duration::from_millis(200)).unwrap_err();
        assert!(matches!(
            err,
            KafkaError::Flush(RDKafkaErrorCode::OperationTimedOut)
        ));
    }

    fn counts(interactions: u32, user_events: u32, changelog: u32) -> CoPartitionCounts {
        CoPartitionCounts::of(interactions, user_events, changelog)
    }

    #[test]
    fn without_a_layout_the_count_is_the_common_one_and_a_difference_is_named() {
        assert_eq!(
            co_partitioned_count(&counts(6, 6, 6), None, "l").unwrap(),
            6
        );
        let err = co_partitioned_count(&counts(3, 2, 3), None, "l")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("not co-partitioned")
                && err.contains("interactions has 3 partitions but user-events has 2"),
            "{err}"
        );
    }

    #[test]
    fn during_an_expansion_the_count_is_the_new_one() {
        let l = Layout {
            epoch: 2,
            from: 6,
            to: 9,
            cut_at: 2_000,
            created_at: 1_000,
        };
        for (i, u, c) in [(6, 6, 6), (6, 6, 9), (9, 6, 9), (6, 9, 9), (9, 9, 9)] {
            assert_eq!(
                co_partitioned_count(&counts(i, u, c), Some(&l), "l").unwrap(),
                9,
                "{i} {u} {c}"
            );
        }
        for (i, u, c) in [(9, 6, 6), (6, 9, 6), (8, 8, 8), (6, 6, 12), (12, 12, 12)] {
            let err = co_partitioned_count(&counts(i, u, c), Some(&l), "cl-layout")
                .unwrap_err()
                .to_string();
            assert!(
                err.contains("cl-layout (epoch 2: 6 → 9 partitions)")
                    && err.contains(&format!(
                        "interactions has {i}, user-events has {u}, changelog has {c}"
                    )),
                "{i} {u} {c}: {err}"
            );
        }
    }
}
