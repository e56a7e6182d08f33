//! Reading the shape: every campaign's structural problem, with its location.

use super::*;

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
pub(super) fn deserialize_campaigns(text: &str) -> ShapeReading {
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
pub(super) const MAX_BROKEN_CAMPAIGNS: usize = 20;

pub(super) struct ShapeReading {
    /// The campaigns of the right shape, with their positions.
    pub(super) campaigns: Vec<(usize, RawCampaign)>,
    pub(super) errors: Vec<ShapeError>,
    /// The position of the last campaign read when reading stopped early.
    pub(super) stopped_at: Option<usize>,
}

pub(super) struct ShapeError {
    /// The campaign being read, `None` outside any campaign.
    pub(super) index: Option<usize>,
    /// Not YAML at all (as opposed to YAML of the wrong shape).
    pub(super) syntax: bool,
    pub(super) error: serde_yaml_ng::Error,
}

/// The top-level mapping: exactly one key, `campaigns`.
pub(super) struct FileSeed<'a> {
    pub(super) skip: usize,
    pub(super) current: &'a Cell<Option<usize>>,
    pub(super) read: &'a RefCell<Vec<(usize, RawCampaign)>>,
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
pub(super) struct CampaignsSeed<'a> {
    pub(super) skip: usize,
    pub(super) current: &'a Cell<Option<usize>>,
    pub(super) read: &'a RefCell<Vec<(usize, RawCampaign)>>,
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
pub(super) fn shape_problem(shape: ShapeError, ids: &[Option<String>]) -> FileProblem {
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
pub(super) fn split_path(text: &str, prefix: &str) -> (String, String) {
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

pub(super) fn join_field(parent: &str, key: &str) -> String {
    if parent.is_empty() {
        key.to_string()
    } else {
        format!("{parent}.{key}")
    }
}

/// `x` in "…`x`…" right after `marker`.
pub(super) fn backticked_after(message: &str, marker: &str) -> Option<String> {
    let rest = &message[message.find(marker)? + marker.len()..];
    let rest = rest.strip_prefix('`')?;
    Some(rest[..rest.find('`')?].to_string())
}

/// Adds "(did you mean `delay`?)" to serde's "unknown field `delai`, expected one of …".
pub(super) fn with_key_suggestion(message: String) -> String {
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
pub(super) fn closest<'a>(
    word: &str,
    candidates: impl Iterator<Item = &'a str>,
) -> Option<&'a str> {
    let word = word.to_ascii_lowercase();
    candidates
        .map(|c| (strsim::jaro_winkler(&word, &c.to_ascii_lowercase()), c))
        .filter(|(score, _)| *score >= 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0))
        .map(|(_, c)| c)
}

/// Campaign ids by position, read leniently (as YAML values) so that a campaign whose
/// shape is wrong can still be named in messages.
pub(super) fn lenient_ids(text: &str) -> Vec<Option<String>> {
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
