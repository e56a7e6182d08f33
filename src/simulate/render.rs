//! How the simulator's outputs are written: a readable table or JSON lines, both streamed.
//!
//! The table's columns are as wide as the widest cell among the header and the first
//! [`TABLE_WIDTH_ROWS`] rows, which are held back until then; a later, wider cell widens
//! its own row only. So a short run prints exactly the table a fully buffered one would.
//! JSON lines are written straight from the records, with the keys in alphabetical order
//! and times as RFC 3339 text.

use std::fmt::Write as _;
use std::io::Write;

use super::{Output, Report, Summary};
use crate::model::{Channel, Decision, SendCommand, TimestampMs};
use crate::time::{format_timestamp, TimestampText};

/// How many rows fix the table's column widths.
pub const TABLE_WIDTH_ROWS: usize = 1_000;

/// The widest a table cell gets, in characters: enough for a decision's detail with
/// UUID ids; longer values (a pasted payload as a user id) end in `…`. `--format jsonl`
/// shows every value whole.
pub const MAX_CELL_CHARS: usize = 160;

/// Writes outputs in one of the two formats.
pub enum OutputWriter<W: Write> {
    Jsonl(JsonlWriter<W>),
    Table(Box<TableWriter<W>>),
}

impl<W: Write> OutputWriter<W> {
    pub fn write(&mut self, output: &Output) -> std::io::Result<()> {
        match self {
            Self::Jsonl(w) => w.write(output),
            Self::Table(w) => w.write(output),
        }
    }

    /// Writes what is held back and flushes.
    pub fn finish(self) -> std::io::Result<W> {
        match self {
            Self::Jsonl(w) => w.finish(),
            Self::Table(w) => w.finish(),
        }
    }
}

// ---------------------------------------------------------------- JSON lines

/// One JSON object per line: `{"send_command": {...}}` or `{"decision": {...}}`.
pub struct JsonlWriter<W: Write> {
    out: W,
    /// Lines are made here and written in pieces of about [`WRITE_BYTES`]: serializing
    /// into memory is cheaper than through a writer's many small writes.
    buffer: Vec<u8>,
}

/// How much [`JsonlWriter`] gathers before it writes.
const WRITE_BYTES: usize = 64 << 10;

impl<W: Write> JsonlWriter<W> {
    pub fn new(out: W) -> Self {
        Self {
            out,
            buffer: Vec::with_capacity(WRITE_BYTES + 4096),
        }
    }

    pub fn write(&mut self, output: &Output) -> std::io::Result<()> {
        // A shadow follow-on's output is wrapped as on the shadow topic:
        // `{"shadow": {"send_command": {...}}}`.
        let shadow = output.is_shadow();
        if shadow {
            self.buffer.extend_from_slice(b"{\"shadow\":");
        }
        match output {
            Output::Send(c) => send_json(&mut self.buffer, c),
            Output::Decision(d) => decision_json(&mut self.buffer, d),
        }
        if shadow {
            self.buffer.push(b'}');
        }
        self.buffer.push(b'\n');
        if self.buffer.len() >= WRITE_BYTES {
            self.out.write_all(&self.buffer)?;
            self.buffer.clear();
        }
        Ok(())
    }

    pub fn finish(mut self) -> std::io::Result<W> {
        self.out.write_all(&self.buffer)?;
        self.out.flush()?;
        Ok(self.out)
    }
}

// The lines are written by hand, field by field in alphabetical order, because that is
// several times cheaper than a generic serializer; a test holds them equal to the records'
// own serialization.

/// A JSON string: as it is when nothing in it needs escaping (the common case), else
/// escaped by `serde_json`, which escapes exactly the quote, the backslash and control
/// characters.
fn put_str(out: &mut Vec<u8>, s: &str) {
    if s.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\') {
        out.push(b'"');
        out.extend_from_slice(s.as_bytes());
        out.push(b'"');
    } else {
        serde_json::to_writer(&mut *out, s).expect("writing to memory");
    }
}

fn put_opt_str(out: &mut Vec<u8>, s: Option<&str>) {
    match s {
        Some(s) => put_str(out, s),
        None => out.extend_from_slice(b"null"),
    }
}

fn put_int(out: &mut Vec<u8>, n: i64) {
    let _ = write!(out, "{n}");
}

/// A time as RFC 3339 text (quoted).
fn put_time(out: &mut Vec<u8>, ms: TimestampMs) {
    out.push(b'"');
    out.extend_from_slice(TimestampText::new(ms).as_str().as_bytes());
    out.push(b'"');
}

