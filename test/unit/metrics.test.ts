/**
 * Prometheus metrics: scraped over real HTTP while an engine with worker
 * threads runs, read with a real exposition parser, and held to
 * engine.stats(). parse-prometheus-text-format folds a labelled histogram
 * into one unlabelled sample, so the store call histogram is read from the
 * registry's own JSON instead.
 */
import { randomBytes } from 'node:crypto'
import parsePrometheus, { type ParsedFamily } from 'parse-prometheus-text-format'
import promClient from 'prom-client'
import { afterAll, describe, expect, it } from 'vitest'
import { createEngine } from '../../dist/src/engine.js'
import { ConfigError } from '../../dist/src/errors.js'
import type { Message } from '../../dist/src/message.js'
import { EngineMetrics, loadPromClient } from '../../dist/src/observe/metrics.js'
import { serveMetrics } from '../../dist/src/observe/metrics-server.js'
import { consumeMemoryQueue, MemoryQueue } from '../../dist/src/transport/memory-queue.js'
import { problemsOf } from '../support/config-problems.js'
import { deletePrefix } from '../support/redis-prefix.js'
import { enginesClosedAfterEach } from '../support/test-engines.js'

const REDIS_URL = 'redis://127.0.0.1:6379'
const prefix = `idem-metrics-${randomBytes(4).toString('hex')}:`

const engine = enginesClosedAfterEach({ shards: 4 })
afterAll(() => deletePrefix(REDIS_URL, prefix))

async function scrape(url: string): Promise<Map<string, ParsedFamily>> {
  const response = await fetch(url)
  expect(response.status).toBe(200)
  return new Map(parsePrometheus(await response.text()).map((family) => [family.name, family]))
}

/** The value of the sample of `name` whose labels include `labels` (0 when there is none). */
function valueOf(families: Map<string, ParsedFamily>, name: string, labels: Record<string, string> = {}): number {
  const family = families.get(name)
  expect(family, name).toBeDefined()
  const sample = family!.metrics.find((m) => Object.entries(labels).every(([k, v]) => m.labels?.[k] === v))
  return sample === undefined ? 0 : Number(sample.value)
}

function sumOf(families: Map<string, ParsedFamily>, name: string, labels: Record<string, string> = {}): number {
  return (families.get(name)?.metrics ?? []).filter((m) => Object.entries(labels).every(([k, v]) => m.labels?.[k] === v)).reduce((sum, m) => sum + Number(m.value), 0)
}

const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms))

