import type { LayerStats } from '../engine.js'
import type { OwnershipStats } from '../owned/membership.js'
import type { ConsumerStats } from '../transport/bullmq/consumer.js'
import type { StreamConsumerStats } from '../transport/redis-streams/consumer.js'

/**
 * Messages between `idem demo --redis` (the parent) and its `idem consume`
 * children over the fork IPC channel: every message that crosses is typed here.
 */
export type ConsumeReport =
  /** The consumer's Worker is connected and taking jobs. */
  | { type: 'ready' }
  /** Counts so far, sent every progress interval while jobs settle. */
  | { type: 'progress'; stats: ConsumerStats }
  /** After a drain: final counts, the engine's totals and a uniform sample of per-job processor times (ms). */
  | { type: 'done'; stats: ConsumerStats; engine: LayerStats; latencySample: number[] }

export type ConsumeCommand =
  /** Stop taking jobs, settle the active ones, report `done` and exit. */
  { type: 'drain' }

/** Messages from an `idem consume-owned` member to `idem demo --redis URL --mode owned`. */
export type OwnedConsumeReport =
  /** The member's consumer reads its partition streams. */
  | { type: 'ready' }
  /** Counts so far, every 200 ms, and the partitions it owns. */
  | { type: 'progress'; stats: StreamConsumerStats; engine: LayerStats; ownership: OwnershipStats; owned: number[] }
  /** After a drain: the final counts. */
  | { type: 'done'; stats: StreamConsumerStats; engine: LayerStats; ownership: OwnershipStats; owned: number[] }
