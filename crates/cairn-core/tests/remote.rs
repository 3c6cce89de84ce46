//! The state machine of a remote run (code in a Temporal SDK worker): one workflow task at a
//! time, inputs buffered while it is out, completions applied as the executor's commands
//! are, stale and lost tasks handed out again.

use cairn_core::{
    Effect, Message, RemoteCode, Run, RunStatus, StartArgs, TimerId,
    WORKFLOW_TASK_RETRY_PAUSE_MAX_MS, workflow_task_retry_pause_ms,
};
use cairn_types::{
    ActivityOptions, ActivityTimeouts, Command, Payload, RetryPolicy, WorkflowTimeouts,
};
use std::time::Duration;

fn p<T: serde::Serialize>(value: T) -> Payload {
    Payload::encode(&value).unwrap()
}

fn start() -> Run {
    let args = StartArgs {
        workflow_type: "Remote".into(),
        input: p("in"),
        random_seed: 1,
        timeouts: WorkflowTimeouts::default(),
        execution_started_unix_ms: None,
        memo: Default::default(),
        search_attributes: Default::default(),
        cron: None,
    };
    let (run, t) = Run::start_remote(args, RemoteCode::new("q".into(), 10_000), 1_000).unwrap();
    let kinds: Vec<&str> = t.events.iter().map(|e| e.kind.name()).collect();
    assert_eq!(kinds, ["WorkflowExecutionStarted"], "no task completed yet");
    assert!(
        t.effects.contains(&Effect::ScheduleTimer {
            timer: TimerId::WorkflowTask { task: 1 },
            fire_at_unix_ms: 11_000
        }),
        "the owed task's check timer: {:?}",
        t.effects
    );
    run
}

fn names(t: &cairn_core::Transition) -> Vec<&'static str> {
    t.events.iter().map(|e| e.kind.name()).collect()
}

fn signal(name: &str) -> Message {
    Message::Signal {
        name: name.into(),
        input: p(()),
    }
}

fn activity(seq: u32) -> Command {
    Command::ScheduleActivity {
        seq,
        activity_type: "charge".into(),
        input: p(1),
        options: ActivityOptions {
            task_queue: "q".into(),
            timeouts: ActivityTimeouts::start_to_close(Duration::from_secs(5)),
            retry: RetryPolicy::default(),
        },
    }
}

#[test]
fn one_task_at_a_time_and_its_commands_apply_like_the_executors() {
    let mut run = start();
    assert_eq!(run.take_workflow_task(), Some((1, 1)));
    assert_eq!(run.take_workflow_task(), None, "one task out at a time");
    let t = run
        .handle(
            vec![Message::WorkflowTaskCompleted {
                task: 1,
                attempt: 1,
                commands: vec![activity(4)],
                new_task: false,
            }],
            2_000,
        )
        .unwrap();
    // Cairn's order: a task's command events, then its marker (a closing command's event
    // follows the marker).
    assert_eq!(
        names(&t),
        ["ActivityTaskScheduled", "WorkflowTaskCompleted"]
    );
    assert!(
        t.effects
            .iter()
            .any(|e| matches!(e, Effect::EnqueueActivityTask { seq: 4, .. })),
        "the activity is enqueued: {:?}",
        t.effects
    );
    assert_eq!(
        run.take_workflow_task(),
        None,
        "nothing owed until a result"
    );
    let t = run
        .handle(
            vec![Message::ActivityCompleted {
                seq: 4,
                attempt: 1,
                result: p(2),
            }],
            3_000,
        )
        .unwrap();
    assert_eq!(names(&t), ["ActivityTaskCompleted"]);
    assert_eq!(
        run.take_workflow_task(),
        Some((2, 1)),
        "the result owes task 2"
    );
    let t = run
        .handle(
            vec![Message::WorkflowTaskCompleted {
                task: 2,
                attempt: 1,
                commands: vec![Command::CompleteWorkflow { result: p("done") }],
                new_task: false,
            }],
            4_000,
        )
        .unwrap();
    assert_eq!(
        names(&t),
        ["WorkflowTaskCompleted", "WorkflowExecutionCompleted"]
    );
    assert_eq!(run.state().status, RunStatus::Completed);
    assert_eq!(run.take_workflow_task(), None, "a closed run owes nothing");
}

