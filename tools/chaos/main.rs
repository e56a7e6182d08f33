//! The fault matrix: runs connector instances against a three-broker cluster through TCP
//! proxies, injects faults at moments drawn from a seed while they work through a large
//! seeded workload, then reads every output back with `read_committed` and compares it with
//! the product's own engine run over the same input. Prints what it injected and verified.
//!
//! ```text
//!               ┌──────────── direct listener (unfaulted) ─────────────┐
//!  producer ────┤                                                      ├──► verifier ◄── oracle (engine)
//!  (workload)   │   3 KRaft brokers, RF 3, min ISR 2                   │        ▲
//!               └─ CLIENT listener ◄─ proxy ◄─ connector i0, i1 (, i2) ┘        │
//!                                     ▲ drop / stall / stall-on-EndTxn          │
//!  injector ──────────────────────────┴─ SIGKILL / SIGSTOP / broker kill ───────┘ report
//! ```
//!
//! Run it with `scripts/chaos.sh`, which builds it, starts the cluster on the chosen ports
//! and stops everything afterwards. It is a Cargo example so that it never ships with the
//! product yet is built, linted and unit-tested with it.
//!
//! # Layout
//!
//! - `timeline`: event time of the workload, and why the oracle can be exact.
//! - `catalog`: the campaigns and the mid-run edits (campaigns-as-code YAML).
//! - `workload`, `encode`: the seeded records, the writer schemas, the poison.
//! - `oracle`: the engine over the same records; `verify`: outputs against it.
//! - `proxy`: the controllable TCP proxy; `fleet`: connector processes and supervision.
//! - `kafka`: the harness's own clients; `progress`, `background`: producer, monitor,
//!   editor threads; `faults`: injecting faults and measuring recovery; `report`.

mod background;
mod catalog;
mod encode;
mod faults;
mod fleet;
mod kafka;
mod oracle;
mod progress;
mod proxy;
mod report;
mod rng;
mod timeline;
mod verify;
mod workload;

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use campaign_connector::campaigns_file::parse_campaigns;
use campaign_connector::validate::Limits;

use crate::faults::{FaultKind, Injector, Outcome};
use crate::fleet::{Fleet, FleetConfig};
use crate::progress::{lock, wait_until, Progress};
use crate::report::{Check, Report};
use crate::rng::Rng;
use crate::timeline::Timeline;
use crate::workload::{Generator, Shape};

const PARTITIONS: i32 = 6;

/// How big a run is and how many faults of each kind it injects.
struct Profile {
    name: &'static str,
    shape: Shape,
    chunks: usize,
    /// Instances running between faults; one more is a spare for storms and joins.
    baseline: usize,
    faults: Vec<(FaultKind, usize)>,
    stall: Duration,
    recover_deadline: Duration,
    /// The run gives up when the group commits nothing for this long while it has work.
    give_up_after: Duration,
    /// Fetch responses per broker, KB/s (0: unlimited): keeps the group busy with a backlog
    /// for as long as the faults take, without a workload of millions of records.
    fetch_kb_per_s: u64,
}

fn profile(name: &str) -> Option<Profile> {
    use FaultKind::*;
    match name {
        "ci" => Some(Profile {
            name: "ci",
            shape: Shape {
                events: 200_000,
                users: 10_000,
                poison_every: 2_000,
            },
            chunks: 40,
            baseline: 2,
            faults: vec![
                (ConnectorKill, 2),
                (KillMidRestore, 1),
                (KillDuringRebalance, 1),
                (BrokerKill, 1),
                (Storm, 1),
                (Zombie, 1),
                (ConnectionsDropped, 1),
                (Stall, 1),
                (CommitStall, 1),
            ],
            stall: Duration::from_secs(12),
            recover_deadline: Duration::from_secs(150),
            give_up_after: Duration::from_secs(180),
            fetch_kb_per_s: 40,
        }),
        "full" => Some(Profile {
            name: "full",
            shape: Shape {
                events: 1_000_000,
                users: 50_000,
                poison_every: 10_000,
            },
            chunks: 250,
            baseline: 2,
            faults: vec![
                (ConnectorKill, 22),
                (KillMidRestore, 5),
                (KillDuringRebalance, 5),
                (BrokerKill, 3),
                (BrokerRestart, 3),
                (Storm, 2),
                (Zombie, 2),
                (ConnectionsDropped, 3),
                (Stall, 3),
                (CommitStall, 3),
            ],
            stall: Duration::from_secs(15),
            recover_deadline: Duration::from_secs(240),
            give_up_after: Duration::from_secs(300),
            fetch_kb_per_s: 45,
        }),
        _ => None,
    }
}

struct Args {
    profile: String,
    seed: u64,
    port_base: u16,
    bin: PathBuf,
    repo: PathBuf,
    work: Option<PathBuf>,
    faults: Option<Vec<FaultKind>>,
    report: Option<PathBuf>,
    events: Option<usize>,
    dry_run: bool,
    instances: Option<usize>,
    fetch_limit: Option<u64>,
    poison: workload::PoisonKinds,
}

