//! The connector against the real Java implementations: the Apache Avro Java library
//! (`BinaryMessageEncoder`, `BinaryMessageDecoder` + `SchemaStore`, `SchemaNormalization`)
//! and the Kafka Java client, driven through `tests/java/AvroInterop.java`, which uses only
//! those libraries and the `.avsc` files. The last test runs a JVM producer, the connector
//! and a JVM consumer on the real broker.
//!
//! Confluent's `KafkaAvroSerializer` is not on Maven Central; its wire format is tested here
//! with a JVM client that speaks it over HTTP to a registry that requires credentials.

mod broker;
mod java;
mod registry;

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;
use std::time::Duration;

use campaign_connector::codec::{Codec, EncodingSettings};
use campaign_connector::model::*;
use java::{avsc_files, hex, root, unhex, Java, SchemaFile};
use registry::{FakeRegistry, Require};
use serde_json::{json, Value as Json};

const WRITER_SCHEMAS: &str = "tests/fixtures/writer_schemas";

fn props(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn interaction() -> Interaction {
    Interaction {
        event_id: "e1".into(),
        user_id: "u1".into(),
        campaign_id: "cart-push".into(),
        kind: InteractionKind::PushReceived,
        qualifier: Some("btn-1".into()),
        occurred_at: 1_764_000_000_123,
        user_time_zone: Some("Europe/Berlin".into()),
        properties: props(&[("source", "ios"), ("app", "7.1")]),
    }
}

fn user_event() -> UserEvent {
    UserEvent {
        event_id: "e2".into(),
        user_id: "u1".into(),
        event_type: UserEventType::Purchase,
        name: Some("sku-1".into()),
        occurred_at: 1_764_000_100_000,
        user_time_zone: None,
        properties: props(&[]),
    }
}

fn trigger_ref() -> TriggerRef {
    TriggerRef {
        campaign_id: "cart-push".into(),
        kind: InteractionKind::PushReceived,
        event_id: "e1".into(),
        occurred_at: 1_764_000_000_123,
    }
}

fn campaign() -> Campaign {
    Campaign {
        backfill_since: None,
        mode: Default::default(),
        campaign_id: "cart-email".into(),
        name: "Cart reminder".into(),
        kind: CampaignKind::Campaign,
        status: CampaignStatus::Active,
        version: 3,
        published_at: Some(1_700_000_000_000),
        starts_at: None,
        ends_at: Some(1_800_000_000_000),
        follow_on: Some(FollowOnRule {
            trigger: Trigger {
                campaign_id: "cart-push".into(),
                kinds: vec![InteractionKind::PushReceived, InteractionKind::EmailOpen],
                qualifier: None,
            },
            delay: Delay::after_seconds(86_400),
            time_zone: Some("Europe/Paris".into()),
            exceptions: vec![ExceptionMatcher {
                exception_type: ExceptionType::Purchase,
                campaign_id: None,
                interaction_kinds: vec![],
                name: Some("sku-9".into()),
            }],
            reeligibility: Reeligibility {
                policy: ReeligibilityPolicy::Never,
                seconds: None,
            },
            on_repeat_trigger: RepeatTrigger::KeepFirst,
            overdue: Overdue {
                policy: OverduePolicy::Send,
                seconds: None,
            },
            message: Message {
                channel: Channel::Email,
                template_id: "tpl-1".into(),
                payload: props(&[("discount", "10")]),
            },
        }),
    }
}

fn send_command() -> SendCommand {
    SendCommand {
        command_id: "cmd-1".into(),
        user_id: "u1".into(),
        campaign_id: "cart-email".into(),
        campaign_version: 3,
        channel: Channel::Email,
        template_id: "tpl-1".into(),
        payload: props(&[("discount", "10")]),
        trigger: trigger_ref(),
        due_at: 1_764_086_400_123,
        emitted_at: 1_764_086_400_500,
    }
}

fn decision(outcome: DecisionOutcome, reason: DecisionReason) -> Decision {
    Decision {
        user_id: "u1".into(),
        follow_on_id: "cart-email".into(),
        follow_on_version: Some(3),
        outcome,
        reason,
        command_id: Some("cmd-1".into()),
        trigger_event_id: Some("e1".into()),
        cause_event_id: None,
        due_at: Some(1_764_086_400_123),
        decided_at: 1_764_000_000_123,
        source: Some(InputCoordinates {
            topic: "campaign-interactions".into(),
            partition: 2,
            offset: 41,
        }),
    }
}

fn task_state() -> TaskStateRecord {
    TaskStateRecord {
        user: Some(UserState {
            user_id: "u1".into(),
            pending: vec![PendingSendState {
                follow_on_id: "cart-email".into(),
                follow_on_version: 3,
                trigger: trigger_ref(),
                due_at: 1_764_086_400_123,
            }],
            receipts: vec![ReceiptState {
                follow_on_id: "welcome".into(),
                last_sent_at: 1_700_000_000_000,
            }],
        }),
        rule: Some(RuleSnapshot {
            campaign: campaign(),
        }),
        progress: Some(TaskProgress { stream_time: 7 }),
    }
}

fn line(fields: &[&str]) -> String {
    fields.join("\t")
}

fn parse_json(text: &str) -> Json {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("{e}: {text}"))
}

