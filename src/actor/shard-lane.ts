import { addCounters, BatchRound, emptyResult, failureData, wholeBatchIndexOf, type ActorPort, type CycleOptions } from './batch-cycle.js'
import { COUNTER_COUNT, VERDICT_COUNT, VerdictCode, type ActorBatch, type BatchResult, type Settlement } from './protocol.js'
import type { RemoteActorPort } from './shard-thread.js'
import { ErrorCode } from '../errors.js'
import type { Handler, Message, Outcome } from '../message.js'
import { toOutcome } from '../outcome.js'

/** Gets each outcome of a call as soon as it is final (engine.submit); must not throw (the lane is handing out a batch). */
export type OnOutcome = (index: number, outcome: Outcome) => void

/** The messages one process()/processBatch() call sent to this shard, and where their outcomes go. */
export interface Job {
  outcomes: Outcome[]
  remaining: number
  done: () => void
  /** A function handler runs on the main thread; undefined means the configured handler module. */
  handler: Handler | undefined
  each: OnOutcome | undefined
}

export interface LaneStats {
  counters: Float64Array
  /** Indexed by VerdictCode. */
  verdicts: Float64Array
  shadowRuns: number
}

/** A batch taken from the mailbox, with where each of its outcomes goes. */
interface AddressedBatch {
  batch: ActorBatch
  messages: Message[]
  jobs: Job[]
  slots: number[]
  out: BatchResult
  /** The outcomes final at decision time (all but NEW) were handed out already. */
  decidedOut: boolean
}

/** A batch whose handlers ran: its settlement rides with the next step. */
interface HandledBatch {
  addressed: AddressedBatch
  round: BatchRound
  settlement: Settlement
}

/**
 * The main-thread side of one shard: its mailbox and its batch loop. Messages
 * queue here while the actor works; each turn takes what is queued (up to
 * maxBatch) as one batch, so concurrent single-message calls still reach the
 * actor and the store in batches. One batch at a time per shard keeps per-key
 * order and never runs two handlers of one key at once. A batch's settlement
 * travels with the next batch's decision (one crossing per batch when busy),
 * or alone without the lane waiting for it when nothing is queued and the
 * store applies calls in order (actors on this thread only). Outcomes of new
 * keys are delivered once the settlement is applied; the others (duplicate,
 * in-flight, conflict) as soon as the batch is decided.
 */
export class ShardLane {
  private keys: string[] = []
  private hashes: number[] = []
  private fingerprints: (string | undefined)[] = []
  private messages: Message[] = []
  private jobs: Job[] = []
  private slots: number[] = []
  /** True from startBatchLoop() until drain() finds the mailbox empty, set and cleared synchronously so no push is missed in between. */
  private running = false
  private turn: Promise<void> = Promise.resolve()
  /** Settlements sent without waiting for their reply (see drain), until their outcomes are handed out. */
  private readonly detached = new Set<Promise<unknown>>()
  readonly stats: LaneStats = { counters: new Float64Array(COUNTER_COUNT), verdicts: new Float64Array(VERDICT_COUNT), shadowRuns: 0 }

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

  /**
   * Starts the batch loop if it is not running; it stops when the mailbox is
   * empty and all is settled. `gatherFirst` (the push was a single message):
   * the loop waits out the current turn of the event loop before its first
   * batch: callers that each send one message (process() with many in flight)
   * mostly arrive within one turn, and then share a batch and one store call.
   * A batch does not wait: the wait would add a turn to its latency.
   */
  startBatchLoop(gatherFirst: boolean): void {
    if (this.running) return
    this.running = true
    this.turn = this.drain(gatherFirst)
  }

  /** Resolves when everything queued so far is settled. */
  async idle(): Promise<void> {
    while (this.running || this.detached.size > 0) {
      await this.turn
      await Promise.all(this.detached)
    }
  }

  private async drain(gatherFirst: boolean): Promise<void> {
    let handled: HandledBatch | undefined
    try {
      if (gatherFirst) await gather()
      for (;;) {
        const moduleRun = this.keys.length > 0 && this.remote !== undefined && this.jobs[0].handler === undefined
        if (moduleRun) {
          if (handled !== undefined) await this.step(handled, undefined)
          handled = undefined
          await this.runInWorker(this.take())
          continue
        }
        if (handled === undefined && this.keys.length === 0) return
        if (this.keys.length === 0 && this.port.ordered === true && handled!.settlement.release.length === 0) {
          // The store applies this commit before any claim made after it, so the lane need not wait for
          // its reply: messages pushed meanwhile go out at once (a new drain) instead of a round trip later.
          this.detach(this.step(handled, undefined))
          return
        }
        handled = await this.step(handled, this.keys.length > 0 ? this.take() : undefined)
      }
    } finally {
      // Runs in the same tick as the empty-mailbox check above, so a push after it always finds running false.
      this.running = false
    }
  }

