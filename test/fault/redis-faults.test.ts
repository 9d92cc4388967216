/**
 * The redis store under real faults, one engine per test against redis-server
 * processes the test starts itself (never the shared one): a cluster, a
 * replica, a server stopped and restarted, a proxy that delays, drops and
 * resets traffic. Every test ends by counting effects per key. Bounded by
 * count and progress: each test delivers a fixed set of keys until every one
 * is settled, and fails when none settles for STALL_MS, not on a deadline.
 */
import { randomUUID } from 'node:crypto'
import { Redis } from 'ioredis'
import { afterEach, describe, expect, it } from 'vitest'
import { createEngine, type Engine } from '../../dist/src/engine.js'
import { ErrorCode } from '../../dist/src/errors.js'
import type { Message, Outcome } from '../../dist/src/message.js'
import { FAULT_TEST_TIMEOUT_MS, STALL_MS } from '../support/progress.js'
import { startCluster, startRedis, startReplica } from '../support/redis-server.js'
import { startProxy } from '../support/tcp-proxy.js'

const cleanups: (() => Promise<void>)[] = []
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup()
})
async function engineOn(store: Record<string, unknown>, options: Record<string, unknown> = {}): Promise<Engine> {
  const engine = await createEngine({ shards: 4, ...options, store: { kind: 'redis', prefix: `t:${randomUUID()}:`, ...store } })
  cleanups.push(() => engine.close())
  return engine
}

/** Counts each key's effects, and delivers every message until it is settled, as a queue would; fails when no message settles for STALL_MS. */
function consumer(engine: Engine) {
  const effects = new Map<string, number>()
  const handler = async (m: Message) => {
    effects.set(m.key, (effects.get(m.key) ?? 0) + 1)
  }
  const verdicts: Record<string, number> = {}
  const codes = new Set<string>()
  const deliver = async (messages: Message[], pauseMs = 50): Promise<void> => {
    let pending = messages
    let movedAt = Date.now()
    while (pending.length > 0) {
      if (Date.now() - movedAt > STALL_MS) throw new Error(`no message settled for ${STALL_MS / 1000} s; ${pending.length} left, codes ${[...codes].join(', ')}`)
      const outcomes: Outcome[] = await engine.processBatch(pending, handler)
      const again: Message[] = []
      outcomes.forEach((o, i) => {
        verdicts[o.verdict] = (verdicts[o.verdict] ?? 0) + 1
        if (o.error !== undefined) codes.add(o.error.code)
        if (o.verdict === 'in-flight' || (o.verdict === 'new' && o.error !== undefined)) again.push(pending[i])
      })
      if (again.length < pending.length) movedAt = Date.now()
      pending = again
      if (again.length > 0) await new Promise((resolve) => setTimeout(resolve, pauseMs))
    }
  }
  const doubles = () => [...effects.values()].filter((n) => n > 1).length
  return { effects, verdicts, codes, deliver, doubles }
}

const keys = (n: number, tag = 'k') => Array.from({ length: n }, (_, i) => ({ key: `${tag}-${i}` }))

describe('redis store on a Redis Cluster', () => {
  it('claims across every slot with no CROSSSLOT error, one effect per key, duplicates found across nodes', async () => {
    const cluster = await startCluster(3)
    cleanups.push(() => cluster.stop())
    const engine = await engineOn({ cluster: cluster.nodes }, { lru: { maxKeys: 0 } })
    const c = consumer(engine)
    const messages = [...keys(5000), ...keys(2000)] // 2,000 duplicates, confirmed by the store (LRU off)
    await c.deliver(messages)
    expect(c.effects.size).toBe(5000)
    expect(c.doubles()).toBe(0)
    expect(c.verdicts.duplicate).toBe(2000)
    // the key records really are spread over the three masters (beside them, one lease record per batch and slot)
    const sizes = await Promise.all(cluster.nodes.map(async ({ port }) => {
      const node = new Redis(port, '127.0.0.1')
      const size = (await node.keys('*}k:*')).length
      node.disconnect()
      return size
    }))
    expect(sizes.every((s) => s > 500)).toBe(true)
    expect(sizes.reduce((a, b) => a + b)).toBe(5000)
  }, FAULT_TEST_TIMEOUT_MS)
})

