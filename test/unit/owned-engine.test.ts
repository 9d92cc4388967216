import { afterEach, describe, expect, it } from 'vitest'
import { createEngine, type Engine } from '../../dist/src/engine.js'
import type { EngineOptions } from '../../dist/src/config.js'
import { ManualClock, systemClock } from '../../dist/src/clock.js'
import { ErrorCode, IdemError } from '../../dist/src/errors.js'
import { partitionOf } from '../../dist/src/index.js'
import { assignPartitions } from '../../dist/src/owned/assignment.js'
import { MemoryPartitionStore } from '../../dist/src/owned/memory-partitions.js'
import type { PartitionChange } from '../../dist/src/owned/membership.js'
import { problemsOf } from '../support/config-problems.js'
import { countingHandler } from '../support/counting-handler.js'

const engines: Engine[] = []
async function owned(options: EngineOptions = {}, store?: MemoryPartitionStore, clock?: ManualClock): Promise<Engine> {
  const created = await createEngine(
    { mode: 'owned', shards: 4, partitions: 16, ...options },
    { ...(clock === undefined ? {} : { clock }), ...(store === undefined ? {} : { partitionStore: store }) },
  )
  engines.push(created)
  return created
}
afterEach(async () => {
  await Promise.all(engines.splice(0).map((e) => e.close()))
})


/** 30% resends of earlier keys, drawn uniformly (spread through the stream, not behind their first copy). */
function spreadStream(count: number): { keys: string[]; unique: number } {
  let state = 12345
  const random = () => ((state = Math.imul(state ^ (state >>> 15), 0x2c1b3c6d) + 0x6d2b79f5) >>> 0) / 2 ** 32
  const keys: string[] = []
  let unique = 0
  for (let i = 0; i < count; i++) {
    if (unique > 0 && random() < 0.3) keys.push(keyOf(Math.floor(random() * unique)))
    else keys.push(keyOf(unique++))
  }
  return { keys, unique }
}
const keyOf = (n: number): string => (n % 7 === 0 ? `注文-${n}` : `order-${n}${'x'.repeat(n % 40)}`)

describe('rendezvous assignment', () => {
  it('gives every partition to exactly one live member, the same answer whatever the list order', () => {
    const members = ['m-a', 'm-b', 'm-c']
    const owners = assignPartitions(members, 64)
    expect(owners).toHaveLength(64)
    for (const owner of owners) expect(members).toContain(owner)
    expect(assignPartitions(['m-c', 'm-a', 'm-b'], 64)).toEqual(owners)
    // Each member gets a share: no member is starved by the hash.
    for (const m of members) expect(owners.filter((o) => o === m).length).toBeGreaterThan(8)
  })

  it('a join moves only partitions to the newcomer, about 1/N of them', () => {
    const before = assignPartitions(['m-a', 'm-b', 'm-c'], 256)
    const after = assignPartitions(['m-a', 'm-b', 'm-c', 'm-d'], 256)
    let moved = 0
    for (let p = 0; p < 256; p++) {
      if (before[p] === after[p]) continue
      moved++
      expect(after[p]).toBe('m-d')
    }
    expect(moved).toBeGreaterThan(256 / 4 / 2)
    expect(moved).toBeLessThan((256 / 4) * 2)
  })

  it('no members, no owners', () => {
    expect(assignPartitions([], 3)).toEqual(['', '', ''])
  })
})

