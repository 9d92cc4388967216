import { EventEmitter } from 'node:events'
import { Queue, RedisQueueBackend, Worker } from 'bullmq'
import { Redis } from 'ioredis'
import { idemProcessor, warnUnconfirmed, type IdemProcessor, type ProcessorStats } from './processor.js'
import { resolveConsumerOptions, type ConsumerConfig, type ConsumerOptions, type JobSettlement, type UnconfirmedCommit } from './options.js'
import { partitionQueueOf, recordPartitions } from './partitioned-queue.js'
import type { PartitionChange } from '../../owned/membership.js'

/** A consumer's counts: the processor's, plus what its Worker saw. */
export interface ConsumerStats extends ProcessorStats {
  /** Jobs this worker's stall check moved back to wait (their owner stopped renewing the lock). Their redelivery is a duplicate idem absorbs. */
  stalled: number
  /** Errors the Worker reported (e.g. completing a job whose lock another consumer took over after a stall). */
  workerErrors: number
}

export interface ConsumerEvents {
  /** Every progressIntervalMs while jobs are settled, and once on close. */
  progress: [stats: ConsumerStats]
  /** Once per settled job. */
  settled: [settlement: JobSettlement]
  /** A job completed before its commit's reply whose commit was then refused or failed (README, BullMQ). Without a listener or an onCommitUnconfirmed option, a process warning. */
  commitUnconfirmed: [commit: UnconfirmedCommit]
  /** The Worker's errors; only emitted when someone listens (they are counted either way). */
  error: [error: Error]
}

/**
 * A ready idempotent consumer: a BullMQ Worker running idemProcessor, with a
 * concurrency high enough for the engine to batch, and counts. With an owned
 * engine (README "Owned mode"), one Worker per partition queue the engine
 * owns (`${queue}-p${i}`), started as partitions are acquired and closed
 * (their active jobs settled) as they are handed over or lost.
 */
export class Consumer<D = unknown, R = unknown> extends EventEmitter<ConsumerEvents> {
  /** The Worker, in strict mode; undefined in owned mode, whose Workers come and go with the partitions (`partitionWorkers()`). */
  readonly worker: Worker<D, R | undefined> | undefined
  private readonly processor: IdemProcessor<D, R>
  private readonly config: ConsumerConfig<D, R>
  /** Owned mode: the Worker of each partition this consumer runs. */
  private readonly owned = new Map<number, Worker<D, R | undefined>>()
  private readonly closingWorkers = new Set<Promise<void>>()
  private readonly onPartitions: ((change: PartitionChange) => void) | undefined
  private readonly ready: Promise<void>
  private stalled = 0
  private workerErrors = 0
  private settledSinceProgress = 0
  private readonly timer: NodeJS.Timeout
  private closing: Promise<void> | undefined
  /** Whether commits ride the Worker's connection (README, BullMQ): known once the Worker has connected. Never in owned mode. */
  commitsRide = false

  constructor(options: ConsumerOptions<D, R>) {
    super()
    const config = resolveConsumerOptions(options)
    this.config = config
    const { onSettled, onCommitUnconfirmed } = config.processor
    this.processor = idemProcessor<D, R>(config.engine, config.handler, {
      ...config.processor,
      onSettled: (settlement) => {
        this.settledSinceProgress++
        onSettled?.(settlement)
        if (this.listenerCount('settled') > 0) this.emit('settled', settlement)
      },
      onCommitUnconfirmed: (commit) => {
        if (onCommitUnconfirmed === undefined && this.listenerCount('commitUnconfirmed') === 0) return warnUnconfirmed(commit)
        onCommitUnconfirmed?.(commit)
        this.emit('commitUnconfirmed', commit)
      },
    })
    if (config.engine.config.mode === 'owned') {
      this.worker = undefined
      const { engine } = config
      // The partition count is checked before any Worker runs: a mismatch would run jobs on queues their owners do not own.
      this.ready = this.checkPartitions().then(() => {
        if (this.closing !== undefined) return
        for (const partition of engine.ownedPartitions()) this.startWorker(partition)
        engine.on('partitions', this.onPartitions!)
      })
      this.ready.catch(() => {}) // reported by waitUntilReady()
      this.onPartitions = ({ acquired, lost }) => {
        if (this.closing !== undefined) return
        for (const partition of lost) this.stopWorker(partition)
        for (const partition of acquired) this.startWorker(partition)
      }
    } else {
      this.worker = this.newWorker(config.queue)
      // The connection BullMQ completes jobs on (RedisQueueBackend.client): commits ride it when the engine's store is on the same Redis.
      if (this.worker.backend instanceof RedisQueueBackend) {
        this.worker.backend.client.then(
          (client) => void (this.commitsRide = client instanceof Redis && this.processor.carryCommitsOn(client)),
          () => {}, // a Worker that cannot connect reports it through its own error event; commits then stay awaited
        )
      }
      this.ready = Promise.resolve()
    }
    this.timer = setInterval(() => {
      if (this.settledSinceProgress === 0) return
      this.settledSinceProgress = 0
      this.emit('progress', this.stats())
    }, config.progressIntervalMs)
    this.timer.unref()
  }

