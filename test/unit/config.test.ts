import { describe, expect, it } from 'vitest'
import { resolveConfig } from '../../dist/src/config.js'
import { problemsOf } from '../support/config-problems.js'


describe('config', () => {
  it('fills defaults', () => {
    const config = resolveConfig({})
    expect(config).toMatchObject({ shards: 8, threads: 0, ttlMs: 86_400_000, leaseMs: 30_000, rollout: 'enforce', maxBatch: 1024, maxInFlightPerShard: 2048, keepResults: true })
    expect(config.bloom).toEqual({ expectedItems: 1_000_000, falsePositiveRate: 0.01 })
    expect(config.store).toEqual({ kind: 'memory' })
  })

  // One case per message: each options object has one bad field, and the test asserts the whole line.
  const cases: [string, unknown, string][] = [
    ['not an object', 42, 'options: must be an object, got 42'],
    ['unknown field', { shard: 4 }, 'shard: must be left out (not an option of createEngine; known: shards, threads, ttlMs, leaseMs, bloom, lru, store, rollout, inFlight, maxBatch, maxInFlightPerShard, keepResults, handlerTimeoutMs, reconcileAttempts, reconcileBackoffMs, mode, partitions, group, ownership, handler, reconcile, versions, strategies, typeOf, unknownType, metrics, audit, shadowReport), got 4'],
    ['shards zero', { shards: 0 }, 'shards: must be an integer from 1 to 65536, got 0'],
    ['shards fractional', { shards: 1.5 }, 'shards: must be an integer from 1 to 65536, got 1.5'],
    ['threads negative', { threads: -1 }, 'threads: must be an integer from 0 to 256, got -1'],
    ['threads more than shards', { shards: 2, threads: 3 }, 'threads: must be at most shards (2), as a thread with no shard would sit idle, got 3'],
    ['ttlMs string', { ttlMs: '1h' }, 'ttlMs: must be an integer from 1 to 4398046511104, got "1h"'],
    ['leaseMs too small', { leaseMs: 5 }, 'leaseMs: must be an integer from 10 to 2147483647, got 5'],
    ['leaseMs past what a renewal timer holds', { leaseMs: 2 ** 31 }, 'leaseMs: must be an integer from 10 to 2147483647, got 2147483648'],
    ['maxBatch zero', { maxBatch: 0 }, 'maxBatch: must be an integer from 1 to 65536, got 0'],
    ['maxInFlightPerShard zero', { maxInFlightPerShard: 0 }, 'maxInFlightPerShard: must be an integer from 1 to 1048576, got 0'],
    ['bloom not an object', { bloom: 5 }, 'bloom: must be an object, got 5'],
    ['bloom unknown field', { bloom: { expectedItem: 5 } }, 'bloom.expectedItem: must be left out (not an option of bloom; known: expectedItems, falsePositiveRate), got 5'],
    ['bloom items zero', { bloom: { expectedItems: 0 } }, 'bloom.expectedItems: must be an integer from 1 to 4294967296, got 0'],
    ['bloom rate one', { bloom: { falsePositiveRate: 1 } }, 'bloom.falsePositiveRate: must be a number in (0, 0.5], got 1'],
    ['bloom rate NaN', { bloom: { falsePositiveRate: Number.NaN } }, 'bloom.falsePositiveRate: must be a number in (0, 0.5], got NaN'],
    [
      'bloom too large for one shard',
      { shards: 1, bloom: { expectedItems: 2 ** 32, falsePositiveRate: 0.0001 } },
      "bloom.expectedItems: must be at most 224044921 at falsePositiveRate 0.0001 with 1 shard (each shard's bloom generation holds at most 2^32 bits), got 4294967296",
    ],
    ['lru an array', { lru: [1, 2] }, 'lru: must be an object, got [1, 2]'],
    ['lru unknown field', { lru: { size: 5 } }, 'lru.size: must be left out (not an option of lru; known: maxKeys), got 5'],
    ['lru negative', { lru: { maxKeys: -1 } }, 'lru.maxKeys: must be an integer from 0 to 1073741824, got -1'],
    ['store not an object', { store: 'redis' }, `store: must be an object like { kind: 'redis', url }, got "redis"`],
    ['store unknown', { store: { kind: 'dynamo' } }, `store.kind: must be 'memory', 'redis', 'postgres', 'mysql', 'sqlite' or 'custom', got "dynamo"`],
    ['memory store with options', { store: { kind: 'memory', url: 'redis://x' } }, 'store.url: must be left out (not an option of the memory store; known: kind), got "redis://x"'],
    ['rollout unknown', { rollout: 'log' }, `rollout: must be 'enforce', 'shadow' or { enforce: share } with the share from 0 to 1, got "log"`],
    ['handler empty', { handler: '' }, 'handler: must be a module path or a file URL, got ""'],
    ['handler a number', { handler: 5 }, 'handler: must be a module path or a file URL, got 5'],
    ['keepResults not boolean', { keepResults: 'yes' }, 'keepResults: must be a boolean, got "yes"'],
    ['handlerTimeoutMs negative', { handlerTimeoutMs: -1 }, 'handlerTimeoutMs: must be an integer from 0 to 2147483647, got -1'],
    ['handlerTimeoutMs past what a timer holds', { handlerTimeoutMs: 2 ** 31 }, 'handlerTimeoutMs: must be an integer from 0 to 2147483647, got 2147483648'],
    ['reconcile not a function', { reconcile: 'done' }, `reconcile: must be a function (message, { key, signal }) => 'done' | 'not-done' | 'unknown' | { result }, got "done"`],
    ['reconcileAttempts zero', { reconcileAttempts: 0 }, 'reconcileAttempts: must be an integer from 1 to 1000, got 0'],
    ['reconcileBackoffMs fractional', { reconcileBackoffMs: 1.5 }, 'reconcileBackoffMs: must be an integer from 1 to 2147483647, got 1.5'],
  ]
  for (const [name, options, message] of cases) {
    it(`refuses ${name}`, () => {
      expect(problemsOf(options)).toEqual([message])
    })
  }

  const redis = (options: Record<string, unknown>) => ({ store: { kind: 'redis', ...options } })
  const redisCases: [string, unknown, string][] = [
    ['without a server', redis({}), 'store: must be given exactly one of url, cluster or client for the redis store, got none'],
    ['with two servers', redis({ url: 'redis://a', cluster: [{ host: 'b', port: 1 }] }), 'store: must be given exactly one of url, cluster or client for the redis store, got url and cluster'],
    ['url not a URL', redis({ url: 'localhost:6379' }), 'store.url: must be a redis:// or rediss:// URL, got "localhost:6379"'],
    ['cluster nodes without a port', redis({ cluster: [{ host: 'a' }] }), 'store.cluster: must be a non-empty array of { host: string, port: number }, got [{ host: "a" }]'],
    ['client not a client', redis({ client: {} }), 'store.client: must be an ioredis Redis or Cluster instance, got {}'],
    [
      'client with threads',
      { shards: 2, threads: 1, ...redis({ client: { defineCommand() {} } }) },
      'store.client: must be left out with threads > 0, as a client object cannot cross into worker threads (give store.url or store.cluster), got { defineCommand: function defineCommand }',
    ],
    ['prefix with a brace', redis({ url: 'redis://x', prefix: 'a{b' }), 'store.prefix: must be a string without {, } or U+0000, got "a{b"'],
    ['hashTags 0', redis({ url: 'redis://x', hashTags: 0 }), 'store.hashTags: must be an integer from 1 to 16384, got 0'],
    ['commandTimeoutMs too small', redis({ url: 'redis://x', commandTimeoutMs: 5 }), 'store.commandTimeoutMs: must be an integer from 10 to 600000, got 5'],
    ['retries negative', redis({ url: 'redis://x', retries: -1 }), 'store.retries: must be an integer from 0 to 100, got -1'],
    ['retryBackoffMs a string', redis({ url: 'redis://x', retryBackoffMs: '50ms' }), 'store.retryBackoffMs: must be an integer from 0 to 60000, got "50ms"'],
    ['maxResultBytes fractional', redis({ url: 'redis://x', maxResultBytes: 1.5 }), 'store.maxResultBytes: must be an integer from 0 to 536870912, got 1.5'],
    ['requireReplicas too many', redis({ url: 'redis://x', requireReplicas: 65 }), 'store.requireReplicas: must be an integer from 0 to 64, got 65'],
    ['requireReplicas on a cluster', redis({ cluster: [{ host: 'a', port: 1 }], requireReplicas: 1 }), 'store.requireReplicas: must be 0 without store.url, as WAIT counts the replicas of a single primary, got 1'],
    ['allowEviction not a boolean', redis({ url: 'redis://x', allowEviction: 'yes' }), 'store.allowEviction: must be a boolean, got "yes"'],
    [
      'a client with keyPrefix (its records would land outside it)',
      redis({ client: { defineCommand() {}, options: { keyPrefix: 'app:' } } }),
      'store.client: must be a client without keyPrefix (it has "app:"; give idem\'s own store.prefix instead), got { defineCommand: function defineCommand, options: { keyPrefi…',
    ],
    [
      'a WAIT longer than the command timeout',
      redis({ url: 'redis://x', requireReplicas: 1, replicaTimeoutMs: 1000, commandTimeoutMs: 1000 }),
      'store.replicaTimeoutMs: must be less than store.commandTimeoutMs (1000), as WAIT runs under the command timeout, got 1000',
    ],
    ['replicaTimeoutMs zero', redis({ url: 'redis://x', replicaTimeoutMs: 0 }), 'store.replicaTimeoutMs: must be an integer from 1 to 600000, got 0'],
    [
      'unknown option',
      redis({ url: 'redis://x', tls: true }),
      'store.tls: must be left out (not an option of the redis store; known: kind, url, cluster, client, prefix, hashTags, commandTimeoutMs, retries, retryBackoffMs, maxResultBytes, requireReplicas, replicaTimeoutMs, allowEviction), got true',
    ],
  ]
  for (const [name, options, message] of redisCases) {
    it(`refuses a redis store: ${name}`, () => {
      expect(problemsOf(options)).toEqual([message])
    })
  }

  it('fills the redis store defaults', () => {
    const filled = { prefix: 'idem:', hashTags: 64, commandTimeoutMs: 1000, retries: 3, retryBackoffMs: 50, maxResultBytes: 65_536, requireReplicas: 0, replicaTimeoutMs: 100, allowEviction: false }
    expect(resolveConfig(redis({ url: 'redis://x' })).store).toEqual({ kind: 'redis', url: 'redis://x', ...filled })
  })

  it('names every bad field in one error', () => {
    const problems = problemsOf({ shards: 0, leaseMs: 1, rollout: 'x', bloom: { falsePositiveRate: 2 } })
    expect(problems).toHaveLength(4)
    expect(problems.map((p) => p.split(':')[0]).sort()).toEqual(['bloom.falsePositiveRate', 'leaseMs', 'rollout', 'shards'])
  })
})
