/**
 * The Redis Streams transport on the shared Redis (127.0.0.1:6379): every test
 * owns a random stream, group and store prefix and deletes its keys afterwards;
 * the database is never flushed. "Dead consumers" here are consumer names that
 * read entries with a raw XREADGROUP and never ack them; real processes killed
 * with SIGKILL are in redis-streams-kill.test.ts.
 */
import { randomUUID } from 'node:crypto'
import { Redis } from 'ioredis'
import { afterAll, afterEach, describe, expect, it } from 'vitest'
import { createEngine, type Engine } from '../../dist/src/engine.js'
import { ConfigError, ErrorCode, type IdemError } from '../../dist/src/errors.js'
import { createStreamConsumer, entryActionOf, EntryAction, type DeadLetter, type StreamConsumer, type StreamConsumerOptions, type StreamEntry } from '../../dist/src/transport/redis-streams/index.js'
import { deleteKeysUnder } from '../../dist/src/store/redis/delete-keys.js'
import { startProxy } from '../support/tcp-proxy.js'
import { waitFor } from '../support/wait-for.js'

const url = 'redis://127.0.0.1:6379'
const redis = new Redis(url)
const engines: Engine[] = []
const consumers: StreamConsumer<any>[] = []
const scopes: string[] = []
const cleanups: (() => Promise<void>)[] = []

/** A fresh stream, group and store prefix; every key of the test starts with `scope`. */
function names() {
  const scope = `test:streams:${randomUUID()}`
  scopes.push(scope)
  return { scope, stream: `${scope}:s`, group: 'g', prefix: `${scope}:idem:`, dead: `${scope}:s:dead` }
}

async function engine(prefix: string, options: Record<string, unknown> = {}): Promise<Engine> {
  const e = await createEngine({ shards: 4, leaseMs: 200, lru: { maxKeys: 0 }, ...options, store: { kind: 'redis', url, prefix } })
  engines.push(e)
  return e
}

/** Short delays so that retries and take-overs happen within a test. */
const fast = { count: 64, blockMs: 100, claimIdleMs: 400, reclaimIntervalMs: 50, retryDelayMs: 50, inFlightDelayMs: 50 }

function consumer<R>(options: StreamConsumerOptions<R>): StreamConsumer<R> {
  const c = createStreamConsumer<R>({ ...fast, ...options })
  consumers.push(c)
  return c
}

afterEach(async () => {
  await Promise.all(consumers.splice(0).map((c) => c.close()))
  await Promise.all(engines.splice(0).map((e) => e.close()))
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup()
  for (const scope of scopes.splice(0)) await deleteKeysUnder(redis, scope)
})
afterAll(() => redis.disconnect())

async function add(stream: string, entries: Record<string, string>[]): Promise<string[]> {
  const pipeline = redis.pipeline()
  for (const fields of entries) pipeline.xadd(stream, '*', ...Object.entries(fields).flat())
  return ((await pipeline.exec()) ?? []).map(([, id]) => id as string)
}

/** Entries still pending in the group (delivered, not acked). */
async function pending(stream: string, group: string): Promise<number> {
  const [count] = (await redis.xpending(stream, group)) as [number]
  return count
}

/** Every pending entry: [id, consumer, idle ms, deliveries]. */
async function pendingEntries(stream: string, group: string): Promise<[string, string, number, number][]> {
  return (await redis.xpending(stream, group, '-', '+', 1000)) as [string, string, number, number][]
}

async function deadLetters(stream: string): Promise<Record<string, string>[]> {
  const entries = (await redis.xrange(stream, '-', '+')) as [string, string[]][]
  return entries.map(([, pairs]) => {
    const fields: Record<string, string> = {}
    for (let i = 0; i < pairs.length; i += 2) fields[pairs[i]] = pairs[i + 1]
    return fields
  })
}

/** A handler that counts runs per key. */
function counter() {
  const runs = new Map<string, number>()
  const handler = (entry: StreamEntry) => {
    runs.set(entry.fields.key, (runs.get(entry.fields.key) ?? 0) + 1)
    return 'ok'
  }
  const doubles = () => [...runs.values()].filter((n) => n > 1).length
  return { runs, handler, doubles }
}

const byKey = (entry: StreamEntry) => entry.fields.key

