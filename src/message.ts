import type { IdemError } from './errors.js'

/** One message as the engine sees it. */
export interface Message<P = unknown> {
  /** The idempotency key: a non-empty string of at most 1024 UTF-8 bytes, well-formed, no U+0000. */
  key: string
  /** Optional tenant or namespace: the same key under two namespaces is two keys. Same rules as key. */
  namespace?: string
  payload?: P
  /**
   * Optional digest of the payload. A message whose key is settled with another
   * fingerprint gets the `conflict` verdict instead of `duplicate`.
   */
  fingerprint?: string
}

export const Verdict = {
  NEW: 'new',
  DUPLICATE: 'duplicate',
  IN_FLIGHT: 'in-flight',
  CONFLICT: 'conflict',
  INVALID: 'invalid',
} as const
export type Verdict = (typeof Verdict)[keyof typeof Verdict]

/**
 * What happened to one message. `new`: the handler ran (result, or error when it
 * threw: the claim was then released and a redelivery runs it again). `duplicate`:
 * skipped, with the stored result when one was kept. `in-flight`: another owner
 * holds a live lease; retry later, do not ack. `conflict` and `invalid`: error says why.
 */
export interface Outcome<R = unknown> {
  key: string
  verdict: Verdict
  result?: R
  error?: IdemError
}

/** What a handler learns about its run besides the message. */
export interface HandlerContext {
  /**
   * The claim this run holds: its owner token and the key as the store names
   * it (namespace-scoped). A transactional store uses them to write the DONE
   * record inside the handler's own database transaction. Absent for shadow
   * runs of duplicates, which hold no claim.
   */
  claim?: { token: string; storeKey: string }
}

/** A handler: the user's business effect for one message. */
export type Handler<P = unknown, R = unknown> = (message: Message<P>, context: HandlerContext) => R | Promise<R>
