/**
 * The PostgreSQL store (driver: pg). Each primitive is ONE statement per
 * table per batch: the batch travels as arrays (unnest), a data-modifying CTE
 * writes, and the outer SELECT answers every key in one aggregated row.
 * Leases and TTLs are on the server's clock (statement_timestamp()).
 *
 * Why the outer SELECT can trust what it reads: it sees the table as of the
 * statement's start, the CTE's writes excluded. A key the CTE wrote is
 * answered from the CTE's RETURNING; any other key was left alone because its
 * row was live (or taken by a concurrent statement after our snapshot), and
 * the snapshot row says which: DONE and UNKNOWN rows are final until they
 * expire (or, for UNKNOWN, until resolved), and anything else, or no row at
 * all, is answered IN_PROGRESS: retry later, never a duplicate and never a
 * second owner.
 */
import { ErrorCode, IdemError } from '../../errors.js'
import { ClaimCode } from '../store.js'
import { leaseLost, type ClaimAnswer, type ColumnTypes, type DialectRole, type RowRecord, type SchemaSnapshot, type SqlDialect, type TransactionEnd } from './sql-dialect.js'
import { LazyConnection } from './lazy-connection.js'
import { loadPg, type PgClientLike, type PgPoolLike, type PgQueryResult } from './sql-drivers.js'
import type { PostgresStoreConfig } from './sql-options.js'
import { KEY_COLUMN_BYTES, RowState, SCHEMA_VERSION } from './sql-records.js'
import { SqlStore } from './sql-store.js'

const q = (name: string): string => `"${name}"`
const ms = (param: string): string => `${param}::float8 * interval '1 millisecond'`
const NOW = 'statement_timestamp()'
const { IN_PROGRESS, DONE, UNKNOWN } = RowState