describe('reading and acking', () => {
  it('creates the group and the stream if missing, runs each key once, acks every entry (duplicates too)', async () => {
    const n = names()
    const e = await engine(n.prefix)
    const c = counter()
    const consumerA = consumer({ stream: n.stream, group: n.group, consumer: 'a', engine: e, handler: c.handler, keyOf: byKey })
    await consumerA.waitUntilReady()
    expect(await redis.type(n.stream)).toBe('stream')
    const groups = (await redis.xinfo('GROUPS', n.stream)) as unknown[][]
    expect(groups.length).toBe(1)
    await add(n.stream, Array.from({ length: 300 }, (_, i) => ({ key: `k-${i % 100}`, payload: `p${i}` })))
    await waitFor('300 entries acked', () => consumerA.stats().acked === 300)
    expect(await pending(n.stream, n.group)).toBe(0)
    expect(c.runs.size).toBe(100)
    expect(c.doubles()).toBe(0)
    const stats = consumerA.stats()
    expect(stats).toMatchObject({ read: 300, acked: 300, new: 100, duplicates: 200, deadLettered: 0, inFlight: 0, retried: 0, holding: 0 })
    expect(await redis.exists(n.dead)).toBe(0)
  })

  it('joins an existing group (BUSYGROUP is fine) and, with the default startId 0, takes entries added before the group existed', async () => {
    const n = names()
    await add(n.stream, [{ key: 'early' }])
    const e = await engine(n.prefix)
    const c = counter()
    const first = consumer({ stream: n.stream, group: n.group, consumer: 'a', engine: e, handler: c.handler, keyOf: byKey })
    const second = consumer({ stream: n.stream, group: n.group, consumer: 'b', engine: e, handler: c.handler, keyOf: byKey })
    await Promise.all([first.waitUntilReady(), second.waitUntilReady()])
    await waitFor('the early entry', () => c.runs.get('early') === 1)
    await waitFor('its ack', async () => (await pending(n.stream, n.group)) === 0)
  })

  it("startId '$' makes a new group skip what the stream already holds", async () => {
    const n = names()
    await add(n.stream, [{ key: 'old' }])
    const e = await engine(n.prefix)
    const c = counter()
    const consumerA = consumer({ stream: n.stream, group: n.group, consumer: 'a', engine: e, handler: c.handler, keyOf: byKey, startId: '$' })
    await consumerA.waitUntilReady()
    await add(n.stream, [{ key: 'new' }])
    await waitFor('the new entry', () => c.runs.get('new') === 1)
    expect(c.runs.has('old')).toBe(false)
  })

  it('passes the handler the entry (id, fields, deliveries) and its claim; takes its connection from an ioredis client it never closes', async () => {
    const n = names()
    const e = await engine(n.prefix)
    const client = new Redis(url)
    cleanups.push(async () => client.disconnect())
    const seen: { entry: StreamEntry; token?: string }[] = []
    const c = consumer({
      stream: n.stream,
      group: n.group,
      consumer: 'a',
      engine: e,
      connection: client,
      keyOf: byKey,
      handler: (entry, context) => void seen.push({ entry, token: context.claim?.token }),
    })
    await c.waitUntilReady()
    const [id] = await add(n.stream, [{ key: 'k1', amount: '42' }])
    await waitFor('the entry', () => c.stats().acked === 1)
    expect(seen[0].entry).toEqual({ id, fields: { key: 'k1', amount: '42' }, deliveries: 1 })
    expect(typeof seen[0].token).toBe('string')
    await c.close()
    expect(client.status).toBe('ready')
    expect(await client.ping()).toBe('PONG')
  })
})

