//! The value encodings of SPEC §6 against bytes made from the schema files in `schemas/`,
//! evolved writer schemas in `tests/fixtures/writer_schemas/`, and a fake schema registry.

mod registry;

use std::collections::{BTreeMap, HashMap};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use apache_avro::types::Value;
use apache_avro::writer::datum::GenericDatumWriter;
use apache_avro::{AvroSchema, Schema};
use campaign_connector::codec::*;
use campaign_connector::model::*;
use registry::FakeRegistry;
use serde::de::DeserializeOwned;
use serde::Serialize;

// ---------------------------------------------------------------------------------------
// Helpers

fn root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

fn schemas_dir() -> PathBuf {
    root().join("schemas")
}

fn writer_schemas_dir() -> PathBuf {
    root().join("tests/fixtures/writer_schemas")
}

fn schema_text(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}

fn schema_file(name: &str) -> Schema {
    Schema::parse_str(&schema_text(&schemas_dir().join(name))).unwrap()
}

fn fixture_schema(name: &str) -> Schema {
    Schema::parse_str(&schema_text(&writer_schemas_dir().join(name))).unwrap()
}

/// The fingerprints of the schema files as the Java library computes them (Apache Avro
/// 1.12.1, `SchemaNormalization.parsingFingerprint64`, printed by
/// `tests/java/AvroInterop.java fingerprints`); `tests/java_interop.rs` compares the
/// connector with the Java library itself.
const JAVA_FINGERPRINTS: [(&str, i64); 14] = [
    ("schemas/interaction.avsc", 4549145532987997388),
    ("schemas/user_event.avsc", -3483402422219281623),
    ("schemas/campaign.avsc", 1672898075615485862),
    ("schemas/send_command.avsc", 4311927111472793438),
    ("schemas/decision.avsc", -1922514570068492612),
    ("schemas/task_state.avsc", -4279664699420134485),
    ("schemas/shadow_record.avsc", 5363274113205121446),
    ("schemas/previous/1/campaign.avsc", -1792033766350249236),
    ("schemas/previous/1/decision.avsc", 8371373099044245309),
    ("schemas/previous/1/task_state.avsc", 8041091228935747992),
    ("schemas/previous/2/campaign.avsc", -629878984196063117),
    ("schemas/previous/2/task_state.avsc", -8808291205308911657),
    (
        "tests/fixtures/writer_schemas/interaction_v2.avsc",
        3621888637557358703,
    ),
    (
        "tests/fixtures/writer_schemas/user_event_v0.avsc",
        2156809879412710539,
    ),
];

/// The fingerprints that earlier versions of the connector wrote into single-object
/// headers (apache-avro 0.22's form, which keeps logical types), as read from their records
/// (`tests/fixtures/interaction.single_object.hex` carries the first). Records with these
/// headers are in topics and must keep decoding.
const LEGACY_FINGERPRINTS: [(&str, i64); 14] = [
    ("schemas/interaction.avsc", -7405638181771140547),
    ("schemas/user_event.avsc", -969176825702567721),
    ("schemas/campaign.avsc", 567585160300428042),
    ("schemas/send_command.avsc", -6796112760334513819),
    ("schemas/decision.avsc", -1517533335403441859),
    ("schemas/task_state.avsc", 1139070324986719366),
    ("schemas/shadow_record.avsc", 2079775527327427317),
    ("schemas/previous/1/campaign.avsc", 1022710618303233087),
    ("schemas/previous/1/decision.avsc", -2326648409614330049),
    ("schemas/previous/1/task_state.avsc", -5092946886917005126),
    ("schemas/previous/2/campaign.avsc", 6927592255160084649),
    ("schemas/previous/2/task_state.avsc", -8395298182782523741),
    (
        "tests/fixtures/writer_schemas/interaction_v2.avsc",
        2864675739188946413,
    ),
    (
        "tests/fixtures/writer_schemas/user_event_v0.avsc",
        -7898729229164729905,
    ),
];

fn pinned(table: &[(&str, i64)], file: &str) -> u64 {
    table
        .iter()
        .find(|(f, _)| *f == file)
        .unwrap_or_else(|| panic!("no pinned fingerprint for {file}"))
        .1 as u64
}

/// The fingerprint of a schema file (`schemas/…` or `tests/fixtures/writer_schemas/…`).
fn fingerprint(file: &str) -> [u8; 8] {
    pinned(&JAVA_FINGERPRINTS, file).to_le_bytes()
}

/// The Avro datum of `value` written with `schema`, independently of the codec.
fn datum(schema: &Schema, value: Value) -> Vec<u8> {
    let writer = GenericDatumWriter::builder(schema).build().unwrap();
    let mut bytes = Vec::new();
    writer.write_value(&mut bytes, value).unwrap();
    bytes
}

/// The Avro datum of a record written with `schema`, independently of the codec.
fn record_datum<T: Serialize>(schema: &Schema, record: &T) -> Vec<u8> {
    let value = apache_avro::to_value(record)
        .unwrap()
        .resolve(schema)
        .unwrap();
    datum(schema, value)
}

/// A single-object value of the schema file `file` (see [`fingerprint`]).
fn single_object(file: &str, datum: &[u8]) -> Vec<u8> {
    let mut bytes = vec![0xC3, 0x01];
    bytes.extend_from_slice(&fingerprint(file));
    bytes.extend_from_slice(datum);
    bytes
}

fn confluent(id: u32, datum: &[u8]) -> Vec<u8> {
    let mut bytes = vec![0];
    bytes.extend_from_slice(&id.to_be_bytes());
    bytes.extend_from_slice(datum);
    bytes
}

