import { ErrorCode, IdemError } from '../errors.js'
import { Router } from '../router.js'

/** The most partitions a deployment may have (config's bound). */
export const MAX_PARTITIONS = 65_536

/** One router per partition count: a producer calls this per message. */
const routers = new Map<number, Router>()

/**
 * The partition of a key among `partitions`: jump consistent hash over the
 * key's xxHash64, exactly as an owned-mode engine routes it, so a producer
 * puts each message on the partition queue or stream its owner reads.
 * Throws INVALID_KEY for a key the engine would refuse.
 */
export function partitionOf(key: string, partitions: number, namespace?: string): number {
  if (!Number.isInteger(partitions) || partitions < 1 || partitions > MAX_PARTITIONS) {
    throw new IdemError(ErrorCode.INVALID_CONFIG, `partitions: must be an integer from 1 to ${MAX_PARTITIONS}, got ${String(partitions)}`)
  }
  let router = routers.get(partitions)
  if (router === undefined) routers.set(partitions, (router = new Router(partitions, 1)))
  router.route([namespace === undefined ? { key } : { key, namespace }])
  const error = router.errors[0]
  if (error !== undefined) throw error
  return router.shards[0]
}
