//! Task ownership with several instances and dynamic membership, against the real broker:
//! the group's own description never shows a task split across members, and the
//! send-commands read `read_committed` to the end offsets are exactly the expected ones.

mod broker;

use std::collections::{BTreeMap, BTreeSet};
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

/// At-least-once, two instances, one SIGKILLed again and again while its timers are
/// pending: every expected user gets a command, no other user does, and a user's commands
/// (a repeat after a crash is allowed) all carry the same command id. Half the kills come
/// as soon as the group's committed offsets cover the input — state produced but not yet
/// written must not be behind them (the producer holds records for seconds unless flushed,
/// and commits are a second apart) — the others at an arbitrary moment after the input.
#[test]
fn at_least_once_under_repeated_kills_loses_no_command_and_repeats_only_the_same_id() {
    let mut w = World::new("alokill", 6);
    w.set("STATIC_MEMBERSHIP", "false");
    w.set("PROCESSING_GUARANTEE", "at_least_once");
    w.set("COMMIT_INTERVAL", "1s");
    w.set("KAFKA__LINGER_MS", "5000");
    w.create_topics();
    w.publish(&cart_campaigns("12s"));
    let mut instances = [Some(w.start("i0")), Some(w.start("i1"))];
    let group = w.stable_group(2, Duration::from_secs(90));
    assert_tasks_whole(&w, &group, "after two instances joined");

    let mut expected = BTreeSet::new();
    for round in 0..4 {
        expected.extend(story(&w, &format!("a{round}"), 0..40, now_ms()));
        if round % 2 == 0 {
            wait_for(
                "the input's offsets committed",
                Duration::from_secs(60),
                || w.inputs_committed().then_some(()),
            );
        } else {
            std::thread::sleep(Duration::from_millis(300));
        }
        let victim = round % 2;
        instances[victim].take().unwrap().kill();
        instances[victim] = Some(w.start(&format!("i{victim}")));
        let group = w.stable_group(2, Duration::from_secs(90));
        assert_tasks_whole(&w, &group, &format!("round {round}, after the restart"));
    }

    let mut commands = w.send_commands();
    let mut ids_by_user: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let read = |commands: &mut Reader, ids_by_user: &mut BTreeMap<_, BTreeSet<_>>| {
        commands.drain(Duration::from_millis(500));
        for c in commands.commands() {
            ids_by_user
                .entry(c.user_id)
                .or_default()
                .insert(c.command_id);
        }
    };
    wait_for(
        "a command for every expected user",
        Duration::from_secs(120),
        || {
            read(&mut commands, &mut ids_by_user);
            expected
                .iter()
                .all(|u| ids_by_user.contains_key(u))
                .then_some(())
        },
    );
    for i in instances.into_iter().flatten() {
        assert_eq!(i.stop(Duration::from_secs(60)), Some(0));
    }
    // Everything the instances wrote, up to the end offsets after they stopped.
    commands.read_to_end(Duration::from_secs(60));
    for c in commands.commands() {
        ids_by_user
            .entry(c.user_id)
            .or_default()
            .insert(c.command_id);
    }
    let users: BTreeSet<&String> = ids_by_user.keys().collect();
    assert_eq!(
        users
            .difference(&expected.iter().collect())
            .collect::<Vec<_>>(),
        Vec::<&&String>::new(),
        "users who bought within the window got a command"
    );
    for (user, ids) in &ids_by_user {
        assert_eq!(
            ids.len(),
            1,
            "{user} got commands with different ids: {ids:?}"
        );
    }
}
