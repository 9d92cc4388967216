/**
 * The HTTP layer's store calls, batched per turn of the event loop: the
 * requests a server takes in one turn claim their keys in one store call
 * under one owner token, and the ones that end in one turn commit together,
 * as a shard batch of queue messages does. With many connections this is one
 * round trip for many requests instead of one each; a request never waits
 * longer than the turn it arrived in.
 *
 * A key twice in one batch (two concurrent requests with one key) is answered
 * REPEAT by the store for the later copy: that request sees the key in flight.
 */
import { randomUUID } from 'node:crypto'
import { ClaimCode, type CommitCode, type DedupStore } from '../store/store.js'

/** What a claim found for one request's key. */
export interface KeyClaim {
  /** ClaimCode; REPEAT reads as IN_PROGRESS (an earlier request of the same batch holds the key). */
  code: ClaimCode
  /** The owner token the key is claimed under (CLAIMED only): the batch's. */
  token: string
  fingerprint: string | undefined
  result: unknown
  /** For DONE, when the store can tell: ms until the record expires. */
  expiresInMs: number | undefined
}

interface PendingClaim {
  key: string
  fingerprint: string
  resolve: (claim: KeyClaim) => void
  reject: (error: unknown) => void
}

interface PendingCommit {
  key: string
  stored: unknown
  resolve: (code: CommitCode) => void
  reject: (error: unknown) => void
}

/** The claims of one batch whose keys are still held: their leases are renewed together until each is committed or released. */
interface Holding {
  token: string
  leaseMs: number
  ttlMs: number
  keys: Set<string>
  renewal: NodeJS.Timeout
}

export class StoreBatches {
  /** Claims waiting for the end of the turn, by `leaseMs:ttlMs` (one store call per lease and TTL). */
  private readonly claims = new Map<string, PendingClaim[]>()
  /** Commits waiting for the end of the turn, by token and TTL. */
  private readonly commits = new Map<string, { token: string; ttlMs: number; items: PendingCommit[] }>()
  private readonly holdings = new Map<string, Holding>()
  private scheduled = false

  constructor(private readonly store: DedupStore) {}

  /** Claims `key` for a request, with the other claims of this turn. */
  claim(key: string, fingerprint: string, leaseMs: number, ttlMs: number): Promise<KeyClaim> {
    return new Promise((resolve, reject) => {
      const group = `${leaseMs}:${ttlMs}`
      let pending = this.claims.get(group)
      if (pending === undefined) this.claims.set(group, (pending = []))
      pending.push({ key, fingerprint, resolve, reject })
      this.schedule()
    })
  }

  /** Commits a claimed key DONE with its stored response, with the other commits of this turn under its token. */
  commit(key: string, stored: unknown, token: string, ttlMs: number): Promise<CommitCode> {
    this.letGo(token, key)
    return new Promise((resolve, reject) => {
      const group = `${token}:${ttlMs}`
      let pending = this.commits.get(group)
      if (pending === undefined) this.commits.set(group, (pending = { token, ttlMs, items: [] }))
      pending.items.push({ key, stored, resolve, reject })
      this.schedule()
    })
  }

  /** Releases a claimed key (the route failed): at once, as it is rare. */
  async release(key: string, token: string): Promise<void> {
    this.letGo(token, key)
    await this.store.release([key], token)
  }

  private schedule(): void {
    if (this.scheduled) return
    this.scheduled = true
    setImmediate(this.flush)
  }

  private readonly flush = (): void => {
    this.scheduled = false
    for (const [group, pending] of this.claims) {
      this.claims.delete(group)
      const [leaseMs, ttlMs] = group.split(':').map(Number)
      void this.sendClaims(pending, leaseMs, ttlMs)
    }
    for (const [group, { token, ttlMs, items }] of this.commits) {
      this.commits.delete(group)
      void this.sendCommits(items, token, ttlMs)
    }
  }

  private async sendClaims(pending: PendingClaim[], leaseMs: number, ttlMs: number): Promise<void> {
    const token = randomUUID()
    let replies
    try {
      replies = await this.store.claim(pending.map((p) => p.key), pending.map((p) => p.fingerprint), token, leaseMs, ttlMs)
    } catch (error) {
      for (const p of pending) p.reject(error)
      return
    }
    const held = new Set<string>()
    pending.forEach((p, i) => {
      const code = replies.codes[i] as ClaimCode
      if (code === ClaimCode.CLAIMED) held.add(p.key)
      p.resolve({
        code: code === ClaimCode.REPEAT ? ClaimCode.IN_PROGRESS : code,
        token,
        fingerprint: code === ClaimCode.REPEAT ? undefined : replies.fingerprints[i],
        result: replies.results[i],
        expiresInMs: replies.doneExpiresInMs?.[i],
      })
    })
    if (held.size === 0) return
    // A renewal that fails or is refused leaves the lease to lapse: the commit is then refused, and a retry after the lapse may run the route again.
    const renewal = setInterval(() => {
      const holding = this.holdings.get(token)
      if (holding !== undefined) void this.store.renew([...holding.keys], token, leaseMs, ttlMs).catch(() => undefined)
    }, Math.max(1, Math.floor(leaseMs / 3)))
    renewal.unref()
    this.holdings.set(token, { token, leaseMs, ttlMs, keys: held, renewal })
  }

  private async sendCommits(items: PendingCommit[], token: string, ttlMs: number): Promise<void> {
    let codes: Uint8Array
    try {
      codes = await this.store.commit(items.map((c) => c.key), items.map((c) => c.stored), token, ttlMs)
    } catch (error) {
      for (const c of items) c.reject(error)
      return
    }
    items.forEach((c, i) => c.resolve(codes[i] as CommitCode))
  }

  /** The key no longer needs its lease renewed. */
  private letGo(token: string, key: string): void {
    const holding = this.holdings.get(token)
    if (holding === undefined) return
    holding.keys.delete(key)
    if (holding.keys.size > 0) return
    clearInterval(holding.renewal)
    this.holdings.delete(token)
  }
}
