/**
 * The README "Strategies" example against the real servers: payments on
 * PostgreSQL through the transaction helper with a 7-day window,
 * notifications on Redis with a 1-hour window, analytics in memory. Each
 * type's records land in its own store, with its own window.
 */
import { randomUUID } from 'node:crypto'
import { Redis } from 'ioredis'
import { afterAll, describe, expect, it } from 'vitest'
import { createEngine, type Engine } from '../../dist/src/engine.js'
import { deleteKeysUnder } from '../../dist/src/store/redis/delete-keys.js'
import { sqlKit } from '../support/sql.js'

const REDIS_URL = 'redis://127.0.0.1:6379'
const HOUR = 3_600_000
const DAY = 24 * HOUR

const kit = sqlKit('postgres')
const redis = new Redis(REDIS_URL)
const prefix = `test:${randomUUID()}:`
let engine: Engine | undefined
const others: Engine[] = []

afterAll(async () => {
  await Promise.all([engine, ...others].map((e) => e?.close()))
  await deleteKeysUnder(redis, prefix)
  redis.disconnect()
  await kit.close()
})

describe('strategies on three stores', () => {
  it('puts each type in its own store with its own window, and runs payments in a PostgreSQL transaction', async () => {
    const charges = await kit.effectTable()
    const payments = kit.store()
    const sent: string[] = []
    const send = (message: { key: string }) => sent.push(message.key)

    // The README example, with this test's tables and key prefix.
    engine = await createEngine({
      strategies: {
        payments: { store: payments, ttlMs: 7 * DAY },
        notifications: { store: { kind: 'redis', url: REDIS_URL, prefix }, ttlMs: HOUR },
        analytics: { store: { kind: 'memory' } },
      },
    })
    const charge = async (tx: { query(sql: string, params: unknown[]): Promise<unknown> }, message: { key: string }) => {
      await tx.query(`INSERT INTO ${charges} (k) VALUES ($1)`, [message.key])
      return { charged: message.key }
    }
    const paid = await engine.transaction({ key: 'order-42', type: 'payments' }, charge)
    const outcomes = await engine.processBatch(
      [
        { key: 'mail-42', type: 'notifications' },
        { key: 'view-42', type: 'analytics' },
      ],
      (message) => send(message),
    )

    expect(paid).toEqual({ key: 'order-42', verdict: 'new', result: { charged: 'order-42' } })
    expect(outcomes.map((o) => [o.key, o.verdict])).toEqual([
      ['mail-42', 'new'],
      ['view-42', 'new'],
    ])
    // Redeliveries: duplicates, each answered by its own store, and the charge row written once.
    expect(await engine.transaction({ key: 'order-42', type: 'payments' }, charge)).toMatchObject({ verdict: 'duplicate', result: { charged: 'order-42' } })
    const again = await engine.processBatch([{ key: 'view-42', type: 'analytics' }, { key: 'mail-42', type: 'notifications' }], (message) => send(message))
    expect(again.map((o) => [o.key, o.verdict])).toEqual([
      ['view-42', 'duplicate'],
      ['mail-42', 'duplicate'],
    ])
    expect(Object.fromEntries(await kit.effectsPerKey(charges))).toEqual({ 'order-42': 1 })
    expect(sent.sort()).toEqual(['mail-42', 'view-42'])

    // PostgreSQL holds the payment alone, for 7 days.
    const rows = await kit.query(`SELECT convert_from(idem_key, 'UTF8') AS idem_key, extract(epoch FROM expires_at - now()) * 1000 AS left_ms FROM ${payments.tablePrefix}records`)
    expect(rows.map((row) => row.idem_key)).toEqual(['order-42'])
    expect(Number(rows[0].left_ms)).toBeGreaterThan(7 * DAY - 60_000)
    expect(Number(rows[0].left_ms)).toBeLessThanOrEqual(7 * DAY)

    // Redis holds the notification alone, for an hour.
    const records = (await redis.keys(`${prefix}*`)).filter((key) => key.includes('k:'))
    expect(records).toHaveLength(1)
    expect(records[0]).toMatch(/k:mail-42$/)
    const left = await redis.pttl(records[0])
    expect(left).toBeGreaterThan(HOUR - 60_000)
    expect(left).toBeLessThanOrEqual(HOUR)

    // Analytics touched neither: its engine's memory store answered its claim, its commit and its duplicate (from the LRU).
    const analytics = engine.strategy('analytics')!
    expect(analytics.config.store).toEqual({ kind: 'memory' })
    expect(analytics.stats().totals.verdicts).toMatchObject({ new: 1, duplicate: 1 })
    expect(engine.strategy('payments')!.stats().totals.verdicts).toMatchObject({ new: 1, duplicate: 1 })
    expect(engine.strategy('notifications')!.stats().totals.verdicts).toMatchObject({ new: 1, duplicate: 1 })
    expect(engine.stats().totals.verdicts).toMatchObject({ new: 3, duplicate: 3 })
  })

  it('runs a batch through transactional() in the SQL store of each message\'s type, and reads positions by type', async () => {
    const charges = await kit.effectTable()
    const e = await createEngine({ strategies: { payments: { store: kit.store() }, analytics: {} } })
    others.push(e)
    const work = e.transactional(async (tx: { query(sql: string, params: unknown[]): Promise<unknown> }, message: { key: string }, { savePosition }) => {
      await tx.query(`INSERT INTO ${charges} (k) VALUES ($1)`, [message.key])
      savePosition('orders', 0, message.key)
      return 'charged'
    })
    const outcomes = await e.processBatch(
      [
        { key: 'p1', type: 'payments' },
        { key: 'a1', type: 'analytics' },
        { key: 'p2', type: 'payments' },
      ],
      work,
    )
    expect(outcomes.map((o) => [o.key, o.verdict, o.result])).toEqual([
      ['p1', 'new', 'charged'],
      ['a1', 'new', undefined],
      ['p2', 'new', 'charged'],
    ])
    // The analytics message has no SQL store to run in: its handler fails, saying why, and nothing is written.
    expect(outcomes[1].error).toMatchObject({ code: 'HANDLER_FAILED', message: expect.stringMatching(/need a SQL store .* memory/) })
    expect(Object.fromEntries(await kit.effectsPerKey(charges))).toEqual({ p1: 1, p2: 1 })
    expect(await e.positionOf('orders', 0)).toMatch(/^p[12]$/)
    expect(await e.positionOf('orders', 0, 'payments')).toMatch(/^p[12]$/)
    await expect(e.positionOf('orders', 0, 'analytics')).rejects.toMatchObject({ code: 'INVALID_CONFIG' })
    await expect(e.positionOf('orders', 0, 'nope')).rejects.toThrow(/type: must be a type of strategies \(payments, analytics\), got "nope"/)
  })
})
