/**
 * The Redis store's guardrails against a server that loses records, each test
 * on a redis-server it starts itself (never the shared one on 6379, whose
 * config and data other tests use):
 * - a server that evicts keys is refused (STORE_UNSAFE) before anything is
 *   written; with allowEviction: true it is used, and evictions are counted
 *   (evictedKeys) and reported (warning IDEM_EVICTED_KEYS);
 * - a server that lost its data while an engine ran on it (FLUSHALL, or a
 *   SIGKILL and a restart with no persistence) is detected, in the very call
 *   that meets it and without traffic within seconds: every message comes
 *   back in-flight with STORE_RESET, no handler runs, until `idem store
 *   ack-reset`, after which the engine runs again, the keys settled before
 *   the loss too (the documented price of the acknowledgement).
 *
 * The engines run with threads: 0, so their warnings reach this process, and
 * with no LRU, so every redelivery asks the store. Bounded by counts: polls
 * and batches have a fixed number of rounds.
 */
import { randomUUID } from 'node:crypto'
import { Redis } from 'ioredis'
import { afterEach, describe, expect, it } from 'vitest'
import { createEngine, type Engine } from '../../dist/src/engine.js'
import { ErrorCode } from '../../dist/src/errors.js'
import type { Outcome } from '../../dist/src/message.js'
import { FAULT_TEST_TIMEOUT_MS } from '../support/progress.js'
import { startRedis, type RedisProcess } from '../support/redis-server.js'
import { idem } from '../support/idem-cli.js'

const KEYS = 1_000

const cleanups: (() => Promise<void>)[] = []
afterEach(async () => {
  for (const cleanup of cleanups.splice(0).reverse()) await cleanup()
})

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms))

/** Warnings by code, from the moment of the call (process-wide: the engines run in this thread). */
function warnings(): Map<string, string[]> {
  const seen = new Map<string, string[]>()
  const listener = (warning: Error & { code?: string }) => {
    const code = warning.code ?? ''
    seen.set(code, [...(seen.get(code) ?? []), warning.message])
  }
  process.on('warning', listener)
  cleanups.push(async () => void process.off('warning', listener))
  return seen
}

async function server(args: string[] = []): Promise<RedisProcess & { admin: Redis }> {
  const redis = await startRedis({ args })
  const admin = new Redis(redis.url, { maxRetriesPerRequest: 1 })
  admin.on('error', () => {})
  cleanups.push(async () => {
    admin.disconnect()
    await redis.stop()
  })
  return Object.assign(redis, { admin })
}

async function engineOn(url: string, prefix: string, store: Record<string, unknown> = {}): Promise<Engine> {
  const engine = await createEngine({ shards: 4, threads: 0, lru: { maxKeys: 0 }, store: { kind: 'redis', url, prefix, retries: 1, retryBackoffMs: 10, ...store } })
  cleanups.push(() => engine.close())
  return engine
}

const keys = (n: number, tag: string) => Array.from({ length: n }, (_, i) => ({ key: `${tag}-${i}` }))

function tally(outcomes: Outcome[]): Record<string, number> {
  const counts: Record<string, number> = {}
  for (const o of outcomes) {
    const name = `${o.verdict}${o.error === undefined ? '' : `/${o.error.code}`}`
    counts[name] = (counts[name] ?? 0) + 1
  }
  return counts
}


/** Processes `messages` until one round answers no STORE_RESET (the engine resumed), at most `rounds` rounds. */
async function untilResumed(engine: Engine, messages: { key: string }[], handler: (m: { key: string }) => void, rounds = 100): Promise<{ outcomes: Outcome[]; rounds: number }> {
  for (let round = 1; ; round++) {
    const outcomes = await engine.processBatch(messages, handler)
    if (outcomes.every((o) => o.error?.code !== ErrorCode.STORE_RESET) || round >= rounds) return { outcomes, rounds: round }
    await sleep(100)
  }
}

