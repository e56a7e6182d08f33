//! Avro framing and the reader/writer schema pairs.
//!
//! A [`WriterSchema`] is prepared once per writer schema (per fingerprint, per registry id)
//! and holds everything decoding needs, so that no schema is parsed or name-resolved per
//! record. When writer and reader schema have the same Parsing Canonical Form the datum is
//! deserialized straight into `T`; otherwise it is read as an Avro value with the writer
//! schema, resolved to the reader schema (Avro schema resolution: defaults for missing
//! fields, enum defaults for unknown symbols, dropped extra fields) and converted into `T`.

use std::path::{Path, PathBuf};

use apache_avro::headers::HeaderBuilder;
use apache_avro::reader::single_object::GenericSingleObjectReader;
use apache_avro::schema::{Names, ResolvedSchema};
use apache_avro::{from_value, AvroSchema, Schema};
use serde::de::DeserializeOwned;
use serde::Serialize;

use super::canonical::{legacy_fingerprint, Fingerprinted};
use super::{
    DecodeError, SetupError, CONFLUENT_HEADER_LEN, CONFLUENT_MAGIC, SINGLE_OBJECT_HEADER_LEN,
    SINGLE_OBJECT_MARKER,
};

/// An apache-avro error with its causes, on one line.
pub fn error_message(error: &apache_avro::Error) -> String {
    let mut message = error.to_string();
    let mut source = std::error::Error::source(error);
    while let Some(cause) = source {
        let text = cause.to_string();
        if !message.contains(&text) {
            message.push_str(": ");
            message.push_str(&text);
        }
        source = cause.source();
    }
    message
}

/// The schema of the record type the codec produces, derived once.
pub struct ReaderSchema {
    schema: Schema,
    /// Every named type the schema defines, for `Schema::Ref`s.
    names: Names,
    /// CRC-64-AVRO of the Parsing Canonical Form (the specification's, as every other
    /// Avro implementation computes it): what single-object headers carry.
    pub fingerprint: u64,
    /// The fingerprint that earlier versions of the connector wrote (apache-avro's form,
    /// which keeps logical types); read, never written.
    pub legacy_fingerprint: u64,
    /// The Parsing Canonical Form.
    pub canonical_form: String,
    /// Full name, e.g. `campaign_connector.Interaction`.
    pub name: String,
    /// The schema as JSON (with defaults and docs), as registered in a schema registry.
    pub json: String,
    /// The same schema, prepared for serde_avro_fast: reads datums written with it and
    /// writes every datum of this type.
    fast: serde_avro_fast::Schema,
}

impl ReaderSchema {
    pub fn of<T: AvroSchema>() -> Result<Self, SetupError> {
        let schema = T::get_schema();
        let name = full_name(&schema).unwrap_or_else(|| std::any::type_name::<T>().to_string());
        let error = |message: String| SetupError::ReaderSchema {
            record: name.clone(),
            message,
        };
        let json = serde_json::to_string(&schema).map_err(|e| error(e.to_string()))?;
        let canonical = serde_json::from_str(&json)
            .map_err(|e| e.to_string())
            .and_then(|json| Fingerprinted::of_json(&json))
            .map_err(error)?;
        let legacy_fingerprint = legacy_fingerprint(&schema);
        let fast = json
            .parse::<serde_avro_fast::Schema>()
            .map_err(|e| error(e.to_string()))?;
        let names = ResolvedSchema::new(&schema)
            .map_err(|e| error(error_message(&e)))?
            .get_names()
            .iter()
            .map(|(name, schema)| (name.clone(), (*schema).clone()))
            .collect();
        Ok(Self {
            schema,
            names,
            fingerprint: canonical.fingerprint,
            legacy_fingerprint,
            canonical_form: canonical.canonical_form,
            name,
            json,
            fast,
        })
    }

