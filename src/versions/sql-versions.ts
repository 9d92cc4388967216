import { resolve } from 'node:path'
import type { Clock } from '../clock.js'
import { ErrorCode, errorText, IdemError } from '../errors.js'
import { withRetries } from '../retry.js'
import { loadMysql, loadPg, loadSqlite, mysqlPromisePool, type MysqlConnectionLike, type MysqlPromisePool, type PgClientLike, type PgPoolLike, type SqliteDatabaseLike } from '../store/sql/sql-drivers.js'
import type { SqlStoreConfig } from '../store/sql/sql-options.js'
import { claimRecord, commitRecord, liveRecord, releaseRecord, renewRecord, viewOf, type VersionRecord } from './version-records.js'
import { VersionClaim, type VersionClaims, type VersionStore, type VersionView } from './version-store.js'

/** The columns of `${tablePrefix}versions`, beyond the key: a VersionRecord. */
const COLUMNS = ['applied', 'state', 'committed_by', 'token', 'claimed', 'claimed_state', 'lease_end', 'expires_at'] as const

interface Row {
  key: Buffer
  record: VersionRecord
}

/** One database transaction, as the version store sees it. */
interface VersionTx {
  /** The database's clock in ms (SQLite: the process's). */
  now(): Promise<number>
  /** Creates an empty, expired row for each of `keys` (sorted) that has none, so every key of a claim has a row to lock. */
  reserve(keys: Buffer[]): Promise<void>
  /** The rows of `keys` (sorted by their bytes), locked until the transaction ends. */
  lock(keys: Buffer[]): Promise<Row[]>
  update(rows: Row[]): Promise<void>
  delete(keys: Buffer[]): Promise<void>
}

/** A backend: how it opens, runs a transaction, and closes. */
interface VersionDatabase {
  transaction<T>(work: (tx: VersionTx) => Promise<T>): Promise<T>
  close(): Promise<void>
}

/**
 * Version-aware records on PostgreSQL, MariaDB/MySQL or SQLite: one table,
 * `${tablePrefix}versions`, created on first use. Each batch is one
 * transaction: its rows are read under a row lock (keys in byte order, so two
 * batches never lock in opposite orders), the rules of version-records.ts
 * decide, and what changed is written back. A claim first makes sure every key
 * has a row (an empty, expired one for a new key; an insert that meets a
 * concurrent one waits for it and leaves its row), so two processes claiming
 * one new key queue on its row lock instead of colliding on the primary key.
 */
export class SqlVersionStore implements VersionStore {
  readonly health = { retries: 0, failures: 0 }
  private database: Promise<VersionDatabase> | undefined

  constructor(
    private readonly config: SqlStoreConfig,
    private readonly clock: Clock,
  ) {}

  private open(): Promise<VersionDatabase> {
    this.database ??= openDatabase(this.config, this.clock).catch((error) => {
      this.database = undefined
      throw error
    })
    return this.database
  }

  async claim(keys: readonly string[], versions: readonly string[], states: readonly (string | undefined)[], token: string, leaseMs: number, ttlMs: number): Promise<VersionClaims> {
    const n = keys.length
    const answer: VersionClaims = { codes: new Uint8Array(n), applied: new Array(n), states: new Array(n), expiresInMs: new Float64Array(n) }
    await this.apply('claim', keys, (found, i, now) => {
      answer.applied[i] = found?.applied
      answer.states[i] = found?.state
      const { code, record } = claimRecord(found, versions[i], states[i], token, now, leaseMs, ttlMs)
      answer.codes[i] = code
      if (code === VersionClaim.STALE) answer.expiresInMs[i] = record!.expiresAt - now
      return code === VersionClaim.CLAIMED ? record : false
    })
    return answer
  }

  async commit(keys: readonly string[], token: string, ttlMs: number, _every: boolean): Promise<Uint8Array> {
    const out = new Uint8Array(keys.length)
    await this.apply('commit', keys, (found, i, now) => {
      const { applied, changed } = commitRecord(found, token, now, ttlMs)
      out[i] = applied ? 1 : 0
      return changed ? found : false
    })
    return out
  }

  async release(keys: readonly string[], token: string): Promise<Uint8Array> {
    const out = new Uint8Array(keys.length)
    await this.apply('release', keys, (found, i) => {
      const { released, changed, gone } = releaseRecord(found, token)
      out[i] = released ? 1 : 0
      return gone ? undefined : changed ? found : false
    })
    return out
  }

