import { errorText, ErrorCode, IdemError, isOutcomeUnknown } from '../errors.js'
import type { Handler, HandlerContext, Message, ReconcileAnswer, ReconcileHook } from '../message.js'
import type { Redis } from 'ioredis'
import { CommitCode } from '../store/store.js'
import { nextPollMs, type WaitPolicy } from '../wait-policy.js'
import { countersFor } from '../observe/store-timing.js'
import { Counter, LayerCode, VerdictCode, type ActorBatch, type Decision, type ErrorData, type Resolved, type RiddenCommit, type SettleReply, type Settlement, type ShadowData, type StepReply } from './protocol.js'

/**
 * The actor seen by whoever drives a shard's cycle, on its own thread or
 * across a worker boundary.
 */
export interface ActorPort {
  /** Settles the handlers that ended and decides the next batch, in one crossing. */
  step(settlements: Settlement[], batch: ActorBatch | undefined): Promise<StepReply>
  /** Extends the lease of every claim of the shard that is not settled yet. */
  renew(): Promise<Float64Array>
  /** Commits one claim on a transport's connection before returning (ShardActor.commitOn); actors on this thread only. */
  commitOn?(client: Redis, token: string, position: number, result: unknown): Promise<RiddenCommit>
  /** Resolves the UNKNOWN episode of a key marked under `token`: DONE (with result) or absent. */
  resolve(key: string, done: boolean, result: unknown, token: string | undefined): Promise<Resolved>
}

/**
 * A transport's offer to carry the commits of its messages (BullMQ: the
 * Worker's connection, which completes the job next). The commit is written on
 * `client` when the handler returns and the outcome is handed out at once, so
 * Redis applies the commit, then the completion, with no round trip between.
 */
export interface CommitRide {
  client: Redis
  /** A ridden commit refused (LEASE_LOST) or failed (applied again later) after its outcome was handed out; `slot` is the message's index in its call. */
  unconfirmed(slot: number, error: ErrorData): void
}

/**
 * Steps a shard keeps out at once. Two: what ends or arrives while one step is
 * out goes at once in the next, instead of a round trip later, and a third
 * gathers what ends meanwhile (the group commit). Their keys never overlap (a
 * key is in one step at a time), so they need no order between them.
 */
const STEPS_IN_FLIGHT = 2

/** How long a reconcile call may take when handlerTimeoutMs is off. */
const RECONCILE_TIMEOUT_MS = 30_000
/** The longest wait between two reconcile calls about one key. */
const MAX_RECONCILE_BACKOFF_MS = 300_000
/** Keys whose reconcile attempts a shard remembers; beyond, the oldest are forgotten (and asked about afresh). */
const MAX_RECONCILING_KEYS = 10_000

/** Reconcile attempts about one UNKNOWN episode of a key. */
interface Reconciling {
  /** The token the key was marked under: a later episode starts its attempts afresh. */
  token: string | undefined
  attempts: number
  /** No call before this time (performance.now()); Infinity while one runs. */
  nextAt: number
}

export interface CycleOptions {
  leaseMs: number
  keepResults: boolean
  maxBatch: number
  /** Most messages of one shard between its mailbox and their outcomes (deciding, running or settling). */
  maxInFlightPerShard: number
  /** 0: handlers run as long as they like. */
  handlerTimeoutMs: number
  /** The in-flight policy: waitMs 0 hands an in-flight key out at once; above, the shard asks the store again (wait-policy.ts). */
  inFlight: WaitPolicy
  reconcileAttempts: number
  reconcileBackoffMs: number
  /**
   * Owned mode: a step's settlements do not hold the step (they wait for their
   * group commit apart), so ended handlers gather for a turn before a step
   * takes them, instead of one step each.
   */
  mode?: 'strict' | 'owned'
  /** Counters arrays carry store call timings (store-timing.ts). */
  timeStoreCalls?: boolean
}

/** One message on its way through a shard's cycle, and its outcome once final. */
export class CycleEntry<T = unknown> {
  verdict: VerdictCode = VerdictCode.NEW
  result: unknown = undefined
  error: ErrorData | undefined = undefined
  /** The claim: its decided batch's token and this message's position in that batch. */
  token = ''
  position = 0
  /** Whether the handler returned (commit) rather than threw (release). */
  returned = false
  /** Its handler ended as UNKNOWN (timed out, or threw outcomeUnknown()): mark the key, neither commit nor release. */
  unknown = false
  /** Its handler ended or timed out: a timed-out handler's later end changes nothing. */
  runEnded = false
  /** Its handler ran past handlerTimeoutMs and may still be running. */
  timedOut = false
  /** Asked when this message meets its key UNKNOWN: the engine's hook for function handlers, the module's for a handler module. */
  reconcile: ReconcileHook | undefined = undefined
  /** With handlerTimeoutMs: when its handler started (performance.now()), and its signal's controller once the handler asked for it. */
  startedAt = 0
  abort: AbortController | undefined = undefined
  /** Set when the transport carries this message's commit. */
  ride: CommitRide | undefined = undefined
  /** Its outcome was handed out (a ridden commit's entry stays in flight until the commit's reply). */
  handedOut = false
  /** Later messages of the same key (or hash) that wait for this one. */
  waiting: CycleEntry<T>[] | undefined = undefined
  /** Owned mode: the key's partition. */
  partition = 0
  /** False in shadow rollout, and for a key in the shadowed share of a gray one: the handler runs whatever the verdict. */
  enforced = true
  /** Shadow rollout: what enforce would have done instead of running it, when that differs. */
  shadow: ShadowData | undefined = undefined
  /** The LayerCode of the decision that answered it. */
  layer: LayerCode = LayerCode.STORE
  /** Owned mode: the epoch its claim was made under (-1: no claim, or strict mode). */
  epoch = -1
  /** In-flight policy wait: when the store first answered in-flight (performance.now()); 0 while it has not. */
  waitingSince = 0

