/**
 * The MySQL / MariaDB store (driver: mysql2). MySQL has no RETURNING on
 * INSERT … ON DUPLICATE KEY UPDATE and no data-modifying CTEs, so a primitive
 * is one write statement per table per batch, and the answer per key is read
 * back by primary key. On a pool idem opens itself the two go in one round
 * trip (multipleStatements); on a pool you pass in without that flag, two.
 * Commit, release and renewal skip the read-back when the write's row count
 * already says every key was applied, which is the common case.
 *
 * Leases and TTLs are on the server's clock: UTC_TIMESTAMP(3), which is the
 * same for every session whatever its time_zone (CURRENT_TIMESTAMP is not).
 *
 * Why ON DUPLICATE KEY UPDATE and not INSERT IGNORE for the claim: a claim
 * must also take over an expired row, which IGNORE cannot; and IGNORE turns
 * data errors (a truncated value) into warnings, which must never happen to a key.
 */
import { ErrorCode, IdemError } from '../../errors.js'
import { ClaimCode } from '../store.js'
import { leaseLost, type ClaimAnswer, type ColumnTypes, type DialectRole, type RowRecord, type SchemaSnapshot, type SqlDialect, type TransactionEnd } from './sql-dialect.js'
import { LazyConnection } from './lazy-connection.js'
import { loadMysql, mysqlPromisePool, type MysqlConnectionLike, type MysqlPromisePool } from './sql-drivers.js'
import type { MysqlStoreConfig } from './sql-options.js'
import { KEY_COLUMN_BYTES, RowState, SCHEMA_VERSION, TOKEN_COLUMN_BYTES } from './sql-records.js'
import { SqlStore } from './sql-store.js'

const q = (name: string): string => `\`${name}\``
const NOW = 'UTC_TIMESTAMP(3)'
const after = (ms: number): string => `TIMESTAMPADD(MICROSECOND, ${Math.round(ms) * 1000}, ${NOW})`
const { IN_PROGRESS, DONE, UNKNOWN } = RowState

/** A write's header: rows it matched (mysql2 sets CLIENT_FOUND_ROWS by default) or changed. */
interface WriteHeader {
  affectedRows: number
}

const expectedColumns: ReadonlyMap<string, string> = new Map([
  ['idem_key', `varbinary(${KEY_COLUMN_BYTES})`],
  ['state', 'tinyint'],
  ['token', `varbinary(${TOKEN_COLUMN_BYTES})`],
  ['fingerprint', 'longtext'],
  ['result', 'longtext'],
  ['expires_at', 'datetime(3)'],
])

function recordsDdl(table: string): string {
  return `
CREATE TABLE IF NOT EXISTS ${q(table)} (
  idem_key    VARBINARY(${KEY_COLUMN_BYTES}) NOT NULL,
  state       TINYINT NOT NULL,
  token       VARBINARY(${TOKEN_COLUMN_BYTES}) NOT NULL,
  fingerprint LONGTEXT CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NULL,
  result      LONGTEXT CHARACTER SET utf8mb4 COLLATE utf8mb4_bin NULL,
  expires_at  DATETIME(3) NOT NULL,
  PRIMARY KEY (idem_key),
  KEY ${q(`${table}_expires_at`)} (expires_at)
) ENGINE=InnoDB`
}

/** The open pool and what the server it reaches can do. */
interface MysqlConnection {
  pool: MysqlPromisePool
  /** Write and read-back in one round trip (the pool's connections allow several statements per query). */
  multiStatements: boolean
  /**
   * The upsert names the incoming row by an alias (`VALUES (…) AS incoming`,
   * MySQL 8.0.19+, where VALUES() is deprecated) instead of VALUES(column)
   * (MariaDB, which has no row alias, and older MySQL).
   */
  rowAlias: boolean
}

