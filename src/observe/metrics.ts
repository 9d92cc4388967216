/**
 * Prometheus metrics (README "Metrics"). Every series is read when the
 * registry is scraped: the counts the engine keeps anyway (engine.stats()),
 * store call timings that ride in the counters arrays (store-timing.ts), and
 * the few counts by label that only decision events carry, summed per turn by
 * one observer. So the hot path pays for no metric object.
 */
import type { Registry } from 'prom-client'
import type { EngineStats } from '../engine.js'
import { ConfigError } from '../errors.js'
import type { MetricsConfig } from '../config.js'
import type { Outcome } from '../message.js'
import { Settle, settleOf } from '../outcome.js'
import type { DecisionEvent, DecisionLayer, DecisionObserver } from './decision-event.js'
import { SLOTS_PER_OPERATION, STORE_CALL_BUCKETS, STORE_OPERATIONS } from './store-timing.js'
import { COUNTER_COUNT } from '../actor/protocol.js'

/** What the metrics read from their engine. */
export interface MetricsSource {
  stats(): EngineStats
  /** The counters summed over every shard, with their store call timing slots (store-timing.ts). */
  storeCallTimings(): Float64Array
  addObserver(observer: DecisionObserver, options: { acted: true }): () => void
}

type PromClient = typeof import('prom-client')

/** The label value namespaces beyond the cap count under. */
export const OTHER_NAMESPACE = 'other'

const REASONS = ['duplicate', 'conflict', 'invalid', 'in_flight'] as const
const reasonOf: Partial<Record<string, number>> = { duplicate: 0, conflict: 1, invalid: 2, 'in-flight': 3 }
const LAYERS: readonly DecisionLayer[] = ['lru', 'bloom', 'store', 'input']
const layerIndex: Record<DecisionLayer, number> = { lru: 0, bloom: 1, store: 2, input: 3 }
const ACTIONS = Object.values(Settle)
const actionIndex = Object.fromEntries(ACTIONS.map((action, i) => [action, i])) as Record<Settle, number>

/** A series read at scrape time, as prom-client's registry takes it. */
interface Sample {
  value: number
  labels?: Record<string, string | number>
  metricName?: string
}
interface CollectedMetric {
  name: string
  help: string
  type: 'counter' | 'gauge' | 'histogram'
  aggregator: 'sum'
  get(): Promise<{ name: string; help: string; type: string; aggregator: 'sum'; values: Sample[] }>
  reset(): void
}

/**
 * Loads prom-client, an optional peer dependency, only when metrics are on.
 * `load` is for tests (a missing package).
 */
export async function loadPromClient(load: () => Promise<unknown> = () => import('prom-client')): Promise<PromClient> {
  try {
    const loaded = (await load()) as PromClient & { default?: PromClient }
    return typeof loaded.Registry === 'function' ? loaded : loaded.default!
  } catch (error) {
    if ((error as { code?: string } | null)?.code !== 'ERR_MODULE_NOT_FOUND') throw error
    throw new ConfigError(['metrics: needs the prom-client package, an optional peer dependency of idem: npm install prom-client'])
  }
}

/** Whether `value` is a prom-client Registry: this copy's class, or one from another copy of prom-client that registers and renders metrics. */
function isRegistry(prom: PromClient, value: object): value is Registry {
  if (value instanceof prom.Registry) return true
  const r = value as Partial<Record<'registerMetric' | 'metrics' | 'getSingleMetric' | 'removeSingleMetric', unknown>>
  return typeof r.registerMetric === 'function' && typeof r.metrics === 'function' && typeof r.getSingleMetric === 'function' && typeof r.removeSingleMetric === 'function'
}

export class EngineMetrics {
  /** Rejected decisions by namespace label: REASONS × LAYERS counts each. */
  private readonly rejected = new Map<string, Float64Array>()
  private readonly wouldDrop = new Float64Array(REASONS.length)
  /** Per transport, a count per Settle action. */
  private readonly settled = new Map<string, Float64Array>()
  private readonly metrics: CollectedMetric[]
  private readonly unsubscribe: () => void
  /** One engine.stats() per scrape: the series of one scrape read the same numbers. */
  private cached: { at: number; stats: EngineStats } | undefined

