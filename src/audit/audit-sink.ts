import type { ChainTail } from './audit-line.js'

/**
 * Where sealed lines go. The audit log calls append one call at a time, in
 * order, never waiting on it from the engine's path; a sink for another place
 * (a socket, an object store) implements the same three methods.
 */
export interface AuditSink {
  /** Where the chain ended before this process (read at open), so a restarted log goes on from it; undefined for a new log. */
  tail(): ChainTail | undefined
  /** Appends one whole line (UTF-8, ending in '\n'); called in order, one call at a time; resolves when it is stored. */
  append(line: Uint8Array): Promise<void>
  close(): Promise<void>
}