/** MySQL 8.0.19 or later (not MariaDB), from `SELECT VERSION()`. */
export function hasRowAlias(version: string): boolean {
  if (/mariadb/i.test(version)) return false
  const [major, minor, patch] = version.split(/[.-]/).map((part) => Number.parseInt(part, 10))
  return major > 8 || (major === 8 && (minor > 0 || patch >= 19))
}

/** `?, ?, …` for n values. */
const marks = (n: number): string => (n === 1 ? '?' : `?${', ?'.repeat(n - 1)}`)

export class MysqlDialect implements SqlDialect {
  readonly kind = 'mysql' as const
  readonly expectedColumns = expectedColumns
  private readonly connection: LazyConnection<MysqlConnection>
  private schemaConnection: MysqlConnectionLike | undefined

  constructor(
    private readonly config: MysqlStoreConfig,
    role: DialectRole,
  ) {
    this.connection = new LazyConnection(async () => {
      let pool: MysqlPromisePool
      let multiStatements: boolean
      if (config.pool !== undefined) {
        pool = mysqlPromisePool(config.pool)
        const core = (pool as { pool?: { config?: { connectionConfig?: { multipleStatements?: boolean } } } }).pool
        multiStatements = core?.config?.connectionConfig?.multipleStatements === true
      } else {
        const mysql = await loadMysql()
        pool = mysql.createPool({
          uri: config.url!.replace(/^mariadb:/, 'mysql:'),
          connectionLimit: role === 'transactions' ? config.transactionPoolSize : config.poolSize,
          connectTimeout: config.commandTimeoutMs,
          multipleStatements: true,
          dateStrings: true,
          enableKeepAlive: true,
        })
        multiStatements = true
      }
      try {
        const [rows] = await pool.query({ sql: 'SELECT VERSION() AS version', timeout: config.commandTimeoutMs })
        return { pool, multiStatements, rowAlias: hasRowAlias(String((rows as { version: unknown }[])[0]?.version)) }
      } catch (error) {
        if (config.pool === undefined) await pool.end().catch(() => {})
        throw error
      }
    })
  }

  connect(): Promise<void> {
    return this.connection.connect()
  }

  private get pool(): MysqlPromisePool {
    return this.connection.value.pool
  }

  async withSchemaLock<T>(fn: () => Promise<T>): Promise<T> {
    const connection = await this.pool.getConnection()
    const name = `idem schema ${this.config.tablePrefix}`
    let healthy = true
    try {
      const [rows] = await connection.query({ sql: 'SELECT GET_LOCK(?, ?) AS locked', values: [name, Math.ceil((this.config.commandTimeoutMs * 4) / 1000)] })
      if ((rows as { locked: number }[])[0]?.locked !== 1) throw new Error(`could not take the schema lock ${JSON.stringify(name)} (another process holds it)`)
      this.schemaConnection = connection
      try {
        return await fn()
      } finally {
        this.schemaConnection = undefined
        await connection.query({ sql: 'SELECT RELEASE_LOCK(?)', values: [name] })
      }
    } catch (error) {
      healthy = false
      throw error
    } finally {
      if (healthy) connection.release()
      else connection.destroy()
    }
  }

  async readSchema(tableNames: readonly string[]): Promise<SchemaSnapshot> {
    const db = this.schemaConnection ?? this.pool
    const [rows] = await db.query({
      sql: `SELECT TABLE_NAME AS table_name, COLUMN_NAME AS column_name, DATA_TYPE AS data_type,
                   CHARACTER_MAXIMUM_LENGTH AS max_length, DATETIME_PRECISION AS fraction
              FROM information_schema.COLUMNS WHERE TABLE_SCHEMA = DATABASE() AND TABLE_NAME IN (${marks(tableNames.length)})`,
      values: [...tableNames],
    })
    const tables = new Map<string, ColumnTypes>()
    for (const row of rows as Record<string, unknown>[]) {
      const name = String(row.table_name)
      let columns = tables.get(name)
      if (columns === undefined) tables.set(name, (columns = new Map()))
      const type = String(row.data_type).toLowerCase()
      const spelled = type === 'varbinary' || type === 'varchar' ? `${type}(${Number(row.max_length)})` : type === 'datetime' ? `datetime(${Number(row.fraction)})` : type
      columns.set(String(row.column_name), spelled)
    }
    const metaTable = tableNames[tableNames.length - 1]
    let meta: Map<string, string> | undefined
    if (tables.has(metaTable)) {
      const [found] = await db.query(`SELECT name, value FROM ${q(metaTable)}`)
      meta = new Map((found as Record<string, unknown>[]).map((row) => [String(row.name), String(row.value)]))
    }
    return { meta, tables }
  }

