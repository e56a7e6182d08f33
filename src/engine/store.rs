//! Compact per-task state: users with their pending sends and receipts, and the timer queue.
//!
//! Memory is the product's scaling limit (millions of pending timers per instance), so the
//! layout is chosen for it:
//!
//! ```text
//!  index: HashTable<u32> ──► slots: Vec<UserSlot { user_id (inline ≤ 24 B), first: Option<PendingSend> }>
//!                                     │ only users with a 2nd pending send or a receipt
//!                                     ▼
//!                            extra: HashTable<(u32, Extra { more: Vec<PendingSend>, receipts (1 inline) })>
//!  timers: one-minute buckets of BinaryHeap<DueEntry (12 B: due, slot)>, lazily cleaned
//! ```
//!
//! The hash table stores only slot numbers (5 bytes a bucket) so that its load-factor slack
//! costs little; the common user — one pending send, no receipt yet — is one 72-byte slot.
//! Timer entries are not removed on cancellation: a popped entry is checked against the
//! slot's pending sends, and the heap is rebuilt when stale entries outnumber live ones.
//!
//! A table of millions of users misses the cache on nearly every lookup. The caller names
//! the users of records a few places ahead ([`UserTable::prefetch`]: the index), and the
//! engine the user of the next timer due ([`UserTable::prefetch_slot`]: its slot and extra
//! entry, whose place the timer entry tells), so that the lines are loaded while other
//! records are processed.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap};
use std::hash::BuildHasher;

use compact_str::CompactString;
use hashbrown::{DefaultHashBuilder, HashTable};
use smallvec::SmallVec;

use crate::catalog::{FollowOnIdx, RuleId};
use crate::model::{InteractionKind, TimestampMs};

/// A pending follow-on send of one user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingSend {
    pub due_at: TimestampMs,
    /// The trigger's `occurred_at`: the exception window opens here.
    pub triggered_at: TimestampMs,
    pub trigger_event_id: CompactString,
    /// The follow-on version it was scheduled with.
    pub rule: RuleId,
    pub trigger_kind: InteractionKind,
}

/// Pending sends taken out of a user's slot (inline for the usual one).
pub type Taken = SmallVec<[PendingSend; 1]>;

/// The last send of a follow-on to a user.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Receipt {
    pub follow_on: FollowOnIdx,
    pub last_sent_at: TimestampMs,
}

/// Slot number of a user in the table.
pub type UserIdx = u32;

#[derive(Debug)]
struct UserSlot {
    user_id: CompactString,
    first: Option<PendingSend>,
}

#[derive(Debug, Default)]
struct Extra {
    more: Vec<PendingSend>,
    /// Inline for the usual one: reading a user's receipt costs no further cache miss, and
    /// the first send to a user allocates nothing for it.
    receipts: SmallVec<[Receipt; 1]>,
}

/// Users that have state in a task.
#[derive(Debug, Default)]
pub struct UserTable {
    hasher: DefaultHashBuilder,
    index: HashTable<UserIdx>,
    slots: Vec<UserSlot>,
    free: Vec<UserIdx>,
    /// Keyed by slot number.
    extra: HashTable<(UserIdx, Extra)>,
    /// One bit a slot: whether `extra` has an entry for it. A bit set is small enough to
    /// stay in cache, so the users without one (most of them) skip the map and its misses.
    has_extra: Vec<u64>,
    /// Where the index's and the extra table's buckets are, for prefetching.
    index_layout: Option<Layout>,
    extra_layout: Option<Layout>,
}

/// Where a hash table keeps its buckets: its bucket count and the address of its control
/// bytes, taken from a bucket the table handed out (`None` until the first insert).
/// Refreshed whenever the bucket count changes (the table moves only then). The address is
/// only ever prefetched, never read.
#[derive(Debug, Clone, Copy)]
struct Layout {
    buckets: usize,
    control: usize,
}

