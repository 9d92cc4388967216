/**
 * Platform suite: what idem's operating layer costs the engine, side by side
 * with it off, on the memory store and on the Redis store, in one run.
 *
 * Variants (PLATFORM_VARIANTS, one row each; later layers add theirs): the
 * engine as createEngine gives it, and with `metrics` on at their defaults
 * (a prom-client Registry of its own, scraped once at the end of each run,
 * and its message count held to the stream's).
 *
 * Workload per run: the same stream for every variant (dupIds: 30%
 * duplicates, half of them recent), 400,000 messages on the memory store and
 * 100,000 on Redis (a tenth with --quick), fed to processBatch in batches of
 * 1024 with 4 in flight, a trivial function handler, threads 0, 8 shards, a
 * new engine per run warmed up first. The variants take turns within each
 * round (so a machine that slows down mid-run slows them alike), in reverse
 * order every other round, 5 rounds;
 * msgs/s is the median of the 5, and the ratio is each variant's median over
 * the same store's baseline. Each run checks every unique key had exactly one
 * effect.
 */
import { randomUUID } from 'node:crypto'
import promClient from 'prom-client'
import { createEngine, type Engine } from '../src/engine.js'
import type { EngineOptions } from '../src/config.js'
import type { Message } from '../src/message.js'
import { deleteKeysUnder } from '../src/store/redis/delete-keys.js'
import { connectBenchRedis, dupIds } from './dup-stream.js'
import { median, progress, withRatios, type BenchTable, type Check, type SuiteOptions, type SuiteResult, type Target } from './report.js'
import { warmEngine } from './warm-engine.js'

const SUITE = 'platform'
const REDIS_URL = process.env.IDEM_BENCH_REDIS ?? 'redis://127.0.0.1:6379'
const ROUNDS = 5
const BATCH = 1024
const IN_FLIGHT_BATCHES = 4
const SHARDS = 8
const DUP_RATE = 0.3

/** One row: options added to the engine's, and a check of the run afterwards (say what is wrong, or undefined). */
export interface PlatformVariant {
  label: string
  /** Extra createEngine options; called once per run (a fresh Registry, file, …). */
  options: () => Partial<EngineOptions>
  /** After the run, before close: what is wrong with what the layer recorded, if anything. */
  check?: (engine: Engine, options: Partial<EngineOptions>, messages: number) => Promise<string | undefined>
  /** The least ratio to the baseline the issue asks for, per store. */
  target?: { memory: number; redis: number }
}

export const PLATFORM_VARIANTS: PlatformVariant[] = [
  { label: 'off', options: () => ({}) },
  {
    label: 'metrics on',
    options: () => ({ metrics: { registry: new promClient.Registry() } }),
    check: async (_engine, options, messages) => {
      const registry = (options.metrics as { registry: promClient.Registry }).registry
      const text = await registry.metrics()
      const counted = [...text.matchAll(/^idem_messages_total\{verdict="[a-z_]+"\} (\d+)$/gm)].reduce((sum, m) => sum + Number(m[1]), 0)
      return counted === messages ? undefined : `idem_messages_total sums to ${counted}, the run had ${messages} messages`
    },
    target: { memory: 0.9, redis: 0.95 },
  },
]

interface Store {
  name: 'memory' | 'redis'
  messages: number
  options: (run: string) => Partial<EngineOptions>
}

