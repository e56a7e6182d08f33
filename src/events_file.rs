//! The JSONL events file of `simulate` and `send`: one `{"interaction": {...}}` or
//! `{"user_event": {...}}` per line, with the Avro records' field names.
//!
//! ```text
//!  bytes ─► skip a leading BOM ─► split at \n ─► UTF-8? ─► JSON ─► InputEvent
//!                                                  └──────────┴─► LineError (number, why)
//! ```
//!
//! The file is read as bytes, not as one string, so that a stray non-UTF-8 byte spoils its
//! own line and nothing else. Blank lines and lines starting with `#` are skipped.

use serde_json::Value;

use crate::codec;
use crate::model::InputEvent;

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
    let bytes = bytes.strip_prefix(BOM).unwrap_or(bytes);
    for (i, raw) in bytes.split(|&b| b == b'\n').enumerate() {
        let number = i + 1;
        let raw = raw.strip_suffix(b"\r").unwrap_or(raw);
        let parsed = std::str::from_utf8(raw)
            .map_err(|e| not_utf8(raw, &e))
            .and_then(|line| match line.trim() {
                "" => Ok(None),
                comment if comment.starts_with('#') => Ok(None),
                line => parse_event_line(line).map(Some),
            });
        match parsed {
            Ok(Some(event)) => events.push((number, event)),
            Ok(None) => {}
            Err(message) => errors.push(LineError {
                line: number,
                message,
            }),
        }
    }
    (events, errors)
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
    if event.user_id().is_empty() {
        return Err(format!("{key}: empty user_id"));
    }
    if event.event_id().is_empty() {
        return Err(format!("{key}: empty event_id"));
    }
    Ok(event)
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
