//! Engine benchmark: prints a table. Run with `cargo bench --bench engine` (release build).
//!
//! - throughput: events/s on one core for a realistic mix (1 M users; ~30 % of events are
//!   triggers that schedule, ~30 % of timers are cancelled by a purchase; the rest is
//!   unrelated traffic; event time spans three days so timers also fire), the events
//!   generated a chunk at a time outside the measured time, as the connector decodes a batch;
//! - memory: resident bytes per pending timer at 1 M and 10 M pending, measured as the RSS
//!   delta over N in a fresh child process each (20-character user ids);
//! - rebuild: time to restore an engine from 10 M changelog state records, encoded as the
//!   connector writes them and read in place as its restore reads them; as is, with the
//!   tables sized first, and sized with each user prefetched eight records ahead (as the
//!   restore does). Each variant runs in a fresh child process: run one after another in
//!   one process, a later one reused the pages an earlier one had faulted in and freed.
//!
//! `--quick` divides every size by 10 (for a smoke run). `--only NAME` runs one part.

use std::collections::BTreeMap;
use std::process::Command;
use std::time::Instant;

use campaign_connector::codec::{read_state_datum, Codec, EncodingSettings};
use campaign_connector::engine::Engine;
use campaign_connector::model::*;
use campaign_connector::validate::Limits;

/// The product binary's allocator, so that the figures are the product's.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

const DAY_MS: i64 = 86_400_000;
/// How many records ahead the restore starts loading a user's place in the index (as the
/// connector's restore does).
const PREFETCH_AHEAD: usize = 8;
const START: i64 = 1_767_225_600_000; // 2026-01-01T00:00:00Z

fn campaign(id: &str, follow_on: Option<FollowOnRule>) -> Campaign {
    Campaign {
        backfill_since: None,
        mode: Default::default(),
        campaign_id: id.into(),
        name: id.into(),
        kind: CampaignKind::Campaign,
        status: CampaignStatus::Active,
        version: 1,
        published_at: Some(START - DAY_MS),
        starts_at: None,
        ends_at: None,
        follow_on,
    }
}

fn cart_follow_on() -> Campaign {
    campaign(
        "abandoned-cart-email",
        Some(FollowOnRule {
            trigger: Trigger {
                campaign_id: "abandoned-cart".into(),
                kinds: vec![InteractionKind::PushReceived],
                qualifier: None,
            },
            delay: Delay::after_seconds(86_400),
            time_zone: None,
            exceptions: vec![
                ExceptionMatcher {
                    exception_type: ExceptionType::Purchase,
                    campaign_id: None,
                    interaction_kinds: vec![],
                    name: None,
                },
                ExceptionMatcher {
                    exception_type: ExceptionType::Interaction,
                    campaign_id: None,
                    interaction_kinds: vec![InteractionKind::PushDirectOpen],
                    name: None,
                },
            ],
            reeligibility: Reeligibility {
                policy: ReeligibilityPolicy::After,
                seconds: Some(86_400),
            },
            on_repeat_trigger: RepeatTrigger::KeepFirst,
            overdue: Overdue {
                policy: OverduePolicy::Send,
                seconds: None,
            },
            message: Message {
                channel: Channel::Email,
                template_id: "cart-15-off".into(),
                payload: BTreeMap::from([("discount".into(), "15".into())]),
            },
        }),
    )
}

fn engine() -> Engine {
    let mut e = Engine::new(Limits::default());
    let mut out = Vec::new();
    for c in [
        campaign("abandoned-cart", None),
        campaign("newsletter", None),
        cart_follow_on(),
    ] {
        e.apply_campaign(&c, START, &mut out).unwrap();
    }
    e
}

/// A 20-character user id.
fn user_id(n: u64) -> String {
    format!("user-{n:015}")
}

/// A small deterministic generator (xorshift), so runs are comparable.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

fn interaction(seq: u64, user: u64, campaign: &str, kind: InteractionKind, t: i64) -> InputEvent {
    InputEvent::Interaction(Interaction {
        event_id: format!("ev-{seq:017}"),
        user_id: user_id(user),
        campaign_id: campaign.into(),
        kind,
        qualifier: None,
        occurred_at: t,
        user_time_zone: None,
        properties: BTreeMap::new(),
    })
}

