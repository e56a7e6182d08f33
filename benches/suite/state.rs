//! State at scale: many pending timers.
//!
//! - **burst**: N triggers of N users whose sends all come due in the same second of wall
//!   time; measured: from the end of that second until a `read_committed` reader has all N
//!   send-commands.
//! - **restore**: N pending timers (a delay of a week), the process stopped and started
//!   again; measured: time until ready (the connector's `/readyz` is 200; Kafka Streams on an
//!   empty state directory has restored its stores), the reported pending count, resident
//!   memory after the restore and per timer (over the process's baseline on empty state),
//!   and for Kafka Streams the state directory's size per timer.
//!
//! Every other trigger comes with a session start of its user (unrelated traffic), so both
//! inputs carry records as they do in production.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use campaign_connector::model::{
    InputEvent, Interaction, InteractionKind, UserEvent, UserEventType,
};

use crate::kafka::{CommitWatch, EventProducer, Inputs, OutputReader};
use crate::process::{cpu_seconds, dir_bytes, now_ms, peak_rss, rss, wait_for};
use crate::systems::{Env, Kind, Running, Setup};
use crate::workload::{campaigns_yaml, user_id, TRIGGER_CAMPAIGN};

/// A part's own topics, catalog and system.
struct Part {
    setup: Setup,
    inputs: Inputs,
}

fn part(env: &Env, kind: Kind, prefix: &str, delay_ms: i64) -> Part {
    let inputs = Inputs {
        interactions: format!("{prefix}-interactions"),
        user_events: format!("{prefix}-user-events"),
    };
    let campaigns = format!("{prefix}-campaigns");
    let catalog = Setup::new(
        Kind::Connector {
            exactly_once: true,
            commit_ms: 100,
            decisions: false,
            threads: 0,
        },
        &format!("{prefix}-catalog"),
        &inputs,
        &campaigns,
        delay_ms,
    );
    catalog.publish(env, &campaigns_yaml(delay_ms, delay_ms));
    let setup = Setup::new(
        kind,
        &format!("{prefix}-app"),
        &inputs,
        &campaigns,
        delay_ms,
    );
    setup.prepare(env);
    Part { setup, inputs }
}

/// Produces one trigger for each of `n` users, user `i` at `time(i)`, and for every other
/// trigger a session start of the same user a millisecond before it (unrelated traffic, so
/// that both inputs carry records, as they do in production); returns when the system has
/// committed them all (and how long that took from the first record produced).
fn ingest(env: &Env, p: &Part, running: &mut Running, n: u64, time: impl Fn(u64) -> i64) -> f64 {
    let started = Instant::now();
    let mut producer = EventProducer::new(&env.bootstrap, &p.inputs, 20);
    for i in 0..n {
        if i % 2 == 0 {
            producer.send(&InputEvent::UserEvent(UserEvent {
                event_id: format!("s-{i:09}"),
                user_id: user_id(i),
                event_type: UserEventType::SessionStart,
                name: None,
                occurred_at: time(i) - 1,
                user_time_zone: None,
                properties: BTreeMap::new(),
            }));
        }
        producer.send(&InputEvent::Interaction(Interaction {
            event_id: format!("t-{i:09}"),
            user_id: user_id(i),
            campaign_id: TRIGGER_CAMPAIGN.into(),
            kind: InteractionKind::PushReceived,
            qualifier: None,
            occurred_at: time(i),
            user_time_zone: None,
            properties: BTreeMap::new(),
        }));
    }
    producer.flush();
    let total = producer.sent;
    let watch = CommitWatch::new(&env.bootstrap, &p.setup.app, &p.inputs, env.partitions);
    wait_for(
        "the triggers to be committed",
        Duration::from_secs(1800),
        Duration::from_millis(100),
        || {
            running.proc.check_alive();
            (watch.committed() >= total).then_some(())
        },
    );
    started.elapsed().as_secs_f64()
}

#[derive(Clone, Debug, Default)]
pub struct BurstRow {
    pub system: String,
    pub mode: String,
    pub timers: u64,
    pub ingest_s: f64,
    /// Whether every trigger was committed before the sends came due.
    pub ingested_before_due: bool,
    /// From the end of the due second until all N send-commands were read.
    pub all_committed_s: f64,
    /// CPU seconds the system's process used from just before the due second until all N
    /// send-commands were read (steadier than the time: the broker shares the machine).
    pub cpu_s: f64,
}

