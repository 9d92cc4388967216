/**
 * Store call durations for the `idem_store_call_seconds` histogram. With
 * metrics on, every counters array (protocol.ts) carries these slots after
 * the counters, so timings from worker threads reach the main thread with the
 * counts they already send, summed the same way: never a message per call.
 */
import { COUNTER_COUNT } from '../actor/protocol.js'

/** The `operation` label of each timed store call. */
export const STORE_OPERATIONS = ['claim', 'commit', 'release', 'mark_unknown', 'renew', 'resolve', 'read', 'group_commit'] as const
export const StoreOp = { CLAIM: 0, COMMIT: 1, RELEASE: 2, MARK_UNKNOWN: 3, RENEW: 4, RESOLVE: 5, READ: 6, GROUP_COMMIT: 7 } as const
export type StoreOp = (typeof StoreOp)[keyof typeof StoreOp]

/** Upper bounds of the histogram's buckets, in seconds (+Inf is the count). */
export const STORE_CALL_BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10] as const

/** Per operation: one count per bucket, one past the last bound, and the sum of seconds. */
export const SLOTS_PER_OPERATION = STORE_CALL_BUCKETS.length + 2
const TIMING_SLOTS = STORE_OPERATIONS.length * SLOTS_PER_OPERATION

/** A counters array for an engine's config: with store calls timed (metrics on), the timing slots follow the counters. */
export function countersFor(config: { timeStoreCalls?: boolean }): Float64Array {
  return new Float64Array(config.timeStoreCalls === true ? COUNTER_COUNT + TIMING_SLOTS : COUNTER_COUNT)
}

/** Records a store call that started at `startedAt` (performance.now()) into a counters array with timing slots. */
export function recordStoreCall(counters: Float64Array, op: StoreOp, startedAt: number): void {
  const seconds = (performance.now() - startedAt) / 1000
  let bucket = 0
  while (bucket < STORE_CALL_BUCKETS.length && seconds > STORE_CALL_BUCKETS[bucket]) bucket++
  const base = COUNTER_COUNT + op * SLOTS_PER_OPERATION
  counters[base + bucket]++
  counters[base + STORE_CALL_BUCKETS.length + 1] += seconds
}

/** Times `call` into `counters` (an actor's, copied and zeroed, never swapped) when it has timing slots (metrics on); otherwise only calls it. */
export async function timed<R>(counters: Float64Array, op: StoreOp, call: () => Promise<R>): Promise<R> {
  if (counters.length === COUNTER_COUNT) return call()
  const startedAt = performance.now()
  try {
    return await call()
  } finally {
    recordStoreCall(counters, op, startedAt)
  }
}
