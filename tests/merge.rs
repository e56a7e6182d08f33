//! The event-time merge: however the records of a task's input partitions happen to
//! arrive, the merge hands them to the engine in the same order, so the output is the same.

mod common;

use std::collections::VecDeque;

use campaign_connector::engine::Effect;
use campaign_connector::merge::{Head, InputState, Merge, Next};
use campaign_connector::model::InputEvent;
use common::*;
use proptest::prelude::*;

/// Records of one input partition, in offset order: (event time, record).
type Partition = Vec<(i64, InputEvent)>;

fn event(rank: usize, n: usize, user: &str, t: i64) -> InputEvent {
    let id = format!("{rank}-{n}");
    if rank == 0 {
        let kind = if n % 2 == 0 {
            campaign_connector::model::InteractionKind::PushReceived
        } else {
            campaign_connector::model::InteractionKind::PushDirectOpen
        };
        interaction(&id, user, "cart", kind, t)
    } else {
        bought(&id, user, "sku-1", t)
    }
}

fn partitions() -> impl Strategy<Value = [Partition; 2]> {
    let records = |rank: usize| {
        prop::collection::vec((0i64..12, 0usize..3), 0..14).prop_map(move |v| {
            v.into_iter()
                .enumerate()
                .map(|(n, (slot, user))| {
                    let t = T0 + slot * 20 * MIN;
                    (t, event(rank, n, ["u1", "u2", "u3"][user], t))
                })
                .collect::<Partition>()
        })
    };
    (records(0), records(1)).prop_map(|(a, b)| [a, b])
}

/// Feeds the records through the merge with an arrival schedule (`true`: the next record of
/// partition 0 arrives, `false`: of partition 1), asking the merge what to do after every
/// arrival. The merge never times out here (the bounded wait is for stalled producers).
fn merged(parts: &[Partition; 2], schedule: &[bool]) -> Vec<InputEvent> {
    let mut merge = Merge::new(i64::MAX, i64::MAX);
    let mut pending: [VecDeque<(i64, i64, InputEvent)>; 2] = Default::default();
    let mut to_arrive: [VecDeque<(i64, i64, InputEvent)>; 2] = std::array::from_fn(|i| {
        parts[i]
            .iter()
            .enumerate()
            .map(|(o, (t, e))| (*t, o as i64, e.clone()))
            .collect()
    });
    let mut out = Vec::new();
    let mut schedule = schedule.iter().copied().cycle();
    loop {
        // Take while the merge allows it.
        loop {
            let states: Vec<InputState> = (0..2)
                .map(|i| InputState {
                    rank: i as u8,
                    head: pending[i].front().map(|(t, o, _)| Head {
                        occurred_at: *t,
                        offset: *o,
                    }),
                    at_end: to_arrive[i].is_empty(),
                    behind: false,
                })
                .collect();
            match merge.choose(&states, 0) {
                Next::Take(i) => out.push(pending[i].pop_front().unwrap().2),
                Next::Wait { .. } | Next::Idle => break,
            }
        }
        if to_arrive.iter().all(VecDeque::is_empty) && pending.iter().all(VecDeque::is_empty) {
            return out;
        }
        // One record arrives, from the scheduled partition if it has one left.
        let first = if schedule.next().unwrap() { 0 } else { 1 };
        let from = if to_arrive[first].is_empty() {
            1 - first
        } else {
            first
        };
        if let Some(r) = to_arrive[from].pop_front() {
            pending[from].push_back(r);
        }
    }
}

/// The order SPEC §3 defines: by event time, interactions before user events at equal
/// times, offset order within a partition — what the merge yields with everything at hand.
fn reference_order(parts: &[Partition; 2]) -> Vec<InputEvent> {
    let mut heads = [0usize, 0usize];
    let mut out = Vec::new();
    loop {
        let next = (0..2)
            .filter(|&i| heads[i] < parts[i].len())
            .min_by_key(|&i| (parts[i][heads[i]].0, i));
        let Some(i) = next else { return out };
        out.push(parts[i][heads[i]].1.clone());
        heads[i] += 1;
    }
}

fn run(events: &[InputEvent]) -> Vec<Effect> {
    let mut w = World::with([
        campaign("cart"),
        follow_on(
            "F",
            "cart",
            &[campaign_connector::model::InteractionKind::PushReceived],
        )
        .after(30 * MIN)
        .except(on(&[
            campaign_connector::model::InteractionKind::PushDirectOpen,
        ]))
        .except(purchase()),
    ]);
    let mut out = Vec::new();
    for e in events {
        out.extend(w.on(e.clone()));
    }
    out.extend(w.advance(T0 + DAY));
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn any_arrival_order_gives_the_same_processing_order_and_output(
        parts in partitions(),
        schedule_a in prop::collection::vec(any::<bool>(), 1..40),
        schedule_b in prop::collection::vec(any::<bool>(), 1..40),
    ) {
        let a = merged(&parts, &schedule_a);
        let b = merged(&parts, &schedule_b);
        let expected = reference_order(&parts);
        prop_assert_eq!(&a, &expected);
        prop_assert_eq!(&b, &expected);
        prop_assert_eq!(run(&a), run(&b));
    }
}
