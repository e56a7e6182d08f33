//! The main comparison: every system over the very same input topics (one backlog of the
//! workload), one after the other, each with its own group, output and state.
//!
//! Per run: events/s and CPU seconds per 1 M events over the window from the moment the
//! group is stable with all of the system's members joined and assigned ([`Kind::members`]:
//! a group stable with its first member alone rebalances again when the next joins) to the
//! commit that covers the whole backlog
//! (start-up — JVM, catalog load, group join — is outside the window for every system alike;
//! the wall time from the start is shown too). The window does not start at the first
//! commit: a system fast enough to copy most of the backlog within one commit interval
//! would be measured over its last few records only, the broker's CPU in the same window, the process's peak RSS, then a
//! restart of the stateful systems: time until ready (state restored from the changelog;
//! Kafka Streams on an empty state directory, as on a new machine) and the peak RSS after it.
//! The send-commands are read back and checked against the workload's model of the rule.

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use crate::kafka::{decode_commands, CommitWatch, Inputs, OutputReader};
use crate::process::{cpu_seconds, peak_rss};
use crate::systems::{Env, Kind, Setup};
use crate::workload::Send;

#[derive(Clone, Debug, Default)]
pub struct Row {
    pub system: String,
    pub mode: String,
    pub kind: Option<Kind>,
    pub events_per_s: f64,
    pub cpu_per_m: f64,
    pub broker_cpu_per_m: f64,
    pub wall_s: f64,
    pub rss_ingest: u64,
    pub rss_restart: Option<u64>,
    pub ready_s: Option<f64>,
    pub pending: Option<u64>,
    /// Send-commands due by the check's cutoff, and whether they are exactly the model's.
    pub sends: Option<(usize, bool)>,
    pub note: String,
}

pub struct Backlog<'a> {
    pub inputs: &'a Inputs,
    pub campaigns: &'a str,
    pub events: u64,
    pub delay_ms: i64,
    /// Sends due at or before this time are checked against the model.
    pub cutoff: i64,
    pub expected: &'a [Send],
    pub broker_pid: Option<u32>,
}

struct Sample {
    at: Instant,
    committed: u64,
    cpu: f64,
    broker: f64,
}

/// One run of `kind` over the backlog. `restart`: the stateful systems are restarted after
/// it (time until ready, memory after the restart, pending timers); the send-commands are
/// checked against the model either way.
pub fn run(env: &Env, b: &Backlog, n: usize, kind: Kind, prefix: &str, restart: bool) -> Row {
    let app = format!("{prefix}-{n}");
    let setup = Setup::new(kind, &app, b.inputs, b.campaigns, b.delay_ms);
    setup.prepare(env);
    let watch = CommitWatch::new(&env.bootstrap, &app, b.inputs, env.partitions);
    let mut row = Row {
        system: kind.system().to_string(),
        mode: kind.mode(),
        kind: Some(kind),
        ..Row::default()
    };
    eprintln!("[bench] {}: {}", row.system, row.mode);
    let broker_at_start = b.broker_pid.and_then(cpu_seconds).unwrap_or(0.0);
    let mut running = setup.start(env, "ingest");
    let pid = running.proc.pid();
    let broker_cpu = || b.broker_pid.and_then(cpu_seconds).unwrap_or(0.0);
    let sample = |committed| Sample {
        at: Instant::now(),
        committed,
        cpu: cpu_seconds(pid).unwrap_or(0.0),
        broker: broker_cpu(),
    };
    let deadline = Duration::from_secs(900);
    let mut first: Option<Sample> = None;
    // The group is watched closely until it is stable, so the window starts on time.
    while first.is_none() && running.proc.started.elapsed() < deadline {
        running.proc.check_alive();
        if watch.group_stable(kind.members(env)) {
            first = Some(sample(watch.committed()));
        } else {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
    // The window opens at the first commit after that: work done before the group was
    // seen stable (a first member's, before the others joined) and committed in the window
    // would count as the window's; from one commit to the last, each side is a commit.
    let mut opened: Option<Sample> = None;
    let last = loop {
        running.proc.check_alive();
        let committed = watch.committed();
        if committed >= b.events {
            break sample(committed);
        }
        if opened.is_none() && first.as_ref().is_some_and(|f| committed > f.committed) {
            opened = Some(sample(committed));
        }
        if running.proc.started.elapsed() > deadline {
            row.note = format!(
                "stopped after {deadline:?}: {committed} of {} committed",
                b.events
            );
            break sample(committed);
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    let first = opened.or(first);
    // Without a window (the group never seen stable) the run counts from the start.
    let from_start = Sample {
        at: running.proc.started,
        committed: 0,
        cpu: 0.0,
        broker: broker_at_start,
    };
    let first = match first {
        Some(f) if f.committed < last.committed => f,
        _ => {
            row.note = "no window: measured from the start".into();
            from_start
        }
    };
    let events = (last.committed - first.committed) as f64;
    let secs = last.at.duration_since(first.at).as_secs_f64();
    row.events_per_s = events / secs.max(1e-3);
    row.cpu_per_m = (last.cpu - first.cpu) / events.max(1.0) * 1e6;
    row.broker_cpu_per_m = (last.broker - first.broker) / events.max(1.0) * 1e6;
    row.wall_s = last.at.duration_since(running.proc.started).as_secs_f64();
    row.rss_ingest = peak_rss(pid);
    running.stop();

    if kind.stateful() && restart {
        if let Kind::Streams { .. } = kind {
            // A restart on a new machine: no local state, everything from the changelog.
            let _ = std::fs::remove_dir_all(setup.state_dir(env));
        }
        let mut again = setup.start(env, "restart");
        let ready = again.wait_ready(Duration::from_secs(600));
        std::thread::sleep(Duration::from_secs(1));
        row.ready_s = Some(ready.as_secs_f64());
        row.rss_restart = Some(peak_rss(again.proc.pid()));
        row.pending = again.pending();
        again.stop();
    }
    if kind.stateful() {
        let reader = OutputReader::new(&env.bootstrap, &setup.output);
        let mut records = Vec::new();
        reader.read_to_end(&mut records);
        let got: BTreeSet<Send> = decode_commands(&records)
            .into_iter()
            .filter(|c| c.due_at <= b.cutoff)
            .map(|c| (c.user_id, c.trigger.event_id, c.due_at))
            .collect();
        let expected: BTreeSet<Send> = b.expected.iter().cloned().collect();
        row.sends = Some((got.len(), got == expected));
        if got != expected {
            let missing = expected.difference(&got).count();
            let extra = got.difference(&expected).count();
            eprintln!(
                "[bench] {} {}: send-commands differ from the model: {missing} missing, {extra} extra",
                row.system, row.mode
            );
        }
    }
    row
}
