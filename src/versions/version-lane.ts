import { randomBytes } from 'node:crypto'
import { ErrorCode, errorText, IdemError } from '../errors.js'
import { Verdict, type Handler, type Message, type Outcome } from '../message.js'
import { compareVersionTexts, decodeVersion, encodeVersion } from './version-order.js'
import { allowedMove, isState, type VersionRules } from './version-rules.js'
import { VersionClaim, type VersionStore } from './version-store.js'

/** One message of a batch, as the lane runs it. */
interface Item {
  /** Its position in the batch (outcomes). */
  index: number
  storeKey: string
  message: Message
  version: string
  state: string | undefined
  result?: unknown
  failure?: unknown
}

export interface VersionCounts {
  new: number
  duplicate: number
  stale: number
  inFlight: number
  invalid: number
  storeOperations: number
  fencedWrites: number
  storeFailures: number
}

export interface VersionLaneOptions {
  leaseMs: number
  ttlMs: number
  /** Aborted when the engine closes: every handler's context.signal. */
  signal: AbortSignal
}

/**
 * Runs version-aware messages (README "Versions and state machines"). Every
 * message is claimed in the store: a seen key is no reason to skip, only a
 * version not newer than the applied one is. One key's versions run one at a
 * time and in order: within a batch they are sorted, a batch waits for this
 * process's earlier batches holding the same keys, and another process's live
 * claim answers in-flight, so a newer version waits for the older one's run.
 * Each round of a batch is one claim call, handlers run concurrently, then one
 * commit and one release call.
 */
export class VersionLane {
  readonly counts: VersionCounts = { new: 0, duplicate: 0, stale: 0, inFlight: 0, invalid: 0, storeOperations: 0, fencedWrites: 0, storeFailures: 0 }
  /** The last batch of this process holding each key: the next one waits for it. */
  private readonly tails = new Map<string, Promise<void>>()
  private readonly active = new Set<Promise<void>>()
  private readonly tokenPrefix = randomBytes(6).toString('base64url')
  private tokenCount = 0

  constructor(
    private readonly store: VersionStore,
    private readonly rules: VersionRules,
    private readonly options: VersionLaneOptions,
  ) {}

  /** Runs the messages at `indices` (their keys already valid, scoped as `storeKeys`), filling `outcomes` and calling `each` per final outcome. */
  run(messages: readonly Message[], indices: readonly number[], storeKeys: readonly (string | undefined)[], outcomes: Outcome[], handler: Handler, each: ((index: number, outcome: Outcome) => void) | undefined): Promise<void> {
    const finish = (index: number, outcome: Outcome): void => {
      outcomes[index] = outcome
      each?.(index, outcome)
    }
    const byKey = new Map<string, Item[]>()
    for (const index of indices) {
      const message = messages[index]
      const item = this.itemOf(message, index, storeKeys[index]!)
      if (item instanceof IdemError) {
        this.counts.invalid++
        finish(index, { key: message.key, verdict: Verdict.INVALID, error: item })
        continue
      }
      const items = byKey.get(item.storeKey)
      if (items === undefined) byKey.set(item.storeKey, [item])
      else items.push(item)
    }
    for (const items of byKey.values()) if (items.length > 1) items.sort((a, b) => compareVersionTexts(a.version, b.version))
    const work = this.runKeys(byKey, handler, finish)
    this.active.add(work)
    void work.finally(() => this.active.delete(work))
    return work
  }

  /** Resolves once every batch taken so far has its outcomes. */
  async idle(): Promise<void> {
    while (this.active.size > 0) await Promise.all(this.active)
  }

  private itemOf(message: Message, index: number, storeKey: string): Item | IdemError {
    const { rules } = this
    let version: unknown
    let state: unknown
    try {
      version = rules.versionOf(message)
      if (rules.stateOf !== undefined) state = rules.stateOf(message)
    } catch (error) {
      return new IdemError(ErrorCode.INVALID_MESSAGE, `${rules.stateOf !== undefined && version !== undefined ? 'stateOf' : 'versionOf'} threw for key ${JSON.stringify(message.key)}: ${errorText(error)}`, { key: message.key, cause: error })
    }
    const encoded = encodeVersion(version)
    if ('problem' in encoded) return new IdemError(ErrorCode.INVALID_MESSAGE, `key ${JSON.stringify(message.key)}: ${encoded.problem}`, { key: message.key })
    if (rules.stateOf !== undefined && !isState(state)) {
      return new IdemError(ErrorCode.INVALID_MESSAGE, `key ${JSON.stringify(message.key)}: stateOf must return a non-empty string of at most 100 characters, got ${typeof state === 'string' ? JSON.stringify(state.slice(0, 120)) : typeof state}`, { key: message.key })
    }
    return { index, storeKey, message, version: encoded.text, state: state as string | undefined }
  }

  private async runKeys(byKey: Map<string, Item[]>, handler: Handler, finish: (index: number, outcome: Outcome) => void): Promise<void> {
    if (byKey.size === 0) return
    const earlier = new Set<Promise<void>>()
    let done!: () => void
    const mine = new Promise<void>((resolve) => (done = resolve))
    for (const key of byKey.keys()) {
      const tail = this.tails.get(key)
      if (tail !== undefined) earlier.add(tail)
      this.tails.set(key, mine)
    }
    try {
      if (earlier.size > 0) await Promise.all(earlier)
      const queues = [...byKey.values()]
      for (let round = 0; ; round++) {
        const items = queues.filter((q) => q.length > round).map((q) => q[round])
        if (items.length === 0) break
        await this.runRound(items, handler, finish)
      }
    } finally {
      for (const key of byKey.keys()) if (this.tails.get(key) === mine) this.tails.delete(key)
      done()
    }
  }

