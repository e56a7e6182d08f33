//! The runtime's rules without a broker: scripted assignments, positions, high watermarks,
//! errors and a fake clock, like the engine's tests.

use std::collections::{BTreeMap, BTreeSet};

use campaign_connector::codec::{EncodeError, RegistryError};
use campaign_connector::runtime::error::{kafka_disposition, recovery, Recovery, RuntimeError};
use campaign_connector::runtime::rules::*;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};

const INTERACTIONS: usize = 0;
const USER_EVENTS: usize = 1;

fn parts(rank: usize, partitions: &[i32]) -> Vec<(usize, i32)> {
    partitions.iter().map(|&p| (rank, p)).collect()
}

// ------------------------------------------------------------------------------ ownership

#[test]
fn a_task_exists_only_when_every_input_partition_is_assigned() {
    let mut o = Ownership::default();
    // What cooperative-sticky handed out under churn: interactions without user events.
    o.assign(parts(INTERACTIONS, &[0, 1, 2, 4, 6]));
    assert!(o.complete_tasks().is_empty(), "half tasks are never tasks");
    assert_eq!(o.incomplete().len(), 5, "held paused instead");

    o.assign(parts(USER_EVENTS, &[1, 4]));
    assert_eq!(o.complete_tasks(), BTreeSet::from([1, 4]));
    assert_eq!(
        o.incomplete(),
        BTreeSet::from([(INTERACTIONS, 0), (INTERACTIONS, 2), (INTERACTIONS, 6)])
    );

    // Losing one side of a task ends the task.
    o.revoke([(USER_EVENTS, 4)]);
    assert_eq!(o.complete_tasks(), BTreeSet::from([1]));
    assert!(o.incomplete().contains(&(INTERACTIONS, 4)));

    o.clear();
    assert!(o.complete_tasks().is_empty());
    assert!(o.incomplete().is_empty());
}

// ------------------------------------------------------------------------------ restore

#[test]
fn a_restore_is_done_only_when_the_position_reaches_the_captured_high_watermark() {
    let mut r = RestoreProgress::new(1_000);
    assert!(!r.done(), "no high watermark yet: never done");
    r.position(0);
    assert!(
        !r.done(),
        "an empty read before the watermark is known is not proof"
    );

    r.target = Some(5);
    for offset in 0..3 {
        r.record(offset);
    }
    assert_eq!((r.position, r.records, r.remaining()), (3, 3, Some(2)));
    assert!(!r.done());

    // A predecessor's open transaction holds the read_committed position at 3: waiting
    // any length of time changes nothing.
    r.position(3);
    assert!(!r.done());

    // The transaction was aborted; its marker at offset 4 moves the position without a
    // record.
    r.position(5);
    assert!(r.done());
    assert_eq!(r.records, 3);
    assert_eq!(r.remaining(), Some(0));
}

#[test]
fn an_empty_changelog_restores_at_once_once_its_watermark_is_known() {
    let mut r = RestoreProgress::new(0);
    r.target = Some(0);
    assert!(r.done());
}

#[test]
fn positions_never_move_backwards() {
    let mut r = RestoreProgress::new(0);
    r.record(9);
    r.position(4);
    assert_eq!(r.position, 10);
}

// ------------------------------------------------------------------------------ inputs

#[test]
fn an_input_is_at_its_end_only_with_nothing_buffered_and_the_position_at_the_watermark() {
    assert!(input_at_end(0, Some(10), Some(10)));
    assert!(input_at_end(0, Some(11), Some(10)));
    assert!(!input_at_end(1, Some(10), Some(10)), "buffered records");
    assert!(
        !input_at_end(0, Some(9), Some(10)),
        "records still to fetch"
    );
    assert!(!input_at_end(0, Some(10), None), "watermark unknown");
    assert!(!input_at_end(0, None, Some(10)), "position unknown");
    assert!(input_at_end(0, None, Some(0)), "an empty partition");
}

