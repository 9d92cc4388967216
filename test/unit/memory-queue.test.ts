/**
 * The in-memory transport as a user's test meets it: imported from the main
 * entry by package name, driving a real engine on the memory store.
 */
import { afterEach, describe, expect, it, vi } from 'vitest'
import { ConfigError, ErrorCode, IdemError, MemoryQueue, Verdict, consumeMemoryQueue, createEngine, type Engine, type Message, type Outcome } from 'idem'
import { MemoryQueue as BuiltMemoryQueue } from '../../dist/src/transport/memory-queue.js'

const engines: Engine[] = []
async function engine(): Promise<Engine> {
  const created = await createEngine({ shards: 2, store: { kind: 'memory' } })
  engines.push(created)
  return created
}
afterEach(async () => {
  await Promise.all(engines.splice(0).map((e) => e.close()))
})

describe('MemoryQueue through the main entry', () => {
  it('is the built transport', () => {
    expect(import.meta.resolve('idem')).toMatch(/\/dist\/src\/index\.js$/)
    expect(MemoryQueue).toBe(BuiltMemoryQueue)
  })

  it('runs each key once however often it is delivered, and acks every delivery', async () => {
    const e = await engine()
    const queue = new MemoryQueue<{ amount: number }>()
    const charged: string[] = []
    for (const key of ['order-1', 'order-2', 'order-1', 'order-3', 'order-2', 'order-1']) queue.add({ key, payload: { amount: 5 } })
    await consumeMemoryQueue(queue, e, (message) => {
      charged.push(message.key)
    })
    expect(charged.sort()).toEqual(['order-1', 'order-2', 'order-3'])
    expect([queue.acked, queue.redeliveries, queue.failed.length, queue.waiting]).toEqual([6, 0, 0, 0])
  })

  it('delivers again a message whose handler threw, and runs it again', async () => {
    const e = await engine()
    const queue = new MemoryQueue({ retryDelayMs: 1 })
    let runs = 0
    queue.add({ key: 'flaky' })
    await consumeMemoryQueue(queue, e, () => {
      if (++runs === 1) throw new Error('card service timed out')
    })
    expect([runs, queue.acked, queue.redeliveries, queue.failed.length]).toEqual([2, 1, 1, 0])
  })

  it('parks a message that throws on every attempt in failed, after maxAttempts runs', async () => {
    const e = await engine()
    const queue = new MemoryQueue({ maxAttempts: 3, retryDelayMs: 1 })
    let runs = 0
    queue.add({ key: 'poison' })
    await consumeMemoryQueue(queue, e, () => {
      runs++
      throw new Error('always')
    })
    expect(runs).toBe(3)
    expect(queue.acked).toBe(0)
    expect(queue.failed).toEqual([
      expect.objectContaining({ message: { key: 'poison' }, attempts: 3, reason: expect.stringMatching(/^HANDLER_FAILED: .*always/) }),
    ])
    expect(queue.failed[0].outcome.error).toBeInstanceOf(IdemError)
  })

  it('fails a conflict and a bad key at once, without a retry', async () => {
    const e = await engine()
    const queue = new MemoryQueue({ retryDelayMs: 1 })
    queue.add({ key: 'order-9', fingerprint: 'a' })
    await consumeMemoryQueue(queue, e, () => undefined)
    queue.add({ key: 'order-9', fingerprint: 'b' })
    queue.add({ key: '' })
    await consumeMemoryQueue(queue, e, () => undefined)
    // The bad key is failed while routing, before the conflict comes back from its shard.
    expect(queue.failed.map((f) => [f.outcome.verdict, f.outcome.error?.code, f.attempts])).toEqual([
      [Verdict.INVALID, ErrorCode.INVALID_KEY, 1],
      [Verdict.CONFLICT, ErrorCode.CONFLICT, 1],
    ])
    expect([queue.acked, queue.redeliveries]).toEqual([1, 0])
  })

  it('acks a duplicate as soon as its outcome is final, not after the slow handler batched with it', async () => {
    const e = await engine()
    const queue = new MemoryQueue()
    queue.add({ key: 'done-before' })
    await consumeMemoryQueue(queue, e, () => undefined)
    let finishSlow!: () => void
    const slow = new Promise<void>((resolve) => (finishSlow = resolve))
    queue.add({ key: 'slow' })
    queue.add({ key: 'done-before' })
    const consuming = consumeMemoryQueue(queue, e, (message) => (message.key === 'slow' ? slow : undefined), { batchesInFlight: 1 })
    try {
      await vi.waitFor(() => expect(queue.acked).toBe(2), { timeout: 5_000 })
    } finally {
      finishSlow()
      await consuming
    }
    expect(queue.acked).toBe(3)
  })

  it('stops taking deliveries when its signal aborts, and settles what it took', async () => {
    const e = await engine()
    const queue = new MemoryQueue({ maxAttempts: 1_000_000, retryDelayMs: 1 })
    queue.add({ key: 'never-works' })
    let runs = 0
    await consumeMemoryQueue(
      queue,
      e,
      () => {
        runs++
        throw new Error('down')
      },
      { signal: AbortSignal.timeout(100) },
    )
    expect(runs).toBeGreaterThan(1)
    expect(queue.waiting).toBe(1)
    expect(queue.redeliveries).toBe(runs)
  })
})

