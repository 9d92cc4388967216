import { randomBytes } from 'node:crypto'
import { hostname } from 'node:os'
import { FALSE_POSITIVE_RATES, maxBloomItems } from './bloom/bloom-filter.js'
import { MAX_PARTITIONS } from './owned/partition-of.js'
import { resolveRedisStore, type RedisStoreConfig, type RedisStoreOptions } from './store/redis/redis-options.js'
import type { Message, ReconcileHook } from './message.js'
import type { DedupStore } from './store/store.js'
import { isSqlKind, resolveSqlStore, type SqlStoreConfig, type SqlStoreOptions } from './store/sql/sql-options.js'
import { ConfigError } from './errors.js'
import { accessSync, constants as fsConstants } from 'node:fs'
import { dirname, resolve as resolvePath } from 'node:path'
import { readAuditConfig, type AuditConfig, type AuditOptions } from './audit/audit-config.js'
import { OptionReader, quotedChoices } from './validation.js'
import { readVersionRules, type VersionOptions, type VersionRules } from './versions/version-rules.js'
import { DEFAULT_POLL_MS, readWaitPolicy, type WaitPolicy } from './wait-policy.js'

/**
 * Which store confirms keys: `memory` (one process, tests), `redis` (shared by
 * every consumer), or a SQL store — `postgres`, `mysql`, `sqlite` — whose
 * transaction helper commits the dedup record with the business writes.
 */
export type StoreOptions = { kind: 'memory' } | RedisStoreOptions | SqlStoreOptions | CustomStoreOptions
export type StoreConfig = { kind: 'memory' } | RedisStoreConfig | SqlStoreConfig | CustomStoreOptions

/**
 * A store of your own (`idem/store`: extend StoreBase, prove it with
 * storeConformanceCases). `create` makes the store of each shard; the engine
 * closes each at close(). threads: 0 only: a function cannot cross into a
 * worker thread.
 */
export interface CustomStoreOptions {
  kind: 'custom'
  create: (shard: number) => DedupStore
}

