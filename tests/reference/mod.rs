//! A deliberately naive reference model of SPEC §3, for the property tests.
//!
//! Written from the SPEC, not from the engine: the state is three flat `Vec`s (the latest
//! catalog record of each campaign, the pending sends, the receipts) searched linearly, and
//! every rule is one `if` in the order the SPEC lists it. It is slow and obviously right,
//! which is the point.
//!
//! Scope (what the generators feed it): local-time delays in `UTC`, `Asia/Kolkata` (fixed
//! offset), `America/New_York` around its spring-2026 DST change (a hard-coded transition;
//! the model refuses instants outside March 2026), or an invalid zone name (which falls back
//! to the rule's zone); no rule snapshots or restore (the model never forgets anything). The wall clock `now`
//! is an argument, as for the engine.
//!
//! Where the SPEC leaves a detail to the implementation, the model takes the reading that
//! the decision schema documents: `decided_at` is the event time of the cause, or the wall
//! clock when time caused it (a timer firing, a catalog change).

use campaign_connector::engine::{command_id, Effect};
use campaign_connector::model::{
    Campaign, CampaignStatus, Decision, DecisionOutcome, DecisionReason, DelayType,
    ExceptionMatcher, ExceptionType, FollowOnRule, InputEvent, Interaction, OverduePolicy,
    ReeligibilityPolicy, RepeatTrigger, SendCommand, TimestampMs, TriggerRef, UserEventType,
    Weekday,
};

const SECOND_MS: i64 = 1_000;
const DAY_MS: i64 = 86_400_000;

/// A pending follow-on send.
#[derive(Debug, Clone)]
struct Pending {
    user: String,
    /// The follow-on record (version) the send was scheduled with.
    follow_on: Campaign,
    trigger: Interaction,
    due_at: TimestampMs,
}

impl Pending {
    fn rule(&self) -> &FollowOnRule {
        self.follow_on
            .follow_on
            .as_ref()
            .expect("a follow-on has a rule")
    }
}

/// The last send of a follow-on to a user.
#[derive(Debug, Clone)]
struct Receipt {
    user: String,
    follow_on: String,
    last_sent_at: TimestampMs,
}

/// The whole state of one task.
#[derive(Debug, Default)]
pub struct Reference {
    /// The latest record of every campaign in the catalog.
    catalog: Vec<Campaign>,
    pending: Vec<Pending>,
    receipts: Vec<Receipt>,
    /// The latest time timers have fired up to.
    clock: Option<TimestampMs>,
}

impl Reference {
    pub fn new() -> Self {
        Self::default()
    }

    /// The earliest due time of a pending send.
    pub fn next_due(&self) -> Option<TimestampMs> {
        self.pending.iter().map(|p| p.due_at).min()
    }

    fn campaign(&self, id: &str) -> Option<&Campaign> {
        self.catalog.iter().find(|c| c.campaign_id == id)
    }

    fn is_active(&self, id: &str) -> bool {
        self.campaign(id)
            .is_some_and(|c| c.status == CampaignStatus::Active)
    }

    // ------------------------------------------------------------------ catalog

    /// A catalog record: an older version than the known one is ignored; stopping or
    /// archiving a follow-on drops its pending sends.
    pub fn apply(&mut self, record: &Campaign, now: TimestampMs, out: &mut Vec<Effect>) {
        if self
            .campaign(&record.campaign_id)
            .is_some_and(|known| record.version < known.version)
        {
            return;
        }
        self.catalog.retain(|c| c.campaign_id != record.campaign_id);
        self.catalog.push(record.clone());
        if matches!(
            record.status,
            CampaignStatus::Stopped | CampaignStatus::Archived
        ) {
            self.drop_pending_of(
                &record.campaign_id,
                DecisionReason::FollowOnInactive,
                now,
                out,
            );
        }
    }

    /// A catalog tombstone: the follow-on's pending sends are dropped.
    pub fn remove(&mut self, campaign_id: &str, now: TimestampMs, out: &mut Vec<Effect>) {
        if self.campaign(campaign_id).is_none() {
            return;
        }
        self.catalog.retain(|c| c.campaign_id != campaign_id);
        self.drop_pending_of(campaign_id, DecisionReason::FollowOnDeleted, now, out);
    }

