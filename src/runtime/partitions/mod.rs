//! `partitions expand`: grows the inputs from `M` to `N` partitions the way the running
//! connector can follow (design: `docs/partition-expansion.md`, runbook:
//! `docs/operations.md`).
//!
//! ```text
//!   read counts + layout ──► plan ──► write layout (epoch e+1, M → N, cut_at = now + settle)
//!                                        │ wait the propagation period (instances read it)
//!                                        ▼
//!                       grow changelog ──► grow interactions ──► grow user-events
//! ```
//!
//! Every step leaves the topics in a state the co-partitioning check accepts, so a crash
//! anywhere is resumed by running the command again with the same `--to`: the layout is
//! not written twice, and only what is not grown yet is grown.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use rdkafka::admin::{AdminClient, AdminOptions, NewPartitions};
use rdkafka::client::DefaultClientContext;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use thiserror::Error;

use super::config::Settings;
use super::error::RuntimeError;
use super::instance::now_ms;
use super::kafka::{
    advance_positions, base_config, check_connection, co_partition_counts, high_watermark,
    metadata_consumer, standalone_consumer, TopicError,
};
use super::layout::{read_layout_topic, write_layout, CoPartitionCounts, TopicCount};
use crate::expansion::layout_topic;
use crate::time::{format_duration, format_timestamp};

mod plan;

use plan::LiveUsers;
pub use plan::{
    count_moved, plan, propagation_left, render_moved, render_plan, ExpandOptions, Growth,
    MovedUsers, Plan, DEFAULT_PROPAGATION, DEFAULT_SETTLE,
};

/// How long reading the changelog (dry run) may make no progress before it is given up.
const READ_STALL: Duration = Duration::from_secs(60);
const ADMIN_TIMEOUT: Duration = Duration::from_secs(30);

