//! The schema files in `schemas/` are the contract; the Rust records must not drift from
//! them, and records must survive Avro encoding and schema evolution.

use std::collections::BTreeMap;
use std::path::Path;

use apache_avro::reader::datum::GenericDatumReader;
use apache_avro::types::Value;
use apache_avro::writer::datum::GenericDatumWriter;
use apache_avro::{from_value, AvroSchema, Schema};
use campaign_connector::model::*;
use serde::de::DeserializeOwned;
use serde::Serialize;

fn schema_file(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("schemas")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

/// The schema's JSON without `doc` attributes (documentation may be worded differently).
fn without_docs(v: serde_json::Value) -> serde_json::Value {
    match v {
        serde_json::Value::Object(m) => serde_json::Value::Object(
            m.into_iter()
                .filter(|(k, _)| k != "doc")
                .map(|(k, v)| (k, without_docs(v)))
                .collect(),
        ),
        serde_json::Value::Array(a) => {
            serde_json::Value::Array(a.into_iter().map(without_docs).collect())
        }
        other => other,
    }
}

fn assert_matches_file<T: AvroSchema>(file: &str) {
    let text = schema_file(file);
    Schema::parse_str(&text).unwrap_or_else(|e| panic!("{file} is not a valid Avro schema: {e}"));
    let from_file: serde_json::Value = serde_json::from_str(&text).expect("schema files are JSON");
    let from_rust = serde_json::to_value(T::get_schema()).expect("schemas serialize");
    let (a, b) = (without_docs(from_file), without_docs(from_rust));
    assert!(
        a == b,
        "schemas/{file} and the Rust type {} differ:\nfile: {}\nrust: {}",
        std::any::type_name::<T>(),
        serde_json::to_string_pretty(&a).unwrap(),
        serde_json::to_string_pretty(&b).unwrap()
    );
}

#[test]
fn every_schema_file_matches_its_rust_record() {
    assert_matches_file::<Interaction>("interaction.avsc");
    assert_matches_file::<UserEvent>("user_event.avsc");
    assert_matches_file::<Campaign>("campaign.avsc");
    assert_matches_file::<SendCommand>("send_command.avsc");
    assert_matches_file::<Decision>("decision.avsc");
    assert_matches_file::<TaskStateRecord>("task_state.avsc");
    assert_matches_file::<ShadowRecord>("shadow_record.avsc");
}

#[test]
fn every_interaction_kind_of_the_spec_is_a_symbol_with_unknown_as_default() {
    let schema: serde_json::Value = serde_json::from_str(&schema_file("interaction.avsc")).unwrap();
    let kind = schema["fields"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["name"] == "kind")
        .unwrap();
    let symbols: Vec<&str> = kind["type"]["symbols"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s.as_str().unwrap())
        .collect();
    let spec = "IN_APP_MESSAGE_VIEW IN_APP_MESSAGE_CLICK IN_APP_MESSAGE_BUTTON_CLICK EMAIL_CLICK \
        EMAIL_ALIAS_CLICK EMAIL_OPEN PUSH_DIRECT_OPEN PUSH_BUTTON_CLICK PUSH_STORY_PAGE_CLICK \
        CONVERSION_EVENT EMAIL_RECEIVED SMS_RECEIVED SMS_SHORT_LINK_CLICK PUSH_RECEIVED \
        WEBHOOK_RECEIVED CONTROL_GROUP_ENROLLED CONTENT_CARD_VIEW CONTENT_CARD_CLICK \
        CONTENT_CARD_DISMISS NEWS_FEED_CARD_VIEW NEWS_FEED_CARD_CLICK UNKNOWN";
    assert_eq!(symbols, spec.split_whitespace().collect::<Vec<_>>());
    assert_eq!(kind["type"]["default"], "UNKNOWN");
    for k in InteractionKind::KNOWN {
        assert_eq!(InteractionKind::from_symbol(k.symbol()), Some(k));
    }
}

fn encode<T: Serialize>(schema: &Schema, record: &T) -> Vec<u8> {
    let value = apache_avro::to_value(record).expect("to Avro value");
    let value = value.resolve(schema).expect("value fits the schema");
    to_avro_datum(schema, value)
}

fn to_avro_datum(schema: &Schema, value: Value) -> Vec<u8> {
    let writer = GenericDatumWriter::builder(schema).build().expect("writer");
    let mut bytes = Vec::new();
    writer.write_value(&mut bytes, value).expect("encodes");
    bytes
}

fn decode<T: DeserializeOwned>(writer: &Schema, reader: &Schema, bytes: &[u8]) -> T {
    let datum_reader = GenericDatumReader::builder(writer)
        .reader_schema(reader)
        .build()
        .expect("reader");
    let value = datum_reader.read_value(&mut &bytes[..]).expect("decodes");
    from_value(&value).expect("into the Rust record")
}

fn round_trip<T: Serialize + DeserializeOwned + PartialEq + std::fmt::Debug>(
    file: &str,
    record: &T,
) {
    let schema = Schema::parse_str(&schema_file(file)).unwrap();
    let bytes = encode(&schema, record);
    let back: T = decode(&schema, &schema, &bytes);
    assert_eq!(&back, record, "{file} round trip");
}

fn props(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn follow_on() -> Campaign {
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
                kinds: vec![InteractionKind::PushReceived],
                qualifier: Some("btn-1".into()),
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
                ExceptionMatcher {
                    exception_type: ExceptionType::Interaction,
                    campaign_id: None,
                    interaction_kinds: vec![InteractionKind::PushDirectOpen],
                    name: None,
                },
                ExceptionMatcher {
                    exception_type: ExceptionType::Purchase,
                    campaign_id: None,
                    interaction_kinds: vec![],
                    name: Some("sku-1".into()),
                },
            ],
            reeligibility: Reeligibility {
                policy: ReeligibilityPolicy::After,
                seconds: Some(86_400),
            },
            on_repeat_trigger: RepeatTrigger::Restart,
            overdue: Overdue {
                policy: OverduePolicy::DropIfLateBy,
                seconds: Some(3_600),
            },
            message: Message {
                channel: Channel::InApp,
                template_id: "tpl-7".into(),
                payload: props(&[("discount", "15")]),
            },
        }),
    }
}

