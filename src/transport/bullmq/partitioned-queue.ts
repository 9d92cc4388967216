import type { Redis } from 'ioredis'
import { ErrorCode, IdemError } from '../../errors.js'

/**
 * Owned mode's BullMQ layout (DESIGN.md §5): one queue per partition, so a
 * member runs Workers only for the partitions it owns, and one key per queue
 * name recording the partition count producers and consumers agreed on.
 * BullMQ refuses ':' in queue names, so a partition queue is `${queue}-p${i}`.
 */
export function partitionQueueOf(queue: string, partition: number): string {
  return `${queue}-p${partition}`
}

/** The key recording the partition count of `queue`, under BullMQ's key prefix (`bull` unless the queues were given another). */
export function partitionsKeyOf(queue: string, prefix = 'bull'): string {
  return `${prefix}:${queue}:idem-partitions`
}

/**
 * Records `partitions` for `queue` unless a count is recorded (SET NX), and
 * refuses another with PARTITIONS_MISMATCH naming both; one round trip.
 */
export async function recordPartitions(client: Redis, queue: string, prefix: string | undefined, partitions: number, who: string): Promise<void> {
  const key = partitionsKeyOf(queue, prefix)
  const replies = (await client.pipeline().set(key, String(partitions), 'NX').get(key).exec()) ?? []
  const failed = replies.find(([error]) => error !== null)
  if (failed !== undefined) throw failed[0]
  const recorded = Number(replies[1][1])
  if (recorded !== partitions) {
    throw new IdemError(
      ErrorCode.PARTITIONS_MISMATCH,
      `queue "${queue}" is split into ${String(replies[1][1])} partitions (recorded in ${key}), ${who} has ${partitions}: jobs would land on queues whose owners do not own them (partitions is fixed per deployment)`,
    )
  }
}
