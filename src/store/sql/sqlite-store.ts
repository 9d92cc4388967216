/**
 * The SQLite store (driver: better-sqlite3, major 12 on Node 20): embedded and
 * durable, the store for one process (or a few on one machine) with no server
 * at all. better-sqlite3 runs SQL synchronously in this thread, so there is no
 * round trip to save: a batch is one local transaction (BEGIN IMMEDIATE) over
 * prepared single-row statements, which is cheaper than building one
 * statement per batch size and just as atomic.
 *
 * Time is the injected clock (Date.now() unless a test injects one), in ms:
 * every connection to a database file runs on the same machine, so one clock
 * serves all of them. WAL mode; `synchronous` chooses what a commit survives.
 *
 * Connections are shared per file within a thread (the stores of every shard
 * and the transaction helper): all of their statements are synchronous, so
 * none can interleave with another's transaction. Each worker thread opens its own.
 */
import { resolve } from 'node:path'
import type { Clock } from '../../clock.js'
import { ErrorCode, IdemError, errorText } from '../../errors.js'
import { ClaimCode } from '../store.js'
import { leaseLost, type ClaimAnswer, type ColumnTypes, type RowRecord, type SchemaSnapshot, type SqlDialect, type TransactionEnd } from './sql-dialect.js'
import { LazyConnection } from './lazy-connection.js'
import { loadSqlite, type SqliteDatabaseLike } from './sql-drivers.js'
import type { SqliteStoreConfig } from './sql-options.js'
import { KEY_COLUMN_BYTES, RowState, SCHEMA_VERSION } from './sql-records.js'
import { SqlStore } from './sql-store.js'

const q = (name: string): string => `"${name}"`
const { IN_PROGRESS, DONE, UNKNOWN } = RowState

const expectedColumns: ReadonlyMap<string, string> = new Map([
  ['idem_key', 'BLOB'],
  ['state', 'INTEGER'],
  ['token', 'TEXT'],
  ['fingerprint', 'TEXT'],
  ['result', 'TEXT'],
  ['expires_at', 'INTEGER'],
])

/**
 * What follows `CREATE TABLE <name>` for a records table: kept apart from the
 * name and the index because the upgrade builds the table under another name first.
 * WITHOUT ROWID: the primary key's b-tree holds the row, one lookup per key instead of two.
 */
const recordsTableBody = `(
  idem_key    BLOB    NOT NULL PRIMARY KEY CHECK (length(idem_key) BETWEEN 1 AND ${KEY_COLUMN_BYTES}),
  state       INTEGER NOT NULL CHECK (state IN (${IN_PROGRESS}, ${DONE}, ${UNKNOWN})),
  token       TEXT    NOT NULL,
  fingerprint TEXT,
  result      TEXT,
  expires_at  INTEGER NOT NULL
) WITHOUT ROWID`

/** The sweep's index. */
function expiryIndexDdl(table: string): string {
  return `CREATE INDEX IF NOT EXISTS ${q(`${table}_expires_at`)} ON ${q(table)} (expires_at)`
}