describe('owned mode on the memory store (one member)', () => {
  it('owns every partition; partitionOf is the router hash, the same as the standalone one, in range', async () => {
    const e = await owned()
    expect(e.ownedPartitions()).toEqual([...Array(16).keys()])
    const seen = new Set<number>()
    for (let n = 0; n < 500; n++) {
      const p = e.partitionOf(keyOf(n))
      expect(p).toBe(partitionOf(keyOf(n), 16))
      expect(p).toBeGreaterThanOrEqual(0)
      expect(p).toBeLessThan(16)
      seen.add(p)
    }
    expect(seen.size).toBe(16)
    expect(e.partitionOf('k', 'tenant-a')).toBe(partitionOf('k', 16, 'tenant-a'))
    expect(() => e.partitionOf('')).toThrow(expect.objectContaining({ code: ErrorCode.INVALID_KEY }))
    expect(() => partitionOf('k', 0)).toThrow(expect.objectContaining({ code: ErrorCode.INVALID_CONFIG }))
  })

  it('never-seen keys run with no store call before them; duplicates spread through the stream run once', async () => {
    const e = await owned({ lru: { maxKeys: 0 } })
    const { effects, handler } = countingHandler()
    const { keys, unique } = spreadStream(5000)
    const outcomes = []
    for (let start = 0; start < keys.length; start += 500) outcomes.push(...(await e.processBatch(keys.slice(start, start + 500).map((key) => ({ key })), handler)))
    expect(effects.size).toBe(unique)
    for (const count of effects.values()) expect(count).toBe(1)
    const verdicts = { new: 0, duplicate: 0 }
    for (const o of outcomes) verdicts[o.verdict as 'new' | 'duplicate']++
    expect(verdicts).toEqual({ new: unique, duplicate: keys.length - unique })
    const t = e.stats().totals
    // Store calls: the group commits, and reads of maybe-seen keys (at most one per shard step); never one per fresh key.
    expect(t.groupCommits).toBeGreaterThan(0)
    expect(t.storeOperations).toBeLessThan(unique / 10)
    expect(t.bloomNegatives).toBeGreaterThan(unique * 0.9)
  })

  it('a duplicate keeps its stored result; another fingerprint is a conflict, from the LRU and from a read', async () => {
    for (const lru of [100, 0]) {
      const e = await owned({ lru: { maxKeys: lru } })
      const { handler } = countingHandler()
      expect(await e.process({ key: 'a', fingerprint: 'v1' }, handler)).toEqual({ key: 'a', verdict: 'new', result: 'done:a' })
      expect(await e.process({ key: 'a', fingerprint: 'v1' }, handler)).toEqual({ key: 'a', verdict: 'duplicate', result: 'done:a' })
      const conflict = await e.process({ key: 'a', fingerprint: 'v2' }, handler)
      expect(conflict.verdict).toBe('conflict')
      expect(conflict.error?.code).toBe(ErrorCode.CONFLICT)
    }
  })

  it('a handler that throws writes nothing: its redelivery runs again', async () => {
    const e = await owned()
    let calls = 0
    const handler = (): string => {
      if (++calls === 1) throw new Error('boom')
      return 'ok'
    }
    const failed = await e.process({ key: 'k' }, handler)
    expect(failed.verdict).toBe('new')
    expect(failed.error?.code).toBe(ErrorCode.HANDLER_FAILED)
    expect(await e.process({ key: 'k' }, handler)).toEqual({ key: 'k', verdict: 'new', result: 'ok' })
    expect((await e.process({ key: 'k' }, handler)).verdict).toBe('duplicate')
    expect(calls).toBe(2)
  })

  it('an outcome waits for its group commit; a lone key does not linger for flushMs; under load keys gather and none waits flushMs', async () => {
    const store = new MemoryPartitionStore(systemClock)
    const commits: number[] = []
    // A store whose group commits take 150 ms: the outcome may not come before.
    const slow = new Proxy(store, {
      get(target, property) {
        const value = Reflect.get(target, property) as unknown
        if (typeof value !== 'function') return value
        if (property === 'groupCommit') {
          return async (...args: unknown[]) => {
            await new Promise((resolve) => setTimeout(resolve, 150))
            commits.push((args[0] as unknown[]).length)
            return value.apply(target, args)
          }
        }
        return value.bind(target)
      },
    })
    const e = await owned({ ownership: { flushMs: 60_000, flushMaxKeys: 1024 } }, slow)
    const started = performance.now()
    expect(await e.process({ key: 'a' }, () => 1)).toEqual({ key: 'a', verdict: 'new', result: 1 })
    const ms = performance.now() - started
    expect(ms).toBeGreaterThanOrEqual(140)
    expect(commits).toHaveLength(1)
    // 2,000 keys with flushMs a minute: flushes go as earlier ones answer, none waits for the timer.
    const outcomes = await e.processBatch(Array.from({ length: 2000 }, (_, n) => ({ key: `k${n}` })), () => 1)
    expect(outcomes.filter((o) => o.verdict === 'new')).toHaveLength(2000)
    expect(e.stats().totals.groupCommits).toBeLessThan(2000 / 4)
  }, 60_000)
})

