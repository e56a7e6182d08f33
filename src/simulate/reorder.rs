//! The simulator's bounded reorder window: events go in in file order and come out in
//! event-time order, ties in file order, as long as no event is later in the file than
//! `window` events dated after it.
//!
//! ```text
//!  file order ─► push(t, line) ─► min-heap of at most `window` ─► pop: smallest (t, line)
//!                     │
//!                     └─ t earlier than an event already released ─► OutOfOrder
//! ```
//!
//! Items that arrive in order (at or after the last one that did) join a queue in O(1);
//! only items that arrive out of order go to a heap. A sorted file never touches the heap.
//! The next item out is the smaller of the queue's front and the heap's top. Heap entries
//! are small keys; their items stay in a slab, so the heap moves 24 bytes per step.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};

use crate::model::TimestampMs;

/// An item that came too late: an item at `released` had already been let out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutOfOrder {
    pub released: TimestampMs,
}

/// Holds up to `window` items and releases them in `(time, line)` order.
#[derive(Debug)]
pub struct Reorder<T> {
    window: usize,
    /// Items that arrived in order, in order.
    queue: VecDeque<(TimestampMs, usize, T)>,
    /// Keys of the items that arrived out of order, with their slot.
    heap: BinaryHeap<Reverse<(TimestampMs, usize, usize)>>,
    slots: Vec<Option<T>>,
    free: Vec<usize>,
    /// The key of the last item released.
    released: Option<(TimestampMs, usize)>,
}

impl<T> Reorder<T> {
    pub fn new(window: usize) -> Self {
        Self {
            window,
            queue: VecDeque::new(),
            heap: BinaryHeap::new(),
            slots: Vec::new(),
            free: Vec::new(),
            released: None,
        }
    }

    /// Adds an item of time `t` from line `line` (lines only increase). Refused when an
    /// item after it in `(t, line)` order was released already.
    pub fn push(&mut self, t: TimestampMs, line: usize, item: T) -> Result<(), OutOfOrder> {
        if let Some(released) = self.released.filter(|&r| (t, line) < r) {
            return Err(OutOfOrder {
                released: released.0,
            });
        }
        if self
            .queue
            .back()
            .is_none_or(|&(bt, bl, _)| (bt, bl) <= (t, line))
        {
            self.queue.push_back((t, line, item));
            return Ok(());
        }
        let slot = match self.free.pop() {
            Some(i) => {
                self.slots[i] = Some(item);
                i
            }
            None => {
                self.slots.push(Some(item));
                self.slots.len() - 1
            }
        };
        self.heap.push(Reverse((t, line, slot)));
        Ok(())
    }

    /// The earliest item, once more than `window` items are held.
    pub fn pop_if_full(&mut self) -> Option<(TimestampMs, usize, T)> {
        if self.len() > self.window {
            self.pop()
        } else {
            None
        }
    }

    /// The earliest item held (to drain the window at the end).
    pub fn pop(&mut self) -> Option<(TimestampMs, usize, T)> {
        let from_heap = match (self.queue.front(), self.heap.peek()) {
            (None, None) => return None,
            (Some(_), None) => false,
            (None, Some(_)) => true,
            (Some(&(qt, ql, _)), Some(&Reverse((ht, hl, _)))) => (ht, hl) < (qt, ql),
        };
        let (t, line, item) = if from_heap {
            let Reverse((t, line, slot)) = self.heap.pop().expect("peeked");
            let item = self.slots[slot].take().expect("a held slot");
            self.free.push(slot);
            (t, line, item)
        } else {
            self.queue.pop_front().expect("a front")
        };
        self.released = Some((t, line));
        Some((t, line, item))
    }

    pub fn len(&self) -> usize {
        self.queue.len() + self.heap.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(window: usize, times: &[TimestampMs]) -> (Vec<usize>, Vec<usize>) {
        let mut r = Reorder::new(window);
        let (mut out, mut refused) = (Vec::new(), Vec::new());
        for (i, &t) in times.iter().enumerate() {
            let line = i + 1;
            if r.push(t, line, line).is_err() {
                refused.push(line);
            }
            while let Some((_, _, l)) = r.pop_if_full() {
                out.push(l);
            }
        }
        while let Some((_, _, l)) = r.pop() {
            out.push(l);
        }
        (out, refused)
    }

    #[test]
    fn releases_in_time_order_with_ties_in_line_order_within_the_window() {
        assert_eq!(run(2, &[5, 3, 5, 4, 9, 6]).0, [2, 4, 1, 3, 6, 5]);
        assert_eq!(run(10, &[1, 1, 1]).0, [1, 2, 3]);
    }

    #[test]
    fn an_item_older_than_one_released_is_refused() {
        // Window 1: after 5 and 3 arrive, 3 is released; then 4 goes out, 5 is held, and
        // 2 (earlier than 4, released) is refused.
        let (out, refused) = run(1, &[5, 3, 4, 2, 7]);
        assert_eq!(refused, [4]);
        assert_eq!(out, [2, 3, 1, 5]);
        // Same time as a released item, later line: fine (ties go in file order).
        assert_eq!(run(0, &[3, 3]), (vec![1, 2], vec![]));
    }

    #[test]
    fn items_in_order_skip_the_heap_and_heap_slots_are_reused() {
        let mut r = Reorder::new(2);
        for i in 0..1000 {
            r.push(i, i as usize + 1, i).unwrap();
            while r.pop_if_full().is_some() {}
        }
        assert!(r.slots.is_empty() && r.heap.is_empty());
        // Every other item out of order.
        let mut r = Reorder::new(4);
        for i in 0..1000i64 {
            let t = if i % 2 == 0 { 2 * i + 3 } else { 2 * i };
            r.push(t, i as usize + 1, i).unwrap();
            while r.pop_if_full().is_some() {}
        }
        assert!(r.slots.len() <= 5, "{}", r.slots.len());
        assert_eq!(r.len(), 4);
    }

    /// Against sorting: any sequence, any window, the released order is the sorted order
    /// of the items not refused, and an item is refused only when it must be.
    #[test]
    fn releases_what_a_stable_sort_gives_for_random_input() {
        let mut x: u64 = 7;
        for case in 0..500 {
            let n = 1 + case % 40;
            let window = case % 7;
            let times: Vec<TimestampMs> = (0..n)
                .map(|_| {
                    x ^= x << 13;
                    x ^= x >> 7;
                    x ^= x << 17;
                    (x % 10) as i64
                })
                .collect();
            let (out, refused) = run(window, &times);
            let mut kept: Vec<usize> = (1..=n).filter(|l| !refused.contains(l)).collect();
            kept.sort_by_key(|&l| times[l - 1]);
            assert_eq!(out, kept, "window {window}, times {times:?}");
            if window >= n {
                assert!(refused.is_empty());
            }
        }
    }
}
