//! The offline simulator: runs the engine over a JSONL file of events, as a caught-up
//! connector would, and reports every send-command and decision.
//!
//! ```text
//!  campaigns.yaml ──► catalog ─┐
//!  events.jsonl ──parse──► stable sort by occurred_at ──► Engine ──► sends + decisions
//!                 (bad lines reported with their number; the rest still runs)
//! ```
//!
//! Each line is `{"interaction": {...}}` or `{"user_event": {...}}` with the Avro records'
//! field names (see [`crate::events_file`]); timestamps are RFC 3339 strings or epoch
//! milliseconds. Events are processed in event-time order, ties in file order. Time moves
//! like a connector that is caught up: a timer fires exactly at its due time (`now` = due
//! time), and at the end time advances to `until` (default: the last event plus the longest
//! delay in the catalog).
//!
//! An event dated outside the range the rules compute with ([`time::check_event_range`])
//! is a bad line, as the connector would dead-letter it. There is no wall clock here, so
//! the connector's other time check, "not too far ahead of now", does not apply.

use std::fmt::Write as _;

use serde_json::Value;

use crate::engine::{Effect, Engine};
use crate::events_file::parse_events;
pub use crate::events_file::LineError;
use crate::model::{Campaign, Decision, InputCoordinates, SendCommand, TimestampMs};
use crate::time::{self, format_timestamp};
use crate::validate::Limits;

/// One output of the simulation, in the order the engine produced them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    Send(SendCommand),
    Decision(Decision),
}

/// Everything a simulation produced.
#[derive(Debug, Clone, Default)]
pub struct Report {
    pub outputs: Vec<Output>,
    pub line_errors: Vec<LineError>,
    pub events: usize,
    pub until: Option<TimestampMs>,
    pub unknown_interaction_kinds: u64,
    pub unknown_user_event_types: u64,
    pub unknown_time_zones: u64,
    pub pending_at_end: usize,
}

impl Report {
    pub fn sends(&self) -> impl Iterator<Item = &SendCommand> {
        self.outputs.iter().filter_map(|o| match o {
            Output::Send(s) => Some(s),
            Output::Decision(_) => None,
        })
    }
    pub fn decisions(&self) -> impl Iterator<Item = &Decision> {
        self.outputs.iter().filter_map(|o| match o {
            Output::Decision(d) => Some(d),
            Output::Send(_) => None,
        })
    }
}

/// Runs the campaigns over the events file (its bytes). `source_name` names the events
/// file in decisions' input coordinates (partition 0, offset = line number).
pub fn simulate(
    campaigns: &[Campaign],
    events_file: &[u8],
    source_name: &str,
    until: Option<TimestampMs>,
    limits: Limits,
) -> Result<Report, String> {
    let mut engine = Engine::new(limits);
    let mut effects = Vec::new();
    for c in campaigns {
        engine
            .apply_campaign(c, 0, &mut effects)
            .map_err(|e| e.to_string())?;
    }
    let (parsed, mut line_errors) = parse_events(events_file);
    let mut events = Vec::with_capacity(parsed.len());
    for (line, event) in parsed {
        match time::check_event_range(event.occurred_at()) {
            Ok(()) => events.push((line, event)),
            Err(e) => line_errors.push(LineError {
                line,
                message: e.to_string(),
            }),
        }
    }
    line_errors.sort_by_key(|e| e.line);
    // Event-time order; the sort is stable, so ties keep file order.
    events.sort_by_key(|(_, e)| e.occurred_at());
    let mut report = Report {
        line_errors,
        events: events.len(),
        ..Report::default()
    };
    let mut out = Vec::new();
    for (line, event) in &events {
        let t = event.occurred_at();
        fire_until(&mut engine, t, &mut out);
        let source = InputCoordinates {
            topic: source_name.to_string(),
            partition: 0,
            offset: *line as i64,
        };
        // Checked above, so never refused; should it be, it is a bad line like any other.
        if let Err(e) = engine.process(event, Some(&source), t, &mut out) {
            report.line_errors.push(LineError {
                line: *line,
                message: e.to_string(),
            });
        }
    }
    let last = events.last().map(|(_, e)| e.occurred_at());
    let end = until.or_else(|| last.map(|t| t.saturating_add(engine.catalog().longest_delay_ms())));
    if let Some(end) = end {
        fire_until(&mut engine, end, &mut out);
        engine.advance_to(end, end, &mut out);
    }
    report.until = end;
    report.outputs = out
        .into_iter()
        .filter_map(|e| match e {
            Effect::Send(s) => Some(Output::Send(s)),
            Effect::Decision(d) => Some(Output::Decision(d)),
            Effect::PutState(_) | Effect::UserChanged { .. } => None,
        })
        .collect();
    let c = engine.counters();
    report.unknown_interaction_kinds = c.unknown_interaction_kinds;
    report.unknown_user_event_types = c.unknown_user_event_types;
    report.unknown_time_zones = c.unknown_time_zones;
    report.pending_at_end = engine.pending_count();
    Ok(report)
}

