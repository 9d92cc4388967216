import { CommitCode } from './store.js'

/**
 * How every networked store keeps a handler's result: JSON, under the
 * store's byte cap. null means there is no result to keep.
 */
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
