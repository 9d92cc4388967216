/** The SQL stores' options: defaults, and one test per validation message (the pattern of config.test.ts). */
import { describe, expect, it } from 'vitest'
import { resolveConfig } from '../../dist/src/config.js'
import { ConfigError } from '../../dist/src/errors.js'
import { problemsOf } from '../support/config-problems.js'
import { resolveSqlStoreOptions } from '../../dist/src/store/sql/sql-admin.js'
import { sqlTransactions } from '../../dist/src/store/sql/sql-transactions.js'


const fakePgPool = { query() {}, connect() {}, end() {} }
const fakeMysqlPool = { query() {}, getConnection() {}, end() {} }
const fakeDatabase = { prepare() {}, exec() {}, pragma() {}, close() {} }
// Instances of classes, as real pools and databases are: a problem line names their class.
class FakePool {
  query() {}
  connect() {}
}
class FakeDatabase {
  prepare() {}
  exec() {}
}

describe('sql store options', () => {
  it('fills the defaults for each kind', () => {
    const common = { tablePrefix: 'idem_', tables: 1, createTables: true, retries: 3, retryBackoffMs: 50, maxResultBytes: 65_536, sweepIntervalMs: 10_000, sweepBatch: 1_000 }
    const server = { ...common, poolSize: 2, transactionPoolSize: 16, commandTimeoutMs: 5_000 }
    expect(resolveConfig({ store: { kind: 'postgres', url: 'postgres://h/db' } }).store).toEqual({ kind: 'postgres', url: 'postgres://h/db', ...server })
    expect(resolveConfig({ store: { kind: 'mysql', url: 'mysql://h/db' } }).store).toEqual({ kind: 'mysql', url: 'mysql://h/db', ...server })
    expect(resolveConfig({ store: { kind: 'sqlite', path: 'x.db' } }).store).toEqual({ kind: 'sqlite', path: 'x.db', ...common, synchronous: 'full', busyTimeoutMs: 5_000 })
    expect(resolveSqlStoreOptions({ kind: 'sqlite', path: 'x.db', tables: 8 })).toMatchObject({ tables: 8 })
  })

  it('accepts a pool or a database passed in with threads: 0, and url/path configs with threads > 0', () => {
    expect(resolveConfig({ store: { kind: 'postgres', pool: fakePgPool } }).store).toMatchObject({ pool: fakePgPool })
    expect(resolveConfig({ store: { kind: 'mysql', pool: fakeMysqlPool } }).store).toMatchObject({ pool: fakeMysqlPool })
    expect(resolveConfig({ store: { kind: 'sqlite', database: fakeDatabase } }).store).toMatchObject({ database: fakeDatabase })
    expect(resolveConfig({ shards: 4, threads: 2, store: { kind: 'mysql', url: 'mariadb://h/db' } }).store).toMatchObject({ url: 'mariadb://h/db' })
  })

  // One case per message: each options object has one bad field, and the test asserts the whole line.
  const cases: [string, unknown, string][] = [
    ['postgres without a server', { store: { kind: 'postgres' } }, 'store: must be given exactly one of url or pool for the postgres store, got none'],
    ['mysql with url and pool', { store: { kind: 'mysql', url: 'mysql://h/db', pool: fakeMysqlPool } }, 'store: must be given exactly one of url or pool for the mysql store, got url and pool'],
    ['sqlite without a file', { store: { kind: 'sqlite' } }, 'store: must be given exactly one of path or database for the sqlite store, got none'],
    ['postgres url of another scheme', { store: { kind: 'postgres', url: 'mysql://h/db' } }, 'store.url: must be a postgres:// or postgresql:// URL, got "mysql://h/db"'],
    ['mysql url not a URL', { store: { kind: 'mysql', url: 'localhost:3306' } }, 'store.url: must be a mysql:// or mariadb:// URL, got "localhost:3306"'],
    ['postgres pool not a pool', { store: { kind: 'postgres', pool: {} } }, 'store.pool: must be a pg Pool, got {}'],
    ['mysql pool not a pool', { store: { kind: 'mysql', pool: { query() {} } } }, 'store.pool: must be a mysql2 pool, got { query: function query }'],
    [
      'pool with threads',
      { shards: 2, threads: 1, store: { kind: 'postgres', pool: new FakePool() } },
      'store.pool: must be left out with threads > 0, as a pool cannot cross into worker threads (give store.url: each thread opens its own pool), got an instance of FakePool',
    ],
    [
      'database with threads',
      { shards: 2, threads: 1, store: { kind: 'sqlite', database: new FakeDatabase() } },
      'store.database: must be left out with threads > 0, as a database object cannot cross into worker threads (give store.path: each thread opens its own connection), got an instance of FakeDatabase',
    ],
    ['database not a database', { store: { kind: 'sqlite', database: {} } }, 'store.database: must be a better-sqlite3 Database, got {}'],
    [
      'sqlite in memory',
      { store: { kind: 'sqlite', path: ':memory:' } },
      `store.path: must be a file, as an in-memory SQLite database is private to one connection and not durable (use store: { kind: 'memory' } instead), got ":memory:"`,
    ],
    ['sqlite empty path', { store: { kind: 'sqlite', path: '' } }, 'store.path: must be a non-empty file path, got ""'],
    ['table prefix with capitals', { store: { kind: 'sqlite', path: 'x', tablePrefix: 'Idem' } }, 'store.tablePrefix: must be lowercase letters, digits and _, starting with a letter or _, at most 40 characters, got "Idem"'],
    ['tables zero', { store: { kind: 'postgres', url: 'postgres://h', tables: 0 } }, 'store.tables: must be an integer from 1 to 1024, got 0'],
    ['createTables not boolean', { store: { kind: 'postgres', url: 'postgres://h', createTables: 'yes' } }, 'store.createTables: must be a boolean, got "yes"'],
    ['retries negative', { store: { kind: 'mysql', url: 'mysql://h', retries: -1 } }, 'store.retries: must be an integer from 0 to 100, got -1'],
    ['retryBackoffMs too large', { store: { kind: 'mysql', url: 'mysql://h', retryBackoffMs: 60_001 } }, 'store.retryBackoffMs: must be an integer from 0 to 60000, got 60001'],
    ['maxResultBytes negative', { store: { kind: 'sqlite', path: 'x', maxResultBytes: -1 } }, 'store.maxResultBytes: must be an integer from 0 to 268435456, got -1'],
    ['sweepIntervalMs a string', { store: { kind: 'sqlite', path: 'x', sweepIntervalMs: '10s' } }, 'store.sweepIntervalMs: must be an integer from 0 to 86400000, got "10s"'],
    ['sweepBatch zero', { store: { kind: 'mysql', url: 'mysql://h', sweepBatch: 0 } }, 'store.sweepBatch: must be an integer from 1 to 100000, got 0'],
    ['poolSize zero', { store: { kind: 'postgres', url: 'postgres://h', poolSize: 0 } }, 'store.poolSize: must be an integer from 1 to 1000, got 0'],
    ['transactionPoolSize too large', { store: { kind: 'postgres', url: 'postgres://h', transactionPoolSize: 1001 } }, 'store.transactionPoolSize: must be an integer from 1 to 1000, got 1001'],
    ['commandTimeoutMs too small', { store: { kind: 'postgres', url: 'postgres://h', commandTimeoutMs: 1 } }, 'store.commandTimeoutMs: must be an integer from 10 to 600000, got 1'],
    ['synchronous off', { store: { kind: 'sqlite', path: 'x', synchronous: 'off' } }, `store.synchronous: must be 'full' or 'normal', got "off"`],
    ['busyTimeoutMs negative', { store: { kind: 'sqlite', path: 'x', busyTimeoutMs: -1 } }, 'store.busyTimeoutMs: must be an integer from 0 to 600000, got -1'],
    [
      'a server option on sqlite',
      { store: { kind: 'sqlite', path: 'x', poolSize: 4 } },
      'store.poolSize: must be left out (not an option of the sqlite store; known: kind, path, database, tablePrefix, tables, createTables, retries, retryBackoffMs, maxResultBytes, sweepIntervalMs, sweepBatch, synchronous, busyTimeoutMs), got 4',
    ],
    [
      'a sqlite option on postgres',
      { store: { kind: 'postgres', url: 'postgres://h', path: 'x' } },
      'store.path: must be left out (not an option of the postgres store; known: kind, url, pool, tablePrefix, tables, createTables, retries, retryBackoffMs, maxResultBytes, sweepIntervalMs, sweepBatch, poolSize, transactionPoolSize, commandTimeoutMs), got "x"',
    ],
  ]
  for (const [name, options, message] of cases) {
    it(`refuses ${name}`, () => {
      expect(problemsOf(options)).toEqual([message])
    })
  }

  it('names every bad field in one error', () => {
    const problems = problemsOf({ store: { kind: 'postgres', url: 'x', tables: 0, retries: 'many' } })
    expect(problems.map((p) => p.split(':')[0]).sort()).toEqual(['store.retries', 'store.tables', 'store.url'])
  })

  it('resolveSqlStoreOptions (idem migrate) validates the same way', () => {
    expect(() => resolveSqlStoreOptions({ kind: 'sqlite' } as never)).toThrow(ConfigError)
    expect(() => resolveSqlStoreOptions({ kind: 'redis' } as never)).toThrow(expect.objectContaining({ problems: [`store.kind: must be 'postgres', 'mysql' or 'sqlite', got "redis"`] }))
  })

  it('sqlTransactions validates its own options with the store, in one ConfigError', () => {
    const problems = (options: unknown) => {
      try {
        sqlTransactions(options as never)
      } catch (error) {
        expect(error).toBeInstanceOf(ConfigError)
        return (error as ConfigError).problems
      }
      throw new Error('expected a ConfigError')
    }
    expect(problems({ store: { kind: 'memory' } })).toEqual([`store.kind: must be 'postgres', 'mysql' or 'sqlite', as sqlTransactions needs a SQL store, got "memory"`])
    expect(problems({ store: { kind: 'sqlite', path: 'x', tables: 0 }, ttlMs: 0, keepResults: 'yes', retries: 1 })).toEqual([
      'retries: must be left out (not an option of sqlTransactions; known: store, ttlMs, keepResults), got 1',
      'store.tables: must be an integer from 1 to 1024, got 0',
      'ttlMs: must be an integer from 1 to 4398046511104, got 0',
      'keepResults: must be a boolean, got "yes"',
    ])
  })
})