    fn drop_pending_of(
        &mut self,
        follow_on: &str,
        reason: DecisionReason,
        now: TimestampMs,
        out: &mut Vec<Effect>,
    ) {
        let mut dropped: Vec<Pending> = Vec::new();
        self.pending.retain(|p| {
            if p.follow_on.campaign_id == follow_on {
                dropped.push(p.clone());
                false
            } else {
                true
            }
        });
        dropped.sort_by(|a, b| a.user.cmp(&b.user));
        for p in &dropped {
            out.push(about(p, DecisionOutcome::Dropped, reason, now, None, None));
        }
    }

    // ------------------------------------------------------------------ time

    /// Stream time (or the caught-up wall clock) reached `time`: fire what is due.
    pub fn advance_to(&mut self, time: TimestampMs, now: TimestampMs, out: &mut Vec<Effect>) {
        self.clock = Some(self.clock.map_or(time, |c| c.max(time)));
        self.fire_due(now, out);
    }

    /// Fires every pending send due at or before the clock, earliest first, ties by
    /// (user, follow-on).
    fn fire_due(&mut self, now: TimestampMs, out: &mut Vec<Effect>) {
        let Some(clock) = self.clock else { return };
        loop {
            let next = self
                .pending
                .iter()
                .enumerate()
                .filter(|(_, p)| p.due_at <= clock)
                .min_by(|(_, a), (_, b)| {
                    (a.due_at, &a.user, &a.follow_on.campaign_id).cmp(&(
                        b.due_at,
                        &b.user,
                        &b.follow_on.campaign_id,
                    ))
                })
                .map(|(i, _)| i);
            let Some(i) = next else { return };
            let p = self.pending.remove(i);
            self.fire(p, now, out);
        }
    }

    fn fire(&mut self, p: Pending, now: TimestampMs, out: &mut Vec<Effect>) {
        let current = self.campaign(&p.follow_on.campaign_id);
        let drop_reason = if current.is_none() {
            Some(DecisionReason::FollowOnDeleted)
        } else if current.is_some_and(|c| c.status != CampaignStatus::Active) {
            Some(DecisionReason::FollowOnInactive)
        } else if current.is_some_and(|c| c.ends_at.is_some_and(|end| p.due_at >= end)) {
            Some(DecisionReason::PastEnd)
        } else if p.rule().overdue.policy == OverduePolicy::DropIfLateBy
            && now - p.due_at > p.rule().overdue.seconds.unwrap() * SECOND_MS
        {
            Some(DecisionReason::Overdue)
        } else {
            None
        };
        match drop_reason {
            Some(reason) => out.push(about(&p, DecisionOutcome::Dropped, reason, now, None, None)),
            None => self.send(&p, now, None, out),
        }
    }

    /// Emits `p`'s send-command. `at_once`: sent for its trigger (immediate), with that
    /// reason (`immediate`, or `backfill`); else fired at its due time.
    fn send(
        &mut self,
        p: &Pending,
        now: TimestampMs,
        at_once: Option<DecisionReason>,
        out: &mut Vec<Effect>,
    ) {
        let f = &p.follow_on;
        let rule = p.rule();
        let id = command_id(&f.campaign_id, f.version, &p.user, &p.trigger.event_id);
        out.push(Effect::Send(SendCommand {
            command_id: id.clone(),
            user_id: p.user.clone(),
            campaign_id: f.campaign_id.clone(),
            campaign_version: f.version,
            channel: rule.message.channel,
            template_id: rule.message.template_id.clone(),
            payload: rule.message.payload.clone(),
            trigger: TriggerRef {
                campaign_id: rule.trigger.campaign_id.clone(),
                kind: p.trigger.kind,
                event_id: p.trigger.event_id.clone(),
                occurred_at: p.trigger.occurred_at,
            },
            due_at: p.due_at,
            emitted_at: now,
        }));
        let decision = if let Some(reason) = at_once {
            let cause = Some(p.trigger.event_id.as_str());
            let t = p.trigger.occurred_at;
            about(p, DecisionOutcome::Sent, reason, t, cause, Some(id))
        } else {
            about(
                p,
                DecisionOutcome::Fired,
                DecisionReason::Due,
                now,
                None,
                Some(id),
            )
        };
        out.push(decision);
        self.receipts
            .retain(|r| !(r.user == p.user && r.follow_on == f.campaign_id));
        self.receipts.push(Receipt {
            user: p.user.clone(),
            follow_on: f.campaign_id.clone(),
            last_sent_at: p.due_at,
        });
    }

