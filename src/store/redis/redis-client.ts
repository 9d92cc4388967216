import { Redis } from 'ioredis'
import type { RedisStoreConfig } from './redis-options.js'

/**
 * How idem's own connections to Redis behave: a command without a reply
 * within commandTimeoutMs fails, and a command sent while the connection is
 * down fails at once instead of waiting unboundedly (the callers' retry loops
 * own retries: bounded, counted); reconnects back off up to a second.
 */
export function redisClientOptions(config: RedisStoreConfig) {
  return {
    commandTimeout: config.commandTimeoutMs,
    maxRetriesPerRequest: 0,
    retryStrategy: (attempt: number) => Math.min(50 * attempt, 1000),
  }
}

/** The single Redis of a config: the user's client (never closed by idem), or a connection of idem's own. */
export function singleRedisClient<T extends Redis>(config: RedisStoreConfig): { client: T; owned: boolean } {
  if (config.client !== undefined) return { client: config.client as T, owned: false }
  const client = new Redis(config.url!, redisClientOptions(config)) as T
  // Connection errors surface as failed calls, retried and counted there.
  client.on('error', () => {})
  return { client, owned: true }
}
