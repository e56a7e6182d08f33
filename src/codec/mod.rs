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
//! Single-object headers carry the Avro specification's fingerprint, computed by
//! [`canonical`] exactly as other Avro implementations (the Java library) compute it; the
//! fingerprints earlier versions of the connector wrote are still read (deprecated).
//!
//! Errors say what the caller should do, by [`ErrorClass`]: `BadInput` means the bytes are
//! bad (dead-letter the record and go on); `Retry` means the schema registry could not
//! answer (retry later, the record may be fine); `Stop` means the configuration is wrong
//! (the registry refused the credentials, the TLS handshake or our schema). See
//! `docs/encodings.md`.
//!
//! Files: `config` (the configuration and its validation), `error`, `canonical` (Parsing
//! Canonical Form, CRC-64-AVRO), `avro` (framing, reader/writer schema pairs), `registry`
//! (the registry client: authentication, TLS), `json`.

mod avro;
pub mod canonical;
mod config;
mod datum;
mod error;
mod json;
mod registry;

use std::any::TypeId;
use std::collections::HashMap;
use std::marker::PhantomData;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, PoisonError, RwLock};

use apache_avro::{AvroSchema, Schema};
use serde::de::DeserializeOwned;
use serde::Serialize;

pub use self::avro::hex;
use self::avro::{Found, ReaderSchema, WriterSchema};
pub use self::config::{
    ConfigError, Encoding, EncodingConfig, EncodingSettings, Format, RegistryAuth, RegistryTls,
    Secret, DEFAULT_REGISTRY_TIMEOUT,
};
pub use self::datum::{read_state_datum, write_user_state_datum, OwnDatum, StateView};
pub use self::error::{DecodeError, EncodeError, ErrorClass, SetupError};
pub use self::registry::RegistryError;
use self::registry::{Lookup, RegistryClient, SubjectVersion};

/// First two bytes of an Avro single-object encoded value (the Avro spec's marker `C3 01`).
pub const SINGLE_OBJECT_MARKER: [u8; 2] = [0xC3, 0x01];
/// Length of the single-object header: marker plus 8-byte CRC-64-AVRO fingerprint.
pub const SINGLE_OBJECT_HEADER_LEN: usize = 10;
/// First byte of a value in the Confluent wire format.
pub const CONFLUENT_MAGIC: u8 = 0;
/// Length of the Confluent header: magic byte plus 4-byte big-endian schema id.
pub const CONFLUENT_HEADER_LEN: usize = 5;

/// A schema as single-object encoding identifies it: what `campaign-connector schemas`
/// prints.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SchemaIdentity {
    /// Full name, e.g. `campaign_connector.Interaction`.
    pub name: String,
    /// CRC-64-AVRO of the Parsing Canonical Form: what this build writes and what other
    /// Avro implementations compute. Java prints it as a signed `long` (`as i64`).
    pub fingerprint: u64,
    /// The fingerprint earlier versions of the connector wrote, still read.
    pub legacy_fingerprint: u64,
    /// The Parsing Canonical Form.
    pub canonical_form: String,
}

impl SchemaIdentity {
    /// The identity of `T`'s own schema.
    pub fn of<T: AvroSchema>() -> Result<Self, SetupError> {
        let reader = ReaderSchema::of::<T>()?;
        Ok(Self {
            name: reader.name,
            fingerprint: reader.fingerprint,
            legacy_fingerprint: reader.legacy_fingerprint,
            canonical_form: reader.canonical_form,
        })
    }

    /// The identity of the schema in an `.avsc` file.
    pub fn of_file(path: &Path) -> Result<Self, SetupError> {
        let file = avro::load_schema_file(path)?;
        Ok(Self {
            name: avro::full_name(&file.schema).unwrap_or_else(|| "(unnamed)".to_string()),
            fingerprint: file.canonical.fingerprint,
            legacy_fingerprint: canonical::legacy_fingerprint(&file.schema),
            canonical_form: file.canonical.canonical_form,
        })
    }

    /// The single-object header of values written with this schema.
    pub fn single_object_header(&self) -> [u8; SINGLE_OBJECT_HEADER_LEN] {
        single_object_header(self.fingerprint)
    }
}

fn single_object_header(fingerprint: u64) -> [u8; SINGLE_OBJECT_HEADER_LEN] {
    let mut header = [0; SINGLE_OBJECT_HEADER_LEN];
    header[..2].copy_from_slice(&SINGLE_OBJECT_MARKER);
    header[2..].copy_from_slice(&fingerprint.to_le_bytes());
    header
}