/** The statements of one records table, built once per table name. */
export function statementsFor(table: string) {
  const t = q(table)
  const live = `r.expires_at > ${NOW}`
  /**
   * The snapshot row of one input key, read only when the CTE `written` did
   * not touch it: one primary-key probe per key. As a plain join the planner,
   * which cannot estimate the unnest, hash-joins the whole table instead (a
   * scan per batch, growing with the table); LIMIT 1 keeps it from flattening
   * this LATERAL subquery back into such a join.
   */
  const rowOf = (written: string) =>
    `(SELECT state, token, fingerprint, result, expires_at FROM ${t} WHERE ${written}.idem_key IS NULL AND idem_key = input.k LIMIT 1)`
  return {
    /**
     * $1 keys (bytea[], sorted), $2 fingerprints (text[], JSON or NULL), $3 token, $4 lease ms.
     * Returns one row: codes (one digit per key, a ClaimCode: 0 claimed, 1 done,
     * 2 in progress, 4 unknown), then fingerprints, results and tokens of the
     * keys not claimed, in order (a token only for a live UNKNOWN row: the
     * episode a reconcile answer names; NULL otherwise). The DO UPDATE takes
     * over an expired row (lapsed lease, DONE or UNKNOWN past its TTL) and
     * re-leases a row this token already holds (a retried call owns its
     * claim); a live UNKNOWN row is never taken over.
     */
    claim: `
WITH input AS (
  SELECT k, f, i FROM unnest($1::bytea[], $2::text[]) WITH ORDINALITY AS t(k, f, i)
), claimed AS (
  INSERT INTO ${t} AS r (idem_key, state, token, fingerprint, result, expires_at)
  SELECT k, ${IN_PROGRESS}, $3, f, NULL, ${NOW} + ${ms('$4')} FROM input ORDER BY i
  ON CONFLICT (idem_key) DO UPDATE
    SET state = ${IN_PROGRESS}, token = excluded.token, fingerprint = excluded.fingerprint, result = NULL, expires_at = excluded.expires_at
    WHERE r.expires_at <= ${NOW} OR (r.state = ${IN_PROGRESS} AND r.token = excluded.token)
  RETURNING r.idem_key
)
SELECT
  string_agg(CASE WHEN c.idem_key IS NOT NULL THEN '${ClaimCode.CLAIMED}' WHEN r.state = ${DONE} AND ${live} THEN '${ClaimCode.DONE}' WHEN r.state = ${UNKNOWN} AND ${live} THEN '${ClaimCode.UNKNOWN}' ELSE '${ClaimCode.IN_PROGRESS}' END, '' ORDER BY input.i) AS codes,
  array_agg(r.fingerprint ORDER BY input.i) FILTER (WHERE c.idem_key IS NULL) AS fingerprints,
  array_agg(r.result ORDER BY input.i) FILTER (WHERE c.idem_key IS NULL) AS results,
  array_agg(CASE WHEN r.state = ${UNKNOWN} AND ${live} THEN r.token END ORDER BY input.i) FILTER (WHERE c.idem_key IS NULL) AS tokens
FROM input
LEFT JOIN claimed c ON c.idem_key = input.k
LEFT JOIN LATERAL ${rowOf('c')} r ON true`,

    /**
     * $1 keys, $2 results (text[]; NULL text in the variant without results), $3 token, $4 TTL ms.
     * Returns applied: '1' per key committed now, or DONE under this token already
     * (a retried commit whose first reply was lost), '0' when fenced.
     */
    commit: (withResults: boolean) => `
WITH input AS (
  ${withResults ? 'SELECT k, res, i FROM unnest($1::bytea[], $2::text[]) WITH ORDINALITY AS t(k, res, i)' : 'SELECT k, $2::text AS res, i FROM unnest($1::bytea[]) WITH ORDINALITY AS t(k, i)'}
), done AS (
  UPDATE ${t} AS r SET state = ${DONE}, result = input.res, expires_at = ${NOW} + ${ms('$4')}
  FROM input
  WHERE r.idem_key = input.k AND r.token = $3 AND r.state = ${IN_PROGRESS} AND ${live}
  RETURNING r.idem_key
)
SELECT string_agg(CASE WHEN d.idem_key IS NOT NULL OR (r.state = ${DONE} AND r.token = $3 AND ${live}) THEN '1' ELSE '0' END, '' ORDER BY input.i) AS applied
FROM input
LEFT JOIN done d ON d.idem_key = input.k
LEFT JOIN LATERAL ${rowOf('d')} r ON true`,

    /** $1 keys, $2 token. '1' = deleted, or no live row (absent is what a release wants); '0' = another owner's, a DONE or an UNKNOWN row. */
    release: `
WITH input AS (
  SELECT k, i FROM unnest($1::bytea[]) WITH ORDINALITY AS t(k, i)
), gone AS (
  DELETE FROM ${t} AS r USING input
  WHERE r.idem_key = input.k AND r.token = $2 AND r.state = ${IN_PROGRESS} AND ${live}
  RETURNING r.idem_key
)
SELECT string_agg(CASE WHEN g.idem_key IS NOT NULL OR r.state IS NULL OR r.expires_at <= ${NOW} THEN '1' ELSE '0' END, '' ORDER BY input.i) AS applied
FROM input
LEFT JOIN gone g ON g.idem_key = input.k
LEFT JOIN LATERAL ${rowOf('g')} r ON true`,

    /** $1 keys, $2 token, $3 lease ms. '1' = renewed, '0' = not our live lease any more. */
    renew: `
WITH input AS (
  SELECT k, i FROM unnest($1::bytea[]) WITH ORDINALITY AS t(k, i)
), renewed AS (
  UPDATE ${t} AS r SET expires_at = ${NOW} + ${ms('$3')}
  FROM input
  WHERE r.idem_key = input.k AND r.token = $2 AND r.state = ${IN_PROGRESS} AND ${live}
  RETURNING r.idem_key
)
SELECT string_agg(CASE WHEN n.idem_key IS NOT NULL THEN '1' ELSE '0' END, '' ORDER BY input.i) AS applied
FROM input LEFT JOIN renewed n ON n.idem_key = input.k`,

    /**
     * $1 keys, $2 token, $3 TTL ms. Returns applied: '1' per key marked UNKNOWN
     * now, or UNKNOWN under this token already (a retried call whose first
     * reply was lost), '0' when fenced. Fenced by the row, not by the lease:
     * an IN_PROGRESS row still naming this token is marked even when its
     * lease has lapsed, since nobody took it over (a claim would have written
     * its own token); leaving it claimable would let a redelivery repeat an
     * effect that may have happened. A claim racing this statement for such a
     * row waits for its lock: it then leaves the row alone (live again) and
     * answers IN_PROGRESS; a claim that got there first wrote its own token,
     * which this UPDATE re-reads and refuses. Token and fingerprint stay: the
     * UNKNOWN row still says whose run it was and what it was asked.
     */
    markUnknown: `
WITH input AS (
  SELECT k, i FROM unnest($1::bytea[]) WITH ORDINALITY AS t(k, i)
), marked AS (
  UPDATE ${t} AS r SET state = ${UNKNOWN}, result = NULL, expires_at = ${NOW} + ${ms('$3')}
  FROM input
  WHERE r.idem_key = input.k AND r.token = $2 AND r.state = ${IN_PROGRESS}
  RETURNING r.idem_key
)
SELECT string_agg(CASE WHEN m.idem_key IS NOT NULL OR (r.state = ${UNKNOWN} AND r.token = $2 AND ${live}) THEN '1' ELSE '0' END, '' ORDER BY input.i) AS applied
FROM input
LEFT JOIN marked m ON m.idem_key = input.k
LEFT JOIN LATERAL ${rowOf('m')} r ON true`,

    /**
     * $1 keys, $2 done (boolean[]), $3 results (text[]), $4 TTL ms, $5 the
     * token the rows were marked under, or NULL for any. A live UNKNOWN row
     * (under $5, when given) becomes DONE with its result, or is deleted; '1'
     * per key resolved, '0' for any other row (left as it was). A reconcile
     * hook's answer names the episode it was asked about ($5), so it never
     * resolves a later episode of the key marked under another token; an
     * operator's (idem keys resolve) names none.
     */
    resolve: `
WITH input AS (
  SELECT k, d, res, i FROM unnest($1::bytea[], $2::boolean[], $3::text[]) WITH ORDINALITY AS t(k, d, res, i)
), finished AS (
  UPDATE ${t} AS r SET state = ${DONE}, result = input.res, expires_at = ${NOW} + ${ms('$4')}
  FROM input
  WHERE r.idem_key = input.k AND input.d AND r.state = ${UNKNOWN} AND ${live} AND ($5::text IS NULL OR r.token = $5)
  RETURNING r.idem_key
), dropped AS (
  DELETE FROM ${t} AS r USING input
  WHERE r.idem_key = input.k AND NOT input.d AND r.state = ${UNKNOWN} AND ${live} AND ($5::text IS NULL OR r.token = $5)
  RETURNING r.idem_key
)
SELECT string_agg(CASE WHEN f.idem_key IS NOT NULL OR g.idem_key IS NOT NULL THEN '1' ELSE '0' END, '' ORDER BY input.i) AS applied
FROM input
LEFT JOIN finished f ON f.idem_key = input.k
LEFT JOIN dropped g ON g.idem_key = input.k`,

    /**
     * $1 limit. At most $1 expired rows, oldest first, skipping rows another
     * statement holds (a claim taking one over): bounded, and never waits.
     */
    sweep: `
WITH doomed AS (
  SELECT idem_key FROM ${t} WHERE expires_at < ${NOW} ORDER BY expires_at LIMIT $1 FOR UPDATE SKIP LOCKED
)
DELETE FROM ${t} AS r USING doomed WHERE r.idem_key = doomed.idem_key AND r.expires_at < ${NOW}`,

    /** $1 keys. The live rows, with the ms left on each. */
    inspect: `
SELECT idem_key, state, token, fingerprint, result, extract(epoch FROM expires_at - ${NOW}) * 1000 AS ttl
FROM ${t} WHERE idem_key = ANY($1::bytea[]) AND expires_at > ${NOW}`,

    /** $1 keys. Deletes every row of the keys, expired ones too; returns the keys whose row was live. */
    forget: `
WITH gone AS (DELETE FROM ${t} WHERE idem_key = ANY($1::bytea[]) RETURNING idem_key, expires_at > ${NOW} AS live)
SELECT idem_key FROM gone WHERE live`,

    /** $1 from, $2 to, $3 limit: at most $3 rows whose key is in [$1, $2). */
    purge: `
DELETE FROM ${t} WHERE idem_key IN (SELECT idem_key FROM ${t} WHERE idem_key >= $1 AND idem_key < $2 LIMIT $3)`,

    /** $1 key, $2 result, $3 token, $4 TTL ms: the fenced DONE write inside a handler's transaction. */
    done: `
UPDATE ${t} SET state = ${DONE}, result = $2, expires_at = ${NOW} + ${ms('$4')}
WHERE idem_key = $1 AND token = $3 AND state = ${IN_PROGRESS} AND expires_at > ${NOW}`,
  }
}

