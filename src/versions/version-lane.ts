import { randomBytes } from 'node:crypto'
import { ErrorCode, errorText, IdemError } from '../errors.js'
import { Verdict, type Handler, type Message, type Outcome } from '../message.js'
import type { Clock } from '../clock.js'
import { AppliedVersions } from './applied-versions.js'
import { compareVersionTexts, decodeVersion, encodeVersion } from './version-order.js'
import { allowedMove, isState, type VersionRules } from './version-rules.js'
import { VersionClaim, type VersionStore } from './version-store.js'
import { LayerCode } from '../actor/protocol.js'
import { namespaceOfScoped, type DecisionHub } from '../observe/decision-hub.js'

/** One processBatch call: its outcomes, and how many are still to come. */
interface Batch {
  outcomes: Outcome[]
  /** The keys of the messages this lane runs, by batch position (for abandon). */
  keys: (string | undefined)[]
  each: ((index: number, outcome: Outcome) => void) | undefined
  handler: Handler
  remaining: number
  done: () => void
}

/** One message, from its claim to its outcome. */
interface Item {
  batch: Batch
  /** Its position in the batch. */
  index: number
  storeKey: string
  message: Message
  version: string
  state: string | undefined
  /** The claim it holds, once claimed. */
  token: string
  result?: unknown
  failure?: unknown
}

export interface VersionCounts {
  /** Stale and duplicate messages answered from the local cache of applied versions, with no store call. */
  lruHits: number
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
  /** Keys whose applied version is held in memory (0: none). */
  cacheKeys: number
  clock: Clock
  /** Where decision events go, when anyone observes them. */
  hub: DecisionHub
}

/**
 * Runs version-aware messages (README "Versions and state machines"). Every
 * message is claimed in the store: a seen key is no reason to skip, only a
 * version not newer than the applied one is.
 *
 * One key's versions run one at a time and in order: a key has a queue here
 * (a batch's versions of it sorted, later batches behind), and its next
 * version is claimed only once the one before has its outcome; another
 * process's live claim answers in-flight, so there a newer version waits for
 * the older one's run through a redelivery. Keys do not wait for each
 * other: claims, commits and releases that become due in one turn of the
 * event loop go to the store together, one call each per owner token.
 */
export class VersionLane {
  readonly counts: VersionCounts = { lruHits: 0, new: 0, duplicate: 0, stale: 0, inFlight: 0, invalid: 0, storeOperations: 0, fencedWrites: 0, storeFailures: 0 }
  /** Keys with a version being claimed, run or settled: the versions waiting behind it, in order. */
  private readonly queues = new Map<string, Item[]>()
  private toClaim: Item[] = []
  private toCommit: Item[] = []
  private toRelease: Item[] = []
  private flushing = false
  /** Items whose handler runs: their claims are renewed every leaseMs/3. */
  private readonly running = new Set<Item>()
  private renewal: NodeJS.Timeout | undefined
  /** Per claim token, its items claimed and not yet committed or released: a commit of all of them is one write. */
  private readonly held = new Map<string, number>()
  /** Batches still waiting for outcomes: idle() waits for them, abandon() ends them. */
  private readonly batches = new Map<Batch, Promise<void>>()
  private abandoned = false
  private readonly tokenPrefix = randomBytes(6).toString('base64url')
  private tokenCount = 0
  private readonly applied: AppliedVersions

  constructor(
    private readonly store: VersionStore,
    private readonly rules: VersionRules,
    private readonly options: VersionLaneOptions,
  ) {
    this.applied = new AppliedVersions(options.cacheKeys)
  }

