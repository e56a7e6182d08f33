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

mod store;

use std::cmp::Ordering;

use compact_str::CompactString;
use uuid::Uuid;

use store::TimerQueue;
pub use store::{PendingSend, Receipt, UserIdx, UserTable};

use crate::catalog::{
    Catalog, CatalogChange, CatalogError, CompiledDelay, FollowOnIdx, Rule, RuleId,
};
use crate::model::{
    Campaign, CampaignStatus, Decision, DecisionOutcome, DecisionReason, InputCoordinates,
    InputEvent, Interaction, InteractionKind, PendingSendState, ReceiptState, RuleSnapshot,
    SendCommand, ShadowRecord, TaskProgress, TaskStateRecord, TimestampMs, TriggerRef, UserEvent,
    UserEventType, UserState,
};
use crate::time::{self, EventTimeError};
use crate::validate::Limits;

/// What the caller must do. Executed in one place (the simulator, or the Kafka task).
// Effects live in a buffer the caller reuses; boxing the large variants would cost an
// allocation per decision for no gain.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Effect {
    /// Emit a send-command.
    Send(SendCommand),
    /// Record a decision (decision log).
    Decision(Decision),
    /// A would-be send-command or a decision of a `SHADOW` follow-on: for the shadow topic
    /// only, never for the send-command topic or the decision log. Built whether the
    /// decision log is on or not — the shadow topic is where a shadow is evaluated.
    Shadow(ShadowRecord),
    /// Write a changelog record (a rule snapshot) under its key.
    PutState(TaskStateRecord),
    /// The user's state changed: write [`Engine::user_changelog_record`] for this user to the
    /// changelog before the next commit (a tombstone when it is `None`). Exporting at commit
    /// time rather than per change writes a busy user once per transaction.
    UserChanged { user_id: CompactString },
}

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
pub fn command_id(
    follow_on_id: &str,
    version: i64,
    user_id: &str,
    trigger_event_id: &str,
) -> String {
    let mut bytes =
        Vec::with_capacity(follow_on_id.len() + user_id.len() + trigger_event_id.len() + 32);
    for part in [
        follow_on_id.as_bytes(),
        user_id.as_bytes(),
        trigger_event_id.as_bytes(),
    ] {
        bytes.extend_from_slice(&(part.len() as u32).to_be_bytes());
        bytes.extend_from_slice(part);
    }
    bytes.extend_from_slice(&version.to_be_bytes());
    Uuid::new_v5(&COMMAND_ID_NAMESPACE, &bytes).to_string()
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

    // ---------------------------------------------------------------- input

    /// Processes one input record. `source` names where it came from (for decisions); `now`
    /// is the wall clock.
    ///
    /// An event whose `occurred_at` lies outside the range the rules compute with
    /// ([`time::check_event_range`]) is rejected: nothing is emitted, and neither the clock
    /// nor any state changes. The caller treats it as bad input. (The edge should have
    /// caught it; this keeps a missed check from moving stream time to the end of time.)
    pub fn process(
        &mut self,
        event: &InputEvent,
        source: Option<&InputCoordinates>,
        now: TimestampMs,
        out: &mut Effects,
    ) -> Result<(), EventTimeError> {
        let t = event.occurred_at();
        time::check_event_range(t)?;
        self.note_lateness(t);
        self.advance_to(t, now, out);
        match event {
            InputEvent::Interaction(i) => self.on_interaction(i, source, now, out),
            InputEvent::UserEvent(e) => self.on_user_event(e, source, out),
        }
        Ok(())
    }

    fn on_interaction(
        &mut self,
        event: &Interaction,
        source: Option<&InputCoordinates>,
        now: TimestampMs,
        out: &mut Effects,
    ) {
        if event.kind == InteractionKind::Unknown {
            self.counters.unknown_interaction_kinds += 1;
            return;
        }
        let mut changed = None;
        if self
            .catalog
            .may_cancel_interaction(&event.campaign_id, event.kind)
        {
            let matches = |r: &Rule| {
                r.exceptions
                    .iter()
                    .any(|e| e.matches_interaction(&event.campaign_id, event.kind))
            };
            changed = self.cancel_matching(
                &event.user_id,
                &event.event_id,
                event.occurred_at,
                matches,
                source,
                out,
            );
        }
        let triggered = self.catalog.rules_triggered_on(&event.campaign_id).len();
        for i in 0..triggered {
            let rule_id = self.catalog.rules_triggered_on(&event.campaign_id)[i];
            let matches = self
                .catalog
                .slot(rule_id)
                .rule
                .as_deref()
                .is_some_and(|r| r.is_triggered_by(event.kind, event.qualifier.as_deref()));
            if matches {
                if let Some(user) = self.on_trigger(rule_id, event, source, now, out) {
                    changed = Some(user);
                }
            }
        }
        if let Some(user) = changed {
            self.emit_user_state(user, out);
        }
        // A late trigger may have scheduled a send that is due already.
        if let Some(clock) = self.clock {
            self.fire_due(clock, now, out);
        }
    }

    fn on_user_event(
        &mut self,
        event: &UserEvent,
        source: Option<&InputCoordinates>,
        out: &mut Effects,
    ) {
        if event.event_type == UserEventType::Unknown {
            self.counters.unknown_user_event_types += 1;
            return;
        }
        if !self.catalog.may_cancel_user_event(event.event_type) {
            return;
        }
        let matches = |r: &Rule| r.exceptions.iter().any(|e| e.matches_user_event(event));
        if let Some(user) = self.cancel_matching(
            &event.user_id,
            &event.event_id,
            event.occurred_at,
            matches,
            source,
            out,
        ) {
            self.emit_user_state(user, out);
        }
    }

    /// Cancels the user's pending sends whose rule version lists the event `event_id` at `t`
    /// as an exception (`matches`), inside `[triggered_at, due_at)` and not their own
    /// trigger. Returns the user's slot when something was cancelled.
    fn cancel_matching(
        &mut self,
        user_id: &str,
        event_id: &str,
        t: TimestampMs,
        matches: impl Fn(&Rule) -> bool,
        source: Option<&InputCoordinates>,
        out: &mut Effects,
    ) -> Option<UserIdx> {
        let user = self
            .users
            .find(user_id)
            .filter(|&u| self.users.has_pending(u))?;
        let catalog = &self.catalog;
        let cancelled = self.users.take_pending(user, |p| {
            p.triggered_at <= t
                && t < p.due_at
                && p.trigger_event_id != event_id
                && catalog.rule_for_pending(p.rule).is_some_and(&matches)
        });
        if cancelled.is_empty() {
            return None;
        }
        self.record_cancellations(user, &cancelled, event_id, t, source, out);
        Some(user)
    }

    fn record_cancellations(
        &mut self,
        user: UserIdx,
        cancelled: &[PendingSend],
        cause_event_id: &str,
        t: TimestampMs,
        source: Option<&InputCoordinates>,
        out: &mut Effects,
    ) {
        self.pending_count -= cancelled.len();
        // In follow-on id order, like firing: stored order differs after a restore.
        let mut cancelled: Vec<&PendingSend> = cancelled.iter().collect();
        let name = |p: &PendingSend| {
            self.catalog
                .follow_on_name(self.catalog.slot(p.rule).follow_on)
        };
        cancelled.sort_by(|a, b| name(a).cmp(name(b)));
        for p in cancelled {
            self.counters
                .decided(DecisionOutcome::Cancelled, DecisionReason::Exception);
            out.extend(self.about(user, p).decision(
                DecisionOutcome::Cancelled,
                DecisionReason::Exception,
                t,
                Some(cause_event_id),
                source,
                Some(p.due_at),
                None,
            ));
        }
    }

    /// Checks SPEC §3 rules 1–5 for one matching follow-on, in their order of precedence.
    /// Returns the plan, or the reason to ignore the trigger; and whether the event's time
    /// zone was unknown.
    fn check_trigger(
        &self,
        rule_id: RuleId,
        event: &Interaction,
    ) -> (Result<TriggerPlan, Ignore>, bool) {
        let t = event.occurred_at;
        let follow_on = self.catalog.slot(rule_id).follow_on;
        let entry = self
            .catalog
            .campaign(self.catalog.follow_on_name(follow_on))
            .expect("current rules are in the catalog");
        let rule = self
            .catalog
            .slot(rule_id)
            .rule
            .as_deref()
            .expect("current rules are compiled");
        let ignore = |reason, due_at| (Err(Ignore { reason, due_at }), false);

        // 1. Active follow-on and active trigger campaign.
        if entry.status != CampaignStatus::Active {
            return ignore(DecisionReason::FollowOnInactive, None);
        }
        if !self.catalog.is_active(&event.campaign_id) {
            return ignore(DecisionReason::TriggerCampaignInactive, None);
        }
        // 2. Only interactions after the follow-on was published — or, for a version
        // published with a backfill start, after that.
        let backfill = entry.published_at.is_some_and(|p| t < p);
        if backfill && entry.backfill_since.is_none_or(|b| t < b) {
            return ignore(DecisionReason::BeforePublish, None);
        }
        // 3. The follow-on's window, for the trigger and for the due time.
        if entry.starts_at.is_some_and(|s| t < s) || entry.ends_at.is_some_and(|e| t >= e) {
            return ignore(DecisionReason::OutsideWindow, None);
        }
        let (due_at, zone_unknown) = due_time(rule, event);
        // A due time that cannot be represented lies beyond any end: "due after the end".
        // Unreachable for an event inside the range `process` checks.
        let Some(due_at) = due_at else {
            return (
                Err(Ignore {
                    reason: DecisionReason::DueAfterEnd,
                    due_at: None,
                }),
                zone_unknown,
            );
        };
        let ignore = |reason| {
            (
                Err(Ignore {
                    reason,
                    due_at: Some(due_at),
                }),
                zone_unknown,
            )
        };
        if entry.ends_at.is_some_and(|e| due_at >= e) {
            return ignore(DecisionReason::DueAfterEnd);
        }
        // 4. Re-eligibility, measured from the last send's due time.
        let user = self.users.find(&event.user_id);
        if let Some(last) = user.and_then(|u| self.users.receipt(u, follow_on)) {
            // `None` is NEVER: a receipt means not eligible. A restored receipt may carry any
            // time; saturating keeps "eligible from the end of time" from wrapping around.
            let eligible_from = rule
                .reeligible_after_ms
                .map(|after| last.saturating_add(after));
            if eligible_from.is_none_or(|from| t < from) {
                return ignore(DecisionReason::NotReeligible);
            }
        }
        // 5. Already pending: keep the first, or restart.
        let existing = user.and_then(|u| {
            self.users
                .pending(u)
                .find(|p| self.catalog.slot(p.rule).follow_on == follow_on)
                .cloned()
        });
        if existing.is_some() && !rule.restart {
            return ignore(DecisionReason::AlreadyPending);
        }
        let plan = TriggerPlan {
            user,
            follow_on,
            due_at,
            immediate: rule.delay == CompiledDelay::Immediate,
            replaces: existing,
            backfill,
        };
        (Ok(plan), zone_unknown)
    }

    /// Evaluates one matching follow-on for a trigger interaction (SPEC §3 rules 1–6).
    /// Returns the user's slot when the user's state changed.
    fn on_trigger(
        &mut self,
        rule_id: RuleId,
        event: &Interaction,
        source: Option<&InputCoordinates>,
        now: TimestampMs,
        out: &mut Effects,
    ) -> Option<UserIdx> {
        let t = event.occurred_at;
        let (checked, zone_unknown) = self.check_trigger(rule_id, event);
        if zone_unknown {
            self.counters.unknown_time_zones += 1;
        }
        let plan = match checked {
            Ok(plan) => plan,
            Err(Ignore { reason, due_at }) => {
                self.counters.decided(DecisionOutcome::Ignored, reason);
                let follow_on = self.catalog.slot(rule_id).follow_on;
                let d = DecisionFor {
                    enabled: self.decision_log,
                    shadow: self.catalog.is_shadow(follow_on),
                    user_id: &event.user_id,
                    follow_on_id: self.catalog.follow_on_name(follow_on),
                    version: self.catalog.slot(rule_id).version,
                    trigger_event_id: &event.event_id,
                };
                out.extend(d.decision(
                    DecisionOutcome::Ignored,
                    reason,
                    t,
                    Some(&event.event_id),
                    source,
                    due_at,
                    None,
                ));
                return None;
            }
        };

        // 6. Send now, or schedule.
        let user = match plan.user {
            Some(u) => u,
            None => self.users.find_or_insert(&event.user_id),
        };
        let mut reason = if plan.backfill {
            DecisionReason::Backfill
        } else {
            DecisionReason::Trigger
        };
        if let Some(old) = plan.replaces {
            let catalog = &self.catalog;
            let replaced = self
                .users
                .take_pending(user, |p| catalog.slot(p.rule).follow_on == plan.follow_on);
            self.pending_count -= replaced.len();
            self.counters
                .decided(DecisionOutcome::Cancelled, DecisionReason::Restart);
            out.extend(self.about(user, &old).decision(
                DecisionOutcome::Cancelled,
                DecisionReason::Restart,
                t,
                Some(&event.event_id),
                source,
                Some(old.due_at),
                None,
            ));
            reason = DecisionReason::Restart;
        }
        let pending = PendingSend {
            due_at: plan.due_at,
            triggered_at: t,
            trigger_event_id: CompactString::new(&event.event_id),
            rule: rule_id,
            trigger_kind: event.kind,
        };
        if plan.immediate {
            let reason = if plan.backfill {
                DecisionReason::Backfill
            } else {
                DecisionReason::Immediate
            };
            self.send(user, &pending, now, reason, source, out);
        } else {
            self.persist_rule(rule_id, out);
            self.counters.decided(DecisionOutcome::Scheduled, reason);
            out.extend(self.about(user, &pending).decision(
                DecisionOutcome::Scheduled,
                reason,
                t,
                Some(&event.event_id),
                source,
                Some(plan.due_at),
                None,
            ));
            self.timers.push(plan.due_at, user);
            self.users.add_pending(user, pending);
            self.pending_count += 1;
        }
        Some(user)
    }

    // ---------------------------------------------------------------- time

    /// Moves the clock to `time` (if later) and fires every timer due by then. Called with a
    /// record's event time before processing it, and by the runtime with the wall clock when
    /// the task is caught up. `now` is the wall clock. Any `i64` is safe for both.
    pub fn advance_to(&mut self, time: TimestampMs, now: TimestampMs, out: &mut Effects) {
        if self.clock.is_none_or(|c| c < time) {
            self.clock = Some(time);
        }
        let clock = self.clock.expect("set above");
        self.fire_due(clock, now, out);
    }

    fn note_lateness(&mut self, t: TimestampMs) {
        if self.clock.is_some_and(|c| t < c) {
            self.counters.late_records += 1;
        }
    }

    fn fire_due(&mut self, until: TimestampMs, now: TimestampMs, out: &mut Effects) {
        let mut batch = std::mem::take(&mut self.due_users);
        let mut firing = std::mem::take(&mut self.firing);
        while let Some(due) = {
            batch.clear();
            self.timers.pop_earliest(until, &mut batch)
        } {
            batch.sort_unstable();
            batch.dedup();
            firing.clear();
            for &user in &batch {
                for p in self.users.take_pending(user, |p| p.due_at == due) {
                    firing.push((user, p));
                }
            }
            self.pending_count -= firing.len();
            firing.sort_by(|a, b| self.fire_order(a, b));
            for (user, p) in &firing {
                self.fire(*user, p, now, out);
            }
            // Sorted by user, so each user's state is reported once.
            for (i, (user, _)) in firing.iter().enumerate() {
                if i == 0 || firing[i - 1].0 != *user {
                    self.emit_user_state(*user, out);
                }
            }
        }
        self.due_users = batch;
        self.firing = firing;
        self.maybe_compact_timers();
    }

    fn fire_order(&self, a: &(UserIdx, PendingSend), b: &(UserIdx, PendingSend)) -> Ordering {
        self.users
            .user_id(a.0)
            .cmp(self.users.user_id(b.0))
            .then_with(|| {
                let fa = self
                    .catalog
                    .follow_on_name(self.catalog.slot(a.1.rule).follow_on);
                let fb = self
                    .catalog
                    .follow_on_name(self.catalog.slot(b.1.rule).follow_on);
                fa.cmp(fb)
            })
    }

    /// A timer came due: drop it (inactive, deleted, past the end, too late) or send it.
    fn fire(&mut self, user: UserIdx, p: &PendingSend, now: TimestampMs, out: &mut Effects) {
        let follow_on = self.catalog.slot(p.rule).follow_on;
        let entry = self
            .catalog
            .campaign(self.catalog.follow_on_name(follow_on));
        let rule = self.catalog.rule_for_pending(p.rule);
        let drop_reason = match (entry, rule) {
            (None, _) | (_, None) => Some(DecisionReason::FollowOnDeleted),
            (Some(e), _) if e.status != CampaignStatus::Active => {
                Some(DecisionReason::FollowOnInactive)
            }
            (Some(e), _) if e.ends_at.is_some_and(|end| p.due_at >= end) => {
                Some(DecisionReason::PastEnd)
            }
            (_, Some(r))
                if r.drop_if_late_by_ms
                    .is_some_and(|bound| now.saturating_sub(p.due_at) > bound) =>
            {
                Some(DecisionReason::Overdue)
            }
            _ => None,
        };
        match drop_reason {
            Some(reason) => self.record_drop(user, p, reason, now, out),
            None => self.send(user, p, now, DecisionReason::Due, None, out),
        }
    }

    /// A pending send dropped without sending (time or a catalog change caused it).
    fn record_drop(
        &mut self,
        user: UserIdx,
        p: &PendingSend,
        reason: DecisionReason,
        now: TimestampMs,
        out: &mut Effects,
    ) {
        self.counters.decided(DecisionOutcome::Dropped, reason);
        out.extend(self.about(user, p).decision(
            DecisionOutcome::Dropped,
            reason,
            now,
            None,
            None,
            Some(p.due_at),
            None,
        ));
    }

    /// Emits the send-command of `p` and records the receipt.
    fn send(
        &mut self,
        user: UserIdx,
        p: &PendingSend,
        now: TimestampMs,
        reason: DecisionReason,
        source: Option<&InputCoordinates>,
        out: &mut Effects,
    ) {
        let slot = self.catalog.slot(p.rule);
        let follow_on = slot.follow_on;
        let rule = self
            .catalog
            .rule_for_pending(p.rule)
            .expect("checked by the caller");
        let message = &rule
            .campaign
            .follow_on
            .as_ref()
            .expect("a follow-on")
            .message;
        let user_id = self.users.user_id(user);
        let follow_on_id = self.catalog.follow_on_name(follow_on);
        let version = slot.version;
        let id = command_id(follow_on_id, version, user_id, &p.trigger_event_id);
        let command = SendCommand {
            command_id: id.clone(),
            user_id: user_id.to_string(),
            campaign_id: follow_on_id.to_string(),
            campaign_version: version,
            channel: message.channel,
            template_id: message.template_id.clone(),
            payload: message.payload.clone(),
            trigger: TriggerRef {
                campaign_id: rule.trigger_campaign.clone(),
                kind: p.trigger_kind,
                event_id: p.trigger_event_id.to_string(),
                occurred_at: p.triggered_at,
            },
            due_at: p.due_at,
            emitted_at: now,
        };
        // Sent at once for its trigger (immediate, or immediate and backfilled), or fired.
        let at_once = matches!(reason, DecisionReason::Immediate | DecisionReason::Backfill);
        let (outcome, decided_at, cause) = if at_once {
            (
                DecisionOutcome::Sent,
                p.triggered_at,
                Some(p.trigger_event_id.as_str()),
            )
        } else {
            (DecisionOutcome::Fired, now, None)
        };
        let decision = self.about(user, p).decision(
            outcome,
            reason,
            decided_at,
            cause,
            source,
            Some(p.due_at),
            Some(id),
        );
        if self.catalog.is_shadow(follow_on) {
            out.push(Effect::Shadow(ShadowRecord::send_command(command)));
        } else {
            out.push(Effect::Send(command));
        }
        out.extend(decision);
        self.counters.decided(outcome, reason);
        self.users.set_receipt(user, follow_on, p.due_at);
    }

    fn maybe_compact_timers(&mut self) {
        if self.timers.len() > 2 * self.pending_count + 4096 {
            let users = &self.users;
            let live: Vec<(TimestampMs, UserIdx)> = users
                .users()
                .flat_map(|u| users.pending(u).map(move |p| (p.due_at, u)))
                .collect();
            self.timers.rebuild(live.into_iter());
        }
    }

    // ---------------------------------------------------------------- state export

    /// Writes the rule snapshot of a version once per task, before the first pending send
    /// that uses it, so that the pending send can be restored after the catalog moved on.
    fn persist_rule(&mut self, rule_id: RuleId, out: &mut Effects) {
        let slot = self.catalog.slot_mut(rule_id);
        if slot.persisted {
            return;
        }
        slot.persisted = true;
        if let Some(rule) = slot.rule.as_deref() {
            out.push(Effect::PutState(TaskStateRecord {
                user: None,
                rule: Some(RuleSnapshot {
                    campaign: rule.campaign.clone(),
                }),
                progress: None,
            }));
        }
    }

    /// Reports that a user's state changed; the slot is freed if nothing is left in it.
    fn emit_user_state(&mut self, user: UserIdx, out: &mut Effects) {
        // Inline for ids up to 24 bytes: no allocation per change.
        out.push(Effect::UserChanged {
            user_id: CompactString::new(self.users.user_id(user)),
        });
        self.users.release_if_empty(user);
    }

    fn export_slot(&self, user: UserIdx) -> Option<UserState> {
        let mut pending: Vec<PendingSendState> = self
            .users
            .pending(user)
            .map(|p| {
                let slot = self.catalog.slot(p.rule);
                let follow_on_id = self.catalog.follow_on_name(slot.follow_on);
                PendingSendState {
                    follow_on_id: follow_on_id.to_string(),
                    follow_on_version: slot.version,
                    trigger: TriggerRef {
                        campaign_id: self
                            .catalog
                            .rule_for_pending(p.rule)
                            .map(|r| r.trigger_campaign.clone())
                            .unwrap_or_default(),
                        kind: p.trigger_kind,
                        event_id: p.trigger_event_id.to_string(),
                        occurred_at: p.triggered_at,
                    },
                    due_at: p.due_at,
                }
            })
            .collect();
        let mut receipts: Vec<ReceiptState> = self
            .users
            .receipts(user)
            .iter()
            .map(|r| ReceiptState {
                follow_on_id: self.catalog.follow_on_name(r.follow_on).to_string(),
                last_sent_at: r.last_sent_at,
            })
            .collect();
        if pending.is_empty() && receipts.is_empty() {
            return None;
        }
        pending.sort_by(|a, b| (a.due_at, &a.follow_on_id).cmp(&(b.due_at, &b.follow_on_id)));
        receipts.sort_by(|a, b| a.follow_on_id.cmp(&b.follow_on_id));
        Some(UserState {
            user_id: self.users.user_id(user).to_string(),
            pending,
            receipts,
        })
    }

    /// A user's state, if the user has any.
    pub fn export_user(&self, user_id: &str) -> Option<UserState> {
        self.users.find(user_id).and_then(|u| self.export_slot(u))
    }

    /// The changelog entry of a user: its key, and the value (`None`: a tombstone).
    pub fn user_changelog_record(&self, user_id: &str) -> (String, Option<TaskStateRecord>) {
        let value = self.export_user(user_id).map(|state| TaskStateRecord {
            user: Some(state),
            rule: None,
            progress: None,
        });
        (crate::model::user_state_key(user_id), value)
    }

    /// The task's progress record (its clock), written by the runtime with each commit.
    pub fn progress_record(&self) -> Option<TaskStateRecord> {
        self.clock.map(|stream_time| TaskStateRecord {
            user: None,
            rule: None,
            progress: Some(TaskProgress { stream_time }),
        })
    }

    /// Every changelog record that describes this task: rule snapshots of the versions in
    /// use, the progress record, and each user's state (sorted by user id).
    pub fn export_all(&self) -> Vec<TaskStateRecord> {
        let mut in_use: Vec<RuleId> = self
            .users
            .users()
            .flat_map(|u| self.users.pending(u).map(|p| p.rule))
            .collect();
        // By follow-on id and version: the same state exports the same way in any engine.
        in_use.sort_by_key(|id| {
            let slot = self.catalog.slot(*id);
            (self.catalog.follow_on_name(slot.follow_on), slot.version)
        });
        in_use.dedup();
        let mut records: Vec<TaskStateRecord> = in_use
            .into_iter()
            .filter_map(|id| self.catalog.slot(id).rule.as_deref())
            .map(|r| TaskStateRecord {
                user: None,
                rule: Some(RuleSnapshot {
                    campaign: r.campaign.clone(),
                }),
                progress: None,
            })
            .collect();
        records.extend(self.progress_record());
        let mut users: Vec<UserIdx> = self.users.users().collect();
        users.sort_by(|&a, &b| self.users.user_id(a).cmp(self.users.user_id(b)));
        records.extend(users.into_iter().filter_map(|u| {
            self.export_slot(u).map(|state| TaskStateRecord {
                user: Some(state),
                rule: None,
                progress: None,
            })
        }));
        records
    }

    /// Makes room for about `users` more users before a restore of that many records, so
    /// the tables grow once instead of rehashing as they fill.
    pub fn reserve_users(&mut self, users: usize) {
        self.users.reserve(users);
    }

    /// Restores one changelog record. Records may come in any order; the catalog should be
    /// loaded first so that pending sends find their current rule when a snapshot is missing.
    /// Restoring a user replaces whatever the engine held for that user.
    pub fn restore(&mut self, record: &TaskStateRecord) -> Result<(), RestoreError> {
        if let Some(rule) = &record.rule {
            self.catalog.restore_snapshot(&rule.campaign)?;
        }
        if let Some(progress) = &record.progress {
            self.clock = Some(
                self.clock
                    .map_or(progress.stream_time, |c| c.max(progress.stream_time)),
            );
        }
        if let Some(state) = &record.user {
            self.restore_user(state)?;
        }
        if record.rule.is_none() && record.progress.is_none() && record.user.is_none() {
            return Err(RestoreError::Empty {
                key: record.changelog_key(),
            });
        }
        Ok(())
    }

    fn restore_user(&mut self, state: &UserState) -> Result<(), RestoreError> {
        if state.user_id.is_empty() {
            return Err(RestoreError::User {
                user_id: String::new(),
                message: "empty user id".into(),
            });
        }
        let user = self.users.find_or_insert(&state.user_id);
        let previous = self.users.take_pending(user, |_| true);
        self.pending_count -= previous.len();
        for r in self.users.receipts(user).to_vec() {
            self.users.remove_receipt(user, r.follow_on);
        }
        for p in &state.pending {
            let rule = self.catalog.rule_id(&p.follow_on_id, p.follow_on_version);
            if self.catalog.slot(rule).rule.is_none() {
                self.counters.unresolved_rule_versions += 1;
            }
            self.timers.push(p.due_at, user);
            self.users.add_pending(
                user,
                PendingSend {
                    due_at: p.due_at,
                    triggered_at: p.trigger.occurred_at,
                    trigger_event_id: CompactString::new(&p.trigger.event_id),
                    rule,
                    trigger_kind: p.trigger.kind,
                },
            );
            self.pending_count += 1;
        }
        for r in &state.receipts {
            let follow_on = self.catalog.intern_follow_on(&r.follow_on_id);
            self.users.set_receipt(user, follow_on, r.last_sent_at);
        }
        self.users.release_if_empty(user);
        Ok(())
    }

    // ---------------------------------------------------------------- decisions

    /// The subject of a decision about a pending send.
    fn about<'a>(&'a self, user: UserIdx, p: &'a PendingSend) -> DecisionFor<'a> {
        let slot = self.catalog.slot(p.rule);
        DecisionFor {
            enabled: self.decision_log,
            shadow: self.catalog.is_shadow(slot.follow_on),
            user_id: self.users.user_id(user),
            follow_on_id: self.catalog.follow_on_name(slot.follow_on),
            version: slot.version,
            trigger_event_id: &p.trigger_event_id,
        }
    }
}

