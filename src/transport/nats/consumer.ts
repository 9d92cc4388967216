import { EventEmitter } from 'node:events'
import { jetstream, type ConsumerMessages, type JsMsg } from '@nats-io/jetstream'
import { connect, type NatsConnection } from '@nats-io/transport-node'
import { errorText, ErrorCode, IdemError } from '../../errors.js'
import { messageOf, Verdict, type HandlerContext, type Message, type Outcome } from '../../message.js'
import { invalidOutcome } from '../../outcome.js'
import { failureReason } from '../delivery-limit.js'
import { TurnBatch } from '../turn-batch.js'
import { MsgAction, msgActionOf, termTakesReason } from './jetstream-message.js'
import { defaults, resolveJetStreamConsumerOptions, type JetStreamConsumerConfig, type JetStreamConsumerOptions } from './options.js'

/** Counts of one consumer since it started. */
export interface JetStreamConsumerStats {
  /** Messages received from the pull consumer. */
  received: number
  /** Messages acked: handler ran and committed here (`new`), or the key was done (`duplicates`, stale versions of version-aware keys included). */
  acked: number
  new: number
  duplicates: number
  /** Messages nak'ed with inFlightDelayMs (their key was in flight elsewhere, or its commit did not reach the store). */
  inFlight: number
  /** Messages nak'ed with retryDelayMs after a handler error. */
  retried: number
  /** Messages termed (conflict, bad input, handler out of deliveries). */
  terminated: number
  /** `working()` signals sent for messages held longer than a third of the consumer's ack_wait. */
  working: number
  /** NATS calls that failed, and consume loops that ended and were started again (each one also an `error` event). */
  transportErrors: number
  /** Batches taken through the engine. */
  batches: number
  /** Messages held right now (received, not yet settled). */
  holding: number
}

/** What the `terminated` event tells about one termed message. */
export interface JetStreamTermination {
  code: ErrorCode
  message: string
  /** The idempotency key, when keyOf gave a string. */
  key?: string
  deliveries: number
  /** The message itself: subject, headers, data, stream sequence. */
  delivery: JsMsg
}

export interface JetStreamConsumerEvents {
  /** A NATS call failed (code TRANSPORT_FAILED), or the engine refused a batch. Emitted only when someone listens; counted either way. */
  error: [error: IdemError]
  /** A message was termed; on nats-server 2.10 or later its term carried `${code}: ${message}` as the reason (termTakesReason). */
  terminated: [termination: JetStreamTermination]
}

const BACKOFF_MS = 100
const MAX_BACKOFF_MS = 5000
/** How long one fetch waits for messages that are not there yet: what close() may wait for a fetch to end. */
const FETCH_EXPIRES_MS = 1000

/**
 * An idempotent JetStream pull consumer. The messages that arrive together
 * (fetches of up to `batch`) go to the engine as one batch; each is
 * settled by its own outcome as soon as it is final, by msgActionOf: ack
 * once the outcome is durable, nak with a delay (in flight, handler errors),
 * or term with the code as its reason. Messages held longer than a third of
 * the consumer's ack_wait get `working()`, so a long handler's message is
 * not redelivered to another consumer while it runs.
 */
export class JetStreamConsumer<R = unknown> extends EventEmitter<JetStreamConsumerEvents> {
  readonly config: JetStreamConsumerConfig<R>
  private readonly counts: Omit<JetStreamConsumerStats, 'holding'> = {
    received: 0, acked: 0, new: 0, duplicates: 0, inFlight: 0, retried: 0, terminated: 0, working: 0, transportErrors: 0, batches: 0,
  }
  /** Messages received and not settled, with when they arrived or last got working(). */
  private readonly held = new Map<JsMsg, number>()
  private stopping = false
  /** Hands what arrived in one turn of the event loop to the engine as one batch. */
  private readonly batches = new TurnBatch<JsMsg>((batch) => {
    const run = this.processBatch(batch)
      .catch((error: unknown) => this.report(new IdemError(ErrorCode.ACTOR_FAILED, `jetstream batch failed: ${errorText(error)}`, { cause: error })))
      .finally(() => this.running.delete(run))
    this.running.add(run)
  })
  private readonly running = new Set<Promise<void>>()
  private connection: NatsConnection | undefined
  private messages: ConsumerMessages | undefined
  private maxDeliveries = defaults.maxDeliveries as number
  /** Whether the server reads a term's reason (termTakesReason). */
  private termReasons = false
  private workingTimer: NodeJS.Timeout | undefined
  private wakeSleeper: (() => void) | undefined
  /** The pull loop, waiting for held messages to settle. */
  private roomWaiter: (() => void) | undefined
  private loop: Promise<void> | undefined
  private readonly ready: Promise<void>
  private closing: Promise<void> | undefined

