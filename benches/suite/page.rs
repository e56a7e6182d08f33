//! The benchmark page: the tables of a run, the targets judged on them, and
//! `docs/benchmarks.md` with the machine's size and the method.

use std::fmt::Write as _;
use std::process::Command;

use crate::report::{mib, thousands, Table};
use crate::systems::{Env, Kind};
use crate::{lateness, state, throughput, var, Sizes, EOS_100, EOS_100_ONE_THREAD, STREAMS_100};

/// The 1, 5 and 15 minute load averages: how busy the machine was besides the suite.
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|l| l.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

#[derive(Default)]
pub struct Report {
    pub load_at_start: String,
    pub load_at_end: String,
    pub workload: String,
    pub produce_s: f64,
    pub rows: Vec<throughput::Row>,
    /// The main comparison's runs again, in rounds after the first (`rows`), each round a
    /// run of every mode's copy and connector side by side: `repeats[r]` is round `r + 2`.
    pub repeats: Vec<Vec<throughput::Row>>,
    pub lateness: Vec<lateness::Row>,
    pub burst: Vec<state::BurstRow>,
    pub restore: Vec<state::RestoreRow>,
    pub engine: Option<String>,
}

fn opt<T>(v: Option<T>, f: impl Fn(T) -> String) -> String {
    v.map(f).unwrap_or_else(|| "–".into())
}

fn ratio(a: f64, b: f64) -> String {
    if b > 0.0 && a.is_finite() {
        format!("{:.2}", a / b)
    } else {
        "–".into()
    }
}

/// A figure measured in several rounds: the median, and the range when there is one.
struct Rounds(Vec<f64>);

impl Rounds {
    fn median(&self) -> Option<f64> {
        let mut v: Vec<f64> = self.0.iter().copied().filter(|x| x.is_finite()).collect();
        v.sort_by(f64::total_cmp);
        match v.len() {
            0 => None,
            n if n % 2 == 1 => Some(v[n / 2]),
            n => Some((v[n / 2 - 1] + v[n / 2]) / 2.0),
        }
    }

    /// "0.93" for one round, "0.93 (0.88–0.97)" for several.
    fn text(&self) -> String {
        let Some(m) = self.median() else {
            return "–".into();
        };
        let (lo, hi) = self
            .0
            .iter()
            .fold((f64::INFINITY, f64::NEG_INFINITY), |(l, h), &x| {
                (l.min(x), h.max(x))
            });
        if self.0.len() > 1 {
            format!("{m:.2} ({lo:.2}–{hi:.2})")
        } else {
            format!("{m:.2}")
        }
    }
}

impl Report {
    fn find(&self, kind: Kind) -> Option<&throughput::Row> {
        self.rows.iter().find(|r| r.kind == Some(kind))
    }

    /// `f(row of kind) ÷ against` in every round that ran `kind` (Kafka Streams runs once:
    /// the connector's rounds are set against that one run).
    fn ratios_to(&self, kind: Kind, against: f64, f: impl Fn(&throughput::Row) -> f64) -> Rounds {
        let rounds = std::iter::once(&self.rows).chain(&self.repeats);
        Rounds(
            rounds
                .filter_map(|rows| rows.iter().find(|r| r.kind == Some(kind)))
                .filter(|_| against > 0.0)
                .map(|r| f(r) / against)
                .collect(),
        )
    }

    /// `f(connector) ÷ f(copy)` in every round that ran both.
    fn ratios(&self, connector: Kind, copy: Kind, f: impl Fn(&throughput::Row) -> f64) -> Rounds {
        let rounds = std::iter::once(&self.rows).chain(&self.repeats);
        Rounds(
            rounds
                .filter_map(|rows| {
                    let find = |k| rows.iter().find(|r| r.kind == Some(k));
                    let (c, b) = (find(connector)?, find(copy)?);
                    (f(b) > 0.0).then(|| f(c) / f(b))
                })
                .collect(),
        )
    }

