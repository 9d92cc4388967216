/**
 * A CPU-bound handler module for the engine bench (compiled to
 * dist/bench/handlers/burn-cpu.js and configured as the engine's `handler`, so
 * it runs inside the worker thread next to its shard actor).
 *
 * It does a fixed amount of arithmetic, ~20 µs on the machine it was tuned on
 * (the bench measures and prints the real figure), rather than spinning on
 * performance.now(): a wall-clock spin burns less CPU whenever its thread is
 * descheduled, which would flatter exactly the oversubscribed runs (more
 * threads than cores) this handler exists to measure.
 *
 * Returns the message's payload.n, so the bench can count one effect per
 * unique key from the outcomes.
 */
import type { Message } from '../../src/message.js'

/** xorshift32 rounds per message: ~1.7 ns each on a 2020s x86 core. */
export const ROUNDS = 12_000

export default function burnCpu(message: Message<{ n: number }>): number {
  const n = message.payload?.n ?? 0
  let x = n | 1
  for (let i = 0; i < ROUNDS; i++) {
    x ^= x << 13
    x ^= x >>> 17
    x ^= x << 5
  }
  // xorshift maps a non-zero word to a non-zero word, so this never returns -1;
  // the compiler cannot know that, so the loop cannot be dropped.
  return x === 0 ? -1 : n
}
