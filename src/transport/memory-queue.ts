/**
 * The in-memory transport: a queue with a broker's delivery semantics, for
 * the demo and for users' tests (exported from the main entry). It keeps the
 * rules every transport keeps through settleOf (src/outcome.ts): a message is
 * acked only once its outcome is final, a retry uses an attempt, waiting for
 * another owner or for the store does not, and what can never succeed lands
 * in `failed` with its reason. Time is real (Date.now, setTimeout): retry
 * delays are short, and tests wait on consumeMemoryQueue, not on the clock.
 */
import type { Engine } from '../engine.js'
import { ConfigError, ErrorCode, IdemError } from '../errors.js'
import { MAX_PARTITIONS, partitionOf } from '../owned/partition-of.js'
import type { Handler, Message, Outcome } from '../message.js'
import { settleOf, Settle } from '../outcome.js'

export interface MemoryQueueOptions {
  /**
   * Deliveries of a message that may end in a retry (its handler threw, its
   * commit was refused) before it lands in `failed`. Deliveries that end
   * waiting (another owner holds the key, the store did not answer) use none,
   * as on BullMQ and Redis Streams.
   * @default 5
   */
  maxAttempts?: number
  /** Delay before a retried or waiting message is delivered again, in ms. @default 10 */
  retryDelayMs?: number
  /**
   * Owned mode: split the queue into this many partitions by the engine's key
   * hash (partitionOf), as a partitioned BullMQ queue or Redis stream is;
   * consumeMemoryQueue then takes only the partitions its engine owns. Must
   * equal the engine's `partitions`. @default none (one queue)
   */
  partitions?: number
}

/** One hand-out of a message by take(); give it back to settle() with its outcome. */
export interface MemoryDelivery<P = unknown> {
  readonly message: Message<P>
  /** Deliveries so far that used an attempt, this one included. */
  readonly attempts: number
}

export interface FailedMessage<P = unknown> {
  message: Message<P>
  /** The last outcome: conflict, invalid, or the retry that used the last attempt. */
  outcome: Outcome
  /** `CODE: message` of the outcome's error. */
  reason: string
  attempts: number
}

interface Delivery<P> {
  message: Message<P>
  attempts: number
}

interface Delayed<P> {
  due: number
  delivery: Delivery<P>
}

/** One partition's deliverable messages (the whole queue when not partitioned). */
interface Ready<P> {
  items: Delivery<P>[]
  head: number
}

const DEFAULT_MAX_ATTEMPTS = 5
const DEFAULT_RETRY_DELAY_MS = 10
/** How often an owned consumer looks again while the messages left belong to other members' partitions. */
const OWNED_POLL_MS = 10

/**
 * An in-process queue with a real queue's delivery semantics: at-least-once,
 * ack only after the outcome is settled, retried and waiting messages
 * delivered again after a delay, poison messages parked in `failed`. A
 * delivery taken and never settled is not handed out again (there is no
 * visibility timeout): settle every delivery you take.
 */
export class MemoryQueue<P = unknown> {
  readonly #failed: FailedMessage<P>[] = []
  #acked = 0
  #redeliveries = 0
  readonly #ready: Ready<P>[]
  #readyCount = 0
  /** Where the next take() starts among the partitions asked for, so none starves the others. */
  #turn = 0
  #delayed: Delayed<P>[] = []
  readonly #maxAttempts: number
  readonly #retryDelayMs: number
  /** The partition count, or undefined for a queue that is not partitioned. */
  readonly partitions: number | undefined

