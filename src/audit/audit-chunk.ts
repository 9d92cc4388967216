/**
 * The records of one flush, column by column, as the main thread hands them
 * to the sealing thread: typed arrays move (transferred), string columns are
 * copied once by postMessage. Column i of every array is record i.
 */
export interface AuditChunk {
  count: number
  at: Float64Array
  enforced: Uint8Array
  namespace: (string | undefined)[]
  key: string[]
  verdict: string[]
  layer: string[]
  owner: (string | undefined)[]
  errorCode: (string | undefined)[]
}

/** One record as `idem audit read` prints it and a line's payload holds it (a JSON array of these). */
export interface AuditRecord {
  time: string
  namespace?: string
  /** The keyed digest of the key (base64url); the key itself only under rawKeys. */
  keyDigest?: string
  key?: string
  verdict: string
  rollout: 'enforced' | 'shadow'
  layer: string
  owner?: string
  errorCode?: string
}

/** What the sealing thread answers per chunk: the sealed lines and where the chain ends. */
export interface SealedChunk {
  lines: string[]
  records: number
  seq: number
  mac: string
}

export interface SealerSetup {
  keys: { enc: Uint8Array; mac: Uint8Array; digest: Uint8Array; id: string; cipher: 'aes-256-gcm' | 'sm4' }
  rawKeys: boolean
  tail: { seq: number; mac: string } | undefined
}
