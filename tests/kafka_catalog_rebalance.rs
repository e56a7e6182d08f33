//! A catalog edit that arrives while a rebalance holds an instance's tasks suspended (revoked
//! cleanly, kept in memory to be resumed without a restore) must still reach those tasks:
//! found by the fault matrix, where a follow-on stopped during a rebalance kept its pending
//! sends in the tasks that stayed put.

mod broker;

use std::collections::BTreeSet;
use std::time::Duration;

use broker::*;
use campaign_connector::campaigns_file::parse_campaigns;
use campaign_connector::codec::{Codec, EncodingSettings};
use campaign_connector::model::InteractionKind::*;
use campaign_connector::model::{Campaign, DecisionOutcome};
use campaign_connector::validate::Limits;

const STOPPED: &str = r#"
campaigns:
  - campaign_id: cart-email
    name: Cart reminder email
    status: STOPPED
    version: 2
    published_at: 2020-01-01T00:00:00Z
    follow_on:
      trigger: {campaign_id: abandoned-cart, kinds: [PUSH_RECEIVED]}
      delay: 40s
      exceptions:
        - purchase: {}
      message: {channel: EMAIL, template_id: cart-15-off}
"#;

#[test]
fn a_follow_on_stopped_while_tasks_are_suspended_drops_their_pending_sends() {
    let mut w = World::new("suspended-edit", 6);
    w.set("STATIC_MEMBERSHIP", "false");
    w.set("PROCESSING_THREADS", "1");
    w.create_topics();
    w.publish(&cart_campaigns("60s"));
    let a = w.start("i0");
    let frozen = w.start("i1");
    let group = w.stable_group(2, Duration::from_secs(90));
    assert_tasks_whole(&w, &group, "after both joined");

    let t = now_ms();
    let users: BTreeSet<String> = (0..60).map(|i| format!("user-{i:02}")).collect();
    let triggers: Vec<_> = users
        .iter()
        .map(|u| interaction(&format!("{u}-t"), u, "abandoned-cart", PushReceived, t))
        .collect();
    w.send_events(&triggers);
    wait_scheduled(&w, users.len());

    // A rebalance held open: one member is frozen, so the group waits for it (up to its
    // session timeout) while the first instance's tasks are revoked and suspended. A third
    // instance joining starts that rebalance; the edit lands in it.
    let codec: Codec<Campaign> =
        Codec::new(w.topic("campaigns"), &EncodingSettings::avro()).unwrap();
    let stopped = parse_campaigns(STOPPED, "stopped.yaml", &Limits::default()).unwrap();
    let record = codec.encode(&stopped[0]).unwrap();
    const RESUMED: &str = "task resumed without a restore";
    let revoked_before = a.log_text().matches("tasks revoked").count();
    let resumed_before = a.log_text().matches(RESUMED).count();
    frozen.signal("STOP");
    let c = w.start("i2");
    wait_for(
        "the first instance's tasks revoked by the rebalance",
        Duration::from_secs(60),
        || (a.log_text().matches("tasks revoked").count() > revoked_before).then_some(()),
    );
    w.send_raw("campaigns", "cart-email", &record);

    // Every pending send is dropped (committed) — by whichever instance holds its task now,
    // including tasks resumed without a restore — and none is sent.
    let mut decisions = w.reader("decisions");
    let ended = decisions.until_decisions(
        "a decision about every pending send after the stop",
        Duration::from_secs(120),
        |read| {
            let ended: Vec<_> = read
                .into_iter()
                .filter(|d| d.follow_on_id == "cart-email")
                .filter(|d| d.outcome != DecisionOutcome::Scheduled)
                .collect();
            let about: BTreeSet<String> = ended.iter().map(|d| d.user_id.clone()).collect();
            (about == users).then_some(ended)
        },
    );
    let not_dropped: Vec<_> = ended
        .iter()
        .filter(|d| d.outcome != DecisionOutcome::Dropped)
        .map(|d| (d.user_id.as_str(), d.outcome))
        .collect();
    assert!(
        not_dropped.is_empty(),
        "pending sends of a stopped follow-on were not dropped: {not_dropped:?}"
    );
    assert!(
        a.log_text().matches(RESUMED).count() > resumed_before,
        "the rebalance resumed no task without a restore: the case under test did not occur"
    );
    frozen.signal("CONT");
    for instance in [a, frozen, c] {
        assert_eq!(instance.stop(Duration::from_secs(60)), Some(0));
    }
    assert_commands(&w, &BTreeSet::new());
}
