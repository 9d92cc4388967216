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

/**
 * The tables of schema version 1 (before UNKNOWN), as idem created them, with
 * one IN_PROGRESS row ('running', token A, fingerprint "fp") and one DONE row
 * ('done', token B, result "r"), both live for an hour. PostgreSQL and SQLite
 * checked `state IN (1, 3)`; MySQL's state column had no check.
 */
export async function createV1Tables(kit: SqlKit, prefix: string): Promise<void> {
  const records = `${prefix}records`
  const meta = `${prefix}meta`
  const statements =
    kit.kind === 'postgres'
      ? [
          `CREATE TABLE "${meta}" (name text PRIMARY KEY, value text NOT NULL)`,
          `CREATE TABLE "${records}" (
            idem_key    bytea       NOT NULL PRIMARY KEY CHECK (octet_length(idem_key) BETWEEN 1 AND 1024),
            state       smallint    NOT NULL CHECK (state IN (1, 3)),
            token       text        NOT NULL,
            fingerprint text,
            result      text,
            expires_at  timestamptz NOT NULL)`,
          `CREATE INDEX "${records}_expires_at" ON "${records}" (expires_at)`,
        ]
      : kit.kind === 'mysql'
        ? [
            `CREATE TABLE \`${meta}\` (name VARCHAR(64) CHARACTER SET ascii NOT NULL PRIMARY KEY, value VARCHAR(255) NOT NULL) ENGINE=InnoDB`,
            `CREATE TABLE \`${records}\` (
              idem_key    VARBINARY(1024) NOT NULL,
              state       TINYINT NOT NULL,
              token       VARBINARY(255) NOT NULL,
              fingerprint LONGTEXT CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NULL,
              result      LONGTEXT CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NULL,
              expires_at  DATETIME(3) NOT NULL,
              PRIMARY KEY (idem_key),
              KEY \`${records}_expires_at\` (expires_at)) ENGINE=InnoDB`,
          ]
        : [
            `CREATE TABLE "${meta}" (name TEXT NOT NULL PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID`,
            `CREATE TABLE "${records}" (
              idem_key    BLOB    NOT NULL PRIMARY KEY CHECK (length(idem_key) BETWEEN 1 AND 1024),
              state       INTEGER NOT NULL CHECK (state IN (1, 3)),
              token       TEXT    NOT NULL,
              fingerprint TEXT,
              result      TEXT,
              expires_at  INTEGER NOT NULL) WITHOUT ROWID`,
            `CREATE INDEX "${records}_expires_at" ON "${records}" (expires_at)`,
          ]
  for (const sql of statements) await kit.query(sql)
  const q = kit.kind === 'mysql' ? (name: string) => `\`${name}\`` : (name: string) => `"${name}"`
  const p = kit.kind === 'postgres' ? (i: number) => `$${i}` : () => '?'
  await kit.query(`INSERT INTO ${q(meta)} (name, value) VALUES ('schema_version', '1'), ('tables', '1'), ('key_bytes', '1024')`)
  const inAnHour = kit.kind === 'postgres' ? "now() + interval '1 hour'" : kit.kind === 'mysql' ? 'TIMESTAMPADD(HOUR, 1, UTC_TIMESTAMP(3))' : String(Date.now() + 3_600_000)
  const insert = `INSERT INTO ${q(records)} (idem_key, state, token, fingerprint, result, expires_at) VALUES (${p(1)}, ${p(2)}, ${p(3)}, ${p(4)}, ${p(5)}, ${inAnHour})`
  await kit.query(insert, [Buffer.from('running'), 1, 'A', '"fp"', null])
  await kit.query(insert, [Buffer.from('done'), 3, 'B', null, '"r"'])
}
