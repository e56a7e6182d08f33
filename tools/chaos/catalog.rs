//! The campaigns of the run, as campaigns-as-code files: the initial catalog and the edits
//! published mid-run. Every rule shape the product knows appears at least once.
//!
//! Edits are the one input the connector applies by *arrival*, not by event time, so the
//! run applies them at barriers: the group has processed all input written so far, the edit
//! is published and seen applied by every task (its drops in the decision log), and only then
//! is more input written (see main.rs).

use campaign_connector::time::format_timestamp;

use crate::timeline::{Timeline, DAY, HOUR};

/// One catalog edit, applied between two segments of the input.
pub struct Edit {
    pub name: &'static str,
    /// The first chunk of the segment that follows it.
    pub at_chunk: usize,
    /// A follow-on the edit stops: its pending sends are dropped, and those drops in the
    /// decision log show that a task has applied the edit.
    pub evidence: &'static str,
    pub yaml: String,
}

/// The follow-on that makes every task hold a pending send at each barrier (see main.rs).
pub const PROBE_CAMPAIGN: &str = "probe";

pub fn initial(t: &Timeline) -> String {
    let ts = |ms: i64| format_timestamp(ms);
    let published = ts(t.t0 - 30 * DAY);
    let late_publish = ts(t.t0 + 5 * DAY / 2);
    let window_start = ts(t.t0 + DAY);
    let window_end = ts(t.t0 + 3 * DAY);
    format!(
        r#"campaigns:
  # ---- trigger campaigns -------------------------------------------------------------
  - {{campaign_id: abandoned-cart, name: Abandoned cart push, status: ACTIVE}}
  - {{campaign_id: newsletter, name: Weekly newsletter, status: ACTIVE}}
  - {{campaign_id: free-shipping, name: Free shipping push, status: ACTIVE}}
  - {{campaign_id: welcome-in-app, name: Welcome in-app message, status: ACTIVE}}
  - {{campaign_id: ab-test, name: A/B test with a control group, status: ACTIVE}}
  - {{campaign_id: weekly-push, name: Weekly push, status: ACTIVE}}
  - {{campaign_id: reminder-sms, name: Reminder SMS, status: ACTIVE}}
  - {{campaign_id: feed-card, name: News feed card, kind: NEWS_FEED_CARD, status: ACTIVE}}
  - {{campaign_id: checkout, name: Checkout flow, status: ACTIVE}}
  - {{campaign_id: draft-campaign, name: Never launched, status: DRAFT}}

  # ---- follow-ons ---------------------------------------------------------------------
  - campaign_id: cart-email
    name: Abandoned cart, reminder email after 1 day
    status: ACTIVE
    published_at: {published}
    follow_on:
      trigger: {{campaign_id: abandoned-cart, kinds: [PUSH_RECEIVED]}}
      delay: 1d
      exceptions:
        - purchase: {{}}
        - interaction: {{kinds: [PUSH_DIRECT_OPEN]}}
      message: {{channel: EMAIL, template_id: cart-15-off, payload: {{discount: "15"}}}}

  - campaign_id: resend-newsletter
    name: Re-send to non-openers
    status: ACTIVE
    published_at: {published}
    follow_on:
      trigger: {{campaign_id: newsletter, kinds: [EMAIL_RECEIVED]}}
      delay: 2d
      exceptions:
        - interaction: {{kinds: [EMAIL_OPEN]}}
      reeligibility: 1d
      message: {{channel: EMAIL, template_id: newsletter-resend}}

  - campaign_id: promo-2
    name: Promo chain step 2
    status: ACTIVE
    published_at: {published}
    follow_on:
      trigger: {{campaign_id: free-shipping, kinds: [PUSH_DIRECT_OPEN]}}
      delay: immediate
      reeligibility: 12h
      message: {{channel: PUSH, template_id: promo-2}}

  - campaign_id: onboarding-2
    name: Onboarding step 2
    status: ACTIVE
    published_at: {published}
    follow_on:
      trigger: {{campaign_id: welcome-in-app, kinds: [IN_APP_MESSAGE_CLICK, IN_APP_MESSAGE_BUTTON_CLICK], qualifier: get-started}}
      delay: immediate
      message: {{channel: IN_APP, template_id: onboarding-2}}

  - campaign_id: control-followup
    name: Control group follow-up
    status: ACTIVE
    published_at: {published}
    follow_on:
      trigger: {{campaign_id: ab-test, kinds: [CONTROL_GROUP_ENROLLED]}}
      delay: 6h
      exceptions:
        - session_start: {{}}
      message: {{channel: CONTENT_CARD, template_id: control-card}}

  - campaign_id: weekly-digest
    name: Monday digest at 09:00 local time
    status: ACTIVE
    published_at: {published}
    follow_on:
      trigger: {{campaign_id: weekly-push, kinds: [PUSH_RECEIVED, PUSH_BUTTON_CLICK]}}
      delay: {{next_weekday: MONDAY, at: "09:00"}}
      time_zone: Europe/Berlin
      exceptions:
        - custom_event: unsubscribed
      on_repeat_trigger: RESTART
      message: {{channel: PUSH, template_id: weekly-digest}}

  - campaign_id: sms-two-days
    name: SMS two calendar days later at 10:30
    status: ACTIVE
    published_at: {published}
    follow_on:
      trigger: {{campaign_id: reminder-sms, kinds: [SMS_RECEIVED, SMS_SHORT_LINK_CLICK]}}
      delay: {{calendar_days: 2, at: "10:30"}}
      time_zone: America/New_York
      exceptions:
        - purchase: {{product_id: sku-7}}
        - session_start: {{}}
      on_repeat_trigger: RESTART
      message: {{channel: SMS, template_id: sms-reminder}}

  - campaign_id: feed-followup
    name: Card follow-up
    status: ACTIVE
    published_at: {published}
    follow_on:
      trigger: {{campaign_id: feed-card, kinds: [NEWS_FEED_CARD_CLICK, NEWS_FEED_CARD_VIEW]}}
      delay: 90m
      exceptions:
        - interaction: {{kinds: [CONTENT_CARD_DISMISS]}}
      reeligibility: 6h
      message: {{channel: WEBHOOK, template_id: feed-hook}}

  - campaign_id: late-dropper
    name: Dropped when more than an hour late
    status: ACTIVE
    published_at: {published}
    follow_on:
      trigger: {{campaign_id: abandoned-cart, kinds: [PUSH_DIRECT_OPEN]}}
      delay: 2h
      overdue: {{drop_if_late_by: 1h}}
      message: {{channel: PUSH, template_id: never-sent}}

  - {{campaign_id: probe, name: Barrier probe, status: ACTIVE}}
  - campaign_id: barrier-probe
    name: A send pending in every task when the input pauses
    status: ACTIVE
    published_at: {published}
    follow_on:
      trigger: {{campaign_id: probe, kinds: [WEBHOOK_RECEIVED]}}
      delay: 1h
      reeligibility: 1s
      message: {{channel: WEBHOOK, template_id: probe}}

  - campaign_id: windowed
    name: Only inside its window
    status: ACTIVE
    published_at: {published}
    starts_at: {window_start}
    ends_at: {window_end}
    follow_on:
      trigger: {{campaign_id: free-shipping, kinds: [PUSH_BUTTON_CLICK]}}
      delay: 4h
      message: {{channel: SMS, template_id: windowed}}

  - campaign_id: late-publish
    name: Published in the middle of the run
    status: ACTIVE
    published_at: {late_publish}
    follow_on:
      trigger: {{campaign_id: welcome-in-app, kinds: [IN_APP_MESSAGE_VIEW]}}
      delay: 30m
      on_repeat_trigger: RESTART
      message: {{channel: IN_APP, template_id: late-publish}}

  - campaign_id: draft-followup
    name: A follow-on still in draft
    status: DRAFT
    published_at: {published}
    follow_on:
      trigger: {{campaign_id: newsletter, kinds: [EMAIL_RECEIVED]}}
      delay: immediate
      message: {{channel: EMAIL, template_id: draft}}

  - campaign_id: dead-trigger
    name: Triggered by a draft campaign and one missing from the catalog
    status: ACTIVE
    published_at: {published}
    follow_on:
      trigger: {{campaign_id: draft-campaign, kinds: [PUSH_RECEIVED]}}
      delay: immediate
      message: {{channel: PUSH, template_id: dead}}

  - campaign_id: ghost-followup
    name: Triggered by a campaign that is not in the catalog
    status: ACTIVE
    published_at: {published}
    follow_on:
      trigger: {{campaign_id: ghost-campaign, kinds: [PUSH_RECEIVED]}}
      delay: immediate
      message: {{channel: PUSH, template_id: ghost}}

{edited_v1}"#,
        edited_v1 = edited(1, &published)
    )
}

