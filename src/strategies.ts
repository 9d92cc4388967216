import { addCounters, type CommitRide } from './actor/shard-cycle.js'
import type { AdminAction } from './audit/audit-log.js'
import type { OnOutcome } from './actor/shard-lane.js'
import type { Redis } from 'ioredis'
import type { Clock } from './clock.js'
import type { EngineConfig, Rollout, StrategiesConfig } from './config.js'
import { Engine, readableKey, type EngineStats, type LayerStats } from './engine.js'
import { ConfigError, ErrorCode, errorText, IdemError } from './errors.js'
import type { Handler, Message, Outcome } from './message.js'
import type { DecisionObserver } from './observe/decision-event.js'
import type { ObserverOptions } from './observe/decision-hub.js'
import type { KeyInspection } from './store/key-inspection.js'
import { invalidOutcome } from './outcome.js'
import type { TransactionWork } from './store/sql/sql-transactions.js'
import { mustBe, show } from './validation.js'

/** Starts the engine of every strategy (all or none), then the engine that routes to them. */
export async function startStrategies(config: EngineConfig, clock: Clock): Promise<Engine> {
  const strategies = config.strategies!
  const engines = new Map<string, Engine>()
  try {
    for (const [type, typeConfig] of strategies.types) {
      const engine = new Engine(typeConfig, clock)
      engines.set(type, engine)
      await engine.start()
    }
  } catch (error) {
    await Promise.all([...engines.values()].map((engine) => engine.close({ timeoutMs: 0 }).catch(() => {})))
    throw error
  }
  const engine = new StrategyEngine(config, clock, strategies, engines)
  try {
    await engine.startSinks()
  } catch (error) {
    await engine.close({ timeoutMs: 0 }).catch(() => {})
    throw error
  }
  return engine
}

/**
 * An engine of one engine per message type: a batch is split by type, each
 * part goes to its type's engine (its store, window, rollout), and the
 * outcomes come back in the batch's order.
 */
class StrategyEngine extends Engine {
  private readonly engines: Engine[]
  /** Index in engines by type. */
  private readonly indexOf = new Map<string, number>()
  /** The engine of unknown types, or -1 when they are invalid. */
  private readonly fallback: number
  private readonly typeOf: StrategiesConfig['typeOf']
  private unknownCount = 0
  private closed = false

  constructor(config: EngineConfig, clock: Clock, strategies: StrategiesConfig, byType: Map<string, Engine>) {
    super(config, clock)
    this.engines = [...byType.values()]
    for (const type of byType.keys()) this.indexOf.set(type, this.indexOf.size)
    this.fallback = strategies.unknownType === 'default' ? this.indexOf.get('default')! : -1
    this.typeOf = strategies.typeOf
  }

  override strategy(type: string): Engine | undefined {
    const index = this.indexOf.get(type)
    return index === undefined ? undefined : this.engines[index]
  }

  /** The decisions of every type's engine. Messages of an unknown type, refused here before any engine, give no event. */
  override addObserver(observer: DecisionObserver, options?: ObserverOptions): () => void {
    const removers = this.engines.map((engine) => engine.addObserver(observer, options))
    return () => {
      for (const remove of removers) remove()
    }
  }

  /** Admin calls go to one type's engine (engine.strategy(type)): each type's engine tells the recorder. */
  override addAdminRecorder(recorder: (action: AdminAction) => void): void {
    for (const engine of this.engines) engine.addAdminRecorder(recorder)
  }

  override async startSinks(): Promise<void> {
    await super.startSinks()
    this.followShadowing(this.engines.some((engine) => engine.rollout !== 'enforce'))
  }

  // Each type keeps its records in its own store: an operator names the type (engine.strategy(type).inspect(...)).
  override async inspect(): Promise<KeyInspection> {
    throw this.adminOfType('inspect')
  }

  override async forget(): Promise<boolean> {
    throw this.adminOfType('forget')
  }

  override async purge(): Promise<number> {
    throw this.adminOfType('purge')
  }

