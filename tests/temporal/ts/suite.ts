// The guide's programs as a TypeScript user writes them, plus updates, run by Temporal's
// TypeScript SDK (client and worker) against a server: Cairn, or Temporal's dev server (which
// proves the suite). Exits non-zero on the first failed check.
//
//     npx tsx suite.ts --address 127.0.0.1:7233
import { Client, Connection, WithStartWorkflowOperation, WorkflowFailedError, WorkflowUpdateFailedError, WorkflowUpdateStage } from '@temporalio/client';
import { ActivityFailure, ApplicationFailure, CancelledFailure } from '@temporalio/common';
import { NativeConnection, Worker } from '@temporalio/worker';
import { randomUUID } from 'node:crypto';
import * as activities from './activities';
import * as wf from './workflows';

const QUEUE = 'ts-suite';
let checks = 0;

function check(condition: boolean, what: string): void {
  if (!condition) {
    console.error(`FAILED: ${what}`);
    process.exit(1);
  }
  checks += 1;
  console.log(`ok: ${what}`);
}

async function failureOf(promise: Promise<unknown>): Promise<unknown> {
  try {
    const result = await promise;
    return new Error(`it returned ${JSON.stringify(result)}`);
  } catch (err) {
    return err;
  }
}

function chain(err: unknown): unknown[] {
  const out: unknown[] = [];
  let e: unknown = err;
  while (e) {
    out.push(e);
    e = (e as { cause?: unknown }).cause;
  }
  return out;
}

async function orders(client: Client, run: string): Promise<void> {
  const handle = await client.workflow.start(wf.orderFulfillment, {
    taskQueue: QUEUE,
    workflowId: `ts-order-${run}`,
    args: [`o-${run}`],
  });
  const result = await handle.result();
  check(
    JSON.stringify(result) === JSON.stringify({ zeta: `o-${run}`, alpha: `ch-o-${run}-1`, middle: 1999 }),
    `an order completes, its result untouched (key order kept): ${JSON.stringify(result)}`,
  );
  check((await handle.query(wf.getStatus)) === 'completed', 'the getStatus query answers from a closed run');
  const described = await handle.describe();
  const history = await handle.fetchHistory();
  check(
    described.historyLength === history.events?.length,
    `describe's historyLength is the history's length: ${described.historyLength} / ${history.events?.length}`,
  );

  const declined = await failureOf(
    client.workflow.execute(wf.orderFulfillment, {
      taskQueue: QUEUE,
      workflowId: `ts-order-declined-${run}`,
      args: [`o-${run}:declined`],
    }),
  );
  const links = chain(declined);
  const activity = links.find((e) => e instanceof ActivityFailure) as ActivityFailure | undefined;
  const app = links.find((e) => e instanceof ApplicationFailure) as ApplicationFailure | undefined;
  check(
    declined instanceof WorkflowFailedError && app?.type === 'InvalidCardError',
    `a declined card fails the order with InvalidCardError: ${links.map(String).join(' <- ')}`,
  );
  check(
    String(activity?.retryState).includes('NON_RETRYABLE_FAILURE'),
    `its retry state is NON_RETRYABLE_FAILURE: ${activity?.retryState}`,
  );
  check(
    JSON.stringify(activities.calls[`charge:o-${run}:declined`]) === '[1]',
    'InvalidCardError is not retried',
  );

  const slow = await client.workflow.execute(wf.orderFulfillment, {
    taskQueue: QUEUE,
    workflowId: `ts-order-slow-${run}`,
    args: [`o-${run}:slow`],
  });
  check(
    JSON.stringify(activities.calls[`charge:o-${run}:slow`]) === '[1,2,3]' && slow.alpha === `ch-o-${run}:slow-3`,
    `a timing-out charge is retried by the policy: ${JSON.stringify(activities.calls[`charge:o-${run}:slow`])}`,
  );

  const outOfStock = await failureOf(
    client.workflow.execute(wf.orderFulfillment, {
      taskQueue: QUEUE,
      workflowId: `ts-order-stock-${run}`,
      args: [`o-${run}:out-of-stock`],
    }),
  );
  check(
    outOfStock instanceof WorkflowFailedError &&
      (activities.calls['rollback'] ?? []).includes(`ch-o-${run}:out-of-stock-1`),
    'out of stock: the charge is rolled back and the order fails',
  );
}

