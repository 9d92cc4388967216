/**
 * Version-aware records (README "Versions and state machines"), the same
 * cases on every store that keeps versions: the memory store on a manual
 * clock, Redis on its own clock (leases short enough to wait out). Two
 * tokens stand for two processes.
 */
import { randomUUID } from 'node:crypto'
import { afterAll, describe, expect, it } from 'vitest'
import { ManualClock } from '../../dist/src/clock.js'
import { resolveRedisStore } from '../../dist/src/store/redis/redis-options.js'
import { MemoryVersionStore } from '../../dist/src/versions/memory-versions.js'
import { RedisVersionStore } from '../../dist/src/versions/redis-versions.js'
import { SqlVersionStore } from '../../dist/src/versions/sql-versions.js'
import { resolveSqlStoreOptions } from '../../dist/src/store/sql/sql-admin.js'
import type { SqlStoreOptions } from '../../dist/src/store/sql/sql-options.js'
import { rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import pg from 'pg'
import mysql2 from 'mysql2/promise'
import { MYSQL_URL, PG_URL } from '../support/sql.js'
import { compareVersionTexts, encodeVersion } from '../../dist/src/versions/version-order.js'
import { VersionClaim, type VersionStore } from '../../dist/src/versions/version-store.js'

const { CLAIMED, STALE, IN_PROGRESS } = VersionClaim
const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms))
const opened: VersionStore[] = []
const sqliteFile = join(tmpdir(), `idem-versions-${randomUUID()}.db`)
/** Each SQL subject's table, dropped at the end. */
const tables: { kind: 'postgres' | 'mysql'; table: string }[] = []
afterAll(async () => {
  await Promise.all(opened.map((s) => s.close()))
  for (const suffix of ['', '-wal', '-shm']) rmSync(sqliteFile + suffix, { force: true })
  const postgres = new pg.Client({ connectionString: PG_URL })
  await postgres.connect()
  const mysql = await mysql2.createConnection(MYSQL_URL)
  for (const { kind, table } of tables) {
    if (kind === 'postgres') await postgres.query(`DROP TABLE IF EXISTS "${table}"`)
    else await mysql.query(`DROP TABLE IF EXISTS \`${table}\``)
  }
  await postgres.end()
  await mysql.end()
})

/** A SQL version store on a table of its own. */
function sqlSubject(options: SqlStoreOptions, clock?: ManualClock): Subject {
  const tablePrefix = `tv_${randomUUID().slice(0, 8)}_`
  if (options.kind !== 'sqlite') tables.push({ kind: options.kind, table: `${tablePrefix}versions` })
  const store = new SqlVersionStore(resolveSqlStoreOptions({ ...options, tablePrefix } as SqlStoreOptions), clock ?? new ManualClock())
  opened.push(store)
  return { store, advance: clock === undefined ? sleep : async (ms) => clock.advance(ms) }
}

/** The sortable text of a version, for the store calls. */
function v(version: number | bigint | string): string {
  const encoded = encodeVersion(version)
  if ('problem' in encoded) throw new Error(encoded.problem)
  return encoded.text
}

interface Subject {
  store: VersionStore
  /** Lets `ms` pass on the store's clock. */
  advance: (ms: number) => Promise<void>
}

const subjects: [string, { lease: number; ttl: number; make: () => Subject }][] = [
  [
    'memory',
    {
      lease: 1_000,
      ttl: 10_000,
      make: () => {
        const clock = new ManualClock(1_000_000)
        const store = new MemoryVersionStore(clock)
        return { store, advance: async (ms) => clock.advance(ms) }
      },
    },
  ],
  [
    'sqlite',
    {
      lease: 1_000,
      ttl: 10_000,
      make: () => {
        const clock = new ManualClock(1_000_000)
        return sqlSubject({ kind: 'sqlite', path: sqliteFile }, clock)
      },
    },
  ],
  ['postgres', { lease: 300, ttl: 800, make: () => sqlSubject({ kind: 'postgres', url: PG_URL }) }],
  ['mysql', { lease: 300, ttl: 800, make: () => sqlSubject({ kind: 'mysql', url: MYSQL_URL }) }],
  [
    'redis',
    {
      lease: 300,
      ttl: 800,
      make: () => {
        const problems: string[] = []
        const store = new RedisVersionStore(resolveRedisStore({ kind: 'redis', url: 'redis://127.0.0.1:6379', prefix: `test:versions:${randomUUID().slice(0, 8)}:` }, 0, problems))
        opened.push(store)
        return { store, advance: sleep }
      },
    },
  ],
]