fn user_event(seq: u64, user: u64, event_type: UserEventType, t: i64) -> InputEvent {
    InputEvent::UserEvent(UserEvent {
        event_id: format!("ev-{seq:017}"),
        user_id: user_id(user),
        event_type,
        name: Some("sku-42".into()),
        occurred_at: t,
        user_time_zone: None,
        properties: BTreeMap::new(),
    })
}

/// The mix: 30 % cart pushes (triggers, each user once a pass), 12 % purchases by users who
/// got a push in the last hours (cancelling ~30 % of timers), 58 % unrelated traffic
/// (newsletter opens and clicks, session starts) over 1 M users and three days of event
/// time. Generated a chunk at a time, as the connector decodes its records a batch at a
/// time: the engine gets its input from a buffer in cache, not from a pass of hundreds of
/// megabytes built beforehand (reading that from memory is no cost the connector has).
struct Workload {
    rng: Rng,
    events: u64,
    users: u64,
    start: i64,
    seq: u64,
    recent: Vec<u64>,
    triggers: u64,
}

impl Workload {
    fn new(events: u64, users: u64, start: i64) -> Self {
        Workload {
            rng: Rng(0x9e37_79b9_7f4a_7c15),
            events,
            users,
            start,
            seq: 0,
            recent: Vec::with_capacity(4096),
            triggers: 0,
        }
    }

    /// Fills `chunk` with the next `n` events (fewer at the end of the pass).
    fn fill(&mut self, chunk: &mut Vec<InputEvent>, n: usize) {
        chunk.clear();
        while chunk.len() < n && self.seq < self.events {
            let event = self.next_event();
            chunk.push(event);
        }
    }

    fn next_event(&mut self) -> InputEvent {
        let (seq, users) = (self.seq, self.users);
        self.seq += 1;
        let span = 3 * DAY_MS;
        let t = self.start + (seq as i64 * span) / self.events as i64;
        let rng = &mut self.rng;
        let roll = rng.next() % 100;
        let user = rng.next() % users;
        let recent = &mut self.recent;
        if roll < 30 {
            // Each user gets the cart push once (a scrambled walk over all users), so
            // that every trigger schedules.
            let user = (self.triggers * 7_919) % users;
            self.triggers += 1;
            if recent.len() < 4096 {
                recent.push(user);
            } else {
                recent[(rng.next() % 4096) as usize] = user;
            }
            interaction(
                seq,
                user,
                "abandoned-cart",
                InteractionKind::PushReceived,
                t,
            )
        } else if roll < 42 && !recent.is_empty() {
            let buyer = recent[(rng.next() % recent.len() as u64) as usize];
            user_event(seq, buyer, UserEventType::Purchase, t)
        } else if roll < 70 {
            interaction(seq, user, "newsletter", InteractionKind::EmailOpen, t)
        } else if roll < 85 {
            interaction(seq, user, "newsletter", InteractionKind::EmailClick, t)
        } else {
            user_event(seq, user, UserEventType::SessionStart, t)
        }
    }
}

/// Events generated at a time (outside the measured time), about as many as the connector
/// reads in one batch.
const CHUNK: usize = 512;

struct Row(String, String, String);

/// Runs a pass of `workload` through the engine; returns events/s (processing only, not
/// generating), the share of events that scheduled a timer and the share of timers
/// cancelled by an exception.
fn run(e: &mut Engine, mut workload: Workload) -> (f64, f64, f64) {
    let mut out = Vec::with_capacity(64);
    let count = |e: &Engine, o| e.counters().outcome_total(o);
    let (s0, c0) = (
        count(e, DecisionOutcome::Scheduled),
        count(e, DecisionOutcome::Cancelled),
    );
    let mut chunk = Vec::with_capacity(CHUNK);
    let mut elapsed = 0.0;
    let mut events = 0;
    loop {
        workload.fill(&mut chunk, CHUNK);
        if chunk.is_empty() {
            break;
        }
        events += chunk.len();
        let started = Instant::now();
        for (i, event) in chunk.iter().enumerate() {
            // As the connector does with its buffered records.
            if let Some(ahead) = chunk.get(i + PREFETCH_AHEAD) {
                e.prefetch_user(ahead.user_id());
            }
            e.process(event, None, event.occurred_at(), &mut out)
                .expect("bench events are in the event-time range");
            out.clear();
        }
        elapsed += started.elapsed().as_secs_f64();
    }
    let scheduled = (count(e, DecisionOutcome::Scheduled) - s0) as f64;
    let cancelled = (count(e, DecisionOutcome::Cancelled) - c0) as f64;
    (
        events as f64 / elapsed,
        scheduled / events as f64,
        cancelled / scheduled.max(1.0),
    )
}

