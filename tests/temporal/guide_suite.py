"""The guide's Python programs (../shared/seed-temporal-guide.txt), as the guide writes them,
run by Temporal's Python SDK against a server: Cairn (the workflows run in this process's
worker, through Cairn's workflow tasks) or Temporal's own dev server (which proves the suite).
Exits non-zero on the first failed check.

    python guide_suite.py --address 127.0.0.1:7233 [--phase all|start|finish] [--run ID]

The services the guide's activities call over HTTP (orders, payments, inventory, mail) are
replaced by in-memory fakes with the same outcomes: a declined card raises InvalidCardError, a
slow processor PaymentTimeoutError, an out-of-stock reservation fails. Waits the guide sets in
days are the expense's field (seven days unless the test shortens it). Phases split a run
around a server restart: `start` leaves workflows mid-way, `finish` completes and checks them.
"""

import argparse
import asyncio
import os
import signal
import sys
import tempfile
import uuid
from dataclasses import dataclass, field
from datetime import timedelta

from temporalio import activity, workflow
from temporalio.client import (
    Client,
    Schedule,
    ScheduleActionStartWorkflow,
    ScheduleAlreadyRunningError,
    ScheduleIntervalSpec,
    ScheduleSpec,
    ScheduleUpdate,
    WorkflowFailureError,
    WithStartWorkflowOperation,
    WorkflowExecutionStatus,
    WorkflowUpdateFailedError,
    WorkflowUpdateStage,
)
from temporalio.common import (
    RetryPolicy,
    SearchAttributeKey,
    SearchAttributePair,
    TypedSearchAttributes,
    WorkflowIDConflictPolicy,
    WorkflowIDReusePolicy,
)
from temporalio.exceptions import (
    ActivityError,
    ApplicationError,
    RetryState,
    WorkflowAlreadyStartedError,
)
from temporalio.service import RPCError, RPCStatusCode
from temporalio.worker import Worker

ORDERS = "order-processing"

# --- the services the activities call, faked -----------------------------------------------

# Per process: what the fakes saw (the worker runs in this process, except the killed one).
calls: dict[str, list] = {}


def saw(what: str, value) -> None:
    calls.setdefault(what, []).append(value)


def order_of(order_id: str) -> dict:
    card = order_id.split(":")[1] if ":" in order_id else "ok"
    return {
        "total_cents": 4_200,
        "currency": "EUR",
        "payment_method_id": card,
        "customer_email": f"{order_id}@example.com",
        "items": [{"sku": "cairn-1", "qty": 1 if "no-stock" not in order_id else 999}],
    }


# --- activities.py -------------------------------------------------------------------------


@dataclass
class ChargeRequest:
    order_id: str
    amount: int  # cents
    currency: str
    payment_method_id: str


@dataclass
class ChargeResult:
    charge_id: str
    status: str


class InvalidCardError(Exception):
    """Non-retryable: card declined or invalid"""


class PaymentTimeoutError(Exception):
    """Retryable: payment processor is slow"""


@activity.defn
async def validate_order(order_id: str) -> dict:
    """Validate order exists and can be processed"""
    activity.logger.info(f"Validating order: {order_id}")
    if order_id.startswith("missing"):
        raise ValueError(f"Order {order_id} not found")
    return order_of(order_id)


@activity.defn
async def charge_card(request: ChargeRequest) -> ChargeResult:
    """Charge the customer's card"""
    activity.heartbeat("Starting charge")
    attempt = activity.info().attempt
    saw("charge", (request.order_id, attempt))
    card = request.payment_method_id
    if card == "declined":
        raise InvalidCardError("Card declined: insufficient funds")
    if card == "slow" and attempt < 3:
        raise PaymentTimeoutError(f"Payment failed: 504 (attempt {attempt})")
    if card.startswith("hang") and attempt == 1:
        # The processor hangs: no more heartbeats; the heartbeat timeout (10 s) ends the
        # attempt, and the retry goes through. A marker file tells the suite it started.
        marker = card.split("=", 1)[1] if "=" in card else None
        if marker:
            open(marker, "w").close()
        await asyncio.sleep(60)
    activity.heartbeat("Charge completed")
    return ChargeResult(charge_id=f"ch-{request.order_id}-{attempt}", status="succeeded")


@activity.defn
async def reserve_inventory(order_id: str, items: list[dict]) -> bool:
    """Reserve inventory for the order"""
    activity.logger.info(f"Reserving inventory for order: {order_id}")
    if any(item["qty"] > 100 for item in items):
        raise ApplicationError("409: not enough stock", non_retryable=True)
    return True


@activity.defn
async def rollback_charge(charge_id: str, reason: str) -> None:
    """Compensation: refund the charge if workflow fails"""
    saw("rollback", (charge_id, reason))


@activity.defn
async def send_confirmation_email(email: str) -> None:
    # The mail service is down: notifications are non-critical.
    raise ApplicationError("mail service unavailable", non_retryable=True)


@activity.defn
async def notify_fulfillment(order_id: str) -> None:
    saw("fulfillment", order_id)


# --- workflows.py --------------------------------------------------------------------------


