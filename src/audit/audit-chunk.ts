/** A column whose values come in runs (a batch's owner token, a namespace): each value with the record it starts at. */
export interface Runs {
  values: (string | undefined)[]
  starts: number[]
}

/**
 * The records of one flush, column by column, as the main thread hands them
 * to the sealing thread: the keys as one string (cut by keyLength), the typed
 * arrays transferred, and the columns that repeat as runs, so postMessage
 * copies a few large things and not a string per record.
 */
export interface AuditChunk {
  count: number
  at: Float64Array
  enforced: Uint8Array
  /** -1: a record of no key (an admin purge). */
  keyLength: Int32Array
  keys: string
  namespace: Runs
  verdict: Runs
  layer: Runs
  owner: Runs
  errorCode: Runs
  /** Admin records: how many records the action removed. */
  removed: Runs
}

/** One record as `idem audit read` prints it and a line's payload holds it (a JSON array of these). */
export interface AuditRecord {
  time: string
  namespace?: string
  /** The keyed digest of the key (base64url); the key itself only under rawKeys. */
  keyDigest?: string
  key?: string
  /** A decision's verdict, or an admin action: 'forget', 'forget-forced', 'purge'. */
  verdict: string
  rollout: 'enforced' | 'shadow'
  /** The layer that answered, or 'admin'. */
  layer: string
  owner?: string
  errorCode?: string
  /** Admin records: how many records the action removed. */
  removed?: number
}

/** A record as a line's payload holds it: the time as ms since the epoch (read and verify print it as ISO). */
export type SealedRecord = Omit<AuditRecord, 'time'> & { time: number }

/** What the sealing thread answers per chunk when the sink is the caller's: the sealed line (transferred) and its records. */
export interface SealedChunk {
  line: Uint8Array
  records: number
}

export interface SealerSetup {
  keys: { enc: Uint8Array; mac: Uint8Array; digest: Uint8Array; id: string; cipher: 'aes-256-gcm' | 'sm4' }
  rawKeys: boolean
  tail: { seq: number; mac: string } | undefined
  /** The file the sealing thread appends to itself; absent: sealed lines go back to the main thread's sink. */
  file?: { path: string; maxFileBytes: number }
  /** [0]: records stored, counted by the sealing thread (a file sink), read by the engine with no message. */
  written: SharedArrayBuffer
}
