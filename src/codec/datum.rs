//! Avro datums of the records written per event, written by hand.
//!
//! The decision log, the send-commands and the changelog's user states are written for
//! nearly every event the connector processes. The generic serializer finds each field and
//! each enum symbol by name; these writers know the schema's shape and write its binary
//! encoding directly (Avro specification, "Binary Encoding"): the same bytes, a fraction of
//! the work. Each writer follows one schema of `schemas/` field by field; the tests check
//! every writer byte for byte against the generic serializer on arbitrary records, so a
//! change to a record that the writer does not follow fails there.
//!
//! A restore reads the changelog the same way ([`read_state_datum`]): a user state read in
//! place, its strings borrowed from the record's bytes, instead of a decoded record with an
//! allocation per string. Anything it does not expect — a rule snapshot, a malformed datum —
//! it leaves to the generic decoder, which reads it or says what is wrong.

use crate::model::{
    Campaign, InteractionKind, PendingSendView, Properties, TimestampMs, UserStateView,
};
use crate::model::{
    Decision, InputCoordinates, Interaction, SendCommand, ShadowRecord, TaskStateRecord,
    TriggerRef, UserEvent,
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

fn pending(out: &mut Vec<u8>, p: &PendingSendView<'_>) {
    string(out, p.follow_on_id);
    long(out, p.follow_on_version);
    string(out, p.trigger_campaign_id);
    symbol(out, p.trigger_kind as usize);
    string(out, p.trigger_event_id);
    long(out, p.triggered_at);
    long(out, p.due_at);
}

fn user_state(out: &mut Vec<u8>, u: &UserStateView<'_>) {
    string(out, u.user_id);
    block(out, u.pending.iter(), pending);
    block(
        out,
        u.receipts.iter(),
        |out, (follow_on_id, last_sent_at)| {
            string(out, follow_on_id);
            long(out, *last_sent_at);
        },
    );
}

/// The datum of a changelog record holding one user's state (`TaskStateRecord` with only
/// `user`), written from a view: a changed user's entry is written from the engine's
/// tables without building a record.
pub fn write_user_state_datum(out: &mut Vec<u8>, user: &UserStateView<'_>) {
    long(out, 1);
    user_state(out, user);
    long(out, 0);
    long(out, 0);
}

/// User states and progress records; a rule snapshot (rare: one per follow-on version a
/// task holds) takes the generic path.
impl OwnDatum for TaskStateRecord {
    fn write_own_datum(&self, out: &mut Vec<u8>) -> bool {
        if self.rule.is_some() {
            return false;
        }
        optional(out, self.user.as_ref(), |o, u| user_state(o, &u.view()));
        long(out, 0);
        optional(out, self.progress.as_ref(), |o, p| long(o, p.stream_time));
        true
    }
}

/// A changelog record as a restore takes it: a user's state and a progress record's stream
/// time (each `None` when the record has none).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateView<'a> {
    pub user: Option<UserStateView<'a>>,
    pub stream_time: Option<TimestampMs>,
}

/// Reads a `TaskStateRecord` datum written with this build's schema in place. `None` for a
/// record with a rule snapshot or without any part, and for a datum that is malformed or has
/// bytes left over: the generic decoder then reads it (or names what is wrong).
pub fn read_state_datum(datum: &[u8]) -> Option<StateView<'_>> {
    let mut r = Reader { rest: datum };
    let user = match r.branch()? {
        0 => None,
        _ => Some(r.user_state()?),
    };
    if r.branch()? != 0 {
        return None;
    }
    let stream_time = match r.branch()? {
        0 => None,
        _ => Some(r.long()?),
    };
    (r.rest.is_empty() && (user.is_some() || stream_time.is_some()))
        .then_some(StateView { user, stream_time })
}

