/**
 * engine.inspect / forget / purge (README "Admin"): each state read, a
 * forgotten key run again through the engine (the LRU too, on this thread and
 * in worker threads), forget refused on a key in progress without force, and
 * a purge that takes one namespace only. The LRU holds keys only over a
 * shared store, so those cases run on Redis (a random prefix of their own).
 */
import { randomUUID } from 'node:crypto'
import { afterAll, describe, expect, it } from 'vitest'
import type { Engine } from '../../dist/src/engine.js'
import { ManualClock } from '../../dist/src/clock.js'
import { ConfigError, ErrorCode } from '../../dist/src/errors.js'
import type { EngineOptions } from '../../dist/src/config.js'
import type { Message } from '../../dist/src/message.js'
import { deletePrefix } from '../support/redis-prefix.js'
import { enginesClosedAfterEach } from '../support/test-engines.js'
import { countingHandler } from '../support/counting-handler.js'

const url = 'redis://127.0.0.1:6379'
const prefixes: string[] = []
const engine = enginesClosedAfterEach({ shards: 4 })
function onRedis(options: EngineOptions = {}): Promise<Engine> {
  const prefix = `test:admin:${randomUUID()}:`
  prefixes.push(prefix)
  return engine({ ...options, store: { kind: 'redis', url, prefix } })
}
afterAll(async () => {
  for (const prefix of prefixes) await deletePrefix(url, prefix)
})


/** A handler that holds its key in progress until `release` is called. */
function holding() {
  let release!: () => void
  const released = new Promise<void>((resolve) => (release = resolve))
  let started!: () => void
  const running = new Promise<void>((resolve) => (started = resolve))
  return { release, running, handler: async () => (started(), await released, 'late') }
}