  async createSchema(recordTables: readonly string[], metaTable: string, meta: ReadonlyMap<string, string>): Promise<void> {
    const db = this.schemaConnection ?? this.pool
    // MySQL commits each DDL statement by itself: the meta table first, its rows last (see sql-schema.ts).
    await db.query(`CREATE TABLE IF NOT EXISTS ${q(metaTable)} (name VARCHAR(64) CHARACTER SET ascii NOT NULL PRIMARY KEY, value VARCHAR(255) NOT NULL) ENGINE=InnoDB`)
    for (const table of recordTables) await db.query(recordsDdl(table))
    await db.query({ sql: `INSERT IGNORE INTO ${q(metaTable)} (name, value) VALUES ${[...meta].map(() => '(?, ?)').join(', ')}`, values: [...meta].flat() })
  }

  /** Version 1 had no check on state (MySQL's column has none), so only the version changes. */
  async upgradeSchema(_recordTables: readonly string[], metaTable: string): Promise<void> {
    const db = this.schemaConnection ?? this.pool
    await db.query({ sql: `UPDATE ${q(metaTable)} SET value = ? WHERE name = 'schema_version'`, values: [String(SCHEMA_VERSION)] })
  }

  async dropTables(tableNames: readonly string[]): Promise<void> {
    await this.pool.query(`DROP TABLE IF EXISTS ${tableNames.map(q).join(', ')}`)
  }

