import { randomBytes } from 'node:crypto'
import { BloomFilter } from '../bloom/bloom-filter.js'
import type { Clock } from '../clock.js'
import type { EngineConfig } from '../config.js'
import type { Redis } from 'ioredis'
import { RedisStore } from '../store/redis/redis-store.js'
import { ClaimCode, CommitCode, type DedupStore } from '../store/store.js'
import { failureData } from './shard-cycle.js'
import { answerSettled, rotateGenerations, SettledKeys } from './settled-keys.js'
import { countersFor, StoreOp, timed } from '../observe/store-timing.js'
import { Counter, LayerCode, VerdictCode, type ActorBatch, type AdminReply, type AdminRequest, type Decision, type Resolved, type RiddenCommit, type Settlement, type SettleReply, type StepReply } from './protocol.js'

const MAX_UNAPPLIED_SETTLEMENTS = 1024

/** The claims of one decided batch: which positions are still open (claimed, not settled). */
interface Claims {
  batch: ActorBatch
  open: Uint8Array
  openCount: number
}

/**
 * One shard's actor: its LRU of settled keys, its bloom filter and its store
 * slice. Single-threaded by construction; the cycle that feeds it (shard-cycle.ts)
 * sends a key again only once its earlier copy is settled, so no key of this
 * shard is ever claimed twice at once here.
 */
export class ShardActor {
  private readonly bloom: BloomFilter
  private readonly settled: SettledKeys
  private readonly counters: Float64Array
  private generationStartedAt: number
  /** Tokens must never repeat across restarts of this shard, or a stale owner could pass as a live one. */
  private readonly tokenPrefix = randomBytes(6).toString('base64url')
  private batches = 0
  /** The claims of each decided batch until every one is settled, by owner token: renewals cover the open ones. */
  private readonly claimsByToken = new Map<string, Claims>()
  /**
   * Settlements the store could not take (it was unreachable): retried before
   * the next store call and on a timer. A commit applied late, while the lease
   * still holds, turns the redelivery of a key whose handler already ran into a
   * duplicate; a release applied late frees a claim whose reply was lost. An
   * outage longer than the lease lets the commit be refused (fenced) instead.
   */
  private unappliedSettlements: { batch: ActorBatch; settlement: Settlement }[] = []
  private retryTimer: NodeJS.Timeout | undefined
  private retrying: Promise<void> | undefined

  constructor(
    readonly shard: number,
    private readonly config: EngineConfig,
    private readonly clock: Clock,
    /** This shard's store, perhaps shared with the thread's other shards (StoreFactory); its owner closes it. */
    private readonly store: DedupStore,
  ) {
    this.counters = countersFor(config)
    this.bloom = new BloomFilter({
      expectedItems: Math.ceil(config.bloom.expectedItems / config.shards),
      falsePositiveRate: config.bloom.falsePositiveRate,
      maxBatchKeys: config.maxBatch,
    })
    // The memory store answers from memory already: an LRU in front of it would only hold a second copy of its records.
    this.settled = new SettledKeys(config.store.kind === 'memory' ? 0 : Math.ceil(config.lru.maxKeys / config.shards))
    this.generationStartedAt = clock.now()
  }

  /**
   * Applies the settlements and decides the next batch at once: the cycle
   * never sends a key for a decision while an earlier copy of it is unsettled,
   * so the two cannot touch the same key.
   */
  async step(settlements: Settlement[], batch: ActorBatch | undefined): Promise<StepReply> {
    const [settled, decision] = await Promise.all([Promise.all(settlements.map((s) => this.settle(s))), batch === undefined ? undefined : this.decide(batch)])
    return decision === undefined ? { settled } : { settled, decision }
  }