  constructor(
    readonly key: string,
    readonly hashLo: number,
    readonly hashHi: number,
    /** As the router read it once: a getter is not read twice. */
    readonly fingerprint: string | undefined,
    readonly message: Message,
    readonly handler: Handler,
    /** Where the outcome goes: a call's job on the main thread, a run's result in a worker. */
    readonly owner: T,
    readonly slot: number,
  ) {}
}

/**
 * One shard's mailbox and the cycle that drives it (DESIGN.md §4.8). Each step
 * sends, in one crossing to the actor, the settlements of the handlers that
 * ended since the last step and the next batch taken from the mailbox; while
 * it is out, handlers keep running and ending. So a message is settled as soon
 * as its own handler ends, batching serves store round trips only, and no
 * handler waits for another key's. Per-key order: a copy of a key that is
 * being decided, run or settled waits for that key alone.
 *
 * Leases: every claim is renewed from its decision until its settlement, on one
 * timer per shard, and handlers that return no promise are run in slices that
 * let the timer fire (issue 17: a run of synchronous handlers cannot starve it).
 */
export class ShardCycle<T = unknown> {
  private mailbox: CycleEntry<T>[] = []
  private head = 0
  /**
   * Keys taken and not final yet, with the later copies that arrived meanwhile,
   * by the low 32 bits of the key's hash: no string is hashed again, and two
   * keys that share them only make the later one wait its turn (rare: at most
   * maxInFlightPerShard keys are here at once).
   */
  private readonly busy = new Map<number, CycleEntry<T>>()
  /** Claimed messages whose handler has not started yet (synchronous handlers run in slices). */
  private toRun: CycleEntry<T>[] = []
  private runHead = 0
  private runScheduled = false
  /** Handlers that ended since the last step. */
  private ended: CycleEntry<T>[] = []
  private inFlight = 0
  /** Claimed and not settled: the renewal timer runs while this is above 0. */
  private claimsOpen = 0
  private renewal: NodeJS.Timeout | undefined
  private stepsOut = 0
  private scheduled = false
  private idleWaiters: (() => void)[] = []
  /** Counts since the last takeCounters(), indexed by Counter. */
  private counters: Float64Array
  private readonly sliceMs: number
  /** Set by abandon(): whatever ends later is ignored, every outcome was given. */
  private abandoned = false
  /** With handlerTimeoutMs: running handlers in start order, which is their deadline order. */
  private running: CycleEntry<T>[] = []
  private runningHead = 0
  /** Handlers in `running` that have not ended or timed out. */
  private runningLive = 0
  /**
   * Keys whose timed-out handler still runs here, with how many. The hook is
   * not asked about them until they end: it cannot see an effect that has not
   * landed yet, and a "not done" answer would run a second copy beside the
   * first. A handler that ignores its signal and never ends keeps its key
   * in-flight here; another process's hook, or an operator, can still decide.
   */
  private readonly zombies = new Map<string, number>()
  private timeoutTimer: NodeJS.Timeout | undefined
  /** Reconcile attempts by key, for keys met UNKNOWN. */
  private readonly reconciling = new Map<string, Reconciling>()

  constructor(
    private readonly port: ActorPort,
    private readonly options: CycleOptions,
    /** Gets each entry once its outcome is final; must not throw. */
    private readonly deliver: (entry: CycleEntry<T>) => void,
    /** Given to every handler in its context: aborted when the engine closes. */
    private readonly signal?: AbortSignal,
  ) {
    // Long enough that trivial handlers never pay for a yield, short enough that renewals (every leaseMs/3) keep their pace.
    this.sliceMs = Math.max(1, Math.min(50, options.leaseMs / 10))
    this.counters = countersFor(options)
    // Handlers with a signal of their own (handlerTimeoutMs) hear of the close through it.
    signal?.addEventListener('abort', () => {
      for (let k = this.runningHead; k < this.running.length; k++) this.running[k].abort?.abort(signal.reason)
    }, { once: true })
  }

  push(entry: CycleEntry<T>): void {
    this.mailbox.push(entry)
  }

  /**
   * Starts a step if none is out. `gatherFirst` (a single message was pushed)
   * waits out the current turn of the event loop first: callers that each send
   * one message mostly arrive within one turn, and then share a batch.
   */
  kick(gatherFirst = false): void {
    if (this.stepsOut >= STEPS_IN_FLIGHT || this.scheduled || this.abandoned) return
    this.scheduled = true
    if (gatherFirst) setImmediate(this.loop)
    else queueMicrotask(this.loop)
  }

  /** Resolves once every message pushed so far has its outcome. */
  idle(): Promise<void> {
    if (this.isIdle()) return Promise.resolve()
    return new Promise((resolve) => this.idleWaiters.push(resolve))
  }