/** Options of `createEngine`. Every field is optional; the defaults suit one process. */
export interface EngineOptions {
  /**
   * Number of shard actors. A key always maps to the same shard for a given
   * count, so one key's messages are handled in order by one actor.
   * @default 8
   */
  shards?: number
  /**
   * Worker threads hosting the actors. 0 runs every actor on the main thread;
   * N spreads the shards over N piscina threads (shard s on thread s % N). Work
   * crosses threads once per shard batch, never per message.
   * @default 0
   */
  threads?: number
  /**
   * How long a DONE record keeps a key settled (the dedup window), in ms. Also the
   * span of one bloom generation, so the filter remembers a key for at least this long.
   * @default 86_400_000 (24 h)
   */
  ttlMs?: number
  /**
   * Lease of an IN_PROGRESS claim, in ms. A handler running longer has its lease
   * renewed every leaseMs/3; a crashed owner's claim is free again after it lapses.
   * @default 30_000
   */
  leaseMs?: number
  /** Sizing of each shard's bloom filter (the configured numbers are for the whole engine). */
  bloom?: {
    /** Keys expected within one dedup window, across all shards. Cost: bits ≈ -n·ln(p)/ln(2)², twice (two generations). @default 1_000_000 */
    expectedItems?: number
    /** Target false-positive rate at expectedItems. A false positive costs one store check, never a message. @default 0.01 */
    falsePositiveRate?: number
  }
  /** Settled keys kept in memory (across all shards): a hit is a duplicate with no store I/O. 0 disables. @default 100_000 */
  lru?: { maxKeys?: number }
  /** @default { kind: 'memory' } */
  store?: StoreOptions
  /**
   * `enforce` acts on verdicts (skips duplicates). `shadow` is log-only: every
   * message runs and is settled as its handler says, and idem records what
   * enforce would have done (`outcome.shadow`). `{ enforce: 0.25 }` enforces
   * for a stable 25% of keys (by key hash: the same on every process and every
   * redelivery) and shadows the rest. `engine.setRollout` changes it at run time.
   * @default 'enforce'
   */
  rollout?: Rollout
  /** The audit log of decisions (README "Audit log"); off when absent. */
  audit?: AuditOptions
  /**
   * The shadow report (README "Rolling out"): what enforce would have done
   * with the decisions it did not act on. Kept whenever the rollout is not
   * 'enforce'; `file` also writes it as JSON every `everyMs` and at close,
   * for `idem shadow report FILE`.
   */
  shadowReport?: ShadowReportOptions
  /**
   * What a message whose key another owner holds gets. `'defer'`: `in-flight`
   * at once (the transport delivers it again later). `{ wait: { maxMs,
   * pollMs? } }`: the shard asks the store again every pollMs (default 50)
   * for up to maxMs, and the message gets the owner's outcome: `duplicate`
   * with its result once it committed, `new` (run here) once it released the
   * key or its lease lapsed, `in-flight` if maxMs passes first. Other keys
   * never wait for it. Strict mode only.
   * @default 'defer'
   */
  inFlight?: 'defer' | { wait: { maxMs: number; pollMs?: number } }
  /**
   * Prometheus metrics (README "Metrics") through prom-client, an optional
   * peer dependency (install it). `true`: prom-client's default registry;
   * `{ registry, maxNamespaces }`: your Registry, and at most this many
   * namespace label values (the rest count as `other`; default 100).
   * @default false
   */
  metrics?: boolean | MetricsOptions
  /**
   * Path or file URL of an ES module whose default export (or `handle` export) is the
   * handler. It runs inside the worker thread next to its actor (CPU-heavy handlers),
   * or on the main thread when threads is 0. A function passed to process() wins.
   */
  handler?: string | URL
  /** Most messages one shard actor takes from its mailbox at once (one store call). @default 1024 */
  maxBatch?: number
  /**
   * Most messages one shard holds at once between its mailbox and their
   * outcomes: being decided, run or settled. Handlers of one shard run
   * concurrently up to this bound, and each message settles when its own
   * handler ends. @default 2048
   */
  maxInFlightPerShard?: number
  /** Keep handler results with DONE records and return them with `duplicate` verdicts. @default true */
  keepResults?: boolean
  /**
   * A handler still running after this many ms has its context.signal aborted
   * (HANDLER_TIMEOUT), its slot freed, and its key marked UNKNOWN: the effect
   * may or may not have happened, so the key is neither run again nor acked
   * until `reconcile` or an operator decides. 0 turns it off.
   * @default 0
   */
  handlerTimeoutMs?: number
  /**
   * Asked about a key found UNKNOWN when a delivery of it arrives: 'done',
   * 'not-done' or 'unknown' (see ReconcileHook). Function handlers only; a
   * handler module may export `reconcile` for the messages it handles.
   */
  reconcile?: ReconcileHook
  /** Times the hook is asked about one key before it is left to an operator (`idem keys resolve`). @default 8 */
  reconcileAttempts?: number
  /** Wait before asking again about a key the hook could not answer; doubles per attempt, at most 5 minutes. @default 1000 */
  reconcileBackoffMs?: number
  /**
   * `strict`: every new key is claimed in the store before its handler runs;
   * any number of processes may share one queue. `owned`: the key space is
   * split into `partitions` that the members of `group` share, each held by
   * one member under a fenced epoch; the transport is partitioned the same
   * way, a "never seen" bloom answer runs the handler with no store call, and
   * DONE records are written behind in group commits (README "Owned mode").
   * @default 'strict'
   */
  mode?: 'strict' | 'owned'
  /** Owned mode: partitions of the key space, fixed per deployment (recorded in the store). @default 64 */
  partitions?: number
  /** Owned mode: the members that share the partitions. @default 'default' */
  group?: string
  /** Owned mode: leases, group commits, snapshots. */
  ownership?: OwnershipOptions
  /**
   * Version-aware keys (README "Versions and state machines"): a message runs
   * when its version is newer than the one applied for its key, not only when
   * its key is new. Strict mode, threads 0; a memory, single-Redis or SQL store.
   */
  versions?: VersionOptions
  /**
   * A strategy per message type (README "Strategies"): each type named here
   * runs in an engine of its own, with these options over the others (its
   * own store, dedup window, rollout). `default` serves the types not named.
   * Strict mode only.
   */
  strategies?: Record<string, StrategyOptions>
  /** The type of a message, to pick its strategy. @default the message's `type` field, else its namespace */
  typeOf?: (message: Message) => string | undefined
  /**
   * What a message of a type with no strategy gets: `'default'` runs it with
   * strategies.default (or, without one, these options as they are);
   * `'invalid'` answers it invalid with UNKNOWN_TYPE.
   * @default 'default' when strategies has a default, else 'invalid'
   */
  unknownType?: 'default' | 'invalid'
}

