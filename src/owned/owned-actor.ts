import { randomBytes } from 'node:crypto'
import { BloomFilter, bloomGeometry, invalidSnapshot } from '../bloom/bloom-filter.js'
import type { Clock } from '../clock.js'
import type { EngineConfig } from '../config.js'
import { ErrorCode, errorText, IdemError } from '../errors.js'
import { failureData, type ActorPort } from '../actor/shard-cycle.js'
import { countersFor, StoreOp, timed } from '../observe/store-timing.js'
import { Counter, LayerCode, VerdictCode, type ActorBatch, type Decision, type ErrorData, type Resolved, type Settlement, type SettleReply, type StepReply } from '../actor/protocol.js'
import { decodeFingerprint, decodeResult, encodeFingerprint, encodeResult } from '../store/record-codec.js'
import { CommitCode } from '../store/store.js'
import { answerSettled, rotateGenerations, SettledKeys } from '../actor/settled-keys.js'
import type { CommitKey, PartitionCommit, PartitionStore, Snapshot } from './partition-store.js'
import { MAX_PARTITIONS } from './partition-of.js'

/** Group commits a shard keeps out at once: one gathers while the other is out, as the cycle's steps do. */
const FLUSHES_IN_FLIGHT = 2
/** Log entries read per call while a partition is restored. */
const LOG_PAGE = 1000
/** Keys of failed group commits kept for another try; beyond, the oldest are given up (counted in droppedSettlements). */
const MAX_UNFLUSHED_KEYS = 100_000

/** One partition this shard holds: its bloom filter, its epoch, and what is still open in it. */
interface OwnedPartition {
  partition: number
  epoch: number
  bloom: BloomFilter
  generationStartedAt: number
  /** The last log entry this partition's bloom covers for sure: a snapshot taken now covers up to here. */
  logId: string
  /** False once a hand-over started: new messages get NOT_OWNER, open ones finish. */
  accepting: boolean
  /** The lease is ours until this time (performance.now()) at least; past it, decisions stop until a heartbeat renews it. */
  validUntil: number
  /** Messages decided new and not yet settled (handler running or awaiting its group commit). */
  open: number
}

/** A decided batch's new keys not settled yet, by position, with the epoch each was decided under. */
interface OwnedClaims {
  batch: ActorBatch
  open: Uint8Array
  openCount: number
  /** A key is committed under the epoch it was decided in: a partition lost and taken again meanwhile refuses it. */
  epochs: Float64Array
}

/** A settled key waiting for its group commit. */
/** A settled key waiting for its group commit: what the store writes (CommitKey, values encoded), and where its answer goes. */
interface Pending extends CommitKey {
  partition: number
  epoch: number
  hashLo: number
  hashHi: number
  reply: SettleCollector
  /** Its index in the collector's commit (or unknown) positions. */
  index: number
  /** The fingerprint and result as given, for the LRU once durable. */
  rawFingerprint: string | undefined
  rawResult: unknown
}

/** Gathers one settlement's answers as its keys' group commits reply. */
class SettleCollector {
  readonly committed: Uint8Array
  readonly marked: Uint8Array
  commitErrors: (ErrorData | undefined)[] | undefined
  storeError: ErrorData | undefined
  private waiting: number
  private resolve!: () => void
  readonly done: Promise<void>

  constructor(commits: number, unknowns: number) {
    this.committed = new Uint8Array(commits)
    this.marked = new Uint8Array(unknowns)
    this.waiting = commits + unknowns
    this.done = new Promise((resolve) => (this.resolve = resolve))
    if (this.waiting === 0) this.resolve()
  }

  answered(): void {
    if (--this.waiting === 0) this.resolve()
  }
}

/**
 * One shard's actor in owned mode (DESIGN.md §5): the partitions of this
 * shard that this member holds, each with its own bloom filter. A "never
 * seen" key runs with no store call; a "maybe seen" one is looked up in the
 * LRU, then read (no claim: the owner is alone). Settled keys are written
 * behind in group commits, one store call per flush for every partition of
 * the shard, each fenced by its epoch, their hashes appended to the
 * partitions' logs; an outcome is handed out only once its commit is durable.
 */
