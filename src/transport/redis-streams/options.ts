import type { Redis } from 'ioredis'
import type { Engine } from '../../engine.js'
import type { HandlerContext } from '../../message.js'
import { fieldsOf, isEngine, OptionReader, show, type Filled } from '../../validation.js'
import type { StreamEntry } from './entry.js'

/** The business effect of one entry. Runs once per idempotency key, however often the entry (or a copy) is delivered. */
export type StreamHandler<R = unknown> = (entry: StreamEntry, context: HandlerContext) => R | Promise<R>

/** Options of `createStreamConsumer`. */
export interface StreamConsumerOptions<R = unknown> {
  /**
   * The stream key to consume. In owned mode, the name of the partitioned
   * stream: entries are on `${stream}:p${partition}` (createStreamProducer
   * puts them there), and the consumer reads the streams of the partitions
   * its engine owns.
   */
  stream: string
  /**
   * 'owned' reads the partition streams of the partitions the engine owns
   * (DESIGN.md §5): needs an owned engine. Must be the engine's mode.
   * @default the engine's mode
   */
  mode?: 'strict' | 'owned'
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
   * one XACK. Larger batches share round trips among more entries: at 1024,
   * each of 8 shards gets about 128 keys per store call, and Node spends
   * about a quarter less CPU per entry than at 256 (bench:streams). Each
   * consumer holds up to count × batchesInFlight entries at once, which is
   * also what one SIGKILL can leave run-but-uncommitted.
   * @default 1024
   */
  count?: number
  /**
   * Batches being processed at once: the next read overlaps the engine's work
   * on the others, and a batch waiting for slow handlers does not stop the
   * rest. With handlers that wait on I/O, throughput grows with the entries
   * in flight; 8 was the fastest of 1–8 with both handlers of bench:streams,
   * and 16 gained only with I/O, at twice the entries held.
   * @default 8
   */
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
   *
   * Owned mode: only a partition's owner takes its entries over, and a dead
   * member's entries once its partitions have moved to a new owner (the
   * partition epoch fences the dead one); keys hold no claims to wait for,
   * so any value works and this one sets how soon after the move a crashed
   * member's entries run again.
   * @default max(60000, 2 × engine leaseMs); owned mode: the engine's ownership.leaseMs
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
export type StreamConsumerConfig<R> = Filled<StreamConsumerOptions<R>, 'fingerprintOf' | 'namespaceOf'>

export const defaults = {
  count: 1024,
  batchesInFlight: 8,
  blockMs: 1000,
  claimIdleMs: 60_000,
  reclaimIntervalMs: 1000,
  maxDeliveries: 5,
  retryDelayMs: 5000,
  inFlightDelayMs: 1000,
  startId: '0',
} as const

const known = fieldsOf<StreamConsumerOptions>({
  stream: true,
  mode: true,
  group: true,
  consumer: true,
  engine: true,
  handler: true,
  keyOf: true,
  fingerprintOf: true,
  namespaceOf: true,
  connection: true,
  count: true,
  batchesInFlight: true,
  blockMs: true,
  claimIdleMs: true,
  reclaimIntervalMs: true,
  maxDeliveries: true,
  retryDelayMs: true,
  inFlightDelayMs: true,
  deadLetterStream: true,
  startId: true,
})

const MAX_MS = 2 ** 31 - 1

