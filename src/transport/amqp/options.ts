import type { ConsumeMessage } from 'amqplib'
import type { Engine } from '../../engine.js'
import type { HandlerContext } from '../../message.js'
import { fieldsOf, isEngine, OptionReader, show, type Filled } from '../../validation.js'
import type { AmqpConnection } from './channel-link.js'
import { defaultKeyOf } from './delivery.js'

/** The business effect of one delivery. Runs once per idempotency key, however often the message (or a copy) is delivered. */
export type AmqpHandler<R = unknown> = (message: ConsumeMessage, context: HandlerContext) => R | Promise<R>

/** Options of `createAmqpConsumer`. Give `url` or `connection`, not both. */
export interface AmqpConsumerOptions<R = unknown> {
  /**
   * An `amqp://` (or `amqps://`) URL: the consumer opens its own connection,
   * and opens it again with backoff (100 ms doubling to 5 s) whenever it or
   * the channel is lost. Unacked deliveries go back to the queue, and their
   * keys that were committed are acked as duplicates when they come back.
   */
  url?: string
  /**
   * An amqplib connection you own (never closed by the consumer). A lost
   * channel is opened again on it; after the connection itself is lost only
   * a recovering one (`connect(url, { recovery: true })`) gives the next.
   */
  connection?: AmqpConnection
  /**
   * The queue to consume. It must exist (declare it with your own arguments:
   * a dead-letter exchange, `x-queue-type: quorum`). With an owned engine,
   * the name of the partitioned queue: messages are on `${queue}.p${partition}`
   * (partitionQueueOf), which the consumer declares with
   * `x-single-active-consumer`, and it consumes the queues of the partitions
   * its engine owns.
   */
  queue: string
  /**
   * Unacked deliveries the broker sends at once (basic.qos): what one
   * consumer holds, and what one SIGKILL can leave run but not committed.
   * Deliveries that arrive together go to the engine as one batch.
   * @default 256
   */
  prefetch?: number
  /** The idem engine deciding verdicts: strict (consumers in several processes share one store and one queue) or owned (see queue). The consumer never closes it. */
  engine: Engine
  /** The business effect of one delivery. */
  handler: AmqpHandler<R>
  /**
   * The idempotency key of a delivery. A key that is not a non-empty string
   * of at most 1024 UTF-8 bytes dead-letters the message with INVALID_KEY; a
   * keyOf that throws, with INVALID_MESSAGE.
   * @default the messageId property, else the `x-message-id` header (refused when not valid UTF-8)
   */
  keyOf?: (message: ConsumeMessage) => unknown
  /** A digest of the payload: a message whose key is settled with another fingerprint is dead-lettered with CONFLICT. @default none */
  fingerprintOf?: (message: ConsumeMessage) => unknown
  /** A tenant or namespace: the same key under two namespaces is two keys. @default none */
  namespaceOf?: (message: ConsumeMessage) => unknown
  /**
   * Deliveries a message gets before it is dead-lettered: a handler that
   * throws on delivery maxDeliveries is dead-lettered with its code; a message
   * delivered more often than this with no outcome (on a quorum queue, whose
   * `x-delivery-count` counts deliveries whose consumer died) with
   * DELIVERIES_EXHAUSTED, its handler not run. In-flight waits do not count.
   * @default 5
   */
  maxDeliveries?: number
  /** After a handler error, the message comes back after this long, in ms, through a delay queue idem declares. @default 5000 */
  retryDelayMs?: number
  /** A message whose key is in flight elsewhere comes back after this long, in ms, through a delay queue idem declares. @default 1000 */
  inFlightDelayMs?: number
  /**
   * Where idem publishes dead letters itself, with the code and message in
   * `x-idem-error-code` and `x-idem-error-message` headers, before it acks the
   * delivery. Undefined: the delivery is rejected without requeue, so it goes
   * to the queue's own dead-letter exchange if it has one (dropped if not),
   * and the code is only in the consumer's `deadLetter` event.
   * @default none
   */
  deadLetterExchange?: string
  /** The routing key of the dead letters idem publishes. @default the message's own routing key */
  deadLetterRoutingKey?: string
}

/** Options after defaults and validation. */
export type AmqpConsumerConfig<R> = Filled<AmqpConsumerOptions<R>, 'url' | 'connection' | 'fingerprintOf' | 'namespaceOf' | 'deadLetterExchange' | 'deadLetterRoutingKey'>

