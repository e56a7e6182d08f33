//! Runtime errors, each with its source and what the caller does about it
//! ([`Disposition`]): retry, dead-letter, or stop.

use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use thiserror::Error;

use super::kafka::TopicError;
use super::rules::Disposition;
use crate::codec::{EncodeError, ErrorClass};

#[derive(Debug, Error)]
pub enum RuntimeError {
    #[error(transparent)]
    Topics(#[from] TopicError),
    #[error("{during}: {source}")]
    Kafka {
        during: &'static str,
        source: KafkaError,
    },
    #[error("encoding a {record} for topic {topic}: {source}")]
    Encode {
        record: &'static str,
        topic: String,
        source: Box<EncodeError>,
    },
    #[error("restoring {topic}[{partition}] at offset {offset}: {message}")]
    Restore {
        topic: String,
        partition: i32,
        offset: i64,
        message: String,
    },
    /// A client call that did not return within its bound (librdkafka does not bound every
    /// call it is given a timeout for): the client is given up and replaced.
    #[error("{during}: no answer within {waited_ms} ms; the producer is replaced")]
    Wedged {
        during: &'static str,
        waited_ms: u64,
    },
    /// Records of the output failed delivery, so the input offsets are not committed past
    /// them (at-least-once), or the transaction that holds them cannot commit.
    #[error("{count} output record(s) failed delivery since the last commit (the last to {record}: {source}); the input offsets stay where they were committed")]
    Delivery {
        count: u64,
        record: String,
        source: KafkaError,
    },
    #[error("codec setup: {0}")]
    Codec(String),
    #[error("{0}")]
    Setup(String),
    #[error("giving up after {attempts} attempts over {seconds} s of the same failure: {last}")]
    Exhausted {
        attempts: u32,
        seconds: i64,
        last: String,
    },
}

impl From<KafkaError> for RuntimeError {
    fn from(source: KafkaError) -> Self {
        Self::Kafka {
            during: "a Kafka request",
            source,
        }
    }
}

impl RuntimeError {
    pub fn kafka(during: &'static str) -> impl FnOnce(KafkaError) -> Self {
        move |source| Self::Kafka { during, source }
    }

    /// What the caller does with this error.
    pub fn disposition(&self) -> Disposition {
        match self {
            Self::Kafka { source, .. } | Self::Delivery { source, .. } => kafka_disposition(source),
            Self::Encode { source, .. } if source.class() == ErrorClass::Retry => {
                Disposition::Retry
            }
            // An output record that does not fit its own schema, or a schema the registry
            // refuses: a bug or a configuration problem that the next attempt repeats.
            Self::Encode { .. } => Disposition::Stop,
            Self::Topics(TopicError::Kafka(e)) => kafka_disposition(e),
            Self::Topics(TopicError::Connect { .. }) => Disposition::Retry,
            Self::Wedged { .. } => Disposition::Retry,
            // A changelog record this version cannot read: restoring without it would lose
            // state, so the task cannot be processed.
            Self::Restore { .. } => Disposition::Stop,
            Self::Topics(_) | Self::Codec(_) | Self::Setup(_) | Self::Exhausted { .. } => {
                Disposition::Stop
            }
        }
    }

    /// The failure without its variable parts (offsets, timings), so that the retry
    /// budget recognises the same failure repeating.
    pub fn signature(&self) -> String {
        match self {
            Self::Kafka { during, source } => format!(
                "{during}: {:?}",
                source.rdkafka_error_code().map(|c| c as i32)
            ),
            Self::Encode { record, topic, .. } => format!("encode {record} {topic}"),
            Self::Wedged { during, .. } => format!("wedged: {during}"),
            Self::Delivery { record, source, .. } => format!(
                "delivery {record}: {:?}",
                source.rdkafka_error_code().map(|c| c as i32)
            ),
            Self::Restore {
                topic, partition, ..
            } => format!("restore {topic}[{partition}]"),
            other => other.to_string(),
        }
    }
}

/// Kafka errors that no retry fixes: credentials, permissions, configuration, a record
/// too large for the broker. Everything else (transport, timeouts, coordinator and leader
/// moves, fencing — a new producer recovers from that) is retried.
pub fn kafka_disposition(e: &KafkaError) -> Disposition {
    use RDKafkaErrorCode as C;
    match e.rdkafka_error_code() {
        Some(
            C::Authentication
            | C::SaslAuthenticationFailed
            | C::TopicAuthorizationFailed
            | C::GroupAuthorizationFailed
            | C::ClusterAuthorizationFailed
            | C::TransactionalIdAuthorizationFailed
            | C::InvalidConfig
            | C::InvalidArgument
            | C::MessageSizeTooLarge
            | C::InvalidRecord
            | C::UnsupportedVersion
            | C::UnsupportedFeature,
        ) => Disposition::Stop,
        _ => Disposition::Retry,
    }
}

/// How a failed transaction is recovered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recovery {
    /// Abort the transaction and rewind every task to committed state.
    Abort,
    /// The producer is unusable (fenced, fatal, or an abort that failed): re-create it —
    /// its `init_transactions` fences the old one — and rewind.
    NewProducer,
}

pub fn recovery(e: &RuntimeError) -> Recovery {
    match e {
        RuntimeError::Wedged { .. } => Recovery::NewProducer,
        RuntimeError::Kafka {
            source: KafkaError::Transaction(t),
            ..
        } => {
            if t.is_fatal() {
                Recovery::NewProducer
            } else {
                Recovery::Abort
            }
        }
        _ => Recovery::Abort,
    }
}
