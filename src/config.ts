import { bloomGeometry } from './bloom/bloom-filter.js'
import { resolveRedisStore, type RedisStoreConfig, type RedisStoreOptions } from './store/redis/redis-options.js'
import { isSqlKind, resolveSqlStore, type SqlStoreConfig, type SqlStoreOptions } from './store/sql/sql-options.js'
import { ConfigError } from './errors.js'

/**
 * Which store confirms keys: `memory` (one process, tests), `redis` (shared by
 * every consumer), or a SQL store — `postgres`, `mysql`, `sqlite` — whose
 * transaction helper commits the dedup record with the business writes.
 */
export type StoreOptions = { kind: 'memory' } | RedisStoreOptions | SqlStoreOptions
export type StoreConfig = { kind: 'memory' } | RedisStoreConfig | SqlStoreConfig

/** Options of `createEngine`. Every field is optional; the defaults suit one process. */
export interface EngineOptions {
  /**
   * Number of shard actors. A key always maps to the same shard for a given
   * count, so one key's messages are handled in order by one actor.
   * @default 8
   */
  shards?: number
  /**
   * Worker threads hosting the actors. 0 runs every actor on the main thread;
   * N spreads the shards over N piscina threads (shard s on thread s % N). Work
   * crosses threads once per shard batch, never per message.
   * @default 0
   */
  threads?: number
  /**
   * How long a DONE record keeps a key settled (the dedup window), in ms. Also the
   * span of one bloom generation, so the filter remembers a key for at least this long.
   * @default 86_400_000 (24 h)
   */
  ttlMs?: number
  /**
   * Lease of an IN_PROGRESS claim, in ms. A handler running longer has its lease
   * renewed every leaseMs/3; a crashed owner's claim is free again after it lapses.
   * @default 30_000
   */
  leaseMs?: number
  /** Sizing of each shard's bloom filter (the configured numbers are for the whole engine). */
  bloom?: {
    /** Keys expected within one dedup window, across all shards. Cost: bits ≈ -n·ln(p)/ln(2)², twice (two generations). @default 1_000_000 */
    expectedItems?: number
    /** Target false-positive rate at expectedItems. A false positive costs one store check, never a message. @default 0.01 */
    falsePositiveRate?: number
  }
  /** Settled keys kept in memory (across all shards): a hit is a duplicate with no store I/O. 0 disables. @default 100_000 */
  lru?: { maxKeys?: number }
  /** @default { kind: 'memory' } */
  store?: StoreOptions
  /**
   * `enforce` skips handlers of duplicates; `shadow` decides and records every
   * verdict but runs the handler anyway (log-only rollout), counting what it would have skipped.
   * @default 'enforce'
   */
  rollout?: 'enforce' | 'shadow'
  /**
   * Path or file URL of an ES module whose default export (or `handle` export) is the
   * handler. It runs inside the worker thread next to its actor (CPU-heavy handlers),
   * or on the main thread when threads is 0. A function passed to process() wins.
   */
  handler?: string | URL
  /** Most messages one shard actor takes from its mailbox at once. @default 1024 */
  maxBatch?: number
  /** Keep handler results with DONE records and return them with `duplicate` verdicts. @default true */
  keepResults?: boolean
}

/** Options after defaults and validation: what the engine actually runs with. */
export interface EngineConfig {
  shards: number
  threads: number
  ttlMs: number
  leaseMs: number
  bloom: { expectedItems: number; falsePositiveRate: number }
  lru: { maxKeys: number }
  store: StoreConfig
  rollout: 'enforce' | 'shadow'
  handler?: string
  maxBatch: number
  keepResults: boolean
}

export const defaults = {
  shards: 8,
  threads: 0,
  ttlMs: 86_400_000,
  leaseMs: 30_000,
  bloom: { expectedItems: 1_000_000, falsePositiveRate: 0.01 },
  lru: { maxKeys: 100_000 },
  store: { kind: 'memory' },
  rollout: 'enforce',
  maxBatch: 1024,
  keepResults: true,
} as const satisfies Omit<EngineConfig, 'handler'>

const MAX_THREADS = 256
const MAX_SHARDS = 65_536

