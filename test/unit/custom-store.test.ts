/**
 * A store of one's own, as the README's guide writes it: a small StoreBase
 * subclass over a Map, proved with the exported conformance cases, then
 * plugged into an engine with store: { kind: 'custom', create }.
 */
import { describe, expect, it } from 'vitest'
import { ManualClock } from '../../dist/src/clock.js'
import { createEngine } from '../../dist/src/engine.js'
import { ConfigError } from '../../dist/src/errors.js'
import type { Message } from '../../dist/src/message.js'
import { ClaimCode, jsonValues, StoreBase, storeConformanceCases, type GroupClaim, type KeyGroup, type StoredRecord } from '../../dist/src/store/index.js'

interface Row {
  done: boolean
  unknown?: boolean
  token: string
  fingerprint: unknown
  result: unknown
  expiresAt: number
}

/** Every primitive in a few lines: what the guide asks of a store. */
class MapStore extends StoreBase {
  readonly ordered = true
  readonly rows = new Map<string, Row>()
  closed = false

  constructor(private readonly clock: ManualClock) {
    super({ name: 'map', retries: 0, retryBackoffMs: 0, maxResultBytes: 1024, values: jsonValues })
  }

  private live(key: string): Row | undefined {
    const row = this.rows.get(key)
    return row !== undefined && row.expiresAt > this.clock.now() ? row : undefined
  }

  protected group(_keys: readonly string[], positions: readonly number[]): KeyGroup[] {
    return [{ positions }]
  }

  protected async claimGroup(g: KeyGroup, keys: readonly string[], fingerprints: readonly unknown[], token: string, leaseMs: number): Promise<GroupClaim> {
    const n = g.positions.length
    const answer: GroupClaim = { codes: new Uint8Array(n), fingerprints: new Array(n), results: new Array(n) }
    g.positions.forEach((i, j) => {
      const row = this.live(keys[i])
      if (row === undefined || (!row.done && !row.unknown && row.token === token)) {
        this.rows.set(keys[i], { done: false, token, fingerprint: fingerprints[i], result: null, expiresAt: this.clock.now() + leaseMs })
        return
      }
      answer.codes[j] = row.done ? ClaimCode.DONE : row.unknown ? ClaimCode.UNKNOWN : ClaimCode.IN_PROGRESS
      if (row.unknown) (answer.tokens ??= new Array(n))[j] = row.token
      answer.fingerprints[j] = row.fingerprint
      answer.results[j] = row.result
    })
    return answer
  }

  private fenced(g: KeyGroup, keys: readonly string[], apply: (row: Row | undefined, key: string, i: number) => boolean): Uint8Array {
    return Uint8Array.from(g.positions, (i) => (apply(this.live(keys[i]), keys[i], i) ? 1 : 0))
  }

  protected async commitGroup(g: KeyGroup, keys: readonly string[], results: readonly unknown[] | undefined, token: string, ttlMs: number): Promise<Uint8Array> {
    return this.fenced(g, keys, (row, _key, i) => {
      if (row?.token !== token || row.unknown) return false
      if (!row.done) Object.assign(row, { done: true, result: results?.[i] ?? null, expiresAt: this.clock.now() + ttlMs })
      return true
    })
  }

  protected async releaseGroup(g: KeyGroup, keys: readonly string[], token: string): Promise<Uint8Array> {
    return this.fenced(g, keys, (row, key) => row === undefined || (!row.done && !row.unknown && row.token === token && this.rows.delete(key)))
  }

  protected async renewGroup(g: KeyGroup, keys: readonly string[], token: string, leaseMs: number): Promise<Uint8Array> {
    return this.fenced(g, keys, (row) => {
      if (row === undefined || row.done || row.unknown || row.token !== token) return false
      row.expiresAt = this.clock.now() + leaseMs
      return true
    })
  }

  /** A lapsed lease still names its token: marked all the same (read past `live`). */
  protected async markUnknownGroup(g: KeyGroup, keys: readonly string[], token: string, ttlMs: number): Promise<Uint8Array> {
    return this.fenced(g, keys, (live, key) => {
      const row = live ?? this.rows.get(key)
      if (row === undefined || row.done || row.token !== token || (row.unknown && live === undefined)) return false
      Object.assign(row, { unknown: true, expiresAt: this.clock.now() + ttlMs })
      return true
    })
  }

