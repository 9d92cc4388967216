/**
 * A strategy per message type: each type runs in an engine of its own (store,
 * window, rollout), a batch is split by type and its outcomes come back in
 * order; a type with no strategy runs with the default or is invalid.
 */
import promClient from 'prom-client'
import { afterEach, describe, expect, it } from 'vitest'
import { ManualClock } from '../../dist/src/clock.js'
import { createEngine, type Engine } from '../../dist/src/engine.js'
import { ConfigError, ErrorCode } from '../../dist/src/errors.js'
import type { EngineOptions } from '../../dist/src/config.js'
import type { Message } from '../../dist/src/message.js'
import { resolveLayer } from '../../dist/src/http/options.js'
import { problemsOf } from '../support/config-problems.js'

const HOUR = 3_600_000
const DAY = 24 * HOUR

const engines: Engine[] = []
afterEach(async () => {
  await Promise.all(engines.splice(0).map((e) => e.close()))
})
async function engine(options: EngineOptions, clock?: ManualClock): Promise<Engine> {
  const e = await createEngine({ shards: 2, ...options }, clock === undefined ? {} : { clock })
  engines.push(e)
  return e
}

const matrix: EngineOptions['strategies'] = {
  payments: { ttlMs: 7 * DAY },
  notifications: { ttlMs: HOUR },
}