#[test]
fn every_record_round_trips_through_its_schema_file() {
    round_trip(
        "interaction.avsc",
        &Interaction {
            event_id: "e1".into(),
            user_id: "u1".into(),
            campaign_id: "c1".into(),
            kind: InteractionKind::InAppMessageButtonClick,
            qualifier: Some("button-2".into()),
            occurred_at: 1_764_000_000_123,
            user_time_zone: Some("America/New_York".into()),
            properties: props(&[("a", "b")]),
        },
    );
    round_trip(
        "user_event.avsc",
        &UserEvent {
            event_id: "e2".into(),
            user_id: "u1".into(),
            event_type: UserEventType::Purchase,
            name: Some("sku-1".into()),
            occurred_at: 5,
            user_time_zone: None,
            properties: props(&[]),
        },
    );
    round_trip("campaign.avsc", &follow_on());
    let mut shadow = follow_on();
    shadow.campaign_id = Campaign::shadow_id(&shadow.campaign_id);
    shadow.mode = CampaignMode::Shadow;
    round_trip("campaign.avsc", &shadow);
    let trigger = TriggerRef {
        campaign_id: "cart-push".into(),
        kind: InteractionKind::PushReceived,
        event_id: "e1".into(),
        occurred_at: 10,
    };
    let command = SendCommand {
        command_id: "id".into(),
        user_id: "u1".into(),
        campaign_id: "cart-email@shadow".into(),
        campaign_version: 3,
        channel: Channel::Email,
        template_id: "tpl".into(),
        payload: props(&[("x", "y")]),
        trigger: trigger.clone(),
        due_at: 20,
        emitted_at: 21,
    };
    round_trip("shadow_record.avsc", &ShadowRecord::send_command(command));
    round_trip(
        "send_command.avsc",
        &SendCommand {
            command_id: "id".into(),
            user_id: "u1".into(),
            campaign_id: "cart-email".into(),
            campaign_version: 3,
            channel: Channel::Email,
            template_id: "tpl".into(),
            payload: props(&[("x", "y")]),
            trigger: trigger.clone(),
            due_at: 20,
            emitted_at: 21,
        },
    );
    round_trip(
        "decision.avsc",
        &Decision {
            user_id: "u1".into(),
            follow_on_id: "cart-email".into(),
            follow_on_version: Some(3),
            outcome: DecisionOutcome::Cancelled,
            reason: DecisionReason::Exception,
            command_id: None,
            trigger_event_id: Some("e1".into()),
            cause_event_id: Some("e9".into()),
            due_at: Some(20),
            decided_at: 15,
            source: Some(InputCoordinates {
                topic: "user-events".into(),
                partition: 3,
                offset: 99,
            }),
        },
    );
    round_trip(
        "shadow_record.avsc",
        &ShadowRecord::decision(Decision {
            user_id: "u1".into(),
            follow_on_id: "cart-email@shadow".into(),
            follow_on_version: Some(3),
            outcome: DecisionOutcome::Scheduled,
            reason: DecisionReason::Trigger,
            command_id: None,
            trigger_event_id: Some("e1".into()),
            cause_event_id: Some("e1".into()),
            due_at: Some(20),
            decided_at: 10,
            source: None,
        }),
    );
    for record in [
        TaskStateRecord {
            user: Some(UserState {
                user_id: "u1".into(),
                pending: vec![PendingSendState {
                    follow_on_id: "cart-email".into(),
                    follow_on_version: 3,
                    trigger,
                    due_at: 20,
                }],
                receipts: vec![ReceiptState {
                    follow_on_id: "other".into(),
                    last_sent_at: 7,
                }],
            }),
            rule: None,
            progress: None,
        },
        TaskStateRecord {
            user: None,
            rule: Some(RuleSnapshot {
                campaign: follow_on(),
            }),
            progress: None,
        },
        TaskStateRecord {
            user: None,
            rule: None,
            progress: Some(TaskProgress { stream_time: 42 }),
        },
    ] {
        round_trip("task_state.avsc", &record);
    }
}

