"""Temporal's Python SDK, unchanged, against a server: Cairn's gRPC frontend or Temporal's own
dev server (with --worker, which hosts Python twins of Cairn's demo workflows there, proving
the suite itself). Exits non-zero on the first failed check.

    python client_suite.py --address 127.0.0.1:7233 [--worker] [--phase all|start|finish]

Phases split a run around a server restart: `start` leaves workflows waiting, `finish` signals
and awaits them.
"""

import argparse
import asyncio
import os
import signal
import sys
import tempfile
import uuid
from datetime import timedelta

from temporalio import activity, workflow
from temporalio.client import (
    Client,
    WorkflowExecutionStatus,
    WorkflowFailureError,
)
from temporalio.common import WorkflowIDConflictPolicy, WorkflowIDReusePolicy
from temporalio.exceptions import (
    ActivityError,
    ApplicationError,
    TerminatedError,
    WorkflowAlreadyStartedError,
)
from temporalio.service import RPCError, RPCStatusCode
from temporalio.worker import Worker

TASK_QUEUE = "cairn-suite"


# The demo workflows of `cairn server start-dev`, written as the guide writes Python workflows.
@activity.defn(name="greet")
async def greet(name: str) -> str:
    return f"hello {name}"


@workflow.defn(name="hello")
class Hello:
    @workflow.run
    async def run(self, name: str) -> str:
        await asyncio.sleep(1)
        return await workflow.execute_activity(
            greet, name, start_to_close_timeout=timedelta(seconds=10)
        )


@workflow.defn(name="countdown")
class Countdown:
    def __init__(self) -> None:
        self.left = 0

    @workflow.run
    async def run(self, seconds: int) -> str:
        self.left = seconds
        while self.left > 0:
            await asyncio.sleep(1)
            self.left -= 1
        return "liftoff"

    @workflow.query(name="remaining")
    def remaining(self) -> int:
        return self.left


@workflow.defn(name="approval")
class Approval:
    def __init__(self) -> None:
        self.decision = None

    @workflow.run
    async def run(self, amount_cents: int) -> str:
        try:
            await workflow.wait_condition(
                lambda: self.decision is not None, timeout=timedelta(hours=1)
            )
        except asyncio.TimeoutError:
            return "timed out"
        return f"approved {amount_cents} cents" if self.decision else "rejected"

    @workflow.signal(name="decide")
    def decide(self, approved: bool) -> None:
        self.decision = approved


@activity.defn(name="order_check")
async def order_check(order: str) -> None:
    raise ApplicationError(f"order {order!r} has no items", type="InvalidOrder", non_retryable=True)


@workflow.defn(name="doomed")
class Doomed:
    @workflow.run
    async def run(self, order: str) -> None:
        await workflow.execute_activity(
            order_check, order, start_to_close_timeout=timedelta(seconds=10)
        )


# Activities of task queue `greetings`, called by the `remote_hello` workflow (on Cairn, a Rust
# workflow of the dev server; on Temporal, its Python twin below).
GREETINGS = "greetings"


@activity.defn(name="compose_greeting")
async def compose_greeting(name: str) -> str:
    info = activity.info()
    if name.startswith("slow:") and info.attempt == 1:
        # Tell the suite the attempt runs, then beat until this worker is killed.
        with open(name[len("slow:"):], "w") as marker:
            marker.write("started")
        while True:
            activity.heartbeat("still here")
            await asyncio.sleep(0.2)
    return f"greetings, {name}, from Python (attempt {info.attempt})"


@workflow.defn(name="remote_hello")
class RemoteHello:
    @workflow.run
    async def run(self, name: str) -> str:
        return await workflow.execute_activity(
            "compose_greeting",
            name,
            task_queue=GREETINGS,
            start_to_close_timeout=timedelta(seconds=60),
            heartbeat_timeout=timedelta(seconds=2),
        )


checks = 0


def check(condition: bool, what: str) -> None:
    global checks
    if not condition:
        print(f"FAILED: {what}", file=sys.stderr)
        sys.exit(1)
    checks += 1
    print(f"ok: {what}")


async def expect_failure(coro, kind, what: str):
    try:
        await coro
    except kind as e:
        check(True, what)
        return e
    except Exception as e:  # noqa: BLE001 - report what came instead
        check(False, f"{what} (raised {type(e).__name__}: {e})")
    else:
        check(False, f"{what} (no error)")


def spawn_activity_worker(address: str):
    return asyncio.create_subprocess_exec(
        sys.executable, os.path.abspath(__file__), "--address", address, "--activity-worker"
    )


