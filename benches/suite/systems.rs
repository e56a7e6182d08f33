//! The three systems under measurement — the bare copy, the connector, the Kafka Streams
//! application — and how each is configured, started, and asked whether it is ready.

use std::cell::Cell;
use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use crate::kafka::{create_topics, Inputs};
use crate::process::{http_get, wait_for, Proc};

/// What the suite runs against, from `scripts/bench.sh`.
pub struct Env {
    pub bootstrap: String,
    pub partitions: i32,
    pub connector_bin: String,
    pub copy_bin: String,
    pub streams_classpath: String,
    pub streams_threads: u32,
    pub streams_jvm_opts: Vec<String>,
    pub schemas_dir: String,
    /// Logs and Kafka Streams state directories.
    pub work_dir: PathBuf,
    /// The connectors' HTTP ports are taken from here, one per process.
    pub next_port: Cell<u16>,
    pub last_port: u16,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Kind {
    Copy {
        exactly_once: bool,
        commit_ms: u64,
    },
    Connector {
        exactly_once: bool,
        commit_ms: u64,
        decisions: bool,
        /// `processing_threads` (0: the connector's default, one per core).
        threads: u32,
    },
    Streams {
        commit_ms: u64,
    },
}

impl Kind {
    pub fn system(&self) -> &'static str {
        match self {
            Kind::Copy { .. } => "bare copy",
            Kind::Connector { .. } => "connector",
            Kind::Streams { .. } => "Kafka Streams",
        }
    }

    pub fn mode(&self) -> String {
        let guarantee = |eos: bool| if eos { "exactly-once" } else { "at-least-once" };
        let interval = |ms: u64| {
            if ms % 1000 == 0 {
                format!("{} s", ms / 1000)
            } else {
                format!("{ms} ms")
            }
        };
        match *self {
            Kind::Copy {
                exactly_once,
                commit_ms,
            } => format!("{}, {}", guarantee(exactly_once), interval(commit_ms)),
            Kind::Connector {
                exactly_once,
                commit_ms,
                decisions,
                threads,
            } => format!(
                "{}, {}, decisions {}{}",
                guarantee(exactly_once),
                interval(commit_ms),
                if decisions { "on" } else { "off" },
                match threads {
                    0 => String::new(),
                    1 => ", 1 processing thread".into(),
                    n => format!(", {n} processing threads"),
                }
            ),
            Kind::Streams { commit_ms } => format!("exactly-once v2, {}", interval(commit_ms)),
        }
    }

    /// The members the system's group has once every one of them has joined: the
    /// connector's member loops (one per core by default), Kafka Streams' stream threads,
    /// the copy's one consumer.
    pub fn members(&self, env: &Env) -> usize {
        match *self {
            Kind::Copy { .. } => 1,
            Kind::Connector { threads: 0, .. } => {
                std::thread::available_parallelism().map_or(1, |n| n.get())
            }
            Kind::Connector { threads, .. } => threads as usize,
            Kind::Streams { .. } => env.streams_threads as usize,
        }
    }

    pub fn stateful(&self) -> bool {
        !matches!(self, Kind::Copy { .. })
    }
}

/// One configured instance of a system: its group/application id and topics.
pub struct Setup {
    pub kind: Kind,
    pub app: String,
    pub inputs: Inputs,
    pub campaigns: String,
    pub output: String,
    pub delay_ms: i64,
    pub reeligible_ms: i64,
}

impl Setup {
    pub fn new(kind: Kind, app: &str, inputs: &Inputs, campaigns: &str, delay_ms: i64) -> Self {
        Setup {
            kind,
            app: app.to_string(),
            inputs: inputs.clone(),
            campaigns: campaigns.to_string(),
            output: format!("{app}-send-commands"),
            delay_ms,
            reeligible_ms: delay_ms,
        }
    }

    pub fn state_dir(&self, env: &Env) -> PathBuf {
        env.work_dir.join(format!("{}-state", self.app))
    }

