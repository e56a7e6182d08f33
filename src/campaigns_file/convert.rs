//! Conversion: file shapes → Campaign, collecting every problem.

use super::*;

/// Problems found while converting one campaign, with file field paths.
#[derive(Default)]
pub(super) struct Problems(pub(super) Vec<FieldError>);

impl Problems {
    pub(super) fn add(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.0.push(FieldError {
            field: field.into(),
            message: message.into(),
        });
    }

    /// Whether a problem was already reported at `field`, inside it or around it (so that
    /// validation does not repeat a consequence of a conversion problem).
    pub(super) fn related(&self, field: &str) -> bool {
        self.0
            .iter()
            .any(|p| is_path_prefix(&p.field, field) || is_path_prefix(field, &p.field))
    }
}

/// `a.b` is a prefix of `a.b`, `a.b.c` and `a.b[0]`, not of `a.bc`.
pub(super) fn is_path_prefix(prefix: &str, path: &str) -> bool {
    path.strip_prefix(prefix)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('.') || rest.starts_with('['))
}

/// Parses an enum symbol case-insensitively, suggesting the closest symbol on failure.
pub(super) fn parse_symbol<T: Copy>(
    text: &str,
    choices: &[(&str, T)],
    what: &str,
) -> Result<T, String> {
    let wanted = text.trim().to_ascii_uppercase();
    if let Some((_, value)) = choices.iter().find(|(s, _)| *s == wanted) {
        return Ok(*value);
    }
    let symbols = choices.iter().map(|(s, _)| *s);
    Err(match closest(&wanted, symbols.clone()) {
        Some(best) => format!("unknown {what} {} (did you mean {best}?)", text.trim()),
        None => format!(
            "unknown {what} {} (expected one of {})",
            text.trim(),
            symbols.collect::<Vec<_>>().join(", ")
        ),
    })
}

pub(super) const KINDS: [(&str, CampaignKind); 2] = [
    ("CAMPAIGN", CampaignKind::Campaign),
    ("NEWS_FEED_CARD", CampaignKind::NewsFeedCard),
];
pub(super) const STATUSES: [(&str, CampaignStatus); 4] = [
    ("DRAFT", CampaignStatus::Draft),
    ("ACTIVE", CampaignStatus::Active),
    ("STOPPED", CampaignStatus::Stopped),
    ("ARCHIVED", CampaignStatus::Archived),
];
pub(super) const MODES: [(&str, CampaignMode); 2] = [
    ("LIVE", CampaignMode::Live),
    ("SHADOW", CampaignMode::Shadow),
];
pub(super) const REPEATS: [(&str, RepeatTrigger); 2] = [
    ("KEEP_FIRST", RepeatTrigger::KeepFirst),
    ("RESTART", RepeatTrigger::Restart),
];
pub(super) const CHANNELS: [(&str, Channel); 6] = [
    ("EMAIL", Channel::Email),
    ("PUSH", Channel::Push),
    ("SMS", Channel::Sms),
    ("IN_APP", Channel::InApp),
    ("CONTENT_CARD", Channel::ContentCard),
    ("WEBHOOK", Channel::Webhook),
];
pub(super) const WEEKDAYS: [(&str, Weekday); 7] = [
    ("MONDAY", Weekday::Monday),
    ("TUESDAY", Weekday::Tuesday),
    ("WEDNESDAY", Weekday::Wednesday),
    ("THURSDAY", Weekday::Thursday),
    ("FRIDAY", Weekday::Friday),
    ("SATURDAY", Weekday::Saturday),
    ("SUNDAY", Weekday::Sunday),
];

