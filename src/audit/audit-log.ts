import { Worker } from 'node:worker_threads'
import type { DecisionEvent } from '../observe/decision-event.js'
import type { AuditChunk, Runs, SealedChunk, SealerSetup } from './audit-chunk.js'
import type { AuditConfig } from './audit-config.js'
import type { AuditSink } from './audit-sink.js'

/** Counts of an audit log, in engine.stats().audit. */
export interface AuditStats {
  /** Decisions taken into the buffer. */
  records: number
  /** Records whose lines the sink has stored. */
  written: number
  /** Records dropped because the buffer was full (whenFull: 'drop'). */
  dropped: number
  /** Times a decision found the buffer full (either choice). */
  full: number
  /** Records taken and not yet stored. */
  pending: number
  /** Lines the sink failed to store (their records are lost; the chain shows the gap). */
  sinkFailures: number
}

/** What an operator did through engine.forget or engine.purge, for the audit log. */
export interface AdminAction {
  /** ms since the epoch. */
  at: number
  action: 'forget' | 'forget-forced' | 'purge'
  namespace: string | undefined
  /** The key forgotten; none for a purge. */
  key?: string
  /** How many records went. */
  removed: number
}

/** Records per chunk handed to the sealing thread: large, so its per-chunk costs (postMessage, one seal, one write) spread thin. */
const CHUNK_RECORDS = 8192
/** A chunk not full is handed over after this long, so a quiet engine's decisions reach the file. */
const FLUSH_MS = 250
/**
 * The audit log's engine side. The observer copies each decision's fields
 * into preallocated columns (no object, no crypto, no string built per
 * record); a full chunk goes to the sealing thread in one message, which
 * digests, seals and (with a file) appends, counting what it stored in a
 * shared counter. Nothing here waits on the disk or on a reply.
 */
export class AuditLog {
  private readonly counts = { records: 0, dropped: 0, full: 0, sinkFailures: 0 }
  private chunk: ChunkBuilder
  private readonly worker: Worker
  private readonly sink: AuditSink | undefined
  /** [0] records the sealing thread stored (or failed to), [1] of those, failed. */
  private readonly stored: BigInt64Array
  private storedHere = 0
  private timer: NodeJS.Timeout | undefined
  private writing: Promise<void> = Promise.resolve()
  private waiters: (() => void)[] = []
  private closed: Promise<void> | undefined
  private readonly actedOnly: boolean
  private readonly limit: number
  private readonly drop: boolean

  constructor(config: AuditConfig) {
    this.sink = config.sink
    this.actedOnly = config.decisions === 'acted'
    this.limit = config.bufferRecords
    this.drop = config.whenFull === 'drop'
    const written = new SharedArrayBuffer(16)
    this.stored = new BigInt64Array(written)
    const setup: SealerSetup = {
      keys: config.keys.toTransfer(),
      rawKeys: config.rawKeys,
      tail: this.sink?.tail(),
      ...(config.file === undefined ? {} : { file: { path: config.file, maxFileBytes: config.maxFileBytes } }),
      written,
    }
    this.worker = new Worker(new URL('./audit-thread.js', import.meta.url), { workerData: setup })
    this.worker.unref()
    this.worker.on('message', (message: SealedChunk | 'closed') => {
      if (message !== 'closed') this.store(message)
    })
    this.chunk = new ChunkBuilder()
  }

  get stats(): AuditStats {
    const done = this.done()
    return { records: this.counts.records, written: done - this.failed(), dropped: this.counts.dropped, full: this.counts.full, pending: this.counts.records - done, sinkFailures: this.failed() }
  }

  private done(): number {
    return this.sink === undefined ? Number(Atomics.load(this.stored, 0)) : this.storedHere
  }

  private failed(): number {
    return this.sink === undefined ? Number(Atomics.load(this.stored, 1)) : this.counts.sinkFailures
  }

  /** Whether bufferRecords or more records are taken and not stored (with whenFull 'backpressure', the engine waits for writable() before its next batch). */
  get full(): boolean {
    return this.counts.records - this.done() >= this.limit
  }

  /** Resolves when the buffer is below bufferRecords again (polled: the sealing thread counts without a message). */
  writable(): Promise<void> {
    if (!this.full) return Promise.resolve()
    return new Promise((resolve) => {
      this.waiters.push(resolve)
      if (this.waiters.length === 1) this.pollWritable()
    })
  }

  private pollWritable(): void {
    if (this.full && this.closed === undefined) {
      setTimeout(() => this.pollWritable(), 1)
      return
    }
    for (const resolve of this.waiters.splice(0)) resolve()
  }

  /** The DecisionObserver. */
  readonly observe = (events: readonly DecisionEvent[]): void => {
    const counts = this.counts
    // Once per batch: the room left before the buffer is full.
    let room = this.limit - (counts.records - this.done())
    let chunk = this.chunk
    for (let i = 0; i < events.length; i++) {
      const event = events[i]
      if (this.actedOnly && !event.enforced) continue
      if (room <= 0) {
        counts.full++
        if (this.drop) {
          counts.dropped++
          continue
        }
      }
      room--
      counts.records++
      if (chunk.add(event)) {
        this.handOver()
        chunk = this.chunk
      }
    }
    if (chunk.count > 0 && this.timer === undefined) {
      this.timer = setTimeout(this.handOver, FLUSH_MS)
      this.timer.unref()
    }
  }

