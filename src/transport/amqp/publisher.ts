import type { ConfirmChannel, Options } from 'amqplib'
import { errorText, ErrorCode, IdemError } from '../../errors.js'
import { fieldsOf, invalidKey, KeyStatus, keyStatusOf, OptionReader } from '../../validation.js'
import { ChannelLink, type AmqpConnection } from './channel-link.js'
import { Header } from './delivery.js'

/** Options of `createAmqpPublisher`. Give `url` or `connection`, not both. */
export interface AmqpPublisherOptions {
  /** An `amqp://` URL: the publisher opens its own connection, and opens it again with backoff when it is lost. */
  url?: string
  /** An amqplib connection you own (never closed by the publisher). */
  connection?: AmqpConnection
  /**
   * How long a publish waits for the broker's confirm before it sends the
   * message again, in ms. A resend whose first copy did arrive is a
   * duplicate with the same messageId: the consumer acks it without running
   * the handler.
   * @default 5000
   */
  confirmTimeoutMs?: number
  /** Sends of one message (the first included) before publish rejects with TRANSPORT_FAILED. @default 5 */
  maxAttempts?: number
}

/** What publish takes besides the body: the idempotency key, and any amqplib publish options (headers, contentType, …). */
export interface AmqpPublishOptions extends Omit<Options.Publish, 'messageId'> {
  /** The idempotency key: the messageId property, or the `x-message-id` header when it is longer than a messageId can be (255 bytes). */
  key: string
}

const known = fieldsOf<AmqpPublisherOptions>({ url: true, connection: true, confirmTimeoutMs: true, maxAttempts: true })

/** AMQP's short strings (the messageId property) hold at most 255 bytes. */
const MAX_MESSAGE_ID_BYTES = 255
const RESEND_BACKOFF_MS = 100

/**
 * Publishes on a confirm channel with the key as messageId, resolving only
 * once the broker confirmed the message (it is then in every queue it was
 * routed to). A message whose confirm does not come within confirmTimeoutMs,
 * or that the broker refused, or whose channel was lost, is sent again: the
 * producer side of "confirm + dedup header", with the consumer's dedup
 * absorbing every resend whose first copy did arrive.
 */
export class AmqpPublisher {
  private readonly link: ChannelLink
  private readonly confirmTimeoutMs: number
  private readonly maxAttempts: number
  private resends = 0

  constructor(options: AmqpPublisherOptions) {
    const o = new OptionReader(options)
    o.check()
    o.onlyKnown(known, 'createAmqpPublisher')
    o.exactlyOne(['url', 'connection'], 'createAmqpPublisher')
    if (o.has('url')) o.string('url', undefined, 'an amqp:// or amqps:// URL', (value) => /^amqps?:\/\//.test(value))
    const connection = o.value('connection') as AmqpConnection | undefined
    if (connection !== undefined && typeof (connection as Partial<AmqpConnection> | null)?.createConfirmChannel !== 'function') o.mustBe('connection', 'an amqplib connection (from connect())')
    this.confirmTimeoutMs = o.integer('confirmTimeoutMs', 5000, 1, 2 ** 31 - 1)
    this.maxAttempts = o.integer('maxAttempts', 5, 1, 1000)
    o.check()
    this.link = new ChannelLink((o.value('url') as string | undefined) ?? connection!, async () => {}, () => {})
    // Connecting starts now; a publish waits for it (and a failure shows in publish's rejection).
    this.link.start().catch(() => {})
  }

  /** Messages sent again because their confirm did not come in time, was negative, or their channel was lost. */
  stats(): { resends: number; reconnects: number } {
    return { resends: this.resends, reconnects: this.link.reconnects }
  }

  /**
   * Publishes `body` to `exchange` with `routingKey`, the key as messageId
   * (and persistent unless told otherwise); resolves once the broker
   * confirmed it. Rejects with INVALID_KEY for a key the consumer would
   * refuse, TRANSPORT_FAILED after maxAttempts sends without a confirm.
   */
  async publish(exchange: string, routingKey: string, body: Buffer | string, options: AmqpPublishOptions): Promise<void> {
    const { key, ...rest } = options ?? ({} as AmqpPublishOptions)
    const status = keyStatusOf(key)
    if (status !== KeyStatus.OK) throw invalidKey('key', status, key)
    const content = typeof body === 'string' ? Buffer.from(body) : body
    const publish: Options.Publish = { persistent: true, ...rest }
    if (Buffer.byteLength(key) <= MAX_MESSAGE_ID_BYTES) publish.messageId = key
    else publish.headers = { ...rest.headers, [Header.MESSAGE_ID]: key }
    let lastError: unknown
    for (let attempt = 1; attempt <= this.maxAttempts; attempt++) {
      if (attempt > 1) {
        this.resends++
        await new Promise((resolve) => setTimeout(resolve, RESEND_BACKOFF_MS))
      }
      try {
        await this.confirmed(await this.channelWithin(this.confirmTimeoutMs), exchange, routingKey, content, publish)
        return
      } catch (error) {
        lastError = error
      }
    }
    throw new IdemError(ErrorCode.TRANSPORT_FAILED, `amqp publish of key ${JSON.stringify(key)} failed (${this.maxAttempts} attempts, none confirmed): ${errorText(lastError)}`, { key, cause: lastError })
  }

  /** Closes the channel, and the connection when the publisher opened it from a URL. */
  close(): Promise<void> {
    return this.link.close()
  }

  /** The open channel, waiting up to `ms` for a (re)connect: a broker that is down uses up attempts instead of hanging the publish. */
  private channelWithin(ms: number): Promise<ConfirmChannel> {
    let timer: NodeJS.Timeout | undefined
    const late = new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new IdemError(ErrorCode.TRANSPORT_FAILED, `no channel within ${ms} ms (the broker is unreachable)`)), ms)))
    return Promise.race([this.link.whenUp(), late]).finally(() => clearTimeout(timer))
  }

  private confirmed(channel: ConfirmChannel, exchange: string, routingKey: string, content: Buffer, options: Options.Publish): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new IdemError(ErrorCode.TRANSPORT_FAILED, `no confirm within ${this.confirmTimeoutMs} ms`)), this.confirmTimeoutMs)
      const done = (error: unknown): void => {
        clearTimeout(timer)
        if (error === null || error === undefined) resolve()
        else reject(error)
      }
      try {
        channel.publish(exchange, routingKey, content, options, done)
      } catch (error) {
        // The channel closed since whenUp: the next attempt waits for the next one.
        done(error)
      }
    })
  }
}

/**
 * Opens a publisher with broker confirms.
 *
 * ```ts
 * const publisher = createAmqpPublisher({ url: 'amqp://localhost' })
 * await publisher.publish('', 'orders', JSON.stringify(order), { key: `order-${order.id}` })
 * await publisher.close()
 * ```
 */
export function createAmqpPublisher(options: AmqpPublisherOptions): AmqpPublisher {
  return new AmqpPublisher(options)
}
