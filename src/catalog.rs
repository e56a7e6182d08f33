//! The campaign catalog as one task sees it, with follow-on rules compiled for matching.
//!
//! ```text
//!  Campaign record ──validate──► CampaignEntry (latest version: status, window, publish)
//!                        │
//!                        └─compile─► RuleSlot[(follow_on, version)] ◄── PendingSend.rule
//!                                       ▲
//!  changelog RuleSnapshot ──────────────┘   (versions the catalog topic no longer has)
//! ```
//!
//! A pending send keeps the rule version it was scheduled with (SPEC §3), so every version
//! that a pending send refers to stays in the arena, filled either from the catalog or from a
//! rule snapshot in the task's changelog. Status, window and publish time are always read
//! from the latest version.

use std::num::NonZeroU32;

use chrono::NaiveTime;
use chrono_tz::Tz;
use hashbrown::HashMap;
use thiserror::Error;

use crate::model::{
    Campaign, CampaignStatus, DelayType, ExceptionType, InteractionKind, OverduePolicy,
    ReeligibilityPolicy, RepeatTrigger, TimestampMs, UserEvent, UserEventType, Weekday,
    SHADOW_SUFFIX,
};
use crate::time::{self, SECOND_MS};
use crate::validate::{validate_campaign, FieldError, Limits};

/// Index of a follow-on campaign id, interned for the life of the engine.
pub type FollowOnIdx = u32;

/// Index of one version of a follow-on rule in the arena.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct RuleId(NonZeroU32);

impl RuleId {
    fn index(self) -> usize {
        self.0.get() as usize - 1
    }
}

#[derive(Debug, Error)]
pub enum CatalogError {
    /// The record is not a valid campaign: dead-letter it.
    #[error("campaign {campaign_id:?} version {version} is invalid: {}", join(.problems))]
    Invalid {
        campaign_id: String,
        version: i64,
        problems: Vec<FieldError>,
    },
}

fn join(problems: &[FieldError]) -> String {
    problems
        .iter()
        .map(|p| p.to_string())
        .collect::<Vec<_>>()
        .join("; ")
}

/// A bit set of interaction kinds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct KindSet(u32);

impl KindSet {
    pub fn of(kinds: &[InteractionKind]) -> Self {
        Self(kinds.iter().fold(0, |acc, k| acc | (1 << *k as u32)))
    }
    pub fn contains(self, kind: InteractionKind) -> bool {
        self.0 & (1 << kind as u32) != 0
    }
}

/// The delay of a compiled rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompiledDelay {
    Immediate,
    After { ms: i64 },
    NextWeekday { weekday: Weekday, at: NaiveTime },
    CalendarDays { days: i32, at: NaiveTime },
}

/// An exception matcher ready to test events against.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CompiledException {
    /// An interaction of `kinds` on `campaign_id`.
    Interaction {
        campaign_id: String,
        kinds: KindSet,
    },
    CustomEvent {
        name: String,
    },
    /// A purchase, of `product` when set.
    Purchase {
        product: Option<String>,
    },
    SessionStart,
}

impl CompiledException {
    pub fn matches_interaction(&self, campaign_id: &str, kind: InteractionKind) -> bool {
        matches!(self, Self::Interaction { campaign_id: c, kinds } if c == campaign_id && kinds.contains(kind))
    }
    pub fn matches_user_event(&self, event: &UserEvent) -> bool {
        match (self, event.event_type) {
            (Self::CustomEvent { name }, UserEventType::CustomEvent) => {
                event.name.as_deref() == Some(name.as_str())
            }
            (Self::Purchase { product }, UserEventType::Purchase) => {
                product.is_none() || event.name.as_deref() == product.as_deref()
            }
            (Self::SessionStart, UserEventType::SessionStart) => true,
            _ => false,
        }
    }
}

