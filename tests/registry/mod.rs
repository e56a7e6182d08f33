//! A schema registry for tests, on 127.0.0.1: the requests the connector makes
//! (`GET /schemas/ids/N`, `POST /subjects/S/versions`, and for `campaign-connector schemas`
//! `GET /subjects/S/versions` and `GET /subjects/S/versions/V`), answered the way a
//! Confluent-compatible registry answers them — optionally only to requests with the right basic or
//! bearer credentials, and optionally over TLS with a certificate from a CA made for the test,
//! requiring a client certificate signed by that CA (mutual TLS). Every request is recorded.
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use base64::Engine;
use campaign_connector::codec::{EncodingSettings, RegistryAuth, RegistryTls, Secret};
use rcgen::{BasicConstraints, CertificateParams, CertifiedIssuer, DnType, IsCa, KeyPair};
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

/// What the registry demands of a request before it answers it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Require {
    Nothing,
    /// `Authorization: Basic base64(user:password)`, else 401.
    Basic {
        user: String,
        password: String,
    },
    /// `Authorization: Bearer token`, else 401.
    Bearer(String),
}

/// A CA and certificates made for one test, as PEM files in a temporary directory.
pub struct TestPki {
    pub dir: tempfile::TempDir,
    /// The CA that signed the registry's and the client's certificates.
    pub ca: PathBuf,
    /// The registry's certificate (SAN 127.0.0.1, localhost) and key.
    pub server_cert: PathBuf,
    pub server_key: PathBuf,
    /// A client certificate signed by the CA, and its key.
    pub client_cert: PathBuf,
    pub client_key: PathBuf,
    /// A client certificate from another CA (which the registry does not trust).
    pub stranger_cert: PathBuf,
    pub stranger_key: PathBuf,
    /// A CA that signed nothing here.
    pub other_ca: PathBuf,
}

fn ca(name: &str) -> CertifiedIssuer<'static, KeyPair> {
    let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.distinguished_name.push(DnType::CommonName, name);
    CertifiedIssuer::self_signed(params, KeyPair::generate().unwrap()).unwrap()
}

fn leaf(
    names: &[&str],
    common_name: &str,
    issuer: &CertifiedIssuer<'static, KeyPair>,
) -> (String, String) {
    let key = KeyPair::generate().unwrap();
    let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
    let mut params = CertificateParams::new(names).unwrap();
    params
        .distinguished_name
        .push(DnType::CommonName, common_name);
    let cert = params.signed_by(&key, issuer).unwrap();
    (cert.pem(), key.serialize_pem())
}

impl TestPki {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let write = |name: &str, text: &str| {
            let path = dir.path().join(name);
            std::fs::write(&path, text).unwrap();
            path
        };
        let ca_issuer = ca("registry test CA");
        let other = ca("another CA");
        let (server_cert, server_key) = leaf(&["127.0.0.1", "localhost"], "registry", &ca_issuer);
        let (client_cert, client_key) = leaf(&[], "connector", &ca_issuer);
        let (stranger_cert, stranger_key) = leaf(&[], "stranger", &other);
        Self {
            ca: write("ca.pem", &ca_issuer.pem()),
            server_cert: write("registry.pem", &server_cert),
            server_key: write("registry.key", &server_key),
            client_cert: write("client.pem", &client_cert),
            client_key: write("client.key", &client_key),
            stranger_cert: write("stranger.pem", &stranger_cert),
            stranger_key: write("stranger.key", &stranger_key),
            other_ca: write("other-ca.pem", &other.pem()),
            dir,
        }
    }

    /// The connector's TLS settings: trust the test CA, present `client` (cert, key).
    pub fn client_tls(&self, client: Option<(&PathBuf, &PathBuf)>) -> RegistryTls {
        RegistryTls {
            ca_location: Some(self.ca.clone()),
            client_certificate: client.map(|(c, k)| (c.clone(), k.clone())),
        }
    }

    fn server_config(&self, require_client_cert: bool) -> rustls::ServerConfig {
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let builder = rustls::ServerConfig::builder_with_provider(provider.clone())
            .with_safe_default_protocol_versions()
            .unwrap();
        let builder = if require_client_cert {
            let mut roots = rustls::RootCertStore::empty();
            for cert in CertificateDer::pem_file_iter(&self.ca).unwrap() {
                roots.add(cert.unwrap()).unwrap();
            }
            let verifier =
                rustls::server::WebPkiClientVerifier::builder_with_provider(roots.into(), provider)
                    .build()
                    .unwrap();
            builder.with_client_cert_verifier(verifier)
        } else {
            builder.with_no_client_auth()
        };
        let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&self.server_cert)
            .unwrap()
            .map(Result::unwrap)
            .collect();
        let key = PrivateKeyDer::from_pem_file(&self.server_key).unwrap();
        builder.with_single_cert(chain, key).unwrap()
    }
}

/// One request as the registry saw it.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    pub path: String,
    pub authorization: Option<String>,
}

