import { afterEach, describe, expect, it } from 'vitest'
import { COUNTER_COUNT, Counter, VERDICT_COUNT, VerdictCode } from '../../dist/src/actor/protocol.js'
import { createEngine, type Engine } from '../../dist/src/engine.js'
import { Router } from '../../dist/src/router.js'
import { ManualClock } from '../../dist/src/clock.js'
import { ErrorCode, IdemError } from '../../dist/src/errors.js'
import type { Message } from '../../dist/src/message.js'
import { consumeMemoryQueue, MemoryQueue } from '../../dist/src/transport/memory-queue.js'
import { countingHandler } from '../support/counting-handler.js'

const engines: Engine[] = []
async function engine(options: Parameters<typeof createEngine>[0] = {}, clock?: ManualClock): Promise<Engine> {
  const created = await createEngine({ shards: 4, ...options }, clock === undefined ? {} : { clock })
  engines.push(created)
  return created
}
afterEach(async () => {
  await Promise.all(engines.splice(0).map((e) => e.close()))
})


describe('engine verdicts (threads: 0)', () => {
  it('new, then duplicate with the stored result, without running the handler again', async () => {
    const e = await engine()
    const { effects, handler } = countingHandler()
    expect(await e.process({ key: 'a' }, handler)).toEqual({ key: 'a', verdict: 'new', result: 'done:a' })
    expect(await e.process({ key: 'a' }, handler)).toEqual({ key: 'a', verdict: 'duplicate', result: 'done:a' })
    expect(effects.get('a')).toBe(1)
  })

  it('conflict when a settled key comes back with another fingerprint; duplicate when either has none', async () => {
    const e = await engine()
    const { handler } = countingHandler()
    await e.process({ key: 'a', fingerprint: 'v1' }, handler)
    const conflict = await e.process({ key: 'a', fingerprint: 'v2' }, handler)
    expect(conflict.verdict).toBe('conflict')
    expect(conflict.error).toBeInstanceOf(IdemError)
    expect(conflict.error?.code).toBe(ErrorCode.CONFLICT)
    expect(conflict.error?.message).toContain('"v1"')
    expect((await e.process({ key: 'a', fingerprint: 'v1' }, handler)).verdict).toBe('duplicate')
    expect((await e.process({ key: 'a' }, handler)).verdict).toBe('duplicate')
  })

  it('conflict is also found by the store when the LRU is off', async () => {
    const e = await engine({ lru: { maxKeys: 0 } })
    const { handler } = countingHandler()
    await e.process({ key: 'a', fingerprint: 'v1' }, handler)
    expect((await e.process({ key: 'a', fingerprint: 'v2' }, handler)).verdict).toBe('conflict')
    const stats = e.stats().totals
    expect(stats.lruHits).toBe(0)
  })

  it('a handler that throws releases the claim: the outcome carries the error and a redelivery runs it again', async () => {
    const e = await engine()
    let calls = 0
    const flaky = (): string => {
      calls++
      if (calls === 1) throw new Error('db down')
      return 'ok'
    }
    const first = await e.process({ key: 'a' }, flaky)
    expect(first.verdict).toBe('new')
    expect(first.error?.code).toBe(ErrorCode.HANDLER_FAILED)
    expect(first.error?.message).toContain('db down')
    expect(await e.process({ key: 'a' }, flaky)).toEqual({ key: 'a', verdict: 'new', result: 'ok' })
    expect((await e.process({ key: 'a' }, flaky)).verdict).toBe('duplicate')
    expect(calls).toBe(2)
  })

  it('async handlers that reject are released the same way', async () => {
    const e = await engine()
    const out = await e.process({ key: 'a' }, async () => {
      throw new Error('async failure')
    })
    expect(out.error?.code).toBe(ErrorCode.HANDLER_FAILED)
    expect((await e.process({ key: 'a' }, async () => 1)).verdict).toBe('new')
  })

  it('copies of one key in a batch run the handler once, in order', async () => {
    const e = await engine()
    const { effects, handler } = countingHandler()
    const outs = await e.processBatch([{ key: 'a' }, { key: 'b' }, { key: 'a' }, { key: 'a' }], handler)
    expect(outs.map((o) => o.verdict)).toEqual(['new', 'new', 'duplicate', 'duplicate'])
    expect(outs[2].result).toBe('done:a')
    expect(effects.get('a')).toBe(1)
  })

  it('a duplicate batched with a new key is handed out before that key commits (submit, for transports that settle each message)', async () => {
    const e = await engine({ shards: 1 })
    await e.process({ key: 'seen' }, () => 'first')
    let open!: () => void
    const gate = new Promise<void>((resolve) => (open = resolve))
    const early: string[] = []
    const all = e.submit([{ key: 'seen' }, { key: 'fresh' }], async (m: Message) => (m.key === 'fresh' ? gate.then(() => 'second') : 'never'), (i, outcome) =>
      early.push(`${i}:${outcome.verdict}`),
    )
    try {
      await new Promise((resolve) => setTimeout(resolve, 20))
      expect(early).toEqual(['0:duplicate'])
    } finally {
      open()
    }
    const outs = await all
    expect(early).toEqual(['0:duplicate', '1:new'])
    expect(outs).toEqual([
      { key: 'seen', verdict: 'duplicate', result: 'first' },
      { key: 'fresh', verdict: 'new', result: 'second' },
    ])
  })

  it('a repeated key whose first copy fails is run by its second copy', async () => {
    const e = await engine()
    const seen: unknown[] = []
    const outs = await e.processBatch([{ key: 'a', payload: 1 }, { key: 'a', payload: 2 }], (m) => {
      seen.push(m.payload)
      if (m.payload === 1) throw new Error('first fails')
      return m.payload
    })
    expect(outs.map((o) => o.verdict)).toEqual(['new', 'new'])
    expect(outs[0].error?.code).toBe(ErrorCode.HANDLER_FAILED)
    expect(outs[1].result).toBe(2)
    expect(seen).toEqual([1, 2])
  })

  it('concurrent process() calls for one key never run two handlers', async () => {
    const e = await engine()
    let running = 0
    let maxRunning = 0
    let effects = 0
    const slow = async (): Promise<void> => {
      running++
      maxRunning = Math.max(maxRunning, running)
      await new Promise((r) => setTimeout(r, 5))
      effects++
      running--
    }
    const outs = await Promise.all(Array.from({ length: 20 }, () => e.process({ key: 'same' }, slow)))
    expect(outs.filter((o) => o.verdict === 'new')).toHaveLength(1)
    expect(outs.filter((o) => o.verdict === 'duplicate')).toHaveLength(19)
    expect(effects).toBe(1)
    expect(maxRunning).toBe(1)
  })

  it('the same key under two namespaces is two keys; a key without namespace is a third', async () => {
    const e = await engine()
    const { handler } = countingHandler()
    const outs = await e.processBatch(
      [
        { key: 'x', namespace: 'tenant-a' },
        { key: 'x', namespace: 'tenant-b' },
        { key: 'x' },
        { key: 'b\u0000x', namespace: 'a' },
        { key: 'x', namespace: 'tenant-a' },
      ],
      handler,
    )
    expect(outs.map((o) => o.verdict)).toEqual(['new', 'new', 'new', 'invalid', 'duplicate'])
    expect(outs[3].error?.message).toContain('U+0000')
  })

  it('a lease that lapses during a slow handler fences its commit (LEASE_LOST, counted)', async () => {
    const clock = new ManualClock(0)
    const e = await engine({ leaseMs: 60_000 }, clock)
    const out = await e.process({ key: 'slow' }, () => {
      clock.advance(60_001)
      return 'late'
    })
    expect(out.verdict).toBe('new')
    expect(out.error?.code).toBe(ErrorCode.LEASE_LOST)
    expect(e.stats().totals.fencedWrites).toBe(1)
    // Never marked DONE: the next delivery runs it again.
    expect((await e.process({ key: 'slow' }, () => 'again')).verdict).toBe('new')
  })

  it('a DONE key is new again after its TTL (LRU, store and bloom all forget it)', async () => {
    const clock = new ManualClock(0)
    const e = await engine({ ttlMs: 1_000 }, clock)
    const { effects, handler } = countingHandler()
    await e.process({ key: 'a' }, handler)
    clock.advance(999)
    expect((await e.process({ key: 'a' }, handler)).verdict).toBe('duplicate')
    clock.advance(1)
    expect((await e.process({ key: 'a' }, handler)).verdict).toBe('new')
    expect(effects.get('a')).toBe(2)
    expect(e.stats().totals.bloomRotations).toBeGreaterThan(0)
  })

  it('shadow rollout runs the handler of a duplicate and settles it as the handler says; what enforce would have done rides along', async () => {
    const e = await engine({ rollout: 'shadow' })
    const { effects, handler } = countingHandler()
    await e.process({ key: 'a' }, handler)
    const dup = await e.process({ key: 'a' }, handler)
    expect(dup).toMatchObject({ key: 'a', verdict: 'new', shadow: { verdict: 'duplicate' } })
    expect(dup.error).toBeUndefined()
    expect(effects.get('a')).toBe(2)
    expect(e.stats().totals.shadowRuns).toBe(1)
    // The counts say what enforce would have decided.
    expect(e.stats().totals.verdicts).toMatchObject({ new: 1, duplicate: 1 })
  })

  it('shadow rollout: a duplicate whose run throws gets HANDLER_FAILED (retried, as without idem), a conflict runs and is done, and neither touches the record', async () => {
    const e = await engine({ rollout: 'shadow' })
    expect((await e.process({ key: 'a', fingerprint: 'f1' }, () => 'first')).verdict).toBe('new')
    const failed = await e.process({ key: 'a', fingerprint: 'f1' }, () => {
      throw new Error('boom')
    })
    expect(failed).toMatchObject({ verdict: 'new', shadow: { verdict: 'duplicate' } })
    expect(failed.error?.code).toBe(ErrorCode.HANDLER_FAILED)
    expect(failed.error?.message).toContain('boom')
    const conflict = await e.process({ key: 'a', fingerprint: 'f2' }, async () => 'ran anyway')
    expect(conflict).toEqual({ key: 'a', verdict: 'new', result: 'ran anyway', shadow: { verdict: 'conflict', code: ErrorCode.CONFLICT } })
    // The record still holds the first run's fingerprint: f1 is still a duplicate, f2 still a conflict.
    expect((await e.process({ key: 'a', fingerprint: 'f1' }, () => 'x')).shadow).toEqual({ verdict: 'duplicate' })
    expect((await e.process({ key: 'a', fingerprint: 'f2' }, () => 'x')).shadow).toEqual({ verdict: 'conflict', code: ErrorCode.CONFLICT })
  })

  it('a handler learns its claim: the owner token and the namespace-scoped store key; shadow runs of duplicates hold none', async () => {
    const e = await engine({ rollout: 'shadow' })
    const contexts: unknown[] = []
    const handler = (_m: Message, context: unknown) => void contexts.push(context)
    await e.process({ key: 'k', namespace: 'tenant' }, handler)
    await e.process({ key: 'k', namespace: 'tenant' }, handler)
    expect(contexts[0]).toEqual({ claim: { token: expect.stringMatching(/\S+/), storeKey: 'tenant\0k' }, signal: expect.any(AbortSignal) })
    expect(contexts[1]).toEqual({ signal: expect.any(AbortSignal) })
  })

  it('stats count each layer', async () => {
    const e = await engine({ shards: 2 })
    const { handler } = countingHandler()
    const keys = Array.from({ length: 500 }, (_, i) => ({ key: `order-${i}` }))
    await e.processBatch(keys, handler)
    await e.processBatch(keys, handler)
    const s = e.stats()
    expect(s.shards).toHaveLength(2)
    expect(s.totals.verdicts).toEqual({ new: 500, duplicate: 500, inFlight: 0, conflict: 0, invalid: 0, stale: 0 })
    // The memory store answers from memory: no LRU stands in front of it, so its duplicates are store answers.
    expect(s.totals.lruHits).toBe(0)
    expect(s.totals.bloomPositives + s.totals.bloomNegatives).toBe(1000)
    expect(s.totals.bloomPositives).toBeGreaterThanOrEqual(500)
    expect(s.shards[0].verdicts.new + s.shards[1].verdicts.new).toBe(500)
    expect(s.bloom.bytes).toBeGreaterThan(0)
  })
})

