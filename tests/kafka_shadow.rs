//! Shadow mode end to end on the real broker: a shadow follow-on on a running connector
//! writes only to the shadow topic (send-commands and decisions, read to their end offsets,
//! hold nothing of it), and after `campaigns promote` the promoted version sends for the
//! triggers from the promotion on and never for one before it — across SIGKILLs and
//! restarts, with shadow timers pending at the first kill and promoted ones at the second.

mod broker;

use std::collections::BTreeSet;
use std::time::Duration;

use broker::*;
use campaign_connector::model::InteractionKind::*;
use campaign_connector::model::{
    DecisionOutcome, DecisionReason, InputEvent, ShadowRecord, UserEventType,
};

/// The trigger campaign and a live follow-on on it (an SMS at once), running throughout.
const LIVE: &str = r#"
campaigns:
  - campaign_id: abandoned-cart
    name: Abandoned cart push
    status: ACTIVE
  - campaign_id: cart-sms
    name: Cart SMS at once
    status: ACTIVE
    published_at: 2020-01-01T00:00:00Z
    follow_on:
      trigger: {campaign_id: abandoned-cart, kinds: [PUSH_RECEIVED]}
      delay: immediate
      message: {channel: SMS, template_id: cart-sms}
"#;

/// The new follow-on, tried in shadow mode first.
const NEW: &str = r#"
campaigns:
  - campaign_id: cart-email
    name: Cart reminder email after 15 s
    status: DRAFT
    follow_on:
      trigger: {campaign_id: abandoned-cart, kinds: [PUSH_RECEIVED]}
      delay: 15s
      exceptions:
        - purchase: {}
      message: {channel: EMAIL, template_id: cart-v2}
"#;

fn push(event: &str, user: &str, t: i64) -> InputEvent {
    interaction(event, user, "abandoned-cart", PushReceived, t)
}

/// Users of the shadow's would-be send-commands.
fn shadow_sends(records: &[ShadowRecord]) -> Vec<String> {
    let mut users: Vec<String> = records
        .iter()
        .filter_map(|r| r.send_command.as_ref())
        .map(|c| {
            assert_eq!(
                (c.campaign_id.as_str(), c.template_id.as_str()),
                ("cart-email@shadow", "cart-v2")
            );
            c.user_id.clone()
        })
        .collect();
    users.sort();
    users
}

/// Users with a shadow decision of `outcome`.
fn shadow_decided(records: &[ShadowRecord], outcome: DecisionOutcome) -> BTreeSet<String> {
    records
        .iter()
        .filter_map(|r| r.decision.as_ref())
        .filter(|d| d.outcome == outcome)
        .map(|d| d.user_id.clone())
        .collect()
}

