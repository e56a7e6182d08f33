//! Validation of campaign records, shared by the catalog (records from the topic) and the
//! campaigns-as-code loader (YAML files). Every problem names the field it is about.

use std::fmt;

use crate::model::{
    Campaign, CampaignMode, DelayType, ExceptionType, InteractionKind, OverduePolicy,
    ReeligibilityPolicy, SHADOW_SUFFIX,
};
use crate::time::{
    self, format_duration, DAY_SECONDS, MAX_REELIGIBILITY_SECONDS, TWO_YEARS_SECONDS,
};

/// Limits that depend on configuration.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// The longest `AFTER` delay (and `CALENDAR_DAYS` × 1 day) a campaign may have.
    /// Default 30 days; never more than the 2-year cap.
    pub max_delay_seconds: i64,
    /// How far before `published_at` a follow-on version's `backfill_since` may be.
    /// Default 7 days; 0 refuses every backfill; never more than the 2-year cap.
    pub max_backfill_seconds: i64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_delay_seconds: 30 * DAY_SECONDS,
            max_backfill_seconds: 7 * DAY_SECONDS,
        }
    }
}

impl Limits {
    /// These limits with a configured maximum backfill; refuses a negative one and one
    /// beyond the 2-year cap.
    pub fn with_max_backfill(self, max_backfill_seconds: i64) -> Result<Self, String> {
        if max_backfill_seconds < 0 {
            return Err("max_backfill must not be negative".into());
        }
        if max_backfill_seconds > TWO_YEARS_SECONDS {
            return Err(format!(
                "max_backfill {} exceeds the 2-year cap",
                format_duration(max_backfill_seconds)
            ));
        }
        Ok(Self {
            max_backfill_seconds,
            ..self
        })
    }

    /// Limits with a configured maximum delay; refuses one beyond the 2-year cap.
    pub fn with_max_delay(max_delay_seconds: i64) -> Result<Self, String> {
        if max_delay_seconds <= 0 {
            return Err(format!(
                "max_delay {} must be positive",
                format_duration(max_delay_seconds.max(0))
            ));
        }
        if max_delay_seconds > TWO_YEARS_SECONDS {
            return Err(format!(
                "max_delay {} exceeds the 2-year cap",
                format_duration(max_delay_seconds)
            ));
        }
        Ok(Self {
            max_delay_seconds,
            ..Self::default()
        })
    }
}

/// One problem with one field of a campaign.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// Dotted path, e.g. `follow_on.delay.seconds` or `follow_on.exceptions[1].name`.
    pub field: String,
    pub message: String,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.field, self.message)
    }
}

struct Problems(Vec<FieldError>);

impl Problems {
    fn add(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.0.push(FieldError {
            field: field.into(),
            message: message.into(),
        });
    }
}

fn check_delay_length(p: &mut Problems, field: &str, seconds: i64, limits: &Limits) {
    if seconds > TWO_YEARS_SECONDS {
        p.add(
            field,
            format!("delay {} exceeds the 2-year cap", format_duration(seconds)),
        );
    } else if seconds > limits.max_delay_seconds {
        p.add(
            field,
            format!(
                "delay {} exceeds the maximum delay {} (setting max_delay)",
                format_duration(seconds),
                format_duration(limits.max_delay_seconds)
            ),
        );
    }
}

fn check_kinds(p: &mut Problems, field: &str, kinds: &[InteractionKind]) {
    if kinds.is_empty() {
        p.add(field, "at least one interaction kind is required");
    }
    if kinds.contains(&InteractionKind::Unknown) {
        p.add(
            field,
            "UNKNOWN is not an interaction kind that can be matched",
        );
    }
}

fn delay_symbol(t: DelayType) -> &'static str {
    match t {
        DelayType::Immediate => "IMMEDIATE",
        DelayType::After => "AFTER",
        DelayType::NextWeekday => "NEXT_WEEKDAY",
        DelayType::CalendarDays => "CALENDAR_DAYS",
    }
}

