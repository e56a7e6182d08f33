//! Catalog administration: publishing campaigns-as-code files and listing what is live.

use std::collections::BTreeMap;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use tracing::info;

use super::catalog_feed::CatalogFeed;
use super::codecs::Codecs;
use super::config::Settings;
use super::error::RuntimeError;
use super::kafka::base_config;
use crate::model::{Campaign, CampaignStatus};

/// What publishing did with one campaign.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Published {
    New(String, i64),
    Updated(String, i64),
    Unchanged(String, i64),
}

/// Reads the live catalog to its end.
pub fn live_catalog(settings: &Settings) -> Result<BTreeMap<String, Campaign>, RuntimeError> {
    super::kafka::check_connection(settings)?;
    let codecs = Codecs::new(settings).map_err(RuntimeError::Codec)?;
    let mut feed = CatalogFeed::start(settings)?;
    let mut catalog = BTreeMap::new();
    // Nothing sets this flag: the read always runs to its end.
    feed.load_all(&codecs, &mut catalog, &AtomicBool::new(false), &|| {})?;
    Ok(catalog)
}

/// How to publish.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PublishOptions {
    /// Publish every follow-on with this backfill start: triggers from here on count for
    /// the version published, even before its `published_at` (see `backfill_since`).
    pub backfill_since: Option<crate::model::TimestampMs>,
}

/// The error that refuses to publish `c` when it is not valid (nothing is published then).
fn refuse_invalid(c: &Campaign, settings: &Settings) -> Result<(), RuntimeError> {
    let problems = crate::validate::validate_campaign(c, &settings.limits);
    if problems.is_empty() {
        return Ok(());
    }
    let list: Vec<String> = problems.iter().map(|p| p.to_string()).collect();
    Err(RuntimeError::Setup(format!(
        "campaign {:?}: {}; nothing was published",
        c.campaign_id,
        list.join("; ")
    )))
}

/// Publishes validated campaigns. A campaign identical to the live one is skipped; a changed
/// one must carry a higher version than the live one. An `ACTIVE` campaign without
/// `published_at` gets the live one's, or now.
pub fn publish(
    settings: &Settings,
    campaigns: &[Campaign],
) -> Result<Vec<Published>, RuntimeError> {
    publish_with(settings, campaigns, PublishOptions::default())
}

/// [`publish`] with options. With a backfill start, every follow-on published gets it (a
/// live follow-on needs a new version for that, as for any change); it is checked against
/// `published_at` and `max_backfill` before anything is sent.
pub fn publish_with(
    settings: &Settings,
    campaigns: &[Campaign],
    options: PublishOptions,
) -> Result<Vec<Published>, RuntimeError> {
    let live = live_catalog(settings)?;
    let now = now_ms();
    let mut outcome = Vec::new();
    let mut to_send = Vec::new();
    for c in campaigns {
        let mut c = c.clone();
        let current = live.get(&c.campaign_id);
        if c.published_at.is_none() && c.status == CampaignStatus::Active {
            c.published_at = Some(current.and_then(|l| l.published_at).unwrap_or(now));
        }
        if c.follow_on.is_some() && options.backfill_since.is_some() {
            c.backfill_since = options.backfill_since;
        }
        refuse_invalid(&c, settings)?;
        // A live version published with a backfill start is what this file describes,
        // unless the file asks for a backfill of its own: republishing it is no change.
        let same = |l: &Campaign| {
            *l == c
                || (c.backfill_since.is_none() && {
                    let mut without = l.clone();
                    without.backfill_since = None;
                    without == c
                })
        };
        match current {
            Some(l) if same(l) => {
                outcome.push(Published::Unchanged(l.campaign_id.clone(), l.version));
                continue;
            }
            Some(l) if l.version >= c.version => {
                return Err(RuntimeError::Setup(format!(
                    "campaign {:?}: version {} is not higher than the live version {}; raise `version` to publish a change",
                    c.campaign_id, c.version, l.version
                )))
            }
            Some(_) => outcome.push(Published::Updated(c.campaign_id.clone(), c.version)),
            None => outcome.push(Published::New(c.campaign_id.clone(), c.version)),
        }
        to_send.push(c);
    }
    produce_campaigns(settings, &to_send)?;
    info!(published = to_send.len(), "campaigns published");
    Ok(outcome)
}