/** The prepared statements of one records table; each runs on one row. */
function prepareFor(db: SqliteDatabaseLike, table: string) {
  const t = q(table)
  return {
    /** key, token, fingerprint, lease end, now: inserts, takes over an expired row, or re-leases our own; changes = 1 when claimed. */
    claim: db.prepare(`INSERT INTO ${t} (idem_key, state, token, fingerprint, result, expires_at) VALUES (?, ${IN_PROGRESS}, ?, ?, NULL, ?)
      ON CONFLICT (idem_key) DO UPDATE SET state = ${IN_PROGRESS}, token = excluded.token, fingerprint = excluded.fingerprint, result = NULL, expires_at = excluded.expires_at
      WHERE expires_at <= ? OR (state = ${IN_PROGRESS} AND token = excluded.token)`),
    read: db.prepare(`SELECT state, token, fingerprint, result, expires_at FROM ${t} WHERE idem_key = ?`),
    /** result, TTL end, key, token, now. */
    commit: db.prepare(`UPDATE ${t} SET state = ${DONE}, result = ?, expires_at = ? WHERE idem_key = ? AND token = ? AND state = ${IN_PROGRESS} AND expires_at > ?`),
    /** key, state, token, now: in that state under this token already (a retried commit or mark). */
    heldAs: db.prepare(`SELECT 1 FROM ${t} WHERE idem_key = ? AND state = ? AND token = ? AND expires_at > ?`),
    release: db.prepare(`DELETE FROM ${t} WHERE idem_key = ? AND token = ? AND state = ${IN_PROGRESS} AND expires_at > ?`),
    live: db.prepare(`SELECT 1 FROM ${t} WHERE idem_key = ? AND expires_at > ?`),
    renew: db.prepare(`UPDATE ${t} SET expires_at = ? WHERE idem_key = ? AND token = ? AND state = ${IN_PROGRESS} AND expires_at > ?`),
    /**
     * TTL end, key, token. Fenced by the row, not the lease: an IN_PROGRESS row
     * still naming this token is marked even when its lease has lapsed, since
     * nobody took it over (a claim writes its own token).
     */
    markUnknown: db.prepare(`UPDATE ${t} SET state = ${UNKNOWN}, result = NULL, expires_at = ? WHERE idem_key = ? AND token = ? AND state = ${IN_PROGRESS}`),
    /** result, TTL end, key, now, token or null for any: a live UNKNOWN row (marked under that token) → DONE. */
    resolveDone: db.prepare(`UPDATE ${t} SET state = ${DONE}, result = ?, expires_at = ? WHERE idem_key = ? AND state = ${UNKNOWN} AND expires_at > ? AND token = coalesce(?, token)`),
    /** key, now, token or null for any: a live UNKNOWN row (marked under that token) → absent. */
    resolveNotDone: db.prepare(`DELETE FROM ${t} WHERE idem_key = ? AND state = ${UNKNOWN} AND expires_at > ? AND token = coalesce(?, token)`),
    /** key, now: the live row, for inspect. */
    liveRow: db.prepare(`SELECT state, token, fingerprint, result, expires_at FROM ${t} WHERE idem_key = ? AND expires_at > ?`),
    /** key: every row of the key, expired ones too. */
    forget: db.prepare(`DELETE FROM ${t} WHERE idem_key = ?`),
    /** from, to, limit: at most limit rows whose key is in [from, to). */
    purge: db.prepare(`DELETE FROM ${t} WHERE idem_key IN (SELECT idem_key FROM ${t} WHERE idem_key >= ? AND idem_key < ? LIMIT ?)`),
    /** now, limit: at most limit expired rows, oldest first. */
    sweep: db.prepare(`DELETE FROM ${t} WHERE idem_key IN (SELECT idem_key FROM ${t} WHERE expires_at < ? ORDER BY expires_at LIMIT ?)`),
  }
}

type Prepared = ReturnType<typeof prepareFor>

interface SharedDatabase {
  db: SqliteDatabaseLike
  users: number
  prepared: Map<string, Prepared>
}

/** Connections opened from a path, per file, in this thread. */
const openFiles = new Map<string, SharedDatabase>()
/** Statements prepared on databases users passed in. */
const preparedOnOwned = new WeakMap<SqliteDatabaseLike, Map<string, Prepared>>()

/** An open database and its prepared statements; `shared` when this thread opened it from a path. */
interface OpenDatabase {
  db: SqliteDatabaseLike
  shared: SharedDatabase | undefined
  prepared: Map<string, Prepared>
}

export class SqliteDialect implements SqlDialect {
  readonly kind = 'sqlite' as const
  readonly expectedColumns = expectedColumns
  private readonly connection: LazyConnection<OpenDatabase>

  constructor(
    config: SqliteStoreConfig,
    private readonly clock: Clock,
  ) {
    this.connection = new LazyConnection(async () => {
      if (config.database !== undefined) {
        const db = config.database
        let prepared = preparedOnOwned.get(db)
        if (prepared === undefined) preparedOnOwned.set(db, (prepared = new Map()))
        return { db, shared: undefined, prepared }
      }
      const Database = await loadSqlite()
      const file = resolve(config.path!)
      let shared = openFiles.get(file)
      if (shared === undefined) {
        let db: SqliteDatabaseLike
        try {
          db = new Database(file, { timeout: config.busyTimeoutMs })
          db.pragma('journal_mode = WAL')
          db.pragma(`synchronous = ${config.synchronous.toUpperCase()}`)
        } catch (error) {
          throw new IdemError(ErrorCode.STORE_FAILED, `cannot open the sqlite database ${JSON.stringify(file)}: ${errorText(error)}`, { cause: error })
        }
        openFiles.set(file, (shared = { db, users: 0, prepared: new Map() }))
      }
      shared.users++
      return { db: shared.db, shared, prepared: shared.prepared }
    })
  }