  constructor(options: JetStreamConsumerOptions<R>) {
    super()
    this.config = resolveJetStreamConsumerOptions(options)
    this.ready = this.start()
    // A rejection of ready is the caller's to see through waitUntilReady(); never unhandled.
    this.ready.catch(() => {})
  }

  /** Resolves once consuming has started; rejects if it cannot (no such stream or consumer, no server). */
  waitUntilReady(): Promise<void> {
    return this.ready
  }

  stats(): JetStreamConsumerStats {
    return { ...this.counts, holding: this.held.size }
  }

  /**
   * Stops pulling, waits for the messages being worked on to settle, then
   * closes the connection when it opened it. Messages pulled and not
   * settled are redelivered by JetStream after ack_wait. The engine stays
   * open: close it after this. Safe to call twice.
   */
  close(): Promise<void> {
    this.closing ??= (async () => {
      this.stopping = true
      this.wakeSleeper?.()
      this.roomWaiter?.()
      await this.ready.catch(() => {})
      await this.messages?.close().catch(() => {})
      await this.loop
      this.batches.flush()
      while (this.running.size > 0) await Promise.all(this.running)
      clearInterval(this.workingTimer)
      if (this.config.connection === undefined) await this.connection?.close().catch(() => {})
    })()
    return this.closing
  }

  private async start(): Promise<void> {
    const { servers, connection, stream, consumer: name } = this.config
    this.connection = connection ?? (await connect({ servers: servers!, maxReconnectAttempts: -1 }))
    let info
    try {
      const consumer = await jetstream(this.connection).consumers.get(stream, name)
      info = await consumer.info()
    } catch (error) {
      if (connection === undefined) await this.connection.close().catch(() => {})
      throw natsError(`look-up of consumer "${name}" on stream "${stream}"`, error)
    }
    this.termReasons = termTakesReason(this.connection.info?.version)
    const maxDeliver = info.config.max_deliver ?? -1
    this.maxDeliveries = this.config.maxDeliveries ?? (maxDeliver > 0 ? maxDeliver : defaults.maxDeliveries)
    const ackWaitMs = Math.max(30, Math.floor((info.config.ack_wait ?? 30e9) / 1e6))
    this.workingTimer = setInterval(() => this.sendWorking(ackWaitMs / 3), Math.max(10, Math.floor(ackWaitMs / 6)))
    this.workingTimer.unref()
    if (this.stopping) return
    this.loop = this.consumeLoop()
  }

  /**
   * Pulls for ever: one fetch at a time, for what is free of `batch` once no
   * more than half of it is held. Messages are run as they arrive, not when
   * the fetch ends. Why not consume(): it pulls again as messages arrive,
   * not as they are settled, so a consumer with slow handlers would hold up
   * to the server's max_ack_pending, and a SIGKILL could run all of them
   * twice; fetch keeps what one consumer holds to `batch`.
   */
  private async consumeLoop(): Promise<void> {
    const { stream, consumer: name, batch } = this.config
    for (let attempt = 0; !this.stopping; attempt++) {
      try {
        const consumer = await jetstream(this.connection!).consumers.get(stream, name)
        while (!this.stopping) {
          await this.roomFor(Math.ceil(batch / 2))
          if (this.stopping) return
          this.messages = await consumer.fetch({ max_messages: batch - this.held.size, expires: FETCH_EXPIRES_MS })
          for await (const message of this.messages) {
            attempt = 0
            this.receive(message)
          }
        }
      } catch (error) {
        if (this.stopping) return
        this.report(natsError('fetch', error))
      }
      await this.pause(Math.min(MAX_BACKOFF_MS, BACKOFF_MS * 2 ** Math.min(attempt, 16)))
    }
  }

  /** Resolves once at most `most` messages are held, or close() was called. */
  private async roomFor(most: number): Promise<void> {
    while (this.held.size > most && !this.stopping) await new Promise<void>((resolve) => (this.roomWaiter = resolve))
  }

  private receive(message: JsMsg): void {
    this.counts.received++
    this.held.set(message, Date.now())
    this.batches.add(message)
  }

