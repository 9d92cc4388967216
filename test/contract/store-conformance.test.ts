/**
 * One suite, every store: the cases of src/store/conformance.ts (the state
 * machine of DESIGN.md §2, exported for custom stores), run on each of
 * idem's stores. The memory and
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
import { storeConformanceCases, type ConformanceSubject } from '../../dist/src/store/conformance.js'
import type { DedupStore } from '../../dist/src/store/store.js'

type Subject = ConformanceSubject

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
      lease: 600,
      ttl: 2_400,
      make: () => {
        const store = new RedisStore(resolveRedisStore({ kind: 'redis', url: 'redis://127.0.0.1:6379', prefix: `test:${randomUUID()}:` }, 0, []))
        opened.push(store)
        return { store, advance: (ms) => new Promise((resolve) => setTimeout(resolve, ms)) }
      },
    },
  ],
  ['postgres', { lease: 600, ttl: 2_400, make: () => sqlSubject({ kind: 'postgres', url: 'postgres://postgres@127.0.0.1:5432/test' }) }],
  ['mysql (MariaDB)', { lease: 600, ttl: 2_400, make: () => sqlSubject({ kind: 'mysql', url: 'mysql://root@127.0.0.1:3306/test' }) }],
  ['sqlite', { lease: 1_000, ttl: 10_000, make: () => sqlSubject({ kind: 'sqlite', path: sqliteFile }, new ManualClock(Date.now())) }],
]

describe.each(stores)('%s store: the state machine of DESIGN.md §2', (_, { lease, ttl, make }) => {
  it.each(storeConformanceCases.map((c) => [c.name, c] as const))('%s', async (_name, c) => {
    await c.run(make, { leaseMs: lease, ttlMs: ttl })
  })
})

describe('the conformance cases themselves', () => {
  it('fail a store that breaks the contract: one that forgets fencing fails the stale-token case', async () => {
    const clock = new ManualClock(1_000_000)
    const store = new MemoryStore(clock)
    const unfenced = Object.assign(Object.create(store) as MemoryStore, {
      commit: (keys: readonly string[], results: readonly unknown[] | undefined, _token: string, ttlMs: number) => store.commit(keys, results, 'A', ttlMs),
    })
    const stale = storeConformanceCases.find((c) => c.name.startsWith('a commit or release with a stale token'))!
    await expect(stale.run(() => ({ store: unfenced, advance: async (ms) => clock.advance(ms) }), { leaseMs: 1_000, ttlMs: 10_000 })).rejects.toThrow(/Expected values to be strictly deep-equal/)
  })
})
