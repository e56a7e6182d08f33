//! Fault tests against the real local broker: kill, restart, rebalance, lag, poison input,
//! misconfigured topics. Outputs are read by `read_committed` consumers and compared with
//! what the engine's rules say should have been sent.

mod broker;

use std::collections::BTreeMap;
use std::time::Duration;

use broker::*;
use campaign_connector::model::InteractionKind::*;
use campaign_connector::model::{DecisionOutcome, UserEventType};

/// Command ids by trigger event id, failing on any duplicate.
fn exactly_once(commands: &[campaign_connector::model::SendCommand]) -> BTreeMap<String, String> {
    let mut by_trigger = BTreeMap::new();
    for c in commands {
        if let Some(previous) = by_trigger.insert(c.trigger.event_id.clone(), c.command_id.clone())
        {
            panic!(
                "duplicate send-command for trigger {} ({previous})",
                c.trigger.event_id
            );
        }
    }
    by_trigger
}

#[test]
fn a_pending_timer_survives_sigkill_and_fires_exactly_once_after_restart() {
    let w = World::new("sigkill", 2);
    w.create_topics();
    w.publish(&cart_campaigns("6s"));
    let first = w.start("i0");
    first.wait_log("tasks assigned", Duration::from_secs(60));
    let t = now_ms();
    w.send_events(&[interaction("k1", "kim", "abandoned-cart", PushReceived, t)]);

    // The schedule is committed once its decision is visible to a read_committed reader.
    let mut decisions = w.reader("decisions");
    decisions.until_decisions(
        "the committed SCHEDULED decision",
        Duration::from_secs(30),
        |read| {
            read.iter()
                .any(|d| d.outcome == DecisionOutcome::Scheduled)
                .then_some(())
        },
    );
    // Pending, not fired: nothing committed on the output before the kill.
    let mut before = w.send_commands();
    assert!(
        before.read_to_end(Duration::from_secs(30)).is_empty(),
        "the timer fired before the kill"
    );
    first.kill();

    let second = w.start("i0");
    let mut commands = w.send_commands();
    commands.until_count(1, Duration::from_secs(60));
    commands.drain(Duration::from_secs(3));
    let sent = commands.commands();
    assert_eq!(
        sent.len(),
        1,
        "exactly one command after the restart: {sent:?}"
    );
    assert_eq!(sent[0].user_id, "kim");
    assert!(
        sent[0].emitted_at >= sent[0].due_at,
        "fired at or after its due time"
    );
    // It came back from the changelog: the restart restored it as pending.
    let log = second.log_text();
    assert!(
        log.lines()
            .any(|l| l.contains("task restored") && l.contains("pending=1")),
        "no task restored with the pending timer:\n{log}"
    );
    assert_eq!(second.stop(Duration::from_secs(30)), Some(0));
    let mut all = w.send_commands();
    assert_eq!(all.read_to_end(Duration::from_secs(30)).len(), 1);
}

#[test]
fn two_instances_and_a_rebalance_while_timers_are_pending_send_every_command_once() {
    let w = World::new("rebalance", 6);
    w.create_topics();
    w.publish(&cart_campaigns("20s"));
    let first = w.start("i0");
    first.wait_log("tasks assigned", Duration::from_secs(60));
    let t = now_ms();
    let users: Vec<String> = (0..40).map(|i| format!("user-{i:02}")).collect();
    let events: Vec<_> = users
        .iter()
        .enumerate()
        .map(|(i, u)| interaction(&format!("t{i}"), u, "abandoned-cart", PushReceived, t))
        .collect();
    w.send_events(&events);
    wait_scheduled(&w, 40);

    // A second instance joins: tasks move while their timers are pending.
    let second = w.start("i1");
    second.wait_log("task restored", Duration::from_secs(60));
    // Then the first leaves cleanly: its remaining tasks move too.
    assert_eq!(first.stop(Duration::from_secs(30)), Some(0));
    second.wait_log("task restored", Duration::from_secs(60));
    // The timers were still pending when their tasks moved.
    assert!(
        w.send_commands()
            .read_to_end(Duration::from_secs(30))
            .is_empty(),
        "timers fired before their tasks moved; the test proves nothing"
    );
    let log = second.log_text();
    assert!(
        log.lines().any(|l| l.contains("task restored")
            && !l.contains("pending=0")
            && l.contains("pending=")),
        "no moved task restored pending timers:\n{log}"
    );

    let mut commands = w.send_commands();
    commands.until_count(40, Duration::from_secs(90));
    assert_eq!(second.stop(Duration::from_secs(30)), Some(0));
    commands.read_to_end(Duration::from_secs(30));
    let sent = exactly_once(&commands.commands());
    assert_eq!(sent.len(), 40);
}

