//! The verifier: reads every output topic with `read_committed` to its end offsets (once no
//! transaction is open any more) and compares it with the oracle.
//!
//! - send-commands: each expected command present, with the expected content (all fields but
//!   `emitted_at`, the wall clock), nothing else, no `command_id` twice;
//! - dead letters: each poison record exactly once, matched by the source topic, partition
//!   and offset headers; nothing else;
//! - decision log: the same decisions (all fields but `decided_at`);
//! - changelog: the last state of every user equals the engine's, in the user's task's
//!   partition; and no progress record written before the input ended shows a task that
//!   fired by the wall clock (stream time at or after the start of the run).

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use campaign_connector::codec::{Codec, EncodingSettings};
use campaign_connector::model::{Decision, SendCommand, TaskStateRecord, UserState, PROGRESS_KEY};
use campaign_connector::time::format_timestamp;

use crate::kafka::{read_to, wait_stable, Read};
use crate::oracle::Oracle;
use crate::workload::Poison;

/// expected / present / missing / extra / duplicated / different.
#[derive(Debug, Clone, Default)]
pub struct Tally {
    pub expected: usize,
    pub present: usize,
    pub missing: usize,
    pub extra: usize,
    pub duplicated: usize,
    pub different: usize,
    /// A few of the differences, each naming user, rule and trigger.
    pub examples: Vec<String>,
}

impl Tally {
    pub fn clean(&self) -> bool {
        self.missing == 0 && self.extra == 0 && self.duplicated == 0 && self.different == 0
    }

    /// Keeps a few examples of each kind (the first word: MISSING, EXTRA, …).
    fn example(&mut self, line: String) {
        let kind = line.split(' ').next().unwrap_or("").to_string();
        if self
            .examples
            .iter()
            .filter(|e| e.starts_with(&kind))
            .count()
            < 6
        {
            self.examples.push(line);
        }
    }

    /// The examples of some kinds.
    pub fn of(&self, kinds: &[&str]) -> Vec<String> {
        self.examples
            .iter()
            .filter(|e| kinds.iter().any(|k| e.starts_with(k)))
            .cloned()
            .collect()
    }
}

#[derive(Debug, Default)]
pub struct Verification {
    pub commands: Tally,
    pub dead_letters: Tally,
    pub decisions: Tally,
    pub state: Tally,
    /// Poison kind → (expected, dead-lettered once, classes seen).
    pub poison: BTreeMap<Poison, (usize, usize, BTreeSet<String>)>,
    /// Progress records showing a wall-clock firing before the input ended.
    pub early_wall_clock: Vec<String>,
    pub pending_expected: usize,
}

pub struct Topics {
    pub send_commands: String,
    pub dlq: String,
    pub decisions: String,
    pub changelog: String,
}

fn read_all(bootstrap: &str, topic: &str) -> Result<Vec<Read>, String> {
    let ends = wait_stable(bootstrap, topic, Duration::from_secs(120))?;
    read_to(bootstrap, topic, &ends, Duration::from_secs(600))
}

fn describe(c: &SendCommand) -> String {
    format!(
        "user {}, rule {} v{}, trigger {} {} {} at {}, due {}",
        c.user_id,
        c.campaign_id,
        c.campaign_version,
        c.trigger.campaign_id,
        c.trigger.kind.symbol(),
        c.trigger.event_id,
        format_timestamp(c.trigger.occurred_at),
        format_timestamp(c.due_at)
    )
}

