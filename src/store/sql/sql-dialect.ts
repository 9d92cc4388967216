/**
 * What each SQL backend writes: its primitives, one statement (or one local
 * transaction) per table per batch. Everything else (keys, repeats, routing,
 * results, retries, the schema decision, the sweep) is owned once by
 * sql-store.ts and sql-schema.ts, so the three stores cannot drift apart.
 *
 * Every primitive takes the keys of ONE table, unique and sorted by their
 * bytes (so two batches lock shared rows in the same order, and a deadlock
 * between them cannot happen on a server that locks in index order), and
 * answers per key in that order. Primitives run against the table's row:
 *
 *   idem_key     the store key's UTF-8 bytes (sql-records.ts)
 *   state        1 = IN_PROGRESS, 3 = DONE, 4 = UNKNOWN (KeyState numbers)
 *   token        owner token of the claim that wrote the row; kept when DONE
 *   fingerprint  JSON text, NULL for none
 *   result       JSON text, NULL for none
 *   expires_at   lease end while in progress, TTL end once done or unknown, on the
 *                database's clock (SQLite: the process clock, in ms)
 *
 * A row whose expires_at has passed is absent, whatever its state (the
 * stateOf rule of record-state.ts, written in SQL by each backend).
 */
import { ErrorCode, IdemError } from '../../errors.js'
import type { SqlKind } from './sql-options.js'

/** What a claim found for each key of one table. */
export interface ClaimAnswer {
  /** ClaimCode.CLAIMED, DONE, IN_PROGRESS or UNKNOWN, per key. */
  codes: Uint8Array
  /** For DONE, IN_PROGRESS and UNKNOWN: the stored fingerprint's JSON, or null. */
  fingerprints: (string | null)[]
  /** For DONE: the stored result's JSON, or null. */
  results: (string | null)[]
  /** For UNKNOWN: the row's token (the claim that was marked); may be absent when no key is UNKNOWN. */
  tokens?: (string | null)[]
}

/** The fenced write that makes a key DONE inside a handler's transaction. */
export interface DoneRecord {
  table: string
  key: Buffer
  token: string
  result: string | null
  ttlMs: number
}

/** A consumer position a handler's work saved (`savePosition`), written in its transaction after the DONE record. */
export interface SavedPosition {
  source: string
  partition: string
  position: string
}

/** What a handler's transaction writes after its work: the fenced DONE record (none for a run without a claim) and the positions its work saved. */
export interface TransactionEnd {
  done: DoneRecord | undefined
  positions: readonly SavedPosition[]
  /** The positions table (`<tablePrefix>positions`). */
  positionsTable: string
}

/** A column as the catalog reports it, normalised by the backend (e.g. 'varbinary(1024)'). */
export type ColumnTypes = Map<string, string>

export interface SchemaSnapshot {
  /** The meta table's name → value rows, or undefined when it does not exist. */
  meta: Map<string, string> | undefined
  /** Per existing table (of the names asked for): its columns. */
  tables: Map<string, ColumnTypes>
}

/** A record as the inspect primitive reads it, values as the row holds them. */
export interface RowRecord {
  done: boolean
  /** state 4 (done is false). */
  unknown?: boolean
  token: string
  fingerprint: string | null
  result: string | null
  expiresInMs: number
}

/** The backend's connection: opened lazily (lazy-connection.ts), and how its failures read. */
export interface SqlConnection {
  readonly kind: SqlKind
  /** Loads the driver and opens the pool or database (once); throws IdemError for a permanent problem. */
  connect(): Promise<void>
  /** A failure that retrying cannot fix (a pool its owner ended), as the error to report now. */
  permanent(error: unknown): IdemError | undefined
  /** The statement failed because a table is missing (dropped under a running store): check the schema again. */
  isMissingTable(error: unknown): boolean
  close(): Promise<void>
}