/// `"key":` (keys never need escaping).
fn put_key(out: &mut Vec<u8>, key: &str) {
    out.push(b'"');
    out.extend_from_slice(key.as_bytes());
    out.extend_from_slice(b"\":");
}

fn send_json(out: &mut Vec<u8>, c: &SendCommand) {
    out.extend_from_slice(b"{\"send_command\":{");
    put_key(out, "campaign_id");
    put_str(out, &c.campaign_id);
    out.extend_from_slice(b",\"campaign_version\":");
    put_int(out, c.campaign_version);
    out.extend_from_slice(b",\"channel\":\"");
    out.extend_from_slice(channel_symbol(c.channel).as_bytes());
    out.extend_from_slice(b"\",\"command_id\":");
    put_str(out, &c.command_id);
    out.extend_from_slice(b",\"due_at\":");
    put_time(out, c.due_at);
    out.extend_from_slice(b",\"emitted_at\":");
    put_time(out, c.emitted_at);
    out.extend_from_slice(b",\"payload\":{");
    for (i, (k, v)) in c.payload.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        put_str(out, k);
        out.push(b':');
        put_str(out, v);
    }
    out.extend_from_slice(b"},\"template_id\":");
    put_str(out, &c.template_id);
    out.extend_from_slice(b",\"trigger\":{\"campaign_id\":");
    put_str(out, &c.trigger.campaign_id);
    out.extend_from_slice(b",\"event_id\":");
    put_str(out, &c.trigger.event_id);
    out.extend_from_slice(b",\"kind\":\"");
    out.extend_from_slice(c.trigger.kind.symbol().as_bytes());
    out.extend_from_slice(b"\",\"occurred_at\":");
    put_time(out, c.trigger.occurred_at);
    out.extend_from_slice(b"},\"user_id\":");
    put_str(out, &c.user_id);
    out.extend_from_slice(b"}}");
}

fn decision_json(out: &mut Vec<u8>, d: &Decision) {
    out.extend_from_slice(b"{\"decision\":{\"cause_event_id\":");
    put_opt_str(out, d.cause_event_id.as_deref());
    out.extend_from_slice(b",\"command_id\":");
    put_opt_str(out, d.command_id.as_deref());
    out.extend_from_slice(b",\"decided_at\":");
    put_time(out, d.decided_at);
    out.extend_from_slice(b",\"due_at\":");
    match d.due_at {
        Some(t) => put_time(out, t),
        None => out.extend_from_slice(b"null"),
    }
    out.extend_from_slice(b",\"follow_on_id\":");
    put_str(out, &d.follow_on_id);
    out.extend_from_slice(b",\"follow_on_version\":");
    match d.follow_on_version {
        Some(v) => put_int(out, v),
        None => out.extend_from_slice(b"null"),
    }
    out.extend_from_slice(b",\"outcome\":\"");
    out.extend_from_slice(d.outcome.as_str().as_bytes());
    out.extend_from_slice(b"\",\"reason\":\"");
    out.extend_from_slice(d.reason.as_str().as_bytes());
    out.extend_from_slice(b"\",\"source\":");
    match &d.source {
        Some(s) => {
            out.extend_from_slice(b"{\"offset\":");
            put_int(out, s.offset);
            out.extend_from_slice(b",\"partition\":");
            put_int(out, i64::from(s.partition));
            out.extend_from_slice(b",\"topic\":");
            put_str(out, &s.topic);
            out.push(b'}');
        }
        None => out.extend_from_slice(b"null"),
    }
    out.extend_from_slice(b",\"trigger_event_id\":");
    put_opt_str(out, d.trigger_event_id.as_deref());
    out.extend_from_slice(b",\"user_id\":");
    put_str(out, &d.user_id);
    out.extend_from_slice(b"}}");
}

/// The schema symbol of a channel.
fn channel_symbol(channel: Channel) -> &'static str {
    match channel {
        Channel::Email => "EMAIL",
        Channel::Push => "PUSH",
        Channel::Sms => "SMS",
        Channel::InApp => "IN_APP",
        Channel::ContentCard => "CONTENT_CARD",
        Channel::Webhook => "WEBHOOK",
    }
}

/// Every output of a report as JSON lines.
pub fn render_jsonl(report: &Report) -> String {
    let mut w = JsonlWriter::new(Vec::new());
    for o in &report.outputs {
        w.write(o).expect("writing to memory");
    }
    String::from_utf8(w.finish().expect("writing to memory")).expect("JSON is UTF-8")
}

