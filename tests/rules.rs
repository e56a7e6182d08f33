//! One test per rule of SPEC §3 and per worked example of SPEC §1, on the effects the engine
//! returns: send-commands, decisions (outcome, reason, due time, cause), command ids and
//! changelog effects.
//!
//! Most tests assert on [`common::log`], one line per effect in emission order:
//!
//! ```text
//! put r/F/1                                                               rule snapshot
//! SCHEDULED trigger u1 F@v1 trigger=e1 cause=e1 due=2026-11-09T10:00:00Z  decision
//! put u/u1 pending=[F@v1 e1 2026-11-09T10:00:00Z] receipts=[]             user state
//! send u1 F@v1 tpl-F trigger=e1 due=2026-11-09T10:00:00Z                  send-command
//! clear u/u1                                                              tombstone
//! ```
//!
//! Time starts at `T0` = Monday 2026-11-02 10:00:00 UTC; campaigns were published on
//! 2026-01-01; the wall clock equals the event time unless a test says otherwise.

mod common;

use campaign_connector::engine::{command_id, Effect, Engine};
use campaign_connector::model::{
    CampaignStatus, Channel, Decision, DecisionOutcome, DecisionReason, InputCoordinates,
    InputEvent,
    InteractionKind::{
        ControlGroupEnrolled, EmailClick, EmailOpen, EmailReceived, InAppMessageClick,
        PushDirectOpen, PushReceived, Unknown,
    },
    PendingSendState, ReceiptState, RuleSnapshot, SendCommand, TaskStateRecord, TriggerRef,
    UserState, Weekday,
};
use campaign_connector::validate::Limits;
use common::*;

// =============================================================================== SPEC §1

/// Re-send to non-openers: trigger `EMAIL_RECEIVED` on A, 7 days, exception `EMAIL_OPEN` on A.
fn resend_to_non_openers() -> World {
    World::with([
        campaign("A"),
        follow_on("F", "A", &[EmailReceived])
            .after(7 * DAY)
            .except(on(&[EmailOpen])),
    ])
}

#[test]
fn example_resend_to_non_openers_sends_after_a_week_without_an_open() {
    let mut w = resend_to_non_openers();
    let out = w.on(interaction("e1", "u1", "A", EmailReceived, T0));
    assert_eq!(
        log(&out),
        [
            "put r/F/1",
            "SCHEDULED trigger u1 F@v1 trigger=e1 cause=e1 due=2026-11-09T10:00:00Z",
            "put u/u1 pending=[F@v1 e1 2026-11-09T10:00:00Z] receipts=[]",
        ]
    );
    assert!(w.advance(T0 + 7 * DAY - 1).is_empty());
    assert_eq!(
        log(&w.advance(T0 + 7 * DAY)),
        [
            "send u1 F@v1 tpl-F trigger=e1 due=2026-11-09T10:00:00Z",
            "FIRED due u1 F@v1 trigger=e1 cause=- due=2026-11-09T10:00:00Z",
            "put u/u1 pending=[] receipts=[F 2026-11-09T10:00:00Z]",
        ]
    );
}

#[test]
fn example_resend_to_non_openers_an_opener_gets_nothing() {
    let mut w = resend_to_non_openers();
    w.on(interaction("e1", "u1", "A", EmailReceived, T0));
    w.on(interaction("e2", "u2", "A", EmailReceived, T0 + HOUR));
    let out = w.on(interaction("o1", "u1", "A", EmailOpen, T0 + 2 * DAY));
    assert_eq!(
        log(&out),
        [
            "CANCELLED exception u1 F@v1 trigger=e1 cause=o1 due=2026-11-09T10:00:00Z",
            "clear u/u1",
        ]
    );
    // Only the user who did not open gets the follow-on.
    let out = w.advance(T0 + 8 * DAY);
    assert_eq!(
        decisions(&out),
        ["FIRED due u2 F@v1 trigger=e2 cause=- due=2026-11-09T11:00:00Z"]
    );
    assert_eq!(
        sends(&out)
            .iter()
            .map(|s| s.user_id.as_str())
            .collect::<Vec<_>>(),
        ["u2"]
    );
}

/// Abandoned cart: trigger `PUSH_RECEIVED` on "abandoned-cart", 1 day, exceptions: a
/// purchase, and `PUSH_DIRECT_OPEN` on the same campaign.
fn abandoned_cart() -> World {
    World::with([
        campaign("abandoned-cart"),
        follow_on("cart-reminder", "abandoned-cart", &[PushReceived])
            .after(DAY)
            .except(purchase())
            .except(on(&[PushDirectOpen])),
    ])
}

#[test]
fn example_abandoned_cart_sends_a_day_later_without_an_exception() {
    let mut w = abandoned_cart();
    w.on(interaction("p1", "u1", "abandoned-cart", PushReceived, T0));
    assert_eq!(
        log(&w.advance(T0 + DAY)),
        [
            "send u1 cart-reminder@v1 tpl-cart-reminder trigger=p1 due=2026-11-03T10:00:00Z",
            "FIRED due u1 cart-reminder@v1 trigger=p1 cause=- due=2026-11-03T10:00:00Z",
            "put u/u1 pending=[] receipts=[cart-reminder 2026-11-03T10:00:00Z]",
        ]
    );
}

#[test]
fn example_abandoned_cart_a_purchase_cancels() {
    let mut w = abandoned_cart();
    w.on(interaction("p1", "u1", "abandoned-cart", PushReceived, T0));
    let out = w.on(bought("buy1", "u1", "sku-42", T0 + 3 * HOUR));
    assert_eq!(
        log(&out),
        [
            "CANCELLED exception u1 cart-reminder@v1 trigger=p1 cause=buy1 due=2026-11-03T10:00:00Z",
            "clear u/u1",
        ]
    );
    assert!(w.advance(T0 + 2 * DAY).is_empty());
}

#[test]
fn example_abandoned_cart_a_push_direct_open_cancels() {
    let mut w = abandoned_cart();
    w.on(interaction("p1", "u1", "abandoned-cart", PushReceived, T0));
    let out = w.on(interaction(
        "o1",
        "u1",
        "abandoned-cart",
        PushDirectOpen,
        T0 + 5 * MIN,
    ));
    assert_eq!(
        log(&out),
        [
            "CANCELLED exception u1 cart-reminder@v1 trigger=p1 cause=o1 due=2026-11-03T10:00:00Z",
            "clear u/u1",
        ]
    );
    assert!(w.advance(T0 + 2 * DAY).is_empty());
}

#[test]
fn example_promo_chain_sends_at_once() {
    let mut w = World::with([
        campaign("free-shipping"),
        follow_on("promo-2", "free-shipping", &[PushDirectOpen]),
    ]);
    let out = w.on(interaction("o1", "u1", "free-shipping", PushDirectOpen, T0));
    assert_eq!(
        log(&out),
        [
            "send u1 promo-2@v1 tpl-promo-2 trigger=o1 due=2026-11-02T10:00:00Z",
            "SENT immediate u1 promo-2@v1 trigger=o1 cause=o1 due=2026-11-02T10:00:00Z",
            "put u/u1 pending=[] receipts=[promo-2 2026-11-02T10:00:00Z]",
        ]
    );
    assert_eq!(sends(&out)[0].emitted_at, T0);
    assert_eq!(w.engine.pending_count(), 0);
}

/// Onboarding: trigger `IN_APP_MESSAGE_CLICK` with a button qualifier, no delay.
fn onboarding() -> World {
    World::with([
        campaign("welcome"),
        follow_on("tour", "welcome", &[InAppMessageClick]).qualifier("start-tour"),
    ])
}

#[test]
fn example_onboarding_the_qualified_button_triggers() {
    let mut w = onboarding();
    let out =
        w.on(interaction("c1", "u1", "welcome", InAppMessageClick, T0).qualifier("start-tour"));
    assert_eq!(
        decisions(&out),
        ["SENT immediate u1 tour@v1 trigger=c1 cause=c1 due=2026-11-02T10:00:00Z"]
    );
}

#[test]
fn example_onboarding_another_button_or_no_qualifier_does_not_trigger() {
    let mut w = onboarding();
    // A trigger that does not match is not a decision at all.
    let out = w.on(interaction("c1", "u1", "welcome", InAppMessageClick, T0).qualifier("skip"));
    assert!(out.is_empty(), "{:?}", log(&out));
    let out = w.on(interaction(
        "c2",
        "u1",
        "welcome",
        InAppMessageClick,
        T0 + MIN,
    ));
    assert!(out.is_empty(), "{:?}", log(&out));
    // The user is still eligible.
    let out = w.on(
        interaction("c3", "u1", "welcome", InAppMessageClick, T0 + 2 * MIN).qualifier("start-tour"),
    );
    assert_eq!(
        decisions(&out),
        ["SENT immediate u1 tour@v1 trigger=c3 cause=c3 due=2026-11-02T10:02:00Z"]
    );
}

#[test]
fn a_null_trigger_qualifier_matches_any_qualifier() {
    let mut w = World::with([
        campaign("welcome"),
        follow_on("tour", "welcome", &[InAppMessageClick]),
    ]);
    let out = w.on(interaction("c1", "u1", "welcome", InAppMessageClick, T0).qualifier("skip"));
    assert_eq!(
        decisions(&out),
        ["SENT immediate u1 tour@v1 trigger=c1 cause=c1 due=2026-11-02T10:00:00Z"]
    );
    let out = w.on(interaction("c2", "u2", "welcome", InAppMessageClick, T0));
    assert_eq!(
        decisions(&out),
        ["SENT immediate u2 tour@v1 trigger=c2 cause=c2 due=2026-11-02T10:00:00Z"]
    );
}

#[test]
fn example_control_group_enrollment_triggers() {
    let mut w = World::with([
        campaign("A"),
        follow_on("F", "A", &[ControlGroupEnrolled]).after(3 * DAY),
    ]);
    // Another kind on A does not trigger.
    assert!(w
        .on(interaction("r1", "u1", "A", EmailReceived, T0))
        .is_empty());
    let out = w.on(interaction("g1", "u1", "A", ControlGroupEnrolled, T0));
    assert_eq!(
        decisions(&out),
        ["SCHEDULED trigger u1 F@v1 trigger=g1 cause=g1 due=2026-11-05T10:00:00Z"]
    );
    assert_eq!(
        log(&w.advance(T0 + 3 * DAY))[0],
        "send u1 F@v1 tpl-F trigger=g1 due=2026-11-05T10:00:00Z"
    );
}

// =============================================================================== §3 rules 1–5

/// The only effect of an ignored trigger is its decision: no state changes.
fn ignored_only(out: &[Effect]) -> String {
    assert_eq!(out.len(), 1, "{:?}", log(out));
    let lines = decisions(out);
    assert_eq!(lines.len(), 1, "{:?}", log(out));
    lines[0].clone()
}

#[test]
fn rule1_an_inactive_follow_on_is_ignored() {
    for status in [
        CampaignStatus::Draft,
        CampaignStatus::Stopped,
        CampaignStatus::Archived,
    ] {
        let mut w = World::with([
            campaign("A"),
            follow_on("F", "A", &[EmailReceived]).status(status),
        ]);
        let out = w.on(interaction("e1", "u1", "A", EmailReceived, T0));
        assert_eq!(
            ignored_only(&out),
            "IGNORED follow_on_inactive u1 F@v1 trigger=e1 cause=e1 due=-",
            "{status:?}"
        );
    }
}

#[test]
fn rule1_an_inactive_trigger_campaign_is_ignored() {
    for status in [
        CampaignStatus::Draft,
        CampaignStatus::Stopped,
        CampaignStatus::Archived,
    ] {
        let mut w = World::with([
            campaign("A").status(status),
            follow_on("F", "A", &[EmailReceived]),
        ]);
        let out = w.on(interaction("e1", "u1", "A", EmailReceived, T0));
        assert_eq!(
            ignored_only(&out),
            "IGNORED trigger_campaign_inactive u1 F@v1 trigger=e1 cause=e1 due=-",
            "{status:?}"
        );
    }
}

