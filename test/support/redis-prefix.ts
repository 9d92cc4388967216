import { Redis } from 'ioredis'
import { deleteKeysUnder } from '../../dist/src/store/redis/delete-keys.js'

/** Deletes the keys of one test's random prefix on the shared Redis (never anything else: the server is shared), on a connection of its own. */
export async function deletePrefix(url: string, prefix: string): Promise<void> {
  const redis = new Redis(url)
  try {
    await deleteKeysUnder(redis, prefix)
  } finally {
    redis.disconnect()
  }
}
