import type { EngineConfig } from '../config.js'
import { ErrorCode, errorText } from '../errors.js'
import { assignPartitions } from './assignment.js'
import type { OwnedShardActor } from './owned-actor.js'
import type { HeldPartition, PartitionStore } from './partition-store.js'

/** What `engine.on('partitions')` listeners get: partitions this member started or stopped handling. */
export interface PartitionChange {
  acquired: number[]
  lost: number[]
}

export interface OwnershipStats {
  memberId: string
  /** Live members of the group at the last heartbeat. */
  members: number
  /** Partitions held now (restored and accepting). */
  owned: number
  /** Acquisitions (each with a new epoch), graceful hand-overs, and partitions lost (taken over, or refused by a group commit). */
  acquired: number
  handedOver: number
  lost: number
  /** Logged keys replayed into restored partitions, and how long the last restore took. */
  replayedKeys: number
  lastRestoreMs: number
  snapshotsWritten: number
  /** Snapshot writes refused by epoch (the partition had moved). */
  snapshotsFenced: number
  /** Snapshots found unusable at a restore (BLOOM_SNAPSHOT_INVALID): the partition was rebuilt from its whole log. */
  snapshotsInvalid: number
  /** Heartbeats that failed (the store was away): past the lease, the partitions stop taking messages until one succeeds. */
  heartbeatFailures: number
}

/** How often a member that wants partitions held by others asks again, at most. */
const ACQUIRE_RETRY_MS = 100

/**
 * This process's membership in its group (DESIGN.md §5): it heartbeats,
 * computes the assignment from the live member list, acquires what is
 * assigned to it (restoring each partition before it handles a message) and
 * hands over what is not (stop taking, drain, flush, release). Partition
 * leases ride the heartbeat; a member that cannot renew in time stops
 * deciding on its own (the actors check the lease's local expiry).
 */
export class Membership {
  /** Partition → epoch, for every partition held (including those being handed over). */
  private readonly held = new Map<number, number>()
  private readonly restoring = new Set<number>()
  private readonly leaving = new Set<number>()
  private readonly handOvers = new Set<Promise<void>>()
  private wanting = false
  private timer: NodeJS.Timeout | undefined
  private snapshotTimer: NodeJS.Timeout | undefined
  private ticking: Promise<void> | undefined
  private closed = false
  readonly stats: OwnershipStats

  constructor(
    private readonly config: EngineConfig,
    private readonly store: PartitionStore,
    private readonly actorOf: (partition: number) => OwnedShardActor,
    private readonly emit: (change: PartitionChange) => void,
  ) {
    this.stats = {
      memberId: config.ownership.memberId,
      members: 0,
      owned: 0,
      acquired: 0,
      handedOver: 0,
      lost: 0,
      replayedKeys: 0,
      lastRestoreMs: 0,
      snapshotsWritten: 0,
      snapshotsFenced: 0,
      snapshotsInvalid: 0,
      heartbeatFailures: 0,
    }
  }

  /** Records the partition count (or refuses a mismatch) and takes this member's first share before returning. */
  async start(): Promise<void> {
    await this.store.checkPartitions(this.config.partitions)
    await this.tickOnce()
    this.schedule()
    const every = this.config.ownership.snapshotEveryMs
    if (every > 0) {
      this.snapshotTimer = setInterval(() => void this.snapshotAll(), every)
      this.snapshotTimer.unref()
    }
  }

  /** Partitions this member handles now, sorted. */
  ownedPartitions(): number[] {
    return [...this.held.keys()].filter((p) => !this.leaving.has(p)).sort((a, b) => a - b)
  }

  /** A group commit found the partition taken over or set back: stop using it now, before the next heartbeat says so. */
  readonly partitionLost = (partition: number, epoch: number): void => {
    if (this.held.get(partition) !== epoch) return
    this.lose(partition)
    this.emit({ acquired: [], lost: [partition] })
  }

