//! Poison: records the connector must dead-letter exactly once and otherwise ignore.

use campaign_connector::model::{Interaction, InteractionKind as K};

use super::{Content, Generator, Record, Role};

/// Bad input the connector must dead-letter exactly once and otherwise ignore.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Poison {
    /// Random bytes.
    Garbage,
    /// A single-object header and half a datum.
    Truncated,
    /// A record written with the incompatible writer schema v3.
    IncompatibleSchema,
    /// `occurred_at` 8210298412800000: far beyond any date the rules can compute with.
    OccurredAtOutOfRange,
    /// `occurred_at` -8210298412800000.
    OccurredAtNegative,
    /// `occurred_at` in 2099: far more than any skew ahead of the wall clock.
    Dated2099,
    /// A valid record whose key is not its user id.
    KeyMismatch,
    /// A valid record with an empty user id.
    EmptyUserId,
}

impl Poison {
    pub const ALL: [Poison; 8] = [
        Poison::Garbage,
        Poison::Truncated,
        Poison::IncompatibleSchema,
        Poison::OccurredAtOutOfRange,
        Poison::OccurredAtNegative,
        Poison::Dated2099,
        Poison::KeyMismatch,
        Poison::EmptyUserId,
    ];

    /// The name on the command line (`--poison`).
    pub fn key(self) -> &'static str {
        match self {
            Poison::Garbage => "garbage",
            Poison::Truncated => "truncated",
            Poison::IncompatibleSchema => "v3",
            Poison::OccurredAtOutOfRange => "time-range",
            Poison::OccurredAtNegative => "time-negative",
            Poison::Dated2099 => "2099",
            Poison::KeyMismatch => "key",
            Poison::EmptyUserId => "empty-user",
        }
    }

    pub fn parse(key: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|p| p.key() == key)
    }

    /// The `error.class` header its dead letter must carry.
    pub fn class(self) -> &'static str {
        match self {
            Poison::Garbage | Poison::Truncated | Poison::IncompatibleSchema => "undecodable",
            Poison::OccurredAtOutOfRange | Poison::OccurredAtNegative => {
                campaign_connector::time::CLASS_TIMESTAMP_OUT_OF_RANGE
            }
            Poison::Dated2099 => campaign_connector::time::CLASS_FUTURE_TIMESTAMP,
            Poison::KeyMismatch => "key_mismatch",
            Poison::EmptyUserId => "empty_user_id",
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Poison::Garbage => "undecodable bytes",
            Poison::Truncated => "truncated Avro",
            Poison::IncompatibleSchema => "incompatible writer schema v3",
            Poison::OccurredAtOutOfRange => "occurred_at 8210298412800000",
            Poison::OccurredAtNegative => "occurred_at -8210298412800000",
            Poison::Dated2099 => "dated 2099",
            Poison::KeyMismatch => "key is not the user id",
            Poison::EmptyUserId => "empty user id",
        }
    }
}

impl Generator {
    pub(super) fn add_poison(&mut self, k: usize, records: &mut Vec<Record>) {
        let mut kinds: Vec<Poison> = self
            .forced_poison
            .iter()
            .filter(|(c, _)| *c == k)
            .map(|(_, p)| *p)
            .collect();
        let every = self.shape.poison_every.max(1) as u64;
        for _ in 0..records.len() {
            if self.rng.below(every) == 0 && !self.poison_kinds.is_empty() {
                kinds.push(*self.rng.pick(&self.poison_kinds));
            }
        }
        for kind in kinds {
            let at = self.rng.below(records.len() as u64 + 1) as usize;
            let r = self.poison(kind, k);
            *self.poison_counts.entry(kind).or_default() += 1;
            records.insert(at, r);
        }
    }

    fn poison(&mut self, kind: Poison, chunk: usize) -> Record {
        self.seq += 1;
        let user = format!("u{:06}", self.user());
        let t = self.timeline.chunk_start(chunk);
        let mut i = Interaction {
            event_id: format!("p{:08}", self.seq),
            user_id: user.clone(),
            campaign_id: "abandoned-cart".into(),
            kind: K::PushReceived,
            qualifier: None,
            occurred_at: t,
            user_time_zone: None,
            properties: Default::default(),
        };
        let mut key = user;
        let mut role = Role::Interactions;
        let value = match kind {
            Poison::Garbage => {
                role = *self.rng.pick(&[Role::Interactions, Role::UserEvents]);
                let n = self.rng.range(1, 60) as usize;
                // Never the single-object marker C3 01 at the start.
                (0..n).map(|_| (self.rng.below(0xC0)) as u8).collect()
            }
            Poison::Truncated => {
                let full = self.encoders.interaction(&i);
                // The header whole (single-object or Confluent), half the datum.
                let header = if self.encoders.confluent().is_some() {
                    campaign_connector::codec::CONFLUENT_HEADER_LEN
                } else {
                    campaign_connector::codec::SINGLE_OBJECT_HEADER_LEN
                };
                full[..header + (full.len() - header) / 2].to_vec()
            }
            Poison::IncompatibleSchema => self.encoders.interaction_v3(&i),
            Poison::OccurredAtOutOfRange => {
                i.occurred_at = 8_210_298_412_800_000;
                self.encoders.interaction(&i)
            }
            Poison::OccurredAtNegative => {
                i.occurred_at = -8_210_298_412_800_000;
                self.encoders.interaction(&i)
            }
            Poison::Dated2099 => {
                i.occurred_at = 4_070_908_800_000; // 2099-01-01T00:00:00Z
                self.encoders.interaction(&i)
            }
            Poison::KeyMismatch => {
                key = format!("u{:06}", self.user() + 1);
                if key == i.user_id {
                    key.push('x');
                }
                self.encoders.interaction(&i)
            }
            Poison::EmptyUserId => {
                i.user_id.clear();
                key.clear();
                self.encoders.interaction(&i)
            }
        };
        Record {
            role,
            key,
            value,
            content: Content::Poison(kind),
        }
    }
}
