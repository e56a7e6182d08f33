//! Time: the clock moves, due timers fire in a fixed order, and sends are emitted or dropped.

use super::*;

impl Engine {
    /// Moves the clock to `time` (if later) and fires every timer due by then. Called with a
    /// record's event time before processing it, and by the runtime with the wall clock when
    /// the task is caught up. `now` is the wall clock. Any `i64` is safe for both.
    pub fn advance_to(&mut self, time: TimestampMs, now: TimestampMs, out: &mut Effects) {
        self.advance_to_at_most(time, now, out, usize::MAX);
    }

    /// [`Engine::advance_to`], stopping once `out` holds `limit` effects or more: the timers
    /// sharing a due time fire together, and the stop comes only between due times. Returns
    /// whether timers due by the clock are left (possibly only entries of sends cancelled
    /// since, which the next call drops without firing); they fire on the next call, or before the
    /// next record is processed (which fires everything due by the clock first), so the
    /// outcome and its order are those of one call without a limit. Lets the caller execute a
    /// burst of due timers in slices that stay in cache instead of holding one effect per
    /// record of the whole burst.
    pub fn advance_to_at_most(
        &mut self,
        time: TimestampMs,
        now: TimestampMs,
        out: &mut Effects,
        limit: usize,
    ) -> bool {
        if self.clock.is_none_or(|c| c < time) {
            self.clock = Some(time);
        }
        let clock = self.clock.expect("set above");
        self.fire_due_at_most(clock, now, out, limit);
        self.timers.peek_due().is_some_and(|d| d <= clock)
    }

    pub(super) fn note_lateness(&mut self, t: TimestampMs) {
        if self.clock.is_some_and(|c| t < c) {
            self.counters.late_records += 1;
        }
    }

    pub(super) fn fire_due(&mut self, until: TimestampMs, now: TimestampMs, out: &mut Effects) {
        self.fire_due_at_most(until, now, out, usize::MAX);
    }

    /// Fires timers due by `until` in due order until `out` holds `limit` effects or more
    /// (checked after each due time, so a call always makes progress).
    fn fire_due_at_most(
        &mut self,
        until: TimestampMs,
        now: TimestampMs,
        out: &mut Effects,
        limit: usize,
    ) {
        let mut batch = std::mem::take(&mut self.due_users);
        let mut firing = std::mem::take(&mut self.firing);
        let mut first = true;
        let mut popped = false;
        while let Some(due) = {
            batch.clear();
            if !std::mem::take(&mut first) && out.len() >= limit {
                None
            } else {
                self.timers.pop_earliest(until, &mut batch)
            }
        } {
            popped = true;
            batch.sort_unstable();
            batch.dedup();
            for &user in &batch {
                self.users.prefetch_slot(user);
            }
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
        // The next timer's user, loaded while the records before it are processed (once,
        // when the entries before it were popped: this runs before every record).
        if popped {
            if let Some(user) = self.timers.next_user() {
                self.users.prefetch_slot(user);
            }
        }
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
    pub(super) fn fire(
        &mut self,
        user: UserIdx,
        p: &PendingSend,
        now: TimestampMs,
        out: &mut Effects,
    ) {
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
    pub(super) fn record_drop(
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
    pub(super) fn send(
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
            out.push(Effect::Shadow(Box::new(ShadowRecord::send_command(
                command,
            ))));
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
}