type Statements = ReturnType<typeof statementsFor>

const expectedColumns: ReadonlyMap<string, string> = new Map([
  ['idem_key', 'bytea'],
  ['state', 'smallint'],
  ['token', 'text'],
  ['fingerprint', 'text'],
  ['result', 'text'],
  ['expires_at', 'timestamp with time zone'],
])

function recordsDdl(table: string): string {
  return `
CREATE TABLE IF NOT EXISTS ${q(table)} (
  idem_key    bytea       NOT NULL PRIMARY KEY CHECK (octet_length(idem_key) BETWEEN 1 AND ${KEY_COLUMN_BYTES}),
  state       smallint    NOT NULL CHECK (state IN (${IN_PROGRESS}, ${DONE}, ${UNKNOWN})),
  token       text        NOT NULL,
  fingerprint text,
  result      text,
  expires_at  timestamptz NOT NULL
);
CREATE INDEX IF NOT EXISTS ${q(`${table}_expires_at`)} ON ${q(table)} (expires_at);`
}

export class PostgresDialect implements SqlDialect {
  readonly kind = 'postgres' as const
  readonly expectedColumns = expectedColumns
  private readonly connection: LazyConnection<PgPoolLike>
  private readonly statements = new Map<string, Statements>()
  /** The connection holding the schema lock while a schema check runs: its queries go there. */
  private schemaClient: PgClientLike | undefined