/// One version of a follow-on rule, compiled.
#[derive(Debug, Clone)]
pub struct Rule {
    /// The campaign record of this version (message, snapshot export).
    pub campaign: Campaign,
    pub trigger_campaign: String,
    pub trigger_kinds: KindSet,
    pub trigger_qualifier: Option<String>,
    pub delay: CompiledDelay,
    pub zone: Option<Tz>,
    pub exceptions: Vec<CompiledException>,
    /// `None`: never re-eligible.
    pub reeligible_after_ms: Option<i64>,
    pub restart: bool,
    /// `None`: send however late.
    pub drop_if_late_by_ms: Option<i64>,
}

impl Rule {
    fn compile(campaign: &Campaign) -> Self {
        let rule = campaign
            .follow_on
            .as_ref()
            .expect("compile is called for follow-ons");
        let local_time = || {
            rule.delay
                .local_time
                .as_deref()
                .and_then(|t| time::parse_local_time(t).ok())
                .expect("validated local time")
        };
        let delay = match rule.delay.delay_type {
            DelayType::Immediate => CompiledDelay::Immediate,
            DelayType::After => CompiledDelay::After {
                ms: rule.delay.seconds.expect("validated") * SECOND_MS,
            },
            DelayType::NextWeekday => CompiledDelay::NextWeekday {
                weekday: rule.delay.weekday.expect("validated"),
                at: local_time(),
            },
            DelayType::CalendarDays => CompiledDelay::CalendarDays {
                days: rule.delay.days.expect("validated"),
                at: local_time(),
            },
        };
        let exceptions = rule
            .exceptions
            .iter()
            .map(|e| match e.exception_type {
                ExceptionType::Interaction => CompiledException::Interaction {
                    campaign_id: e
                        .campaign_id
                        .clone()
                        .unwrap_or_else(|| rule.trigger.campaign_id.clone()),
                    kinds: KindSet::of(&e.interaction_kinds),
                },
                ExceptionType::CustomEvent => CompiledException::CustomEvent {
                    name: e.name.clone().unwrap_or_default(),
                },
                ExceptionType::Purchase => CompiledException::Purchase {
                    product: e.name.clone(),
                },
                ExceptionType::SessionStart => CompiledException::SessionStart,
            })
            .collect();
        Self {
            campaign: campaign.clone(),
            trigger_campaign: rule.trigger.campaign_id.clone(),
            trigger_kinds: KindSet::of(&rule.trigger.kinds),
            trigger_qualifier: rule.trigger.qualifier.clone(),
            delay,
            zone: rule
                .time_zone
                .as_deref()
                .and_then(|z| time::parse_zone(z).ok()),
            exceptions,
            reeligible_after_ms: match rule.reeligibility.policy {
                ReeligibilityPolicy::Never => None,
                ReeligibilityPolicy::After => rule.reeligibility.seconds.map(|s| s * SECOND_MS),
            },
            restart: rule.on_repeat_trigger == RepeatTrigger::Restart,
            drop_if_late_by_ms: match rule.overdue.policy {
                OverduePolicy::Send => None,
                // Validation bounds it below only: a bound past i64 milliseconds is "never".
                OverduePolicy::DropIfLateBy => {
                    rule.overdue.seconds.map(|s| s.saturating_mul(SECOND_MS))
                }
            },
        }
    }

    pub fn version(&self) -> i64 {
        self.campaign.version
    }

    /// Does an interaction (campaign, kind, qualifier) trigger this rule?
    pub fn is_triggered_by(&self, kind: InteractionKind, qualifier: Option<&str>) -> bool {
        self.trigger_kinds.contains(kind)
            && self
                .trigger_qualifier
                .as_deref()
                .is_none_or(|q| qualifier == Some(q))
    }
}

/// One `(follow-on, version)` in the arena. `rule` is `None` while a restored pending send
/// refers to a version whose content has not been seen yet.
#[derive(Debug)]
pub struct RuleSlot {
    pub follow_on: FollowOnIdx,
    pub version: i64,
    pub rule: Option<Box<Rule>>,
    /// Whether this task's changelog holds a snapshot of this version.
    pub persisted: bool,
}

