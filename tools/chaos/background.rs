//! The harness's background threads:
//!
//! ```text
//!  producer ── chunks up to the target ──► input topics   (a segment at a time, each one
//!     │                                                 written while no instance runs)
//!     └─ chunk + offsets ──► oracle        (barrier and edit applied between segments)
//!  monitor  ── every 500 ms: committed offsets → lag; group members → split tasks;
//!              changelog ends per task; crashed instances → recorded, restarted
//! ```
//!
//! A segment of input is written completely before any instance runs, so no task is caught
//! up before it has processed all of it: a caught-up task fires timers by the wall clock,
//! and the merge goes on without a partition "at its end" that a later record would extend
//! (see timeline.rs).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use campaign_connector::campaigns_file::parse_campaigns;
use campaign_connector::validate::Limits;

use crate::fleet::Fleet;
use crate::kafka::{GroupOffsets, Watermarks, WorkloadProducer};
use crate::oracle::{Landed, Oracle};
use crate::progress::{lock, SharedProgress};
use crate::workload::{Generator, Role};

pub struct ProducerJob {
    pub generator: Generator,
    pub producer: WorkloadProducer,
    pub oracle: Oracle,
    pub topics: [String; 2],
    pub partitions: i32,
    /// (chunk, edit name, campaigns, evidence follow-on): the oracle's barrier and the edit,
    /// right before that chunk.
    pub edits: Vec<(usize, String, String, String)>,
    pub limits: Limits,
    /// The oracle's wall clock (see timeline.rs: any instant of the run decides alike).
    pub now: i64,
}

/// Produces the workload up to the target chunk set in the progress, segment by segment;
/// returns the oracle fed with exactly what was produced.
pub fn spawn_producer(
    mut job: ProducerJob,
    progress: SharedProgress,
    stop: Arc<AtomicBool>,
) -> JoinHandle<(Oracle, Generator)> {
    thread::Builder::new()
        .name("producer".into())
        .spawn(move || {
            let n = job.partitions as usize;
            let mut k = 0;
            while !job.generator.done() && !stop.load(Ordering::Relaxed) {
                // The barrier and the edit before chunk k, when the harness asks (it needs the
                // drops the edit makes to know when every task applied it).
                if lock(&progress).edit_requested == Some(k) {
                    for (at, name, yaml, evidence) in &job.edits {
                        let done = lock(&progress).edit_drops.iter().any(|(n, _, _)| n == name);
                        if *at != k || done {
                            continue;
                        }
                        job.oracle.barrier(job.now);
                        let campaigns = parse_campaigns(yaml, "edit", &job.limits)
                            .expect("edits are valid campaigns");
                        match job.oracle.apply_campaigns(&campaigns, job.now, evidence) {
                            Ok(drops) => lock(&progress).edit_drops.push((
                                name.clone(),
                                evidence.clone(),
                                drops,
                            )),
                            Err(e) => {
                                lock(&progress).producer_error = Some(format!("oracle edit: {e}"))
                            }
                        }
                    }
                }
                {
                    // One lock for the check and the flag: the target may move meanwhile.
                    let mut p = lock(&progress);
                    if k >= p.target_chunk {
                        p.segment_written = true;
                        drop(p);
                        thread::sleep(Duration::from_millis(50));
                        continue;
                    }
                }
                let records = job.generator.next_chunk();
                {
                    let mut p = lock(&progress);
                    let starts = p.ends.clone();
                    p.chunk_starts.push(starts);
                }
                let batch: Vec<(&str, &str, &[u8])> = records
                    .iter()
                    .map(|r| {
                        (
                            job.topics[r.role as usize].as_str(),
                            r.key.as_str(),
                            r.value.as_slice(),
                        )
                    })
                    .collect();
                let landed = match job.producer.produce(&batch) {
                    Ok(l) => l,
                    Err(e) => {
                        lock(&progress).producer_error = Some(format!("chunk {k}: {e}"));
                        break;
                    }
                };
                let list: Vec<Landed<'_>> = records
                    .iter()
                    .zip(&landed)
                    .map(|(r, (partition, offset))| Landed {
                        role: r.role,
                        partition: *partition,
                        offset: *offset,
                        content: &r.content,
                        value: &r.value,
                    })
                    .collect();
                job.oracle.chunk(&list, job.now);
                {
                    let mut p = lock(&progress);
                    for (r, (partition, offset)) in records.iter().zip(&landed) {
                        let i = match r.role {
                            Role::Interactions => 0,
                            Role::UserEvents => n,
                        } + *partition as usize;
                        p.ends[i] = p.ends[i].max(offset + 1);
                    }
                    p.input_records += records.len();
                }
                k += 1;
            }
            let mut p = lock(&progress);
            p.producer_done = true;
            p.segment_written = true;
            drop(p);
            (job.oracle, job.generator)
        })
        .expect("spawn producer")
}