#[test]
fn an_exception_in_the_backlog_cancels_even_when_its_timer_is_overdue() {
    let w = World::new("lag", 2);
    w.create_topics();
    w.publish(&cart_campaigns("10s"));
    // The connector is down while these arrive; by the time it runs, every timer is due.
    let t = now_ms() - 60_000;
    w.send_events(&[
        interaction("a1", "ada", "abandoned-cart", PushReceived, t),
        interaction("b1", "ben", "abandoned-cart", PushReceived, t),
        // ada buys 5 s later, inside her window; ben never does.
        user_event("a2", "ada", UserEventType::Purchase, None, t + 5_000),
        // Later traffic on both topics moves stream time past the due times.
        interaction("z1", "zed", "abandoned-cart", PushReceived, t + 30_000),
        user_event("z2", "zed", UserEventType::SessionStart, None, t + 31_000),
    ]);
    let instance = w.start("i0");
    let mut commands = w.send_commands();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while commands.records.len() < 2 && std::time::Instant::now() < deadline {
        commands.drain(Duration::from_millis(200));
    }
    assert_eq!(instance.stop(Duration::from_secs(30)), Some(0));
    // Ada's purchase in the backlog cancelled her send; nothing more arrives.
    assert_commands(&w, &["ben".to_string(), "zed".to_string()].into());
}

/// Upstream exactly-once applications write their records in transactions: the last
/// offset of every partition they wrote is a transaction marker, never delivered. A task
/// caught up with such input is at its end all the same, so its timers fire by the wall
/// clock — and an exception in the same input still cancels.
#[test]
fn input_written_in_transactions_is_caught_up_and_fires_on_time() {
    let w = World::new("txn-input", 2);
    w.create_topics();
    w.publish(&cart_campaigns("3s"));
    let instance = w.start("i0");
    let t = now_ms();
    w.send_events_in_a_transaction(&[
        interaction("a1", "ada", "abandoned-cart", PushReceived, t),
        interaction("b1", "ben", "abandoned-cart", PushReceived, t),
    ]);
    w.send_events_in_a_transaction(&[user_event(
        "a2",
        "ada",
        UserEventType::Purchase,
        None,
        t + 1_000,
    )]);
    // Nothing else arrives: only the wall clock can fire ben's timer.
    let mut commands = w.send_commands();
    commands.until_count(1, Duration::from_secs(60));
    // Ada's send is due with ben's: once her cancellation is committed, no send of hers
    // can follow; before it, one still could.
    let mut decisions = w.reader("decisions");
    decisions.until_decisions(
        "ada's pending send cancelled (committed)",
        Duration::from_secs(60),
        |read| {
            read.into_iter()
                .any(|d| d.user_id == "ada" && d.outcome == DecisionOutcome::Cancelled)
                .then_some(())
        },
    );
    assert_eq!(instance.stop(Duration::from_secs(30)), Some(0));
    assert_commands(&w, &["ben".to_string()].into());
}

