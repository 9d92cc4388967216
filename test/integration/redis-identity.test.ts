/**
 * The Redis store's identity record, against the shared Redis, each test on a
 * prefix of its own (a loss is simulated by deleting that prefix's record,
 * never by a flush): what the record holds, one record for stores that start
 * at once, a layout or a record that is not idem's refused, and `idem store
 * show|ack-reset` as an operator runs them. The real losses (FLUSHALL, a
 * restart without persistence) are in test/fault/redis-guardrails.test.ts.
 */
import { randomUUID } from 'node:crypto'
import { Redis } from 'ioredis'
import { afterAll, describe, expect, it } from 'vitest'
import { createEngine } from '../../dist/src/engine.js'
import { ErrorCode, IdemError } from '../../dist/src/errors.js'
import { deleteKeysUnder } from '../../dist/src/store/redis/delete-keys.js'
import { resolveRedisStore } from '../../dist/src/store/redis/redis-options.js'
import { RedisStore } from '../../dist/src/store/redis/redis-store.js'
import { idem } from '../support/idem-cli.js'

const url = 'redis://127.0.0.1:6379'
const redis = new Redis(url)
const prefixes: string[] = []
const stores: RedisStore[] = []
afterAll(async () => {
  await Promise.all(stores.map((s) => s.close()))
  for (const p of prefixes) await deleteKeysUnder(redis, p)
  redis.disconnect()
})

function newPrefix(): string {
  const prefix = `test:${randomUUID()}:`
  prefixes.push(prefix)
  return prefix
}

function store(prefix: string, options: Record<string, unknown> = {}): RedisStore {
  const s = new RedisStore(resolveRedisStore({ kind: 'redis', url, prefix, retries: 1, retryBackoffMs: 1, ...options }, 0, []))
  stores.push(s)
  return s
}

const claim = (s: RedisStore, key: string) => s.claim([key], [undefined], `T${randomUUID()}`, 1_000, 10_000)

async function failure(promise: Promise<unknown>): Promise<IdemError> {
  const error = await promise.then(
    () => undefined,
    (e: unknown) => e,
  )
  expect(error).toBeInstanceOf(IdemError)
  return error as IdemError
}