/** The record primitives: one statement (or one local transaction) per table per batch. */
export interface SqlRecords {
  /**
   * absent or expired → IN_PROGRESS(token, lease); IN_PROGRESS under this same
   * token → lease renewed, CLAIMED (a retried call owns its own claim); DONE →
   * DONE with fingerprint and result; UNKNOWN → UNKNOWN with fingerprint;
   * another live owner → IN_PROGRESS.
   */
  claim(table: string, keys: Buffer[], fingerprints: (string | null)[], token: string, leaseMs: number): Promise<ClaimAnswer>
  /** IN_PROGRESS(token), live → DONE for ttl. 1 = committed now or earlier by this token, 0 = fenced. */
  commit(table: string, keys: Buffer[], results: (string | null)[] | undefined, token: string, ttlMs: number): Promise<Uint8Array>
  /** IN_PROGRESS(token), live → deleted. 1 = deleted, or absent/expired already; 0 = someone else's live row. */
  release(table: string, keys: Buffer[], token: string): Promise<Uint8Array>
  /** IN_PROGRESS(token), live → lease extended. 1 = renewed, 0 = lost. */
  renew(table: string, keys: Buffer[], token: string, leaseMs: number): Promise<Uint8Array>
  /**
   * IN_PROGRESS(token), live or expired (a lapsed lease nobody took over: the
   * row still names this token) → UNKNOWN, expires_at now + ttl. 1 = marked
   * now or UNKNOWN under this token already, 0 = fenced.
   */
  markUnknown(table: string, keys: Buffer[], token: string, ttlMs: number): Promise<Uint8Array>
  /**
   * Live UNKNOWN (with this token, when one is given) → DONE (done[j],
   * result[j], expires_at now + ttl) or deleted. 1 = resolved, 0 = not such a
   * row: untouched.
   */
  resolve(table: string, keys: Buffer[], done: boolean[], results: (string | null)[], ttlMs: number, token: string | undefined): Promise<Uint8Array>
  /** The live row of each key (undefined for none, or an expired one). */
  inspect(table: string, keys: Buffer[]): Promise<(RowRecord | undefined)[]>
  /** Deletes each key's row whatever its state. 1 = a live row was deleted, 0 = none was there. */
  forget(table: string, keys: Buffer[]): Promise<Uint8Array>
  /** Deletes at most `limit` rows (any state, expired too) whose key is in [from, to), in one statement; returns how many. */
  purge(table: string, from: Buffer, to: Buffer, limit: number): Promise<number>
  /** Deletes at most `limit` expired rows in one statement; returns how many. */
  sweep(table: string, limit: number): Promise<number>
  /**
   * Runs `work` in one database transaction on one connection, then the fenced
   * UPDATE to DONE that `finish` describes (none for a run without a claim),
   * then the upsert of each saved position, then COMMIT. If the UPDATE matches
   * no row, the transaction is rolled back and LEASE_LOST thrown: the business
   * writes, the DONE record and the positions commit together or not at all.
   */
  transaction<R>(work: (tx: unknown) => R | Promise<R>, finish: (value: R) => TransactionEnd): Promise<R>
  /** Creates the positions table if it does not exist (one statement, outside any transaction: MySQL commits around DDL). */
  createPositionsTable(table: string): Promise<void>
  /** The position saved for (source, partition), or undefined. */
  readPosition(table: string, source: string, partition: string): Promise<string | undefined>
}

/** The schema primitives, used by sql-schema.ts (create, check or refuse) and `idem migrate`. */
export interface SqlSchema {
  /** The columns a records table has when this backend created it. */
  readonly expectedColumns: ReadonlyMap<string, string>
  /** Runs fn holding a lock that serialises schema checks and creation across processes. */
  withSchemaLock<T>(fn: () => Promise<T>): Promise<T>
  readSchema(tableNames: readonly string[]): Promise<SchemaSnapshot>
  /**
   * Creates the meta table, the records tables with their expiry index, and
   * then the meta rows, in that order (idempotent): without transactional DDL,
   * a crash part way leaves an empty meta table, which says "ours, unfinished".
   */
  createSchema(recordTables: readonly string[], metaTable: string, meta: ReadonlyMap<string, string>): Promise<void>
  /**
   * Brings version-1 tables (no state 4) to SCHEMA_VERSION, rows kept, and
   * writes the new schema_version last. Runs under the schema lock; each
   * backend says how it stays whole if it dies half way.
   */
  upgradeSchema(recordTables: readonly string[], metaTable: string): Promise<void>
  dropTables(tableNames: readonly string[]): Promise<void>
}

/** A backend: its connection, its record primitives and its schema primitives. */
export type SqlDialect = SqlConnection & SqlRecords & SqlSchema

/** Who a dialect instance serves: a shard's store (small pool), or the transaction helper (handler transactions). */
export type DialectRole = 'store' | 'transactions'

/** The fenced DONE write of a handler's transaction matched no row: the lease was lost, so its writes were rolled back. */
export function leaseLost(done: DoneRecord): IdemError {
  const key = done.key.toString('utf8')
  return new IdemError(
    ErrorCode.LEASE_LOST,
    `LEASE_LOST: the claim on key ${JSON.stringify(key)} (token ${done.token}) is no longer held, so the transaction was rolled back and none of its writes happened; a redelivery runs it again`,
    { key },
  )
}