  /**
   * Verdicts for a batch: LRU and bloom answer without I/O, the rest is claimed
   * in one store call. Bloom runs first because a "never seen" key cannot be in
   * the LRU, so only maybe-seen keys pay for an LRU lookup.
   */
  async decide(batch: ActorBatch): Promise<Decision> {
    // Kept settlements first: a late commit must land before this batch claims the same keys.
    if (this.unappliedSettlements.length > 0) await this.retryUnapplied()
    const { keys, fingerprints } = batch
    const n = keys.length
    const now = this.clock.now()
    this.rotateBloom(now)
    // One per decision: the cycle may have two decisions out at once, and this one is read again after the store's reply.
    const maybeSeen = new Uint8Array(n)
    const positives = this.bloom.testAndAddHashes(batch.hashes, n, maybeSeen)
    const c = this.counters
    c[Counter.BLOOM_POSITIVES] += positives
    c[Counter.BLOOM_NEGATIVES] += n - positives

    const verdicts = new Uint8Array(n)
    const layers = new Uint8Array(n)
    const results: unknown[] = new Array(n)
    const storedFingerprints: (string | undefined)[] = new Array(n)
    const claimIndexes: number[] = []
    for (let i = 0; i < n; i++) {
      if (maybeSeen[i] === 1) {
        const hit = this.settled.get(keys[i], now)
        if (hit !== undefined) {
          c[Counter.LRU_HITS]++
          layers[i] = LayerCode.LRU
          answerSettled(i, hit.fingerprint, hit.result, fingerprints[i], verdicts, results, storedFingerprints)
          continue
        }
      }
      claimIndexes.push(i)
    }

    const token = `${this.tokenPrefix}.${this.shard}.${++this.batches}`
    let claims: Claims | undefined
    let unknownAt: Uint8Array | undefined
    let unknownTokens: (string | undefined)[] | undefined
    if (claimIndexes.length > 0) {
      const claimKeys = claimIndexes.map((i) => keys[i])
      const claimFingerprints = claimIndexes.map((i) => fingerprints[i])
      c[Counter.STORE_OPERATIONS]++
      let replies
      try {
        replies = await timed(c, StoreOp.CLAIM, () => this.store.claim(claimKeys, claimFingerprints, token, this.config.leaseMs, this.config.ttlMs))
      } catch (error) {
        // Fail closed: no claim, no handler. The LRU's answers above still stand.
        // The call may have claimed keys before its reply was lost: release them when the store is back.
        for (const i of claimIndexes) verdicts[i] = VerdictCode.IN_FLIGHT
        this.keepUnapplied(batch, { token, commit: [], commitResults: undefined, release: claimIndexes, unknown: [] })
        return { verdicts, token, results, storedFingerprints, counters: this.takeCounters(), layers, storeError: failureData(error, 'store claim failed') }
      }
      for (let j = 0; j < claimIndexes.length; j++) {
        const i = claimIndexes[j]
        switch (replies.codes[j]) {
          case ClaimCode.CLAIMED:
            verdicts[i] = VerdictCode.NEW
            claims ??= { batch, open: new Uint8Array(n), openCount: 0 }
            claims.open[i] = 1
            claims.openCount++
            if (maybeSeen[i] === 1) c[Counter.BLOOM_FALSE_POSITIVES]++
            break
          case ClaimCode.DONE:
            answerSettled(i, replies.fingerprints[j], replies.results[j], fingerprints[i], verdicts, results, storedFingerprints)
            this.remember(keys[i], replies.fingerprints[j], replies.results[j], now, replies.doneExpiresInMs?.[j])
            break
          case ClaimCode.IN_PROGRESS:
            // Even with another fingerprint this is in-flight, not conflict: the
            // other owner may fail and release, and then this message is new.
            verdicts[i] = VerdictCode.IN_FLIGHT
            storedFingerprints[i] = replies.fingerprints[j]
            break
          case ClaimCode.UNKNOWN:
            // Never run, never acked: the cycle asks the reconcile hook, or answers in-flight.
            verdicts[i] = VerdictCode.IN_FLIGHT
            storedFingerprints[i] = replies.fingerprints[j]
            ;(unknownAt ??= new Uint8Array(n))[i] = 1
            ;(unknownTokens ??= new Array(n))[i] = replies.unknownTokens?.[j]
            break
          case ClaimCode.REPEAT:
            // The cycle sends each key once per batch; a store answering REPEAT holds the claim under an earlier copy.
            verdicts[i] = VerdictCode.IN_FLIGHT
            break
        }
      }
    }
    if (claims !== undefined) this.claimsByToken.set(token, claims)
    const decision: Decision = { verdicts, token, results, storedFingerprints, counters: this.takeCounters(), layers }
    if (unknownAt !== undefined) {
      decision.unknownAt = unknownAt
      decision.unknownTokens = unknownTokens
    }
    return decision
  }