    pub fn tables(&self, sizes: &Sizes) -> Vec<Table> {
        let mut out = Vec::new();
        if !self.rows.is_empty() {
            let mut t = Table::new(
                &format!(
                    "Throughput: {} events over the same topics, one system at a time",
                    thousands(sizes.events as f64)
                ),
                &[
                    "system",
                    "mode",
                    "events/s",
                    "CPU s / 1M events",
                    "broker CPU s / 1M",
                    "wall s from start",
                    "peak RSS MiB",
                    "restart: ready s",
                    "peak RSS after restart MiB",
                    "pending timers",
                    "send-commands (model)",
                ],
            );
            for r in &self.rows {
                t.row(vec![
                    r.system.clone(),
                    if r.note.is_empty() {
                        r.mode.clone()
                    } else {
                        format!("{} ({})", r.mode, r.note)
                    },
                    thousands(r.events_per_s),
                    format!("{:.2}", r.cpu_per_m),
                    format!("{:.2}", r.broker_cpu_per_m),
                    format!("{:.1}", r.wall_s),
                    mib(r.rss_ingest),
                    opt(r.ready_s, |s| format!("{s:.1}")),
                    opt(r.rss_restart, mib),
                    opt(r.pending, |p| thousands(p as f64)),
                    opt(r.sends, |(n, same)| {
                        format!(
                            "{} {}",
                            thousands(n as f64),
                            if same { "= model" } else { "≠ model" }
                        )
                    }),
                ]);
            }
            out.push(t);

            let rounds = 1 + self.repeats.len();
            let mut t = Table::new(
                &if rounds > 1 {
                    format!(
                        "Ratios (connector ÷ bare copy in the same mode: the median of {rounds} rounds \
                         run side by side, their range in brackets; connector ÷ Kafka Streams at 100 ms: \
                         the connector's rounds against its one run)"
                    )
                } else {
                    "Ratios (connector ÷ bare copy in the same mode; connector ÷ Kafka Streams at 100 ms)"
                        .to_string()
                },
                &[
                    "connector",
                    "against",
                    "events/s ratio",
                    "CPU per event ratio",
                    "peak RSS ratio",
                ],
            );
            for decisions in [true, false] {
                for (eos, ms) in [(true, 100), (true, 1000), (false, 100)] {
                    let connector = Kind::Connector {
                        exactly_once: eos,
                        commit_ms: ms,
                        decisions,
                        threads: 0,
                    };
                    let copy = Kind::Copy {
                        exactly_once: eos,
                        commit_ms: ms,
                    };
                    if let (Some(c), Some(b)) = (self.find(connector), self.find(copy)) {
                        let r =
                            |f: fn(&throughput::Row) -> f64| self.ratios(connector, copy, f).text();
                        t.row(vec![
                            c.mode.clone(),
                            format!("bare copy, {}", b.mode),
                            r(|x| x.events_per_s),
                            r(|x| x.cpu_per_m),
                            r(|x| x.rss_ingest as f64),
                        ]);
                    }
                }
                let connector = Kind::Connector {
                    exactly_once: true,
                    commit_ms: 100,
                    decisions,
                    threads: 0,
                };
                if let (Some(c), Some(s)) = (self.find(connector), self.find(STREAMS_100)) {
                    let r =
                        |f: fn(&throughput::Row) -> f64| self.ratios_to(connector, f(s), f).text();
                    t.row(vec![
                        c.mode.clone(),
                        format!("Kafka Streams, {}", s.mode),
                        r(|x| x.events_per_s),
                        r(|x| x.cpu_per_m),
                        r(|x| x.rss_ingest as f64),
                    ]);
                }
            }
            out.push(t);

            // Processing threads: the default (one per core) against one, same mode.
            let one = self.find(EOS_100_ONE_THREAD);
            let default = self.find(EOS_100);
            if let (Some(one), Some(default)) = (one, default) {
                let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
                let mut t = Table::new(
                    &format!(
                        "Processing threads (exactly-once, 100 ms, decisions on; {cores} cores shared \
                         with the broker): CPU per event with {cores} ÷ with 1: {}",
                        ratio(default.cpu_per_m, one.cpu_per_m)
                    ),
                    &[
                        "processing threads",
                        "events/s",
                        "CPU s / 1M events",
                        "broker CPU s / 1M",
                        "connector cores busy",
                        "broker cores busy",
                        "events/s per connector core",
                    ],
                );
                for (threads, r) in [(1, one), (cores, default)] {
                    let busy = r.events_per_s * r.cpu_per_m / 1e6;
                    t.row(vec![
                        threads.to_string(),
                        thousands(r.events_per_s),
                        format!("{:.2}", r.cpu_per_m),
                        format!("{:.2}", r.broker_cpu_per_m),
                        format!("{busy:.2}"),
                        format!("{:.2}", r.events_per_s * r.broker_cpu_per_m / 1e6),
                        thousands(r.events_per_s / busy.max(1e-9)),
                    ]);
                }
                out.push(t);
            }
        }
        if !self.lateness.is_empty() {
            let mut t = Table::new(
                "Fire lateness at steady load (ms after due_at; caught up, timers due by the wall clock)",
                &[
                    "system",
                    "mode",
                    "load",
                    "sends",
                    "emitted p50",
                    "emitted p99",
                    "emitted max",
                    "visible p50",
                    "visible p99",
                    "visible max",
                ],
            );
            for r in &self.lateness {
                t.row(vec![
                    r.system.clone(),
                    r.mode.clone(),
                    format!(
                        "{} ev/s × {} s (after {} s)",
                        thousands(r.rate as f64),
                        r.seconds,
                        r.warmup
                    ),
                    thousands(r.fired as f64),
                    r.emitted[0].to_string(),
                    r.emitted[1].to_string(),
                    r.emitted[2].to_string(),
                    r.visible[0].to_string(),
                    r.visible[1].to_string(),
                    r.visible[2].to_string(),
                ]);
            }
            out.push(t);
        }
        if !self.burst.is_empty() {
            let mut t = Table::new(
                "Burst: timers due in the same second",
                &[
                    "system",
                    "mode",
                    "timers",
                    "ingest s",
                    "all committed, s after the second",
                    "CPU s (system's process, the burst)",
                ],
            );
            for r in &self.burst {
                t.row(vec![
                    r.system.clone(),
                    r.mode.clone(),
                    thousands(r.timers as f64),
                    format!(
                        "{:.1}{}",
                        r.ingest_s,
                        if r.ingested_before_due {
                            ""
                        } else {
                            " (not done when due)"
                        }
                    ),
                    if r.all_committed_s.is_finite() {
                        format!("{:.2}", r.all_committed_s)
                    } else {
                        "not all within 10 min".into()
                    },
                    format!("{:.1}", r.cpu_s),
                ]);
            }
            out.push(t);
        }
        if !self.restore.is_empty() {
            let mut t = Table::new(
                "Restore: pending timers after a restart",
                &[
                    "system",
                    "mode",
                    "timers",
                    "ingest s",
                    "peak RSS ingest MiB",
                    "ready s, empty state",
                    "restart: ready s",
                    "restore s (longest task)",
                    "pending reported",
                    "RSS restored MiB",
                    "peak RSS restore MiB",
                    "RSS bytes / timer",
                    "state dir bytes / timer",
                ],
            );
            for r in &self.restore {
                t.row(vec![
                    r.system.clone(),
                    r.mode.clone(),
                    thousands(r.timers as f64),
                    format!("{:.1}", r.ingest_s),
                    mib(r.rss_ingest),
                    format!("{:.1}", r.ready_empty_s),
                    format!("{:.1}", r.ready_s),
                    opt(r.restore_s, |s| format!("{s:.1}")),
                    opt(r.pending, |p| thousands(p as f64)),
                    mib(r.rss_restored),
                    mib(r.peak_rss_restore),
                    format!(
                        "{:.0}",
                        (r.rss_restored as f64 - r.baseline_rss as f64) / r.timers.max(1) as f64
                    ),
                    opt(r.store_bytes, |b| {
                        format!("{:.0}", b as f64 / r.timers.max(1) as f64)
                    }),
                ]);
            }
            out.push(t);
        }
        let _ = sizes;
        out
    }