impl Layout {
    /// Learns the layout from bucket `index` of a table of `buckets`, found at `address`.
    /// hashbrown keeps bucket `i` just below the control bytes, at
    /// `control - (i + 1) * size_of::<T>()` (checked by a test below).
    fn learn<T>(known: &mut Option<Layout>, buckets: usize, index: usize, address: *const T) {
        if known.is_none_or(|l| l.buckets != buckets) {
            *known = Some(Layout {
                buckets,
                control: address as usize + (index + 1) * std::mem::size_of::<T>(),
            });
        }
    }

    /// Starts loading what looking `hash` up in a table of `T`s (now of `buckets`) touches
    /// first: the control bytes where its probe begins and the bucket there.
    fn prefetch<T>(known: Option<Layout>, buckets: usize, hash: u64) {
        let Some(l) = known.filter(|l| l.buckets == buckets) else {
            return;
        };
        let position = hash as usize & (l.buckets - 1);
        prefetch_line(l.control.wrapping_add(position));
        let bucket = l
            .control
            .wrapping_sub((position + 1) * std::mem::size_of::<T>());
        prefetch_range(bucket, std::mem::size_of::<T>());
    }
}

impl UserTable {
    pub fn len(&self) -> usize {
        self.index.len()
    }

    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    /// Makes room for `additional` more users without rehashing (before a restore).
    pub fn reserve(&mut self, additional: usize) {
        let (slots, hasher) = (&self.slots, &self.hasher);
        self.index.reserve(additional, |&j| {
            hasher.hash_one(slots[j as usize].user_id.as_str())
        });
        self.slots
            .reserve(additional.saturating_sub(self.free.len()));
    }

    pub fn find(&self, user_id: &str) -> Option<UserIdx> {
        let hash = self.hasher.hash_one(user_id);
        self.index
            .find(hash, |&i| self.slots[i as usize].user_id == user_id)
            .copied()
    }

    /// The user's slot, created when the user has none.
    pub fn find_or_insert(&mut self, user_id: &str) -> UserIdx {
        let hash = self.hasher.hash_one(user_id);
        let slots = &self.slots;
        if let Some(&i) = self
            .index
            .find(hash, |&i| slots[i as usize].user_id == user_id)
        {
            return i;
        }
        let slot = UserSlot {
            user_id: CompactString::new(user_id),
            first: None,
        };
        let i = match self.free.pop() {
            Some(i) => {
                self.slots[i as usize] = slot;
                i
            }
            None => {
                self.slots.push(slot);
                (self.slots.len() - 1) as UserIdx
            }
        };
        let (slots, hasher) = (&self.slots, &self.hasher);
        let entry = self.index.insert_unique(hash, i, |&j| {
            hasher.hash_one(slots[j as usize].user_id.as_str())
        });
        let (index, address) = (entry.bucket_index(), entry.get() as *const UserIdx);
        let buckets = self.index.num_buckets();
        Layout::learn(&mut self.index_layout, buckets, index, address);
        i
    }

    /// Starts loading what looking `user_id` up touches first — the index's control
    /// bytes where its probe begins, and the first bucket there — so that the lookup, a
    /// few records later, finds them in cache: a table of millions of users misses the
    /// cache on nearly every lookup, and misses started together overlap.
    pub fn prefetch(&self, user_id: &str) {
        Layout::prefetch::<UserIdx>(
            self.index_layout,
            self.index.num_buckets(),
            self.hasher.hash_one(user_id),
        );
    }

    /// Starts loading slot `user` and, if it has one, its extra entry.
    pub fn prefetch_slot(&self, user: UserIdx) {
        let Some(slot) = self.slots.get(user as usize) else {
            return;
        };
        prefetch_range(
            slot as *const UserSlot as usize,
            std::mem::size_of::<UserSlot>(),
        );
        if self.has_extra(user) {
            Layout::prefetch::<(UserIdx, Extra)>(
                self.extra_layout,
                self.extra.num_buckets(),
                self.extra_hash(user),
            );
        }
    }

    fn extra_hash(&self, user: UserIdx) -> u64 {
        self.hasher.hash_one(user)
    }

    fn has_extra(&self, user: UserIdx) -> bool {
        bit(&self.has_extra, user)
    }

    fn extra(&self, user: UserIdx) -> Option<&Extra> {
        if self.has_extra(user) {
            self.extra
                .find(self.extra_hash(user), |e| e.0 == user)
                .map(|e| &e.1)
        } else {
            None
        }
    }

