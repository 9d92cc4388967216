/**
 * Decision events (engine.addObserver): one per decision of every message,
 * on the main thread, whichever thread or mode decided it, with the layer
 * that answered, whether the verdict was enforced, and the claim's owner.
 * Duplicates go through the LRU of settled keys only in front of a remote
 * store (the memory store answers from memory itself), so the strict-mode
 * cases run on the real Redis under a key prefix of their own.
 */
import { randomBytes } from 'node:crypto'
import { fileURLToPath } from 'node:url'
import { afterAll, describe, expect, it } from 'vitest'
import type { Engine } from '../../dist/src/engine.js'
import type { DecisionEvent } from '../../dist/src/observe/decision-event.js'
import type { Message } from '../../dist/src/message.js'
import { deletePrefix } from '../support/redis-prefix.js'
import { enginesClosedAfterEach } from '../support/test-engines.js'

const REDIS_URL = 'redis://127.0.0.1:6379'
const prefix = `idem-events-${randomBytes(4).toString('hex')}:`
const fixture = (name: string) => fileURLToPath(new URL(`../support/fixtures/${name}`, import.meta.url))

const engine = enginesClosedAfterEach({ shards: 4 })
afterAll(() => deletePrefix(REDIS_URL, prefix))

/** Every event the engine emits, and the batches they came in. */
function record(e: Engine): { events: DecisionEvent[]; batches: number; stop: () => void } {
  const seen = { events: [] as DecisionEvent[], batches: 0, stop: () => {} }
  seen.stop = e.addObserver((batch) => {
    seen.batches++
    seen.events.push(...batch)
  })
  return seen
}

/** Lets the turn's last batch of events reach the observers. */
const nextTurn = (): Promise<void> => new Promise((resolve) => setImmediate(resolve))

function byKey(events: DecisionEvent[]): Map<string, DecisionEvent[]> {
  const map = new Map<string, DecisionEvent[]>()
  for (const event of events) map.set(`${event.namespace ?? ''}/${event.key}`, [...(map.get(`${event.namespace ?? ''}/${event.key}`) ?? []), event])
  return map
}

describe.each([
  ['threads: 0, function handler', { threads: 0 }, (m: Message) => m.payload],
  ['threads: 2, function handler', { threads: 2 }, (m: Message) => m.payload],
  ['threads: 2, handler module', { threads: 2, handler: fixture('double-handler.mjs') }, undefined],
] as const)('strict mode, %s', (_name, options, handler) => {
  it('a first key says store (with its owner token), its duplicate lru, a bad message input; one event per message', async () => {
    const e = await engine({ ...options, store: { kind: 'redis', url: REDIS_URL, prefix: `${prefix}${randomBytes(3).toString('hex')}:` } })
    const seen = record(e)
    const first: Message[] = Array.from({ length: 40 }, (_, i) => ({ key: `k-${i}`, namespace: i % 2 === 0 ? 'eu' : undefined, payload: i }))
    const outcomes = await e.processBatch(first, handler)
    expect(outcomes.every((o) => o.verdict === 'new' && o.error === undefined)).toBe(true)
    await nextTurn()
    expect(seen.events).toHaveLength(40)
    for (const event of seen.events) {
      expect(event).toMatchObject({ verdict: 'new', layer: 'store', enforced: true })
      expect(typeof event.owner).toBe('string')
      expect(event.errorCode).toBeUndefined()
      expect(event.at).toBeGreaterThan(0)
    }
    // The namespace travels apart from the key.
    expect(seen.events.find((ev) => ev.key === 'k-0')?.namespace).toBe('eu')
    expect(seen.events.find((ev) => ev.key === 'k-1')?.namespace).toBeUndefined()

    seen.events.length = 0
    const again = await e.processBatch([...first.slice(0, 10), { key: '' } as Message, { key: 'fresh', payload: 1 }], handler)
    expect(again.map((o) => o.verdict)).toEqual([...Array(10).fill('duplicate'), 'invalid', 'new'])
    await nextTurn()
    expect(seen.events).toHaveLength(12)
    const events = byKey(seen.events)
    for (const m of first.slice(0, 10)) {
      expect(events.get(`${m.namespace ?? ''}/${m.key}`)).toEqual([expect.objectContaining({ verdict: 'duplicate', layer: 'lru', enforced: true })])
      expect(events.get(`${m.namespace ?? ''}/${m.key}`)![0].owner).toBeUndefined()
    }
    expect(events.get('/')).toEqual([expect.objectContaining({ verdict: 'invalid', layer: 'input', enforced: true, errorCode: 'INVALID_KEY' })])
    expect(events.get('/fresh')).toEqual([expect.objectContaining({ verdict: 'new', layer: 'store' })])
    expect(e.stats().observerFailures).toBe(0)
  })
})

describe('owned mode', () => {
  it('a key never seen says bloom with owner epoch:<n>', async () => {
    const e = await engine({ mode: 'owned', partitions: 8 })
    const seen = record(e)
    await e.processBatch(Array.from({ length: 20 }, (_, i) => ({ key: `o-${i}` })), (m) => m.key)
    await nextTurn()
    expect(seen.events).toHaveLength(20)
    for (const event of seen.events) {
      expect(event).toMatchObject({ verdict: 'new', layer: 'bloom', enforced: true })
      expect(event.owner).toMatch(/^epoch:\d+$/)
    }
    seen.events.length = 0
    await e.processBatch([{ key: 'o-1' }], (m) => m.key)
    await nextTurn()
    expect(seen.events).toEqual([expect.objectContaining({ key: 'o-1', verdict: 'duplicate', enforced: true })])
    expect(['lru', 'store']).toContain(seen.events[0].layer)
  })
})

