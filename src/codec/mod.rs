//! Value encodings of SPEC §6, per topic: bytes in, records out, and back.
//!
//! ```text
//!                         ┌─ avro:      C3 01 │ fingerprint (8, LE) │ datum ─► writer schema by fingerprint ─┐
//!  Kafka value (&[u8]) ──►├─ confluent: 00 │ schema id (4, BE) │ datum ───► writer schema from the registry ─┤─► resolve to T's schema ─► T
//!                         └─ json:      {"field": …}  ──► timestamps and unknown enum symbols normalized ────┴─────────────────────────────► T
//! ```
//!
//! The codec is pure byte work: it never sees a Kafka type. The Kafka layer hands it a
//! record's value (tombstones, i.e. null values, are handled before: they have no encoding)
//! and adds topic, partition and offset to the errors it gets back.
//!
//! Everything that can be prepared is prepared when a [`Codec`] is built: the reader schema
//! of `T` is derived once, every known writer schema is parsed and paired with it once, and
//! Confluent writer schemas are fetched from the registry once per id and kept. Decoding a
//! record is then a header check, a map lookup and the datum itself; when the writer schema
//! is the reader schema (the common case) the datum is deserialized straight into `T`.
//!
//! Errors say what the caller should do: a [`DecodeError`] that is not
//! [retriable](DecodeError::is_retriable) means the bytes are bad (dead-letter the record and
//! go on); a retriable one means the schema registry could not answer (retry later, the
//! record may be fine). See `docs/encodings.md`.

mod avro;
mod json;
mod registry;

use std::any::TypeId;
use std::collections::HashMap;
use std::fmt;
use std::marker::PhantomData;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock, PoisonError, RwLock};
use std::time::Duration;

use apache_avro::writer::single_object::SpecificSingleObjectWriter;
use apache_avro::{AvroSchema, Schema};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use self::avro::{ReaderSchema, WriterSchema};
pub use self::registry::RegistryError;
use self::registry::{Lookup, RegistryClient};

/// First two bytes of an Avro single-object encoded value (the Avro spec's marker `C3 01`).
pub const SINGLE_OBJECT_MARKER: [u8; 2] = [0xC3, 0x01];
/// Length of the single-object header: marker plus 8-byte CRC-64-AVRO fingerprint.
pub const SINGLE_OBJECT_HEADER_LEN: usize = 10;
/// First byte of a value in the Confluent wire format.
pub const CONFLUENT_MAGIC: u8 = 0;
/// Length of the Confluent header: magic byte plus 4-byte big-endian schema id.
pub const CONFLUENT_HEADER_LEN: usize = 5;
/// Registry timeout when the configuration names none.
pub const DEFAULT_REGISTRY_TIMEOUT: Duration = Duration::from_secs(5);

/// The `format` names of a topic's encoding in the configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Format {
    /// Avro single-object encoding (no registry; writer schemas by fingerprint). The default.
    #[default]
    Avro,
    /// Avro in the Confluent wire format, writer schemas in a schema registry.
    Confluent,
    /// JSON with the Avro records' field names.
    Json,
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Avro => "avro",
            Self::Confluent => "confluent",
            Self::Json => "json",
        })
    }
}

/// A topic's value encoding, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Encoding {
    /// `C3 01`, the writer schema's CRC-64-AVRO fingerprint (8 bytes, little-endian), the datum.
    AvroSingleObject,
    /// Magic byte `0`, the writer schema's registry id (4 bytes, big-endian), the datum.
    ConfluentAvro {
        /// Base URL of the schema registry, without a trailing `/`.
        registry_url: String,
    },
    /// A JSON object with the records' field names; timestamps as epoch milliseconds.
    Json,
}

impl Encoding {
    pub fn format(&self) -> Format {
        match self {
            Self::AvroSingleObject => Format::Avro,
            Self::ConfluentAvro { .. } => Format::Confluent,
            Self::Json => Format::Json,
        }
    }
}

/// One topic's encoding as written in the configuration, e.g.
///
/// ```yaml
/// format: confluent
/// registry_url: http://schema-registry:8081
/// ```
///
/// Parse it, then [`validate`](Self::validate) it once into [`EncodingSettings`].
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EncodingConfig {
    /// `avro` (single-object encoding, the default), `confluent` or `json`.
    #[serde(default)]
    pub format: Format,
    /// Base URL of the schema registry (`http://host:8081`); required with `confluent`, and
    /// only allowed there.
    #[serde(default)]
    pub registry_url: Option<String>,
    /// Directories whose `*.avsc` files are the writer schemas that `avro` values may have
    /// been written with (older and newer versions of the record), besides this build's own
    /// schema. Only allowed with `avro`.
    #[serde(default)]
    pub schema_dirs: Vec<PathBuf>,
    /// Timeout of one schema registry request in milliseconds (default 5000). Only allowed
    /// with `confluent`.
    #[serde(default)]
    pub registry_timeout_ms: Option<u64>,
}

