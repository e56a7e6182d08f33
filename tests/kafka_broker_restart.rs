//! A broker restart while the connector works: the connector rides it out without a
//! process restart, and its `read_committed` output is exactly the expected one. In a
//! test binary of its own, because it stops the broker every other test uses.

mod broker;

use std::collections::BTreeSet;
use std::process::Command;
use std::time::Duration;

use broker::*;
use campaign_connector::model::InteractionKind::*;

/// Runs a scripts/kafka command against the test broker (scripts/test.sh exports its
/// port and data dir).
fn broker_script(name: &str) {
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/kafka/");
    let status = Command::new(format!("{script}{name}"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .status()
        .unwrap();
    assert!(status.success(), "scripts/kafka/{name} failed");
}

#[test]
fn a_broker_restart_mid_processing_is_ridden_out_with_exact_output() {
    for var in ["KAFKA_PORT", "KAFKA_DATA_DIR"] {
        assert!(
            std::env::var(var).is_ok(),
            "{var} is not set: run the suite with scripts/test.sh"
        );
    }
    let w = World::new("bounce", 3);
    w.create_topics();
    w.publish(&cart_campaigns("8s"));
    let mut instance = w.start("i0");
    instance.wait_log("task restored", Duration::from_secs(60));

    let t = now_ms();
    let before: Vec<String> = (0..20).map(|i| format!("before-{i:02}")).collect();
    w.send_events(
        &before
            .iter()
            .map(|u| interaction(&format!("{u}-t"), u, "abandoned-cart", PushReceived, t))
            .collect::<Vec<_>>(),
    );
    wait_scheduled(&w, 20);

    // The timers are pending while the broker goes away and comes back.
    broker_script("stop.sh");
    std::thread::sleep(Duration::from_secs(3));
    broker_script("start.sh");
    broker_script("wait-ready.sh");

    let t = now_ms();
    let after: Vec<String> = (0..20).map(|i| format!("after-{i:02}")).collect();
    w.send_events(
        &after
            .iter()
            .map(|u| interaction(&format!("{u}-t"), u, "abandoned-cart", PushReceived, t))
            .collect::<Vec<_>>(),
    );
    let expected: BTreeSet<String> = before.into_iter().chain(after).collect();
    let mut commands = w.send_commands();
    let arrived = wait_for_count(&mut commands, 40, Duration::from_secs(120));
    assert!(
        instance.child_running(),
        "the connector exited during the broker restart:\n{}",
        instance.log_text()
    );
    assert_eq!(instance.stop(Duration::from_secs(60)), Some(0));
    assert!(arrived, "not every command arrived");
    assert_commands(&w, &expected);
}

/// Reads until `n` records arrived or the deadline passed; whether they did.
fn wait_for_count(reader: &mut Reader, n: usize, deadline: Duration) -> bool {
    let started = std::time::Instant::now();
    while reader.records.len() < n && started.elapsed() < deadline {
        reader.drain(Duration::from_millis(200));
    }
    reader.records.len() >= n
}
