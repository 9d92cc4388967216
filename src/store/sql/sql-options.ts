/**
 * `store: { kind: 'postgres' | 'mysql' | 'sqlite', … }` as a user writes it,
 * the filled config the stores run with, and the one validation of both.
 * Drivers are optional peer dependencies, so the types of pools and databases
 * a user passes in are structural here (see sql-drivers.ts), never imports.
 */
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
   * Create the tables and indexes on first use when they are missing. With
   * false, the store refuses to start until `idem migrate` has created them
   * (for deployments where the application's database user cannot run DDL).
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
export interface SqlCommonConfig {
  tablePrefix: string
  tables: number
  createTables: boolean
  retries: number
  retryBackoffMs: number
  maxResultBytes: number
  sweepIntervalMs: number
  sweepBatch: number
}

export interface SqlServerConfig extends SqlCommonConfig {
  poolSize: number
  transactionPoolSize: number
  commandTimeoutMs: number
}

export interface PostgresStoreConfig extends SqlServerConfig {
  kind: 'postgres'
  url?: string
  pool?: PgPoolLike
}

export interface MysqlStoreConfig extends SqlServerConfig {
  kind: 'mysql'
  url?: string
  pool?: MysqlPoolLike
}

export interface SqliteStoreConfig extends SqlCommonConfig {
  kind: 'sqlite'
  path?: string
  database?: SqliteDatabaseLike
  synchronous: 'full' | 'normal'
  busyTimeoutMs: number
}

export type SqlStoreConfig = PostgresStoreConfig | MysqlStoreConfig | SqliteStoreConfig

export const sqlDefaults = {
  tablePrefix: 'idem_',
  tables: 1,
  createTables: true,
  retries: 3,
  retryBackoffMs: 50,
  maxResultBytes: 65_536,
  sweepIntervalMs: 10_000,
  sweepBatch: 1_000,
  poolSize: 2,
  transactionPoolSize: 16,
  commandTimeoutMs: 5_000,
  synchronous: 'full',
  busyTimeoutMs: 5_000,
} as const

const common = ['kind', 'tablePrefix', 'tables', 'createTables', 'retries', 'retryBackoffMs', 'maxResultBytes', 'sweepIntervalMs', 'sweepBatch']
const knownFields: Record<SqlKind, string[]> = {
  postgres: [...common, 'url', 'pool', 'poolSize', 'transactionPoolSize', 'commandTimeoutMs'],
  mysql: [...common, 'url', 'pool', 'poolSize', 'transactionPoolSize', 'commandTimeoutMs'],
  sqlite: [...common, 'path', 'database', 'synchronous', 'busyTimeoutMs'],
}
const urlPattern: Record<'postgres' | 'mysql', RegExp> = { postgres: /^postgres(ql)?:\/\//, mysql: /^(mysql|mariadb):\/\// }

export const TABLE_PREFIX_PATTERN = /^[a-z_][a-z0-9_]{0,39}$/
export const MAX_TABLES = 1024

/** Validates `store` for a SQL kind, pushing one line per bad field (the pattern of config.ts). */
export function resolveSqlStore(o: Record<string, unknown>, threads: number, problems: string[]): SqlStoreConfig {
  const kind = o.kind as SqlKind
  const known = knownFields[kind]
  for (const field of Object.keys(o)) if (!known.includes(field)) problems.push(`store.${field}: unknown option for the ${kind} store (known: ${known.join(', ')})`)
  const integer = (field: string, fallback: number, min: number, max: number): number => {
    const value = o[field]
    if (value === undefined) return fallback
    if (typeof value !== 'number' || !Number.isInteger(value) || value < min || value > max) {
      problems.push(`store.${field}: must be an integer from ${min} to ${max}, got ${show(value)}`)
      return fallback
    }
    return value
  }
  let tablePrefix: string = sqlDefaults.tablePrefix
  if (o.tablePrefix !== undefined) {
    if (typeof o.tablePrefix !== 'string' || !TABLE_PREFIX_PATTERN.test(o.tablePrefix)) {
      problems.push(`store.tablePrefix: must be lowercase letters, digits and _, starting with a letter or _, at most 40 characters; got ${show(o.tablePrefix)}`)
    } else tablePrefix = o.tablePrefix
  }
  let createTables: boolean = sqlDefaults.createTables
  if (o.createTables !== undefined) {
    if (typeof o.createTables !== 'boolean') problems.push(`store.createTables: must be a boolean, got ${show(o.createTables)}`)
    else createTables = o.createTables
  }
  const shared: SqlCommonConfig = {
    tablePrefix,
    tables: integer('tables', sqlDefaults.tables, 1, MAX_TABLES),
    createTables,
    retries: integer('retries', sqlDefaults.retries, 0, 100),
    retryBackoffMs: integer('retryBackoffMs', sqlDefaults.retryBackoffMs, 0, 60_000),
    maxResultBytes: integer('maxResultBytes', sqlDefaults.maxResultBytes, 0, 256 * 1024 * 1024),
    sweepIntervalMs: integer('sweepIntervalMs', sqlDefaults.sweepIntervalMs, 0, 86_400_000),
    sweepBatch: integer('sweepBatch', sqlDefaults.sweepBatch, 1, 100_000),
  }

  if (kind === 'sqlite') {
    const sources = ['path', 'database'].filter((f) => o[f] !== undefined)
    if (sources.length !== 1) problems.push(`store: give exactly one of path or database for the sqlite store, got ${sources.length === 0 ? 'none' : sources.join(' and ')}`)
    if (o.path !== undefined) {
      const path = o.path
      if (typeof path !== 'string' || path.length === 0) problems.push(`store.path: must be a non-empty file path, got ${show(path)}`)
      else if (path === ':memory:' || path.startsWith('file::memory:')) problems.push("store.path: an in-memory SQLite database is private to one connection and not durable; use store: { kind: 'memory' } instead")
    }
    if (o.database !== undefined) {
      const db = o.database as { prepare?: unknown; exec?: unknown }
      if (typeof db?.prepare !== 'function' || typeof db?.exec !== 'function') problems.push('store.database: must be a better-sqlite3 Database')
      else if (threads > 0) problems.push('store.database: a database object cannot cross into worker threads; with threads > 0 give store.path (each thread opens its own connection)')
    }
    let synchronous: 'full' | 'normal' = sqlDefaults.synchronous
    if (o.synchronous !== undefined) {
      if (o.synchronous === 'full' || o.synchronous === 'normal') synchronous = o.synchronous
      else problems.push(`store.synchronous: must be 'full' or 'normal', got ${show(o.synchronous)}`)
    }
    return {
      kind,
      ...(typeof o.path === 'string' ? { path: o.path } : {}),
      ...(o.database !== undefined ? { database: o.database as SqliteDatabaseLike } : {}),
      ...shared,
      synchronous,
      busyTimeoutMs: integer('busyTimeoutMs', sqlDefaults.busyTimeoutMs, 0, 600_000),
    }
  }

  const sources = ['url', 'pool'].filter((f) => o[f] !== undefined)
  if (sources.length !== 1) problems.push(`store: give exactly one of url or pool for the ${kind} store, got ${sources.length === 0 ? 'none' : sources.join(' and ')}`)
  if (o.url !== undefined && (typeof o.url !== 'string' || !urlPattern[kind].test(o.url))) {
    problems.push(`store.url: must be a ${kind === 'postgres' ? 'postgres:// or postgresql://' : 'mysql:// or mariadb://'} URL, got ${show(o.url)}`)
  }
  if (o.pool !== undefined) {
    const pool = o.pool as { query?: unknown; getConnection?: unknown; connect?: unknown }
    const shaped = typeof pool?.query === 'function' && typeof (kind === 'postgres' ? pool.connect : pool.getConnection) === 'function'
    if (!shaped) problems.push(`store.pool: must be a ${kind === 'postgres' ? 'pg Pool' : 'mysql2 pool'}`)
    else if (threads > 0) problems.push('store.pool: a pool cannot cross into worker threads; with threads > 0 give store.url (each thread opens its own pool)')
  }
  const server: SqlServerConfig = {
    ...shared,
    poolSize: integer('poolSize', sqlDefaults.poolSize, 1, 1_000),
    transactionPoolSize: integer('transactionPoolSize', sqlDefaults.transactionPoolSize, 1, 1_000),
    commandTimeoutMs: integer('commandTimeoutMs', sqlDefaults.commandTimeoutMs, 10, 600_000),
  }
  const url = typeof o.url === 'string' ? { url: o.url } : {}
  if (kind === 'postgres') return { kind, ...url, ...(o.pool !== undefined ? { pool: o.pool as PgPoolLike } : {}), ...server }
  return { kind, ...url, ...(o.pool !== undefined ? { pool: o.pool as MysqlPoolLike } : {}), ...server }
}

/** The store kinds this folder implements. */
export function isSqlKind(kind: unknown): kind is SqlKind {
  return kind === 'postgres' || kind === 'mysql' || kind === 'sqlite'
}

function show(value: unknown): string {
  if (typeof value === 'string') return JSON.stringify(value)
  if (typeof value === 'number' || typeof value === 'boolean' || value == null) return String(value)
  return Array.isArray(value) ? 'an array' : `a ${typeof value}`
}
