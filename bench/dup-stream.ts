/**
 * What the Redis, SQL and stream suites share: one stream of keys with
 * duplicates, the same for every contender of a run, and CPU time per item.
 */
import { Redis } from 'ioredis'

/** Keys in arrival order and how many distinct ones they hold. */
export interface DupStream {
  keys: string[]
  unique: number
}

/** Key ids in arrival order (0, 1, 2, … for first deliveries) and how many distinct ones they hold. */
export interface DupIds {
  ids: number[]
  unique: number
}

/**
 * `dupRate` of the ids repeat an earlier one: `recentShare` of those a recent
 * id, one of the last 100 (a producer resend), the rest an old one drawn
 * uniformly from every earlier id (a late redelivery, spread through the
 * stream). Deterministic per seed; the default 0.5 draws the same ids as
 * before the option existed.
 */
export function dupIds(count: number, seed: number, dupRate: number, recentShare = 0.5): DupIds {
  let state = (seed + 1) * 0x9e3779b9
  const random = () => ((state = Math.imul(state ^ (state >>> 15), 0x2c1b3c6d) + 0x6d2b79f5) >>> 0) / 2 ** 32
  const ids: number[] = []
  let unique = 0
  for (let i = 0; i < count; i++) {
    if (unique > 0 && random() < dupRate) {
      const back = random() < recentShare ? Math.min(unique, 1 + Math.floor(random() * 100)) : 1 + Math.floor(random() * unique)
      ids.push(unique - back)
    } else ids.push(unique++)
  }
  return { ids, unique }
}

/** dupIds as keys. */
export function dupStream(count: number, seed: number, dupRate: number): DupStream {
  const { ids, unique } = dupIds(count, seed, dupRate)
  return { keys: ids.map((id) => `order-${id}-padding-to-look-like-a-real-key`), unique }
}

/** CPU time per item, in µs: this Node process's (user + system) and the Redis server's (INFO cpu). */
export interface CpuPerItem {
  node: number
  redis: number
}

/**
 * Starts counting CPU time; the returned function gives the time spent since,
 * per item. The Redis figure is the whole server's: other clients of the same
 * server count too.
 */
export async function cpuMeter(client: Redis): Promise<(items: number) => Promise<CpuPerItem>> {
  const redisBefore = await redisCpuUs(client)
  const nodeBefore = process.cpuUsage()
  return async (items) => {
    const node = process.cpuUsage(nodeBefore)
    const redis = (await redisCpuUs(client)) - redisBefore
    return { node: (node.user + node.system) / items, redis: redis / items }
  }
}

async function redisCpuUs(client: Redis): Promise<number> {
  const info = await client.info('cpu')
  const seconds = (field: string): number => {
    const value = new RegExp(`^${field}:([0-9.]+)`, 'm').exec(info)?.[1]
    if (value === undefined) throw new Error(`INFO cpu of the Redis server has no ${field} field: cannot measure its CPU time`)
    return Number(value)
  }
  return (seconds('used_cpu_user') + seconds('used_cpu_sys')) * 1e6
}

/** A connection to the suites' Redis (`url`, IDEM_BENCH_REDIS or the machine's), checked; an error naming the suite that needs it when it does not answer. */
export async function connectBenchRedis(suite: string, url: string): Promise<Redis> {
  const admin = new Redis(url)
  try {
    await admin.ping()
  } catch (error) {
    admin.disconnect()
    throw new Error(`the ${suite} suite needs a Redis at ${url} (set IDEM_BENCH_REDIS): ${(error as Error).message}`)
  }
  return admin
}
