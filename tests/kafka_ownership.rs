//! Task ownership with several instances and dynamic membership, against the real broker:
//! the group's own description never shows a task split across members, and the
//! send-commands read `read_committed` to the end offsets are exactly the expected ones.

mod broker;

use std::collections::BTreeSet;
use std::time::Duration;

use broker::*;
use campaign_connector::model::InteractionKind::*;
use campaign_connector::model::UserEventType;

/// Triggers for `users` (delay from the campaign), and a purchase inside the window for
/// every even-numbered one, produced after the triggers as they happen (a record that is
/// not in the broker yet cannot be waited for): the odd users are expected to get exactly
/// one command.
fn story(w: &World, prefix: &str, users: std::ops::Range<usize>, t: i64) -> BTreeSet<String> {
    let mut triggers = Vec::new();
    let mut purchases = Vec::new();
    let mut expected = BTreeSet::new();
    for i in users {
        let user = format!("{prefix}-{i:03}");
        triggers.push(interaction(
            &format!("{user}-t"),
            &user,
            "abandoned-cart",
            PushReceived,
            t,
        ));
        if i % 2 == 0 {
            purchases.push(user_event(
                &format!("{user}-buy"),
                &user,
                UserEventType::Purchase,
                None,
                t + 1_000,
            ));
        } else {
            expected.insert(user);
        }
    }
    w.send_events(&triggers);
    w.send_events(&purchases);
    expected
}

#[test]
fn three_instances_under_membership_churn_never_split_a_task() {
    let mut w = World::new("churn", 6);
    w.set("STATIC_MEMBERSHIP", "false");
    // Two member loops per instance: six group members sharing out six tasks.
    w.set("PROCESSING_THREADS", "2");
    w.create_topics();
    w.publish(&cart_campaigns("5s"));
    let mut instances: Vec<Option<Instance>> = ["i0", "i1", "i2"]
        .iter()
        .map(|i| Some(w.start(i)))
        .collect();
    let group = w.stable_group(3, Duration::from_secs(90));
    assert_tasks_whole(&w, &group, "after three instances joined");
    assert_eq!(
        group.len(),
        6,
        "one group member per processing thread: {group:?}"
    );

    let mut expected = BTreeSet::new();
    let mut scheduled = 0;
    for round in 0..4 {
        expected.extend(story(&w, &format!("r{round}"), 0..30, now_ms()));
        scheduled += 30;
        // The timers are pending (committed) when their owner is killed.
        wait_scheduled(&w, scheduled);
        let victim = round % 3;
        instances[victim].take().unwrap().kill();
        let group = w.stable_group(2, Duration::from_secs(90));
        assert_tasks_whole(&w, &group, &format!("round {round}, after a kill"));
        instances[victim] = Some(w.start(&format!("i{victim}")));
        let group = w.stable_group(3, Duration::from_secs(90));
        assert_tasks_whole(&w, &group, &format!("round {round}, after the restart"));
    }

    let mut commands = w.send_commands();
    commands.until_count(expected.len(), Duration::from_secs(120));
    for i in instances.into_iter().flatten() {
        assert_eq!(i.stop(Duration::from_secs(60)), Some(0));
    }
    assert_commands(&w, &expected);
}

#[test]
fn two_instances_one_restarted_late_send_exactly_the_expected_commands() {
    let mut w = World::new("late", 6);
    w.set("STATIC_MEMBERSHIP", "false");
    w.create_topics();
    w.publish(&cart_campaigns("6s"));
    let first = w.start("i0");
    let second = w.start("i1");
    let group = w.stable_group(2, Duration::from_secs(90));
    assert_tasks_whole(&w, &group, "after two instances joined");

    let expected = story(&w, "late", 0..80, now_ms());
    wait_scheduled(&w, 80);
    second.kill();
    // Restarted 9 s later: its timers came due meanwhile, on whichever side owned them.
    std::thread::sleep(Duration::from_secs(9));
    let second = w.start("i1");
    let group = w.stable_group(2, Duration::from_secs(90));
    assert_tasks_whole(&w, &group, "after the late restart");

    let mut commands = w.send_commands();
    commands.until_count(expected.len(), Duration::from_secs(90));
    assert_eq!(first.stop(Duration::from_secs(60)), Some(0));
    assert_eq!(second.stop(Duration::from_secs(60)), Some(0));
    assert_commands(&w, &expected);
}
