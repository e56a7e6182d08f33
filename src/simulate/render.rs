//! How the simulator's outputs are written: a readable table or JSON lines, both streamed.
//!
//! The table's columns are as wide as the widest cell among the header and the first
//! [`TABLE_WIDTH_ROWS`] rows, which are held back until then; a later, wider cell widens
//! its own row only. So a short run prints exactly the table a fully buffered one would.
//! JSON lines are written straight from the records, with the keys in alphabetical order
//! and times as RFC 3339 text.

use std::fmt::Write as _;
use std::io::Write;

use serde::Serialize;

use super::{Output, Report, Summary};
use crate::model::{
    Channel, Decision, DecisionOutcome, DecisionReason, InputCoordinates, InteractionKind,
    Properties, SendCommand, TimestampMs,
};
use crate::time::format_timestamp;

/// How many rows fix the table's column widths.
pub const TABLE_WIDTH_ROWS: usize = 1_000;

/// The widest a table cell gets, in characters: enough for a decision's detail with
/// UUID ids; longer values (a pasted payload as a user id) end in `…`. `--format jsonl`
/// shows every value whole.
pub const MAX_CELL_CHARS: usize = 160;

/// Writes outputs in one of the two formats.
pub enum OutputWriter<W: Write> {
    Jsonl(JsonlWriter<W>),
    Table(TableWriter<W>),
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
}

impl<W: Write> JsonlWriter<W> {
    pub fn new(out: W) -> Self {
        Self { out }
    }

    pub fn write(&mut self, output: &Output) -> std::io::Result<()> {
        match output {
            Output::Send(c) => serde_json::to_writer(
                &mut self.out,
                &SendLine {
                    send_command: SendJson::of(c),
                },
            ),
            Output::Decision(d) => serde_json::to_writer(
                &mut self.out,
                &DecisionLine {
                    decision: DecisionJson::of(d),
                },
            ),
        }
        .map_err(std::io::Error::from)?;
        self.out.write_all(b"\n")
    }

    pub fn finish(mut self) -> std::io::Result<W> {
        self.out.flush()?;
        Ok(self.out)
    }
}

/// A time as RFC 3339 text.
struct Time(TimestampMs);

impl Serialize for Time {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&format_timestamp(self.0))
    }
}

#[derive(Serialize)]
struct SendLine<'a> {
    send_command: SendJson<'a>,
}

/// [`SendCommand`]'s fields in alphabetical order.
#[derive(Serialize)]
struct SendJson<'a> {
    campaign_id: &'a str,
    campaign_version: i64,
    channel: Channel,
    command_id: &'a str,
    due_at: Time,
    emitted_at: Time,
    payload: &'a Properties,
    template_id: &'a str,
    trigger: TriggerJson<'a>,
    user_id: &'a str,
}

#[derive(Serialize)]
struct TriggerJson<'a> {
    campaign_id: &'a str,
    event_id: &'a str,
    kind: InteractionKind,
    occurred_at: Time,
}

impl<'a> SendJson<'a> {
    fn of(c: &'a SendCommand) -> Self {
        Self {
            campaign_id: &c.campaign_id,
            campaign_version: c.campaign_version,
            channel: c.channel,
            command_id: &c.command_id,
            due_at: Time(c.due_at),
            emitted_at: Time(c.emitted_at),
            payload: &c.payload,
            template_id: &c.template_id,
            trigger: TriggerJson {
                campaign_id: &c.trigger.campaign_id,
                event_id: &c.trigger.event_id,
                kind: c.trigger.kind,
                occurred_at: Time(c.trigger.occurred_at),
            },
            user_id: &c.user_id,
        }
    }
}

#[derive(Serialize)]
struct DecisionLine<'a> {
    decision: DecisionJson<'a>,
}

/// [`Decision`]'s fields in alphabetical order.
#[derive(Serialize)]
struct DecisionJson<'a> {
    cause_event_id: Option<&'a str>,
    command_id: Option<&'a str>,
    decided_at: Time,
    due_at: Option<Time>,
    follow_on_id: &'a str,
    follow_on_version: Option<i64>,
    outcome: DecisionOutcome,
    reason: DecisionReason,
    source: Option<SourceJson<'a>>,
    trigger_event_id: Option<&'a str>,
    user_id: &'a str,
}

#[derive(Serialize)]
struct SourceJson<'a> {
    offset: i64,
    partition: i32,
    topic: &'a str,
}