describe('version-aware keys', () => {
  it('a first version says store with its owner token, a repeat answered from the applied versions lru, a bad version input', async () => {
    const e = await engine({ shards: 1, versions: { versionOf: (m: Message) => m.payload as number } })
    const seen = record(e)
    await e.processBatch([{ key: 'v', namespace: 'eu', payload: 1 }], () => 'applied')
    await e.processBatch([{ key: 'v', namespace: 'eu', payload: 1 }, { key: 'w', payload: {} as never }], () => 'applied')
    await nextTurn()
    expect(seen.events).toHaveLength(3)
    expect(seen.events).toEqual(
      expect.arrayContaining([
        expect.objectContaining({ key: 'v', namespace: 'eu', verdict: 'new', layer: 'store', enforced: true }),
        expect.objectContaining({ key: 'w', verdict: 'invalid', layer: 'input', errorCode: 'INVALID_MESSAGE' }),
        expect.objectContaining({ key: 'v', namespace: 'eu', verdict: 'duplicate', layer: 'lru' }),
      ]),
    )
    expect(typeof seen.events[0].owner).toBe('string')
  })
})

describe('rollout', () => {
  it.each([0, 2])('shadow (threads: %i): every event says enforced false, with the verdict enforce would give', async (threads) => {
    const e = await engine({ threads, rollout: 'shadow' })
    const seen = record(e)
    const messages = Array.from({ length: 30 }, (_, i) => ({ key: `s-${i}` }))
    await e.processBatch(messages, (m) => m.key)
    const second = await e.processBatch(messages, (m) => m.key)
    // The handler ran again (shadow), and its event still says what enforce would have done.
    expect(second.every((o) => o.verdict === 'new' && o.shadow?.verdict === 'duplicate')).toBe(true)
    await nextTurn()
    expect(seen.events).toHaveLength(60)
    expect(seen.events.every((ev) => !ev.enforced)).toBe(true)
    expect(seen.events.filter((ev) => ev.verdict === 'duplicate')).toHaveLength(30)
    expect(seen.events.filter((ev) => ev.verdict === 'new')).toHaveLength(30)
  })

  it('gray: enforced false exactly for the keys of the shadowed share', async () => {
    const e = await engine({ rollout: { enforce: 0.5 } })
    const messages = Array.from({ length: 400 }, (_, i) => ({ key: `g-${i}` }))
    await e.processBatch(messages, (m) => m.key)
    const seen = record(e)
    const second = await e.processBatch(messages, (m) => m.key)
    await nextTurn()
    const shadowed = new Set(second.filter((o) => o.shadow !== undefined).map((o) => o.key))
    expect(shadowed.size).toBeGreaterThan(100)
    expect(shadowed.size).toBeLessThan(300)
    expect(seen.events).toHaveLength(400)
    for (const event of seen.events) {
      expect(event.verdict).toBe('duplicate')
      expect(event.enforced).toBe(!shadowed.has(event.key))
    }
  })
})

describe('observers', () => {
  it('an observer that throws is counted, the others still get every event, and outcomes are untouched', async () => {
    const e = await engine({ threads: 0 })
    e.addObserver(() => {
      throw new Error('sink broke')
    })
    const seen = record(e)
    const outcomes = await e.processBatch(Array.from({ length: 10 }, (_, i) => ({ key: `t-${i}` })), (m) => m.key)
    expect(outcomes.map((o) => o.result)).toEqual(Array.from({ length: 10 }, (_, i) => `t-${i}`))
    await nextTurn()
    expect(seen.events).toHaveLength(10)
    const failures = e.stats().observerFailures
    expect(failures).toBe(seen.batches)
    expect(failures).toBeGreaterThan(0)
  })

  it('events come in batches, not one call per message; an unsubscribed observer gets nothing more', async () => {
    const e = await engine({ threads: 0, shards: 1 })
    const seen = record(e)
    await e.processBatch(Array.from({ length: 100 }, (_, i) => ({ key: `b-${i}` })), (m) => m.key)
    await nextTurn()
    expect(seen.events).toHaveLength(100)
    expect(seen.batches).toBeLessThan(10)
    seen.stop()
    seen.stop()
    await e.processBatch([{ key: 'after' }], (m) => m.key)
    await nextTurn()
    expect(seen.events).toHaveLength(100)
  })

  it('{ acted: true } gets every verdict but new, alone or beside an observer of everything', async () => {
    const e = await engine({ threads: 0, shards: 2 })
    const acted: DecisionEvent[] = []
    e.addObserver((batch) => acted.push(...batch), { acted: true })
    const messages = Array.from({ length: 20 }, (_, i) => ({ key: `a-${i % 10}` }))
    await e.processBatch(messages, (m) => m.key)
    await nextTurn()
    expect(acted).toHaveLength(10)
    expect(acted.every((ev) => ev.verdict === 'duplicate')).toBe(true)
    const all = record(e)
    await e.processBatch([{ key: 'a-1' }, { key: 'fresh' }], (m) => m.key)
    await nextTurn()
    expect(all.events.map((ev) => ev.verdict).sort()).toEqual(['duplicate', 'new'])
    expect(acted).toHaveLength(11)
    expect(() => e.addObserver(() => {}, { acted: 'yes' } as never)).toThrow('observer options.acted: must be a boolean, got "yes"')
  })

  it('addObserver takes a function only', async () => {
    const e = await engine({ threads: 0 })
    expect(() => e.addObserver('no' as never)).toThrow('observer: must be a function, got string')
  })
})
