//! Campaigns-as-code: the YAML file format for [`Campaign`] records, loading with every
//! problem reported, and rendering records back into the format.
//!
//! ```text
//!  text ──serde──▶ Raw* structs ──convert──▶ Campaign ──validate──▶ Vec<Campaign>
//!   │  (syntax, unknown keys,     (symbols, durations,   (rules shared with the
//!   │   types: with line/column)   timestamps, shapes)    catalog: caps, zones …)
//!   └──────────────── every problem ──▶ CampaignsFileError::Invalid
//! ```
//!
//! The format reference is `docs/campaigns-as-code.md`. In short: a file holds
//! `campaigns:`, a list of campaigns whose keys mirror the `Campaign` record, with the
//! parts people write by hand made friendlier: durations as `7d`, delays as `immediate`,
//! `7d` or `{next_weekday: MONDAY, at: "09:00"}`, exceptions as one-key mappings,
//! symbols case-insensitive.
//!
//! Why two stages instead of deserializing straight into the model: serde stops at the
//! first error, but an author fixing a file wants every problem at once. So serde only
//! checks the *shape* (which keys, which nesting), with enum symbols, durations and times
//! kept as strings; the conversion and [`validate_campaign`] then collect every problem of
//! every campaign. A campaign whose shape is wrong (an unknown key, say) cannot be
//! converted, so it reports that one structural problem, and the loader carries on with
//! the next campaign (see `deserialize_campaigns`).

use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::path::{Path, PathBuf};

use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use thiserror::Error;

use crate::model::{
    Campaign, CampaignKind, CampaignMode, CampaignStatus, Channel, Delay, DelayType,
    ExceptionMatcher, ExceptionType, FollowOnRule, InteractionKind, Message, Overdue,
    OverduePolicy, Reeligibility, ReeligibilityPolicy, RepeatTrigger, Trigger, Weekday,
};
use crate::time::{format_timestamp, parse_duration, parse_timestamp, DAY_SECONDS};
use crate::validate::{validate_campaign, FieldError, Limits};

// ---------------------------------------------------------------------------------------
// Errors
// ---------------------------------------------------------------------------------------

/// A position in the file, 1-based.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Location {
    pub line: usize,
    pub column: usize,
}

/// One problem in a campaigns file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileProblem {
    /// The `campaign_id` of the campaign concerned, when the problem is in a campaign and
    /// its id could be read.
    pub campaign: Option<String>,
    /// Position of the campaign in the `campaigns:` list (0-based), when the problem is in
    /// a campaign; `None` for a problem with the file as a whole (syntax, top-level keys).
    pub index: Option<usize>,
    /// Dotted path of the key inside the campaign, in the file's key names, e.g.
    /// `follow_on.delay` or `follow_on.trigger.kinds[0]`; empty when the problem is about
    /// the campaign or the file as a whole.
    pub field: String,
    pub message: String,
    /// Where serde found the problem: set for syntax and shape problems (unknown keys,
    /// missing keys, wrong types), `None` for problems found after parsing.
    pub location: Option<Location>,
}

impl fmt::Display for FileProblem {
    /// `campaign "cart-email": follow_on.delay: …` (without the file name and location,
    /// which [`CampaignsFileError`] puts in front).
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match (&self.campaign, self.index) {
            (Some(id), _) => write!(f, "campaign {id:?}: ")?,
            (None, Some(i)) => write!(f, "campaigns[{i}]: ")?,
            (None, None) => {}
        }
        if !self.field.is_empty() {
            write!(f, "{}: ", self.field)?;
        }
        f.write_str(&self.message)
    }
}

/// Why a campaigns file could not be loaded. Callers either fix the file
/// (`Invalid`: nothing in it was accepted) or the path (`Io`).
#[derive(Debug, Error)]
pub enum CampaignsFileError {
    #[error("{}: cannot read campaigns file: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// One line per problem, each naming the file (and line/column when known), the
    /// campaign and the field.
    #[error("{}", render_problems(file, problems))]
    Invalid {
        file: String,
        problems: Vec<FileProblem>,
    },
}

impl CampaignsFileError {
    /// Every problem found; empty for an I/O error.
    pub fn problems(&self) -> &[FileProblem] {
        match self {
            Self::Io { .. } => &[],
            Self::Invalid { problems, .. } => problems,
        }
    }
}

fn render_problems(file: &str, problems: &[FileProblem]) -> String {
    let mut out = String::new();
    for (i, p) in problems.iter().enumerate() {
        if i > 0 {
            out.push('\n');
        }
        match p.location {
            Some(l) => out.push_str(&format!("{file}:{}:{}: {p}", l.line, l.column)),
            None => out.push_str(&format!("{file}: {p}")),
        }
    }
    out
}

// ---------------------------------------------------------------------------------------
// The file format (serde shapes)
// ---------------------------------------------------------------------------------------
//
// Symbols, durations and timestamps are plain `String`s here: serde_yaml_ng hands any
// scalar to a string field as written (`09:00`, `1700000000000`, `2026-11-28T09:00:00Z`),
// so the conversion below can parse them and report every bad one with a field path.