  private async settle(s: Settlement): Promise<SettleReply> {
    const decided = this.claimsByToken.get(s.token)
    if (decided === undefined) throw new Error(`shard ${this.shard} holds no claims under token ${s.token}`)
    for (const positions of [s.commit, s.release, s.unknown]) {
      for (const j of positions) {
        if (decided.open[j] !== 1) throw new Error(`shard ${this.shard}: position ${j} of token ${s.token} is not an open claim`)
        decided.open[j] = 0
      }
    }
    decided.openCount -= s.commit.length + s.release.length + s.unknown.length
    if (decided.openCount === 0) this.claimsByToken.delete(s.token)
    if (this.unappliedSettlements.length > 0) await this.retryUnapplied()
    try {
      const { committed, marked } = await this.applySettlement(s, decided.batch)
      return { committed, marked, counters: this.takeCounters() }
    } catch (error) {
      this.keepUnapplied(decided.batch, s)
      return { committed: new Uint8Array(s.commit.length), marked: new Uint8Array(s.unknown.length), counters: this.takeCounters(), storeError: failureData(error, 'store commit/release failed') }
    }
  }

  private keepUnapplied(batch: ActorBatch, settlement: Settlement): void {
    // Bounded memory in a long outage: the oldest is dropped and counted; its
    // keys stay IN_PROGRESS until their lease lapses, and a commit dropped so
    // may let a redelivery run its handler again (stats: droppedSettlements).
    if (this.unappliedSettlements.length >= MAX_UNAPPLIED_SETTLEMENTS) {
      this.unappliedSettlements.shift()
      this.counters[Counter.DROPPED_SETTLEMENTS]++
    }
    this.unappliedSettlements.push({ batch, settlement })
    this.scheduleRetry()
  }

  /** Retries kept settlements on a timer too: a quiet shard must not wait for traffic while leases run out. */
  private scheduleRetry(): void {
    if (this.retryTimer !== undefined || this.unappliedSettlements.length === 0) return
    const delay = Math.min(1000, Math.max(20, Math.floor(this.config.leaseMs / 10)))
    this.retryTimer = setTimeout(() => {
      this.retryTimer = undefined
      void this.retryUnapplied().then(() => this.scheduleRetry())
    }, delay)
    this.retryTimer.unref()
  }

  /** Applies the kept settlements in order; stops at the first failure (the store is still away). One retry runs at a time. */
  private retryUnapplied(): Promise<void> {
    // Cleared in a later tick by finally(), never before the assignment: a retry that ends at once cannot leave a stale promise here.
    this.retrying ??= this.applyUnappliedInOrder().finally(() => (this.retrying = undefined))
    return this.retrying
  }

  private async applyUnappliedInOrder(): Promise<void> {
    while (this.unappliedSettlements.length > 0) {
      const { batch, settlement } = this.unappliedSettlements[0]
      try {
        await this.applySettlement(settlement, batch)
      } catch {
        return
      }
      this.unappliedSettlements.shift()
      this.counters[Counter.LATE_SETTLEMENTS]++
    }
  }

