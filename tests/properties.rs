//! Property tests of the engine (SPEC §3) against a naive reference model.
//!
//! ```text
//!  proptest ──► Scenario { catalog, steps: [event | catalog change] }
//!                  │
//!                  ├─► Driver<Engine>     ─┐  the same driver for both: before a step at time t,
//!                  └─► Driver<Reference>  ─┴─ advance to every due time <= t (now = due time
//!                                             plus the step's lag), then the step; at the end,
//!                                             advance through every remaining timer.
//! ```
//!
//! The reference model lives in `tests/reference/mod.rs`. Generated campaigns use `AFTER`
//! and `IMMEDIATE` delays, plus `CALENDAR_DAYS` / `NEXT_WEEKDAY` in fixed-offset zones; event
//! times sit on a coarse grid so that windows, due times and events collide often. Streams
//! carry redelivered events, equal timestamps, catalog edits (status, rule, window, removal,
//! stale versions), and, in some cases, records out of event-time order and a wall clock
//! running behind (`lag`, for `DROP_IF_LATE_BY`).
//!
//! `cargo test --test properties -- --ignored --nocapture generator_coverage` prints how
//! often the generators reach each decision; `PROPTEST_CASES=5000` runs more cases.

mod reference;

use std::collections::BTreeMap;

use campaign_connector::engine::{Effect, Engine};
use campaign_connector::model::{
    Campaign, CampaignKind, CampaignStatus, Channel, Decision, DecisionOutcome, DecisionReason,
    Delay, DelayType, ExceptionMatcher, ExceptionType, FollowOnRule, InputEvent, Interaction,
    InteractionKind, Message, Overdue, OverduePolicy, Reeligibility, ReeligibilityPolicy,
    RepeatTrigger, SendCommand, TaskStateRecord, TimestampMs, Trigger, UserEvent, UserEventType,
    Weekday,
};
use campaign_connector::validate::Limits;
use proptest::prelude::*;
use proptest::sample::Index;
use reference::Reference;

/// Monday 2026-03-02T00:00:00Z.
const T0: TimestampMs = 1_772_409_600_000;
const UNIT_S: i64 = 30 * 60;
/// The time grid: 30 minutes.
const UNIT: TimestampMs = UNIT_S * 1_000;
const DAY: TimestampMs = 86_400_000;
const USERS: [&str; 4] = ["ann", "bob", "cyd", "dee"];

// =========================================================================== scenarios

/// A catalog record: a campaign version, or a tombstone.
#[derive(Debug, Clone)]
#[allow(clippy::large_enum_variant)] // test data: clarity over size
enum Change {
    Upsert(Campaign),
    Remove(String),
}

#[derive(Debug, Clone)]
#[allow(clippy::large_enum_variant)] // test data: clarity over size
enum Step {
    /// An input record, read when the wall clock is `lag` past its event time.
    Event { event: InputEvent, lag: TimestampMs },
    /// A catalog record, read when the task's wall clock is at `at` (+ `lag`).
    Catalog {
        at: TimestampMs,
        lag: TimestampMs,
        change: Change,
    },
}

impl Step {
    fn time(&self) -> TimestampMs {
        match self {
            Step::Event { event, .. } => event.occurred_at(),
            Step::Catalog { at, .. } => *at,
        }
    }
    fn lag(&self) -> TimestampMs {
        match self {
            Step::Event { lag, .. } | Step::Catalog { lag, .. } => *lag,
        }
    }
    fn event(&self) -> Option<&InputEvent> {
        match self {
            Step::Event { event, .. } => Some(event),
            Step::Catalog { .. } => None,
        }
    }
}

#[derive(Debug, Clone)]
struct Scenario {
    /// Applied before the first step.
    catalog: Vec<Campaign>,
    steps: Vec<Step>,
}

impl Scenario {
    /// Every campaign version the scenario mentions, by (id, version).
    fn versions(&self) -> BTreeMap<(String, i64), Campaign> {
        let upserts = self.steps.iter().filter_map(|s| match s {
            Step::Catalog {
                change: Change::Upsert(c),
                ..
            } => Some(c),
            _ => None,
        });
        self.catalog
            .iter()
            .chain(upserts)
            .map(|c| ((c.campaign_id.clone(), c.version), c.clone()))
            .collect()
    }

    /// The catalog a fresh task would read after the first `k` steps: the latest version of
    /// every campaign not deleted (older versions are ignored, as by the engine).
    fn catalog_after(&self, k: usize) -> Vec<Campaign> {
        let mut latest: Vec<Campaign> = self.catalog.clone();
        for step in &self.steps[..k] {
            match step {
                Step::Catalog {
                    change: Change::Upsert(c),
                    ..
                } => {
                    if let Some(known) = latest.iter_mut().find(|k| k.campaign_id == c.campaign_id)
                    {
                        if c.version >= known.version {
                            *known = c.clone();
                        }
                    } else {
                        latest.push(c.clone());
                    }
                }
                Step::Catalog {
                    change: Change::Remove(id),
                    ..
                } => latest.retain(|c| &c.campaign_id != id),
                Step::Event { .. } => {}
            }
        }
        latest
    }

    /// The scenario as one user sees it: that user's events and every catalog change.
    fn only_user(&self, user: &str) -> Scenario {
        let steps = self
            .steps
            .iter()
            .filter(|s| s.event().is_none_or(|e| e.user_id() == user))
            .cloned()
            .collect();
        Scenario {
            catalog: self.catalog.clone(),
            steps,
        }
    }

    fn users(&self) -> Vec<String> {
        let mut users: Vec<String> = self
            .steps
            .iter()
            .filter_map(|s| s.event().map(|e| e.user_id().to_string()))
            .collect();
        users.sort();
        users.dedup();
        users
    }
}

// =========================================================================== generators

const KIND_POOL: [InteractionKind; 4] = [
    InteractionKind::EmailReceived,
    InteractionKind::EmailOpen,
    InteractionKind::PushDirectOpen,
    InteractionKind::InAppMessageClick,
];

fn kinds() -> impl Strategy<Value = Vec<InteractionKind>> {
    prop::collection::vec(prop::sample::select(KIND_POOL.to_vec()), 1..=2)
}

/// Campaign ids a rule may name: mostly trigger campaigns, sometimes a follow-on (a chain),
/// sometimes one that is not in the catalog.
fn campaign_ref() -> impl Strategy<Value = String> {
    prop::sample::select(vec![
        "c1", "c1", "c1", "c1", "c1", "c1", "c2", "c2", "c2", "c2", "c3", "c4", "f1", "f2",
        "ghost", "c1", "c2",
    ])
    .prop_map(String::from)
}

/// Sundays more often: New York's clocks change on Sunday 2026-03-08.
fn weekday() -> impl Strategy<Value = Weekday> {
    prop::sample::select(vec![
        Weekday::Sunday,
        Weekday::Sunday,
        Weekday::Monday,
        Weekday::Tuesday,
        Weekday::Wednesday,
        Weekday::Thursday,
        Weekday::Friday,
        Weekday::Saturday,
        Weekday::Sunday,
    ])
}