  /**
   * Gives up (a bounded close at its deadline): every message without an
   * outcome gets one now, with `error`: in-flight for those not claimed, new
   * with the error for claimed ones (their handler may still run; their claims
   * are left to lapse, and each counts as a dropped settlement). Whatever ends
   * later changes nothing.
   */
  abandon(error: ErrorData): void {
    if (this.abandoned) return
    this.abandoned = true
    const unsent = this.mailbox.slice(this.head)
    for (const holder of this.busy.values()) {
      if (!holder.handedOut) {
        const claimed = holder.token !== ''
        if (claimed) this.counters[Counter.DROPPED_SETTLEMENTS]++
        this.handOut(holder, claimed ? VerdictCode.NEW : VerdictCode.IN_FLIGHT, error)
      }
      if (holder.waiting !== undefined) unsent.push(...holder.waiting)
    }
    for (const entry of unsent) this.handOut(entry, VerdictCode.IN_FLIGHT, error)
    this.mailbox = []
    this.head = 0
    this.toRun = []
    this.ended = []
    this.busy.clear()
    this.inFlight = 0
    this.running = []
    this.runningHead = 0
    clearTimeout(this.timeoutTimer)
    this.closeClaims(this.claimsOpen)
    for (const resolve of this.idleWaiters.splice(0)) resolve()
  }

  /** The counts since the last call, zeroed here. */
  takeCounters(): Float64Array {
    const taken = this.counters
    this.counters = countersFor(this.options)
    return taken
  }

  private isIdle(): boolean {
    return this.inFlight === 0 && this.head === this.mailbox.length && this.stepsOut === 0
  }

  private readonly loop = (): void => {
    this.scheduled = false
    while (!this.abandoned && this.stepsOut < STEPS_IN_FLIGHT && (this.ended.length > 0 || (this.head < this.mailbox.length && this.inFlight < this.options.maxInFlightPerShard))) {
      this.stepsOut++
      // A throw past step()'s own handling is a bug: the step still ends, and the rejection surfaces.
      void this.step().then(this.stepDone, (error: unknown) => {
        this.stepDone()
        throw error
      })
    }
  }

  private readonly stepDone = (): void => {
    this.stepsOut--
    this.loop()
    this.resolveIdle()
  }

  private resolveIdle(): void {
    if (this.isIdle()) for (const resolve of this.idleWaiters.splice(0)) resolve()
  }

  private async step(): Promise<void> {
    const ended = this.ended
    this.ended = []
    const settling = settlementsOf(ended, this.options.keepResults)
    const taken = this.take()
    const batch = taken.length === 0 ? undefined : actorBatchOf(taken)
    let reply: StepReply
    try {
      reply = await this.port.step(
        settling.map((s) => s.settlement),
        batch,
      )
    } catch (error) {
      if (this.abandoned) return
      const data = failureData(error, 'actor failed', ErrorCode.ACTOR_FAILED)
      for (const { entries } of settling) this.settleFailed(entries, data)
      for (const entry of taken) this.finish(entry, VerdictCode.IN_FLIGHT, data)
      return
    }
    if (this.abandoned) return
    if (reply.settledLater !== undefined) void reply.settledLater.then((settled) => this.applyLater(settling, settled), (error: unknown) => this.applyLater(settling, error))
    else for (let s = 0; s < settling.length; s++) this.applySettled(settling[s].entries, reply.settled[s])
    if (reply.decision !== undefined) this.applyDecision(taken, reply.decision)
  }

  /** Owned mode: the settlements of a step, once their group commit answered (or, as an error, failed past the store's handling). */
  private applyLater(settling: { entries: SettlingEntries<T> }[], settled: SettleReply[] | unknown): void {
    if (this.abandoned) return
    if (Array.isArray(settled)) for (let s = 0; s < settling.length; s++) this.applySettled(settling[s].entries, settled[s] as SettleReply)
    else {
      const data = failureData(settled, 'group commit failed')
      for (const { entries } of settling) this.settleFailed(entries, data)
    }
    this.settleTurn()
  }

  /** Takes the next batch: up to maxBatch messages within the in-flight bound, each key at most once. */
  private take(): CycleEntry<T>[] {
    const limit = Math.min(this.options.maxBatch, this.options.maxInFlightPerShard - this.inFlight)
    const taken: CycleEntry<T>[] = []
    const { mailbox, busy } = this
    while (this.head < mailbox.length && taken.length < limit) {
      const entry = mailbox[this.head++]
      const holder = busy.get(entry.hashLo)
      if (holder !== undefined) {
        ;(holder.waiting ??= []).push(entry)
        continue
      }
      busy.set(entry.hashLo, entry)
      taken.push(entry)
    }
    this.inFlight += taken.length
    if (this.head === mailbox.length) {
      this.mailbox = []
      this.head = 0
    } else if (this.head > 4096 && this.head * 2 > mailbox.length) {
      this.mailbox = mailbox.slice(this.head)
      this.head = 0
    }
    return taken
  }

