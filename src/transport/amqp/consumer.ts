import { EventEmitter } from 'node:events'
import type { ConfirmChannel, ConsumeMessage, Options } from 'amqplib'
import type { Engine } from '../../engine.js'
import { errorText, ErrorCode, IdemError } from '../../errors.js'
import { messageOf, Verdict, type HandlerContext, type Message, type Outcome } from '../../message.js'
import { invalidOutcome } from '../../outcome.js'
import { deadLetterReason, exhausted } from '../delivery-limit.js'
import { TurnBatch } from '../turn-batch.js'
import { AckWindow } from './ack-window.js'
import { amqpError, ChannelLink } from './channel-link.js'
import { declareDelayQueue, delayQueueOf, DeliveryAction, deliveriesOf, deliveryActionOf, Header } from './delivery.js'
import { resolveAmqpConsumerOptions, type AmqpConsumerConfig, type AmqpConsumerOptions } from './options.js'
import { declarePartitionQueues, OwnedQueues, partitionOfQueue } from './partition-queues.js'

/** Counts of one consumer since it started. */
export interface AmqpConsumerStats {
  /** Deliveries received from the broker. */
  received: number
  /** Deliveries acked: handler ran and committed here (`new`), or the key was done (`duplicates`, stale versions of version-aware keys included). An ack may wait up to 10 ms for the deliveries before it, to share their frame. */
  acked: number
  new: number
  duplicates: number
  /** Deliveries put on the in-flight delay queue (their key was in flight elsewhere, or its commit did not reach the store). */
  inFlight: number
  /** Deliveries put on the retry delay queue after a handler error. */
  retried: number
  /** Deliveries dead-lettered (conflict, bad input, out of deliveries). */
  deadLettered: number
  /** Deliveries whose channel was lost before they were settled: the broker gives them to a consumer again. */
  abandoned: number
  /** AMQP calls that failed, and channels lost (each one also an `error` event). */
  transportErrors: number
  /** Channels opened again after a loss. */
  reconnects: number
  /** Batches taken through the engine. */
  batches: number
  /** Deliveries held right now (received, not yet settled). */
  holding: number
}

/** What the `deadLetter` event tells about one dead-lettered delivery. */
export interface AmqpDeadLetter {
  code: ErrorCode
  message: string
  /** The idempotency key, when keyOf gave a string. */
  key?: string
  deliveries: number
  /** The delivery itself: its fields, properties and content. */
  delivery: ConsumeMessage
}

export interface AmqpConsumerEvents {
  /** An AMQP call failed or a channel was lost (code TRANSPORT_FAILED), or the engine refused a batch. Emitted only when someone listens; counted either way. */
  error: [error: IdemError]
  /** A delivery was dead-lettered. */
  deadLetter: [letter: AmqpDeadLetter]
}

/** One delivery as the consumer holds it: settled on the channel it came on, or not at all. */
interface Delivery {
  channel: ConfirmChannel
  /** The queue it was consumed from: where a delayed copy goes back to. */
  queue: string
  message: ConsumeMessage
  deliveries: number
}

/**
 * An idempotent RabbitMQ consumer. The deliveries that arrive in one turn of
 * the event loop (one socket read holds many) go to the engine as one batch;
 * each is settled by its own outcome as soon as it is final (a duplicate does
 * not wait for the commit of a new key beside it), by deliveryActionOf:
 * acked once the outcome is durable, sent through a delay queue to come back
 * later (in flight, handler errors), or dead-lettered with its code.
 *
 * A copy goes on a delay queue on the consumer's confirm channel and the
 * delivery is acked only once the broker confirmed the copy: a crash between
 * the two leaves both, and the dedup absorbs the second. Delay queues, one per
 * delay, hold copies for their x-message-ttl and dead-letter them back to the
 * queue, so nothing spins while it waits.
 */
