//! Time arithmetic: durations in the file format, timestamps, and local times in IANA zones.
//!
//! Nothing here reads a clock. Local times follow SPEC §3: a local time inside a DST gap
//! moves forward by the gap, an ambiguous one (DST overlap) takes the earlier instant.

use chrono::{
    DateTime, Datelike, Duration, LocalResult, NaiveDate, NaiveDateTime, NaiveTime, Offset,
    TimeZone,
};
use chrono_tz::Tz;
use thiserror::Error;

use crate::model::{TimestampMs, Weekday};

pub const SECOND_MS: i64 = 1_000;
pub const DAY_SECONDS: i64 = 86_400;
/// The hard cap on any delay: two years of 365 days.
pub const TWO_YEARS_SECONDS: i64 = 730 * DAY_SECONDS;
/// The longest re-eligibility period.
pub const MAX_REELIGIBILITY_SECONDS: i64 = 720 * DAY_SECONDS;

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum TimeError {
    #[error(
        "invalid duration {0:?}: expected a number and a unit (s, m, h, d, w), e.g. 90m, 7d, 1d12h"
    )]
    Duration(String),
    #[error(
        "invalid timestamp {0:?}: expected RFC 3339 (2026-11-28T09:00:00Z) or epoch milliseconds"
    )]
    Timestamp(String),
    #[error("invalid local time {0:?}: expected HH:MM or HH:MM:SS")]
    LocalTime(String),
    #[error("unknown time zone {0:?}: expected an IANA name such as Europe/Berlin")]
    Zone(String),
}

/// Parses a duration such as `90m`, `7d`, `1w`, `1d12h` or `30s` into seconds.
/// A bare number is seconds.
pub fn parse_duration(text: &str) -> Result<i64, TimeError> {
    let err = || TimeError::Duration(text.to_string());
    let t = text.trim();
    if t.is_empty() {
        return Err(err());
    }
    if let Ok(seconds) = t.parse::<i64>() {
        return if seconds >= 0 {
            Ok(seconds)
        } else {
            Err(err())
        };
    }
    let mut total: i64 = 0;
    let mut number = String::new();
    for c in t.chars() {
        if c.is_ascii_digit() {
            number.push(c);
            continue;
        }
        let unit = match c {
            's' => 1,
            'm' => 60,
            'h' => 3_600,
            'd' => DAY_SECONDS,
            'w' => 7 * DAY_SECONDS,
            _ => return Err(err()),
        };
        let n: i64 = number.parse().map_err(|_| err())?;
        number.clear();
        total = n
            .checked_mul(unit)
            .and_then(|v| total.checked_add(v))
            .ok_or_else(err)?;
    }
    if !number.is_empty() {
        return Err(err());
    }
    Ok(total)
}

/// Parses a duration that may be given in milliseconds (`100ms`) or as in
/// [`parse_duration`] (`1s`, `5m`), into milliseconds.
pub fn parse_duration_ms(text: &str) -> Result<i64, TimeError> {
    match text.trim().strip_suffix("ms") {
        Some(ms) => ms
            .trim()
            .parse::<i64>()
            .ok()
            .filter(|v| *v >= 0)
            .ok_or_else(|| TimeError::Duration(text.to_string())),
        None => parse_duration(text).map(|s| s * SECOND_MS),
    }
}

/// Formats seconds in the largest exact units, e.g. `7d`, `1d12h`, `90s`.
pub fn format_duration(seconds: i64) -> String {
    if seconds == 0 {
        return "0s".to_string();
    }
    let week = 7 * DAY_SECONDS;
    if seconds % week == 0 {
        return format!("{}w", seconds / week);
    }
    // Days, not weeks and days: "800d" reads better than "114w2d".
    let mut rest = seconds;
    let mut out = String::new();
    for (unit, name) in [(DAY_SECONDS, "d"), (3_600, "h"), (60, "m"), (1, "s")] {
        if rest >= unit {
            out.push_str(&format!("{}{}", rest / unit, name));
            rest %= unit;
        }
    }
    out
}

/// Parses RFC 3339 (`2026-11-28T09:00:00Z`, offsets allowed) or epoch milliseconds.
pub fn parse_timestamp(text: &str) -> Result<TimestampMs, TimeError> {
    let t = text.trim();
    if let Ok(ms) = t.parse::<i64>() {
        return Ok(ms);
    }
    DateTime::parse_from_rfc3339(t)
        .map(|d| d.timestamp_millis())
        .map_err(|_| TimeError::Timestamp(text.to_string()))
}

