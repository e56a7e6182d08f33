//! Time arithmetic: durations in the file format, timestamps, and local times in IANA zones.
//!
//! Nothing here reads a clock. Local times follow SPEC §3: a local time inside a DST gap
//! moves forward by the gap, an ambiguous one (DST overlap) takes the earlier instant.
//!
//! Event times are checked here too: [`MIN_EVENT_TIME`]..=[`MAX_EVENT_TIME`] is the range
//! the rules compute with ([`check_event_range`]), and [`check_event_time`] adds the edge's
//! bound on how far ahead of the wall clock a record may be. Every computation that can
//! leave chrono's or `i64`'s range returns `None` instead of panicking.

use chrono::{
    DateTime, Datelike, FixedOffset, LocalResult, NaiveDate, NaiveDateTime, NaiveTime, Offset,
    TimeDelta, TimeZone,
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

/// The earliest event time the engine computes with: 1970-01-01T00:00:00Z, the Unix epoch.
///
/// An `occurred_at` before the epoch is, in practice, an unset or sign-flipped field (`-1`,
/// `0 - x`); no campaign interaction happened before 1970.
pub const MIN_EVENT_TIME: TimestampMs = 0;

/// The latest event time the engine computes with: 8999-12-31T23:59:59.999Z, just before the
/// year 9000.
///
/// Every instant the engine derives from an event time stays within a little more than two
/// years of it: the 2-year hard cap on delays, plus up to a day for a local time of day in
/// any IANA zone, and 720 days of re-eligibility counted from a send. From the year 9000,
/// that leaves about a thousand years of margin below 9999-12-31T23:59:59.999Z, the last
/// instant RFC 3339 can write (and far below chrono's limit, about year 262,000, and
/// `i64` milliseconds, about 292 million years). So, for an event in range, no arithmetic
/// overflows, every local-time conversion succeeds, and every time the connector writes
/// formats as RFC 3339. The range is about what can be computed, not about plausibility:
/// the Kafka runtime also rejects records dated too far ahead of its wall clock.
// 9000-01-01T00:00:00Z in epoch milliseconds, less one (a test pins the text form).
pub const MAX_EVENT_TIME: TimestampMs = 221_845_392_000_000 - 1;

/// Dead-letter class of an `occurred_at` outside [`MIN_EVENT_TIME`]..=[`MAX_EVENT_TIME`].
pub const CLASS_TIMESTAMP_OUT_OF_RANGE: &str = "timestamp_out_of_range";
/// Dead-letter class of an `occurred_at` too far ahead of the wall clock.
pub const CLASS_FUTURE_TIMESTAMP: &str = "future_timestamp";

/// Why an event's `occurred_at` cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum EventTimeError {
    #[error(
        "occurred_at {} is before the earliest event time {} ({MIN_EVENT_TIME})",
        describe(*occurred_at),
        format_timestamp(MIN_EVENT_TIME)
    )]
    BeforeRange { occurred_at: TimestampMs },
    #[error(
        "occurred_at {} is after the latest event time {} ({MAX_EVENT_TIME})",
        describe(*occurred_at),
        format_timestamp(MAX_EVENT_TIME)
    )]
    AfterRange { occurred_at: TimestampMs },
    #[error(
        "occurred_at {} is {} ms ahead of the wall clock {}, more than the allowed skew of \
         {max_future_skew_ms} ms",
        describe(*occurred_at),
        occurred_at.saturating_sub(*now),
        describe(*now)
    )]
    InFuture {
        occurred_at: TimestampMs,
        now: TimestampMs,
        max_future_skew_ms: i64,
    },
}

impl EventTimeError {
    /// The dead-letter class (the `error.class` header).
    pub fn class(&self) -> &'static str {
        match self {
            Self::BeforeRange { .. } | Self::AfterRange { .. } => CLASS_TIMESTAMP_OUT_OF_RANGE,
            Self::InFuture { .. } => CLASS_FUTURE_TIMESTAMP,
        }
    }

    /// The rejected `occurred_at`.
    pub fn occurred_at(&self) -> TimestampMs {
        match self {
            Self::BeforeRange { occurred_at }
            | Self::AfterRange { occurred_at }
            | Self::InFuture { occurred_at, .. } => *occurred_at,
        }
    }
}

/// A timestamp as epoch milliseconds, with its RFC 3339 form when it has one.
fn describe(ms: TimestampMs) -> String {
    match rfc3339(ms) {
        Some(_) => format!("{ms} ({})", format_timestamp(ms)),
        None => ms.to_string(),
    }
}

