//! The admin API's answers, computed by the instance loop that owns the tasks (the HTTP
//! thread only forwards questions): the instance's tasks, a user's pending timers and
//! receipts, or which instance owns the user's task.

use std::collections::BTreeMap;
use std::time::Duration;

use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use serde_json::json;

use super::http::{partition_for_key, AdminRequest};
use super::task::Task;

/// What the answers are computed from.
pub struct AdminView<'a> {
    pub instance_id: &'a str,
    pub group_id: &'a str,
    pub interactions_topic: &'a str,
    pub partitions: usize,
    /// The newest expansion of the inputs: during it a user belongs to its old task until
    /// that task handed its users over.
    pub layout: Option<crate::expansion::Layout>,
    pub tasks: &'a BTreeMap<i32, Task>,
    /// Tasks still being restored.
    pub restoring: &'a dyn Fn(i32) -> bool,
}

/// The task that owns a user now: during an expansion its old task while that one still
/// reads side feeds here, otherwise the task the partition count names.
fn owner_task(view: &AdminView<'_>, user_id: &[u8]) -> i32 {
    if let Some(layout) = view.layout {
        let old = layout.old_owner(user_id);
        let keeps = view
            .tasks
            .get(&old)
            .is_some_and(|t| t.phase() == Some(super::task::Phase::SideFeeds));
        if keeps {
            return old;
        }
    }
    partition_for_key(user_id, view.partitions)
}

/// Answers an admin question from the tasks this instance owns.
pub fn answer<C: ConsumerContext>(
    view: &AdminView<'_>,
    consumer: &BaseConsumer<C>,
    request: AdminRequest,
) {
    match request {
        AdminRequest::Tasks { reply } => {
            let tasks: Vec<_> = view
                .tasks
                .iter()
                .map(|(p, t)| {
                    json!({
                        "task": p,
                        "restored": !(view.restoring)(*p),
                        "users": t.engine.user_count(),
                        "pending_timers": t.engine.pending_count(),
                        "stream_time": t.engine.clock().map(crate::time::format_timestamp),
                        "buffered_records": t.buffered(),
                        "expansion_phase": t.phase().map(|p| format!("{p:?}")),
                    })
                })
                .collect();
            let _ = reply.send((200, json!({"instance": view.instance_id, "tasks": tasks})));
        }
        AdminRequest::User { user_id, reply } => {
            let task = owner_task(view, user_id.as_bytes());
            let answer = match view.tasks.get(&task) {
                Some(t) if !(view.restoring)(task) => {
                    let state = t.engine.export_user(&user_id);
                    let pending: Vec<_> = state
                        .iter()
                        .flat_map(|s| s.pending.iter())
                        .map(|p| {
                            json!({
                                "follow_on_id": p.follow_on_id,
                                "follow_on_version": p.follow_on_version,
                                "due_at": crate::time::format_timestamp(p.due_at),
                                // The decision that led here: SCHEDULED by this trigger.
                                "scheduled_by": {
                                    "decision": "SCHEDULED",
                                    "trigger_event_id": p.trigger.event_id,
                                    "trigger_campaign_id": p.trigger.campaign_id,
                                    "trigger_kind": p.trigger.kind.symbol(),
                                    "triggered_at": crate::time::format_timestamp(p.trigger.occurred_at),
                                },
                            })
                        })
                        .collect();
                    let receipts: Vec<_> = state
                        .iter()
                        .flat_map(|s| s.receipts.iter())
                        .map(|r| {
                            json!({
                                "follow_on_id": r.follow_on_id,
                                // The decision that led here: the last send (FIRED or SENT).
                                "last_sent_at": crate::time::format_timestamp(r.last_sent_at),
                            })
                        })
                        .collect();
                    (
                        200,
                        json!({
                            "user_id": user_id,
                            "task": task,
                            "instance": view.instance_id,
                            "pending": pending,
                            "receipts": receipts,
                        }),
                    )
                }
                Some(_) => (
                    503,
                    json!({"user_id": user_id, "task": task, "error": "the task is being restored"}),
                ),
                None => (
                    409,
                    json!({
                        "user_id": user_id,
                        "task": task,
                        "owned_here": false,
                        "owner_instance": owner_of(view, consumer, task),
                        "error": format!("task {task} is owned by another instance; ask it"),
                    }),
                ),
            };
            let _ = reply.send(answer);
        }
    }
}

