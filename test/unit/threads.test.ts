import { fileURLToPath } from 'node:url'
import { afterEach, describe, expect, it } from 'vitest'
import { createEngine, type Engine } from '../../dist/src/engine.js'
import { ErrorCode } from '../../dist/src/errors.js'
import type { Message } from '../../dist/src/message.js'

const fixture = (name: string): string => fileURLToPath(new URL(`../support/fixtures/${name}`, import.meta.url))
const engines: Engine[] = []
afterEach(async () => {
  await Promise.all(engines.splice(0).map((e) => e.close()))
})
async function engine(options: Parameters<typeof createEngine>[0]): Promise<Engine> {
  const created = await createEngine(options)
  engines.push(created)
  return created
}

function stream(unique: number, copies: number): Message<number>[] {
  const messages: Message<number>[] = []
  for (let c = 0; c < copies; c++) for (let i = 0; i < unique; i++) messages.push({ key: `k-${(i * 7919) % unique}`, payload: i })
  return messages
}

describe('actors in worker threads', () => {
  it('threads: 2 with a function handler: one effect per key over many concurrent batches', async () => {
    const e = await engine({ shards: 8, threads: 2 })
    const effects = new Map<string, number>()
    const all = stream(5_000, 3)
    const batches = []
    for (let i = 0; i < all.length; i += 1_000) batches.push(all.slice(i, i + 1_000))
    const outs = (await Promise.all(batches.map((b) => e.processBatch(b, (m) => effects.set(m.key, (effects.get(m.key) ?? 0) + 1))))).flat()
    expect(effects.size).toBe(5_000)
    expect([...effects.values()].every((n) => n === 1)).toBe(true)
    expect(outs.filter((o) => o.verdict === 'new')).toHaveLength(5_000)
    expect(outs.filter((o) => o.verdict === 'duplicate')).toHaveLength(10_000)
    expect(e.stats().totals.verdicts.new).toBe(5_000)
  })

  it('a handler module runs inside the worker threads, results come back, throws are released', async () => {
    const e = await engine({ shards: 4, threads: 2, handler: fixture('double-handler.mjs') })
    const outs = await e.processBatch<number | string, unknown>([{ key: 'a', payload: 21 }, { key: 'b', payload: 'boom' }, { key: 'a', payload: 21 }])
    expect(outs[0]).toMatchObject({ verdict: 'new', result: { doubled: 42 } })
    expect((outs[0].result as { threadId: number }).threadId).toBeGreaterThan(0)
    expect(outs[1].verdict).toBe('new')
    expect(outs[1].error?.code).toBe(ErrorCode.HANDLER_FAILED)
    expect(outs[1].error?.message).toContain('handler says boom')
    expect(outs[2]).toMatchObject({ verdict: 'duplicate', result: { doubled: 42 } })
  })

  it('a handler module runs on the main thread when threads is 0', async () => {
    const e = await engine({ shards: 2, threads: 0, handler: fixture('double-handler.mjs') })
    const out = await e.process({ key: 'a', payload: 2 })
    expect(out.result).toEqual({ doubled: 4, threadId: expect.any(Number) })
  })

  for (const threads of [0, 1]) {
    it(`createEngine rejects a handler module that fails to load (threads: ${threads})`, async () => {
      await expect(createEngine({ threads, handler: fixture('throws-on-load.mjs') })).rejects.toMatchObject({
        code: ErrorCode.HANDLER_LOAD_FAILED,
        message: expect.stringContaining('missing configuration'),
      })
      await expect(createEngine({ threads, handler: fixture('no-function.mjs') })).rejects.toMatchObject({
        code: ErrorCode.HANDLER_LOAD_FAILED,
        message: expect.stringContaining('exports no function'),
      })
      await expect(createEngine({ threads, handler: fixture('missing.mjs') })).rejects.toMatchObject({ code: ErrorCode.HANDLER_LOAD_FAILED })
    })
  }

  it('a worker thread that dies: its batch comes back in-flight with WORKER_DIED, the shard restarts and keeps working', async () => {
    const e = await engine({ shards: 1, threads: 1, handler: fixture('exit-handler.mjs') })
    expect((await e.process({ key: 'before' })).verdict).toBe('new')
    const outs = await e.processBatch([{ key: 'x1' }, { key: 'die' }, { key: 'x2' }])
    for (const out of outs) {
      expect(out.verdict).toBe('in-flight')
      expect(out.error?.code).toBe(ErrorCode.WORKER_DIED)
    }
    expect(e.stats().workerRestarts).toBe(1)
    const after = await e.processBatch([{ key: 'x1' }, { key: 'x2' }])
    expect(after.map((o) => o.verdict)).toEqual(['new', 'new'])
  })

  it('a worker thread killed by an uncaught error is a death too (piscina hands its tasks that error, not "worker exited"): WORKER_DIED', async () => {
    const e = await engine({ shards: 1, threads: 1, handler: fixture('crash-handler.mjs') })
    const outs = await e.processBatch([{ key: 'x1' }, { key: 'die' }])
    for (const out of outs) {
      expect(out.verdict).toBe('in-flight')
      expect(out.error?.code).toBe(ErrorCode.WORKER_DIED)
      expect(out.error?.message).toContain('uncaught in the handler module')
    }
    expect(e.stats().workerRestarts).toBe(1)
    expect((await e.process({ key: 'x1' })).verdict).toBe('new')
  })
})

describe('results that cannot cross threads', () => {
  it('threads: 1 — a result holding a function is dropped (RESULT_NOT_SERIALIZABLE), the key is done, the rest of the batch unaffected', async () => {
    const e = await createEngine({ shards: 2, threads: 1 })
    try {
      let runs = 0
      const out = await e.processBatch([{ key: 'a' }, { key: 'b' }], (m) => {
        runs++
        return m.key === 'a' ? { callback: () => 1 } : 'ok'
      })
      expect(out[0].verdict).toBe('new')
      expect(out[0].error?.code).toBe(ErrorCode.RESULT_NOT_SERIALIZABLE)
      expect(out[1]).toEqual({ key: 'b', verdict: 'new', result: 'ok' })
      const again = await e.processBatch([{ key: 'a' }, { key: 'b' }], () => runs++)
      expect(again).toEqual([
        { key: 'a', verdict: 'duplicate' },
        { key: 'b', verdict: 'duplicate', result: 'ok' },
      ])
      expect(runs).toBe(2)
    } finally {
      await e.close()
    }
  })
})
