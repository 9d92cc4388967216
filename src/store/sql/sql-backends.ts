/**
 * Config → backend, for the three SQL stores: the one place that knows which
 * dialect serves which kind (store-factory.ts, the transaction helper and
 * `idem migrate` all come through here).
 */
import { systemClock, type Clock } from '../../clock.js'
import { MysqlDialect, MysqlStore } from './mysql-store.js'
import { PostgresDialect, PostgresStore } from './postgres-store.js'
import type { DialectRole, SqlDialect } from './sql-dialect.js'
import type { SqlStoreConfig } from './sql-options.js'
import { SqliteDialect, SqliteStore } from './sqlite-store.js'
import type { SqlStore } from './sql-store.js'

export function createSqlDialect(config: SqlStoreConfig, role: DialectRole, clock: Clock = systemClock): SqlDialect {
  switch (config.kind) {
    case 'postgres':
      return new PostgresDialect(config, role)
    case 'mysql':
      return new MysqlDialect(config, role)
    case 'sqlite':
      return new SqliteDialect(config, clock)
  }
}

export function createSqlStore(config: SqlStoreConfig, clock: Clock = systemClock): SqlStore {
  switch (config.kind) {
    case 'postgres':
      return new PostgresStore(config)
    case 'mysql':
      return new MysqlStore(config)
    case 'sqlite':
      return new SqliteStore(config, clock)
  }
}
