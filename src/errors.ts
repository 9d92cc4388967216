/**
 * Every failure idem reports is an IdemError with a stable `code`. Codes are
 * part of the public contract: users branch on them, metrics label by them.
 */
export const ErrorCode = {
  INVALID_CONFIG: 'INVALID_CONFIG',
  INVALID_KEY: 'INVALID_KEY',
  INVALID_MESSAGE: 'INVALID_MESSAGE',
  CONFLICT: 'CONFLICT',
  IN_FLIGHT: 'IN_FLIGHT',
  HANDLER_FAILED: 'HANDLER_FAILED',
  HANDLER_LOAD_FAILED: 'HANDLER_LOAD_FAILED',
  NO_HANDLER: 'NO_HANDLER',
  LEASE_LOST: 'LEASE_LOST',
  WORKER_DIED: 'WORKER_DIED',
  ACTOR_FAILED: 'ACTOR_FAILED',
  STORE_FAILED: 'STORE_FAILED',
  /** The store's server is a version idem cannot run on (Redis before 7.0). */
  STORE_UNSUPPORTED: 'STORE_UNSUPPORTED',
  /** The store's server may lose records on its own (a Redis that evicts keys): refused unless allowed explicitly. */
  STORE_UNSAFE: 'STORE_UNSAFE',
  /** The store lost its data while engines used it (its identity record vanished: a Redis restarted without persistence, a flush): it fails closed until an operator acknowledges the loss (`idem store ack-reset`). */
  STORE_RESET: 'STORE_RESET',
  /** The store's identity record names another layout (another hashTags) or is not idem's: records would be looked up under other keys, so the engine is refused. */
  STORE_LAYOUT_MISMATCH: 'STORE_LAYOUT_MISMATCH',
  RESULT_TOO_LARGE: 'RESULT_TOO_LARGE',
  RESULT_NOT_SERIALIZABLE: 'RESULT_NOT_SERIALIZABLE',
  REPLICA_SHORTFALL: 'REPLICA_SHORTFALL',
  ENGINE_CLOSED: 'ENGINE_CLOSED',
  /** A handler did not end within handlerTimeoutMs: the reason its context.signal is aborted with. */
  HANDLER_TIMEOUT: 'HANDLER_TIMEOUT',
  /**
   * The key's effect may or may not have happened (a handler that timed out, or
   * threw outcomeUnknown()): the key is UNKNOWN, never run again and never acked
   * until a reconcile hook or an operator (`idem keys resolve`) decides.
   */
  OUTCOME_UNKNOWN: 'OUTCOME_UNKNOWN',
  BLOOM_SNAPSHOT_INVALID: 'BLOOM_SNAPSHOT_INVALID',
  WASM_UNAVAILABLE: 'WASM_UNAVAILABLE',
  /** A SQL store found tables it did not create, or created with another layout or table count: it refuses to run on them. */
  SCHEMA_MISMATCH: 'SCHEMA_MISMATCH',
  /** A transport's own Redis call failed (read, ack, reclaim): reported, retried; nothing is acked that is not durable. */
  TRANSPORT_FAILED: 'TRANSPORT_FAILED',
  /** An entry came back more often than maxDeliveries without a settled outcome (the consumers holding it died or stopped): dead-lettered, not run again. */
  DELIVERIES_EXHAUSTED: 'DELIVERIES_EXHAUSTED',
  /** Owned mode: the store (or a partitioned queue) records another partition count than this engine's or producer's: keys would map to other partitions, so it is refused. */
  PARTITIONS_MISMATCH: 'PARTITIONS_MISMATCH',
  /** Owned mode: this engine does not own the message's partition (another member does, or it is being handed over or restored): in-flight, never run, never acked. */
  NOT_OWNER: 'NOT_OWNER',
  /** Owned mode: a partition's epoch in the store is below the one this member acquired: it was set back by hand, so nothing is written under it. */
  EPOCH_REGRESSED: 'EPOCH_REGRESSED',
  /** Version-aware keys with transitions: the message's state is not a move allowed from the state the applied version left (the precondition check). */
  ILLEGAL_TRANSITION: 'ILLEGAL_TRANSITION',
  /** HTTP layer: the key's request completed, but its response was not kept (over the body cap, streamed, or written past the layer), so a retry cannot be answered with it. */
  RESPONSE_NOT_REPLAYABLE: 'RESPONSE_NOT_REPLAYABLE',
  /** savePosition or positionOf was given a source, partition or position that is not a non-empty, well-formed string of at most 255 UTF-8 bytes (a partition may also be a non-negative integer). */
  INVALID_POSITION: 'INVALID_POSITION',
  /** savePosition was called after the work of its transaction had returned: the transaction had committed or rolled back without it. */
  TRANSACTION_ENDED: 'TRANSACTION_ENDED',
  /** Strategies: the message's type has no strategy and unknownType is 'invalid' (or typeOf threw for it). */
  UNKNOWN_TYPE: 'UNKNOWN_TYPE',
  /** engine.forget (or `idem keys forget`) of a key in progress, without force: its handler may be running, and forgetting it would let a redelivery run it a second time alongside. */
  KEY_IN_PROGRESS: 'KEY_IN_PROGRESS',
} as const
export type ErrorCode = (typeof ErrorCode)[keyof typeof ErrorCode]

export class IdemError extends Error {
  readonly code: ErrorCode
  /** The idempotency key concerned, when there is one. */
  readonly key?: string

  constructor(code: ErrorCode, message: string, options: { key?: string; cause?: unknown } = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause })
    this.name = 'IdemError'
    this.code = code
    if (options.key !== undefined) this.key = options.key
  }
}

/** Bad configuration: `problems` names every bad field, one line each. */
export class ConfigError extends IdemError {
  readonly problems: readonly string[]
  constructor(problems: readonly string[]) {
    super(ErrorCode.INVALID_CONFIG, `invalid idem config:\n  - ${problems.join('\n  - ')}`)
    this.name = 'ConfigError'
    this.problems = problems
  }
}

/** Same key, already settled with a different payload fingerprint. */
export class ConflictError extends IdemError {
  constructor(key: string, message: string) {
    super(ErrorCode.CONFLICT, message, { key })
    this.name = 'ConflictError'
  }
}

/**
 * What a handler throws when it cannot tell whether its effect happened (a
 * payment call that timed out with no answer): its key becomes UNKNOWN instead
 * of being released for a retry that could pay twice.
 *
 *   throw outcomeUnknown(`gateway gave no answer for payment ${id}`)
 */
export function outcomeUnknown(reason: string): IdemError {
  return new IdemError(ErrorCode.OUTCOME_UNKNOWN, reason)
}

/** Whether a handler's error is outcomeUnknown()'s, by its code: a handler module may load another copy of idem, whose class is not this one. */
export function isOutcomeUnknown(error: unknown): boolean {
  return error instanceof Error && (error as { code?: unknown }).code === ErrorCode.OUTCOME_UNKNOWN
}

/** The message of an Error, or the value as text: for error messages that quote a cause. */
export function errorText(value: unknown): string {
  if (value instanceof Error) return value.message
  return String(value)
}
