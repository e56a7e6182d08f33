//! The offline simulator: runs the engine over a JSONL file of events, as a caught-up
//! connector would, and reports every send-command and decision as it is produced.
//!
//! ```text
//!  campaigns.yaml ──► catalog ─┐
//!  events.jsonl ──line by line──► reorder window ──► Engine ──► sink (table / JSONL, streamed)
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
//! The file is streamed: read line by line, each output handed to the caller's sink as the
//! engine produces it. Memory is the engine's per-user state plus a bounded
//! [reorder window](reorder): events may be out of event-time order in the file by up to
//! `reorder_window` events and still run exactly as if the file were sorted. An event that
//! is out of order by more than that is a bad line (it is reported and skipped), never
//! processed at a different time than the sorted file would give it.
//!
//! An event dated outside the range the rules compute with ([`time::check_event_range`])
//! is a bad line, as the connector would dead-letter it. There is no wall clock here, so
//! the connector's other time check, "not too far ahead of now", does not apply.

mod render;
pub mod reorder;

use std::io::BufRead;
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};

pub use self::render::{
    render_jsonl, render_table, summary, JsonlWriter, OutputWriter, TableWriter, MAX_CELL_CHARS,
    TABLE_WIDTH_ROWS,
};
use self::reorder::Reorder;
use crate::engine::{Effect, Engine};
use crate::events_file::EventLines;
pub use crate::events_file::LineError;
use crate::model::{Campaign, Decision, InputCoordinates, InputEvent, SendCommand, TimestampMs};
use crate::time::{self, format_timestamp};
use crate::validate::Limits;

/// How many events the reorder window holds by default.
pub const DEFAULT_REORDER_WINDOW: usize = 100_000;

/// One output of the simulation, in the order the engine produced them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Output {
    Send(SendCommand),
    Decision(Decision),
}

/// How to run.
#[derive(Debug, Clone, Copy)]
pub struct Options {
    /// Advance time to here at the end (default: the last event plus the longest delay).
    pub until: Option<TimestampMs>,
    /// How many events may wait to be put in event-time order.
    pub reorder_window: usize,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            until: None,
            reorder_window: DEFAULT_REORDER_WINDOW,
        }
    }
}

/// What went wrong with a simulation as a whole (bad lines are not errors: they are
/// reported and the rest runs).
#[derive(Debug, thiserror::Error)]
pub enum SimulateError {
    /// A campaign the engine refused (the campaigns file validates them first).
    #[error("{0}")]
    Campaign(String),
    #[error("reading the events: {0}")]
    Read(std::io::Error),
    #[error("writing the output: {0}")]
    Write(std::io::Error),
    /// The output stopped taking outputs (its error is the one to report).
    #[error("the output stopped")]
    Stopped,
}

/// The counts of a simulation; the outputs themselves went to the sink.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Summary {
    pub events: usize,
    pub sends: usize,
    pub decisions: usize,
    pub bad_lines: usize,
    pub until: Option<TimestampMs>,
    pub unknown_interaction_kinds: u64,
    pub unknown_user_event_types: u64,
    pub unknown_time_zones: u64,
    pub pending_at_end: usize,
}

/// Everything a simulation produced, held in memory (see [`simulate`]).
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

    /// The counts of this report.
    pub fn summary(&self) -> Summary {
        Summary {
            events: self.events,
            sends: self.sends().count(),
            decisions: self.decisions().count(),
            bad_lines: self.line_errors.len(),
            until: self.until,
            unknown_interaction_kinds: self.unknown_interaction_kinds,
            unknown_user_event_types: self.unknown_user_event_types,
            unknown_time_zones: self.unknown_time_zones,
            pending_at_end: self.pending_at_end,
        }
    }
}

/// Runs the campaigns over the events file (its bytes), holding every output in memory.
/// `source_name` names the events file in decisions' input coordinates (partition 0,
/// offset = line number). For files of any size, use [`run`], which streams.
pub fn simulate(
    campaigns: &[Campaign],
    events_file: &[u8],
    source_name: &str,
    until: Option<TimestampMs>,
    limits: Limits,
) -> Result<Report, String> {
    let mut report = Report::default();
    let options = Options {
        until,
        // Everything fits: the bytes are in memory already.
        reorder_window: usize::MAX,
    };
    let mut outputs = Vec::new();
    let mut line_errors = Vec::new();
    let summary = run(
        campaigns,
        EventLines::new(events_file),
        source_name,
        options,
        limits,
        &mut |o| {
            outputs.push(o);
            Ok(())
        },
        &mut |e| line_errors.push(e),
    )
    .map_err(|e| e.to_string())?;
    report.outputs = outputs;
    report.line_errors = line_errors;
    report.events = summary.events;
    report.until = summary.until;
    report.unknown_interaction_kinds = summary.unknown_interaction_kinds;
    report.unknown_user_event_types = summary.unknown_user_event_types;
    report.unknown_time_zones = summary.unknown_time_zones;
    report.pending_at_end = summary.pending_at_end;
    Ok(report)
}

