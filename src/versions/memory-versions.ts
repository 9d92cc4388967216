import type { Clock } from '../clock.js'
import { compareVersionTexts } from './version-order.js'
import { VersionClaim, type VersionClaims, type VersionStore, type VersionView } from './version-store.js'

interface VersionRecord {
  applied?: string
  state?: string
  /** The token of the last commit, so a retried commit answers applied. */
  committedBy?: string
  token?: string
  claimed?: string
  claimedState?: string
  leaseEnd: number
  expiresAt: number
}

/** The version store of one process (the memory store's counterpart): a Map on the engine's clock. */
export class MemoryVersionStore implements VersionStore {
  readonly health = { retries: 0, failures: 0 }
  private readonly records = new Map<string, VersionRecord>()

  constructor(private readonly clock: Clock) {}

  private live(key: string, now: number): VersionRecord | undefined {
    const record = this.records.get(key)
    if (record === undefined || record.expiresAt > now) return record
    this.records.delete(key)
    return undefined
  }

  async claim(keys: readonly string[], versions: readonly string[], states: readonly (string | undefined)[], token: string, leaseMs: number, ttlMs: number): Promise<VersionClaims> {
    const now = this.clock.now()
    const codes = new Uint8Array(keys.length)
    const applied: (string | undefined)[] = new Array(keys.length)
    const appliedStates: (string | undefined)[] = new Array(keys.length)
    const expiresInMs = new Float64Array(keys.length)
    for (let i = 0; i < keys.length; i++) {
      let record = this.live(keys[i], now)
      applied[i] = record?.applied
      appliedStates[i] = record?.state
      if (record?.applied !== undefined && compareVersionTexts(record.applied, versions[i]) >= 0) {
        codes[i] = VersionClaim.STALE
        expiresInMs[i] = record.expiresAt - now
      }
      else if (record?.token !== undefined && record.token !== token && record.leaseEnd > now) codes[i] = VersionClaim.IN_PROGRESS
      else {
        record ??= { leaseEnd: 0, expiresAt: 0 }
        record.token = token
        record.claimed = versions[i]
        record.claimedState = states[i]
        record.leaseEnd = now + leaseMs
        record.expiresAt = Math.max(record.expiresAt, now + leaseMs + ttlMs)
        this.records.set(keys[i], record)
        codes[i] = VersionClaim.CLAIMED
      }
    }
    return { codes, applied, states: appliedStates, expiresInMs }
  }

  async commit(keys: readonly string[], token: string, ttlMs: number, _every: boolean): Promise<Uint8Array> {
    const now = this.clock.now()
    return answer(keys, (key) => {
      const record = this.live(key, now)
      if (record === undefined) return false
      if (record.token !== token) return record.token === undefined && record.committedBy === token
      // The lease lapsed: the key may have been taken over since, so nothing is applied (the Redis store fences alike).
      if (record.leaseEnd <= now) return false
      const newer = record.applied === undefined || compareVersionTexts(record.claimed!, record.applied) > 0
      if (newer) {
        record.applied = record.claimed
        record.state = record.claimedState
        record.committedBy = token
        record.expiresAt = now + ttlMs
      }
      dropClaim(record)
      return newer
    })
  }

  async release(keys: readonly string[], token: string): Promise<Uint8Array> {
    const now = this.clock.now()
    return answer(keys, (key) => {
      const record = this.live(key, now)
      if (record?.token === undefined) return true
      if (record.token !== token) return false
      if (record.applied === undefined) this.records.delete(key)
      else dropClaim(record)
      return true
    })
  }

  async renew(keys: readonly string[], token: string, leaseMs: number, ttlMs: number): Promise<Uint8Array> {
    const now = this.clock.now()
    return answer(keys, (key) => {
      const record = this.live(key, now)
      if (record?.token !== token || record.leaseEnd <= now) return false
      record.leaseEnd = now + leaseMs
      record.expiresAt = Math.max(record.expiresAt, now + leaseMs + ttlMs)
      return true
    })
  }

  async inspect(keys: readonly string[]): Promise<(VersionView | undefined)[]> {
    const now = this.clock.now()
    return keys.map((key) => {
      const record = this.live(key, now)
      if (record === undefined) return undefined
      const leased = record.token !== undefined && record.leaseEnd > now
      return {
        applied: record.applied,
        state: record.state,
        claimed: leased ? record.claimed : undefined,
        token: leased ? record.token : undefined,
        leaseLeftMs: leased ? record.leaseEnd - now : 0,
        expiresInMs: record.expiresAt - now,
      }
    })
  }

  async close(): Promise<void> {}
}

function dropClaim(record: VersionRecord): void {
  record.token = undefined
  record.claimed = undefined
  record.claimedState = undefined
  record.leaseEnd = 0
}

function answer(keys: readonly string[], apply: (key: string) => boolean): Uint8Array {
  const out = new Uint8Array(keys.length)
  for (let i = 0; i < keys.length; i++) out[i] = apply(keys[i]) ? 1 : 0
  return out
}
