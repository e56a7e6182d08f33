//! The codec reads and writes Avro datums through serde_avro_fast (and writes the records
//! written per event — decisions, send-commands, user states — by hand, `codec/datum.rs`),
//! and derives, parses and resolves schemas through apache-avro. These properties hold the
//! writers to the same bytes: for arbitrary records of every type the connector reads or writes, the codec's
//! datum is the one apache-avro writes with the schema file in `schemas/`, and the codec
//! reads apache-avro's datum back into the very same record.

use std::collections::BTreeMap;
use std::path::Path;

use apache_avro::reader::datum::GenericDatumReader;
use apache_avro::writer::datum::GenericDatumWriter;
use apache_avro::{AvroSchema, Schema};
use campaign_connector::codec::{
    read_state_datum, write_user_state_datum, Codec, Encoding, EncodingSettings, OwnDatum,
};
use campaign_connector::model::*;
use proptest::prelude::*;
use serde::de::DeserializeOwned;
use serde::Serialize;

fn schema_file(file: &str) -> Schema {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("schemas")
        .join(file);
    Schema::parse_str(&std::fs::read_to_string(&path).unwrap()).unwrap()
}

/// apache-avro's datum of `record`, written with `schema`.
fn apache_datum<T: Serialize>(schema: &Schema, record: &T) -> Vec<u8> {
    let value = apache_avro::to_value(record)
        .unwrap()
        .resolve(schema)
        .unwrap();
    let writer = GenericDatumWriter::builder(schema).build().unwrap();
    let mut bytes = Vec::new();
    writer.write_value(&mut bytes, value).unwrap();
    bytes
}

/// One record both ways: the codec reads apache-avro's datum back into the record, and
/// apache-avro reads the codec's datum back into the record; with `same_bytes`, the two
/// datums are also byte for byte the same.
fn agree<T>(file: &str, record: &T, same_bytes: bool) -> Result<(), TestCaseError>
where
    T: AvroSchema + Serialize + DeserializeOwned + OwnDatum + PartialEq + std::fmt::Debug,
{
    let codec = Codec::<T>::new("t", &EncodingSettings::avro()).unwrap();
    let schema = schema_file(file);
    let expected = apache_datum(&schema, record);
    let encoded = codec.encode(record).unwrap();
    let ours = &encoded[10..];
    if same_bytes {
        prop_assert_eq!(ours, &expected[..], "the codec's datum is apache-avro's");
    }
    let read_by_apache = GenericDatumReader::builder(&schema)
        .build()
        .unwrap()
        .read_value(&mut &ours[..])
        .unwrap();
    prop_assert_eq!(
        &apache_avro::from_value::<T>(&read_by_apache).unwrap(),
        record
    );
    let mut value = encoded[..10].to_vec();
    value.extend_from_slice(&expected);
    prop_assert_eq!(&codec.decode(&value).unwrap(), record);
    Ok(())
}

/// A restore reads a changelog record in place: the same user state and stream time as
/// the decoded record, or `None` (the decoder's turn) for a record with a rule snapshot or
/// without any part; never anything from a datum cut short.
fn read_in_place(record: &TaskStateRecord) -> Result<(), TestCaseError> {
    let codec = Codec::<TaskStateRecord>::new("t", &EncodingSettings::avro()).unwrap();
    let encoded = codec.encode(record).unwrap();
    let datum = codec
        .own_datum(&encoded)
        .expect("written with the own schema");
    let read = read_state_datum(datum);
    if record.rule.is_some() || (record.user.is_none() && record.progress.is_none()) {
        prop_assert!(read.is_none());
        return Ok(());
    }
    let read = read.expect("a user state or progress record is read in place");
    prop_assert_eq!(read.user, record.user.as_ref().map(UserState::view));
    prop_assert_eq!(
        read.stream_time,
        record.progress.as_ref().map(|p| p.stream_time)
    );
    for cut in 0..datum.len() {
        prop_assert!(read_state_datum(&datum[..cut]).is_none(), "cut at {}", cut);
    }
    Ok(())
}

