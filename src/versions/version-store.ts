/**
 * What a store keeps for version-aware keys (README "Versions and state
 * machines"): per key the highest version applied, the state it left, and at
 * most one claim of a newer version. A key's record lives ttlMs after its last
 * commit; versions are sortable texts (version-order.ts).
 */

/** What a claim found, per key. */
export const VersionClaim = {
  /** No applied version, or an older one, and no live claim of another owner: now claimed under the caller's token. */
  CLAIMED: 0,
  /** The applied version is this one or newer: skip. */
  STALE: 1,
  /** Another owner's claim is live: try again later (per-key order). */
  IN_PROGRESS: 2,
} as const
export type VersionClaim = (typeof VersionClaim)[keyof typeof VersionClaim]

export interface VersionClaims {
  codes: Uint8Array
  /** The applied version (sortable text) and the state it left, per key; undefined when none was applied. */
  applied: (string | undefined)[]
  states: (string | undefined)[]
  /** For STALE: ms until the record expires, so a local cache forgets the applied version when the store does. */
  expiresInMs: Float64Array
}

/** One key's record, as an operator sees it. */
export interface VersionView {
  applied: string | undefined
  state: string | undefined
  /** The version claimed now, with its owner's token; undefined when no claim is live. */
  claimed: string | undefined
  token: string | undefined
  /** ms until the claim's lease ends (0 when none is live). */
  leaseLeftMs: number
  /** ms until the record expires. */
  expiresInMs: number
}

export interface VersionStore {
  /**
   * Per key, atomically: STALE when versions[i] is not newer than the applied
   * one; IN_PROGRESS when another token's lease is live; else claims it
   * (version and the state it would leave) for `token`, lease `leaseMs`. A
   * key appears at most once per call. The record then lives at least
   * leaseMs + ttlMs.
   */
  claim(keys: readonly string[], versions: readonly string[], states: readonly (string | undefined)[], token: string, leaseMs: number, ttlMs: number): Promise<VersionClaims>
  /**
   * The claimed version becomes the applied one (with its state), for ttlMs.
   * `every`: these are all the keys the token still holds (its releases came
   * first), which a store may commit with one write. 1 = applied (or applied
   * earlier by this token: a retried call), 0 = refused: this claim's lease
   * lapsed and the key may have been taken over (fencing).
   */
  commit(keys: readonly string[], token: string, ttlMs: number, every: boolean): Promise<Uint8Array>
  /** Drops this token's claim; the applied version stays. 1 = released or nothing to release, 0 = another token's claim. */
  release(keys: readonly string[], token: string): Promise<Uint8Array>
  /** Extends this token's live claims. 1 = renewed, 0 = lost. */
  renew(keys: readonly string[], token: string, leaseMs: number, ttlMs: number): Promise<Uint8Array>
  inspect(keys: readonly string[]): Promise<(VersionView | undefined)[]>
  close(): Promise<void>
  /** Calls retried, and calls that failed after every retry. */
  readonly health: { retries: number; failures: number }
}
