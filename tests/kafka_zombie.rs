//! A zombie: an instance frozen (SIGSTOP) past its session timeout while the group moves
//! its tasks on, then woken (SIGCONT). Nothing it writes is visible to a `read_committed`
//! reader — its commit is rejected and its transaction aborted — and it recovers quickly,
//! rejoining the group without a restart.

mod broker;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use broker::*;
use campaign_connector::model::InteractionKind::*;

#[test]
fn a_frozen_instance_is_fenced_and_recovers_without_a_restart() {
    let mut w = World::new("zombie", 4);
    w.set("STATIC_MEMBERSHIP", "false");
    w.create_topics();
    w.publish(PROMO_CHAIN);
    let mut zombie = w.start("i0");
    let other = w.start("i1");
    let group = w.stable_group(2, Duration::from_secs(90));
    assert_tasks_whole(&w, &group, "after both joined");

    // Traffic while the zombie is frozen: some of it for its tasks.
    let send = |prefix: &str, n: usize| -> BTreeSet<String> {
        let users: Vec<String> = (0..n).map(|i| format!("{prefix}-{i:03}")).collect();
        let t = now_ms();
        w.send_events(
            &users
                .iter()
                .map(|u| interaction(&format!("{u}-o"), u, "free-shipping", PushDirectOpen, t))
                .collect::<Vec<_>>(),
        );
        users.into_iter().collect()
    };
    let mut expected = send("before", 40);
    zombie.signal("STOP");
    expected.extend(send("frozen", 40));
    // The group moves on without it: the other instance owns every task.
    let group = w.stable_group(1, Duration::from_secs(60));
    assert_tasks_whole(&w, &group, "with the zombie frozen");
    let mut commands = w.send_commands();
    commands.until_count(expected.len(), Duration::from_secs(60));

    let woken = Instant::now();
    zombie.signal("CONT");
    let group = w.stable_group(2, Duration::from_secs(60));
    assert_tasks_whole(&w, &group, "after the zombie woke");
    let rejoined = woken.elapsed();
    println!("the woken instance rejoined after {rejoined:?}");
    assert!(
        zombie.child_running(),
        "the woken instance exited:\n{}",
        zombie.log_text()
    );
    expected.extend(send("after", 40));
    commands.until_count(expected.len(), Duration::from_secs(60));
    assert_eq!(zombie.stop(Duration::from_secs(60)), Some(0));
    assert_eq!(other.stop(Duration::from_secs(60)), Some(0));

    commands.read_to_end(Duration::from_secs(60));
    let sent = commands.commands();
    let ids: BTreeSet<&str> = sent.iter().map(|c| c.command_id.as_str()).collect();
    assert_eq!(
        ids.len(),
        sent.len(),
        "a command twice: the zombie's output became visible"
    );
    let users: BTreeSet<String> = sent.iter().map(|c| c.user_id.clone()).collect();
    assert_eq!(users, expected);
    assert!(
        rejoined < Duration::from_secs(30),
        "recovering from the rejected commit took {rejoined:?}"
    );
}