/// Checks that the engine can compute with an event time (see [`MIN_EVENT_TIME`] and
/// [`MAX_EVENT_TIME`]). The engine applies this check itself; it needs no wall clock, so
/// the simulator uses it too.
pub fn check_event_range(occurred_at: TimestampMs) -> Result<(), EventTimeError> {
    if occurred_at < MIN_EVENT_TIME {
        Err(EventTimeError::BeforeRange { occurred_at })
    } else if occurred_at > MAX_EVENT_TIME {
        Err(EventTimeError::AfterRange { occurred_at })
    } else {
        Ok(())
    }
}

/// The edge check of an input record's event time: inside the range the engine computes
/// with, and at most `max_future_skew_ms` ahead of the wall clock `now` (a negative skew
/// counts as zero). A record dated far ahead would otherwise move the task's stream time
/// there and fire every pending timer at once.
pub fn check_event_time(
    occurred_at: TimestampMs,
    now: TimestampMs,
    max_future_skew_ms: i64,
) -> Result<(), EventTimeError> {
    check_event_range(occurred_at)?;
    let max_future_skew_ms = max_future_skew_ms.max(0);
    if occurred_at.saturating_sub(now) > max_future_skew_ms {
        return Err(EventTimeError::InFuture {
            occurred_at,
            now,
            max_future_skew_ms,
        });
    }
    Ok(())
}

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
    #[error(
        "invalid time {0:?}: expected RFC 3339 such as 2026-11-28T09:00:00Z (a bare number \
         is refused: it could mean seconds or milliseconds)"
    )]
    Rfc3339(String),
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

/// Parses RFC 3339 only (offsets allowed): for times typed on the command line, where a
/// bare number would be ambiguous.
pub fn parse_rfc3339(text: &str) -> Result<TimestampMs, TimeError> {
    DateTime::parse_from_rfc3339(text.trim())
        .map(|d| d.timestamp_millis())
        .map_err(|_| TimeError::Rfc3339(text.to_string()))
}

/// RFC 3339 in UTC with milliseconds when they are not zero; epoch milliseconds for an
/// instant RFC 3339 cannot write (outside the years 0000–9999), which
/// [`parse_timestamp`] reads back the same.
pub fn format_timestamp(ms: TimestampMs) -> String {
    TimestampText::new(ms).as_str().to_string()
}

/// [`format_timestamp`]'s text without an allocation, for writers of many records.
#[derive(Clone, Copy)]
pub struct TimestampText {
    bytes: [u8; 24],
    len: usize,
}

impl TimestampText {
    pub fn new(ms: TimestampMs) -> Self {
        if let Some((bytes, len)) = rfc3339(ms) {
            return Self { bytes, len };
        }
        // Epoch milliseconds: at most 20 characters (`-9223372036854775808`).
        let mut bytes = [0u8; 24];
        let mut cursor = std::io::Cursor::new(&mut bytes[..]);
        std::io::Write::write_fmt(&mut cursor, format_args!("{ms}"))
            .expect("an i64 fits in 24 bytes");
        let len = cursor.position() as usize;
        Self { bytes, len }
    }

    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.bytes[..self.len]).expect("ASCII digits and separators")
    }
}

/// RFC 3339 in UTC, or `None` outside the years 0000–9999.
///
/// Written digit by digit (the proleptic Gregorian calendar from the day number): the
/// simulator and preview format every time they print, and a format string costs several
/// times more. A test checks it against chrono's formatting over the whole range.
fn rfc3339(ms: TimestampMs) -> Option<([u8; 24], usize)> {
    let seconds = ms.div_euclid(1_000);
    let millis = ms.rem_euclid(1_000);
    let days = seconds.div_euclid(DAY_SECONDS);
    let of_day = seconds.rem_euclid(DAY_SECONDS);
    let (year, month, day) = civil_from_days(days);
    if !(0..=9999).contains(&year) {
        return None;
    }
    let mut out = *b"0000-00-00T00:00:00.000Z";
    let put = |out: &mut [u8; 24], at: usize, value: i64, width: usize| {
        let mut v = value;
        for i in (0..width).rev() {
            out[at + i] = b'0' + (v % 10) as u8;
            v /= 10;
        }
    };
    put(&mut out, 0, year, 4);
    put(&mut out, 5, month, 2);
    put(&mut out, 8, day, 2);
    put(&mut out, 11, of_day / 3_600, 2);
    put(&mut out, 14, of_day / 60 % 60, 2);
    put(&mut out, 17, of_day % 60, 2);
    let len = if millis == 0 {
        out[19] = b'Z';
        20
    } else {
        put(&mut out, 20, millis, 3);
        24
    };
    Some((out, len))
}

