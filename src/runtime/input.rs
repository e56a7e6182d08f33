//! Input records at the edge: rdkafka messages become owned records on arrival, decoded and
//! checked — value present, ids not empty, key equal to the user id, event time inside the
//! range the rules compute with and not too far ahead of the wall clock. Whatever fails
//! is bad input (dead-lettered, never moves stream time); a schema registry that does not
//! answer is not the record's fault, and its decoding is retried.

use std::ffi::CString;

use rdkafka::message::{BorrowedMessage, Message};

use super::codecs::Codecs;
use super::error::RuntimeError;
use super::task::{Arrived, BadInput, Decoded};
use crate::codec::ErrorClass;
use crate::model::{InputEvent, TimestampMs};

/// The input topics by rank (interactions, user events), also as C strings for librdkafka.
pub struct InputTopics {
    pub names: [String; 2],
    pub c_names: [CString; 2],
}

impl std::ops::Index<usize> for InputTopics {
    type Output = String;
    fn index(&self, rank: usize) -> &String {
        &self.names[rank]
    }
}

impl InputTopics {
    pub fn new(interactions: &str, user_events: &str) -> Result<Self, RuntimeError> {
        let names = [interactions.to_string(), user_events.to_string()];
        let c = |n: &String| {
            CString::new(n.as_str())
                .map_err(|_| RuntimeError::Setup(format!("topic name {n:?} contains a NUL byte")))
        };
        Ok(Self {
            c_names: [c(&names[0])?, c(&names[1])?],
            names,
        })
    }

    pub fn rank(&self, topic: &str) -> Option<usize> {
        self.names.iter().position(|n| n == topic)
    }
}

/// What the edge checks need besides the record.
#[derive(Debug, Clone, Copy)]
pub struct EdgeChecks {
    /// Wall clock now.
    pub now: TimestampMs,
    /// How far ahead of the wall clock an `occurred_at` may be.
    pub max_future_skew_ms: i64,
}

/// An input message as an owned, decoded and checked record. The raw key and value are
/// kept only where they are needed again — a record to dead-letter or to decode again;
/// copying them for every good record cost more than the engine's work on it.
pub fn arrive(codecs: &Codecs, rank: usize, m: &BorrowedMessage<'_>, edge: EdgeChecks) -> Arrived {
    let event = decode_input(codecs, rank, m.key(), m.payload(), edge);
    let keep = !matches!(event, Decoded::Event(_));
    Arrived {
        offset: m.offset(),
        seq: 0,
        key: m.key().filter(|_| keep).map(<[u8]>::to_vec),
        payload: m.payload().filter(|_| keep).map(<[u8]>::to_vec),
        event,
    }
}

/// Decodes an arrived record again (its decoding had to be retried).
pub fn redecode(codecs: &Codecs, rank: usize, arrived: &mut Arrived, edge: EdgeChecks) {
    arrived.event = decode_input(
        codecs,
        rank,
        arrived.key.as_deref(),
        arrived.payload.as_deref(),
        edge,
    );
}

/// Decodes an input record into an event, or says why it is bad input (SPEC §4).
pub fn decode_input(
    codecs: &Codecs,
    rank: usize,
    key: Option<&[u8]>,
    payload: Option<&[u8]>,
    edge: EdgeChecks,
) -> Decoded {
    let bad = |class: &'static str, message: String| Decoded::Bad(BadInput { class, message });
    let Some(bytes) = payload else {
        return bad("empty_value", "the record has no value".into());
    };
    let decoded = if rank == 0 {
        codecs
            .interactions
            .decode(bytes)
            .map(InputEvent::Interaction)
    } else {
        codecs.user_events.decode(bytes).map(InputEvent::UserEvent)
    };
    let event = match decoded {
        Ok(event) => event,
        Err(e) => {
            return match e.class() {
                ErrorClass::BadInput => bad("undecodable", e.to_string()),
                ErrorClass::Retry => Decoded::Retry(e.to_string()),
                ErrorClass::Stop => Decoded::Stop(e.to_string()),
            }
        }
    };
    if event.user_id().is_empty() {
        return bad("empty_user_id", "user_id is empty".into());
    }
    if event.event_id().is_empty() {
        return bad("empty_event_id", "event_id is empty".into());
    }
    let key = key.map(String::from_utf8_lossy);
    if key.as_deref() != Some(event.user_id()) {
        return bad(
            "key_mismatch",
            format!(
                "record key {:?} is not the user id {:?}",
                key.unwrap_or_default(),
                event.user_id()
            ),
        );
    }
    if let Err(e) =
        crate::time::check_event_time(event.occurred_at(), edge.now, edge.max_future_skew_ms)
    {
        return bad(
            e.class(),
            format!("occurred_at of event {:?}: {e}", event.event_id()),
        );
    }
    Decoded::Event(event)
}
