import type { Clock } from '../clock.js'
import { KeyState, stateOf, type KeyRecord } from './record-state.js'
import { plainValues, StoreBase, type GroupClaim, type KeyGroup, type StoredRecord } from './store-base.js'
import { ClaimCode } from './store.js'

/**
 * Expired records are swept in slices, every this many claims, so no call pays
 * for the whole map. A slice visits twice as many records as were claimed since
 * the last one: new keys are appended behind the cursor, and a cursor no faster
 * than they arrive would never reach the end and start over.
 */
const SWEEP_EVERY = 4096

/**
 * The whole state machine in a Map, for tests and single-process use. Not
 * durable: records die with the thread that holds them. Values are kept as
 * they are (no JSON, no cap): they never leave the thread.
 */
export class MemoryStore extends StoreBase {
  /** Every call applies before it returns its promise. */
  readonly ordered = true
  private readonly records = new Map<string, KeyRecord>()
  private claimsSinceSweep = 0
  private sweepCursor: Iterator<[string, KeyRecord]> | undefined

  constructor(private readonly clock: Clock) {
    super({ name: 'memory', retries: 0, retryBackoffMs: 0, maxResultBytes: Infinity, values: plainValues })
  }

  get size(): number {
    return this.records.size
  }

  protected group(_keys: readonly string[], positions: readonly number[]): KeyGroup[] {
    return [{ positions }]
  }

  protected async claimGroup(g: KeyGroup, keys: readonly string[], fingerprints: readonly unknown[], token: string, leaseMs: number): Promise<GroupClaim> {
    const now = this.clock.now()
    const { positions } = g
    const n = positions.length
    const answer: GroupClaim = { codes: new Uint8Array(n), fingerprints: new Array(n), results: new Array(n), expiresInMs: new Float64Array(n) }
    for (let j = 0; j < n; j++) {
      const i = positions[j]
      const record = this.records.get(keys[i])
      const state = stateOf(record, now)
      // Our own live claim is a retried call's: it stays ours.
      if (state === KeyState.ABSENT || state === KeyState.LEASE_EXPIRED || (state === KeyState.IN_PROGRESS && record!.token === token)) {
        this.records.set(keys[i], { done: false, token, fingerprint: fingerprints[i] as string | undefined, result: undefined, expiresAt: now + leaseMs })
        answer.codes[j] = ClaimCode.CLAIMED
        continue
      }
      answer.codes[j] = state === KeyState.DONE ? ClaimCode.DONE : state === KeyState.UNKNOWN ? ClaimCode.UNKNOWN : ClaimCode.IN_PROGRESS
      if (state === KeyState.UNKNOWN) (answer.tokens ??= new Array(n))[j] = record!.token
      answer.fingerprints[j] = record!.fingerprint
      answer.results[j] = record!.result
      ;(answer.expiresInMs as Float64Array)[j] = record!.expiresAt - now
    }
    this.claimsSinceSweep += n
    if (this.claimsSinceSweep >= SWEEP_EVERY) this.sweep(now)
    return answer
  }

  protected async commitGroup(g: KeyGroup, keys: readonly string[], results: readonly unknown[] | undefined, token: string, ttlMs: number): Promise<Uint8Array> {
    const now = this.clock.now()
    return this.each(g, keys, (record, i) => {
      const state = stateOf(record, now)
      if (state === KeyState.IN_PROGRESS && record!.token === token) {
        record!.done = true
        record!.result = results?.[i]
        record!.expiresAt = now + ttlMs
        return true
      }
      // A commit this token already applied answers 1 again, like a retried Redis call whose reply was lost.
      return state === KeyState.DONE && record!.token === token
    })
  }

