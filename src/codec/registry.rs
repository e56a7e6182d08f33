//! A minimal, blocking Confluent schema registry client: look a schema up by id, register
//! a schema under a subject, list a subject's versions (for `campaign-connector schemas`),
//! authenticated (basic or bearer) and over TLS with an optional
//! private CA and client certificate. Caching is the codec's job; this only speaks HTTP.
//!
//! Failures are classified here, because only here is it known what happened: the registry
//! refusing our credentials (401/403) or the TLS handshake failing is a configuration error
//! that every later request would hit too; a refused schema (409/422) is final for that
//! schema; anything else (no connection, timeout, 5xx, a garbled answer) may pass.

use std::path::Path;

use base64::Engine;
use serde::Deserialize;
use ureq::tls::{Certificate, ClientCert, PemItem, PrivateKey, RootCerts, TlsConfig, TlsProvider};

use super::config::{EncodingSettings, RegistryAuth};
use super::error::SetupError;

const CONTENT_TYPE: &str = "application/vnd.schemaregistry.v1+json";
/// Registry answers are small JSON documents; anything bigger is not one.
const MAX_BODY: u64 = 4 << 20;
/// The registry's error code for "schema not found" (with HTTP 404).
const SCHEMA_NOT_FOUND: i64 = 40403;
/// The registry's error code for "subject not found" (with HTTP 404).
const SUBJECT_NOT_FOUND: i64 = 40401;
/// The registry's error code for "version not found" (with HTTP 404).
const VERSION_NOT_FOUND: i64 = 40402;

/// The schema registry did not give a usable answer.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RegistryError {
    #[error("{url}: {message}")]
    Unreachable { url: String, message: String },
    #[error("{url}: HTTP {status}: {message}")]
    Status {
        url: String,
        status: u16,
        message: String,
    },
    #[error("{url}: unexpected answer: {message}")]
    BadAnswer { url: String, message: String },
    #[error("schema registry at {base_url} refused the credentials (HTTP {status}) {detail}")]
    CredentialsRefused {
        base_url: String,
        status: u16,
        /// The request, the registry's message and what was sent (never the secret).
        detail: String,
    },
    #[error("TLS with the schema registry at {base_url} failed: {message}; the registry's certificate is checked against registry_ca_location (the public web PKI roots when it is not set), and a client certificate comes from registry_certificate_location and registry_key_location")]
    Tls { base_url: String, message: String },
}

impl RegistryError {
    /// The registry understood the request and refused it for good: an incompatible
    /// schema (409) or an invalid one (422). Retrying the same request cannot help.
    pub fn is_refusal(&self) -> bool {
        matches!(
            self,
            Self::Status {
                status: 409 | 422,
                ..
            }
        )
    }

    /// The registry refused the credentials, or TLS with it failed: every request fails
    /// the same way until the configuration changes.
    pub fn is_configuration(&self) -> bool {
        matches!(self, Self::CredentialsRefused { .. } | Self::Tls { .. })
    }
}

/// A schema registry at one base URL.
pub struct RegistryClient {
    base_url: String,
    agent: ureq::Agent,
    auth: RegistryAuth,
    /// The `Authorization` header's value, if any. Never logged or shown.
    authorization: Option<String>,
}

#[derive(Deserialize)]
struct SchemaById {
    schema: String,
    #[serde(default, rename = "schemaType")]
    schema_type: Option<String>,
    #[serde(default)]
    references: Vec<serde_json::Value>,
}

impl SchemaById {
    /// The schema text, unless it is one this connector cannot use.
    fn lookup(self) -> Lookup {
        if let Some(kind) = self.schema_type.filter(|t| t != "AVRO") {
            return Lookup::Unusable(format!("a {kind} schema, not Avro"));
        }
        if !self.references.is_empty() {
            return Lookup::Unusable(
                "it has schema references, which this connector does not resolve".into(),
            );
        }
        Lookup::Found(self.schema)
    }
}

/// `GET /subjects/{subject}/versions/{version}`.
#[derive(Deserialize)]
struct VersionAnswer {
    id: u32,
    version: u32,
    #[serde(flatten)]
    schema: SchemaById,
}

/// One version of a subject, as the registry has it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubjectVersion {
    pub version: u32,
    /// The registry id of the version's schema.
    pub id: u32,
    /// The schema (or why this connector cannot use it).
    pub schema: Lookup,
}

#[derive(Deserialize)]
struct Registered {
    id: u32,
}

#[derive(Deserialize)]
struct ErrorBody {
    error_code: i64,
    message: String,
}

