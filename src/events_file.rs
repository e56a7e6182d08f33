//! The JSONL events file of `simulate`, `send` and `preview --export`: one
//! `{"interaction": {...}}` or `{"user_event": {...}}` per line, with the Avro records' field
//! names.
//!
//! ```text
//!  bytes ─► skip a leading BOM ─► split at \n ─► UTF-8? ─► JSON ─► InputEvent
//!  (read in bounded pieces)          │              └──────────┴─► LineError (number, why)
//!                                    └─ longer than MAX_LINE_BYTES ─► LineError
//! ```
//!
//! The file is read as bytes, not as one string, so that a stray non-UTF-8 byte spoils its
//! own line and nothing else. Blank lines and lines starting with `#` are skipped.
//! [`EventLines`] reads a file line by line with a bounded buffer, so a file of any size is
//! read in constant memory; [`parse_events`] does the same for bytes already in memory.
//!
//! A line is parsed by a direct typed pass first (the common case: known kinds, epoch
//! milliseconds or RFC 3339 times); only a line that pass refuses goes through the JSON
//! encoding's general rules ([`crate::codec::from_json_value`]), which accept or refuse it
//! and word the error. The fast pass accepts nothing the general rules refuse and reads
//! every value the same way; a test compares the two on every kind of line.

use std::io::BufRead;

use serde::de::{self, Deserializer};
use serde::Deserialize;
use serde_json::Value;

use crate::codec;
use crate::model::{
    InputEvent, Interaction, InteractionKind, Properties, TimestampMs, UserEvent, UserEventType,
};
use crate::time::parse_timestamp;

/// A line of the events file that could not be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineError {
    /// 1-based.
    pub line: usize,
    pub message: String,
}

/// The UTF-8 byte order mark some editors write at the start of a file.
const BOM: &[u8] = b"\xEF\xBB\xBF";

/// Parses the events file. Returns the events with their line numbers, and the bad lines.
pub fn parse_events(bytes: &[u8]) -> (Vec<(usize, InputEvent)>, Vec<LineError>) {
    let mut events = Vec::new();
    let mut errors = Vec::new();
    let mut lines = EventLines::new(bytes);
    // Reading from memory cannot fail.
    while let Ok(Some((number, parsed))) = lines.next_event() {
        match parsed {
            Ok(event) => events.push((number, event)),
            Err(message) => errors.push(LineError {
                line: number,
                message,
            }),
        }
    }
    (events, errors)
}

/// The longest line read, in bytes (without its line break). A longer line is a bad line;
/// the reader skips it without holding it, so memory stays bounded by this.
pub const MAX_LINE_BYTES: usize = 16 << 20;

/// Reads an events file line by line with a bounded buffer: the events in file order with
/// their line numbers (1-based), and the bad lines with why.
pub struct EventLines<R> {
    reader: R,
    line: Vec<u8>,
    number: usize,
    at_start: bool,
}

impl<R: BufRead> EventLines<R> {
    pub fn new(reader: R) -> Self {
        Self {
            reader,
            line: Vec::new(),
            number: 0,
            at_start: true,
        }
    }

    /// The next event or bad line (blank and comment lines are skipped); `None` at the end
    /// of the file. An error is the file's, not a line's: reading it failed.
    pub fn next_event(&mut self) -> std::io::Result<Option<(usize, Result<InputEvent, String>)>> {
        loop {
            let Some(too_long) = self.read_line()? else {
                return Ok(None);
            };
            let number = self.number;
            if too_long {
                return Ok(Some((
                    number,
                    Err(format!(
                        "line longer than {MAX_LINE_BYTES} bytes: not read (one event per line)"
                    )),
                )));
            }
            let mut raw = self.line.as_slice();
            if std::mem::take(&mut self.at_start) {
                raw = raw.strip_prefix(BOM).unwrap_or(raw);
            }
            let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
            let parsed = std::str::from_utf8(raw)
                .map_err(|e| not_utf8(raw, &e))
                .and_then(|line| match line.trim() {
                    "" => Ok(None),
                    comment if comment.starts_with('#') => Ok(None),
                    line => parse_event_line(line).map(Some),
                });
            match parsed {
                Ok(None) => continue,
                Ok(Some(event)) => return Ok(Some((number, Ok(event)))),
                Err(message) => return Ok(Some((number, Err(message)))),
            }
        }
    }