    fn extra_mut(&mut self, user: UserIdx) -> Option<&mut Extra> {
        if self.has_extra(user) {
            let hash = self.extra_hash(user);
            self.extra.find_mut(hash, |e| e.0 == user).map(|e| &mut e.1)
        } else {
            None
        }
    }

    /// The user's extra entry, created empty when the user has none.
    fn extra_or_default(&mut self, user: UserIdx) -> &mut Extra {
        let word = user as usize / 64;
        if self.has_extra.len() <= word {
            self.has_extra.resize(word + 1, 0);
        }
        self.has_extra[word] |= 1 << (user % 64);
        let hasher = &self.hasher;
        let entry = self
            .extra
            .entry(
                hasher.hash_one(user),
                |e| e.0 == user,
                |e| hasher.hash_one(e.0),
            )
            .or_insert_with(|| (user, Extra::default()));
        let index = entry.bucket_index();
        let table = entry.into_table();
        let buckets = table.num_buckets();
        let cell = table.get_bucket_mut(index).expect("the entry's bucket");
        Layout::learn(&mut self.extra_layout, buckets, index, cell);
        &mut cell.1
    }

    /// Whether slot `user` is in use by `user_id`. A freed slot holds the empty id, so the
    /// empty id is never taken as held (it is looked up instead).
    pub fn holds(&self, user: UserIdx, user_id: &str) -> bool {
        self.slots
            .get(user as usize)
            .is_some_and(|s| !user_id.is_empty() && s.user_id == user_id)
    }

    pub fn user_id(&self, user: UserIdx) -> &str {
        &self.slots[user as usize].user_id
    }

    pub fn pending(&self, user: UserIdx) -> impl Iterator<Item = &PendingSend> {
        let more = self.extra(user).map(|e| e.more.as_slice()).unwrap_or(&[]);
        self.slots[user as usize].first.iter().chain(more)
    }

    pub fn has_pending(&self, user: UserIdx) -> bool {
        self.slots[user as usize].first.is_some()
    }

    /// Removes and returns the pending sends for which `remove` is true, in stored order.
    /// Allocates nothing for the common user with one pending send.
    pub fn take_pending(
        &mut self,
        user: UserIdx,
        mut remove: impl FnMut(&PendingSend) -> bool,
    ) -> Taken {
        let mut taken = Taken::new();
        let slot = &mut self.slots[user as usize];
        if slot.first.as_ref().is_some_and(&mut remove) {
            taken.extend(slot.first.take());
        }
        let more = if bit(&self.has_extra, user) {
            let hash = self.hasher.hash_one(user);
            self.extra.find_mut(hash, |e| e.0 == user).map(|e| &mut e.1)
        } else {
            None
        };
        if let Some(e) = more {
            let mut i = 0;
            while i < e.more.len() {
                if remove(&e.more[i]) {
                    taken.push(e.more.remove(i));
                } else {
                    i += 1;
                }
            }
            if slot.first.is_none() && !e.more.is_empty() {
                slot.first = Some(e.more.remove(0));
            }
        }
        self.drop_empty_extra(user);
        taken
    }

    pub fn add_pending(&mut self, user: UserIdx, pending: PendingSend) {
        let slot = &mut self.slots[user as usize];
        if slot.first.is_none() {
            slot.first = Some(pending);
        } else {
            self.extra_or_default(user).more.push(pending);
        }
    }

    pub fn receipts(&self, user: UserIdx) -> &[Receipt] {
        self.extra(user)
            .map(|e| e.receipts.as_slice())
            .unwrap_or(&[])
    }

    pub fn receipt(&self, user: UserIdx, follow_on: FollowOnIdx) -> Option<TimestampMs> {
        self.receipts(user)
            .iter()
            .find(|r| r.follow_on == follow_on)
            .map(|r| r.last_sent_at)
    }

