//! Configuration of `campaign-connector run`: a YAML file, every key also settable by an
//! environment variable, parsed raw and then validated once into [`Settings`].
//!
//! Environment variables: `CONNECTOR_` + the key path in upper case, nested keys joined by
//! `__`: `CONNECTOR_BOOTSTRAP_SERVERS`, `CONNECTOR_TOPICS__INTERACTIONS`,
//! `CONNECTOR_COMMIT_INTERVAL`. librdkafka properties pass through under `kafka`, with `_` for
//! `.`: `CONNECTOR_KAFKA__SECURITY_PROTOCOL=SASL_SSL` sets `security.protocol`. The
//! environment wins over the file.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;
use thiserror::Error;

pub use crate::codec::EncodingConfig;
use crate::time::parse_duration_ms;
use crate::validate::Limits;

/// The prefix of every configuration environment variable.
pub const ENV_PREFIX: &str = "CONNECTOR_";

/// `CONNECTOR_*` variables that are not configuration keys: the config file path and the
/// log format.
pub const NOT_KEYS: [&str; 2] = ["CONFIG", "LOG_FORMAT"];

#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("reading config file {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("config file {path}: {message}")]
    Parse { path: String, message: String },
    #[error("config key {key}: {message}")]
    Invalid { key: String, message: String },
}

/// Per-record processing guarantee.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ProcessingGuarantee {
    /// Input offsets, send-commands, decisions and changelog updates commit in one Kafka
    /// transaction.
    ExactlyOnce,
    /// Faster; after a failure, commands may repeat (with the same `command_id`).
    AtLeastOnce,
}

/// The consumer group protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum GroupProtocol {
    /// The classic protocol with the range assignor (keeps co-partitioned inputs together).
    Classic,
    /// The broker-side protocol of KIP-848 (`group.protocol=consumer`) with the broker's
    /// range assignor.
    Consumer,
}

/// Topic names.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct TopicsConfig {
    /// Interactions input (keyed by user id).
    pub interactions: String,
    /// User events input (keyed by user id), co-partitioned with interactions.
    pub user_events: String,
    /// Campaign catalog (compacted; key campaign id).
    pub campaigns: String,
    /// Send-command output.
    pub send_commands: String,
    /// State changelog (compacted), co-partitioned with the inputs.
    pub changelog: String,
    /// Decision log output; empty to turn it off.
    pub decisions: String,
    /// Dead-letter topic for bad input.
    pub dlq: String,
    /// Shadow output: every would-be send-command and decision of a `SHADOW` follow-on
    /// (keyed by user id), never on the send-command topic or the decision log.
    pub shadow: String,
}

impl Default for TopicsConfig {
    fn default() -> Self {
        Self {
            interactions: "campaign-interactions".into(),
            user_events: "user-events".into(),
            campaigns: "campaigns".into(),
            send_commands: "send-commands".into(),
            changelog: "campaign-connector-changelog".into(),
            decisions: "connector-decisions".into(),
            dlq: "connector-dlq".into(),
            shadow: "connector-shadow".into(),
        }
    }
}

