//! The benchmark suite: the connector beside a bare rdkafka copy and a Kafka Streams
//! application of the same rule, in one run, on one broker, over the same topics and
//! workload. Prints the tables and writes `docs/benchmarks.md` with a chart.
//!
//! Run it with `scripts/bench.sh` (starts the broker, builds everything, passes the paths
//! below). Parts, in order: `throughput` (every system over one backlog), `lateness` (fire
//! lateness at steady load), `restore` (N pending timers after a restart), `burst` (N timers
//! due in one second), `engine` (`benches/engine.rs`). `BENCH_PARTS=throughput,engine` runs a
//! subset; `BENCH_RUNS="connector: exactly-once, 100 ms|Streams"` only the runs (of every
//! part) whose "system: mode" contains one of the `|`-separated parts.
//!
//! Sizes (environment; `--quick` divides the defaults for a smoke run):
//!
//! | variable | default | `--quick` |
//! |---|---|---|
//! | `BENCH_EVENTS` | 2,000,000 | 100,000 |
//! | `BENCH_USERS` | events / 8 | |
//! | `BENCH_PARTITIONS` | 6 | |
//! | `BENCH_DELAY_S` (the follow-on's delay; event time spans 6 delays) | 86,400 | |
//! | `BENCH_LATENESS_RATE` (events/s) / `BENCH_LATENESS_SECONDS` / `BENCH_LATENESS_DELAY_S` | 5,000 / 60 / 10 | 2,000 / 15 / 5 |
//! | `BENCH_BURST_TIMERS` | 1,000,000 | 50,000 |
//! | `BENCH_RESTORE_TIMERS` | 1,000,000 | 50,000 |
//! | `BENCH_STREAMS_TIMERS` (burst and restore of Kafka Streams) | 200,000 | 50,000 |
//! | `BENCH_STREAMS_THREADS` (`num.stream.threads`) | 1 | |
//! | `BENCH_STREAMS_JVM_OPTS` | `-Xms256m -Xmx1g` | |

#[path = "../common/workload.rs"]
mod workload;

mod kafka;
mod lateness;
mod page;
mod process;
mod report;
mod state;
mod systems;
mod throughput;

use std::cell::Cell;
use std::path::PathBuf;
use std::process::Command;

use kafka::{EventProducer, Inputs};
use page::{load_average, Report};
use process::now_ms;
use report::{thousands, Bar};
use systems::{Env, Kind, Setup};
use workload::{campaigns_yaml, Params, Workload};

pub(crate) fn var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

fn required(name: &str) -> String {
    var(name).unwrap_or_else(|| {
        eprintln!("{name} is not set: run the suite with scripts/bench.sh");
        std::process::exit(2)
    })
}

fn number(name: &str, default: u64) -> u64 {
    match var(name) {
        Some(v) => v.replace('_', "").parse().unwrap_or_else(|_| {
            eprintln!("{name}={v}: a whole number");
            std::process::exit(2)
        }),
        None => default,
    }
}

pub(crate) struct Sizes {
    events: u64,
    users: u64,
    delay_s: i64,
    lateness_rate: u64,
    lateness_seconds: u64,
    lateness_warmup: u64,
    lateness_delay_s: i64,
    burst: u64,
    restore: u64,
    /// Timers of the burst and restore parts for Kafka Streams (slower to ingest).
    streams_timers: u64,
    seed: u64,
    /// Rounds of the main throughput comparison.
    rounds: u64,
}

impl Sizes {
    fn from_env(quick: bool) -> Self {
        let q = |full: u64, quick_value: u64| if quick { quick_value } else { full };
        let events = number("BENCH_EVENTS", q(2_000_000, 100_000));
        Sizes {
            events,
            users: number("BENCH_USERS", (events / 8).max(1)),
            delay_s: number("BENCH_DELAY_S", 86_400) as i64,
            lateness_rate: number("BENCH_LATENESS_RATE", q(5_000, 2_000)),
            lateness_seconds: number("BENCH_LATENESS_SECONDS", q(60, 15)),
            lateness_warmup: number("BENCH_LATENESS_WARMUP_S", q(20, 5)),
            lateness_delay_s: number("BENCH_LATENESS_DELAY_S", q(10, 5)) as i64,
            burst: number("BENCH_BURST_TIMERS", q(1_000_000, 50_000)),
            restore: number("BENCH_RESTORE_TIMERS", q(1_000_000, 50_000)),
            streams_timers: number("BENCH_STREAMS_TIMERS", q(200_000, 50_000)),
            seed: number("BENCH_SEED", 0x5eed),
            rounds: number("BENCH_ROUNDS", q(5, 1)).max(1),
        }
    }
}

