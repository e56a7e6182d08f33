//! The interactions in the Confluent wire format, with a schema registry the run starts, and
//! the gate in front of it through which the connector reaches it.
//!
//! ```text
//!  workload producer ── register ──► test registry (tests/registry) ◄── oracle (direct)
//!                                        ▲
//!  connector i0, i1 ──► gate :BASE+19 ───┘   open: forward
//!                                            refuse: its socket closed (connection refused)
//!                                            fail(503): every request answered HTTP 503
//! ```
//!
//! The registry is the one the integration tests use (`tests/registry/mod.rs`), compiled
//! into this program as a module. Only the connector goes through the gate, so an outage
//! never touches the harness's own decoding (the oracle).
//!
//! The connector keeps every writer schema it fetched for the life of the process, so an
//! outage only matters when it meets an id it has not seen. The interaction producer thus
//! rolls out a new writer schema version with every chunk of the input (the same fields, a
//! `doc` naming the producer build: registries give it an id of its own), as a producer
//! fleet that redeploys often does; a task that reaches the next chunk during an outage must
//! fetch that id, and is held until the registry answers.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::Duration;

use crate::registry::FakeRegistry;

/// What the gate does with the connector's registry requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GateMode {
    /// Forward to the registry.
    Open,
    /// No listening socket: every connection attempt is refused.
    Refuse,
    /// Answer every request with this HTTP status (a registry whose backend is down).
    Fail(u16),
}

struct GateShared {
    listen: SocketAddr,
    upstream: SocketAddr,
    mode: Mutex<GateMode>,
    /// Both sockets of every forwarded connection, by id, to shut them down at an outage.
    connections: Mutex<Vec<(u64, TcpStream, TcpStream)>>,
    next_id: AtomicU64,
    forwarded: AtomicU64,
    failed: AtomicU64,
    stop: AtomicBool,
}

/// A running gate; stops when dropped.
pub struct Gate {
    shared: Arc<GateShared>,
    acceptor: Option<thread::JoinHandle<()>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Gate {
    pub fn start(listen: SocketAddr, upstream: SocketAddr) -> std::io::Result<Self> {
        let listener = TcpListener::bind(listen)?;
        listener.set_nonblocking(true)?;
        let shared = Arc::new(GateShared {
            listen: listener.local_addr()?,
            upstream,
            mode: Mutex::new(GateMode::Open),
            connections: Mutex::new(Vec::new()),
            next_id: AtomicU64::new(0),
            forwarded: AtomicU64::new(0),
            failed: AtomicU64::new(0),
            stop: AtomicBool::new(false),
        });
        let s = shared.clone();
        let acceptor = thread::Builder::new()
            .name("registry-gate".into())
            .spawn(move || accept_loop(listener, s))?;
        Ok(Self {
            shared,
            acceptor: Some(acceptor),
        })
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.shared.listen)
    }

    /// Switches the mode; any other mode than `Open` also shuts down the connections open
    /// now. Returns once the listening socket matches the mode (closed for `Refuse`).
    pub fn set(&self, mode: GateMode) {
        *lock(&self.shared.mode) = mode;
        if mode != GateMode::Open {
            for (_, a, b) in std::mem::take(&mut *lock(&self.shared.connections)) {
                let _ = a.shutdown(Shutdown::Both);
                let _ = b.shutdown(Shutdown::Both);
            }
        }
        // The acceptor polls the mode every few milliseconds.
        thread::sleep(Duration::from_millis(50));
    }

    /// Connections forwarded to the registry so far.
    pub fn forwarded(&self) -> u64 {
        self.shared.forwarded.load(Ordering::Relaxed)
    }

    /// Requests answered with an error status so far.
    pub fn failed(&self) -> u64 {
        self.shared.failed.load(Ordering::Relaxed)
    }
}

impl Drop for Gate {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.acceptor.take() {
            let _ = t.join();
        }
    }
}

