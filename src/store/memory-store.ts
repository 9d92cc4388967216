import type { Clock } from '../clock.js'
import { KeyState, stateOf, type KeyRecord } from './record-state.js'
import { ClaimCode, type ClaimReplies, type DedupStore } from './store.js'

interface MemoryRecord extends KeyRecord {
  /** The claim call that created it. */
  claimCall: number
}

/** Expired records are swept this many at a time, every this many claims, so no call pays for the whole map. */
const SWEEP_EVERY = 4096
const SWEEP_BATCH = 4096

/**
 * The whole state machine in a Map, for tests and single-process use. Not
 * durable: records die with the thread that holds them.
 */
export class MemoryStore implements DedupStore {
  private readonly records = new Map<string, MemoryRecord>()
  /** Every call applies before it returns its promise. */
  readonly ordered = true
  private calls = 0
  private claimsSinceSweep = 0
  private sweepCursor: Iterator<[string, MemoryRecord]> | undefined

  constructor(private readonly clock: Clock) {}

  get size(): number {
    return this.records.size
  }

  async claim(keys: readonly string[], fingerprints: readonly (string | undefined)[], token: string, leaseMs: number): Promise<ClaimReplies> {
    const now = this.clock.now()
    const n = keys.length
    const codes = new Uint8Array(n)
    const storedFingerprints: (string | undefined)[] = new Array(n)
    const results: unknown[] = new Array(n)
    const doneExpiresInMs = new Float64Array(n)
    // Records claimed by this call carry its stamp: a second copy of a key in
    // the batch is a REPEAT, never "my own claim" (that answer is for a retried call).
    const call = ++this.calls
    for (let i = 0; i < n; i++) {
      const key = keys[i]
      const record = this.records.get(key)
      switch (stateOf(record, now)) {
        case KeyState.ABSENT:
        case KeyState.LEASE_EXPIRED: {
          this.records.set(key, { done: false, token, fingerprint: fingerprints[i], result: undefined, expiresAt: now + leaseMs, claimCall: call })
          codes[i] = ClaimCode.CLAIMED
          break
        }
        case KeyState.IN_PROGRESS:
          if (record!.claimCall === call) codes[i] = ClaimCode.REPEAT
          else if (record!.token === token) codes[i] = ClaimCode.CLAIMED
          else {
            codes[i] = ClaimCode.IN_PROGRESS
            storedFingerprints[i] = record!.fingerprint
          }
          break
        case KeyState.DONE:
          codes[i] = ClaimCode.DONE
          storedFingerprints[i] = record!.fingerprint
          results[i] = record!.result
          doneExpiresInMs[i] = record!.expiresAt - now
          break
      }
    }
    this.claimsSinceSweep += n
    if (this.claimsSinceSweep >= SWEEP_EVERY) this.sweep(now)
    return { codes, fingerprints: storedFingerprints, results, doneExpiresInMs }
  }

  async commit(keys: readonly string[], results: readonly unknown[] | undefined, token: string, ttlMs: number): Promise<Uint8Array> {
    const now = this.clock.now()
    const applied = this.whereOwned(keys, token, now, (record, i) => {
      record.done = true
      record.result = results?.[i]
      record.expiresAt = now + ttlMs
    })
    // A commit this token already applied answers 1 again, like a retried Redis call whose reply was lost.
    for (let i = 0; i < keys.length; i++) {
      const record = this.records.get(keys[i])
      if (applied[i] === 0 && stateOf(record, now) === KeyState.DONE && record!.token === token) applied[i] = 1
    }
    return applied
  }

  /** Absent (or lapsed) already is what a release wants, so it counts as applied; another owner's record is fenced. */
  async release(keys: readonly string[], token: string): Promise<Uint8Array> {
    const now = this.clock.now()
    const applied = this.whereOwned(keys, token, now, (_record, i) => this.records.delete(keys[i]))
    for (let i = 0; i < keys.length; i++) {
      const state = stateOf(this.records.get(keys[i]), now)
      if (state === KeyState.ABSENT || state === KeyState.LEASE_EXPIRED) applied[i] = 1
    }
    return applied
  }

  async renew(keys: readonly string[], token: string, leaseMs: number): Promise<Uint8Array> {
    const now = this.clock.now()
    return this.whereOwned(keys, token, now, (record) => {
      record.expiresAt = now + leaseMs
    })
  }

  async close(): Promise<void> {
    this.records.clear()
  }

  /** Applies `change` to each key whose live lease `token` holds; the others are fenced (0). */
  private whereOwned(keys: readonly string[], token: string, now: number, change: (record: MemoryRecord, i: number) => void): Uint8Array {
    const applied = new Uint8Array(keys.length)
    for (let i = 0; i < keys.length; i++) {
      const record = this.records.get(keys[i])
      if (stateOf(record, now) === KeyState.IN_PROGRESS && record!.token === token) {
        change(record!, i)
        applied[i] = 1
      }
    }
    return applied
  }

  private sweep(now: number): void {
    this.claimsSinceSweep = 0
    this.sweepCursor ??= this.records.entries()
    for (let i = 0; i < SWEEP_BATCH; i++) {
      const next = this.sweepCursor.next()
      if (next.done) {
        this.sweepCursor = undefined
        return
      }
      const [key, record] = next.value
      const state = stateOf(record, now)
      if (state === KeyState.ABSENT || state === KeyState.LEASE_EXPIRED) this.records.delete(key)
    }
  }
}
