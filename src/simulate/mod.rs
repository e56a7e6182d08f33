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

impl Output {
    /// Is this output a `SHADOW` follow-on's (its id ends with `@shadow`)? Its send is a
    /// would-be send, written to the shadow topic by the connector and labelled `SHADOW`
    /// here.
    pub fn is_shadow(&self) -> bool {
        let id = match self {
            Self::Send(c) => &c.campaign_id,
            Self::Decision(d) => &d.follow_on_id,
        };
        id.ends_with(crate::model::SHADOW_SUFFIX)
    }

    /// The output a shadow record stands for (`None` for a record with neither field).
    pub fn of_shadow(record: crate::model::ShadowRecord) -> Option<Self> {
        match (record.send_command, record.decision) {
            (Some(c), _) => Some(Self::Send(c)),
            (None, Some(d)) => Some(Self::Decision(d)),
            (None, None) => None,
        }
    }
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
    /// Would-be send-commands of `SHADOW` follow-ons (not in `sends`).
    pub shadow_sends: usize,
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
            sends: self
                .sends()
                .filter(|c| !c.campaign_id.ends_with(crate::model::SHADOW_SUFFIX))
                .count(),
            shadow_sends: self
                .sends()
                .filter(|c| c.campaign_id.ends_with(crate::model::SHADOW_SUFFIX))
                .count(),
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
/// `on_output` as soon as the engine produced it (in the engine's order), every bad line to
/// `on_bad_line` as soon as it is known (in line order). An error from `on_output` stops
/// the run and is returned.
///
/// A second thread reads and parses the file, handing the engine's thread (the caller's)
/// bounded batches of lines; the engine sees them in file order, as without it. The
/// outputs are made, handed over and dropped on the caller's thread: moving them to
/// another thread would cost more in the allocator than the thread would save.
pub fn run<R: BufRead + Send>(
    campaigns: &[Campaign],
    lines: EventLines<R>,
    source_name: &str,
    options: Options,
    limits: Limits,
    on_output: &mut dyn FnMut(Output) -> std::io::Result<()>,
    on_bad_line: &mut dyn FnMut(LineError),
) -> Result<Summary, SimulateError> {
    std::thread::scope(|scope| {
        let (lines_tx, lines_rx) = sync_channel::<LineBatch>(PIPELINE_BATCHES);
        let (spent_tx, spent_rx) = sync_channel::<Spent>(PIPELINE_BATCHES);
        std::thread::Builder::new()
            .name("simulate-read".into())
            .spawn_scoped(scope, move || read_lines(lines, lines_tx, spent_rx))
            .map_err(SimulateError::Read)?;
        // Processed events and emptied vectors go back to the reading thread, to be freed
        // or filled again there: memory freed on another thread than the one that
        // allocated it costs the allocator more than the trip.
        let mut recycle = move |spent: Spent| {
            let _ = spent_tx.try_send(spent);
        };
        let mut written = Ok(());
        let mut deliver = |output: Output| match on_output(output) {
            Ok(()) => true,
            Err(e) => {
                written = Err(e);
                false
            }
        };
        let result = simulate_lines(
            campaigns,
            lines_rx.into_iter(),
            source_name,
            options,
            limits,
            &mut deliver,
            &mut recycle,
            on_bad_line,
        );
        // The output's error explains a stop, whatever the engine side saw. Returning
        // drops the receiver, which stops the reading thread.
        written.map_err(SimulateError::Write)?;
        result
    })
}

/// How many batches may wait between two threads of [`run`].
const PIPELINE_BATCHES: usize = 4;
/// Events per batch.
const BATCH: usize = 1_024;

type Line = (usize, Result<InputEvent, String>);

/// Lines for the engine, with an empty vector for its processed events.
struct Lines {
    lines: Vec<Line>,
    spare: Vec<InputEvent>,
}

/// Processed events, and an emptied vector of lines.
struct Spent {
    events: Vec<InputEvent>,
    lines: Vec<Line>,
}

type LineBatch = Result<Lines, std::io::Error>;

/// The reading thread: parsed lines in batches; a read error ends the stream.
fn read_lines<R: BufRead>(
    mut lines: EventLines<R>,
    to: SyncSender<LineBatch>,
    spent: Receiver<Spent>,
) {
    let mut free_lines: Vec<Vec<Line>> = Vec::new();
    let mut free_events: Vec<Vec<InputEvent>> = Vec::new();
    loop {
        while let Ok(mut back) = spent.try_recv() {
            back.events.clear();
            free_events.push(back.events);
            free_lines.push(back.lines);
        }
        let mut batch = free_lines
            .pop()
            .unwrap_or_else(|| Vec::with_capacity(BATCH));
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
        let message = Lines {
            lines: batch,
            spare: free_events.pop().unwrap_or_default(),
        };
        if (!message.lines.is_empty() && to.send(Ok(message)).is_err()) || end {
            return;
        }
    }
}

/// The engine's thread: puts the lines in event-time order and runs them.
#[allow(clippy::too_many_arguments)]
fn simulate_lines(
    campaigns: &[Campaign],
    lines: impl Iterator<Item = LineBatch>,
    source_name: &str,
    options: Options,
    limits: Limits,
    deliver: &mut dyn FnMut(Output) -> bool,
    recycle: &mut dyn FnMut(Spent),
    on_bad_line: &mut dyn FnMut(LineError),
) -> Result<Summary, SimulateError> {
    let mut sim = Simulation::new(campaigns, source_name, limits, deliver)?;
    let mut spent = Vec::with_capacity(BATCH);
    let mut spares: Vec<Vec<InputEvent>> = Vec::new();
    let mut emptied: Vec<Vec<Line>> = Vec::new();
    let mut window = Reorder::new(options.reorder_window);
    for batch in lines {
        let mut batch = batch.map_err(SimulateError::Read)?;
        if batch.spare.capacity() > 0 {
            spares.push(batch.spare);
        }
        for (line, parsed) in batch.lines.drain(..) {
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
                spent.push(event);
            }
        }
        if emptied.len() < 2 * PIPELINE_BATCHES {
            emptied.push(batch.lines);
        }
        if spent.len() >= BATCH {
            let next = spares.pop().unwrap_or_else(|| Vec::with_capacity(BATCH));
            recycle(Spent {
                events: std::mem::replace(&mut spent, next),
                lines: emptied.pop().unwrap_or_default(),
            });
        }
    }
    while let Some((t, line, event)) = window.pop() {
        sim.process(t, line, &event, on_bad_line)?;
    }
    sim.finish(options.until)
}