#[test]
fn rule1_a_trigger_campaign_missing_from_the_catalog_counts_as_inactive() {
    let mut w = World::with([follow_on("F", "A", &[EmailReceived])]);
    let out = w.on(interaction("e1", "u1", "A", EmailReceived, T0));
    assert_eq!(
        ignored_only(&out),
        "IGNORED trigger_campaign_inactive u1 F@v1 trigger=e1 cause=e1 due=-"
    );
    // Deleting an active trigger campaign has the same effect.
    let mut w = World::with([campaign("A"), follow_on("F", "A", &[EmailReceived])]);
    assert!(w.remove_at("A", T0).is_empty());
    let out = w.on(interaction("e2", "u1", "A", EmailReceived, T0));
    assert_eq!(
        ignored_only(&out),
        "IGNORED trigger_campaign_inactive u1 F@v1 trigger=e2 cause=e2 due=-"
    );
}

#[test]
fn rule2_an_interaction_before_the_follow_on_was_published_is_ignored() {
    let mut w = World::with([
        campaign("A"),
        follow_on("F", "A", &[EmailReceived]).published_at(Some(T0)),
    ]);
    let out = w.on(interaction("e1", "u1", "A", EmailReceived, T0 - 1));
    assert_eq!(
        ignored_only(&out),
        "IGNORED before_publish u1 F@v1 trigger=e1 cause=e1 due=-"
    );
    // At the publish instant it counts.
    let out = w.on(interaction("e2", "u2", "A", EmailReceived, T0));
    assert_eq!(
        decisions(&out),
        ["SENT immediate u2 F@v1 trigger=e2 cause=e2 due=2026-11-02T10:00:00Z"]
    );
}

#[test]
fn rule3_an_interaction_before_starts_at_is_outside_the_window() {
    let mut w = World::with([
        campaign("A"),
        follow_on("F", "A", &[EmailReceived]).starts_at(T0 + DAY),
    ]);
    let out = w.on(interaction("e1", "u1", "A", EmailReceived, T0 + DAY - 1));
    assert_eq!(
        ignored_only(&out),
        "IGNORED outside_window u1 F@v1 trigger=e1 cause=e1 due=-"
    );
    let out = w.on(interaction("e2", "u2", "A", EmailReceived, T0 + DAY));
    assert_eq!(
        decisions(&out),
        ["SENT immediate u2 F@v1 trigger=e2 cause=e2 due=2026-11-03T10:00:00Z"]
    );
}

#[test]
fn rule3_an_interaction_at_or_after_ends_at_is_outside_the_window() {
    let mut w = World::with([
        campaign("A"),
        follow_on("F", "A", &[EmailReceived]).ends_at(T0 + DAY),
    ]);
    let out = w.on(interaction("e1", "u1", "A", EmailReceived, T0 + DAY - 1));
    assert_eq!(
        decisions(&out),
        ["SENT immediate u1 F@v1 trigger=e1 cause=e1 due=2026-11-03T09:59:59.999Z"]
    );
    let out = w.on(interaction("e2", "u2", "A", EmailReceived, T0 + DAY));
    assert_eq!(
        ignored_only(&out),
        "IGNORED outside_window u2 F@v1 trigger=e2 cause=e2 due=-"
    );
    let out = w.on(interaction("e3", "u3", "A", EmailReceived, T0 + 2 * DAY));
    assert_eq!(
        ignored_only(&out),
        "IGNORED outside_window u3 F@v1 trigger=e3 cause=e3 due=-"
    );
}

#[test]
fn rule3_a_due_time_at_or_after_ends_at_is_ignored() {
    let mut w = World::with([
        campaign("A"),
        follow_on("F", "A", &[EmailReceived])
            .after(DAY)
            .ends_at(T0 + 2 * DAY),
    ]);
    // Due exactly at ends_at.
    let out = w.on(interaction("e1", "u1", "A", EmailReceived, T0 + DAY));
    assert_eq!(
        ignored_only(&out),
        "IGNORED due_after_end u1 F@v1 trigger=e1 cause=e1 due=2026-11-04T10:00:00Z"
    );
    // Due a millisecond before.
    let out = w.on(interaction("e2", "u2", "A", EmailReceived, T0 + DAY - 1));
    assert_eq!(
        decisions(&out),
        ["SCHEDULED trigger u2 F@v1 trigger=e2 cause=e2 due=2026-11-04T09:59:59.999Z"]
    );
}

#[test]
fn rule4_never_reeligible_a_user_receives_a_follow_on_once() {
    let mut w = World::with([campaign("A"), follow_on("F", "A", &[EmailReceived])]);
    w.on(interaction("e1", "u1", "A", EmailReceived, T0));
    let out = w.on(interaction("e2", "u1", "A", EmailReceived, T0 + 300 * DAY));
    assert_eq!(
        ignored_only(&out),
        "IGNORED not_reeligible u1 F@v1 trigger=e2 cause=e2 due=2027-08-29T10:00:00Z"
    );
}

#[test]
fn rule4_reeligible_after_n_counted_from_the_due_time_of_the_last_send() {
    let mut w = World::with([
        campaign("A"),
        follow_on("F", "A", &[EmailReceived])
            .after(DAY)
            .reeligible_after(3 * DAY),
    ]);
    w.on(interaction("e1", "u1", "A", EmailReceived, T0));
    assert_eq!(sent_due(&w.advance(T0 + DAY)), ["2026-11-03T10:00:00Z"]);
    // Three days after the trigger, but not three days after the send: not yet.
    let out = w.on(interaction(
        "e2",
        "u1",
        "A",
        EmailReceived,
        T0 + 3 * DAY + HOUR,
    ));
    assert_eq!(
        ignored_only(&out),
        "IGNORED not_reeligible u1 F@v1 trigger=e2 cause=e2 due=2026-11-06T11:00:00Z"
    );
    let out = w.on(interaction(
        "e3",
        "u1",
        "A",
        EmailReceived,
        T0 + 4 * DAY - 1,
    ));
    assert_eq!(
        ignored_only(&out),
        "IGNORED not_reeligible u1 F@v1 trigger=e3 cause=e3 due=2026-11-07T09:59:59.999Z"
    );
    let out = w.on(interaction("e4", "u1", "A", EmailReceived, T0 + 4 * DAY));
    assert_eq!(
        decisions(&out),
        ["SCHEDULED trigger u1 F@v1 trigger=e4 cause=e4 due=2026-11-07T10:00:00Z"]
    );
}

#[test]
fn rule4_reeligibility_of_an_immediate_send_counts_from_the_trigger_time() {
    let mut w = World::with([
        campaign("A"),
        follow_on("F", "A", &[EmailReceived]).reeligible_after(3 * DAY),
    ]);
    // The send is emitted late (wall clock an hour after the trigger): the trigger time counts.
    let out = w.on_at(interaction("e1", "u1", "A", EmailReceived, T0), T0 + HOUR);
    assert_eq!(
        log(&out)[2],
        "put u/u1 pending=[] receipts=[F 2026-11-02T10:00:00Z]"
    );
    let out = w.on(interaction(
        "e2",
        "u1",
        "A",
        EmailReceived,
        T0 + 3 * DAY - 1,
    ));
    assert_eq!(
        ignored_only(&out),
        "IGNORED not_reeligible u1 F@v1 trigger=e2 cause=e2 due=2026-11-05T09:59:59.999Z"
    );
    let out = w.on(interaction("e3", "u1", "A", EmailReceived, T0 + 3 * DAY));
    assert_eq!(
        log(&out),
        [
            "send u1 F@v1 tpl-F trigger=e3 due=2026-11-05T10:00:00Z",
            "SENT immediate u1 F@v1 trigger=e3 cause=e3 due=2026-11-05T10:00:00Z",
            "put u/u1 pending=[] receipts=[F 2026-11-05T10:00:00Z]",
        ]
    );
}

#[test]
fn rule5_keep_first_ignores_a_repeated_trigger_while_pending() {
    let mut w = World::with([
        campaign("A"),
        follow_on("F", "A", &[EmailReceived]).after(DAY),
    ]);
    w.on(interaction("e1", "u1", "A", EmailReceived, T0));
    let out = w.on(interaction("e2", "u1", "A", EmailReceived, T0 + HOUR));
    assert_eq!(
        ignored_only(&out),
        "IGNORED already_pending u1 F@v1 trigger=e2 cause=e2 due=2026-11-03T11:00:00Z"
    );
    assert_eq!(
        log(&w.advance(T0 + 2 * DAY)),
        [
            "send u1 F@v1 tpl-F trigger=e1 due=2026-11-03T10:00:00Z",
            "FIRED due u1 F@v1 trigger=e1 cause=- due=2026-11-03T10:00:00Z",
            "put u/u1 pending=[] receipts=[F 2026-11-03T10:00:00Z]",
        ]
    );
}

#[test]
fn rule5_restart_cancels_the_pending_send_and_schedules_a_new_due_time() {
    let mut w = World::with([
        campaign("A"),
        follow_on("F", "A", &[EmailReceived]).after(DAY).restart(),
    ]);
    w.on(interaction("e1", "u1", "A", EmailReceived, T0));
    let out = w.on(interaction("e2", "u1", "A", EmailReceived, T0 + 6 * HOUR));
    assert_eq!(
        log(&out),
        [
            "CANCELLED restart u1 F@v1 trigger=e1 cause=e2 due=2026-11-03T10:00:00Z",
            "SCHEDULED restart u1 F@v1 trigger=e2 cause=e2 due=2026-11-03T16:00:00Z",
            "put u/u1 pending=[F@v1 e2 2026-11-03T16:00:00Z] receipts=[]",
        ]
    );
    assert!(w.advance(T0 + DAY).is_empty(), "the old due time is gone");
    assert_eq!(
        log(&w.advance(T0 + DAY + 6 * HOUR))[0],
        "send u1 F@v1 tpl-F trigger=e2 due=2026-11-03T16:00:00Z"
    );
}

// --------------------------------------------------------------------- backfill (rule 2)

/// F published at T0 + 1 day with a backfill start at T0 − 1 hour.
fn backfilled(f: CampaignBuilder) -> World {
    World::with([
        campaign("A"),
        f.published_at(Some(T0 + DAY)).backfill_since(T0 - HOUR),
    ])
}

#[test]
fn a_backfill_start_counts_triggers_from_it_on_and_the_decisions_say_so() {
    let mut w = backfilled(follow_on("F", "A", &[EmailReceived]).after(DAY));
    let out = w.on(interaction("e1", "u1", "A", EmailReceived, T0 - 2 * HOUR));
    assert_eq!(
        ignored_only(&out),
        "IGNORED before_publish u1 F@v1 trigger=e1 cause=e1 due=-"
    );
    let out = w.on(interaction("e2", "u2", "A", EmailReceived, T0 - HOUR));
    assert!(
        log(&out).contains(
            &"SCHEDULED backfill u2 F@v1 trigger=e2 cause=e2 due=2026-11-03T09:00:00Z".into()
        ),
        "{:?}",
        log(&out)
    );
    // From the publish time on, a trigger is a trigger.
    let out = w.on(interaction("e3", "u3", "A", EmailReceived, T0 + DAY));
    assert!(
        log(&out).contains(
            &"SCHEDULED trigger u3 F@v1 trigger=e3 cause=e3 due=2026-11-04T10:00:00Z".into()
        ),
        "{:?}",
        log(&out)
    );
    // The backfilled send fires like any other (it was due before e3).
    assert_eq!(
        log(&out)[0],
        "send u2 F@v1 tpl-F trigger=e2 due=2026-11-03T09:00:00Z"
    );
}