    /// Appends the datum of `record` (this schema as writer schema) to `out`.
    pub fn write_datum<T: Serialize>(&self, record: &T, out: &mut Vec<u8>) -> Result<(), String> {
        let mut config = serde_avro_fast::ser::SerializerConfig::new(&self.fast);
        serde_avro_fast::to_datum(record, out, &mut config)
            .map(drop)
            .map_err(|e| e.to_string())
    }

    pub fn schema(&self) -> &Schema {
        &self.schema
    }

    pub fn names(&self) -> &Names {
        &self.names
    }

    /// The short name (`Interaction`), for messages about JSON records.
    pub fn short_name(&self) -> &str {
        self.name.rsplit('.').next().unwrap_or(&self.name)
    }

    pub fn setup_error(&self, message: String) -> SetupError {
        SetupError::ReaderSchema {
            record: self.name.clone(),
            message,
        }
    }
}

pub fn full_name(schema: &Schema) -> Option<String> {
    schema.name().map(|n| n.fullname(None))
}

/// One writer schema, prepared for reading records of the reader schema.
pub struct WriterSchema {
    /// Reads a datum with the writer schema (an empty header: framing is checked before).
    datum: GenericSingleObjectReader,
    /// The reader's schema itself: deserialize directly, no resolution.
    same_as_reader: bool,
    /// How messages name it: `0x… (campaign_connector.Interaction)` or `id 7 (…)`.
    label: String,
    /// Found by the fingerprint earlier versions of the connector wrote.
    pub legacy: bool,
}

struct NoHeader;

impl HeaderBuilder for NoHeader {
    fn build_header(&self) -> Vec<u8> {
        Vec::new()
    }
}

/// How a writer schema was found, for its messages.
pub enum Found {
    /// By the fingerprint of the specification.
    Fingerprint,
    /// By the fingerprint earlier versions of the connector wrote.
    LegacyFingerprint(u64),
    /// By its schema registry id.
    RegistryId(u32),
}

impl WriterSchema {
    /// Prepares `schema`, whose (specification) fingerprint is `fingerprint` when known.
    pub fn new(
        schema: Schema,
        fingerprint: Option<u64>,
        reader: &ReaderSchema,
        found: Found,
    ) -> Result<Self, String> {
        let name = full_name(&schema).unwrap_or_else(|| "an unnamed schema".to_string());
        let fp = fingerprint.unwrap_or_default();
        let label = match found {
            Found::Fingerprint => format!("0x{fp:016x} ({name})"),
            Found::LegacyFingerprint(legacy) => {
                format!("0x{legacy:016x} ({name}, the legacy fingerprint of 0x{fp:016x})")
            }
            Found::RegistryId(id) => format!("id {id} ({name})"),
        };
        let legacy = matches!(found, Found::LegacyFingerprint(_));
        // The fast path needs the very same schema, logical types included (the canonical
        // form ignores them, but apache-avro deserializes by them); apache-avro's own form
        // keeps them.
        let same_as_reader = fingerprint == Some(reader.fingerprint)
            && legacy_fingerprint(&schema) == reader.legacy_fingerprint;
        let datum = GenericSingleObjectReader::builder()
            .schema(schema)
            .header(NoHeader.build_header())
            .build()
            .map_err(|e| error_message(&e))?;
        Ok(Self {
            datum,
            same_as_reader,
            label,
            legacy,
        })
    }

    /// Decodes one datum (the bytes after the header) into `T`.
    pub fn decode<T: DeserializeOwned>(
        &self,
        reader: &ReaderSchema,
        datum: &[u8],
    ) -> Result<T, DecodeError> {
        if self.same_as_reader {
            return self.decode_own(reader, datum);
        }
        let mut rest = datum;
        let record = {
            let value = self
                .datum
                .read_value(&mut rest)
                .map_err(|e| self.datum_error(&e))?;
            let value = value
                .resolve_with_names(reader.schema(), reader.names())
                .map_err(|e| DecodeError::Resolution {
                    writer: self.label.clone(),
                    reader: reader.name.clone(),
                    message: error_message(&e),
                })?;
            from_value::<T>(&value).map_err(|e| DecodeError::Record {
                record: reader.name.clone(),
                message: error_message(&e),
            })?
        };
        if !rest.is_empty() {
            return Err(DecodeError::TrailingBytes {
                writer: self.label.clone(),
                extra: rest.len(),
            });
        }
        Ok(record)
    }

