import { COUNTER_COUNT, Counter, LayerCode, VERDICT_COUNT, VerdictCode } from './actor/protocol.js'
import { ShardActor } from './actor/shard-actor.js'
import { addCounters, type ActorPort, type CommitRide } from './actor/shard-cycle.js'
import type { Redis } from 'ioredis'
import { ShardLane, type Job, type OnOutcome } from './actor/shard-lane.js'
import { ShardThread, type RemoteActorPort } from './actor/shard-thread.js'
import type { AdminReply, AdminRequest } from './actor/protocol.js'
import { bloomGeometry } from './bloom/bloom-filter.js'
import { systemClock, type Clock } from './clock.js'
import { DEFAULT_SHADOW_SAMPLES, enforceShareOf, MAX_LEASE_MS, readRollout, resolveConfig, type EngineConfig, type EngineOptions, type Rollout } from './config.js'
import { ConfigError, ErrorCode, errorText, IdemError } from './errors.js'
import { invalidKey, KeyStatus, keyStatusOf, mustBe, OptionReader, type BadKeyStatus } from './validation.js'
import { loadHandlerModule, type HandlerModule } from './handler-module.js'
import type { Handler, Message, Outcome } from './message.js'
import { invalidOutcome } from './outcome.js'
import { Router } from './router.js'
import { SqlTransactions, type TransactionWork } from './store/sql/sql-transactions.js'
import { StoreFactory } from './store/store-factory.js'
import { inspectionOf, type KeyInspection } from './store/key-inspection.js'
import { EventEmitter } from 'node:events'
import { Membership, type OwnershipStats, type PartitionChange } from './owned/membership.js'
import { MemoryPartitionStore } from './owned/memory-partitions.js'
import { OwnedShardActor } from './owned/owned-actor.js'
import { partitionOf } from './owned/partition-of.js'
import type { PartitionStore } from './owned/partition-store.js'
import { RedisPartitionStore } from './owned/redis-partitions.js'
import { MemoryVersionStore } from './versions/memory-versions.js'
import { RedisVersionStore } from './versions/redis-versions.js'
import { SqlVersionStore } from './versions/sql-versions.js'
import type { SqlStoreConfig } from './store/sql/sql-options.js'
import { VersionLane } from './versions/version-lane.js'
import { DecisionHub, type ObserverOptions } from './observe/decision-hub.js'
import { EngineMetrics } from './observe/metrics.js'
import { countersFor } from './observe/store-timing.js'
import { AuditLog, type AdminAction, type AuditStats } from './audit/audit-log.js'
import { ShadowEvidence, type ShadowReport } from './observe/shadow-report.js'
import type { DecisionObserver } from './observe/decision-event.js'
import type { VersionStore } from './versions/version-store.js'

/** How long close() waits for queued work by default. */
const DEFAULT_CLOSE_TIMEOUT_MS = 30_000

/** Counts of one shard, or of the whole engine. */
export interface LayerStats {
  /** Duplicates answered by the LRU of settled keys, without I/O. */
  lruHits: number
  /** Keys the bloom filter had never seen. */
  bloomNegatives: number
  /** Keys the bloom filter may have seen (confirmed by the LRU or the store). */
  bloomPositives: number
  /** Maybe-seen keys the store found absent (includes redeliveries of released keys). */
  bloomFalsePositives: number
  /** Store operations (claims, commits, releases, renewals). On Redis the small ones of one turn share a script call, so round trips are at most this. */
  storeOperations: number
  /** Commits, releases or renewals refused because the lease was no longer ours. */
  fencedWrites: number
  bloomRotations: number
  /** Store calls that failed and were tried again. A Redis store serves every shard of its thread: its retries and failures are counted on one of them (the totals are exact). */
  storeRetries: number
  /** Store calls that failed after every retry: their messages came back in-flight with STORE_FAILED. */
  storeFailures: number
  /** Commits and releases that failed while the store was away and were applied once it was back. */
  lateSettlements: number
  /** Kept settlements given up (over 1,024 per shard, or unapplied at close): a commit among them may let a redelivery run again. */
  droppedSettlements: number
  /** Handlers run in shadow rollout that enforce would have skipped. */
  shadowRuns: number
  /** Handlers that ran past handlerTimeoutMs. */
  handlerTimeouts: number
  /** Keys marked UNKNOWN: timed out, or their handler threw outcomeUnknown(). */
  outcomesUnknown: number
  /** UNKNOWN keys the reconcile hook answered done (made DONE). */
  reconciledDone: number
  /** UNKNOWN keys the reconcile hook answered not done (made absent, and run). */
  reconciledNotDone: number
  /** Reconcile calls with no usable answer ('unknown', a throw, a timeout): asked again after a backoff. */
  reconcileUnanswered: number
  /** Times a store found it had lost its data (Redis restarted empty or flushed): its messages come back in-flight with STORE_RESET until `idem store ack-reset`. Counted like storeFailures. */
  storeResets: number
  /** Keys a Redis with allowEviction evicted (from its evicted_keys): a settled key among them runs again on redelivery. Counted like storeFailures. */
  evictedKeys: number
  /** Owned mode: group commits sent (each one store call for a shard's settled keys of every partition). */
  groupCommits: number
  /** Owned mode: messages answered in-flight with NOT_OWNER. */
  notOwned: number
  /** Strict mode: leases a renewal extended, one per open claim per renewal (every leaseMs/3 while its handler runs). */
  leaseRenewals: number
  verdicts: { new: number; duplicate: number; inFlight: number; conflict: number; invalid: number; stale: number }
}