@workflow.defn
class OrderFulfillmentWorkflow:
    def __init__(self):
        self._status = "pending"
        self._charge_id: str | None = None

    @workflow.run
    async def run(self, order_id: str) -> dict:
        self._status = "validating"
        # Step 1: Validate order
        order = await workflow.execute_activity(
            validate_order,
            order_id,
            start_to_close_timeout=timedelta(seconds=30),
            retry_policy=RetryPolicy(maximum_attempts=3),
        )
        self._status = "charging"
        # Step 2: Charge card (with compensation on failure)
        try:
            charge_request = ChargeRequest(
                order_id=order_id,
                amount=order["total_cents"],
                currency=order["currency"],
                payment_method_id=order["payment_method_id"],
            )
            charge_result = await workflow.execute_activity(
                charge_card,
                charge_request,
                start_to_close_timeout=timedelta(seconds=60),
                heartbeat_timeout=timedelta(seconds=10),
                retry_policy=RetryPolicy(
                    initial_interval=timedelta(seconds=1),
                    maximum_interval=timedelta(seconds=30),
                    maximum_attempts=5,
                    non_retryable_error_types=["InvalidCardError"],
                ),
            )
            self._charge_id = charge_result.charge_id
        except Exception:
            self._status = "failed"
            # No charge was made (or it was rejected), just fail
            raise
        self._status = "reserving_inventory"
        # Step 3: Reserve inventory (with compensation on failure)
        try:
            await workflow.execute_activity(
                reserve_inventory,
                args=[order_id, order["items"]],
                start_to_close_timeout=timedelta(minutes=5),
                retry_policy=RetryPolicy(maximum_attempts=5),
            )
        except Exception as e:
            self._status = "failed"
            # Compensate: refund the charge
            await workflow.execute_activity(
                rollback_charge,
                args=[self._charge_id, f"Inventory reservation failed: {str(e)}"],
                start_to_close_timeout=timedelta(seconds=30),
            )
            raise
        self._status = "completing"
        # Step 4: Send notifications (parallel, non-critical)
        await asyncio.gather(
            workflow.execute_activity(
                send_confirmation_email,
                order["customer_email"],
                start_to_close_timeout=timedelta(minutes=1),
                retry_policy=RetryPolicy(maximum_attempts=10),
            ),
            workflow.execute_activity(
                notify_fulfillment,
                order_id,
                start_to_close_timeout=timedelta(minutes=1),
            ),
            return_exceptions=True,  # Don't fail if notifications fail
        )
        self._status = "completed"
        return {"order_id": order_id, "charge_id": self._charge_id, "status": "completed"}

    @workflow.query
    def get_status(self) -> str:
        """Query current workflow status without interrupting it"""
        return self._status

    @workflow.signal
    async def cancel_order(self) -> None:
        """Signal to cancel the order"""
        workflow.logger.info("Order cancellation requested")


@workflow.defn
class OrderBatchWorkflow:
    @workflow.run
    async def run(self, order_ids: list[str]) -> list[dict]:
        # Process orders in parallel, max 10 concurrent
        semaphore = asyncio.Semaphore(10)

        async def process_one(order_id: str) -> dict:
            async with semaphore:
                return await workflow.execute_child_workflow(
                    OrderFulfillmentWorkflow.run,
                    order_id,
                    id=f"order-{order_id}-fulfillment",
                )

        results = await asyncio.gather(
            *[process_one(order_id) for order_id in order_ids], return_exceptions=True
        )
        successful = [r for r in results if not isinstance(r, Exception)]
        return successful


@dataclass
class Expense:
    id: str
    amount_cents: int
    # The guide waits seven days; a test shortens it.
    wait_seconds: float = field(default=7 * 24 * 3600)


@activity.defn
async def send_approval_request(expense: Expense) -> None:
    saw("approval_request", expense.id)


@activity.defn
async def send_timeout_notification(expense_id: str) -> None:
    saw("timeout_notification", expense_id)


@activity.defn
async def process_expense_payment(expense: Expense) -> None:
    saw("expense_paid", expense.id)


@workflow.defn
class ExpenseApprovalWorkflow:
    def __init__(self):
        self._approved: bool | None = None

    @workflow.run
    async def run(self, expense: Expense) -> str:
        # Notify approver
        await workflow.execute_activity(
            send_approval_request, expense, start_to_close_timeout=timedelta(seconds=30)
        )
        # Wait for human to approve/reject (up to 7 days!)
        try:
            await workflow.wait_condition(
                lambda: self._approved is not None,
                timeout=timedelta(seconds=expense.wait_seconds),
            )
        except asyncio.TimeoutError:
            await workflow.execute_activity(
                send_timeout_notification,
                expense.id,
                start_to_close_timeout=timedelta(seconds=30),
            )
            return "timed_out"
        if self._approved:
            await workflow.execute_activity(
                process_expense_payment, expense, start_to_close_timeout=timedelta(seconds=30)
            )
            return "approved"
        else:
            return "rejected"

    @workflow.signal
    async def approve(self) -> None:
        self._approved = True

    @workflow.signal
    async def reject(self) -> None:
        self._approved = False

    @workflow.query
    def decided(self) -> str:
        return "pending" if self._approved is None else str(self._approved)

    # Updates (beyond the guide): change the amount while undecided, telling the approver
    # again; wait for the decision.
    @workflow.update
    async def amend(self, amount_cents: int) -> int:
        await workflow.execute_activity(
            send_approval_request,
            Expense(id=f"amended-{amount_cents}", amount_cents=amount_cents),
            start_to_close_timeout=timedelta(seconds=30),
        )
        return amount_cents

    @amend.validator
    def check_amend(self, amount_cents: int) -> None:
        if amount_cents <= 0:
            raise ValueError("the amount must be positive")
        if self._approved is not None:
            raise ValueError("the expense is decided")

    @workflow.update
    async def decision(self) -> str:
        await workflow.wait_condition(lambda: self._approved is not None)
        return "approved" if self._approved else "rejected"


@activity.defn
async def build_report() -> str:
    saw("report", activity.info().workflow_id)
    return "report sent"


@workflow.defn
class DailyReportWorkflow:
    @workflow.run
    async def run(self) -> str:
        return await workflow.execute_activity(
            build_report, start_to_close_timeout=timedelta(seconds=30)
        )


@workflow.defn
class ReportChainWorkflow:
    """Continues as new until it has run `until` times (a long-lived report loop's shape)."""

    @workflow.run
    async def run(self, runs: list[int]) -> dict:
        await asyncio.sleep(0.05)
        if len(runs) < 3:
            workflow.continue_as_new(runs + [len(runs)])
        return {"runs": runs, "continued_from": workflow.info().continued_run_id}


TAG = SearchAttributeKey.for_keyword("CustomKeywordField")
PRIORITY = SearchAttributeKey.for_int("CustomIntField")


