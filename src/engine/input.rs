//! Input records: exceptions cancel pending sends, triggers schedule them (SPEC §3).

use smallvec::SmallVec;

use super::*;

impl Engine {
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
        // One catalog lookup for both questions; the rule ids are copied out (a handful at
        // most) because evaluating a trigger changes the engine.
        let (may_cancel, triggered) = match self.catalog.interaction_rules(&event.campaign_id) {
            Some(r) => (
                r.exception_kinds.contains(event.kind),
                r.triggered.iter().copied().collect(),
            ),
            None => (false, SmallVec::<[RuleId; 4]>::new()),
        };
        let mut changed = None;
        if may_cancel {
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
        for rule_id in triggered {
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