/// Runs the campaigns over the events read from `lines`, streaming: every output goes to
/// `on_output` soon after the engine produced it (in the engine's order), every bad line to
/// `on_bad_line` as soon as it is known (in line order). An error from `on_output` stops
/// the run and is returned.
///
/// Three threads share the work, each handing the next bounded batches: one reads and
/// parses the file, one (the caller's) runs the engine, one calls `on_output`. The engine
/// sees the events in the same order either way; the threads only overlap the parsing and
/// the writing with it.
pub fn run<R: BufRead + Send>(
    campaigns: &[Campaign],
    lines: EventLines<R>,
    source_name: &str,
    options: Options,
    limits: Limits,
    on_output: &mut (dyn FnMut(Output) -> std::io::Result<()> + Send),
    on_bad_line: &mut dyn FnMut(LineError),
) -> Result<Summary, SimulateError> {
    std::thread::scope(|scope| {
        let (lines_tx, lines_rx) = sync_channel::<LineBatch>(PIPELINE_BATCHES);
        let (outputs_tx, outputs_rx) = sync_channel::<Vec<Output>>(PIPELINE_BATCHES);
        scope.spawn(move || read_lines(lines, lines_tx));
        let writer = scope.spawn(move || -> std::io::Result<()> {
            for batch in outputs_rx {
                for output in batch {
                    on_output(output)?;
                }
            }
            Ok(())
        });
        let mut deliver = move |batch: Vec<Output>| outputs_tx.send(batch).is_ok();
        let result = simulate_lines(
            campaigns,
            lines_rx,
            source_name,
            options,
            limits,
            &mut deliver,
            on_bad_line,
        );
        drop(deliver);
        let written = writer.join().expect("the output thread does not panic");
        // The writer's error explains a stop, whatever the engine side saw.
        written.map_err(SimulateError::Write)?;
        result
    })
}

/// How many batches may wait between two threads of [`run`].
const PIPELINE_BATCHES: usize = 4;
/// Events (or outputs) per batch.
const BATCH: usize = 1_024;

type LineBatch = Result<Vec<(usize, Result<InputEvent, String>)>, std::io::Error>;

/// The reading thread: parsed lines in batches; a read error ends the stream.
fn read_lines<R: BufRead>(mut lines: EventLines<R>, to: SyncSender<LineBatch>) {
    loop {
        let mut batch = Vec::with_capacity(BATCH);
        let end = loop {
            match lines.next_event() {
                Ok(Some(line)) => {
                    batch.push(line);
                    if batch.len() == BATCH {
                        break false;
                    }
                }
                Ok(None) => break true,
                Err(e) => {
                    let _ = to.send(Err(e));
                    return;
                }
            }
        };
        if (!batch.is_empty() && to.send(Ok(batch)).is_err()) || end {
            return;
        }
    }
}

/// The engine's thread: puts the lines in event-time order and runs them.
fn simulate_lines(
    campaigns: &[Campaign],
    lines: Receiver<LineBatch>,
    source_name: &str,
    options: Options,
    limits: Limits,
    deliver: &mut dyn FnMut(Vec<Output>) -> bool,
    on_bad_line: &mut dyn FnMut(LineError),
) -> Result<Summary, SimulateError> {
    let mut sim = Simulation::new(campaigns, source_name, limits, deliver)?;
    let mut window = Reorder::new(options.reorder_window);
    for batch in lines {
        for (line, parsed) in batch.map_err(SimulateError::Read)? {
            let event = match parsed {
                Ok(event) => event,
                Err(message) => {
                    sim.summary.bad_lines += 1;
                    on_bad_line(LineError { line, message });
                    continue;
                }
            };
            let t = event.occurred_at();
            if let Err(e) = time::check_event_range(t) {
                sim.summary.bad_lines += 1;
                on_bad_line(LineError {
                    line,
                    message: e.to_string(),
                });
                continue;
            }
            if let Err(late) = window.push(t, line, event) {
                sim.summary.bad_lines += 1;
                on_bad_line(LineError {
                    line,
                    message: format!(
                        "occurred_at {} is before {}, the time of an event already simulated: \
                         the file is out of event-time order by more than the reorder window of \
                         {} events (raise --reorder-window, or sort the file by occurred_at)",
                        format_timestamp(t),
                        format_timestamp(late.released),
                        options.reorder_window
                    ),
                });
                continue;
            }
            while let Some((t, line, event)) = window.pop_if_full() {
                sim.process(t, line, &event, on_bad_line)?;
            }
        }
    }
    while let Some((t, line, event)) = window.pop() {
        sim.process(t, line, &event, on_bad_line)?;
    }
    sim.finish(options.until)
}