fn delay() -> impl Strategy<Value = Delay> {
    let local_time = || {
        prop::sample::select(vec![
            "00:00", "02:30", "09:00", "09:30", "23:30", "12:00:30",
        ])
        .prop_map(String::from)
    };
    prop_oneof![
        2 => Just(Delay::immediate()),
        // Few distinct delays, so that sends often come due together.
        5 => prop::sample::select(vec![1i64, 2, 2, 4, 4, 6, 12])
            .prop_map(|m| Delay::after_seconds(m * UNIT_S)),
        1 => prop::sample::select(vec![1i64, 90, 86_400]).prop_map(Delay::after_seconds),
        1 => (1i32..=2, local_time()).prop_map(|(days, at)| Delay {
            delay_type: DelayType::CalendarDays,
            days: Some(days),
            local_time: Some(at),
            ..Delay::immediate()
        }),
        1 => (weekday(), local_time()).prop_map(|(weekday, at)| Delay {
            delay_type: DelayType::NextWeekday,
            weekday: Some(weekday),
            local_time: Some(at),
            ..Delay::immediate()
        }),
    ]
}

fn exception() -> impl Strategy<Value = ExceptionMatcher> {
    let none = ExceptionMatcher {
        exception_type: ExceptionType::SessionStart,
        campaign_id: None,
        interaction_kinds: vec![],
        name: None,
    };
    let on = prop::sample::select(vec![None, None, None, Some("c1"), Some("c2"), Some("f1")]);
    prop_oneof![
        4 => (on, kinds()).prop_map({
            let none = none.clone();
            move |(campaign, kinds)| ExceptionMatcher {
                exception_type: ExceptionType::Interaction,
                campaign_id: campaign.map(String::from),
                interaction_kinds: kinds,
                ..none.clone()
            }
        }),
        1 => prop::sample::select(vec!["ev1", "ev2"]).prop_map({
            let none = none.clone();
            move |name| ExceptionMatcher {
                exception_type: ExceptionType::CustomEvent,
                name: Some(name.into()),
                ..none.clone()
            }
        }),
        1 => prop::sample::select(vec![None, Some("p1")]).prop_map({
            let none = none.clone();
            move |product| ExceptionMatcher {
                exception_type: ExceptionType::Purchase,
                name: product.map(String::from),
                ..none.clone()
            }
        }),
        1 => Just(none),
    ]
}

fn rule() -> impl Strategy<Value = FollowOnRule> {
    let trigger = (
        campaign_ref(),
        kinds(),
        prop::sample::select(vec![None, None, None, Some("b1")]),
    )
        .prop_map(|(campaign_id, kinds, qualifier)| Trigger {
            campaign_id,
            kinds,
            qualifier: qualifier.map(String::from),
        });
    let zone = prop::sample::select(vec![
        None,
        None,
        Some("UTC"),
        Some("Asia/Kolkata"),
        Some("America/New_York"),
    ]);
    let reeligibility = prop_oneof![
        2 => Just(Reeligibility { policy: ReeligibilityPolicy::Never, seconds: None }),
        1 => prop::sample::select(vec![1i64, 2, 4, 8, 24]).prop_map(|m| Reeligibility {
            policy: ReeligibilityPolicy::After,
            seconds: Some(m * UNIT_S),
        }),
    ];
    let overdue = prop_oneof![
        2 => Just(Overdue { policy: OverduePolicy::Send, seconds: None }),
        1 => prop::sample::select(vec![0i64, 60, UNIT_S, 4 * UNIT_S]).prop_map(|s| Overdue {
            policy: OverduePolicy::DropIfLateBy,
            seconds: Some(s),
        }),
    ];
    let repeat = prop::sample::select(vec![RepeatTrigger::KeepFirst, RepeatTrigger::Restart]);
    let channel = prop::sample::select(vec![Channel::Email, Channel::Push, Channel::Webhook]);
    (
        trigger,
        delay(),
        zone,
        prop::collection::vec(exception(), 0..=3),
        reeligibility,
        repeat,
        overdue,
        channel,
        0u8..3,
    )
        .prop_map(
            |(trigger, delay, zone, exceptions, reeligibility, repeat, overdue, channel, tpl)| {
                let exceptions = if delay.delay_type == DelayType::Immediate {
                    vec![]
                } else {
                    exceptions
                };
                FollowOnRule {
                    trigger,
                    delay,
                    time_zone: zone.map(String::from),
                    exceptions,
                    reeligibility,
                    on_repeat_trigger: repeat,
                    overdue,
                    message: Message {
                        channel,
                        template_id: format!("tpl-{tpl}"),
                        payload: [("k".to_string(), format!("v{tpl}"))].into(),
                    },
                }
            },
        )
}

fn status() -> impl Strategy<Value = CampaignStatus> {
    prop::sample::select(vec![
        CampaignStatus::Active,
        CampaignStatus::Active,
        CampaignStatus::Active,
        CampaignStatus::Active,
        CampaignStatus::Active,
        CampaignStatus::Active,
        CampaignStatus::Active,
        CampaignStatus::Active,
        CampaignStatus::Active,
        CampaignStatus::Active,
        CampaignStatus::Draft,
        CampaignStatus::Stopped,
        CampaignStatus::Archived,
    ])
}

/// Trigger campaigns are nearly always active (the other statuses are still covered).
fn trigger_status() -> impl Strategy<Value = CampaignStatus> {
    prop_oneof![
        24 => Just(CampaignStatus::Active),
        1 => Just(CampaignStatus::Draft),
        1 => Just(CampaignStatus::Stopped),
        1 => Just(CampaignStatus::Archived),
    ]
}

/// `(published_at, starts_at, ends_at)`, valid (ends after starts).
type Window = (
    Option<TimestampMs>,
    Option<TimestampMs>,
    Option<TimestampMs>,
);

fn window() -> impl Strategy<Value = Window> {
    (
        prop::option::weighted(0.8, 0i64..=24),
        prop::option::weighted(0.3, 0i64..=48),
        prop::option::weighted(0.25, 1i64..=96),
    )
        .prop_map(|(published, starts, length)| {
            let starts_at = starts.map(|k| T0 + k * UNIT);
            (
                published.map(|k| T0 + k * UNIT),
                starts_at,
                length.map(|m| starts_at.unwrap_or(T0) + m * UNIT),
            )
        })
}

fn trigger_campaign(id: &str, status: CampaignStatus, news_feed: bool) -> Campaign {
    Campaign {
        backfill_since: None,
        mode: Default::default(),
        campaign_id: id.to_string(),
        name: format!("campaign {id}"),
        kind: if news_feed {
            CampaignKind::NewsFeedCard
        } else {
            CampaignKind::Campaign
        },
        status,
        version: 1,
        published_at: Some(T0 - DAY),
        starts_at: None,
        ends_at: None,
        follow_on: None,
    }
}

fn follow_on(id: &str, status: CampaignStatus, w: Window, rule: FollowOnRule) -> Campaign {
    Campaign {
        backfill_since: None,
        mode: Default::default(),
        campaign_id: id.to_string(),
        name: format!("follow-on {id}"),
        kind: CampaignKind::Campaign,
        status,
        version: 1,
        published_at: w.0,
        starts_at: w.1,
        ends_at: w.2,
        follow_on: Some(rule),
    }
}

/// A backfill start, in units before `published_at` (well inside the default 7 days).
fn backfill() -> impl Strategy<Value = Option<i64>> {
    prop::option::weighted(0.3, 1i64..=16)
}