async function expenses(client: Client, run: string): Promise<void> {
  for (const [signal, expected] of [
    [wf.approve, 'approved'],
    [wf.reject, 'rejected'],
  ] as const) {
    const handle = await client.workflow.start(wf.expenseApproval, {
      taskQueue: QUEUE,
      workflowId: `ts-expense-${expected}-${run}`,
      args: [`exp-${expected}-${run}`, 7 * 24 * 3600 * 1000],
    });
    check((await handle.query(wf.decided)) === 'pending', `the expense waits for a human (${expected})`);
    await handle.signal(signal);
    check((await handle.result()) === expected, `${expected} by signal`);
  }
  const late = await client.workflow.execute(wf.expenseApproval, {
    taskQueue: QUEUE,
    workflowId: `ts-expense-late-${run}`,
    args: [`exp-late-${run}`, 1_500],
  });
  check(late === 'timed_out', `no decision: the condition times out: ${late}`);
}

async function updates(client: Client, run: string): Promise<void> {
  const handle = await client.workflow.start(wf.expenseApproval, {
    taskQueue: QUEUE,
    workflowId: `ts-expense-update-${run}`,
    args: [`exp-update-${run}`, 7 * 24 * 3600 * 1000],
  });
  const amended = await handle.executeUpdate(wf.amend, { args: [2_000] });
  check(
    amended === 2_000 && (activities.calls['approval_request'] ?? []).includes(`exp-update-${run}:amended-2000`),
    `an update runs its handler, activity included: ${amended}`,
  );
  const rejected = await failureOf(handle.executeUpdate(wf.amend, { args: [0] }));
  check(
    rejected instanceof WorkflowUpdateFailedError &&
      String((rejected.cause as Error | undefined)?.message).includes('must be positive'),
    `the validator rejects a zero amount: ${String(rejected)}`,
  );
  const updateId = `amend-3000-${run}`;
  const first = await handle.startUpdate(wf.amend, {
    args: [3_000],
    updateId,
    waitForStage: WorkflowUpdateStage.ACCEPTED,
  });
  const again = await handle.startUpdate(wf.amend, {
    args: [3_000],
    updateId,
    waitForStage: WorkflowUpdateStage.ACCEPTED,
  });
  const byId = handle.getUpdateHandle<number>(updateId);
  const results = await Promise.all([first.result(), again.result(), byId.result()]);
  check(JSON.stringify(results) === '[3000,3000,3000]', `one update id, one update: ${JSON.stringify(results)}`);
  const waiting = await handle.startUpdate(wf.decision, { waitForStage: WorkflowUpdateStage.ACCEPTED });
  await handle.signal(wf.approve);
  check((await waiting.result()) === 'approved', 'an accepted update waits for the workflow state');
  check((await handle.result()) === 'approved', 'the expense is approved');
  const history = await handle.fetchHistory();
  const types = (history.events ?? []).map((e) => e.eventType);
  const accepted = (history.events ?? []).filter((e) => e.workflowExecutionUpdateAcceptedEventAttributes).length;
  const completed = (history.events ?? []).filter((e) => e.workflowExecutionUpdateCompletedEventAttributes).length;
  const rejectedEvents = (history.events ?? []).filter((e) => e.workflowExecutionUpdateRejectedEventAttributes).length;
  check(
    accepted === 3 && completed === 3 && rejectedEvents === 0,
    `history: three updates accepted and completed, none rejected (${types.length} events)`,
  );

  const start = new WithStartWorkflowOperation(wf.expenseApproval, {
    taskQueue: QUEUE,
    workflowId: `ts-expense-with-start-${run}`,
    args: [`exp-with-start-${run}`, 7 * 24 * 3600 * 1000],
    workflowIdConflictPolicy: 'USE_EXISTING',
  });
  const withStart = await client.workflow.executeUpdateWithStart(wf.amend, {
    args: [500],
    startWorkflowOperation: start,
  });
  const started = await start.workflowHandle();
  check(withStart === 500, `update-with-start starts the workflow and updates it: ${withStart}`);
  await started.signal(wf.reject);
  check((await started.result()) === 'rejected', 'and the workflow started with it runs on');
}

