//! Reading a consumer's records in batches straight from its librdkafka queue.
//!
//! `BaseConsumer::poll` hands over one record a call, and each call takes the queue's
//! lock, reads the clock twice and allocates the event that wraps the record: in a profile
//! of a restore (1 M changelog records) that per-record path was about a tenth of the
//! member threads' samples. One `rd_kafka_consume_batch_queue` call hands over many.
//!
//! The records of the partitions the reader routes ([`BatchReader::route`], before it
//! assigns them) go to a queue of the reader's own, and only there: once an application
//! routed a partition, librdkafka never forwards its records to the consumer's queue again.
//! Everything else the client queues — its log lines and errors — stays on the consumer's
//! queue, which `BaseConsumer::poll` serves as before (through the connector's logging).
//!
//! **Routes are set again.** librdkafka drops a partition's forwarding whenever it stops
//! fetching the partition — an unassignment, or an assignment that replaces the one before
//! (a group may hand a member a new assignment without revoking the old one first, as when
//! an expansion changed the inputs' partition counts) — and it does so asynchronously, on
//! the partition's broker thread: a route set just before such a stop is carried out is
//! lost, and the partition's records would stay in its own queue for good (its task waiting
//! for them). So the reader keeps the partitions it routed and forwards them again at least
//! every [`REROUTE_EVERY`], before a read; the records that piled up meanwhile move to the
//! reader's queue in their order. A partition no longer assigned is forgotten
//! ([`BatchReader::unroute`]).
//!
//! A reader made with [`BatchReader::new`] is for a consumer that assigns its partitions
//! itself and commits nothing. One made with [`BatchReader::for_group`] wraps a group
//! consumer: its rebalances, commit results and errors stay on the consumer's queue (served
//! by `BaseConsumer::poll`, which runs the rebalance callbacks), the records of the
//! partitions routed here (in the callback, before they are assigned) come in batches, and
//! anything arriving on the consumer's queue cuts a wait for records short.

use std::collections::BTreeSet;
use std::ffi::{c_void, CStr, CString};
use std::ptr::{null_mut, NonNull};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, DefaultConsumerContext};
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::message::{BorrowedMessage, Message};
use rdkafka_sys as rdsys;

/// Records taken from the queue in one call, at most.
const CHUNK: usize = 512;
/// How far ahead of the record shown the reader names the next one to prepare for: far
/// enough for a cache miss started there to be served when it is reached.
pub const AHEAD: usize = 8;
/// How often the routed partitions are forwarded to the reader's queue again, at most (see
/// the module doc): the longest a partition whose route librdkafka dropped waits.
pub const REROUTE_EVERY: Duration = Duration::from_millis(100);

/// One record, borrowed from the client until the callback returns.
pub struct Record<'a> {
    pub topic: &'a str,
    pub partition: i32,
    pub offset: i64,
    pub key: Option<&'a [u8]>,
    pub payload: Option<&'a [u8]>,
    /// The record's timestamp (create or log append time), when it has one.
    pub timestamp: Option<i64>,
    /// Set when the client reports an error for the partition instead of a record.
    pub error: Option<RDKafkaErrorCode>,
}

impl<'a> Record<'a> {
    /// A record the consumer's own queue handed over (one not routed to a reader).
    pub fn of_message(m: &'a BorrowedMessage<'a>) -> Self {
        Record {
            topic: m.topic(),
            partition: m.partition(),
            offset: m.offset(),
            key: m.key(),
            payload: m.payload(),
            timestamp: m.timestamp().to_millis(),
            error: None,
        }
    }
}

/// A reference to the consumer's queue, released before the client (field order in
/// [`BatchReader`]).
struct QueueRef(NonNull<rdsys::rd_kafka_queue_t>);

impl Drop for QueueRef {
    fn drop(&mut self) {
        // SAFETY: the reference was taken by `rd_kafka_queue_get_consumer` and is released
        // once, while the client still lives.
        unsafe { rdsys::rd_kafka_queue_destroy(self.0.as_ptr()) }
    }
}

// SAFETY: librdkafka's queues are locked internally; the reference may move to another
// thread with the consumer that owns it.
unsafe impl Send for QueueRef {}

/// A reference to the consumer's own queue with a wake-up set on it: whatever librdkafka
/// puts on it while it is empty cuts the reader's wait for records short. The wake-up is
/// removed before the reference is released, both before the reader's queue goes.
struct WakeOnEvents(QueueRef);