  private constructor(
    private readonly source: MetricsSource,
    private readonly registry: Registry,
    private readonly maxNamespaces: number,
  ) {
    this.metrics = this.define()
    const registered: CollectedMetric[] = []
    try {
      for (const metric of this.metrics) {
        if (registry.getSingleMetric(metric.name) !== undefined) throw new ConfigError([`metrics.registry: already has a metric named ${metric.name} (another engine's? close it first, or give each engine its own Registry)`])
        registry.registerMetric(metric as never)
        registered.push(metric)
      }
    } catch (error) {
      for (const metric of registered) registry.removeSingleMetric(metric.name)
      throw error
    }
    // The counts by label are of rejections and would-be drops only: no event is built for a run.
    this.unsubscribe = source.addObserver(this.observe, { acted: true })
  }

  /** Loads prom-client, checks the registry, and registers the engine's series in it. */
  static async start(source: MetricsSource, config: MetricsConfig, load?: () => Promise<unknown>): Promise<EngineMetrics> {
    const prom = await loadPromClient(load)
    const registry = config.registry ?? prom.register
    if (!isRegistry(prom, registry)) throw new ConfigError([`metrics.registry: must be a prom-client Registry, got ${registry.constructor?.name ?? typeof registry}`])
    return new EngineMetrics(source, registry, config.maxNamespaces)
  }

  /** A transport settled a batch by these outcomes (engine.countSettled). */
  countSettled(transport: string, outcomes: readonly Outcome[]): void {
    let counts = this.settled.get(transport)
    if (counts === undefined) this.settled.set(transport, (counts = new Float64Array(ACTIONS.length)))
    for (const outcome of outcomes) if (outcome !== undefined) counts[actionIndex[settleOf(outcome)]]++
  }

  /** Takes the engine's series out of the registry (engine.close). */
  close(): void {
    this.unsubscribe()
    for (const metric of this.metrics) if ((this.registry.getSingleMetric(metric.name) as unknown) === metric) this.registry.removeSingleMetric(metric.name)
  }

  private readonly observe = (events: readonly DecisionEvent[]): void => {
    for (const event of events) {
      const reason = reasonOf[event.verdict]
      if (reason === undefined) continue
      if (!event.enforced) this.wouldDrop[reason]++
      else this.rejectedOf(event.namespace)[reason * LAYERS.length + layerIndex[event.layer]]++
    }
  }

  /** The counts of a namespace's label: its own for the first maxNamespaces namespaces seen, `other` after. */
  private rejectedOf(namespace: string | undefined): Float64Array {
    const label = namespace ?? ''
    let counts = this.rejected.get(label)
    if (counts !== undefined) return counts
    // `other` is kept apart from the cap's count: it is not a namespace seen.
    const capped = this.rejected.size - (this.rejected.has(OTHER_NAMESPACE) ? 1 : 0) >= this.maxNamespaces
    const key = capped ? OTHER_NAMESPACE : label
    counts = this.rejected.get(key)
    if (counts === undefined) this.rejected.set(key, (counts = new Float64Array(REASONS.length * LAYERS.length)))
    return counts
  }

  private stats(): EngineStats {
    const now = performance.now()
    if (this.cached === undefined || now - this.cached.at > 50) this.cached = { at: now, stats: this.source.stats() }
    return this.cached.stats
  }

