import type { Clock } from '../clock.js'
import type { StoreConfig } from '../config.js'
import { MemoryStore } from './memory-store.js'
import { RedisStore } from './redis/redis-store.js'
import { createSqlStore } from './sql/sql-backends.js'
import { storeOperations } from './store-base.js'
import type { DedupStore } from './store.js'
import { ConfigError } from '../errors.js'
import { mustBe } from '../validation.js'

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

  forShard(shard: number): DedupStore {
    const { config } = this
    if (config.kind === 'custom') return this.kept(customStore(config.create, shard))
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

const storeMethods = [...storeOperations, 'purge', 'close'] as const

/** The store a custom `create` made, checked once: a missing method would otherwise fail the first batch that needs it. */
function customStore(create: (shard: number) => DedupStore, shard: number): DedupStore {
  const store = create(shard)
  const missing = storeMethods.filter((method) => typeof (store as unknown as Record<string, unknown> | null)?.[method] !== 'function')
  if (missing.length > 0) throw new ConfigError([mustBe('store.create', `a function returning a store with ${storeMethods.join(', ')} (extend StoreBase from idem/store); for shard ${shard} it returned one without ${missing.join(', ')}`, store)])
  return store
}
