//! The seeded workload: users living through stories (a trigger, then maybe an exception,
//! a repeat, a purchase …) for every rule of the catalog, plus noise, plus poison.
//!
//! ```text
//!  story starts in chunk k ──► follow-ups planned at later times (heap) ──┐
//!  chunk k = every planned event with chunk_start(k) <= t < chunk_start(k+1), in time order
//!            + poison records (1 in `poison_every`, and each kind at least once)
//! ```
//!
//! Chunks are generated on demand, in order, from the seed alone: the same seed gives the
//! same records whatever the connector does meanwhile.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};

use campaign_connector::model::{
    InputEvent, Interaction, InteractionKind, InteractionKind as K, UserEvent, UserEventType,
};

use crate::catalog::{Edit, PROBE_CAMPAIGN};

mod poison;
mod stories;

use crate::encode::{Encoders, EMAIL_FORWARD, REFUND};
use crate::rng::Rng;
use crate::timeline::Timeline;
pub use poison::Poison;

/// Input topic of a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    Interactions,
    UserEvents,
}

impl Role {
    /// The merge's tie order: interactions before user events.
    pub fn rank(self) -> u8 {
        self as u8
    }
}

/// What a correct reader makes of a record.
#[derive(Debug, Clone)]
pub enum Content {
    Event(InputEvent),
    Poison(Poison),
}

/// The producer that wrote a record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Writer {
    Current,
    /// A newer interaction producer (writer schema v2).
    NewerV2,
    /// An older user-event producer (writer schema v0).
    OlderV0,
}

/// One record to produce.
#[derive(Debug, Clone)]
pub struct Record {
    pub role: Role,
    pub key: String,
    pub value: Vec<u8>,
    pub content: Content,
}

/// Sizes and rates of a workload.
#[derive(Debug, Clone, Copy)]
pub struct Shape {
    pub events: usize,
    pub users: usize,
    /// One poison record per this many events.
    pub poison_every: usize,
}

/// The Java client's key hashing (murmur2, positive): the partition of `key`.
pub fn partition_of(key: &[u8], partitions: i32) -> i32 {
    const M: u32 = 0x5bd1_e995;
    let mut h: u32 = 0x9747_b28c ^ key.len() as u32;
    let mut chunks = key.chunks_exact(4);
    for c in &mut chunks {
        let mut k = u32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        k = k.wrapping_mul(M);
        k ^= k >> 24;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M) ^ k;
    }
    let rest = chunks.remainder();
    if !rest.is_empty() {
        for (i, b) in rest.iter().enumerate().rev() {
            h ^= u32::from(*b) << (8 * i);
        }
        h = h.wrapping_mul(M);
    }
    h ^= h >> 13;
    h = h.wrapping_mul(M);
    h ^= h >> 15;
    ((h as i32) & 0x7fff_ffff) % partitions
}

/// The first user numbers from `from` on whose ids land in each partition.
fn probe_users(from: u32, partitions: i32) -> Vec<u32> {
    let mut found: Vec<Option<u32>> = vec![None; partitions as usize];
    let mut n = from;
    while found.iter().any(Option::is_none) {
        let p = partition_of(format!("u{n:06}").as_bytes(), partitions) as usize;
        found[p].get_or_insert(n);
        n += 1;
    }
    found.into_iter().flatten().collect()
}

/// The poison kinds a run injects (all by default).
pub type PoisonKinds = Vec<Poison>;

#[derive(Debug, Clone)]
enum Plan {
    Interaction {
        campaign: &'static str,
        kind: Option<InteractionKind>,
        qualifier: Option<&'static str>,
    },
    UserEvent {
        /// `None`: `REFUND`, which only the older producer writes.
        event_type: Option<UserEventType>,
        name: Option<&'static str>,
    },
}

#[derive(Debug, Clone)]
struct Planned {
    user: u32,
    tz: Option<&'static str>,
    plan: Plan,
}

const ZONES: &[&str] = &[
    "Europe/Berlin",
    "America/New_York",
    "Asia/Kolkata",
    "Australia/Lord_Howe",
    "Pacific/Chatham",
    "America/St_Johns",
    "Mars/Olympus_Mons",
];

