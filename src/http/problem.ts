/**
 * The layer's own answers as RFC 9457 problem details
 * (`application/problem+json`), each with the idem error code, and the one
 * table that gives each code its HTTP status.
 */
import { ErrorCode } from '../errors.js'

/** A response the layer sends itself (a replay or a problem): the adapters only write it out. */
export interface LayerReply {
  status: number
  /** Names in lower case; a name may repeat (Link, Vary…). */
  headers: [string, string][]
  body: Buffer
}

/** Seconds a client waits before retrying a key whose first request still runs: requests are short, and a retry too early only costs another 409. */
export const IN_FLIGHT_RETRY_AFTER_SECONDS = 1

/** The status of each problem the layer answers with (README "HTTP", status table). */
export const problemStatus = {
  /** Missing where required, empty, over 255 characters, or sent more than once. */
  [ErrorCode.INVALID_KEY]: 400,
  /** The request's fingerprint is not the one stored with the key. */
  [ErrorCode.CONFLICT]: 422,
  /** The key's first request still runs (or the wait for it ran out). */
  [ErrorCode.IN_FLIGHT]: 409,
  /**
   * The key's request completed, but its response was not kept. 409 rather
   * than 422: the retry is the same request, it just cannot be answered; no
   * Retry-After, since asking again gives the same answer.
   */
  [ErrorCode.RESPONSE_NOT_REPLAYABLE]: 409,
  /** A key marked UNKNOWN in a shared store: an operator must decide it first. */
  [ErrorCode.OUTCOME_UNKNOWN]: 409,
  /** The store could not be reached (or lost its data): fail closed, the route does not run. */
  [ErrorCode.STORE_FAILED]: 503,
} as const
export type ProblemCode = keyof typeof problemStatus

const titles: Record<ProblemCode, string> = {
  [ErrorCode.INVALID_KEY]: 'Invalid Idempotency-Key',
  [ErrorCode.CONFLICT]: 'Idempotency-Key reused with another request',
  [ErrorCode.IN_FLIGHT]: 'A request with this Idempotency-Key is still running',
  [ErrorCode.RESPONSE_NOT_REPLAYABLE]: 'The original response cannot be replayed',
  [ErrorCode.OUTCOME_UNKNOWN]: 'The outcome of the request with this Idempotency-Key is unknown',
  [ErrorCode.STORE_FAILED]: 'Idempotency store unavailable',
}

/** A problem+json reply: `type` is the code's URN, so a client can branch on either `type` or `code`. */
export function problemReply(code: ProblemCode, detail: string, retryAfterSeconds?: number): LayerReply {
  const status = problemStatus[code]
  const body = { type: `urn:idem:problem:${code}`, title: titles[code], status, detail, code }
  const headers: [string, string][] = [['content-type', 'application/problem+json']]
  if (retryAfterSeconds !== undefined) headers.push(['retry-after', String(retryAfterSeconds)])
  return { status, headers, body: Buffer.from(JSON.stringify(body)) }
}