  constructor(
    private readonly config: PostgresStoreConfig,
    role: DialectRole,
  ) {
    this.connection = new LazyConnection(async () => {
      if (config.pool !== undefined) return config.pool
      const { Pool } = await loadPg()
      const pool = new Pool({
        connectionString: config.url,
        max: role === 'transactions' ? config.transactionPoolSize : config.poolSize,
        connectionTimeoutMillis: config.commandTimeoutMs,
        idleTimeoutMillis: 10_000,
        allowExitOnIdle: true,
        application_name: `idem ${role}`,
      })
      // An idle connection the server dropped is reported as an event; the next query reconnects.
      pool.on('error', () => {})
      return pool
    })
  }

  connect(): Promise<void> {
    return this.connection.connect()
  }

  private get pool(): PgPoolLike {
    return this.connection.value
  }

  async withSchemaLock<T>(fn: () => Promise<T>): Promise<T> {
    const client = await this.pool.connect()
    let broken: Error | undefined
    try {
      // Session-level, on a connection of its own: released by unlock, or by the server if this process dies.
      await client.query({ text: 'SELECT pg_advisory_lock(hashtext($1))', values: [`idem schema ${this.config.tablePrefix}`], query_timeout: this.config.commandTimeoutMs * 4 })
      this.schemaClient = client
      try {
        return await fn()
      } finally {
        this.schemaClient = undefined
        await client.query('SELECT pg_advisory_unlock(hashtext($1))', [`idem schema ${this.config.tablePrefix}`])
      }
    } catch (error) {
      broken = error as Error
      throw error
    } finally {
      client.release(broken)
    }
  }