/// RFC 3339 in UTC with milliseconds when they are not zero.
pub fn format_timestamp(ms: TimestampMs) -> String {
    match DateTime::from_timestamp_millis(ms) {
        Some(d) if ms % 1000 == 0 => d.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
        Some(d) => d.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string(),
        None => ms.to_string(),
    }
}

/// Parses `HH:MM` or `HH:MM:SS`.
pub fn parse_local_time(text: &str) -> Result<NaiveTime, TimeError> {
    NaiveTime::parse_from_str(text, "%H:%M:%S")
        .or_else(|_| NaiveTime::parse_from_str(text, "%H:%M"))
        .map_err(|_| TimeError::LocalTime(text.to_string()))
}

pub fn parse_zone(name: &str) -> Result<Tz, TimeError> {
    name.parse::<Tz>()
        .map_err(|_| TimeError::Zone(name.to_string()))
}

fn chrono_weekday(w: Weekday) -> chrono::Weekday {
    match w {
        Weekday::Monday => chrono::Weekday::Mon,
        Weekday::Tuesday => chrono::Weekday::Tue,
        Weekday::Wednesday => chrono::Weekday::Wed,
        Weekday::Thursday => chrono::Weekday::Thu,
        Weekday::Friday => chrono::Weekday::Fri,
        Weekday::Saturday => chrono::Weekday::Sat,
        Weekday::Sunday => chrono::Weekday::Sun,
    }
}

/// The instant of a local date and time in `zone`: a time in a DST gap moves forward by
/// the gap (it is read with the offset in force before the gap), an ambiguous time takes
/// the earlier instant.
pub fn local_to_utc(zone: Tz, local: NaiveDateTime) -> TimestampMs {
    match zone.from_local_datetime(&local) {
        LocalResult::Single(t) => t.timestamp_millis(),
        LocalResult::Ambiguous(earlier, later) => {
            earlier.timestamp_millis().min(later.timestamp_millis())
        }
        LocalResult::None => {
            // The offset in force just before the gap: a day earlier is safely before it.
            let before = local - Duration::days(1);
            let offset = match zone.from_local_datetime(&before) {
                LocalResult::Single(t) => t.offset().fix(),
                LocalResult::Ambiguous(t, _) => t.offset().fix(),
                LocalResult::None => chrono::FixedOffset::east_opt(0).expect("zero offset"),
            };
            (local - Duration::seconds(offset.local_minus_utc() as i64))
                .and_utc()
                .timestamp_millis()
        }
    }
}

fn local_date(zone: Tz, at: TimestampMs) -> NaiveDate {
    zone.timestamp_millis_opt(at)
        .single()
        .map(|d| d.date_naive())
        .unwrap_or_else(|| {
            DateTime::from_timestamp_millis(at)
                .expect("in range")
                .date_naive()
        })
}

/// `NEXT_WEEKDAY`: the next date with `weekday` strictly after the trigger's local date
/// (so the same weekday means 7 days later), at `at` local time.
pub fn next_weekday_at(
    zone: Tz,
    triggered_at: TimestampMs,
    weekday: Weekday,
    at: NaiveTime,
) -> TimestampMs {
    let date = local_date(zone, triggered_at);
    let from = date.weekday().num_days_from_monday() as i64;
    let to = chrono_weekday(weekday).num_days_from_monday() as i64;
    let mut ahead = (to - from).rem_euclid(7);
    if ahead == 0 {
        ahead = 7;
    }
    local_to_utc(zone, (date + Duration::days(ahead)).and_time(at))
}

