/**
 * The shard cycle (DESIGN.md §4.8): each message settles when its own handler
 * ends, a later copy of a running key waits for that key alone, the in-flight
 * bound holds, and every claim keeps its lease from its claim to its
 * settlement, even under a run of synchronous handlers (issue 17).
 */
import { afterEach, describe, expect, it } from 'vitest'
import { createEngine, type Engine } from '../../dist/src/engine.js'
import type { EngineOptions } from '../../dist/src/config.js'
import type { Message, Outcome } from '../../dist/src/message.js'

const engines: Engine[] = []
afterEach(async () => {
  await Promise.all(engines.splice(0).map((e) => e.close()))
})
async function engine(options: EngineOptions): Promise<Engine> {
  const e = await createEngine(options)
  engines.push(e)
  return e
}

/** A promise the test resolves when it chooses. */
function gate(): { wait: Promise<void>; open: () => void } {
  let open!: () => void
  const wait = new Promise<void>((resolve) => (open = resolve))
  return { wait, open }
}

function busyWait(ms: number): void {
  const until = performance.now() + ms
  while (performance.now() < until);
}

describe.each([0, 1])('shard cycle, threads %i', (threads) => {
  it('a message settles while another key of its shard still runs (no head-of-line blocking)', async () => {
    const e = await engine({ shards: 1, threads })
    const slow = gate()
    let slowDone = false
    const first = e.process({ key: 'slow' }, async () => {
      await slow.wait
      return 'slow'
    })
    void first.then(() => (slowDone = true))
    // Sent after the slow one, in later turns: each one must settle on its own.
    for (let i = 0; i < 5; i++) {
      const fast = await e.process({ key: `fast-${i}` }, async () => `fast-${i}`)
      expect(fast).toEqual({ key: `fast-${i}`, verdict: 'new', result: `fast-${i}` })
    }
    expect(slowDone).toBe(false)
    slow.open()
    expect(await first).toEqual({ key: 'slow', verdict: 'new', result: 'slow' })
  })

  it('a later copy of a running key waits for that key alone, then is a duplicate', async () => {
    const e = await engine({ shards: 1, threads })
    const slow = gate()
    let effects = 0
    const handler = async (m: Message) => {
      effects++
      if (m.key === 'k') await slow.wait
      return m.key
    }
    const firstCopy = e.process({ key: 'k' }, handler)
    await new Promise((resolve) => setTimeout(resolve, 20))
    let secondDone = false
    const secondCopy = e.process({ key: 'k' }, handler).then((o) => ((secondDone = true), o))
    const other = await e.process({ key: 'other' }, handler)
    expect(other.verdict).toBe('new')
    expect(secondDone).toBe(false)
    slow.open()
    expect((await firstCopy).verdict).toBe('new')
    expect(await secondCopy).toEqual({ key: 'k', verdict: 'duplicate', result: 'k' })
    expect(effects).toBe(2)
  })

  it('each outcome of a batch is handed out when its own handler ends (submit)', async () => {
    const e = await engine({ shards: 1, threads })
    const gates = [gate(), gate(), gate()]
    const order: number[] = []
    const done = e.submit(
      [{ key: 'a', payload: 0 }, { key: 'b', payload: 1 }, { key: 'c', payload: 2 }],
      async (m: Message) => {
        await gates[m.payload as number].wait
      },
      (i: number, o: Outcome) => {
        expect(o.verdict).toBe('new')
        order.push(i)
      },
    )
    for (const i of [2, 0, 1]) {
      gates[i].open()
      while (order.length < [2, 0, 1].indexOf(i) + 1) await new Promise((resolve) => setTimeout(resolve, 1))
    }
    await done
    expect(order).toEqual([2, 0, 1])
  })

  it('at most maxInFlightPerShard handlers of a shard run at once; the rest wait in the mailbox', async () => {
    const e = await engine({ shards: 1, threads, maxInFlightPerShard: 4 })
    let running = 0
    let most = 0
    const outcomes = await e.processBatch(
      Array.from({ length: 40 }, (_, i) => ({ key: `k-${i}` })),
      async () => {
        most = Math.max(most, ++running)
        await new Promise((resolve) => setTimeout(resolve, 2))
        running--
      },
    )
    expect(outcomes.every((o) => o.verdict === 'new' && o.error === undefined)).toBe(true)
    expect(most).toBe(4)
  })

  it('64 synchronous handlers of 10 ms with leaseMs 500 all commit: no LEASE_LOST, 64 effects', async () => {
    const e = await engine({ shards: 1, threads, leaseMs: 500 })
    const effects = new Map<string, number>()
    const messages = Array.from({ length: 64 }, (_, i) => ({ key: `sync-${i}` }))
    const outcomes = await e.processBatch(messages, (m) => {
      busyWait(10)
      effects.set(m.key, (effects.get(m.key) ?? 0) + 1)
    })
    const codes = outcomes.flatMap((o) => (o.error === undefined ? [] : [o.error.code]))
    expect(codes).toEqual([])
    expect([...effects.values()].reduce((a, b) => a + b, 0)).toBe(64)
    expect(e.stats().totals.fencedWrites).toBe(0)
    // The copies sent again are duplicates: every key is DONE.
    const again = await e.processBatch(messages, () => busyWait(10))
    expect(again.every((o) => o.verdict === 'duplicate')).toBe(true)
  })

  it('1,024 synchronous handlers of 3 ms with leaseMs 3,000 (the defaults scaled by 1/10) all commit', async () => {
    const e = await engine({ shards: 1, threads, leaseMs: 3000 })
    let effects = 0
    const outcomes = await e.processBatch(
      Array.from({ length: 1024 }, (_, i) => ({ key: `sync-${i}` })),
      () => {
        busyWait(3)
        effects++
      },
    )
    expect(outcomes.filter((o) => o.error !== undefined).map((o) => o.error!.code)).toEqual([])
    expect(effects).toBe(1024)
  }, 60_000)
})