/// Samples the group's committed offsets and membership, and supervises the instances.
pub fn spawn_monitor(
    offsets: GroupOffsets,
    changelog: Watermarks,
    progress: SharedProgress,
    fleet: Arc<Mutex<Fleet>>,
    stop: Arc<AtomicBool>,
    work: std::path::PathBuf,
) -> JoinHandle<()> {
    thread::Builder::new()
        .name("monitor".into())
        .spawn(move || {
            let (inputs, topics, partitions) = {
                let p = lock(&progress);
                let topics: Vec<String> = vec![
                    p.inputs[0].0.clone(),
                    p.inputs.last().expect("inputs").0.clone(),
                ];
                (p.inputs.clone(), topics, (p.inputs.len() / 2) as i32)
            };
            let mut last_group = Instant::now() - Duration::from_secs(60);
            // Per task: the changelog's committed ends (last stable offsets) of the last
            // samples while the task still had input to process. A transaction that moved the
            // task's committed offsets to its input's end is not below them, however long its
            // commit took; two samples back leaves room for the offsets being read before the
            // ends within one sample.
            let mut history: Vec<std::collections::VecDeque<i64>> =
                vec![Default::default(); partitions as usize];
            let mut done = vec![false; partitions as usize];
            let mut restart_at: Vec<(String, Instant)> = Vec::new();
            // A stall (no progress for a minute with work to do) is described once: what
            // the group and every instance say about it, for whoever reads the report.
            let mut stall_described = false;
            let mut offsets_unread_since: Option<Instant> = None;
            let mut crashes_per_instance: std::collections::BTreeMap<String, usize> =
                Default::default();
            while !stop.load(Ordering::Relaxed) {
                let tick = Instant::now();
                let answer = offsets.committed(&inputs, Duration::from_secs(5));
                let readable = answer.as_ref().is_ok_and(|c| c.iter().all(Option::is_some));
                match (readable, offsets_unread_since) {
                    (false, None) => offsets_unread_since = Some(Instant::now()),
                    (true, Some(since)) => {
                        if since.elapsed() > Duration::from_secs(10) {
                            lock(&progress).notes.push(format!(
                                "the group's committed offsets could not be read for {:.0} s",
                                since.elapsed().as_secs_f64()
                            ));
                        }
                        offsets_unread_since = None;
                    }
                    _ => {}
                }
                if let Ok(committed) = answer {
                    let now = Instant::now();
                    let mut p = lock(&progress);
                    // Committed offsets only move forward; an answer with an error for a
                    // partition (or a stale one) keeps what is known.
                    let mut moved = p.last_progress.is_none();
                    for (i, c) in committed.iter().enumerate() {
                        if let Some(c) = *c {
                            if c > p.committed[i] {
                                p.committed[i] = c;
                                moved = true;
                            }
                        }
                    }
                    // A trickle is no progress: at least 100 more records must be committed.
                    let sum: i64 = p.committed.iter().sum();
                    if moved && (p.last_progress.is_none() || sum >= p.progress_mark + 100) {
                        p.last_progress = Some(now);
                        p.progress_mark = sum;
                    }
                    p.sampled_at = Some(now);
                    let lag = p.total_lag();
                    p.lag.push((now, lag));
                    let n = partitions as usize;
                    let complete: Vec<bool> = (0..n)
                        .map(|t| p.committed[t] >= p.ends[t] && p.committed[n + t] >= p.ends[n + t])
                        .collect();
                    drop(p);
                    if let Ok(ends) = changelog.ends() {
                        let mut p = lock(&progress);
                        if p.changelog_cut.len() != n {
                            p.changelog_cut = ends.clone();
                        }
                        for t in 0..n {
                            if done[t] {
                                continue;
                            }
                            if complete[t] {
                                done[t] = true;
                                p.changelog_cut[t] = history[t].front().copied().unwrap_or(0);
                            } else {
                                history[t].push_back(ends.get(t).copied().unwrap_or(0));
                                if history[t].len() > 3 {
                                    history[t].pop_front();
                                }
                                p.changelog_cut[t] = ends.get(t).copied().unwrap_or(0);
                            }
                        }
                    }
                }
                if last_group.elapsed() >= Duration::from_secs(1) {
                    last_group = Instant::now();
                    if let Ok(view) = offsets.members(Duration::from_secs(5)) {
                        let mut p = lock(&progress);
                        if view.state == "Stable" {
                            let split = view.split_tasks(&topics, partitions);
                            if !split.is_empty() {
                                p.split_tasks.push((Instant::now(), split));
                            }
                        }
                        p.group = view;
                        p.group_at = Some(Instant::now());
                    }
                }
                let stalled = lock(&progress).stalled_for();
                if stalled > Duration::from_secs(60) && !stall_described {
                    stall_described = true;
                    let file = work.join(format!(
                        "stall-{}.txt",
                        crate::STARTED.get().map_or(0, |s| s.elapsed().as_secs())
                    ));
                    let text = describe_stall(&progress, &fleet);
                    let _ = std::fs::write(&file, text);
                    lock(&progress).notes.push(format!(
                        "no progress for a minute with work to do; the group and the instances then: {}",
                        file.display()
                    ));
                } else if stalled.is_zero() {
                    stall_described = false;
                }
                // Supervision: what crashed is restarted a second later, up to a bound.
                if let Ok(mut f) = fleet.try_lock() {
                    for id in f.reap() {
                        let n = crashes_per_instance.entry(id.clone()).or_default();
                        *n += 1;
                        if *n <= 25 {
                            restart_at.push((id, Instant::now() + Duration::from_secs(1)));
                        } else {
                            lock(&progress)
                                .notes
                                .push(format!("{id} crashed {n} times: not restarted again"));
                        }
                    }
                    let due: Vec<String> = restart_at
                        .iter()
                        .filter(|(_, t)| *t <= Instant::now())
                        .map(|(id, _)| id.clone())
                        .collect();
                    restart_at.retain(|(_, t)| *t > Instant::now());
                    for id in due {
                        if let Err(e) = f.start(&id) {
                            lock(&progress).notes.push(format!("restart {id}: {e}"));
                        }
                    }
                }
                let spent = tick.elapsed();
                if spent < Duration::from_millis(500) {
                    thread::sleep(Duration::from_millis(500) - spent);
                }
            }
        })
        .expect("spawn monitor")
}