    /// Reads the next line into `self.line` (without its `\n`). `None` at the end of the
    /// file; `Some(true)` when the line was longer than [`MAX_LINE_BYTES`] (then skipped).
    fn read_line(&mut self) -> std::io::Result<Option<bool>> {
        self.line.clear();
        let mut too_long = false;
        let mut any = false;
        loop {
            let available = match self.reader.fill_buf() {
                Ok(b) => b,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            };
            if available.is_empty() {
                if !any {
                    return Ok(None);
                }
                break;
            }
            any = true;
            let (piece, used, done) = match available.iter().position(|&b| b == b'\n') {
                Some(i) => (&available[..i], i + 1, true),
                None => (available, available.len(), false),
            };
            if !too_long && self.line.len() + piece.len() <= MAX_LINE_BYTES {
                self.line.extend_from_slice(piece);
            } else {
                too_long = true;
                self.line.clear();
            }
            self.reader.consume(used);
            if done {
                break;
            }
        }
        self.number += 1;
        Ok(Some(too_long))
    }
}

/// Names the first byte that is not UTF-8 and where it is in the line (0-based).
fn not_utf8(raw: &[u8], e: &std::str::Utf8Error) -> String {
    let at = e.valid_up_to();
    match (e.error_len(), raw.get(at)) {
        (Some(_), Some(b)) => format!("not UTF-8: byte 0x{b:02X} at byte offset {at} of the line"),
        _ => format!("not UTF-8: the line ends inside a character at byte offset {at}"),
    }
}

/// One JSONL line into an input event (missing fields and empty ids are bad input).
pub fn parse_event_line(line: &str) -> Result<InputEvent, String> {
    let (key, event) = match serde_json::from_str::<FastLine>(line) {
        Ok(FastLine::Interaction(i)) => ("interaction", InputEvent::Interaction(i.into())),
        Ok(FastLine::UserEvent(u)) => ("user_event", InputEvent::UserEvent(u.into())),
        Err(_) => return parse_event_line_general(line),
    };
    check_ids(key, event)
}

/// The JSON encoding's general rules, which also word every error.
fn parse_event_line_general(line: &str) -> Result<InputEvent, String> {
    let value: Value = serde_json::from_str(line).map_err(|e| format!("invalid JSON: {e}"))?;
    let Value::Object(outer) = value else {
        return Err(
            "expected an object {\"interaction\": {...}} or {\"user_event\": {...}}".into(),
        );
    };
    if outer.len() != 1 {
        return Err("expected exactly one key, \"interaction\" or \"user_event\"".into());
    }
    let Some((key, record)) = outer.into_iter().next() else {
        return Err("expected exactly one key, \"interaction\" or \"user_event\"".into());
    };
    // The JSON encoding's rules: RFC 3339 or epoch-millis timestamps, and a kind or type this
    // version does not know decodes as UNKNOWN, like Avro's enum default.
    let event = match key.as_str() {
        "interaction" => {
            InputEvent::Interaction(codec::from_json_value(record).map_err(|e| e.to_string())?)
        }
        "user_event" => {
            InputEvent::UserEvent(codec::from_json_value(record).map_err(|e| e.to_string())?)
        }
        other => {
            return Err(format!(
                "unknown record type {other:?}: expected \"interaction\" or \"user_event\""
            ))
        }
    };
    check_ids(&key, event)
}

fn check_ids(key: &str, event: InputEvent) -> Result<InputEvent, String> {
    if event.user_id().is_empty() {
        return Err(format!("{key}: empty user_id"));
    }
    if event.event_id().is_empty() {
        return Err(format!("{key}: empty event_id"));
    }
    Ok(event)
}

// ---------------------------------------------------------------- the fast typed pass

/// A line as the fast pass reads it: exactly one of the two keys.
#[derive(Deserialize)]
enum FastLine {
    #[serde(rename = "interaction")]
    Interaction(FastInteraction),
    #[serde(rename = "user_event")]
    UserEvent(FastUserEvent),
}

/// [`Interaction`] with the JSON encoding's leniency built in: a timestamp as a number or
/// text, a kind this version does not know as `UNKNOWN`.
#[derive(Deserialize)]
struct FastInteraction {
    event_id: String,
    user_id: String,
    campaign_id: String,
    #[serde(deserialize_with = "interaction_kind")]
    kind: InteractionKind,
    #[serde(default)]
    qualifier: Option<String>,
    #[serde(deserialize_with = "timestamp")]
    occurred_at: TimestampMs,
    #[serde(default)]
    user_time_zone: Option<String>,
    #[serde(default)]
    properties: Properties,
}

impl From<FastInteraction> for Interaction {
    fn from(i: FastInteraction) -> Self {
        Self {
            event_id: i.event_id,
            user_id: i.user_id,
            campaign_id: i.campaign_id,
            kind: i.kind,
            qualifier: i.qualifier,
            occurred_at: i.occurred_at,
            user_time_zone: i.user_time_zone,
            properties: i.properties,
        }
    }
}

