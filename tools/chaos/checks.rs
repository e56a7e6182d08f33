//! The run's checks, each PASS or FAIL with the details that explain a failure.

use std::time::{Duration, Instant};

use crate::faults::Outcome;
use crate::fleet::Fleet;
use crate::oracle::Oracle;
use crate::progress::Progress;
use crate::report::Check;
use crate::verify::Verification;

/// Everything the checks look at.
pub struct Evidence<'a> {
    pub verification: &'a Verification,
    pub progress: &'a Progress,
    pub fleet: &'a Fleet,
    pub oracle: &'a Oracle,
    pub outcomes: &'a [Outcome],
    pub recover_deadline: Duration,
    /// The group processed all input to its end.
    pub drained: bool,
    pub started: Instant,
    /// What happened at each barrier, and whether it went as it must.
    pub barriers: &'a [(String, bool)],
    /// How many edits (barriers) the run has.
    pub edits: usize,
}

pub fn checks(e: &Evidence<'_>) -> Vec<Check> {
    let (p, f, v, oracle) = (e.progress, e.fleet, e.verification, e.oracle);
    let mut checks = vec![Check::new(
        "every expected send-command is present",
        v.commands.missing == 0,
        v.commands.of(&["MISSING"]),
    )];
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
                    c.at.duration_since(e.started).as_secs_f64(),
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
    let unrecovered: Vec<String> = e
        .outcomes
        .iter()
        .filter(|o| o.recovered_after.is_none())
        .map(|o| format!("{}: {}", o.kind.title(), o.detail))
        .collect();
    checks.push(Check::new(
        format!(
            "every fault recovered within {:?} (and the input was processed to its end)",
            e.recover_deadline
        ),
        unrecovered.is_empty() && e.drained,
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
                    t.duration_since(e.started).as_secs_f64()
                )
            })
            .chain(std::iter::once(format!(
                "{} observations",
                p.split_tasks.len()
            )))
            .collect(),
    ));
    let not_injected: Vec<String> = e
        .outcomes
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
        e.barriers.len() == e.edits && e.barriers.iter().all(|(_, ok)| *ok),
        e.barriers.iter().map(|(what, _)| what.clone()).collect(),
    ));
    checks
}
