//! The commit in flight: the transaction's offsets, flush and commit (exactly-once) or the
//! flush (at-least-once) run on a helper thread while the loop goes on processing; what the
//! loop produces meanwhile is held and produced, in order, once the commit has landed. The
//! abort that drops the output waits for the commit in flight first.

use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, ConsumerGroupMetadata};
use rdkafka::error::KafkaResult;
use rdkafka::message::OwnedHeaders;
use rdkafka::producer::{BaseProducer, Producer};
use rdkafka::TopicPartitionList;
use tracing::warn;

use super::{
    create_producer, flush_checked, DeliveryWatch, Outgoing, Output, ABORT_TIMEOUT, OFFSETS_GRACE,
    TXN_CALL_TIMEOUT,
};
use crate::runtime::config::Settings;
use crate::runtime::error::RuntimeError;
use crate::runtime::kafka::flush_promptly;

/// A commit in flight: exactly-once, the transaction's offsets, flush and commit;
/// at-least-once, the flush of everything produced before it. It runs on a helper thread
/// while the loop goes on processing; what the loop produces meanwhile is held
/// ([`Held`]) and produced when the commit has landed ([`Output::land`]).
pub(super) struct Committing {
    done: mpsc::Receiver<Result<(), RuntimeError>>,
    /// The input offsets the commit covers (`last processed + 1`).
    offsets: TopicPartitionList,
    started: Instant,
}

/// A commit that went through: the offsets it covers, and when it started.
pub struct Landed {
    pub offsets: TopicPartitionList,
    pub started: Instant,
}

/// How long the loop waits for a commit in flight before it gives its producer up: the
/// offsets' bound and grace, the flush's and the commit's bounds, and a second to spare.
const COMMIT_BOUND: Duration =
    Duration::from_secs(TXN_CALL_TIMEOUT.as_secs() * 2 + OFFSETS_GRACE.as_secs() + 1);

/// Bytes held for after the commit in flight beyond which processing waits for it
/// ([`Output::held_full`]): several times what a commit's duration of full-speed
/// processing produces, and a bound on what a burst of due timers holds.
const HELD_LIMIT: usize = 32 << 20;

/// Records held while a commit is in flight, in the order they were produced: their bytes
/// in one buffer, reused from one commit to the next.
#[derive(Default)]
pub(super) struct Held {
    bytes: Vec<u8>,
    records: Vec<HeldRecord>,
    /// The topics the records go to (a handful), by index.
    topics: Vec<String>,
}

struct HeldRecord {
    topic: usize,
    partition: Option<i32>,
    key: std::ops::Range<usize>,
    payload: Option<std::ops::Range<usize>>,
    headers: Option<OwnedHeaders>,
}

impl Held {
    pub(super) fn push(&mut self, r: Outgoing<'_>) {
        let topic = match self.topics.iter().position(|t| t == r.topic) {
            Some(i) => i,
            None => {
                self.topics.push(r.topic.to_string());
                self.topics.len() - 1
            }
        };
        let mut take = |b: &[u8]| {
            let start = self.bytes.len();
            self.bytes.extend_from_slice(b);
            start..self.bytes.len()
        };
        let key = take(r.key);
        let payload = r.payload.map(take);
        self.records.push(HeldRecord {
            topic,
            partition: r.partition,
            key,
            payload,
            headers: r.headers,
        });
    }

    pub(super) fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// Bytes held: the records' bytes and where each goes.
    fn size(&self) -> usize {
        self.bytes.len() + self.records.len() * std::mem::size_of::<HeldRecord>()
    }

    pub(super) fn clear(&mut self) {
        self.bytes.clear();
        self.records.clear();
    }
}

impl Output {
    /// A commit is in flight.
    pub fn committing(&self) -> bool {
        self.committing.is_some()
    }

    /// Bytes of the records held for after the commit in flight (their bytes and where
    /// each goes).
    pub fn held_bytes(&self) -> usize {
        self.held.size()
    }

