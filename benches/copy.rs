//! The bare rdkafka copy: what moving the connector's input to an output costs with no rules
//! at all. It consumes the input topics and produces every record, key and bytes unchanged, to
//! one output topic, with the connector's client settings — a group consumer with
//! `read_committed`, the range assignor and `fetch.queue.backoff.ms=10`; an idempotent producer
//! with the `murmur2_random` partitioner and the connector's producer defaults (`linger.ms=50`,
//! delivery reports only for failures, LZ4 compression) and the connector's pass-through settings from the
//! environment (`CONNECTOR_KAFKA__*`, on both clients), flushed as the connector flushes
//! before a commit (`flush_promptly`) — on one thread, one message per `poll` (rust-rdkafka's usual API; the
//! connector reads its inputs in batches with librdkafka's batch API, `docs/runtime.md`).
//! It is the floor the connector is measured against (`scripts/bench.sh`).
//!
//! Modes:
//! - `alo` (at-least-once): every `--commit-ms`, flush the producer, then commit the offsets
//!   (last copied + 1) — outputs first, as the connector's `at_least_once` does;
//! - `eos` (exactly-once): a transactional producer; every `--commit-ms`,
//!   `send_offsets_to_transaction` with the group metadata, then `commit_transaction`.
//!
//! A single instance (no rebalance handling beyond what librdkafka does). Runs until SIGTERM
//! or SIGINT, commits once more and prints a one-line summary.
//!
//! ```text
//! copy --bootstrap HOST:PORT --group G --inputs T1,T2 --output T --mode alo|eos [--commit-ms 100]
//! ```

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};

use campaign_connector::runtime::config::load;
use campaign_connector::runtime::kafka::{flush_promptly, PRODUCER_DEFAULTS};

const CALL_TIMEOUT: Duration = Duration::from_secs(10);

struct Args {
    bootstrap: String,
    group: String,
    inputs: Vec<String>,
    output: String,
    exactly_once: bool,
    commit_every: Duration,
}

/// The connector's Kafka pass-through (`CONNECTOR_KAFKA__LINGER_MS=20` sets `linger.ms`),
/// read as the connector reads it and applied to both clients as the connector applies it
/// to all of its clients: a setting exported for a benchmark run reaches both sides alike.
fn pass_through(config: &mut ClientConfig) {
    let env = std::env::vars().filter(|(k, _)| k.starts_with("CONNECTOR_KAFKA__"));
    let settings = load(None, env).unwrap_or_else(|e| usage(&format!("CONNECTOR_KAFKA__*: {e}")));
    for (key, value) in &settings.kafka {
        config.set(key, value);
    }
}

fn usage(why: &str) -> ! {
    eprintln!(
        "copy: {why}\nusage: copy --bootstrap HOST:PORT --group G --inputs T1,T2 --output T --mode alo|eos [--commit-ms 100]\n(scripts/bench.sh runs it)"
    );
    std::process::exit(2)
}

fn args() -> Args {
    let mut map = HashMap::new();
    let mut it = std::env::args().skip(1);
    while let Some(key) = it.next() {
        // `cargo bench` passes `--bench`; it takes no value.
        if key == "--bench" {
            continue;
        }
        let Some(name) = key.strip_prefix("--") else {
            usage(&format!("unexpected argument {key}"))
        };
        let value = it
            .next()
            .unwrap_or_else(|| usage(&format!("{key} needs a value")));
        map.insert(name.to_string(), value);
    }
    let mut get = |k: &str| {
        map.remove(k)
            .unwrap_or_else(|| usage(&format!("missing --{k}")))
    };
    let exactly_once = match get("mode").as_str() {
        "alo" => false,
        "eos" => true,
        other => usage(&format!("--mode {other}: alo or eos")),
    };
    Args {
        bootstrap: get("bootstrap"),
        group: get("group"),
        inputs: get("inputs").split(',').map(str::to_string).collect(),
        output: get("output"),
        exactly_once,
        commit_every: Duration::from_millis(
            map.remove("commit-ms")
                .map(|v| v.parse().unwrap_or_else(|_| usage("--commit-ms: a number")))
                .unwrap_or(100),
        ),
    }
}