fn throughput(scale: u64, rows: &mut Vec<Row>) {
    let users = 1_000_000 / scale;
    let events = 3_300_000 / scale;
    for decision_log in [true, false] {
        let mut e = engine();
        e.set_decision_log(decision_log);
        let cold = run(&mut e, Workload::new(events, users, START));
        let warm = run(&mut e, Workload::new(events, users, START + 3 * DAY_MS));
        let log = if decision_log {
            "with decision log"
        } else {
            "no decision log"
        };
        for ((rate, sched, cancel), phase, target) in [
            (cold, "cold: state grows from empty", "≥ 2 M/s"),
            (warm, "warm: steady state", "≥ 3 M/s"),
        ] {
            rows.push(Row(
                format!("events/s, {log}, {phase}"),
                format!(
                    "{:.2} M/s ({:.0} % sched., {:.0} % of timers cancelled)",
                    rate / 1e6,
                    100.0 * sched,
                    100.0 * cancel
                ),
                target.into(),
            ));
        }
    }
    rows.push(Row(
        format!(
            "  workload: {} users, {} events a pass",
            human(users),
            human(events)
        ),
        String::new(),
        String::new(),
    ));
}

fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").expect("/proc/self/statm");
    let pages: u64 = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    pages * 4096
}

/// Runs in a child: schedules `n` timers for `n` users and prints the RSS delta per timer.
fn memory_child(n: u64) {
    let mut e = engine();
    let mut out = Vec::with_capacity(64);
    // Events are generated on the fly so that only the engine's memory grows.
    let before = rss_bytes();
    for i in 0..n {
        let t = START + (i as i64 % 3_600_000);
        let event = interaction(i, i, "abandoned-cart", InteractionKind::PushReceived, t);
        e.process(&event, None, t, &mut out)
            .expect("bench events are in the event-time range");
        out.clear();
    }
    // What the engine holds, as a long-running process settles to: memory freed on the way
    // (each table's previous, smaller allocation) handed back, as the connector does after
    // a restore; mimalloc hands it back by itself only after a delay.
    campaign_connector::runtime::memory::release_freed_memory();
    let after = rss_bytes();
    assert_eq!(e.pending_count() as u64, n);
    println!("{}", (after - before) as f64 / n as f64);
}

fn memory(n: u64, rows: &mut Vec<Row>) {
    let exe = std::env::current_exe().unwrap();
    let output = Command::new(exe)
        .args(["--memory-child", &n.to_string()])
        .output()
        .expect("run memory child");
    let text = String::from_utf8_lossy(&output.stdout);
    let per = text.trim().lines().last().unwrap_or("?").to_string();
    let per: f64 = per.parse().unwrap_or(f64::NAN);
    rows.push(Row(
        format!("memory per pending timer at {} pending", human(n)),
        format!("{per:.1} bytes"),
        "≤ 100 bytes".into(),
    ));
}

/// The rebuild's variants: tables sized first, users prefetched ahead.
const REBUILDS: [(bool, bool); 3] = [(false, false), (true, false), (true, true)];