  /** Absent (or lapsed) already is what a release wants, so it counts as applied; another owner's record is fenced. */
  protected async releaseGroup(g: KeyGroup, keys: readonly string[], token: string): Promise<Uint8Array> {
    const now = this.clock.now()
    return this.each(g, keys, (record, i) => {
      const state = stateOf(record, now)
      if (state === KeyState.IN_PROGRESS && record!.token === token) return this.records.delete(keys[i])
      return state === KeyState.ABSENT || state === KeyState.LEASE_EXPIRED
    })
  }

  protected async renewGroup(g: KeyGroup, keys: readonly string[], token: string, leaseMs: number): Promise<Uint8Array> {
    const now = this.clock.now()
    return this.each(g, keys, (record) => {
      if (stateOf(record, now) !== KeyState.IN_PROGRESS || record!.token !== token) return false
      record!.expiresAt = now + leaseMs
      return true
    })
  }

  protected async markUnknownGroup(g: KeyGroup, keys: readonly string[], token: string, ttlMs: number): Promise<Uint8Array> {
    const now = this.clock.now()
    return this.each(g, keys, (record) => {
      const state = stateOf(record, now)
      // A lapsed lease nobody took over still names this token: marked all the same.
      if ((state === KeyState.IN_PROGRESS || state === KeyState.LEASE_EXPIRED) && record!.token === token) {
        record!.unknown = true
        record!.expiresAt = now + ttlMs
        return true
      }
      return state === KeyState.UNKNOWN && record!.token === token
    })
  }

  protected async resolveGroup(g: KeyGroup, keys: readonly string[], done: readonly boolean[], results: readonly unknown[] | undefined, ttlMs: number, token: string | undefined): Promise<Uint8Array> {
    const now = this.clock.now()
    return this.each(g, keys, (record, i) => {
      if (stateOf(record, now) !== KeyState.UNKNOWN || (token !== undefined && record!.token !== token)) return false
      if (!done[i]) return this.records.delete(keys[i])
      record!.unknown = false
      record!.done = true
      record!.result = results?.[i]
      record!.expiresAt = now + ttlMs
      return true
    })
  }

  protected async inspectGroup(g: KeyGroup, keys: readonly string[]): Promise<(StoredRecord | undefined)[]> {
    const now = this.clock.now()
    return g.positions.map((i) => {
      const record = this.records.get(keys[i])
      const state = stateOf(record, now)
      if (state !== KeyState.IN_PROGRESS && state !== KeyState.DONE && state !== KeyState.UNKNOWN) return undefined
      return { done: record!.done, unknown: record!.unknown, token: record!.token, fingerprint: record!.fingerprint, result: record!.result, expiresInMs: record!.expiresAt - now }
    })
  }

  protected async forgetGroup(g: KeyGroup, keys: readonly string[]): Promise<Uint8Array> {
    const now = this.clock.now()
    return this.each(g, keys, (record, i) => {
      const state = stateOf(record, now)
      this.records.delete(keys[i])
      return state === KeyState.IN_PROGRESS || state === KeyState.DONE || state === KeyState.UNKNOWN
    })
  }

  protected async purgeNamespace(namespace: string): Promise<number> {
    const head = `${namespace}\0`
    let removed = 0
    for (const key of this.records.keys()) if (key.startsWith(head) && this.records.delete(key)) removed++
    return removed
  }

  protected async closeBackend(): Promise<void> {
    this.records.clear()
  }

  /** 1 where `apply` returns true, per key of the group in order. */
  private each(g: KeyGroup, keys: readonly string[], apply: (record: KeyRecord | undefined, i: number) => boolean): Uint8Array {
    const { positions } = g
    const out = new Uint8Array(positions.length)
    for (let j = 0; j < positions.length; j++) out[j] = apply(this.records.get(keys[positions[j]]), positions[j]) ? 1 : 0
    return out
  }

  private sweep(now: number): void {
    const slice = 2 * this.claimsSinceSweep
    this.claimsSinceSweep = 0
    this.sweepCursor ??= this.records.entries()
    for (let i = 0; i < slice; i++) {
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