// ---------------------------------------------------------------------------------------
// Fingerprints

#[test]
fn every_schema_files_fingerprint_and_canonical_form_are_the_java_librarys() {
    let mut files = avsc_files("schemas");
    files.extend(avsc_files("schemas/previous/1"));
    files.extend(avsc_files("schemas/previous/2"));
    files.extend(avsc_files(WRITER_SCHEMAS));
    files.extend(avsc_files("tests/fixtures/reader_schemas"));
    let args: Vec<&str> = files.iter().map(String::as_str).collect();

    let java: BTreeMap<String, Json> = Java::get()
        .run(&[&["fingerprints"], &args[..]].concat(), &[])
        .iter()
        .map(|l| {
            let v = parse_json(l);
            (v["file"].as_str().unwrap().to_string(), v)
        })
        .collect();
    let connector = |extra: &[&str]| -> Vec<Json> {
        let out = Command::new(env!("CARGO_BIN_EXE_campaign-connector"))
            .args(["schemas", "--format", "jsonl"])
            .args(extra)
            .current_dir(root())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .map(parse_json)
            .collect()
    };

    let ours = connector(&args);
    assert_eq!(ours.len(), files.len());
    for (file, ours) in files.iter().zip(&ours) {
        let theirs = &java[file];
        println!(
            "{file}: Java {} / connector {}",
            theirs["fingerprint"], ours["fingerprint"]
        );
        assert_eq!(ours["name"], theirs["name"], "{file}");
        assert_eq!(ours["canonical_form"], theirs["canonical"], "{file}");
        assert_eq!(ours["fingerprint"], theirs["fingerprint"], "{file}");
        let fp = theirs["fingerprint"].as_i64().unwrap() as u64;
        assert_eq!(ours["fingerprint_hex"], format!("{fp:016x}"), "{file}");
    }

    // This build's own schemas (what the codecs write) are the files' to Java.
    for built_in in connector(&[]) {
        let source = built_in["source"].as_str().unwrap();
        let file = source
            .split_once("(")
            .and_then(|(_, f)| f.strip_suffix(')'))
            .unwrap();
        assert_eq!(
            built_in["fingerprint"], java[file]["fingerprint"],
            "{source}"
        );
        assert_eq!(
            built_in["canonical_form"], java[file]["canonical"],
            "{source}"
        );
    }
}

// ---------------------------------------------------------------------------------------
// Single-object encoding, both ways

/// The newer producer's interaction (`interaction_v2.avsc`), in Avro JSON.
fn newer_interaction_json(event_id: &str, user: &str, campaign: &str, kind: &str, t: i64) -> Json {
    json!({"event_id": event_id, "user_id": user, "campaign_id": campaign, "kind": kind,
           "qualifier": null, "occurred_at": t, "user_time_zone": {"string": "Asia/Tokyo"},
           "properties": {"k": "v"}, "channel_hint": {"string": "email"}})
}

/// The older producer's user event (`user_event_v0.avsc`), in Avro JSON.
fn older_user_event_json(event_id: &str, user: &str, kind: &str, t: i64) -> Json {
    json!({"event_id": event_id, "user_id": user, "type": kind, "occurred_at": t})
}