// ---------------------------------------------------------------- the table

type Row = [String; 6];

/// A readable table of sends and decisions, in the order they happened.
pub struct TableWriter<W: Write> {
    out: W,
    /// Rows held back until the widths are known (the header first).
    held: Vec<Row>,
    widths: Option<[usize; 6]>,
    /// The row being written, its cells reused from row to row.
    row: Row,
    /// Lines are gathered here and written in pieces of about [`WRITE_BYTES`].
    buffer: Vec<u8>,
}

impl<W: Write> TableWriter<W> {
    pub fn new(out: W) -> Self {
        let header = ["time", "what", "user", "follow-on", "reason", "detail"].map(String::from);
        Self {
            out,
            held: vec![header],
            widths: None,
            row: Default::default(),
            buffer: Vec::with_capacity(WRITE_BYTES + 4096),
        }
    }

    pub fn write(&mut self, output: &Output) -> std::io::Result<()> {
        fill_row(output, &mut self.row);
        for cell in &mut self.row {
            shorten(cell);
        }
        match self.widths {
            Some(widths) => {
                put_row(&mut self.buffer, &self.row, &widths);
                if self.buffer.len() >= WRITE_BYTES {
                    self.out.write_all(&self.buffer)?;
                    self.buffer.clear();
                }
            }
            None => {
                self.held.push(self.row.clone());
                if self.held.len() > TABLE_WIDTH_ROWS {
                    self.release();
                }
            }
        }
        Ok(())
    }

    pub fn finish(mut self) -> std::io::Result<W> {
        if self.widths.is_none() {
            self.release();
        }
        self.out.write_all(&self.buffer)?;
        self.out.flush()?;
        Ok(self.out)
    }

    /// Fixes the widths and puts the rows held back, with the rule under the header.
    fn release(&mut self) {
        let mut widths = [0; 6];
        for (i, w) in widths.iter_mut().enumerate() {
            *w = self
                .held
                .iter()
                .map(|r| r[i].chars().count())
                .max()
                .unwrap_or(0);
        }
        self.widths = Some(widths);
        let held = std::mem::take(&mut self.held);
        for (n, row) in held.iter().enumerate() {
            put_row(&mut self.buffer, row, &widths);
            if n == 0 {
                let rule: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
                self.buffer.extend_from_slice(rule.join("  ").as_bytes());
                self.buffer.push(b'\n');
            }
        }
    }
}

/// One line of the table: the cells padded to their widths (by hand: `format!` widths stop
/// at `u16::MAX`), two spaces apart, without trailing spaces.
fn put_row(out: &mut Vec<u8>, row: &Row, widths: &[usize; 6]) {
    let start = out.len();
    let last = row.len() - 1;
    for (i, (cell, w)) in row.iter().zip(widths).enumerate() {
        if i > 0 {
            out.extend_from_slice(b"  ");
        }
        out.extend_from_slice(cell.as_bytes());
        // The last cell's padding would only be trimmed again.
        if i < last {
            let chars = if cell.is_ascii() {
                cell.len()
            } else {
                cell.chars().count()
            };
            out.resize(out.len() + w.saturating_sub(chars), b' ');
        }
    }
    // Trailing white space as `str::trim_end` sees it (a cell may end in any); a last
    // cell that ends in something else leaves none.
    if row[last]
        .chars()
        .next_back()
        .is_none_or(char::is_whitespace)
    {
        let kept = std::str::from_utf8(&out[start..])
            .expect("cells are text")
            .trim_end()
            .len();
        out.truncate(start + kept);
    }
    out.push(b'\n');
}

/// The cells of an output's row, written into the cells of `row`.
fn fill_row(output: &Output, row: &mut Row) {
    for cell in row.iter_mut() {
        cell.clear();
    }
    let [time, what, user, follow_on, reason, detail] = row;
    if output.is_shadow() {
        what.push_str("SHADOW ");
    }
    match output {
        Output::Send(c) => {
            time.push_str(TimestampText::new(c.emitted_at).as_str());
            what.push_str("SEND");
            user.push_str(&c.user_id);
            follow_on.push_str(&c.campaign_id);
            follow_on.push_str(" v");
            push_int(follow_on, c.campaign_version);
            reason.push_str(channel_symbol(c.channel));
            reason.push(' ');
            reason.push_str(&c.template_id);
            detail.push_str("command ");
            detail.push_str(&c.command_id);
        }
        Output::Decision(d) => {
            time.push_str(TimestampText::new(d.decided_at).as_str());
            what.push_str(d.outcome.as_str());
            user.push_str(&d.user_id);
            follow_on.push_str(&d.follow_on_id);
            if let Some(v) = d.follow_on_version {
                follow_on.push_str(" v");
                push_int(follow_on, v);
            }
            reason.push_str(d.reason.as_str());
            decision_detail(d, detail);
        }
    }
}