export interface EngineStats {
  totals: LayerStats
  shards: LayerStats[]
  /** Worker threads restarted after dying (their shards' memory stores started empty). */
  workerRestarts: number
  /** Calls of a decision observer (engine.addObserver) that threw: counted, and outcomes went on. */
  observerFailures: number
  /** The audit log's counts, when createEngine had `audit`. */
  audit?: AuditStats
  /** Owned mode: this member's partitions, moves and restores. */
  ownership?: OwnershipStats
  bloom: {
    bitsPerShard: number
    k: number
    /** Both generations of every shard. */
    bytes: number
    /** bloomFalsePositives / (bloomFalsePositives + bloomNegatives): the rate new keys were wrongly "maybe seen". */
    measuredFalsePositiveRate: number
  }
}

/** Internal knobs for tests: an injected clock for exact lease and TTL tests (threads: 0 only), and a partition store several owned engines of one process share. */
export interface EngineInternals {
  clock?: Clock
  partitionStore?: PartitionStore
}

export async function createEngine(options: EngineOptions = {}, internals: EngineInternals = {}): Promise<Engine> {
  const config = resolveConfig(options)
  if (config.strategies !== undefined) {
    // Imported here: the strategy engine extends Engine, so its module can only load once this one has.
    const { startStrategies } = await import('./strategies.js')
    return startStrategies(config, internals.clock ?? systemClock)
  }
  const engine = new Engine(config, internals.clock ?? systemClock, internals.partitionStore)
  await engine.start()
  return engine
}

/**
 * The sharded engine: routes messages by key to shard actors (on this thread
 * or in worker threads) and returns one outcome per message, in order.
 */
export class Engine {
  readonly config: EngineConfig
  private readonly router: Router
  private readonly lanes: ShardLane[] = []
  private readonly threads: ShardThread[] = []
  private readonly localActors: ShardActor[] = []
  /** Strict mode: each shard's actor, on this thread or in a worker, for admin requests. */
  private readonly adminPorts: (ShardActor | RemoteActorPort)[] = []
  private storeFactory: StoreFactory | undefined
  private moduleHandler: HandlerModule | undefined
  private invalidCount = 0
  private closing: Promise<void> | undefined
  /** Aborted by close(): every handler's context.signal. */
  private readonly closeSignal = new AbortController()
  private transactions: SqlTransactions | undefined
  /** Owned mode: the partitions' store and this member's membership. */
  private partitionStore: PartitionStore | undefined
  private membership: Membership | undefined
  private readonly events = new EventEmitter()
  /** Version-aware keys: the lane that runs every message, and its records. */
  private versionLane: VersionLane | undefined
  private versionStore: VersionStore | undefined
  private currentRollout: Rollout
  /** Decision events for idem's own sinks (addObserver). */
  private readonly hub = new DecisionHub()
  /** Metrics on: the engine's series in their registry. */
  private metrics: EngineMetrics | undefined
  protected auditLog: AuditLog | undefined
  /** Who hears of admin actions (the audit log: this engine's, or an engine of strategies' for its types). */
  private readonly adminRecorders: ((action: AdminAction) => void)[] = []
  private shadowEvidence: ShadowEvidence | undefined
  /** Unsubscribes the shadow evidence's observer: set while some rollout is not 'enforce'. */
  private stopShadowEvidence: (() => void) | undefined
  private shadowReportTimer: NodeJS.Timeout | undefined

  constructor(
    config: EngineConfig,
    private readonly clock: Clock,
    /** Owned mode: a store shared with other engines (tests); closed by its owner, not here. */
    private readonly sharedPartitionStore?: PartitionStore,
  ) {
    this.config = config
    this.currentRollout = config.rollout
    // Owned mode routes to partitions; a partition's shard is partition % shards.
    this.router = new Router(config.mode === 'owned' ? config.partitions : config.shards, config.maxBatch)
  }

  /** @internal Called once by createEngine. */
  async start(): Promise<void> {
    await this.startSinks()
    try {
      await this.startShards()
    } catch (error) {
      this.metrics?.close()
      await this.auditLog?.close()
      throw error
    }
  }