  /** Settles `handled` and decides `next` in one step, then runs next's handlers; returns next if it awaits settling. */
  private async step(handled: HandledBatch | undefined, next: AddressedBatch | undefined): Promise<HandledBatch | undefined> {
    const round = next === undefined ? undefined : new BatchRound(next.batch, next.out, wholeBatchIndexOf, this.options)
    let reply
    try {
      reply = await this.port.step(handled?.settlement, next?.batch)
    } catch (error) {
      if (handled !== undefined) {
        handled.round.failSettlement(failureData(error, 'actor failed while settling', ErrorCode.ACTOR_FAILED))
        this.deliver(handled.addressed)
      }
      if (next !== undefined) {
        round!.failDecision(error)
        this.deliver(next)
      }
      return undefined
    }
    if (handled !== undefined) {
      handled.round.applySettled(reply.settled!)
      this.deliver(handled.addressed)
    }
    if (next === undefined) return undefined
    round!.applyDecision(reply.decision!)
    this.requeue(next, round!.repeats)
    // Duplicates and in-flight keys need not wait for this batch's commit round trip (enforce only: a shadow run is still running them).
    if (round!.claimedCount > 0 && this.options.rollout === 'enforce') this.deliverDecided(next)
    await round!.runHandlers(this.port, (i, context) => (next.jobs[i].handler ?? this.localModuleHandler!)(next.messages[i], context))
    const settlement = round!.settlement()
    if (settlement !== undefined) return { addressed: next, round: round!, settlement }
    this.deliver(next)
    return undefined
  }

  private detach(settling: Promise<unknown>): void {
    this.detached.add(settling)
    void settling.finally(() => this.detached.delete(settling))
  }

  /** The whole cycle inside the worker, for handler modules: one crossing per batch. */
  private async runInWorker(addressed: AddressedBatch): Promise<void> {
    try {
      addressed.out = await this.remote!.run(addressed.batch, addressed.messages)
    } catch (error) {
      addressed.out = failedBatch(addressed.batch.keys.length, error)
    }
    this.deliver(addressed)
  }

  /**
   * Takes the next batch: at most maxBatch messages, and when the handler
   * module runs in the worker, only a run of messages of one kind.
   */
  private take(): AddressedBatch {
    const limit = Math.min(this.keys.length, this.options.maxBatch)
    let count = limit
    if (this.remote !== undefined) {
      const moduleKind = this.jobs[0].handler === undefined
      count = 1
      while (count < limit && (this.jobs[count].handler === undefined) === moduleKind) count++
    }
    return {
      batch: { keys: cut(this.keys, count), hashes: new Uint32Array(cut(this.hashes, 2 * count)), fingerprints: cut(this.fingerprints, count) },
      messages: cut(this.messages, count),
      jobs: cut(this.jobs, count),
      slots: cut(this.slots, count),
      out: emptyResult(count),
      decidedOut: false,
    }
  }

  /** Puts copies of a key repeated in the batch back at the head of the mailbox: the next step decides them after the first copy settles. */
  private requeue(addressed: AddressedBatch, positions: number[]): void {
    if (positions.length === 0) return
    const { batch } = addressed
    this.keys = positions.map((p) => batch.keys[p]).concat(this.keys)
    this.hashes = positions.flatMap((p) => [batch.hashes[2 * p], batch.hashes[2 * p + 1]]).concat(this.hashes)
    this.fingerprints = positions.map((p) => batch.fingerprints[p]).concat(this.fingerprints)
    this.messages = positions.map((p) => addressed.messages[p]).concat(this.messages)
    this.jobs = positions.map((p) => addressed.jobs[p]).concat(this.jobs)
    this.slots = positions.map((p) => addressed.slots[p]).concat(this.slots)
  }

  /** Hands out every outcome of the batch not handed out yet, and its counts. */
  private deliver(addressed: AddressedBatch): void {
    const { out } = addressed
    addCounters(this.stats.counters, out.counters)
    this.stats.shadowRuns += out.shadowRuns
    for (let i = 0; i < out.verdicts.length; i++) {
      const verdict = out.verdicts[i]
      // REPEAT: requeued, delivered by a later step.
      if (verdict !== VerdictCode.REPEAT && (verdict === VerdictCode.NEW || !addressed.decidedOut)) this.handOut(addressed, i)
    }
  }

  /** Hands out the outcomes a decision made final: all but NEW (awaiting its commit) and REPEAT. */
  private deliverDecided(addressed: AddressedBatch): void {
    const { verdicts } = addressed.out
    for (let i = 0; i < verdicts.length; i++) if (verdicts[i] !== VerdictCode.NEW && verdicts[i] !== VerdictCode.REPEAT) this.handOut(addressed, i)
    addressed.decidedOut = true
  }

  private handOut(addressed: AddressedBatch, i: number): void {
    const { out, jobs, slots } = addressed
    const verdict = out.verdicts[i]
    const job = jobs[i]
    this.stats.verdicts[verdict]++
    const outcome = toOutcome(addressed.messages[i].key, verdict, out.results[i], out.errors[i])
    job.outcomes[slots[i]] = outcome
    job.each?.(slots[i], outcome)
    if (--job.remaining === 0) job.done()
  }
}

const gather = (): Promise<void> => new Promise((resolve) => setImmediate(resolve))

/** Removes and returns the first `count` items; taking all is the common case and the cheapest. */
function cut<T>(from: T[], count: number): T[] {
  if (count < from.length) return from.splice(0, count)
  const all = from.slice()
  from.length = 0
  return all
}

/** Every message of a batch whose actor could not answer: not settled, so retry later. */
function failedBatch(count: number, error: unknown): BatchResult {
  const data = failureData(error, 'actor failed', ErrorCode.ACTOR_FAILED)
  const out = emptyResult(count)
  out.verdicts.fill(VerdictCode.IN_FLIGHT)
  out.errors.fill(data)
  return out
}