/** What one message type may set for itself; every other option is the engine's. */
export interface StrategyOptions {
  store?: StoreOptions
  ttlMs?: number
  rollout?: Rollout
  keepResults?: boolean
  /** Only 'strict': an owned engine partitions its transport, which the engines of several types cannot share. */
  mode?: 'strict'
}

/** Strategies after validation: the config of each type's engine. */
export interface StrategiesConfig {
  /** By type; `default` is there when unknown types use it. */
  types: Map<string, EngineConfig>
  typeOf: (message: Message) => unknown
  unknownType: 'default' | 'invalid'
}

export interface OwnershipOptions {
  /** A member's heartbeat and its partition leases last this long; a crashed member's partitions move after it. Renewed every leaseMs/3. @default 10_000 */
  leaseMs?: number
  /** Longest wait of a settled message for its group commit while two of its shard's flushes are out (with fewer out it goes at once). @default 5 */
  flushMs?: number
  /** A group commit goes at once when this many keys wait. @default 1024 */
  flushMaxKeys?: number
  /** How often each owned partition's bloom filter is snapshotted (a new owner replays less of the log). 0: never. @default 60_000 */
  snapshotEveryMs?: number
  /** This member's name in the group; unique per process. @default `${hostname}-${pid}-${random}` */
  memberId?: string
}

export type Rollout = 'enforce' | 'shadow' | { enforce: number }

export interface ShadowReportOptions {
  /** Samples kept per reason, the most recent. @default 20 */
  samples?: number
  /** A JSON file the report is written to (atomically), every everyMs and at close. */
  file?: string
  /** @default 10_000 */
  everyMs?: number
}

export interface ShadowReportConfig {
  samples: number
  file?: string
  everyMs: number
}

export interface MetricsOptions {
  /** A prom-client Registry. @default prom-client's default registry */
  registry?: unknown
  /** Namespace label values kept apart; later namespaces count as `other`. @default 100 */
  maxNamespaces?: number
}

/** Metrics on: the registry stays on the main thread (worker threads only time their store calls). */
export interface MetricsConfig {
  /** Undefined: prom-client's default registry. */
  registry?: object
  maxNamespaces: number
}

/** Options after defaults and validation: what the engine actually runs with. */
export type EngineConfig = Required<Omit<EngineOptions, 'bloom' | 'lru' | 'store' | 'handler' | 'reconcile' | 'ownership' | 'versions' | 'inFlight' | 'strategies' | 'typeOf' | 'unknownType' | 'metrics' | 'audit' | 'shadowReport'>> & {
  ownership: Required<OwnershipOptions>
  /** waitMs 0: 'defer'. */
  inFlight: WaitPolicy
  bloom: Required<NonNullable<EngineOptions['bloom']>>
  lru: Required<NonNullable<EngineOptions['lru']>>
  store: StoreConfig
  /** The handler module as a path or a URL's href: a URL object does not cross into worker threads. */
  handler?: string
  /** Stays on the main thread: worker threads get the config without it (a function does not cross). */
  reconcile?: ReconcileHook
  /** Version-aware keys; absent for plain keys. */
  versions?: VersionRules
  /** A strategy per message type; absent for one engine. */
  strategies?: StrategiesConfig
  /** Absent: the report is kept (with DEFAULT_SHADOW_SAMPLES) only while the rollout is not 'enforce', and not written. */
  shadowReport?: ShadowReportConfig
  /** Absent: metrics off. */
  metrics?: MetricsConfig
  /** Store calls are timed into the counters (store-timing.ts): metrics are on here, or, for a type's engine, on the engine of strategies it serves. */
  timeStoreCalls?: boolean
  /** The audit log; stays on the main thread (worker threads get the config without it). */
  audit?: AuditConfig
}

