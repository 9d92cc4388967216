import { describe, expect, it } from 'vitest'
import { resolveConfig } from '../../dist/src/config.js'
import { ConfigError, ErrorCode } from '../../dist/src/errors.js'

function problemsOf(options: unknown): readonly string[] {
  try {
    resolveConfig(options)
  } catch (error) {
    expect(error).toBeInstanceOf(ConfigError)
    expect((error as ConfigError).code).toBe(ErrorCode.INVALID_CONFIG)
    return (error as ConfigError).problems
  }
  throw new Error('expected a ConfigError')
}

describe('config', () => {
  it('fills defaults', () => {
    const config = resolveConfig({})
    expect(config).toMatchObject({ shards: 8, threads: 0, ttlMs: 86_400_000, leaseMs: 30_000, rollout: 'enforce', maxBatch: 1024, keepResults: true })
    expect(config.bloom).toEqual({ expectedItems: 1_000_000, falsePositiveRate: 0.01 })
    expect(config.store).toEqual({ kind: 'memory' })
  })

  const cases: [string, unknown, string][] = [
    ['not an object', 42, 'options must be an object'],
    ['unknown field', { shard: 4 }, 'shard: unknown option'],
    ['shards zero', { shards: 0 }, 'shards: must be an integer from 1 to 65536, got 0'],
    ['shards fractional', { shards: 1.5 }, 'shards: must be an integer'],
    ['threads negative', { threads: -1 }, 'threads: must be an integer from 0 to 256'],
    ['threads more than shards', { shards: 2, threads: 3 }, 'threads: 3 threads for 2 shards'],
    ['ttlMs string', { ttlMs: '1h' }, 'ttlMs: must be an integer from 1 to'],
    ['leaseMs too small', { leaseMs: 5 }, 'leaseMs: must be an integer from 10 to'],
    ['maxBatch zero', { maxBatch: 0 }, 'maxBatch: must be an integer from 1 to 65536'],
    ['bloom not an object', { bloom: 5 }, 'bloom: must be an object, got 5'],
    ['bloom items zero', { bloom: { expectedItems: 0 } }, 'bloom.expectedItems: must be an integer from 1'],
    ['bloom rate one', { bloom: { falsePositiveRate: 1 } }, 'bloom.falsePositiveRate: must be a number in (0, 0.5], got 1'],
    ['bloom rate NaN', { bloom: { falsePositiveRate: Number.NaN } }, 'bloom.falsePositiveRate: must be a number in (0, 0.5], got NaN'],
    ['bloom too large for one shard', { shards: 1, bloom: { expectedItems: 2 ** 32, falsePositiveRate: 0.0001 } }, 'bloom (per shard): expectedItems 4294967296 at falsePositiveRate 0.0001 needs'],
    ['lru negative', { lru: { maxKeys: -1 } }, 'lru.maxKeys: must be an integer from 0'],
    ['store unknown', { store: { kind: 'dynamo' } }, `store.kind: must be 'memory', 'redis', 'postgres', 'mysql' or 'sqlite', got "dynamo"`],
    ['redis store without a server', { store: { kind: 'redis' } }, 'store: give exactly one of url, cluster or client for the redis store, got none'],
    ['redis store with two servers', { store: { kind: 'redis', url: 'redis://a', cluster: [{ host: 'b', port: 1 }] } }, 'got url and cluster'],
    ['redis url not a URL', { store: { kind: 'redis', url: 'localhost:6379' } }, 'store.url: must be a redis:// or rediss:// URL, got "localhost:6379"'],
    ['redis cluster nodes', { store: { kind: 'redis', cluster: [{ host: 'a' }] } }, 'store.cluster: must be a non-empty array of { host: string, port: number }'],
    ['redis prefix with a brace', { store: { kind: 'redis', url: 'redis://x', prefix: 'a{b' } }, 'store.prefix: must be a string without {, } or U+0000, got "a{b"'],
    ['redis hashTags 0', { store: { kind: 'redis', url: 'redis://x', hashTags: 0 } }, 'store.hashTags: must be an integer from 1 to 16384, got 0'],
    ['redis retries negative', { store: { kind: 'redis', url: 'redis://x', retries: -1 } }, 'store.retries: must be an integer from 0 to 100, got -1'],
    ['redis unknown option', { store: { kind: 'redis', url: 'redis://x', tls: true } }, 'store.tls: unknown option for the redis store'],
    ['redis client not a client', { store: { kind: 'redis', client: {} } }, 'store.client: must be an ioredis Redis or Cluster instance'],
    ['redis requireReplicas on a cluster', { store: { kind: 'redis', cluster: [{ host: 'a', port: 1 }], requireReplicas: 1 } }, 'store.requireReplicas: only with store.url'],
    ['rollout unknown', { rollout: 'log' }, `rollout: must be 'enforce' or 'shadow', got "log"`],
    ['handler empty', { handler: '' }, 'handler: must be a module path or file URL'],
    ['keepResults not boolean', { keepResults: 'yes' }, 'keepResults: must be a boolean, got "yes"'],
  ]
  for (const [name, options, message] of cases) {
    it(`refuses ${name}`, () => {
      expect(problemsOf(options).join('\n')).toContain(message)
    })
  }

  it('names every bad field in one error', () => {
    const problems = problemsOf({ shards: 0, leaseMs: 1, rollout: 'x', bloom: { falsePositiveRate: 2 } })
    expect(problems).toHaveLength(4)
    expect(problems.map((p) => p.split(':')[0]).sort()).toEqual(['bloom.falsePositiveRate', 'leaseMs', 'rollout', 'shards'])
  })
})