#[test]
fn an_immediate_backfilled_trigger_is_sent_at_once_with_reason_backfill() {
    let mut w = backfilled(follow_on("F", "A", &[EmailReceived]));
    let out = w.on(interaction("e1", "u1", "A", EmailReceived, T0));
    assert_eq!(
        log(&out),
        [
            "send u1 F@v1 tpl-F trigger=e1 due=2026-11-02T10:00:00Z",
            "SENT backfill u1 F@v1 trigger=e1 cause=e1 due=2026-11-02T10:00:00Z",
            "put u/u1 pending=[] receipts=[F 2026-11-02T10:00:00Z]",
        ]
    );
    // Once per user as ever: the receipt counts.
    let out = w.on(interaction("e2", "u1", "A", EmailReceived, T0 + 2 * DAY));
    assert_eq!(
        ignored_only(&out),
        "IGNORED not_reeligible u1 F@v1 trigger=e2 cause=e2 due=2026-11-04T10:00:00Z"
    );
}

#[test]
fn the_backfill_start_belongs_to_the_version_published_with_it() {
    let mut w = backfilled(follow_on("F", "A", &[EmailReceived]).after(DAY));
    assert!(log(&w.on(interaction("e1", "u1", "A", EmailReceived, T0)))
        .iter()
        .any(|l| l.starts_with("SCHEDULED backfill u1 F@v1")));
    // Version 2, published without a backfill start: the bound is the publish time again.
    w.apply(
        follow_on("F", "A", &[EmailReceived])
            .after(DAY)
            .published_at(Some(T0 + DAY))
            .version(2),
    );
    let out = w.on(interaction("e2", "u2", "A", EmailReceived, T0 + HOUR));
    assert_eq!(
        ignored_only(&out),
        "IGNORED before_publish u2 F@v2 trigger=e2 cause=e2 due=-"
    );
    // The pending send scheduled by the backfill keeps its version and fires.
    assert_eq!(
        log(&w.advance(T0 + DAY))[0],
        "send u1 F@v1 tpl-F trigger=e1 due=2026-11-03T10:00:00Z"
    );
}

#[test]
fn a_backfilled_trigger_that_replaces_a_pending_send_is_a_restart() {
    let mut w = backfilled(follow_on("F", "A", &[EmailReceived]).after(DAY).restart());
    w.on(interaction("e1", "u1", "A", EmailReceived, T0 - HOUR));
    let out = w.on(interaction("e2", "u1", "A", EmailReceived, T0));
    assert_eq!(
        log(&out)[..2],
        [
            "CANCELLED restart u1 F@v1 trigger=e1 cause=e2 due=2026-11-03T09:00:00Z",
            "SCHEDULED restart u1 F@v1 trigger=e2 cause=e2 due=2026-11-03T10:00:00Z",
        ]
    );
}

// --------------------------------------------------------------------- precedence (rules 1–5)

#[test]
fn precedence_follow_on_inactive_before_trigger_campaign_inactive() {
    let mut w = World::with([
        campaign("A").status(CampaignStatus::Stopped),
        follow_on("F", "A", &[EmailReceived])
            .status(CampaignStatus::Stopped)
            .published_at(Some(T0 + DAY))
            .starts_at(T0 + 2 * DAY),
    ]);
    let out = w.on(interaction("e1", "u1", "A", EmailReceived, T0));
    assert_eq!(
        ignored_only(&out),
        "IGNORED follow_on_inactive u1 F@v1 trigger=e1 cause=e1 due=-"
    );
}

#[test]
fn precedence_trigger_campaign_inactive_before_before_publish() {
    let mut w = World::with([
        campaign("A").status(CampaignStatus::Draft),
        follow_on("F", "A", &[EmailReceived]).published_at(Some(T0 + DAY)),
    ]);
    let out = w.on(interaction("e1", "u1", "A", EmailReceived, T0));
    assert_eq!(
        ignored_only(&out),
        "IGNORED trigger_campaign_inactive u1 F@v1 trigger=e1 cause=e1 due=-"
    );
}

#[test]
fn precedence_before_publish_before_outside_window() {
    let mut w = World::with([
        campaign("A"),
        follow_on("F", "A", &[EmailReceived])
            .published_at(Some(T0 + DAY))
            .starts_at(T0 + 2 * DAY),
    ]);
    let out = w.on(interaction("e1", "u1", "A", EmailReceived, T0));
    assert_eq!(
        ignored_only(&out),
        "IGNORED before_publish u1 F@v1 trigger=e1 cause=e1 due=-"
    );
}

#[test]
fn precedence_outside_window_before_not_reeligible() {
    let mut w = World::with([
        campaign("A"),
        follow_on("F", "A", &[EmailReceived]).ends_at(T0 + DAY),
    ]);
    w.on(interaction("e1", "u1", "A", EmailReceived, T0));
    let out = w.on(interaction("e2", "u1", "A", EmailReceived, T0 + DAY));
    assert_eq!(
        ignored_only(&out),
        "IGNORED outside_window u1 F@v1 trigger=e2 cause=e2 due=-"
    );
}

#[test]
fn precedence_due_after_end_before_not_reeligible() {
    let mut w = World::with([
        campaign("A"),
        follow_on("F", "A", &[EmailReceived])
            .after(DAY)
            .ends_at(T0 + 3 * DAY),
    ]);
    w.on(interaction("e1", "u1", "A", EmailReceived, T0));
    assert_eq!(sends(&w.advance(T0 + DAY)).len(), 1);
    let out = w.on(interaction("e2", "u1", "A", EmailReceived, T0 + 2 * DAY));
    assert_eq!(
        ignored_only(&out),
        "IGNORED due_after_end u1 F@v1 trigger=e2 cause=e2 due=2026-11-05T10:00:00Z"
    );
}

#[test]
fn precedence_not_reeligible_before_already_pending() {
    // v1 makes the user re-eligible a day after the send; v2 makes it ten days while the
    // user has a pending send again: both rule 4 and rule 5 fail, rule 4 is the reason.
    let v1 = follow_on("F", "A", &[EmailReceived])
        .after(DAY)
        .reeligible_after(DAY);
    let mut w = World::with([campaign("A"), v1.clone()]);
    w.on(interaction("e1", "u1", "A", EmailReceived, T0));
    assert_eq!(sends(&w.advance(T0 + DAY)).len(), 1);
    let out = w.on(interaction("e2", "u1", "A", EmailReceived, T0 + 2 * DAY));
    assert_eq!(
        decisions(&out),
        ["SCHEDULED trigger u1 F@v1 trigger=e2 cause=e2 due=2026-11-05T10:00:00Z"]
    );
    assert!(w.apply(v1.version(2).reeligible_after(10 * DAY)).is_empty());
    let out = w.on(interaction(
        "e3",
        "u1",
        "A",
        EmailReceived,
        T0 + 2 * DAY + HOUR,
    ));
    assert_eq!(
        ignored_only(&out),
        "IGNORED not_reeligible u1 F@v2 trigger=e3 cause=e3 due=2026-11-05T11:00:00Z"
    );
}

// =============================================================================== exceptions

#[test]
fn an_event_that_is_both_exception_and_trigger_cancels_and_reschedules() {
    // "Remind a day after the last push": a new push cancels the pending reminder (exception)
    // and schedules a new one (trigger), even with KEEP_FIRST.
    let mut w = World::with([
        campaign("A"),
        follow_on("F", "A", &[PushReceived])
            .after(DAY)
            .except(on(&[PushReceived])),
    ]);
    let out = w.on(interaction("p1", "u1", "A", PushReceived, T0));
    assert_eq!(
        decisions(&out),
        ["SCHEDULED trigger u1 F@v1 trigger=p1 cause=p1 due=2026-11-03T10:00:00Z"],
        "the trigger event does not cancel its own pending send"
    );
    let out = w.on(interaction("p2", "u1", "A", PushReceived, T0 + 2 * HOUR));
    assert_eq!(
        log(&out),
        [
            "CANCELLED exception u1 F@v1 trigger=p1 cause=p2 due=2026-11-03T10:00:00Z",
            "SCHEDULED trigger u1 F@v1 trigger=p2 cause=p2 due=2026-11-03T12:00:00Z",
            "put u/u1 pending=[F@v1 p2 2026-11-03T12:00:00Z] receipts=[]",
        ]
    );
}

#[test]
fn the_trigger_event_never_cancels_itself_even_when_redelivered() {
    let mut w = World::with([
        campaign("A"),
        follow_on("F", "A", &[EmailOpen])
            .after(DAY)
            .except(on(&[EmailOpen])),
    ]);
    w.on(interaction("o1", "u1", "A", EmailOpen, T0));
    // The same record again (at-least-once upstream): not an exception to itself.
    let out = w.on(interaction("o1", "u1", "A", EmailOpen, T0));
    assert_eq!(
        ignored_only(&out),
        "IGNORED already_pending u1 F@v1 trigger=o1 cause=o1 due=2026-11-03T10:00:00Z"
    );
    assert_eq!(sent_due(&w.advance(T0 + DAY)), ["2026-11-03T10:00:00Z"]);
}

#[test]
fn a_redelivered_trigger_under_restart_leaves_the_same_pending_send() {
    let mut w = World::with([
        campaign("A"),
        follow_on("F", "A", &[EmailReceived]).after(DAY).restart(),
    ]);
    w.on(interaction("e1", "u1", "A", EmailReceived, T0));
    // The same record again (at-least-once upstream). SPEC is silent on RESTART with the
    // pending send's own trigger; the engine replaces the pending send with an identical one
    // (same due time, same trigger, so the same command id) and says so in the log.
    let out = w.on(interaction("e1", "u1", "A", EmailReceived, T0));
    assert_eq!(
        log(&out),
        [
            "CANCELLED restart u1 F@v1 trigger=e1 cause=e1 due=2026-11-03T10:00:00Z",
            "SCHEDULED restart u1 F@v1 trigger=e1 cause=e1 due=2026-11-03T10:00:00Z",
            "put u/u1 pending=[F@v1 e1 2026-11-03T10:00:00Z] receipts=[]",
        ]
    );
    let out = w.advance(T0 + DAY);
    assert_eq!(
        sends(&out)
            .iter()
            .map(|s| s.command_id.clone())
            .collect::<Vec<_>>(),
        [command_id("F", 1, "u1", "e1")]
    );
}

#[test]
fn an_exception_exactly_at_the_trigger_time_cancels() {
    let mut w = World::with([
        campaign("A"),
        follow_on("F", "A", &[EmailReceived])
            .after(DAY)
            .except(on(&[EmailOpen]))
            .except(custom_event("unsubscribed")),
    ]);
    w.on(interaction("e1", "u1", "A", EmailReceived, T0));
    w.on(interaction("e2", "u2", "A", EmailReceived, T0));
    let out = w.on(interaction("o1", "u1", "A", EmailOpen, T0));
    assert_eq!(
        decisions(&out),
        ["CANCELLED exception u1 F@v1 trigger=e1 cause=o1 due=2026-11-03T10:00:00Z"]
    );
    let out = w.on(custom("x2", "u2", "unsubscribed", T0));
    assert_eq!(
        decisions(&out),
        ["CANCELLED exception u2 F@v1 trigger=e2 cause=x2 due=2026-11-03T10:00:00Z"]
    );
}

#[test]
fn an_exception_exactly_at_the_due_time_does_not_cancel() {
    let mut w = World::with([
        campaign("A"),
        follow_on("F", "A", &[EmailReceived])
            .after(DAY)
            .except(on(&[EmailOpen]))
            .except(session_start()),
    ]);
    w.on(interaction("e1", "u1", "A", EmailReceived, T0));
    w.on(interaction("e2", "u2", "A", EmailReceived, T0 + HOUR));
    // The timer due at t fires before the record at t is processed.
    let out = w.on(interaction("o1", "u1", "A", EmailOpen, T0 + DAY));
    assert_eq!(
        log(&out),
        [
            "send u1 F@v1 tpl-F trigger=e1 due=2026-11-03T10:00:00Z",
            "FIRED due u1 F@v1 trigger=e1 cause=- due=2026-11-03T10:00:00Z",
            "put u/u1 pending=[] receipts=[F 2026-11-03T10:00:00Z]",
        ]
    );
    let out = w.on(session("s2", "u2", T0 + DAY + HOUR));
    assert_eq!(
        decisions(&out),
        ["FIRED due u2 F@v1 trigger=e2 cause=- due=2026-11-03T11:00:00Z"]
    );
}

