//! The oracle: the product's own engine, one per task, fed the same records the connector
//! reads, in the order the connector's merge must hand them to it.
//!
//! ```text
//!  produced chunk ─► (partition, offset) from delivery reports ─► per task p:
//!      records of interactions[p] and user-events[p], by (occurred_at, topic, offset)
//!      ─► Engine::process ─► expected send-commands, decisions
//!  catalog edit   ─► Engine::apply_campaign on every task, between two chunks
//!  end of input   ─► Engine::advance_to(wall clock): what a caught-up task fires
//! ```
//!
//! Poison records are not fed: bad input must never move stream time. Every other record is
//! decoded with the product's codec (with the evolved writer schemas the connector is given),
//! and must decode to exactly what the workload meant — a cross-check of the workload itself.

use std::collections::BTreeMap;

use campaign_connector::codec::{Codec, EncodingSettings};
use campaign_connector::engine::{Effect, Engine};
use campaign_connector::model::{
    Campaign, Decision, DecisionOutcome, InputCoordinates, InputEvent, Interaction, SendCommand,
    UserEvent, UserState,
};
use campaign_connector::validate::Limits;

use crate::workload::{Content, Poison, Role};

/// A record in the merge's order: (event time, topic rank, offset), the event, its topic.
type Ordered = (i64, u8, i64, InputEvent, Role);

/// A produced record where it landed.
pub struct Landed<'a> {
    pub role: Role,
    pub partition: i32,
    pub offset: i64,
    pub content: &'a Content,
    pub value: &'a [u8],
}

/// A poison record the dead-letter topic must hold exactly once.
#[derive(Debug, Clone)]
pub struct ExpectedDeadLetter {
    pub kind: Poison,
}

pub struct Oracle {
    tasks: Vec<Engine>,
    topics: [String; 2],
    interactions: Codec<Interaction>,
    user_events: Codec<UserEvent>,
    pub sends: Vec<SendCommand>,
    pub decisions: Vec<Decision>,
    /// By (topic, partition, offset).
    pub dead_letters: BTreeMap<(String, i32, i64), ExpectedDeadLetter>,
    /// Records that did not decode to what the workload meant.
    pub codec_mismatches: Vec<String>,
    pub events: usize,
    scratch: Vec<Effect>,
}

impl Oracle {
    pub fn new(
        partitions: usize,
        limits: Limits,
        topics: [String; 2],
        schema_dir: &std::path::Path,
        interactions_registry: Option<&str>,
        campaigns: &[Campaign],
        now: i64,
    ) -> Result<Self, String> {
        let settings = EncodingSettings::avro().with_schema_dir(schema_dir);
        // Interactions in the Confluent wire format are read through the registry itself,
        // never through the gate that the outages close.
        let interactions_settings = match interactions_registry {
            Some(url) => EncodingSettings::confluent(url),
            None => settings.clone(),
        };
        let mut o = Self {
            tasks: (0..partitions).map(|_| Engine::new(limits)).collect(),
            interactions: Codec::new(topics[0].clone(), &interactions_settings)
                .map_err(|e| e.to_string())?,
            user_events: Codec::new(topics[1].clone(), &settings).map_err(|e| e.to_string())?,
            topics,
            sends: Vec::new(),
            decisions: Vec::new(),
            dead_letters: BTreeMap::new(),
            codec_mismatches: Vec::new(),
            events: 0,
            scratch: Vec::new(),
        };
        o.apply_campaigns(campaigns, now, "")?;
        Ok(o)
    }

    /// A catalog change, applied to every task at once (between two chunks). Returns, per
    /// task, how many pending sends of `evidence` it dropped.
    pub fn apply_campaigns(
        &mut self,
        campaigns: &[Campaign],
        now: i64,
        evidence: &str,
    ) -> Result<Vec<usize>, String> {
        let mut drops = Vec::with_capacity(self.tasks.len());
        for t in 0..self.tasks.len() {
            for c in campaigns {
                self.tasks[t]
                    .apply_campaign(c, now, &mut self.scratch)
                    .map_err(|e| format!("{}: {e}", c.campaign_id))?;
            }
            let dropped = self
                .scratch
                .iter()
                .filter(|e| {
                    matches!(e, Effect::Decision(d)
                        if d.follow_on_id == evidence && d.outcome == DecisionOutcome::Dropped)
                })
                .count();
            drops.push(dropped);
            self.collect();
        }
        Ok(drops)
    }

