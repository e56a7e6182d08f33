//! Event times at the edges of `i64`: the engine computes with any timestamp it is given
//! without panicking or wrapping around, refuses (untouched) events outside the event-time
//! range, and never schedules a send before its trigger or beyond the hard cap.
//!
//! ```text
//!  proptest ──► catalog: one follow-on per delay kind (zones, windows, re-eligibility,
//!               overdue bounds) ──► steps: triggers, exceptions, advances, each at an
//!               arbitrary i64 time and wall clock ──► Engine ──► checked after every step
//! ```

mod common;

use campaign_connector::engine::{Effect, Engine};
use campaign_connector::model::{
    CampaignStatus, DecisionOutcome, InputEvent, InteractionKind, PendingSendState, ReceiptState,
    TaskStateRecord, TimestampMs, TriggerRef, UserState, Weekday,
};
use campaign_connector::time::{
    check_event_range, format_timestamp, EventTimeError, DAY_SECONDS, MAX_EVENT_TIME,
    MAX_REELIGIBILITY_SECONDS, MIN_EVENT_TIME, SECOND_MS, TWO_YEARS_SECONDS,
};
use campaign_connector::validate::Limits;
use common::*;
use proptest::prelude::*;

const TWO_YEARS_MS: i64 = TWO_YEARS_SECONDS * SECOND_MS;
/// The instant that made `NEXT_WEEKDAY` panic: near the last date chrono can represent.
const NEAR_CHRONO_END: TimestampMs = 8_210_298_412_800_000;

use InteractionKind::{EmailOpen, EmailReceived};

fn two_year_limits() -> Limits {
    Limits::with_max_delay(TWO_YEARS_SECONDS).expect("the cap itself is allowed")
}

/// Processes `event` and checks that a refusal left the engine exactly as it was.
fn process_checked(
    engine: &mut Engine,
    event: &InputEvent,
    now: TimestampMs,
) -> Result<Vec<Effect>, EventTimeError> {
    let (clock, counters, state) = (
        engine.clock(),
        engine.counters().clone(),
        engine.export_all(),
    );
    let mut out = Vec::new();
    let result = engine.process(event, None, now, &mut out);
    assert_eq!(
        result,
        check_event_range(event.occurred_at()),
        "the engine refuses exactly the events outside the range"
    );
    match result {
        Ok(()) => Ok(out),
        Err(e) => {
            assert!(out.is_empty(), "a refused event emitted {out:?}");
            assert_eq!(engine.clock(), clock, "a refused event moved the clock");
            assert_eq!(engine.counters(), &counters, "a refused event was counted");
            assert_eq!(engine.export_all(), state, "a refused event changed state");
            Err(e)
        }
    }
}

/// Every due time in `out` is at or after its trigger, within the hard cap (plus up to a
/// day for a local time of day), and writable as RFC 3339.
fn check_due_times(out: &[Effect]) {
    for effect in out {
        let (triggered_at, due_at) = match effect {
            Effect::Send(s) => (Some(s.trigger.occurred_at), s.due_at),
            Effect::Decision(d) if d.outcome == DecisionOutcome::Scheduled => match d.due_at {
                Some(due) => (trigger_time(d.trigger_event_id.as_deref()), due),
                None => panic!("a scheduled decision without a due time: {d:?}"),
            },
            _ => continue,
        };
        let Some(triggered_at) = triggered_at else {
            continue;
        };
        assert!(
            due_at >= triggered_at,
            "due {due_at} before its trigger at {triggered_at}: {effect:?}"
        );
        assert!(
            due_at - triggered_at <= TWO_YEARS_MS + DAY,
            "due {due_at} beyond the hard cap after {triggered_at}: {effect:?}"
        );
        assert!(
            format_timestamp(due_at).ends_with('Z'),
            "due {due_at} is not writable as RFC 3339"
        );
    }
}

/// Event ids carry their time (`e<n>@<t>`), so a scheduled decision names its trigger time.
fn trigger_time(event_id: Option<&str>) -> Option<TimestampMs> {
    event_id?.split_once('@')?.1.parse().ok()
}