    // ------------------------------------------------------------------ input

    /// One input record: what is due fires first, then exceptions, then triggers.
    pub fn process(&mut self, event: &InputEvent, now: TimestampMs, out: &mut Vec<Effect>) {
        let t = event.occurred_at();
        self.advance_to(t, now, out);

        let user = event.user_id().to_string();
        let mut cancelled: Vec<Pending> = Vec::new();
        self.pending.retain(|p| {
            if p.user == user && cancels(p, event) {
                cancelled.push(p.clone());
                false
            } else {
                true
            }
        });
        cancelled.sort_by(|a, b| a.follow_on.campaign_id.cmp(&b.follow_on.campaign_id));
        for p in &cancelled {
            let cause = Some(event.event_id());
            let d = about(
                p,
                DecisionOutcome::Cancelled,
                DecisionReason::Exception,
                t,
                cause,
                None,
            );
            out.push(d);
        }

        if let InputEvent::Interaction(i) = event {
            let mut triggered: Vec<Campaign> = self
                .catalog
                .iter()
                .filter(|f| f.follow_on.as_ref().is_some_and(|r| is_triggered(r, i)))
                .cloned()
                .collect();
            triggered.sort_by(|a, b| a.campaign_id.cmp(&b.campaign_id));
            for f in &triggered {
                self.on_trigger(f, i, now, out);
            }
            // A trigger so late that its send is due already fires at once.
            self.fire_due(now, out);
        }
    }

    /// SPEC §3 rules 1–6 for one follow-on `f` whose trigger matches `i`.
    fn on_trigger(
        &mut self,
        f: &Campaign,
        i: &Interaction,
        now: TimestampMs,
        out: &mut Vec<Effect>,
    ) {
        let rule = f.follow_on.as_ref().expect("a follow-on");
        let t = i.occurred_at;
        let ignore = |reason: DecisionReason| {
            Effect::Decision(Decision {
                user_id: i.user_id.clone(),
                follow_on_id: f.campaign_id.clone(),
                follow_on_version: Some(f.version),
                outcome: DecisionOutcome::Ignored,
                reason,
                command_id: None,
                trigger_event_id: Some(i.event_id.clone()),
                cause_event_id: Some(i.event_id.clone()),
                due_at: None,
                decided_at: t,
                source: None,
            })
        };
        // 1.
        if f.status != CampaignStatus::Active {
            return out.push(ignore(DecisionReason::FollowOnInactive));
        }
        if !self.is_active(&i.campaign_id) {
            return out.push(ignore(DecisionReason::TriggerCampaignInactive));
        }
        // 2. Before publish, unless the version's backfill start is at or before t.
        let backfilled = f.published_at.is_some_and(|p| t < p);
        if backfilled && f.backfill_since.is_none_or(|b| t < b) {
            return out.push(ignore(DecisionReason::BeforePublish));
        }
        // 3.
        if f.starts_at.is_some_and(|s| t < s) || f.ends_at.is_some_and(|e| t >= e) {
            return out.push(ignore(DecisionReason::OutsideWindow));
        }
        let due_at = due_time(rule, i);
        if f.ends_at.is_some_and(|e| due_at >= e) {
            return out.push(ignore(DecisionReason::DueAfterEnd));
        }
        // 4.
        let receipt = self
            .receipts
            .iter()
            .find(|r| r.user == i.user_id && r.follow_on == f.campaign_id);
        if let Some(r) = receipt {
            let reeligible = match rule.reeligibility.policy {
                ReeligibilityPolicy::Never => false,
                ReeligibilityPolicy::After => {
                    t >= r.last_sent_at + rule.reeligibility.seconds.unwrap() * SECOND_MS
                }
            };
            if !reeligible {
                return out.push(ignore(DecisionReason::NotReeligible));
            }
        }
        // 5.
        let mut reason = if backfilled {
            DecisionReason::Backfill
        } else {
            DecisionReason::Trigger
        };
        let existing = self
            .pending
            .iter()
            .position(|p| p.user == i.user_id && p.follow_on.campaign_id == f.campaign_id);
        if let Some(index) = existing {
            if rule.on_repeat_trigger == RepeatTrigger::KeepFirst {
                return out.push(ignore(DecisionReason::AlreadyPending));
            }
            let old = self.pending.remove(index);
            let cause = Some(i.event_id.as_str());
            out.push(about(
                &old,
                DecisionOutcome::Cancelled,
                DecisionReason::Restart,
                t,
                cause,
                None,
            ));
            reason = DecisionReason::Restart;
        }
        // 6.
        let p = Pending {
            user: i.user_id.clone(),
            follow_on: f.clone(),
            trigger: i.clone(),
            due_at,
        };
        if rule.delay.delay_type == DelayType::Immediate {
            let reason = if backfilled {
                DecisionReason::Backfill
            } else {
                DecisionReason::Immediate
            };
            self.send(&p, now, Some(reason), out);
        } else {
            let cause = Some(i.event_id.as_str());
            out.push(about(
                &p,
                DecisionOutcome::Scheduled,
                reason,
                t,
                cause,
                None,
            ));
            self.pending.push(p);
        }
    }
}