    /// The input pauses and every task is caught up: what is due fires by the wall clock,
    /// as in the runtime (only a task with a timer due advances its clock).
    pub fn barrier(&mut self, now: i64) {
        self.finish(now);
    }

    /// One chunk, in production order. `now`: the wall clock the connector would pass (only
    /// `emitted_at` and the overdue policy see it; the workload keeps both independent of it).
    pub fn chunk(&mut self, records: &[Landed<'_>], now: i64) {
        let mut per_task: BTreeMap<i32, Vec<Ordered>> = BTreeMap::new();
        for r in records {
            let topic = self.topics[r.role as usize].clone();
            match r.content {
                Content::Poison(kind) => {
                    self.dead_letters.insert(
                        (topic, r.partition, r.offset),
                        ExpectedDeadLetter { kind: *kind },
                    );
                }
                Content::Event(meant) => {
                    let decoded = match r.role {
                        Role::Interactions => self
                            .interactions
                            .decode(r.value)
                            .map(InputEvent::Interaction),
                        Role::UserEvents => {
                            self.user_events.decode(r.value).map(InputEvent::UserEvent)
                        }
                    };
                    match decoded {
                        Ok(e) if &e == meant => {
                            per_task.entry(r.partition).or_default().push((
                                e.occurred_at(),
                                r.role.rank(),
                                r.offset,
                                e,
                                r.role,
                            ));
                        }
                        Ok(e) => self.codec_mismatches.push(format!(
                            "{topic}[{}]@{}: decoded {e:?}, meant {meant:?}",
                            r.partition, r.offset
                        )),
                        Err(err) => self
                            .codec_mismatches
                            .push(format!("{topic}[{}]@{}: {err}", r.partition, r.offset)),
                    }
                }
            }
        }
        for (p, mut list) in per_task {
            // The merge's order: event time, then interactions before user events, then offset.
            list.sort_by_key(|(t, rank, offset, _, _)| (*t, *rank, *offset));
            for (_, _, offset, event, role) in list {
                let source = InputCoordinates {
                    topic: self.topics[role as usize].clone(),
                    partition: p,
                    offset,
                };
                if let Err(e) =
                    self.tasks[p as usize].process(&event, Some(&source), now, &mut self.scratch)
                {
                    self.codec_mismatches.push(format!(
                        "{}[{p}]@{offset}: the engine refused it: {e}",
                        self.topics[role as usize]
                    ));
                }
                self.events += 1;
                self.collect();
            }
        }
    }

    /// The end: every task caught up, its timers fired by the wall clock `now`.
    pub fn finish(&mut self, now: i64) {
        for t in 0..self.tasks.len() {
            if self.tasks[t].next_due().is_some_and(|d| d <= now) {
                self.tasks[t].advance_to(now, now, &mut self.scratch);
            }
            self.collect();
        }
    }

    /// Every user with state at the end, by task.
    pub fn user_states(&self) -> BTreeMap<String, (i32, UserState)> {
        let mut out = BTreeMap::new();
        for (p, t) in self.tasks.iter().enumerate() {
            for r in t.export_all() {
                if let Some(u) = r.user {
                    out.insert(u.user_id.clone(), (p as i32, u));
                }
            }
        }
        out
    }

    /// How often each decision outcome and reason came up: shows which rule shapes the
    /// workload exercised.
    pub fn coverage(&self) -> BTreeMap<String, usize> {
        let mut out = BTreeMap::new();
        for d in &self.decisions {
            *out.entry(format!("{} {}", d.outcome.as_str(), d.reason.as_str()))
                .or_default() += 1;
        }
        for s in &self.sends {
            *out.entry(format!("sent by {} v{}", s.campaign_id, s.campaign_version))
                .or_default() += 1;
        }
        out
    }

    pub fn pending(&self) -> usize {
        self.tasks.iter().map(Engine::pending_count).sum()
    }

    fn collect(&mut self) {
        for e in self.scratch.drain(..) {
            match e {
                Effect::Send(s) => self.sends.push(s),
                Effect::Decision(d) => self.decisions.push(d),
                // The chaos campaigns have no shadow follow-on.
                Effect::Shadow(_) | Effect::PutState(_) | Effect::UserChanged { .. } => {}
            }
        }
    }
}