describe('bounded close', () => {
  it.each([0, 1])('threads %i: a handler that never settles: close({ timeoutMs }) returns within its bound, its caller gets ENGINE_CLOSED, its signal was aborted, unrelated keys of its shard settled', async (threads) => {
    const e = await createEngine({ shards: 1, threads })
    let signal: AbortSignal | undefined
    const stuck = e.process({ key: 'stuck' }, (_m, context) => {
      signal = context.signal
      return new Promise(() => {})
    })
    const others = await e.processBatch(Array.from({ length: 8 }, (_, i) => ({ key: `other-${i}` })), async () => 'ok')
    expect(others.every((o) => o.verdict === 'new' && o.result === 'ok')).toBe(true)
    const started = performance.now()
    await e.close({ timeoutMs: 300 })
    const took = performance.now() - started
    const outcome = await stuck
    expect(outcome.verdict).toBe('new')
    expect(outcome.error?.code).toBe('ENGINE_CLOSED')
    expect(signal?.aborted).toBe(true)
    expect(e.stats().totals.droppedSettlements).toBe(1)
    // Bounded: the deadline, plus at most the second the stores and threads get to stop.
    expect(took).toBeLessThan(300 + 1000 + 500)
    console.log(`bounded close, threads ${threads}: returned in ${took.toFixed(0)} ms (timeoutMs 300); stuck handler's caller got ${outcome.error?.code}; 8 of 8 unrelated keys settled; droppedSettlements 1`)
  })

  it('messages still in the mailbox at the deadline get in-flight with ENGINE_CLOSED; no handler runs for them', async () => {
    const e = await createEngine({ shards: 1, maxInFlightPerShard: 1 })
    let runs = 0
    const outcomes = e.processBatch(Array.from({ length: 5 }, (_, i) => ({ key: `k-${i}` })), () => {
      runs++
      return new Promise(() => {})
    })
    await new Promise((resolve) => setTimeout(resolve, 50))
    await e.close({ timeoutMs: 100 })
    const verdicts = (await outcomes).map((o) => `${o.verdict}:${o.error?.code}`)
    expect(verdicts).toEqual(['new:ENGINE_CLOSED', ...Array(4).fill('in-flight:ENGINE_CLOSED')])
    expect(runs).toBe(1)
  })

  it('a bad timeoutMs is a ConfigError naming it; the engine stays open', async () => {
    const e = await engine({})
    await expect(e.close({ timeoutMs: -1 })).rejects.toThrow('timeoutMs: must be an integer from 0 to 2147483647, got -1')
    expect((await e.process({ key: 'still-open' }, () => 'ok')).verdict).toBe('new')
  })
})

describe('re-entrant calls', () => {
  it('a handler that awaits engine.process() of another key on the same engine completes: 20 of 20, 8 shards, no deadlock', async () => {
    const e = await engine({ shards: 8 })
    const outcomes = await e.processBatch(
      Array.from({ length: 20 }, (_, i) => ({ key: `outer-${i}` })),
      async (m: Message) => (await e.process({ key: `inner-${m.key}` }, async () => 'inner')).verdict,
    )
    expect(outcomes.map((o) => o.result)).toEqual(Array(20).fill('new'))
  })
})
