import { EventEmitter } from 'node:events'
import type { Engine } from '../../engine.js'
import { errorText, ErrorCode, IdemError } from '../../errors.js'
import { replyKind } from '../../store/redis/redis-errors.js'
import { messageOf, type HandlerContext, type Message, type Outcome } from '../../message.js'
import { invalidOutcome } from '../../outcome.js'
import type { DeadLetter, StreamEntry, StreamPart } from './entry.js'
import { deadLetterReason, exhausted } from '../delivery-limit.js'
import { EntryAction, entryActionOf } from './entry-action.js'
import { resolveStreamConsumerOptions, type StreamConsumerConfig, type StreamConsumerOptions } from './options.js'
import { OwnedStreams } from './owned-streams.js'
import { partitionOfStream, recordPartitions } from './partitioned-stream.js'
import { StreamClient, transportError, type Settlement } from './stream-client.js'

/** Counts of one consumer since it started. */
export interface StreamConsumerStats {
  /** Entries read for the first time (XREADGROUP '>'). */
  read: number
  /** Entries taken over after sitting pending (XAUTOCLAIM): a dead or stopped consumer's, or retries and in-flight waits coming back. */
  reclaimed: number
  /** Entries acked: handler ran and committed here (`new`), or the key was done or the version stale (`duplicates`). */
  acked: number
  new: number
  duplicates: number
  /** Entries left to wait (in-flight verdicts, and commits that did not reach the store): pending, back after inFlightDelayMs, no delivery counted. */
  inFlight: number
  /** Handler threw, or its commit was refused: left pending, back after retryDelayMs as the next delivery. */
  retried: number
  /** Entries this consumer moved to the dead-letter stream. */
  deadLettered: number
  /** Pending entries found deleted from the stream (XDEL, XTRIM) before anyone acked them: nothing left to run. */
  deletedWhilePending: number
  /** Redis calls of the transport that failed (each one also an `error` event). */
  transportErrors: number
  /** Batches taken through the engine. */
  batches: number
  /** Entries held right now (read or reclaimed, not yet settled). */
  holding: number
}

export interface StreamConsumerEvents {
  /** A transport call failed (code TRANSPORT_FAILED), or the engine refused a batch. Emitted only when someone listens; counted either way. */
  error: [error: IdemError]
  /** An entry was moved to the dead-letter stream. */
  deadLetter: [letter: DeadLetter]
}

/** A batch being worked on: its entries are touched while it runs so that no other consumer takes them over. */
interface ActiveBatch {
  parts: { stream: string; ids: string[] }[]
  touchedAt: number
}

const BACKOFF_MS = 100
const MAX_BACKOFF_MS = 5000
/** XAUTOCLAIM calls per reclaim look at most; the scan goes on from its cursor at the next look. */
const MAX_RECLAIM_CALLS = 64

/**
 * An idempotent Redis Streams consumer in a consumer group. Reads batches with
 * XREADGROUP, runs them through the engine, and settles each entry by its
 * verdict (entryActionOf): XACK once the outcome is durable, dead letter with
 * the reason, or left pending to come back. Pending entries of dead consumers
 * are taken over with XAUTOCLAIM after claimIdleMs and go through the engine
 * again, so a key their consumer had committed is acked as a duplicate.
 *
 * Owned mode (an owned engine): the stream is split into one stream per
 * partition (`${stream}:p${i}`, see createStreamProducer), and the consumer
 * reads, in one XREADGROUP, and reclaims only the streams of the partitions
 * its engine owns, following them as they move (OwnedStreams).
 */
export class StreamConsumer<R = unknown> extends EventEmitter<StreamConsumerEvents> {
  readonly config: StreamConsumerConfig<R>
  private readonly client: StreamClient
  private readonly counts: Omit<StreamConsumerStats, 'holding'> = {
    read: 0, reclaimed: 0, acked: 0, new: 0, duplicates: 0, inFlight: 0, retried: 0, deadLettered: 0, deletedWhilePending: 0, transportErrors: 0, batches: 0,
  }
  private holding = 0
  private stopping = false
  private readonly active = new Set<ActiveBatch>()
  private readonly running = new Set<Promise<void>>()
  private freeSlots: number
  private readonly slotWaiters: (() => void)[] = []
  private wakeSleepers: (() => void)[] = []
  /** Per stream read: where the next reclaim scan of its pending list goes on. */
  private readonly reclaimCursors = new Map<string, string>()
  /** Owned mode: the partition streams owned now; undefined in strict mode (one stream). */
  private readonly owned: OwnedStreams | undefined
  private readonly touchTimer: NodeJS.Timeout
  private readonly ready: Promise<void>
  private loops: Promise<void> | undefined
  private closing: Promise<void> | undefined