/// `c` with a backfill start `units` before its publish time (none without either).
fn with_backfill(mut c: Campaign, units: Option<i64>) -> Campaign {
    c.backfill_since = match (&c.follow_on, c.published_at, units) {
        (Some(_), Some(p), Some(k)) => Some(p - k * UNIT),
        _ => None,
    };
    c
}

/// Whether a trigger at `t` is at or after `f`'s publish bound: `published_at`, or the
/// version's backfill start.
fn after_publish_bound(f: &Campaign, t: TimestampMs) -> bool {
    f.published_at.is_none_or(|p| t >= p) || f.backfill_since.is_some_and(|b| t >= b)
}

fn catalog() -> impl Strategy<Value = Vec<Campaign>> {
    (
        prop::collection::vec((trigger_status(), prop::bool::weighted(0.2)), 2..=4),
        prop::collection::vec((status(), window(), rule(), backfill()), 1..=3),
    )
        .prop_map(|(triggers, follow_ons)| {
            let triggers = triggers
                .into_iter()
                .enumerate()
                .map(|(n, (s, feed))| trigger_campaign(&format!("c{}", n + 1), s, feed));
            let follow_ons = follow_ons.into_iter().enumerate().map(|(n, (s, w, r, b))| {
                with_backfill(follow_on(&format!("f{}", n + 1), s, w, r), b)
            });
            triggers.chain(follow_ons).collect()
        })
}

#[derive(Debug, Clone)]
enum Edit {
    Status(CampaignStatus),
    /// A new rule (follow-ons only; a no-op edit of a trigger campaign).
    Rule(Box<FollowOnRule>),
    /// The campaign is no longer a follow-on (its rule is removed).
    Unfollow,
    Window(Window),
    /// A new version with (or without) a backfill start, in units before publish.
    Backfill(Option<i64>),
    Remove,
    /// The previous version's record again (ignored while a newer version is known).
    Stale,
}

#[derive(Debug, Clone)]
enum RawStep {
    Interaction {
        user: usize,
        campaign: &'static str,
        kind: InteractionKind,
        qualifier: Option<&'static str>,
        zone: Option<&'static str>,
        time: TimestampMs,
        lag: TimestampMs,
    },
    UserEvent {
        user: usize,
        event_type: UserEventType,
        name: Option<&'static str>,
        time: TimestampMs,
        lag: TimestampMs,
    },
    /// An interaction that matches the trigger of follow-on `target` (as first generated).
    AimedTrigger {
        user: usize,
        target: Index,
        kind: Index,
        zone: Option<&'static str>,
        time: TimestampMs,
        lag: TimestampMs,
    },
    /// An event that matches an exception of follow-on `target` (as first generated).
    AimedException {
        user: usize,
        target: Index,
        which: Index,
        time: TimestampMs,
        lag: TimestampMs,
    },
    /// A redelivery of an earlier event (same id and content).
    Duplicate { of: Index, lag: TimestampMs },
    /// A catalog edit of a follow-on (`follow_on`), or of any campaign.
    Edit {
        target: Index,
        follow_on: bool,
        edit: Edit,
        time: TimestampMs,
        lag: TimestampMs,
    },
}

/// Event times: on the 30-minute grid over a day, sometimes a few seconds off it.
fn time() -> impl Strategy<Value = TimestampMs> {
    (0i64..=48, prop_oneof![6 => Just(0i64), 1 => 1i64..=5_000])
        .prop_map(|(k, ms)| T0 + k * UNIT + ms)
}

fn lag(allowed: bool) -> BoxedStrategy<TimestampMs> {
    if allowed {
        prop_oneof![8 => Just(0i64), 1 => (1i64..=4).prop_map(|m| m * UNIT), 1 => 1i64..=120_000]
            .boxed()
    } else {
        Just(0).boxed()
    }
}

/// The `user_time_zone` of an interaction: mostly none, sometimes one that is not a zone.
fn zone() -> impl Strategy<Value = Option<&'static str>> {
    prop::sample::select(vec![
        None,
        None,
        None,
        Some("UTC"),
        Some("Asia/Kolkata"),
        Some("America/New_York"),
        Some("Mars/Olympus_Mons"),
    ])
}

fn raw_step(lags: bool) -> impl Strategy<Value = RawStep> {
    let interaction = (
        0usize..4,
        prop::sample::select(vec![
            "c1", "c1", "c2", "c2", "c3", "c4", "f1", "f2", "ghost",
        ]),
        prop_oneof![
            12 => prop::sample::select(KIND_POOL.to_vec()),
            1 => Just(InteractionKind::ConversionEvent),
            1 => Just(InteractionKind::Unknown),
        ],
        prop::sample::select(vec![None, None, Some("b1"), Some("b2")]),
        zone(),
        time(),
        lag(lags),
    )
        .prop_map(
            |(user, campaign, kind, qualifier, zone, time, lag)| RawStep::Interaction {
                user,
                campaign,
                kind,
                qualifier,
                zone,
                time,
                lag,
            },
        );
    let user_event = (
        0usize..4,
        prop::sample::select(vec![
            (UserEventType::CustomEvent, Some("ev1")),
            (UserEventType::CustomEvent, Some("ev2")),
            (UserEventType::CustomEvent, Some("ev3")),
            (UserEventType::Purchase, None),
            (UserEventType::Purchase, Some("p1")),
            (UserEventType::Purchase, Some("p2")),
            (UserEventType::SessionStart, None),
            (UserEventType::Unknown, Some("ev1")),
        ]),
        time(),
        lag(lags),
    )
        .prop_map(|(user, (event_type, name), time, lag)| RawStep::UserEvent {
            user,
            event_type,
            name,
            time,
            lag,
        });
    let edit = prop_oneof![
        3 => prop::sample::select(vec![
            CampaignStatus::Active,
            CampaignStatus::Active,
            CampaignStatus::Draft,
            CampaignStatus::Stopped,
            CampaignStatus::Stopped,
            CampaignStatus::Archived,
        ])
        .prop_map(Edit::Status),
        2 => rule().prop_map(|r| Edit::Rule(Box::new(r))),
        1 => Just(Edit::Unfollow),
        2 => (window(), 1i64..=48).prop_map(|((p, s, e), end)| {
            // Edits move the end often, so that pending sends come due past it.
            Edit::Window((p, s, e.or_else(|| Some(s.unwrap_or(T0) + end * UNIT))))
        }),
        1 => backfill().prop_map(Edit::Backfill),
        1 => Just(Edit::Remove),
        1 => Just(Edit::Stale),
    ];
    let aimed_trigger = (
        0usize..4,
        any::<Index>(),
        any::<Index>(),
        zone(),
        time(),
        lag(lags),
    )
        .prop_map(
            |(user, target, kind, zone, time, lag)| RawStep::AimedTrigger {
                user,
                target,
                kind,
                zone,
                time,
                lag,
            },
        );
    let aimed_exception = (0usize..4, any::<Index>(), any::<Index>(), time(), lag(lags)).prop_map(
        |(user, target, which, time, lag)| RawStep::AimedException {
            user,
            target,
            which,
            time,
            lag,
        },
    );
    prop_oneof![
        4 => interaction,
        6 => aimed_trigger,
        2 => user_event,
        4 => aimed_exception,
        1 => (any::<Index>(), lag(lags)).prop_map(|(of, lag)| RawStep::Duplicate { of, lag }),
        2 => (any::<Index>(), prop::bool::weighted(0.7), edit, time(), lag(lags)).prop_map(
            |(target, follow_on, edit, time, lag)| RawStep::Edit {
                target,
                follow_on,
                edit,
                time,
                lag,
            }
        ),
    ]
}