/// A campaigns file.
#[derive(Debug, Serialize)]
struct RawFile {
    campaigns: Vec<RawCampaign>,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct RawCampaign {
    campaign_id: String,
    name: String,
    /// `CAMPAIGN` (default) or `NEWS_FEED_CARD`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    kind: Option<String>,
    /// `DRAFT`, `ACTIVE`, `STOPPED` or `ARCHIVED`.
    status: String,
    /// Default 1.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    version: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    published_at: Option<String>,
    /// This version's backfill start (normally set by `campaigns publish --backfill-since`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    backfill_since: Option<String>,
    /// `LIVE` (default) or `SHADOW` (normally set by `campaigns publish --shadow`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    mode: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    starts_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    ends_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    follow_on: Option<RawFollowOn>,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct RawFollowOn {
    trigger: RawTrigger,
    /// `immediate`, a duration (`7d`), or a [`RawLocalDelay`] mapping.
    delay: WordOrMap<RawLocalDelay>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    time_zone: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    exceptions: Vec<RawException>,
    /// `never` (default) or a duration.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    reeligibility: Option<String>,
    /// `KEEP_FIRST` (default) or `RESTART`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    on_repeat_trigger: Option<String>,
    /// `send` (default) or `{drop_if_late_by: <duration>}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    overdue: Option<WordOrMap<RawDropIfLate>>,
    message: RawMessage,
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct RawTrigger {
    campaign_id: String,
    kinds: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    qualifier: Option<String>,
}

/// `{next_weekday: MONDAY, at: "09:00"}` or `{calendar_days: 2, at: "10:00"}`.
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct RawLocalDelay {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    next_weekday: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    calendar_days: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    at: Option<String>,
}

impl MapShape for RawLocalDelay {
    const EXPECTING: &'static str = "`immediate`, a duration such as 7d, or a mapping such as \
         {next_weekday: MONDAY, at: \"09:00\"} or {calendar_days: 2, at: \"10:00\"}";
}

/// `{drop_if_late_by: 2h}`.
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct RawDropIfLate {
    drop_if_late_by: String,
}

impl MapShape for RawDropIfLate {
    const EXPECTING: &'static str = "`send` or a mapping such as {drop_if_late_by: 2h}";
}

/// One exception: a mapping with exactly one of these keys. A struct rather than a serde
/// enum so that the file and [`to_yaml`] use the same one-key-mapping shape (serde_yaml_ng
/// writes enums as YAML tags) and so that "exactly one" gets a message with a field path.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct RawException {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    interaction: Option<RawInteractionException>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    custom_event: Option<String>,
    /// `purchase: {}`, `purchase:` (null) or `purchase: {product_id: X}`; the outer
    /// `Option` says whether the key is present at all.
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    purchase: Option<Option<RawPurchase>>,
    /// `session_start: {}` or `session_start:` (null).
    #[serde(
        default,
        deserialize_with = "present",
        skip_serializing_if = "Option::is_none"
    )]
    session_start: Option<Option<RawEmpty>>,
}

/// Deserializes a key that is present (even with a null value) as `Some`.
fn present<'de, D, T>(deserializer: D) -> Result<Option<Option<T>>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(deserializer).map(Some)
}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct RawInteractionException {
    /// Default: the trigger campaign.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    campaign_id: Option<String>,
    kinds: Vec<String>,
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct RawPurchase {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    product_id: Option<String>,
}

#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct RawEmpty {}

#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
struct RawMessage {
    channel: String,
    template_id: String,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    payload: BTreeMap<String, String>,
}

/// A value that is either a scalar word (`immediate`, `7d`, `send`) or a mapping `M`.
#[derive(Debug)]
enum WordOrMap<M> {
    Word(String),
    Map(M),
}

/// What a [`WordOrMap`] mapping looks like, for the "invalid type" message.
trait MapShape {
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

// ---------------------------------------------------------------------------------------
// Reading the shape: every campaign's structural problem, with its location
// ---------------------------------------------------------------------------------------

/// Deserializes the `campaigns:` list, collecting each campaign that has the right shape
/// and the first shape error of each campaign that has not.
///
/// serde cannot resume after an error, so the loader re-reads the document, skipping (as
/// [`IgnoredAny`]) the campaigns already dealt with: one pass plus one per broken campaign.
/// The position of the campaign being read is kept outside the deserializer so that an
/// error can be attributed to it. An error outside any campaign (YAML syntax, top-level
/// keys) ends the loading.
///
/// Each pass reads the whole document, so a file where every campaign is broken would cost
/// passes × size; after [`MAX_BROKEN_CAMPAIGNS`] the loader stops and says where.
fn deserialize_campaigns(text: &str) -> ShapeReading {
    // YAML syntax first: serde_yaml_ng hands the events before a syntax error to the
    // visitor, which would report the truncated campaign as a shape error of its own.
    if let Err(error) = serde_yaml_ng::from_str::<IgnoredAny>(text) {
        let syntax = ShapeError {
            index: None,
            syntax: true,
            error,
        };
        return ShapeReading {
            campaigns: Vec::new(),
            errors: vec![syntax],
            stopped_at: None,
        };
    }
    let current = Cell::new(None);
    let read = RefCell::new(Vec::new());
    let mut errors = Vec::new();
    let mut skip = 0;
    let mut stopped_at = None;
    loop {
        current.set(None);
        let seed = FileSeed {
            skip,
            current: &current,
            read: &read,
        };
        match seed.deserialize(serde_yaml_ng::Deserializer::from_str(text)) {
            Ok(()) => break,
            Err(error) => {
                let index = current.get();
                errors.push(ShapeError {
                    index,
                    syntax: false,
                    error,
                });
                match index {
                    Some(i) if errors.len() >= MAX_BROKEN_CAMPAIGNS => {
                        stopped_at = Some(i);
                        break;
                    }
                    Some(i) => skip = i + 1,
                    None => break,
                }
            }
        }
    }
    ShapeReading {
        campaigns: read.into_inner(),
        errors,
        stopped_at,
    }
}

/// How many campaigns with shape problems the loader reports before it stops reading.
const MAX_BROKEN_CAMPAIGNS: usize = 20;

struct ShapeReading {
    /// The campaigns of the right shape, with their positions.
    campaigns: Vec<(usize, RawCampaign)>,
    errors: Vec<ShapeError>,
    /// The position of the last campaign read when reading stopped early.
    stopped_at: Option<usize>,
}

struct ShapeError {
    /// The campaign being read, `None` outside any campaign.
    index: Option<usize>,
    /// Not YAML at all (as opposed to YAML of the wrong shape).
    syntax: bool,
    error: serde_yaml_ng::Error,
}

/// The top-level mapping: exactly one key, `campaigns`.
struct FileSeed<'a> {
    skip: usize,
    current: &'a Cell<Option<usize>>,
    read: &'a RefCell<Vec<(usize, RawCampaign)>>,
}

impl<'de> DeserializeSeed<'de> for FileSeed<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for FileSeed<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a mapping with the key `campaigns`")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let mut seen = false;
        while let Some(key) = map.next_key::<String>()? {
            if key != "campaigns" {
                return Err(de::Error::unknown_field(&key, &["campaigns"]));
            }
            if seen {
                return Err(de::Error::duplicate_field("campaigns"));
            }
            seen = true;
            map.next_value_seed(CampaignsSeed {
                skip: self.skip,
                current: self.current,
                read: self.read,
            })?;
        }
        if !seen {
            return Err(de::Error::missing_field("campaigns"));
        }
        Ok(())
    }
}

