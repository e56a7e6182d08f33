//! Rendering records back into the file format.

use super::*;

/// Renders campaigns in the file format. For valid campaigns,
/// `parse_campaigns(&to_yaml(x), ..) == Ok(x)`. Defaults of the follow-on rule
/// (re-eligibility, repeat trigger, overdue policy) are written out, so that a listing
/// shows the effective settings; absent optional keys are left out.
pub fn to_yaml(campaigns: &[Campaign]) -> String {
    let file = RawFile {
        campaigns: campaigns.iter().map(raw_campaign).collect(),
    };
    let text = serde_yaml_ng::to_string(&file).expect("campaign shapes always serialize");
    // A blank line between campaigns (top-level list items start at column 0).
    let mut out = String::with_capacity(text.len() + campaigns.len());
    for (i, line) in text.lines().enumerate() {
        if line.starts_with("- ") && i > 1 {
            out.push('\n');
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// A duration as people write it in the file: days, hours, minutes, seconds (`7d`, `30d`,
/// `1d12h`, `1h30m`). Unlike [`crate::time::format_duration`] it never uses weeks, because
/// campaigns are planned in days (SPEC §1: "7 days"); `parse_duration` reads both.
pub(super) fn file_duration(seconds: i64) -> String {
    if seconds <= 0 {
        return format!("{seconds}s");
    }
    let mut rest = seconds;
    let mut out = String::new();
    for (unit, name) in [(DAY_SECONDS, "d"), (3_600, "h"), (60, "m"), (1, "s")] {
        if rest >= unit {
            out.push_str(&format!("{}{name}", rest / unit));
            rest %= unit;
        }
    }
    out
}

pub(super) fn raw_campaign(c: &Campaign) -> RawCampaign {
    RawCampaign {
        campaign_id: c.campaign_id.clone(),
        name: c.name.clone(),
        kind: Some(symbol_of(&KINDS, c.kind).to_string()),
        status: symbol_of(&STATUSES, c.status).to_string(),
        version: Some(c.version),
        published_at: c.published_at.map(format_timestamp),
        backfill_since: c.backfill_since.map(format_timestamp),
        // Only a shadow says so: `LIVE` is the default and the common case.
        mode: (c.mode != CampaignMode::Live).then(|| symbol_of(&MODES, c.mode).to_string()),
        starts_at: c.starts_at.map(format_timestamp),
        ends_at: c.ends_at.map(format_timestamp),
        follow_on: c.follow_on.as_ref().map(raw_follow_on),
    }
}

pub(super) fn raw_follow_on(rule: &FollowOnRule) -> RawFollowOn {
    let d = &rule.delay;
    let delay = match d.delay_type {
        DelayType::Immediate => WordOrMap::Word("immediate".into()),
        DelayType::After => WordOrMap::Word(file_duration(d.seconds.unwrap_or(0))),
        DelayType::NextWeekday => WordOrMap::Map(RawLocalDelay {
            next_weekday: d.weekday.map(|w| symbol_of(&WEEKDAYS, w).to_string()),
            calendar_days: None,
            at: d.local_time.clone(),
        }),
        DelayType::CalendarDays => WordOrMap::Map(RawLocalDelay {
            next_weekday: None,
            calendar_days: d.days.map(i64::from),
            at: d.local_time.clone(),
        }),
    };
    let kinds = |kinds: &[InteractionKind]| kinds.iter().map(|k| k.symbol().to_string()).collect();
    let exceptions = rule
        .exceptions
        .iter()
        .map(|e| match e.exception_type {
            ExceptionType::Interaction => RawException {
                interaction: Some(RawInteractionException {
                    campaign_id: e.campaign_id.clone(),
                    kinds: kinds(&e.interaction_kinds),
                }),
                ..RawException::default()
            },
            ExceptionType::CustomEvent => RawException {
                custom_event: Some(e.name.clone().unwrap_or_default()),
                ..RawException::default()
            },
            ExceptionType::Purchase => RawException {
                purchase: Some(Some(RawPurchase {
                    product_id: e.name.clone(),
                })),
                ..RawException::default()
            },
            ExceptionType::SessionStart => RawException {
                session_start: Some(Some(RawEmpty {})),
                ..RawException::default()
            },
        })
        .collect();
    let reeligibility = match rule.reeligibility.policy {
        ReeligibilityPolicy::Never => "never".to_string(),
        ReeligibilityPolicy::After => file_duration(rule.reeligibility.seconds.unwrap_or(0)),
    };
    let overdue = match rule.overdue.policy {
        OverduePolicy::Send => WordOrMap::Word("send".into()),
        OverduePolicy::DropIfLateBy => WordOrMap::Map(RawDropIfLate {
            drop_if_late_by: file_duration(rule.overdue.seconds.unwrap_or(0)),
        }),
    };
    RawFollowOn {
        trigger: RawTrigger {
            campaign_id: rule.trigger.campaign_id.clone(),
            kinds: kinds(&rule.trigger.kinds),
            qualifier: rule.trigger.qualifier.clone(),
        },
        delay,
        time_zone: rule.time_zone.clone(),
        exceptions,
        reeligibility: Some(reeligibility),
        on_repeat_trigger: Some(symbol_of(&REPEATS, rule.on_repeat_trigger).to_string()),
        overdue: Some(overdue),
        message: RawMessage {
            channel: symbol_of(&CHANNELS, rule.message.channel).to_string(),
            template_id: rule.message.template_id.clone(),
            payload: rule.message.payload.clone(),
        },
    }
}
