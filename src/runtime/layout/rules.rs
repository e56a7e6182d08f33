//! The layout topic's rules without I/O: how its records fold into the layout in force,
//! and which partition counts of the co-partitioned topics a layout allows.

use crate::expansion::{Layout, LAYOUT_KEY};
use crate::runtime::kafka::TopicError;

/// What one record of the layout topic did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Read {
    /// A layout newer than the one in force.
    New(Layout),
    /// The layout in force, written again.
    Unchanged,
    /// A record of another key (none is written today): skipped.
    OtherKey(String),
}

/// The layout topic folded record by record, as pure logic.
#[derive(Debug, Default)]
pub(crate) struct LayoutLog {
    pub(crate) current: Option<Layout>,
}

impl LayoutLog {
    /// Applies one record; `Err` says what is wrong with it (the layout in force stays).
    pub(crate) fn apply(
        &mut self,
        key: Option<&[u8]>,
        payload: Option<&[u8]>,
    ) -> Result<Read, String> {
        if key != Some(LAYOUT_KEY.as_bytes()) {
            let key = key.map_or_else(
                || "(none)".into(),
                |k| String::from_utf8_lossy(k).into_owned(),
            );
            return Ok(Read::OtherKey(key));
        }
        let bytes = payload.filter(|p| !p.is_empty()).ok_or_else(|| {
            "a tombstone of the layout: a layout is never deleted (the epochs of later expansions go on from it)"
                .to_string()
        })?;
        let layout = Layout::from_json(bytes)?;
        match self.current {
            Some(c) if c == layout => return Ok(Read::Unchanged),
            Some(c) if layout.epoch <= c.epoch => {
                return Err(format!(
                    "layout epoch {} ({} → {}) after epoch {} ({} → {}): epochs only grow",
                    layout.epoch, layout.from, layout.to, c.epoch, c.from, c.to
                ))
            }
            _ => {}
        }
        self.current = Some(layout);
        Ok(Read::New(layout))
    }
}

/// A co-partitioned topic (an input or the changelog) and its partition count.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicCount {
    pub topic: String,
    pub partitions: u32,
}

/// The partition counts of the topics that must be co-partitioned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CoPartitionCounts {
    pub interactions: TopicCount,
    pub user_events: TopicCount,
    pub changelog: TopicCount,
}

impl CoPartitionCounts {
    /// Counts of topics named `interactions`, `user-events` and `changelog` (tests).
    #[cfg(test)]
    pub fn of(interactions: u32, user_events: u32, changelog: u32) -> Self {
        let t = |topic: &str, partitions| TopicCount {
            topic: topic.into(),
            partitions,
        };
        Self {
            interactions: t("interactions", interactions),
            user_events: t("user-events", user_events),
            changelog: t("changelog", changelog),
        }
    }

    /// In the order the co-partitioning check names them.
    pub fn all(&self) -> [&TopicCount; 3] {
        [&self.interactions, &self.user_events, &self.changelog]
    }

    pub fn inputs(&self) -> [&TopicCount; 2] {
        [&self.interactions, &self.user_events]
    }

