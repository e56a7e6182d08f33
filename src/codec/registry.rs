//! A minimal, blocking Confluent schema registry client: look a schema up by id, register
//! a schema under a subject. Caching is the codec's job; this only speaks HTTP.

use std::time::Duration;

use serde::Deserialize;

const CONTENT_TYPE: &str = "application/vnd.schemaregistry.v1+json";
/// Registry answers are small JSON documents; anything bigger is not one.
const MAX_BODY: u64 = 4 << 20;
/// The registry's error code for "schema not found" (with HTTP 404).
const SCHEMA_NOT_FOUND: i64 = 40403;

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
}

/// A schema registry at one base URL.
pub struct RegistryClient {
    base_url: String,
    agent: ureq::Agent,
}

#[derive(Deserialize)]
struct SchemaById {
    schema: String,
    #[serde(default, rename = "schemaType")]
    schema_type: Option<String>,
    #[serde(default)]
    references: Vec<serde_json::Value>,
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
    pub fn new(base_url: &str, timeout: Duration) -> Self {
        let config = ureq::Agent::config_builder()
            .timeout_global(Some(timeout))
            // Statuses are answers to classify, not transport errors.
            .http_status_as_error(false)
            .build();
        Self {
            base_url: base_url.trim_end_matches('/').to_string(),
            agent: ureq::Agent::new_with_config(config),
        }
    }

    /// `GET /schemas/ids/{id}`.
    pub fn schema_by_id(&self, id: u32) -> Result<Lookup, RegistryError> {
        let url = format!("{}/schemas/ids/{id}", self.base_url);
        let result = self.agent.get(&url).header("Accept", CONTENT_TYPE).call();
        let (status, body) = read(&url, result)?;
        match status {
            200 => {
                let answer: SchemaById = parse(&url, &body)?;
                if let Some(kind) = answer.schema_type.filter(|t| t != "AVRO") {
                    return Ok(Lookup::Unusable(format!("a {kind} schema, not Avro")));
                }
                if !answer.references.is_empty() {
                    return Ok(Lookup::Unusable(
                        "it has schema references, which this connector does not resolve".into(),
                    ));
                }
                Ok(Lookup::Found(answer.schema))
            }
            // Only the registry's own "schema not found" proves the id unknown; a bare 404
            // is more likely a wrong base URL (retry, someone has to fix the configuration).
            404 if error_code(&body) == Some(SCHEMA_NOT_FOUND) => Ok(Lookup::NotFound),
            _ => Err(status_error(url, status, &body)),
        }
    }

    /// `POST /subjects/{subject}/versions`: registers the schema (or finds it registered)
    /// and returns its id.
    pub fn register(&self, subject: &str, schema_json: &str) -> Result<u32, RegistryError> {
        let url = format!("{}/subjects/{subject}/versions", self.base_url);
        let request = serde_json::json!({ "schema": schema_json }).to_string();
        let result = self
            .agent
            .post(&url)
            .header("Accept", CONTENT_TYPE)
            .header("Content-Type", CONTENT_TYPE)
            .send(request.as_bytes());
        let (status, body) = read(&url, result)?;
        match status {
            200 => Ok(parse::<Registered>(&url, &body)?.id),
            _ => Err(status_error(url, status, &body)),
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

fn read(
    url: &str,
    result: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
) -> Result<(u16, String), RegistryError> {
    let unreachable = |e: ureq::Error| RegistryError::Unreachable {
        url: url.to_string(),
        message: e.to_string(),
    };
    let mut response = result.map_err(unreachable)?;
    let status = response.status().as_u16();
    let body = response
        .body_mut()
        .with_config()
        .limit(MAX_BODY)
        .read_to_string()
        .map_err(unreachable)?;
    Ok((status, body))
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

fn status_error(url: String, status: u16, body: &str) -> RegistryError {
    let message = match serde_json::from_str::<ErrorBody>(body) {
        Ok(e) => format!("{} (error code {})", e.message, e.error_code),
        Err(_) => excerpt(body),
    };
    RegistryError::Status {
        url,
        status,
        message,
    }
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
