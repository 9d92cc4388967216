/**
 * The engine's in-flight policy `wait`, on the real Redis: two engines share
 * one store (as two processes would), the first holds a key in a handler the
 * test controls, and the second's message of that key waits for the first's
 * outcome instead of coming back in-flight.
 */
import { randomUUID } from 'node:crypto'
import { Redis } from 'ioredis'
import { afterAll, afterEach, describe, expect, it } from 'vitest'
import { createEngine, type Engine } from '../../dist/src/engine.js'
import { ErrorCode } from '../../dist/src/errors.js'
import { deleteKeysUnder } from '../../dist/src/store/redis/delete-keys.js'
import { MemoryQueue, consumeMemoryQueue } from '../../dist/src/transport/memory-queue.js'
import { problemsOf } from '../support/config-problems.js'
import { waitFor } from '../support/wait-for.js'

const url = 'redis://127.0.0.1:6379'
const redis = new Redis(url)
const engines: Engine[] = []
const prefixes: string[] = []
afterEach(async () => {
  await Promise.all(engines.splice(0).map((e) => e.close({ timeoutMs: 1000 })))
  for (const prefix of prefixes.splice(0)) await deleteKeysUnder(redis, prefix)
})
afterAll(() => redis.disconnect())

/** Two engines on one fresh prefix: `owner` defers (the default), `waiter` waits up to maxMs. */
async function pair(maxMs: number, leaseMs = 30_000): Promise<{ owner: Engine; waiter: Engine }> {
  const prefix = `t:${randomUUID()}:`
  prefixes.push(prefix)
  const store = { kind: 'redis', url, prefix } as const
  const owner = await createEngine({ shards: 2, leaseMs, lru: { maxKeys: 0 }, store })
  const waiter = await createEngine({ shards: 2, leaseMs, lru: { maxKeys: 0 }, store, inFlight: { wait: { maxMs, pollMs: 20 } } })
  engines.push(owner, waiter)
  return { owner, waiter }
}

/** A handler the test ends: `end(value)` returns, `fail(error)` throws. */
function held<R>() {
  let end!: (value: R) => void
  let fail!: (error: Error) => void
  const promise = new Promise<R>((resolve, reject) => ((end = resolve), (fail = reject)))
  return { handler: () => promise, end, fail }
}

/** The waiter has asked the store about its key at least `n` times (its claims). */
const asked = (e: Engine, n: number) => () => e.stats().totals.storeOperations >= n