fn accept_loop(listener: TcpListener, shared: Arc<GateShared>) {
    let mut listener = Some(listener);
    while !shared.stop.load(Ordering::Relaxed) {
        let mode = *lock(&shared.mode);
        if mode == GateMode::Refuse {
            // Closing the listening socket: the kernel refuses connections to the port.
            listener = None;
        } else if listener.is_none() {
            match TcpListener::bind(shared.listen).and_then(|l| {
                l.set_nonblocking(true)?;
                Ok(l)
            }) {
                Ok(l) => listener = Some(l),
                Err(_) => {
                    thread::sleep(Duration::from_millis(20));
                    continue;
                }
            }
        }
        let Some(l) = &listener else {
            thread::sleep(Duration::from_millis(5));
            continue;
        };
        match l.accept() {
            Ok((client, _)) => {
                let s = shared.clone();
                let _ = thread::Builder::new()
                    .name("registry-gate-conn".into())
                    .spawn(move || match mode {
                        GateMode::Fail(status) => fail(client, status, &s),
                        _ => forward(client, &s),
                    });
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                thread::sleep(Duration::from_millis(5));
            }
            Err(_) => thread::sleep(Duration::from_millis(50)),
        }
    }
}

fn forward(client: TcpStream, shared: &GateShared) {
    let _ = client.set_nonblocking(false);
    let Ok(upstream) = TcpStream::connect_timeout(&shared.upstream, Duration::from_secs(5)) else {
        return;
    };
    shared.forwarded.fetch_add(1, Ordering::Relaxed);
    let id = shared.next_id.fetch_add(1, Ordering::Relaxed);
    let (Ok(c2), Ok(u2), Ok(c3), Ok(u3)) = (
        client.try_clone(),
        upstream.try_clone(),
        client.try_clone(),
        upstream.try_clone(),
    ) else {
        return;
    };
    lock(&shared.connections).push((id, c3, u3));
    let back = thread::spawn(move || {
        let (mut from, mut to) = (u2, c2);
        let _ = std::io::copy(&mut from, &mut to);
        let _ = to.shutdown(Shutdown::Write);
    });
    let (mut from, mut to) = (client, upstream);
    let _ = std::io::copy(&mut from, &mut to);
    let _ = to.shutdown(Shutdown::Write);
    let _ = back.join();
    lock(&shared.connections).retain(|(i, _, _)| *i != id);
}

/// Reads one request (head and body) and answers it with `status`.
fn fail(client: TcpStream, status: u16, shared: &GateShared) {
    let _ = client.set_nonblocking(false);
    let _ = client.set_read_timeout(Some(Duration::from_secs(5)));
    let mut reader = BufReader::new(client);
    let mut content_length = 0usize;
    let mut first = true;
    loop {
        let mut line = String::new();
        match reader.read_line(&mut line) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let line = line.trim_end();
        if line.is_empty() && !first {
            break;
        }
        first = false;
        if let Some((name, value)) = line.split_once(':') {
            if name.eq_ignore_ascii_case("content-length") {
                content_length = value.trim().parse().unwrap_or(0);
            }
        }
    }
    let mut body = vec![0; content_length.min(1 << 20)];
    let _ = reader.read_exact(&mut body);
    let answer = r#"{"error_code": 50301, "message": "the registry is unavailable"}"#;
    let response = format!(
        "HTTP/1.1 {status} Service Unavailable\r\nContent-Type: application/vnd.schemaregistry.v1+json\r\n\
         Content-Length: {}\r\nConnection: close\r\n\r\n{answer}",
        answer.len()
    );
    let mut client = reader.into_inner();
    if client.write_all(response.as_bytes()).is_ok() {
        shared.failed.fetch_add(1, Ordering::Relaxed);
    }
    let _ = client.flush();
}

/// The writer schema ids of the interactions, as the producers registered them.
pub struct ConfluentInteractions {
    registry: Arc<FakeRegistry>,
    subject: String,
    /// This build's interaction schema, to be registered again with a new `doc` per chunk.
    current_schema: serde_json::Value,
    /// The id of the current writer build (rolls with every chunk).
    pub current: u32,
    pub v2: u32,
    pub v3: u32,
    /// How many ids the producers registered.
    pub ids: usize,
}