  private applyDecision(taken: CycleEntry<T>[], decision: Decision): void {
    addCounters(this.counters, decision.counters)
    let claimed = 0
    for (let j = 0; j < taken.length; j++) {
      const entry = taken[j]
      const shadow = !entry.enforced
      const verdict = decision.verdicts[j] as VerdictCode
      entry.layer = decision.layers[j] as LayerCode
      if (verdict === VerdictCode.NEW) {
        entry.token = decision.token
        entry.position = j
        if (decision.epochs !== undefined) entry.epoch = decision.epochs[j]
        this.toRun.push(entry)
        claimed++
        continue
      }
      let error: ErrorData | undefined
      if (verdict === VerdictCode.CONFLICT) {
        error = {
          code: ErrorCode.CONFLICT,
          message: `key ${JSON.stringify(entry.key)} was processed with fingerprint ${JSON.stringify(decision.storedFingerprints[j])}; this message has ${JSON.stringify(entry.fingerprint)}`,
        }
      } else if (verdict === VerdictCode.IN_FLIGHT) {
        if (decision.unknownAt?.[j] === 1) {
          if (!shadow) {
            this.meetUnknown(entry, decision.storedFingerprints[j], decision.unknownTokens?.[j])
            continue
          }
          error = unknownKey(entry.key, 'shadow rollout runs it anyway')
        } else if (decision.errors?.[j] === undefined && decision.storeError === undefined && !shadow && this.waitForOwner(entry)) {
          continue
        } else error = decision.errors?.[j] ?? decision.storeError ?? { code: ErrorCode.IN_FLIGHT, message: `key ${JSON.stringify(entry.key)} is being processed by another owner; retry later` }
      }
      if (shadow) this.runShadow(entry, verdict, error)
      else this.finish(entry, verdict, error, decision.results[j])
    }
    if (claimed > 0) {
      this.claimsOpen += claimed
      this.renewal ??= setInterval(this.renew, Math.max(1, Math.floor(this.options.leaseMs / 3)))
      this.runHandlers()
    }
  }

  /**
   * In-flight policy `wait`: the entry keeps its place as its key's holder in
   * this shard (later copies stay behind it) and goes through the cycle again
   * after pollMs, until the owner's outcome shows or the wait is over. False
   * when it is over (or off): the entry goes out in-flight.
   */
  private waitForOwner(entry: CycleEntry<T>): boolean {
    if (this.options.inFlight.waitMs === 0) return false
    const now = performance.now()
    if (entry.waitingSince === 0) entry.waitingSince = now
    const pollMs = nextPollMs(this.options.inFlight, entry.waitingSince, now)
    if (pollMs === undefined) return false
    setTimeout(() => {
      // A close that gave up has handed the entry out already.
      if (this.abandoned) return
      this.retake(entry)
      this.kick()
    }, pollMs)
    return true
  }

  /** Starts the claimed handlers; when synchronous ones have held the thread for a slice, the rest wait a turn. */
  private readonly runHandlers = (): void => {
    this.runScheduled = false
    if (this.abandoned) return
    const started = performance.now()
    const { toRun } = this
    while (this.runHead < toRun.length) {
      this.runHandler(toRun[this.runHead++])
      if ((this.runHead & 7) === 0 && this.runHead < toRun.length && performance.now() - started > this.sliceMs) {
        this.runScheduled = true
        setImmediate(this.runHandlers)
        return
      }
    }
    this.toRun = []
    this.runHead = 0
  }

  private runHandler(entry: CycleEntry<T>): void {
    let context: HandlerContext
    if (this.options.handlerTimeoutMs > 0) {
      entry.startedAt = performance.now()
      this.trackRunning(entry)
      // Unref'd: the timer alone must not hold the process (a hung handler's claims are renewed by a timer that does, until it times out).
      this.timeoutTimer ??= setTimeout(this.expireHandlers, this.options.handlerTimeoutMs).unref()
      context = new TimedContext(entry, this.signal, this.options.handlerTimeoutMs)
    } else context = { claim: { token: entry.token, storeKey: entry.key }, signal: this.signal }
    let value: unknown
    try {
      value = entry.handler(entry.message, context)
    } catch (error) {
      return this.handlerEnded(entry, false, error)
    }
    if (isPromiseLike(value)) {
      Promise.resolve(value).then(
        (result) => this.handlerEnded(entry, true, result),
        (error: unknown) => this.handlerEnded(entry, false, error),
      )
    } else this.handlerEnded(entry, true, value)
  }

  private handlerEnded(entry: CycleEntry<T>, returned: boolean, value: unknown): void {
    if (entry.runEnded) {
      if (entry.timedOut) this.zombieEnded(entry.key)
      return
    }
    if (this.abandoned) return
    entry.runEnded = true
    if (this.options.handlerTimeoutMs > 0) this.runningLive--
    entry.abort = undefined
    if (returned && entry.ride !== undefined) return this.rideCommit(entry, entry.ride, value)
    entry.returned = returned
    if (returned) entry.result = value
    else if (isOutcomeUnknown(value)) {
      entry.unknown = true
      entry.error = unknownKey(entry.key, `its handler could not tell whether its effect happened (${errorText(value)})`)
    } else {
      // LEASE_LOST keeps its code (the SQL transaction helper's lease lost before COMMIT: rolled back, run again).
      // Any other error, an IdemError too, is the handler's: transports act on the code, and a thrown
      // RESULT_TOO_LARGE or STORE_FAILED must not pass for a settled key or a commit awaiting the store.
      const code = value instanceof IdemError && value.code === ErrorCode.LEASE_LOST ? ErrorCode.LEASE_LOST : ErrorCode.HANDLER_FAILED
      entry.error = { code, message: `handler failed for key ${JSON.stringify(entry.key)}: ${errorText(value)}` }
    }
    this.ended.push(entry)
    this.kick(this.options.mode === 'owned')
  }