pub struct Generator {
    rng: Rng,
    timeline: Timeline,
    shape: Shape,
    encoders: Encoders,
    /// Chunks that start a segment (the input pauses before them).
    barriers: Vec<usize>,
    /// One user per partition, for the barrier probes.
    probe_users: Vec<u32>,
    /// Planned events by (time, sequence).
    heap: BinaryHeap<Reverse<(i64, u64)>>,
    planned: BTreeMap<u64, Planned>,
    seq: u64,
    next_chunk: usize,
    /// Interactions may come from the newer producer from this chunk on.
    v2_from: usize,
    /// User events may come from the older producer in these chunks.
    v0_chunks: (usize, usize),
    /// The chunk each poison kind first appears in.
    forced_poison: Vec<(usize, Poison)>,
    poison_kinds: PoisonKinds,
    pub poison_counts: BTreeMap<Poison, usize>,
    pub writer_counts: BTreeMap<&'static str, usize>,
}

impl Generator {
    pub fn new(
        seed: u64,
        timeline: Timeline,
        shape: Shape,
        encoders: Encoders,
        edits: &[Edit],
        poison_kinds: PoisonKinds,
        partitions: i32,
    ) -> Self {
        let c = timeline.chunks;
        let forced_poison = poison_kinds
            .iter()
            .enumerate()
            .map(|(i, p)| ((i + 1) * c / (poison_kinds.len() + 2), *p))
            .collect();
        Self {
            rng: Rng::new(seed).fork("workload"),
            timeline,
            shape,
            encoders,
            barriers: edits.iter().map(|e| e.at_chunk).collect(),
            probe_users: probe_users(shape.users as u32, partitions),
            heap: BinaryHeap::new(),
            planned: BTreeMap::new(),
            seq: 0,
            next_chunk: 0,
            v2_from: c / 2,
            v0_chunks: (c / 4, c * 3 / 4),
            forced_poison,
            poison_kinds,
            poison_counts: BTreeMap::new(),
            writer_counts: BTreeMap::new(),
        }
    }

    /// How many interaction writer schema ids the producers registered (Confluent input).
    pub fn confluent_ids(&self) -> Option<usize> {
        self.encoders.confluent().map(|c| c.ids)
    }

    pub fn done(&self) -> bool {
        self.next_chunk >= self.timeline.chunks
    }

    /// The next chunk's records in production order (event-time order; poison anywhere).
    pub fn next_chunk(&mut self) -> Vec<Record> {
        let k = self.next_chunk;
        assert!(k < self.timeline.chunks, "no chunk {k}");
        self.next_chunk += 1;
        self.encoders.start_chunk(k);
        let start = self.timeline.chunk_start(k);
        let end = self.timeline.chunk_start(k + 1);
        // About 1.35 events per story on average.
        let stories = (self.shape.events / self.timeline.chunks * 100 / 135).max(1);
        for _ in 0..stories {
            let t = self.rng.range(start, end);
            let user = self.user();
            self.story(t, user, k);
        }
        self.plan_probes(k);
        let mut timed = Vec::new();
        while let Some(Reverse((t, seq))) = self.heap.peek().copied() {
            if t >= end {
                break;
            }
            self.heap.pop();
            let p = self.planned.remove(&seq).expect("planned");
            if let Some(r) = self.emit(t, seq, p, k) {
                timed.push((t, r.role.rank(), r));
            }
        }
        // Production order is the merge's order: event time, then interactions first.
        timed.sort_by_key(|(t, rank, _)| (*t, *rank));
        let mut records: Vec<Record> = timed.into_iter().map(|(_, _, r)| r).collect();
        // Follow-ups after the last chunk are never produced.
        if self.done() {
            self.heap.clear();
            self.planned.clear();
        }
        self.add_poison(k, &mut records);
        records
    }

    fn user(&mut self) -> u32 {
        let n = self.shape.users as u64;
        // A hot twentieth of the users gets a third of the stories: repeats, re-eligibility.
        if self.rng.chance(0.33) {
            self.rng.below((n / 20).max(1)) as u32
        } else {
            self.rng.below(n) as u32
        }
    }

    /// Before the input pauses, a probe trigger for one user of every task whose send comes
    /// due after the last event of the segment: every task then has a timer that the wall
    /// clock fires at the barrier, the connector's engine as well as the oracle's (a task with
    /// only cancelled timers left might otherwise advance in one and not in the other).
    fn plan_probes(&mut self, k: usize) {
        if !self.barriers.contains(&(k + 1)) {
            return;
        }
        let end = self.timeline.chunk_start(k + 1);
        let t = end - (end - self.timeline.chunk_start(k)) / 4;
        for u in self.probe_users.clone() {
            let plan = Plan::Interaction {
                campaign: PROBE_CAMPAIGN,
                kind: Some(K::WebhookReceived),
                qualifier: None,
            };
            self.plan(t, u, None, plan);
        }
    }