describe('verdicts', () => {
  it('maps each outcome to one action', () => {
    const error = (code: string) => ({ code, message: code }) as IdemError
    const max = 3
    expect(entryActionOf({ key: 'k', verdict: 'new' }, 1, max)).toBe(EntryAction.ACK)
    expect(entryActionOf({ key: 'k', verdict: 'new', error: error('RESULT_TOO_LARGE') }, 1, max)).toBe(EntryAction.ACK)
    expect(entryActionOf({ key: 'k', verdict: 'new', error: error('RESULT_NOT_SERIALIZABLE') }, 1, max)).toBe(EntryAction.ACK)
    expect(entryActionOf({ key: 'k', verdict: 'new', error: error('HANDLER_FAILED') }, 2, max)).toBe(EntryAction.RETRY)
    expect(entryActionOf({ key: 'k', verdict: 'new', error: error('LEASE_LOST') }, 1, max)).toBe(EntryAction.RETRY)
    expect(entryActionOf({ key: 'k', verdict: 'new', error: error('HANDLER_FAILED') }, 3, max)).toBe(EntryAction.DEAD_LETTER)
    expect(entryActionOf({ key: 'k', verdict: 'new', error: error('LEASE_LOST') }, 4, max)).toBe(EntryAction.DEAD_LETTER)
    // The handler ran, its commit did not reach the store: no delivery used, even on the last one.
    expect(entryActionOf({ key: 'k', verdict: 'new', error: error('STORE_FAILED') }, 3, max)).toBe(EntryAction.WAIT)
    expect(entryActionOf({ key: 'k', verdict: 'new', error: error('WORKER_DIED') }, 3, max)).toBe(EntryAction.WAIT)
    expect(entryActionOf({ key: 'k', verdict: 'new', error: error('ACTOR_FAILED') }, 1, max)).toBe(EntryAction.WAIT)
    expect(entryActionOf({ key: 'k', verdict: 'duplicate' }, 9, max)).toBe(EntryAction.ACK)
    expect(entryActionOf({ key: 'k', verdict: 'in-flight', error: error('IN_FLIGHT') }, 9, max)).toBe(EntryAction.WAIT)
    // A thread death counts as a delivery: an entry whose handler module kills its thread ends dead-lettered.
    expect(entryActionOf({ key: 'k', verdict: 'in-flight', error: error('WORKER_DIED') }, 1, max)).toBe(EntryAction.RETRY)
    expect(entryActionOf({ key: 'k', verdict: 'in-flight', error: error('WORKER_DIED') }, 3, max)).toBe(EntryAction.DEAD_LETTER)
    expect(entryActionOf({ key: 'k', verdict: 'conflict', error: error('CONFLICT') }, 1, max)).toBe(EntryAction.DEAD_LETTER)
    expect(entryActionOf({ key: 'k', verdict: 'invalid', error: error('INVALID_KEY') }, 1, max)).toBe(EntryAction.DEAD_LETTER)
  })

  it('in-flight: not acked while another owner holds the key, tried again after inFlightDelayMs without using a delivery, then acked as a duplicate', async () => {
    const n = names()
    const owner = await engine(n.prefix, { leaseMs: 5000 })
    let release!: () => void
    const holding = owner.process({ key: 'busy' }, () => new Promise<string>((resolve) => (release = () => resolve('first'))))
    await waitFor('the owner to hold the key', () => release !== undefined)

    const e = await engine(n.prefix, { leaseMs: 5000 })
    const c = counter()
    const streamConsumer = consumer({ stream: n.stream, group: n.group, consumer: 'a', engine: e, handler: c.handler, keyOf: byKey, claimIdleMs: 5000, inFlightDelayMs: 100 })
    await streamConsumer.waitUntilReady()
    await add(n.stream, [{ key: 'busy' }, { key: 'free' }])
    await waitFor('two in-flight verdicts', () => streamConsumer.stats().inFlight >= 2)
    expect(await pending(n.stream, n.group)).toBe(1)
    // Three tries so far, and the count Redis keeps still says one delivery (or none, while it waits).
    const [[, , , deliveries]] = await pendingEntries(n.stream, n.group)
    expect(deliveries).toBeLessThanOrEqual(1)
    release()
    expect((await holding).verdict).toBe('new')
    await waitFor('the duplicate ack', async () => (await pending(n.stream, n.group)) === 0)
    await streamConsumer.close() // its batches have settled, so its stats are final
    expect(c.runs.has('busy')).toBe(false)
    expect(c.runs.get('free')).toBe(1)
    expect(streamConsumer.stats()).toMatchObject({ acked: 2, new: 1, duplicates: 1, deadLettered: 0, retried: 0 })
  })

  it('handler errors: taken up again as the next delivery, then dead-lettered on delivery maxDeliveries with HANDLER_FAILED, the fields and the count', async () => {
    const n = names()
    const e = await engine(n.prefix)
    const calls: Record<string, number[]> = {}
    const letters: DeadLetter[] = []
    const c = consumer({
      stream: n.stream,
      group: n.group,
      consumer: 'a',
      engine: e,
      keyOf: byKey,
      maxDeliveries: 3,
      handler: (entry) => {
        ;(calls[entry.fields.key] ??= []).push(entry.deliveries)
        if (entry.fields.key === 'poison') throw new Error('cannot charge this card')
        if (entry.fields.key === 'flaky' && entry.deliveries === 1) throw new Error('timeout talking to the bank')
        return 'ok'
      },
    })
    c.on('deadLetter', (letter) => letters.push(letter))
    await c.waitUntilReady()
    const [poisonId] = await add(n.stream, [{ key: 'poison', amount: '7' }, { key: 'flaky' }, { key: 'fine' }])
    await waitFor('the poison entry dead-lettered', () => c.stats().deadLettered === 1)
    await waitFor('nothing pending', async () => (await pending(n.stream, n.group)) === 0)
    await c.close() // its batches have settled, so its stats are final
    expect(calls.poison).toEqual([1, 2, 3])
    expect(calls.flaky).toEqual([1, 2])
    expect(calls.fine).toEqual([1])
    const [letter] = await deadLetters(n.dead)
    expect(letter).toMatchObject({ id: poisonId, code: 'HANDLER_FAILED', deliveries: '3', key: 'poison', group: n.group, consumer: 'a' })
    expect(letter.message).toContain('cannot charge this card')
    expect(letter.message).toContain('delivery 3 of maxDeliveries 3')
    expect(JSON.parse(letter.fields)).toEqual({ key: 'poison', amount: '7' })
    expect(letters).toHaveLength(1)
    expect(letters[0]).toMatchObject({ id: poisonId, code: 'HANDLER_FAILED', deliveries: 3 })
    expect(c.stats()).toMatchObject({ acked: 2, new: 2, retried: 3, deadLettered: 1 })
  })

  it('conflict: an entry whose key is settled with another fingerprint is dead-lettered at once with CONFLICT', async () => {
    const n = names()
    const e = await engine(n.prefix)
    const c = counter()
    const streamConsumer = consumer({ stream: n.stream, group: n.group, consumer: 'a', engine: e, handler: c.handler, keyOf: byKey, fingerprintOf: (entry) => entry.fields.digest })
    await streamConsumer.waitUntilReady()
    await add(n.stream, [{ key: 'order-1', digest: 'aaa' }])
    await waitFor('the first ack', () => streamConsumer.stats().acked === 1)
    const [secondId] = await add(n.stream, [{ key: 'order-1', digest: 'bbb' }])
    await waitFor('the dead letter', () => streamConsumer.stats().deadLettered === 1)
    const [letter] = await deadLetters(n.dead)
    expect(letter).toMatchObject({ id: secondId, code: 'CONFLICT', deliveries: '1', key: 'order-1' })
    expect(letter.message).toContain('aaa')
    expect(await pending(n.stream, n.group)).toBe(0)
    expect(c.runs.get('order-1')).toBe(1)
  })
})