export class OwnedShardActor implements ActorPort {
  private readonly owned = new Map<number, OwnedPartition>()
  private readonly settled: SettledKeys
  private readonly counters: Float64Array
  private readonly tokenPrefix = randomBytes(6).toString('base64url')
  private batches = 0
  private readonly claimsByToken = new Map<string, OwnedClaims>()
  private pending: Pending[] = []
  private flushTimer: NodeJS.Timeout | undefined
  private readonly flushes = new Set<Promise<void>>()
  /** Group commits that failed after the store's retries: sent again with the next flush, or on a timer. */
  private unflushed: Pending[] = []
  /** Keys in `unflushed`: a later copy must not run before their commit lands. */
  private readonly unflushedKeys = new Set<string>()
  private retryTimer: NodeJS.Timeout | undefined
  private readonly maxResultBytes: number
  private readonly perPartitionItems: number

  constructor(
    readonly shard: number,
    private readonly config: EngineConfig,
    private readonly clock: Clock,
    private readonly store: PartitionStore,
    /** Told when a group commit finds a partition taken over or set back: the member stops using it. */
    private readonly onLost: (partition: number, epoch: number) => void,
  ) {
    this.counters = countersFor(config)
    this.settled = new SettledKeys(Math.ceil(config.lru.maxKeys / config.shards))
    this.maxResultBytes = config.store.kind === 'redis' ? config.store.maxResultBytes : Infinity
    this.perPartitionItems = Math.max(1, Math.ceil(config.bloom.expectedItems / config.partitions))
  }

  // ---- the membership's side --------------------------------------------------

  /**
   * Takes a partition just acquired under `epoch`: its bloom filter is the
   * snapshot's, with the log replayed after it (the whole log when there is
   * no usable snapshot), so every key a previous owner settled is "maybe
   * seen" here. Returns how many logged keys were replayed and whether the
   * snapshot was refused.
   */
  async restore(partition: number, epoch: number, validUntil: number): Promise<{ replayedKeys: number; snapshotRefused: string | undefined }> {
    let bloom: BloomFilter | undefined
    let logId = '0-0'
    let generationStartedAt = this.clock.now()
    let snapshotRefused: string | undefined
    const snapshot = await this.store.readSnapshot(partition)
    if (snapshot !== undefined) {
      try {
        bloom = this.bloomOf(snapshot)
        logId = snapshot.logId
        generationStartedAt = snapshot.generationStartedAt
      } catch (error) {
        snapshotRefused = errorText(error)
      }
    }
    bloom ??= this.newBloom()
    let replayedKeys = 0
    const seen = new Uint8Array(this.config.maxBatch)
    for (;;) {
      const entries = await this.store.readLog(partition, logId, LOG_PAGE)
      for (const entry of entries) {
        const hashes = hashesOf(entry.hashes)
        for (let start = 0; start < hashes.length / 2; start += seen.length) {
          const count = Math.min(seen.length, hashes.length / 2 - start)
          bloom.testAndAddHashes(hashes.subarray(2 * start, 2 * (start + count)), count, seen)
        }
        replayedKeys += hashes.length / 2
        logId = entry.id
      }
      if (entries.length < LOG_PAGE) break
    }
    this.owned.set(partition, { partition, epoch, bloom, generationStartedAt, logId, accepting: true, validUntil, open: 0 })
    return { replayedKeys, snapshotRefused }
  }

  /** The lease of these partitions holds until `validUntil` (performance.now()). */
  renewed(partitions: readonly number[], validUntil: number): void {
    for (const p of partitions) {
      const state = this.owned.get(p)
      if (state !== undefined) state.validUntil = validUntil
    }
  }

  /** A hand-over starts: new messages of the partition get NOT_OWNER; the open ones finish. */
  stopAccepting(partition: number): void {
    const state = this.owned.get(partition)
    if (state !== undefined) state.accepting = false
  }

