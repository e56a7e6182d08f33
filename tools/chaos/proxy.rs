//! A TCP proxy in front of one broker's client listener, controllable while it runs.
//!
//! ```text
//!  connector ──► proxy :P ──► broker CLIENT listener :L      (the broker advertises :P)
//!                 │
//!                 ├─ drop_all():            shut every proxied connection down
//!                 ├─ stall_for(d):          forward nothing, either way, for d
//!                 ├─ stall_on_request(k, d): stall for d when a request with api key k
//!                 │                         (e.g. EndTxn = 26: "during the commit") passes
//!                 └─ limit_fetch(b/s, ids): deliver Fetch responses to clients with these
//!                                           client ids no faster than that
//! ```
//!
//! Brokers replicate over their own INTERNAL listener, so the proxy only ever carries the
//! traffic of clients that bootstrapped through it.
//!
//! One thread accepts; each connection has two pump threads (client → broker and back).
//! A stall holds bytes already read and blocks both pumps, so the client sees a silent
//! broker: requests time out, exactly like a network partition that keeps the sockets up.
//! When the stall ends the held bytes are delivered, late — as a real network may.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// Kafka api keys the proxy knows.
pub const API_FETCH: i16 = 1;
pub const API_OFFSET_COMMIT: i16 = 8;
pub const API_END_TXN: i16 = 26;

#[derive(Default)]
struct Control {
    /// Forward nothing before this instant.
    stalled_until: Option<Instant>,
    /// Stall for this long when a request with this api key passes.
    armed: Option<(i16, Duration)>,
    /// When an armed stall went off.
    triggered_at: Option<Instant>,
}

struct Shared {
    upstream: SocketAddr,
    control: Mutex<Control>,
    /// Both sockets of every live connection, to shut them down on `drop_all`.
    connections: Mutex<Vec<(u64, TcpStream, TcpStream)>>,
    next_id: AtomicU64,
    accepted: AtomicU64,
    /// Fetch response bytes per second and connection (0: no limit) for the clients named.
    fetch_rate: AtomicU64,
    paced_clients: Mutex<Vec<String>>,
    fetch_bytes: AtomicU64,
    /// Connections closed at once because the broker refused (it was down).
    refused: AtomicU64,
    stop: AtomicBool,
}

/// A running proxy; stops (and drops its connections) when dropped.
pub struct Proxy {
    pub listen: SocketAddr,
    shared: Arc<Shared>,
    acceptor: Option<thread::JoinHandle<()>>,
}

impl Proxy {
    /// Listens on `listen` and forwards to `upstream`.
    pub fn start(listen: SocketAddr, upstream: SocketAddr) -> std::io::Result<Self> {
        let listener = TcpListener::bind(listen)?;
        listener.set_nonblocking(true)?;
        let listen = listener.local_addr()?;
        let shared = Arc::new(Shared {
            upstream,
            control: Mutex::new(Control::default()),
            connections: Mutex::new(Vec::new()),
            next_id: AtomicU64::new(0),
            accepted: AtomicU64::new(0),
            fetch_rate: AtomicU64::new(0),
            paced_clients: Mutex::new(Vec::new()),
            fetch_bytes: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            stop: AtomicBool::new(false),
        });
        let s = shared.clone();
        let acceptor = thread::Builder::new()
            .name(format!("proxy-{}", listen.port()))
            .spawn(move || accept_loop(listener, s))?;
        Ok(Self {
            listen,
            shared,
            acceptor: Some(acceptor),
        })
    }

    /// Shuts down every connection open now; clients reconnect through the proxy.
    pub fn drop_all(&self) -> usize {
        let conns = std::mem::take(&mut *lock(&self.shared.connections));
        for (_, a, b) in &conns {
            let _ = a.shutdown(Shutdown::Both);
            let _ = b.shutdown(Shutdown::Both);
        }
        conns.len()
    }

    /// Forwards nothing, in either direction, for `d` from now.
    pub fn stall_for(&self, d: Duration) {
        lock(&self.shared.control).stalled_until = Some(Instant::now() + d);
    }