describe('bad input fails only its entry', () => {
  it('keyOf that throws → INVALID_MESSAGE; no key, an empty or an over-long key → INVALID_KEY; the other entries are processed', async () => {
    const n = names()
    const e = await engine(n.prefix)
    const c = counter()
    const streamConsumer = consumer({
      stream: n.stream,
      group: n.group,
      consumer: 'a',
      engine: e,
      handler: c.handler,
      keyOf: (entry) => {
        if (entry.fields.explode !== undefined) throw new Error('no parse')
        return entry.fields.key
      },
    })
    await streamConsumer.waitUntilReady()
    const ids = await add(n.stream, [{ key: 'good-1' }, { explode: 'yes' }, { other: 'no key field' }, { key: '' }, { key: 'x'.repeat(1025) }, { key: 'good-2' }])
    await waitFor('four dead letters', () => streamConsumer.stats().deadLettered === 4)
    await waitFor('nothing pending', async () => (await pending(n.stream, n.group)) === 0)
    await streamConsumer.close() // its batches have settled, so its stats are final
    const letters = await deadLetters(n.dead)
    const byId = new Map(letters.map((l) => [l.id, l]))
    expect(byId.get(ids[1])).toMatchObject({ code: 'INVALID_MESSAGE', deliveries: '1' })
    expect(byId.get(ids[1])!.message).toContain('keyOf threw for entry')
    expect(byId.get(ids[1])!.message).toContain('no parse')
    expect(byId.get(ids[1])!.key).toBeUndefined()
    expect(byId.get(ids[2])).toMatchObject({ code: 'INVALID_KEY' })
    expect(JSON.parse(byId.get(ids[2])!.fields)).toEqual({ other: 'no key field' })
    expect(byId.get(ids[3])).toMatchObject({ code: 'INVALID_KEY' })
    expect(byId.get(ids[4])).toMatchObject({ code: 'INVALID_KEY' })
    expect([...c.runs.keys()].sort()).toEqual(['good-1', 'good-2'])
    expect(streamConsumer.stats()).toMatchObject({ acked: 2, deadLettered: 4 })
  })

  it('a stream deleted while the consumer runs: the group is created again (an error event says why) and reading goes on', async () => {
    const n = names()
    const e = await engine(n.prefix)
    const c = counter()
    const errors: IdemError[] = []
    const streamConsumer = consumer({ stream: n.stream, group: n.group, consumer: 'a', engine: e, handler: c.handler, keyOf: byKey })
    streamConsumer.on('error', (error) => errors.push(error))
    await streamConsumer.waitUntilReady()
    await add(n.stream, [{ key: 'before' }])
    await waitFor('the first entry', () => streamConsumer.stats().acked === 1)
    await redis.del(n.stream)
    await waitFor('the NOGROUP error', () => errors.some((error) => error.message.includes('NOGROUP')))
    await waitFor('the group again', async () => (await redis.exists(n.stream)) === 1)
    await add(n.stream, [{ key: 'after' }])
    await waitFor('the entry added after', () => c.runs.get('after') === 1)
    expect(errors.every((error) => error.code === ErrorCode.TRANSPORT_FAILED)).toBe(true)
  })

  it('a key that holds something other than a stream: waitUntilReady rejects with TRANSPORT_FAILED', async () => {
    const n = names()
    await redis.set(n.stream, 'not a stream')
    const e = await engine(n.prefix)
    const c = consumer({ stream: n.stream, group: n.group, consumer: 'a', engine: e, handler: () => 1, keyOf: byKey })
    await expect(c.waitUntilReady()).rejects.toMatchObject({ code: ErrorCode.TRANSPORT_FAILED, message: expect.stringContaining('WRONGTYPE') })
  })
})

