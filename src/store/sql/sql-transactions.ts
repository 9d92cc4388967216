/**
 * The transaction helper: a handler whose business writes and whose DONE
 * record commit in ONE database transaction, so a crash anywhere leaves both
 * or neither (DESIGN.md §4.2: the window between effect and commit, closed).
 *
 * How a message goes through it:
 *
 *  1. The engine's actor claims the key in its own short statement: IN_PROGRESS
 *     under the batch's token, visible at once, so a second consumer sees the
 *     key in flight instead of running it too.
 *  2. The handler runs `work(tx, message)` inside BEGIN … COMMIT on one
 *     connection. Before COMMIT, the fenced UPDATE marks the key DONE — only
 *     if the row is still IN_PROGRESS under this run's token (the handler
 *     context's claim) with a live lease.
 *  3. If that UPDATE matches no row, the lease was lost (it lapsed and another
 *     owner may be running the key): the whole transaction rolls back, the
 *     business writes with it, and the handler throws LEASE_LOST. The actor
 *     releases its (lost) claim and a redelivery runs the message again.
 *  4. Otherwise COMMIT writes both. The actor's own commit afterwards finds
 *     the key DONE under its token and answers committed.
 *
 * A crash before COMMIT rolls back everything (the server drops the
 * connection's transaction); the claim's lease lapses and a redelivery runs
 * it. A crash after COMMIT leaves the key DONE: a redelivery is a duplicate.
 * A lost COMMIT reply is settled by the same rule: DONE or not, never half.
 */
import { systemClock, type Clock } from '../../clock.js'
import { defaults as engineDefaults, MAX_DURATION_MS } from '../../config.js'
import type { Handler, HandlerContext, Message } from '../../message.js'
import { ensureSqlReady } from './sql-store.js'
import type { DoneRecord, SavedPosition, SqlDialect, TransactionEnd } from './sql-dialect.js'
import { isSqlKind, resolveSqlStore, SQL_KINDS, type SqlStoreConfig, type SqlStoreOptions } from './sql-options.js'
import { keyBytes, positionsTableName, recordsTableName, tableIndexOf } from './sql-records.js'
import { ErrorCode, IdemError } from '../../errors.js'
import { encodeResult } from '../record-codec.js'
import { fieldsOf, OptionReader, quotedChoices } from '../../validation.js'
import { createSqlDialect } from './sql-backends.js'

/**
 * The business work of one message, run inside the transaction. `tx` is the
 * driver's own connection, in the transaction: a pg `PoolClient`, a mysql2
 * promise `PoolConnection`, or the better-sqlite3 `Database` (sqlite: `work`
 * must be synchronous, as better-sqlite3 is). Its return value is the
 * handler's result, kept with the DONE record.
 */
export type TransactionWork<P = unknown, R = unknown, Tx = any> = (tx: Tx, message: Message<P>, tools: TransactionTools) => R | Promise<R>

/** What the work of a transaction can write besides its own statements. */
export interface TransactionTools {
  /**
   * Saves a consumer's position (a stream entry id, an offset) for
   * (source, partition): written in this transaction after the DONE record,
   * so it commits with the business writes or not at all. Read it back with
   * positionOf. Call it before the work returns (TRANSACTION_ENDED after).
   */
  savePosition(source: string, partition: string | number, position: string): void
}

/** The longest source, partition or position kept, in UTF-8 bytes (MySQL's VARCHAR(255) holds it in any character set). */
const MAX_POSITION_BYTES = 255

/** A source, partition or position as it is stored, or INVALID_POSITION naming what is wrong. */
export function positionPart(name: 'source' | 'partition' | 'position', value: unknown): string {
  const text = name === 'partition' && Number.isSafeInteger(value) && (value as number) >= 0 ? String(value) : value
  const problem =
    typeof text !== 'string'
      ? `must be a string${name === 'partition' ? ' or a non-negative integer' : ''}, got ${value === null ? 'null' : typeof value}`
      : text === ''
        ? 'must not be empty'
        : Buffer.byteLength(text) > MAX_POSITION_BYTES
          ? `is ${Buffer.byteLength(text)} UTF-8 bytes, over ${MAX_POSITION_BYTES}`
          : !text.isWellFormed() || text.includes('\0')
            ? 'holds a lone surrogate or U+0000'
            : undefined
  if (problem !== undefined) throw new IdemError(ErrorCode.INVALID_POSITION, `the position's ${name} ${problem}`)
  return text as string
}

export interface SqlTransactionOptions {
  /** The engine's store options (the same object): the helper writes where the store reads. */
  store: SqlStoreOptions
  /** TTL of the DONE record, as the engine's ttlMs. @default 86_400_000 */
  ttlMs?: number
  /** Keep the result with the DONE record, as the engine's keepResults. @default true */
  keepResults?: boolean
}