  async readSchema(tableNames: readonly string[]): Promise<SchemaSnapshot> {
    const db = this.schemaClient ?? this.pool
    const { rows } = await db.query(
      'SELECT table_name, column_name, data_type FROM information_schema.columns WHERE table_schema = current_schema() AND table_name = ANY($1::text[])',
      [tableNames],
    )
    const tables = new Map<string, ColumnTypes>()
    for (const row of rows) {
      const name = row.table_name as string
      let columns = tables.get(name)
      if (columns === undefined) tables.set(name, (columns = new Map()))
      columns.set(row.column_name as string, row.data_type as string)
    }
    const metaTable = tableNames[tableNames.length - 1]
    let meta: Map<string, string> | undefined
    if (tables.has(metaTable)) {
      const found = await db.query(`SELECT name, value FROM ${q(metaTable)}`)
      meta = new Map(found.rows.map((row) => [String(row.name), String(row.value)]))
    }
    return { meta, tables }
  }

  async createSchema(recordTables: readonly string[], metaTable: string, meta: ReadonlyMap<string, string>): Promise<void> {
    const db = this.schemaClient ?? this.pool
    // One transaction: PostgreSQL's DDL is transactional, so no process ever sees half a schema.
    const ddl = [
      'BEGIN',
      `CREATE TABLE IF NOT EXISTS ${q(metaTable)} (name text PRIMARY KEY, value text NOT NULL)`,
      ...recordTables.map(recordsDdl),
      `INSERT INTO ${q(metaTable)} (name, value) VALUES ${[...meta].map(([name, value]) => `('${name}', '${value}')`).join(', ')} ON CONFLICT (name) DO NOTHING`,
      'COMMIT',
    ].join(';\n')
    try {
      await db.query(ddl)
    } catch (error) {
      await db.query('ROLLBACK').catch(() => {})
      throw error
    }
  }

  /**
   * Version 1 checked `state IN (1, 3)`. Each table's check is replaced under
   * the name PostgreSQL gave it (`<table>_state_check`, shortened when the
   * table's name is long, so it is read from the catalog rather than spelled
   * here), and the version written, in one transaction: whole or not at all.
   * ADD CONSTRAINT reads every row to validate it, holding the table's lock
   * meanwhile: on a large table, run `idem migrate` at a quiet moment.
   */
  async upgradeSchema(recordTables: readonly string[], metaTable: string): Promise<void> {
    const db = this.schemaClient ?? this.pool
    const { rows } = await db.query(
      `SELECT t.relname AS table_name, c.conname AS name
         FROM pg_constraint c
         JOIN pg_class t ON t.oid = c.conrelid
         JOIN pg_attribute a ON a.attrelid = t.oid AND a.attname = 'state'
        WHERE t.relnamespace = current_schema()::regnamespace AND t.relname = ANY($1::text[]) AND c.contype = 'c' AND c.conkey = ARRAY[a.attnum]`,
      [recordTables],
    )
    const checkOf = new Map(rows.map((row) => [String(row.table_name), String(row.name)]))
    const ddl = [
      'BEGIN',
      ...recordTables.map((table) => {
        const check = q(checkOf.get(table) ?? `${table}_state_check`)
        return `ALTER TABLE ${q(table)} DROP CONSTRAINT IF EXISTS ${check}, ADD CONSTRAINT ${check} CHECK (state IN (${IN_PROGRESS}, ${DONE}, ${UNKNOWN}))`
      }),
      `UPDATE ${q(metaTable)} SET value = '${SCHEMA_VERSION}' WHERE name = 'schema_version'`,
      'COMMIT',
    ].join(';\n')
    try {
      await db.query(ddl)
    } catch (error) {
      await db.query('ROLLBACK').catch(() => {})
      throw error
    }
  }