  /**
   * One INSERT … ON DUPLICATE KEY UPDATE for the batch, then the rows read
   * back by key. The UPDATE takes over an expired row, or re-leases a row this
   * token holds (a retried call owns its claim), and leaves every other row
   * (a live UNKNOWN one too) as it was. MySQL assigns left to right and later
   * assignments see earlier ones, so token and expires_at, which the condition
   * reads, go last; when the condition held, it still holds after state and
   * token are set.
   */
  async claim(table: string, keys: Buffer[], fingerprints: (string | null)[], token: string, leaseMs: number): Promise<ClaimAnswer> {
    const n = keys.length
    const { rowAlias } = this.connection.value
    const incoming = (column: string): string => (rowAlias ? `incoming.${column}` : `VALUES(${column})`)
    const takeOver = `(expires_at <= ${NOW} OR (state = ${IN_PROGRESS} AND token = ${incoming('token')}))`
    const row = `(?, ${IN_PROGRESS}, ?, ?, NULL, ${after(leaseMs)})`
    const insert = `INSERT INTO ${q(table)} (idem_key, state, token, fingerprint, result, expires_at) VALUES ${row}${`, ${row}`.repeat(n - 1)}${rowAlias ? ' AS incoming' : ''}
ON DUPLICATE KEY UPDATE
  fingerprint = IF(${takeOver}, ${incoming('fingerprint')}, fingerprint),
  result = IF(${takeOver}, NULL, result),
  state = IF(${takeOver}, ${IN_PROGRESS}, state),
  token = IF(${takeOver}, ${incoming('token')}, token),
  expires_at = IF(${takeOver}, ${incoming('expires_at')}, expires_at)`
    const values: unknown[] = new Array(3 * n)
    for (let j = 0; j < n; j++) {
      values[3 * j] = keys[j]
      values[3 * j + 1] = token
      values[3 * j + 2] = fingerprints[j]
    }
    const read = `SELECT idem_key, (state = ${IN_PROGRESS} AND token = ? AND expires_at > ${NOW}) AS mine, (state = ${DONE} AND expires_at > ${NOW}) AS done,
       (state = ${UNKNOWN} AND expires_at > ${NOW}) AS unknown, token, fingerprint, result
  FROM ${q(table)} WHERE idem_key IN (${marks(n)})`
    const rows = (await this.writeThenRead(insert, values, read, [token, ...keys])) as Record<string, unknown>[]
    const byKey = new Map<string, Record<string, unknown>>()
    for (const r of rows) byKey.set((r.idem_key as Buffer).toString('latin1'), r)
    const answer: ClaimAnswer = { codes: new Uint8Array(n), fingerprints: new Array(n).fill(null), results: new Array(n).fill(null) }
    const { codes } = answer
    for (let j = 0; j < n; j++) {
      const r = byKey.get(keys[j].toString('latin1'))
      // No row: released or swept between the two statements. Not ours: retry later.
      if (r === undefined) codes[j] = ClaimCode.IN_PROGRESS
      else if (Number(r.mine) === 1) codes[j] = ClaimCode.CLAIMED
      else {
        codes[j] = Number(r.done) === 1 ? ClaimCode.DONE : Number(r.unknown) === 1 ? ClaimCode.UNKNOWN : ClaimCode.IN_PROGRESS
        answer.fingerprints[j] = r.fingerprint as string | null
        answer.results[j] = r.result as string | null
        // The episode a reconcile answer names (resolve's token).
        if (codes[j] === ClaimCode.UNKNOWN) (answer.tokens ??= new Array(n).fill(null))[j] = (r.token as Buffer).toString('utf8')
      }
    }
    return answer
  }

  async commit(table: string, keys: Buffer[], results: (string | null)[] | undefined, token: string, ttlMs: number): Promise<Uint8Array> {
    const n = keys.length
    const fence = `token = ? AND state = ${IN_PROGRESS} AND expires_at > ${NOW}`
    let header: WriteHeader
    if (results === undefined || results.every((r) => r === null)) {
      header = await this.write(`UPDATE ${q(table)} SET state = ${DONE}, result = NULL, expires_at = ${after(ttlMs)} WHERE idem_key IN (${marks(n)}) AND ${fence}`, [...keys, token])
    } else {
      // Per-key results ride in a derived table joined on the primary key (portable to MySQL 8 and MariaDB).
      const values: unknown[] = []
      const pairs: string[] = []
      for (let j = 0; j < n; j++) {
        pairs.push(j === 0 ? 'SELECT ? AS k, ? AS res' : 'SELECT ?, ?')
        values.push(keys[j], results[j])
      }
      values.push(token)
      header = await this.write(
        `UPDATE ${q(table)} AS r JOIN (${pairs.join(' UNION ALL ')}) AS v ON r.idem_key = v.k
         SET r.state = ${DONE}, r.result = v.res, r.expires_at = ${after(ttlMs)}
         WHERE r.token = ? AND r.state = ${IN_PROGRESS} AND r.expires_at > ${NOW}`,
        values,
      )
    }
    if (header.affectedRows === n) return new Uint8Array(n).fill(1)
    // Some were not committed now: committed earlier by this token (a retried call) counts as committed.
    return this.present(table, keys, `state = ${DONE} AND token = ? AND expires_at > ${NOW}`, [token], true)
  }

