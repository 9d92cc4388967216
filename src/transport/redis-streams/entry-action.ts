import { ErrorCode } from '../../errors.js'
import { Verdict, type Outcome } from '../../message.js'

/** What the consumer does with one entry once its outcome is known. */
export const EntryAction = {
  /** XACK: the handler ran and committed, or the key was already done (a duplicate). */
  ACK: 'ack',
  /** Left pending, aged to come back after retryDelayMs as another delivery: the handler threw, or its commit was refused. */
  RETRY: 'retry',
  /** Left pending, aged to come back after inFlightDelayMs without counting a delivery: another owner holds the key, or the store could not answer. */
  WAIT: 'wait',
  /** Acked and written to the dead-letter stream with the reason: conflict, bad input, or out of deliveries. */
  DEAD_LETTER: 'dead-letter',
} as const
export type EntryAction = (typeof EntryAction)[keyof typeof EntryAction]

/**
 * The one place that decides what becomes of an entry (DESIGN.md §3, "what a
 * transport does"), given its outcome and its delivery count:
 *
 * - `new` without error, or with RESULT_TOO_LARGE / RESULT_NOT_SERIALIZABLE:
 *   the key is done, so ack (a retry would only find a duplicate).
 * - `new` with any other error (HANDLER_FAILED: claim released; LEASE_LOST or
 *   STORE_FAILED on commit: the key is not done): retry while deliveries are
 *   left, else dead-letter. An entry that arrived already past maxDeliveries
 *   was never run (see `exhausted`) and is dead-lettered.
 * - `duplicate`: ack without running the handler.
 * - `in-flight`: never acked (that could lose the entry if the owner fails),
 *   never dead-lettered (nothing is wrong with it): wait, uncounted.
 * - `conflict`, `invalid`: no retry can help: dead-letter at once.
 */
export function entryActionOf(outcome: Outcome, deliveries: number, maxDeliveries: number): EntryAction {
  switch (outcome.verdict) {
    case Verdict.NEW: {
      const code = outcome.error?.code
      if (code === undefined || code === ErrorCode.RESULT_TOO_LARGE || code === ErrorCode.RESULT_NOT_SERIALIZABLE) return EntryAction.ACK
      return deliveries >= maxDeliveries ? EntryAction.DEAD_LETTER : EntryAction.RETRY
    }
    case Verdict.DUPLICATE:
      return EntryAction.ACK
    case Verdict.IN_FLIGHT:
      return EntryAction.WAIT
    case Verdict.CONFLICT:
    case Verdict.INVALID:
      return EntryAction.DEAD_LETTER
  }
}

/**
 * An entry delivered more than maxDeliveries times has had its every chance:
 * its earlier deliveries ended without an outcome (consumers died or stopped
 * holding it). It still goes through the engine, so a key that one of them
 * did commit is acked as a duplicate; otherwise its handler is not run again.
 */
export function exhausted(deliveries: number, maxDeliveries: number): boolean {
  return deliveries > maxDeliveries
}

/** The dead letter's code and message for an outcome that entryActionOf sent to DEAD_LETTER. */
export function deadLetterReason(outcome: Outcome, deliveries: number, maxDeliveries: number): { code: ErrorCode; message: string } {
  if (outcome.verdict === Verdict.NEW && exhausted(deliveries, maxDeliveries)) {
    return {
      code: ErrorCode.DELIVERIES_EXHAUSTED,
      message: `delivered ${deliveries} times (maxDeliveries ${maxDeliveries}) and never settled: the consumers that held it stopped before its outcome was durable; not run again`,
    }
  }
  const code = outcome.error?.code ?? (outcome.verdict === Verdict.CONFLICT ? ErrorCode.CONFLICT : ErrorCode.INVALID_MESSAGE)
  const message = outcome.error?.message ?? outcome.verdict
  if (outcome.verdict === Verdict.NEW) return { code, message: `${message} (delivery ${deliveries} of maxDeliveries ${maxDeliveries})` }
  return { code, message }
}