export const defaults = {
  shards: 8,
  threads: 0,
  ttlMs: 86_400_000,
  leaseMs: 30_000,
  bloom: { expectedItems: 1_000_000, falsePositiveRate: 0.01 },
  lru: { maxKeys: 100_000 },
  store: { kind: 'memory' },
  rollout: 'enforce',
  inFlight: { waitMs: 0, pollMs: DEFAULT_POLL_MS },
  maxBatch: 1024,
  maxInFlightPerShard: 2048,
  keepResults: true,
  handlerTimeoutMs: 0,
  reconcileAttempts: 8,
  reconcileBackoffMs: 1000,
  mode: 'strict',
  partitions: 64,
  group: 'default',
  ownership: { leaseMs: 10_000, flushMs: 5, flushMaxKeys: 1024, snapshotEveryMs: 60_000 },
} as const satisfies Omit<EngineConfig, 'handler' | 'reconcile' | 'ownership'> & { ownership: Omit<Required<OwnershipOptions>, 'memberId'> }

const MAX_THREADS = 256
const MAX_SHARDS = 65_536
/** The longest ttlMs. */
export const MAX_DURATION_MS = 2 ** 42
/** The longest leaseMs: a lease is renewed on a timer, and Node's timers hold at most 2^31 - 1 ms. */
export const MAX_LEASE_MS = 2 ** 31 - 1
const STORE_KINDS = ['memory', 'redis', 'postgres', 'mysql', 'sqlite', 'custom'] as const

/** Validate once, at start; every bad field is named in one ConfigError. */
export function resolveConfig(options: unknown = {}): EngineConfig {
  const problems: string[] = []
  const config = readConfig(options, problems)
  if (problems.length > 0) throw new ConfigError(problems)
  return config
}