/// A report's outputs as a table.
pub fn render_table(report: &Report) -> String {
    let mut w = TableWriter::new(Vec::new());
    for o in &report.outputs {
        w.write(o).expect("writing to memory");
    }
    String::from_utf8(w.finish().expect("writing to memory")).expect("the table is UTF-8")
}

/// Cuts a cell to [`MAX_CELL_CHARS`], the last character an ellipsis.
fn shorten(cell: &mut String) {
    // A character is at least a byte: a cell of no more bytes needs no look.
    if cell.len() <= MAX_CELL_CHARS {
        return;
    }
    if let Some((cut, _)) = cell.char_indices().nth(MAX_CELL_CHARS - 1) {
        if cell[cut..].chars().nth(1).is_some() {
            cell.truncate(cut);
            cell.push('…');
        }
    }
}

/// "due …, by …|trigger …, command …": what the decision concerns.
fn decision_detail(d: &Decision, out: &mut String) {
    let mut part = |label: &str, value: &str| {
        if !out.is_empty() {
            out.push_str(", ");
        }
        out.push_str(label);
        out.push_str(value);
    };
    if let Some(due) = d.due_at {
        part("due ", TimestampText::new(due).as_str());
    }
    if let (Some(cause), false) = (&d.cause_event_id, d.cause_event_id == d.trigger_event_id) {
        part("by ", cause);
    } else if let Some(trigger) = &d.trigger_event_id {
        part("trigger ", trigger);
    }
    if let Some(id) = &d.command_id {
        part("command ", id);
    }
}

