/**
 * `store: { kind: 'postgres' | 'mysql' | 'sqlite', … }` as a user writes it,
 * the filled config the stores run with, and the one validation of both.
 * Drivers are optional peer dependencies, so the types of pools and databases
 * a user passes in are structural here (see sql-drivers.ts), never imports.
 */
import { OptionReader, type Filled } from '../../validation.js'
import type { MysqlPoolLike, PgPoolLike, SqliteDatabaseLike } from './sql-drivers.js'

/** Options every SQL store shares. */
export interface SqlCommonOptions {
  /**
   * Prefix of the store's tables: records live in `<prefix>records` (or
   * `<prefix>records_0` … `_<tables-1>`), the schema description in
   * `<prefix>meta`. Lowercase letters, digits and `_`, starting with a letter
   * or `_`, at most 40 characters.
   * @default 'idem_'
   */
  tablePrefix?: string
  /**
   * Record tables the keys are spread over by a stable hash of the key (FNV-1a
   * of its UTF-8 bytes, modulo this). Smaller tables and indexes, less lock
   * contention between shards. Fixed when the schema is created: a store whose
   * config says otherwise refuses to start (SCHEMA_MISMATCH), since every key
   * would be looked for in the wrong table.
   * @default 1
   */
  tables?: number
  /**
   * Create the tables and indexes on first use when they are missing, and
   * upgrade version-1 tables. With false, the store refuses to start until
   * `idem migrate` has created or upgraded them (for deployments where the
   * application's database user cannot run DDL).
   * @default true
   */
  createTables?: boolean
  /** Retries of a failed call before its batch fails closed with STORE_FAILED. @default 3 */
  retries?: number
  /** First backoff between retries, doubled each time. @default 50 */
  retryBackoffMs?: number
  /** Largest stored result, as JSON bytes; a larger one is not kept (RESULT_TOO_LARGE). @default 65536 */
  maxResultBytes?: number
  /**
   * How often each store deletes expired records (DONE past its TTL, leases
   * long lapsed). Each run deletes at most sweepBatch rows per table in one
   * statement, never the whole table at once. 0 disables the sweep (expired
   * records are still treated as absent; they only take space).
   * @default 10000
   */
  sweepIntervalMs?: number
  /** Most rows one sweep statement deletes. @default 1000 */
  sweepBatch?: number
}

/** Options of the servers' stores (postgres, mysql). */
export interface SqlServerOptions extends SqlCommonOptions {
  /** Connections of the pool each store (one per shard actor) opens from `url`. @default 2 */
  poolSize?: number
  /** Connections of the pool the transaction helper opens from `url` for handler transactions. @default 16 */
  transactionPoolSize?: number
  /** A connection attempt or a statement without an answer for this long fails (and is retried). @default 5000 */
  commandTimeoutMs?: number
}

export interface PostgresStoreOptions extends SqlServerOptions {
  kind: 'postgres'
  /** `postgres://user@host:port/database` (pg's connection string). One of url or pool. */
  url?: string
  /** A `pg.Pool` you own (idem never ends it). Only with threads: 0: a pool cannot cross into a worker thread. */
  pool?: PgPoolLike
}

export interface MysqlStoreOptions extends SqlServerOptions {
  kind: 'mysql'
  /** `mysql://user:password@host:port/database` (MySQL 8 or MariaDB; tested on MariaDB 10.11). One of url or pool. */
  url?: string
  /** A mysql2 pool you own, promise or callback flavour (idem never ends it). Only with threads: 0. */
  pool?: MysqlPoolLike
}

export interface SqliteStoreOptions extends SqlCommonOptions {
  kind: 'sqlite'
  /** Path of the database file, created when missing. One of path or database. */
  path?: string
  /** A better-sqlite3 Database you own (idem never closes it). Only with threads: 0. */
  database?: SqliteDatabaseLike
  /**
   * SQLite's `synchronous` in WAL mode. 'full' syncs every commit to disk:
   * a committed record survives a power loss. 'normal' survives a crash of the
   * process but may lose the last commits on a power loss; faster.
   * @default 'full'
   */
  synchronous?: 'full' | 'normal'
  /** How long a statement waits for another connection's write lock before it fails (and is retried). @default 5000 */
  busyTimeoutMs?: number
}

export type SqlStoreOptions = PostgresStoreOptions | MysqlStoreOptions | SqliteStoreOptions
export type SqlKind = SqlStoreOptions['kind']

/** Shared by every SQL store config after defaults and validation. */
export type SqlCommonConfig = Required<SqlCommonOptions>
export type SqlServerConfig = Required<SqlServerOptions>
export type PostgresStoreConfig = Filled<PostgresStoreOptions, 'kind' | 'url' | 'pool'>
export type MysqlStoreConfig = Filled<MysqlStoreOptions, 'kind' | 'url' | 'pool'>
export type SqliteStoreConfig = Filled<SqliteStoreOptions, 'kind' | 'path' | 'database'>
export type SqlStoreConfig = PostgresStoreConfig | MysqlStoreConfig | SqliteStoreConfig

const commonDefaults = {
  tablePrefix: 'idem_',
  tables: 1,
  createTables: true,
  retries: 3,
  retryBackoffMs: 50,
  maxResultBytes: 65_536,
  sweepIntervalMs: 10_000,
  sweepBatch: 1_000,
} as const satisfies SqlCommonConfig

const serverDefaults = {
  poolSize: 2,
  transactionPoolSize: 16,
  commandTimeoutMs: 5_000,
} as const satisfies Omit<SqlServerConfig, keyof SqlCommonConfig>

