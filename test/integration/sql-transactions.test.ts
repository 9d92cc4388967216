/**
 * The transaction helper on each SQL store, against the real servers: the
 * business writes and the DONE record commit together or not at all.
 */
import { afterAll, describe, expect, it } from 'vitest'
import { ManualClock } from '../../dist/src/clock.js'
import { createEngine, type Engine } from '../../dist/src/engine.js'
import { ErrorCode } from '../../dist/src/errors.js'
import type { HandlerContext } from '../../dist/src/message.js'
import { sqlTransactions } from '../../dist/src/store/sql/index.js'
import { createSqlStore } from '../../dist/src/store/sql/sql-backends.js'
import { resolveSqlStoreOptions } from '../../dist/src/store/sql/sql-admin.js'
import { ClaimCode } from '../../dist/src/store/store.js'
import { sleep, sqlKit, type SqlKind } from '../support/sql.js'

const kinds: SqlKind[] = ['postgres', 'mysql', 'sqlite']

describe.each(kinds)('%s: transaction helper', (kind) => {
  const kit = sqlKit(kind)
  const engines: Engine[] = []
  const engine = async (options: Record<string, unknown>, clock?: ManualClock): Promise<Engine> => {
    const created = await createEngine({ shards: 2, lru: { maxKeys: 0 }, ...options }, clock === undefined ? {} : { clock })
    engines.push(created)
    return created
  }
  afterAll(async () => {
    await Promise.all(engines.map((e) => e.close()))
    await kit.close()
  })
  /** sqlite transactions are synchronous (better-sqlite3); the servers' may await. */
  const write = (table: string, result: unknown = 'ok') =>
    kind === 'sqlite'
      ? (tx: unknown, m: { key: string }) => (kit.insertEffect(tx, table, m.key), result)
      : async (tx: unknown, m: { key: string }) => (await kit.insertEffect(tx, table, m.key), result)

  it('writes the business row and the DONE record in one transaction; the redelivery is a duplicate with the stored result', async () => {
    const effects = await kit.effectTable()
    const e = await engine({ store: kit.store() })
    expect(await e.transaction({ key: 'order-1', fingerprint: 'f1' }, write(effects, { charged: 42 }))).toEqual({ key: 'order-1', verdict: 'new', result: { charged: 42 } })
    expect(await e.transaction({ key: 'order-1', fingerprint: 'f1' }, write(effects))).toEqual({ key: 'order-1', verdict: 'duplicate', result: { charged: 42 } })
    expect(Object.fromEntries(await kit.effectsPerKey(effects))).toEqual({ 'order-1': 1 })
    expect(e.stats().totals.fencedWrites).toBe(0)
  })

  it('a batch through engine.transactional(): one row per unique key, copies inside the batch wait and become duplicates', async () => {
    const effects = await kit.effectTable()
    const e = await engine({ store: kit.store() })
    const keys = Array.from({ length: 300 }, (_, i) => `k${i % 200}`)
    const outcomes = await e.processBatch(keys.map((key) => ({ key })), e.transactional(write(effects)))
    expect(outcomes.filter((o) => o.verdict === 'new' && o.error === undefined)).toHaveLength(200)
    expect(outcomes.filter((o) => o.verdict === 'duplicate')).toHaveLength(100)
    const perKey = await kit.effectsPerKey(effects)
    expect(perKey.size).toBe(200)
    expect([...perKey.values()].every((n) => n === 1)).toBe(true)
  })

  it('work that throws rolls its writes back and releases the key: the redelivery runs it, once', async () => {
    const effects = await kit.effectTable()
    const e = await engine({ store: kit.store() })
    const failing =
      kind === 'sqlite'
        ? (tx: unknown, m: { key: string }) => {
            kit.insertEffect(tx, effects, m.key)
            throw new Error('card declined')
          }
        : async (tx: unknown, m: { key: string }) => {
            await kit.insertEffect(tx, effects, m.key)
            throw new Error('card declined')
          }
    const first = await e.transaction({ key: 'k' }, failing)
    expect(first.verdict).toBe('new')
    expect(first.error?.code).toBe(ErrorCode.HANDLER_FAILED)
    expect(first.error?.message).toContain('card declined')
    expect((await kit.effectsPerKey(effects)).size).toBe(0)
    expect((await e.transaction({ key: 'k' }, write(effects))).verdict).toBe('new')
    expect(Object.fromEntries(await kit.effectsPerKey(effects))).toEqual({ k: 1 })
  })

  it('a lease lost before COMMIT: the fenced DONE write matches nothing, the business writes roll back, LEASE_LOST; the new owner effect is the only one', async () => {
    const effects = await kit.effectTable()
    const store = kit.store()
    if (kind === 'sqlite') {
      // SQLite runs on the injected clock: the work itself moves time past the lease.
      const clock = new ManualClock(Date.now())
      const e = await engine({ store, leaseMs: 1_000 }, clock)
      const late = await e.transaction({ key: 'slow' }, (tx: unknown, m: { key: string }) => {
        kit.insertEffect(tx, effects, m.key)
        clock.advance(1_500)
        return 'late'
      })
      expect(late.error?.code).toBe(ErrorCode.LEASE_LOST)
      expect(late.error?.message).toContain('LEASE_LOST')
      expect((await kit.effectsPerKey(effects)).size).toBe(0)
      expect((await e.transaction({ key: 'slow' }, write(effects, 'second'))).result).toBe('second')
    } else {
      // Two engines on the servers' clock: the first stalls inside its transaction (a synchronous
      // block, so no renewal can run) past its lease; the second takes the key over and finishes.
      const first = await engine({ store, leaseMs: 300 })
      const second = await engine({ store, leaseMs: 300 })
      let release: () => void = () => {}
      const stalled = new Promise<void>((resolve) => (release = resolve))
      const slow = first.transaction({ key: 'slow' }, async (tx: unknown, m: { key: string }) => {
        await kit.insertEffect(tx, effects, m.key)
        const until = Date.now() + 700
        while (Date.now() < until); // blocks the event loop: renewals cannot fire
        await stalled
        return 'first'
      })
      await sleep(900)
      expect(await second.transaction({ key: 'slow' }, write(effects, 'second'))).toEqual({ key: 'slow', verdict: 'new', result: 'second' })
      release()
      const late = await slow
      expect(late.verdict).toBe('new')
      expect(late.error?.code).toBe(ErrorCode.LEASE_LOST)
      expect(late.error?.message).toContain('LEASE_LOST')
      expect(Object.fromEntries(await kit.effectsPerKey(effects))).toEqual({ slow: 1 })
      expect(await first.process({ key: 'slow' }, () => 'again')).toEqual({ key: 'slow', verdict: 'duplicate', result: 'second' })
    }
  }, 20_000)

  it('a key its claim marked UNKNOWN: the fenced DONE write refuses the row, the business writes roll back, LEASE_LOST; the key stays UNKNOWN', async () => {
    const effects = await kit.effectTable()
    const options = kit.store()
    const store = createSqlStore(resolveSqlStoreOptions(options))
    const helper = sqlTransactions({ store: options })
    try {
      await store.claim(['paid'], [undefined], 'A', 60_000, 60_000)
      expect(Array.from(await store.markUnknown(['paid'], 'A', 60_000))).toEqual([1])
      const context = { claim: { storeKey: 'paid', token: 'A' } } as HandlerContext
      await expect(helper.run({ key: 'paid' }, context, write(effects))).rejects.toMatchObject({ code: ErrorCode.LEASE_LOST })
      expect((await kit.effectsPerKey(effects)).size).toBe(0)
      expect((await store.claim(['paid'], [undefined], 'B', 60_000, 60_000)).codes[0]).toBe(ClaimCode.UNKNOWN)
    } finally {
      await helper.close()
      await store.close()
    }
  })

  it('namespaces: the same key under two tenants is two records and two effects', async () => {
    const effects = await kit.effectTable()
    const e = await engine({ store: kit.store() })
    const outs = await e.processBatch(
      [
        { key: 'order-7', namespace: 'acme' },
        { key: 'order-7', namespace: 'globex' },
        { key: 'order-7' },
      ],
      e.transactional(write(effects)),
    )
    expect(outs.map((o) => o.verdict)).toEqual(['new', 'new', 'new'])
    expect(Object.fromEntries(await kit.effectsPerKey(effects))).toEqual({ 'order-7': 3 })
  })

  it('a result over maxResultBytes: the key is done and the effect written, the result is not kept (RESULT_TOO_LARGE)', async () => {
    const effects = await kit.effectTable()
    const e = await engine({ store: kit.store({ maxResultBytes: 32 }) })
    const big = 'x'.repeat(100)
    const out = await e.transaction({ key: 'big' }, write(effects, big))
    expect(out.error?.code).toBe(ErrorCode.RESULT_TOO_LARGE)
    expect(await e.process({ key: 'big' }, () => 'again')).toEqual({ key: 'big', verdict: 'duplicate' })
    expect(Object.fromEntries(await kit.effectsPerKey(effects))).toEqual({ big: 1 })
  })

  it('threads: 2 with a url/path config: each worker thread opens its own connection; the helper runs on the main thread', async () => {
    const effects = await kit.effectTable()
    const e = await engine({ shards: 4, threads: 2, store: kit.store() })
    const keys = Array.from({ length: 400 }, (_, i) => `t${i % 300}`)
    const outcomes = await e.processBatch(keys.map((key) => ({ key })), e.transactional(write(effects)))
    expect(outcomes.filter((o) => o.verdict === 'new' && o.error === undefined)).toHaveLength(300)
    const perKey = await kit.effectsPerKey(effects)
    expect(perKey.size).toBe(300)
    expect([...perKey.values()].every((n) => n === 1)).toBe(true)
  })

  it('sqlTransactions() outside the engine (a handler module, a transport) writes the same DONE record', async () => {
    const effects = await kit.effectTable()
    const store = kit.store()
    const e = await engine({ store })
    const helper = sqlTransactions({ store })
    try {
      expect(await e.process({ key: 'via-helper' }, helper.handler(write(effects, 'kept')))).toEqual({ key: 'via-helper', verdict: 'new', result: 'kept' })
      expect(await e.process({ key: 'via-helper' }, () => 'again')).toEqual({ key: 'via-helper', verdict: 'duplicate', result: 'kept' })
    } finally {
      await helper.close()
    }
  })

  it('shadow rollout: a duplicate run holds no claim, so its work runs in a plain transaction and writes no record', async () => {
    const effects = await kit.effectTable()
    const e = await engine({ store: kit.store(), rollout: 'shadow' })
    await e.transaction({ key: 's' }, write(effects))
    expect(await e.transaction({ key: 's' }, write(effects))).toMatchObject({ verdict: 'new', shadow: { verdict: 'duplicate' } })
    expect(Object.fromEntries(await kit.effectsPerKey(effects))).toEqual({ s: 2 })
    expect(e.stats().totals.shadowRuns).toBe(1)
  })

  if (kind === 'sqlite') {
    it('sqlite: an async transaction function is refused before anything commits', async () => {
      const effects = await kit.effectTable()
      const e = await engine({ store: kit.store() })
      const out = await e.transaction({ key: 'async' }, async (tx: unknown, m: { key: string }) => {
        kit.insertEffect(tx, effects, m.key)
        return 'never'
      })
      expect(out.error?.code).toBe(ErrorCode.HANDLER_FAILED)
      expect(out.error?.message).toContain('transaction function returned a promise')
      expect((await kit.effectsPerKey(effects)).size).toBe(0)
      expect((await e.transaction({ key: 'async' }, write(effects))).verdict).toBe('new')
    })
  }
})

