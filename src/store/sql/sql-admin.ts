/**
 * Schema work outside an engine: `idem migrate` (create or check the tables
 * ahead of the first consumer) and dropping a store's own tables (the demo's
 * and the tests' cleanup). Both refuse tables idem did not create.
 */
import { ErrorCode, IdemError } from '../../errors.js'
import { OptionReader, quotedChoices } from '../../validation.js'
import { createSqlDialect } from './sql-backends.js'
import { isSqlKind, resolveSqlStore, SQL_KINDS, type SqlStoreConfig, type SqlStoreOptions } from './sql-options.js'
import { allTableNames, metaTableName, positionsTableName } from './sql-records.js'
import { ensureSchema, type SchemaReport } from './sql-schema.js'

/** Validates SQL store options on their own (no engine): a ConfigError naming every bad field. */
export function resolveSqlStoreOptions(options: SqlStoreOptions): SqlStoreConfig {
  const store = new OptionReader(options, [], 'store')
  if (store.valid && !isSqlKind(store.value('kind'))) store.mustBe('kind', quotedChoices(SQL_KINDS))
  store.check()
  const config = resolveSqlStore(options as unknown as Record<string, unknown>, 0, store.problems)
  store.check()
  return config
}

/**
 * Creates the store's tables and indexes when they are missing, upgrades
 * version-1 tables, or checks that the ones there are what this idem expects
 * (SCHEMA_MISMATCH if not).
 * Safe to run while consumers are running, and from several places at once.
 */
export async function migrateSqlStore(options: SqlStoreOptions): Promise<SchemaReport> {
  const config = resolveSqlStoreOptions(options)
  const dialect = createSqlDialect(config, 'store')
  try {
    await dialect.connect()
    return await ensureSchema(dialect, config, true)
  } finally {
    await dialect.close()
  }
}

/**
 * Drops the store's tables (records, meta, and the transaction helper's positions) when its meta table says idem
 * made them; tables of that prefix without one are left alone and reported.
 * Returns the names dropped ([] when there were none).
 */
export async function dropSqlTables(options: SqlStoreOptions): Promise<string[]> {
  const config = resolveSqlStoreOptions(options)
  const dialect = createSqlDialect(config, 'store')
  try {
    await dialect.connect()
    // The meta table stays last: readSchema reads it there, and it is dropped last (until then it says the rest is ours).
    const tables = allTableNames(config.tablePrefix, config.tables)
    const names = [...tables.slice(0, -1), positionsTableName(config.tablePrefix), tables[tables.length - 1]]
    return await dialect.withSchemaLock(async () => {
      const snapshot = await dialect.readSchema(names)
      const present = names.filter((name) => snapshot.tables.has(name))
      if (present.length === 0) return []
      if (snapshot.meta === undefined) {
        throw new IdemError(ErrorCode.SCHEMA_MISMATCH, `${present.join(', ')} exist but ${metaTableName(config.tablePrefix)} does not: idem did not create them, so it does not drop them`)
      }
      await dialect.dropTables(present)
      return present
    })
  } finally {
    await dialect.close()
  }
}
