//! Campaign connector: sends a follow-on message when a user interacts with an active
//! campaign and no exception event arrives within the follow-on's delay.
//!
//! # Layout
//!
//! - [`model`]: the wire records of SPEC §2/§4 (interactions, user events, campaigns,
//!   send-commands, decisions, changelog state), mirrored by `schemas/*.avsc`.
//! - [`time`]: durations, timestamps, local times in IANA zones (DST rules), the event-time
//!   range the rules compute with and its edge check; no clock reads.
//! - [`validate`]: campaign validation with field paths, shared by the catalog and the files.
//! - [`codec`]: per-topic value encodings (Avro single-object with the specification's
//!   fingerprints, Confluent wire format with an authenticated schema registry, JSON):
//!   bytes ⇄ records, schema evolution, errors classed dead-letter/retry/stop.
//! - [`catalog`]: the campaigns a task knows, compiled follow-on rules and their versions.
//! - [`engine`]: the per-task state machine — triggers, exceptions, timers, firing — that
//!   takes inputs and `now` and returns [`engine::Effect`]s; no I/O, no clock, no tasks.
//! - [`merge`]: the event-time merge of a task's input partitions (which record next, how
//!   long to wait for an empty partition), as pure logic.
//! - [`campaigns_file`]: campaigns-as-code: the YAML format, loading and its error messages.
//! - [`shadow`]: shadow mode on the catalog side — the `<id>@shadow` versions of a file's
//!   follow-ons, and what promoting one publishes.
//! - [`runtime`]: the Kafka consumer-group service around the engine: tasks, restore,
//!   rebalances, exactly-once transactions, dead letters.
//! - [`events_file`]: the JSONL events file of `simulate` and `send`, bad lines by number.
//! - [`simulate`]: the offline simulator behind `campaign-connector simulate`, streamed.
//! - [`preview`]: what a campaigns file would have done on a window of real traffic: the
//!   input topics read read-only, one engine per task, counts, busiest hours, a sample.

pub mod campaigns_file;
pub mod catalog;
pub mod codec;
pub mod engine;
pub mod events_file;
pub mod expansion;
pub mod merge;
pub mod model;
pub mod preview;
pub mod runtime;
pub mod shadow;
pub mod simulate;
pub mod time;
pub mod validate;
