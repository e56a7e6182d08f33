//! The per-task state machine of SPEC §3.
//!
//! ```text
//!   catalog record ─► apply_campaign ─┐
//!   input record  ──► process ────────┼─► Vec<Effect>  (Send, Decision, PutState, ClearState)
//!   time          ──► advance_to ─────┘        executed by the caller, in one place
//! ```
//!
//! Nothing here reads a clock or does I/O: event time comes with the records, and `now`
//! (the wall clock, used for `emitted_at` and the overdue policy) is an argument. The engine
//! keeps a *clock*: the time up to which timers have fired — the task's stream time, or the
//! wall clock when the caller advances a caught-up task. Invariant: no pending send is due at
//! or before the clock; a trigger that arrives late enough to be due already fires at once.
//!
//! Order at one instant (SPEC §3): before a record with time `t` is processed, every timer
//! with `due_at <= t` fires; within a record, exceptions are applied before triggers. Timers
//! due at the same instant fire in `(user_id, follow_on_id)` order, so a restored engine
//! decides exactly like the one it was exported from.
//!
//! Time arithmetic never panics or wraps: `process` refuses an event outside the event-time
//! range ([`crate::time::check_event_range`]) before touching anything, and times read back
//! from state (any `i64`) are only compared or combined with saturating arithmetic.

mod decisions;
mod firing;
mod input;
mod state;
mod store;

use std::cmp::Ordering;

use compact_str::CompactString;
use uuid::Uuid;

use decisions::DecisionFor;
use store::TimerQueue;
pub use store::{PendingSend, Receipt, UserIdx, UserTable};

use crate::catalog::{
    Catalog, CatalogChange, CatalogError, CompiledDelay, FollowOnIdx, Rule, RuleId,
};
use crate::model::{
    Campaign, CampaignStatus, Decision, DecisionOutcome, DecisionReason, InputCoordinates,
    InputEvent, Interaction, InteractionKind, PendingSendView, RuleSnapshot, SendCommand,
    ShadowRecord, TaskProgress, TaskStateRecord, TimestampMs, TriggerRef, UserEvent, UserEventType,
    UserState, UserStateView,
};
use crate::time::{self, EventTimeError};
use crate::validate::Limits;
use smallvec::SmallVec;

/// What the caller must do. Executed in one place (the simulator, or the Kafka task).
///
/// Effects live in a buffer the caller reuses, and every push copies a whole `Effect`: the
/// common variants (sends, decisions, user changes) are held inline, the large and rare ones
/// (shadow records, rule snapshots) boxed, so that an effect is the size of a send-command
/// rather than of a rule snapshot.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// Emit a send-command.
    Send(SendCommand),
    /// Record a decision (decision log).
    Decision(Decision),
    /// A would-be send-command or a decision of a `SHADOW` follow-on: for the shadow topic
    /// only, never for the send-command topic or the decision log. Built whether the
    /// decision log is on or not — the shadow topic is where a shadow is evaluated.
    Shadow(Box<ShadowRecord>),
    /// Write a changelog record (a rule snapshot) under its key.
    PutState(Box<TaskStateRecord>),
    /// The user's state changed: write [`Engine::user_changelog_record`] for this user to the
    /// changelog before the next commit (a tombstone when it is `None`). Exporting at commit
    /// time rather than per change writes a busy user once per transaction.
    UserChanged {
        user_id: CompactString,
        /// Where the user's state was when it changed: lets the state be read at commit
        /// without looking the id up again ([`Engine::user_state_view_at`]).
        slot: SlotHint,
    },
}

/// Where in its engine a user's state was when an effect was made: a place to look first,
/// not part of what the effect means — two engines holding the same state may keep it in
/// different places — so any two hints compare equal.
#[derive(Debug, Clone, Copy)]
pub struct SlotHint(pub(crate) UserIdx);

impl PartialEq for SlotHint {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for SlotHint {}

/// Counters of inputs the engine ignored or repaired; exported as metrics by the runtime.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Counters {
    pub unknown_interaction_kinds: u64,
    pub unknown_user_event_types: u64,
    /// Events whose `user_time_zone` is not an IANA name (the rule's zone was used).
    pub unknown_time_zones: u64,
    /// Records older than the task's clock (processed at their own event time).
    pub late_records: u64,
    /// Pending sends restored with a rule version whose snapshot was missing (the current
    /// version was used).
    pub unresolved_rule_versions: u64,
    /// Decisions taken, by outcome and reason (counted with the decision log on or off).
    decisions: [[u64; DecisionReason::ALL.len()]; DecisionOutcome::ALL.len()],
}