  /**
   * Hands every partition over at once: stops taking, lets the group commits
   * under way land, snapshots each partition (the next owner replays less),
   * releases the leases and leaves the group. Call once the engine's lanes are idle.
   */
  async close(): Promise<void> {
    this.closed = true
    clearTimeout(this.timer)
    clearInterval(this.snapshotTimer)
    await this.ticking
    await Promise.all([...this.handOvers])
    const partitions = [...this.held.keys()]
    if (partitions.length > 0) this.emit({ acquired: [], lost: partitions.filter((p) => !this.leaving.has(p)) })
    for (const p of partitions) this.actorOf(p).stopAccepting(p)
    await Promise.all([...new Set(partitions.map((p) => this.actorOf(p)))].map((actor) => actor.flushAll()))
    // A fresh snapshot spares the next owner most of the log (none when snapshots are off).
    if (this.config.ownership.snapshotEveryMs > 0) await this.snapshotAll()
    // A partition with a handler still running (close gave up waiting for it) is not released but left
    // to lapse, as strict mode leaves such a claim: its next owner comes leaseMs later, not at once.
    const held: HeldPartition[] = partitions.filter((p) => this.actorOf(p).openOf(p) === 0).map((partition) => ({ partition, epoch: this.held.get(partition)! }))
    try {
      if (held.length > 0) await this.store.release(this.config.ownership.memberId, held)
      await this.store.leave(this.config.ownership.memberId)
    } catch {
      // The store is away: the leases lapse on their own after leaseMs.
    }
    for (const p of partitions) this.lose(p)
  }

  private schedule(): void {
    if (this.closed) return
    const { leaseMs } = this.config.ownership
    const every = Math.max(1, Math.floor(leaseMs / 3))
    this.timer = setTimeout(() => {
      void this.tickOnce().finally(() => this.schedule())
    }, this.wanting ? Math.min(every, ACQUIRE_RETRY_MS) : every)
    this.timer.unref()
  }

  private tickOnce(): Promise<void> {
    this.ticking ??= this.tick().finally(() => (this.ticking = undefined))
    return this.ticking
  }

  private async tick(): Promise<void> {
    const { memberId, leaseMs } = this.config.ownership
    const held: HeldPartition[] = [...this.held].map(([partition, epoch]) => ({ partition, epoch }))
    const sentAt = performance.now()
    let beat
    try {
      beat = await this.store.heartbeat(memberId, leaseMs, held)
    } catch {
      this.stats.heartbeatFailures++
      return
    }
    if (this.closed) return
    const validUntil = validUntilOf(sentAt, leaseMs)
    const lost: number[] = []
    const renewedByActor = new Map<OwnedShardActor, number[]>()
    for (let k = 0; k < held.length; k++) {
      const { partition, epoch } = held[k]
      if (this.held.get(partition) !== epoch) continue
      if (beat.renewed[k]) {
        const actor = this.actorOf(partition)
        let list = renewedByActor.get(actor)
        if (list === undefined) renewedByActor.set(actor, (list = []))
        list.push(partition)
      } else {
        this.lose(partition)
        lost.push(partition)
      }
    }
    for (const [actor, partitions] of renewedByActor) actor.renewed(partitions, validUntil)

    const members = beat.members.includes(memberId) ? beat.members : [...beat.members, memberId].sort()
    this.stats.members = members.length
    const owners = assignPartitions(members, this.config.partitions)
    for (const p of this.held.keys()) if (owners[p] !== memberId && !this.leaving.has(p)) this.startHandOver(p)
    const wanted: number[] = []
    for (let p = 0; p < owners.length; p++) if (owners[p] === memberId && !this.held.has(p) && !this.restoring.has(p)) wanted.push(p)
    const acquired = wanted.length === 0 ? [] : await this.acquire(wanted)
    this.wanting = acquired.length < wanted.length
    this.stats.owned = this.ownedPartitions().length
    if (acquired.length > 0 || lost.length > 0) this.emit({ acquired, lost })
  }

