//! Shadow mode in the engine and on the catalog side: a `SHADOW` follow-on (`<id>@shadow`)
//! is evaluated like any other — triggers, exceptions, timers, receipts, restore — but every
//! send-command and decision it produces is an [`Effect::Shadow`], which the runtime writes to
//! the shadow topic only; and promotion (`shadow::promotion`) hands its rule to a live
//! version that counts triggers from the promotion on.

mod common;

use std::collections::BTreeMap;

use campaign_connector::engine::{Effect, Engine};
use campaign_connector::model::{
    Campaign, CampaignMode, CampaignStatus, DecisionOutcome, DecisionReason,
    InteractionKind::{EmailOpen, EmailReceived},
};
use campaign_connector::shadow::{promotion, shadow_versions, ShadowError};
use campaign_connector::validate::{validate_campaign, Limits};
use common::*;

/// Live F and its shadow, both "7 days after EMAIL_RECEIVED on A unless EMAIL_OPEN".
fn live_and_shadow() -> World {
    let rule = || {
        follow_on("F", "A", &[EmailReceived])
            .after(7 * DAY)
            .except(on(&[EmailOpen]))
    };
    World::with([campaign("A"), rule(), rule().shadow()])
}

/// The effects that would reach `send-commands` or the decision log.
fn live_outputs(out: &[Effect]) -> Vec<String> {
    log(out)
        .into_iter()
        .filter(|l| !l.starts_with("put") && !l.starts_with("clear") && !l.starts_with("shadow"))
        .collect()
}

fn shadow_outputs(out: &[Effect]) -> Vec<String> {
    log(out)
        .into_iter()
        .filter(|l| l.starts_with("shadow"))
        .collect()
}