    /// Stalls for `d` as soon as a request with `api_key` passes (then disarms).
    pub fn stall_on_request(&self, api_key: i16, d: Duration) {
        let mut c = lock(&self.shared.control);
        c.armed = Some((api_key, d));
        c.triggered_at = None;
    }

    /// Disarms a pending `stall_on_request`; returns when it went off, if it did.
    pub fn disarm(&self) -> Option<Instant> {
        let mut c = lock(&self.shared.control);
        c.armed = None;
        c.triggered_at.take()
    }

    /// When the armed stall went off, if it did.
    pub fn triggered_at(&self) -> Option<Instant> {
        lock(&self.shared.control).triggered_at
    }

    /// Delivers Fetch responses to the clients with these client ids at no more than
    /// `bytes_per_second` per connection (0: no limit): a slower network for those
    /// consumers, each connection paced on its own so that none starves another. Other
    /// clients, and every other response, pass at full speed.
    pub fn limit_fetch(&self, bytes_per_second: u64, client_ids: &[String]) {
        *lock(&self.shared.paced_clients) = client_ids.to_vec();
        self.shared
            .fetch_rate
            .store(bytes_per_second, Ordering::Relaxed);
    }

    /// Bytes of Fetch responses delivered so far.
    pub fn fetch_bytes(&self) -> u64 {
        self.shared.fetch_bytes.load(Ordering::Relaxed)
    }

    /// Connections accepted so far.
    pub fn accepted(&self) -> u64 {
        self.shared.accepted.load(Ordering::Relaxed)
    }

