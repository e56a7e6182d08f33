//! The records of SPEC §2 and §4 as Rust types.
//!
//! These are the wire records: every field name and enum symbol is the one in
//! `schemas/*.avsc`, and `tests/schemas.rs` derives the Avro schema of each type and
//! compares it with the file, so the two cannot drift. The engine keeps its own compact
//! representation internally and converts at the edges.
//!
//! Timestamps are epoch milliseconds (`i64`, Avro `timestamp-millis`).

use std::collections::{BTreeMap, HashSet};

use apache_avro::schema::{Name, NamespaceRef, Schema, UnionSchema};
use apache_avro::AvroSchema;
use serde::{Deserialize, Serialize};

/// Epoch milliseconds, UTC.
pub type TimestampMs = i64;

/// A string → string map (`map<string>` in Avro). Ordered, so that records compare and
/// print deterministically.
pub type Properties = BTreeMap<String, String>;

/// Avro schema of a `map<string>` field.
fn string_map_schema(_: &mut HashSet<Name>, _: NamespaceRef) -> Schema {
    Schema::map(Schema::String).build()
}

/// Avro schema of a `timestamp-millis` field (used with `#[avro(with)]`).
fn timestamp_schema(_: &mut HashSet<Name>, _: NamespaceRef) -> Schema {
    Schema::TimestampMillis
}

/// Avro schema of an optional `timestamp-millis` field.
fn optional_timestamp_schema(_: &mut HashSet<Name>, _: NamespaceRef) -> Schema {
    Schema::Union(
        UnionSchema::new(vec![Schema::Null, Schema::TimestampMillis])
            .expect("null and timestamp-millis form a valid union"),
    )
}

/// The interaction kinds of SPEC §2. `Unknown` is the Avro enum default: a kind added by a
/// newer producer decodes as `Unknown`, is counted, and triggers nothing.
#[derive(
    Debug,
    Clone,
    Copy,
    PartialEq,
    Eq,
    Hash,
    PartialOrd,
    Ord,
    Serialize,
    Deserialize,
    AvroSchema,
    Default,
)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
#[avro(namespace = "campaign_connector")]
pub enum InteractionKind {
    InAppMessageView,
    InAppMessageClick,
    InAppMessageButtonClick,
    EmailClick,
    EmailAliasClick,
    EmailOpen,
    PushDirectOpen,
    PushButtonClick,
    PushStoryPageClick,
    ConversionEvent,
    EmailReceived,
    SmsReceived,
    SmsShortLinkClick,
    PushReceived,
    WebhookReceived,
    ControlGroupEnrolled,
    ContentCardView,
    ContentCardClick,
    ContentCardDismiss,
    NewsFeedCardView,
    NewsFeedCardClick,
    #[default]
    Unknown,
}

impl InteractionKind {
    /// Every known kind (without `Unknown`), in schema order.
    pub const KNOWN: [InteractionKind; 21] = [
        Self::InAppMessageView,
        Self::InAppMessageClick,
        Self::InAppMessageButtonClick,
        Self::EmailClick,
        Self::EmailAliasClick,
        Self::EmailOpen,
        Self::PushDirectOpen,
        Self::PushButtonClick,
        Self::PushStoryPageClick,
        Self::ConversionEvent,
        Self::EmailReceived,
        Self::SmsReceived,
        Self::SmsShortLinkClick,
        Self::PushReceived,
        Self::WebhookReceived,
        Self::ControlGroupEnrolled,
        Self::ContentCardView,
        Self::ContentCardClick,
        Self::ContentCardDismiss,
        Self::NewsFeedCardView,
        Self::NewsFeedCardClick,
    ];