describe('metrics over HTTP', () => {
  it('threads: 2 on Redis: scraped during a run and after it, every series equals engine.stats()', async () => {
    const registry = new promClient.Registry()
    const e = await engine({ threads: 2, leaseMs: 60, metrics: { registry }, store: { kind: 'redis', url: REDIS_URL, prefix } })
    const server = await serveMetrics(registry, 0)
    try {
      const messages: Message[] = Array.from({ length: 300 }, (_, i) => ({ key: `m-${i % 200}`, namespace: ['eu', 'us', undefined][i % 3], fingerprint: i === 250 ? 'other' : undefined, payload: i }))
      // A handler that outlives a third of its lease: its claims are renewed.
      const slow = async (m: Message) => {
        if ((m.payload as number) % 50 === 0) await sleep(50)
        return m.payload
      }
      const running = e.processBatch(messages.slice(0, 200), slow)
      const during = await scrape(server.url)
      expect(during.has('idem_messages_total')).toBe(true)
      await running
      await e.processBatch([...messages.slice(200), { key: '' } as Message], slow)
      await e.processBatch(messages.slice(0, 50), slow)

      const families = await scrape(server.url)
      const stats = e.stats()
      const v = stats.totals.verdicts
      expect(v.duplicate).toBeGreaterThan(0)
      expect(v.invalid).toBe(1)
      expect(valueOf(families, 'idem_messages_total', { verdict: 'new' })).toBe(v.new)
      expect(valueOf(families, 'idem_messages_total', { verdict: 'duplicate' })).toBe(v.duplicate)
      expect(valueOf(families, 'idem_messages_total', { verdict: 'conflict' })).toBe(v.conflict)
      expect(valueOf(families, 'idem_messages_total', { verdict: 'invalid' })).toBe(v.invalid)
      expect(valueOf(families, 'idem_messages_total', { verdict: 'in_flight' })).toBe(v.inFlight)
      // Every decision that was not `new` is a rejection, by the layer that answered.
      expect(sumOf(families, 'idempotent_rejected_total', { reason: 'duplicate' })).toBe(v.duplicate)
      expect(sumOf(families, 'idempotent_rejected_total', { reason: 'conflict' })).toBe(v.conflict)
      expect(sumOf(families, 'idempotent_rejected_total', { reason: 'invalid', layer: 'input' })).toBe(1)
      expect(sumOf(families, 'idempotent_rejected_total', { reason: 'duplicate', layer: 'lru' })).toBe(stats.totals.lruHits)
      expect(sumOf(families, 'idempotent_rejected_total', { namespace: 'eu' })).toBeGreaterThan(0)
      expect(stats.totals.leaseRenewals).toBeGreaterThan(0)
      expect(valueOf(families, 'idem_lease_renewals_total')).toBe(stats.totals.leaseRenewals)
      expect(valueOf(families, 'idem_fenced_writes_total')).toBe(stats.totals.fencedWrites)
      expect(valueOf(families, 'idem_bloom_false_positive_ratio')).toBe(stats.bloom.measuredFalsePositiveRate)
      expect(sumOf(families, 'idem_shadow_would_drop_total')).toBe(0)

      // Every store operation the shards counted was timed, in its worker thread.
      const histogram = await (registry.getSingleMetric('idem_store_call_seconds') as unknown as { get(): Promise<{ values: { metricName: string; value: number; labels: Record<string, string> }[] }> }).get()
      const counts = histogram.values.filter((s) => s.metricName === 'idem_store_call_seconds_count')
      expect(counts.map((s) => s.labels.operation)).toEqual(expect.arrayContaining(['claim', 'commit', 'renew']))
      expect(counts.reduce((sum, s) => sum + s.value, 0)).toBe(stats.totals.storeOperations)
      for (const s of counts) {
        const inf = histogram.values.find((b) => b.metricName === 'idem_store_call_seconds_bucket' && b.labels.operation === s.labels.operation && b.labels.le === '+Inf')
        expect(inf?.value).toBe(s.value)
      }
    } finally {
      await server.close()
    }
  })

  it('with strategies, the store calls of every type are timed (a type with worker threads too)', async () => {
    const registry = new promClient.Registry()
    const store = { kind: 'redis' as const, url: REDIS_URL, prefix: `${prefix}strategies:` }
    const e = await engine({ store, metrics: { registry }, strategies: { payments: { ttlMs: 60_000 }, notifications: {} }, threads: 1 })
    const messages = Array.from({ length: 120 }, (_, i) => ({ key: `t-${i % 80}`, type: i % 2 === 0 ? 'payments' : 'notifications' }))
    await e.processBatch(messages, (m) => m.key)
    const stats = e.stats()
    expect(stats.totals.storeOperations).toBeGreaterThan(0)
    const histogram = await (registry.getSingleMetric('idem_store_call_seconds') as unknown as { get(): Promise<{ values: { metricName: string; value: number; labels: Record<string, string> }[] }> }).get()
    const counts = histogram.values.filter((s) => s.metricName === 'idem_store_call_seconds_count')
    expect(counts.map((s) => s.labels.operation)).toEqual(expect.arrayContaining(['claim', 'commit']))
    expect(counts.reduce((sum, s) => sum + s.value, 0)).toBe(stats.totals.storeOperations)
  })

  it('anything but GET /metrics is 404', async () => {
    const server = await serveMetrics(new promClient.Registry(), 0)
    try {
      expect((await fetch(server.url.replace('/metrics', '/other'))).status).toBe(404)
    } finally {
      await server.close()
    }
  })
})

