//! Decisions: who a decision is about, and the decision records and shadow records built from it.

use super::*;

impl Engine {
    /// The subject of a decision about a pending send.
    pub(super) fn about<'a>(&'a self, user: UserIdx, p: &'a PendingSend) -> DecisionFor<'a> {
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

/// The subject of a decision: which user, follow-on version and trigger.
#[derive(Clone, Copy)]
pub(super) struct DecisionFor<'a> {
    /// Whether the decision log is on; when off, no decision is built (but for a shadow).
    pub(super) enabled: bool,
    /// A `SHADOW` follow-on's decision: always built, for the shadow topic.
    pub(super) shadow: bool,
    pub(super) user_id: &'a str,
    pub(super) follow_on_id: &'a str,
    pub(super) version: i64,
    pub(super) trigger_event_id: &'a str,
}

impl DecisionFor<'_> {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn decision(
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
            Effect::Shadow(Box::new(ShadowRecord::decision(decision)))
        } else {
            Effect::Decision(decision)
        })
    }
}
