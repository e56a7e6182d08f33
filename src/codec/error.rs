//! The codec's errors, each classified by what the caller should do with it.

use std::path::PathBuf;

use super::registry::RegistryError;

/// What the caller of the codec should do about an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorClass {
    /// The record is bad: dead-letter it and go on. (Decoding only.)
    BadInput,
    /// The environment failed (the schema registry did not answer): retry the same record
    /// later, with back-off; the record may be fine.
    Retry,
    /// The configuration or the build is wrong (the registry refused our credentials or our
    /// schema, a record does not fit its own schema): no retry and no dead letter helps —
    /// stop with the message.
    Stop,
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
    #[error("{key} {path}: {message}")]
    RegistryTls {
        key: &'static str,
        path: PathBuf,
        message: String,
    },
}

/// A value could not be decoded. See [`class`](Self::class) for what to do.
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
    #[error("unknown writer schema fingerprint 0x{0:016x} ({signed} as a signed 64-bit number, as Java prints it): not this build's schema nor any .avsc file in schema_dirs", signed = *.0 as i64)]
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
    #[error("{0}; fix the registry settings of this topic's encoding and restart")]
    RegistryRefused(RegistryError),
}

impl DecodeError {
    /// What to do: [`BadInput`](ErrorClass::BadInput) (dead-letter),
    /// [`Retry`](ErrorClass::Retry) (the registry did not answer) or
    /// [`Stop`](ErrorClass::Stop) (the registry refused the credentials or the TLS
    /// handshake: a configuration error that every record would hit).
    pub fn class(&self) -> ErrorClass {
        match self {
            Self::RegistryUnavailable(_) => ErrorClass::Retry,
            Self::RegistryRefused(_) => ErrorClass::Stop,
            _ => ErrorClass::BadInput,
        }
    }

    /// `true`: the environment failed (the registry), retry the same record later.
    pub fn is_retriable(&self) -> bool {
        self.class() == ErrorClass::Retry
    }

    /// The registry error of a decode that needed the registry.
    pub(super) fn from_registry(e: RegistryError) -> Self {
        if e.is_configuration() {
            Self::RegistryRefused(e)
        } else {
            Self::RegistryUnavailable(e)
        }
    }
}

/// A record could not be encoded. See [`class`](Self::class) for what to do.
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
    #[error("{0}; fix the registry settings of this topic's encoding and restart")]
    RegistryRefused(RegistryError),
}

impl EncodeError {
    /// What to do: [`Retry`](ErrorClass::Retry) when the registry did not answer;
    /// otherwise [`Stop`](ErrorClass::Stop): the record does not fit its own schema, or
    /// the registry refused the schema, the credentials or the TLS handshake. Never
    /// [`BadInput`](ErrorClass::BadInput): what is encoded is the connector's own output.
    pub fn class(&self) -> ErrorClass {
        match self {
            Self::RegistryUnavailable(_) => ErrorClass::Retry,
            _ => ErrorClass::Stop,
        }
    }

    /// `true`: retry later. `false`: the record or the configuration is wrong; stop.
    pub fn is_retriable(&self) -> bool {
        self.class() == ErrorClass::Retry
    }
}