describe('taking over pending entries', () => {
  it("a dead consumer's entries are taken over after claimIdleMs and checked against the store: committed keys acked as duplicates, the rest run once", async () => {
    const n = names()
    const e = await engine(n.prefix)
    await add(n.stream, Array.from({ length: 40 }, (_, i) => ({ key: `k-${i}` })))
    await redis.xgroup('CREATE', n.stream, n.group, '0')
    // The ghost reads every entry, commits the first 20 keys (its effects happened), then dies without acking any.
    // The entries' idle clock is the server's and starts at this read, not when the ghost dies: so the stamp is
    // taken before it. Whatever the ghost and the survivor's start then cost on a loaded machine, no take-over
    // can come earlier than readAt + claimIdleMs, and the survivor's first one is polled for, not slept for.
    const readAt = Date.now()
    await redis.xreadgroup('GROUP', n.group, 'ghost', 'COUNT', 100, 'STREAMS', n.stream, '>')
    const ghostEngine = await engine(n.prefix)
    const ghostRuns = new Set<string>()
    await ghostEngine.processBatch(Array.from({ length: 20 }, (_, i) => ({ key: `k-${i}` })), (m) => void ghostRuns.add(m.key))

    const c = counter()
    const survivor = consumer({ stream: n.stream, group: n.group, consumer: 'b', engine: e, handler: c.handler, keyOf: byKey, claimIdleMs: 600 })
    await survivor.waitUntilReady()
    await waitFor('the first take-over', () => survivor.stats().reclaimed > 0)
    expect(Date.now() - readAt).toBeGreaterThanOrEqual(600) // not taken over while younger than claimIdleMs
    await waitFor('all 40 settled', async () => (await pending(n.stream, n.group)) === 0)
    await survivor.close() // its batches have settled, so its stats are final
    expect(survivor.stats()).toMatchObject({ reclaimed: 40, acked: 40, duplicates: 20, new: 20 })
    expect([...c.runs.keys()].sort()).toEqual(Array.from({ length: 20 }, (_, i) => `k-${i + 20}`).sort())
    expect(c.doubles()).toBe(0)
    const consumersInfo = (await redis.xinfo('CONSUMERS', n.stream, n.group)) as unknown[][]
    const ghost = consumersInfo.map((fields) => Object.fromEntries(chunk(fields))).find((info) => info.name === 'ghost')
    expect(ghost?.pending).toBe(0)
  })

  it('an entry delivered more than maxDeliveries times with no outcome: dead-lettered DELIVERIES_EXHAUSTED without running, unless its key is done (then acked)', async () => {
    const n = names()
    const e = await engine(n.prefix)
    const [doneId, stuckId] = await add(n.stream, [{ key: 'done-key' }, { key: 'stuck-key' }])
    await redis.xgroup('CREATE', n.stream, n.group, '0')
    await redis.xreadgroup('GROUP', n.group, 'ghost', 'COUNT', 10, 'STREAMS', n.stream, '>')
    // As if three consumers had died holding them: the take-over makes it delivery 4 of 3.
    await redis.xclaim(n.stream, n.group, 'ghost', 0, doneId, stuckId, 'RETRYCOUNT', 3, 'JUSTID')
    await e.process({ key: 'done-key' }, () => 'ran before the crash')
    const c = counter()
    const survivor = consumer({ stream: n.stream, group: n.group, consumer: 'b', engine: e, handler: c.handler, keyOf: byKey, maxDeliveries: 3, claimIdleMs: 200 })
    await survivor.waitUntilReady()
    await waitFor('both settled', async () => (await pending(n.stream, n.group)) === 0)
    await survivor.close() // its batches have settled, so its stats are final
    expect(c.runs.size).toBe(0)
    const [letter] = await deadLetters(n.dead)
    expect(letter).toMatchObject({ id: stuckId, code: 'DELIVERIES_EXHAUSTED', deliveries: '4', key: 'stuck-key' })
    expect(survivor.stats()).toMatchObject({ reclaimed: 2, duplicates: 1, deadLettered: 1 })
  })

  it('a batch that runs longer than claimIdleMs is touched, so a second consumer never takes it over', async () => {
    const n = names()
    const e = await engine(n.prefix)
    const runs: string[] = []
    const slow = consumer({
      stream: n.stream,
      group: n.group,
      consumer: 'slow',
      engine: e,
      keyOf: byKey,
      // Touched every claimIdleMs/3: a loaded machine may stall the event loop for a few hundred ms, which must not pass for a dead consumer here.
      claimIdleMs: 1500,
      handler: async (entry) => {
        runs.push(entry.fields.key)
        await new Promise((resolve) => setTimeout(resolve, 4000))
      },
    })
    await slow.waitUntilReady()
    await add(n.stream, [{ key: 'long-1' }, { key: 'long-2' }])
    await waitFor('the slow handlers to start', () => runs.length === 2)
    const other = consumer({ stream: n.stream, group: n.group, consumer: 'other', engine: await engine(n.prefix), handler: (entry) => void runs.push(entry.fields.key), keyOf: byKey, claimIdleMs: 1500 })
    await other.waitUntilReady()
    await waitFor('both acked', async () => (await pending(n.stream, n.group)) === 0 && slow.stats().acked === 2)
    expect(other.stats().reclaimed).toBe(0)
    expect(runs.sort()).toEqual(['long-1', 'long-2'])
  })

  it('entries deleted from the stream while pending are counted and dropped from the pending list, not run', async () => {
    const n = names()
    const e = await engine(n.prefix)
    const [gone, kept] = await add(n.stream, [{ key: 'trimmed' }, { key: 'kept' }])
    await redis.xgroup('CREATE', n.stream, n.group, '0')
    await redis.xreadgroup('GROUP', n.group, 'ghost', 'COUNT', 10, 'STREAMS', n.stream, '>')
    await redis.xdel(n.stream, gone)
    const c = counter()
    const survivor = consumer({ stream: n.stream, group: n.group, consumer: 'b', engine: e, handler: c.handler, keyOf: byKey, claimIdleMs: 200 })
    await waitFor('both gone from the pending list', async () => (await pending(n.stream, n.group)) === 0)
    await survivor.close() // its batches have settled, so its stats are final
    expect(survivor.stats()).toMatchObject({ deletedWhilePending: 1, reclaimed: 1, acked: 1 })
    expect([...c.runs.keys()]).toEqual(['kept'])
    expect((await redis.xrange(n.stream, '-', '+')).map(([id]) => id)).toEqual([kept]) // acked, not deleted: the consumer removes nothing from the stream
  })
})

