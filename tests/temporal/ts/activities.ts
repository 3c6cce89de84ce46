// The guide's activities, written as a TypeScript user writes them. The services they call
// (orders, payments, inventory, mail) are in-memory fakes with the guide's outcomes.
import { ApplicationFailure, Context, heartbeat } from '@temporalio/activity';

/** What the fakes saw, per process (the worker runs in the suite's process). */
export const calls: Record<string, unknown[]> = {};

function saw(what: string, value: unknown): void {
  (calls[what] ??= []).push(value);
}

export interface ChargeResult {
  chargeId: string;
  amountCents: number;
}

export async function validateOrder(orderId: string): Promise<{ orderId: string; amountCents: number }> {
  saw('validate', orderId);
  return { orderId, amountCents: 1_999 };
}

export async function chargeCard(orderId: string, amountCents: number): Promise<ChargeResult> {
  const { attempt } = Context.current().info;
  saw(`charge:${orderId}`, attempt);
  if (orderId.endsWith(':declined')) {
    throw ApplicationFailure.create({ type: 'InvalidCardError', message: 'Card declined: insufficient funds' });
  }
  if (orderId.endsWith(':slow') && attempt < 3) {
    throw ApplicationFailure.create({ type: 'PaymentTimeoutError', message: `Payment failed: 504 (attempt ${attempt})` });
  }
  return { chargeId: `ch-${orderId}-${attempt}`, amountCents };
}

export async function reserveInventory(orderId: string): Promise<boolean> {
  saw('reserve', orderId);
  if (orderId.endsWith(':out-of-stock')) {
    throw ApplicationFailure.create({ type: 'OutOfStock', message: '409: not enough stock', nonRetryable: true });
  }
  return true;
}

export async function rollbackCharge(chargeId: string): Promise<void> {
  saw('rollback', chargeId);
}

export async function sendConfirmationEmail(orderId: string): Promise<void> {
  saw('email', orderId);
}

export async function sendApprovalRequest(expenseId: string): Promise<void> {
  saw('approval_request', expenseId);
}

/** Heartbeats once, then goes silent on its first attempt; the retry reads the details. */
export async function slowExport(batch: string): Promise<string> {
  const info = Context.current().info;
  if (info.attempt === 1) {
    heartbeat({ done: 10 });
    await new Promise((resolve) => setTimeout(resolve, 4_000));
    return 'never';
  }
  const details = info.heartbeatDetails as { done: number } | undefined;
  return `${batch} resumed at ${details?.done ?? 'nothing'}`;
}