#[derive(Deserialize)]
struct FastUserEvent {
    event_id: String,
    user_id: String,
    #[serde(rename = "type", deserialize_with = "user_event_type")]
    event_type: UserEventType,
    #[serde(default)]
    name: Option<String>,
    #[serde(deserialize_with = "timestamp")]
    occurred_at: TimestampMs,
    #[serde(default)]
    user_time_zone: Option<String>,
    #[serde(default)]
    properties: Properties,
}

impl From<FastUserEvent> for UserEvent {
    fn from(u: FastUserEvent) -> Self {
        Self {
            event_id: u.event_id,
            user_id: u.user_id,
            event_type: u.event_type,
            name: u.name,
            occurred_at: u.occurred_at,
            user_time_zone: u.user_time_zone,
            properties: u.properties,
        }
    }
}

/// A symbol the schema does not list reads as `UNKNOWN` (the enum default).
fn interaction_kind<'de, D: Deserializer<'de>>(d: D) -> Result<InteractionKind, D::Error> {
    let symbol = <std::borrow::Cow<'de, str>>::deserialize(d)?;
    Ok(InteractionKind::from_symbol(&symbol).unwrap_or(InteractionKind::Unknown))
}

fn user_event_type<'de, D: Deserializer<'de>>(d: D) -> Result<UserEventType, D::Error> {
    let symbol = <std::borrow::Cow<'de, str>>::deserialize(d)?;
    Ok(match &*symbol {
        "CUSTOM_EVENT" => UserEventType::CustomEvent,
        "PURCHASE" => UserEventType::Purchase,
        "SESSION_START" => UserEventType::SessionStart,
        _ => UserEventType::Unknown,
    })
}