pub(super) fn symbol_of<T: PartialEq + Copy>(
    choices: &[(&'static str, T)],
    value: T,
) -> &'static str {
    choices
        .iter()
        .find(|(_, v)| *v == value)
        .map(|(s, _)| *s)
        .expect("every variant has a symbol")
}

/// Interaction kinds, case-insensitive, with a suggestion for a near miss.
pub(super) fn parse_interaction_kinds(
    p: &mut Problems,
    field: &str,
    kinds: &[String],
) -> Vec<InteractionKind> {
    let mut out = Vec::with_capacity(kinds.len());
    for (i, text) in kinds.iter().enumerate() {
        let wanted = text.trim().to_ascii_uppercase();
        match InteractionKind::from_symbol(&wanted) {
            Some(kind) => out.push(kind),
            None if wanted == "UNKNOWN" => p.add(
                format!("{field}[{i}]"),
                "UNKNOWN is not an interaction kind that can be matched",
            ),
            None => {
                let symbols: Vec<&str> =
                    InteractionKind::KNOWN.iter().map(|k| k.symbol()).collect();
                let message = match closest(&wanted, symbols.iter().copied()) {
                    Some(best) => format!(
                        "unknown interaction kind {} (did you mean {best}?)",
                        text.trim()
                    ),
                    None => format!(
                        "unknown interaction kind {} (expected one of {})",
                        text.trim(),
                        symbols.join(", ")
                    ),
                };
                p.add(format!("{field}[{i}]"), message);
            }
        }
    }
    out
}

/// A duration in the file: a number with a unit. A bare number is refused (is `7` days or
/// seconds?), although [`parse_duration`] reads it as seconds.
pub(super) fn parse_file_duration(text: &str) -> Result<i64, String> {
    let t = text.trim();
    if !t.is_empty() && t.chars().all(|c| c.is_ascii_digit()) {
        return Err(format!(
            "duration {t} needs a unit (s, m, h, d or w), e.g. {t}s or {t}d"
        ));
    }
    parse_duration(t).map_err(|e| e.to_string())
}

pub(super) fn parse_optional_timestamp(
    p: &mut Problems,
    field: &str,
    text: &Option<String>,
) -> Option<i64> {
    let text = text.as_deref()?;
    match parse_timestamp(text) {
        Ok(ms) => Some(ms),
        Err(e) => {
            p.add(field, e.to_string());
            None
        }
    }
}

/// The campaign a raw campaign describes, as far as it can be read, and the problems met.
/// Fields that could not be read get a harmless stand-in so that validation can still
/// check the rest; its problems about those fields are then dropped.
pub(super) fn convert_campaign(raw: &RawCampaign) -> (Campaign, Problems) {
    let mut p = Problems::default();
    let kind = match &raw.kind {
        None => CampaignKind::Campaign,
        Some(text) => parse_symbol(text, &KINDS, "campaign kind").unwrap_or_else(|e| {
            p.add("kind", e);
            CampaignKind::Campaign
        }),
    };
    let status = parse_symbol(&raw.status, &STATUSES, "status").unwrap_or_else(|e| {
        p.add("status", e);
        CampaignStatus::Draft
    });
    let mode = match &raw.mode {
        None => CampaignMode::Live,
        Some(text) => parse_symbol(text, &MODES, "mode").unwrap_or_else(|e| {
            p.add("mode", e);
            CampaignMode::Live
        }),
    };
    let campaign = Campaign {
        campaign_id: raw.campaign_id.clone(),
        name: raw.name.clone(),
        kind,
        status,
        version: raw.version.unwrap_or(1),
        published_at: parse_optional_timestamp(&mut p, "published_at", &raw.published_at),
        starts_at: parse_optional_timestamp(&mut p, "starts_at", &raw.starts_at),
        ends_at: parse_optional_timestamp(&mut p, "ends_at", &raw.ends_at),
        follow_on: raw.follow_on.as_ref().map(|f| convert_follow_on(&mut p, f)),
        backfill_since: parse_optional_timestamp(&mut p, "backfill_since", &raw.backfill_since),
        mode,
    };
    (campaign, p)
}

pub(super) fn convert_follow_on(p: &mut Problems, raw: &RawFollowOn) -> FollowOnRule {
    let trigger = Trigger {
        campaign_id: raw.trigger.campaign_id.clone(),
        kinds: parse_interaction_kinds(p, "follow_on.trigger.kinds", &raw.trigger.kinds),
        qualifier: raw.trigger.qualifier.clone(),
    };
    let delay = convert_delay(p, &raw.delay);
    let exceptions = raw
        .exceptions
        .iter()
        .enumerate()
        .filter_map(|(i, e)| convert_exception(p, &format!("follow_on.exceptions[{i}]"), e))
        .collect();
    let reeligibility = match raw.reeligibility.as_deref().map(str::trim) {
        None => Reeligibility {
            policy: ReeligibilityPolicy::Never,
            seconds: None,
        },
        Some(word) if word.eq_ignore_ascii_case("never") => Reeligibility {
            policy: ReeligibilityPolicy::Never,
            seconds: None,
        },
        Some(text) => match parse_file_duration(text) {
            Ok(seconds) => Reeligibility {
                policy: ReeligibilityPolicy::After,
                seconds: Some(seconds),
            },
            Err(e) => {
                p.add(
                    "follow_on.reeligibility",
                    format!("expected `never` or a duration such as 30d: {e}"),
                );
                Reeligibility {
                    policy: ReeligibilityPolicy::Never,
                    seconds: None,
                }
            }
        },
    };
    let on_repeat_trigger = match &raw.on_repeat_trigger {
        None => RepeatTrigger::KeepFirst,
        Some(text) => parse_symbol(text, &REPEATS, "on_repeat_trigger").unwrap_or_else(|e| {
            p.add("follow_on.on_repeat_trigger", e);
            RepeatTrigger::KeepFirst
        }),
    };
    let send = Overdue {
        policy: OverduePolicy::Send,
        seconds: None,
    };
    let overdue = match &raw.overdue {
        None => send,
        Some(WordOrMap::Word(w)) if w.trim().eq_ignore_ascii_case("send") => send,
        Some(WordOrMap::Word(w)) => {
            let hint = match parse_file_duration(w) {
                Ok(_) => format!(" (did you mean {{drop_if_late_by: {}}}?)", w.trim()),
                Err(_) => String::new(),
            };
            p.add(
                "follow_on.overdue",
                format!(
                    "expected `send` or {{drop_if_late_by: <duration>}}, got {}{hint}",
                    w.trim()
                ),
            );
            send
        }
        Some(WordOrMap::Map(m)) => match parse_file_duration(&m.drop_if_late_by) {
            Ok(seconds) => Overdue {
                policy: OverduePolicy::DropIfLateBy,
                seconds: Some(seconds),
            },
            Err(e) => {
                p.add("follow_on.overdue.drop_if_late_by", e);
                send
            }
        },
    };
    let channel = parse_symbol(&raw.message.channel, &CHANNELS, "channel").unwrap_or_else(|e| {
        p.add("follow_on.message.channel", e);
        Channel::Email
    });
    FollowOnRule {
        trigger,
        delay,
        time_zone: raw.time_zone.clone(),
        exceptions,
        reeligibility,
        on_repeat_trigger,
        overdue,
        message: Message {
            channel,
            template_id: raw.message.template_id.clone(),
            payload: raw.message.payload.clone(),
        },
    }
}

pub(super) fn convert_delay(p: &mut Problems, raw: &WordOrMap<RawLocalDelay>) -> Delay {
    // Stand-in for an unreadable delay: a valid non-immediate one, so that validation does
    // not add "exceptions require a delay" as a consequence.
    let stand_in = Delay::after_seconds(1);
    match raw {
        WordOrMap::Word(w) if w.trim().eq_ignore_ascii_case("immediate") => Delay::immediate(),
        WordOrMap::Word(w) => {
            match parse_file_duration(w) {
                Ok(seconds) => Delay::after_seconds(seconds),
                Err(e) => {
                    p.add(
                    "follow_on.delay",
                    format!("expected `immediate`, a duration such as 7d, or a local-time mapping: {e}"),
                );
                    stand_in
                }
            }
        }
        WordOrMap::Map(m) => {
            let local_time = m.at.clone();
            match (&m.next_weekday, m.calendar_days) {
                (Some(day), None) => match parse_symbol(day, &WEEKDAYS, "weekday") {
                    Ok(weekday) => Delay {
                        delay_type: DelayType::NextWeekday,
                        weekday: Some(weekday),
                        local_time,
                        ..Delay::immediate()
                    },
                    Err(e) => {
                        p.add("follow_on.delay.next_weekday", e);
                        stand_in
                    }
                },
                (None, Some(days)) => match i32::try_from(days) {
                    Ok(days) => Delay {
                        delay_type: DelayType::CalendarDays,
                        days: Some(days),
                        local_time,
                        ..Delay::immediate()
                    },
                    Err(_) => {
                        p.add(
                            "follow_on.delay.calendar_days",
                            format!("{days} days is out of range"),
                        );
                        stand_in
                    }
                },
                _ => {
                    p.add(
                        "follow_on.delay",
                        "a local-time delay has exactly one of next_weekday or calendar_days, \
                         and at, e.g. {next_weekday: MONDAY, at: \"09:00\"}",
                    );
                    stand_in
                }
            }
        }
    }
}

pub(super) fn convert_exception(
    p: &mut Problems,
    field: &str,
    raw: &RawException,
) -> Option<ExceptionMatcher> {
    let keys = usize::from(raw.interaction.is_some())
        + usize::from(raw.custom_event.is_some())
        + usize::from(raw.purchase.is_some())
        + usize::from(raw.session_start.is_some());
    if keys != 1 {
        p.add(
            field,
            format!(
                "an exception has exactly one of interaction, custom_event, purchase or \
                 session_start, found {keys}"
            ),
        );
        return None;
    }
    let matcher = |exception_type| ExceptionMatcher {
        exception_type,
        campaign_id: None,
        interaction_kinds: Vec::new(),
        name: None,
    };
    Some(if let Some(i) = &raw.interaction {
        ExceptionMatcher {
            campaign_id: i.campaign_id.clone(),
            interaction_kinds: parse_interaction_kinds(
                p,
                &format!("{field}.interaction.kinds"),
                &i.kinds,
            ),
            ..matcher(ExceptionType::Interaction)
        }
    } else if let Some(name) = &raw.custom_event {
        ExceptionMatcher {
            name: Some(name.clone()),
            ..matcher(ExceptionType::CustomEvent)
        }
    } else if let Some(purchase) = &raw.purchase {
        ExceptionMatcher {
            name: purchase.as_ref().and_then(|x| x.product_id.clone()),
            ..matcher(ExceptionType::Purchase)
        }
    } else {
        matcher(ExceptionType::SessionStart)
    })
}

/// The file key for a field path of [`validate_campaign`], which uses the record's names.
pub(super) fn file_field(campaign: &Campaign, record_field: &str) -> String {
    let renamed = [
        ("follow_on.delay.seconds", "follow_on.delay"),
        ("follow_on.delay.weekday", "follow_on.delay.next_weekday"),
        ("follow_on.delay.days", "follow_on.delay.calendar_days"),
        ("follow_on.delay.local_time", "follow_on.delay.at"),
        ("follow_on.reeligibility.seconds", "follow_on.reeligibility"),
        (
            "follow_on.overdue.seconds",
            "follow_on.overdue.drop_if_late_by",
        ),
    ];
    if let Some((_, file)) = renamed.iter().find(|(r, _)| *r == record_field) {
        return file.to_string();
    }
    // follow_on.exceptions[i].<record field>
    if let Some(rest) = record_field.strip_prefix("follow_on.exceptions[") {
        if let Some((index, leaf)) = rest.split_once("].") {
            let exception = index
                .parse::<usize>()
                .ok()
                .and_then(|i| campaign.follow_on.as_ref()?.exceptions.get(i));
            let base = format!("follow_on.exceptions[{index}]");
            let leaf = match (exception.map(|e| e.exception_type), leaf) {
                (_, "interaction_kinds") => "interaction.kinds",
                (Some(ExceptionType::Interaction), "campaign_id") => "interaction.campaign_id",
                (Some(ExceptionType::CustomEvent), "name") => "custom_event",
                (Some(ExceptionType::Purchase), "name") => "purchase.product_id",
                (_, other) => other,
            };
            return format!("{base}.{leaf}");
        }
    }
    record_field.to_string()
}
