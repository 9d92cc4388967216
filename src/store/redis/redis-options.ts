import type { Cluster, Redis } from 'ioredis'

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
}

/** The options after defaults and validation: every tunable filled in, one server source kept. */
export type RedisStoreConfig = Pick<RedisStoreOptions, 'kind' | 'url' | 'cluster' | 'client'> &
  Required<Omit<RedisStoreOptions, 'kind' | 'url' | 'cluster' | 'client'>>

const known = ['kind', 'url', 'cluster', 'client', 'prefix', 'hashTags', 'commandTimeoutMs', 'retries', 'retryBackoffMs', 'maxResultBytes', 'requireReplicas', 'replicaTimeoutMs']

/** Validates `store` for kind 'redis', pushing one line per bad field. */
export function resolveRedisStore(o: Record<string, unknown>, threads: number, problems: string[]): RedisStoreConfig {
  for (const field of Object.keys(o)) if (!known.includes(field)) problems.push(`store.${field}: unknown option for the redis store (known: ${known.join(', ')})`)
  const integer = (field: string, fallback: number, min: number, max: number): number => {
    const value = o[field]
    if (value === undefined) return fallback
    if (typeof value !== 'number' || !Number.isInteger(value) || value < min || value > max) {
      problems.push(`store.${field}: must be an integer from ${min} to ${max}, got ${typeof value === 'number' ? value : typeof value}`)
      return fallback
    }
    return value
  }
  const sources = ['url', 'cluster', 'client'].filter((f) => o[f] !== undefined)
  if (sources.length !== 1) problems.push(`store: give exactly one of url, cluster or client for the redis store, got ${sources.length === 0 ? 'none' : sources.join(' and ')}`)
  if (o.url !== undefined) {
    const url = o.url
    if (typeof url !== 'string' || !/^rediss?:\/\//.test(url)) problems.push(`store.url: must be a redis:// or rediss:// URL, got ${JSON.stringify(url)}`)
  }
  if (o.cluster !== undefined) {
    const nodes = o.cluster
    const ok = Array.isArray(nodes) && nodes.length > 0 && nodes.every((n) => typeof n?.host === 'string' && Number.isInteger(n?.port) && n.port > 0 && n.port < 65536)
    if (!ok) problems.push('store.cluster: must be a non-empty array of { host: string, port: number }')
  }
  if (o.client !== undefined) {
    const client = o.client as { defineCommand?: unknown }
    if (typeof client?.defineCommand !== 'function') problems.push('store.client: must be an ioredis Redis or Cluster instance')
    else if (threads > 0) problems.push('store.client: a client object cannot cross into worker threads; with threads > 0 give store.url or store.cluster')
  }
  let prefix = 'idem:'
  if (o.prefix !== undefined) {
    if (typeof o.prefix !== 'string' || /[{}\0]/.test(o.prefix)) problems.push(`store.prefix: must be a string without {, } or U+0000, got ${JSON.stringify(o.prefix)}`)
    else prefix = o.prefix
  }
  const requireReplicas = integer('requireReplicas', 0, 0, 64)
  if (requireReplicas > 0 && o.url === undefined) problems.push('store.requireReplicas: only with store.url (a single primary and its replicas)')
  return {
    kind: 'redis',
    ...(typeof o.url === 'string' ? { url: o.url } : {}),
    ...(Array.isArray(o.cluster) ? { cluster: o.cluster as { host: string; port: number }[] } : {}),
    ...(o.client !== undefined ? { client: o.client as Redis | Cluster } : {}),
    prefix,
    hashTags: integer('hashTags', 64, 1, 16_384),
    commandTimeoutMs: integer('commandTimeoutMs', 1000, 10, 600_000),
    retries: integer('retries', 3, 0, 100),
    retryBackoffMs: integer('retryBackoffMs', 50, 0, 60_000),
    maxResultBytes: integer('maxResultBytes', 65_536, 0, 512 * 1024 * 1024),
    requireReplicas,
    replicaTimeoutMs: integer('replicaTimeoutMs', 100, 1, 600_000),
  }
}
