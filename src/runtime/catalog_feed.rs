//! The campaign catalog as a global table: every instance reads every partition of the
//! campaigns topic from the beginning before it is ready, then keeps following it.
//!
//! Loading is complete only when the position of every partition reached the high
//! watermark captured when loading started (the same proof the task restore uses).
//! Bad catalog records found while loading were dead-lettered when they were first read
//! live; they are logged and counted here, not dead-lettered again at every start.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use tracing::{debug, info, warn};

use super::codecs::Codecs;
use super::config::Settings;
use super::error::RuntimeError;
use super::kafka::{
    advance_positions, high_watermark, partition_counts, standalone_consumer, TopicError,
};
use super::task::BadInput;
use crate::codec::ErrorClass;
use crate::model::Campaign;
use crate::validate::{validate_campaign, Limits};

/// One change of the catalog.
#[derive(Debug)]
pub enum CatalogUpdate {
    Upsert(Box<Campaign>),
    Delete(String),
    Bad {
        partition: i32,
        offset: i64,
        key: Option<Vec<u8>>,
        payload: Option<Vec<u8>>,
        error: BadInput,
    },
    /// The record could not be decoded for a reason outside it (the schema registry did
    /// not answer): read it again later.
    Retry(String),
}

pub struct CatalogFeed {
    consumer: BaseConsumer,
    topic: String,
    partitions: usize,
    limits: Limits,
}

impl CatalogFeed {
    /// Assigns every partition of the campaigns topic from the beginning.
    pub fn start(settings: &Settings) -> Result<Self, TopicError> {
        let consumer = standalone_consumer(settings, "catalog")?;
        let topic = settings.topics.campaigns.clone();
        let partitions =
            partition_counts(&consumer, &[topic.as_str()])?[&topic].ok_or_else(|| {
                TopicError::Missing {
                    topic: topic.clone(),
                }
            })?;
        let mut tpl = TopicPartitionList::new();
        for p in 0..partitions as i32 {
            tpl.add_partition_offset(&topic, p, Offset::Beginning)?;
        }
        consumer.assign(&tpl)?;
        Ok(Self {
            consumer,
            topic,
            partitions,
            limits: settings.limits,
        })
    }

    /// Reads up to the high watermarks captured now, into `catalog`. `Ok(false)`: a
    /// shutdown came first (a stop during start-up is a clean stop, not an error).
    pub fn load_all(
        &mut self,
        codecs: &Codecs,
        catalog: &mut BTreeMap<String, Campaign>,
        shutdown: &AtomicBool,
        heartbeat: &dyn Fn(),
    ) -> Result<bool, RuntimeError> {
        let started = Instant::now();
        let mut high = Vec::with_capacity(self.partitions);
        for p in 0..self.partitions as i32 {
            // A broker that is away is waited for (the loop's heartbeat goes on).
            loop {
                heartbeat();
                if shutdown.load(Ordering::Relaxed) {
                    return Ok(false);
                }
                match high_watermark(&self.consumer, &self.topic, p) {
                    Ok(h) => break high.push(h),
                    Err(e) => {
                        warn!(topic = self.topic, partition = p, error = %e,
                            "reading the catalog's high watermark; retrying");
                        std::thread::sleep(Duration::from_millis(500));
                    }
                }
            }
        }
        let mut position = vec![0i64; self.partitions];
        while position.iter().zip(&high).any(|(p, h)| p < h) {
            heartbeat();
            if shutdown.load(Ordering::Relaxed) {
                return Ok(false);
            }
            match self.consumer.poll(Duration::from_millis(100)) {
                Some(Ok(m)) => {
                    let update = decode(&self.limits, codecs, &m);
                    if let CatalogUpdate::Retry(e) = &update {
                        warn!(topic = self.topic, offset = m.offset(), error = %e,
                            "catalog record cannot be decoded now; retrying");
                        self.rewind_to(m.partition(), m.offset());
                        std::thread::sleep(Duration::from_millis(500));
                        continue;
                    }
                    position[m.partition() as usize] = m.offset() + 1;
                    match update {
                        CatalogUpdate::Retry(_) => unreachable!("handled above"),
                        CatalogUpdate::Upsert(c) => {
                            let newer = catalog
                                .get(&c.campaign_id)
                                .is_none_or(|k| k.version <= c.version);
                            if newer {
                                catalog.insert(c.campaign_id.clone(), *c);
                            }
                        }
                        CatalogUpdate::Delete(id) => {
                            catalog.remove(&id);
                        }
                        CatalogUpdate::Bad { offset, error, .. } => {
                            warn!(topic = self.topic, offset, class = error.class, error = %error.message, "bad catalog record skipped");
                        }
                    }
                }
                Some(Err(KafkaError::PartitionEOF(_))) | None => {
                    advance_positions(&self.consumer, &mut position);
                }
                Some(Err(e)) => {
                    warn!(topic = self.topic, error = %e, "catalog reader error; retrying");
                }
            }
        }
        info!(
            campaigns = catalog.len(),
            ms = started.elapsed().as_millis() as u64,
            "catalog read to its end"
        );
        Ok(true)
    }

