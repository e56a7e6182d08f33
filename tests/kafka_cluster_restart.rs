//! Clean restarts of every node of a three-broker cluster while the connector commits
//! continuously: the connector keeps processing, stops on SIGTERM with exit 0, and its
//! `read_committed` output is exactly the expected one.
//!
//! A node shut down cleanly leaves the cluster's metadata. When it was the group
//! coordinator, librdkafka's `send_offsets_to_transaction` could wait for it forever
//! (its coordinator request is not bounded by the call's timeout): the member stopped
//! polling, its tasks stalled and SIGTERM went unanswered. The single test broker of the
//! other tests cannot show this (nothing else is left to answer metadata without it).
//!
//! The test starts a cluster of its own with `scripts/kafka/cluster.sh` on
//! `KAFKA_CLUSTER_TEST_PORT_BASE` (15 ports; `scripts/test.sh` passes the fault matrix's
//! base, unused while the tests run) and always stops it again.

mod broker;

use std::collections::BTreeSet;
use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use broker::*;
use campaign_connector::model::InteractionKind::*;

struct Cluster {
    base: String,
}

impl Cluster {
    fn cmd(&self, args: &[&str]) -> String {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/kafka/cluster.sh");
        let out = Command::new(script)
            .args(args)
            .env("KAFKA_CLUSTER_PORT_BASE", &self.base)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "cluster.sh {args:?} failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).trim().to_string()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/kafka/cluster.sh");
        let _ = Command::new(script)
            .args(["stop", "--clean"])
            .env("KAFKA_CLUSTER_PORT_BASE", &self.base)
            .current_dir(env!("CARGO_MANIFEST_DIR"))
            .output();
    }
}

#[test]
fn clean_restarts_of_every_cluster_node_are_ridden_out_with_exact_output() {
    let Ok(base) = std::env::var("KAFKA_CLUSTER_TEST_PORT_BASE") else {
        panic!("KAFKA_CLUSTER_TEST_PORT_BASE is not set: run the suite with scripts/test.sh");
    };
    let cluster = Cluster { base };
    cluster.cmd(&["stop", "--clean"]);
    cluster.cmd(&["start"]);
    cluster.cmd(&["wait-ready"]);
    let bootstrap = cluster.cmd(&["bootstrap"]);

    let mut w = World::with_bootstrap("cluster-bounce", 3, bootstrap);
    w.set("REPLICATION_FACTOR", "3");
    w.set("PROCESSING_THREADS", "2");
    w.create_topics();
    w.publish(&cart_campaigns("2s"));
    let mut instance = w.start("i0");
    instance.wait_log("task restored", Duration::from_secs(90));

    // Input keeps arriving (so the members commit offsets all the time) while every node
    // is restarted cleanly in turn, the group and transaction coordinators among them.
    let users = Arc::new(Mutex::new(Vec::<String>::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let w = Arc::new(w);
    let feeder = {
        let (w, users, stop) = (w.clone(), users.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut n = 0;
            while !stop.load(Ordering::Relaxed) && n < 2_000 {
                let batch: Vec<String> = (n..n + 5).map(|i| format!("u{i:05}")).collect();
                n += 5;
                let t = now_ms();
                w.send_events(
                    &batch
                        .iter()
                        .map(|u| {
                            interaction(&format!("{u}-t"), u, "abandoned-cart", PushReceived, t)
                        })
                        .collect::<Vec<_>>(),
                );
                users.lock().unwrap().extend(batch);
                std::thread::sleep(Duration::from_millis(200));
            }
        })
    };
    std::thread::sleep(Duration::from_secs(5));
    for node in ["1", "2", "3"] {
        cluster.cmd(&["restart", node]);
        cluster.cmd(&["wait-ready"]);
        std::thread::sleep(Duration::from_secs(3));
    }
    std::thread::sleep(Duration::from_secs(5));
    stop.store(true, Ordering::Relaxed);
    feeder.join().unwrap();

    let expected: BTreeSet<String> = users.lock().unwrap().iter().cloned().collect();
    let mut commands = w.send_commands();
    let started = Instant::now();
    while commands.records.len() < expected.len() && started.elapsed() < Duration::from_secs(120) {
        commands.drain(Duration::from_millis(500));
    }
    assert!(
        instance.child_running(),
        "the connector exited during the restarts:\n{}",
        instance.log_text()
    );
    assert_eq!(
        commands.records.len(),
        expected.len(),
        "not every command arrived within 120 s of the last restart; {}",
        explain_missing(&w, &commands, &expected)
    );
    assert_eq!(instance.stop(Duration::from_secs(60)), Some(0));
    assert_commands(&w, &expected);
}
