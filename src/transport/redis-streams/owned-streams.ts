import type { Engine } from '../../engine.js'
import type { PartitionChange } from '../../owned/membership.js'
import { partitionStreamOf } from './partitioned-stream.js'

/**
 * Owned mode: the partition streams a consumer reads, following its engine's
 * `partitions` events. A partition's stream is read only once its consumer
 * group exists on it (created on acquire, MKSTREAM), and no longer from the
 * moment the partition is lost: its entries still in the engine finish there
 * and are settled as their outcomes say, and the next owner reads the rest.
 */
export class OwnedStreams {
  /** Partitions owned now, by the engine's last word. */
  private readonly wanted = new Set<number>()
  /** Owned partitions whose group exists: the streams read. */
  private readonly readable = new Map<number, string>()
  private readonly listener = (change: PartitionChange): void => this.apply(change)
  private closed = false

  constructor(
    private readonly stream: string,
    private readonly engine: Engine,
    /** Creates the group on a stream, retrying transient failures; false when it gave up (the stream cannot be read). */
    private readonly ensureGroup: (stream: string) => Promise<boolean>,
    /** Called after the streams read changed: `acquired` are the streams that became readable. */
    private readonly changed: (acquired: string[]) => void,
  ) {}

  /** Starts following the engine and makes the partitions it owns now readable. */
  async start(): Promise<void> {
    this.engine.on('partitions', this.listener)
    await this.acquire(this.engine.ownedPartitions())
  }

  /** The streams to read now, in partition order. */
  streams(): string[] {
    return [...this.readable.values()]
  }

  close(): void {
    this.closed = true
    this.engine.off('partitions', this.listener)
  }

  private apply({ acquired, lost }: PartitionChange): void {
    // Losses apply at once: not one more read of a partition another member is about to own.
    let dropped = false
    for (const p of lost) {
      this.wanted.delete(p)
      dropped = this.readable.delete(p) || dropped
    }
    if (dropped) this.changed([])
    if (acquired.length > 0) void this.acquire(acquired)
  }

  private async acquire(partitions: number[]): Promise<void> {
    for (const p of partitions) this.wanted.add(p)
    const made = await Promise.all(partitions.map(async (p) => ((await this.ensureGroup(partitionStreamOf(this.stream, p))) ? p : undefined)))
    const acquired: string[] = []
    for (const p of made) {
      // Lost again while its group was being made: not read.
      if (p === undefined || !this.wanted.has(p) || this.closed) continue
      const name = partitionStreamOf(this.stream, p)
      this.readable.set(p, name)
      acquired.push(name)
    }
    if (acquired.length > 0) {
      const sorted = [...this.readable].sort(([a], [b]) => a - b)
      this.readable.clear()
      for (const [p, name] of sorted) this.readable.set(p, name)
      this.changed(acquired)
    }
  }
}