    /// Decodes a datum written with the reader's own schema: straight into `T`.
    fn decode_own<T: DeserializeOwned>(
        &self,
        reader: &ReaderSchema,
        datum: &[u8],
    ) -> Result<T, DecodeError> {
        use std::io::BufRead;

        let mut state = serde_avro_fast::de::DeserializerState::from_slice(datum, &reader.fast);
        let record = T::deserialize(state.deserializer()).map_err(|e| {
            let message = e.to_string();
            // serde_avro_fast's two ways of saying the bytes ended inside the datum.
            let ended =
                message.starts_with("Unexpected end of slice") || message.contains("(Reached EOF)");
            let message = if ended {
                format!("truncated: the value ends inside the datum ({message})")
            } else {
                message
            };
            DecodeError::Datum {
                writer: self.label.clone(),
                message,
            }
        })?;
        let extra = state.into_reader().fill_buf().map_or(0, |rest| rest.len());
        if extra > 0 {
            return Err(DecodeError::TrailingBytes {
                writer: self.label.clone(),
                extra,
            });
        }
        Ok(record)
    }

    fn datum_error(&self, error: &apache_avro::Error) -> DecodeError {
        let mut message = error_message(error);
        if message.contains("failed to fill whole buffer") {
            message = format!("truncated: the value ends inside the datum ({message})");
        }
        DecodeError::Datum {
            writer: self.label.clone(),
            message,
        }
    }
}

/// Checks the single-object header and returns the writer schema's fingerprint.
pub fn single_object_fingerprint(bytes: &[u8]) -> Result<u64, DecodeError> {
    if bytes.is_empty() {
        return Err(DecodeError::Empty);
    }
    if bytes.len() < 2 || bytes[..2] != SINGLE_OBJECT_MARKER {
        if bytes.len() < 2 && bytes[0] == SINGLE_OBJECT_MARKER[0] {
            return Err(truncated(
                "Avro single-object value",
                SINGLE_OBJECT_HEADER_LEN,
                bytes,
            ));
        }
        return Err(DecodeError::NotSingleObject {
            got: hex(&bytes[..bytes.len().min(2)]),
        });
    }
    if bytes.len() < SINGLE_OBJECT_HEADER_LEN {
        return Err(truncated(
            "Avro single-object value",
            SINGLE_OBJECT_HEADER_LEN,
            bytes,
        ));
    }
    let mut fingerprint = [0; 8];
    fingerprint.copy_from_slice(&bytes[2..SINGLE_OBJECT_HEADER_LEN]);
    Ok(u64::from_le_bytes(fingerprint))
}

/// Checks the Confluent header and returns the writer schema's registry id.
pub fn confluent_schema_id(bytes: &[u8]) -> Result<u32, DecodeError> {
    let Some(&magic) = bytes.first() else {
        return Err(DecodeError::Empty);
    };
    if magic != CONFLUENT_MAGIC {
        return Err(DecodeError::NotConfluent { got: magic });
    }
    if bytes.len() < CONFLUENT_HEADER_LEN {
        return Err(truncated("Confluent value", CONFLUENT_HEADER_LEN, bytes));
    }
    let mut id = [0; 4];
    id.copy_from_slice(&bytes[1..CONFLUENT_HEADER_LEN]);
    Ok(u32::from_be_bytes(id))
}