/// Knobs of the scenario generator.
#[derive(Debug, Clone, Copy)]
struct Shape {
    /// Whether records may arrive out of event-time order (late records).
    late: bool,
    /// Whether the wall clock may run ahead of event time (consumer lag).
    lags: bool,
    /// Whether the catalog changes during the run.
    edits: bool,
}

const ANY: Shape = Shape {
    late: true,
    lags: true,
    edits: true,
};

fn scenario(shape: Shape) -> impl Strategy<Value = Scenario> {
    (
        catalog(),
        1usize..=4,
        prop::collection::vec(raw_step(shape.lags), 0..=60),
        prop::bool::weighted(if shape.late { 0.3 } else { 0.0 }),
        prop::collection::vec((any::<Index>(), any::<Index>()), 1..=3),
    )
        .prop_map(move |(catalog, users, raw, late, moves)| {
            let raw = raw
                .into_iter()
                .filter(|r| shape.edits || !matches!(r, RawStep::Edit { .. }))
                .collect();
            build(catalog, users, raw, if late { moves } else { vec![] })
        })
}

/// Makes the steps: events with ids, redeliveries, then (in processing order) catalog edits
/// with increasing versions.
fn build(
    catalog: Vec<Campaign>,
    users: usize,
    raw: Vec<RawStep>,
    moves: Vec<(Index, Index)>,
) -> Scenario {
    enum Pre {
        Event(InputEvent, TimestampMs),
        Edit {
            target: usize,
            edit: Edit,
            at: TimestampMs,
            lag: TimestampMs,
        },
    }
    impl Pre {
        fn time(&self) -> TimestampMs {
            match self {
                Pre::Event(e, _) => e.occurred_at(),
                Pre::Edit { at, .. } => *at,
            }
        }
    }
    let rules: Vec<&FollowOnRule> = catalog
        .iter()
        .filter_map(|c| c.follow_on.as_ref())
        .collect();
    let aim = |target: Index| rules[target.index(rules.len())];
    let follow_ons: Vec<usize> = (0..catalog.len())
        .filter(|&n| catalog[n].follow_on.is_some())
        .collect();
    let mut pre: Vec<Pre> = Vec::new();
    let mut events: Vec<InputEvent> = Vec::new();
    for (n, r) in raw.into_iter().enumerate() {
        match r {
            RawStep::Interaction {
                user,
                campaign,
                kind,
                qualifier,
                zone,
                time,
                lag,
            } => {
                let e = InputEvent::Interaction(Interaction {
                    event_id: format!("i{n}"),
                    user_id: USERS[user % users].to_string(),
                    campaign_id: campaign.to_string(),
                    kind,
                    qualifier: qualifier.map(String::from),
                    occurred_at: time,
                    user_time_zone: zone.map(String::from),
                    properties: Default::default(),
                });
                events.push(e.clone());
                pre.push(Pre::Event(e, lag));
            }
            RawStep::UserEvent {
                user,
                event_type,
                name,
                time,
                lag,
            } => {
                let e = InputEvent::UserEvent(UserEvent {
                    event_id: format!("e{n}"),
                    user_id: USERS[user % users].to_string(),
                    event_type,
                    name: name.map(String::from),
                    occurred_at: time,
                    user_time_zone: None,
                    properties: Default::default(),
                });
                events.push(e.clone());
                pre.push(Pre::Event(e, lag));
            }
            RawStep::AimedTrigger {
                user,
                target,
                kind,
                zone,
                time,
                lag,
            } => {
                let rule = aim(target);
                let e = InputEvent::Interaction(Interaction {
                    event_id: format!("i{n}"),
                    user_id: USERS[user % users].to_string(),
                    campaign_id: rule.trigger.campaign_id.clone(),
                    kind: rule.trigger.kinds[kind.index(rule.trigger.kinds.len())],
                    qualifier: rule.trigger.qualifier.clone(),
                    occurred_at: time,
                    user_time_zone: zone.map(String::from),
                    properties: Default::default(),
                });
                events.push(e.clone());
                pre.push(Pre::Event(e, lag));
            }
            RawStep::AimedException {
                user,
                target,
                which,
                time,
                lag,
            } => {
                let rule = aim(target);
                let user_id = USERS[user % users].to_string();
                let user_event = |event_type, name: Option<&str>| {
                    InputEvent::UserEvent(UserEvent {
                        event_id: format!("e{n}"),
                        user_id: user_id.clone(),
                        event_type,
                        name: name.map(String::from),
                        occurred_at: time,
                        user_time_zone: None,
                        properties: Default::default(),
                    })
                };
                let e = match rule
                    .exceptions
                    .get(which.index(rule.exceptions.len().max(1)))
                {
                    None => user_event(UserEventType::SessionStart, None),
                    Some(m) => match m.exception_type {
                        ExceptionType::Interaction => InputEvent::Interaction(Interaction {
                            event_id: format!("i{n}"),
                            user_id: user_id.clone(),
                            campaign_id: m
                                .campaign_id
                                .clone()
                                .unwrap_or_else(|| rule.trigger.campaign_id.clone()),
                            kind: m.interaction_kinds[which.index(m.interaction_kinds.len())],
                            qualifier: None,
                            occurred_at: time,
                            user_time_zone: None,
                            properties: Default::default(),
                        }),
                        ExceptionType::CustomEvent => {
                            user_event(UserEventType::CustomEvent, m.name.as_deref())
                        }
                        ExceptionType::Purchase => {
                            user_event(UserEventType::Purchase, m.name.as_deref().or(Some("p2")))
                        }
                        ExceptionType::SessionStart => {
                            user_event(UserEventType::SessionStart, None)
                        }
                    },
                };
                events.push(e.clone());
                pre.push(Pre::Event(e, lag));
            }
            RawStep::Duplicate { of, lag } => {
                if !events.is_empty() {
                    pre.push(Pre::Event(events[of.index(events.len())].clone(), lag));
                }
            }
            RawStep::Edit {
                target,
                follow_on,
                edit,
                time,
                lag,
            } => pre.push(Pre::Edit {
                target: if follow_on {
                    follow_ons[target.index(follow_ons.len())]
                } else {
                    target.index(catalog.len())
                },
                edit,
                at: time,
                lag,
            }),
        }
    }
    // Event-time order (ties: generation order), then a few records moved out of order.
    pre.sort_by_key(Pre::time);
    for (from, to) in moves {
        if pre.len() >= 2 {
            let moved = pre.remove(from.index(pre.len()));
            let to = to.index(pre.len() + 1);
            pre.insert(to, moved);
        }
    }
    // Catalog edits, versioned in the order they are read.
    let mut last: Vec<Campaign> = catalog.clone();
    let mut exists: Vec<bool> = vec![true; catalog.len()];
    let mut history: Vec<Vec<Campaign>> = catalog.iter().map(|c| vec![c.clone()]).collect();
    let mut steps = Vec::new();
    for p in pre {
        let (target, edit, at, lag) = match p {
            Pre::Event(event, lag) => {
                steps.push(Step::Event { event, lag });
                continue;
            }
            Pre::Edit {
                target,
                edit,
                at,
                lag,
            } => (target, edit, at, lag),
        };
        let change = match edit {
            Edit::Remove => {
                exists[target] = false;
                Change::Remove(last[target].campaign_id.clone())
            }
            Edit::Stale => {
                let h = &history[target];
                if h.len() < 2 {
                    continue;
                }
                let old = h[h.len() - 2].clone();
                if !exists[target] {
                    // A tombstoned campaign comes back with the old record.
                    exists[target] = true;
                    last[target] = old.clone();
                }
                Change::Upsert(old)
            }
            edit => {
                let mut c = last[target].clone();
                c.version = history[target].iter().map(|h| h.version).max().unwrap() + 1;
                match edit {
                    Edit::Status(s) => c.status = s,
                    Edit::Rule(r) => {
                        if c.follow_on.is_some() {
                            c.follow_on = Some(*r);
                        }
                    }
                    // A backfill start belongs to the version published with it.
                    Edit::Unfollow => {
                        c.follow_on = None;
                        c.backfill_since = None;
                    }
                    Edit::Window((p, s, e)) => {
                        c.published_at = p;
                        c.starts_at = s;
                        c.ends_at = e;
                        c.backfill_since = None;
                    }
                    Edit::Backfill(units) => c = with_backfill(c, units),
                    Edit::Remove | Edit::Stale => unreachable!(),
                }
                exists[target] = true;
                last[target] = c.clone();
                history[target].push(c.clone());
                Change::Upsert(c)
            }
        };
        steps.push(Step::Catalog { at, lag, change });
    }
    Scenario { catalog, steps }
}