  constructor(options: StreamConsumerOptions<R>) {
    super()
    this.config = resolveStreamConsumerOptions(options)
    const c = this.config
    this.client = new StreamClient(c.connection, c)
    if (c.mode === 'owned') this.owned = new OwnedStreams(c.stream, c.engine, (stream) => this.ensureGroupOf(stream), (acquired) => this.streamsChanged(acquired))
    this.freeSlots = c.batchesInFlight
    this.touchTimer = setInterval(() => this.touchLongBatches(), Math.max(1, Math.floor(c.claimIdleMs / 3)))
    this.touchTimer.unref()
    this.ready = this.start()
    // A rejection of ready is the caller's to see through waitUntilReady(); never unhandled.
    this.ready.catch(() => {})
  }

  /** Resolves once the group exists and reading has started; rejects if the group cannot be created (e.g. the key is not a stream). */
  waitUntilReady(): Promise<void> {
    return this.ready
  }

  stats(): StreamConsumerStats {
    return { ...this.counts, holding: this.holding }
  }

  /**
   * Stops reading and reclaiming, waits for the batches being worked on to
   * settle (acks of what is durable, dead letters, the rest left pending and
   * aged for another consumer), then closes the consumer's connections. The
   * engine stays open: it is the caller's; close it after this. Safe to call twice.
   */
  close(): Promise<void> {
    this.closing ??= (async () => {
      this.stopping = true
      for (const wake of this.wakeSleepers.splice(0)) wake()
      for (const wake of this.slotWaiters.splice(0)) wake()
      await this.ready.catch(() => {})
      if (this.loops !== undefined) {
        // CLIENT UNBLOCK ends a blocked read as a timeout would: no entry it was about to hand us is lost in a dropped reply.
        // A read still on its way to the server is not blocked yet, and a loop may send one more read before it
        // sees `stopping`, so keep asking until the loops end (one successful unblock is not the last read); past
        // blockMs (+1 s) the read would have ended by itself, and a reader that still hangs is disconnected.
        let loopsDone = false
        const loops = this.loops.then(() => void (loopsDone = true))
        const deadline = Date.now() + this.config.blockMs + 1000
        while (!loopsDone) {
          await this.client.unblockReader()
          if (Date.now() > deadline) {
            this.client.disconnectReader()
            break
          }
          await Promise.race([loops, new Promise((resolve) => setTimeout(resolve, 20))])
        }
        await loops
      }
      while (this.running.size > 0) await Promise.all(this.running)
      clearInterval(this.touchTimer)
      this.owned?.close()
      await this.client.close()
    })()
    return this.closing
  }

  private async start(): Promise<void> {
    if (this.owned === undefined) {
      if (!(await this.ensureGroupOf(this.config.stream))) return
    } else {
      if (!(await this.checkPartitions())) return
      await this.owned.start()
    }
    if (this.stopping) return
    this.loops = Promise.all([this.readLoop(), this.reclaimLoop()]).then(() => undefined)
  }

  /** The streams read now: the one stream, or the owned partitions' streams. */
  private streams(): string[] {
    return this.owned === undefined ? [this.config.stream] : this.owned.streams()
  }

  /**
   * Creates the group on `stream` unless it exists, retrying transient
   * failures until it succeeds or the consumer stops (false). A key that holds
   * something else than a stream is an error no retry can fix: in strict mode
   * the consumer stops and waitUntilReady rejects; in owned mode that one
   * partition is reported and not read.
   */
  private async ensureGroupOf(stream: string): Promise<boolean> {
    for (let attempt = 0; ; attempt++) {
      if (this.stopping) return false
      try {
        await this.client.ensureGroup(stream, this.config.startId)
        return true
      } catch (error) {
        if (replyKind(error) === 'WRONGTYPE') {
          const refused = transportError(`XGROUP CREATE of group "${this.config.group}" on "${stream}"`, error)
          if (this.owned !== undefined) {
            this.report(refused)
            return false
          }
          this.stopping = true
          throw refused
        }
        this.report(transportError('XGROUP CREATE', error))
        await this.pause(backoff(attempt))
      }
    }
  }

