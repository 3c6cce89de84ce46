//! Data-driven tests of the run state machine and executor: a workflow, a script of messages
//! with times, and the events, effects and snapshot that come out, compared with expectations
//! (`UPDATE_EXPECT=1 cargo test -p cairn-core` refreshes them after an intended change; review
//! the diff).

use cairn_core::{
    ActivityError, ChildError, ChildOutcome, Effect, Message, Run, RunError, StartArgs, TimerId,
    WorkflowContext, WorkflowError, WorkflowFn,
};
use cairn_types::{
    ActivityOptions, ActivityTimeouts, ChildOptions, EventKind, Failure, HistoryEvent,
    ParentClosePolicy, Payload, RetryPolicy, RunId, SearchValue, UpdateOutcome, WorkflowId,
    WorkflowTimeouts,
};
use expect_test::{Expect, expect};
use std::cell::RefCell;
use std::rc::Rc;
use std::time::Duration;

fn p<T: serde::Serialize>(value: T) -> Payload {
    Payload::encode(&value).unwrap()
}

fn text(payload: &Payload) -> String {
    payload
        .decode::<String>()
        .map(|s| format!("{s:?}"))
        .or_else(|_| payload.decode::<i64>().map(|n| n.to_string()))
        .unwrap_or_else(|_| format!("<{} bytes>", payload.len()))
}

fn options(retry: RetryPolicy) -> ActivityOptions {
    ActivityOptions {
        task_queue: "default".into(),
        timeouts: ActivityTimeouts::start_to_close(Duration::from_secs(10)),
        retry,
    }
}

fn workflow<F, Fut>(f: F) -> WorkflowFn
where
    F: Fn(WorkflowContext, Payload) -> Fut + 'static,
    Fut: std::future::Future<Output = Result<Payload, WorkflowError>> + 'static,
{
    Rc::new(move |ctx, input| Box::pin(f(ctx, input)))
}

fn render_event(e: &HistoryEvent) -> String {
    let body = match &e.kind {
        EventKind::WorkflowExecutionStarted { input, .. } => format!("input={}", text(input)),
        EventKind::ActivityTaskScheduled {
            seq,
            activity_type,
            input,
            ..
        } => format!("seq={seq} type={activity_type} input={}", text(input)),
        EventKind::ActivityTaskCompleted {
            seq,
            attempt,
            result,
        } => {
            format!("seq={seq} attempt={attempt} result={}", text(result))
        }
        EventKind::ActivityTaskFailed {
            seq,
            attempt,
            failure,
        } => {
            format!("seq={seq} attempt={attempt} failure={failure}")
        }
        EventKind::ActivityTaskTimedOut {
            seq,
            attempt,
            timeout,
        } => {
            format!("seq={seq} attempt={attempt} timeout={timeout}")
        }
        EventKind::TimerStarted { seq, duration_ms } => format!("seq={seq} ms={duration_ms}"),
        EventKind::TimerFired { seq } | EventKind::TimerCanceled { seq } => format!("seq={seq}"),
        EventKind::ActivityTaskCancelRequested { seq }
        | EventKind::ActivityTaskCanceled { seq } => {
            format!("seq={seq}")
        }
        EventKind::WorkflowExecutionSignaled { signal_name, input } => {
            format!("name={signal_name} input={}", text(input))
        }
        EventKind::MarkerRecorded {
            seq,
            marker_name,
            details,
        } => {
            format!("seq={seq} name={marker_name} details={}", text(details))
        }
        EventKind::WorkflowExecutionCancelRequested { reason }
        | EventKind::WorkflowExecutionTerminated { reason } => format!("reason={reason:?}"),
        EventKind::WorkflowExecutionCompleted { result } => format!("result={}", text(result)),
        EventKind::WorkflowExecutionFailed { failure } => format!("failure={failure}"),
        EventKind::StartChildWorkflowExecutionInitiated {
            seq,
            workflow_type,
            workflow_id,
            options,
            ..
        } => format!(
            "seq={seq} type={workflow_type} id={workflow_id} policy={:?}",
            options.parent_close_policy
        ),
        EventKind::StartChildWorkflowExecutionFailed { seq, cause, .. } => {
            format!("seq={seq} cause={cause:?}")
        }
        EventKind::ChildWorkflowExecutionStarted {
            seq, workflow_id, ..
        } => {
            format!("seq={seq} id={workflow_id}")
        }
        EventKind::ChildWorkflowExecutionCompleted { seq, result } => {
            format!("seq={seq} result={}", text(result))
        }
        EventKind::ChildWorkflowExecutionFailed { seq, failure } => {
            format!("seq={seq} failure={failure}")
        }
        EventKind::ChildWorkflowExecutionTerminated { seq, reason } => {
            format!("seq={seq} reason={reason:?}")
        }
        EventKind::ChildWorkflowExecutionCanceled { seq }
        | EventKind::ChildWorkflowExecutionTimedOut { seq }
        | EventKind::RequestCancelExternalWorkflowExecutionInitiated { seq, .. } => {
            format!("seq={seq}")
        }
        EventKind::WorkflowExecutionContinuedAsNew { input, .. } => {
            format!("input={}", text(input))
        }
        EventKind::UpsertWorkflowSearchAttributes { attributes, .. } => {
            format!("attributes={attributes:?}")
        }
        EventKind::WorkflowExecutionUpdateAccepted {
            update_id,
            name,
            input,
            ..
        } => format!("id={update_id} name={name} input={}", text(input)),
        EventKind::WorkflowExecutionUpdateCompleted {
            update_id,
            accepted_event_id,
            outcome,
        } => format!(
            "id={update_id} accepted={accepted_event_id} outcome={}",
            match outcome {
                UpdateOutcome::Success(result) => text(result),
                UpdateOutcome::Failure(failure) => failure.to_string(),
            }
        ),
        _ => String::new(),
    };
    format!(
        "  {:>2} @{} {} {body}",
        e.event_id,
        e.time_unix_ms,
        e.kind.name()
    )
    .trim_end()
    .to_string()
}

fn render_effect(e: &Effect) -> String {
    match e {
        Effect::EnqueueActivityTask {
            seq,
            attempt,
            activity_type,
            ..
        } => format!("  -> enqueue {activity_type} seq={seq} attempt={attempt}"),
        Effect::ScheduleTimer {
            timer,
            fire_at_unix_ms,
        } => {
            format!("  -> timer {timer:?} at {fire_at_unix_ms}")
        }
        Effect::CancelActivityTask { seq } => format!("  -> cancel activity seq={seq}"),
        Effect::RunClosed { status } => format!("  -> closed {status:?}"),
        Effect::StartChild {
            seq,
            workflow_type,
            workflow_id,
            ..
        } => format!("  -> start child {workflow_type} id={workflow_id} seq={seq}"),
        Effect::CancelChild {
            seq, workflow_id, ..
        } => format!("  -> cancel child id={workflow_id} seq={seq}"),
        Effect::ApplyParentClosePolicy {
            workflow_id,
            policy,
            ..
        } => format!("  -> parent close policy {policy:?} on {workflow_id}"),
        Effect::ContinueAsNew { input, .. } => {
            format!("  -> continue as new input={}", text(input))
        }
        Effect::SearchAttributesChanged => "  -> search attributes changed".to_string(),
        Effect::MemoChanged => "  -> memo changed".to_string(),
        Effect::SignalExternal {
            seq,
            workflow_id,
            signal_name,
            ..
        } => format!("  -> signal {signal_name} to {workflow_id} seq={seq}"),
        Effect::CancelExternal {
            seq, workflow_id, ..
        } => format!("  -> cancel {workflow_id} seq={seq}"),
        Effect::UpdateRejected { update_id, failure } => {
            format!("  -> update {update_id} rejected: {failure}")
        }
        Effect::CronNext { cron } => format!(
            "  -> cron next after {} ms, last result {:?}, failure {:?}",
            cron.first_task_backoff_ms,
            cron.last_completion_result.as_ref().map(text),
            cron.continued_failure.as_ref().map(|f| f.message.clone()),
        ),
    }
}

/// Runs a script and renders every step, the final snapshot summary, and the full history.
struct Script {
    run: Run,
    history: Vec<HistoryEvent>,
    out: String,
}