/// Where inputs end, asked about several partitions at once (the loop asks for every
/// empty input of every task): each question gets its own partition's end, and that end is
/// the last stable offset — the records of a transaction still open are not there yet for a
/// `read_committed` reader, so a task is not kept waiting for them.
#[test]
fn input_ends_asked_together_are_each_their_own_partitions_last_stable_offset() {
    use campaign_connector::runtime::config::load;
    use campaign_connector::runtime::ends::Ends;
    use campaign_connector::runtime::input::InputTopics;
    use rdkafka::producer::{BaseProducer, BaseRecord, Producer};

    let w = World::new("ends", 3);
    w.create_topics();
    let interactions = w.topic("interactions");
    let producer = w.producer();
    for p in 0..3 {
        for _ in 0..=p {
            producer
                .send(
                    BaseRecord::to(&interactions)
                        .partition(p)
                        .key("k")
                        .payload("x"),
                )
                .unwrap();
        }
    }
    producer.flush(Duration::from_secs(10)).unwrap();
    let open: BaseProducer = w
        .client_config()
        .set("transactional.id", format!("ends-{}", now_ms()))
        .create()
        .unwrap();
    open.init_transactions(Duration::from_secs(30)).unwrap();
    open.begin_transaction().unwrap();
    for _ in 0..3 {
        open.send(
            BaseRecord::to(&interactions)
                .partition(0)
                .key("k")
                .payload("x"),
        )
        .unwrap();
    }
    open.flush(Duration::from_secs(10)).unwrap();

    let settings = load(None, w.env.clone()).unwrap();
    let topics = InputTopics::new(&interactions, &w.topic("user-events")).unwrap();
    let mut ends = Ends::start(&settings, std::sync::Arc::new(topics)).unwrap();
    let asked = [(0, 0), (0, 1), (0, 2), (1, 0), (1, 2), (0, 1)];
    assert_eq!(
        ends.ask_and_wait(&asked).unwrap(),
        vec![1, 2, 3, 0, 0, 2],
        "interactions 0 (1 record committed, 3 in an open transaction), 1, 2; user events 0, \
         2; interactions 1 again"
    );
    open.commit_transaction(Duration::from_secs(30)).unwrap();
    // Committed: the 3 records and the transaction's marker, once the broker has written
    // the marker (after the commit returned).
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let mut last = Vec::new();
    while std::time::Instant::now() < deadline {
        last = ends.ask_and_wait(&[(0, 0), (0, 2)]).unwrap();
        if last == [5, 3] {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    panic!("after the commit, the ends of interactions 0 and 2: {last:?}, not [5, 3]");
}

/// A send fired by the wall clock (its task caught up) is committed at once, not at the
/// next commit interval: with a one-minute interval, the command is visible seconds after
/// it is due. (Nothing else commits in between: no rebalance, and the first interval ends
/// a minute after the start.)
#[test]
fn a_send_fired_by_the_wall_clock_is_committed_without_waiting_for_the_interval() {
    let mut w = World::new("wall-clock-send", 2);
    w.set("COMMIT_INTERVAL", "60s");
    w.set("TRANSACTION_TIMEOUT", "120s");
    w.create_topics();
    w.publish(&cart_campaigns("2s"));
    let instance = w.start("i0");
    instance.wait_log("tasks assigned", Duration::from_secs(60));
    let started = now_ms();
    w.send_events(&[interaction(
        "k1",
        "kim",
        "abandoned-cart",
        PushReceived,
        started,
    )]);
    let mut commands = w.send_commands();
    commands.until_count(1, Duration::from_secs(50));
    let visible_after_due = now_ms() - commands.commands()[0].due_at;
    assert!(
        visible_after_due < 20_000,
        "the send became visible {visible_after_due} ms after its due time: it waited for the interval"
    );
    assert_eq!(instance.stop(Duration::from_secs(30)), Some(0));
    assert_commands(&w, &["kim".to_string()].into());
}

#[test]
fn poison_records_go_to_the_dead_letter_topic_once_and_processing_goes_on() {
    let w = World::new("poison", 2);
    w.create_topics();
    w.publish(PROMO_CHAIN);
    let instance = w.start("i0");
    instance.wait_log("tasks assigned", Duration::from_secs(60));
    let t = now_ms();
    w.send_raw("interactions", "mallory", b"\x00\x01garbage");
    w.send_raw("user-events", "mallory", b"{not avro}");
    // A valid record whose key is not its user id.
    let codec: campaign_connector::codec::Codec<campaign_connector::model::Interaction> =
        campaign_connector::codec::Codec::new(
            w.topic("interactions"),
            &campaign_connector::codec::EncodingSettings::avro(),
        )
        .unwrap();
    let campaign_connector::model::InputEvent::Interaction(wrong) =
        interaction("x1", "trent", "free-shipping", PushDirectOpen, t)
    else {
        unreachable!()
    };
    w.send_raw(
        "interactions",
        "someone-else",
        &codec.encode(&wrong).unwrap(),
    );
    w.send_events(&[interaction(
        "ok1",
        "olga",
        "free-shipping",
        PushDirectOpen,
        t,
    )]);

    let mut commands = w.send_commands();
    commands.until_count(1, Duration::from_secs(60));
    assert_eq!(commands.commands()[0].user_id, "olga");

    let mut dlq = w.reader("dlq");
    dlq.until_count(3, Duration::from_secs(30));
    dlq.read_to_end(Duration::from_secs(30));
    assert_eq!(dlq.records.len(), 3, "each poison record exactly once");
    let mut classes: Vec<String> = dlq
        .records
        .iter()
        .map(|r| r.headers["error.class"].clone())
        .collect();
    classes.sort();
    assert_eq!(classes, ["key_mismatch", "undecodable", "undecodable"]);
    for r in &dlq.records {
        assert!(r.headers["source.topic"].ends_with(&w.id));
        assert!(r.headers.contains_key("source.partition"));
        assert!(r.headers.contains_key("source.offset"));
        assert!(!r.headers["error.message"].is_empty());
    }
    let garbage = dlq
        .records
        .iter()
        .find(|r| r.payload.as_deref() == Some(&b"\x00\x01garbage"[..]));
    assert!(garbage.is_some(), "the original bytes are kept");

    // Replaying the undecodable ones sends them back to their topics; still bad, they
    // return to the dead-letter topic.
    let (ok, out, err) = w.cli(&["dlq", "replay", "--class", "undecodable", "--dry-run"]);
    assert!(
        ok && out.contains("read 3 dead letters, would replay 2"),
        "{out}{err}"
    );
    let (ok, out, err) = w.cli(&["dlq", "replay", "--class", "undecodable"]);
    assert!(ok && out.contains("replayed 2"), "{out}{err}");
    dlq.until_count(5, Duration::from_secs(30));
    assert_eq!(instance.stop(Duration::from_secs(30)), Some(0));
}

#[test]
fn inputs_that_are_not_co_partitioned_fail_fast_with_a_clear_message() {
    let w = World::new("copart", 3);
    // user-events with 2 partitions, before `topics create` makes the rest with 3.
    let mut other = World::new("copart", 2);
    other.id = w.id.clone();
    for (k, v) in &w.env {
        if k.starts_with("CONNECTOR_TOPICS__") {
            other.env.insert(k.clone(), v.clone());
        }
    }
    let (ok, out, err) = other.cli(&["topics", "create"]);
    assert!(ok, "{out}{err}");
    // The 3-partition world adds nothing for existing topics, so interactions has 2 as well;
    // make a 3-partition interactions topic under a new name.
    let mut w = w;
    w.set("TOPICS__INTERACTIONS", &format!("interactions3-{}", w.id));
    w.create_topics();
    let (ok, out, err) = w.cli(&["run"]);
    assert!(!ok, "run must refuse to start: {out}{err}");
    assert!(
        err.contains("not co-partitioned") && err.contains("3 partitions") && err.contains("2"),
        "message names the topics and counts: {err}"
    );
}

/// A next-weekday follow-on beside the cart reminder.
const WEEKLY_AND_CART: &str = r#"
campaigns:
  - campaign_id: abandoned-cart
    name: Abandoned cart push
    status: ACTIVE
  - campaign_id: cart-email
    name: Cart reminder email
    status: ACTIVE
    published_at: 2020-01-01T00:00:00Z
    follow_on:
      trigger: {campaign_id: abandoned-cart, kinds: [PUSH_RECEIVED]}
      delay: 12s
      message: {channel: EMAIL, template_id: cart-15-off}
  - campaign_id: newsletter
    name: Newsletter
    status: ACTIVE
  - campaign_id: monday-digest
    name: Monday digest
    status: ACTIVE
    published_at: 2020-01-01T00:00:00Z
    follow_on:
      trigger: {campaign_id: newsletter, kinds: [EMAIL_RECEIVED]}
      delay: {next_weekday: MONDAY, at: "09:00"}
      message: {channel: EMAIL, template_id: digest}
"#;

#[test]
fn out_of_range_and_far_future_event_times_are_dead_lettered_and_move_no_time() {
    let w = World::new("eventtime", 2);
    w.create_topics();
    w.publish(WEEKLY_AND_CART);
    let mut instance = w.start("i0");
    instance.wait_log("task restored", Duration::from_secs(60));
    let t = now_ms();
    // ada's timer is pending (due in 12 s) when the bad records arrive.
    w.send_events(&[interaction("a1", "ada", "abandoned-cart", PushReceived, t)]);
    let mut decisions = w.reader("decisions");
    decisions.until_decisions(
        "ada's committed schedule",
        Duration::from_secs(30),
        |read| (!read.is_empty()).then_some(()),
    );
    // Year 262,000-ish on a next-weekday follow-on: once a panic, now bad input. Then a
    // record dated 2099 for ada herself: it must not move her task's stream time.
    w.send_events(&[
        interaction(
            "bad1",
            "mallory",
            "newsletter",
            EmailReceived,
            8_210_298_412_800_000,
        ),
        interaction(
            "bad2",
            "ada",
            "abandoned-cart",
            PushReceived,
            4_078_224_000_000,
        ),
        interaction("ok1", "olga", "abandoned-cart", PushReceived, t),
    ]);
    let mut dlq = w.reader("dlq");
    dlq.until_count(2, Duration::from_secs(30));
    // Nothing fired early: ada's send is not out although a 2099 record was read.
    let mut early = w.send_commands();
    assert!(
        early.read_to_end(Duration::from_secs(30)).is_empty(),
        "a bad record moved stream time"
    );
    let mut commands = w.send_commands();
    commands.until_count(2, Duration::from_secs(60));
    assert!(instance.child_running(), "the connector exited");
    assert_eq!(instance.stop(Duration::from_secs(30)), Some(0));
    commands.read_to_end(Duration::from_secs(30));
    let sent = commands.commands();
    let mut users: Vec<&str> = sent.iter().map(|c| c.user_id.as_str()).collect();
    users.sort();
    assert_eq!(users, ["ada", "olga"]);
    for c in &sent {
        assert!(
            c.emitted_at >= c.due_at,
            "{} fired before its due time",
            c.user_id
        );
        assert_eq!(
            c.trigger.event_id,
            if c.user_id == "ada" { "a1" } else { "ok1" }
        );
    }
    dlq.read_to_end(Duration::from_secs(30));
    let mut classes: Vec<(String, String)> = dlq
        .records
        .iter()
        .map(|r| {
            (
                r.key.clone().unwrap_or_default(),
                r.headers["error.class"].clone(),
            )
        })
        .collect();
    classes.sort();
    assert_eq!(
        classes,
        [
            ("ada".to_string(), "future_timestamp".to_string()),
            ("mallory".to_string(), "timestamp_out_of_range".to_string())
        ]
    );
}

/// Sets one configuration entry of a topic (the only one it then has set).
fn set_topic_config(w: &World, topic: &str, key: &str, value: &str) {
    use rdkafka::admin::{AdminClient, AdminOptions, AlterConfig, ResourceSpecifier};
    use rdkafka::client::DefaultClientContext;
    let admin: AdminClient<DefaultClientContext> = w.client_config().create().unwrap();
    let change = AlterConfig::new(ResourceSpecifier::Topic(topic)).set(key, value);
    let results =
        futures_executor::block_on(admin.alter_configs([&change], &AdminOptions::new())).unwrap();
    for r in results {
        r.unwrap_or_else(|e| panic!("setting {key} of {topic}: {e:?}"));
    }
}

/// Input offsets are committed only past output that was written. The send-commands topic
/// refuses the send (a `max.message.bytes` of 120: smaller than a batch holding a
/// send-command, larger than a transaction marker's, so the aborted transaction can end): the send a push
/// open causes fails delivery, the instance stops saying so — retrying cannot help —
/// without committing the open's offset or writing the receipt of a send that never
/// happened, also not in the revocation its leaving the group brings. With the topic fixed,
/// a restarted instance processes the open again and the command is sent, once.
fn a_refused_send_command_is_never_committed_past(guarantee: &str) {
    let mut w = World::new(&format!("refused-{}", &guarantee[..3]), 1);
    w.set("PROCESSING_GUARANTEE", guarantee);
    w.set("PROCESSING_THREADS", "1");
    w.set("RETRY_BUDGET", "5s");
    {
        use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
        use rdkafka::client::DefaultClientContext;
        let admin: AdminClient<DefaultClientContext> = w.client_config().create().unwrap();
        let topic = w.topic("send-commands");
        let refusing =
            NewTopic::new(&topic, 1, TopicReplication::Fixed(1)).set("max.message.bytes", "120");
        for r in futures_executor::block_on(admin.create_topics([&refusing], &AdminOptions::new()))
            .unwrap()
        {
            r.unwrap();
        }
    }
    w.create_topics();
    w.publish(PROMO_CHAIN);
    let first = w.start("i0");
    first.wait_log("task restored", Duration::from_secs(60));
    w.send_events(&[interaction(
        "open-1",
        "ula",
        "free-shipping",
        PushDirectOpen,
        now_ms(),
    )]);
    let mut first = first;
    wait_for(
        "the instance to stop on the failed delivery",
        Duration::from_secs(90),
        || (!first.child_running()).then_some(()),
    );
    let log = first.log_text();
    assert!(
        log.contains("MessageSizeTooLarge"),
        "the stop does not say what failed:\n{log}"
    );
    if guarantee == "at_least_once" {
        assert!(
            log.contains("failed delivery") && log.contains(&w.topic("send-commands")),
            "the stop does not say which output failed:\n{log}"
        );
    }
    assert_ne!(first.stop(Duration::from_secs(5)), Some(0), "{log}");
    assert_eq!(
        w.send_commands().read_to_end(Duration::from_secs(30)).len(),
        0
    );

    set_topic_config(
        &w,
        &w.topic("send-commands"),
        "max.message.bytes",
        "1048576",
    );
    let second = w.start("i0");
    let mut commands = w.send_commands();
    commands.until_count(1, Duration::from_secs(60));
    commands.drain(Duration::from_secs(3));
    let sent = commands.commands();
    assert_eq!(sent.len(), 1, "{sent:?}");
    assert_eq!(sent[0].user_id, "ula");
    assert_eq!(second.stop(Duration::from_secs(60)), Some(0));
}

#[test]
fn at_least_once_never_commits_past_a_send_command_that_failed_delivery() {
    a_refused_send_command_is_never_committed_past("at_least_once");
}

#[test]
fn exactly_once_never_commits_past_a_send_command_that_failed_delivery() {
    a_refused_send_command_is_never_committed_past("exactly_once");
}