  /**
   * Releases, marks UNKNOWN, then commits a batch's settlement (the others
   * before the commit: see DedupStore.commit); the CommitCode per commit
   * position and the mark per unknown position.
   */
  private async applySettlement(s: Settlement, batch: ActorBatch): Promise<{ committed: Uint8Array; marked: Uint8Array }> {
    const { keys, fingerprints } = batch
    const c = this.counters
    if (s.release.length > 0) {
      c[Counter.STORE_OPERATIONS]++
      const released = await timed(c, StoreOp.RELEASE, () =>
        this.store.release(
          s.release.map((j) => keys[j]),
          s.token,
        ),
      )
      for (let k = 0; k < released.length; k++) if (released[k] === 0) c[Counter.FENCED_WRITES]++
    }
    let marked: Uint8Array = new Uint8Array(0)
    if (s.unknown.length > 0) {
      c[Counter.STORE_OPERATIONS]++
      marked = await timed(c, StoreOp.MARK_UNKNOWN, () =>
        this.store.markUnknown(
          s.unknown.map((j) => keys[j]),
          s.token,
          this.config.ttlMs,
        ),
      )
      for (let k = 0; k < marked.length; k++) c[marked[k] === 1 ? Counter.OUTCOMES_UNKNOWN : Counter.FENCED_WRITES]++
    }
    let committed: Uint8Array = new Uint8Array(0)
    if (s.commit.length > 0) {
      const commitKeys = s.commit.map((j) => keys[j])
      c[Counter.STORE_OPERATIONS]++
      committed = await timed(c, StoreOp.COMMIT, () => this.store.commit(commitKeys, s.commitResults, s.token, this.config.ttlMs))
      const now = this.clock.now()
      for (let k = 0; k < committed.length; k++) {
        if (committed[k] === CommitCode.REFUSED) c[Counter.FENCED_WRITES]++
        else this.remember(commitKeys[k], fingerprints[s.commit[k]], committed[k] === CommitCode.COMMITTED ? s.commitResults?.[k] : undefined, now)
      }
    }
    return { committed, marked }
  }

  /**
   * Resolves the UNKNOWN episode of a key of this shard marked under `token`
   * (a reconcile hook's answer): DONE, with `result` when results are kept,
   * or absent. Not remembered in the LRU: the hook's message may not carry
   * the fingerprint stored with the key.
   */
  async resolve(key: string, done: boolean, result: unknown, token: string | undefined): Promise<Resolved> {
    this.counters[Counter.STORE_OPERATIONS]++
    const [code] = await timed(this.counters, StoreOp.RESOLVE, () => this.store.resolve([key], [done], done && this.config.keepResults ? [result] : undefined, this.config.ttlMs, token))
    if (code === CommitCode.REFUSED) this.counters[Counter.FENCED_WRITES]++
    return { code: code as CommitCode, counters: this.takeCounters() }
  }

  /**
   * An operator's request about this shard's keys, on its own store (a memory
   * store lives in this thread). The LRU forgets after the store does: a
   * message decided in between may still be answered from it, as it could
   * have been a moment before the forget. Failures come back as data.
   */
  async admin(request: AdminRequest): Promise<AdminReply> {
    try {
      switch (request.op) {
        case 'inspect':
          return { view: (await this.store.inspect([request.key]))[0], removed: 0 }
        case 'forget': {
          const [removed] = await this.store.forget([request.key])
          this.settled.forget(request.key)
          return { removed }
        }
        case 'purge': {
          const removed = request.store ? await this.store.purge(request.namespace) : 0
          this.settled.forgetNamespace(request.namespace)
          return { removed }
        }
      }
    } catch (error) {
      return { removed: 0, error: failureData(error, `${request.op} failed`) }
    }
  }

