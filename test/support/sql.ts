/**
 * What the SQL store tests share: one kit per real server (PostgreSQL and
 * MariaDB on the machine, SQLite in a temporary file), each with an admin
 * connection, store options on tables of a random prefix, a business
 * "effects" table with NO unique constraint (so a double effect shows as two
 * rows instead of being hidden by the database), and cleanup that drops only
 * the tables the test created.
 */
import { randomUUID } from 'node:crypto'
import { rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import Database from 'better-sqlite3'
import mysql from 'mysql2/promise'
import pg from 'pg'
import { dropSqlTables } from '../../dist/src/store/sql/sql-admin.js'
import type { SqlStoreOptions } from '../../dist/src/store/sql/sql-options.js'

export const PG_URL = process.env.IDEM_TEST_POSTGRES ?? 'postgres://postgres@127.0.0.1:5432/test'
export const MYSQL_URL = process.env.IDEM_TEST_MYSQL ?? 'mysql://root@127.0.0.1:3306/test'

export type SqlKind = 'postgres' | 'mysql' | 'sqlite'

export interface SqlKit {
  kind: SqlKind
  /** Store options on tables of a fresh random prefix (dropped by close()). */
  store(extra?: Record<string, unknown>): SqlStoreOptions & { tablePrefix: string }
  /** Runs SQL on the admin connection ($1 placeholders on postgres, ? elsewhere); returns the rows. */
  query(sql: string, params?: unknown[]): Promise<Record<string, unknown>[]>
  /** Creates a business table `<name>` (id, k, n) with no unique key; dropped by close(). */
  effectTable(): Promise<string>
  /** The business write a handler makes on its transaction connection. */
  insertEffect(tx: unknown, table: string, key: string): unknown
  /** Rows per key in an effects table. */
  effectsPerKey(table: string): Promise<Map<string, number>>
  /** The sqlite file (sqlite only). */
  file?: string
  close(): Promise<void>
}

const randomPrefix = (): string => `t_${randomUUID().replaceAll('-', '').slice(0, 10)}_`

export function sqlKit(kind: SqlKind): SqlKit {
  const stores: SqlStoreOptions[] = []
  const effects: string[] = []
  const base = (): Record<string, unknown> =>
    kind === 'postgres' ? { kind, url: PG_URL } : kind === 'mysql' ? { kind, url: MYSQL_URL } : { kind, path: file! }
  const file = kind === 'sqlite' ? join(tmpdir(), `idem-sql-${randomUUID()}.db`) : undefined

  let pgPool: pg.Pool | undefined
  let myPool: mysql.Pool | undefined
  let sqlite: Database.Database | undefined
  const query = async (sql: string, params: unknown[] = []): Promise<Record<string, unknown>[]> => {
    if (kind === 'postgres') return (await (pgPool ??= new pg.Pool({ connectionString: PG_URL, max: 2 })).query(sql, params)).rows
    if (kind === 'mysql') {
      myPool ??= mysql.createPool({ uri: MYSQL_URL, connectionLimit: 2 })
      const [rows] = await myPool.query(sql, params)
      return Array.isArray(rows) ? (rows as Record<string, unknown>[]) : []
    }
    sqlite ??= new Database(file!, { timeout: 5000 })
    const statement = sqlite.prepare(sql)
    return statement.reader ? (statement.all(...params) as Record<string, unknown>[]) : (statement.run(...params), [])
  }

  return {
    kind,
    file,
    store(extra = {}) {
      const options = { ...base(), tablePrefix: randomPrefix(), ...extra } as SqlStoreOptions & { tablePrefix: string }
      stores.push(options)
      return options
    },
    query,
    async effectTable() {
      const name = `${randomPrefix()}effects`
      effects.push(name)
      if (kind === 'postgres') await query(`CREATE TABLE "${name}" (id bigserial PRIMARY KEY, k text NOT NULL, n int NOT NULL DEFAULT 1)`)
      else if (kind === 'mysql') await query(`CREATE TABLE \`${name}\` (id BIGINT AUTO_INCREMENT PRIMARY KEY, k VARCHAR(200) NOT NULL, n INT NOT NULL DEFAULT 1) ENGINE=InnoDB`)
      else await query(`CREATE TABLE "${name}" (id INTEGER PRIMARY KEY, k TEXT NOT NULL, n INTEGER NOT NULL DEFAULT 1)`)
      return name
    },
    insertEffect(tx, table, key) {
      if (kind === 'postgres') return (tx as pg.PoolClient).query(`INSERT INTO "${table}" (k) VALUES ($1)`, [key])
      if (kind === 'mysql') return (tx as mysql.PoolConnection).query(`INSERT INTO \`${table}\` (k) VALUES (?)`, [key])
      return (tx as Database.Database).prepare(`INSERT INTO "${table}" (k) VALUES (?)`).run(key)
    },
    async effectsPerKey(table) {
      const q = kind === 'mysql' ? `\`${table}\`` : `"${table}"`
      const rows = await query(`SELECT k, COUNT(*) AS c FROM ${q} GROUP BY k`)
      return new Map(rows.map((r) => [String(r.k), Number(r.c)]))
    },
    async close() {
      for (const name of effects) await query(`DROP TABLE IF EXISTS ${kind === 'mysql' ? `\`${name}\`` : `"${name}"`}`)
      await pgPool?.end()
      await myPool?.end()
      sqlite?.close()
      for (const options of stores) await dropSqlTables(options).catch(() => {})
      if (file !== undefined) for (const suffix of ['', '-wal', '-shm']) rmSync(file + suffix, { force: true })
    },
  }
}

export const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms))