/// Epoch milliseconds as a JSON integer, or any text [`parse_timestamp`] reads.
fn timestamp<'de, D: Deserializer<'de>>(d: D) -> Result<TimestampMs, D::Error> {
    struct Visitor;
    impl de::Visitor<'_> for Visitor {
        type Value = TimestampMs;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("epoch milliseconds or an RFC 3339 timestamp")
        }
        fn visit_i64<E: de::Error>(self, v: i64) -> Result<TimestampMs, E> {
            Ok(v)
        }
        fn visit_u64<E: de::Error>(self, v: u64) -> Result<TimestampMs, E> {
            i64::try_from(v).map_err(E::custom)
        }
        fn visit_str<E: de::Error>(self, v: &str) -> Result<TimestampMs, E> {
            parse_timestamp(v).map_err(E::custom)
        }
    }
    d.deserialize_any(Visitor)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"{"user_event": {"event_id": "e1", "user_id": "u", "type": "SESSION_START", "occurred_at": "2026-11-02T10:00:00Z"}}"#;

    #[test]
    fn a_bad_byte_spoils_only_its_line_and_a_bom_is_skipped() {
        let mut bytes = BOM.to_vec();
        bytes.extend_from_slice(GOOD.as_bytes());
        bytes.extend_from_slice(b"\r\n{\"user_event\": \xFF}\n\n# note\n");
        bytes.extend_from_slice(GOOD.replace("e1", "e2").as_bytes());
        let (events, errors) = parse_events(&bytes);
        let lines: Vec<usize> = events.iter().map(|(n, _)| *n).collect();
        assert_eq!(lines, [1, 5]);
        assert_eq!(
            errors,
            [LineError {
                line: 2,
                message: "not UTF-8: byte 0xFF at byte offset 15 of the line".into()
            }]
        );
    }

    /// The fast pass and the general rules agree on every kind of line: the same event,
    /// or the same error.
    #[test]
    fn the_fast_pass_reads_every_line_as_the_general_rules_do() {
        let lines = [
            GOOD,
            r#"{"user_event": {"event_id": "e1", "user_id": "u", "type": "PURCHASE", "name": "sku", "occurred_at": 1793613600000, "properties": {"a": "b"}}}"#,
            r#"{"user_event": {"event_id": "e1", "user_id": "u", "type": "REFUND", "occurred_at": 5}}"#,
            r#"{"user_event": {"event_id": "e1", "user_id": "u", "type": "UNKNOWN", "occurred_at": 5}}"#,
            r#"{"user_event": {"event_id": "e1", "user_id": "u", "type": 3, "occurred_at": 5}}"#,
            r#"{"interaction": {"event_id": "e", "user_id": "u", "campaign_id": "c", "kind": "EMAIL_OPEN", "occurred_at": "2026-11-02T11:00:00+01:00", "qualifier": null, "user_time_zone": "Europe/Berlin"}}"#,
            r#"{"interaction": {"event_id": "e", "user_id": "u", "campaign_id": "c", "kind": "EMAIL_FORWARD", "occurred_at": " 1793613600000 "}}"#,
            r#"{"interaction": {"event_id": "e", "user_id": "u", "campaign_id": "c", "kind": "email_open", "occurred_at": 1}}"#,
            r#"{"interaction": {"event_id": "e", "user_id": "u", "campaign_id": "c", "kind": "EMAIL_OPEN", "occurred_at": 1, "extra": [1, 2]}}"#,
            r#"{"interaction": {"event_id": "e", "user_id": "u", "campaign_id": "c", "kind": "EMAIL_OPEN", "occurred_at": 1, "occurred_at": 2}}"#,
            r#"{"interaction": {"event_id": "e", "user_id": "u", "campaign_id": "c", "kind": "EMAIL_OPEN", "occurred_at": 1.5}}"#,
            r#"{"interaction": {"event_id": "e", "user_id": "u", "campaign_id": "c", "kind": "EMAIL_OPEN", "occurred_at": 18446744073709551615}}"#,
            r#"{"interaction": {"event_id": "e", "user_id": "u", "campaign_id": "c", "kind": "EMAIL_OPEN", "occurred_at": -5}}"#,
            r#"{"interaction": {"event_id": "e", "user_id": "u", "campaign_id": "c", "kind": "EMAIL_OPEN", "occurred_at": "soon"}}"#,
            r#"{"interaction": {"event_id": "e", "user_id": "u", "campaign_id": "c", "kind": "EMAIL_OPEN", "occurred_at": null}}"#,
            r#"{"interaction": {"event_id": "e", "user_id": "u", "campaign_id": "c", "kind": "EMAIL_OPEN"}}"#,
            r#"{"interaction": {"event_id": "e", "user_id": "u", "campaign_id": "c", "kind": "EMAIL_OPEN", "occurred_at": 1, "properties": null}}"#,
            r#"{"interaction": {"event_id": "e", "user_id": "u", "campaign_id": "c", "kind": "EMAIL_OPEN", "occurred_at": 1, "properties": {"n": 1}}}"#,
            r#"{"interaction": {"event_id": "e", "user_id": "", "campaign_id": "c", "kind": "EMAIL_OPEN", "occurred_at": 1}}"#,
            r#"{"interaction": {"event_id": "", "user_id": "u", "campaign_id": "c", "kind": "EMAIL_OPEN", "occurred_at": 1}}"#,
            r#"{"interaction": {"event_id": "e\u00e9", "user_id": "u\"q", "campaign_id": "c", "kind": "EMAIL_OPEN", "occurred_at": 1}}"#,
            r#"{"interaction": {}, "user_event": {}}"#,
            r#"{"click": {}}"#,
            r#"[1]"#,
            r#"{"interaction": {"event_id": "e", "user_id": "u", "campaign_id": "c", "kind": "EMAIL_OPEN", "occurred_at": 1}} x"#,
        ];
        for line in lines {
            assert_eq!(
                parse_event_line(line),
                parse_event_line_general(line),
                "{line}"
            );
        }
        // Both accept the lenient forms at all.
        assert!(parse_event_line(lines[6]).is_ok());
        assert!(parse_event_line(lines[2]).is_ok());
    }

    #[test]
    fn lines_are_read_in_bounded_pieces_and_an_overlong_line_is_a_bad_line() {
        let long = format!("{{\"x\": \"{}\"}}", "y".repeat(MAX_LINE_BYTES));
        let text = format!("{GOOD}\n{long}\n{GOOD}");
        // A reader that hands out small pieces, as a pipe does.
        let reader = std::io::BufReader::with_capacity(4096, text.as_bytes());
        let mut lines = EventLines::new(reader);
        let mut seen = Vec::new();
        while let Some((n, parsed)) = lines.next_event().unwrap() {
            seen.push((n, parsed.map(|e| e.event_id().to_string())));
        }
        assert_eq!(
            seen,
            [
                (1, Ok("e1".to_string())),
                (
                    2,
                    Err(format!(
                        "line longer than {MAX_LINE_BYTES} bytes: not read (one event per line)"
                    ))
                ),
                (3, Ok("e1".to_string())),
            ]
        );
    }

    #[test]
    fn a_character_cut_at_the_end_of_a_line_is_named() {
        let (_, errors) = parse_events(b"{\"a\": \"\xC3\"}\n");
        assert_eq!(errors.len(), 1);
        assert!(
            errors[0]
                .message
                .starts_with("not UTF-8: byte 0xC3 at byte offset 7"),
            "{:?}",
            errors[0]
        );
        let (_, errors) = parse_events(b"\xE2\x82");
        assert_eq!(
            errors[0].message,
            "not UTF-8: the line ends inside a character at byte offset 0"
        );
    }
}