#[test]
fn an_exception_before_the_trigger_does_not_count() {
    let mut w = World::with([
        campaign("A"),
        follow_on("F", "A", &[EmailReceived])
            .after(DAY)
            .except(custom_event("unsubscribed")),
    ]);
    assert!(w
        .on(custom("x0", "u1", "unsubscribed", T0 - HOUR))
        .is_empty());
    w.on(interaction("e1", "u1", "A", EmailReceived, T0));
    // The same for an exception that happened before the trigger but arrives after it.
    let out = w.on(custom("x1", "u1", "unsubscribed", T0 - 1));
    assert!(out.is_empty(), "{:?}", log(&out));
    assert_eq!(w.engine.counters().late_records, 1);
    assert_eq!(sent_due(&w.advance(T0 + DAY)), ["2026-11-03T10:00:00Z"]);
}

#[test]
fn a_user_cancelled_by_an_exception_stays_eligible() {
    let mut w = resend_to_non_openers();
    w.on(interaction("e1", "u1", "A", EmailReceived, T0));
    w.on(interaction("o1", "u1", "A", EmailOpen, T0 + HOUR));
    let out = w.on(interaction("e2", "u1", "A", EmailReceived, T0 + 3 * DAY));
    assert_eq!(
        decisions(&out),
        ["SCHEDULED trigger u1 F@v1 trigger=e2 cause=e2 due=2026-11-12T10:00:00Z"]
    );
}

#[test]
fn exception_interaction_defaults_to_the_trigger_campaign() {
    let mut w = World::with([
        campaign("A"),
        campaign("B"),
        follow_on("F", "A", &[EmailReceived])
            .after(DAY)
            .except(on(&[EmailOpen])),
    ]);
    w.on(interaction("e1", "u1", "A", EmailReceived, T0));
    // The same kind on another campaign, another kind on A, another user: no cancellation.
    assert!(w
        .on(interaction("o1", "u1", "B", EmailOpen, T0 + 1))
        .is_empty());
    assert!(w
        .on(interaction("c1", "u1", "A", EmailClick, T0 + 2))
        .is_empty());
    assert!(w
        .on(interaction("o2", "u2", "A", EmailOpen, T0 + 3))
        .is_empty());
    let out = w.on(interaction("o3", "u1", "A", EmailOpen, T0 + 4));
    assert_eq!(
        decisions(&out),
        ["CANCELLED exception u1 F@v1 trigger=e1 cause=o3 due=2026-11-03T10:00:00Z"]
    );
}

#[test]
fn exception_interaction_on_another_campaign() {
    let mut w = World::with([
        campaign("A"),
        campaign("B"),
        follow_on("F", "A", &[EmailReceived])
            .after(DAY)
            .except(on_campaign("B", &[EmailClick])),
    ]);
    w.on(interaction("e1", "u1", "A", EmailReceived, T0));
    assert!(w
        .on(interaction("c1", "u1", "A", EmailClick, T0 + 1))
        .is_empty());
    let out = w.on(interaction("c2", "u1", "B", EmailClick, T0 + 2));
    assert_eq!(
        decisions(&out),
        ["CANCELLED exception u1 F@v1 trigger=e1 cause=c2 due=2026-11-03T10:00:00Z"]
    );
}

#[test]
fn exception_custom_event_by_name() {
    let mut w = World::with([
        campaign("A"),
        follow_on("F", "A", &[EmailReceived])
            .after(DAY)
            .except(custom_event("unsubscribed")),
    ]);
    w.on(interaction("e1", "u1", "A", EmailReceived, T0));
    assert!(w.on(custom("x1", "u1", "browsed", T0 + 1)).is_empty());
    assert!(w.on(custom("x2", "u2", "unsubscribed", T0 + 2)).is_empty());
    assert!(w.on(bought("x3", "u1", "unsubscribed", T0 + 3)).is_empty());
    let out = w.on(custom("x4", "u1", "unsubscribed", T0 + 4));
    assert_eq!(
        decisions(&out),
        ["CANCELLED exception u1 F@v1 trigger=e1 cause=x4 due=2026-11-03T10:00:00Z"]
    );
}

#[test]
fn exception_purchase_of_any_product() {
    let mut w = World::with([
        campaign("A"),
        follow_on("F", "A", &[EmailReceived])
            .after(DAY)
            .except(purchase()),
    ]);
    w.on(interaction("e1", "u1", "A", EmailReceived, T0));
    assert!(w.on(custom("x1", "u1", "sku-1", T0 + 1)).is_empty());
    let out = w.on(bought("b1", "u1", "sku-1", T0 + 2));
    assert_eq!(
        decisions(&out),
        ["CANCELLED exception u1 F@v1 trigger=e1 cause=b1 due=2026-11-03T10:00:00Z"]
    );
}

#[test]
fn exception_purchase_of_one_product() {
    let mut w = World::with([
        campaign("A"),
        follow_on("F", "A", &[EmailReceived])
            .after(DAY)
            .except(purchase_of("sku-1")),
    ]);
    w.on(interaction("e1", "u1", "A", EmailReceived, T0));
    assert!(w.on(bought("b1", "u1", "sku-2", T0 + 1)).is_empty());
    let out = w.on(bought("b2", "u1", "sku-1", T0 + 2));
    assert_eq!(
        decisions(&out),
        ["CANCELLED exception u1 F@v1 trigger=e1 cause=b2 due=2026-11-03T10:00:00Z"]
    );
}

#[test]
fn exception_session_start() {
    let mut w = World::with([
        campaign("A"),
        follow_on("F", "A", &[EmailReceived])
            .after(DAY)
            .except(session_start()),
    ]);
    w.on(interaction("e1", "u1", "A", EmailReceived, T0));
    assert!(w.on(custom("x1", "u1", "session_start", T0 + 1)).is_empty());
    let out = w.on(session("s1", "u1", T0 + 2));
    assert_eq!(
        decisions(&out),
        ["CANCELLED exception u1 F@v1 trigger=e1 cause=s1 due=2026-11-03T10:00:00Z"]
    );
}

// =============================================================================== delays

/// The due time of one trigger at `t` under `rule` (on campaign A), for user `u1`.
fn due_of(rule: CampaignBuilder, event: InputEvent) -> String {
    let mut w = World::with([campaign("A"), rule]);
    let out = w.on(event);
    let d = decision_records(&out);
    assert_eq!(d.len(), 1, "{:?}", log(&out));
    assert_eq!(d[0].outcome, DecisionOutcome::Scheduled, "{:?}", log(&out));
    at(d[0].due_at.expect("a due time"))
}

fn received(t: i64) -> InputEvent {
    interaction("e1", "u1", "A", EmailReceived, t)
}

#[test]
fn delay_after_adds_the_duration() {
    let rule = || follow_on("F", "A", &[EmailReceived]);
    assert_eq!(
        due_of(rule().after(90 * MIN), received(T0)),
        "2026-11-02T11:30:00Z"
    );
    assert_eq!(
        due_of(rule().after(30 * DAY), received(T0)),
        "2026-12-02T10:00:00Z"
    );
    // A day is 86,400 s, also across a DST change of the user's zone.
    assert_eq!(
        due_of(
            rule().after(DAY).zone("Europe/Berlin"),
            received(ts("2026-10-24T12:00:00Z"))
        ),
        "2026-10-25T12:00:00Z"
    );
}

#[test]
fn delay_next_weekday_is_strictly_after_the_local_date() {
    let wednesday_9 =
        || follow_on("F", "A", &[EmailReceived]).next_weekday(Weekday::Wednesday, "09:00");
    // Monday → this Wednesday.
    assert_eq!(due_of(wednesday_9(), received(T0)), "2026-11-04T09:00:00Z");
    // Tuesday late evening → the next day.
    assert_eq!(
        due_of(wednesday_9(), received(ts("2026-11-03T23:59:59Z"))),
        "2026-11-04T09:00:00Z"
    );
    // On a Wednesday, even before 09:00: a week later.
    assert_eq!(
        due_of(wednesday_9(), received(ts("2026-11-04T08:00:00Z"))),
        "2026-11-11T09:00:00Z"
    );
    assert_eq!(
        due_of(wednesday_9(), received(ts("2026-11-04T10:00:00Z"))),
        "2026-11-11T09:00:00Z"
    );
}

#[test]
fn delay_next_weekday_uses_the_local_date_of_the_trigger() {
    // Tuesday 23:30 UTC is already Wednesday 00:30 in Berlin: a week later, 09:00 CET.
    let rule = follow_on("F", "A", &[EmailReceived])
        .next_weekday(Weekday::Wednesday, "09:00")
        .zone("Europe/Berlin");
    assert_eq!(
        due_of(rule, received(ts("2026-11-03T23:30:00Z"))),
        "2026-11-11T08:00:00Z"
    );
}

#[test]
fn delay_calendar_days_counts_local_dates() {
    let two_days_9 = || follow_on("F", "A", &[EmailReceived]).calendar_days(2, "09:00");
    assert_eq!(due_of(two_days_9(), received(T0)), "2026-11-04T09:00:00Z");
    assert_eq!(
        due_of(two_days_9(), received(ts("2026-11-02T23:59:00Z"))),
        "2026-11-04T09:00:00Z"
    );
    assert_eq!(
        due_of(two_days_9(), received(ts("2026-11-02T00:00:00Z"))),
        "2026-11-04T09:00:00Z"
    );
    // Across the spring change the local wall time is kept (10:00 CEST = 08:00 UTC).
    let berlin = follow_on("F", "A", &[EmailReceived])
        .calendar_days(2, "10:00")
        .zone("Europe/Berlin");
    assert_eq!(
        due_of(berlin, received(ts("2026-03-28T12:00:00Z"))),
        "2026-03-30T08:00:00Z"
    );
}

#[test]
fn delay_local_time_zone_is_the_users_else_the_rules_else_utc() {
    let zoned = || {
        follow_on("F", "A", &[EmailReceived])
            .calendar_days(1, "09:00")
            .zone("Europe/Berlin")
    };
    let unzoned = || follow_on("F", "A", &[EmailReceived]).calendar_days(1, "09:00");
    // Monday 05:00 in New York → Tuesday 09:00 EST.
    assert_eq!(
        due_of(zoned(), received(T0).zone("America/New_York")),
        "2026-11-03T14:00:00Z"
    );
    assert_eq!(due_of(zoned(), received(T0)), "2026-11-03T08:00:00Z");
    assert_eq!(due_of(unzoned(), received(T0)), "2026-11-03T09:00:00Z");
    assert_eq!(
        due_of(unzoned(), received(T0).zone("Asia/Tokyo")),
        "2026-11-03T00:00:00Z"
    );
}

#[test]
fn delay_unknown_user_time_zone_falls_back_to_the_rule_and_is_counted() {
    let mut w = World::with([
        campaign("A"),
        campaign("B"),
        follow_on("F", "A", &[EmailReceived])
            .calendar_days(1, "09:00")
            .zone("Europe/Berlin"),
        follow_on("G", "B", &[EmailReceived]).calendar_days(1, "09:00"),
    ]);
    let out = w.on(interaction("e1", "u1", "A", EmailReceived, T0).zone("Mars/Olympus_Mons"));
    assert_eq!(
        decisions(&out),
        ["SCHEDULED trigger u1 F@v1 trigger=e1 cause=e1 due=2026-11-03T08:00:00Z"]
    );
    assert_eq!(w.engine.counters().unknown_time_zones, 1);
    // Without a rule zone: UTC.
    let out = w.on(interaction("e2", "u1", "B", EmailReceived, T0).zone("not a zone"));
    assert_eq!(
        decisions(&out),
        ["SCHEDULED trigger u1 G@v1 trigger=e2 cause=e2 due=2026-11-03T09:00:00Z"]
    );
    assert_eq!(w.engine.counters().unknown_time_zones, 2);
}