/// A configuration that does not describe a usable encoding.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("format confluent needs registry_url, the schema registry's base URL (e.g. http://schema-registry:8081)")]
    MissingRegistryUrl,
    #[error("registry_url {0:?} is not an http:// or https:// URL")]
    InvalidRegistryUrl(String),
    #[error("registry_url is only used with format confluent, not {0}")]
    RegistryUrlNotUsed(Format),
    #[error("registry_timeout_ms is only used with format confluent, not {0}")]
    RegistryTimeoutNotUsed(Format),
    #[error("registry_timeout_ms must be greater than 0")]
    ZeroRegistryTimeout,
    #[error("schema_dirs is only used with format avro (confluent writer schemas come from the registry; json has none), not {0}")]
    SchemaDirsNotUsed(Format),
}

impl EncodingConfig {
    /// Checks the combination of fields and turns it into settings.
    pub fn validate(&self) -> Result<EncodingSettings, ConfigError> {
        let format = self.format;
        if format != Format::Confluent {
            if self.registry_url.is_some() {
                return Err(ConfigError::RegistryUrlNotUsed(format));
            }
            if self.registry_timeout_ms.is_some() {
                return Err(ConfigError::RegistryTimeoutNotUsed(format));
            }
        }
        if format != Format::Avro && !self.schema_dirs.is_empty() {
            return Err(ConfigError::SchemaDirsNotUsed(format));
        }
        let encoding = match format {
            Format::Avro => Encoding::AvroSingleObject,
            Format::Json => Encoding::Json,
            Format::Confluent => {
                let url = self
                    .registry_url
                    .as_deref()
                    .map(str::trim)
                    .filter(|u| !u.is_empty())
                    .ok_or(ConfigError::MissingRegistryUrl)?;
                let valid = ["http://", "https://"]
                    .iter()
                    .any(|scheme| url.len() > scheme.len() && url.starts_with(scheme));
                if !valid || url.contains(char::is_whitespace) {
                    return Err(ConfigError::InvalidRegistryUrl(url.to_string()));
                }
                Encoding::ConfluentAvro {
                    registry_url: url.trim_end_matches('/').to_string(),
                }
            }
        };
        let registry_timeout = match self.registry_timeout_ms {
            Some(0) => return Err(ConfigError::ZeroRegistryTimeout),
            Some(ms) => Duration::from_millis(ms),
            None => DEFAULT_REGISTRY_TIMEOUT,
        };
        Ok(EncodingSettings {
            encoding,
            schema_dirs: self.schema_dirs.clone(),
            registry_timeout,
        })
    }
}

/// A topic's encoding, ready to build [`Codec`]s with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodingSettings {
    pub encoding: Encoding,
    /// Directories of extra writer schemas (`*.avsc`) for single-object encoding.
    pub schema_dirs: Vec<PathBuf>,
    /// Timeout of one schema registry request.
    pub registry_timeout: Duration,
}

impl EncodingSettings {
    /// Avro single-object encoding with only this build's schema as writer schema.
    pub fn avro() -> Self {
        Self::new(Encoding::AvroSingleObject)
    }

    /// JSON.
    pub fn json() -> Self {
        Self::new(Encoding::Json)
    }

    /// The Confluent wire format with the registry at `registry_url`.
    pub fn confluent(registry_url: impl Into<String>) -> Self {
        let registry_url: String = registry_url.into();
        Self::new(Encoding::ConfluentAvro {
            registry_url: registry_url.trim_end_matches('/').to_string(),
        })
    }

    /// Adds a directory of writer schemas (single-object encoding).
    pub fn with_schema_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.schema_dirs.push(dir.into());
        self
    }

    fn new(encoding: Encoding) -> Self {
        Self {
            encoding,
            schema_dirs: Vec::new(),
            registry_timeout: DEFAULT_REGISTRY_TIMEOUT,
        }
    }
}

/// A codec could not be built (at startup: stop with this message).
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("schema directory {path}: {message}")]
    SchemaDir { path: PathBuf, message: String },
    #[error("schema file {path}: {message}")]
    SchemaFile { path: PathBuf, message: String },
    #[error("the Avro schema of {record} is not usable: {message}")]
    ReaderSchema { record: String, message: String },
}

