/**
 * The Redis store's checks of the server and its replies, against the shared
 * Redis: a server older than 7.0 is refused, and replies no retry can fix fail
 * at once with what to do, instead of after every retry.
 */
import { randomUUID } from 'node:crypto'
import { Redis } from 'ioredis'
import { afterAll, describe, expect, it } from 'vitest'
import { ErrorCode, IdemError } from '../../dist/src/errors.js'
import { resolveRedisStore } from '../../dist/src/store/redis/redis-options.js'
import { recordKey, hashTagOf } from '../../dist/src/store/redis/redis-records.js'
import { RedisStore } from '../../dist/src/store/redis/redis-store.js'
import { deleteKeysUnder } from '../../dist/src/store/redis/delete-keys.js'
import { startRedis } from '../support/redis-server.js'

const url = 'redis://127.0.0.1:6379'
const redis = new Redis(url)
const prefixes: string[] = []
afterAll(async () => {
  for (const p of prefixes) await deleteKeysUnder(redis, p)
  redis.disconnect()
})

function store(client?: Redis): { store: RedisStore; prefix: string } {
  const prefix = `test:${randomUUID()}:`
  prefixes.push(prefix)
  const options = client === undefined ? { kind: 'redis', url, prefix, retries: 3, retryBackoffMs: 1 } : { kind: 'redis', client, prefix, retries: 3, retryBackoffMs: 1 }
  return { store: new RedisStore(resolveRedisStore(options, 0, [])), prefix }
}

async function failure(promise: Promise<unknown>): Promise<IdemError> {
  const error = await promise.then(
    () => undefined,
    (e: unknown) => e,
  )
  expect(error).toBeInstanceOf(IdemError)
  return error as IdemError
}

