import { errorText, ErrorCode, IdemError } from '../errors.js'
import type { HandlerContext } from '../message.js'
import { CommitCode } from '../store/store.js'
import {
  COUNTER_COUNT,
  VerdictCode,
  type ActorBatch,
  type BatchResult,
  type Decision,
  type ErrorData,
  type SettleReply,
  type Settlement,
  type StepReply,
} from './protocol.js'

/**
 * The actor seen by whoever drives batches through it, on its own thread or
 * across a worker boundary. One step settles the previous batch (if any) and
 * then decides the next (if any): settling first keeps per-key order, and
 * sending both together halves the crossings of a busy shard.
 */
export interface ActorPort {
  step(settlement: Settlement | undefined, batch: ActorBatch | undefined): Promise<StepReply>
  renew(token: string): Promise<Float64Array>
  /** True when the actor's store applies calls in the order they are made (DedupStore.ordered), so a claim sent after a commit sees it. Left unset across threads: a worker's actor is not asked. */
  readonly ordered?: boolean
}

export interface CycleOptions {
  leaseMs: number
  rollout: 'enforce' | 'shadow'
  keepResults: boolean
}

/** Calls the handler for message i of the result's batch; may return a promise. */
export type Invoke = (i: number, context: HandlerContext) => unknown

export function emptyResult(n: number): BatchResult {
  return { verdicts: new Uint8Array(n), results: new Array(n), errors: new Array(n), counters: new Float64Array(COUNTER_COUNT), shadowRuns: 0 }
}

/**
 * One decided batch on its way to being settled: verdicts applied, handlers
 * run, then the settlement (commit what succeeded, release what threw) built
 * and its reply applied. Positions j are in the round's batch; `indexOf(j)` is
 * where that message's outcome goes in `out`.
 */
export class BatchRound {
  /** Positions of messages whose key appeared earlier in the batch: decide them after this round settles. */
  readonly repeats: number[] = []
  private readonly claimed: number[] = []
  private readonly shadowRuns: number[] = []
  private failed: Uint8Array | undefined
  private commitIndexes: number[] = []
  private commitPositions: number[] = []
  private releaseIndexes: number[] = []
  private token = ''

  constructor(
    readonly batch: ActorBatch,
    private readonly out: BatchResult,
    readonly indexOf: (j: number) => number,
    private readonly options: CycleOptions,
  ) {}

  /** Messages claimed for this round: their handlers run, and their outcomes wait for the settlement. */
  get claimedCount(): number {
    return this.claimed.length
  }

  applyDecision(decision: Decision): void {
    const { out, batch } = this
    this.token = decision.token
    addCounters(out.counters, decision.counters)
    for (let j = 0; j < batch.keys.length; j++) {
      const i = this.indexOf(j)
      const verdict = decision.verdicts[j]
      out.verdicts[i] = verdict
      switch (verdict) {
        case VerdictCode.NEW:
          this.claimed.push(j)
          continue
        case VerdictCode.REPEAT:
          this.repeats.push(j)
          continue
        case VerdictCode.DUPLICATE:
          out.results[i] = decision.results[j]
          break
        case VerdictCode.CONFLICT:
          out.errors[i] = {
            code: ErrorCode.CONFLICT,
            message: `key ${JSON.stringify(batch.keys[j])} was processed with fingerprint ${JSON.stringify(decision.storedFingerprints[j])}; this message has ${JSON.stringify(batch.fingerprints[j])}`,
          }
          break
        case VerdictCode.IN_FLIGHT:
          out.errors[i] = decision.storeError ?? { code: ErrorCode.IN_FLIGHT, message: `key ${JSON.stringify(batch.keys[j])} is being processed by another owner; retry later` }
          break
      }
      if (this.options.rollout === 'shadow') this.shadowRuns.push(i)
    }
  }

  /** Every message of the round gets `in-flight` with the reason: without a claim no handler runs. */
  failDecision(error: unknown): void {
    const data = failureData(error, 'store claim failed')
    for (let j = 0; j < this.batch.keys.length; j++) {
      const i = this.indexOf(j)
      this.out.verdicts[i] = VerdictCode.IN_FLIGHT
      this.out.errors[i] = data
    }
  }

  /**
   * Runs every claimed handler (and, in shadow mode, the handlers enforce would
   * skip). Synchronous handlers cost no promise; async ones run concurrently,
   * and their leases are renewed every leaseMs/3 until the last one ends.
   */
  async runHandlers(port: ActorPort, invoke: Invoke): Promise<void> {
    const { out, batch, claimed } = this
    const failed = new Uint8Array(batch.keys.length)
    this.failed = failed
    const waits: Promise<void>[] = []
    const fail = (j: number, i: number, error: unknown): void => {
      failed[j] = 1
      // LEASE_LOST keeps its code (the SQL transaction helper's lease lost before COMMIT: rolled back, run again).
      // Any other error, an IdemError too, is the handler's: transports act on the code, and a thrown
      // RESULT_TOO_LARGE or STORE_FAILED must not pass for a settled key or a commit awaiting the store.
      const code = error instanceof IdemError && error.code === ErrorCode.LEASE_LOST ? ErrorCode.LEASE_LOST : ErrorCode.HANDLER_FAILED
      out.errors[i] = { code, message: `handler failed for key ${JSON.stringify(batch.keys[j])}: ${errorText(error)}` }
    }
    for (const j of claimed) {
      const i = this.indexOf(j)
      try {
        const value = invoke(i, { claim: { token: this.token, storeKey: batch.keys[j] } })
        if (isPromiseLike(value)) {
          waits.push(
            Promise.resolve(value).then(
              (result) => void (out.results[i] = result),
              (error) => fail(j, i, error),
            ),
          )
        } else out.results[i] = value
      } catch (error) {
        fail(j, i, error)
      }
    }
    for (const i of this.shadowRuns) {
      out.shadowRuns++
      try {
        const value = invoke(i, {})
        if (isPromiseLike(value)) waits.push(Promise.resolve(value).then(noop, noop))
      } catch {
        // Shadow runs change nothing in the store; their failures are the handler's own business.
      }
    }
    if (waits.length === 0) return

    const renewal = setInterval(() => {
      port.renew(this.token).then(
        (counters) => addCounters(out.counters, counters),
        noop, // a failed renewal shows up as a refused commit (LEASE_LOST) later
      )
    }, Math.max(1, Math.floor(this.options.leaseMs / 3)))
    try {
      await Promise.all(waits)
    } finally {
      clearInterval(renewal)
    }
  }