/// A follow-on whose 30-day sends are still pending at the end of the run — until the
/// second edit archives it.
fn long_wait(archived: bool, published: &str) -> String {
    let (status, version) = if archived {
        ("ARCHIVED", 2)
    } else {
        ("ACTIVE", 1)
    };
    format!(
        r#"  - campaign_id: long-wait
    name: Thirty days later (pending past the end of the run)
    status: {status}
    version: {version}
    published_at: {published}
    follow_on:
      trigger: {{campaign_id: newsletter, kinds: [EMAIL_CLICK, EMAIL_ALIAS_CLICK]}}
      delay: 30d
      exceptions:
        - custom_event: churned
        - interaction: {{campaign_id: free-shipping, kinds: [PUSH_DIRECT_OPEN]}}
      message: {{channel: EMAIL, template_id: win-back}}
"#
    )
}

/// The campaigns the edits change, at version `v`:
/// - `flash-sale` (a trigger campaign) is stopped by the first edit and active again after
///   the second, so its follow-on ignores triggers in between (`trigger_campaign_inactive`);
/// - `stoppable` (30-day timers, restarted by repeats) is stopped by the first edit, which
///   drops every pending send, and comes back with a new template;
/// - `thank-you` changes its message, then from immediate to a 3-hour delay;
/// - `long-wait` is archived by the second edit (its pending sends are dropped).
fn edited(v: u32, published: &str) -> String {
    let (flash_status, stoppable_status) = match v {
        2 => ("STOPPED", "STOPPED"),
        _ => ("ACTIVE", "ACTIVE"),
    };
    let thanks_delay = if v >= 3 {
        "delay: 3h\n      exceptions:\n        - purchase: {}"
    } else {
        "delay: immediate"
    };
    format!(
        r#"{long_wait}  - {{campaign_id: flash-sale, name: Flash sale push, status: {flash_status}, version: {v}}}
  - campaign_id: flash-followup
    name: Flash sale follow-up
    status: ACTIVE
    published_at: {published}
    follow_on:
      trigger: {{campaign_id: flash-sale, kinds: [PUSH_RECEIVED]}}
      delay: immediate
      reeligibility: 1d
      message: {{channel: PUSH, template_id: flash-followup}}

  - campaign_id: stoppable
    name: Stopped and restarted mid-run
    status: {stoppable_status}
    version: {v}
    published_at: {published}
    follow_on:
      trigger: {{campaign_id: ab-test, kinds: [IN_APP_MESSAGE_CLICK]}}
      delay: 30d
      exceptions:
        - custom_event: churned
      on_repeat_trigger: RESTART
      message: {{channel: EMAIL, template_id: stoppable-v{v}}}

  - campaign_id: thank-you
    name: Thank you after an order
    status: ACTIVE
    version: {v}
    published_at: {published}
    follow_on:
      trigger: {{campaign_id: checkout, kinds: [CONVERSION_EVENT], qualifier: order-completed}}
      {thanks_delay}
      message: {{channel: EMAIL, template_id: thank-you-v{v}, payload: {{edition: "{v}"}}}}
"#,
        long_wait = long_wait(v >= 3, published)
    )
}

/// The edits, at 70 % and 85 % of the input: the first stops a trigger campaign and a
/// follow-on and gives another a new message; the second restarts both with new versions,
/// gives the third a delay and archives `long-wait`.
pub fn edits(t: &Timeline) -> Vec<Edit> {
    let published = format_timestamp(t.t0 - 30 * DAY);
    [
        ("stop", 70, 2, "stoppable"),
        ("restart", 85, 3, "long-wait"),
    ]
    .into_iter()
    .map(|(name, percent, v, evidence)| Edit {
        name,
        at_chunk: t.chunks * percent / 100,
        evidence,
        yaml: format!("campaigns:\n{}", edited(v, &published)),
    })
    .collect()
}

/// Checks used by the generator: the window and delay shapes above assume these.
pub fn assumptions_hold(t: &Timeline) -> bool {
    // Short delays (at most 8 days including local-time rules) are due before the run starts;
    // the 30-day ones after it ends.
    t.t1 + 8 * DAY < t.run_start - HOUR && t.t0 + 30 * DAY > t.run_start + 2 * DAY
}
