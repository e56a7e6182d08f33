//! The benchmark workload: a seeded stream of interactions and user events in which every
//! user lives through the follow-on's whole story — triggers, repeat triggers while a send is
//! pending, exceptions inside and outside the wait, sends — together with a model of the rule
//! that says which send-commands the stream must produce.
//!
//! The rule is the abandoned-cart example of the README: a `PUSH_RECEIVED` on campaign
//! `abandoned-cart` schedules the follow-on `abandoned-cart-email` after `delay`; a purchase
//! or a `PUSH_DIRECT_OPEN` on `abandoned-cart` inside the wait cancels it; a repeat trigger
//! while it is pending is ignored (`KEEP_FIRST`); a user is re-eligible `reeligible` after the
//! last send's due time.
//!
//! The mix, drawn per event (the kind first, then a user that fits it):
//!
//! | share | class | user drawn from |
//! |---|---|---|
//! | 30 % | trigger: `PUSH_RECEIVED` on `abandoned-cart` | users without a pending send |
//! | 10 % | repeat trigger: the same, while pending | users with a pending send |
//! | 10 % | exception inside the wait: purchase (⅔) or `PUSH_DIRECT_OPEN` on `abandoned-cart` (⅓) | users with a pending send |
//! |  5 % | exception outside any wait: the same events | users without a pending send |
//! | 45 % | other traffic: newsletter opens and clicks, session starts, custom events, pushes received and opened on another campaign | all users |
//!
//! Users are drawn uniformly; with the default of one user per 8 events every user sees
//! about 8 events, so most users meet every class. A trigger of a user who received the
//! follow-on less than `reeligible` ago is ignored by the rule. Event time advances by a
//! fixed step per event (backlog mode) or follows the wall clock (live mode), so timers come
//! due by stream time while the stream is read.
//!
//! The module is shared by the benchmark programs and the Kafka Streams comparison test
//! (`#[path]`-included), so it only depends on the crate's model.

#![allow(dead_code)]

use std::collections::BTreeMap;

use campaign_connector::model::{
    InputEvent, Interaction, InteractionKind, UserEvent, UserEventType,
};

/// The follow-on campaign of the workload.
pub const FOLLOW_ON: &str = "abandoned-cart-email";
/// Its trigger campaign.
pub const TRIGGER_CAMPAIGN: &str = "abandoned-cart";

/// The workload's shape.
#[derive(Debug, Clone)]
pub struct Params {
    pub seed: u64,
    pub users: u64,
    /// `occurred_at` of event 0 (backlog mode).
    pub start_ms: i64,
    /// Event-time step between consecutive events (backlog mode).
    pub step_ms: i64,
    /// The follow-on's delay.
    pub delay_ms: i64,
    /// The follow-on's re-eligibility after a send.
    pub reeligible_ms: i64,
}

/// The campaigns file of the workload's rule (campaigns-as-code).
pub fn campaigns_yaml(delay_ms: i64, reeligible_ms: i64) -> String {
    format!(
        r#"campaigns:
  - campaign_id: {TRIGGER_CAMPAIGN}
    name: Abandoned cart push
    status: ACTIVE
  - campaign_id: newsletter
    name: Weekly newsletter
    status: ACTIVE
  - campaign_id: price-drop
    name: Price drop push
    status: ACTIVE
  - campaign_id: {FOLLOW_ON}
    name: Abandoned cart, reminder email
    status: ACTIVE
    published_at: 2020-01-01T00:00:00Z
    follow_on:
      trigger: {{campaign_id: {TRIGGER_CAMPAIGN}, kinds: [PUSH_RECEIVED]}}
      delay: {}s
      exceptions:
        - purchase: {{}}
        - interaction: {{kinds: [PUSH_DIRECT_OPEN]}}
      reeligibility: {}s
      on_repeat_trigger: KEEP_FIRST
      message:
        channel: EMAIL
        template_id: cart-reminder-v3
        payload: {{subject: Your cart is waiting for you}}
"#,
        delay_ms / 1000,
        reeligible_ms / 1000
    )
}

/// What an event was drawn as.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    Trigger,
    RepeatTrigger,
    ExceptionInside,
    ExceptionOutside,
    Other,
}

/// A send the rule makes: user, trigger event id, due time.
pub type Send = (String, String, i64);

/// Counts of what the model decided.
#[derive(Debug, Default, Clone)]
pub struct Stats {
    pub events: u64,
    pub by_class: [u64; 5],
    pub scheduled: u64,
    pub cancelled: u64,
    pub already_pending: u64,
    pub not_reeligible: u64,
}

#[derive(Debug, Clone, Copy)]
struct Pending {
    triggered_at: i64,
    due_at: i64,
    trigger_seq: u64,
}

#[derive(Debug, Clone, Default)]
struct UserModel {
    pending: Option<Pending>,
    last_sent: Option<i64>,
}

