import type { Redis } from 'ioredis'
import { recordPartitionCount } from '../partition-count.js'

/**
 * Owned mode's stream layout (DESIGN.md §5): one stream per partition, named
 * `${stream}:p${partition}`, so a member reads only the partitions it owns,
 * and one string key per stream name that records the partition count the
 * producers and consumers agreed on. Partition counts fixed per deployment
 * are what make a key's stream stable: a producer with another count would
 * put keys on streams whose owners do not own them.
 */

/** The stream of one partition. */
export function partitionStreamOf(stream: string, partition: number): string {
  return `${stream}:p${partition}`
}

/** The partition of a stream named by partitionStreamOf(stream, partition). */
export function partitionOfStream(stream: string, partitionStream: string): number {
  return Number(partitionStream.slice(stream.length + 2))
}

/** The key holding the recorded partition count of `stream`'s partitioned streams. */
export function partitionsKeyOf(stream: string): string {
  return `${stream}:idem-partitions`
}

/** Records `partitions` for `stream`, or refuses another recorded count (recordPartitionCount). */
export async function recordPartitions(client: Redis, stream: string, partitions: number, who: string): Promise<void> {
  const key = partitionsKeyOf(stream)
  await recordPartitionCount(client, key, partitions, (recorded) => `stream "${stream}" is split into ${recorded} partitions (recorded in ${key}), ${who} has ${partitions}: keys would land on streams whose owners do not own them (partitions is fixed per deployment)`)
}
