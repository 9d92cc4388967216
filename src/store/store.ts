/**
 * The contract every store implements: the state machine of DESIGN.md §2, one
 * call per shard batch (a store backed by a server makes it one round trip).
 */

/** What a claim found, per key. */
export const ClaimCode = {
  /** Absent or lease expired: now IN_PROGRESS under the caller's token. */
  CLAIMED: 0,
  /** DONE within its TTL: a duplicate. */
  DONE: 1,
  /** Another owner holds a live lease. */
  IN_PROGRESS: 2,
  /** The key appeared earlier in this same batch: decide it after that one settles. */
  REPEAT: 3,
  /** UNKNOWN: a handler's effect may or may not have happened; never run, never acked until reconciled (the stored fingerprint is answered). */
  UNKNOWN: 4,
} as const
export type ClaimCode = (typeof ClaimCode)[keyof typeof ClaimCode]

/** What a commit did, per key. */
export const CommitCode = {
  /** Not IN_PROGRESS under this token any more (the lease lapsed): fenced, nothing written. */
  REFUSED: 0,
  COMMITTED: 1,
  /** DONE, but the result was over the store's size cap and is not kept. */
  RESULT_TOO_LARGE: 2,
  /** DONE, but the result could not be serialized and is not kept. */
  RESULT_NOT_SERIALIZABLE: 3,
} as const
export type CommitCode = (typeof CommitCode)[keyof typeof CommitCode]

/** Running totals a store keeps about its own calls (the actor takes and resets them). */
export interface StoreHealth {
  /** Calls that failed and were tried again. */
  retries: number
  /** Calls that failed after every retry: their batch failed closed. */
  failures: number
  /** Times the store found it had lost its data (Redis: its identity record gone); it fails closed until acknowledged. Optional: a custom store may leave it out. */
  resets?: number
  /** Keys the server evicted since the last count (Redis with allowEviction): settled keys among them may run again. Optional, like resets. */
  evictions?: number
}

export interface ClaimReplies {
  codes: Uint8Array
  /** For DONE, IN_PROGRESS and UNKNOWN: the fingerprint stored with the key. */
  fingerprints: (string | undefined)[]
  /**
   * For UNKNOWN: the token of the claim that was marked, naming this episode
   * of the key, so an answer about it cannot resolve a later one (resolve's `token`).
   */
  unknownTokens?: (string | undefined)[]
  /** For DONE: the stored result, when one was kept. */
  results: unknown[]
  /**
   * For DONE, when the store can tell: ms until the record expires, so the
   * LRU forgets the key when the store does. Without it the LRU assumes a full TTL.
   */
  doneExpiresInMs?: Float64Array
}

/** One key's live record, as an operator sees it (`inspect`). */
export interface KeyView {
  state: 'in-progress' | 'done' | 'unknown'
  /** Owner token of the claim that wrote the record. */
  token: string
  fingerprint: string | undefined
  /** The kept result, for a done key that kept one. */
  result: unknown
  /** ms until the lease ends (in progress) or the record expires (done, unknown), on the store's clock. */
  expiresInMs: number
}

/**
 * What the shard actors call, one call per batch. Every store is a StoreBase
 * (store-base.ts), which implements this once over the backend's primitives.
 */
export interface DedupStore {
  /**
   * Claim every key for `token` with a lease; a key may appear twice (REPEAT).
   * `ttlMs` is the TTL a commit will give: a store that keeps the lease apart
   * from the key's record (Redis) sizes the record to outlive the lease by it.
   */
  claim(keys: readonly string[], fingerprints: readonly (string | undefined)[], token: string, leaseMs: number, ttlMs: number): Promise<ClaimReplies>
  /**
   * IN_PROGRESS(token) → DONE. Per key a CommitCode: REFUSED when it is not our live lease (fenced).
   * A batch's releases come before its commit: a store may commit every key a token still holds at once.
   */
  commit(keys: readonly string[], results: readonly unknown[] | undefined, token: string, ttlMs: number): Promise<Uint8Array>
  /** IN_PROGRESS(token) → absent, so a redelivery runs the handler again. 1 = applied, 0 = fenced. */
  release(keys: readonly string[], token: string): Promise<Uint8Array>
  /**
   * IN_PROGRESS(token) → UNKNOWN{token}, kept for ttlMs like a DONE record:
   * the handler timed out or could not tell whether its effect happened.
   * Claims answer UNKNOWN until resolve(). A lease that lapsed with nobody
   * taking the key over is still marked (the record still names this token):
   * leaving it claimable would let a redelivery repeat an effect that may
   * have happened. 1 = marked (now, or earlier by this token: a retried
   * call), 0 = fenced (another owner holds the key, or it is gone).
   */
  markUnknown(keys: readonly string[], token: string, ttlMs: number): Promise<Uint8Array>
  /**
   * UNKNOWN → DONE (done[i], keeping results[i] when given, for ttlMs) or →
   * absent (the next delivery runs the handler): a reconcile hook's answer
   * about the episode marked under `token`, or an operator's about whatever
   * episode is there (no token). Per key a CommitCode: REFUSED = not UNKNOWN
   * (absent, in progress, done) or marked under another token: nothing
   * written; COMMITTED = resolved; RESULT_TOO_LARGE / RESULT_NOT_SERIALIZABLE
   * = resolved done, the result not kept.
   */
  resolve(keys: readonly string[], done: readonly boolean[], results: readonly unknown[] | undefined, ttlMs: number, token?: string): Promise<Uint8Array>
  /** Extend live leases held by token (`ttlMs` as for claim). 1 = renewed, 0 = lost. */
  renew(keys: readonly string[], token: string, leaseMs: number, ttlMs: number): Promise<Uint8Array>
  /** The live record of each key, undefined for an absent (or lapsed, or expired) one. Admin reads: no lease is taken. */
  inspect(keys: readonly string[]): Promise<(KeyView | undefined)[]>
  /**
   * Removes each key's record whatever its state, so the next delivery of the
   * key runs its handler (an operator's decision, never the engine's).
   * 1 = a live record was removed, 0 = the key was absent already. The owner
   * of a forgotten in-progress key is not told, and on Redis its commit may
   * still answer committed (a batch commits through its lease record): forget
   * an in-progress key once its owner is gone.
   */
  forget(keys: readonly string[]): Promise<Uint8Array>
  /**
   * Removes every record of the namespace (keys "namespace NUL key", as the
   * router scopes them), whatever its state, in bounded steps; records of
   * other namespaces and keys without one are untouched. Returns how many
   * records went (expired ones not yet swept count too). An operator's call,
   * like forget, with forget's caveat about in-progress keys.
   */
  purge(namespace: string): Promise<number>
  close(): Promise<void>
  readonly health?: StoreHealth
  /**
   * True when calls are applied in the order they are made (one connection):
   * a claim made right after a commit, before its reply, sees that commit.
   */
  readonly ordered?: boolean
}