fn main() {
    let a = args();
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGTERM, signal_hook::consts::SIGINT] {
        signal_hook::flag::register(signal, Arc::clone(&stop)).expect("signal handler");
    }

    let mut consumer_config = ClientConfig::new();
    if let Ok(debug) = std::env::var("COPY_DEBUG") {
        consumer_config.set("debug", debug);
    }
    consumer_config
        .set("bootstrap.servers", &a.bootstrap)
        .set("group.id", &a.group)
        .set("client.id", format!("{}-copy", a.group))
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("isolation.level", "read_committed")
        .set("auto.offset.reset", "earliest")
        .set("partition.assignment.strategy", "range")
        // The connector's setting: librdkafka's 1 s default delivers a busy partition in
        // bursts a second apart.
        .set("fetch.queue.backoff.ms", "10");
    pass_through(&mut consumer_config);
    let consumer: BaseConsumer = consumer_config.create().expect("consumer");
    let mut producer_config = ClientConfig::new();
    producer_config
        .set("bootstrap.servers", &a.bootstrap)
        .set("partitioner", "murmur2_random")
        .set("enable.idempotence", "true");
    for (key, value) in PRODUCER_DEFAULTS {
        producer_config.set(key, value);
    }
    if a.exactly_once {
        producer_config
            .set("transactional.id", format!("{}-copy", a.group))
            .set("transaction.timeout.ms", "10000");
    }
    pass_through(&mut producer_config);
    let producer: BaseProducer = producer_config.create().expect("producer");
    let inputs: Vec<&str> = a.inputs.iter().map(String::as_str).collect();
    consumer.subscribe(&inputs).expect("subscribe");
    if a.exactly_once {
        producer
            .init_transactions(CALL_TIMEOUT)
            .expect("init_transactions");
        producer.begin_transaction().expect("begin_transaction");
    }

    // Next offset to commit per (topic, partition): last copied + 1.
    let mut next: HashMap<(String, i32), i64> = HashMap::new();
    let mut dirty = false;
    let mut copied = 0u64;
    let mut commits = 0u64;
    let started = Instant::now();
    let mut next_commit = Instant::now() + a.commit_every;
    loop {
        let stopping = stop.load(Ordering::Relaxed);
        if Instant::now() >= next_commit || stopping {
            if dirty {
                commit(&a, &consumer, &producer, &next);
                commits += 1;
                dirty = false;
            }
            // The next interval starts when this commit is done.
            next_commit = Instant::now() + a.commit_every;
        }
        if stopping {
            break;
        }
        let wait = next_commit
            .saturating_duration_since(Instant::now())
            .min(Duration::from_millis(100));
        match consumer.poll(wait) {
            Some(Ok(m)) => {
                let mut record = BaseRecord::<[u8], [u8]>::to(&a.output);
                if let Some(k) = m.key() {
                    record = record.key(k);
                }
                if let Some(p) = m.payload() {
                    record = record.payload(p);
                }
                if let Some(t) = m.timestamp().to_millis() {
                    record = record.timestamp(t);
                }
                loop {
                    match producer.send(record) {
                        Ok(()) => break,
                        Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), r)) => {
                            record = r;
                            producer.poll(Duration::from_millis(1));
                        }
                        Err((e, _)) => panic!("producing: {e}"),
                    }
                }
                next.insert((m.topic().to_string(), m.partition()), m.offset() + 1);
                dirty = true;
                copied += 1;
            }
            Some(Err(e)) => eprintln!("copy: consumer error: {e}"),
            None => {}
        }
        producer.poll(Duration::ZERO);
    }
    if a.exactly_once {
        let _ = producer.abort_transaction(CALL_TIMEOUT);
    }
    consumer.unsubscribe();
    let secs = started.elapsed().as_secs_f64();
    println!(
        "copy {}: {copied} records in {secs:.2} s ({:.0}/s), {commits} commits",
        if a.exactly_once { "eos" } else { "alo" },
        copied as f64 / secs
    );
}

/// Commits what was copied: inside the transaction (offsets with the group metadata read
/// right before the call, so the coordinator can fence a zombie), or after a flush.
fn commit(
    a: &Args,
    consumer: &BaseConsumer,
    producer: &BaseProducer,
    next: &HashMap<(String, i32), i64>,
) {
    let mut tpl = TopicPartitionList::new();
    for ((topic, partition), offset) in next {
        tpl.add_partition_offset(topic, *partition, Offset::Offset(*offset))
            .expect("offset");
    }
    if a.exactly_once {
        let metadata = consumer.group_metadata().expect("group metadata");
        producer
            .send_offsets_to_transaction(&tpl, &metadata, CALL_TIMEOUT)
            .expect("send_offsets_to_transaction");
        flush_promptly(producer, CALL_TIMEOUT).expect("flush");
        producer
            .commit_transaction(CALL_TIMEOUT)
            .expect("commit_transaction");
        producer.begin_transaction().expect("begin_transaction");
    } else {
        flush_promptly(producer, CALL_TIMEOUT).expect("flush");
        consumer
            .commit(&tpl, CommitMode::Async)
            .expect("commit offsets");
    }
}