  /** Adds a started handler to the deadline queue, dropping the ended ones at its head first so the queue holds about what runs. */
  private trackRunning(entry: CycleEntry<T>): void {
    const { running } = this
    while (this.runningHead < running.length && running[this.runningHead].runEnded) this.runningHead++
    const held = running.length - this.runningHead
    // A hung handler at the head keeps the ended ones behind it: sweep them once they are most of the queue.
    if (held > 1024 && held > 4 * this.runningLive) {
      this.running = running.slice(this.runningHead).filter((e) => !e.runEnded)
      this.runningHead = 0
    } else if (this.runningHead > 1024 && this.runningHead * 2 > running.length) {
      this.running = running.slice(this.runningHead)
      this.runningHead = 0
    }
    this.running.push(entry)
    this.runningLive++
  }

  private zombieEnded(key: string): void {
    const left = (this.zombies.get(key) ?? 1) - 1
    if (left > 0) this.zombies.set(key, left)
    else this.zombies.delete(key)
  }

  /**
   * Handlers past handlerTimeoutMs, oldest first: each is aborted and ends as
   * UNKNOWN now (its slot and its shard are free), whatever it does later.
   * One timer per shard, set for the oldest running handler's deadline.
   */
  private readonly expireHandlers = (): void => {
    this.timeoutTimer = undefined
    const timeoutMs = this.options.handlerTimeoutMs
    const now = performance.now()
    const { running } = this
    while (this.runningHead < running.length) {
      const entry = running[this.runningHead]
      if (entry.runEnded) {
        this.runningHead++
        continue
      }
      if (entry.startedAt + timeoutMs > now) break
      this.runningHead++
      this.runningLive--
      entry.runEnded = true
      entry.timedOut = true
      this.zombies.set(entry.key, (this.zombies.get(entry.key) ?? 0) + 1)
      entry.unknown = true
      entry.error = unknownKey(entry.key, `its handler did not end within handlerTimeoutMs (${timeoutMs} ms), so its effect may or may not have happened`)
      entry.abort?.abort(timeoutReason(entry.key, timeoutMs))
      this.counters[Counter.HANDLER_TIMEOUTS]++
      this.ended.push(entry)
    }
    if (this.runningHead === running.length) {
      this.running = []
      this.runningHead = 0
    } else {
      if (this.runningHead > 1024) {
        this.running = running.slice(this.runningHead)
        this.runningHead = 0
      }
      this.timeoutTimer = setTimeout(this.expireHandlers, Math.max(1, this.running[this.runningHead].startedAt + timeoutMs - now)).unref()
    }
    this.kick()
  }

  /**
   * A delivery met its key UNKNOWN. With a reconcile hook, and when this key's
   * backoff allows, the hook is asked about this message: done → the key is
   * made DONE and this message is a duplicate; not done → the key is made
   * absent and this message goes through the cycle again (and runs). Otherwise,
   * and while the hook cannot tell, the message is in-flight with
   * OUTCOME_UNKNOWN: never run, never acked.
   */
  private meetUnknown(entry: CycleEntry<T>, storedFingerprint: string | undefined, token: string | undefined): void {
    const hook = entry.reconcile
    if (hook === undefined) return this.finish(entry, VerdictCode.IN_FLIGHT, unknownKey(entry.key, 'no reconcile hook is configured; an operator resolves it with `idem keys resolve`'))
    if (storedFingerprint !== undefined && entry.fingerprint !== undefined && storedFingerprint !== entry.fingerprint) {
      return this.finish(entry, VerdictCode.IN_FLIGHT, unknownKey(entry.key, `this message has another fingerprint than the one that ran (${JSON.stringify(storedFingerprint)}), so the hook is not asked about it`))
    }
    if (this.zombies.has(entry.key)) {
      return this.finish(entry, VerdictCode.IN_FLIGHT, unknownKey(entry.key, 'its timed-out handler is still running in this process (it ignores its signal); the reconcile hook is asked once it ends'))
    }
    let state = this.reconciling.get(entry.key)
    if (state === undefined || state.token !== token) {
      if (state === undefined && this.reconciling.size >= MAX_RECONCILING_KEYS) this.reconciling.delete(this.reconciling.keys().next().value as string)
      this.reconciling.set(entry.key, (state = { token, attempts: 0, nextAt: 0 }))
    }
    const { reconcileAttempts } = this.options
    if (state.attempts >= reconcileAttempts) {
      return this.finish(entry, VerdictCode.IN_FLIGHT, unknownKey(entry.key, `the reconcile hook gave no answer in ${reconcileAttempts} attempts; an operator resolves it with \`idem keys resolve\``))
    }
    const now = performance.now()
    if (now < state.nextAt) {
      const wait = state.nextAt === Infinity ? 'the reconcile hook is being asked now' : `the reconcile hook is asked again in ${Math.ceil(state.nextAt - now)} ms`
      return this.finish(entry, VerdictCode.IN_FLIGHT, unknownKey(entry.key, wait))
    }
    state.nextAt = Infinity
    void this.askHook(hook, entry, state, token)
  }

