//! JSON values: the records' field names, timestamps as epoch milliseconds.
//!
//! Input is read leniently in two ways, both directed by the reader's Avro schema so that
//! they apply to every record type and every nesting level without a list to keep up:
//! - a `timestamp-millis` field (also inside `["null", timestamp]`) accepts an RFC 3339
//!   string as well as a number;
//! - an enum field with a default (`UNKNOWN`) reads a symbol it does not know as the
//!   default, as Avro schema resolution does for a newer writer's enum symbols.
//!
//! The common case (numbers, known symbols) deserializes in one pass; only a value that
//! fails it is parsed into a JSON tree, normalized and deserialized again, which is also
//! where the precise error comes from.

use apache_avro::schema::Names;
use apache_avro::Schema;
use serde::de::DeserializeOwned;
use serde_json::Value;

use super::avro::ReaderSchema;
use super::DecodeError;
use crate::time::parse_timestamp;

/// Decodes one JSON value of the reader's record type.
pub fn decode<T: DeserializeOwned>(bytes: &[u8], reader: &ReaderSchema) -> Result<T, DecodeError> {
    if bytes.is_empty() {
        return Err(DecodeError::Empty);
    }
    if let Ok(record) = serde_json::from_slice::<T>(bytes) {
        return Ok(record);
    }
    let value: Value =
        serde_json::from_slice(bytes).map_err(|e| DecodeError::InvalidJson(e.to_string()))?;
    from_value(value, reader)
}

/// Normalizes a parsed JSON value and deserializes it.
pub fn from_value<T: DeserializeOwned>(
    mut value: Value,
    reader: &ReaderSchema,
) -> Result<T, DecodeError> {
    let mut path = reader.short_name().to_string();
    normalize(&mut value, reader.schema(), reader.names(), &mut path)?;
    serde_json::from_value(value).map_err(|e| DecodeError::Record {
        record: reader.short_name().to_string(),
        message: e.to_string(),
    })
}

/// Rewrites RFC 3339 timestamps into epoch milliseconds and unknown enum symbols into the
/// enum's default, following `schema`. Anything that does not fit the schema is left for
/// deserialization to report.
fn normalize(
    value: &mut Value,
    schema: &Schema,
    names: &Names,
    path: &mut String,
) -> Result<(), DecodeError> {
    match schema {
        Schema::Ref { name } => {
            if let Some(schema) = names.get(name) {
                normalize(value, schema, names, path)?;
            }
        }
        Schema::TimestampMillis => {
            if let Value::String(text) = value {
                let ms = parse_timestamp(text).map_err(|e| DecodeError::JsonField {
                    path: path.clone(),
                    message: e.to_string(),
                })?;
                *value = Value::from(ms);
            }
        }
        Schema::Enum(e) => {
            if let (Value::String(symbol), Some(default)) = (&*value, &e.default) {
                if !e.symbols.iter().any(|s| s == symbol) {
                    *value = Value::String(default.clone());
                }
            }
        }
        // `["null", X]`, the only unions of the records: normalize as X.
        Schema::Union(union) if !value.is_null() => {
            let mut others = union
                .variants()
                .iter()
                .filter(|v| !matches!(v, Schema::Null));
            if let (Some(only), None) = (others.next(), others.next()) {
                normalize(value, only, names, path)?;
            }
        }
        Schema::Record(record) => {
            if let Value::Object(fields) = value {
                for field in &record.fields {
                    if let Some(v) = fields.get_mut(&field.name) {
                        let len = path.len();
                        path.push('.');
                        path.push_str(&field.name);
                        normalize(v, &field.schema, names, path)?;
                        path.truncate(len);
                    }
                }
            }
        }
        Schema::Array(array) => {
            if let Value::Array(items) = value {
                for (i, item) in items.iter_mut().enumerate() {
                    let len = path.len();
                    path.push_str(&format!("[{i}]"));
                    normalize(item, &array.items, names, path)?;
                    path.truncate(len);
                }
            }
        }
        Schema::Map(map) => {
            if let Value::Object(entries) = value {
                for (key, v) in entries.iter_mut() {
                    let len = path.len();
                    path.push_str(&format!("[{key:?}]"));
                    normalize(v, &map.types, names, path)?;
                    path.truncate(len);
                }
            }
        }
        _ => {}
    }
    Ok(())
}
