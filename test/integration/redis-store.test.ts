import { fork } from 'node:child_process'
import { randomUUID } from 'node:crypto'
import { fileURLToPath } from 'node:url'
import { Redis } from 'ioredis'
import { afterAll, afterEach, describe, expect, it } from 'vitest'
import { createEngine, type Engine } from '../../dist/src/engine.js'
import { ConfigError, ErrorCode } from '../../dist/src/errors.js'
import type { Message } from '../../dist/src/message.js'
import { resolveRedisStore } from '../../dist/src/store/redis/redis-options.js'
import { RedisStore } from '../../dist/src/store/redis/redis-store.js'
import { ClaimCode } from '../../dist/src/store/store.js'
import { hashTagOf, recordKey } from '../../dist/src/store/redis/redis-records.js'
import { StoreFactory } from '../../dist/src/store/store-factory.js'
import { systemClock } from '../../dist/src/clock.js'
import { deleteKeysUnder } from '../../dist/src/store/redis/delete-keys.js'

const url = 'redis://127.0.0.1:6379'
const redis = new Redis(url)
const prefixes: string[] = []
const engines: Engine[] = []

function prefix(): string {
  const p = `test:${randomUUID()}:`
  prefixes.push(p)
  return p
}
async function engine(options: Record<string, unknown> = {}, store: Record<string, unknown> = {}): Promise<Engine> {
  const created = await createEngine({ shards: 4, ...options, store: { kind: 'redis', url, prefix: prefix(), ...store } })
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

function counter() {
  const effects = new Map<string, number>()
  const handler = (m: Message): string => {
    const id = `${m.namespace ?? ''}|${m.key}`
    effects.set(id, (effects.get(id) ?? 0) + 1)
    return `done:${m.key}`
  }
  return { effects, handler }
}

describe('redis store through the engine', () => {
  it('keys of different namespaces never share a record, whatever characters they hold', async () => {
    const e = await engine({ lru: { maxKeys: 0 } })
    const { effects, handler } = counter()
    const messages: Message[] = [
      { key: 'b:c', namespace: 'a' },
      { key: 'c', namespace: 'a:b' },
      { key: 'a:b:c' },
      { key: 'n1:a:b:c' },
      { key: '{x}', namespace: '{' },
      { key: 'x}', namespace: '{{' },
      { key: 'ключ', namespace: 'ключ' },
      { key: 'k:ключ' },
    ]
    const first = await e.processBatch(messages, handler)
    expect(first.map((o) => o.verdict)).toEqual(messages.map(() => 'new'))
    const second = await e.processBatch(messages, handler)
    expect(second.map((o) => o.verdict)).toEqual(messages.map(() => 'duplicate'))
    expect(effects.size).toBe(messages.length)
  })

  it('a second engine sharing the prefix sees DONE keys as duplicates with their stored results', async () => {
    const p = prefix()
    const a = await engine({}, { prefix: p })
    const b = await engine({ threads: 1 }, { prefix: p })
    const { effects, handler } = counter()
    await a.processBatch([{ key: 'x' }, { key: 'y' }], handler)
    const outs = await b.processBatch([{ key: 'x' }, { key: 'y' }, { key: 'z' }], handler)
    expect(outs).toEqual([
      { key: 'x', verdict: 'duplicate', result: 'done:x' },
      { key: 'y', verdict: 'duplicate', result: 'done:y' },
      { key: 'z', verdict: 'new', result: 'done:z' },
    ])
    expect([...effects.values()]).toEqual([1, 1, 1])
  })

  it('a DONE key learned from the store is held in the LRU only as long as the store keeps it', async () => {
    const p = prefix()
    const a = await engine({ ttlMs: 1_000 }, { prefix: p })
    const b = await engine({ ttlMs: 1_000 }, { prefix: p })
    let runs = 0
    const handler = () => ++runs
    await a.process({ key: 'short' }, handler)
    await new Promise((resolve) => setTimeout(resolve, 600))
    expect((await b.process({ key: 'short' }, handler)).verdict).toBe('duplicate') // from the store, ~400 ms left
    await new Promise((resolve) => setTimeout(resolve, 550))
    // Expired in Redis; b's LRU must not answer for a full TTL from when it learned the key.
    expect((await b.process({ key: 'short' }, handler)).verdict).toBe('new')
    expect(runs).toBe(2)
  })

  it('copies of a key sent together are duplicates of the first, not in flight: the claim that goes right behind the commit sees it', async () => {
    // LRU off: the copies (repeats of the first batch) are decided by the store, in the step that carries the first copy's commit.
    const e = await engine({ shards: 1, lru: { maxKeys: 0 } })
    let effects = 0
    const slow = async (): Promise<void> => {
      await new Promise((resolve) => setTimeout(resolve, 5))
      effects++
    }
    const outs = await Promise.all(Array.from({ length: 20 }, () => e.process({ key: 'same' }, slow)))
    expect(outs.map((o) => o.verdict).sort()).toEqual(['new', ...Array(19).fill('duplicate')].sort())
    expect(effects).toBe(1)
  })

  it('a fingerprint change under a DONE key is a conflict, found by the store when the LRU is off', async () => {
    const e = await engine({ lru: { maxKeys: 0 } })
    const { handler } = counter()
    await e.process({ key: 'order-1', fingerprint: 'sha:aaa' }, handler)
    const out = await e.process({ key: 'order-1', fingerprint: 'sha:bbb' }, handler)
    expect(out.verdict).toBe('conflict')
    expect(out.error?.code).toBe(ErrorCode.CONFLICT)
    expect(out.error?.message).toContain('sha:aaa')
  })

  it('a result over maxResultBytes is refused with RESULT_TOO_LARGE, the key is still done, and duplicates come back without it', async () => {
    const e = await engine({ lru: { maxKeys: 0 } }, { maxResultBytes: 100 })
    let runs = 0
    const big = () => {
      runs++
      return 'x'.repeat(200)
    }
    const first = await e.process({ key: 'big' }, big)
    expect(first.verdict).toBe('new')
    expect(first.error?.code).toBe(ErrorCode.RESULT_TOO_LARGE)
    const again = await e.process({ key: 'big' }, big)
    expect(again).toEqual({ key: 'big', verdict: 'duplicate' })
    expect(runs).toBe(1)
    const small = await e.process({ key: 'small' }, () => 'ok')
    expect(small).toEqual({ key: 'small', verdict: 'new', result: 'ok' })
  })

  it('a result JSON cannot hold is refused with RESULT_NOT_SERIALIZABLE; the key is still done', async () => {
    const e = await engine({ lru: { maxKeys: 0 } })
    const first = await e.process({ key: 'bigint' }, () => 10n)
    expect(first.error?.code).toBe(ErrorCode.RESULT_NOT_SERIALIZABLE)
    expect((await e.process({ key: 'bigint' }, () => 1)).verdict).toBe('duplicate')
  })

  it('an ioredis client passed in is used and left open; with threads > 0 it is refused', async () => {
    const client = new Redis(url)
    try {
      const e = await createEngine({ shards: 2, store: { kind: 'redis', client, prefix: prefix() } })
      expect((await e.process({ key: 'c' }, () => 1)).verdict).toBe('new')
      await e.close()
      expect(await client.ping()).toBe('PONG')
      await expect(createEngine({ shards: 2, threads: 1, store: { kind: 'redis', client } })).rejects.toThrow(ConfigError)
    } finally {
      client.disconnect()
    }
  })

  it('two engines in two processes, fed overlapping batches of the same keys at once, make exactly one effect per key', async () => {
    const p = prefix()
    const effectsKey = `${p}effects`
    const script = fileURLToPath(new URL('../support/fixtures/redis-engine-child.mjs', import.meta.url))
    const run = (threads: number) =>
      new Promise<Record<string, number>>((resolve, reject) => {
        const child = fork(script, [url, p, effectsKey, String(threads), '20000', '14000'], { stdio: 'inherit' })
        let verdicts: Record<string, number> = {}
        child.on('message', (m) => (verdicts = m as Record<string, number>))
        child.on('error', reject)
        child.on('exit', (code) => (code === 0 ? resolve(verdicts) : reject(new Error(`child exited with ${code}`))))
      })
    const [a, b] = await Promise.all([run(0), run(2)])
    // Both took part: each ran some keys first, and the other saw them as duplicates or in flight.
    expect(a.new + b.new).toBe(14_000)
    expect(a.new).toBeGreaterThan(0)
    expect(b.new).toBeGreaterThan(0)
    const effects = await redis.hgetall(effectsKey)
    const counts = Object.values(effects).map(Number)
    expect(counts.length).toBe(14_000)
    expect(counts.filter((c) => c !== 1)).toEqual([])
  }, 60_000)
})

describe('redis calls: the shards of a thread share one store', () => {
  type Call = { operations: string[]; sent: number; replied?: number }
  /** A real client whose script calls are recorded: the operations each call carries, when it was sent and when its reply was handed back. */
  async function recordedClient(delayReplyOf?: (operations: string[]) => number): Promise<{ client: Redis; calls: Call[] }> {
    const client = new Redis(url)
    const calls: Call[] = []
    // Defines idemBatch on the client, as every engine store over it would.
    await new RedisStore(resolveRedisStore({ kind: 'redis', client, prefix: prefix() }, 0, [])).close()
    const send = (client as any).idemBatch.bind(client)
    ;(client as any).idemBatch = (...args: string[]) => {
      // keyCount, the first lease key, the identity key and record batch.lua checks, then the operations.
      const argv = args.slice(4)
      const operations: string[] = []
      for (let at = 1, n = Number(argv[0]); operations.length < n; at += 3 + Number(argv[at + 2])) operations.push(argv[at])
      const call: Call = { operations, sent: calls.length }
      calls.push(call)
      return send(...args).then(async (reply: unknown) => {
        const delay = delayReplyOf?.(operations) ?? 0
        if (delay > 0) await new Promise((resolve) => setTimeout(resolve, delay))
        call.replied = calls.length
        return reply
      })
    }
    return { client, calls }
  }

  it('the small operations of one turn from every shard go out as one call', async () => {
    const { client, calls } = await recordedClient()
    try {
      const e = await createEngine({ shards: 8, store: { kind: 'redis', client, prefix: prefix() } })
      const outs = await e.processBatch(Array.from({ length: 40 }, (_, i) => ({ key: `small-${i}` })), () => 1)
      expect(outs.every((o) => o.verdict === 'new')).toBe(true)
      await e.close()
      // 40 keys over 8 shards: every claim in one call, then every commit in one call (not one call per shard and operation).
      expect(calls.map((c) => c.operations.length)).toEqual([8, 8])
      expect(calls[0].operations.every((o) => o === 'claim')).toBe(true)
      expect(calls[1].operations.every((o) => o === 'commit')).toBe(true)
    } finally {
      client.disconnect()
    }
  })

  it('big operations keep a call of their own, so Redis works on one while the client prepares the next', async () => {
    const { client, calls } = await recordedClient()
    try {
      const e = await createEngine({ shards: 8, store: { kind: 'redis', client, prefix: prefix() } })
      await e.processBatch(Array.from({ length: 1024 }, (_, i) => ({ key: `big-${i}` })), () => 1)
      await e.close()
      // About 128 keys per shard, all claimed in one turn: each claim goes alone.
      expect(calls.filter((c) => c.operations.includes('claim')).map((c) => c.operations)).toEqual(Array(8).fill(['claim']))
    } finally {
      client.disconnect()
    }
  })

  it('an operation of at least 64 keys goes alone; the small ones made before and after it share calls, in order', async () => {
    const { client, calls } = await recordedClient()
    try {
      const store = new RedisStore(resolveRedisStore({ kind: 'redis', client, prefix: prefix() }, 0, []))
      const keys = (name: string, n: number) => Array.from({ length: n }, (_, i) => `${name}-${i}`)
      const claim = (name: string, n: number) => store.claim(keys(name, n), Array(n).fill(undefined), `token-${name}`, 30_000, 60_000)
      const replies = await Promise.all([claim('a', 4), claim('b', 100), claim('c', 4), claim('d', 4)])
      expect(replies.map((r) => r.codes.every((code) => code === ClaimCode.CLAIMED))).toEqual([true, true, true, true])
      expect(calls.map((c) => c.operations.length)).toEqual([1, 1, 2])
      await store.close()
    } finally {
      client.disconnect()
    }
  })

  it('an operation that fails in Redis fails alone: the other shards of its call are unaffected', async () => {
    const p = prefix()
    const { client, calls } = await recordedClient()
    try {
      // A record key holding a hash: a claim's SET … GET on it raises WRONGTYPE inside the script.
      await redis.hset(recordKey(p, hashTagOf('broken', 64), 'broken'), 'not', 'a record')
      const e = await createEngine({ shards: 8, store: { kind: 'redis', client, prefix: p, retries: 0 } })
      const outs = await e.processBatch([...Array.from({ length: 20 }, (_, i) => ({ key: `fine-${i}` })), { key: 'broken' }], () => 1)
      await e.close()
      // No retries: the first call decides. Only the claim of the broken key's shard batch fails (its keys come back in-flight, to retry later).
      const fine = outs.slice(0, 20)
      expect(fine.filter((o) => o.verdict === 'new').length).toBeGreaterThanOrEqual(10)
      expect(fine.every((o) => o.verdict === 'new' || o.error?.message.includes('WRONGTYPE'))).toBe(true)
      expect(outs[20].verdict).toBe('in-flight')
      expect(outs[20].error?.code).toBe(ErrorCode.STORE_FAILED)
      expect(outs[20].error?.message).toContain('WRONGTYPE')
      // The failing claim shared its first call with the other shards' claims.
      expect(calls[0].operations.filter((o) => o === 'claim').length).toBeGreaterThan(1)
    } finally {
      client.disconnect()
    }
  })

  it('the shards of a thread share one Redis store, except with requireReplicas (its WAIT blocks a connection)', async () => {
    const shared = new StoreFactory(resolveRedisStore({ kind: 'redis', url, prefix: prefix() }, 0, []), systemClock)
    const apart = new StoreFactory(resolveRedisStore({ kind: 'redis', url, prefix: prefix(), requireReplicas: 1 }, 0, []), systemClock)
    try {
      expect(shared.forShard(0)).toBe(shared.forShard(1))
      expect(apart.forShard(0)).not.toBe(apart.forShard(1))
    } finally {
      await Promise.all([shared.close(), apart.close()])
    }
  })

  it('a message that arrives while a commit is on its way is claimed at once, beside the commit; a copy of the committing key waits for it and is a duplicate', async () => {
    // The commit's reply is held back 100 ms: the shard must not wait for it before claiming the next message.
    const { client, calls } = await recordedClient((operations) => (operations.includes('commit') ? 100 : 0))
    try {
      const e = await createEngine({ shards: 1, lru: { maxKeys: 0 }, store: { kind: 'redis', client, prefix: prefix() } })
      const effects: string[] = []
      let later: Promise<unknown>[] = []
      const handler = (m: { key: string }): void => {
        effects.push(m.key)
        // After this turn: the shard has sent the commit of k.
        if (m.key === 'k') setImmediate(() => (later = [e.process({ key: 'other' }, handler), e.process({ key: 'k' }, handler)]))
      }
      const first = await e.process({ key: 'k' }, handler)
      await new Promise((resolve) => setImmediate(resolve))
      const [other, copy] = await Promise.all(later)
      await e.close()
      expect(first).toEqual({ key: 'k', verdict: 'new' })
      expect(other).toEqual({ key: 'other', verdict: 'new' })
      expect(copy).toEqual({ key: 'k', verdict: 'duplicate' })
      expect(effects).toEqual(['k', 'other'])
      const commit = calls.find((c) => c.operations.includes('commit'))!
      const secondClaim = calls.filter((c) => c.operations.includes('claim'))[1]
      expect(secondClaim.sent).toBeLessThan(commit.replied!)
    } finally {
      client.disconnect()
    }
  })
})

describe('redis records: one lease record per batch', () => {
  const stores: RedisStore[] = []
  afterEach(async () => {
    await Promise.all(stores.splice(0).map((s) => s.close()))
  })
  function store(p: string): RedisStore {
    const created = new RedisStore(resolveRedisStore({ kind: 'redis', url, prefix: p }, 0, []))
    stores.push(created)
    return created
  }
  const none = (keys: string[]) => keys.map(() => undefined)

  it('a commit of every key a token holds is one write to its lease record; other owners then see DONE with the fingerprints and the TTL', async () => {
    const p = prefix()
    const a = store(p)
    const keys = ['a', 'b', 'c']
    await a.claim(keys, ['"fa"', '"fb"', undefined], 'A', 5_000, 60_000)
    expect(await redis.get(`${p}t:A`)).toBe('p')
    expect(Array.from(await a.commit(keys, undefined, 'A', 60_000))).toEqual([1, 1, 1])
    expect(await redis.get(`${p}t:A`)).toBe('d')
    expect(await redis.pttl(`${p}t:A`)).toBeGreaterThan(59_000)
    // The key records were not rewritten: still 'p' under A, answered DONE through A's lease record.
    const record = await redis.get((await redis.keys(`${p}{*}k:a`))[0])
    expect(record?.startsWith('pA\n')).toBe(true)
    const seen = await store(p).claim(keys, none(keys), 'B', 5_000, 60_000)
    expect(Array.from(seen.codes)).toEqual([ClaimCode.DONE, ClaimCode.DONE, ClaimCode.DONE])
    expect(seen.fingerprints).toEqual(['"fa"', '"fb"', undefined])
    expect(seen.doneExpiresInMs![0]).toBeGreaterThan(59_000)
    expect(seen.doneExpiresInMs![0]).toBeLessThanOrEqual(60_000)
  })

  it('released keys are free again and the rest of the batch commits at once', async () => {
    const p = prefix()
    const a = store(p)
    const keys = ['ok-1', 'threw', 'ok-2']
    await a.claim(keys, none(keys), 'A', 5_000, 60_000)
    expect(Array.from(await a.release(['threw'], 'A'))).toEqual([1])
    expect(Array.from(await a.commit(['ok-1', 'ok-2'], undefined, 'A', 60_000))).toEqual([1, 1])
    expect(await redis.get(`${p}t:A`)).toBe('d')
    const seen = await store(p).claim(keys, none(keys), 'B', 5_000, 60_000)
    expect(Array.from(seen.codes)).toEqual([ClaimCode.DONE, ClaimCode.CLAIMED, ClaimCode.DONE])
  })

  it('a commit of part of a batch writes DONE into those keys only; the rest stay in progress', async () => {
    const p = prefix()
    const a = store(p)
    const keys = ['first', 'second']
    await a.claim(keys, none(keys), 'A', 5_000, 60_000)
    expect(Array.from(await a.commit(['first'], undefined, 'A', 60_000))).toEqual([1])
    expect(await redis.get(`${p}t:A`)).toBe('p')
    const seen = await store(p).claim(keys, none(keys), 'B', 5_000, 60_000)
    expect(Array.from(seen.codes)).toEqual([ClaimCode.DONE, ClaimCode.IN_PROGRESS])
  })

  it('a key record outlives its lease by the TTL, and renewal keeps that margin for a handler longer than the TTL', async () => {
    const p = prefix()
    const a = store(p)
    // A long lease and a short TTL: renewals every 1.5 s hold even on a loaded machine, and outlast lease + TTL.
    await a.claim(['slow'], [undefined], 'A', 5_000, 300)
    const recordKey = (await redis.keys(`${p}{*}k:slow`))[0]
    const margin = async () => {
      const [[, record], [, lease]] = (await redis.pipeline().pttl(recordKey).pttl(`${p}t:A`).exec()) as [unknown, number][]
      return record - lease
    }
    expect(await margin()).toBeGreaterThan(250)
    for (let i = 0; i < 4; i++) {
      await new Promise((resolve) => setTimeout(resolve, 1_500))
      expect(Array.from(await a.renew(['slow'], 'A', 5_000, 300))).toEqual([1])
      expect(await margin()).toBeGreaterThan(250)
    }
    // 6 s after the claim, longer than lease + TTL: still in progress, and the commit lands.
    expect((await store(p).claim(['slow'], [undefined], 'B', 5_000, 300)).codes[0]).toBe(ClaimCode.IN_PROGRESS)
    expect(Array.from(await a.commit(['slow'], undefined, 'A', 300))).toEqual([1])
  }, 20_000)
})

describe('deleteKeysUnder (the clean-up of the demo, the benches and the tests)', () => {
  it('deletes every key under the prefix and nothing else, even when the prefix holds glob characters', async () => {
    const base = prefix()
    const under = `${base}a*b?[c]\\d:`
    const keys = [`${under}1`, `${under}2`]
    // What an unescaped pattern would also match: `a*b` globbing `aXXb`, `[c]` globbing `c`, and so on.
    const neighbours = [`${base}aXXbY[c]\\d:3`, `${base}a*b?c\\d:4`, `${base}a*b?[c]d:5`]
    for (const key of [...keys, ...neighbours]) await redis.set(key, '1')
    await deleteKeysUnder(redis, under)
    expect(await redis.exists(...keys)).toBe(0)
    expect(await redis.exists(...neighbours)).toBe(neighbours.length)
    await deleteKeysUnder(redis, base)
    expect(await redis.exists(...neighbours)).toBe(0)
  })
})
