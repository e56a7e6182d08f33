//! The rules of `partitions expand` without I/O: what to do from the topics' counts and the
//! layout in force, how the plan and the users that move are printed.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use super::ExpandError;
use crate::expansion::Layout;
use crate::model::TimestampMs;
use crate::runtime::layout::{topics_state, CoPartitionCounts, TopicsState};
use crate::time::{format_duration, format_timestamp};

/// Default settle period: twice the Java producer's default `metadata.max.age.ms` (5 min).
pub const DEFAULT_SETTLE: &str = "10m";
/// Default wait between writing the layout and growing the first topic.
pub const DEFAULT_PROPAGATION: &str = "5s";
/// The Java producer's default `metadata.max.age.ms`.
const JAVA_METADATA_MAX_AGE: Duration = Duration::from_secs(300);

/// What the operator asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExpandOptions {
    /// The new partition count `N`.
    pub to: u32,
    /// From the layout's writing to its cut: how long upstream producers may still write
    /// with the old partition count.
    pub settle: Duration,
    /// How long to wait after writing the layout before growing the first topic, so that
    /// the running instances have read it.
    pub propagation: Duration,
    /// Print the plan and the users that move; change nothing.
    pub dry_run: bool,
}

/// One topic to grow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Growth {
    pub topic: String,
    pub from: u32,
    pub to: u32,
}

/// What the command does, decided from the topics' counts and the layout in force.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    pub counts: CoPartitionCounts,
    /// The layout to write, or the one being resumed.
    pub layout: Layout,
    /// `false`: an interrupted expansion to the same count is resumed; its layout exists.
    pub write_layout: bool,
    /// In order: the changelog first, then interactions, then user events; topics already
    /// at the new count are left out.
    pub growth: Vec<Growth>,
    /// Remarks for the operator (a short settle period, a cut already passed).
    pub warnings: Vec<String>,
}

/// Decides what `partitions expand --to N` does (pure: `now` is the wall clock).
pub fn plan(
    counts: &CoPartitionCounts,
    current: Option<&Layout>,
    layout_topic: &str,
    options: &ExpandOptions,
    now: TimestampMs,
) -> Result<Plan, ExpandError> {
    let to = options.to;
    if i32::try_from(to).is_err() {
        return Err(ExpandError::Refused(format!(
            "--to {to} is more partitions than Kafka can hold"
        )));
    }
    if options.propagation >= options.settle {
        return Err(ExpandError::Refused(format!(
            "--propagation {} is not shorter than --settle {}: the cut would come before the inputs grow",
            format_duration(options.propagation.as_secs() as i64),
            format_duration(options.settle.as_secs() as i64)
        )));
    }
    let mut warnings = Vec::new();
    let (layout, write_layout) = match topics_state(counts, current, layout_topic).map_err(ExpandError::State)? {
        TopicsState::Settled(m) if to <= m => {
            return Err(ExpandError::Refused(format!(
                "--to {to} is not above the current partition count {m} ({}): partitions only grow",
                counts.describe()
            )))
        }
        TopicsState::Settled(m) => {
            let settle_ms = i64::try_from(options.settle.as_millis())
                .ok()
                .filter(|s| now.checked_add(*s).is_some())
                .ok_or_else(|| {
                    ExpandError::Refused(format!(
                        "--settle {} is too long",
                        format_duration(options.settle.as_secs() as i64)
                    ))
                })?;
            let layout = Layout {
                epoch: current.map_or(1, |l| l.epoch.saturating_add(1)),
                from: m,
                to,
                cut_at: now + settle_ms,
                created_at: now,
            };
            if options.settle < JAVA_METADATA_MAX_AGE {
                warnings.push(format!(
                    "--settle {} is shorter than the Java producer's default metadata.max.age.ms (5m): \
                     records of producers that learn the new count after the cut are forwarded late \
                     (connector_expansion_late_records_total)",
                    format_duration(options.settle.as_secs() as i64)
                ));
            }
            (layout, true)
        }
        TopicsState::Expanding(l) if l.to != to => {
            return Err(ExpandError::Refused(format!(
                "an expansion from {} to {} partitions (layout epoch {}, written {}) is under way ({}): \
                 finish it first with `partitions expand --to {}`",
                l.from,
                l.to,
                l.epoch,
                format_timestamp(l.created_at),
                counts.describe(),
                l.to
            )))
        }
        TopicsState::Expanding(l) => {
            if l.cut_at <= now {
                warnings.push(format!(
                    "the cut time {} of the interrupted expansion has passed: records that stale \
                     producers write to the old partitions from now on are forwarded late \
                     (connector_expansion_late_records_total)",
                    format_timestamp(l.cut_at)
                ));
            }
            (l, false)
        }
    };
    let growth = [&counts.changelog, &counts.interactions, &counts.user_events]
        .into_iter()
        .filter(|t| t.partitions < to)
        .map(|t| Growth {
            topic: t.topic.clone(),
            from: t.partitions,
            to,
        })
        .collect();
    Ok(Plan {
        counts: counts.clone(),
        layout,
        write_layout,
        growth,
        warnings,
    })
}