describe('redis store: the server and its replies', () => {
  it('a server older than 7.0 is refused at the first call with STORE_UNSUPPORTED and its version, and nothing is written', async () => {
    // A real connection whose INFO answers as Redis 6.2 would: there is no Redis 6 on this machine.
    const client = new Redis(url)
    // After ready: ioredis's own ready check calls INFO too, and must see the real answer.
    await new Promise((resolve) => client.once('ready', resolve))
    const info = client.info.bind(client)
    client.info = (async () => (await info('server')).replace(/redis_version:[\d.]+/, 'redis_version:6.2.14')) as typeof client.info
    const { store: s, prefix } = store(client)
    const error = await failure(s.claim(['k'], [undefined], 'A', 1_000, 10_000))
    expect(error.code).toBe(ErrorCode.STORE_UNSUPPORTED)
    expect(error.message).toBe('the redis store needs Redis 7.0 or later (claims use SET … NX … GET); this server is Redis 6.2.14')
    expect(s.health).toEqual({ retries: 0, failures: 1, resets: 0, evictions: 0 })
    expect(await redis.exists(recordKey(prefix, hashTagOf('k', 64), 'k'))).toBe(0)
    client.disconnect()
  })

  it('a user the server will not answer INFO (ACL -info) is let through, and concurrent first calls share one version check', async () => {
    const server = await startRedis()
    try {
      const admin = new Redis(server.url)
      await admin.call('ACL', 'SETUSER', 'idem', 'on', 'nopass', '~*', '&*', '+@all', '-info')
      const limited = new RedisStore(resolveRedisStore({ kind: 'redis', url: server.url.replace('redis://', 'redis://idem@'), prefix: 'p:', retries: 0 }, 0, []))
      const claims = await Promise.all(Array.from({ length: 16 }, (_, i) => limited.claim([`k${i}`], [undefined], `T${i}`, 1_000, 10_000)))
      expect(claims.map((c) => c.codes[0])).toEqual(Array.from({ length: 16 }, () => 0))
      await limited.close()

      await admin.call('CONFIG', 'RESETSTAT')
      const full = new RedisStore(resolveRedisStore({ kind: 'redis', url: server.url, prefix: 'q:' }, 0, []))
      await Promise.all(Array.from({ length: 16 }, (_, i) => full.claim([`k${i}`], [undefined], `T${i}`, 1_000, 10_000)))
      await full.claim(['last'], [undefined], 'L', 1_000, 10_000)
      const stats = String(await admin.info('commandstats'))
      // Two INFO in all: ioredis's ready check of the store's new connection, and one version check for 17 calls.
      expect(/cmdstat_info:calls=(\d+)/.exec(stats)?.[1]).toBe('2')
      await full.close()
      admin.disconnect()
    } finally {
      await server.stop()
    }
  })

  it.each(['allkeys-lru', 'volatile-lru', 'volatile-ttl'])('a server with maxmemory-policy %s is refused with STORE_UNSAFE naming the policy and the fix, and nothing is written; allowEviction: true accepts it', async (policy) => {
    const server = await startRedis({ args: ['--maxmemory', '64mb', '--maxmemory-policy', policy] })
    const admin = new Redis(server.url)
    try {
      const refusing = new RedisStore(resolveRedisStore({ kind: 'redis', url: server.url, prefix: 'p:', retries: 2, retryBackoffMs: 1 }, 0, []))
      const error = await failure(refusing.claim(['k'], [undefined], 'A', 1_000, 10_000))
      expect(error.code).toBe(ErrorCode.STORE_UNSAFE)
      expect(error.message).toBe(
        `the redis store refuses a server with maxmemory-policy ${policy}: an evicted record lets a settled key run again, and an evicted lease lets a second owner in; set maxmemory-policy noeviction on the server, or store.allowEviction: true to accept the risk`,
      )
      expect(refusing.health).toEqual({ retries: 0, failures: 1, resets: 0, evictions: 0 })
      expect(await admin.dbsize()).toBe(0)
      await refusing.close()
      const accepting = new RedisStore(resolveRedisStore({ kind: 'redis', url: server.url, prefix: 'p:', allowEviction: true }, 0, []))
      expect(Array.from((await accepting.claim(['k'], [undefined], 'A', 1_000, 10_000)).codes)).toEqual([0])
      await accepting.close()
    } finally {
      admin.disconnect()
      await server.stop()
    }
  })

  it('the server on this machine (7.0 or later) is accepted', async () => {
    const { store: s } = store()
    expect(Array.from((await s.claim(['k'], [undefined], 'A', 1_000, 10_000)).codes)).toEqual([0])
    await s.close()
  })

  it('WRONGTYPE (another program writes under the prefix) fails at once with STORE_FAILED and what to do, no retries', async () => {
    const { store: s, prefix } = store()
    await redis.hset(recordKey(prefix, hashTagOf('taken', 64), 'taken'), 'field', 'value')
    const error = await failure(s.claim(['taken'], [undefined], 'A', 1_000, 10_000))
    expect(error.code).toBe(ErrorCode.STORE_FAILED)
    expect(error.message).toMatch(/^redis store: .*WRONGTYPE.*\(a key idem writes holds another data type: another program writes under this prefix; choose another one\)$/)
    expect(s.health).toEqual({ retries: 0, failures: 1, resets: 0, evictions: 0 })
    await s.close()
  })

  it('a reply worth retrying (connection refused) is retried `retries` times, then STORE_FAILED names the attempts', async () => {
    const s = new RedisStore(resolveRedisStore({ kind: 'redis', url: 'redis://127.0.0.1:1', prefix: 'unused:', retries: 2, retryBackoffMs: 1, commandTimeoutMs: 200 }, 0, []))
    const error = await failure(s.claim(['k'], [undefined], 'A', 1_000, 10_000))
    expect(error.code).toBe(ErrorCode.STORE_FAILED)
    expect(error.message).toMatch(/^redis claim failed after 3 attempt\(s\): /)
    expect(s.health).toEqual({ retries: 2, failures: 1, resets: 0, evictions: 0 })
    await s.close()
  })
})
