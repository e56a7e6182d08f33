//! Preview: what a campaigns file would have done on real recent traffic, before it is
//! published. The pure part: the catalog a preview runs, one engine per task, and the tally
//! of what they decided. [`source`] reads the input topics (read-only); [`report`] prints.
//!
//! ```text
//!  live catalog ─┐                                   ┌─► counts by follow-on, outcome, reason
//!  campaigns file ┴► preview_catalog ─► Preview ─────┼─► sends by hour (the busiest hours)
//!  task p's records, in event-time order ──┘ engine p └─► a sample of users, every decision
//! ```
//!
//! Every task (partition `p` of each input topic) gets its own engine, fed in the order the
//! connector's own merge gives ([`crate::merge`]), so that a task's clock — and with it
//! which records are late — is the connector's. Time moves as for a caught-up connector,
//! as in the simulator: a timer fires exactly at its due time.
//!
//! Only the follow-ons of the file are evaluated. The live catalog supplies everything
//! else a rule looks at — above all whether each trigger campaign is `ACTIVE` — and live
//! follow-ons that the file does not name are kept as plain campaigns (their status
//! counts, their rules do not run). Memory: the engines' per-user state (as in the
//! connector), a counter per follow-on, outcome and reason, one per follow-on and hour
//! with sends, and the sampled users' decisions.

pub mod report;
pub mod source;

use std::collections::BTreeMap;

use crate::catalog::CatalogError;
use crate::engine::{Effect, Engine};
use crate::model::{
    Campaign, CampaignStatus, DecisionOutcome, DecisionReason, InputCoordinates, InputEvent,
    TimestampMs,
};
use crate::simulate::Output;
use crate::validate::Limits;

/// The catalog a preview runs: the live catalog with the file's campaigns in place of the
/// live ones of the same id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PreviewCatalog {
    pub campaigns: Vec<Campaign>,
    /// The follow-ons evaluated (the file's), by id.
    pub evaluated: Vec<String>,
    /// Things the reader of the preview should know (e.g. a trigger campaign that is not
    /// in the catalog).
    pub notes: Vec<String>,
}

/// Builds the catalog of a preview. A follow-on of the file that is `ACTIVE` without a
/// `published_at` gets the live one's (an edit keeps its publish time, as `campaigns
/// publish` does) or else `window_start`, so that the whole window counts.
pub fn preview_catalog(
    live: &BTreeMap<String, Campaign>,
    file: &[Campaign],
    window_start: TimestampMs,
) -> Result<PreviewCatalog, String> {
    let mut catalog: BTreeMap<String, Campaign> = live
        .iter()
        .map(|(id, c)| {
            let mut c = c.clone();
            // Live follow-ons the file does not name run no rule in the preview.
            if !file.iter().any(|f| &f.campaign_id == id) {
                c.follow_on = None;
            }
            (id.clone(), c)
        })
        .collect();
    let mut evaluated = Vec::new();
    for c in file {
        let mut c = c.clone();
        if c.follow_on.is_some() {
            evaluated.push(c.campaign_id.clone());
            if c.published_at.is_none() && c.status == CampaignStatus::Active {
                let live_publish = live.get(&c.campaign_id).and_then(|l| l.published_at);
                c.published_at = Some(live_publish.unwrap_or(window_start));
            }
        }
        catalog.insert(c.campaign_id.clone(), c);
    }
    if evaluated.is_empty() {
        return Err("the campaigns file defines no follow-on campaign: nothing to preview".into());
    }
    let mut notes = Vec::new();
    for id in &evaluated {
        let f = &catalog[id];
        let rule = f
            .follow_on
            .as_ref()
            .expect("evaluated follow-ons have a rule");
        let trigger = &rule.trigger.campaign_id;
        match catalog.get(trigger) {
            None => notes.push(format!(
                "follow-on {id}: its trigger campaign {trigger:?} is neither in the live catalog nor in the file: every trigger is ignored (trigger_campaign_inactive)"
            )),
            Some(t) if t.status != CampaignStatus::Active => notes.push(format!(
                "follow-on {id}: its trigger campaign {trigger:?} is {:?}, not ACTIVE: every trigger is ignored (trigger_campaign_inactive)",
                t.status
            )),
            Some(_) => {}
        }
        if f.status != CampaignStatus::Active {
            notes.push(format!(
                "follow-on {id} is {:?}, not ACTIVE: every trigger is ignored (follow_on_inactive)",
                f.status
            ));
        }
    }
    Ok(PreviewCatalog {
        campaigns: catalog.into_values().collect(),
        evaluated,
        notes,
    })
}