  connect(): Promise<void> {
    return this.connection.connect()
  }

  private get db(): SqliteDatabaseLike {
    return this.connection.value.db
  }

  /** BEGIN IMMEDIATE takes the database's write lock: other connections (threads, processes) wait for the check to finish. */
  async withSchemaLock<T>(fn: () => Promise<T>): Promise<T> {
    const db = this.db
    db.exec('BEGIN IMMEDIATE')
    try {
      const value = await fn()
      db.exec('COMMIT')
      return value
    } catch (error) {
      if (db.inTransaction) db.exec('ROLLBACK')
      throw error
    }
  }

  async readSchema(tableNames: readonly string[]): Promise<SchemaSnapshot> {
    const db = this.db
    const tables = new Map<string, ColumnTypes>()
    for (const name of tableNames) {
      const columns = db.prepare(`SELECT name, type FROM pragma_table_info(?)`).all(name) as { name: string; type: string }[]
      if (columns.length > 0) tables.set(name, new Map(columns.map((c) => [c.name, c.type.toUpperCase()])))
    }
    const metaTable = tableNames[tableNames.length - 1]
    let meta: Map<string, string> | undefined
    if (tables.has(metaTable)) {
      const rows = db.prepare(`SELECT name, value FROM ${q(metaTable)}`).all() as { name: string; value: string }[]
      meta = new Map(rows.map((r) => [r.name, r.value]))
    }
    return { meta, tables }
  }

  async createSchema(recordTables: readonly string[], metaTable: string, meta: ReadonlyMap<string, string>): Promise<void> {
    const db = this.db
    // Inside withSchemaLock's transaction: SQLite's DDL is transactional.
    db.exec(`CREATE TABLE IF NOT EXISTS ${q(metaTable)} (name TEXT NOT NULL PRIMARY KEY, value TEXT NOT NULL) WITHOUT ROWID`)
    for (const table of recordTables) db.exec(`CREATE TABLE IF NOT EXISTS ${q(table)} ${recordsTableBody};\n${expiryIndexDdl(table)}`)
    const insert = db.prepare(`INSERT OR IGNORE INTO ${q(metaTable)} (name, value) VALUES (?, ?)`)
    for (const [name, value] of meta) insert.run(name, value)
  }

  /**
   * Version 1 checked `state IN (1, 3)`, and SQLite cannot alter a check: each
   * table is rebuilt (a new table, the rows copied, the old one dropped with
   * its index, the new one renamed, the index made again). Inside
   * withSchemaLock's transaction, so another connection sees the old tables
   * or the new ones, never a half-built one.
   */
  async upgradeSchema(recordTables: readonly string[], metaTable: string): Promise<void> {
    const { db, prepared } = this.connection.value
    const columns = [...expectedColumns.keys()].join(', ')
    for (const table of recordTables) {
      const rebuilt = `${table}_v${SCHEMA_VERSION}`
      prepared.delete(table)
      // Not IF NOT EXISTS: a table of that name that is not ours stops the upgrade instead of receiving the rows.
      db.exec(`CREATE TABLE ${q(rebuilt)} ${recordsTableBody}`)
      db.exec(`INSERT INTO ${q(rebuilt)} (${columns}) SELECT ${columns} FROM ${q(table)}`)
      db.exec(`DROP TABLE ${q(table)}`)
      db.exec(`ALTER TABLE ${q(rebuilt)} RENAME TO ${q(table)}`)
      db.exec(expiryIndexDdl(table))
    }
    db.prepare(`UPDATE ${q(metaTable)} SET value = ? WHERE name = 'schema_version'`).run(String(SCHEMA_VERSION))
  }

  async dropTables(tableNames: readonly string[]): Promise<void> {
    for (const name of tableNames) {
      this.connection.value.prepared.delete(name)
      this.db.exec(`DROP TABLE IF EXISTS ${q(name)}`)
    }
  }