impl Script {
    fn start(workflow: &WorkflowFn, input: Payload, timeouts: WorkflowTimeouts) -> Self {
        let args = StartArgs {
            workflow_type: "Test".into(),
            input,
            random_seed: 42,
            timeouts,
            execution_started_unix_ms: None,
            memo: Default::default(),
            search_attributes: Default::default(),
            cron: None,
        };
        Self::start_with(workflow, args, 1_000)
    }

    fn start_with(workflow: &WorkflowFn, args: StartArgs, now: u64) -> Self {
        let (run, transition) = Run::start(workflow, args, now).unwrap();
        let mut script = Script {
            run,
            history: Vec::new(),
            out: String::new(),
        };
        script.record("start", transition);
        script
    }

    fn step(&mut self, now: u64, messages: Vec<Message>) -> &mut Self {
        let label = format!("{messages:?}");
        let label = label.chars().take(90).collect::<String>();
        let transition = self.run.handle(messages, now).unwrap();
        self.record(&format!("@{now} {label}"), transition);
        self
    }

    fn record(&mut self, label: &str, transition: cairn_core::Transition) {
        self.out.push_str(label);
        self.out.push('\n');
        for e in &transition.events {
            self.out.push_str(&render_event(e));
            self.out.push('\n');
        }
        for e in &transition.effects {
            self.out.push_str(&render_effect(e));
            self.out.push('\n');
        }
        self.history.extend(transition.events);
    }

    fn check(&mut self, expected: Expect) {
        let state = self.run.state();
        self.out.push_str(&format!(
            "status={:?} next_event_id={} pending_activities={:?} timers={:?}\n",
            state.status,
            state.next_event_id,
            state.activities.keys().collect::<Vec<_>>(),
            state.timers
        ));
        expected.assert_eq(&self.out);
    }
}

fn completed(seq: u32, attempt: u32, result: &str) -> Message {
    Message::ActivityCompleted {
        seq,
        attempt,
        result: p(result),
    }
}

fn failed(seq: u32, attempt: u32, error_type: &str) -> Message {
    Message::ActivityFailed {
        seq,
        attempt,
        failure: Failure::new(error_type, "boom"),
    }
}

/// The order shape: one activity, a timer, then two activities in parallel.
fn order_workflow() -> WorkflowFn {
    workflow(|ctx: WorkflowContext, input: Payload| async move {
        let o = || options(RetryPolicy::default());
        let charged = ctx.schedule_activity("charge", input, o()).await?;
        ctx.sleep(Duration::from_secs(5)).await;
        let (a, b) = futures::join!(
            ctx.schedule_activity("email", charged.clone(), o()),
            ctx.schedule_activity("ship", charged, o())
        );
        let done = format!(
            "{}+{}",
            a?.decode::<String>().unwrap(),
            b?.decode::<String>().unwrap()
        );
        Ok(p(done))
    })
}