/** Validate once, at start; every bad field is named in one ConfigError. */
export function resolveConfig(options: unknown = {}): EngineConfig {
  const problems: string[] = []
  if (options === null || typeof options !== 'object' || Array.isArray(options)) {
    throw new ConfigError(['options must be an object'])
  }
  const o = options as Record<string, unknown>
  const known = ['shards', 'threads', 'ttlMs', 'leaseMs', 'bloom', 'lru', 'store', 'rollout', 'handler', 'maxBatch', 'keepResults']
  for (const field of Object.keys(o)) {
    if (!known.includes(field)) problems.push(`${field}: unknown option (known: ${known.join(', ')})`)
  }

  const integer = (field: string, value: unknown, fallback: number, min: number, max: number): number => {
    if (value === undefined) return fallback
    if (typeof value !== 'number' || !Number.isInteger(value) || value < min || value > max) {
      problems.push(`${field}: must be an integer from ${min} to ${max}, got ${show(value)}`)
      return fallback
    }
    return value
  }
  const section = (field: string): Record<string, unknown> => {
    const value = o[field]
    if (value === undefined) return {}
    if (value === null || typeof value !== 'object' || Array.isArray(value)) {
      problems.push(`${field}: must be an object, got ${show(value)}`)
      return {}
    }
    return value as Record<string, unknown>
  }

  const shards = integer('shards', o.shards, defaults.shards, 1, MAX_SHARDS)
  const threads = integer('threads', o.threads, defaults.threads, 0, MAX_THREADS)
  const ttlMs = integer('ttlMs', o.ttlMs, defaults.ttlMs, 1, 2 ** 42)
  const leaseMs = integer('leaseMs', o.leaseMs, defaults.leaseMs, 10, 2 ** 42)
  const maxBatch = integer('maxBatch', o.maxBatch, defaults.maxBatch, 1, 65_536)

  const bloom = section('bloom')
  const expectedItems = integer('bloom.expectedItems', bloom.expectedItems, defaults.bloom.expectedItems, 1, 2 ** 32)
  let falsePositiveRate: number = defaults.bloom.falsePositiveRate
  if (bloom.falsePositiveRate !== undefined) {
    const rate = bloom.falsePositiveRate
    if (typeof rate !== 'number' || !(rate > 0 && rate <= 0.5)) {
      problems.push(`bloom.falsePositiveRate: must be a number in (0, 0.5], got ${show(rate)}`)
    } else falsePositiveRate = rate
  }

  const lru = section('lru')
  const maxKeys = integer('lru.maxKeys', lru.maxKeys, defaults.lru.maxKeys, 0, 2 ** 30)

  let store: StoreConfig = defaults.store
  if (o.store !== undefined) {
    const raw = o.store as Record<string, unknown> | null
    const kind = typeof raw === 'object' ? raw?.kind : undefined
    if (kind === 'memory') store = { kind }
    else if (kind === 'redis') store = resolveRedisStore(raw!, threads, problems)
    else if (isSqlKind(kind)) store = resolveSqlStore(raw!, threads, problems)
    else problems.push(`store.kind: must be 'memory', 'redis', 'postgres', 'mysql' or 'sqlite', got ${show(kind)}`)
  }

  let rollout: EngineConfig['rollout'] = defaults.rollout
  if (o.rollout !== undefined) {
    if (o.rollout === 'enforce' || o.rollout === 'shadow') rollout = o.rollout
    else problems.push(`rollout: must be 'enforce' or 'shadow', got ${show(o.rollout)}`)
  }

  let handler: string | undefined
  if (o.handler !== undefined) {
    if (o.handler instanceof URL) handler = o.handler.href
    else if (typeof o.handler === 'string' && o.handler.length > 0) handler = o.handler
    else problems.push(`handler: must be a module path or file URL, got ${show(o.handler)}`)
  }

  let keepResults: boolean = defaults.keepResults
  if (o.keepResults !== undefined) {
    if (typeof o.keepResults === 'boolean') keepResults = o.keepResults
    else problems.push(`keepResults: must be a boolean, got ${show(o.keepResults)}`)
  }

  if (problems.length === 0) {
    try {
      bloomGeometry(Math.ceil(expectedItems / shards), falsePositiveRate)
    } catch (error) {
      for (const problem of (error as ConfigError).problems) problems.push(`bloom (per shard): ${problem}`)
    }
  }
  if (threads > shards) problems.push(`threads: ${threads} threads for ${shards} shards would leave threads idle; use threads <= shards`)

  if (problems.length > 0) throw new ConfigError(problems)
  return {
    shards,
    threads,
    ttlMs,
    leaseMs,
    bloom: { expectedItems, falsePositiveRate },
    lru: { maxKeys },
    store,
    rollout,
    ...(handler === undefined ? {} : { handler }),
    maxBatch,
    keepResults,
  }
}

function show(value: unknown): string {
  if (typeof value === 'string') return JSON.stringify(value)
  if (typeof value === 'number' || typeof value === 'boolean' || value == null) return String(value)
  return Array.isArray(value) ? 'an array' : `a ${typeof value}`
}