describe('close', () => {
  it('ends a blocked read at once (CLIENT UNBLOCK), not after blockMs', async () => {
    const n = names()
    const e = await engine(n.prefix)
    const c = consumer({ stream: n.stream, group: n.group, consumer: 'a', engine: e, handler: () => 1, keyOf: byKey, blockMs: 20_000 })
    await c.waitUntilReady()
    await new Promise((resolve) => setTimeout(resolve, 200))
    const started = Date.now()
    await c.close()
    // Far below the 20 s read, with room for a loaded machine.
    expect(Date.now() - started).toBeLessThan(10_000)
  })

  it('waits for the batch being worked on, acks what is durable, leaves the rest pending, reads nothing more', async () => {
    const n = names()
    const owner = await engine(n.prefix, { leaseMs: 10_000 })
    let releaseOwner!: () => void
    const held = owner.process({ key: 'held-elsewhere' }, () => new Promise<void>((resolve) => (releaseOwner = resolve)))
    await waitFor('the owner to hold its key', () => releaseOwner !== undefined)

    const e = await engine(n.prefix, { leaseMs: 10_000 })
    let started = 0
    const c = consumer({
      stream: n.stream,
      group: n.group,
      consumer: 'a',
      engine: e,
      keyOf: byKey,
      claimIdleMs: 10_000,
      inFlightDelayMs: 5_000,
      handler: async () => {
        started++
        await new Promise((resolve) => setTimeout(resolve, 500))
      },
    })
    await c.waitUntilReady()
    await add(n.stream, [{ key: 'slow-1' }, { key: 'slow-2' }, { key: 'held-elsewhere' }])
    await waitFor('the handlers to start', () => started === 2)
    try {
      const closing = c.close()
      // close() is waiting for the batch (its handlers take 500 ms): nothing added now is read.
      await new Promise((resolve) => setTimeout(resolve, 100))
      await add(n.stream, [{ key: 'after-close' }])
      await closing
      expect(c.stats()).toMatchObject({ read: 3, acked: 2, inFlight: 1, holding: 0 })
      const left = await pendingEntries(n.stream, n.group)
      expect(left.map(([, consumerName]) => consumerName)).toEqual(['a'])
      const [group] = ((await redis.xinfo('GROUPS', n.stream)) as unknown[][]).map((fields) => Object.fromEntries(chunk(fields)))
      expect(group.lag).toBe(1) // after-close was never read
    } finally {
      releaseOwner()
      await held
    }
  })
})

