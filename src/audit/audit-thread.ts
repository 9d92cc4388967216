/**
 * The sealing thread's entry: one setup message, then chunks, each answered
 * with its sealed lines in the order they came.
 */
import { parentPort, workerData } from 'node:worker_threads'
import type { AuditChunk, SealerSetup } from './audit-chunk.js'
import { AuditSealer } from './audit-sealer.js'

const sealer = new AuditSealer(workerData as SealerSetup)
parentPort!.on('message', (chunk: AuditChunk) => {
  parentPort!.postMessage(sealer.seal(chunk))
})