/// An integer in decimal, without the formatting machinery.
fn push_int(out: &mut String, n: i64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    let mut v = n.unsigned_abs();
    loop {
        at -= 1;
        digits[at] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    if n < 0 {
        out.push('-');
    }
    out.push_str(std::str::from_utf8(&digits[at..]).expect("ASCII digits"));
}

/// A one-paragraph summary for stderr.
pub fn summary(summary: &Summary) -> String {
    let shadow = if summary.shadow_sends > 0 {
        format!(
            " (and {} shadow send-commands, not sent)",
            summary.shadow_sends
        )
    } else {
        String::new()
    };
    let mut s = format!(
        "{} events, {} send-commands{shadow}, {} decisions, {} pending at {}",
        summary.events,
        summary.sends,
        summary.decisions,
        summary.pending_at_end,
        summary
            .until
            .map(format_timestamp)
            .unwrap_or_else(|| "-".into()),
    );
    for (n, what) in [
        (
            summary.unknown_interaction_kinds,
            "unknown interaction kinds",
        ),
        (summary.unknown_user_event_types, "unknown user event types"),
        (summary.unknown_time_zones, "unknown time zones"),
    ] {
        if n > 0 {
            let _ = write!(s, ", {n} {what}");
        }
    }
    if summary.bad_lines > 0 {
        let _ = write!(s, ", {} bad lines", summary.bad_lines);
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{
        DecisionOutcome, DecisionReason, InputCoordinates, InteractionKind, Properties, TriggerRef,
    };
    use serde_json::Value;

    /// The JSON lines as the records' own serialization gives them, with times as text:
    /// what the direct writer must equal.
    fn reference_jsonl(output: &Output) -> String {
        let (key, mut value) = match output {
            Output::Send(c) => ("send_command", serde_json::to_value(c).unwrap()),
            Output::Decision(d) => ("decision", serde_json::to_value(d).unwrap()),
        };
        let text = |v: &mut Value, field: &str| {
            if let Some(x) = v.get_mut(field) {
                if let Some(ms) = x.as_i64() {
                    *x = Value::String(format_timestamp(ms));
                }
            }
        };
        for field in ["due_at", "emitted_at", "decided_at"] {
            text(&mut value, field);
        }
        if let Some(trigger) = value.get_mut("trigger") {
            text(trigger, "occurred_at");
        }
        serde_json::json!({ key: value }).to_string()
    }

    fn decision(reason: DecisionReason, due: Option<i64>, source: bool) -> Decision {
        Decision {
            user_id: "u\"1".into(),
            follow_on_id: "f".into(),
            follow_on_version: Some(3),
            outcome: DecisionOutcome::Cancelled,
            reason,
            command_id: None,
            trigger_event_id: Some("e1".into()),
            cause_event_id: Some("e2".into()),
            due_at: due,
            decided_at: 1_793_613_600_123,
            source: source.then(|| InputCoordinates {
                topic: "events.jsonl".into(),
                partition: 0,
                offset: 7,
            }),
        }
    }

    #[test]
    fn json_lines_are_the_records_serialization_with_sorted_keys_and_text_times() {
        let send = SendCommand {
            command_id: "id".into(),
            user_id: "café".into(),
            campaign_id: "f".into(),
            campaign_version: 2,
            channel: Channel::InApp,
            template_id: "t".into(),
            payload: [
                ("b".to_string(), "2".to_string()),
                ("a".into(), "\n".into()),
            ]
            .into_iter()
            .collect(),
            trigger: TriggerRef {
                campaign_id: "c".into(),
                kind: InteractionKind::PushReceived,
                event_id: "e1".into(),
                occurred_at: 5,
            },
            due_at: 86_400_000,
            emitted_at: -62_198_755_200_001,
        };
        let mut no_cause = decision(DecisionReason::Due, None, false);
        no_cause.cause_event_id = None;
        no_cause.follow_on_version = None;
        no_cause.command_id = Some("cmd".into());
        let mut escaped = decision(DecisionReason::Exception, Some(9), true);
        escaped.source.as_mut().unwrap().topic = "C:\\events\t\u{1}.jsonl".into();
        escaped.trigger_event_id = Some("é\u{7f}/</".into());
        let mut outputs = vec![
            Output::Decision(decision(DecisionReason::Exception, Some(9), true)),
            Output::Decision(no_cause),
            Output::Decision(escaped),
        ];
        for (i, channel) in [
            Channel::Email,
            Channel::Push,
            Channel::Sms,
            Channel::InApp,
            Channel::ContentCard,
            Channel::Webhook,
        ]
        .into_iter()
        .enumerate()
        {
            let mut c = send.clone();
            c.channel = channel;
            c.trigger.kind = InteractionKind::KNOWN[i * 3];
            if i == 1 {
                c.payload.clear();
            }
            outputs.push(Output::Send(c));
        }
        for o in &outputs {
            let report = Report {
                outputs: vec![o.clone()],
                ..Report::default()
            };
            assert_eq!(render_jsonl(&report), format!("{}\n", reference_jsonl(o)));
        }
    }

    /// The table as it was made before it was streamed: widths over every row.
    fn reference_table(report: &Report) -> String {
        let mut rows: Vec<Row> =
            vec![["time", "what", "user", "follow-on", "reason", "detail"].map(String::from)];
        // The cells as they were made: `format!` and a detail joined from its parts.
        let detail = |d: &Decision| {
            let mut parts = Vec::new();
            if let Some(due) = d.due_at {
                parts.push(format!("due {}", format_timestamp(due)));
            }
            if let (Some(cause), false) =
                (&d.cause_event_id, d.cause_event_id == d.trigger_event_id)
            {
                parts.push(format!("by {cause}"));
            } else if let Some(trigger) = &d.trigger_event_id {
                parts.push(format!("trigger {trigger}"));
            }
            if let Some(id) = &d.command_id {
                parts.push(format!("command {id}"));
            }
            parts.join(", ")
        };
        for o in &report.outputs {
            let mut row: Row = match o {
                Output::Send(c) => [
                    format_timestamp(c.emitted_at),
                    "SEND".into(),
                    c.user_id.clone(),
                    format!("{} v{}", c.campaign_id, c.campaign_version),
                    format!("{} {}", channel_symbol(c.channel), c.template_id),
                    format!("command {}", c.command_id),
                ],
                Output::Decision(d) => [
                    format_timestamp(d.decided_at),
                    d.outcome.as_str().into(),
                    d.user_id.clone(),
                    match d.follow_on_version {
                        Some(v) => format!("{} v{v}", d.follow_on_id),
                        None => d.follow_on_id.clone(),
                    },
                    d.reason.as_str().into(),
                    detail(d),
                ],
            };
            for cell in &mut row {
                if let Some((cut, _)) = cell.char_indices().nth(MAX_CELL_CHARS - 1) {
                    if cell[cut..].chars().nth(1).is_some() {
                        cell.truncate(cut);
                        cell.push('…');
                    }
                }
            }
            rows.push(row);
        }
        let widths: Vec<usize> = (0..6)
            .map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0))
            .collect();
        let mut s = String::new();
        for (n, r) in rows.iter().enumerate() {
            let line: Vec<String> = r
                .iter()
                .zip(&widths)
                .map(|(cell, w)| {
                    let pad = w.saturating_sub(cell.chars().count());
                    format!("{cell}{}", " ".repeat(pad))
                })
                .collect();
            let _ = writeln!(s, "{}", line.join("  ").trim_end());
            if n == 0 {
                let rule: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
                let _ = writeln!(s, "{}", rule.join("  "));
            }
        }
        s
    }

    #[test]
    fn integers_are_written_as_display_writes_them() {
        for n in [0, 7, 10, -1, -10, 1_234_567, i64::MIN, i64::MAX] {
            let mut s = String::from("v");
            push_int(&mut s, n);
            assert_eq!(s, format!("v{n}"));
        }
    }

    #[test]
    fn a_table_of_up_to_its_width_rows_is_the_fully_buffered_table() {
        let mut report = Report::default();
        let users = [
            "a".to_string(),
            "ü".repeat(170),
            "x".repeat(200),
            "ends in a wide space\u{3000}".into(),
            "tab\tand\nnewline".into(),
        ];
        for (i, user) in users.iter().enumerate() {
            let mut d = decision(DecisionReason::Exception, (i % 2 == 0).then_some(9), true);
            d.user_id = user.clone();
            d.cause_event_id = Some(format!("cause{}\u{2003}", "e".repeat(i * 50)));
            report.outputs.push(Output::Decision(d));
        }
        let mut fired = decision(DecisionReason::Due, Some(9), false);
        fired.cause_event_id = None;
        fired.command_id = Some("cmd".into());
        fired.follow_on_version = None;
        report.outputs.push(Output::Decision(fired));
        let mut odd = decision(DecisionReason::Due, Some(9), false);
        odd.follow_on_version = Some(-3);
        report.outputs.push(Output::Decision(odd));
        // An empty last cell: the padding before it is trimmed.
        let mut bare = decision(DecisionReason::Trigger, None, false);
        bare.cause_event_id = None;
        bare.trigger_event_id = None;
        report.outputs.push(Output::Decision(bare));
        let mut same = decision(DecisionReason::Trigger, None, false);
        same.cause_event_id = same.trigger_event_id.clone();
        report.outputs.push(Output::Decision(same));
        report.outputs.push(Output::Send(SendCommand {
            command_id: "id".into(),
            user_id: "u".into(),
            campaign_id: "f".into(),
            campaign_version: 2,
            channel: Channel::ContentCard,
            template_id: "t".into(),
            payload: Properties::new(),
            trigger: TriggerRef {
                campaign_id: "c".into(),
                kind: InteractionKind::PushReceived,
                event_id: "e1".into(),
                occurred_at: 5,
            },
            due_at: 7,
            emitted_at: 8,
        }));
        assert_eq!(render_table(&report), reference_table(&report));
    }

    #[test]
    fn a_short_table_is_aligned_on_all_its_rows_and_a_long_one_on_its_first_rows() {
        let mut short = Report::default();
        for user in ["a", "much-longer-user"] {
            let mut d = decision(DecisionReason::Exception, None, false);
            d.user_id = user.into();
            short.outputs.push(Output::Decision(d));
        }
        let text = render_table(&short);
        let starts: Vec<usize> = text
            .lines()
            .filter(|l| !l.starts_with('-'))
            .map(|l| l.find("f v3").or_else(|| l.find("follow-on")).unwrap())
            .collect();
        assert!(starts.windows(2).all(|w| w[0] == w[1]), "{text}");

        let mut long = Report::default();
        for i in 0..TABLE_WIDTH_ROWS + 1 {
            let mut d = decision(DecisionReason::Exception, None, false);
            d.user_id = if i == TABLE_WIDTH_ROWS {
                "wider-than-any-before".into()
            } else {
                "u".into()
            };
            long.outputs.push(Output::Decision(d));
        }
        let text = render_table(&long);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), TABLE_WIDTH_ROWS + 3);
        assert!(lines[TABLE_WIDTH_ROWS + 2].contains("wider-than-any-before  f v3"));
        assert!(lines[2].contains("  u     f v3"), "{}", lines[2]);
    }
}