  private async processBatch(batch: JsMsg[]): Promise<void> {
    this.counts.batches++
    const messages: Message<number>[] = []
    const positions: number[] = []
    batch.forEach((msg, i) => {
      let message: Message<number>
      try {
        // The payload is the message's place in the batch: the handler finds it there, and nothing else crosses into the engine.
        message = messageOf(msg, this.config, messageName, i)
      } catch (error) {
        this.settle(msg, invalidOutcome(undefined, error as IdemError))
        return
      }
      messages.push(message)
      positions.push(i)
    })
    if (messages.length === 0) return
    const handle = (message: Message<number>, context: HandlerContext): unknown => this.config.handler(batch[message.payload!], context)
    try {
      this.config.engine.countSettled('nats', await this.config.engine.submit(messages, handle, (j, outcome) => this.settle(batch[positions[j]], outcome)))
    } catch (error) {
      // Nothing of the batch was settled: nak'ed as in flight, so a refusal does not spin.
      const refused = error instanceof IdemError ? error : new IdemError(ErrorCode.ACTOR_FAILED, `engine.submit failed: ${errorText(error)}`, { cause: error })
      this.report(refused)
      positions.forEach((i, j) => this.settle(batch[i], { key: messages[j].key, verdict: Verdict.IN_FLIGHT, error: refused }))
      if (refused.code === ErrorCode.ENGINE_CLOSED) void this.close()
    }
  }

  /** Settles one message by its outcome. Acks are not awaited: a lost one redelivers the message, acked then as a duplicate. */
  private settle(msg: JsMsg, outcome: Outcome): void {
    this.held.delete(msg)
    this.roomWaiter?.()
    const deliveries = msg.info.deliveryCount
    const { inFlightDelayMs, retryDelayMs } = this.config
    try {
      switch (msgActionOf(outcome, deliveries, this.maxDeliveries)) {
        case MsgAction.ACK:
          msg.ack()
          this.counts.acked++
          if (outcome.verdict === Verdict.NEW) this.counts.new++
          else this.counts.duplicates++
          return
        case MsgAction.WAIT:
          msg.nak(inFlightDelayMs)
          this.counts.inFlight++
          return
        case MsgAction.RETRY:
          msg.nak(retryDelayMs)
          this.counts.retried++
          return
        case MsgAction.TERM: {
          const reason = failureReason(outcome, deliveries, this.maxDeliveries)
          if (this.termReasons) msg.term(`${reason.code}: ${reason.message}`)
          else msg.term()
          this.counts.terminated++
          if (this.listenerCount('terminated') === 0) return
          const termination: JetStreamTermination = { ...reason, deliveries, delivery: msg }
          if (typeof outcome.key === 'string' && outcome.key !== '' && outcome.verdict !== Verdict.INVALID) termination.key = outcome.key
          this.emit('terminated', termination)
        }
      }
    } catch (error) {
      // The connection is closed: JetStream redelivers the message after ack_wait.
      this.report(natsError('ack', error))
    }
  }

  /** working() for every message held longer than `dueMs` since it arrived or last got one: its ack_wait starts again. */
  private sendWorking(dueMs: number): void {
    const now = Date.now()
    for (const [msg, since] of this.held) {
      if (now - since < dueMs) continue
      try {
        msg.working()
        this.counts.working++
        this.held.set(msg, now)
      } catch (error) {
        this.report(natsError('working', error))
        return
      }
    }
  }

  private pause(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const timer = setTimeout(done, ms)
      const wake = (this.wakeSleeper = done)
      const self = this
      function done(): void {
        clearTimeout(timer)
        if (self.wakeSleeper === wake) self.wakeSleeper = undefined
        resolve()
      }
    })
  }

  private report(error: IdemError): void {
    if (error.code === ErrorCode.TRANSPORT_FAILED) this.counts.transportErrors++
    if (this.listenerCount('error') > 0) this.emit('error', error)
  }
}

/** A failed NATS call as TRANSPORT_FAILED, naming what was tried. */
export function natsError(operation: string, error: unknown): IdemError {
  if (error instanceof IdemError) return error
  return new IdemError(ErrorCode.TRANSPORT_FAILED, `nats ${operation} failed: ${errorText(error)}`, { cause: error })
}

/** How a message is named in the message of a keyOf (namespaceOf, fingerprintOf) that threw. */
function messageName(message: JsMsg): string {
  return `message ${message.seq} of stream "${message.info.stream}"`
}

/**
 * Starts an idempotent JetStream pull consumer. Throws ConfigError naming every bad option.
 *
 * ```ts
 * const consumer = createJetStreamConsumer({ servers: '127.0.0.1:4222', stream: 'ORDERS', consumer: 'billing', engine,
 *   handler: (message) => chargeCard(message.json()) })
 * await consumer.waitUntilReady()
 * // …
 * await consumer.close()
 * await engine.close()
 * ```
 */
export function createJetStreamConsumer<R = unknown>(options: JetStreamConsumerOptions<R>): JetStreamConsumer<R> {
  return new JetStreamConsumer(options)
}