impl RegistryClient {
    /// A client of the registry at `base_url` with the credentials, TLS settings and
    /// timeout of `settings`. Reads the certificate and key files.
    pub fn new(base_url: &str, settings: &EncodingSettings) -> Result<Self, SetupError> {
        let mut tls = TlsConfig::builder().provider(TlsProvider::Rustls);
        if let Some(ca) = &settings.registry_tls.ca_location {
            let roots = certificates("registry_ca_location", ca)?;
            tls = tls.root_certs(RootCerts::new_with_certs(&roots));
        }
        if let Some((certificate, key)) = &settings.registry_tls.client_certificate {
            let chain = certificates("registry_certificate_location", certificate)?;
            let key = private_key(key)?;
            tls = tls.client_cert(Some(ClientCert::new_with_certs(&chain, key)));
        }
        let config = ureq::Agent::config_builder()
            .timeout_global(Some(settings.registry_timeout))
            // Statuses are answers to classify, not transport errors.
            .http_status_as_error(false)
            .tls_config(tls.build())
            .build();
        let authorization = match &settings.registry_auth {
            RegistryAuth::None => None,
            RegistryAuth::Basic { username, password } => {
                let pair = format!("{username}:{}", password.expose());
                Some(format!(
                    "Basic {}",
                    base64::engine::general_purpose::STANDARD.encode(pair)
                ))
            }
            RegistryAuth::Bearer(token) => Some(format!("Bearer {}", token.expose())),
        };
        Ok(Self {
            base_url: base_url.trim_end_matches('/').to_string(),
            agent: ureq::Agent::new_with_config(config),
            auth: settings.registry_auth.clone(),
            authorization,
        })
    }

    /// The base URL, without a trailing `/`.
    pub fn base_url(&self) -> &str {
        &self.base_url
    }

    /// `GET /schemas/ids/{id}`.
    pub fn schema_by_id(&self, id: u32) -> Result<Lookup, RegistryError> {
        let path = format!("/schemas/ids/{id}");
        let (url, status, body) = self.get(&path)?;
        match status {
            200 => Ok(parse::<SchemaById>(&url, &body)?.lookup()),
            // Only the registry's own "schema not found" proves the id unknown; a bare 404
            // is more likely a wrong base URL (retry, someone has to fix the configuration).
            404 if error_code(&body) == Some(SCHEMA_NOT_FOUND) => Ok(Lookup::NotFound),
            _ => Err(self.status_error(&format!("GET {path}"), url, status, &body)),
        }
    }

    /// `GET /subjects/{subject}/versions`: the subject's version numbers, or `None` when the
    /// registry has no such subject (its own "subject not found", error code 40401).
    pub fn subject_versions(&self, subject: &str) -> Result<Option<Vec<u32>>, RegistryError> {
        let path = format!("/subjects/{subject}/versions");
        let (url, status, body) = self.get(&path)?;
        match status {
            200 => Ok(Some(parse(&url, &body)?)),
            404 if error_code(&body) == Some(SUBJECT_NOT_FOUND) => Ok(None),
            _ => Err(self.status_error(&format!("GET {path}"), url, status, &body)),
        }
    }

    /// `GET /subjects/{subject}/versions/{version}`: the version's id and schema, or `None`
    /// when the registry has no such subject or version (deleted meanwhile).
    pub fn subject_version(
        &self,
        subject: &str,
        version: u32,
    ) -> Result<Option<SubjectVersion>, RegistryError> {
        let path = format!("/subjects/{subject}/versions/{version}");
        let (url, status, body) = self.get(&path)?;
        match status {
            200 => {
                let answer: VersionAnswer = parse(&url, &body)?;
                Ok(Some(SubjectVersion {
                    version: answer.version,
                    id: answer.id,
                    schema: answer.schema.lookup(),
                }))
            }
            404 if matches!(
                error_code(&body),
                Some(SUBJECT_NOT_FOUND | VERSION_NOT_FOUND)
            ) =>
            {
                Ok(None)
            }
            _ => Err(self.status_error(&format!("GET {path}"), url, status, &body)),
        }
    }

    /// A `GET` of `path` (below the base URL): the full URL, the status and the body.
    fn get(&self, path: &str) -> Result<(String, u16, String), RegistryError> {
        let url = format!("{}{path}", self.base_url);
        let mut request = self.agent.get(&url).header("Accept", CONTENT_TYPE);
        if let Some(authorization) = &self.authorization {
            request = request.header("Authorization", authorization);
        }
        let (status, body) = self.read(&url, request.call())?;
        Ok((url, status, body))
    }

    /// `POST /subjects/{subject}/versions`: registers the schema (or finds it registered)
    /// and returns its id.
    pub fn register(&self, subject: &str, schema_json: &str) -> Result<u32, RegistryError> {
        let path = format!("/subjects/{subject}/versions");
        let url = format!("{}{path}", self.base_url);
        let body = serde_json::json!({ "schema": schema_json }).to_string();
        let mut request = self
            .agent
            .post(&url)
            .header("Accept", CONTENT_TYPE)
            .header("Content-Type", CONTENT_TYPE);
        if let Some(authorization) = &self.authorization {
            request = request.header("Authorization", authorization);
        }
        let (status, answer) = self.read(&url, request.send(body.as_bytes()))?;
        match status {
            200 => Ok(parse::<Registered>(&url, &answer)?.id),
            _ => Err(self.status_error(&format!("POST {path}"), url, status, &answer)),
        }
    }

    fn read(
        &self,
        url: &str,
        result: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
    ) -> Result<(u16, String), RegistryError> {
        let mut response = result.map_err(|e| self.transport_error(url, e))?;
        let status = response.status().as_u16();
        let body = response
            .body_mut()
            .with_config()
            .limit(MAX_BODY)
            .read_to_string()
            .map_err(|e| self.transport_error(url, e))?;
        Ok((status, body))
    }