/// `timers_per_s`: how fast the system ingests timers (measured before), to leave it time to
/// schedule them all before they come due.
pub fn burst(env: &Env, kind: Kind, prefix: &str, n: u64, timers_per_s: f64) -> BurstRow {
    let delay_ms = 86_400_000;
    let p = part(env, kind, prefix, delay_ms);
    eprintln!(
        "[bench] burst: {} {}, {n} timers",
        kind.system(),
        kind.mode()
    );
    let mut running = p.setup.start(env, "burst");
    running.wait_ready(Duration::from_secs(120));
    // The due second starts on a whole second, after the ingest should be done.
    // The expected ingest time with a third to spare, and 10 s.
    let margin = 10_000 + (1.33 * n as f64 / timers_per_s.max(500.0) * 1000.0) as i64;
    let due = (now_ms() + margin) / 1000 * 1000;
    let reader = OutputReader::new(&env.bootstrap, &p.setup.output);
    let ingest_s = ingest(env, &p, &mut running, n, |i| {
        due - delay_ms + (i * 999 / n.max(1)) as i64
    });
    let ingested_before_due = now_ms() < due;
    let mut seen = Vec::new();
    let mut count = 0u64;
    let deadline = Instant::now() + Duration::from_millis((due - now_ms()).max(0) as u64 + 600_000);
    let mut last_at = 0;
    // The ingest is done: what the process uses from here on is the burst's.
    let pid = running.proc.pid();
    let cpu_before = cpu_seconds(pid).unwrap_or(f64::NAN);
    let mut cpu_after = f64::NAN;
    while count < n && Instant::now() < deadline {
        reader.poll(Duration::from_millis(100), &mut seen);
        count += seen.len() as u64;
        if let Some(r) = seen.last() {
            last_at = r.at_ms;
        }
        seen.clear();
        cpu_after = cpu_seconds(pid).unwrap_or(f64::NAN);
        running.proc.check_alive();
    }
    running.stop();
    BurstRow {
        cpu_s: cpu_after - cpu_before,
        system: kind.system().to_string(),
        mode: kind.mode(),
        timers: n,
        ingest_s,
        ingested_before_due,
        all_committed_s: if count >= n {
            (last_at - (due + 1000)) as f64 / 1000.0
        } else {
            f64::NAN
        },
    }
}

#[derive(Clone, Debug, Default)]
pub struct RestoreRow {
    pub system: String,
    pub mode: String,
    pub timers: u64,
    pub ingest_s: f64,
    pub rss_ingest: u64,
    pub ready_s: f64,
    /// Time until ready of the first start, on empty state (start-up, catalog, group join).
    pub ready_empty_s: f64,
    /// The restore proper as the system measured it (the connector: its longest task's
    /// restore, `connector_restore_duration_seconds`): without the start-up and the group
    /// join, whose time varies by seconds from one start to the next.
    pub restore_s: Option<f64>,
    pub pending: Option<u64>,
    pub baseline_rss: u64,
    pub rss_restored: u64,
    pub peak_rss_restore: u64,
    pub store_bytes: Option<u64>,
}

pub fn restore(env: &Env, kind: Kind, prefix: &str, n: u64) -> RestoreRow {
    let delay_ms = 7 * 86_400_000;
    let p = part(env, kind, prefix, delay_ms);
    eprintln!(
        "[bench] restore: {} {}, {n} timers",
        kind.system(),
        kind.mode()
    );
    let mut running = p.setup.start(env, "ingest");
    let ready_empty = running.wait_ready(Duration::from_secs(120));
    std::thread::sleep(Duration::from_secs(2));
    let baseline_rss = rss(running.proc.pid());
    let t0 = now_ms() - 3_600_000;
    let ingest_s = ingest(env, &p, &mut running, n, |i| t0 + (i % 3_600_000) as i64);
    let rss_ingest = peak_rss(running.proc.pid());
    running.stop();

    if let Kind::Streams { .. } = kind {
        let _ = std::fs::remove_dir_all(p.setup.state_dir(env));
    }
    let mut again = p.setup.start(env, "restore");
    let ready = again.wait_ready(Duration::from_secs(1800));
    std::thread::sleep(Duration::from_secs(2));
    let pid = again.proc.pid();
    let row = RestoreRow {
        system: kind.system().to_string(),
        mode: kind.mode(),
        timers: n,
        ingest_s,
        rss_ingest,
        ready_s: ready.as_secs_f64(),
        ready_empty_s: ready_empty.as_secs_f64(),
        restore_s: again.restore_seconds(),
        pending: again.pending(),
        baseline_rss,
        rss_restored: rss(pid),
        peak_rss_restore: peak_rss(pid),
        store_bytes: matches!(kind, Kind::Streams { .. })
            .then(|| dir_bytes(&p.setup.state_dir(env))),
    };
    again.stop();
    row
}