@workflow.defn
class TaggedWorkflow:
    """Upserts a search attribute (one Temporal's dev server predefines), then waits."""

    def __init__(self) -> None:
        self.done = False

    @workflow.signal
    def finish(self) -> None:
        self.done = True

    @workflow.run
    async def run(self, tag: str) -> str:
        workflow.upsert_search_attributes([TAG.value_set(tag)])
        await workflow.wait_condition(lambda: self.done)
        return tag


@workflow.defn
class NotedWorkflow:
    """Reads the memo and search attributes it started with, changes both once told to
    proceed (so a list can see them first, whenever its worker runs), and carries them into a
    continued run."""

    def __init__(self) -> None:
        self.proceeding = False
        self.done = False

    @workflow.signal
    def proceed(self) -> None:
        self.proceeding = True

    @workflow.signal
    def finish(self) -> None:
        self.done = True

    @workflow.run
    async def run(self, continued: bool) -> dict:
        seen = {
            "owner": workflow.memo_value("owner", default=None),
            "ticket": workflow.memo_value("ticket", default=None),
            "tag": workflow.info().typed_search_attributes.get(TAG),
            "priority": workflow.info().typed_search_attributes.get(PRIORITY),
            "memo_keys": sorted(workflow.memo()),
        }
        if continued:
            return seen
        await workflow.wait_condition(lambda: self.proceeding)
        workflow.upsert_memo({"stage": "working", "owner": None})
        workflow.upsert_search_attributes([TAG.value_unset(), PRIORITY.value_set(9)])
        await workflow.wait_condition(lambda: self.done)
        workflow.continue_as_new(True)


@activity.defn
async def lookup_rate(currency: str) -> float:
    if currency == "SLOW":
        await asyncio.sleep(2.5)
    return {"EUR": 1.5, "SLOW": 2.0}.get(currency, 1.0)


@workflow.defn
class PricingWorkflow:
    """Versioned with a patch; prices through local activities, one of them outlasting the
    workflow task timeout (the worker heartbeats its task meanwhile)."""

    @workflow.run
    async def run(self, amount: int) -> dict:
        rate = await workflow.execute_local_activity(
            lookup_rate, "EUR", start_to_close_timeout=timedelta(seconds=5)
        )
        v2 = workflow.patched("fee-v2")
        await workflow.sleep(0.05)  # a later task replays the patch's marker
        again = workflow.patched("fee-v2")
        slow = await workflow.execute_local_activity(
            lookup_rate, "SLOW", start_to_close_timeout=timedelta(seconds=10)
        )
        fee = 2 if v2 else 1
        return {"total": amount * rate + fee, "patched": [v2, again], "slow": slow}


@workflow.defn
class ListenerWorkflow:
    """Waits for one signal of two arguments."""

    def __init__(self) -> None:
        self.heard: list | None = None

    @workflow.signal
    def hear(self, greeting: str, name: str) -> None:
        self.heard = [greeting, name]

    @workflow.run
    async def run(self) -> list:
        await workflow.wait_condition(lambda: self.heard is not None)
        return self.heard


@workflow.defn
class RelayWorkflow:
    """Signals one workflow (two arguments), cancels another, and signals one that does not
    exist."""

    @workflow.run
    async def run(self, listener: str, victim: str) -> dict:
        await workflow.get_external_workflow_handle(listener).signal(
            ListenerWorkflow.hear, args=["hello", "relay"]
        )
        await workflow.get_external_workflow_handle(victim).cancel()
        try:
            await workflow.get_external_workflow_handle(f"nobody-{listener}").signal(
                ListenerWorkflow.hear, args=["x", "y"]
            )
            missing = "delivered"
        except ApplicationError as e:
            missing = e.type or str(e)
        return {"missing": missing}


WORKFLOWS = [
    ListenerWorkflow,
    RelayWorkflow,
    PricingWorkflow,
    TaggedWorkflow,
    NotedWorkflow,
    OrderFulfillmentWorkflow,
    OrderBatchWorkflow,
    ExpenseApprovalWorkflow,
    ReportChainWorkflow,
]
ACTIVITIES = [
    lookup_rate,
    validate_order,
    charge_card,
    reserve_inventory,
    rollback_charge,
    send_confirmation_email,
    notify_fulfillment,
    send_approval_request,
    send_timeout_notification,
    process_expense_payment,
]


def worker(client: Client) -> Worker:
    return Worker(client, task_queue=ORDERS, workflows=WORKFLOWS, activities=ACTIVITIES)


def report_worker(client: Client) -> Worker:
    return Worker(
        client, task_queue="reports", workflows=[DailyReportWorkflow], activities=[build_report]
    )


# --- the checks ----------------------------------------------------------------------------

checks = 0


def check(condition: bool, what: str) -> None:
    global checks
    if not condition:
        print(f"FAILED: {what}", file=sys.stderr)
        sys.stderr.flush()
        os._exit(1)
    checks += 1
    print(f"ok: {what}", flush=True)


async def failure_of(handle) -> BaseException:
    try:
        result = await asyncio.wait_for(handle.result(), 60)
    except WorkflowFailureError as e:
        return e.cause
    check(False, f"{handle.id} failed (it returned {result!r})")


def cause_chain(e: BaseException) -> list[BaseException]:
    out = []
    while e is not None:
        out.append(e)
        e = e.__cause__
    return out