impl Drop for WakeOnEvents {
    fn drop(&mut self) {
        // SAFETY: the queue reference is valid; no callback runs after this returns.
        unsafe { rdsys::rd_kafka_queue_cb_event_enable(self.0 .0.as_ptr(), None, null_mut()) }
    }
}

/// Called by librdkafka (on its own threads, with the consumer queue's lock held) when the
/// consumer's queue gets an event while empty: makes a wait on the records queue return.
unsafe extern "C" fn cut_wait_short(_: *mut rdsys::rd_kafka_t, records: *mut c_void) {
    // SAFETY: `records` is the reader's queue, alive while the wake-up is set (the reader
    // removes the wake-up before it releases the queue). Locking it under the consumer
    // queue's lock cannot deadlock: nothing takes the two the other way round.
    unsafe { rdsys::rd_kafka_queue_yield(records as *mut rdsys::rd_kafka_queue_t) }
}

/// The partitions routed to a reader's queue, and when they were last forwarded again.
struct Routes {
    partitions: BTreeSet<(CString, i32)>,
    rerouted_at: Instant,
}

/// A reader's queue, for routing partitions to it from a rebalance callback.
#[derive(Clone)]
pub struct RecordsQueue {
    queue: NonNull<rdsys::rd_kafka_queue_t>,
    routes: Arc<Mutex<Routes>>,
}

// SAFETY: a handle to a librdkafka queue (locked internally), used on the reader's thread.
unsafe impl Send for RecordsQueue {}
unsafe impl Sync for RecordsQueue {}

impl RecordsQueue {
    fn routes(&self) -> std::sync::MutexGuard<'_, Routes> {
        self.routes.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Sends a partition's records to this queue (see [`BatchReader::route`]), now and
    /// whenever the reader forwards its partitions again, until [`unroute`](Self::unroute).
    ///
    /// # Safety
    /// The queue must still exist (its reader not dropped) and `client` be the client it
    /// was made for.
    pub unsafe fn route(
        &self,
        client: *mut rdsys::rd_kafka_t,
        topic: &str,
        partition: i32,
    ) -> Result<(), String> {
        let name = CString::new(topic).map_err(|e| format!("topic name {topic:?}: {e}"))?;
        // SAFETY: as this function's.
        unsafe { forward(client, self.queue, &name, partition) }?;
        self.routes().partitions.insert((name, partition));
        Ok(())
    }

    /// Stops forwarding a partition again (it was unassigned; librdkafka drops its current
    /// forwarding itself when it stops fetching it).
    pub fn unroute(&self, topic: &str, partition: i32) {
        if let Ok(name) = CString::new(topic) {
            self.routes().partitions.remove(&(name, partition));
        }
    }
}

/// Forwards every routed partition to `queue` again, when [`REROUTE_EVERY`] has passed
/// since the last time.
///
/// # Safety
/// As [`RecordsQueue::route`].
unsafe fn reroute(
    client: *mut rdsys::rd_kafka_t,
    queue: NonNull<rdsys::rd_kafka_queue_t>,
    routes: &Mutex<Routes>,
) {
    let mut routes = routes.lock().unwrap_or_else(|p| p.into_inner());
    if routes.rerouted_at.elapsed() < REROUTE_EVERY {
        return;
    }
    routes.rerouted_at = Instant::now();
    for (name, partition) in &routes.partitions {
        // SAFETY: as this function's. A partition the client no longer knows is simply
        // not forwarded; its next assignment routes it again.
        let _ = unsafe { forward(client, queue, name, *partition) };
    }
}

/// Forwards a partition's queue to `queue`: records already in the partition's queue move
/// there, in their order, and those fetched later go there.
///
/// # Safety
/// As [`RecordsQueue::route`].
unsafe fn forward(
    client: *mut rdsys::rd_kafka_t,
    queue: NonNull<rdsys::rd_kafka_queue_t>,
    topic: &CStr,
    partition: i32,
) -> Result<(), String> {
    // SAFETY: the client pointer is valid while the consumer lives; the call returns a new
    // reference to the partition's queue (creating the partition's state if need be),
    // released below after forwarding it.
    unsafe {
        let partition_queue =
            rdsys::rd_kafka_queue_get_partition(client, topic.as_ptr(), partition);
        if partition_queue.is_null() {
            return Err(format!(
                "no queue for {}[{partition}]",
                topic.to_string_lossy()
            ));
        }
        rdsys::rd_kafka_queue_forward(partition_queue, queue.as_ptr());
        rdsys::rd_kafka_queue_destroy(partition_queue);
    }
    Ok(())
}