/// What went wrong with a preview as a whole.
#[derive(Debug, thiserror::Error)]
pub enum PreviewError {
    #[error("reading the live catalog: {0}")]
    LiveCatalog(crate::runtime::RuntimeError),
    #[error("{0}")]
    Catalog(String),
    #[error(transparent)]
    Source(#[from] source::SourceError),
}

/// Everything a preview found.
pub struct Outcome {
    pub catalog: PreviewCatalog,
    pub window: source::Window,
    pub stats: source::ReadStats,
    pub tally: Tally,
}

/// Runs a preview: reads the live catalog, puts the file's campaigns over it, reads the
/// window of the input topics and tallies what the file's follow-ons would have decided,
/// with timers advanced to the window's end (`until`, else `now`). `now` is the wall clock.
pub fn run(
    settings: &crate::runtime::config::Settings,
    file: &[Campaign],
    window: source::Window,
    now: TimestampMs,
    sample_users: usize,
    progress: &mut dyn FnMut(&source::Progress),
) -> Result<Outcome, PreviewError> {
    let live = crate::runtime::admin::live_catalog(settings).map_err(PreviewError::LiveCatalog)?;
    let catalog = preview_catalog(&live, file, window.since).map_err(PreviewError::Catalog)?;
    let input = source::Source::open(settings, window, now)?;
    let mut preview = Preview::new(&catalog, input.partitions(), settings.limits, sample_users)
        .map_err(|e| PreviewError::Catalog(e.to_string()))?;
    let stats = input.read(&mut preview, progress)?;
    let tally = preview.finish(window.until.unwrap_or(now));
    Ok(Outcome {
        catalog,
        window,
        stats,
        tally,
    })
}

/// How many decisions of one sampled user are kept; the rest are counted.
pub const SAMPLE_ROWS_PER_USER: usize = 100;

/// The engines of a preview and the tally of their decisions.
pub struct Preview {
    tasks: Vec<Engine>,
    effects: Vec<Effect>,
    tally: Tally,
    events: u64,
    refused: u64,
}

impl Preview {
    /// One engine per task (`tasks` ≥ 1), each with the preview's catalog; a sample of
    /// `sample_users` users.
    pub fn new(
        catalog: &PreviewCatalog,
        tasks: usize,
        limits: Limits,
        sample_users: usize,
    ) -> Result<Self, CatalogError> {
        let mut engines = Vec::with_capacity(tasks.max(1));
        let mut effects = Vec::new();
        for _ in 0..tasks.max(1) {
            let mut engine = Engine::new(limits);
            for c in &catalog.campaigns {
                engine.apply_campaign(c, 0, &mut effects)?;
            }
            engines.push(engine);
        }
        effects.clear();
        let mut tally = Tally::new(sample_users);
        for id in &catalog.evaluated {
            tally.follow_ons.entry(id.clone()).or_default();
        }
        Ok(Self {
            tasks: engines,
            effects,
            tally,
            events: 0,
            refused: 0,
        })
    }

    pub fn tasks(&self) -> usize {
        self.tasks.len()
    }

