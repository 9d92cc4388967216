/**
 * The Redis Streams transport in owned mode on the shared Redis
 * (127.0.0.1:6379): members are owned engines (16 partitions, short leases)
 * sharing one Redis store prefix, each with a consumer that reads only its
 * partitions' streams. Every test owns a random scope (streams, store prefix,
 * effects hash) and deletes it afterwards; the database is never flushed.
 * Effects are counted per key in Redis (HINCRBY in the handler), so lost and
 * double effects are read the same way for members in this process and for
 * the one in a child process that is SIGKILLed.
 */
import type { ChildProcess } from 'node:child_process'
import { randomUUID } from 'node:crypto'
import { Redis } from 'ioredis'
import { afterAll, afterEach, describe, expect, it } from 'vitest'
import { createEngine, type Engine } from '../../dist/src/engine.js'
import { ConfigError, ErrorCode } from '../../dist/src/errors.js'
import { partitionOf } from '../../dist/src/index.js'
import { deleteKeysUnder } from '../../dist/src/store/redis/delete-keys.js'
import { createStreamConsumer, createStreamProducer, partitionStreamOf, type StreamConsumer, type StreamProducer } from '../../dist/src/transport/redis-streams/index.js'
import { FAULT_TEST_TIMEOUT_MS, STALL_MS, untilDone } from '../support/progress.js'
import { exited, PartitionedStream, produce, spreadKeys, startChild as startChildMember, type ChildMember } from '../support/owned-streams.js'

const url = 'redis://127.0.0.1:6379'
const PARTITIONS = 16
const LEASE_MS = 1500
/** Owned mode: only the owner reclaims, so a crashed member's entries are taken once idle this long after its partitions moved. */
const CLAIM_IDLE_MS = 1000
const COUNT = 128
const BATCHES_IN_FLIGHT = 4
const redis = new Redis(url)
const scopes: string[] = []
const producers: StreamProducer[] = []
const members: Member[] = []
const children = new Set<ChildProcess>()

afterEach(async () => {
  for (const child of children) child.kill('SIGKILL')
  for (const m of members.splice(0)) await m.close()
  await Promise.all(producers.splice(0).map((p) => p.close()))
  for (const scope of scopes.splice(0)) await deleteKeysUnder(redis, scope)
})
afterAll(() => redis.disconnect())

function names() {
  const scope = `test:streams-owned:${randomUUID()}`
  scopes.push(scope)
  const stream = `${scope}:s`
  const effects = `${scope}:effects`
  return { scope, stream, prefix: `${scope}:idem:`, effects, s: new PartitionedStream(redis, stream, PARTITIONS, effects) }
}
type Names = ReturnType<typeof names>

function producer(stream: string, partitions = PARTITIONS): StreamProducer {
  const p = createStreamProducer({ stream, partitions, connection: url })
  producers.push(p)
  return p
}

interface Member {
  id: string
  engine: Engine
  consumer: StreamConsumer
  errors: string[]
  close(): Promise<void>
}

async function ownedEngine(prefix: string, memberId: string, partitions = PARTITIONS): Promise<Engine> {
  return createEngine({ mode: 'owned', shards: 4, partitions, store: { kind: 'redis', url, prefix }, ownership: { leaseMs: LEASE_MS, memberId } })
}

/** An owned engine and its consumer in this process, counting effects in the scope's hash. */
async function member(n: Names, id: string): Promise<Member> {
  const engine = await ownedEngine(n.prefix, id)
  const consumer = createStreamConsumer({
    stream: n.stream,
    group: 'g',
    consumer: id,
    engine,
    keyOf: (entry) => entry.fields.key,
    handler: async (entry) => {
      await redis.hincrby(n.effects, entry.fields.key, 1)
    },
    count: COUNT,
    batchesInFlight: BATCHES_IN_FLIGHT,
    blockMs: 100,
    claimIdleMs: CLAIM_IDLE_MS,
    reclaimIntervalMs: 100,
    inFlightDelayMs: 100,
    retryDelayMs: 100,
  })
  const errors: string[] = []
  consumer.on('error', (error) => errors.push(`${error.code}: ${error.message}`))
  await consumer.waitUntilReady()
  let closing: Promise<void> | undefined
  const m: Member = {
    id,
    engine,
    consumer,
    errors,
    close: () => (closing ??= consumer.close().then(() => engine.close())),
  }
  members.push(m)
  return m
}

