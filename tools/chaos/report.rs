//! The report: what was injected, how the run got over it, what was verified — as a text
//! table on stdout and as Markdown.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use crate::faults::{FaultKind, Outcome};
use crate::verify::{Tally, Verification};

/// One check of the run: a name, passed or not, and why not.
pub struct Check {
    pub name: String,
    pub passed: bool,
    pub detail: Vec<String>,
}

impl Check {
    pub fn new(name: impl Into<String>, passed: bool, detail: Vec<String>) -> Self {
        Self {
            name: name.into(),
            passed,
            detail,
        }
    }
}

pub struct Report {
    pub profile: String,
    pub seed: u64,
    pub machine: String,
    pub setup: Vec<String>,
    pub outcomes: Vec<Outcome>,
    pub extra_rows: Vec<(String, usize, String)>,
    pub verification: Option<Verification>,
    pub checks: Vec<Check>,
    /// What the harness noticed on the way (restarts refused, stalls described, …).
    pub notes: Vec<String>,
    pub elapsed: Duration,
    pub reproduce: String,
}

/// (kind, injected, recovered, p50, max recovery, max lag)
type Row = (String, usize, usize, String, String);

fn secs(d: Duration) -> String {
    format!("{:.1} s", d.as_secs_f64())
}

impl Report {
    fn fault_rows(&self) -> Vec<Row> {
        let mut by: BTreeMap<FaultKind, Vec<&Outcome>> = BTreeMap::new();
        for o in &self.outcomes {
            by.entry(o.kind).or_default().push(o);
        }
        by.into_iter()
            .map(|(kind, list)| {
                let mut rec: Vec<Duration> =
                    list.iter().filter_map(|o| o.recovered_after).collect();
                rec.sort();
                let recovery = if rec.is_empty() {
                    "-".into()
                } else {
                    format!(
                        "{} / {}",
                        secs(rec[rec.len() / 2]),
                        secs(rec[rec.len() - 1])
                    )
                };
                let lag = list.iter().map(|o| o.max_lag).max().unwrap_or(0);
                let count = if kind == FaultKind::Storm {
                    let r: usize = list.iter().map(|o| o.rebalances).sum();
                    format!("{} ({r} rebalances)", list.len())
                } else {
                    list.len().to_string()
                };
                (
                    format!("{} [{count}]", kind.title()),
                    list.len(),
                    rec.len(),
                    recovery,
                    lag.to_string(),
                )
            })
            .collect()
    }

    fn tallies(&self) -> Vec<(&'static str, &Tally)> {
        match &self.verification {
            Some(v) => vec![
                ("send-commands", &v.commands),
                ("dead letters (poison)", &v.dead_letters),
                ("decision log", &v.decisions),
                ("user states (changelog)", &v.state),
            ],
            None => Vec::new(),
        }
    }

    pub fn passed(&self) -> usize {
        self.checks.iter().filter(|c| c.passed).count()
    }

    pub fn failed(&self) -> usize {
        self.checks.len() - self.passed()
    }

