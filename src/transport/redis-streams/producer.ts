import { Redis } from 'ioredis'
import { MAX_PARTITIONS, partitionOf } from '../../owned/partition-of.js'
import { fieldsOf, OptionReader } from '../../validation.js'
import { partitionStreamOf, recordPartitions } from './partitioned-stream.js'
import { transportError } from './stream-client.js'

/** What keyOf and namespaceOf see of an entry before it is added: its fields, as the consumer's keyOf will see them (`entry.fields`). */
export interface ProducedEntry {
  readonly fields: Readonly<Record<string, string>>
}

/** Options of `createStreamProducer`. */
export interface StreamProducerOptions {
  /** The stream name the consumers are given; entries go to `${stream}:p${partition}`. */
  stream: string
  /** The owned engines' `partitions`: recorded once per stream name, and refused (PARTITIONS_MISMATCH) when another count is recorded. */
  partitions: number
  /** The Redis holding the streams: a `redis://` URL (the producer opens and closes one connection), or an ioredis `Redis` you own (never closed). */
  connection: string | Redis
  /**
   * The idempotency key of an entry, the same function as the consumer's
   * `keyOf` (it gets `{ fields }`): the producer routes by it exactly as the
   * engine does (partitionOf). An entry whose key the engine would refuse
   * (keyOf throws, no string, too long) goes to partition 0, where its owner
   * dead-letters it with the reason, as the consumer does on one stream.
   * @default (entry) => entry.fields.key
   */
  keyOf?: (entry: ProducedEntry) => unknown
  /** The namespace of an entry, the same function as the consumer's `namespaceOf`. @default none */
  namespaceOf?: (entry: ProducedEntry) => unknown
}

const known = fieldsOf<StreamProducerOptions>({ stream: true, partitions: true, connection: true, keyOf: true, namespaceOf: true })

const keyField = (entry: ProducedEntry): unknown => entry.fields.key

/**
 * Adds entries to the partition streams of owned mode: each entry to the
 * stream of its key's partition, so only that partition's owner ever reads
 * it. Each add or addMany call is one pipeline (one round trip); the first
 * one also records the partition count.
 */
export class StreamProducer {
  readonly stream: string
  readonly partitions: number
  private readonly client: Redis
  private readonly ownsClient: boolean
  private readonly keyOf: (entry: ProducedEntry) => unknown
  private readonly namespaceOf: ((entry: ProducedEntry) => unknown) | undefined
  private recorded: Promise<void> | undefined

  constructor(options: StreamProducerOptions) {
    const o = new OptionReader(options)
    o.check()
    o.onlyKnown(known, 'createStreamProducer')
    this.stream = o.string('stream', undefined, 'a non-empty string')
    this.partitions = o.integer('partitions', undefined, 1, MAX_PARTITIONS)
    const connection = o.value('connection')
    if (typeof connection === 'string') o.string('connection', undefined, 'a redis:// or rediss:// URL', (url) => /^rediss?:\/\//.test(url))
    else if (typeof (connection as Partial<Redis> | null)?.pipeline !== 'function') o.mustBe('connection', 'a redis:// URL or an ioredis Redis client')
    else if ((connection as Redis).isCluster) o.mustBe('connection', 'a single Redis, as the streams transport does not use a Redis Cluster')
    this.keyOf = o.function<(entry: ProducedEntry) => unknown>('keyOf', 'a function of the entry ({ fields })', false) ?? keyField
    this.namespaceOf = o.function<(entry: ProducedEntry) => unknown>('namespaceOf', 'a function of the entry ({ fields })', false)
    o.check()
    this.ownsClient = typeof connection === 'string'
    this.client = typeof connection === 'string' ? new Redis(connection) : (connection as Redis)
    // ioredis reports connection errors as events too; the calls that hit them reject.
    if (this.ownsClient) this.client.on('error', () => {})
  }

  /** The partition an entry goes to (0 for a key the engine would refuse). */
  partitionOf(fields: Readonly<Record<string, string>>): number {
    const entry = { fields }
    try {
      const namespace = this.namespaceOf?.(entry)
      return partitionOf(this.keyOf(entry) as string, this.partitions, namespace as string | undefined)
    } catch {
      return 0
    }
  }

  /** Adds one entry to its partition's stream; its stream id. */
  async add(fields: Readonly<Record<string, string>>): Promise<string> {
    const [id] = await this.addMany([fields])
    return id
  }

  /** Adds entries to their partitions' streams in one pipeline; their ids, in order. */
  async addMany(entries: readonly Readonly<Record<string, string>>[]): Promise<string[]> {
    await this.recordOnce()
    if (entries.length === 0) return []
    const pipeline = this.client.pipeline()
    for (const fields of entries) pipeline.xadd(partitionStreamOf(this.stream, this.partitionOf(fields)), '*', ...Object.entries(fields).flat())
    let replies
    try {
      replies = (await pipeline.exec()) ?? []
    } catch (error) {
      throw transportError('XADD', error)
    }
    return replies.map(([error, id]) => {
      if (error !== null) throw transportError('XADD', error)
      return id as string
    })
  }

  /** Closes the connection when the producer opened it. */
  async close(): Promise<void> {
    if (!this.ownsClient) return
    try {
      await this.client.quit()
    } catch {
      this.client.disconnect()
    }
  }

  /** The count is recorded (or checked) once per producer; a failed attempt is tried again by the next call. */
  private recordOnce(): Promise<void> {
    this.recorded ??= recordPartitions(this.client, this.stream, this.partitions, 'this producer').catch((error: unknown) => {
      this.recorded = undefined
      throw transportError('partition count check', error)
    })
    return this.recorded
  }
}

/**
 * Starts a producer for owned mode's partitioned streams. Throws ConfigError
 * naming every bad option; its first add rejects with PARTITIONS_MISMATCH
 * when the stream was set up with another partition count.
 *
 * ```ts
 * const producer = createStreamProducer({ stream: 'orders', partitions: 64, connection: 'redis://127.0.0.1:6379' })
 * await producer.addMany([{ key: 'order-42', amount: '1999' }, { key: 'order-43', amount: '500' }])
 * ```
 */
export function createStreamProducer(options: StreamProducerOptions): StreamProducer {
  return new StreamProducer(options)
}
