//! The `simulate` command as a user runs it: files in, table or JSONL out, bad lines named
//! by number, non-zero exit at the end.

use std::process::Command;

fn simulate(args: &[&str]) -> (i32, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_campaign-connector"))
        .arg("simulate")
        .args(args)
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn the_abandoned_cart_example_sends_to_the_user_who_neither_bought_nor_opened() {
    let (code, out, err) = simulate(&[
        "--campaigns",
        "examples/abandoned-cart.yaml",
        "--events",
        "examples/abandoned-cart.events.jsonl",
        "--format",
        "jsonl",
    ]);
    assert_eq!(code, 0, "{err}");
    let lines: Vec<serde_json::Value> = out
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let sends: Vec<&str> = lines
        .iter()
        .filter_map(|l| l.get("send_command"))
        .map(|c| c["user_id"].as_str().unwrap())
        .collect();
    assert_eq!(sends, ["alice"]);
    let cancelled: Vec<(&str, &str)> = lines
        .iter()
        .filter_map(|l| l.get("decision"))
        .filter(|d| d["outcome"] == "CANCELLED")
        .map(|d| {
            (
                d["user_id"].as_str().unwrap(),
                d["cause_event_id"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(cancelled, [("carol", "e5"), ("bob", "e4")]);
    let send = lines.iter().find_map(|l| l.get("send_command")).unwrap();
    assert_eq!(send["due_at"], "2026-11-03T10:00:00Z");
    assert_eq!(send["template_id"], "cart-reminder-v3");
    assert!(err.contains("5 events, 1 send-commands"), "{err}");
}

#[test]
fn a_bad_line_is_reported_with_its_number_the_rest_still_runs_and_the_exit_is_non_zero() {
    let dir = tempfile::tempdir().unwrap();
    let events = dir.path().join("events.jsonl");
    std::fs::write(
        &events,
        concat!(
            r#"{"interaction": {"event_id": "e1", "user_id": "alice", "campaign_id": "abandoned-cart", "kind": "PUSH_RECEIVED", "occurred_at": "2026-11-02T10:00:00Z"}}"#,
            "\n",
            "this is not json\n",
            r#"{"interaction": {"event_id": "e2", "user_id": "", "campaign_id": "abandoned-cart", "kind": "PUSH_RECEIVED", "occurred_at": 0}}"#,
            "\n",
            r#"{"user_event": {"event_id": "e3", "user_id": "bob", "type": "PURCHASE", "occurred_at": "yesterday"}}"#,
            "\n",
        ),
    )
    .unwrap();
    let (code, out, err) = simulate(&[
        "--campaigns",
        "examples/abandoned-cart.yaml",
        "--events",
        events.to_str().unwrap(),
    ]);
    assert_eq!(code, 1);
    assert!(err.contains("events.jsonl:2: invalid JSON"), "{err}");
    assert!(
        err.contains("events.jsonl:3: interaction: empty user_id"),
        "{err}"
    );
    assert!(
        err.contains(r#"events.jsonl:4: UserEvent.occurred_at: invalid timestamp "yesterday""#),
        "{err}"
    );
    // The good line still ran: alice's follow-on was sent a day later.
    assert!(out.contains("SEND") && out.contains("alice"), "{out}");
    assert!(out.contains("2026-11-03T10:00:00Z"), "{out}");
}

#[test]
fn until_bounds_the_simulated_time() {
    let (code, out, _) = simulate(&[
        "--campaigns",
        "examples/abandoned-cart.yaml",
        "--events",
        "examples/abandoned-cart.events.jsonl",
        "--until",
        "2026-11-02T20:00:00Z",
    ]);
    assert_eq!(code, 0);
    assert!(
        !out.contains("SEND"),
        "nothing is due before the until time: {out}"
    );
    assert!(out.contains("SCHEDULED"));
}

#[test]
fn an_invalid_campaigns_file_is_refused_with_file_campaign_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let campaigns = dir.path().join("bad.yaml");
    std::fs::write(
        &campaigns,
        r#"
campaigns:
  - campaign_id: f
    name: F
    status: ACTIVE
    follow_on:
      trigger: {campaign_id: a, kinds: [EMAIL_OPENED]}
      delay: immediate
      exceptions:
        - purchase: {}
      message: {channel: EMAIL, template_id: t}
"#,
    )
    .unwrap();
    let (code, _, err) = simulate(&[
        "--campaigns",
        campaigns.to_str().unwrap(),
        "--events",
        "examples/abandoned-cart.events.jsonl",
    ]);
    assert_eq!(code, 2);
    assert!(err.contains("bad.yaml"), "{err}");
    assert!(err.contains(r#"campaign "f""#), "{err}");
    assert!(
        err.contains("unknown interaction kind EMAIL_OPENED (did you mean EMAIL_OPEN?)"),
        "{err}"
    );
    assert!(err.contains("exceptions require a delay"), "{err}");
}

/// Writes `bytes` as an events file in a fresh directory (kept alive by the guard).
fn events_file(bytes: &[u8]) -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("events.jsonl");
    std::fs::write(&path, bytes).unwrap();
    let path = path.to_str().unwrap().to_string();
    (dir, path)
}

/// alice's abandoned-cart push, which is sent a day later.
const ALICE: &str = r#"{"interaction": {"event_id": "e1", "user_id": "alice", "campaign_id": "abandoned-cart", "kind": "PUSH_RECEIVED", "occurred_at": "2026-11-02T10:00:00Z"}}"#;

fn simulate_cart(events: &str, extra: &[&str]) -> (i32, String, String) {
    let mut args = vec![
        "--campaigns",
        "examples/abandoned-cart.yaml",
        "--events",
        events,
    ];
    args.extend_from_slice(extra);
    simulate(&args)
}

#[test]
fn a_timestamp_outside_the_event_time_range_is_a_bad_line_and_the_rest_still_runs() {
    let far = r#"{"interaction": {"event_id": "e2", "user_id": "bob", "campaign_id": "abandoned-cart", "kind": "PUSH_RECEIVED", "occurred_at": 8210298412800000}}"#;
    let early = r#"{"user_event": {"event_id": "e3", "user_id": "bob", "type": "PURCHASE", "occurred_at": -1}}"#;
    let (_dir, path) = events_file(format!("{ALICE}\n{far}\n{early}\n").as_bytes());
    let (code, out, err) = simulate_cart(&path, &[]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains(
            "events.jsonl:2: occurred_at 8210298412800000 is after the latest event time \
             8999-12-31T23:59:59.999Z"
        ),
        "{err}"
    );
    assert!(
        err.contains(
            "events.jsonl:3: occurred_at -1 (1969-12-31T23:59:59.999Z) is before the earliest \
             event time 1970-01-01T00:00:00Z"
        ),
        "{err}"
    );
    assert!(err.contains("1 events, 1 send-commands"), "{err}");
    assert!(out.contains("SEND") && out.contains("alice"), "{out}");
    assert!(!out.contains("bob"), "{out}");
}

#[test]
fn a_table_cell_longer_than_any_format_width_is_cut_with_an_ellipsis() {
    let long_user = "u".repeat(70_000);
    let line = ALICE.replace("alice", &long_user);
    let (_dir, path) = events_file(line.as_bytes());
    let (code, out, err) = simulate_cart(&path, &[]);
    assert_eq!(code, 0, "{err}");
    let row = out
        .lines()
        .find(|l| l.contains("SCHEDULED"))
        .unwrap_or_else(|| panic!("{out}"));
    let shown = format!("{}…", "u".repeat(159));
    assert!(row.contains(&shown), "{row}");
    assert!(
        !row.contains(&"u".repeat(160)),
        "the cell is cut at 160 characters"
    );
    assert!(out.lines().all(|l| l.chars().count() < 1_000), "{out}");
    // JSONL shows the value whole.
    let (code, out, _) = simulate_cart(&path, &["--format", "jsonl"]);
    assert_eq!(code, 0);
    assert!(out.contains(&long_user));
}

#[test]
fn a_line_that_is_not_utf8_is_a_bad_line_and_the_rest_still_runs() {
    let mut bytes = ALICE.replace("alice", "caf\u{e9}").into_bytes();
    bytes.push(b'\n');
    bytes.extend_from_slice(b"{\"interaction\": {\"user_id\": \"bob\xFF\"}}\n");
    bytes.extend_from_slice(ALICE.as_bytes());
    bytes.push(b'\n');
    let (_dir, path) = events_file(&bytes);
    let (code, out, err) = simulate_cart(&path, &[]);
    assert_eq!(code, 1, "{err}");
    assert!(
        err.contains("events.jsonl:2: not UTF-8: byte 0xFF at byte offset 32 of the line"),
        "{err}"
    );
    assert!(err.contains("2 events, 2 send-commands"), "{err}");
    assert!(out.contains("café") && out.contains("alice"), "{out}");
}

#[test]
fn a_byte_order_mark_at_the_start_of_the_file_is_skipped() {
    let mut bytes = b"\xEF\xBB\xBF".to_vec();
    bytes.extend_from_slice(ALICE.as_bytes());
    let (_dir, path) = events_file(&bytes);
    let (code, out, err) = simulate_cart(&path, &[]);
    assert_eq!(code, 0, "{err}");
    assert!(err.contains("1 events, 1 send-commands"), "{err}");
    assert!(out.contains("alice"), "{out}");
}

#[test]
fn until_as_a_bare_number_is_refused_rather_than_guessed() {
    let (_dir, path) = events_file(ALICE.as_bytes());
    // 2026-11-04 in seconds: read as milliseconds it would be January 1970.
    let (code, out, err) = simulate_cart(&path, &["--until", "1793750400"]);
    assert_eq!(code, 2, "{err}");
    assert!(out.is_empty(), "{out}");
    assert!(err.contains("--until"), "{err}");
    assert!(
        err.contains(r#"invalid time "1793750400": expected RFC 3339"#),
        "{err}"
    );
    assert!(err.contains("a bare number is refused"), "{err}");
    let (code, out, err) = simulate_cart(&path, &["--until", "2026-11-04T00:00:00+00:00"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("SEND"), "{out}");
}
