//! `preview` against the real local broker: a generated backlog in the input topics, a
//! campaigns file of new follow-ons and an edit of a live one; the preview's counts equal
//! the simulator's on the same events, and the preview leaves every topic's end offsets
//! and the broker's consumer groups as they were.

mod broker;

use std::collections::BTreeMap;
use std::time::Duration;

use broker::*;
use rdkafka::consumer::{BaseConsumer, Consumer};

/// The trigger campaigns, live.
const TRIGGERS: &str = r#"
  - campaign_id: cart-push
    name: Abandoned cart push
    status: ACTIVE
  - campaign_id: newsletter
    name: Newsletter
    status: ACTIVE
  - campaign_id: free-shipping
    name: Free shipping push
    status: ACTIVE
"#;

/// The live version of the follow-on the file edits.
const LIVE_CART_EMAIL: &str = r#"
  - campaign_id: cart-email
    name: Cart reminder, live version
    status: ACTIVE
    published_at: 2020-01-01T00:00:00Z
    follow_on:
      trigger: {campaign_id: cart-push, kinds: [PUSH_RECEIVED]}
      delay: 2h
      message: {channel: EMAIL, template_id: cart-v1}
"#;

/// The file previewed: an edit of cart-email (shorter delay, exceptions) and two new
/// follow-ons, without `published_at` (as they would be published).
const FOLLOW_ONS: &str = r#"
  - campaign_id: cart-email
    name: Cart reminder, new version
    status: ACTIVE
    version: 2
    follow_on:
      trigger: {campaign_id: cart-push, kinds: [PUSH_RECEIVED]}
      delay: 20m
      exceptions:
        - purchase: {}
        - interaction: {kinds: [PUSH_DIRECT_OPEN]}
      message: {channel: EMAIL, template_id: cart-v2}
  - campaign_id: newsletter-resend
    name: Newsletter re-send to non-openers
    status: ACTIVE
    follow_on:
      trigger: {campaign_id: newsletter, kinds: [EMAIL_RECEIVED]}
      delay: 45m
      exceptions:
        - interaction: {kinds: [EMAIL_OPEN]}
      reeligibility: 1h
      message: {channel: EMAIL, template_id: resend}
  - campaign_id: promo-2
    name: Promo step 2
    status: ACTIVE
    follow_on:
      trigger: {campaign_id: free-shipping, kinds: [PUSH_DIRECT_OPEN]}
      delay: immediate
      reeligibility: 30m
      message: {channel: PUSH, template_id: promo-2}
"#;

/// `n` events of `users` users, one every `step` ms from `start`, as JSONL lines.
fn backlog(n: u64, users: u64, start: i64, step: i64) -> String {
    let mut s = String::new();
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    for i in 0..n {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let t = start + i as i64 * step;
        let user = format!("user-{}", x % users);
        let interaction = |campaign: &str, kind: &str| {
            format!(
                r#"{{"interaction":{{"event_id":"p{i}","user_id":"{user}","campaign_id":"{campaign}","kind":"{kind}","occurred_at":{t}}}}}"#
            )
        };
        let line = match (x >> 20) % 10 {
            0..=2 => interaction("cart-push", "PUSH_RECEIVED"),
            3 => interaction("cart-push", "PUSH_DIRECT_OPEN"),
            4 | 5 => interaction("newsletter", "EMAIL_RECEIVED"),
            6 => interaction("newsletter", "EMAIL_OPEN"),
            7 => interaction("free-shipping", "PUSH_DIRECT_OPEN"),
            8 => format!(
                r#"{{"user_event":{{"event_id":"p{i}","user_id":"{user}","type":"PURCHASE","name":"sku-1","occurred_at":{t}}}}}"#
            ),
            _ => format!(
                r#"{{"user_event":{{"event_id":"p{i}","user_id":"{user}","type":"SESSION_START","occurred_at":{t}}}}}"#
            ),
        };
        s.push_str(&line);
        s.push('\n');
    }
    s
}

/// The end offset of every partition of the world's topics.
fn end_offsets(w: &World) -> BTreeMap<(String, i32), i64> {
    let consumer: BaseConsumer = w.client_config().create().unwrap();
    let mut ends = BTreeMap::new();
    for role in [
        "interactions",
        "user-events",
        "campaigns",
        "send-commands",
        "changelog",
        "decisions",
        "dlq",
    ] {
        let topic = w.topic(role);
        let metadata = consumer
            .fetch_metadata(Some(&topic), Duration::from_secs(10))
            .unwrap();
        for p in metadata.topics()[0].partitions() {
            let (_, high) = consumer
                .fetch_watermarks(&topic, p.id(), Duration::from_secs(10))
                .unwrap();
            ends.insert((topic.clone(), p.id()), high);
        }
    }
    ends
}

