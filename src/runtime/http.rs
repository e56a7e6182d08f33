//! The HTTP server: `/metrics`, `/healthz`, `/readyz`, and the admin API.
//!
//! ```text
//!  HTTP thread ──AdminRequest──► instance loop (owner of the tasks) ──reply──► HTTP thread
//! ```
//!
//! The admin API never reads task state from this thread: it asks the loop that owns the
//! tasks and waits for the answer, so the hot path needs no locks. Admin routes need a
//! bearer token whenever one is configured (and one must be configured when the server
//! listens beyond loopback).

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::mpsc::{self, Receiver, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use serde_json::{json, Value};
use tiny_http::{Header, Method, Request, Response, Server};
use tracing::{info, warn};

use super::metrics::Metrics;

/// How long the loop may go without a heartbeat before `/healthz` fails.
const STALL_MS: i64 = 60_000;

/// What one member loop (a processing thread) tells the HTTP thread.
#[derive(Debug, Default)]
pub struct Health {
    /// Wall clock of the loop's last iteration (epoch ms).
    pub heartbeat_ms: AtomicI64,
    pub ready: AtomicBool,
    pub not_ready: Mutex<String>,
    /// Tasks of the member being restored.
    pub restoring: AtomicI64,
    /// Timers of the member's tasks more than a minute past due.
    pub overdue: AtomicI64,
}

impl Health {
    pub fn set_ready(&self, ready: bool, reason: &str) {
        self.ready.store(ready, Ordering::Relaxed);
        if let Ok(mut r) = self.not_ready.lock() {
            if r.as_str() != reason {
                *r = reason.to_string();
            }
        }
    }
}

/// The member loops of the instance, as the HTTP thread sees them.
struct Members {
    instance_id: String,
    health: Vec<Arc<Health>>,
    admin: Vec<Sender<AdminRequest>>,
}

/// A question for the loop.
pub enum AdminRequest {
    /// A user's pending timers and receipts.
    User {
        user_id: String,
        reply: Sender<(u16, Value)>,
    },
    /// The tasks of this instance.
    Tasks { reply: Sender<(u16, Value)> },
}

/// Starts the server on `listen` for `members` member loops. Returns one admin request
/// receiver per member, for its loop to drain.
pub fn start(
    listen: &str,
    token: Option<String>,
    metrics: Arc<Metrics>,
    instance_id: &str,
    health: Vec<Arc<Health>>,
) -> Result<(Vec<Receiver<AdminRequest>>, JoinHandle<()>), String> {
    let server = Server::http(listen).map_err(|e| format!("http_listen {listen}: {e}"))?;
    info!(listen, "http server: /metrics /healthz /readyz /admin");
    let (senders, receivers): (Vec<_>, Vec<_>) = health.iter().map(|_| mpsc::channel()).unzip();
    let members = Members {
        instance_id: instance_id.to_string(),
        health,
        admin: senders,
    };
    let handle = std::thread::Builder::new()
        .name("http".into())
        .spawn(move || {
            for request in server.incoming_requests() {
                let (status, body, content_type) =
                    route(&request, token.as_deref(), &metrics, &members);
                let header = Header::from_bytes(&b"Content-Type"[..], content_type.as_bytes())
                    .expect("valid header");
                let response = Response::from_string(body)
                    .with_status_code(status)
                    .with_header(header);
                if let Err(e) = request.respond(response) {
                    warn!(error = %e, "http response failed");
                }
            }
        })
        .map_err(|e| e.to_string())?;
    Ok((receivers, handle))
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn route(
    request: &Request,
    token: Option<&str>,
    metrics: &Metrics,
    members: &Members,
) -> (u16, String, &'static str) {
    const TEXT: &str = "text/plain; charset=utf-8";
    const JSON: &str = "application/json";
    if request.method() != &Method::Get {
        return (405, "only GET\n".into(), TEXT);
    }
    let path = request.url().split('?').next().unwrap_or("");
    match path {
        "/metrics" => {
            // Instance-wide gauges are the sum of what the members report.
            let sum = |f: fn(&Health) -> i64| members.health.iter().map(|h| f(h)).sum::<i64>();
            metrics.ready.set(all_ready(members) as i64);
            metrics
                .restore_in_progress
                .set(sum(|h| h.restoring.load(Ordering::Relaxed)));
            metrics
                .overdue_timers
                .set(sum(|h| h.overdue.load(Ordering::Relaxed)));
            (200, metrics.render(), "text/plain; version=0.0.4")
        }
        "/healthz" => {
            let oldest = members
                .health
                .iter()
                .map(|h| h.heartbeat_ms.load(Ordering::Relaxed))
                .min()
                .unwrap_or(0);
            let age = now_ms() - oldest;
            if age < STALL_MS {
                (
                    200,
                    format!("ok: the processing loop ran {age} ms ago\n"),
                    TEXT,
                )
            } else {
                (
                    503,
                    format!("a processing loop has not run for {age} ms\n"),
                    TEXT,
                )
            }
        }
        "/readyz" => {
            if all_ready(members) {
                (200, "ready\n".into(), TEXT)
            } else {
                let reasons: Vec<String> = members
                    .health
                    .iter()
                    .filter(|h| !h.ready.load(Ordering::Relaxed))
                    .map(|h| h.not_ready.lock().map(|r| r.clone()).unwrap_or_default())
                    .collect();
                (503, format!("not ready: {}\n", reasons.join("; ")), TEXT)
            }
        }
        p if p.starts_with("/admin/") => {
            if let Some(expected) = token {
                let given = request
                    .headers()
                    .iter()
                    .find(|h| h.field.equiv("Authorization"))
                    .map(|h| h.value.as_str().to_string());
                if given.as_deref() != Some(&format!("Bearer {expected}")) {
                    return (
                        401,
                        json!({"error": "a bearer token is required"}).to_string(),
                        JSON,
                    );
                }
            }
            let user = match p.strip_prefix("/admin/users/") {
                Some(user) if !user.is_empty() => Some(percent_decode(user)),
                _ if p == "/admin/tasks" => None,
                _ => {
                    return (
                        404,
                        json!({"error": format!("no such admin route {p}")}).to_string(),
                        JSON,
                    )
                }
            };
            let answers = ask_members(members, user.as_deref());
            let (status, body) = match (user, answers) {
                (_, None) => (503, json!({"error": "the instance did not answer in time"})),
                // The tasks of every member, as one instance.
                (None, Some(answers)) => {
                    let tasks: Vec<Value> = answers
                        .iter()
                        .flat_map(|(_, a)| a["tasks"].as_array().cloned().unwrap_or_default())
                        .collect();
                    (
                        200,
                        json!({"instance": members.instance_id, "tasks": tasks}),
                    )
                }
                // The member that owns the user's task answers; else "owned elsewhere".
                (Some(_), Some(answers)) => answers
                    .iter()
                    .find(|(status, _)| *status != 409)
                    .or_else(|| answers.first())
                    .cloned()
                    .unwrap_or((503, json!({"error": "no processing loop"}))),
            };
            (status, body.to_string(), JSON)
        }
        _ => (404, "not found\n".into(), TEXT),
    }
}

fn all_ready(members: &Members) -> bool {
    members
        .health
        .iter()
        .all(|h| h.ready.load(Ordering::Relaxed))
}

/// Asks every member loop; `None` when one does not answer in time.
fn ask_members(members: &Members, user: Option<&str>) -> Option<Vec<(u16, Value)>> {
    let mut pending = Vec::new();
    for admin in &members.admin {
        let (reply, answer) = mpsc::channel();
        let ask = match user {
            Some(user_id) => AdminRequest::User {
                user_id: user_id.to_string(),
                reply,
            },
            None => AdminRequest::Tasks { reply },
        };
        admin.send(ask).ok()?;
        pending.push(answer);
    }
    pending
        .into_iter()
        .map(|answer| answer.recv_timeout(Duration::from_secs(10)).ok())
        .collect()
}

/// Decodes `%XX` escapes of a path segment.
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            if let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Kafka's default partitioner for a key: murmur2, made positive, modulo the partitions.
pub fn partition_for_key(key: &[u8], partitions: usize) -> i32 {
    ((murmur2(key) & 0x7fff_ffff) as usize % partitions.max(1)) as i32
}

/// Kafka's murmur2 (seed 0x9747b28c), as the Java client computes it.
pub fn murmur2(data: &[u8]) -> i32 {
    const SEED: u32 = 0x9747_b28c;
    const M: u32 = 0x5bd1_e995;
    const R: u32 = 24;
    let length = data.len();
    let mut h: u32 = SEED ^ (length as u32);
    let chunks = length / 4;
    for i in 0..chunks {
        let mut k = u32::from_le_bytes([
            data[4 * i],
            data[4 * i + 1],
            data[4 * i + 2],
            data[4 * i + 3],
        ]);
        k = k.wrapping_mul(M);
        k ^= k >> R;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let tail = &data[chunks * 4..];
    match tail.len() {
        3 => {
            h ^= (tail[2] as u32) << 16;
            h ^= (tail[1] as u32) << 8;
            h ^= tail[0] as u32;
            h = h.wrapping_mul(M);
        }
        2 => {
            h ^= (tail[1] as u32) << 8;
            h ^= tail[0] as u32;
            h = h.wrapping_mul(M);
        }
        1 => {
            h ^= tail[0] as u32;
            h = h.wrapping_mul(M);
        }
        _ => {}
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    h as i32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn murmur2_matches_the_java_client() {
        // Values from the Java client's own tests of Utils.murmur2.
        assert_eq!(murmur2(b"21"), -973932308);
        assert_eq!(murmur2(b"foobar"), -790332482);
        assert_eq!(murmur2(b"a-little-bit-long-string"), -985981536);
        assert_eq!(murmur2(b"a-little-bit-longer-string"), -1486304829);
        assert_eq!(
            murmur2(b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8"),
            -58897971
        );
        assert_eq!(murmur2(b"abc"), 479470107);
    }

    #[test]
    fn percent_escapes_decode() {
        assert_eq!(percent_decode("user%2F1%20x"), "user/1 x");
        assert_eq!(percent_decode("plain"), "plain");
        assert_eq!(percent_decode("bad%zz"), "bad%zz");
    }
}
