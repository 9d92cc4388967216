#!/usr/bin/env node
import { constants } from 'node:os'
import { parseArgs } from 'node:util'
import { IdemError } from '../errors.js'
import { defaults as consumerDefaults } from '../transport/bullmq/options.js'
import { defaultDemoThreads, formatDemoSummary, runDemo } from './demo.js'
import { migrateUsage, parseStoreFlag } from './migrate.js'

const usage = `usage:
  idem demo  [--messages N] [--dup-rate R] [--shards N] [--threads N] [--seed N] [--json]
             [--store memory|sqlite:PATH] [--redis URL [--consumers N] [--concurrency N]]
  idem bench [--json] [--quick]
  ${migrateUsage}

  demo   runs a generated stream with duplicates through the engine (memory store,
         in-memory queue) and checks that every unique key had exactly one effect.
         With --redis URL it runs end to end through BullMQ instead: a producer adds
         the stream to a fresh queue, --consumers processes (default 2) each run
         createConsumer (--concurrency jobs at once, default ${consumerDefaults.concurrency}) over a Redis-store
         engine on one shared prefix, and every effect is counted per key in Redis.
         --messages defaults to 100,000 there (BullMQ itself tops out near 10,000
         jobs/s on a small machine) and --threads to 0 (each consumer is a process).
         The queue and every key of the run are deleted at the end (bullmq must be
         installed: it is an optional peer dependency).
         --store sqlite:PATH runs the embedded demo on the SQLite store in that file
         (tables of its own, dropped at the end) instead of the memory store.
  migrate creates a SQL store's tables and indexes (or checks the ones there), for
         deployments that create them ahead of the consumers (store.createTables: false).
  bench  tinybench microbenchmarks: the WASM bloom against bloomfilter and
         bloom-filters, lru-cache, and the engine end to end (needs the dev dependencies).`

async function main(argv: string[]): Promise<number> {
  const [command, ...rest] = argv
  if (command === 'demo') return demo(rest)
  if (command === 'migrate') return (await import('./migrate.js')).runMigrate(rest)
  if (command === 'consume') {
    // Hidden: one consumer process of `idem demo --redis`, forked by it.
    const { runConsume } = await import('./consume.js')
    return runConsume(rest)
  }
  if (command === 'bench') {
    const { runBench } = await import('../../bench/run.js')
    return runBench(rest)
  }
  if (command === undefined || command === '--help' || command === '-h' || command === 'help') {
    console.log(usage)
    return command === undefined ? 1 : 0
  }
  console.error(`idem: unknown command ${JSON.stringify(command)}\n\n${usage}`)
  return 2
}

async function demo(args: string[]): Promise<number> {
  const { values } = parseArgs({
    args,
    options: {
      messages: { type: 'string' },
      'dup-rate': { type: 'string', default: '0.3' },
      shards: { type: 'string', default: '8' },
      threads: { type: 'string' },
      seed: { type: 'string', default: '42' },
      json: { type: 'boolean', default: false },
      redis: { type: 'string' },
      consumers: { type: 'string' },
      concurrency: { type: 'string' },
      store: { type: 'string' },
    },
    strict: true,
  })
  const problems: string[] = []
  const viaRedis = values.redis !== undefined
  for (const flag of ['consumers', 'concurrency'] as const) {
    if (!viaRedis && values[flag] !== undefined) problems.push(`--${flag}: only with --redis (the in-memory demo has no consumer processes)`)
  }
  values.messages ??= viaRedis ? '100000' : '1000000'
  values.threads ??= viaRedis ? '0' : String(defaultDemoThreads())
  values.consumers ??= '2'
  values.concurrency ??= String(consumerDefaults.concurrency)
  const int = (name: string, min: number, max: number): number => {
    const raw = values[name as keyof typeof values] as string
    const value = Number(raw)
    if (!Number.isInteger(value) || value < min || value > max) problems.push(`--${name}: must be an integer from ${min} to ${max}, got ${JSON.stringify(raw)}`)
    return value
  }
  const messages = int('messages', 1, 100_000_000)
  const shards = int('shards', 1, 1024)
  const threads = int('threads', 0, 64)
  const seed = int('seed', 0, 2 ** 32 - 1)
  const dupRate = Number(values['dup-rate'])
  if (!(dupRate >= 0 && dupRate < 1)) problems.push(`--dup-rate: must be a number in [0, 1), got ${JSON.stringify(values['dup-rate'])}`)
  const consumers = int('consumers', 1, 64)
  const concurrency = int('concurrency', 1, 65_536)
  if (viaRedis && !/^rediss?:\/\//.test(values.redis!)) problems.push(`--redis: must be a redis:// or rediss:// URL, got ${JSON.stringify(values.redis)}`)
  const store = values.store === undefined ? undefined : parseStoreFlag(values.store)
  if (typeof store === 'string') problems.push(`--store: ${store}`)
  else if (store !== undefined && store.kind !== 'memory' && store.kind !== 'sqlite') problems.push('--store: the embedded demo runs on memory or sqlite:PATH')
  else if (store !== undefined && viaRedis) problems.push('--store: not with --redis (that demo runs on the Redis store)')
  if (problems.length > 0) {
    console.error(`idem demo: ${problems.join('\n           ')}`)
    return 2
  }
  const options = { messages, dupRate, shards, threads, seed, json: values.json }
  let summary
  if (viaRedis) {
    const { runBullDemo, DemoInterrupted } = await import('./demo-bullmq.js')
    try {
      summary = await runBullDemo({ ...options, redis: values.redis!, consumers, concurrency })
    } catch (error) {
      if (!(error instanceof DemoInterrupted)) throw error
      console.error(`idem demo: ${error.message}`)
      return 128 + constants.signals[error.signal]
    }
  } else summary = await runDemo({ ...options, ...(typeof store === 'object' ? { store } : {}) })
  console.log(values.json ? JSON.stringify(summary) : formatDemoSummary(summary))
  const ok = summary.effects === summary.uniqueKeys && summary.lost === 0 && summary.doubleEffects === 0
  if (!ok) console.error(`idem demo: FAILED: ${summary.effects} effects for ${summary.uniqueKeys} unique keys (lost ${summary.lost}, double ${summary.doubleEffects})`)
  return ok ? 0 : 1
}

let finished = false
// A promise that can never settle lets Node exit with code 0 and no output; say so and fail instead.
process.on('exit', () => {
  if (finished) return
  console.error('idem: stopped with work still pending (nothing left to wake it): this is a bug in idem, please report it')
  process.exitCode = 70
})

main(process.argv.slice(2)).then(
  (code) => {
    finished = true
    process.exitCode = code
  },
  (error: unknown) => {
    if (error instanceof IdemError) console.error(`idem: ${error.code}: ${error.message}`)
    else if (error instanceof TypeError && 'code' in error && String(error.code).startsWith('ERR_PARSE_ARGS')) console.error(`idem: ${error.message}\n\n${usage}`)
    else console.error(error)
    finished = true
    process.exitCode = 2
  },
)
