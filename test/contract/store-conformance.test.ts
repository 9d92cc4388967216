/**
 * One suite, every store: the state machine of DESIGN.md §2. The memory and
 * sqlite stores run on a manual clock; Redis, PostgreSQL and MariaDB run on
 * their own clocks, so their "advance" waits for real, with leases short
 * enough to keep the suite fast. Each SQL subject gets tables of its own
 * (a random prefix), dropped at the end.
 */
import { randomUUID } from 'node:crypto'
import { rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { afterAll, describe, expect, it } from 'vitest'
import { ManualClock } from '../../dist/src/clock.js'
import { MemoryStore } from '../../dist/src/store/memory-store.js'
import { RedisStore } from '../../dist/src/store/redis/redis-store.js'
import { resolveRedisStore } from '../../dist/src/store/redis/redis-options.js'
import { dropSqlTables, resolveSqlStoreOptions } from '../../dist/src/store/sql/sql-admin.js'
import { createSqlStore } from '../../dist/src/store/sql/sql-backends.js'
import type { SqlStoreOptions } from '../../dist/src/store/sql/sql-options.js'
import { ClaimCode, type DedupStore } from '../../dist/src/store/store.js'

interface Subject {
  store: DedupStore
  advance: (ms: number) => Promise<void>
}

const opened: DedupStore[] = []
const sqlTables: SqlStoreOptions[] = []
const sqliteFile = join(tmpdir(), `idem-conformance-${randomUUID()}.db`)
afterAll(async () => {
  await Promise.all(opened.map((s) => s.close()))
  for (const options of sqlTables) await dropSqlTables(options)
  for (const suffix of ['', '-wal', '-shm']) rmSync(sqliteFile + suffix, { force: true })
})

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms))

/** A SQL store on tables of its own; `clock` for sqlite (its clock is the process's), real time otherwise. */
function sqlSubject(options: SqlStoreOptions, clock?: ManualClock): Subject {
  const withTables = { ...options, tablePrefix: `t_${randomUUID().slice(0, 8)}_`, sweepIntervalMs: 0 } as SqlStoreOptions
  sqlTables.push(withTables)
  const store = createSqlStore(resolveSqlStoreOptions(withTables), clock)
  opened.push(store)
  return { store, advance: clock === undefined ? sleep : async (ms) => clock.advance(ms) }
}

const stores: [string, { lease: number; ttl: number; make: () => Subject }][] = [
  [
    'memory',
    {
      lease: 1_000,
      ttl: 10_000,
      make: () => {
        const clock = new ManualClock(1_000_000)
        return { store: new MemoryStore(clock), advance: async (ms) => clock.advance(ms) }
      },
    },
  ],
  [
    'redis',
    {
      lease: 300,
      ttl: 1_200,
      make: () => {
        const store = new RedisStore(resolveRedisStore({ kind: 'redis', url: 'redis://127.0.0.1:6379', prefix: `test:${randomUUID()}:` }, 0, []))
        opened.push(store)
        return { store, advance: (ms) => new Promise((resolve) => setTimeout(resolve, ms)) }
      },
    },
  ],
  ['postgres', { lease: 300, ttl: 1_200, make: () => sqlSubject({ kind: 'postgres', url: 'postgres://postgres@127.0.0.1:5432/test' }) }],
  ['mysql (MariaDB)', { lease: 300, ttl: 1_200, make: () => sqlSubject({ kind: 'mysql', url: 'mysql://root@127.0.0.1:3306/test' }) }],
  ['sqlite', { lease: 1_000, ttl: 10_000, make: () => sqlSubject({ kind: 'sqlite', path: sqliteFile }, new ManualClock(Date.now())) }],
]