  /** Throws ConfigError (INVALID_CONFIG) naming every bad option. */
  constructor(options: MemoryQueueOptions = {}) {
    const problems = [
      ...integerProblems('maxAttempts', options.maxAttempts, 1, 2 ** 31),
      ...integerProblems('retryDelayMs', options.retryDelayMs, 0, 2 ** 31),
      ...integerProblems('partitions', options.partitions, 1, MAX_PARTITIONS),
    ]
    if (problems.length > 0) throw new ConfigError(problems)
    this.#maxAttempts = options.maxAttempts ?? DEFAULT_MAX_ATTEMPTS
    this.#retryDelayMs = options.retryDelayMs ?? DEFAULT_RETRY_DELAY_MS
    this.partitions = options.partitions
    this.#ready = Array.from({ length: options.partitions ?? 1 }, () => ({ items: [], head: 0 }))
  }

  add(message: Message<P>): void {
    this.#push({ message, attempts: 0 })
  }

  /** Messages acked: their key is done (handler ran and committed, or a duplicate). */
  get acked(): number {
    return this.#acked
  }

  /** Deliveries handed back to be delivered again, retried or waiting. */
  get redeliveries(): number {
    return this.#redeliveries
  }

  /** Messages that will not be delivered again, with why, in the order they failed. */
  get failed(): readonly FailedMessage<P>[] {
    return this.#failed
  }

  /** Messages waiting, now or after a retry delay. */
  get waiting(): number {
    return this.#readyCount + this.#delayed.length
  }

  /** Takes up to `max` deliverable messages; of a partitioned queue, only from `partitions` (all when left out). */
  take(max: number, partitions?: readonly number[]): MemoryDelivery<P>[] {
    this.#promoteDue(Date.now())
    const batch: Delivery<P>[] = []
    const count = partitions?.length ?? this.#ready.length
    const first = count === 0 ? 0 : this.#turn++ % count
    for (let k = 0; k < count && batch.length < max; k++) {
      const index = partitions === undefined ? (first + k) % count : partitions[(first + k) % count]
      const ready = this.#ready[index]
      if (ready === undefined) continue
      const end = Math.min(ready.items.length, ready.head + max - batch.length)
      for (let i = ready.head; i < end; i++) batch.push(ready.items[i])
      ready.head = end
      if (ready.head === ready.items.length) {
        ready.items = []
        ready.head = 0
      } else if (ready.head > 65_536 && ready.head * 2 > ready.items.length) {
        ready.items = ready.items.slice(ready.head)
        ready.head = 0
      }
    }
    this.#readyCount -= batch.length
    for (const delivery of batch) delivery.attempts++
    return batch
  }

