import { addCounters, CycleEntry, failureData, ownerOf, ShardCycle, type ActorPort, type CommitRide, type CycleOptions } from './shard-cycle.js'
import { countersFor } from '../observe/store-timing.js'
import { LayerCode, VERDICT_COUNT, VerdictCode, type BatchResult, type ErrorData, type ShadowData } from './protocol.js'
import type { RemoteActorPort } from './shard-thread.js'
import { ErrorCode } from '../errors.js'
import type { HandlerModule } from '../handler-module.js'
import type { Handler, Message, Outcome, ReconcileHook } from '../message.js'
import { toOutcome } from '../outcome.js'
import { enforcesKey } from '../config.js'
import { namespaceOfScoped, type DecisionHub } from '../observe/decision-hub.js'

/** Gets each outcome of a call as soon as it is final (engine.submit); must not throw (the lane is handing out outcomes). */
export type OnOutcome = (index: number, outcome: Outcome) => void

/** The messages one process()/processBatch() call sent to this shard, and where their outcomes go. */
export interface Job {
  /** The call's keys as given (not namespace-scoped), for the outcomes. */
  keys: string[]
  outcomes: Outcome[]
  remaining: number
  done: () => void
  /** A function handler runs on the main thread; undefined means the configured handler module. */
  handler: Handler | undefined
  each: OnOutcome | undefined
  /** Set when the transport carries the commits of this call's messages (engine.canCommitOn said yes). */
  ride: CommitRide | undefined
}

export interface LaneStats {
  /** Indexed by Counter. */
  counters: Float64Array
  /** Indexed by VerdictCode. */
  verdicts: Float64Array
}

/** Module runs a lane keeps in its worker at once: enough to keep the worker's cycle fed while earlier runs finish. */
export const MAX_RUNS_IN_FLIGHT = 8

/** A message for the handler module of a worker, waiting to be sent. */
interface Forwarded {
  key: string
  enforced: boolean
  hashLo: number
  hashHi: number
  fingerprint: string | undefined
  message: Message
  job: Job
  slot: number
}

/**
 * The main-thread side of one shard. Messages for a function handler (or for
 * the handler module when the actor is on this thread) go through the shard's
 * cycle here (shard-cycle.ts). Messages for the handler module of a worker go
 * to the same kind of cycle inside that worker, one run per turn, several runs
 * in flight, so the handlers run next to their actor with one crossing per run.
 */
export class ShardLane {
  private readonly cycle: ShardCycle<Job>
  /** Messages for the worker's handler module, not yet sent. */
  private forward: Forwarded[] = []
  private readonly runs = new Set<Promise<void>>()
  /** The module runs in flight, for abandon(). */
  private readonly sent = new Set<Forwarded[]>()
  private forwardScheduled = false
  private abandoned = false
  readonly stats: LaneStats
  /** The share of keys the rollout enforces for (engine.setRollout), applied to messages pushed from now on. */
  enforceShare = 1

  constructor(
    port: ActorPort,
    /** Present when the actor lives in a worker that can run the handler module itself. */
    private readonly remote: RemoteActorPort | undefined,
    private readonly localModule: HandlerModule | undefined,
    private readonly options: CycleOptions,
    signal: AbortSignal,
    /** The engine's hook, for function handlers (a handler module's messages get the module's own). */
    private readonly reconcile: ReconcileHook | undefined,
    /** Where decision events go, when anyone observes them. */
    private readonly hub: DecisionHub,
  ) {
    this.stats = { counters: countersFor(options), verdicts: new Float64Array(VERDICT_COUNT) }
    this.cycle = new ShardCycle<Job>(port, options, (entry) => {
      const outcome = this.handOut(entry.owner, entry.slot, entry.verdict, entry.result, entry.error, entry.shadow)
      if (this.hub.active) this.observe(outcome, entry.key, entry.layer, entry.enforced, ownerOf(entry))
    }, signal)
  }

  push(key: string, hashLo: number, hashHi: number, fingerprint: string | undefined, message: Message, job: Job, slot: number, partition = 0): void {
    const enforced = enforcesKey(this.enforceShare, hashHi)
    if (job.handler === undefined && this.remote !== undefined) this.forward.push({ key, enforced, hashLo, hashHi, fingerprint, message, job, slot })
    else {
      const entry = new CycleEntry(key, hashLo, hashHi, fingerprint, message, job.handler ?? this.localModule!.handle, job, slot)
      entry.enforced = enforced
      entry.ride = job.ride
      entry.partition = partition
      entry.reconcile = job.handler !== undefined ? this.reconcile : this.localModule?.reconcile
      this.cycle.push(entry)
    }
  }