// =========================================================================== driver

/// What the driver needs of the engine and of the reference model.
trait Machine {
    fn next_due(&self) -> Option<TimestampMs>;
    fn advance_to(&mut self, time: TimestampMs, now: TimestampMs, out: &mut Vec<Effect>);
    fn process(&mut self, event: &InputEvent, now: TimestampMs, out: &mut Vec<Effect>);
    fn change(&mut self, change: &Change, now: TimestampMs, out: &mut Vec<Effect>);
}

impl Machine for Engine {
    fn next_due(&self) -> Option<TimestampMs> {
        Engine::next_due(self)
    }
    fn advance_to(&mut self, time: TimestampMs, now: TimestampMs, out: &mut Vec<Effect>) {
        Engine::advance_to(self, time, now, out)
    }
    fn process(&mut self, event: &InputEvent, now: TimestampMs, out: &mut Vec<Effect>) {
        Engine::process(self, event, None, now, out).expect("generated times are in range")
    }
    fn change(&mut self, change: &Change, now: TimestampMs, out: &mut Vec<Effect>) {
        match change {
            Change::Upsert(c) => self
                .apply_campaign(c, now, out)
                .expect("generated campaigns are valid"),
            Change::Remove(id) => self.remove_campaign(id, now, out),
        }
    }
}

impl Machine for Reference {
    fn next_due(&self) -> Option<TimestampMs> {
        Reference::next_due(self)
    }
    fn advance_to(&mut self, time: TimestampMs, now: TimestampMs, out: &mut Vec<Effect>) {
        Reference::advance_to(self, time, now, out)
    }
    fn process(&mut self, event: &InputEvent, now: TimestampMs, out: &mut Vec<Effect>) {
        Reference::process(self, event, now, out)
    }
    fn change(&mut self, change: &Change, now: TimestampMs, out: &mut Vec<Effect>) {
        match change {
            Change::Upsert(c) => self.apply(c, now, out),
            Change::Remove(id) => self.remove(id, now, out),
        }
    }
}

/// The effects of one step: timers that fired before it, then the step's own.
#[derive(Debug, Clone, Default, PartialEq)]
struct StepOut {
    before: Vec<Effect>,
    record: Vec<Effect>,
}

/// Drives a machine through a scenario, simulator-like: the wall clock is the event time
/// plus the step's lag, never going back.
struct Driver<M> {
    machine: M,
    /// The wall clock of the last step.
    wall: TimestampMs,
}

impl<M: Machine> Driver<M> {
    fn new(mut machine: M, catalog: &[Campaign]) -> Self {
        let mut sink = Vec::new();
        for c in catalog {
            machine.change(&Change::Upsert(c.clone()), T0 - DAY, &mut sink);
        }
        assert!(sink
            .iter()
            .all(|e| !matches!(e, Effect::Send(_) | Effect::Decision(_))));
        Self {
            machine,
            wall: T0 - DAY,
        }
    }

    fn step(&mut self, step: &Step) -> StepOut {
        let (t, lag) = (step.time(), step.lag());
        let mut out = StepOut::default();
        while let Some(due) = self.machine.next_due().filter(|&d| d <= t) {
            self.machine
                .advance_to(due, due.max(self.wall) + lag, &mut out.before);
        }
        let now = t.max(self.wall) + lag;
        self.wall = now;
        match step {
            Step::Event { event, .. } => self.machine.process(event, now, &mut out.record),
            Step::Catalog { change, .. } => {
                // The task's clock reaches `at` (as when a caught-up task follows the wall
                // clock). Without this, the clocks would differ by the engine's cancelled
                // timers: advancing to a stale due time moves its clock too.
                self.machine.advance_to(t, now, &mut out.before);
                self.machine.change(change, now, &mut out.record)
            }
        }
        out
    }

    /// Runs every remaining timer.
    fn finish(&mut self) -> StepOut {
        let mut out = StepOut::default();
        while let Some(due) = self.machine.next_due() {
            self.machine
                .advance_to(due, due.max(self.wall), &mut out.before);
        }
        out
    }

    /// Every step, then `finish`: one `StepOut` per step plus one.
    fn run(&mut self, steps: &[Step]) -> Vec<StepOut> {
        let mut outs: Vec<StepOut> = steps.iter().map(|s| self.step(s)).collect();
        outs.push(self.finish());
        outs
    }
}

fn engine() -> Engine {
    Engine::new(Limits::default())
}

fn run_engine(s: &Scenario) -> Vec<StepOut> {
    Driver::new(engine(), &s.catalog).run(&s.steps)
}

// =========================================================================== comparing

/// Sends and decisions only.
fn observable(effects: &[Effect]) -> Vec<Effect> {
    effects
        .iter()
        .filter(|e| matches!(e, Effect::Send(_) | Effect::Decision(_)))
        .cloned()
        .collect()
}