#[test]
fn java_single_object_records_decode_in_the_connector_including_older_and_newer_writers() {
    let ix = SchemaFile::load("schemas/interaction.avsc");
    let ue = SchemaFile::load("schemas/user_event.avsc");
    let cp = SchemaFile::load("schemas/campaign.avsc");
    let v2 = SchemaFile::load("tests/fixtures/writer_schemas/interaction_v2.avsc");
    let v0 = SchemaFile::load("tests/fixtures/writer_schemas/user_event_v0.avsc");
    let input = [
        line(&[&ix.path, &ix.json_of(&interaction()).to_string()]),
        line(&[&ue.path, &ue.json_of(&user_event()).to_string()]),
        line(&[&cp.path, &cp.json_of(&campaign()).to_string()]),
        line(&[
            &v2.path,
            &newer_interaction_json("e9", "u1", "c1", "EMAIL_FORWARD", 1_000).to_string(),
        ]),
        line(&[
            &v2.path,
            &newer_interaction_json("e8", "u1", "c1", "EMAIL_OPEN", 2_000).to_string(),
        ]),
        line(&[
            &v0.path,
            &older_user_event_json("e3", "u2", "REFUND", 7).to_string(),
        ]),
    ];
    let out = Java::get().run(&["encode"], &input);
    let bytes: Vec<Vec<u8>> = out.iter().map(|l| unhex(l)).collect();

    let with_dirs = EncodingSettings::avro().with_schema_dir(root().join(WRITER_SCHEMAS));
    let interactions = Codec::<Interaction>::new("ix", &with_dirs).unwrap();
    let user_events = Codec::<UserEvent>::new("ue", &with_dirs).unwrap();
    let campaigns = Codec::<Campaign>::new("cp", &EncodingSettings::avro()).unwrap();

    // This build's schemas: the same bytes both ways.
    assert_eq!(interactions.decode(&bytes[0]).unwrap(), interaction());
    assert_eq!(interactions.encode(&interaction()).unwrap(), bytes[0]);
    assert_eq!(user_events.decode(&bytes[1]).unwrap(), user_event());
    assert_eq!(user_events.encode(&user_event()).unwrap(), bytes[1]);
    assert_eq!(campaigns.decode(&bytes[2]).unwrap(), campaign());
    assert_eq!(campaigns.encode(&campaign()).unwrap(), bytes[2]);

    // A newer producer: an unknown kind reads as UNKNOWN, the extra field is skipped.
    let newer = interactions.decode(&bytes[3]).unwrap();
    assert_eq!(newer.kind, InteractionKind::Unknown);
    assert_eq!((newer.event_id.as_str(), newer.occurred_at), ("e9", 1_000));
    assert_eq!(newer.user_time_zone.as_deref(), Some("Asia/Tokyo"));
    let known = interactions.decode(&bytes[4]).unwrap();
    assert_eq!(known.kind, InteractionKind::EmailOpen);
    assert_eq!(known.properties, props(&[("k", "v")]));
    // An older producer: the fields it did not have take their defaults.
    let older = user_events.decode(&bytes[5]).unwrap();
    assert_eq!(older.event_type, UserEventType::Unknown);
    assert_eq!((older.name.as_deref(), older.occurred_at), (None, 7));
    assert!(older.properties.is_empty());

    // Without the evolved schemas the connector refuses them by fingerprint, as Java
    // would (the fingerprint in the message is the one Java computed).
    let own_only = Codec::<Interaction>::new("ix", &EncodingSettings::avro()).unwrap();
    let e = own_only.decode(&bytes[3]).unwrap_err();
    assert!(
        e.to_string()
            .starts_with("unknown writer schema fingerprint 0x"),
        "{e}"
    );
}

