/**
 * Waiting for a key another owner holds: the engine's in-flight policy
 * `wait` (queue consumers) and the HTTP layer's `wait` share it. The waiter
 * asks the store again every pollMs until the owner's outcome shows (DONE: a
 * duplicate with its result; released or lapsed: the waiter claims it and
 * runs) or maxMs has passed since its first in-flight answer (then in-flight,
 * as without waiting). Polling works across processes and on every store.
 */
import type { OptionReader } from './validation.js'

/** How long a waiter waits (0: not at all) and how often it asks again. */
export interface WaitPolicy {
  waitMs: number
  pollMs: number
}

export const DEFAULT_POLL_MS = 50
/** The longest wait: a timer holds at most 2^31 - 1 ms. */
const MAX_WAIT_MS = 2 ** 31 - 1

/** Reads `{ maxMs, pollMs? }` from its section (given, and an object); `owner` names it in a problem. */
export function readWaitPolicy(wait: OptionReader, owner: string): WaitPolicy {
  wait.onlyKnown(['maxMs', 'pollMs'], owner)
  return { waitMs: wait.integer('maxMs', undefined, 1, MAX_WAIT_MS), pollMs: wait.integer('pollMs', DEFAULT_POLL_MS, 1, 60_000) }
}

/** ms until the next ask, or undefined when the wait that began at `since` is over (times from one clock, e.g. performance.now()). */
export function nextPollMs(policy: WaitPolicy, since: number, now: number): number | undefined {
  const left = since + policy.waitMs - now
  return left <= 0 ? undefined : Math.min(policy.pollMs, left)
}