function readConfig(options: unknown, problems: string[]): EngineConfig {
  const o = new OptionReader(options, problems)
  o.onlyKnown([...Object.keys(defaults), 'handler', 'reconcile', 'versions', 'strategies', 'typeOf', 'unknownType', 'metrics', 'audit', 'shadowReport'], 'createEngine')
  const shards = o.integer('shards', defaults.shards, 1, MAX_SHARDS)
  const threads = o.integer('threads', defaults.threads, 0, MAX_THREADS)
  if (threads > shards) o.mustBe('threads', `at most shards (${shards}), as a thread with no shard would sit idle`)
  const ttlMs = o.integer('ttlMs', defaults.ttlMs, 1, MAX_DURATION_MS)
  const leaseMs = o.integer('leaseMs', defaults.leaseMs, 10, MAX_LEASE_MS)
  const maxBatch = o.integer('maxBatch', defaults.maxBatch, 1, 65_536)
  const maxInFlightPerShard = o.integer('maxInFlightPerShard', defaults.maxInFlightPerShard, 1, 2 ** 20)

  const bloom = o.section('bloom')
  bloom.onlyKnown(Object.keys(defaults.bloom), 'bloom')
  const expectedItems = bloom.integer('expectedItems', defaults.bloom.expectedItems, 1, 2 ** 32)
  const falsePositiveRate = bloom.number('falsePositiveRate', defaults.bloom.falsePositiveRate, FALSE_POSITIVE_RATES)
  // Each shard has its own filter, sized for its share of the keys.
  const most = shards * maxBloomItems(falsePositiveRate)
  if (expectedItems > most) {
    bloom.mustBe('expectedItems', `at most ${most} at falsePositiveRate ${falsePositiveRate} with ${shards === 1 ? '1 shard' : `${shards} shards`} (each shard's bloom generation holds at most 2^32 bits)`)
  }

  const lru = o.section('lru')
  lru.onlyKnown(Object.keys(defaults.lru), 'lru')
  const maxKeys = lru.integer('maxKeys', defaults.lru.maxKeys, 0, 2 ** 30)

  const store = o.has('store') ? readStore(o, threads) : defaults.store

  const rollout = readRollout(o)
  const audit = readAuditConfig(o)
  const shadowReport = readShadowReport(o)
  const given = o.value('handler')
  const handler = given instanceof URL ? given.href : o.has('handler') ? o.string('handler', undefined, 'a module path or a file URL') : undefined
  const keepResults = o.boolean('keepResults', defaults.keepResults)
  const handlerTimeoutMs = o.integer('handlerTimeoutMs', defaults.handlerTimeoutMs, 0, MAX_LEASE_MS)
  const reconcile = o.function<ReconcileHook>('reconcile', "a function (message, { key, signal }) => 'done' | 'not-done' | 'unknown' | { result }", false)
  const reconcileAttempts = o.integer('reconcileAttempts', defaults.reconcileAttempts, 1, 1_000)
  const reconcileBackoffMs = o.integer('reconcileBackoffMs', defaults.reconcileBackoffMs, 1, MAX_LEASE_MS)
  const { mode, partitions, group, ownership } = readOwnership(o, { threads, store, reconcile, ttlMs })
  const inFlight = readInFlight(o, mode)
  const versions = readVersionRules(o)
  const metrics = readMetrics(o)
  if (o.has('versions')) checkVersionLimits(o, { threads, store, rollout, mode, reconcile, handlerTimeoutMs, inFlight })
  // Last: each strategy is the options above with its own over them, read only once those are known good.
  const strategies = readStrategies(o, options as Record<string, unknown>, mode, metrics !== undefined)

  return {
    shards,
    threads,
    ttlMs,
    leaseMs,
    bloom: { expectedItems, falsePositiveRate },
    lru: { maxKeys },
    store,
    rollout,
    inFlight,
    ...(handler === undefined ? {} : { handler }),
    maxBatch,
    maxInFlightPerShard,
    keepResults,
    handlerTimeoutMs,
    ...(reconcile === undefined ? {} : { reconcile }),
    reconcileAttempts,
    reconcileBackoffMs,
    mode,
    partitions,
    group,
    ownership,
    ...(versions === undefined ? {} : { versions }),
    ...(strategies === undefined ? {} : { strategies }),
    ...(metrics === undefined ? {} : { metrics, timeStoreCalls: true }),
    ...(audit === undefined ? {} : { audit }),
    ...(shadowReport === undefined ? {} : { shadowReport }),
  }
}

const STRATEGY_FIELDS = ['store', 'ttlMs', 'rollout', 'keepResults', 'mode'] as const satisfies readonly (keyof StrategyOptions)[]

/** The type of a message when typeOf is not given: its `type` field, else its namespace. */
function typeField(message: Message): unknown {
  return typeof message?.type === 'string' ? message.type : message?.namespace
}

/**
 * strategies, typeOf and unknownType. Each type's config is the engine's
 * options with the type's own over them, resolved as any options are; its
 * problems are named under `strategies.<type>.`. Read only when the engine's
 * own options are good, so that their problems are not named once per type.
 */