  async claim(table: string, keys: Buffer[], fingerprints: (string | null)[], token: string, leaseMs: number): Promise<ClaimAnswer> {
    const s = this.statementsOf(table)
    const n = keys.length
    const answer: ClaimAnswer = { codes: new Uint8Array(n), fingerprints: new Array(n).fill(null), results: new Array(n).fill(null) }
    const { codes } = answer
    this.inTransaction(() => {
      const now = this.clock.now()
      for (let j = 0; j < n; j++) {
        if (s.claim.run(keys[j], token, fingerprints[j], now + leaseMs, now).changes === 1) continue // CLAIMED (0)
        // Not taken: DONE, UNKNOWN (never taken over), or another owner's lease.
        const row = s.read.get(keys[j]) as { state: number; token: string; fingerprint: string | null; result: string | null; expires_at: number }
        codes[j] = row.state === DONE && row.expires_at > now ? ClaimCode.DONE : row.state === UNKNOWN && row.expires_at > now ? ClaimCode.UNKNOWN : ClaimCode.IN_PROGRESS
        answer.fingerprints[j] = row.fingerprint
        answer.results[j] = row.result
        // The episode a reconcile answer names (resolve's token).
        if (codes[j] === ClaimCode.UNKNOWN) (answer.tokens ??= new Array(n).fill(null))[j] = row.token
      }
    })
    return answer
  }

  async commit(table: string, keys: Buffer[], results: (string | null)[] | undefined, token: string, ttlMs: number): Promise<Uint8Array> {
    const s = this.statementsOf(table)
    const applied = new Uint8Array(keys.length)
    this.inTransaction(() => {
      const now = this.clock.now()
      for (let j = 0; j < keys.length; j++) {
        const done = s.commit.run(results?.[j] ?? null, now + ttlMs, keys[j], token, now).changes === 1
        applied[j] = done || s.heldAs.get(keys[j], DONE, token, now) !== undefined ? 1 : 0
      }
    })
    return applied
  }

  async release(table: string, keys: Buffer[], token: string): Promise<Uint8Array> {
    const s = this.statementsOf(table)
    const applied = new Uint8Array(keys.length)
    this.inTransaction(() => {
      const now = this.clock.now()
      for (let j = 0; j < keys.length; j++) {
        const deleted = s.release.run(keys[j], token, now).changes === 1
        applied[j] = deleted || s.live.get(keys[j], now) === undefined ? 1 : 0
      }
    })
    return applied
  }

  async renew(table: string, keys: Buffer[], token: string, leaseMs: number): Promise<Uint8Array> {
    const s = this.statementsOf(table)
    const applied = new Uint8Array(keys.length)
    this.inTransaction(() => {
      const now = this.clock.now()
      for (let j = 0; j < keys.length; j++) applied[j] = s.renew.run(now + leaseMs, keys[j], token, now).changes
    })
    return applied
  }

  async markUnknown(table: string, keys: Buffer[], token: string, ttlMs: number): Promise<Uint8Array> {
    const s = this.statementsOf(table)
    const applied = new Uint8Array(keys.length)
    this.inTransaction(() => {
      const now = this.clock.now()
      for (let j = 0; j < keys.length; j++) {
        const marked = s.markUnknown.run(now + ttlMs, keys[j], token).changes === 1
        applied[j] = marked || s.heldAs.get(keys[j], UNKNOWN, token, now) !== undefined ? 1 : 0
      }
    })
    return applied
  }

  async resolve(table: string, keys: Buffer[], done: boolean[], results: (string | null)[], ttlMs: number, token: string | undefined): Promise<Uint8Array> {
    const s = this.statementsOf(table)
    const applied = new Uint8Array(keys.length)
    const markedUnder = token ?? null
    this.inTransaction(() => {
      const now = this.clock.now()
      for (let j = 0; j < keys.length; j++) {
        applied[j] = done[j] ? s.resolveDone.run(results[j], now + ttlMs, keys[j], now, markedUnder).changes : s.resolveNotDone.run(keys[j], now, markedUnder).changes
      }
    })
    return applied
  }

  async inspect(table: string, keys: Buffer[]): Promise<(RowRecord | undefined)[]> {
    const s = this.statementsOf(table)
    const now = this.clock.now()
    return keys.map((key) => {
      const row = s.liveRow.get(key, now) as { state: number; token: string; fingerprint: string | null; result: string | null; expires_at: number } | undefined
      if (row === undefined) return undefined
      return { done: row.state === DONE, unknown: row.state === UNKNOWN, token: row.token, fingerprint: row.fingerprint, result: row.result, expiresInMs: row.expires_at - now }
    })
  }

  async forget(table: string, keys: Buffer[]): Promise<Uint8Array> {
    const s = this.statementsOf(table)
    const removed = new Uint8Array(keys.length)
    this.inTransaction(() => {
      const now = this.clock.now()
      for (let j = 0; j < keys.length; j++) {
        removed[j] = s.live.get(keys[j], now) === undefined ? 0 : 1
        s.forget.run(keys[j])
      }
    })
    return removed
  }