  private adminOfType(what: string): IdemError {
    return new IdemError(ErrorCode.INVALID_CONFIG, `engine.${what} needs the engine of one type with strategies: engine.strategy(type).${what}(...) (types: ${[...this.indexOf.keys()].join(', ')})`)
  }

  override setRollout(rollout: Rollout, options?: { type?: string }): void {
    const type = options?.type
    if (type === undefined) {
      super.setRollout(rollout)
      for (const engine of this.engines) engine.setRollout(rollout)
      return
    }
    const engine = this.strategy(type)
    if (engine === undefined) throw new ConfigError([mustBe('type', `a type of strategies (${[...this.indexOf.keys()].join(', ')})`, type)])
    engine.setRollout(rollout)
    this.followShadowing(this.engines.some((e) => e.rollout !== 'enforce'))
  }

  override async submit<P, R>(messages: readonly Message<P>[], handler: Handler<P, R> | undefined, each: OnOutcome | undefined, ride?: CommitRide): Promise<Outcome<R>[]> {
    // The audit log is this engine's (one for every type): its back-pressure holds batches here.
    if (this.auditHolds()) await this.auditLog!.writable()
    this.refuseBadCall(this.closed, messages, handler)
    const n = messages.length
    const outcomes: Outcome[] = new Array(n)
    const which = new Int32Array(n)
    let first = -2
    let mixed = false
    for (let i = 0; i < n; i++) {
      const index = this.engineIndex(messages[i], i, outcomes, each)
      which[i] = index
      if (first === -2) first = index
      else if (index !== first) mixed = true
    }
    // The common case, one type per batch, goes through as it came.
    if (!mixed && first >= 0) return this.engines[first].submit(messages, handler, each, ride)
    const parts = new Map<number, number[]>()
    for (let i = 0; i < n; i++) {
      if (which[i] < 0) continue
      let part = parts.get(which[i])
      if (part === undefined) parts.set(which[i], (part = []))
      part.push(i)
    }
    await Promise.all(
      [...parts].map(async ([index, slots]) => {
        const partEach: OnOutcome | undefined = each === undefined ? undefined : (j, outcome) => each(slots[j], outcome)
        const partRide: CommitRide | undefined = ride === undefined ? undefined : { client: ride.client, unconfirmed: (j, error) => ride.unconfirmed(slots[j], error) }
        const got = await this.engines[index].submit(
          slots.map((i) => messages[i]),
          handler,
          partEach,
          partRide,
        )
        for (let j = 0; j < slots.length; j++) outcomes[slots[j]] = got[j]
      }),
    )
    return outcomes as Outcome<R>[]
  }

  /** The engine of one message, or -1 with its invalid outcome set when it has none. */
  private engineIndex(message: Message, i: number, outcomes: Outcome[], each: OnOutcome | undefined): number {
    let type: unknown
    try {
      type = this.typeOf(message)
    } catch (error) {
      return this.unknown(message, i, outcomes, each, `typeOf threw: ${errorText(error)}`)
    }
    const index = this.indexOfType(type)
    if (index >= 0) return index
    return this.unknown(message, i, outcomes, each, `type: must be a type of strategies (${[...this.indexOf.keys()].join(', ')}), ${this.indexOf.has('default') ? "as unknownType is 'invalid'" : 'as there is no default strategy'}, got ${show(type)}`)
  }

  private unknown(message: Message, i: number, outcomes: Outcome[], each: OnOutcome | undefined, why: string): -1 {
    const key = readableKey(message)
    outcomes[i] = invalidOutcome(key, new IdemError(ErrorCode.UNKNOWN_TYPE, why, typeof key === 'string' ? { key } : {}))
    each?.(i, outcomes[i])
    this.unknownCount++
    return -1
  }

  override canCommitOn(client: Redis): boolean {
    return this.engines.every((engine) => engine.canCommitOn(client))
  }

  /** The transaction helper of the message's type: its store must be SQL. */
  override async transaction<P, R, Tx = any>(message: Message<P>, work: TransactionWork<P, R, Tx>): Promise<Outcome<R>> {
    const index = this.indexOfMessage(message)
    // A message with no engine gets its invalid outcome from process; no handler runs.
    return index < 0 ? this.process(message, () => undefined as R) : this.engines[index].transaction(message, work)
  }

