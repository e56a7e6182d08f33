//! Reading a consumer's records in batches straight from its librdkafka queue.
//!
//! `BaseConsumer::poll` hands over one record a call, and each call takes the queue's
//! lock, reads the clock twice and allocates the event that wraps the record: in a profile
//! of a restore (1 M changelog records) that per-record path was about a tenth of the
//! member threads' samples. One `rd_kafka_consume_batch_queue` call hands over many.
//!
//! The records of the partitions the reader routes ([`BatchReader::route`], before it
//! assigns them) go to a queue of the reader's own, and only there: librdkafka keeps a
//! partition's forwarding that the application set. Everything else the client queues —
//! its log lines and errors — stays on the consumer's queue, which `BaseConsumer::poll`
//! serves as before (through the connector's logging). For a consumer that assigns its
//! partitions itself and commits nothing.

use std::ptr::NonNull;
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext, DefaultConsumerContext};
use rdkafka::error::RDKafkaErrorCode;
use rdkafka_sys as rdsys;

/// Records taken from the queue in one call, at most.
const CHUNK: usize = 512;
/// How far ahead of the record shown the reader names the next one to prepare for: far
/// enough for a cache miss started there to be served when it is reached.
pub const AHEAD: usize = 8;

/// One record, borrowed from the client until the callback returns.
pub struct Record<'a> {
    pub partition: i32,
    pub offset: i64,
    pub key: Option<&'a [u8]>,
    pub payload: Option<&'a [u8]>,
    /// Set when the client reports an error for the partition instead of a record.
    pub error: Option<RDKafkaErrorCode>,
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

pub struct BatchReader<C: ConsumerContext + 'static = DefaultConsumerContext> {
    // Declared before the consumer: dropped first.
    queue: QueueRef,
    consumer: BaseConsumer<C>,
    /// Messages taken and not yet destroyed (only during `read`, or after a panic in it:
    /// then `drop` destroys them).
    taken: Vec<*mut rdsys::rd_kafka_message_t>,
}

impl<C: ConsumerContext + 'static> Drop for BatchReader<C> {
    fn drop(&mut self) {
        for m in self.taken.drain(..) {
            // SAFETY: handed over by the client and not destroyed yet (the vector is
            // emptied as its messages are destroyed); the client still lives.
            unsafe { rdsys::rd_kafka_message_destroy(m) };
        }
    }
}

// SAFETY: the message pointers are only held during `read` (the vector is empty between
// calls); the rest is the consumer and its queue reference, both Send.
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
            queue: QueueRef(queue),
            consumer,
            taken: Vec::with_capacity(CHUNK),
        })
    }

    /// Sends a partition's records to the reader's queue. Call it before assigning the
    /// partition, so that none of its records arrive anywhere else.
    pub fn route(&self, topic: &str, partition: i32) -> Result<(), String> {
        let name = std::ffi::CString::new(topic).map_err(|e| e.to_string())?;
        // SAFETY: the client pointer is valid while the consumer lives; the call returns a
        // new reference to the partition's queue (creating the partition's state if need
        // be), released below after forwarding it.
        unsafe {
            let partition_queue = rdsys::rd_kafka_queue_get_partition(
                self.consumer.client().native_ptr(),
                name.as_ptr(),
                partition,
            );
            if partition_queue.is_null() {
                return Err(format!("no queue for {topic}[{partition}]"));
            }
            rdsys::rd_kafka_queue_forward(partition_queue, self.queue.0.as_ptr());
            rdsys::rd_kafka_queue_destroy(partition_queue);
        }
        Ok(())
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
        &mut self,
        wait: Duration,
        max: usize,
        mut f: impl FnMut(Record<'_>, bool, Option<(i32, &[u8])>) -> bool,
    ) -> usize {
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
            self.taken.clear();
            // SAFETY: the queue reference is valid; the array has room for `want`
            // pointers, and the call writes `n <= want` of them.
            let n = unsafe {
                let n = rdsys::rd_kafka_consume_batch_queue(
                    self.queue.0.as_ptr(),
                    timeout,
                    self.taken.as_mut_ptr(),
                    want,
                );
                let n = n.max(0) as usize;
                self.taken.set_len(n);
                n
            };
            let bytes = |ptr: *mut std::ffi::c_void, len: usize| {
                // SAFETY: the client's buffer of `len` bytes, alive as its message.
                (!ptr.is_null())
                    .then(|| unsafe { std::slice::from_raw_parts(ptr as *const u8, len) })
            };
            for (i, &m) in self.taken.iter().enumerate() {
                // SAFETY: each pointer is a message the client handed over; all stay valid
                // until destroyed after the loop, once `f` has seen them.
                let r = unsafe { &*m };
                let ahead = self.taken.get(i + AHEAD).and_then(|&a| {
                    // SAFETY: as above.
                    let a = unsafe { &*a };
                    bytes(a.key, a.key_len).map(|key| (a.partition, key))
                });
                let record = Record {
                    partition: r.partition,
                    offset: r.offset,
                    key: bytes(r.key, r.key_len),
                    payload: bytes(r.payload, r.len),
                    error: (r.err != rdsys::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR)
                        .then(|| r.err.into()),
                };
                seen += 1;
                if !f(record, stopped, ahead) {
                    stopped = true;
                }
            }
            for &m in &self.taken {
                // SAFETY: handed over by the client, destroyed once.
                unsafe { rdsys::rd_kafka_message_destroy(m) };
            }
            self.taken.clear();
            if n < want {
                break;
            }
        }
        seen
    }
}