pub(crate) const EOS_100: Kind = Kind::Connector {
    exactly_once: true,
    commit_ms: 100,
    decisions: true,
    threads: 0,
};
/// [`EOS_100`] with one processing thread (the throughput and lateness parts run both).
pub(crate) const EOS_100_ONE_THREAD: Kind = Kind::Connector {
    exactly_once: true,
    commit_ms: 100,
    decisions: true,
    threads: 1,
};
pub(crate) const STREAMS_100: Kind = Kind::Streams { commit_ms: 100 };

/// Whether `BENCH_RUNS` (`|`-separated parts, e.g. "connector|copy") selects this system:
/// its "system: mode" contains one of them, or the variable is unset.
fn selected(kind: Kind) -> bool {
    let label = format!("{}: {}", kind.system(), kind.mode());
    var("BENCH_RUNS").is_none_or(|f| f.split('|').any(|x| label.contains(x.trim())))
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let quick = args.iter().any(|a| a == "--quick");
    let sizes = Sizes::from_env(quick);
    let parts =
        var("BENCH_PARTS").unwrap_or_else(|| "throughput,lateness,restore,burst,engine".into());
    let part = |name: &str| parts.split(',').any(|p| p.trim() == name);
    let work_dir = PathBuf::from(var("BENCH_WORK_DIR").unwrap_or_else(|| {
        std::env::temp_dir()
            .join(format!("campaign-bench-{}", std::process::id()))
            .display()
            .to_string()
    }));
    std::fs::create_dir_all(&work_dir).expect("work dir");
    let (first_port, last_port) = var("BENCH_HTTP_PORTS")
        .and_then(|r| {
            let (a, b) = r.split_once('-')?;
            Some((a.parse().ok()?, b.parse().ok()?))
        })
        .unwrap_or((19650u16, 19699u16));
    let env = Env {
        bootstrap: required("KAFKA_BOOTSTRAP"),
        partitions: number("BENCH_PARTITIONS", 6) as i32,
        connector_bin: required("BENCH_CONNECTOR_BIN"),
        copy_bin: required("BENCH_COPY_BIN"),
        streams_classpath: required("BENCH_STREAMS_CP"),
        streams_threads: number("BENCH_STREAMS_THREADS", 1) as u32,
        streams_jvm_opts: var("BENCH_STREAMS_JVM_OPTS")
            .unwrap_or_else(|| "-Xms256m -Xmx1g".into())
            .split_whitespace()
            .map(str::to_string)
            .collect(),
        schemas_dir: var("BENCH_SCHEMAS_DIR")
            .unwrap_or_else(|| concat!(env!("CARGO_MANIFEST_DIR"), "/schemas").to_string()),
        work_dir: work_dir.clone(),
        next_port: Cell::new(first_port),
        last_port,
    };
    let broker_pid: Option<u32> = var("BENCH_BROKER_PID").and_then(|p| p.parse().ok());
    let id = format!("{:x}", now_ms());
    let mut report = Report {
        load_at_start: load_average(),
        ..Report::default()
    };

    // The engine alone first: after the restore part the broker's log cleaner compacts
    // millions of changelog records on the same two cores. `scripts/bench.sh` runs it
    // before the broker starts and hands over its table.
    if part("engine") {
        report.engine = var("BENCH_ENGINE_RESULT")
            .map(|path| {
                std::fs::read_to_string(&path)
                    .unwrap_or_else(|e| panic!("reading the engine benchmark's table {path}: {e}"))
                    .trim()
                    .to_string()
            })
            .or_else(|| {
                var("BENCH_ENGINE_BIN").map(|bin| {
                    eprintln!("[bench] engine alone");
                    let mut c = Command::new(bin);
                    if quick {
                        c.arg("--quick");
                    }
                    let out = c.output().expect("running the engine benchmark");
                    String::from_utf8_lossy(&out.stdout).trim().to_string()
                })
            });
    }

    if part("throughput") {
        throughput_part(&env, &sizes, &id, broker_pid, &mut report);
    }
    if part("lateness") {
        for (i, kind) in [EOS_100, EOS_100_ONE_THREAD, STREAMS_100]
            .into_iter()
            .enumerate()
            .filter(|(_, k)| selected(*k))
        {
            report.lateness.push(lateness::run(
                &env,
                kind,
                &format!("lat-{id}-{i}"),
                &lateness::Load {
                    rate: sizes.lateness_rate,
                    seconds: sizes.lateness_seconds,
                    warmup: sizes.lateness_warmup,
                    delay_s: sizes.lateness_delay_s,
                },
            ));
        }
    }
    if part("restore") {
        let connector = Kind::Connector {
            exactly_once: true,
            commit_ms: 1000,
            decisions: false,
            threads: 0,
        };
        for (i, kind) in [connector, STREAMS_100]
            .into_iter()
            .enumerate()
            .filter(|(_, k)| selected(*k))
        {
            let timers = match kind {
                Kind::Streams { .. } => sizes.streams_timers,
                _ => sizes.restore,
            };
            report.restore.push(state::restore(
                &env,
                kind,
                &format!("restore-{id}-{i}"),
                timers,
            ));
        }
    }
    if part("burst") {
        for (i, kind) in [EOS_100, STREAMS_100]
            .into_iter()
            .enumerate()
            .filter(|(_, k)| selected(*k))
        {
            // Timers per second the system ingests: from the restore part (the same input),
            // else from the main run (1.5 events per timer).
            let rate = report
                .restore
                .iter()
                .find(|r| r.system == kind.system())
                .map(|r| r.timers as f64 / r.ingest_s.max(0.1))
                .or_else(|| {
                    report
                        .rows
                        .iter()
                        .find(|r| r.kind == Some(kind))
                        .map(|r| r.events_per_s / 1.5)
                })
                .unwrap_or(10_000.0);
            let timers = match kind {
                Kind::Streams { .. } => sizes.streams_timers,
                _ => sizes.burst,
            };
            report.burst.push(state::burst(
                &env,
                kind,
                &format!("burst-{id}-{i}"),
                timers,
                rate,
            ));
        }
    }
    report.load_at_end = load_average();
    let tables = report.tables(&sizes);
    println!();
    for t in &tables {
        println!("{}", t.text());
    }
    if let Some(engine) = &report.engine {
        println!("{engine}\n");
    }
    for line in report.targets(&sizes) {
        println!("{line}");
    }
    if let Some(doc) = var("BENCH_DOC") {
        let doc = PathBuf::from(doc);
        let chart = doc.with_extension("svg");
        let bars: Vec<Bar> = report
            .rows
            .iter()
            .map(|r| Bar {
                label: format!("{} — {}", r.system, r.mode),
                system: r.system.clone(),
                events_per_s: r.events_per_s,
                cpu_per_m: r.cpu_per_m,
            })
            .collect();
        if !bars.is_empty() {
            let title = format!(
                "{} events of the follow-on workload, {} partitions, one broker on the same machine",
                thousands(sizes.events as f64),
                env.partitions
            );
            std::fs::write(&chart, report::svg(&title, &bars)).expect("writing the chart");
        }
        let text = report.markdown(&sizes, &env, &tables, quick, chart.file_name());
        std::fs::write(&doc, text).expect("writing the benchmark page");
        eprintln!("[bench] wrote {} and {}", doc.display(), chart.display());
    }
}