fn truncated(frame: &'static str, needed: usize, bytes: &[u8]) -> DecodeError {
    DecodeError::TruncatedHeader {
        frame,
        needed,
        got: bytes.len(),
    }
}

/// Bytes as upper-case hex pairs separated by spaces (`C3 01 …`), as error messages and the
/// `schemas` command show headers and fingerprints.
pub fn hex(bytes: &[u8]) -> String {
    bytes
        .iter()
        .map(|b| format!("{b:02X}"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// A schema file: its path, the schema, and its canonical form and fingerprint (taken from
/// the file's own text, which apache-avro's parsed form may not render back exactly).
pub struct SchemaFile {
    pub path: PathBuf,
    pub schema: Schema,
    pub canonical: Fingerprinted,
}

/// Reads and parses one schema file.
pub fn load_schema_file(path: &Path) -> Result<SchemaFile, SetupError> {
    let file_error = |message: String| SetupError::SchemaFile {
        path: path.to_path_buf(),
        message,
    };
    let text = std::fs::read_to_string(path).map_err(|e| file_error(e.to_string()))?;
    let schema = Schema::parse_str(&text).map_err(|e| file_error(error_message(&e)))?;
    let canonical = Fingerprinted::of_text(&text).map_err(file_error)?;
    Ok(SchemaFile {
        path: path.to_path_buf(),
        schema,
        canonical,
    })
}

/// Every `*.avsc` file directly in each directory (sorted by name), parsed.
pub fn load_schema_dirs(dirs: &[PathBuf]) -> Result<Vec<SchemaFile>, SetupError> {
    let mut schemas = Vec::new();
    for dir in dirs {
        for path in avsc_files(dir)? {
            schemas.push(load_schema_file(&path)?);
        }
    }
    Ok(schemas)
}

fn avsc_files(dir: &Path) -> Result<Vec<PathBuf>, SetupError> {
    let dir_error = |e: std::io::Error| SetupError::SchemaDir {
        path: dir.to_path_buf(),
        message: e.to_string(),
    };
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(dir_error)? {
        let path = entry.map_err(dir_error)?.path();
        if path.extension().is_some_and(|e| e == "avsc") && path.is_file() {
            files.push(path);
        }
    }
    files.sort();
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn single_object_header_errors_name_what_was_wrong() {
        assert_eq!(single_object_fingerprint(&[]), Err(DecodeError::Empty));
        assert_eq!(
            single_object_fingerprint(&[0, 0, 1])
                .unwrap_err()
                .to_string(),
            "not Avro single-object encoding: expected header C3 01, got 00 00"
        );
        assert_eq!(
            single_object_fingerprint(&[0x7B]).unwrap_err().to_string(),
            "not Avro single-object encoding: expected header C3 01, got 7B"
        );
        assert_eq!(
            single_object_fingerprint(&[0xC3, 0x01, 1, 2]),
            Err(DecodeError::TruncatedHeader {
                frame: "Avro single-object value",
                needed: 10,
                got: 4
            })
        );
        let header = [0xC3, 0x01, 0xEF, 0xCD, 0xAB, 0x89, 0x67, 0x45, 0x23, 0x01];
        assert_eq!(
            single_object_fingerprint(&header),
            Ok(0x0123_4567_89AB_CDEF)
        );
    }

    #[test]
    fn confluent_header_errors_name_what_was_wrong() {
        assert_eq!(confluent_schema_id(&[]), Err(DecodeError::Empty));
        assert_eq!(
            confluent_schema_id(&[0xC3, 1]).unwrap_err().to_string(),
            "not Confluent wire format: expected magic byte 00, got C3"
        );
        assert_eq!(
            confluent_schema_id(&[0, 0, 1]).unwrap_err().to_string(),
            "truncated Confluent value: 3 bytes, but its header alone is 5 bytes"
        );
        assert_eq!(confluent_schema_id(&[0, 0, 0, 1, 2, 9]), Ok(258));
    }
}