  private async askHook(hook: ReconcileHook, entry: CycleEntry<T>, state: Reconciling, token: string | undefined): Promise<void> {
    const answer = await callBounded(hook, entry, this.options.handlerTimeoutMs > 0 ? this.options.handlerTimeoutMs : RECONCILE_TIMEOUT_MS, this.signal)
    if (this.abandoned) return
    if (typeof answer === 'string') {
      state.attempts++
      state.nextAt = performance.now() + Math.min(MAX_RECONCILE_BACKOFF_MS, this.options.reconcileBackoffMs * 2 ** (state.attempts - 1))
      this.counters[Counter.RECONCILE_UNANSWERED]++
      this.finish(entry, VerdictCode.IN_FLIGHT, unknownKey(entry.key, `the reconcile hook ${answer} (attempt ${state.attempts} of ${this.options.reconcileAttempts})`))
      return this.settleTurn()
    }
    let resolved: Resolved
    try {
      resolved = await this.port.resolve(entry.key, answer.done, answer.result, token)
    } catch (error) {
      // The store's failure, not the hook's: no attempt used, but no retry before the backoff either.
      state.nextAt = performance.now() + this.options.reconcileBackoffMs
      if (this.abandoned) return
      this.finish(entry, VerdictCode.IN_FLIGHT, failureData(error, 'resolving the UNKNOWN key in the store failed'))
      return this.settleTurn()
    }
    if (this.abandoned) return
    this.reconciling.delete(entry.key)
    addCounters(this.counters, resolved.counters)
    const { code } = resolved
    if (code !== CommitCode.REFUSED) this.counters[answer.done ? Counter.RECONCILED_DONE : Counter.RECONCILED_NOT_DONE]++
    // Done: this message is the duplicate of a settled key (its result kept, or why not). Not done,
    // or resolved by someone else meanwhile: it goes through the cycle again, which finds the key as it now is.
    if (code === CommitCode.REFUSED || !answer.done) this.retake(entry)
    else if (code === CommitCode.COMMITTED) this.finish(entry, VerdictCode.DUPLICATE, undefined, this.options.keepResults ? answer.result : undefined)
    else this.finish(entry, VerdictCode.DUPLICATE, resultNotKept(entry.key, code))
    this.settleTurn()
  }

  /** After an outcome given outside a step: the next step may go, and idle() may resolve. */
  private settleTurn(): void {
    this.kick()
    this.resolveIdle()
  }

  /**
   * The commit goes out now on the transport's connection and the outcome is
   * handed out without its reply; the key stays busy until the reply, so a
   * later copy sees the commit. What the reply says can no longer change the
   * outcome: a refusal or a failure is reported to the transport.
   */
  private rideCommit(entry: CycleEntry<T>, ride: CommitRide, result: unknown): void {
    const committing = this.port.commitOn!(ride.client, entry.token, entry.position, result)
    this.closeClaims(1)
    this.handOut(entry, VerdictCode.NEW, undefined, result)
    committing
      .then(
        ({ code, counters }) => {
          addCounters(this.counters, counters)
          if (code === CommitCode.REFUSED) ride.unconfirmed(entry.slot, leaseLost(entry.key))
        },
        (error: unknown) => ride.unconfirmed(entry.slot, failureData(error, 'commit on the transport connection failed (applied again through the store)')),
      )
      .then(() => {
        if (this.abandoned) return
        this.release(entry)
        this.kick()
        this.resolveIdle()
      })
  }

  /** A refused commit means the lease lapsed: the effect happened, but the key is not DONE. */
  private applySettled(entries: SettlingEntries<T>, reply: SettleReply): void {
    addCounters(this.counters, reply.counters)
    if (reply.storeError !== undefined) return this.settleFailed(entries, reply.storeError)
    this.closeClaims(entries.commit.length + entries.release.length + entries.unknown.length)
    for (let k = 0; k < entries.commit.length; k++) {
      const entry = entries.commit[k]
      let error: ErrorData | undefined
      const code = reply.committed[k]
      if (code === CommitCode.REFUSED) error = reply.commitErrors?.[k] ?? leaseLost(entry.key)
      else if (code !== CommitCode.COMMITTED) error = resultNotKept(entry.key, code)
      this.finish(entry, VerdictCode.NEW, error, entry.result)
    }
    for (const entry of entries.release) this.finish(entry, VerdictCode.NEW, entry.error, undefined)
    for (let k = 0; k < entries.unknown.length; k++) {
      const entry = entries.unknown[k]
      this.finish(entry, VerdictCode.NEW, reply.marked[k] === 1 ? entry.error : takenOver(entry.key))
    }
  }

  /** The settlement did not reach the store: commits carry why (the actor retries them), releases keep the handler's error. */
  private settleFailed(entries: SettlingEntries<T>, data: ErrorData): void {
    this.closeClaims(entries.commit.length + entries.release.length + entries.unknown.length)
    for (const entry of entries.commit) this.finish(entry, VerdictCode.NEW, data, entry.result)
    for (const entry of entries.release) this.finish(entry, VerdictCode.NEW, entry.error ?? data, undefined)
    // The actor keeps the marks and applies them when the store is back: the transport waits (STORE_FAILED).
    for (const entry of entries.unknown) this.finish(entry, VerdictCode.NEW, data, undefined)
  }

  private closeClaims(count: number): void {
    this.claimsOpen -= count
    if (this.claimsOpen === 0 && this.renewal !== undefined) {
      clearInterval(this.renewal)
      this.renewal = undefined
    }
  }

  private readonly renew = (): void => {
    this.port.renew().then(
      (counters) => addCounters(this.counters, counters),
      noop, // a failed renewal shows up as a refused commit (LEASE_LOST) later
    )
  }