describe.each(stores)('%s store: the state machine of DESIGN.md §2', (_, { lease: LEASE, ttl: TTL, make }) => {
  const none = [undefined]

  it('absent → claim → IN_PROGRESS; another owner sees in-progress with the fingerprint', async () => {
    const { store } = make()
    expect((await store.claim(['k'], ['fp1'], 'A', LEASE, TTL)).codes[0]).toBe(ClaimCode.CLAIMED)
    const other = await store.claim(['k'], ['fp2'], 'B', LEASE, TTL)
    expect(other.codes[0]).toBe(ClaimCode.IN_PROGRESS)
    expect(other.fingerprints[0]).toBe('fp1')
  })

  it('a retried claim with the same token recognises its own claim', async () => {
    const { store } = make()
    await store.claim(['k'], none, 'A', LEASE, TTL)
    expect((await store.claim(['k'], none, 'A', LEASE, TTL)).codes[0]).toBe(ClaimCode.CLAIMED)
  })

  it('a key twice in one claim batch is a REPEAT, not its own claim', async () => {
    const { store } = make()
    const replies = await store.claim(['k', 'x', 'k'], [undefined, undefined, undefined], 'A', LEASE, TTL)
    expect(Array.from(replies.codes)).toEqual([ClaimCode.CLAIMED, ClaimCode.CLAIMED, ClaimCode.REPEAT])
  })

  it('commit(token) → DONE with fingerprint and result, answered to later claims; a retried commit is applied once', async () => {
    const { store } = make()
    await store.claim(['k'], ['fp'], 'A', LEASE, TTL)
    expect(Array.from(await store.commit(['k'], [{ id: 7 }], 'A', TTL))).toEqual([1])
    expect(Array.from(await store.commit(['k'], [{ id: 7 }], 'A', TTL))).toEqual([1])
    const again = await store.claim(['k'], ['fp'], 'B', LEASE, TTL)
    expect(again.codes[0]).toBe(ClaimCode.DONE)
    expect(again.fingerprints[0]).toBe('fp')
    expect(again.results[0]).toEqual({ id: 7 })
  })

  it('a key without fingerprint or result stays without them; an empty-string fingerprint is kept as such', async () => {
    const { store } = make()
    await store.claim(['a', 'b'], [undefined, ''], 'A', LEASE, TTL)
    await store.commit(['a', 'b'], [undefined, null], 'A', TTL)
    const replies = await store.claim(['a', 'b'], none, 'B', LEASE, TTL)
    expect(replies.fingerprints).toEqual([undefined, ''])
    expect(replies.results).toEqual([undefined, null])
  })

  it('a commit or release with a stale token is refused and changes nothing', async () => {
    const { store } = make()
    await store.claim(['k'], none, 'A', LEASE, TTL)
    expect(Array.from(await store.commit(['k'], undefined, 'B', TTL))).toEqual([0])
    expect(Array.from(await store.release(['k'], 'B'))).toEqual([0])
    expect((await store.claim(['k'], none, 'C', LEASE, TTL)).codes[0]).toBe(ClaimCode.IN_PROGRESS)
  })

  it('release(token) → absent: the next delivery claims it again', async () => {
    const { store } = make()
    await store.claim(['k'], none, 'A', LEASE, TTL)
    expect(Array.from(await store.release(['k'], 'A'))).toEqual([1])
    expect((await store.claim(['k'], none, 'B', LEASE, TTL)).codes[0]).toBe(ClaimCode.CLAIMED)
  })

  it('a release of a key whose lease lapsed with no new owner counts as applied (absent is what it wants)', async () => {
    const { store, advance } = make()
    await store.claim(['k'], none, 'A', LEASE, TTL)
    await advance(LEASE + 50)
    expect(Array.from(await store.release(['k'], 'A'))).toEqual([1])
    expect((await store.claim(['k'], none, 'B', LEASE, TTL)).codes[0]).toBe(ClaimCode.CLAIMED)
  })

  it('lease expired → another owner claims; the first owner is fenced out of commit, release and renew', async () => {
    const { store, advance } = make()
    await store.claim(['k'], none, 'A', LEASE, TTL)
    await advance(LEASE + 50)
    expect((await store.claim(['k'], none, 'B', LEASE, TTL)).codes[0]).toBe(ClaimCode.CLAIMED)
    expect(Array.from(await store.commit(['k'], undefined, 'A', TTL))).toEqual([0])
    expect(Array.from(await store.release(['k'], 'A'))).toEqual([0])
    expect(Array.from(await store.renew(['k'], 'A', LEASE, TTL))).toEqual([0])
    expect(Array.from(await store.commit(['k'], ['b-result'], 'B', TTL))).toEqual([1])
    expect((await store.claim(['k'], none, 'C', LEASE, TTL)).results[0]).toBe('b-result')
  })

  it('a commit after the lease lapsed is refused even when nobody re-claimed', async () => {
    const { store, advance } = make()
    await store.claim(['k'], none, 'A', LEASE, TTL)
    await advance(LEASE + 50)
    expect(Array.from(await store.commit(['k'], undefined, 'A', TTL))).toEqual([0])
  })

  it('renew keeps a live lease alive past its first expiry', async () => {
    const { store, advance } = make()
    await store.claim(['k'], none, 'A', LEASE, TTL)
    await advance(LEASE / 2)
    expect(Array.from(await store.renew(['k'], 'A', LEASE, TTL))).toEqual([1])
    await advance(LEASE / 2 + 50)
    expect((await store.claim(['k'], none, 'B', LEASE, TTL)).codes[0]).toBe(ClaimCode.IN_PROGRESS)
  })

  it('DONE expires after its TTL: the key is absent again', async () => {
    const { store, advance } = make()
    await store.claim(['k'], none, 'A', LEASE, TTL)
    await store.commit(['k'], undefined, 'A', TTL)
    await advance(TTL / 2)
    expect((await store.claim(['k'], none, 'B', LEASE, TTL)).codes[0]).toBe(ClaimCode.DONE)
    await advance(TTL / 2 + 100)
    expect((await store.claim(['k'], none, 'B', LEASE, TTL)).codes[0]).toBe(ClaimCode.CLAIMED)
  })

  it('a batch of 1,000 keys mixing every state gets one code per key, in order', async () => {
    const { store } = make()
    const keys = Array.from({ length: 1000 }, (_, i) => `key-${i}`)
    const fps = keys.map(() => undefined)
    await store.claim(keys.slice(0, 300), fps, 'A', LEASE, TTL)
    await store.commit(keys.slice(0, 100), undefined, 'A', TTL)
    const replies = await store.claim(keys, fps, 'B', LEASE, TTL)
    const codes = Array.from(replies.codes)
    expect(codes.slice(0, 100).every((c) => c === ClaimCode.DONE)).toBe(true)
    expect(codes.slice(100, 300).every((c) => c === ClaimCode.IN_PROGRESS)).toBe(true)
    expect(codes.slice(300).every((c) => c === ClaimCode.CLAIMED)).toBe(true)
  })
})
