import type { ConfirmChannel, ConsumeMessage } from 'amqplib'

/** How often acks held behind an open delivery are looked at again. */
const HOLD_MS = 2
/** An ack held longer than this goes alone: a slow handler before it must not hold the prefetch window. */
const MAX_HOLD_MS = 10

/**
 * The acks of one channel, sent as few frames as the settle order allows.
 * amqplib writes each frame to the socket on its own, and a consumer that
 * settles deliveries out of order (a duplicate before the commit of a new
 * key received ahead of it) spreads its acks over many turns, so one frame
 * per ack costs more than the rest of the consumer. Delivery tags of a
 * channel grow by one per delivery: once every delivery up to a tag is
 * settled, one ack with `multiple` covers the held ones among them.
 * Deliveries settled another way (nack, reject) count as settled here.
 */
export class AckWindow {
  /** Tags received and not yet covered, in order, with their state. */
  private readonly tags: number[] = []
  private readonly state = new Map<number, 'open' | 'held' | 'done'>()
  /** When each held ack was asked for (performance.now()). */
  private readonly heldSince = new Map<number, number>()
  private scheduled = false

  constructor(
    private readonly channel: ConfirmChannel,
    /** An ack the channel refused (it closed): the broker gives those deliveries to a consumer again. */
    private readonly failed: (error: unknown) => void,
  ) {}

  /** A delivery arrived on this channel. */
  received(message: ConsumeMessage): void {
    const tag = message.fields.deliveryTag
    this.tags.push(tag)
    this.state.set(tag, 'open')
  }

  /** Acks the delivery soon, with the deliveries settled before it when it can. */
  ack(message: ConsumeMessage): void {
    const tag = message.fields.deliveryTag
    this.state.set(tag, 'held')
    this.heldSince.set(tag, performance.now())
    if (!this.scheduled) {
      this.scheduled = true
      setImmediate(this.flush)
    }
  }

  /** The delivery was settled some other way (nack, reject): it no longer holds back the acks after it. */
  settledElsewhere(message: ConsumeMessage): void {
    this.state.set(message.fields.deliveryTag, 'done')
  }

  /** Sends every held ack now (close). */
  flushAll(): void {
    this.flush(Infinity)
  }

  private readonly flush = (maxHoldMs = MAX_HOLD_MS): void => {
    this.scheduled = false
    const { tags, state } = this
    // The settled prefix: one frame acks its held deliveries.
    let covered = 0
    let lastHeld = -1
    while (covered < tags.length && state.get(tags[covered]) !== 'open') {
      if (state.get(tags[covered]) === 'held') lastHeld = covered
      covered++
    }
    if (lastHeld >= 0) this.send(tags[lastHeld], true)
    for (const tag of tags.splice(0, covered)) {
      state.delete(tag)
      this.heldSince.delete(tag)
    }
    // Held acks behind an open delivery wait for it, within a bound.
    const now = performance.now()
    for (const [tag, since] of this.heldSince) {
      if (now - since < maxHoldMs) continue
      this.send(tag, false)
      state.set(tag, 'done')
      this.heldSince.delete(tag)
    }
    if (this.heldSince.size > 0 && !this.scheduled) {
      this.scheduled = true
      setTimeout(this.flush, HOLD_MS)
    }
  }

  private send(tag: number, multiple: boolean): void {
    try {
      // amqplib reads only the delivery tag of the message it is given.
      this.channel.ack({ fields: { deliveryTag: tag } } as ConsumeMessage, multiple)
    } catch (error) {
      this.failed(error)
    }
  }
}
