import { fork, type ChildProcess } from 'node:child_process'
import { randomUUID } from 'node:crypto'
import { fileURLToPath } from 'node:url'
import { Queue } from 'bullmq'
import { Redis } from 'ioredis'
import { afterAll, describe, expect, it } from 'vitest'
import { deleteKeysUnder } from '../../dist/src/store/redis/delete-keys.js'

const url = 'redis://127.0.0.1:6379'
const fixture = fileURLToPath(new URL('../support/fixtures/bullmq-consumer.mjs', import.meta.url))
const redis = new Redis(url)
const run = randomUUID()
const queueName = `idem-test-procs-${run}`
const prefix = `test:bullmq-procs:${run}:`
const effectsKey = `${prefix}effects`
const children: ChildProcess[] = []

afterAll(async () => {
  for (const child of children) if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL')
  const queue = new Queue(queueName, { connection: { url } })
  await queue.obliterate({ force: true }).catch(() => {})
  await queue.close()
  await deleteKeysUnder(redis, prefix)
  redis.disconnect()
})

function startConsumer(concurrency: number): Promise<ChildProcess> {
  const child = fork(fixture, [url, queueName, prefix, effectsKey, String(concurrency)], { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] })
  children.push(child)
  return new Promise((resolve, reject) => {
    child.once('message', () => resolve(child))
    child.once('exit', (code, signal) => reject(new Error(`consumer exited before it was ready (${signal ?? code})`)))
  })
}

function drain(child: ChildProcess): Promise<Record<string, number>> {
  return new Promise((resolve, reject) => {
    child.once('message', (stats) => resolve(stats as Record<string, number>))
    child.once('exit', (code) => reject(new Error(`consumer exited (${code}) without its stats`)))
    child.send('drain')
  })
}

describe('BullMQ consumers in two processes on one queue', () => {
  it('overlapping duplicate jobs, taken by both processes at once: exactly one effect per key, every job completed', async () => {
    const UNIQUE = 1000
    const COPIES = 4
    // Copies of a key land close together (shuffled within windows of 100 keys),
    // so both processes hold copies of the same key at the same moment.
    const keys: string[] = []
    for (let base = 0; base < UNIQUE; base += 100) {
      const window = Array.from({ length: 100 * COPIES }, (_, i) => `order-${base + (i % 100)}`)
      for (let i = window.length - 1; i > 0; i--) {
        const j = Math.floor(Math.random() * (i + 1))
        ;[window[i], window[j]] = [window[j], window[i]]
      }
      keys.push(...window)
    }
    const consumers = await Promise.all([startConsumer(64), startConsumer(64)])
    const queue = new Queue(queueName, { connection: { url } })
    await queue.addBulk(keys.map((key) => ({ name: 'order', data: { key } })))

    const deadline = Date.now() + 60_000
    let counts: Record<string, number> = {}
    for (;;) {
      counts = await queue.getJobCounts('wait', 'active', 'delayed', 'completed', 'failed')
      if (counts.completed + counts.failed === keys.length) break
      if (Date.now() > deadline) throw new Error(`jobs not settled within 60 s: ${JSON.stringify(counts)}`)
      await new Promise((resolve) => setTimeout(resolve, 100))
    }
    const [a, b] = await Promise.all(consumers.map(drain))
    await queue.close()

    const effects = await redis.hgetall(effectsKey)
    expect(Object.keys(effects)).toHaveLength(UNIQUE)
    expect(Object.entries(effects).filter(([, n]) => n !== '1')).toEqual([])
    expect(counts).toMatchObject({ completed: UNIQUE * COPIES, failed: 0 })
    expect(a.new + b.new).toBe(UNIQUE)
    expect(a.duplicates + b.duplicates).toBe(UNIQUE * (COPIES - 1))
    expect(a.completed).toBeGreaterThan(0)
    expect(b.completed).toBeGreaterThan(0)
    console.log(`two consumers: A ${a.completed} jobs (${a.new} new), B ${b.completed} jobs (${b.new} new); in-flight retries ${a.retriedInFlight + b.retriedInFlight}`)
  })
})
