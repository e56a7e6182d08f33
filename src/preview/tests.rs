use std::collections::BTreeMap;

use super::*;
use crate::campaigns_file::parse_campaigns;
use crate::events_file::parse_events;
use crate::model::{DecisionOutcome as O, DecisionReason as R};
use crate::simulate::simulate;

const FILE: &str = r#"
campaigns:
  - campaign_id: cart-push
    name: Cart push
    status: ACTIVE
  - campaign_id: cart-email
    name: Cart email
    status: ACTIVE
    follow_on:
      trigger: {campaign_id: cart-push, kinds: [PUSH_RECEIVED]}
      delay: 1h
      exceptions:
        - purchase: {}
      message: {channel: EMAIL, template_id: t}
  - campaign_id: promo
    name: Promo
    status: ACTIVE
    follow_on:
      trigger: {campaign_id: cart-push, kinds: [PUSH_DIRECT_OPEN]}
      delay: immediate
      reeligibility: 2h
      message: {channel: PUSH, template_id: p}
"#;

fn campaigns(text: &str) -> Vec<Campaign> {
    parse_campaigns(text, "test.yaml", &Limits::default()).unwrap()
}

/// `n` events over ten hours from 2026-11-02T00:00Z, in event-time order, of `users` users.
fn traffic(n: u64, users: u64) -> String {
    let mut s = String::new();
    let mut x: u64 = 0x2545_F491;
    for i in 0..n {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let t = 1_793_577_600_000 + (i as i64) * 36_000_000 / n as i64;
        let user = x % users;
        let line = match x % 5 {
            0 | 1 => format!(
                r#"{{"interaction":{{"event_id":"e{i}","user_id":"u{user}","campaign_id":"cart-push","kind":"PUSH_RECEIVED","occurred_at":{t}}}}}"#
            ),
            2 => format!(
                r#"{{"interaction":{{"event_id":"e{i}","user_id":"u{user}","campaign_id":"cart-push","kind":"PUSH_DIRECT_OPEN","occurred_at":{t}}}}}"#
            ),
            3 => format!(
                r#"{{"user_event":{{"event_id":"e{i}","user_id":"u{user}","type":"PURCHASE","occurred_at":{t}}}}}"#
            ),
            _ => format!(
                r#"{{"user_event":{{"event_id":"e{i}","user_id":"u{user}","type":"SESSION_START","occurred_at":{t}}}}}"#
            ),
        };
        s.push_str(&line);
        s.push('\n');
    }
    s
}

/// Decisions by (follow-on, outcome, reason), and sends by follow-on, of a simulation.
type Counts = (
    BTreeMap<(String, &'static str, &'static str), u64>,
    BTreeMap<String, u64>,
);

fn simulated(campaigns: &[Campaign], events: &str, until: TimestampMs) -> Counts {
    let report = simulate(
        campaigns,
        events.as_bytes(),
        "f",
        Some(until),
        Limits::default(),
    )
    .unwrap();
    let mut counts = BTreeMap::new();
    for d in report.decisions() {
        *counts
            .entry((
                d.follow_on_id.clone(),
                d.outcome.as_str(),
                d.reason.as_str(),
            ))
            .or_default() += 1;
    }
    let mut sends = BTreeMap::new();
    for s in report.sends() {
        *sends.entry(s.campaign_id.clone()).or_default() += 1;
    }
    (counts, sends)
}

fn previewed(tally: &Tally) -> Counts {
    let mut counts = BTreeMap::new();
    let mut sends = BTreeMap::new();
    for (id, f) in &tally.follow_ons {
        for (o, r, n) in f.decisions() {
            counts.insert((id.clone(), o.as_str(), r.as_str()), n);
        }
        if f.sends > 0 {
            sends.insert(id.clone(), f.sends);
        }
    }
    (counts, sends)
}

/// Runs a preview over the events, users spread over `tasks` tasks by a hash, each task's
/// events in file order (which is event-time order here).
fn preview_of(
    catalog: &PreviewCatalog,
    events: &str,
    tasks: usize,
    sample: usize,
    until: TimestampMs,
) -> Tally {
    let mut preview = Preview::new(catalog, tasks, Limits::default(), sample).unwrap();
    let (parsed, errors) = parse_events(events.as_bytes());
    assert!(errors.is_empty(), "{errors:?}");
    for (line, event) in parsed {
        let task = (user_hash(event.user_id()) % tasks as u64) as usize;
        let source = InputCoordinates {
            topic: "f".into(),
            partition: task as i32,
            offset: line as i64,
        };
        preview.process(task, &event, &source);
    }
    preview.finish(until)
}

const UNTIL: TimestampMs = 1_793_577_600_000 + 12 * 3_600_000;

#[test]
fn a_preview_counts_what_the_simulator_decides_with_one_task_or_many() {
    let file = campaigns(FILE);
    let events = traffic(5_000, 300);
    let expected = simulated(&file, &events, UNTIL);
    assert!(expected.0.len() >= 6, "a varied run: {:?}", expected.0);
    let catalog = preview_catalog(&BTreeMap::new(), &file, 0).unwrap();
    for tasks in [1, 4] {
        let tally = preview_of(&catalog, &events, tasks, 0, UNTIL);
        assert_eq!(previewed(&tally), expected, "{tasks} tasks");
        assert_eq!(tally.engine.events, 5_000);
    }
}