    /// The connector's configuration, as environment variables.
    fn connector_env(&self, env: &Env) -> Vec<(String, String)> {
        let Kind::Connector {
            exactly_once,
            commit_ms,
            decisions,
            threads,
        } = self.kind
        else {
            return Vec::new();
        };
        let mut e = vec![
            ("BOOTSTRAP_SERVERS", env.bootstrap.clone()),
            ("APPLICATION_ID", self.app.clone()),
            ("PARTITIONS", env.partitions.to_string()),
            (
                "PROCESSING_GUARANTEE",
                if exactly_once {
                    "exactly_once"
                } else {
                    "at_least_once"
                }
                .to_string(),
            ),
            ("COMMIT_INTERVAL", format!("{commit_ms}ms")),
            ("TOPICS__INTERACTIONS", self.inputs.interactions.clone()),
            ("TOPICS__USER_EVENTS", self.inputs.user_events.clone()),
            ("TOPICS__CAMPAIGNS", self.campaigns.clone()),
            ("TOPICS__SEND_COMMANDS", self.output.clone()),
            ("TOPICS__CHANGELOG", format!("{}-changelog", self.app)),
            (
                "TOPICS__DECISIONS",
                if decisions {
                    format!("{}-decisions", self.app)
                } else {
                    String::new()
                },
            ),
            ("TOPICS__DLQ", format!("{}-dlq", self.app)),
            ("TOPICS__SHADOW", format!("{}-shadow", self.app)),
        ];
        if threads > 0 {
            e.push(("PROCESSING_THREADS", threads.to_string()));
        }
        e.push(("HTTP_LISTEN", String::new()));
        e.into_iter()
            .map(|(k, v)| (format!("CONNECTOR_{k}"), v))
            .collect()
    }