/// A backfill start: on a follow-on, before `published_at` and at most `max_backfill`
/// before it.
fn check_backfill(p: &mut Problems, campaign: &Campaign, limits: &Limits) {
    let Some(since) = campaign.backfill_since else {
        return;
    };
    let field = "backfill_since";
    if campaign.follow_on.is_none() {
        p.add(field, "only a follow-on campaign can have a backfill start");
        return;
    }
    let Some(published) = campaign.published_at else {
        p.add(
            field,
            "needs published_at: a backfill start moves the publish bound earlier, and \
             without published_at no trigger is ignored as before publish",
        );
        return;
    };
    if since >= published {
        p.add(
            field,
            format!(
                "{} is not before published_at {}: a backfill start must be earlier",
                time::format_timestamp(since),
                time::format_timestamp(published)
            ),
        );
        return;
    }
    // Both are instants a campaign record may hold: saturate rather than overflow.
    let before_ms = published.saturating_sub(since);
    let before_s = before_ms / 1_000 + i64::from(before_ms % 1_000 != 0);
    if before_s > limits.max_backfill_seconds {
        p.add(
            field,
            format!(
                "{} before published_at exceeds the maximum backfill {} (setting max_backfill)",
                format_duration(before_s),
                format_duration(limits.max_backfill_seconds)
            ),
        );
    }
}

/// The mode: only a follow-on can be a shadow, a shadow's id ends with `@shadow` and only a
/// shadow's does (so the id alone says where a follow-on's output goes, even after it is
/// deleted), and a shadow has no backfill start (it evaluates live traffic from its publish
/// on, and its promotion must never send for a trigger it already handled).
fn check_mode(p: &mut Problems, campaign: &Campaign) {
    let suffixed = campaign.campaign_id.ends_with(SHADOW_SUFFIX);
    match campaign.mode {
        CampaignMode::Live if suffixed => p.add(
            "mode",
            format!(
                "campaign id {:?} ends with {SHADOW_SUFFIX}, which only shadow follow-ons have: publish the file with campaigns publish --shadow",
                campaign.campaign_id
            ),
        ),
        CampaignMode::Live => {}
        CampaignMode::Shadow => {
            if campaign.follow_on.is_none() {
                p.add("mode", "only a follow-on campaign can be a SHADOW");
            }
            if Campaign::live_id_of(&campaign.campaign_id).is_none() {
                p.add(
                    "mode",
                    format!(
                        "a SHADOW follow-on's id is <id>{SHADOW_SUFFIX}, got {:?}",
                        campaign.campaign_id
                    ),
                );
            }
            if campaign.backfill_since.is_some() {
                p.add(
                    "backfill_since",
                    "a SHADOW follow-on has no backfill start: it evaluates triggers from its publish on",
                );
            }
        }
    }
}