describe('routing by type', () => {
  it('keeps each type in its own engine, with its own window', async () => {
    const clock = new ManualClock(1_000)
    const e = await engine({ strategies: matrix }, clock)
    const batch: Message[] = [
      { key: 'k1', type: 'payments' },
      { key: 'k1', type: 'notifications' },
    ]
    // The same key under two types is two records: each type's store has its own.
    expect((await e.processBatch(batch, (m) => m.type)).map((o) => [o.verdict, o.result])).toEqual([
      ['new', 'payments'],
      ['new', 'notifications'],
    ])
    expect((await e.processBatch(batch, () => 'again')).map((o) => o.verdict)).toEqual(['duplicate', 'duplicate'])
    clock.advance(HOUR + 1)
    // Past one hour: the notification's window is over, the payment's is not.
    expect((await e.processBatch(batch, () => 'again')).map((o) => o.verdict)).toEqual(['duplicate', 'new'])
    expect(e.strategy('payments')!.config.ttlMs).toBe(7 * DAY)
    expect(e.strategy('notifications')!.config.ttlMs).toBe(HOUR)
    expect(e.strategy('payments')!.stats().totals.verdicts).toMatchObject({ new: 1, duplicate: 2 })
    expect(e.strategy('notifications')!.stats().totals.verdicts).toMatchObject({ new: 2, duplicate: 1 })
    expect(e.stats().totals.verdicts).toMatchObject({ new: 3, duplicate: 3, invalid: 0 })
    expect(e.strategy('analytics')).toBeUndefined()
  })

  it('hands the decisions of every type to an observer of the whole engine, until it is removed', async () => {
    const e = await engine({ strategies: matrix })
    const seen: string[] = []
    const remove = e.addObserver((events) => {
      for (const event of events) seen.push(`${event.key}:${event.verdict}`)
    })
    const batch: Message[] = [
      { key: 'p1', type: 'payments' },
      { key: 'n1', type: 'notifications' },
    ]
    await e.processBatch(batch, () => 'ok')
    await e.processBatch(batch, () => 'ok')
    await new Promise((resolve) => setImmediate(resolve))
    expect(seen.sort()).toEqual(['n1:duplicate', 'n1:new', 'p1:duplicate', 'p1:new'])
    remove()
    await e.processBatch(batch, () => 'ok')
    await new Promise((resolve) => setImmediate(resolve))
    expect(seen).toHaveLength(4)
    expect(e.stats().observerFailures).toBe(0)
  })

  it('counts every type in one set of metrics series', async () => {
    const registry = new promClient.Registry()
    const e = await engine({ strategies: matrix, metrics: { registry } })
    const batch: Message[] = [
      { key: 'p1', type: 'payments' },
      { key: 'n1', type: 'notifications' },
      { key: 'n2', type: 'notifications' },
    ]
    await e.processBatch(batch, () => 'ok')
    await e.processBatch(batch, () => 'ok')
    // A scrape reads engine.stats() at most once per 50 ms: this one must come after the batches.
    await new Promise((resolve) => setTimeout(resolve, 60))
    const messages = await registry.getSingleMetric('idem_messages_total')!.get()
    const count = (verdict: string) => messages.values.find((v) => v.labels.verdict === verdict)?.value
    expect([count('new'), count('duplicate')]).toEqual([3, 3])
  })

  it('sends admin calls to the engine of one type', async () => {
    const e = await engine({ strategies: matrix })
    await e.processBatch([{ key: 'p1', type: 'payments' }], () => 'ok')
    await expect(e.inspect('p1')).rejects.toMatchObject({ code: ErrorCode.INVALID_CONFIG, message: expect.stringContaining('engine.strategy(type).inspect') })
    await expect(e.forget('p1')).rejects.toMatchObject({ code: ErrorCode.INVALID_CONFIG })
    await expect(e.purge({ namespace: 'x' })).rejects.toMatchObject({ code: ErrorCode.INVALID_CONFIG })
    expect((await e.strategy('payments')!.inspect('p1')).state).toBe('done')
    expect(await e.strategy('payments')!.forget('p1')).toBe(true)
    expect((await e.processBatch([{ key: 'p1', type: 'payments' }], () => 'again'))[0].verdict).toBe('new')
  })

  it('keeps the order of outcomes in a mixed batch, and calls each with the batch index', async () => {
    const e = await engine({ strategies: { a: {}, b: {}, c: {} } })
    const types = ['a', 'b', 'nope', 'c']
    const batch: Message[] = Array.from({ length: 400 }, (_, i) => ({ key: `k${i}`, type: types[(i * 7) % 4], payload: i }))
    const valid = (i: number) => batch[i].type !== 'nope'
    for (const pass of ['new', 'duplicate']) {
      const each: unknown[] = []
      const outcomes = await e.submit(batch, (m) => m.payload, (i, outcome) => {
        expect(each[i]).toBeUndefined()
        each[i] = outcome
      })
      expect(outcomes.map((o) => o.key)).toEqual(batch.map((m) => m.key))
      outcomes.forEach((outcome, i) => {
        expect(each[i]).toBe(outcome)
        if (valid(i)) expect(outcome).toMatchObject({ verdict: pass, result: i })
        else expect(outcome).toMatchObject({ verdict: 'invalid', error: { code: ErrorCode.UNKNOWN_TYPE } })
      })
    }
    for (const type of ['a', 'b', 'c']) expect(e.strategy(type)!.stats().totals.verdicts).toMatchObject({ new: 100, duplicate: 100 })
    expect(e.stats().totals.verdicts).toMatchObject({ new: 300, duplicate: 300, invalid: 200 })
  })

  it('reads the type from typeOf, by default the type field, else the namespace', async () => {
    const e = await engine({ strategies: { eu: { ttlMs: HOUR }, payments: {} }, unknownType: 'invalid' })
    const out = await e.processBatch([{ key: 'x', namespace: 'eu' }, { key: 'y', namespace: 'eu', type: 'payments' }, { key: 'z' }], () => 1)
    expect(out.map((o) => o.verdict)).toEqual(['new', 'new', 'invalid'])
    expect(e.strategy('eu')!.stats().totals.verdicts.new).toBe(1)
    expect(e.strategy('payments')!.stats().totals.verdicts.new).toBe(1)

    const byPayload = await engine({ strategies: { big: {}, small: {} }, typeOf: (m) => ((m.payload as number) > 10 ? 'big' : 'small') })
    await byPayload.processBatch([{ key: 'a', payload: 100 }, { key: 'b', payload: 1 }, { key: 'c', payload: 2 }], () => 1)
    expect(byPayload.strategy('big')!.stats().totals.verdicts.new).toBe(1)
    expect(byPayload.strategy('small')!.stats().totals.verdicts.new).toBe(2)
  })

  it('answers a type with no strategy invalid with UNKNOWN_TYPE, or runs it with the default', async () => {
    const strict = await engine({ strategies: matrix })
    const [known, unknown, none] = await strict.processBatch([{ key: 'a', type: 'payments' }, { key: 'b', type: 'analytics' }, { key: 'c' }], () => 1)
    expect(known.verdict).toBe('new')
    for (const outcome of [unknown, none]) {
      expect(outcome.verdict).toBe('invalid')
      expect(outcome.error?.code).toBe(ErrorCode.UNKNOWN_TYPE)
    }
    expect(unknown.error?.message).toBe('type: must be a type of strategies (payments, notifications), as there is no default strategy, got "analytics"')
    expect(strict.stats().totals.verdicts.invalid).toBe(2)

    const throwing = await engine({ strategies: matrix, typeOf: () => { throw new Error('no type here') } })
    const [thrown] = await throwing.processBatch([{ key: 'a' }], () => 1)
    expect(thrown).toMatchObject({ key: 'a', verdict: 'invalid' })
    expect(thrown.error?.code).toBe(ErrorCode.UNKNOWN_TYPE)
    expect(thrown.error?.message).toContain('no type here')

    const refused = await engine({ strategies: { ...matrix, default: {} }, unknownType: 'invalid' })
    const [odd, named] = await refused.processBatch([{ key: 'b', type: 'analytics' }, { key: 'c', type: 'default' }], () => 1)
    expect(odd.error?.message).toBe('type: must be a type of strategies (payments, notifications, default), as unknownType is \'invalid\', got "analytics"')
    expect(named.verdict).toBe('new')

    const withDefault = await engine({ strategies: { ...matrix, default: { ttlMs: 2 * HOUR } } })
    await withDefault.processBatch([{ key: 'b', type: 'analytics' }, { key: 'c' }], () => 1)
    expect(withDefault.strategy('default')!.config.ttlMs).toBe(2 * HOUR)
    expect(withDefault.strategy('default')!.stats().totals.verdicts.new).toBe(2)

    // unknownType 'default' with no default strategy: the engine's own options.
    const plain = await engine({ ttlMs: 5 * HOUR, strategies: matrix, unknownType: 'default' })
    await plain.processBatch([{ key: 'b', type: 'analytics' }], () => 1)
    expect(plain.strategy('default')!.config.ttlMs).toBe(5 * HOUR)
    expect(plain.strategy('default')!.stats().totals.verdicts.new).toBe(1)
  })

  it('changes the rollout of one type, or of all', async () => {
    const e = await engine({ strategies: { ...matrix, analytics: { rollout: 'shadow' } } })
    expect(e.strategy('analytics')!.rollout).toBe('shadow')
    e.setRollout('shadow', { type: 'payments' })
    expect(e.strategy('payments')!.rollout).toBe('shadow')
    expect(e.strategy('notifications')!.rollout).toBe('enforce')
    await e.processBatch([{ key: 'p', type: 'payments' }], () => 1)
    const [again] = await e.processBatch([{ key: 'p', type: 'payments' }], () => 2)
    expect(again).toMatchObject({ verdict: 'new', result: 2, shadow: { verdict: 'duplicate' } })
    e.setRollout({ enforce: 0.5 })
    for (const type of ['payments', 'notifications', 'analytics']) expect(e.strategy(type)!.rollout).toEqual({ enforce: 0.5 })
    expect(() => e.setRollout('enforce', { type: 'nope' })).toThrow(/type: must be a type of strategies \(payments, notifications, analytics\), got "nope"/)
    expect(() => e.setRollout({ enforce: 2 }, { type: 'payments' })).toThrow(ConfigError)
    const plain = await engine({})
    expect(() => plain.setRollout('enforce', { type: 'payments' })).toThrow(/type: must be left out on an engine without strategies/)
    await expect(plain.positionOf('orders', 0, 'payments')).rejects.toThrow(/type: must be left out on an engine without strategies/)
  })

  it('is refused by the HTTP layer, which takes one type\'s engine', async () => {
    const e = await engine({ strategies: matrix })
    expect(() => resolveLayer({ engine: e }, 'test')).toThrow(/engine: must be an engine without strategies .*got an instance of StrategyEngine/)
    expect(resolveLayer({ engine: e.strategy('notifications') }, 'test').policy.ttlMs).toBe(HOUR)
  })

  it('refuses calls after close', async () => {
    const e = await engine({ strategies: matrix })
    await e.close()
    await expect(e.processBatch([{ key: 'a', type: 'payments' }], () => 1)).rejects.toMatchObject({ code: ErrorCode.ENGINE_CLOSED })
  })
})