describe('owned mode: members sharing one memory partition store', () => {
  it('two members split the partitions; a message of a partition not owned is in-flight NOT_OWNER and does not run', async () => {
    const clock = new ManualClock(Date.now())
    const store = new MemoryPartitionStore(clock)
    const a = await owned({ ownership: { memberId: 'member-a', leaseMs: 1000 } }, store, clock)
    const b = await owned({ ownership: { memberId: 'member-b', leaseMs: 1000 } }, store, clock)
    // a took every partition first; it hands over b's share at its next heartbeat.
    const expected = assignPartitions(['member-a', 'member-b'], 16)
    await until(() => a.ownedPartitions().length + b.ownedPartitions().length === 16 && b.ownedPartitions().length > 0 && a.ownedPartitions().every((p) => expected[p] === 'member-a'))
    expect(a.ownedPartitions().filter((p) => b.ownedPartitions().includes(p))).toEqual([])
    const key = [...Array(200).keys()].map(keyOf).find((k) => expected[partitionOf(k, 16)] === 'member-b')!
    let ran = 0
    const outcome = await a.process({ key }, () => ran++)
    expect(outcome.verdict).toBe('in-flight')
    expect(outcome.error?.code).toBe(ErrorCode.NOT_OWNER)
    expect(ran).toBe(0)
    expect((await b.process({ key }, () => ran++)).verdict).toBe('new')
    expect(a.stats().totals.notOwned).toBe(1)
  })

  it('a closing member hands over at once; the next owner restores its partitions and finds every key a duplicate (warm start)', async () => {
    const store = new MemoryPartitionStore(systemClock)
    const a = await owned({ lru: { maxKeys: 0 }, ownership: { memberId: 'member-a' } }, store)
    const { effects, handler } = countingHandler()
    const keys = Array.from({ length: 3000 }, (_, n) => keyOf(n))
    await a.processBatch(keys.map((key) => ({ key })), handler)
    await a.close()
    const changes: PartitionChange[] = []
    const b = await owned({ lru: { maxKeys: 0 }, ownership: { memberId: 'member-b' } }, store)
    b.on('partitions', (change) => changes.push(change))
    expect(b.ownedPartitions()).toHaveLength(16)
    const again = await b.processBatch(keys.map((key) => ({ key })), handler)
    expect(again.every((o) => o.verdict === 'duplicate')).toBe(true)
    expect(effects.size).toBe(3000)
    for (const count of effects.values()) expect(count).toBe(1)
    const ownership = b.stats().ownership!
    expect(ownership.acquired).toBe(16)
    // a snapshotted at close: b replays nothing from the logs.
    expect(ownership.replayedKeys).toBe(0)
  })

  it('without snapshots the next owner replays the whole log; a corrupt snapshot is refused and the log replayed instead', async () => {
    for (const corrupt of [false, true]) {
      const store = new MemoryPartitionStore(systemClock)
      // snapshotEveryMs 0: no snapshot, not even at close; otherwise one at close, corrupted below.
      const a = await owned({ lru: { maxKeys: 0 }, ownership: { memberId: 'member-a', snapshotEveryMs: corrupt ? 60_000 : 0 } }, store)
      const keys = Array.from({ length: 1000 }, (_, n) => keyOf(n))
      await a.processBatch(keys.map((key) => ({ key })), () => 1)
      await a.close()
      if (corrupt) {
        for (let p = 0; p < 16; p++) {
          const snapshot = await store.readSnapshot(p)
          expect(snapshot).toBeDefined()
          await store.writeSnapshot(p, { ...snapshot!, bytes: Buffer.from('not a bloom filter') })
        }
      } else {
        for (let p = 0; p < 16; p++) expect(await store.readSnapshot(p)).toBeUndefined()
      }
      const b = await owned({ lru: { maxKeys: 0 }, ownership: { memberId: 'member-b', snapshotEveryMs: 0 } }, store)
      const again = await b.processBatch(keys.map((key) => ({ key })), () => 1)
      expect(again.filter((o) => o.verdict !== 'duplicate')).toEqual([])
      const ownership = b.stats().ownership!
      expect(ownership.snapshotsInvalid).toBe(corrupt ? 16 : 0)
      // Each refusal is also a process warning, IDEM_BLOOM_SNAPSHOT_INVALID, naming the partition and why.
      expect(ownership.replayedKeys).toBe(1000)
    }
  })

  it('a member cut off from the store past its lease has its group commit refused by epoch: LEASE_LOST, not done; the new owner runs the key', async () => {
    const store = new MemoryPartitionStore(systemClock)
    // a's heartbeats and acquisitions fail from some point on (a stalled or partitioned process); its commits still reach the store.
    let cut = false
    const aStore = new Proxy(store, {
      get(target, property) {
        const value = Reflect.get(target, property) as unknown
        if (typeof value !== 'function') return value
        if (property === 'heartbeat' || property === 'acquire') return (...args: unknown[]) => (cut ? Promise.reject(new Error('cut off')) : value.apply(target, args))
        return value.bind(target)
      },
    })
    const a = await owned({ ownership: { memberId: 'member-a', leaseMs: 300, flushMs: 0 } }, aStore)
    const lostEvents: number[] = []
    a.on('partitions', ({ lost }) => lostEvents.push(...lost))
    let release!: () => void
    const gate = new Promise<void>((resolve) => (release = resolve))
    const key = 'slow-key'
    const running = a.process({ key }, async () => {
      await gate
      return 'a-did-it'
    })
    await until(() => a.stats().totals.bloomNegatives === 1)
    cut = true
    const b = await owned({ ownership: { memberId: 'member-b', leaseMs: 300 } }, store)
    const p = partitionOf(key, 16)
    await until(() => b.ownedPartitions().includes(p))
    // a cannot renew: past its lease it refuses to decide on its own.
    await until(async () => (await a.process({ key: 'another' }, () => 1)).error?.code === ErrorCode.NOT_OWNER)
    release()
    const outcome = await running
    expect(outcome.verdict).toBe('new')
    expect(outcome.error?.code).toBe(ErrorCode.LEASE_LOST)
    expect(a.stats().totals.fencedWrites).toBeGreaterThanOrEqual(1)
    expect(lostEvents).toContain(p)
    expect(a.ownedPartitions()).not.toContain(p)
    expect(await b.process({ key }, () => 'b-did-it')).toEqual({ key, verdict: 'new', result: 'b-did-it' })
    expect(await store.epochOf(p)).toBeGreaterThanOrEqual(2)
  })

  it('a graceful hand-over waits for a handler longer than the lease: the key never runs on two members at once', async () => {
    const store = new MemoryPartitionStore(systemClock)
    const a = await owned({ ownership: { memberId: 'member-a', leaseMs: 300 } }, store)
    const key = [...Array(500).keys()].map(keyOf).find((k) => assignPartitions(['member-a', 'member-b'], 16)[partitionOf(k, 16)] === 'member-b')!
    let running = 0
    let most = 0
    let effects = 0
    const handler = async (): Promise<string> => {
      most = Math.max(most, ++running)
      await new Promise((resolve) => setTimeout(resolve, 1500))
      running--
      effects++
      return 'done'
    }
    const first = a.process({ key }, handler)
    await until(() => a.stats().totals.bloomNegatives === 1)
    // b joins: the key's partition is assigned to b, but a's handler still runs, five leases long.
    const b = await owned({ ownership: { memberId: 'member-b', leaseMs: 300 } }, store)
    const p = partitionOf(key, 16)
    const meanwhile = []
    for (let i = 0; i < 5; i++) {
      meanwhile.push(await b.process({ key }, handler))
      await new Promise((resolve) => setTimeout(resolve, 150))
    }
    expect(meanwhile.map((o) => o.error?.code)).toEqual(Array(5).fill(ErrorCode.NOT_OWNER))
    expect(await first).toEqual({ key, verdict: 'new', result: 'done' })
    await until(() => b.ownedPartitions().includes(p))
    expect(await b.process({ key }, handler)).toEqual({ key, verdict: 'duplicate', result: 'done' })
    expect({ effects, most }).toEqual({ effects: 1, most: 1 })
  })

  it('a member with another partition count is refused with PARTITIONS_MISMATCH', async () => {
    const store = new MemoryPartitionStore(systemClock)
    await owned({ ownership: { memberId: 'member-a' } }, store)
    const refused = await createEngine({ mode: 'owned', partitions: 8, ownership: { memberId: 'member-b' } }, { partitionStore: store }).catch((error: unknown) => error)
    expect(refused).toBeInstanceOf(IdemError)
    expect((refused as IdemError).code).toBe(ErrorCode.PARTITIONS_MISMATCH)
    expect((refused as IdemError).message).toMatch(/16.*8|8.*16/)
  })
})

