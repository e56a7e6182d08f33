//! SPEC §1 worked examples end to end against the real local broker, with delays of seconds.

mod broker;

use std::time::Duration;

use broker::*;
use campaign_connector::model::InteractionKind::*;
use campaign_connector::model::{DecisionOutcome, DecisionReason, UserEventType};

const CAMPAIGNS: &str = r#"
campaigns:
  - campaign_id: newsletter-a
    name: Newsletter A
    status: ACTIVE
  - campaign_id: resend-a
    name: Re-send A to non-openers
    status: ACTIVE
    follow_on:
      trigger: {campaign_id: newsletter-a, kinds: [EMAIL_RECEIVED]}
      delay: 3s
      exceptions:
        - interaction: {kinds: [EMAIL_OPEN]}
      message: {channel: EMAIL, template_id: resend-a}
  - campaign_id: abandoned-cart
    name: Abandoned cart push
    status: ACTIVE
  - campaign_id: cart-email
    name: Cart reminder email
    status: ACTIVE
    follow_on:
      trigger: {campaign_id: abandoned-cart, kinds: [PUSH_RECEIVED]}
      delay: 3s
      exceptions:
        - purchase: {}
        - interaction: {kinds: [PUSH_DIRECT_OPEN]}
      message: {channel: EMAIL, template_id: cart-15-off, payload: {discount: "15"}}
  - campaign_id: free-shipping
    name: Free shipping push
    status: ACTIVE
  - campaign_id: promo-2
    name: Promo chain, step 2
    status: ACTIVE
    follow_on:
      trigger: {campaign_id: free-shipping, kinds: [PUSH_DIRECT_OPEN]}
      delay: immediate
      message: {channel: PUSH, template_id: promo-2}
  - campaign_id: onboarding-1
    name: Onboarding in-app
    status: ACTIVE
  - campaign_id: onboarding-2
    name: Onboarding step 2
    status: ACTIVE
    follow_on:
      trigger: {campaign_id: onboarding-1, kinds: [IN_APP_MESSAGE_CLICK], qualifier: get-started}
      delay: immediate
      message: {channel: IN_APP, template_id: onboarding-2}
  - campaign_id: holdout-a
    name: Control group of A
    status: ACTIVE
  - campaign_id: holdout-followup
    name: Control group follow-up
    status: ACTIVE
    follow_on:
      trigger: {campaign_id: holdout-a, kinds: [CONTROL_GROUP_ENROLLED]}
      delay: immediate
      message: {channel: CONTENT_CARD, template_id: holdout}
"#;

#[test]
fn every_spec_example_end_to_end() {
    examples_end_to_end(World::new("examples", 3));
}

/// The same under the broker-side consumer group protocol (KIP-848).
#[test]
fn every_spec_example_end_to_end_with_the_consumer_group_protocol() {
    let mut w = World::new("examples848", 3);
    w.set("GROUP_PROTOCOL", "consumer");
    examples_end_to_end(w);
}

fn examples_end_to_end(w: World) {
    w.create_topics();
    w.publish(CAMPAIGNS);
    let instance = w.start("i0");
    instance.wait_log("catalog loaded", Duration::from_secs(60));

    let t = now_ms();
    let mut onboarding = interaction("ob1", "carol", "onboarding-1", InAppMessageClick, t);
    if let campaign_connector::model::InputEvent::Interaction(i) = &mut onboarding {
        i.qualifier = Some("get-started".into());
    }
    let mut wrong_button = interaction("ob2", "dave", "onboarding-1", InAppMessageClick, t);
    if let campaign_connector::model::InputEvent::Interaction(i) = &mut wrong_button {
        i.qualifier = Some("dismiss".into());
    }
    w.send_events(&[
        // Re-send to non-openers: ann opens, bob does not.
        interaction("n1", "ann", "newsletter-a", EmailReceived, t),
        interaction("n2", "bob", "newsletter-a", EmailReceived, t),
        interaction("n3", "ann", "newsletter-a", EmailOpen, t + 500),
        // Abandoned cart: cal buys, dan opens the push, eve does neither.
        interaction("c1", "cal", "abandoned-cart", PushReceived, t),
        interaction("c2", "dan", "abandoned-cart", PushReceived, t),
        interaction("c3", "eve", "abandoned-cart", PushReceived, t),
        user_event("p1", "cal", UserEventType::Purchase, Some("sku-1"), t + 400),
        interaction("c4", "dan", "abandoned-cart", PushDirectOpen, t + 600),
        // Promo chain: immediate.
        interaction("f1", "fay", "free-shipping", PushDirectOpen, t),
        // Onboarding: only the get-started button.
        onboarding,
        wrong_button,
        // Control group.
        interaction("h1", "gus", "holdout-a", ControlGroupEnrolled, t),
    ]);

    // The decision log explains the cancellations; once they are committed, the cancelled
    // sends can no longer fire.
    let mut decisions = w.reader("decisions");
    let expected_cancellations = [("ann", "n3"), ("cal", "p1"), ("dan", "c4")];
    decisions.until_decisions(
        "the three committed cancellations",
        Duration::from_secs(60),
        |read| {
            let cancelled: Vec<(String, String)> = read
                .into_iter()
                .filter(|d| {
                    d.outcome == DecisionOutcome::Cancelled && d.reason == DecisionReason::Exception
                })
                .map(|d| (d.user_id, d.cause_event_id.unwrap_or_default()))
                .collect();
            expected_cancellations
                .iter()
                .all(|(u, e)| cancelled.contains(&(u.to_string(), e.to_string())))
                .then_some(())
        },
    );
    let mut commands = w.send_commands();
    commands.until_count(5, Duration::from_secs(60));
    assert_eq!(instance.stop(Duration::from_secs(30)), Some(0));
    // Nothing more arrives: read to the end offsets with every writer stopped.
    commands.read_to_end(Duration::from_secs(30));
    let mut got: Vec<(String, String, String)> = commands
        .commands()
        .into_iter()
        .map(|c| (c.user_id, c.campaign_id, c.trigger.event_id))
        .collect();
    got.sort();
    assert_eq!(
        got,
        [
            ("bob".to_string(), "resend-a".to_string(), "n2".to_string()),
            ("carol".into(), "onboarding-2".into(), "ob1".into()),
            ("eve".into(), "cart-email".into(), "c3".into()),
            ("fay".into(), "promo-2".into(), "f1".into()),
            ("gus".into(), "holdout-followup".into(), "h1".into()),
        ]
    );
    // Keyed by user id.
    for (r, c) in commands.records.iter().zip(commands.commands()) {
        assert_eq!(
            r.key.as_deref(),
            Some(c.user_id.as_str()),
            "key of {}",
            c.command_id
        );
    }
}