/// The configuration file as written. Every field has a default.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct RawConfig {
    /// Kafka bootstrap servers.
    pub bootstrap_servers: String,
    /// Consumer group id, and prefix of the transactional id.
    pub application_id: String,
    /// Stable identity of this instance: static group membership (`group.instance.id`) and
    /// the transactional id `<application_id>-<instance_id>`. Must differ between instances
    /// and stay the same across restarts of one instance.
    pub instance_id: String,
    /// `exactly_once` (default) or `at_least_once`.
    pub processing_guarantee: ProcessingGuarantee,
    /// How often processed work is committed (e.g. `100ms`, `1s`).
    pub commit_interval: String,
    /// The longest delay a campaign may have (at most 2 years).
    pub max_delay: String,
    /// How far before its `published_at` a follow-on version's backfill start may be
    /// (`campaigns publish --backfill-since`); `0s` refuses every backfill.
    pub max_backfill: String,
    /// How long the event-time merge waits for an empty input partition that is not at its
    /// end before going on without it.
    pub merge_max_wait: String,
    /// How long the event-time merge waits for records of an empty input partition that the
    /// broker has confirmed exist (a fetch that starts slowly after an assignment, a leader
    /// that moves) before going on without them; at least `merge_max_wait`.
    pub merge_fetch_wait: String,
    /// Transaction timeout (`transaction.timeout.ms`); a crashed instance's open transaction
    /// blocks readers of its partitions at most this long.
    pub transaction_timeout: String,
    /// How often a long restore logs its progress.
    pub restore_log_interval: String,
    /// How far an input record's `occurred_at` may be ahead of the wall clock; a record
    /// further ahead is dead-lettered (`future_timestamp`) and never moves stream time.
    pub max_future_skew: String,
    /// How long the same failure may repeat (at least 10 attempts, with backoff) before
    /// the instance stops instead of retrying: a broker or registry outage shorter than
    /// this is ridden out.
    pub retry_budget: String,
    /// Processing threads of the instance; 0 (the default) means one per core. Each thread
    /// is a consumer-group member of its own (group instance and transactional id
    /// `<instance_id>-t<k>` for threads after the first; the client id stays the instance
    /// id) with its own tasks and transactional producer.
    #[serde(deserialize_with = "native_or_text")]
    pub processing_threads: i32,
    /// `classic` (range assignor, default) or `consumer` (KIP-848, broker-side range).
    pub group_protocol: GroupProtocol,
    /// Static group membership with `instance_id` as `group.instance.id` (default true): a
    /// restarted instance gets its tasks back without a rebalance, within the session timeout.
    #[serde(deserialize_with = "native_or_text")]
    pub static_membership: bool,
    /// Address of the HTTP server (`/metrics`, `/healthz`, `/readyz`, admin API); empty
    /// turns it off. Loopback by default: listening beyond it needs `admin_token`.
    pub http_listen: String,
    /// Bearer token the admin API requires (always, when set).
    pub admin_token: Option<String>,
    /// Partitions for topics created by `topics create`.
    #[serde(deserialize_with = "native_or_text")]
    pub partitions: i32,
    /// Replication factor for topics created by `topics create`.
    #[serde(deserialize_with = "native_or_text")]
    pub replication_factor: i32,
    /// Topic names.
    pub topics: TopicsConfig,
    /// Default value encoding of every topic.
    pub encoding: EncodingConfig,
    /// Per-topic encodings, by topic role (`interactions`, `user_events`, `campaigns`,
    /// `send_commands`, `decisions`, `changelog`, `shadow`); missing roles use `encoding`.
    pub encodings: BTreeMap<String, EncodingConfig>,
    /// librdkafka properties passed through to every client (security, tuning).
    pub kafka: BTreeMap<String, String>,
}

impl Default for RawConfig {
    fn default() -> Self {
        Self {
            bootstrap_servers: "127.0.0.1:9092".into(),
            application_id: "campaign-connector".into(),
            instance_id: "instance-0".into(),
            processing_guarantee: ProcessingGuarantee::ExactlyOnce,
            commit_interval: "100ms".into(),
            max_delay: "30d".into(),
            max_backfill: "7d".into(),
            merge_max_wait: "500ms".into(),
            merge_fetch_wait: "30s".into(),
            transaction_timeout: "10s".into(),
            restore_log_interval: "5s".into(),
            max_future_skew: "1h".into(),
            retry_budget: "10m".into(),
            processing_threads: 0,
            group_protocol: GroupProtocol::Classic,
            static_membership: true,
            http_listen: "127.0.0.1:9464".into(),
            admin_token: None,
            partitions: 6,
            replication_factor: 1,
            topics: TopicsConfig::default(),
            encoding: EncodingConfig::default(),
            encodings: BTreeMap::new(),
            kafka: BTreeMap::new(),
        }
    }
}

/// Validated settings.
#[derive(Debug, Clone)]
pub struct Settings {
    pub bootstrap_servers: String,
    pub application_id: String,
    pub instance_id: String,
    pub processing_guarantee: ProcessingGuarantee,
    pub commit_interval: Duration,
    pub limits: Limits,
    pub merge_max_wait: Duration,
    pub merge_fetch_wait: Duration,
    pub transaction_timeout: Duration,
    pub restore_log_interval: Duration,
    pub max_future_skew: Duration,
    pub retry_budget: Duration,
    /// Member loops of the instance (at least 1).
    pub processing_threads: usize,
    /// Which member loop of the instance these settings are for (0 for the instance).
    pub member: usize,
    pub group_protocol: GroupProtocol,
    pub static_membership: bool,
    pub http_listen: Option<String>,
    pub admin_token: Option<String>,
    pub partitions: i32,
    pub replication_factor: i32,
    pub topics: TopicsConfig,
    pub encodings: BTreeMap<String, EncodingConfig>,
    pub default_encoding: EncodingConfig,
    pub kafka: BTreeMap<String, String>,
}