/// A changed user's changelog entry, written from a view of the user's state (as the
/// runtime writes it from the engine's tables), is byte for byte the record's encoding; and
/// the view describes the state it was taken from.
fn written_from_view(record: &TaskStateRecord) -> Result<(), TestCaseError> {
    let Some(user) = record.user.as_ref() else {
        return Ok(());
    };
    prop_assert_eq!(&user.view().to_state(), user);
    let only_user = TaskStateRecord {
        user: Some(user.clone()),
        rule: None,
        progress: None,
    };
    for settings in [EncodingSettings::avro(), EncodingSettings::json()] {
        let codec = Codec::<TaskStateRecord>::new("t", &settings).unwrap();
        let mut from_view = Vec::new();
        match codec.encode_own_datum(&mut from_view, |out| {
            write_user_state_datum(out, &user.view())
        }) {
            Some(written) => {
                written.unwrap();
                prop_assert_eq!(&from_view, &codec.encode(&only_user).unwrap());
            }
            None => prop_assert!(
                settings.encoding == Encoding::Json,
                "only JSON has no own datum"
            ),
        }
    }
    Ok(())
}

fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        "[a-z0-9-]{1,12}",
        "\\PC{0,40}",
        "x{200,300}",
    ]
}

fn time() -> impl Strategy<Value = i64> {
    prop_oneof![
        any::<i64>(),
        1_600_000_000_000i64..1_900_000_000_000,
        -1i64..=1
    ]
}

/// Maps of up to `max` entries. apache-avro writes a map in its hash order, which changes
/// from value to value; the byte-for-byte comparisons use maps of one entry at most.
fn map(max: usize) -> impl Strategy<Value = BTreeMap<String, String>> {
    prop::collection::btree_map(text(), text(), 0..=max)
}

fn kind() -> impl Strategy<Value = InteractionKind> {
    let mut kinds = InteractionKind::KNOWN.to_vec();
    kinds.push(InteractionKind::Unknown);
    prop::sample::select(kinds)
}

fn interaction(m: usize) -> impl Strategy<Value = Interaction> {
    (
        (text(), text(), text(), kind()),
        (prop::option::of(text()), time()),
        (prop::option::of(text()), map(m)),
    )
        .prop_map(
            |(
                (event_id, user_id, campaign_id, kind),
                (qualifier, occurred_at),
                (zone, properties),
            )| {
                Interaction {
                    event_id,
                    user_id,
                    campaign_id,
                    kind,
                    qualifier,
                    occurred_at,
                    user_time_zone: zone,
                    properties,
                }
            },
        )
}

fn user_event(m: usize) -> impl Strategy<Value = UserEvent> {
    use UserEventType::*;
    (
        (
            text(),
            text(),
            prop::sample::select(vec![CustomEvent, Purchase, SessionStart, Unknown]),
        ),
        (prop::option::of(text()), time()),
        (prop::option::of(text()), map(m)),
    )
        .prop_map(
            |((event_id, user_id, event_type), (name, occurred_at), (zone, properties))| {
                UserEvent {
                    event_id,
                    user_id,
                    event_type,
                    name,
                    occurred_at,
                    user_time_zone: zone,
                    properties,
                }
            },
        )
}

fn trigger_ref() -> impl Strategy<Value = TriggerRef> {
    (text(), kind(), text(), time()).prop_map(|(campaign_id, kind, event_id, occurred_at)| {
        TriggerRef {
            campaign_id,
            kind,
            event_id,
            occurred_at,
        }
    })
}

fn channel() -> impl Strategy<Value = Channel> {
    use Channel::*;
    prop::sample::select(vec![Email, Push, Sms, InApp, ContentCard, Webhook])
}

