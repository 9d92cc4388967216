import { ErrorCode } from '../../errors.js'
import { Verdict, type Outcome } from '../../message.js'

/** What the consumer does with one entry once its outcome is known. */
export const EntryAction = {
  /** XACK: the handler ran and committed, or the key was already done (a duplicate). */
  ACK: 'ack',
  /** Left pending, aged to come back after retryDelayMs as another delivery: the handler threw, or its commit was refused. */
  RETRY: 'retry',
  /** Left pending, aged to come back after inFlightDelayMs without counting a delivery: another owner holds the key, the store could not answer, or a commit did not reach it. */
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
 * - `new` with HANDLER_FAILED (claim released) or LEASE_LOST (commit refused:
 *   the key is not done, another owner may hold it): retry while deliveries
 *   are left, else dead-letter. An entry that arrived already past
 *   maxDeliveries was never run (see `exhausted`) and is dead-lettered.
 * - `new` with STORE_FAILED, WORKER_DIED or ACTOR_FAILED: the handler ran but
 *   its commit never reached the store (after STORE_FAILED the engine keeps it
 *   and applies it late once the store is back; after a thread death it is
 *   gone and the lease must lapse). Nothing is wrong with the entry, so it must not use up a
 *   delivery: wait, and the next try finds the key done (duplicate), still
 *   held (wait again), or free after the lease lapsed (run again: the
 *   effect-before-commit window of DESIGN.md §4.2).
 * - `duplicate`: ack without running the handler.
 * - `in-flight`: never acked (that could lose the entry if the owner fails),
 *   never dead-lettered (nothing is wrong with it): wait, uncounted. Except
 *   WORKER_DIED: a handler module may have killed its thread, so it counts as
 *   a delivery, and a poison entry ends in the dead-letter stream.
 * - `conflict`, `invalid`: no retry can help: dead-letter at once.
 */
export function entryActionOf(outcome: Outcome, deliveries: number, maxDeliveries: number): EntryAction {
  switch (outcome.verdict) {
    case Verdict.NEW:
      switch (outcome.error?.code) {
        case undefined:
        case ErrorCode.RESULT_TOO_LARGE:
        case ErrorCode.RESULT_NOT_SERIALIZABLE:
          return EntryAction.ACK
        case ErrorCode.STORE_FAILED:
        case ErrorCode.WORKER_DIED:
        case ErrorCode.ACTOR_FAILED:
          return EntryAction.WAIT
        default:
          return deliveries >= maxDeliveries ? EntryAction.DEAD_LETTER : EntryAction.RETRY
      }
    case Verdict.DUPLICATE:
      return EntryAction.ACK
    case Verdict.IN_FLIGHT:
      if (outcome.error?.code !== ErrorCode.WORKER_DIED) return EntryAction.WAIT
      return deliveries >= maxDeliveries ? EntryAction.DEAD_LETTER : EntryAction.RETRY
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