  async renew(keys: readonly string[], token: string, leaseMs: number, ttlMs: number): Promise<Uint8Array> {
    const out = new Uint8Array(keys.length)
    await this.apply('renew', keys, (found, i, now) => {
      const renewed = renewRecord(found, token, now, leaseMs, ttlMs)
      out[i] = renewed ? 1 : 0
      return renewed ? found : false
    })
    return out
  }

  async inspect(keys: readonly string[]): Promise<(VersionView | undefined)[]> {
    const views: (VersionView | undefined)[] = new Array(keys.length)
    await this.apply('inspect', keys, (found, i, now) => {
      views[i] = viewOf(found, now)
      return false
    })
    return views
  }

  async close(): Promise<void> {
    const database = this.database
    this.database = undefined
    if (database !== undefined) await (await database.catch(() => undefined))?.close()
  }

  /**
   * One transaction over the keys' rows: `decide` sees each key's live record
   * (undefined when absent or expired) at its batch position and returns the
   * record to write, undefined to delete the row, or false to leave it.
   * Retried as a whole on failure: every operation is safe to repeat under
   * the same token.
   */
  private apply(what: string, keys: readonly string[], decide: (found: VersionRecord | undefined, i: number, now: number) => VersionRecord | undefined | false): Promise<void> {
    const order = keys.map((key, i) => ({ key: Buffer.from(key, 'utf8'), i })).sort((a, b) => Buffer.compare(a.key, b.key))
    const run = async () => {
      const database = await this.open()
      await database.transaction(async (tx) => {
        const now = await tx.now()
        if (what === 'claim') await tx.reserve(order.map((o) => o.key))
        const rows = new Map((await tx.lock(order.map((o) => o.key))).map((row) => [row.key.toString('latin1'), row.record]))
        const updates: Row[] = []
        const deletes: Buffer[] = []
        for (const { key, i } of order) {
          const stored = rows.get(key.toString('latin1'))
          const found = liveRecord(stored, now)
          // An expired row counts as absent, but it is still there: a write to it is an UPDATE.
          const decided = decide(found === undefined ? undefined : { ...found }, i, now)
          if (decided === false) continue
          if (decided === undefined) {
            if (stored !== undefined) deletes.push(key)
          } else {
            // Only a claim writes a key with no record, and it reserved a row for every key first.
            if (stored === undefined) throw new Error(`version ${what}: no row was reserved for a key it writes`)
            updates.push({ key, record: decided })
          }
        }
        if (deletes.length > 0) await tx.delete(deletes)
        if (updates.length > 0) await tx.update(updates)
      })
    }
    return withRetries(run, { retries: this.config.retries, backoffMs: this.config.retryBackoffMs }, {
      permanent: (error) => (error instanceof IdemError ? error : undefined),
      onRetry: () => this.health.retries++,
      exhausted: (error, attempts) => {
        this.health.failures++
        return new IdemError(ErrorCode.STORE_FAILED, `version ${what} on ${this.config.kind} failed after ${attempts} attempts: ${errorText(error)}`, { cause: error })
      },
    })
  }
}

function tableOf(config: SqlStoreConfig): string {
  return `${config.tablePrefix}versions`
}

async function openDatabase(config: SqlStoreConfig, clock: Clock): Promise<VersionDatabase> {
  switch (config.kind) {
    case 'postgres':
      return openPostgres(config, tableOf(config))
    case 'mysql':
      return openMysql(config, tableOf(config))
    case 'sqlite':
      return openSqlite(config, tableOf(config), clock)
  }
}

/** A row as a driver reads it: the key's bytes and the record's columns (numbers may come back as strings). */
function recordOf(row: Record<string, unknown>): Row {
  const text = (value: unknown) => (value === null || value === undefined ? undefined : String(value))
  return {
    key: Buffer.from(row.idem_key as Uint8Array),
    record: {
      applied: text(row.applied),
      state: text(row.state),
      committedBy: text(row.committed_by),
      token: text(row.token),
      claimed: text(row.claimed),
      claimedState: text(row.claimed_state),
      leaseEnd: Number(row.lease_end),
      expiresAt: Number(row.expires_at),
    },
  }
}

/** The columns' values of a record, in COLUMNS order (NULL for a field not set). */
function valuesOf(record: VersionRecord): unknown[] {
  return [record.applied ?? null, record.state ?? null, record.committedBy ?? null, record.token ?? null, record.claimed ?? null, record.claimedState ?? null, Math.round(record.leaseEnd), Math.round(record.expiresAt)]
}