#[test]
fn an_empty_input_is_passed_by_only_once_the_broker_confirmed_it_after_the_other_inputs_records() {
    // Records of the other input arrived (numbers up to 7); the last confirmation covered 5.
    assert!(needs_confirmation(true, Some(7), 5));
    assert!(!needs_confirmation(true, Some(5), 5), "already confirmed");
    assert!(
        !needs_confirmation(true, None, 0),
        "nothing to pass it by for"
    );
    assert!(
        !needs_confirmation(false, Some(7), 0),
        "not at its end: the merge waits anyway"
    );
}

#[test]
fn a_quiet_input_is_confirmed_at_most_once_per_interval_so_records_gather() {
    assert_eq!(confirm_at(0, 1_000), None, "never asked: ask now");
    assert_eq!(confirm_at(1_000, 1_004), Some(1_000 + CONFIRM_INTERVAL_MS));
    assert_eq!(confirm_at(1_000, 1_000 + CONFIRM_INTERVAL_MS), None);
}

#[test]
fn backpressure_pauses_only_an_input_held_by_its_sibling_and_resumes_when_it_is_not() {
    let b = Backpressure {
        per_input: 100,
        held_max: 400,
    };
    // An input the merge can go on taking from keeps running, however much is buffered:
    // a pause would drop the client's prefetch of it.
    assert_eq!(b.decide(10_000, false, false), Flow::Keep);
    // Held by a sibling with nothing buffered: paused above the held bound only.
    assert_eq!(b.decide(400, false, true), Flow::Keep);
    assert_eq!(b.decide(401, false, true), Flow::Pause);
    // Paused: resumed as soon as the sibling's records came, or once drained below half
    // the per-input budget, and not in between (no flapping).
    assert_eq!(b.decide(300, true, false), Flow::Resume);
    assert_eq!(b.decide(60, true, true), Flow::Keep);
    assert_eq!(b.decide(49, true, true), Flow::Resume);
    assert_eq!(b.decide(0, false, true), Flow::Keep);
}

#[test]
fn a_member_over_its_budget_polls_less_unless_a_task_waits_for_an_input() {
    let b = Backpressure {
        per_input: 100,
        held_max: 400,
    };
    assert!(!b.over_budget(599, 6, false));
    assert!(b.over_budget(600, 6, false));
    assert!(
        !b.over_budget(10_000, 6, true),
        "a held task's records come through the same poll"
    );
    assert!(b.over_budget(100, 0, false), "no inputs: the budget of one");
}

// ------------------------------------------------------------------------------ the loop

#[test]
fn commits_follow_the_interval_on_a_fake_clock() {
    let mut c = CommitCadence::new(100, 1_000);
    assert!(!c.due(1_050));
    assert!(c.due(1_100));
    c.committed(1_130);
    assert_eq!(c.next_at(), 1_230);
    assert!(!c.due(1_229));
    assert!(c.due(1_230));
}

#[test]
fn sends_fired_by_the_wall_clock_are_committed_without_waiting_for_the_interval() {
    let mut c = CommitCadence::new(1_000, 1_000);
    assert!(!c.due(1_050));
    c.hurry();
    assert_eq!(c.next_at(), 1_000 + URGENT_GAP_MS);
    assert!(!c.due(1_000 + URGENT_GAP_MS - 1));
    assert!(c.due(1_050));
    // The commit ends the hurry: the next one keeps the interval again.
    c.committed(1_060);
    assert_eq!(c.next_at(), 2_060);
    assert!(!c.due(1_500));
}

#[test]
fn a_send_emitted_on_time_is_awaited_and_one_long_past_due_is_not() {
    let due = 1_767_225_600_000;
    // A task keeping up with live input fires by stream time, a little after the due time.
    assert!(awaited(due, due));
    assert!(awaited(due, due + 85));
    assert!(awaited(due, due + AWAITED_LATENESS_MS));
    // A backlog (restart, replay, lag) fires sends due long before: the interval stands.
    assert!(!awaited(due, due + AWAITED_LATENESS_MS + 1));
    assert!(!awaited(due, due + 86_400_000));
    // A clock behind the due time (fired by stream time ahead of the wall clock).
    assert!(awaited(due, due - 5_000));
    // Extremes do not overflow.
    assert!(!awaited(i64::MIN, i64::MAX));
}