#[test]
fn inputs_arriving_while_a_task_is_out_follow_its_commands_and_owe_the_next() {
    let mut run = start();
    assert_eq!(run.take_workflow_task(), Some((1, 1)));
    let t = run.handle(vec![signal("a")], 1_500).unwrap();
    assert!(
        t.events.is_empty(),
        "buffered, not recorded: {:?}",
        names(&t)
    );
    assert_eq!(run.remote().unwrap().buffered.len(), 1);
    let t = run
        .handle(
            vec![Message::WorkflowTaskCompleted {
                task: 1,
                attempt: 1,
                commands: vec![Command::StartTimer {
                    seq: 5,
                    duration_ms: 60_000,
                }],
                new_task: false,
            }],
            2_000,
        )
        .unwrap();
    assert_eq!(
        names(&t),
        [
            "TimerStarted",
            "WorkflowTaskCompleted",
            "WorkflowExecutionSignaled"
        ],
        "the worker's commands, then what it has not seen"
    );
    assert_eq!(
        run.take_workflow_task(),
        Some((2, 1)),
        "and the signal owes task 2"
    );
}

#[test]
fn a_completion_that_closes_the_run_past_unseen_inputs_is_stale() {
    let mut run = start();
    assert_eq!(run.take_workflow_task(), Some((1, 1)));
    run.handle(vec![signal("late")], 1_500).unwrap();
    let close = vec![Command::CompleteWorkflow { result: p(0) }];
    assert!(run.completion_is_stale(&close));
    let t = run
        .handle(
            vec![Message::WorkflowTaskCompleted {
                task: 1,
                attempt: 1,
                commands: close,
                new_task: false,
            }],
            2_000,
        )
        .unwrap();
    assert_eq!(
        names(&t),
        ["WorkflowExecutionSignaled"],
        "the close is dropped, the signal recorded"
    );
    assert_eq!(run.state().status, RunStatus::Running);
    assert_eq!(run.take_workflow_task(), Some((2, 1)));
}

#[test]
fn a_failed_or_timed_out_task_is_handed_out_again_and_stale_answers_are_ignored() {
    let mut run = start();
    assert_eq!(run.take_workflow_task(), Some((1, 1)));
    let t = run
        .handle(
            vec![Message::WorkflowTaskFailed {
                task: 1,
                attempt: 1,
                why: None,
            }],
            5_000,
        )
        .unwrap();
    assert!(t.events.is_empty(), "a failed attempt leaves no event");
    assert!(
        t.effects.contains(&Effect::ScheduleTimer {
            timer: TimerId::WorkflowTask { task: 1 },
            fire_at_unix_ms: 15_000
        }),
        "the check timer moves: {:?}",
        t.effects
    );
    assert_eq!(run.take_workflow_task(), Some((1, 2)), "attempt 2");
    // The first attempt's worker answers late: not the task out.
    let t = run
        .handle(
            vec![Message::WorkflowTaskCompleted {
                task: 1,
                attempt: 1,
                commands: vec![Command::CompleteWorkflow { result: p(0) }],
                new_task: false,
            }],
            6_000,
        )
        .unwrap();
    assert!(t.events.is_empty(), "ignored: {:?}", names(&t));
    assert_eq!(run.state().status, RunStatus::Running);
    assert!(run.holds_workflow_task(1, 2));
}

