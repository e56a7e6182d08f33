//! The Kafka runtime: wraps the engine in a consumer-group service without changing its
//! behaviour.
//!
//! - [`admin`]: publishing and listing campaigns.
//! - [`config`]: the configuration file and environment, validated into settings.
//! - [`http`]: `/metrics`, `/healthz`, `/readyz` and the admin API.
//! - [`metrics`]: every exported metric.
//! - [`kafka`]: client settings, topic creation and the co-partitioning check.
//! - [`codecs`]: the value codec of every topic.
//! - [`catalog_feed`]: the campaign catalog as a global table.
//! - [`task`]: one task's queues, merge and engine.
//! - [`restore`]: rebuilding a task from its changelog partition.
//! - [`processor`]: the instance loop, rebalances, effects and transactions.

pub mod admin;
pub mod catalog_feed;
pub mod codecs;
pub mod config;
pub mod http;
pub mod kafka;
pub mod metrics;
pub mod processor;
pub mod restore;
pub mod task;

pub use processor::{run, RuntimeError};
