//! A topic's encoding as configured (`format`, the schema registry and its credentials,
//! schema directories), checked once into [`EncodingSettings`].

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

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

/// A password or token: read from the configuration, sent to the registry, never shown.
/// `Debug` prints `***`, so that no settings dump, log line or panic message carries it.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Secret(String);

impl Secret {
    pub fn new(secret: impl Into<String>) -> Self {
        Self(secret.into())
    }

    /// The secret itself: only for the request header.
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// One topic's encoding as written in the configuration, e.g.
///
/// ```yaml
/// format: confluent
/// registry_url: https://schema-registry:8081
/// registry_username: connector
/// registry_password: "…"
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
    #[serde(default, deserialize_with = "number_or_text")]
    pub registry_timeout_ms: Option<u64>,
    /// User of HTTP basic authentication with the registry (with `registry_password`).
    #[serde(default)]
    pub registry_username: Option<String>,
    /// Password of HTTP basic authentication with the registry. Never logged.
    #[serde(default)]
    pub registry_password: Option<Secret>,
    /// Token sent as `Authorization: Bearer …` (instead of basic authentication). Never
    /// logged.
    #[serde(default)]
    pub registry_bearer_token: Option<Secret>,
    /// PEM file of the CA certificate(s) to trust for an `https://` registry, instead of the
    /// public web PKI roots.
    #[serde(default)]
    pub registry_ca_location: Option<PathBuf>,
    /// PEM file of the client certificate (and its chain) for mutual TLS with the registry,
    /// with `registry_key_location`.
    #[serde(default)]
    pub registry_certificate_location: Option<PathBuf>,
    /// PEM file of the client certificate's private key (PKCS#8, PKCS#1 or SEC1, not
    /// encrypted).
    #[serde(default)]
    pub registry_key_location: Option<PathBuf>,
}

/// A configuration that does not describe a usable encoding.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("format confluent needs registry_url, the schema registry's base URL (e.g. http://schema-registry:8081)")]
    MissingRegistryUrl,
    #[error("registry_url {0:?} is not an http:// or https:// URL")]
    InvalidRegistryUrl(String),
    #[error("registry_url must not contain credentials (user:password@): URLs appear in error messages; set registry_username and registry_password")]
    CredentialsInRegistryUrl,
    #[error("{key} is only used with format confluent, not {format}")]
    RegistryKeyNotUsed { key: &'static str, format: Format },
    #[error("registry_timeout_ms must be greater than 0")]
    ZeroRegistryTimeout,
    #[error("schema_dirs is only used with format avro (confluent writer schemas come from the registry; json has none), not {0}")]
    SchemaDirsNotUsed(Format),
    #[error("{0} is set but empty")]
    Empty(&'static str),
    #[error(
        "basic authentication needs both registry_username and registry_password; only {0} is set"
    )]
    HalfBasicAuth(&'static str),
    #[error("registry_bearer_token and registry_username/registry_password are two ways to authenticate with the registry: set one of them")]
    TwoAuthMethods,
    #[error("mutual TLS needs both registry_certificate_location and registry_key_location; only {0} is set")]
    HalfClientCertificate(&'static str),
    #[error("{key} is set, but registry_url {url} is not https:// (no TLS)")]
    TlsWithoutHttps { key: &'static str, url: String },
}

/// How requests authenticate with the schema registry.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub enum RegistryAuth {
    /// No `Authorization` header.
    #[default]
    None,
    /// `Authorization: Basic base64(user:password)`.
    Basic { username: String, password: Secret },
    /// `Authorization: Bearer token`.
    Bearer(Secret),
}

impl fmt::Display for RegistryAuth {
    /// What was sent, for error messages (never the secret).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::None => f.write_str("no credentials were sent (registry_username/registry_password or registry_bearer_token are not set)"),
            Self::Basic { username, .. } => write!(f, "sent basic authentication as user {username:?} (registry_username/registry_password)"),
            Self::Bearer(_) => f.write_str("sent a bearer token (registry_bearer_token)"),
        }
    }
}