    /// Enough is held for after the commit in flight: processing waits for it to land
    /// (and a burst of due timers stops firing until then).
    pub fn held_full(&self) -> bool {
        self.held_bytes() > HELD_LIMIT
    }

    /// Starts committing what was produced so far, on a helper thread, and returns at once;
    /// [`Output::land`] takes the outcome, and records produced meanwhile are held for
    /// after it. Returns `false` when there is nothing to commit.
    ///
    /// Exactly-once: the open transaction with the input offsets (`last processed + 1`),
    /// which go in with the consumer group metadata read right before the call — after a
    /// rebalance the generation changes, and the coordinator rejects offsets of a member
    /// that no longer owns them, which is what fences a zombie. At-least-once: the flush
    /// of the output; the caller commits the offsets once it has landed.
    pub fn start_commit<C: ConsumerContext>(
        &mut self,
        consumer: &BaseConsumer<C>,
        offsets: &TopicPartitionList,
    ) -> Result<bool, RuntimeError> {
        debug_assert!(self.committing.is_none(), "one commit at a time");
        if offsets.count() > 0 {
            self.begin()?;
        }
        if !self.open {
            return Ok(false);
        }
        self.usable()?;
        let producer = Arc::clone(&self.producer);
        let work: Box<dyn FnOnce() -> Result<(), RuntimeError> + Send> = if self.exactly_once {
            let joining = if offsets.count() > 0 {
                let metadata = consumer
                    .group_metadata()
                    .ok_or_else(|| RuntimeError::Setup("no consumer group metadata".into()))?;
                Some((offsets.clone(), metadata))
            } else {
                None
            };
            Box::new(move || transact(&producer, joining))
        } else {
            Box::new(move || flush_checked(&producer, TXN_CALL_TIMEOUT))
        };
        let (done, result) = mpsc::sync_channel(1);
        std::thread::Builder::new()
            .name("commit".into())
            .spawn(move || {
                let _ = done.send(work());
            })
            .map_err(|e| RuntimeError::Setup(format!("starting a commit: {e}")))?;
        self.committing = Some(Committing {
            done: result,
            offsets: offsets.clone(),
            started: Instant::now(),
        });
        Ok(true)
    }

    /// The outcome of the commit in flight once it is known — waiting for it when `wait` —
    /// or `None` while it runs (or when none does). A commit that has not ended within
    /// [`COMMIT_BOUND`] gives the producer up: it is only replaced (see
    /// [`Output::abort`]). After a commit that went through, the caller produces the held
    /// records ([`Output::release`]); after one that failed, they wait for the abort that
    /// drops them.
    pub fn land(&mut self, wait: bool) -> Option<Result<Landed, RuntimeError>> {
        let c = self.committing.as_ref()?;
        let left = COMMIT_BOUND.saturating_sub(c.started.elapsed());
        let outcome = if wait {
            c.done.recv_timeout(left).ok()
        } else {
            match c.done.try_recv() {
                Ok(r) => Some(r),
                Err(mpsc::TryRecvError::Empty) if !left.is_zero() => return None,
                Err(_) => None,
            }
        };
        let c = self.committing.take().expect("checked above");
        Some(match outcome {
            Some(Ok(())) => {
                self.open = false;
                Ok(Landed {
                    offsets: c.offsets,
                    started: c.started,
                })
            }
            Some(Err(e)) => {
                self.wedged |= matches!(e, RuntimeError::Wedged { .. });
                Err(e)
            }
            None => {
                self.wedged = true;
                Err(RuntimeError::Wedged {
                    during: "committing",
                    waited_ms: COMMIT_BOUND.as_millis() as u64,
                })
            }
        })
    }

