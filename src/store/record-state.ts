/**
 * The states of DESIGN.md §2, and the one function that decides a record's
 * state. No caller compares expiry timestamps itself.
 */
export const KeyState = {
  ABSENT: 0,
  IN_PROGRESS: 1,
  /** IN_PROGRESS whose lease lapsed: its owner is presumed dead, anyone may claim it. */
  LEASE_EXPIRED: 2,
  DONE: 3,
  /** The handler's effect may or may not have happened: neither claimable nor done until resolved (or its TTL ends). */
  UNKNOWN: 4,
} as const
export type KeyState = (typeof KeyState)[keyof typeof KeyState]

export interface KeyRecord {
  done: boolean
  /** UNKNOWN (done is false): kept until resolved or expiresAt. */
  unknown?: boolean
  /** Owner token of the claim that created or last renewed the record. */
  token: string
  fingerprint: string | undefined
  result: unknown
  /** Lease end while in progress, TTL end once done or unknown; on the store's clock. */
  expiresAt: number
}

export function stateOf(record: KeyRecord | undefined, now: number): KeyState {
  if (record === undefined) return KeyState.ABSENT
  if (record.done) return record.expiresAt > now ? KeyState.DONE : KeyState.ABSENT
  if (record.unknown === true) return record.expiresAt > now ? KeyState.UNKNOWN : KeyState.ABSENT
  return record.expiresAt > now ? KeyState.IN_PROGRESS : KeyState.LEASE_EXPIRED
}