  async dropTables(tableNames: readonly string[]): Promise<void> {
    await this.pool.query(`DROP TABLE IF EXISTS ${tableNames.map(q).join(', ')}`)
  }

  async claim(table: string, keys: Buffer[], fingerprints: (string | null)[], token: string, leaseMs: number): Promise<ClaimAnswer> {
    const row = await this.one(this.statementsOf(table).claim, [keys, fingerprints, token, leaseMs])
    const codes = Uint8Array.from(row.codes as string, (c) => c.charCodeAt(0) - 0x30)
    const notClaimed = (row.fingerprints as (string | null)[] | null) ?? []
    const notClaimedResults = (row.results as (string | null)[] | null) ?? []
    const notClaimedTokens = (row.tokens as (string | null)[] | null) ?? []
    const answer: ClaimAnswer = { codes, fingerprints: new Array(keys.length).fill(null), results: new Array(keys.length).fill(null) }
    let next = 0
    for (let j = 0; j < codes.length; j++) {
      if (codes[j] === ClaimCode.CLAIMED) continue
      answer.fingerprints[j] = notClaimed[next]
      answer.results[j] = notClaimedResults[next]
      if (codes[j] === ClaimCode.UNKNOWN) (answer.tokens ??= new Array(keys.length).fill(null))[j] = notClaimedTokens[next]
      next++
    }
    return answer
  }

  async commit(table: string, keys: Buffer[], results: (string | null)[] | undefined, token: string, ttlMs: number): Promise<Uint8Array> {
    const s = this.statementsOf(table)
    const row = results === undefined ? await this.one(s.commit(false), [keys, null, token, ttlMs]) : await this.one(s.commit(true), [keys, results, token, ttlMs])
    return flags(row.applied)
  }

  async release(table: string, keys: Buffer[], token: string): Promise<Uint8Array> {
    return flags((await this.one(this.statementsOf(table).release, [keys, token])).applied)
  }

  async renew(table: string, keys: Buffer[], token: string, leaseMs: number): Promise<Uint8Array> {
    return flags((await this.one(this.statementsOf(table).renew, [keys, token, leaseMs])).applied)
  }

  async markUnknown(table: string, keys: Buffer[], token: string, ttlMs: number): Promise<Uint8Array> {
    return flags((await this.one(this.statementsOf(table).markUnknown, [keys, token, ttlMs])).applied)
  }

  async resolve(table: string, keys: Buffer[], done: boolean[], results: (string | null)[], ttlMs: number, token: string | undefined): Promise<Uint8Array> {
    return flags((await this.one(this.statementsOf(table).resolve, [keys, done, results, ttlMs, token ?? null])).applied)
  }

  async inspect(table: string, keys: Buffer[]): Promise<(RowRecord | undefined)[]> {
    const { rows } = await this.query(this.statementsOf(table).inspect, [keys])
    const byKey = new Map(rows.map((row) => [(row.idem_key as Buffer).toString('latin1'), row]))
    return keys.map((key) => {
      const row = byKey.get(key.toString('latin1'))
      if (row === undefined) return undefined
      return { done: Number(row.state) === DONE, unknown: Number(row.state) === UNKNOWN, token: String(row.token), fingerprint: row.fingerprint as string | null, result: row.result as string | null, expiresInMs: Math.max(0, Math.round(Number(row.ttl))) }
    })
  }

  async forget(table: string, keys: Buffer[]): Promise<Uint8Array> {
    const { rows } = await this.query(this.statementsOf(table).forget, [keys])
    const live = new Set(rows.map((row) => (row.idem_key as Buffer).toString('latin1')))
    return Uint8Array.from(keys, (key) => (live.has(key.toString('latin1')) ? 1 : 0))
  }