#[test]
fn the_connectors_records_decode_in_java_with_the_schema_files_and_newer_and_older_readers() {
    let sent = decision(DecisionOutcome::Sent, DecisionReason::Due);
    let ignored = decision(DecisionOutcome::Ignored, DecisionReason::NotReeligible);
    let avro = EncodingSettings::avro();
    let encoded: Vec<(&str, Vec<u8>, Json)> = vec![
        (
            "schemas/send_command.avsc",
            Codec::new("sc", &avro)
                .unwrap()
                .encode(&send_command())
                .unwrap(),
            SchemaFile::load("schemas/send_command.avsc").json_of(&send_command()),
        ),
        (
            "schemas/decision.avsc",
            Codec::new("d", &avro).unwrap().encode(&sent).unwrap(),
            SchemaFile::load("schemas/decision.avsc").json_of(&sent),
        ),
        (
            "schemas/task_state.avsc",
            Codec::new("cl", &avro)
                .unwrap()
                .encode(&task_state())
                .unwrap(),
            SchemaFile::load("schemas/task_state.avsc").json_of(&task_state()),
        ),
        (
            "schemas/interaction.avsc",
            Codec::new("ix", &avro)
                .unwrap()
                .encode(&interaction())
                .unwrap(),
            SchemaFile::load("schemas/interaction.avsc").json_of(&interaction()),
        ),
        (
            "schemas/user_event.avsc",
            Codec::new("ue", &avro)
                .unwrap()
                .encode(&user_event())
                .unwrap(),
            SchemaFile::load("schemas/user_event.avsc").json_of(&user_event()),
        ),
        (
            "schemas/campaign.avsc",
            Codec::new("cp", &avro)
                .unwrap()
                .encode(&campaign())
                .unwrap(),
            SchemaFile::load("schemas/campaign.avsc").json_of(&campaign()),
        ),
    ];
    let store = avsc_files("schemas");
    let store: Vec<&str> = store.iter().map(String::as_str).collect();
    let mut input: Vec<String> = encoded
        .iter()
        .map(|(file, bytes, _)| line(&[file, &hex(bytes)]))
        .collect();

    // A newer consumer of send-commands, an older one of decisions.
    let command_bytes = &encoded[0].1;
    let ignored_bytes = Codec::new("d", &avro).unwrap().encode(&ignored).unwrap();
    input.push(line(&[
        "tests/fixtures/reader_schemas/send_command_v2.avsc",
        &hex(command_bytes),
    ]));
    input.push(line(&[
        "tests/fixtures/reader_schemas/decision_v0.avsc",
        &hex(&encoded[1].1),
    ]));
    input.push(line(&[
        "tests/fixtures/reader_schemas/decision_v0.avsc",
        &hex(&ignored_bytes),
    ]));
    // What earlier versions of the connector wrote: Java cannot resolve its fingerprint.
    let legacy =
        std::fs::read_to_string(root().join("tests/fixtures/interaction.single_object.hex"))
            .unwrap()
            .split_whitespace()
            .collect::<String>();
    input.push(line(&["schemas/interaction.avsc", &legacy]));

    let out = Java::get().run(&[&["decode"], &store[..]].concat(), &input);
    assert_eq!(out.len(), input.len(), "{out:#?}");
    for ((file, _, expected), got) in encoded.iter().zip(&out) {
        assert_eq!(
            &parse_json(got),
            expected,
            "{file} read by the Java library"
        );
    }
    let n = encoded.len();

    let mut newer = encoded[0].2.clone();
    newer["priority"] = Json::Null;
    assert_eq!(parse_json(&out[n]), newer, "send-command, newer reader");

    let older = |d: &Decision, outcome: &str| {
        let full = SchemaFile::load("schemas/decision.avsc").json_of(d);
        let mut expected = serde_json::Map::new();
        for key in [
            "user_id",
            "follow_on_id",
            "follow_on_version",
            "outcome",
            "reason",
            "decided_at",
        ] {
            expected.insert(key.to_string(), full[key].clone());
        }
        expected.insert("outcome".into(), outcome.into());
        Json::Object(expected)
    };
    // SENT is newer than that reader: it reads as the enum's default.
    assert_eq!(parse_json(&out[n + 1]), older(&sent, "UNKNOWN"));
    assert_eq!(parse_json(&out[n + 2]), older(&ignored, "IGNORED"));

    assert!(
        out[n + 3].starts_with("ERROR\tMissingSchemaException: Cannot resolve schema for fingerprint: -7405638181771140547"),
        "{}",
        out[n + 3]
    );
}

// ---------------------------------------------------------------------------------------
// Confluent wire format

