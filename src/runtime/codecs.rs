//! The codec of every topic the connector reads or writes, built once from the settings.

use crate::codec::Codec;
use crate::model::{
    Campaign, Decision, Interaction, SendCommand, ShadowRecord, TaskStateRecord, UserEvent,
};

use super::config::Settings;

pub struct Codecs {
    pub interactions: Codec<Interaction>,
    pub user_events: Codec<UserEvent>,
    pub campaigns: Codec<Campaign>,
    pub send_commands: Codec<SendCommand>,
    pub decisions: Codec<Decision>,
    pub changelog: Codec<TaskStateRecord>,
    pub shadow: Codec<ShadowRecord>,
}

impl Codecs {
    pub fn new(settings: &Settings) -> Result<Self, String> {
        let t = &settings.topics;
        macro_rules! codec {
            ($role:literal, $topic:expr) => {{
                let encoding = settings
                    .encoding($role)
                    .validate()
                    .map_err(|e| format!("encoding of {}: {e}", $role))?;
                Codec::new($topic.clone(), &encoding)
                    .map_err(|e| format!("encoding of {}: {e}", $role))?
            }};
        }
        Ok(Self {
            interactions: codec!("interactions", t.interactions),
            user_events: codec!("user_events", t.user_events),
            campaigns: codec!("campaigns", t.campaigns),
            send_commands: codec!("send_commands", t.send_commands),
            decisions: codec!("decisions", t.decisions),
            changelog: codec!("changelog", t.changelog),
            shadow: codec!("shadow", t.shadow),
        })
    }
}