async function openPostgres(config: Extract<SqlStoreConfig, { kind: 'postgres' }>, table: string): Promise<VersionDatabase> {
  let pool: PgPoolLike
  if (config.pool !== undefined) pool = config.pool
  else {
    const { Pool } = await loadPg()
    const own = new Pool({ connectionString: config.url, max: config.poolSize, connectionTimeoutMillis: config.commandTimeoutMs, idleTimeoutMillis: 10_000, allowExitOnIdle: true, application_name: 'idem versions' })
    own.on('error', () => {})
    pool = own
  }
  const t = `"${table}"`
  const timeout = config.commandTimeoutMs
  await pool.query({
    text: `CREATE TABLE IF NOT EXISTS ${t} (idem_key bytea PRIMARY KEY, applied text, state text, committed_by text, token text, claimed text, claimed_state text, lease_end bigint NOT NULL, expires_at bigint NOT NULL)`,
    query_timeout: timeout,
  }).catch(ignoreConcurrentCreate)
  const set = COLUMNS.map((c) => `${c} = v.${c}`).join(', ')
  return {
    async transaction(work) {
      const client: PgClientLike = await pool.connect()
      let broken: Error | undefined
      try {
        await client.query('BEGIN')
        const q = (text: string, values: unknown[]) => client.query({ text, values, query_timeout: timeout })
        const result = await work({
          now: async () => Number((await q(`SELECT (extract(epoch from clock_timestamp()) * 1000)::bigint AS now`, [])).rows[0].now),
          lock: async (keys) => (await q(`SELECT * FROM ${t} WHERE idem_key = ANY($1::bytea[]) ORDER BY idem_key FOR UPDATE`, [keys])).rows.map(recordOf),
          reserve: async (keys) => void (await q(`INSERT INTO ${t} (idem_key, lease_end, expires_at) SELECT k, 0, 0 FROM unnest($1::bytea[]) AS k ORDER BY k ON CONFLICT (idem_key) DO NOTHING`, [keys])),
          update: async (rows) => {
            const values: unknown[] = []
            const tuples = rows.map((row) => {
              const start = values.length
              values.push(row.key, ...valuesOf(row.record))
              const casts = ['bytea', 'text', 'text', 'text', 'text', 'text', 'text', 'bigint', 'bigint']
              return `(${casts.map((cast, j) => `$${start + j + 1}::${cast}`).join(', ')})`
            })
            await q(`UPDATE ${t} AS r SET ${set} FROM (VALUES ${tuples.join(', ')}) AS v (idem_key, ${COLUMNS.join(', ')}) WHERE r.idem_key = v.idem_key`, values)
          },
          delete: async (keys) => void (await q(`DELETE FROM ${t} WHERE idem_key = ANY($1::bytea[])`, [keys])),
        })
        await client.query('COMMIT')
        return result
      } catch (error) {
        broken = error as Error
        await client.query('ROLLBACK').catch(() => {})
        throw error
      } finally {
        client.release(broken)
      }
    },
    close: async () => {
      if (config.pool === undefined) await pool.end()
    },
  }
}

