/**
 * The one decision about a store's tables, shared by the three backends: use
 * them, create them, or refuse to start (SCHEMA_MISMATCH) with what differs.
 *
 * Layout (version 2; each backend spells the types, see its DDL):
 *
 *   <prefix>records[_<i>]   one row per key, see sql-dialect.ts; primary key
 *                           idem_key, and an index on expires_at for the sweep
 *   <prefix>meta            name → value: schema_version, tables, key_bytes
 *
 * Version 1 had the same columns, but PostgreSQL and SQLite checked
 * `state IN (1, 3)`, which refuses UNKNOWN (4). Version-1 tables are
 * upgraded in place, under the schema lock, when `create` allows it (a store
 * with createTables, or `idem migrate`); otherwise they are refused, since
 * marking a key UNKNOWN would fail on them.
 *
 * The meta rows are what make a set of tables ours: a records table without
 * them was not created by idem and is never written to. `tables` is kept
 * because the key → table routing depends on it; a config with another count
 * would look every key up in the wrong table, so it is refused.
 */
import { ErrorCode, IdemError } from '../../errors.js'
import type { SqlConnection, SqlSchema } from './sql-dialect.js'
import type { SqlCommonConfig } from './sql-options.js'
import { KEY_COLUMN_BYTES, SCHEMA_VERSION, metaTableName, recordsTableName } from './sql-records.js'

export interface SchemaReport {
  /** True when this call created the tables. */
  created: boolean
  /** True when this call upgraded version-1 tables to SCHEMA_VERSION. */
  upgraded: boolean
  tables: string[]
}

/**
 * Checks the schema, creating it when it is missing, or upgrading it from
 * version 1, when `create` allows.
 * Runs under the backend's schema lock, so two processes starting together
 * create it once and neither sees half of it.
 */
export async function ensureSchema(dialect: SqlConnection & SqlSchema, config: SqlCommonConfig, create = config.createTables): Promise<SchemaReport> {
  const recordTables = Array.from({ length: config.tables }, (_, i) => recordsTableName(config.tablePrefix, i, config.tables))
  const metaTable = metaTableName(config.tablePrefix)
  const expectedMeta = new Map([
    ['schema_version', String(SCHEMA_VERSION)],
    ['tables', String(config.tables)],
    ['key_bytes', String(KEY_COLUMN_BYTES)],
  ])
  return dialect.withSchemaLock(async () => {
    const snapshot = await dialect.readSchema([...recordTables, metaTable])
    const where = `${dialect.kind} tables with prefix ${JSON.stringify(config.tablePrefix)}`
    // An empty meta table is ours, half made: a backend without transactional
    // DDL (MySQL) creates it first and writes its rows last, so a process that
    // died in between left exactly this. Creating again finishes the job.
    const unfinished = snapshot.meta !== undefined && snapshot.meta.size === 0
    if (snapshot.meta === undefined || unfinished) {
      const strangers = unfinished ? [] : recordTables.filter((t) => snapshot.tables.has(t))
      if (strangers.length > 0) {
        throw mismatch(`${where}: ${strangers.join(', ')} exist${strangers.length === 1 ? 's' : ''} but ${metaTable} does not, so idem did not create ${strangers.length === 1 ? 'it' : 'them'}; choose another store.tablePrefix`)
      }
      if (!create) throw mismatch(`${where}: ${metaTable} does not exist; run \`idem migrate\` for this store, or set store.createTables: true`)
      await dialect.createSchema(recordTables, metaTable, expectedMeta)
      return { created: true, upgraded: false, tables: [...recordTables, metaTable] }
    }
    const problems: string[] = []
    const version = snapshot.meta.get('schema_version')
    const outdated = version === '1'
    if (version !== String(SCHEMA_VERSION) && !outdated) {
      throw mismatch(`${where}: schema_version is ${version === undefined ? 'missing' : JSON.stringify(version)} in ${metaTable}; this idem knows version ${SCHEMA_VERSION} (and upgrades version 1)`)
    }
    const tables = snapshot.meta.get('tables')
    if (tables !== String(config.tables)) {
      problems.push(`the tables were created with tables: ${tables ?? '(missing)'}, this config says tables: ${config.tables} (keys would be looked up in the wrong table; keep the count, or use another tablePrefix)`)
    }
    const keyBytes = snapshot.meta.get('key_bytes')
    if (keyBytes !== String(KEY_COLUMN_BYTES)) problems.push(`key_bytes is ${keyBytes ?? '(missing)'}, this idem writes keys of up to ${KEY_COLUMN_BYTES} bytes`)
    if (problems.length === 0) {
      for (const table of recordTables) {
        const columns = snapshot.tables.get(table)
        if (columns === undefined) {
          problems.push(`${table} is missing`)
          continue
        }
        for (const [name, type] of dialect.expectedColumns) {
          const found = columns.get(name)
          if (found === undefined) problems.push(`${table}.${name} is missing`)
          else if (found !== type) problems.push(`${table}.${name} is ${found}, expected ${type}`)
        }
      }
    }
    if (problems.length > 0) throw mismatch(`${where} do not match what this store expects: ${problems.join('; ')}`)
    // Upgraded only once everything else matched: tables that are wrong in another way are left as they were.
    if (outdated) {
      if (!create) throw mismatch(`${where}: schema_version is 1 in ${metaTable}, which cannot hold UNKNOWN keys; run \`idem migrate\` for this store to upgrade it to version ${SCHEMA_VERSION}, or set store.createTables: true`)
      await dialect.upgradeSchema(recordTables, metaTable)
    }
    return { created: false, upgraded: outdated, tables: [...recordTables, metaTable] }
  })
}

function mismatch(message: string): IdemError {
  return new IdemError(ErrorCode.SCHEMA_MISMATCH, message)
}