export class SqlTransactions {
  private readonly dialect: SqlDialect
  private positionsCreated: Promise<void> | undefined

  constructor(
    private readonly config: SqlStoreConfig,
    private readonly ttlMs: number,
    private readonly keepResults: boolean,
    clock: Clock = systemClock,
  ) {
    this.dialect = createSqlDialect(config, 'transactions', clock)
  }

  /** A handler for engine.process/processBatch (or a transport) that runs `work` transactionally. */
  handler<P = unknown, R = unknown, Tx = any>(work: TransactionWork<P, R, Tx>): Handler<P, R> {
    return (message, context) => this.run(message, context, work)
  }

  /**
   * Runs `work` in a transaction that also marks `context.claim` DONE. Without
   * a claim (a shadow-rollout run of a duplicate) it runs `work` in a plain
   * transaction and writes no record.
   */
  async run<P, R, Tx>(message: Message<P>, context: HandlerContext, work: TransactionWork<P, R, Tx>): Promise<R> {
    await this.ready()
    const claim = context?.claim
    const done = claim === undefined ? undefined : this.doneRecordOf(claim.storeKey, claim.token)
    const positions: SavedPosition[] = []
    let ended = false
    const tools: TransactionTools = {
      savePosition: (source, partition, position) => {
        if (ended) throw new IdemError(ErrorCode.TRANSACTION_ENDED, 'savePosition was called after the work of its transaction returned: call it (and await it, for async work) before returning, so the position commits with the work')
        positions.push({ source: positionPart('source', source), partition: positionPart('partition', partition), position: positionPart('position', position) })
      },
    }
    try {
      return await this.dialect.transaction(
        (tx) => work(tx as Tx, message, tools),
        (value): TransactionEnd => {
          ended = true
          const end = { done: undefined as DoneRecord | undefined, positions, positionsTable: positionsTableName(this.config.tablePrefix) }
          if (done === undefined) return end
          const encoded = this.keepResults ? encodeResult(value, this.config.maxResultBytes) : null
          // A result over the cap, or one JSON cannot hold, is not kept (the engine reports which); the key is DONE all the same.
          end.done = { ...done, result: typeof encoded === 'number' ? null : encoded }
          return end
        },
      )
    } finally {
      ended = true
    }
  }

  /**
   * The position last saved for (source, partition) by a committed
   * transaction, or undefined: where a consumer that saves its position with
   * each effect starts reading again.
   */
  async positionOf(source: string, partition: string | number): Promise<string | undefined> {
    const at = [positionPart('source', source), positionPart('partition', partition)] as const
    await this.ready()
    return this.dialect.readPosition(positionsTableName(this.config.tablePrefix), ...at)
  }

  async close(): Promise<void> {
    await this.dialect.close()
  }

  /** The store's tables checked (or created), and the positions table created once when the store creates its tables. */
  private async ready(): Promise<void> {
    await ensureSqlReady(this.config, this.dialect)
    if (!this.config.createTables) return
    this.positionsCreated ??= this.dialect.createPositionsTable(positionsTableName(this.config.tablePrefix)).catch((error: unknown) => {
      this.positionsCreated = undefined
      throw error
    })
    await this.positionsCreated
  }

  private doneRecordOf(storeKey: string, token: string): Omit<DoneRecord, 'result'> {
    const key = keyBytes(storeKey)
    const { tablePrefix, tables } = this.config
    return { table: recordsTableName(tablePrefix, tableIndexOf(key, tables), tables), key, token, ttlMs: this.ttlMs }
  }
}

/**
 * The helper for a SQL store, outside an engine (a handler module in a worker
 * thread, a transport's processor): give it the engine's store options and
 * ttlMs. Close it when done; it owns the pool it opens from a url.
 */
export function sqlTransactions(options: SqlTransactionOptions): SqlTransactions {
  const o = new OptionReader(options)
  o.onlyKnown(fieldsOf<SqlTransactionOptions>({ store: true, ttlMs: true, keepResults: true }), 'sqlTransactions')
  const store = o.section('store')
  const kind = store.value('kind')
  if (store.valid && !isSqlKind(kind)) store.mustBe('kind', `${quotedChoices(SQL_KINDS)}, as sqlTransactions needs a SQL store`)
  const config = isSqlKind(kind) ? resolveSqlStore(o.value('store') as Record<string, unknown>, 0, o.problems) : undefined
  const ttlMs = o.integer('ttlMs', engineDefaults.ttlMs, 1, MAX_DURATION_MS)
  const keepResults = o.boolean('keepResults', engineDefaults.keepResults)
  o.check()
  return new SqlTransactions(config!, ttlMs, keepResults)
}