describe('redis store: the identity record', () => {
  it('is created at first use: layout, hashTags, a random 16-hex store id, state ok, in that order', async () => {
    const prefix = newPrefix()
    const s = store(prefix, { hashTags: 16 })
    expect(Array.from((await claim(s, 'k')).codes)).toEqual([0])
    expect(await redis.get(`${prefix}identity`)).toMatch(/^\{"layout":1,"hashTags":16,"storeId":"[0-9a-f]{16}","state":"ok"\}$/)
  })

  it('eight stores starting at once on one prefix agree on one record, and each keeps working on it', async () => {
    const prefix = newPrefix()
    const started = Array.from({ length: 8 }, () => store(prefix))
    await Promise.all(started.map((s, i) => Promise.all([claim(s, `a-${i}`), claim(s, `b-${i}`)])))
    const record = await redis.get(`${prefix}identity`)
    // Each call checks the record its store accepted (batch.lua): a store holding another one would fail with STORE_RESET here.
    const again = await Promise.all(started.map((s, i) => claim(s, `c-${i}`)))
    expect(again.every((r) => r.codes[0] === 0)).toBe(true)
    expect(await redis.get(`${prefix}identity`)).toBe(record)
    expect(started.every((s) => s.health.resets === 0 && s.health.failures === 0)).toBe(true)
  })

  it('an engine with other hashTags on the same prefix is refused with STORE_LAYOUT_MISMATCH naming both and the fix; none of its handlers runs', async () => {
    const prefix = newPrefix()
    const a = await createEngine({ shards: 2, threads: 0, store: { kind: 'redis', url, prefix, hashTags: 64 } })
    const b = await createEngine({ shards: 2, threads: 0, store: { kind: 'redis', url, prefix, hashTags: 16 } })
    try {
      const messages = Array.from({ length: 100 }, (_, i) => ({ key: `k-${i}` }))
      expect((await a.processBatch(messages, () => 1)).every((o) => o.verdict === 'new')).toBe(true)
      let runs = 0
      const refused = await b.processBatch(messages, () => void runs++)
      const message = refused[0].error?.message
      console.log(`layout mismatch: A (hashTags 64) ran 100 keys; B (hashTags 16) got ${refused.filter((o) => o.verdict === 'in-flight' && o.error?.code === ErrorCode.STORE_LAYOUT_MISMATCH).length} of 100 in-flight STORE_LAYOUT_MISMATCH, ${runs} runs`)
      expect(refused.every((o) => o.verdict === 'in-flight' && o.error?.code === ErrorCode.STORE_LAYOUT_MISMATCH)).toBe(true)
      expect(runs).toBe(0)
      expect(message).toContain(`the records under prefix ${JSON.stringify(prefix)} are spread over hashTags 64`)
      expect(message).toContain('this engine has hashTags 16')
      expect(message).toContain('set store.hashTags: 64, or use another store.prefix')
    } finally {
      await Promise.all([a.close(), b.close()])
    }
  })

  it('a value that is not an idem identity record is refused with STORE_LAYOUT_MISMATCH, and nothing is written', async () => {
    const prefix = newPrefix()
    await redis.set(`${prefix}identity`, 'hello')
    const error = await failure(claim(store(prefix), 'k'))
    expect(error.code).toBe(ErrorCode.STORE_LAYOUT_MISMATCH)
    expect(error.message).toBe(`the key ${JSON.stringify(`${prefix}identity`)} holds "hello", not an idem identity record: another program writes under this prefix; choose another store.prefix`)
    expect(await redis.keys(`${prefix}*`)).toEqual([`${prefix}identity`])
  })

  it('a record deleted under a running store: its next call fails closed with STORE_RESET, a new store on the prefix too; ack-reset lets both run', async () => {
    const prefix = newPrefix()
    const s = store(prefix)
    await claim(s, 'before')
    await redis.del(`${prefix}identity`)
    const error = await failure(claim(s, 'after'))
    expect(error.code).toBe(ErrorCode.STORE_RESET)
    expect(s.health.resets).toBe(1)
    // Nothing of the failed call ran: the key has no record (inspect would fail closed too).
    expect((await redis.keys(`${prefix}*`)).filter((key) => key.endsWith('k:after'))).toEqual([])
    expect((await failure(s.inspect(['after']))).code).toBe(ErrorCode.STORE_RESET)
    const late = store(prefix)
    expect((await failure(claim(late, 'after'))).code).toBe(ErrorCode.STORE_RESET)

    const ack = idem('store', 'ack-reset', '--store', url, '--prefix', prefix)
    expect(ack.code).toBe(0)
    expect(ack.stdout).toMatch(/^idem store: acknowledged the reset of store [0-9a-f]{16} under /)
    // Both adopt the acknowledged record from their timers (every second): bounded by a count of tries.
    for (const resuming of [s, late]) {
      let tries = 0
      while (tries++ < 50 && (await claim(resuming, `resumed-${tries}`).then(() => false, () => true))) await new Promise((resolve) => setTimeout(resolve, 100))
      expect(tries).toBeLessThan(50)
    }
  })
})

describe('idem store show|ack-reset', () => {
  it('no reset to acknowledge: exit 0 and says so; show prints the record', async () => {
    const prefix = newPrefix()
    await claim(store(prefix), 'k')
    const record = await redis.get(`${prefix}identity`)
    const ack = idem('store', 'ack-reset', '--store', url, '--prefix', prefix)
    expect(ack.code).toBe(0)
    expect(ack.stdout).toBe(`idem store: no reset to acknowledge under ${JSON.stringify(prefix)} (${record})\n`)
    expect(await redis.get(`${prefix}identity`)).toBe(record)
    const show = idem('store', 'show', '--store', url, '--prefix', prefix)
    expect(show.code).toBe(0)
    expect(show.stdout).toBe(`${prefix}identity: ${record}\n`)
  })

  it('no record under the prefix: exit 1 with why there may be none', async () => {
    const prefix = newPrefix()
    const ack = idem('store', 'ack-reset', '--store', url, '--prefix', prefix)
    expect(ack.code).toBe(1)
    expect(ack.stderr).toBe(`idem store: no identity record under ${JSON.stringify(prefix)} (no engine has used it, or the reset has not been seen yet)\n`)
    expect(await redis.exists(`${prefix}identity`)).toBe(0)
  })

  it.each([
    [['ack-reset', '--store', 'http://localhost'], 2, '--store: must be a redis:// or rediss:// URL, got "http://localhost"'],
    [['ack-reset'], 2, '--store: give the Redis the engines use'],
    [['forget', '--store', url], 2, 'the action must be show or ack-reset, got "forget"'],
    [['ack-reset', '--store', 'redis://127.0.0.1:1'], 1, 'idem store: redis://127.0.0.1:1: connect ECONNREFUSED 127.0.0.1:1'],
  ])('bad input %j: exit %i with the reason', async (args, code, reason) => {
    const run = idem('store', ...(args as string[]))
    expect(run.code).toBe(code)
    expect(run.stderr).toContain(reason)
  })
})