/// Avro's binary encoding, read from a slice; every read is checked (`None`: malformed).
struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    fn long(&mut self) -> Option<i64> {
        let mut v: u64 = 0;
        for (i, &b) in self.rest.iter().enumerate().take(10) {
            if i == 9 && b > 1 {
                return None; // more than 64 bits
            }
            v |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                self.rest = &self.rest[i + 1..];
                return Some(((v >> 1) as i64) ^ -((v & 1) as i64));
            }
        }
        None
    }

    /// A non-negative count or length that fits in what is left (each item takes a byte
    /// at least), so that no claim of a datum allocates more than its bytes.
    fn count(&mut self) -> Option<usize> {
        let n = usize::try_from(self.long()?).ok()?;
        (n <= self.rest.len()).then_some(n)
    }

    fn str(&mut self) -> Option<&'a str> {
        let n = self.count()?;
        let (s, rest) = self.rest.split_at(n);
        self.rest = rest;
        std::str::from_utf8(s).ok()
    }

    /// The branch of a `["null", T]` union.
    fn branch(&mut self) -> Option<u8> {
        match self.long()? {
            0 => Some(0),
            1 => Some(1),
            _ => None,
        }
    }

    /// The items of an array, block by block (a negative count is followed by the
    /// block's size in bytes).
    fn array<T>(
        &mut self,
        mut item: impl FnMut(&mut Self) -> Option<T>,
    ) -> Option<smallvec::SmallVec<[T; 1]>> {
        let mut items = smallvec::SmallVec::new();
        loop {
            let n = self.long()?;
            if n == 0 {
                return Some(items);
            }
            if n < 0 {
                self.long()?;
            }
            let n = usize::try_from(n.unsigned_abs()).ok()?;
            if n > self.rest.len() {
                return None;
            }
            for _ in 0..n {
                items.push(item(self)?);
            }
        }
    }

    fn kind(&mut self) -> Option<InteractionKind> {
        let i = usize::try_from(self.long()?).ok()?;
        match InteractionKind::KNOWN.get(i) {
            Some(k) => Some(*k),
            None => (i == InteractionKind::KNOWN.len()).then_some(InteractionKind::Unknown),
        }
    }

    fn user_state(&mut self) -> Option<UserStateView<'a>> {
        let user_id = self.str()?;
        let pending = self.array(|r| {
            let follow_on_id = r.str()?;
            let follow_on_version = r.long()?;
            let trigger_campaign_id = r.str()?;
            let trigger_kind = r.kind()?;
            let trigger_event_id = r.str()?;
            let triggered_at = r.long()?;
            let due_at = r.long()?;
            Some(PendingSendView {
                follow_on_id,
                follow_on_version,
                trigger_campaign_id,
                trigger_kind,
                trigger_event_id,
                triggered_at,
                due_at,
            })
        })?;
        let receipts = self.array(|r| Some((r.str()?, r.long()?)))?;
        Some(UserStateView {
            user_id,
            pending,
            receipts,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::avro::ReaderSchema;
    use crate::model::{
        Channel, DecisionOutcome, DecisionReason, InteractionKind, PendingSendState, ReceiptState,
        RuleSnapshot, TaskProgress, UserState,
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

    /// A user state datum by hand: user id, one pending send in a block of negative count
    /// (count, then the block's size), no receipt; then no rule, no progress.
    fn hand_state(kind: i64, user_id: &[u8]) -> Vec<u8> {
        let mut d = vec![];
        long(&mut d, 1);
        long(&mut d, user_id.len() as i64);
        d.extend_from_slice(user_id);
        let mut item = vec![];
        string(&mut item, "f");
        long(&mut item, 2);
        string(&mut item, "c");
        long(&mut item, kind);
        string(&mut item, "e");
        long(&mut item, 10);
        long(&mut item, 20);
        long(&mut d, -1);
        long(&mut d, item.len() as i64);
        d.extend_from_slice(&item);
        long(&mut d, 0);
        long(&mut d, 0); // receipts
        long(&mut d, 0); // rule
        long(&mut d, 0); // progress
        d
    }

    #[test]
    fn states_are_read_in_place_from_any_block_form() {
        let datum = hand_state(13, b"u-1");
        let view = read_state_datum(&datum).expect("read");
        let user = view.user.expect("user");
        assert_eq!(user.user_id, "u-1");
        assert_eq!(
            user.pending.as_slice(),
            [PendingSendView {
                follow_on_id: "f",
                follow_on_version: 2,
                trigger_campaign_id: "c",
                trigger_kind: InteractionKind::PushReceived,
                trigger_event_id: "e",
                triggered_at: 10,
                due_at: 20,
            }]
        );
        assert!(user.receipts.is_empty());
        assert_eq!(view.stream_time, None);
        // The last symbol is the enum's default.
        let datum = hand_state(21, b"u");
        let view = read_state_datum(&datum).expect("read");
        assert_eq!(
            view.user.unwrap().pending[0].trigger_kind,
            InteractionKind::Unknown
        );
    }

    #[test]
    fn what_is_not_read_in_place_is_left_to_the_decoder() {
        // A kind past the schema's symbols; a user id that is not UTF-8.
        assert_eq!(read_state_datum(&hand_state(22, b"u")), None);
        assert_eq!(read_state_datum(&hand_state(-1, b"u")), None);
        assert_eq!(read_state_datum(&hand_state(0, &[0xff, 0xfe])), None);
        // Bytes left over; a union branch past the two; a length past the end (nothing
        // is allocated for it); a varint longer than 64 bits.
        let mut d = hand_state(0, b"u");
        d.push(0);
        assert_eq!(read_state_datum(&d), None);
        assert_eq!(read_state_datum(&[4]), None);
        let mut d = vec![2];
        long(&mut d, i64::MAX);
        assert_eq!(read_state_datum(&d), None);
        assert_eq!(read_state_datum(&[0x80; 11]), None);
        assert_eq!(
            read_state_datum(&[2, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02]),
            None
        );
        assert_eq!(read_state_datum(&[]), None);
    }
}
