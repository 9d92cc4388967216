import { randomUUID } from 'node:crypto'
import { availableParallelism } from 'node:os'
import type { StoreOptions } from '../config.js'
import { createEngine } from '../engine.js'
import { loadPromClient } from '../observe/metrics.js'
import { serveMetrics } from '../observe/metrics-server.js'
import { dropSqlTables } from '../store/sql/sql-admin.js'
import { consumeMemoryQueue, MemoryQueue } from '../transport/memory-queue.js'
import { demoStream, type DemoPayload } from './demo-stream.js'
import { Progress } from './progress.js'
import { effectTotals } from './demo-processes.js'
import { formatTable } from './table.js'

export interface DemoOptions {
  messages: number
  dupRate: number
  shards: number
  threads: number
  seed: number
  json: boolean
  /** memory (default) or a sqlite store; a SQL store runs on tables of its own, dropped at the end. */
  store?: StoreOptions
  /** Owned mode (memory store, threads 0): partitions, group commits, no store call before a never-seen key. */
  mode?: 'strict' | 'owned'
  /** Serves the engine's metrics at http://127.0.0.1:PORT/metrics while it runs (0: a free port). */
  metricsPort?: number
}

export interface DemoSummary {
  messages: number
  uniqueKeys: number
  effects: number
  duplicates: number
  lost: number
  doubleEffects: number
  failed: number
  redeliveries: number
  msgsPerSec: number
  bloomFalsePositiveRate: number
  /** Time of one processBatch call (the embedded demo). */
  batchLatencyMs?: { p50: number; p99: number }
  /** Summed over every engine (one per consumer process with --redis). */
  layers: { lruHits: number; storeDuplicates: number; bloomNegatives: number; bloomPositives: number; bloomFalsePositives: number; storeOperations: number }
  config: { shards: number; threads: number; store: string; mode: 'strict' | 'owned' }
  /** Owned mode: partitions, their moves and fenced writes, group commits. */
  ownership?: {
    partitions: number
    members: number
    /** Acquisitions of a partition after its first (hand-overs, take-overs after a kill). */
    moved: number
    fencedWrites: number
    groupCommits: number
    /** With --kill-every: members SIGKILLed, and the entries they held unacked when they died (the bound on double effects). */
    kills?: number
    heldAtKills?: number
  }
  /** With --redis: the run went through BullMQ. */
  transport?: {
    kind: 'bullmq'
    consumers: number
    concurrency: number
    queue: string
    /** Prefix of the run's store records and effects hash (deleted at the end). */
    prefix: string
    /** In-flight jobs moved back to BullMQ's delayed set. */
    retriedInFlight: number
    /** Jobs BullMQ's stall check handed back to the queue. */
    stalled: number
    /** Time of one job in the processor (engine round trip and handler), from a uniform sample. */
    jobLatencyMs: { p50: number; p99: number }
  }
}

const OWNED_DEMO_PARTITIONS = 64

/** Threads for the demo: on a 2-core machine one actor thread beside the main thread. */
export function defaultDemoThreads(): number {
  return Math.max(1, Math.min(4, availableParallelism() - 1))
}

