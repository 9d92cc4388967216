import { jetstream, type JetStreamClient } from '@nats-io/jetstream'
import { connect, headers as natsHeaders, type MsgHdrs, type NatsConnection } from '@nats-io/transport-node'
import { invalidKey, KeyStatus, keyStatusOf, fieldsOf, OptionReader } from '../../validation.js'
import { errorText, ErrorCode, IdemError } from '../../errors.js'

/** Options of `createJetStreamPublisher`. Give `servers` or `connection`, not both. */
export interface JetStreamPublisherOptions {
  /** NATS servers: the publisher opens its own connection, and closes it on close(). */
  servers?: string | string[]
  /** A NATS connection you own (never closed by the publisher). */
  connection?: NatsConnection
  /** How long a publish waits for the stream's ack before it sends the message again, in ms. @default 5000 */
  timeoutMs?: number
  /** Sends of one message (the first included) before publish rejects with TRANSPORT_FAILED. @default 5 */
  maxAttempts?: number
}

/** What publish resolves with: the stream sequence, and whether the stream dropped the message as a resend inside its duplicate window. */
export interface JetStreamPublished {
  seq: number
  duplicate: boolean
}

const known = fieldsOf<JetStreamPublisherOptions>({ servers: true, connection: true, timeoutMs: true, maxAttempts: true })

/**
 * Publishes to JetStream with `Nats-Msg-Id` = the key: a resend inside the
 * stream's duplicate window is dropped by the broker (the PubAck says
 * `duplicate`); one outside it, and every redelivery, is caught by idem on
 * the consumer. A publish whose ack did not come within timeoutMs is sent
 * again with the same id, so the stream keeps one copy.
 */
export class JetStreamPublisher {
  private readonly timeoutMs: number
  private readonly maxAttempts: number
  private readonly owned: boolean
  private readonly client: Promise<{ connection: NatsConnection; js: JetStreamClient }>
  private readonly counts = { resends: 0, brokerDuplicates: 0 }

  constructor(options: JetStreamPublisherOptions) {
    const o = new OptionReader(options)
    o.check()
    o.onlyKnown(known, 'createJetStreamPublisher')
    o.exactlyOne(['servers', 'connection'], 'createJetStreamPublisher')
    const connection = o.value('connection') as NatsConnection | undefined
    if (connection !== undefined && typeof (connection as Partial<NatsConnection> | null)?.request !== 'function') o.mustBe('connection', 'a NATS connection (from connect())')
    this.timeoutMs = o.integer('timeoutMs', 5000, 1, 2 ** 31 - 1)
    this.maxAttempts = o.integer('maxAttempts', 5, 1, 1000)
    o.check()
    this.owned = connection === undefined
    this.client = (async () => {
      const nc = connection ?? (await connect({ servers: o.value('servers') as string | string[], maxReconnectAttempts: -1 }))
      return { connection: nc, js: jetstream(nc) }
    })()
    // A failure to connect shows in publish's rejection.
    this.client.catch(() => {})
  }

  /** resends: sends again after no ack in time; brokerDuplicates: PubAcks that said the stream had the message already (a resend inside its duplicate window). */
  stats(): { resends: number; brokerDuplicates: number } {
    return { ...this.counts }
  }

  /** Publishes `data` on `subject` with the key as Nats-Msg-Id; resolves with the stream's ack. Rejects with INVALID_KEY for a key the consumer would refuse. */
  async publish(subject: string, data: string | Uint8Array, options: { key: string; headers?: MsgHdrs }): Promise<JetStreamPublished> {
    const { key, headers } = options ?? ({} as { key: string })
    const status = keyStatusOf(key)
    if (status !== KeyStatus.OK) throw invalidKey('key', status, key)
    const { js } = await this.client
    let lastError: unknown
    for (let attempt = 1; attempt <= this.maxAttempts; attempt++) {
      if (attempt > 1) this.counts.resends++
      try {
        const ack = await js.publish(subject, data, { msgID: key, timeout: this.timeoutMs, headers: headers ?? natsHeaders() })
        if (ack.duplicate) this.counts.brokerDuplicates++
        return { seq: ack.seq, duplicate: ack.duplicate }
      } catch (error) {
        lastError = error
      }
    }
    throw new IdemError(ErrorCode.TRANSPORT_FAILED, `nats publish of key ${JSON.stringify(key)} failed (${this.maxAttempts} attempts, none acked): ${errorText(lastError)}`, { key, cause: lastError })
  }

  /** Closes the connection when the publisher opened it. */
  async close(): Promise<void> {
    const { connection } = await this.client.catch(() => ({ connection: undefined }))
    if (this.owned) await connection?.close().catch(() => {})
  }
}

/**
 * Opens a JetStream publisher.
 *
 * ```ts
 * const publisher = createJetStreamPublisher({ servers: '127.0.0.1:4222' })
 * await publisher.publish('orders.created', JSON.stringify(order), { key: `order-${order.id}` })
 * await publisher.close()
 * ```
 */
export function createJetStreamPublisher(options: JetStreamPublisherOptions): JetStreamPublisher {
  return new JetStreamPublisher(options)
}
