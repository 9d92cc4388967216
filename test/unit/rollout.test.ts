/**
 * Gray rollout: `rollout: { enforce: share }` enforces for a stable share of
 * keys, chosen by key hash, and shadows the rest; setRollout changes it at run
 * time. A shadowed message runs whatever the verdict, and its outcome carries
 * `shadow` when enforce would have done otherwise, so a second pass over the
 * same keys (all duplicates) tells exactly which keys were shadowed.
 */
import { fileURLToPath } from 'node:url'
import { afterEach, describe, expect, it } from 'vitest'
import { createEngine, type Engine } from '../../dist/src/engine.js'
import { ConfigError } from '../../dist/src/errors.js'
import type { Message } from '../../dist/src/message.js'
import { problemsOf } from '../support/config-problems.js'

const engines: Engine[] = []
afterEach(async () => {
  await Promise.all(engines.splice(0).map((e) => e.close()))
})
async function engine(options: Record<string, unknown>): Promise<Engine> {
  const e = await createEngine({ shards: 4, lru: { maxKeys: 0 }, ...options })
  engines.push(e)
  return e
}

const KEYS = 20_000
const keys = Array.from({ length: KEYS }, (_, i) => ({ key: `order-${i}`, namespace: i % 2 === 0 ? 'eu' : 'us' }))

/** Runs every key twice; answers the keys whose second (duplicate) message was shadowed, i.e. ran. */
async function shadowedKeys(e: Engine, messages: Message[] = keys, handler?: undefined | ((m: Message) => unknown)): Promise<Set<string>> {
  const run = handler ?? ((m: Message) => m.key)
  await e.processBatch(messages, run)
  const second = await e.processBatch(messages, run)
  const shadowed = new Set<string>()
  second.forEach((outcome, i) => {
    if (outcome.shadow !== undefined) {
      expect(outcome).toMatchObject({ verdict: 'new', shadow: { verdict: 'duplicate' } })
      shadowed.add(`${messages[i].namespace}/${messages[i].key}`)
    } else expect(outcome.verdict).toBe('duplicate')
  })
  return shadowed
}

/** Within five standard deviations of the binomial count: a real split passes, a broken one (all, none, half) does not. */
function expectShare(count: number, n: number, share: number): void {
  const sigma = Math.sqrt(n * share * (1 - share))
  expect(Math.abs(count - n * share)).toBeLessThan(5 * sigma)
}

describe('gray rollout', () => {
  it('{ enforce: 0.25 } enforces for about 25% of 20,000 keys; the same keys on another engine and on every redelivery', async () => {
    const a = await engine({ rollout: { enforce: 0.25 } })
    const b = await engine({ rollout: { enforce: 0.25 }, shards: 7 })
    const shadowedA = await shadowedKeys(a)
    expectShare(KEYS - shadowedA.size, KEYS, 0.25)
    // Another engine (another shard count: the split is by key, not by shard) picks the same keys.
    expect([...(await shadowedKeys(b))].sort()).toEqual([...shadowedA].sort())
    // A redelivery gets the same treatment.
    const third = await a.processBatch(keys, (m) => m.key)
    expect(new Set(third.flatMap((o, i) => (o.shadow === undefined ? [] : [`${keys[i].namespace}/${keys[i].key}`])))).toEqual(shadowedA)
    expect(a.stats().totals.shadowRuns).toBe(2 * shadowedA.size)
  })

  it('a larger share enforces for a superset of the keys of a smaller one, so raising it never moves a key back to shadow', async () => {
    const quarter = await shadowedKeys(await engine({ rollout: { enforce: 0.25 } }))
    const half = await shadowedKeys(await engine({ rollout: { enforce: 0.5 } }))
    expectShare(KEYS - half.size, KEYS, 0.5)
    for (const key of half) expect(quarter.has(key)).toBe(true)
  })

  it('setRollout changes it at run time, for the messages submitted after it', async () => {
    const e = await engine({ rollout: 'shadow' })
    const sample = keys.slice(0, 2000)
    expect((await shadowedKeys(e, sample)).size).toBe(2000)
    e.setRollout({ enforce: 0.5 })
    expect(e.rollout).toEqual({ enforce: 0.5 })
    expectShare(2000 - (await shadowedKeys(e, sample)).size, 2000, 0.5)
    e.setRollout('enforce')
    expect((await shadowedKeys(e, sample)).size).toBe(0)
    e.setRollout({ enforce: 0 })
    expect(e.rollout).toBe('shadow')
    expect((await shadowedKeys(e, sample)).size).toBe(2000)
  })

  it('threads: 1 with a handler module: the worker applies the same split', async () => {
    const handler = fileURLToPath(new URL('../support/fixtures/double-handler.mjs', import.meta.url))
    const e = await engine({ shards: 2, threads: 1, handler, rollout: { enforce: 0.25 } })
    const local = await engine({ shards: 2, rollout: { enforce: 0.25 } })
    const sample = keys.slice(0, 4000).map((m, i) => ({ ...m, payload: i }))
    const viaModule = await shadowedKeys(e, sample)
    expect([...viaModule].sort()).toEqual([...(await shadowedKeys(local, sample, (m) => m.payload))].sort())
    expectShare(4000 - viaModule.size, 4000, 0.25)
  })

  it('bad input: a ConfigError naming the field, from createEngine and from setRollout (which then changes nothing)', async () => {
    expect(problemsOf({ rollout: { enforce: 1.5 } })).toEqual(['rollout.enforce: must be a number in [0, 1], got 1.5'])
    expect(problemsOf({ rollout: { enforce: -0.1 } })).toEqual(['rollout.enforce: must be a number in [0, 1], got -0.1'])
    expect(problemsOf({ rollout: { enforce: '25%' } })).toEqual(['rollout.enforce: must be a number in [0, 1], got "25%"'])
    expect(problemsOf({ rollout: { share: 0.5 } })[0]).toMatch(/^rollout\.share: must be left out/)
    expect(problemsOf({ rollout: 'gray' })).toEqual([`rollout: must be 'enforce', 'shadow' or { enforce: share } with the share from 0 to 1, got "gray"`])
    const e = await engine({ rollout: { enforce: 0.25 } })
    expect(() => e.setRollout({ enforce: 2 })).toThrow(ConfigError)
    expect(() => e.setRollout('half' as never)).toThrow(/rollout: must be 'enforce', 'shadow' or \{ enforce: share \}/)
    expect(e.rollout).toEqual({ enforce: 0.25 })
    const versions = await engine({ versions: { versionOf: () => 1 } })
    expect(() => versions.setRollout('shadow')).toThrow(/rollout: must be 'enforce' with versions/)
  })
})