    /// One event of task `task`, in the task's event-time order. An event the engine
    /// refuses (outside the event-time range; the reader checks that first) is counted.
    pub fn process(&mut self, task: usize, event: &InputEvent, source: &InputCoordinates) {
        let t = event.occurred_at();
        let engine = &mut self.tasks[task];
        fire_until(engine, t, &mut self.effects, &mut self.tally);
        match engine.process(event, Some(source), t, &mut self.effects) {
            Ok(()) => self.events += 1,
            Err(_) => self.refused += 1,
        }
        self.tally.take(&mut self.effects);
    }

    /// Advances every task to `until` (timers due by then fire) and tallies up.
    pub fn finish(mut self, until: TimestampMs) -> Tally {
        let mut counters = EngineCounts::default();
        for engine in &mut self.tasks {
            fire_until(engine, until, &mut self.effects, &mut self.tally);
            engine.advance_to(until, until, &mut self.effects);
            self.tally.take(&mut self.effects);
            let c = engine.counters();
            counters.unknown_interaction_kinds += c.unknown_interaction_kinds;
            counters.unknown_user_event_types += c.unknown_user_event_types;
            counters.unknown_time_zones += c.unknown_time_zones;
            counters.late_records += c.late_records;
            counters.pending_at_end += engine.pending_count() as u64;
        }
        counters.events = self.events;
        counters.refused = self.refused;
        self.tally.engine = counters;
        self.tally.until = Some(until);
        self.tally
    }
}

/// Fires timers one due time at a time with the wall clock at exactly that time.
fn fire_until(
    engine: &mut Engine,
    until: TimestampMs,
    effects: &mut Vec<Effect>,
    tally: &mut Tally,
) {
    while let Some(due) = engine.next_due().filter(|&d| d <= until) {
        engine.advance_to(due, due, effects);
        tally.take(effects);
    }
}

/// Counts of the engines, summed over tasks.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EngineCounts {
    pub events: u64,
    pub refused: u64,
    pub unknown_interaction_kinds: u64,
    pub unknown_user_event_types: u64,
    pub unknown_time_zones: u64,
    pub late_records: u64,
    pub pending_at_end: u64,
}

/// What one follow-on did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FollowOnTally {
    /// By (outcome, reason) as indexes into their `ALL` lists (schema order).
    decisions: BTreeMap<(usize, usize), u64>,
    pub sends: u64,
    /// Send-commands by the hour of their due time (epoch milliseconds of the hour).
    pub sends_by_hour: BTreeMap<TimestampMs, u64>,
}

impl FollowOnTally {
    /// Decisions by outcome and reason, in schema order.
    pub fn decisions(&self) -> impl Iterator<Item = (DecisionOutcome, DecisionReason, u64)> + '_ {
        self.decisions
            .iter()
            .map(|(&(o, r), &n)| (DecisionOutcome::ALL[o], DecisionReason::ALL[r], n))
    }

    pub fn count(&self, outcome: DecisionOutcome, reason: DecisionReason) -> u64 {
        self.decisions
            .get(&(outcome as usize, reason as usize))
            .copied()
            .unwrap_or(0)
    }

    pub fn outcome_total(&self, outcome: DecisionOutcome) -> u64 {
        self.decisions
            .iter()
            .filter(|((o, _), _)| *o == outcome as usize)
            .map(|(_, n)| n)
            .sum()
    }

    /// Pending at the end: scheduled, less cancelled, fired and dropped.
    pub fn pending(&self) -> u64 {
        let scheduled = self.outcome_total(DecisionOutcome::Scheduled);
        let ended = self.outcome_total(DecisionOutcome::Cancelled)
            + self.outcome_total(DecisionOutcome::Fired)
            + self.outcome_total(DecisionOutcome::Dropped);
        scheduled.saturating_sub(ended)
    }

    /// The `n` hours with the most sends, most first (ties: earlier first).
    pub fn busiest_hours(&self, n: usize) -> Vec<(TimestampMs, u64)> {
        let mut hours: Vec<(TimestampMs, u64)> =
            self.sends_by_hour.iter().map(|(&h, &c)| (h, c)).collect();
        hours.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
        hours.truncate(n);
        hours
    }
}