  /** Extends the lease of every open claim, one store call per decided batch (a Redis store sends those of one turn together). */
  async renew(): Promise<Float64Array> {
    const calls: Promise<void>[] = []
    for (const [token, { batch, open }] of this.claimsByToken) {
      const keys: string[] = []
      for (let j = 0; j < open.length; j++) if (open[j] === 1) keys.push(batch.keys[j])
      this.counters[Counter.STORE_OPERATIONS]++
      calls.push(
        timed(this.counters, StoreOp.RENEW, () => this.store.renew(keys, token, this.config.leaseMs, this.config.ttlMs)).then((renewed) => {
          for (let i = 0; i < renewed.length; i++) this.counters[renewed[i] === 0 ? Counter.FENCED_WRITES : Counter.LEASE_RENEWALS]++
        }),
      )
    }
    await Promise.all(calls)
    return this.takeCounters()
  }

  /**
   * Commits one claim on `client` (RedisStore.commitOn) before returning: a
   * transport that then completes the message on the same connection has
   * Redis apply the commit first. A commit that fails is kept and applied
   * again through the store, like any settlement the store could not take.
   */
  commitOn(client: Redis, token: string, position: number, result: unknown): Promise<RiddenCommit> {
    const decided = this.claimsByToken.get(token)
    if (decided === undefined || decided.open[position] !== 1) throw new Error(`shard ${this.shard}: position ${position} of token ${token} is not an open claim`)
    decided.open[position] = 0
    if (--decided.openCount === 0) this.claimsByToken.delete(token)
    const key = decided.batch.keys[position]
    const results = this.config.keepResults ? [result] : undefined
    this.counters[Counter.STORE_OPERATIONS]++
    return (this.store as RedisStore).commitOn(client, [key], results, token, this.config.ttlMs).then(
      ([code]) => {
        if (code === CommitCode.REFUSED) this.counters[Counter.FENCED_WRITES]++
        else this.remember(key, decided.batch.fingerprints[position], code === CommitCode.COMMITTED ? result : undefined, this.clock.now())
        return { code: code as CommitCode, counters: this.takeCounters() }
      },
      (error: unknown) => {
        this.keepUnapplied(decided.batch, { token, commit: [position], commitResults: results, release: [], unknown: [] })
        throw error
      },
    )
  }

  /** Whether commitOn(client) may be used: this actor's store is a Redis store that can send its commits on `client`. */
  canCommitOn(client: Redis): boolean {
    return this.store instanceof RedisStore && this.store.canCommitOn(client)
  }

  /** Applies what it can of the kept settlements (the store's own retries bound the wait); the store stays open for its owner to close. */
  async close(): Promise<void> {
    clearTimeout(this.retryTimer)
    this.retryTimer = undefined
    await this.retryUnapplied()
    this.counters[Counter.DROPPED_SETTLEMENTS] += this.unappliedSettlements.length
  }

  /** Held until the record expires in the store: a full TTL after our own commit, the store's remaining time for a DONE key it answered. */
  private remember(key: string, fingerprint: string | undefined, result: unknown, now: number, expiresInMs = this.config.ttlMs): void {
    this.settled.remember(key, fingerprint, result, now, expiresInMs)
  }

  private rotateBloom(now: number): void {
    const rotations = rotateGenerations(this.bloom, this.generationStartedAt, now, this.config.ttlMs)
    if (rotations === 0) return
    this.counters[Counter.BLOOM_ROTATIONS] += rotations
    this.generationStartedAt = now
  }

  private takeCounters(): Float64Array {
    const health = this.store.health
    if (health !== undefined) {
      this.counters[Counter.STORE_RETRIES] += health.retries
      this.counters[Counter.STORE_FAILURES] += health.failures
      this.counters[Counter.STORE_RESETS] += health.resets ?? 0
      this.counters[Counter.EVICTED_KEYS] += health.evictions ?? 0
      health.retries = 0
      health.failures = 0
      if (health.resets !== undefined) health.resets = 0
      if (health.evictions !== undefined) health.evictions = 0
    }
    // Copied and zeroed, never swapped: a renewal or a timed retry may take counters while a
    // decide or settle still counts into the same array across an await.
    const taken = this.counters.slice()
    this.counters.fill(0)
    return taken
  }
}