/// The topic roles that have an encoding.
pub const ENCODED_ROLES: [&str; 7] = [
    "interactions",
    "user_events",
    "campaigns",
    "send_commands",
    "decisions",
    "changelog",
    "shadow",
];

impl Settings {
    /// The transactional id of this instance: stable across restarts, so that a restarted
    /// instance fences its own previous incarnation.
    pub fn transactional_id(&self) -> String {
        format!("{}-{}", self.application_id, self.member_id())
    }

    /// This member loop's identity in the group (`group.instance.id`) and in transactions:
    /// the instance id for the first member loop — a one-thread instance is what it always
    /// was — and `<instance_id>-t<k>` for the others. Stable across restarts.
    pub fn member_id(&self) -> String {
        match self.member {
            0 => self.instance_id.clone(),
            k => format!("{}-t{k}", self.instance_id),
        }
    }

    /// The settings of member loop `k` (see [`Settings::member_id`]).
    pub fn member(&self, k: usize) -> Settings {
        Settings {
            member: k,
            ..self.clone()
        }
    }

    /// The encoding of a topic role.
    pub fn encoding(&self, role: &str) -> &EncodingConfig {
        self.encodings.get(role).unwrap_or(&self.default_encoding)
    }

    /// The decision log topic, if on.
    pub fn decisions_topic(&self) -> Option<&str> {
        Some(self.topics.decisions.as_str()).filter(|t| !t.is_empty())
    }
}

fn duration(key: &str, text: &str) -> Result<Duration, ConfigError> {
    parse_duration_ms(text)
        .map(|ms| Duration::from_millis(ms as u64))
        .map_err(|e| ConfigError::Invalid {
            key: key.into(),
            message: e.to_string(),
        })
}

impl RawConfig {
    /// Validates every key once.
    pub fn validate(self) -> Result<Settings, ConfigError> {
        let invalid = |key: &str, message: String| ConfigError::Invalid {
            key: key.into(),
            message,
        };
        for (key, value) in [
            ("bootstrap_servers", &self.bootstrap_servers),
            ("application_id", &self.application_id),
            ("instance_id", &self.instance_id),
        ] {
            if value.trim().is_empty() {
                return Err(invalid(key, "must not be empty".into()));
            }
        }
        let commit_interval = duration("commit_interval", &self.commit_interval)?;
        if commit_interval.is_zero() {
            return Err(invalid("commit_interval", "must be positive".into()));
        }
        let max_delay = duration("max_delay", &self.max_delay)?;
        let limits = Limits::with_max_delay(max_delay.as_secs() as i64)
            .map_err(|m| invalid("max_delay", m))?;
        let max_backfill = duration("max_backfill", &self.max_backfill)?;
        let limits = limits
            .with_max_backfill(max_backfill.as_secs() as i64)
            .map_err(|m| invalid("max_backfill", m))?;
        for (role, enc) in std::iter::once(("encoding", &self.encoding))
            .chain(self.encodings.iter().map(|(k, v)| (k.as_str(), v)))
        {
            let key = if role == "encoding" {
                role.to_string()
            } else {
                format!("encodings.{role}")
            };
            if role != "encoding" && !ENCODED_ROLES.contains(&role) {
                return Err(invalid(
                    &key,
                    format!(
                        "unknown topic role; expected one of {}",
                        ENCODED_ROLES.join(", ")
                    ),
                ));
            }
            enc.validate().map_err(|e| invalid(&key, e.to_string()))?;
        }
        let t = &self.topics;
        for (key, name) in [
            ("topics.interactions", &t.interactions),
            ("topics.user_events", &t.user_events),
            ("topics.campaigns", &t.campaigns),
            ("topics.send_commands", &t.send_commands),
            ("topics.changelog", &t.changelog),
            ("topics.dlq", &t.dlq),
            ("topics.shadow", &t.shadow),
        ] {
            if name.trim().is_empty() {
                return Err(invalid(key, "must not be empty".into()));
            }
        }
        if !self.http_listen.trim().is_empty() {
            let addr: std::net::SocketAddr = self.http_listen.parse().map_err(|e| {
                invalid(
                    "http_listen",
                    format!("{:?}: {e} (expected IP:port)", self.http_listen),
                )
            })?;
            if !addr.ip().is_loopback() && self.admin_token.as_deref().is_none_or(str::is_empty) {
                return Err(invalid(
                    "admin_token",
                    format!("the admin API listens on {addr}, beyond loopback: set admin_token (CONNECTOR_ADMIN_TOKEN)"),
                ));
            }
        }
        if self.partitions < 1 {
            return Err(invalid("partitions", "must be at least 1".into()));
        }
        if self.replication_factor < 1 {
            return Err(invalid("replication_factor", "must be at least 1".into()));
        }
        Ok(Settings {
            bootstrap_servers: self.bootstrap_servers,
            application_id: self.application_id,
            instance_id: self.instance_id,
            processing_guarantee: self.processing_guarantee,
            commit_interval,
            limits,
            merge_max_wait: duration("merge_max_wait", &self.merge_max_wait)?,
            merge_fetch_wait: duration("merge_fetch_wait", &self.merge_fetch_wait)?,
            transaction_timeout: duration("transaction_timeout", &self.transaction_timeout)?,
            restore_log_interval: duration("restore_log_interval", &self.restore_log_interval)?,
            max_future_skew: duration("max_future_skew", &self.max_future_skew)?,
            retry_budget: duration("retry_budget", &self.retry_budget)?,
            member: 0,
            processing_threads: match self.processing_threads {
                0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
                n if n > 0 => n as usize,
                n => {
                    return Err(invalid(
                        "processing_threads",
                        format!("{n}: must be 0 (one per core) or a positive count"),
                    ))
                }
            },
            group_protocol: self.group_protocol,
            static_membership: self.static_membership,
            http_listen: Some(self.http_listen).filter(|l| !l.trim().is_empty()),
            admin_token: self.admin_token.filter(|t| !t.is_empty()),
            partitions: self.partitions,
            replication_factor: self.replication_factor,
            topics: self.topics,
            encodings: self.encodings,
            default_encoding: self.encoding,
            kafka: self.kafka,
        })
    }
}