async def order_fulfillment(client: Client, run: str) -> None:
    # The guide's client.py: start, query, wait.
    handle = await client.start_workflow(
        OrderFulfillmentWorkflow.run,
        f"order-12345-{run}",
        id=f"order-12345-{run}-fulfillment",
        task_queue=ORDERS,
        execution_timeout=timedelta(hours=24),
    )
    status = await handle.query(OrderFulfillmentWorkflow.get_status)
    check(
        status
        in ("pending", "validating", "charging", "reserving_inventory", "completing", "completed"),
        f"get_status answers while it runs: {status!r}",
    )
    try:
        await handle.signal(OrderFulfillmentWorkflow.cancel_order)
    except RPCError as e:
        # The order can finish before the signal arrives (a node kill in the cluster test can
        # hold the query until then): a closed workflow is NOT_FOUND to a signal, on
        # Temporal's server as on Cairn.
        described = await handle.describe()
        check(
            e.status == RPCStatusCode.NOT_FOUND
            and described.status == WorkflowExecutionStatus.COMPLETED,
            f"a signal is refused only once the order completed: {e.status.name}, {described.status}",
        )
    result = await asyncio.wait_for(handle.result(), 60)
    check(
        result
        == {
            "order_id": f"order-12345-{run}",
            "charge_id": f"ch-order-12345-{run}-1",
            "status": "completed",
        },
        f"the order completes: {result}",
    )
    check(
        await handle.query(OrderFulfillmentWorkflow.get_status) == "completed",
        "get_status of the completed order",
    )
    check(
        f"order-12345-{run}" in calls.get("fulfillment", []),
        "notifications in gather(return_exceptions=True): the email failed, fulfillment ran",
    )
    history = await handle.fetch_history()
    described = await handle.describe()
    check(
        described.history_length == len(history.events),
        f"describe's history length counts the history's events: "
        f"{described.history_length} vs {len(history.events)}",
    )
    signaled = [e for e in history.events if e.HasField("workflow_execution_signaled_event_attributes")]
    check(
        len(signaled) == 1
        and signaled[0].workflow_execution_signaled_event_attributes.signal_name == "cancel_order",
        "the cancel_order signal is in the history",
    )

    # A declined card: InvalidCardError is non-retryable by the policy, one attempt.
    handle = await client.start_workflow(
        OrderFulfillmentWorkflow.run, f"o-{run}:declined", id=f"declined-{run}", task_queue=ORDERS
    )
    cause = await failure_of(handle)
    app = [e for e in cause_chain(cause) if isinstance(e, ApplicationError)]
    check(
        isinstance(cause, ActivityError) and app and app[0].type == "InvalidCardError",
        f"a declined card fails the order with InvalidCardError: {cause_chain(cause)}",
    )
    attempts = [a for (o, a) in calls.get("charge", []) if o == f"o-{run}:declined"]
    check(attempts == [1], f"InvalidCardError is not retried: attempts {attempts}")
    check(
        isinstance(cause, ActivityError) and cause.retry_state == RetryState.NON_RETRYABLE_FAILURE,
        f"its retry state says non-retryable: {getattr(cause, 'retry_state', None)!r}",
    )
    check(
        await handle.query(OrderFulfillmentWorkflow.get_status) == "failed",
        "get_status of the failed order",
    )

    # A slow processor: PaymentTimeoutError twice, the third attempt charges.
    result = await asyncio.wait_for(
        client.execute_workflow(
            OrderFulfillmentWorkflow.run, f"o-{run}:slow", id=f"slow-{run}", task_queue=ORDERS
        ),
        60,
    )
    attempts = [a for (o, a) in calls.get("charge", []) if o == f"o-{run}:slow"]
    check(
        result["charge_id"] == f"ch-o-{run}:slow-3" and attempts == [1, 2, 3],
        f"PaymentTimeoutError is retried by the policy: attempts {attempts}",
    )

    # Out of stock: the reservation fails and the charge is rolled back (the saga).
    handle = await client.start_workflow(
        OrderFulfillmentWorkflow.run,
        f"o-{run}-no-stock",
        id=f"no-stock-{run}",
        task_queue=ORDERS,
    )
    cause = await failure_of(handle)
    rollbacks = [r for r in calls.get("rollback", []) if r[0] == f"ch-o-{run}-no-stock-1"]
    check(
        len(rollbacks) == 1 and "Inventory reservation failed" in rollbacks[0][1],
        f"rollback_charge compensates the charge: {rollbacks}",
    )
    check(isinstance(cause, ActivityError), f"and the order fails: {cause!r}")


async def malformed_run_id(client: Client, run: str) -> None:
    # What Temporal's feature suite waits for before it starts: Temporal's wording.
    try:
        await client.get_workflow_handle("!sonotreal", run_id="superneverexistwf!").describe()
        check(False, "a malformed run id is refused")
    except RPCError as e:
        check("Invalid RunId" in e.message, f"a malformed run id is refused as Invalid RunId: {e.message}")


async def heartbeat_timeout(client: Client, run: str) -> None:
    # The processor hangs after the first heartbeat: the heartbeat timeout (10 s) ends the
    # attempt and the retry charges.
    result = await asyncio.wait_for(
        client.execute_workflow(
            OrderFulfillmentWorkflow.run, f"o-{run}:hang", id=f"hang-{run}", task_queue=ORDERS
        ),
        60,
    )
    attempts = [a for (o, a) in calls.get("charge", []) if o == f"o-{run}:hang"]
    check(
        result["charge_id"] == f"ch-o-{run}:hang-2" and attempts == [1, 2],
        f"a hung charge times out by heartbeat and is retried: attempts {attempts}",
    )


async def expense_approval(client: Client, run: str) -> None:
    for decision, expected in (("approve", "approved"), ("reject", "rejected")):
        handle = await client.start_workflow(
            ExpenseApprovalWorkflow.run,
            Expense(id=f"exp-{decision}-{run}", amount_cents=1_250),
            id=f"expense-{decision}-{run}",
            task_queue=ORDERS,
        )
        check(
            await handle.query(ExpenseApprovalWorkflow.decided) == "pending",
            f"the expense waits for a human ({decision})",
        )
        await handle.signal(decision)
        result = await asyncio.wait_for(handle.result(), 30)
        check(result == expected, f"{decision} signal: {result!r}")
    check(f"exp-approve-{run}" in calls.get("expense_paid", []), "the approved expense is paid")
    check(f"exp-reject-{run}" not in calls.get("expense_paid", []), "the rejected one is not")
    result = await asyncio.wait_for(
        client.execute_workflow(
            ExpenseApprovalWorkflow.run,
            Expense(id=f"exp-late-{run}", amount_cents=99, wait_seconds=1.5),
            id=f"expense-late-{run}",
            task_queue=ORDERS,
        ),
        30,
    )
    check(
        result == "timed_out" and f"exp-late-{run}" in calls.get("timeout_notification", []),
        f"no decision: wait_condition times out and the approver is told: {result!r}",
    )