/// A value could not be decoded.
///
/// Not [retriable](Self::is_retriable): the bytes are bad — dead-letter the record and go on.
/// Retriable: the schema registry did not answer — retry later; the record may be fine.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("empty value: nothing to decode (null values are tombstones and have no encoding)")]
    Empty,
    #[error("truncated {frame}: {got} bytes, but its header alone is {needed} bytes")]
    TruncatedHeader {
        frame: &'static str,
        needed: usize,
        got: usize,
    },
    #[error("not Avro single-object encoding: expected header C3 01, got {got}")]
    NotSingleObject {
        /// The first bytes, as hex.
        got: String,
    },
    #[error("not Confluent wire format: expected magic byte 00, got {got:02X}")]
    NotConfluent { got: u8 },
    #[error("unknown writer schema fingerprint 0x{0:016x}: not this build's schema nor any .avsc file in schema_dirs")]
    UnknownFingerprint(u64),
    #[error("schema registry: id {0} not found")]
    UnknownSchemaId(u32),
    #[error("schema registry: id {id} is not a usable Avro schema: {message}")]
    UnusableRegistrySchema { id: u32, message: String },
    #[error("invalid Avro datum for writer schema {writer}: {message}")]
    Datum { writer: String, message: String },
    #[error("{extra} bytes left after the Avro datum of writer schema {writer}: the value is not one record of that schema")]
    TrailingBytes { writer: String, extra: usize },
    #[error("writer schema {writer} cannot be read as {reader}: {message}")]
    Resolution {
        writer: String,
        reader: String,
        message: String,
    },
    #[error("invalid JSON: {0}")]
    InvalidJson(String),
    #[error("{path}: {message}")]
    JsonField { path: String, message: String },
    #[error("{record}: {message}")]
    Record { record: String, message: String },
    #[error("schema registry unavailable, retry later: {0}")]
    RegistryUnavailable(RegistryError),
}

impl DecodeError {
    /// `true`: the environment failed (the registry), retry the same record later.
    /// `false`: the record is bad; dead-letter it.
    pub fn is_retriable(&self) -> bool {
        matches!(self, Self::RegistryUnavailable(_))
    }
}

/// A record could not be encoded.
///
/// Retriable: the schema registry did not answer; retry later. Not retriable: the record
/// does not fit its own schema, or the registry refused the schema — a bug or a
/// configuration problem; stop.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EncodeError {
    #[error("{record} does not fit its Avro schema: {message}")]
    Avro { record: String, message: String },
    #[error("{record} cannot be written as JSON: {message}")]
    Json { record: String, message: String },
    #[error("schema registry refused to register {record} under subject {subject}: {source}")]
    RegistrationRefused {
        record: String,
        subject: String,
        source: RegistryError,
    },
    #[error("schema registry unavailable, retry later: {0}")]
    RegistryUnavailable(RegistryError),
}

impl EncodeError {
    /// `true`: retry later. `false`: the record or the configuration is wrong; stop.
    pub fn is_retriable(&self) -> bool {
        matches!(self, Self::RegistryUnavailable(_))
    }
}

/// Encodes and decodes the values of one topic whose records are `T`.
///
/// Cheap to share: build one per topic at startup and use it from any thread (`&self`).
pub struct Codec<T: AvroSchema> {
    topic: String,
    encoding: Encoding,
    reader: Arc<ReaderSchema>,
    framing: Framing,
    /// The Avro datum writer of `T` (Avro framings only).
    datum_writer: Option<SpecificSingleObjectWriter<T>>,
    _record: PhantomData<fn() -> T>,
}

enum Framing {
    SingleObject {
        /// Every known writer schema by fingerprint, each already paired with the reader.
        writers: HashMap<u64, Arc<WriterSchema>>,
        header: [u8; SINGLE_OBJECT_HEADER_LEN],
    },
    Confluent(Confluent),
    Json,
}

struct Confluent {
    registry: RegistryClient,
    /// `<topic>-value` (TopicNameStrategy).
    subject: String,
    /// Writer schemas seen so far, by registry id, each already paired with the reader.
    writers: RwLock<HashMap<u32, Arc<WriterSchema>>>,
    /// Held while fetching, so that each id is fetched once even under concurrent decodes
    /// (the cache itself stays readable meanwhile).
    fetching: Mutex<()>,
    /// The id of `T`'s schema under `subject`, once registered.
    own_id: OnceLock<u32>,
    registering: Mutex<()>,
}