    /// Produces the records held while the commit before them was in flight, in the order
    /// they came: exactly-once into the next transaction, at-least-once for the next flush.
    pub fn release(&mut self) -> Result<(), RuntimeError> {
        if self.held.records.is_empty() {
            return Ok(());
        }
        let mut held = std::mem::take(&mut self.held);
        let mut result = Ok(());
        for r in held.records.drain(..) {
            let key = &held.bytes[r.key];
            let payload = r.payload.map(|p| &held.bytes[p]);
            result = self.produce_now(Outgoing {
                topic: &held.topics[r.topic],
                partition: r.partition,
                key,
                payload,
                headers: r.headers,
            });
            if result.is_err() {
                // The caller rewinds: the output is dropped, the inputs processed again.
                break;
            }
        }
        held.clear();
        self.held = held;
        result
    }

    /// Waits, at most `bound`, for the commit in flight to end before the transaction is
    /// dropped (librdkafka takes one transaction call at a time); `false` when it did not
    /// end in time — the producer is then given up. A commit that went through leaves no
    /// transaction to abort.
    fn stop_committing(&mut self, bound: Duration) -> bool {
        let Some(c) = self.committing.take() else {
            return true;
        };
        match c.done.recv_timeout(bound) {
            Ok(Ok(())) => {
                self.open = false;
                true
            }
            Ok(Err(e)) => {
                self.wedged |= matches!(e, RuntimeError::Wedged { .. });
                true
            }
            Err(_) => {
                self.wedged = true;
                false
            }
        }
    }

    /// At-least-once, a commit done when it returns: the output is flushed, then the
    /// offsets that cover it are committed.
    pub fn flush_and_commit<C: ConsumerContext>(
        &mut self,
        consumer: &BaseConsumer<C>,
        offsets: &TopicPartitionList,
    ) -> Result<(), RuntimeError> {
        debug_assert!(!self.exactly_once && self.committing.is_none());
        if offsets.count() > 0 {
            self.begin()?;
        }
        if !self.open {
            return Ok(());
        }
        self.usable()?;
        flush_checked(&self.producer, TXN_CALL_TIMEOUT)?;
        if offsets.count() > 0 {
            consumer
                .commit(offsets, rdkafka::consumer::CommitMode::Sync)
                .map_err(RuntimeError::kafka("committing offsets"))?;
        }
        self.open = false;
        Ok(())
    }

    /// Aborts the open transaction if the producer can, within a short bound; `false` when it
    /// could not (the caller re-creates the producer later, from the loop, with backoff).
    pub fn try_abort(&mut self) -> bool {
        self.held.clear();
        if !self.stop_committing(ABORT_TIMEOUT) {
            return false;
        }
        if !self.open {
            return true;
        }
        if self.wedged {
            return false;
        }
        let aborted = !self.exactly_once || self.producer.abort_transaction(ABORT_TIMEOUT).is_ok();
        if aborted {
            // The tasks are dropped or rewound: what failed is processed again.
            self.producer.context().next_epoch();
            self.open = false;
        }
        aborted
    }

    /// Drops the open transaction's output: aborts it, or — when the producer cannot be
    /// trusted to (fenced, fatal, an abort that does not finish) — re-creates the producer,
    /// whose `init_transactions` fences the old one and aborts its transaction.
    pub fn abort(&mut self, settings: &Settings, new_producer: bool) -> Result<(), RuntimeError> {
        self.held.clear();
        let new_producer = !self.stop_committing(ABORT_TIMEOUT) || new_producer;
        if self.exactly_once {
            let aborted = !new_producer
                && !self.wedged
                && (!self.open || self.producer.abort_transaction(ABORT_TIMEOUT).is_ok());
            if !aborted {
                warn!("re-creating the producer (its transactional id fences the old one)");
                self.replace_producer(settings)?;
            }
        } else if new_producer || self.wedged {
            self.replace_producer(settings)?;
        } else {
            // Unflushed at-least-once output may still be delivered: harmless, the inputs
            // are re-processed and produce the same command ids.
            let _ = flush_promptly(&self.producer, ABORT_TIMEOUT);
        }
        // What failed is processed again from the committed offsets.
        self.producer.context().next_epoch();
        self.open = false;
        Ok(())
    }

