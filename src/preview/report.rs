//! How a preview prints: a readable report, or JSON lines for tools.
//!
//! The table report has four parts: one row per follow-on (what it would have sent), the
//! decisions by follow-on, outcome and reason (why it would not have), the busiest hours
//! of each follow-on's sends, and every decision about the sampled users, in the
//! simulator's table format.
//!
//! JSON lines: `{"preview": {...}}` (the window and what was read), one
//! `{"follow_on": {...}}` per follow-on, one `{"count": {...}}` per follow-on, outcome and
//! reason, one `{"busiest_hour": {...}}` per hour listed, then the sampled users'
//! outputs as the simulator writes them (`{"decision": {...}}`, `{"send_command": {...}}`).

use std::fmt::Write as _;

use serde_json::json;

use super::source::{ReadStats, Window};
use super::{PreviewCatalog, Tally};
use crate::simulate::{JsonlWriter, TableWriter};
use crate::time::format_timestamp;

/// How many of each follow-on's busiest hours are shown.
pub const BUSIEST_HOURS: usize = 5;

/// Everything a preview report shows.
pub struct PreviewReport<'a> {
    /// The campaigns file, as named on the command line.
    pub campaigns_file: &'a str,
    pub catalog: &'a PreviewCatalog,
    pub window: Window,
    pub stats: &'a ReadStats,
    pub tally: &'a Tally,
}