/// Runs in a child (a fresh heap each, so that no variant reuses pages another one
/// faulted in): restores `n` changelog records — encoded as the connector writes them,
/// read in place as its restore reads them — and prints the seconds it took.
fn rebuild_child(n: u64, variant: usize) {
    let (reserve, prefetch) = REBUILDS[variant];
    let codec: Codec<TaskStateRecord> =
        Codec::new("changelog".to_string(), &EncodingSettings::avro()).unwrap();
    // The changelog's values, back to back, and where each record's user id lies (its
    // key, `u/<user id>`, is what the restore looks ahead at).
    let mut values: Vec<u8> = Vec::with_capacity(n as usize * 96);
    let mut records: Vec<(usize, usize)> = Vec::with_capacity(n as usize);
    for i in 0..n {
        let record = TaskStateRecord {
            user: Some(UserState {
                user_id: user_id(i),
                pending: vec![PendingSendState {
                    follow_on_id: "abandoned-cart-email".into(),
                    follow_on_version: 1,
                    trigger: TriggerRef {
                        campaign_id: "abandoned-cart".into(),
                        kind: InteractionKind::PushReceived,
                        event_id: format!("ev-{i:017}"),
                        occurred_at: START,
                    },
                    due_at: START + DAY_MS + (i as i64 % 3_600_000),
                }],
                receipts: vec![],
            }),
            rule: None,
            progress: None,
        };
        let start = values.len();
        values.extend_from_slice(&codec.encode(&record).unwrap());
        records.push((start, values.len()));
    }
    let ids: Vec<String> = (0..n).map(user_id).collect();
    let mut e = engine();
    let started = Instant::now();
    if reserve {
        e.reserve_users(records.len());
    }
    for (i, &(from, to)) in records.iter().enumerate() {
        if prefetch {
            if let Some(ahead) = ids.get(i + PREFETCH_AHEAD) {
                e.prefetch_user(ahead);
            }
        }
        let view = codec
            .own_datum(&values[from..to])
            .and_then(read_state_datum)
            .expect("a record this build wrote");
        e.restore_parts(view.user.as_ref(), view.stream_time)
            .unwrap();
    }
    let elapsed = started.elapsed().as_secs_f64();
    assert_eq!(e.pending_count() as u64, n);
    println!("{elapsed}");
}

fn rebuild(scale: u64, rows: &mut Vec<Row>) {
    let n = 10_000_000 / scale;
    let exe = std::env::current_exe().unwrap();
    for (variant, (reserve, prefetch)) in REBUILDS.into_iter().enumerate() {
        let output = Command::new(&exe)
            .args(["--rebuild-child", &n.to_string(), &variant.to_string()])
            .output()
            .expect("run rebuild child");
        let text = String::from_utf8_lossy(&output.stdout);
        let elapsed: f64 = text
            .trim()
            .lines()
            .last()
            .and_then(|l| l.parse().ok())
            .unwrap_or(f64::NAN);
        let how = match (reserve, prefetch) {
            (false, _) => "",
            (true, false) => ", tables sized first",
            (true, true) => ", sized, users prefetched ahead",
        };
        rows.push(Row(
            format!("rebuild engine from {} state records{how}", human(n)),
            format!(
                "{elapsed:.2} s ({:.2} M records/s)",
                n as f64 / elapsed / 1e6
            ),
            if scale == 1 {
                "≤ 3 s".into()
            } else {
                "≤ 3 s at 10 M".into()
            },
        ));
    }
}

fn human(n: u64) -> String {
    if n >= 1_000_000 {
        format!("{} M", n / 1_000_000)
    } else {
        format!("{} k", n / 1_000)
    }
}

fn main() {
    campaign_connector::runtime::memory::keep_heap_pages_small();
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--memory-child") {
        memory_child(args[i + 1].parse().unwrap());
        return;
    }
    if let Some(i) = args.iter().position(|a| a == "--rebuild-child") {
        rebuild_child(args[i + 1].parse().unwrap(), args[i + 2].parse().unwrap());
        return;
    }
    let scale = if args.iter().any(|a| a == "--quick") {
        10
    } else {
        1
    };
    let only = args
        .iter()
        .position(|a| a == "--only")
        .map(|i| args[i + 1].clone());
    let run = |name: &str| only.as_deref().is_none_or(|o| o == name);
    let mut rows = Vec::new();
    if run("throughput") {
        throughput(scale, &mut rows);
    }
    if run("memory") {
        memory(1_000_000 / scale, &mut rows);
        memory(10_000_000 / scale, &mut rows);
    }
    if run("rebuild") {
        rebuild(scale, &mut rows);
    }
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    println!("\nengine benchmark (release, one thread; machine: {cpus} cores)\n");
    let w0 = rows.iter().map(|r| r.0.chars().count()).max().unwrap_or(0);
    let w1 = rows.iter().map(|r| r.1.chars().count()).max().unwrap_or(0);
    println!("{:<w0$}  {:<w1$}  target", "measure", "result");
    println!("{}  {}  {}", "-".repeat(w0), "-".repeat(w1), "-".repeat(16));
    for Row(a, b, c) in rows {
        println!("{a:<w0$}  {b:<w1$}  {c}");
    }
}
