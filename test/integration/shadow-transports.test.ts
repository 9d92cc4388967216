/**
 * Shadow rollout is log-only through every transport (DESIGN.md §5): each
 * message is settled as its handler says, as it would be without idem, and
 * the outcome says what enforce would have done. The three cases a user
 * reproduced against the old shadow mode, through BullMQ, Redis Streams and
 * the in-memory queue, on the real Redis:
 *   - a conflict: its handler runs and the job completes / the entry is acked
 *     (it was failed / dead-lettered);
 *   - a key in flight in another engine: its handler runs once and the message
 *     is done (it was redelivered and run again on every retry);
 *   - a duplicate whose run throws: retried like any failed handler, its
 *     error kept (it was acked as a duplicate and the error lost).
 */
import { randomUUID } from 'node:crypto'
import { Queue, type Job } from 'bullmq'
import { Redis } from 'ioredis'
import { afterAll, afterEach, describe, expect, it } from 'vitest'
import { createEngine, type Engine } from '../../dist/src/engine.js'
import { deleteKeysUnder } from '../../dist/src/store/redis/delete-keys.js'
import { createConsumer, type Consumer } from '../../dist/src/transport/bullmq/index.js'
import { MemoryQueue, consumeMemoryQueue } from '../../dist/src/transport/memory-queue.js'
import { createStreamConsumer, type StreamConsumer, type StreamEntry } from '../../dist/src/transport/redis-streams/index.js'
import { waitFor } from '../support/wait-for.js'

const url = 'redis://127.0.0.1:6379'
const connection = { host: '127.0.0.1', port: 6379 }
const redis = new Redis(url)
const engines: Engine[] = []
const closers: (() => Promise<unknown>)[] = []
const scopes: string[] = []
afterEach(async () => {
  for (const close of closers.splice(0).reverse()) await close()
  await Promise.all(engines.splice(0).map((e) => e.close({ timeoutMs: 1000 })))
  for (const scope of scopes.splice(0)) await deleteKeysUnder(redis, scope)
})
afterAll(() => redis.disconnect())

/** A shadow engine and an enforcing one on one fresh store; `hold(key)` makes the enforcing one hold `key` in flight until the returned function is called. */
async function setUp() {
  const scope = `test:shadow:${randomUUID()}`
  scopes.push(scope)
  const store = { kind: 'redis', url, prefix: `${scope}:idem:` } as const
  const shadow = await createEngine({ shards: 2, leaseMs: 200, lru: { maxKeys: 0 }, rollout: 'shadow', store })
  const other = await createEngine({ shards: 2, leaseMs: 200, lru: { maxKeys: 0 }, store })
  engines.push(shadow, other)
  const hold = async (key: string): Promise<() => void> => {
    let end!: () => void
    const held = new Promise<void>((resolve) => (end = resolve))
    void other.process({ key }, () => held)
    await waitFor('the other engine claimed', () => other.stats().totals.storeOperations >= 1)
    return end
  }
  // A settled key with fingerprint f1, so a message with f2 is a conflict and with f1 a duplicate.
  await other.process({ key: 'settled', fingerprint: 'f1' }, () => 'first')
  return { scope, shadow, hold }
}

/** The handler of every case: counts runs per label, and throws for the 'boom' ones. */
function handlerOf(labelOf: (delivery: any) => string) {
  const runs = new Map<string, number>()
  const handler = (delivery: unknown) => {
    const label = labelOf(delivery)
    runs.set(label, (runs.get(label) ?? 0) + 1)
    if (label === 'boom') throw new Error('the downstream API said no')
    return `ran ${label}`
  }
  return { runs, handler }
}