/// The instance (client id) that owns input partition `task`, from the group's description
/// (classic protocol). `None` when it cannot be told.
fn owner_of<C: ConsumerContext>(
    view: &AdminView<'_>,
    consumer: &BaseConsumer<C>,
    task: i32,
) -> Option<String> {
    let groups = consumer
        .fetch_group_list(Some(view.group_id), Duration::from_secs(2))
        .ok()?;
    let group = groups.groups().iter().find(|g| g.name() == view.group_id)?;
    for member in group.members() {
        let assignment = member
            .assignment()
            .and_then(decode_assignment)
            .unwrap_or_default();
        if assignment.iter().any(|(topic, partitions)| {
            *topic == view.interactions_topic && partitions.contains(&task)
        }) {
            return Some(member.client_id().to_string());
        }
    }
    None
}

/// The consumer protocol's assignment bytes: version (i16), then topics, each a string
/// (i16 length) and an array of i32 partitions (i32 count).
pub fn decode_assignment(bytes: &[u8]) -> Option<Vec<(String, Vec<i32>)>> {
    let mut at = 2usize;
    let mut take = |n: usize| {
        let slice = bytes.get(at..at + n)?;
        at += n;
        Some(slice)
    };
    let topics = i32::from_be_bytes(take(4)?.try_into().ok()?);
    let mut out = Vec::new();
    for _ in 0..topics.max(0) {
        let len = i16::from_be_bytes(take(2)?.try_into().ok()?) as usize;
        let topic = String::from_utf8_lossy(take(len)?).into_owned();
        let count = i32::from_be_bytes(take(4)?.try_into().ok()?);
        let mut partitions = Vec::new();
        for _ in 0..count.max(0) {
            partitions.push(i32::from_be_bytes(take(4)?.try_into().ok()?));
        }
        out.push((topic, partitions));
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::expansion::Layout;
    use crate::runtime::task::{Phase, TaskExpansion};
    use crate::validate::Limits;

    #[test]
    fn during_an_expansion_a_user_belongs_to_its_old_task_until_that_task_hands_off() {
        let layout = Layout {
            epoch: 1,
            from: 6,
            to: 12,
            cut_at: 1_000,
            created_at: 0,
        };
        let user = (0..)
            .map(|i| format!("user-{i}"))
            .find(|u| layout.old_owner(u.as_bytes()) != layout.new_owner(u.as_bytes()))
            .unwrap();
        let (old, new) = (
            layout.old_owner(user.as_bytes()),
            layout.new_owner(user.as_bytes()),
        );
        let mut tasks = BTreeMap::new();
        let mut task = Task::new(old, ["i", "u"], Limits::default(), (500, 50), false);
        task.expansion = Some(TaskExpansion {
            layout,
            phase: Phase::SideFeeds,
            cuts: [None, None],
            reached: [false; 2],
        });
        tasks.insert(old, task);
        let restoring = |_: i32| false;
        let owner = |tasks: &BTreeMap<i32, Task>, layout: Option<Layout>| {
            let view = AdminView {
                instance_id: "i0",
                group_id: "g",
                interactions_topic: "interactions",
                partitions: 12,
                layout,
                tasks,
                restoring: &restoring,
            };
            owner_task(&view, user.as_bytes())
        };
        assert_eq!(owner(&tasks, Some(layout)), old);
        tasks
            .get_mut(&old)
            .unwrap()
            .expansion
            .as_mut()
            .unwrap()
            .phase = Phase::Done;
        assert_eq!(owner(&tasks, Some(layout)), new);
        assert_eq!(owner(&tasks, None), new);
    }
}