fn event_id(n: usize, t: TimestampMs) -> String {
    format!("e{n}@{t}")
}

// =========================================================================== reported cases

#[test]
fn next_weekday_for_an_interaction_near_the_end_of_chrono_is_refused_not_a_panic() {
    let mut w = World::with_limits(two_year_limits());
    w.apply(campaign("c"));
    w.apply(
        follow_on("f", "c", &[EmailReceived])
            .next_weekday(Weekday::Monday, "09:00")
            .zone("Europe/Berlin"),
    );
    w.on(interaction("e1", "u", "c", EmailReceived, T0));
    let event = interaction("e2", "u", "c", EmailReceived, NEAR_CHRONO_END);
    let e = process_checked(&mut w.engine, &event, T0).unwrap_err();
    assert_eq!(e.class(), "timestamp_out_of_range");
    assert!(e.to_string().contains("8210298412800000"), "{e}");
    assert_eq!(w.engine.clock(), Some(T0));
    assert_eq!(w.engine.pending_count(), 1, "e1's send is still pending");
}

#[test]
fn after_near_i64_max_is_refused_instead_of_wrapping_to_a_send_at_once() {
    let mut w = World::with_limits(two_year_limits());
    w.apply(campaign("c"));
    w.apply(follow_on("f", "c", &[EmailReceived]).after(DAY));
    for t in [i64::MAX, i64::MAX - DAY + 1, MAX_EVENT_TIME + 1] {
        let event = interaction("e1", "u", "c", EmailReceived, t);
        let e = process_checked(&mut w.engine, &event, T0).unwrap_err();
        assert_eq!(e.class(), "timestamp_out_of_range");
    }
    assert_eq!(w.engine.clock(), None);
    assert_eq!(w.engine.pending_count(), 0);
}

#[test]
fn the_longest_delay_from_the_last_event_time_is_scheduled_not_wrapped() {
    let mut w = World::with_limits(two_year_limits());
    w.apply(campaign("c"));
    w.apply(follow_on("f", "c", &[EmailReceived]).after(TWO_YEARS_MS));
    w.apply(
        follow_on("g", "c", &[EmailReceived])
            .calendar_days(730, "23:59")
            .zone("Pacific/Pago_Pago"),
    );
    let event = interaction("e1@0", "u", "c", EmailReceived, MAX_EVENT_TIME);
    let out = process_checked(&mut w.engine, &event, MAX_EVENT_TIME).unwrap();
    assert!(!out.iter().any(|e| matches!(e, Effect::Send(_))), "{out:?}");
    assert_eq!(
        log(&out)
            .iter()
            .filter(|l| l.starts_with("SCHEDULED"))
            .count(),
        2,
        "{out:?}"
    );
    let state = w.engine.export_user("u").expect("pending sends");
    let dues: Vec<String> = state.pending.iter().map(|p| at(p.due_at)).collect();
    assert_eq!(
        dues,
        ["9001-12-31T23:59:59.999Z", "9002-01-01T10:59:00Z"],
        "AFTER 730d, and 730 local days later at 23:59 in UTC-11"
    );
}

#[test]
fn advancing_to_either_end_of_i64_fires_and_applies_the_overdue_bound_without_overflow() {
    let mut w = World::with_limits(two_year_limits());
    w.apply(campaign("c"));
    w.apply(
        follow_on("f", "c", &[EmailReceived])
            .after(DAY)
            .drop_if_late_by(HOUR),
    );
    w.on(interaction("e1", "ann", "c", EmailReceived, T0));
    w.on(interaction("e2", "bob", "c", EmailReceived, T0 + HOUR));
    // The wall clock at the far past: not late at all, so ann's send goes out.
    let out = w.advance_at(T0 + DAY, i64::MIN);
    assert_eq!(
        log(&out)
            .iter()
            .filter(|l| l.starts_with("send"))
            .collect::<Vec<_>>(),
        ["send ann f@v1 tpl-f trigger=e1 due=2026-11-03T10:00:00Z"]
    );
    // The wall clock at the far future: bob's send is later than any bound, so dropped.
    let out = w.advance_at(i64::MAX, i64::MAX);
    assert!(
        log(&out)
            .iter()
            .any(|l| l.starts_with("DROPPED overdue bob")),
        "{out:?}"
    );
    assert_eq!(w.engine.clock(), Some(i64::MAX));
    let out = w.advance_at(i64::MIN, i64::MIN);
    assert!(out.is_empty(), "{out:?}");
    assert_eq!(
        w.engine.clock(),
        Some(i64::MAX),
        "the clock never goes back"
    );
}