#[test]
fn confluent_wire_format_with_a_jvm_client_and_a_registry_that_requires_credentials() {
    let registry = FakeRegistry::start_with(
        Require::Basic {
            user: "jvm-and-connector".into(),
            password: "pw-123".into(),
        },
        None,
    );
    let settings = registry.settings_basic("jvm-and-connector", "pw-123");
    let ix = SchemaFile::load("schemas/interaction.avsc");
    let v2 = SchemaFile::load("tests/fixtures/writer_schemas/interaction_v2.avsc");
    let sc = SchemaFile::load("schemas/send_command.avsc");
    let sc2 = SchemaFile::load("tests/fixtures/reader_schemas/send_command_v2.avsc");

    // The JVM registers its writer schemas and writes 00 | id | datum.
    let jvm = |args: &[&str], input: &[String]| {
        Java::get().run_with_env(
            args,
            input,
            &[("REGISTRY_USER_INFO", "jvm-and-connector:pw-123")],
        )
    };
    let out = jvm(
        &["confluent-encode", &registry.url],
        &[
            line(&[
                "ix-value",
                &ix.path,
                &ix.json_of(&interaction()).to_string(),
            ]),
            line(&[
                "ix-value",
                &v2.path,
                &newer_interaction_json("e9", "u1", "c1", "EMAIL_FORWARD", 1_000).to_string(),
            ]),
        ],
    );
    let codec = Codec::<Interaction>::new("ix", &settings).unwrap();
    let bytes: Vec<Vec<u8>> = out.iter().map(|l| unhex(l)).collect();
    assert_eq!(bytes[0][0], 0, "magic byte");
    assert_eq!(codec.decode(&bytes[0]).unwrap(), interaction());
    let newer = codec.decode(&bytes[1]).unwrap();
    assert_eq!(
        (newer.kind, newer.event_id.as_str()),
        (InteractionKind::Unknown, "e9")
    );

    // The connector registers and writes; the JVM fetches the writer schema and resolves.
    let commands = Codec::<SendCommand>::new("sc", &settings).unwrap();
    let written = hex(&commands.encode(&send_command()).unwrap());
    let out = jvm(
        &["confluent-decode", &registry.url],
        &[line(&[&sc.path, &written]), line(&[&sc2.path, &written])],
    );
    let expected = sc.json_of(&send_command());
    assert_eq!(parse_json(&out[0]), expected);
    let mut newer = expected.clone();
    newer["priority"] = Json::Null;
    assert_eq!(parse_json(&out[1]), newer);
    assert_eq!(
        sc2.json_of(&send_command())["channel"],
        expected["channel"],
        "the newer reader knows every channel"
    );

    // Every request of both clients carried the credentials (the registry refuses others).
    assert!(registry
        .requests()
        .iter()
        .all(|r| r.authorization.as_deref() == Some("Basic anZtLWFuZC1jb25uZWN0b3I6cHctMTIz")));
    assert_eq!(registry.count("POST", "/subjects/ix-value/versions"), 2);
    assert_eq!(
        registry.count("GET", "/schemas/ids/"),
        3,
        "each id fetched once"
    );
    assert_eq!(registry.count("POST", "/subjects/sc-value/versions"), 1);
}

// ---------------------------------------------------------------------------------------
// On the broker: JVM producer → connector → JVM consumer