  /** @internal Starts the sinks of decisions (metrics, the audit log, the shadow report), on this engine's observers: an engine of strategies has no shards of its own to start. */
  async startSinks(): Promise<void> {
    const { config } = this
    if (config.metrics !== undefined) this.metrics = await EngineMetrics.start(this, config.metrics)
    if (config.audit !== undefined) {
      this.auditLog = new AuditLog(config.audit)
      this.addObserver(this.auditLog.observe)
      this.addAdminRecorder(this.auditLog.recordAdmin)
    }
    // With a report file, the evidence (empty under enforce) exists from the start, so the file is written.
    if (config.shadowReport !== undefined) this.shadowEvidenceKept()
    this.followShadowing(config.rollout !== 'enforce')
  }

  /**
   * What enforce would have done with the decisions it did not act on (shadow,
   * and the shadowed share of a gray rollout), since the rollout first left
   * 'enforce': counts by reason and namespace, and recent samples with key
   * digests. README "Rolling out".
   */
  shadowReport(): ShadowReport {
    return (this.shadowEvidence ?? new ShadowEvidence(DEFAULT_SHADOW_SAMPLES)).report()
  }

  /**
   * The evidence watches decisions while some rollout shadows (from the start,
   * or from a setRollout away from 'enforce') and stops watching when every
   * rollout is 'enforce' again, keeping what it gathered: under enforce it
   * would only cost an event per rejection.
   */
  protected followShadowing(shadowing: boolean): void {
    if (shadowing) this.stopShadowEvidence ??= this.addObserver(this.shadowEvidenceKept().observe, { acted: true })
    else {
      this.stopShadowEvidence?.()
      this.stopShadowEvidence = undefined
    }
  }

  /** The shadow evidence, made (and its report file's timer started) on first use. */
  private shadowEvidenceKept(): ShadowEvidence {
    if (this.shadowEvidence !== undefined) return this.shadowEvidence
    const evidence = new ShadowEvidence(this.config.shadowReport?.samples ?? DEFAULT_SHADOW_SAMPLES)
    this.shadowEvidence = evidence
    const file = this.config.shadowReport?.file
    if (file !== undefined) {
      this.shadowReportTimer = setInterval(() => this.writeShadowReport(file), this.config.shadowReport!.everyMs).unref()
    }
    return evidence
  }

  private writeShadowReport(file: string): void {
    try {
      this.shadowEvidence?.writeTo(file)
    } catch (error) {
      process.emitWarning(`the shadow report could not be written to ${file}: ${errorText(error)}`, { code: 'IDEM_SHADOW_REPORT' })
    }
  }

  private async startShards(): Promise<void> {
    const { config } = this
    if (config.threads === 0 && config.handler !== undefined) this.moduleHandler = await loadHandlerModule(config.handler)
    if (config.mode === 'owned') return this.startOwned()
    if (config.versions !== undefined) {
      const { store } = config
      this.versionStore = store.kind === 'redis' ? new RedisVersionStore(store) : store.kind === 'memory' ? new MemoryVersionStore(this.clock) : new SqlVersionStore(store as SqlStoreConfig, this.clock)
      this.versionLane = new VersionLane(this.versionStore, config.versions, {
        leaseMs: config.leaseMs,
        ttlMs: config.ttlMs,
        signal: this.closeSignal.signal,
        cacheKeys: config.lru.maxKeys,
        clock: this.clock,
        hub: this.hub,
      })
      return
    }
    for (let t = 0; t < config.threads; t++) {
      const shardsHere = Math.ceil((config.shards - t) / config.threads)
      this.threads.push(new ShardThread(config, shardsHere))
    }
    try {
      await Promise.all(this.threads.map((thread) => thread.ready()))
    } catch (error) {
      await Promise.all(this.threads.map((thread) => thread.close()))
      throw error
    }
    for (let shard = 0; shard < config.shards; shard++) {
      let port: ActorPort
      let remote
      if (config.threads === 0) {
        this.storeFactory ??= new StoreFactory(config.store, this.clock)
        const actor = new ShardActor(shard, config, this.clock, this.storeFactory.forShard(shard))
        this.localActors.push(actor)
        port = actor
      } else {
        remote = this.threads[shard % config.threads].portOf(shard)
        port = remote
      }
      this.adminPorts.push(remote ?? (port as ShardActor))
      this.lanes.push(new ShardLane(port, remote, this.moduleHandler, config, this.closeSignal.signal, config.reconcile, this.hub))
    }
    for (const lane of this.lanes) lane.enforceShare = enforceShareOf(config.rollout)
  }

