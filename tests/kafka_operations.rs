//! Operating the connector against the real local broker: health, readiness, metrics and
//! the admin API.

mod broker;

use std::time::Duration;

use broker::*;
use campaign_connector::model::InteractionKind::*;
use campaign_connector::runtime::kafka::{flush_promptly, PRODUCER_DEFAULTS};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};

#[test]
fn health_readiness_metrics_and_the_admin_api() {
    let mut w = World::new("ops", 2);
    let port = free_port();
    let addr = format!("127.0.0.1:{port}");
    w.set("HTTP_LISTEN", &addr);
    w.set("ADMIN_TOKEN", "s3cret");
    w.create_topics();
    w.publish(&cart_campaigns("1h"));
    w.publish(PROMO_CHAIN);
    let instance = w.start("ops-0");
    wait_for("/healthz 200", Duration::from_secs(60), || {
        http_get(&addr, "/healthz", None).filter(|(s, _)| *s == 200)
    });
    wait_for("/readyz 200", Duration::from_secs(60), || {
        http_get(&addr, "/readyz", None).filter(|(s, _)| *s == 200)
    });

    let t = now_ms();
    w.send_events(&[
        interaction("p1", "pat", "abandoned-cart", PushReceived, t),
        interaction("q1", "quinn", "free-shipping", PushDirectOpen, t),
    ]);
    let mut commands = w.send_commands();
    commands.until_count(1, Duration::from_secs(60));

    // Metrics: consumed events, the immediate send, the pending timer, decisions by outcome.
    let metrics = wait_for("metrics after the send", Duration::from_secs(30), || {
        http_get(&addr, "/metrics", None)
            .map(|(_, body)| body)
            .filter(|b| {
                b.contains("connector_send_commands_total 1") && b.contains("outcome=\"SCHEDULED\"")
            })
    });
    for needle in [
        "connector_events_consumed_total{topic=",
        "connector_decisions_total{outcome=\"SENT\",reason=\"immediate\"} 1",
        "connector_pending_timers{task=",
        "connector_fire_lateness_seconds_bucket",
        "connector_transaction_commit_seconds_bucket",
        "connector_restore_records_total",
        "connector_ready 1",
        "connector_consumer_lag{",
    ] {
        assert!(metrics.contains(needle), "missing {needle} in:\n{metrics}");
    }
    assert!(!metrics.contains("pat"), "no user id in any label");
    // Every metric the dashboard and alerts rely on (deploy/metrics-contract.txt) is exported;
    // the dead-letter counter has no series until a record is dead-lettered, and the expansion
    // phase gauge none until an expansion of the input partitions is known.
    let contract = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/deploy/metrics-contract.txt"
    ))
    .unwrap();
    for line in contract.lines().filter(|l| l.starts_with("connector_")) {
        let name = line.split_whitespace().next().unwrap();
        if !["connector_dlq_records_total", "connector_expansion_phase"].contains(&name) {
            assert!(
                metrics.contains(&format!("\n{name}")),
                "{name} of the contract is not exported:\n{metrics}"
            );
        }
    }

    // The admin API needs the token.
    let (status, _) = http_get(&addr, "/admin/tasks", None).unwrap();
    assert_eq!(status, 401);
    let (status, tasks) = http_get(&addr, "/admin/tasks", Some("s3cret")).unwrap();
    assert_eq!(status, 200, "{tasks}");
    let tasks: serde_json::Value = serde_json::from_str(&tasks).unwrap();
    assert_eq!(tasks["instance"], "ops-0");
    assert_eq!(tasks["tasks"].as_array().unwrap().len(), 2);
    let pending: u64 = tasks["tasks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["pending_timers"].as_u64().unwrap())
        .sum();
    assert_eq!(pending, 1);

    let (status, user) = http_get(&addr, "/admin/users/pat", Some("s3cret")).unwrap();
    assert_eq!(status, 200, "{user}");
    let user: serde_json::Value = serde_json::from_str(&user).unwrap();
    assert_eq!(user["pending"][0]["follow_on_id"], "cart-email");
    assert_eq!(user["pending"][0]["scheduled_by"]["trigger_event_id"], "p1");
    let (status, quinn) = http_get(&addr, "/admin/users/quinn", Some("s3cret")).unwrap();
    assert_eq!(status, 200);
    let quinn: serde_json::Value = serde_json::from_str(&quinn).unwrap();
    assert_eq!(quinn["receipts"][0]["follow_on_id"], "promo-2");

    assert_eq!(instance.stop(Duration::from_secs(30)), Some(0));
}

/// A commit waits for its records with `flush_promptly`: it sends what lingers at once and
/// returns only when every record is acknowledged, with the output producer's defaults.
#[test]
fn the_commit_flush_sends_at_once_and_returns_when_every_record_is_acknowledged() {
    let w = World::new("flush", 3);
    w.create_topics();
    let topic = w.topic("send-commands");
    let mut config = w.client_config();
    config
        .set("partitioner", "murmur2_random")
        .set("enable.idempotence", "true")
        // Lingering for a minute: only a flush sends these within the bound below.
        .set("linger.ms", "60000");
    for (key, value) in PRODUCER_DEFAULTS {
        config.set(key, value);
    }
    let producer: BaseProducer = config.create().unwrap();
    for i in 0..2_000 {
        producer
            .send(
                BaseRecord::to(&topic)
                    .key(&format!("user-{i}"))
                    .payload("x"),
            )
            .unwrap();
    }
    flush_promptly(&producer, Duration::from_secs(30)).unwrap();
    assert_eq!(
        producer.in_flight_count(),
        0,
        "returned before every record was acknowledged"
    );
    let mut reader = w.reader_of_topic(&topic);
    let read = reader.read_to_end(Duration::from_secs(30));
    assert_eq!(read.len(), 2_000);
}