async def remote_activities(client: Client, address: str, run: str) -> None:
    async with Worker(client, task_queue=GREETINGS, activities=[compose_greeting]):
        result = await client.execute_workflow(
            "remote_hello", "Ada", id=f"remote-{run}", task_queue=TASK_QUEUE
        )
    check(result == "greetings, Ada, from Python (attempt 1)", f"a Python activity: {result!r}")

    # A worker killed mid-activity: the attempt times out by heartbeat and the next attempt
    # runs on the worker started after it.
    marker = os.path.join(tempfile.mkdtemp(), "started")
    worker = await spawn_activity_worker(address)
    handle = await client.start_workflow(
        "remote_hello", f"slow:{marker}", id=f"killed-{run}", task_queue=TASK_QUEUE
    )
    for _ in range(300):
        if os.path.exists(marker):
            break
        await asyncio.sleep(0.1)
    check(os.path.exists(marker), "the first attempt started on the first worker")
    worker.send_signal(signal.SIGKILL)
    await worker.wait()
    worker = await spawn_activity_worker(address)
    try:
        result = await asyncio.wait_for(handle.result(), timeout=60)
    finally:
        worker.send_signal(signal.SIGKILL)
        await worker.wait()
    check(result.endswith("(attempt 2)"), f"retried on the restarted worker: {result!r}")


async def everything(client: Client, run: str) -> None:
    result = await client.execute_workflow(
        "hello", "python", id=f"hello-{run}", task_queue=TASK_QUEUE
    )
    check(result == "hello python", f"hello returns {result!r}")

    handle = await client.start_workflow(
        "approval", 500, id=f"approve-{run}", task_queue=TASK_QUEUE
    )
    await handle.signal("decide", True)
    result = await handle.result()
    check(result == "approved 500 cents", f"approval signalled true: {result!r}")
    handle = await client.start_workflow(
        "approval", 7, id=f"reject-{run}", task_queue=TASK_QUEUE
    )
    await handle.signal("decide", False)
    check(await handle.result() == "rejected", "approval signalled false is rejected")

    countdown = await client.start_workflow(
        "countdown", 30, id=f"countdown-{run}", task_queue=TASK_QUEUE
    )
    left = None
    for _ in range(100):
        try:
            left = await countdown.query("remaining")
            break
        except RPCError:
            await asyncio.sleep(0.1)
    check(isinstance(left, int) and 0 < left <= 30, f"query answers {left!r}")
    described = await countdown.describe()
    check(described.status == WorkflowExecutionStatus.RUNNING, "describe says running")
    check(described.workflow_type == "countdown", "describe names the type")

    # Id reuse and conflict policies.
    await expect_failure(
        client.start_workflow("countdown", 1, id=f"countdown-{run}", task_queue=TASK_QUEUE),
        WorkflowAlreadyStartedError,
        "a second start of a running id is refused",
    )
    same = await client.start_workflow(
        "countdown",
        1,
        id=f"countdown-{run}",
        task_queue=TASK_QUEUE,
        id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
    )
    check(
        same.first_execution_run_id == countdown.first_execution_run_id
        or same.result_run_id == countdown.result_run_id,
        "USE_EXISTING answers the running run",
    )
    await countdown.terminate("suite is done with it")
    error = await expect_failure(
        countdown.result(), WorkflowFailureError, "a terminated run's result raises"
    )
    check(isinstance(error.cause, TerminatedError), f"cause is TerminatedError: {error.cause!r}")
    # `doomed` (on Cairn a Rust workflow, on Temporal its Python twin) fails by its activity's
    # failure: that failure is the cause of the workflow's, as Temporal's own SDKs chain them.
    doomed = await client.start_workflow(
        "doomed", "o-99", id=f"doomed-{run}", task_queue=TASK_QUEUE
    )
    error = await expect_failure(
        doomed.result(), WorkflowFailureError, "a failed run's result raises"
    )
    outer, inner = error.cause, getattr(error.cause, "cause", None)
    check(isinstance(outer, ActivityError), f"the failure is an ActivityError: {outer!r}")
    check(
        isinstance(inner, ApplicationError)
        and inner.type == "InvalidOrder"
        and inner.non_retryable
        and "has no items" in inner.message,
        f"its cause is the activity's non-retryable InvalidOrder: {inner!r}",
    )
    await expect_failure(
        client.start_workflow(
            "hello",
            "again",
            id=f"hello-{run}",
            task_queue=TASK_QUEUE,
            id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
        ),
        WorkflowAlreadyStartedError,
        "REJECT_DUPLICATE refuses a closed id",
    )
    again = await client.execute_workflow(
        "hello", "again", id=f"hello-{run}", task_queue=TASK_QUEUE
    )
    check(again == "hello again", "ALLOW_DUPLICATE starts a closed id again")

    # Errors a user sees.
    await expect_failure(
        client.get_workflow_handle(f"never-{run}").signal("decide", True),
        RPCError,
        "signalling an unknown workflow fails",
    )

    # History and visibility.
    events = [e async for e in client.get_workflow_handle(f"approve-{run}").fetch_history_events()]
    names = [e.event_type for e in events]
    check(names[0] == 1 and names[-1] == 2, "history starts with Started, ends with Completed")
    check(
        [e.event_id for e in events] == list(range(1, len(events) + 1)),
        "event ids count from 1",
    )
    ids = set()
    for _ in range(100):
        ids = {w.id async for w in client.list_workflows(f"WorkflowId STARTS_WITH 'hello-{run}'")}
        if ids:
            break
        await asyncio.sleep(0.1)
    check(ids == {f"hello-{run}"}, f"list finds the hello workflow: {ids}")
    for _ in range(100):
        count = (await client.count_workflows(f"WorkflowId = 'reject-{run}'")).count
        if count == 1:
            break
        await asyncio.sleep(0.1)
    check(count == 1, "count finds one workflow by id")