/// A small table: columns as wide as their widest cell, two spaces apart.
fn table(rows: &[Vec<String>]) -> String {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|i| {
            rows.iter()
                .filter_map(|r| r.get(i))
                .map(|c| c.chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut s = String::new();
    for (n, row) in rows.iter().enumerate() {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            if i > 0 {
                line.push_str("  ");
            }
            line.push_str(cell);
            line.extend(std::iter::repeat_n(
                ' ',
                widths[i].saturating_sub(cell.chars().count()),
            ));
        }
        let _ = writeln!(s, "{}", line.trim_end());
        if n == 0 {
            let rule: Vec<String> = widths.iter().map(|w| "-".repeat(*w)).collect();
            let _ = writeln!(s, "{}", rule.join("  "));
        }
    }
    s
}

fn cells<const N: usize>(items: [&str; N]) -> Vec<String> {
    items.iter().map(|s| s.to_string()).collect()
}

/// The readable report.
pub fn render_table(r: &PreviewReport<'_>) -> String {
    let mut s = String::new();
    let records: u64 = r.stats.records.iter().sum();
    let bad: u64 = r.stats.bad.values().sum();
    let seconds = r.stats.elapsed.as_secs_f64();
    let _ = writeln!(
        s,
        "Preview of {} on {} and {} ({} tasks)",
        r.campaigns_file, r.stats.topics[0], r.stats.topics[1], r.stats.partitions
    );
    let _ = writeln!(
        s,
        "  records from {} to {} (record times); timers advanced to {}",
        format_timestamp(r.window.since),
        r.window
            .until
            .map(format_timestamp)
            .unwrap_or_else(|| "the end offsets at the start".into()),
        r.tally
            .until
            .map(format_timestamp)
            .unwrap_or_else(|| "-".into()),
    );
    let _ = writeln!(
        s,
        "  {records} records read in {seconds:.1} s ({:.0}/s): {} events, {bad} the connector would dead-letter{}",
        records as f64 / seconds.max(1e-3),
        r.tally.engine.events,
        if bad == 0 {
            String::new()
        } else {
            let classes: Vec<String> =
                r.stats.bad.iter().map(|(c, n)| format!("{n} {c}")).collect();
            format!(" ({})", classes.join(", "))
        }
    );
    let e = &r.tally.engine;
    let mut extra = Vec::new();
    for (n, what) in [
        (e.late_records, "late records (processed at their own time)"),
        (e.unknown_interaction_kinds, "unknown interaction kinds"),
        (e.unknown_user_event_types, "unknown user event types"),
        (e.unknown_time_zones, "unknown time zones"),
    ] {
        if n > 0 {
            extra.push(format!("{n} {what}"));
        }
    }
    if !extra.is_empty() {
        let _ = writeln!(s, "  {}", extra.join(", "));
    }
    for note in &r.catalog.notes {
        let _ = writeln!(s, "  note: {note}");
    }

    let _ = writeln!(s, "\nWould send");
    let mut rows = vec![cells([
        "follow-on",
        "send-commands",
        "scheduled",
        "cancelled",
        "ignored",
        "dropped",
        "pending at end",
    ])];
    use crate::model::DecisionOutcome as O;
    for (id, f) in &r.tally.follow_ons {
        rows.push(vec![
            id.clone(),
            f.sends.to_string(),
            f.outcome_total(O::Scheduled).to_string(),
            f.outcome_total(O::Cancelled).to_string(),
            f.outcome_total(O::Ignored).to_string(),
            f.outcome_total(O::Dropped).to_string(),
            f.pending().to_string(),
        ]);
    }
    s.push_str(&table(&rows));

    let _ = writeln!(s, "\nDecisions by reason");
    let mut rows = vec![cells(["follow-on", "outcome", "reason", "count"])];
    for (id, f) in &r.tally.follow_ons {
        for (outcome, reason, n) in f.decisions() {
            rows.push(vec![
                id.clone(),
                outcome.as_str().into(),
                reason.as_str().into(),
                n.to_string(),
            ]);
        }
    }
    s.push_str(&table(&rows));

    let _ = writeln!(
        s,
        "\nBusiest hours (send-commands by the UTC hour of their due time)"
    );
    let mut rows = vec![cells(["follow-on", "hour", "send-commands"])];
    for (id, f) in &r.tally.follow_ons {
        for (hour, n) in f.busiest_hours(BUSIEST_HOURS) {
            rows.push(vec![id.clone(), format_timestamp(hour), n.to_string()]);
        }
    }
    s.push_str(&table(&rows));

    let sample: Vec<_> = r.tally.sample().collect();
    let _ = writeln!(
        s,
        "\nSample of {} users (every decision about them, in order)",
        sample.len()
    );
    let mut w = TableWriter::new(Vec::new());
    for user in &sample {
        for o in &user.outputs {
            w.write(o).expect("writing to memory");
        }
    }
    let bytes = w.finish().expect("writing to memory");
    s.push_str(&String::from_utf8_lossy(&bytes));
    for user in sample.iter().filter(|u| u.omitted > 0) {
        let _ = writeln!(
            s,
            "({} more decisions about {} not shown)",
            user.omitted, user.user_id
        );
    }
    s
}

/// The report as JSON lines.
pub fn render_jsonl(r: &PreviewReport<'_>) -> String {
    let mut s = String::new();
    let e = &r.tally.engine;
    let head = json!({"preview": {
        "campaigns_file": r.campaigns_file,
        "topics": r.stats.topics,
        "tasks": r.stats.partitions,
        "since": format_timestamp(r.window.since),
        "until": r.window.until.map(format_timestamp),
        "timers_advanced_to": r.tally.until.map(format_timestamp),
        "records": r.stats.records.iter().sum::<u64>(),
        "events": e.events,
        "dead_letter_records": r.stats.bad,
        "late_records": e.late_records,
        "unknown_interaction_kinds": e.unknown_interaction_kinds,
        "unknown_user_event_types": e.unknown_user_event_types,
        "unknown_time_zones": e.unknown_time_zones,
        "evaluated": r.catalog.evaluated,
        "notes": r.catalog.notes,
        "seconds": r.stats.elapsed.as_secs_f64(),
    }});
    let _ = writeln!(s, "{head}");
    for (id, f) in &r.tally.follow_ons {
        let _ = writeln!(
            s,
            "{}",
            json!({"follow_on": {"follow_on_id": id, "send_commands": f.sends, "pending_at_end": f.pending()}})
        );
    }
    for (id, f) in &r.tally.follow_ons {
        for (outcome, reason, n) in f.decisions() {
            let _ = writeln!(
                s,
                "{}",
                json!({"count": {"follow_on_id": id, "outcome": outcome, "reason": reason, "count": n}})
            );
        }
    }
    for (id, f) in &r.tally.follow_ons {
        for (hour, n) in f.busiest_hours(BUSIEST_HOURS) {
            let _ = writeln!(
                s,
                "{}",
                json!({"busiest_hour": {"follow_on_id": id, "hour": format_timestamp(hour), "send_commands": n}})
            );
        }
    }
    let mut w = JsonlWriter::new(Vec::new());
    for user in r.tally.sample() {
        for o in &user.outputs {
            w.write(o).expect("writing to memory");
        }
    }
    s.push_str(&String::from_utf8_lossy(
        &w.finish().expect("writing to memory"),
    ));
    s
}