export class AmqpConsumer<R = unknown> extends EventEmitter<AmqpConsumerEvents> {
  readonly config: AmqpConsumerConfig<R>
  private readonly link: ChannelLink
  private readonly counts: Omit<AmqpConsumerStats, 'holding' | 'reconnects'> = {
    received: 0, acked: 0, new: 0, duplicates: 0, inFlight: 0, retried: 0, deadLettered: 0, abandoned: 0, transportErrors: 0, batches: 0,
  }
  private holding = 0
  private stopping = false
  /** Hands what arrived in one turn of the event loop to the engine as one batch. */
  private readonly batches = new TurnBatch<Delivery>((batch) => this.track(this.processBatch(batch)))
  /** Batches in the engine and publishes of copies awaiting their confirm: close() waits for them. */
  private readonly running = new Set<Promise<unknown>>()
  private consumerTag: string | undefined
  /** Owned mode: the partition queues consumed now; undefined in strict mode (one queue). */
  private readonly owned: OwnedQueues | undefined
  private readonly ready: Promise<void>
  private closing: Promise<void> | undefined
  /** The acks of each channel deliveries came on (a lost channel's go with it). */
  private readonly ackWindows = new WeakMap<ConfirmChannel, AckWindow>()

  constructor(options: AmqpConsumerOptions<R>) {
    super()
    this.config = resolveAmqpConsumerOptions(options)
    const { engine, queue } = this.config
    if (engine.config.mode === 'owned') {
      this.owned = new OwnedQueues(queue, engine, (channel, name, message) => this.receive(channel, name, message), (error) => this.report(amqpError('consume of a partition queue', error)))
    }
    this.link = new ChannelLink(this.config.url ?? this.config.connection!, (channel) => this.setUp(channel), (error) => this.report(error))
    this.ready = this.link.start().then(() => undefined)
    // A rejection of ready is the caller's to see through waitUntilReady(); never unhandled.
    this.ready.catch(() => {})
  }

  /** Resolves once consuming has started; rejects if it cannot (the queue is missing, a delay queue exists with other arguments). */
  waitUntilReady(): Promise<void> {
    return this.ready
  }

  stats(): AmqpConsumerStats {
    return { ...this.counts, reconnects: this.link.reconnects, holding: this.holding }
  }

  /**
   * Stops consuming, waits for the deliveries being worked on to settle (acks
   * of what is durable, copies confirmed on delay queues), then closes the
   * channel (and the connection when it opened it from a URL): deliveries the
   * broker sent meanwhile go back to the queue. The engine stays open: close
   * it after this. Safe to call twice.
   */
  close(): Promise<void> {
    this.closing ??= (async () => {
      this.stopping = true
      await this.ready.catch(() => {})
      const channel = this.link.channel
      if (this.owned !== undefined) await this.owned.cancelAll()
      else if (channel !== undefined && this.consumerTag !== undefined) await channel.cancel(this.consumerTag).catch(() => {})
      this.batches.flush()
      while (this.running.size > 0) await Promise.all(this.running)
      if (channel !== undefined) this.ackWindows.get(channel)?.flushAll()
      await this.link.close()
    })()
    return this.closing
  }

  private async setUp(channel: ConfirmChannel): Promise<void> {
    const { queue, prefetch, inFlightDelayMs, retryDelayMs, engine } = this.config
    if (this.owned === undefined) await channel.checkQueue(queue)
    else await declarePartitionQueues(channel, queue, engine.config.partitions)
    for (const delayMs of new Set([inFlightDelayMs, retryDelayMs])) await declareDelayQueue(channel, queue, delayMs)
    // Owned mode consumes many partition queues on one channel: the limit is the channel's (global), or each queue would get its own prefetch.
    await channel.prefetch(prefetch, this.owned !== undefined)
    if (this.stopping) return
    if (this.owned !== undefined) return this.owned.consumeOn(channel)
    const { consumerTag } = await channel.consume(queue, (message) => this.receive(channel, queue, message), { noAck: false })
    this.consumerTag = consumerTag
  }

  private receive(channel: ConfirmChannel, queue: string, message: ConsumeMessage | null): void {
    if (message === null) {
      // The broker cancelled the consumer (the queue was deleted): closing the channel makes the link set it up again, or report why not.
      this.report(new IdemError(ErrorCode.TRANSPORT_FAILED, `amqp consumer of queue "${queue}" cancelled by the broker`))
      void channel.close().catch(() => {})
      return
    }
    this.counts.received++
    this.holding++
    this.windowOf(channel).received(message)
    this.batches.add({ channel, queue, message, deliveries: deliveriesOf(message) })
  }