/// Every problem with `campaign`, empty when it is valid.
pub fn validate_campaign(campaign: &Campaign, limits: &Limits) -> Vec<FieldError> {
    let mut p = Problems(Vec::new());
    if campaign.campaign_id.trim().is_empty() {
        p.add("campaign_id", "must not be empty");
    }
    if campaign.version < 0 {
        p.add(
            "version",
            format!("must not be negative, got {}", campaign.version),
        );
    }
    if let (Some(starts), Some(ends)) = (campaign.starts_at, campaign.ends_at) {
        if ends <= starts {
            p.add("ends_at", "must be after starts_at");
        }
    }
    check_backfill(&mut p, campaign, limits);
    check_mode(&mut p, campaign);
    let Some(rule) = &campaign.follow_on else {
        return p.0;
    };

    if rule.trigger.campaign_id.trim().is_empty() {
        p.add("follow_on.trigger.campaign_id", "must not be empty");
    }
    check_kinds(&mut p, "follow_on.trigger.kinds", &rule.trigger.kinds);

    let d = &rule.delay;
    let extra = |p: &mut Problems, name: &str, set: bool| {
        if set {
            p.add(
                format!("follow_on.delay.{name}"),
                format!("is not used by a {} delay", delay_symbol(d.delay_type)),
            );
        }
    };
    match d.delay_type {
        DelayType::Immediate => {
            extra(&mut p, "seconds", d.seconds.is_some());
            extra(&mut p, "weekday", d.weekday.is_some());
            extra(&mut p, "days", d.days.is_some());
            extra(&mut p, "local_time", d.local_time.is_some());
        }
        DelayType::After => {
            match d.seconds {
                None => p.add("follow_on.delay.seconds", "an AFTER delay needs a duration"),
                Some(s) if s <= 0 => {
                    p.add("follow_on.delay.seconds", "an AFTER delay must be positive")
                }
                Some(s) => check_delay_length(&mut p, "follow_on.delay", s, limits),
            }
            extra(&mut p, "weekday", d.weekday.is_some());
            extra(&mut p, "days", d.days.is_some());
            extra(&mut p, "local_time", d.local_time.is_some());
        }
        DelayType::NextWeekday => {
            if d.weekday.is_none() {
                p.add(
                    "follow_on.delay.weekday",
                    "a NEXT_WEEKDAY delay needs a weekday",
                );
            }
            extra(&mut p, "seconds", d.seconds.is_some());
            extra(&mut p, "days", d.days.is_some());
        }
        DelayType::CalendarDays => {
            match d.days {
                None => p.add(
                    "follow_on.delay.days",
                    "a CALENDAR_DAYS delay needs a number of days",
                ),
                Some(n) if n < 1 => p.add(
                    "follow_on.delay.days",
                    format!("must be at least 1, got {n}"),
                ),
                Some(n) => {
                    check_delay_length(&mut p, "follow_on.delay", n as i64 * DAY_SECONDS, limits)
                }
            }
            extra(&mut p, "seconds", d.seconds.is_some());
            extra(&mut p, "weekday", d.weekday.is_some());
        }
    }
    if matches!(
        d.delay_type,
        DelayType::NextWeekday | DelayType::CalendarDays
    ) {
        match &d.local_time {
            None => p.add(
                "follow_on.delay.local_time",
                "a local-time delay needs a local time (HH:MM)",
            ),
            Some(t) => {
                if let Err(e) = time::parse_local_time(t) {
                    p.add("follow_on.delay.local_time", e.to_string());
                }
            }
        }
    }
    if let Some(zone) = &rule.time_zone {
        if let Err(e) = time::parse_zone(zone) {
            p.add("follow_on.time_zone", e.to_string());
        }
    }

    if !rule.exceptions.is_empty() && d.delay_type == DelayType::Immediate {
        p.add("follow_on.exceptions", "exceptions require a delay");
    }
    for (i, e) in rule.exceptions.iter().enumerate() {
        let field = format!("follow_on.exceptions[{i}]");
        match e.exception_type {
            ExceptionType::Interaction => {
                check_kinds(
                    &mut p,
                    &format!("{field}.interaction_kinds"),
                    &e.interaction_kinds,
                );
                if e.name.is_some() {
                    p.add(
                        format!("{field}.name"),
                        "an INTERACTION exception has no name",
                    );
                }
                if e.campaign_id
                    .as_deref()
                    .is_some_and(|c| c.trim().is_empty())
                {
                    p.add(
                        format!("{field}.campaign_id"),
                        "must not be empty (leave it out for the trigger campaign)",
                    );
                }
            }
            ExceptionType::CustomEvent => {
                if e.name.as_deref().is_none_or(|n| n.trim().is_empty()) {
                    p.add(
                        format!("{field}.name"),
                        "a CUSTOM_EVENT exception needs the event name",
                    );
                }
            }
            ExceptionType::Purchase | ExceptionType::SessionStart => {
                if e.exception_type == ExceptionType::SessionStart && e.name.is_some() {
                    p.add(
                        format!("{field}.name"),
                        "a SESSION_START exception has no name",
                    );
                }
            }
        }
        if e.exception_type != ExceptionType::Interaction {
            if !e.interaction_kinds.is_empty() {
                p.add(
                    format!("{field}.interaction_kinds"),
                    "only INTERACTION exceptions have interaction kinds",
                );
            }
            if e.campaign_id.is_some() {
                p.add(
                    format!("{field}.campaign_id"),
                    "only INTERACTION exceptions have a campaign",
                );
            }
        }
    }

    match (rule.reeligibility.policy, rule.reeligibility.seconds) {
        (ReeligibilityPolicy::Never, Some(_)) => p.add(
            "follow_on.reeligibility.seconds",
            "NEVER re-eligibility takes no duration",
        ),
        (ReeligibilityPolicy::After, None) => p.add(
            "follow_on.reeligibility.seconds",
            "AFTER re-eligibility needs a duration",
        ),
        (ReeligibilityPolicy::After, Some(s)) if s <= 0 => {
            p.add("follow_on.reeligibility.seconds", "must be positive")
        }
        (ReeligibilityPolicy::After, Some(s)) if s > MAX_REELIGIBILITY_SECONDS => p.add(
            "follow_on.reeligibility.seconds",
            format!(
                "re-eligibility {} exceeds the maximum of 720d",
                format_duration(s)
            ),
        ),
        _ => {}
    }
    match (rule.overdue.policy, rule.overdue.seconds) {
        (OverduePolicy::Send, Some(_)) => {
            p.add("follow_on.overdue.seconds", "SEND takes no duration")
        }
        (OverduePolicy::DropIfLateBy, None) => p.add(
            "follow_on.overdue.seconds",
            "DROP_IF_LATE_BY needs a duration",
        ),
        (OverduePolicy::DropIfLateBy, Some(s)) if s < 0 => {
            p.add("follow_on.overdue.seconds", "must not be negative")
        }
        _ => {}
    }
    if rule.message.template_id.trim().is_empty() {
        p.add("follow_on.message.template_id", "must not be empty");
    }
    p.0
}