/// The engine with the simulator's clock discipline; outputs leave in batches.
struct Simulation<'d> {
    engine: Engine,
    effects: Vec<Effect>,
    source: InputCoordinates,
    outputs: Vec<Output>,
    deliver: &'d mut dyn FnMut(Vec<Output>) -> bool,
    summary: Summary,
    last: Option<TimestampMs>,
}

impl<'d> Simulation<'d> {
    fn new(
        campaigns: &[Campaign],
        source_name: &str,
        limits: Limits,
        deliver: &'d mut dyn FnMut(Vec<Output>) -> bool,
    ) -> Result<Self, SimulateError> {
        let mut engine = Engine::new(limits);
        let mut effects = Vec::new();
        for c in campaigns {
            engine
                .apply_campaign(c, 0, &mut effects)
                .map_err(|e| SimulateError::Campaign(e.to_string()))?;
        }
        let mut sim = Self {
            engine,
            effects,
            source: InputCoordinates {
                topic: source_name.to_string(),
                partition: 0,
                offset: 0,
            },
            outputs: Vec::with_capacity(BATCH),
            deliver,
            summary: Summary::default(),
            last: None,
        };
        sim.flush()?;
        Ok(sim)
    }

    /// One event, in event-time order.
    fn process(
        &mut self,
        t: TimestampMs,
        line: usize,
        event: &InputEvent,
        on_bad_line: &mut dyn FnMut(LineError),
    ) -> Result<(), SimulateError> {
        self.fire_until(t)?;
        self.source.offset = line as i64;
        // Checked when read, so never refused; should it be, it is a bad line like any other.
        match self
            .engine
            .process(event, Some(&self.source), t, &mut self.effects)
        {
            Ok(()) => {
                self.summary.events += 1;
                self.last = Some(t);
            }
            Err(e) => {
                self.summary.bad_lines += 1;
                on_bad_line(LineError {
                    line,
                    message: e.to_string(),
                });
            }
        }
        self.flush()
    }

    /// Fires timers one due time at a time with the wall clock at exactly that time, as a
    /// caught-up connector does.
    fn fire_until(&mut self, until: TimestampMs) -> Result<(), SimulateError> {
        while let Some(due) = self.engine.next_due().filter(|&d| d <= until) {
            self.engine.advance_to(due, due, &mut self.effects);
            self.flush()?;
        }
        Ok(())
    }

    /// Moves the effects produced so far into the batch; a full batch leaves.
    fn flush(&mut self) -> Result<(), SimulateError> {
        for effect in self.effects.drain(..) {
            let output = match effect {
                Effect::Send(s) => {
                    self.summary.sends += 1;
                    Output::Send(s)
                }
                Effect::Decision(d) => {
                    self.summary.decisions += 1;
                    Output::Decision(d)
                }
                Effect::PutState(_) | Effect::UserChanged { .. } => continue,
            };
            self.outputs.push(output);
        }
        if self.outputs.len() >= BATCH {
            self.deliver_batch()?;
        }
        Ok(())
    }

    fn deliver_batch(&mut self) -> Result<(), SimulateError> {
        let batch = std::mem::replace(&mut self.outputs, Vec::with_capacity(BATCH));
        if batch.is_empty() || (self.deliver)(batch) {
            Ok(())
        } else {
            Err(SimulateError::Stopped)
        }
    }

    fn finish(mut self, until: Option<TimestampMs>) -> Result<Summary, SimulateError> {
        let longest = self.engine.catalog().longest_delay_ms();
        let end = until.or_else(|| self.last.map(|t| t.saturating_add(longest)));
        if let Some(end) = end {
            self.fire_until(end)?;
            self.engine.advance_to(end, end, &mut self.effects);
            self.flush()?;
        }
        self.deliver_batch()?;
        let c = self.engine.counters();
        self.summary.until = end;
        self.summary.unknown_interaction_kinds = c.unknown_interaction_kinds;
        self.summary.unknown_user_event_types = c.unknown_user_event_types;
        self.summary.unknown_time_zones = c.unknown_time_zones;
        self.summary.pending_at_end = self.engine.pending_count();
        Ok(self.summary)
    }
}