  /** Runs the messages at `indices` (their keys already valid, scoped as `storeKeys`), filling `outcomes` and calling `each` per final outcome. */
  run(messages: readonly Message[], indices: readonly number[], storeKeys: readonly (string | undefined)[], outcomes: Outcome[], handler: Handler, each: ((index: number, outcome: Outcome) => void) | undefined): Promise<void> {
    let done!: () => void
    const finished = new Promise<void>((resolve) => (done = resolve))
    const keys: (string | undefined)[] = new Array(messages.length)
    for (const index of indices) keys[index] = messages[index].key
    const batch: Batch = { outcomes, keys, each, handler, remaining: indices.length, done }
    if (indices.length === 0) return Promise.resolve()
    const byKey = new Map<string, Item[]>()
    const now = this.options.clock.now()
    for (const index of indices) {
      const message = messages[index]
      const item = this.itemOf(batch, message, index, storeKeys[index]!)
      if (item instanceof IdemError) {
        this.counts.invalid++
        this.finish(batch, index, { key: message.key, verdict: Verdict.INVALID, error: item })
        if (this.options.hub.active) this.observe(batch.outcomes[index], storeKeys[index]!, LayerCode.INPUT, undefined)
        continue
      }
      const held = this.applied.get(item.storeKey, now)
      if (held !== undefined && compareVersionTexts(held, item.version) >= 0) {
        this.counts.lruHits++
        this.skip(item, held, LayerCode.LRU)
        continue
      }
      const items = byKey.get(item.storeKey)
      if (items === undefined) byKey.set(item.storeKey, [item])
      else items.push(item)
    }
    for (const [key, items] of byKey) {
      if (items.length > 1) items.sort((a, b) => compareVersionTexts(a.version, b.version))
      const queue = this.queues.get(key)
      if (queue !== undefined) queue.push(...items)
      else {
        this.queues.set(key, items.slice(1))
        this.toClaim.push(items[0])
      }
    }
    this.schedule()
    if (batch.remaining > 0) {
      this.batches.set(batch, finished)
      void finished.then(() => this.batches.delete(batch))
    }
    return finished
  }

  /** Resolves once every batch taken so far has its outcomes. */
  async idle(): Promise<void> {
    while (this.batches.size > 0) await Promise.all(this.batches.values())
  }

  private itemOf(batch: Batch, message: Message, index: number, storeKey: string): Item | IdemError {
    const { rules } = this
    let version: unknown
    let state: unknown
    let reading = 'versionOf'
    try {
      version = rules.versionOf(message)
      reading = 'stateOf'
      if (rules.stateOf !== undefined) state = rules.stateOf(message)
    } catch (error) {
      return new IdemError(ErrorCode.INVALID_MESSAGE, `${reading} threw for key ${JSON.stringify(message.key)}: ${errorText(error)}`, { key: message.key, cause: error })
    }
    const encoded = encodeVersion(version)
    if ('problem' in encoded) return new IdemError(ErrorCode.INVALID_MESSAGE, `key ${JSON.stringify(message.key)}: ${encoded.problem}`, { key: message.key })
    if (rules.stateOf !== undefined && !isState(state)) {
      return new IdemError(ErrorCode.INVALID_MESSAGE, `key ${JSON.stringify(message.key)}: stateOf must return a non-empty string of at most 100 characters without U+0000, got ${typeof state === 'string' ? JSON.stringify(state.slice(0, 120)) : typeof state}`, { key: message.key })
    }
    return { batch, index, storeKey, message, version: encoded.text, state: state as string | undefined, token: '' }
  }

  /**
   * Close gave up waiting: every message still without an outcome gets one
   * with `error` (in-flight: delivered again later; a claim still held is left
   * to lapse, so its redelivery runs once the lease ends), and nothing the
   * lane does afterwards reaches a caller.
   */
  abandon(error: { code: ErrorCode; message: string }): void {
    this.abandoned = true
    for (const batch of this.batches.keys()) {
      for (let index = 0; index < batch.outcomes.length; index++) {
        if (batch.outcomes[index] !== undefined || batch.remaining === 0) continue
        const key = batch.keys[index]
        if (key === undefined) continue
        const outcome: Outcome = { key, verdict: Verdict.IN_FLIGHT, error: new IdemError(error.code, error.message, { key }) }
        batch.outcomes[index] = outcome
        batch.each?.(index, outcome)
        if (--batch.remaining === 0) batch.done()
      }
    }
    this.batches.clear()
  }

  private finish(batch: Batch, index: number, outcome: Outcome): void {
    if (this.abandoned) return
    batch.outcomes[index] = outcome
    batch.each?.(index, outcome)
    if (--batch.remaining === 0) batch.done()
  }

  /** A version not newer than the applied one: a duplicate when equal, else stale. */
  private skip(item: Item, applied: string, layer: LayerCode): void {
    const equal = applied === item.version
    if (equal) this.counts.duplicate++
    else this.counts.stale++
    const outcome: Outcome = { key: item.message.key, verdict: equal ? Verdict.DUPLICATE : Verdict.STALE }
    this.finish(item.batch, item.index, outcome)
    if (this.options.hub.active) this.observe(outcome, item.storeKey, layer, undefined)
  }

