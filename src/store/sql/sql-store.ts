import { setTimeout as sleep } from 'node:timers/promises'
/**
 * The SQL stores' shared half: the DedupStore contract over a backend's
 * primitives (sql-dialect.ts). It owns, once for postgres, mysql and sqlite:
 *
 *  - keys: validated against the key column before anything is written;
 *    a key twice in one claim is a REPEAT, decided after its first copy;
 *  - routing: each key to its table by a stable hash, one primitive call per
 *    table per batch (one statement per batch with the default tables: 1);
 *  - results: JSON under maxResultBytes, or the CommitCode saying why not;
 *  - failures: bounded retries with doubling backoff, then IdemError
 *    STORE_FAILED (the actor turns it into in-flight verdicts: fail closed);
 *    a failure no retry can fix (a closed pool, a schema it does not know)
 *    is reported at once with its own code;
 *  - the schema: checked (or created) before the first statement, once per
 *    thread per database and prefix, and again if a table disappears;
 *  - the sweep: expired rows deleted in bounded statements in the background.
 */
import { ErrorCode, IdemError, errorText } from '../../errors.js'
import { ClaimCode, CommitCode, type ClaimReplies, type DedupStore, type StoreHealth } from '../store.js'
import type { SqlDialect } from './sql-dialect.js'
import type { SqlStoreConfig } from './sql-options.js'
import { ensureSchema } from './sql-schema.js'
import { checkToken, decodeFingerprint, decodeResult, encodeFingerprint, keyBytes, recordsTableName, tableIndexOf } from './sql-records.js'
import { encodeResult } from '../result-json.js'

/** The keys of one table in one call: their bytes sorted, and where each came from in the batch. */
interface TableGroup {
  table: string
  index: number
  keys: Buffer[]
  positions: number[]
}

/** A schema that was refused is checked again after this long, not on every batch. */
const REFUSED_SCHEMA_RECHECK_MS = 1_000

export class SqlStore implements DedupStore {
  readonly health: StoreHealth = { retries: 0, failures: 0 }
  private sweepTimer: NodeJS.Timeout | undefined
  private sweepTable = 0
  private sweeping = false
  private closed = false

  constructor(
    protected readonly config: SqlStoreConfig,
    protected readonly dialect: SqlDialect,
  ) {}

  async claim(keys: readonly string[], fingerprints: readonly (string | undefined)[], token: string, leaseMs: number): Promise<ClaimReplies> {
    checkToken(token)
    const n = keys.length
    const codes = new Uint8Array(n)
    const storedFingerprints: (string | undefined)[] = new Array(n)
    const results: unknown[] = new Array(n)
    // Only the first copy of a key is claimed; later copies are REPEATs, decided after it settles.
    const firsts = new Map<string, number>()
    const bytes: Buffer[] = new Array(n)
    for (let i = 0; i < n; i++) {
      if (firsts.has(keys[i])) codes[i] = ClaimCode.REPEAT
      else {
        firsts.set(keys[i], i)
        bytes[i] = keyBytes(keys[i])
      }
    }
    const groups = this.group(bytes, [...firsts.values()])
    const answers = await this.call('claim', () =>
      Promise.all(groups.map((g) => this.dialect.claim(g.table, g.keys, g.positions.map((i) => encodeFingerprint(fingerprints[i])), token, leaseMs))),
    )
    groups.forEach((g, k) => {
      const answer = answers[k]
      g.positions.forEach((i, j) => {
        const code = answer.codes[j] as ClaimCode
        codes[i] = code
        if (code === ClaimCode.CLAIMED) return
        storedFingerprints[i] = decodeFingerprint(answer.fingerprints[j])
        if (code === ClaimCode.DONE) results[i] = decodeResult(answer.results[j])
      })
    })
    return { codes, fingerprints: storedFingerprints, results }
  }