/// A newer producer adds an interaction kind and a field: this version still reads its
/// records, the new kind as `UNKNOWN`.
#[test]
fn newer_writer_with_new_kind_and_field_decodes_as_unknown() {
    let reader = Schema::parse_str(&schema_file("interaction.avsc")).unwrap();
    let mut evolved: serde_json::Value =
        serde_json::from_str(&schema_file("interaction.avsc")).unwrap();
    let fields = evolved["fields"].as_array_mut().unwrap();
    let kind = fields.iter_mut().find(|f| f["name"] == "kind").unwrap();
    kind["type"]["symbols"]
        .as_array_mut()
        .unwrap()
        .insert(0, "EMAIL_FORWARD".into());
    fields.push(
        serde_json::json!({"name": "channel_hint", "type": ["null", "string"], "default": null}),
    );
    let writer = Schema::parse(&evolved).unwrap();

    let value = Value::Record(vec![
        ("event_id".into(), Value::String("e1".into())),
        ("user_id".into(), Value::String("u1".into())),
        ("campaign_id".into(), Value::String("c1".into())),
        ("kind".into(), Value::Enum(0, "EMAIL_FORWARD".into())),
        ("qualifier".into(), Value::Union(0, Box::new(Value::Null))),
        ("occurred_at".into(), Value::TimestampMillis(1_000)),
        (
            "user_time_zone".into(),
            Value::Union(0, Box::new(Value::Null)),
        ),
        ("properties".into(), Value::Map(Default::default())),
        (
            "channel_hint".into(),
            Value::Union(1, Box::new(Value::String("email".into()))),
        ),
    ]);
    let bytes = to_avro_datum(&writer, value);
    let read: Interaction = decode(&writer, &reader, &bytes);
    assert_eq!(read.kind, InteractionKind::Unknown);
    assert_eq!(read.event_id, "e1");
    assert_eq!(read.occurred_at, 1_000);
}

/// An older producer without the optional fields: the reader fills in their defaults.
#[test]
fn older_writer_without_optional_fields_gets_defaults() {
    let reader = Schema::parse_str(&schema_file("user_event.avsc")).unwrap();
    let writer = Schema::parse_str(
        r#"{"type": "record", "name": "UserEvent", "namespace": "campaign_connector", "fields": [
            {"name": "event_id", "type": "string"},
            {"name": "user_id", "type": "string"},
            {"name": "type", "type": {"type": "enum", "name": "UserEventType",
                "symbols": ["CUSTOM_EVENT", "PURCHASE", "SESSION_START", "REFUND", "UNKNOWN"], "default": "UNKNOWN"}},
            {"name": "occurred_at", "type": {"type": "long", "logicalType": "timestamp-millis"}}
        ]}"#,
    )
    .unwrap();
    let value = Value::Record(vec![
        ("event_id".into(), Value::String("e1".into())),
        ("user_id".into(), Value::String("u1".into())),
        ("type".into(), Value::Enum(3, "REFUND".into())),
        ("occurred_at".into(), Value::TimestampMillis(7)),
    ]);
    let bytes = to_avro_datum(&writer, value);
    let read: UserEvent = decode(&writer, &reader, &bytes);
    assert_eq!(read.event_type, UserEventType::Unknown);
    assert_eq!(read.name, None);
    assert_eq!(read.user_time_zone, None);
    assert!(read.properties.is_empty());
}