/// The order of a record's effects that the SPEC fixes: exception cancellations, then the
/// triggered follow-ons, then sends a late trigger fired at once, then catalog drops. Within
/// a phase, the SPEC says nothing about the order of follow-ons: sort by id (stable, so
/// that a restart's cancel stays before its schedule, and a send before its decision).
fn canonical(effects: &[Effect]) -> Vec<Effect> {
    // A send and the decision that follows it form one unit.
    let mut units: Vec<Vec<Effect>> = Vec::new();
    let mut iter = observable(effects).into_iter().peekable();
    while let Some(e) = iter.next() {
        let mut unit = vec![e.clone()];
        if matches!(e, Effect::Send(_)) {
            unit.extend(iter.next());
        }
        units.push(unit);
    }
    let key = |unit: &Vec<Effect>| -> (u8, TimestampMs, String, String) {
        let Some(Effect::Decision(d)) = unit.last() else {
            return (9, 0, String::new(), String::new());
        };
        let (f, u) = (d.follow_on_id.clone(), d.user_id.clone());
        match (d.outcome, d.reason) {
            (DecisionOutcome::Cancelled, DecisionReason::Exception) => (0, 0, f, u),
            (DecisionOutcome::Fired, _)
            | (DecisionOutcome::Dropped, DecisionReason::Overdue | DecisionReason::PastEnd) => {
                (2, d.due_at.unwrap_or(0), u, f)
            }
            (DecisionOutcome::Dropped, _) => (3, 0, u, f),
            _ => (1, 0, f, u),
        }
    };
    units.sort_by_key(key);
    units.concat()
}

/// The reference model leaves the optional `due_at` of an ignored trigger unset.
fn for_model(effects: Vec<Effect>) -> Vec<Effect> {
    effects
        .into_iter()
        .map(|e| match e {
            Effect::Decision(d) if d.outcome == DecisionOutcome::Ignored => {
                Effect::Decision(Decision { due_at: None, ..d })
            }
            e => e,
        })
        .collect()
}

/// Compares two runs step by step (`first_step` numbers the first for messages).
fn compare(
    expected: &[StepOut],
    actual: &[StepOut],
    first_step: usize,
    model: bool,
) -> Result<(), TestCaseError> {
    prop_assert_eq!(expected.len(), actual.len());
    let norm = |v: Vec<Effect>| if model { for_model(v) } else { v };
    for (n, (e, a)) in expected.iter().zip(actual).enumerate() {
        let step = first_step + n;
        prop_assert_eq!(
            norm(observable(&e.before)),
            norm(observable(&a.before)),
            "timers fired before step {}",
            step
        );
        prop_assert_eq!(
            norm(canonical(&e.record)),
            norm(canonical(&a.record)),
            "effects of step {}",
            step
        );
    }
    Ok(())
}

/// Where an effect came from: (step, 0 = timers before it / 1 = the step itself).
type Position = (usize, u8);

fn positioned(outs: &[StepOut]) -> Vec<(Position, Effect)> {
    let mut v = Vec::new();
    for (n, o) in outs.iter().enumerate() {
        v.extend(o.before.iter().map(|e| ((n, 0), e.clone())));
        v.extend(o.record.iter().map(|e| ((n, 1), e.clone())));
    }
    v
}

fn sends(outs: &[StepOut]) -> Vec<(Position, SendCommand)> {
    positioned(outs)
        .into_iter()
        .filter_map(|(p, e)| match e {
            Effect::Send(s) => Some((p, s)),
            _ => None,
        })
        .collect()
}

fn decisions(outs: &[StepOut]) -> Vec<(Position, Decision)> {
    positioned(outs)
        .into_iter()
        .filter_map(|(p, e)| match e {
            Effect::Decision(d) => Some((p, d)),
            _ => None,
        })
        .collect()
}

fn rule_of(versions: &BTreeMap<(String, i64), Campaign>, id: &str, version: i64) -> Campaign {
    versions
        .get(&(id.to_string(), version))
        .cloned()
        .unwrap_or_else(|| panic!("no record of {id} version {version}"))
}

/// An engine's state as a map from changelog key to record (`export_all` orders rule
/// snapshots by an internal index that depends on the engine's history).
fn state_of(engine: &Engine) -> BTreeMap<String, TaskStateRecord> {
    engine
        .export_all()
        .into_iter()
        .map(|r| (r.changelog_key(), r))
        .collect()
}

/// A fresh engine with `catalog` applied and `records` restored.
fn restored(catalog: &[Campaign], records: &[TaskStateRecord]) -> Engine {
    let mut e = engine();
    let mut sink = Vec::new();
    for c in catalog {
        e.apply_campaign(c, T0, &mut sink).expect("valid campaign");
    }
    for r in records {
        e.restore(r).expect("restorable record");
    }
    e
}

// =========================================================================== properties

/// 256 cases each, unless `PROPTEST_CASES` says otherwise.
fn config() -> ProptestConfig {
    ProptestConfig::default()
}

