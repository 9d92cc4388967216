import type { Redis } from 'ioredis'
import { ErrorCode, IdemError } from '../errors.js'

/**
 * Owned mode's partitioned transports (BullMQ queues, Redis streams) record
 * the partition count their producers and consumers agreed on under one key:
 * `partitions` is stored unless a count is (SET NX), and another count is
 * refused with PARTITIONS_MISMATCH. One round trip: the GET in the same
 * pipeline reads whichever count won the SET NX. `mismatch` words the error
 * from the recorded value.
 */
export async function recordPartitionCount(client: Redis, key: string, partitions: number, mismatch: (recorded: string) => string): Promise<void> {
  const replies = (await client.pipeline().set(key, String(partitions), 'NX').get(key).exec()) ?? []
  const failed = replies.find(([error]) => error !== null)
  if (failed !== undefined) throw failed[0]
  if (Number(replies[1][1]) !== partitions) throw new IdemError(ErrorCode.PARTITIONS_MISMATCH, mismatch(String(replies[1][1])))
}
