//! Asking the broker where inputs end, off the loop.
//!
//! An empty input counts as at its end for the merge only once the broker confirmed it
//! after the other input's newest record arrived (see `Core::refresh_ends`). The answer is
//! a ListOffsets request: the high watermark, or the last stable offset under
//! `read_committed`. Asked through the group consumer, that request queues on the same
//! connection behind the consumer's long-polling fetch (up to `fetch.wait.max.ms`, 500 ms)
//! and the loop would block meanwhile. Here a client of its own (also `read_committed`)
//! asks on a thread of its own: the loop sends a question, goes on with its other tasks and
//! reads the answer when it has come. The questions waiting when the thread is free go into
//! one request (ListOffsets for timestamp "latest", one per partition leader): a member
//! whose tasks are caught up asks for every quiet input about every 10 ms, and one request
//! per question — two, as librdkafka's watermark query asks for both ends — was a thousand
//! requests a second at 5,000 events/s over 6 partitions.
//!
//! ```text
//!   loop ── Ask{token, rank, partition} ──► ends thread ── ListOffsets ──► broker
//!   loop ◄── Answer{token, high} ───────────┘
//! ```

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError, Sender};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaErrorCode;
use rdkafka::{Offset, TopicPartitionList};

use super::config::Settings;
use super::error::RuntimeError;
use super::input::InputTopics;
use super::kafka::standalone_consumer;

/// Bound of one ListOffsets request.
const ASK_TIMEOUT: Duration = Duration::from_secs(5);

/// A question: where does input `rank` of task `partition` end?
#[derive(Debug, Clone, Copy)]
struct Ask {
    token: u64,
    rank: usize,
    partition: i32,
}

/// The broker's answer to the question with `token`.
#[derive(Debug)]
pub struct Answer {
    pub token: u64,
    pub rank: usize,
    pub partition: i32,
    /// The high watermark (the last stable offset under `read_committed`), taken by the
    /// broker after the question was sent.
    pub high: Result<i64, KafkaError>,
}

pub struct Ends {
    asks: Option<Sender<Ask>>,
    answers: Receiver<Answer>,
    /// Answers read while waiting for others ([`Ends::ask_and_wait`]).
    stash: VecDeque<Answer>,
    next_token: u64,
    worker: Option<JoinHandle<()>>,
}

impl Ends {
    pub fn start(settings: &Settings, topics: Arc<InputTopics>) -> Result<Self, RuntimeError> {
        let client: BaseConsumer = standalone_consumer(settings, "ends")?;
        let (ask_tx, ask_rx) = channel::<Ask>();
        let (answer_tx, answer_rx) = channel::<Answer>();
        let worker = std::thread::Builder::new()
            .name("input-ends".into())
            .spawn(move || {
                // Ends when the loop drops its side.
                while let Ok(first) = ask_rx.recv() {
                    // Every question waiting by now goes into the same request.
                    let asks: Vec<Ask> = std::iter::once(first).chain(ask_rx.try_iter()).collect();
                    for answer in answer_all(&client, &topics, &asks) {
                        if answer_tx.send(answer).is_err() {
                            return;
                        }
                    }
                }
            })
            .map_err(|e| RuntimeError::Setup(format!("starting the input-ends thread: {e}")))?;
        Ok(Self {
            asks: Some(ask_tx),
            answers: answer_rx,
            stash: VecDeque::new(),
            next_token: 1,
            worker: Some(worker),
        })
    }

    /// Sends a question; the answer carries the returned token.
    pub fn ask(&mut self, rank: usize, partition: i32) -> Result<u64, RuntimeError> {
        let token = self.next_token;
        self.next_token += 1;
        self.asks
            .as_ref()
            .and_then(|a| {
                a.send(Ask {
                    token,
                    rank,
                    partition,
                })
                .ok()
            })
            .ok_or_else(|| RuntimeError::Setup("the input-ends thread stopped".into()))?;
        Ok(token)
    }

    /// An answer that has come, if any (without waiting).
    pub fn answered(&mut self) -> Option<Answer> {
        self.stash
            .pop_front()
            .or_else(|| self.answers.try_recv().ok())
    }

