/**
 * What owned mode needs from a store (DESIGN.md §5): a group's members and
 * partition leases with epochs, record reads for "maybe seen" keys, group
 * commits fenced by epoch that also append to each partition's log, and bloom
 * snapshots. One implementation per backend: memory (one process) and Redis.
 */

/** A partition this member holds, with the epoch of its acquisition. */
export interface HeldPartition {
  partition: number
  epoch: number
}

/** A heartbeat's answer. */
export interface Heartbeat {
  /** Live members of the group (this one included), sorted. */
  members: string[]
  /** Parallel to the `held` given: true when the lease was renewed, false when it is not ours any more (another member took it). */
  renewed: boolean[]
}

/** A key's record as owned mode reads it (no claim). */
export interface ReadRecord {
  state: 'absent' | 'done' | 'in-progress' | 'unknown'
  /** For done / in-progress / unknown: the stored fingerprint, '' for none. */
  fingerprint: string
  /** For done: the stored result as JSON text, '' for none. */
  result: string
  /** For unknown: the token the key was marked under. */
  token: string
  /** For done: ms until the record expires, on the store's clock. */
  expiresInMs: number
}

/** One key written by a group commit. */
export interface CommitKey {
  key: string
  /** '' for none. */
  fingerprint: string
  /** JSON text, '' for none (the caller encodes and caps it). Ignored for an UNKNOWN record: its "since" is the store's clock. */
  result: string
  /** true: an UNKNOWN record (handler timed out / outcomeUnknown), false: DONE. */
  unknown: boolean
}

/** One partition's share of a group commit. */
export interface PartitionCommit {
  partition: number
  epoch: number
  /** The token written into the records: names the partition and epoch, e.g. "p12e5". */
  token: string
  keys: CommitKey[]
  /** 8 bytes per key (hash lo u32 LE, hash hi u32 LE), in the order of `keys`: appended to the partition's log. */
  hashes: Buffer
}

/**
 * Per partition of a group commit: 'ok' (records written, hashes logged; `logId`
 * is the log entry's id), 'stale' (another member holds a later epoch: nothing
 * written), 'regressed' (the store's epoch is below ours: set back by hand;
 * nothing written). `storeEpoch` is the epoch the store holds.
 */
export interface PartitionCommitReply {
  status: 'ok' | 'stale' | 'regressed'
  logId: string
  storeEpoch: number
}

export interface Snapshot {
  bytes: Buffer
  /** The log id the snapshot covers: every entry up to it is in `bytes`. '0-0' for none. */
  logId: string
  /** When the bloom's current generation started (ms since the epoch). */
  generationStartedAt: number
  epoch: number
}

/** One log entry: the hashes of one group commit's keys of a partition. */
export interface LogEntry {
  id: string
  /** 8 bytes per key, as PartitionCommit.hashes. */
  hashes: Buffer
}

export interface PartitionStore {
  /**
   * Records the group's partition count at first use; a different count later
   * fails with PARTITIONS_MISMATCH. Called once at start.
   */
  checkPartitions(partitions: number): Promise<void>
  /** Registers or renews `member` for leaseMs, drops expired members, renews the leases of `held`. */
  heartbeat(member: string, leaseMs: number, held: HeldPartition[]): Promise<Heartbeat>
  /** Per partition: the new epoch when its lease was free or lapsed (now ours for leaseMs), 0 when another member holds it. */
  acquire(member: string, partitions: number[], leaseMs: number): Promise<number[]>
  /** Frees the leases of `held` still ours (a graceful hand-over); the epochs stay. */
  release(member: string, held: HeldPartition[]): Promise<void>
  /** Removes the member at close. */
  leave(member: string): Promise<void>
  /** The record of each key (one round trip). */
  read(keys: string[]): Promise<ReadRecord[]>
  /** One round trip for every partition given; each fenced by its epoch on its own. `ttlMs` is the records' TTL and the log's trim window. */
  groupCommit(parts: PartitionCommit[], ttlMs: number): Promise<PartitionCommitReply[]>
  /** Writes a partition's snapshot, fenced by epoch: false when refused (stale or regressed). */
  writeSnapshot(partition: number, snapshot: Snapshot): Promise<boolean>
  /** The partition's snapshot (undefined when none), raw: the caller validates the bytes. */
  readSnapshot(partition: number): Promise<Snapshot | undefined>
  /** Log entries after `afterId` (exclusive; '0-0' for all), in order, at most `count` per call. */
  readLog(partition: number, afterId: string, count: number): Promise<LogEntry[]>
  /** The partition's current epoch in the store (0 when never acquired): for errors and tests. */
  epochOf(partition: number): Promise<number>
  close(): Promise<void>
}
