//! Avro datums of the records written per event, written by hand.
//!
//! The decision log, the send-commands and the changelog's user states are written for
//! nearly every event the connector processes. The generic serializer finds each field and
//! each enum symbol by name; these writers know the schema's shape and write its binary
//! encoding directly (Avro specification, "Binary Encoding"): the same bytes, a fraction of
//! the work. Each writer follows one schema of `schemas/` field by field; the tests check
//! every writer byte for byte against the generic serializer on arbitrary records, so a
//! change to a record that the writer does not follow fails there.

use crate::model::{Campaign, Properties};
use crate::model::{
    Decision, InputCoordinates, Interaction, PendingSendState, ReceiptState, SendCommand,
    ShadowRecord, TaskStateRecord, TriggerRef, UserEvent, UserState,
};

/// A record whose datum (with its own schema as writer schema) may be written by hand.
pub trait OwnDatum {
    /// Appends the record's datum to `out` and returns `true`, or returns `false` (and
    /// leaves `out` alone) when no hand-written writer covers this record.
    fn write_own_datum(&self, _out: &mut Vec<u8>) -> bool {
        false
    }
}

impl OwnDatum for Interaction {}
impl OwnDatum for UserEvent {}
impl OwnDatum for Campaign {}
impl OwnDatum for ShadowRecord {}