/// TLS settings of an `https://` registry beyond the defaults.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RegistryTls {
    /// Trust only the CA certificate(s) in this PEM file instead of the web PKI roots.
    pub ca_location: Option<PathBuf>,
    /// Client certificate (PEM, chain) and private key (PEM) for mutual TLS.
    pub client_certificate: Option<(PathBuf, PathBuf)>,
}

impl EncodingConfig {
    /// Checks the combination of fields and turns it into settings.
    pub fn validate(&self) -> Result<EncodingSettings, ConfigError> {
        let format = self.format;
        if format != Format::Confluent {
            for (key, set) in self.registry_keys() {
                if set {
                    return Err(ConfigError::RegistryKeyNotUsed { key, format });
                }
            }
        }
        if format != Format::Avro && !self.schema_dirs.is_empty() {
            return Err(ConfigError::SchemaDirsNotUsed(format));
        }
        let mut settings = EncodingSettings::new(match format {
            Format::Avro => Encoding::AvroSingleObject,
            Format::Json => Encoding::Json,
            Format::Confluent => Encoding::ConfluentAvro {
                registry_url: registry_url(self.registry_url.as_deref())?,
            },
        });
        settings.schema_dirs = self.schema_dirs.clone();
        settings.registry_timeout = match self.registry_timeout_ms {
            Some(0) => return Err(ConfigError::ZeroRegistryTimeout),
            Some(ms) => Duration::from_millis(ms),
            None => DEFAULT_REGISTRY_TIMEOUT,
        };
        settings.registry_auth = self.auth()?;
        settings.registry_tls = self.tls()?;
        if let (Encoding::ConfluentAvro { registry_url }, Some(key)) =
            (&settings.encoding, settings.registry_tls.first_key())
        {
            if !registry_url.starts_with("https://") {
                return Err(ConfigError::TlsWithoutHttps {
                    key,
                    url: registry_url.clone(),
                });
            }
        }
        Ok(settings)
    }

    /// Every key that only `confluent` uses, and whether it is set.
    fn registry_keys(&self) -> [(&'static str, bool); 8] {
        [
            ("registry_url", self.registry_url.is_some()),
            ("registry_timeout_ms", self.registry_timeout_ms.is_some()),
            ("registry_username", self.registry_username.is_some()),
            ("registry_password", self.registry_password.is_some()),
            (
                "registry_bearer_token",
                self.registry_bearer_token.is_some(),
            ),
            ("registry_ca_location", self.registry_ca_location.is_some()),
            (
                "registry_certificate_location",
                self.registry_certificate_location.is_some(),
            ),
            (
                "registry_key_location",
                self.registry_key_location.is_some(),
            ),
        ]
    }

    fn auth(&self) -> Result<RegistryAuth, ConfigError> {
        let username = non_empty("registry_username", self.registry_username.as_deref())?;
        let password = non_empty(
            "registry_password",
            self.registry_password.as_ref().map(Secret::expose),
        )?;
        let token = non_empty(
            "registry_bearer_token",
            self.registry_bearer_token.as_ref().map(Secret::expose),
        )?;
        match (username, password, token) {
            (None, None, None) => Ok(RegistryAuth::None),
            (None, None, Some(token)) => Ok(RegistryAuth::Bearer(Secret::new(token))),
            (_, _, Some(_)) => Err(ConfigError::TwoAuthMethods),
            (Some(username), Some(password), None) => Ok(RegistryAuth::Basic {
                username: username.to_string(),
                password: Secret::new(password),
            }),
            (Some(_), None, None) => Err(ConfigError::HalfBasicAuth("registry_username")),
            (None, Some(_), None) => Err(ConfigError::HalfBasicAuth("registry_password")),
        }
    }

    fn tls(&self) -> Result<RegistryTls, ConfigError> {
        let path = |key: &'static str, p: &Option<PathBuf>| match p {
            Some(p) if p.as_os_str().is_empty() => Err(ConfigError::Empty(key)),
            other => Ok(other.clone()),
        };
        let ca_location = path("registry_ca_location", &self.registry_ca_location)?;
        let certificate = path(
            "registry_certificate_location",
            &self.registry_certificate_location,
        )?;
        let key = path("registry_key_location", &self.registry_key_location)?;
        let client_certificate = match (certificate, key) {
            (Some(certificate), Some(key)) => Some((certificate, key)),
            (None, None) => None,
            (Some(_), None) => {
                return Err(ConfigError::HalfClientCertificate(
                    "registry_certificate_location",
                ))
            }
            (None, Some(_)) => {
                return Err(ConfigError::HalfClientCertificate("registry_key_location"))
            }
        };
        Ok(RegistryTls {
            ca_location,
            client_certificate,
        })
    }
}

