import type { Redis } from 'ioredis'

/**
 * Deletes every key under `prefix`, a SCAN page at a time: never KEYS (it
 * blocks the server) and never a flush, so a shared Redis loses only the
 * caller's own keys. For clean-ups (the demo, the benches, the tests), not
 * for the engine's records, which expire by their TTL.
 */
export async function deleteKeysUnder(redis: Redis, prefix: string): Promise<void> {
  // MATCH takes a glob: a prefix holding * ? [ ] or \ must match only itself.
  const pattern = `${prefix.replace(/[*?[\]\\]/g, '\\$&')}*`
  let cursor = '0'
  do {
    const [next, keys] = await redis.scan(cursor, 'MATCH', pattern, 'COUNT', 10_000)
    cursor = next
    if (keys.length > 0) await redis.unlink(...keys)
  } while (cursor !== '0')
}
