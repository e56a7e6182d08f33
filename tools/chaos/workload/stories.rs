//! The stories: for each rule of the catalog, a trigger and what may follow it.

use campaign_connector::model::{InteractionKind as K, UserEventType};

use super::{Generator, Plan};
use crate::rng::Rng;
use crate::timeline::{DAY, HOUR, MIN};

impl Generator {
    /// One user's story starting at `t`: the trigger of a rule and what may follow.
    pub(super) fn story(&mut self, t: i64, u: u32, chunk: usize) {
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
}