/// Every consumer group the broker knows, by name.
fn groups(w: &World) -> Vec<String> {
    let consumer: BaseConsumer = w.client_config().create().unwrap();
    let list = consumer
        .fetch_group_list(None, Duration::from_secs(10))
        .unwrap();
    let mut names: Vec<String> = list.groups().iter().map(|g| g.name().to_string()).collect();
    names.sort();
    names
}

type Counts = BTreeMap<(String, String, String), u64>;

fn json_lines(text: &str) -> Vec<serde_json::Value> {
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

/// A decision line without its input coordinates (the file's line or the topic's offset).
fn without_source(mut line: serde_json::Value) -> serde_json::Value {
    line["decision"].as_object_mut().unwrap().remove("source");
    line
}

#[test]
fn preview_counts_what_simulate_decides_on_the_same_events_and_changes_nothing() {
    let w = World::new("preview", 3);
    w.create_topics();
    w.publish(&format!("campaigns:{TRIGGERS}{LIVE_CART_EMAIL}"));
    // 20,000 events over the last 4 hours, the last one 10 minutes ago.
    let n = 20_000u64;
    let step = 4 * 3_600_000 / n as i64;
    let start = now_ms() - 10 * 60_000 - n as i64 * step;
    let events_text = backlog(n, 1_500, start, step);
    let events = write_file(w.dir.path(), "events.jsonl", &events_text);
    let (ok, out, err) = w.cli(&["send", events.to_str().unwrap()]);
    assert!(ok, "send failed: {out}{err}");
    assert!(out.contains("sent 20000 events"), "{out}");
    // Records the connector would dead-letter are counted, not previewed.
    w.send_raw("interactions", "user-1", b"not an Avro record");
    w.send_raw("user-events", "user-2", b"");

    let ends_before = end_offsets(&w);
    let groups_before = groups(&w);
    let file = write_file(
        w.dir.path(),
        "follow-ons.yaml",
        &format!("campaigns:{FOLLOW_ONS}"),
    );
    let (ok, out, err) = w.cli(&[
        "preview",
        "--campaigns",
        file.to_str().unwrap(),
        "--since",
        "1d",
        "--users",
        "5",
        "--format",
        "jsonl",
    ]);
    assert!(ok, "preview failed: {err}");
    let lines = json_lines(&out);
    let head = &lines[0]["preview"];
    assert_eq!(head["records"], 20_002, "{head}");
    assert_eq!(head["events"], 20_000, "{head}");
    assert_eq!(head["tasks"], 3, "{head}");
    assert_eq!(
        head["dead_letter_records"],
        serde_json::json!({"undecodable": 2}),
        "{head}"
    );
    assert_eq!(
        head["evaluated"],
        serde_json::json!(["cart-email", "newsletter-resend", "promo-2"])
    );
    let until = head["timers_advanced_to"].as_str().unwrap().to_string();

    // The simulator on the same events: the live trigger campaigns and the file's
    // follow-ons (its cart-email in place of the live one), timers advanced to the same
    // instant.
    let all = write_file(
        w.dir.path(),
        "all.yaml",
        &format!("campaigns:{TRIGGERS}{FOLLOW_ONS}"),
    );
    let sim = std::process::Command::new(env!("CARGO_BIN_EXE_campaign-connector"))
        .args([
            "simulate",
            "--campaigns",
            all.to_str().unwrap(),
            "--events",
            events.to_str().unwrap(),
            "--until",
            &until,
            "--format",
            "jsonl",
        ])
        .output()
        .unwrap();
    let sim_err = String::from_utf8_lossy(&sim.stderr);
    assert!(sim.status.success(), "simulate failed: {sim_err}");
    let simulated = json_lines(&String::from_utf8_lossy(&sim.stdout));

    let mut expected: Counts = BTreeMap::new();
    let mut expected_sends: BTreeMap<String, u64> = BTreeMap::new();
    let mut by_user: BTreeMap<String, Vec<serde_json::Value>> = BTreeMap::new();
    for line in &simulated {
        if let Some(d) = line.get("decision") {
            let key = (
                d["follow_on_id"].as_str().unwrap().to_string(),
                d["outcome"].as_str().unwrap().to_string(),
                d["reason"].as_str().unwrap().to_string(),
            );
            *expected.entry(key).or_default() += 1;
            by_user
                .entry(d["user_id"].as_str().unwrap().to_string())
                .or_default()
                .push(without_source(line.clone()));
        }
        if let Some(c) = line.get("send_command") {
            *expected_sends
                .entry(c["campaign_id"].as_str().unwrap().to_string())
                .or_default() += 1;
            by_user
                .entry(c["user_id"].as_str().unwrap().to_string())
                .or_default()
                .push(line.clone());
        }
    }
    let mut counted: Counts = BTreeMap::new();
    let mut sends: BTreeMap<String, u64> = BTreeMap::new();
    let mut sampled: BTreeMap<String, Vec<serde_json::Value>> = BTreeMap::new();
    for line in &lines {
        if let Some(c) = line.get("count") {
            counted.insert(
                (
                    c["follow_on_id"].as_str().unwrap().to_string(),
                    c["outcome"].as_str().unwrap().to_string(),
                    c["reason"].as_str().unwrap().to_string(),
                ),
                c["count"].as_u64().unwrap(),
            );
        }
        if let Some(f) = line.get("follow_on") {
            let n = f["send_commands"].as_u64().unwrap();
            if n > 0 {
                sends.insert(f["follow_on_id"].as_str().unwrap().to_string(), n);
            }
        }
        if let Some(d) = line.get("decision") {
            sampled
                .entry(d["user_id"].as_str().unwrap().to_string())
                .or_default()
                .push(without_source(line.clone()));
        }
        if let Some(c) = line.get("send_command") {
            sampled
                .entry(c["user_id"].as_str().unwrap().to_string())
                .or_default()
                .push(line.clone());
        }
    }
    // Sends, cancellations, ignores of every reason: a varied run, and the same one.
    assert!(expected.len() >= 10, "{expected:?}");
    assert!(expected_sends.len() == 3, "{expected_sends:?}");
    assert_eq!(counted, expected);
    assert_eq!(sends, expected_sends);
    // The sampled users' decisions are the simulator's, one by one.
    assert_eq!(sampled.len(), 5, "{sampled:?}");
    for (user, outputs) in &sampled {
        assert_eq!(outputs, &by_user[user], "{user}");
    }

    // Read-only: nothing was written anywhere, no group was formed.
    assert_eq!(end_offsets(&w), ends_before);
    assert_eq!(groups(&w), groups_before);
    assert!(
        !groups_before.iter().any(|g| g.contains(&w.id)),
        "no group of this world exists: {groups_before:?}"
    );

    // The table report names what it read and what it would send.
    let (ok, table, err) = w.cli(&[
        "preview",
        "--campaigns",
        file.to_str().unwrap(),
        "--since",
        "1d",
    ]);
    assert!(ok, "{err}");
    assert!(table.contains("20002 records read"), "{table}");
    assert!(
        table.contains("2 the connector would dead-letter (2 undecodable)"),
        "{table}"
    );
    let row = table
        .lines()
        .find(|l| l.starts_with("promo-2 "))
        .unwrap_or_else(|| panic!("{table}"));
    assert!(
        row.split_whitespace().nth(1) == Some(&expected_sends["promo-2"].to_string()),
        "{row}"
    );
    assert!(table.contains("Busiest hours"), "{table}");
    assert_eq!(end_offsets(&w), ends_before);
    assert_eq!(groups(&w), groups_before);
}

#[test]
fn preview_names_what_is_wrong_with_its_window_and_its_file() {
    let w = World::new("preview-errors", 1);
    w.create_topics();
    let file = write_file(w.dir.path(), "f.yaml", &format!("campaigns:{FOLLOW_ONS}"));
    let (ok, _, err) = w.cli(&[
        "preview",
        "--campaigns",
        file.to_str().unwrap(),
        "--since",
        "yesterday",
    ]);
    assert!(!ok);
    assert!(
        err.contains(
            r#"--since "yesterday": expected a duration ago (7d, 12h) or an RFC 3339 time"#
        ),
        "{err}"
    );
    let (ok, _, err) = w.cli(&[
        "preview",
        "--campaigns",
        file.to_str().unwrap(),
        "--since",
        "2026-01-02T00:00:00Z",
        "--until",
        "2026-01-01T00:00:00Z",
    ]);
    assert!(!ok);
    assert!(
        err.contains("--until 2026-01-01T00:00:00Z is not after --since 2026-01-02T00:00:00Z"),
        "{err}"
    );
    let plain = write_file(
        w.dir.path(),
        "plain.yaml",
        "campaigns:\n  - {campaign_id: a, name: A, status: ACTIVE}\n",
    );
    let (ok, _, err) = w.cli(&[
        "preview",
        "--campaigns",
        plain.to_str().unwrap(),
        "--since",
        "1h",
    ]);
    assert!(!ok);
    assert!(
        err.contains("the campaigns file defines no follow-on campaign: nothing to preview"),
        "{err}"
    );
    // Nothing in the window: an empty report, every follow-on at zero.
    let (ok, out, err) = w.cli(&[
        "preview",
        "--campaigns",
        file.to_str().unwrap(),
        "--since",
        "1h",
    ]);
    assert!(ok, "{err}");
    assert!(out.contains("0 records read"), "{out}");
    assert!(
        out.contains("note: follow-on cart-email: its trigger campaign \"cart-push\" is neither in the live catalog nor in the file"),
        "{out}"
    );
}
