//! Campaigns-as-code: the example files, the documented error messages, and the
//! `to_yaml` round trip (docs/campaigns-as-code.md).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use campaign_connector::campaigns_file::{
    load_campaigns_file, parse_campaigns, to_yaml, CampaignsFileError, FileProblem,
};
use campaign_connector::model::{
    Campaign, CampaignKind, CampaignStatus, Channel, Delay, DelayType, ExceptionMatcher,
    ExceptionType, FollowOnRule, InteractionKind, Message, Overdue, OverduePolicy, Reeligibility,
    ReeligibilityPolicy, RepeatTrigger, Trigger, Weekday,
};
use campaign_connector::time::{parse_timestamp, DAY_SECONDS};
use campaign_connector::validate::{validate_campaign, Limits};
use proptest::prelude::*;

const FILE: &str = "examples/cart.yaml";

fn examples_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples")
}

fn example_files() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(examples_dir())
        .expect("examples/ exists")
        .map(|e| e.expect("readable entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    files
}

fn load_example(name: &str) -> Vec<Campaign> {
    load_campaigns_file(&examples_dir().join(name), &Limits::default())
        .unwrap_or_else(|e| panic!("{name} should load:\n{e}"))
}

/// Parses `text` expecting failure; returns the problems and the rendered message.
fn fail(text: &str) -> (Vec<FileProblem>, String) {
    fail_with(text, &Limits::default())
}

fn fail_with(text: &str, limits: &Limits) -> (Vec<FileProblem>, String) {
    match parse_campaigns(text, FILE, limits) {
        Ok(c) => panic!("expected an error, parsed {c:#?}"),
        Err(e) => (e.problems().to_vec(), e.to_string()),
    }
}

/// A file with the trigger campaign and one follow-on `cart-email` whose `follow_on:`
/// body is `rule` (indented by the caller's convention: 6 spaces).
fn follow_on_file(rule: &str) -> String {
    format!(
        "\
campaigns:
  - campaign_id: abandoned-cart
    name: Abandoned cart push
    status: ACTIVE
  - campaign_id: cart-email
    name: Cart reminder
    status: ACTIVE
    published_at: 2026-10-01T09:00:00Z
    follow_on:
{rule}"
    )
}

const TRIGGER: &str = "      trigger: {campaign_id: abandoned-cart, kinds: [PUSH_RECEIVED]}\n";
const MESSAGE: &str = "      message: {channel: EMAIL, template_id: cart-reminder}\n";

fn rule_with(lines: &str) -> String {
    follow_on_file(&format!("{TRIGGER}{lines}{MESSAGE}"))
}

fn assert_one(problems: &[FileProblem], rendered: &str, expected_line: &str) {
    assert_eq!(problems.len(), 1, "{rendered}");
    assert_eq!(rendered, expected_line);
}

// ---------------------------------------------------------------------------------------
// The examples
// ---------------------------------------------------------------------------------------

#[test]
fn every_example_file_loads_and_validates() {
    let files = example_files();
    let names: Vec<String> = files
        .iter()
        .map(|p| p.file_name().unwrap().to_string_lossy().into_owned())
        .collect();
    for expected in [
        "resend-to-non-openers.yaml",
        "abandoned-cart.yaml",
        "promo-chain.yaml",
        "onboarding.yaml",
        "control-group.yaml",
    ] {
        assert!(
            names.iter().any(|n| n == expected),
            "missing example {expected}"
        );
    }
    for path in files {
        let campaigns = load_campaigns_file(&path, &Limits::default())
            .unwrap_or_else(|e| panic!("{} should load:\n{e}", path.display()));
        // Each example: an active plain trigger campaign and an active, published follow-on
        // that it triggers.
        assert_eq!(campaigns.len(), 2, "{}", path.display());
        let (follow_ons, plain): (Vec<&Campaign>, Vec<&Campaign>) =
            campaigns.iter().partition(|c| c.follow_on.is_some());
        assert_eq!(
            (follow_ons.len(), plain.len()),
            (1, 1),
            "{}",
            path.display()
        );
        let (follow_on, trigger) = (follow_ons[0], plain[0]);
        for c in &campaigns {
            assert_eq!(c.status, CampaignStatus::Active, "{}", c.campaign_id);
            assert!(validate_campaign(c, &Limits::default()).is_empty());
        }
        assert!(follow_on.published_at.is_some(), "{}", path.display());
        let rule = follow_on.follow_on.as_ref().unwrap();
        assert_eq!(rule.trigger.campaign_id, trigger.campaign_id);
    }
}

fn rule_of(campaigns: &[Campaign]) -> &FollowOnRule {
    campaigns
        .iter()
        .find_map(|c| c.follow_on.as_ref())
        .expect("a follow-on")
}

#[test]
fn examples_say_what_the_spec_says() {
    let c = load_example("resend-to-non-openers.yaml");
    let r = rule_of(&c);
    assert_eq!(r.trigger.kinds, [InteractionKind::EmailReceived]);
    assert_eq!(r.delay, Delay::after_seconds(7 * DAY_SECONDS));
    assert_eq!(r.exceptions.len(), 1);
    assert_eq!(r.exceptions[0].exception_type, ExceptionType::Interaction);
    assert_eq!(
        r.exceptions[0].campaign_id, None,
        "defaults to the trigger campaign"
    );
    assert_eq!(
        r.exceptions[0].interaction_kinds,
        [InteractionKind::EmailOpen]
    );
    assert_eq!(r.reeligibility.policy, ReeligibilityPolicy::Never);

    let c = load_example("abandoned-cart.yaml");
    let r = rule_of(&c);
    assert_eq!(r.trigger.campaign_id, "abandoned-cart");
    assert_eq!(r.trigger.kinds, [InteractionKind::PushReceived]);
    assert_eq!(r.delay, Delay::after_seconds(DAY_SECONDS));
    let types: Vec<ExceptionType> = r.exceptions.iter().map(|e| e.exception_type).collect();
    assert_eq!(types, [ExceptionType::Purchase, ExceptionType::Interaction]);
    assert_eq!(r.exceptions[0].name, None, "any purchase");
    assert_eq!(
        r.exceptions[1].interaction_kinds,
        [InteractionKind::PushDirectOpen]
    );

    let c = load_example("promo-chain.yaml");
    let r = rule_of(&c);
    assert_eq!(r.trigger.kinds, [InteractionKind::PushDirectOpen]);
    assert_eq!(r.delay, Delay::immediate());

    let c = load_example("onboarding.yaml");
    let r = rule_of(&c);
    assert_eq!(r.trigger.kinds, [InteractionKind::InAppMessageClick]);
    assert!(r.trigger.qualifier.is_some());
    assert_eq!(r.delay, Delay::immediate());

    let c = load_example("control-group.yaml");
    let r = rule_of(&c);
    assert_eq!(r.trigger.kinds, [InteractionKind::ControlGroupEnrolled]);
}

// ---------------------------------------------------------------------------------------
// The documented error messages
// ---------------------------------------------------------------------------------------

#[test]
fn exceptions_require_a_delay() {
    let text = rule_with("      delay: immediate\n      exceptions:\n        - purchase: {}\n");
    let (p, rendered) = fail(&text);
    assert_one(
        &p,
        &rendered,
        r#"examples/cart.yaml: campaign "cart-email": follow_on.exceptions: exceptions require a delay"#,
    );
    assert_eq!(p[0].campaign.as_deref(), Some("cart-email"));
    assert_eq!(p[0].index, Some(1));
    assert_eq!(p[0].field, "follow_on.exceptions");
}

#[test]
fn delays_beyond_the_two_year_cap_are_refused_whatever_the_limit() {
    let text = rule_with("      delay: 800d\n");
    let (p, rendered) = fail_with(&text, &Limits::with_max_delay(730 * DAY_SECONDS).unwrap());
    assert_eq!(p.len(), 1, "{rendered}");
    assert_eq!(p[0].field, "follow_on.delay");
    assert!(
        p[0].message.contains("exceeds the 2-year cap"),
        "{rendered}"
    );
    assert!(
        rendered
            .starts_with(r#"examples/cart.yaml: campaign "cart-email": follow_on.delay: delay "#),
        "{rendered}"
    );
}

#[test]
fn delays_beyond_the_configured_maximum_are_refused() {
    let text = rule_with("      delay: 40d\n");
    let (p, rendered) = fail(&text);
    assert_eq!(p.len(), 1, "{rendered}");
    assert_eq!(p[0].field, "follow_on.delay");
    assert!(
        p[0].message.contains("exceeds the maximum delay"),
        "{rendered}"
    );
    assert!(p[0].message.contains("(setting max_delay)"), "{rendered}");
    // A larger configured maximum accepts it.
    let limits = Limits::with_max_delay(60 * DAY_SECONDS).unwrap();
    assert!(parse_campaigns(&text, FILE, &limits).is_ok());

    // CALENDAR_DAYS counts a day per calendar day.
    let text = rule_with("      delay: {calendar_days: 45, at: \"10:00\"}\n");
    let (p, rendered) = fail(&text);
    assert_eq!(p.len(), 1, "{rendered}");
    assert_eq!(p[0].field, "follow_on.delay");
    assert!(
        p[0].message.contains("exceeds the maximum delay"),
        "{rendered}"
    );
}

#[test]
fn a_backfill_start_is_on_a_follow_on_before_its_publish_time_within_the_maximum() {
    let file = |extra: &str| {
        rule_with("      delay: 1d\n").replace(
            "    published_at: 2026-10-01T09:00:00Z\n",
            &format!("    published_at: 2026-10-01T09:00:00Z\n{extra}"),
        )
    };
    let ok = parse_campaigns(
        &file("    backfill_since: 2026-09-24T09:00:00Z\n"),
        FILE,
        &Limits::default(),
    )
    .unwrap();
    assert_eq!(
        ok[1].backfill_since,
        Some(parse_timestamp("2026-09-24T09:00:00Z").unwrap())
    );
    let (problems, text) = fail(&file("    backfill_since: 2026-09-24T08:59:59Z\n"));
    assert_one(
        &problems,
        &text,
        &format!(
            "{FILE}: campaign \"cart-email\": backfill_since: 7d1s before published_at exceeds the maximum backfill 1w (setting max_backfill)"
        ),
    );
    let (problems, text) = fail_with(
        &file("    backfill_since: 2026-09-30T09:00:00Z\n"),
        &Limits::default().with_max_backfill(0).unwrap(),
    );
    assert_one(
        &problems,
        &text,
        &format!(
            "{FILE}: campaign \"cart-email\": backfill_since: 1d before published_at exceeds the maximum backfill 0s (setting max_backfill)"
        ),
    );
    let (problems, text) = fail(&file("    backfill_since: 2026-10-01T09:00:00Z\n"));
    assert_one(
        &problems,
        &text,
        &format!(
            "{FILE}: campaign \"cart-email\": backfill_since: 2026-10-01T09:00:00Z is not before published_at 2026-10-01T09:00:00Z: a backfill start must be earlier"
        ),
    );
    let (problems, text) = fail(
        &file("    backfill_since: 2026-09-30T09:00:00Z\n")
            .replace("    published_at: 2026-10-01T09:00:00Z\n", ""),
    );
    assert_one(
        &problems,
        &text,
        &format!(
            "{FILE}: campaign \"cart-email\": backfill_since: needs published_at: a backfill start moves the publish bound earlier, and without published_at no trigger is ignored as before publish"
        ),
    );
    let (problems, text) = fail(&file("").replace(
        "    status: ACTIVE\n  - campaign_id: cart-email",
        "    status: ACTIVE\n    published_at: 2026-10-01T09:00:00Z\n    backfill_since: 2026-09-30T09:00:00Z\n  - campaign_id: cart-email",
    ));
    assert_one(
        &problems,
        &text,
        &format!(
            "{FILE}: campaign \"abandoned-cart\": backfill_since: only a follow-on campaign can have a backfill start"
        ),
    );
    let (_, text) = fail(&file("    backfill_since: soon\n"));
    assert!(
        text.contains("backfill_since: invalid timestamp \"soon\""),
        "{text}"
    );
}

#[test]
fn unknown_interaction_kinds_get_a_suggestion() {
    let text = follow_on_file(
        "      trigger: {campaign_id: abandoned-cart, kinds: [EMAIL_OPENED]}\n      delay: 1d\n",
    ) + MESSAGE;
    let (p, rendered) = fail(&text);
    assert_one(
        &p,
        &rendered,
        r#"examples/cart.yaml: campaign "cart-email": follow_on.trigger.kinds[0]: unknown interaction kind EMAIL_OPENED (did you mean EMAIL_OPEN?)"#,
    );

    // In an exception too, and with no close match the known kinds are listed.
    let text = rule_with(
        "      delay: 1d\n      exceptions:\n        - interaction: {kinds: [push_open, xyz]}\n",
    );
    let (p, rendered) = fail(&text);
    assert_eq!(p.len(), 2, "{rendered}");
    assert_eq!(p[0].field, "follow_on.exceptions[0].interaction.kinds[0]");
    assert!(
        p[0].message.contains("(did you mean PUSH_DIRECT_OPEN?)"),
        "{rendered}"
    );
    assert_eq!(p[1].field, "follow_on.exceptions[0].interaction.kinds[1]");
    assert!(
        p[1].message
            .contains("expected one of IN_APP_MESSAGE_VIEW,"),
        "{rendered}"
    );
}

#[test]
fn unknown_keys_are_refused_with_their_location() {
    let text = rule_with("      delai: 1d\n");
    let (p, rendered) = fail(&text);
    assert_eq!(p.len(), 1, "{rendered}");
    assert_eq!(p[0].campaign.as_deref(), Some("cart-email"));
    assert_eq!(p[0].field, "follow_on");
    let at = p[0].location.expect("shape problems have a location");
    assert_eq!((at.line, at.column), (11, 7));
    assert!(
        p[0].message
            .starts_with("unknown field `delai`, expected one of"),
        "{rendered}"
    );
    assert!(
        p[0].message.ends_with("(did you mean `delay`?)"),
        "{rendered}"
    );
    assert!(
        rendered.starts_with(
            r#"examples/cart.yaml:11:7: campaign "cart-email": follow_on: unknown field `delai`"#
        ),
        "{rendered}"
    );

    // Unknown keys inside nested shapes and at the top of the file.
    let text = rule_with("      delay: {next_weekday: MONDAY, at: \"09:00\", every: 2}\n");
    let (p, _) = fail(&text);
    assert_eq!(p[0].field, "follow_on.delay");
    assert!(p[0].message.contains("unknown field `every`"));
    let (p, rendered) = fail("campaign:\n  - campaign_id: a\n");
    assert_eq!(p.len(), 1);
    assert_eq!(p[0].campaign, None);
    assert_eq!(
        rendered,
        "examples/cart.yaml:1:1: unknown field `campaign`, expected `campaigns`"
    );
}

#[test]
fn duplicate_campaign_ids_are_refused() {
    let text = "\
campaigns:
  - {campaign_id: promo, name: Promo, status: ACTIVE}
  - {campaign_id: other, name: Other, status: DRAFT}
  - {campaign_id: promo, name: Promo again, status: ACTIVE}
";
    let (p, rendered) = fail(text);
    assert_one(
        &p,
        &rendered,
        r#"examples/cart.yaml: campaign "promo": campaign_id: duplicate campaign id "promo": campaigns[0] has the same id"#,
    );
    assert_eq!(p[0].index, Some(2));
}

#[test]
fn missing_keys_are_named() {
    let text = follow_on_file(&format!("{TRIGGER}      delay: 1d\n"));
    let (p, rendered) = fail(&text);
    assert_eq!(p.len(), 1, "{rendered}");
    assert_eq!(p[0].field, "follow_on.message");
    assert_eq!(p[0].message, "missing field `message`");
    assert!(p[0].location.is_some());
    assert!(
        rendered.contains(r#": campaign "cart-email": follow_on.message: missing field `message`"#),
        "{rendered}"
    );

    // A campaign without an id is named by its position.
    let (p, rendered) = fail("campaigns:\n  - name: Nameless\n    status: DRAFT\n");
    assert_eq!(p[0].campaign, None);
    assert_eq!(p[0].index, Some(0));
    assert_eq!(
        rendered,
        "examples/cart.yaml:2:5: campaigns[0]: campaign_id: missing field `campaign_id`"
    );
}

#[test]
fn unknown_time_zones_are_refused() {
    let text = rule_with(
        "      delay: {next_weekday: MONDAY, at: \"09:00\"}\n      time_zone: Europe/Berln\n",
    );
    let (p, rendered) = fail(&text);
    assert_eq!(p.len(), 1, "{rendered}");
    assert_eq!(p[0].field, "follow_on.time_zone");
    assert!(
        p[0].message.contains("unknown time zone \"Europe/Berln\""),
        "{rendered}"
    );
}

#[test]
fn bad_local_times_are_refused() {
    let text = rule_with("      delay: {calendar_days: 2, at: \"25:00\"}\n");
    let (p, rendered) = fail(&text);
    assert_one(
        &p,
        &rendered,
        r#"examples/cart.yaml: campaign "cart-email": follow_on.delay.at: invalid local time "25:00": expected HH:MM or HH:MM:SS"#,
    );

    // A local-time delay without `at`.
    let text = rule_with("      delay: {next_weekday: FRIDAY}\n");
    let (p, _) = fail(&text);
    assert_eq!(p[0].field, "follow_on.delay.at");
}

#[test]
fn bad_durations_timestamps_and_symbols_name_their_field() {
    let text = rule_with(
        "      delay: 7\n      reeligibility: forever\n      overdue: 2h\n      on_repeat_trigger: restrat\n",
    )
    .replace("status: ACTIVE\n    published_at: 2026-10-01T09:00:00Z", "status: actve\n    published_at: yesterday");
    let (p, rendered) = fail(&text);
    let fields: Vec<&str> = p.iter().map(|p| p.field.as_str()).collect();
    assert_eq!(
        fields,
        [
            "status",
            "published_at",
            "follow_on.delay",
            "follow_on.reeligibility",
            "follow_on.on_repeat_trigger",
            "follow_on.overdue",
        ],
        "{rendered}"
    );
    assert!(p[0].message.contains("(did you mean ACTIVE?)"));
    assert!(p[2].message.contains("needs a unit"), "{rendered}");
    assert!(p[4].message.contains("(did you mean RESTART?)"));
    assert!(
        p[5].message.contains("did you mean {drop_if_late_by: 2h}?"),
        "{rendered}"
    );
}

#[test]
fn yaml_syntax_errors_have_a_line_and_column() {
    let (p, rendered) = fail("campaigns:\n  - campaign_id: a\n    name: [unclosed\n");
    assert_eq!(p.len(), 1, "{rendered}");
    assert_eq!(p[0].campaign, None);
    let at = p[0].location.expect("a location");
    assert_eq!(at.line, 4);
    assert!(
        p[0].message.starts_with("YAML syntax error: "),
        "{rendered}"
    );
    assert!(rendered.starts_with("examples/cart.yaml:4:"), "{rendered}");

    let (p, _) = fail("");
    assert!(p[0].message.contains("empty"));
}

#[test]
fn every_problem_in_a_file_is_reported() {
    let text = "\
campaigns:
  - campaign_id: cart-email
    name: Cart reminder
    status: ACTIVE
    follow_on:
      trigger: {campaign_id: abandoned-cart, kinds: [EMAIL_OPENED]}
      delay: immediate
      exceptions: [{purchase: {}}]
      time_zone: Mars/Olympus
      message: {channel: EMALE, template_id: cart}
  - campaign_id: broken-shape
    name: Unknown key
    status: ACTIVE
    colour: red
  - campaign_id: too-long
    name: Long wait
    status: ACTIVE
    follow_on:
      trigger: {campaign_id: abandoned-cart, kinds: [PUSH_RECEIVED]}
      delay: 800d
      message: {channel: PUSH, template_id: wait}
  - campaign_id: cart-email
    name: Again
    status: DRAFT
";
    let (p, rendered) = fail(text);
    let summary: Vec<(Option<&str>, &str)> = p
        .iter()
        .map(|p| (p.campaign.as_deref(), p.field.as_str()))
        .collect();
    assert_eq!(
        summary,
        [
            (Some("cart-email"), "follow_on.trigger.kinds[0]"),
            (Some("cart-email"), "follow_on.message.channel"),
            (Some("cart-email"), "follow_on.time_zone"),
            (Some("cart-email"), "follow_on.exceptions"),
            (Some("broken-shape"), ""),
            (Some("too-long"), "follow_on.delay"),
            (Some("cart-email"), "campaign_id"),
        ],
        "{rendered}"
    );
    // One line per problem, each naming the file, the campaign and the field.
    let lines: Vec<&str> = rendered.lines().collect();
    assert_eq!(lines.len(), p.len());
    for (line, problem) in lines.iter().zip(&p) {
        assert!(line.starts_with("examples/cart.yaml"), "{line}");
        assert!(line.contains(&format!(
            "campaign {:?}",
            problem.campaign.as_ref().unwrap()
        )));
        assert!(line.contains(&problem.field), "{line}");
    }
    assert!(lines[4]
        .starts_with("examples/cart.yaml:14:5: campaign \"broken-shape\": unknown field `colour`"));
}

#[test]
fn io_errors_name_the_path() {
    let path = Path::new("/nonexistent/campaigns.yaml");
    let err = load_campaigns_file(path, &Limits::default()).unwrap_err();
    assert!(matches!(err, CampaignsFileError::Io { .. }));
    assert!(err.problems().is_empty());
    assert!(
        err.to_string()
            .starts_with("/nonexistent/campaigns.yaml: cannot read campaigns file: "),
        "{err}"
    );
}

#[test]
fn load_names_the_file_by_its_path() {
    let dir = std::env::temp_dir().join(format!("campaigns-file-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("bad.yaml");
    std::fs::write(
        &path,
        "campaigns:\n  - {campaign_id: x, name: X, status: LIVE}\n",
    )
    .unwrap();
    let err = load_campaigns_file(&path, &Limits::default()).unwrap_err();
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(
        err.to_string().starts_with(&format!(
            "{}: campaign \"x\": status: unknown status LIVE",
            path.display()
        )),
        "{err}"
    );
}

// ---------------------------------------------------------------------------------------
// Friendly input
// ---------------------------------------------------------------------------------------

#[test]
fn symbols_are_case_insensitive_and_times_take_both_forms() {
    let text = "\
campaigns:
  - campaign_id: card
    name: Card
    kind: news_feed_card
    status: Active
    version: 4
    published_at: 1790000000000
    starts_at: 2026-09-21T10:00:00+02:00
    follow_on:
      trigger: {campaign_id: feed, kinds: [news_feed_card_click]}
      delay: {next_weekday: friday, at: 9:30}
      time_zone: America/New_York
      exceptions:
        - custom_event: unsubscribed
        - purchase: {product_id: sku-42}
        - session_start: {}
        - interaction: {campaign_id: feed, kinds: [NEWS_FEED_CARD_VIEW]}
      reeligibility: 30d
      on_repeat_trigger: restart
      overdue: {drop_if_late_by: 90m}
      message: {channel: content_card, template_id: t, payload: {discount: 10}}
";
    let c = parse_campaigns(text, FILE, &Limits::default()).expect("valid");
    let c = &c[0];
    assert_eq!(c.kind, CampaignKind::NewsFeedCard);
    assert_eq!(c.status, CampaignStatus::Active);
    assert_eq!(c.version, 4);
    assert_eq!(c.published_at, Some(1_790_000_000_000));
    assert_eq!(
        c.starts_at,
        Some(parse_timestamp("2026-09-21T08:00:00Z").unwrap())
    );
    let r = c.follow_on.as_ref().unwrap();
    assert_eq!(r.delay.delay_type, DelayType::NextWeekday);
    assert_eq!(r.delay.weekday, Some(Weekday::Friday));
    assert_eq!(r.delay.local_time.as_deref(), Some("9:30"));
    assert_eq!(r.exceptions[1].name.as_deref(), Some("sku-42"));
    assert_eq!(r.reeligibility.seconds, Some(30 * DAY_SECONDS));
    assert_eq!(r.on_repeat_trigger, RepeatTrigger::Restart);
    assert_eq!(r.overdue.seconds, Some(5_400));
    assert_eq!(r.message.channel, Channel::ContentCard);
    assert_eq!(
        r.message.payload["discount"], "10",
        "scalars are read as written"
    );
}

#[test]
fn defaults_apply_when_keys_are_left_out() {
    let c = parse_campaigns(&rule_with("      delay: 1d12h\n"), FILE, &Limits::default()).unwrap();
    assert_eq!(c[0].kind, CampaignKind::Campaign);
    assert_eq!(c[0].version, 1);
    assert_eq!((c[0].starts_at, c[0].ends_at), (None, None));
    let r = c[1].follow_on.as_ref().unwrap();
    assert_eq!(r.delay, Delay::after_seconds(DAY_SECONDS + 12 * 3_600));
    assert_eq!(r.time_zone, None);
    assert!(r.exceptions.is_empty());
    assert_eq!(r.reeligibility.policy, ReeligibilityPolicy::Never);
    assert_eq!(r.on_repeat_trigger, RepeatTrigger::KeepFirst);
    assert_eq!(r.overdue.policy, OverduePolicy::Send);
    assert!(r.message.payload.is_empty());
    assert!(parse_campaigns("campaigns: []\n", FILE, &Limits::default())
        .unwrap()
        .is_empty());
}

// ---------------------------------------------------------------------------------------
// Round trip
// ---------------------------------------------------------------------------------------

fn round_trip(campaigns: &[Campaign]) {
    let text = to_yaml(campaigns);
    let back = parse_campaigns(
        &text,
        "to_yaml",
        &Limits::with_max_delay(730 * DAY_SECONDS).unwrap(),
    )
    .unwrap_or_else(|e| panic!("to_yaml output should parse:\n{e}\n---\n{text}"));
    assert_eq!(back, campaigns, "---\n{text}");
}

#[test]
fn examples_round_trip_through_to_yaml() {
    for path in example_files() {
        let campaigns = load_campaigns_file(&path, &Limits::default()).unwrap();
        round_trip(&campaigns);
    }
}

fn everything_set() -> Campaign {
    let interaction = |campaign_id: Option<&str>, kinds: Vec<InteractionKind>| ExceptionMatcher {
        exception_type: ExceptionType::Interaction,
        campaign_id: campaign_id.map(String::from),
        interaction_kinds: kinds,
        name: None,
    };
    let named = |exception_type, name: Option<&str>| ExceptionMatcher {
        exception_type,
        campaign_id: None,
        interaction_kinds: Vec::new(),
        name: name.map(String::from),
    };
    let payload: BTreeMap<String, String> = [
        ("subject", "Don't miss out: 20% off"),
        ("yes", "yes"),
        ("number", "007"),
        ("time", "09:00"),
        ("empty", ""),
        ("null", "null"),
        ("tilde", "~"),
        ("bool", "true"),
        ("lines", "first line\nsecond line\n"),
        ("unicode", "Grüße, 東京 🎉"),
        ("padded", "  spaces  "),
        ("hash", "# not a comment"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect();
    Campaign {
        backfill_since: Some(parse_timestamp("2026-11-28T08:00:00Z").unwrap()),
        mode: Default::default(),
        campaign_id: "winter-sale-2026-follow-up".into(),
        name: "Winter sale: follow-up for clickers".into(),
        kind: CampaignKind::NewsFeedCard,
        status: CampaignStatus::Stopped,
        version: 17,
        published_at: Some(parse_timestamp("2026-12-01T08:00:00.250Z").unwrap()),
        starts_at: Some(parse_timestamp("2026-12-01T00:00:00Z").unwrap()),
        ends_at: Some(parse_timestamp("2027-01-06T23:59:59Z").unwrap()),
        follow_on: Some(FollowOnRule {
            trigger: Trigger {
                campaign_id: "winter-sale-2026".into(),
                kinds: vec![
                    InteractionKind::EmailClick,
                    InteractionKind::EmailAliasClick,
                ],
                qualifier: Some("shop-now".into()),
            },
            delay: Delay {
                delay_type: DelayType::NextWeekday,
                seconds: None,
                weekday: Some(Weekday::Monday),
                days: None,
                local_time: Some("09:00".into()),
            },
            time_zone: Some("Europe/Berlin".into()),
            exceptions: vec![
                interaction(None, vec![InteractionKind::EmailOpen]),
                interaction(
                    Some("winter-sale-2026-push"),
                    vec![InteractionKind::PushDirectOpen],
                ),
                named(ExceptionType::CustomEvent, Some("unsubscribed")),
                named(ExceptionType::Purchase, None),
                named(ExceptionType::Purchase, Some("sku-1234")),
                named(ExceptionType::SessionStart, None),
            ],
            reeligibility: Reeligibility {
                policy: ReeligibilityPolicy::After,
                seconds: Some(30 * DAY_SECONDS),
            },
            on_repeat_trigger: RepeatTrigger::Restart,
            overdue: Overdue {
                policy: OverduePolicy::DropIfLateBy,
                seconds: Some(2 * 3_600),
            },
            message: Message {
                channel: Channel::Webhook,
                template_id: "winter-follow-up".into(),
                payload,
            },
        }),
    }
}

#[test]
fn a_campaign_with_every_option_set_round_trips() {
    let full = everything_set();
    assert!(validate_campaign(&full, &Limits::default()).is_empty());
    round_trip(std::slice::from_ref(&full));

    // Every delay shape, and the other policy values.
    let mut variants = Vec::new();
    for (i, delay) in [
        Delay::immediate(),
        Delay::after_seconds(DAY_SECONDS + 12 * 3_600 + 90),
        Delay {
            delay_type: DelayType::CalendarDays,
            days: Some(2),
            local_time: Some("10:00:30".into()),
            ..Delay::immediate()
        },
    ]
    .into_iter()
    .enumerate()
    {
        let mut c = full.clone();
        c.campaign_id = format!("variant-{i}");
        c.kind = CampaignKind::Campaign;
        c.status = CampaignStatus::Draft;
        c.starts_at = None;
        c.published_at = Some(-1_500);
        c.backfill_since = None;
        let rule = c.follow_on.as_mut().unwrap();
        if delay.delay_type == DelayType::Immediate {
            rule.exceptions.clear();
        }
        rule.delay = delay;
        rule.time_zone = None;
        rule.trigger.qualifier = None;
        rule.reeligibility = Reeligibility {
            policy: ReeligibilityPolicy::Never,
            seconds: None,
        };
        rule.on_repeat_trigger = RepeatTrigger::KeepFirst;
        rule.overdue = Overdue {
            policy: OverduePolicy::Send,
            seconds: None,
        };
        rule.message.payload.clear();
        variants.push(c);
    }
    variants.push(Campaign {
        backfill_since: None,
        mode: Default::default(),
        campaign_id: "12345".into(),
        name: "true".into(),
        kind: CampaignKind::Campaign,
        status: CampaignStatus::Archived,
        version: 0,
        published_at: None,
        starts_at: None,
        ends_at: None,
        follow_on: None,
    });
    round_trip(&variants);
}

#[test]
fn to_yaml_writes_the_documented_shapes() {
    let text = to_yaml(&[everything_set()]);
    for expected in [
        "delay:\n      next_weekday: MONDAY\n      at: 09:00\n",
        "reeligibility: 30d\n",
        "on_repeat_trigger: RESTART\n",
        "overdue:\n      drop_if_late_by: 2h\n",
        "- custom_event: unsubscribed\n",
        "- purchase: {}\n",
        "- purchase:\n        product_id: sku-1234\n",
        "- session_start: {}\n",
        "published_at: 2026-12-01T08:00:00.250Z\n",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in\n{text}");
    }
    assert_eq!(to_yaml(&[]), "campaigns: []\n");
}

// Generated campaigns: whatever validates must survive the trip through the file format.

fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        "[a-z][a-z0-9-]{0,12}",
        "[ -~]{0,16}",
        "\\PC{0,8}",
        Just("null".to_string()),
        Just("0x1F".to_string()),
        Just("- item".to_string()),
        Just("a\nb".to_string()),
    ]
}

fn id() -> impl Strategy<Value = String> {
    text().prop_filter("ids are not blank", |s| !s.trim().is_empty())
}

fn kinds() -> impl Strategy<Value = Vec<InteractionKind>> {
    prop::collection::vec(prop::sample::select(InteractionKind::KNOWN.to_vec()), 1..4)
}

fn delay() -> impl Strategy<Value = Delay> {
    let local_time =
        prop_oneof![Just("00:00"), Just("09:30"), Just("23:59:59")].prop_map(String::from);
    prop_oneof![
        Just(Delay::immediate()),
        (1..=30 * DAY_SECONDS).prop_map(Delay::after_seconds),
        (0..7usize, local_time.clone()).prop_map(|(w, t)| Delay {
            delay_type: DelayType::NextWeekday,
            weekday: Some(
                [
                    Weekday::Monday,
                    Weekday::Tuesday,
                    Weekday::Wednesday,
                    Weekday::Thursday,
                    Weekday::Friday,
                    Weekday::Saturday,
                    Weekday::Sunday,
                ][w]
            ),
            local_time: Some(t),
            ..Delay::immediate()
        }),
        (1..=30i32, local_time).prop_map(|(d, t)| Delay {
            delay_type: DelayType::CalendarDays,
            days: Some(d),
            local_time: Some(t),
            ..Delay::immediate()
        }),
    ]
}

fn exception() -> impl Strategy<Value = ExceptionMatcher> {
    let base = |exception_type| ExceptionMatcher {
        exception_type,
        campaign_id: None,
        interaction_kinds: Vec::new(),
        name: None,
    };
    prop_oneof![
        (prop::option::of(id()), kinds()).prop_map(move |(c, k)| ExceptionMatcher {
            campaign_id: c,
            interaction_kinds: k,
            ..base(ExceptionType::Interaction)
        }),
        id().prop_map(move |n| ExceptionMatcher {
            name: Some(n),
            ..base(ExceptionType::CustomEvent)
        }),
        prop::option::of(text()).prop_map(move |n| ExceptionMatcher {
            name: n,
            ..base(ExceptionType::Purchase)
        }),
        Just(base(ExceptionType::SessionStart)),
    ]
}

fn timestamp() -> impl Strategy<Value = Option<i64>> {
    prop::option::of(-1_000_000_000_000i64..4_000_000_000_000)
}

fn rule() -> impl Strategy<Value = FollowOnRule> {
    (
        (id(), kinds(), prop::option::of(text())),
        delay(),
        prop::option::of(prop_oneof![
            Just("UTC"),
            Just("Europe/Berlin"),
            Just("Asia/Kolkata")
        ]),
        prop::collection::vec(exception(), 0..4),
        prop::option::of(1..=720 * DAY_SECONDS),
        any::<bool>(),
        prop::option::of(0..=DAY_SECONDS),
        (
            0..6usize,
            text(),
            prop::collection::btree_map(text(), text(), 0..4),
        ),
    )
        .prop_map(
            |(
                (trigger_id, kinds, qualifier),
                delay,
                zone,
                mut exceptions,
                reeligible,
                restart,
                drop,
                (channel, template, payload),
            )| {
                if delay.delay_type == DelayType::Immediate {
                    exceptions.clear();
                }
                FollowOnRule {
                    trigger: Trigger {
                        campaign_id: trigger_id,
                        kinds,
                        qualifier,
                    },
                    delay,
                    time_zone: zone.map(String::from),
                    exceptions,
                    reeligibility: match reeligible {
                        None => Reeligibility {
                            policy: ReeligibilityPolicy::Never,
                            seconds: None,
                        },
                        Some(s) => Reeligibility {
                            policy: ReeligibilityPolicy::After,
                            seconds: Some(s),
                        },
                    },
                    on_repeat_trigger: if restart {
                        RepeatTrigger::Restart
                    } else {
                        RepeatTrigger::KeepFirst
                    },
                    overdue: match drop {
                        None => Overdue {
                            policy: OverduePolicy::Send,
                            seconds: None,
                        },
                        Some(s) => Overdue {
                            policy: OverduePolicy::DropIfLateBy,
                            seconds: Some(s),
                        },
                    },
                    message: Message {
                        channel: [
                            Channel::Email,
                            Channel::Push,
                            Channel::Sms,
                            Channel::InApp,
                            Channel::ContentCard,
                            Channel::Webhook,
                        ][channel],
                        template_id: if template.trim().is_empty() {
                            "t".into()
                        } else {
                            template
                        },
                        payload,
                    },
                }
            },
        )
}

fn campaign() -> impl Strategy<Value = Campaign> {
    (
        id(),
        text(),
        any::<bool>(),
        0..4usize,
        0..1_000i64,
        timestamp(),
        timestamp(),
        prop::option::of(1..1_000_000_000i64),
        prop::option::of(rule()),
    )
        .prop_map(
            |(
                campaign_id,
                name,
                card,
                status,
                version,
                published_at,
                starts_at,
                length,
                follow_on,
            )| Campaign {
                backfill_since: None,
                mode: Default::default(),
                campaign_id,
                name,
                kind: if card {
                    CampaignKind::NewsFeedCard
                } else {
                    CampaignKind::Campaign
                },
                status: [
                    CampaignStatus::Draft,
                    CampaignStatus::Active,
                    CampaignStatus::Stopped,
                    CampaignStatus::Archived,
                ][status],
                version,
                published_at,
                starts_at,
                ends_at: length.map(|l| starts_at.unwrap_or(0) + l),
                follow_on,
            },
        )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn generated_valid_campaigns_round_trip(campaigns in prop::collection::vec(campaign(), 0..4)) {
        // Distinct ids: a file may not repeat one.
        let mut seen = std::collections::HashSet::new();
        let campaigns: Vec<Campaign> = campaigns
            .into_iter()
            .filter(|c| seen.insert(c.campaign_id.clone()))
            .collect();
        for c in &campaigns {
            prop_assert!(validate_campaign(c, &Limits::default()).is_empty(), "{c:#?}");
        }
        let text = to_yaml(&campaigns);
        let back = parse_campaigns(&text, "generated", &Limits::default());
        prop_assert!(back.is_ok(), "{}\n---\n{text}", back.unwrap_err());
        prop_assert_eq!(back.unwrap(), campaigns, "---\n{}", text);
    }
}