  /** Acquires and restores what it can of `wanted`; the partitions now handled. */
  private async acquire(wanted: number[]): Promise<number[]> {
    const { memberId, leaseMs } = this.config.ownership
    const sentAt = performance.now()
    let epochs: number[]
    try {
      epochs = await this.store.acquire(memberId, wanted, leaseMs)
    } catch {
      this.stats.heartbeatFailures++
      return []
    }
    const validUntil = validUntilOf(sentAt, leaseMs)
    const restores = wanted.map(async (partition, k) => {
      const epoch = epochs[k]
      if (epoch === 0) return undefined
      this.restoring.add(partition)
      const started = performance.now()
      try {
        const { replayedKeys, snapshotRefused } = await this.actorOf(partition).restore(partition, epoch, validUntil)
        this.stats.replayedKeys += replayedKeys
        this.stats.lastRestoreMs = performance.now() - started
        if (snapshotRefused !== undefined) {
          this.stats.snapshotsInvalid++
          process.emitWarning(`partition ${partition}: ${snapshotRefused}; rebuilt from its whole log (${replayedKeys} keys)`, { code: `IDEM_${ErrorCode.BLOOM_SNAPSHOT_INVALID}` })
        }
      } catch (error) {
        // Not restored, not handled: the lease lapses, and this member or another tries again.
        process.emitWarning(`partition ${partition} could not be restored: ${errorText(error)}`, { code: 'IDEM_RESTORE_FAILED' })
        return undefined
      } finally {
        this.restoring.delete(partition)
      }
      if (this.closed) return undefined
      this.held.set(partition, epoch)
      this.stats.acquired++
      return partition
    })
    const done = await Promise.all(restores)
    return done.filter((p): p is number => p !== undefined)
  }

  /** A graceful hand-over: stop taking, let open messages finish (however long) and their group commits land, then free the lease. */
  private startHandOver(partition: number): void {
    this.leaving.add(partition)
    const actor = this.actorOf(partition)
    actor.stopAccepting(partition)
    this.emit({ acquired: [], lost: [partition] })
    const work = (async () => {
      // No deadline: releasing while a handler of the partition still runs would let the next
      // owner run a redelivery of its key beside it (DESIGN.md §4.2). The heartbeat keeps the
      // lease meanwhile; handlerTimeoutMs, when set, bounds the wait (a timed-out key ends UNKNOWN). A close
      // takes over from here (it releases only what has no handler running).
      while (actor.openOf(partition) > 0 && this.held.has(partition) && !this.closed) await sleep(10)
      if (actor.openOf(partition) > 0) return
      await actor.flushAll()
      const epoch = this.held.get(partition)
      if (epoch === undefined) return
      try {
        await this.store.release(this.config.ownership.memberId, [{ partition, epoch }])
      } catch {
        // The lease lapses on its own.
      }
      if (this.held.get(partition) === epoch) {
        this.held.delete(partition)
        this.leaving.delete(partition)
        actor.drop(partition)
        this.stats.handedOver++
      }
    })()
    const tracked = work.finally(() => this.handOvers.delete(tracked))
    this.handOvers.add(tracked)
  }

  private lose(partition: number): void {
    this.actorOf(partition).drop(partition)
    if (this.held.delete(partition)) this.stats.lost++
    this.leaving.delete(partition)
  }

  private async snapshotAll(): Promise<void> {
    for (const [partition, epoch] of [...this.held]) {
      const snapshot = this.actorOf(partition).snapshotOf(partition)
      if (snapshot === undefined || snapshot.epoch !== epoch) continue
      try {
        if (await this.store.writeSnapshot(partition, snapshot)) this.stats.snapshotsWritten++
        else this.stats.snapshotsFenced++
      } catch {
        // The next round tries again; a new owner replays more of the log meanwhile.
      }
    }
  }
}

/**
 * The lease was granted at or after `sentAt`, on the store's clock: this
 * process trusts it until sentAt + leaseMs, less a margin for clock rates,
 * and stops deciding past that unless a heartbeat renewed it.
 */
function validUntilOf(sentAt: number, leaseMs: number): number {
  return sentAt + leaseMs - Math.min(1000, leaseMs / 10)
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms))
}