  async release(table: string, keys: Buffer[], token: string): Promise<Uint8Array> {
    const n = keys.length
    const header = await this.write(`DELETE FROM ${q(table)} WHERE idem_key IN (${marks(n)}) AND token = ? AND state = ${IN_PROGRESS} AND expires_at > ${NOW}`, [...keys, token])
    if (header.affectedRows === n) return new Uint8Array(n).fill(1)
    // Applied unless a live row is still there (another owner's, DONE or UNKNOWN): absent is what a release wants.
    return this.present(table, keys, `expires_at > ${NOW}`, [], false)
  }

  async renew(table: string, keys: Buffer[], token: string, leaseMs: number): Promise<Uint8Array> {
    const n = keys.length
    const fence = `token = ? AND state = ${IN_PROGRESS} AND expires_at > ${NOW}`
    const header = await this.write(`UPDATE ${q(table)} SET expires_at = ${after(leaseMs)} WHERE idem_key IN (${marks(n)}) AND ${fence}`, [...keys, token])
    if (header.affectedRows === n) return new Uint8Array(n).fill(1)
    return this.present(table, keys, fence, [token], true)
  }

  /**
   * Fenced like commit (one UPDATE, read back only when some key was not
   * applied) but by the row, not the lease: an IN_PROGRESS row still naming
   * this token is marked even when its lease has lapsed, since nobody took it
   * over (a claim writes its own token); leaving it claimable would let a
   * redelivery repeat an effect that may have happened. The UPDATE reads the
   * latest committed row under its lock, so a claim that took the row over
   * first is seen and refused.
   */
  async markUnknown(table: string, keys: Buffer[], token: string, ttlMs: number): Promise<Uint8Array> {
    const n = keys.length
    const header = await this.write(
      `UPDATE ${q(table)} SET state = ${UNKNOWN}, result = NULL, expires_at = ${after(ttlMs)}
        WHERE idem_key IN (${marks(n)}) AND token = ? AND state = ${IN_PROGRESS}`,
      [...keys, token],
    )
    if (header.affectedRows === n) return new Uint8Array(n).fill(1)
    // Some were not marked now: marked earlier by this token (a retried call) counts as marked.
    return this.present(table, keys, `state = ${UNKNOWN} AND token = ? AND expires_at > ${NOW}`, [token], true)
  }

  /**
   * A transaction, not one statement: after the writes, a key resolved now
   * looks like one that was DONE, or absent, already, so which keys were live
   * UNKNOWN rows (marked under `token`, when given: a reconcile hook's answer
   * about one episode never resolves a later one) is read first, under their
   * row locks, and only those are written. An operator's or a reconcile
   * hook's call, rare enough for it.
   */
  async resolve(table: string, keys: Buffer[], done: boolean[], results: (string | null)[], ttlMs: number, token: string | undefined): Promise<Uint8Array> {
    return this.inTransaction(async (connection) => {
      const [rows] = await connection.query({
        sql: `SELECT idem_key FROM ${q(table)} WHERE idem_key IN (${marks(keys.length)}) AND state = ${UNKNOWN} AND expires_at > ${NOW}${token === undefined ? '' : ' AND token = ?'} FOR UPDATE`,
        values: token === undefined ? keys : [...keys, token],
        timeout: this.config.commandTimeoutMs,
      })
      const unknown = new Set((rows as { idem_key: Buffer }[]).map((r) => r.idem_key.toString('latin1')))
      const resolved = Uint8Array.from(keys, (k) => (unknown.has(k.toString('latin1')) ? 1 : 0))
      const finished: number[] = []
      const dropped: Buffer[] = []
      for (let j = 0; j < keys.length; j++) {
        if (resolved[j] === 0) continue
        if (done[j]) finished.push(j)
        else dropped.push(keys[j])
      }
      if (finished.length > 0) {
        // Per-key results ride in a derived table joined on the primary key, as commit's do.
        const pairs = finished.map((_, i) => (i === 0 ? 'SELECT ? AS k, ? AS res' : 'SELECT ?, ?'))
        await connection.query({
          sql: `UPDATE ${q(table)} AS r JOIN (${pairs.join(' UNION ALL ')}) AS v ON r.idem_key = v.k SET r.state = ${DONE}, r.result = v.res, r.expires_at = ${after(ttlMs)}`,
          values: finished.flatMap((j) => [keys[j], results[j]]),
          timeout: this.config.commandTimeoutMs,
        })
      }
      if (dropped.length > 0) {
        await connection.query({ sql: `DELETE FROM ${q(table)} WHERE idem_key IN (${marks(dropped.length)})`, values: dropped, timeout: this.config.commandTimeoutMs })
      }
      return resolved
    })
  }