  /** Owned mode: the stream's recorded partition count must be the engine's (PARTITIONS_MISMATCH stops the consumer); false when stopped first. */
  private async checkPartitions(): Promise<boolean> {
    for (let attempt = 0; ; attempt++) {
      if (this.stopping) return false
      try {
        await recordPartitions(this.client.commands, this.config.stream, this.config.engine.config.partitions, 'this consumer\'s engine')
        return true
      } catch (error) {
        if (error instanceof IdemError) {
          this.stopping = true
          throw error
        }
        this.report(transportError('partition count check', error))
        await this.pause(backoff(attempt))
      }
    }
  }

  /**
   * Owned mode: partitions moved. A read blocked on the old streams is ended
   * (it returns nothing, as on a timeout) so the next one reads the new set;
   * acquired streams are scanned for pending entries at once: after a
   * graceful hand-over the previous owner left only entries it could not
   * settle (aged, so taken up now or after their delay); after a crash, all it
   * held, taken once idle for claimIdleMs (the previous owner's consumer name
   * differs from ours, and XAUTOCLAIM takes any consumer's entries).
   */
  private streamsChanged(acquired: string[]): void {
    const reading = new Set(this.streams())
    for (const stream of this.reclaimCursors.keys()) if (!reading.has(stream)) this.reclaimCursors.delete(stream)
    for (const stream of acquired) this.reclaimCursors.set(stream, '0-0')
    void this.client.unblockReader()
    for (const wake of this.wakeSleepers.splice(0)) wake()
  }

  private async readLoop(): Promise<void> {
    const { count, blockMs } = this.config
    let failures = 0
    while (!this.stopping) {
      if (!(await this.takeSlot())) return
      const streams = this.streams()
      if (streams.length === 0) {
        // Owned mode, no partition owned now: woken when one is acquired.
        this.giveSlot()
        await this.pause(blockMs)
        continue
      }
      let parts: StreamPart[]
      try {
        // COUNT is per stream: shared among them, so a batch stays about `count` entries (and what one consumer holds, count × batchesInFlight).
        parts = await this.client.read(streams, Math.ceil(count / streams.length), blockMs)
        failures = 0
      } catch (error) {
        this.giveSlot()
        if (this.stopping) return
        // The group (or the stream) was deleted under us: make it again and go on.
        if (replyKind(error) === 'NOGROUP') await Promise.all(streams.map((stream) => this.client.ensureGroup(stream, this.config.startId).catch(() => {})))
        this.report(transportError('XREADGROUP', error))
        await this.pause(backoff(failures++))
        continue
      }
      if (parts.length === 0) {
        this.giveSlot()
        continue
      }
      for (const part of parts) this.counts.read += part.entries.length
      this.runBatch(parts)
    }
  }

  /**
   * Each look scans the group's pending list of every stream read from where
   * the last one stopped and takes up every entry idle for claimIdleMs:
   * entries of consumers that died, and this group's in-flight and failed
   * entries once their delay is up (settle aged them). Each taken entry is
   * this consumer's from then on. In owned mode only owned partitions' streams
   * are scanned: an entry of another partition (NOT_OWNER, aged by settle) is
   * its owner's to take, never picked up again here.
   */
  private async reclaimLoop(): Promise<void> {
    const { count, reclaimIntervalMs } = this.config
    let first = 0
    while (!this.stopping) {
      await this.pause(reclaimIntervalMs)
      const streams = this.streams()
      let calls = 0
      // Each look starts at the next stream, so that a long pending list does not starve the others of calls.
      first = streams.length === 0 ? 0 : (first + 1) % streams.length
      for (let k = 0; k < streams.length && calls < MAX_RECLAIM_CALLS && !this.stopping; k++) {
        const stream = streams[(first + k) % streams.length]
        for (; calls < MAX_RECLAIM_CALLS && !this.stopping; calls++) {
          if (!(await this.takeSlot())) return
          let reclaimed
          try {
            reclaimed = await this.client.reclaim(stream, this.reclaimCursors.get(stream) ?? '0-0', count)
          } catch (error) {
            this.giveSlot()
            if (!this.stopping) this.report(transportError('XAUTOCLAIM', error))
            break
          }
          this.reclaimCursors.set(stream, reclaimed.next)
          this.counts.deletedWhilePending += reclaimed.deleted.length
          if (reclaimed.entries.length > 0) {
            this.counts.reclaimed += reclaimed.entries.length
            this.runBatch([{ stream, entries: reclaimed.entries }])
          } else this.giveSlot()
          if (reclaimed.next === '0-0') break
        }
      }
    }
  }