  /** Messages of the partition decided new and not settled yet. */
  openOf(partition: number): number {
    return this.owned.get(partition)?.open ?? 0
  }

  /** The partition is no longer held: its later group commits are refused here without a store call. */
  drop(partition: number): void {
    this.owned.delete(partition)
  }

  epochOf(partition: number): number | undefined {
    return this.owned.get(partition)?.epoch
  }

  /** What a snapshot of the partition holds now, or undefined when it is not held. */
  snapshotOf(partition: number): Snapshot | undefined {
    const state = this.owned.get(partition)
    if (state === undefined) return undefined
    return { bytes: state.bloom.snapshot(), logId: state.logId, generationStartedAt: state.generationStartedAt, epoch: state.epoch }
  }

  // ---- the cycle's side ---------------------------------------------------------

  async step(settlements: Settlement[], batch: ActorBatch | undefined): Promise<StepReply> {
    const settledLater = settlements.length === 0 ? undefined : Promise.all(settlements.map((s) => this.settle(s)))
    if (batch === undefined) return { settled: [], settledLater }
    const decision = await this.decide(batch)
    return { settled: [], decision, settledLater }
  }

  /** Leases here are the partitions', renewed by the membership's heartbeat: nothing per key. */
  async renew(): Promise<Float64Array> {
    return this.takeCounters()
  }

  async resolve(): Promise<Resolved> {
    throw new IdemError(ErrorCode.INVALID_CONFIG, 'a reconcile hook cannot resolve keys in owned mode yet; resolve UNKNOWN keys with `idem keys resolve`')
  }