  /**
   * Owned mode: one owned actor per shard (a partition lives in shard
   * partition % shards), and this member's share of the partitions acquired
   * and restored before createEngine returns.
   */
  private async startOwned(): Promise<void> {
    const { config } = this
    const store = this.sharedPartitionStore ?? (config.store.kind === 'redis' ? new RedisPartitionStore(config.store, config.group) : new MemoryPartitionStore(this.clock))
    this.partitionStore = store
    const actors: OwnedShardActor[] = []
    for (let shard = 0; shard < config.shards; shard++) {
      const actor = new OwnedShardActor(shard, config, this.clock, store, (partition, epoch) => this.membership?.partitionLost(partition, epoch))
      actors.push(actor)
      // A reconcile hook cannot resolve keys in owned mode yet: UNKNOWN keys wait for an operator.
      this.lanes.push(new ShardLane(actor, undefined, this.moduleHandler === undefined ? undefined : { handle: this.moduleHandler.handle }, config, this.closeSignal.signal, undefined, this.hub))
      this.lanes[shard].enforceShare = enforceShareOf(config.rollout)
    }
    this.membership = new Membership(config, store, (partition) => actors[partition % config.shards], (change) => this.events.emit('partitions', change))
    try {
      await this.membership.start()
    } catch (error) {
      if (store !== this.sharedPartitionStore) await store.close()
      throw error
    }
  }

  /** The rollout in force now: config.rollout until setRollout changes it. */
  get rollout(): Rollout {
    return this.currentRollout
  }

  /**
   * Changes the rollout at run time, for messages submitted after it returns
   * (those already in the engine keep theirs): 'enforce', 'shadow', or
   * { enforce: share }. Throws ConfigError for a bad value, or for anything
   * but 'enforce' on an engine with versions. With strategies, `type` changes
   * one type's rollout only.
   */
  setRollout(rollout: Rollout, options?: { type?: string }): void {
    const problems: string[] = []
    const value = readRollout(new OptionReader({ rollout }, problems))
    if (options?.type !== undefined) problems.push(mustBe('type', 'left out on an engine without strategies', options.type))
    if (problems.length === 0 && this.versionLane !== undefined && value !== 'enforce') problems.push("rollout: must be 'enforce' with versions")
    if (problems.length > 0) throw new ConfigError(problems)
    this.currentRollout = value
    this.followShadowing(value !== 'enforce')
    const share = enforceShareOf(value)
    for (const lane of this.lanes) lane.enforceShare = share
  }

  /** With strategies: the engine of one message type (its stats, rollout, transaction helper); undefined for a type with no strategy, or without strategies. */
  strategy(_type: string): Engine | undefined {
    return undefined
  }

  /** The partition of a key (0..partitions-1): the hash owned mode and the partitioned transports route by. Throws INVALID_KEY for a bad key. */
  partitionOf(key: string, namespace?: string): number {
    return partitionOf(key, this.config.partitions, namespace)
  }

  /** Owned mode: the partitions this member handles now, sorted (empty in strict mode). */
  ownedPartitions(): number[] {
    return this.membership?.ownedPartitions() ?? []
  }

  /** Owned mode: `partitions` is emitted with { acquired, lost } whenever this member starts or stops handling partitions. */
  on(event: 'partitions', listener: (change: PartitionChange) => void): this {
    this.events.on(event, listener)
    return this
  }

  off(event: 'partitions', listener: (change: PartitionChange) => void): this {
    this.events.off(event, listener)
    return this
  }

  /**
   * @internal For idem's own sinks (metrics, the audit log, the shadow
   * report): `observer` gets one DecisionEvent per decision of every message,
   * on this thread, in the batches outcomes are handed out per turn. It must
   * not throw (a throw is counted in stats().observerFailures, and outcomes go
   * on), block, or keep the array. Returns the function that unsubscribes it.
   * With no observer, no event is built; `{ acted: true }` takes only the
   * decisions enforce acts on (every verdict but `new`), and while every
   * observer says so, no event is built for the others.
   */
  addObserver(observer: DecisionObserver, options?: ObserverOptions): () => void {
    return this.hub.add(observer, options)
  }

  /**
   * @internal A transport settled a batch's jobs, entries or messages by
   * these outcomes (settleOf): one call per batch, counted by action in
   * idem_transport_settled_total when metrics are on (nothing otherwise).
   */
  countSettled(transport: string, outcomes: readonly Outcome[]): void {
    this.metrics?.countSettled(transport, outcomes)
  }

  /** @internal The counters of every shard summed, with their store call timings when metrics are on (observe/store-timing.ts). */
  storeCallTimings(): Float64Array {
    const sum = countersFor(this.config)
    for (const lane of this.lanes) {
      lane.takeCounters()
      addCounters(sum, lane.stats.counters)
    }
    return sum
  }

  /** One message. Prefer processBatch for throughput: routing and hashing are per batch. */
  async process<P, R>(message: Message<P>, handler?: Handler<P, R>): Promise<Outcome<R>> {
    const [outcome] = await this.processBatch([message], handler)
    return outcome
  }

  /** Many messages; outcomes come back in the same order. */
  processBatch<P, R>(messages: readonly Message<P>[], handler?: Handler<P, R>): Promise<Outcome<R>[]> {
    return this.submit(messages, handler, undefined)
  }