const USAGE: &str = "usage: chaos [--profile ci|full] [--seed N] [--faults all|none|KIND,...] \
[--poison all|none|KIND,...] [--instances N] [--events N] [--fetch-limit KB/s] [--dry-run] [--port-base B] [--bin CONNECTOR] [--repo DIR] [--work DIR] [--report FILE.md]
fault kinds: kill, kill-restore, kill-rebalance, broker-kill, broker-restart, storm, zombie, \
drop, stall, commit-stall
poison kinds: garbage, truncated, v3, time-range, time-negative, 2099, key, empty-user";

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        profile: "ci".into(),
        seed: now_ms() as u64 % 1_000_000,
        port_base: 19300,
        bin: PathBuf::from("target/release/campaign-connector"),
        repo: PathBuf::from("."),
        work: None,
        faults: None,
        report: None,
        events: None,
        dry_run: false,
        instances: None,
        fetch_limit: None,
        poison: workload::Poison::ALL.to_vec(),
    };
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut value = || it.next().ok_or(format!("{arg} needs a value"));
        match arg.as_str() {
            "--profile" => a.profile = value()?,
            "--seed" => a.seed = value()?.parse().map_err(|e| format!("--seed: {e}"))?,
            "--port-base" => {
                a.port_base = value()?.parse().map_err(|e| format!("--port-base: {e}"))?
            }
            "--bin" => a.bin = value()?.into(),
            "--repo" => a.repo = value()?.into(),
            "--work" => a.work = Some(value()?.into()),
            "--report" => a.report = Some(value()?.into()),
            "--events" => a.events = Some(value()?.parse().map_err(|e| format!("--events: {e}"))?),
            "--faults" => {
                let v = value()?;
                a.faults = match v.as_str() {
                    "all" => None,
                    "none" => Some(Vec::new()),
                    list => Some(
                        list.split(',')
                            .map(|k| FaultKind::parse(k).ok_or(format!("unknown fault {k:?}")))
                            .collect::<Result<_, _>>()?,
                    ),
                }
            }
            "--dry-run" => a.dry_run = true,
            "--fetch-limit" => {
                a.fetch_limit = Some(
                    value()?
                        .parse()
                        .map_err(|e| format!("--fetch-limit: {e}"))?,
                )
            }
            "--instances" => {
                let n: usize = value()?.parse().map_err(|e| format!("--instances: {e}"))?;
                if !(1..=3).contains(&n) {
                    return Err("--instances: 1, 2 or 3".into());
                }
                a.instances = Some(n);
            }
            "--poison" => {
                let v = value()?;
                a.poison = match v.as_str() {
                    "all" => workload::Poison::ALL.to_vec(),
                    "none" => Vec::new(),
                    list => list
                        .split(',')
                        .map(|k| workload::Poison::parse(k).ok_or(format!("unknown poison {k:?}")))
                        .collect::<Result<_, _>>()?,
                }
            }
            "-h" | "--help" => return Err(USAGE.into()),
            other => return Err(format!("unknown argument {other}\n{USAGE}")),
        }
    }
    Ok(a)
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn machine() -> String {
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    let mem_kb: u64 = std::fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|m| {
            m.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0);
    format!(
        "{cores} cores, {:.0} GiB RAM",
        mem_kb as f64 / 1024.0 / 1024.0
    )
}