describe('shadow rollout through BullMQ', () => {
  it('conflict → completed; in flight elsewhere → run once and completed; a duplicate that throws → retried and failed with its error', async () => {
    const { shadow, hold } = await setUp()
    const end = await hold('busy')
    const q = new Queue(`idem-shadow-${randomUUID()}`, { connection })
    closers.push(() => q.obliterate({ force: true }).then(() => q.close()))
    type Data = { key: string; fp: string; label: string }
    const { runs, handler } = handlerOf((job: Job<Data>) => job.data.label)
    const c: Consumer<Data, string> = createConsumer<Data, string>({
      queue: q.name,
      connection,
      engine: shadow,
      handler,
      keyOf: (job) => job.data.key,
      fingerprintOf: (job) => job.data.fp,
    })
    closers.push(() => c.close())
    const conflict = await q.add('j', { key: 'settled', fp: 'f2', label: 'conflict' }, { attempts: 3 })
    const busy = await q.add('j', { key: 'busy', fp: 'f1', label: 'busy' }, { attempts: 3 })
    const boom = await q.add('j', { key: 'settled', fp: 'f1', label: 'boom' }, { attempts: 3, backoff: { type: 'fixed', delay: 50 } })
    await waitFor('three jobs settled', async () => {
      const counts = await q.getJobCounts('completed', 'failed')
      return counts.completed + counts.failed === 3
    }, 20_000)
    expect(await (await q.getJob(conflict.id!))!.getState()).toBe('completed')
    expect(await (await q.getJob(busy.id!))!.getState()).toBe('completed')
    const failed = (await q.getJob(boom.id!))!
    expect(await failed.getState()).toBe('failed')
    expect(failed.attemptsMade).toBe(3)
    expect(failed.failedReason).toContain('the downstream API said no')
    expect(Object.fromEntries(runs)).toEqual({ conflict: 1, busy: 1, boom: 3 })
    end()
  })
})

describe('shadow rollout through Redis Streams', () => {
  it('conflict → acked, not dead-lettered; in flight elsewhere → run once and acked; a duplicate that throws → redelivered, then dead-lettered with its error', async () => {
    const { scope, shadow, hold } = await setUp()
    const end = await hold('busy')
    const stream = `${scope}:s`
    const { runs, handler } = handlerOf((entry: StreamEntry) => entry.fields.label)
    const c: StreamConsumer<string> = createStreamConsumer<string>({
      stream,
      group: 'g',
      consumer: 'a',
      engine: shadow,
      handler,
      keyOf: (entry) => entry.fields.key,
      fingerprintOf: (entry) => entry.fields.fp,
      maxDeliveries: 3,
      count: 64,
      blockMs: 100,
      claimIdleMs: 400,
      reclaimIntervalMs: 50,
      retryDelayMs: 50,
      inFlightDelayMs: 50,
    })
    closers.push(() => c.close())
    await c.waitUntilReady()
    for (const [key, fp, label] of [['settled', 'f2', 'conflict'], ['busy', 'f1', 'busy'], ['settled', 'f1', 'boom']]) await redis.xadd(stream, '*', 'key', key, 'fp', fp, 'label', label)
    await waitFor('two acked and one dead-lettered', () => c.stats().acked === 2 && c.stats().deadLettered === 1, 20_000)
    const [letter] = (await redis.xrange(`${stream}:dead`, '-', '+')) as [string, string[]][]
    const fields = letter[1]
    expect(fields[fields.indexOf('code') + 1]).toBe('HANDLER_FAILED')
    expect(fields[fields.indexOf('message') + 1]).toContain('the downstream API said no')
    expect(Object.fromEntries(runs)).toEqual({ conflict: 1, busy: 1, boom: 3 })
    expect(c.stats()).toMatchObject({ acked: 2, deadLettered: 1, inFlight: 0 })
    end()
  })
})

describe('shadow rollout through the in-memory queue', () => {
  it('conflict → acked; in flight elsewhere → run once and acked; a duplicate that throws → retried, then failed with its error', async () => {
    const { shadow, hold } = await setUp()
    const end = await hold('busy')
    const queue = new MemoryQueue<string>({ maxAttempts: 3, retryDelayMs: 10 })
    queue.add({ key: 'settled', fingerprint: 'f2', payload: 'conflict' })
    queue.add({ key: 'busy', fingerprint: 'f1', payload: 'busy' })
    queue.add({ key: 'settled', fingerprint: 'f1', payload: 'boom' })
    const { runs, handler } = handlerOf((message: { payload: string }) => message.payload)
    await consumeMemoryQueue(queue, shadow, handler)
    expect(queue.acked).toBe(2)
    expect(queue.failed).toHaveLength(1)
    expect(queue.failed[0].message.payload).toBe('boom')
    expect(queue.failed[0].reason).toMatch(/^HANDLER_FAILED: .*the downstream API said no/)
    expect(queue.failed[0].attempts).toBe(3)
    expect(Object.fromEntries(runs)).toEqual({ conflict: 1, busy: 1, boom: 3 })
    end()
  })
})
