import { EventEmitter } from 'node:events'
import { RedisQueueBackend, Worker } from 'bullmq'
import { Redis } from 'ioredis'
import { idemProcessor, warnUnconfirmed, type IdemProcessor, type ProcessorStats } from './processor.js'
import { resolveConsumerOptions, type ConsumerOptions, type JobSettlement, type UnconfirmedCommit } from './options.js'

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
 * concurrency high enough for the engine to batch, and counts.
 */
export class Consumer<D = unknown, R = unknown> extends EventEmitter<ConsumerEvents> {
  readonly worker: Worker<D, R | undefined>
  private readonly processor: IdemProcessor<D, R>
  private stalled = 0
  private workerErrors = 0
  private settledSinceProgress = 0
  private readonly timer: NodeJS.Timeout
  private closing: Promise<void> | undefined
  /** Whether commits ride the Worker's connection (README, BullMQ): known once the Worker has connected. */
  commitsRide = false

  constructor(options: ConsumerOptions<D, R>) {
    super()
    const config = resolveConsumerOptions(options)
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
    this.worker = new Worker<D, R | undefined>(config.queue, this.processor, config.worker)
    // The connection BullMQ completes jobs on (RedisQueueBackend.client): commits ride it when the engine's store is on the same Redis.
    if (this.worker.backend instanceof RedisQueueBackend) {
      this.worker.backend.client.then(
        (client) => void (this.commitsRide = client instanceof Redis && this.processor.carryCommitsOn(client)),
        () => {}, // a Worker that cannot connect reports it through its own error event; commits then stay awaited
      )
    }
    this.worker.on('stalled', () => void this.stalled++)
    this.worker.on('error', (error) => {
      this.workerErrors++
      if (this.listenerCount('error') > 0) this.emit('error', error)
    })
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

  /** Resolves once the Worker is connected and taking jobs. */
  waitUntilReady(): Promise<void> {
    return this.worker.waitUntilReady().then(() => undefined)
  }

  /**
   * Stops taking jobs and waits for the active ones to settle (their commits
   * included), then closes the Worker's connections. The engine stays open: it
   * is the caller's. Safe to call twice.
   */
  close(): Promise<void> {
    this.closing ??= (async () => {
      try {
        await this.worker.close()
      } finally {
        clearInterval(this.timer)
        this.emit('progress', this.stats())
      }
    })()
    return this.closing
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