/// Loads the file (if any), applies `CONNECTOR_*` variables from `env`, and validates.
pub fn load(
    path: Option<&Path>,
    env: impl IntoIterator<Item = (String, String)>,
) -> Result<Settings, ConfigError> {
    let (name, mut tree) = match path {
        Some(p) => {
            let text = std::fs::read_to_string(p).map_err(|source| ConfigError::Read {
                path: p.to_path_buf(),
                source,
            })?;
            let tree: Value = if text.trim().is_empty() {
                Value::Object(Default::default())
            } else {
                serde_yaml_ng::from_str(&text).map_err(|e| ConfigError::Parse {
                    path: p.display().to_string(),
                    message: e.to_string(),
                })?
            };
            (p.display().to_string(), tree)
        }
        None => ("(defaults)".to_string(), Value::Object(Default::default())),
    };
    if !tree.is_object() {
        return Err(ConfigError::Parse {
            path: name,
            message: "expected a mapping of keys".into(),
        });
    }
    for (key, value) in env {
        let Some(rest) = key
            .strip_prefix(ENV_PREFIX)
            .filter(|k| !NOT_KEYS.contains(k))
        else {
            continue;
        };
        let mut path: Vec<String> = rest.split("__").map(|s| s.to_ascii_lowercase()).collect();
        if path.first().map(String::as_str) == Some("kafka") && path.len() == 2 {
            // librdkafka keys use dots.
            path[1] = path[1].replace('_', ".");
        }
        set_path(&mut tree, &path, env_value(&value));
    }
    let raw: RawConfig = serde_json::from_value(tree).map_err(|e| ConfigError::Parse {
        path: name,
        message: e.to_string(),
    })?;
    raw.validate()
}

/// An environment value: a list when written as one (`[a, b]`), else a string (numbers and
/// booleans are read from strings where the key needs them).
fn env_value(text: &str) -> Value {
    match serde_yaml_ng::from_str::<Value>(text) {
        Ok(v @ Value::Array(_)) => v,
        _ => Value::String(text.to_string()),
    }
}