fn codec_for<T>(settings: &EncodingSettings) -> Codec<T>
where
    T: AvroSchema + Serialize + DeserializeOwned,
{
    Codec::new("test-topic", settings).unwrap()
}

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
        properties: props(&[("source", "ios")]),
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
                kinds: vec![InteractionKind::PushReceived],
                qualifier: None,
            },
            delay: Delay::after_seconds(86_400),
            time_zone: None,
            exceptions: vec![ExceptionMatcher {
                exception_type: ExceptionType::Purchase,
                campaign_id: None,
                interaction_kinds: vec![],
                name: None,
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

fn decision() -> Decision {
    Decision {
        user_id: "u1".into(),
        follow_on_id: "cart-email".into(),
        follow_on_version: Some(3),
        outcome: DecisionOutcome::Ignored,
        reason: DecisionReason::NotReeligible,
        command_id: None,
        trigger_event_id: Some("e1".into()),
        cause_event_id: Some("e1".into()),
        due_at: None,
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

/// The newer producer's interaction (`interaction_v2.avsc`): kind `EMAIL_FORWARD`, which
/// this build does not know, and the extra field `channel_hint`.
fn newer_interaction_datum(writer: &Schema) -> Vec<u8> {
    let Schema::Record(record) = writer else {
        panic!("a record schema")
    };
    let kind = &record.fields[record.lookup["kind"]].schema;
    let Schema::Enum(kind) = kind else {
        panic!("kind is an enum")
    };
    let forward = kind
        .symbols
        .iter()
        .position(|s| s == "EMAIL_FORWARD")
        .unwrap();
    datum(
        writer,
        Value::Record(vec![
            ("event_id".into(), Value::String("e9".into())),
            ("user_id".into(), Value::String("u1".into())),
            ("campaign_id".into(), Value::String("c1".into())),
            (
                "kind".into(),
                Value::Enum(forward as u32, "EMAIL_FORWARD".into()),
            ),
            ("qualifier".into(), Value::Union(0, Box::new(Value::Null))),
            ("occurred_at".into(), Value::TimestampMillis(1_000)),
            (
                "user_time_zone".into(),
                Value::Union(1, Box::new(Value::String("Asia/Tokyo".into()))),
            ),
            (
                "properties".into(),
                Value::Map(HashMap::from([("k".into(), Value::String("v".into()))])),
            ),
            (
                "channel_hint".into(),
                Value::Union(1, Box::new(Value::String("email".into()))),
            ),
        ]),
    )
}

/// The older producer's user event (`user_event_v0.avsc`): no optional fields, and the
/// type `REFUND` this build does not know.
fn older_user_event_datum(writer: &Schema) -> Vec<u8> {
    datum(
        writer,
        Value::Record(vec![
            ("event_id".into(), Value::String("e3".into())),
            ("user_id".into(), Value::String("u2".into())),
            ("type".into(), Value::Enum(3, "REFUND".into())),
            ("occurred_at".into(), Value::TimestampMillis(7)),
        ]),
    )
}

fn assert_newer_interaction(read: &Interaction) {
    assert_eq!(
        read.kind,
        InteractionKind::Unknown,
        "a new kind reads as UNKNOWN"
    );
    assert_eq!(read.event_id, "e9");
    assert_eq!(read.occurred_at, 1_000);
    assert_eq!(read.user_time_zone.as_deref(), Some("Asia/Tokyo"));
    assert_eq!(read.properties, props(&[("k", "v")]));
}

fn assert_older_user_event(read: &UserEvent) {
    assert_eq!(read.event_type, UserEventType::Unknown);
    assert_eq!(read.event_id, "e3");
    assert_eq!(read.occurred_at, 7);
    assert_eq!(
        read.name, None,
        "default of a field the writer did not have"
    );
    assert_eq!(read.user_time_zone, None);
    assert!(read.properties.is_empty());
}

fn err_text<T: std::fmt::Debug>(result: Result<T, DecodeError>) -> (String, DecodeError) {
    let e = result.expect_err("decoding must fail");
    (e.to_string(), e)
}

// ---------------------------------------------------------------------------------------
// Configuration

#[test]
fn config_defaults_to_avro_and_validates_each_format() {
    let parse = |text: &str| -> EncodingConfig { serde_yaml_ng::from_str(text).unwrap() };

    let avro = parse("{}").validate().unwrap();
    assert_eq!(avro.encoding, Encoding::AvroSingleObject);
    assert_eq!(avro.registry_timeout, DEFAULT_REGISTRY_TIMEOUT);

    let avro = parse("format: avro\nschema_dirs: [schemas, old-schemas]")
        .validate()
        .unwrap();
    assert_eq!(
        avro.schema_dirs,
        vec![PathBuf::from("schemas"), PathBuf::from("old-schemas")]
    );

    let confluent =
        parse("format: confluent\nregistry_url: http://registry:8081/\nregistry_timeout_ms: 250")
            .validate()
            .unwrap();
    assert_eq!(
        confluent.encoding,
        Encoding::ConfluentAvro {
            registry_url: "http://registry:8081".into()
        }
    );
    assert_eq!(confluent.registry_timeout.as_millis(), 250);
    assert_eq!(confluent.encoding.format(), Format::Confluent);

    assert_eq!(
        parse("format: json").validate().unwrap().encoding,
        Encoding::Json
    );
}

#[test]
fn config_errors_say_what_is_wrong() {
    let check = |text: &str, expected: &str| {
        let config: EncodingConfig = serde_yaml_ng::from_str(text).unwrap();
        let e = config.validate().unwrap_err();
        assert!(
            e.to_string().contains(expected),
            "{text:?}: {e} should contain {expected:?}"
        );
    };
    check("format: confluent", "format confluent needs registry_url");
    check("format: confluent\nregistry_url: ''", "needs registry_url");
    check(
        "format: confluent\nregistry_url: registry:8081",
        "is not an http:// or https:// URL",
    );
    check(
        "format: avro\nregistry_url: http://r:8081",
        "registry_url is only used with format confluent, not avro",
    );
    check(
        "format: json\nschema_dirs: [schemas]",
        "schema_dirs is only used with format avro",
    );
    check(
        "format: confluent\nregistry_url: http://r\nregistry_timeout_ms: 0",
        "greater than 0",
    );
    check(
        "format: json\nregistry_timeout_ms: 10",
        "registry_timeout_ms is only used with format confluent",
    );

    let unknown = serde_yaml_ng::from_str::<EncodingConfig>("format: protobuf").unwrap_err();
    assert!(
        unknown.to_string().contains("unknown variant `protobuf`"),
        "{unknown}"
    );
    let typo =
        serde_yaml_ng::from_str::<EncodingConfig>("format: avro\nschema_dir: [x]").unwrap_err();
    assert!(
        typo.to_string().contains("unknown field `schema_dir`"),
        "{typo}"
    );
}

#[test]
fn codec_setup_names_the_bad_schema_directory_or_file() {
    let missing = Codec::<Interaction>::new(
        "t",
        &EncodingSettings::avro().with_schema_dir(root().join("no-such-dir")),
    )
    .err()
    .unwrap();
    assert!(
        missing.to_string().starts_with("schema directory ")
            && missing.to_string().contains("no-such-dir"),
        "{missing}"
    );

    let dir = std::env::temp_dir().join(format!("codec-bad-schema-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("broken.avsc"),
        r#"{"type": "record", "name": "X"}"#,
    )
    .unwrap();
    std::fs::write(dir.join("notes.txt"), "not a schema, ignored").unwrap();
    let broken = Codec::<Interaction>::new("t", &EncodingSettings::avro().with_schema_dir(&dir))
        .err()
        .unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(
        broken.to_string().starts_with("schema file ")
            && broken.to_string().contains("broken.avsc"),
        "{broken}"
    );
}

#[test]
fn codecs_are_shareable_between_threads() {
    fn shareable<T: Send + Sync>() {}
    shareable::<Codec<Interaction>>();
    shareable::<Codec<TaskStateRecord>>();
    shareable::<DecodeError>();
    shareable::<EncodeError>();
}

// ---------------------------------------------------------------------------------------
// Avro single-object encoding

#[test]
fn single_object_bytes_are_header_fingerprint_and_the_schema_files_datum() {
    let schema = schema_file("interaction.avsc");
    let codec = codec_for::<Interaction>(&EncodingSettings::avro());
    let bytes = codec.encode(&interaction()).unwrap();

    assert_eq!(&bytes[..2], &[0xC3, 0x01]);
    assert_eq!(
        &bytes[2..10],
        &fingerprint("schemas/interaction.avsc"),
        "the Java library's CRC-64-AVRO, little-endian"
    );
    assert_eq!(
        codec.schema_fingerprint(),
        u64::from_le_bytes(fingerprint("schemas/interaction.avsc"))
    );
    assert_eq!(
        &bytes[10..],
        &record_datum(&schema, &interaction())[..],
        "the datum is what the schema file writes"
    );
    assert_eq!(
        bytes,
        single_object(
            "schemas/interaction.avsc",
            &record_datum(&schema, &interaction())
        )
    );
}

#[test]
fn single_object_fingerprints_are_the_java_librarys_for_every_schema_file() {
    for (file, java) in JAVA_FINGERPRINTS {
        let identity = SchemaIdentity::of_file(&root().join(file)).unwrap();
        assert_eq!(identity.fingerprint as i64, java, "{file}");
        assert_eq!(
            identity.single_object_header()[2..],
            (java as u64).to_le_bytes()
        );
        assert_eq!(
            identity.legacy_fingerprint,
            pinned(&LEGACY_FINGERPRINTS, file),
            "legacy fingerprint of {file}"
        );
    }
    // This build's own schemas, as the codecs write them.
    fn own<T: AvroSchema + Serialize + DeserializeOwned>(file: &str) {
        let codec = codec_for::<T>(&EncodingSettings::avro());
        assert_eq!(
            codec.schema_fingerprint(),
            pinned(&JAVA_FINGERPRINTS, file),
            "{file}"
        );
        let identity = SchemaIdentity::of::<T>().unwrap();
        assert_eq!(identity.fingerprint, codec.schema_fingerprint());
        assert_eq!(
            identity.legacy_fingerprint,
            pinned(&LEGACY_FINGERPRINTS, file),
            "{file}"
        );
    }
    own::<Interaction>("schemas/interaction.avsc");
    own::<UserEvent>("schemas/user_event.avsc");
    own::<Campaign>("schemas/campaign.avsc");
    own::<SendCommand>("schemas/send_command.avsc");
    own::<Decision>("schemas/decision.avsc");
    own::<TaskStateRecord>("schemas/task_state.avsc");
}

#[test]
fn single_object_fixture_bytes_from_the_schema_files_decode() {
    fn check<T>(file: &str, record: T)
    where
        T: AvroSchema + Serialize + DeserializeOwned + OwnDatum + PartialEq + std::fmt::Debug,
    {
        let schema = schema_file(file);
        let bytes = single_object(&format!("schemas/{file}"), &record_datum(&schema, &record));
        let codec = codec_for::<T>(&EncodingSettings::avro());
        assert_eq!(codec.decode(&bytes).unwrap(), record, "{file}");
        assert_eq!(codec.encode(&record).unwrap(), bytes, "{file}");
        assert_eq!(codec.legacy_decodes(), 0);
    }
    check("interaction.avsc", interaction());
    check("user_event.avsc", user_event());
    check("campaign.avsc", campaign());
    check(
        "campaign.avsc",
        Campaign {
            backfill_since: Some(1_699_000_000_000),
            ..campaign()
        },
    );
    check("send_command.avsc", send_command());
    check("decision.avsc", decision());
    check("task_state.avsc", task_state());
}

fn hex_fixture(name: &str) -> Vec<u8> {
    let hex = std::fs::read_to_string(root().join("tests/fixtures").join(name)).unwrap();
    hex.split_whitespace()
        .map(|b| u8::from_str_radix(b, 16).unwrap())
        .collect()
}

#[test]
fn single_object_bytes_are_the_java_encoders() {
    // Written by Apache Avro 1.12.1's BinaryMessageEncoder from schemas/interaction.avsc
    // (`tests/java/AvroInterop.java encode`); tests/java_interop.rs repeats this live.
    let bytes = hex_fixture("interaction.single_object.java.hex");
    let codec = codec_for::<Interaction>(&EncodingSettings::avro());
    assert_eq!(codec.encode(&interaction()).unwrap(), bytes);
    assert_eq!(codec.decode(&bytes).unwrap(), interaction());
}

/// `value` without the fields named `names`, at any depth: a record as a previous schema
/// (before those fields) holds it.
fn without_fields(value: Value, names: &[&str]) -> Value {
    match value {
        Value::Record(fields) => Value::Record(
            fields
                .into_iter()
                .filter(|(name, _)| !names.contains(&name.as_str()))
                .map(|(name, v)| (name, without_fields(v, names)))
                .collect(),
        ),
        Value::Union(i, v) => Value::Union(i, Box::new(without_fields(*v, names))),
        Value::Array(items) => Value::Array(
            items
                .into_iter()
                .map(|v| without_fields(v, names))
                .collect(),
        ),
        other => other,
    }
}

/// What the previous versions of this build's schemas wrote (1: before
/// `Campaign.backfill_since` and the decision reason `backfill`; 2: before `Campaign.mode`)
/// is in the topics: it decodes under the specification fingerprint and the legacy one of
/// those versions, the new fields read as their defaults (a campaign of version 2 is `LIVE`).
#[test]
fn records_of_the_previous_schema_versions_decode_by_either_fingerprint() {
    fn previous<T>(file: &str, record: T)
    where
        T: AvroSchema + Serialize + DeserializeOwned + OwnDatum + PartialEq + std::fmt::Debug,
    {
        let writer = Schema::parse_str(&schema_text(&root().join(file))).unwrap();
        let newer: &[&str] = if file.contains("/1/") {
            &["backfill_since", "mode"]
        } else {
            &["mode"]
        };
        let value = without_fields(apache_avro::to_value(&record).unwrap(), newer);
        let datum = datum(&writer, value.resolve(&writer).unwrap());
        let codec = codec_for::<T>(&EncodingSettings::avro());
        for (table, legacy) in [(&JAVA_FINGERPRINTS, 0), (&LEGACY_FINGERPRINTS, 1)] {
            let mut bytes = vec![0xC3, 0x01];
            bytes.extend_from_slice(&pinned(table, file).to_le_bytes());
            bytes.extend_from_slice(&datum);
            assert_eq!(codec.decode(&bytes).unwrap(), record, "{file}");
            assert_eq!(codec.legacy_decodes(), legacy, "{file}");
        }
        // Never written: this build writes its own schema.
        assert_ne!(
            codec.encode(&record).unwrap()[2..10],
            pinned(&JAVA_FINGERPRINTS, file).to_le_bytes()
        );
    }
    previous("schemas/previous/1/campaign.avsc", campaign());
    previous("schemas/previous/1/decision.avsc", decision());
    previous("schemas/previous/1/task_state.avsc", task_state());
    let mut backfilled = campaign();
    backfilled.backfill_since = Some(1_699_000_000_000);
    previous("schemas/previous/2/campaign.avsc", backfilled);
    previous("schemas/previous/2/task_state.avsc", task_state());
}

/// A reader of the schema before `Campaign.mode` reads a shadow follow-on's record — the
/// mode skipped, so such a reader would take it for a live one: why every instance must be
/// upgraded before the first `campaigns publish --shadow` (docs/encodings.md). And a
/// `SHADOW` record round-trips through this build's codec.
#[test]
fn readers_of_the_schema_before_mode_skip_it_and_this_build_keeps_it() {
    let mut c = campaign();
    c.campaign_id = "cart-email@shadow".into();
    c.mode = CampaignMode::Shadow;
    let writer = schema_file("campaign.avsc");
    let old = Schema::parse_str(&schema_text(
        &root().join("schemas/previous/2/campaign.avsc"),
    ))
    .unwrap();
    let bytes = record_datum(&writer, &c);
    let read = apache_avro::reader::datum::GenericDatumReader::builder(&writer)
        .reader_schema(&old)
        .build()
        .unwrap()
        .read_value(&mut &bytes[..])
        .unwrap();
    let Value::Record(fields) = read else {
        panic!("a record")
    };
    assert!(fields.iter().all(|(n, _)| n != "mode"));
    let codec = codec_for::<Campaign>(&EncodingSettings::avro());
    assert_eq!(codec.decode(&codec.encode(&c).unwrap()).unwrap(), c);
    // The mode has no enum default: a symbol this build does not know fails to resolve
    // rather than being read as LIVE.
    let text = schema_text(&root().join("schemas/campaign.avsc"));
    let newer = text.replace("\"SHADOW\"", "\"SHADOW\", \"CANARY\"");
    let newer = Schema::parse_str(&newer).unwrap();
    let mut value = apache_avro::to_value(&c).unwrap().resolve(&newer).unwrap();
    if let Value::Record(fields) = &mut value {
        let mode = fields.iter_mut().find(|(n, _)| n == "mode").unwrap();
        mode.1 = Value::Enum(2, "CANARY".into());
    }
    let bytes = datum(&newer, value);
    let read = apache_avro::reader::datum::GenericDatumReader::builder(&newer)
        .reader_schema(&writer)
        .build()
        .unwrap()
        .read_value(&mut &bytes[..]);
    assert!(read.is_err(), "{read:?}");
}

/// The other way round: a reader that still has the previous decision schema reads the
/// new reason `backfill` as the enum's default, `unknown`, and a backfill start it does not
/// know is skipped by a reader of the previous campaign schema.
#[test]
fn readers_of_the_previous_schemas_read_backfill_records() {
    let mut d = decision();
    d.outcome = DecisionOutcome::Scheduled;
    d.reason = DecisionReason::Backfill;
    let writer = schema_file("decision.avsc");
    let old = Schema::parse_str(&schema_text(
        &root().join("schemas/previous/1/decision.avsc"),
    ))
    .unwrap();
    let bytes = record_datum(&writer, &d);
    let read = apache_avro::reader::datum::GenericDatumReader::builder(&writer)
        .reader_schema(&old)
        .build()
        .unwrap()
        .read_value(&mut &bytes[..])
        .unwrap();
    let Value::Record(fields) = read else {
        panic!("a record")
    };
    let reason = fields.iter().find(|(n, _)| n == "reason").unwrap();
    assert!(
        matches!(&reason.1, Value::Enum(_, s) if s == "unknown"),
        "{reason:?}"
    );

    let mut c = campaign();
    c.backfill_since = Some(1_699_000_000_000);
    let writer = schema_file("campaign.avsc");
    let old = Schema::parse_str(&schema_text(
        &root().join("schemas/previous/1/campaign.avsc"),
    ))
    .unwrap();
    let bytes = record_datum(&writer, &c);
    let read = apache_avro::reader::datum::GenericDatumReader::builder(&writer)
        .reader_schema(&old)
        .build()
        .unwrap()
        .read_value(&mut &bytes[..])
        .unwrap();
    let Value::Record(fields) = read else {
        panic!("a record")
    };
    assert!(fields.iter().all(|(n, _)| n != "backfill_since"));
    let version = fields.iter().find(|(n, _)| n == "version").unwrap();
    assert_eq!(version.1, Value::Long(3));
}

#[test]
fn single_object_records_of_earlier_versions_still_decode_by_their_legacy_fingerprint() {
    // Written by this codec before it computed the specification's fingerprint; records
    // like it are in topics (compacted ones keep them indefinitely).
    let old = hex_fixture("interaction.single_object.hex");
    assert_eq!(
        old[2..10],
        pinned(&LEGACY_FINGERPRINTS, "schemas/interaction.avsc").to_le_bytes()
    );
    let codec = codec_for::<Interaction>(&EncodingSettings::avro());
    assert_eq!(codec.decode(&old).unwrap(), interaction());
    assert_eq!(codec.legacy_decodes(), 1, "counted");
    let new = codec.encode(&interaction()).unwrap();
    assert_ne!(new[2..10], old[2..10], "never written any more");
    assert_eq!(new[10..], old[10..], "the same datum");

    // Every record type, under the legacy fingerprint of this build's schema.
    fn legacy<T>(file: &str, record: T)
    where
        T: AvroSchema + Serialize + DeserializeOwned + PartialEq + std::fmt::Debug,
    {
        let mut bytes = vec![0xC3, 0x01];
        bytes.extend_from_slice(&pinned(&LEGACY_FINGERPRINTS, file).to_le_bytes());
        bytes.extend_from_slice(&record_datum(&T::get_schema(), &record));
        let codec = codec_for::<T>(&EncodingSettings::avro());
        assert_eq!(codec.decode(&bytes).unwrap(), record, "{file}");
        assert_eq!(codec.legacy_decodes(), 1, "{file}");
    }
    legacy("schemas/user_event.avsc", user_event());
    legacy("schemas/campaign.avsc", campaign());
    legacy("schemas/send_command.avsc", send_command());
    legacy("schemas/decision.avsc", decision());
    legacy("schemas/task_state.avsc", task_state());

    // A writer schema from schema_dirs under its legacy fingerprint: resolved like the
    // same schema under its specification fingerprint.
    let file = "tests/fixtures/writer_schemas/interaction_v2.avsc";
    let writer = fixture_schema("interaction_v2.avsc");
    let mut bytes = vec![0xC3, 0x01];
    bytes.extend_from_slice(&pinned(&LEGACY_FINGERPRINTS, file).to_le_bytes());
    bytes.extend_from_slice(&newer_interaction_datum(&writer));
    let codec =
        codec_for::<Interaction>(&EncodingSettings::avro().with_schema_dir(writer_schemas_dir()));
    assert_newer_interaction(&codec.decode(&bytes).unwrap());

    // A datum error names the legacy fingerprint and the schema it stands for.
    let (text, _) =
        err_text(codec_for::<Interaction>(&EncodingSettings::avro()).decode(&old[..20]));
    assert!(
        text.starts_with(&format!(
            "invalid Avro datum for writer schema 0x{:016x} (campaign_connector.Interaction, the legacy fingerprint of 0x{:016x})",
            pinned(&LEGACY_FINGERPRINTS, "schemas/interaction.avsc"),
            pinned(&JAVA_FINGERPRINTS, "schemas/interaction.avsc"),
        )),
        "{text}"
    );
}

#[test]
fn single_object_newer_writer_with_new_kind_and_field_decodes_as_unknown() {
    let writer = fixture_schema("interaction_v2.avsc");
    let bytes = single_object(
        "tests/fixtures/writer_schemas/interaction_v2.avsc",
        &newer_interaction_datum(&writer),
    );
    let codec =
        codec_for::<Interaction>(&EncodingSettings::avro().with_schema_dir(writer_schemas_dir()));
    let full = codec.decode(&bytes).unwrap();
    assert_newer_interaction(&full);
    assert_eq!(codec.legacy_decodes(), 0);

    // The runtime's edge reads it the same, but for the `properties` map, which it checks
    // and does not keep.
    let at_edge: Interaction = codec
        .decode_as::<campaign_connector::runtime::input::InteractionAtEdge>(&bytes)
        .unwrap()
        .into();
    assert!(!full.properties.is_empty());
    assert_eq!(
        at_edge,
        Interaction {
            properties: Default::default(),
            ..full
        }
    );
}

#[test]
fn single_object_older_writer_without_optional_fields_gets_defaults() {
    let writer = fixture_schema("user_event_v0.avsc");
    let bytes = single_object(
        "tests/fixtures/writer_schemas/user_event_v0.avsc",
        &older_user_event_datum(&writer),
    );
    let codec = codec_for::<UserEvent>(
        &EncodingSettings::avro()
            .with_schema_dir(schemas_dir())
            .with_schema_dir(writer_schemas_dir()),
    );
    assert_older_user_event(&codec.decode(&bytes).unwrap());
    // Records of this build's own schema still decode next to the old ones.
    assert_eq!(
        codec.decode(&codec.encode(&user_event()).unwrap()).unwrap(),
        user_event()
    );
}

#[test]
fn single_object_unknown_fingerprint_is_named_in_hex() {
    let file = "tests/fixtures/writer_schemas/interaction_v2.avsc";
    let writer = fixture_schema("interaction_v2.avsc");
    let bytes = single_object(file, &newer_interaction_datum(&writer));
    // Without the fixture directory the newer writer schema is not known.
    let codec = codec_for::<Interaction>(&EncodingSettings::avro().with_schema_dir(schemas_dir()));
    let (text, e) = err_text(codec.decode(&bytes));
    let fp = u64::from_le_bytes(fingerprint(file));
    assert_eq!(e, DecodeError::UnknownFingerprint(fp));
    assert!(
        text.starts_with(&format!(
            "unknown writer schema fingerprint 0x{fp:016x} ({} as a signed 64-bit number, as Java prints it)",
            fp as i64
        )),
        "{text}"
    );
    assert_eq!(e.class(), ErrorClass::BadInput);
    assert!(!e.is_retriable());
}

#[test]
fn single_object_record_of_another_type_is_a_resolution_error() {
    let schema = schema_file("campaign.avsc");
    let bytes = single_object("schemas/campaign.avsc", &record_datum(&schema, &campaign()));
    let codec = codec_for::<Interaction>(&EncodingSettings::avro().with_schema_dir(schemas_dir()));
    let (text, e) = err_text(codec.decode(&bytes));
    assert!(matches!(e, DecodeError::Resolution { .. }), "{e:?}");
    assert!(
        text.starts_with("writer schema 0x")
            && text.contains(
                "(campaign_connector.Campaign) cannot be read as campaign_connector.Interaction"
            ),
        "{text}"
    );
}

#[test]
fn single_object_bad_bytes_produce_precise_errors() {
    let codec = codec_for::<Interaction>(&EncodingSettings::avro());
    let good = codec.encode(&interaction()).unwrap();

    let (text, e) = err_text(codec.decode(&[]));
    assert_eq!(e, DecodeError::Empty);
    assert!(text.starts_with("empty value"), "{text}");

    let (text, _) = err_text(codec.decode(&[0, 0, 0, 0, 0, 1, 2, 3, 4, 5, 6]));
    assert_eq!(
        text,
        "not Avro single-object encoding: expected header C3 01, got 00 00"
    );
    let (text, _) = err_text(codec.decode(br#"{"event_id": "e1"}"#));
    assert_eq!(
        text,
        "not Avro single-object encoding: expected header C3 01, got 7B 22"
    );

    let (text, _) = err_text(codec.decode(&good[..6]));
    assert_eq!(
        text,
        "truncated Avro single-object value: 6 bytes, but its header alone is 10 bytes"
    );

    for cut in [11, good.len() / 2, good.len() - 1] {
        let (text, e) = err_text(codec.decode(&good[..cut]));
        assert!(matches!(e, DecodeError::Datum { .. }), "{e:?}");
        assert!(
            text.starts_with(&format!(
                "invalid Avro datum for writer schema 0x{:016x} (campaign_connector.Interaction)",
                codec.schema_fingerprint()
            )),
            "cut at {cut}: {text}"
        );
        assert!(!e.is_retriable());
    }
    let (text, _) = err_text(codec.decode(&good[..good.len() - 1]));
    assert!(text.contains("truncated"), "{text}");

    let mut trailing = good.clone();
    trailing.extend_from_slice(&[1, 2, 3]);
    let (text, e) = err_text(codec.decode(&trailing));
    assert!(
        matches!(e, DecodeError::TrailingBytes { extra: 3, .. }),
        "{e:?}"
    );
    assert!(
        text.starts_with("3 bytes left after the Avro datum"),
        "{text}"
    );

    // A string length pointing far past the end of the value.
    let mut bad_length = good[..10].to_vec();
    bad_length.extend_from_slice(&[0xFE, 0xFF, 0xFF, 0x0F]);
    let (_, e) = err_text(codec.decode(&bad_length));
    assert!(matches!(e, DecodeError::Datum { .. }), "{e:?}");
}

// ---------------------------------------------------------------------------------------
// Confluent wire format against a fake schema registry

#[test]
fn confluent_round_trip_registers_once_and_fetches_each_id_once() {
    let registry = FakeRegistry::start();
    registry.add(r#""string""#); // id 1 is somebody else's schema
    let producer =
        Codec::<Interaction>::new("campaign-interactions", &registry.settings()).unwrap();

    let records: Vec<Interaction> = (0..3)
        .map(|i| Interaction {
            event_id: format!("e{i}"),
            ..interaction()
        })
        .collect();
    let encoded: Vec<Vec<u8>> = records
        .iter()
        .map(|r| producer.encode(r).unwrap())
        .collect();
    assert_eq!(
        registry.count("POST", "/subjects/campaign-interactions-value/versions"),
        1,
        "registered once, under <topic>-value"
    );
    let schema = schema_file("interaction.avsc");
    for (bytes, record) in encoded.iter().zip(&records) {
        assert_eq!(bytes[0], 0, "magic byte");
        assert_eq!(&bytes[1..5], &2u32.to_be_bytes(), "schema id, big-endian");
        assert_eq!(&bytes[5..], &record_datum(&schema, record)[..]);
    }

    // The producer knows its own schema: reading its records back needs no fetch.
    assert_eq!(producer.decode(&encoded[0]).unwrap(), records[0]);
    assert_eq!(registry.count("GET", "/schemas/ids/"), 0);

    // A fresh consumer fetches id 2 once, however many records carry it.
    let consumer =
        Codec::<Interaction>::new("campaign-interactions", &registry.settings()).unwrap();
    for _ in 0..3 {
        for (bytes, record) in encoded.iter().zip(&records) {
            assert_eq!(&consumer.decode(bytes).unwrap(), record);
        }
    }
    assert_eq!(registry.count("GET", "/schemas/ids/2"), 1);
    assert_eq!(registry.count("GET", "/schemas/ids/"), 1);
}

/// What `campaign-connector schemas` shows of a confluent topic: the versions under the
/// subject the codec registers with, matched with this build's schema by canonical form.
#[test]
fn confluent_subject_lookup_finds_the_ids_of_this_builds_schema_by_canonical_form() {
    let registry = FakeRegistry::start();
    let topic = "campaign-interactions";
    let own = SchemaIdentity::of::<Interaction>().unwrap();
    let bytes = Codec::<Interaction>::new(topic, &registry.settings())
        .unwrap()
        .encode(&interaction())
        .unwrap();
    let own_id = u32::from_be_bytes(bytes[1..5].try_into().unwrap());
    assert_eq!(confluent_subject(topic), "campaign-interactions-value");
    // The schema file (with its docs): another text and id, the same canonical form.
    let (file_id, _) = registry.register(
        "campaign-interactions-value",
        &schema_text(&schemas_dir().join("interaction.avsc")),
    );
    let newer = schema_text(&writer_schemas_dir().join("interaction_v2.avsc"));
    let (newer_id, _) = registry.register("campaign-interactions-value", &newer);
    assert!(file_id != own_id);

    let report = lookup_subject(topic, &registry.settings(), &own)
        .unwrap()
        .expect("a confluent topic has a subject");
    assert_eq!(report.subject, "campaign-interactions-value");
    assert_eq!(report.registry_url, registry.url);
    let newer_fp = canonical::Fingerprinted::of_text(&newer)
        .unwrap()
        .fingerprint;
    assert_eq!(
        report.versions.as_deref().unwrap(),
        [
            RegisteredVersion {
                version: 1,
                id: own_id,
                fingerprint: Some(own.fingerprint),
                unusable: None,
                matches: true,
            },
            RegisteredVersion {
                version: 2,
                id: file_id,
                fingerprint: Some(own.fingerprint),
                unusable: None,
                matches: true,
            },
            RegisteredVersion {
                version: 3,
                id: newer_id,
                fingerprint: Some(newer_fp),
                unusable: None,
                matches: false,
            },
        ]
    );
    assert_eq!(report.matching().count(), 2);

    // Another topic has no subject; an avro topic has no registry to ask.
    let missing = lookup_subject("t", &registry.settings(), &own)
        .unwrap()
        .unwrap();
    assert_eq!(
        (missing.subject.as_str(), missing.versions),
        ("t-value", None)
    );
    let requests = registry.requests().len();
    assert_eq!(
        lookup_subject(topic, &EncodingSettings::avro(), &own).unwrap(),
        None
    );
    assert_eq!(registry.requests().len(), requests);

    // A registry that does not answer: the error names the subject and the registry.
    registry.fail_with(Some(503));
    let e = lookup_subject(topic, &registry.settings(), &own).unwrap_err();
    assert!(
        e.to_string().starts_with(&format!(
            "looking up subject campaign-interactions-value at the schema registry {}: {}/subjects/campaign-interactions-value/versions: HTTP 503",
            registry.url, registry.url
        )),
        "{e}"
    );
}

#[test]
fn confluent_fetches_an_id_once_under_concurrent_decodes() {
    let registry = FakeRegistry::start();
    let id = registry.add(&schema_text(&schemas_dir().join("interaction.avsc")));
    let bytes = confluent(
        id,
        &record_datum(&schema_file("interaction.avsc"), &interaction()),
    );
    let codec = Arc::new(Codec::<Interaction>::new("t", &registry.settings()).unwrap());
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let (codec, bytes) = (codec.clone(), bytes.clone());
            std::thread::spawn(move || codec.decode(&bytes).unwrap())
        })
        .collect();
    for t in threads {
        assert_eq!(t.join().unwrap(), interaction());
    }
    assert_eq!(registry.count("GET", "/schemas/ids/"), 1);
}

#[test]
fn confluent_newer_writer_with_new_kind_and_field_decodes_as_unknown() {
    let registry = FakeRegistry::start();
    let text = schema_text(&writer_schemas_dir().join("interaction_v2.avsc"));
    let id = registry.add(&text);
    let writer = Schema::parse_str(&text).unwrap();
    let bytes = confluent(id, &newer_interaction_datum(&writer));
    let codec = Codec::<Interaction>::new("t", &registry.settings()).unwrap();
    assert_newer_interaction(&codec.decode(&bytes).unwrap());
}

#[test]
fn confluent_older_writer_without_optional_fields_gets_defaults() {
    let registry = FakeRegistry::start();
    let text = schema_text(&writer_schemas_dir().join("user_event_v0.avsc"));
    let id = registry.add(&text);
    let writer = Schema::parse_str(&text).unwrap();
    let bytes = confluent(id, &older_user_event_datum(&writer));
    let codec = Codec::<UserEvent>::new("t", &registry.settings()).unwrap();
    assert_older_user_event(&codec.decode(&bytes).unwrap());
}

#[test]
fn confluent_unknown_id_is_bad_input() {
    let registry = FakeRegistry::start();
    let codec = Codec::<Interaction>::new("t", &registry.settings()).unwrap();
    let bytes = confluent(
        7,
        &record_datum(&schema_file("interaction.avsc"), &interaction()),
    );
    let (text, e) = err_text(codec.decode(&bytes));
    assert_eq!(text, "schema registry: id 7 not found");
    assert_eq!(e, DecodeError::UnknownSchemaId(7));
    assert!(
        !e.is_retriable(),
        "dead-letter: no retry makes the id exist"
    );
}

#[test]
fn confluent_registry_schema_that_is_not_avro_is_bad_input() {
    let registry = FakeRegistry::start();
    let id = registry.add("{not a schema");
    let codec = Codec::<Interaction>::new("t", &registry.settings()).unwrap();
    let (text, e) = err_text(codec.decode(&confluent(id, &[2, 0])));
    assert!(
        text.starts_with("schema registry: id 1 is not a usable Avro schema: "),
        "{text}"
    );
    assert!(!e.is_retriable());
}

#[test]
fn confluent_bad_bytes_produce_precise_errors() {
    let registry = FakeRegistry::start();
    let codec = Codec::<Interaction>::new("t", &registry.settings()).unwrap();
    let single_object = codec_for::<Interaction>(&EncodingSettings::avro())
        .encode(&interaction())
        .unwrap();
    let (text, _) = err_text(codec.decode(&single_object));
    assert_eq!(
        text,
        "not Confluent wire format: expected magic byte 00, got C3"
    );
    let (text, _) = err_text(codec.decode(&[0, 0, 0]));
    assert_eq!(
        text,
        "truncated Confluent value: 3 bytes, but its header alone is 5 bytes"
    );
    let (_, e) = err_text(codec.decode(&[]));
    assert_eq!(e, DecodeError::Empty);

    let good = codec.encode(&interaction()).unwrap();
    let (text, e) = err_text(codec.decode(&good[..good.len() - 2]));
    assert!(
        text.starts_with(
            "invalid Avro datum for writer schema id 1 (campaign_connector.Interaction)"
        ),
        "{text}"
    );
    assert!(!e.is_retriable());
    assert_eq!(
        registry.count("GET", "/"),
        0,
        "header errors never reach the registry"
    );
}

#[test]
fn confluent_registry_unavailable_is_retriable() {
    // A port nobody listens on.
    let url = {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        format!("http://{}", listener.local_addr().unwrap())
    };
    let codec = Codec::<Interaction>::new("t", &EncodingSettings::confluent(url.clone())).unwrap();
    let (text, e) = err_text(codec.decode(&confluent(3, &[0])));
    assert!(e.is_retriable(), "{e:?}");
    assert!(
        text.starts_with("schema registry unavailable, retry later: ") && text.contains(&url),
        "{text}"
    );
    let e = codec.encode(&interaction()).unwrap_err();
    assert!(e.is_retriable(), "{e:?}");

    // A registry that answers 5xx: retry too, and the failure is not cached.
    let registry = FakeRegistry::start();
    let id = registry.add(&schema_text(&schemas_dir().join("interaction.avsc")));
    let bytes = confluent(
        id,
        &record_datum(&schema_file("interaction.avsc"), &interaction()),
    );
    let codec = Codec::<Interaction>::new("t", &registry.settings()).unwrap();
    registry.fail_with(Some(500));
    let (text, e) = err_text(codec.decode(&bytes));
    assert!(e.is_retriable(), "{e:?}");
    assert!(
        text.contains("HTTP 500: Error in the backend data store (error code 50001)"),
        "{text}"
    );
    let e = codec.encode(&interaction()).unwrap_err();
    assert!(matches!(e, EncodeError::RegistryUnavailable(_)), "{e:?}");
    registry.fail_with(None);
    assert_eq!(codec.decode(&bytes).unwrap(), interaction());
    assert!(codec.encode(&interaction()).is_ok());
}

#[test]
fn confluent_refused_registration_is_not_retriable() {
    let registry = FakeRegistry::start();
    let codec = Codec::<SendCommand>::new("incompatible", &registry.settings()).unwrap();
    let e = codec.encode(&send_command()).unwrap_err();
    assert!(!e.is_retriable());
    let text = e.to_string();
    assert!(
        text.starts_with(
            "schema registry refused to register campaign_connector.SendCommand under subject incompatible-value"
        ) && text.contains("HTTP 409"),
        "{text}"
    );
}

// ---------------------------------------------------------------------------------------
// JSON

#[test]
fn json_writes_field_names_and_epoch_millis() {
    let codec = codec_for::<SendCommand>(&EncodingSettings::json());
    let bytes = codec.encode(&send_command()).unwrap();
    let value: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    assert_eq!(value["due_at"], 1_764_086_400_123i64);
    assert_eq!(value["emitted_at"], 1_764_086_400_500i64);
    assert_eq!(value["trigger"]["occurred_at"], 1_764_000_000_123i64);
    assert_eq!(value["trigger"]["kind"], "PUSH_RECEIVED");
    assert_eq!(value["channel"], "EMAIL");
    assert_eq!(codec.decode(&bytes).unwrap(), send_command());

    let codec = codec_for::<UserEvent>(&EncodingSettings::json());
    let value: serde_json::Value =
        serde_json::from_slice(&codec.encode(&user_event()).unwrap()).unwrap();
    assert_eq!(
        value["type"], "PURCHASE",
        "the schema's field name, not the Rust one"
    );
}

#[test]
fn json_round_trips_every_record() {
    fn check<T>(record: T)
    where
        T: AvroSchema + Serialize + DeserializeOwned + OwnDatum + PartialEq + std::fmt::Debug,
    {
        let codec = codec_for::<T>(&EncodingSettings::json());
        assert_eq!(
            codec.decode(&codec.encode(&record).unwrap()).unwrap(),
            record
        );
    }
    check(interaction());
    check(user_event());
    check(campaign());
    check(send_command());
    check(decision());
    check(task_state());
}

#[test]
fn json_accepts_rfc3339_and_epoch_timestamps() {
    let codec = codec_for::<Interaction>(&EncodingSettings::json());
    let line = |occurred_at: &str| {
        format!(
            r#"{{"event_id": "e1", "user_id": "u1", "campaign_id": "cart-push", "kind": "PUSH_RECEIVED",
                "qualifier": "btn-1", "occurred_at": {occurred_at}, "user_time_zone": "Europe/Berlin",
                "properties": {{"source": "ios"}}}}"#
        )
    };
    for occurred_at in [
        "1764000000123",
        r#""2025-11-24T16:00:00.123Z""#,
        r#""2025-11-24T17:00:00.123+01:00""#,
    ] {
        assert_eq!(
            codec.decode(line(occurred_at).as_bytes()).unwrap(),
            interaction(),
            "{occurred_at}"
        );
    }

    // Every timestamp field, nested and optional ones included.
    let codec = codec_for::<SendCommand>(&EncodingSettings::json());
    let json = r#"{"command_id": "cmd-1", "user_id": "u1", "campaign_id": "cart-email",
        "campaign_version": 3, "channel": "EMAIL", "template_id": "tpl-1",
        "payload": {"discount": "10"},
        "trigger": {"campaign_id": "cart-push", "kind": "PUSH_RECEIVED", "event_id": "e1",
                    "occurred_at": "2025-11-24T16:00:00.123Z"},
        "due_at": "2025-11-25T16:00:00.123Z", "emitted_at": 1764086400500}"#;
    assert_eq!(codec.decode(json.as_bytes()).unwrap(), send_command());

    let codec = codec_for::<Campaign>(&EncodingSettings::json());
    let mut value = serde_json::to_value(campaign()).unwrap();
    value["published_at"] = "2023-11-14T22:13:20Z".into();
    value["ends_at"] = "2027-01-15T08:00:00Z".into();
    value["starts_at"] = serde_json::Value::Null;
    assert_eq!(
        codec.decode(value.to_string().as_bytes()).unwrap(),
        campaign()
    );

    let codec = codec_for::<Decision>(&EncodingSettings::json());
    let mut value = serde_json::to_value(decision()).unwrap();
    value["decided_at"] = "2025-11-24T16:00:00.123Z".into();
    assert_eq!(
        codec.decode(value.to_string().as_bytes()).unwrap(),
        decision()
    );
}

#[test]
fn json_unknown_kind_and_type_decode_as_unknown() {
    let codec = codec_for::<Interaction>(&EncodingSettings::json());
    let read = codec
        .decode(
            br#"{"event_id": "e1", "user_id": "u1", "campaign_id": "c1", "kind": "EMAIL_FORWARD",
                 "occurred_at": "2025-11-24T16:00:00Z", "channel_hint": "email"}"#,
        )
        .unwrap();
    assert_eq!(read.kind, InteractionKind::Unknown);
    assert_eq!(read.qualifier, None);
    assert!(read.properties.is_empty());

    let codec = codec_for::<UserEvent>(&EncodingSettings::json());
    let read = codec
        .decode(br#"{"event_id": "e3", "user_id": "u2", "type": "REFUND", "occurred_at": 7}"#)
        .unwrap();
    assert_eq!(read.event_type, UserEventType::Unknown);

    // Inside arrays too: a follow-on triggered by a kind this build does not know.
    let codec = codec_for::<Campaign>(&EncodingSettings::json());
    let mut value = serde_json::to_value(campaign()).unwrap();
    value["follow_on"]["trigger"]["kinds"] = serde_json::json!(["PUSH_RECEIVED", "PUSH_FORWARD"]);
    let read = codec.decode(value.to_string().as_bytes()).unwrap();
    assert_eq!(
        read.follow_on.unwrap().trigger.kinds,
        vec![InteractionKind::PushReceived, InteractionKind::Unknown]
    );
}

#[test]
fn json_bad_input_produces_precise_errors() {
    let codec = codec_for::<Interaction>(&EncodingSettings::json());

    let (text, e) = err_text(codec.decode(br#"{"event_id": "e1", "#));
    assert!(matches!(e, DecodeError::InvalidJson(_)), "{e:?}");
    assert!(text.starts_with("invalid JSON: "), "{text}");
    let (text, _) = err_text(codec.decode(&[0xC3, 0x01, 0, 0]));
    assert!(text.starts_with("invalid JSON: "), "{text}");
    let (_, e) = err_text(codec.decode(b""));
    assert_eq!(e, DecodeError::Empty);

    let (text, e) = err_text(codec.decode(
        br#"{"event_id": "e1", "campaign_id": "c1", "kind": "EMAIL_OPEN", "occurred_at": 1}"#,
    ));
    assert_eq!(text, "Interaction: missing field `user_id`");
    assert!(!e.is_retriable());

    let (text, _) = err_text(codec.decode(
        br#"{"event_id": "e1", "user_id": "u1", "campaign_id": "c1", "kind": "EMAIL_OPEN",
             "occurred_at": "yesterday"}"#,
    ));
    assert!(
        text.starts_with(r#"Interaction.occurred_at: invalid timestamp "yesterday""#),
        "{text}"
    );

    let (text, _) = err_text(codec.decode(
        br#"{"event_id": "e1", "user_id": "u1", "campaign_id": "c1", "kind": 3, "occurred_at": 1}"#,
    ));
    assert!(
        text.starts_with("Interaction: invalid type: integer `3`"),
        "{text}"
    );

    let (text, _) = err_text(codec.decode(br#""e1""#));
    assert_eq!(
        text,
        r#"Interaction: invalid type: string "e1", expected struct Interaction"#
    );

    let codec = codec_for::<SendCommand>(&EncodingSettings::json());
    let mut value = serde_json::to_value(send_command()).unwrap();
    value["trigger"]["occurred_at"] = "soon".into();
    let (text, _) = err_text(codec.decode(value.to_string().as_bytes()));
    assert!(
        text.starts_with(r#"SendCommand.trigger.occurred_at: invalid timestamp "soon""#),
        "{text}"
    );
}

#[test]
fn from_json_value_applies_the_json_rules() {
    let value = serde_json::json!({"event_id": "e1", "user_id": "u1", "type": "SESSION_END",
        "occurred_at": "1970-01-01T00:00:01Z"});
    let read: UserEvent = from_json_value(value).unwrap();
    assert_eq!(read.event_type, UserEventType::Unknown);
    assert_eq!(read.occurred_at, 1_000);
}

#[test]
fn the_fingerprint_table_of_the_docs_is_this_builds() {
    let doc = std::fs::read_to_string(root().join("docs/encodings.md")).unwrap();
    let rows: BTreeMap<String, (String, String)> = doc
        .lines()
        .filter(|l| l.starts_with("| `campaign_connector."))
        .map(|l| {
            let cells: Vec<&str> = l.split('|').map(str::trim).collect();
            let code = |c: &str| c.split('`').nth(1).unwrap_or_default().to_string();
            (code(cells[1]), (code(cells[2]), code(cells[3])))
        })
        .collect();
    let own = [
        SchemaIdentity::of::<Interaction>().unwrap(),
        SchemaIdentity::of::<UserEvent>().unwrap(),
        SchemaIdentity::of::<Campaign>().unwrap(),
        SchemaIdentity::of::<SendCommand>().unwrap(),
        SchemaIdentity::of::<Decision>().unwrap(),
        SchemaIdentity::of::<TaskStateRecord>().unwrap(),
        SchemaIdentity::of::<ShadowRecord>().unwrap(),
    ];
    assert_eq!(rows.len(), own.len(), "{rows:?}");
    for schema in own {
        let (fingerprint, header) = &rows[&schema.name];
        assert_eq!(
            *fingerprint,
            (schema.fingerprint as i64).to_string(),
            "{}",
            schema.name
        );
        let bytes: Vec<String> = schema
            .single_object_header()
            .iter()
            .map(|b| format!("{b:02X}"))
            .collect();
        assert_eq!(*header, bytes.join(" "), "{}", schema.name);
    }
}