impl<T> Codec<T>
where
    T: AvroSchema + Serialize + DeserializeOwned,
{
    /// A codec for the values of `topic` (the topic names the Confluent subject,
    /// `<topic>-value`). Reads the schema directories; does not contact the registry.
    pub fn new(topic: impl Into<String>, settings: &EncodingSettings) -> Result<Self, SetupError> {
        let topic = topic.into();
        let reader = Arc::new(ReaderSchema::of::<T>()?);
        let datum_writer = match settings.encoding {
            Encoding::Json => None,
            _ => Some(avro::datum_writer::<T>(&reader)?),
        };
        let framing = match &settings.encoding {
            Encoding::AvroSingleObject => {
                let mut writers = HashMap::new();
                let own = WriterSchema::new(reader.schema().clone(), &reader, None)
                    .map_err(|message| reader.setup_error(message))?;
                writers.insert(reader.fingerprint, Arc::new(own));
                for (path, schema) in avro::load_schema_dirs(&settings.schema_dirs)? {
                    let fingerprint = avro::fingerprint(&schema);
                    if writers.contains_key(&fingerprint) {
                        continue;
                    }
                    let writer = WriterSchema::new(schema, &reader, None).map_err(|message| {
                        SetupError::SchemaFile {
                            path: path.clone(),
                            message,
                        }
                    })?;
                    writers.insert(fingerprint, Arc::new(writer));
                }
                let mut header = [0; SINGLE_OBJECT_HEADER_LEN];
                header[..2].copy_from_slice(&SINGLE_OBJECT_MARKER);
                header[2..].copy_from_slice(&reader.fingerprint.to_le_bytes());
                Framing::SingleObject { writers, header }
            }
            Encoding::ConfluentAvro { registry_url } => Framing::Confluent(Confluent {
                registry: RegistryClient::new(registry_url, settings.registry_timeout),
                subject: format!("{topic}-value"),
                writers: RwLock::new(HashMap::new()),
                fetching: Mutex::new(()),
                own_id: OnceLock::new(),
                registering: Mutex::new(()),
            }),
            Encoding::Json => Framing::Json,
        };
        Ok(Self {
            topic,
            encoding: settings.encoding.clone(),
            reader,
            framing,
            datum_writer,
            _record: PhantomData,
        })
    }

    /// The topic this codec is for.
    pub fn topic(&self) -> &str {
        &self.topic
    }

    /// The encoding this codec reads and writes.
    pub fn encoding(&self) -> &Encoding {
        &self.encoding
    }

    /// The CRC-64-AVRO fingerprint of `T`'s schema (the single-object header's).
    pub fn schema_fingerprint(&self) -> u64 {
        self.reader.fingerprint
    }

    /// Decodes one value.
    pub fn decode(&self, bytes: &[u8]) -> Result<T, DecodeError> {
        match &self.framing {
            Framing::SingleObject { writers, .. } => {
                let fingerprint = avro::single_object_fingerprint(bytes)?;
                let writer = writers
                    .get(&fingerprint)
                    .ok_or(DecodeError::UnknownFingerprint(fingerprint))?;
                writer.decode(&self.reader, &bytes[SINGLE_OBJECT_HEADER_LEN..])
            }
            Framing::Confluent(confluent) => {
                let id = avro::confluent_schema_id(bytes)?;
                let writer = confluent.writer(id, &self.reader)?;
                writer.decode(&self.reader, &bytes[CONFLUENT_HEADER_LEN..])
            }
            Framing::Json => json::decode(bytes, &self.reader),
        }
    }

    /// Encodes one record (with `T`'s own schema as writer schema).
    pub fn encode(&self, record: &T) -> Result<Vec<u8>, EncodeError> {
        let mut out = Vec::with_capacity(128);
        self.encode_into(record, &mut out)?;
        Ok(out)
    }

    /// Encodes one record, appending to `out` (left as it was on error).
    pub fn encode_into(&self, record: &T, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        let start = out.len();
        let result = self.append(record, out);
        if result.is_err() {
            out.truncate(start);
        }
        result
    }

    fn append(&self, record: &T, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        match &self.framing {
            Framing::SingleObject { header, .. } => {
                out.extend_from_slice(header);
                self.write_datum(record, out)
            }
            Framing::Confluent(confluent) => {
                let id = confluent.own_id(&self.reader)?;
                out.push(CONFLUENT_MAGIC);
                out.extend_from_slice(&id.to_be_bytes());
                self.write_datum(record, out)
            }
            Framing::Json => {
                serde_json::to_writer(&mut *out, record).map_err(|e| EncodeError::Json {
                    record: self.reader.name.clone(),
                    message: e.to_string(),
                })
            }
        }
    }

    fn write_datum(&self, record: &T, out: &mut Vec<u8>) -> Result<(), EncodeError> {
        let writer = self
            .datum_writer
            .as_ref()
            .expect("Avro framings have a datum writer");
        writer
            .write_ref(record, out)
            .map(drop)
            .map_err(|e| EncodeError::Avro {
                record: self.reader.name.clone(),
                message: avro::error_message(&e),
            })
    }
}