    pub fn set_receipt(
        &mut self,
        user: UserIdx,
        follow_on: FollowOnIdx,
        last_sent_at: TimestampMs,
    ) {
        let receipts = &mut self.extra_or_default(user).receipts;
        match receipts.iter_mut().find(|r| r.follow_on == follow_on) {
            Some(r) => r.last_sent_at = last_sent_at,
            None => receipts.push(Receipt {
                follow_on,
                last_sent_at,
            }),
        }
    }

    pub fn remove_receipt(&mut self, user: UserIdx, follow_on: FollowOnIdx) {
        if let Some(e) = self.extra_mut(user) {
            e.receipts.retain(|r| r.follow_on != follow_on);
        }
        self.drop_empty_extra(user);
    }

    fn drop_empty_extra(&mut self, user: UserIdx) {
        if self
            .extra(user)
            .is_some_and(|e| e.more.is_empty() && e.receipts.is_empty())
        {
            let hash = self.extra_hash(user);
            if let Ok(entry) = self.extra.find_entry(hash, |e| e.0 == user) {
                entry.remove();
            }
            self.has_extra[user as usize / 64] &= !(1 << (user % 64));
        }
    }

    /// Frees the user's slot when it holds nothing; returns whether it did.
    pub fn release_if_empty(&mut self, user: UserIdx) -> bool {
        let slot = &self.slots[user as usize];
        if slot.first.is_some() || self.has_extra(user) {
            return false;
        }
        let hash = self.hasher.hash_one(slot.user_id.as_str());
        if let Ok(entry) = self.index.find_entry(hash, |&i| i == user) {
            entry.remove();
        }
        self.slots[user as usize].user_id = CompactString::default();
        self.free.push(user);
        true
    }

    /// Slots of every user that has state (in no particular order).
    pub fn users(&self) -> impl Iterator<Item = UserIdx> + '_ {
        self.index.iter().copied()
    }
}

/// Asks the processor to load the cache line holding `address`. A prefetch reads
/// nothing the program sees and cannot fault, whatever the address.
#[inline]
fn prefetch_line(address: usize) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch hint has no architectural effect; any address is allowed.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(address as *const i8)
    };
    #[cfg(not(target_arch = "x86_64"))]
    let _ = address;
}

/// Starts loading the cache lines of `len` bytes at `address` (a line or two here).
#[inline]
fn prefetch_range(address: usize, len: usize) {
    prefetch_line(address);
    if len > 1 {
        prefetch_line(address.wrapping_add(len - 1));
    }
}

/// Bit `user` of a bit set (unset beyond its end).
fn bit(set: &[u64], user: UserIdx) -> bool {
    set.get(user as usize / 64)
        .is_some_and(|w| w & (1 << (user % 64)) != 0)
}

/// A timer entry: `(due, slot)` packed into 12 bytes. The due time is stored with its sign
/// bit flipped and split into two words so that the derived order is the order of `(due, slot)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct DueEntry {
    due_hi: u32,
    due_lo: u32,
    user: UserIdx,
}

impl DueEntry {
    fn new(due: TimestampMs, user: UserIdx) -> Self {
        let d = (due as u64) ^ (1 << 63);
        Self {
            due_hi: (d >> 32) as u32,
            due_lo: d as u32,
            user,
        }
    }
    fn due(self) -> TimestampMs {
        ((((self.due_hi as u64) << 32) | self.due_lo as u64) ^ (1 << 63)) as TimestampMs
    }
}

/// Width of a timer bucket.
const BUCKET_MS: i64 = 60_000;

/// Due times of pending sends, earliest first: a calendar of one-minute buckets, each a
/// small binary heap. A pop works in the first bucket only — a heap that fits in cache —
/// instead of sifting through one heap of millions of entries.
///
/// Entries may be stale (the send was cancelled or already fired); the engine checks each
/// popped entry against the user's pending sends.
#[derive(Debug, Default)]
pub struct TimerQueue {
    buckets: BTreeMap<i64, BinaryHeap<Reverse<DueEntry>>>,
    len: usize,
    /// The earliest due time held (`None` when empty): asked before every record, so kept
    /// at hand rather than looked up in the calendar each time.
    earliest: Option<TimestampMs>,
}