#[test]
fn restored_times_at_the_ends_of_i64_neither_panic_nor_wrap() {
    let mut w = World::with_limits(two_year_limits());
    w.apply(campaign("c"));
    w.apply(
        follow_on("f", "c", &[EmailReceived])
            .after(DAY)
            .reeligible_after(MAX_REELIGIBILITY_SECONDS * SECOND_MS)
            .except(on(&[EmailOpen])),
    );
    let pending = |user: &str, due_at, occurred_at| UserState {
        user_id: user.into(),
        pending: vec![PendingSendState {
            follow_on_id: "f".into(),
            follow_on_version: 1,
            trigger: TriggerRef {
                campaign_id: "c".into(),
                kind: EmailReceived,
                event_id: format!("t-{user}"),
                occurred_at,
            },
            due_at,
        }],
        receipts: vec![],
    };
    let record = |user| TaskStateRecord {
        user: Some(user),
        rule: None,
        progress: None,
    };
    w.engine
        .restore(&record(pending("ann", i64::MAX, i64::MIN)))
        .unwrap();
    w.engine
        .restore(&record(pending("bob", i64::MIN, i64::MIN)))
        .unwrap();
    w.engine
        .restore(&record(UserState {
            user_id: "cyd".into(),
            pending: vec![],
            receipts: vec![ReceiptState {
                follow_on_id: "f".into(),
                last_sent_at: i64::MAX,
            }],
        }))
        .unwrap();
    // An exception inside [MIN, MAX) cancels ann's send; bob's is due at once.
    let out = w.on(interaction("x", "ann", "c", EmailOpen, T0));
    let lines = log(&out);
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("CANCELLED exception ann")),
        "{lines:?}"
    );
    assert!(lines.iter().any(|l| l.starts_with("send bob")), "{lines:?}");
    // Re-eligible "720 days after the end of time" is never: no wrap to the past.
    let out = w.on(interaction("y", "cyd", "c", EmailReceived, T0));
    assert!(
        log(&out)
            .iter()
            .any(|l| l.starts_with("IGNORED not_reeligible cyd")),
        "{out:?}"
    );
}

// =========================================================================== property

/// Timestamps anywhere in `i64`, weighted towards the places where arithmetic breaks.
fn any_time() -> impl Strategy<Value = TimestampMs> {
    prop_oneof![
        2 => any::<i64>(),
        1 => prop::sample::select(vec![
            i64::MIN,
            i64::MIN + 1,
            -1,
            MIN_EVENT_TIME,
            MAX_EVENT_TIME,
            MAX_EVENT_TIME + 1,
            NEAR_CHRONO_END,
            i64::MAX - 1,
            i64::MAX,
        ]),
        1 => (-DAY..=DAY).prop_map(|d| MIN_EVENT_TIME.saturating_add(d)),
        1 => (-3 * TWO_YEARS_MS..=DAY).prop_map(|d| MAX_EVENT_TIME.saturating_add(d)),
        1 => (-DAY..=0i64).prop_map(|d| i64::MAX.saturating_add(d)),
        1 => (0..=60 * DAY).prop_map(|d| T0 + d / HOUR * HOUR),
        1 => MIN_EVENT_TIME..=MAX_EVENT_TIME,
    ]
}