impl ConfluentInteractions {
    /// Registers the interaction writer schemas under `<topic>-value`: this build's (see
    /// [`Self::roll`]), the newer producer's v2 and the incompatible v3. The v3 registration
    /// bypasses the compatibility check, as a subject with compatibility `NONE` would allow.
    pub fn new(
        registry: Arc<FakeRegistry>,
        topic: &str,
        current: &Path,
        v2: &Path,
        v3: &Path,
    ) -> Result<Self, String> {
        let read =
            |p: &Path| std::fs::read_to_string(p).map_err(|e| format!("{}: {e}", p.display()));
        let subject = campaign_connector::codec::confluent_subject(topic);
        let current_schema: serde_json::Value = serde_json::from_str(&read(current)?)
            .map_err(|e| format!("{}: {e}", current.display()))?;
        let (v2, _) = registry.register(&subject, &read(v2)?);
        let (v3, _) = registry.register(&subject, &read(v3)?);
        let mut c = Self {
            registry,
            subject,
            current_schema,
            current: 0,
            v2,
            v3,
            ids: 2,
        };
        c.roll(0);
        Ok(c)
    }

    /// A new build of the interaction producer, for chunk `k`: the same schema with a `doc`
    /// of its own, registered under a new id.
    pub fn roll(&mut self, k: usize) {
        let mut schema = self.current_schema.clone();
        schema["doc"] =
            serde_json::Value::String(format!("An interaction, as written by producer build {k}."));
        let (id, _) = self.registry.register(&self.subject, &schema.to_string());
        if id != self.current {
            self.ids += 1;
        }
        self.current = id;
    }
}

/// Re-frames a single-object Avro value (`C3 01`, 8-byte fingerprint, datum) in the
/// Confluent wire format (`00`, 4-byte id, datum).
pub fn confluent_frame(single_object: &[u8], id: u32) -> Vec<u8> {
    let datum = &single_object[campaign_connector::codec::SINGLE_OBJECT_HEADER_LEN..];
    let mut out = Vec::with_capacity(5 + datum.len());
    out.push(0);
    out.extend_from_slice(&id.to_be_bytes());
    out.extend_from_slice(datum);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(url: &str, path: &str) -> Result<String, String> {
        let addr = url.trim_start_matches("http://");
        let mut s = TcpStream::connect(addr).map_err(|e| e.kind().to_string())?;
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut out = String::new();
        s.read_to_string(&mut out).map_err(|e| e.to_string())?;
        Ok(out)
    }

    #[test]
    fn the_gate_forwards_refuses_and_fails() {
        let registry = FakeRegistry::start();
        let id = registry.add(r#""string""#);
        let upstream = registry.url.trim_start_matches("http://").parse().unwrap();
        let gate = Gate::start("127.0.0.1:0".parse().unwrap(), upstream).unwrap();
        let path = format!("/schemas/ids/{id}");
        let open = get(&gate.url(), &path).unwrap();
        assert!(open.starts_with("HTTP/1.1 200"), "{open}");
        gate.set(GateMode::Fail(503));
        let failed = get(&gate.url(), &path).unwrap();
        assert!(failed.starts_with("HTTP/1.1 503"), "{failed}");
        gate.set(GateMode::Refuse);
        let refused = get(&gate.url(), &path).unwrap_err();
        assert!(refused.contains("refused"), "{refused}");
        gate.set(GateMode::Open);
        let mut again = Err(String::new());
        for _ in 0..100 {
            again = get(&gate.url(), &path);
            if again.is_ok() {
                break;
            }
            thread::sleep(Duration::from_millis(20));
        }
        assert!(again.unwrap().starts_with("HTTP/1.1 200"));
        assert_eq!((gate.forwarded(), gate.failed()), (2, 1));
    }

    #[test]
    fn a_new_build_gets_a_new_id_and_frames_carry_it() {
        let registry = Arc::new(FakeRegistry::start());
        let dir = Path::new(env!("CARGO_MANIFEST_DIR"));
        let mut c = ConfluentInteractions::new(
            registry,
            "t",
            &dir.join("schemas/interaction.avsc"),
            &dir.join("tests/fixtures/writer_schemas/interaction_v2.avsc"),
            &dir.join("tools/chaos/schemas/interaction_v3.avsc"),
        )
        .unwrap();
        let first = c.current;
        c.roll(1);
        assert_ne!(c.current, first);
        assert_eq!(c.ids, 4);
        let framed = confluent_frame(&[0xC3, 1, 0, 0, 0, 0, 0, 0, 0, 0, 42], 7);
        assert_eq!(framed, [0, 0, 0, 0, 7, 42]);
    }
}