describe('requireReplicas', () => {
  it('passes when the replica acknowledges, and fails the batch with REPLICA_SHORTFALL (claims released) when too few do', async () => {
    const primary = await startRedis()
    cleanups.push(() => primary.stop())
    const replica = await startReplica(primary)
    cleanups.push(() => replica.stop())

    const prefix = `t:${randomUUID()}:`
    const one = await engineOn({ url: primary.url, prefix, requireReplicas: 1, replicaTimeoutMs: 1000, commandTimeoutMs: 2000 })
    expect((await one.process({ key: 'a' }, () => 1)).verdict).toBe('new')

    const two = await engineOn({ url: primary.url, prefix, requireReplicas: 2, replicaTimeoutMs: 100 })
    let ran = 0
    const out = await two.process({ key: 'b' }, () => ran++)
    expect(out.verdict).toBe('in-flight')
    expect(out.error?.code).toBe(ErrorCode.REPLICA_SHORTFALL)
    expect(ran).toBe(0)
    // released: another owner can claim it at once, without waiting for a lease
    expect((await one.process({ key: 'b' }, () => 1)).verdict).toBe('new')
  }, FAULT_TEST_TIMEOUT_MS)
})

describe('Redis stopped and restarted', () => {
  it('fails closed while it is down (in-flight with STORE_FAILED, no handler run), recovers by itself; lost 0, double 0', async () => {
    // With AOF, as idem's Redis must run: a restart keeps the records (and the identity record). A restart
    // that comes back empty is a reset instead, failing closed until acknowledged (redis-guardrails.test.ts).
    const redis = await startRedis({ args: ['--appendonly', 'yes', '--appendfsync', 'always'] })
    cleanups.push(() => redis.stop())
    const engine = await engineOn({ url: redis.url, retries: 2, retryBackoffMs: 20, commandTimeoutMs: 300 })
    const c = consumer(engine)
    await c.deliver(keys(2000, 'before'))

    await redis.shutdown()
    const down = await engine.processBatch(keys(50, 'during'), async () => {
      throw new Error('no handler may run without a claim')
    })
    expect(down.every((o) => o.verdict === 'in-flight' && o.error?.code === ErrorCode.STORE_FAILED)).toBe(true)
    expect(engine.stats().totals.storeFailures).toBeGreaterThan(0)
    expect(engine.stats().totals.storeRetries).toBeGreaterThan(0)

    // Delivered while Redis is down and after it returns: the consumer must pick up with no restart.
    const during = c.deliver(keys(2000, 'during'), 100)
    await new Promise((resolve) => setTimeout(resolve, 1000))
    await redis.restart()
    await during
    expect(c.effects.size).toBe(4000)
    expect(c.doubles()).toBe(0)
  }, FAULT_TEST_TIMEOUT_MS)
})

describe('network faults between the engine and Redis (a proxy of the test)', () => {
  it('replies delayed past the command timeout, 10 s of dropped traffic and reset connections: lost 0, double 0, resumes by itself', async () => {
    const redis = await startRedis()
    cleanups.push(() => redis.stop())
    const proxy = await startProxy(redis.port)
    cleanups.push(() => proxy.close())
    const engine = await engineOn({ url: `redis://127.0.0.1:${proxy.port}`, commandTimeoutMs: 200, retries: 3, retryBackoffMs: 50 }, { leaseMs: 30_000 })
    const c = consumer(engine)
    // Batches keep coming through every fault: 200 new keys each, plus redeliveries of the previous batch's last 100.
    let faultsOver = false
    let produced = 0
    const done = (async () => {
      while (!faultsOver || produced < 6000) {
        const batch = keys(produced + 200).slice(produced)
        await c.deliver([...keys(produced).slice(Math.max(0, produced - 100)), ...batch], 100)
        produced += 200
        await new Promise((resolve) => setTimeout(resolve, 20))
      }
    })()
    await new Promise((resolve) => setTimeout(resolve, 300))
    proxy.delayReplies(400) // past the 200 ms command timeout: ambiguous replies, the commands did run
    await new Promise((resolve) => setTimeout(resolve, 1500))
    proxy.heal()
    proxy.drop()
    await new Promise((resolve) => setTimeout(resolve, 10_000))
    proxy.heal()
    const healedAt = performance.now()
    await new Promise((resolve) => setTimeout(resolve, 300))
    proxy.resetAll()
    faultsOver = true
    const producedAtHeal = produced
    await done
    const resumedWithin = performance.now() - healedAt
    const totals = engine.stats().totals
    console.log(`network faults: ${produced} unique keys, ${c.effects.size} effects, ${c.doubles()} double, resumed ${Math.round(resumedWithin)} ms after the heal; store retries ${totals.storeRetries}, failed calls ${totals.storeFailures}, late settlements ${totals.lateSettlements}, verdicts ${JSON.stringify(c.verdicts)}`)
    expect(produced).toBeGreaterThan(producedAtHeal)
    expect(c.effects.size).toBe(produced)
    expect(c.doubles()).toBe(0)
    expect(c.codes.has(ErrorCode.STORE_FAILED)).toBe(true)
    // It resumed by itself: keys were produced after the heal, and deliver() would have thrown had none settled for STALL_MS.
  }, FAULT_TEST_TIMEOUT_MS)
})