    /// The suite's targets, each with the measured figure and by how much it is met or missed.
    pub fn targets(&self, sizes: &Sizes) -> Vec<String> {
        let mut out = vec!["Targets".to_string(), String::new()];
        let mut line = |what: String, measured: String, ok: Option<bool>| {
            let verdict = match ok {
                Some(true) => "met",
                Some(false) => "MISSED",
                None => "not measured",
            };
            out.push(format!("- {what}: {measured} — {verdict}"));
        };
        for (eos, ms) in [(true, 100), (true, 1000), (false, 100)] {
            let connector = Kind::Connector {
                exactly_once: eos,
                commit_ms: ms,
                decisions: true,
                threads: 0,
            };
            let copy = Kind::Copy {
                exactly_once: eos,
                commit_ms: ms,
            };
            let of = if self.repeats.is_empty() {
                ""
            } else {
                ", median of the rounds"
            };
            if let Some(b) = self.find(copy) {
                let wall = self.ratios(connector, copy, |x| x.events_per_s);
                let cpu = self.ratios(connector, copy, |x| x.cpu_per_m);
                if let (Some(w), Some(c)) = (wall.median(), cpu.median()) {
                    line(
                        format!(
                            "wall, connector ÷ bare copy ≥ 0.9 ({}, decisions on{of})",
                            b.mode
                        ),
                        wall.text(),
                        Some(w >= 0.9),
                    );
                    line(
                        format!(
                            "CPU per event ≤ 1.5 × the copy's ({}, decisions on{of})",
                            b.mode
                        ),
                        format!("{} ×", cpu.text()),
                        Some(c <= 1.5),
                    );
                }
            }
        }
        if let Some(s) = self.find(STREAMS_100) {
            // Events per CPU second: Kafka Streams' CPU per event over the connector's.
            let per_core = Rounds(
                self.ratios_to(EOS_100, s.cpu_per_m, |x| x.cpu_per_m)
                    .0
                    .into_iter()
                    .map(|r| 1.0 / r)
                    .collect(),
            );
            let memory = self.ratios_to(EOS_100, s.rss_ingest as f64, |x| x.rss_ingest as f64);
            let of = if self.repeats.is_empty() {
                ""
            } else {
                ", the connector's median of the rounds"
            };
            if let (Some(p), Some(m)) = (per_core.median(), memory.median()) {
                line(
                    format!("throughput per core ≥ 3 × Kafka Streams' (events per CPU second, exactly-once 100 ms{of})"),
                    format!("{} ×", per_core.text()),
                    Some(p >= 3.0),
                );
                line(
                    format!("memory ≤ ⅓ of Kafka Streams' (peak RSS while ingesting{of})"),
                    format!("{} ×", memory.text()),
                    Some(m <= 1.0 / 3.0),
                );
            }
        }
        if let Some(r) = self.restore.iter().find(|r| r.system == "connector") {
            // The restore proper, as the connector measured it; without that, ready after
            // the restart less ready on empty state (which carries the group join's spread).
            let restore = r
                .restore_s
                .unwrap_or((r.ready_s - r.ready_empty_s).max(0.0));
            let at_10m = r.ready_empty_s + restore * 10_000_000.0 / r.timers.max(1) as f64;
            line(
                "restore of 10 M timers ≤ 15 s (time until ready)".into(),
                format!(
                    "ready {:.1} s after a restart with {} timers ({} restoring, the longest task), {:.1} s on empty state (≈ {at_10m:.0} s at 10 M: start-up plus the restore scaled linearly)",
                    r.ready_s,
                    thousands(r.timers as f64),
                    r.restore_s.map_or("not reported".to_string(), |s| format!("{s:.1} s")),
                    r.ready_empty_s
                ),
                Some(at_10m <= 15.0),
            );
            let per = (r.rss_restored as f64 - r.baseline_rss as f64) / r.timers.max(1) as f64;
            line(
                "memory per pending timer ≤ 100 B (whole process, after a restore)".into(),
                format!("{per:.0} B"),
                Some(per <= 100.0),
            );
        }
        for r in self.lateness.iter().filter(|r| r.system == "connector") {
            line(
                format!(
                    "fire lateness p99 ≤ commit interval + 100 ms (visible, {})",
                    r.mode
                ),
                format!("{} ms", r.visible[1]),
                Some(r.visible[1] <= 200),
            );
        }
        if let Some(r) = self.burst.iter().find(|r| r.system == "connector") {
            line(
                "1 M timers due in one second committed ≤ 5 s".into(),
                format!(
                    "{:.2} s for {}",
                    r.all_committed_s,
                    thousands(r.timers as f64)
                ),
                (r.timers >= 1_000_000).then_some(r.all_committed_s <= 5.0),
            );
        }
        let _ = sizes;
        out
    }

