//! The faults: what each one does, when it happens, and how the run got over it.
//!
//! Each fault is injected from a known good state (the baseline instances running, all
//! brokers in sync), at a moment drawn from the seed (a point of the input, plus a jitter),
//! and is over when every input partition that had a backlog has committed progress again
//! ("recovered": fault → every task processing again).

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::fleet::Fleet;
use crate::kafka::Cluster;
use crate::progress::{lock, wait_until, SharedProgress};
use crate::proxy::{Proxy, API_END_TXN, API_OFFSET_COMMIT};
use crate::registry_outage::{Gate, GateMode};
use crate::rng::Rng;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum FaultKind {
    ConnectorKill,
    KillMidRestore,
    KillDuringRebalance,
    BrokerKill,
    BrokerRestart,
    Storm,
    Zombie,
    ConnectionsDropped,
    Stall,
    CommitStall,
    KillAtCommit,
    RegistryOutage,
}

impl FaultKind {
    pub const ALL: [FaultKind; 12] = [
        FaultKind::ConnectorKill,
        FaultKind::KillMidRestore,
        FaultKind::KillDuringRebalance,
        FaultKind::BrokerKill,
        FaultKind::BrokerRestart,
        FaultKind::Storm,
        FaultKind::Zombie,
        FaultKind::ConnectionsDropped,
        FaultKind::Stall,
        FaultKind::CommitStall,
        FaultKind::KillAtCommit,
        FaultKind::RegistryOutage,
    ];

    /// The name on the command line (`--faults`).
    pub fn key(self) -> &'static str {
        match self {
            FaultKind::ConnectorKill => "kill",
            FaultKind::KillMidRestore => "kill-restore",
            FaultKind::KillDuringRebalance => "kill-rebalance",
            FaultKind::BrokerKill => "broker-kill",
            FaultKind::BrokerRestart => "broker-restart",
            FaultKind::Storm => "storm",
            FaultKind::Zombie => "zombie",
            FaultKind::ConnectionsDropped => "drop",
            FaultKind::Stall => "stall",
            FaultKind::CommitStall => "commit-stall",
            FaultKind::KillAtCommit => "kill-commit",
            FaultKind::RegistryOutage => "registry",
        }
    }

    /// The name in the report.
    pub fn title(self) -> &'static str {
        match self {
            FaultKind::ConnectorKill => "connector SIGKILL (random point)",
            FaultKind::KillMidRestore => "connector SIGKILL mid-restore",
            FaultKind::KillDuringRebalance => "connector SIGKILL during a rebalance",
            FaultKind::BrokerKill => "broker SIGKILL, then restart",
            FaultKind::BrokerRestart => "broker clean restart",
            FaultKind::Storm => "rebalance storm 1→2→3→2→1",
            FaultKind::Zombie => "zombie (SIGSTOP past the session timeout)",
            FaultKind::ConnectionsDropped => "network: all connections dropped",
            FaultKind::Stall => "network: stall longer than the request timeout",
            FaultKind::CommitStall => "network: stall during a commit (EndTxn)",
            FaultKind::KillAtCommit => "connector SIGKILL at a commit (its request held)",
            FaultKind::RegistryOutage => "schema registry down (refused, then HTTP 503)",
        }
    }

    pub fn parse(key: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|k| k.key() == key)
    }
}

/// One injected fault and how the run got over it.
#[derive(Debug, Clone)]
pub struct Outcome {
    pub kind: FaultKind,
    pub detail: String,
    /// Membership changes the fault made (rebalances).
    pub rebalances: usize,
    pub recovered_after: Option<Duration>,
    pub max_lag: i64,
    /// The fault could be injected as meant (e.g. the armed commit stall went off).
    pub injected: bool,
}

/// How many more records each partition must commit after a fault to count as recovered.
const RECOVERY_RECORDS: i64 = 50;