/// The engine with the simulator's clock discipline.
struct Simulation<'d> {
    engine: Engine,
    effects: Vec<Effect>,
    source: InputCoordinates,
    deliver: &'d mut dyn FnMut(Output) -> bool,
    summary: Summary,
    last: Option<TimestampMs>,
}

impl<'d> Simulation<'d> {
    fn new(
        campaigns: &[Campaign],
        source_name: &str,
        limits: Limits,
        deliver: &'d mut dyn FnMut(Output) -> bool,
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

    /// Hands the effects produced so far to the output.
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
                // A shadow follow-on is evaluated like any other; its output is labelled
                // as the shadow's by its `@shadow` id.
                Effect::Shadow(record) => match Output::of_shadow(*record) {
                    Some(o @ Output::Send(_)) => {
                        self.summary.shadow_sends += 1;
                        o
                    }
                    Some(o) => {
                        self.summary.decisions += 1;
                        o
                    }
                    None => continue,
                },
                Effect::PutState(_) | Effect::UserChanged { .. } => continue,
            };
            if !(self.deliver)(output) {
                return Err(SimulateError::Stopped);
            }
        }
        Ok(())
    }

    fn finish(mut self, until: Option<TimestampMs>) -> Result<Summary, SimulateError> {
        let longest = self.engine.catalog().longest_delay_ms();
        let end = until.or_else(|| self.last.map(|t| t.saturating_add(longest)));
        if let Some(end) = end {
            self.fire_until(end)?;
            self.engine.advance_to(end, end, &mut self.effects);
            self.flush()?;
        }
        let c = self.engine.counters();
        self.summary.until = end;
        self.summary.unknown_interaction_kinds = c.unknown_interaction_kinds;
        self.summary.unknown_user_event_types = c.unknown_user_event_types;
        self.summary.unknown_time_zones = c.unknown_time_zones;
        self.summary.pending_at_end = self.engine.pending_count();
        Ok(self.summary)
    }
}