impl<'a> DecisionJson<'a> {
    fn of(d: &'a Decision) -> Self {
        Self {
            cause_event_id: d.cause_event_id.as_deref(),
            command_id: d.command_id.as_deref(),
            decided_at: Time(d.decided_at),
            due_at: d.due_at.map(Time),
            follow_on_id: &d.follow_on_id,
            follow_on_version: d.follow_on_version,
            outcome: d.outcome,
            reason: d.reason,
            source: d.source.as_ref().map(|s: &'a InputCoordinates| SourceJson {
                offset: s.offset,
                partition: s.partition,
                topic: &s.topic,
            }),
            trigger_event_id: d.trigger_event_id.as_deref(),
            user_id: &d.user_id,
        }
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
    line: String,
}

impl<W: Write> TableWriter<W> {
    pub fn new(out: W) -> Self {
        let header = ["time", "what", "user", "follow-on", "reason", "detail"].map(String::from);
        Self {
            out,
            held: vec![header],
            widths: None,
            line: String::new(),
        }
    }

    pub fn write(&mut self, output: &Output) -> std::io::Result<()> {
        let mut row = row_of(output);
        for cell in &mut row {
            shorten(cell);
        }
        match self.widths {
            Some(widths) => self.write_row(&row, &widths),
            None => {
                self.held.push(row);
                if self.held.len() > TABLE_WIDTH_ROWS {
                    self.release()?;
                }
                Ok(())
            }
        }
    }

    pub fn finish(mut self) -> std::io::Result<W> {
        if self.widths.is_none() {
            self.release()?;
        }
        self.out.flush()?;
        Ok(self.out)
    }

    /// Fixes the widths and writes the rows held back, with the rule under the header.
    fn release(&mut self) -> std::io::Result<()> {
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
            self.write_row(row, &widths)?;
            if n == 0 {
                let rule: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
                writeln!(self.out, "{}", rule.join("  "))?;
            }
        }
        Ok(())
    }

    fn write_row(&mut self, row: &Row, widths: &[usize; 6]) -> std::io::Result<()> {
        self.line.clear();
        for (i, (cell, w)) in row.iter().zip(widths).enumerate() {
            if i > 0 {
                self.line.push_str("  ");
            }
            self.line.push_str(cell);
            // Padded by hand: `format!` widths stop at u16::MAX.
            let pad = w.saturating_sub(cell.chars().count());
            self.line.extend(std::iter::repeat_n(' ', pad));
        }
        let trimmed = self.line.trim_end();
        self.out.write_all(trimmed.as_bytes())?;
        self.out.write_all(b"\n")
    }
}

fn row_of(output: &Output) -> Row {
    match output {
        Output::Send(c) => [
            format_timestamp(c.emitted_at),
            "SEND".into(),
            c.user_id.clone(),
            format!("{} v{}", c.campaign_id, c.campaign_version),
            format!("{} {}", symbol(&c.channel), c.template_id),
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
            decision_detail(d),
        ],
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
    if let Some((cut, _)) = cell.char_indices().nth(MAX_CELL_CHARS - 1) {
        if cell[cut..].chars().nth(1).is_some() {
            cell.truncate(cut);
            cell.push('…');
        }
    }
}

fn decision_detail(d: &Decision) -> String {
    let mut parts = Vec::new();
    if let Some(due) = d.due_at {
        parts.push(format!("due {}", format_timestamp(due)));
    }
    if let (Some(cause), false) = (&d.cause_event_id, d.cause_event_id == d.trigger_event_id) {
        parts.push(format!("by {cause}"));
    } else if let Some(trigger) = &d.trigger_event_id {
        parts.push(format!("trigger {trigger}"));
    }
    if let Some(id) = &d.command_id {
        parts.push(format!("command {id}"));
    }
    parts.join(", ")
}

/// The schema symbol of an enum value, e.g. `IN_APP`.
fn symbol<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_value(value)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

/// A one-paragraph summary for stderr.
pub fn summary(summary: &Summary) -> String {
    let mut s = format!(
        "{} events, {} send-commands, {} decisions, {} pending at {}",
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
    use crate::model::TriggerRef;
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
        let outputs = [
            Output::Send(send),
            Output::Decision(decision(DecisionReason::Exception, Some(9), true)),
            Output::Decision(no_cause),
        ];
        for o in &outputs {
            let report = Report {
                outputs: vec![o.clone()],
                ..Report::default()
            };
            assert_eq!(render_jsonl(&report), format!("{}\n", reference_jsonl(o)));
        }
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