describe.each(kinds)('%s: consume positions saved in the transaction', (kind) => {
  const kit = sqlKit(kind)
  const engines: Engine[] = []
  const engine = async (options: Record<string, unknown> = {}): Promise<Engine> => {
    const created = await createEngine({ shards: 2, lru: { maxKeys: 0 }, store: kit.store(), ...options })
    engines.push(created)
    return created
  }
  afterAll(async () => {
    await Promise.all(engines.map((e) => e.close()))
    await kit.close()
  })
  type Tools = { savePosition: (source: string, partition: string | number, position: string) => void }
  /** Writes the effect and saves `position` for the stream 'orders', partition 3; sqlite's work is synchronous. */
  const writeAt = (effects: string, position: string, then: () => void = () => {}) =>
    kind === 'sqlite'
      ? (tx: unknown, m: { key: string }, tools: Tools) => (kit.insertEffect(tx, effects, m.key), tools.savePosition('orders', 3, position), then(), 'ok')
      : async (tx: unknown, m: { key: string }, tools: Tools) => (await kit.insertEffect(tx, effects, m.key), tools.savePosition('orders', 3, position), then(), 'ok')

  it('savePosition commits with the effect and the DONE record; positionOf reads the last one back; each (source, partition) is its own', async () => {
    const effects = await kit.effectTable()
    const e = await engine()
    expect(await e.positionOf('orders', 3)).toBeUndefined()
    expect((await e.transaction({ key: 'a' }, writeAt(effects, '1700000000000-0'))).verdict).toBe('new')
    expect(await e.positionOf('orders', 3)).toBe('1700000000000-0')
    expect(await e.positionOf('orders', '3')).toBe('1700000000000-0')
    expect((await e.transaction({ key: 'b' }, writeAt(effects, '1700000000001-0'))).verdict).toBe('new')
    expect(await e.positionOf('orders', 3)).toBe('1700000000001-0')
    expect(await e.positionOf('orders', 4)).toBeUndefined()
    expect(await e.positionOf('payments', 3)).toBeUndefined()
    // A duplicate does not run its work, so it saves nothing.
    expect((await e.transaction({ key: 'a' }, writeAt(effects, '1700000000002-0'))).verdict).toBe('duplicate')
    expect(await e.positionOf('orders', 3)).toBe('1700000000001-0')
  })

  it('work that throws after savePosition rolls the position back with the effect', async () => {
    const effects = await kit.effectTable()
    const e = await engine()
    await e.transaction({ key: 'a' }, writeAt(effects, '10-0'))
    const failed = await e.transaction({ key: 'b' }, writeAt(effects, '11-0', () => {
      throw new Error('payment declined')
    }))
    expect(failed.error?.code).toBe(ErrorCode.HANDLER_FAILED)
    expect(await e.positionOf('orders', 3)).toBe('10-0')
    expect(Object.fromEntries(await kit.effectsPerKey(effects))).toEqual({ a: 1 })
  })

  it('bad input: INVALID_POSITION for each bad part (the work fails, nothing commits), TRANSACTION_ENDED after the work returned', async () => {
    const effects = await kit.effectTable()
    const e = await engine()
    const bad: [unknown, unknown, unknown][] = [
      ['', 0, '1-0'],
      ['orders', -1, '1-0'],
      ['orders', 1.5, '1-0'],
      ['orders', null, '1-0'],
      ['orders', 0, ''],
      ['orders', 0, 42],
      ['orders', 0, 'x'.repeat(256)],
      ['orders', 0, 'a\0b'],
      ['orders', 0, '\ud800'],
    ]
    for (const [i, [source, partition, position]] of bad.entries()) {
      const save = (tools: Tools) => tools.savePosition(source as string, partition as number, position as string)
      const work = kind === 'sqlite' ? (tx: unknown, m: { key: string }, tools: Tools) => (kit.insertEffect(tx, effects, m.key), save(tools)) : async (tx: unknown, m: { key: string }, tools: Tools) => (await kit.insertEffect(tx, effects, m.key), save(tools))
      const out = await e.transaction({ key: `bad-${i}` }, work)
      expect(out.error?.code, JSON.stringify([source, partition, position])).toBe(ErrorCode.HANDLER_FAILED)
      expect(out.error?.message).toContain("the position's")
    }
    expect((await kit.effectsPerKey(effects)).size).toBe(0)
    expect(await e.positionOf('orders', 0)).toBeUndefined()
    await expect(e.positionOf('', 0)).rejects.toMatchObject({ code: ErrorCode.INVALID_POSITION })
    await expect(e.positionOf('orders', -2)).rejects.toMatchObject({ code: ErrorCode.INVALID_POSITION })

    let kept: Tools | undefined
    await e.transaction({ key: 'late' }, (_tx: unknown, _m: unknown, tools: Tools) => void (kept = tools))
    expect(() => kept!.savePosition('orders', 0, '9-0')).toThrow(expect.objectContaining({ code: ErrorCode.TRANSACTION_ENDED }))
    expect(await e.positionOf('orders', 0)).toBeUndefined()
  })
})

describe('transaction helper on a store that is not SQL', () => {
  it('rejects with INVALID_CONFIG naming the store', async () => {
    const e = await createEngine({ shards: 1 })
    try {
      await expect(e.transaction({ key: 'k' }, () => 1)).rejects.toMatchObject({ code: ErrorCode.INVALID_CONFIG, message: expect.stringContaining("this engine's store is memory") })
      expect(() => sqlTransactions({ store: { kind: 'memory' } as never })).toThrow(/needs a SQL store/)
      await expect(e.positionOf('orders', 0)).rejects.toMatchObject({ code: ErrorCode.INVALID_CONFIG, message: expect.stringContaining("positions need a SQL store (postgres, mysql or sqlite); this engine's store is memory") })
    } finally {
      await e.close()
    }
  })
})