  /** The item has its outcome: the next version of its key may be claimed. */
  private settle(item: Item, outcome: Outcome): void {
    this.finish(item.batch, item.index, outcome)
    if (this.options.hub.active) this.observe(outcome, item.storeKey, LayerCode.STORE, item.token === '' ? undefined : item.token)
    this.next(item)
  }

  /** Versions are always enforced (the rollout must be 'enforce' with them). */
  private observe(outcome: Outcome, storeKey: string, layer: LayerCode, owner: string | undefined): void {
    if (this.abandoned || !this.options.hub.wants(outcome.verdict)) return
    this.options.hub.emit(outcome.key, namespaceOfScoped(storeKey), outcome.verdict, layer, true, owner, outcome.error?.code)
  }

  private next(item: Item): void {
    const queue = this.queues.get(item.storeKey)!
    const next = queue.shift()
    if (next === undefined) this.queues.delete(item.storeKey)
    else {
      this.toClaim.push(next)
      this.schedule()
    }
  }

  /** Store calls wait for the end of this turn, so what becomes due in it goes together. */
  private schedule(): void {
    if (this.flushing) return
    this.flushing = true
    setImmediate(() => {
      this.flushing = false
      const claims = this.toClaim
      const commits = this.toCommit
      const releases = this.toRelease
      this.toClaim = []
      this.toCommit = []
      this.toRelease = []
      if (claims.length > 0) void this.claim(claims)
      const tokens = new Map<string, { commits: Item[]; releases: Item[] }>()
      const of = (token: string) => {
        let due = tokens.get(token)
        if (due === undefined) tokens.set(token, (due = { commits: [], releases: [] }))
        return due
      }
      for (const item of releases) of(item.token).releases.push(item)
      for (const item of commits) of(item.token).commits.push(item)
      for (const [token, due] of tokens) void this.settleToken(token, due.commits, due.releases)
    })
  }

  /** A token's releases go first, so a commit of every key it still holds can be one write. */
  private async settleToken(token: string, commits: Item[], releases: Item[]): Promise<void> {
    if (releases.length > 0) await this.release(releases)
    if (commits.length > 0) await this.commit(commits, this.held.get(token) === commits.length)
  }

  private unhold(token: string, count: number): void {
    const left = this.held.get(token)! - count
    if (left === 0) this.held.delete(token)
    else this.held.set(token, left)
  }

  private async claim(items: Item[]): Promise<void> {
    const { store, options, counts } = this
    const token = `${this.tokenPrefix}.${(this.tokenCount++).toString(36)}`
    let claims
    try {
      counts.storeOperations++
      claims = await store.claim(items.map((item) => item.storeKey), items.map((item) => item.version), items.map((item) => item.state), token, options.leaseMs, options.ttlMs)
    } catch (error) {
      counts.storeFailures++
      for (const item of items) {
        counts.inFlight++
        this.settle(item, { key: item.message.key, verdict: Verdict.IN_FLIGHT, error: storeError(error, item.message.key) })
      }
      return
    }
    let claimed = 0
    for (const code of claims.codes) if (code === VersionClaim.CLAIMED) claimed++
    if (claimed > 0) this.held.set(token, claimed)
    for (let i = 0; i < items.length; i++) {
      const item = items[i]
      const { key } = item.message
      const code = claims.codes[i]
      const applied = claims.applied[i]
      if (code === VersionClaim.STALE) {
        this.applied.remember(item.storeKey, applied!, this.options.clock.now(), claims.expiresInMs[i])
        this.skip(item, applied!, LayerCode.STORE)
        this.next(item)
      } else if (code === VersionClaim.IN_PROGRESS) {
        counts.inFlight++
        this.settle(item, { key, verdict: Verdict.IN_FLIGHT, error: new IdemError(ErrorCode.IN_FLIGHT, `another owner runs a version of key ${JSON.stringify(key)}; retry later`, { key }) })
      } else {
        item.token = token
        if (this.rules.transitions !== undefined && !allowedMove(this.rules, claims.states[i], item.state!)) {
          const from = claims.states[i]
          const why = from === undefined ? 'it is not an initial state' : `${JSON.stringify(from)} (version ${decodeVersion(applied!)}) does not move to it`
          item.failure = new IdemError(ErrorCode.ILLEGAL_TRANSITION, `key ${JSON.stringify(key)} cannot move to ${JSON.stringify(item.state)}: ${why}`, { key })
          this.toRelease.push(item)
          this.schedule()
        } else void this.runHandler(item)
      }
    }
  }

