/**
 * What the broker suites (amqp, nats) share: one workload, one handler, the
 * same runs and the same table and targets, so their rows compare like for
 * like and only the broker-specific filling and consuming differ per suite.
 * The streams suite shares the handler and the tally.
 */
import { setTimeout as sleep } from 'node:timers/promises'
import { markUnclean, formatRatio, median, shortRate, type BenchTable, type Target } from './report.js'
import type { CpuPerItem } from './dup-stream.js'
import { seededRandom } from './fresh-keys.js'
import { JsonTraffic } from './json-traffic.js'

export const RUNS = 3
export const DUP_RATE = 0.3
const CJK_SHARE = 0.1
export const SHARDS = 8
const IO_MS = [5, 60] as const
/** No message acked for this long means a consumer is stuck, not slow. */
const STALL_MS = 30_000
const TARGET = 0.85

export type HandlerKind = 'trivial' | 'io'
export const HANDLERS: Record<HandlerKind, { title: string; messages: number }> = {
  trivial: { title: 'trivial handler', messages: 50_000 },
  io: { title: `handler awaiting ${IO_MS[0]}-${IO_MS[1]} ms of I/O`, messages: 20_000 },
}
export const KINDS = Object.keys(HANDLERS) as HandlerKind[]
export type Side = 'raw' | 'idem'

export interface Body {
  key: string
  n: number
}

export interface Load {
  bodies: string[]
  keys: string[]
  unique: number
  delays?: Uint8Array
}

export interface Run {
  rate: number
  cpu: CpuPerItem
  /** idem: messages per engine batch (what arrived in one turn of the event loop). */
  perBatch?: number
  effects: number
  keys: number
  doubles: number
}

export type Runs = Record<HandlerKind, Record<Side, Run[]>>

export function emptyRuns(): Runs {
  return { trivial: { raw: [], idem: [] }, io: { raw: [], idem: [] } }
}

export function messagesOf(kind: HandlerKind, quick: boolean): number {
  return quick ? HANDLERS[kind].messages / 5 : HANDLERS[kind].messages
}

/** The raw side goes first on even runs, idem on odd ones, so neither always meets a warmer broker. */
export function sidesOf(run: number): Side[] {
  return run % 2 === 0 ? ['raw', 'idem'] : ['idem', 'raw']
}

export function makeLoad(messages: number, run: number, io: boolean): Load {
  const traffic = new JsonTraffic({ cjkShare: CJK_SHARE, dupRate: DUP_RATE, seed: 301 + run }).next(messages)
  const load: Load = { keys: traffic.keys, bodies: traffic.keys.map((key, n) => JSON.stringify({ key, n } satisfies Body)), unique: messages - traffic.repeats }
  if (io) {
    const random = seededRandom(17 + run)
    load.delays = new Uint8Array(messages)
    for (let n = 0; n < messages; n++) load.delays[n] = IO_MS[0] + (random() % (IO_MS[1] - IO_MS[0] + 1))
  }
  return load
}

/** The one handler both sides run: counts the effect on the body's key, then waits out the message's I/O delay if it has one. */
export interface EffectCounter<M> {
  effects: Map<string, number>
  handler: (message: M) => Promise<void> | undefined
}

export function effectCounter<M>(bodyOf: (message: M) => Body, delays: Uint8Array | undefined): EffectCounter<M> {
  const effects = new Map<string, number>()
  const handler = (message: M): Promise<void> | undefined => {
    const body = bodyOf(message)
    effects.set(body.key, (effects.get(body.key) ?? 0) + 1)
    return delays === undefined ? undefined : sleep(delays[body.n])
  }
  return { effects, handler }
}

export function tally(effects: Map<string, number>): Pick<Run, 'effects' | 'keys' | 'doubles'> {
  let runs = 0
  let doubles = 0
  for (const n of effects.values()) {
    runs += n
    if (n > 1) doubles++
  }
  return { effects: runs, keys: effects.size, doubles }
}