/// The proleptic Gregorian (year, month, day) of a day number counted from 1970-01-01,
/// by Howard Hinnant's `civil_from_days` (eras of 400 years, years starting in March).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
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
/// the earlier instant. `None` when the instant is not representable.
pub fn local_to_utc(zone: Tz, local: NaiveDateTime) -> Option<TimestampMs> {
    match zone.from_local_datetime(&local) {
        LocalResult::Single(t) => Some(t.timestamp_millis()),
        LocalResult::Ambiguous(earlier, later) => {
            Some(earlier.timestamp_millis().min(later.timestamp_millis()))
        }
        LocalResult::None => {
            // The offset in force just before the gap: a day earlier is safely before it.
            let before = local.checked_sub_signed(TimeDelta::days(1))?;
            let offset = match zone.from_local_datetime(&before) {
                LocalResult::Single(t) => t.offset().fix(),
                LocalResult::Ambiguous(t, _) => t.offset().fix(),
                LocalResult::None => FixedOffset::east_opt(0)?,
            };
            let utc =
                local.checked_sub_signed(TimeDelta::seconds(offset.local_minus_utc().into()))?;
            Some(utc.and_utc().timestamp_millis())
        }
    }
}

/// The local date of an instant in `zone`; `None` when chrono cannot represent it.
fn local_date(zone: Tz, at: TimestampMs) -> Option<NaiveDate> {
    zone.timestamp_millis_opt(at)
        .single()
        .map(|d| d.date_naive())
}

/// `local_date + days` at `at` local time, as an instant; `None` when not representable.
fn local_date_plus(zone: Tz, date: NaiveDate, days: i64, at: NaiveTime) -> Option<TimestampMs> {
    let date = date.checked_add_signed(TimeDelta::try_days(days)?)?;
    local_to_utc(zone, date.and_time(at))
}

/// `NEXT_WEEKDAY`: the next date with `weekday` strictly after the trigger's local date
/// (so the same weekday means 7 days later), at `at` local time. `None` when the due time
/// is not representable (never for a trigger inside the event-time range).
pub fn next_weekday_at(
    zone: Tz,
    triggered_at: TimestampMs,
    weekday: Weekday,
    at: NaiveTime,
) -> Option<TimestampMs> {
    let date = local_date(zone, triggered_at)?;
    let from = i64::from(date.weekday().num_days_from_monday());
    let to = i64::from(chrono_weekday(weekday).num_days_from_monday());
    let mut ahead = (to - from).rem_euclid(7);
    if ahead == 0 {
        ahead = 7;
    }
    local_date_plus(zone, date, ahead, at)
}

