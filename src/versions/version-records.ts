/**
 * The rules of version-aware records, once, over a record in memory: the
 * memory store keeps such records in a Map, the SQL stores read them under a
 * row lock, apply these rules and write back what changed. (Redis applies
 * the same rules in its Lua scripts.)
 */
import { compareVersionTexts } from './version-order.js'
import { VersionClaim, type VersionView } from './version-store.js'

export interface VersionRecord {
  applied?: string
  state?: string
  /** The token of the last commit, so a retried commit answers applied. */
  committedBy?: string
  /** The live (or lapsed) claim: its token, version, the state it would leave, and its lease end. */
  token?: string
  claimed?: string
  claimedState?: string
  leaseEnd: number
  expiresAt: number
}

/** A record as a store finds it: undefined once it expired. */
export function liveRecord(record: VersionRecord | undefined, now: number): VersionRecord | undefined {
  return record !== undefined && record.expiresAt > now ? record : undefined
}

/** DESIGN of the claim (version-store.ts): stale, another token's live claim, or claimed now (the record is created or changed). */
export function claimRecord(found: VersionRecord | undefined, version: string, state: string | undefined, token: string, now: number, leaseMs: number, ttlMs: number): { code: VersionClaim; record: VersionRecord | undefined } {
  if (found?.applied !== undefined && compareVersionTexts(found.applied, version) >= 0) return { code: VersionClaim.STALE, record: found }
  if (found?.token !== undefined && found.token !== token && found.leaseEnd > now) return { code: VersionClaim.IN_PROGRESS, record: found }
  const record: VersionRecord = found ?? { leaseEnd: 0, expiresAt: 0 }
  record.token = token
  record.claimed = version
  record.claimedState = state
  record.leaseEnd = now + leaseMs
  record.expiresAt = Math.max(record.expiresAt, now + leaseMs + ttlMs)
  return { code: VersionClaim.CLAIMED, record }
}

/** Applies this token's claim; refused once its lease lapsed (the key may have been taken over). Returns whether it is applied and whether the record changed. */
export function commitRecord(record: VersionRecord | undefined, token: string, now: number, ttlMs: number): { applied: boolean; changed: boolean } {
  if (record === undefined) return { applied: false, changed: false }
  if (record.token !== token) return { applied: record.token === undefined && record.committedBy === token, changed: false }
  if (record.leaseEnd <= now) return { applied: false, changed: false }
  const newer = record.applied === undefined || compareVersionTexts(record.claimed!, record.applied) > 0
  if (newer) {
    record.applied = record.claimed
    record.state = record.claimedState
    record.committedBy = token
    record.expiresAt = now + ttlMs
  }
  dropClaim(record)
  return { applied: newer, changed: true }
}

/** Drops this token's claim. `gone`: the record holds nothing any more and is deleted. */
export function releaseRecord(record: VersionRecord | undefined, token: string): { released: boolean; changed: boolean; gone: boolean } {
  if (record?.token === undefined) return { released: true, changed: false, gone: false }
  if (record.token !== token) return { released: false, changed: false, gone: false }
  if (record.applied === undefined) return { released: true, changed: true, gone: true }
  dropClaim(record)
  return { released: true, changed: true, gone: false }
}

export function renewRecord(record: VersionRecord | undefined, token: string, now: number, leaseMs: number, ttlMs: number): boolean {
  if (record?.token !== token || record.leaseEnd <= now) return false
  record.leaseEnd = now + leaseMs
  record.expiresAt = Math.max(record.expiresAt, now + leaseMs + ttlMs)
  return true
}

export function viewOf(record: VersionRecord | undefined, now: number): VersionView | undefined {
  if (record === undefined) return undefined
  const leased = record.token !== undefined && record.leaseEnd > now
  if (record.applied === undefined && !leased) return undefined
  return {
    applied: record.applied,
    state: record.state,
    claimed: leased ? record.claimed : undefined,
    token: leased ? record.token : undefined,
    leaseLeftMs: leased ? record.leaseEnd - now : 0,
    expiresInMs: record.expiresAt - now,
  }
}

function dropClaim(record: VersionRecord): void {
  record.token = undefined
  record.claimed = undefined
  record.claimedState = undefined
  record.leaseEnd = 0
}
