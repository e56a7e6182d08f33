//! Shadow mode, the catalog side: what `campaigns publish --shadow` publishes for a file and
//! what `campaigns promote <id>@shadow` publishes for a shadow. Pure: the live catalog and
//! `now` are arguments; `runtime::admin` reads and writes the topic.
//!
//! ```text
//!   file: cart-email v2 ──publish --shadow──► cart-email@shadow v2 (SHADOW, ACTIVE)
//!                                                   │ promote at P
//!                     cart-email v3 (LIVE, published_at P) ◄─┤
//!                     cart-email@shadow v3 (STOPPED, ends_at P) ◄─┘
//! ```
//!
//! The promoted version counts triggers from `P` on (rule 2), the stopped shadow only
//! triggers before `P` (its window ends there): in event time no trigger is the shadow's and
//! the live version's both, whatever order the connector sees the two records in.

use std::collections::BTreeMap;

use crate::model::{Campaign, CampaignMode, CampaignStatus, TimestampMs, SHADOW_SUFFIX};

/// Why a shadow publish or a promotion is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ShadowError {
    #[error("the file has no follow-on campaign: only follow-ons can run in shadow mode")]
    NoFollowOn,
    #[error(
        "campaign {0:?}: a shadow counts triggers from its publish on and has no backfill \
         start (drop backfill_since from the file)"
    )]
    Backfill(String),
    #[error(
        "a promotion has no backfill start: the promoted version counts triggers from the \
         promotion on, so that it never sends for a trigger its shadow already handled"
    )]
    PromoteWithBackfill,
    #[error("{0:?} is not a shadow id: promote takes <id>{SHADOW_SUFFIX}")]
    NotAShadowId(String),
    #[error("{0:?} is not in the catalog: publish it first with campaigns publish --shadow")]
    Missing(String),
    #[error("{0:?} is not a SHADOW follow-on")]
    NotShadow(String),
    #[error(
        "{id:?} is {status}, not ACTIVE: it was promoted or stopped already (publish the \
         file with --shadow again to run a new shadow)"
    )]
    NotActive { id: String, status: String },
}

/// The shadow versions of a file's follow-ons: id `<id>@shadow`, mode `SHADOW`, status
/// `ACTIVE` (a shadow runs, also for a follow-on still in `DRAFT`), no `published_at` (the
/// publish sets it: now, or the running shadow's), no backfill start. Plain campaigns of the
/// file are left out: a shadow needs its trigger campaign live, and publishing one is not a
/// shadow's business.
pub fn shadow_versions(file: &[Campaign]) -> Result<Vec<Campaign>, ShadowError> {
    let mut out = Vec::new();
    for c in file.iter().filter(|c| c.follow_on.is_some()) {
        if c.backfill_since.is_some() {
            return Err(ShadowError::Backfill(c.campaign_id.clone()));
        }
        let mut shadow = c.clone();
        shadow.campaign_id = Campaign::shadow_id(&c.campaign_id);
        shadow.mode = CampaignMode::Shadow;
        shadow.status = CampaignStatus::Active;
        shadow.published_at = None;
        out.push(shadow);
    }
    if out.is_empty() {
        return Err(ShadowError::NoFollowOn);
    }
    Ok(out)
}

/// What promoting `shadow_id` at `now` publishes: the new live version of `<id>` (the
/// shadow's rule, mode `LIVE`, `published_at = now`, a version above the live one's and the
/// shadow's) and the stopped shadow (`STOPPED`, window ending at `now`), in that order.
pub fn promotion(
    catalog: &BTreeMap<String, Campaign>,
    shadow_id: &str,
    now: TimestampMs,
) -> Result<(Campaign, Campaign), ShadowError> {
    let live_id = Campaign::live_id_of(shadow_id)
        .ok_or_else(|| ShadowError::NotAShadowId(shadow_id.into()))?;
    let shadow = catalog
        .get(shadow_id)
        .ok_or_else(|| ShadowError::Missing(shadow_id.into()))?;
    if shadow.mode != CampaignMode::Shadow || shadow.follow_on.is_none() {
        return Err(ShadowError::NotShadow(shadow_id.into()));
    }
    if shadow.status != CampaignStatus::Active {
        return Err(ShadowError::NotActive {
            id: shadow_id.into(),
            status: format!("{:?}", shadow.status).to_uppercase(),
        });
    }
    if shadow.backfill_since.is_some() {
        return Err(ShadowError::PromoteWithBackfill);
    }
    let version = match catalog.get(live_id) {
        Some(live) => live.version.saturating_add(1).max(shadow.version),
        None => shadow.version,
    };
    let mut live = shadow.clone();
    live.campaign_id = live_id.to_string();
    live.mode = CampaignMode::Live;
    live.status = CampaignStatus::Active;
    live.version = version;
    live.published_at = Some(now);
    live.backfill_since = None;

    let mut stopped = shadow.clone();
    stopped.status = CampaignStatus::Stopped;
    stopped.version = shadow.version.saturating_add(1);
    // Its window ends where the live version's triggers begin (unless it ends earlier, or
    // starts later and so never ran).
    if shadow.starts_at.is_none_or(|s| s < now) && shadow.ends_at.is_none_or(|e| e > now) {
        stopped.ends_at = Some(now);
    }
    Ok((live, stopped))
}