/// `CALENDAR_DAYS`: `days` (≥ 1) local dates after the trigger's local date, at `at`.
/// `None` when the due time is not representable (never for a trigger inside the
/// event-time range and a validated number of days).
pub fn calendar_days_at(
    zone: Tz,
    triggered_at: TimestampMs,
    days: i32,
    at: NaiveTime,
) -> Option<TimestampMs> {
    let date = local_date(zone, triggered_at)?;
    local_date_plus(zone, date, days.into(), at)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What `rfc3339` must equal: chrono's formatting.
    fn chrono_rfc3339(ms: TimestampMs) -> Option<String> {
        let d = DateTime::from_timestamp_millis(ms).filter(|d| (0..=9999).contains(&d.year()))?;
        Some(if ms % 1000 == 0 {
            d.format("%Y-%m-%dT%H:%M:%SZ").to_string()
        } else {
            d.format("%Y-%m-%dT%H:%M:%S%.3fZ").to_string()
        })
    }

    #[test]
    fn rfc3339_is_chronos_format_over_the_whole_range() {
        let first = ts("0000-01-01T00:00:00Z");
        let last = ts("9999-12-31T23:59:59.999Z");
        let mut edges = vec![
            first - 1,
            first,
            last,
            last + 1,
            0,
            -1,
            1,
            MAX_EVENT_TIME,
            ts("2000-02-29T12:00:00.5Z"),
            ts("1900-03-01T00:00:00Z"),
            ts("2100-02-28T23:59:59Z"),
            i64::MIN,
            i64::MAX,
        ];
        // Every day boundary of a few leap-year cycles, and a spread over the range.
        let day = DAY_SECONDS * 1_000;
        edges.extend((0..3_000).map(|i| ts("1999-12-31T00:00:00Z") + i * day - 1));
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
        for _ in 0..200_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let span = (last - first + 2) as u64;
            edges.push(first - 1 + (x % span) as i64);
        }
        for ms in edges {
            let ours = rfc3339(ms).map(|(b, len)| String::from_utf8(b[..len].to_vec()).unwrap());
            assert_eq!(ours, chrono_rfc3339(ms), "{ms}");
            let text = chrono_rfc3339(ms).unwrap_or_else(|| ms.to_string());
            assert_eq!(format_timestamp(ms), text, "{ms}");
        }
    }

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
        assert_eq!(due, Some(ts("2026-11-30T08:00:00Z")));
        // Same weekday means a week later.
        let due = next_weekday_at(berlin, ts("2026-11-30T07:00:00Z"), Weekday::Monday, nine);
        assert_eq!(due, Some(ts("2026-12-07T08:00:00Z")));
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
        assert_eq!(gap, Some(ts("2026-03-29T01:30:00Z")));
        // 2026-10-25 02:30 happens twice: the earlier is 02:30 CEST = 00:30 UTC.
        let overlap = local_to_utc(
            berlin,
            NaiveDate::from_ymd_opt(2026, 10, 25)
                .unwrap()
                .and_hms_opt(2, 30, 0)
                .unwrap(),
        );
        assert_eq!(overlap, Some(ts("2026-10-25T00:30:00Z")));
        // Calendar days across the spring change keep the local wall time.
        let ten = parse_local_time("10:00").unwrap();
        assert_eq!(
            calendar_days_at(berlin, ts("2026-03-28T12:00:00Z"), 2, ten),
            Some(ts("2026-03-30T08:00:00Z"))
        );
        assert_eq!(
            calendar_days_at(berlin, ts("2026-03-27T12:00:00Z"), 1, ten),
            Some(ts("2026-03-28T09:00:00Z"))
        );
    }

    #[test]
    fn the_event_time_range_is_the_years_1970_to_8999() {
        assert_eq!(format_timestamp(MIN_EVENT_TIME), "1970-01-01T00:00:00Z");
        assert_eq!(format_timestamp(MAX_EVENT_TIME), "8999-12-31T23:59:59.999Z");
        assert_eq!(check_event_range(MIN_EVENT_TIME), Ok(()));
        assert_eq!(check_event_range(MAX_EVENT_TIME), Ok(()));
        for t in [i64::MIN, -1] {
            assert_eq!(
                check_event_range(t),
                Err(EventTimeError::BeforeRange { occurred_at: t })
            );
        }
        for t in [MAX_EVENT_TIME + 1, 8_210_298_412_800_000, i64::MAX] {
            assert_eq!(
                check_event_range(t),
                Err(EventTimeError::AfterRange { occurred_at: t })
            );
        }
    }

    #[test]
    fn out_of_range_errors_name_the_value_and_the_bound() {
        let e = check_event_range(8_210_298_412_800_000).unwrap_err();
        assert_eq!(e.class(), "timestamp_out_of_range");
        assert_eq!(
            e.to_string(),
            "occurred_at 8210298412800000 is after the latest event time \
             8999-12-31T23:59:59.999Z (221845391999999)"
        );
        let e = check_event_range(-1).unwrap_err();
        assert_eq!(e.class(), "timestamp_out_of_range");
        assert_eq!(
            e.to_string(),
            "occurred_at -1 (1969-12-31T23:59:59.999Z) is before the earliest event time \
             1970-01-01T00:00:00Z (0)"
        );
    }

    #[test]
    fn a_record_dated_2099_is_too_far_ahead_of_a_wall_clock_in_2026() {
        let now = ts("2026-11-28T09:00:00Z");
        let day = DAY_SECONDS * SECOND_MS;
        let e = check_event_time(ts("2099-01-01T00:00:00Z"), now, day).unwrap_err();
        assert_eq!(e.class(), "future_timestamp");
        assert_eq!(e.occurred_at(), ts("2099-01-01T00:00:00Z"));
        assert_eq!(
            e.to_string(),
            "occurred_at 4070908800000 (2099-01-01T00:00:00Z) is 2275052400000 ms ahead of the \
             wall clock 1795856400000 (2026-11-28T09:00:00Z), more than the allowed skew of \
             86400000 ms"
        );
        // Up to the skew ahead is fine, and so is any past time in range.
        assert_eq!(check_event_time(now + day, now, day), Ok(()));
        assert!(check_event_time(now + day + 1, now, day).is_err());
        assert_eq!(check_event_time(MIN_EVENT_TIME, now, day), Ok(()));
        // The range comes first, whatever the clock says.
        assert_eq!(
            check_event_time(i64::MAX, i64::MAX, i64::MAX).map_err(|e| e.class()),
            Err("timestamp_out_of_range")
        );
        // A negative skew counts as zero; extreme clocks do not overflow.
        assert!(check_event_time(now + 1, now, -5).is_err());
        assert_eq!(check_event_time(now, now, -5), Ok(()));
        assert_eq!(check_event_time(MAX_EVENT_TIME, i64::MAX, 0), Ok(()));
        assert_eq!(check_event_time(MAX_EVENT_TIME, i64::MIN, i64::MAX), Ok(()));
        assert!(check_event_time(MAX_EVENT_TIME, i64::MIN, 0).is_err());
    }

    #[test]
    fn timestamps_rfc3339_cannot_write_are_formatted_as_numbers_that_parse_back() {
        for ms in [i64::MIN, -62_167_219_200_001, 253_402_300_800_000, i64::MAX] {
            assert_eq!(format_timestamp(ms), ms.to_string());
            assert_eq!(parse_timestamp(&format_timestamp(ms)), Ok(ms));
        }
        assert_eq!(
            format_timestamp(-62_167_219_200_000),
            "0000-01-01T00:00:00Z"
        );
        assert_eq!(
            format_timestamp(253_402_300_799_999),
            "9999-12-31T23:59:59.999Z"
        );
    }

    #[test]
    fn command_line_times_are_rfc3339_only() {
        assert_eq!(
            parse_rfc3339("2026-11-28T10:00:00+01:00"),
            Ok(ts("2026-11-28T09:00:00Z"))
        );
        for bad in ["1795856400", "1795856400000", "tomorrow", ""] {
            let e = parse_rfc3339(bad).unwrap_err();
            assert!(e.to_string().contains(&format!("{bad:?}")), "{e}");
            assert!(e.to_string().contains("a bare number is refused"), "{e}");
        }
    }

    #[test]
    fn local_times_are_none_when_not_representable_and_never_panic() {
        let nine = parse_local_time("09:00").unwrap();
        let zone = parse_zone("Pacific/Kiritimati").unwrap();
        // The instant that once panicked: close to the last date chrono can represent.
        for t in [8_210_298_412_800_000, i64::MAX, i64::MIN] {
            assert_eq!(next_weekday_at(zone, t, Weekday::Monday, nine), None);
            assert_eq!(calendar_days_at(zone, t, 1, nine), None);
        }
        let t = ts("2026-11-28T09:00:00Z");
        assert_eq!(calendar_days_at(zone, t, i32::MAX, nine), None);
        assert_eq!(calendar_days_at(zone, t, i32::MIN, nine), None);
    }

    /// The claim behind [`MAX_EVENT_TIME`]: in every zone, at both ends of the range, the
    /// longest local-time delays compute, and land after the trigger within the hard cap
    /// plus a day for the time of day.
    #[test]
    fn every_zone_computes_local_times_at_both_ends_of_the_range() {
        let times = [
            parse_local_time("00:00").unwrap(),
            parse_local_time("23:59:59").unwrap(),
        ];
        let day = DAY_SECONDS * SECOND_MS;
        let longest = TWO_YEARS_SECONDS * SECOND_MS + day;
        let weekdays = [
            Weekday::Monday,
            Weekday::Tuesday,
            Weekday::Wednesday,
            Weekday::Thursday,
            Weekday::Friday,
            Weekday::Saturday,
            Weekday::Sunday,
        ];
        for zone in chrono_tz::TZ_VARIANTS {
            for t in [MIN_EVENT_TIME, MAX_EVENT_TIME - day, MAX_EVENT_TIME] {
                for at in times {
                    for days in [1, 730] {
                        let due = calendar_days_at(zone, t, days, at);
                        assert!(
                            due.is_some_and(|d| d > t && d - t <= longest),
                            "{zone} {t} {days}d {at}: {due:?}"
                        );
                    }
                    for w in weekdays {
                        let due = next_weekday_at(zone, t, w, at);
                        assert!(
                            due.is_some_and(|d| d > t && d - t <= 8 * day),
                            "{zone} {t} {w:?} {at}: {due:?}"
                        );
                        assert!(due.is_some_and(|d| format_timestamp(d).ends_with('Z')));
                    }
                }
            }
        }
    }
}