  /** For a batch: each message runs in a transaction of its type's SQL store (HANDLER_FAILED with INVALID_CONFIG for a type whose store is not SQL). */
  override transactional<P, R, Tx = any>(work: TransactionWork<P, R, Tx>): Handler<P, R> {
    const handlers = this.engines.map((engine) => {
      try {
        return engine.transactional(work)
      } catch (error) {
        return error as Error
      }
    })
    if (handlers.every((handler) => handler instanceof Error)) throw handlers[0]
    return (message, context) => {
      // Only messages that have an engine reach a handler.
      const handler = handlers[this.indexOfMessage(message)]
      if (handler instanceof Error) throw handler
      return handler(message, context)
    }
  }

  /** The position saved in the SQL store of `type`, or of the one strategy with a SQL store when type is left out. */
  override positionOf(source: string, partition: string | number, type?: string): Promise<string | undefined> {
    const sql = this.engines.filter((engine) => !['memory', 'redis', 'custom'].includes(engine.config.store.kind))
    const engine = type === undefined ? (sql.length === 1 ? sql[0] : undefined) : this.strategy(type)
    if (engine === undefined) {
      const rule = type === undefined ? `given (${sql.length} strategies have a SQL store)` : `a type of strategies (${[...this.indexOf.keys()].join(', ')})`
      return Promise.reject(new ConfigError([mustBe('type', rule, type)]))
    }
    return engine.positionOf(source, partition)
  }

  /** The index of the message's engine, or -1 when it has none (a typeOf that throws has none). */
  private indexOfMessage(message: Message): number {
    let type: unknown
    try {
      type = this.typeOf(message)
    } catch {
      return -1
    }
    return this.indexOfType(type)
  }

  /** The index of a type's engine: its strategy's, else the default's for an unknown type, else -1. */
  private indexOfType(type: unknown): number {
    return (typeof type === 'string' ? this.indexOf.get(type) : undefined) ?? this.fallback
  }

  /** Every type's store call timings (their engines time them when metrics are on here). */
  override storeCallTimings(): Float64Array {
    const sum = super.storeCallTimings()
    for (const engine of this.engines) addCounters(sum, engine.storeCallTimings())
    return sum
  }

  /** Every type's counts added up (and the messages of no type, as invalid); each type's own: engine.strategy(type).stats(). */
  override stats(): EngineStats {
    const all = this.engines.map((engine) => engine.stats())
    const totals = all.map((stats) => stats.totals).reduce(addLayers)
    totals.verdicts.invalid += this.unknownCount
    const judged = totals.bloomFalsePositives + totals.bloomNegatives
    return {
      totals,
      shards: all.flatMap((stats) => stats.shards),
      workerRestarts: all.reduce((sum, stats) => sum + stats.workerRestarts, 0),
      observerFailures: all.reduce((sum, stats) => sum + stats.observerFailures, 0),
      bloom: {
        ...all[0].bloom,
        bytes: all.reduce((sum, stats) => sum + stats.bloom.bytes, 0),
        measuredFalsePositiveRate: judged === 0 ? 0 : totals.bloomFalsePositives / judged,
      },
      ...(this.auditLog === undefined ? {} : { audit: { ...this.auditLog.stats } }),
    }
  }

  override async close(options: { timeoutMs?: number } = {}): Promise<void> {
    this.closed = true
    await Promise.all([super.close(options), ...this.engines.map((engine) => engine.close(options))])
  }
}

function addLayers(a: LayerStats, b: LayerStats): LayerStats {
  const sum = { ...a, verdicts: { ...a.verdicts } } as Record<string, unknown>
  for (const [field, value] of Object.entries(b)) {
    if (typeof value === 'number') sum[field] = (sum[field] as number) + value
  }
  const verdicts = sum.verdicts as Record<string, number>
  for (const [verdict, count] of Object.entries(b.verdicts)) verdicts[verdict] += count
  return sum as unknown as LayerStats
}