#[test]
fn delay_dst_gap_moves_forward_by_the_gap_in_berlin() {
    // Sunday 2026-03-29 02:30 does not exist in Berlin (02:00 → 03:00): 03:30 CEST.
    let rule = follow_on("F", "A", &[EmailReceived])
        .calendar_days(1, "02:30")
        .zone("Europe/Berlin");
    assert_eq!(
        due_of(rule, received(ts("2026-03-28T12:00:00Z"))),
        "2026-03-29T01:30:00Z"
    );
}

#[test]
fn delay_dst_overlap_takes_the_earlier_instant_in_berlin() {
    // Sunday 2026-10-25 02:30 happens twice in Berlin: the first, 02:30 CEST.
    let rule = follow_on("F", "A", &[EmailReceived])
        .calendar_days(1, "02:30")
        .zone("Europe/Berlin");
    assert_eq!(
        due_of(rule, received(ts("2026-10-24T12:00:00Z"))),
        "2026-10-25T00:30:00Z"
    );
}

#[test]
fn delay_dst_gap_and_overlap_in_new_york_with_the_users_zone() {
    let sunday = |time: &str| {
        follow_on("F", "A", &[EmailReceived])
            .next_weekday(Weekday::Sunday, time)
            .zone("Europe/Berlin")
    };
    // 2026-03-08 02:30 does not exist in New York: 03:30 EDT.
    assert_eq!(
        due_of(
            sunday("02:30"),
            received(ts("2026-03-04T12:00:00Z")).zone("America/New_York")
        ),
        "2026-03-08T07:30:00Z"
    );
    // 2026-11-01 01:30 happens twice: the first, 01:30 EDT.
    assert_eq!(
        due_of(
            sunday("01:30"),
            received(ts("2026-10-28T12:00:00Z")).zone("America/New_York")
        ),
        "2026-11-01T05:30:00Z"
    );
}

#[test]
fn maximum_delay_is_enforced_when_the_campaign_is_validated() {
    let rule = || follow_on("F", "A", &[EmailReceived]);
    let mut engine = Engine::new(Limits::default());
    let mut out = Vec::new();
    for bad in [
        rule().after(30 * DAY + SEC).build(),
        rule().calendar_days(31, "09:00").build(),
        rule().calendar_days(0, "09:00").build(),
        // Exceptions need a delay.
        rule().except(purchase()).build(),
    ] {
        assert!(
            engine.apply_campaign(&bad, T0, &mut out).is_err(),
            "{:?} should be rejected",
            bad.follow_on.as_ref().map(|r| &r.delay)
        );
    }
    assert!(engine
        .apply_campaign(&rule().after(30 * DAY).build(), T0, &mut out)
        .is_ok());
    assert!(engine.catalog().campaign("F").is_some());
    let mut engine = Engine::new(Limits::with_max_delay(60 * 86_400).unwrap());
    assert!(engine
        .apply_campaign(&rule().after(45 * DAY).build(), T0, &mut out)
        .is_ok());
    assert!(out.is_empty());
}

// =============================================================================== firing

#[test]
fn a_timer_fires_by_stream_time_before_the_record_that_reaches_it() {
    let mut w = resend_to_non_openers();
    w.on(interaction("e1", "u1", "A", EmailReceived, T0));
    // Another user's record at exactly the due time: the timer fires first.
    let out = w.on(interaction("e2", "u2", "A", EmailReceived, T0 + 7 * DAY));
    assert_eq!(
        log(&out),
        [
            "send u1 F@v1 tpl-F trigger=e1 due=2026-11-09T10:00:00Z",
            "FIRED due u1 F@v1 trigger=e1 cause=- due=2026-11-09T10:00:00Z",
            "put u/u1 pending=[] receipts=[F 2026-11-09T10:00:00Z]",
            "SCHEDULED trigger u2 F@v1 trigger=e2 cause=e2 due=2026-11-16T10:00:00Z",
            "put u/u2 pending=[F@v1 e2 2026-11-16T10:00:00Z] receipts=[]",
        ]
    );
    assert_eq!(w.engine.clock(), Some(T0 + 7 * DAY));
    // A user event of a third user later than the due time fires u2 (during lag: the wall
    // clock is a day later).
    let out = w.on_at(session("s3", "u3", T0 + 15 * DAY), T0 + 16 * DAY);
    assert_eq!(sent_due(&out), ["2026-11-16T10:00:00Z"]);
    assert_eq!(sends(&out)[0].emitted_at, T0 + 16 * DAY);
}

#[test]
fn a_caught_up_task_fires_by_the_wall_clock() {
    let mut w = resend_to_non_openers();
    w.on(interaction("e1", "u1", "A", EmailReceived, T0));
    assert_eq!(w.engine.next_due(), Some(T0 + 7 * DAY));
    assert!(w.advance(T0 + 7 * DAY - 1).is_empty());
    assert_eq!(w.engine.clock(), Some(T0 + 7 * DAY - 1));
    let out = w.advance(T0 + 7 * DAY + 250);
    assert_eq!(
        decisions(&out),
        ["FIRED due u1 F@v1 trigger=e1 cause=- due=2026-11-09T10:00:00Z"]
    );
    assert_eq!(sends(&out)[0].emitted_at, T0 + 7 * DAY + 250);
    assert_eq!(w.engine.next_due(), None);
    assert!(w.advance(T0 + 30 * DAY).is_empty(), "a timer fires once");
}

#[test]
fn advancing_to_a_wall_clock_behind_stream_time_changes_nothing() {
    // Event times can run ahead of the wall clock (producer clock skew): the clock never
    // goes back, nothing fires, and no *record* was late.
    let mut w = resend_to_non_openers();
    w.on(interaction("e1", "u1", "A", EmailReceived, T0 + HOUR));
    assert!(w.advance(T0).is_empty());
    assert_eq!(w.engine.clock(), Some(T0 + HOUR));
    assert_eq!(w.engine.next_due(), Some(T0 + HOUR + 7 * DAY));
    assert_eq!(
        w.engine.counters().late_records,
        0,
        "late_records counts records older than the clock, not wall-clock advances"
    );
}

#[test]
fn timers_at_the_same_instant_fire_in_user_then_follow_on_order() {
    // F2 is applied first, so it is evaluated first on a trigger; users are triggered out of
    // order; all six sends are due at the same instant.
    let mut w = World::with([
        campaign("A"),
        follow_on("F2", "A", &[EmailReceived]).after(DAY),
        follow_on("F1", "A", &[EmailReceived]).after(DAY),
    ]);
    for (i, user) in ["bob", "carol", "alice"].into_iter().enumerate() {
        let out = w.on(interaction(&format!("e{i}"), user, "A", EmailReceived, T0));
        assert_eq!(decisions(&out).len(), 2);
    }
    let out = w.advance(T0 + DAY);
    let fired: Vec<String> = sends(&out)
        .iter()
        .map(|s| format!("{} {}", s.user_id, s.campaign_id))
        .collect();
    assert_eq!(
        fired,
        ["alice F1", "alice F2", "bob F1", "bob F2", "carol F1", "carol F2"]
    );
    assert_eq!(
        decisions(&out),
        [
            "FIRED due alice F1@v1 trigger=e2 cause=- due=2026-11-03T10:00:00Z",
            "FIRED due alice F2@v1 trigger=e2 cause=- due=2026-11-03T10:00:00Z",
            "FIRED due bob F1@v1 trigger=e0 cause=- due=2026-11-03T10:00:00Z",
            "FIRED due bob F2@v1 trigger=e0 cause=- due=2026-11-03T10:00:00Z",
            "FIRED due carol F1@v1 trigger=e1 cause=- due=2026-11-03T10:00:00Z",
            "FIRED due carol F2@v1 trigger=e1 cause=- due=2026-11-03T10:00:00Z",
        ]
    );
}

#[test]
fn firing_a_follow_on_that_is_no_longer_active_drops_it() {
    // Back to DRAFT (not stopped): the pending send stays until it comes due, then is dropped.
    let f = follow_on("F", "A", &[EmailReceived]).after(DAY);
    let mut w = World::with([campaign("A"), f.clone()]);
    w.on(interaction("e1", "u1", "A", EmailReceived, T0));
    assert!(w
        .apply(f.version(2).status(CampaignStatus::Draft))
        .is_empty());
    assert_eq!(w.engine.pending_count(), 1);
    assert_eq!(
        log(&w.advance(T0 + DAY)),
        [
            "DROPPED follow_on_inactive u1 F@v1 trigger=e1 cause=- due=2026-11-03T10:00:00Z",
            "clear u/u1",
        ]
    );
}

/// Two pending sends of F (u2 triggered first) and one of G.
fn two_users_pending() -> (World, CampaignBuilder) {
    let f = follow_on("F", "A", &[EmailReceived]).after(DAY);
    let mut w = World::with([
        campaign("A"),
        f.clone(),
        follow_on("G", "A", &[EmailReceived]).after(DAY),
    ]);
    w.on(interaction("e2", "u2", "A", EmailReceived, T0));
    w.on(interaction("e1", "u1", "A", EmailReceived, T0 + HOUR));
    assert_eq!(w.engine.pending_count(), 4);
    (w, f)
}

#[test]
fn stopping_or_archiving_the_follow_on_drops_its_pending_sends_at_once() {
    for status in [CampaignStatus::Stopped, CampaignStatus::Archived] {
        let (mut w, f) = two_users_pending();
        let out = w.apply_at(f.version(2).status(status), T0 + 2 * HOUR);
        assert_eq!(
            log(&out),
            [
                "DROPPED follow_on_inactive u1 F@v1 trigger=e1 cause=- due=2026-11-03T11:00:00Z",
                "put u/u1 pending=[G@v1 e1 2026-11-03T11:00:00Z] receipts=[]",
                "DROPPED follow_on_inactive u2 F@v1 trigger=e2 cause=- due=2026-11-03T10:00:00Z",
                "put u/u2 pending=[G@v1 e2 2026-11-03T10:00:00Z] receipts=[]",
            ],
            "{status:?}"
        );
        assert!(decision_records(&out)
            .iter()
            .all(|d| d.decided_at == T0 + 2 * HOUR));
        assert_eq!(w.engine.pending_count(), 2);
        let out = w.advance(T0 + 2 * DAY);
        assert_eq!(
            sends(&out)
                .iter()
                .map(|s| &s.campaign_id)
                .collect::<Vec<_>>(),
            ["G", "G"]
        );
    }
}

#[test]
fn deleting_the_follow_on_drops_its_pending_sends_at_once() {
    let (mut w, _) = two_users_pending();
    let out = w.remove_at("F", T0 + 2 * HOUR);
    assert_eq!(
        decisions(&out),
        [
            "DROPPED follow_on_deleted u1 F@v1 trigger=e1 cause=- due=2026-11-03T11:00:00Z",
            "DROPPED follow_on_deleted u2 F@v1 trigger=e2 cause=- due=2026-11-03T10:00:00Z",
        ]
    );
    assert_eq!(w.engine.pending_count(), 2);
    // No trigger for F any more.
    let out = w.on(interaction("e3", "u3", "A", EmailReceived, T0 + 3 * HOUR));
    assert_eq!(
        decisions(&out),
        ["SCHEDULED trigger u3 G@v1 trigger=e3 cause=e3 due=2026-11-03T13:00:00Z"]
    );
    assert!(sends(&w.advance(T0 + 2 * DAY))
        .iter()
        .all(|s| s.campaign_id == "G"));
}