  private async runHandler(item: Item): Promise<void> {
    this.running.add(item)
    this.renewal ??= setInterval(() => this.renew(), Math.max(1, Math.floor(this.options.leaseMs / 3)))
    try {
      item.result = await item.batch.handler(item.message, { signal: this.options.signal })
      this.toCommit.push(item)
    } catch (error) {
      item.failure = error
      this.toRelease.push(item)
    }
    this.running.delete(item)
    if (this.running.size === 0) {
      clearInterval(this.renewal)
      this.renewal = undefined
    }
    this.schedule()
  }

  private renew(): void {
    const { store, options, counts } = this
    for (const group of byToken([...this.running])) {
      counts.storeOperations++
      // A failed renewal leaves the lease to run its course: the commit is fenced if it lapsed.
      store.renew(group.map((item) => item.storeKey), group[0].token, options.leaseMs, options.ttlMs).catch(() => undefined)
    }
  }

  private async commit(items: Item[], every: boolean): Promise<void> {
    const { counts } = this
    let applied: Uint8Array
    try {
      counts.storeOperations++
      applied = await this.store.commit(items.map((item) => item.storeKey), items[0].token, this.options.ttlMs, every)
    } catch (error) {
      this.unhold(items[0].token, items.length)
      // The handlers ran but their versions are not applied: the messages come back (STORE_FAILED waits), and run again once the leases lapse.
      counts.storeFailures++
      for (const item of items) {
        counts.new++
        this.settle(item, { key: item.message.key, verdict: Verdict.NEW, error: storeError(error, item.message.key) })
      }
      return
    }
    this.unhold(items[0].token, items.length)
    for (let i = 0; i < items.length; i++) {
      const item = items[i]
      const { key } = item.message
      counts.new++
      if (applied[i] === 1) {
        this.applied.remember(item.storeKey, item.version, this.options.clock.now(), this.options.ttlMs)
        const outcome: Outcome = { key, verdict: Verdict.NEW }
        if (item.result !== undefined) outcome.result = item.result
        this.settle(item, outcome)
      } else {
        counts.fencedWrites++
        this.settle(item, { key, verdict: Verdict.NEW, error: new IdemError(ErrorCode.LEASE_LOST, `the claim of key ${JSON.stringify(key)} lapsed before its commit and was taken over, or a version as new was applied meanwhile: not applied`, { key }) })
      }
    }
  }

  private async release(items: Item[]): Promise<void> {
    this.counts.storeOperations++
    // A failed release only delays the next run of these keys until the lease lapses.
    await this.store.release(items.map((item) => item.storeKey), items[0].token).catch(() => undefined)
    this.unhold(items[0].token, items.length)
    for (const item of items) {
      const { key } = item.message
      if (item.failure instanceof IdemError && item.failure.code === ErrorCode.ILLEGAL_TRANSITION) {
        this.counts.invalid++
        this.settle(item, { key, verdict: Verdict.INVALID, error: item.failure })
      } else {
        this.counts.new++
        this.settle(item, { key, verdict: Verdict.NEW, error: new IdemError(ErrorCode.HANDLER_FAILED, `handler failed for key ${JSON.stringify(key)}: ${errorText(item.failure)}`, { key, cause: item.failure }) })
      }
    }
  }
}

/** Items grouped by the token of their claim: one store call per group. */
function byToken(items: Item[]): Item[][] {
  if (items.length === 0) return []
  const groups = new Map<string, Item[]>()
  for (const item of items) {
    const group = groups.get(item.token)
    if (group === undefined) groups.set(item.token, [item])
    else group.push(item)
  }
  return [...groups.values()]
}

function storeError(error: unknown, key: string): IdemError {
  const code = error instanceof IdemError ? error.code : ErrorCode.STORE_FAILED
  return new IdemError(code, errorText(error), { key, cause: error })
}