/// How long to wait before the first growth: what is left of the propagation period since
/// the layout was written (an interrupted run may already have waited).
pub fn propagation_left(layout: &Layout, propagation: Duration, now: TimestampMs) -> Duration {
    let end = layout
        .created_at
        .saturating_add(propagation.as_millis().min(i64::MAX as u128) as i64);
    Duration::from_millis(end.saturating_sub(now).max(0) as u64)
}

/// The plan as the command prints it.
pub fn render_plan(plan: &Plan, layout_topic: &str, options: &ExpandOptions) -> String {
    let l = &plan.layout;
    let mut text = format!("partitions expand: {} → {} partitions\n", l.from, l.to);
    let width = plan
        .counts
        .all()
        .iter()
        .map(|t| t.topic.len())
        .max()
        .unwrap_or(0);
    for t in [
        &plan.counts.changelog,
        &plan.counts.interactions,
        &plan.counts.user_events,
    ] {
        let what = if t.partitions < l.to {
            format!(
                "{} → {}: creates partitions {}..={}",
                t.partitions,
                l.to,
                t.partitions,
                l.to - 1
            )
        } else {
            format!("{}: grown already", t.partitions)
        };
        text.push_str(&format!("  {:<width$}  {what}\n", t.topic));
    }
    let record = format!(
        "epoch {}, {} → {}, created {}, cut at {}",
        l.epoch,
        l.from,
        l.to,
        format_timestamp(l.created_at),
        format_timestamp(l.cut_at)
    );
    if plan.write_layout {
        text.push_str(&format!(
            "layout record to write to {layout_topic}: {record} (settle {})\n  {}\n",
            format_duration(options.settle.as_secs() as i64),
            String::from_utf8_lossy(&l.to_json())
        ));
    } else {
        text.push_str(&format!(
            "resuming an interrupted expansion: the layout record in {layout_topic} stays ({record})\n"
        ));
    }
    let mut steps = Vec::new();
    if plan.write_layout {
        steps.push("write the layout".to_string());
    }
    if !plan.growth.is_empty() {
        steps.push(format!(
            "wait until {} after the layout was written (the running instances read it)",
            format_duration(options.propagation.as_secs() as i64)
        ));
    }
    steps.extend(plan.growth.iter().map(|g| format!("grow {}", g.topic)));
    text.push_str(&format!("steps: {}\n", steps.join(", then ")));
    for w in &plan.warnings {
        text.push_str(&format!("warning: {w}\n"));
    }
    text
}

/// Users in the changelog, and how many of them move, by old and new task.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MovedUsers {
    /// Users with state.
    pub users: u64,
    /// (old task, new task) → users, for the users whose task changes.
    pub moved: BTreeMap<(i32, i32), u64>,
}

impl MovedUsers {
    pub fn total_moved(&self) -> u64 {
        self.moved.values().sum()
    }
}

/// Counts the users that move under `layout`: old owner `murmur2(user) mod from`, new owner
/// `mod to`.
pub fn count_moved<'a>(users: impl IntoIterator<Item = &'a [u8]>, layout: &Layout) -> MovedUsers {
    let mut counted = MovedUsers::default();
    for user in users {
        counted.users += 1;
        let (p, q) = (layout.old_owner(user), layout.new_owner(user));
        if p != q {
            *counted.moved.entry((p, q)).or_default() += 1;
        }
    }
    counted
}

/// The moved users as the dry run prints them.
pub fn render_moved(moved: &MovedUsers, records: u64, changelog: &str) -> String {
    let total = moved.total_moved();
    let mut text = format!(
        "users with state in {changelog}: {} ({records} records read)\nusers that move: {total}",
        moved.users
    );
    if moved.users > 0 {
        text.push_str(&format!(
            " ({:.1} %)",
            100.0 * total as f64 / moved.users as f64
        ));
    }
    text.push('\n');
    for ((p, q), n) in &moved.moved {
        text.push_str(&format!("  task {p:>3} → task {q:>3}  {n}\n"));
    }
    text
}