  async purge(table: string, from: Buffer, to: Buffer, limit: number): Promise<number> {
    return (await this.query(this.statementsOf(table).purge, [from, to, limit])).rowCount ?? 0
  }

  async sweep(table: string, limit: number): Promise<number> {
    const result = await this.query(this.statementsOf(table).sweep, [limit])
    return result.rowCount ?? 0
  }

  async transaction<R>(work: (tx: unknown) => R | Promise<R>, finish: (value: R) => TransactionEnd): Promise<R> {
    const client = await this.pool.connect()
    let broken: Error | undefined
    try {
      await client.query('BEGIN')
      try {
        const value = await work(client)
        const { done, positions, positionsTable } = finish(value)
        const timeout = this.config.commandTimeoutMs
        if (done !== undefined) {
          const updated = await client.query({ text: this.statementsOf(done.table).done, values: [done.key, done.result, done.token, done.ttlMs], query_timeout: timeout })
          if (updated.rowCount !== 1) throw leaseLost(done)
        }
        for (const { source, partition, position } of positions) {
          await client.query({
            text: `INSERT INTO ${q(positionsTable)} (source, part, position, updated_at) VALUES ($1, $2, $3, ${NOW})
                   ON CONFLICT (source, part) DO UPDATE SET position = EXCLUDED.position, updated_at = EXCLUDED.updated_at`,
            values: [source, partition, position],
            query_timeout: timeout,
          })
        }
        await client.query('COMMIT')
        return value
      } catch (error) {
        await client.query('ROLLBACK').catch((rollbackError: Error) => (broken = rollbackError))
        throw error
      }
    } finally {
      client.release(broken)
    }
  }

  async createPositionsTable(table: string): Promise<void> {
    await this.query(`CREATE TABLE IF NOT EXISTS ${q(table)} (source text NOT NULL, part text NOT NULL, position text NOT NULL, updated_at timestamptz NOT NULL, PRIMARY KEY (source, part))`, [])
  }

  async readPosition(table: string, source: string, partition: string): Promise<string | undefined> {
    const row = await this.one(`SELECT position FROM ${q(table)} WHERE source = $1 AND part = $2`, [source, partition])
    return row === undefined ? undefined : (row.position as string)
  }

  permanent(error: unknown): IdemError | undefined {
    const message = (error as Error | null)?.message ?? ''
    if (/Cannot use a pool after calling end on the pool|Client was closed and is not queryable/.test(message)) {
      return new IdemError(ErrorCode.STORE_FAILED, `the pg pool given as store.pool has been ended (${message}); give the store an open pool`, { cause: error })
    }
    return undefined
  }

  isMissingTable(error: unknown): boolean {
    return (error as { code?: string } | null)?.code === '42P01'
  }

  async close(): Promise<void> {
    await this.connection.close((pool) => (pool === this.config.pool ? undefined : pool.end()))
  }

  private statementsOf(table: string): Statements {
    let s = this.statements.get(table)
    if (s === undefined) this.statements.set(table, (s = statementsFor(table)))
    return s
  }

  private query(text: string, values: unknown[]): Promise<PgQueryResult> {
    return this.pool.query({ text, values, query_timeout: this.config.commandTimeoutMs })
  }

  private async one(text: string, values: unknown[]): Promise<Record<string, unknown>> {
    return (await this.query(text, values)).rows[0]
  }
}

/** '1'/'0' per key → 1/0. */
function flags(applied: unknown): Uint8Array {
  return Uint8Array.from(applied as string, (c) => (c === '1' ? 1 : 0))
}

/** The postgres store: the shared SQL semantics over PostgresDialect. */
export class PostgresStore extends SqlStore {
  constructor(config: PostgresStoreConfig) {
    super(config, new PostgresDialect(config, 'store'))
  }
}