impl TimerQueue {
    pub fn push(&mut self, due: TimestampMs, user: UserIdx) {
        self.buckets
            .entry(due.div_euclid(BUCKET_MS))
            .or_default()
            .push(Reverse(DueEntry::new(due, user)));
        self.len += 1;
        if self.earliest.is_none_or(|e| due < e) {
            self.earliest = Some(due);
        }
    }

    pub fn peek_due(&self) -> Option<TimestampMs> {
        self.earliest
    }

    /// The user of the entry that pops next (possibly a stale one).
    pub fn next_user(&self) -> Option<UserIdx> {
        let (_, first) = self.buckets.first_key_value()?;
        first.peek().map(|Reverse(e)| e.user)
    }

    /// The earliest due time, read from the calendar.
    fn first_due(&self) -> Option<TimestampMs> {
        let (_, first) = self.buckets.first_key_value()?;
        first.peek().map(|Reverse(e)| e.due())
    }

    /// Pops every entry with the earliest due time if it is `<= until`.
    pub fn pop_earliest(
        &mut self,
        until: TimestampMs,
        into: &mut Vec<UserIdx>,
    ) -> Option<TimestampMs> {
        let due = self.earliest.filter(|&d| d <= until)?;
        let mut first = self.buckets.first_entry().expect("an earliest entry");
        let heap = first.get_mut();
        while let Some(Reverse(e)) = heap.peek() {
            if e.due() != due {
                break;
            }
            into.push(e.user);
            heap.pop();
            self.len -= 1;
        }
        if heap.is_empty() {
            first.remove();
        }
        self.earliest = self.first_due();
        Some(due)
    }

    pub fn len(&self) -> usize {
        self.len
    }

    /// Entries in the buckets that end before `t`.
    pub fn entries_before(&self, t: TimestampMs) -> usize {
        self.buckets
            .range(..t.div_euclid(BUCKET_MS))
            .map(|(_, b)| b.len())
            .sum()
    }