  /**
   * @internal processBatch for transports that settle each message on its own:
   * `each` gets every outcome as soon as it is final (a duplicate does not wait
   * for the commit of a new key batched with it), then the promise resolves
   * with all of them.
   */
  async submit<P, R>(messages: readonly Message<P>[], handler: Handler<P, R> | undefined, each: OnOutcome | undefined, ride?: CommitRide): Promise<Outcome<R>[]> {
    if (this.auditHolds()) await this.auditLog!.writable()
    this.refuseBadCall(this.closing !== undefined, messages, handler)
    const n = messages.length
    const outcomes: Outcome[] = new Array(n)
    if (n === 0) return outcomes as Outcome<R>[]
    const router = this.router
    if (router.route(messages) > 0) this.invalidCount += this.settleInvalid(messages, outcomes, each)
    const { hashes, shards, keys, scopedKeys, fingerprints, errors } = router
    if (this.versionLane !== undefined) {
      const valid: number[] = []
      for (let i = 0; i < n; i++) if (errors[i] === undefined) valid.push(i)
      // run() reads the router's keys before it returns its promise: the next batch may reuse the arrays.
      await this.versionLane.run(messages as readonly Message[], valid, scopedKeys as readonly (string | undefined)[], outcomes, (handler ?? this.moduleHandler!.handle) as Handler, each)
      return outcomes as Outcome<R>[]
    }

    const jobs: (Job | undefined)[] = new Array(this.config.shards)
    const waits: Promise<void>[] = []
    const owned = this.config.mode === 'owned'
    const shardCount = this.config.shards
    for (let i = 0; i < n; i++) {
      if (errors[i] !== undefined) continue
      // Owned mode: the router answered the partition.
      const shard = owned ? shards[i] % shardCount : shards[i]
      let job = jobs[shard]
      if (job === undefined) {
        job = { keys, outcomes, remaining: 0, done: noop, handler: handler as Handler | undefined, each, ride }
        const created = job
        waits.push(new Promise<void>((resolve) => (created.done = resolve)))
        jobs[shard] = job
      }
      job.remaining++
      this.lanes[shard].push(scopedKeys[i] as string, hashes[2 * i], hashes[2 * i + 1], fingerprints[i], messages[i], job, i, shards[i])
    }
    for (let shard = 0; shard < jobs.length; shard++) if (jobs[shard] !== undefined) this.lanes[shard].start(n === 1)
    await Promise.all(waits)
    return outcomes as Outcome<R>[]
  }

  /** Throws for a call no message of which can be handled. */
  protected refuseBadCall(closed: boolean, messages: unknown, handler: unknown): void {
    if (closed) throw new IdemError(ErrorCode.ENGINE_CLOSED, 'the engine is closed; create a new one to process more messages')
    if (!Array.isArray(messages)) throw new IdemError(ErrorCode.INVALID_MESSAGE, `processBatch takes an array of messages, got ${typeof messages}`)
    if (handler !== undefined && typeof handler !== 'function') throw new IdemError(ErrorCode.NO_HANDLER, `handler must be a function, got ${typeof handler}`)
    if (handler === undefined && this.config.handler === undefined) {
      throw new IdemError(ErrorCode.NO_HANDLER, 'no handler: pass a function to process()/processBatch(), or configure a handler module')
    }
  }

  /**
   * @internal Whether a transport may carry this engine's commits on `client`
   * (submit's `ride`): actors on the main thread, each on a Redis store that
   * can send its commits on that connection (RedisStore.canCommitOn).
   */
  canCommitOn(client: Redis): boolean {
    return this.config.mode === 'strict' && this.config.threads === 0 && this.versionLane === undefined && this.localActors.every((actor) => actor.canCommitOn(client))
  }

  /**
   * SQL stores: processes one message with `work` run inside a database
   * transaction that also marks the key DONE, so the business writes and the
   * dedup record commit together or not at all (README "SQL stores").
   */
  async transaction<P, R, Tx = any>(message: Message<P>, work: TransactionWork<P, R, Tx>): Promise<Outcome<R>> {
    return this.process(message, this.transactional(work))
  }

  /** The handler transaction() runs: for processBatch, or a transport that takes a handler. */
  transactional<P, R, Tx = any>(work: TransactionWork<P, R, Tx>): Handler<P, R> {
    return this.sqlTransactions('transactions').handler(work)
  }

  /**
   * SQL stores: the position a transaction last saved for (source, partition)
   * with `savePosition`, or undefined: where a consumer starts reading again
   * (README "Consume positions"). With strategies, `type` names the strategy
   * whose store it is read from (needed when several have a SQL store).
   */
  positionOf(source: string, partition: string | number, type?: string): Promise<string | undefined> {
    if (type !== undefined) return Promise.reject(new ConfigError([mustBe('type', 'left out on an engine without strategies', type)]))
    try {
      return this.sqlTransactions('positions').positionOf(source, partition)
    } catch (error) {
      return Promise.reject(error)
    }
  }

