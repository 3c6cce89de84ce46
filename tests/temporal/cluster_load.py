"""Load on a Cairn cluster of processes while it is faulted, checked for exactly-once effects.

Run by scripts/fdb-cluster-test.sh beside the Temporal suites, while one node is killed and
restarted and a FoundationDB process dies. For `--seconds`, `--concurrency` drivers each run
one workflow after another, spread over every node and over both APIs (HTTP for even i,
Temporal's gRPC API through its Python client for odd i):

- `approval` (i even/odd alike): started with amount i+1 at node k, updated (`amend`, update id
  `amend-<run>-<i>`) to 10*(i+1) at node k+1, signalled (`decide` true) at node k+2. Its result
  must be "approved 10*(i+1) cents"; its history must hold that update accepted and completed
  exactly once, and the signal at least once and at most as often as it was sent.
- `hello` (every fourth i also): its result "hello w<i>", its one activity completed exactly
  once and no attempt past the first two (the default policy retries; a lost attempt is retried
  once per fault, and the suite's faults are two).
- `flaky_payment` (one started each second, beside the drivers): its activity declines its
  first two attempts and its policy allows five, 5 s apart. No attempt may run past the fifth:
  the run completes on attempt 3 to 5 (a lost attempt counts against the policy) or fails
  with its fifth attempt's failure; its activity completes at most once.

A call that fails because its node is gone or busy (connection refused or cut, unavailable,
overloaded) is retried at the next node: a start with the same id (already started: it had
landed), an update with the same update id, a signal again (counted). Anything else, a wrong
result or a broken exactly-once check is a failure: printed, exit status 1.
"""

import argparse
import asyncio
import concurrent.futures
import json
import re
import sys
import time
import urllib.error
import urllib.parse
import urllib.request

from temporalio.client import Client, WorkflowUpdateFailedError
from temporalio.exceptions import WorkflowAlreadyStartedError
from temporalio.service import RetryConfig, RPCError, RPCStatusCode

TASK_QUEUE = "cairn-load"
# Longest one call is retried across the nodes before the run counts as failed: a kill, the
# lease (10 s) and a FoundationDB recovery fit in it several times.
RETRY_FOR_S = 90
# `flaky_payment`'s retry policy (crates/cairn-cli/src/demo.rs): at most this many attempts.
PAYMENT_ATTEMPTS_MAX = 5
# Its activity declines every attempt before this one.
PAYMENT_FIRST_SUCCESS = 3
# Statuses and gRPC codes that say "this node cannot answer now": try the next one.
HTTP_RETRY = {429, 502, 503, 504}
GRPC_RETRY = {
    RPCStatusCode.UNAVAILABLE,
    RPCStatusCode.RESOURCE_EXHAUSTED,
    RPCStatusCode.DEADLINE_EXCEEDED,
    RPCStatusCode.CANCELLED,
    RPCStatusCode.UNKNOWN,
}


class Retry(Exception):
    """The node could not answer; the call may go to another."""