  async decide(batch: ActorBatch): Promise<Decision> {
    const { keys, fingerprints, hashes } = batch
    const partitions = batch.partitions!
    const n = keys.length
    const now = this.clock.now()
    const mono = performance.now()
    const c = this.counters
    const verdicts = new Uint8Array(n)
    const layers = new Uint8Array(n)
    const results: unknown[] = new Array(n)
    const storedFingerprints: (string | undefined)[] = new Array(n)
    let errors: (ErrorData | undefined)[] | undefined
    const inFlight = (i: number, error: ErrorData): void => {
      verdicts[i] = VerdictCode.IN_FLIGHT
      ;(errors ??= new Array(n))[i] = error
    }

    // The bloom answers per partition: positions grouped by their partition first.
    const byPartition = new Map<number, number[]>()
    for (let i = 0; i < n; i++) {
      const p = partitions[i]
      const state = this.owned.get(p)
      if (state === undefined || !state.accepting || mono > state.validUntil) {
        c[Counter.NOT_OWNED]++
        inFlight(i, notOwner(keys[i], p, state === undefined ? 'is not held by this member' : state.accepting ? 'has a lease this member could not renew in time' : 'is being handed over'))
        continue
      }
      if (this.unflushedKeys.has(keys[i])) {
        inFlight(i, { code: ErrorCode.STORE_FAILED, message: `key ${JSON.stringify(keys[i])} settled here but its group commit has not reached the store yet; retry later` })
        continue
      }
      let list = byPartition.get(p)
      if (list === undefined) byPartition.set(p, (list = []))
      list.push(i)
    }
    const claimed = new Uint8Array(n)
    const epochs = new Float64Array(n)
    const readIndexes: number[] = []
    for (const [p, positions] of byPartition) {
      const state = this.owned.get(p)!
      this.rotateBloom(state, now)
      const m = positions.length
      const partHashes = new Uint32Array(2 * m)
      for (let k = 0; k < m; k++) {
        partHashes[2 * k] = hashes[2 * positions[k]]
        partHashes[2 * k + 1] = hashes[2 * positions[k] + 1]
      }
      const seen = new Uint8Array(m)
      const positives = state.bloom.testAndAddHashes(partHashes, m, seen)
      c[Counter.BLOOM_POSITIVES] += positives
      c[Counter.BLOOM_NEGATIVES] += m - positives
      for (let k = 0; k < m; k++) {
        const i = positions[k]
        if (seen[k] === 0) {
          // Never seen in this partition, by any owner within the window: it runs, no store call.
          verdicts[i] = VerdictCode.NEW
          layers[i] = LayerCode.BLOOM
          claimed[i] = 1
          epochs[i] = state.epoch
          state.open++
          continue
        }
        const hit = this.settled.get(keys[i], now)
        if (hit !== undefined) {
          c[Counter.LRU_HITS]++
          layers[i] = LayerCode.LRU
          answerSettled(i, hit.fingerprint, hit.result, fingerprints[i], verdicts, results, storedFingerprints)
          continue
        }
        readIndexes.push(i)
      }
    }

    let unknownAt: Uint8Array | undefined
    let unknownTokens: (string | undefined)[] | undefined
    if (readIndexes.length > 0) {
      c[Counter.STORE_OPERATIONS]++
      let records
      try {
        records = await timed(c, StoreOp.READ, () => this.store.read(readIndexes.map((i) => keys[i])))
      } catch (error) {
        const data = failureData(error, 'store read failed')
        for (const i of readIndexes) inFlight(i, data)
        records = undefined
      }
      for (let j = 0; records !== undefined && j < readIndexes.length; j++) {
        const i = readIndexes[j]
        const record = records[j]
        const state = this.owned.get(partitions[i])
        if (state === undefined || !state.accepting) {
          c[Counter.NOT_OWNED]++
          inFlight(i, notOwner(keys[i], partitions[i], 'was handed over while its record was read'))
          continue
        }
        switch (record.state) {
          case 'absent':
            verdicts[i] = VerdictCode.NEW
            claimed[i] = 1
            epochs[i] = state.epoch
            state.open++
            c[Counter.BLOOM_FALSE_POSITIVES]++
            break
          case 'done': {
            const result = decodeResult(record.result)
            const fingerprint = decodeFingerprint(record.fingerprint)
            answerSettled(i, fingerprint, result, fingerprints[i], verdicts, results, storedFingerprints)
            this.remember(keys[i], fingerprint, result, now, false, record.expiresInMs)
            break
          }
          case 'unknown':
            verdicts[i] = VerdictCode.IN_FLIGHT
            storedFingerprints[i] = decodeFingerprint(record.fingerprint)
            ;(unknownAt ??= new Uint8Array(n))[i] = 1
            ;(unknownTokens ??= new Array(n))[i] = record.token
            break
          case 'in-progress':
            // A strict-mode claim on the same prefix: whoever holds it settles it.
            verdicts[i] = VerdictCode.IN_FLIGHT
            storedFingerprints[i] = decodeFingerprint(record.fingerprint)
            break
        }
      }
    }

    const token = `${this.tokenPrefix}.${this.shard}.${++this.batches}`
    let openCount = 0
    for (let i = 0; i < n; i++) openCount += claimed[i]
    if (openCount > 0) this.claimsByToken.set(token, { batch, open: claimed, openCount, epochs })
    const decision: Decision = { verdicts, token, results, storedFingerprints, counters: this.takeCounters(), layers, epochs }
    if (errors !== undefined) decision.errors = errors
    if (unknownAt !== undefined) {
      decision.unknownAt = unknownAt
      decision.unknownTokens = unknownTokens
    }
    return decision
  }

