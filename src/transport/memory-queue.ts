import type { Engine } from '../engine.js'
import type { Handler, Message, Outcome } from '../message.js'
import { settleOf, Settle } from '../outcome.js'

export interface MemoryQueueOptions {
  /** Deliveries of one message before it lands in the failed set. @default 5 */
  maxAttempts?: number
  /** Delay before an in-flight or failed message is delivered again, in ms. @default 10 */
  retryDelayMs?: number
}

export interface FailedMessage<P> {
  message: Message<P>
  /** The error code and message of the last outcome. */
  reason: string
  attempts: number
}

interface Delivery<P> {
  message: Message<P>
  attempts: number
}

/**
 * An in-process queue with a real queue's delivery semantics, for the demo and
 * tests: at-least-once, ack only after the outcome is settled, in-flight and
 * failed messages redelivered after a delay, poison messages parked in `failed`.
 */
export class MemoryQueue<P = unknown> {
  readonly failed: FailedMessage<P>[] = []
  acked = 0
  redeliveries = 0
  private ready: Delivery<P>[] = []
  private head = 0
  private delayed: { due: number; delivery: Delivery<P> }[] = []
  private readonly maxAttempts: number
  private readonly retryDelayMs: number

  constructor(options: MemoryQueueOptions = {}) {
    this.maxAttempts = options.maxAttempts ?? 5
    this.retryDelayMs = options.retryDelayMs ?? 10
  }

  add(message: Message<P>): void {
    this.ready.push({ message, attempts: 0 })
  }

  /** Messages waiting, now or after a retry delay. */
  get waiting(): number {
    return this.ready.length - this.head + this.delayed.length
  }

  /** Takes up to `max` deliverable messages. */
  take(max: number): Delivery<P>[] {
    this.promoteDue(Date.now())
    const end = Math.min(this.ready.length, this.head + max)
    const batch = this.ready.slice(this.head, end)
    this.head = end
    if (this.head > 65_536 && this.head * 2 > this.ready.length) {
      this.ready = this.ready.slice(this.head)
      this.head = 0
    }
    for (const delivery of batch) delivery.attempts++
    return batch
  }

  /** Acks, retries or fails each delivery by its outcome. */
  settle(deliveries: Delivery<P>[], outcomes: Outcome[]): void {
    const now = Date.now()
    for (let i = 0; i < deliveries.length; i++) {
      const outcome = outcomes[i]
      const delivery = deliveries[i]
      const settle = settleOf(outcome)
      if (settle === Settle.DONE) this.acked++
      else if (settle !== Settle.REJECT && delivery.attempts < this.maxAttempts) {
        this.redeliveries++
        this.delayed.push({ due: now + this.retryDelayMs, delivery })
      } else {
        this.failed.push({ message: delivery.message, reason: `${outcome.error?.code}: ${outcome.error?.message}`, attempts: delivery.attempts })
      }
    }
  }

  /** When the next delayed message becomes deliverable (ms from now), or undefined. */
  nextDueIn(): number | undefined {
    if (this.delayed.length === 0) return undefined
    let due = Infinity
    for (const entry of this.delayed) due = Math.min(due, entry.due)
    return Math.max(0, due - Date.now())
  }

  private promoteDue(now: number): void {
    if (this.delayed.length === 0) return
    const still: typeof this.delayed = []
    for (const entry of this.delayed) {
      if (entry.due <= now) this.ready.push(entry.delivery)
      else still.push(entry)
    }
    this.delayed = still
  }
}

export interface ConsumeOptions {
  /** Messages per processBatch call. @default 1024 */
  batchSize?: number
  /** processBatch calls in flight at once, so routing overlaps the actors' work. @default 4 */
  batchesInFlight?: number
  /** Called after each batch with its size and duration in ms. */
  onBatch?: (size: number, ms: number) => void
}

/** Drains the queue through the engine until nothing is waiting. */
export async function consumeMemoryQueue<P>(queue: MemoryQueue<P>, engine: Engine, handler: Handler<P>, options: ConsumeOptions = {}): Promise<void> {
  const batchSize = options.batchSize ?? 1024
  const inFlight = options.batchesInFlight ?? 4
  const worker = async (): Promise<void> => {
    for (;;) {
      const deliveries = queue.take(batchSize)
      if (deliveries.length === 0) {
        const due = queue.nextDueIn()
        if (due === undefined) return
        await new Promise((resolve) => setTimeout(resolve, due))
        continue
      }
      const started = performance.now()
      const outcomes = await engine.processBatch(
        deliveries.map((d) => d.message),
        handler,
      )
      queue.settle(deliveries, outcomes)
      options.onBatch?.(deliveries.length, performance.now() - started)
    }
  }
  await Promise.all(Array.from({ length: inFlight }, worker))
}