    /// Replaces the entries with exactly `live` (used when stale entries pile up).
    pub fn rebuild(&mut self, live: impl Iterator<Item = (TimestampMs, UserIdx)>) {
        self.buckets.clear();
        self.len = 0;
        self.earliest = None;
        for (due, user) in live {
            self.push(due, user);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The prefetch addresses are where the tables keep their buckets, across resizes (a
    /// change of hashbrown's layout would make every prefetch miss, silently).
    #[test]
    fn the_prefetch_layouts_locate_every_bucket_of_the_index_and_the_extra_table() {
        fn check<T>(table: &HashTable<T>, layout: Option<Layout>, hashes: &[(u64, usize)]) {
            let layout = layout.expect("set by the first insert");
            assert_eq!(layout.buckets, table.num_buckets());
            for &(hash, n) in hashes {
                let mut seen = 0;
                let bucket = table
                    .find_bucket_index(hash, |_| {
                        seen += 1;
                        seen == n
                    })
                    .unwrap();
                let address = table.get_bucket(bucket).unwrap() as *const T as usize;
                assert_eq!(
                    address,
                    layout.control - (bucket + 1) * std::mem::size_of::<T>()
                );
            }
        }
        let mut table = UserTable::default();
        for n in 0..5_000u32 {
            let user = format!("user-{n}");
            let slot = table.find_or_insert(&user);
            if n % 3 == 0 {
                table.set_receipt(slot, 0, 7);
            }
            if n % 499 != 0 {
                continue;
            }
            let mut index = Vec::new();
            let mut extra = Vec::new();
            for m in 0..=n {
                let user = format!("user-{m}");
                let slot = table.find(&user).unwrap();
                // The candidate whose slot is the user's: the how-many-th the probe meets.
                let hash = table.hasher.hash_one(user.as_str());
                let mut k = 0;
                let mut at = 0;
                let _ = table.index.find(hash, |&i| {
                    k += 1;
                    if i == slot {
                        at = k;
                    }
                    false
                });
                index.push((hash, at));
                if m % 3 == 0 {
                    let hash = table.extra_hash(slot);
                    let (mut k, mut at) = (0, 0);
                    let _ = table.extra.find(hash, |e| {
                        k += 1;
                        if e.0 == slot {
                            at = k;
                        }
                        false
                    });
                    extra.push((hash, at));
                }
            }
            check(&table.index, table.index_layout, &index);
            check(&table.extra, table.extra_layout, &extra);
            table.prefetch(&user);
            table.prefetch_slot(slot);
        }
    }

    #[test]
    fn timers_pop_in_due_order_across_buckets_with_ties_together() {
        let mut q = TimerQueue::default();
        let dues = [
            5 * BUCKET_MS + 7,
            -3,
            42,
            42,
            BUCKET_MS - 1,
            BUCKET_MS,
            3 * BUCKET_MS,
        ];
        for (user, due) in dues.iter().enumerate() {
            q.push(*due, user as UserIdx);
        }
        assert_eq!(q.len(), dues.len());
        let mut popped = Vec::new();
        let mut users = Vec::new();
        while let Some(due) = q.pop_earliest(i64::MAX, &mut users) {
            popped.push((due, std::mem::take(&mut users)));
        }
        assert_eq!(
            popped,
            [
                (-3, vec![1]),
                (42, vec![2, 3]),
                (BUCKET_MS - 1, vec![4]),
                (BUCKET_MS, vec![5]),
                (3 * BUCKET_MS, vec![6]),
                (5 * BUCKET_MS + 7, vec![0]),
            ]
        );
        assert_eq!(q.len(), 0);
        assert_eq!(q.peek_due(), None);
        q.push(10, 1);
        assert_eq!(q.pop_earliest(9, &mut users), None, "not due yet");
        assert_eq!(q.peek_due(), Some(10));
    }

    #[test]
    fn due_entries_order_like_due_then_slot() {
        let times = [-5_000i64, -1, 0, 1, 1_700_000_000_000, i64::MAX / 2];
        for a in times {
            for b in times {
                for (ua, ub) in [(0, 1), (1, 0), (3, 3)] {
                    let (ea, eb) = (DueEntry::new(a, ua), DueEntry::new(b, ub));
                    assert_eq!(ea.cmp(&eb), (a, ua).cmp(&(b, ub)));
                    assert_eq!(ea.due(), a);
                }
            }
        }
        assert_eq!(std::mem::size_of::<DueEntry>(), 12);
    }

    #[test]
    fn the_earliest_due_time_follows_pushes_pops_and_rebuilds() {
        let mut q = TimerQueue::default();
        let mut users = Vec::new();
        assert_eq!(q.peek_due(), None);
        q.push(3 * BUCKET_MS, 1);
        assert_eq!(q.peek_due(), Some(3 * BUCKET_MS));
        q.push(5, 2);
        q.push(7, 3);
        assert_eq!(q.peek_due(), Some(5));
        assert_eq!(q.pop_earliest(i64::MAX, &mut users), Some(5));
        assert_eq!(q.peek_due(), Some(7));
        assert_eq!(q.pop_earliest(i64::MAX, &mut users), Some(7));
        assert_eq!(q.peek_due(), Some(3 * BUCKET_MS), "from the next bucket");
        q.rebuild([(9, 1), (-2, 4)].into_iter());
        assert_eq!(q.peek_due(), Some(-2));
        q.rebuild(std::iter::empty());
        assert_eq!(q.peek_due(), None);
        assert_eq!(q.pop_earliest(i64::MAX, &mut users), None);
    }

    #[test]
    fn an_extra_entry_stays_small_with_its_receipt_inline() {
        assert_eq!(std::mem::size_of::<Extra>(), 48);
    }

    #[test]
    fn slots_are_reused_and_lookups_follow() {
        let mut t = UserTable::default();
        let a = t.find_or_insert("alice");
        let b = t.find_or_insert("bob");
        assert_eq!(t.find("alice"), Some(a));
        assert!(t.release_if_empty(a));
        assert_eq!(t.find("alice"), None);
        let c = t.find_or_insert("carol");
        assert_eq!(c, a, "freed slot is reused");
        assert_eq!(t.find("carol"), Some(c));
        assert_eq!(t.find("bob"), Some(b));
        assert_eq!(t.len(), 2);
    }
}
