/**
 * Timed passes over a batch of fresh input, through tinybench.
 *
 * One tinybench iteration is one whole pass (a million keys, say), not one
 * key: a per-key iteration would time the timer, and would have to reuse its
 * input. The pass's input is built in beforeEach, outside the timed region,
 * so every pass reads keys no earlier pass touched (see fresh-keys.ts). The
 * heap is collected after that build too, when gc() is available, so the
 * garbage of building the input is not collected inside the next timed pass.
 */
import { Bench } from 'tinybench'
import { median, settleHeap } from './report.js'

export interface PassCase {
  name: string
  /** Units (keys, ops) one pass processes: the rate is unitsPerPass / pass time. */
  unitsPerPass: number
  /** Builds the next pass's input; not timed. */
  beforePass: () => void
  /** One timed pass; returns something derived from its work, so none of it is dead code. */
  pass: () => number
  /** Passes run and thrown away first: V8 tiers up long wasm and JS loops only after a while. */
  warmupPasses: number
  passes: number
}

export interface PassRate {
  /** unitsPerPass / median pass time. */
  perSecond: number
  /** unitsPerPass / mean pass time. */
  meanPerSecond: number
  medianPassMs: number
  passes: number
  /** Relative margin of error of the mean pass time, in percent (95%, Student's t). */
  rmePercent: number
  /** Sum of pass() results; keeps the work observable. */
  checksum: number
}

export async function measurePasses(c: PassCase): Promise<PassRate> {
  let checksum = 0
  const bench = new Bench({
    name: c.name,
    time: 0, // exactly `passes` iterations, however long each takes
    iterations: c.passes,
    warmup: c.warmupPasses > 0,
    warmupTime: 0,
    warmupIterations: c.warmupPasses,
    retainSamples: true,
    throws: true,
  })
  bench.add(
    c.name,
    () => {
      checksum += c.pass()
    },
    {
      beforeEach: () => {
        c.beforePass()
        settleHeap()
      },
    },
  )
  await bench.run()
  const result = bench.tasks[0].result
  if (result.state !== 'completed') throw new Error(`${c.name}: tinybench ended in state ${result.state}`)
  const samples = result.latency.samples ?? []
  const medianPassMs = samples.length > 0 ? median(samples) : result.latency.p50
  return {
    perSecond: c.unitsPerPass / (medianPassMs / 1000),
    meanPerSecond: c.unitsPerPass / (result.latency.mean / 1000),
    medianPassMs,
    passes: result.latency.samplesCount,
    rmePercent: result.latency.rme,
    checksum,
  }
}