/// One sampled user and what happened to them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SampledUser {
    pub user_id: String,
    pub outputs: Vec<Output>,
    /// Outputs beyond [`SAMPLE_ROWS_PER_USER`], not kept.
    pub omitted: u64,
}

/// Everything a preview decided, tallied.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tally {
    /// By follow-on id; every evaluated follow-on is here, with or without decisions.
    pub follow_ons: BTreeMap<String, FollowOnTally>,
    /// The sampled users by the hash that chose them.
    sample: BTreeMap<u64, SampledUser>,
    sample_size: usize,
    pub engine: EngineCounts,
    pub until: Option<TimestampMs>,
}

const HOUR_MS: i64 = 3_600_000;

impl Tally {
    fn new(sample_size: usize) -> Self {
        Self {
            sample_size,
            ..Self::default()
        }
    }

    /// The sampled users, in the (arbitrary but fixed) order of the sample.
    pub fn sample(&self) -> impl Iterator<Item = &SampledUser> {
        self.sample.values()
    }

    fn take(&mut self, effects: &mut Vec<Effect>) {
        for effect in effects.drain(..) {
            let output = match effect {
                Effect::Send(s) => Output::Send(s),
                Effect::Decision(d) => Output::Decision(d),
                // A shadow follow-on in the file is evaluated like any other and tallied
                // under its `@shadow` id; its sends are would-be sends.
                Effect::Shadow(record) => match Output::of_shadow(*record) {
                    Some(o) => o,
                    None => continue,
                },
                Effect::PutState(_) | Effect::UserChanged { .. } => continue,
            };
            match &output {
                Output::Send(s) => {
                    let f = self.follow_on(&s.campaign_id);
                    f.sends += 1;
                    *f.sends_by_hour
                        .entry(s.due_at.div_euclid(HOUR_MS) * HOUR_MS)
                        .or_default() += 1;
                }
                Output::Decision(d) => {
                    *self
                        .follow_on(&d.follow_on_id)
                        .decisions
                        .entry((d.outcome as usize, d.reason as usize))
                        .or_default() += 1;
                }
            }
            self.sample_output(output);
        }
    }

    fn follow_on(&mut self, id: &str) -> &mut FollowOnTally {
        if !self.follow_ons.contains_key(id) {
            self.follow_ons
                .insert(id.to_string(), FollowOnTally::default());
        }
        self.follow_ons.get_mut(id).expect("inserted above")
    }

    /// Keeps the output if its user is among the `sample_size` users with the smallest
    /// hash seen so far. The bound only falls, so a user is either sampled from their
    /// first output on, or never.
    fn sample_output(&mut self, output: Output) {
        if self.sample_size == 0 {
            return;
        }
        let user = match &output {
            Output::Send(s) => s.user_id.as_str(),
            Output::Decision(d) => d.user_id.as_str(),
        };
        let h = user_hash(user);
        let full = self.sample.len() >= self.sample_size;
        if full
            && self
                .sample
                .last_key_value()
                .is_some_and(|(&max, _)| h > max)
        {
            return;
        }
        let entry = self.sample.entry(h).or_insert_with(|| SampledUser {
            user_id: user.to_string(),
            ..SampledUser::default()
        });
        // Another user with the same hash: sampled already is sampled.
        if entry.user_id != user {
            return;
        }
        if entry.outputs.len() < SAMPLE_ROWS_PER_USER {
            entry.outputs.push(output);
        } else {
            entry.omitted += 1;
        }
        if self.sample.len() > self.sample_size {
            self.sample.pop_last();
        }
    }
}

/// A fixed hash, so that the same traffic always gives the same sample: FNV-1a over the
/// id, then SplitMix64's finalizer, so that ids differing only in their last characters
/// (`user-1082`, `user-1083`) land far apart.
fn user_hash(user_id: &str) -> u64 {
    let h = user_id.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    });
    let h = (h ^ (h >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    let h = (h ^ (h >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    h ^ (h >> 31)
}

#[cfg(test)]
mod tests;
