//! Builders for engine tests: campaigns, follow-on rules, input events, and a small world
//! that feeds them to an [`Engine`] and renders the effects as one line each, so that a test
//! reads like the rule it checks.
//!
//! Conventions: every campaign is `ACTIVE`, version 1, published at [`PUBLISHED`]; a
//! follow-on sends `IMMEDIATE`ly by e-mail with template `tpl-<id>`, is never re-eligible,
//! keeps the first trigger and sends however late. Events are processed with the wall clock
//! (`now`) equal to their event time unless a test says otherwise.

#![allow(dead_code)]

use campaign_connector::engine::{Effect, Engine};
use campaign_connector::model::{
    Campaign, CampaignKind, CampaignMode, CampaignStatus, Channel, Decision, Delay, DelayType,
    ExceptionMatcher, ExceptionType, FollowOnRule, InputCoordinates, InputEvent, Interaction,
    InteractionKind, Message, Overdue, OverduePolicy, Properties, Reeligibility,
    ReeligibilityPolicy, RepeatTrigger, SendCommand, TimestampMs, Trigger, UserEvent,
    UserEventType, Weekday,
};
use campaign_connector::time::{format_timestamp, parse_timestamp};
use campaign_connector::validate::Limits;

pub const SEC: i64 = 1_000;
pub const MIN: i64 = 60 * SEC;
pub const HOUR: i64 = 60 * MIN;
pub const DAY: i64 = 24 * HOUR;

/// Monday 2026-11-02 10:00:00 UTC: the time most tests start at.
pub const T0: TimestampMs = 1_793_613_600_000;
/// 2026-01-01 00:00:00 UTC: when the test campaigns were published.
pub const PUBLISHED: TimestampMs = 1_767_225_600_000;

/// Topics named in decision sources.
pub const INTERACTIONS: &str = "campaign-interactions";
pub const USER_EVENTS: &str = "user-events";

/// An RFC 3339 timestamp.
pub fn ts(text: &str) -> TimestampMs {
    parse_timestamp(text).expect("an RFC 3339 timestamp")
}

/// A timestamp as the logs print it.
pub fn at(ms: TimestampMs) -> String {
    format_timestamp(ms)
}

// ------------------------------------------------------------------------------ campaigns

fn base_campaign(id: &str) -> Campaign {
    Campaign {
        backfill_since: None,
        mode: Default::default(),
        campaign_id: id.to_string(),
        name: format!("{id} campaign"),
        kind: CampaignKind::Campaign,
        status: CampaignStatus::Active,
        version: 1,
        published_at: Some(PUBLISHED),
        starts_at: None,
        ends_at: None,
        follow_on: None,
    }
}

/// A plain (trigger) campaign: active, version 1.
pub fn campaign(id: &str) -> CampaignBuilder {
    CampaignBuilder(base_campaign(id))
}

/// A follow-on `id` triggered by `kinds` on `trigger_campaign`.
pub fn follow_on(id: &str, trigger_campaign: &str, kinds: &[InteractionKind]) -> CampaignBuilder {
    let mut c = base_campaign(id);
    c.follow_on = Some(FollowOnRule {
        trigger: Trigger {
            campaign_id: trigger_campaign.to_string(),
            kinds: kinds.to_vec(),
            qualifier: None,
        },
        delay: Delay::immediate(),
        time_zone: None,
        exceptions: Vec::new(),
        reeligibility: Reeligibility {
            policy: ReeligibilityPolicy::Never,
            seconds: None,
        },
        on_repeat_trigger: RepeatTrigger::KeepFirst,
        overdue: Overdue {
            policy: OverduePolicy::Send,
            seconds: None,
        },
        message: Message {
            channel: Channel::Email,
            template_id: format!("tpl-{id}"),
            payload: Properties::new(),
        },
    });
    CampaignBuilder(c)
}

/// Builds a [`Campaign`]; the follow-on methods panic on a campaign without a rule.
#[derive(Debug, Clone)]
pub struct CampaignBuilder(pub Campaign);

impl CampaignBuilder {
    fn rule(&mut self) -> &mut FollowOnRule {
        self.0.follow_on.as_mut().expect("a follow-on campaign")
    }