/// The generator and its model of the rule.
pub struct Workload {
    p: Params,
    rng: u64,
    seq: u64,
    users: Vec<UserModel>,
    /// Users with a pending send (may hold some whose send is due: they fire when drawn).
    pool: Vec<u32>,
    /// Position of a user in `pool`, `u32::MAX` when absent.
    pos: Vec<u32>,
    /// Sends made so far by the model: (user, trigger seq, due).
    sent: Vec<(u32, u64, i64)>,
    pub stats: Stats,
}

/// The 20-character user id of user `n`.
pub fn user_id(n: u64) -> String {
    format!("user-{n:015}")
}

/// The event id of event `seq`.
pub fn event_id(seq: u64) -> String {
    format!("ev-{seq:012}")
}

const PLATFORMS: [&str; 3] = ["ios", "android", "web"];
const ZONES: [&str; 3] = ["Europe/Berlin", "America/New_York", "Asia/Tokyo"];

impl Workload {
    pub fn new(p: Params) -> Self {
        let n = p.users as usize;
        Self {
            rng: p.seed | 1,
            p,
            seq: 0,
            users: vec![UserModel::default(); n],
            pool: Vec::new(),
            pos: vec![u32::MAX; n],
            sent: Vec::new(),
            stats: Stats::default(),
        }
    }

    pub fn params(&self) -> &Params {
        &self.p
    }