pub struct BatchReader<C: ConsumerContext + 'static = DefaultConsumerContext> {
    // Declared before the queue and the consumer: dropped first.
    wake: Option<WakeOnEvents>,
    // Declared before the consumer: dropped first.
    queue: QueueRef,
    routes: Arc<Mutex<Routes>>,
    consumer: BaseConsumer<C>,
}

/// Messages taken from the queue in one call, destroyed when dropped (after they were
/// shown, or on a panic while showing them).
struct Taken {
    messages: [*mut rdsys::rd_kafka_message_t; CHUNK],
    len: usize,
}

impl Taken {
    fn messages(&self) -> &[*mut rdsys::rd_kafka_message_t] {
        &self.messages[..self.len]
    }
}

impl Drop for Taken {
    fn drop(&mut self) {
        for &m in self.messages() {
            // SAFETY: handed over by the client and not destroyed yet; the client still
            // lives (the reader is borrowed while this exists).
            unsafe { rdsys::rd_kafka_message_destroy(m) };
        }
    }
}

// SAFETY: the consumer and its queue references, all Send.
unsafe impl<C: ConsumerContext + 'static> Send for BatchReader<C> {}

impl<C: ConsumerContext + 'static> BatchReader<C> {
    /// Wraps a consumer that assigns its partitions itself (never subscribes) and commits
    /// nothing (a commit's answer on its queue is not a record).
    pub fn new(consumer: BaseConsumer<C>) -> Result<Self, String> {
        // SAFETY: the client pointer is valid while `consumer` lives; the call returns a new
        // queue (a reference the reader owns).
        let queue = unsafe { rdsys::rd_kafka_queue_new(consumer.client().native_ptr()) };
        let queue = NonNull::new(queue).ok_or("librdkafka could not create a queue")?;
        Ok(Self {
            wake: None,
            queue: QueueRef(queue),
            routes: Arc::new(Mutex::new(Routes {
                partitions: BTreeSet::new(),
                rerouted_at: Instant::now(),
            })),
            consumer,
        })
    }

    /// Wraps a group consumer: anything on its own queue (a rebalance, a commit's result,
    /// an error) cuts a wait in [`read`](Self::read) short, so the caller serves that queue
    /// with `BaseConsumer::poll` before and after each read.
    pub fn for_group(consumer: BaseConsumer<C>) -> Result<Self, String> {
        let mut reader = Self::new(consumer)?;
        // SAFETY: the client pointer is valid while the consumer lives; the call returns a
        // new reference to its consumer queue (null if it has none).
        let events =
            unsafe { rdsys::rd_kafka_queue_get_consumer(reader.consumer.client().native_ptr()) };
        let events = NonNull::new(events).ok_or("the client has no consumer queue")?;
        let events = WakeOnEvents(QueueRef(events));
        // SAFETY: both queue references are valid; the reader's queue outlives the wake-up
        // (see `WakeOnEvents`).
        unsafe {
            rdsys::rd_kafka_queue_cb_event_enable(
                events.0 .0.as_ptr(),
                Some(cut_wait_short),
                reader.queue.0.as_ptr() as *mut c_void,
            )
        };
        reader.wake = Some(events);
        Ok(reader)
    }

    /// Events (not records) waiting on a group consumer's own queue; 0 for a reader made
    /// with [`new`](Self::new).
    pub fn events_queued(&self) -> usize {
        self.wake.as_ref().map_or(0, |w| {
            // SAFETY: the queue reference is valid.
            unsafe { rdsys::rd_kafka_queue_length(w.0 .0.as_ptr()) }
        })
    }

    /// The reader's queue, for routing partitions from a rebalance callback.
    pub fn records_queue(&self) -> RecordsQueue {
        RecordsQueue {
            queue: self.queue.0,
            routes: self.routes.clone(),
        }
    }

    /// Sends a partition's records to the reader's queue. Call it before assigning the
    /// partition, so that none of its records arrive anywhere else; they keep coming here
    /// (see the module doc) until [`unroute`](Self::unroute).
    pub fn route(&self, topic: &str, partition: i32) -> Result<(), String> {
        // SAFETY: the queue is this reader's, made for this consumer's client.
        unsafe {
            self.records_queue()
                .route(self.consumer.client().native_ptr(), topic, partition)
        }
    }

    /// Forgets a partition routed here, when it is unassigned.
    pub fn unroute(&self, topic: &str, partition: i32) {
        self.records_queue().unroute(topic, partition);
    }

    /// Records (and per-partition errors) waiting in the reader's queue.
    pub fn queued(&self) -> usize {
        // SAFETY: the queue reference is valid.
        unsafe { rdsys::rd_kafka_queue_length(self.queue.0.as_ptr()) }
    }

    pub fn consumer(&self) -> &BaseConsumer<C> {
        &self.consumer
    }

    /// Hands up to `max` records to `f`, in the order the client queued them: waits up to
    /// `wait` for the first, then takes only what is queued already. `f` returns `false`
    /// to stop early; the rest of the batch it was given is still shown to it (and must be
    /// dealt with: the records left the client's queue), flagged by the second argument.
    /// The third is the partition and key of the record [`AHEAD`] places later in the
    /// batch, when there is one (to start loading what it will need). Returns how many
    /// records `f` saw.
    pub fn read(
        &self,
        wait: Duration,
        max: usize,
        mut f: impl FnMut(Record<'_>, bool, Option<(i32, &[u8])>) -> bool,
    ) -> usize {
        // SAFETY: the queue is this reader's, made for this consumer's client.
        unsafe {
            reroute(
                self.consumer.client().native_ptr(),
                self.queue.0,
                &self.routes,
            )
        };
        let mut seen = 0;
        let mut stopped = false;
        while seen < max && !stopped {
            let timeout = if seen == 0 {
                wait.as_millis().min(i32::MAX as u128) as i32
            } else {
                0
            };
            // The first call waits for one record only: asked for more, librdkafka waits
            // until the batch is full or the time is up.
            let want = if seen == 0 { 1 } else { CHUNK.min(max - seen) };
            let mut taken = Taken {
                messages: [null_mut(); CHUNK],
                len: 0,
            };
            // SAFETY: the queue reference is valid; the array has room for `want <= CHUNK`
            // pointers, and the call writes `n <= want` of them.
            let n = unsafe {
                rdsys::rd_kafka_consume_batch_queue(
                    self.queue.0.as_ptr(),
                    timeout,
                    taken.messages.as_mut_ptr(),
                    want,
                )
            };
            taken.len = n.max(0) as usize;
            let n = taken.len;
            let bytes = |ptr: *mut std::ffi::c_void, len: usize| {
                // SAFETY: the client's buffer of `len` bytes, alive as its message.
                (!ptr.is_null())
                    .then(|| unsafe { std::slice::from_raw_parts(ptr as *const u8, len) })
            };
            let messages = taken.messages();
            for (i, &m) in messages.iter().enumerate() {
                // SAFETY: each pointer is a message the client handed over; all stay valid
                // until destroyed after the loop, once `f` has seen them.
                let r = unsafe { &*m };
                let ahead = messages.get(i + AHEAD).and_then(|&a| {
                    // SAFETY: as above.
                    let a = unsafe { &*a };
                    bytes(a.key, a.key_len).map(|key| (a.partition, key))
                });
                // SAFETY: a message's topic handle (null for an error of no partition) and
                // its name live as long as the message.
                let topic = (!r.rkt.is_null())
                    .then(|| unsafe { CStr::from_ptr(rdsys::rd_kafka_topic_name(r.rkt)) });
                let mut kind = rdsys::rd_kafka_timestamp_type_t::RD_KAFKA_TIMESTAMP_NOT_AVAILABLE;
                // SAFETY: as above; the call only reads the message.
                let timestamp = unsafe { rdsys::rd_kafka_message_timestamp(m, &mut kind) };
                let record = Record {
                    topic: topic.and_then(|t| t.to_str().ok()).unwrap_or_default(),
                    partition: r.partition,
                    offset: r.offset,
                    key: bytes(r.key, r.key_len),
                    payload: bytes(r.payload, r.len),
                    timestamp: (kind
                        != rdsys::rd_kafka_timestamp_type_t::RD_KAFKA_TIMESTAMP_NOT_AVAILABLE)
                        .then_some(timestamp),
                    error: (r.err != rdsys::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR)
                        .then(|| r.err.into()),
                };
                seen += 1;
                if !f(record, stopped, ahead) {
                    stopped = true;
                }
            }
            drop(taken);
            if n < want {
                break;
            }
        }
        seen
    }
}