  /** Commits for handlers that returned, releases for those that threw; undefined when nothing was claimed. */
  settlement(): Settlement | undefined {
    if (this.claimed.length === 0) return undefined
    const { out, failed } = this
    const commit: number[] = []
    const commitResults: unknown[] | undefined = this.options.keepResults ? [] : undefined
    const release: number[] = []
    for (const j of this.claimed) {
      const i = this.indexOf(j)
      if (failed?.[j] === 1) {
        release.push(j)
        this.releaseIndexes.push(i)
      } else {
        commit.push(j)
        commitResults?.push(out.results[i])
        this.commitIndexes.push(i)
        this.commitPositions.push(j)
      }
    }
    return { token: this.token, commit, commitResults, release }
  }

  /** A commit the store refused means the lease lapsed: the effect happened, but the key is not DONE. */
  applySettled({ committed, counters, storeError }: SettleReply): void {
    addCounters(this.out.counters, counters)
    if (storeError !== undefined) return this.failSettlement(storeError)
    for (let k = 0; k < this.commitIndexes.length; k++) {
      const key = JSON.stringify(this.batch.keys[this.commitPositions[k]])
      switch (committed[k]) {
        case CommitCode.COMMITTED:
          continue
        case CommitCode.REFUSED:
          this.out.errors[this.commitIndexes[k]] = {
            code: ErrorCode.LEASE_LOST,
            message: `handler finished for key ${key} but its lease had lapsed and the commit was refused; another owner may run it`,
          }
          continue
        case CommitCode.RESULT_TOO_LARGE:
          this.out.errors[this.commitIndexes[k]] = { code: ErrorCode.RESULT_TOO_LARGE, message: `key ${key} is done, but its result is over the store's maxResultBytes and was not kept` }
          continue
        case CommitCode.RESULT_NOT_SERIALIZABLE:
          this.out.errors[this.commitIndexes[k]] = { code: ErrorCode.RESULT_NOT_SERIALIZABLE, message: `key ${key} is done, but its result could not be serialized (JSON for the store, structured clone across threads) and was not kept` }
      }
    }
  }

  failSettlement(data: ErrorData): void {
    for (const i of this.commitIndexes) this.out.errors[i] = data
    for (const i of this.releaseIndexes) this.out.errors[i] ??= data
  }
}

/**
 * The whole cycle of one batch against an actor on this thread (the worker
 * running a handler module): decide, handle, settle, and decide again the
 * copies of keys repeated inside the batch until none is left.
 */
export async function runBatch(port: ActorPort, batch: ActorBatch, invoke: Invoke, options: CycleOptions): Promise<BatchResult> {
  const out = emptyResult(batch.keys.length)
  let round = new BatchRound(batch, out, wholeBatchIndexOf, options)
  for (;;) {
    try {
      round.applyDecision((await port.step(undefined, round.batch)).decision!)
    } catch (error) {
      round.failDecision(error)
      return out
    }
    await round.runHandlers(port, invoke)
    const settlement = round.settlement()
    if (settlement !== undefined) {
      try {
        const { settled } = await port.step(settlement, undefined)
        round.applySettled(settled!)
      } catch (error) {
        round.failSettlement(failureData(error, 'actor failed while settling', ErrorCode.ACTOR_FAILED))
      }
    }
    if (round.repeats.length === 0) return out
    const positions = round.repeats.map(round.indexOf)
    round = new BatchRound(subBatch(round.batch, round.repeats), out, (j) => positions[j], options)
  }
}

export function subBatch(batch: ActorBatch, positions: number[]): ActorBatch {
  const hashes = new Uint32Array(positions.length * 2)
  for (let j = 0; j < positions.length; j++) {
    hashes[2 * j] = batch.hashes[2 * positions[j]]
    hashes[2 * j + 1] = batch.hashes[2 * positions[j] + 1]
  }
  return { keys: positions.map((p) => batch.keys[p]), hashes, fingerprints: positions.map((p) => batch.fingerprints[p]) }
}

/** An error as data: an IdemError keeps its code, anything else gets `code` and says `what` failed. */
export function failureData(error: unknown, what: string, code: ErrorCode = ErrorCode.STORE_FAILED): ErrorData {
  if (error instanceof IdemError) return { code: error.code, message: error.message }
  return { code, message: `${what}: ${errorText(error)}` }
}

export function addCounters(into: Float64Array, delta: Float64Array): void {
  for (let k = 0; k < into.length; k++) into[k] += delta[k]
}

/** indexOf for a round over a whole batch (its first round): position j's outcome goes to j. */
export function wholeBatchIndexOf(j: number): number {
  return j
}

function noop(): void {}

function isPromiseLike(value: unknown): value is PromiseLike<unknown> {
  return typeof (value as PromiseLike<unknown> | null)?.then === 'function'
}