function readStrategies(o: OptionReader, options: Record<string, unknown>, mode: string, timeStoreCalls: boolean): StrategiesConfig | undefined {
  const typeOf = o.function<StrategiesConfig['typeOf']>('typeOf', 'a function (message) => type', false)
  const given = o.value('strategies')
  const section = o.section('strategies', 'an object like { payments: { store, ttlMs } }')
  const names = section.valid && given !== undefined ? Object.keys(given as object) : []
  const hasDefault = names.includes('default')
  const unknownType = o.oneOf('unknownType', ['default', 'invalid'], hasDefault ? 'default' : 'invalid')
  if (given === undefined) {
    if (o.has('typeOf')) o.mustBe('typeOf', 'given only with strategies')
    if (o.has('unknownType')) o.mustBe('unknownType', 'given only with strategies')
    return undefined
  }
  if (!section.valid) return undefined
  if (names.length === 0) o.mustBe('strategies', 'an object with at least one message type')
  if (mode !== 'strict') o.mustBe('mode', "'strict' with strategies (an owned engine partitions its transport, which the engines of several types cannot share)")
  // Metrics, the audit log and the shadow report are the whole engine's (it observes every type's decisions): no type's engine has its own.
  const { strategies: _s, typeOf: _t, unknownType: _u, metrics: _m, audit: _a, shadowReport: _r, ...base } = options
  const types = new Map<string, EngineConfig>()
  const good = o.problems.length === 0
  for (const name of names) {
    const strategy = section.section(name, 'an object like { store, ttlMs, rollout, keepResults }')
    if (!strategy.valid) continue
    strategy.onlyKnown(STRATEGY_FIELDS, 'a strategy')
    if (strategy.has('mode') && strategy.value('mode') !== 'strict') strategy.mustBe('mode', "'strict' (an owned engine partitions its transport, which the engines of several types cannot share)")
    if (!good) continue
    const own = Object.fromEntries(STRATEGY_FIELDS.filter((field) => field !== 'mode' && strategy.has(field)).map((field) => [field, strategy.value(field)]))
    const problems: string[] = []
    const config = readConfig({ ...base, ...own }, problems)
    // Every problem line starts with its field's name: under the type's, it names the strategy's field.
    for (const problem of problems) o.problems.push(strategy.nameOf(problem))
    types.set(name, { ...config, timeStoreCalls })
  }
  if (unknownType === 'default' && !hasDefault && good) types.set('default', { ...readConfig(base, o.problems), timeStoreCalls })
  return { types, typeOf: typeOf ?? typeField, unknownType }
}

/** The most namespace label values metrics keep apart. */
const MAX_METRIC_NAMESPACES = 10_000
const DEFAULT_METRIC_NAMESPACES = 100

/** `metrics`: a boolean or { registry?, maxNamespaces? }. Whether the registry is a prom-client Registry is checked once prom-client is loaded (createEngine). */
function readMetrics(o: OptionReader): MetricsConfig | undefined {
  const given = o.value('metrics')
  if (given === undefined || given === false) return undefined
  if (given === true) return { maxNamespaces: DEFAULT_METRIC_NAMESPACES }
  const section = o.section('metrics', 'a boolean or an object like { registry, maxNamespaces }')
  if (!section.valid) return undefined
  section.onlyKnown(['registry', 'maxNamespaces'], 'metrics')
  const maxNamespaces = section.integer('maxNamespaces', DEFAULT_METRIC_NAMESPACES, 0, MAX_METRIC_NAMESPACES)
  const registry = section.value('registry')
  if (registry === undefined) return { maxNamespaces }
  if (typeof registry !== 'object' || registry === null) {
    section.mustBe('registry', 'a prom-client Registry')
    return undefined
  }
  return { registry, maxNamespaces }
}

/** `shadowReport`: { samples?, file?, everyMs? }; a file in a folder that cannot be written to is refused here, not at the first write. */
export const DEFAULT_SHADOW_SAMPLES = 20

function readShadowReport(o: OptionReader): ShadowReportConfig | undefined {
  if (!o.has('shadowReport')) return undefined
  const section = o.section('shadowReport', 'an object like { samples: 20, file: "shadow-report.json" }')
  if (!section.valid) return undefined
  section.onlyKnown(['samples', 'file', 'everyMs'], 'shadowReport')
  const samples = section.integer('samples', DEFAULT_SHADOW_SAMPLES, 1, 10_000)
  const everyMs = section.integer('everyMs', 10_000, 100, MAX_LEASE_MS)
  if (!section.has('file')) return { samples, everyMs }
  const file = section.string('file', undefined, 'a path to a JSON file in a folder idem can write to')
  if (typeof file === 'string' && file.length > 0) {
    try {
      accessSync(dirname(resolvePath(file)), fsConstants.W_OK)
    } catch (error) {
      section.mustBe('file', `a path in a folder idem can write to (${(error as NodeJS.ErrnoException).code ?? 'not writable'})`, file)
    }
  }
  return { samples, everyMs, file }
}

