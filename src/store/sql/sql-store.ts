/**
 * The SQL stores' shared half, over a backend's primitives (sql-dialect.ts).
 * The store base owns tokens, repeats, values and retries; this owns, once
 * for postgres, mysql and sqlite:
 *
 *  - keys: checked against the key column before anything is written;
 *  - routing: each key to its table by a stable hash, one primitive call per
 *    table per batch (one statement per batch with the default tables: 1),
 *    keys sorted by their bytes so two batches lock shared rows in one order;
 *  - the schema: checked (or created) before the first statement, once per
 *    thread per database and prefix, and again if a table disappears;
 *  - the sweep: expired rows deleted in bounded statements in the background.
 */
import { ErrorCode, IdemError, errorText } from '../../errors.js'
import { jsonValues, StoreBase, type GroupClaim, type KeyGroup, type StoredRecord } from '../store-base.js'
import type { SqlConnection, SqlDialect, SqlSchema } from './sql-dialect.js'
import type { SqlStoreConfig } from './sql-options.js'
import { ensureSchema } from './sql-schema.js'
import { keyBytes, recordsTableName, tableIndexOf } from './sql-records.js'

/** The keys of one table in one call, sorted by their bytes. */
interface TableGroup extends KeyGroup {
  table: string
  keys: Buffer[]
}

/** A schema that was refused is checked again after this long, not on every batch. */
const REFUSED_SCHEMA_RECHECK_MS = 1_000

export class SqlStore extends StoreBase<TableGroup> {
  /** A pool spreads calls over connections: a later call may be applied first. */
  readonly ordered = false
  private sweepTimer: NodeJS.Timeout | undefined
  private sweepTable = 0
  private sweeping = false
  private closed = false

  constructor(
    protected readonly config: SqlStoreConfig,
    protected readonly dialect: SqlDialect,
  ) {
    super({ name: config.kind, retries: config.retries, retryBackoffMs: config.retryBackoffMs, maxResultBytes: config.maxResultBytes, values: jsonValues })
  }

  /** Connects and checks the schema now instead of on the first call (idem migrate, tests, a fail-fast start). */
  async open(): Promise<void> {
    await this.prepare()
  }

  /**
   * Groups keys by table, each group sorted by key bytes: two batches then
   * lock shared rows in the same order, which keeps them from deadlocking
   * each other.
   */
  protected group(keys: readonly string[], positions: readonly number[]): TableGroup[] {
    const { tables, tablePrefix } = this.config
    const bytes: Buffer[] = new Array(keys.length)
    const byTable = new Map<number, number[]>()
    for (const i of positions) {
      const key = keyBytes(keys[i])
      bytes[i] = key
      const t = tableIndexOf(key, tables)
      let list = byTable.get(t)
      if (list === undefined) byTable.set(t, (list = []))
      list.push(i)
    }
    const groups: TableGroup[] = []
    for (const [index, list] of byTable) {
      list.sort((a, b) => Buffer.compare(bytes[a], bytes[b]))
      groups.push({ table: recordsTableName(tablePrefix, index, tables), keys: list.map((i) => bytes[i]), positions: list })
    }
    return groups
  }

  protected claimGroup(g: TableGroup, _keys: readonly string[], fingerprints: readonly unknown[], token: string, leaseMs: number): Promise<GroupClaim> {
    return this.dialect.claim(g.table, g.keys, g.positions.map((i) => fingerprints[i] as string | null), token, leaseMs)
  }

  protected commitGroup(g: TableGroup, _keys: readonly string[], results: readonly unknown[] | undefined, token: string, ttlMs: number): Promise<Uint8Array> {
    return this.dialect.commit(g.table, g.keys, results === undefined ? undefined : g.positions.map((i) => results[i] as string | null), token, ttlMs)
  }

  protected releaseGroup(g: TableGroup, _keys: readonly string[], token: string): Promise<Uint8Array> {
    return this.dialect.release(g.table, g.keys, token)
  }

  protected renewGroup(g: TableGroup, _keys: readonly string[], token: string, leaseMs: number): Promise<Uint8Array> {
    return this.dialect.renew(g.table, g.keys, token, leaseMs)
  }

  protected markUnknownGroup(g: TableGroup, _keys: readonly string[], token: string, ttlMs: number): Promise<Uint8Array> {
    return this.dialect.markUnknown(g.table, g.keys, token, ttlMs)
  }

  protected resolveGroup(g: TableGroup, _keys: readonly string[], done: readonly boolean[], results: readonly unknown[] | undefined, ttlMs: number, token: string | undefined): Promise<Uint8Array> {
    return this.dialect.resolve(
      g.table,
      g.keys,
      g.positions.map((i) => done[i]),
      g.positions.map((i) => (results?.[i] as string | null | undefined) ?? null),
      ttlMs,
      token,
    )
  }

  protected inspectGroup(g: TableGroup): Promise<(StoredRecord | undefined)[]> {
    return this.dialect.inspect(g.table, g.keys)
  }

  protected forgetGroup(g: TableGroup): Promise<Uint8Array> {
    return this.dialect.forget(g.table, g.keys)
  }

  /**
   * A namespace's keys are the byte range [namespace NUL, namespace U+0001):
   * one range on the key column's index, deleted in statements of at most
   * sweepBatch rows, table by table, until a statement finds fewer.
   */
  protected async purgeNamespace(namespace: string): Promise<number> {
    const { tables, tablePrefix, sweepBatch } = this.config
    const from = Buffer.from(`${namespace}\0`, 'utf8')
    const to = Buffer.from(`${namespace}\u0001`, 'utf8')
    let removed = 0
    for (let index = 0; index < tables; index++) {
      const table = recordsTableName(tablePrefix, index, tables)
      let deleted: number
      do {
        deleted = await this.dialect.purge(table, from, to, sweepBatch)
        removed += deleted
      } while (deleted >= sweepBatch)
    }
    return removed
  }

  protected async closeBackend(): Promise<void> {
    this.closed = true
    if (this.sweepTimer !== undefined) clearTimeout(this.sweepTimer)
    await this.dialect.close()
  }

  protected override async prepare(): Promise<void> {
    if (this.closed) throw new IdemError(ErrorCode.STORE_FAILED, `the ${this.config.kind} store is closed`)
    await ensureSqlReady(this.config, this.dialect)
    if (this.sweepTimer === undefined && this.config.sweepIntervalMs > 0) this.scheduleSweep(this.config.sweepIntervalMs)
  }

  protected override permanent(error: unknown): IdemError | undefined {
    return this.dialect.permanent(error)
  }

  protected override onFailure(error: unknown): void {
    if (this.dialect.isMissingTable(error)) forgetSchema(this.config)
  }

  protected override errorText(error: unknown): string {
    return describeDriverError(error)
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

function checkedSchema(config: SqlStoreConfig, dialect: SqlConnection & SqlSchema): Promise<void> {
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
export async function ensureSqlReady(config: SqlStoreConfig, dialect: SqlConnection & SqlSchema): Promise<void> {
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
