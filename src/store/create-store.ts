import type { Clock } from '../clock.js'
import type { StoreConfig } from '../config.js'
import { MemoryStore } from './memory-store.js'
import { RedisStore } from './redis/redis-store.js'
import type { DedupStore } from './store.js'

/** The store of one shard actor, as the config names it. */
export function createStore(config: StoreConfig, clock: Clock): DedupStore {
  switch (config.kind) {
    case 'memory':
      return new MemoryStore(clock)
    case 'redis':
      return new RedisStore(config)
  }
}
