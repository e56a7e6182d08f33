//! Value bytes as the different producers of the workload write them: this build's schemas
//! (through the product's codec), a newer interaction producer (writer schema v2: a new kind
//! and a new optional field), an older user-event producer (v0), and an incompatible v3
//! whose records no reader can resolve. With a registry (see registry_outage.rs) the
//! interactions, poison included, are framed in the Confluent wire format instead.

use std::collections::HashMap;
use std::path::Path;

use apache_avro::rabin::Rabin;
use apache_avro::types::Value;
use apache_avro::Schema;
use campaign_connector::codec::{Codec, EncodingSettings, SINGLE_OBJECT_MARKER};
use campaign_connector::model::{Interaction, UserEvent};

use crate::registry_outage::{confluent_frame, ConfluentInteractions};

/// A schema read from a file, with its single-object header.
struct Writer {
    schema: Schema,
    header: Vec<u8>,
}

impl Writer {
    fn load(path: &Path) -> Result<Self, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let schema = Schema::parse_str(&text).map_err(|e| format!("{}: {e}", path.display()))?;
        let mut header = SINGLE_OBJECT_MARKER.to_vec();
        header.extend_from_slice(&schema.fingerprint::<Rabin>().bytes);
        Ok(Self { schema, header })
    }

    fn encode(&self, value: Value) -> Vec<u8> {
        let datum = apache_avro::writer::datum::GenericDatumWriter::builder(&self.schema)
            .build()
            .and_then(|w| w.write_value_to_vec(value))
            .expect("the workload builds values that fit the writer schema");
        let mut out = self.header.clone();
        out.extend_from_slice(&datum);
        out
    }
}

pub struct Encoders {
    interactions: Codec<Interaction>,
    user_events: Codec<UserEvent>,
    interaction_v2: Writer,
    user_event_v0: Writer,
    interaction_v3: Writer,
    /// Interactions in the Confluent wire format, with these writer ids.
    confluent: Option<ConfluentInteractions>,
}

/// Interaction kinds only a newer producer knows (v2).
pub const EMAIL_FORWARD: &str = "EMAIL_FORWARD";
/// User event types only an older producer knows (v0).
pub const REFUND: &str = "REFUND";

impl Encoders {
    /// `evolved`: the directory of the evolved writer schemas the connector is given
    /// (`tests/fixtures/writer_schemas`); `incompatible`: the v3 schema file.
    pub fn new(evolved: &Path, incompatible: &Path) -> Result<Self, String> {
        let avro = EncodingSettings::avro();
        Ok(Self {
            interactions: Codec::new("interactions", &avro).map_err(|e| e.to_string())?,
            user_events: Codec::new("user-events", &avro).map_err(|e| e.to_string())?,
            interaction_v2: Writer::load(&evolved.join("interaction_v2.avsc"))?,
            user_event_v0: Writer::load(&evolved.join("user_event_v0.avsc"))?,
            interaction_v3: Writer::load(incompatible)?,
            confluent: None,
        })
    }

    /// Frames the interactions in the Confluent wire format, with the writer ids of `ids`.
    pub fn with_confluent_interactions(mut self, ids: ConfluentInteractions) -> Self {
        self.confluent = Some(ids);
        self
    }

    /// The ids the interaction producers registered, when they use a registry.
    pub fn confluent(&self) -> Option<&ConfluentInteractions> {
        self.confluent.as_ref()
    }

    /// Chunk `k` begins: with a registry, the interaction producer rolls out a new build.
    pub fn start_chunk(&mut self, k: usize) {
        if let Some(c) = &mut self.confluent {
            c.roll(k);
        }
    }

    fn framed(
        &self,
        single_object: Vec<u8>,
        id: impl Fn(&ConfluentInteractions) -> u32,
    ) -> Vec<u8> {
        match &self.confluent {
            None => single_object,
            Some(c) => confluent_frame(&single_object, id(c)),
        }
    }

