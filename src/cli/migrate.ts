/**
 * `idem migrate`, and the `--store` flag the CLI shares: a store named on the
 * command line (`memory`, `sqlite:PATH`, `postgres://…`, `mysql://…`).
 */
import { parseArgs } from 'node:util'
import type { StoreOptions } from '../config.js'
import { IdemError } from '../errors.js'
import { migrateSqlStore } from '../store/sql/sql-admin.js'
import { SCHEMA_VERSION } from '../store/sql/sql-records.js'
import type { SqlStoreOptions } from '../store/sql/sql-options.js'

export const migrateUsage = `idem migrate --store postgres://…|mysql://…|sqlite:PATH [--tables N] [--table-prefix P]`

/** The store a `--store` value names, or a message saying what is wrong with it. */
export function parseStoreFlag(value: string): StoreOptions | string {
  if (value === 'memory') return { kind: 'memory' }
  if (/^rediss?:\/\//.test(value)) return { kind: 'redis', url: value }
  if (value.startsWith('sqlite:')) {
    const path = value.slice('sqlite:'.length)
    return path.length > 0 ? { kind: 'sqlite', path } : 'sqlite: needs a file path, as in sqlite:./idem.db'
  }
  if (/^postgres(ql)?:\/\//.test(value)) return { kind: 'postgres', url: value }
  if (/^(mysql|mariadb):\/\//.test(value)) return { kind: 'mysql', url: value }
  return `must be memory, redis://…, sqlite:PATH, postgres://… or mysql://…, got ${JSON.stringify(value)}`
}

/** Creates a SQL store's tables, or upgrades or checks the ones there; exit 0 when they are ready, 1 when they are not ours. */
export async function runMigrate(args: string[]): Promise<number> {
  const { values } = parseArgs({
    args,
    options: { store: { type: 'string' }, tables: { type: 'string' }, 'table-prefix': { type: 'string' } },
    strict: true,
  })
  const store = values.store === undefined ? 'give the store to migrate with --store' : parseStoreFlag(values.store)
  if (typeof store === 'string' || store.kind === 'memory' || store.kind === 'redis') {
    console.error(`idem migrate: --store: ${typeof store === 'string' ? store : `the ${store.kind} store has no tables`}\nusage: ${migrateUsage}`)
    return 2
  }
  const options = {
    ...store,
    ...(values.tables === undefined ? {} : { tables: Number(values.tables) }),
    ...(values['table-prefix'] === undefined ? {} : { tablePrefix: values['table-prefix'] }),
  } as SqlStoreOptions
  try {
    const report = await migrateSqlStore(options)
    const done = report.created ? 'created' : report.upgraded ? `upgraded to schema version ${SCHEMA_VERSION}:` : 'already there, and as expected:'
    console.log(`idem migrate: ${done} ${report.tables.join(', ')} (${store.kind})`)
    return 0
  } catch (error) {
    if (!(error instanceof IdemError)) throw error
    console.error(`idem migrate: ${error.code}: ${error.message}`)
    return error.code === 'INVALID_CONFIG' ? 2 : 1
  }
}
