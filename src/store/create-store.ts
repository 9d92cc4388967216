import type { Clock } from '../clock.js'
import type { StoreConfig } from '../config.js'
import { MemoryStore } from './memory-store.js'
import { RedisStore } from './redis/redis-store.js'
import { createSqlStore } from './sql/sql-backends.js'
import type { DedupStore } from './store.js'

/**
 * The store of one shard actor, as the config names it. Construction is
 * synchronous (the actor is built synchronously); the SQL stores import their
 * driver and check their schema on their first call, so a user of another
 * store never loads pg, mysql2 or better-sqlite3.
 */
export function createStore(config: StoreConfig, clock: Clock): DedupStore {
  switch (config.kind) {
    case 'memory':
      return new MemoryStore(clock)
    case 'redis':
      return new RedisStore(config)
    case 'postgres':
    case 'mysql':
    case 'sqlite':
      return createSqlStore(config, clock)
  }
}