/// The subject under which the `confluent` encoding registers (and looks up) the schema of
/// `topic`'s values: `<topic>-value` (TopicNameStrategy).
pub fn confluent_subject(topic: &str) -> String {
    format!("{topic}-value")
}

/// What a schema registry holds under the subject of a topic, compared with one schema:
/// what `campaign-connector schemas` prints for a topic in the `confluent` encoding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubjectReport {
    /// The registry's base URL.
    pub registry_url: String,
    /// `<topic>-value`.
    pub subject: String,
    /// Every version under the subject, oldest first; `None` when the registry has no such
    /// subject.
    pub versions: Option<Vec<RegisteredVersion>>,
}

/// One version of a subject, compared with a schema.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegisteredVersion {
    pub version: u32,
    /// The registry id of the version's schema (what the Confluent header carries).
    pub id: u32,
    /// CRC-64-AVRO of the version's Parsing Canonical Form, if it is an Avro schema.
    pub fingerprint: Option<u64>,
    /// Why the version has no fingerprint: not Avro, schema references, not a schema.
    pub unusable: Option<String>,
    /// Whether its canonical form is the compared schema's.
    pub matches: bool,
}

impl SubjectReport {
    /// The versions whose schema is the compared one (same Parsing Canonical Form).
    pub fn matching(&self) -> impl Iterator<Item = &RegisteredVersion> {
        self.versions.iter().flatten().filter(|v| v.matches)
    }
}