/** Validates createStreamConsumer's options once; throws one ConfigError naming every bad field. */
export function resolveStreamConsumerOptions<R>(options: StreamConsumerOptions<R>): StreamConsumerConfig<R> {
  const o = new OptionReader(options)
  o.check()
  o.onlyKnown(known, 'createStreamConsumer')

  const stream = o.string('stream', undefined, 'a non-empty string')
  const group = o.string('group', undefined, 'a non-empty string')
  const consumer = o.string('consumer', undefined, 'a non-empty string')
  const engine = o.value('engine')
  if (!isEngine(engine)) o.mustBe('engine', 'an idem Engine (from createEngine)')
  const ofEntry = 'a function of the entry'
  const handler = o.function<StreamHandler<R>>('handler', 'a function (entry, context) => result', true)
  const keyOf = o.function<StreamConsumerConfig<R>['keyOf']>('keyOf', `${ofEntry} ({ id, fields, deliveries })`, true)
  const fingerprintOf = o.function<StreamConsumerConfig<R>['fingerprintOf']>('fingerprintOf', ofEntry, false)
  const namespaceOf = o.function<StreamConsumerConfig<R>['namespaceOf']>('namespaceOf', ofEntry, false)

  const engineMode = isEngine(engine) ? engine.config.mode : 'strict'
  const mode = o.oneOf('mode', ['strict', 'owned'], engineMode)
  if (isEngine(engine) && mode !== engineMode) o.mustBe('mode', `the engine's mode ('${engineMode}'): ${mode === 'owned' ? "create the engine with mode: 'owned'" : 'an owned engine reads the partition streams'}`)
  const connection = resolveConnection(o, isEngine(engine) ? engine : undefined)
  const count = o.integer('count', defaults.count, 1, 65_536)
  const batchesInFlight = o.integer('batchesInFlight', defaults.batchesInFlight, 1, 64)
  const blockMs = o.integer('blockMs', defaults.blockMs, 1, MAX_MS)
  const leaseMs = isEngine(engine) ? engine.config.leaseMs : 0
  const claimIdleMs = o.integer('claimIdleMs', mode === 'owned' && isEngine(engine) ? engine.config.ownership.leaseMs : Math.max(defaults.claimIdleMs, 2 * leaseMs), 1, MAX_MS)
  // Owned mode holds no key claims that a take-over would have to wait for (see the option).
  if (mode === 'strict' && o.has('claimIdleMs') && claimIdleMs < leaseMs) {
    o.mustBe(
      'claimIdleMs',
      `at least the engine's leaseMs (${leaseMs}), as a dead consumer's claims lapse only after leaseMs, so its entries taken over sooner would find their keys in flight`,
    )
  }
  const reclaimIntervalMs = o.integer('reclaimIntervalMs', defaults.reclaimIntervalMs, 10, MAX_MS)
  const maxDeliveries = o.integer('maxDeliveries', defaults.maxDeliveries, 1, 1_000_000)
  const retryDelayMs = o.integer('retryDelayMs', Math.min(defaults.retryDelayMs, claimIdleMs), 0, MAX_MS)
  if (retryDelayMs > claimIdleMs) o.mustBe('retryDelayMs', `at most claimIdleMs (${claimIdleMs})`)
  const inFlightDelayMs = o.integer('inFlightDelayMs', Math.min(defaults.inFlightDelayMs, claimIdleMs), 0, MAX_MS)
  if (inFlightDelayMs > claimIdleMs) o.mustBe('inFlightDelayMs', `at most claimIdleMs (${claimIdleMs})`)
  const deadLetterStream = o.string('deadLetterStream', `${stream}:dead`, 'a non-empty string')
  if (deadLetterStream === stream) o.mustBe('deadLetterStream', `other than stream (${show(stream)})`)
  const startId = o.string('startId', defaults.startId, "'0', '$' or a stream id like '1718000000000-0'", (id) => /^(\$|0|\d+(-\d+)?)$/.test(id))
  o.check()

  return {
    stream,
    mode,
    group,
    consumer,
    engine: engine as Engine,
    handler: handler!,
    keyOf: keyOf!,
    ...(fingerprintOf === undefined ? {} : { fingerprintOf }),
    ...(namespaceOf === undefined ? {} : { namespaceOf }),
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

function resolveConnection(o: OptionReader, engine: Engine | undefined): string | Redis | undefined {
  const value = o.value('connection')
  if (value === undefined) {
    if (engine === undefined) return undefined
    const store = engine.config.store
    if (store.kind === 'redis' && store.url !== undefined) return store.url
    if (store.kind === 'redis' && store.client !== undefined && !store.client.isCluster) return store.client as Redis
    o.mustBe('connection', `given, as the engine's store (${store.kind === 'redis' ? 'a Redis Cluster' : store.kind}) names no single Redis to read the stream from`)
    return undefined
  }
  if (typeof value === 'string') return o.string('connection', undefined, 'a redis:// or rediss:// URL', (url) => /^rediss?:\/\//.test(url))
  const client = value as Partial<Redis> | null
  if (typeof client?.duplicate !== 'function' || typeof client.call !== 'function') o.mustBe('connection', 'a redis:// URL or an ioredis Redis client')
  else if (client.isCluster === true) o.mustBe('connection', 'a single Redis, as the streams transport does not read from a Redis Cluster')
  return value as Redis
}