/// The user of a changelog key (`u/<user_id>`), or `None` for the other keys.
pub(super) fn changelog_user(key: &[u8]) -> Option<&[u8]> {
    key.strip_prefix(b"u/")
}

/// The users with state in one changelog partition, folded record by record: the latest
/// record of a key wins, an empty value (a tombstone) is a user gone.
#[derive(Debug, Default)]
pub(super) struct LiveUsers(pub(super) HashSet<Vec<u8>>);

impl LiveUsers {
    pub(super) fn apply(&mut self, key: Option<&[u8]>, payload: Option<&[u8]>) {
        let Some(user) = key.and_then(changelog_user) else {
            return;
        };
        if payload.is_some_and(|p| !p.is_empty()) {
            if !self.0.contains(user) {
                self.0.insert(user.to_vec());
            }
        } else {
            self.0.remove(user);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: TimestampMs = 1_800_000_000_000;

    fn counts(interactions: u32, user_events: u32, changelog: u32) -> CoPartitionCounts {
        CoPartitionCounts::of(interactions, user_events, changelog)
    }

    fn options(to: u32) -> ExpandOptions {
        ExpandOptions {
            to,
            settle: Duration::from_secs(600),
            propagation: Duration::from_secs(5),
            dry_run: false,
        }
    }

    fn layout(epoch: u32, from: u32, to: u32) -> Layout {
        Layout {
            epoch,
            from,
            to,
            cut_at: NOW + 600_000,
            created_at: NOW,
        }
    }

    fn topics(plan: &Plan) -> Vec<&str> {
        plan.growth.iter().map(|g| g.topic.as_str()).collect()
    }

    #[test]
    fn a_first_expansion_writes_epoch_one_and_grows_the_changelog_first() {
        let plan = plan(&counts(6, 6, 6), None, "l", &options(9), NOW).unwrap();
        assert_eq!(plan.layout, layout(1, 6, 9));
        assert!(plan.write_layout);
        assert_eq!(topics(&plan), ["changelog", "interactions", "user-events"]);
        assert!(plan.growth.iter().all(|g| g.from == 6 && g.to == 9));
        assert!(plan.warnings.is_empty());
    }

    #[test]
    fn a_later_expansion_goes_on_from_the_last_epoch() {
        let done = layout(4, 6, 9);
        let plan = plan(&counts(9, 9, 9), Some(&done), "l", &options(12), NOW + 1).unwrap();
        assert_eq!(
            (plan.layout.epoch, plan.layout.from, plan.layout.to),
            (5, 9, 12)
        );
        assert!(plan.write_layout);
    }

    #[test]
    fn an_interrupted_expansion_to_the_same_count_is_resumed_without_a_new_layout() {
        let l = layout(2, 6, 12);
        let plan = plan(
            &counts(12, 6, 12),
            Some(&l),
            "l",
            &options(12),
            NOW + 60_000,
        )
        .unwrap();
        assert_eq!(plan.layout, l);
        assert!(!plan.write_layout);
        assert_eq!(topics(&plan), ["user-events"]);
        let text = render_plan(&plan, "cl-layout", &options(12));
        assert!(text.contains("resuming"), "{text}");
        assert!(text.contains("interactions  12: grown already"), "{text}");
        // Long after the cut: resumed, with a warning.
        let late = plan_at(&counts(6, 6, 6), &l, NOW + 3_600_000);
        assert!(
            late.warnings[0].contains("has passed"),
            "{:?}",
            late.warnings
        );
    }

    fn plan_at(c: &CoPartitionCounts, l: &Layout, now: TimestampMs) -> Plan {
        plan(c, Some(l), "l", &options(l.to), now).unwrap()
    }

    #[test]
    fn refusals_name_the_topics_and_counts() {
        let err = |r: Result<Plan, ExpandError>| r.unwrap_err().to_string();
        let e = err(plan(&counts(6, 6, 6), None, "l", &options(6), NOW));
        assert!(
            e.contains("--to 6 is not above the current partition count 6"),
            "{e}"
        );
        assert!(
            e.contains("interactions has 6, user-events has 6, changelog has 6"),
            "{e}"
        );
        assert!(e.contains("nothing was changed"), "{e}");
        let e = err(plan(&counts(6, 6, 9), None, "l", &options(12), NOW));
        assert!(
            e.contains("not co-partitioned") && e.contains("changelog has 9"),
            "{e}"
        );
        // Another expansion under way.
        let l = layout(1, 6, 9);
        let e = err(plan(&counts(6, 6, 9), Some(&l), "l", &options(12), NOW));
        assert!(
            e.contains("an expansion from 6 to 9 partitions (layout epoch 1")
                && e.contains("--to 9"),
            "{e}"
        );
        // Inputs grown before the changelog: no expansion passes through that.
        let e = err(plan(&counts(9, 6, 6), Some(&l), "l", &options(9), NOW));
        assert!(e.contains("the changelog must be grown first"), "{e}");
        let e = err(plan(
            &counts(6, 6, 6),
            None,
            "l",
            &ExpandOptions {
                propagation: Duration::from_secs(600),
                ..options(9)
            },
            NOW,
        ));
        assert!(e.contains("is not shorter than --settle"), "{e}");
    }

    #[test]
    fn a_settle_period_below_the_producers_metadata_age_is_warned_about() {
        let short = ExpandOptions {
            settle: Duration::from_secs(120),
            ..options(9)
        };
        let plan = plan(&counts(6, 6, 6), None, "l", &short, NOW).unwrap();
        assert_eq!(plan.layout.cut_at, NOW + 120_000);
        assert!(
            plan.warnings[0].contains("metadata.max.age.ms"),
            "{:?}",
            plan.warnings
        );
    }

    #[test]
    fn the_propagation_wait_counts_from_the_layout_write() {
        let l = layout(1, 6, 9);
        let p = Duration::from_secs(5);
        assert_eq!(propagation_left(&l, p, NOW), p);
        assert_eq!(propagation_left(&l, p, NOW + 2_000), Duration::from_secs(3));
        assert_eq!(propagation_left(&l, p, NOW + 60_000), Duration::ZERO);
    }

    #[test]
    fn the_plan_shows_the_partitions_created_and_the_layout_record() {
        let plan = plan(&counts(6, 6, 6), None, "l", &options(9), NOW).unwrap();
        let text = render_plan(&plan, "cl-layout", &options(9));
        assert!(
            text.contains("changelog     6 → 9: creates partitions 6..=8"),
            "{text}"
        );
        assert!(
            text.contains("layout record to write to cl-layout: epoch 1, 6 → 9")
                && text.contains(&format!("cut at {}", format_timestamp(NOW + 600_000)))
                && text.contains("(settle 10m)"),
            "{text}"
        );
        assert!(text.contains(r#"{"epoch":1,"from":6,"to":9"#), "{text}");
        assert!(
            text.contains("steps: write the layout, then wait until 5s after"),
            "{text}"
        );
    }

    #[test]
    fn the_latest_changelog_record_of_a_user_says_whether_it_has_state() {
        let mut live = LiveUsers::default();
        live.apply(Some(b"u/a"), Some(b"state"));
        live.apply(Some(b"u/b"), Some(b"state"));
        live.apply(Some(b"u/a"), None);
        live.apply(Some(b"u/c"), Some(b"state"));
        live.apply(Some(b"u/c"), Some(b""));
        live.apply(Some(b"u/d"), None);
        live.apply(Some(b"u/d"), Some(b"state"));
        live.apply(Some(b"r/cart/1"), Some(b"rule"));
        live.apply(Some(b"t/progress"), Some(b"p"));
        live.apply(None, Some(b"x"));
        let mut users: Vec<&[u8]> = live.0.iter().map(Vec::as_slice).collect();
        users.sort();
        assert_eq!(users, [&b"b"[..], b"d"]);
    }

    #[test]
    fn moved_users_are_counted_by_old_and_new_task() {
        let l = layout(1, 6, 9);
        let ids: Vec<String> = (0..3_000).map(|i| format!("user-{i}")).collect();
        let moved = count_moved(ids.iter().map(|s| s.as_bytes()), &l);
        assert_eq!(moved.users, 3_000);
        // Naive reference: every user whose hash lands elsewhere.
        let expected = ids
            .iter()
            .filter(|u| l.old_owner(u.as_bytes()) != l.new_owner(u.as_bytes()))
            .count() as u64;
        assert_eq!(moved.total_moved(), expected);
        assert!(expected > 0 && expected < 3_000);
        for (p, q) in moved.moved.keys() {
            assert!(l.destinations(*p).contains(q), "{p} → {q}");
        }
        let text = render_moved(&moved, 3_500, "changelog");
        assert!(
            text.contains("users with state in changelog: 3000 (3500 records read)"),
            "{text}"
        );
        assert!(
            text.contains(&format!("users that move: {expected} (")),
            "{text}"
        );
    }
}