/// A decision about a pending send (or an immediate send).
fn about(
    p: &Pending,
    outcome: DecisionOutcome,
    reason: DecisionReason,
    decided_at: TimestampMs,
    cause: Option<&str>,
    command_id: Option<String>,
) -> Effect {
    Effect::Decision(Decision {
        user_id: p.user.clone(),
        follow_on_id: p.follow_on.campaign_id.clone(),
        follow_on_version: Some(p.follow_on.version),
        outcome,
        reason,
        command_id,
        trigger_event_id: Some(p.trigger.event_id.clone()),
        cause_event_id: cause.map(str::to_string),
        due_at: Some(p.due_at),
        decided_at,
        source: None,
    })
}

/// Does interaction `i` trigger `rule`? (campaign, one of the kinds, qualifier if set)
pub fn is_triggered(rule: &FollowOnRule, i: &Interaction) -> bool {
    rule.trigger.campaign_id == i.campaign_id
        && rule.trigger.kinds.contains(&i.kind)
        && (rule.trigger.qualifier.is_none() || rule.trigger.qualifier == i.qualifier)
}

/// Does `x` cancel `p`: inside `[triggered_at, due_at)`, not `p`'s own trigger, and listed
/// by `p`'s rule as an exception?
fn cancels(p: &Pending, x: &InputEvent) -> bool {
    let t = x.occurred_at();
    let inside = p.trigger.occurred_at <= t && t < p.due_at;
    let own_trigger = matches!(x, InputEvent::Interaction(i) if i.event_id == p.trigger.event_id);
    inside
        && !own_trigger
        && p.rule()
            .exceptions
            .iter()
            .any(|m| exception_matches(m, p.rule(), x))
}

/// Does `x` match exception matcher `m` of `rule`?
pub fn exception_matches(m: &ExceptionMatcher, rule: &FollowOnRule, x: &InputEvent) -> bool {
    match (m.exception_type, x) {
        (ExceptionType::Interaction, InputEvent::Interaction(i)) => {
            let campaign = m.campaign_id.as_ref().unwrap_or(&rule.trigger.campaign_id);
            i.campaign_id == *campaign && m.interaction_kinds.contains(&i.kind)
        }
        (ExceptionType::CustomEvent, InputEvent::UserEvent(e)) => {
            e.event_type == UserEventType::CustomEvent && e.name == m.name
        }
        (ExceptionType::Purchase, InputEvent::UserEvent(e)) => {
            e.event_type == UserEventType::Purchase && (m.name.is_none() || e.name == m.name)
        }
        (ExceptionType::SessionStart, InputEvent::UserEvent(e)) => {
            e.event_type == UserEventType::SessionStart
        }
        _ => false,
    }
}

/// The zones the generators use, valid for instants in March 2026 only.
#[derive(Debug, Clone, Copy)]
enum Zone {
    /// A fixed UTC offset in milliseconds.
    Fixed(i64),
    /// New York around its 2026 spring change: EST (-05:00) until 2026-03-08T07:00Z,
    /// when 02:00 local becomes 03:00 EDT (-04:00).
    NewYork,
}