#[test]
fn the_file_overrides_the_live_catalog_and_only_its_follow_ons_run() {
    let file = campaigns(FILE);
    let mut live: BTreeMap<String, Campaign> = BTreeMap::new();
    // The live trigger campaign is stopped: the file's ACTIVE one wins.
    let mut push = file[0].clone();
    push.status = crate::model::CampaignStatus::Stopped;
    live.insert(push.campaign_id.clone(), push);
    // A live edit of cart-email, published long ago, with a higher version.
    let mut email = file[1].clone();
    email.version = 7;
    email.published_at = Some(1_000);
    live.insert(email.campaign_id.clone(), email);
    // A live follow-on the file does not name: kept as a plain campaign.
    let mut other = file[2].clone();
    other.campaign_id = "other".into();
    live.insert("other".into(), other);
    // A live campaign the file does not name at all.
    live.insert("newsletter".into(), {
        let mut c = file[0].clone();
        c.campaign_id = "newsletter".into();
        c
    });

    let c = preview_catalog(&live, &file[1..], 5_000).unwrap();
    let by_id: BTreeMap<&str, &Campaign> = c
        .campaigns
        .iter()
        .map(|c| (c.campaign_id.as_str(), c))
        .collect();
    assert_eq!(c.evaluated, ["cart-email", "promo"]);
    assert_eq!(by_id["cart-email"].version, 1, "the file's version runs");
    assert_eq!(
        by_id["cart-email"].published_at,
        Some(1_000),
        "an edit keeps the live publish time"
    );
    assert_eq!(
        by_id["promo"].published_at,
        Some(5_000),
        "a new follow-on counts from the window's start"
    );
    assert!(by_id["other"].follow_on.is_none());
    assert!(by_id["newsletter"].follow_on.is_none());
    assert_eq!(
        c.notes,
        [
            "follow-on cart-email: its trigger campaign \"cart-push\" is Stopped, not ACTIVE: every trigger is ignored (trigger_campaign_inactive)",
            "follow-on promo: its trigger campaign \"cart-push\" is Stopped, not ACTIVE: every trigger is ignored (trigger_campaign_inactive)",
        ]
    );
    let missing = preview_catalog(&BTreeMap::new(), &file[1..2], 0).unwrap();
    assert_eq!(
        missing.notes,
        ["follow-on cart-email: its trigger campaign \"cart-push\" is neither in the live catalog nor in the file: every trigger is ignored (trigger_campaign_inactive)"]
    );
    assert_eq!(
        preview_catalog(&live, &file[..1], 0).unwrap_err(),
        "the campaigns file defines no follow-on campaign: nothing to preview"
    );
}

#[test]
fn a_follow_on_published_at_the_window_start_ignores_what_came_before() {
    let file = campaigns(FILE);
    let events = traffic(2_000, 100);
    let start = 1_793_577_600_000 + 5 * 3_600_000;
    let catalog = preview_catalog(&BTreeMap::new(), &file, start).unwrap();
    let tally = preview_of(&catalog, &events, 2, 1_000, UNTIL);
    let cart = &tally.follow_ons["cart-email"];
    assert!(cart.count(O::Ignored, R::BeforePublish) > 100);
    assert!(cart.count(O::Scheduled, R::Trigger) > 10);
    let mut seen = 0;
    for user in tally.sample() {
        assert_eq!(user.omitted, 0);
        for o in &user.outputs {
            if let Output::Decision(d) = o {
                match (d.outcome, d.reason) {
                    (O::Ignored, R::BeforePublish) => assert!(d.decided_at < start, "{d:?}"),
                    (O::Scheduled, _) | (O::Sent, _) => assert!(d.decided_at >= start, "{d:?}"),
                    _ => {}
                }
                seen += 1;
            }
        }
    }
    let all: u64 = tally
        .follow_ons
        .values()
        .flat_map(|f| f.decisions())
        .map(|(_, _, n)| n)
        .sum();
    assert_eq!(seen, all, "the sample holds every user");
}

#[test]
fn the_sample_is_the_users_with_the_smallest_hashes_with_all_their_decisions() {
    let file = campaigns(FILE);
    let events = traffic(3_000, 200);
    let catalog = preview_catalog(&BTreeMap::new(), &file, 0).unwrap();
    let tally = preview_of(&catalog, &events, 3, 5, UNTIL);
    let sample: Vec<&SampledUser> = tally.sample().collect();
    assert_eq!(sample.len(), 5);
    // The five smallest hashes among the users with any decision.
    let everyone = preview_of(&catalog, &events, 3, 1_000, UNTIL);
    let mut all: Vec<(u64, &SampledUser)> = everyone
        .sample()
        .map(|u| (user_hash(&u.user_id), u))
        .collect();
    all.sort_by_key(|(h, _)| *h);
    let smallest: Vec<&SampledUser> = all.iter().take(5).map(|(_, u)| *u).collect();
    for (got, want) in sample.iter().zip(&smallest) {
        assert_eq!(got.user_id, want.user_id);
        assert_eq!(got.outputs, want.outputs, "{}", got.user_id);
    }
}

#[test]
fn busiest_hours_are_by_sends_then_earliest() {
    let mut f = FollowOnTally::default();
    for (hour, n) in [(3, 5), (1, 9), (2, 5), (4, 1)] {
        f.sends_by_hour.insert(hour * HOUR_MS, n);
    }
    assert_eq!(
        f.busiest_hours(3),
        [(HOUR_MS, 9), (2 * HOUR_MS, 5), (3 * HOUR_MS, 5)]
    );
}