#[test]
fn a_shadow_writes_only_to_the_shadow_topic_and_its_promotion_sends_from_then_on_across_kills() {
    let w = World::new("shadow", 2);
    w.create_topics();
    w.publish(LIVE);
    let file = write_file(w.dir.path(), "cart-email.yaml", NEW);
    let file = file.to_str().unwrap();
    let (ok, out, err) = w.cli(&["campaigns", "publish", "--shadow", file]);
    assert!(ok, "publish --shadow failed: {out}{err}");
    assert!(
        out.contains("published cart-email@shadow v1 (new), shadow"),
        "{out}"
    );
    // Not twice with a backfill, and a promotion never with one.
    let (ok, _, err) = w.cli(&[
        "campaigns",
        "publish",
        "--shadow",
        file,
        "--backfill-since",
        "1d",
    ]);
    assert!(!ok && err.contains("--backfill-since"), "{err}");

    // ---- 1. The shadow on a running connector.
    let a = w.start("a");
    let now = now_ms();
    w.send_events(&[
        push("u1-push", "u1", now),
        push("u2-push", "u2", now),
        push("u3-push", "u3", now),
        push("u4-push", "u4", now),
        user_event(
            "u2-buy",
            "u2",
            UserEventType::Purchase,
            Some("sku"),
            now + 1_000,
        ),
    ]);
    let mut shadow = w.reader("shadow");
    wait_for("three would-be sends", Duration::from_secs(90), || {
        shadow.drain(Duration::from_millis(200));
        (shadow_sends(&shadow.shadow_records()).len() >= 3).then_some(())
    });
    assert_eq!(a.stop(Duration::from_secs(30)), Some(0));

    shadow.read_to_end(Duration::from_secs(30));
    let records = shadow.shadow_records();
    assert_eq!(shadow_sends(&records), ["u1", "u3", "u4"]);
    assert_eq!(
        shadow_decided(&records, DecisionOutcome::Cancelled),
        BTreeSet::from(["u2".to_string()])
    );
    for (r, record) in shadow.records.iter().zip(&records) {
        assert_eq!(r.key.as_deref(), Some(record.user_id()), "keyed by user id");
    }
    let mut commands = w.send_commands();
    commands.read_to_end(Duration::from_secs(30));
    let live: Vec<(String, String)> = commands
        .commands()
        .into_iter()
        .map(|c| (c.campaign_id, c.user_id))
        .collect();
    assert_eq!(live.len(), 4, "{live:?}");
    assert!(live.iter().all(|(c, _)| c == "cart-sms"), "{live:?}");
    let mut decisions = w.reader("decisions");
    decisions.read_to_end(Duration::from_secs(30));
    assert!(decisions
        .decisions()
        .iter()
        .all(|d| d.follow_on_id == "cart-sms"));
    // `outputs --shadow` shows them.
    let (ok, out, err) = w.cli(&["outputs", "--shadow", "--read-for", "3s"]);
    assert!(ok, "{err}");
    assert_eq!(out.matches("SHADOW SEND").count(), 3, "{out}");

    // ---- 2. Shadow timers pending at a SIGKILL, the promotion while the connector is down.
    let a2 = w.start("a2");
    let now = now_ms();
    w.send_events(&[push("b1-push", "b1", now), push("b2-push", "b2", now)]);
    wait_for(
        "b1 and b2 scheduled by the shadow",
        Duration::from_secs(60),
        || {
            shadow.drain(Duration::from_millis(200));
            let scheduled = shadow_decided(&shadow.shadow_records(), DecisionOutcome::Scheduled);
            (scheduled.contains("b1") && scheduled.contains("b2")).then_some(())
        },
    );
    a2.kill();

    let (ok, _, err) = w.cli(&[
        "campaigns",
        "promote",
        "cart-email@shadow",
        "--backfill-since",
        "1d",
    ]);
    assert!(
        !ok && err.contains("promotion has no backfill start"),
        "{err}"
    );
    let before = now_ms();
    let (ok, out, err) = w.cli(&["campaigns", "promote", "cart-email@shadow"]);
    assert!(ok, "promote failed: {out}{err}");
    assert!(
        out.contains("promoted cart-email@shadow to cart-email v1"),
        "{out}"
    );
    assert!(out.contains("stopped cart-email@shadow v2"), "{out}");
    let after = now_ms();
    // b3's push happened before the promotion but arrives after it; c1 and c2 after it.
    w.send_events(&[
        push("b3-push", "b3", before - 1_000),
        push("c1-push", "c1", after),
        push("c2-push", "c2", after),
    ]);

    // ---- 3. Restarted: the promoted version schedules c1 and c2; killed again with them
    // pending; the next instance sends them from the changelog.
    let b = w.start("b");
    let mut decisions = w.reader("decisions");
    decisions.until_decisions(
        "c1 and c2 scheduled by the promoted version",
        Duration::from_secs(90),
        |read| {
            let scheduled: BTreeSet<String> = read
                .into_iter()
                .filter(|d| {
                    d.follow_on_id == "cart-email" && d.outcome == DecisionOutcome::Scheduled
                })
                .map(|d| d.user_id)
                .collect();
            (scheduled.contains("c1") && scheduled.contains("c2")).then_some(())
        },
    );
    commands.drain(Duration::from_millis(500));
    assert!(
        !commands
            .commands()
            .iter()
            .any(|c| c.campaign_id == "cart-email"),
        "c1 and c2 are pending at the kill"
    );
    b.kill();
    let c = w.start("c");
    wait_for("the promoted sends", Duration::from_secs(120), || {
        commands.drain(Duration::from_millis(200));
        (commands
            .commands()
            .iter()
            .filter(|c| c.campaign_id == "cart-email")
            .count()
            >= 2)
            .then_some(())
    });
    assert_eq!(c.stop(Duration::from_secs(30)), Some(0));

    commands.read_to_end(Duration::from_secs(60));
    let promoted: Vec<String> = commands
        .commands()
        .into_iter()
        .filter(|c| c.campaign_id == "cart-email")
        .map(|c| {
            assert_eq!((c.template_id.as_str(), c.campaign_version), ("cart-v2", 1));
            c.user_id
        })
        .collect();
    assert_eq!(
        promoted,
        ["c1", "c2"],
        "only triggers from the promotion on, once"
    );
    let sms = commands
        .commands()
        .iter()
        .filter(|c| c.campaign_id == "cart-sms")
        .count();
    assert_eq!(sms, 4 + 5, "the live follow-on went on as before");
    assert!(!commands
        .commands()
        .iter()
        .any(|c| c.campaign_id.contains('@')));

    decisions.read_to_end(Duration::from_secs(60));
    let b3: Vec<_> = decisions
        .decisions()
        .into_iter()
        .filter(|d| d.follow_on_id == "cart-email" && d.user_id == "b3")
        .map(|d| (d.outcome, d.reason))
        .collect();
    assert_eq!(
        b3,
        [(DecisionOutcome::Ignored, DecisionReason::BeforePublish)]
    );
    assert!(decisions
        .decisions()
        .iter()
        .all(|d| !d.follow_on_id.ends_with("@shadow")));

    // The shadow sent nothing more: its pending b1 and b2 were dropped with it.
    shadow.read_to_end(Duration::from_secs(60));
    let records = shadow.shadow_records();
    assert_eq!(shadow_sends(&records), ["u1", "u3", "u4"]);
    let dropped: BTreeSet<String> = records
        .iter()
        .filter_map(|r| r.decision.as_ref())
        .filter(|d| {
            d.outcome == DecisionOutcome::Dropped && d.reason == DecisionReason::FollowOnInactive
        })
        .map(|d| d.user_id.clone())
        .collect();
    assert_eq!(
        dropped,
        BTreeSet::from(["b1".to_string(), "b2".to_string()])
    );
}

