//! Growing the input partition count from `M` to `N` with pending state moved to the new
//! owners (design and reasons: `docs/partition-expansion.md`), as pure logic: the layout
//! record, who owns a record before and after the cut, which partitions an old task reads
//! as side feeds, which tasks hand users to which.
//!
//! A record of user `u` at offset `o` of partition `x` belongs to the old owner
//! `murmur2(u) mod M` before the partition's *cut* (the first record whose Kafka timestamp
//! is at or after `cut_at`) and to the new owner `murmur2(u) mod N` from the cut on. Every
//! reader of `x` scans the same records in the same order, so all agree on the cut.

use serde::{Deserialize, Serialize};

use crate::model::TimestampMs;
use crate::runtime::http::partition_for_key;

/// The key of the layout record in the layout topic.
pub const LAYOUT_KEY: &str = "layout";

/// The layout topic of a deployment: one partition, compacted, next to its changelog.
pub fn layout_topic(changelog: &str) -> String {
    format!("{changelog}-layout")
}

/// One expansion of the inputs, as the operation wrote it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Layout {
    /// 1 for the first expansion of a deployment, then one more per expansion.
    pub epoch: u32,
    /// Partition count before (`M`).
    pub from: u32,
    /// Partition count after (`N`).
    pub to: u32,
    /// Records with a Kafka timestamp at or after this belong to the new owners (ms).
    pub cut_at: TimestampMs,
    /// When the operation wrote the record (ms).
    pub created_at: TimestampMs,
}

impl Layout {
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("a layout serializes")
    }

    pub fn from_json(bytes: &[u8]) -> Result<Self, String> {
        let layout: Layout = serde_json::from_slice(bytes)
            .map_err(|e| format!("layout record is not valid JSON of a layout: {e}"))?;
        if layout.from == 0 || layout.to <= layout.from {
            return Err(format!(
                "layout record grows {} to {} partitions: it must grow a count above 0",
                layout.from, layout.to
            ));
        }
        Ok(layout)
    }

    fn gcd(&self) -> i32 {
        let (mut a, mut b) = (self.from, self.to);
        while b != 0 {
            (a, b) = (b, a % b);
        }
        a as i32
    }

    pub fn old_owner(&self, key: &[u8]) -> i32 {
        partition_for_key(key, self.from as usize)
    }

    pub fn new_owner(&self, key: &[u8]) -> i32 {
        partition_for_key(key, self.to as usize)
    }

    /// Whether task `t` hands users over (it existed before the expansion).
    pub fn is_origin(&self, t: i32) -> bool {
        t < self.from as i32
    }

    /// The old tasks that can hand users to task `dest`: `p < M` with `p ≡ dest (mod gcd)`.
    pub fn origins(&self, dest: i32) -> Vec<i32> {
        let g = self.gcd();
        (0..self.from as i32)
            .filter(|p| p % g == dest % g)
            .collect()
    }

    /// The tasks an old task can hand users to: `q < N` with `q ≡ origin (mod gcd)`.
    pub fn destinations(&self, origin: i32) -> Vec<i32> {
        let g = self.gcd();
        (0..self.to as i32)
            .filter(|q| q % g == origin % g)
            .collect()
    }

    /// The partitions besides its own that old task `origin` reads until their cut: every
    /// partition a refreshed producer may have written one of its users to.
    pub fn feeds(&self, origin: i32) -> Vec<i32> {
        self.destinations(origin)
            .into_iter()
            .filter(|x| *x != origin)
            .collect()
    }

    /// Whether a record with this Kafka timestamp is at or after the cut time.
    pub fn past_cut(&self, timestamp: Option<TimestampMs>) -> bool {
        // A record without a timestamp is taken as written now: after the cut once the cut
        // time has come (such records are not written by the Java or librdkafka clients).
        timestamp.is_some_and(|t| t >= self.cut_at)
    }
}

/// What a task does with one input record under a layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fate {
    /// The task processes it.
    Process,
    /// Another task processes it (before the cut: its old owner, reading this partition as
    /// a side feed; a record of no user: the partition's own task).
    Skip,
    /// A record after the cut of a user this partition's task does not own: written by a
    /// producer that was still stale after the settle period. It is forwarded to its
    /// owner's partition.
    Forward(i32),
}

/// Where a record stands relative to its partition's cut.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Side {
    Before,
    After,
}

/// The fate of a record of `key` (the user id, or no key) read by `task`, on its own
/// partition (`own`) or a side feed.
pub fn fate(layout: &Layout, task: i32, own: bool, side: Side, key: Option<&[u8]>) -> Fate {
    let Some(key) = key.filter(|k| !k.is_empty()) else {
        // No user to route by: bad input, dead-lettered once, by the partition's own task.
        return if own { Fate::Process } else { Fate::Skip };
    };
    match side {
        Side::Before if layout.old_owner(key) == task => Fate::Process,
        Side::Before => Fate::Skip,
        Side::After if !own => Fate::Skip,
        Side::After => match layout.new_owner(key) {
            q if q == task => Fate::Process,
            q => Fate::Forward(q),
        },
    }
}

