//! Input records at the edge: rdkafka messages become owned records on arrival, decoded and
//! checked — value present, ids not empty, key equal to the user id, event time inside the
//! range the rules compute with and not too far ahead of the wall clock. Whatever fails
//! is bad input (dead-lettered, never moves stream time); a schema registry that does not
//! answer is not the record's fault, and its decoding is retried.

use std::ffi::CString;

use serde::de::{Deserializer, MapAccess, Visitor};
use serde::Deserialize;

use super::codecs::Codecs;
use super::error::RuntimeError;
use super::task::{Arrived, BadInput, Decoded};
use crate::codec::ErrorClass;
use crate::model::{
    InputEvent, Interaction, InteractionKind, TimestampMs, UserEvent, UserEventType,
};

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
pub fn arrive(
    codecs: &Codecs,
    rank: usize,
    offset: i64,
    key: Option<&[u8]>,
    payload: Option<&[u8]>,
    edge: EdgeChecks,
) -> Arrived {
    let event = decode_input(codecs, rank, key, payload, edge);
    let keep = !matches!(event, Decoded::Event(_));
    Arrived {
        offset,
        seq: 0,
        key: key.filter(|_| keep).map(<[u8]>::to_vec),
        payload: payload.filter(|_| keep).map(<[u8]>::to_vec),
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
            .decode_as::<InteractionAtEdge>(bytes)
            .map(|i| InputEvent::Interaction(i.into()))
    } else {
        codecs
            .user_events
            .decode_as::<UserEventAtEdge>(bytes)
            .map(|e| InputEvent::UserEvent(e.into()))
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
    if key != Some(event.user_id().as_bytes()) {
        return bad(
            "key_mismatch",
            format!(
                "record key {:?} is not the user id {:?}",
                key.map(String::from_utf8_lossy).unwrap_or_default(),
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

/// An interaction as the edge reads it: every field of the schema read and checked, but the
/// `properties` map, which no rule reads, is not kept (its strings are checked in place;
/// building the map cost more than the engine's work on the event). Field for field
/// [`Interaction`]'s serde form.
#[derive(Deserialize)]
pub struct InteractionAtEdge {
    event_id: String,
    user_id: String,
    campaign_id: String,
    kind: InteractionKind,
    #[serde(default)]
    qualifier: Option<String>,
    occurred_at: TimestampMs,
    #[serde(default)]
    user_time_zone: Option<String>,
    #[serde(default)]
    #[allow(dead_code)]
    properties: CheckedStrings,
}

impl From<InteractionAtEdge> for Interaction {
    fn from(i: InteractionAtEdge) -> Self {
        Interaction {
            event_id: i.event_id,
            user_id: i.user_id,
            campaign_id: i.campaign_id,
            kind: i.kind,
            qualifier: i.qualifier,
            occurred_at: i.occurred_at,
            user_time_zone: i.user_time_zone,
            properties: Default::default(),
        }
    }
}

/// A user event as the edge reads it (see [`InteractionAtEdge`]); field for field
/// [`UserEvent`]'s serde form.
#[derive(Deserialize)]
pub struct UserEventAtEdge {
    event_id: String,
    user_id: String,
    #[serde(rename = "type")]
    event_type: UserEventType,
    #[serde(default)]
    name: Option<String>,
    occurred_at: TimestampMs,
    #[serde(default)]
    user_time_zone: Option<String>,
    #[serde(default)]
    #[allow(dead_code)]
    properties: CheckedStrings,
}

impl From<UserEventAtEdge> for UserEvent {
    fn from(e: UserEventAtEdge) -> Self {
        UserEvent {
            event_id: e.event_id,
            user_id: e.user_id,
            event_type: e.event_type,
            name: e.name,
            occurred_at: e.occurred_at,
            user_time_zone: e.user_time_zone,
            properties: Default::default(),
        }
    }
}

/// A map of strings, read and checked entry by entry like a `BTreeMap<String, String>`
/// (the same shapes accepted, the same errors), but kept nowhere.
#[derive(Default)]
struct CheckedStrings;

impl<'de> Deserialize<'de> for CheckedStrings {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Entries;
        impl<'de> Visitor<'de> for Entries {
            type Value = CheckedStrings;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a map")
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<CheckedStrings, A::Error> {
                while map.next_entry::<AnyString, AnyString>()?.is_some() {}
                Ok(CheckedStrings)
            }
        }
        deserializer.deserialize_map(Entries)
    }
}

/// A string, read (and so checked) but not kept.
struct AnyString;

impl<'de> Deserialize<'de> for AnyString {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct Text;
        impl Visitor<'_> for Text {
            type Value = AnyString;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a string")
            }
            fn visit_str<E: serde::de::Error>(self, _: &str) -> Result<AnyString, E> {
                Ok(AnyString)
            }
        }
        deserializer.deserialize_str(Text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::{Codec, EncodingSettings};

    fn interaction(properties: &[(&str, &str)]) -> Interaction {
        Interaction {
            event_id: "e1".into(),
            user_id: "u1".into(),
            campaign_id: "cart".into(),
            kind: InteractionKind::PushReceived,
            qualifier: Some("q".into()),
            occurred_at: 1_764_000_000_123,
            user_time_zone: Some("Europe/Berlin".into()),
            properties: properties
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    fn user_event(properties: &[(&str, &str)]) -> UserEvent {
        UserEvent {
            event_id: "e2".into(),
            user_id: "u1".into(),
            event_type: UserEventType::Purchase,
            name: Some("sku".into()),
            occurred_at: 1_764_000_000_456,
            user_time_zone: Some("Asia/Tokyo".into()),
            properties: properties
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    /// Every encoding: the edge reads what the full record holds, without the properties.
    #[test]
    fn the_edge_reads_every_field_but_the_properties() {
        for settings in [EncodingSettings::avro(), EncodingSettings::json()] {
            let interactions = Codec::<Interaction>::new("t", &settings).unwrap();
            let user_events = Codec::<UserEvent>::new("t", &settings).unwrap();
            for props in [&[][..], &[("platform", "ios"), ("ü", "€")][..]] {
                let read = through_edge::<_, InteractionAtEdge>(&interactions, &interaction(props));
                assert_eq!(read, interaction(&[]));
                let read = through_edge::<_, UserEventAtEdge>(&user_events, &user_event(props));
                assert_eq!(read, user_event(&[]));
            }
        }
    }

    /// `record` encoded, then read back through the edge's type `U`.
    fn through_edge<T, U>(codec: &Codec<T>, record: &T) -> T
    where
        T: apache_avro::AvroSchema
            + serde::Serialize
            + serde::de::DeserializeOwned
            + crate::codec::OwnDatum,
        U: serde::de::DeserializeOwned + Into<T>,
    {
        let bytes = codec.encode(record).unwrap();
        codec.decode_as::<U>(&bytes).unwrap().into()
    }

    /// The properties are still checked: a map value that is not UTF-8 is bad input, as it
    /// is for the full record.
    #[test]
    fn properties_that_are_not_text_are_still_bad_input() {
        let codec = Codec::<Interaction>::new("t", &EncodingSettings::avro()).unwrap();
        let mut bytes = codec.encode(&interaction(&[("k", "vv")])).unwrap();
        // The value "vv" is the last string of the datum, before the map's end marker.
        let at = bytes.len() - 3;
        assert_eq!(&bytes[at..at + 2], b"vv");
        bytes[at] = 0xFF;
        assert!(codec.decode(&bytes).is_err(), "the full record refuses it");
        let e = codec
            .decode_as::<InteractionAtEdge>(&bytes)
            .err()
            .expect("refused");
        assert!(
            e.to_string().contains("utf-8") || e.to_string().contains("UTF-8"),
            "{e}"
        );

        let json = Codec::<Interaction>::new("t", &EncodingSettings::json()).unwrap();
        let bad = br#"{"event_id":"e","user_id":"u","campaign_id":"c","kind":"EMAIL_OPEN","occurred_at":1,"properties":{"n":1}}"#;
        assert!(json.decode(bad).is_err(), "the full record refuses it");
        assert!(json.decode_as::<InteractionAtEdge>(bad).is_err());
    }
}