  /**
   * An admin action, as one record (layer 'admin'), handed to the sealing
   * thread at once: an operator's action reaches the file within a turn,
   * not after the next 8,192 decisions. Taken whatever the buffer holds.
   */
  readonly recordAdmin = (action: AdminAction): void => {
    this.counts.records++
    this.chunk.addAdmin(action)
    this.handOver()
  }

  private readonly handOver = (): void => {
    if (this.timer !== undefined) {
      clearTimeout(this.timer)
      this.timer = undefined
    }
    const builder = this.chunk
    if (builder.count === 0) return
    this.chunk = new ChunkBuilder()
    const chunk = builder.build()
    this.worker.postMessage(chunk, [chunk.at.buffer as ArrayBuffer, chunk.enforced.buffer as ArrayBuffer, chunk.keyLength.buffer as ArrayBuffer])
  }

  /** A caller's sink: its lines come back, and go to it one append at a time. */
  private store(sealed: SealedChunk): void {
    const sink = this.sink!
    this.writing = this.writing.then(async () => {
      try {
        await sink.append(sealed.line)
      } catch {
        this.counts.sinkFailures += sealed.records
      }
      this.storedHere += sealed.records
    })
  }

  /** Seals and stores what is buffered, then stops the sealing thread and closes the sink. */
  close(): Promise<void> {
    this.closed ??= (async () => {
      this.handOver()
      // The thread answers 'closed' after every chunk before it; a caller's sink has had every line by then but the last appends may still run.
      const closed = new Promise<void>((resolve) => this.worker.on('message', (message) => message === 'closed' && resolve()))
      this.worker.ref()
      this.worker.postMessage('close')
      await closed
      await this.writing
      await this.worker.terminate()
      await this.sink?.close()
      for (const resolve of this.waiters.splice(0)) resolve()
    })()
    return this.closed
  }
}

/** One chunk's columns as the observer fills them. */
class ChunkBuilder {
  count = 0
  readonly at = new Float64Array(CHUNK_RECORDS)
  readonly enforced = new Uint8Array(CHUNK_RECORDS)
  readonly keyLength = new Int32Array(CHUNK_RECORDS)
  readonly keys: string[] = new Array(CHUNK_RECORDS)
  readonly namespace: Runs = { values: [], starts: [] }
  readonly verdict: Runs = { values: [], starts: [] }
  readonly layer: Runs = { values: [], starts: [] }
  readonly owner: Runs = { values: [], starts: [] }
  readonly errorCode: Runs = { values: [], starts: [] }
  readonly removed: Runs = { values: [], starts: [] }

  /** Adds one decision; true when the chunk is full. */
  add(event: DecisionEvent): boolean {
    const n = this.count
    this.at[n] = event.at
    this.enforced[n] = event.enforced ? 1 : 0
    const key = event.key
    this.keys[n] = key
    this.keyLength[n] = key.length
    // Runs: a batch shares its namespace, owner token and mostly its verdict and layer, so most records compare equal and add nothing.
    extendRuns(this.namespace, event.namespace, n)
    extendRuns(this.verdict, event.verdict, n)
    extendRuns(this.layer, event.layer, n)
    extendRuns(this.owner, event.owner, n)
    extendRuns(this.errorCode, event.errorCode, n)
    extendRuns(this.removed, undefined, n)
    this.count = n + 1
    return n + 1 === CHUNK_RECORDS
  }

  /** Adds one admin action (the caller hands the chunk over next). */
  addAdmin(action: AdminAction): void {
    const n = this.count
    this.at[n] = action.at
    this.enforced[n] = 1
    const key = action.key
    if (key === undefined) this.keyLength[n] = -1
    else {
      this.keys[n] = key
      this.keyLength[n] = key.length
    }
    extendRuns(this.namespace, action.namespace, n)
    extendRuns(this.verdict, action.action, n)
    extendRuns(this.layer, 'admin', n)
    extendRuns(this.owner, undefined, n)
    extendRuns(this.errorCode, undefined, n)
    extendRuns(this.removed, String(action.removed), n)
    this.count = n + 1
  }

  build(): AuditChunk {
    const n = this.count
    if (n < CHUNK_RECORDS) this.keys.length = n
    // One flat string: postMessage copies it as one block (join skips the holes of keyless records).
    return { count: n, at: this.at, enforced: this.enforced, keyLength: this.keyLength, keys: this.keys.join(''), namespace: this.namespace, verdict: this.verdict, layer: this.layer, owner: this.owner, errorCode: this.errorCode, removed: this.removed }
  }
}

/** Record n's value of a column in runs: a new run only when it differs from the run before (the first record always starts one). */
function extendRuns(runs: Runs, value: string | undefined, n: number): void {
  const last = runs.values.length - 1
  if (last >= 0 && runs.values[last] === value) return
  runs.values.push(value)
  runs.starts.push(n)
}