  private async processBatch(batch: Delivery[]): Promise<void> {
    this.counts.batches++
    const messages: Message<number>[] = []
    const positions: number[] = []
    batch.forEach((delivery, i) => {
      let message: Message<number>
      try {
        // The payload is the delivery's place in the batch: the handler finds it there, and nothing else crosses into the engine.
        message = messageOf(delivery.message, this.config, deliveryName, i)
      } catch (error) {
        this.settle(delivery, invalidOutcome(undefined, error as IdemError))
        return
      }
      const misrouted = this.owned === undefined ? undefined : misroutedError(this.config.engine, this.config.queue, message, delivery.queue)
      if (misrouted !== undefined) {
        this.settle(delivery, invalidOutcome(message.key, misrouted))
        return
      }
      messages.push(message)
      positions.push(i)
    })
    if (messages.length === 0) return
    const handle = (message: Message<number>, context: HandlerContext): unknown => {
      const delivery = batch[message.payload!]
      if (exhausted(delivery.deliveries, this.config.maxDeliveries)) throw new IdemError(ErrorCode.DELIVERIES_EXHAUSTED, 'out of deliveries: not run')
      return this.config.handler(delivery.message, context)
    }
    try {
      this.config.engine.countSettled('amqp', await this.config.engine.submit(messages, handle, (j, outcome) => this.settle(batch[positions[j]], outcome)))
    } catch (error) {
      // Nothing of the batch was settled: its deliveries wait on the in-flight delay queue, so a refusal does not spin.
      const refused = error instanceof IdemError ? error : new IdemError(ErrorCode.ACTOR_FAILED, `engine.submit failed: ${errorText(error)}`, { cause: error })
      this.report(refused)
      if (refused.code === ErrorCode.ENGINE_CLOSED) {
        // Left unsettled: closing the channel gives them back to the queue.
        this.holding -= positions.length
        void this.close()
        return
      }
      positions.forEach((i, j) => this.settle(batch[i], { key: messages[j].key, verdict: Verdict.IN_FLIGHT, error: refused }))
    }
  }

  /** Settles one delivery by its outcome, on the channel it came on. */
  private settle(delivery: Delivery, outcome: Outcome): void {
    this.holding--
    const { channel, message, deliveries } = delivery
    if (channel !== this.link.channel) {
      // Its channel is gone, and the broker gave it back to the queue: the next delivery is settled by its own outcome (a duplicate if this one committed).
      this.counts.abandoned++
      return
    }
    const { maxDeliveries, queue } = this.config
    switch (deliveryActionOf(outcome, deliveries, maxDeliveries)) {
      case DeliveryAction.ACK:
        if (!this.ack(channel, message)) return
        this.counts.acked++
        if (outcome.verdict === Verdict.NEW) this.counts.new++
        else this.counts.duplicates++
        return
      case DeliveryAction.WAIT:
        // No delivery used: the copy carries the deliveries used before this one.
        this.track(this.moveTo(channel, message, delayQueueOf(queue, this.config.inFlightDelayMs), delivery.queue, { [Header.DELIVERIES]: deliveries - 1 }).then((moved) => moved && this.counts.inFlight++))
        return
      case DeliveryAction.RETRY:
        this.track(this.moveTo(channel, message, delayQueueOf(queue, this.config.retryDelayMs), delivery.queue, { [Header.DELIVERIES]: deliveries }).then((moved) => moved && this.counts.retried++))
        return
      case DeliveryAction.DEAD_LETTER:
        this.track(this.deadLetter(delivery, outcome))
    }
  }

  private async deadLetter(delivery: Delivery, outcome: Outcome): Promise<void> {
    const { channel, message, deliveries } = delivery
    const { maxDeliveries, deadLetterExchange, deadLetterRoutingKey } = this.config
    const reason = deadLetterReason(outcome, deliveries, maxDeliveries)
    if (deadLetterExchange === undefined) {
      // The queue's own dead-letter exchange, if it has one, takes it (x-death says 'rejected'); the code is in the event.
      try {
        channel.nack(message, false, false)
        this.windowOf(channel).settledElsewhere(message)
      } catch (error) {
        this.report(amqpError('basic.nack', error))
        return
      }
    } else {
      const headers = { [Header.ERROR_CODE]: reason.code, [Header.ERROR_MESSAGE]: reason.message, [Header.DELIVERIES]: deliveries }
      if (!(await this.moveTo(channel, message, deadLetterExchange, deadLetterRoutingKey ?? message.fields.routingKey, headers))) return
    }
    this.counts.deadLettered++
    if (this.listenerCount('deadLetter') === 0) return
    const letter: AmqpDeadLetter = { ...reason, deliveries, delivery: message }
    if (typeof outcome.key === 'string' && outcome.key !== '' && outcome.verdict !== Verdict.INVALID) letter.key = outcome.key
    this.emit('deadLetter', letter)
  }

