/**
 * The SQL stores against the real servers, beyond the shared state machine
 * (store-conformance.test.ts): bad input, pools that are closed or servers
 * that refuse, schemas they do not recognise, table routing that must hold
 * across restarts, the bounded sweep, and pools passed in.
 */
import { randomUUID } from 'node:crypto'
import mysql from 'mysql2'
import mysqlPromise from 'mysql2/promise'
import pg from 'pg'
import Database from 'better-sqlite3'
import { afterAll, describe, expect, it } from 'vitest'
import { ManualClock } from '../../dist/src/clock.js'
import { createEngine, type Engine } from '../../dist/src/engine.js'
import { ErrorCode, IdemError } from '../../dist/src/errors.js'
import { dropSqlTables, migrateSqlStore, resolveSqlStoreOptions } from '../../dist/src/store/sql/sql-admin.js'
import { createSqlStore } from '../../dist/src/store/sql/sql-backends.js'
import { statementsFor } from '../../dist/src/store/sql/postgres-store.js'
import { keyBytes, recordsTableName, tableIndexOf } from '../../dist/src/store/sql/sql-records.js'
import type { SqlStoreOptions } from '../../dist/src/store/sql/sql-options.js'
import { ClaimCode } from '../../dist/src/store/store.js'
import { createV1Tables, MYSQL_URL, PG_URL, sleep, sqlKit, type SqlKind } from '../support/sql.js'

const kinds: SqlKind[] = ['postgres', 'mysql', 'sqlite']