  /**
   * Shadow rollout (DESIGN.md §5): the handler runs anyway, and the message
   * is settled as the handler says, as it would be without idem: `new` with
   * its result, or with HANDLER_FAILED when it threw (so the transport
   * retries it). What enforce would have done rides along as `shadow`. The
   * run holds no claim and writes nothing to the store.
   */
  private runShadow(entry: CycleEntry<T>, verdict: VerdictCode, error: ErrorData | undefined): void {
    this.counters[Counter.SHADOW_RUNS]++
    entry.shadow = error === undefined ? { verdict } : { verdict, code: error.code }
    const done = (returned: boolean, value: unknown): void => {
      if (this.abandoned) return
      if (returned) this.finish(entry, VerdictCode.NEW, undefined, value)
      else this.finish(entry, VerdictCode.NEW, { code: ErrorCode.HANDLER_FAILED, message: `handler failed for key ${JSON.stringify(entry.key)}: ${errorText(value)}` })
      this.kick()
      this.resolveIdle()
    }
    let value: unknown
    try {
      value = entry.handler(entry.message, { signal: this.signal })
    } catch (error) {
      return done(false, error)
    }
    if (isPromiseLike(value)) {
      Promise.resolve(value).then(
        (result) => done(true, result),
        (thrown: unknown) => done(false, thrown),
      )
    } else done(true, value)
  }

  /** The entry's outcome is final: let the next copy of its key go, and hand it out. */
  private finish(entry: CycleEntry<T>, verdict: VerdictCode, error: ErrorData | undefined, result?: unknown): void {
    this.release(entry)
    this.handOut(entry, verdict, error, result)
  }

  private handOut(entry: CycleEntry<T>, verdict: VerdictCode, error: ErrorData | undefined, result?: unknown): void {
    if (error !== undefined && verdict === VerdictCode.NEW && entry.returned && !entry.enforced && !error.code.startsWith('RESULT_')) {
      // Shadow rollout: the handler returned, so the message is done as it would be without idem, whatever the store answered (a refused or failed commit).
      entry.shadow = { verdict, code: error.code }
      error = undefined
      result = entry.result
    }
    entry.verdict = verdict
    entry.error = error
    entry.result = result
    entry.handedOut = true
    this.deliver(entry)
  }

  /** The entry leaves the shard: it no longer counts in flight, and the next copy of its key may go. */
  private release(entry: CycleEntry<T>): void {
    this.inFlight--
    this.busy.delete(entry.hashLo)
    if (entry.waiting !== undefined) this.requeue(entry.waiting)
    entry.waiting = undefined
  }

  /** The entry goes through the cycle again from the head of the mailbox, before the later copies of its key. */
  private retake(entry: CycleEntry<T>): void {
    this.inFlight--
    this.busy.delete(entry.hashLo)
    const waiting = entry.waiting ?? []
    entry.waiting = undefined
    entry.token = ''
    entry.epoch = -1
    entry.returned = entry.unknown = entry.runEnded = false
    entry.error = undefined
    this.requeue([entry, ...waiting])
  }

  /** Later copies of a key go back to the head of the mailbox, in their order: they arrived before what is queued. */
  private requeue(waiting: CycleEntry<T>[]): void {
    if (this.head >= waiting.length) {
      this.head -= waiting.length
      for (let k = 0; k < waiting.length; k++) this.mailbox[this.head + k] = waiting[k]
    } else {
      this.mailbox = waiting.concat(this.mailbox.slice(this.head))
      this.head = 0
    }
  }
}

/**
 * A handler's context under handlerTimeoutMs. Its signal is its own (aborted at
 * the timeout, or with the engine's close), made only when the handler reads
 * it: an AbortController per message would cost more than a trivial handler.
 */
class TimedContext<T> implements HandlerContext {
  readonly claim: { token: string; storeKey: string }

  constructor(
    private readonly entry: CycleEntry<T>,
    private readonly closing: AbortSignal | undefined,
    private readonly timeoutMs: number,
  ) {
    this.claim = { token: entry.token, storeKey: entry.key }
  }

  get signal(): AbortSignal {
    const { entry } = this
    if (entry.abort === undefined) {
      entry.abort = new AbortController()
      // Read late: the handler may already be past its deadline, or the engine closing.
      if (entry.timedOut) entry.abort.abort(timeoutReason(entry.key, this.timeoutMs))
      else if (this.closing?.aborted === true) entry.abort.abort(this.closing.reason)
    }
    return entry.abort.signal
  }
}

function timeoutReason(key: string, ms: number): IdemError {
  return new IdemError(ErrorCode.HANDLER_TIMEOUT, `handler for key ${JSON.stringify(key)} ran past handlerTimeoutMs (${ms} ms)`, { key })
}

interface SettlingEntries<T> {
  commit: CycleEntry<T>[]
  release: CycleEntry<T>[]
  unknown: CycleEntry<T>[]
}

/** Groups ended handlers by the batch (token) they were claimed in: one settlement per token. */
function settlementsOf<T>(ended: CycleEntry<T>[], keepResults: boolean): { settlement: Settlement; entries: SettlingEntries<T> }[] {
  const byToken = new Map<string, { settlement: Settlement; entries: SettlingEntries<T> }>()
  for (const entry of ended) {
    let group = byToken.get(entry.token)
    if (group === undefined) {
      group = { settlement: { token: entry.token, commit: [], commitResults: keepResults ? [] : undefined, release: [], unknown: [] }, entries: { commit: [], release: [], unknown: [] } }
      byToken.set(entry.token, group)
    }
    if (entry.unknown) {
      group.settlement.unknown.push(entry.position)
      group.entries.unknown.push(entry)
    } else if (entry.returned) {
      group.settlement.commit.push(entry.position)
      group.settlement.commitResults?.push(entry.result)
      group.entries.commit.push(entry)
    } else {
      group.settlement.release.push(entry.position)
      group.entries.release.push(entry)
    }
  }
  return [...byToken.values()]
}