    /// A new producer in place of the current one. A wedged producer is still referenced by
    /// the helper thread stuck in its call: dropping our reference here does not block.
    fn replace_producer(&mut self, settings: &Settings) -> Result<(), RuntimeError> {
        // The handles belong to the old producer (and keep it alive).
        self.handles.clear();
        self.producer = Arc::new(create_producer(settings)?);
        self.wedged = false;
        Ok(())
    }
}

/// Commits the open transaction, with the input offsets joining it when given: they make
/// their round trips (on a thread of their own, see [`send_offsets`]) while the
/// transaction's records are flushed, then `commit_transaction` — whose own flush, slower,
/// finds nothing left.
fn transact(
    producer: &Arc<BaseProducer<DeliveryWatch>>,
    joining: Option<(TopicPartitionList, ConsumerGroupMetadata)>,
) -> Result<(), RuntimeError> {
    let started = Instant::now();
    let sending = match joining {
        Some((offsets, metadata)) => Some(send_offsets(producer, offsets, metadata)?),
        None => None,
    };
    let flush = flush_promptly(producer, TXN_CALL_TIMEOUT)
        .map_err(RuntimeError::kafka("writing the transaction's records"));
    let flushed = started.elapsed();
    if let Some(sending) = sending {
        offsets_sent(sending)?;
    }
    let offsets_done = started.elapsed();
    flush?;
    producer
        .commit_transaction(TXN_CALL_TIMEOUT)
        .map_err(RuntimeError::kafka("committing the transaction"))?;
    tracing::debug!(
        flush_ms = flushed.as_millis() as u64,
        offsets_ms = offsets_done.as_millis() as u64,
        end_ms = (started.elapsed() - offsets_done).as_millis() as u64,
        "transaction committed"
    );
    Ok(())
}

/// `send_offsets_to_transaction`, bounded by its caller.
///
/// librdkafka does not always honour the call's timeout: the offsets go to the group
/// coordinator through a coordinator request whose own timeout is never checked, and when
/// the cached coordinator is a broker that left the cluster's metadata (a broker shut down
/// cleanly) the request waits for a broker state change that may never come. So the call
/// runs on a thread of its own; when it has not returned `OFFSETS_GRACE` after its bound,
/// [`offsets_sent`] says the producer is wedged (retried with a new producer, whose
/// `init_transactions` fences this one and aborts its transaction), and the thread keeps
/// the old producer until the call returns, then destroys it.
fn send_offsets(
    producer: &Arc<BaseProducer<DeliveryWatch>>,
    offsets: TopicPartitionList,
    metadata: ConsumerGroupMetadata,
) -> Result<mpsc::Receiver<KafkaResult<()>>, RuntimeError> {
    let producer = Arc::clone(producer);
    let (done, result) = mpsc::sync_channel(1);
    std::thread::Builder::new()
        .name("txn-offsets".into())
        .spawn(move || {
            let r = producer.send_offsets_to_transaction(&offsets, &metadata, TXN_CALL_TIMEOUT);
            let _ = done.send(r);
        })
        .map_err(|e| RuntimeError::Setup(format!("starting a transaction call: {e}")))?;
    Ok(result)
}

/// Waits for the offsets [`send_offsets`] sent, within the call's bound and
/// [`OFFSETS_GRACE`] (measured from here: the flush before took at most its own).
fn offsets_sent(result: mpsc::Receiver<KafkaResult<()>>) -> Result<(), RuntimeError> {
    match result.recv_timeout(TXN_CALL_TIMEOUT + OFFSETS_GRACE) {
        Ok(r) => r.map_err(RuntimeError::kafka("sending offsets to the transaction")),
        Err(_) => Err(RuntimeError::Wedged {
            during: "sending offsets to the transaction",
            waited_ms: (TXN_CALL_TIMEOUT + OFFSETS_GRACE).as_millis() as u64,
        }),
    }
}