#[derive(Default)]
struct RegistryState {
    schemas: Vec<String>,
    /// Each subject's versions (version `n` is element `n - 1`), as schema ids.
    subjects: std::collections::BTreeMap<String, Vec<u32>>,
    requests: Vec<Request>,
    /// Fail every request with this status.
    fail_with: Option<u16>,
}

/// A running test registry.
pub struct FakeRegistry {
    pub url: String,
    state: Arc<Mutex<RegistryState>>,
    /// The TLS handshakes that failed, with rustls' reason (e.g. a missing client cert).
    pub handshake_failures: Arc<Mutex<Vec<String>>>,
}

impl FakeRegistry {
    /// Plain HTTP, no credentials needed.
    pub fn start() -> Self {
        Self::start_with(Require::Nothing, None)
    }

    /// Demands `require` of every request; over TLS with `tls` = (PKI, whether a client
    /// certificate is required), plain HTTP without.
    pub fn start_with(require: Require, tls: Option<(&TestPki, bool)>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(Mutex::new(RegistryState::default()));
        let handshake_failures = Arc::new(Mutex::new(Vec::new()));
        let server_config = tls.map(|(pki, mutual)| Arc::new(pki.server_config(mutual)));
        let scheme = if server_config.is_some() {
            "https"
        } else {
            "http"
        };
        let (served, failures) = (state.clone(), handshake_failures.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { continue };
                let (state, require, config, failures) = (
                    served.clone(),
                    require.clone(),
                    server_config.clone(),
                    failures.clone(),
                );
                std::thread::spawn(move || match config {
                    None => serve(stream, &state, &require),
                    Some(config) => {
                        let connection = rustls::ServerConnection::new(config).unwrap();
                        let mut tls = rustls::StreamOwned::new(connection, stream);
                        // Finish the handshake first, to record why it failed.
                        while tls.conn.is_handshaking() {
                            if let Err(e) = tls.conn.complete_io(&mut tls.sock) {
                                failures.lock().unwrap().push(e.to_string());
                                // rustls has sent its alert. Close the way web servers do
                                // (a lingering close): read what the client still sends
                                // before closing, so that the kernel does not reset the
                                // connection and the client gets to read the alert.
                                let _ = tls.sock.set_read_timeout(Some(Duration::from_secs(2)));
                                let mut sink = [0u8; 4096];
                                while matches!(tls.sock.read(&mut sink), Ok(n) if n > 0) {}
                                return;
                            }
                        }
                        serve(tls, &state, &require)
                    }
                });
            }
        });
        Self {
            url: format!("{scheme}://{addr}"),
            state,
            handshake_failures,
        }
    }

    /// Puts a schema into the registry directly; returns its id (ids start at 1).
    pub fn add(&self, schema: &str) -> u32 {
        let mut state = self.state.lock().unwrap();
        state.schemas.push(schema.to_string());
        state.schemas.len() as u32
    }

    /// Registers a schema under a subject directly, as a producer would: its id (the same
    /// text keeps its id) and its version under the subject (a new one unless the subject
    /// has that id already).
    pub fn register(&self, subject: &str, schema: &str) -> (u32, u32) {
        register(&mut self.state.lock().unwrap(), subject, schema)
    }

    /// How many requests with this method had a path starting with `path_prefix`.
    pub fn count(&self, method: &str, path_prefix: &str) -> usize {
        self.requests()
            .iter()
            .filter(|r| r.method == method && r.path.starts_with(path_prefix))
            .count()
    }

    pub fn requests(&self) -> Vec<Request> {
        self.state.lock().unwrap().requests.clone()
    }

    pub fn fail_with(&self, status: Option<u16>) {
        self.state.lock().unwrap().fail_with = status;
    }

    /// Confluent encoding settings for this registry (no credentials, default TLS).
    pub fn settings(&self) -> EncodingSettings {
        EncodingSettings::confluent(self.url.clone())
    }

    /// …with basic authentication.
    pub fn settings_basic(&self, user: &str, password: &str) -> EncodingSettings {
        self.settings().with_registry_auth(RegistryAuth::Basic {
            username: user.into(),
            password: Secret::new(password),
        })
    }

    /// …with a bearer token.
    pub fn settings_bearer(&self, token: &str) -> EncodingSettings {
        self.settings()
            .with_registry_auth(RegistryAuth::Bearer(Secret::new(token)))
    }
}