impl Counters {
    fn decided(&mut self, outcome: DecisionOutcome, reason: DecisionReason) {
        self.decisions[outcome as usize][reason as usize] += 1;
    }

    /// How many decisions of this outcome and reason were taken.
    pub fn decisions(&self, outcome: DecisionOutcome, reason: DecisionReason) -> u64 {
        self.decisions[outcome as usize][reason as usize]
    }

    /// Every (outcome, reason) pair that was counted at least once.
    pub fn decision_counts(
        &self,
    ) -> impl Iterator<Item = (DecisionOutcome, DecisionReason, u64)> + '_ {
        DecisionOutcome::ALL.into_iter().flat_map(move |o| {
            DecisionReason::ALL
                .into_iter()
                .map(move |r| (o, r, self.decisions(o, r)))
                .filter(|(_, _, n)| *n > 0)
        })
    }

    /// All decisions of an outcome, whatever the reason.
    pub fn outcome_total(&self, outcome: DecisionOutcome) -> u64 {
        self.decisions[outcome as usize].iter().sum()
    }
}

/// Errors restoring from the changelog.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    #[error("changelog record {key:?} has neither user state, rule snapshot nor progress")]
    Empty { key: String },
    #[error("changelog rule snapshot: {0}")]
    Snapshot(#[from] CatalogError),
    #[error("changelog state of user {user_id:?}: {message}")]
    User { user_id: String, message: String },
}

/// The namespace of command ids (UUID v5).
const COMMAND_ID_NAMESPACE: Uuid = Uuid::from_u128(0x3c8f_5a2e_91d4_4b7a_8e0f_6d2c_1b9a_7e55);

/// The deterministic id of the send-command of one trigger: a UUID v5 over the follow-on id,
/// its version at scheduling, the user id and the trigger event id (length-prefixed, so no
/// two different tuples share an input).
///
/// Computed once per send: the name is hashed as it is laid out, without building it first,
/// and the id is written out in its hyphenated lower-case form without the formatter.
pub fn command_id(
    follow_on_id: &str,
    version: i64,
    user_id: &str,
    trigger_event_id: &str,
) -> String {
    use sha1::{Digest, Sha1};

    let mut hasher = Sha1::new();
    hasher.update(COMMAND_ID_NAMESPACE.as_bytes());
    for part in [
        follow_on_id.as_bytes(),
        user_id.as_bytes(),
        trigger_event_id.as_bytes(),
    ] {
        hasher.update((part.len() as u32).to_be_bytes());
        hasher.update(part);
    }
    hasher.update(version.to_be_bytes());
    let digest = hasher.finalize();
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    let id = uuid::Builder::from_sha1_bytes(bytes).into_uuid();
    let mut text = [0u8; uuid::fmt::Hyphenated::LENGTH];
    id.hyphenated().encode_lower(&mut text).to_string()
}

/// Where effects go: a buffer the caller drains.
pub type Effects = Vec<Effect>;

/// The state machine of one task.
#[derive(Debug)]
pub struct Engine {
    catalog: Catalog,
    users: UserTable,
    timers: TimerQueue,
    /// Pending sends held (the timer queue may hold more, stale, entries).
    pending_count: usize,
    /// Timers due at or before this time have fired.
    clock: Option<TimestampMs>,
    counters: Counters,
    /// Build decision records (off when the runtime has no decision log to write).
    decision_log: bool,
    // Scratch buffers reused across calls.
    due_users: Vec<UserIdx>,
    firing: Vec<(UserIdx, PendingSend)>,
}

impl Engine {
    pub fn new(limits: Limits) -> Self {
        Self {
            catalog: Catalog::new(limits),
            users: UserTable::default(),
            timers: TimerQueue::default(),
            pending_count: 0,
            clock: None,
            counters: Counters::default(),
            decision_log: true,
            due_users: Vec::new(),
            firing: Vec::new(),
        }
    }