#[test]
fn firing_at_or_past_ends_at_drops() {
    let f = follow_on("F", "A", &[EmailReceived]).after(7 * DAY);
    let mut w = World::with([campaign("A"), f.clone()]);
    w.on(interaction("e1", "u1", "A", EmailReceived, T0));
    // The window is cut short after the send was scheduled.
    assert!(w.apply(f.version(2).ends_at(T0 + 7 * DAY)).is_empty());
    assert_eq!(
        log(&w.advance(T0 + 7 * DAY)),
        [
            "DROPPED past_end u1 F@v1 trigger=e1 cause=- due=2026-11-09T10:00:00Z",
            "clear u/u1",
        ]
    );
}

#[test]
fn overdue_drop_if_late_by_drops_late_timers_and_sends_timely_ones() {
    let mut w = World::with([
        campaign("A"),
        follow_on("F", "A", &[EmailReceived])
            .after(DAY)
            .drop_if_late_by(HOUR),
    ]);
    w.on(interaction("e1", "u1", "A", EmailReceived, T0));
    w.on(interaction("e2", "u2", "A", EmailReceived, T0 + 2 * HOUR));
    w.on(interaction(
        "e3",
        "u3",
        "A",
        EmailReceived,
        T0 + 2 * HOUR + 1,
    ));
    // The task comes back at wall clock due(u2) + 1h: u1 is 3h late, u2 exactly 1h (not more
    // than the bound), u3 a millisecond less.
    let now = T0 + DAY + 3 * HOUR;
    let out = w.advance_at(now, now);
    assert_eq!(
        log(&out),
        [
            "DROPPED overdue u1 F@v1 trigger=e1 cause=- due=2026-11-03T10:00:00Z",
            "clear u/u1",
            "send u2 F@v1 tpl-F trigger=e2 due=2026-11-03T12:00:00Z",
            "FIRED due u2 F@v1 trigger=e2 cause=- due=2026-11-03T12:00:00Z",
            "put u/u2 pending=[] receipts=[F 2026-11-03T12:00:00Z]",
            "send u3 F@v1 tpl-F trigger=e3 due=2026-11-03T12:00:00.001Z",
            "FIRED due u3 F@v1 trigger=e3 cause=- due=2026-11-03T12:00:00.001Z",
            "put u/u3 pending=[] receipts=[F 2026-11-03T12:00:00.001Z]",
        ]
    );
    assert!(sends(&out).iter().all(|s| s.emitted_at == now));
    // A dropped send is not a receipt: u1 is still eligible under NEVER.
    let out = w.on(interaction("e4", "u1", "A", EmailReceived, now + HOUR));
    assert_eq!(
        decisions(&out),
        ["SCHEDULED trigger u1 F@v1 trigger=e4 cause=e4 due=2026-11-04T14:00:00Z"]
    );
}

#[test]
fn overdue_send_sends_however_late() {
    let mut w = World::with([
        campaign("A"),
        follow_on("F", "A", &[EmailReceived]).after(DAY),
    ]);
    w.on(interaction("e1", "u1", "A", EmailReceived, T0));
    let out = w.advance_at(T0 + 40 * DAY, T0 + 40 * DAY);
    let s = sends(&out);
    assert_eq!(s.len(), 1);
    assert_eq!((s[0].due_at, s[0].emitted_at), (T0 + DAY, T0 + 40 * DAY));
}

// =============================================================================== versions

#[test]
fn a_pending_send_keeps_its_versions_rule_and_new_triggers_use_the_new_version() {
    let v1 = follow_on("F", "A", &[EmailReceived])
        .after(7 * DAY)
        .except(on(&[EmailOpen]))
        .message(Channel::Email, "tpl-v1", &[("subject", "one")]);
    let v2 = follow_on("F", "A", &[EmailReceived])
        .version(2)
        .after(DAY)
        .except(custom_event("x"))
        .message(Channel::Push, "tpl-v2", &[("title", "two")]);
    let mut w = World::with([campaign("A"), v1]);
    w.on(interaction("e1", "u1", "A", EmailReceived, T0));
    w.on(interaction("e2", "u2", "A", EmailReceived, T0));
    assert!(w.apply(v2).is_empty());
    // v1's exceptions still apply to v1's pending sends; v2's do not.
    assert!(w.on(custom("x1", "u1", "x", T0 + 2 * HOUR)).is_empty());
    let out = w.on(interaction("e3", "u3", "A", EmailReceived, T0 + 3 * HOUR));
    assert_eq!(
        log(&out),
        [
            "put r/F/2",
            "SCHEDULED trigger u3 F@v2 trigger=e3 cause=e3 due=2026-11-03T13:00:00Z",
            "put u/u3 pending=[F@v2 e3 2026-11-03T13:00:00Z] receipts=[]",
        ]
    );
    let out = w.on(interaction("o2", "u2", "A", EmailOpen, T0 + 4 * HOUR));
    assert_eq!(
        decisions(&out),
        ["CANCELLED exception u2 F@v1 trigger=e2 cause=o2 due=2026-11-09T10:00:00Z"]
    );
    let out = w.advance(T0 + 27 * HOUR);
    assert_eq!(
        log(&out),
        [
            "send u3 F@v2 tpl-v2 trigger=e3 due=2026-11-03T13:00:00Z",
            "FIRED due u3 F@v2 trigger=e3 cause=- due=2026-11-03T13:00:00Z",
            "put u/u3 pending=[] receipts=[F 2026-11-03T13:00:00Z]",
        ]
    );
    assert_eq!(sends(&out)[0].channel, Channel::Push);
    // v1's due time (7 days), message and version.
    let out = w.advance(T0 + 7 * DAY);
    assert_eq!(
        log(&out),
        [
            "send u1 F@v1 tpl-v1 trigger=e1 due=2026-11-09T10:00:00Z",
            "FIRED due u1 F@v1 trigger=e1 cause=- due=2026-11-09T10:00:00Z",
            "put u/u1 pending=[] receipts=[F 2026-11-09T10:00:00Z]",
        ]
    );
    let s = &sends(&out)[0];
    assert_eq!(s.channel, Channel::Email);
    assert_eq!(s.payload.get("subject").map(String::as_str), Some("one"));
    assert_eq!(s.command_id, command_id("F", 1, "u1", "e1"));
}

#[test]
fn an_older_catalog_version_is_ignored() {
    let f = || follow_on("F", "A", &[EmailReceived]);
    let mut w = World::with([campaign("A"), f().version(3).after(2 * DAY)]);
    w.on(interaction("e1", "u1", "A", EmailReceived, T0));
    // A stale record (re-delivered, or from a lagging producer) changes nothing, not even
    // when it says STOPPED.
    let out = w.apply(f().version(2).after(DAY).status(CampaignStatus::Stopped));
    assert!(out.is_empty(), "{:?}", log(&out));
    assert_eq!(w.engine.catalog().stale_records, 1);
    assert_eq!(w.engine.pending_count(), 1);
    let out = w.on(interaction("e2", "u2", "A", EmailReceived, T0 + HOUR));
    assert_eq!(
        decisions(&out),
        ["SCHEDULED trigger u2 F@v3 trigger=e2 cause=e2 due=2026-11-04T11:00:00Z"]
    );
}

// =============================================================================== unknown input

#[test]
fn an_unknown_interaction_kind_is_counted_and_triggers_nothing() {
    let mut w = World::with([
        campaign("A"),
        follow_on("F", "A", &[EmailReceived])
            .after(DAY)
            .except(on(&[EmailOpen])),
        follow_on("G", "A", &[EmailReceived]),
    ]);
    w.on(interaction("e1", "u1", "A", EmailReceived, T0));
    assert!(w
        .on(interaction("x1", "u1", "A", Unknown, T0 + HOUR))
        .is_empty());
    assert!(w
        .on(interaction("x2", "u2", "A", Unknown, T0 + HOUR))
        .is_empty());
    assert_eq!(w.engine.counters().unknown_interaction_kinds, 2);
    // It still advances stream time.
    let out = w.on(interaction("x3", "u2", "A", Unknown, T0 + DAY));
    assert_eq!(
        decisions(&out),
        ["FIRED due u1 F@v1 trigger=e1 cause=- due=2026-11-03T10:00:00Z"]
    );
    assert_eq!(w.engine.counters().unknown_interaction_kinds, 3);
}

#[test]
fn an_unknown_user_event_type_is_counted_and_cancels_nothing() {
    let mut w = World::with([
        campaign("A"),
        follow_on("F", "A", &[EmailReceived])
            .after(DAY)
            .except(purchase())
            .except(session_start())
            .except(custom_event("x")),
    ]);
    w.on(interaction("e1", "u1", "A", EmailReceived, T0));
    assert!(w.on(unknown_user_event("x1", "u1", T0 + HOUR)).is_empty());
    assert_eq!(w.engine.counters().unknown_user_event_types, 1);
    assert_eq!(
        sent_due(&w.on(unknown_user_event("x2", "u1", T0 + DAY))),
        ["2026-11-03T10:00:00Z"]
    );
    assert_eq!(w.engine.counters().unknown_user_event_types, 2);
}

// =============================================================================== send-commands

#[test]
fn command_id_is_deterministic_and_distinct_per_follow_on_version_user_and_trigger() {
    let id = command_id("F", 1, "u1", "e1");
    assert_eq!(id, command_id("F", 1, "u1", "e1"));
    // Pinned: changing the derivation would re-send every pending send after an upgrade.
    assert_eq!(id, "900541ea-6fb3-57bf-aa16-c8572d5f7a37");
    let others = [
        command_id("G", 1, "u1", "e1"),
        command_id("F", 2, "u1", "e1"),
        command_id("F", 1, "u2", "e1"),
        command_id("F", 1, "u1", "e2"),
        // Parts are delimited: moving a character from one part to the next changes the id.
        command_id("Fu", 1, "1", "e1"),
        command_id("F", 1, "u1e", "1"),
    ];
    for (i, other) in others.iter().enumerate() {
        assert_ne!(&id, other, "variant {i}");
        assert_eq!(uuid_version(other), 5);
    }
    let mut all: Vec<&String> = others.iter().collect();
    all.sort();
    all.dedup();
    assert_eq!(all.len(), others.len());
}

fn uuid_version(id: &str) -> u32 {
    assert_eq!(id.len(), 36, "{id}");
    id[14..15].parse().expect("a version digit")
}

#[test]
fn the_same_input_yields_the_same_command_ids_whatever_the_wall_clock() {
    let run = |lag: i64| {
        let mut w = abandoned_cart();
        let mut out = w.on_at(
            interaction("p1", "u1", "abandoned-cart", PushReceived, T0),
            T0 + lag,
        );
        out.extend(w.on_at(
            interaction("p2", "u2", "abandoned-cart", PushReceived, T0 + 1),
            T0 + lag,
        ));
        out.extend(w.advance_at(T0 + DAY + 1, T0 + DAY + lag));
        sends(&out)
    };
    let (on_time, lagging) = (run(0), run(5 * HOUR));
    assert_eq!(on_time.len(), 2);
    for (a, b) in on_time.iter().zip(&lagging) {
        assert_eq!(a.command_id, b.command_id);
        assert_eq!(a.due_at, b.due_at);
        assert_eq!(b.emitted_at - a.emitted_at, 5 * HOUR);
    }
    assert_eq!(
        on_time[0].command_id,
        command_id("cart-reminder", 1, "u1", "p1")
    );
    assert_eq!(
        on_time[1].command_id,
        command_id("cart-reminder", 1, "u2", "p2")
    );
}