  /** Acks, redelivers or fails one delivery by its outcome (settleOf); returns which. */
  settle(delivery: MemoryDelivery<P>, outcome: Outcome): Settle {
    const settle = settleOf(outcome)
    const taken = delivery as Delivery<P>
    if (settle === Settle.DONE) {
      this.#acked++
      return settle
    }
    // Waiting is not the message's fault: the attempt is given back.
    if (settle === Settle.WAIT) taken.attempts--
    if (settle === Settle.WAIT || (settle === Settle.RETRY && taken.attempts < this.#maxAttempts)) {
      this.#redeliveries++
      this.#delayed.push({ due: Date.now() + this.#retryDelayMs, delivery: taken })
    } else {
      this.#failed.push({ message: taken.message, outcome, reason: `${outcome.error?.code}: ${outcome.error?.message}`, attempts: taken.attempts })
    }
    return settle
  }

  /** When the next delayed message becomes deliverable (ms from now), or undefined. */
  nextDueIn(): number | undefined {
    if (this.#delayed.length === 0) return undefined
    let due = Infinity
    for (const entry of this.#delayed) due = Math.min(due, entry.due)
    return Math.max(0, due - Date.now())
  }

  #promoteDue(now: number): void {
    if (this.#delayed.length === 0) return
    const still: Delayed<P>[] = []
    for (const entry of this.#delayed) {
      if (entry.due <= now) this.#push(entry.delivery)
      else still.push(entry)
    }
    this.#delayed = still
  }

  #push(delivery: Delivery<P>): void {
    this.#ready[this.partitions === undefined ? 0 : this.#partitionOf(delivery.message)].items.push(delivery)
    this.#readyCount++
  }

  /** A message the engine would refuse (a bad key) goes to partition 0, where whoever owns it gets its invalid verdict. */
  #partitionOf(message: Message<P>): number {
    try {
      return partitionOf(message.key, this.partitions!, message.namespace)
    } catch {
      return 0
    }
  }
}

export interface ConsumeMemoryQueueOptions {
  /** Messages per processBatch call (1–65536). @default 1024 */
  batchSize?: number
  /** processBatch calls in flight at once, so routing overlaps the actors' work (1–1024). @default 4 */
  batchesInFlight?: number
  /** Called after each batch with its size and duration in ms. */
  onBatch?: (size: number, ms: number) => void
  /**
   * Stops taking deliveries when aborted; the batches in flight still settle,
   * then the promise resolves. For a test whose messages may wait forever
   * (a store that stays down): `signal: AbortSignal.timeout(2000)`.
   */
  signal?: AbortSignal
}

/**
 * Drains the queue through the engine until nothing is waiting (or `signal`
 * aborts). Each message is settled as soon as its own outcome is final (a
 * duplicate is acked without waiting for the handlers of its batch), as the
 * other transports do (DESIGN.md §4.8).
 */
export async function consumeMemoryQueue<P>(queue: MemoryQueue<P>, engine: Engine, handler: Handler<P>, options: ConsumeMemoryQueueOptions = {}): Promise<void> {
  const problems = [
    ...integerProblems('batchSize', options.batchSize, 1, 65_536),
    ...integerProblems('batchesInFlight', options.batchesInFlight, 1, 1024),
  ]
  if (problems.length > 0) throw new ConfigError(problems)
  const batchSize = options.batchSize ?? 1024
  const inFlight = options.batchesInFlight ?? 4
  const { signal } = options
  const owned = engine.config.mode === 'owned'
  if (owned && queue.partitions !== engine.config.partitions) {
    throw new IdemError(ErrorCode.PARTITIONS_MISMATCH, `the queue has ${queue.partitions === undefined ? 'no partitions' : `${queue.partitions} partitions`}, the owned engine ${engine.config.partitions}: give the queue { partitions: ${engine.config.partitions} }`)
  }
  const worker = async (): Promise<void> => {
    while (signal?.aborted !== true) {
      // Owned mode: only the partitions this member holds now; the others' messages wait for their owners.
      const deliveries = owned ? queue.take(batchSize, engine.ownedPartitions()) : queue.take(batchSize)
      if (deliveries.length === 0) {
        const due = queue.nextDueIn()
        if (due === undefined && (!owned || queue.waiting === 0)) return
        await pause(due ?? OWNED_POLL_MS, signal)
        continue
      }
      const started = performance.now()
      const outcomes = await engine.submit(
        deliveries.map((d) => d.message),
        handler,
        (i, outcome) => queue.settle(deliveries[i], outcome),
      )
      engine.countSettled('memory', outcomes)
      options.onBatch?.(deliveries.length, performance.now() - started)
    }
  }
  await Promise.all(Array.from({ length: inFlight }, worker))
}

/** Resolves after `ms`, or at once when `signal` aborts. */
function pause(ms: number, signal: AbortSignal | undefined): Promise<void> {
  return new Promise((resolve) => {
    const done = (): void => {
      clearTimeout(timer)
      signal?.removeEventListener('abort', done)
      resolve()
    }
    const timer = setTimeout(done, ms)
    signal?.addEventListener('abort', done, { once: true })
  })
}

// One pattern with config.ts's options (`field: must be …, got …`); both move to the shared validation module.
function integerProblems(field: string, value: number | undefined, min: number, max: number): string[] {
  if (value === undefined || (Number.isInteger(value) && value >= min && value <= max)) return []
  return [`${field}: must be an integer from ${min} to ${max}, got ${String(value)}`]
}