  /**
   * Releases cost nothing here (nothing was written before the handler); commits
   * and UNKNOWN marks wait for their group commit.
   */
  private async settle(s: Settlement): Promise<SettleReply> {
    const decided = this.claimsByToken.get(s.token)
    if (decided === undefined) throw new Error(`shard ${this.shard} holds no claims under token ${s.token}`)
    const { batch } = decided
    const partitions = batch.partitions!
    for (const positions of [s.commit, s.release, s.unknown]) {
      for (const j of positions) {
        if (decided.open[j] !== 1) throw new Error(`shard ${this.shard}: position ${j} of token ${s.token} is not an open claim`)
        decided.open[j] = 0
      }
    }
    decided.openCount -= s.commit.length + s.release.length + s.unknown.length
    if (decided.openCount === 0) this.claimsByToken.delete(s.token)
    for (const j of s.release) this.closeOne(partitions[j], decided.epochs[j])

    const collector = new SettleCollector(s.commit.length, s.unknown.length)
    for (let k = 0; k < s.commit.length; k++) this.enqueue(decided, s.commit[k], collector, k, false, s.commitResults?.[k])
    for (let k = 0; k < s.unknown.length; k++) this.enqueue(decided, s.unknown[k], collector, k, true, undefined)
    this.scheduleFlush()
    await collector.done
    const reply: SettleReply = { committed: collector.committed, marked: collector.marked, counters: this.takeCounters() }
    if (collector.storeError !== undefined) reply.storeError = collector.storeError
    if (collector.commitErrors !== undefined) reply.commitErrors = collector.commitErrors
    return reply
  }

  /** One settled position of a decided batch, into the next group commit (or refused here when its partition moved since). */
  private enqueue(decided: OwnedClaims, j: number, collector: SettleCollector, index: number, unknown: boolean, result: unknown): void {
    const { batch } = decided
    const p = batch.partitions![j]
    const epoch = decided.epochs[j]
    const state = this.owned.get(p)
    if (state === undefined || state.epoch !== epoch) {
      // Lost (and perhaps taken again) since the key was decided: refused here, as the store would.
      this.refuse(collector, index, unknown, {
        code: ErrorCode.LEASE_LOST,
        message: `handler finished for key ${JSON.stringify(batch.keys[j])}, but partition ${p} was lost since it was decided (epoch ${epoch}): the commit was refused and the effect is not recorded; the partition's owner may run it`,
      })
      return
    }
    let encoded = ''
    if (!unknown && this.config.keepResults) {
      const text = encodeResult(result, this.maxResultBytes)
      if (typeof text === 'string') encoded = text
      else if (text !== null) collector.committed[index] = text
    }
    const rawFingerprint = batch.fingerprints[j]
    this.pending.push({
      key: batch.keys[j],
      fingerprint: rawFingerprint === undefined ? '' : (encodeFingerprint(rawFingerprint) as string),
      result: encoded,
      unknown,
      partition: p,
      epoch,
      hashLo: batch.hashes[2 * j],
      hashHi: batch.hashes[2 * j + 1],
      reply: collector,
      index,
      rawFingerprint,
      rawResult: encoded === '' ? undefined : result,
    })
  }

  private refuse(collector: SettleCollector, index: number, unknown: boolean, error: ErrorData): void {
    this.counters[Counter.FENCED_WRITES]++
    if (unknown) collector.marked[index] = 0
    else {
      collector.committed[index] = CommitCode.REFUSED
      ;(collector.commitErrors ??= [])[index] = error
    }
    collector.answered()
  }

  /** One message of the partition decided under `epoch` is settled: the hand-over waits for none to be open. */
  private closeOne(partition: number, epoch: number): void {
    const state = this.owned.get(partition)
    if (state !== undefined && state.epoch === epoch && state.open > 0) state.open--
  }

  /**
   * Group commit: while fewer than FLUSHES_IN_FLIGHT flushes are out, what
   * waits goes at once (no linger when the store keeps up); beyond, settled
   * keys gather and go when one answers, at flushMaxKeys, or after flushMs at
   * the latest. So the batch grows with the load and the latency stays about
   * one round trip.
   */
  private scheduleFlush(): void {
    if (this.pending.length === 0) return
    if (this.flushes.size < FLUSHES_IN_FLIGHT || this.pending.length >= this.config.ownership.flushMaxKeys) {
      clearTimeout(this.flushTimer)
      this.flushTimer = undefined
      this.flush()
    } else if (this.flushTimer === undefined) {
      this.flushTimer = setTimeout(() => {
        this.flushTimer = undefined
        this.flush()
      }, this.config.ownership.flushMs)
    }
  }