#[test]
fn a_shadow_is_scheduled_fired_and_sent_like_the_live_one_but_only_as_shadow_effects() {
    let mut w = live_and_shadow();
    let out = w.on(interaction("e1", "u1", "A", EmailReceived, T0));
    assert_eq!(
        live_outputs(&out),
        ["SCHEDULED trigger u1 F@v1 trigger=e1 cause=e1 due=2026-11-09T10:00:00Z"]
    );
    assert_eq!(
        shadow_outputs(&out),
        ["shadow SCHEDULED trigger u1 F@shadow@v1 trigger=e1 cause=e1 due=2026-11-09T10:00:00Z"]
    );
    // One timer each, in the same state and the same changelog.
    assert_eq!(w.engine.pending_count(), 2);
    let out = w.advance(T0 + 7 * DAY);
    assert_eq!(
        live_outputs(&out),
        [
            "send u1 F@v1 tpl-F trigger=e1 due=2026-11-09T10:00:00Z",
            "FIRED due u1 F@v1 trigger=e1 cause=- due=2026-11-09T10:00:00Z",
        ]
    );
    assert_eq!(
        shadow_outputs(&out),
        [
            "shadow send u1 F@shadow@v1 tpl-F trigger=e1 due=2026-11-09T10:00:00Z",
            "shadow FIRED due u1 F@shadow@v1 trigger=e1 cause=- due=2026-11-09T10:00:00Z",
        ]
    );
    // Every `Send` is the live one's: nothing of the shadow ever is a `Send` or `Decision`.
    let sends: Vec<_> = out
        .iter()
        .filter_map(|e| match e {
            Effect::Send(c) => Some(c.campaign_id.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(sends, ["F"]);
    // The shadow keeps its own receipt: a second trigger is `not_reeligible` for both.
    let out = w.on(interaction("e2", "u1", "A", EmailReceived, T0 + 8 * DAY));
    assert_eq!(
        shadow_outputs(&out),
        ["shadow IGNORED not_reeligible u1 F@shadow@v1 trigger=e2 cause=e2 due=2026-11-17T10:00:00Z"]
    );
}

#[test]
fn an_exception_cancels_the_shadows_pending_send_too_and_says_so_on_the_shadow_topic() {
    let mut w = live_and_shadow();
    w.on(interaction("e1", "u1", "A", EmailReceived, T0));
    let out = w.on(interaction("o1", "u1", "A", EmailOpen, T0 + DAY));
    assert_eq!(
        live_outputs(&out),
        ["CANCELLED exception u1 F@v1 trigger=e1 cause=o1 due=2026-11-09T10:00:00Z"]
    );
    assert_eq!(
        shadow_outputs(&out),
        ["shadow CANCELLED exception u1 F@shadow@v1 trigger=e1 cause=o1 due=2026-11-09T10:00:00Z"]
    );
    assert!(w.advance(T0 + 30 * DAY).is_empty());
}

#[test]
fn shadow_decisions_are_made_with_the_decision_log_off_and_live_ones_are_not() {
    let mut w = live_and_shadow();
    w.engine.set_decision_log(false);
    let out = w.on(interaction("e1", "u1", "A", EmailReceived, T0));
    assert!(
        !out.iter().any(|e| matches!(e, Effect::Decision(_))),
        "{out:?}"
    );
    assert_eq!(
        shadow_outputs(&out),
        ["shadow SCHEDULED trigger u1 F@shadow@v1 trigger=e1 cause=e1 due=2026-11-09T10:00:00Z"]
    );
}

#[test]
fn a_restored_shadow_timer_still_fires_as_a_shadow() {
    let mut w = live_and_shadow();
    w.on(interaction("e1", "u1", "A", EmailReceived, T0));
    // A new owner of the task: the changelog first, then the catalog.
    let mut restored = World::new();
    for record in w.engine.export_all() {
        restored.engine.restore(&record).unwrap();
    }
    assert_eq!(restored.engine.pending_count(), 2);
    let rule = || {
        follow_on("F", "A", &[EmailReceived])
            .after(7 * DAY)
            .except(on(&[EmailOpen]))
    };
    for c in [campaign("A"), rule(), rule().shadow()] {
        restored.apply(c);
    }
    let out = restored.advance(T0 + 7 * DAY);
    assert_eq!(
        shadow_outputs(&out),
        [
            "shadow send u1 F@shadow@v1 tpl-F trigger=e1 due=2026-11-09T10:00:00Z",
            "shadow FIRED due u1 F@shadow@v1 trigger=e1 cause=- due=2026-11-09T10:00:00Z",
        ]
    );
    assert_eq!(
        live_outputs(&out)[0],
        "send u1 F@v1 tpl-F trigger=e1 due=2026-11-09T10:00:00Z"
    );
}

#[test]
fn a_deleted_shadows_dropped_sends_still_go_to_the_shadow_topic() {
    let mut w = live_and_shadow();
    w.on(interaction("e1", "u1", "A", EmailReceived, T0));
    let out = w.remove_at("F@shadow", T0 + HOUR);
    assert_eq!(
        log(&out)
            .into_iter()
            .filter(|l| !l.starts_with("put") && !l.starts_with("clear"))
            .collect::<Vec<_>>(),
        ["shadow DROPPED follow_on_deleted u1 F@shadow@v1 trigger=e1 cause=- due=2026-11-09T10:00:00Z"]
    );
}

// ------------------------------------------------------------------------ promotion

fn catalog_of(campaigns: &[Campaign]) -> BTreeMap<String, Campaign> {
    campaigns
        .iter()
        .map(|c| (c.campaign_id.clone(), c.clone()))
        .collect()
}

#[test]
fn promotion_counts_triggers_from_the_promotion_on_and_drops_the_shadows_pending_sends() {
    // Live F v1 (immediate, template tpl-F) and a shadow of a new rule (a day later).
    let live = follow_on("F", "A", &[EmailReceived]).build();
    let shadow = follow_on("F", "A", &[EmailReceived])
        .after(DAY)
        .version(2)
        .shadow()
        .build();
    let mut w = World::with([
        campaign("A"),
        CampaignBuilder(live.clone()),
        CampaignBuilder(shadow.clone()),
    ]);
    w.on(interaction("e1", "u1", "A", EmailReceived, T0));
    let p = T0 + HOUR;
    let (promoted, stopped) = promotion(&catalog_of(&[live, shadow]), "F@shadow", p).unwrap();
    assert_eq!(
        (
            promoted.campaign_id.as_str(),
            promoted.version,
            promoted.mode
        ),
        ("F", 2, CampaignMode::Live)
    );
    assert_eq!(promoted.published_at, Some(p));
    assert_eq!(
        (stopped.status, stopped.version, stopped.ends_at),
        (CampaignStatus::Stopped, 3, Some(p))
    );
    // Published in this order by `campaigns promote`.
    let out = w.apply_at(stopped, p);
    assert_eq!(
        shadow_outputs(&out),
        ["shadow DROPPED follow_on_inactive u1 F@shadow@v2 trigger=e1 cause=- due=2026-11-03T10:00:00Z"]
    );
    assert!(live_outputs(&out).is_empty(), "{out:?}");
    assert!(w.apply_at(promoted, p).is_empty());
    // A trigger from before the promotion (which the shadow saw, or could have) never
    // sends; one from the promotion on does, with the promoted rule.
    let out = w.on(interaction("e2", "u2", "A", EmailReceived, p - 1));
    assert_eq!(
        live_outputs(&out),
        ["IGNORED before_publish u2 F@v2 trigger=e2 cause=e2 due=-"]
    );
    assert_eq!(
        shadow_outputs(&out),
        ["shadow IGNORED follow_on_inactive u2 F@shadow@v3 trigger=e2 cause=e2 due=-"]
    );
    let out = w.on(interaction("e3", "u3", "A", EmailReceived, p));
    assert_eq!(
        live_outputs(&out),
        ["SCHEDULED trigger u3 F@v2 trigger=e3 cause=e3 due=2026-11-03T11:00:00Z"]
    );
    assert!(
        shadow_outputs(&out).iter().all(|l| l.contains("IGNORED")),
        "{out:?}"
    );
    let out = w.advance(p + DAY);
    assert_eq!(
        live_outputs(&out)[0],
        "send u3 F@v2 tpl-F trigger=e3 due=2026-11-03T11:00:00Z"
    );
    assert!(shadow_outputs(&out).is_empty());
}

#[test]
fn promotion_is_refused_unless_it_names_an_active_shadow() {
    let shadow = follow_on("F", "A", &[EmailReceived]).shadow().build();
    let catalog = catalog_of(&[
        shadow.clone(),
        follow_on("G", "A", &[EmailReceived]).build(),
    ]);
    assert_eq!(
        promotion(&catalog, "F", T0),
        Err(ShadowError::NotAShadowId("F".into()))
    );
    assert_eq!(
        promotion(&catalog, "G@shadow", T0),
        Err(ShadowError::Missing("G@shadow".into()))
    );
    let mut stopped = shadow.clone();
    stopped.status = CampaignStatus::Stopped;
    assert!(matches!(
        promotion(&catalog_of(&[stopped]), "F@shadow", T0),
        Err(ShadowError::NotActive { .. })
    ));
    let mut backfilled = shadow;
    backfilled.backfill_since = Some(T0 - DAY);
    assert_eq!(
        promotion(&catalog_of(&[backfilled]), "F@shadow", T0),
        Err(ShadowError::PromoteWithBackfill)
    );
}

#[test]
fn the_promoted_version_is_above_the_live_one_and_the_shadow() {
    let shadow = follow_on("F", "A", &[EmailReceived])
        .version(4)
        .shadow()
        .build();
    let live = follow_on("F", "A", &[EmailReceived]).version(9).build();
    let (promoted, _) = promotion(&catalog_of(&[shadow.clone(), live]), "F@shadow", T0).unwrap();
    assert_eq!(promoted.version, 10);
    let (promoted, _) = promotion(&catalog_of(&[shadow]), "F@shadow", T0).unwrap();
    assert_eq!(promoted.version, 4);
    assert!(validate_campaign(&promoted, &Limits::default()).is_empty());
}

#[test]
fn publish_shadow_takes_the_files_follow_ons_only_as_active_shadows_without_publish_time() {
    let file = [
        campaign("A").build(),
        follow_on("F", "A", &[EmailReceived])
            .status(CampaignStatus::Draft)
            .build(),
    ];
    let shadows = shadow_versions(&file).unwrap();
    assert_eq!(shadows.len(), 1);
    let s = &shadows[0];
    assert_eq!(
        (s.campaign_id.as_str(), s.mode, s.status, s.published_at),
        (
            "F@shadow",
            CampaignMode::Shadow,
            CampaignStatus::Active,
            None
        )
    );
    assert_eq!(shadow_versions(&file[..1]), Err(ShadowError::NoFollowOn));
    let mut backfilled = file[1].clone();
    backfilled.backfill_since = Some(T0);
    assert_eq!(
        shadow_versions(&[backfilled]),
        Err(ShadowError::Backfill("F".into()))
    );
}

#[test]
fn validation_keeps_the_shadow_id_and_mode_together() {
    let problems = |c: Campaign| -> Vec<String> {
        validate_campaign(&c, &Limits::default())
            .iter()
            .map(|p| p.to_string())
            .collect()
    };
    assert!(problems(follow_on("F", "A", &[EmailReceived]).shadow().build()).is_empty());
    let mut live_named_shadow = follow_on("F", "A", &[EmailReceived]).shadow().build();
    live_named_shadow.mode = CampaignMode::Live;
    assert!(problems(live_named_shadow)[0]
        .starts_with("mode: campaign id \"F@shadow\" ends with @shadow"));
    let mut unnamed = follow_on("F", "A", &[EmailReceived]).build();
    unnamed.mode = CampaignMode::Shadow;
    assert_eq!(
        problems(unnamed),
        ["mode: a SHADOW follow-on's id is <id>@shadow, got \"F\""]
    );
    let mut plain = campaign("A@shadow").build();
    plain.mode = CampaignMode::Shadow;
    assert_eq!(
        problems(plain),
        ["mode: only a follow-on campaign can be a SHADOW"]
    );
    // The catalog refuses such a record like any invalid one.
    let mut engine = Engine::new(Limits::default());
    let mut bad = follow_on("F", "A", &[EmailReceived]).build();
    bad.mode = CampaignMode::Shadow;
    assert!(engine.apply_campaign(&bad, T0, &mut Vec::new()).is_err());
}

#[test]
fn the_reasons_of_shadow_decisions_are_the_ordinary_ones() {
    // Nothing shadow-specific in the decision records: the id says it all.
    let mut w = live_and_shadow();
    let out = w.on(interaction("e1", "u1", "A", EmailReceived, T0));
    let Some(Effect::Shadow(r)) = out.iter().find(|e| matches!(e, Effect::Shadow(_))) else {
        panic!("{out:?}")
    };
    let d = r.decision.as_ref().unwrap();
    assert_eq!(
        (d.outcome, d.reason, d.follow_on_id.as_str()),
        (
            DecisionOutcome::Scheduled,
            DecisionReason::Trigger,
            "F@shadow"
        )
    );
    assert_eq!(r.user_id(), "u1");
}