    /// `topic 6, topic 12, …` for error messages.
    pub fn describe(&self) -> String {
        self.all()
            .iter()
            .map(|t| format!("{} has {}", t.topic, t.partitions))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// Where the co-partitioned topics stand.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TopicsState {
    /// All at this count, no expansion under way (no layout, or the layout's `to`).
    Settled(u32),
    /// Inside the expansion `layout` describes: each topic at its `from` or `to`, the
    /// changelog grown first, not all grown yet.
    Expanding(Layout),
}

/// Classifies the partition counts against the layout (`None`: no layout was ever
/// written). Without a layout the counts must be equal; with one, each topic must be at
/// its `from` or `to` and the changelog at least at every input's count (it is grown
/// first). Anything else is refused, naming the topics, their counts and the layout.
pub fn topics_state(
    counts: &CoPartitionCounts,
    layout: Option<&Layout>,
    layout_topic: &str,
) -> Result<TopicsState, TopicError> {
    let Some(l) = layout else {
        let first = &counts.interactions;
        return match counts
            .all()
            .into_iter()
            .find(|t| t.partitions != first.partitions)
        {
            None => Ok(TopicsState::Settled(first.partitions)),
            Some(other) => Err(TopicError::NotCoPartitioned {
                first: first.topic.clone(),
                first_count: first.partitions as usize,
                second: other.topic.clone(),
                second_count: other.partitions as usize,
            }),
        };
    };
    let refuse = |reason: String| TopicError::NotInLayout {
        layout_topic: layout_topic.into(),
        epoch: l.epoch,
        from: l.from,
        to: l.to,
        counts: counts.describe(),
        reason,
    };
    if let Some(t) = counts
        .all()
        .into_iter()
        .find(|t| t.partitions != l.from && t.partitions != l.to)
    {
        return Err(refuse(format!(
            "{} has {} partitions, neither {} nor {}",
            t.topic, t.partitions, l.from, l.to
        )));
    }
    let changelog = &counts.changelog;
    if let Some(t) = counts
        .inputs()
        .into_iter()
        .find(|t| t.partitions > changelog.partitions)
    {
        return Err(refuse(format!(
            "{} was grown to {} partitions while the changelog {} has {}: the changelog must be grown first",
            t.topic, t.partitions, changelog.topic, changelog.partitions
        )));
    }
    if counts.all().iter().all(|t| t.partitions == l.to) {
        Ok(TopicsState::Settled(l.to))
    } else {
        Ok(TopicsState::Expanding(*l))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout(epoch: u32, from: u32, to: u32) -> Layout {
        Layout {
            epoch,
            from,
            to,
            cut_at: 2_000,
            created_at: 1_000,
        }
    }

    fn counts(interactions: u32, user_events: u32, changelog: u32) -> CoPartitionCounts {
        CoPartitionCounts::of(interactions, user_events, changelog)
    }

    const KEY: Option<&[u8]> = Some(LAYOUT_KEY.as_bytes());

    #[test]
    fn the_newest_layout_wins_and_a_repeat_is_no_news() {
        let mut log = LayoutLog::default();
        let (one, two) = (layout(1, 6, 9), layout(2, 9, 12));
        assert_eq!(log.apply(KEY, Some(&one.to_json())), Ok(Read::New(one)));
        assert_eq!(log.apply(KEY, Some(&one.to_json())), Ok(Read::Unchanged));
        assert_eq!(log.apply(KEY, Some(&two.to_json())), Ok(Read::New(two)));
        assert_eq!(log.current, Some(two));
    }

    #[test]
    fn bad_layout_records_are_named_and_leave_the_layout_in_force() {
        let mut log = LayoutLog::default();
        let two = layout(2, 9, 12);
        log.apply(KEY, Some(&two.to_json())).unwrap();
        let older = log
            .apply(KEY, Some(&layout(1, 6, 9).to_json()))
            .unwrap_err();
        assert!(
            older.contains("epoch 1 (6 → 9) after epoch 2 (9 → 12)"),
            "{older}"
        );
        let same_epoch = log
            .apply(KEY, Some(&layout(2, 9, 15).to_json()))
            .unwrap_err();
        assert!(same_epoch.contains("epochs only grow"), "{same_epoch}");
        assert!(log.apply(KEY, None).unwrap_err().contains("tombstone"));
        assert!(log.apply(KEY, Some(b"")).unwrap_err().contains("tombstone"));
        assert!(log
            .apply(KEY, Some(b"{"))
            .unwrap_err()
            .contains("not valid JSON"));
        let shrink = br#"{"epoch":3,"from":12,"to":6,"cut_at":0,"created_at":0}"#;
        assert!(log
            .apply(KEY, Some(shrink))
            .unwrap_err()
            .contains("grows 12 to 6"));
        assert_eq!(log.current, Some(two));
    }

    #[test]
    fn records_of_other_keys_are_skipped() {
        let mut log = LayoutLog::default();
        let one = layout(1, 6, 9).to_json();
        assert_eq!(
            log.apply(Some(b"other"), Some(&one)),
            Ok(Read::OtherKey("other".into()))
        );
        assert_eq!(
            log.apply(None, Some(&one)),
            Ok(Read::OtherKey("(none)".into()))
        );
        assert_eq!(log.current, None);
    }

    #[test]
    fn without_a_layout_the_counts_must_be_equal() {
        assert_eq!(
            topics_state(&counts(6, 6, 6), None, "l").ok(),
            Some(TopicsState::Settled(6))
        );
        let err = topics_state(&counts(6, 6, 12), None, "l")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("not co-partitioned")
                && err.contains("interactions has 6")
                && err.contains("changelog has 12"),
            "{err}"
        );
    }

    #[test]
    fn a_layout_allows_exactly_the_states_an_expansion_passes_through() {
        let l = layout(1, 6, 9);
        let expanding = Some(TopicsState::Expanding(l));
        // Layout written, nothing grown; changelog grown; one input; both.
        assert_eq!(
            topics_state(&counts(6, 6, 6), Some(&l), "l").ok(),
            expanding
        );
        assert_eq!(
            topics_state(&counts(6, 6, 9), Some(&l), "l").ok(),
            expanding
        );
        assert_eq!(
            topics_state(&counts(9, 6, 9), Some(&l), "l").ok(),
            expanding
        );
        assert_eq!(
            topics_state(&counts(6, 9, 9), Some(&l), "l").ok(),
            expanding
        );
        assert_eq!(
            topics_state(&counts(9, 9, 9), Some(&l), "l").ok(),
            Some(TopicsState::Settled(9))
        );
    }

    #[test]
    fn a_layout_refuses_other_counts_and_inputs_grown_before_the_changelog() {
        let l = layout(3, 6, 9);
        let err = topics_state(&counts(12, 9, 9), Some(&l), "cl-layout")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("interactions has 12 partitions, neither 6 nor 9")
                && err.contains("epoch 3: 6 → 9")
                && err.contains("cl-layout")
                && err.contains("interactions has 12, user-events has 9, changelog has 9"),
            "{err}"
        );
        let err = topics_state(&counts(6, 9, 6), Some(&l), "l")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains(
                "user-events was grown to 9 partitions while the changelog changelog has 6"
            ),
            "{err}"
        );
        assert!(topics_state(&counts(12, 12, 12), Some(&l), "l").is_err());
    }
}