  /**
   * Publishes a copy of the message (its properties, with `headers` set and
   * the quorum queue's delivery count folded into them) and acks the
   * delivery once the broker confirmed the copy. A copy refused or
   * unconfirmed leaves the delivery unacked: it goes back to the queue with
   * its channel. False when it was not moved.
   */
  private async moveTo(channel: ConfirmChannel, message: ConsumeMessage, exchange: string, routingKey: string, headers: Record<string, unknown>): Promise<boolean> {
    const properties = message.properties
    const copyHeaders: Record<string, unknown> = { ...properties.headers, ...headers }
    delete copyHeaders[Header.DELIVERY_COUNT]
    const options: Options.Publish = { headers: copyHeaders }
    for (const [name, value] of Object.entries(properties)) {
      if (name !== 'headers' && value !== undefined) (options as Record<string, unknown>)[name] = value
    }
    try {
      await new Promise<void>((resolve, reject) => {
        channel.publish(exchange, routingKey, message.content, options, (error) => (error === null || error === undefined ? resolve() : reject(error as Error)))
      })
    } catch (error) {
      this.report(amqpError(`publish to exchange "${exchange}" (routing key "${routingKey}")`, error))
      return false
    }
    return this.ack(channel, message)
  }

  private ack(channel: ConfirmChannel, message: ConsumeMessage): boolean {
    this.windowOf(channel).ack(message)
    return true
  }

  private windowOf(channel: ConfirmChannel): AckWindow {
    let window = this.ackWindows.get(channel)
    if (window === undefined) {
      // The channel closed since: the broker gives those deliveries to a consumer again.
      window = new AckWindow(channel, (error) => this.report(amqpError('basic.ack', error)))
      this.ackWindows.set(channel, window)
    }
    return window
  }

  private track(work: Promise<unknown>): void {
    const run = work.catch((error: unknown) => this.report(error instanceof IdemError ? error : new IdemError(ErrorCode.ACTOR_FAILED, `amqp settle failed: ${errorText(error)}`, { cause: error })))
    this.running.add(run)
    void run.finally(() => this.running.delete(run))
  }

  private report(error: IdemError): void {
    if (error.code === ErrorCode.TRANSPORT_FAILED) this.counts.transportErrors++
    if (this.listenerCount('error') > 0) this.emit('error', error)
  }
}

/**
 * Owned mode: a message on one partition's queue whose key is in another
 * partition (a producer with another key function, namespace or partition
 * count) would be NOT_OWNER here for ever, or run by a member that does not
 * own its key: dead-lettered with PARTITIONS_MISMATCH instead. A key the
 * engine refuses is left to the engine (INVALID_KEY).
 */
function misroutedError(engine: Engine, queue: string, message: Message, from: string): IdemError | undefined {
  let partition: number
  try {
    partition = engine.partitionOf(message.key, message.namespace)
  } catch {
    return undefined
  }
  const queuePartition = partitionOfQueue(queue, from)
  if (partition === queuePartition) return undefined
  return new IdemError(
    ErrorCode.PARTITIONS_MISMATCH,
    `key ${JSON.stringify(message.key)} is in partition ${partition} of ${engine.config.partitions}, but the message is on queue "${from}": publish to partitionQueueOf(queue, partitionOf(key, ${engine.config.partitions})) with the consumer's keyOf and namespaceOf`,
    { key: message.key },
  )
}

/** How a delivery is named in the message of a keyOf (namespaceOf, fingerprintOf) that threw. */
function deliveryName(message: ConsumeMessage): string {
  return `delivery ${message.fields.deliveryTag}`
}

/**
 * Starts an idempotent consumer of a RabbitMQ queue. Throws ConfigError naming every bad option.
 *
 * ```ts
 * const consumer = createAmqpConsumer({ url: 'amqp://localhost', queue: 'orders', engine,
 *   handler: (message) => chargeCard(JSON.parse(message.content.toString())) })
 * await consumer.waitUntilReady()
 * // …
 * await consumer.close()
 * await engine.close()
 * ```
 */
export function createAmqpConsumer<R = unknown>(options: AmqpConsumerOptions<R>): AmqpConsumer<R> {
  return new AmqpConsumer(options)
}