const ZONES: [Option<&str>; 10] = [
    None,
    Some("UTC"),
    Some("Europe/Berlin"),
    Some("Pacific/Kiritimati"),
    Some("Pacific/Pago_Pago"),
    Some("Pacific/Apia"),
    Some("Australia/Lord_Howe"),
    Some("America/St_Johns"),
    Some("Asia/Kathmandu"),
    Some("Not/AZone"),
];

fn zone() -> impl Strategy<Value = Option<&'static str>> {
    prop::sample::select(ZONES.to_vec())
}

fn weekday() -> impl Strategy<Value = Weekday> {
    prop::sample::select(vec![
        Weekday::Monday,
        Weekday::Tuesday,
        Weekday::Wednesday,
        Weekday::Thursday,
        Weekday::Friday,
        Weekday::Saturday,
        Weekday::Sunday,
    ])
}

fn local_time() -> impl Strategy<Value = String> {
    (0u32..24, 0u32..60).prop_map(|(h, m)| format!("{h:02}:{m:02}"))
}

/// What every follow-on shares: window, re-eligibility, repeat policy, overdue bound.
#[derive(Debug, Clone)]
struct Policies {
    window: (
        Option<TimestampMs>,
        Option<TimestampMs>,
        Option<TimestampMs>,
    ),
    reeligible_after_s: Option<i64>,
    restart: bool,
    drop_if_late_by_s: Option<i64>,
}

fn policies() -> impl Strategy<Value = Policies> {
    (
        (
            prop::option::of(any_time()),
            prop::option::of(any_time()),
            prop::option::of(any_time()),
        ),
        prop::option::of(1..=MAX_REELIGIBILITY_SECONDS),
        any::<bool>(),
        prop::option::of(prop_oneof![0..=DAY_SECONDS, Just(i64::MAX)]),
    )
        .prop_map(|((published, a, b), reeligible, restart, late)| {
            // Validation wants ends_at after starts_at.
            let (starts, ends) = match (a, b) {
                (Some(a), Some(b)) if a == b => (Some(a), None),
                (Some(a), Some(b)) => (Some(a.min(b)), Some(a.max(b))),
                other => other,
            };
            Policies {
                window: (published, starts, ends),
                reeligible_after_s: reeligible,
                restart,
                drop_if_late_by_s: late,
            }
        })
}

fn with_policies(mut f: CampaignBuilder, p: &Policies) -> CampaignBuilder {
    f = f
        .published_at(p.window.0)
        .except(on(&[EmailOpen]))
        .except(purchase());
    if let Some(s) = p.window.1 {
        f = f.starts_at(s);
    }
    if let Some(e) = p.window.2 {
        f = f.ends_at(e);
    }
    if let Some(s) = p.reeligible_after_s {
        f = f.reeligible_after(s * SECOND_MS);
    }
    if p.restart {
        f = f.restart();
    }
    if let Some(s) = p.drop_if_late_by_s {
        // The builder takes milliseconds; the rule keeps whole seconds.
        let mut built = f.drop_if_late_by(0);
        if let Some(rule) = built.0.follow_on.as_mut() {
            rule.overdue.seconds = Some(s);
        }
        f = built;
    }
    f
}

/// One follow-on of every delay kind, all triggered by `EMAIL_RECEIVED` on `c`.
fn catalog() -> impl Strategy<Value = Vec<CampaignBuilder>> {
    (
        policies(),
        (1..=TWO_YEARS_SECONDS, policies()),
        (weekday(), local_time(), zone(), policies()),
        (1..=730i32, local_time(), zone(), policies()),
    )
        .prop_map(|(now, (after_s, ap), (wd, wt, wz, wp), (n, ct, cz, cp))| {
            let f = |id| follow_on(id, "c", &[EmailReceived]);
            let mut week = f("week").next_weekday(wd, &wt);
            if let Some(z) = wz.filter(|z| !z.starts_with("Not/")) {
                week = week.zone(z);
            }
            let mut days = f("days").calendar_days(n, &ct);
            if let Some(z) = cz.filter(|z| !z.starts_with("Not/")) {
                days = days.zone(z);
            }
            let mut immediate = with_policies(f("now"), &now);
            // Exceptions need a delay.
            if let Some(rule) = immediate.0.follow_on.as_mut() {
                rule.exceptions.clear();
            }
            vec![
                campaign("c"),
                immediate,
                with_policies(f("after").after(after_s * SECOND_MS), &ap),
                with_policies(week, &wp),
                with_policies(days, &cp),
            ]
        })
}