#[test]
fn the_loop_blocks_until_its_next_duty_instead_of_spinning() {
    let now = 10_000;
    assert_eq!(
        poll_timeout_ms(&Wakeup::idle(), now, 100),
        100,
        "idle: the cap"
    );
    assert_eq!(
        poll_timeout_ms(
            &Wakeup {
                runnable: true,
                ..Wakeup::idle()
            },
            now,
            100
        ),
        0,
        "records to process: no wait"
    );
    // A merge waiting 500 ms for an empty input does not make the loop spin.
    let waiting = Wakeup {
        merge_deadline: Some(now + 500),
        ..Wakeup::idle()
    };
    assert_eq!(poll_timeout_ms(&waiting, now, 100), 100);
    assert_eq!(poll_timeout_ms(&waiting, now + 460, 100), 40);
    assert_eq!(
        poll_timeout_ms(&waiting, now + 600, 100),
        0,
        "deadline passed"
    );
    // The earliest duty wins.
    let w = Wakeup {
        merge_deadline: Some(now + 80),
        next_due: Some(now + 30),
        commit_at: Some(now + 50),
        retry_at: Some(now + 70),
        ..Wakeup::idle()
    };
    assert_eq!(poll_timeout_ms(&w, now, 100), 30);
    let restoring = Wakeup {
        restoring: true,
        ..Wakeup::idle()
    };
    assert!(
        poll_timeout_ms(&restoring, now, 100) <= 10,
        "restores are stepped often"
    );
}

// ------------------------------------------------------------------------------ failures

#[test]
fn backoff_grows_with_jitter_up_to_its_bound_and_resets() {
    let mut b = Backoff::new(100, 2_000, 42);
    let delays: Vec<i64> = (0..8).map(|_| b.next_delay_ms()).collect();
    for (i, d) in delays.iter().enumerate() {
        let step = (100i64 << i).min(2_000);
        assert!(
            (step / 2..=step).contains(d),
            "attempt {i}: {d} ms not within [{}, {step}]",
            step / 2
        );
    }
    assert!(delays[7] >= 1_000, "bounded, not stuck small");
    assert_eq!(b.attempts(), 8);
    b.reset();
    assert!(b.next_delay_ms() <= 100);
    // Deterministic per seed, different between seeds (instances do not retry in step).
    let run = |seed| {
        let mut b = Backoff::new(100, 60_000, seed);
        (0..6).map(|_| b.next_delay_ms()).collect::<Vec<_>>()
    };
    assert_eq!(run(7), run(7));
    assert_ne!(run(7), run(8));
}

#[test]
fn the_same_failure_past_the_budget_stops_but_transient_trouble_is_ridden_out() {
    let mut budget = RetryBudget::new(10, 60_000);
    // A broker restart: twenty failures within 20 s, then success.
    for i in 0..20 {
        assert!(budget.failed("commit: transport", i * 1_000), "attempt {i}");
    }
    budget.succeeded();
    assert_eq!(budget.streak(), 0);

    // Many attempts but within the span: still retrying.
    for i in 0..50 {
        assert!(budget.failed("commit: fenced", 100_000 + i * 100));
    }
    // Past the span, with enough attempts: give up.
    assert!(!budget.failed("commit: fenced", 100_000 + 61_000));

    // Over the span but too few attempts: one slow failure is not a loop.
    let mut slow = RetryBudget::new(10, 60_000);
    assert!(slow.failed("x", 0));
    assert!(slow.failed("x", 120_000));
    // A different failure starts a new streak.
    let mut b = RetryBudget::new(2, 0);
    assert!(b.failed("a", 0));
    assert!(b.failed("b", 0));
    assert!(!b.failed("b", 0));
}