    pub fn text(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "\n== chaos run: profile {}, seed {} ({}) ==",
            self.profile,
            self.seed,
            secs(self.elapsed)
        );
        let _ = writeln!(s, "machine: {}", self.machine);
        for line in &self.setup {
            let _ = writeln!(s, "{line}");
        }
        let _ = writeln!(
            s,
            "\n{:<62} {:>8} {:>9} {:>22} {:>9}",
            "fault [count]", "injected", "recovered", "recovery p50 / max", "max lag"
        );
        for (name, n, r, rec, lag) in self.fault_rows() {
            let _ = writeln!(s, "{name:<62} {n:>8} {r:>9} {rec:>22} {lag:>9}");
        }
        for (name, n, what) in &self.extra_rows {
            let _ = writeln!(s, "{name:<62} {n:>8}   {what}");
        }
        let _ = writeln!(
            s,
            "\n{:<26} {:>9} {:>9} {:>8} {:>6} {:>10} {:>9}",
            "output", "expected", "present", "missing", "extra", "duplicated", "different"
        );
        for (name, t) in self.tallies() {
            let _ = writeln!(
                s,
                "{name:<26} {:>9} {:>9} {:>8} {:>6} {:>10} {:>9}",
                t.expected, t.present, t.missing, t.extra, t.duplicated, t.different
            );
        }
        if let Some(v) = &self.verification {
            let _ = writeln!(
                s,
                "\n{:<34} {:>9} {:>19}  error classes seen",
                "poison", "expected", "dead-lettered once"
            );
            for (kind, (e, d, classes)) in &v.poison {
                let classes: Vec<&str> = classes.iter().map(String::as_str).collect();
                let _ = writeln!(
                    s,
                    "{:<34} {e:>9} {d:>19}  {}",
                    kind.name(),
                    classes.join(", ")
                );
            }
        }
        let _ = writeln!(s, "\nfaults, in order:");
        for o in &self.outcomes {
            let _ = writeln!(
                s,
                "  {:<44} {} — {}",
                o.kind.title(),
                o.recovered_after
                    .map(|d| format!("recovered in {}", secs(d)))
                    .unwrap_or_else(|| "NOT recovered".into()),
                o.detail
            );
        }
        if !self.notes.is_empty() {
            let _ = writeln!(s, "\nnotes:");
            for n in &self.notes {
                let _ = writeln!(s, "  {n}");
            }
        }
        let _ = writeln!(s, "\nchecks:");
        for c in &self.checks {
            let _ = writeln!(s, "  {} {}", if c.passed { "PASS" } else { "FAIL" }, c.name);
            for d in c.detail.iter().filter(|_| !c.passed).take(8) {
                let _ = writeln!(s, "       {d}");
            }
        }
        let _ = writeln!(s, "\n{} passed, {} failed", self.passed(), self.failed());
        if self.failed() > 0 {
            let _ = writeln!(s, "reproduce: {}", self.reproduce);
        }
        s
    }

    pub fn markdown(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(
            s,
            "Profile `{}`, seed `{}`, {} on {}.\n",
            self.profile,
            self.seed,
            secs(self.elapsed),
            self.machine
        );
        for line in &self.setup {
            let _ = writeln!(s, "- {line}");
        }
        let _ = writeln!(
            s,
            "\n| fault [count] | injected | recovered | recovery p50 / max | max consumer lag |\n|---|---:|---:|---:|---:|"
        );
        for (name, n, r, rec, lag) in self.fault_rows() {
            let _ = writeln!(s, "| {name} | {n} | {r} | {rec} | {lag} |");
        }
        for (name, n, what) in &self.extra_rows {
            let _ = writeln!(s, "| {name} | {n} | | {what} | |");
        }
        let _ = writeln!(
            s,
            "\n| output | expected | present | missing | extra | duplicated | different |\n|---|---:|---:|---:|---:|---:|---:|"
        );
        for (name, t) in self.tallies() {
            let _ = writeln!(
                s,
                "| {name} | {} | {} | {} | {} | {} | {} |",
                t.expected, t.present, t.missing, t.extra, t.duplicated, t.different
            );
        }
        if let Some(v) = &self.verification {
            let _ = writeln!(
                s,
                "\n| poison | expected | dead-lettered once | error classes |\n|---|---:|---:|---|"
            );
            for (kind, (e, d, classes)) in &v.poison {
                let classes: Vec<&str> = classes.iter().map(String::as_str).collect();
                let _ = writeln!(
                    s,
                    "| {} | {e} | {d} | {} |",
                    kind.name(),
                    classes.join(", ")
                );
            }
        }
        if !self.notes.is_empty() {
            let _ = writeln!(s, "\nNotes:\n");
            for n in &self.notes {
                let _ = writeln!(s, "- {}", n.replace('|', "\\|"));
            }
        }
        let _ = writeln!(s, "\nChecks:\n");
        for c in &self.checks {
            let _ = writeln!(
                s,
                "- {} {}",
                if c.passed { "PASS" } else { "**FAIL**" },
                c.name
            );
            for d in c.detail.iter().filter(|_| !c.passed).take(5) {
                let _ = writeln!(s, "  - {}", d.replace('|', "\\|"));
            }
        }
        let _ = writeln!(
            s,
            "\n**{} passed, {} failed**",
            self.passed(),
            self.failed()
        );
        s
    }
}