describe('bad strategies config', () => {
  it('names each bad field under its type', () => {
    expect(problemsOf({ strategies: { payments: { ttlMs: -1 } } })).toEqual(['strategies.payments.ttlMs: must be an integer from 1 to 4398046511104, got -1'])
    expect(problemsOf({ strategies: { payments: { ttl: 5 } } })).toEqual([expect.stringMatching(/^strategies\.payments\.ttl: must be left out \(not an option of a strategy; known: store, ttlMs, rollout, keepResults, mode\)/)])
    expect(problemsOf({ strategies: { payments: { rollout: { enforce: 1.5 } } } })).toEqual([expect.stringMatching(/^strategies\.payments\.rollout\.enforce: must be a number in \[0, 1\], got 1\.5/)])
    expect(problemsOf({ strategies: { payments: { rollout: { enforce: -0.1 } } } })).toEqual([expect.stringMatching(/^strategies\.payments\.rollout\.enforce: /)])
    expect(problemsOf({ strategies: { payments: { store: { kind: 'redis' } } } })).toEqual([expect.stringMatching(/^strategies\.payments\.store: must be given exactly one of/)])
    expect(problemsOf({ strategies: { payments: { store: { kind: 'postgres', url: 'postgres://h/db', tablePrefix: 'A-' } } } })).toEqual([expect.stringMatching(/^strategies\.payments\.store\.tablePrefix: /)])
    expect(problemsOf({ strategies: { payments: { store: { kind: 'nope' } } } })).toEqual([expect.stringMatching(/^strategies\.payments\.store\.kind: /)])
    expect(problemsOf({ strategies: { payments: { mode: 'owned' } } })).toEqual([expect.stringMatching(/^strategies\.payments\.mode: must be 'strict'/)])
    expect(problemsOf({ strategies: { payments: { keepResults: 'yes' } } })).toEqual(['strategies.payments.keepResults: must be a boolean, got "yes"'])
    expect(problemsOf({ strategies: { payments: 5 } })).toEqual([expect.stringMatching(/^strategies\.payments: must be an object like/)])
  })

  it('names the engine-wide fields that go with strategies', () => {
    expect(problemsOf({ strategies: {} })).toEqual(['strategies: must be an object with at least one message type, got {}'])
    expect(problemsOf({ strategies: 'payments' })).toEqual([expect.stringMatching(/^strategies: must be an object like/)])
    expect(problemsOf({ strategies: matrix, unknownType: 'drop' })).toEqual(["unknownType: must be 'default' or 'invalid', got \"drop\""])
    expect(problemsOf({ strategies: matrix, typeOf: 'type' })).toEqual(['typeOf: must be a function (message) => type, got "type"'])
    expect(problemsOf({ typeOf: () => 'a' })).toEqual([expect.stringMatching(/^typeOf: must be given only with strategies/)])
    expect(problemsOf({ unknownType: 'invalid' })).toEqual([expect.stringMatching(/^unknownType: must be given only with strategies/)])
    expect(problemsOf({ strategies: matrix, mode: 'owned' })).toEqual([expect.stringMatching(/^mode: must be 'strict' with strategies/)])
    // A strategy that breaks a rule of the engine's options is named under its type.
    expect(problemsOf({ versions: { versionOf: () => 1 }, strategies: { payments: { rollout: 'shadow' } } })).toEqual([expect.stringMatching(/^strategies\.payments\.rollout: must be 'enforce' with versions/)])
    // Bad engine-wide options are named once, not once per type.
    expect(problemsOf({ ttlMs: 0, strategies: matrix })).toEqual(['ttlMs: must be an integer from 1 to 4398046511104, got 0'])
  })
})