describe('owned mode config', () => {
  function expectProblems(options: unknown, expected: string[]): void {
    const problems = problemsOf(options)
    for (const line of expected) expect(problems.some((problem) => problem.startsWith(line)), `${line}\n in ${problems.join('\n')}`).toBe(true)
  }

  it('names every bad field', () => {
    expectProblems({ mode: 'owned', threads: 1, shards: 2 }, ['threads: must be 0 in owned mode'])
    expectProblems({ mode: 'owned', store: { kind: 'sqlite', path: ':memory:' } }, ['store: must be a memory or redis store in owned mode'])
    expectProblems({ mode: 'owned', store: { kind: 'redis', cluster: [{ host: '127.0.0.1', port: 7000 }] } }, ['store: must be a single Redis in owned mode'])
    expectProblems({ mode: 'owned', reconcile: () => 'done' }, ['reconcile: must be left out in owned mode'])
    expectProblems({ mode: 'fast' }, ["mode: must be 'strict' or 'owned'"])
    expectProblems({ partitions: 0, group: 'a b', ownership: { leaseMs: 5, flushMs: -1, flushMaxKeys: 0, snapshotEveryMs: 1.5, memberId: 'x{y}', extra: 1 } }, [
      'partitions: must be an integer from 1 to 65536',
      'group: must be a string of 1 to 100 letters',
      'ownership.leaseMs: must be an integer from 100',
      'ownership.flushMs: must be an integer from 0',
      'ownership.flushMaxKeys: must be an integer from 1',
      'ownership.snapshotEveryMs: must be an integer from 0',
      'ownership.memberId: must be a string of 1 to 100',
      'ownership.extra: must be left out',
    ])
  })
})

/** Polls `check` until it holds, at most 400 times 25 ms apart (bounded by count, not a wall-clock budget). */
async function until(check: () => boolean | Promise<boolean>): Promise<void> {
  for (let attempt = 0; attempt < 400; attempt++) {
    if (await check()) return
    await new Promise((resolve) => setTimeout(resolve, 25))
  }
  throw new Error('condition not met after 400 polls')
}