function actorBatchOf<T>(taken: CycleEntry<T>[]): ActorBatch {
  const n = taken.length
  const keys: string[] = new Array(n)
  const fingerprints: (string | undefined)[] = new Array(n)
  const hashes = new Uint32Array(2 * n)
  const partitions = new Uint32Array(n)
  for (let j = 0; j < n; j++) {
    const entry = taken[j]
    keys[j] = entry.key
    fingerprints[j] = entry.fingerprint
    hashes[2 * j] = entry.hashLo
    hashes[2 * j + 1] = entry.hashHi
    partitions[j] = entry.partition
  }
  return { keys, hashes, fingerprints, partitions }
}

/** Who held the entry's claim, for a decision event: `epoch:<n>` in owned mode, the owner token in strict mode, undefined without a claim. */
export function ownerOf(entry: CycleEntry<unknown>): string | undefined {
  if (entry.epoch >= 0) return `epoch:${entry.epoch}`
  return entry.token === '' ? undefined : entry.token
}

function leaseLost(key: string): ErrorData {
  return { code: ErrorCode.LEASE_LOST, message: `handler finished for key ${JSON.stringify(key)} but its lease had lapsed and the commit was refused; another owner may run it` }
}

function takenOver(key: string): ErrorData {
  return { code: ErrorCode.LEASE_LOST, message: `handler for key ${JSON.stringify(key)} timed out or could not tell its outcome, but its lease had lapsed and another owner had taken the key, so it could not be marked UNKNOWN; it may run there` }
}

/** A key done with its result not kept: why, by the store's CommitCode. */
function resultNotKept(key: string, code: number): ErrorData {
  return code === CommitCode.RESULT_TOO_LARGE
    ? { code: ErrorCode.RESULT_TOO_LARGE, message: `key ${JSON.stringify(key)} is done, but its result is over the store's maxResultBytes and was not kept` }
    : { code: ErrorCode.RESULT_NOT_SERIALIZABLE, message: `key ${JSON.stringify(key)} is done, but its result could not be serialized (JSON for the store, structured clone across threads) and was not kept` }
}

function unknownKey(key: string, why: string): ErrorData {
  return { code: ErrorCode.OUTCOME_UNKNOWN, message: `key ${JSON.stringify(key)} is UNKNOWN, neither run again nor acked until it is reconciled: ${why}` }
}

/**
 * Calls the reconcile hook for an entry, bounded by `timeoutMs` (its signal
 * is aborted then, and a hook that ignores it is no longer waited for). A
 * usable answer as { done, result }; anything else as a text saying what the
 * hook did instead.
 */
async function callBounded<T>(hook: ReconcileHook, entry: CycleEntry<T>, timeoutMs: number, closing: AbortSignal | undefined): Promise<{ done: boolean; result?: unknown } | string> {
  const abort = new AbortController()
  // A close does not wait for a hook that ignores its signal.
  let onClose = noop
  const closed = new Promise<{ failed: string }>((resolve) => {
    onClose = () => {
      abort.abort(closing?.reason)
      resolve({ failed: 'was cut short: the engine is closing' })
    }
  })
  if (closing?.aborted === true) onClose()
  else closing?.addEventListener('abort', onClose, { once: true })
  let timer: NodeJS.Timeout | undefined
  const expired = new Promise<{ failed: string }>((resolve) => {
    timer = setTimeout(() => {
      abort.abort(new IdemError(ErrorCode.HANDLER_TIMEOUT, `reconcile for key ${JSON.stringify(entry.key)} ran past ${timeoutMs} ms`, { key: entry.key }))
      resolve({ failed: `did not answer within ${timeoutMs} ms` })
    }, timeoutMs)
  })
  let answer: ReconcileAnswer | { failed: string }
  try {
    answer = await Promise.race([Promise.resolve(hook(entry.message, { key: entry.key, signal: abort.signal })), expired, closed])
  } catch (error) {
    answer = { failed: `threw: ${errorText(error)}` }
  } finally {
    clearTimeout(timer)
    closing?.removeEventListener('abort', onClose)
  }
  if (answer === 'done') return { done: true }
  if (answer === 'not-done') return { done: false }
  if (answer === 'unknown') return 'answered unknown'
  if (typeof answer === 'object' && answer !== null) {
    if ('result' in answer) return { done: true, result: answer.result }
    if ('failed' in answer && typeof answer.failed === 'string') return answer.failed
  }
  return `answered ${describe(answer)} (expected 'done', 'not-done', 'unknown' or { result })`
}

function describe(value: unknown): string {
  try {
    return JSON.stringify(value) ?? String(value)
  } catch {
    return typeof value
  }
}

/** An error as data: an IdemError keeps its code, anything else gets `code` and says `what` failed. */
export function failureData(error: unknown, what: string, code: ErrorCode = ErrorCode.STORE_FAILED): ErrorData {
  if (error instanceof IdemError) return { code: error.code, message: error.message }
  return { code, message: `${what}: ${errorText(error)}` }
}

/** Adds `delta` into `into`; an array without timing slots (metrics off, or engine stats) takes the counters only. */
export function addCounters(into: Float64Array, delta: Float64Array): void {
  const n = Math.min(into.length, delta.length)
  for (let k = 0; k < n; k++) into[k] += delta[k]
}

function noop(): void {}

function isPromiseLike(value: unknown): value is PromiseLike<unknown> {
  return typeof (value as PromiseLike<unknown> | null)?.then === 'function'
}
