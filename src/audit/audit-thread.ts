/**
 * The sealing thread's entry: setup in workerData, then chunks, sealed in the
 * order they come. With a file it appends there itself (blocking this thread,
 * never the engine's) and counts what it stored in the shared counter; else
 * it hands each line back for the caller's sink.
 */
import { parentPort, workerData } from 'node:worker_threads'
import type { AuditChunk, SealedChunk, SealerSetup } from './audit-chunk.js'
import { AuditFileSink } from './audit-file-sink.js'
import { AuditSealer } from './audit-sealer.js'

const setup = workerData as SealerSetup
const file = setup.file === undefined ? undefined : new AuditFileSink(setup.file.path, setup.file.maxFileBytes)
const sealer = new AuditSealer({ ...setup, tail: file === undefined ? setup.tail : file.tail() })
const written = new BigInt64Array(setup.written)

parentPort!.on('message', (chunk: AuditChunk | 'close') => {
  if (chunk === 'close') {
    file?.closeSync()
    parentPort!.postMessage('closed')
    return
  }
  const text = sealer.seal(chunk)
  // Not Buffer.from: a small one is a slice of the shared pool, whose memory a transfer would take away.
  const line = Buffer.alloc(Buffer.byteLength(text))
  line.write(text)
  if (file === undefined) {
    const sealed: SealedChunk = { line, records: chunk.count }
    parentPort!.postMessage(sealed, [line.buffer as ArrayBuffer])
    return
  }
  try {
    file.appendSync(line)
  } catch {
    // The records are lost; the engine's stats count them, and the chain shows the gap to verify.
    Atomics.add(written, 1, BigInt(chunk.count))
  }
  Atomics.add(written, 0, BigInt(chunk.count))
})
