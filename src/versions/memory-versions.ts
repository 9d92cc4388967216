import type { Clock } from '../clock.js'
import { claimRecord, commitRecord, liveRecord, releaseRecord, renewRecord, viewOf, type VersionRecord } from './version-records.js'
import { VersionClaim, type VersionClaims, type VersionStore, type VersionView } from './version-store.js'

/** The version store of one process (the memory store's counterpart): a Map on the engine's clock. */
export class MemoryVersionStore implements VersionStore {
  readonly health = { retries: 0, failures: 0 }
  private readonly records = new Map<string, VersionRecord>()

  constructor(private readonly clock: Clock) {}

  private live(key: string, now: number): VersionRecord | undefined {
    const record = liveRecord(this.records.get(key), now)
    if (record === undefined) this.records.delete(key)
    return record
  }

  async claim(keys: readonly string[], versions: readonly string[], states: readonly (string | undefined)[], token: string, leaseMs: number, ttlMs: number): Promise<VersionClaims> {
    const now = this.clock.now()
    const n = keys.length
    const answer: VersionClaims = { codes: new Uint8Array(n), applied: new Array(n), states: new Array(n), expiresInMs: new Float64Array(n) }
    for (let i = 0; i < n; i++) {
      const found = this.live(keys[i], now)
      answer.applied[i] = found?.applied
      answer.states[i] = found?.state
      const { code, record } = claimRecord(found, versions[i], states[i], token, now, leaseMs, ttlMs)
      answer.codes[i] = code
      if (code === VersionClaim.STALE) answer.expiresInMs[i] = record!.expiresAt - now
      if (code === VersionClaim.CLAIMED) this.records.set(keys[i], record!)
    }
    return answer
  }

  async commit(keys: readonly string[], token: string, ttlMs: number, _every: boolean): Promise<Uint8Array> {
    const now = this.clock.now()
    return flags(keys, (key) => commitRecord(this.live(key, now), token, now, ttlMs).applied)
  }

  async release(keys: readonly string[], token: string): Promise<Uint8Array> {
    const now = this.clock.now()
    return flags(keys, (key) => {
      const { released, gone } = releaseRecord(this.live(key, now), token)
      if (gone) this.records.delete(key)
      return released
    })
  }

  async renew(keys: readonly string[], token: string, leaseMs: number, ttlMs: number): Promise<Uint8Array> {
    const now = this.clock.now()
    return flags(keys, (key) => renewRecord(this.live(key, now), token, now, leaseMs, ttlMs))
  }

  async inspect(keys: readonly string[]): Promise<(VersionView | undefined)[]> {
    const now = this.clock.now()
    return keys.map((key) => viewOf(this.live(key, now), now))
  }

  async close(): Promise<void> {}
}

function flags(keys: readonly string[], apply: (key: string) => boolean): Uint8Array {
  const out = new Uint8Array(keys.length)
  for (let i = 0; i < keys.length; i++) out[i] = apply(keys[i]) ? 1 : 0
  return out
}