async def update_events(handle) -> tuple[list[str], list[str], int]:
    """The update ids of a run's accepted and completed events, and its rejected events."""
    accepted, completed, rejected = [], [], 0
    async for e in handle.fetch_history_events():
        if e.HasField("workflow_execution_update_accepted_event_attributes"):
            accepted.append(e.workflow_execution_update_accepted_event_attributes.protocol_instance_id)
        elif e.HasField("workflow_execution_update_completed_event_attributes"):
            completed.append(e.workflow_execution_update_completed_event_attributes.meta.update_id)
        elif e.HasField("workflow_execution_update_rejected_event_attributes"):
            rejected += 1
    return accepted, completed, rejected


async def expense_updates(client: Client, run: str) -> None:
    handle = await client.start_workflow(
        ExpenseApprovalWorkflow.run,
        Expense(id=f"exp-update-{run}", amount_cents=1_000),
        id=f"expense-update-{run}",
        task_queue=ORDERS,
    )
    amended = await asyncio.wait_for(handle.execute_update(ExpenseApprovalWorkflow.amend, 2_000), 30)
    check(
        amended == 2_000 and "amended-2000" in calls.get("approval_request", []),
        f"an update runs its handler, activity included: {amended!r}",
    )
    try:
        await asyncio.wait_for(handle.execute_update(ExpenseApprovalWorkflow.amend, 0), 30)
        check(False, "a zero amount is rejected")
    except WorkflowUpdateFailedError as e:
        check(
            isinstance(e.cause, ApplicationError) and "must be positive" in e.cause.message,
            f"the validator rejects a zero amount: {e.cause!r}",
        )
    first = await handle.start_update(
        ExpenseApprovalWorkflow.amend,
        3_000,
        id=f"amend-3000-{run}",
        wait_for_stage=WorkflowUpdateStage.ACCEPTED,
    )
    again = await handle.start_update(
        ExpenseApprovalWorkflow.amend,
        3_000,
        id=f"amend-3000-{run}",
        wait_for_stage=WorkflowUpdateStage.ACCEPTED,
    )
    results = await asyncio.wait_for(asyncio.gather(first.result(), again.result()), 30)
    check(results == [3_000, 3_000], f"one update id, one update: {results!r}")
    waiting = await handle.start_update(
        ExpenseApprovalWorkflow.decision, wait_for_stage=WorkflowUpdateStage.ACCEPTED
    )
    await handle.signal(ExpenseApprovalWorkflow.approve)
    check(
        await asyncio.wait_for(waiting.result(), 30) == "approved",
        "an accepted update waits for the workflow's state",
    )
    check(await asyncio.wait_for(handle.result(), 30) == "approved", "the expense is approved")
    accepted, completed, rejected = await update_events(handle)
    check(
        len(accepted) == 3 and sorted(accepted) == sorted(completed) and rejected == 0,
        f"history: three updates accepted and completed, no rejection: {accepted}",
    )
    try:
        await handle.execute_update(ExpenseApprovalWorkflow.amend, 4_000)
        check(False, "an update after the close is refused")
    except RPCError as e:
        check(e.status == RPCStatusCode.NOT_FOUND, f"an update after the close: {e.status}")
    # Update-with-start: starts the expense, then (the same call again) finds it running.
    for attempt in ("start", "existing"):
        start = WithStartWorkflowOperation(
            ExpenseApprovalWorkflow.run,
            Expense(id=f"exp-with-start-{run}", amount_cents=100),
            id=f"expense-with-start-{run}",
            id_conflict_policy=WorkflowIDConflictPolicy.USE_EXISTING,
            task_queue=ORDERS,
        )
        amount = 500 if attempt == "start" else 600
        result = await asyncio.wait_for(
            client.execute_update_with_start_workflow(
                ExpenseApprovalWorkflow.amend, amount, start_workflow_operation=start
            ),
            30,
        )
        check(result == amount, f"update-with-start ({attempt}): {result!r}")
        with_start = await start.workflow_handle()
        if attempt == "start":
            first_run = with_start.result_run_id
        else:
            check(
                with_start.result_run_id == first_run,
                "update-with-start on a running workflow updates that run",
            )
    await with_start.signal(ExpenseApprovalWorkflow.reject)
    check(await asyncio.wait_for(with_start.result(), 30) == "rejected", "and it runs on")


async def order_batch(client: Client, run: str) -> None:
    orders = [f"b{i}-{run}" for i in range(24)] + [f"b-bad{i}-{run}:declined" for i in range(3)]
    result = await asyncio.wait_for(
        client.execute_workflow(
            OrderBatchWorkflow.run, orders, id=f"batch-{run}", task_queue=ORDERS
        ),
        120,
    )
    check(
        sorted(r["order_id"] for r in result) == sorted(orders[:24]),
        f"the batch returns the 24 orders that succeeded (3 declined): {len(result)}",
    )
    child = client.get_workflow_handle(f"order-b0-{run}-fulfillment")
    check(
        (await child.describe()).status.name == "COMPLETED",
        "each order ran as a child workflow",
    )