describe('stats cover every counter and every verdict', () => {
  const camelCase = (name: string): string => name.toLowerCase().replace(/_(.)/g, (_, letter: string) => letter.toUpperCase())
  const fromZero = (values: number[]): number[] => values.sort((a, b) => a - b)

  it('Counter and VerdictCode run from 0 without gaps, so the counts derived from them size the arrays', () => {
    expect(fromZero(Object.values(Counter))).toEqual([...Array(COUNTER_COUNT).keys()])
    expect(fromZero(Object.values(VerdictCode))).toEqual([...Array(VERDICT_COUNT).keys()])
  })

  it('each counter and each verdict a lane holds reaches stats() under its own name', async () => {
    const e = await engine({ shards: 1 })
    const { counters, verdicts } = e['lanes'][0].stats
    for (const index of Object.values(Counter)) counters[index] = index + 1
    for (const code of Object.values(VerdictCode)) verdicts[code] = 100 + code
    const { verdicts: verdictStats, ...counterStats } = e.stats().totals
    expect(counterStats).toEqual(Object.fromEntries(Object.entries(Counter).map(([name, index]) => [camelCase(name), index + 1])))
    expect(verdictStats).toEqual(Object.fromEntries(Object.entries(VerdictCode).map(([name, code]) => [camelCase(name), 100 + code])))
  })
})