/// The latest known state of a campaign.
#[derive(Debug, Clone)]
pub struct CampaignEntry {
    pub status: CampaignStatus,
    pub version: i64,
    pub published_at: Option<TimestampMs>,
    /// This version's backfill start: triggers from here on count before `published_at`.
    pub backfill_since: Option<TimestampMs>,
    pub starts_at: Option<TimestampMs>,
    pub ends_at: Option<TimestampMs>,
    /// The current rule, for a follow-on campaign.
    pub rule: Option<RuleId>,
}

/// What a catalog record changed, for the engine to act on pending sends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CatalogChange {
    /// Nothing that affects pending sends (or an older version than the one known).
    None,
    /// The follow-on was stopped or archived: its pending sends are dropped.
    FollowOnStopped(FollowOnIdx),
    /// The follow-on was deleted (tombstone): its pending sends are dropped.
    FollowOnDeleted(FollowOnIdx),
}

/// What an interaction on one campaign can do.
#[derive(Debug, Default)]
pub struct InteractionRules {
    /// The kinds that some rule version lists as an exception on this campaign: a filter so
    /// that events which cannot cancel anything skip the user lookup.
    pub exception_kinds: KindSet,
    /// The current rules triggered by interactions on this campaign, in follow-on id order.
    pub triggered: Vec<RuleId>,
}

#[derive(Debug, Default)]
pub struct Catalog {
    limits: Limits,
    campaigns: HashMap<String, CampaignEntry>,
    /// Campaign id → what an interaction on it can do (one lookup per interaction).
    interactions: HashMap<String, InteractionRules>,
    follow_on_names: Vec<String>,
    follow_on_index: HashMap<String, FollowOnIdx>,
    rules: Vec<RuleSlot>,
    rule_index: HashMap<(FollowOnIdx, i64), RuleId>,
    /// Whether some rule version has a custom-event / purchase / session-start exception.
    user_event_exceptions: [bool; 3],
    /// Records older than the version already known, ignored.
    pub stale_records: u64,
    /// The slot `rule_id` returned last.
    last_rule_id: Option<RuleId>,
}

impl Catalog {
    pub fn new(limits: Limits) -> Self {
        Self {
            limits,
            ..Self::default()
        }
    }

    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    pub fn campaign(&self, campaign_id: &str) -> Option<&CampaignEntry> {
        self.campaigns.get(campaign_id)
    }

    /// Is `campaign_id` in the catalog and `ACTIVE`? (Missing counts as not active.)
    pub fn is_active(&self, campaign_id: &str) -> bool {
        self.campaigns
            .get(campaign_id)
            .is_some_and(|c| c.status == CampaignStatus::Active)
    }

    /// What an interaction on `campaign_id` can do: `None` when it can neither trigger nor
    /// cancel anything.
    pub fn interaction_rules(&self, campaign_id: &str) -> Option<&InteractionRules> {
        self.interactions.get(campaign_id)
    }

    pub fn follow_on_name(&self, idx: FollowOnIdx) -> &str {
        &self.follow_on_names[idx as usize]
    }

    /// Is follow-on `idx` a `SHADOW` one, whose output goes to the shadow topic? Read from
    /// the id: validation keeps `<id>@shadow` and the mode `SHADOW` together in every record
    /// the catalog accepts, so the answer is the same for every version and stays right
    /// for pending sends of a follow-on that has since been deleted.
    pub fn is_shadow(&self, idx: FollowOnIdx) -> bool {
        self.follow_on_name(idx).ends_with(SHADOW_SUFFIX)
    }

    pub fn follow_on_idx(&self, follow_on_id: &str) -> Option<FollowOnIdx> {
        self.follow_on_index.get(follow_on_id).copied()
    }

    pub fn intern_follow_on(&mut self, follow_on_id: &str) -> FollowOnIdx {
        if let Some(&i) = self.follow_on_index.get(follow_on_id) {
            return i;
        }
        let i = self.follow_on_names.len() as FollowOnIdx;
        self.follow_on_names.push(follow_on_id.to_string());
        self.follow_on_index.insert(follow_on_id.to_string(), i);
        i
    }