  private define(): CollectedMetric[] {
    const metric = (name: string, help: string, type: CollectedMetric['type'], values: () => Sample[]): CollectedMetric => ({
      name,
      help,
      type,
      aggregator: 'sum',
      get: async () => ({ name, help, type, aggregator: 'sum', values: values() }),
      reset: () => {},
    })
    const fromStats = (name: string, help: string, read: (stats: EngineStats) => number, type: CollectedMetric['type'] = 'counter') => metric(name, help, type, () => [{ value: read(this.stats()) }])
    return [
      metric('idempotent_rejected_total', 'Messages idem did not run, by reason, the layer that answered, and namespace (enforced decisions; shadowed ones are in idem_shadow_would_drop_total).', 'counter', () => {
        const values: Sample[] = []
        for (const [namespace, counts] of this.rejected) {
          for (let r = 0; r < REASONS.length; r++) {
            for (let l = 0; l < LAYERS.length; l++) {
              const value = counts[r * LAYERS.length + l]
              if (value > 0) values.push({ value, labels: { reason: REASONS[r], layer: LAYERS[l], namespace } })
            }
          }
        }
        return values
      }),
      metric('idem_messages_total', 'Messages decided, by verdict (in shadow: the verdict enforce would have given).', 'counter', () => {
        const v = this.stats().totals.verdicts
        return [
          { value: v.new, labels: { verdict: 'new' } },
          { value: v.duplicate, labels: { verdict: 'duplicate' } },
          { value: v.inFlight, labels: { verdict: 'in_flight' } },
          { value: v.conflict, labels: { verdict: 'conflict' } },
          { value: v.invalid, labels: { verdict: 'invalid' } },
          { value: v.stale, labels: { verdict: 'stale' } },
        ]
      }),
      metric('idem_store_call_seconds', 'Store calls by operation, as the actor waited for them (a Redis store may send several in one round trip).', 'histogram', () => this.storeCallSamples()),
      fromStats('idem_lease_renewals_total', 'Leases a renewal extended (strict mode: one per open claim per renewal).', (s) => s.totals.leaseRenewals),
      fromStats('idem_fenced_writes_total', 'Commits, releases or renewals refused because the lease was no longer ours.', (s) => s.totals.fencedWrites),
      fromStats('idem_bloom_false_positive_ratio', 'Measured rate of new keys the bloom filter wrongly answered maybe-seen.', (s) => s.bloom.measuredFalsePositiveRate, 'gauge'),
      metric('idem_shadow_would_drop_total', 'Messages that ran in shadow (or in the shadowed share of a gray rollout) which enforce would not have run, by reason.', 'counter', () =>
        REASONS.map((reason, r) => ({ value: this.wouldDrop[r], labels: { reason } })),
      ),
      metric('idem_transport_settled_total', 'Jobs, entries or messages a transport settled, by action (done: acked, retry: again using an attempt, wait: again without one, reject: failed).', 'counter', () => {
        const values: Sample[] = []
        for (const [transport, counts] of this.settled) for (let a = 0; a < ACTIONS.length; a++) values.push({ value: counts[a], labels: { transport, action: ACTIONS[a] } })
        return values
      }),
    ]
  }

  private storeCallSamples(): Sample[] {
    const timings = this.source.storeCallTimings()
    const name = 'idem_store_call_seconds'
    const values: Sample[] = []
    for (let op = 0; op < STORE_OPERATIONS.length; op++) {
      const base = COUNTER_COUNT + op * SLOTS_PER_OPERATION
      let count = 0
      for (let b = 0; b <= STORE_CALL_BUCKETS.length; b++) count += timings[base + b] ?? 0
      if (count === 0) continue
      const operation = STORE_OPERATIONS[op]
      let cumulative = 0
      for (let b = 0; b < STORE_CALL_BUCKETS.length; b++) {
        cumulative += timings[base + b]
        values.push({ metricName: `${name}_bucket`, value: cumulative, labels: { le: STORE_CALL_BUCKETS[b], operation } })
      }
      values.push({ metricName: `${name}_bucket`, value: count, labels: { le: '+Inf', operation } })
      values.push({ metricName: `${name}_sum`, value: timings[base + STORE_CALL_BUCKETS.length + 1], labels: { operation } })
      values.push({ metricName: `${name}_count`, value: count, labels: { operation } })
    }
    return values
  }
}
