import type { CycleOptions } from './batch-cycle.js'
import { addCounters, runBatch, type ActorPort } from './batch-cycle.js'
import { COUNTER_COUNT, VerdictCode, type ActorBatch, type BatchResult } from './protocol.js'
import type { RemoteActorPort } from './thread-pool.js'
import { describe, ErrorCode, IdemError } from '../errors.js'
import type { Handler, Message, Outcome } from '../message.js'
import { toOutcome } from '../outcome.js'

/** The messages one process()/processBatch() call sent to this shard, and where their outcomes go. */
export interface Job {
  outcomes: Outcome[]
  remaining: number
  done: () => void
  /** A function handler runs on the main thread; undefined means the configured handler module. */
  handler: Handler | undefined
}

export interface LaneStats {
  counters: Float64Array
  verdicts: Float64Array // indexed by VerdictCode
  shadowRuns: number
}

/**
 * The main-thread side of one shard: its mailbox and its batch loop. Messages
 * queue here while the actor works; each turn takes everything queued (up to
 * maxBatch) as one batch, so concurrent single-message calls still cross to the
 * actor and the store in batches. One batch at a time per shard keeps per-key
 * order and never runs two handlers of one key at once.
 */
export class ShardLane {
  private keys: string[] = []
  private hashes: number[] = []
  private fingerprints: (string | undefined)[] = []
  private messages: Message[] = []
  private jobs: Job[] = []
  private slots: number[] = []
  private turn: Promise<void> | undefined
  readonly stats: LaneStats = { counters: new Float64Array(COUNTER_COUNT), verdicts: new Float64Array(6), shadowRuns: 0 }

  constructor(
    private readonly port: ActorPort,
    /** Present when the actor lives in a worker that can run the handler module itself. */
    private readonly remote: RemoteActorPort | undefined,
    private readonly localModuleHandler: Handler | undefined,
    private readonly options: CycleOptions & { maxBatch: number },
  ) {}

  push(key: string, hashLo: number, hashHi: number, message: Message, job: Job, slot: number): void {
    this.keys.push(key)
    this.hashes.push(hashLo, hashHi)
    this.fingerprints.push(message.fingerprint)
    this.messages.push(message)
    this.jobs.push(job)
    this.slots.push(slot)
  }

  /** Starts the batch loop if it is not running; it stops when the mailbox is empty. */
  kick(): void {
    this.turn ??= this.drain().finally(() => (this.turn = undefined))
  }

  /** Resolves when everything queued so far is settled. */
  async idle(): Promise<void> {
    while (this.turn !== undefined) await this.turn
  }

  private async drain(): Promise<void> {
    while (this.keys.length > 0) {
      const count = this.takeCount()
      const keys = this.take(this.keys, count)
      const hashes = new Uint32Array(this.take(this.hashes, count * 2))
      const fingerprints = this.take(this.fingerprints, count)
      const messages = this.take(this.messages, count)
      const jobs = this.take(this.jobs, count)
      const slots = this.take(this.slots, count)
      const batch: ActorBatch = { keys, hashes, fingerprints }
      let result: BatchResult
      try {
        result = await this.runOne(batch, messages, jobs)
      } catch (error) {
        result = failedBatch(count, error)
      }
      this.deliver(result, messages, jobs, slots)
    }
  }

  private runOne(batch: ActorBatch, messages: Message[], jobs: Job[]): Promise<BatchResult> {
    if (this.remote !== undefined && jobs[0].handler === undefined) return this.remote.run(batch, messages)
    const moduleHandler = this.localModuleHandler
    return runBatch(this.port, batch, (i) => (jobs[i].handler ?? moduleHandler!)(messages[i]), this.options)
  }

  /**
   * How many queued messages the next batch takes: at most maxBatch, and when
   * the handler module runs in the worker, only a run of messages of one kind.
   */
  private takeCount(): number {
    const limit = Math.min(this.keys.length, this.options.maxBatch)
    if (this.remote === undefined) return limit
    const moduleKind = this.jobs[0].handler === undefined
    let count = 1
    while (count < limit && (this.jobs[count].handler === undefined) === moduleKind) count++
    return count
  }

  private take<T>(from: T[], count: number): T[] {
    if (count < from.length) return from.splice(0, count)
    const all = from.slice()
    from.length = 0
    return all
  }

  private deliver(result: BatchResult, messages: Message[], jobs: Job[], slots: number[]): void {
    addCounters(this.stats.counters, result.counters)
    this.stats.shadowRuns += result.shadowRuns
    const verdicts = this.stats.verdicts
    for (let i = 0; i < messages.length; i++) {
      const job = jobs[i]
      verdicts[result.verdicts[i]]++
      job.outcomes[slots[i]] = toOutcome(messages[i].key, result.verdicts[i], result.results[i], result.errors[i])
      if (--job.remaining === 0) job.done()
    }
  }
}

/** Every message of a batch whose actor could not answer: not settled, so retry later. */
function failedBatch(count: number, error: unknown): BatchResult {
  const data =
    error instanceof IdemError
      ? { code: error.code, message: error.message }
      : { code: ErrorCode.ACTOR_FAILED, message: `actor failed: ${describe(error)}` }
  return {
    verdicts: new Uint8Array(count).fill(VerdictCode.IN_FLIGHT),
    results: new Array(count),
    errors: new Array(count).fill(data),
    counters: new Float64Array(COUNTER_COUNT),
    shadowRuns: 0,
  }
}