/// Writes campaign records to the catalog topic, in order, and waits for them.
fn produce_campaigns(settings: &Settings, campaigns: &[Campaign]) -> Result<(), RuntimeError> {
    let codecs = Codecs::new(settings).map_err(RuntimeError::Codec)?;
    let producer: BaseProducer = base_config(settings)
        .set("enable.idempotence", "true")
        .create()?;
    for c in campaigns {
        let bytes = codecs
            .campaigns
            .encode(c)
            .map_err(|e| RuntimeError::Setup(e.to_string()))?;
        producer
            .send(
                BaseRecord::to(&settings.topics.campaigns)
                    .key(c.campaign_id.as_bytes())
                    .payload(&bytes),
            )
            .map_err(|(e, _)| e)?;
    }
    producer.flush(Duration::from_secs(30))?;
    Ok(())
}

/// Promotes shadow follow-on `shadow_id` (`<id>@shadow`) at the wall clock's `now`:
/// publishes its rule as a new live version of `<id>` with `published_at = now` and stops the
/// shadow (see [`crate::shadow::promotion`]). Returns the two records published.
pub fn promote(settings: &Settings, shadow_id: &str) -> Result<(Campaign, Campaign), RuntimeError> {
    let live = live_catalog(settings)?;
    let (promoted, stopped) = crate::shadow::promotion(&live, shadow_id, now_ms())
        .map_err(|e| RuntimeError::Setup(e.to_string()))?;
    for c in [&promoted, &stopped] {
        refuse_invalid(c, settings)?;
    }
    // The stopped shadow first: a connector that sees only one record of the two for a
    // moment then has neither running rather than both.
    produce_campaigns(settings, &[stopped.clone(), promoted.clone()])?;
    info!(shadow = shadow_id, live = %promoted.campaign_id, version = promoted.version, "shadow promoted");
    Ok((promoted, stopped))
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Produces input events (the simulator's JSONL records) to the input topics, keyed by user
/// id, with each topic's encoding.
pub fn send_events(
    settings: &Settings,
    events: &[crate::model::InputEvent],
) -> Result<usize, RuntimeError> {
    send_event_stream(settings, events.iter().cloned().map(Ok))
}

/// Produces input events as they come, waiting whenever the producer's queue is full, so
/// that a file of any size is sent in bounded memory. The first error from `events` stops
/// the sending (what was queued is still delivered) and is returned.
pub fn send_event_stream(
    settings: &Settings,
    events: impl Iterator<Item = Result<crate::model::InputEvent, RuntimeError>>,
) -> Result<usize, RuntimeError> {
    use crate::model::InputEvent;
    use rdkafka::error::{KafkaError, RDKafkaErrorCode};
    let codecs = Codecs::new(settings).map_err(RuntimeError::Codec)?;
    let producer: BaseProducer = base_config(settings)
        .set("enable.idempotence", "true")
        // The same key → partition mapping as the Java client, as co-partitioning needs.
        .set("partitioner", "murmur2_random")
        .create()?;
    let mut sent = 0;
    let mut bytes = Vec::new();
    let mut stopped = None;
    for e in events {
        let e = match e {
            Ok(e) => e,
            Err(error) => {
                stopped = Some(error);
                break;
            }
        };
        bytes.clear();
        let (topic, encoded) = match &e {
            InputEvent::Interaction(i) => (
                &settings.topics.interactions,
                codecs.interactions.encode_into(i, &mut bytes),
            ),
            InputEvent::UserEvent(u) => (
                &settings.topics.user_events,
                codecs.user_events.encode_into(u, &mut bytes),
            ),
        };
        encoded.map_err(|e| RuntimeError::Setup(e.to_string()))?;
        let mut record = BaseRecord::to(topic).key(e.user_id()).payload(&bytes);
        loop {
            match producer.send(record) {
                Ok(()) => break,
                // The queue is full: let deliveries drain it, then try again.
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), back)) => {
                    producer.poll(Duration::from_millis(50));
                    record = back;
                }
                Err((e, _)) => return Err(e.into()),
            }
        }
        producer.poll(Duration::ZERO);
        sent += 1;
    }
    producer.flush(Duration::from_secs(60))?;
    match stopped {
        Some(error) => Err(error),
        None => Ok(sent),
    }
}