fn main() -> ExitCode {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    if args.dry_run {
        return match dry_run(&args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("[chaos] ERROR: {e}");
                ExitCode::from(2)
            }
        };
    }
    match run(args) {
        Ok(report) => {
            if report.failed() == 0 {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Err(e) => {
            eprintln!("[chaos] ERROR: {e}");
            ExitCode::from(2)
        }
    }
}

static STARTED: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();

/// A progress line on stderr, with the seconds since the start.
pub fn say(line: &str) {
    let t = STARTED.get_or_init(Instant::now).elapsed().as_secs_f64();
    eprintln!("[chaos {t:>6.1}s] {line}");
}

/// Runs `campaign-connector <args> --config <config>` to completion.
fn cli(bin: &Path, args: &[&str], config: &Path) -> Result<String, String> {
    let out = Command::new(bin)
        .args(args)
        .arg("--config")
        .arg(config)
        .env_remove("CONNECTOR_CONFIG")
        .output()
        .map_err(|e| format!("{}: {e}", bin.display()))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    } else {
        Err(format!(
            "campaign-connector {}: {}{}",
            args.join(" "),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// Where everything of one run lives.
struct Names {
    id: String,
    app_id: String,
    interactions: String,
    user_events: String,
    campaigns: String,
    send_commands: String,
    changelog: String,
    decisions: String,
    dlq: String,
}

impl Names {
    fn new(seed: u64, start: i64) -> Self {
        let id = format!("s{seed}-{:x}", (start / 1000) % 0x100000);
        let t = |role: &str| format!("chaos-{role}-{id}");
        Self {
            app_id: format!("chaos-{id}"),
            interactions: t("interactions"),
            user_events: t("user-events"),
            campaigns: t("campaigns"),
            send_commands: t("send-commands"),
            changelog: t("changelog"),
            decisions: t("decisions"),
            dlq: t("dlq"),
            id,
        }
    }

    /// The part of the connector configuration every instance (and the admin CLI) shares.
    fn config(&self, bootstrap: &str, schema_dir: &Path) -> String {
        format!(
            r#"bootstrap_servers: {bootstrap}
application_id: {app}
processing_guarantee: exactly_once
commit_interval: 100ms
transaction_timeout: 10s
# Longer than any stall or broker outage the run injects: within this bound the merge never
# goes on without a partition that is only slow, so the topic interleaving is the event-time
# order the oracle uses.
merge_max_wait: 60s
# Dynamic membership: a killed instance's tasks move after the session timeout.
static_membership: false
partitions: {PARTITIONS}
replication_factor: 3
topics:
  interactions: {interactions}
  user_events: {user_events}
  campaigns: {campaigns}
  send_commands: {send_commands}
  changelog: {changelog}
  decisions: {decisions}
  dlq: {dlq}
encoding:
  schema_dirs: [{schema_dir}]
kafka:
  session.timeout.ms: "6000"
  heartbeat.interval.ms: "500"
  # Small fetches: the run paces Fetch responses through the proxies (a slow network), and
  # a small response holds up the requests behind it on the same connection only briefly.
  # (librdkafka wants fetch.max.bytes >= message.max.bytes.)
  max.partition.fetch.bytes: "32768"
  fetch.max.bytes: "65536"
  message.max.bytes: "65536"
"#,
            app = self.app_id,
            interactions = self.interactions,
            user_events = self.user_events,
            campaigns = self.campaigns,
            send_commands = self.send_commands,
            changelog = self.changelog,
            decisions = self.decisions,
            dlq = self.dlq,
            schema_dir = schema_dir.display(),
        )
    }
}

/// When each fault happens: a chunk of the input (the fault comes once the group has
/// committed that far), spread over the run.
fn schedule(
    rng: &mut Rng,
    faults: &[(FaultKind, usize)],
    chunks: usize,
) -> Vec<(usize, FaultKind)> {
    let mut kinds: Vec<FaultKind> = faults
        .iter()
        .flat_map(|(k, n)| std::iter::repeat_n(*k, *n))
        .collect();
    // Shuffle (Fisher–Yates), then give the i-th fault a point in the i-th slice.
    for i in (1..kinds.len()).rev() {
        let j = rng.below(i as u64 + 1) as usize;
        kinds.swap(i, j);
    }
    let (first, last) = (chunks * 5 / 100, chunks * 95 / 100);
    let n = kinds.len().max(1);
    kinds
        .into_iter()
        .enumerate()
        .map(|(i, k)| {
            let lo = first + (last - first) * i / n;
            let hi = (first + (last - first) * (i + 1) / n).max(lo + 1);
            (rng.range(lo as i64, hi as i64) as usize, k)
        })
        .collect()
}

/// Has the producer write chunks up to `target` and waits until it did.
fn write_segment(progress: &progress::SharedProgress, target: usize) -> Result<(), String> {
    let started = Instant::now();
    {
        let mut p = lock(progress);
        p.target_chunk = target;
        p.segment_written = false;
    }
    if !wait_until(progress, Duration::from_secs(3600), |p| p.segment_written) {
        return Err("a segment of input was not written within an hour".into());
    }
    if let Some(e) = lock(progress).producer_error.clone() {
        return Err(format!("producing the input: {e}"));
    }
    let p = lock(progress);
    say(&format!(
        "input up to chunk {target} written ({} records in all, {:.0} s)",
        p.input_records,
        started.elapsed().as_secs_f64()
    ));
    Ok(())
}

/// Publishes a campaigns file (name, YAML) through the CLI.
type Publish = Box<dyn Fn(&str, &str) -> Result<(), String>>;

/// Between two segments of input: the group processes everything, each task fires what is
/// due by the wall clock, the edit is published and applied by every task, the instances
/// stop, the next segment is written, the instances start again.
struct Barrier {
    progress: progress::SharedProgress,
    fleet: Arc<Mutex<Fleet>>,
    changelog: kafka::Tail,
    decisions: kafka::Tail,
    /// Largest stream time of each task's committed progress records.
    stream_time: Vec<i64>,
    /// (partition, follow-on) → committed DROPPED decisions of the follow-on of `evidence`.
    drops: std::collections::BTreeMap<(i32, String), usize>,
    /// The follow-on whose drops show that the edit under way was applied.
    evidence: String,
    /// No event time of the input is that late: a task whose committed progress shows a
    /// stream time past it has fired by the wall clock.
    run_start: i64,
    deadline: Duration,
    give_up_after: Duration,
    publish: Publish,
    baseline: Vec<String>,
    /// What happened at each barrier, and whether it went as it must.
    log: Vec<(String, bool)>,
}

impl Barrier {
    fn read(&mut self) {
        use campaign_connector::codec::{Codec, EncodingSettings};
        use campaign_connector::model::{Decision, DecisionOutcome, TaskStateRecord, PROGRESS_KEY};
        let avro = EncodingSettings::avro();
        let codec: Codec<TaskStateRecord> = Codec::new("changelog", &avro).expect("state codec");
        let st = &mut self.stream_time;
        self.changelog
            .poll_for(Duration::from_millis(500), |p, key, value| {
                if key == Some(PROGRESS_KEY.as_bytes()) {
                    if let Some(t) = value
                        .and_then(|v| codec.decode(v).ok())
                        .and_then(|r| r.progress)
                    {
                        st[p as usize] = st[p as usize].max(t.stream_time);
                    }
                }
            });
        let codec: Codec<Decision> = Codec::new("decisions", &avro).expect("decision codec");
        let drops = &mut self.drops;
        let evidence = self.evidence.as_bytes();
        self.decisions
            .poll_for(Duration::from_millis(500), |p, _, value| {
                // Only decisions that name the edit's follow-on are decoded.
                let Some(v) = value.filter(|v| {
                    !evidence.is_empty() && v.windows(evidence.len()).any(|w| w == evidence)
                }) else {
                    return;
                };
                if let Ok(d) = codec.decode(v) {
                    if d.outcome == DecisionOutcome::Dropped {
                        *drops.entry((p, d.follow_on_id)).or_default() += 1;
                    }
                }
            });
    }

    /// Waits (reading the tails) until `done` or the deadline.
    fn wait(&mut self, deadline: Duration, done: impl Fn(&Self) -> bool) -> bool {
        let started = Instant::now();
        loop {
            self.read();
            if done(self) {
                return true;
            }
            if started.elapsed() > deadline {
                return false;
            }
        }
    }

    fn pass(
        &mut self,
        edit: &catalog::Edit,
        next_end: usize,
        stop_input: &AtomicBool,
    ) -> Result<(), String> {
        say(&format!("barrier before the {} edit", edit.name));
        self.evidence = edit.evidence.to_string();
        let ends = lock(&self.progress).ends.clone();
        let limit = self.give_up_after;
        let drained = wait_until(&self.progress, self.deadline * 2, |p| {
            p.reached(&ends) || p.stalled_for() > limit
        }) && lock(&self.progress).reached(&ends);
        if give_up(&self.progress, stop_input, limit) {
            return Ok(());
        }
        // Every task's clock must be past all event time before the next segment: at the
        // first barrier each task holds a probe timer that is due and fires by the wall
        // clock, and its committed progress then shows a stream time at the wall clock.
        let since = self.run_start;
        let fired = self.wait(self.deadline, |b| b.stream_time.iter().all(|t| *t >= since));
        let late: Vec<usize> = (0..self.stream_time.len())
            .filter(|t| self.stream_time[*t] < since)
            .collect();
        // The oracle applies the edit at the same point (and says what it drops), then the
        // connector gets it.
        lock(&self.progress).edit_requested = Some(edit.at_chunk);
        let name = edit.name;
        wait_until(&self.progress, Duration::from_secs(60), |p| {
            p.edit_drops.iter().any(|(n, _, _)| n == name) || p.producer_error.is_some()
        });
        let expected = lock(&self.progress)
            .edit_drops
            .iter()
            .find(|(n, _, _)| n == edit.name)
            .map(|(_, _, d)| d.clone())
            .ok_or_else(|| format!("the oracle did not apply the {} edit", edit.name))?;
        (self.publish)(edit.name, &edit.yaml)?;
        let evidence = edit.evidence.to_string();
        let applied = self.wait(self.deadline, |b| {
            expected.iter().enumerate().all(|(p, n)| {
                b.drops
                    .get(&(p as i32, evidence.clone()))
                    .copied()
                    .unwrap_or(0)
                    >= *n
            })
        });
        // The instances stop while the next segment is written (see background.rs).
        let stopped: Vec<(String, Option<i32>)> = {
            let mut f = self.fleet.lock().expect("fleet");
            f.running()
                .into_iter()
                .map(|id| {
                    let code = f.stop(&id, Duration::from_secs(60));
                    (id, code)
                })
                .collect()
        };
        write_segment(&self.progress, next_end)?;
        {
            let mut f = self.fleet.lock().expect("fleet");
            for id in &self.baseline {
                f.start(id)?;
            }
        }
        // The pause was the harness's: no progress was to be expected meanwhile.
        lock(&self.progress).last_progress = Some(Instant::now());
        let ok = drained && fired && applied;
        let what = format!(
            "{} edit: input drained {drained}; every task's clock past all event time {fired}{}; edit applied by every task {applied} ({} drops of {evidence} expected); instances stopped {stopped:?} and restarted",
            edit.name,
            if late.is_empty() { String::new() } else { format!(" (not tasks {late:?})") },
            expected.iter().sum::<usize>()
        );
        say(&what);
        self.log.push((what, ok));
        Ok(())
    }
}

/// The workload and the oracle without Kafka: what a run would produce and expect, and
/// which rule shapes it exercises.
fn dry_run(args: &Args) -> Result<(), String> {
    let mut prof = profile(&args.profile).ok_or(format!("unknown profile {}", args.profile))?;
    if let Some(e) = args.events {
        prof.shape.events = e;
    }
    let repo = std::fs::canonicalize(&args.repo).map_err(|e| format!("--repo: {e}"))?;
    let run_start = now_ms();
    let timeline = Timeline::new(run_start, prof.chunks);
    if !catalog::assumptions_hold(&timeline) {
        return Err("the workload's time window does not fit the run".into());
    }
    let limits = Limits::default();
    let schema_dir = repo.join("tests/fixtures/writer_schemas");
    let campaigns = parse_campaigns(&catalog::initial(&timeline), "campaigns.yaml", &limits)
        .map_err(|e| e.to_string())?;
    let topics = ["interactions".to_string(), "user-events".to_string()];
    let mut oracle = oracle::Oracle::new(
        PARTITIONS as usize,
        limits,
        topics.clone(),
        &schema_dir,
        &campaigns,
        run_start,
    )?;
    let edits = catalog::edits(&timeline);
    let encoders = encode::Encoders::new(
        &schema_dir,
        &repo.join("tools/chaos/schemas/interaction_v3.avsc"),
    )?;
    let mut generator = Generator::new(
        args.seed,
        timeline,
        prof.shape,
        encoders,
        &edits,
        args.poison.clone(),
        PARTITIONS,
    );
    let mut offsets = [[0i64; PARTITIONS as usize]; 2];
    let mut records = 0;
    for k in 0..prof.chunks {
        for e in edits.iter().filter(|e| e.at_chunk == k) {
            let c = parse_campaigns(&e.yaml, e.name, &limits).map_err(|x| x.to_string())?;
            oracle.barrier(run_start);
            let drops = oracle.apply_campaigns(&c, run_start, e.evidence)?;
            println!("edit {}: drops of {} by task {drops:?}", e.name, e.evidence);
        }
        let chunk = generator.next_chunk();
        records += chunk.len();
        let landed: Vec<oracle::Landed<'_>> = chunk
            .iter()
            .map(|r| {
                let p = workload::partition_of(r.key.as_bytes(), PARTITIONS);
                let o = &mut offsets[r.role as usize][p as usize];
                *o += 1;
                oracle::Landed {
                    role: r.role,
                    partition: p,
                    offset: *o - 1,
                    content: &r.content,
                    value: &r.value,
                }
            })
            .collect();
        oracle.chunk(&landed, run_start);
    }
    oracle.finish(run_start);
    println!(
        "{records} records, {} events processed, {} send-commands, {} decisions, {} dead letters, {} pending at the end",
        oracle.events,
        oracle.sends.len(),
        oracle.decisions.len(),
        oracle.dead_letters.len(),
        oracle.pending()
    );
    for (what, n) in oracle.coverage() {
        println!("{n:>9}  {what}");
    }
    for (kind, n) in &generator.poison_counts {
        println!("{n:>9}  poison: {}", kind.name());
    }
    for (writer, n) in &generator.writer_counts {
        println!("{n:>9}  records by {writer}");
    }
    for m in oracle.codec_mismatches.iter().take(5) {
        println!("codec mismatch: {m}");
    }
    Ok(())
}

/// When the group has committed nothing for `limit` with work to do, stops the input (the
/// producer ends after its current chunk) and records why. Returns whether it gave up.
fn give_up(progress: &progress::SharedProgress, stop: &AtomicBool, limit: Duration) -> bool {
    let mut p = lock(progress);
    if p.gave_up.is_none() && p.stalled_for() > limit {
        let (lo, hi) = p.chunk_span();
        let why = format!(
            "no offset committed for {:?} with {} records to process (partitions in chunks {lo}..{hi}); the run stopped its input and went on to verify",
            p.stalled_for(),
            p.total_lag()
        );
        say(&why);
        p.gave_up = Some(why);
        stop.store(true, Ordering::Relaxed);
    }
    p.gave_up.is_some()
}

fn run(args: Args) -> Result<Report, String> {
    let started = *STARTED.get_or_init(Instant::now);
    let mut prof = profile(&args.profile).ok_or(format!("unknown profile {}", args.profile))?;
    if let Some(e) = args.events {
        prof.shape.events = e;
    }
    if let Some(n) = args.instances {
        prof.baseline = n;
    }
    if let Some(kb) = args.fetch_limit {
        prof.fetch_kb_per_s = kb;
    }
    if let Some(only) = &args.faults {
        prof.faults.retain(|(k, _)| only.contains(k));
        for k in only {
            if !prof.faults.iter().any(|(x, _)| x == k) {
                prof.faults.push((*k, 1));
            }
        }
    }
    let repo = std::fs::canonicalize(&args.repo).map_err(|e| format!("--repo: {e}"))?;
    let bin = std::fs::canonicalize(&args.bin)
        .map_err(|e| format!("--bin {}: {e}", args.bin.display()))?;
    let run_start = now_ms();
    let timeline = Timeline::new(run_start, prof.chunks);
    if !catalog::assumptions_hold(&timeline) {
        return Err("the workload's time window does not fit the run (see timeline.rs)".into());
    }
    let names = Names::new(args.seed, run_start);
    let work = args
        .work
        .clone()
        .unwrap_or_else(|| repo.join(".cache/chaos").join(&names.id));
    std::fs::create_dir_all(&work).map_err(|e| format!("{}: {e}", work.display()))?;
    let base = args.port_base;
    let port = |node: u16, off: u16| base + 5 * (node - 1) + off;
    let direct: Vec<String> = (1..=3)
        .map(|n| format!("127.0.0.1:{}", port(n, 0)))
        .collect();
    let direct = direct.join(",");
    let proxied: Vec<String> = (1..=3)
        .map(|n| format!("127.0.0.1:{}", port(n, 4)))
        .collect();
    let schema_dir = repo.join("tests/fixtures/writer_schemas");
    say(&format!(
        "profile {}, seed {}, run {}; work dir {}",
        prof.name,
        args.seed,
        names.id,
        work.display()
    ));

    // ---- proxies in front of every broker's CLIENT listener
    let mut proxies = Vec::new();
    for n in 1..=3u16 {
        let listen = format!("127.0.0.1:{}", port(n, 4)).parse().expect("addr");
        let upstream = format!("127.0.0.1:{}", port(n, 3)).parse().expect("addr");
        proxies.push(
            proxy::Proxy::start(listen, upstream)
                .map_err(|e| format!("proxy :{}: {e}", port(n, 4)))?,
        );
    }

    // Only the group members' fetches (their client id is the instance id): restores and
    // the catalog read at full speed.
    let members: Vec<String> = (0..4).map(|i| format!("i{i}")).collect();
    for p in &proxies {
        p.limit_fetch(prof.fetch_kb_per_s * 1024, &members);
    }
    say(&format!(
        "proxies: {}",
        proxies
            .iter()
            .enumerate()
            .map(|(i, p)| format!("{} → node {}", p.listen, i + 1))
            .collect::<Vec<_>>()
            .join(", ")
    ));

    // ---- topics and the catalog, through the direct listener
    let admin_config = work.join("admin.yaml");
    std::fs::write(
        &admin_config,
        format!(
            "instance_id: chaos-admin\nhttp_listen: \"\"\n{}",
            names.config(&direct, &schema_dir)
        ),
    )
    .map_err(|e| e.to_string())?;
    cli(&bin, &["topics", "create"], &admin_config)?;
    let initial_yaml = catalog::initial(&timeline);
    let initial_file = work.join("campaigns.yaml");
    std::fs::write(&initial_file, &initial_yaml).map_err(|e| e.to_string())?;
    let limits = Limits::default();
    let campaigns =
        parse_campaigns(&initial_yaml, "campaigns.yaml", &limits).map_err(|e| e.to_string())?;
    cli(
        &bin,
        &["campaigns", "publish", &initial_file.display().to_string()],
        &admin_config,
    )?;
    let edits = catalog::edits(&timeline);

    // ---- shared state, producer
    let segment_ends: Vec<usize> = edits
        .iter()
        .map(|e| e.at_chunk)
        .chain([prof.chunks])
        .collect();
    let progress = Arc::new(Mutex::new(Progress {
        inputs: (0..PARTITIONS)
            .map(|p| (names.interactions.clone(), p))
            .chain((0..PARTITIONS).map(|p| (names.user_events.clone(), p)))
            .collect(),
        ends: vec![0; 2 * PARTITIONS as usize],
        committed: vec![0; 2 * PARTITIONS as usize],
        target_chunk: segment_ends[0],
        ..Progress::default()
    }));
    let oracle = oracle::Oracle::new(
        PARTITIONS as usize,
        limits,
        [names.interactions.clone(), names.user_events.clone()],
        &schema_dir,
        &campaigns,
        run_start,
    )?;
    let encoders = encode::Encoders::new(
        &schema_dir,
        &repo.join("tools/chaos/schemas/interaction_v3.avsc"),
    )?;
    let generator = Generator::new(
        args.seed,
        timeline,
        prof.shape,
        encoders,
        &edits,
        args.poison.clone(),
        PARTITIONS,
    );
    let stop = Arc::new(AtomicBool::new(false));
    // Ends the input early (the run gives up); `stop` ends the background threads.
    let stop_input = Arc::new(AtomicBool::new(false));
    let producer = background::spawn_producer(
        background::ProducerJob {
            generator,
            producer: kafka::WorkloadProducer::new(&direct)?,
            oracle,
            topics: [names.interactions.clone(), names.user_events.clone()],
            partitions: PARTITIONS,
            edits: edits
                .iter()
                .map(|e| {
                    (
                        e.at_chunk,
                        e.name.to_string(),
                        e.yaml.clone(),
                        e.evidence.to_string(),
                    )
                })
                .collect(),
            limits,
            now: run_start,
        },
        progress.clone(),
        stop_input.clone(),
    );
    write_segment(&progress, segment_ends[0])?;

    // ---- connector instances, monitor
    // The baseline, and spares up to three instances (storms go to three).
    let ids: Vec<String> = (0..(prof.baseline + 1).max(3))
        .map(|i| format!("i{i}"))
        .collect();
    let fleet = Arc::new(Mutex::new(Fleet::new(FleetConfig {
        bin: bin.clone(),
        dir: work.clone(),
        common_yaml: names.config(&proxied.join(","), &schema_dir),
        http_base: base + 15,
    })));
    for id in &ids[..prof.baseline] {
        fleet.lock().expect("fleet").start(id)?;
    }
    let monitor = background::spawn_monitor(
        kafka::GroupOffsets::new(&direct, &names.app_id)?,
        kafka::Watermarks::new(&direct, &names.changelog, PARTITIONS)?,
        progress.clone(),
        fleet.clone(),
        stop.clone(),
    );
    let mut barrier = Barrier {
        progress: progress.clone(),
        fleet: fleet.clone(),
        changelog: kafka::Tail::new(&direct, &names.changelog, PARTITIONS)?,
        decisions: kafka::Tail::new(&direct, &names.decisions, PARTITIONS)?,
        stream_time: vec![i64::MIN; PARTITIONS as usize],
        drops: Default::default(),
        evidence: String::new(),
        run_start,
        deadline: prof.recover_deadline,
        give_up_after: prof.give_up_after,
        publish: Box::new({
            let (bin, config, dir) = (bin.clone(), admin_config.clone(), work.clone());
            move |name: &str, yaml: &str| {
                let file = dir.join(format!("edit-{name}.yaml"));
                std::fs::write(&file, yaml).map_err(|e| e.to_string())?;
                cli(
                    &bin,
                    &["campaigns", "publish", &file.display().to_string()],
                    &config,
                )
                .map(|_| ())
            }
        }),
        baseline: ids[..prof.baseline].to_vec(),
        log: Vec::new(),
    };

    // ---- faults, and the barriers between segments
    let mut rng = Rng::new(args.seed).fork("faults");
    let plan = schedule(&mut rng, &prof.faults, prof.chunks);
    let mut injector = Injector {
        fleet: fleet.clone(),
        progress: progress.clone(),
        proxies,
        cluster: kafka::Cluster::new(&direct)?,
        cluster_script: repo.join("scripts/kafka/cluster.sh"),
        app_id: names.app_id.clone(),
        interactions_topic: names.interactions.clone(),
        baseline: ids[..prof.baseline].to_vec(),
        spares: ids[prof.baseline..].to_vec(),
        stall: prof.stall,
        recover_deadline: prof.recover_deadline,
        rng: rng.fork("targets"),
        broker_faults: 0,
    };
    let mut outcomes: Vec<Outcome> = Vec::new();
    let mut late_faults = 0;
    let mut segment = 0;
    for (i, (chunk, kind)) in plan.iter().enumerate() {
        while *chunk >= segment_ends[segment] && segment + 1 < segment_ends.len() {
            injector.ensure_baseline();
            barrier.pass(&edits[segment], segment_ends[segment + 1], &stop_input)?;
            segment += 1;
        }
        // The moment: the group has committed the input up to that chunk.
        wait_until(&progress, Duration::from_secs(3600), |p| {
            p.chunk_starts
                .get(*chunk)
                .is_some_and(|s| p.committed.iter().sum::<i64>() >= s.iter().sum::<i64>())
                || p.stalled_for() > prof.give_up_after
        });
        if give_up(&progress, &stop_input, prof.give_up_after) {
            break;
        }
        if lock(&progress).fraction_done() >= 1.0 {
            late_faults += 1;
        }
        for r in injector.ensure_baseline() {
            say(&format!("before fault {}: {r}", i + 1));
        }
        std::thread::sleep(Duration::from_millis(rng.range(0, 2_000) as u64));
        let (lag, span) = {
            let p = lock(&progress);
            (p.total_lag(), p.chunk_span())
        };
        say(&format!(
            "fault {}/{} at chunk {chunk} (partitions in chunks {}..{}, lag {lag}): {}",
            i + 1,
            plan.len(),
            span.0,
            span.1,
            kind.title()
        ));
        outcomes.push(injector.inject(*kind));
    }
    while segment + 1 < segment_ends.len() && lock(&progress).gave_up.is_none() {
        injector.ensure_baseline();
        barrier.pass(&edits[segment], segment_ends[segment + 1], &stop_input)?;
        segment += 1;
    }
    for r in injector.ensure_baseline() {
        say(&format!("after the faults: {r}"));
    }

    // ---- the end of the input, then the drain
    stop_input.store(true, Ordering::Relaxed);
    wait_until(&progress, Duration::from_secs(600), |p| p.producer_done);
    let (mut oracle, generator) = producer
        .join()
        .map_err(|_| "the producer thread panicked".to_string())?;
    oracle.finish(run_start);
    say(&format!(
        "waiting for the group to process all input and send {} commands",
        oracle.sends.len()
    ));
    let ends = lock(&progress).ends.clone();
    let drained = wait_until(&progress, prof.recover_deadline * 2, |p| {
        p.reached(&ends) || p.stalled_for() > prof.give_up_after
    }) && lock(&progress).reached(&ends);
    let mut sends = kafka::Tail::new(&direct, &names.send_commands, PARTITIONS)?;
    let mut visible = 0;
    let tail_started = Instant::now();
    while visible < oracle.sends.len() && tail_started.elapsed() < Duration::from_secs(180) {
        sends.poll_for(Duration::from_millis(500), |_, _, _| visible += 1);
    }
    say(&format!(
        "drained: {drained}; {visible} of {} commands visible; stopping the instances",
        oracle.sends.len()
    ));
    stop.store(true, Ordering::Relaxed);
    let _ = monitor.join();
    let changelog_cut = lock(&progress).changelog_cut.clone();
    {
        let mut f = fleet.lock().expect("fleet");
        for id in f.running() {
            f.stop(&id, Duration::from_secs(60));
        }
    }

    // ---- verification
    say("reading every output with read_committed to its end offsets");
    let verification = verify::verify(
        &direct,
        &verify::Topics {
            send_commands: names.send_commands.clone(),
            dlq: names.dlq.clone(),
            decisions: names.decisions.clone(),
            changelog: names.changelog.clone(),
        },
        &oracle,
        &changelog_cut,
        run_start,
    )?;

    // ---- checks
    let p = lock(&progress);
    let f = fleet.lock().expect("fleet");
    let mut checks = Vec::new();
    let v = &verification;
    checks.push(Check::new(
        "every expected send-command is present",
        v.commands.missing == 0,
        v.commands.of(&["MISSING"]),
    ));
    checks.push(Check::new(
        "no unexpected send-command, and each carries the expected content",
        v.commands.extra == 0 && v.commands.different == 0,
        v.commands.of(&["EXTRA", "DIFFERENT"]),
    ));
    checks.push(Check::new(
        "no command_id twice",
        v.commands.duplicated == 0,
        v.commands.of(&["DUPLICATE"]),
    ));
    checks.push(Check::new(
        "every poison record dead-lettered exactly once",
        v.dead_letters.missing == 0 && v.dead_letters.duplicated == 0,
        v.dead_letters.of(&["MISSING", "DUPLICATE"]),
    ));
    let wrong_class: Vec<String> = v
        .poison
        .iter()
        .filter(|(kind, (_, _, classes))| classes.iter().any(|c| c != kind.class()))
        .map(|(kind, (_, _, classes))| {
            format!("{}: {classes:?}, expected {}", kind.name(), kind.class())
        })
        .collect();
    checks.push(Check::new(
        "each dead letter names its error class (an incompatible writer schema: undecodable)",
        wrong_class.is_empty(),
        wrong_class,
    ));
    checks.push(Check::new(
        "nothing valid dead-lettered",
        v.dead_letters.extra == 0,
        v.dead_letters.of(&["EXTRA"]),
    ));
    checks.push(Check::new(
        "the decision log equals the engine's",
        v.decisions.clean(),
        v.decisions.examples.clone(),
    ));
    checks.push(Check::new(
        format!(
            "the final changelog state equals the engine's ({} users, {} pending sends)",
            v.state.expected, v.pending_expected
        ),
        v.state.clean(),
        v.state.examples.clone(),
    ));
    checks.push(Check::new(
        "no task fired by the wall clock before its input ended",
        v.early_wall_clock.is_empty(),
        v.early_wall_clock.clone(),
    ));
    checks.push(Check::new(
        "no instance exited on its own (crash)",
        f.crashes.is_empty(),
        f.crashes
            .iter()
            .map(|c| {
                format!(
                    "{} at +{:.0} s: {}; log {}: {}",
                    c.instance,
                    c.at.duration_since(started).as_secs_f64(),
                    c.status,
                    c.log.display(),
                    c.tail.lines().last().unwrap_or("")
                )
            })
            .collect(),
    ));
    let bad_stops: Vec<String> = f
        .clean_stops
        .iter()
        .filter(|(_, code, in_time)| *code != Some(0) || !in_time)
        .map(|(id, code, in_time)| {
            format!(
                "{id}: exit {code:?}{}",
                if *in_time { "" } else { " (killed after 60 s)" }
            )
        })
        .collect();
    checks.push(Check::new(
        "every SIGTERM ends in a clean exit 0",
        bad_stops.is_empty(),
        bad_stops,
    ));
    let unrecovered: Vec<String> = outcomes
        .iter()
        .filter(|o| o.recovered_after.is_none())
        .map(|o| format!("{}: {}", o.kind.title(), o.detail))
        .collect();
    checks.push(Check::new(
        format!(
            "every fault recovered within {:?} (and the input was processed to its end)",
            prof.recover_deadline
        ),
        unrecovered.is_empty() && drained,
        unrecovered,
    ));
    checks.push(Check::new(
        "every task's partitions are held by one member in every stable assignment",
        p.split_tasks.is_empty(),
        p.split_tasks
            .iter()
            .take(5)
            .map(|(t, tasks)| {
                format!(
                    "+{:.0} s: tasks {tasks:?} split between members",
                    t.duration_since(started).as_secs_f64()
                )
            })
            .chain(std::iter::once(format!(
                "{} observations",
                p.split_tasks.len()
            )))
            .collect(),
    ));
    let not_injected: Vec<String> = outcomes
        .iter()
        .filter(|o| !o.injected)
        .map(|o| format!("{}: {}", o.kind.title(), o.detail))
        .collect();
    checks.push(Check::new(
        "the group kept making progress",
        p.gave_up.is_none(),
        p.gave_up.iter().cloned().collect(),
    ));
    checks.push(Check::new(
        "harness: every fault injected as meant",
        not_injected.is_empty(),
        not_injected,
    ));
    checks.push(Check::new(
        "harness: the input was produced in full",
        p.producer_error.is_none(),
        p.producer_error.iter().cloned().collect(),
    ));
    checks.push(Check::new(
        "harness: every record decodes to what was written (workload cross-check)",
        oracle.codec_mismatches.is_empty(),
        oracle.codec_mismatches.iter().take(5).cloned().collect(),
    ));
    checks.push(Check::new(
        "every barrier: input drained, every task's clock past the input, the edit applied by every task",
        barrier.log.len() == edits.len() && barrier.log.iter().all(|(_, ok)| *ok),
        barrier.log.iter().map(|(what, _)| what.clone()).collect(),
    ));

    let accepted: u64 = injector.proxies.iter().map(proxy::Proxy::accepted).sum();
    let fetched: u64 = injector.proxies.iter().map(proxy::Proxy::fetch_bytes).sum();
    let refused: u64 = injector.proxies.iter().map(proxy::Proxy::refused).sum();
    let poison: usize = generator.poison_counts.values().sum();
    let mut extra_rows = vec![(
        "poison records (undecodable, out-of-range times, 2099, v3, key, empty user)".to_string(),
        poison,
        format!(
            "1 in {} records, each kind at least once",
            prof.shape.poison_every
        ),
    )];
    for (writer, n) in &generator.writer_counts {
        extra_rows.push((format!("records by {writer}"), *n, String::new()));
    }
    extra_rows.push((
        "catalog edits mid-run (stop, restart, new versions, archive)".into(),
        barrier.log.len(),
        String::new(),
    ));
    let faults_arg = match &args.faults {
        None => String::new(),
        Some(list) => format!(
            " --faults {}",
            if list.is_empty() {
                "none".to_string()
            } else {
                list.iter().map(|k| k.key()).collect::<Vec<_>>().join(",")
            }
        ),
    };
    let report = Report {
        profile: prof.name.into(),
        seed: args.seed,
        machine: machine(),
        setup: vec![
            format!(
                "cluster: 3 Kafka brokers (KRaft, each also a controller), RF 3, min ISR 2, connector traffic through 3 TCP proxies"
            ),
            format!(
                "workload: {} input records ({} events processed by the engine), {} users, {} chunks, {PARTITIONS} partitions; event time {} .. {}",
                p.input_records,
                oracle.events,
                prof.shape.users,
                prof.chunks,
                campaign_connector::time::format_timestamp(timeline.t0),
                campaign_connector::time::format_timestamp(timeline.t1)
            ),
            format!(
                "connector: {} instances between faults (dynamic membership, exactly_once, commit 100 ms), a spare for storms; {} faults{}",
                prof.baseline,
                outcomes.len(),
                if late_faults > 0 { format!(" ({late_faults} after the input ended)") } else { String::new() }
            ),
            format!(
                "expected: {} send-commands, {} decisions, {} dead letters, {} pending sends at the end",
                oracle.sends.len(),
                oracle.decisions.len(),
                oracle.dead_letters.len(),
                oracle.pending()
            ),
            format!(
                "proxies: {accepted} connections accepted, {refused} refused by a broker that was down; {} MB of fetch responses{}",
                fetched / (1 << 20),
                if prof.fetch_kb_per_s > 0 {
                    format!(", at most {} KB/s per broker", prof.fetch_kb_per_s)
                } else {
                    String::new()
                }
            ),
            format!("logs and configs: {}", work.display()),
        ],
        outcomes,
        extra_rows,
        verification: Some(verification),
        checks,
        elapsed: started.elapsed(),
        reproduce: std::env::var("CHAOS_REPRODUCE").unwrap_or_else(|_| {
            format!(
                "scripts/chaos.sh --profile {} --seed {}{faults_arg}",
                prof.name, args.seed
            )
        }),
    };
    drop(p);
    drop(f);
    print!("{}", report.text());
    let md = report.markdown();
    let md_path = args
        .report
        .clone()
        .unwrap_or_else(|| work.join("report.md"));
    std::fs::write(&md_path, md).map_err(|e| format!("{}: {e}", md_path.display()))?;
    say(&format!("report: {}", md_path.display()));
    Ok(report)
}