/// The `campaigns:` list.
struct CampaignsSeed<'a> {
    skip: usize,
    current: &'a Cell<Option<usize>>,
    read: &'a RefCell<Vec<(usize, RawCampaign)>>,
}

impl<'de> DeserializeSeed<'de> for CampaignsSeed<'_> {
    type Value = ();

    fn deserialize<D: Deserializer<'de>>(self, deserializer: D) -> Result<(), D::Error> {
        deserializer.deserialize_seq(self)
    }
}

impl<'de> Visitor<'de> for CampaignsSeed<'_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a list of campaigns")
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let mut index = 0;
        loop {
            if index < self.skip {
                if seq.next_element::<IgnoredAny>()?.is_none() {
                    break;
                }
            } else {
                self.current.set(Some(index));
                match seq.next_element::<RawCampaign>()? {
                    Some(campaign) => self.read.borrow_mut().push((index, campaign)),
                    None => break,
                }
            }
            index += 1;
        }
        self.current.set(None);
        Ok(())
    }
}

/// Turns a serde_yaml_ng error into a problem. Its message reads
/// `campaigns[2].follow_on: unknown field ... at line 14 column 7`: the path is split off
/// into the campaign-relative field, the location into [`Location`].
fn shape_problem(shape: ShapeError, ids: &[Option<String>]) -> FileProblem {
    let location = shape.error.location().map(|l| Location {
        line: l.line(),
        column: l.column(),
    });
    let mut text = shape.error.to_string();
    if let Some(l) = location {
        let suffix = format!(" at line {} column {}", l.line, l.column);
        if let Some(at) = text.find(&suffix) {
            text.replace_range(at..at + suffix.len(), "");
        }
    }
    let (mut field, mut message) = match shape.index {
        Some(i) => split_path(&text, &format!("campaigns[{i}]")),
        None => split_path(&text, ""),
    };
    if shape.index.is_none() && field.starts_with("campaigns") {
        // An error in the list itself (e.g. `campaigns: 3`): no campaign to name.
        field = field.trim_start_matches('.').to_string();
    }
    // `missing field `x`` is reported at the enclosing mapping: name the missing key.
    if let Some(key) = backticked_after(&message, "missing field ") {
        field = join_field(&field, &key);
    }
    message = with_key_suggestion(message);
    if shape.syntax {
        message = format!("YAML syntax error: {message}");
    }
    let campaign = shape.index.and_then(|i| ids.get(i).cloned().flatten());
    FileProblem {
        campaign,
        index: shape.index,
        field,
        message,
        location,
    }
}

/// Splits `prefix.a.b: message` into (`a.b`, `message`); anything else into (``, text).
fn split_path(text: &str, prefix: &str) -> (String, String) {
    if let Some(rest) = text.strip_prefix(prefix) {
        if let Some(message) = rest.strip_prefix(": ") {
            return (String::new(), message.to_string());
        }
        let rest = rest.strip_prefix('.').unwrap_or(rest);
        let looks_like_path = |p: &str| {
            !p.is_empty()
                && p.chars()
                    .all(|c| c.is_alphanumeric() || "_-.[]?".contains(c))
        };
        if let Some((path, message)) = rest.split_once(": ") {
            if looks_like_path(path) {
                return (path.to_string(), message.to_string());
            }
        }
    }
    (String::new(), text.to_string())
}

fn join_field(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_string()
    } else {
        format!("{parent}.{key}")
    }
}

/// `x` in "…`x`…" right after `marker`.
fn backticked_after(message: &str, marker: &str) -> Option<String> {
    let rest = &message[message.find(marker)? + marker.len()..];
    let rest = rest.strip_prefix('`')?;
    Some(rest[..rest.find('`')?].to_string())
}

/// Adds "(did you mean `delay`?)" to serde's "unknown field `delai`, expected one of …".
fn with_key_suggestion(message: String) -> String {
    let Some(unknown) = backticked_after(&message, "unknown field ") else {
        return message;
    };
    let Some((_, expected)) = message.split_once("expected ") else {
        return message;
    };
    let candidates: Vec<&str> = expected.split('`').skip(1).step_by(2).collect();
    match closest(&unknown, candidates.iter().copied()) {
        Some(best) if candidates.len() > 1 => format!("{message} (did you mean `{best}`?)"),
        _ => message,
    }
}

/// The candidate most similar to `word`, when it is similar enough to be a likely typo.
fn closest<'a>(word: &str, candidates: impl Iterator<Item = &'a str>) -> Option<&'a str> {
    let word = word.to_ascii_lowercase();
    candidates
        .map(|c| (strsim::jaro_winkler(&word, &c.to_ascii_lowercase()), c))
        .filter(|(score, _)| *score >= 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, c)| c)
}

/// Campaign ids by position, read leniently (as YAML values) so that a campaign whose
/// shape is wrong can still be named in messages.
fn lenient_ids(text: &str) -> Vec<Option<String>> {
    use serde_yaml_ng::Value;
    let Ok(doc) = serde_yaml_ng::from_str::<Value>(text) else {
        return Vec::new();
    };
    let Some(Value::Sequence(items)) = doc.get("campaigns") else {
        return Vec::new();
    };
    items
        .iter()
        .map(|item| match item.get("campaign_id") {
            Some(Value::String(s)) => Some(s.clone()),
            Some(Value::Number(n)) => Some(n.to_string()),
            _ => None,
        })
        .map(|id| id.filter(|s| !s.trim().is_empty()))
        .collect()
}

// ---------------------------------------------------------------------------------------
// Conversion: file shapes → Campaign, collecting every problem
// ---------------------------------------------------------------------------------------

/// Problems found while converting one campaign, with file field paths.
#[derive(Default)]
struct Problems(Vec<FieldError>);

