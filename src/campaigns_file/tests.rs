use super::render::file_duration;
use super::*;

fn problems(text: &str) -> Vec<FileProblem> {
    match parse_campaigns(text, "t.yaml", &Limits::default()) {
        Ok(c) => panic!("expected problems, parsed {c:?}"),
        Err(e) => e.problems().to_vec(),
    }
}

#[test]
fn path_prefixes_respect_segment_boundaries() {
    assert!(is_path_prefix("follow_on.delay", "follow_on.delay"));
    assert!(is_path_prefix("follow_on.delay", "follow_on.delay.at"));
    assert!(is_path_prefix(
        "follow_on.trigger.kinds",
        "follow_on.trigger.kinds[0]"
    ));
    assert!(!is_path_prefix("follow_on.delay", "follow_on.delayed"));
}

#[test]
fn symbols_are_case_insensitive_and_suggest_near_misses() {
    assert_eq!(
        parse_symbol("active", &STATUSES, "status"),
        Ok(CampaignStatus::Active)
    );
    assert_eq!(
        parse_symbol(" Restart ", &REPEATS, "x"),
        Ok(RepeatTrigger::Restart)
    );
    let e = parse_symbol("ACTIV", &STATUSES, "status").unwrap_err();
    assert_eq!(e, "unknown status ACTIV (did you mean ACTIVE?)");
    let e = parse_symbol("zzz", &CHANNELS, "channel").unwrap_err();
    assert!(e.contains("expected one of EMAIL, PUSH"), "{e}");
}

#[test]
fn durations_are_written_in_days_not_weeks() {
    assert_eq!(file_duration(7 * DAY_SECONDS), "7d");
    assert_eq!(file_duration(30 * DAY_SECONDS), "30d");
    assert_eq!(file_duration(DAY_SECONDS + 12 * 3_600), "1d12h");
    assert_eq!(file_duration(5_400), "1h30m");
    assert_eq!(file_duration(45), "45s");
}

#[test]
fn bare_numbers_are_not_durations() {
    assert_eq!(parse_file_duration("7d"), Ok(7 * 86_400));
    assert!(parse_file_duration("7")
        .unwrap_err()
        .contains("needs a unit"));
}

#[test]
fn serde_paths_become_campaign_relative_fields() {
    assert_eq!(
        split_path("campaigns[2].follow_on.delay: boom", "campaigns[2]"),
        ("follow_on.delay".to_string(), "boom".to_string())
    );
    assert_eq!(
        split_path("campaigns[2]: missing field `name`", "campaigns[2]"),
        (String::new(), "missing field `name`".to_string())
    );
    assert_eq!(
        split_path("did not find expected key", ""),
        (String::new(), "did not find expected key".to_string())
    );
}

#[test]
fn unknown_keys_get_a_suggestion() {
    let m = with_key_suggestion(
        "unknown field `delai`, expected one of `trigger`, `delay`, `message`".into(),
    );
    assert!(m.ends_with("(did you mean `delay`?)"), "{m}");
}

#[test]
fn a_broken_campaign_does_not_hide_the_next_one() {
    let text = "\
campaigns:
  - campaign_id: a
    name: A
    status: ACTIVE
    colour: red
  - campaign_id: b
    name: B
    status: ACTIVE
    tags: [x]
  - campaign_id: c
    name: C
    status: ACTIV
";
    let p = problems(text);
    assert_eq!(p.len(), 3, "{p:#?}");
    assert_eq!(p[0].campaign.as_deref(), Some("a"));
    assert_eq!(p[0].location.map(|l| l.line), Some(5));
    assert_eq!(p[1].campaign.as_deref(), Some("b"));
    assert_eq!(p[1].location.map(|l| l.line), Some(9));
    assert_eq!(p[2].campaign.as_deref(), Some("c"));
    assert_eq!(p[2].field, "status");
}

#[test]
fn reading_stops_after_many_broken_campaigns() {
    let mut text = String::from("campaigns:\n");
    for i in 0..MAX_BROKEN_CAMPAIGNS + 5 {
        text.push_str(&format!(
            "  - {{campaign_id: c{i}, name: N, status: DRAFT, x: 1}}\n"
        ));
    }
    let p = problems(&text);
    assert_eq!(p.len(), MAX_BROKEN_CAMPAIGNS + 1);
    let last = p.last().unwrap();
    assert_eq!((last.index, last.campaign.as_deref()), (None, None));
    assert!(
        last.message
            .contains("after campaigns[19] were not checked"),
        "{}",
        last.message
    );
}

#[test]
fn exceptions_need_exactly_one_key() {
    let text = "\
campaigns:
  - campaign_id: f
    name: F
    status: ACTIVE
    follow_on:
      trigger: {campaign_id: a, kinds: [EMAIL_RECEIVED]}
      delay: 1d
      exceptions:
        - {purchase: {}, session_start: {}}
        - {}
      message: {channel: EMAIL, template_id: t}
";
    let p = problems(text);
    assert_eq!(p.len(), 2, "{p:#?}");
    assert_eq!(p[0].field, "follow_on.exceptions[0]");
    assert!(p[0].message.contains("found 2"));
    assert_eq!(p[1].field, "follow_on.exceptions[1]");
}

#[test]
fn null_purchase_and_session_start_mean_any() {
    let text = "\
campaigns:
  - campaign_id: f
    name: F
    status: ACTIVE
    follow_on:
      trigger: {campaign_id: a, kinds: [EMAIL_RECEIVED]}
      delay: 1d
      exceptions:
        - purchase:
        - session_start:
      message: {channel: EMAIL, template_id: t}
";
    let c = parse_campaigns(text, "t.yaml", &Limits::default()).unwrap();
    let e = &c[0].follow_on.as_ref().unwrap().exceptions;
    assert_eq!(e[0].exception_type, ExceptionType::Purchase);
    assert_eq!(e[0].name, None);
    assert_eq!(e[1].exception_type, ExceptionType::SessionStart);
}
