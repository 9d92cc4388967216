/**
 * How every store that keeps records outside the process writes a record's
 * values: fingerprints and results as JSON text. One codec, so a result kept by
 * Redis reads back exactly as one kept by PostgreSQL.
 */
import { CommitCode } from './store.js'

/** JSON of a result under the cap (null for none), or the CommitCode that says why it is not kept. */
export function encodeResult(result: unknown, maxBytes: number): string | null | CommitCode {
  if (result === undefined) return null
  let json: string | undefined
  try {
    json = JSON.stringify(result)
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