impl Problems {
    fn add(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.0.push(FieldError {
            field: field.into(),
            message: message.into(),
        });
    }

    /// Whether a problem was already reported at `field`, inside it or around it (so that
    /// validation does not repeat a consequence of a conversion problem).
    fn related(&self, field: &str) -> bool {
        self.0
            .iter()
            .any(|p| is_path_prefix(&p.field, field) || is_path_prefix(field, &p.field))
    }
}

/// `a.b` is a prefix of `a.b`, `a.b.c` and `a.b[0]`, not of `a.bc`.
fn is_path_prefix(prefix: &str, path: &str) -> bool {
    path.strip_prefix(prefix)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with('.') || rest.starts_with('['))
}

/// Parses an enum symbol case-insensitively, suggesting the closest symbol on failure.
fn parse_symbol<T: Copy>(text: &str, choices: &[(&str, T)], what: &str) -> Result<T, String> {
    let wanted = text.trim().to_ascii_uppercase();
    if let Some((_, value)) = choices.iter().find(|(s, _)| *s == wanted) {
        return Ok(*value);
    }
    let symbols = choices.iter().map(|(s, _)| *s);
    Err(match closest(&wanted, symbols.clone()) {
        Some(best) => format!("unknown {what} {} (did you mean {best}?)", text.trim()),
        None => format!(
            "unknown {what} {} (expected one of {})",
            text.trim(),
            symbols.collect::<Vec<_>>().join(", ")
        ),
    })
}

const KINDS: [(&str, CampaignKind); 2] = [
    ("CAMPAIGN", CampaignKind::Campaign),
    ("NEWS_FEED_CARD", CampaignKind::NewsFeedCard),
];
const STATUSES: [(&str, CampaignStatus); 4] = [
    ("DRAFT", CampaignStatus::Draft),
    ("ACTIVE", CampaignStatus::Active),
    ("STOPPED", CampaignStatus::Stopped),
    ("ARCHIVED", CampaignStatus::Archived),
];
const MODES: [(&str, CampaignMode); 2] = [
    ("LIVE", CampaignMode::Live),
    ("SHADOW", CampaignMode::Shadow),
];
const REPEATS: [(&str, RepeatTrigger); 2] = [
    ("KEEP_FIRST", RepeatTrigger::KeepFirst),
    ("RESTART", RepeatTrigger::Restart),
];
const CHANNELS: [(&str, Channel); 6] = [
    ("EMAIL", Channel::Email),
    ("PUSH", Channel::Push),
    ("SMS", Channel::Sms),
    ("IN_APP", Channel::InApp),
    ("CONTENT_CARD", Channel::ContentCard),
    ("WEBHOOK", Channel::Webhook),
];
const WEEKDAYS: [(&str, Weekday); 7] = [
    ("MONDAY", Weekday::Monday),
    ("TUESDAY", Weekday::Tuesday),
    ("WEDNESDAY", Weekday::Wednesday),
    ("THURSDAY", Weekday::Thursday),
    ("FRIDAY", Weekday::Friday),
    ("SATURDAY", Weekday::Saturday),
    ("SUNDAY", Weekday::Sunday),
];