pub struct Injector {
    pub fleet: Arc<Mutex<Fleet>>,
    pub progress: SharedProgress,
    pub proxies: Vec<Proxy>,
    pub cluster: Cluster,
    pub cluster_script: PathBuf,
    pub app_id: String,
    pub interactions_topic: String,
    /// Instances that run between faults.
    pub baseline: Vec<String>,
    /// Instances started only by storms and rebalance faults.
    pub spares: Vec<String>,
    pub stall: Duration,
    pub recover_deadline: Duration,
    pub rng: Rng,
    /// Broker targets rotate: transaction coordinator, partition leader, group coordinator.
    pub broker_faults: usize,
    /// The gate between the connector and the schema registry (runs with Confluent input).
    pub registry_gate: Option<Gate>,
    /// How long a registry outage lasts: the first half refused, the second HTTP 503.
    pub registry_outage: Duration,
}

fn fleet(f: &Arc<Mutex<Fleet>>) -> std::sync::MutexGuard<'_, Fleet> {
    f.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Injector {
    fn log(&self, line: &str) {
        crate::say(line);
    }

    fn cluster_cmd(&self, args: &[&str]) -> Result<String, String> {
        let out = Command::new(&self.cluster_script)
            .args(args)
            .output()
            .map_err(|e| e.to_string())?;
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
        } else {
            Err(format!(
                "cluster.sh {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            ))
        }
    }

    /// Every broker up and in sync, the baseline instances running (and only them), the
    /// group settled. Returns what had to be repaired.
    pub fn ensure_baseline(&mut self) -> Vec<String> {
        let mut repaired = Vec::new();
        let healthy = |c: &Cluster| c.health().is_ok_and(|(b, d)| b == 3 && d == 0);
        if !healthy(&self.cluster) {
            for n in 1..=3 {
                let _ = self.cluster_cmd(&["start-node", &n.to_string()]);
            }
            let started = Instant::now();
            while !healthy(&self.cluster) && started.elapsed() < Duration::from_secs(180) {
                std::thread::sleep(Duration::from_millis(500));
            }
            repaired.push("brokers back in sync".into());
        }
        let mut changed = false;
        {
            let mut f = fleet(&self.fleet);
            for id in &self.baseline {
                if !f.is_running(id) {
                    let _ = f.start(id);
                    changed = true;
                } else if f.resume(id) {
                    changed = true;
                }
            }
            for id in &self.spares {
                if f.is_running(id) {
                    f.stop(id, Duration::from_secs(60));
                    changed = true;
                }
            }
        }
        if changed {
            repaired.push("instances back to the baseline".into());
        }
        let expected = self.baseline.clone();
        if !self.wait_settled(&expected, Duration::from_secs(90)) {
            repaired.push("group did not settle within 90 s".into());
        }
        repaired
    }

    /// The group is stable with exactly `members`, every input partition assigned once.
    fn wait_settled(&self, members: &[String], deadline: Duration) -> bool {
        let since = Instant::now();
        let want: BTreeSet<&str> = members.iter().map(String::as_str).collect();
        let topics = self.input_topics();
        wait_until(&self.progress, deadline, |p| {
            p.group_at.is_some_and(|t| t > since)
                && p.group.state == "Stable"
                && p.group.instances() == want
                && p.group.fully_assigned(&topics, (p.inputs.len() / 2) as i32)
        })
    }

    fn input_topics(&self) -> Vec<String> {
        let p = lock(&self.progress);
        vec![
            p.inputs[0].0.clone(),
            p.inputs.last().expect("inputs").0.clone(),
        ]
    }

    fn pick_active(&mut self) -> Option<String> {
        let active = fleet(&self.fleet).active();
        (!active.is_empty()).then(|| self.rng.pick(&active).clone())
    }

    fn jitter(&mut self, max_ms: i64) {
        std::thread::sleep(Duration::from_millis(
            self.rng.range(0, max_ms.max(1)) as u64
        ));
    }

    /// Injects one fault of `kind` now and waits for the recovery.
    pub fn inject(&mut self, kind: FaultKind) -> Outcome {
        // Recovered: every input partition that had records to process has committed at
        // least RECOVERY_RECORDS more of them (or all) since the fault began — each task is
        // processing again. (A transaction in flight at the fault commits fewer than that.)
        let target: Vec<i64> = {
            let p = lock(&self.progress);
            p.committed
                .iter()
                .zip(&p.ends)
                .map(|(c, e)| (*c + RECOVERY_RECORDS).min(*e))
                .collect()
        };
        let at = Instant::now();
        let (detail, rebalances, injected) = match kind {
            FaultKind::ConnectorKill => self.kill_random(),
            FaultKind::KillMidRestore => self.kill_mid_restore(),
            FaultKind::KillDuringRebalance => self.kill_during_rebalance(),
            FaultKind::BrokerKill => self.broker(true),
            FaultKind::BrokerRestart => self.broker(false),
            FaultKind::Storm => self.storm(),
            FaultKind::Zombie => self.zombie(),
            FaultKind::ConnectionsDropped => {
                let n: usize = self.proxies.iter().map(Proxy::drop_all).sum();
                let accepted: u64 = self.proxies.iter().map(Proxy::accepted).sum();
                (
                    format!("{n} open connections dropped ({accepted} accepted so far)"),
                    0,
                    n > 0,
                )
            }
            FaultKind::Stall => {
                for p in &self.proxies {
                    p.stall_for(self.stall);
                }
                std::thread::sleep(self.stall);
                (format!("all traffic held for {:?}", self.stall), 0, true)
            }
            FaultKind::CommitStall => self.commit_stall(),
            FaultKind::KillAtCommit => self.kill_at_commit(),
            FaultKind::RegistryOutage => self.registry_outage(),
        };
        self.log(&format!("{}: {detail}", kind.title()));
        let recovered = wait_until(&self.progress, self.recover_deadline, |p| {
            p.sampled_at.is_some_and(|t| t > at) && p.reached(&target)
        });
        let recovered_after = recovered.then(|| at.elapsed());
        let max_lag = lock(&self.progress).max_lag_between(at, Instant::now());
        Outcome {
            kind,
            detail,
            rebalances,
            recovered_after,
            max_lag,
            injected,
        }
    }

    fn kill_random(&mut self) -> (String, usize, bool) {
        let Some(victim) = self.pick_active() else {
            return ("no instance to kill".into(), 0, false);
        };
        let uptime = fleet(&self.fleet).uptime(&victim).unwrap_or_default();
        fleet(&self.fleet).kill(&victim);
        self.jitter(2_000);
        let _ = fleet(&self.fleet).start(&victim);
        (
            format!(
                "SIGKILL {victim} after {:.1} s up; restarted",
                uptime.as_secs_f64()
            ),
            2,
            true,
        )
    }

    /// Restarts an instance and kills it the moment it is given tasks, while it restores them.
    fn kill_mid_restore(&mut self) -> (String, usize, bool) {
        let Some(victim) = self.pick_active() else {
            return ("no instance to kill".into(), 0, false);
        };
        fleet(&self.fleet).kill(&victim);
        let _ = fleet(&self.fleet).start(&victim);
        let started = Instant::now();
        let mut restored_before_kill = None;
        while started.elapsed() < Duration::from_secs(60) {
            let log = fleet(&self.fleet).log(&victim);
            if let Some(i) = log.rfind("tasks assigned") {
                fleet(&self.fleet).kill(&victim);
                restored_before_kill = Some(log[i..].contains("task restored"));
                break;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        self.jitter(1_000);
        let _ = fleet(&self.fleet).start(&victim);
        match restored_before_kill {
            Some(done) => {
                (
                    format!(
                    "SIGKILL {victim} {:.2} s after its restart, as its tasks were assigned ({})",
                    started.elapsed().as_secs_f64(),
                    if done { "restore had already finished" } else { "restore under way" }
                ),
                    4,
                    !done,
                )
            }
            None => (format!("{victim} was given no tasks within 60 s"), 2, false),
        }
    }

    /// A new member joins; an old one is killed while the group rebalances.
    fn kill_during_rebalance(&mut self) -> (String, usize, bool) {
        let Some(victim) = self.pick_active() else {
            return ("no instance to kill".into(), 0, false);
        };
        let joiner = {
            let f = fleet(&self.fleet);
            self.spares.iter().find(|s| !f.is_running(s)).cloned()
        };
        let Some(joiner) = joiner else {
            return ("no spare instance to join".into(), 0, false);
        };
        let _ = fleet(&self.fleet).start(&joiner);
        let started = Instant::now();
        while started.elapsed() < Duration::from_secs(60)
            && !fleet(&self.fleet).log(&joiner).contains("catalog loaded")
        {
            std::thread::sleep(Duration::from_millis(10));
        }
        self.jitter(1_500);
        fleet(&self.fleet).kill(&victim);
        let detail = format!(
            "{joiner} joined; SIGKILL {victim} {:.2} s later, mid-rebalance; restarted",
            started.elapsed().as_secs_f64()
        );
        self.jitter(2_000);
        let _ = fleet(&self.fleet).start(&victim);
        (detail, 3, true)
    }

    fn broker(&mut self, hard: bool) -> (String, usize, bool) {
        let which = self.broker_faults % 3;
        self.broker_faults += 1;
        let (node, role) = match which {
            0 => {
                let instance = self
                    .pick_active()
                    .unwrap_or_else(|| self.baseline[0].clone());
                let txn_id = format!("{}-{instance}", self.app_id);
                (
                    self.cluster.coordinator("__transaction_state", &txn_id),
                    format!("transaction coordinator of {txn_id}"),
                )
            }
            1 => {
                let leaders = self
                    .cluster
                    .leaders(&self.interactions_topic)
                    .unwrap_or_default();
                let pick = (!leaders.is_empty())
                    .then(|| *self.rng.pick(&leaders))
                    .ok_or_else(|| "no leaders".to_string());
                (
                    pick.map(|(_, l)| l),
                    "leader of an interactions partition".to_string(),
                )
            }
            _ => (
                self.cluster.coordinator("__consumer_offsets", &self.app_id),
                "group coordinator".to_string(),
            ),
        };
        let node = match node {
            Ok(n) if (1..=3).contains(&n) => n,
            other => {
                let n = self.rng.range(1, 4) as i32;
                self.log(&format!(
                    "broker target ({role}) unknown: {other:?}; node {n}"
                ));
                n
            }
        };
        let id = node.to_string();
        let started = Instant::now();
        let result = if hard {
            self.cluster_cmd(&["kill", &id]).and_then(|_| {
                self.jitter(8_000);
                self.cluster_cmd(&["start-node", &id])
            })
        } else {
            self.cluster_cmd(&["restart", &id])
        };
        let down = started.elapsed();
        let mut back = false;
        while !back && started.elapsed() < Duration::from_secs(180) {
            back = self.cluster.health().is_ok_and(|(b, d)| b == 3 && d == 0);
            if !back {
                std::thread::sleep(Duration::from_millis(500));
            }
        }
        let how = if hard { "SIGKILL" } else { "SIGTERM" };
        match result {
            Ok(_) => (
                format!(
                    "{how} node {node} ({role}); restarted after {:.1} s; {}",
                    down.as_secs_f64(),
                    if back {
                        format!(
                            "in sync again after {:.1} s",
                            started.elapsed().as_secs_f64()
                        )
                    } else {
                        "NOT back in sync within 180 s".into()
                    }
                ),
                0,
                true,
            ),
            Err(e) => (format!("{how} node {node}: {e}"), 0, false),
        }
    }

    /// 1 → 2 → 3 → 2 → 1 instances, then back to the baseline, each step once the group
    /// settled (or a deadline passed).
    fn storm(&mut self) -> (String, usize, bool) {
        let mut all: Vec<String> = self.baseline.clone();
        all.extend(self.spares.iter().cloned());
        let steps: [usize; 5] = [1, 2, 3, 2, 1];
        let mut rebalances = 0;
        let mut unsettled = 0;
        let mut current = fleet(&self.fleet).running();
        for n in steps.into_iter().chain([self.baseline.len()]) {
            let want: Vec<String> = all.iter().take(n).cloned().collect();
            {
                let mut f = fleet(&self.fleet);
                for id in &current {
                    if !want.contains(id) {
                        f.stop(id, Duration::from_secs(60));
                    }
                }
                for id in &want {
                    if !f.is_running(id) {
                        let _ = f.start(id);
                    }
                }
            }
            if want != current {
                rebalances += 1;
            }
            current = want.clone();
            if !self.wait_settled(&want, Duration::from_secs(60)) {
                unsettled += 1;
            }
            self.jitter(3_000);
        }
        (
            format!(
                "{rebalances} membership changes{}",
                if unsettled > 0 {
                    format!(", {unsettled} did not settle within 60 s")
                } else {
                    String::new()
                }
            ),
            rebalances,
            true,
        )
    }

    fn zombie(&mut self) -> (String, usize, bool) {
        let active = fleet(&self.fleet).active();
        if active.len() < 2 {
            return ("needs two instances".into(), 0, false);
        }
        let victim = self.rng.pick(&active).clone();
        let others: Vec<String> = active.into_iter().filter(|i| *i != victim).collect();
        let log_before = fleet(&self.fleet).log(&victim).len();
        fleet(&self.fleet).pause(&victim);
        let paused = Instant::now();
        let moved_on = self.wait_settled(&others, Duration::from_secs(90));
        let after = paused.elapsed();
        self.jitter(3_000);
        fleet(&self.fleet).resume(&victim);
        // What the zombie says when it wakes up in a group that moved on.
        std::thread::sleep(Duration::from_secs(5));
        let log = fleet(&self.fleet).log(&victim);
        let woke: Vec<&str> = log
            .get(log_before..)
            .unwrap_or("")
            .lines()
            .filter(|l| l.contains("WARN") || l.contains("ERROR") || l.contains("revoked"))
            .take(3)
            .collect();
        (
            format!(
                "SIGSTOP {victim}; group {} after {:.1} s; SIGCONT; it said: {}",
                if moved_on {
                    "moved on to the others"
                } else {
                    "did NOT move on"
                },
                after.as_secs_f64(),
                if woke.is_empty() {
                    "nothing".to_string()
                } else {
                    woke.join(" | ")
                }
            ),
            2,
            moved_on,
        )
    }

    /// The schema registry goes away while the group works: connections refused for the
    /// first half of the outage, every request answered HTTP 503 for the second. A task
    /// whose next record names a writer schema id its process has not fetched yet must be
    /// held (the connector logs it), not fail and not dead-letter; injected as meant only
    /// if some task was held.
    fn registry_outage(&mut self) -> (String, usize, bool) {
        let Some(gate) = &self.registry_gate else {
            return ("the run has no registry (Confluent input)".into(), 0, false);
        };
        let ids = fleet(&self.fleet).running();
        let before: Vec<usize> = ids
            .iter()
            .map(|id| fleet(&self.fleet).log(id).len())
            .collect();
        let failed_before = gate.failed();
        let half = self.registry_outage / 2;
        gate.set(GateMode::Refuse);
        std::thread::sleep(half);
        gate.set(GateMode::Fail(503));
        std::thread::sleep(self.registry_outage - half);
        gate.set(GateMode::Open);
        let answered_503 = gate.failed() - failed_before;
        let mut held = Vec::new();
        let mut stopped = Vec::new();
        for (id, from) in ids.iter().zip(before) {
            let log = fleet(&self.fleet).log(id);
            let new = log.get(from..).unwrap_or("");
            let tasks: BTreeSet<&str> = new
                .lines()
                .filter(|l| l.contains("the schema registry does not answer"))
                .filter_map(|l| l.split("task=").nth(1))
                .filter_map(|t| t.split(|c: char| !c.is_ascii_digit()).next())
                .collect();
            if !tasks.is_empty() {
                held.push(format!(
                    "{id} held tasks {}",
                    tasks.into_iter().collect::<Vec<_>>().join(",")
                ));
            }
            if new.contains("stopping:") {
                stopped.push(id.clone());
            }
        }
        (
            format!(
                "registry refused connections for {:?}, then answered {answered_503} requests with HTTP 503 for {:?}; {}{}",
                half,
                self.registry_outage - half,
                if held.is_empty() {
                    "NO task was held (the outage met no new schema id)".to_string()
                } else {
                    held.join("; ")
                },
                if stopped.is_empty() {
                    String::new()
                } else {
                    format!("; STOPPING: {}", stopped.join(", "))
                }
            ),
            0,
            !held.is_empty() && stopped.is_empty(),
        )
    }

    /// Arms every proxy to hold the next request with `api_key` for `hold`; returns the
    /// node whose proxy held one within `within`, disarming the others.
    fn hold_next(&self, api_key: i16, hold: Duration, within: Duration) -> Option<usize> {
        for p in &self.proxies {
            p.stall_on_request(api_key, hold);
        }
        let started = Instant::now();
        let mut fired = None;
        while started.elapsed() < within && fired.is_none() {
            fired = self.proxies.iter().position(|p| p.triggered_at().is_some());
            std::thread::sleep(Duration::from_millis(1));
        }
        for p in &self.proxies {
            p.disarm();
        }
        fired
    }

    /// Kills every active instance while a commit request of theirs is held at a proxy, so
    /// that it never reaches the broker: an offset commit outside a transaction if one is
    /// ever sent (exactly-once never sends one — its offsets go inside the transaction —
    /// but a build that committed them after the transaction would be caught between its
    /// two commits), otherwise a transaction's EndTxn (the transaction is then aborted by
    /// the restarted instance's fencing, and its input processed again).
    fn kill_at_commit(&mut self) -> (String, usize, bool) {
        let hold = Duration::from_secs(5);
        let (what, fired) = match self.hold_next(API_OFFSET_COMMIT, hold, Duration::from_secs(10)) {
            Some(node) => (
                "an OffsetCommit (offsets outside a transaction)",
                Some(node),
            ),
            None => (
                "an EndTxn",
                self.hold_next(API_END_TXN, hold, Duration::from_secs(60)),
            ),
        };
        let Some(node) = fired else {
            return ("no commit passed within 70 s".into(), 0, false);
        };
        let victims = fleet(&self.fleet).active();
        for v in &victims {
            fleet(&self.fleet).kill(v);
        }
        // The held request dies with its connection instead of reaching the broker late.
        for p in &self.proxies {
            p.drop_all();
            p.stall_for(Duration::ZERO);
        }
        self.jitter(1_000);
        for v in &victims {
            let _ = fleet(&self.fleet).start(v);
        }
        (
            format!(
                "{what} held at the proxy of node {}: SIGKILL {} before it reached the broker; restarted",
                node + 1,
                victims.join(", ")
            ),
            2 * victims.len(),
            true,
        )
    }

    fn commit_stall(&mut self) -> (String, usize, bool) {
        match self.hold_next(API_END_TXN, self.stall, Duration::from_secs(60)) {
            Some(i) => {
                std::thread::sleep(self.stall);
                (
                    format!(
                        "EndTxn held for {:?} at the proxy of node {}",
                        self.stall,
                        i + 1
                    ),
                    0,
                    true,
                )
            }
            None => ("no commit passed within 60 s".into(), 0, false),
        }
    }
}

/// When each fault happens: a chunk of the input (the fault comes once the group has
/// committed that far), spread over the run.
pub fn schedule(
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