    /// Connections the broker refused (closed at once: the broker looked down).
    pub fn refused(&self) -> u64 {
        self.shared.refused.load(Ordering::Relaxed)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        lock(&self.shared.control).stalled_until = None;
        self.drop_all();
        if let Some(t) = self.acceptor.take() {
            let _ = t.join();
        }
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn accept_loop(listener: TcpListener, shared: Arc<Shared>) {
    while !shared.stop.load(Ordering::Relaxed) {
        match listener.accept() {
            Ok((client, _)) => {
                shared.accepted.fetch_add(1, Ordering::Relaxed);
                if connect(client, &shared).is_err() {
                    shared.refused.fetch_add(1, Ordering::Relaxed);
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                thread::sleep(Duration::from_millis(5));
            }
            Err(_) => thread::sleep(Duration::from_millis(50)),
        }
    }
}

fn connect(client: TcpStream, shared: &Arc<Shared>) -> std::io::Result<()> {
    client.set_nonblocking(false)?;
    // A dead broker refuses at once; closing the client's socket then looks to the client
    // exactly like the broker being down.
    let upstream = TcpStream::connect_timeout(&shared.upstream, Duration::from_secs(5))?;
    client.set_nodelay(true)?;
    upstream.set_nodelay(true)?;
    let id = shared.next_id.fetch_add(1, Ordering::Relaxed);
    lock(&shared.connections).push((id, client.try_clone()?, upstream.try_clone()?));
    let (c2, u2) = (client.try_clone()?, upstream.try_clone()?);
    let s1 = shared.clone();
    let s2 = shared.clone();
    // Api key of each request in flight, by correlation id: responses carry only the id.
    let in_flight: InFlight = Arc::new(InFlightState::default());
    let f2 = in_flight.clone();
    thread::Builder::new()
        .name("proxy-up".into())
        .spawn(move || pump(client, upstream, &s1, id, Direction::Requests(in_flight)))?;
    thread::Builder::new()
        .name("proxy-down".into())
        .spawn(move || pump(u2, c2, &s2, id, Direction::Responses(f2)))?;
    Ok(())
}

/// What the two pumps of one connection share: the api key of each request in flight, by
/// correlation id (responses carry only the id), and whether the client is paced.
#[derive(Default)]
struct InFlightState {
    requests: Mutex<std::collections::HashMap<i32, i16>>,
    /// Known from the client id of the connection's first request.
    paced: AtomicBool,
    seen_first: AtomicBool,
    /// The connection's fetch token bucket: (tokens, last refill).
    tokens: Mutex<Option<(f64, Instant)>>,
}

type InFlight = Arc<InFlightState>;

/// The client id of a request (header v1 and later: after the correlation id, a 2-byte
/// length and the bytes), if the buffer starts with a whole header.
fn client_id(request: &[u8]) -> Option<String> {
    let len = i16::from_be_bytes(request.get(12..14)?.try_into().ok()?);
    let id = request.get(14..14 + usize::try_from(len).ok()?)?;
    Some(String::from_utf8_lossy(id).into_owned())
}

/// Which way a pump copies: requests (client to broker, headers watched for armed api keys
/// and noted by correlation id) or responses (Fetch responses paced).
enum Direction {
    Requests(InFlight),
    Responses(InFlight),
}

/// Copies `from` to `to` until either side closes, honouring stalls and the fetch limit.
fn pump(mut from: TcpStream, mut to: TcpStream, shared: &Shared, id: u64, dir: Direction) {
    let mut buf = vec![0u8; 64 * 1024];
    let mut frames = FrameScanner::new(match dir {
        Direction::Requests(_) => REQUEST_HEADER,
        Direction::Responses(_) => RESPONSE_HEADER,
    });
    loop {
        let n = match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        let headers = frames.scan(&buf[..n]);
        match &dir {
            Direction::Requests(in_flight) if !headers.is_empty() => {
                if !in_flight.seen_first.swap(true, Ordering::Relaxed) {
                    let id = client_id(&buf[..n]).unwrap_or_default();
                    let paced = lock(&shared.paced_clients).contains(&id);
                    in_flight.paced.store(paced, Ordering::Relaxed);
                }
                let mut f = lock(&in_flight.requests);
                for h in &headers {
                    f.insert(h.correlation_id, h.api_key);
                }
                drop(f);
                let mut c = lock(&shared.control);
                if let Some((key, d)) = c.armed {
                    if headers.iter().any(|h| h.api_key == key) {
                        let now = Instant::now();
                        c.armed = None;
                        c.triggered_at = Some(now);
                        c.stalled_until = Some(now + d);
                    }
                }
            }
            Direction::Responses(in_flight) if !headers.is_empty() => {
                let mut fetched = 0;
                let mut f = lock(&in_flight.requests);
                for h in &headers {
                    if f.remove(&h.correlation_id) == Some(API_FETCH) {
                        fetched += u64::from(h.size);
                    }
                }
                drop(f);
                if fetched > 0 {
                    shared.fetch_bytes.fetch_add(fetched, Ordering::Relaxed);
                    if in_flight.paced.load(Ordering::Relaxed) {
                        pace_fetch(shared, in_flight, fetched);
                    }
                }
            }
            _ => {}
        }
        wait_while_stalled(shared);
        if to.write_all(&buf[..n]).is_err() {
            break;
        }
    }
    let _ = from.shutdown(Shutdown::Both);
    let _ = to.shutdown(Shutdown::Both);
    lock(&shared.connections).retain(|(c, _, _)| *c != id);
}

/// Takes `bytes` from the connection's fetch token bucket, sleeping off any debt.
fn pace_fetch(shared: &Shared, connection: &InFlightState, bytes: u64) {
    let rate = shared.fetch_rate.load(Ordering::Relaxed);
    if rate == 0 {
        return;
    }
    let debt = {
        let mut guard = lock(&connection.tokens);
        let now = Instant::now();
        let t = guard.get_or_insert((rate as f64, now));
        // Up to one second of burst.
        t.0 = (t.0 + now.duration_since(t.1).as_secs_f64() * rate as f64).min(rate as f64);
        t.1 = now;
        t.0 -= bytes as f64;
        -t.0
    };
    if debt > 0.0 {
        thread::sleep(Duration::from_secs_f64(debt / rate as f64));
    }
}

fn wait_while_stalled(shared: &Shared) {
    loop {
        let until = lock(&shared.control).stalled_until;
        match until {
            Some(t) if Instant::now() < t && !shared.stop.load(Ordering::Relaxed) => {
                thread::sleep((t - Instant::now()).min(Duration::from_millis(20)));
            }
            _ => return,
        }
    }
}

/// Request header: size (4), api key (2), api version (2), correlation id (4).
const REQUEST_HEADER: usize = 12;
/// Response header: size (4), correlation id (4).
const RESPONSE_HEADER: usize = 8;

/// The start of one request or response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Header {
    /// The frame's size after its size field.
    size: u32,
    /// Requests only (-1 in responses).
    api_key: i16,
    correlation_id: i32,
}

/// Follows Kafka framing (4-byte big-endian size, then a header) across reads, reporting the
/// header of every frame that starts in each chunk.
struct FrameScanner {
    header_len: usize,
    /// Bytes of the current frame still to skip.
    remaining: usize,
    /// The header of the next frame, collected so far.
    header: Vec<u8>,
}

impl FrameScanner {
    fn new(header_len: usize) -> Self {
        Self {
            header_len,
            remaining: 0,
            header: Vec::with_capacity(header_len),
        }
    }

    fn scan(&mut self, mut bytes: &[u8]) -> Vec<Header> {
        let mut found = Vec::new();
        while !bytes.is_empty() {
            if self.remaining > 0 {
                let skip = self.remaining.min(bytes.len());
                self.remaining -= skip;
                bytes = &bytes[skip..];
                continue;
            }
            let take = (self.header_len - self.header.len()).min(bytes.len());
            self.header.extend_from_slice(&bytes[..take]);
            bytes = &bytes[take..];
            if self.header.len() == self.header_len {
                let h = &self.header;
                let size = u32::from_be_bytes([h[0], h[1], h[2], h[3]]);
                let header = if self.header_len == REQUEST_HEADER {
                    Header {
                        size,
                        api_key: i16::from_be_bytes([h[4], h[5]]),
                        correlation_id: i32::from_be_bytes([h[8], h[9], h[10], h[11]]),
                    }
                } else {
                    Header {
                        size,
                        api_key: -1,
                        correlation_id: i32::from_be_bytes([h[4], h[5], h[6], h[7]]),
                    }
                };
                found.push(header);
                // The header after the size field was part of the frame's `size` bytes.
                self.remaining = (size as usize).saturating_sub(self.header_len - 4);
                self.header.clear();
            }
        }
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A request frame: size, api key, version 1, correlation id, client id "c1", `body`.
    fn request(api_key: i16, correlation_id: i32, body: usize) -> Vec<u8> {
        let mut r = ((12 + body) as i32).to_be_bytes().to_vec();
        r.extend_from_slice(&api_key.to_be_bytes());
        r.extend_from_slice(&1i16.to_be_bytes());
        r.extend_from_slice(&correlation_id.to_be_bytes());
        r.extend_from_slice(&2i16.to_be_bytes());
        r.extend_from_slice(b"c1");
        r.extend(std::iter::repeat_n(7u8, body));
        r
    }

    #[test]
    fn the_scanner_finds_headers_across_split_reads() {
        let mut bytes = request(3, 1, 10);
        bytes.extend(request(26, 2, 0));
        bytes.extend(request(0, 3, 300));
        let mut s = FrameScanner::new(REQUEST_HEADER);
        let mut found = Vec::new();
        for chunk in bytes.chunks(5) {
            found.extend(s.scan(chunk));
        }
        let keys: Vec<(i16, i32)> = found
            .iter()
            .map(|h| (h.api_key, h.correlation_id))
            .collect();
        assert_eq!(keys, [(3, 1), (26, 2), (0, 3)]);
        assert_eq!(client_id(&bytes).as_deref(), Some("c1"));
        // Responses: size and correlation id only.
        let mut response = 12i32.to_be_bytes().to_vec();
        response.extend_from_slice(&9i32.to_be_bytes());
        response.extend([0u8; 8]);
        let mut r = FrameScanner::new(RESPONSE_HEADER);
        let h = r.scan(&response);
        assert_eq!((h[0].size, h[0].correlation_id), (12, 9));
    }

    /// An echo server: what a client sends comes back as the "response".
    fn echo_server() -> SocketAddr {
        let echo = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = echo.local_addr().unwrap();
        thread::spawn(move || {
            for s in echo.incoming() {
                let mut s = s.unwrap();
                thread::spawn(move || {
                    let mut b = [0u8; 4096];
                    while let Ok(n) = s.read(&mut b) {
                        if n == 0 || s.write_all(&b[..n]).is_err() {
                            break;
                        }
                    }
                });
            }
        });
        addr
    }

    /// Sends a Fetch request (api key 1, version 0) whose echo parses as its own response:
    /// the echoed bytes after the size are the api key and version, read as a correlation
    /// id — so the request's correlation id is chosen to be exactly that, 0x0001_0000.
    fn fetch_round_trip(proxy: &Proxy, client: &str, body: usize) -> Duration {
        let mut r = ((10 + client.len() + body) as i32).to_be_bytes().to_vec();
        r.extend_from_slice(&API_FETCH.to_be_bytes());
        r.extend_from_slice(&0i16.to_be_bytes());
        r.extend_from_slice(&0x0001_0000i32.to_be_bytes());
        r.extend_from_slice(&(client.len() as i16).to_be_bytes());
        r.extend_from_slice(client.as_bytes());
        r.extend(std::iter::repeat_n(0u8, body));
        let mut c = TcpStream::connect(proxy.listen).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let started = Instant::now();
        c.write_all(&r).unwrap();
        let mut back = vec![0u8; r.len()];
        c.read_exact(&mut back).unwrap();
        started.elapsed()
    }

    #[test]
    fn fetch_responses_of_the_named_clients_are_paced() {
        let proxy = Proxy::start("127.0.0.1:0".parse().unwrap(), echo_server()).unwrap();
        proxy.limit_fetch(1_000, &["paced".to_string()]);
        assert!(fetch_round_trip(&proxy, "free", 3_000) < Duration::from_millis(500));
        let took = fetch_round_trip(&proxy, "paced", 3_000);
        assert!(
            took >= Duration::from_millis(1_500),
            "3 KB at 1 KB/s (one second of burst at most) took {took:?}"
        );
        assert!(proxy.fetch_bytes() >= 6_000);
    }

    /// An echo server behind the proxy: bytes pass, a stall holds them, drop_all closes.
    #[test]
    fn forwards_stalls_and_drops() {
        let echo = TcpListener::bind("127.0.0.1:0").unwrap();
        let upstream = echo.local_addr().unwrap();
        thread::spawn(move || {
            for s in echo.incoming() {
                let mut s = s.unwrap();
                thread::spawn(move || {
                    let mut b = [0u8; 1024];
                    while let Ok(n) = s.read(&mut b) {
                        if n == 0 || s.write_all(&b[..n]).is_err() {
                            break;
                        }
                    }
                });
            }
        });
        let proxy = Proxy::start("127.0.0.1:0".parse().unwrap(), upstream).unwrap();
        let mut c = TcpStream::connect(proxy.listen).unwrap();
        c.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut b = [0u8; 20];
        let hello = request(18, 1, 4);
        c.write_all(&hello).unwrap();
        c.read_exact(&mut b).unwrap();
        assert_eq!(&b[..], &hello[..], "bytes pass both ways");

        proxy.stall_on_request(API_END_TXN, Duration::from_millis(400));
        let sent = Instant::now();
        c.write_all(&request(API_END_TXN, 7, 0)).unwrap();
        c.read_exact(&mut b[..16]).unwrap();
        assert!(sent.elapsed() >= Duration::from_millis(380), "held back");
        assert!(proxy.triggered_at().is_some());

        assert_eq!(proxy.drop_all(), 1);
        let mut rest = Vec::new();
        assert!(matches!(c.read_to_end(&mut rest), Ok(0) | Err(_)));
    }
}