    /// The schema symbol, e.g. `EMAIL_OPEN`.
    pub fn symbol(self) -> &'static str {
        match self {
            Self::InAppMessageView => "IN_APP_MESSAGE_VIEW",
            Self::InAppMessageClick => "IN_APP_MESSAGE_CLICK",
            Self::InAppMessageButtonClick => "IN_APP_MESSAGE_BUTTON_CLICK",
            Self::EmailClick => "EMAIL_CLICK",
            Self::EmailAliasClick => "EMAIL_ALIAS_CLICK",
            Self::EmailOpen => "EMAIL_OPEN",
            Self::PushDirectOpen => "PUSH_DIRECT_OPEN",
            Self::PushButtonClick => "PUSH_BUTTON_CLICK",
            Self::PushStoryPageClick => "PUSH_STORY_PAGE_CLICK",
            Self::ConversionEvent => "CONVERSION_EVENT",
            Self::EmailReceived => "EMAIL_RECEIVED",
            Self::SmsReceived => "SMS_RECEIVED",
            Self::SmsShortLinkClick => "SMS_SHORT_LINK_CLICK",
            Self::PushReceived => "PUSH_RECEIVED",
            Self::WebhookReceived => "WEBHOOK_RECEIVED",
            Self::ControlGroupEnrolled => "CONTROL_GROUP_ENROLLED",
            Self::ContentCardView => "CONTENT_CARD_VIEW",
            Self::ContentCardClick => "CONTENT_CARD_CLICK",
            Self::ContentCardDismiss => "CONTENT_CARD_DISMISS",
            Self::NewsFeedCardView => "NEWS_FEED_CARD_VIEW",
            Self::NewsFeedCardClick => "NEWS_FEED_CARD_CLICK",
            Self::Unknown => "UNKNOWN",
        }
    }

    /// Parses a known symbol; `None` for anything else (including `UNKNOWN`, which is
    /// never a valid kind to configure).
    pub fn from_symbol(symbol: &str) -> Option<Self> {
        Self::KNOWN.into_iter().find(|k| k.symbol() == symbol)
    }
}

impl std::fmt::Display for InteractionKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.symbol())
    }
}

/// An interaction of a user with a campaign or news feed card (topic `campaign-interactions`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, AvroSchema)]
#[avro(namespace = "campaign_connector")]
pub struct Interaction {
    pub event_id: String,
    pub user_id: String,
    pub campaign_id: String,
    pub kind: InteractionKind,
    #[serde(default)]
    pub qualifier: Option<String>,
    #[avro(with = timestamp_schema)]
    pub occurred_at: TimestampMs,
    #[serde(default)]
    pub user_time_zone: Option<String>,
    #[serde(default)]
    #[avro(with = string_map_schema, default = "{}")]
    pub properties: Properties,
}

/// Types of user events. `Unknown` is the Avro enum default.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, AvroSchema, Default)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
#[avro(namespace = "campaign_connector")]
pub enum UserEventType {
    CustomEvent,
    Purchase,
    SessionStart,
    #[default]
    Unknown,
}

/// A user event (topic `user-events`): custom events, purchases, session starts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, AvroSchema)]
#[avro(namespace = "campaign_connector")]
pub struct UserEvent {
    pub event_id: String,
    pub user_id: String,
    #[serde(rename = "type")]
    pub event_type: UserEventType,
    /// Custom event name, or product id for a purchase.
    #[serde(default)]
    pub name: Option<String>,
    #[avro(with = timestamp_schema)]
    pub occurred_at: TimestampMs,
    #[serde(default)]
    pub user_time_zone: Option<String>,
    #[serde(default)]
    #[avro(with = string_map_schema, default = "{}")]
    pub properties: Properties,
}

/// One input record of a task: either input topic's record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InputEvent {
    Interaction(Interaction),
    UserEvent(UserEvent),
}