  private sqlTransactions(what: string): SqlTransactions {
    const { store, ttlMs, keepResults } = this.config
    if (store.kind === 'memory' || store.kind === 'redis' || store.kind === 'custom') {
      throw new IdemError(ErrorCode.INVALID_CONFIG, `${what} need a SQL store (postgres, mysql or sqlite); this engine's store is ${store.kind}`)
    }
    this.transactions ??= new SqlTransactions(store, ttlMs, keepResults, this.clock)
    return this.transactions
  }

  /**
   * The key's record as the store holds it now (README "Admin"): absent, in
   * progress (with the lease left), done or unknown (with the TTL left). A
   * read: no lease is taken. Throws INVALID_KEY for a bad key or namespace,
   * ConfigError for bad options.
   */
  async inspect(key: string, options: { namespace?: string } = {}): Promise<KeyInspection> {
    const { scoped, shard } = this.adminKey('inspect', key, options, ['namespace'])
    const { view } = await this.admin(shard, { op: 'inspect', key: scoped })
    return inspectionOf(view)
  }

  /**
   * Removes the key's record (done or unknown) so its next delivery runs the
   * handler again, and drops it from the LRU of its shard. Refused with
   * KEY_IN_PROGRESS for a key in progress unless `force` (its handler may be
   * running; with force, its owner is not told). The check and the removal
   * are two store calls: a key claimed between them is removed too. Answers
   * whether a record was there.
   */
  async forget(key: string, options: { namespace?: string; force?: boolean } = {}): Promise<boolean> {
    const { scoped, shard, force } = this.adminKey('forget', key, options, ['namespace', 'force'])
    if (!force) {
      const { view } = await this.admin(shard, { op: 'inspect', key: scoped })
      if (view?.state === 'in-progress') {
        throw new IdemError(ErrorCode.KEY_IN_PROGRESS, `key ${JSON.stringify(key)} is in progress (lease ends in ${view.expiresInMs} ms): its handler may be running; forget it with force once its owner is gone, or wait`, { key })
      }
    }
    const { removed } = await this.admin(shard, { op: 'forget', key: scoped })
    this.recordAdmin({ at: Date.now(), action: force ? 'forget-forced' : 'forget', namespace: options.namespace, key, removed })
    return removed === 1
  }

  /**
   * Removes every record of the namespace, whatever its state (in-progress
   * keys too: purge is for a namespace nobody processes now), and its keys
   * from every shard's LRU. Answers how many records went.
   */
  async purge(options: { namespace: string }): Promise<number> {
    const problems: string[] = []
    const reader = new OptionReader(options, problems)
    reader.onlyKnown(['namespace'], 'purge options')
    const namespace = reader.string('namespace', undefined, 'the namespace to purge (a non-empty string)')
    if (problems.length > 0) throw new ConfigError(problems)
    const status = keyStatusOf(namespace)
    if (status !== KeyStatus.OK) throw invalidKey('namespace', status as BadKeyStatus, namespace)
    this.checkAdmin('purge')
    // A memory store lives in its shard, a custom one may: each purges its own. Every other store is shared: one call.
    const perShard = this.config.store.kind === 'memory' || this.config.store.kind === 'custom'
    const replies = await Promise.all(this.adminPorts.map((_, shard) => this.admin(shard, { op: 'purge', namespace, store: perShard || shard === 0 })))
    const removed = replies.reduce((sum, reply) => sum + reply.removed, 0)
    this.recordAdmin({ at: Date.now(), action: 'purge', namespace, removed })
    return removed
  }

  /** audit whenFull 'backpressure': whether a full audit buffer holds the next batch back (until auditLog.writable()). */
  protected auditHolds(): boolean {
    return this.auditLog?.full === true && this.config.audit!.whenFull === 'backpressure'
  }

  /** @internal `recorder` hears of every forget and purge done through this engine (the audit log writes them). */
  addAdminRecorder(recorder: (action: AdminAction) => void): void {
    this.adminRecorders.push(recorder)
  }

  private recordAdmin(action: AdminAction): void {
    for (const recorder of this.adminRecorders) recorder(action)
  }

  /** Reads an admin call's options and routes its key: the key as the store names it, and its shard. */
  private adminKey(what: string, key: string, options: { namespace?: string; force?: boolean }, known: readonly string[]): { scoped: string; shard: number; force: boolean } {
    const problems: string[] = []
    const reader = new OptionReader(options, problems)
    reader.onlyKnown(known, `${what} options`)
    const force = reader.boolean('force', false)
    if (problems.length > 0) throw new ConfigError(problems)
    this.checkAdmin(what)
    const namespace = reader.value('namespace')
    const router = this.router
    router.route([namespace === undefined ? { key } : ({ key, namespace } as Message)])
    const error = router.errors[0]
    if (error !== undefined) throw error
    return { scoped: router.scopedKeys[0] as string, shard: router.shards[0], force }
  }

