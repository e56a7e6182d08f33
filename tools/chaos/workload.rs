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
use crate::encode::{Encoders, EMAIL_FORWARD, REFUND};
use crate::rng::Rng;
use crate::timeline::{Timeline, DAY, HOUR, MIN};

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

    pub fn done(&self) -> bool {
        self.next_chunk >= self.timeline.chunks
    }

    /// The next chunk's records in production order (event-time order; poison anywhere).
    pub fn next_chunk(&mut self) -> Vec<Record> {
        let k = self.next_chunk;
        assert!(k < self.timeline.chunks, "no chunk {k}");
        self.next_chunk += 1;
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

    /// One user's story starting at `t`: the trigger of a rule and what may follow.
    fn story(&mut self, t: i64, u: u32, chunk: usize) {
        use UserEventType::*;
        let tz = self.zone();
        let r = &mut self.rng;
        let roll = r.below(100);
        let c = |x: f64, r: &mut Rng| r.chance(x);
        match roll {
            // Abandoned cart: 1 day, cancelled by a purchase or opening the push.
            0..=13 => {
                self.interaction(t, u, tz, "abandoned-cart", K::PushReceived, None);
                if c(0.4, &mut self.rng) {
                    let at = self.later(t, 0, 36 * HOUR);
                    let product = *self.rng.pick(&[None, Some("sku-1"), Some("sku-7")]);
                    self.user_event(at, u, Purchase, product);
                }
                if c(0.25, &mut self.rng) {
                    let at = self.later(t, MIN, 30 * HOUR);
                    self.interaction(at, u, tz, "abandoned-cart", K::PushDirectOpen, None);
                }
                if c(0.15, &mut self.rng) {
                    let at = self.later(t, MIN, 2 * DAY);
                    self.interaction(at, u, tz, "abandoned-cart", K::PushReceived, None);
                }
            }
            // Re-send to non-openers, re-eligible after a day; clicks start 30-day waits.
            14..=25 => {
                self.interaction(t, u, tz, "newsletter", K::EmailReceived, None);
                if c(0.5, &mut self.rng) {
                    let at = self.later(t, MIN, 3 * DAY);
                    self.interaction(at, u, tz, "newsletter", K::EmailOpen, None);
                }
                if c(0.25, &mut self.rng) {
                    let at = self.later(t, MIN, 3 * DAY);
                    let kind = *self.rng.pick(&[K::EmailClick, K::EmailAliasClick]);
                    self.interaction(at, u, tz, "newsletter", kind, Some("cta"));
                    if c(0.3, &mut self.rng) {
                        let at = self.later(at, MIN, 2 * DAY);
                        self.user_event(at, u, CustomEvent, Some("churned"));
                    }
                }
                if c(0.3, &mut self.rng) {
                    let at = self.later(t, 20 * HOUR, 4 * DAY);
                    self.interaction(at, u, tz, "newsletter", K::EmailReceived, None);
                }
            }
            // Promo chain: immediate, re-eligible after 12 h; the windowed rule.
            26..=35 => {
                self.interaction(t, u, tz, "free-shipping", K::PushDirectOpen, None);
                if c(0.35, &mut self.rng) {
                    let at = self.later(t, MIN, DAY);
                    self.interaction(at, u, tz, "free-shipping", K::PushDirectOpen, None);
                }
                if c(0.3, &mut self.rng) {
                    let at = self.later(t, 0, DAY);
                    self.interaction(at, u, tz, "free-shipping", K::PushButtonClick, None);
                }
            }
            // Onboarding with a qualifier; views for the rule published mid-run.
            36..=45 => {
                let q = *self.rng.pick(&[Some("get-started"), Some("later"), None]);
                let kind = *self
                    .rng
                    .pick(&[K::InAppMessageClick, K::InAppMessageButtonClick]);
                self.interaction(t, u, tz, "welcome-in-app", kind, q);
                if c(0.4, &mut self.rng) {
                    let at = self.later(t, 0, 2 * HOUR);
                    self.interaction(at, u, tz, "welcome-in-app", K::InAppMessageView, None);
                }
            }
            // Control group; session starts cancel.
            46..=52 => {
                self.interaction(t, u, tz, "ab-test", K::ControlGroupEnrolled, None);
                if c(0.4, &mut self.rng) {
                    let at = self.later(t, 0, 12 * HOUR);
                    self.user_event(at, u, SessionStart, None);
                }
            }
            // Monday 09:00 local time, restarted by repeats, cancelled by unsubscribing.
            53..=60 => {
                let kind = *self.rng.pick(&[K::PushReceived, K::PushButtonClick]);
                self.interaction(t, u, tz, "weekly-push", kind, None);
                if c(0.3, &mut self.rng) {
                    let at = self.later(t, HOUR, 3 * DAY);
                    self.interaction(at, u, tz, "weekly-push", K::PushReceived, None);
                }
                if c(0.2, &mut self.rng) {
                    let at = self.later(t, 0, 4 * DAY);
                    self.user_event(at, u, CustomEvent, Some("unsubscribed"));
                }
            }
            // Two calendar days later at 10:30 New York time.
            61..=67 => {
                self.interaction(t, u, tz, "reminder-sms", K::SmsReceived, None);
                if c(0.3, &mut self.rng) {
                    let at = self.later(t, MIN, DAY);
                    self.interaction(at, u, tz, "reminder-sms", K::SmsShortLinkClick, None);
                }
                if c(0.3, &mut self.rng) {
                    let at = self.later(t, 0, 3 * DAY);
                    let product = *self.rng.pick(&[Some("sku-7"), Some("sku-2")]);
                    self.user_event(at, u, Purchase, product);
                }
                if c(0.2, &mut self.rng) {
                    let at = self.later(t, 0, 3 * DAY);
                    self.user_event(at, u, SessionStart, None);
                }
            }
            // News feed card, 90 minutes, dismissals cancel; re-eligible after 6 h.
            68..=74 => {
                let kind = *self.rng.pick(&[K::NewsFeedCardClick, K::NewsFeedCardView]);
                self.interaction(t, u, tz, "feed-card", kind, None);
                if c(0.3, &mut self.rng) {
                    let at = self.later(t, 0, 3 * HOUR);
                    self.interaction(at, u, tz, "feed-card", K::ContentCardDismiss, None);
                }
                if c(0.3, &mut self.rng) {
                    let at = self.later(t, HOUR, DAY);
                    self.interaction(at, u, tz, "feed-card", K::NewsFeedCardClick, None);
                }
            }
            // The campaigns the edits change.
            75..=79 => {
                self.interaction(t, u, tz, "flash-sale", K::PushReceived, None);
            }
            80..=84 => {
                self.interaction(t, u, tz, "ab-test", K::InAppMessageClick, None);
                if c(0.3, &mut self.rng) {
                    let at = self.later(t, HOUR, 2 * DAY);
                    self.interaction(at, u, tz, "ab-test", K::InAppMessageClick, None);
                }
                if c(0.2, &mut self.rng) {
                    let at = self.later(t, 0, 2 * DAY);
                    self.user_event(at, u, CustomEvent, Some("churned"));
                }
            }
            85..=89 => {
                let q = *self
                    .rng
                    .pick(&[Some("order-completed"), Some("cart-viewed")]);
                self.interaction(t, u, tz, "checkout", K::ConversionEvent, q);
                if c(0.3, &mut self.rng) {
                    let at = self.later(t, 0, 6 * HOUR);
                    self.user_event(at, u, Purchase, Some("sku-1"));
                }
            }
            // Triggers that must never send: a draft campaign, one missing from the catalog.
            90..=91 => {
                let campaign = *self.rng.pick(&["draft-campaign", "ghost-campaign"]);
                self.interaction(t, u, tz, campaign, K::PushReceived, None);
            }
            // A kind only the newer producer knows.
            92..=93 if chunk >= self.v2_from => {
                self.plan(
                    t,
                    u,
                    tz,
                    Plan::Interaction {
                        campaign: "newsletter",
                        kind: None,
                        qualifier: None,
                    },
                );
            }
            // A refund only the older producer knows.
            92..=93 if (self.v0_chunks.0..self.v0_chunks.1).contains(&chunk) => {
                self.plan(
                    t,
                    u,
                    None,
                    Plan::UserEvent {
                        event_type: None,
                        name: None,
                    },
                );
            }
            // Noise: events no rule cares about.
            _ => {
                let e = *self.rng.pick(&[
                    (SessionStart, None),
                    (CustomEvent, Some("viewed-item")),
                    (Purchase, Some("sku-3")),
                ]);
                self.user_event(t, u, e.0, e.1);
            }
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

    fn add_poison(&mut self, k: usize, records: &mut Vec<Record>) {
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
                full[..10 + (full.len() - 10) / 2].to_vec()
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