  /** Runs one batch in the background; its slot is given back when it has settled. */
  private runBatch(parts: StreamPart[]): void {
    const run = this.processBatch(parts)
      // processBatch reports what it can foresee; anything else must not become an unhandled rejection that kills the process.
      .catch((error: unknown) => this.report(error instanceof IdemError ? error : new IdemError(ErrorCode.ACTOR_FAILED, `stream batch failed: ${errorText(error)}`, { cause: error })))
      .finally(() => {
        this.running.delete(run)
        this.giveSlot()
      })
    this.running.add(run)
  }

  private async processBatch(parts: StreamPart[]): Promise<void> {
    const { engine } = this.config
    const entries = parts.length === 1 ? parts[0].entries : parts.flatMap((part) => part.entries)
    const batch: ActiveBatch = { parts: parts.map((part) => ({ stream: part.stream, ids: part.entries.map((e) => e.id) })), touchedAt: Date.now() }
    this.active.add(batch)
    this.holding += entries.length
    this.counts.batches++
    try {
      const outcomes = new Array<Outcome>(entries.length)
      const keys = new Array<string | undefined>(entries.length)
      const messages: Message<StreamEntry>[] = []
      const positions: number[] = []
      // Owned mode: the partition each entry's stream is for, to catch entries produced onto another partition's stream.
      const streamPartitions = this.owned === undefined ? undefined : parts.flatMap((part) => part.entries.map(() => partitionOfStream(this.config.stream, part.stream)))
      entries.forEach((entry, i) => {
        let message: Message<StreamEntry>
        try {
          message = messageOf(entry, this.config, entryName, entry)
        } catch (error) {
          outcomes[i] = invalidOutcome(undefined, error as IdemError)
          return
        }
        if (typeof message.key === 'string') keys[i] = message.key
        const misrouted = streamPartitions === undefined ? undefined : misroutedError(engine, message, streamPartitions[i])
        if (misrouted !== undefined) {
          outcomes[i] = invalidOutcome(message.key, misrouted)
          return
        }
        messages.push(message)
        positions.push(i)
      })
      let decided: Outcome[]
      try {
        decided = messages.length === 0 ? [] : await engine.processBatch(messages, this.handle)
        engine.countSettled('redis_streams', decided)
      } catch (error) {
        // Nothing settled: the entries stay pending and come back after claimIdleMs.
        this.report(error instanceof IdemError ? error : new IdemError(ErrorCode.ACTOR_FAILED, `engine.processBatch failed: ${errorText(error)}`, { cause: error }))
        if ((error as IdemError).code === ErrorCode.ENGINE_CLOSED) void this.close()
        return
      }
      decided.forEach((outcome, j) => (outcomes[positions[j]] = outcome))
      // No touch may follow the settlement on the connection: it would undo the ageing of waits and retries.
      this.active.delete(batch)
      await this.settle(parts, outcomes, keys)
    } finally {
      this.active.delete(batch)
      this.holding -= entries.length
    }
  }

  /** The engine's handler: the user's, unless the entry is out of deliveries (then it is refused, never run). */
  private readonly handle = (message: Message<StreamEntry>, context: HandlerContext): unknown => {
    const entry = message.payload!
    if (exhausted(entry.deliveries, this.config.maxDeliveries)) throw new IdemError(ErrorCode.DELIVERIES_EXHAUSTED, 'out of deliveries: not run')
    return this.config.handler(entry, context)
  }

  /** Settles a batch's entries, whose outcomes and keys are in the order of its parts' entries, in one round trip. */
  private async settle(parts: StreamPart[], outcomes: Outcome[], keys: (string | undefined)[]): Promise<void> {
    const { maxDeliveries } = this.config
    const settlements: Settlement[] = []
    let fresh = 0
    let duplicates = 0
    let i = 0
    for (const { stream, entries } of parts) {
      const settlement: Settlement = { stream, acks: [], deadLetters: [], waits: [], retries: [] }
      settlements.push(settlement)
      for (const entry of entries) {
        const outcome = outcomes[i]
        switch (entryActionOf(outcome, entry.deliveries, maxDeliveries)) {
          case EntryAction.ACK:
            settlement.acks.push(entry.id)
            if (outcome.verdict === 'duplicate' || outcome.verdict === 'stale') duplicates++
            else fresh++
            break
          case EntryAction.WAIT:
            settlement.waits.push(entry)
            break
          case EntryAction.RETRY:
            settlement.retries.push(entry)
            break
          case EntryAction.DEAD_LETTER: {
            const letter: DeadLetter = { id: entry.id, ...deadLetterReason(outcome, entry.deliveries, maxDeliveries), deliveries: entry.deliveries, fields: entry.fields }
            // Ids are per stream: a letter from one of several partition streams says which.
            if (this.owned !== undefined) letter.stream = stream
            if (keys[i] !== undefined) letter.key = keys[i]
            settlement.deadLetters.push(letter)
          }
        }
        i++
      }
    }
    let moved: boolean[][]
    try {
      moved = await this.client.settle(settlements)
    } catch (error) {
      // Nothing is lost: unsettled entries stay pending and come back after claimIdleMs (acked ones as duplicates).
      this.report(transportError('settle', error))
      return
    }
    this.counts.new += fresh
    this.counts.duplicates += duplicates
    settlements.forEach((settlement, k) => {
      this.counts.acked += settlement.acks.length
      this.counts.inFlight += settlement.waits.length
      this.counts.retried += settlement.retries.length
      settlement.deadLetters.forEach((letter, j) => {
        if (!moved[k][j]) return
        this.counts.deadLettered++
        if (this.listenerCount('deadLetter') > 0) this.emit('deadLetter', letter)
      })
    })
  }

