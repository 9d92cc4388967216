import { errorText, ErrorCode, IdemError } from './errors.js'

/** One message as the engine sees it. */
export interface Message<P = unknown> {
  /** The idempotency key: a non-empty string of at most 1024 UTF-8 bytes, well-formed, no U+0000. */
  key: string
  /** Optional tenant or namespace: the same key under two namespaces is two keys. Same rules as key. */
  namespace?: string
  /** Optional message type: with strategies (README "Strategies"), picks the strategy its key is handled by. */
  type?: string
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
  /** Version-aware keys: a version older than the one applied; skipped and acked. */
  STALE: 'stale',
} as const
export type Verdict = (typeof Verdict)[keyof typeof Verdict]

/**
 * What happened to one message. `new`: the handler ran (result, or error when it
 * threw: the claim was then released and a redelivery runs it again). `duplicate`:
 * skipped, with the stored result when one was kept (version-aware keys: the
 * applied version itself). `stale` (version-aware keys): older than the applied
 * version, skipped. `in-flight`: another owner
 * holds a live lease; retry later, do not ack. `conflict` and `invalid`: error says why.
 */
export interface Outcome<R = unknown> {
  key: string
  verdict: Verdict
  result?: R
  error?: IdemError
  /**
   * Shadow rollout: the handler ran anyway and `verdict` says how it went
   * (`new`, with its result or HANDLER_FAILED), so transports settle the
   * message as they would without idem; this is what enforce would have done
   * instead: its verdict and error code. Absent when enforce would have run
   * it too.
   */
  shadow?: { verdict: Verdict; code?: ErrorCode }
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
  /**
   * Aborted when the engine is closing (close()), or when the handler runs past
   * handlerTimeoutMs (reason: HANDLER_TIMEOUT; its key is UNKNOWN by then). A
   * long handler should stop and throw, so its claim is released and a
   * redelivery runs it again. A handler module in a worker thread gets one only
   * with handlerTimeoutMs.
   */
  signal?: AbortSignal
}

/**
 * A reconcile hook's answer about a key whose outcome is UNKNOWN: `'done'` (or
 * `{ result }`, done with that result) makes the key DONE, `'not-done'` makes it
 * absent so the next delivery runs the handler, `'unknown'` asks again later.
 */
export type ReconcileAnswer = 'done' | 'not-done' | 'unknown' | { result: unknown }

/**
 * Asks the business system whether the effect of `message` happened (the
 * RocketMQ check-back, generalised): called when a delivery meets its key
 * UNKNOWN, bounded by handlerTimeoutMs (30 s when that is off), and retried
 * with backoff up to reconcileAttempts times per key.
 */
export type ReconcileHook<P = unknown> = (message: Message<P>, context: { key: string; signal: AbortSignal }) => ReconcileAnswer | Promise<ReconcileAnswer>

/** A handler: the user's business effect for one message. */
export type Handler<P = unknown, R = unknown> = (message: Message<P>, context: HandlerContext) => R | Promise<R>

/** How a transport finds the message in what it delivers (a job, a stream entry): the user's functions of it. */
export interface MessageFunctions<T> {
  /** The idempotency key. Required. */
  keyOf: (delivery: T) => unknown
  /** The tenant or namespace; undefined means none. */
  namespaceOf?: (delivery: T) => unknown
  /** The payload digest; undefined sends none. */
  fingerprintOf?: (delivery: T) => unknown
}

/**
 * The message of one delivery, for every transport. A function that throws
 * fails that delivery alone: INVALID_MESSAGE naming the function and the
 * delivery (`nameOf`, called only then), with `key` set when keyOf had
 * answered with a string. What the functions return is not judged here: the
 * router words a bad key or namespace as for any message (INVALID_KEY).
 */
export function messageOf<T, P = never>(delivery: T, functions: MessageFunctions<T>, nameOf: (delivery: T) => string, payload?: P): Message<P> {
  const key = call('keyOf', functions.keyOf, delivery, nameOf, undefined)
  const message = { key } as Message<P>
  if (payload !== undefined) message.payload = payload
  if (functions.namespaceOf !== undefined) {
    const namespace = call('namespaceOf', functions.namespaceOf, delivery, nameOf, key)
    if (namespace !== undefined) message.namespace = namespace as string
  }
  if (functions.fingerprintOf !== undefined) {
    const fingerprint = call('fingerprintOf', functions.fingerprintOf, delivery, nameOf, key)
    if (fingerprint !== undefined) message.fingerprint = fingerprint as string
  }
  return message
}

function call<T>(name: string, fn: (delivery: T) => unknown, delivery: T, nameOf: (delivery: T) => string, key: unknown): unknown {
  try {
    return fn(delivery)
  } catch (error) {
    const context = typeof key === 'string' ? { key, cause: error } : { cause: error }
    throw new IdemError(ErrorCode.INVALID_MESSAGE, `${name} threw for ${nameOf(delivery)}: ${errorText(error)}`, context)
  }
}
