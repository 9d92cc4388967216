import { Redis } from 'ioredis'

/** Deletes the keys of one test's random prefix on the shared Redis (never anything else: the server is shared). */
export async function deletePrefix(url: string, prefix: string): Promise<void> {
  const redis = new Redis(url)
  try {
    let cursor = '0'
    do {
      const [next, found] = await redis.scan(cursor, 'MATCH', `${prefix}*`, 'COUNT', 1000)
      if (found.length > 0) await redis.del(...found)
      cursor = next
    } while (cursor !== '0')
  } finally {
    redis.disconnect()
  }
}
