/**
 * Owned mode on the real Redis, with members as engines of this process
 * sharing one prefix and group: assignment, graceful hand-over under load,
 * fencing by epoch (taken over, set back by hand), warm start across owners
 * (snapshot, log, corrupt or deleted snapshot), and the store's guards.
 * Process-level faults (SIGKILL, SIGSTOP) are in test/fault/owned-kill.test.ts.
 */
import { randomUUID } from 'node:crypto'
import { Redis } from 'ioredis'
import { afterAll, afterEach, describe, expect, it } from 'vitest'
import { createEngine, type Engine } from '../../dist/src/engine.js'
import type { EngineOptions } from '../../dist/src/config.js'
import { ErrorCode, IdemError, outcomeUnknown } from '../../dist/src/errors.js'
import { CommitCode } from '../../dist/src/store/store.js'
import type { Message } from '../../dist/src/message.js'
import { partitionOf } from '../../dist/src/owned/partition-of.js'
import { assignPartitions } from '../../dist/src/owned/assignment.js'
import { resolveRedisStore } from '../../dist/src/store/redis/redis-options.js'
import { RedisStore } from '../../dist/src/store/redis/redis-store.js'
import { hashTagOf, recordKey } from '../../dist/src/store/redis/redis-records.js'
import { deleteKeysUnder } from '../../dist/src/store/redis/delete-keys.js'
import { identityKey } from '../../dist/src/store/redis/store-identity.js'
import { consumeMemoryQueue, MemoryQueue } from '../../dist/src/transport/memory-queue.js'
import { waitFor } from '../support/wait-for.js'

const url = 'redis://127.0.0.1:6379'
const redis = new Redis(url)
const prefixes: string[] = []
const engines: Engine[] = []

function newPrefix(): string {
  const p = `test:${randomUUID()}:`
  prefixes.push(p)
  return p
}
async function member(prefix: string, memberId: string, options: EngineOptions = {}): Promise<Engine> {
  const created = await createEngine({
    mode: 'owned',
    shards: 4,
    partitions: 64,
    group: 'g',
    store: { kind: 'redis', url, prefix },
    ...options,
    ownership: { memberId, leaseMs: 1500, ...options.ownership },
  })
  engines.push(created)
  return created
}
afterEach(async () => {
  await Promise.all(engines.splice(0).map((e) => e.close()))
})
afterAll(async () => {
  for (const p of prefixes) await deleteKeysUnder(redis, p)
  redis.disconnect()
})

/** Effects per key, shared by every member of a test (the business side). */
function effectsCounter() {
  const effects = new Map<string, number>()
  const handler = async (m: Message): Promise<string> => {
    effects.set(m.key, (effects.get(m.key) ?? 0) + 1)
    return 'ok'
  }
  const lostAndDouble = (keys: string[]) => {
    let lost = 0
    let double = 0
    for (const key of new Set(keys)) {
      const n = effects.get(key) ?? 0
      if (n === 0) lost++
      if (n > 1) double += n - 1
    }
    return { lost, double }
  }
  return { effects, handler, lostAndDouble }
}

/** Keys with 30% resends drawn uniformly from earlier ones, mixed lengths, some CJK. */
function stream(count: number, seed: number): string[] {
  let state = seed + 1
  const random = () => ((state = Math.imul(state ^ (state >>> 15), 0x2c1b3c6d) + 0x6d2b79f5) >>> 0) / 2 ** 32
  const keys: string[] = []
  let unique = 0
  const keyOf = (n: number) => (n % 9 === 0 ? `注文/${seed}/${n}/決済` : `order-${seed}-${n}-${'p'.repeat(n % 30)}`)
  for (let i = 0; i < count; i++) keys.push(unique > 0 && random() < 0.3 ? keyOf(Math.floor(random() * unique)) : keyOf(unique++))
  return keys
}