#[derive(Debug, Error)]
pub enum ExpandError {
    /// The command refuses: the request or the topics' state does not allow it. Nothing
    /// was changed.
    #[error("{0}; nothing was changed")]
    Refused(String),
    /// The topics' counts do not allow the expansion asked for. Nothing was changed.
    #[error("{0}; nothing was changed")]
    State(TopicError),
    #[error(transparent)]
    Topics(#[from] TopicError),
    #[error(transparent)]
    Runtime(#[from] RuntimeError),
    #[error("growing topic {topic} to {to} partitions: {message}")]
    Grow {
        topic: String,
        to: u32,
        message: String,
    },
    #[error("reading changelog {topic}: {message}")]
    Changelog { topic: String, message: String },
}

/// Runs `partitions expand`; `out` gets each line of the plan and of progress.
pub fn expand(
    settings: &Settings,
    options: &ExpandOptions,
    out: &mut dyn FnMut(&str),
) -> Result<(), ExpandError> {
    check_connection(settings)?;
    let layout_topic = layout_topic(&settings.topics.changelog);
    let counts = read_counts(settings)?;
    let current = read_layout_topic(settings)?;
    let plan = plan(&counts, current.as_ref(), &layout_topic, options, now_ms())?;
    out(render_plan(&plan, &layout_topic, options).trim_end());
    if options.dry_run {
        let changelog = &counts.changelog;
        let (users, records) = read_live_users(settings, changelog, out)?;
        let moved = count_moved(users.iter().map(Vec::as_slice), &plan.layout);
        out(render_moved(&moved, records, &changelog.topic).trim_end());
        out("dry run: nothing was changed");
        return Ok(());
    }
    let l = plan.layout;
    if plan.write_layout {
        let offset = write_layout(settings, &l)?;
        out(&format!(
            "wrote layout epoch {} ({} → {}, cut at {}) to {layout_topic} at offset {offset}",
            l.epoch,
            l.from,
            l.to,
            format_timestamp(l.cut_at)
        ));
    }
    if !plan.growth.is_empty() {
        let wait = propagation_left(&l, options.propagation, now_ms());
        if !wait.is_zero() {
            out(&format!(
                "waiting {:.1} s for the running instances to read the layout",
                wait.as_secs_f64()
            ));
            std::thread::sleep(wait);
        }
    }
    for g in &plan.growth {
        grow(settings, g)?;
        out(&format!(
            "grew {} from {} to {} partitions",
            g.topic, g.from, g.to
        ));
    }
    let left = l.cut_at.saturating_sub(now_ms());
    out(&format!(
        "done: every topic has {} partitions; the cut is at {}{}.\n\
         Watch connector_expansion_phase{{task}} (1 reading side feeds, 2 waiting for origins' hand-off, 3 done), \
         connector_expansion_handed_over_users_total, connector_expansion_late_records_total and the instances' logs; when every task is at 3 (done), \
         raise the autoscaler's maximum replicas (and the chart's config.partitions) to {}.",
        l.to,
        format_timestamp(l.cut_at),
        if left > 0 {
            format!(" (in {})", format_duration(left / 1_000))
        } else {
            " (passed)".to_string()
        },
        l.to
    ));
    Ok(())
}

/// The partition counts of the inputs and the changelog; a missing topic is an error.
fn read_counts(settings: &Settings) -> Result<CoPartitionCounts, ExpandError> {
    let consumer = metadata_consumer(settings)?;
    Ok(co_partition_counts(&consumer, settings)?)
}

/// Grows `g.topic` to `g.to` partitions and waits until every partition has a leader.
fn grow(settings: &Settings, g: &Growth) -> Result<(), ExpandError> {
    let fail = |message: String| ExpandError::Grow {
        topic: g.topic.clone(),
        to: g.to,
        message,
    };
    let admin: AdminClient<DefaultClientContext> = base_config(settings)
        .create()
        .map_err(RuntimeError::kafka("creating the admin client"))?;
    let new = NewPartitions::new(&g.topic, g.to as usize);
    let options = AdminOptions::new().operation_timeout(Some(ADMIN_TIMEOUT));
    let results = futures_executor::block_on(admin.create_partitions([&new], &options))
        .map_err(|e| fail(e.to_string()))?;
    for r in results {
        if let Err((_, code)) = r {
            return Err(fail(code.to_string()));
        }
    }
    let consumer = metadata_consumer(settings)?;
    let started = Instant::now();
    loop {
        let metadata = consumer
            .fetch_metadata(Some(&g.topic), ADMIN_TIMEOUT)
            .map_err(|e| fail(e.to_string()))?;
        let ready = metadata.topics().iter().any(|m| {
            m.name() == g.topic
                && m.partitions().len() == g.to as usize
                && m.partitions()
                    .iter()
                    .all(|p| p.leader() >= 0 && p.error().is_none())
        });
        if ready {
            return Ok(());
        }
        if started.elapsed() > ADMIN_TIMEOUT {
            return Err(fail(format!(
                "the new partitions have no leader after {} s",
                ADMIN_TIMEOUT.as_secs()
            )));
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Reads every partition of the changelog from the beginning to its high watermark: the
/// users with state, and how many records were read.
fn read_live_users(
    settings: &Settings,
    changelog: &TopicCount,
    out: &mut dyn FnMut(&str),
) -> Result<(HashSet<Vec<u8>>, u64), ExpandError> {
    let topic = changelog.topic.as_str();
    let fail = |message: String| ExpandError::Changelog {
        topic: topic.into(),
        message,
    };
    let partitions = changelog.partitions as usize;
    let consumer: BaseConsumer = standalone_consumer(settings, "expand-dry-run")?;
    let mut high = Vec::with_capacity(partitions);
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions as i32 {
        high.push(high_watermark(&consumer, topic, p).map_err(|e| fail(e.to_string()))?);
        tpl.add_partition_offset(topic, p, Offset::Beginning)
            .map_err(|e| fail(e.to_string()))?;
    }
    consumer.assign(&tpl).map_err(|e| fail(e.to_string()))?;
    let expected: i64 = high.iter().sum();
    // One set per partition: a user handed over by an earlier expansion has a tombstone in
    // its old partition and state in its new one, read in no particular order between them.
    let mut live: Vec<LiveUsers> = (0..partitions).map(|_| LiveUsers::default()).collect();
    let mut position = vec![0i64; partitions];
    let (mut records, mut progress, mut reported) = (0u64, Instant::now(), Instant::now());
    while position.iter().zip(&high).any(|(p, h)| p < h) {
        let before: i64 = position.iter().sum();
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                let p = m.partition() as usize;
                if let (Some(set), Some(pos)) = (live.get_mut(p), position.get_mut(p)) {
                    set.apply(m.key(), m.payload());
                    *pos = m.offset() + 1;
                    records += 1;
                }
            }
            // Transaction markers move a read_committed reader without a message.
            Some(Err(KafkaError::PartitionEOF(_))) | None => {
                advance_positions(&consumer, &mut position)
            }
            Some(Err(e)) => {
                tracing::debug!(topic, error = %e, "changelog reader error; the client retries")
            }
        }
        if position.iter().sum::<i64>() > before {
            progress = Instant::now();
        } else if progress.elapsed() > READ_STALL {
            return Err(fail(format!(
                "no progress for {} s at positions {position:?} of high watermarks {high:?}",
                READ_STALL.as_secs()
            )));
        }
        if reported.elapsed() > Duration::from_secs(5) {
            reported = Instant::now();
            out(&format!(
                "reading the changelog: {records} records, offsets {} of {expected}",
                position.iter().sum::<i64>()
            ));
        }
    }
    let mut users = HashSet::new();
    for set in live {
        users.extend(set.0);
    }
    Ok((users, records))
}
