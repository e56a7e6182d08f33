//! The Kafka runtime: wraps the engine in a consumer-group service without changing its
//! behaviour.
//!
//! - [`admin`]: publishing and listing campaigns.
//! - [`config`]: the configuration file and environment, validated into settings.
//! - [`http`]: `/metrics`, `/healthz`, `/readyz` and the admin API.
//! - [`metrics`]: every exported metric.
//! - [`kafka`]: client settings, topic creation and the co-partitioning check.
//! - [`layout`]: the layout topic of partition expansion — written, read, followed — and
//!   the topic counts a layout allows.
//! - [`partitions`]: `partitions expand`: the plan, the layout, the topics grown in order.
//! - [`codecs`]: the value codec of every topic.
//! - [`catalog_feed`]: the campaign catalog as a global table.
//! - [`rules`]: the runtime's rules without I/O — task ownership, restore progress, commit
//!   cadence, poll timeout, backpressure, backoff and retry budget, readiness.
//! - [`error`]: runtime errors and their disposition (retry, dead-letter, stop).
//! - [`task`]: one task's queues, merge and engine.
//! - [`input`]: input records at the edge: decoded and checked, or bad input.
//! - [`output`]: the one executor of effects, dead letters and commits (the transaction).
//! - [`restore`]: rebuilding tasks from their changelog partitions in bounded steps.
//! - [`rebalance`]: the group consumer, the assignment design and the rebalance callbacks.
//! - [`admin_api`]: the admin API's answers, computed by the loop.
//! - [`instance`]: the instance loop that ties them together, with its parts: `lifecycle`
//!   (tasks after an assignment, activation), `processing` (merge, engine, inputs' ends,
//!   pause/resume, catalog updates) and `commit` (commits, failures, rewinds).

pub mod admin;
pub mod admin_api;
pub mod batch_reader;
pub mod catalog_feed;
pub mod codecs;
mod commit;
pub mod config;
pub mod ends;
pub mod error;
mod expanding;
pub mod http;
pub mod input;
pub mod instance;
pub mod kafka;
pub mod layout;
mod lifecycle;
pub mod memory;
pub mod metrics;
pub mod output;
pub mod partitions;
mod processing;
pub mod rebalance;
pub mod restore;
pub mod rules;
pub mod task;

pub use error::RuntimeError;
pub use instance::run;
