//! The file format as serde shapes: symbols, durations and timestamps kept as written.

use super::*;

//
// Symbols, durations and timestamps are plain `String`s here: serde_yaml_ng hands any
// scalar to a string field as written (`09:00`, `1700000000000`, `2026-11-28T09:00:00Z`),
// so the conversion below can parse them and report every bad one with a field path.

/// A campaigns file.
#[derive(Debug, Serialize)]
pub(super) struct RawFile {
    pub(super) campaigns: Vec<RawCampaign>,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawCampaign {
    pub(super) campaign_id: String,
    pub(super) name: String,
    /// `CAMPAIGN` (default) or `NEWS_FEED_CARD`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) kind: Option<String>,
    /// `DRAFT`, `ACTIVE`, `STOPPED` or `ARCHIVED`.
    pub(super) status: String,
    /// Default 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) version: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) published_at: Option<String>,
    /// This version's backfill start (normally set by `campaigns publish --backfill-since`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) backfill_since: Option<String>,
    /// `LIVE` (default) or `SHADOW` (normally set by `campaigns publish --shadow`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) mode: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) starts_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) ends_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) follow_on: Option<RawFollowOn>,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawFollowOn {
    pub(super) trigger: RawTrigger,
    /// `immediate`, a duration (`7d`), or a [`RawLocalDelay`] mapping.
    pub(super) delay: WordOrMap<RawLocalDelay>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) time_zone: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(super) exceptions: Vec<RawException>,
    /// `never` (default) or a duration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) reeligibility: Option<String>,
    /// `KEEP_FIRST` (default) or `RESTART`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) on_repeat_trigger: Option<String>,
    /// `send` (default) or `{drop_if_late_by: <duration>}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) overdue: Option<WordOrMap<RawDropIfLate>>,
    pub(super) message: RawMessage,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawTrigger {
    pub(super) campaign_id: String,
    pub(super) kinds: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) qualifier: Option<String>,
}

/// `{next_weekday: MONDAY, at: "09:00"}` or `{calendar_days: 2, at: "10:00"}`.
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawLocalDelay {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) next_weekday: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) calendar_days: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) at: Option<String>,
}

impl MapShape for RawLocalDelay {
    const EXPECTING: &'static str = "`immediate`, a duration such as 7d, or a mapping such as \
         {next_weekday: MONDAY, at: \"09:00\"} or {calendar_days: 2, at: \"10:00\"}";
}

/// `{drop_if_late_by: 2h}`.
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawDropIfLate {
    pub(super) drop_if_late_by: String,
}

impl MapShape for RawDropIfLate {
    const EXPECTING: &'static str = "`send` or a mapping such as {drop_if_late_by: 2h}";
}

/// One exception: a mapping with exactly one of these keys. A struct rather than a serde
/// enum so that the file and [`to_yaml`] use the same one-key-mapping shape (serde_yaml_ng
/// writes enums as YAML tags) and so that "exactly one" gets a message with a field path.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawException {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) interaction: Option<RawInteractionException>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) custom_event: Option<String>,
    /// `purchase: {}`, `purchase:` (null) or `purchase: {product_id: X}`; the outer
    /// `Option` says whether the key is present at all.
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub(super) purchase: Option<Option<RawPurchase>>,
    /// `session_start: {}` or `session_start:` (null).
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    pub(super) session_start: Option<Option<RawEmpty>>,
}

/// Deserializes a key that is present (even with a null value) as `Some`.
pub(super) fn present<'de, D, T>(deserializer: D) -> Result<Option<Option<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(deserializer).map(Some)
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawInteractionException {
    /// Default: the trigger campaign.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) campaign_id: Option<String>,
    pub(super) kinds: Vec<String>,
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawPurchase {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(super) product_id: Option<String>,
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawEmpty {}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(super) struct RawMessage {
    pub(super) channel: String,
    pub(super) template_id: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub(super) payload: BTreeMap<String, String>,
}

/// A value that is either a scalar word (`immediate`, `7d`, `send`) or a mapping `M`.
#[derive(Debug)]
pub(super) enum WordOrMap<M> {
    Word(String),
    Map(M),
}

/// What a [`WordOrMap`] mapping looks like, for the "invalid type" message.
pub(super) trait MapShape {
    const EXPECTING: &'static str;
}

impl<'de, M: Deserialize<'de> + MapShape> Deserialize<'de> for WordOrMap<M> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct WordOrMapVisitor<M>(std::marker::PhantomData<M>);

        impl<'de, M: Deserialize<'de> + MapShape> Visitor<'de> for WordOrMapVisitor<M> {
            type Value = WordOrMap<M>;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(M::EXPECTING)
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
                Ok(WordOrMap::Word(v.to_string()))
            }
            // A bare number reaches us as a number; keep it as written so that the
            // conversion can say "needs a unit".
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<Self::Value, E> {
                Ok(WordOrMap::Word(v.to_string()))
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<Self::Value, E> {
                Ok(WordOrMap::Word(v.to_string()))
            }
            fn visit_f64<E: de::Error>(self, v: f64) -> Result<Self::Value, E> {
                Ok(WordOrMap::Word(v.to_string()))
            }
            fn visit_bool<E: de::Error>(self, v: bool) -> Result<Self::Value, E> {
                Ok(WordOrMap::Word(v.to_string()))
            }
            fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Self::Value, A::Error> {
                M::deserialize(de::value::MapAccessDeserializer::new(map)).map(WordOrMap::Map)
            }
        }

        deserializer.deserialize_any(WordOrMapVisitor(std::marker::PhantomData))
    }
}

impl<M: Serialize> Serialize for WordOrMap<M> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        match self {
            Self::Word(w) => serializer.serialize_str(w),
            Self::Map(m) => m.serialize(serializer),
        }
    }
}
