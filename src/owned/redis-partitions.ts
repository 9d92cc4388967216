// TEMP STUB (not committed)
import type { RedisStoreConfig } from '../store/redis/redis-options.js'
import type { PartitionStore } from './partition-store.js'
export const RedisPartitionStore = class { constructor(_c: RedisStoreConfig, _g: string) { throw new Error('stub') } } as unknown as new (c: RedisStoreConfig, g: string) => PartitionStore
