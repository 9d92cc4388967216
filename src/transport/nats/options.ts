import type { JsMsg } from '@nats-io/jetstream'
import type { NatsConnection } from '@nats-io/transport-node'
import type { Engine } from '../../engine.js'
import type { HandlerContext } from '../../message.js'
import { fieldsOf, isEngine, OptionReader, type Filled } from '../../validation.js'
import { defaultKeyOf } from './jetstream-message.js'

/** The business effect of one message. Runs once per idempotency key, however often the message (or a copy) is delivered. */
export type JetStreamHandler<R = unknown> = (message: JsMsg, context: HandlerContext) => R | Promise<R>

/** Options of `createJetStreamConsumer`. Give `servers` or `connection`, not both. */
export interface JetStreamConsumerOptions<R = unknown> {
  /** NATS servers (`'127.0.0.1:4222'`, or a list): the consumer opens its own connection, which reconnects for ever, and closes it on close(). */
  servers?: string | string[]
  /** A NATS connection you own (never closed by the consumer). */
  connection?: NatsConnection
  /** The stream. */
  stream: string
  /**
   * The durable pull consumer on the stream, with `ack_policy: explicit`. It
   * must exist: create it with your own `ack_wait` (how long a delivery may go
   * unacked before JetStream redelivers it: what a crash costs) and
   * `max_deliver` (-1, or above maxDeliveries, see there).
   */
  consumer: string
  /** The idem engine deciding verdicts. The consumer never closes it. */
  engine: Engine
  /** The business effect of one message. */
  handler: JetStreamHandler<R>
  /**
   * The idempotency key of a message. A key that is not a non-empty string
   * of at most 1024 UTF-8 bytes terms the message with INVALID_KEY; a keyOf
   * that throws, with INVALID_MESSAGE.
   * @default the `Nats-Msg-Id` header (refused when not valid UTF-8)
   */
  keyOf?: (message: JsMsg) => unknown
  /** A digest of the payload: a message whose key is settled with another fingerprint is termed with CONFLICT. @default none */
  fingerprintOf?: (message: JsMsg) => unknown
  /** A tenant or namespace: the same key under two namespaces is two keys. @default none */
  namespaceOf?: (message: JsMsg) => unknown
  /**
   * The most messages one consumer holds at once (a fetch asks for what is
   * free of it once half is free), and so what one SIGKILL can leave run but
   * not committed. The messages that arrive together go to the engine as
   * one batch.
   * @default 256
   */
  batch?: number
  /**
   * Deliveries before a message whose handler throws is termed with the
   * handler's code. JetStream counts every delivery, in-flight naks
   * included. A consumer whose `max_deliver` is this or lower stops
   * delivering before idem terms the message: JetStream then emits its
   * MAX_DELIVERIES advisory instead.
   * @default the consumer's max_deliver when it has one, else 5
   */
  maxDeliveries?: number
  /** After a handler error, the message is nak'ed with this delay, in ms. @default 5000 */
  retryDelayMs?: number
  /** A message whose key is in flight elsewhere is nak'ed with this delay, in ms. @default 1000 */
  inFlightDelayMs?: number
}

/** Options after defaults and validation; maxDeliveries undefined: the consumer's max_deliver, read at start. */
export type JetStreamConsumerConfig<R> = Filled<JetStreamConsumerOptions<R>, 'servers' | 'connection' | 'fingerprintOf' | 'namespaceOf' | 'maxDeliveries'>

export const defaults = {
  batch: 256,
  maxDeliveries: 5,
  retryDelayMs: 5000,
  inFlightDelayMs: 1000,
} as const

const known = fieldsOf<JetStreamConsumerOptions>({
  servers: true,
  connection: true,
  stream: true,
  consumer: true,
  engine: true,
  handler: true,
  keyOf: true,
  fingerprintOf: true,
  namespaceOf: true,
  batch: true,
  maxDeliveries: true,
  retryDelayMs: true,
  inFlightDelayMs: true,
})

const MAX_MS = 2 ** 31 - 1

/** Validates createJetStreamConsumer's options once; throws one ConfigError naming every bad field. */
export function resolveJetStreamConsumerOptions<R>(options: JetStreamConsumerOptions<R>): JetStreamConsumerConfig<R> {
  const o = new OptionReader(options)
  o.check()
  o.onlyKnown(known, 'createJetStreamConsumer')
  o.exactlyOne(['servers', 'connection'], 'createJetStreamConsumer')
  const servers = o.value('servers') as string | string[] | undefined
  if (servers !== undefined && !(typeof servers === 'string' ? servers !== '' : Array.isArray(servers) && servers.length > 0 && servers.every((s) => typeof s === 'string' && s !== ''))) {
    o.mustBe('servers', 'a server (host:port or nats:// URL) or a non-empty list of them')
  }
  const connection = o.value('connection') as NatsConnection | undefined
  if (connection !== undefined && typeof (connection as Partial<NatsConnection> | null)?.request !== 'function') o.mustBe('connection', 'a NATS connection (from connect())')
  const stream = o.string('stream', undefined, 'a stream name')
  const consumer = o.string('consumer', undefined, 'a durable consumer name')
  const engine = o.value('engine')
  if (!isEngine(engine)) o.mustBe('engine', 'an idem Engine (from createEngine)')
  else if (engine.config.mode === 'owned') o.mustBe('engine', "a strict engine: the JetStream consumer does not read partition streams (create the engine with mode: 'strict')", 'an owned engine')
  const ofMessage = 'a function of the message'
  const handler = o.function<JetStreamHandler<R>>('handler', 'a function (message, context) => result', true)
  const keyOf = o.function<JetStreamConsumerConfig<R>['keyOf']>('keyOf', ofMessage, false) ?? defaultKeyOf
  const fingerprintOf = o.function<JetStreamConsumerConfig<R>['fingerprintOf']>('fingerprintOf', ofMessage, false)
  const namespaceOf = o.function<JetStreamConsumerConfig<R>['namespaceOf']>('namespaceOf', ofMessage, false)
  const batch = o.integer('batch', defaults.batch, 1, 65_536)
  const maxDeliveries = o.has('maxDeliveries') ? o.integer('maxDeliveries', undefined, 1, 1_000_000) : undefined
  const retryDelayMs = o.integer('retryDelayMs', defaults.retryDelayMs, 1, MAX_MS)
  const inFlightDelayMs = o.integer('inFlightDelayMs', defaults.inFlightDelayMs, 1, MAX_MS)
  o.check()

  return {
    ...(servers === undefined ? {} : { servers }),
    ...(connection === undefined ? {} : { connection }),
    stream,
    consumer,
    engine: engine as Engine,
    handler: handler!,
    keyOf,
    ...(fingerprintOf === undefined ? {} : { fingerprintOf }),
    ...(namespaceOf === undefined ? {} : { namespaceOf }),
    batch,
    ...(maxDeliveries === undefined ? {} : { maxDeliveries }),
    retryDelayMs,
    inFlightDelayMs,
  }
}