describe('inFlight: { wait } on the redis store', () => {
  it('the owner commits within maxMs: the waiter gets duplicate with its result, its handler never runs', async () => {
    const { owner, waiter } = await pair(60_000)
    const first = held<string>()
    const running = owner.process({ key: 'order-1' }, first.handler)
    await waitFor('the owner claimed', asked(owner, 1))
    let runs = 0
    const waiting = waiter.process({ key: 'order-1' }, () => ++runs)
    await waitFor('the waiter asked twice', asked(waiter, 2))
    first.end('charged')
    expect(await running).toEqual({ key: 'order-1', verdict: 'new', result: 'charged' })
    expect(await waiting).toEqual({ key: 'order-1', verdict: 'duplicate', result: 'charged' })
    expect(runs).toBe(0)
  })

  it('the owner throws (its claim released): the waiter claims the key and runs it', async () => {
    const { owner, waiter } = await pair(60_000)
    const first = held<string>()
    const running = owner.process({ key: 'order-2' }, first.handler)
    await waitFor('the owner claimed', asked(owner, 1))
    const waiting = waiter.process({ key: 'order-2' }, () => 'second')
    await waitFor('the waiter asked twice', asked(waiter, 2))
    first.fail(new Error('card declined'))
    expect((await running).error?.code).toBe(ErrorCode.HANDLER_FAILED)
    expect(await waiting).toEqual({ key: 'order-2', verdict: 'new', result: 'second' })
  })

  it('the owner outlasts maxMs: the waiter gets in-flight, as without waiting', async () => {
    const { owner, waiter } = await pair(300)
    const first = held<string>()
    const running = owner.process({ key: 'order-3' }, first.handler)
    await waitFor('the owner claimed', asked(owner, 1))
    const out = await waiter.process({ key: 'order-3' }, () => 'never')
    expect(out.verdict).toBe('in-flight')
    expect(out.error?.code).toBe(ErrorCode.IN_FLIGHT)
    expect(waiter.stats().totals.storeOperations).toBeGreaterThan(2)
    first.end('late')
    expect((await running).verdict).toBe('new')
  })

  it("the owner's lease lapses (its engine gave up on a hung handler at close): the waiter claims the key after the lapse and runs it", async () => {
    const { owner, waiter } = await pair(60_000, 400)
    const running = owner.process({ key: 'order-4' }, () => new Promise(() => {}))
    await waitFor('the owner claimed', asked(owner, 1))
    const waiting = waiter.process({ key: 'order-4' }, () => 'taken over')
    await waitFor('the waiter asked twice', asked(waiter, 2))
    // The close gives up at once: renewals stop, the claim is left to lapse.
    await owner.close({ timeoutMs: 0 })
    expect((await running).error?.code).toBe(ErrorCode.ENGINE_CLOSED)
    expect(await waiting).toEqual({ key: 'order-4', verdict: 'new', result: 'taken over' })
  })

  it('other keys get their outcomes while a key waits; a later copy of the waiting key waits behind it and is a duplicate too', async () => {
    const { owner, waiter } = await pair(60_000)
    const first = held<string>()
    const running = owner.process({ key: 'busy' }, first.handler)
    await waitFor('the owner claimed', asked(owner, 1))
    let settled = false
    const waiting = waiter.process({ key: 'busy' }, () => 'no').then((out) => ((settled = true), out))
    const copy = waiter.process({ key: 'busy' }, () => 'no')
    const others = await waiter.processBatch(Array.from({ length: 50 }, (_, i) => ({ key: `free-${i}` })), (m) => m.key)
    expect(others.every((o) => o.verdict === 'new')).toBe(true)
    expect(settled).toBe(false)
    first.end('done')
    await running
    expect((await waiting).verdict).toBe('duplicate')
    expect(await copy).toEqual({ key: 'busy', verdict: 'duplicate', result: 'done' })
  })

  it('close() while a message waits: it gets in-flight with ENGINE_CLOSED within the bound', async () => {
    const { owner, waiter } = await pair(600_000)
    const first = held<string>()
    void owner.process({ key: 'order-5' }, first.handler)
    await waitFor('the owner claimed', asked(owner, 1))
    const waiting = waiter.process({ key: 'order-5' }, () => 'no')
    await waitFor('the waiter asked twice', asked(waiter, 2))
    await waiter.close({ timeoutMs: 100 })
    const out = await waiting
    expect(out.verdict).toBe('in-flight')
    expect(out.error?.code).toBe(ErrorCode.ENGINE_CLOSED)
    first.end('done')
  })

  it('through a transport (the in-memory queue): the waiting message is settled by the owner’s outcome, never redelivered', async () => {
    const { owner, waiter } = await pair(60_000)
    const first = held<string>()
    const running = owner.process({ key: 'job-1' }, first.handler)
    await waitFor('the owner claimed', asked(owner, 1))
    const queue = new MemoryQueue<number>({ retryDelayMs: 10 })
    queue.add({ key: 'job-1', payload: 1 })
    for (let i = 0; i < 20; i++) queue.add({ key: `job-free-${i}`, payload: i })
    const consumed = consumeMemoryQueue(queue, waiter, () => 'ran')
    await waitFor('the free jobs acked', () => queue.acked === 20)
    first.end('done')
    await running
    await consumed
    expect(queue.acked).toBe(21)
    expect(queue.redeliveries).toBe(0)
    expect(queue.failed).toEqual([])
  })
})

describe('inFlight option: bad input', () => {
  it('each bad value is a ConfigError naming the field', () => {
    expect(problemsOf({ inFlight: 'wait' })).toEqual([expect.stringMatching(/^inFlight: must be 'defer' or an object like \{ wait: \{ maxMs: 5000 \} \}/)])
    expect(problemsOf({ inFlight: {} })).toEqual([expect.stringMatching(/^inFlight: must be 'defer' or an object like/)])
    expect(problemsOf({ inFlight: { wait: {} } })).toEqual([expect.stringMatching(/^inFlight\.wait\.maxMs: must be an integer from 1 to/)])
    expect(problemsOf({ inFlight: { wait: { maxMs: 0 } } })).toEqual([expect.stringMatching(/^inFlight\.wait\.maxMs: must be an integer from 1 to/)])
    expect(problemsOf({ inFlight: { wait: { maxMs: 100, pollMs: 0 } } })).toEqual([expect.stringMatching(/^inFlight\.wait\.pollMs: must be an integer from 1 to 60000/)])
    expect(problemsOf({ inFlight: { wait: { maxMs: 100, every: 5 } } })).toEqual([expect.stringMatching(/^inFlight\.wait\.every: must be left out/)])
    expect(problemsOf({ inFlight: { wait: 5 } })).toEqual([expect.stringMatching(/^inFlight\.wait: must be an object like \{ maxMs: 5000 \}/)])
    expect(problemsOf({ mode: 'owned', inFlight: { wait: { maxMs: 100 } } })).toEqual([expect.stringMatching(/^inFlight: must be 'defer' in owned mode/)])
    expect(problemsOf({ versions: { versionOf: () => 1 }, inFlight: { wait: { maxMs: 100 } } })).toEqual([expect.stringMatching(/^inFlight: must be 'defer' with versions/)])
  })
})