async function heartbeats(client: Client, run: string): Promise<void> {
  const result = await client.workflow.execute(wf.exportBatch, {
    taskQueue: QUEUE,
    workflowId: `ts-export-${run}`,
    args: [`batch-${run}`],
  });
  check(
    result === `batch-${run} resumed at 10`,
    `an attempt silent past its heartbeat timeout is retried with its last details: ${result}`,
  );
}

async function lifecycle(client: Client, run: string): Promise<void> {
  const doubled = await client.workflow.execute(wf.parentOfChild, {
    taskQueue: QUEUE,
    workflowId: `ts-parent-${run}`,
    args: [21],
  });
  check(doubled === 42, `a child workflow's result reaches its parent: ${doubled}`);
  const runs = await client.workflow.execute(wf.countdownChain, {
    taskQueue: QUEUE,
    workflowId: `ts-chain-${run}`,
    args: [3, 0],
  });
  check(runs === 3, `continue-as-new carries the count across runs: ${runs}`);
  const sleeper = await client.workflow.start(wf.sleeper, { taskQueue: QUEUE, workflowId: `ts-sleeper-${run}` });
  await sleeper.cancel();
  const cancelled = await failureOf(sleeper.result());
  check(
    cancelled instanceof WorkflowFailedError && cancelled.cause instanceof CancelledFailure,
    `a canceled workflow ends canceled: ${String(cancelled)}`,
  );
  const failed = await failureOf(
    client.workflow.execute(wf.failsFast, { taskQueue: QUEUE, workflowId: `ts-fails-${run}` }),
  );
  check(
    failed instanceof WorkflowFailedError &&
      failed.cause instanceof ApplicationFailure &&
      failed.cause.type === 'BadInput',
    `a workflow's own failure reaches the client with its type: ${String(failed)}`,
  );
  const signaled = await client.workflow.signalWithStart(wf.expenseApproval, {
    taskQueue: QUEUE,
    workflowId: `ts-signal-with-start-${run}`,
    args: [`exp-sws-${run}`, 7 * 24 * 3600 * 1000],
    signal: wf.approve,
  });
  check((await signaled.result()) === 'approved', 'signal-with-start starts the workflow with the signal');
  let listed = 0;
  for (let tries = 0; tries < 100 && listed < 1; tries++) {
    listed = 0;
    for await (const _ of client.workflow.list({ query: `WorkflowId = 'ts-chain-${run}'` })) {
      listed += 1;
    }
    if (listed < 1) await new Promise((r) => setTimeout(r, 100));
  }
  check(listed >= 1, `a visibility list finds the workflow by id: ${listed}`);
}

async function main(): Promise<void> {
  const args = process.argv.slice(2);
  const at = args.indexOf('--address');
  const address = at >= 0 ? args[at + 1] : '127.0.0.1:7233';
  const run = randomUUID().slice(0, 8);
  const connection = await Connection.connect({ address });
  const client = new Client({ connection, namespace: 'default' });
  const worker = await Worker.create({
    connection: await NativeConnection.connect({ address }),
    namespace: 'default',
    taskQueue: QUEUE,
    workflowsPath: require.resolve('./workflows'),
    activities,
  });
  await worker.runUntil(async () => {
    await orders(client, run);
    await expenses(client, run);
    await updates(client, run);
    await heartbeats(client, run);
    await lifecycle(client, run);
  });
  console.log(`typescript suite: ${checks} checks passed against ${address}`);
  process.exit(0);
}

main().catch((err) => {
  console.error('FAILED:', err);
  process.exit(1);
});