/** Runs a generated stream through the in-memory queue and the engine; counts every effect. */
export async function runDemo(options: DemoOptions): Promise<DemoSummary> {
  const mode = options.mode ?? 'strict'
  const queue = new MemoryQueue<DemoPayload>(mode === 'owned' ? { partitions: OWNED_DEMO_PARTITIONS } : {})
  let uniqueKeys = 0
  for (const message of demoStream(options)) {
    queue.add(message)
    uniqueKeys = Math.max(uniqueKeys, message.payload!.n + 1)
  }
  const store = options.store?.kind === 'sqlite' ? { ...options.store, tablePrefix: `idem_demo_${randomUUID().replaceAll('-', '').slice(0, 8)}_` } : options.store
  const registry = options.metricsPort === undefined ? undefined : new (await loadPromClient()).Registry()
  const engine = await createEngine({
    shards: options.shards,
    threads: options.threads,
    ...(store === undefined ? {} : { store }),
    ...(mode === 'owned' ? { mode, partitions: OWNED_DEMO_PARTITIONS } : {}),
    bloom: { expectedItems: Math.max(1, uniqueKeys), falsePositiveRate: 0.01 },
    lru: { maxKeys: 100_000 },
    ...(registry === undefined ? {} : { metrics: { registry } }),
  })
  const server = registry === undefined ? undefined : await serveMetrics(registry, options.metricsPort!)
  if (server !== undefined) console.error(`idem demo: metrics at ${server.url}`)
  const effects = new Uint16Array(uniqueKeys)
  const handler = (message: { payload?: DemoPayload }): void => {
    effects[message.payload!.n]++
  }
  const progress = new Progress(options.messages, 'msgs', !options.json && process.stderr.isTTY === true)
  const latencies: number[] = []
  let settled = 0
  const started = performance.now()
  await consumeMemoryQueue(queue, engine, handler, {
    onBatch: (size, ms) => {
      latencies.push(ms)
      settled += size
      progress.update(Math.min(settled, options.messages))
    },
  })
  const seconds = (performance.now() - started) / 1000
  progress.finish()
  const stats = engine.stats()
  await server?.close()
  await engine.close()
  if (store?.kind === 'sqlite') await dropSqlTables(store)

  const { effects: effectCount, lost, doubleEffects } = effectTotals(effects)
  latencies.sort((a, b) => a - b)
  const t = stats.totals
  return {
    messages: options.messages,
    uniqueKeys,
    effects: effectCount,
    duplicates: t.verdicts.duplicate,
    lost,
    doubleEffects,
    failed: queue.failed.length,
    redeliveries: queue.redeliveries,
    msgsPerSec: Math.round(options.messages / seconds),
    bloomFalsePositiveRate: stats.bloom.measuredFalsePositiveRate,
    batchLatencyMs: { p50: percentile(latencies, 0.5), p99: percentile(latencies, 0.99) },
    layers: {
      lruHits: t.lruHits,
      storeDuplicates: t.verdicts.duplicate - t.lruHits,
      bloomNegatives: t.bloomNegatives,
      bloomPositives: t.bloomPositives,
      bloomFalsePositives: t.bloomFalsePositives,
      storeOperations: t.storeOperations,
    },
    config: { shards: options.shards, threads: options.threads, store: store?.kind === 'sqlite' ? `sqlite:${store.path}` : 'memory', mode },
    ...(stats.ownership === undefined
      ? {}
      : {
          ownership: {
            partitions: engine.config.partitions,
            members: stats.ownership.members,
            moved: stats.ownership.handedOver + stats.ownership.lost,
            fencedWrites: t.fencedWrites,
            groupCommits: t.groupCommits,
          },
        }),
  }
}

export function formatDemoSummary(s: DemoSummary): string {
  const latency = s.transport?.jobLatencyMs ?? s.batchLatencyMs
  return formatTable(
    ['idem demo', 'value'],
    [
      ...(s.transport === undefined ? [] : [['transport', `BullMQ: ${s.transport.consumers} consumer process${s.transport.consumers === 1 ? '' : 'es'} × concurrency ${s.transport.concurrency}`]]),
      ...(s.config.store === 'redis' && s.config.mode === 'owned' ? [['transport', `Redis Streams, ${s.ownership!.partitions} partition streams, ${s.ownership!.members} member processes`]] : []),
      ['store / shards / threads', `${s.config.store} / ${s.config.shards} / ${s.config.threads}`],
      ...(s.ownership === undefined
        ? []
        : [
            ['mode', `owned: ${s.ownership.partitions} partitions, ${s.ownership.members} member${s.ownership.members === 1 ? '' : 's'}`],
            ['partitions moved / fenced writes', `${s.ownership.moved} / ${s.ownership.fencedWrites}`],
            ...(s.ownership.kills === undefined ? [] : [['members SIGKILLed / entries they held', `${s.ownership.kills} / ${s.ownership.heldAtKills}`]]),
            ['group commits', s.ownership.groupCommits],
          ]),
      ['messages', s.messages],
      ['unique keys', s.uniqueKeys],
      ['handler effects', s.effects],
      ['lost (unique keys never run)', s.lost],
      ['double effects', s.doubleEffects],
      ['duplicates dropped', s.duplicates],
      ['  by the LRU (no I/O)', s.layers.lruHits],
      ['  by the store confirm', s.layers.storeDuplicates],
      ['bloom: never seen', s.layers.bloomNegatives],
      ['bloom: maybe seen', s.layers.bloomPositives],
      ['bloom: false positives (store said new)', s.layers.bloomFalsePositives],
      ['bloom: measured false-positive rate', `${(s.bloomFalsePositiveRate * 100).toFixed(3)}%`],
      ['store operations', s.layers.storeOperations],
      s.transport === undefined
        ? ['redeliveries / failed', `${s.redeliveries} / ${s.failed}`]
        : ['in-flight retries / stalled / failed jobs', `${s.transport.retriedInFlight} / ${s.transport.stalled} / ${s.failed}`],
      ['throughput (msgs/s)', s.msgsPerSec],
      [`${s.transport === undefined ? 'batch' : 'job'} latency p50 / p99 (ms)`, latency === undefined ? '-' : `${latency.p50.toFixed(2)} / ${latency.p99.toFixed(2)}`],
    ],
  )
}

export function percentile(sorted: number[], q: number): number {
  if (sorted.length === 0) return 0
  return sorted[Math.min(sorted.length - 1, Math.floor(q * sorted.length))]
}
