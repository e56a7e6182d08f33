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
//!                                     ▲ drop / stall / stall-on-EndTxn / pace   │
//!  injector ──────────────────────────┴─ SIGKILL / SIGSTOP / broker kill ───────┘ report
//! ```
//!
//! Run it with `scripts/chaos.sh`, which builds it, starts the cluster on the chosen ports
//! and stops everything afterwards. It is a Cargo example so that it never ships with the
//! product yet is built, linted and unit-tested with it.
//!
//! # Layout
//!
//! - `profile`: the profiles (`ci`, `full`) and the command line.
//! - `run`: one run from the first topic to the report; `dry_run`: the same without Kafka.
//! - `timeline`: event time of the workload, and why the oracle can be exact.
//! - `catalog`: the campaigns and the mid-run edits (campaigns-as-code YAML).
//! - `workload`, `encode`: the seeded records, the writer schemas, the poison.
//! - `oracle`: the engine over the same records; `verify`: outputs against it;
//!   `checks`: PASS or FAIL; `report`: the table and its Markdown.
//! - `proxy`: the controllable TCP proxy; `fleet`: connector processes and supervision.
//! - `registry_outage`: the interactions in the Confluent wire format, the schema registry
//!   (`tests/registry`, the integration tests' own) and the gate that takes it away.
//! - `kafka`: the harness's own clients; `progress`, `background`: the producer and monitor
//!   threads; `barrier`: between segments of input; `faults`: injecting faults, measuring
//!   recovery; `rng`: the seeded random numbers.

mod background;
mod barrier;
mod catalog;
mod checks;
mod dry_run;
mod encode;
mod faults;
mod fleet;
mod kafka;
mod oracle;
mod profile;
mod progress;
mod proxy;
// The schema registry of the integration tests, shared rather than copied.
#[path = "../../tests/registry/mod.rs"]
mod registry;
mod registry_outage;
mod report;
mod rng;
mod run;
mod timeline;
mod verify;
mod workload;

use std::path::Path;
use std::process::{Command, ExitCode};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::progress::lock;

pub const PARTITIONS: i32 = 6;

pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

pub fn machine() -> String {
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
    let args = match profile::parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    if args.dry_run {
        return match dry_run::dry_run(&args) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("[chaos] ERROR: {e}");
                ExitCode::from(2)
            }
        };
    }
    match run::run(args) {
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

pub static STARTED: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();

/// A progress line on stderr, with the seconds since the start.
pub fn say(line: &str) {
    let t = STARTED.get_or_init(Instant::now).elapsed().as_secs_f64();
    eprintln!("[chaos {t:>6.1}s] {line}");
}

/// Runs `campaign-connector <args> --config <config>` to completion.
pub fn cli(bin: &Path, args: &[&str], config: &Path) -> Result<String, String> {
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

/// When the group has committed nothing for `limit` with work to do, stops the input (the
/// producer ends after its current chunk) and records why. Returns whether it gave up.
pub fn give_up(progress: &progress::SharedProgress, stop: &AtomicBool, limit: Duration) -> bool {
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