export const defaults = {
  prefetch: 256,
  maxDeliveries: 5,
  retryDelayMs: 5000,
  inFlightDelayMs: 1000,
} as const

const known = fieldsOf<AmqpConsumerOptions>({
  url: true,
  connection: true,
  queue: true,
  prefetch: true,
  engine: true,
  handler: true,
  keyOf: true,
  fingerprintOf: true,
  namespaceOf: true,
  maxDeliveries: true,
  retryDelayMs: true,
  inFlightDelayMs: true,
  deadLetterExchange: true,
  deadLetterRoutingKey: true,
})

/** RabbitMQ's limit for a queue name (a short string); the delay queues' names add to the queue's. */
const MAX_QUEUE_NAME_BYTES = 200
const MAX_MS = 2 ** 31 - 1

/** Validates createAmqpConsumer's options once; throws one ConfigError naming every bad field. */
export function resolveAmqpConsumerOptions<R>(options: AmqpConsumerOptions<R>): AmqpConsumerConfig<R> {
  const o = new OptionReader(options)
  o.check()
  o.onlyKnown(known, 'createAmqpConsumer')
  o.exactlyOne(['url', 'connection'], 'createAmqpConsumer')
  const url = o.has('url') ? o.string('url', undefined, 'an amqp:// or amqps:// URL', (value) => /^amqps?:\/\//.test(value)) : undefined
  const connection = o.value('connection') as AmqpConnection | undefined
  if (connection !== undefined && typeof (connection as Partial<AmqpConnection> | null)?.createConfirmChannel !== 'function') {
    o.mustBe('connection', 'an amqplib connection (from connect())')
  }
  const queue = o.string('queue', undefined, `a queue name of 1 to ${MAX_QUEUE_NAME_BYTES} bytes`, (name) => name.length > 0 && Buffer.byteLength(name) <= MAX_QUEUE_NAME_BYTES)
  const prefetch = o.integer('prefetch', defaults.prefetch, 1, 65_535)
  const engine = o.value('engine')
  if (!isEngine(engine)) o.mustBe('engine', 'an idem Engine (from createEngine)')
  const ofMessage = 'a function of the message'
  const handler = o.function<AmqpHandler<R>>('handler', 'a function (message, context) => result', true)
  const keyOf = o.function<AmqpConsumerConfig<R>['keyOf']>('keyOf', ofMessage, false) ?? defaultKeyOf
  const fingerprintOf = o.function<AmqpConsumerConfig<R>['fingerprintOf']>('fingerprintOf', ofMessage, false)
  const namespaceOf = o.function<AmqpConsumerConfig<R>['namespaceOf']>('namespaceOf', ofMessage, false)
  const maxDeliveries = o.integer('maxDeliveries', defaults.maxDeliveries, 1, 1_000_000)
  const retryDelayMs = o.integer('retryDelayMs', defaults.retryDelayMs, 1, MAX_MS)
  const inFlightDelayMs = o.integer('inFlightDelayMs', defaults.inFlightDelayMs, 1, MAX_MS)
  const deadLetterExchange = o.has('deadLetterExchange') ? o.string('deadLetterExchange', undefined, 'an exchange name', () => true) : undefined
  const deadLetterRoutingKey = o.has('deadLetterRoutingKey') ? o.string('deadLetterRoutingKey', undefined, 'a routing key', () => true) : undefined
  if (deadLetterRoutingKey !== undefined && deadLetterExchange === undefined) o.mustBe('deadLetterRoutingKey', 'left out unless deadLetterExchange is given')
  if (deadLetterExchange === '' && (deadLetterRoutingKey ?? queue) === queue) o.mustBe('deadLetterExchange', `other than the default exchange routing back to the queue (${show(queue)})`)
  o.check()

  return {
    ...(url === undefined ? {} : { url }),
    ...(connection === undefined ? {} : { connection }),
    queue,
    prefetch,
    engine: engine as Engine,
    handler: handler!,
    keyOf,
    ...(fingerprintOf === undefined ? {} : { fingerprintOf }),
    ...(namespaceOf === undefined ? {} : { namespaceOf }),
    maxDeliveries,
    retryDelayMs,
    inFlightDelayMs,
    ...(deadLetterExchange === undefined ? {} : { deadLetterExchange }),
    ...(deadLetterRoutingKey === undefined ? {} : { deadLetterRoutingKey }),
  }
}