impl Confluent {
    /// The writer schema with registry id `id`, fetched on first sight and kept.
    fn writer(&self, id: u32, reader: &ReaderSchema) -> Result<Arc<WriterSchema>, DecodeError> {
        if let Some(writer) = self.cached(id) {
            return Ok(writer);
        }
        let _fetching = self.fetching.lock().unwrap_or_else(PoisonError::into_inner);
        // Another thread may have fetched it while this one waited for the lock.
        if let Some(writer) = self.cached(id) {
            return Ok(writer);
        }
        let unusable = |message: String| DecodeError::UnusableRegistrySchema { id, message };
        let text = match self.registry.schema_by_id(id) {
            Ok(Lookup::Found(text)) => text,
            Ok(Lookup::NotFound) => return Err(DecodeError::UnknownSchemaId(id)),
            Ok(Lookup::Unusable(why)) => return Err(unusable(why)),
            Err(e) => return Err(DecodeError::RegistryUnavailable(e)),
        };
        let schema = Schema::parse_str(&text).map_err(|e| unusable(avro::error_message(&e)))?;
        let writer = Arc::new(WriterSchema::new(schema, reader, Some(id)).map_err(unusable)?);
        self.writers
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(id, writer.clone());
        Ok(writer)
    }

    fn cached(&self, id: u32) -> Option<Arc<WriterSchema>> {
        self.writers
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&id)
            .cloned()
    }

    /// The registry id of the reader schema under the subject: registered on first use
    /// (registering an existing schema just returns its id) and kept.
    fn own_id(&self, reader: &ReaderSchema) -> Result<u32, EncodeError> {
        if let Some(id) = self.own_id.get() {
            return Ok(*id);
        }
        let _registering = self
            .registering
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(id) = self.own_id.get() {
            return Ok(*id);
        }
        let id = self
            .registry
            .register(&self.subject, &reader.json)
            .map_err(|e| {
                if e.is_refusal() {
                    EncodeError::RegistrationRefused {
                        record: reader.name.clone(),
                        subject: self.subject.clone(),
                        source: e,
                    }
                } else {
                    EncodeError::RegistryUnavailable(e)
                }
            })?;
        // Our own records need no fetch to be read back.
        if let Ok(writer) = WriterSchema::new(reader.schema().clone(), reader, Some(id)) {
            self.writers
                .write()
                .unwrap_or_else(PoisonError::into_inner)
                .entry(id)
                .or_insert_with(|| Arc::new(writer));
        }
        let _ = self.own_id.set(id);
        Ok(id)
    }
}

/// Decodes a JSON record already parsed into a [`serde_json::Value`], with the same rules as
/// the `json` encoding: RFC 3339 strings accepted for timestamps, unknown enum symbols read
/// as the enum's default (`UNKNOWN`). For tools such as the simulator that read JSON
/// records without a topic; `T`'s schema is derived once per type and kept.
pub fn from_json_value<T>(value: serde_json::Value) -> Result<T, DecodeError>
where
    T: AvroSchema + DeserializeOwned + 'static,
{
    static READERS: OnceLock<RwLock<HashMap<TypeId, Arc<ReaderSchema>>>> = OnceLock::new();
    let readers = READERS.get_or_init(Default::default);
    let cached = readers
        .read()
        .unwrap_or_else(PoisonError::into_inner)
        .get(&TypeId::of::<T>())
        .cloned();
    let reader = match cached {
        Some(reader) => reader,
        None => {
            let reader = Arc::new(ReaderSchema::of::<T>().map_err(|e| DecodeError::Record {
                record: std::any::type_name::<T>().to_string(),
                message: e.to_string(),
            })?);
            readers
                .write()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(TypeId::of::<T>(), reader.clone());
            reader
        }
    };
    json::from_value(value, &reader)
}