/// `changelog_cut`: the changelog's end offsets when the last input record was written;
/// `run_start`: the wall clock at the start (no event time of the input is that late).
pub fn verify(
    bootstrap: &str,
    topics: &Topics,
    oracle: &Oracle,
    changelog_cut: &[i64],
    run_start: i64,
) -> Result<Verification, String> {
    let mut v = Verification {
        pending_expected: oracle.pending(),
        ..Verification::default()
    };
    let avro = EncodingSettings::avro();

    // ---- send-commands
    let codec: Codec<SendCommand> =
        Codec::new(&topics.send_commands, &avro).map_err(|e| e.to_string())?;
    let mut expected: HashMap<&str, &SendCommand> = HashMap::new();
    for s in &oracle.sends {
        expected.insert(s.command_id.as_str(), s);
    }
    let mut seen: HashMap<String, usize> = HashMap::new();
    let t = &mut v.commands;
    t.expected = expected.len();
    for r in read_all(bootstrap, &topics.send_commands)? {
        let Some(c) = r.payload.as_deref().and_then(|b| codec.decode(b).ok()) else {
            t.extra += 1;
            t.example(format!(
                "EXTRA undecodable send-command at [{}]@{}",
                r.partition, r.offset
            ));
            continue;
        };
        let n = seen.entry(c.command_id.clone()).or_default();
        *n += 1;
        if *n > 1 {
            t.duplicated += 1;
            t.example(format!(
                "DUPLICATE command {}: {}",
                c.command_id,
                describe(&c)
            ));
            continue;
        }
        match expected.get(c.command_id.as_str()) {
            None => {
                t.extra += 1;
                t.example(format!("EXTRA command {}: {}", c.command_id, describe(&c)));
            }
            Some(e) => {
                t.present += 1;
                let got = SendCommand {
                    emitted_at: 0,
                    ..c.clone()
                };
                let want = SendCommand {
                    emitted_at: 0,
                    ..(*e).clone()
                };
                if got != want {
                    t.different += 1;
                    t.example(format!(
                        "DIFFERENT command {}: got {}; expected {}",
                        c.command_id,
                        describe(&c),
                        describe(e)
                    ));
                }
            }
        }
    }
    for (id, e) in &expected {
        if !seen.contains_key(*id) {
            t.missing += 1;
            t.example(format!("MISSING command {id}: {}", describe(e)));
        }
    }

    // ---- dead letters
    let t = &mut v.dead_letters;
    t.expected = oracle.dead_letters.len();
    let mut dl_seen: BTreeMap<(String, i32, i64), usize> = BTreeMap::new();
    for e in oracle.dead_letters.values() {
        v.poison.entry(e.kind).or_default().0 += 1;
    }
    for r in read_all(bootstrap, &topics.dlq)? {
        let h = |k: &str| r.headers.get(k).cloned().unwrap_or_default();
        let key = (
            h("source.topic"),
            h("source.partition").parse().unwrap_or(-1),
            h("source.offset").parse().unwrap_or(-1),
        );
        let class = h("error.class");
        let n = dl_seen.entry(key.clone()).or_default();
        *n += 1;
        match oracle.dead_letters.get(&key) {
            Some(e) if *n == 1 => {
                t.present += 1;
                let entry = v.poison.entry(e.kind).or_default();
                entry.1 += 1;
                entry.2.insert(class);
            }
            Some(e) => {
                t.duplicated += 1;
                t.example(format!(
                    "DUPLICATE dead letter of {}[{}]@{} ({}, class {class})",
                    key.0,
                    key.1,
                    key.2,
                    e.kind.name()
                ));
            }
            None => {
                t.extra += 1;
                t.example(format!(
                    "EXTRA dead letter of {}[{}]@{} (a valid record), class {class}: {}",
                    key.0,
                    key.1,
                    key.2,
                    h("error.message")
                ));
            }
        }
    }
    for (key, e) in &oracle.dead_letters {
        if !dl_seen.contains_key(key) {
            t.missing += 1;
            t.example(format!(
                "MISSING dead letter of {}[{}]@{} ({})",
                key.0,
                key.1,
                key.2,
                e.kind.name()
            ));
        }
    }

    // ---- decision log
    let codec: Codec<Decision> = Codec::new(&topics.decisions, &avro).map_err(|e| e.to_string())?;
    let normal = |d: &Decision| {
        serde_json::to_string(&Decision {
            decided_at: 0,
            ..d.clone()
        })
        .expect("decisions serialize")
    };
    let mut counts: HashMap<String, i64> = HashMap::new();
    for d in &oracle.decisions {
        *counts.entry(normal(d)).or_default() += 1;
    }
    let t = &mut v.decisions;
    t.expected = oracle.decisions.len();
    for r in read_all(bootstrap, &topics.decisions)? {
        let Some(d) = r.payload.as_deref().and_then(|b| codec.decode(b).ok()) else {
            t.extra += 1;
            continue;
        };
        let key = normal(&d);
        match counts.get_mut(&key) {
            Some(n) if *n > 0 => {
                *n -= 1;
                t.present += 1;
            }
            Some(_) => {
                t.duplicated += 1;
                t.example(format!("DUPLICATE decision {key}"));
            }
            None => {
                t.extra += 1;
                t.example(format!("EXTRA decision {key}"));
            }
        }
    }
    for (key, n) in counts {
        if n > 0 {
            t.missing += n as usize;
            t.example(format!("MISSING decision ({n}×) {key}"));
        }
    }

    // ---- changelog
    let codec: Codec<TaskStateRecord> =
        Codec::new(&topics.changelog, &avro).map_err(|e| e.to_string())?;
    let mut last: BTreeMap<String, (i32, Option<UserState>)> = BTreeMap::new();
    for r in read_all(bootstrap, &topics.changelog)? {
        let key = r
            .key
            .as_deref()
            .map(|k| String::from_utf8_lossy(k).into_owned())
            .unwrap_or_default();
        let record = r.payload.as_deref().and_then(|b| codec.decode(b).ok());
        if key == PROGRESS_KEY {
            if let Some(progress) = record.and_then(|x| x.progress) {
                let cut = changelog_cut
                    .get(r.partition as usize)
                    .copied()
                    .unwrap_or(0);
                if r.offset < cut && progress.stream_time >= run_start {
                    v.early_wall_clock.push(format!(
                        "task {} at changelog offset {}: stream time {} before its input ended",
                        r.partition,
                        r.offset,
                        format_timestamp(progress.stream_time)
                    ));
                }
            }
            continue;
        }
        if let Some(user) = key.strip_prefix("u/") {
            last.insert(user.to_string(), (r.partition, record.and_then(|x| x.user)));
        }
    }
    let want = oracle.user_states();
    let t = &mut v.state;
    t.expected = want.len();
    for (user, (task, state)) in &want {
        match last.get(user) {
            Some((p, Some(got))) if got == state && p == task => t.present += 1,
            Some((p, Some(got))) => {
                t.different += 1;
                t.example(format!(
                    "DIFFERENT state of user {user} (task {task}, changelog partition {p}): got {} pending {:?}, {} receipts; expected {} pending {:?}, {} receipts",
                    got.pending.len(),
                    got.pending.iter().map(|x| format!("{} v{} trigger {}", x.follow_on_id, x.follow_on_version, x.trigger.event_id)).collect::<Vec<_>>(),
                    got.receipts.len(),
                    state.pending.len(),
                    state.pending.iter().map(|x| format!("{} v{} trigger {}", x.follow_on_id, x.follow_on_version, x.trigger.event_id)).collect::<Vec<_>>(),
                    state.receipts.len()
                ));
            }
            _ => {
                t.missing += 1;
                t.example(format!(
                    "MISSING state of user {user} (task {task}): {} pending, {} receipts",
                    state.pending.len(),
                    state.receipts.len()
                ));
            }
        }
    }
    for (user, (p, state)) in &last {
        if state.is_some() && !want.contains_key(user) {
            t.extra += 1;
            t.example(format!(
                "EXTRA state of user {user} in changelog partition {p}"
            ));
        }
    }
    Ok(v)
}
