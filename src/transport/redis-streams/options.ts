import type { Redis } from 'ioredis'
import type { Engine } from '../../engine.js'
import { ConfigError } from '../../errors.js'
import type { HandlerContext } from '../../message.js'
import type { StreamEntry } from './entry.js'

/** The business effect of one entry. Runs once per idempotency key, however often the entry (or a copy) is delivered. */
export type StreamHandler<R = unknown> = (entry: StreamEntry, context: HandlerContext) => R | Promise<R>

/** Options of `createStreamConsumer`. */
export interface StreamConsumerOptions<R = unknown> {
  /** The stream key to consume. */
  stream: string
  /** The consumer group. Created at start if missing (with the stream, MKSTREAM). */
  group: string
  /**
   * This consumer's name in the group: unique among the live consumers (a pod
   * or host name and a slot number, say). A consumer that dies leaves its
   * pending entries under this name; the others take them over after claimIdleMs.
   */
  consumer: string
  /** The idem engine deciding verdicts. Consumers in several processes share one store (Redis with one prefix). The consumer never closes it. */
  engine: Engine
  /** The business effect of one entry. */
  handler: StreamHandler<R>
  /**
   * The idempotency key of an entry, e.g. `(entry) => entry.fields.orderId`.
   * Required. Not the entry id: every copy a producer adds gets its own id. A
   * key that is not a non-empty string of at most 1024 UTF-8 bytes
   * dead-letters the entry with INVALID_KEY; a keyOf that throws, with INVALID_MESSAGE.
   */
  keyOf: (entry: StreamEntry) => unknown
  /** A digest of the payload: an entry whose key is settled with another fingerprint is dead-lettered with CONFLICT. Undefined sends none. @default none */
  fingerprintOf?: (entry: StreamEntry) => unknown
  /** A tenant or namespace: the same key under two namespaces is two keys. Undefined means none. @default none */
  namespaceOf?: (entry: StreamEntry) => unknown
  /**
   * The Redis holding the stream: a `redis://` URL, or an ioredis `Redis` you
   * own (the consumer uses it for acks and reclaims, never closes it, and opens
   * one duplicate of it for its blocking reads). A single Redis, not a Cluster.
   * @default the engine's store: its `url`, or its `client`
   */
  connection?: string | Redis
  /**
   * Entries per XREADGROUP (and per XAUTOCLAIM): one batch through the engine,
   * one XACK. Larger batches share round trips among more entries; each
   * consumer holds up to count × batchesInFlight entries at once, which is
   * also what one SIGKILL can leave run-but-uncommitted.
   * @default 256
   */
  count?: number
  /** Batches being processed at once: reading the next one overlaps the engine's work on the last. @default 2 */
  batchesInFlight?: number
  /** How long one XREADGROUP waits for new entries, in ms. close() ends the wait at once (CLIENT UNBLOCK). @default 1000 */
  blockMs?: number
  /**
   * How long an entry must sit pending, untouched, before any consumer of the
   * group takes it over (XAUTOCLAIM), in ms. A live consumer touches the
   * entries it is still working on every claimIdleMs/3, so only a dead or
   * stopped consumer's entries get this old. At least the engine's leaseMs:
   * a dead owner's claims lapse at most leaseMs after it died, so an entry
   * taken over sooner would only find its key in flight.
   * @default max(60000, 2 × engine leaseMs)
   */
  claimIdleMs?: number
  /** How often this consumer looks for pending entries old enough to take over, in ms. Each look is one call per COUNT entries. @default 1000 */
  reclaimIntervalMs?: number
  /**
   * Deliveries an entry gets before it is dead-lettered: a handler that throws
   * on delivery maxDeliveries, or an entry delivered more often than this
   * without an outcome (its consumers died), goes to the dead-letter stream.
   * In-flight retries do not count.
   * @default 5
   */
  maxDeliveries?: number
  /** After a handler error, the entry is taken up again (as its next delivery) after about this long, in ms (plus up to reclaimIntervalMs). At most claimIdleMs. @default 5000 */
  retryDelayMs?: number
  /** An in-flight entry (another owner holds its key) is tried again after about this long, in ms (plus up to reclaimIntervalMs). At most claimIdleMs. @default 1000 */
  inFlightDelayMs?: number
  /** The stream dead letters are added to (fields: id, code, message, deliveries, key, group, consumer, fields). @default `${stream}:dead` */
  deadLetterStream?: string
  /**
   * Where a group this consumer creates starts reading: '0' takes every entry
   * already in the stream, '$' only entries added from now on. Ignored when
   * the group exists.
   * @default '0'
   */
  startId?: string
}