    /// Whatever arrived since the last call, without blocking. Reader errors are the
    /// client's to retry; a record that cannot be decoded while the schema registry is
    /// away is read again later.
    pub fn poll_updates(&mut self, codecs: &Codecs) -> Vec<CatalogUpdate> {
        let mut updates = Vec::new();
        for _ in 0..1_000 {
            match self.consumer.poll(Duration::ZERO) {
                Some(Ok(m)) => match decode(&self.limits, codecs, &m) {
                    CatalogUpdate::Retry(e) => {
                        warn!(topic = self.topic, offset = m.offset(), error = %e,
                            "catalog record cannot be decoded now; retrying");
                        self.rewind_to(m.partition(), m.offset());
                        break;
                    }
                    update => updates.push(update),
                },
                Some(Err(KafkaError::PartitionEOF(_))) | None => break,
                // Transport trouble (a broker outage queues many such events): the
                // client retries by itself; read on.
                Some(Err(e)) => {
                    debug!(topic = self.topic, error = %e, "catalog reader error; the client retries");
                }
            }
        }
        updates
    }

    /// Reads `partition` again from `offset`.
    fn rewind_to(&self, partition: i32, offset: i64) {
        if let Err(e) = self.consumer.seek(
            &self.topic,
            partition,
            Offset::Offset(offset),
            Duration::from_secs(1),
        ) {
            warn!(topic = self.topic, partition, offset, error = %e, "seeking the catalog reader");
        }
    }
}

/// A catalog record into a catalog update (or why it is bad input).
fn decode(limits: &Limits, codecs: &Codecs, m: &impl Message) -> CatalogUpdate {
    let key = m.key().map(|k| String::from_utf8_lossy(k).into_owned());
    let bad = |class: &'static str, message: String| CatalogUpdate::Bad {
        partition: m.partition(),
        offset: m.offset(),
        key: m.key().map(<[u8]>::to_vec),
        payload: m.payload().map(<[u8]>::to_vec),
        error: BadInput { class, message },
    };
    let update = match (m.payload(), key) {
        (None, Some(id)) => return CatalogUpdate::Delete(id),
        (None, None) => bad("empty_key", "a catalog tombstone without a key".into()),
        (Some(bytes), key) => match codecs.campaigns.decode(bytes) {
            // Refused credentials are no fault of the record either: reading it again
            // fails loudly and keeps failing, which the operator sees in the log.
            Err(e) if e.class() != ErrorClass::BadInput => CatalogUpdate::Retry(e.to_string()),
            Err(e) => bad("undecodable", e.to_string()),
            Ok(c) if key.as_deref() != Some(c.campaign_id.as_str()) => bad(
                "key_mismatch",
                format!(
                    "record key {:?} is not the campaign id {:?}",
                    key.unwrap_or_default(),
                    c.campaign_id
                ),
            ),
            Ok(c) => {
                let problems = validate_campaign(&c, limits);
                if problems.is_empty() {
                    CatalogUpdate::Upsert(Box::new(c))
                } else {
                    let list: Vec<String> = problems.iter().map(|p| p.to_string()).collect();
                    bad(
                        "invalid_campaign",
                        format!("campaign {:?}: {}", c.campaign_id, list.join("; ")),
                    )
                }
            }
        },
    };
    update
}
