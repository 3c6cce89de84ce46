// The guide's workflows (order fulfillment, expense approval) as a TypeScript user writes
// them, plus updates, a child, continue-as-new and cancellation.
import {
  ApplicationFailure,
  CancellationScope,
  condition,
  continueAsNew,
  defineQuery,
  defineSignal,
  defineUpdate,
  executeChild,
  isCancellation,
  proxyActivities,
  setHandler,
  sleep,
  workflowInfo,
} from '@temporalio/workflow';
import type * as activities from './activities';

const { validateOrder, chargeCard, reserveInventory, rollbackCharge, sendConfirmationEmail } =
  proxyActivities<typeof activities>({
    startToCloseTimeout: '10 seconds',
    retry: {
      initialInterval: '50 milliseconds',
      maximumAttempts: 3,
      nonRetryableErrorTypes: ['InvalidCardError'],
    },
  });

const { sendApprovalRequest } = proxyActivities<typeof activities>({ startToCloseTimeout: '10 seconds' });

const { slowExport } = proxyActivities<typeof activities>({
  startToCloseTimeout: '60 seconds',
  heartbeatTimeout: '2 seconds',
  retry: { initialInterval: '50 milliseconds', maximumAttempts: 2 },
});

export const getStatus = defineQuery<string>('getStatus');
export const cancelOrder = defineSignal('cancelOrder');

export async function orderFulfillment(orderId: string): Promise<Record<string, unknown>> {
  let status = 'validating';
  setHandler(getStatus, () => status);
  setHandler(cancelOrder, () => {
    status = 'cancel requested';
  });
  const order = await validateOrder(orderId);
  status = 'charging';
  const charge = await chargeCard(orderId, order.amountCents);
  try {
    status = 'reserving';
    await reserveInventory(orderId);
  } catch (err) {
    await rollbackCharge(charge.chargeId);
    throw err;
  }
  await sendConfirmationEmail(orderId);
  status = 'completed';
  // Keys in this order on purpose: the result must come back untouched.
  return { zeta: orderId, alpha: charge.chargeId, middle: charge.amountCents };
}

export const approve = defineSignal('approve');
export const reject = defineSignal('reject');
export const decided = defineQuery<string>('decided');
export const amend = defineUpdate<number, [number]>('amend');
export const decision = defineUpdate<string>('decision');

export async function expenseApproval(expenseId: string, waitMs: number): Promise<string> {
  let approved: boolean | undefined;
  setHandler(approve, () => {
    approved = true;
  });
  setHandler(reject, () => {
    approved = false;
  });
  setHandler(decided, () => (approved === undefined ? 'pending' : String(approved)));
  setHandler(
    amend,
    async (amountCents: number) => {
      await sendApprovalRequest(`${expenseId}:amended-${amountCents}`);
      return amountCents;
    },
    {
      validator: (amountCents: number) => {
        if (amountCents <= 0) throw new Error('the amount must be positive');
        if (approved !== undefined) throw new Error('the expense is decided');
      },
    },
  );
  setHandler(decision, async () => {
    await condition(() => approved !== undefined);
    return approved ? 'approved' : 'rejected';
  });
  await sendApprovalRequest(expenseId);
  if (!(await condition(() => approved !== undefined, waitMs))) {
    return 'timed_out';
  }
  return approved ? 'approved' : 'rejected';
}

export async function exportBatch(batch: string): Promise<string> {
  return await slowExport(batch);
}

export async function childDoubler(n: number): Promise<number> {
  return n * 2;
}

export async function parentOfChild(n: number): Promise<number> {
  return await executeChild(childDoubler, { args: [n], workflowId: `${workflowInfo().workflowId}-child` });
}

export async function countdownChain(left: number, runs: number): Promise<number> {
  if (left > 0) {
    await continueAsNew<typeof countdownChain>(left - 1, runs + 1);
  }
  return runs;
}

export async function sleeper(): Promise<string> {
  try {
    await sleep('1 hour');
    return 'woke';
  } catch (err) {
    if (isCancellation(err)) {
      await CancellationScope.nonCancellable(() => sleep(10));
      throw err;
    }
    throw err;
  }
}

export async function failsFast(): Promise<never> {
  throw ApplicationFailure.nonRetryable('bad input', 'BadInput');
}
