import type { Cluster, Redis } from 'ioredis'
import { OptionReader, type Filled } from '../../validation.js'

/** `store: { kind: 'redis', … }` as a user writes it. */
export interface RedisStoreOptions {
  kind: 'redis'
  /** `redis://[user:pass@]host:port[/db]` of a single Redis. One of url, cluster or client. */
  url?: string
  /** Seed nodes of a Redis Cluster. */
  cluster?: { host: string; port: number }[]
  /** An ioredis Redis or Cluster you own (idem never closes it). Only with threads: 0: a client cannot cross into a worker thread. */
  client?: Redis | Cluster
  /** Prepended to every record key; no `{` or `}` (they would change the hash slot) and no U+0000 (it separates keys in a batch). @default 'idem:' */
  prefix?: string
  /**
   * Hash tags records are spread over: a batch becomes one script call per tag
   * on a cluster (one per batch on a single Redis). Changing it renames every
   * record, like changing the prefix. @default 64
   */
  hashTags?: number
  /** A command without a reply for this long fails (and is retried). @default 1000 */
  commandTimeoutMs?: number
  /** Retries of a failed call before its batch fails closed with STORE_FAILED. @default 3 */
  retries?: number
  /** First backoff between retries, doubled each time. @default 50 */
  retryBackoffMs?: number
  /** Largest stored result, as JSON bytes; a larger one is not kept (RESULT_TOO_LARGE). @default 65536 */
  maxResultBytes?: number
  /** Replicas that must hold a batch's claims (WAIT) before its handlers run; single Redis only. @default 0 */
  requireReplicas?: number
  /** How long WAIT may take. @default 100 */
  replicaTimeoutMs?: number
  /**
   * Accept a server whose maxmemory-policy evicts keys. An evicted DONE record
   * lets a settled key run again, an evicted lease lets a second owner in: the
   * store refuses such a server (STORE_UNSAFE) unless this is true. When true,
   * the server's evicted_keys is read every 5 s: growth is counted (stats
   * evictedKeys) and warned about (IDEM_EVICTED_KEYS) at most once a minute. @default false
   */
  allowEviction?: boolean
}

/** The options after defaults and validation: every tunable filled in, the one server source as given. */
export type RedisStoreConfig = Filled<RedisStoreOptions, 'kind' | 'url' | 'cluster' | 'client'>

export const redisDefaults = {
  prefix: 'idem:',
  hashTags: 64,
  commandTimeoutMs: 1000,
  retries: 3,
  retryBackoffMs: 50,
  maxResultBytes: 65_536,
  requireReplicas: 0,
  replicaTimeoutMs: 100,
  allowEviction: false,
} as const satisfies Omit<RedisStoreConfig, 'kind' | 'url' | 'cluster' | 'client'>

const sources = ['url', 'cluster', 'client']

/** Validates `store` for kind 'redis', pushing one line per bad field. */
export function resolveRedisStore(options: Record<string, unknown>, threads: number, problems: string[]): RedisStoreConfig {
  const o = new OptionReader(options, problems, 'store')
  o.onlyKnown(['kind', ...sources, ...Object.keys(redisDefaults)], 'the redis store')
  o.exactlyOne(sources, 'the redis store')
  if (o.has('url')) o.string('url', undefined, 'a redis:// or rediss:// URL', (url) => /^rediss?:\/\//.test(url))
  if (o.has('cluster')) {
    const nodes = o.value('cluster')
    const valid = Array.isArray(nodes) && nodes.length > 0 && nodes.every((n) => typeof n?.host === 'string' && Number.isInteger(n?.port) && n.port > 0 && n.port < 65536)
    if (!valid) o.mustBe('cluster', 'a non-empty array of { host: string, port: number }')
  }
  if (o.has('client')) {
    const client = o.value('client') as { defineCommand?: unknown; options?: { keyPrefix?: unknown; redisOptions?: { keyPrefix?: unknown } } }
    const keyPrefix = client?.options?.keyPrefix ?? client?.options?.redisOptions?.keyPrefix
    if (typeof client?.defineCommand !== 'function') o.mustBe('client', 'an ioredis Redis or Cluster instance')
    // ioredis prefixes declared keys but not the record keys idem packs into one argument: records would land outside the prefix.
    else if (typeof keyPrefix === 'string' && keyPrefix !== '') o.mustBe('client', `a client without keyPrefix (it has ${JSON.stringify(keyPrefix)}; give idem's own store.prefix instead)`)
    else if (threads > 0) o.mustBe('client', 'left out with threads > 0, as a client object cannot cross into worker threads (give store.url or store.cluster)')
  }
  const requireReplicas = o.integer('requireReplicas', redisDefaults.requireReplicas, 0, 64)
  if (requireReplicas > 0 && !o.has('url')) o.mustBe('requireReplicas', '0 without store.url, as WAIT counts the replicas of a single primary')
  const commandTimeoutMs = o.integer('commandTimeoutMs', redisDefaults.commandTimeoutMs, 10, 600_000)
  const replicaTimeoutMs = o.integer('replicaTimeoutMs', redisDefaults.replicaTimeoutMs, 1, 600_000)
  // WAIT runs under the command timeout: a longer wait would be cut off as a failed call instead of answering the shortfall.
  if (requireReplicas > 0 && replicaTimeoutMs >= commandTimeoutMs) o.mustBe('replicaTimeoutMs', `less than store.commandTimeoutMs (${commandTimeoutMs}), as WAIT runs under the command timeout`)
  return {
    kind: 'redis',
    ...(typeof o.value('url') === 'string' ? { url: o.value('url') as string } : {}),
    ...(Array.isArray(o.value('cluster')) ? { cluster: o.value('cluster') as { host: string; port: number }[] } : {}),
    ...(o.has('client') ? { client: o.value('client') as Redis | Cluster } : {}),
    prefix: o.string('prefix', redisDefaults.prefix, 'a string without {, } or U+0000', (prefix) => !/[{}\0]/.test(prefix)),
    hashTags: o.integer('hashTags', redisDefaults.hashTags, 1, 16_384),
    commandTimeoutMs,
    retries: o.integer('retries', redisDefaults.retries, 0, 100),
    retryBackoffMs: o.integer('retryBackoffMs', redisDefaults.retryBackoffMs, 0, 60_000),
    maxResultBytes: o.integer('maxResultBytes', redisDefaults.maxResultBytes, 0, 512 * 1024 * 1024),
    requireReplicas,
    replicaTimeoutMs,
    allowEviction: o.boolean('allowEviction', redisDefaults.allowEviction),
  }
}
