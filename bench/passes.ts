/**
 * Timed passes over fresh input, through tinybench, in interleaved rounds.
 *
 * One tinybench iteration is one whole pass (a million keys, say), not one
 * key: a per-key iteration would time the timer, and would have to reuse its
 * input. A pass's input is built in beforeEach, outside the timed region, so
 * every pass reads keys no earlier pass touched (see fresh-keys.ts); the heap
 * is collected after that build too (when gc() is available), so building the
 * input leaves no garbage to collect inside the timed pass.
 *
 * Contenders run in rounds, A B C D, A B C D, …: a long run drifts (heap
 * layout, V8 re-optimising a peer's hot function halfway, a noisy
 * neighbour), and interleaving spreads that drift over every contender
 * instead of loading it onto whichever runs last. Each round gives one rate
 * per contender, units / mean pass time of that round; the reported rate is
 * the median over rounds, with the slowest and fastest round beside it.
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
}

export interface RoundPlan {
  /** Passes per contender thrown away before the first round: V8 tiers up long wasm and JS loops only after a while. */
  warmupPasses: number
  rounds: number
  /** Timed passes per contender per round. */
  passesPerRound: number
  /** Called after each round with that round's rates, for progress lines. */
  onRound?: (round: number, rates: { name: string; perSecond: number }[]) => void
}

export interface PassRate {
  name: string
  /** Median over rounds of unitsPerPass / mean pass time in the round. */
  perSecond: number
  slowestRound: number
  fastestRound: number
  /** Every round's rate, in order. */
  rounds: number[]
  passes: number
  medianPassMs: number
  /** Sum of pass() results; keeps the work observable. */
  checksum: number
}

export async function measureRounds(cases: PassCase[], plan: RoundPlan): Promise<PassRate[]> {
  const rates = cases.map(() => [] as number[])
  const passMs = cases.map(() => [] as number[])
  const checksums = cases.map(() => 0)
  for (let round = 0; round < plan.rounds; round++) {
    const warmup = round === 0 && plan.warmupPasses > 0
    const bench = new Bench({
      time: 0, // exactly passesPerRound iterations, however long each takes
      iterations: plan.passesPerRound,
      warmup,
      warmupTime: 0,
      warmupIterations: plan.warmupPasses,
      retainSamples: true,
      throws: true,
    })
    cases.forEach((c, i) => {
      bench.add(
        c.name,
        () => {
          checksums[i] += c.pass()
        },
        {
          // Said, not detected: tinybench detects it by calling the function once
          // when the task is added, an untimed extra pass over the previous input.
          async: false,
          beforeEach: () => {
            c.beforePass()
            settleHeap()
          },
        },
      )
    })
    await bench.run()
    bench.tasks.forEach((task, i) => {
      const result = task.result
      if (result.state !== 'completed') throw new Error(`${task.name}: tinybench ended in state ${result.state}`)
      rates[i].push(cases[i].unitsPerPass / (result.latency.mean / 1000))
      passMs[i].push(...(result.latency.samples ?? [result.latency.mean]))
    })
    plan.onRound?.(
      round,
      cases.map((c, i) => ({ name: c.name, perSecond: rates[i][round] })),
    )
  }
  return cases.map((c, i) => ({
    name: c.name,
    perSecond: median(rates[i]),
    slowestRound: Math.min(...rates[i]),
    fastestRound: Math.max(...rates[i]),
    rounds: rates[i],
    passes: passMs[i].length,
    medianPassMs: median(passMs[i]),
    checksum: checksums[i],
  }))
}