/// 2026-03-08T07:00:00Z: New York moves its clocks forward.
const NEW_YORK_SPRING_2026: TimestampMs = 1_772_953_200_000;
/// The model's zones are right from 2026-03-01 to 2026-03-28.
const VALID_FROM: TimestampMs = 1_772_323_200_000;
const VALID_UNTIL: TimestampMs = 1_774_656_000_000;

/// The zone named `name`; `None` for a name that is not a zone.
fn zone(name: &str) -> Option<Zone> {
    match name {
        "UTC" => Some(Zone::Fixed(0)),
        // India has had no DST since 1945: a fixed +05:30.
        "Asia/Kolkata" => Some(Zone::Fixed((5 * 3_600 + 30 * 60) * SECOND_MS)),
        "America/New_York" => Some(Zone::NewYork),
        "Mars/Olympus_Mons" => None,
        other => panic!("the reference model does not know zone {other:?}"),
    }
}

const HOUR_MS: i64 = 3_600 * SECOND_MS;

/// Local time minus UTC at instant `t`.
fn offset_at(zone: Zone, t: TimestampMs) -> i64 {
    assert!(
        (VALID_FROM..VALID_UNTIL).contains(&t),
        "{t} is outside the model's range"
    );
    match zone {
        Zone::Fixed(offset) => offset,
        Zone::NewYork if t < NEW_YORK_SPRING_2026 => -5 * HOUR_MS,
        Zone::NewYork => -4 * HOUR_MS,
    }
}

/// The instant of local wall time `local` (milliseconds, as if it were UTC). A time in the
/// DST gap moves forward by the gap: it is read with the offset before the gap.
fn local_to_utc(zone: Zone, local: i64) -> TimestampMs {
    let t = match zone {
        Zone::Fixed(offset) => local - offset,
        // Valid in EDT when it falls after the change read as EDT; otherwise read as EST
        // (which is right before the change, and moves a gap time forward by an hour).
        Zone::NewYork if local + 4 * HOUR_MS >= NEW_YORK_SPRING_2026 => local + 4 * HOUR_MS,
        Zone::NewYork => local + 5 * HOUR_MS,
    };
    offset_at(zone, t);
    t
}

/// `HH:MM` or `HH:MM:SS` as milliseconds after midnight.
fn local_time_ms(text: &str) -> i64 {
    let parts: Vec<i64> = text.split(':').map(|p| p.parse().unwrap()).collect();
    let seconds = parts[0] * 3_600 + parts[1] * 60 + parts.get(2).copied().unwrap_or(0);
    seconds * SECOND_MS
}

fn weekday_from_monday(w: Weekday) -> i64 {
    match w {
        Weekday::Monday => 0,
        Weekday::Tuesday => 1,
        Weekday::Wednesday => 2,
        Weekday::Thursday => 3,
        Weekday::Friday => 4,
        Weekday::Saturday => 5,
        Weekday::Sunday => 6,
    }
}

/// The due time of a trigger under `rule`.
pub fn due_time(rule: &FollowOnRule, i: &Interaction) -> TimestampMs {
    let t = i.occurred_at;
    let d = &rule.delay;
    match d.delay_type {
        DelayType::Immediate => t,
        DelayType::After => t + d.seconds.unwrap() * SECOND_MS,
        DelayType::CalendarDays | DelayType::NextWeekday => {
            // The event's zone, else the rule's, else UTC.
            let zone = i
                .user_time_zone
                .as_deref()
                .and_then(zone)
                .or_else(|| rule.time_zone.as_deref().and_then(zone))
                .unwrap_or(Zone::Fixed(0));
            let local_day = (t + offset_at(zone, t)).div_euclid(DAY_MS);
            let due_day = if d.delay_type == DelayType::CalendarDays {
                local_day + i64::from(d.days.unwrap())
            } else {
                // Day 0 (1970-01-01) was a Thursday (3 days from Monday). Strictly after
                // the local date: 1 to 7 days ahead.
                (1..=7)
                    .map(|ahead| local_day + ahead)
                    .find(|day| (day + 3).rem_euclid(7) == weekday_from_monday(d.weekday.unwrap()))
                    .unwrap()
            };
            let local_due = due_day * DAY_MS + local_time_ms(d.local_time.as_deref().unwrap());
            local_to_utc(zone, local_due)
        }
    }
}