#[derive(Debug, Clone)]
enum Step {
    Trigger {
        user: usize,
        time: TimestampMs,
        zone: Option<&'static str>,
    },
    Open {
        user: usize,
        time: TimestampMs,
    },
    Purchase {
        user: usize,
        time: TimestampMs,
    },
    Advance {
        time: TimestampMs,
    },
}

fn step() -> impl Strategy<Value = (Step, TimestampMs)> {
    let user = 0usize..3;
    let step = prop_oneof![
        3 => (user.clone(), any_time(), zone())
            .prop_map(|(user, time, zone)| Step::Trigger { user, time, zone }),
        1 => (user.clone(), any_time()).prop_map(|(user, time)| Step::Open { user, time }),
        1 => (user, any_time()).prop_map(|(user, time)| Step::Purchase { user, time }),
        1 => any_time().prop_map(|time| Step::Advance { time }),
    ];
    (step, any_time())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(
        std::env::var("PROPTEST_CASES").ok().and_then(|n| n.parse().ok()).unwrap_or(256)
    ))]

    /// Any i64 for event times and the wall clock, every delay kind: no panic; events out of
    /// range are refused untouched; every due time is at or after its trigger and within
    /// the hard cap.
    #[test]
    fn any_timestamp_is_computed_with_or_refused_untouched(
        campaigns in catalog(),
        steps in prop::collection::vec(step(), 1..40),
    ) {
        let mut engine = Engine::new(two_year_limits());
        let mut out = Vec::new();
        for c in campaigns {
            let c = c.build();
            // A window the validator refuses is a catalog record the engine never takes.
            let _ = engine.apply_campaign(&c, T0, &mut out);
        }
        let users = ["ann", "bob", "cyd"];
        for (n, (step, now)) in steps.into_iter().enumerate() {
            let event = match step {
                Step::Trigger { user, time, zone } => {
                    let e = interaction(&event_id(n, time), users[user], "c", EmailReceived, time);
                    match zone {
                        Some(z) => e.zone(z),
                        None => e,
                    }
                }
                Step::Open { user, time } => {
                    interaction(&event_id(n, time), users[user], "c", EmailOpen, time)
                }
                Step::Purchase { user, time } => {
                    bought(&event_id(n, time), users[user], "p", time)
                }
                Step::Advance { time } => {
                    let before = engine.clock();
                    out.clear();
                    engine.advance_to(time, now, &mut out);
                    let after = engine.clock();
                    prop_assert_eq!(after, Some(before.map_or(time, |b| b.max(time))));
                    check_due_times(&out);
                    for e in &out {
                        if let Effect::Send(s) = e {
                            prop_assert!(Some(s.due_at) <= after, "fired before due: {:?}", s);
                        }
                    }
                    continue;
                }
            };
            if let Ok(effects) = process_checked(&mut engine, &event, now) {
                check_due_times(&effects);
            }
        }
    }
}

#[test]
fn a_status_change_at_an_extreme_wall_clock_drops_pending_sends_without_panic() {
    let mut w = World::with_limits(two_year_limits());
    w.apply(campaign("c"));
    w.apply(follow_on("f", "c", &[EmailReceived]).after(DAY));
    w.on(interaction("e1", "u", "c", EmailReceived, T0));
    let out = w.apply_at(
        follow_on("f", "c", &[EmailReceived])
            .after(DAY)
            .version(2)
            .status(CampaignStatus::Stopped),
        i64::MIN,
    );
    assert!(
        log(&out)
            .iter()
            .any(|l| l.starts_with("DROPPED follow_on_inactive u")),
        "{out:?}"
    );
}