/// Fires timers one due time at a time with the wall clock at exactly that time, as a
/// caught-up connector does.
fn fire_until(engine: &mut Engine, until: TimestampMs, out: &mut Vec<Effect>) {
    while let Some(due) = engine.next_due().filter(|&d| d <= until) {
        engine.advance_to(due, due, out);
    }
}

/// One JSON object per line: `{"send_command": {...}}` or `{"decision": {...}}`, with
/// timestamps as RFC 3339.
pub fn render_jsonl(report: &Report) -> String {
    let mut s = String::new();
    for o in &report.outputs {
        let (key, mut value) = match o {
            Output::Send(c) => (
                "send_command",
                serde_json::to_value(c).expect("serializable"),
            ),
            Output::Decision(d) => ("decision", serde_json::to_value(d).expect("serializable")),
        };
        for field in ["due_at", "emitted_at", "decided_at"] {
            timestamp_to_text(&mut value, field);
        }
        if let Some(trigger) = value.get_mut("trigger") {
            timestamp_to_text(trigger, "occurred_at");
        }
        let line = serde_json::json!({ key: value });
        let _ = writeln!(s, "{line}");
    }
    s
}

fn timestamp_to_text(value: &mut Value, field: &str) {
    if let Some(v) = value.get_mut(field) {
        if let Some(ms) = v.as_i64() {
            *v = Value::String(format_timestamp(ms));
        }
    }
}

/// A readable table of sends and decisions, in the order they happened.
pub fn render_table(report: &Report) -> String {
    let mut rows: Vec<[String; 6]> = vec![[
        "time".into(),
        "what".into(),
        "user".into(),
        "follow-on".into(),
        "reason".into(),
        "detail".into(),
    ]];
    for o in &report.outputs {
        rows.push(match o {
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
        });
    }
    for cell in rows.iter_mut().flatten() {
        shorten(cell);
    }
    let widths: Vec<usize> = (0..6)
        .map(|i| rows.iter().map(|r| r[i].chars().count()).max().unwrap_or(0))
        .collect();
    let mut s = String::new();
    for (n, r) in rows.iter().enumerate() {
        // Padded by hand: `format!` widths stop at u16::MAX.
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

/// The widest a table cell gets, in characters: enough for a decision's detail with
/// UUID ids; longer values (a pasted payload as a user id) end in `…`. `--format jsonl`
/// shows every value whole.
pub const MAX_CELL_CHARS: usize = 160;

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
pub fn summary(report: &Report) -> String {
    let sends = report.sends().count();
    let decisions = report.decisions().count();
    let mut s = format!(
        "{} events, {} send-commands, {} decisions, {} pending at {}",
        report.events,
        sends,
        decisions,
        report.pending_at_end,
        report
            .until
            .map(format_timestamp)
            .unwrap_or_else(|| "-".into()),
    );
    for (n, what) in [
        (
            report.unknown_interaction_kinds,
            "unknown interaction kinds",
        ),
        (report.unknown_user_event_types, "unknown user event types"),
        (report.unknown_time_zones, "unknown time zones"),
    ] {
        if n > 0 {
            let _ = write!(s, ", {n} {what}");
        }
    }
    if !report.line_errors.is_empty() {
        let _ = write!(s, ", {} bad lines", report.line_errors.len());
    }
    s
}