/// A subject could not be looked up.
#[derive(Debug, thiserror::Error)]
pub enum SubjectLookupError {
    #[error("looking up subject {subject} at the schema registry {registry_url}: {source}")]
    Registry {
        registry_url: String,
        subject: String,
        source: RegistryError,
    },
    #[error(transparent)]
    Setup(#[from] SetupError),
}

/// Looks up `topic`'s subject in the registry of `settings` and compares every version with
/// `schema` by Parsing Canonical Form: which registry ids and versions are this schema.
/// `None` when the encoding is not `confluent` (there is no registry to ask). Makes one
/// request for the version list and one per version.
pub fn lookup_subject(
    topic: &str,
    settings: &EncodingSettings,
    schema: &SchemaIdentity,
) -> Result<Option<SubjectReport>, SubjectLookupError> {
    let Encoding::ConfluentAvro { registry_url } = &settings.encoding else {
        return Ok(None);
    };
    let registry = RegistryClient::new(registry_url, settings)?;
    let subject = confluent_subject(topic);
    let error = |source: RegistryError| SubjectLookupError::Registry {
        registry_url: registry.base_url().to_string(),
        subject: subject.clone(),
        source,
    };
    let mut report = SubjectReport {
        registry_url: registry.base_url().to_string(),
        subject: subject.clone(),
        versions: None,
    };
    let Some(numbers) = registry.subject_versions(&subject).map_err(error)? else {
        return Ok(Some(report));
    };
    let mut versions = Vec::with_capacity(numbers.len());
    for number in numbers {
        // A version deleted since the list was read is left out.
        let Some(SubjectVersion {
            version,
            id,
            schema: found,
        }) = registry.subject_version(&subject, number).map_err(error)?
        else {
            continue;
        };
        let canonical = match found {
            Lookup::Found(text) => canonical::Fingerprinted::of_text(&text),
            Lookup::Unusable(why) => Err(why),
            Lookup::NotFound => Err("no schema".to_string()),
        };
        versions.push(match canonical {
            Ok(c) => RegisteredVersion {
                version,
                id,
                fingerprint: Some(c.fingerprint),
                unusable: None,
                matches: c.canonical_form == schema.canonical_form,
            },
            Err(why) => RegisteredVersion {
                version,
                id,
                fingerprint: None,
                unusable: Some(why),
                matches: false,
            },
        });
    }
    report.versions = Some(versions);
    Ok(Some(report))
}

/// Encodes and decodes the values of one topic whose records are `T`.
///
/// Cheap to share: build one per topic at startup and use it from any thread (`&self`).
pub struct Codec<T: AvroSchema> {
    topic: String,
    encoding: Encoding,
    reader: Arc<ReaderSchema>,
    framing: Framing,
    /// Values decoded through a legacy fingerprint (see [`Codec::legacy_decodes`]).
    legacy_decodes: AtomicU64,
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
        let framing = match &settings.encoding {
            Encoding::AvroSingleObject => Framing::SingleObject {
                writers: single_object_writers(&reader, settings)?,
                header: single_object_header(reader.fingerprint),
            },
            Encoding::ConfluentAvro { registry_url } => Framing::Confluent(Confluent {
                registry: RegistryClient::new(registry_url, settings)?,
                subject: confluent_subject(&topic),
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
            legacy_decodes: AtomicU64::new(0),
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

    /// The CRC-64-AVRO fingerprint of `T`'s schema's Parsing Canonical Form (the
    /// single-object header's, as the Avro specification and the Java library compute it).
    pub fn schema_fingerprint(&self) -> u64 {
        self.reader.fingerprint
    }

    /// How many values this codec decoded that carried a legacy fingerprint (one that
    /// earlier versions of the connector wrote). Reading those is deprecated; once this
    /// stays 0 over a topic's whole content, no legacy record is left in it.
    pub fn legacy_decodes(&self) -> u64 {
        self.legacy_decodes.load(Ordering::Relaxed)
    }

    /// Decodes one value.
    pub fn decode(&self, bytes: &[u8]) -> Result<T, DecodeError> {
        self.decode_as(bytes)
    }

    /// Decodes one value of `T`'s schema into `U`: a type that reads the same fields as `T`
    /// (by serde's names), but may keep fewer of them or keep them differently.
    pub fn decode_as<U: DeserializeOwned>(&self, bytes: &[u8]) -> Result<U, DecodeError> {
        match &self.framing {
            Framing::SingleObject { writers, .. } => {
                let fingerprint = avro::single_object_fingerprint(bytes)?;
                let writer = writers
                    .get(&fingerprint)
                    .ok_or(DecodeError::UnknownFingerprint(fingerprint))?;
                if writer.legacy {
                    self.legacy_decodes.fetch_add(1, Ordering::Relaxed);
                }
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

    /// The datum of a value written with this build's own schema of `T` — a single-object
    /// header with its fingerprint, or the registry id this codec registered it under —
    /// for a reader that knows that schema's shape (`datum.rs`); `None` for any other value
    /// (the generic decoder reads those).
    pub fn own_datum<'b>(&self, bytes: &'b [u8]) -> Option<&'b [u8]> {
        match &self.framing {
            Framing::SingleObject { header, .. } => bytes.strip_prefix(&header[..]),
            Framing::Confluent(confluent) => {
                let id = avro::confluent_schema_id(bytes).ok()?;
                (confluent.own_id.get() == Some(&id)).then(|| &bytes[CONFLUENT_HEADER_LEN..])
            }
            Framing::Json => None,
        }
    }

    /// Encodes one record (with `T`'s own schema as writer schema).
    pub fn encode(&self, record: &T) -> Result<Vec<u8>, EncodeError>
    where
        T: OwnDatum,
    {
        let mut out = Vec::with_capacity(128);
        self.encode_into(record, &mut out)?;
        Ok(out)
    }

    /// Encodes one record, appending to `out` (left as it was on error).
    pub fn encode_into(&self, record: &T, out: &mut Vec<u8>) -> Result<(), EncodeError>
    where
        T: OwnDatum,
    {
        let start = out.len();
        let result = self.append(record, out);
        if result.is_err() {
            out.truncate(start);
        }
        result
    }

    fn append(&self, record: &T, out: &mut Vec<u8>) -> Result<(), EncodeError>
    where
        T: OwnDatum,
    {
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

    /// Encodes a record whose datum `write` appends with this codec's own schema (a
    /// hand-written writer of a view, `datum.rs`), appending to `out`. `None` when the
    /// encoding is JSON: the caller encodes a record instead.
    pub fn encode_own_datum(
        &self,
        out: &mut Vec<u8>,
        write: impl FnOnce(&mut Vec<u8>),
    ) -> Option<Result<(), EncodeError>> {
        match &self.framing {
            Framing::SingleObject { header, .. } => {
                out.extend_from_slice(header);
                write(out);
                Some(Ok(()))
            }
            Framing::Confluent(confluent) => Some(confluent.own_id(&self.reader).map(|id| {
                out.push(CONFLUENT_MAGIC);
                out.extend_from_slice(&id.to_be_bytes());
                write(out);
            })),
            Framing::Json => None,
        }
    }

    /// The datum of `record` with its own schema: by its hand-written writer when it has
    /// one (`datum.rs`), else by the generic serializer.
    fn write_datum(&self, record: &T, out: &mut Vec<u8>) -> Result<(), EncodeError>
    where
        T: OwnDatum,
    {
        if record.write_own_datum(out) {
            return Ok(());
        }
        self.reader
            .write_datum(record, out)
            .map_err(|message| EncodeError::Avro {
                record: self.reader.name.clone(),
                message,
            })
    }
}

/// Earlier versions of this build's own schemas, read but never written: what earlier
/// versions of the connector and its CLI wrote stays in the topics (in the compacted
/// catalog and changelog for as long as its key is not written again). Each is known under
/// its specification fingerprint and its legacy one. `schemas/previous/1/`: before
/// `Campaign.backfill_since` and the decision reason `backfill`; `schemas/previous/2/`:
/// before `Campaign.mode` (its records read as `LIVE`).
const PREVIOUS_SCHEMAS: [(&str, &str); 5] = [
    (
        "schemas/previous/1/campaign.avsc",
        include_str!("../../schemas/previous/1/campaign.avsc"),
    ),
    (
        "schemas/previous/1/decision.avsc",
        include_str!("../../schemas/previous/1/decision.avsc"),
    ),
    (
        "schemas/previous/1/task_state.avsc",
        include_str!("../../schemas/previous/1/task_state.avsc"),
    ),
    (
        "schemas/previous/2/campaign.avsc",
        include_str!("../../schemas/previous/2/campaign.avsc"),
    ),
    (
        "schemas/previous/2/task_state.avsc",
        include_str!("../../schemas/previous/2/task_state.avsc"),
    ),
];

/// Every writer schema a single-object value of `reader`'s type may have been written with,
/// by fingerprint: this build's schema, its [previous versions](PREVIOUS_SCHEMAS) and every
/// schema file in the schema directories,
/// each under the specification's fingerprint and, where it differs, under the legacy
/// fingerprint that earlier versions of the connector wrote (deprecated, read only; see
/// `docs/encodings.md`). A specification fingerprint always wins over a legacy one.
fn single_object_writers(
    reader: &Arc<ReaderSchema>,
    settings: &EncodingSettings,
) -> Result<HashMap<u64, Arc<WriterSchema>>, SetupError> {
    let mut writers = HashMap::new();
    let own = WriterSchema::new(
        reader.schema().clone(),
        Some(reader.fingerprint),
        reader,
        Found::Fingerprint,
    )
    .map_err(|message| reader.setup_error(message))?;
    writers.insert(reader.fingerprint, Arc::new(own));
    let mut legacy = vec![(
        reader.legacy_fingerprint,
        reader.fingerprint,
        reader.schema().clone(),
        None,
    )];
    let mut files = Vec::new();
    for (path, text) in PREVIOUS_SCHEMAS {
        let error = |message: String| SetupError::SchemaFile {
            path: path.into(),
            message,
        };
        let schema = Schema::parse_str(text).map_err(|e| error(avro::error_message(&e)))?;
        if avro::full_name(&schema).as_deref() != Some(reader.name.as_str()) {
            continue;
        }
        let canonical = canonical::Fingerprinted::of_text(text).map_err(error)?;
        files.push(avro::SchemaFile {
            path: path.into(),
            schema,
            canonical,
        });
    }
    files.extend(avro::load_schema_dirs(&settings.schema_dirs)?);
    for file in files {
        let fingerprint = file.canonical.fingerprint;
        legacy.push((
            canonical::legacy_fingerprint(&file.schema),
            fingerprint,
            file.schema.clone(),
            Some(file.path.clone()),
        ));
        if writers.contains_key(&fingerprint) {
            continue;
        }
        let writer = WriterSchema::new(file.schema, Some(fingerprint), reader, Found::Fingerprint)
            .map_err(|message| SetupError::SchemaFile {
                path: file.path,
                message,
            })?;
        writers.insert(fingerprint, Arc::new(writer));
    }
    for (legacy_fingerprint, fingerprint, schema, path) in legacy {
        if writers.contains_key(&legacy_fingerprint) {
            continue;
        }
        let found = Found::LegacyFingerprint(legacy_fingerprint);
        let writer =
            WriterSchema::new(schema, Some(fingerprint), reader, found).map_err(|message| {
                match path {
                    Some(path) => SetupError::SchemaFile { path, message },
                    None => reader.setup_error(message),
                }
            })?;
        writers.insert(legacy_fingerprint, Arc::new(writer));
    }
    Ok(writers)
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
            Err(e) => return Err(DecodeError::from_registry(e)),
        };
        let schema = Schema::parse_str(&text).map_err(|e| unusable(avro::error_message(&e)))?;
        let fingerprint = canonical::Fingerprinted::of_text(&text)
            .ok()
            .map(|c| c.fingerprint);
        let writer = WriterSchema::new(schema, fingerprint, reader, Found::RegistryId(id))
            .map_err(unusable)?;
        let writer = Arc::new(writer);
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
                } else if e.is_configuration() {
                    EncodeError::RegistryRefused(e)
                } else {
                    EncodeError::RegistryUnavailable(e)
                }
            })?;
        // Our own records need no fetch to be read back.
        let own = WriterSchema::new(
            reader.schema().clone(),
            Some(reader.fingerprint),
            reader,
            Found::RegistryId(id),
        );
        if let Ok(writer) = own {
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