describe('the stream producer for partitioned streams', () => {
  it("puts each entry on its key's partition stream (partitionOf), one pipeline per call; records the partition count", async () => {
    const n = names()
    const p = producer(n.stream)
    const { keys } = spreadKeys(400)
    const ids = await p.addMany(keys.map((key) => ({ key, amount: '1' })))
    expect(ids).toHaveLength(keys.length)
    expect(await p.add({ key: 'one-more' })).toMatch(/^\d+-\d+$/)
    let seen = 0
    const used = new Set<number>()
    for (let partition = 0; partition < PARTITIONS; partition++) {
      const entries = (await redis.xrange(partitionStreamOf(n.stream, partition), '-', '+')) as [string, string[]][]
      for (const [, fields] of entries) {
        expect(partitionOf(fields[1], PARTITIONS)).toBe(partition)
        used.add(partition)
        seen++
      }
    }
    expect(seen).toBe(keys.length + 1)
    expect(used.size).toBe(PARTITIONS)
    expect(await redis.get(`${n.stream}:idem-partitions`)).toBe(String(PARTITIONS))

    // A namespace is part of the key's hash, as in the engine; a key the engine would refuse goes to partition 0, to be dead-lettered there.
    const tenant = createStreamProducer({ stream: n.stream, partitions: PARTITIONS, connection: redis, keyOf: (e) => e.fields.id, namespaceOf: (e) => e.fields.tenant })
    expect(tenant.partitionOf({ id: 'k-1', tenant: 'a' })).toBe(partitionOf('k-1', PARTITIONS, 'a'))
    expect(tenant.partitionOf({ tenant: 'a' })).toBe(0)
    await tenant.close()
    expect(redis.status).toBe('ready')
  })

  it('refuses another partition count with PARTITIONS_MISMATCH naming both, for a producer and for a consumer', async () => {
    const n = names()
    await producer(n.stream).add({ key: 'k' })
    const other = producer(n.stream, 8)
    await expect(other.add({ key: 'k' })).rejects.toMatchObject({
      code: ErrorCode.PARTITIONS_MISMATCH,
      message: expect.stringMatching(/split into 16 partitions.*this producer has 8/),
    })
    // The engine's own store prefix is fresh (its store would refuse the mismatch itself): the stream's record refuses it.
    const engine = await ownedEngine(`${n.scope}:other:`, 'm-8', 8)
    try {
      const consumer = createStreamConsumer({ stream: n.stream, group: 'g', consumer: 'c', engine, keyOf: (e) => e.fields.key, handler: () => 1 })
      await expect(consumer.waitUntilReady()).rejects.toMatchObject({
        code: ErrorCode.PARTITIONS_MISMATCH,
        message: expect.stringMatching(/split into 16 partitions.*this consumer's engine has 8/),
      })
      await consumer.close()
    } finally {
      await engine.close()
    }
  })

  it('refuses bad options in one ConfigError; an owned consumer needs an owned engine', async () => {
    expect(() => createStreamProducer({ stream: '', partitions: 0, connection: 'http://x', keyOf: 1 } as never)).toThrow(
      expect.objectContaining({
        problems: [
          'stream: must be a non-empty string, got ""',
          'partitions: must be an integer from 1 to 65536, got 0',
          'connection: must be a redis:// or rediss:// URL, got "http://x"',
          'keyOf: must be a function of the entry ({ fields }), got 1',
        ],
      }),
    )
    const n = names()
    const strict = await createEngine({ store: { kind: 'redis', url, prefix: n.prefix } })
    try {
      expect(() => createStreamConsumer({ stream: n.stream, mode: 'owned', group: 'g', consumer: 'c', engine: strict, keyOf: () => 'k', handler: () => 1 })).toThrow(ConfigError)
    } finally {
      await strict.close()
    }
  })
})

// Bounded by progress (untilDone); on a loaded machine the hand-overs and the SIGKILL take longer than vitest's default minute.
describe('owned consumers on partitioned streams', { timeout: FAULT_TEST_TIMEOUT_MS }, () => {
  it('one member: 3,000 entries with 30% duplicates spread through them, each key once, every partition stream acked', async () => {
    const n = names()
    const { keys, unique } = spreadKeys(3000)
    await produce(producer(n.stream), keys, 500, 0)
    const m = await member(n, 'solo')
    expect(m.engine.ownedPartitions()).toEqual([...Array(PARTITIONS).keys()])
    await n.s.untilAllAcked(keys.length)
    const effects = await n.s.effects(unique)
    const stats = m.consumer.stats()
    console.log(`owned streams, one member: ${keys.length} entries (${unique} keys), ${stats.batches} batches (${(stats.read / Math.max(1, stats.batches)).toFixed(0)} entries each), new ${stats.new}, duplicates ${stats.duplicates}`)
    expect(effects).toEqual({ keys: unique, lost: 0, doubles: 0 })
    expect(stats).toMatchObject({ read: keys.length, acked: keys.length, new: unique, duplicates: keys.length - unique, inFlight: 0, deadLettered: 0 })
    for (let p = 0; p < PARTITIONS; p++) expect(((await redis.xpending(partitionStreamOf(n.stream, p), 'g')) as [number])[0]).toBe(0)
    expect(m.errors).toEqual([])
  })

  it('an entry on another partition\'s stream is dead-lettered with PARTITIONS_MISMATCH, not left NOT_OWNER forever; a bad key on partition 0 with INVALID_KEY', async () => {
    const n = names()
    const p = producer(n.stream)
    await p.add({ key: 'routed' })
    const key = Array.from({ length: 100 }, (_, i) => `k-${i}`).find((k) => partitionOf(k, PARTITIONS) !== 3)!
    const misplaced = (await redis.xadd(partitionStreamOf(n.stream, 3), '*', 'key', key)) as string
    const badKey = await p.add({ note: 'no key field' })
    const m = await member(n, 'solo')
    await n.s.untilAllAcked(3)
    const letters = ((await redis.xrange(`${n.stream}:dead`, '-', '+')) as [string, string[]][]).map(([, pairs]) => Object.fromEntries(Array.from({ length: pairs.length / 2 }, (_, i) => [pairs[2 * i], pairs[2 * i + 1]])))
    expect(letters).toHaveLength(2)
    expect(letters).toContainEqual(expect.objectContaining({ id: misplaced, stream: partitionStreamOf(n.stream, 3), code: ErrorCode.PARTITIONS_MISMATCH, key }))
    expect(letters).toContainEqual(expect.objectContaining({ id: badKey, stream: partitionStreamOf(n.stream, 0), code: ErrorCode.INVALID_KEY }))
    expect(m.consumer.stats()).toMatchObject({ new: 1, deadLettered: 2, inFlight: 0 })
  })

  it('two members share the partitions; a third joins mid-stream: partitions move to it, lost 0, double 0', async () => {
    const n = names()
    const { keys, unique } = spreadKeys(6000, 777)
    const p = producer(n.stream)
    await p.add({ key: 'warm-up' })
    const a = await member(n, 'member-a')
    const b = await member(n, 'member-b')
    await untilDone({ what: 'two members share the partitions', done: () => n.s.shareIsComplete([a, b].map((m) => m.engine.ownedPartitions())) && a.engine.ownedPartitions().length > 0 && b.engine.ownedPartitions().length > 0, progress: () => 0, stallMs: STALL_MS })
    const before = { a: a.engine.ownedPartitions(), b: b.engine.ownedPartitions() }

    const producing = produce(p, keys, 100, 20)
    await untilDone({ what: 'a third of the keys done', done: async () => (await redis.hlen(n.effects)) >= unique / 3, progress: () => redis.hlen(n.effects), pollMs: 20 })
    const lostAt = new Map<number, number>()
    for (const m of [a, b]) m.engine.on('partitions', ({ lost }) => lost.forEach((partition) => lostAt.set(partition, performance.now())))
    const joinedAt = performance.now()
    const c = await member(n, 'member-c')
    await untilDone({
      what: 'three members share the partitions',
      done: () => n.s.shareIsComplete([a, b, c].map((m) => m.engine.ownedPartitions())) && c.engine.ownedPartitions().length > 0,
      progress: () => c.engine.ownedPartitions().length,
      pollMs: 5,
    })
    const handOverMs = performance.now() - joinedAt
    await producing
    await n.s.untilAllAcked(keys.length + 1)

    const effects = await n.s.effects(unique + 1)
    const after = { a: a.engine.ownedPartitions(), b: b.engine.ownedPartitions(), c: c.engine.ownedPartitions() }
    const moved = after.c.length
    console.log(
      `owned streams, a third member joins: partitions a ${before.a.length} → ${after.a.length}, b ${before.b.length} → ${after.b.length}, c ${after.c.length}; ` +
        `hand-over ${handOverMs.toFixed(0)} ms from the join to a complete disjoint share (${lostAt.size} partitions handed over); ` +
        `reads a/b/c ${[a, b, c].map((m) => m.consumer.stats().read).join('/')}, in-flight waits ${[a, b, c].map((m) => m.consumer.stats().inFlight).join('/')}, reclaimed ${[a, b, c].map((m) => m.consumer.stats().reclaimed).join('/')}; lost ${effects.lost}, double ${effects.doubles}`,
    )
    expect(n.s.shareIsComplete([after.a, after.b, after.c])).toBe(true)
    expect(moved).toBeGreaterThan(0)
    // Only partitions that the newcomer took changed hands.
    for (const partition of after.a) expect(before.a).toContain(partition)
    for (const partition of after.b) expect(before.b).toContain(partition)
    expect(effects).toMatchObject({ lost: 0, doubles: 0 })
    for (const m of [a, b, c]) expect(m.errors).toEqual([])
  })

  it('a member closed mid-stream hands its partitions over gracefully: the rest finish everything, lost 0, double 0', async () => {
    const n = names()
    const { keys, unique } = spreadKeys(6000, 4242)
    const p = producer(n.stream)
    const a = await member(n, 'member-a')
    const b = await member(n, 'member-b')
    const c = await member(n, 'member-c')
    await untilDone({
      what: 'three members share the partitions',
      done: () => n.s.shareIsComplete([a, b, c].map((m) => m.engine.ownedPartitions())) && [a, b, c].every((m) => m.engine.ownedPartitions().length > 0),
      progress: () => c.engine.ownedPartitions().length,
    })
    const leaving = b.engine.ownedPartitions()
    const producing = produce(p, keys, 100, 20)
    await untilDone({ what: 'a third of the keys done', done: async () => (await redis.hlen(n.effects)) >= unique / 3, progress: () => redis.hlen(n.effects), pollMs: 20 })
    const closedAt = performance.now()
    await b.close()
    await untilDone({ what: 'two members share the partitions', done: () => n.s.shareIsComplete([a, c].map((m) => m.engine.ownedPartitions())), progress: () => a.engine.ownedPartitions().length + c.engine.ownedPartitions().length, pollMs: 5 })
    const handOverMs = performance.now() - closedAt
    await producing
    await n.s.untilAllAcked(keys.length)
    const effects = await n.s.effects(unique)
    const left = await n.s.pendingOf('member-b')
    console.log(`owned streams, a member closes: its ${leaving.length} partitions taken over ${handOverMs.toFixed(0)} ms after close() began (its consumer acked ${b.consumer.stats().acked}, left ${left} pending); lost ${effects.lost}, double ${effects.doubles}`)
    expect(leaving.length).toBeGreaterThan(0)
    expect(effects).toMatchObject({ lost: 0, doubles: 0 })
    expect(left).toBe(0)
    for (const m of [a, b, c]) expect(m.errors).toEqual([])
  })

  it('a member SIGKILLed mid-stream: its partitions move after the lease, its pending entries are claimed by the new owners; lost 0, doubles ≤ what it held', async () => {
    const n = names()
    const { keys, unique } = spreadKeys(8000, 99)
    const p = producer(n.stream)
    const a = await member(n, 'member-a')
    const victim = await startChild(n, 'member-victim')
    await untilDone({
      what: 'two members share the partitions',
      done: () => n.s.shareIsComplete([a.engine.ownedPartitions(), victim.owned]) && victim.owned.length > 0,
      progress: () => victim.owned.length,
    })
    const producing = produce(p, keys, 100, 10)
    await untilDone({ what: 'a third of the keys done', done: async () => (await redis.hlen(n.effects)) >= unique / 3, progress: () => redis.hlen(n.effects), pollMs: 10 })
    const victimPartitions = victim.owned
    victim.process.kill('SIGKILL')
    const killedAt = performance.now()
    await exited(victim.process)
    const heldAtKill = await n.s.pendingOf('member-victim')
    await untilDone({ what: 'the survivor owns every partition', done: () => a.engine.ownedPartitions().length === PARTITIONS, progress: () => a.engine.ownedPartitions().length, pollMs: 5 })
    const movedMs = performance.now() - killedAt
    await producing
    await n.s.untilAllAcked(keys.length)
    const effects = await n.s.effects(unique)
    const left = await n.s.pendingOf('member-victim')
    console.log(
      `owned streams, a member SIGKILLed: its ${victimPartitions.length} partitions moved ${movedMs.toFixed(0)} ms after the kill (leaseMs ${LEASE_MS}); ` +
        `${heldAtKill} entries pending under it at the kill, ${left} at the end; survivor reclaimed ${a.consumer.stats().reclaimed}; lost ${effects.lost}, double ${effects.doubles} (bound: the ${heldAtKill} it held)`,
    )
    expect(heldAtKill).toBeGreaterThan(0)
    expect(left).toBe(0)
    expect(a.consumer.stats().reclaimed).toBeGreaterThanOrEqual(heldAtKill)
    expect(effects.lost).toBe(0)
    expect(effects.doubles).toBeLessThanOrEqual(heldAtKill)
    expect(a.errors).toEqual([])
  })
})

function startChild(n: Names, memberId: string): Promise<ChildMember> {
  return startChildMember(n.s, memberId, { url, prefix: n.prefix, leaseMs: LEASE_MS, claimIdleMs: CLAIM_IDLE_MS, count: COUNT, batchesInFlight: BATCHES_IN_FLIGHT }, children)
}