/// The hand-off marker an origin writes to each destination's changelog partition.
pub fn marker_key(epoch: u32, origin: i32) -> String {
    format!("x/handoff/{epoch}/{origin}")
}

/// Parses a marker key: `(epoch, origin)`.
pub fn parse_marker_key(key: &[u8]) -> Option<(u32, i32)> {
    let rest = std::str::from_utf8(key).ok()?.strip_prefix("x/handoff/")?;
    let (epoch, origin) = rest.split_once('/')?;
    Some((epoch.parse().ok()?, origin.parse().ok()?))
}

/// The value of a hand-off marker: the cut the origin used in every partition it read
/// (its own and its side feeds), by (rank, partition). A destination skips what precedes
/// the origin's cut for the origin's users, and owns what follows: each origin's cuts are
/// authoritative for its own users, so origins need not agree with each other.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Marker {
    pub epoch: u32,
    pub origin: i32,
    pub cuts: Vec<(usize, i32, i64)>,
}

/// The key of a task's expansion progress record (cuts found, side-feed positions).
pub const PROGRESS_KEY: &str = "x/progress";

/// A task's position in an expansion, written to its changelog partition in the
/// transaction of each commit that changed it, so that a restart resumes exactly.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExpansionProgress {
    pub epoch: u32,
    /// The cut found in each own input (by rank): its offset.
    pub cuts: [Option<i64>; 2],
    /// Side feeds: (rank, partition, next offset to read, cut found).
    pub feeds: Vec<FeedProgress>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FeedProgress {
    pub rank: usize,
    pub partition: i32,
    pub next: i64,
    pub cut: Option<i64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layout(from: u32, to: u32) -> Layout {
        Layout {
            epoch: 1,
            from,
            to,
            cut_at: 1_000,
            created_at: 0,
        }
    }

    #[test]
    fn a_multiple_hands_each_old_task_its_own_and_one_new_partition() {
        let l = layout(6, 12);
        assert_eq!(l.destinations(2), vec![2, 8]);
        assert_eq!(l.feeds(2), vec![8]);
        assert_eq!(l.origins(8), vec![2]);
        assert_eq!(l.origins(2), vec![2]);
    }

    #[test]
    fn a_count_that_is_not_a_multiple_links_tasks_by_the_common_divisor() {
        let l = layout(6, 9);
        assert_eq!(l.destinations(0), vec![0, 3, 6]);
        assert_eq!(l.feeds(4), vec![1, 7]);
        assert_eq!(l.origins(7), vec![1, 4]);
        assert_eq!(l.origins(3), vec![0, 3]);
    }

    #[test]
    fn every_user_moves_between_an_origin_and_one_of_its_destinations() {
        for (from, to) in [(6, 12), (6, 9), (4, 6), (3, 7)] {
            let l = layout(from, to);
            for i in 0..2_000 {
                let key = format!("user-{i}");
                let (p, q) = (l.old_owner(key.as_bytes()), l.new_owner(key.as_bytes()));
                assert!(l.destinations(p).contains(&q), "{from}->{to} {key}");
                assert!(l.origins(q).contains(&p), "{from}->{to} {key}");
            }
        }
    }

    #[test]
    fn before_the_cut_the_old_owner_processes_after_it_the_new_one() {
        let l = layout(6, 9);
        let key = (0..)
            .map(|i| format!("u{i}"))
            .find(|k| l.old_owner(k.as_bytes()) != l.new_owner(k.as_bytes()))
            .unwrap();
        let (p, q) = (l.old_owner(key.as_bytes()), l.new_owner(key.as_bytes()));
        let k = Some(key.as_bytes());
        assert_eq!(fate(&l, p, true, Side::Before, k), Fate::Process);
        assert_eq!(fate(&l, q, true, Side::Before, k), Fate::Skip);
        assert_eq!(fate(&l, p, false, Side::Before, k), Fate::Process);
        assert_eq!(fate(&l, q, true, Side::After, k), Fate::Process);
        assert_eq!(fate(&l, p, true, Side::After, k), Fate::Forward(q));
        assert_eq!(fate(&l, p, false, Side::After, k), Fate::Skip);
        assert_eq!(fate(&l, p, true, Side::After, None), Fate::Process);
        assert_eq!(fate(&l, p, false, Side::Before, None), Fate::Skip);
    }

    #[test]
    fn layout_and_marker_records_round_trip_and_bad_ones_are_named() {
        let l = layout(6, 9);
        assert_eq!(Layout::from_json(&l.to_json()).unwrap(), l);
        let err = Layout::from_json(br#"{"epoch":1,"from":9,"to":6,"cut_at":0,"created_at":0}"#)
            .unwrap_err();
        assert!(err.contains("grows 9 to 6"), "{err}");
        assert!(Layout::from_json(b"nope")
            .unwrap_err()
            .contains("not valid JSON"));
        assert_eq!(parse_marker_key(marker_key(3, 5).as_bytes()), Some((3, 5)));
        assert_eq!(parse_marker_key(b"u/x"), None);
    }
}
