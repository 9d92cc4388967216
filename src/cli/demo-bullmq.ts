import { setTimeout as sleep } from 'node:timers/promises'
import { fork, type ChildProcess } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { fileURLToPath } from 'node:url'
import { Queue } from 'bullmq'
import { Redis } from 'ioredis'
import type { LayerStats } from '../engine.js'
import { deleteKeysUnder } from '../store/redis/delete-keys.js'
import type { ConsumerStats } from '../transport/bullmq/consumer.js'
import type { ConsumeCommand, ConsumeReport } from './consume-protocol.js'
import { percentile, type DemoOptions, type DemoSummary } from './demo.js'
import { demoStream } from './demo-stream.js'
import { Progress } from './progress.js'
import { effectCounts, effectTotals, onInterrupt, ready } from './demo-processes.js'

export interface BullDemoOptions extends DemoOptions {
  /** redis:// URL of the Redis holding the queue, the store records and the effect counts. */
  redis: string
  /** Consumer processes. */
  consumers: number
  /** Jobs in each consumer's processor at once. */
  concurrency: number
}

/** Jobs per addBulk call: one round trip each, small enough not to stall Redis for other clients. */
const ADD_CHUNK = 1000
/** How often the parent asks BullMQ whether jobs are left. */
const POLL_MS = 100

interface Child {
  process: ChildProcess
  /** Latest counts it reported. */
  stats: ConsumerStats | undefined
  done: Extract<ConsumeReport, { type: 'done' }> | undefined
  exited: Promise<void>
}

/**
 * The demo end to end through BullMQ: the generated stream (resends, bursts,
 * late duplicates) is added to a fresh queue while `consumers` child processes
 * (`idem consume`) take it, each a createConsumer over a Redis-store engine on
 * one shared prefix. Every effect is an HINCRBY on a run-scoped hash, so effects
 * are counted per key across processes. The queue and every key of the run are
 * deleted at the end, also on failure or Ctrl-C.
 */
export async function runBullDemo(options: BullDemoOptions): Promise<DemoSummary> {
  const run = randomBytes(6).toString('hex')
  const queueName = `idem-demo-${run}`
  // Store records and the effects hash share one run-scoped prefix: one SCAN deletes them all.
  const prefix = `idem-demo:${run}:`
  const effectsKey = `${prefix}effects`
  const redis = new Redis(options.redis, { maxRetriesPerRequest: 3 })
  const queue = new Queue(queueName, { connection: { url: options.redis } })
  const children: Child[] = []

  // `finally` below deletes the queue and the run's keys before an interruption reaches the CLI.
  const interruption = onInterrupt(() => children, `queue ${queueName}`, prefix)
  const checkInterrupted = interruption.check

  try {
    await redis.ping()
    const messages = [...demoStream(options)]
    let uniqueKeys = 0
    for (const message of messages) uniqueKeys = Math.max(uniqueKeys, message.payload!.n + 1)

    for (let i = 0; i < options.consumers; i++) children.push(startConsumer(options, queueName, prefix, effectsKey, uniqueKeys))
    await Promise.all(children.map((child, i) => ready(child.process, `consumer process ${i + 1}`)))
    checkInterrupted()

    const progress = new Progress(options.messages, 'jobs', !options.json && process.stderr.isTTY === true)
    const settledJobs = (): number => children.reduce((sum, c) => sum + (c.stats === undefined ? 0 : c.stats.completed + c.stats.rejected), 0)
    const started = performance.now()
    // Failed jobs stay in BullMQ's failed set (that is where they would be looked for); completed ones are not kept.
    const opts = { removeOnComplete: true, attempts: 5, backoff: { type: 'exponential', delay: 100 } }
    for (let i = 0; i < messages.length; i += ADD_CHUNK) {
      checkInterrupted()
      await queue.addBulk(messages.slice(i, i + ADD_CHUNK).map((m) => ({ name: 'order', data: { key: m.key, n: m.payload!.n }, opts })))
      progress.update(Math.min(settledJobs(), options.messages))
    }
    for (;;) {
      checkInterrupted()
      const counts = await queue.getJobCounts('wait', 'active', 'delayed', 'prioritized', 'waiting-children')
      if (Object.values(counts).every((n) => n === 0)) break
      if (children.every((c) => c.process.exitCode !== null || c.process.signalCode !== null)) throw new Error('every consumer process exited with jobs left in the queue')
      progress.update(Math.min(settledJobs(), options.messages))
      await sleep(POLL_MS)
    }
    const seconds = (performance.now() - started) / 1000
    progress.update(Math.min(settledJobs(), options.messages))
    progress.finish()

    for (const child of children) child.process.send({ type: 'drain' } satisfies ConsumeCommand)
    await Promise.all(children.map((child) => child.exited))
    const reports = children.map((child, i) => {
      if (child.done === undefined) throw new Error(`consumer ${i + 1} exited without its final report`)
      return child.done
    })
    const failed = (await queue.getJobCounts('failed')).failed
    const perKey = await effectCounts(redis, effectsKey, uniqueKeys)
    return summarize(options, uniqueKeys, perKey, failed, seconds, reports, queueName, prefix)
  } catch (error) {
    checkInterrupted() // a step that failed because the run was being stopped: report the interruption
    throw error
  } finally {
    interruption.dispose()
    for (const child of children) if (child.process.exitCode === null && child.process.signalCode === null) child.process.kill('SIGKILL')
    await Promise.all(children.map((child) => child.exited))
    await queue.obliterate({ force: true }).catch(() => {})
    await queue.close().catch(() => {})
    await deleteKeysUnder(redis, prefix).catch(() => {})
    redis.disconnect()
  }
}