/// Reads the committed send-commands and decisions (from the beginning) for `duration`, in
/// the order they were decided.
pub fn read_outputs(
    settings: &Settings,
    duration: Duration,
    shadow: bool,
) -> Result<Vec<crate::simulate::Output>, RuntimeError> {
    use crate::simulate::Output;
    use rdkafka::consumer::Consumer;
    use rdkafka::message::Message;
    let codecs = Codecs::new(settings).map_err(RuntimeError::Codec)?;
    let consumer = super::kafka::standalone_consumer(settings, "outputs")?;
    // The shadow topic alone (what shadow follow-ons would have sent, and why), or the live
    // outputs: never mixed, so that a would-be send is never read as a send.
    let topics = if shadow {
        vec![settings.topics.shadow.clone()]
    } else {
        let mut live = vec![settings.topics.send_commands.clone()];
        live.extend(settings.decisions_topic().map(str::to_string));
        live
    };
    let names: Vec<&str> = topics.iter().map(String::as_str).collect();
    let counts = super::kafka::partition_counts(&consumer, &names)?;
    let mut tpl = rdkafka::TopicPartitionList::new();
    for t in &topics {
        for p in 0..counts[t].unwrap_or(0) as i32 {
            tpl.add_partition_offset(t, p, rdkafka::Offset::Beginning)?;
        }
    }
    consumer.assign(&tpl)?;
    let started = std::time::Instant::now();
    let mut out: Vec<(i64, Output)> = Vec::new();
    while started.elapsed() < duration {
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
            let Some(bytes) = m.payload() else { continue };
            if shadow {
                let record = codecs.shadow.decode(bytes).ok().and_then(Output::of_shadow);
                match record {
                    Some(Output::Send(c)) => out.push((c.emitted_at, Output::Send(c))),
                    Some(Output::Decision(d)) => out.push((d.decided_at, Output::Decision(d))),
                    None => {}
                }
            } else if m.topic() == settings.topics.send_commands {
                if let Ok(c) = codecs.send_commands.decode(bytes) {
                    out.push((c.emitted_at, Output::Send(c)));
                }
            } else if let Ok(d) = codecs.decisions.decode(bytes) {
                out.push((d.decided_at, Output::Decision(d)));
            }
        }
    }
    out.sort_by_key(|(t, o)| (*t, matches!(o, Output::Decision(_))));
    Ok(out.into_iter().map(|(_, o)| o).collect())
}

/// What a dead-letter replay did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Replayed {
    pub read: usize,
    pub replayed: usize,
}

/// Reads the dead-letter topic to its end and produces each record (of `class`, if given)
/// back to its source topic with its original key, so it lands on its original partition.
pub fn replay_dlq(
    settings: &Settings,
    class: Option<&str>,
    dry_run: bool,
) -> Result<Replayed, RuntimeError> {
    use rdkafka::consumer::Consumer;
    use rdkafka::message::{Headers, Message};
    let consumer = super::kafka::standalone_consumer(settings, "dlq-replay")?;
    let topic = settings.topics.dlq.as_str();
    let partitions = super::kafka::partition_counts(&consumer, &[topic])?[topic]
        .ok_or_else(|| RuntimeError::Setup(format!("dead-letter topic {topic} does not exist")))?;
    let mut tpl = rdkafka::TopicPartitionList::new();
    let mut high = Vec::new();
    for p in 0..partitions as i32 {
        tpl.add_partition_offset(topic, p, rdkafka::Offset::Beginning)?;
        high.push(super::kafka::high_watermark(&consumer, topic, p)?);
    }
    consumer.assign(&tpl)?;
    let producer: BaseProducer = base_config(settings)
        .set("enable.idempotence", "true")
        .set("partitioner", "murmur2_random")
        .create()?;
    let mut position = vec![0i64; partitions];
    let mut done = Replayed::default();
    let started = std::time::Instant::now();
    while position.iter().zip(&high).any(|(p, h)| p < h) {
        if started.elapsed() > Duration::from_secs(300) {
            return Err(RuntimeError::Setup(
                "reading the dead-letter topic took over 5 minutes".into(),
            ));
        }
        let Some(result) = consumer.poll(Duration::from_millis(200)) else {
            super::kafka::advance_positions(&consumer, &mut position);
            continue;
        };
        let m = result?;
        let p = m.partition() as usize;
        position[p] = m.offset() + 1;
        // Only what was there when the replay began: what it sends back may return here.
        if m.offset() >= high[p] {
            continue;
        }
        done.read += 1;
        let header = |name: &str| {
            m.headers().and_then(|h| {
                h.iter()
                    .find(|x| x.key == name)
                    .and_then(|x| x.value.map(|v| String::from_utf8_lossy(v).into_owned()))
            })
        };
        if class.is_some_and(|c| header("error.class").as_deref() != Some(c)) {
            continue;
        }
        let Some(source) = header("source.topic") else {
            continue;
        };
        done.replayed += 1;
        if dry_run {
            continue;
        }
        let mut record: BaseRecord<'_, [u8], [u8]> = BaseRecord::to(&source);
        if let Some(k) = m.key() {
            record = record.key(k);
        }
        if let Some(v) = m.payload() {
            record = record.payload(v);
        }
        producer.send(record).map_err(|(e, _)| e)?;
        producer.poll(Duration::ZERO);
    }
    producer.flush(Duration::from_secs(30))?;
    Ok(done)
}