fn throughput_part(
    env: &Env,
    sizes: &Sizes,
    id: &str,
    broker_pid: Option<u32>,
    report: &mut Report,
) {
    let prefix = format!("bench-{id}");
    let inputs = Inputs {
        interactions: format!("{prefix}-interactions"),
        user_events: format!("{prefix}-user-events"),
    };
    let campaigns = format!("{prefix}-campaigns");
    let delay_ms = sizes.delay_s * 1000;
    let catalog = Setup::new(
        EOS_100,
        &format!("{prefix}-catalog"),
        &inputs,
        &campaigns,
        delay_ms,
    );
    catalog.publish(env, &campaigns_yaml(delay_ms, delay_ms));

    // Event time spans six delays and ends now, so most timers come due by stream time
    // during the run and the last delay's worth stays pending.
    let span = 6 * delay_ms;
    let step = (span / sizes.events.max(1) as i64).max(1);
    let start = now_ms() - step * sizes.events as i64;
    let mut workload = Workload::new(Params {
        seed: sizes.seed,
        users: sizes.users,
        start_ms: start,
        step_ms: step,
        delay_ms,
        reeligible_ms: delay_ms,
    });
    eprintln!("[bench] producing {} events", sizes.events);
    let started = std::time::Instant::now();
    let mut producer = EventProducer::new(&env.bootstrap, &inputs, 20);
    let mut last = start;
    for _ in 0..sizes.events {
        let (_, event) = workload.next_event();
        last = event.occurred_at();
        producer.send(&event);
    }
    producer.flush();
    report.produce_s = started.elapsed().as_secs_f64();
    // Every partition has records in the last minutes of event time, so every task's stream
    // time passes this cutoff: the sends due by then are exactly the model's.
    let cutoff = last - 600_000;
    let expected = workload.sends_until(cutoff);
    let s = &workload.stats;
    report.workload = format!(
        "{}; {} send-commands due by the end of the stream (less 10 minutes), {} timers pending after it; \
         {} users, delay {} s, re-eligible {} s after a send, event time spanning {:.1} days",
        s.describe(),
        expected.len(),
        workload.pending_after(cutoff),
        sizes.users,
        sizes.delay_s,
        sizes.delay_s,
        span as f64 / 86_400_000.0
    );
    eprintln!("[bench] workload: {}", report.workload);
    let backlog = throughput::Backlog {
        inputs: &inputs,
        campaigns: &campaigns,
        events: sizes.events,
        delay_ms,
        cutoff,
        expected: &expected,
        broker_pid,
    };
    let copy = |exactly_once, commit_ms| Kind::Copy {
        exactly_once,
        commit_ms,
    };
    let connector = |exactly_once, commit_ms, decisions| Kind::Connector {
        exactly_once,
        commit_ms,
        decisions,
        threads: 0,
    };
    let plan = [
        copy(false, 100),
        copy(true, 100),
        copy(true, 1000),
        connector(true, 100, true),
        connector(true, 1000, true),
        connector(false, 100, true),
        connector(true, 100, false),
        connector(true, 1000, false),
        connector(false, 100, false),
        EOS_100_ONE_THREAD,
        STREAMS_100,
    ];
    // A freshly started broker compiles its code paths as they are first taken (its JIT's
    // compiler threads took a twelfth of the machine during the first connector run after
    // the copies): one unmeasured run of the copy and of the connector warms the paths both
    // take (transactions, three output topics) before anything is measured. A production
    // broker is warm. `BENCH_WARMUP=0` skips it.
    if var("BENCH_WARMUP").is_none_or(|v| v != "0") {
        for (n, kind) in [copy(true, 100), connector(true, 100, true)]
            .into_iter()
            .enumerate()
        {
            eprintln!("[bench] warming the broker up (not measured)");
            throughput::run(env, &backlog, 100 + n, kind, &prefix, false);
        }
    }
    let report_row = |row: &throughput::Row| {
        eprintln!(
            "[bench]   {} events/s, {:.2} CPU s per 1 M events",
            thousands(row.events_per_s),
            row.cpu_per_m
        );
    };
    for (n, kind) in plan.into_iter().enumerate().filter(|(_, k)| selected(*k)) {
        let row = throughput::run(env, &backlog, n, kind, &prefix, true);
        report_row(&row);
        report.rows.push(row);
    }
    // Single runs of a few seconds swing by a fifth from one to the next on a shared
    // machine: the main comparison runs again, each mode's copy and connector one right
    // after the other, and the ratios are the median of the rounds.
    let pairs = [(true, 100), (true, 1000), (false, 100)]
        .into_iter()
        .flat_map(|(eos, ms)| [copy(eos, ms), connector(eos, ms, true)])
        .filter(|k| selected(*k));
    let pairs: Vec<Kind> = pairs.collect();
    for round in 2..=sizes.rounds {
        eprintln!("[bench] round {round} of {}", sizes.rounds);
        let rows = pairs
            .iter()
            .enumerate()
            .map(|(i, &kind)| {
                let n = 100 * round as usize + i;
                let row = throughput::run(env, &backlog, n, kind, &prefix, false);
                report_row(&row);
                row
            })
            .collect();
        report.repeats.push(rows);
    }
}