  /** Sends what waits, and what failed before, as one group commit. */
  private flush(): void {
    if (this.pending.length === 0 && this.unflushed.length === 0) return
    const batch = this.unflushed.length === 0 ? this.pending : this.unflushed.concat(this.pending)
    this.pending = []
    this.unflushed = []
    this.unflushedKeys.clear()
    const sent = this.groupCommit(batch).finally(() => {
      this.flushes.delete(sent)
      // What gathered while the others were out goes now.
      this.scheduleFlush()
    })
    this.flushes.add(sent)
  }

  private async groupCommit(batch: Pending[]): Promise<void> {
    // By partition and epoch (one epoch per partition but for a partition lost and taken again between a settle and its flush).
    const byPartition = new Map<number, { part: PartitionCommit; members: Pending[] }>()
    for (const item of batch) {
      const id = item.epoch * MAX_PARTITIONS + item.partition
      let group = byPartition.get(id)
      if (group === undefined) byPartition.set(id, (group = { part: { partition: item.partition, epoch: item.epoch, token: `p${item.partition}e${item.epoch}`, keys: [], hashes: EMPTY }, members: [] }))
      group.members.push(item)
    }
    const groups = [...byPartition.values()]
    for (const { part, members } of groups) {
      const hashes = new Uint32Array(2 * members.length)
      for (let k = 0; k < members.length; k++) {
        hashes[2 * k] = members[k].hashLo
        hashes[2 * k + 1] = members[k].hashHi
      }
      part.keys = members
      part.hashes = Buffer.from(hashes.buffer)
    }
    this.counters[Counter.STORE_OPERATIONS]++
    this.counters[Counter.GROUP_COMMITS]++
    let replies
    try {
      replies = await timed(this.counters, StoreOp.GROUP_COMMIT, () =>
        this.store.groupCommit(
          groups.map((g) => g.part),
          this.config.ttlMs,
        ),
      )
    } catch (error) {
      // The outcomes say STORE_FAILED (not acked); the commit is tried again, and until it lands a later copy of these keys waits.
      const data = failureData(error, 'group commit failed')
      this.keepUnflushed(batch)
      for (const item of batch) {
        if (item.reply === detached) continue
        this.closeOne(item.partition, item.epoch)
        item.reply.storeError = data
        item.reply.answered()
      }
      return
    }
    const now = this.clock.now()
    for (let g = 0; g < groups.length; g++) {
      const { part, members } = groups[g]
      const reply = replies[g]
      const state = this.owned.get(part.partition)
      if (reply.status === 'ok') {
        if (state !== undefined && state.epoch === part.epoch) state.logId = maxLogId(state.logId, reply.logId)
        for (const item of members) {
          this.remember(item.key, item.rawFingerprint, item.rawResult, now, item.unknown)
          if (item.reply === detached) continue
          if (item.unknown) item.reply.marked[item.index] = 1
          else if (item.reply.committed[item.index] === CommitCode.REFUSED) item.reply.committed[item.index] = CommitCode.COMMITTED
          this.closeOne(part.partition, part.epoch)
          item.reply.answered()
        }
        continue
      }
      const error: ErrorData =
        reply.status === 'regressed'
          ? { code: ErrorCode.EPOCH_REGRESSED, message: `partition ${part.partition}'s epoch in the store is ${reply.storeEpoch}, below ${part.epoch}, the one this member acquired: it was set back by hand, so nothing was written; the handler's effect is not recorded` }
          : { code: ErrorCode.LEASE_LOST, message: `partition ${part.partition} was taken over (epoch ${reply.storeEpoch} in the store, ours ${part.epoch}): the group commit was refused and the handler's effect is not recorded; the new owner may run it` }
      for (const item of members) {
        if (item.reply === detached) continue
        this.closeOne(part.partition, part.epoch)
        this.refuse(item.reply, item.index, item.unknown, { code: error.code, message: `key ${JSON.stringify(item.key)}: ${error.message}` })
      }
      if (state !== undefined && state.epoch === part.epoch) this.onLost(part.partition, part.epoch)
    }
  }