#[test]
fn a_send_command_carries_the_follow_on_version_message_trigger_and_times() {
    let mut w = World::with([
        campaign("cart"),
        follow_on("reminder", "cart", &[PushReceived])
            .version(4)
            .after(DAY)
            .message(
                Channel::Push,
                "tpl-reminder-7",
                &[("deeplink", "app://cart"), ("title", "Still there?")],
            ),
    ]);
    w.on(interaction("p1", "u1", "cart", PushReceived, T0));
    let out = w.advance_at(T0 + DAY, T0 + DAY + 5 * SEC);
    assert_eq!(
        sends(&out),
        [SendCommand {
            command_id: command_id("reminder", 4, "u1", "p1"),
            user_id: "u1".into(),
            campaign_id: "reminder".into(),
            campaign_version: 4,
            channel: Channel::Push,
            template_id: "tpl-reminder-7".into(),
            payload: [("deeplink", "app://cart"), ("title", "Still there?")]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            trigger: TriggerRef {
                campaign_id: "cart".into(),
                kind: PushReceived,
                event_id: "p1".into(),
                occurred_at: T0,
            },
            due_at: T0 + DAY,
            emitted_at: T0 + DAY + 5 * SEC,
        }]
    );
}

// =============================================================================== state effects

#[test]
fn scheduling_writes_the_users_pending_send_and_once_per_version_a_rule_snapshot() {
    let v1 = follow_on("F", "A", &[EmailReceived]).after(DAY);
    let mut w = World::with([campaign("A"), v1.clone()]);
    let out = w.on(interaction("e1", "u1", "A", EmailReceived, T0));
    assert_eq!(
        out[0],
        Effect::PutState(Box::new(TaskStateRecord {
            user: None,
            rule: Some(RuleSnapshot {
                campaign: v1.clone().build(),
            }),
            progress: None,
        }))
    );
    assert_eq!(
        out[2],
        Effect::PutState(Box::new(TaskStateRecord {
            user: Some(UserState {
                user_id: "u1".into(),
                pending: vec![PendingSendState {
                    follow_on_id: "F".into(),
                    follow_on_version: 1,
                    trigger: TriggerRef {
                        campaign_id: "A".into(),
                        kind: EmailReceived,
                        event_id: "e1".into(),
                        occurred_at: T0,
                    },
                    due_at: T0 + DAY,
                }],
                receipts: vec![],
            }),
            rule: None,
            progress: None,
        }))
    );
    // The second user: no second snapshot of v1.
    let out = w.on(interaction("e2", "u2", "A", EmailReceived, T0 + 1));
    assert_eq!(
        log(&out),
        [
            "SCHEDULED trigger u2 F@v1 trigger=e2 cause=e2 due=2026-11-03T10:00:00.001Z",
            "put u/u2 pending=[F@v1 e2 2026-11-03T10:00:00.001Z] receipts=[]",
        ]
    );
    // A new version: a new snapshot.
    w.apply(v1.version(2).after(2 * DAY));
    assert_eq!(
        log(&w.on(interaction("e3", "u3", "A", EmailReceived, T0 + 2)))[0],
        "put r/F/2"
    );
}

#[test]
fn a_send_leaves_a_receipt_in_the_users_state() {
    let mut w = resend_to_non_openers();
    w.on(interaction("e1", "u1", "A", EmailReceived, T0));
    w.advance(T0 + 7 * DAY);
    let receipt_only = UserState {
        user_id: "u1".into(),
        pending: vec![],
        receipts: vec![ReceiptState {
            follow_on_id: "F".into(),
            last_sent_at: T0 + 7 * DAY,
        }],
    };
    assert_eq!(w.engine.export_user("u1"), Some(receipt_only));
    assert_eq!(w.engine.user_count(), 1);
}

/// The place a state change names is only where to look first: the state read through it at
/// commit is the user's, also once the slot was freed and given to another user.
#[test]
fn a_state_change_is_read_back_as_the_users_state_even_after_its_slot_was_reused() {
    let mut w = resend_to_non_openers();
    // The engine's own effects (the world's are materialized: no state change left in them).
    let on = |w: &mut World, event: InputEvent| {
        let mut out = Vec::new();
        let t = event.occurred_at();
        w.engine.process(&event, None, t, &mut out).unwrap();
        out
    };
    let hint = |out: &[Effect], user: &str| {
        out.iter()
            .find_map(|e| match e {
                Effect::UserChanged { user_id, slot } if user_id == user => Some(*slot),
                _ => None,
            })
            .expect("a state change")
    };
    let out = on(&mut w, interaction("e1", "u1", "A", EmailReceived, T0));
    let u1_scheduled = hint(&out, "u1");
    assert_eq!(
        w.engine.user_state_view_at(u1_scheduled, "u1"),
        w.engine.user_state_view("u1")
    );
    assert!(w.engine.user_state_view("u1").is_some());
    // u1's send is cancelled: nothing left, the slot is freed; u2 takes it.
    let out = on(&mut w, interaction("o1", "u1", "A", EmailOpen, T0 + HOUR));
    let u1_cleared = hint(&out, "u1");
    assert_eq!(w.engine.user_state_view_at(u1_cleared, "u1"), None);
    let out = on(
        &mut w,
        interaction("e2", "u2", "A", EmailReceived, T0 + 2 * HOUR),
    );
    let u2_scheduled = hint(&out, "u2");
    let u2 = w
        .engine
        .user_state_view("u2")
        .expect("u2 has a pending send");
    for stale in [u1_scheduled, u1_cleared] {
        assert_eq!(w.engine.user_state_view_at(stale, "u1"), None);
        assert_eq!(w.engine.user_state_view_at(stale, "u2"), Some(u2.clone()));
    }
    assert_eq!(w.engine.user_state_view_at(u2_scheduled, "u2"), Some(u2));
    assert_eq!(w.engine.user_state_view_at(u2_scheduled, "u1"), None);
}

#[test]
fn a_user_with_nothing_left_gets_a_tombstone() {
    let mut w = resend_to_non_openers();
    w.on(interaction("e1", "u1", "A", EmailReceived, T0));
    assert_eq!(w.engine.user_count(), 1);
    let out = w.on(interaction("o1", "u1", "A", EmailOpen, T0 + HOUR));
    assert!(
        matches!(out.last(), Some(Effect::UserChanged { user_id, .. }) if user_id == "u1"),
        "{out:?}"
    );
    assert_eq!(w.engine.export_user("u1"), None);
    assert_eq!(w.engine.user_count(), 0);
    assert_eq!(w.engine.pending_count(), 0);
}

#[test]
fn a_late_trigger_whose_due_time_has_passed_fires_at_once() {
    let mut w = World::with([
        campaign("A"),
        follow_on("F", "A", &[EmailReceived]).after(DAY),
    ]);
    w.advance(T0 + 10 * DAY);
    let out = w.on_at(
        interaction("e1", "u1", "A", EmailReceived, T0),
        T0 + 10 * DAY,
    );
    assert_eq!(
        log(&out),
        [
            "put r/F/1",
            "SCHEDULED trigger u1 F@v1 trigger=e1 cause=e1 due=2026-11-03T10:00:00Z",
            // State effects are materialized after the call: the user's final state.
            "put u/u1 pending=[] receipts=[F 2026-11-03T10:00:00Z]",
            "send u1 F@v1 tpl-F trigger=e1 due=2026-11-03T10:00:00Z",
            "FIRED due u1 F@v1 trigger=e1 cause=- due=2026-11-03T10:00:00Z",
            "put u/u1 pending=[] receipts=[F 2026-11-03T10:00:00Z]",
        ]
    );
    assert_eq!(sends(&out)[0].emitted_at, T0 + 10 * DAY);
    assert_eq!(w.engine.counters().late_records, 1);
    assert_eq!(w.engine.clock(), Some(T0 + 10 * DAY));
}

#[test]
fn restoring_from_export_all_continues_with_the_same_output() {
    let v1 = follow_on("F", "A", &[EmailReceived])
        .after(2 * DAY)
        .except(on(&[EmailOpen]))
        .reeligible_after(DAY);
    let v2 = v1
        .clone()
        .version(2)
        .after(DAY)
        .message(Channel::Sms, "tpl-v2", &[]);
    let catalog = [
        campaign("A"),
        campaign("B"),
        follow_on("G", "B", &[EmailOpen]),
        v1,
    ];
    let before = [
        interaction("e1", "u1", "A", EmailReceived, T0),
        interaction("e2", "u2", "A", EmailReceived, T0 + HOUR),
        interaction("e3", "u3", "A", EmailReceived, T0 + 2 * HOUR),
        interaction("g1", "u3", "B", EmailOpen, T0 + 3 * HOUR),
    ];
    // After the edit to v2: u4 is scheduled with v2, u1 opens (cancelled).
    let edit_then = [
        interaction("e4", "u4", "A", EmailReceived, T0 + 4 * HOUR),
        interaction("o1", "u1", "A", EmailOpen, T0 + 5 * HOUR),
    ];
    // u4 (v2) fires, u2 opens, u3 (v1) fires and is not yet re-eligible, u1 (cancelled) is
    // eligible, u6 gets G at once, u3 is re-eligible a day after its send.
    let after = [
        interaction("o2", "u2", "A", EmailOpen, T0 + 2 * DAY),
        interaction("e6", "u3", "A", EmailReceived, T0 + 2 * DAY + 3 * HOUR),
        interaction("e7", "u1", "A", EmailReceived, T0 + 3 * DAY),
        interaction("e8", "u6", "A", EmailReceived, T0 + 3 * DAY + HOUR),
        interaction("g2", "u6", "B", EmailOpen, T0 + 3 * DAY + 2 * HOUR),
        interaction("e9", "u3", "A", EmailReceived, T0 + 3 * DAY + 3 * HOUR),
    ];

    let mut original = World::with(catalog.clone());
    for e in before {
        original.on(e);
    }
    original.apply(v2.clone());
    for e in edit_then {
        original.on(e);
    }
    assert_eq!(
        original.engine.pending_count(),
        3,
        "u2 (v1), u3 (v1), u4 (v2)"
    );

    // A new owner: the compacted catalog (latest versions), then the exported state.
    let mut restored = World::new();
    for c in catalog.into_iter().filter(|c| c.0.campaign_id != "F") {
        restored.apply(c);
    }
    restored.apply(v2);
    let exported = original.engine.export_all();
    assert_eq!(
        exported
            .iter()
            .map(TaskStateRecord::changelog_key)
            .collect::<Vec<_>>(),
        ["r/F/1", "r/F/2", "t/progress", "u/u2", "u/u3", "u/u4"]
    );
    for record in &exported {
        restored.engine.restore(record).expect("a valid record");
    }
    assert_eq!(restored.engine.clock(), original.engine.clock());
    assert_eq!(
        restored.engine.pending_count(),
        original.engine.pending_count()
    );
    for user in ["u1", "u2", "u3", "u4"] {
        assert_eq!(
            restored.engine.export_user(user),
            original.engine.export_user(user),
            "{user}"
        );
    }

    restored.continue_offsets_of(&original);
    let mut expected = Vec::new();
    let mut got = Vec::new();
    for e in after {
        expected.extend(original.on(e.clone()));
        got.extend(restored.on(e));
    }
    expected.extend(original.advance(T0 + 10 * DAY));
    got.extend(restored.advance(T0 + 10 * DAY));
    assert_eq!(log(&got), log(&expected));
    assert_eq!(got, expected);
    assert_eq!(
        decisions(&expected),
        [
            "FIRED due u4 F@v2 trigger=e4 cause=- due=2026-11-03T14:00:00Z",
            "CANCELLED exception u2 F@v1 trigger=e2 cause=o2 due=2026-11-04T11:00:00Z",
            "FIRED due u3 F@v1 trigger=e3 cause=- due=2026-11-04T12:00:00Z",
            "IGNORED not_reeligible u3 F@v2 trigger=e6 cause=e6 due=2026-11-05T13:00:00Z",
            "SCHEDULED trigger u1 F@v2 trigger=e7 cause=e7 due=2026-11-06T10:00:00Z",
            "SCHEDULED trigger u6 F@v2 trigger=e8 cause=e8 due=2026-11-06T11:00:00Z",
            "SENT immediate u6 G@v1 trigger=g2 cause=g2 due=2026-11-05T12:00:00Z",
            "SCHEDULED trigger u3 F@v2 trigger=e9 cause=e9 due=2026-11-06T13:00:00Z",
            "FIRED due u1 F@v2 trigger=e7 cause=- due=2026-11-06T10:00:00Z",
            "FIRED due u6 F@v2 trigger=e8 cause=- due=2026-11-06T11:00:00Z",
            "FIRED due u3 F@v2 trigger=e9 cause=- due=2026-11-06T13:00:00Z",
        ]
    );
    assert_eq!(
        sends(&expected)
            .iter()
            .map(|s| format!("{} {}@v{}", s.user_id, s.campaign_id, s.campaign_version))
            .collect::<Vec<_>>(),
        ["u4 F@v2", "u3 F@v1", "u6 G@v1", "u1 F@v2", "u6 F@v2", "u3 F@v2"]
    );
    assert_eq!(restored.engine.export_all(), original.engine.export_all());
}