  protected async resolveGroup(g: KeyGroup, keys: readonly string[], done: readonly boolean[], results: readonly unknown[] | undefined, ttlMs: number, token: string | undefined): Promise<Uint8Array> {
    return this.fenced(g, keys, (row, key, i) => {
      if (!row?.unknown || (token !== undefined && row.token !== token)) return false
      if (done[i]) Object.assign(row, { unknown: false, done: true, result: results?.[i] ?? null, expiresAt: this.clock.now() + ttlMs })
      else this.rows.delete(key)
      return true
    })
  }

  protected async inspectGroup(g: KeyGroup, keys: readonly string[]): Promise<(StoredRecord | undefined)[]> {
    return g.positions.map((i) => {
      const row = this.live(keys[i])
      return row === undefined ? undefined : { ...row, expiresInMs: row.expiresAt - this.clock.now() }
    })
  }

  protected async forgetGroup(g: KeyGroup, keys: readonly string[]): Promise<Uint8Array> {
    return this.fenced(g, keys, (row, key) => {
      this.rows.delete(key)
      return row !== undefined
    })
  }

  protected async purgeNamespace(namespace: string): Promise<number> {
    const before = this.rows.size
    for (const key of this.rows.keys()) if (key.startsWith(`${namespace}\0`)) this.rows.delete(key)
    return before - this.rows.size
  }

  protected async closeBackend(): Promise<void> {
    this.closed = true
  }
}

describe('a custom store (idem/store)', () => {
  it.each(storeConformanceCases.map((c) => [c.name, c] as const))('keeps the contract: %s', async (_name, c) => {
    await c.run(
      () => {
        const clock = new ManualClock(1_000_000)
        return { store: new MapStore(clock), advance: async (ms) => clock.advance(ms) }
      },
      { leaseMs: 1_000, ttlMs: 10_000 },
    )
  })

  it('runs under an engine: each key once, duplicates with their stored result, every shard store closed', async () => {
    const clock = new ManualClock(1_000_000)
    const made: MapStore[] = []
    const engine = await createEngine({ shards: 4, lru: { maxKeys: 0 }, store: { kind: 'custom', create: () => made[made.push(new MapStore(clock)) - 1] } }, { clock })
    const effects: string[] = []
    const handler = (m: Message): string => {
      effects.push(m.key)
      return `done:${m.key}`
    }
    const first = await engine.processBatch(['a', 'b', 'c', 'a'].map((key) => ({ key })), handler)
    const again = await engine.processBatch(['a', 'b', 'c'].map((key) => ({ key })), handler)
    await engine.close()
    expect(first.map((o) => o.verdict)).toEqual(['new', 'new', 'new', 'duplicate'])
    expect(again.map((o) => [o.verdict, o.result])).toEqual([['duplicate', 'done:a'], ['duplicate', 'done:b'], ['duplicate', 'done:c']])
    expect(effects.sort()).toEqual(['a', 'b', 'c'])
    expect(made.length).toBe(4)
    expect(made.every((s) => s.closed)).toBe(true)
  })

  it.each([
    [{ kind: 'custom' }, 0, 'store.create: must be a function (shard) => store, got undefined'],
    [{ kind: 'custom', create: 'mine' }, 0, 'store.create: must be a function (shard) => store, got "mine"'],
    [{ kind: 'custom', create: () => ({}) }, 1, 'store.create: must be given with threads: 0 only (a function cannot cross into a worker thread), got function create'],
  ])('bad input %o with threads %i: ConfigError naming the field', async (store, threads, problem) => {
    const error = await createEngine({ shards: 2, threads, store: store as never }).catch((e: unknown) => e)
    expect(error).toBeInstanceOf(ConfigError)
    expect((error as ConfigError).problems).toContain(problem)
  })

  it('a create() that returns no store is refused at createEngine, naming what it lacks', async () => {
    const error = await createEngine({ shards: 2, store: { kind: 'custom', create: () => ({ claim: async () => undefined }) as never } }).catch((e: unknown) => e)
    expect(error).toBeInstanceOf(ConfigError)
    expect((error as ConfigError).problems[0]).toMatch(/^store\.create: must be a function returning a store with claim, commit, release, renew, inspect, forget, markUnknown, resolve, purge, close \(extend StoreBase from idem\/store\); for shard 0 it returned one without commit, release, renew, inspect, forget, markUnknown, resolve, purge, close, got /)
  })
})