async def cron_runs(client: Client, run: str) -> None:
    """A workflow started with a cron schedule: each run waits for its time, each one that
    completes starts the next (named in its close event), every run is listed by its id, and a
    terminate ends the chain."""
    wid = f"cron-{run}"
    handle = await client.start_workflow(
        "hello", "cron", id=wid, task_queue=TASK_QUEUE, cron_schedule="@every 2s"
    )
    first_run = handle.first_execution_run_id or handle.result_run_id
    runs = []
    for _ in range(200):
        runs = [w async for w in client.list_workflows(f"WorkflowId = '{wid}'")]
        done = [w for w in runs if w.status == WorkflowExecutionStatus.COMPLETED]
        if len(done) >= 2:
            break
        await asyncio.sleep(0.1)
    statuses = [w.status for w in runs]
    check(
        statuses.count(WorkflowExecutionStatus.COMPLETED) >= 2
        and all(
            s in (WorkflowExecutionStatus.COMPLETED, WorkflowExecutionStatus.RUNNING)
            for s in statuses
        ),
        f"cron: runs complete one after another, each listed by id: {statuses}",
    )
    check(
        [w.start_time for w in runs] == sorted((w.start_time for w in runs), reverse=True),
        "cron: runs list newest first",
    )
    events = [
        e async for e in client.get_workflow_handle(wid, run_id=first_run).fetch_history_events()
    ]
    started = events[0].workflow_execution_started_event_attributes
    check(started.cron_schedule == "@every 2s", "cron: the started event carries the schedule")
    check(
        started.first_workflow_task_backoff.ToMilliseconds() > 0,
        "cron: the first run waits for the schedule's time",
    )
    completed = events[-1].workflow_execution_completed_event_attributes
    second_run = completed.new_execution_run_id
    check(
        second_run in {w.run_id for w in runs},
        "cron: a completed run names the run its schedule started",
    )
    events = [
        e async for e in client.get_workflow_handle(wid, run_id=second_run).fetch_history_events()
    ]
    started = events[0].workflow_execution_started_event_attributes
    check(
        started.continued_execution_run_id == first_run
        and started.initiator == 3  # CONTINUE_AS_NEW_INITIATOR_CRON_SCHEDULE
        and started.HasField("last_completion_result"),
        "cron: the next run continues the first, by its schedule, with its result",
    )
    count = (await client.count_workflows(f"WorkflowId = '{wid}'")).count
    check(count >= len(runs), f"cron: a count by id counts runs ({count})")
    await handle.terminate("enough")
    described = await handle.describe()
    for _ in range(100):
        if described.status == WorkflowExecutionStatus.TERMINATED:
            break
        await asyncio.sleep(0.1)
        described = await handle.describe()
    check(
        described.status == WorkflowExecutionStatus.TERMINATED,
        "cron: a terminate ends the chain",
    )


async def start_phase(client: Client, run: str) -> None:
    for i in range(5):
        await client.start_workflow(
            "approval", i, id=f"restart-{run}-{i}", task_queue=TASK_QUEUE
        )
    check(True, "5 approvals left waiting for the restart")


async def finish_phase(client: Client, run: str) -> None:
    for i in range(5):
        handle = client.get_workflow_handle(f"restart-{run}-{i}")
        await handle.signal("decide", True)
        result = await handle.result()
        check(result == f"approved {i} cents", f"after the restart: {result!r}")


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--address", required=True)
    parser.add_argument("--worker", action="store_true")
    parser.add_argument("--phase", default="all", choices=["all", "start", "finish"])
    parser.add_argument("--run", default=uuid.uuid4().hex[:8])
    parser.add_argument("--activity-worker", action="store_true")
    args = parser.parse_args()
    client = await Client.connect(args.address)
    if args.activity_worker:
        # Runs until killed.
        async with Worker(client, task_queue=GREETINGS, activities=[compose_greeting]):
            await asyncio.Event().wait()
    async def phases() -> None:
        if args.phase == "all":
            await everything(client, args.run)
            await cron_runs(client, args.run)
            await remote_activities(client, args.address, args.run)
        elif args.phase == "start":
            await start_phase(client, args.run)
        else:
            await finish_phase(client, args.run)

    if args.worker:
        async with Worker(
            client,
            task_queue=TASK_QUEUE,
            workflows=[Hello, Countdown, Approval, RemoteHello, Doomed],
            activities=[greet, order_check],
        ):
            await phases()
    else:
        await phases()
    print(f"{checks} checks passed against {args.address}")


def run_and_exit() -> None:
    """Runs `main`, then leaves without interpreter finalization: the SDK's native threads can
    abort the process there ("PyGILState_Release ... finalizing") after everything passed."""
    import os
    import traceback

    try:
        asyncio.run(asyncio.wait_for(main(), timeout=300))
        code = 0
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 1
    except BaseException:  # noqa: BLE001 - reported, then a failing exit status
        traceback.print_exc()
        code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    run_and_exit()
