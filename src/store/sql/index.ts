/**
 * `idem/sql`: the SQL stores' extras. The stores themselves are configured
 * through createEngine's `store` option ({ kind: 'postgres' | 'mysql' |
 * 'sqlite', … }); this entry adds the transaction helper for code that runs
 * outside the engine's own `transaction` methods (a handler module in a worker
 * thread, a transport's processor), `idem migrate` as a function, and cleanup.
 */
export { sqlTransactions, SqlTransactions, type SqlTransactionOptions, type TransactionWork, type TransactionTools } from './sql-transactions.js'
export { migrateSqlStore, dropSqlTables, resolveSqlStoreOptions } from './sql-admin.js'
export type { SchemaReport } from './sql-schema.js'
export type { SqlStoreOptions, PostgresStoreOptions, MysqlStoreOptions, SqliteStoreOptions, SqlCommonOptions, SqlServerOptions } from './sql-options.js'
export type { PgPoolLike, PgClientLike, MysqlPoolLike, MysqlConnectionLike, SqliteDatabaseLike } from './sql-drivers.js'
export { KEY_COLUMN_BYTES, SCHEMA_VERSION } from './sql-records.js'