describe('engine closed under the consumer', () => {
  it('reports ENGINE_CLOSED, stops, and leaves the entries it could not run pending', async () => {
    const n = names()
    const e = await engine(n.prefix)
    const errors: IdemError[] = []
    const c = consumer({ stream: n.stream, group: n.group, consumer: 'a', engine: e, handler: () => 1, keyOf: byKey })
    c.on('error', (error) => errors.push(error))
    await c.waitUntilReady()
    await e.close()
    await add(n.stream, [{ key: 'k1' }, { key: 'k2' }])
    await waitFor('the ENGINE_CLOSED error', () => errors.some((error) => error.code === ErrorCode.ENGINE_CLOSED))
    await c.close()
    expect(c.stats()).toMatchObject({ acked: 0, holding: 0 })
    expect(await pending(n.stream, n.group)).toBe(2)
  })
})

describe('transport faults', () => {
  it('a commit cut off from the store: the entry is not acked and uses no delivery; once the store is back it is acked as a duplicate, one effect', async () => {
    const n = names()
    const proxy = await startProxy(6379)
    cleanups.push(() => proxy.close())
    // Only the store goes through the proxy; the stream is read directly.
    const e = await createEngine({ shards: 1, leaseMs: 2000, lru: { maxKeys: 0 }, store: { kind: 'redis', url: `redis://127.0.0.1:${proxy.port}`, prefix: n.prefix, commandTimeoutMs: 100, retries: 0 } })
    engines.push(e)
    const runs: string[] = []
    const c = consumer({
      stream: n.stream,
      group: n.group,
      consumer: 'a',
      engine: e,
      connection: url,
      keyOf: byKey,
      maxDeliveries: 1,
      claimIdleMs: 2000,
      inFlightDelayMs: 100,
      handler: (entry) => {
        runs.push(entry.fields.key)
        proxy.drop() // the effect happened; its commit will not get through
      },
    })
    await c.waitUntilReady()
    await add(n.stream, [{ key: 'k1' }])
    await waitFor('the entry left to wait', () => c.stats().inFlight >= 1)
    expect(await pending(n.stream, n.group)).toBe(1)
    expect(c.stats()).toMatchObject({ acked: 0, deadLettered: 0 })
    proxy.heal()
    await waitFor('the ack', async () => (await pending(n.stream, n.group)) === 0)
    await c.close() // its batches have settled, so its stats are final
    expect(runs).toEqual(['k1'])
    expect(c.stats()).toMatchObject({ acked: 1, new: 0, duplicates: 1, deadLettered: 0 })
  })

  it('reads and acks through live connections reset under it 5 times: every entry settled once; an error it reports is a TRANSPORT_FAILED event (ioredis resends most commands, so there may be none)', async () => {
    const n = names()
    const proxy = await startProxy(6379)
    cleanups.push(() => proxy.close())
    const e = await engine(n.prefix)
    const c = counter()
    const errors: IdemError[] = []
    const streamConsumer = consumer({ stream: n.stream, group: n.group, consumer: 'a', engine: e, handler: c.handler, keyOf: byKey, connection: `redis://127.0.0.1:${proxy.port}` })
    streamConsumer.on('error', (error) => errors.push(error))
    await streamConsumer.waitUntilReady()
    for (let round = 0; round < 5; round++) {
      await add(n.stream, Array.from({ length: 200 }, (_, i) => ({ key: `r${round}-${i}` })))
      await new Promise((resolve) => setTimeout(resolve, 30))
      // Each reset must cut live connections: ioredis takes a moment to reconnect after the one before.
      await waitFor('the consumer to be connected again', () => proxy.connections() > 0)
      proxy.resetAll()
    }
    await waitFor('all 1,000 settled', async () => (await pending(n.stream, n.group)) === 0 && c.runs.size === 1000, 20_000)
    await streamConsumer.close() // its batches have settled, so its stats are final
    expect(c.doubles()).toBe(0)
    expect(errors.every((error) => error.code === ErrorCode.TRANSPORT_FAILED)).toBe(true)
    expect(streamConsumer.stats().transportErrors).toBe(errors.length)
  })
})

