import { connect, type ChannelModel, type ConfirmChannel } from 'amqplib'
import { errorText, ErrorCode, IdemError } from '../../errors.js'

/**
 * What idem needs of an amqplib connection you own: a plain one from
 * `connect(url)`, or a recovering one (`connect(url, { recovery: true })`),
 * whose createConfirmChannel waits for its next connection.
 */
export interface AmqpConnection {
  createConfirmChannel(): Promise<ConfirmChannel>
}

const BACKOFF_MS = 100
const MAX_BACKOFF_MS = 5000

/** AMQP reply codes no reconnect can fix: the queue or exchange is missing (404), or declared with other arguments (406). */
const PERMANENT_REPLY_CODES = new Set([403, 404, 406])

/**
 * Keeps one confirm channel open: opens it (and, for a URL, the connection),
 * runs `setUp` on it, and when it closes under us (the broker closed it, the
 * connection dropped) opens the next one after a backoff, until close().
 * Deliveries unacked on a lost channel go back to their queue (the broker
 * does that); what a channel held is never settled on the next one, as
 * delivery tags are per channel.
 */
export class ChannelLink {
  /** The open channel (from the start of its set-up); undefined between a loss and the next channel. */
  channel: ConfirmChannel | undefined
  /** Channels opened after the first: one per reconnect. */
  reconnects = 0
  /** The last channel whose set-up completed. */
  private setUpChannel: ConfirmChannel | undefined
  private connection: ChannelModel | undefined
  private stopping = false
  private wakeSleeper: (() => void) | undefined
  private readonly upWaiters: { resolve: (channel: ConfirmChannel) => void; reject: (error: IdemError) => void }[] = []
  private loop: Promise<void> | undefined
  private firstUp = true

  constructor(
    private readonly source: string | AmqpConnection,
    private readonly setUp: (channel: ConfirmChannel) => Promise<void>,
    private readonly report: (error: IdemError) => void,
  ) {}

  /**
   * Starts keeping the channel open; resolves with the first channel set up.
   * Rejects when the first set-up fails for a reason no retry fixes (a
   * missing queue, arguments that differ); later losses are retried.
   */
  start(): Promise<ConfirmChannel> {
    const up = this.whenUp()
    this.loop = this.keepOpen()
    return up
  }

  /** The channel once it is up: now, or after the next (re)connect. Rejects when the link stops first. */
  whenUp(): Promise<ConfirmChannel> {
    if (this.channel !== undefined && this.channel === this.setUpChannel) return Promise.resolve(this.channel)
    if (this.stopping) return Promise.reject(closedError())
    return new Promise((resolve, reject) => this.upWaiters.push({ resolve, reject }))
  }

  /** Closes the channel, and the connection when the link opened it from a URL. Unacked deliveries go back to their queue. */
  async close(): Promise<void> {
    this.stopping = true
    this.wakeSleeper?.()
    for (const waiter of this.upWaiters.splice(0)) waiter.reject(closedError())
    const channel = this.channel
    this.channel = undefined
    await channel?.close().catch(() => {})
    await this.loop
    await this.connection?.close().catch(() => {})
    this.connection = undefined
  }

  private async keepOpen(): Promise<void> {
    for (let attempt = 0; !this.stopping; attempt++) {
      let channel: ConfirmChannel | undefined
      try {
        channel = await this.open()
        const closed = new Promise<void>((resolve) => channel!.once('close', resolve))
        // The channel is the live one from before its set-up: deliveries can arrive as soon as set-up subscribes, and are settled on it.
        this.channel = channel
        await this.setUp(channel)
        if (this.stopping) {
          await channel.close().catch(() => {})
          return
        }
        if (!this.firstUp) this.reconnects++
        this.firstUp = false
        attempt = 0
        this.setUpChannel = channel
        for (const waiter of this.upWaiters.splice(0)) waiter.resolve(channel)
        await closed
        this.channel = undefined
        if (this.stopping) return
        this.report(new IdemError(ErrorCode.TRANSPORT_FAILED, 'amqp channel closed under the consumer: reopening it; its unacked deliveries go back to the queue'))
      } catch (error) {
        this.channel = undefined
        await channel?.close().catch(() => {})
        if (this.stopping) return
        const failure = amqpError('open and set up a channel', error)
        if (this.firstUp && PERMANENT_REPLY_CODES.has((error as { code?: unknown }).code as number)) {
          this.stopping = true
          for (const waiter of this.upWaiters.splice(0)) waiter.reject(failure)
          return
        }
        this.report(failure)
      }
      await this.pause(Math.min(MAX_BACKOFF_MS, BACKOFF_MS * 2 ** Math.min(attempt, 16)))
    }
  }

  private async open(): Promise<ConfirmChannel> {
    if (typeof this.source !== 'string') return await watched(await this.source.createConfirmChannel(), this.report)
    if (this.connection === undefined) {
      const connection = await connect(this.source)
      // A dropped connection closes its channels too (the loop then reconnects); its error is that close's reason.
      connection.on('error', () => {})
      connection.once('close', () => {
        if (this.connection === connection) this.connection = undefined
      })
      this.connection = connection
    }
    return watched(await this.connection.createConfirmChannel(), this.report)
  }

  private pause(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const timer = setTimeout(done, ms)
      const wake = (this.wakeSleeper = done)
      const link = this
      function done(): void {
        clearTimeout(timer)
        if (link.wakeSleeper === wake) link.wakeSleeper = undefined
        resolve()
      }
    })
  }
}

/** A channel error (a refused publish, a 404) is emitted before the channel closes: reported, never an unhandled 'error'. */
function watched(channel: ConfirmChannel, report: (error: IdemError) => void): ConfirmChannel {
  channel.on('error', (error: unknown) => report(amqpError('channel', error)))
  return channel
}

/** A failed AMQP call as TRANSPORT_FAILED, naming what was tried. */
export function amqpError(operation: string, error: unknown): IdemError {
  if (error instanceof IdemError) return error
  return new IdemError(ErrorCode.TRANSPORT_FAILED, `amqp ${operation} failed: ${errorText(error)}`, { cause: error })
}

function closedError(): IdemError {
  return new IdemError(ErrorCode.TRANSPORT_FAILED, 'the amqp link is closed')
}