    /// Asks where each of `inputs` (rank, partition) ends and waits for the answers, in the
    /// same order. Other answers that come meanwhile are kept for [`Ends::answered`].
    pub fn ask_and_wait(&mut self, inputs: &[(usize, i32)]) -> Result<Vec<i64>, RuntimeError> {
        let tokens = inputs
            .iter()
            .map(|&(rank, p)| self.ask(rank, p))
            .collect::<Result<Vec<_>, _>>()?;
        let mut highs: Vec<Option<i64>> = vec![None; tokens.len()];
        let deadline = Instant::now() + ASK_TIMEOUT * (tokens.len() as u32 + 1);
        while highs.iter().any(Option::is_none) {
            let left = deadline.saturating_duration_since(Instant::now());
            let answer = match self.answers.recv_timeout(left) {
                Ok(a) => a,
                Err(RecvTimeoutError::Timeout) => {
                    return Err(RuntimeError::kafka("fetching high watermarks")(
                        KafkaError::MetadataFetch(RDKafkaErrorCode::OperationTimedOut),
                    ))
                }
                Err(RecvTimeoutError::Disconnected) => {
                    return Err(RuntimeError::Setup("the input-ends thread stopped".into()))
                }
            };
            match tokens.iter().position(|t| *t == answer.token) {
                Some(k) => {
                    highs[k] = Some(
                        answer
                            .high
                            .map_err(RuntimeError::kafka("fetching high watermarks"))?,
                    )
                }
                None => self.stash.push_back(answer),
            }
        }
        Ok(highs
            .into_iter()
            .map(|h| h.expect("all answered"))
            .collect())
    }
}

/// The answers to `asks`: the latest offsets of every partition asked (duplicates once),
/// read in one ListOffsets request per partition leader. Inputs whose answer failed are
/// asked once more after their topics' metadata was read again: this client reads no
/// partition, so nothing else refreshes what it knows of a topic, and after a broker restart
/// it can keep answering "unknown partition" from a stale view.
fn answer_all(client: &BaseConsumer, topics: &InputTopics, asks: &[Ask]) -> Vec<Answer> {
    let wanted: BTreeSet<(usize, i32)> = asks.iter().map(|a| (a.rank, a.partition)).collect();
    let mut highs = latest_offsets(client, topics, &wanted);
    let failed: BTreeSet<(usize, i32)> = highs
        .iter()
        .filter(|(_, high)| high.is_err())
        .map(|(input, _)| *input)
        .collect();
    if !failed.is_empty() {
        let ranks: BTreeSet<usize> = failed.iter().map(|(rank, _)| *rank).collect();
        for rank in ranks {
            let _ = client.fetch_metadata(Some(&topics[rank]), ASK_TIMEOUT);
        }
        highs.extend(latest_offsets(client, topics, &failed));
    }
    asks.iter()
        .map(|a| Answer {
            token: a.token,
            rank: a.rank,
            partition: a.partition,
            high: highs[&(a.rank, a.partition)].clone(),
        })
        .collect()
}

/// The latest offset of each input partition (the last stable offset: the client reads
/// `read_committed`), from ListOffsets requests for timestamp "latest", one per leader.
fn latest_offsets(
    client: &BaseConsumer,
    topics: &InputTopics,
    inputs: &BTreeSet<(usize, i32)>,
) -> BTreeMap<(usize, i32), Result<i64, KafkaError>> {
    let mut asked = TopicPartitionList::with_capacity(inputs.len());
    for &(rank, partition) in inputs {
        asked.add_partition(&topics[rank], partition);
    }
    if let Err(e) = asked.set_all_offsets(Offset::End) {
        return inputs.iter().map(|i| (*i, Err(e.clone()))).collect();
    }
    let answered = match client.offsets_for_times(asked, ASK_TIMEOUT) {
        Ok(answered) => answered,
        Err(e) => return inputs.iter().map(|i| (*i, Err(e.clone()))).collect(),
    };
    inputs
        .iter()
        .map(|&(rank, partition)| {
            let high = match answered.find_partition(&topics[rank], partition) {
                None => Err(KafkaError::OffsetFetch(RDKafkaErrorCode::UnknownPartition)),
                Some(e) => e.error().and_then(|()| match e.offset() {
                    Offset::Offset(high) => Ok(high),
                    _ => Err(KafkaError::OffsetFetch(RDKafkaErrorCode::OffsetOutOfRange)),
                }),
            };
            ((rank, partition), high)
        })
        .collect()
}

impl Drop for Ends {
    fn drop(&mut self) {
        // Closing the channel ends the thread once its request (bounded) returns.
        self.asks.take();
        if let Some(w) = self.worker.take() {
            let _ = w.join();
        }
    }
}
