import type { Clock } from '../clock.js'
import { ErrorCode, IdemError } from '../errors.js'
import type { CommitKey, Heartbeat, HeldPartition, LogEntry, PartitionCommit, PartitionCommitReply, PartitionStore, ReadRecord, Snapshot } from './partition-store.js'

interface Lease {
  member: string
  epoch: number
  expiresAt: number
}

interface StoredRecord {
  done: boolean
  token: string
  fingerprint: string
  /** DONE: the result's JSON ('' for none); UNKNOWN: since when (ms, this store's clock, as Redis's group commit writes it). */
  value: string
  expiresAt: number
}

/**
 * Owned mode's store in this process: a group's members, leases, epochs,
 * records, logs and snapshots in maps, with time from the injected clock. One
 * instance is one group's space; engines of one process may share it (tests).
 */
export class MemoryPartitionStore implements PartitionStore {
  private partitions: number | undefined
  private readonly members = new Map<string, number>()
  private readonly leases = new Map<number, Lease>()
  private readonly epochs = new Map<number, number>()
  private readonly records = new Map<string, StoredRecord>()
  private readonly logs = new Map<number, LogEntry[]>()
  private readonly snapshots = new Map<number, Snapshot>()
  private lastLogMs = 0
  private logSeq = 0

  constructor(private readonly clock: Clock) {}

  async checkPartitions(partitions: number): Promise<void> {
    this.partitions ??= partitions
    if (this.partitions !== partitions) {
      throw new IdemError(ErrorCode.PARTITIONS_MISMATCH, `the group was set up with ${this.partitions} partitions, this engine has ${partitions}: keys would map to other partitions (partitions is fixed per deployment)`)
    }
  }

  async heartbeat(member: string, leaseMs: number, held: HeldPartition[]): Promise<Heartbeat> {
    const now = this.clock.now()
    this.members.set(member, now + leaseMs)
    for (const [name, expiresAt] of this.members) if (expiresAt <= now) this.members.delete(name)
    const renewed = held.map(({ partition, epoch }) => {
      const lease = this.liveLease(partition, now)
      if (lease === undefined || lease.member !== member || lease.epoch !== epoch) return false
      lease.expiresAt = now + leaseMs
      return true
    })
    return { members: [...this.members.keys()].sort(), renewed }
  }

  async acquire(member: string, partitions: number[], leaseMs: number): Promise<number[]> {
    const now = this.clock.now()
    return partitions.map((partition) => {
      const lease = this.liveLease(partition, now)
      if (lease !== undefined) return lease.member === member ? lease.epoch : 0
      const epoch = (this.epochs.get(partition) ?? 0) + 1
      this.epochs.set(partition, epoch)
      this.leases.set(partition, { member, epoch, expiresAt: now + leaseMs })
      return epoch
    })
  }

  async release(member: string, held: HeldPartition[]): Promise<void> {
    for (const { partition, epoch } of held) {
      const lease = this.leases.get(partition)
      if (lease?.member === member && lease.epoch === epoch) this.leases.delete(partition)
    }
  }

  async leave(member: string): Promise<void> {
    this.members.delete(member)
  }

  async read(keys: string[]): Promise<ReadRecord[]> {
    const now = this.clock.now()
    return keys.map((key) => {
      const record = this.records.get(key)
      if (record === undefined || record.expiresAt <= now) return { state: 'absent', fingerprint: '', result: '', token: '', expiresInMs: 0 }
      return {
        state: record.done ? 'done' : 'unknown',
        fingerprint: record.fingerprint,
        result: record.done ? record.value : '',
        token: record.token,
        expiresInMs: record.expiresAt - now,
      }
    })
  }

  async groupCommit(parts: PartitionCommit[], ttlMs: number): Promise<PartitionCommitReply[]> {
    const now = this.clock.now()
    return parts.map((part) => {
      const storeEpoch = this.epochs.get(part.partition) ?? 0
      if (storeEpoch !== part.epoch) return { status: storeEpoch > part.epoch ? 'stale' : 'regressed', logId: '', storeEpoch }
      for (const key of part.keys) this.write(key, part.token, now, ttlMs)
      const id = this.nextLogId(now)
      const log = this.logs.get(part.partition) ?? []
      // Trimmed to the dedup window, like the Redis stream's MINID.
      const keepFrom = log.findIndex((entry) => Number(entry.id.split('-')[0]) >= now - ttlMs)
      const kept = keepFrom < 0 ? [] : log.slice(keepFrom)
      kept.push({ id, hashes: Buffer.from(part.hashes) })
      this.logs.set(part.partition, kept)
      return { status: 'ok', logId: id, storeEpoch }
    })
  }

  async writeSnapshot(partition: number, snapshot: Snapshot): Promise<boolean> {
    if ((this.epochs.get(partition) ?? 0) !== snapshot.epoch) return false
    this.snapshots.set(partition, { ...snapshot, bytes: Buffer.from(snapshot.bytes) })
    return true
  }

  async readSnapshot(partition: number): Promise<Snapshot | undefined> {
    const snapshot = this.snapshots.get(partition)
    return snapshot === undefined ? undefined : { ...snapshot, bytes: Buffer.from(snapshot.bytes) }
  }

  async readLog(partition: number, afterId: string, count: number): Promise<LogEntry[]> {
    const log = this.logs.get(partition) ?? []
    const after = log.findIndex((entry) => compareIds(entry.id, afterId) > 0)
    return after < 0 ? [] : log.slice(after, after + count)
  }

  async epochOf(partition: number): Promise<number> {
    return this.epochs.get(partition) ?? 0
  }

  /** Sets a partition's epoch by hand, as an operator (or a test of EPOCH_REGRESSED) would. */
  setEpoch(partition: number, epoch: number): void {
    this.epochs.set(partition, epoch)
  }

  async close(): Promise<void> {}

  private liveLease(partition: number, now: number): Lease | undefined {
    const lease = this.leases.get(partition)
    if (lease !== undefined && lease.expiresAt <= now) {
      this.leases.delete(partition)
      return undefined
    }
    return lease
  }

  private write(key: CommitKey, token: string, now: number, ttlMs: number): void {
    this.records.set(key.key, { done: !key.unknown, token, fingerprint: key.fingerprint, value: key.unknown ? String(now) : key.result, expiresAt: now + ttlMs })
  }

  /** Stream-like ids, "ms-seq", increasing even when the clock stands still or steps back. */
  private nextLogId(now: number): string {
    if (now > this.lastLogMs) {
      this.lastLogMs = now
      this.logSeq = 0
    } else this.logSeq++
    return `${this.lastLogMs}-${this.logSeq}`
  }
}

function compareIds(a: string, b: string): number {
  const [am, as] = a.split('-').map(Number)
  const [bm, bs] = b.split('-').map(Number)
  return am !== bm ? am - bm : as - bs
}