    fn connector_cli(&self, env: &Env, args: &[&str]) {
        let out = Command::new(&env.connector_bin)
            .args(args)
            .envs(self.connector_env(env))
            .output()
            .expect("running the connector CLI");
        assert!(
            out.status.success(),
            "campaign-connector {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Creates the system's topics (inputs and catalog are shared and left alone when they
    /// exist).
    pub fn prepare(&self, env: &Env) {
        create_topics(&env.bootstrap, &self.inputs.both(), env.partitions);
        match self.kind {
            Kind::Connector { .. } => self.connector_cli(env, &["topics", "create"]),
            _ => create_topics(&env.bootstrap, &[&self.output], env.partitions),
        }
    }

    /// Publishes the workload's campaigns to the catalog topic (creating it).
    pub fn publish(&self, env: &Env, yaml: &str) {
        self.connector_cli(env, &["topics", "create"]);
        let file = env.work_dir.join(format!("{}-campaigns.yaml", self.app));
        std::fs::write(&file, yaml).expect("campaigns file");
        self.connector_cli(env, &["campaigns", "publish", file.to_str().unwrap()]);
    }

    /// Starts the system (`run` names the log file).
    pub fn start(&self, env: &Env, run: &str) -> Running {
        let log = env.work_dir.join(format!("{}-{run}.log", self.app));
        match self.kind {
            Kind::Copy {
                exactly_once,
                commit_ms,
            } => {
                let mut c = Command::new(&env.copy_bin);
                c.args(["--bootstrap", &env.bootstrap, "--group", &self.app])
                    .args(["--inputs", &self.inputs.both().join(",")])
                    .args(["--output", &self.output])
                    .args(["--mode", if exactly_once { "eos" } else { "alo" }])
                    .args(["--commit-ms", &commit_ms.to_string()]);
                Running {
                    proc: Proc::spawn(&format!("copy {}", self.app), c, log),
                    http: None,
                    kind: self.kind,
                }
            }
            Kind::Connector { .. } => {
                // The next port of the range that is free now.
                let mut port = env.next_port.get();
                while std::net::TcpListener::bind(("127.0.0.1", port)).is_err() {
                    port += 1;
                    assert!(
                        port <= env.last_port,
                        "no free HTTP port left for connectors"
                    );
                }
                assert!(
                    port <= env.last_port,
                    "no free HTTP port left for connectors"
                );
                env.next_port.set(port + 1);
                let addr = format!("127.0.0.1:{port}");
                let mut c = Command::new(&env.connector_bin);
                c.arg("run")
                    .envs(self.connector_env(env))
                    .env("CONNECTOR_HTTP_LISTEN", &addr)
                    .env("CONNECTOR_INSTANCE_ID", "bench-0")
                    .env(
                        "RUST_LOG",
                        crate::var("BENCH_CONNECTOR_LOG").unwrap_or_else(|| "warn".into()),
                    );
                Running {
                    proc: Proc::spawn(&format!("connector {}", self.app), c, log),
                    http: Some(addr),
                    kind: self.kind,
                }
            }
            Kind::Streams { commit_ms } => {
                let mut c = Command::new("java");
                c.args(&env.streams_jvm_opts)
                    .arg("-Dorg.slf4j.simpleLogger.defaultLogLevel=warn")
                    .args(["-cp", &env.streams_classpath, "CampaignStreams"])
                    .args(["--bootstrap", &env.bootstrap])
                    .args(["--application-id", &self.app])
                    .args(["--interactions", &self.inputs.interactions])
                    .args(["--user-events", &self.inputs.user_events])
                    .args(["--output", &self.output])
                    .args(["--schemas", &env.schemas_dir])
                    .arg("--state-dir")
                    .arg(self.state_dir(env))
                    .args(["--commit-ms", &commit_ms.to_string()])
                    .args(["--threads", &env.streams_threads.to_string()])
                    .args(["--delay-s", &(self.delay_ms / 1000).to_string()])
                    .args(["--reeligible-s", &(self.reeligible_ms / 1000).to_string()])
                    .args(["--instance-id", "bench-0"]);
                Running {
                    proc: Proc::spawn(&format!("Kafka Streams {}", self.app), c, log),
                    http: None,
                    kind: self.kind,
                }
            }
        }
    }
}

/// A started system.
pub struct Running {
    pub proc: Proc,
    http: Option<String>,
    kind: Kind,
}

impl Running {
    /// Waits until the system has restored its state and processes input; returns the time
    /// since it was started. The connector: `/readyz` answers 200. Kafka Streams: every local
    /// store restored and queryable (the application prints `ready`). The copy has no state.
    pub fn wait_ready(&mut self, deadline: Duration) -> Duration {
        match self.kind {
            Kind::Copy { .. } => {}
            Kind::Connector { .. } => {
                let addr = self.http.clone().expect("an HTTP address");
                wait_for(
                    "the connector's /readyz",
                    deadline,
                    Duration::from_millis(20),
                    || {
                        self.proc.check_alive();
                        matches!(http_get(&addr, "/readyz"), Some((200, _))).then_some(())
                    },
                );
            }
            Kind::Streams { .. } => {
                wait_for(
                    "the Kafka Streams application's stores",
                    deadline,
                    Duration::from_millis(20),
                    || {
                        self.proc.check_alive();
                        self.proc.log_text().contains("ready at=").then_some(())
                    },
                );
            }
        }
        self.proc.started.elapsed()
    }

    /// Pending timers as the system reports them.
    pub fn pending(&self) -> Option<u64> {
        match self.kind {
            Kind::Copy { .. } => None,
            Kind::Connector { .. } => {
                let (status, body) = http_get(self.http.as_deref()?, "/admin/tasks")?;
                if status != 200 {
                    return None;
                }
                let json: serde_json::Value = serde_json::from_str(&body).ok()?;
                json["tasks"]
                    .as_array()?
                    .iter()
                    .map(|t| t["pending_timers"].as_u64())
                    .sum()
            }
            Kind::Streams { .. } => self
                .proc
                .log_text()
                .lines()
                .find_map(|l| l.split("pending=").nth(1)?.trim().parse().ok()),
        }
    }

    /// How long the longest task restore took, as the connector reports it.
    pub fn restore_seconds(&self) -> Option<f64> {
        let Kind::Connector { .. } = self.kind else {
            return None;
        };
        let (status, body) = http_get(self.http.as_deref()?, "/metrics")?;
        if status != 200 {
            return None;
        }
        body.lines()
            .filter(|l| l.starts_with("connector_restore_duration_seconds{"))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .reduce(f64::max)
    }

    pub fn stop(self) {
        self.proc.stop(Duration::from_secs(90));
    }
}
