import type { Redis } from 'ioredis'
import { recordPartitionCount } from '../partition-count.js'

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

/** Records `partitions` for `queue`, or refuses another recorded count (recordPartitionCount). */
export async function recordPartitions(client: Redis, queue: string, prefix: string | undefined, partitions: number, who: string): Promise<void> {
  const key = partitionsKeyOf(queue, prefix)
  await recordPartitionCount(client, key, partitions, (recorded) => `queue "${queue}" is split into ${recorded} partitions (recorded in ${key}), ${who} has ${partitions}: jobs would land on queues whose owners do not own them (partitions is fixed per deployment)`)
}