/// `long` and `int`: zig-zag, then little-endian base-128 varint.
fn long(out: &mut Vec<u8>, n: i64) {
    let mut v = ((n << 1) ^ (n >> 63)) as u64;
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// `string`: its length in bytes, then the UTF-8 bytes.
fn string(out: &mut Vec<u8>, s: &str) {
    long(out, s.len() as i64);
    out.extend_from_slice(s.as_bytes());
}

/// An enum symbol: its position in the schema's symbols (the Rust enums list their
/// variants in schema order).
fn symbol(out: &mut Vec<u8>, index: usize) {
    long(out, index as i64);
}

/// A `["null", T]` union: branch 0, or branch 1 followed by the value.
fn optional<V: ?Sized>(out: &mut Vec<u8>, value: Option<&V>, write: impl FnOnce(&mut Vec<u8>, &V)) {
    match value {
        None => long(out, 0),
        Some(v) => {
            long(out, 1);
            write(out, v);
        }
    }
}

/// An array or map of `len` items, in one block (the count, the items, then an empty block).
fn block<I>(out: &mut Vec<u8>, items: I, mut write: impl FnMut(&mut Vec<u8>, I::Item))
where
    I: ExactSizeIterator,
{
    if items.len() > 0 {
        long(out, items.len() as i64);
        for item in items {
            write(out, item);
        }
    }
    long(out, 0);
}

fn string_map(out: &mut Vec<u8>, map: &Properties) {
    block(out, map.iter(), |out, (k, v)| {
        string(out, k);
        string(out, v);
    });
}

fn trigger(out: &mut Vec<u8>, t: &TriggerRef) {
    string(out, &t.campaign_id);
    symbol(out, t.kind as usize);
    string(out, &t.event_id);
    long(out, t.occurred_at);
}

fn coordinates(out: &mut Vec<u8>, c: &InputCoordinates) {
    string(out, &c.topic);
    long(out, i64::from(c.partition));
    long(out, c.offset);
}

impl OwnDatum for Decision {
    fn write_own_datum(&self, out: &mut Vec<u8>) -> bool {
        string(out, &self.user_id);
        string(out, &self.follow_on_id);
        optional(out, self.follow_on_version.as_ref(), |o, v| long(o, *v));
        symbol(out, self.outcome as usize);
        symbol(out, self.reason as usize);
        optional(out, self.command_id.as_deref(), string);
        optional(out, self.trigger_event_id.as_deref(), string);
        optional(out, self.cause_event_id.as_deref(), string);
        optional(out, self.due_at.as_ref(), |o, v| long(o, *v));
        long(out, self.decided_at);
        optional(out, self.source.as_ref(), coordinates);
        true
    }
}

impl OwnDatum for SendCommand {
    fn write_own_datum(&self, out: &mut Vec<u8>) -> bool {
        string(out, &self.command_id);
        string(out, &self.user_id);
        string(out, &self.campaign_id);
        long(out, self.campaign_version);
        symbol(out, self.channel as usize);
        string(out, &self.template_id);
        string_map(out, &self.payload);
        trigger(out, &self.trigger);
        long(out, self.due_at);
        long(out, self.emitted_at);
        true
    }
}

fn pending(out: &mut Vec<u8>, p: &PendingSendState) {
    string(out, &p.follow_on_id);
    long(out, p.follow_on_version);
    trigger(out, &p.trigger);
    long(out, p.due_at);
}

fn receipt(out: &mut Vec<u8>, r: &ReceiptState) {
    string(out, &r.follow_on_id);
    long(out, r.last_sent_at);
}

fn user_state(out: &mut Vec<u8>, u: &UserState) {
    string(out, &u.user_id);
    block(out, u.pending.iter(), pending);
    block(out, u.receipts.iter(), receipt);
}

/// User states and progress records; a rule snapshot (rare: one per follow-on version a
/// task holds) takes the generic path.
impl OwnDatum for TaskStateRecord {
    fn write_own_datum(&self, out: &mut Vec<u8>) -> bool {
        if self.rule.is_some() {
            return false;
        }
        optional(out, self.user.as_ref(), user_state);
        long(out, 0);
        optional(out, self.progress.as_ref(), |o, p| long(o, p.stream_time));
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::avro::ReaderSchema;
    use crate::model::{
        Channel, DecisionOutcome, DecisionReason, InteractionKind, RuleSnapshot, TaskProgress,
    };
    use apache_avro::AvroSchema;
    use serde::Serialize;

    /// The hand-written datum and the generic serializer's, for one record.
    fn both<T: AvroSchema + Serialize + OwnDatum>(record: &T) -> (Vec<u8>, Vec<u8>) {
        let mut own = Vec::new();
        assert!(
            record.write_own_datum(&mut own),
            "the writer covers the record"
        );
        let mut generic = Vec::new();
        ReaderSchema::of::<T>()
            .unwrap()
            .write_datum(record, &mut generic)
            .unwrap();
        (own, generic)
    }

    fn trigger_ref(kind: InteractionKind) -> TriggerRef {
        TriggerRef {
            campaign_id: "abandoned-cart".into(),
            kind,
            event_id: "évent-1".into(),
            occurred_at: -1_700_000_000_123,
        }
    }

    #[test]
    fn decisions_are_the_generic_bytes() {
        let full = Decision {
            user_id: "u-1".into(),
            follow_on_id: "f".repeat(200),
            follow_on_version: Some(i64::MAX),
            outcome: DecisionOutcome::Unknown,
            reason: DecisionReason::Backfill,
            command_id: Some("c".into()),
            trigger_event_id: Some(String::new()),
            cause_event_id: Some("e-2".into()),
            due_at: Some(i64::MIN),
            decided_at: 1_764_000_000_000,
            source: Some(InputCoordinates {
                topic: "interactions".into(),
                partition: i32::MAX,
                offset: -1,
            }),
        };
        let (own, generic) = both(&full);
        assert_eq!(own, generic);
        let bare = Decision {
            follow_on_version: None,
            outcome: DecisionOutcome::Scheduled,
            reason: DecisionReason::Trigger,
            command_id: None,
            trigger_event_id: None,
            cause_event_id: None,
            due_at: None,
            source: None,
            ..full
        };
        let (own, generic) = both(&bare);
        assert_eq!(own, generic);
    }

    #[test]
    fn send_commands_are_the_generic_bytes() {
        for payload in [
            Properties::new(),
            [("a", "1"), ("b", ""), ("ü", "x".repeat(130).as_str())]
                .into_iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        ] {
            let command = SendCommand {
                command_id: "cmd".into(),
                user_id: "u-1".into(),
                campaign_id: "winback".into(),
                campaign_version: 3,
                channel: Channel::Webhook,
                template_id: "t".into(),
                payload,
                trigger: trigger_ref(InteractionKind::NewsFeedCardClick),
                due_at: 0,
                emitted_at: 63,
            };
            let (own, generic) = both(&command);
            assert_eq!(own, generic);
        }
    }

    #[test]
    fn user_states_and_progress_are_the_generic_bytes() {
        let pending = |n: i64| PendingSendState {
            follow_on_id: format!("f-{n}"),
            follow_on_version: -n,
            trigger: trigger_ref(InteractionKind::InAppMessageView),
            due_at: n * 1_000_000_007,
        };
        let records = [
            TaskStateRecord {
                user: Some(UserState {
                    user_id: "u".into(),
                    pending: (0..3).map(pending).collect(),
                    receipts: vec![
                        ReceiptState {
                            follow_on_id: "f-0".into(),
                            last_sent_at: 64,
                        };
                        2
                    ],
                }),
                rule: None,
                progress: None,
            },
            TaskStateRecord {
                user: Some(UserState {
                    user_id: String::new(),
                    pending: Vec::new(),
                    receipts: Vec::new(),
                }),
                rule: None,
                progress: Some(TaskProgress { stream_time: -65 }),
            },
            TaskStateRecord {
                user: None,
                rule: None,
                progress: Some(TaskProgress { stream_time: 1 }),
            },
        ];
        for record in &records {
            let (own, generic) = both(record);
            assert_eq!(own, generic);
        }
    }

    #[test]
    fn rule_snapshots_and_other_records_take_the_generic_path() {
        let campaign: Campaign = serde_json::from_value(serde_json::json!({
            "campaign_id": "c", "name": "n", "kind": "CAMPAIGN", "status": "ACTIVE",
            "version": 1
        }))
        .unwrap();
        let record = TaskStateRecord {
            user: None,
            rule: Some(RuleSnapshot { campaign }),
            progress: None,
        };
        let mut out = vec![7];
        assert!(!record.write_own_datum(&mut out));
        assert_eq!(out, [7], "nothing written");
        let shadow = ShadowRecord {
            send_command: None,
            decision: None,
        };
        assert!(!shadow.write_own_datum(&mut out));
    }
}