    pub fn markdown(
        &self,
        sizes: &Sizes,
        env: &Env,
        tables: &[Table],
        quick: bool,
        chart: Option<&std::ffi::OsStr>,
    ) -> String {
        let nproc = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1);
        let mem_gib = std::fs::read_to_string("/proc/meminfo")
            .ok()
            .and_then(|m| {
                m.lines()
                    .find_map(|l| l.strip_prefix("MemTotal:"))
                    .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
            })
            .map(|kb| kb / 1_048_576.0)
            .unwrap_or(0.0);
        let cpu = std::fs::read_to_string("/proc/cpuinfo")
            .ok()
            .and_then(|c| {
                c.lines()
                    .find_map(|l| l.strip_prefix("model name")?.split(':').nth(1))
                    .map(|s| s.trim().to_string())
            })
            .unwrap_or_else(|| "unknown CPU".into());
        let date = Command::new("date")
            .args(["-u", "+%Y-%m-%d %H:%M UTC"])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default();
        let command = var("BENCH_COMMAND").unwrap_or_else(|| "scripts/bench.sh".into());
        let mut s = String::new();
        let _ = writeln!(s, "# Benchmarks\n");
        let _ = writeln!(
            s,
            "Written by `scripts/bench.sh`{}; every figure below comes from that run. Re-run it to \
             measure another build or machine; sizes are set by environment variables (see the \
             script).\n",
            if quick { " in `--quick` mode (small sizes, a smoke run)" } else { "" }
        );
        let _ = writeln!(s, "- machine: {nproc} cores ({cpu}), {mem_gib:.0} GiB memory; the broker, the system under test and the load generator share them");
        let _ = writeln!(s, "- date: {date}");
        let _ = writeln!(
            s,
            "- load average (1, 5, 15 min) before the run: {}; after it: {} — other work on the machine shows here",
            self.load_at_start, self.load_at_end
        );
        let _ = writeln!(s, "- command: `{command}`");
        let _ = writeln!(
            s,
            "- one local Apache Kafka broker (KRaft, single node), {} partitions per topic; Kafka Streams with {} stream thread(s), JVM options `{}`",
            env.partitions,
            env.streams_threads,
            env.streams_jvm_opts.join(" ")
        );
        if !self.workload.is_empty() {
            let _ = writeln!(
                s,
                "- workload (`benches/common/workload.rs`; produced in {:.1} s): {}",
                self.produce_s, self.workload
            );
        }
        let _ = writeln!(s);
        let _ = writeln!(s, "## What is compared\n");
        let _ = writeln!(
            s,
            "The rule is the abandoned-cart example of the README (trigger `PUSH_RECEIVED` on \
             `abandoned-cart`, a delay, exceptions: a purchase or `PUSH_DIRECT_OPEN` on the same \
             campaign), re-eligible one delay after a send. Every system reads the same input \
             topics (Avro single-object encoding) with its own consumer group:\n\n\
             - **bare copy** (`benches/copy.rs`): consume → produce every record unchanged, with \
             the connector's client settings and its commit flush; the floor for any Kafka \
             consumer-producer.\n\
             - **connector**: `campaign-connector run`, exactly-once at commit intervals of 100 ms \
             and 1 s, at-least-once; with the decision log (the production setting) and without.\n\
             - **Kafka Streams** (`bench/streams-peer/`): the same rule written with the \
             Processor API — exactly-once v2, RocksDB stores for pending sends and receipts, \
             punctuators by stream time and (when caught up) by wall clock; store caching on, \
             static membership and the connector's 50 ms producer linger, Kafka Streams' defaults \
             otherwise.\n\n\
             events/s and CPU are measured from the group's first commit after it is stable \
             with all of the system's members (the connector's member loops, one per core; \
             Kafka Streams' stream threads; the copy's consumer) joined and assigned to the commit that covers the whole backlog, so both \
             ends of the window are commits (start-up excluded for all alike, and so is work a \
             first member did before the others joined; `wall s from start` includes it; the time \
             to the covering commit counts, so a 1 s commit interval shows in the figure). The \
             backlog is 2 M events by default rather than 1 M: at these rates 1 M is about two \
             seconds, two commits at a 1 s interval, and where in the interval the backlog ended \
             swung the figures by a third from run to run. Before the measured runs, one \
             unmeasured run of the copy and one of the connector (exactly-once, 100 ms) warm the \
             broker's code paths: a freshly started broker's JIT compiler took about a twelfth of \
             the machine during the first connector run after the copies. Single runs of a few \
             seconds still swing by a fifth from one to the next on this shared machine, so the \
             main comparison (each mode's copy and connector, decisions on) runs in rounds \
             (`BENCH_ROUNDS`), the two systems of a mode one right after the other; the ratios and \
             the targets are the median of the rounds' ratios, with their range, and the \
             throughput table shows the first round. CPU is the process's user + system time from `/proc/<pid>/stat` \
             (all threads); the broker's CPU in the same window is shown beside it. Peak RSS is \
             `VmHWM`. The restart is a new process on the same changelog (Kafka Streams with an \
             empty state directory, so it restores from its changelog as the connector does). The \
             send-commands of each stateful run are read back and compared with the workload's \
             model of the rule (user, trigger, due time).\n"
        );
        let _ = writeln!(
            s,
            "The other parts, each on its own topics: **fire lateness** — the workload produced \
             live at a fixed rate with `occurred_at` = now and a delay of {} s, so timers come due \
             continuously while the system is caught up; for every send-command due during the \
             load after a warm-up (a fresh broker's JIT compiler takes much of the machine in \
             its first minute), `emitted_at − due_at` and the time a `read_committed` reader received it − \
             `due_at` (visible, after the commit); the connector runs with its default processing \
             threads (one per core) and with one (see `docs/runtime.md`, \"Fire lateness at the \
             tail\"). **Burst** — one trigger per user (and a session \
             start for every other one, so that both inputs carry records), all due in the same \
             second of wall time; measured from the end of that second until a reader has every \
             send-command, with the CPU seconds the system's process used from the end of the \
             ingest until then (steadier than the time: the broker shares the machine). \
             **Restore** — one pending timer per user (a week's delay), then a \
             restart: time until ready, the restore itself as the connector reports it (its \
             longest task's `connector_restore_duration_seconds`: time until ready also holds \
             the start-up and the group join, which vary by seconds between starts), the pending \
             count the system reports, and resident memory after the restore over that of the \
             first start on empty state, per timer.\n",
            sizes.lateness_delay_s
        );
        if let (Some(chart), false) = (chart, self.rows.is_empty()) {
            let _ = writeln!(
                s,
                "![events/s and CPU per event of every system]({})\n",
                chart.to_string_lossy()
            );
        }
        for t in tables {
            let _ = writeln!(s, "## {}\n\n{}", t.title, t.markdown());
        }
        if let Some(engine) = &self.engine {
            let _ = writeln!(
                s,
                "## Engine alone (`cargo bench --bench engine`{}; run first, before the broker starts)\n\n\
                 The engine's throughput is its processing of events generated {} at a time \
                 outside the measured time, as the connector hands it a batch of decoded records: \
                 the input is in cache, and reading a pass of millions of events built beforehand \
                 from memory (a cost the connector does not have) is not measured.\n\n\
                 ```text\n{engine}\n```\n",
                if quick { " -- --quick" } else { "" },
                512
            );
        }
        let targets = self.targets(sizes);
        let _ = writeln!(s, "## Targets\n");
        for l in targets.iter().skip(2) {
            let _ = writeln!(s, "{l}");
        }
        let _ = writeln!(
            s,
            "\nThe restore target is extrapolated linearly from the size measured when it is \
             smaller than 10 M; the burst target is judged only when 1 M timers were measured."
        );
        s
    }
}
