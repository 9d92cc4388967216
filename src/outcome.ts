import type { ErrorData, ShadowData } from './actor/protocol.js'
import { ConflictError, ErrorCode, IdemError } from './errors.js'
import { Verdict, type Outcome } from './message.js'

const verdictOf: readonly Verdict[] = [Verdict.NEW, Verdict.DUPLICATE, Verdict.IN_FLIGHT, Verdict.CONFLICT, Verdict.INVALID, Verdict.STALE]

/** Builds the public outcome of one message from what the actor sent back as data. */
export function toOutcome(key: string, code: number, result: unknown, error: ErrorData | undefined, shadow?: ShadowData): Outcome {
  const outcome: Outcome = { key, verdict: verdictOf[code] }
  if (result !== undefined) outcome.result = result
  if (error !== undefined) outcome.error = error.code === 'CONFLICT' ? new ConflictError(key, error.message) : new IdemError(error.code, error.message, { key })
  if (shadow !== undefined) outcome.shadow = shadow.code === undefined ? { verdict: verdictOf[shadow.verdict] } : { verdict: verdictOf[shadow.verdict], code: shadow.code }
  return outcome
}

export function invalidOutcome(key: unknown, error: IdemError): Outcome {
  return { key: typeof key === 'string' ? key : textOf(key), verdict: Verdict.INVALID, error }
}

/** A non-string key as text; an object whose conversion throws reads as its type. */
function textOf(key: unknown): string {
  try {
    return String(key)
  } catch {
    return typeof key
  }
}

/** What a transport does with a message, by its outcome (DESIGN.md §3): each transport maps these to its own calls. */
export const Settle = {
  /** Ack: the key is done (handler ran and committed, a duplicate, or done with its result not kept). */
  DONE: 'done',
  /** Deliver again, using an attempt: the handler threw, its commit was refused, or its thread died. */
  RETRY: 'retry',
  /** Deliver again later without using an attempt: another owner holds the key, or the store could not answer. */
  WAIT: 'wait',
  /** Fail now, no retry can help: conflict or bad input. */
  REJECT: 'reject',
} as const
export type Settle = (typeof Settle)[keyof typeof Settle]

/**
 * The one place that decides what becomes of a message:
 * - `new` with no error, RESULT_TOO_LARGE or RESULT_NOT_SERIALIZABLE: DONE (the key is done).
 * - `new` with STORE_FAILED, STORE_RESET, WORKER_DIED, ACTOR_FAILED or ENGINE_CLOSED: WAIT. The
 *   handler ran (or still runs) but its commit did not reach the store (after STORE_FAILED the
 *   engine applies it late; after STORE_RESET it waits for the acknowledgement; after a thread
 *   death or a close that gave up on it, the lease must lapse); nothing is wrong with the message,
 *   so no attempt is used.
 * - `new` with OUTCOME_UNKNOWN: WAIT. The key is UNKNOWN: its redeliveries are in-flight until it
 *   is reconciled (then a duplicate, acked, or run again), so it is never acked now.
 * - `new` with any other error (HANDLER_FAILED, LEASE_LOST): RETRY.
 * - `duplicate`, `stale`: DONE.
 * - `in-flight`: WAIT, never acked (that could lose the message if the owner fails; with STORE_RESET,
 *   STORE_FAILED or STORE_UNSAFE the store could not be trusted to answer). Except
 *   WORKER_DIED: a handler module may have killed its thread, so RETRY uses an attempt and a
 *   poison message ends failed instead of crashing threads forever.
 * - `conflict`, `invalid`: REJECT.
 */
export function settleOf(outcome: Outcome): Settle {
  const code = outcome.error?.code
  switch (outcome.verdict) {
    case Verdict.NEW:
      if (code === undefined || code === ErrorCode.RESULT_TOO_LARGE || code === ErrorCode.RESULT_NOT_SERIALIZABLE) return Settle.DONE
      if (code === ErrorCode.STORE_FAILED || code === ErrorCode.STORE_RESET || code === ErrorCode.WORKER_DIED || code === ErrorCode.ACTOR_FAILED || code === ErrorCode.ENGINE_CLOSED || code === ErrorCode.OUTCOME_UNKNOWN) return Settle.WAIT
      return Settle.RETRY
    case Verdict.DUPLICATE:
    case Verdict.STALE:
      return Settle.DONE
    case Verdict.IN_FLIGHT:
      return code === ErrorCode.WORKER_DIED ? Settle.RETRY : Settle.WAIT
    case Verdict.CONFLICT:
    case Verdict.INVALID:
      return Settle.REJECT
  }
}