proptest! {
    #![proptest_config(config())]

    /// The engine decides and sends exactly what the reference model does.
    #[test]
    fn engine_matches_reference_model(s in scenario(ANY)) {
        let actual = run_engine(&s);
        let expected = Driver::new(Reference::new(), &s.catalog).run(&s.steps);
        compare(&expected, &actual, 0, true)?;
    }

    /// Every send comes from an interaction in the input that matches the trigger of the
    /// follow-on version it names, at or after that version's publish time.
    #[test]
    fn every_send_has_a_matching_trigger(s in scenario(ANY)) {
        let versions = s.versions();
        for (pos, send) in sends(&run_engine(&s)) {
            let f = rule_of(&versions, &send.campaign_id, send.campaign_version);
            let rule = f.follow_on.as_ref().unwrap();
            prop_assert_eq!(&send.trigger.campaign_id, &rule.trigger.campaign_id);
            let read_before = pos.0 + usize::from(pos.1);
            let found = s.steps.iter().take(read_before).any(|step| {
                matches!(step.event(), Some(InputEvent::Interaction(i))
                    if i.event_id == send.trigger.event_id
                        && i.user_id == send.user_id
                        && i.kind == send.trigger.kind
                        && i.occurred_at == send.trigger.occurred_at
                        && reference::is_triggered(rule, i)
                        && after_publish_bound(&f, i.occurred_at))
            });
            prop_assert!(found, "send without a matching trigger: {:?}", send);
        }
    }

    /// No send when an exception of its rule, read between the trigger and the send, fell
    /// inside `[triggered_at, due_at)` (other than the trigger itself).
    #[test]
    fn no_send_after_an_exception_in_the_window(s in scenario(ANY)) {
        let versions = s.versions();
        let outs = run_engine(&s);
        let decisions = decisions(&outs);
        for (sent_at, send) in sends(&outs) {
            // Where the send was scheduled (immediate sends have no window).
            let scheduled = decisions.iter().rev().find(|(p, d)| {
                *p <= sent_at
                    && d.outcome == DecisionOutcome::Scheduled
                    && d.user_id == send.user_id
                    && d.follow_on_id == send.campaign_id
                    && d.follow_on_version == Some(send.campaign_version)
                    && d.trigger_event_id.as_deref() == Some(send.trigger.event_id.as_str())
            });
            let Some((scheduled_at, _)) = scheduled else { continue };
            let f = rule_of(&versions, &send.campaign_id, send.campaign_version);
            let rule = f.follow_on.as_ref().unwrap();
            for (n, step) in s.steps.iter().enumerate() {
                let Some(x) = step.event() else { continue };
                let read_between = *scheduled_at < (n, 1) && (n, 1) < sent_at;
                let t = x.occurred_at();
                let own = matches!(x, InputEvent::Interaction(i) if i.event_id == send.trigger.event_id);
                let exception = rule.exceptions.iter().any(|m| reference::exception_matches(m, rule, x));
                prop_assert!(
                    !(read_between
                        && x.user_id() == send.user_id
                        && send.trigger.occurred_at <= t
                        && t < send.due_at
                        && !own
                        && exception),
                    "{:?} was sent although exception {:?} (step {}) fell in its window",
                    send, x, n
                );
            }
        }
    }

    /// At most one send per trigger: command ids are unique.
    #[test]
    fn command_ids_are_unique(s in scenario(ANY)) {
        let mut ids: Vec<String> = sends(&run_engine(&s)).into_iter().map(|(_, c)| c.command_id).collect();
        let total = ids.len();
        ids.sort();
        ids.dedup();
        prop_assert_eq!(ids.len(), total, "duplicate command ids");
    }

    /// Nothing is scheduled or sent for a trigger before the follow-on was published (or
    /// before its version's backfill start), and `backfill` names exactly the triggers in
    /// between.
    #[test]
    fn never_before_publish(s in scenario(ANY)) {
        let versions = s.versions();
        let outs = run_engine(&s);
        for (_, send) in sends(&outs) {
            let f = rule_of(&versions, &send.campaign_id, send.campaign_version);
            prop_assert!(after_publish_bound(&f, send.trigger.occurred_at), "{:?}", send);
        }
        for (_, d) in decisions(&outs) {
            if d.outcome == DecisionOutcome::Scheduled {
                let f = rule_of(&versions, &d.follow_on_id, d.follow_on_version.unwrap());
                let triggered_at = s.steps.iter().filter_map(Step::event)
                    .find(|e| Some(e.event_id()) == d.trigger_event_id.as_deref())
                    .map(InputEvent::occurred_at)
                    .unwrap();
                prop_assert!(after_publish_bound(&f, triggered_at), "{:?}", d);
                let before_publish = f.published_at.is_some_and(|p| triggered_at < p);
                if d.reason != DecisionReason::Restart {
                    prop_assert_eq!(
                        d.reason == DecisionReason::Backfill,
                        before_publish,
                        "{:?}",
                        d
                    );
                }
            }
        }
    }

    /// Exporting the state after any step and restoring it into a fresh engine (with the
    /// catalog of that moment, records in any order) changes nothing that follows.
    #[test]
    fn restore_changes_nothing(
        s in scenario(ANY),
        cut in any::<Index>(),
        swaps in prop::collection::vec((any::<Index>(), any::<Index>()), 0..8),
    ) {
        let full = run_engine(&s);
        let k = cut.index(s.steps.len() + 1);
        let mut before = Driver::new(engine(), &s.catalog);
        for step in &s.steps[..k] {
            before.step(step);
        }
        let exported = before.machine.export_all();
        let mut records = exported.clone();
        for (a, b) in swaps {
            if !records.is_empty() {
                let (a, b) = (a.index(records.len()), b.index(records.len()));
                records.swap(a, b);
            }
        }
        let mut restored = restored(&s.catalog_after(k), &records);
        prop_assert_eq!(state_of(&restored), state_of(&before.machine));
        // Restoring again (records replace what the engine holds) changes nothing.
        for r in exported.iter().rev() {
            restored.restore(r).expect("restorable record");
        }
        prop_assert_eq!(state_of(&restored), state_of(&before.machine));
        let mut after = Driver { machine: restored, wall: before.wall };
        let rest = after.run(&s.steps[k..]);
        compare(&full[k..], &rest, k, false)?;
    }

    /// The state effects are the state: replaying them (rule snapshots as written, each
    /// changed user's entry as exported after the step, a missing entry deleting) into a fresh engine gives the live engine's export after every
    /// step, and the replayed engine goes on like the live one.
    #[test]
    fn changelog_effects_are_the_state(s in scenario(ANY), cut in any::<Index>()) {
        let k = cut.index(s.steps.len() + 1);
        let mut live = Driver::new(engine(), &s.catalog);
        let mut changelog: BTreeMap<String, TaskStateRecord> = BTreeMap::new();
        let mut outs = Vec::new();
        let mut replayed_at_cut = None;
        for n in 0..=s.steps.len() {
            // The runtime writes the task's progress with each commit.
            let replay = |changelog: &BTreeMap<String, TaskStateRecord>, live: &Driver<Engine>, read: usize| {
                let mut records: Vec<TaskStateRecord> = changelog.values().cloned().collect();
                records.extend(live.machine.progress_record());
                restored(&s.catalog_after(read), &records)
            };
            if n == k {
                replayed_at_cut = Some(Driver { machine: replay(&changelog, &live, k), wall: live.wall });
            }
            let out = if n < s.steps.len() { live.step(&s.steps[n]) } else { live.finish() };
            for e in out.before.iter().chain(&out.record) {
                match e {
                    Effect::PutState(r) => {
                        changelog.insert(r.changelog_key(), (**r).clone());
                    }
                    // The runtime writes the user's entry as it is when it commits.
                    Effect::UserChanged { user_id, .. } => match live.machine.user_changelog_record(user_id) {
                        (key, Some(record)) => {
                            changelog.insert(key, record);
                        }
                        (key, None) => {
                            changelog.remove(&key);
                        }
                    },
                    _ => {}
                }
            }
            outs.push(out);
            let replayed = replay(&changelog, &live, (n + 1).min(s.steps.len()));
            prop_assert_eq!(state_of(&replayed), state_of(&live.machine), "after step {}", n);
        }
        if let Some(mut replayed) = replayed_at_cut {
            let rest = replayed.run(&s.steps[k..]);
            compare(&outs[k..], &rest, k, false)?;
        }
    }

    /// State is per user: in an in-order stream, each user gets the same decisions and sends
    /// as when that user's events are processed alone.
    #[test]
    fn users_do_not_affect_each_other(
        s in scenario(Shape { late: false, lags: false, edits: true }),
    ) {
        let all = run_engine(&s);
        let of = |outs: &[StepOut], user: &str| -> Vec<Effect> {
            positioned(outs)
                .into_iter()
                .map(|(_, e)| e)
                .filter(|e| match e {
                    Effect::Send(c) => c.user_id == user,
                    Effect::Decision(d) => d.user_id == user,
                    _ => false,
                })
                .collect()
        };
        for user in s.users() {
            let alone = run_engine(&s.only_user(&user));
            prop_assert_eq!(of(&all, &user), of(&alone, &user), "user {}", user);
        }
    }
}

// =========================================================================== plain tests

fn interaction(id: &str, user: &str, kind: InteractionKind, at: TimestampMs) -> Step {
    Step::Event {
        event: InputEvent::Interaction(Interaction {
            event_id: id.to_string(),
            user_id: user.to_string(),
            campaign_id: "c1".to_string(),
            kind,
            qualifier: None,
            occurred_at: at,
            user_time_zone: None,
            properties: Default::default(),
        }),
        lag: 0,
    }
}

fn simple_rule(delay: Delay, exceptions: Vec<ExceptionMatcher>) -> FollowOnRule {
    FollowOnRule {
        trigger: Trigger {
            campaign_id: "c1".into(),
            kinds: vec![InteractionKind::EmailReceived],
            qualifier: None,
        },
        delay,
        time_zone: None,
        exceptions,
        reeligibility: Reeligibility {
            policy: ReeligibilityPolicy::After,
            seconds: Some(1),
        },
        on_repeat_trigger: RepeatTrigger::KeepFirst,
        overdue: Overdue {
            policy: OverduePolicy::Send,
            seconds: None,
        },
        message: Message {
            channel: Channel::Email,
            template_id: "tpl".into(),
            payload: Default::default(),
        },
    }
}