async def id_reuse_and_visibility(client: Client, run: str) -> None:
    wid = f"expense-reuse-{run}"
    expense = Expense(id=wid, amount_cents=1)
    handle = await client.start_workflow(
        ExpenseApprovalWorkflow.run, expense, id=wid, task_queue=ORDERS
    )
    try:
        await client.start_workflow(ExpenseApprovalWorkflow.run, expense, id=wid, task_queue=ORDERS)
        check(False, "a second start of a running id is refused")
    except WorkflowAlreadyStartedError:
        check(True, "a second start of a running id is refused")
    await handle.signal(ExpenseApprovalWorkflow.reject)
    await handle.result()
    try:
        await client.start_workflow(
            ExpenseApprovalWorkflow.run,
            expense,
            id=wid,
            task_queue=ORDERS,
            id_reuse_policy=WorkflowIDReusePolicy.REJECT_DUPLICATE,
        )
        check(False, "REJECT_DUPLICATE refuses a closed id")
    except WorkflowAlreadyStartedError:
        check(True, "REJECT_DUPLICATE refuses a closed id")
    again = await client.start_workflow(
        ExpenseApprovalWorkflow.run, expense, id=wid, task_queue=ORDERS
    )
    check(again.result_run_id != handle.result_run_id, "ALLOW_DUPLICATE starts a new run")
    await again.signal(ExpenseApprovalWorkflow.approve)
    check(await again.result() == "approved", "and the new run runs")

    # Visibility: the runs of this suite, listed by type.
    found = set()
    for _ in range(50):
        found = {
            w.id
            async for w in client.list_workflows("WorkflowType = 'ExpenseApprovalWorkflow'")
        }
        if {f"expense-approve-{run}", f"expense-reject-{run}", wid} <= found:
            break
        await asyncio.sleep(0.2)
    check(
        {f"expense-approve-{run}", f"expense-reject-{run}", wid} <= found,
        f"list_workflows finds the expenses by type ({len(found)} listed)",
    )


async def daily_report(client: Client, run: str) -> None:
    # The guide's schedule: every day at 9 AM UTC.
    handle = await client.create_schedule(
        f"daily-report-schedule-{run}",
        Schedule(
            action=ScheduleActionStartWorkflow(
                DailyReportWorkflow.run,
                id=f"daily-report-{run}",
                task_queue="reports",
            ),
            spec=ScheduleSpec(
                cron_expressions=["0 9 * * *"],  # Daily at 9 AM UTC
            ),
        ),
    )
    try:
        await client.create_schedule(
            f"daily-report-schedule-{run}",
            Schedule(
                action=ScheduleActionStartWorkflow(
                    DailyReportWorkflow.run, id=f"daily-report-{run}", task_queue="reports"
                ),
                spec=ScheduleSpec(cron_expressions=["0 9 * * *"]),
            ),
        )
        check(False, "a second schedule of the same id is refused")
    except ScheduleAlreadyRunningError:
        check(True, "a second schedule of the same id is refused as already running")
    described = await handle.describe()
    upcoming = described.info.next_action_times
    check(
        len(upcoming) >= 2
        and all((t.hour, t.minute, t.second) == (9, 0, 0) for t in upcoming)
        and (upcoming[1] - upcoming[0]) == timedelta(days=1),
        f"the cron schedule fires daily at 09:00 UTC: {[t.isoformat() for t in upcoming[:2]]}",
    )
    spec = described.schedule.spec
    # Cairn returns the cron string; Temporal its calendar form.
    check(
        spec.cron_expressions == ["0 9 * * *"]
        or (
            len(spec.calendars) == 1
            and [r.start for r in spec.calendars[0].hour] == [9]
            and [r.start for r in spec.calendars[0].minute] == [0]
        ),
        f"describe returns the 09:00 spec: {spec}",
    )
    await handle.trigger()
    started = None
    for _ in range(100):
        recent = (await handle.describe()).info.recent_actions
        if recent:
            started = recent[0].action
            break
        await asyncio.sleep(0.1)
    check(started is not None, "a trigger starts the report now")
    report = client.get_workflow_handle(started.workflow_id, run_id=started.first_execution_run_id)
    check(
        await asyncio.wait_for(report.result(), 30) == "report sent"
        and started.workflow_id.startswith(f"daily-report-{run}"),
        f"the triggered report ran: {started.workflow_id}",
    )

    # A short interval: it fires by itself, and pausing stops it.
    every = await client.create_schedule(
        f"report-every-second-{run}",
        Schedule(
            action=ScheduleActionStartWorkflow(
                DailyReportWorkflow.run, id=f"frequent-report-{run}", task_queue="reports"
            ),
            spec=ScheduleSpec(intervals=[ScheduleIntervalSpec(every=timedelta(seconds=1))]),
        ),
    )
    # Within 30 s: the cluster test kills a node and a FoundationDB process meanwhile, and
    # the schedule's shard may wait out a lease and the database's recovery.
    count = 0
    for _ in range(300):
        count = (await every.describe()).info.num_actions
        if count >= 2:
            break
        await asyncio.sleep(0.1)
    check(count >= 2, f"the interval schedule fired by itself ({count} runs)")
    await every.pause(note="enough")
    described = await every.describe()
    check(
        described.schedule.state.paused and described.schedule.state.note == "enough",
        "paused, with its note",
    )
    await every.unpause()

    async def later(update_input):
        schedule = update_input.description.schedule
        schedule.spec = ScheduleSpec(intervals=[ScheduleIntervalSpec(every=timedelta(hours=1))])
        return ScheduleUpdate(schedule=schedule)

    await every.update(later)
    described = await every.describe()
    check(
        described.schedule.spec.intervals[0].every == timedelta(hours=1),
        "update changes the spec",
    )
    ours = {f"daily-report-schedule-{run}", f"report-every-second-{run}"}

    async def listed() -> set:
        return {entry.id async for entry in await client.list_schedules()}

    # (Temporal's list is eventually consistent: it is read until it agrees, a few seconds.)
    ids = set()
    for _ in range(50):
        ids = await listed()
        if ours <= ids:
            break
        await asyncio.sleep(0.1)
    check(ours <= ids, f"list_schedules lists both ({len(ids)} listed)")
    await every.delete()
    await handle.delete()
    for _ in range(50):
        ids = await listed()
        if not (ours & ids):
            break
        await asyncio.sleep(0.1)
    check(not (ours & ids), "deleted schedules are gone")