    /// xorshift64*: small, deterministic, good enough to draw events.
    fn next_u64(&mut self) -> u64 {
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        self.rng.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    /// The time of the next event in backlog mode.
    pub fn next_time(&self) -> i64 {
        self.p.start_ms + self.seq as i64 * self.p.step_ms
    }

    /// The next event in backlog mode.
    pub fn next_event(&mut self) -> (Class, InputEvent) {
        let t = self.next_time();
        self.next_at(t)
    }

    fn pool_remove(&mut self, user: u32) {
        let i = self.pos[user as usize];
        if i == u32::MAX {
            return;
        }
        let last = self.pool.pop().expect("a pooled user");
        if last != user {
            self.pool[i as usize] = last;
            self.pos[last as usize] = i;
        }
        self.pos[user as usize] = u32::MAX;
    }

    /// Fires the user's send if it is due at `t` (the connector fires every timer due at or
    /// before a record's time before processing it). Returns whether a send is still pending.
    fn settle(&mut self, user: u32, t: i64) -> bool {
        let u = &mut self.users[user as usize];
        match u.pending {
            Some(p) if p.due_at <= t => {
                u.pending = None;
                u.last_sent = Some(p.due_at);
                self.sent.push((user, p.trigger_seq, p.due_at));
                self.pool_remove(user);
                false
            }
            Some(_) => true,
            None => false,
        }
    }

    /// A user with a send pending at `t`, if one is found.
    fn draw_pending(&mut self, t: i64) -> Option<u32> {
        while !self.pool.is_empty() {
            let i = self.below(self.pool.len() as u64) as usize;
            let user = self.pool[i];
            if self.settle(user, t) {
                return Some(user);
            }
        }
        None
    }

    /// A user without a send pending at `t`, if one is found in a few draws.
    fn draw_idle(&mut self, t: i64) -> Option<u32> {
        for _ in 0..16 {
            let user = self.below(self.p.users) as u32;
            if !self.settle(user, t) {
                return Some(user);
            }
        }
        None
    }

    /// The next event, at event time `t` (live mode: the caller reads the clock).
    pub fn next_at(&mut self, t: i64) -> (Class, InputEvent) {
        let seq = self.seq;
        self.seq += 1;
        let roll = self.below(100);
        let (class, user) = match roll {
            0..=29 => (Class::Trigger, self.draw_idle(t)),
            30..=39 => (Class::RepeatTrigger, self.draw_pending(t)),
            40..=49 => (Class::ExceptionInside, self.draw_pending(t)),
            50..=54 => (Class::ExceptionOutside, self.draw_idle(t)),
            _ => (Class::Other, None),
        };
        let (class, user) = match (class, user) {
            (Class::Other, _) | (_, None) => {
                let user = self.below(self.p.users) as u32;
                self.settle(user, t);
                (Class::Other, user)
            }
            (class, Some(user)) => (class, user),
        };
        let event = self.event(seq, class, user, t);
        self.apply(seq, user, &event);
        self.stats.events += 1;
        self.stats.by_class[class as usize] += 1;
        (class, event)
    }

    fn event(&mut self, seq: u64, class: Class, user: u32, t: i64) -> InputEvent {
        let user_id = user_id(user as u64);
        let platform = PLATFORMS[(user % 3) as usize];
        let zone = (user % 3 == 0).then(|| ZONES[(user / 3 % 3) as usize].to_string());
        let properties = BTreeMap::from([
            ("platform".to_string(), platform.to_string()),
            ("app_version".to_string(), "7.3.1".to_string()),
        ]);
        let interaction = |campaign: &str, kind| {
            InputEvent::Interaction(Interaction {
                event_id: event_id(seq),
                user_id: user_id.clone(),
                campaign_id: campaign.to_string(),
                kind,
                qualifier: None,
                occurred_at: t,
                user_time_zone: zone.clone(),
                properties: properties.clone(),
            })
        };
        let user_event = |event_type, name: Option<&str>| {
            InputEvent::UserEvent(UserEvent {
                event_id: event_id(seq),
                user_id: user_id.clone(),
                event_type,
                name: name.map(str::to_string),
                occurred_at: t,
                user_time_zone: zone.clone(),
                properties: properties.clone(),
            })
        };
        let pick = self.below(100);
        match class {
            Class::Trigger | Class::RepeatTrigger => {
                interaction(TRIGGER_CAMPAIGN, InteractionKind::PushReceived)
            }
            Class::ExceptionInside | Class::ExceptionOutside => {
                if pick < 67 {
                    user_event(UserEventType::Purchase, Some("sku-1042"))
                } else {
                    interaction(TRIGGER_CAMPAIGN, InteractionKind::PushDirectOpen)
                }
            }
            Class::Other => match pick {
                0..=34 => interaction("newsletter", InteractionKind::EmailOpen),
                35..=49 => interaction("newsletter", InteractionKind::EmailClick),
                50..=74 => user_event(UserEventType::SessionStart, None),
                75..=79 => user_event(UserEventType::CustomEvent, Some("viewed_item")),
                80..=89 => interaction("price-drop", InteractionKind::PushReceived),
                _ => interaction("price-drop", InteractionKind::PushDirectOpen),
            },
        }
    }

    /// The rule, for one event of `user` (its due send, if any, already fired by `settle`).
    fn apply(&mut self, seq: u64, user: u32, event: &InputEvent) {
        let t = event.occurred_at();
        let (exception, trigger) = match event {
            InputEvent::Interaction(i) => (
                i.campaign_id == TRIGGER_CAMPAIGN && i.kind == InteractionKind::PushDirectOpen,
                i.campaign_id == TRIGGER_CAMPAIGN && i.kind == InteractionKind::PushReceived,
            ),
            InputEvent::UserEvent(e) => (e.event_type == UserEventType::Purchase, false),
        };
        let (delay, reeligible) = (self.p.delay_ms, self.p.reeligible_ms);
        // Exceptions before triggers; an exception counts inside [triggered_at, due_at).
        if exception {
            if let Some(p) = self.users[user as usize].pending {
                if p.triggered_at <= t && t < p.due_at {
                    self.users[user as usize].pending = None;
                    self.stats.cancelled += 1;
                    self.pool_remove(user);
                }
            }
        }
        let u = &mut self.users[user as usize];
        if trigger {
            if u.last_sent.is_some_and(|last| t < last + reeligible) {
                self.stats.not_reeligible += 1;
            } else if u.pending.is_some() {
                self.stats.already_pending += 1;
            } else {
                u.pending = Some(Pending {
                    triggered_at: t,
                    due_at: t + delay,
                    trigger_seq: seq,
                });
                self.stats.scheduled += 1;
                self.pos[user as usize] = self.pool.len() as u32;
                self.pool.push(user);
            }
        }
    }

    /// Every send the rule makes once stream time reaches `cutoff`: the sends already made
    /// and the pending ones due by then. Sorted.
    pub fn sends_until(&self, cutoff: i64) -> Vec<Send> {
        let mut out: Vec<Send> = self
            .sent
            .iter()
            .filter(|(_, _, due)| *due <= cutoff)
            .map(|&(u, seq, due)| (user_id(u as u64), event_id(seq), due))
            .chain(self.users.iter().enumerate().filter_map(|(u, m)| {
                m.pending
                    .filter(|p| p.due_at <= cutoff)
                    .map(|p| (user_id(u as u64), event_id(p.trigger_seq), p.due_at))
            }))
            .collect();
        out.sort();
        out
    }

    /// Sends still pending after stream time `cutoff`.
    pub fn pending_after(&self, cutoff: i64) -> u64 {
        self.users
            .iter()
            .filter(|m| m.pending.is_some_and(|p| p.due_at > cutoff))
            .count() as u64
    }

    /// Events generated so far.
    pub fn generated(&self) -> u64 {
        self.seq
    }
}

/// The share of `part` in `whole`, in percent.
pub fn percent(part: u64, whole: u64) -> f64 {
    100.0 * part as f64 / whole.max(1) as f64
}

impl Stats {
    /// One line: the mix as drawn and what the rule made of it.
    pub fn describe(&self) -> String {
        let e = self.events;
        let c = &self.by_class;
        format!(
            "{e} events: {:.1} % triggers, {:.1} % repeat triggers, {:.1} % exceptions inside a wait, \
             {:.1} % outside, {:.1} % other; {} timers scheduled, {:.1} % of them cancelled; \
             {} triggers ignored as already pending, {} as not re-eligible",
            percent(c[0], e),
            percent(c[1], e),
            percent(c[2], e),
            percent(c[3], e),
            percent(c[4], e),
            self.scheduled,
            percent(self.cancelled, self.scheduled),
            self.already_pending,
            self.not_reeligible
        )
    }
}