describe('series by label', () => {
  it('namespaces past maxNamespaces count as other; the counts still add up', async () => {
    const registry = new promClient.Registry()
    const e = await engine({ metrics: { registry, maxNamespaces: 2 } })
    const messages = Array.from({ length: 50 }, (_, i) => ({ key: `n-${i}`, namespace: `tenant-${i % 5}` }))
    await e.processBatch(messages, (m) => m.key)
    await e.processBatch(messages, (m) => m.key)
    const families = new Map(parsePrometheus(await registry.metrics()).map((f) => [f.name, f]))
    const namespaces = new Set(families.get('idempotent_rejected_total')!.metrics.map((m) => m.labels!.namespace))
    expect(namespaces.size).toBe(3)
    expect(namespaces.has('other')).toBe(true)
    expect(sumOf(families, 'idempotent_rejected_total')).toBe(50)
    expect(sumOf(families, 'idempotent_rejected_total', { namespace: 'other' })).toBe(30)
  })

  it('shadow: nothing is rejected, what enforce would have dropped is counted by reason', async () => {
    const registry = new promClient.Registry()
    const e = await engine({ rollout: 'shadow', metrics: { registry } })
    const messages = Array.from({ length: 20 }, (_, i) => ({ key: `s-${i}`, fingerprint: 'v1' }))
    await e.processBatch(messages, (m) => m.key)
    await e.processBatch([...messages.slice(0, 15), { key: 's-19', fingerprint: 'v2' }], (m) => m.key)
    const families = new Map(parsePrometheus(await registry.metrics()).map((f) => [f.name, f]))
    expect(valueOf(families, 'idem_shadow_would_drop_total', { reason: 'duplicate' })).toBe(15)
    expect(valueOf(families, 'idem_shadow_would_drop_total', { reason: 'conflict' })).toBe(1)
    expect(sumOf(families, 'idempotent_rejected_total')).toBe(0)
    expect(valueOf(families, 'idem_messages_total', { verdict: 'duplicate' })).toBe(15)
  })

  it('a transport counts what it settled, by action: the memory queue acks, retries and rejects', async () => {
    const registry = new promClient.Registry()
    const e = await engine({ metrics: { registry } })
    const queue = new MemoryQueue<number>({ retryDelayMs: 0 })
    for (let i = 0; i < 30; i++) queue.add({ key: `q-${i % 20}`, payload: i, fingerprint: i === 25 ? 'v2' : 'v1' })
    queue.add({ key: '' })
    let thrown = 0
    await consumeMemoryQueue(queue, e, (m) => {
      if (m.payload === 3 && thrown++ === 0) throw new Error('once')
      return m.payload
    })
    const families = new Map(parsePrometheus(await registry.metrics()).map((f) => [f.name, f]))
    expect(valueOf(families, 'idem_transport_settled_total', { transport: 'memory', action: 'done' })).toBe(queue.acked)
    expect(valueOf(families, 'idem_transport_settled_total', { transport: 'memory', action: 'retry' })).toBe(1)
    expect(valueOf(families, 'idem_transport_settled_total', { transport: 'memory', action: 'reject' })).toBe(queue.failed.length)
    expect(queue.failed.length).toBe(2)
  })
})

describe('registries', () => {
  it('metrics: true registers in prom-client default registry; close takes the series out again', async () => {
    const e = await createEngine({ metrics: true })
    try {
      expect(promClient.register.getSingleMetric('idem_messages_total')).toBeDefined()
    } finally {
      await e.close()
    }
    expect(promClient.register.getSingleMetric('idem_messages_total')).toBeUndefined()
  })

  it('a second engine on the same registry is a ConfigError naming it; the first keeps its series', async () => {
    const registry = new promClient.Registry()
    await engine({ metrics: { registry } })
    await expect(createEngine({ metrics: { registry } })).rejects.toThrow(/metrics\.registry: already has a metric named idempotent_rejected_total/)
    expect(registry.getSingleMetric('idem_messages_total')).toBeDefined()
  })

  it('metrics off: nothing is registered', async () => {
    await engine({})
    expect(promClient.register.getSingleMetric('idem_messages_total')).toBeUndefined()
  })
})

describe('bad config', () => {
  it.each([
    ['a string', { metrics: 'yes' }, 'metrics: must be a boolean or an object like { registry, maxNamespaces }, got "yes"'],
    ['registry not an object', { metrics: { registry: 5 } }, 'metrics.registry: must be a prom-client Registry, got 5'],
    ['maxNamespaces negative', { metrics: { maxNamespaces: -1 } }, 'metrics.maxNamespaces: must be an integer from 0 to 10000, got -1'],
    ['unknown field', { metrics: { registery: {} } }, 'metrics.registery: must be left out (not an option of metrics; known: registry, maxNamespaces), got {}'],
  ])('%s', (_name, options, problem) => {
    expect(problemsOf(options)).toEqual([problem])
  })

  it('a registry that is not a prom-client Registry: ConfigError naming metrics.registry', async () => {
    const error = await createEngine({ metrics: { registry: { metrics: () => '' } } }).catch((e: unknown) => e)
    expect(error).toBeInstanceOf(ConfigError)
    expect((error as ConfigError).problems).toEqual(['metrics.registry: must be a prom-client Registry, got Object'])
  })

  it('prom-client missing: ConfigError saying to install it', async () => {
    const missing = () => Promise.reject(Object.assign(new Error("Cannot find package 'prom-client'"), { code: 'ERR_MODULE_NOT_FOUND' }))
    const error = await loadPromClient(missing).catch((e: unknown) => e)
    expect(error).toBeInstanceOf(ConfigError)
    expect((error as ConfigError).problems).toEqual(['metrics: needs the prom-client package, an optional peer dependency of idem: npm install prom-client'])
    await expect(EngineMetrics.start({} as never, { maxNamespaces: 1 }, missing)).rejects.toThrow(ConfigError)
  })
})