/** `rollout`: 'enforce', 'shadow', or { enforce: share } with the share in [0, 1] (0 and 1 read as 'shadow' and 'enforce'). */
export function readRollout(o: OptionReader): Rollout {
  const given = o.value('rollout')
  if (given === undefined || given === 'enforce' || given === 'shadow') return given ?? defaults.rollout
  const rule = "'enforce', 'shadow' or { enforce: share } with the share from 0 to 1"
  const section = o.section('rollout', rule)
  if (!section.valid) return defaults.rollout
  section.onlyKnown(['enforce'], 'rollout')
  const share = section.number('enforce', undefined, { from: 0, to: 1 })
  return share === 1 ? 'enforce' : share === 0 ? 'shadow' : { enforce: share }
}

/** The share of keys a rollout enforces for. */
export function enforceShareOf(rollout: Rollout): number {
  return rollout === 'enforce' ? 1 : rollout === 'shadow' ? 0 : rollout.enforce
}

/** Whether a key (the high half of its 64-bit hash, as the router computed it) falls in the enforced share: the same answer on every process and every redelivery. */
export function enforcesKey(share: number, hashHi: number): boolean {
  return share >= 1 || hashHi < share * 2 ** 32
}

/** The in-flight policy: 'defer', or { wait: { maxMs, pollMs? } } in strict mode (an owned partition's keys have one owner, so no claim to wait for). */
function readInFlight(o: OptionReader, mode: string): WaitPolicy {
  const given = o.value('inFlight')
  if (given === undefined || given === 'defer') return defaults.inFlight
  const rule = "'defer' or an object like { wait: { maxMs: 5000 } }"
  const section = o.section('inFlight', rule)
  if (!section.valid) return defaults.inFlight
  section.onlyKnown(['wait'], 'inFlight')
  if (!section.has('wait')) {
    o.mustBe('inFlight', rule)
    return defaults.inFlight
  }
  const wait = section.section('wait', 'an object like { maxMs: 5000 }')
  if (!wait.valid) return defaults.inFlight
  if (mode === 'owned') o.mustBe('inFlight', "'defer' in owned mode (a partition's keys have one owner: there is no other claim to wait for)")
  return readWaitPolicy(wait, 'inFlight.wait')
}

/**
 * What version-aware keys do not run with yet, each refused by name: they run
 * on the main thread against their own records (no LRU, no bloom filter: a
 * seen key is no reason to skip), and have no UNKNOWN state.
 */
function checkVersionLimits(o: OptionReader, given: { threads: number; store: StoreConfig; rollout: Rollout; mode: string; reconcile: ReconcileHook | undefined; handlerTimeoutMs: number; inFlight: WaitPolicy }): void {
  const { store } = given
  if (given.threads > 0) o.mustBe('threads', '0 with versions (version-aware keys run on the main thread)')
  if (given.mode !== 'strict') o.mustBe('mode', "'strict' with versions")
  if (store.kind === 'custom') o.mustBe('store', 'a memory, redis, postgres, mysql or sqlite store with versions (a custom store keeps no versions)', store.kind)
  else if (store.kind === 'redis' && store.cluster !== undefined) o.mustBe('store', 'a single Redis with versions (a claim call writes lease records beside its keys, which a cluster cannot)', 'a cluster')
  else if (isSqlKind(store.kind) && !(store as SqlStoreConfig).createTables) o.mustBe('store.createTables', `true with versions (they keep their records in a table of their own, ${(store as SqlStoreConfig).tablePrefix}versions, created on first use)`, false)
  else if (store.kind === 'redis' && store.requireReplicas > 0) o.mustBe('store.requireReplicas', '0 with versions (version commits do not wait for replicas)')
  if (given.rollout !== 'enforce') o.mustBe('rollout', "'enforce' with versions")
  if (given.reconcile !== undefined) o.mustBe('reconcile', 'left out with versions (a version either applies or is released: there is no UNKNOWN state to reconcile)')
  if (given.handlerTimeoutMs > 0) o.mustBe('handlerTimeoutMs', '0 with versions (a version either applies or is released: there is no UNKNOWN state)')
  if (given.inFlight.waitMs > 0) o.mustBe('inFlight', "'defer' with versions (a newer version waits for the older one's run through a redelivery)")
}