  private async runRound(items: Item[], handler: Handler, finish: (index: number, outcome: Outcome) => void): Promise<void> {
    const { store, options, counts } = this
    const token = `${this.tokenPrefix}.${(this.tokenCount++).toString(36)}`
    const keys = items.map((item) => item.storeKey)
    let claims
    try {
      counts.storeOperations++
      claims = await store.claim(keys, items.map((item) => item.version), items.map((item) => item.state), token, options.leaseMs, options.ttlMs)
    } catch (error) {
      this.storeFailed(items, error, Verdict.IN_FLIGHT, finish)
      return
    }
    const toRun: Item[] = []
    const toRelease: Item[] = []
    for (let i = 0; i < items.length; i++) {
      const item = items[i]
      const { key } = item.message
      const code = claims.codes[i]
      const applied = claims.applied[i]
      if (code === VersionClaim.STALE) {
        const equal = applied === item.version
        if (equal) counts.duplicate++
        else counts.stale++
        finish(item.index, { key, verdict: equal ? Verdict.DUPLICATE : Verdict.STALE })
      } else if (code === VersionClaim.IN_PROGRESS) {
        counts.inFlight++
        finish(item.index, { key, verdict: Verdict.IN_FLIGHT, error: new IdemError(ErrorCode.IN_FLIGHT, `another owner runs a version of key ${JSON.stringify(key)}; retry later`, { key }) })
      } else if (this.rules.transitions !== undefined && !allowedMove(this.rules, claims.states[i], item.state!)) {
        counts.invalid++
        toRelease.push(item)
        const from = claims.states[i]
        const why = from === undefined ? `it is not an initial state` : `${JSON.stringify(from)} (version ${decodeVersion(applied!)}) does not move to it`
        finish(item.index, { key, verdict: Verdict.INVALID, error: new IdemError(ErrorCode.ILLEGAL_TRANSITION, `key ${JSON.stringify(key)} cannot move to ${JSON.stringify(item.state)}: ${why}`, { key }) })
      } else toRun.push(item)
    }
    if (toRun.length > 0) await this.runHandlers(toRun, handler, token)
    const succeeded = toRun.filter((item) => item.failure === undefined)
    for (const item of toRun) if (item.failure !== undefined) toRelease.push(item)
    await Promise.all([this.commit(succeeded, token, finish), this.release(toRelease, token, finish)])
  }

  /** Runs the claimed items' handlers at once, renewing their claims every leaseMs/3 while any runs. */
  private async runHandlers(items: Item[], handler: Handler, token: string): Promise<void> {
    const { store, options, counts } = this
    const context = { signal: options.signal }
    const running = new Set(items)
    const renewal = setInterval(() => {
      const held = [...running]
      counts.storeOperations++
      store.renew(held.map((item) => item.storeKey), token, options.leaseMs, options.ttlMs).catch(() => {
        // A failed renewal leaves the lease to run its course: the commit is fenced if it lapsed.
      })
    }, Math.max(1, Math.floor(options.leaseMs / 3)))
    try {
      await Promise.all(
        items.map(async (item) => {
          try {
            item.result = await handler(item.message, context)
          } catch (error) {
            item.failure = error
          } finally {
            running.delete(item)
          }
        }),
      )
    } finally {
      clearInterval(renewal)
    }
  }

  private async commit(items: Item[], token: string, finish: (index: number, outcome: Outcome) => void): Promise<void> {
    if (items.length === 0) return
    const { counts } = this
    let applied: Uint8Array
    try {
      counts.storeOperations++
      applied = await this.store.commit(items.map((item) => item.storeKey), token, this.options.ttlMs)
    } catch (error) {
      this.storeFailed(items, error, Verdict.NEW, finish)
      return
    }
    for (let i = 0; i < items.length; i++) {
      const item = items[i]
      const { key } = item.message
      counts.new++
      if (applied[i] === 1) {
        const outcome: Outcome = { key, verdict: Verdict.NEW }
        if (item.result !== undefined) outcome.result = item.result
        finish(item.index, outcome)
      } else {
        counts.fencedWrites++
        finish(item.index, { key, verdict: Verdict.NEW, error: new IdemError(ErrorCode.LEASE_LOST, `the claim of key ${JSON.stringify(key)} lapsed before its commit and was taken over, or a version as new was applied meanwhile: not applied`, { key }) })
      }
    }
  }

  private async release(items: Item[], token: string, finish: (index: number, outcome: Outcome) => void): Promise<void> {
    if (items.length === 0) return
    this.counts.storeOperations++
    // A failed release only delays the next run of these keys until the lease lapses.
    await this.store.release(items.map((item) => item.storeKey), token).catch(() => undefined)
    for (const item of items) {
      if (item.failure === undefined) continue
      this.counts.new++
      const { key } = item.message
      finish(item.index, { key, verdict: Verdict.NEW, error: new IdemError(ErrorCode.HANDLER_FAILED, `handler failed for key ${JSON.stringify(key)}: ${errorText(item.failure)}`, { key, cause: item.failure }) })
    }
  }

  /** A store call failed after its retries: the messages wait (in-flight), or, handlers having run, their commit is left to the lease (new with STORE_FAILED). */
  private storeFailed(items: Item[], error: unknown, verdict: Verdict, finish: (index: number, outcome: Outcome) => void): void {
    this.counts.storeFailures++
    const failure = error instanceof IdemError ? error : new IdemError(ErrorCode.STORE_FAILED, errorText(error), { cause: error })
    for (const item of items) {
      if (verdict === Verdict.NEW) this.counts.new++
      else this.counts.inFlight++
      finish(item.index, { key: item.message.key, verdict, error: new IdemError(failure.code, failure.message, { key: item.message.key, cause: error }) })
    }
  }
}
