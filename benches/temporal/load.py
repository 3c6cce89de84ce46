"""Temporal's Python client (and worker) as a load generator, the same against any server.

    python load.py --address 127.0.0.1:7233 --scenario w1|w2|w2-latency \\
        --workflows N --concurrency C [--host-workflows | --python-workflows]

W1: `noop` workflows, start to completion, no activities. Updates: N updates (`execute_update`,
wait for completion) spread over running `py_counter` workflows this script's worker hosts
(at most 5 in flight per workflow, below the servers' 10), C at once; updates-latency: one at
a time to one workflow. W2: `three_step` workflows, three
sequential no-op activities `step` on task queue `steps`, run by the Python worker this script
starts. W2-latency: W2 one at a time. On Cairn the workflow code is the dev server's Rust
(`noop`, `three_step`); with --host-workflows (Temporal's server) this script's worker also
hosts Python twins of them. With --python-workflows (either server: like for like) the
workflows are Python ones no server registers (`py_noop`, `py_three_step`), hosted by this
script's worker, so both servers hand workflow tasks to it. Prints one JSON line:
workflows/s, activities/s, p50/p99 ms.
"""

import argparse
import asyncio
import json
import sys
import time
import uuid
from datetime import timedelta

from temporalio import activity, workflow
from temporalio.client import Client
from temporalio.worker import Worker

WORKFLOW_QUEUE = "bench-workflows"


@activity.defn(name="step")
async def step(i: int) -> int:
    return i


@workflow.defn(name="noop")
class Noop:
    @workflow.run
    async def run(self) -> None:
        return None


@workflow.defn(name="three_step")
class ThreeStep:
    @workflow.run
    async def run(self) -> None:
        for i in range(3):
            await workflow.execute_activity(
                "step", i, task_queue="steps", start_to_close_timeout=timedelta(seconds=30)
            )


@workflow.defn(name="py_noop")
class PyNoop:
    @workflow.run
    async def run(self) -> None:
        return None


@workflow.defn(name="py_three_step")
class PyThreeStep:
    @workflow.run
    async def run(self) -> None:
        for i in range(3):
            await workflow.execute_activity(
                "step", i, task_queue="steps", start_to_close_timeout=timedelta(seconds=30)
            )


@workflow.defn(name="py_counter")
class PyCounter:
    def __init__(self) -> None:
        self.total = 0
        self.done = False

    @workflow.run
    async def run(self) -> int:
        await workflow.wait_condition(lambda: self.done)
        return self.total

    @workflow.update
    async def add(self, n: int) -> int:
        self.total += n
        return self.total

    @workflow.signal
    def finish(self) -> None:
        self.done = True


async def updates(client: Client, args, run: str) -> None:
    """The update scenarios: prints one JSON line like the others."""
    if args.scenario == "updates-latency":
        args.concurrency = 1
    counters = max(1, args.concurrency // 5)
    latencies = []
    gate = asyncio.Semaphore(args.concurrency)
    async with Worker(
        client,
        task_queue=WORKFLOW_QUEUE,
        workflows=[PyCounter],
        max_concurrent_workflow_tasks=max(100, args.concurrency),
    ):
        handles = [
            await client.start_workflow(
                PyCounter.run, id=f"bench-{run}-counter-{i}", task_queue=WORKFLOW_QUEUE
            )
            for i in range(counters)
        ]

        async def one(i: int) -> None:
            async with gate:
                began = time.perf_counter()
                await handles[i % counters].execute_update(PyCounter.add, 1)
                latencies.append(time.perf_counter() - began)

        began = time.perf_counter()
        await asyncio.gather(*(one(i) for i in range(args.workflows)))
        elapsed = time.perf_counter() - began
        totals = 0
        for handle in handles:
            await handle.signal(PyCounter.finish)
            totals += await handle.result()
    if totals != args.workflows:
        raise SystemExit(f"{totals} updates applied, {args.workflows} sent")
    latencies.sort()
    pick = lambda q: latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1000
    print(
        json.dumps(
            {
                "scenario": args.scenario,
                "updates": args.workflows,
                "concurrency": args.concurrency,
                "seconds": round(elapsed, 3),
                "updates_per_sec": round(args.workflows / elapsed, 1),
                "p50_ms": round(pick(0.50), 2),
                "p99_ms": round(pick(0.99), 2),
            }
        )
    )


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--address", required=True)
    parser.add_argument(
        "--scenario",
        choices=["w1", "w2", "w2-latency", "updates", "updates-latency"],
        required=True,
    )
    parser.add_argument("--workflows", type=int, default=1000)
    parser.add_argument("--concurrency", type=int, default=100)
    parser.add_argument("--host-workflows", action="store_true")
    parser.add_argument("--python-workflows", action="store_true")
    args = parser.parse_args()
    if args.scenario == "w2-latency":
        args.concurrency = 1
    client = await Client.connect(args.address)
    if args.scenario.startswith("updates"):
        await updates(client, args, uuid.uuid4().hex[:8])
        return
    workflow_type = "noop" if args.scenario == "w1" else "three_step"
    if args.python_workflows:
        workflow_type = "py_" + workflow_type
    run = uuid.uuid4().hex[:8]
    latencies = []
    gate = asyncio.Semaphore(args.concurrency)

    async def one(i: int) -> None:
        async with gate:
            began = time.perf_counter()
            await client.execute_workflow(
                workflow_type, id=f"bench-{run}-{i}", task_queue=WORKFLOW_QUEUE
            )
            latencies.append(time.perf_counter() - began)

    workers = [
        Worker(
            client,
            task_queue="steps",
            activities=[step],
            max_concurrent_activities=max(100, args.concurrency),
        )
    ]
    if args.host_workflows or args.python_workflows:
        workers.append(
            Worker(
                client,
                task_queue=WORKFLOW_QUEUE,
                workflows=[PyNoop, PyThreeStep] if args.python_workflows else [Noop, ThreeStep],
                max_concurrent_workflow_tasks=max(100, args.concurrency),
            )
        )
    for w in workers:
        await w.__aenter__()
    try:
        began = time.perf_counter()
        await asyncio.gather(*(one(i) for i in range(args.workflows)))
        elapsed = time.perf_counter() - began
    finally:
        for w in workers:
            await w.__aexit__(None, None, None)
    latencies.sort()
    pick = lambda q: latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1000
    activities = 0 if args.scenario == "w1" else 3 * args.workflows
    print(
        json.dumps(
            {
                "scenario": args.scenario,
                "workflows": args.workflows,
                "concurrency": args.concurrency,
                "seconds": round(elapsed, 3),
                "workflows_per_sec": round(args.workflows / elapsed, 1),
                "activities_per_sec": round(activities / elapsed, 1),
                "p50_ms": round(pick(0.50), 2),
                "p99_ms": round(pick(0.99), 2),
            }
        )
    )


def run_and_exit() -> None:
    """Runs `main`, then leaves without interpreter finalization: the SDK's native threads can
    abort the process there ("PyGILState_Release ... finalizing") after everything passed."""
    import os
    import traceback

    try:
        asyncio.run(main())
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