#[test]
fn a_run_resumed_from_its_snapshot_has_no_task_out() {
    let mut run = start();
    assert_eq!(run.take_workflow_task(), Some((1, 1)));
    run.handle(vec![signal("s")], 1_500).unwrap();
    // What the store holds: the snapshot after the signal's transition.
    let stored: cairn_core::RunState =
        rmp_serde::from_slice(&rmp_serde::to_vec_named(run.state()).unwrap()).unwrap();
    let mut resumed = Run::resume_remote(stored).unwrap();
    let remote = resumed.remote().unwrap();
    assert!(
        !remote.task_out,
        "the worker's task died with the node's life"
    );
    assert_eq!(remote.buffered.len(), 1, "the buffered signal is kept");
    assert_eq!(
        resumed.take_workflow_task(),
        None,
        "buffered inputs are recorded before a task is handed out"
    );
    // The check timer's firing records them and hands the task out again.
    let t = resumed
        .handle(
            vec![Message::TimerFired {
                timer: TimerId::WorkflowTask { task: 1 },
            }],
            11_000,
        )
        .unwrap();
    assert_eq!(names(&t), ["WorkflowExecutionSignaled"]);
    assert_eq!(resumed.take_workflow_task(), Some((1, 1)));
    assert!(
        resumed
            .state()
            .remote
            .as_ref()
            .is_some_and(|r| r.buffered.is_empty())
    );
}

#[test]
fn a_run_closed_while_its_task_is_out_owes_nothing_and_refuses_the_answer() {
    let mut run = start();
    assert_eq!(run.take_workflow_task(), Some((1, 1)));
    let t = run
        .handle(
            vec![Message::Terminate {
                reason: "by hand".into(),
            }],
            2_000,
        )
        .unwrap();
    assert_eq!(names(&t), ["WorkflowExecutionTerminated"]);
    assert!(
        !run.holds_workflow_task(1, 1),
        "the worker's answer is refused"
    );
    let remote = run.remote().unwrap();
    assert!(!remote.task_out && !remote.task_due && remote.task_timer_at.is_none());
    assert_eq!(run.take_workflow_task(), None);
}

#[test]
fn continue_as_new_without_a_type_continues_the_same_workflow() {
    let mut run = start();
    assert_eq!(run.take_workflow_task(), Some((1, 1)));
    let t = run
        .handle(
            vec![Message::WorkflowTaskCompleted {
                task: 1,
                attempt: 1,
                commands: vec![Command::ContinueAsNew {
                    workflow_type: String::new(),
                    input: p(2),
                    memo: None,
                    search_attributes: None,
                }],
                new_task: false,
            }],
            2_000,
        )
        .unwrap();
    assert!(
        t.effects.iter().any(|e| matches!(
            e,
            Effect::ContinueAsNew { workflow_type, .. } if workflow_type == "Remote"
        )),
        "{:?}",
        t.effects
    );
    assert_eq!(run.state().status, RunStatus::ContinuedAsNew);
}

/// The fire time of the check timer of task `task` these effects arm.
fn check_timer(effects: &[Effect], task: u32) -> Option<u64> {
    effects.iter().find_map(|e| match e {
        Effect::ScheduleTimer {
            timer: TimerId::WorkflowTask { task: t },
            fire_at_unix_ms,
        } if *t == task => Some(*fire_at_unix_ms),
        _ => None,
    })
}

fn fail(run: &mut Run, task: u32, attempt: u32, now: u64) -> cairn_core::Transition {
    run.handle(
        vec![Message::WorkflowTaskFailed {
            task,
            attempt,
            why: None,
        }],
        now,
    )
    .unwrap()
}

