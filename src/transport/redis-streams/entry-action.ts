import type { Outcome } from '../../message.js'
import { settleOf, Settle } from '../../outcome.js'

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
 * What becomes of an entry, by settleOf (src/outcome.ts), the one place that
 * decides it for every transport; a retry on delivery maxDeliveries (or later)
 * is a dead letter instead.
 */
export function entryActionOf(outcome: Outcome, deliveries: number, maxDeliveries: number): EntryAction {
  switch (settleOf(outcome)) {
    case Settle.DONE:
      return EntryAction.ACK
    case Settle.RETRY:
      return deliveries >= maxDeliveries ? EntryAction.DEAD_LETTER : EntryAction.RETRY
    case Settle.WAIT:
      return EntryAction.WAIT
    case Settle.REJECT:
      return EntryAction.DEAD_LETTER
  }
}