    fn plan(&mut self, t: i64, user: u32, tz: Option<&'static str>, plan: Plan) {
        if t >= self.timeline.t1 {
            return;
        }
        self.seq += 1;
        self.heap.push(Reverse((t, self.seq)));
        self.planned.insert(self.seq, Planned { user, tz, plan });
    }

    fn interaction(
        &mut self,
        t: i64,
        user: u32,
        tz: Option<&'static str>,
        campaign: &'static str,
        kind: InteractionKind,
        qualifier: Option<&'static str>,
    ) {
        let plan = Plan::Interaction {
            campaign,
            kind: Some(kind),
            qualifier,
        };
        self.plan(t, user, tz, plan);
    }

    fn user_event(
        &mut self,
        t: i64,
        user: u32,
        event_type: UserEventType,
        name: Option<&'static str>,
    ) {
        let plan = Plan::UserEvent {
            event_type: Some(event_type),
            name,
        };
        self.plan(t, user, None, plan);
    }

    /// Maybe `p`: an offset in `lo..hi` ms after `t`.
    fn later(&mut self, t: i64, lo: i64, hi: i64) -> i64 {
        t + self.rng.range(lo, hi)
    }

    fn zone(&mut self) -> Option<&'static str> {
        if self.rng.chance(0.5) {
            None
        } else {
            Some(*self.rng.pick(ZONES))
        }
    }

    fn emit(&mut self, t: i64, seq: u64, p: Planned, chunk: usize) -> Option<Record> {
        let user_id = format!("u{:06}", p.user);
        let event_id = format!("e{seq:08}");
        let properties = if self.rng.chance(0.2) {
            [("src".to_string(), "chaos".to_string())].into()
        } else {
            Default::default()
        };
        match p.plan {
            Plan::Interaction {
                campaign,
                kind,
                qualifier,
            } => {
                let i = Interaction {
                    event_id,
                    user_id: user_id.clone(),
                    campaign_id: campaign.to_string(),
                    kind: kind.unwrap_or(InteractionKind::Unknown),
                    qualifier: qualifier.map(str::to_string),
                    occurred_at: t,
                    user_time_zone: p.tz.map(str::to_string),
                    properties,
                };
                let newer = kind.is_none() || (chunk >= self.v2_from && self.rng.chance(0.5));
                let (value, writer) = if newer {
                    let symbol = kind.map_or(EMAIL_FORWARD, InteractionKind::symbol);
                    let hint = *self.rng.pick(&[None, Some("mobile")]);
                    (
                        self.encoders.interaction_v2(&i, symbol, hint),
                        Writer::NewerV2,
                    )
                } else {
                    (self.encoders.interaction(&i), Writer::Current)
                };
                self.count_writer(writer);
                Some(Record {
                    role: Role::Interactions,
                    key: user_id,
                    value,
                    content: Content::Event(InputEvent::Interaction(i)),
                })
            }
            Plan::UserEvent { event_type, name } => {
                let older = (self.v0_chunks.0..self.v0_chunks.1).contains(&chunk)
                    && (event_type.is_none() || (name.is_none() && self.rng.chance(0.5)));
                let mut e = UserEvent {
                    event_id,
                    user_id: user_id.clone(),
                    event_type: event_type.unwrap_or(UserEventType::Unknown),
                    name: name.map(str::to_string),
                    occurred_at: t,
                    user_time_zone: p.tz.map(str::to_string),
                    properties,
                };
                let (value, writer) = if older {
                    let symbol = match event_type {
                        None => REFUND,
                        Some(UserEventType::CustomEvent) => "CUSTOM_EVENT",
                        Some(UserEventType::Purchase) => "PURCHASE",
                        Some(UserEventType::SessionStart) => "SESSION_START",
                        Some(UserEventType::Unknown) => "UNKNOWN",
                    };
                    let bytes = self.encoders.user_event_v0(&e, symbol);
                    // What a reader of today's schema makes of it: the defaults.
                    e.name = None;
                    e.user_time_zone = None;
                    e.properties = Default::default();
                    (bytes, Writer::OlderV0)
                } else if event_type.is_none() {
                    return None;
                } else {
                    (self.encoders.user_event(&e), Writer::Current)
                };
                self.count_writer(writer);
                Some(Record {
                    role: Role::UserEvents,
                    key: user_id,
                    value,
                    content: Content::Event(InputEvent::UserEvent(e)),
                })
            }
        }
    }

    fn count_writer(&mut self, w: Writer) {
        let name = match w {
            Writer::Current => "current schemas",
            Writer::NewerV2 => "interaction writer v2",
            Writer::OlderV0 => "user-event writer v0",
        };
        *self.writer_counts.entry(name).or_default() += 1;
    }
}