fn serve(stream: impl Read + Write, state: &Mutex<RegistryState>, require: &Require) {
    let mut reader = BufReader::new(stream);
    let mut request_line = String::new();
    if reader.read_line(&mut request_line).unwrap_or(0) == 0 {
        return;
    }
    let mut parts = request_line.split_whitespace();
    let method = parts.next().unwrap_or_default().to_string();
    let path = parts.next().unwrap_or_default().to_string();
    let mut content_length = 0;
    let mut authorization = None;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).is_err() {
            return;
        }
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            if name.eq_ignore_ascii_case("content-length") {
                content_length = value.trim().parse().unwrap();
            }
            if name.eq_ignore_ascii_case("authorization") {
                authorization = Some(value.trim().to_string());
            }
        }
    }
    let mut body = vec![0; content_length];
    if reader.read_exact(&mut body).is_err() {
        return;
    }

    let (status, answer) = {
        let mut state = state.lock().unwrap();
        state.requests.push(Request {
            method: method.clone(),
            path: path.clone(),
            authorization: authorization.clone(),
        });
        if authorized(require, authorization.as_deref()) {
            answer(&mut state, &method, &path, &body)
        } else {
            (
                401,
                r#"{"error_code": 401, "message": "Unauthorized"}"#.to_string(),
            )
        }
    };
    let reason = match status {
        200 => "OK",
        401 => "Unauthorized",
        404 => "Not Found",
        409 => "Conflict",
        _ => "Error",
    };
    let response = format!(
        "HTTP/1.1 {status} {reason}\r\nContent-Type: application/vnd.schemaregistry.v1+json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{answer}",
        answer.len()
    );
    let stream = reader.get_mut();
    let _ = stream.write_all(response.as_bytes());
    let _ = stream.flush();
}

fn authorized(require: &Require, authorization: Option<&str>) -> bool {
    match require {
        Require::Nothing => true,
        Require::Basic { user, password } => {
            let expected =
                base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
            authorization == Some(format!("Basic {expected}").as_str())
        }
        Require::Bearer(token) => authorization == Some(format!("Bearer {token}").as_str()),
    }
}

fn answer(state: &mut RegistryState, method: &str, path: &str, body: &[u8]) -> (u16, String) {
    if let Some(status) = state.fail_with {
        return (
            status,
            r#"{"error_code": 50001, "message": "Error in the backend data store"}"#.into(),
        );
    }
    let not_found = |what: &str| {
        (
            404,
            serde_json::json!({"error_code": 40403, "message": format!("{what} not found")})
                .to_string(),
        )
    };
    match (method, path.split('/').collect::<Vec<_>>().as_slice()) {
        ("GET", ["", "schemas", "ids", id]) => {
            let id: usize = id.parse().unwrap();
            match state.schemas.get(id.wrapping_sub(1)) {
                Some(schema) => (200, serde_json::json!({ "schema": schema }).to_string()),
                None => not_found(&format!("Schema {id}")),
            }
        }
        ("POST", ["", "subjects", subject, "versions"]) => {
            if subject.starts_with("incompatible") {
                return (
                    409,
                    r#"{"error_code": 409, "message": "Schema being registered is incompatible with an earlier schema"}"#.into(),
                );
            }
            let request: serde_json::Value = serde_json::from_slice(body).unwrap();
            let schema = request["schema"].as_str().unwrap();
            let (id, _) = register(state, subject, schema);
            (200, serde_json::json!({ "id": id }).to_string())
        }
        ("GET", ["", "subjects", subject, "versions"]) => match state.subjects.get(*subject) {
            Some(ids) => {
                let versions: Vec<usize> = (1..=ids.len()).collect();
                (200, serde_json::json!(versions).to_string())
            }
            None => subject_not_found(subject),
        },
        ("GET", ["", "subjects", subject, "versions", version]) => {
            let Some(ids) = state.subjects.get(*subject) else {
                return subject_not_found(subject);
            };
            let index = match *version {
                "latest" => Some(ids.len().wrapping_sub(1)),
                v => v.parse::<usize>().ok().map(|v| v.wrapping_sub(1)),
            };
            match index.and_then(|i| Some((i, *ids.get(i)?))) {
                Some((i, id)) => (
                    200,
                    serde_json::json!({
                        "subject": subject,
                        "version": i + 1,
                        "id": id,
                        "schema": state.schemas[id as usize - 1],
                    })
                    .to_string(),
                ),
                None => (
                    404,
                    serde_json::json!({"error_code": 40402, "message": format!("Version {version} not found.")})
                        .to_string(),
                ),
            }
        }
        _ => (
            404,
            r#"{"error_code": 404, "message": "HTTP 404 Not Found"}"#.into(),
        ),
    }
}

fn subject_not_found(subject: &str) -> (u16, String) {
    (
        404,
        serde_json::json!({"error_code": 40401, "message": format!("Subject '{subject}' not found.")})
            .to_string(),
    )
}

/// Registries identify schemas by content: the same schema text keeps its id, and a subject
/// gets a new version only for an id it does not have yet.
fn register(state: &mut RegistryState, subject: &str, schema: &str) -> (u32, u32) {
    let id = match state.schemas.iter().position(|s| s == schema) {
        Some(i) => i as u32 + 1,
        None => {
            state.schemas.push(schema.to_string());
            state.schemas.len() as u32
        }
    };
    let versions = state.subjects.entry(subject.to_string()).or_default();
    let version = match versions.iter().position(|&v| v == id) {
        Some(i) => i + 1,
        None => {
            versions.push(id);
            versions.len()
        }
    };
    (id, version as u32)
}