describe('engine.inspect', () => {
  it('reads absent, in progress (lease left), done (TTL left, fingerprint, result size) and unknown, on the memory store', async () => {
    const clock = new ManualClock(1_000_000)
    const e = await engine({ leaseMs: 5_000, ttlMs: 60_000, handlerTimeoutMs: 1_000 }, { clock })
    expect(await e.inspect('never')).toEqual({ state: 'absent', expiresInMs: 0 })

    await e.process({ key: 'paid', fingerprint: 'fp-1' }, () => ({ id: 7 }))
    expect(await e.inspect('paid')).toEqual({ state: 'done', expiresInMs: 60_000, fingerprint: 'fp-1', resultBytes: Buffer.byteLength('{"id":7}') })

    const hold = holding()
    const pending = e.process({ key: 'busy' }, hold.handler)
    await hold.running
    clock.advance(1_000)
    expect(await e.inspect('busy')).toEqual({ state: 'in-progress', expiresInMs: 4_000, leaseLeftMs: 4_000 })
    hold.release()
    await pending

    const { outcomeUnknown } = await import('../../dist/src/errors.js')
    await e.process({ key: 'maybe' }, () => {
      throw outcomeUnknown('the payment gateway did not answer')
    })
    expect(await e.inspect('maybe')).toEqual({ state: 'unknown', expiresInMs: 60_000 })
  })

  it('scopes the key by its namespace, as the router does', async () => {
    const e = await engine({})
    await e.process({ key: 'k', namespace: 'orders' }, () => 1)
    expect((await e.inspect('k', { namespace: 'orders' })).state).toBe('done')
    expect((await e.inspect('k')).state).toBe('absent')
    expect((await e.inspect('k', { namespace: 'payments' })).state).toBe('absent')
  })

  it('bad input: a bad key or namespace is INVALID_KEY, unknown or mistyped options a ConfigError naming the field, a closed engine ENGINE_CLOSED', async () => {
    const e = await engine({})
    await expect(e.inspect('')).rejects.toMatchObject({ code: ErrorCode.INVALID_KEY })
    await expect(e.inspect(42 as unknown as string)).rejects.toMatchObject({ code: ErrorCode.INVALID_KEY })
    await expect(e.inspect('k', { namespace: 'a\0b' })).rejects.toMatchObject({ code: ErrorCode.INVALID_KEY })
    await expect(e.inspect('k', { nmespace: 'x' } as never)).rejects.toThrow(/nmespace: must be left out/)
    await expect(e.forget('k', { force: 'yes' } as never)).rejects.toThrow(ConfigError)
    await expect(e.purge({} as never)).rejects.toThrow(/namespace: must be the namespace to purge/)
    await expect(e.purge({ namespace: 'a\0b' })).rejects.toMatchObject({ code: ErrorCode.INVALID_KEY })
    await e.close()
    await expect(e.inspect('k')).rejects.toMatchObject({ code: ErrorCode.ENGINE_CLOSED })
  })

  it.each([
    ['owned mode', { mode: 'owned', partitions: 8 }],
    ['versions', { versions: { versionOf: (m: Message) => m.payload as number } }],
  ] as [string, EngineOptions][])('%s: the three reject with INVALID_CONFIG pointing at idem keys', async (_, options) => {
    const e = await engine(options)
    for (const call of [() => e.inspect('k'), () => e.forget('k'), () => e.purge({ namespace: 'n' })]) {
      await expect(call()).rejects.toMatchObject({ code: ErrorCode.INVALID_CONFIG, message: expect.stringMatching(/not available in owned mode or with versions yet; use `idem keys/) })
    }
  })
})

describe('engine.forget', () => {
  it.each([0, 2])('a forgotten done key runs again through the engine, though its shard had it in the LRU (threads: %i)', async (threads) => {
    const e = await onRedis({ threads })
    const { effects: runs, handler } = countingHandler()
    expect((await e.process({ key: 'k', namespace: 'ns' }, handler)).verdict).toBe('new')
    expect((await e.process({ key: 'k', namespace: 'ns' }, handler)).verdict).toBe('duplicate')
    const hitsBefore = e.stats().totals.lruHits
    expect((await e.process({ key: 'k', namespace: 'ns' }, handler)).verdict).toBe('duplicate')
    // The key is in its shard's LRU: a duplicate answered without the store.
    expect(e.stats().totals.lruHits).toBe(hitsBefore + 1)

    expect(await e.forget('k', { namespace: 'ns' })).toBe(true)
    expect(await e.inspect('k', { namespace: 'ns' })).toEqual({ state: 'absent', expiresInMs: 0 })
    expect((await e.process({ key: 'k', namespace: 'ns' }, handler)).verdict).toBe('new')
    expect(runs.get('k')).toBe(2)
    expect(await e.forget('never')).toBe(false)
  })

  it('refuses a key in progress with KEY_IN_PROGRESS unless force; with force the key is gone', async () => {
    const e = await engine({})
    const hold = holding()
    const pending = e.process({ key: 'busy' }, hold.handler)
    await hold.running
    await expect(e.forget('busy')).rejects.toMatchObject({ code: ErrorCode.KEY_IN_PROGRESS, message: expect.stringMatching(/in progress .* force/) })
    expect((await e.inspect('busy')).state).toBe('in-progress')
    expect(await e.forget('busy', { force: true })).toBe(true)
    expect((await e.inspect('busy')).state).toBe('absent')
    hold.release()
    await pending
  })

  it('forgets an unknown key, which then runs again', async () => {
    const e = await engine({})
    const { outcomeUnknown } = await import('../../dist/src/errors.js')
    await e.process({ key: 'maybe' }, () => {
      throw outcomeUnknown('no answer')
    })
    expect(await e.forget('maybe')).toBe(true)
    expect((await e.process({ key: 'maybe' }, () => 'ok')).verdict).toBe('new')
  })
})

describe('engine.purge', () => {
  it.each([
    ['memory, threads: 2', () => engine({ threads: 2 })],
    ['redis, threads: 0', () => onRedis({})],
    ['redis, threads: 2', () => onRedis({ threads: 2 })],
  ])('removes one namespace (store and every LRU), answers how many, leaves the others (%s)', async (_, make) => {
    const e = await make()
    const { effects: runs, handler } = countingHandler()
    const keys = Array.from({ length: 40 }, (_, i) => `k${i}`)
    for (const namespace of ['gone', 'kept']) await e.processBatch(keys.map((key) => ({ key, namespace })), handler)
    await e.processBatch(keys.map((key) => ({ key })), handler)
    // Twice more: every key is in its shard's LRU now (where the store has one).
    await e.processBatch(keys.map((key) => ({ key, namespace: 'gone' })), handler)

    expect(await e.purge({ namespace: 'gone' })).toBe(keys.length)
    expect(await e.purge({ namespace: 'gone' })).toBe(0)
    const again = await e.processBatch(keys.map((key) => ({ key, namespace: 'gone' })), handler)
    expect(again.every((o) => o.verdict === 'new')).toBe(true)
    const others = await e.processBatch([...keys.map((key) => ({ key, namespace: 'kept' })), ...keys.map((key) => ({ key }))], handler)
    expect(others.every((o) => o.verdict === 'duplicate')).toBe(true)
    expect(Math.max(...runs.values())).toBe(4)
  })
})
