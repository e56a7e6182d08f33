//! Opt-in backfill end to end: a follow-on published with `--backfill-since T` over a
//! backlog the connector has not read yet sends for exactly the triggers from T on, once,
//! and a restart (with sends pending) neither repeats nor re-reads anything.

mod broker;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use broker::*;
use campaign_connector::model::InteractionKind::*;
use campaign_connector::model::{DecisionOutcome, DecisionReason, InputEvent, UserEventType};
use campaign_connector::time::format_timestamp;

const TRIGGER: &str = r#"
campaigns:
  - campaign_id: launch-push
    name: Launch push (sent before its follow-on was ready)
    status: ACTIVE
"#;

const FOLLOW_ON: &str = r#"
campaigns:
  - campaign_id: launch-email
    name: Launch follow-up email
    status: ACTIVE
    follow_on:
      trigger: {campaign_id: launch-push, kinds: [PUSH_RECEIVED]}
      delay: 30s
      exceptions:
        - purchase: {}
      message: {channel: EMAIL, template_id: launch-follow-up}
"#;

const MIN: i64 = 60_000;

fn push(event: &str, user: &str, t: i64) -> InputEvent {
    interaction(event, user, "launch-push", PushReceived, t)
}

#[test]
fn a_backfill_publish_sends_for_the_triggers_since_its_start_once_across_a_restart() {
    let w = World::new("backfill", 2);
    w.create_topics();
    w.publish(TRIGGER);

    // A backlog the connector has not read: launch pushes every 15 minutes over the last
    // 3 hours. The backfill starts 2 h 10 min ago: a0–a3 are before it, a4–a11 after.
    let t0 = now_ms();
    let start = t0 - 130 * MIN;
    let backlog: Vec<InputEvent> = (0..12)
        .map(|i| {
            push(
                &format!("a{i}"),
                &format!("a{i}"),
                t0 - 180 * MIN + i * 15 * MIN,
            )
        })
        .collect();
    // a6 bought something a minute after the push: its send is cancelled, backfill or not.
    let mut backlog = backlog;
    backlog.push(user_event(
        "a6-buy",
        "a6",
        UserEventType::Purchase,
        Some("sku"),
        t0 - 180 * MIN + 6 * 15 * MIN + 5_000,
    ));
    w.send_events(&backlog);

    let file = write_file(w.dir.path(), "launch-email.yaml", FOLLOW_ON);
    let since = format_timestamp(start);
    let (ok, out, err) = w.cli(&[
        "campaigns",
        "publish",
        file.to_str().unwrap(),
        "--backfill-since",
        &since,
    ]);
    assert!(ok, "publish failed: {out}{err}");
    assert!(
        out.contains(&format!(
            "published launch-email v1 (new), triggers from {since} count (backfill)"
        )),
        "{out}"
    );

    let mut a = w.start("a");
    let mut commands = w.send_commands();
    commands.until_count(7, Duration::from_secs(60));

    // Records that arrive late, after the publish, as mobile clients send them: b0 before
    // the backfill start, b1 after it but before the publish (t0 came before the publish),
    // b2 and b3 now (pending at the restart), and a5 again (it has received the follow-on
    // already).
    let now = now_ms();
    w.send_events(&[
        push("b0", "b0", start - 10 * MIN),
        push("b1", "b1", t0 - 5 * MIN),
        push("b2", "b2", now),
        push("b3", "b3", now),
        push("a5-again", "a5", now),
    ]);
    let mut decisions = w.reader("decisions");
    decisions.until_decisions(
        "b2 and b3 scheduled (committed)",
        Duration::from_secs(60),
        |read| {
            let scheduled: BTreeSet<String> = read
                .into_iter()
                .filter(|d| d.outcome == DecisionOutcome::Scheduled)
                .map(|d| d.user_id)
                .collect();
            (scheduled.contains("b2") && scheduled.contains("b3")).then_some(())
        },
    );
    assert!(a.child_running());
    assert_eq!(a.stop(Duration::from_secs(30)), Some(0));

    // The restarted connector fires b2 and b3 from its changelog and reads nothing again.
    let b = w.start("b");
    commands.until_count(10, Duration::from_secs(90));
    assert_eq!(b.stop(Duration::from_secs(30)), Some(0));
    let commands_read = commands.read_to_end(Duration::from_secs(30)).len();
    assert_eq!(commands_read, 10, "exactly the expected sends");
    let sent: BTreeMap<String, String> = commands
        .commands()
        .into_iter()
        .map(|c| (c.user_id.clone(), c.trigger.event_id.clone()))
        .collect();
    let expected: BTreeMap<String, String> =
        ["a4", "a5", "a7", "a8", "a9", "a10", "a11", "b1", "b2", "b3"]
            .into_iter()
            .map(|u| (u.to_string(), u.to_string()))
            .collect();
    assert_eq!(
        sent, expected,
        "one send per user, for the backfilled and later triggers"
    );
    let ids: BTreeSet<String> = commands
        .commands()
        .into_iter()
        .map(|c| c.command_id)
        .collect();
    assert_eq!(ids.len(), 10, "no command twice");

    // The decisions say which triggers counted only because of the backfill.
    decisions.read_to_end(Duration::from_secs(30));
    let mut why: BTreeMap<(String, String), Vec<(DecisionOutcome, DecisionReason)>> =
        BTreeMap::new();
    for d in decisions.decisions() {
        why.entry((
            d.user_id.clone(),
            d.trigger_event_id.clone().unwrap_or_default(),
        ))
        .or_default()
        .push((d.outcome, d.reason));
    }
    use DecisionOutcome::*;
    use DecisionReason::*;
    let of = |user: &str, event: &str| why[&(user.to_string(), event.to_string())].clone();
    for user in ["a0", "a1", "a2", "a3", "b0"] {
        assert_eq!(of(user, user), [(Ignored, BeforePublish)], "{user}");
    }
    for user in ["a4", "a5", "a7", "a8", "a9", "a10", "a11", "b1"] {
        assert_eq!(
            of(user, user),
            [(Scheduled, Backfill), (Fired, Due)],
            "{user}"
        );
    }
    assert_eq!(
        of("a6", "a6"),
        [(Scheduled, Backfill), (Cancelled, Exception)]
    );
    for user in ["b2", "b3"] {
        assert_eq!(
            of(user, user),
            [(Scheduled, Trigger), (Fired, Due)],
            "{user}"
        );
    }
    assert_eq!(of("a5", "a5-again"), [(Ignored, NotReeligible)]);
    // Every decision once: the restart re-read nothing.
    let total: usize = why.values().map(Vec::len).sum();
    assert_eq!(total, 5 + 8 * 2 + 2 + 2 * 2 + 1, "{why:?}");
}