async function openMysql(config: Extract<SqlStoreConfig, { kind: 'mysql' }>, table: string): Promise<VersionDatabase> {
  let pool: MysqlPromisePool
  if (config.pool !== undefined) pool = mysqlPromisePool(config.pool)
  else {
    const mysql = await loadMysql()
    pool = mysql.createPool({ uri: config.url!.replace(/^mariadb:/, 'mysql:'), connectionLimit: config.poolSize, connectTimeout: config.commandTimeoutMs, enableKeepAlive: true, supportBigNumbers: true })
  }
  const t = `\`${table}\``
  const timeout = config.commandTimeoutMs
  try {
    await pool.query({
      sql: `CREATE TABLE IF NOT EXISTS ${t} (idem_key VARBINARY(1024) NOT NULL PRIMARY KEY, applied TEXT, state TEXT, committed_by VARCHAR(255), token VARCHAR(255), claimed TEXT, claimed_state TEXT, lease_end BIGINT NOT NULL, expires_at BIGINT NOT NULL) ENGINE=InnoDB DEFAULT CHARSET=utf8mb4 COLLATE=utf8mb4_bin`,
      timeout,
    })
  } catch (error) {
    if (config.pool === undefined) await pool.end().catch(() => {})
    throw error
  }
  return {
    async transaction(work) {
      const connection: MysqlConnectionLike = await pool.getConnection()
      let broken = false
      try {
        await connection.query('START TRANSACTION')
        const q = async (sql: string, values: unknown[]) => (await connection.query({ sql, values, timeout }))[0] as Record<string, unknown>[]
        const result = await work({
          now: async () => Number((await q('SELECT CAST(UNIX_TIMESTAMP(NOW(3)) * 1000 AS SIGNED) AS now', []))[0].now),
          lock: async (keys) => (await q(`SELECT * FROM ${t} WHERE idem_key IN (?) ORDER BY idem_key FOR UPDATE`, [keys])).map(recordOf),
          reserve: async (keys) => void (await q(`INSERT INTO ${t} (idem_key, lease_end, expires_at) VALUES ${keys.map(() => '(?, 0, 0)').join(', ')} ON DUPLICATE KEY UPDATE idem_key = idem_key`, keys)),
          update: async (rows) => {
            // One UPDATE per row: the rows are locked already, and MariaDB has no UPDATE … FROM (VALUES …).
            for (const row of rows) await q(`UPDATE ${t} SET ${COLUMNS.map((c) => `${c} = ?`).join(', ')} WHERE idem_key = ?`, [...valuesOf(row.record), row.key])
          },
          delete: async (keys) => void (await q(`DELETE FROM ${t} WHERE idem_key IN (?)`, [keys])),
        })
        await connection.query('COMMIT')
        return result
      } catch (error) {
        broken = true
        await connection.query('ROLLBACK').catch(() => {})
        throw error
      } finally {
        if (broken) connection.destroy()
        else connection.release()
      }
    },
    close: async () => {
      if (config.pool === undefined) await pool.end()
    },
  }
}

async function openSqlite(config: Extract<SqlStoreConfig, { kind: 'sqlite' }>, table: string, clock: Clock): Promise<VersionDatabase> {
  let db: SqliteDatabaseLike
  if (config.database !== undefined) db = config.database
  else {
    const Database = await loadSqlite()
    db = new Database(resolve(config.path!), { timeout: config.busyTimeoutMs })
    db.pragma('journal_mode = WAL')
    db.pragma(`synchronous = ${config.synchronous.toUpperCase()}`)
  }
  const t = `"${table}"`
  db.exec(`CREATE TABLE IF NOT EXISTS ${t} (idem_key BLOB PRIMARY KEY, applied TEXT, state TEXT, committed_by TEXT, token TEXT, claimed TEXT, claimed_state TEXT, lease_end INTEGER NOT NULL, expires_at INTEGER NOT NULL) WITHOUT ROWID`)
  const select = db.prepare(`SELECT * FROM ${t} WHERE idem_key = ?`)
  const reserve = db.prepare(`INSERT OR IGNORE INTO ${t} (idem_key, lease_end, expires_at) VALUES (?, 0, 0)`)
  const update = db.prepare(`UPDATE ${t} SET ${COLUMNS.map((c) => `${c} = ?`).join(', ')} WHERE idem_key = ?`)
  const remove = db.prepare(`DELETE FROM ${t} WHERE idem_key = ?`)
  // One connection: its transactions run one after another.
  let tail: Promise<unknown> = Promise.resolve()
  return {
    transaction(work) {
      const run = tail.then(() => sqliteTransaction(work))
      tail = run.catch(() => undefined)
      return run
    },
    close: async () => {
      await tail
      if (config.database === undefined) db.close()
    },
  }

  async function sqliteTransaction<T>(work: (tx: VersionTx) => Promise<T>): Promise<T> {
    // BEGIN IMMEDIATE takes the write lock first: the reads below cannot go stale before the writes.
    db.exec('BEGIN IMMEDIATE')
    try {
      const result = await work({
        now: async () => clock.now(),
        lock: async (keys) => keys.flatMap((key) => {
          const row = select.get(key) as Record<string, unknown> | undefined
          return row === undefined ? [] : [recordOf(row)]
        }),
        reserve: async (keys) => keys.forEach((key) => reserve.run(key)),
        update: async (rows) => rows.forEach((row) => update.run(...valuesOf(row.record), row.key)),
        delete: async (keys) => keys.forEach((key) => remove.run(key)),
      })
      db.exec('COMMIT')
      return result
    } catch (error) {
      if (db.inTransaction) db.exec('ROLLBACK')
      throw error
    }
  }
}

/** Two processes creating the table at once: PostgreSQL may answer one of them with a unique violation on its catalog; the table is there all the same. */
function ignoreConcurrentCreate(error: unknown): void {
  if ((error as { code?: string }).code !== '23505') throw error
}
