//! State export and restore: the changelog records of users and of the task's progress.

use super::*;

impl Engine {
    /// Writes the rule snapshot of a version once per task, before the first pending send
    /// that uses it, so that the pending send can be restored after the catalog moved on.
    pub(super) fn persist_rule(&mut self, rule_id: RuleId, out: &mut Effects) {
        let slot = self.catalog.slot_mut(rule_id);
        if slot.persisted {
            return;
        }
        slot.persisted = true;
        if let Some(rule) = slot.rule.as_deref() {
            out.push(Effect::PutState(Box::new(TaskStateRecord {
                user: None,
                rule: Some(RuleSnapshot {
                    campaign: rule.campaign.clone(),
                }),
                progress: None,
            })));
        }
    }

    /// Reports that a user's state changed; the slot is freed if nothing is left in it.
    pub(super) fn emit_user_state(&mut self, user: UserIdx, out: &mut Effects) {
        // Inline for ids up to 24 bytes: no allocation per change.
        out.push(Effect::UserChanged {
            user_id: CompactString::new(self.users.user_id(user)),
            slot: SlotHint(user),
        });
        self.users.release_if_empty(user);
    }

    /// A user's state borrowing the engine's strings (pending sends by due time and
    /// follow-on id, receipts by follow-on id: the same state reads the same in any engine).
    fn slot_view(&self, user: UserIdx) -> Option<UserStateView<'_>> {
        let mut pending: SmallVec<[PendingSendView<'_>; 1]> = self
            .users
            .pending(user)
            .map(|p| {
                let slot = self.catalog.slot(p.rule);
                PendingSendView {
                    follow_on_id: self.catalog.follow_on_name(slot.follow_on),
                    follow_on_version: slot.version,
                    trigger_campaign_id: self
                        .catalog
                        .rule_for_pending(p.rule)
                        .map_or("", |r| r.trigger_campaign.as_str()),
                    trigger_kind: p.trigger_kind,
                    trigger_event_id: &p.trigger_event_id,
                    triggered_at: p.triggered_at,
                    due_at: p.due_at,
                }
            })
            .collect();
        let mut receipts: SmallVec<[(&str, TimestampMs); 1]> = self
            .users
            .receipts(user)
            .iter()
            .map(|r| (self.catalog.follow_on_name(r.follow_on), r.last_sent_at))
            .collect();
        if pending.is_empty() && receipts.is_empty() {
            return None;
        }
        pending.sort_by(|a, b| (a.due_at, a.follow_on_id).cmp(&(b.due_at, b.follow_on_id)));
        receipts.sort_by(|a, b| a.0.cmp(b.0));
        Some(UserStateView {
            user_id: self.users.user_id(user),
            pending,
            receipts,
        })
    }

    fn export_slot(&self, user: UserIdx) -> Option<UserState> {
        self.slot_view(user).map(|v| v.to_state())
    }

    /// A user's state borrowing the engine's strings, if the user has any (what the
    /// user's changelog entry holds).
    pub fn user_state_view(&self, user_id: &str) -> Option<UserStateView<'_>> {
        self.users.find(user_id).and_then(|u| self.slot_view(u))
    }

    /// [`Engine::user_state_view`] of a user last seen at `slot` (a [`Effect::UserChanged`]'s):
    /// read from that slot when it still holds the user, found by its id otherwise (the
    /// slot was freed, or freed and given to another user, since).
    pub fn user_state_view_at(&self, slot: SlotHint, user_id: &str) -> Option<UserStateView<'_>> {
        if self.users.holds(slot.0, user_id) {
            self.slot_view(slot.0)
        } else {
            self.user_state_view(user_id)
        }
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

    /// Starts loading what looking the user up will touch, ahead of the record that needs
    /// it (a few records ahead: the loads overlap instead of each waiting in turn).
    pub fn prefetch_user(&self, user_id: &str) {
        self.users.prefetch(user_id);
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
        if record.rule.is_none() && record.progress.is_none() && record.user.is_none() {
            return Err(RestoreError::Empty {
                key: record.changelog_key(),
            });
        }
        self.restore_parts(
            record.user.as_ref().map(UserState::view).as_ref(),
            record.progress.as_ref().map(|p| p.stream_time),
        )
    }

    /// Restores a user's state and a progress record's stream time, as read in place from
    /// a changelog record (or taken from a decoded one).
    pub fn restore_parts(
        &mut self,
        user: Option<&UserStateView<'_>>,
        stream_time: Option<TimestampMs>,
    ) -> Result<(), RestoreError> {
        if let Some(t) = stream_time {
            self.clock = Some(self.clock.map_or(t, |c| c.max(t)));
        }
        if let Some(state) = user {
            self.restore_user(state)?;
        }
        Ok(())
    }

    fn restore_user(&mut self, state: &UserStateView<'_>) -> Result<(), RestoreError> {
        if state.user_id.is_empty() {
            return Err(RestoreError::User {
                user_id: String::new(),
                message: "empty user id".into(),
            });
        }
        let user = self.users.find_or_insert(state.user_id);
        let previous = self.users.take_pending(user, |_| true);
        self.pending_count -= previous.len();
        for r in self.users.receipts(user).to_vec() {
            self.users.remove_receipt(user, r.follow_on);
        }
        for p in &state.pending {
            let rule = self.catalog.rule_id(p.follow_on_id, p.follow_on_version);
            if self.catalog.slot(rule).rule.is_none() {
                self.counters.unresolved_rule_versions += 1;
            }
            self.timers.push(p.due_at, user);
            self.users.add_pending(
                user,
                PendingSend {
                    due_at: p.due_at,
                    triggered_at: p.triggered_at,
                    trigger_event_id: CompactString::new(p.trigger_event_id),
                    rule,
                    trigger_kind: p.trigger_kind,
                },
            );
            self.pending_count += 1;
        }
        for &(follow_on_id, last_sent_at) in &state.receipts {
            let follow_on = self.catalog.intern_follow_on(follow_on_id);
            self.users.set_receipt(user, follow_on, last_sent_at);
        }
        self.users.release_if_empty(user);
        Ok(())
    }
}