    /// Can a user event of this type be an exception of any rule version?
    pub fn may_cancel_user_event(&self, event_type: UserEventType) -> bool {
        match event_type {
            UserEventType::CustomEvent => self.user_event_exceptions[0],
            UserEventType::Purchase => self.user_event_exceptions[1],
            UserEventType::SessionStart => self.user_event_exceptions[2],
            UserEventType::Unknown => false,
        }
    }

    /// Compiles a version into its slot and adds its exceptions to the filters.
    fn fill(&mut self, id: RuleId, campaign: &Campaign) {
        let rule = Rule::compile(campaign);
        for e in &rule.exceptions {
            match e {
                CompiledException::Interaction { campaign_id, kinds } => {
                    let known = self.interactions.entry(campaign_id.clone()).or_default();
                    known.exception_kinds.0 |= kinds.0;
                }
                CompiledException::CustomEvent { .. } => self.user_event_exceptions[0] = true,
                CompiledException::Purchase { .. } => self.user_event_exceptions[1] = true,
                CompiledException::SessionStart => self.user_event_exceptions[2] = true,
            }
        }
        self.slot_mut(id).rule = Some(Box::new(rule));
    }

    pub fn slot(&self, id: RuleId) -> &RuleSlot {
        &self.rules[id.index()]
    }

    pub fn slot_mut(&mut self, id: RuleId) -> &mut RuleSlot {
        &mut self.rules[id.index()]
    }

    /// The rule a pending send uses: its own version, else (snapshot missing) the current one.
    pub fn rule_for_pending(&self, id: RuleId) -> Option<&Rule> {
        let slot = self.slot(id);
        slot.rule.as_deref().or_else(|| {
            let current = self.current_rule(slot.follow_on)?;
            self.slot(current).rule.as_deref()
        })
    }

    /// The current rule of a follow-on, if it is in the catalog.
    pub fn current_rule(&self, follow_on: FollowOnIdx) -> Option<RuleId> {
        self.campaigns.get(self.follow_on_name(follow_on))?.rule
    }

    /// The arena slot of `(follow_on, version)`, created empty if unknown.
    pub fn rule_id(&mut self, follow_on_id: &str, version: i64) -> RuleId {
        // Restores ask for the same version over and over: skip the hashing then.
        if let Some(id) = self.last_rule_id {
            let slot = self.slot(id);
            if slot.version == version && self.follow_on_name(slot.follow_on) == follow_on_id {
                return id;
            }
        }
        let id = self.rule_id_slow(follow_on_id, version);
        self.last_rule_id = Some(id);
        id
    }

    fn rule_id_slow(&mut self, follow_on_id: &str, version: i64) -> RuleId {
        let follow_on = self.intern_follow_on(follow_on_id);
        if let Some(&id) = self.rule_index.get(&(follow_on, version)) {
            return id;
        }
        self.rules.push(RuleSlot {
            follow_on,
            version,
            rule: None,
            persisted: false,
        });
        let id = RuleId(NonZeroU32::new(self.rules.len() as u32).expect("arena below 4G rules"));
        self.rule_index.insert((follow_on, version), id);
        id
    }

    /// Fills the slot of a rule version from a changelog snapshot (validated like a record).
    pub fn restore_snapshot(&mut self, campaign: &Campaign) -> Result<RuleId, CatalogError> {
        self.check(campaign)?;
        let id = self.rule_id(&campaign.campaign_id, campaign.version);
        if self.slot(id).rule.is_none() && campaign.follow_on.is_some() {
            self.fill(id, campaign);
        }
        self.slot_mut(id).persisted = true;
        Ok(id)
    }

    fn check(&self, campaign: &Campaign) -> Result<(), CatalogError> {
        let problems = validate_campaign(campaign, &self.limits);
        if problems.is_empty() {
            Ok(())
        } else {
            Err(CatalogError::Invalid {
                campaign_id: campaign.campaign_id.clone(),
                version: campaign.version,
                problems,
            })
        }
    }