    pub fn interaction(&self, i: &Interaction) -> Vec<u8> {
        let bytes = self
            .interactions
            .encode(i)
            .expect("interactions fit their schema");
        self.framed(bytes, |c| c.current)
    }

    pub fn user_event(&self, e: &UserEvent) -> Vec<u8> {
        self.user_events
            .encode(e)
            .expect("user events fit their schema")
    }

    /// Writer schema v2: `kind_symbol` may be one only v2 knows; `channel_hint` is new.
    pub fn interaction_v2(
        &self,
        i: &Interaction,
        kind_symbol: &str,
        channel_hint: Option<&str>,
    ) -> Vec<u8> {
        let kind = enum_value(&self.interaction_v2.schema, "kind", kind_symbol);
        let bytes = self.interaction_v2.encode(Value::Record(vec![
            ("event_id".into(), Value::String(i.event_id.clone())),
            ("user_id".into(), Value::String(i.user_id.clone())),
            ("campaign_id".into(), Value::String(i.campaign_id.clone())),
            ("kind".into(), kind),
            ("qualifier".into(), optional(i.qualifier.as_deref())),
            ("occurred_at".into(), Value::TimestampMillis(i.occurred_at)),
            (
                "user_time_zone".into(),
                optional(i.user_time_zone.as_deref()),
            ),
            (
                "properties".into(),
                Value::Map(
                    i.properties
                        .iter()
                        .map(|(k, v)| (k.clone(), Value::String(v.clone())))
                        .collect::<HashMap<_, _>>(),
                ),
            ),
            ("channel_hint".into(), optional(channel_hint)),
        ]));
        self.framed(bytes, |c| c.v2)
    }

    /// Writer schema v0 (no name, time zone or properties; `type_symbol` may be `REFUND`).
    pub fn user_event_v0(&self, e: &UserEvent, type_symbol: &str) -> Vec<u8> {
        let ty = enum_value(&self.user_event_v0.schema, "type", type_symbol);
        self.user_event_v0.encode(Value::Record(vec![
            ("event_id".into(), Value::String(e.event_id.clone())),
            ("user_id".into(), Value::String(e.user_id.clone())),
            ("type".into(), ty),
            ("occurred_at".into(), Value::TimestampMillis(e.occurred_at)),
        ]))
    }

    /// Writer schema v3, which changed `occurred_at` to a string: no reader resolves it.
    pub fn interaction_v3(&self, i: &Interaction) -> Vec<u8> {
        let kind = enum_value(&self.interaction_v3.schema, "kind", i.kind.symbol());
        let bytes = self.interaction_v3.encode(Value::Record(vec![
            ("event_id".into(), Value::String(i.event_id.clone())),
            ("user_id".into(), Value::String(i.user_id.clone())),
            ("campaign_id".into(), Value::String(i.campaign_id.clone())),
            ("kind".into(), kind),
            (
                "occurred_at".into(),
                Value::String(campaign_connector::time::format_timestamp(i.occurred_at)),
            ),
            ("tenant".into(), Value::String("chaos".into())),
        ]));
        self.framed(bytes, |c| c.v3)
    }
}

fn optional(s: Option<&str>) -> Value {
    match s {
        None => Value::Union(0, Box::new(Value::Null)),
        Some(s) => Value::Union(1, Box::new(Value::String(s.to_string()))),
    }
}

/// The enum value of `symbol` for the record field `field` of `schema`.
fn enum_value(schema: &Schema, field: &str, symbol: &str) -> Value {
    let Schema::Record(record) = schema else {
        panic!("writer schemas are records")
    };
    let f = record
        .fields
        .iter()
        .find(|f| f.name == field)
        .unwrap_or_else(|| panic!("field {field}"));
    let Schema::Enum(e) = &f.schema else {
        panic!("{field} is an enum")
    };
    let index = e
        .symbols
        .iter()
        .position(|s| s == symbol)
        .unwrap_or_else(|| panic!("{field} has no symbol {symbol}"));
    Value::Enum(index as u32, symbol.to_string())
}