impl RegistryTls {
    /// The first TLS key that is set, for messages.
    fn first_key(&self) -> Option<&'static str> {
        if self.ca_location.is_some() {
            Some("registry_ca_location")
        } else if self.client_certificate.is_some() {
            Some("registry_certificate_location")
        } else {
            None
        }
    }
}

fn non_empty<'a>(
    key: &'static str,
    value: Option<&'a str>,
) -> Result<Option<&'a str>, ConfigError> {
    match value {
        Some(v) if v.trim().is_empty() => Err(ConfigError::Empty(key)),
        other => Ok(other),
    }
}

fn registry_url(url: Option<&str>) -> Result<String, ConfigError> {
    let url = url
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .ok_or(ConfigError::MissingRegistryUrl)?;
    let rest = ["http://", "https://"]
        .iter()
        .find_map(|scheme| url.strip_prefix(scheme))
        .filter(|rest| !rest.is_empty());
    let Some(rest) = rest.filter(|_| !url.contains(char::is_whitespace)) else {
        return Err(ConfigError::InvalidRegistryUrl(url.to_string()));
    };
    let authority = rest.split(['/', '?', '#']).next().unwrap_or_default();
    if authority.contains('@') {
        return Err(ConfigError::CredentialsInRegistryUrl);
    }
    Ok(url.trim_end_matches('/').to_string())
}

/// Accepts a number or its text (environment variables are text).
fn number_or_text<'de, D>(d: D) -> Result<Option<u64>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Either {
        Number(u64),
        Text(String),
    }
    match Option::<Either>::deserialize(d)? {
        None => Ok(None),
        Some(Either::Number(n)) => Ok(Some(n)),
        Some(Either::Text(s)) => s.trim().parse().map(Some).map_err(|e| {
            serde::de::Error::custom(format!("{s:?} is not a number of milliseconds: {e}"))
        }),
    }
}

/// A topic's encoding, ready to build [`Codec`](super::Codec)s with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EncodingSettings {
    pub encoding: Encoding,
    /// Directories of extra writer schemas (`*.avsc`) for single-object encoding.
    pub schema_dirs: Vec<PathBuf>,
    /// Timeout of one schema registry request.
    pub registry_timeout: Duration,
    /// How registry requests authenticate.
    pub registry_auth: RegistryAuth,
    /// TLS settings of an `https://` registry.
    pub registry_tls: RegistryTls,
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

    /// Authenticates registry requests this way.
    pub fn with_registry_auth(mut self, auth: RegistryAuth) -> Self {
        self.registry_auth = auth;
        self
    }

    /// Uses these TLS settings with an `https://` registry.
    pub fn with_registry_tls(mut self, tls: RegistryTls) -> Self {
        self.registry_tls = tls;
        self
    }

    fn new(encoding: Encoding) -> Self {
        Self {
            encoding,
            schema_dirs: Vec::new(),
            registry_timeout: DEFAULT_REGISTRY_TIMEOUT,
            registry_auth: RegistryAuth::None,
            registry_tls: RegistryTls::default(),
        }
    }
}