#[test]
fn a_task_failing_again_and_again_is_handed_out_after_a_growing_pause() {
    assert_eq!(
        (1..=12)
            .map(workflow_task_retry_pause_ms)
            .collect::<Vec<_>>(),
        [
            0, 0, 1_000, 2_000, 4_000, 8_000, 16_000, 32_000, 60_000, 60_000, 60_000, 60_000
        ]
    );
    assert_eq!(
        workflow_task_retry_pause_ms(u32::MAX),
        WORKFLOW_TASK_RETRY_PAUSE_MAX_MS
    );
    let mut run = start();
    assert_eq!(run.take_workflow_task(), Some((1, 1)));
    fail(&mut run, 1, 1, 2_000);
    assert_eq!(
        run.take_workflow_task(),
        Some((1, 2)),
        "the first retry is at once"
    );
    let t = fail(&mut run, 1, 2, 3_000);
    assert!(t.events.is_empty());
    assert_eq!(check_timer(&t.effects, 1), Some(4_000), "a 1 s pause");
    assert_eq!(run.take_workflow_task(), None, "not during the pause");
    assert!(!run.remote().unwrap().task_due);
    // The pause survives a restart: it is in the snapshot, and its timer is durable.
    let snapshot: RemoteCode =
        rmp_serde::from_slice(&rmp_serde::to_vec_named(run.remote().unwrap()).unwrap()).unwrap();
    assert!(snapshot.backing_off && !snapshot.task_due);
    assert_eq!(snapshot.task_timer_at, Some(4_000));

    let t = run
        .handle(
            vec![Message::TimerFired {
                timer: TimerId::WorkflowTask { task: 1 },
            }],
            4_000,
        )
        .unwrap();
    assert!(t.events.is_empty());
    assert_eq!(
        check_timer(&t.effects, 1),
        Some(14_000),
        "owed again, checked at the task timeout"
    );
    assert_eq!(run.take_workflow_task(), Some((1, 3)));
    let t = fail(&mut run, 1, 3, 5_000);
    assert_eq!(check_timer(&t.effects, 1), Some(7_000), "then 2 s");
    assert_eq!(run.take_workflow_task(), None);
    // An older timer of the same task (a check armed before this failure) firing during the
    // pause does not cut it short.
    let t = run
        .handle(
            vec![Message::TimerFired {
                timer: TimerId::WorkflowTask { task: 1 },
            }],
            6_000,
        )
        .unwrap();
    assert!(t.effects.is_empty() && t.events.is_empty(), "{t:?}");
    assert_eq!(run.take_workflow_task(), None, "still pausing");
    assert!(run.remote().unwrap().backing_off);

    // New input during the pause: a new task, attempt 1, owed at once; the old timer is
    // ignored when it fires.
    let t = run.handle(vec![signal("retry")], 6_000).unwrap();
    assert_eq!(names(&t), ["WorkflowExecutionSignaled"]);
    assert_eq!(run.take_workflow_task(), Some((2, 1)));
    let t = run
        .handle(
            vec![Message::TimerFired {
                timer: TimerId::WorkflowTask { task: 1 },
            }],
            7_000,
        )
        .unwrap();
    assert!(t.effects.is_empty() && t.events.is_empty(), "{t:?}");
    assert!(run.holds_workflow_task(2, 1));
}

#[test]
fn the_check_timer_of_a_task_nobody_takes_backs_off_to_a_minute() {
    let mut run = start();
    let mut at = 11_000;
    let mut periods = Vec::new();
    for _ in 0..5 {
        let t = run
            .handle(
                vec![Message::TimerFired {
                    timer: TimerId::WorkflowTask { task: 1 },
                }],
                at,
            )
            .unwrap();
        let next = t
            .effects
            .iter()
            .find_map(|e| match e {
                Effect::ScheduleTimer {
                    timer: TimerId::WorkflowTask { task: 1 },
                    fire_at_unix_ms,
                } => Some(*fire_at_unix_ms),
                _ => None,
            })
            .expect("re-armed while owed");
        periods.push(next - at);
        at = next;
    }
    assert_eq!(periods, [20_000, 40_000, 60_000, 60_000, 60_000]);
    // A worker takes it at last; the next task checks at the task timeout again.
    assert_eq!(run.take_workflow_task(), Some((1, 1)));
    run.handle(
        vec![Message::WorkflowTaskCompleted {
            task: 1,
            attempt: 1,
            commands: vec![],
            new_task: false,
        }],
        at,
    )
    .unwrap();
    let t = run.handle(vec![signal("s")], at + 1).unwrap();
    assert!(t.effects.contains(&Effect::ScheduleTimer {
        timer: TimerId::WorkflowTask { task: 2 },
        fire_at_unix_ms: at + 1 + 10_000
    }));
}