describe('options', () => {
  const base = async () => {
    const n = names()
    return { stream: n.stream, group: 'g', consumer: 'a', engine: await engine(n.prefix, { leaseMs: 1000 }), handler: () => 1, keyOf: byKey }
  }
  const problem = async (overrides: Record<string, unknown>, message: string) => {
    const options = { ...(await base()), ...overrides }
    let thrown: unknown
    try {
      createStreamConsumer(options as StreamConsumerOptions)
    } catch (error) {
      thrown = error
    }
    expect(thrown).toBeInstanceOf(ConfigError)
    expect((thrown as ConfigError).problems).toContain(message)
  }

  it('names each bad field in one ConfigError', async () => {
    await problem({ stream: '' }, 'stream: must be a non-empty string, got ""')
    await problem({ group: 7 }, 'group: must be a non-empty string, got 7')
    await problem({ consumer: undefined }, 'consumer: must be a non-empty string, got undefined')
    await problem({ engine: {} }, 'engine: must be an idem Engine (from createEngine), got {}')
    await problem({ handler: 'x' }, 'handler: must be a function (entry, context) => result, got "x"')
    await problem({ keyOf: undefined }, 'keyOf: must be a function of the entry ({ id, fields, deliveries }), got undefined')
    await problem({ fingerprintOf: 1 }, 'fingerprintOf: must be a function of the entry, got 1')
    await problem({ namespaceOf: null }, 'namespaceOf: must be a function of the entry, got null')
    await problem({ connection: 'http://x' }, 'connection: must be a redis:// or rediss:// URL, got "http://x"')
    await problem({ connection: {} }, 'connection: must be a redis:// URL or an ioredis Redis client, got {}')
    await problem({ count: 0 }, 'count: must be an integer from 1 to 65536, got 0')
    await problem({ batchesInFlight: 1.5 }, 'batchesInFlight: must be an integer from 1 to 64, got 1.5')
    await problem({ blockMs: 0 }, 'blockMs: must be an integer from 1 to 2147483647, got 0')
    await problem({ claimIdleMs: 500 }, "claimIdleMs: must be at least the engine's leaseMs (1000), as a dead consumer's claims lapse only after leaseMs, so its entries taken over sooner would find their keys in flight, got 500")
    await problem({ reclaimIntervalMs: 5 }, 'reclaimIntervalMs: must be an integer from 10 to 2147483647, got 5')
    await problem({ maxDeliveries: 0 }, 'maxDeliveries: must be an integer from 1 to 1000000, got 0')
    await problem({ claimIdleMs: 2000, retryDelayMs: 3000 }, 'retryDelayMs: must be at most claimIdleMs (2000), got 3000')
    await problem({ claimIdleMs: 2000, inFlightDelayMs: 2001 }, 'inFlightDelayMs: must be at most claimIdleMs (2000), got 2001')
    await problem({ stream: 's', deadLetterStream: 's' }, 'deadLetterStream: must be other than stream ("s"), got "s"')
    await problem({ startId: 'latest' }, `startId: must be '0', '$' or a stream id like '1718000000000-0', got "latest"`)
    await problem({ concurrency: 5 }, 'concurrency: must be left out (not an option of createStreamConsumer; known: stream, mode, group, consumer, engine, handler, keyOf, fingerprintOf, namespaceOf, connection, count, batchesInFlight, blockMs, claimIdleMs, reclaimIntervalMs, maxDeliveries, retryDelayMs, inFlightDelayMs, deadLetterStream, startId), got 5')
  })

  it('needs a connection when the engine store names no single Redis', async () => {
    const memoryEngine = await createEngine({ shards: 1 })
    engines.push(memoryEngine)
    const options = { ...(await base()), engine: memoryEngine }
    expect(() => createStreamConsumer(options)).toThrow("connection: must be given, as the engine's store (memory) names no single Redis to read the stream from, got undefined")
  })

  it('defaults: claimIdleMs is max(60 s, 2 × leaseMs), the dead-letter stream is `${stream}:dead`', async () => {
    const options = await base()
    const c = createStreamConsumer({ ...options, engine: await engine(names().prefix, { leaseMs: 45_000 }) })
    consumers.push(c)
    expect(c.config).toMatchObject({ claimIdleMs: 90_000, deadLetterStream: `${options.stream}:dead`, count: 1024, batchesInFlight: 8, maxDeliveries: 5, startId: '0' })
  })
})

function chunk(fields: unknown[]): [string, unknown][] {
  const pairs: [string, unknown][] = []
  for (let i = 0; i < fields.length; i += 2) pairs.push([fields[i] as string, fields[i + 1]])
  return pairs
}