/** Group names and member ids become parts of store keys: no separators, no braces, bounded. */
const NAME_PATTERN = /^[A-Za-z0-9._-]{1,100}$/
const NAME_RULE = 'a string of 1 to 100 letters, digits, dots, underscores or dashes'

/** mode, partitions, group and ownership; owned mode's limits are checked here, once. */
function readOwnership(o: OptionReader, given: { threads: number; store: StoreConfig; reconcile: ReconcileHook | undefined; ttlMs: number }) {
  const mode = o.oneOf('mode', ['strict', 'owned'], defaults.mode)
  const partitions = o.integer('partitions', defaults.partitions, 1, MAX_PARTITIONS)
  const group = o.string('group', defaults.group, NAME_RULE, (name) => NAME_PATTERN.test(name))
  const section = o.section('ownership')
  section.onlyKnown([...Object.keys(defaults.ownership), 'memberId'], 'ownership')
  const leaseMs = section.integer('leaseMs', defaults.ownership.leaseMs, 100, MAX_LEASE_MS)
  const ownership: Required<OwnershipOptions> = {
    leaseMs,
    flushMs: section.integer('flushMs', defaults.ownership.flushMs, 0, 60_000),
    flushMaxKeys: section.integer('flushMaxKeys', defaults.ownership.flushMaxKeys, 1, 65_536),
    snapshotEveryMs: section.integer('snapshotEveryMs', defaults.ownership.snapshotEveryMs, 0, MAX_LEASE_MS),
    memberId: section.string('memberId', `${hostname().replace(/[^A-Za-z0-9._-]/g, '_').slice(0, 60)}-${process.pid}-${randomBytes(4).toString('hex')}`, NAME_RULE, (name) => NAME_PATTERN.test(name)),
  }
  if (mode === 'owned') {
    // Owned partitions live in the actors of this thread, which the membership loop drives directly.
    if (given.threads > 0) o.mustBe('threads', '0 in owned mode (its partitions live in actors on the main thread)')
    const { store } = given
    if (store.kind !== 'memory' && store.kind !== 'redis') o.mustBe('store', "a memory or redis store in owned mode (a SQL store cannot hold partition leases yet; use mode: 'strict')", store.kind)
    else if (store.kind === 'redis' && store.cluster !== undefined) o.mustBe('store', 'a single Redis in owned mode (a group commit writes several partitions in one script call, which a cluster cannot)', 'a cluster')
    else if (store.kind === 'redis' && store.requireReplicas > 0) o.mustBe('store.requireReplicas', '0 in owned mode (group commits do not wait for replicas yet)')
    if (given.reconcile !== undefined) o.mustBe('reconcile', "left out in owned mode for now (UNKNOWN keys are resolved by an operator: idem keys resolve); use mode: 'strict' for a reconcile hook")
  }
  return { mode, partitions, group, ownership }
}

/** The store section: the memory store here, the others by their own modules. */
function readStore(o: OptionReader, threads: number): StoreConfig {
  const store = o.section('store', "an object like { kind: 'redis', url }")
  if (!store.valid) return defaults.store
  const options = o.value('store') as Record<string, unknown>
  if (options.kind === 'redis') return resolveRedisStore(options, threads, o.problems)
  if (isSqlKind(options.kind)) return resolveSqlStore(options, threads, o.problems)
  if (options.kind === 'custom') {
    store.onlyKnown(['kind', 'create'], 'a custom store')
    const create = store.function<CustomStoreOptions['create']>('create', 'a function (shard) => store', true)
    if (create !== undefined && threads > 0) store.mustBe('create', 'given with threads: 0 only (a function cannot cross into a worker thread)')
    if (create !== undefined && threads === 0) return { kind: 'custom', create }
  } else if (options.kind === 'memory') store.onlyKnown(['kind'], 'the memory store')
  else store.mustBe('kind', quotedChoices(STORE_KINDS))
  return defaults.store
}