/** Options after defaults and validation. */
export interface StreamConsumerConfig<R> {
  stream: string
  group: string
  consumer: string
  engine: Engine
  handler: StreamHandler<R>
  keyOf: (entry: StreamEntry) => unknown
  fingerprintOf?: (entry: StreamEntry) => unknown
  namespaceOf?: (entry: StreamEntry) => unknown
  connection: string | Redis
  count: number
  batchesInFlight: number
  blockMs: number
  claimIdleMs: number
  reclaimIntervalMs: number
  maxDeliveries: number
  retryDelayMs: number
  inFlightDelayMs: number
  deadLetterStream: string
  startId: string
}

export const defaults = {
  count: 256,
  batchesInFlight: 2,
  blockMs: 1000,
  claimIdleMs: 60_000,
  reclaimIntervalMs: 1000,
  maxDeliveries: 5,
  retryDelayMs: 5000,
  inFlightDelayMs: 1000,
  startId: '0',
} as const

const known = [
  'stream', 'group', 'consumer', 'engine', 'handler', 'keyOf', 'fingerprintOf', 'namespaceOf', 'connection', 'count', 'batchesInFlight',
  'blockMs', 'claimIdleMs', 'reclaimIntervalMs', 'maxDeliveries', 'retryDelayMs', 'inFlightDelayMs', 'deadLetterStream', 'startId',
]

const MAX_MS = 2 ** 31 - 1

