/**
 * Fault runs are bounded by count and by progress, never by a wall-clock
 * budget: a run does a fixed number of messages and kills, and fails only
 * when its work stops moving. A machine twice as loaded makes a run twice as
 * long, not failed; a run that is stuck fails within STALL_MS, saying what
 * stalled and where.
 */

/** How long a fault run may go without progress before it counts as stuck (the longest planned outage in a test is 10 s). */
export const STALL_MS = 60_000

/**
 * Vitest time-out of a fault test: a backstop for a hang the progress checks
 * cannot see (a promise that never settles), far above any run that keeps
 * moving, so that only a stall trips it.
 */
export const FAULT_TEST_TIMEOUT_MS = 30 * 60_000

export interface UntilDone {
  /** What is awaited, for the error. */
  what: string
  done: () => boolean | Promise<boolean>
  /** A count that grows while work gets done (effects, acks, settled entries); only a new high counts. */
  progress: () => number | Promise<number>
  /** @default STALL_MS */
  stallMs?: number
  /** @default 100 */
  pollMs?: number
}

/** Waits until `done()` holds; throws if `progress()` has not reached a new high for `stallMs`. */
export async function untilDone({ what, done, progress, stallMs = STALL_MS, pollMs = 100 }: UntilDone): Promise<void> {
  let best = await progress()
  let movedAt = Date.now()
  while (!(await done())) {
    await new Promise((resolve) => setTimeout(resolve, pollMs))
    const now = await progress()
    if (now > best) {
      best = now
      movedAt = Date.now()
    } else if (Date.now() - movedAt > stallMs) {
      throw new Error(`${what}: no progress for ${stallMs / 1000} s (stuck at ${best})`)
    }
  }
}
