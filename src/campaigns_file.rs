//! Campaigns-as-code (placeholder until the loader lands).
use crate::model::Campaign;
use crate::validate::Limits;

#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct CampaignsFileError(String);

pub fn load_campaigns_file(
    path: &std::path::Path,
    _limits: &Limits,
) -> Result<Vec<Campaign>, CampaignsFileError> {
    Err(CampaignsFileError(format!(
        "{}: not yet supported",
        path.display()
    )))
}