export async function runPlatformSuite(options: SuiteOptions): Promise<SuiteResult> {
  const checks: Check[] = []
  const targets: Target[] = []
  const tables: BenchTable[] = []
  const admin = await connectBenchRedis(SUITE, REDIS_URL)
  const prefix = `idem-bench:${randomUUID()}:`
  const stores: Store[] = [
    { name: 'memory', messages: options.quick ? 40_000 : 400_000, options: () => ({}) },
    { name: 'redis', messages: options.quick ? 10_000 : 100_000, options: (run) => ({ store: { kind: 'redis', url: REDIS_URL, prefix: `${prefix}${run}:` } }) },
  ]
  try {
    for (const store of stores) {
      const { ids, unique } = dupIds(store.messages, 7, DUP_RATE)
      const rates = new Map<string, number[]>(PLATFORM_VARIANTS.map((v) => [v.label, []]))
      const cpus = new Map<string, number[]>(PLATFORM_VARIANTS.map((v) => [v.label, []]))
      for (let round = 0; round < ROUNDS; round++) {
        // Every other round in reverse: no variant always runs first (after a cleanup) or last (after another engine's garbage).
        for (const variant of round % 2 === 0 ? PLATFORM_VARIANTS : [...PLATFORM_VARIANTS].reverse()) {
          const run = `${store.name}-${round}-${variant.label.replace(/\W+/g, '-')}`
          const extra = variant.options()
          const engine = await createEngine({ shards: SHARDS, bloom: { expectedItems: unique * 2 }, ...store.options(run), ...extra })
          try {
            await warmEngine(engine)
            const effects = new Uint8Array(unique)
            const { rate, cpuUs } = await drive(engine, ids, effects)
            rates.get(variant.label)!.push(rate)
            cpus.get(variant.label)!.push(cpuUs)
            const doubled = effects.reduce((n, e) => n + (e > 1 ? 1 : 0), 0)
            const lost = effects.reduce((n, e) => n + (e === 0 ? 1 : 0), 0)
            if (doubled > 0 || lost > 0) checks.push({ name: `platform ${store.name} ${variant.label}: one effect per key`, ok: false, detail: `${doubled} doubled, ${lost} lost of ${unique} keys` })
            const problem = await variant.check?.(engine, extra, store.messages + 256)
            if (problem !== undefined) checks.push({ name: `platform ${store.name} ${variant.label}: ${variant.label} recorded the run`, ok: false, detail: problem })
            progress(SUITE, `${store.name}, ${variant.label}, round ${round + 1}/${ROUNDS}: ${Math.round(rate).toLocaleString('en-US')} msgs/s, ${cpuUs.toFixed(2)} µs CPU/msg`)
          } finally {
            await engine.close()
          }
        }
        if (store.name === 'redis') await deleteKeysUnder(admin, prefix)
      }
      const baseline = median(rates.get(PLATFORM_VARIANTS[0].label)!)
      checks.push({ name: `platform ${store.name}: every run had one effect per key`, ok: !checks.some((c) => !c.ok && c.name.startsWith(`platform ${store.name}`)), detail: `${ROUNDS} rounds × ${PLATFORM_VARIANTS.length} variants` })
      tables.push(
        withRatios({
          title: `platform layer on the ${store.name} store: msgs/s, median of ${ROUNDS} (${store.messages.toLocaleString('en-US')} messages, 30% duplicates, threads 0, ${SHARDS} shards)`,
          baseline: PLATFORM_VARIANTS[0].label,
          ratioOf: 'msgsPerSecond',
          columns: [
            { key: 'cpuUsPerMessage', title: 'CPU µs/msg (median)', format: (v) => (typeof v === 'number' ? v.toFixed(2) : v) },
            { key: 'msgsPerSecond', title: 'msgs/s (median)' },
          ],
          rows: PLATFORM_VARIANTS.map((v) => ({ label: v.label, values: { cpuUsPerMessage: median(cpus.get(v.label)!), msgsPerSecond: median(rates.get(v.label)!) }, raw: { runs: rates.get(v.label), cpuUs: cpus.get(v.label) } })),
          notes: [
            'variants take turns within each round, reversed every other round; ratio = variant median msgs/s / off median on the same store',
            "CPU µs/msg: this process's user + system CPU time per message (less sensitive than wall time to other processes on a shared machine)",
          ],
        }),
      )
      for (const variant of PLATFORM_VARIANTS) {
        if (variant.target === undefined) continue
        const ratio = median(rates.get(variant.label)!) / baseline
        const goal = variant.target[store.name]
        targets.push({ name: `${variant.label} vs off, ${store.name} store`, goal: `≥ ${goal.toFixed(2)}×`, measured: `${ratio.toFixed(2)}×`, met: ratio >= goal })
      }
    }
  } finally {
    await deleteKeysUnder(admin, prefix)
    admin.disconnect()
  }
  return { suite: SUITE, tables, checks, targets }
}

/** Feeds the stream in batches, 4 in flight, re-submitting in-flight verdicts as a queue would; msgs/s of the whole stream, and this process's CPU µs per message. */
async function drive(engine: Engine, ids: number[], effects: Uint8Array): Promise<{ rate: number; cpuUs: number }> {
  const handler = (message: Message<number>): void => {
    effects[message.payload!]++
  }
  let next = 0
  const cpuBefore = process.cpuUsage()
  const started = performance.now()
  const worker = async (): Promise<void> => {
    while (next < ids.length) {
      const from = next
      next = Math.min(ids.length, next + BATCH)
      let batch: Message<number>[] = []
      for (let i = from; i < next; i++) batch.push({ key: `order-${ids[i]}-padding-to-look-like-a-real-key`, payload: ids[i] })
      while (batch.length > 0) {
        const outcomes = await engine.processBatch(batch, handler)
        batch = batch.filter((_, i) => outcomes[i].verdict === 'in-flight')
      }
    }
  }
  await Promise.all(Array.from({ length: IN_FLIGHT_BATCHES }, worker))
  const seconds = (performance.now() - started) / 1000
  const cpu = process.cpuUsage(cpuBefore)
  return { rate: ids.length / seconds, cpuUs: (cpu.user + cpu.system) / ids.length }
}