async def cancel_and_continue_as_new(client: Client, run: str) -> None:
    handle = await client.start_workflow(
        ExpenseApprovalWorkflow.run,
        Expense(id=f"exp-cancel-{run}", amount_cents=3),
        id=f"expense-cancel-{run}",
        task_queue=ORDERS,
    )
    check(
        await handle.query(ExpenseApprovalWorkflow.decided) == "pending",
        "an expense to cancel waits",
    )
    await handle.cancel()
    cause = await failure_of(handle)
    check(
        type(cause).__name__ == "CancelledError",
        f"a canceled expense ends canceled: {cause!r}",
    )
    check(
        (await handle.describe()).status.name == "CANCELED",
        "and describe says CANCELED",
    )
    chain = await client.start_workflow(
        ReportChainWorkflow.run, [], id=f"chain-{run}", task_queue=ORDERS
    )
    result = await asyncio.wait_for(chain.result(), 30)
    check(
        result["runs"] == [0, 1, 2],
        f"continue-as-new twice, then the last run returns: {result['runs']}",
    )
    check(
        result["continued_from"] not in (None, "", chain.result_run_id),
        f"the last run knows the run it continues: {result['continued_from']}",
    )
    check(
        (await chain.describe()).run_id != chain.result_run_id,
        "the result came from a later run of the chain",
    )


async def listed_until(client: Client, query: str, want: list, tries: int = 300) -> list:
    """The workflows `query` lists, polled (0.1 s apart) until their ids are `want`."""
    listed = []
    for _ in range(tries):
        listed = [w async for w in client.list_workflows(query)]
        if [w.id for w in listed] == want:
            break
        await asyncio.sleep(0.1)
    return listed


async def search_attributes(client: Client, run: str) -> None:
    tag = f"tag-{run}"
    handle = await client.start_workflow(
        TaggedWorkflow.run, tag, id=f"tagged-{run}", task_queue=ORDERS
    )
    query = f"CustomKeywordField = '{tag}'"
    found = [w.id for w in await listed_until(client, query, [f"tagged-{run}"])]
    check(found == [f"tagged-{run}"], f"a workflow's upserted search attribute finds it: {found}")
    described = await handle.describe()
    check(
        described.typed_search_attributes.get(TAG) == tag,
        "describe shows the upserted attribute",
    )
    await handle.signal(TaggedWorkflow.finish)
    check(await handle.result() == tag, "and the tagged workflow completes")


async def memo_and_start_attributes(client: Client, run: str) -> None:
    tag = f"noted-{run}"
    handle = await client.start_workflow(
        NotedWorkflow.run,
        False,
        id=f"noted-{run}",
        task_queue=ORDERS,
        memo={"owner": "ops", "ticket": {"id": 7, "urgent": True}},
        search_attributes=TypedSearchAttributes(
            [SearchAttributePair(TAG, tag), SearchAttributePair(PRIORITY, 3)]
        ),
    )
    # Cairn lists a start at once; Temporal's visibility may lag a moment. The workflow
    # changes its attributes only once told to proceed, below.
    listed = await listed_until(client, f"CustomKeywordField = '{tag}'", [f"noted-{run}"])
    check(
        [w.id for w in listed] == [f"noted-{run}"],
        f"search attributes given at start find the workflow: {[w.id for w in listed]}",
    )
    check(
        (await listed[0].memo()).get("owner") == "ops",
        "the list shows the memo given at start",
    )
    await handle.signal(NotedWorkflow.proceed)
    changed = None
    for _ in range(100):
        described = await handle.describe()
        memo = await described.memo()
        if memo.get("stage") == "working":
            changed = (memo, described.typed_search_attributes)
            break
        await asyncio.sleep(0.1)
    check(changed is not None, "the workflow's upsert_memo shows in describe")
    memo, attributes = changed
    check(
        memo == {"stage": "working", "ticket": {"id": 7, "urgent": True}},
        f"upsert_memo set one key and removed another: {memo}",
    )
    check(
        attributes.get(TAG) is None and attributes.get(PRIORITY) == 9,
        f"an upsert removed one attribute and changed another: {attributes}",
    )
    gone = [w.id for w in await listed_until(client, f"CustomKeywordField = '{tag}'", [])]
    check(gone == [], f"a removed attribute no longer finds the workflow: {gone}")
    await handle.signal(NotedWorkflow.finish)
    seen = await asyncio.wait_for(handle.result(), 30)
    # As Temporal runs it: the SDK gives the continued run the memo its first run started with,
    # and the search attributes as the run left them.
    check(
        seen
        == {
            "owner": "ops",
            "ticket": {"id": 7, "urgent": True},
            "memo_keys": ["owner", "ticket"],
            "tag": None,
            "priority": 9,
        },
        f"the continued run's memo and search attributes: {seen}",
    )
    first = await client.get_workflow_handle(
        f"noted-{run}", run_id=handle.first_execution_run_id
    ).fetch_history()
    started = first.events[0].workflow_execution_started_event_attributes
    check(
        set(started.memo.fields) == {"owner", "ticket"}
        and set(started.search_attributes.indexed_fields) == {"CustomKeywordField", "CustomIntField"},
        "the first run's started event carries its memo and search attributes",
    )


async def patches_and_local_activities(client: Client, run: str) -> None:
    handle = await client.start_workflow(
        PricingWorkflow.run,
        10,
        id=f"pricing-{run}",
        task_queue=ORDERS,
        task_timeout=timedelta(seconds=1),
    )
    result = await asyncio.wait_for(handle.result(), 60)
    check(
        result == {"total": 17.0, "patched": [True, True], "slow": 2.0},
        f"a patched workflow with local activities completes: {result}",
    )
    history = await handle.fetch_history()
    markers = [
        e.marker_recorded_event_attributes.marker_name
        for e in history.events
        if e.HasField("marker_recorded_event_attributes")
    ]
    check(
        markers.count("core_patch") == 1 and markers.count("core_local_activity") == 2,
        f"its history records the patch and both local activities as markers: {markers}",
    )
    timed_out = [
        e for e in history.events if e.HasField("workflow_task_timed_out_event_attributes")
    ]
    check(timed_out == [], "the slow local activity kept its workflow task alive")