#[test]
fn restoring_keeps_the_order_of_decisions_when_one_exception_cancels_several_sends() {
    // u1 has F (scheduled first, due later) and G (scheduled second, due earlier) pending;
    // one purchase cancels both. The restored engine must emit the same decisions in the
    // same order as the engine it was exported from.
    let catalog = || {
        [
            campaign("A"),
            follow_on("F", "A", &[EmailReceived])
                .after(7 * DAY)
                .except(purchase()),
            follow_on("G", "A", &[EmailOpen])
                .after(DAY)
                .except(purchase()),
        ]
    };
    let mut original = World::with(catalog());
    original.on(interaction("e1", "u1", "A", EmailReceived, T0));
    original.on(interaction("o1", "u1", "A", EmailOpen, T0 + HOUR));
    let mut restored = World::with(catalog());
    for record in original.engine.export_all() {
        restored.engine.restore(&record).expect("a valid record");
    }
    restored.continue_offsets_of(&original);
    let purchase_event = bought("b1", "u1", "sku-1", T0 + 2 * HOUR);
    let expected = original.on(purchase_event.clone());
    assert_eq!(
        log(&expected),
        [
            "CANCELLED exception u1 F@v1 trigger=e1 cause=b1 due=2026-11-09T10:00:00Z",
            "CANCELLED exception u1 G@v1 trigger=o1 cause=b1 due=2026-11-03T11:00:00Z",
            "clear u/u1",
        ]
    );
    assert_eq!(log(&restored.on(purchase_event)), log(&expected));
}

#[test]
fn a_restored_task_snapshots_a_version_again_when_the_export_did_not_carry_it() {
    // export_all() carries snapshots of the versions pending sends use; a new owner that
    // schedules with another version writes its snapshot to its own changelog first.
    let f = follow_on("F", "A", &[EmailReceived]).after(DAY);
    let mut original = World::with([campaign("A"), f.clone()]);
    original.on(interaction("e1", "u1", "A", EmailReceived, T0));
    original.advance(T0 + DAY);
    let exported = original.engine.export_all();
    assert_eq!(
        exported
            .iter()
            .map(TaskStateRecord::changelog_key)
            .collect::<Vec<_>>(),
        ["t/progress", "u/u1"]
    );
    let mut restored = World::with([campaign("A"), f]);
    for record in &exported {
        restored.engine.restore(record).expect("a valid record");
    }
    let out = restored.on(interaction("e2", "u2", "A", EmailReceived, T0 + 2 * DAY));
    assert_eq!(
        log(&out),
        [
            "put r/F/1",
            "SCHEDULED trigger u2 F@v1 trigger=e2 cause=e2 due=2026-11-05T10:00:00Z",
            "put u/u2 pending=[F@v1 e2 2026-11-05T10:00:00Z] receipts=[]",
        ]
    );
    // The restored receipt still counts.
    let out = restored.on(interaction("e3", "u1", "A", EmailReceived, T0 + 2 * DAY));
    assert_eq!(
        decisions(&out),
        ["IGNORED not_reeligible u1 F@v1 trigger=e3 cause=e3 due=2026-11-05T10:00:00Z"]
    );
}

// =============================================================================== decisions

#[test]
fn decision_records_carry_source_coordinates_cause_trigger_and_due_time() {
    let mut w = abandoned_cart();
    let coords = |topic: &str, offset: i64| InputCoordinates {
        topic: topic.into(),
        partition: 0,
        offset,
    };
    let decision =
        |outcome, reason, trigger: &str, cause: Option<&str>, decided_at, source| Decision {
            user_id: "u1".into(),
            follow_on_id: "cart-reminder".into(),
            follow_on_version: Some(1),
            outcome,
            reason,
            command_id: None,
            trigger_event_id: Some(trigger.into()),
            cause_event_id: cause.map(str::to_string),
            due_at: None,
            decided_at,
            source,
        };

    // Scheduled: the trigger's coordinates, the trigger as cause.
    w.on(interaction(
        "x",
        "u0",
        "abandoned-cart",
        EmailReceived,
        T0 - HOUR,
    )); // offset 0
    let out = w.on(interaction("p1", "u1", "abandoned-cart", PushReceived, T0)); // offset 1
    assert_eq!(
        decision_records(&out),
        [Decision {
            due_at: Some(T0 + DAY),
            ..decision(
                DecisionOutcome::Scheduled,
                DecisionReason::Trigger,
                "p1",
                Some("p1"),
                T0,
                Some(coords(INTERACTIONS, 1)),
            )
        }]
    );
    // Ignored: the repeated trigger's coordinates and id.
    let out = w.on(interaction(
        "p2",
        "u1",
        "abandoned-cart",
        PushReceived,
        T0 + HOUR,
    )); // offset 2
    assert_eq!(
        decision_records(&out),
        [Decision {
            due_at: Some(T0 + DAY + HOUR),
            ..decision(
                DecisionOutcome::Ignored,
                DecisionReason::AlreadyPending,
                "p2",
                Some("p2"),
                T0 + HOUR,
                Some(coords(INTERACTIONS, 2)),
            )
        }]
    );
    // Cancelled: the exception's coordinates and id, decided at its event time.
    let out = w.on_at(bought("b1", "u1", "sku-1", T0 + 2 * HOUR), T0 + 3 * HOUR); // offset 0
    assert_eq!(
        decision_records(&out),
        [Decision {
            due_at: Some(T0 + DAY),
            ..decision(
                DecisionOutcome::Cancelled,
                DecisionReason::Exception,
                "p1",
                Some("b1"),
                T0 + 2 * HOUR,
                Some(coords(USER_EVENTS, 0)),
            )
        }]
    );
    // Fired: no source or cause; the command id; decided at the wall clock.
    w.on(interaction(
        "p3",
        "u1",
        "abandoned-cart",
        PushReceived,
        T0 + 4 * HOUR,
    ));
    let out = w.advance_at(T0 + DAY + 4 * HOUR, T0 + DAY + 5 * HOUR);
    assert_eq!(
        decision_records(&out),
        [Decision {
            due_at: Some(T0 + DAY + 4 * HOUR),
            command_id: Some(command_id("cart-reminder", 1, "u1", "p3")),
            ..decision(
                DecisionOutcome::Fired,
                DecisionReason::Due,
                "p3",
                None,
                T0 + DAY + 5 * HOUR,
                None,
            )
        }]
    );
    // Ignored early (rule 1): no due time.
    w.apply(
        follow_on("cart-reminder", "abandoned-cart", &[PushReceived])
            .version(2)
            .after(DAY)
            .status(CampaignStatus::Stopped),
    );
    let out = w.on(interaction(
        "p4",
        "u1",
        "abandoned-cart",
        PushReceived,
        T0 + 2 * DAY,
    )); // offset 4
    assert_eq!(
        decision_records(&out),
        [Decision {
            follow_on_version: Some(2),
            ..decision(
                DecisionOutcome::Ignored,
                DecisionReason::FollowOnInactive,
                "p4",
                Some("p4"),
                T0 + 2 * DAY,
                Some(coords(INTERACTIONS, 4)),
            )
        }]
    );
}

#[test]
fn an_immediate_send_decision_names_the_trigger_as_cause_with_its_coordinates() {
    let mut w = World::with([
        campaign("free-shipping"),
        follow_on("promo-2", "free-shipping", &[PushDirectOpen]),
    ]);
    let out = w.on_at(
        interaction("o1", "u1", "free-shipping", PushDirectOpen, T0),
        T0 + MIN,
    );
    assert_eq!(
        decision_records(&out),
        [Decision {
            user_id: "u1".into(),
            follow_on_id: "promo-2".into(),
            follow_on_version: Some(1),
            outcome: DecisionOutcome::Sent,
            reason: DecisionReason::Immediate,
            command_id: Some(command_id("promo-2", 1, "u1", "o1")),
            trigger_event_id: Some("o1".into()),
            cause_event_id: Some("o1".into()),
            due_at: Some(T0),
            decided_at: T0,
            source: Some(InputCoordinates {
                topic: INTERACTIONS.into(),
                partition: 0,
                offset: 0,
            }),
        }]
    );
    assert_eq!(sends(&out)[0].emitted_at, T0 + MIN);
}

#[test]
fn the_test_clock_constants_are_what_they_say() {
    assert_eq!(T0, ts("2026-11-02T10:00:00Z"));
    assert_eq!(PUBLISHED, ts("2026-01-01T00:00:00Z"));
}

/// A caught-up task fires a burst of due timers in slices (`advance_to_at_most`): the slices
/// together are the burst fired at once, each stops only between due times, and a record
/// that arrives between two slices finds every timer due before it fired first.
#[test]
fn a_burst_fired_in_slices_is_the_burst_fired_at_once() {
    // Two like worlds with fifty pending sends: ten due times, five users each.
    let fifty = || {
        let mut w = resend_to_non_openers();
        for i in 0..50 {
            let user = format!("u{i:02}");
            w.on(interaction(
                &format!("e{i}"),
                &user,
                "A",
                EmailReceived,
                T0 + (i / 5) * SEC,
            ));
        }
        w
    };
    let (mut whole, mut sliced) = (fifty(), fifty());
    let due = |out: &[Effect]| -> Vec<i64> {
        out.iter()
            .filter_map(|e| match e {
                Effect::Send(c) => Some(c.due_at),
                _ => None,
            })
            .collect()
    };
    let now = T0 + 8 * DAY;
    let mut all_at_once = Vec::new();
    whole.engine.advance_to(now, now, &mut all_at_once);
    assert_eq!(due(&all_at_once).len(), 50);

    let mut slices: Vec<Vec<Effect>> = Vec::new();
    loop {
        let mut out = Vec::new();
        let more = sliced.engine.advance_to_at_most(now, now, &mut out, 7);
        slices.push(out);
        if !more {
            break;
        }
    }
    // Five sends of one due time make 15 effects: past the limit of 7, so one due time a
    // slice, never split.
    assert_eq!(
        slices.len(),
        10,
        "{:?}",
        slices.iter().map(|s| due(s)).collect::<Vec<_>>()
    );
    for s in &slices {
        let d = due(s);
        assert_eq!(d.len(), 5);
        assert!(d.iter().all(|t| *t == d[0]), "one due time a slice: {d:?}");
    }
    assert_eq!(slices.concat(), all_at_once);

    // A record between two slices: the timers due by the clock fire before it.
    let (mut whole, mut sliced) = (fifty(), fifty());
    let late = interaction("o1", "u49", "A", EmailOpen, now);
    let mut at_once = Vec::new();
    whole.engine.advance_to(now, now, &mut at_once);
    whole
        .engine
        .process(&late, None, now, &mut at_once)
        .unwrap();
    let mut in_slices = Vec::new();
    assert!(sliced
        .engine
        .advance_to_at_most(now, now, &mut in_slices, 7));
    assert_eq!(due(&in_slices).len(), 5);
    sliced
        .engine
        .process(&late, None, now, &mut in_slices)
        .unwrap();
    assert_eq!(in_slices, at_once);
    assert_eq!(due(&in_slices).len(), 50);
    assert!(!sliced
        .engine
        .advance_to_at_most(now, now, &mut Vec::new(), 7));
}