    /// Applies a catalog record. A version lower than the one known is ignored and counted.
    pub fn apply(&mut self, campaign: &Campaign) -> Result<CatalogChange, CatalogError> {
        self.check(campaign)?;
        if let Some(known) = self.campaigns.get(&campaign.campaign_id) {
            if campaign.version < known.version {
                self.stale_records += 1;
                return Ok(CatalogChange::None);
            }
        }
        self.unlink_trigger(&campaign.campaign_id);
        let rule = campaign.follow_on.as_ref().map(|r| {
            let id = self.rule_id(&campaign.campaign_id, campaign.version);
            self.fill(id, campaign);
            let names = &self.follow_on_names;
            let slots = &self.rules;
            let list = &mut self
                .interactions
                .entry(r.trigger.campaign_id.clone())
                .or_default()
                .triggered;
            list.push(id);
            // Follow-ons triggered by one event are evaluated in id order, whatever order
            // the catalog records arrived in.
            list.sort_by(|a, b| {
                names[slots[a.index()].follow_on as usize]
                    .cmp(&names[slots[b.index()].follow_on as usize])
            });
            id
        });
        self.campaigns.insert(
            campaign.campaign_id.clone(),
            CampaignEntry {
                status: campaign.status,
                version: campaign.version,
                published_at: campaign.published_at,
                backfill_since: campaign.backfill_since,
                starts_at: campaign.starts_at,
                ends_at: campaign.ends_at,
                rule,
            },
        );
        Ok(
            match (campaign.status, self.follow_on_idx(&campaign.campaign_id)) {
                (CampaignStatus::Stopped | CampaignStatus::Archived, Some(f)) => {
                    CatalogChange::FollowOnStopped(f)
                }
                _ => CatalogChange::None,
            },
        )
    }

    /// Applies a tombstone: the campaign is deleted.
    pub fn remove(&mut self, campaign_id: &str) -> CatalogChange {
        self.unlink_trigger(campaign_id);
        let known = self.campaigns.remove(campaign_id).is_some();
        match self.follow_on_idx(campaign_id) {
            Some(f) if known => CatalogChange::FollowOnDeleted(f),
            _ => CatalogChange::None,
        }
    }

    fn unlink_trigger(&mut self, campaign_id: &str) {
        let Some(old) = self.campaigns.get(campaign_id).and_then(|c| c.rule) else {
            return;
        };
        let trigger = match self.slot(old).rule.as_deref() {
            Some(r) => r.trigger_campaign.clone(),
            None => return,
        };
        if let Some(r) = self.interactions.get_mut(&trigger) {
            r.triggered.retain(|&id| id != old);
            if r.triggered.is_empty() && r.exception_kinds == KindSet::default() {
                self.interactions.remove(&trigger);
            }
        }
    }

    /// All campaigns (id, entry), sorted by id.
    pub fn campaigns(&self) -> Vec<(&str, &CampaignEntry)> {
        let mut v: Vec<_> = self
            .campaigns
            .iter()
            .map(|(k, v)| (k.as_str(), v))
            .collect();
        v.sort_by(|a, b| a.0.cmp(b.0));
        v
    }

    /// The longest delay of any current follow-on (for the simulator's default horizon).
    pub fn longest_delay_ms(&self) -> i64 {
        self.campaigns
            .values()
            .filter_map(|c| c.rule)
            .filter_map(|id| self.slot(id).rule.as_deref())
            .map(|r| match r.delay {
                CompiledDelay::Immediate => 0,
                CompiledDelay::After { ms } => ms,
                CompiledDelay::NextWeekday { .. } => 8 * time::DAY_SECONDS * SECOND_MS,
                CompiledDelay::CalendarDays { days, .. } => {
                    (days as i64 + 1) * time::DAY_SECONDS * SECOND_MS
                }
            })
            .max()
            .unwrap_or(0)
    }
}