describe('owned mode on Redis: members of one group', () => {
  it('three members own every partition exactly once; a fourth joins under load: graceful hand-over, lost 0, double 0', async () => {
    const prefix = newPrefix()
    const members = [await member(prefix, 'm1'), await member(prefix, 'm2'), await member(prefix, 'm3')]
    const expected = assignPartitions(['m1', 'm2', 'm3'], 64)
    await waitFor('the three to settle on the assignment', () => members.every((m, k) => m.ownedPartitions().join() === ownedBy(expected, `m${k + 1}`).join()), 20_000)
    const owned = members.flatMap((m) => m.ownedPartitions())
    expect(owned.sort((a, b) => a - b)).toEqual([...Array(64).keys()])

    const { handler, lostAndDouble } = effectsCounter()
    const keys = stream(6000, 1)
    const queue = new MemoryQueue<unknown>({ partitions: 64, retryDelayMs: 20 })
    for (const key of keys) queue.add({ key })
    const consumers = members.map((m) => consumeMemoryQueue(queue, m, handler, { batchSize: 256 }))
    // The fourth joins once a share of the stream has been consumed.
    await waitFor('a third of the stream to be acked', () => queue.acked > keys.length / 3, 30_000)
    const joinedAt = performance.now()
    const fourth = await member(prefix, 'm4')
    let firstAcquired = 0
    fourth.on('partitions', ({ acquired }) => void (acquired.length > 0 && firstAcquired === 0 && (firstAcquired = performance.now())))
    if (fourth.ownedPartitions().length > 0) firstAcquired = performance.now()
    consumers.push(consumeMemoryQueue(queue, fourth, handler, { batchSize: 256 }))
    const all = [...members, fourth]
    const final = assignPartitions(['m1', 'm2', 'm3', 'm4'], 64)
    await waitFor('the four to settle on the assignment', () => all.every((m, k) => m.ownedPartitions().join() === ownedBy(final, `m${k + 1}`).join()), 30_000)
    await Promise.all(consumers)
    // Whatever is left after the move (messages that waited for their new owner) goes through the final owners.
    await Promise.all(all.map((m) => consumeMemoryQueue(queue, m, handler, { batchSize: 256 })))
    const handOverMs = (firstAcquired || performance.now()) - joinedAt
    console.log(`owned hand-over: the fourth member handled its first partitions ${handOverMs.toFixed(0)} ms after it started; ${all.reduce((n, m) => n + m.stats().ownership!.handedOver, 0)} partitions handed over`)
    expect(lostAndDouble(keys)).toEqual({ lost: 0, double: 0 })
    expect(queue.failed).toEqual([])
    expect(queue.acked).toBe(keys.length)
    expect(fourth.ownedPartitions().length).toBeGreaterThan(0)
    expect(all.reduce((n, m) => n + m.stats().totals.fencedWrites, 0)).toBe(0)
  }, 10 * 60_000)

  it('a closing member hands its partitions over; the others restore them and every settled key stays a duplicate', async () => {
    const prefix = newPrefix()
    const a = await member(prefix, 'a', { lru: { maxKeys: 0 } })
    const { handler } = effectsCounter()
    const keys = Array.from({ length: 4000 }, (_, n) => `settled-${n}`)
    await a.processBatch(keys.map((key) => ({ key })), handler)
    await a.close()
    const b = await member(prefix, 'b', { lru: { maxKeys: 0 } })
    expect(b.ownedPartitions()).toHaveLength(64)
    const again = await b.processBatch(keys.map((key) => ({ key })), handler)
    expect(again.filter((o) => o.verdict !== 'duplicate')).toEqual([])
    expect(b.stats().ownership!.acquired).toBe(64)
    // Never seen keys are still new: the bloom was restored, not filled.
    expect((await b.process({ key: 'fresh' }, handler)).verdict).toBe('new')
  })
})

describe('owned mode on Redis: fencing', () => {
  it('an epoch set back by hand refuses the group commit: EPOCH_REGRESSED, not done, counted as a fenced write', async () => {
    const prefix = newPrefix()
    const a = await member(prefix, 'a', { ownership: { flushMs: 0 } })
    const key = 'regressed-key'
    const p = partitionOf(key, 64)
    const epochKey = `${prefix}own:g:epoch:${p}`
    expect(Number(await redis.get(epochKey))).toBe(1)
    const outcome = await a.process({ key }, async () => {
      // An operator sets the partition back while the handler runs.
      await redis.set(epochKey, '0')
      return 'done'
    })
    expect(outcome.verdict).toBe('new')
    expect(outcome.error?.code).toBe(ErrorCode.EPOCH_REGRESSED)
    expect(outcome.error?.message).toContain('set back by hand')
    expect(a.stats().totals.fencedWrites).toBe(1)
    expect(await redis.exists(recordKey(prefix, hashTagOf(key, 64), key))).toBe(0)
    // The member stops using the partition: its messages are NOT_OWNER until it is acquired again.
    await waitFor('the partition to be dropped', () => !a.ownedPartitions().includes(p))
  })

  it('a member whose partition was taken over has its group commit refused: LEASE_LOST; the new owner records stand', async () => {
    const prefix = newPrefix()
    const a = await member(prefix, 'a', { ownership: { flushMs: 0 } })
    const key = 'taken-over-key'
    const p = partitionOf(key, 64)
    const outcome = await a.process({ key }, async () => {
      // Another member takes the partition (its lease forced free, its epoch moved on) and settles the key first.
      await redis.del(`${prefix}own:g:lease:${p}`)
      await redis.incr(`${prefix}own:g:epoch:${p}`)
      return 'stale owner'
    })
    expect(outcome.verdict).toBe('new')
    expect(outcome.error?.code).toBe(ErrorCode.LEASE_LOST)
    expect(a.stats().totals.fencedWrites).toBe(1)
    const inspector = new RedisStore(resolveRedisStore({ kind: 'redis', url, prefix }, 0, []))
    try {
      expect(await inspector.inspect([key])).toEqual([undefined])
    } finally {
      await inspector.close()
    }
  })
})

