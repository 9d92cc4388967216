import type { Channel, ConsumeMessage } from 'amqplib'
import type { Outcome } from '../../message.js'
import { Settle, settleOf } from '../../outcome.js'
import { messageIdKey } from '../message-id.js'

/** Headers idem reads and writes on the messages it handles. */
export const Header = {
  /** The seed's dedup header: the key when the messageId property is absent. */
  MESSAGE_ID: 'x-message-id',
  /** Quorum queues: how often this copy was delivered before and returned to the queue (requeued, or its channel lost). */
  DELIVERY_COUNT: 'x-delivery-count',
  /** Deliveries the message used before idem put this copy on a delay queue: its count survives the trip. */
  DELIVERIES: 'x-idem-deliveries',
  /** On a dead letter idem publishes: the error code, and its message. */
  ERROR_CODE: 'x-idem-error-code',
  ERROR_MESSAGE: 'x-idem-error-message',
} as const

/**
 * The key of a delivery unless keyOf is given: its `messageId` property
 * (createAmqpPublisher sets it to the key), else its `x-message-id` header.
 * An id that was not valid UTF-8 is refused (messageIdKey).
 */
export function defaultKeyOf(message: ConsumeMessage): unknown {
  const id = message.properties.messageId as unknown
  return messageIdKey(typeof id === 'string' && id !== '' ? id : headerText(message.properties.headers?.[Header.MESSAGE_ID]))
}

/** A header value as text: a string as is, a byte array decoded as UTF-8 (U+FFFD where it is not). */
function headerText(value: unknown): unknown {
  return Buffer.isBuffer(value) ? value.toString('utf8') : value
}

/**
 * Deliveries of this message so far, this one included: those used before
 * idem's last trip through a delay queue (its header), plus the deliveries of
 * this copy a quorum queue counted (`x-delivery-count`), plus this one. A
 * classic queue counts nothing for a delivery whose consumer died: only
 * quorum queues bound a message that kills its consumer every time.
 */
export function deliveriesOf(message: ConsumeMessage): number {
  const headers = message.properties.headers ?? {}
  return countOf(headers[Header.DELIVERIES]) + countOf(headers[Header.DELIVERY_COUNT]) + 1
}

function countOf(value: unknown): number {
  const n = typeof value === 'number' ? value : typeof value === 'bigint' ? Number(value) : Number.NaN
  return Number.isSafeInteger(n) && n > 0 ? n : 0
}

/** What the consumer does with one delivery once its outcome is known (DESIGN.md §3, by settleOf). */
export const DeliveryAction = {
  /** basic.ack: the handler ran and committed, or the key was done (a duplicate). */
  ACK: 'ack',
  /** A copy on the in-flight delay queue, confirmed, then the delivery acked: back to its queue after inFlightDelayMs, no delivery used. */
  WAIT: 'wait',
  /** A copy on the retry delay queue carrying one more delivery, confirmed, then acked: back after retryDelayMs. */
  RETRY: 'retry',
  /** Dead-lettered with the reason: conflict, bad input, or out of deliveries. */
  DEAD_LETTER: 'dead-letter',
} as const
export type DeliveryAction = (typeof DeliveryAction)[keyof typeof DeliveryAction]

/** The settle table of the AMQP transport; a retry on delivery maxDeliveries (or later) is a dead letter instead. */
export function deliveryActionOf(outcome: Outcome, deliveries: number, maxDeliveries: number): DeliveryAction {
  switch (settleOf(outcome)) {
    case Settle.DONE:
      return DeliveryAction.ACK
    case Settle.WAIT:
      return DeliveryAction.WAIT
    case Settle.RETRY:
      return deliveries >= maxDeliveries ? DeliveryAction.DEAD_LETTER : DeliveryAction.RETRY
    case Settle.REJECT:
      return DeliveryAction.DEAD_LETTER
  }
}

/**
 * The delay queue (and its exchange, of the same name) idem declares beside
 * `queue` for one delay: a copy is published to the exchange with the queue
 * it must go back to as its routing key, waits in the delay queue `delayMs`
 * (its x-message-ttl), and is dead-lettered by the broker to the default
 * exchange with that routing key, so back to its queue (in owned mode, to its
 * own partition's queue). One queue per delay, as RabbitMQ expires messages
 * only at a queue's head: a short delay behind a long one would wait for it.
 */
export function delayQueueOf(queue: string, delayMs: number): string {
  return `${queue}.idem-delay-${delayMs}ms`
}

/** Declares delayQueueOf(queue, delayMs): a topic exchange, its queue bound with '#', and the queue's TTL and dead-lettering. */
export async function declareDelayQueue(channel: Channel, queue: string, delayMs: number): Promise<void> {
  const name = delayQueueOf(queue, delayMs)
  await channel.assertExchange(name, 'topic', { durable: true })
  // No x-dead-letter-routing-key: a dead-lettered message keeps its own routing key, the queue it came from.
  await channel.assertQueue(name, { durable: true, arguments: { 'x-message-ttl': delayMs, 'x-dead-letter-exchange': '' } })
  await channel.bindQueue(name, name, '#')
}