  private keepUnflushed(batch: Pending[]): void {
    // Bounded in a long outage: the oldest are given up, and a redelivery of those may run again.
    for (const item of batch) {
      if (this.unflushed.length >= MAX_UNFLUSHED_KEYS) {
        this.unflushed.shift()
        this.counters[Counter.DROPPED_SETTLEMENTS]++
      }
      // Their answers went out already: a retry answers nobody.
      this.unflushed.push({ ...item, reply: detached })
      this.unflushedKeys.add(item.key)
    }
    if (this.retryTimer === undefined) {
      this.retryTimer = setTimeout(() => {
        this.retryTimer = undefined
        this.counters[Counter.LATE_SETTLEMENTS] += this.unflushed.length
        this.flush()
      }, Math.min(1000, Math.max(20, this.config.ownership.leaseMs / 10)))
      this.retryTimer.unref()
    }
  }

  /** Sends what waits now and resolves when every group commit under way has answered. */
  async flushAll(): Promise<void> {
    clearTimeout(this.flushTimer)
    this.flushTimer = undefined
    this.flush()
    await Promise.all([...this.flushes])
  }

  async close(): Promise<void> {
    await this.flushAll()
    clearTimeout(this.retryTimer)
    this.retryTimer = undefined
    this.counters[Counter.DROPPED_SETTLEMENTS] += this.unflushed.length
    this.unflushed = []
  }

  private bloomOf(snapshot: Snapshot): BloomFilter {
    const bloom = BloomFilter.restore(snapshot.bytes, { maxBatchKeys: this.config.maxBatch })
    // A snapshot sized for another configuration would answer at another rate: rebuilt from the log instead.
    const { bits, k } = bloomGeometry(this.perPartitionItems, this.config.bloom.falsePositiveRate)
    if (bloom.bits !== bits || bloom.k !== k) throw invalidSnapshot(`it holds ${bloom.bits} bits and k ${bloom.k}, this configuration needs ${bits} and ${k}`)
    return bloom
  }

  private newBloomOptions() {
    return { expectedItems: this.perPartitionItems, falsePositiveRate: this.config.bloom.falsePositiveRate, maxBatchKeys: this.config.maxBatch }
  }

  private newBloom(): BloomFilter {
    return new BloomFilter(this.newBloomOptions())
  }

  private rotateBloom(state: OwnedPartition, now: number): void {
    const rotations = rotateGenerations(state.bloom, state.generationStartedAt, now, this.config.ttlMs)
    if (rotations === 0) return
    this.counters[Counter.BLOOM_ROTATIONS] += rotations
    state.generationStartedAt = now
  }

  private remember(key: string, fingerprint: string | undefined, result: unknown, now: number, unknown = false, expiresInMs = this.config.ttlMs): void {
    // An UNKNOWN key is not settled: its deliveries must read the record (and wait for an operator).
    if (!unknown) this.settled.remember(key, fingerprint, result, now, expiresInMs)
  }

  takeCounters(): Float64Array {
    const taken = this.counters.slice()
    this.counters.fill(0)
    return taken
  }
}

const detached = new SettleCollector(0, 0)
const EMPTY = Buffer.alloc(0)

function notOwner(key: string, partition: number, why: string): ErrorData {
  return { code: ErrorCode.NOT_OWNER, message: `key ${JSON.stringify(key)} is in partition ${partition}, which ${why}; retry later (its owner handles it)` }
}


/** Log hashes as (lo, hi) pairs; copied, as a Buffer from the store may not be 4-byte aligned. */
function hashesOf(bytes: Buffer): Uint32Array {
  const copy = new Uint8Array(bytes.length - (bytes.length % 8))
  copy.set(bytes.subarray(0, copy.length))
  return new Uint32Array(copy.buffer)
}

/** The later of two stream ids ("ms-seq"). */
function maxLogId(a: string, b: string): string {
  const [am, as] = a.split('-').map(Number)
  const [bm, bs] = b.split('-').map(Number)
  return bm > am || (bm === am && bs > as) ? b : a
}
