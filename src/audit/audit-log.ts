import { Worker } from 'node:worker_threads'
import type { DecisionEvent } from '../observe/decision-event.js'
import type { AuditChunk, SealedChunk, SealerSetup } from './audit-chunk.js'
import type { AuditConfig } from './audit-config.js'
import { AuditFileSink } from './audit-file-sink.js'
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

/** Records per chunk handed to the sealing thread: large, so its per-chunk costs (postMessage, one seal, one write) spread thin. */
const CHUNK_RECORDS = 8192
/** A chunk not full is handed over after this long, so a quiet engine's decisions reach the file. */
const FLUSH_MS = 250

/**
 * The audit log's engine side. The observer only copies each decision's
 * fields into preallocated columns (no object, no crypto per record); full
 * columns go to the sealing thread in one message, and its sealed lines to the
 * sink, one append at a time. Nothing here waits on the disk.
 */
export class AuditLog {
  readonly stats: AuditStats = { records: 0, written: 0, dropped: 0, full: 0, pending: 0, sinkFailures: 0 }
  private chunk: AuditChunk
  private readonly worker: Worker
  private readonly sink: AuditSink
  private timer: NodeJS.Timeout | undefined
  private writing: Promise<void> = Promise.resolve()
  private inWorker = 0
  private waiters: (() => void)[] = []
  private closed: Promise<void> | undefined
  private readonly actedOnly: boolean

  constructor(private readonly config: AuditConfig) {
    this.sink = config.sink ?? new AuditFileSink(config.file!, config.maxFileBytes)
    this.actedOnly = config.decisions === 'acted'
    const setup: SealerSetup = { keys: config.keys.toTransfer(), rawKeys: config.rawKeys, tail: this.sink.tail() }
    this.worker = new Worker(new URL('./audit-thread.js', import.meta.url), { workerData: setup })
    this.worker.unref()
    this.worker.on('message', (sealed: SealedChunk) => this.store(sealed))
    this.chunk = newChunk()
  }

  /** Whether the buffer holds bufferRecords or more (with whenFull 'backpressure', the engine waits for writable() before the next batch). */
  get full(): boolean {
    return this.stats.pending >= this.config.bufferRecords
  }

  /** Resolves when the buffer is below bufferRecords again. */
  writable(): Promise<void> {
    if (!this.full) return Promise.resolve()
    return new Promise((resolve) => this.waiters.push(resolve))
  }

  /** The DecisionObserver. */
  readonly observe = (events: readonly DecisionEvent[]): void => {
    const stats = this.stats
    let chunk = this.chunk
    for (let i = 0; i < events.length; i++) {
      const event = events[i]
      if (this.actedOnly && !event.enforced) continue
      if (stats.pending >= this.config.bufferRecords) {
        stats.full++
        if (this.config.whenFull === 'drop') {
          stats.dropped++
          continue
        }
      }
      const n = chunk.count
      chunk.at[n] = event.at
      chunk.enforced[n] = event.enforced ? 1 : 0
      chunk.namespace[n] = event.namespace
      chunk.key[n] = event.key
      chunk.verdict[n] = event.verdict
      chunk.layer[n] = event.layer
      chunk.owner[n] = event.owner
      chunk.errorCode[n] = event.errorCode
      chunk.count = n + 1
      stats.records++
      stats.pending++
      if (n + 1 === CHUNK_RECORDS) {
        this.handOver()
        chunk = this.chunk
      }
    }
    if (chunk.count > 0 && this.timer === undefined) {
      this.timer = setTimeout(this.handOver, FLUSH_MS)
      this.timer.unref()
    }
  }

  private readonly handOver = (): void => {
    if (this.timer !== undefined) {
      clearTimeout(this.timer)
      this.timer = undefined
    }
    const chunk = this.chunk
    if (chunk.count === 0) return
    this.chunk = newChunk()
    if (chunk.count < CHUNK_RECORDS) trim(chunk)
    this.inWorker++
    this.worker.ref()
    this.worker.postMessage(chunk, [chunk.at.buffer as ArrayBuffer, chunk.enforced.buffer as ArrayBuffer])
  }

  private store(sealed: SealedChunk): void {
    if (--this.inWorker === 0) this.worker.unref()
    this.writing = this.writing.then(async () => {
      try {
        await this.sink.append(sealed.lines)
        this.stats.written += sealed.records
      } catch {
        this.stats.sinkFailures += sealed.lines.length
      }
      this.stats.pending -= sealed.records
      if (!this.full && this.waiters.length > 0) {
        const waiters = this.waiters
        this.waiters = []
        for (const resolve of waiters) resolve()
      }
    })
  }

  /** Seals and stores what is buffered, then stops the sealing thread and closes the sink. */
  close(): Promise<void> {
    this.closed ??= (async () => {
      this.handOver()
      // Every chunk handed over comes back in order; the last store() chains after it.
      while (this.inWorker > 0) await new Promise((resolve) => this.worker.once('message', () => setImmediate(resolve)))
      await this.writing
      await this.worker.terminate()
      await this.sink.close()
      for (const resolve of this.waiters.splice(0)) resolve()
    })()
    return this.closed
  }
}

function newChunk(): AuditChunk {
  return {
    count: 0,
    at: new Float64Array(CHUNK_RECORDS),
    enforced: new Uint8Array(CHUNK_RECORDS),
    namespace: new Array(CHUNK_RECORDS),
    key: new Array(CHUNK_RECORDS),
    verdict: new Array(CHUNK_RECORDS),
    layer: new Array(CHUNK_RECORDS),
    owner: new Array(CHUNK_RECORDS),
    errorCode: new Array(CHUNK_RECORDS),
  }
}

/** A part-full chunk sends only its records. */
function trim(chunk: AuditChunk): void {
  const n = chunk.count
  chunk.namespace.length = n
  chunk.key.length = n
  chunk.verdict.length = n
  chunk.layer.length = n
  chunk.owner.length = n
  chunk.errorCode.length = n
}