/// Proves sequencing, durable timers, parallel activities and completion, event by event.
#[test]
fn order_flow_transitions() {
    let wf = order_workflow();
    let mut s = Script::start(&wf, p("order-7"), WorkflowTimeouts::default());
    s.step(1_100, vec![completed(1, 1, "charged")])
        .step(
            6_100,
            vec![Message::TimerFired {
                timer: TimerId::User { seq: 2 },
            }],
        )
        .step(6_200, vec![completed(4, 1, "shipped")])
        .step(
            6_300,
            vec![completed(3, 1, "emailed"), completed(3, 1, "emailed")],
        );
    s.check(expect![[r#"
        start
           1 @1000 WorkflowExecutionStarted input="order-7"
           2 @1000 ActivityTaskScheduled seq=1 type=charge input="order-7"
           3 @1000 WorkflowTaskCompleted
          -> enqueue charge seq=1 attempt=1
        @1100 [ActivityCompleted { seq: 1, attempt: 1, result: Payload(8 bytes) }]
           4 @1100 ActivityTaskCompleted seq=1 attempt=1 result="charged"
           5 @1100 TimerStarted seq=2 ms=5000
           6 @1100 WorkflowTaskCompleted
          -> timer User { seq: 2 } at 6100
        @6100 [TimerFired { timer: User { seq: 2 } }]
           7 @6100 TimerFired seq=2
           8 @6100 ActivityTaskScheduled seq=3 type=email input="charged"
           9 @6100 ActivityTaskScheduled seq=4 type=ship input="charged"
          10 @6100 WorkflowTaskCompleted
          -> enqueue email seq=3 attempt=1
          -> enqueue ship seq=4 attempt=1
        @6200 [ActivityCompleted { seq: 4, attempt: 1, result: Payload(8 bytes) }]
          11 @6200 ActivityTaskCompleted seq=4 attempt=1 result="shipped"
          12 @6200 WorkflowTaskCompleted
        @6300 [ActivityCompleted { seq: 3, attempt: 1, result: Payload(8 bytes) }, ActivityCompleted { s
          13 @6300 ActivityTaskCompleted seq=3 attempt=1 result="emailed"
          14 @6300 WorkflowTaskCompleted
          15 @6300 WorkflowExecutionCompleted result="emailed+shipped"
          -> closed Completed
        status=Completed next_event_id=16 pending_activities=[] timers={}
    "#]]);
}

/// Proves retries with backoff until success, the attempt counter, stale results ignored,
/// and a non-retryable error type ending the activity at once.
#[test]
fn retries_backoff_and_non_retryable() {
    let wf = workflow(|ctx: WorkflowContext, _input: Payload| async move {
        let policy = RetryPolicy::builder()
            .initial_interval(Duration::from_millis(100))
            .backoff_coefficient(2.0)
            .maximum_attempts(5)
            .non_retryable_error_type("InvalidCard")
            .build()
            .unwrap();
        let first = ctx
            .schedule_activity("flaky", p("x"), options(policy.clone()))
            .await?;
        let second = ctx.schedule_activity("card", p("y"), options(policy)).await;
        match second {
            Err(ActivityError::Failed(f)) => Ok(p(format!(
                "{} then {}",
                first.decode::<String>().unwrap(),
                f.error_type
            ))),
            other => Ok(p(format!("unexpected {other:?}"))),
        }
    });
    let mut s = Script::start(&wf, p(()), WorkflowTimeouts::default());
    s.step(1_010, vec![failed(1, 1, "Transient")]);
    // Waiting out its backoff, the activity says when its next attempt is enqueued.
    let waiting = &s.run.state().activities[&1];
    assert_eq!(
        (waiting.attempt, waiting.enqueued, waiting.retry_at_unix_ms),
        (2, false, Some(1_110))
    );
    s.step(
        1_110,
        vec![Message::TimerFired {
            timer: TimerId::ActivityRetry { seq: 1, attempt: 2 },
        }],
    );
    assert_eq!(s.run.state().activities[&1].retry_at_unix_ms, None);
    s.step(
        1_120,
        vec![failed(1, 2, "Transient"), failed(1, 1, "Stale")],
    )
    .step(
        1_320,
        vec![Message::TimerFired {
            timer: TimerId::ActivityRetry { seq: 1, attempt: 3 },
        }],
    )
    .step(1_330, vec![completed(1, 3, "ok")])
    .step(1_340, vec![failed(2, 1, "InvalidCard")]);
    s.check(expect![[r#"
        start
           1 @1000 WorkflowExecutionStarted input=<1 bytes>
           2 @1000 ActivityTaskScheduled seq=1 type=flaky input="x"
           3 @1000 WorkflowTaskCompleted
          -> enqueue flaky seq=1 attempt=1
        @1010 [ActivityFailed { seq: 1, attempt: 1, failure: Failure { message: "boom", error_type: "Tra
          -> timer ActivityRetry { seq: 1, attempt: 2 } at 1110
        @1110 [TimerFired { timer: ActivityRetry { seq: 1, attempt: 2 } }]
          -> enqueue flaky seq=1 attempt=2
        @1120 [ActivityFailed { seq: 1, attempt: 2, failure: Failure { message: "boom", error_type: "Tra
          -> timer ActivityRetry { seq: 1, attempt: 3 } at 1320
        @1320 [TimerFired { timer: ActivityRetry { seq: 1, attempt: 3 } }]
          -> enqueue flaky seq=1 attempt=3
        @1330 [ActivityCompleted { seq: 1, attempt: 3, result: Payload(3 bytes) }]
           4 @1330 ActivityTaskCompleted seq=1 attempt=3 result="ok"
           5 @1330 ActivityTaskScheduled seq=2 type=card input="y"
           6 @1330 WorkflowTaskCompleted
          -> enqueue card seq=2 attempt=1
        @1340 [ActivityFailed { seq: 2, attempt: 1, failure: Failure { message: "boom", error_type: "Inv
           7 @1340 ActivityTaskFailed seq=2 attempt=1 failure=InvalidCard: boom
           8 @1340 WorkflowTaskCompleted
           9 @1340 WorkflowExecutionCompleted result="ok then InvalidCard"
          -> closed Completed
        status=Completed next_event_id=10 pending_activities=[] timers={}
    "#]]);
}

/// Proves each activity timeout: start-to-close retries, schedule-to-close ends the activity,
/// and schedule-to-start is final.
#[test]
fn activity_timeouts() {
    let wf = workflow(|ctx: WorkflowContext, _input: Payload| async move {
        let mut o = options(
            RetryPolicy::builder()
                .initial_interval(Duration::from_millis(50))
                .build()
                .unwrap(),
        );
        o.timeouts = ActivityTimeouts {
            schedule_to_close: Some(Duration::from_secs(3)),
            schedule_to_start: Some(Duration::from_secs(1)),
            start_to_close: Some(Duration::from_secs(1)),
            heartbeat: None,
        };
        let a = ctx.schedule_activity("slow", p(1), o.clone()).await;
        let b = ctx.schedule_activity("unclaimed", p(2), o).await;
        Ok(p(format!("{:?} / {:?}", a.unwrap_err(), b.unwrap_err())))
    });
    let mut s = Script::start(&wf, p(()), WorkflowTimeouts::default());
    s.step(
        2_000,
        vec![Message::TimerFired {
            timer: TimerId::ActivityStartToClose { seq: 1, attempt: 1 },
        }],
    )
    .step(
        2_050,
        vec![Message::TimerFired {
            timer: TimerId::ActivityRetry { seq: 1, attempt: 2 },
        }],
    )
    .step(
        4_000,
        vec![Message::TimerFired {
            timer: TimerId::ActivityScheduleToClose { seq: 1 },
        }],
    )
    .step(
        5_000,
        vec![Message::TimerFired {
            timer: TimerId::ActivityScheduleToStart { seq: 2, attempt: 1 },
        }],
    );
    s.check(expect![[r#"
        start
           1 @1000 WorkflowExecutionStarted input=<1 bytes>
           2 @1000 ActivityTaskScheduled seq=1 type=slow input=1
           3 @1000 WorkflowTaskCompleted
          -> enqueue slow seq=1 attempt=1
          -> timer ActivityScheduleToStart { seq: 1, attempt: 1 } at 2000
          -> timer ActivityScheduleToClose { seq: 1 } at 4000
        @2000 [TimerFired { timer: ActivityStartToClose { seq: 1, attempt: 1 } }]
          -> timer ActivityRetry { seq: 1, attempt: 2 } at 2050
        @2050 [TimerFired { timer: ActivityRetry { seq: 1, attempt: 2 } }]
          -> enqueue slow seq=1 attempt=2
          -> timer ActivityScheduleToStart { seq: 1, attempt: 2 } at 3050
        @4000 [TimerFired { timer: ActivityScheduleToClose { seq: 1 } }]
           4 @4000 ActivityTaskTimedOut seq=1 attempt=2 timeout=schedule-to-close
           5 @4000 ActivityTaskScheduled seq=2 type=unclaimed input=2
           6 @4000 WorkflowTaskCompleted
          -> enqueue unclaimed seq=2 attempt=1
          -> timer ActivityScheduleToStart { seq: 2, attempt: 1 } at 5000
          -> timer ActivityScheduleToClose { seq: 2 } at 7000
        @5000 [TimerFired { timer: ActivityScheduleToStart { seq: 2, attempt: 1 } }]
           7 @5000 ActivityTaskTimedOut seq=2 attempt=1 timeout=schedule-to-start
           8 @5000 WorkflowTaskCompleted
           9 @5000 WorkflowExecutionCompleted result="TimedOut(ScheduleToClose) / TimedOut(ScheduleToStart)"
          -> closed Completed
        status=Completed next_event_id=10 pending_activities=[] timers={}
    "#]]);
}

/// Proves an attempt never picked up whose schedule-to-start and schedule-to-close deadlines
/// fall together (Temporal fills one from the other) times out as schedule-to-start, in
/// whatever order the batch brings the two timers.
#[test]
fn schedule_to_start_wins_a_tie_with_schedule_to_close() {
    let wf = workflow(|ctx: WorkflowContext, _input: Payload| async move {
        let mut o = options(RetryPolicy::no_retries());
        o.timeouts = ActivityTimeouts {
            schedule_to_close: Some(Duration::from_secs(3)),
            ..ActivityTimeouts::default()
        }
        .filled_as_temporal();
        let a = ctx.schedule_activity("never-picked-up", p(1), o).await;
        Ok(p(format!("{:?}", a.unwrap_err())))
    });
    let mut s = Script::start(&wf, p(()), WorkflowTimeouts::default());
    s.step(
        4_000,
        vec![
            Message::TimerFired {
                timer: TimerId::ActivityScheduleToClose { seq: 1 },
            },
            Message::TimerFired {
                timer: TimerId::ActivityScheduleToStart { seq: 1, attempt: 1 },
            },
        ],
    );
    s.check(expect![[r#"
        start
           1 @1000 WorkflowExecutionStarted input=<1 bytes>
           2 @1000 ActivityTaskScheduled seq=1 type=never-picked-up input=1
           3 @1000 WorkflowTaskCompleted
          -> enqueue never-picked-up seq=1 attempt=1
          -> timer ActivityScheduleToStart { seq: 1, attempt: 1 } at 4000
          -> timer ActivityScheduleToClose { seq: 1 } at 4000
        @4000 [TimerFired { timer: ActivityScheduleToClose { seq: 1 } }, TimerFired { timer: ActivitySch
           4 @4000 ActivityTaskTimedOut seq=1 attempt=1 timeout=schedule-to-start
           5 @4000 WorkflowTaskCompleted
           6 @4000 WorkflowExecutionCompleted result="TimedOut(ScheduleToStart)"
          -> closed Completed
        status=Completed next_event_id=7 pending_activities=[] timers={}
    "#]]);
}

/// Proves signals delivered before the code waits are buffered, signals after wake it, a
/// handler sees them, and a query reads the state they built.
#[test]
fn signals_and_queries() {
    let wf = workflow(|ctx: WorkflowContext, _input: Payload| async move {
        let approvals = Rc::new(RefCell::new(Vec::<String>::new()));
        let seen = approvals.clone();
        ctx.on_query("approvals", move |_| Ok(p(seen.borrow().join(","))));
        let store = approvals.clone();
        ctx.on_signal("approve", move |input| {
            store.borrow_mut().push(input.decode().unwrap())
        });
        let mut go = ctx.signal_channel("go");
        ctx.sleep(Duration::from_secs(1)).await;
        let first = go.recv().await;
        let count = approvals.clone();
        ctx.wait_condition(move || count.borrow().len() >= 2).await;
        let second = go.recv().await;
        Ok(p(format!(
            "{} {} {}",
            text(&first),
            text(&second),
            approvals.borrow().join(",")
        )))
    });
    let mut s = Script::start(&wf, p(()), WorkflowTimeouts::default());
    let signal = |name: &str, v: &str| Message::Signal {
        name: name.into(),
        input: p(v),
    };
    s.step(1_100, vec![signal("go", "g1"), signal("approve", "alice")]);
    assert_eq!(
        s.run
            .query("approvals", p(()))
            .unwrap()
            .decode::<String>()
            .unwrap(),
        "alice"
    );
    s.step(
        2_000,
        vec![Message::TimerFired {
            timer: TimerId::User { seq: 1 },
        }],
    )
    .step(2_100, vec![signal("approve", "bob")])
    .step(2_200, vec![signal("go", "g2")]);
    assert_eq!(
        s.run
            .query("approvals", p(()))
            .unwrap()
            .decode::<String>()
            .unwrap(),
        "alice,bob"
    );
    assert!(
        s.run
            .query("nope", p(()))
            .unwrap_err()
            .to_string()
            .contains("approvals")
    );
    s.check(expect![[r#"
        start
           1 @1000 WorkflowExecutionStarted input=<1 bytes>
           2 @1000 TimerStarted seq=1 ms=1000
           3 @1000 WorkflowTaskCompleted
          -> timer User { seq: 1 } at 2000
        @1100 [Signal { name: "go", input: Payload(3 bytes) }, Signal { name: "approve", input: Payload(
           4 @1100 WorkflowExecutionSignaled name=go input="g1"
           5 @1100 WorkflowExecutionSignaled name=approve input="alice"
           6 @1100 WorkflowTaskCompleted
        @2000 [TimerFired { timer: User { seq: 1 } }]
           7 @2000 TimerFired seq=1
           8 @2000 WorkflowTaskCompleted
        @2100 [Signal { name: "approve", input: Payload(4 bytes) }]
           9 @2100 WorkflowExecutionSignaled name=approve input="bob"
          10 @2100 WorkflowTaskCompleted
        @2200 [Signal { name: "go", input: Payload(3 bytes) }]
          11 @2200 WorkflowExecutionSignaled name=go input="g2"
          12 @2200 WorkflowTaskCompleted
          13 @2200 WorkflowExecutionCompleted result="\"g1\" \"g2\" alice,bob"
          -> closed Completed
        status=Completed next_event_id=14 pending_activities=[] timers={}
    "#]]);
}

/// Proves wait_condition with a timeout returns false when the timer wins and cancels the
/// timer when the condition wins.
#[test]
fn wait_condition_timeout_both_ways() {
    let wf = workflow(|ctx: WorkflowContext, _input: Payload| async move {
        let flag = Rc::new(RefCell::new(false));
        let f = flag.clone();
        ctx.on_signal("set", move |_| *f.borrow_mut() = true);
        let f = flag.clone();
        let first = ctx
            .wait_condition_timeout(move || *f.borrow(), Duration::from_secs(2))
            .await;
        let f = flag.clone();
        let second = ctx
            .wait_condition_timeout(move || *f.borrow(), Duration::from_secs(2))
            .await;
        Ok(p(format!("{first} {second}")))
    });
    let mut s = Script::start(&wf, p(()), WorkflowTimeouts::default());
    s.step(
        3_000,
        vec![Message::TimerFired {
            timer: TimerId::User { seq: 1 },
        }],
    );
    s.check(expect![[r#"
        start
           1 @1000 WorkflowExecutionStarted input=<1 bytes>
           2 @1000 TimerStarted seq=1 ms=2000
           3 @1000 WorkflowTaskCompleted
          -> timer User { seq: 1 } at 3000
        @3000 [TimerFired { timer: User { seq: 1 } }]
           4 @3000 TimerFired seq=1
           5 @3000 TimerStarted seq=2 ms=2000
           6 @3000 WorkflowTaskCompleted
          -> timer User { seq: 2 } at 5000
        status=Running next_event_id=7 pending_activities=[] timers={2: 5000}
    "#]]);
    let mut s = Script::start(&wf, p(()), WorkflowTimeouts::default());
    s.step(
        1_500,
        vec![Message::Signal {
            name: "set".into(),
            input: p(()),
        }],
    )
    .step(
        3_000,
        vec![Message::TimerFired {
            timer: TimerId::User { seq: 1 },
        }],
    );
    s.check(expect![[r#"
        start
           1 @1000 WorkflowExecutionStarted input=<1 bytes>
           2 @1000 TimerStarted seq=1 ms=2000
           3 @1000 WorkflowTaskCompleted
          -> timer User { seq: 1 } at 3000
        @1500 [Signal { name: "set", input: Payload(1 bytes) }]
           4 @1500 WorkflowExecutionSignaled name=set input=<1 bytes>
           5 @1500 TimerCanceled seq=1
           6 @1500 WorkflowTaskCompleted
           7 @1500 WorkflowExecutionCompleted result="true true"
          -> closed Completed
        @3000 [TimerFired { timer: User { seq: 1 } }]
        status=Completed next_event_id=8 pending_activities=[] timers={}
    "#]]);
}

/// Proves cancellation is visible to the code, which compensates with an activity and ends
/// canceled; and that termination ends a run without running code.
#[test]
fn cancellation_with_compensation_and_termination() {
    let wf = workflow(|ctx: WorkflowContext, _input: Payload| async move {
        let mut reserve = ctx.schedule_activity("reserve", p(1), options(RetryPolicy::default()));
        let cancelled = std::pin::pin!(ctx.cancelled());
        let reserved = futures::future::select(cancelled, &mut reserve).await;
        if let futures::future::Either::Left(_) = reserved {
            reserve.cancel();
            ctx.schedule_activity("release", p(1), options(RetryPolicy::default()))
                .await?;
            return Err(WorkflowError::Canceled);
        }
        Ok(p("reserved"))
    });
    let mut s = Script::start(&wf, p(()), WorkflowTimeouts::default());
    s.step(
        1_100,
        vec![Message::CancelRequested {
            reason: "user".into(),
        }],
    )
    .step(1_200, vec![completed(1, 1, "late result is stale")])
    .step(1_300, vec![completed(2, 1, "released")]);
    s.check(expect![[r#"
        start
           1 @1000 WorkflowExecutionStarted input=<1 bytes>
           2 @1000 ActivityTaskScheduled seq=1 type=reserve input=1
           3 @1000 WorkflowTaskCompleted
          -> enqueue reserve seq=1 attempt=1
        @1100 [CancelRequested { reason: "user" }]
           4 @1100 WorkflowExecutionCancelRequested reason="user"
           5 @1100 ActivityTaskCancelRequested seq=1
           6 @1100 ActivityTaskCanceled seq=1
           7 @1100 ActivityTaskScheduled seq=2 type=release input=1
           8 @1100 WorkflowTaskCompleted
          -> cancel activity seq=1
          -> enqueue release seq=2 attempt=1
        @1200 [ActivityCompleted { seq: 1, attempt: 1, result: Payload(21 bytes) }]
        @1300 [ActivityCompleted { seq: 2, attempt: 1, result: Payload(9 bytes) }]
           9 @1300 ActivityTaskCompleted seq=2 attempt=1 result="released"
          10 @1300 WorkflowTaskCompleted
          11 @1300 WorkflowExecutionCanceled
          -> closed Canceled
        status=Canceled next_event_id=12 pending_activities=[] timers={}
    "#]]);
    let mut s = Script::start(&wf, p(()), WorkflowTimeouts::default());
    s.step(
        1_100,
        vec![
            Message::Signal {
                name: "x".into(),
                input: p(1),
            },
            Message::Terminate {
                reason: "ops".into(),
            },
        ],
    )
    .step(1_200, vec![completed(1, 1, "ignored")]);
    s.check(expect![[r#"
        start
           1 @1000 WorkflowExecutionStarted input=<1 bytes>
           2 @1000 ActivityTaskScheduled seq=1 type=reserve input=1
           3 @1000 WorkflowTaskCompleted
          -> enqueue reserve seq=1 attempt=1
        @1100 [Signal { name: "x", input: Payload(1 bytes) }, Terminate { reason: "ops" }]
           4 @1100 WorkflowExecutionSignaled name=x input=1
           5 @1100 WorkflowExecutionTerminated reason="ops"
          -> closed Terminated
        @1200 [ActivityCompleted { seq: 1, attempt: 1, result: Payload(8 bytes) }]
        status=Terminated next_event_id=6 pending_activities=[] timers={}
    "#]]);
}

/// Proves the execution timeout timer is armed at start and closes the run when it fires.
#[test]
fn execution_timeout() {
    let wf = order_workflow();
    let timeouts = WorkflowTimeouts {
        execution: Some(Duration::from_secs(60)),
        run: None,
    };
    let mut s = Script::start(&wf, p("o"), timeouts);
    s.step(
        61_000,
        vec![Message::TimerFired {
            timer: TimerId::WorkflowExecution,
        }],
    );
    s.check(expect![[r#"
        start
           1 @1000 WorkflowExecutionStarted input="o"
           2 @1000 ActivityTaskScheduled seq=1 type=charge input="o"
           3 @1000 WorkflowTaskCompleted
          -> timer WorkflowExecution at 61000
          -> enqueue charge seq=1 attempt=1
        @61000 [TimerFired { timer: WorkflowExecution }]
           4 @61000 WorkflowExecutionTimedOut
          -> closed TimedOut
        status=TimedOut next_event_id=5 pending_activities=[] timers={}
    "#]]);
}

/// Proves replay over recorded history rebuilds the same run (queries answer the same) and
/// runs no side effect twice.
#[test]
fn replay_rebuilds_without_rerunning_side_effects() {
    let runs = Rc::new(RefCell::new(0));
    let counter = runs.clone();
    let wf = workflow(move |ctx: WorkflowContext, _input: Payload| {
        let counter = counter.clone();
        async move {
            let token = ctx.side_effect(|| {
                *counter.borrow_mut() += 1;
                p("token-1")
            });
            let r = ctx.random_u64();
            let t = token.clone();
            ctx.on_query("token", move |_| Ok(t.clone()));
            ctx.schedule_activity("use", token, options(RetryPolicy::default()))
                .await?;
            Ok(p(r as i64))
        }
    });
    let mut s = Script::start(&wf, p(()), WorkflowTimeouts::default());
    s.step(1_100, vec![completed(2, 1, "used")]);
    assert_eq!(*runs.borrow(), 1);
    let replayed = Run::replay(&wf, s.run.state().clone(), &s.history).unwrap();
    assert_eq!(*runs.borrow(), 1, "side effect ran again on replay");
    assert_eq!(replayed.query("token", p(())).unwrap(), p("token-1"));
    s.check(expect![[r#"
        start
           1 @1000 WorkflowExecutionStarted input=<1 bytes>
           2 @1000 MarkerRecorded seq=1 name=SideEffect details="token-1"
           3 @1000 ActivityTaskScheduled seq=2 type=use input="token-1"
           4 @1000 WorkflowTaskCompleted
          -> enqueue use seq=2 attempt=1
        @1100 [ActivityCompleted { seq: 2, attempt: 1, result: Payload(5 bytes) }]
           5 @1100 ActivityTaskCompleted seq=2 attempt=1 result="used"
           6 @1100 WorkflowTaskCompleted
           7 @1100 WorkflowExecutionCompleted result=-4767286540954276203
          -> closed Completed
        status=Completed next_event_id=8 pending_activities=[] timers={}
    "#]]);
}

fn update(id: &str, name: &str, input: i64) -> Message {
    Message::Update {
        update_id: id.into(),
        name: name.into(),
        input: p(input),
    }
}

/// A counter the workflow returns once it reaches 3; `add` updates it (refusing negatives in
/// its validator, and waiting for an activity when asked to add 100), `peek` reads it.
fn counter_workflow() -> WorkflowFn {
    workflow(|ctx: WorkflowContext, _input: Payload| async move {
        let total = Rc::new(RefCell::new(0i64));
        let (seen, added) = (total.clone(), total.clone());
        let handler_ctx = ctx.clone();
        ctx.on_update_validated(
            "add",
            |input: &Payload| match input.decode::<i64>() {
                Ok(n) if n >= 0 => Ok(()),
                _ => Err(Failure::new("Negative", "only non-negative amounts")),
            },
            move |input: Payload| {
                let (ctx, added) = (handler_ctx.clone(), added.clone());
                async move {
                    let n = input.decode::<i64>().unwrap();
                    if n == 100 {
                        ctx.schedule_activity("audit", p(n), options(RetryPolicy::default()))
                            .await
                            .map_err(|e| Failure::new("AuditFailed", e.to_string()))?;
                        return Err(Failure::new("TooMuch", "audited and refused"));
                    }
                    *added.borrow_mut() += n;
                    let now = *added.borrow();
                    Ok(p(now))
                }
            },
        );
        ctx.on_query("peek", move |_| Ok(p(*seen.borrow())));
        let done = total.clone();
        ctx.wait_condition(move || *done.borrow() >= 3).await;
        let total = *total.borrow();
        Ok(p(total))
    })
}

/// Proves an update's life in a local run: the validator rejects without writing history,
/// an accepted update's acceptance is an input and its completion a command; a handler may
/// wait on an activity; a repeated update id is not accepted twice; replay rebuilds the run
/// with its updates (the accepted-but-unfinished one runs on) without running validators.
#[test]
fn updates_validate_accept_and_complete() {
    let wf = counter_workflow();
    let mut s = Script::start(&wf, p(()), WorkflowTimeouts::default());
    s.step(
        1_100,
        vec![update("u1", "add", -5), update("u2", "nope", 1)],
    )
    .step(1_200, vec![update("u3", "add", 100)])
    .step(1_300, vec![update("u4", "add", 1), update("u4", "add", 1)])
    .step(1_400, vec![update("u4", "add", 1)]);
    let replayed = Run::replay(&wf, s.run.state().clone(), &s.history).unwrap();
    assert_eq!(replayed.query("peek", p(())).unwrap(), p(1i64));
    s.step(1_500, vec![completed(1, 1, "ok"), update("u5", "add", 2)]);
    let mut replayed = Run::replay(&wf, s.run.state().clone(), &s.history).unwrap();
    assert!(replayed.state().status.is_closed());
    assert_eq!(
        replayed
            .handle(vec![update("u6", "add", 1)], 1_600)
            .unwrap()
            .events,
        vec![]
    );
    s.check(expect![[r#"
        start
           1 @1000 WorkflowExecutionStarted input=<1 bytes>
           2 @1000 WorkflowTaskCompleted
        @1100 [Update { update_id: "u1", name: "add", input: Payload(1 bytes) }, Update { update_id: "u2
          -> update u1 rejected: Negative: only non-negative amounts
          -> update u2 rejected: UpdateHandlerNotFound: no update handler named "nope" (known: ["add"])
        @1200 [Update { update_id: "u3", name: "add", input: Payload(1 bytes) }]
           3 @1200 WorkflowExecutionUpdateAccepted id=u3 name=add input=100
           4 @1200 ActivityTaskScheduled seq=1 type=audit input=100
           5 @1200 WorkflowTaskCompleted
          -> enqueue audit seq=1 attempt=1
        @1300 [Update { update_id: "u4", name: "add", input: Payload(1 bytes) }, Update { update_id: "u4
           6 @1300 WorkflowExecutionUpdateAccepted id=u4 name=add input=1
           7 @1300 WorkflowExecutionUpdateCompleted id=u4 accepted=6 outcome=1
           8 @1300 WorkflowTaskCompleted
        @1400 [Update { update_id: "u4", name: "add", input: Payload(1 bytes) }]
        @1500 [ActivityCompleted { seq: 1, attempt: 1, result: Payload(3 bytes) }, Update { update_id: "
           9 @1500 ActivityTaskCompleted seq=1 attempt=1 result="ok"
          10 @1500 WorkflowExecutionUpdateAccepted id=u5 name=add input=2
          11 @1500 WorkflowExecutionUpdateCompleted id=u3 accepted=3 outcome=TooMuch: audited and refused
          12 @1500 WorkflowExecutionUpdateCompleted id=u5 accepted=10 outcome=3
          13 @1500 WorkflowTaskCompleted
          14 @1500 WorkflowExecutionCompleted result=3
          -> closed Completed
        status=Completed next_event_id=15 pending_activities=[] timers={}
    "#]]);
}

/// Proves replaying history with changed code is refused with an error naming the event and
/// both commands, and that `patched` lets old histories replay while new runs take the new path.
#[test]
fn nondeterminism_and_patching() {
    let old = order_workflow();
    let mut s = Script::start(&old, p("o"), WorkflowTimeouts::default());
    s.step(1_100, vec![completed(1, 1, "charged")]);
    let changed = workflow(|ctx: WorkflowContext, input: Payload| async move {
        ctx.schedule_activity("charge", input.clone(), options(RetryPolicy::default()))
            .await?;
        ctx.schedule_activity("audit", input, options(RetryPolicy::default()))
            .await?;
        Ok(p(()))
    });
    let err = Run::replay(&changed, s.run.state().clone(), &s.history).unwrap_err();
    expect![[r#"nondeterminism at history event 5: history has TimerStarted(seq 2, 5000 ms) but the workflow code now produces ScheduleActivity(seq 2, "audit")"#]].assert_eq(&err.to_string());
    assert!(matches!(err, RunError::Nondeterminism { .. }));

    let patched = workflow(|ctx: WorkflowContext, input: Payload| async move {
        ctx.schedule_activity("charge", input.clone(), options(RetryPolicy::default()))
            .await?;
        if ctx.patched("audit-after-charge") {
            ctx.schedule_activity("audit", input, options(RetryPolicy::default()))
                .await?;
            return Ok(p("new path"));
        }
        ctx.sleep(Duration::from_secs(5)).await;
        Ok(p("old path"))
    });
    let mut old_run = Run::replay(&patched, s.run.state().clone(), &s.history).unwrap();
    let t = old_run
        .handle(
            vec![Message::TimerFired {
                timer: TimerId::User { seq: 2 },
            }],
            6_100,
        )
        .unwrap();
    let last = t
        .events
        .iter()
        .rev()
        .find(|e| e.kind.name() == "WorkflowExecutionCompleted");
    assert!(
        matches!(&last.unwrap().kind, EventKind::WorkflowExecutionCompleted { result } if text(result) == "\"old path\"")
    );

    let mut fresh = Script::start(&patched, p("o"), WorkflowTimeouts::default());
    fresh.step(1_100, vec![completed(1, 1, "charged")]);
    fresh.check(expect![[r#"
        start
           1 @1000 WorkflowExecutionStarted input="o"
           2 @1000 ActivityTaskScheduled seq=1 type=charge input="o"
           3 @1000 WorkflowTaskCompleted
          -> enqueue charge seq=1 attempt=1
        @1100 [ActivityCompleted { seq: 1, attempt: 1, result: Payload(8 bytes) }]
           4 @1100 ActivityTaskCompleted seq=1 attempt=1 result="charged"
           5 @1100 MarkerRecorded seq=2 name=Patch details="audit-after-charge"
           6 @1100 ActivityTaskScheduled seq=3 type=audit input="o"
           7 @1100 WorkflowTaskCompleted
          -> enqueue audit seq=3 attempt=1
        status=Running next_event_id=8 pending_activities=[3] timers={}
    "#]]);
    let replayed = Run::replay(&patched, fresh.run.state().clone(), &fresh.history);
    assert!(replayed.is_ok(), "patched run replays: {replayed:?}");
}

/// Proves a workflow that never waits on history is stopped with a clear error.
#[test]
fn livelock_is_detected() {
    let wf = workflow(|ctx: WorkflowContext, _input: Payload| async move {
        loop {
            ctx.side_effect(|| p(1));
            futures::pending!();
        }
    });
    let args = StartArgs {
        workflow_type: "Spin".into(),
        input: p(()),
        random_seed: 1,
        timeouts: WorkflowTimeouts::default(),
        execution_started_unix_ms: None,
        memo: Default::default(),
        search_attributes: Default::default(),
        cron: None,
    };
    let err = Run::start(&wf, args, 0).unwrap_err();
    assert!(err.to_string().contains("looping"), "{err}");
}

/// Proves combinators that only re-poll woken children (`join_all` over more than 30 futures
/// uses `FuturesOrdered`) see every resolution: the executor wakes parked futures.
#[test]
fn join_all_over_many_activities_completes() {
    let wf = workflow(|ctx: WorkflowContext, _input: Payload| async move {
        let calls: Vec<_> = (0..40)
            .map(|i| ctx.schedule_activity("echo", p(i), options(RetryPolicy::default())))
            .collect();
        let results = futures::future::join_all(calls).await;
        Ok(p(results.into_iter().filter(Result::is_ok).count() as i64))
    });
    let args = StartArgs {
        workflow_type: "FanOut".into(),
        input: p(()),
        random_seed: 3,
        timeouts: WorkflowTimeouts::default(),
        execution_started_unix_ms: None,
        memo: Default::default(),
        search_attributes: Default::default(),
        cron: None,
    };
    let (mut run, _) = Run::start(&wf, args, 0).unwrap();
    let first: Vec<Message> = (1..=20).map(|seq| completed(seq, 1, "x")).collect();
    let rest: Vec<Message> = (21..=40).map(|seq| completed(seq, 1, "x")).collect();
    run.handle(first, 10).unwrap();
    let t = run.handle(rest, 20).unwrap();
    let done = t.events.iter().find_map(|e| match &e.kind {
        EventKind::WorkflowExecutionCompleted { result } => Some(text(result)),
        _ => None,
    });
    assert_eq!(done.as_deref(), Some("40"));
}

fn child_options(policy: ParentClosePolicy) -> ChildOptions {
    ChildOptions {
        parent_close_policy: policy,
        ..ChildOptions::default()
    }
}

fn run_id(n: u8) -> RunId {
    RunId::from_parts(1_000, [n; 10])
}

/// Proves child workflows: the start is recorded with its effect, "started" and the result
/// arrive as mailbox messages, a start refused because the id is in use reaches the code as
/// an error, and the parent's record of each child survives replay.
#[test]
fn children_start_report_and_finish() {
    let wf = workflow(|ctx: WorkflowContext, _input: Payload| async move {
        let first = ctx.start_child(
            "Child",
            WorkflowId::new("child-a").unwrap(),
            p("a"),
            child_options(ParentClosePolicy::Terminate),
        );
        let taken = ctx.start_child(
            "Child",
            WorkflowId::new("child-taken").unwrap(),
            p("b"),
            child_options(ParentClosePolicy::Abandon),
        );
        let started = first.started().await;
        let refused = taken.await;
        let result = first.await;
        let refused = matches!(refused, Err(ChildError::StartFailed { .. }));
        Ok(p(format!(
            "started={} refused={refused} result={}",
            started.is_ok(),
            result.map(|r| text(&r)).unwrap_or_else(|e| e.to_string())
        )))
    });
    let mut script = Script::start(&wf, p(()), WorkflowTimeouts::default());
    script
        .step(
            1_100,
            vec![
                Message::ChildStarted {
                    seq: 1,
                    run_id: run_id(1),
                },
                Message::ChildStartFailed {
                    seq: 2,
                    cause: "workflow id child-taken is already running".into(),
                },
            ],
        )
        .step(
            1_200,
            vec![Message::ChildClosed {
                seq: 1,
                outcome: ChildOutcome::Completed(p("done a")),
            }],
        );
    let replayed = Run::replay(&wf, script.run.state().clone(), &script.history);
    assert!(replayed.is_ok(), "{replayed:?}");
    script.check(expect![[r#"
        start
           1 @1000 WorkflowExecutionStarted input=<1 bytes>
           2 @1000 StartChildWorkflowExecutionInitiated seq=1 type=Child id=child-a policy=Terminate
           3 @1000 StartChildWorkflowExecutionInitiated seq=2 type=Child id=child-taken policy=Abandon
           4 @1000 WorkflowTaskCompleted
          -> start child Child id=child-a seq=1
          -> start child Child id=child-taken seq=2
        @1100 [ChildStarted { seq: 1, run_id: RunId(00000000-03e8-7101-8101-010101010101) }, ChildStartF
           5 @1100 ChildWorkflowExecutionStarted seq=1 id=child-a
           6 @1100 StartChildWorkflowExecutionFailed seq=2 cause="workflow id child-taken is already running"
           7 @1100 WorkflowTaskCompleted
        @1200 [ChildClosed { seq: 1, outcome: Completed(Payload(7 bytes)) }]
           8 @1200 ChildWorkflowExecutionCompleted seq=1 result="done a"
           9 @1200 WorkflowTaskCompleted
          10 @1200 WorkflowExecutionCompleted result="started=true refused=true result=\"done a\""
          -> closed Completed
        status=Completed next_event_id=11 pending_activities=[] timers={}
    "#]]);
}

/// Proves a run that closes with children still open applies their parent close policies
/// (terminate, request cancel; nothing for abandon), and a child canceled by its parent is
/// asked to cancel once.
#[test]
fn parent_close_policies_and_child_cancel() {
    let wf = workflow(|ctx: WorkflowContext, _input: Payload| async move {
        let mut kill = ctx.start_child(
            "Child",
            WorkflowId::new("c-terminate").unwrap(),
            p(1),
            child_options(ParentClosePolicy::Terminate),
        );
        let _ask = ctx.start_child(
            "Child",
            WorkflowId::new("c-cancel").unwrap(),
            p(2),
            child_options(ParentClosePolicy::RequestCancel),
        );
        let _keep = ctx.start_child(
            "Child",
            WorkflowId::new("c-abandon").unwrap(),
            p(3),
            child_options(ParentClosePolicy::Abandon),
        );
        ctx.sleep(Duration::from_millis(100)).await;
        kill.cancel();
        kill.cancel();
        ctx.sleep(Duration::from_millis(100)).await;
        Ok(p("parent done"))
    });
    let mut script = Script::start(&wf, p(()), WorkflowTimeouts::default());
    script
        .step(
            1_050,
            vec![Message::ChildStarted {
                seq: 1,
                run_id: run_id(1),
            }],
        )
        .step(
            1_100,
            vec![Message::TimerFired {
                timer: TimerId::User { seq: 4 },
            }],
        )
        .step(
            1_200,
            vec![Message::TimerFired {
                timer: TimerId::User { seq: 5 },
            }],
        );
    script.check(expect![[r#"
        start
           1 @1000 WorkflowExecutionStarted input=<1 bytes>
           2 @1000 StartChildWorkflowExecutionInitiated seq=1 type=Child id=c-terminate policy=Terminate
           3 @1000 StartChildWorkflowExecutionInitiated seq=2 type=Child id=c-cancel policy=RequestCancel
           4 @1000 StartChildWorkflowExecutionInitiated seq=3 type=Child id=c-abandon policy=Abandon
           5 @1000 TimerStarted seq=4 ms=100
           6 @1000 WorkflowTaskCompleted
          -> start child Child id=c-terminate seq=1
          -> start child Child id=c-cancel seq=2
          -> start child Child id=c-abandon seq=3
          -> timer User { seq: 4 } at 1100
        @1050 [ChildStarted { seq: 1, run_id: RunId(00000000-03e8-7101-8101-010101010101) }]
           7 @1050 ChildWorkflowExecutionStarted seq=1 id=c-terminate
           8 @1050 WorkflowTaskCompleted
        @1100 [TimerFired { timer: User { seq: 4 } }]
           9 @1100 TimerFired seq=4
          10 @1100 RequestCancelExternalWorkflowExecutionInitiated seq=1
          11 @1100 TimerStarted seq=5 ms=100
          12 @1100 WorkflowTaskCompleted
          -> cancel child id=c-terminate seq=1
          -> timer User { seq: 5 } at 1200
        @1200 [TimerFired { timer: User { seq: 5 } }]
          13 @1200 TimerFired seq=5
          14 @1200 WorkflowTaskCompleted
          15 @1200 WorkflowExecutionCompleted result="parent done"
          -> parent close policy Terminate on c-terminate
          -> parent close policy RequestCancel on c-cancel
          -> closed Completed
        status=Completed next_event_id=16 pending_activities=[] timers={}
    "#]]);
}

/// Proves continue-as-new closes the run as `ContinuedAsNew` with the successor's input, and
/// that the code sees its history's length and size, the same on replay as live.
#[test]
fn continue_as_new_and_history_info() {
    let seen = Rc::new(RefCell::new(Vec::new()));
    let s = seen.clone();
    let wf = workflow(move |ctx: WorkflowContext, input: Payload| {
        let s = s.clone();
        async move {
            let round: i64 = input.decode().unwrap();
            s.borrow_mut()
                .push((ctx.history_length(), ctx.history_size_bytes() > 0));
            ctx.sleep(Duration::from_millis(10)).await;
            s.borrow_mut()
                .push((ctx.history_length(), ctx.history_size_bytes() > 0));
            assert!(!ctx.continue_as_new_suggested());
            Err(ctx.continue_as_new(p(round + 1)))
        }
    });
    let mut script = Script::start(&wf, p(7), WorkflowTimeouts::default());
    script.step(
        1_010,
        vec![Message::TimerFired {
            timer: TimerId::User { seq: 1 },
        }],
    );
    let live = seen.borrow().clone();
    assert_eq!(live, vec![(1, true), (4, true)]);
    seen.borrow_mut().clear();
    let replayed = Run::replay(&wf, script.run.state().clone(), &script.history).unwrap();
    assert_eq!(*seen.borrow(), live, "replay saw the same history info");
    assert_eq!(
        replayed.state().history_size_bytes,
        script.run.state().history_size_bytes
    );
    script.check(expect![[r#"
        start
           1 @1000 WorkflowExecutionStarted input=7
           2 @1000 TimerStarted seq=1 ms=10
           3 @1000 WorkflowTaskCompleted
          -> timer User { seq: 1 } at 1010
        @1010 [TimerFired { timer: User { seq: 1 } }]
           4 @1010 TimerFired seq=1
           5 @1010 WorkflowTaskCompleted
           6 @1010 WorkflowExecutionContinuedAsNew input=8
          -> closed ContinuedAsNew
          -> continue as new input=8
        status=ContinuedAsNew next_event_id=7 pending_activities=[] timers={}
    "#]]);
}

/// Proves upserted search attributes are recorded, merged into the snapshot, and reported
/// as changed so the runtime can update the visibility record in the same commit.
#[test]
fn search_attributes_upserted() {
    let wf = workflow(|ctx: WorkflowContext, _input: Payload| async move {
        let mut first = cairn_types::SearchAttributes::new();
        first.insert("CustomerId".into(), SearchValue::Keyword("c-42".into()));
        first.insert("Priority".into(), SearchValue::Int(1));
        ctx.upsert_search_attributes(first);
        ctx.sleep(Duration::from_millis(10)).await;
        let mut second = cairn_types::SearchAttributes::new();
        second.insert("Priority".into(), SearchValue::Int(5));
        ctx.upsert_search_attributes(second);
        Ok(p(format!("{:?}", ctx.search_attributes().get("Priority"))))
    });
    let mut script = Script::start(&wf, p(()), WorkflowTimeouts::default());
    script.step(
        1_010,
        vec![Message::TimerFired {
            timer: TimerId::User { seq: 1 },
        }],
    );
    let attributes = &script.run.state().search_attributes;
    assert_eq!(attributes.get("Priority"), Some(&SearchValue::Int(5)));
    assert_eq!(
        attributes.get("CustomerId"),
        Some(&SearchValue::Keyword("c-42".into()))
    );
    script.check(expect![[r#"
        start
           1 @1000 WorkflowExecutionStarted input=<1 bytes>
           2 @1000 UpsertWorkflowSearchAttributes attributes={"CustomerId": Keyword("c-42"), "Priority": Int(1)}
           3 @1000 TimerStarted seq=1 ms=10
           4 @1000 WorkflowTaskCompleted
          -> search attributes changed
          -> timer User { seq: 1 } at 1010
        @1010 [TimerFired { timer: User { seq: 1 } }]
           5 @1010 TimerFired seq=1
           6 @1010 UpsertWorkflowSearchAttributes attributes={"Priority": Int(5)}
           7 @1010 WorkflowTaskCompleted
           8 @1010 WorkflowExecutionCompleted result="Some(Int(5))"
          -> search attributes changed
          -> closed Completed
        status=Completed next_event_id=9 pending_activities=[] timers={}
    "#]]);
}

/// Proves the execution timeout of a continued run counts from the chain's first run, while
/// the run timeout counts from this run's start.
#[test]
fn execution_timeout_spans_a_continue_as_new_chain() {
    let wf = workflow(|ctx: WorkflowContext, _input: Payload| async move {
        ctx.sleep(Duration::from_secs(3600)).await;
        Ok(p(()))
    });
    let args = StartArgs {
        workflow_type: "Chain".into(),
        input: p(()),
        random_seed: 5,
        timeouts: WorkflowTimeouts {
            execution: Some(Duration::from_secs(60)),
            run: Some(Duration::from_secs(50)),
        },
        execution_started_unix_ms: Some(100_000),
        memo: Default::default(),
        search_attributes: Default::default(),
        cron: None,
    };
    let (_, transition) = Run::start(&wf, args, 130_000).unwrap();
    let deadline = transition.effects.iter().find_map(|e| match e {
        Effect::ScheduleTimer {
            timer: TimerId::WorkflowExecution,
            fire_at_unix_ms,
        } => Some(*fire_at_unix_ms),
        _ => None,
    });
    assert_eq!(
        deadline,
        Some(160_000),
        "60 s after the chain began, not 50 s after now"
    );
}

/// Proves the history limits: the code is told to continue as new once the history passes
/// the suggestion (10,240 events), and a run that ignores it is terminated, with a reason,
/// once it passes the hard limit (51,200 events).
#[test]
fn history_limits_suggest_then_terminate() {
    let suggested_at = Rc::new(RefCell::new(None));
    let s = suggested_at.clone();
    let wf = workflow(move |ctx: WorkflowContext, _input: Payload| {
        let s = s.clone();
        async move {
            loop {
                if ctx.continue_as_new_suggested() && s.borrow().is_none() {
                    *s.borrow_mut() = Some(ctx.history_length());
                }
                let calls: Vec<_> = (0..2_500)
                    .map(|i| ctx.schedule_activity("echo", p(i), options(RetryPolicy::default())))
                    .collect();
                futures::future::join_all(calls).await;
            }
        }
    });
    let args = StartArgs {
        workflow_type: "Greedy".into(),
        input: p(()),
        random_seed: 9,
        timeouts: WorkflowTimeouts::default(),
        execution_started_unix_ms: None,
        memo: Default::default(),
        search_attributes: Default::default(),
        cron: None,
    };
    let (mut run, _) = Run::start(&wf, args, 0).unwrap();
    let mut next_seq = 1;
    let mut terminated = None;
    for step in 1..=30 {
        let messages: Vec<Message> = (next_seq..next_seq + 2_500)
            .map(|seq| completed(seq, 1, "x"))
            .collect();
        next_seq += 2_500;
        let transition = run.handle(messages, step).unwrap();
        terminated = transition.events.iter().find_map(|e| match &e.kind {
            EventKind::WorkflowExecutionTerminated { reason } => Some(reason.clone()),
            _ => None,
        });
        if terminated.is_some() {
            break;
        }
    }
    let suggested = suggested_at
        .borrow()
        .expect("continue-as-new was suggested");
    // Checked once per step of about 5,000 events.
    assert!(
        (10_240..=15_100).contains(&suggested),
        "suggested at {suggested}"
    );
    let reason = terminated.expect("the run was terminated");
    assert!(reason.contains("history limit exceeded"), "{reason}");
    assert_eq!(run.state().status, cairn_core::RunStatus::Terminated);
    assert!(run.state().next_event_id - 1 > cairn_types::limits::HISTORY_EVENTS_MAX);
}

/// Proves a transition that terminates the run accepts no update of its batch (its code will
/// not run again, so no handler could): nothing of the update is recorded.
#[test]
fn a_terminating_transition_accepts_no_update() {
    let wf = counter_workflow();
    let mut s = Script::start(&wf, p(()), WorkflowTimeouts::default());
    let t = s
        .run
        .handle(
            vec![
                update("u1", "add", 1),
                Message::Terminate {
                    reason: "enough".into(),
                },
            ],
            1_100,
        )
        .unwrap();
    let names: Vec<&str> = t.events.iter().map(|e| e.kind.name()).collect();
    assert_eq!(names, vec!["WorkflowExecutionTerminated"]);
    assert!(s.run.state().updates.is_empty());
}

fn cron_args(schedule: &str, backoff_ms: u64, last: Option<&str>) -> StartArgs {
    StartArgs {
        workflow_type: "Cron".into(),
        input: p("tick"),
        random_seed: 7,
        timeouts: WorkflowTimeouts::default(),
        execution_started_unix_ms: None,
        memo: Default::default(),
        search_attributes: Default::default(),
        cron: Some(cairn_types::CronRun {
            schedule: schedule.into(),
            first_task_backoff_ms: backoff_ms,
            last_completion_result: last.map(p),
            continued_failure: None,
        }),
    }
}

/// Proves a cron run waits for its schedule's time before its code runs (inputs that arrive
/// meanwhile are recorded, and seen when it runs), then starts the chain's next run when it
/// completes or fails, carrying the last completed result; a terminated run starts none.
#[test]
fn cron_runs_wait_then_continue_the_chain() {
    let wf = workflow(|ctx: WorkflowContext, input: Payload| async move {
        let mut nudges = ctx.signal_channel("nudge");
        let nudge = nudges.recv().await;
        if nudge.decode::<String>().unwrap() == "fail" {
            return Err(WorkflowError::Failed(Failure::new("Boom", "asked to fail")));
        }
        Ok(p(format!("{} {}", text(&input), text(&nudge))))
    });
    let nudge = |v: &str| Message::Signal {
        name: "nudge".into(),
        input: p(v),
    };
    let first_task = || Message::TimerFired {
        timer: TimerId::FirstWorkflowTask,
    };
    // Started at 10.0 s on "@every 2s": waits until 12.0 s.
    let mut s = Script::start_with(&wf, cron_args("@every 2s", 2_000, None), 10_000);
    s.step(11_000, vec![nudge("early")])
        .step(12_000, vec![first_task()]);
    s.check(expect![[r#"
        start
           1 @10000 WorkflowExecutionStarted input="tick"
          -> timer FirstWorkflowTask at 12000
        @11000 [Signal { name: "nudge", input: Payload(6 bytes) }]
           2 @11000 WorkflowExecutionSignaled name=nudge input="early"
        @12000 [TimerFired { timer: FirstWorkflowTask }]
           3 @12000 WorkflowTaskCompleted
           4 @12000 WorkflowExecutionCompleted result="\"tick\" \"early\""
          -> closed Completed
          -> cron next after 2000 ms, last result Some("\"\\\"tick\\\" \\\"early\\\"\""), failure None
        status=Completed next_event_id=5 pending_activities=[] timers={}
    "#]]);
    // Replay reaches the same state from the history.
    let replayed = Run::replay(&wf, s.run.state().clone(), &s.history).unwrap();
    assert_eq!(replayed.state(), s.run.state());

    // A failing run continues the chain with the last completed result.
    let mut s = Script::start_with(&wf, cron_args("@every 2s", 2_000, Some("before")), 20_000);
    s.step(22_000, vec![first_task()])
        .step(22_500, vec![nudge("fail")]);
    s.check(expect![[r#"
        start
           1 @20000 WorkflowExecutionStarted input="tick"
          -> timer FirstWorkflowTask at 22000
        @22000 [TimerFired { timer: FirstWorkflowTask }]
           2 @22000 WorkflowTaskCompleted
        @22500 [Signal { name: "nudge", input: Payload(5 bytes) }]
           3 @22500 WorkflowExecutionSignaled name=nudge input="fail"
           4 @22500 WorkflowTaskCompleted
           5 @22500 WorkflowExecutionFailed failure=Boom: asked to fail
          -> closed Failed
          -> cron next after 2000 ms, last result Some("\"before\""), failure Some("asked to fail")
        status=Failed next_event_id=6 pending_activities=[] timers={}
    "#]]);

    // A terminated run ends the chain, even while it waits.
    let mut s = Script::start_with(&wf, cron_args("@every 2s", 2_000, None), 30_000);
    s.step(
        31_000,
        vec![Message::Terminate {
            reason: "enough".into(),
        }],
    );
    s.check(expect![[r#"
        start
           1 @30000 WorkflowExecutionStarted input="tick"
          -> timer FirstWorkflowTask at 32000
        @31000 [Terminate { reason: "enough" }]
           2 @31000 WorkflowExecutionTerminated reason="enough"
          -> closed Terminated
        status=Terminated next_event_id=3 pending_activities=[] timers={}
    "#]]);
}
