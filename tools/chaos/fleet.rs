//! The connector instances of a run: the release binary, one config file per instance, one
//! log file per incarnation. Also the supervisor: an instance that exits on its own (a crash)
//! is recorded with the end of its log and started again, as an orchestrator would.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// What every instance's configuration shares.
pub struct FleetConfig {
    pub bin: PathBuf,
    pub dir: PathBuf,
    /// The configuration file's common part (YAML, top-level keys).
    pub common_yaml: String,
    /// HTTP port of instance `i<n>`: `http_base + n`.
    pub http_base: u16,
}

struct Instance {
    child: Child,
    log: PathBuf,
    started: Instant,
    paused: bool,
}

/// An exit nobody asked for.
#[derive(Debug, Clone)]
pub struct Crash {
    pub instance: String,
    pub at: Instant,
    pub status: String,
    pub log: PathBuf,
    pub tail: String,
}

pub struct Fleet {
    cfg: FleetConfig,
    running: BTreeMap<String, Instance>,
    incarnations: BTreeMap<String, u32>,
    pub crashes: Vec<Crash>,
    /// Exit codes of instances stopped with SIGTERM, and whether they stopped in time.
    pub clean_stops: Vec<(String, Option<i32>, bool)>,
}

impl Fleet {
    pub fn new(cfg: FleetConfig) -> Self {
        Self {
            cfg,
            running: BTreeMap::new(),
            incarnations: BTreeMap::new(),
            crashes: Vec::new(),
            clean_stops: Vec::new(),
        }
    }

    pub fn running(&self) -> Vec<String> {
        self.running.keys().cloned().collect()
    }

    /// Running and not paused.
    pub fn active(&self) -> Vec<String> {
        self.running
            .iter()
            .filter(|(_, i)| !i.paused)
            .map(|(id, _)| id.clone())
            .collect()
    }

    pub fn is_running(&self, id: &str) -> bool {
        self.running.contains_key(id)
    }

    pub fn http_port(&self, id: &str) -> u16 {
        let n: u16 = id.trim_start_matches('i').parse().unwrap_or(0);
        self.cfg.http_base + n
    }

    pub fn config_path(&self, id: &str) -> PathBuf {
        self.cfg.dir.join(format!("{id}.yaml"))
    }

    /// Starts instance `id` (`i0`, `i1`, …) with its own config file, HTTP port and log.
    pub fn start(&mut self, id: &str) -> Result<(), String> {
        if self.running.contains_key(id) {
            return Ok(());
        }
        let config = self.config_path(id);
        let yaml = format!(
            "# Connector instance {id} of a chaos run.\ninstance_id: {id}\nhttp_listen: 127.0.0.1:{}\n{}",
            self.http_port(id),
            self.cfg.common_yaml
        );
        std::fs::write(&config, yaml).map_err(|e| format!("{}: {e}", config.display()))?;
        let n = self.incarnations.entry(id.to_string()).or_default();
        *n += 1;
        let log = self.cfg.dir.join(format!("{id}.{n}.log"));
        let file = std::fs::File::create(&log).map_err(|e| format!("{}: {e}", log.display()))?;
        let child = Command::new(&self.cfg.bin)
            .arg("run")
            .arg("--config")
            .arg(&config)
            .env("RUST_LOG", "info,librdkafka=warn")
            .env_remove("CONNECTOR_CONFIG")
            .stdout(Stdio::null())
            .stderr(file)
            .spawn()
            .map_err(|e| format!("{}: {e}", self.cfg.bin.display()))?;
        self.running.insert(
            id.to_string(),
            Instance {
                child,
                log,
                started: Instant::now(),
                paused: false,
            },
        );
        Ok(())
    }

    /// SIGKILL: no chance to commit, abort or leave the group.
    pub fn kill(&mut self, id: &str) -> bool {
        let Some(mut i) = self.running.remove(id) else {
            return false;
        };
        if i.paused {
            let _ = signal(&i.child, "CONT");
        }
        let _ = i.child.kill();
        let _ = i.child.wait();
        true
    }

    /// SIGTERM and wait for the exit (SIGKILL after `deadline`). Records the exit code.
    pub fn stop(&mut self, id: &str, deadline: Duration) -> Option<i32> {
        let mut i = self.running.remove(id)?;
        if i.paused {
            let _ = signal(&i.child, "CONT");
        }
        let _ = signal(&i.child, "TERM");
        let started = Instant::now();
        loop {
            if let Ok(Some(status)) = i.child.try_wait() {
                self.clean_stops.push((id.to_string(), status.code(), true));
                return status.code();
            }
            if started.elapsed() > deadline {
                let _ = i.child.kill();
                let _ = i.child.wait();
                self.clean_stops.push((id.to_string(), None, false));
                return None;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGSTOP: the process stays, silent — a zombie once the group moves on.
    pub fn pause(&mut self, id: &str) -> bool {
        match self.running.get_mut(id) {
            Some(i) if !i.paused => {
                i.paused = signal(&i.child, "STOP");
                i.paused
            }
            _ => false,
        }
    }

    pub fn resume(&mut self, id: &str) -> bool {
        match self.running.get_mut(id) {
            Some(i) if i.paused => {
                i.paused = !signal(&i.child, "CONT");
                !i.paused
            }
            _ => false,
        }
    }

    /// The current incarnation's log.
    pub fn log(&self, id: &str) -> String {
        self.running
            .get(id)
            .and_then(|i| std::fs::read_to_string(&i.log).ok())
            .unwrap_or_default()
    }

    pub fn uptime(&self, id: &str) -> Option<Duration> {
        self.running.get(id).map(|i| i.started.elapsed())
    }

    /// Instances that exited on their own since the last call: recorded as crashes and
    /// removed (the caller restarts them).
    pub fn reap(&mut self) -> Vec<String> {
        let mut gone = Vec::new();
        for (id, i) in self.running.iter_mut() {
            if let Ok(Some(status)) = i.child.try_wait() {
                self.crashes.push(Crash {
                    instance: id.clone(),
                    at: Instant::now(),
                    status: status.to_string(),
                    log: i.log.clone(),
                    tail: tail(&i.log, 12),
                });
                gone.push(id.clone());
            }
        }
        for id in &gone {
            self.running.remove(id);
        }
        gone
    }

    /// Kills everything still running (the end of a run, or a harness error).
    pub fn kill_all(&mut self) {
        for id in self.running() {
            self.kill(&id);
        }
    }
}

impl Drop for Fleet {
    fn drop(&mut self) {
        self.kill_all();
    }
}

fn signal(child: &Child, name: &str) -> bool {
    Command::new("kill")
        .arg(format!("-{name}"))
        .arg(child.id().to_string())
        .status()
        .is_ok_and(|s| s.success())
}

/// The last `n` lines of a file.
pub fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}
