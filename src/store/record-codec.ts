/**
 * How every store that keeps records outside the process writes a record's
 * values: fingerprints and results as JSON text. One codec, so a result kept by
 * Redis reads back exactly as one kept by PostgreSQL.
 */
import { CommitCode } from './store.js'

/**
 * Values JSON would turn into something else without a word: a Map or Set
 * into `{}`, a function or symbol inside an object into nothing. A result
 * holding one is not kept (RESULT_NOT_SERIALIZABLE) rather than kept wrong.
 */
function refuseLossy(_key: string, value: unknown): unknown {
  if (value instanceof Map || value instanceof Set || typeof value === 'function' || typeof value === 'symbol') throw new TypeError('not JSON')
  return value
}

/** JSON of a result under the cap (null for none), or the CommitCode that says why it is not kept. */
export function encodeResult(result: unknown, maxBytes: number): string | null | CommitCode {
  if (result === undefined) return null
  let json: string | undefined
  try {
    // A plain string or number needs no replacer: the common results pay nothing for it.
    json = typeof result === 'object' && result !== null ? JSON.stringify(result, refuseLossy) : JSON.stringify(result)
  } catch {
    return CommitCode.RESULT_NOT_SERIALIZABLE
  }
  if (json === undefined) return CommitCode.RESULT_NOT_SERIALIZABLE
  if (Buffer.byteLength(json) > maxBytes) return CommitCode.RESULT_TOO_LARGE
  return json
}

/** The stored result: none (null, undefined or '') reads as undefined; `null` is kept as JSON 'null'. */
export function decodeResult(json: string | null | undefined): unknown {
  return json === null || json === undefined || json === '' ? undefined : JSON.parse(json)
}

/** JSON text of a fingerprint, null for none: '' stays a fingerprint ("\"\""), and U+0000 is escaped (PostgreSQL text cannot hold it). */
export function encodeFingerprint(fingerprint: string | undefined): string | null {
  return fingerprint === undefined ? null : JSON.stringify(fingerprint)
}

/** JSON text is never empty, so '' (Redis's "none") and null both read as no fingerprint. */
export function decodeFingerprint(json: string | null | undefined): string | undefined {
  return json === null || json === undefined || json === '' ? undefined : (JSON.parse(json) as string)
}