describe.each(subjects)('version store: %s', (_name, { lease, ttl, make }) => {
  const claimOne = (store: VersionStore, key: string, version: string, token: string, state?: string) => store.claim([key], [version], [state], token, lease, ttl)

  it('claims a new key, applies its version, then answers an older or equal one stale and claims a newer one', async () => {
    const { store } = make()
    const first = await claimOne(store, 'k', v(3), 'A', 'paid')
    expect([...first.codes]).toEqual([CLAIMED])
    expect(first.applied).toEqual([undefined])
    expect([...(await store.commit(['k'], 'A', ttl, false))]).toEqual([1])
    for (const older of [1, 2, 3]) {
      const stale = await claimOne(store, 'k', v(older), 'B', 'created')
      expect([...stale.codes]).toEqual([STALE])
      expect(stale.applied).toEqual([v(3)])
      expect(stale.states).toEqual(['paid'])
    }
    const newer = await claimOne(store, 'k', v(4), 'B', 'shipped')
    expect([...newer.codes]).toEqual([CLAIMED])
    expect(newer.states).toEqual(['paid'])
    expect([...(await store.commit(['k'], 'B', ttl, false))]).toEqual([1])
    expect((await store.inspect(['k']))[0]).toMatchObject({ applied: v(4), state: 'shipped', claimed: undefined, leaseLeftMs: 0 })
  })

  it('a live claim makes every other token wait, for an older version too, until it is committed or released', async () => {
    const { store } = make()
    expect([...(await claimOne(store, 'k', v(5), 'A')).codes]).toEqual([CLAIMED])
    expect([...(await claimOne(store, 'k', v(6), 'B')).codes]).toEqual([IN_PROGRESS])
    expect([...(await claimOne(store, 'k', v(4), 'B')).codes]).toEqual([IN_PROGRESS])
    // A retried claim of the same token is its own.
    expect([...(await claimOne(store, 'k', v(5), 'A')).codes]).toEqual([CLAIMED])
    expect([...(await store.release(['k'], 'B'))]).toEqual([0])
    expect([...(await store.release(['k'], 'A'))]).toEqual([1])
    // Released with nothing applied: the key is absent again, and an older version may run.
    expect(await store.inspect(['k'])).toEqual([undefined])
    expect([...(await claimOne(store, 'k', v(4), 'B')).codes]).toEqual([CLAIMED])
  })

  it('a release keeps the applied version: an older version stays stale after a failed run of a newer one', async () => {
    const { store } = make()
    await claimOne(store, 'k', v(2), 'A', 'created')
    await store.commit(['k'], 'A', ttl, true)
    await claimOne(store, 'k', v(3), 'B', 'paid')
    expect([...(await store.release(['k'], 'B'))]).toEqual([1])
    const after = await claimOne(store, 'k', v(1), 'C')
    expect([...after.codes]).toEqual([STALE])
    expect(after.states).toEqual(['created'])
    expect((await store.inspect(['k']))[0]).toMatchObject({ applied: v(2), state: 'created', claimed: undefined })
  })

  it('a lapsed claim is taken over, and the first owner\'s commit is refused (fenced by token)', async () => {
    const { store, advance } = make()
    await claimOne(store, 'k', v(1), 'A')
    await advance(lease + 50)
    expect([...(await claimOne(store, 'k', v(2), 'B')).codes]).toEqual([CLAIMED])
    expect([...(await store.commit(['k'], 'A', ttl, false))]).toEqual([0])
    expect([...(await store.renew(['k'], 'A', lease, ttl))]).toEqual([0])
    expect([...(await store.commit(['k'], 'B', ttl, false))]).toEqual([1])
    expect((await store.inspect(['k']))[0]?.applied).toBe(v(2))
  })

  it('a newer version taken over from a lapsed older one wins; the older one, committing late, never sets it back (fenced by version)', async () => {
    const { store, advance } = make()
    // Process A claims version 3 and stalls; process B takes over with version 5 and applies it.
    await claimOne(store, 'k', v(3), 'A')
    await advance(lease + 50)
    await claimOne(store, 'k', v(5), 'B')
    await store.commit(['k'], 'B', ttl, true)
    // A wakes up: its commit is refused, and its version 3 is stale when redelivered.
    expect([...(await store.commit(['k'], 'A', ttl, false))]).toEqual([0])
    expect([...(await claimOne(store, 'k', v(3), 'A')).codes]).toEqual([STALE])
    expect((await store.inspect(['k']))[0]?.applied).toBe(v(5))
  })

  it('a retried commit answers applied; a commit with no claim is refused', async () => {
    const { store } = make()
    await claimOne(store, 'k', v(1), 'A')
    expect([...(await store.commit(['k'], 'A', ttl, false))]).toEqual([1])
    expect([...(await store.commit(['k'], 'A', ttl, false))]).toEqual([1])
    expect([...(await store.commit(['k'], 'B', ttl, false))]).toEqual([0])
    expect([...(await store.commit(['absent'], 'A', ttl, false))]).toEqual([0])
  })

  it('a commit of every key a token still holds applies them all; keys it released first stay as they were', async () => {
    const { store } = make()
    await store.claim(['a', 'b'], [v(1), v(1)], ['x', 'x'], 'A', lease, ttl)
    await store.commit(['a', 'b'], 'A', ttl, true)
    const claims = await store.claim(['a', 'b', 'c'], [v(2), v(2), v(2)], ['y', 'y', 'y'], 'B', lease, ttl)
    expect([...claims.codes]).toEqual([CLAIMED, CLAIMED, CLAIMED])
    expect(claims.applied).toEqual([v(1), v(1), undefined])
    expect([...(await store.release(['b'], 'B'))]).toEqual([1])
    expect([...(await store.commit(['a', 'c'], 'B', ttl, true))]).toEqual([1, 1])
    // A retried commit answers applied.
    expect([...(await store.commit(['a', 'c'], 'B', ttl, true))]).toEqual([1, 1])
    const views = await store.inspect(['a', 'b', 'c'])
    expect(views.map((view) => [view?.applied, view?.state, view?.claimed])).toEqual([
      [v(2), 'y', undefined],
      [v(1), 'x', undefined],
      [v(2), 'y', undefined],
    ])
    const after = await store.claim(['a', 'b', 'c'], [v(2), v(2), v(2)], [undefined, undefined, undefined], 'C', lease, ttl)
    expect([...after.codes]).toEqual([STALE, CLAIMED, STALE])
  })

  it('a commit of every key is refused once the lease lapsed and another token took a key over', async () => {
    const { store, advance } = make()
    await store.claim(['a', 'b'], [v(1), v(1)], [undefined, undefined], 'A', lease, ttl)
    await advance(lease + 50)
    await claimOne(store, 'a', v(2), 'B')
    expect([...(await store.commit(['a', 'b'], 'A', ttl, true))]).toEqual([0, 0])
    expect([...(await store.commit(['a'], 'B', ttl, true))]).toEqual([1])
    const views = await store.inspect(['a', 'b'])
    expect(views.map((view) => view?.applied)).toEqual([v(2), undefined])
  })

  it('renew keeps a claim past its lease; without it the claim lapses', async () => {
    const { store, advance } = make()
    await claimOne(store, 'r', v(1), 'A')
    await claimOne(store, 'l', v(1), 'A2')
    for (let step = 0; step < 3; step++) {
      await advance(lease / 2)
      expect([...(await store.renew(['r'], 'A', lease, ttl))]).toEqual([1])
    }
    const claims = await store.claim(['r', 'l'], [v(2), v(2)], [undefined, undefined], 'B', lease, ttl)
    expect([...claims.codes]).toEqual([IN_PROGRESS, CLAIMED])
    expect([...(await store.commit(['l'], 'A2', ttl, true))]).toEqual([0])
    expect((await store.inspect(['r']))[0]?.leaseLeftMs).toBeGreaterThan(0)
  })

  it('an applied version is forgotten ttl after its commit: an older version runs again', async () => {
    const { store, advance } = make()
    await claimOne(store, 'k', v(9), 'A')
    await store.commit(['k'], 'A', ttl, true)
    await advance(ttl + 100)
    expect(await store.inspect(['k'])).toEqual([undefined])
    expect([...(await claimOne(store, 'k', v(1), 'B')).codes]).toEqual([CLAIMED])
  })

  it('orders versions as numbers, bigints and strings by their value, in one batch of distinct keys', async () => {
    const { store } = make()
    const pairs: [number | bigint | string, number | bigint | string][] = [
      [9, 10],
      [99, 100],
      [2 ** 53 - 1, 2n ** 53n],
      [18446744073709551615n, 18446744073709551616n],
      [7, 'a'],
      ['2026-01-01T00:00:00Z', '2026-01-01T00:00:01Z'],
      ['a', 'ab'],
      ['\uffff', '\u{1F600}'],
    ]
    const keys = pairs.map((_, i) => `p${i}`)
    await store.claim(keys, pairs.map(([, newer]) => v(newer)), keys.map(() => undefined), 'A', lease, ttl)
    await store.commit(keys, 'A', ttl, true)
    const older = await store.claim(keys, pairs.map(([old]) => v(old)), keys.map(() => undefined), 'B', lease, ttl)
    expect([...older.codes]).toEqual(keys.map(() => STALE))
    for (const [old, newer] of pairs) expect(compareVersionTexts(v(old), v(newer))).toBeLessThan(0)
  })
})

describe('version texts', () => {
  it('refuses what is not a version, saying why', () => {
    for (const bad of [-1, 1.5, NaN, Infinity, 2 ** 53, -1n, '', 'x'.repeat(257), '\ud800', 'a\0b', null, undefined, {}, true]) {
      expect(encodeVersion(bad)).toHaveProperty('problem')
    }
    expect(encodeVersion(10n ** 99n)).toHaveProperty('problem')
    expect(encodeVersion(10n ** 99n - 1n)).toHaveProperty('text')
  })

  it('keeps the order of 2,000 random integers, as numbers and as bigints', () => {
    const values = Array.from({ length: 2_000 }, () => Math.floor(Math.random() * 2 ** Math.floor(Math.random() * 53)))
    const byValue = [...values].sort((a, b) => a - b)
    const byText = [...values].sort((a, b) => compareVersionTexts(v(a), v(b)))
    expect(byText).toEqual(byValue)
    expect(values.every((x) => v(x) === v(BigInt(x)))).toBe(true)
  })
})
