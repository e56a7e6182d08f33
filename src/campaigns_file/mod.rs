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

mod convert;
mod format;
mod render;
mod shape;

use convert::*;
use format::*;
pub use render::to_yaml;
use shape::*;

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

#[cfg(test)]
mod tests;