async def signals_between_workflows(client: Client, run: str) -> None:
    listener = await client.start_workflow(
        ListenerWorkflow.run, id=f"listener-{run}", task_queue=ORDERS
    )
    victim = await client.start_workflow(ListenerWorkflow.run, id=f"victim-{run}", task_queue=ORDERS)
    relay = await client.start_workflow(
        RelayWorkflow.run, args=[f"listener-{run}", f"victim-{run}"], id=f"relay-{run}", task_queue=ORDERS
    )
    result = await asyncio.wait_for(relay.result(), 30)
    check(
        result == {"missing": "ExternalWorkflowExecutionNotFound"},
        f"a signal to a workflow that does not exist fails in the sender: {result}",
    )
    heard = await asyncio.wait_for(listener.result(), 30)
    check(heard == ["hello", "relay"], f"a workflow's signal of two arguments arrives: {heard}")
    cause = await failure_of(victim)
    check(
        type(cause).__name__ == "CancelledError",
        f"a workflow canceled by another ends canceled: {cause!r}",
    )
    direct = await client.start_workflow(ListenerWorkflow.run, id=f"direct-{run}", task_queue=ORDERS)
    await direct.signal(ListenerWorkflow.hear, args=["hi", "client"])
    heard = await asyncio.wait_for(direct.result(), 30)
    check(heard == ["hi", "client"], f"a client's signal of two arguments arrives: {heard}")


def spawn_worker(address: str):
    return asyncio.create_subprocess_exec(
        sys.executable, os.path.abspath(__file__), "--address", address, "--worker-only"
    )


async def worker_killed(client: Client, address: str, run: str) -> None:
    # A worker killed mid-activity (and holding the workflow): the charge times out by
    # heartbeat and is retried on the worker started after it, which also replays the workflow.
    marker = os.path.join(tempfile.mkdtemp(), "charging")
    proc = await spawn_worker(address)
    handle = await client.start_workflow(
        OrderFulfillmentWorkflow.run,
        f"o-{run}:hang={marker}",
        id=f"killed-{run}",
        task_queue=ORDERS,
    )
    for _ in range(300):
        if os.path.exists(marker):
            break
        await asyncio.sleep(0.1)
    check(os.path.exists(marker), "the charge started on the first worker")
    proc.send_signal(signal.SIGKILL)
    await proc.wait()
    proc = await spawn_worker(address)
    try:
        result = await asyncio.wait_for(handle.result(), 60)
    finally:
        proc.send_signal(signal.SIGKILL)
        await proc.wait()
    check(
        result["charge_id"] == f"ch-o-{run}:hang={marker}-2",
        f"the order completes on the restarted worker, charge attempt 2: {result['charge_id']}",
    )


async def start_phase(client: Client, run: str) -> None:
    # Left mid-way for a server restart: an expense waiting for its decision, an order
    # whose charge retries (its backoff timers and attempts span the restart).
    for name in ("approve", "reject"):
        await client.start_workflow(
            ExpenseApprovalWorkflow.run,
            Expense(id=f"exp-restart-{name}-{run}", amount_cents=5),
            id=f"restart-{name}-{run}",
            task_queue=ORDERS,
        )
    await client.start_workflow(
        OrderFulfillmentWorkflow.run, f"o-{run}:slow", id=f"restart-slow-{run}", task_queue=ORDERS
    )
    await asyncio.sleep(1.5)
    handle = client.get_workflow_handle(f"restart-approve-{run}")
    check(
        await handle.query(ExpenseApprovalWorkflow.decided) == "pending",
        "before the restart: the expenses wait",
    )
    await handle.start_update(
        ExpenseApprovalWorkflow.decision,
        id=f"decision-{run}",
        wait_for_stage=WorkflowUpdateStage.ACCEPTED,
    )
    check(True, "before the restart: an update waits for the decision")


async def finish_phase(client: Client, run: str) -> None:
    for name, expected in (("approve", "approved"), ("reject", "rejected")):
        handle = client.get_workflow_handle(f"restart-{name}-{run}")
        check(
            await handle.query(ExpenseApprovalWorkflow.decided) == "pending",
            f"after the restart: the expense still waits ({name})",
        )
        await handle.signal(name)
        result = await asyncio.wait_for(handle.result(), 30)
        check(result == expected, f"after the restart: {name} -> {result!r}")
    update = client.get_workflow_handle(f"restart-approve-{run}").get_update_handle(
        f"decision-{run}"
    )
    decided = await asyncio.wait_for(update.result(), 30)
    check(decided == "approved", f"after the restart: the accepted update completes: {decided!r}")
    result = await asyncio.wait_for(
        client.get_workflow_handle(f"restart-slow-{run}").result(), 60
    )
    check(
        result["charge_id"] == f"ch-o-{run}:slow-3",
        f"after the restart: the retried charge completes: {result['charge_id']}",
    )


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--address", required=True)
    parser.add_argument("--run", default=uuid.uuid4().hex[:8])
    parser.add_argument("--phase", default="all", choices=["all", "start", "finish"])
    parser.add_argument("--worker-only", action="store_true")
    args = parser.parse_args()
    client = await Client.connect(args.address)
    if args.worker_only:
        await worker(client).run()
        return
    async with worker(client), report_worker(client):
        if args.phase == "all":
            await malformed_run_id(client, args.run)
            await daily_report(client, args.run)
            await order_fulfillment(client, args.run)
            await expense_approval(client, args.run)
            await expense_updates(client, args.run)
            await order_batch(client, args.run)
            await id_reuse_and_visibility(client, args.run)
            await cancel_and_continue_as_new(client, args.run)
            await search_attributes(client, args.run)
            await memo_and_start_attributes(client, args.run)
            await patches_and_local_activities(client, args.run)
            await signals_between_workflows(client, args.run)
            await heartbeat_timeout(client, args.run)
        elif args.phase == "start":
            await start_phase(client, args.run)
        else:
            await finish_phase(client, args.run)
    if args.phase == "all":
        await worker_killed(client, args.address, args.run)
    print(f"guide suite ({args.phase}): {checks} checks passed", flush=True)
    # The SDK's native threads can abort the interpreter's finalization; the checks are done.
    sys.stdout.flush()
    os._exit(0)


if __name__ == "__main__":
    asyncio.run(main())