  async inspect(table: string, keys: Buffer[]): Promise<(RowRecord | undefined)[]> {
    const [rows] = await this.pool.query({
      sql: `SELECT idem_key, state, token, fingerprint, result, TIMESTAMPDIFF(MICROSECOND, ${NOW}, expires_at) DIV 1000 AS ttl
              FROM ${q(table)} WHERE idem_key IN (${marks(keys.length)}) AND expires_at > ${NOW}`,
      values: keys,
      timeout: this.config.commandTimeoutMs,
    })
    const byKey = new Map((rows as Record<string, unknown>[]).map((row) => [(row.idem_key as Buffer).toString('latin1'), row]))
    return keys.map((key) => {
      const row = byKey.get(key.toString('latin1'))
      if (row === undefined) return undefined
      return { done: Number(row.state) === DONE, unknown: Number(row.state) === UNKNOWN, token: (row.token as Buffer).toString('utf8'), fingerprint: row.fingerprint as string | null, result: row.result as string | null, expiresInMs: Number(row.ttl) }
    })
  }

  /** Reads which rows are live, then deletes every row of the keys: an operator's call, so two statements are fine. */
  async forget(table: string, keys: Buffer[]): Promise<Uint8Array> {
    const live = await this.present(table, keys, `expires_at > ${NOW}`, [], true)
    await this.write(`DELETE FROM ${q(table)} WHERE idem_key IN (${marks(keys.length)})`, keys)
    return live
  }

  async purge(table: string, from: Buffer, to: Buffer, limit: number): Promise<number> {
    return (await this.write(`DELETE FROM ${q(table)} WHERE idem_key >= ? AND idem_key < ? LIMIT ${Math.max(1, Math.floor(limit))}`, [from, to])).affectedRows
  }

  /** Bounded by LIMIT: at most `limit` expired rows, oldest first. */
  async sweep(table: string, limit: number): Promise<number> {
    return (await this.write(`DELETE FROM ${q(table)} WHERE expires_at < ${NOW} ORDER BY expires_at LIMIT ${Math.max(1, Math.floor(limit))}`, [])).affectedRows
  }

  async transaction<R>(work: (tx: unknown) => R | Promise<R>, finish: (value: R) => TransactionEnd): Promise<R> {
    return this.inTransaction(async (connection) => {
      const value = await work(connection)
      const { done, positions, positionsTable } = finish(value)
      if (done !== undefined) {
        const [header] = await connection.query({
          sql: `UPDATE ${q(done.table)} SET state = ${DONE}, result = ?, expires_at = ${after(done.ttlMs)}
                 WHERE idem_key = ? AND token = ? AND state = ${IN_PROGRESS} AND expires_at > ${NOW}`,
          values: [done.result, done.key, done.token],
          timeout: this.config.commandTimeoutMs,
        })
        if ((header as WriteHeader).affectedRows !== 1) throw leaseLost(done)
      }
      for (const { source, partition, position } of positions) {
        await connection.query({
          sql: `INSERT INTO ${q(positionsTable)} (source, part, \`position\`, updated_at) VALUES (?, ?, ?, ${NOW})
                 ON DUPLICATE KEY UPDATE \`position\` = VALUES(\`position\`), updated_at = VALUES(updated_at)`,
          values: [source, partition, position],
          timeout: this.config.commandTimeoutMs,
        })
      }
      return value
    })
  }