  async commit(keys: readonly string[], results: readonly unknown[] | undefined, token: string, ttlMs: number): Promise<Uint8Array> {
    checkToken(token)
    const n = keys.length
    const kept = new Uint8Array(n).fill(CommitCode.COMMITTED)
    const encoded: (string | null)[] | undefined = results === undefined ? undefined : new Array(n)
    if (encoded !== undefined) {
      for (let i = 0; i < n; i++) {
        const json = encodeResult(results![i], this.config.maxResultBytes)
        if (typeof json === 'number') {
          kept[i] = json
          encoded[i] = null
        } else encoded[i] = json
      }
    }
    const groups = this.group(keys.map(keyBytes))
    const applied = await this.call('commit', () =>
      Promise.all(groups.map((g) => this.dialect.commit(g.table, g.keys, encoded === undefined ? undefined : g.positions.map((i) => encoded[i]), token, ttlMs))),
    )
    return this.perKey(n, groups, applied, (i, ok) => (ok ? kept[i] : CommitCode.REFUSED))
  }

  async release(keys: readonly string[], token: string): Promise<Uint8Array> {
    checkToken(token)
    const groups = this.group(keys.map(keyBytes))
    const applied = await this.call('release', () => Promise.all(groups.map((g) => this.dialect.release(g.table, g.keys, token))))
    return this.perKey(keys.length, groups, applied, (_, ok) => Number(ok))
  }

  async renew(keys: readonly string[], token: string, leaseMs: number): Promise<Uint8Array> {
    checkToken(token)
    const groups = this.group(keys.map(keyBytes))
    const applied = await this.call('renew', () => Promise.all(groups.map((g) => this.dialect.renew(g.table, g.keys, token, leaseMs))))
    return this.perKey(keys.length, groups, applied, (_, ok) => Number(ok))
  }

  async close(): Promise<void> {
    this.closed = true
    if (this.sweepTimer !== undefined) clearTimeout(this.sweepTimer)
    await this.dialect.close()
  }

  /** Connects and checks the schema now instead of on the first call (idem migrate, tests, a fail-fast start). */
  async open(): Promise<void> {
    await this.ensureOpen()
  }

  /**
   * Groups keys (positions into `bytes`; all of them by default) by table,
   * each group sorted by key bytes: two batches then lock shared rows in the
   * same order, which keeps them from deadlocking each other.
   */
  private group(bytes: Buffer[], positions?: number[]): TableGroup[] {
    const { tables, tablePrefix } = this.config
    const byTable = new Map<number, number[]>()
    const each = positions ?? bytes.map((_, i) => i)
    for (const i of each) {
      const t = tableIndexOf(bytes[i], tables)
      let list = byTable.get(t)
      if (list === undefined) byTable.set(t, (list = []))
      list.push(i)
    }
    const groups: TableGroup[] = []
    for (const [index, list] of byTable) {
      list.sort((a, b) => Buffer.compare(bytes[a], bytes[b]))
      groups.push({ table: recordsTableName(tablePrefix, index, tables), index, keys: list.map((i) => bytes[i]), positions: list })
    }
    return groups
  }

  private perKey(n: number, groups: TableGroup[], answers: Uint8Array[], code: (i: number, applied: boolean) => number): Uint8Array {
    const out = new Uint8Array(n)
    groups.forEach((g, k) => g.positions.forEach((i, j) => (out[i] = code(i, answers[k][j] === 1))))
    return out
  }

  /**
   * Runs one operation, retrying the whole of it on failure: every primitive
   * is safe to repeat under the same token (a claim finds its own rows and
   * owns them, a commit finds its own DONE rows and answers committed), so an
   * ambiguous failure (a timeout after the server applied it) is harmless.
   */
  private async call<T>(operation: string, run: () => Promise<T>): Promise<T> {
    const { retries, retryBackoffMs } = this.config
    for (let attempt = 0; ; attempt++) {
      try {
        await this.ensureOpen()
        return await run()
      } catch (error) {
        const permanent = error instanceof IdemError ? error : this.dialect.permanent(error)
        if (permanent !== undefined) {
          this.health.failures++
          throw permanent
        }
        if (this.dialect.isMissingTable(error)) forgetSchema(this.config)
        if (attempt >= retries) {
          this.health.failures++
          throw new IdemError(ErrorCode.STORE_FAILED, `${this.config.kind} ${operation} failed after ${attempt + 1} attempt(s): ${describeDriverError(error)}`, { cause: error })
        }
        this.health.retries++
        await sleep(retryBackoffMs * 2 ** attempt)
      }
    }
  }

