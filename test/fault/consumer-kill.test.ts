/**
 * Fault test 1 of the Redis/BullMQ issue: three consumer processes on one
 * queue, one SIGKILLed and restarted at each tenth of the unique keys done
 * (9 kills, each consumer in turn) while 100,000 jobs with 30% duplicates go
 * through. Counts every effect per key in Redis at the end. Bounded by count
 * and progress: kills come at points of progress, not on a timer, and the run
 * fails only when jobs stop settling for STALL_MS. Commits ride the Worker's
 * connection, so a job completes without waiting for its commit's reply; at
 * the end, a fresh engine finds every key DONE: no kill left a completed job
 * without its record (Redis applied each commit before its completion).
 */
import { fork, type ChildProcess } from 'node:child_process'
import { randomUUID } from 'node:crypto'
import { fileURLToPath } from 'node:url'
import { Queue } from 'bullmq'
import { Redis } from 'ioredis'
import { afterAll, describe, expect, it } from 'vitest'
import { createEngine } from '../../dist/src/engine.js'
import { deleteKeysUnder } from '../../dist/src/store/redis/delete-keys.js'
import { FAULT_TEST_TIMEOUT_MS, untilDone } from '../support/progress.js'

const url = 'redis://127.0.0.1:6379'
const MESSAGES = 100_000
const UNIQUE = 70_000
const CONSUMERS = 3
const CONCURRENCY = 64
const LEASE_MS = 3_000
const LOCK_MS = 4_000
const KILLS = 9

const fixture = fileURLToPath(new URL('../support/fixtures/kill-consumer.mjs', import.meta.url))
const redis = new Redis(url)
const children = new Set<ChildProcess>()
const run = randomUUID()
const queueName = `kill-${run}`
const prefix = `t:${run}:`
const effectsKey = `${prefix}effects`

afterAll(async () => {
  for (const child of children) child.kill('SIGKILL')
  const queue = new Queue(queueName, { connection: { url } })
  await queue.obliterate({ force: true }).catch(() => {})
  await queue.close()
  await deleteKeysUnder(redis, prefix)
  redis.disconnect()
})

function startConsumer(): Promise<ChildProcess> {
  const child = fork(fixture, [url, queueName, prefix, effectsKey, String(CONCURRENCY), String(LEASE_MS), String(LOCK_MS)], { stdio: ['ignore', 'ignore', 'inherit', 'ipc'] })
  children.add(child)
  child.on('exit', () => children.delete(child))
  return new Promise((resolve, reject) => {
    child.once('message', (ready: { commitsRide: boolean }) => (ready.commitsRide ? resolve(child) : reject(new Error('commits do not ride the Worker connection'))))
    child.once('exit', (code, signal) => reject(new Error(`consumer exited before it was ready (${code ?? signal})`)))
  })
}

describe('BullMQ consumers SIGKILLed mid-run', () => {
  it(`three consumers, one killed and restarted at each tenth of the keys done (${KILLS} kills): lost 0, double effects within kills × in-flight per consumer`, async () => {
    const queue = new Queue(queueName, { connection: { url } })
    // 30% duplicates: resends of recent keys and late copies of old ones, as producers retry.
    const keys: string[] = []
    for (let i = 0; i < MESSAGES; i++) {
      if (i < UNIQUE) keys.push(`order-${i}`)
      else keys.push(`order-${i % 2 === 0 ? i - UNIQUE : Math.floor((i * 7919) % UNIQUE)}`)
    }
    for (let i = keys.length - 1; i > UNIQUE / 2; i--) {
      const j = UNIQUE / 2 + Math.floor(Math.random() * (i - UNIQUE / 2))
      ;[keys[i], keys[j]] = [keys[j], keys[i]]
    }
    const consumers = await Promise.all(Array.from({ length: CONSUMERS }, startConsumer))
    for (let i = 0; i < keys.length; i += 5_000) {
      await queue.addBulk(keys.slice(i, i + 5_000).map((key) => ({ name: 'order', data: { key }, opts: { attempts: 20, backoff: { type: 'fixed', delay: 200 }, removeOnComplete: true } })))
    }

    let kills = 0
    const started = Date.now()
    let counts: Record<string, number> = {}
    // Jobs not yet completed or failed; completed jobs are removed, so this only falls, and MESSAGES - left is the progress.
    const left = async (): Promise<number> => {
      counts = await queue.getJobCounts('wait', 'active', 'delayed', 'failed', 'prioritized', 'waiting-children')
      return Object.entries(counts).filter(([state]) => state !== 'failed').reduce((sum, [, n]) => sum + n, 0)
    }
    const progress = async () => MESSAGES - (await left())
    for (let k = 1; k <= KILLS; k++) {
      const at = Math.floor((k * UNIQUE) / (KILLS + 1))
      await untilDone({ what: `${at} keys done before kill ${k}`, done: async () => (await redis.hlen(effectsKey)) >= at, progress, pollMs: 50 })
      const victim = (k - 1) % CONSUMERS
      consumers[victim].kill('SIGKILL')
      kills++
      consumers[victim] = await startConsumer()
    }
    await untilDone({ what: 'every job settled', done: async () => (await left()) === 0, progress, pollMs: 500 })
    await queue.close()

    const effects = await redis.hgetall(effectsKey)
    const perKey = Object.values(effects).map(Number)
    const lost = UNIQUE - perKey.length
    const doubles = perKey.reduce((sum, n) => sum + (n - 1), 0)
    const bound = kills * CONCURRENCY
    console.log(
      `SIGKILL test: ${MESSAGES} jobs, ${UNIQUE} unique keys, ${kills} kills in ${((Date.now() - started) / 1000).toFixed(1)} s; ` +
        `effects ${perKey.reduce((a, b) => a + b, 0)}, lost ${lost}, double effects ${doubles} (bound ${kills} kills × ${CONCURRENCY} in flight = ${bound}), failed jobs ${counts.failed}`,
    )
    // Every job is completed and every key has had its effect: each key must now be DONE in the store.
    const check = await createEngine({ shards: 4, lru: { maxKeys: 0 }, store: { kind: 'redis', url, prefix } })
    let withoutRecord = 0
    try {
      for (let i = 0; i < UNIQUE; i += 5_000) {
        const outcomes = await check.processBatch(
          Array.from({ length: Math.min(5_000, UNIQUE - i) }, (_, j) => ({ key: `order-${i + j}` })),
          () => void withoutRecord++,
        )
        withoutRecord += outcomes.filter((o) => o.verdict === 'in-flight').length
      }
    } finally {
      await check.close()
    }
    console.log(`SIGKILL test: keys completed without a DONE record: ${withoutRecord} of ${UNIQUE}`)
    expect(kills).toBe(KILLS)
    expect(counts.failed).toBe(0)
    expect(lost).toBe(0)
    expect(doubles).toBeLessThanOrEqual(bound)
    expect(withoutRecord).toBe(0)
  }, FAULT_TEST_TIMEOUT_MS)
})