fn send_command(m: usize) -> impl Strategy<Value = SendCommand> {
    (
        (text(), text(), text(), any::<i64>()),
        (channel(), text(), map(m)),
        (trigger_ref(), time(), time()),
    )
        .prop_map(
            |(
                (command_id, user_id, campaign_id, campaign_version),
                (channel, template_id, payload),
                (trigger, due_at, emitted_at),
            )| SendCommand {
                command_id,
                user_id,
                campaign_id,
                campaign_version,
                channel,
                template_id,
                payload,
                trigger,
                due_at,
                emitted_at,
            },
        )
}

fn decision() -> impl Strategy<Value = Decision> {
    let source = (text(), any::<i32>(), any::<i64>()).prop_map(|(topic, partition, offset)| {
        InputCoordinates {
            topic,
            partition,
            offset,
        }
    });
    (
        (text(), text(), prop::option::of(any::<i64>())),
        (
            prop::sample::select(DecisionOutcome::ALL.to_vec()),
            prop::sample::select(DecisionReason::ALL.to_vec()),
        ),
        (
            prop::option::of(text()),
            prop::option::of(text()),
            prop::option::of(text()),
        ),
        (prop::option::of(time()), time(), prop::option::of(source)),
    )
        .prop_map(
            |(
                (user_id, follow_on_id, follow_on_version),
                (outcome, reason),
                (command_id, trigger_event_id, cause_event_id),
                (due_at, decided_at, source),
            )| Decision {
                user_id,
                follow_on_id,
                follow_on_version,
                outcome,
                reason,
                command_id,
                trigger_event_id,
                cause_event_id,
                due_at,
                decided_at,
                source,
            },
        )
}

fn delay() -> impl Strategy<Value = Delay> {
    use Weekday::*;
    (
        prop::sample::select(vec![
            DelayType::Immediate,
            DelayType::After,
            DelayType::NextWeekday,
            DelayType::CalendarDays,
        ]),
        prop::option::of(any::<i64>()),
        prop::option::of(prop::sample::select(vec![
            Monday, Tuesday, Wednesday, Thursday, Friday, Saturday, Sunday,
        ])),
        prop::option::of(any::<i32>()),
        prop::option::of(text()),
    )
        .prop_map(|(delay_type, seconds, weekday, days, local_time)| Delay {
            delay_type,
            seconds,
            weekday,
            days,
            local_time,
        })
}

fn exception() -> impl Strategy<Value = ExceptionMatcher> {
    use ExceptionType::*;
    (
        prop::sample::select(vec![Interaction, CustomEvent, Purchase, SessionStart]),
        prop::option::of(text()),
        prop::collection::vec(kind(), 0..3),
        prop::option::of(text()),
    )
        .prop_map(
            |(exception_type, campaign_id, interaction_kinds, name)| ExceptionMatcher {
                exception_type,
                campaign_id,
                interaction_kinds,
                name,
            },
        )
}

fn follow_on(m: usize) -> impl Strategy<Value = FollowOnRule> {
    (
        (
            text(),
            prop::collection::vec(kind(), 0..3),
            prop::option::of(text()),
        ),
        (
            delay(),
            prop::option::of(text()),
            prop::collection::vec(exception(), 0..3),
        ),
        (
            prop::sample::select(vec![ReeligibilityPolicy::Never, ReeligibilityPolicy::After]),
            prop::option::of(any::<i64>()),
            prop::sample::select(vec![RepeatTrigger::KeepFirst, RepeatTrigger::Restart]),
        ),
        (
            prop::sample::select(vec![OverduePolicy::Send, OverduePolicy::DropIfLateBy]),
            prop::option::of(any::<i64>()),
        ),
        (channel(), text(), map(m)),
    )
        .prop_map(
            |(
                (campaign_id, kinds, qualifier),
                (delay, time_zone, exceptions),
                (policy, seconds, on_repeat_trigger),
                (overdue_policy, overdue_seconds),
                (channel, template_id, payload),
            )| FollowOnRule {
                trigger: Trigger {
                    campaign_id,
                    kinds,
                    qualifier,
                },
                delay,
                time_zone,
                exceptions,
                reeligibility: Reeligibility { policy, seconds },
                on_repeat_trigger,
                overdue: Overdue {
                    policy: overdue_policy,
                    seconds: overdue_seconds,
                },
                message: Message {
                    channel,
                    template_id,
                    payload,
                },
            },
        )
}