  stats(): ConsumerStats {
    return { ...this.processor.stats(), stalled: this.stalled, workerErrors: this.workerErrors }
  }

  /** Owned mode: the partitions this consumer runs a Worker for now, sorted. */
  partitionWorkers(): number[] {
    return [...this.owned.keys()].sort((a, b) => a - b)
  }

  /** Resolves once the Worker is connected and taking jobs (owned mode: once the partition count is checked and the owned partitions' Workers are connected); rejects with PARTITIONS_MISMATCH on another count. */
  async waitUntilReady(): Promise<void> {
    await this.ready
    if (this.worker !== undefined) await this.worker.waitUntilReady()
    else await Promise.all([...this.owned.values()].map((worker) => worker.waitUntilReady()))
  }

  /**
   * Stops taking jobs and waits for the active ones to settle (their commits
   * included), then closes the Workers' connections. The engine stays open: it
   * is the caller's. Safe to call twice.
   */
  close(): Promise<void> {
    this.closing ??= (async () => {
      try {
        if (this.onPartitions !== undefined) this.config.engine.off('partitions', this.onPartitions)
        await this.ready.catch(() => {})
        for (const partition of [...this.owned.keys()]) this.stopWorker(partition)
        await Promise.all([this.worker?.close(), ...this.closingWorkers])
      } finally {
        clearInterval(this.timer)
        this.emit('progress', this.stats())
      }
    })()
    return this.closing
  }

  private newWorker(queue: string): Worker<D, R | undefined> {
    const worker = new Worker<D, R | undefined>(queue, this.processor, this.config.worker)
    worker.on('stalled', () => void this.stalled++)
    worker.on('error', (error) => {
      this.workerErrors++
      if (this.listenerCount('error') > 0) this.emit('error', error)
    })
    return worker
  }

  private startWorker(partition: number): void {
    if (this.owned.has(partition)) return
    this.owned.set(partition, this.newWorker(partitionQueueOf(this.config.queue, partition)))
  }

  /** Its active jobs settle as their outcomes say (BullMQ's close waits for them); the partition's next owner takes what waits. */
  private stopWorker(partition: number): void {
    const worker = this.owned.get(partition)
    if (worker === undefined) return
    this.owned.delete(partition)
    const closing = worker.close().finally(() => this.closingWorkers.delete(closing))
    this.closingWorkers.add(closing)
  }

  private async checkPartitions(): Promise<void> {
    const { queue, engine, worker } = this.config
    const probe = new Queue(partitionQueueOf(queue, 0), { connection: worker.connection, ...(worker.prefix === undefined ? {} : { prefix: worker.prefix }) })
    try {
      const client = (await probe.backend.client) as unknown as Redis
      await recordPartitions(client, queue, worker.prefix, engine.config.partitions, "this consumer's engine")
    } finally {
      await probe.close()
    }
  }
}

/**
 * Starts an idempotent BullMQ consumer on `queue`. Everything but the idem
 * options (queue, engine, handler, keyOf, fingerprintOf, namespaceOf,
 * inFlightDelay, onSettled, progressIntervalMs) goes to BullMQ's Worker as is.
 * Throws ConfigError naming every bad option.
 *
 * ```ts
 * const consumer = createConsumer({ queue: 'orders', connection, engine, handler: chargeCard, keyOf: (job) => job.data.orderId })
 * consumer.on('progress', (s) => log(s.completed, s.duplicates))
 * await consumer.close()
 * ```
 */
export function createConsumer<D = unknown, R = unknown>(options: ConsumerOptions<D, R>): Consumer<D, R> {
  return new Consumer(options)
}