#[test]
fn a_jvm_producer_feeds_the_connector_and_a_jvm_consumer_reads_its_outputs() {
    let java = Java::get();
    let mut w = broker::World::new("java", 2);
    let dirs = format!("[{}]", root().join(WRITER_SCHEMAS).display());
    w.set("ENCODINGS__INTERACTIONS__SCHEMA_DIRS", &dirs);
    w.set("ENCODINGS__USER_EVENTS__SCHEMA_DIRS", &dirs);
    w.create_topics();
    // The delay outlasts the JVM producer's start: the records carry the time taken before
    // it starts, and a caught-up task fires by the wall clock, so a delay shorter than the
    // start could fire ann's email before her purchase arrives (as the SPEC says it must).
    w.publish(&broker::cart_campaigns("12s"));
    w.publish(broker::PROMO_CHAIN);
    let instance = w.start("i0");
    instance.wait_log("catalog loaded", Duration::from_secs(60));

    let (ix, ue) = (w.topic("interactions"), w.topic("user-events"));
    let own_ix = SchemaFile::load("schemas/interaction.avsc");
    let own_ue = SchemaFile::load("schemas/user_event.avsc");
    let v2 = root().join("tests/fixtures/writer_schemas/interaction_v2.avsc");
    let v0 = root().join("tests/fixtures/writer_schemas/user_event_v0.avsc");
    let (v2, v0) = (v2.to_str().unwrap(), v0.to_str().unwrap());
    let t = broker::now_ms();
    let own = |user: &str, id: &str, campaign: &str, kind: InteractionKind| {
        let record = Interaction {
            event_id: id.into(),
            user_id: user.into(),
            campaign_id: campaign.into(),
            kind,
            qualifier: None,
            occurred_at: t,
            user_time_zone: None,
            properties: BTreeMap::new(),
        };
        line(&[
            &ix,
            user,
            &own_ix.path,
            &own_ix.json_of(&record).to_string(),
        ])
    };
    let purchase = UserEvent {
        event_id: "fay-p".into(),
        user_id: "fay".into(),
        event_type: UserEventType::Purchase,
        name: Some("sku-1".into()),
        occurred_at: t,
        user_time_zone: None,
        properties: BTreeMap::new(),
    };
    let lines = [
        // ann: the cart push, then a purchase from an older producer: cancelled.
        own(
            "ann",
            "ann-c",
            "abandoned-cart",
            InteractionKind::PushReceived,
        ),
        line(&[
            &ue,
            "ann",
            v0,
            &older_user_event_json("ann-p", "ann", "PURCHASE", t + 200).to_string(),
        ]),
        // bob: the cart push from a newer producer: the email after the delay.
        line(&[
            &ix,
            "bob",
            v2,
            &newer_interaction_json("bob-c", "bob", "abandoned-cart", "PUSH_RECEIVED", t)
                .to_string(),
        ]),
        // cy: the free-shipping push opened: step 2 at once.
        own(
            "cy",
            "cy-f",
            "free-shipping",
            InteractionKind::PushDirectOpen,
        ),
        // dee: a kind only the newer producer knows: nothing.
        line(&[
            &ix,
            "dee",
            v2,
            &newer_interaction_json("dee-f", "dee", "free-shipping", "EMAIL_FORWARD", t)
                .to_string(),
        ]),
        // eve: the free-shipping push opened, from the newer producer: step 2 at once.
        line(&[
            &ix,
            "eve",
            v2,
            &newer_interaction_json("eve-f", "eve", "free-shipping", "PUSH_DIRECT_OPEN", t)
                .to_string(),
        ]),
        // fay: a purchase with nothing pending.
        line(&[
            &ue,
            "fay",
            &own_ue.path,
            &own_ue.json_of(&purchase).to_string(),
        ]),
    ];
    let sent = java.run(&["produce", &w.bootstrap], &lines);
    assert!(sent.iter().all(|l| l == "sent"), "{sent:?}");

    let mut commands = w.send_commands();
    commands.until_count(3, Duration::from_secs(60));
    let mut decisions = w.reader("decisions");
    decisions.until_decisions("ann's cancellation", Duration::from_secs(30), |read| {
        read.iter()
            .any(|d| d.user_id == "ann" && d.outcome == DecisionOutcome::Cancelled)
            .then_some(())
    });
    // A clean stop commits everything: the JVM consumer then reads to the end offsets.
    assert_eq!(instance.stop(Duration::from_secs(30)), Some(0));

    let store = avsc_files("schemas");
    let mut args: Vec<String> = vec!["consume".into(), w.bootstrap.clone()];
    args.extend(store);
    args.push("--".into());
    for (topic, reader) in [
        ("send-commands", "schemas/send_command.avsc"),
        (
            "send-commands",
            "tests/fixtures/reader_schemas/send_command_v2.avsc",
        ),
        ("decisions", "schemas/decision.avsc"),
        (
            "decisions",
            "tests/fixtures/reader_schemas/decision_v0.avsc",
        ),
        ("changelog", "schemas/task_state.avsc"),
        ("dlq", "schemas/interaction.avsc"),
    ] {
        args.push(format!("{}={reader}", w.topic(topic)));
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = java.run(&args, &[]);
    let read = |topic: &str, reader: &str| -> Vec<(String, Json)> {
        out.iter()
            .filter_map(|l| {
                let fields: Vec<&str> = l.splitn(4, '\t').collect();
                (fields[0] == w.topic(topic) && fields[1] == reader).then(|| {
                    assert!(
                        !fields[3].starts_with("ERROR"),
                        "the JVM consumer could not read {topic} with {reader}: {l}"
                    );
                    let value = if fields[3] == "TOMBSTONE" {
                        Json::Null
                    } else {
                        parse_json(fields[3])
                    };
                    (fields[2].to_string(), value)
                })
            })
            .collect()
    };

    // Exactly the three commands, as the connector's own codec reads them.
    let jvm_commands = read("send-commands", "schemas/send_command.avsc");
    let got: BTreeSet<(String, String, String, String)> = jvm_commands
        .iter()
        .map(|(key, c)| {
            (
                key.clone(),
                c["user_id"].as_str().unwrap().to_string(),
                c["campaign_id"].as_str().unwrap().to_string(),
                c["trigger"]["event_id"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    let expected: BTreeSet<(String, String, String, String)> = [
        ("bob", "cart-email", "bob-c"),
        ("cy", "promo-2", "cy-f"),
        ("eve", "promo-2", "eve-f"),
    ]
    .iter()
    .map(|(u, c, e)| (u.to_string(), u.to_string(), c.to_string(), e.to_string()))
    .collect();
    assert_eq!(jvm_commands.len(), 3, "{jvm_commands:#?}");
    assert_eq!(got, expected);
    let sc = SchemaFile::load("schemas/send_command.avsc");
    let by_id = |values: Vec<Json>| -> BTreeMap<String, Json> {
        values
            .into_iter()
            .map(|c| (c["command_id"].as_str().unwrap().to_string(), c))
            .collect()
    };
    let connector_view = by_id(commands.commands().iter().map(|c| sc.json_of(c)).collect());
    let jvm_view = by_id(jvm_commands.iter().map(|(_, c)| c.clone()).collect());
    assert_eq!(jvm_view, connector_view, "every field, both readers");
    for (_, c) in read(
        "send-commands",
        "tests/fixtures/reader_schemas/send_command_v2.avsc",
    ) {
        let mut expected = jvm_view[c["command_id"].as_str().unwrap()].clone();
        expected["priority"] = Json::Null;
        assert_eq!(c, expected, "the newer reader");
    }

    // Decisions: ann's cancellation by the older producer's purchase; bob's timer fired,
    // cy's and eve's immediate sends.
    let jvm_decisions = read("decisions", "schemas/decision.avsc");
    assert!(
        jvm_decisions.iter().any(|(_, d)| d["user_id"] == "ann"
            && d["outcome"] == "CANCELLED"
            && d["cause_event_id"] == json!({"string": "ann-p"})),
        "{jvm_decisions:#?}"
    );
    let outcomes = |outcome: &str| -> BTreeSet<String> {
        jvm_decisions
            .iter()
            .filter(|(_, d)| d["outcome"] == outcome)
            .map(|(_, d)| d["user_id"].as_str().unwrap().to_string())
            .collect()
    };
    assert_eq!(outcomes("FIRED"), BTreeSet::from(["bob".to_string()]));
    assert_eq!(
        outcomes("SENT"),
        BTreeSet::from(["cy".to_string(), "eve".to_string()])
    );
    let sends = jvm_decisions
        .iter()
        .filter(|(_, d)| d["outcome"] == "SENT")
        .count();
    let older = read(
        "decisions",
        "tests/fixtures/reader_schemas/decision_v0.avsc",
    );
    assert_eq!(older.len(), jvm_decisions.len());
    assert_eq!(
        older
            .iter()
            .filter(|(_, d)| d["outcome"] == "UNKNOWN")
            .count(),
        sends,
        "an older reader reads the outcome it does not know as its default"
    );

    // State records, and nothing was dead-lettered.
    let state = read("changelog", "schemas/task_state.avsc");
    assert!(
        state.iter().any(|(_, s)| !s.is_null()),
        "the changelog has state records: {state:#?}"
    );
    assert_eq!(read("dlq", "schemas/interaction.avsc"), vec![]);
}