/// A deployment that never uses shadow mode need not have the shadow topic: the connector
/// starts and runs without it, and publishing a shadow is refused with the topic named
/// (rather than leaving the connector unable to write the shadow's output).
#[test]
fn without_the_shadow_topic_the_connector_runs_and_a_shadow_publish_is_refused() {
    let mut w = World::new("no-shadow-topic", 2);
    w.create_topics();
    let missing = format!("shadow-never-created-{}", now_ms());
    w.set("TOPICS__SHADOW", &missing);
    let (ok, out, err) = w.cli(&["topics", "check"]);
    assert!(
        ok,
        "topics check must pass without the shadow topic: {out}{err}"
    );
    w.publish(LIVE);
    let instance = w.start("i0");
    w.send_events(&[push("p1", "u1", now_ms())]);
    let mut commands = w.send_commands();
    commands.until_count(1, Duration::from_secs(60));

    let file = w.dir.path().join("new.yaml");
    std::fs::write(&file, NEW).unwrap();
    let (ok, out, err) = w.cli(&["campaigns", "publish", "--shadow", file.to_str().unwrap()]);
    assert!(!ok, "publish --shadow without the topic must fail: {out}");
    assert!(
        err.contains(&missing) && err.contains("topics create"),
        "the error names the topic and the fix: {err}"
    );
    assert_eq!(instance.stop(Duration::from_secs(30)), Some(0));
    assert_commands(&w, &["u1".to_string()].into());
}