  private checkAdmin(what: string): void {
    if (this.closing !== undefined) throw new IdemError(ErrorCode.ENGINE_CLOSED, `the engine is closed; ${what} needs an open engine (or \`idem keys ${what}\`)`)
    if (this.config.mode === 'owned' || this.versionLane !== undefined) {
      throw new IdemError(ErrorCode.INVALID_CONFIG, `engine.${what} is not available in owned mode or with versions yet; use \`idem keys ${what}\` on the store`)
    }
  }

  private async admin(shard: number, request: AdminRequest): Promise<AdminReply> {
    const reply = await this.adminPorts[shard].admin(request)
    if (reply.error !== undefined) throw new IdemError(reply.error.code, reply.error.message)
    return reply
  }

  stats(): EngineStats {
    for (const lane of this.lanes) lane.takeCounters()
    const shards = this.lanes.map((lane) => layerStats(lane.stats.counters, lane.stats.verdicts))
    const counters = new Float64Array(COUNTER_COUNT)
    const verdicts = new Float64Array(VERDICT_COUNT)
    for (const lane of this.lanes) {
      addCounters(counters, lane.stats.counters)
      addCounters(verdicts, lane.stats.verdicts)
    }
    verdicts[VerdictCode.INVALID] += this.invalidCount
    const totals = layerStats(counters, verdicts)
    const versionCounts = this.versionLane?.counts
    if (versionCounts !== undefined) {
      const v = totals.verdicts
      v.new += versionCounts.new
      v.duplicate += versionCounts.duplicate
      v.stale += versionCounts.stale
      v.inFlight += versionCounts.inFlight
      v.invalid += versionCounts.invalid
      totals.lruHits += versionCounts.lruHits
      totals.storeOperations += versionCounts.storeOperations
      totals.fencedWrites += versionCounts.fencedWrites
      totals.storeFailures += versionCounts.storeFailures
      totals.storeRetries += this.versionStore!.health.retries
    }
    // Owned mode: one filter per partition held, sized for the partition's share of the keys.
    const filters = this.membership === undefined ? this.config.shards : this.membership.ownedPartitions().length
    const geometry = bloomGeometry(Math.ceil(this.config.bloom.expectedItems / (this.membership === undefined ? this.config.shards : this.config.partitions)), this.config.bloom.falsePositiveRate)
    const judged = totals.bloomFalsePositives + totals.bloomNegatives
    const stats: EngineStats = {
      totals,
      shards,
      workerRestarts: this.threads.reduce((sum, thread) => sum + thread.restarts, 0),
      observerFailures: this.hub.failures,
      ...(this.auditLog === undefined ? {} : { audit: { ...this.auditLog.stats } }),
      bloom: {
        bitsPerShard: geometry.bits,
        k: geometry.k,
        bytes: 2 * geometry.bytesPerGeneration * filters,
        measuredFalsePositiveRate: judged === 0 ? 0 : totals.bloomFalsePositives / judged,
      },
    }
    if (this.membership !== undefined) stats.ownership = { ...this.membership.stats, owned: this.membership.ownedPartitions().length }
    return stats
  }

  /**
   * Stops taking messages, aborts the signal every running handler got, and
   * lets what is queued finish, for at most `timeoutMs`. At that deadline every
   * message still without an outcome gets one with ENGINE_CLOSED (in-flight,
   * or new with the error for a handler still running: its claim is left to
   * lapse, counted in droppedSettlements), so no caller waits longer. Then
   * stops threads and stores, within the same bound. Safe to call twice.
   */
  close(options: { timeoutMs?: number } = {}): Promise<void> {
    let timeoutMs: number
    try {
      timeoutMs = closeTimeoutOf(options)
    } catch (error) {
      return Promise.reject(error)
    }
    this.closing ??= this.closeWithin(timeoutMs)
    return this.closing
  }