/// `CALENDAR_DAYS`: `days` (≥ 1) local dates after the trigger's local date, at `at`.
pub fn calendar_days_at(
    zone: Tz,
    triggered_at: TimestampMs,
    days: i32,
    at: NaiveTime,
) -> TimestampMs {
    let date = local_date(zone, triggered_at);
    local_to_utc(zone, (date + Duration::days(days as i64)).and_time(at))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> TimestampMs {
        parse_timestamp(s).unwrap()
    }

    #[test]
    fn durations_parse_and_format() {
        assert_eq!(parse_duration("7d").unwrap(), 7 * DAY_SECONDS);
        assert_eq!(parse_duration("90m").unwrap(), 5_400);
        assert_eq!(parse_duration("1w").unwrap(), 604_800);
        assert_eq!(parse_duration("1d12h").unwrap(), 129_600);
        assert_eq!(parse_duration("45").unwrap(), 45);
        for bad in ["", "d", "7x", "-1d", "7d3", "1.5h"] {
            assert!(parse_duration(bad).is_err(), "{bad} should be rejected");
        }
        assert_eq!(parse_duration_ms("100ms").unwrap(), 100);
        assert_eq!(parse_duration_ms("2s").unwrap(), 2_000);
        assert!(parse_duration_ms("-5ms").is_err());
        assert_eq!(format_duration(129_600), "1d12h");
        assert_eq!(format_duration(14 * DAY_SECONDS), "2w");
        assert_eq!(format_duration(5_400), "1h30m");
        assert_eq!(format_duration(800 * DAY_SECONDS), "800d");
    }

    #[test]
    fn timestamps_accept_rfc3339_and_epoch_millis() {
        assert_eq!(ts("1970-01-01T00:00:01Z"), 1_000);
        assert_eq!(ts("1970-01-01T01:00:01+01:00"), 1_000);
        assert_eq!(ts("1500"), 1_500);
        assert!(parse_timestamp("yesterday").is_err());
        assert_eq!(format_timestamp(1_500), "1970-01-01T00:00:01.500Z");
        assert_eq!(
            format_timestamp(ts("2026-11-28T09:00:00Z")),
            "2026-11-28T09:00:00Z"
        );
    }

    #[test]
    fn next_weekday_is_strictly_after_the_local_date() {
        let berlin = parse_zone("Europe/Berlin").unwrap();
        let nine = parse_local_time("09:00").unwrap();
        // Saturday 2026-11-28 23:30 UTC is Sunday 00:30 in Berlin: next Monday is the 30th.
        let due = next_weekday_at(berlin, ts("2026-11-28T23:30:00Z"), Weekday::Monday, nine);
        assert_eq!(due, ts("2026-11-30T08:00:00Z"));
        // Same weekday means a week later.
        let due = next_weekday_at(berlin, ts("2026-11-30T07:00:00Z"), Weekday::Monday, nine);
        assert_eq!(due, ts("2026-12-07T08:00:00Z"));
    }

    #[test]
    fn dst_gap_moves_forward_and_overlap_takes_the_earlier_instant() {
        let berlin = parse_zone("Europe/Berlin").unwrap();
        // 2026-03-29 02:30 does not exist in Berlin (02:00 → 03:00): it becomes 03:30 CEST.
        let gap = local_to_utc(
            berlin,
            NaiveDate::from_ymd_opt(2026, 3, 29)
                .unwrap()
                .and_hms_opt(2, 30, 0)
                .unwrap(),
        );
        assert_eq!(gap, ts("2026-03-29T01:30:00Z"));
        // 2026-10-25 02:30 happens twice: the earlier is 02:30 CEST = 00:30 UTC.
        let overlap = local_to_utc(
            berlin,
            NaiveDate::from_ymd_opt(2026, 10, 25)
                .unwrap()
                .and_hms_opt(2, 30, 0)
                .unwrap(),
        );
        assert_eq!(overlap, ts("2026-10-25T00:30:00Z"));
        // Calendar days across the spring change keep the local wall time.
        let ten = parse_local_time("10:00").unwrap();
        assert_eq!(
            calendar_days_at(berlin, ts("2026-03-28T12:00:00Z"), 2, ten),
            ts("2026-03-30T08:00:00Z")
        );
        assert_eq!(
            calendar_days_at(berlin, ts("2026-03-27T12:00:00Z"), 1, ten),
            ts("2026-03-28T09:00:00Z")
        );
    }
}

/// Temporary edge check (replaced by the range-checked version).
pub fn check_event_time(
    occurred_at: TimestampMs,
    now: TimestampMs,
    max_future_skew_ms: i64,
) -> Result<(), EventTimeError> {
    if !(0..=253_402_300_799_999).contains(&occurred_at) {
        return Err(EventTimeError::OutOfRange(occurred_at));
    }
    if occurred_at > now.saturating_add(max_future_skew_ms) {
        return Err(EventTimeError::Future(occurred_at));
    }
    Ok(())
}

#[derive(Debug, thiserror::Error)]
pub enum EventTimeError {
    #[error("{0} is outside the range")]
    OutOfRange(TimestampMs),
    #[error("{0} is too far ahead")]
    Future(TimestampMs),
}

impl EventTimeError {
    pub fn class(&self) -> &'static str {
        match self {
            Self::OutOfRange(_) => "timestamp_out_of_range",
            Self::Future(_) => "future_timestamp",
        }
    }
}
