import type { Clock } from '../clock.js'
import type { StoreConfig } from '../config.js'
import { MemoryStore } from './memory-store.js'
import { RedisStore } from './redis/redis-store.js'
import { createSqlStore } from './sql/sql-backends.js'
import type { DedupStore } from './store.js'

/**
 * The stores of the shard actors of one thread, as the config names them.
 * Construction is synchronous (actors are built synchronously); the SQL
 * stores import their driver and check their schema on their first call, so a
 * user of another store never loads pg, mysql2 or better-sqlite3.
 *
 * The thread's shards share one Redis store: the calls they make in one turn
 * then go to Redis as one script call. Not with requireReplicas: each claim's
 * WAIT blocks its connection until the replicas answer, and a shared one would
 * hold every shard's calls behind it. Every other store is one per shard (a
 * SQL store's pool serves one shard's batches).
 */
export class StoreFactory {
  private shared: RedisStore | undefined
  private readonly all: DedupStore[] = []

  constructor(
    private readonly config: StoreConfig,
    private readonly clock: Clock,
  ) {}

  forShard(): DedupStore {
    const { config } = this
    if (config.kind === 'redis' && config.requireReplicas === 0) return (this.shared ??= this.kept(new RedisStore(config)))
    if (config.kind === 'redis') return this.kept(new RedisStore(config))
    if (config.kind === 'memory') return this.kept(new MemoryStore(this.clock))
    return this.kept(createSqlStore(config, this.clock))
  }

  /** Call once the actors are closed: a shared store outlives every actor that uses it. */
  async close(): Promise<void> {
    await Promise.all(this.all.map((store) => store.close()))
  }

  private kept<S extends DedupStore>(store: S): S {
    this.all.push(store)
    return store
  }
}