describe('owned mode on Redis: warm start', () => {
  it('records written by group commits are the strict store layout: inspect reads them (what `idem keys show` prints)', async () => {
    const prefix = newPrefix()
    const a = await member(prefix, 'a')
    await a.process({ key: '订单-1', fingerprint: 'fp-1' }, () => ({ charged: '¥12' }))
    const inspector = new RedisStore(resolveRedisStore({ kind: 'redis', url, prefix }, 0, []))
    try {
      const [view] = await inspector.inspect(['订单-1'])
      expect(view).toMatchObject({ state: 'done', fingerprint: 'fp-1', result: { charged: '¥12' } })
      expect(view!.token).toBe(`p${partitionOf('订单-1', 64)}e1`)
    } finally {
      await inspector.close()
    }
  })

  it('a snapshot corrupted in Redis is refused and the partition rebuilt from its log; a deleted one too: every key stays a duplicate', async () => {
    for (const damage of ['corrupt', 'delete'] as const) {
      const prefix = newPrefix()
      const a = await member(prefix, 'a', { lru: { maxKeys: 0 } })
      const keys = Array.from({ length: 3000 }, (_, n) => `warm-${n}`)
      await a.processBatch(keys.map((key) => ({ key })), () => 1)
      await a.close()
      for (let p = 0; p < 64; p++) {
        const snapshotKey = `${prefix}own:g:snap:${p}`
        expect(await redis.exists(snapshotKey)).toBe(1)
        if (damage === 'corrupt') await redis.hset(snapshotKey, 'bytes', 'IDMBnot really a bloom filter at all, just text of the wrong length')
        else await redis.del(snapshotKey)
      }
      const b = await member(prefix, 'b', { lru: { maxKeys: 0 } })
      const ownership = b.stats().ownership!
      expect(ownership.snapshotsInvalid).toBe(damage === 'corrupt' ? 64 : 0)
      expect(ownership.replayedKeys).toBe(3000)
      const again = await b.processBatch(keys.map((key) => ({ key })), () => 1)
      expect(again.filter((o) => o.verdict !== 'duplicate')).toEqual([])
    }
  })
})

describe('owned mode on Redis: effects that may or may not have happened', () => {
  it('a handler that cannot tell marks its key UNKNOWN in the group commit: redeliveries wait (OUTCOME_UNKNOWN) until an operator resolves it', async () => {
    const prefix = newPrefix()
    const a = await member(prefix, 'a', { lru: { maxKeys: 0 } })
    let runs = 0
    const handler = (): never => {
      runs++
      throw outcomeUnknown('the payment call timed out')
    }
    const first = await a.process({ key: 'pay-1', fingerprint: 'fp' }, handler)
    expect(first).toMatchObject({ verdict: 'new', error: { code: ErrorCode.OUTCOME_UNKNOWN } })
    const again = await a.process({ key: 'pay-1', fingerprint: 'fp' }, handler)
    expect(again).toMatchObject({ verdict: 'in-flight', error: { code: ErrorCode.OUTCOME_UNKNOWN } })
    expect(runs).toBe(1)
    // What `idem keys resolve --done` does, on the same records.
    const operator = new RedisStore(resolveRedisStore({ kind: 'redis', url, prefix }, 0, []))
    try {
      expect((await operator.inspect(['pay-1']))[0]).toMatchObject({ state: 'unknown', fingerprint: 'fp' })
      expect([...(await operator.resolve(['pay-1'], [true], [{ paid: true }], 60_000))]).toEqual([CommitCode.COMMITTED])
    } finally {
      await operator.close()
    }
    expect(await a.process({ key: 'pay-1', fingerprint: 'fp' }, handler)).toEqual({ key: 'pay-1', verdict: 'duplicate', result: { paid: true } })
    expect(runs).toBe(1)
  })
})

describe('owned mode on Redis: guards', () => {
  it('another partition count for the group is refused with PARTITIONS_MISMATCH', async () => {
    const prefix = newPrefix()
    await member(prefix, 'a')
    const refused = await member(prefix, 'b', { partitions: 32 }).catch((error: unknown) => error)
    expect(refused).toBeInstanceOf(IdemError)
    expect((refused as IdemError).code).toBe(ErrorCode.PARTITIONS_MISMATCH)
    expect((refused as IdemError).message).toContain('64 partitions')
    expect((refused as IdemError).message).toContain('this engine has 32')
  })

  it('a Redis that lost its data (identity record gone) fails closed: group commits refused with STORE_RESET, nothing acked as done', async () => {
    const prefix = newPrefix()
    const a = await member(prefix, 'a', { ownership: { flushMs: 0 } })
    await redis.del(identityKey(prefix))
    const outcome = await a.process({ key: 'after-reset' }, () => 1)
    expect(outcome.verdict).toBe('new')
    expect(outcome.error?.code).toBe(ErrorCode.STORE_RESET)
  })
})

function ownedBy(owners: string[], memberId: string): number[] {
  const mine: number[] = []
  for (let p = 0; p < owners.length; p++) if (owners[p] === memberId) mine.push(p)
  return mine
}