    /// A failure below HTTP: TLS (configuration) or the network (may pass).
    fn transport_error(&self, url: &str, e: ureq::Error) -> RegistryError {
        let tls = match &e {
            ureq::Error::Rustls(tls) => Some(tls.to_string()),
            ureq::Error::Tls(tls) => Some(tls.to_string()),
            // rustls reports handshake failures (and alerts received later, such as a
            // server refusing the client certificate) as I/O errors that wrap its own.
            ureq::Error::Io(io) => io
                .get_ref()
                .and_then(|inner| inner.downcast_ref::<rustls::Error>())
                .map(rustls::Error::to_string),
            _ => None,
        };
        match tls {
            Some(message) => RegistryError::Tls {
                base_url: self.base_url.clone(),
                message,
            },
            None => RegistryError::Unreachable {
                url: url.to_string(),
                message: e.to_string(),
            },
        }
    }

    fn status_error(&self, request: &str, url: String, status: u16, body: &str) -> RegistryError {
        let message = match serde_json::from_str::<ErrorBody>(body) {
            Ok(e) => format!("{} (error code {})", e.message, e.error_code),
            Err(_) => excerpt(body),
        };
        if matches!(status, 401 | 403) {
            return RegistryError::CredentialsRefused {
                base_url: self.base_url.clone(),
                status,
                detail: format!("on {request}: {message}; {}", self.auth),
            };
        }
        RegistryError::Status {
            url,
            status,
            message,
        }
    }
}

/// What the registry has under an id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    /// The schema's JSON text.
    Found(String),
    NotFound,
    /// A schema this connector cannot use, and why.
    Unusable(String),
}

fn read_pem(key: &'static str, path: &Path) -> Result<Vec<u8>, SetupError> {
    std::fs::read(path).map_err(|e| SetupError::RegistryTls {
        key,
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}

/// Every certificate in a PEM file (at least one).
fn certificates(key: &'static str, path: &Path) -> Result<Vec<Certificate<'static>>, SetupError> {
    let pem = read_pem(key, path)?;
    let error = |message: String| SetupError::RegistryTls {
        key,
        path: path.to_path_buf(),
        message,
    };
    let mut certificates = Vec::new();
    for item in ureq::tls::parse_pem(&pem) {
        if let PemItem::Certificate(c) = item.map_err(|e| error(e.to_string()))? {
            certificates.push(c);
        }
    }
    if certificates.is_empty() {
        return Err(error(
            "no PEM certificate (-----BEGIN CERTIFICATE-----) in the file".into(),
        ));
    }
    Ok(certificates)
}

/// The private key of a PEM file, checked to be a key rustls can sign with.
fn private_key(path: &Path) -> Result<PrivateKey<'static>, SetupError> {
    const KEY: &str = "registry_key_location";
    let pem = read_pem(KEY, path)?;
    let error = |message: String| SetupError::RegistryTls {
        key: KEY,
        path: path.to_path_buf(),
        message,
    };
    if pem
        .windows(b"ENCRYPTED PRIVATE KEY".len())
        .any(|w| w == b"ENCRYPTED PRIVATE KEY")
    {
        return Err(error(
            "the key is encrypted, which is not supported: store it unencrypted (e.g. `openssl pkcs8 -topk8 -nocrypt`) in a file only the connector can read".into(),
        ));
    }
    let key = PrivateKey::from_pem(&pem).map_err(|e| {
        error(format!(
            "{e} (expected -----BEGIN PRIVATE KEY-----, RSA PRIVATE KEY or EC PRIVATE KEY)"
        ))
    })?;
    // ureq hands the key to rustls at the first handshake; check now that rustls can sign
    // with it, so that a wrong file stops startup instead of every request.
    let der = {
        use rustls::pki_types::pem::PemObject;
        rustls::pki_types::PrivateKeyDer::from_pem_slice(&pem)
            .map_err(|e| error(format!("not a usable private key: {e}")))?
    };
    rustls::crypto::ring::sign::any_supported_type(&der)
        .map_err(|e| error(format!("not a usable private key: {e}")))?;
    Ok(key)
}

fn parse<'a, T: Deserialize<'a>>(url: &str, body: &'a str) -> Result<T, RegistryError> {
    serde_json::from_str(body).map_err(|e| RegistryError::BadAnswer {
        url: url.to_string(),
        message: format!("{e} in {}", excerpt(body)),
    })
}

fn error_code(body: &str) -> Option<i64> {
    serde_json::from_str::<ErrorBody>(body)
        .ok()
        .map(|e| e.error_code)
}

/// The start of a body, for messages.
fn excerpt(body: &str) -> String {
    const MAX: usize = 200;
    let body = body.trim();
    if body.is_empty() {
        return "an empty body".to_string();
    }
    match body.char_indices().nth(MAX) {
        Some((i, _)) => format!("{:?}…", &body[..i]),
        None => format!("{body:?}"),
    }
}
