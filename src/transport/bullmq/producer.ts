import { Queue, type ConnectionOptions, type JobsOptions, type QueueOptions } from 'bullmq'
import type { Redis } from 'ioredis'
import { MAX_PARTITIONS, partitionOf } from '../../owned/partition-of.js'
import { fieldsOf, OptionReader } from '../../validation.js'
import { partitionQueueOf, recordPartitions } from './partitioned-queue.js'

/** What keyOf and namespaceOf see of a job before it is added: its name and data, as the consumer's keyOf sees `job.name` and `job.data`. */
export interface ProducedJob<D = unknown> {
  readonly name: string
  readonly data: D
}

/** Options of `createProducer`. */
export interface ProducerOptions<D = unknown> {
  /** The queue name the consumers are given; jobs go to `${queue}-p${partition}`. */
  queue: string
  /** BullMQ connection of the partition queues. */
  connection: ConnectionOptions
  /** The owned engines' `partitions`: recorded once per queue name, another count refused (PARTITIONS_MISMATCH). */
  partitions: number
  /**
   * The idempotency key of a job, the same function as the consumer's keyOf
   * (it gets `{ name, data }`, which `(job) => job.data.orderId` reads alike):
   * the producer routes by it exactly as the engine does (partitionOf). A job
   * whose key the engine would refuse goes to partition 0, where its owner
   * fails it with the reason.
   */
  keyOf: (job: ProducedJob<D>) => unknown
  /** The namespace of a job, the same function as the consumer's namespaceOf. @default none */
  namespaceOf?: (job: ProducedJob<D>) => unknown
  /** BullMQ's key prefix of the queues (QueueOptions.prefix). @default 'bull' */
  prefix?: string
}

const known = fieldsOf<ProducerOptions>({ queue: true, connection: true, partitions: true, keyOf: true, namespaceOf: true, prefix: true })

/**
 * Adds jobs to the partition queues of owned mode, each to the queue of its
 * key's partition, so only that partition's owner runs it. The first add
 * also records the partition count (or refuses a mismatch).
 */
export class Producer<D = unknown> {
  readonly queue: string
  readonly partitions: number
  private readonly queues = new Map<number, Queue>()
  private readonly options: QueueOptions
  private readonly keyOf: (job: ProducedJob<D>) => unknown
  private readonly namespaceOf: ((job: ProducedJob<D>) => unknown) | undefined
  private recorded: Promise<void> | undefined

  constructor(options: ProducerOptions<D>) {
    const o = new OptionReader(options)
    o.check()
    o.onlyKnown(known, 'createProducer')
    this.queue = o.string('queue', undefined, 'a queue name without ":" (BullMQ refuses it)', (name) => name.length > 0 && !name.includes(':'))
    this.partitions = o.integer('partitions', undefined, 1, MAX_PARTITIONS)
    const connection = o.value('connection')
    if (connection === null || typeof connection !== 'object') o.mustBe('connection', 'BullMQ connection options or an ioredis client')
    this.keyOf = o.function<(job: ProducedJob<D>) => unknown>('keyOf', 'a function of the job ({ name, data })', true)!
    this.namespaceOf = o.function<(job: ProducedJob<D>) => unknown>('namespaceOf', 'a function of the job ({ name, data })', false)
    const prefix = o.has('prefix') ? o.string('prefix', undefined, 'a non-empty string') : undefined
    o.check()
    this.options = { connection: connection as ConnectionOptions, ...(prefix === undefined ? {} : { prefix }) }
  }

  /** The partition a job goes to (0 for a job whose key the engine would refuse). */
  partitionOf(job: ProducedJob<D>): number {
    try {
      const namespace = this.namespaceOf?.(job)
      return partitionOf(this.keyOf(job) as string, this.partitions, namespace as string | undefined)
    } catch {
      return 0
    }
  }

  async add(name: string, data: D, opts?: JobsOptions): Promise<void> {
    await this.addBulk([{ name, data, ...(opts === undefined ? {} : { opts }) }])
  }

  /** One addBulk per partition touched, sent together. */
  async addBulk(jobs: { name: string; data: D; opts?: JobsOptions }[]): Promise<void> {
    await this.recordOnce()
    const byPartition = new Map<number, typeof jobs>()
    for (const job of jobs) {
      const p = this.partitionOf(job)
      let list = byPartition.get(p)
      if (list === undefined) byPartition.set(p, (list = []))
      list.push(job)
    }
    await Promise.all([...byPartition].map(([p, list]) => this.queueOf(p).addBulk(list)))
  }

  async close(): Promise<void> {
    await Promise.all([...this.queues.values()].map((queue) => queue.close()))
  }

  /** The partition's Queue, made on first use. */
  queueOf(partition: number): Queue {
    let queue = this.queues.get(partition)
    if (queue === undefined) this.queues.set(partition, (queue = new Queue(partitionQueueOf(this.queue, partition), this.options)))
    return queue
  }

  /** The count is recorded (or checked) once per producer; a failed attempt is tried again by the next call. */
  private recordOnce(): Promise<void> {
    this.recorded ??= (async () => {
      const client = (await this.queueOf(0).backend.client) as unknown as Redis
      await recordPartitions(client, this.queue, this.options.prefix, this.partitions, 'this producer')
    })().catch((error: unknown) => {
      this.recorded = undefined
      throw error
    })
    return this.recorded
  }
}

/**
 * Owned mode's producer: each job to the partition queue of its key.
 *
 * ```ts
 * const producer = createProducer({ queue: 'orders', connection, partitions: 64, keyOf: (job) => job.data.orderId })
 * await producer.add('charge', { orderId: 'o-42', cents: 1200 })
 * ```
 */
export function createProducer<D = unknown>(options: ProducerOptions<D>): Producer<D> {
  return new Producer(options)
}