  async createPositionsTable(table: string): Promise<void> {
    await this.write(
      `CREATE TABLE IF NOT EXISTS ${q(table)} (source VARCHAR(255) NOT NULL, part VARCHAR(255) NOT NULL, \`position\` VARCHAR(255) NOT NULL, updated_at DATETIME(3) NOT NULL, PRIMARY KEY (source, part)) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin`,
      [],
    )
  }

  async readPosition(table: string, source: string, partition: string): Promise<string | undefined> {
    const [rows] = await this.pool.query({ sql: `SELECT \`position\` FROM ${q(table)} WHERE source = ? AND part = ?`, values: [source, partition], timeout: this.config.commandTimeoutMs })
    const row = (rows as Record<string, unknown>[])[0]
    return row === undefined ? undefined : String(row.position)
  }

  permanent(error: unknown): IdemError | undefined {
    const message = (error as Error | null)?.message ?? ''
    if (/^Pool is closed\.?$/.test(message)) {
      return new IdemError(ErrorCode.STORE_FAILED, `the mysql2 pool given as store.pool has been ended (${message}); give the store an open pool`, { cause: error })
    }
    return undefined
  }

  isMissingTable(error: unknown): boolean {
    return (error as { code?: string } | null)?.code === 'ER_NO_SUCH_TABLE'
  }

  async close(): Promise<void> {
    await this.connection.close(({ pool }) => (this.config.pool === undefined ? pool.end() : undefined))
  }

  /** `body` on one connection between START TRANSACTION and COMMIT; rolled back if it throws. */
  private async inTransaction<T>(body: (connection: MysqlConnectionLike) => Promise<T>): Promise<T> {
    const connection = await this.pool.getConnection()
    let healthy = true
    try {
      await connection.query('START TRANSACTION')
      try {
        const value = await body(connection)
        await connection.query('COMMIT')
        return value
      } catch (error) {
        await connection.query('ROLLBACK').catch(() => (healthy = false))
        throw error
      }
    } finally {
      if (healthy) connection.release()
      else connection.destroy()
    }
  }

  private async write(sql: string, values: unknown[]): Promise<WriteHeader> {
    const [header] = await this.pool.query({ sql, values, timeout: this.config.commandTimeoutMs })
    return header as WriteHeader
  }

  /** A write and a read-back: one round trip when the pool allows several statements per query. */
  private async writeThenRead(write: string, writeValues: unknown[], read: string, readValues: unknown[]): Promise<unknown[]> {
    if (this.connection.value.multiStatements) {
      const [results] = await this.pool.query({ sql: `${write};\n${read}`, values: [...writeValues, ...readValues], timeout: this.config.commandTimeoutMs })
      return (results as unknown[][])[1]
    }
    await this.write(write, writeValues)
    const [rows] = await this.pool.query({ sql: read, values: readValues, timeout: this.config.commandTimeoutMs })
    return rows as unknown[]
  }

  /** Per key: 1 when a row matching `where` is there (or, with present = false, when none is). */
  private async present(table: string, keys: Buffer[], where: string, whereValues: unknown[], present: boolean): Promise<Uint8Array> {
    const [rows] = await this.pool.query({ sql: `SELECT idem_key FROM ${q(table)} WHERE idem_key IN (${marks(keys.length)}) AND ${where}`, values: [...keys, ...whereValues], timeout: this.config.commandTimeoutMs })
    const found = new Set((rows as { idem_key: Buffer }[]).map((r) => r.idem_key.toString('latin1')))
    return Uint8Array.from(keys, (k) => (found.has(k.toString('latin1')) === present ? 1 : 0))
  }
}

/** The mysql store: the shared SQL semantics over MysqlDialect. */
export class MysqlStore extends SqlStore {
  constructor(config: MysqlStoreConfig) {
    super(config, new MysqlDialect(config, 'store'))
  }
}