  /** Starts work on what was pushed; `gatherFirst` when a single message was: see ShardCycle.kick. */
  start(gatherFirst: boolean): void {
    this.cycle.kick(gatherFirst)
    if (this.forward.length > 0 && !this.forwardScheduled) {
      this.forwardScheduled = true
      if (gatherFirst) setImmediate(this.sendRuns)
      else queueMicrotask(this.sendRuns)
    }
  }

  /** Resolves when everything pushed so far has its outcome. */
  async idle(): Promise<void> {
    for (;;) {
      await Promise.all([...this.runs, this.cycle.idle()])
      if (this.forward.length === 0 && this.runs.size === 0) break
      // Forwarded messages not sent yet: their send is scheduled for this turn.
      await gather()
    }
    this.takeCounters()
  }

  /** Gives every message without an outcome one now, with `error` (ShardCycle.abandon); what ends later is ignored. */
  abandon(error: ErrorData): void {
    this.abandoned = true
    this.cycle.abandon(error)
    for (const m of this.forward.splice(0)) this.handOutForwarded(m, VerdictCode.IN_FLIGHT, error)
    for (const run of this.sent) for (const m of run) this.handOutForwarded(m, VerdictCode.IN_FLIGHT, error)
    this.sent.clear()
  }

  /** Brings the cycle's counts into the stats. */
  takeCounters(): void {
    addCounters(this.stats.counters, this.cycle.takeCounters())
  }

  private readonly sendRuns = (): void => {
    this.forwardScheduled = false
    if (this.abandoned) return
    const { maxBatch } = this.options
    while (this.forward.length > 0 && this.runs.size < MAX_RUNS_IN_FLIGHT) {
      const run = this.sendRun(this.forward.splice(0, maxBatch))
      this.runs.add(run)
      void run.finally(() => {
        this.runs.delete(run)
        if (this.forward.length > 0 && !this.forwardScheduled) {
          this.forwardScheduled = true
          queueMicrotask(this.sendRuns)
        }
      })
    }
  }

  private async sendRun(sent: Forwarded[]): Promise<void> {
    const n = sent.length
    const hashes = new Uint32Array(2 * n)
    for (let j = 0; j < n; j++) {
      hashes[2 * j] = sent[j].hashLo
      hashes[2 * j + 1] = sent[j].hashHi
    }
    let out: BatchResult
    this.sent.add(sent)
    try {
      out = await this.remote!.run(
        { keys: sent.map((m) => m.key), hashes, fingerprints: sent.map((m) => m.fingerprint) },
        sent.map((m) => m.message),
        Uint8Array.from(sent, (m) => (m.enforced ? 1 : 0)),
        this.hub.active,
      )
    } catch (error) {
      if (!this.sent.delete(sent)) return
      const data = failureData(error, 'actor failed', ErrorCode.ACTOR_FAILED)
      for (const m of sent) this.handOutForwarded(m, VerdictCode.IN_FLIGHT, data)
      return
    }
    if (!this.sent.delete(sent)) return
    addCounters(this.stats.counters, out.counters)
    for (let j = 0; j < n; j++) {
      this.handOutForwarded(sent[j], out.verdicts[j] as VerdictCode, out.errors[j], out.results[j], out.shadows[j], out.layers[j] as LayerCode, out.owners?.[j])
    }
  }

  private handOutForwarded(m: Forwarded, verdict: VerdictCode, error: ErrorData | undefined, result?: unknown, shadow?: ShadowData, layer: LayerCode = LayerCode.STORE, owner?: string): void {
    const outcome = this.handOut(m.job, m.slot, verdict, result, error, shadow)
    if (this.hub.active) this.observe(outcome, m.key, layer, m.enforced, owner)
  }

  private handOut(job: Job, slot: number, verdict: VerdictCode, result: unknown, error: ErrorData | undefined, shadow: ShadowData | undefined): Outcome {
    // Shadow rollout: the counts say what enforce would have decided.
    this.stats.verdicts[shadow?.verdict ?? verdict]++
    const outcome = toOutcome(job.keys[slot], verdict, result, error, shadow)
    job.outcomes[slot] = outcome
    job.each?.(slot, outcome)
    if (--job.remaining === 0) job.done()
    return outcome
  }

  /** The decision event of a handed-out outcome: in shadow, the verdict and error code enforce would have given. */
  private observe(outcome: Outcome, scopedKey: string, layer: LayerCode, enforced: boolean, owner: string | undefined): void {
    const { shadow } = outcome
    const verdict = shadow?.verdict ?? outcome.verdict
    if (!this.hub.wants(verdict)) return
    this.hub.emit(outcome.key, namespaceOfScoped(scopedKey), verdict, layer, enforced, owner, shadow !== undefined ? shadow.code : outcome.error?.code)
  }
}

const gather = (): Promise<void> => new Promise((resolve) => setImmediate(resolve))