/// Why a trigger is ignored.
struct Ignore {
    reason: DecisionReason,
    due_at: Option<TimestampMs>,
}

/// What a trigger that passed the checks does.
struct TriggerPlan {
    /// The user's slot, if the user already has one.
    user: Option<UserIdx>,
    follow_on: FollowOnIdx,
    due_at: TimestampMs,
    immediate: bool,
    /// The pending send a `RESTART` replaces.
    replaces: Option<PendingSend>,
    /// The trigger is before `published_at` and counts because of the backfill start.
    backfill: bool,
}

/// The subject of a decision: which user, follow-on version and trigger.
#[derive(Clone, Copy)]
struct DecisionFor<'a> {
    /// Whether the decision log is on; when off, no decision is built (but for a shadow).
    enabled: bool,
    /// A `SHADOW` follow-on's decision: always built, for the shadow topic.
    shadow: bool,
    user_id: &'a str,
    follow_on_id: &'a str,
    version: i64,
    trigger_event_id: &'a str,
}

impl DecisionFor<'_> {
    #[allow(clippy::too_many_arguments)]
    fn decision(
        self,
        outcome: DecisionOutcome,
        reason: DecisionReason,
        decided_at: TimestampMs,
        cause_event_id: Option<&str>,
        source: Option<&InputCoordinates>,
        due_at: Option<TimestampMs>,
        command_id: Option<String>,
    ) -> Option<Effect> {
        if !self.enabled && !self.shadow {
            return None;
        }
        let decision = Decision {
            user_id: self.user_id.to_string(),
            follow_on_id: self.follow_on_id.to_string(),
            follow_on_version: Some(self.version),
            outcome,
            reason,
            command_id,
            trigger_event_id: Some(self.trigger_event_id.to_string()),
            cause_event_id: cause_event_id.map(str::to_string),
            due_at,
            decided_at,
            source: source.cloned(),
        };
        Some(if self.shadow {
            Effect::Shadow(ShadowRecord::decision(decision))
        } else {
            Effect::Decision(decision)
        })
    }
}

/// The due time of a trigger under a rule, with local times in the event's zone, else the
/// rule's, else UTC; and whether the event named a zone that does not exist. `None` when
/// the due time is not representable (never for an event inside the event-time range).
fn due_time(rule: &Rule, event: &Interaction) -> (Option<TimestampMs>, bool) {
    let t = event.occurred_at;
    let zone = || {
        let named = event.user_time_zone.as_deref();
        let parsed = named.and_then(|z| time::parse_zone(z).ok());
        let unknown = named.is_some() && parsed.is_none();
        (parsed.or(rule.zone).unwrap_or(chrono_tz::UTC), unknown)
    };
    match rule.delay {
        CompiledDelay::Immediate => (Some(t), false),
        CompiledDelay::After { ms } => (t.checked_add(ms), false),
        CompiledDelay::NextWeekday { weekday, at } => {
            let (z, unknown) = zone();
            (time::next_weekday_at(z, t, weekday, at), unknown)
        }
        CompiledDelay::CalendarDays { days, at } => {
            let (z, unknown) = zone();
            (time::calendar_days_at(z, t, days, at), unknown)
        }
    }
}