#[test]
fn errors_say_what_the_caller_does() {
    let kafka = |code| RuntimeError::Kafka {
        during: "committing the transaction",
        source: KafkaError::MessageProduction(code),
    };
    use RDKafkaErrorCode as C;
    for code in [
        C::BrokerTransportFailure,
        C::AllBrokersDown,
        C::RequestTimedOut,
        C::NotCoordinator,
        C::CoordinatorLoadInProgress,
        C::NotLeaderForPartition,
        C::ProducerFenced,
        C::IllegalGeneration,
    ] {
        assert_eq!(kafka(code).disposition(), Disposition::Retry, "{code:?}");
    }
    for code in [
        C::Authentication,
        C::SaslAuthenticationFailed,
        C::TopicAuthorizationFailed,
        C::MessageSizeTooLarge,
    ] {
        assert_eq!(kafka(code).disposition(), Disposition::Stop, "{code:?}");
    }
    assert_eq!(
        kafka_disposition(&KafkaError::MessageProduction(C::QueueFull)),
        Disposition::Retry
    );
    // Not a transaction error: the transaction is aborted and the tasks rewound.
    assert_eq!(recovery(&kafka(C::BrokerTransportFailure)), Recovery::Abort);

    let unavailable = RuntimeError::Encode {
        record: "send-command",
        topic: "send-commands".into(),
        source: Box::new(EncodeError::RegistryUnavailable(
            RegistryError::Unreachable {
                url: "http://127.0.0.1:1".into(),
                message: "connection refused".into(),
            },
        )),
    };
    assert_eq!(unavailable.disposition(), Disposition::Retry);
    let misfit = RuntimeError::Encode {
        record: "send-command",
        topic: "send-commands".into(),
        source: Box::new(EncodeError::Avro {
            record: "SendCommand".into(),
            message: "field channel: not an enum symbol".into(),
        }),
    };
    assert_eq!(misfit.disposition(), Disposition::Stop);
    assert!(
        misfit.to_string().contains("send-commands"),
        "names where: {misfit}"
    );
    // The budget recognises the same failure at different offsets.
    let at = |offset| RuntimeError::Restore {
        topic: "changelog".into(),
        partition: 3,
        offset,
        message: "bad".into(),
    };
    assert_eq!(at(1).signature(), at(2).signature());
}

// ------------------------------------------------------------------------------ readiness

#[test]
fn ready_means_joined_assigned_and_restored() {
    let none = BTreeMap::new();
    assert!(matches!(
        readiness(false, true, 0, &none),
        Readiness::NotReady(_)
    ));
    assert_eq!(
        readiness(true, false, 0, &none),
        Readiness::NotReady("joining the consumer group".into())
    );
    let mut restoring = BTreeMap::new();
    let mut r = RestoreProgress::new(0);
    r.target = Some(1_000);
    for offset in 0..250 {
        r.record(offset);
    }
    restoring.insert(3, r);
    match readiness(true, true, 0, &restoring) {
        Readiness::NotReady(why) => {
            assert!(why.contains("restoring 1 task"), "{why}");
            assert!(
                why.contains("250 changelog records read, 750 to go"),
                "{why}"
            );
        }
        Readiness::Ready => panic!("ready while restoring"),
    }
    assert!(matches!(
        readiness(true, true, 2, &none),
        Readiness::NotReady(_)
    ));
    assert_eq!(readiness(true, true, 0, &none), Readiness::Ready);
}

#[test]
fn a_suspended_task_resumes_only_over_its_own_commits_marker() {
    // Exactly-once: its own commit's marker may land after the watermark was read.
    assert!(suspended_changelog_unchanged(Some(40), Some(40), 1));
    assert!(suspended_changelog_unchanged(Some(40), Some(41), 1));
    // Another owner's transaction: a record and its marker at least.
    assert!(!suspended_changelog_unchanged(Some(40), Some(42), 1));
    // At-least-once writes no markers: any growth is somebody else's.
    assert!(suspended_changelog_unchanged(Some(40), Some(40), 0));
    assert!(!suspended_changelog_unchanged(Some(40), Some(41), 0));
    // Unknown is changed.
    assert!(!suspended_changelog_unchanged(None, Some(40), 1));
    assert!(!suspended_changelog_unchanged(Some(40), None, 1));
}
