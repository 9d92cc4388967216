/**
 * What the two demos that fork consumer processes share (`--redis` through
 * BullMQ, `--redis --mode owned` through partitioned streams): stopping on
 * Ctrl-C with the run's keys deleted, waiting for a child's `ready` report,
 * and reading the effects counted per key in a Redis hash.
 */
import type { ChildProcess } from 'node:child_process'
import type { Redis } from 'ioredis'

/** The run was stopped by a signal; the CLI exits 128 + its number, as a shell would. */
export class DemoInterrupted extends Error {
  constructor(
    readonly signal: NodeJS.Signals,
    what: string,
    prefix: string,
  ) {
    super(`interrupted by ${signal}; deleted the run's ${what} and its keys ${prefix}*`)
    this.name = 'DemoInterrupted'
  }
}

/**
 * Ctrl-C (or SIGTERM) stops the run where it is: the children are killed,
 * and `check()` throws DemoInterrupted at the run's next step, so its
 * `finally` deletes the run's keys before the error reaches the CLI.
 */
export function onInterrupt(children: () => Iterable<{ process: ChildProcess }>, what: string, prefix: string): { check(): void; dispose(): void } {
  let interrupted: NodeJS.Signals | undefined
  const interrupt = (signal: NodeJS.Signals): void => {
    interrupted ??= signal
    for (const child of children()) child.process.kill('SIGKILL')
  }
  process.once('SIGINT', interrupt)
  process.once('SIGTERM', interrupt)
  return {
    check: () => {
      if (interrupted !== undefined) throw new DemoInterrupted(interrupted, what, prefix)
    },
    dispose: () => {
      process.off('SIGINT', interrupt)
      process.off('SIGTERM', interrupt)
    },
  }
}

/** Resolves on the child's `{ type: 'ready' }` report; rejects if it exits first. */
export function ready(child: ChildProcess, name: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const onReport = (report: { type: string }): void => {
      if (report.type !== 'ready') return
      child.off('message', onReport)
      resolve()
    }
    child.on('message', onReport)
    child.once('exit', (code, signal) => reject(new Error(`${name} exited before it was ready (${signal ?? `code ${code}`})`)))
  })
}

/** Effects per unique key, read from the run's hash in pages (HSCAN), so a large run never needs one huge reply. */
export async function effectCounts(redis: Redis, effectsKey: string, uniqueKeys: number): Promise<Uint32Array> {
  const perKey = new Uint32Array(uniqueKeys)
  let cursor = '0'
  do {
    const [next, fields] = await redis.hscan(effectsKey, cursor, 'COUNT', 10_000)
    cursor = next
    for (let i = 0; i < fields.length; i += 2) perKey[Number(fields[i])] = Number(fields[i + 1])
  } while (cursor !== '0')
  return perKey
}

/** Effects in all, unique keys never run, and runs beyond the first. */
export function effectTotals(perKey: ArrayLike<number> & Iterable<number>): { effects: number; lost: number; doubleEffects: number } {
  let effects = 0
  let lost = 0
  let doubleEffects = 0
  for (const count of perKey) {
    effects += count
    if (count === 0) lost++
    if (count > 1) doubleEffects += count - 1
  }
  return { effects, lost, doubleEffects }
}