impl InputEvent {
    pub fn user_id(&self) -> &str {
        match self {
            Self::Interaction(i) => &i.user_id,
            Self::UserEvent(e) => &e.user_id,
        }
    }
    pub fn event_id(&self) -> &str {
        match self {
            Self::Interaction(i) => &i.event_id,
            Self::UserEvent(e) => &e.event_id,
        }
    }
    pub fn occurred_at(&self) -> TimestampMs {
        match self {
            Self::Interaction(i) => i.occurred_at,
            Self::UserEvent(e) => e.occurred_at,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, AvroSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
#[avro(namespace = "campaign_connector")]
pub enum CampaignKind {
    Campaign,
    NewsFeedCard,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, AvroSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
#[avro(namespace = "campaign_connector")]
pub enum CampaignStatus {
    Draft,
    Active,
    Stopped,
    Archived,
}

/// A campaign in the catalog (topic `campaigns`, compacted, key `campaign_id`).
/// A campaign with a `follow_on` rule is a follow-on campaign.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, AvroSchema)]
#[avro(namespace = "campaign_connector")]
pub struct Campaign {
    pub campaign_id: String,
    pub name: String,
    pub kind: CampaignKind,
    pub status: CampaignStatus,
    /// Increases on every edit.
    pub version: i64,
    /// First time the campaign became `ACTIVE`.
    #[serde(default)]
    #[avro(with = optional_timestamp_schema, default = "null")]
    pub published_at: Option<TimestampMs>,
    #[serde(default)]
    #[avro(with = optional_timestamp_schema, default = "null")]
    pub starts_at: Option<TimestampMs>,
    #[serde(default)]
    #[avro(with = optional_timestamp_schema, default = "null")]
    pub ends_at: Option<TimestampMs>,
    #[serde(default)]
    pub follow_on: Option<FollowOnRule>,
    /// For this version of a follow-on only: triggers from this time on count even before
    /// `published_at` (an explicit backfill start, at most `max_backfill` before it).
    /// Only records the connector has not processed yet are affected: it never reads
    /// input again. `null`: no backfill.
    #[serde(default)]
    #[avro(with = optional_timestamp_schema, default = "null")]
    pub backfill_since: Option<TimestampMs>,
    /// `LIVE`: sends for real. `SHADOW`: evaluated like any follow-on, but every send-command
    /// and decision goes to the shadow topic instead (id `<id>@shadow`). Records written
    /// before the field read as `LIVE`.
    #[serde(default)]
    #[avro(default = "\"LIVE\"")]
    pub mode: CampaignMode,
}

/// Whether a follow-on sends for real or only writes what it would send to the shadow
/// topic. No enum default: a mode added later must not be read as `LIVE` by an older reader
/// (it would send for real), so such a record fails to decode instead.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, AvroSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
#[avro(namespace = "campaign_connector")]
pub enum CampaignMode {
    Live,
    Shadow,
}

// Written out rather than derived: the derived `#[default]` would also become the Avro
// enum's default symbol, which is exactly what the mode must not have.
#[allow(clippy::derivable_impls)]
impl Default for CampaignMode {
    fn default() -> Self {
        Self::Live
    }
}

impl CampaignMode {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Live => "LIVE",
            Self::Shadow => "SHADOW",
        }
    }
}

/// The suffix of a shadow follow-on's id: `campaigns publish --shadow` publishes follow-on
/// `cart-email` as `cart-email@shadow`, and validation keeps the suffix and the mode
/// together, so a follow-on's id alone says where its output goes.
pub const SHADOW_SUFFIX: &str = "@shadow";

impl Campaign {
    /// The id of the shadow version of follow-on `live_id`.
    pub fn shadow_id(live_id: &str) -> String {
        format!("{live_id}{SHADOW_SUFFIX}")
    }

    /// The live follow-on a shadow id shadows (`cart-email@shadow` → `cart-email`).
    pub fn live_id_of(shadow_id: &str) -> Option<&str> {
        shadow_id
            .strip_suffix(SHADOW_SUFFIX)
            .filter(|id| !id.is_empty())
    }
}

/// What makes a campaign a follow-on: its trigger, delay, exceptions and message.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, AvroSchema)]
#[avro(namespace = "campaign_connector")]
pub struct FollowOnRule {
    pub trigger: Trigger,
    pub delay: Delay,
    /// IANA zone for local-time delays when the trigger event has no `user_time_zone`.
    #[serde(default)]
    pub time_zone: Option<String>,
    #[serde(default)]
    #[avro(default = "[]")]
    pub exceptions: Vec<ExceptionMatcher>,
    pub reeligibility: Reeligibility,
    pub on_repeat_trigger: RepeatTrigger,
    pub overdue: Overdue,
    pub message: Message,
}

/// Interactions that trigger a follow-on: on `campaign_id`, of one of `kinds`, and with
/// `qualifier` when it is set (`null` matches any qualifier).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, AvroSchema)]
#[avro(namespace = "campaign_connector")]
pub struct Trigger {
    pub campaign_id: String,
    pub kinds: Vec<InteractionKind>,
    #[serde(default)]
    pub qualifier: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, AvroSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
#[avro(namespace = "campaign_connector")]
pub enum DelayType {
    Immediate,
    After,
    NextWeekday,
    CalendarDays,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, AvroSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
#[avro(namespace = "campaign_connector")]
pub enum Weekday {
    Monday,
    Tuesday,
    Wednesday,
    Thursday,
    Friday,
    Saturday,
    Sunday,
}

/// The schedule delay. Which optional fields are set depends on `type`:
/// `AFTER` needs `seconds`; `NEXT_WEEKDAY` needs `weekday` and `local_time`;
/// `CALENDAR_DAYS` needs `days` (≥ 1) and `local_time`. `local_time` is `HH:MM` or `HH:MM:SS`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, AvroSchema)]
#[avro(namespace = "campaign_connector")]
pub struct Delay {
    #[serde(rename = "type")]
    pub delay_type: DelayType,
    #[serde(default)]
    pub seconds: Option<i64>,
    #[serde(default)]
    pub weekday: Option<Weekday>,
    #[serde(default)]
    pub days: Option<i32>,
    #[serde(default)]
    pub local_time: Option<String>,
}

impl Delay {
    pub fn immediate() -> Self {
        Self {
            delay_type: DelayType::Immediate,
            seconds: None,
            weekday: None,
            days: None,
            local_time: None,
        }
    }
    pub fn after_seconds(seconds: i64) -> Self {
        Self {
            delay_type: DelayType::After,
            seconds: Some(seconds),
            ..Self::immediate()
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, AvroSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
#[avro(namespace = "campaign_connector")]
pub enum ExceptionType {
    Interaction,
    CustomEvent,
    Purchase,
    SessionStart,
}

/// An event that cancels a pending send. `INTERACTION`: one of `interaction_kinds` on
/// `campaign_id` (`null` = the trigger campaign). `CUSTOM_EVENT`: a custom event named
/// `name`. `PURCHASE`: a purchase, of product `name` when set. `SESSION_START`: any session start.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, AvroSchema)]
#[avro(namespace = "campaign_connector")]
pub struct ExceptionMatcher {
    #[serde(rename = "type")]
    pub exception_type: ExceptionType,
    #[serde(default)]
    pub campaign_id: Option<String>,
    #[serde(default)]
    #[avro(default = "[]")]
    pub interaction_kinds: Vec<InteractionKind>,
    #[serde(default)]
    pub name: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, AvroSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
#[avro(namespace = "campaign_connector")]
pub enum ReeligibilityPolicy {
    Never,
    After,
}

/// `NEVER`: at most one send per user. `AFTER`: eligible again `seconds` after the last send.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, AvroSchema)]
#[avro(namespace = "campaign_connector")]
pub struct Reeligibility {
    pub policy: ReeligibilityPolicy,
    #[serde(default)]
    pub seconds: Option<i64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, AvroSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
#[avro(namespace = "campaign_connector")]
pub enum RepeatTrigger {
    KeepFirst,
    Restart,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, AvroSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
#[avro(namespace = "campaign_connector")]
pub enum OverduePolicy {
    Send,
    DropIfLateBy,
}

/// What to do with a timer that fires late: `SEND`, or drop it when later than `seconds`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, AvroSchema)]
#[avro(namespace = "campaign_connector")]
pub struct Overdue {
    pub policy: OverduePolicy,
    #[serde(default)]
    pub seconds: Option<i64>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, AvroSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
#[avro(namespace = "campaign_connector")]
pub enum Channel {
    Email,
    Push,
    Sms,
    InApp,
    ContentCard,
    Webhook,
}

/// The follow-on message to send.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, AvroSchema)]
#[avro(namespace = "campaign_connector")]
pub struct Message {
    pub channel: Channel,
    pub template_id: String,
    #[serde(default)]
    #[avro(with = string_map_schema, default = "{}")]
    pub payload: Properties,
}

/// The trigger interaction a send-command or pending send came from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, AvroSchema)]
#[avro(namespace = "campaign_connector")]
pub struct TriggerRef {
    pub campaign_id: String,
    pub kind: InteractionKind,
    pub event_id: String,
    #[avro(with = timestamp_schema)]
    pub occurred_at: TimestampMs,
}

/// The connector's output (topic `send-commands`, key `user_id`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, AvroSchema)]
#[avro(namespace = "campaign_connector")]
pub struct SendCommand {
    /// Deterministic: derived from follow-on id, version, user id and trigger event id.
    pub command_id: String,
    pub user_id: String,
    /// The follow-on campaign.
    pub campaign_id: String,
    pub campaign_version: i64,
    pub channel: Channel,
    pub template_id: String,
    #[avro(with = string_map_schema)]
    pub payload: Properties,
    pub trigger: TriggerRef,
    #[avro(with = timestamp_schema)]
    pub due_at: TimestampMs,
    #[avro(with = timestamp_schema)]
    pub emitted_at: TimestampMs,
}

/// What the connector decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, AvroSchema, Default)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
#[avro(namespace = "campaign_connector")]
pub enum DecisionOutcome {
    // A pending send was scheduled.
    Scheduled,
    // A trigger was ignored; `reason` says why.
    Ignored,
    // A pending send was cancelled by `cause_event_id` (an exception, or a restart).
    Cancelled,
    // A pending send came due and its send-command was emitted.
    Fired,
    // A pending send was dropped without sending; `reason` says why.
    Dropped,
    // An immediate follow-on's send-command was emitted.
    Sent,
    #[default]
    Unknown,
}

/// Why. The snake_case symbols are the reasons named in SPEC §3.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, AvroSchema, Default)]
#[serde(rename_all = "snake_case")]
#[avro(namespace = "campaign_connector")]
pub enum DecisionReason {
    // Scheduled by a trigger.
    Trigger,
    // `RESTART`: the pending send was replaced by a newer trigger (cancelled, then scheduled).
    Restart,
    FollowOnInactive,
    TriggerCampaignInactive,
    BeforePublish,
    OutsideWindow,
    DueAfterEnd,
    NotReeligible,
    AlreadyPending,
    // Cancelled by an exception event.
    Exception,
    // Fired because its due time was reached.
    Due,
    // Sent at once (`IMMEDIATE` delay).
    Immediate,
    // The follow-on was deleted from the catalog (tombstone).
    FollowOnDeleted,
    // Came due at or after the follow-on's `ends_at`.
    PastEnd,
    // Fired later than the `DROP_IF_LATE_BY` bound.
    Overdue,
    // Scheduled, or sent at once, for a trigger before `published_at` that counted only
    // because of the version's backfill start.
    Backfill,
    #[default]
    Unknown,
}

impl DecisionReason {
    pub const ALL: [DecisionReason; 17] = [
        Self::Trigger,
        Self::Restart,
        Self::FollowOnInactive,
        Self::TriggerCampaignInactive,
        Self::BeforePublish,
        Self::OutsideWindow,
        Self::DueAfterEnd,
        Self::NotReeligible,
        Self::AlreadyPending,
        Self::Exception,
        Self::Due,
        Self::Immediate,
        Self::FollowOnDeleted,
        Self::PastEnd,
        Self::Overdue,
        Self::Backfill,
        Self::Unknown,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Trigger => "trigger",
            Self::Restart => "restart",
            Self::FollowOnInactive => "follow_on_inactive",
            Self::TriggerCampaignInactive => "trigger_campaign_inactive",
            Self::BeforePublish => "before_publish",
            Self::OutsideWindow => "outside_window",
            Self::DueAfterEnd => "due_after_end",
            Self::NotReeligible => "not_reeligible",
            Self::AlreadyPending => "already_pending",
            Self::Exception => "exception",
            Self::Due => "due",
            Self::Immediate => "immediate",
            Self::FollowOnDeleted => "follow_on_deleted",
            Self::PastEnd => "past_end",
            Self::Overdue => "overdue",
            Self::Backfill => "backfill",
            Self::Unknown => "unknown",
        }
    }
}

impl DecisionOutcome {
    pub const ALL: [DecisionOutcome; 7] = [
        Self::Scheduled,
        Self::Ignored,
        Self::Cancelled,
        Self::Fired,
        Self::Dropped,
        Self::Sent,
        Self::Unknown,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Scheduled => "SCHEDULED",
            Self::Ignored => "IGNORED",
            Self::Cancelled => "CANCELLED",
            Self::Fired => "FIRED",
            Self::Dropped => "DROPPED",
            Self::Sent => "SENT",
            Self::Unknown => "UNKNOWN",
        }
    }
}

/// Where an input record came from.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize, AvroSchema)]
#[avro(namespace = "campaign_connector")]
pub struct InputCoordinates {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
}

/// One record of the decision log (optional topic `connector-decisions`): answers "why
/// did / didn't user X get follow-on F".
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, AvroSchema)]
#[avro(namespace = "campaign_connector")]
pub struct Decision {
    pub user_id: String,
    /// The follow-on campaign.
    pub follow_on_id: String,
    /// The follow-on's version the decision used (`null` when the follow-on is not in the catalog).
    #[serde(default)]
    pub follow_on_version: Option<i64>,
    pub outcome: DecisionOutcome,
    pub reason: DecisionReason,
    /// Set for `FIRED` and `SENT`.
    #[serde(default)]
    pub command_id: Option<String>,
    /// The trigger of the pending send or send concerned.
    #[serde(default)]
    pub trigger_event_id: Option<String>,
    /// The event that caused the decision (the trigger, or the exception that cancelled);
    /// `null` when time caused it.
    #[serde(default)]
    pub cause_event_id: Option<String>,
    #[serde(default)]
    #[avro(with = optional_timestamp_schema, default = "null")]
    pub due_at: Option<TimestampMs>,
    /// Event time of the cause, or the time a timer fired at.
    #[avro(with = timestamp_schema)]
    pub decided_at: TimestampMs,
    /// Coordinates of the input record that caused the decision, when one did.
    #[serde(default)]
    pub source: Option<InputCoordinates>,
}

/// A pending send as stored in the changelog.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, AvroSchema)]
#[avro(namespace = "campaign_connector")]
pub struct PendingSendState {
    pub follow_on_id: String,
    /// The follow-on version the send was scheduled with.
    pub follow_on_version: i64,
    pub trigger: TriggerRef,
    #[avro(with = timestamp_schema)]
    pub due_at: TimestampMs,
}

/// The last send of a follow-on to a user, for re-eligibility.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, AvroSchema)]
#[avro(namespace = "campaign_connector")]
pub struct ReceiptState {
    pub follow_on_id: String,
    /// `due_at` of the last send (the trigger time for an immediate send).
    #[avro(with = timestamp_schema)]
    pub last_sent_at: TimestampMs,
}

/// A user's state in a task: pending sends and receipts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, AvroSchema)]
#[avro(namespace = "campaign_connector")]
pub struct UserState {
    pub user_id: String,
    pub pending: Vec<PendingSendState>,
    pub receipts: Vec<ReceiptState>,
}

/// A user's state borrowing its strings: read in place from a changelog record by a restore
/// (`codec::read_state_datum`), or from the engine's tables when a changed user's entry is
/// written (`codec::write_user_state_datum`) — neither builds a [`UserState`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserStateView<'a> {
    pub user_id: &'a str,
    pub pending: smallvec::SmallVec<[PendingSendView<'a>; 1]>,
    /// Follow-on id and `last_sent_at` of each receipt.
    pub receipts: smallvec::SmallVec<[(&'a str, TimestampMs); 1]>,
}

/// A pending send of a [`UserStateView`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PendingSendView<'a> {
    pub follow_on_id: &'a str,
    pub follow_on_version: i64,
    pub trigger_campaign_id: &'a str,
    pub trigger_kind: InteractionKind,
    pub trigger_event_id: &'a str,
    pub triggered_at: TimestampMs,
    pub due_at: TimestampMs,
}

impl UserStateView<'_> {
    /// The owned state this view describes.
    pub fn to_state(&self) -> UserState {
        UserState {
            user_id: self.user_id.to_string(),
            pending: self
                .pending
                .iter()
                .map(|p| PendingSendState {
                    follow_on_id: p.follow_on_id.to_string(),
                    follow_on_version: p.follow_on_version,
                    trigger: TriggerRef {
                        campaign_id: p.trigger_campaign_id.to_string(),
                        kind: p.trigger_kind,
                        event_id: p.trigger_event_id.to_string(),
                        occurred_at: p.triggered_at,
                    },
                    due_at: p.due_at,
                })
                .collect(),
            receipts: self
                .receipts
                .iter()
                .map(|&(follow_on_id, last_sent_at)| ReceiptState {
                    follow_on_id: follow_on_id.to_string(),
                    last_sent_at,
                })
                .collect(),
        }
    }
}

impl UserState {
    pub fn view(&self) -> UserStateView<'_> {
        UserStateView {
            user_id: &self.user_id,
            pending: self
                .pending
                .iter()
                .map(|p| PendingSendView {
                    follow_on_id: &p.follow_on_id,
                    follow_on_version: p.follow_on_version,
                    trigger_campaign_id: &p.trigger.campaign_id,
                    trigger_kind: p.trigger.kind,
                    trigger_event_id: &p.trigger.event_id,
                    triggered_at: p.trigger.occurred_at,
                    due_at: p.due_at,
                })
                .collect(),
            receipts: self
                .receipts
                .iter()
                .map(|r| (r.follow_on_id.as_str(), r.last_sent_at))
                .collect(),
        }
    }
}

/// The follow-on campaign as it was at one version, kept in the changelog so that pending
/// sends scheduled with it keep their rule after the catalog moved on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, AvroSchema)]
#[avro(namespace = "campaign_connector")]
pub struct RuleSnapshot {
    pub campaign: Campaign,
}

/// One record of the shadow topic (default `connector-shadow`, key `user_id`): what a
/// `SHADOW` follow-on would have sent, or one of its decisions. Exactly one field is set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, AvroSchema)]
#[avro(namespace = "campaign_connector")]
pub struct ShadowRecord {
    /// A would-be send-command: never on `send-commands`.
    #[serde(default)]
    pub send_command: Option<SendCommand>,
    /// A decision about the shadow follow-on: never in the decision log.
    #[serde(default)]
    pub decision: Option<Decision>,
}

impl ShadowRecord {
    pub fn send_command(command: SendCommand) -> Self {
        Self {
            send_command: Some(command),
            decision: None,
        }
    }

    pub fn decision(decision: Decision) -> Self {
        Self {
            send_command: None,
            decision: Some(decision),
        }
    }

    /// The user the record is about (its key on the shadow topic).
    pub fn user_id(&self) -> &str {
        match (&self.send_command, &self.decision) {
            (Some(c), _) => &c.user_id,
            (None, Some(d)) => &d.user_id,
            (None, None) => "",
        }
    }
}

/// How far a task's clock has come: timers due at or before `stream_time` have fired.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, AvroSchema)]
#[avro(namespace = "campaign_connector")]
pub struct TaskProgress {
    #[avro(with = timestamp_schema)]
    pub stream_time: TimestampMs,
}

/// The changelog value: exactly one of `user`, `rule` or `progress` is set. Keys: see
/// [`TaskStateRecord::changelog_key`]; an empty user state is a tombstone of its key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, AvroSchema)]
#[avro(namespace = "campaign_connector")]
pub struct TaskStateRecord {
    #[serde(default)]
    pub user: Option<UserState>,
    #[serde(default)]
    pub rule: Option<RuleSnapshot>,
    #[serde(default)]
    pub progress: Option<TaskProgress>,
}

impl TaskStateRecord {
    /// `u/<user_id>` for user state, `r/<follow_on_id>/<version>` for a rule snapshot,
    /// `t/progress` for the task's progress.
    pub fn changelog_key(&self) -> String {
        match (&self.user, &self.rule) {
            (Some(u), _) => user_state_key(&u.user_id),
            (None, Some(r)) => rule_snapshot_key(&r.campaign.campaign_id, r.campaign.version),
            (None, None) => PROGRESS_KEY.to_string(),
        }
    }
}

/// Changelog key of the task's progress record.
pub const PROGRESS_KEY: &str = "t/progress";

/// Changelog key of a user's state.
pub fn user_state_key(user_id: &str) -> String {
    format!("u/{user_id}")
}

/// Changelog key of a rule snapshot.
pub fn rule_snapshot_key(follow_on_id: &str, version: i64) -> String {
    format!("r/{follow_on_id}/{version}")
}