const sqliteDefaults = {
  synchronous: 'full',
  busyTimeoutMs: 5_000,
} as const satisfies Omit<SqliteStoreConfig, keyof SqlCommonConfig | 'kind' | 'path' | 'database'>

const sourcesOf = { postgres: ['url', 'pool'], mysql: ['url', 'pool'], sqlite: ['path', 'database'] } as const satisfies Record<SqlKind, readonly string[]>
const urlPattern: Record<'postgres' | 'mysql', RegExp> = { postgres: /^postgres(ql)?:\/\//, mysql: /^(mysql|mariadb):\/\// }

export const TABLE_PREFIX_PATTERN = /^[a-z_][a-z0-9_]{0,39}$/
export const MAX_TABLES = 1024

/** Validates `store` for a SQL kind, pushing one line per bad field. */
export function resolveSqlStore(options: Record<string, unknown>, threads: number, problems: string[]): SqlStoreConfig {
  const o = new OptionReader(options, problems, 'store')
  const kind = o.value('kind') as SqlKind
  const owner = `the ${kind} store`
  const sources = sourcesOf[kind]
  const own = kind === 'sqlite' ? sqliteDefaults : serverDefaults
  o.onlyKnown(['kind', ...sources, ...Object.keys(commonDefaults), ...Object.keys(own)], owner)
  o.exactlyOne(sources, owner)
  const shared: SqlCommonConfig = {
    tablePrefix: o.string('tablePrefix', commonDefaults.tablePrefix, 'lowercase letters, digits and _, starting with a letter or _, at most 40 characters', (prefix) =>
      TABLE_PREFIX_PATTERN.test(prefix),
    ),
    tables: o.integer('tables', commonDefaults.tables, 1, MAX_TABLES),
    createTables: o.boolean('createTables', commonDefaults.createTables),
    retries: o.integer('retries', commonDefaults.retries, 0, 100),
    retryBackoffMs: o.integer('retryBackoffMs', commonDefaults.retryBackoffMs, 0, 60_000),
    maxResultBytes: o.integer('maxResultBytes', commonDefaults.maxResultBytes, 0, 256 * 1024 * 1024),
    sweepIntervalMs: o.integer('sweepIntervalMs', commonDefaults.sweepIntervalMs, 0, 86_400_000),
    sweepBatch: o.integer('sweepBatch', commonDefaults.sweepBatch, 1, 100_000),
  }

  if (kind === 'sqlite') {
    if (o.has('path')) {
      const path = o.string('path', undefined, 'a non-empty file path')
      // ':memory:' is a valid SQLite name, but the wrong store: nothing would survive the connection.
      if (path === ':memory:' || path.startsWith('file::memory:')) {
        o.mustBe('path', "a file, as an in-memory SQLite database is private to one connection and not durable (use store: { kind: 'memory' } instead)")
      }
    }
    if (o.has('database')) {
      const db = o.value('database') as { prepare?: unknown; exec?: unknown }
      if (typeof db?.prepare !== 'function' || typeof db?.exec !== 'function') o.mustBe('database', 'a better-sqlite3 Database')
      else if (threads > 0) o.mustBe('database', 'left out with threads > 0, as a database object cannot cross into worker threads (give store.path: each thread opens its own connection)')
    }
    return {
      kind,
      ...(typeof o.value('path') === 'string' ? { path: o.value('path') as string } : {}),
      ...(o.has('database') ? { database: o.value('database') as SqliteDatabaseLike } : {}),
      ...shared,
      synchronous: o.oneOf('synchronous', ['full', 'normal'], sqliteDefaults.synchronous),
      busyTimeoutMs: o.integer('busyTimeoutMs', sqliteDefaults.busyTimeoutMs, 0, 600_000),
    }
  }

  if (o.has('url')) o.string('url', undefined, `a ${kind === 'postgres' ? 'postgres:// or postgresql://' : 'mysql:// or mariadb://'} URL`, (url) => urlPattern[kind].test(url))
  if (o.has('pool')) {
    const pool = o.value('pool') as { query?: unknown; getConnection?: unknown; connect?: unknown }
    const shaped = typeof pool?.query === 'function' && typeof (kind === 'postgres' ? pool.connect : pool.getConnection) === 'function'
    if (!shaped) o.mustBe('pool', kind === 'postgres' ? 'a pg Pool' : 'a mysql2 pool')
    else if (threads > 0) o.mustBe('pool', 'left out with threads > 0, as a pool cannot cross into worker threads (give store.url: each thread opens its own pool)')
  }
  const server: SqlServerConfig = {
    ...shared,
    poolSize: o.integer('poolSize', serverDefaults.poolSize, 1, 1_000),
    transactionPoolSize: o.integer('transactionPoolSize', serverDefaults.transactionPoolSize, 1, 1_000),
    commandTimeoutMs: o.integer('commandTimeoutMs', serverDefaults.commandTimeoutMs, 10, 600_000),
  }
  const url = typeof o.value('url') === 'string' ? { url: o.value('url') as string } : {}
  if (kind === 'postgres') return { kind, ...url, ...(o.has('pool') ? { pool: o.value('pool') as PgPoolLike } : {}), ...server }
  return { kind, ...url, ...(o.has('pool') ? { pool: o.value('pool') as MysqlPoolLike } : {}), ...server }
}

/** The store kinds this folder implements. */
export const SQL_KINDS = Object.keys(sourcesOf) as SqlKind[]

export function isSqlKind(kind: unknown): kind is SqlKind {
  return SQL_KINDS.includes(kind as SqlKind)
}
