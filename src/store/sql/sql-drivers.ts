/**
 * The three drivers, seen through the few calls idem makes: structural types
 * (so the public types never name a driver a user may not have installed) and
 * the loaders, which import a driver on first use. `pg`, `mysql2` and
 * `better-sqlite3` are optional peer dependencies: a Redis-only user installs none.
 */
import { ErrorCode, IdemError, errorText } from '../../errors.js'

export interface PgQueryConfig {
  text: string
  values?: unknown[]
  /** Client-side timeout of this one query (pg's query_timeout). */
  query_timeout?: number
}

export interface PgQueryResult {
  rows: Record<string, unknown>[]
  rowCount: number | null
}

/** A `pg.PoolClient`: one connection checked out of a pool. */
export interface PgClientLike {
  query(config: PgQueryConfig | string, values?: unknown[]): Promise<PgQueryResult>
  /** An error (or true) destroys the connection instead of returning it to the pool. */
  release(destroy?: Error | boolean): void
}

/** A `pg.Pool`. */
export interface PgPoolLike {
  query(config: PgQueryConfig | string, values?: unknown[]): Promise<PgQueryResult>
  connect(): Promise<PgClientLike>
  end(): Promise<void>
}

export interface MysqlQueryOptions {
  sql: string
  values?: unknown[]
  /** Client-side timeout of this one query, in ms. */
  timeout?: number
}

/** What a mysql2 promise query resolves to: [rows or a result header (or one per statement), fields]. */
export type MysqlQueryReply = [unknown, unknown]

/** A mysql2 promise connection checked out of a pool. */
export interface MysqlConnectionLike {
  query(options: MysqlQueryOptions | string, values?: unknown[]): Promise<MysqlQueryReply>
  release(): void
  destroy(): void
}

/** A mysql2 pool: the promise flavour (`mysql2/promise`), or the callback one (its `.promise()` is used). */
export interface MysqlPoolLike {
  query(options: MysqlQueryOptions | string, values?: unknown[]): unknown
  getConnection(...args: unknown[]): unknown
  end(...args: unknown[]): unknown
  /** Present on the callback pool: its promise wrapper. */
  promise?(): MysqlPoolLike
}

/** The promise pool idem calls. */
export interface MysqlPromisePool {
  query(options: MysqlQueryOptions | string, values?: unknown[]): Promise<MysqlQueryReply>
  getConnection(): Promise<MysqlConnectionLike>
  end(): Promise<void>
  on?(event: string, listener: (...args: unknown[]) => void): unknown
}

export interface SqliteRunResult {
  changes: number
}

export interface SqliteStatementLike {
  run(...params: unknown[]): SqliteRunResult
  get(...params: unknown[]): unknown
  all(...params: unknown[]): unknown[]
}

/** A better-sqlite3 `Database`. */
export interface SqliteDatabaseLike {
  prepare(sql: string): SqliteStatementLike
  exec(sql: string): unknown
  pragma(source: string, options?: { simple?: boolean }): unknown
  close(): unknown
  readonly open: boolean
  readonly inTransaction: boolean
}

export interface PgModule {
  Pool: new (config: Record<string, unknown>) => PgPoolLike & { on(event: string, listener: (...args: unknown[]) => void): unknown }
}

export interface MysqlModule {
  createPool(config: Record<string, unknown>): MysqlPromisePool
}

export type SqliteConstructor = new (path: string, options?: Record<string, unknown>) => SqliteDatabaseLike

const loaded = new Map<string, Promise<unknown>>()

/**
 * Imports a driver once per thread. A missing package is a configuration
 * problem (INVALID_CONFIG, saying what to install), never retried.
 */
async function load<T>(name: string, pick: (module: Record<string, unknown>) => T, kind: string): Promise<T> {
  let module = loaded.get(name)
  if (module === undefined) {
    // A variable specifier: TypeScript does not resolve it, so no driver's types are needed to build.
    const specifier = name
    module = import(specifier)
    loaded.set(name, module)
    module.catch(() => loaded.delete(name))
  }
  try {
    return pick((await module) as Record<string, unknown>)
  } catch (error) {
    throw new IdemError(ErrorCode.INVALID_CONFIG, `the ${kind} store needs the ${name.split('/')[0]} package, which could not be loaded: npm install ${name.split('/')[0]} (${errorText(error)})`, { cause: error })
  }
}

export function loadPg(): Promise<PgModule> {
  return load('pg', (m) => ((m.default ?? m) as PgModule), 'postgres')
}

export function loadMysql(): Promise<MysqlModule> {
  return load('mysql2/promise', (m) => ((m.default ?? m) as MysqlModule), 'mysql')
}

export function loadSqlite(): Promise<SqliteConstructor> {
  return load('better-sqlite3', (m) => (m.default ?? m) as SqliteConstructor, 'sqlite')
}

/** The promise pool behind a user's mysql2 pool of either flavour. */
export function mysqlPromisePool(pool: MysqlPoolLike): MysqlPromisePool {
  return (typeof pool.promise === 'function' ? pool.promise() : pool) as MysqlPromisePool
}