fn campaign(m: usize) -> impl Strategy<Value = Campaign> {
    use CampaignStatus::*;
    (
        (text(), text(), any::<bool>(), any::<i64>()),
        prop::sample::select(vec![Draft, Active, Stopped, Archived]),
        (
            prop::option::of(time()),
            prop::option::of(time()),
            prop::option::of(time()),
            prop::option::of(time()),
        ),
        (prop::option::of(follow_on(m)), any::<bool>()),
    )
        .prop_map(
            |(
                (campaign_id, name, card, version),
                status,
                (published_at, starts_at, ends_at, backfill_since),
                (follow_on, shadow),
            )| Campaign {
                campaign_id,
                name,
                kind: if card {
                    CampaignKind::NewsFeedCard
                } else {
                    CampaignKind::Campaign
                },
                status,
                version,
                published_at,
                starts_at,
                ends_at,
                follow_on,
                backfill_since,
                mode: if shadow {
                    CampaignMode::Shadow
                } else {
                    CampaignMode::Live
                },
            },
        )
}

fn task_state(m: usize) -> impl Strategy<Value = TaskStateRecord> {
    let pending = (text(), any::<i64>(), trigger_ref(), time()).prop_map(
        |(follow_on_id, follow_on_version, trigger, due_at)| PendingSendState {
            follow_on_id,
            follow_on_version,
            trigger,
            due_at,
        },
    );
    let receipt = (text(), time()).prop_map(|(follow_on_id, last_sent_at)| ReceiptState {
        follow_on_id,
        last_sent_at,
    });
    let user = (
        text(),
        prop::collection::vec(pending, 0..4),
        prop::collection::vec(receipt, 0..3),
    )
        .prop_map(|(user_id, pending, receipts)| UserState {
            user_id,
            pending,
            receipts,
        });
    (
        prop::option::of(user),
        prop::option::of(campaign(m).prop_map(|campaign| RuleSnapshot { campaign })),
        prop::option::of(time().prop_map(|stream_time| TaskProgress { stream_time })),
    )
        .prop_map(|(user, rule, progress)| TaskStateRecord {
            user,
            rule,
            progress,
        })
}

/// The cases of every record type, with maps of up to `m` entries (byte for byte when 1).
macro_rules! agreement {
    ($name:ident, $m:expr, $same:expr) => {
        mod $name {
            use super::*;

            proptest! {
                #![proptest_config(ProptestConfig::with_cases(150))]

                #[test]
                fn interactions(record in interaction($m)) {
                    agree("interaction.avsc", &record, $same)?;
                }

                #[test]
                fn user_events(record in user_event($m)) {
                    agree("user_event.avsc", &record, $same)?;
                }

                #[test]
                fn send_commands(record in send_command($m)) {
                    agree("send_command.avsc", &record, $same)?;
                }

                #[test]
                fn decisions(record in decision()) {
                    agree("decision.avsc", &record, $same)?;
                }

                #[test]
                fn campaigns(record in campaign($m)) {
                    agree("campaign.avsc", &record, $same)?;
                }

                #[test]
                fn task_states(record in task_state($m)) {
                    agree("task_state.avsc", &record, $same)?;
                }

                #[test]
                fn task_states_read_in_place(record in task_state($m)) {
                    read_in_place(&record)?;
                }

                #[test]
                fn task_states_written_from_views(record in task_state($m)) {
                    written_from_view(&record)?;
                }

                #[test]
                fn shadow_records(
                    send_command in prop::option::of(send_command($m)),
                    decision in prop::option::of(decision()),
                ) {
                    agree("shadow_record.avsc", &ShadowRecord { send_command, decision }, $same)?;
                }
            }
        }
    };
}

agreement!(byte_for_byte, 1, true);
agreement!(larger_maps, 4, false);