/// Accepts a value or its text (environment variables are text).
fn native_or_text<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de> + std::str::FromStr,
    T::Err: std::fmt::Display,
{
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Either<T> {
        Text(String),
        Native(T),
    }
    match Either::<T>::deserialize(d)? {
        Either::Native(v) => Ok(v),
        Either::Text(s) => s.trim().parse().map_err(serde::de::Error::custom),
    }
}

fn set_path(tree: &mut Value, path: &[String], value: Value) {
    let Some((last, parents)) = path.split_last() else {
        return;
    };
    let mut node = tree;
    for key in parents {
        let map = node.as_object_mut().expect("objects all the way down");
        node = map
            .entry(key.clone())
            .or_insert_with(|| Value::Object(Default::default()));
        if !node.is_object() {
            *node = Value::Object(Default::default());
        }
    }
    if let Some(map) = node.as_object_mut() {
        map.insert(last.clone(), value);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn defaults_are_valid() {
        let s = load(None, env(&[])).unwrap();
        assert_eq!(s.commit_interval, Duration::from_millis(100));
        assert_eq!(s.processing_guarantee, ProcessingGuarantee::ExactlyOnce);
        assert_eq!(s.transactional_id(), "campaign-connector-instance-0");
        assert_eq!(s.decisions_topic(), Some("connector-decisions"));
    }

    #[test]
    fn environment_overrides_nested_keys_and_passes_kafka_properties() {
        let s = load(
            None,
            env(&[
                ("CONNECTOR_TOPICS__INTERACTIONS", "ix"),
                ("CONNECTOR_COMMIT_INTERVAL", "1s"),
                ("CONNECTOR_PROCESSING_GUARANTEE", "at_least_once"),
                ("CONNECTOR_KAFKA__SECURITY_PROTOCOL", "SASL_SSL"),
                ("CONNECTOR_PARTITIONS", "12"),
                ("OTHER_THING", "ignored"),
                ("CONNECTOR_CONFIG", "/etc/connector.yaml"),
                ("CONNECTOR_LOG_FORMAT", "json"),
            ]),
        )
        .unwrap();
        assert_eq!(s.topics.interactions, "ix");
        assert_eq!(s.commit_interval, Duration::from_secs(1));
        assert_eq!(s.processing_guarantee, ProcessingGuarantee::AtLeastOnce);
        assert_eq!(
            s.kafka.get("security.protocol").map(String::as_str),
            Some("SASL_SSL")
        );
        assert_eq!(s.partitions, 12);
    }

    #[test]
    fn unknown_keys_and_bad_values_name_the_key() {
        let e = load(None, env(&[("CONNECTOR_COMIT_INTERVAL", "1s")])).unwrap_err();
        assert!(e.to_string().contains("comit_interval"), "{e}");
        let e = load(None, env(&[("CONNECTOR_COMMIT_INTERVAL", "soon")])).unwrap_err();
        assert!(
            e.to_string().starts_with("config key commit_interval:"),
            "{e}"
        );
        let e = load(None, env(&[("CONNECTOR_MAX_DELAY", "800d")])).unwrap_err();
        assert!(e.to_string().contains("2-year cap"), "{e}");
        let e = load(None, env(&[("CONNECTOR_MAX_BACKFILL", "800d")])).unwrap_err();
        assert_eq!(
            e.to_string(),
            "config key max_backfill: max_backfill 800d exceeds the 2-year cap"
        );
        let none = load(None, env(&[("CONNECTOR_MAX_BACKFILL", "0s")])).unwrap();
        assert_eq!(none.limits.max_backfill_seconds, 0);
        assert_eq!(
            load(None, env(&[])).unwrap().limits.max_backfill_seconds,
            7 * 86_400
        );
        let e = load(None, env(&[("CONNECTOR_HTTP_LISTEN", "0.0.0.0:9464")])).unwrap_err();
        assert!(e.to_string().contains("set admin_token"), "{e}");
        assert!(load(
            None,
            env(&[
                ("CONNECTOR_HTTP_LISTEN", "0.0.0.0:9464"),
                ("CONNECTOR_ADMIN_TOKEN", "s3cret")
            ])
        )
        .is_ok());
        let e = load(None, env(&[("CONNECTOR_ENCODING__FORMAT", "confluent")])).unwrap_err();
        assert!(e.to_string().contains("registry_url"), "{e}");
    }
}