/// Thousands of cancelled timers (stale heap entries, user slots freed and reused, the
/// heap rebuilt once stale entries pile up) change nothing: the engine still agrees with
/// the model, and its export restores.
#[test]
fn many_cancelled_timers_match_the_model() {
    let opened = ExceptionMatcher {
        exception_type: ExceptionType::Interaction,
        campaign_id: None,
        interaction_kinds: vec![InteractionKind::EmailOpen],
        name: None,
    };
    // f1's cancelled timers are due in 20 days: their heap entries outlive the stream and
    // pile up; f2 fires all along.
    let slow = simple_rule(Delay::after_seconds(20 * 86_400), vec![opened]);
    let fast = simple_rule(Delay::after_seconds(3_600), vec![]);
    let s = Scenario {
        catalog: vec![
            trigger_campaign("c1", CampaignStatus::Active, false),
            follow_on("f1", CampaignStatus::Active, (Some(T0), None, None), slow),
            follow_on("f2", CampaignStatus::Active, (Some(T0), None, None), fast),
        ],
        steps: (0..6_000)
            .flat_map(|n: i64| {
                let t = T0 + n * 10_000;
                if n % 50 == 0 {
                    // Ten users whose sends are never cancelled.
                    let user = format!("k{}", n / 50 % 10);
                    return vec![interaction(
                        &format!("t{n}"),
                        &user,
                        InteractionKind::EmailReceived,
                        t,
                    )];
                }
                // 97 users whose sends are cancelled 5 s after they were scheduled.
                let user = format!("u{:02}", n % 97);
                let mut steps = vec![interaction(
                    &format!("t{n}"),
                    &user,
                    InteractionKind::EmailReceived,
                    t,
                )];
                steps.push(interaction(
                    &format!("x{n}"),
                    &user,
                    InteractionKind::EmailOpen,
                    t + 5_000,
                ));
                steps
            })
            .collect(),
    };
    let mut live = Driver::new(engine(), &s.catalog);
    let mut actual: Vec<StepOut> = s.steps.iter().map(|step| live.step(step)).collect();
    let exported = live.machine.export_all();
    let mut fresh = Driver {
        machine: restored(&s.catalog, &exported),
        wall: live.wall,
    };
    let end = live.finish();
    assert_eq!(fresh.finish(), end, "the restored engine fires the same");
    actual.push(end);
    let expected = Driver::new(Reference::new(), &s.catalog).run(&s.steps);
    let fired = decisions(&expected)
        .iter()
        .filter(|(_, d)| d.outcome == DecisionOutcome::Fired)
        .count();
    assert!(fired > 100, "the scenario sends ({fired})");
    compare(&expected, &actual, 0, true).unwrap();
}

/// Local-time delays across New York's spring-forward gap (2026-03-08 02:00 → 03:00) are
/// due when the model says: a time in the gap moves forward by the gap.
#[test]
fn local_times_across_the_dst_gap_match_the_model() {
    let mut checked = 0;
    for local_time in [
        "01:30", "02:00", "02:30", "02:59:59", "03:00", "03:30", "23:30",
    ] {
        for delay in [
            Delay {
                delay_type: DelayType::NextWeekday,
                weekday: Some(Weekday::Sunday),
                local_time: Some(local_time.into()),
                ..Delay::immediate()
            },
            Delay {
                delay_type: DelayType::CalendarDays,
                days: Some(6),
                local_time: Some(local_time.into()),
                ..Delay::immediate()
            },
        ] {
            let mut rule = simple_rule(delay, vec![]);
            rule.time_zone = Some("America/New_York".into());
            let mut engine = engine();
            let mut out = Vec::new();
            let f = follow_on(
                "f1",
                CampaignStatus::Active,
                (None, None, None),
                rule.clone(),
            );
            for c in [trigger_campaign("c1", CampaignStatus::Active, false), f] {
                engine.apply_campaign(&c, T0, &mut out).unwrap();
            }
            for n in 0..48 {
                let Step::Event {
                    event: InputEvent::Interaction(i),
                    ..
                } = interaction(
                    &format!("t{n}"),
                    &format!("u{n}"),
                    InteractionKind::EmailReceived,
                    T0 + n * UNIT,
                )
                else {
                    unreachable!()
                };
                out.clear();
                engine
                    .process(
                        &InputEvent::Interaction(i.clone()),
                        None,
                        i.occurred_at,
                        &mut out,
                    )
                    .expect("in range");
                let due = out.iter().find_map(|e| match e {
                    Effect::Decision(d) if d.outcome == DecisionOutcome::Scheduled => d.due_at,
                    _ => None,
                });
                assert_eq!(
                    due,
                    Some(reference::due_time(&rule, &i)),
                    "{local_time} {:?} at {}",
                    rule.delay,
                    i.occurred_at
                );
                checked += 1;
            }
        }
    }
    assert_eq!(checked, 7 * 2 * 48);
}

/// The generators reach every outcome and reason (else the properties above would pass
/// without exercising them). `--nocapture` prints how often each occurs.
#[test]
fn generators_reach_every_decision() {
    use proptest::strategy::ValueTree;
    use proptest::test_runner::TestRunner;
    let mut runner = TestRunner::deterministic();
    let mut counts: BTreeMap<String, usize> = BTreeMap::new();
    let strat = scenario(ANY);
    for _ in 0..256 {
        let s = strat.new_tree(&mut runner).unwrap().current();
        *counts
            .entry(format!("steps {}", s.steps.len() / 10 * 10))
            .or_default() += 1;
        for (_, e) in positioned(&run_engine(&s)) {
            let k = match e {
                Effect::Send(_) => "send".to_string(),
                Effect::Shadow(_) => "shadow".to_string(),
                Effect::Decision(d) => format!("{:?}/{:?}", d.outcome, d.reason),
                Effect::PutState(_) => "put".into(),
                Effect::UserChanged { .. } => "user changed".into(),
            };
            *counts.entry(k).or_default() += 1;
        }
    }
    for (k, v) in &counts {
        println!("{k:40} {v}");
    }
    use campaign_connector::model::{DecisionOutcome as O, DecisionReason as R};
    let expected = [
        (O::Scheduled, R::Trigger),
        (O::Scheduled, R::Restart),
        (O::Ignored, R::FollowOnInactive),
        (O::Ignored, R::TriggerCampaignInactive),
        (O::Ignored, R::BeforePublish),
        (O::Ignored, R::OutsideWindow),
        (O::Ignored, R::DueAfterEnd),
        (O::Ignored, R::NotReeligible),
        (O::Ignored, R::AlreadyPending),
        (O::Cancelled, R::Exception),
        (O::Cancelled, R::Restart),
        (O::Fired, R::Due),
        (O::Sent, R::Immediate),
        (O::Scheduled, R::Backfill),
        (O::Sent, R::Backfill),
        (O::Dropped, R::FollowOnInactive),
        (O::Dropped, R::FollowOnDeleted),
        (O::Dropped, R::PastEnd),
        (O::Dropped, R::Overdue),
    ];
    for (o, r) in expected {
        let key = format!("{o:?}/{r:?}");
        assert!(
            counts.contains_key(&key),
            "the generators never reach {key}: {counts:?}"
        );
    }
}