def http_call(base: str, method: str, path: str, body=None, timeout: float = 30):
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(
        base + path, data=data, method=method, headers={"content-type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read() or b"null")
    except urllib.error.HTTPError as e:
        if e.code in HTTP_RETRY:
            raise Retry(f"HTTP {e.code}") from e
        return e.code, json.loads(e.read() or b"null")
    except (urllib.error.URLError, ConnectionError, TimeoutError, OSError) as e:
        raise Retry(str(e)) from e


class Cluster:
    def __init__(self, http: list[str], clients: list[Client]):
        self.http = http
        self.clients = clients
        self.retries = 0
        # When each run's result was read: the longest gap between two is how long the
        # faults stopped the cluster's progress.
        self.completions: list[float] = []

    async def call(self, first: int, what: str, attempt):
        """`attempt(node)` at node `first`, then the next ones, until it answers."""
        deadline = time.monotonic() + RETRY_FOR_S
        node = first
        while True:
            try:
                return await attempt(node % len(self.http))
            except Retry as e:
                last = str(e)
            except RPCError as e:
                if e.status not in GRPC_RETRY:
                    raise
                last = f"gRPC {e.status.name}: {e.message}"
            self.retries += 1
            if time.monotonic() > deadline:
                raise RuntimeError(f"{what}: no node answered within {RETRY_FOR_S} s ({last})")
            node += 1
            await asyncio.sleep(0.2)


async def approval(cluster: Cluster, run: str, i: int, failures: list[str]):
    wid = f"load-approval-{run}-{i}"
    amount, amended = i + 1, 10 * (i + 1)
    update_id = f"amend-{run}-{i}"
    grpc = i % 2 == 1

    async def start(node):
        if grpc:
            try:
                await cluster.clients[node].start_workflow(
                    "approval", amount, id=wid, task_queue=TASK_QUEUE
                )
            except WorkflowAlreadyStartedError:
                pass  # an earlier try landed
            return
        status, body = await asyncio.to_thread(
            http_call,
            cluster.http[node],
            "POST",
            "/api/v1/workflows",
            {"workflow_id": wid, "workflow_type": "approval", "input": amount},
        )
        if status == 409 and body.get("code") == "already_running":
            return
        if status != 201:
            raise RuntimeError(f"start of {wid}: HTTP {status} {body}")

    async def update(node):
        if grpc:
            handle = cluster.clients[node].get_workflow_handle(wid)
            return await handle.execute_update("amend", amended, id=update_id)
        path = f"/api/v1/workflows/{wid}/updates/amend?" + urllib.parse.urlencode(
            {"update_id": update_id}
        )
        status, body = await asyncio.to_thread(http_call, cluster.http[node], "POST", path, amended)
        if status == 202:
            raise Retry("update not completed yet")
        if status != 200:
            raise RuntimeError(f"update of {wid}: HTTP {status} {body}")
        return body.get("result")

    signals = 0

    async def signal(node):
        nonlocal signals
        signals += 1
        if grpc:
            await cluster.clients[node].get_workflow_handle(wid).signal("decide", True)
            return
        status, body = await asyncio.to_thread(
            http_call, cluster.http[node], "POST", f"/api/v1/workflows/{wid}/signals/decide", True
        )
        if status not in (200, 202, 204):
            raise RuntimeError(f"signal of {wid}: HTTP {status} {body}")

    await cluster.call(i, f"start {wid}", start)
    try:
        answer = await cluster.call(i + 1, f"update {wid}", update)
    except WorkflowUpdateFailedError as e:
        failures.append(f"{wid}: update refused: {e.cause}")
        return
    if answer != f"amount is now {amended} cents":
        failures.append(f"{wid}: update answered {answer!r}")
    await cluster.call(i + 2, f"signal {wid}", signal)
    body, events = await settled(cluster, i, wid)
    result = body.get("result")
    expected = f"approved {amended} cents"
    if result != expected:
        failures.append(f"{wid}: result {result!r}, expected {expected!r}")
    kinds = [e["event_type"] for e in events]
    for kind in ("WorkflowExecutionUpdateAccepted", "WorkflowExecutionUpdateCompleted"):
        ours = [
            e for e in events if e["event_type"] == kind and e.get("details", {}).get("update_id") == update_id
        ]
        if len(ours) != 1:
            failures.append(f"{wid}: {len(ours)} {kind} events for update {update_id}")
    signalled = kinds.count("WorkflowExecutionSignaled")
    if not 1 <= signalled <= signals:
        failures.append(f"{wid}: signalled {signalled} times, sent {signals}")


async def start_over_http(cluster: Cluster, i: int, wid: str, workflow_type: str, input) -> None:
    """Starts `wid` over HTTP at node `i` (or the next ones); already started is fine (an
    earlier try landed)."""

    async def start(node):
        status, body = await asyncio.to_thread(
            http_call,
            cluster.http[node],
            "POST",
            "/api/v1/workflows",
            {"workflow_id": wid, "workflow_type": workflow_type, "input": input},
        )
        if status not in (201, 409):
            raise RuntimeError(f"start of {wid}: HTTP {status} {body}")

    await cluster.call(i, f"start {wid}", start)


async def hello(cluster: Cluster, run: str, i: int, failures: list[str]):
    wid = f"load-hello-{run}-{i}"
    await start_over_http(cluster, i, wid, "hello", f"w{i}")
    body, events = await settled(cluster, i, wid)
    result = body.get("result")
    if result != f"hello w{i}":
        failures.append(f"{wid}: result {result!r}")
    completed = [e for e in events if e["event_type"] == "ActivityTaskCompleted"]
    if len(completed) != 1:
        failures.append(f"{wid}: {len(completed)} activity completions")
    attempts = [e.get("details", {}).get("attempt", 1) for e in completed]
    if any(a > 3 for a in attempts):
        failures.append(f"{wid}: completed at attempt {attempts}")


async def payment(cluster: Cluster, run: str, i: int, failures: list[str]) -> int:
    """Runs one `flaky_payment` and checks its attempts stayed within its retry policy; returns
    the attempt it ended on."""
    wid = f"load-payment-{run}-{i}"
    cents = i + 1
    await start_over_http(cluster, i, wid, "flaky_payment", cents)
    body, events = await settled(cluster, i, wid)
    attempts = [
        e.get("details", {}).get("attempt", 1)
        for e in events
        if e["event_type"].startswith("ActivityTask")
    ]
    last = max(attempts, default=0)
    if last > PAYMENT_ATTEMPTS_MAX:
        failures.append(f"{wid}: attempt {last} ran, the policy allows {PAYMENT_ATTEMPTS_MAX}")
    completions = sum(e["event_type"] == "ActivityTaskCompleted" for e in events)
    if completions > 1:
        failures.append(f"{wid}: {completions} activity completions")
    if body.get("status") == "completed":
        found = re.fullmatch(rf"charged {cents} cents on attempt (\d+)", str(body.get("result")))
        if not found or not PAYMENT_FIRST_SUCCESS <= int(found[1]) <= PAYMENT_ATTEMPTS_MAX:
            failures.append(f"{wid}: result {body.get('result')!r}")
        return int(found[1]) if found else last
    failed = [e for e in events if e["event_type"] == "ActivityTaskFailed"]
    if body.get("status") != "failed" or not failed or last != PAYMENT_ATTEMPTS_MAX:
        failures.append(f"{wid}: ended {body} after attempt {last}")
    return last


async def settled(cluster: Cluster, i: int, wid: str):
    """The run's result (waiting for it) and its history, from any node."""

    async def result(node):
        status, body = await asyncio.to_thread(
            http_call,
            cluster.http[node],
            "GET",
            f"/api/v1/workflows/{wid}/result?wait_ms=20000",
            None,
            40,
        )
        if status == 202:
            raise Retry("still running")
        if status != 200:
            raise RuntimeError(f"result of {wid}: HTTP {status} {body}")
        return body

    body = await cluster.call(i, f"result {wid}", result)
    cluster.completions.append(time.monotonic())

    async def history(node):
        status, events = await asyncio.to_thread(
            http_call, cluster.http[node], "GET", f"/api/v1/workflows/{wid}/history"
        )
        if status != 200:
            raise RuntimeError(f"history of {wid}: HTTP {status} {events}")
        return events

    events = await cluster.call(i, f"history {wid}", history)
    return body, events


async def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--http", required=True, help="comma-separated node base URLs")
    parser.add_argument("--grpc", required=True, help="comma-separated host:port of the nodes")
    parser.add_argument(
        "--seconds", type=float, default=30, help="how long new runs keep being started"
    )
    parser.add_argument("--concurrency", type=int, default=12)
    args = parser.parse_args()
    # HTTP calls block a thread each (a result waits up to 20 s): enough threads for every
    # driver and every payment waiting at once, or the load measures the client's own pool
    # (asyncio's default is min(32, CPUs + 4)).
    asyncio.get_running_loop().set_default_executor(
        concurrent.futures.ThreadPoolExecutor(max_workers=args.concurrency + int(args.seconds) + 16)
    )
    http = args.http.split(",")
    # The SDK's own retries of a refused connection are cut short: the load tries the next
    # node instead (by default one dead node holds a call for about 10 s).
    quick = RetryConfig(max_retries=2, max_elapsed_time_millis=1_000)
    clients = [await Client.connect(a, retry_config=quick) for a in args.grpc.split(",")]
    cluster = Cluster(http, clients)
    run = str(int(time.time() * 1000))
    failures: list[str] = []
    started = time.monotonic()
    # Each of `concurrency` drivers takes the next run until `seconds` have passed.
    count = 0

    async def driver():
        nonlocal count
        while time.monotonic() - started < args.seconds:
            i = count
            count += 1
            try:
                await approval(cluster, run, i, failures)
                if i % 4 == 0:
                    await hello(cluster, run, i, failures)
            except Exception as e:  # a call that never got through, or an unexpected answer
                failures.append(f"workflow {i}: {type(e).__name__}: {e}")

    # A payment each second, beside the drivers: each retries across the kills below.
    ended_on: list[int] = []

    async def pay(i: int):
        try:
            ended_on.append(await payment(cluster, run, i, failures))
        except Exception as e:
            failures.append(f"payment {i}: {type(e).__name__}: {e}")

    async def payer():
        payments = []
        while time.monotonic() - started < args.seconds:
            payments.append(asyncio.create_task(pay(len(payments))))
            await asyncio.sleep(1.0)
        await asyncio.gather(*payments)

    await asyncio.gather(payer(), *(driver() for _ in range(args.concurrency)))
    took = time.monotonic() - started
    hellos = (count + 3) // 4
    print(
        f"cluster load: {count} approvals (start, update, signal) and {hellos} hellos "
        f"over {len(http)} nodes in {took:.1f} s, {cluster.retries} calls retried at another node"
    )
    by_attempt = {a: ended_on.count(a) for a in sorted(set(ended_on))}
    print(f"flaky_payment: {len(ended_on)} runs, by the attempt each ended on: {by_attempt}")
    # Within the load's window: after it, only the last runs (and payments) are finishing.
    times = sorted(t for t in cluster.completions if t - started <= args.seconds)
    if len(times) >= 2:
        gap, at = max((b - a, a) for a, b in zip(times, times[1:]))
        print(
            f"longest time with no run completing: {gap:.1f} s, from {at - started:.1f} s "
            f"into the load (the node kill comes about 6 s in)"
        )
    if count == 0:
        failures.append("no run was started")
    for failure in failures:
        print(f"FAILED: {failure}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