describe.each(kinds)('%s store', (kind) => {
  const kit = sqlKit(kind)
  const engines: Engine[] = []
  const closers: (() => Promise<unknown> | unknown)[] = []
  const engine = async (options: Record<string, unknown>): Promise<Engine> => {
    const created = await createEngine({ shards: 2, lru: { maxKeys: 0 }, ...options })
    engines.push(created)
    return created
  }
  afterAll(async () => {
    await Promise.all(engines.map((e) => e.close()))
    for (const close of closers) await close()
    await kit.close()
  })
  const q = (name: string) => (kind === 'mysql' ? `\`${name}\`` : `"${name}"`)
  const rowCount = async (table: string) => Number((await kit.query(`SELECT COUNT(*) AS c FROM ${q(table)}`))[0].c)
  const expectCode = (outcome: { verdict: string; error?: IdemError }, verdict: string, code: string, text?: string) => {
    expect(outcome.verdict).toBe(verdict)
    expect(outcome.error?.code).toBe(code)
    if (text !== undefined) expect(outcome.error?.message).toContain(text)
  }

  describe('bad input', () => {
    it('a key longer than the key column: the store call fails with INVALID_KEY before writing anything; through the engine, only that message is invalid', async () => {
      const options = kit.store()
      const store = createSqlStore(resolveSqlStoreOptions(options))
      closers.push(() => store.close())
      await store.open()
      const long = 'k'.repeat(1025)
      await expect(store.claim(['fine', long], [undefined, undefined], 'tok', 5_000, 60_000)).rejects.toMatchObject({
        code: ErrorCode.INVALID_KEY,
        message: `key: must be at most 1024 UTF-8 bytes, got "${'k'.repeat(60)}…" (1025 bytes)`,
      })
      expect(await rowCount(`${options.tablePrefix}records`)).toBe(0) // not even the valid key was written
      const multibyte = 'é'.repeat(513) // 1026 bytes in 513 characters
      await expect(store.commit([multibyte], undefined, 'tok', 5_000)).rejects.toMatchObject({ code: ErrorCode.INVALID_KEY })

      const e = await engine({ store: options })
      const outs = await e.processBatch([{ key: 'ok' }, { key: long }, { key: 'x'.repeat(600), namespace: 'n'.repeat(600) }], () => 'done')
      expect(outs.map((o) => o.verdict)).toEqual(['new', 'invalid', 'invalid'])
      expect(outs[1].error?.code).toBe(ErrorCode.INVALID_KEY)
      expect(outs[2].error?.code).toBe(ErrorCode.INVALID_KEY)
      expect(await rowCount(`${options.tablePrefix}records`)).toBe(1)
    })

    it(`a ${kind === 'sqlite' ? 'database' : 'pool'} its owner closed: STORE_FAILED at once (no retries), the handler never runs, nothing is written`, async () => {
      let options: SqlStoreOptions
      if (kind === 'postgres') {
        const pool = new pg.Pool({ connectionString: PG_URL, max: 2 })
        options = { kind, tablePrefix: kit.store().tablePrefix, pool }
        await pool.end()
      } else if (kind === 'mysql') {
        const pool = mysqlPromise.createPool({ uri: MYSQL_URL, connectionLimit: 2 })
        options = { kind, tablePrefix: kit.store().tablePrefix, pool }
        await pool.end()
      } else {
        const database = new Database(kit.file!)
        options = { kind, tablePrefix: kit.store().tablePrefix, database }
        database.close()
      }
      const e = await engine({ store: options })
      let runs = 0
      const out = await e.process({ key: 'k' }, () => runs++)
      expectCode(out, 'in-flight', ErrorCode.STORE_FAILED, kind === 'sqlite' ? 'has been closed' : 'has been ended')
      expect(runs).toBe(0)
      expect(e.stats().totals.storeRetries).toBe(0)
      expect(e.stats().totals.storeFailures).toBe(1)
    })

    it(kind === 'sqlite' ? 'a database file that cannot be opened: STORE_FAILED naming the file' : 'a server that refuses connections: STORE_FAILED after the retries, with the driver error; the handler never runs', async () => {
      const options =
        kind === 'sqlite'
          ? { ...kit.store(), path: `/nonexistent-${randomUUID()}/idem.db` }
          : { ...kit.store(), url: kind === 'postgres' ? 'postgres://postgres@127.0.0.1:1/test' : 'mysql://root@127.0.0.1:1/test', retries: 2, retryBackoffMs: 10, commandTimeoutMs: 1_000 }
      const e = await engine({ store: options })
      let runs = 0
      const out = await e.process({ key: 'k' }, () => runs++)
      expect(runs).toBe(0)
      if (kind === 'sqlite') expectCode(out, 'in-flight', ErrorCode.STORE_FAILED, 'cannot open the sqlite database')
      else {
        expectCode(out, 'in-flight', ErrorCode.STORE_FAILED, `${kind} claim failed after 3 attempt(s)`)
        expect(out.error?.message).toMatch(/ECONNREFUSED/)
        expect(e.stats().totals.storeRetries).toBe(2)
      }
    })
  })

  describe('schema', () => {
    it('tables dropped under a running store with retries: 0: the failed call makes the store check its schema again, and the next call recreates it', async () => {
      const options = kit.store({ retries: 0 })
      const store = createSqlStore(resolveSqlStoreOptions(options))
      closers.push(() => store.close())
      expect(Array.from((await store.claim(['a'], [undefined], 'A', 5_000, 60_000)).codes)).toEqual([ClaimCode.CLAIMED])
      await dropSqlTables(options)
      await expect(store.claim(['b'], [undefined], 'B', 5_000, 60_000)).rejects.toMatchObject({ code: ErrorCode.STORE_FAILED })
      expect(Array.from((await store.claim(['b'], [undefined], 'B', 5_000, 60_000)).codes)).toEqual([ClaimCode.CLAIMED])
    })

    it('creates its tables and index on first use, records its layout, and a second engine uses them as they are', async () => {
      const options = kit.store()
      const e = await engine({ store: options })
      expect((await e.process({ key: 'a' }, () => 1)).verdict).toBe('new')
      const meta = await kit.query(`SELECT name, value FROM ${q(`${options.tablePrefix}meta`)} ORDER BY name`)
      expect(meta.map((r) => [r.name, r.value])).toEqual([
        ['key_bytes', '1024'],
        ['schema_version', '2'],
        ['tables', '1'],
      ])
      const again = await engine({ store: options })
      expect((await again.process({ key: 'a' }, () => 2)).verdict).toBe('duplicate')
    })

    it('a table of that name that idem did not create: SCHEMA_MISMATCH, and the table is left untouched', async () => {
      const options = kit.store()
      const table = `${options.tablePrefix}records`
      await kit.query(`CREATE TABLE ${q(table)} (idem_key ${kind === 'postgres' ? 'bytea' : kind === 'mysql' ? 'VARBINARY(100)' : 'BLOB'} PRIMARY KEY, note ${kind === 'mysql' ? 'VARCHAR(20)' : 'text'})`)
      closers.push(() => kit.query(`DROP TABLE IF EXISTS ${q(table)}`))
      await kit.query(`INSERT INTO ${q(table)} (idem_key, note) VALUES (${kind === 'postgres' ? "'\\x6b'::bytea, $1" : "X'6b', ?"})`, ['theirs'])
      const e = await engine({ store: options })
      expectCode(await e.process({ key: 'k' }, () => 1), 'in-flight', ErrorCode.SCHEMA_MISMATCH, `${table} exists but ${options.tablePrefix}meta does not`)
      expect(await rowCount(table)).toBe(1)
      await expect(migrateSqlStore(options)).rejects.toMatchObject({ code: ErrorCode.SCHEMA_MISMATCH })
    })

    it('tables created with another table count: SCHEMA_MISMATCH naming both counts (the routing would change)', async () => {
      const options = kit.store({ tables: 4 })
      expect(await migrateSqlStore(options)).toMatchObject({ created: true })
      const e = await engine({ store: { ...options, tables: 2 } })
      expectCode(await e.process({ key: 'k' }, () => 1), 'in-flight', ErrorCode.SCHEMA_MISMATCH, 'created with tables: 4, this config says tables: 2')
    })

    it('a column changed under it, or an unknown schema_version: SCHEMA_MISMATCH naming what differs', async () => {
      const changed = kit.store()
      await migrateSqlStore(changed)
      const table = `${changed.tablePrefix}records`
      if (kind === 'postgres') await kit.query(`ALTER TABLE "${table}" ALTER COLUMN token TYPE varchar(10)`)
      else if (kind === 'mysql') await kit.query(`ALTER TABLE \`${table}\` MODIFY token VARBINARY(16) NOT NULL`)
      else await kit.query(`ALTER TABLE "${table}" RENAME COLUMN token TO owner`)
      const e = await engine({ store: changed })
      const expected = kind === 'postgres' ? `${table}.token is character varying, expected text` : kind === 'mysql' ? `${table}.token is varbinary(16), expected varbinary(255)` : `${table}.token is missing`
      expectCode(await e.process({ key: 'k' }, () => 1), 'in-flight', ErrorCode.SCHEMA_MISMATCH, expected)

      const future = kit.store()
      await migrateSqlStore(future)
      await kit.query(`UPDATE ${q(`${future.tablePrefix}meta`)} SET value = '99' WHERE name = 'schema_version'`)
      const f = await engine({ store: future })
      expectCode(await f.process({ key: 'k' }, () => 1), 'in-flight', ErrorCode.SCHEMA_MISMATCH, 'schema_version is "99"')
    })

    it('createTables: false refuses to start until `idem migrate` (migrateSqlStore) has created the tables; migrating again only checks', async () => {
      const options = kit.store({ createTables: false })
      const e = await engine({ store: options })
      expectCode(await e.process({ key: 'k' }, () => 1), 'in-flight', ErrorCode.SCHEMA_MISMATCH, 'run `idem migrate`')
      expect(await migrateSqlStore(options)).toMatchObject({ created: true })
      expect(await migrateSqlStore(options)).toMatchObject({ created: false })
      await sleep(1_100) // a refused schema is checked again after a second, not on every batch
      expect((await e.process({ key: 'k' }, () => 1)).verdict).toBe('new')
    })

    it('version-1 tables: refused with createTables: false (naming `idem migrate`), untouched; upgraded by a store with createTables, rows kept, and UNKNOWN then works', async () => {
      const options = kit.store()
      const records = `${options.tablePrefix}records`
      const meta = q(`${options.tablePrefix}meta`)
      await createV1Tables(kit, options.tablePrefix)
      const version = async () => (await kit.query(`SELECT value FROM ${meta} WHERE name = 'schema_version'`))[0].value

      const refusing = createSqlStore(resolveSqlStoreOptions({ ...options, createTables: false }))
      closers.push(() => refusing.close())
      const refused = await refusing.open().then(() => undefined, (error: IdemError) => error)
      expect(refused?.code).toBe(ErrorCode.SCHEMA_MISMATCH)
      expect(refused?.message).toContain(`schema_version is 1 in ${options.tablePrefix}meta, which cannot hold UNKNOWN keys; run \`idem migrate\` for this store to upgrade it to version 2`)
      expect(await version()).toBe('1')

      const store = createSqlStore(resolveSqlStoreOptions(options))
      closers.push(() => store.close())
      await store.open()
      expect(await version()).toBe('2')
      expect(await rowCount(records)).toBe(2)
      const [running, done] = await store.inspect(['running', 'done'])
      expect(running).toMatchObject({ state: 'in-progress', token: 'A', fingerprint: 'fp' })
      expect(done).toMatchObject({ state: 'done', token: 'B', result: 'r' })
      expect(Array.from(await store.markUnknown(['running'], 'A', 60_000))).toEqual([1])
      const seen = await store.claim(['running', 'done'], [undefined, undefined], 'C', 5_000, 60_000)
      expect(Array.from(seen.codes)).toEqual([ClaimCode.UNKNOWN, ClaimCode.DONE])
      expect(seen.fingerprints[0]).toBe('fp')
      if (kind === 'postgres') {
        const checks = await kit.query(`SELECT conname, pg_get_constraintdef(oid) AS def FROM pg_constraint WHERE conrelid = $1::regclass AND contype = 'c' AND conname LIKE '%state%'`, [records])
        expect(checks).toEqual([{ conname: `${records}_state_check`, def: 'CHECK ((state = ANY (ARRAY[1, 3, 4])))' }])
      }
      if (kind === 'sqlite') {
        const index = await kit.query(`SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = ?`, [records])
        expect(index.map((r) => r.name)).toContain(`${records}_expires_at`)
      }
      // Upgraded once: a second store finds version 2 and only checks it.
      const again = await migrateSqlStore(options)
      expect(again).toMatchObject({ created: false, upgraded: false })
    })

    it('tables dropped under a running store are created again by the next call', async () => {
      const options = kit.store()
      const e = await engine({ store: options })
      expect((await e.process({ key: 'a' }, () => 1)).verdict).toBe('new')
      await kit.query(`DROP TABLE ${q(`${options.tablePrefix}records`)}`)
      await kit.query(`DROP TABLE ${q(`${options.tablePrefix}meta`)}`)
      expect((await e.process({ key: 'b' }, () => 1)).verdict).toBe('new')
      expect(e.stats().totals.storeFailures).toBe(0)
    })
  })

  it('tables: 16 spreads keys by a stable hash: every key is in its own table, and a restarted engine finds every one of them', async () => {
    const options = kit.store({ tables: 16 })
    const keys = Array.from({ length: 800 }, (_, i) => `order-${i}`)
    const first = await engine({ shards: 4, store: options })
    const outs = await first.processBatch(keys.map((key) => ({ key })), () => 'r')
    expect(outs.every((o) => o.verdict === 'new' && o.error === undefined)).toBe(true)
    await first.close()
    const perTable = new Map<number, number>()
    for (const key of keys) {
      const t = tableIndexOf(keyBytes(key), 16)
      perTable.set(t, (perTable.get(t) ?? 0) + 1)
    }
    for (let t = 0; t < 16; t++) expect(await rowCount(recordsTableName(options.tablePrefix, t, 16))).toBe(perTable.get(t) ?? 0)
    expect(perTable.size).toBe(16)
    const restarted = await engine({ shards: 3, store: options })
    const again = await restarted.processBatch(keys.map((key) => ({ key })), () => 'twice')
    expect(again.every((o) => o.verdict === 'duplicate' && o.result === 'r')).toBe(true)
  })

  it('the sweep deletes expired records in bounded statements (sweepBatch rows at most), never live ones', async () => {
    const clock = kind === 'sqlite' ? new ManualClock(Date.now()) : undefined
    const options = kit.store({ sweepBatch: 100, sweepIntervalMs: 0 })
    const store = createSqlStore(resolveSqlStoreOptions(options), clock)
    closers.push(() => store.close())
    const expiring = Array.from({ length: 250 }, (_, i) => `old-${i}`)
    const live = Array.from({ length: 30 }, (_, i) => `live-${i}`)
    await store.claim(expiring, expiring.map(() => undefined), 'A', 60_000, 60_000)
    await store.commit(expiring, undefined, 'A', 200)
    await store.claim(live, live.map(() => undefined), 'A', 60_000, 60_000)
    await store.commit(live, undefined, 'A', 600_000)
    if (clock !== undefined) clock.advance(500)
    else await sleep(500)
    const table = `${options.tablePrefix}records`
    expect(await rowCount(table)).toBe(280)
    expect([await store.sweepOnce(), await store.sweepOnce(), await store.sweepOnce(), await store.sweepOnce()]).toEqual([100, 100, 50, 0])
    expect(await rowCount(table)).toBe(30)
    expect(Array.from((await store.claim(live, live.map(() => undefined), 'B', 1000, 60_000)).codes).every((c) => c === ClaimCode.DONE)).toBe(true)
  })

  it('the sweep deletes an expired UNKNOWN row like any expired row, and leaves a live one', async () => {
    const clock = kind === 'sqlite' ? new ManualClock(Date.now()) : undefined
    const options = kit.store({ sweepIntervalMs: 0 })
    const store = createSqlStore(resolveSqlStoreOptions(options), clock)
    closers.push(() => store.close())
    await store.claim(['ending', 'staying'], [undefined, undefined], 'A', 60_000, 60_000)
    await store.markUnknown(['ending'], 'A', 200)
    await store.markUnknown(['staying'], 'A', 600_000)
    if (clock !== undefined) clock.advance(500)
    else await sleep(500)
    expect(await store.sweepOnce()).toBe(1)
    expect(await rowCount(`${options.tablePrefix}records`)).toBe(1)
    expect(Array.from((await store.claim(['ending', 'staying'], [undefined, undefined], 'B', 1000, 60_000)).codes)).toEqual([ClaimCode.CLAIMED, ClaimCode.UNKNOWN])
  })

  if (kind === 'postgres') {
    // Below a few hundred thousand rows the planner may still choose to scan the table for the
    // fenced UPDATE/DELETE (its cost model's choice, a few ms there); the read-backs never do.
    it('postgres: on a table of 1,000,000 rows every batch statement probes the primary key per key, never scans the table', async () => {
      const options = kit.store()
      await migrateSqlStore(options)
      const table = `${options.tablePrefix}records`
      await kit.query(`INSERT INTO "${table}" SELECT convert_to('old-' || g, 'UTF8'), 1, 'tok', NULL, NULL, now() + interval '1 day' FROM generate_series(1, 1000000) g`)
      await kit.query(`ANALYZE "${table}"`)
      const s = statementsFor(table)
      const keys = Array.from({ length: 1024 }, (_, i) => Buffer.from(i % 3 === 0 ? `old-${i + 1}` : `new-${i}`)).sort(Buffer.compare)
      const statements: [string, string, unknown[]][] = [
        ['claim', s.claim, [keys, keys.map(() => null), 'other', 30_000]],
        ['commit with results', s.commit(true), [keys, keys.map(() => '1'), 'tok', 30_000]],
        ['commit', s.commit(false), [keys, null, 'tok', 30_000]],
        ['release', s.release, [keys, 'tok']],
        ['renew', s.renew, [keys, 'tok', 30_000]],
        ['markUnknown', s.markUnknown, [keys, 'tok', 30_000]],
        ['resolve', s.resolve, [keys, keys.map((_, i) => i % 2 === 0), keys.map(() => '1'), 30_000, null]],
        ['resolve with a token', s.resolve, [keys, keys.map((_, i) => i % 2 === 0), keys.map(() => '1'), 30_000, 'tok']],
        ['sweep', s.sweep, [1_000]],
      ]
      for (const [name, text, values] of statements) {
        const plan = (await kit.query(`EXPLAIN ${text}`, values)).map((row) => String(row['QUERY PLAN'])).join('\n')
        expect(plan, name).not.toContain(`Seq Scan on ${table}`)
      }
    })
  }

  if (kind !== 'sqlite') {
    it(`a ${kind} pool passed in: shared by every shard, used as it is, never ended by idem`, async () => {
      const pgPool = () => {
        const pool = new pg.Pool({ connectionString: PG_URL, max: 4 })
        return { pool, probe: () => pool.query('SELECT 1'), end: () => pool.end() }
      }
      const promisePool = () => {
        const pool = mysqlPromise.createPool({ uri: MYSQL_URL, connectionLimit: 4 })
        return { pool, probe: () => pool.query('SELECT 1'), end: () => pool.end() }
      }
      const callbackPool = () => {
        const pool = mysql.createPool({ uri: MYSQL_URL, connectionLimit: 4 })
        return {
          pool,
          probe: () => new Promise((resolve, reject) => pool.query('SELECT 1', (error, rows) => (error ? reject(error) : resolve(rows)))),
          end: () => new Promise<void>((resolve) => pool.end(() => resolve())),
        }
      }
      const flavours =
        kind === 'postgres'
          ? [{ name: 'pg.Pool', ...pgPool() }]
          : [
              { name: 'mysql2/promise pool', ...promisePool() },
              { name: 'mysql2 callback pool (no multipleStatements: write and read-back in two round trips)', ...callbackPool() },
            ]
      for (const { name, pool, probe, end } of flavours) {
        const effects = await kit.effectTable()
        const e = await createEngine({ shards: 4, store: { ...kit.store(), url: undefined, pool } as SqlStoreOptions })
        const keys = Array.from({ length: 300 }, (_, i) => `p${i % 200}`)
        const outs = await e.processBatch(keys.map((key) => ({ key })), e.transactional(async (tx: unknown, m: { key: string }) => kit.insertEffect(tx, effects, m.key)))
        expect(outs.filter((o) => o.verdict === 'new').length, name).toBe(200)
        expect((await kit.effectsPerKey(effects)).size, name).toBe(200)
        await e.close()
        // Still open: idem never ends a pool it did not open.
        await expect(probe(), name).resolves.toBeDefined()
        await end()
      }
    })
  }
})