describe('MemoryQueue settle, by hand', () => {
  const inFlight = (message: Message): Outcome => ({
    key: message.key,
    verdict: Verdict.IN_FLIGHT,
    error: new IdemError(ErrorCode.IN_FLIGHT, 'another owner holds the key', { key: message.key }),
  })
  const handlerFailed = (message: Message): Outcome => ({
    key: message.key,
    verdict: Verdict.NEW,
    error: new IdemError(ErrorCode.HANDLER_FAILED, 'boom', { key: message.key }),
  })

  it('redelivers an in-flight message without using an attempt, however often', async () => {
    const queue = new MemoryQueue({ maxAttempts: 2, retryDelayMs: 0 })
    queue.add({ key: 'held-elsewhere' })
    for (let round = 0; round < 10; round++) {
      const [delivery] = queue.take(10)
      expect(delivery.attempts).toBe(1)
      expect(queue.settle(delivery, inFlight(delivery.message))).toBe('wait')
      await new Promise((resolve) => setTimeout(resolve, 1))
    }
    expect([queue.failed.length, queue.waiting, queue.redeliveries]).toEqual([0, 1, 10])
    // Retries do use attempts: two, then failed.
    const [first] = queue.take(10)
    expect(queue.settle(first, handlerFailed(first.message))).toBe('retry')
    await new Promise((resolve) => setTimeout(resolve, 1))
    const [second] = queue.take(10)
    expect(second.attempts).toBe(2)
    queue.settle(second, handlerFailed(second.message))
    expect(queue.failed).toEqual([expect.objectContaining({ attempts: 2, reason: 'HANDLER_FAILED: boom' })])
    expect(queue.waiting).toBe(0)
  })
})

describe('MemoryQueue options', () => {
  it.each<[string, object]>([
    ['maxAttempts', { maxAttempts: 0 }],
    ['maxAttempts', { maxAttempts: 2.5 }],
    ['retryDelayMs', { retryDelayMs: -1 }],
  ])('refuses a bad %s %o with a ConfigError naming it', (field, options) => {
    expect(() => new MemoryQueue(options)).toThrow(ConfigError)
    expect(() => new MemoryQueue(options)).toThrow(
      expect.objectContaining({ problems: [expect.stringMatching(new RegExp(`^${field}: must be an integer from \\d+ to \\d+, got `))] }),
    )
  })

  it.each<[string, object]>([
    ['batchSize', { batchSize: 0 }],
    ['batchesInFlight', { batchesInFlight: 1.5 }],
  ])('consumeMemoryQueue refuses a bad %s %o with a ConfigError naming it', async (field, options) => {
    const e = await engine()
    const queue = new MemoryQueue()
    queue.add({ key: 'a' })
    await expect(consumeMemoryQueue(queue, e, () => undefined, options)).rejects.toThrow(
      expect.objectContaining({ code: ErrorCode.INVALID_CONFIG, problems: [expect.stringMatching(new RegExp(`^${field}: `))] }),
    )
    expect(queue.waiting).toBe(1)
  })
})