function startConsumer(options: BullDemoOptions, queue: string, prefix: string, effects: string, uniqueKeys: number): Child {
  const cli = fileURLToPath(new URL('./main.js', import.meta.url))
  const args = [
    'consume',
    ['--redis', options.redis],
    ['--queue', queue],
    ['--prefix', prefix],
    ['--effects', effects],
    ['--shards', String(options.shards)],
    ['--threads', String(options.threads)],
    ['--concurrency', String(options.concurrency)],
    ['--expected-keys', String(uniqueKeys)],
  ].flat()
  const child = fork(cli, args, { stdio: ['ignore', 'ignore', 'inherit', 'ipc'] })
  const entry: Child = { process: child, stats: undefined, done: undefined, exited: new Promise((resolve) => child.once('exit', () => resolve())) }
  child.on('message', (report: ConsumeReport) => {
    if (report.type === 'progress') entry.stats = report.stats
    else if (report.type === 'done') {
      entry.stats = report.stats
      entry.done = report
    }
  })
  return entry
}

function summarize(
  options: BullDemoOptions,
  uniqueKeys: number,
  perKey: Uint32Array,
  failed: number,
  seconds: number,
  reports: Extract<ConsumeReport, { type: 'done' }>[],
  queue: string,
  prefix: string,
): DemoSummary {
  const { effects, lost, doubleEffects } = effectTotals(perKey)
  const sum = (pick: (r: (typeof reports)[number]) => number): number => reports.reduce((total, r) => total + pick(r), 0)
  const layer = (field: keyof Omit<LayerStats, 'verdicts'>): number => sum((r) => r.engine[field])
  const latencies = reports.flatMap((r) => r.latencySample).sort((a, b) => a - b)
  const retriedInFlight = sum((r) => r.stats.retriedInFlight)
  const stalled = sum((r) => r.stats.stalled)
  const bloomNegatives = layer('bloomNegatives')
  const bloomFalsePositives = layer('bloomFalsePositives')
  const duplicates = sum((r) => r.stats.duplicates)
  const lruHits = layer('lruHits')
  return {
    messages: options.messages,
    uniqueKeys,
    effects,
    duplicates,
    lost,
    doubleEffects,
    failed,
    redeliveries: retriedInFlight + stalled,
    msgsPerSec: Math.round(options.messages / seconds),
    bloomFalsePositiveRate: bloomNegatives + bloomFalsePositives === 0 ? 0 : bloomFalsePositives / (bloomNegatives + bloomFalsePositives),
    layers: {
      lruHits,
      storeDuplicates: sum((r) => r.engine.verdicts.duplicate) - lruHits,
      bloomNegatives,
      bloomPositives: layer('bloomPositives'),
      bloomFalsePositives,
      storeOperations: layer('storeOperations'),
    },
    config: { shards: options.shards, threads: options.threads, store: 'redis', mode: 'strict' },
    transport: {
      kind: 'bullmq',
      consumers: options.consumers,
      concurrency: options.concurrency,
      queue,
      prefix,
      retriedInFlight,
      stalled,
      jobLatencyMs: { p50: percentile(latencies, 0.5), p99: percentile(latencies, 0.99) },
    },
  }
}