    /// The shadow version of this follow-on: id `<id>@shadow`, mode `SHADOW`.
    pub fn shadow(mut self) -> Self {
        self.0.campaign_id = Campaign::shadow_id(&self.0.campaign_id);
        self.0.mode = CampaignMode::Shadow;
        self
    }

    pub fn version(mut self, version: i64) -> Self {
        self.0.version = version;
        self
    }
    pub fn status(mut self, status: CampaignStatus) -> Self {
        self.0.status = status;
        self
    }
    pub fn published_at(mut self, t: Option<TimestampMs>) -> Self {
        self.0.published_at = t;
        self
    }
    /// This version's backfill start.
    pub fn backfill_since(mut self, t: TimestampMs) -> Self {
        self.0.backfill_since = Some(t);
        self
    }
    pub fn starts_at(mut self, t: TimestampMs) -> Self {
        self.0.starts_at = Some(t);
        self
    }
    pub fn ends_at(mut self, t: TimestampMs) -> Self {
        self.0.ends_at = Some(t);
        self
    }
    pub fn qualifier(mut self, q: &str) -> Self {
        self.rule().trigger.qualifier = Some(q.to_string());
        self
    }
    /// `AFTER` a delay given in milliseconds (whole seconds).
    pub fn after(mut self, ms: i64) -> Self {
        assert_eq!(ms % SEC, 0, "delays are whole seconds");
        self.rule().delay = Delay::after_seconds(ms / SEC);
        self
    }
    /// `NEXT_WEEKDAY` at a local time.
    pub fn next_weekday(mut self, weekday: Weekday, local_time: &str) -> Self {
        self.rule().delay = Delay {
            delay_type: DelayType::NextWeekday,
            weekday: Some(weekday),
            local_time: Some(local_time.to_string()),
            ..Delay::immediate()
        };
        self
    }
    /// `CALENDAR_DAYS` N days later at a local time.
    pub fn calendar_days(mut self, days: i32, local_time: &str) -> Self {
        self.rule().delay = Delay {
            delay_type: DelayType::CalendarDays,
            days: Some(days),
            local_time: Some(local_time.to_string()),
            ..Delay::immediate()
        };
        self
    }
    /// The rule's `time_zone`.
    pub fn zone(mut self, zone: &str) -> Self {
        self.rule().time_zone = Some(zone.to_string());
        self
    }
    pub fn except(mut self, exception: ExceptionMatcher) -> Self {
        self.rule().exceptions.push(exception);
        self
    }
    /// Re-eligible `ms` (whole seconds) after the last send.
    pub fn reeligible_after(mut self, ms: i64) -> Self {
        self.rule().reeligibility = Reeligibility {
            policy: ReeligibilityPolicy::After,
            seconds: Some(ms / SEC),
        };
        self
    }
    pub fn restart(mut self) -> Self {
        self.rule().on_repeat_trigger = RepeatTrigger::Restart;
        self
    }
    pub fn drop_if_late_by(mut self, ms: i64) -> Self {
        self.rule().overdue = Overdue {
            policy: OverduePolicy::DropIfLateBy,
            seconds: Some(ms / SEC),
        };
        self
    }
    pub fn message(
        mut self,
        channel: Channel,
        template_id: &str,
        payload: &[(&str, &str)],
    ) -> Self {
        self.rule().message = Message {
            channel,
            template_id: template_id.to_string(),
            payload: payload
                .iter()
                .map(|&(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        };
        self
    }
    pub fn build(self) -> Campaign {
        self.0
    }
}

impl From<CampaignBuilder> for Campaign {
    fn from(b: CampaignBuilder) -> Self {
        b.0
    }
}

// ------------------------------------------------------------------------------ exceptions

/// An interaction of `kinds` on the trigger campaign.
pub fn on(kinds: &[InteractionKind]) -> ExceptionMatcher {
    ExceptionMatcher {
        exception_type: ExceptionType::Interaction,
        campaign_id: None,
        interaction_kinds: kinds.to_vec(),
        name: None,
    }
}

/// An interaction of `kinds` on `campaign_id`.
pub fn on_campaign(campaign_id: &str, kinds: &[InteractionKind]) -> ExceptionMatcher {
    ExceptionMatcher {
        campaign_id: Some(campaign_id.to_string()),
        ..on(kinds)
    }
}

fn user_event_matcher(exception_type: ExceptionType, name: Option<&str>) -> ExceptionMatcher {
    ExceptionMatcher {
        exception_type,
        campaign_id: None,
        interaction_kinds: Vec::new(),
        name: name.map(str::to_string),
    }
}

/// A custom event named `name`.
pub fn custom_event(name: &str) -> ExceptionMatcher {
    user_event_matcher(ExceptionType::CustomEvent, Some(name))
}

/// Any purchase.
pub fn purchase() -> ExceptionMatcher {
    user_event_matcher(ExceptionType::Purchase, None)
}

/// A purchase of `product`.
pub fn purchase_of(product: &str) -> ExceptionMatcher {
    user_event_matcher(ExceptionType::Purchase, Some(product))
}

/// Any session start.
pub fn session_start() -> ExceptionMatcher {
    user_event_matcher(ExceptionType::SessionStart, None)
}

// ------------------------------------------------------------------------------ events

/// An interaction of `user` with `campaign_id`.
pub fn interaction(
    event_id: &str,
    user: &str,
    campaign_id: &str,
    kind: InteractionKind,
    at: TimestampMs,
) -> InputEvent {
    InputEvent::Interaction(Interaction {
        event_id: event_id.to_string(),
        user_id: user.to_string(),
        campaign_id: campaign_id.to_string(),
        kind,
        qualifier: None,
        occurred_at: at,
        user_time_zone: None,
        properties: Properties::new(),
    })
}

fn user_event(
    event_id: &str,
    user: &str,
    event_type: UserEventType,
    name: Option<&str>,
    at: TimestampMs,
) -> InputEvent {
    InputEvent::UserEvent(UserEvent {
        event_id: event_id.to_string(),
        user_id: user.to_string(),
        event_type,
        name: name.map(str::to_string),
        occurred_at: at,
        user_time_zone: None,
        properties: Properties::new(),
    })
}

/// A custom event named `name`.
pub fn custom(event_id: &str, user: &str, name: &str, at: TimestampMs) -> InputEvent {
    user_event(event_id, user, UserEventType::CustomEvent, Some(name), at)
}

/// A purchase of `product`.
pub fn bought(event_id: &str, user: &str, product: &str, at: TimestampMs) -> InputEvent {
    user_event(event_id, user, UserEventType::Purchase, Some(product), at)
}

/// A session start.
pub fn session(event_id: &str, user: &str, at: TimestampMs) -> InputEvent {
    user_event(event_id, user, UserEventType::SessionStart, None, at)
}

/// A user event of a type this version does not know (decoded as `UNKNOWN`).
pub fn unknown_user_event(event_id: &str, user: &str, at: TimestampMs) -> InputEvent {
    user_event(event_id, user, UserEventType::Unknown, Some("x"), at)
}

/// Modifiers of input events.
pub trait EventExt {
    /// The interaction's qualifier (button id, link alias, …).
    fn qualifier(self, q: &str) -> Self;
    /// The event's `user_time_zone`.
    fn zone(self, zone: &str) -> Self;
}

impl EventExt for InputEvent {
    fn qualifier(self, q: &str) -> Self {
        match self {
            InputEvent::Interaction(mut i) => {
                i.qualifier = Some(q.to_string());
                InputEvent::Interaction(i)
            }
            InputEvent::UserEvent(_) => panic!("only interactions have a qualifier"),
        }
    }
    fn zone(self, zone: &str) -> Self {
        match self {
            InputEvent::Interaction(mut i) => {
                i.user_time_zone = Some(zone.to_string());
                InputEvent::Interaction(i)
            }
            InputEvent::UserEvent(mut e) => {
                e.user_time_zone = Some(zone.to_string());
                InputEvent::UserEvent(e)
            }
        }
    }
}

// ------------------------------------------------------------------------------ the world

/// An engine fed by a test, with input coordinates assigned like a task would see them:
/// partition 0 of each topic, offsets counting from 0 per topic.
pub struct World {
    pub engine: Engine,
    offsets: [i64; 2],
}

impl Default for World {
    fn default() -> Self {
        Self::new()
    }
}

impl World {
    pub fn new() -> Self {
        Self::with_limits(Limits::default())
    }

    pub fn with_limits(limits: Limits) -> Self {
        Self {
            engine: Engine::new(limits),
            offsets: [0, 0],
        }
    }

    /// A world whose catalog holds `campaigns` (applied in order).
    pub fn with(campaigns: impl IntoIterator<Item = CampaignBuilder>) -> Self {
        let mut w = Self::new();
        for c in campaigns {
            let out = w.apply(c);
            assert!(
                out.is_empty(),
                "setting up the catalog has no effects: {out:?}"
            );
        }
        w
    }

    /// Applies a catalog record with the wall clock at the engine's clock (or [`PUBLISHED`]).
    pub fn apply(&mut self, campaign: impl Into<Campaign>) -> Vec<Effect> {
        let now = self.engine.clock().unwrap_or(PUBLISHED);
        self.apply_at(campaign, now)
    }

    pub fn apply_at(&mut self, campaign: impl Into<Campaign>, now: TimestampMs) -> Vec<Effect> {
        let mut out = Vec::new();
        self.engine
            .apply_campaign(&campaign.into(), now, &mut out)
            .expect("a valid campaign");
        materialize(&self.engine, out)
    }

    pub fn remove_at(&mut self, campaign_id: &str, now: TimestampMs) -> Vec<Effect> {
        let mut out = Vec::new();
        self.engine.remove_campaign(campaign_id, now, &mut out);
        materialize(&self.engine, out)
    }

    /// Continues the input offsets where `other` is, as a new owner of the task would after
    /// restoring its state.
    pub fn continue_offsets_of(&mut self, other: &World) {
        self.offsets = other.offsets;
    }

    /// The coordinates the next record of `event`'s topic gets.
    pub fn next_coordinates(&self, event: &InputEvent) -> InputCoordinates {
        let (topic, i) = match event {
            InputEvent::Interaction(_) => (INTERACTIONS, 0),
            InputEvent::UserEvent(_) => (USER_EVENTS, 1),
        };
        InputCoordinates {
            topic: topic.to_string(),
            partition: 0,
            offset: self.offsets[i],
        }
    }

    /// Processes a record with the wall clock at its event time.
    pub fn on(&mut self, event: InputEvent) -> Vec<Effect> {
        let now = event.occurred_at();
        self.on_at(event, now)
    }

    /// Processes a record with the wall clock at `now`.
    pub fn on_at(&mut self, event: InputEvent, now: TimestampMs) -> Vec<Effect> {
        let source = self.next_coordinates(&event);
        match event {
            InputEvent::Interaction(_) => self.offsets[0] += 1,
            InputEvent::UserEvent(_) => self.offsets[1] += 1,
        }
        let mut out = Vec::new();
        self.engine
            .process(&event, Some(&source), now, &mut out)
            .expect("test events are in the event-time range");
        materialize(&self.engine, out)
    }

    /// Advances a caught-up task to the wall clock `t`.
    pub fn advance(&mut self, t: TimestampMs) -> Vec<Effect> {
        self.advance_at(t, t)
    }

    /// Advances the clock to `t` with the wall clock at `now`.
    pub fn advance_at(&mut self, t: TimestampMs, now: TimestampMs) -> Vec<Effect> {
        let mut out = Vec::new();
        self.engine.advance_to(t, now, &mut out);
        materialize(&self.engine, out)
    }
}

// ------------------------------------------------------------------------------ effects

/// Replaces each `UserChanged` by the changelog record the runtime would write for it right
/// after this call (`PutState` of the user's state), keeping `UserChanged` for a user with
/// nothing left (a tombstone).
pub fn materialize(engine: &Engine, out: Vec<Effect>) -> Vec<Effect> {
    out.into_iter()
        .map(|e| match e {
            Effect::UserChanged { user_id, slot } => match engine.user_changelog_record(&user_id).1
            {
                Some(record) => Effect::PutState(Box::new(record)),
                None => Effect::UserChanged { user_id, slot },
            },
            other => other,
        })
        .collect()
}

fn opt_at(t: Option<TimestampMs>) -> String {
    t.map_or_else(|| "-".to_string(), at)
}

/// One line per effect:
///
/// ```text
/// send u1 F@v1 tpl-F trigger=e1 due=2026-11-09T10:00:00Z
/// SCHEDULED trigger u1 F@v1 trigger=e1 cause=e1 due=2026-11-09T10:00:00Z
/// put u/u1 pending=[F@v1 e1 2026-11-09T10:00:00Z] receipts=[]
/// put r/F/1
/// clear u/u1
/// ```
pub fn log(effects: &[Effect]) -> Vec<String> {
    effects.iter().map(line).collect()
}

fn line(effect: &Effect) -> String {
    match effect {
        Effect::Send(s) => format!(
            "send {} {}@v{} {} trigger={} due={}",
            s.user_id,
            s.campaign_id,
            s.campaign_version,
            s.template_id,
            s.trigger.event_id,
            at(s.due_at)
        ),
        Effect::Decision(d) => decision_line(d),
        Effect::Shadow(r) => match (&r.send_command, &r.decision) {
            (Some(s), _) => format!("shadow {}", line(&Effect::Send(s.clone()))),
            (None, Some(d)) => format!("shadow {}", decision_line(d)),
            (None, None) => "shadow (empty)".into(),
        },
        Effect::PutState(r) => match (&r.user, &r.rule, &r.progress) {
            (Some(u), _, _) => {
                let pending: Vec<String> = u
                    .pending
                    .iter()
                    .map(|p| {
                        format!(
                            "{}@v{} {} {}",
                            p.follow_on_id,
                            p.follow_on_version,
                            p.trigger.event_id,
                            at(p.due_at)
                        )
                    })
                    .collect();
                let receipts: Vec<String> = u
                    .receipts
                    .iter()
                    .map(|r| format!("{} {}", r.follow_on_id, at(r.last_sent_at)))
                    .collect();
                format!(
                    "put u/{} pending=[{}] receipts=[{}]",
                    u.user_id,
                    pending.join(", "),
                    receipts.join(", ")
                )
            }
            (None, Some(r), _) => {
                format!("put r/{}/{}", r.campaign.campaign_id, r.campaign.version)
            }
            (None, None, Some(p)) => format!("put t/progress {}", at(p.stream_time)),
            (None, None, None) => "put <empty>".to_string(),
        },
        // Materialized effects keep `UserChanged` only for users with nothing left.
        Effect::UserChanged { user_id, .. } => format!("clear u/{user_id}"),
    }
}

/// `OUTCOME reason user follow_on@vN trigger=… cause=… due=…`
pub fn decision_line(d: &Decision) -> String {
    format!(
        "{} {} {} {}@v{} trigger={} cause={} due={}",
        d.outcome.as_str(),
        d.reason.as_str(),
        d.user_id,
        d.follow_on_id,
        d.follow_on_version
            .map_or_else(|| "?".to_string(), |v| v.to_string()),
        d.trigger_event_id.as_deref().unwrap_or("-"),
        d.cause_event_id.as_deref().unwrap_or("-"),
        opt_at(d.due_at)
    )
}

/// The decision lines only.
pub fn decisions(effects: &[Effect]) -> Vec<String> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::Decision(d) => Some(decision_line(d)),
            _ => None,
        })
        .collect()
}

/// The decision records.
pub fn decision_records(effects: &[Effect]) -> Vec<Decision> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::Decision(d) => Some(d.clone()),
            _ => None,
        })
        .collect()
}

/// The send-commands.
pub fn sends(effects: &[Effect]) -> Vec<SendCommand> {
    effects
        .iter()
        .filter_map(|e| match e {
            Effect::Send(s) => Some(s.clone()),
            _ => None,
        })
        .collect()
}

/// The due times of the send-commands, printed.
pub fn sent_due(effects: &[Effect]) -> Vec<String> {
    sends(effects).iter().map(|s| at(s.due_at)).collect()
}