describe('lanes never stall', () => {
  // A batch pushed in the tick where a lane's loop finds its mailbox empty must still be processed.
  it.each([0, 1])('threads %i: a queue drained 1024 at a time, 4 batches in flight, settles every message once', async (threads) => {
    const e = await engine({ shards: 8, threads })
    const { effects, handler } = countingHandler()
    const queue = new MemoryQueue()
    // Copies of a key sit side by side, so batches requeue repeats and lanes go idle and restart often.
    for (let i = 0; i < 5000; i++) queue.add({ key: `k${Math.floor(i * 0.7)}` })
    await consumeMemoryQueue(queue, e, handler)
    expect(queue.acked).toBe(5000)
    expect(effects.size).toBe(3500)
    expect([...effects.values()].every((n) => n === 1)).toBe(true)
  }, 10_000)
})

describe('bad input fails one message, never the batch', () => {
  it('gives each bad key an invalid verdict with a code, and processes the rest', async () => {
    const e = await engine()
    const { effects, handler } = countingHandler()
    const bad: unknown[] = [
      { key: 42 },
      { key: '' },
      { key: 'x'.repeat(1025) },
      { key: 'é'.repeat(513) }, // 1026 UTF-8 bytes
      { key: 'lone\uD800surrogate' },
      { key: 'nul\u0000inside' },
      null,
      'just a string',
      { key: 'ok-fp', fingerprint: 5 },
      { key: 'ok-ns', namespace: '' },
    ]
    const messages = [{ key: 'good-1' }, ...bad, { key: 'é'.repeat(512) }, { key: 'good-2' }] as Message[]
    const outs = await e.processBatch(messages, handler)
    expect(outs[0].verdict).toBe('new')
    expect(outs.at(-2)!.verdict).toBe('new') // exactly 1024 bytes is allowed
    expect(outs.at(-1)!.verdict).toBe('new')
    const invalid = outs.slice(1, 1 + bad.length)
    expect(invalid.every((o) => o.verdict === 'invalid')).toBe(true)
    expect(invalid.map((o) => o.error?.code)).toEqual([
      'INVALID_KEY', 'INVALID_KEY', 'INVALID_KEY', 'INVALID_KEY', 'INVALID_KEY', 'INVALID_KEY',
      'INVALID_MESSAGE', 'INVALID_MESSAGE', 'INVALID_MESSAGE', 'INVALID_KEY',
    ])
    expect(invalid[0].error?.message).toBe('key: must be a non-empty string, got 42')
    expect(invalid[1].error?.message).toBe('key: must be a non-empty string, got ""')
    expect(invalid[2].error?.message).toContain('(1025 bytes)')
    expect(invalid[3].error?.message).toContain('(1026 bytes)')
    expect(invalid[4].error?.message).toContain('lone surrogate')
    expect(invalid[5].error?.message).toContain('U+0000')
    expect(invalid[9].error?.message).toBe('namespace: must be a non-empty string, got ""')
    expect(effects.size).toBe(3)
    expect(e.stats().totals.verdicts.invalid).toBe(bad.length)
  })

  it('Router.route returns the count of invalid messages, each counted once', () => {
    const router = new Router(4, 1024)
    const bad: unknown[] = [null, 'just a string', { key: 'fp', fingerprint: 5 }, { key: 'ns', namespace: '' }, { key: '' }, { key: 42 }, { key: 'nul\u0000plain' }]
    expect(router.route([{ key: 'good', namespace: 'acme' }, ...bad, { key: 'good' }])).toBe(bad.length)
    expect(router.errors.filter((error) => error !== undefined)).toHaveLength(bad.length)
    expect(router.route([{ key: 'a' }, { key: 'b' }])).toBe(0)
  })

  it('a plain key holding U+0000 is invalid even beside namespaced keys: it never passes for a namespaced one', async () => {
    const e = await engine()
    const { effects, handler } = countingHandler()
    const outs = await e.processBatch([{ key: 'order-1', namespace: 'acme' }, { key: 'acme\u0000order-1' }, { key: 'plain' }], handler)
    expect(outs.map((o) => o.verdict)).toEqual(['new', 'invalid', 'new'])
    expect(outs[1].error?.code).toBe(ErrorCode.INVALID_KEY)
    expect(outs[1].error?.message).toContain('U+0000')
    expect(effects.size).toBe(2)
  })

  it('process after close is refused with ENGINE_CLOSED; close is idempotent', async () => {
    const e = await createEngine({ shards: 2 })
    await e.close()
    await e.close()
    await expect(e.process({ key: 'a' }, () => 1)).rejects.toMatchObject({ code: ErrorCode.ENGINE_CLOSED })
  })

  it('no handler at all is refused with NO_HANDLER', async () => {
    const e = await engine()
    await expect(e.process({ key: 'a' })).rejects.toMatchObject({ code: ErrorCode.NO_HANDLER })
    await expect(e.process({ key: 'a' }, 'nope' as never)).rejects.toMatchObject({ code: ErrorCode.NO_HANDLER })
  })

  it('createEngine refuses a bad config with every field named', async () => {
    await expect(createEngine({ shards: 0, threads: -1 })).rejects.toMatchObject({
      code: ErrorCode.INVALID_CONFIG,
      message: expect.stringMatching(/shards:[\s\S]*threads:/),
    })
  })
})
