//! Restoring a task from its changelog partition.
//!
//! Invariant: a task is restored only on proof that the reader's position reached the high
//! watermark captured when the restore started. The reader is `read_committed`, so an open
//! transaction of a predecessor holds the position below the high watermark until that
//! transaction is committed or aborted (by its producer, by fencing, or by the transaction
//! timeout): we wait — logging progress — rather than take "no more data for now" for "done".
//! A timeout is never success; only shutdown ends the wait early, as an error.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use thiserror::Error;
use tracing::info;

use super::codecs::Codecs;
use super::kafka::high_watermark;
use crate::engine::Engine;
use crate::model::{TaskStateRecord, UserState};

#[derive(Debug, Error)]
pub enum RestoreError {
    #[error("restoring {topic}[{partition}]: kafka: {source}")]
    Kafka {
        topic: String,
        partition: i32,
        source: KafkaError,
    },
    #[error("restoring {topic}[{partition}] at offset {offset}: {message}")]
    Record {
        topic: String,
        partition: i32,
        offset: i64,
        message: String,
    },
    #[error(
        "restoring {topic}[{partition}]: interrupted by shutdown at offset {position} of {high}"
    )]
    Interrupted {
        topic: String,
        partition: i32,
        position: i64,
        high: i64,
    },
}

/// What a restore read.
#[derive(Debug, Clone, Copy, Default)]
pub struct Restored {
    pub records: u64,
    pub high_watermark: i64,
    pub elapsed: Duration,
}

/// Replays `topic[partition]` from the beginning into `engine`.
pub fn restore_partition(
    reader: &BaseConsumer,
    topic: &str,
    partition: i32,
    codecs: &Codecs,
    engine: &mut Engine,
    log_interval: Duration,
    shutdown: &AtomicBool,
) -> Result<Restored, RestoreError> {
    let kafka = |source| RestoreError::Kafka {
        topic: topic.into(),
        partition,
        source,
    };
    let started = Instant::now();
    let high = high_watermark(reader, topic, partition).map_err(kafka)?;
    let mut tpl = TopicPartitionList::new();
    tpl.add_partition_offset(topic, partition, Offset::Beginning)
        .map_err(kafka)?;
    reader.assign(&tpl).map_err(kafka)?;
    let mut records = 0u64;
    let mut position = 0i64;
    let mut last_log = Instant::now();
    while position < high {
        if shutdown.load(Ordering::Relaxed) {
            return Err(RestoreError::Interrupted {
                topic: topic.into(),
                partition,
                position,
                high,
            });
        }
        match reader.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                position = m.offset() + 1;
                records += 1;
                let record = decode(codecs, m.key(), m.payload()).map_err(|message| {
                    RestoreError::Record {
                        topic: topic.into(),
                        partition,
                        offset: m.offset(),
                        message,
                    }
                })?;
                if let Some(record) = record {
                    engine.restore(&record).map_err(|e| RestoreError::Record {
                        topic: topic.into(),
                        partition,
                        offset: m.offset(),
                        message: e.to_string(),
                    })?;
                }
            }
            Some(Err(KafkaError::PartitionEOF(_))) | None => {
                // Control records (transaction markers) advance the position without a
                // message: ask the client where it is.
                if let Ok(p) = reader.position() {
                    if let Some(Offset::Offset(o)) =
                        p.find_partition(topic, partition).map(|e| e.offset())
                    {
                        position = position.max(o);
                    }
                }
            }
            Some(Err(e)) => return Err(kafka(e)),
        }
        if last_log.elapsed() >= log_interval {
            info!(topic, partition, position, high, records, "restoring");
            last_log = Instant::now();
        }
    }
    reader.unassign().map_err(kafka)?;
    Ok(Restored {
        records,
        high_watermark: high,
        elapsed: started.elapsed(),
    })
}

/// A changelog record into what the engine restores. A tombstone of a user key is that
/// user's empty state; tombstones of other keys restore nothing.
fn decode(
    codecs: &Codecs,
    key: Option<&[u8]>,
    payload: Option<&[u8]>,
) -> Result<Option<TaskStateRecord>, String> {
    let key = key
        .map(|k| String::from_utf8_lossy(k).into_owned())
        .ok_or("changelog record without a key")?;
    match payload {
        Some(bytes) => codecs
            .changelog
            .decode(bytes)
            .map(Some)
            .map_err(|e| e.to_string()),
        None => Ok(key.strip_prefix("u/").map(|user_id| TaskStateRecord {
            user: Some(UserState {
                user_id: user_id.to_string(),
                pending: vec![],
                receipts: vec![],
            }),
            rule: None,
            progress: None,
        })),
    }
}