  /** Batches running longer than claimIdleMs/3 have their entries' idle time reset, so no consumer takes them over while they run. */
  private touchLongBatches(): void {
    const now = Date.now()
    const due = Math.floor(this.config.claimIdleMs / 3)
    const parts: ActiveBatch['parts'] = []
    for (const batch of this.active) {
      if (now - batch.touchedAt < due) continue
      batch.touchedAt = now
      parts.push(...batch.parts)
    }
    if (parts.length > 0) this.client.touch(parts).catch((error: unknown) => this.report(transportError('XCLAIM (touch)', error)))
  }

  private async takeSlot(): Promise<boolean> {
    while (this.freeSlots === 0 && !this.stopping) await new Promise<void>((resolve) => this.slotWaiters.push(resolve))
    if (this.stopping) return false
    this.freeSlots--
    return true
  }

  private giveSlot(): void {
    this.freeSlots++
    this.slotWaiters.shift()?.()
  }

  /** Sleeps, or returns at once when close() is called. */
  private pause(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const timer = setTimeout(done, ms)
      const wakers = this.wakeSleepers
      function done(): void {
        clearTimeout(timer)
        const at = wakers.indexOf(done)
        if (at >= 0) wakers.splice(at, 1)
        resolve()
      }
      wakers.push(done)
    })
  }

  private report(error: IdemError): void {
    if (error.code === ErrorCode.TRANSPORT_FAILED) this.counts.transportErrors++
    if (this.listenerCount('error') > 0) this.emit('error', error)
  }
}

function backoff(attempt: number): number {
  return Math.min(MAX_BACKOFF_MS, BACKOFF_MS * 2 ** Math.min(attempt, 16))
}

/**
 * Starts an idempotent consumer of a Redis stream in a consumer group. Throws
 * ConfigError naming every bad option.
 *
 * ```ts
 * const consumer = createStreamConsumer({ stream: 'orders', group: 'billing', consumer: `billing-${hostname()}`, engine,
 *   keyOf: (entry) => entry.fields.orderId, handler: (entry) => chargeCard(entry.fields) })
 * await consumer.waitUntilReady()
 * // …
 * await consumer.close()
 * await engine.close()
 * ```
 */
export function createStreamConsumer<R = unknown>(options: StreamConsumerOptions<R>): StreamConsumer<R> {
  return new StreamConsumer(options)
}

/**
 * Owned mode: an entry on one partition's stream whose key is in another
 * partition (a producer with another key function, namespace or partition
 * count, or an XADD by hand) would be NOT_OWNER here forever, or run by a
 * member that does not own its key: dead-lettered with PARTITIONS_MISMATCH
 * instead. A key the engine refuses is left to the engine (INVALID_KEY).
 */
function misroutedError(engine: Engine, message: Message<StreamEntry>, streamPartition: number): IdemError | undefined {
  let partition: number
  try {
    partition = engine.partitionOf(message.key, message.namespace)
  } catch {
    return undefined
  }
  if (partition === streamPartition) return undefined
  return new IdemError(
    ErrorCode.PARTITIONS_MISMATCH,
    `key ${JSON.stringify(message.key)} is in partition ${partition} of ${engine.config.partitions}, but the entry is on the stream of partition ${streamPartition}: produce with createStreamProducer, the consumer's keyOf and namespaceOf, and ${engine.config.partitions} partitions`,
    { key: message.key },
  )
}

/** How a dead-lettered entry is named in the message of a keyOf (namespaceOf, fingerprintOf) that threw. */
function entryName(entry: StreamEntry): string {
  return `entry ${entry.id}`
}