  async purge(table: string, from: Buffer, to: Buffer, limit: number): Promise<number> {
    return this.statementsOf(table).purge.run(from, to, limit).changes
  }

  async sweep(table: string, limit: number): Promise<number> {
    return this.statementsOf(table).sweep.run(this.clock.now(), limit).changes
  }

  /**
   * better-sqlite3 is synchronous, and so is this transaction: `work` must
   * return its value, not a promise. An async function would keep writing
   * after COMMIT, outside the transaction, so it is refused before anything commits.
   */
  async transaction<R>(work: (tx: unknown) => R | Promise<R>, finish: (value: R) => TransactionEnd): Promise<R> {
    let value!: R
    this.inTransaction(() => {
      const produced = work(this.db)
      if (typeof (produced as PromiseLike<unknown> | null)?.then === 'function') {
        // Keep the promise from surfacing as an unhandled rejection; its error, if any, is the caller's.
        ;(produced as Promise<unknown>).then(undefined, () => {})
        throw new TypeError('sqlite transactions run synchronously (better-sqlite3): the transaction function returned a promise; make it synchronous, so its writes happen inside the transaction')
      }
      value = produced as R
      const { done, positions, positionsTable } = finish(value)
      const now = this.clock.now()
      if (done !== undefined && this.statementsOf(done.table).commit.run(done.result, now + done.ttlMs, done.key, done.token, now).changes !== 1) throw leaseLost(done)
      if (positions.length === 0) return
      const save = this.db.prepare(`INSERT INTO ${q(positionsTable)} (source, part, position, updated_at) VALUES (?, ?, ?, ?)
                                    ON CONFLICT (source, part) DO UPDATE SET position = excluded.position, updated_at = excluded.updated_at`)
      for (const { source, partition, position } of positions) save.run(source, partition, position, now)
    })
    return value
  }

  async createPositionsTable(table: string): Promise<void> {
    this.db.exec(`CREATE TABLE IF NOT EXISTS ${q(table)} (source TEXT NOT NULL, part TEXT NOT NULL, position TEXT NOT NULL, updated_at INTEGER NOT NULL, PRIMARY KEY (source, part)) WITHOUT ROWID`)
  }

  async readPosition(table: string, source: string, partition: string): Promise<string | undefined> {
    const row = this.db.prepare(`SELECT position FROM ${q(table)} WHERE source = ? AND part = ?`).get(source, partition) as { position: string } | undefined
    return row?.position
  }

  permanent(error: unknown): IdemError | undefined {
    const message = (error as Error | null)?.message ?? ''
    if (/database connection is not open/.test(message)) {
      return new IdemError(ErrorCode.STORE_FAILED, `the better-sqlite3 database given as store.database has been closed (${message}); give the store an open database`, { cause: error })
    }
    return undefined
  }

  isMissingTable(error: unknown): boolean {
    return /no such table/.test((error as Error | null)?.message ?? '')
  }

  async close(): Promise<void> {
    await this.connection.close(({ shared }) => {
      if (shared === undefined || --shared.users > 0) return
      for (const [file, entry] of openFiles) if (entry === shared) openFiles.delete(file)
      shared.db.close()
    })
  }

  /** One write transaction (BEGIN IMMEDIATE, so it never has to upgrade a read lock and fail busy half way). */
  private inTransaction(body: () => void): void {
    const db = this.db
    const nested = db.inTransaction
    db.exec(nested ? 'SAVEPOINT idem' : 'BEGIN IMMEDIATE')
    try {
      body()
      db.exec(nested ? 'RELEASE idem' : 'COMMIT')
    } catch (error) {
      if (db.inTransaction) db.exec(nested ? 'ROLLBACK TO idem; RELEASE idem' : 'ROLLBACK')
      throw error
    }
  }

  private statementsOf(table: string): Prepared {
    const { db, prepared } = this.connection.value
    let s = prepared.get(table)
    if (s === undefined) prepared.set(table, (s = prepareFor(db, table)))
    return s
  }
}

/** The sqlite store: the shared SQL semantics over SqliteDialect. */
export class SqliteStore extends SqlStore {
  constructor(config: SqliteStoreConfig, clock: Clock) {
    super(config, new SqliteDialect(config, clock))
  }
}