  private async ensureOpen(): Promise<void> {
    if (this.closed) throw new IdemError(ErrorCode.STORE_FAILED, `the ${this.config.kind} store is closed`)
    await ensureSqlReady(this.config, this.dialect)
    if (this.sweepTimer === undefined && this.config.sweepIntervalMs > 0) this.scheduleSweep(this.config.sweepIntervalMs)
  }

  /**
   * One bounded DELETE per tick, tables in turn; a full one means more is
   * waiting, so the next tick comes sooner. Jittered, so the stores of many
   * shards and processes do not all sweep at the same moment. Never holds the
   * process open, and a failed sweep is simply tried at the next tick.
   */
  private scheduleSweep(ms: number): void {
    if (this.closed) return
    this.sweepTimer = setTimeout(() => void this.sweepOnce(), Math.round(ms * (0.5 + Math.random())))
    this.sweepTimer.unref()
  }

  /** Runs one sweep statement now; returns how many rows it deleted. */
  async sweepOnce(): Promise<number> {
    if (this.sweeping || this.closed) return 0
    this.sweeping = true
    const { tables, tablePrefix, sweepBatch, sweepIntervalMs } = this.config
    let deleted = 0
    try {
      const table = recordsTableName(tablePrefix, this.sweepTable, tables)
      this.sweepTable = (this.sweepTable + 1) % tables
      deleted = await this.dialect.sweep(table, sweepBatch)
    } catch {
      // The next tick tries again; expired rows are already treated as absent.
    } finally {
      this.sweeping = false
    }
    if (sweepIntervalMs > 0) this.scheduleSweep(deleted >= sweepBatch ? Math.max(50, sweepIntervalMs / 20) : sweepIntervalMs)
    return deleted
  }
}

/**
 * Schema checks done in this thread, by database and prefix: the stores of
 * every shard share one check instead of each repeating it. A refused schema
 * is kept for a moment, then checked again (someone may run idem migrate).
 */
const checkedByName = new Map<string, Promise<void>>()
const checkedByObject = new WeakMap<object, Map<string, Promise<void>>>()

function schemaSlot(config: SqlStoreConfig): { map: Map<string, Promise<void>>; key: string } {
  const layout = `${config.tablePrefix}|${config.tables}|${config.createTables}`
  const owned = config.kind === 'sqlite' ? config.database : config.pool
  if (owned !== undefined) {
    let map = checkedByObject.get(owned)
    if (map === undefined) checkedByObject.set(owned, (map = new Map()))
    return { map, key: layout }
  }
  return { map: checkedByName, key: `${config.kind}|${config.kind === 'sqlite' ? config.path : config.url}|${layout}` }
}

function checkedSchema(config: SqlStoreConfig, dialect: SqlDialect): Promise<void> {
  const { map, key } = schemaSlot(config)
  let check = map.get(key)
  if (check === undefined) {
    check = ensureSchema(dialect, config).then(() => undefined)
    map.set(key, check)
    check.catch((error: unknown) => {
      const refused = error instanceof IdemError && error.code === ErrorCode.SCHEMA_MISMATCH
      if (refused) setTimeout(() => map.get(key) === check && map.delete(key), REFUSED_SCHEMA_RECHECK_MS).unref()
      else if (map.get(key) === check) map.delete(key)
    })
  }
  return check
}

/** Connects a dialect and makes sure its schema was checked (or created) in this thread. */
export async function ensureSqlReady(config: SqlStoreConfig, dialect: SqlDialect): Promise<void> {
  await dialect.connect()
  await checkedSchema(config, dialect)
}

function forgetSchema(config: SqlStoreConfig): void {
  const { map, key } = schemaSlot(config)
  map.delete(key)
}

/** A driver error with its server code, when it has one (e.g. "ECONNREFUSED", "40P01", "ER_LOCK_DEADLOCK"). */
export function describeDriverError(error: unknown): string {
  const code = (error as { code?: unknown } | null)?.code
  // Node reports a refused connection to every address of a host name (::1 and 127.0.0.1) as an AggregateError with no message.
  const inner = error instanceof AggregateError ? error.errors.map((e) => errorText(e)).join('; ') : ''
  const message = errorText(error) || inner || (error as Error)?.constructor?.name || 'unknown error'
  return typeof code === 'string' && code.length > 0 && !message.includes(code) ? `${message} (${code})` : message
}