/// The group's members and assignments, and every instance's `/admin/tasks` and the
/// lag and readiness lines of its `/metrics`.
fn describe_stall(progress: &SharedProgress, fleet: &Arc<Mutex<Fleet>>) -> String {
    let mut out = String::new();
    {
        let p = lock(progress);
        out.push_str(&format!(
            "committed {:?}\nends      {:?}\ngroup {}:\n",
            p.committed, p.ends, p.group.state
        ));
        for m in &p.group.members {
            out.push_str(&format!(
                "  {} {} {:?}\n",
                m.client_id, m.member_id, m.assigned
            ));
        }
    }
    let ports: Vec<(String, u16)> = match fleet.try_lock() {
        Ok(f) => f
            .running()
            .into_iter()
            .map(|id| {
                let port = f.http_port(&id);
                (id, port)
            })
            .collect(),
        Err(_) => Vec::new(),
    };
    for (id, port) in ports {
        out.push_str(&format!("\n== {id} /admin/tasks\n"));
        out.push_str(&http_get(port, "/admin/tasks").unwrap_or_else(|e| e));
        out.push_str(&format!(
            "\n== {id} /metrics (lag, ready, restore, aborts)\n"
        ));
        let metrics = http_get(port, "/metrics").unwrap_or_else(|e| e);
        for line in metrics.lines().filter(|l| {
            !l.starts_with('#')
                && ["lag", "ready", "restore", "abort"]
                    .iter()
                    .any(|k| l.contains(k))
        }) {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

/// A plain HTTP GET on 127.0.0.1; the body, or why there is none.
fn http_get(port: u16, path: &str) -> Result<String, String> {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).map_err(|e| e.to_string())?;
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .map_err(|e| e.to_string())?;
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .map_err(|e| e.to_string())?;
    let mut text = String::new();
    s.read_to_string(&mut text).map_err(|e| e.to_string())?;
    Ok(text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or(text))
}
