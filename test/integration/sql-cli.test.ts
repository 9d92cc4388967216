/** The CLI's SQL parts: `idem demo --store sqlite:PATH` and `idem migrate`, run as a user would. */
import { randomUUID } from 'node:crypto'
import { rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import Database from 'better-sqlite3'
import { afterAll, describe, expect, it } from 'vitest'
import { dropSqlTables } from '../../dist/src/store/sql/sql-admin.js'
import { createV1Tables, MYSQL_URL, PG_URL, sqlKit, type SqlKind } from '../support/sql.js'
import { idem } from '../support/idem-cli.js'

const file = join(tmpdir(), `idem-cli-${randomUUID()}.db`)
const prefix = `t_${randomUUID().replaceAll('-', '').slice(0, 10)}_`
afterAll(async () => {
  await dropSqlTables({ kind: 'postgres', url: PG_URL, tablePrefix: prefix, tables: 2 })
  await dropSqlTables({ kind: 'mysql', url: MYSQL_URL, tablePrefix: prefix })
  for (const suffix of ['', '-wal', '-shm']) rmSync(file + suffix, { force: true })
})

const tablesIn = (path: string): string[] => {
  const db = new Database(path, { readonly: true })
  try {
    return (db.prepare("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name").all() as { name: string }[]).map((r) => r.name)
  } finally {
    db.close()
  }
}

describe('idem demo --store sqlite:PATH', () => {
  it.each(['0', '1'])('threads %s: one effect per unique key on the sqlite store, exit 0; its tables are dropped at the end', (threads) => {
    const run = idem('demo', '--store', `sqlite:${file}`, '--messages', '30000', '--threads', threads, '--json')
    expect(run.stderr).toBe('')
    expect(run.code).toBe(0)
    const summary = JSON.parse(run.stdout)
    expect(summary.config.store).toBe(`sqlite:${file}`)
    expect(summary.effects).toBe(summary.uniqueKeys)
    expect(summary.lost).toBe(0)
    expect(summary.doubleEffects).toBe(0)
    expect(summary.layers.storeOperations).toBeGreaterThan(0)
    expect(tablesIn(file).filter((name) => name.startsWith('idem_demo_'))).toEqual([])
  })

  it.each([
    [['--store', 'sqlite:'], '--store: sqlite: needs a file path'],
    [['--store', 'dynamo://x'], '--store: must be memory, redis://…, sqlite:PATH, postgres://… or mysql://…'],
    [['--store', `${PG_URL}`], '--store: the embedded demo runs on memory or sqlite:PATH'],
    [['--store', 'memory', '--redis', 'redis://127.0.0.1:6379'], '--store: not with --redis'],
  ])('bad --store %j exits 2 with the reason', (args, reason) => {
    const run = idem('demo', ...args)
    expect(run.code).toBe(2)
    expect(run.stderr).toContain(reason)
  })
})

describe('idem migrate', () => {
  it('creates the tables, then finds them as expected; another table count is refused with exit 1 (sqlite)', () => {
    const first = idem('migrate', '--store', `sqlite:${file}`, '--table-prefix', prefix)
    expect(first.code).toBe(0)
    expect(first.stdout).toContain(`created ${prefix}records, ${prefix}meta (sqlite)`)
    expect(tablesIn(file)).toEqual(expect.arrayContaining([`${prefix}records`, `${prefix}meta`]))
    const again = idem('migrate', '--store', `sqlite:${file}`, '--table-prefix', prefix)
    expect(again.code).toBe(0)
    expect(again.stdout).toContain('already there, and as expected')
    const other = idem('migrate', '--store', `sqlite:${file}`, '--table-prefix', prefix, '--tables', '4')
    expect(other.code).toBe(1)
    expect(other.stderr).toContain('SCHEMA_MISMATCH')
    expect(other.stderr).toContain('created with tables: 1, this config says tables: 4')
  })

  it.each([
    ['postgres', PG_URL, ['--tables', '2'], `${prefix}records_0, ${prefix}records_1, ${prefix}meta (postgres)`],
    ['mysql', MYSQL_URL, [], `${prefix}records, ${prefix}meta (mysql)`],
  ])('%s: creates the tables on the server', (_, url, extra, created) => {
    const run = idem('migrate', '--store', url, '--table-prefix', prefix, ...extra)
    expect(run.stderr).toBe('')
    expect(run.code).toBe(0)
    expect(run.stdout).toContain(`created ${created}`)
  })

  it.each<SqlKind>(['postgres', 'mysql', 'sqlite'])('%s: upgrades version-1 tables to version 2, rows kept; a second run finds them as expected', async (kind) => {
    const kit = sqlKit(kind)
    try {
      const { tablePrefix } = kit.store()
      await createV1Tables(kit, tablePrefix)
      const store = kind === 'postgres' ? PG_URL : kind === 'mysql' ? MYSQL_URL : `sqlite:${kit.file}`
      const run = idem('migrate', '--store', store, '--table-prefix', tablePrefix)
      expect(run.stderr).toBe('')
      expect(run.code).toBe(0)
      expect(run.stdout).toContain(`upgraded to schema version 2: ${tablePrefix}records, ${tablePrefix}meta (${kind})`)
      const q = (name: string) => (kind === 'mysql' ? `\`${name}\`` : `"${name}"`)
      expect((await kit.query(`SELECT value FROM ${q(`${tablePrefix}meta`)} WHERE name = 'schema_version'`))[0].value).toBe('2')
      expect((await kit.query(`SELECT idem_key FROM ${q(`${tablePrefix}records`)} ORDER BY idem_key`)).map((r) => Buffer.from(r.idem_key as Uint8Array).toString())).toEqual(['done', 'running'])
      const again = idem('migrate', '--store', store, '--table-prefix', tablePrefix)
      expect(again.code).toBe(0)
      expect(again.stdout).toContain('already there, and as expected')
    } finally {
      await kit.close()
    }
  })

  it.each([
    [[], 'give the store to migrate with --store'],
    [['--store', 'memory'], 'the memory store has no tables'],
    [['--store', `sqlite:${file}`, '--table-prefix', 'Bad-Prefix'], 'store.tablePrefix: must be lowercase letters'],
    [['--store', 'postgres://postgres@127.0.0.1:1/test'], 'ECONNREFUSED'],
  ])('bad input %j fails with the reason', (args, reason) => {
    const run = idem('migrate', ...args)
    expect(run.code).not.toBe(0)
    expect(run.stderr).toContain(reason)
  })
})
