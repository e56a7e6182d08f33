//! The profiles (how big a run is, which faults, how many) and the command line.

use std::path::PathBuf;
use std::time::Duration;

use crate::faults::FaultKind;
use crate::workload::{self, Shape};

/// How big a run is and how many faults of each kind it injects.
pub struct Profile {
    pub name: &'static str,
    pub shape: Shape,
    pub chunks: usize,
    /// Instances running between faults; one more is a spare for storms and joins.
    pub baseline: usize,
    pub faults: Vec<(FaultKind, usize)>,
    pub stall: Duration,
    /// How long a schema registry outage lasts (half refused, half HTTP 503).
    pub registry_outage: Duration,
    pub recover_deadline: Duration,
    /// The run gives up when the group commits nothing for this long while it has work.
    pub give_up_after: Duration,
    /// Fetch responses per consumer connection, KB/s (0: unlimited): keeps the group busy
    /// with a backlog for as long as the faults take, without millions of records.
    pub fetch_kb_per_s: u64,
}

pub fn profile(name: &str) -> Option<Profile> {
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
                (KillAtCommit, 1),
                (RegistryOutage, 1),
            ],
            stall: Duration::from_secs(12),
            registry_outage: Duration::from_secs(20),
            recover_deadline: Duration::from_secs(150),
            give_up_after: Duration::from_secs(180),
            fetch_kb_per_s: 10,
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
                (KillAtCommit, 3),
                (RegistryOutage, 3),
            ],
            stall: Duration::from_secs(15),
            registry_outage: Duration::from_secs(30),
            recover_deadline: Duration::from_secs(240),
            give_up_after: Duration::from_secs(300),
            fetch_kb_per_s: 12,
        }),
        _ => None,
    }
}

pub struct Args {
    pub profile: String,
    pub seed: u64,
    pub port_base: u16,
    pub bin: PathBuf,
    pub repo: PathBuf,
    pub work: Option<PathBuf>,
    pub faults: Option<Vec<FaultKind>>,
    pub report: Option<PathBuf>,
    pub events: Option<usize>,
    pub dry_run: bool,
    pub instances: Option<usize>,
    pub fetch_limit: Option<u64>,
    /// Write the input in transactions (one per chunk), as an exactly-once upstream does.
    pub transactional_input: bool,
    pub poison: workload::PoisonKinds,
}

pub const USAGE: &str = "usage: chaos [--profile ci|full] [--seed N] [--faults all|none|KIND,...] \
[--poison all|none|KIND,...] [--instances N] [--events N] [--fetch-limit KB/s] [--transactional-input] [--dry-run] [--port-base B] [--bin CONNECTOR] [--repo DIR] [--work DIR] [--report FILE.md]
fault kinds: kill, kill-restore, kill-rebalance, broker-kill, broker-restart, storm, zombie, \
drop, stall, commit-stall, kill-commit, registry
poison kinds: garbage, truncated, v3, time-range, time-negative, 2099, key, empty-user";

pub fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        profile: "ci".into(),
        seed: crate::now_ms() as u64 % 1_000_000,
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
        transactional_input: false,
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
            "--transactional-input" => a.transactional_input = true,
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