describe('a Redis that evicts keys', () => {
  it('is refused with STORE_UNSAFE before anything is written; with allowEviction: true its evictions are counted (evictedKeys) and reported (IDEM_EVICTED_KEYS)', async () => {
    const redis = await server(['--maxmemory', '2mb', '--maxmemory-policy', 'allkeys-lru'])
    const seen = warnings()
    const refused = await engineOn(redis.url, 'evict:')
    let runs = 0
    const [outcome] = await refused.processBatch([{ key: 'first' }], () => void runs++)
    expect(outcome.verdict).toBe('in-flight')
    expect(outcome.error?.code).toBe(ErrorCode.STORE_UNSAFE)
    expect(runs).toBe(0)
    expect(await redis.admin.dbsize()).toBe(0)

    const allowed = await engineOn(redis.url, 'evict:', { allowEviction: true })
    // Results of 1 KB fill 2 MB within a few thousand keys; bounded by a count of batches.
    const result = 'x'.repeat(1024)
    let batches = 0
    let evicted = 0
    for (; batches < 200 && evicted === 0; batches++) {
      await allowed.processBatch(keys(500, `fill-${batches}`), () => result)
      evicted = Number(/evicted_keys:(\d+)/.exec(await redis.admin.info('stats'))![1])
    }
    expect(evicted).toBeGreaterThan(0)
    // The store reads evicted_keys every 5 s: poll its count, at most 100 times (stats are taken at the next store call).
    let polls = 0
    for (; polls < 100 && allowed.stats().totals.evictedKeys === 0; polls++) {
      await sleep(100)
      await allowed.processBatch([{ key: `poll-${polls}` }], () => 1)
    }
    const totals = allowed.stats().totals
    console.log(
      `eviction: refused without allowEviction (${outcome.verdict}/${outcome.error?.code}, ${runs} runs, dbsize 0); with allowEviction: ${batches} batches of 500 until the server evicted ${evicted} keys; evictedKeys ${totals.evictedKeys} after ${polls} polls; IDEM_EVICTED_KEYS warnings ${seen.get('IDEM_EVICTED_KEYS')?.length ?? 0}`,
    )
    expect(totals.evictedKeys).toBeGreaterThan(0)
    expect(seen.get('IDEM_EVICTED_KEYS')?.[0]).toMatch(/^the redis store's server evicted \d+ key\(s\) since the last warning \(allowEviction: true\): a settled key among them runs again on redelivery/)
  }, FAULT_TEST_TIMEOUT_MS)
})

describe('a Redis that lost its data while an engine ran', () => {
  it.each([
    ['FLUSHALL, the keys delivered again at once (the call itself finds the loss)', 'flush'],
    ['SIGKILL and a restart with no persistence, no traffic until the marker is written', 'restart'],
  ])('%s: every message in-flight with STORE_RESET, 0 handler runs, until idem store ack-reset', async (_, how) => {
    const redis = await server()
    const seen = warnings()
    const prefix = `reset-${how}:${randomUUID()}:`
    const engine = await engineOn(redis.url, prefix)
    const runs = new Map<string, number>()
    const handler = (m: { key: string }) => void runs.set(m.key, (runs.get(m.key) ?? 0) + 1)
    const first = await engine.processBatch(keys(KEYS, 'old'), handler)
    expect(tally(first)).toEqual({ new: KEYS })

    let polls = 0
    if (how === 'flush') await redis.admin.flushall()
    else {
      redis.kill('SIGKILL')
      await redis.restart()
      // No message flows: the store's timer must find the loss and write the marker; 50 polls of 100 ms bound it to about 5 s.
      for (; polls < 50; polls++) {
        const record = await redis.admin.get(`${prefix}identity`).catch(() => null)
        if (record?.includes('"state":"reset"')) break
        await sleep(100)
      }
      expect(polls).toBeLessThan(50)
    }
    const runsBefore = runs.size
    const again = await engine.processBatch(keys(KEYS, 'old'), handler)
    const fresh = await engine.processBatch(keys(100, 'new'), handler)
    const marker = await redis.admin.get(`${prefix}identity`)
    const stats = engine.stats().totals
    console.log(
      `reset (${how}): ${KEYS} keys settled, then the loss${how === 'restart' ? `, marker seen after ${polls} polls of 100 ms without traffic` : ''}; redelivered ${JSON.stringify(tally(again))}, new keys ${JSON.stringify(tally(fresh))}, handler runs during the reset ${runs.size - runsBefore}; storeResets ${stats.storeResets}, storeFailures ${stats.storeFailures}; IDEM_STORE_RESET warnings ${seen.get('IDEM_STORE_RESET')?.length ?? 0}; marker ${marker}`,
    )
    expect(tally(again)).toEqual({ 'in-flight/STORE_RESET': KEYS })
    expect(tally(fresh)).toEqual({ 'in-flight/STORE_RESET': 100 })
    expect(runs.size).toBe(runsBefore)
    expect(stats.storeResets).toBeGreaterThanOrEqual(1)
    expect(seen.get('IDEM_STORE_RESET')?.[0]).toContain(`the redis store under prefix ${JSON.stringify(prefix)} lost its data`)
    expect(marker).toMatch(/^\{"layout":1,"hashTags":64,"storeId":"[0-9a-f]{16}","state":"reset","since":\d{13}\}$/)

    const ack = idem('store', 'ack-reset', '--store', redis.url, '--prefix', prefix)
    expect(ack.code).toBe(0)
    expect(ack.stdout).toContain('every key settled before the loss runs again when it is delivered again')
    // The engine resumes without a restart once its timer adopts the acknowledged identity.
    const resumed = await untilResumed(engine, keys(100, 'new'), handler)
    const rerun = await engine.processBatch(keys(KEYS, 'old'), handler)
    const twice = [...runs.values()].filter((n) => n === 2).length
    console.log(
      `reset (${how}) acknowledged: new keys ${JSON.stringify(tally(resumed.outcomes))} after ${resumed.rounds} round(s); old keys redelivered ${JSON.stringify(tally(rerun))}, ${twice} keys ran twice (settled before the loss); ${idem('store', 'show', '--store', redis.url, '--prefix', prefix).stdout.trim()}`,
    )
    expect(tally(resumed.outcomes)).toEqual({ new: 100 })
    expect(tally(rerun)).toEqual({ new: KEYS })
    expect(twice).toBe(KEYS)
  }, FAULT_TEST_TIMEOUT_MS)
})