/** Validates createStreamConsumer's options once; throws one ConfigError naming every bad field. */
export function resolveStreamConsumerOptions<R>(options: StreamConsumerOptions<R>): StreamConsumerConfig<R> {
  if (options === null || typeof options !== 'object') throw new ConfigError([`options: must be an object, got ${show(options)}`])
  const o = options as unknown as Record<string, unknown>
  const problems: string[] = []
  for (const field of Object.keys(o)) if (!known.includes(field)) problems.push(`${field}: unknown option (known: ${known.join(', ')})`)

  const name = (field: string): string => {
    const value = o[field]
    if (typeof value !== 'string' || value.length === 0) problems.push(`${field}: must be a non-empty string, got ${show(value)}`)
    return value as string
  }
  const fn = (field: string, required: boolean, shape: string): void => {
    const value = o[field]
    if (value === undefined && !required) return
    if (typeof value !== 'function') problems.push(`${field}: must be a function ${shape}, got ${show(value)}`)
  }
  const integer = (field: string, fallback: number, min: number, max: number): number => {
    const value = o[field]
    if (value === undefined) return fallback
    if (typeof value !== 'number' || !Number.isInteger(value) || value < min || value > max) {
      problems.push(`${field}: must be an integer from ${min} to ${max}, got ${show(value)}`)
      return fallback
    }
    return value
  }

  const stream = name('stream')
  const group = name('group')
  const consumer = name('consumer')
  const engine = o.engine
  const isEngine = typeof (engine as Engine | null)?.processBatch === 'function' && typeof (engine as Engine).config?.leaseMs === 'number'
  if (!isEngine) problems.push(`engine: must be an idem Engine (from createEngine), got ${show(engine)}`)
  fn('handler', true, '(entry, context) => result')
  fn('keyOf', true, 'of the entry ({ id, fields, deliveries })')
  fn('fingerprintOf', false, 'of the entry')
  fn('namespaceOf', false, 'of the entry')

  const connection = resolveConnection(o.connection, isEngine ? (engine as Engine) : undefined, problems)
  const count = integer('count', defaults.count, 1, 65_536)
  const batchesInFlight = integer('batchesInFlight', defaults.batchesInFlight, 1, 64)
  const blockMs = integer('blockMs', defaults.blockMs, 1, MAX_MS)
  const leaseMs = isEngine ? (engine as Engine).config.leaseMs : 0
  const claimIdleMs = integer('claimIdleMs', Math.max(defaults.claimIdleMs, 2 * leaseMs), 1, MAX_MS)
  if (o.claimIdleMs !== undefined && claimIdleMs < leaseMs) {
    problems.push(`claimIdleMs: must be at least the engine's leaseMs (${leaseMs}): a dead consumer's claims lapse only after leaseMs, so its entries taken over sooner would find their keys in flight; got ${claimIdleMs}`)
  }
  const reclaimIntervalMs = integer('reclaimIntervalMs', defaults.reclaimIntervalMs, 10, MAX_MS)
  const maxDeliveries = integer('maxDeliveries', defaults.maxDeliveries, 1, 1_000_000)
  const retryDelayMs = integer('retryDelayMs', Math.min(defaults.retryDelayMs, claimIdleMs), 0, MAX_MS)
  if (retryDelayMs > claimIdleMs) problems.push(`retryDelayMs: must be at most claimIdleMs (${claimIdleMs}), got ${retryDelayMs}`)
  const inFlightDelayMs = integer('inFlightDelayMs', Math.min(defaults.inFlightDelayMs, claimIdleMs), 0, MAX_MS)
  if (inFlightDelayMs > claimIdleMs) problems.push(`inFlightDelayMs: must be at most claimIdleMs (${claimIdleMs}), got ${inFlightDelayMs}`)

  let deadLetterStream = `${stream}:dead`
  if (o.deadLetterStream !== undefined) {
    deadLetterStream = name('deadLetterStream')
    if (deadLetterStream === stream) problems.push(`deadLetterStream: must differ from stream ${show(stream)}`)
  }
  let startId: string = defaults.startId
  if (o.startId !== undefined) {
    if (typeof o.startId !== 'string' || !/^(\$|0|\d+(-\d+)?)$/.test(o.startId)) problems.push(`startId: must be '0', '$' or a stream id like '1718000000000-0', got ${show(o.startId)}`)
    else startId = o.startId
  }
  if (problems.length > 0) throw new ConfigError(problems)

  return {
    stream,
    group,
    consumer,
    engine: engine as Engine,
    handler: o.handler as StreamHandler<R>,
    keyOf: o.keyOf as StreamConsumerConfig<R>['keyOf'],
    ...(o.fingerprintOf === undefined ? {} : { fingerprintOf: o.fingerprintOf as StreamConsumerConfig<R>['fingerprintOf'] }),
    ...(o.namespaceOf === undefined ? {} : { namespaceOf: o.namespaceOf as StreamConsumerConfig<R>['namespaceOf'] }),
    connection: connection!,
    count,
    batchesInFlight,
    blockMs,
    claimIdleMs,
    reclaimIntervalMs,
    maxDeliveries,
    retryDelayMs,
    inFlightDelayMs,
    deadLetterStream,
    startId,
  }
}

function resolveConnection(value: unknown, engine: Engine | undefined, problems: string[]): string | Redis | undefined {
  if (value === undefined) {
    if (engine === undefined) return undefined
    const store = engine.config.store
    if (store.kind === 'redis' && store.url !== undefined) return store.url
    if (store.kind === 'redis' && store.client !== undefined && !store.client.isCluster) return store.client as Redis
    problems.push(`connection: required: the engine's store (${store.kind === 'redis' ? 'a Redis Cluster' : store.kind}) names no single Redis to read the stream from`)
    return undefined
  }
  if (typeof value === 'string') {
    if (!/^rediss?:\/\//.test(value)) problems.push(`connection: must be a redis:// or rediss:// URL, got ${show(value)}`)
    return value
  }
  const client = value as Partial<Redis> | null
  if (typeof client?.duplicate !== 'function' || typeof client.call !== 'function') problems.push(`connection: must be a redis:// URL or an ioredis Redis client, got ${show(value)}`)
  else if (client.isCluster === true) problems.push('connection: a Redis Cluster client is not supported by the streams transport; give a single Redis')
  return value as Redis
}

function show(value: unknown): string {
  if (typeof value === 'string') return JSON.stringify(value)
  if (typeof value === 'number' || typeof value === 'boolean' || value == null) return String(value)
  return Array.isArray(value) ? 'an array' : `a ${typeof value}`
}