#[test]
fn upserts_past_the_search_attribute_bounds_are_refused_whole() {
    let run = start();
    let many: cairn_types::SearchAttributes = (0..cairn_types::limits::SEARCH_ATTRIBUTES_MAX + 1)
        .map(|i| (format!("A{i}"), cairn_types::SearchValue::Int(i as i64)))
        .collect();
    let too_many = vec![Command::UpsertSearchAttributes {
        attributes: many,
        removed: Vec::new(),
    }];
    assert!(run.refusal(&too_many).is_some_and(|r| r.contains("limit")));
    let fine = vec![Command::UpsertSearchAttributes {
        attributes: [(
            "Tag".to_string(),
            cairn_types::SearchValue::Keyword("x".into()),
        )]
        .into(),
        removed: Vec::new(),
    }];
    assert_eq!(run.refusal(&fine), None);
    assert_eq!(
        run.refusal(&[Command::CompleteWorkflow { result: p(0) }]),
        None
    );
}

/// Proves a completion asking for a new task (a worker heartbeating long local activities)
/// owes the next task at once with nothing else arriving, records its markers, and one that
/// does not ask owes nothing.
#[test]
fn a_completion_can_ask_for_the_next_task_at_once() {
    let mut run = start();
    assert_eq!(run.take_workflow_task(), Some((1, 1)));
    let marker = Command::RecordMarker {
        seq: 3,
        marker_name: "core_local_activity".into(),
        details: p("result"),
    };
    let t = run
        .handle(
            vec![Message::WorkflowTaskCompleted {
                task: 1,
                attempt: 1,
                commands: vec![marker],
                new_task: true,
            }],
            2_000,
        )
        .unwrap();
    assert_eq!(names(&t), ["MarkerRecorded", "WorkflowTaskCompleted"]);
    assert_eq!(
        run.take_workflow_task(),
        Some((2, 1)),
        "the next task, at once"
    );
    run.handle(
        vec![Message::WorkflowTaskCompleted {
            task: 2,
            attempt: 1,
            commands: Vec::new(),
            new_task: false,
        }],
        3_000,
    )
    .unwrap();
    assert_eq!(
        run.take_workflow_task(),
        None,
        "nothing is owed without asking"
    );
}

/// An earlier holder's task is adopted only while it is the task owed and the history is as
/// its worker saw it: not once an input was recorded since, not for another task or attempt,
/// not once the run closed; a task out here too is held by both, and the first completion
/// wins.
#[test]
fn an_earlier_holders_task_is_adopted_only_on_the_history_its_worker_saw() {
    let mut run = start();
    let seen = run.state().next_event_id;
    assert!(!run.adopt_workflow_task(1, 2, seen), "another attempt");
    assert!(!run.adopt_workflow_task(2, 1, seen), "another task");
    assert!(!run.adopt_workflow_task(1, 1, seen + 1), "another history");
    assert!(
        run.adopt_workflow_task(1, 1, seen),
        "the task owed, as seen"
    );
    assert!(run.holds_workflow_task(1, 1));
    assert_eq!(run.take_workflow_task(), None, "adopted: out");

    // Handed out here too, then adopted: one completion applies, the other finds no task.
    let mut run = start();
    assert_eq!(run.take_workflow_task(), Some((1, 1)));
    assert!(run.adopt_workflow_task(1, 1, seen), "held by both");
    let done = |task| Message::WorkflowTaskCompleted {
        task,
        attempt: 1,
        commands: vec![activity(4)],
        new_task: false,
    };
    let t = run.handle(vec![done(1)], 2_000).unwrap();
    assert_eq!(
        names(&t),
        ["ActivityTaskScheduled", "WorkflowTaskCompleted"]
    );
    assert!(
        !run.holds_workflow_task(1, 1),
        "the second completion finds no task"
    );
    assert!(
        !run.adopt_workflow_task(1, 1, seen),
        "nor does the earlier holder's, once the history moved on"
    );

    // An input recorded since the earlier holder's hand-out: its worker did not see it.
    let mut run = start();
    run.handle(vec![signal("a")], 1_500).unwrap();
    assert!(!run.adopt_workflow_task(1, 1, seen));
    assert!(run.adopt_workflow_task(1, 1, run.state().next_event_id));

    // A closed run adopts nothing.
    let mut run = start();
    run.handle(
        vec![Message::Terminate {
            reason: "done".into(),
        }],
        1_500,
    )
    .unwrap();
    assert!(!run.adopt_workflow_task(1, 1, run.state().next_event_id));
}