  private async closeWithin(timeoutMs: number): Promise<void> {
    const deadline = Date.now() + timeoutMs
    this.closeSignal.abort(new IdemError(ErrorCode.ENGINE_CLOSED, 'the engine is closing'))
    const drained = await beforeDeadline(Promise.all([...this.lanes.map((lane) => lane.idle()), this.versionLane?.idle()]), deadline)
    if (!drained) {
      const error = { code: ErrorCode.ENGINE_CLOSED, message: `the engine closed after waiting ${timeoutMs} ms (close timeoutMs) before this message had its outcome; a claim it held is left to lapse, and a redelivery after that runs it` }
      for (const lane of this.lanes) lane.abandon(error)
      this.versionLane?.abandon(error)
    }
    const stopped = Promise.all([
      // Owned mode: flush, snapshot and release every partition, then close the partitions' store.
      this.membership?.close().then(() => (this.partitionStore === this.sharedPartitionStore ? undefined : this.partitionStore!.close())),
      ...this.threads.map((thread) => thread.close()),
      Promise.all(this.localActors.map((actor) => actor.close())).then(() => this.storeFactory?.close()),
      this.transactions?.close(),
      this.versionStore?.close(),
    ])
    // Stores and threads get what is left of the bound (at least a second to say goodbye to a server).
    await beforeDeadline(stopped, Math.max(deadline, Date.now() + 1000))
    // Last: the decisions of the drained work are in the buffer.
    await this.auditLog?.close()
    clearInterval(this.shadowReportTimer)
    const reportFile = this.config.shadowReport?.file
    if (reportFile !== undefined && this.shadowEvidence !== undefined) this.writeShadowReport(reportFile)
    this.metrics?.close()
  }

  private settleInvalid(messages: readonly unknown[], outcomes: Outcome[], each: OnOutcome | undefined): number {
    let count = 0
    const { errors } = this.router
    for (let i = 0; i < messages.length; i++) {
      const error = errors[i]
      if (error === undefined) continue
      outcomes[i] = invalidOutcome(readableKey(messages[i]), error)
      each?.(i, outcomes[i])
      if (this.hub.active) this.hub.emit(outcomes[i].key, readableNamespace(messages[i]), outcomes[i].verdict, LayerCode.INPUT, true, undefined, error.code)
      count++
    }
    return count
  }
}

function layerStats(c: Float64Array, v: Float64Array): LayerStats {
  return {
    lruHits: c[Counter.LRU_HITS],
    bloomNegatives: c[Counter.BLOOM_NEGATIVES],
    bloomPositives: c[Counter.BLOOM_POSITIVES],
    bloomFalsePositives: c[Counter.BLOOM_FALSE_POSITIVES],
    storeOperations: c[Counter.STORE_OPERATIONS],
    fencedWrites: c[Counter.FENCED_WRITES],
    bloomRotations: c[Counter.BLOOM_ROTATIONS],
    storeRetries: c[Counter.STORE_RETRIES],
    storeFailures: c[Counter.STORE_FAILURES],
    lateSettlements: c[Counter.LATE_SETTLEMENTS],
    droppedSettlements: c[Counter.DROPPED_SETTLEMENTS],
    shadowRuns: c[Counter.SHADOW_RUNS],
    handlerTimeouts: c[Counter.HANDLER_TIMEOUTS],
    outcomesUnknown: c[Counter.OUTCOMES_UNKNOWN],
    reconciledDone: c[Counter.RECONCILED_DONE],
    reconciledNotDone: c[Counter.RECONCILED_NOT_DONE],
    reconcileUnanswered: c[Counter.RECONCILE_UNANSWERED],
    storeResets: c[Counter.STORE_RESETS],
    evictedKeys: c[Counter.EVICTED_KEYS],
    groupCommits: c[Counter.GROUP_COMMITS],
    notOwned: c[Counter.NOT_OWNED],
    leaseRenewals: c[Counter.LEASE_RENEWALS],
    verdicts: {
      new: v[VerdictCode.NEW],
      duplicate: v[VerdictCode.DUPLICATE],
      inFlight: v[VerdictCode.IN_FLIGHT],
      conflict: v[VerdictCode.CONFLICT],
      invalid: v[VerdictCode.INVALID],
      stale: v[VerdictCode.STALE],
    },
  }
}

function noop(): void {}

/** close()'s bound, checked like every option. */
function closeTimeoutOf(options: unknown): number {
  const problems: string[] = []
  const timeoutMs = new OptionReader(options, problems).integer('timeoutMs', DEFAULT_CLOSE_TIMEOUT_MS, 0, MAX_LEASE_MS)
  if (problems.length > 0) throw new ConfigError(problems)
  return timeoutMs
}

/** Whether `work` ended before `deadline` (ms since the epoch); it is not stopped either way. */
async function beforeDeadline(work: Promise<unknown>, deadline: number): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined
  const late = new Promise<boolean>((resolve) => (timer = setTimeout(resolve, Math.max(0, deadline - Date.now()), false)))
  try {
    return await Promise.race([work.then(() => true), late])
  } finally {
    clearTimeout(timer)
  }
}

/** The namespace of an invalid message for its decision event, when it is a string that reads without throwing. */
function readableNamespace(message: unknown): string | undefined {
  try {
    const namespace = (message as Message | null)?.namespace
    return typeof namespace === 'string' ? namespace : undefined
  } catch {
    return undefined
  }
}

/** The key of an invalid message for its outcome, or undefined when reading it throws (a getter, a Proxy): the router already said why. */
export function readableKey(message: unknown): unknown {
  try {
    return (message as Message | null)?.key
  } catch {
    return undefined
  }
}