fn symbol_of<T: PartialEq + Copy>(choices: &[(&'static str, T)], value: T) -> &'static str {
    choices
        .iter()
        .find(|(_, v)| *v == value)
        .map(|(s, _)| *s)
        .expect("every variant has a symbol")
}

/// Interaction kinds, case-insensitive, with a suggestion for a near miss.
fn parse_interaction_kinds(
    p: &mut Problems,
    field: &str,
    kinds: &[String],
) -> Vec<InteractionKind> {
    let mut out = Vec::with_capacity(kinds.len());
    for (i, text) in kinds.iter().enumerate() {
        let wanted = text.trim().to_ascii_uppercase();
        match InteractionKind::from_symbol(&wanted) {
            Some(kind) => out.push(kind),
            None if wanted == "UNKNOWN" => p.add(
                format!("{field}[{i}]"),
                "UNKNOWN is not an interaction kind that can be matched",
            ),
            None => {
                let symbols: Vec<&str> =
                    InteractionKind::KNOWN.iter().map(|k| k.symbol()).collect();
                let message = match closest(&wanted, symbols.iter().copied()) {
                    Some(best) => format!(
                        "unknown interaction kind {} (did you mean {best}?)",
                        text.trim()
                    ),
                    None => format!(
                        "unknown interaction kind {} (expected one of {})",
                        text.trim(),
                        symbols.join(", ")
                    ),
                };
                p.add(format!("{field}[{i}]"), message);
            }
        }
    }
    out
}

/// A duration in the file: a number with a unit. A bare number is refused (is `7` days or
/// seconds?), although [`parse_duration`] reads it as seconds.
fn parse_file_duration(text: &str) -> Result<i64, String> {
    let t = text.trim();
    if !t.is_empty() && t.chars().all(|c| c.is_ascii_digit()) {
        return Err(format!(
            "duration {t} needs a unit (s, m, h, d or w), e.g. {t}s or {t}d"
        ));
    }
    parse_duration(t).map_err(|e| e.to_string())
}

fn parse_optional_timestamp(p: &mut Problems, field: &str, text: &Option<String>) -> Option<i64> {
    let text = text.as_deref()?;
    match parse_timestamp(text) {
        Ok(ms) => Some(ms),
        Err(e) => {
            p.add(field, e.to_string());
            None
        }
    }
}

/// The campaign a raw campaign describes, as far as it can be read, and the problems met.
/// Fields that could not be read get a harmless stand-in so that validation can still
/// check the rest; its problems about those fields are then dropped.
fn convert_campaign(raw: &RawCampaign) -> (Campaign, Problems) {
    let mut p = Problems::default();
    let kind = match &raw.kind {
        None => CampaignKind::Campaign,
        Some(text) => parse_symbol(text, &KINDS, "campaign kind").unwrap_or_else(|e| {
            p.add("kind", e);
            CampaignKind::Campaign
        }),
    };
    let status = parse_symbol(&raw.status, &STATUSES, "status").unwrap_or_else(|e| {
        p.add("status", e);
        CampaignStatus::Draft
    });
    let mode = match &raw.mode {
        None => CampaignMode::Live,
        Some(text) => parse_symbol(text, &MODES, "mode").unwrap_or_else(|e| {
            p.add("mode", e);
            CampaignMode::Live
        }),
    };
    let campaign = Campaign {
        campaign_id: raw.campaign_id.clone(),
        name: raw.name.clone(),
        kind,
        status,
        version: raw.version.unwrap_or(1),
        published_at: parse_optional_timestamp(&mut p, "published_at", &raw.published_at),
        starts_at: parse_optional_timestamp(&mut p, "starts_at", &raw.starts_at),
        ends_at: parse_optional_timestamp(&mut p, "ends_at", &raw.ends_at),
        follow_on: raw.follow_on.as_ref().map(|f| convert_follow_on(&mut p, f)),
        backfill_since: parse_optional_timestamp(&mut p, "backfill_since", &raw.backfill_since),
        mode,
    };
    (campaign, p)
}

fn convert_follow_on(p: &mut Problems, raw: &RawFollowOn) -> FollowOnRule {
    let trigger = Trigger {
        campaign_id: raw.trigger.campaign_id.clone(),
        kinds: parse_interaction_kinds(p, "follow_on.trigger.kinds", &raw.trigger.kinds),
        qualifier: raw.trigger.qualifier.clone(),
    };
    let delay = convert_delay(p, &raw.delay);
    let exceptions = raw
        .exceptions
        .iter()
        .enumerate()
        .filter_map(|(i, e)| convert_exception(p, &format!("follow_on.exceptions[{i}]"), e))
        .collect();
    let reeligibility = match raw.reeligibility.as_deref().map(str::trim) {
        None => Reeligibility {
            policy: ReeligibilityPolicy::Never,
            seconds: None,
        },
        Some(word) if word.eq_ignore_ascii_case("never") => Reeligibility {
            policy: ReeligibilityPolicy::Never,
            seconds: None,
        },
        Some(text) => match parse_file_duration(text) {
            Ok(seconds) => Reeligibility {
                policy: ReeligibilityPolicy::After,
                seconds: Some(seconds),
            },
            Err(e) => {
                p.add(
                    "follow_on.reeligibility",
                    format!("expected `never` or a duration such as 30d: {e}"),
                );
                Reeligibility {
                    policy: ReeligibilityPolicy::Never,
                    seconds: None,
                }
            }
        },
    };
    let on_repeat_trigger = match &raw.on_repeat_trigger {
        None => RepeatTrigger::KeepFirst,
        Some(text) => parse_symbol(text, &REPEATS, "on_repeat_trigger").unwrap_or_else(|e| {
            p.add("follow_on.on_repeat_trigger", e);
            RepeatTrigger::KeepFirst
        }),
    };
    let send = Overdue {
        policy: OverduePolicy::Send,
        seconds: None,
    };
    let overdue = match &raw.overdue {
        None => send,
        Some(WordOrMap::Word(w)) if w.trim().eq_ignore_ascii_case("send") => send,
        Some(WordOrMap::Word(w)) => {
            let hint = match parse_file_duration(w) {
                Ok(_) => format!(" (did you mean {{drop_if_late_by: {}}}?)", w.trim()),
                Err(_) => String::new(),
            };
            p.add(
                "follow_on.overdue",
                format!(
                    "expected `send` or {{drop_if_late_by: <duration>}}, got {}{hint}",
                    w.trim()
                ),
            );
            send
        }
        Some(WordOrMap::Map(m)) => match parse_file_duration(&m.drop_if_late_by) {
            Ok(seconds) => Overdue {
                policy: OverduePolicy::DropIfLateBy,
                seconds: Some(seconds),
            },
            Err(e) => {
                p.add("follow_on.overdue.drop_if_late_by", e);
                send
            }
        },
    };
    let channel = parse_symbol(&raw.message.channel, &CHANNELS, "channel").unwrap_or_else(|e| {
        p.add("follow_on.message.channel", e);
        Channel::Email
    });
    FollowOnRule {
        trigger,
        delay,
        time_zone: raw.time_zone.clone(),
        exceptions,
        reeligibility,
        on_repeat_trigger,
        overdue,
        message: Message {
            channel,
            template_id: raw.message.template_id.clone(),
            payload: raw.message.payload.clone(),
        },
    }
}

fn convert_delay(p: &mut Problems, raw: &WordOrMap<RawLocalDelay>) -> Delay {
    // Stand-in for an unreadable delay: a valid non-immediate one, so that validation does
    // not add "exceptions require a delay" as a consequence.
    let stand_in = Delay::after_seconds(1);
    match raw {
        WordOrMap::Word(w) if w.trim().eq_ignore_ascii_case("immediate") => Delay::immediate(),
        WordOrMap::Word(w) => {
            match parse_file_duration(w) {
                Ok(seconds) => Delay::after_seconds(seconds),
                Err(e) => {
                    p.add(
                    "follow_on.delay",
                    format!("expected `immediate`, a duration such as 7d, or a local-time mapping: {e}"),
                );
                    stand_in
                }
            }
        }
        WordOrMap::Map(m) => {
            let local_time = m.at.clone();
            match (&m.next_weekday, m.calendar_days) {
                (Some(day), None) => match parse_symbol(day, &WEEKDAYS, "weekday") {
                    Ok(weekday) => Delay {
                        delay_type: DelayType::NextWeekday,
                        weekday: Some(weekday),
                        local_time,
                        ..Delay::immediate()
                    },
                    Err(e) => {
                        p.add("follow_on.delay.next_weekday", e);
                        stand_in
                    }
                },
                (None, Some(days)) => match i32::try_from(days) {
                    Ok(days) => Delay {
                        delay_type: DelayType::CalendarDays,
                        days: Some(days),
                        local_time,
                        ..Delay::immediate()
                    },
                    Err(_) => {
                        p.add(
                            "follow_on.delay.calendar_days",
                            format!("{days} days is out of range"),
                        );
                        stand_in
                    }
                },
                _ => {
                    p.add(
                        "follow_on.delay",
                        "a local-time delay has exactly one of next_weekday or calendar_days, \
                         and at, e.g. {next_weekday: MONDAY, at: \"09:00\"}",
                    );
                    stand_in
                }
            }
        }
    }
}

fn convert_exception(
    p: &mut Problems,
    field: &str,
    raw: &RawException,
) -> Option<ExceptionMatcher> {
    let keys = usize::from(raw.interaction.is_some())
        + usize::from(raw.custom_event.is_some())
        + usize::from(raw.purchase.is_some())
        + usize::from(raw.session_start.is_some());
    if keys != 1 {
        p.add(
            field,
            format!(
                "an exception has exactly one of interaction, custom_event, purchase or \
                 session_start, found {keys}"
            ),
        );
        return None;
    }
    let matcher = |exception_type| ExceptionMatcher {
        exception_type,
        campaign_id: None,
        interaction_kinds: Vec::new(),
        name: None,
    };
    Some(if let Some(i) = &raw.interaction {
        ExceptionMatcher {
            campaign_id: i.campaign_id.clone(),
            interaction_kinds: parse_interaction_kinds(
                p,
                &format!("{field}.interaction.kinds"),
                &i.kinds,
            ),
            ..matcher(ExceptionType::Interaction)
        }
    } else if let Some(name) = &raw.custom_event {
        ExceptionMatcher {
            name: Some(name.clone()),
            ..matcher(ExceptionType::CustomEvent)
        }
    } else if let Some(purchase) = &raw.purchase {
        ExceptionMatcher {
            name: purchase.as_ref().and_then(|x| x.product_id.clone()),
            ..matcher(ExceptionType::Purchase)
        }
    } else {
        matcher(ExceptionType::SessionStart)
    })
}

/// The file key for a field path of [`validate_campaign`], which uses the record's names.
fn file_field(campaign: &Campaign, record_field: &str) -> String {
    let renamed = [
        ("follow_on.delay.seconds", "follow_on.delay"),
        ("follow_on.delay.weekday", "follow_on.delay.next_weekday"),
        ("follow_on.delay.days", "follow_on.delay.calendar_days"),
        ("follow_on.delay.local_time", "follow_on.delay.at"),
        ("follow_on.reeligibility.seconds", "follow_on.reeligibility"),
        (
            "follow_on.overdue.seconds",
            "follow_on.overdue.drop_if_late_by",
        ),
    ];
    if let Some((_, file)) = renamed.iter().find(|(r, _)| *r == record_field) {
        return file.to_string();
    }
    // follow_on.exceptions[i].<record field>
    if let Some(rest) = record_field.strip_prefix("follow_on.exceptions[") {
        if let Some((index, leaf)) = rest.split_once("].") {
            let exception = index
                .parse::<usize>()
                .ok()
                .and_then(|i| campaign.follow_on.as_ref()?.exceptions.get(i));
            let base = format!("follow_on.exceptions[{index}]");
            let leaf = match (exception.map(|e| e.exception_type), leaf) {
                (_, "interaction_kinds") => "interaction.kinds",
                (Some(ExceptionType::Interaction), "campaign_id") => "interaction.campaign_id",
                (Some(ExceptionType::CustomEvent), "name") => "custom_event",
                (Some(ExceptionType::Purchase), "name") => "purchase.product_id",
                (_, other) => other,
            };
            return format!("{base}.{leaf}");
        }
    }
    record_field.to_string()
}

// ---------------------------------------------------------------------------------------
// Public API
// ---------------------------------------------------------------------------------------

/// Parses and validates a campaigns file. `file` is the name used in messages. Either
/// every campaign is valid and all are returned (in file order), or the error lists every
/// problem found.
pub fn parse_campaigns(
    text: &str,
    file: &str,
    limits: &Limits,
) -> Result<Vec<Campaign>, CampaignsFileError> {
    let invalid = |problems| CampaignsFileError::Invalid {
        file: file.to_string(),
        problems,
    };
    if text.trim().is_empty() {
        return Err(invalid(vec![FileProblem {
            campaign: None,
            index: None,
            field: String::new(),
            message: "the file is empty; expected `campaigns:` and a list of campaigns".into(),
            location: None,
        }]));
    }

    let ShapeReading {
        campaigns: raws,
        errors: shape_errors,
        stopped_at,
    } = deserialize_campaigns(text);
    let mut problems = Vec::new();
    // Ids by position, for naming campaigns in messages and for the duplicate check.
    let mut ids: Vec<Option<String>> = Vec::new();
    if !shape_errors.is_empty() {
        ids = lenient_ids(text);
    }
    for shape in shape_errors {
        problems.push(shape_problem(shape, &ids));
    }
    for (index, raw) in &raws {
        if ids.len() <= *index {
            ids.resize(index + 1, None);
        }
        ids[*index] = Some(raw.campaign_id.clone()).filter(|s| !s.trim().is_empty());
    }

    let mut campaigns = Vec::with_capacity(raws.len());
    for (index, raw) in &raws {
        let (campaign, mut found) = convert_campaign(raw);
        for error in validate_campaign(&campaign, limits) {
            let field = file_field(&campaign, &error.field);
            if !found.related(&field) {
                found.add(field, error.message);
            }
        }
        let id = ids[*index].clone();
        problems.extend(found.0.into_iter().map(|e| FileProblem {
            campaign: id.clone(),
            index: Some(*index),
            field: e.field,
            message: e.message,
            location: None,
        }));
        campaigns.push(campaign);
    }

    let mut first_at: HashMap<&str, usize> = HashMap::new();
    for (index, id) in ids.iter().enumerate() {
        let Some(id) = id else { continue };
        if let Some(first) = first_at.get(id.as_str()) {
            problems.push(FileProblem {
                campaign: Some(id.clone()),
                index: Some(index),
                field: "campaign_id".into(),
                message: format!(
                    "duplicate campaign id {id:?}: campaigns[{first}] has the same id"
                ),
                location: None,
            });
        } else {
            first_at.insert(id, index);
        }
    }

    if problems.is_empty() {
        Ok(campaigns)
    } else {
        // File-level problems first, then by campaign; in order of discovery within one.
        problems.sort_by_key(|p| p.index.map_or(0, |i| i + 1));
        if let Some(last) = stopped_at {
            problems.push(FileProblem {
                campaign: None,
                index: None,
                field: String::new(),
                message: format!(
                    "stopped after {MAX_BROKEN_CAMPAIGNS} campaigns with shape problems: \
                     campaigns after campaigns[{last}] were not checked"
                ),
                location: None,
            });
        }
        Err(invalid(problems))
    }
}

/// Reads and parses a campaigns file; messages name it by `path`.
pub fn load_campaigns_file(
    path: &Path,
    limits: &Limits,
) -> Result<Vec<Campaign>, CampaignsFileError> {
    let text = std::fs::read_to_string(path).map_err(|source| CampaignsFileError::Io {
        path: path.to_path_buf(),
        source,
    })?;
    parse_campaigns(&text, &path.display().to_string(), limits)
}

/// Renders campaigns in the file format. For valid campaigns,
/// `parse_campaigns(&to_yaml(x), ..) == Ok(x)`. Defaults of the follow-on rule
/// (re-eligibility, repeat trigger, overdue policy) are written out, so that a listing
/// shows the effective settings; absent optional keys are left out.
pub fn to_yaml(campaigns: &[Campaign]) -> String {
    let file = RawFile {
        campaigns: campaigns.iter().map(raw_campaign).collect(),
    };
    let text = serde_yaml_ng::to_string(&file).expect("campaign shapes always serialize");
    // A blank line between campaigns (top-level list items start at column 0).
    let mut out = String::with_capacity(text.len() + campaigns.len());
    for (i, line) in text.lines().enumerate() {
        if line.starts_with("- ") && i > 1 {
            out.push('\n');
        }
        out.push_str(line);
        out.push('\n');
    }
    out
}

/// A duration as people write it in the file: days, hours, minutes, seconds (`7d`, `30d`,
/// `1d12h`, `1h30m`). Unlike [`crate::time::format_duration`] it never uses weeks, because
/// campaigns are planned in days (SPEC §1: "7 days"); `parse_duration` reads both.
fn file_duration(seconds: i64) -> String {
    if seconds <= 0 {
        return format!("{seconds}s");
    }
    let mut rest = seconds;
    let mut out = String::new();
    for (unit, name) in [(DAY_SECONDS, "d"), (3_600, "h"), (60, "m"), (1, "s")] {
        if rest >= unit {
            out.push_str(&format!("{}{name}", rest / unit));
            rest %= unit;
        }
    }
    out
}

fn raw_campaign(c: &Campaign) -> RawCampaign {
    RawCampaign {
        campaign_id: c.campaign_id.clone(),
        name: c.name.clone(),
        kind: Some(symbol_of(&KINDS, c.kind).to_string()),
        status: symbol_of(&STATUSES, c.status).to_string(),
        version: Some(c.version),
        published_at: c.published_at.map(format_timestamp),
        backfill_since: c.backfill_since.map(format_timestamp),
        // Only a shadow says so: `LIVE` is the default and the common case.
        mode: (c.mode != CampaignMode::Live).then(|| symbol_of(&MODES, c.mode).to_string()),
        starts_at: c.starts_at.map(format_timestamp),
        ends_at: c.ends_at.map(format_timestamp),
        follow_on: c.follow_on.as_ref().map(raw_follow_on),
    }
}

fn raw_follow_on(rule: &FollowOnRule) -> RawFollowOn {
    let d = &rule.delay;
    let delay = match d.delay_type {
        DelayType::Immediate => WordOrMap::Word("immediate".into()),
        DelayType::After => WordOrMap::Word(file_duration(d.seconds.unwrap_or(0))),
        DelayType::NextWeekday => WordOrMap::Map(RawLocalDelay {
            next_weekday: d.weekday.map(|w| symbol_of(&WEEKDAYS, w).to_string()),
            calendar_days: None,
            at: d.local_time.clone(),
        }),
        DelayType::CalendarDays => WordOrMap::Map(RawLocalDelay {
            next_weekday: None,
            calendar_days: d.days.map(i64::from),
            at: d.local_time.clone(),
        }),
    };
    let kinds = |kinds: &[InteractionKind]| kinds.iter().map(|k| k.symbol().to_string()).collect();
    let exceptions = rule
        .exceptions
        .iter()
        .map(|e| match e.exception_type {
            ExceptionType::Interaction => RawException {
                interaction: Some(RawInteractionException {
                    campaign_id: e.campaign_id.clone(),
                    kinds: kinds(&e.interaction_kinds),
                }),
                ..RawException::default()
            },
            ExceptionType::CustomEvent => RawException {
                custom_event: Some(e.name.clone().unwrap_or_default()),
                ..RawException::default()
            },
            ExceptionType::Purchase => RawException {
                purchase: Some(Some(RawPurchase {
                    product_id: e.name.clone(),
                })),
                ..RawException::default()
            },
            ExceptionType::SessionStart => RawException {
                session_start: Some(Some(RawEmpty {})),
                ..RawException::default()
            },
        })
        .collect();
    let reeligibility = match rule.reeligibility.policy {
        ReeligibilityPolicy::Never => "never".to_string(),
        ReeligibilityPolicy::After => file_duration(rule.reeligibility.seconds.unwrap_or(0)),
    };
    let overdue = match rule.overdue.policy {
        OverduePolicy::Send => WordOrMap::Word("send".into()),
        OverduePolicy::DropIfLateBy => WordOrMap::Map(RawDropIfLate {
            drop_if_late_by: file_duration(rule.overdue.seconds.unwrap_or(0)),
        }),
    };
    RawFollowOn {
        trigger: RawTrigger {
            campaign_id: rule.trigger.campaign_id.clone(),
            kinds: kinds(&rule.trigger.kinds),
            qualifier: rule.trigger.qualifier.clone(),
        },
        delay,
        time_zone: rule.time_zone.clone(),
        exceptions,
        reeligibility: Some(reeligibility),
        on_repeat_trigger: Some(symbol_of(&REPEATS, rule.on_repeat_trigger).to_string()),
        overdue: Some(overdue),
        message: RawMessage {
            channel: symbol_of(&CHANNELS, rule.message.channel).to_string(),
            template_id: rule.message.template_id.clone(),
            payload: rule.message.payload.clone(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn problems(text: &str) -> Vec<FileProblem> {
        match parse_campaigns(text, "t.yaml", &Limits::default()) {
            Ok(c) => panic!("expected problems, parsed {c:?}"),
            Err(e) => e.problems().to_vec(),
        }
    }

    #[test]
    fn path_prefixes_respect_segment_boundaries() {
        assert!(is_path_prefix("follow_on.delay", "follow_on.delay"));
        assert!(is_path_prefix("follow_on.delay", "follow_on.delay.at"));
        assert!(is_path_prefix(
            "follow_on.trigger.kinds",
            "follow_on.trigger.kinds[0]"
        ));
        assert!(!is_path_prefix("follow_on.delay", "follow_on.delayed"));
    }

    #[test]
    fn symbols_are_case_insensitive_and_suggest_near_misses() {
        assert_eq!(
            parse_symbol("active", &STATUSES, "status"),
            Ok(CampaignStatus::Active)
        );
        assert_eq!(
            parse_symbol(" Restart ", &REPEATS, "x"),
            Ok(RepeatTrigger::Restart)
        );
        let e = parse_symbol("ACTIV", &STATUSES, "status").unwrap_err();
        assert_eq!(e, "unknown status ACTIV (did you mean ACTIVE?)");
        let e = parse_symbol("zzz", &CHANNELS, "channel").unwrap_err();
        assert!(e.contains("expected one of EMAIL, PUSH"), "{e}");
    }

    #[test]
    fn durations_are_written_in_days_not_weeks() {
        assert_eq!(file_duration(7 * DAY_SECONDS), "7d");
        assert_eq!(file_duration(30 * DAY_SECONDS), "30d");
        assert_eq!(file_duration(DAY_SECONDS + 12 * 3_600), "1d12h");
        assert_eq!(file_duration(5_400), "1h30m");
        assert_eq!(file_duration(45), "45s");
    }

    #[test]
    fn bare_numbers_are_not_durations() {
        assert_eq!(parse_file_duration("7d"), Ok(7 * 86_400));
        assert!(parse_file_duration("7")
            .unwrap_err()
            .contains("needs a unit"));
    }

    #[test]
    fn serde_paths_become_campaign_relative_fields() {
        assert_eq!(
            split_path("campaigns[2].follow_on.delay: boom", "campaigns[2]"),
            ("follow_on.delay".to_string(), "boom".to_string())
        );
        assert_eq!(
            split_path("campaigns[2]: missing field `name`", "campaigns[2]"),
            (String::new(), "missing field `name`".to_string())
        );
        assert_eq!(
            split_path("did not find expected key", ""),
            (String::new(), "did not find expected key".to_string())
        );
    }

    #[test]
    fn unknown_keys_get_a_suggestion() {
        let m = with_key_suggestion(
            "unknown field `delai`, expected one of `trigger`, `delay`, `message`".into(),
        );
        assert!(m.ends_with("(did you mean `delay`?)"), "{m}");
    }

    #[test]
    fn a_broken_campaign_does_not_hide_the_next_one() {
        let text = "\
campaigns:
  - campaign_id: a
    name: A
    status: ACTIVE
    colour: red
  - campaign_id: b
    name: B
    status: ACTIVE
    tags: [x]
  - campaign_id: c
    name: C
    status: ACTIV
";
        let p = problems(text);
        assert_eq!(p.len(), 3, "{p:#?}");
        assert_eq!(p[0].campaign.as_deref(), Some("a"));
        assert_eq!(p[0].location.map(|l| l.line), Some(5));
        assert_eq!(p[1].campaign.as_deref(), Some("b"));
        assert_eq!(p[1].location.map(|l| l.line), Some(9));
        assert_eq!(p[2].campaign.as_deref(), Some("c"));
        assert_eq!(p[2].field, "status");
    }

    #[test]
    fn reading_stops_after_many_broken_campaigns() {
        let mut text = String::from("campaigns:\n");
        for i in 0..MAX_BROKEN_CAMPAIGNS + 5 {
            text.push_str(&format!(
                "  - {{campaign_id: c{i}, name: N, status: DRAFT, x: 1}}\n"
            ));
        }
        let p = problems(&text);
        assert_eq!(p.len(), MAX_BROKEN_CAMPAIGNS + 1);
        let last = p.last().unwrap();
        assert_eq!((last.index, last.campaign.as_deref()), (None, None));
        assert!(
            last.message
                .contains("after campaigns[19] were not checked"),
            "{}",
            last.message
        );
    }

    #[test]
    fn exceptions_need_exactly_one_key() {
        let text = "\
campaigns:
  - campaign_id: f
    name: F
    status: ACTIVE
    follow_on:
      trigger: {campaign_id: a, kinds: [EMAIL_RECEIVED]}
      delay: 1d
      exceptions:
        - {purchase: {}, session_start: {}}
        - {}
      message: {channel: EMAIL, template_id: t}
";
        let p = problems(text);
        assert_eq!(p.len(), 2, "{p:#?}");
        assert_eq!(p[0].field, "follow_on.exceptions[0]");
        assert!(p[0].message.contains("found 2"));
        assert_eq!(p[1].field, "follow_on.exceptions[1]");
    }

    #[test]
    fn null_purchase_and_session_start_mean_any() {
        let text = "\
campaigns:
  - campaign_id: f
    name: F
    status: ACTIVE
    follow_on:
      trigger: {campaign_id: a, kinds: [EMAIL_RECEIVED]}
      delay: 1d
      exceptions:
        - purchase:
        - session_start:
      message: {channel: EMAIL, template_id: t}
";
        let c = parse_campaigns(text, "t.yaml", &Limits::default()).unwrap();
        let e = &c[0].follow_on.as_ref().unwrap().exceptions;
        assert_eq!(e[0].exception_type, ExceptionType::Purchase);
        assert_eq!(e[0].name, None);
        assert_eq!(e[1].exception_type, ExceptionType::SessionStart);
    }
}