    /// Turns decision records on (the default) or off. Off saves their allocation when no
    /// decision log is configured; everything else is unchanged.
    pub fn set_decision_log(&mut self, on: bool) {
        self.decision_log = on;
    }

    pub fn catalog(&self) -> &Catalog {
        &self.catalog
    }

    pub fn counters(&self) -> &Counters {
        &self.counters
    }

    /// Number of pending sends in the task.
    pub fn pending_count(&self) -> usize {
        self.pending_count
    }

    /// Timer entries due before `t` (an upper bound of the pending sends due by then:
    /// entries of cancelled sends are dropped lazily).
    pub fn timers_due_before(&self, t: TimestampMs) -> usize {
        self.timers.entries_before(t)
    }

    /// Number of users with state in the task.
    pub fn user_count(&self) -> usize {
        self.users.len()
    }

    /// The time up to which timers have fired (the task's stream time, or the wall clock a
    /// caught-up task was advanced to).
    pub fn clock(&self) -> Option<TimestampMs> {
        self.clock
    }

    /// When the next timer is due: the caller's wake-up hint. The entry may belong to a send
    /// cancelled since; advancing to it then fires nothing, but still moves the clock.
    pub fn next_due(&self) -> Option<TimestampMs> {
        self.timers.peek_due()
    }

    // ---------------------------------------------------------------- catalog

    /// Applies a catalog record; stopping or archiving a follow-on drops its pending sends.
    pub fn apply_campaign(
        &mut self,
        campaign: &Campaign,
        now: TimestampMs,
        out: &mut Effects,
    ) -> Result<(), CatalogError> {
        let change = self.catalog.apply(campaign)?;
        self.drop_for_change(change, now, out);
        Ok(())
    }

    /// Applies a catalog tombstone; the follow-on's pending sends are dropped.
    pub fn remove_campaign(&mut self, campaign_id: &str, now: TimestampMs, out: &mut Effects) {
        let change = self.catalog.remove(campaign_id);
        self.drop_for_change(change, now, out);
    }

    fn drop_for_change(&mut self, change: CatalogChange, now: TimestampMs, out: &mut Effects) {
        let (follow_on, reason) = match change {
            CatalogChange::None => return,
            CatalogChange::FollowOnStopped(f) => (f, DecisionReason::FollowOnInactive),
            CatalogChange::FollowOnDeleted(f) => (f, DecisionReason::FollowOnDeleted),
        };
        let mut affected: Vec<UserIdx> = self
            .users
            .users()
            .filter(|&u| {
                self.users
                    .pending(u)
                    .any(|p| self.catalog.slot(p.rule).follow_on == follow_on)
            })
            .collect();
        affected.sort_by(|&a, &b| self.users.user_id(a).cmp(self.users.user_id(b)));
        for user in affected {
            let catalog = &self.catalog;
            let dropped = self
                .users
                .take_pending(user, |p| catalog.slot(p.rule).follow_on == follow_on);
            self.pending_count -= dropped.len();
            for p in &dropped {
                self.record_drop(user, p, reason, now, out);
            }
            self.emit_user_state(user, out);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The id as the definition reads: UUID v5 of the length-prefixed name.
    fn command_id_by_definition(
        follow_on_id: &str,
        version: i64,
        user: &str,
        event: &str,
    ) -> String {
        let mut name = Vec::new();
        for part in [follow_on_id, user, event] {
            name.extend_from_slice(&(part.len() as u32).to_be_bytes());
            name.extend_from_slice(part.as_bytes());
        }
        name.extend_from_slice(&version.to_be_bytes());
        Uuid::new_v5(&COMMAND_ID_NAMESPACE, &name).to_string()
    }

    #[test]
    fn command_ids_are_the_uuid_v5_of_the_length_prefixed_name() {
        let long = "x".repeat(300);
        let ids = [
            "",
            "a",
            "abandoned-cart-email",
            "user-000000000000042",
            "ü€",
            long.as_str(),
        ];
        for f in ids {
            for u in ids {
                for e in ids {
                    for v in [0, 1, -1, i64::MAX, 1_767_225_600_000] {
                        assert_eq!(command_id(f, v, u, e), command_id_by_definition(f, v, u, e));
                    }
                }
            }
        }
    }
}