export function checkOf(kind: HandlerKind, side: Side, run: number, load: Load, result: Run): { name: string; ok: boolean; detail: string } {
  const total = load.bodies.length
  return {
    name: `${kind}, ${side}, run ${run + 1}: ${side === 'raw' ? 'one effect per message' : 'one effect per unique key'}`,
    ok: side === 'raw' ? result.effects === total : result.keys === load.unique && result.doubles === 0,
    detail: side === 'raw' ? `${result.effects} effects for ${total} messages` : `${result.keys} keys run for ${load.unique} unique keys${result.doubles > 0 ? `, ${result.doubles} keys ran twice` : ''}`,
  }
}

/**
 * Resolves with the time the idem consumer's settled count (acked plus given
 * up on) reached total; rejects, marking the run unclean, if nothing was
 * acked for STALL_MS.
 */
export function settledAt<S extends { acked: number }>(stats: () => S, settledOf: (stats: S) => number, total: number, name: string): Promise<number> {
  let lastAcked = 0
  let lastProgress = performance.now()
  return new Promise<number>((resolve, reject) => {
    const poll = setInterval(() => {
      const now = stats()
      if (settledOf(now) >= total) {
        clearInterval(poll)
        resolve(performance.now())
      } else if (now.acked > lastAcked) {
        lastAcked = now.acked
        lastProgress = performance.now()
      } else if (performance.now() - lastProgress > STALL_MS) {
        clearInterval(poll)
        markUnclean()
        reject(new Error(`idem ${name} consumer stuck at ${now.acked} of ${total} acked: ${JSON.stringify(stats())}`))
      }
    }, 5)
  })
}

/** What differs in a broker suite's table and targets: its names for things. */
export interface BrokerLabels {
  title: string
  rawColumn: string
  notes: string[]
  targetName: (handlerTitle: string) => string
}

export function brokerResults(runs: Runs, quick: boolean, labels: BrokerLabels): { table: BenchTable; targets: Target[] } {
  const ratiosOf = (kind: HandlerKind): number[] => runs[kind].idem.map((idem, i) => idem.rate / runs[kind].raw[i].rate)
  const table: BenchTable = {
    title: labels.title,
    columns: [
      { key: 'raw', title: labels.rawColumn },
      { key: 'idem', title: 'idem (median)' },
      { key: 'ratios', title: `idem/raw of ${RUNS} runs` },
      { key: 'ratio', title: 'idem/raw (median)', format: formatRatio },
      { key: 'nodeCpu', title: 'Node CPU µs/message raw / idem' },
      { key: 'perBatch', title: 'idem messages per engine batch' },
    ],
    rows: KINDS.map((kind) => ({
      label: `${HANDLERS[kind].title}, ${messagesOf(kind, quick).toLocaleString('en-US')} messages`,
      values: {
        raw: median(runs[kind].raw.map((r) => r.rate)),
        idem: median(runs[kind].idem.map((r) => r.rate)),
        ratios: ratiosOf(kind).map(formatRatio).join(' / '),
        ratio: median(ratiosOf(kind)),
        nodeCpu: `${median(runs[kind].raw.map((r) => r.cpu.node)).toFixed(1)} / ${median(runs[kind].idem.map((r) => r.cpu.node)).toFixed(1)}`,
        perBatch: median(runs[kind].idem.map((r) => r.perBatch!)).toFixed(0),
      },
      raw: { rawRates: runs[kind].raw.map((r) => r.rate), idemRates: runs[kind].idem.map((r) => r.rate) },
    })),
    notes: labels.notes,
  }
  const targets: Target[] = KINDS.map((kind) => {
    const ratio = median(ratiosOf(kind))
    return {
      name: labels.targetName(HANDLERS[kind].title),
      goal: `>= ${TARGET}x`,
      measured: `${ratio.toFixed(2)}x (${shortRate(median(runs[kind].idem.map((r) => r.rate)))} vs ${shortRate(median(runs[kind].raw.map((r) => r.rate)))} msgs/s)`,
      met: ratio >= TARGET,
    }
  })
  return { table, targets }
}
