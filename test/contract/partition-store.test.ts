/**
 * One suite, both partition stores (src/owned/partition-store.ts, DESIGN.md
 * §5): the same cases run on the memory store, on a manual clock, and on the
 * Redis store against the real server at 127.0.0.1:6379, on its own clock.
 * "Time passes" is the subject's: the manual clock moves at once; on Redis
 * the leases are short and the test polls for the lapse it waits for. Each
 * Redis test has a random prefix of its own, deleted after it (SCAN + UNLINK,
 * never a flush: the server is shared). The Redis-only cases below check
 * what only Redis has: the record layout the strict store and `idem keys`
 * read, a non-integer partition count, a lost identity record, a snapshot
 * hash missing a field, an unreachable or evicting server.
 */
import { randomUUID } from 'node:crypto'
import { Redis } from 'ioredis'
import { afterAll, afterEach, describe, expect, it } from 'vitest'
import { ManualClock } from '../../dist/src/clock.js'
import { ErrorCode, IdemError } from '../../dist/src/errors.js'
import { MemoryPartitionStore } from '../../dist/src/owned/memory-partitions.js'
import type { CommitKey, PartitionCommit, PartitionStore } from '../../dist/src/owned/partition-store.js'
import { RedisPartitionStore } from '../../dist/src/owned/redis-partitions.js'
import { deleteKeysUnder } from '../../dist/src/store/redis/delete-keys.js'
import { hashTagOf, recordKey } from '../../dist/src/store/redis/redis-records.js'
import { resolveRedisStore } from '../../dist/src/store/redis/redis-options.js'
import { RedisStore } from '../../dist/src/store/redis/redis-store.js'
import { identityKey } from '../../dist/src/store/redis/store-identity.js'
import { startRedis } from '../support/redis-server.js'
import { waitFor } from '../support/wait-for.js'

const url = 'redis://127.0.0.1:6379'
const admin = new Redis(url)
const GROUP = 'g'

interface Subject {
  store: PartitionStore
  /** A lease short enough to wait out on this backend. */
  leaseMs: number
  /** Waits until `holds()` is true, moving time on by `ms` first when the clock is ours (memory); on Redis it polls. */
  after(ms: number, what: string, holds: () => Promise<boolean>): Promise<void>
  /** Lets `ms` pass for sure (the manual clock moves; on Redis, a wait). */
  pass(ms: number): Promise<void>
  /** Sets a partition's epoch by hand, as an operator would. */
  setEpoch(partition: number, epoch: number): Promise<void>
}

const opened: PartitionStore[] = []
const prefixes: string[] = []
afterEach(async () => {
  await Promise.all(opened.splice(0).map((s) => s.close()))
  for (const prefix of prefixes.splice(0)) await deleteKeysUnder(admin, prefix)
})
afterAll(() => admin.disconnect())

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms))

function newPrefix(): string {
  const prefix = `test:pstore:${randomUUID()}:`
  prefixes.push(prefix)
  return prefix
}

function redisConfig(prefix: string, options: Record<string, unknown> = {}) {
  const problems: string[] = []
  const config = resolveRedisStore({ kind: 'redis', url, prefix, ...options }, 0, problems)
  expect(problems).toEqual([])
  return config
}

const subjects: [string, () => Promise<Subject>][] = [
  [
    'memory',
    async () => {
      const clock = new ManualClock(1_000_000)
      const store = new MemoryPartitionStore(clock)
      return {
        store,
        leaseMs: 1_000,
        after: async (ms, what, holds) => {
          clock.advance(ms)
          if (!(await holds())) throw new Error(`${what}: not so after ${ms} ms`)
        },
        pass: async (ms) => clock.advance(ms),
        setEpoch: async (partition, epoch) => store.setEpoch(partition, epoch),
      }
    },
  ],
  [
    'redis',
    async () => {
      const prefix = newPrefix()
      const store = new RedisPartitionStore(redisConfig(prefix), GROUP)
      opened.push(store)
      return {
        store,
        leaseMs: 200,
        after: (ms, what, holds) => waitFor(what, holds, ms * 20 + 2_000),
        pass: sleep,
        setEpoch: async (partition, epoch) => void (await admin.set(`${prefix}own:${GROUP}:epoch:${partition}`, String(epoch))),
      }
    },
  ],
]

/** 8 bytes per key: lo u32 LE, hi u32 LE, as the actor sends them. */
function hashesOf(...pairs: [number, number][]): Buffer {
  const buffer = Buffer.alloc(8 * pairs.length)
  pairs.forEach(([lo, hi], i) => {
    buffer.writeUInt32LE(lo, 8 * i)
    buffer.writeUInt32LE(hi, 8 * i + 4)
  })
  return buffer
}

function done(key: string, fingerprint = '', result = ''): CommitKey {
  return { key, fingerprint, result, unknown: false }
}

function part(partition: number, epoch: number, keys: CommitKey[]): PartitionCommit {
  return { partition, epoch, token: `p${partition}e${epoch}`, keys, hashes: hashesOf(...keys.map((_, i): [number, number] => [partition * 1000 + i, 0xdeadbeef])) }
}

async function failure(promise: Promise<unknown>): Promise<IdemError> {
  const error = await promise.then(
    () => undefined,
    (e: unknown) => e,
  )
  expect(error).toBeInstanceOf(IdemError)
  return error as IdemError
}

const TTL = 60_000

describe.each(subjects)('partition store conformance: %s', (_, make) => {
  it('records the partition count at first use; the same count again passes, another fails with PARTITIONS_MISMATCH naming both', async () => {
    const { store } = await make()
    await store.checkPartitions(16)
    await store.checkPartitions(16)
    const error = await failure(store.checkPartitions(32))
    expect(error.code).toBe(ErrorCode.PARTITIONS_MISMATCH)
    expect(error.message).toContain('16 partitions')
    expect(error.message).toContain('this engine has 32')
    // The refusal does not overwrite the count: 16 still passes.
    await store.checkPartitions(16)
  })

  it('heartbeat lists the live members sorted, this one included; a member whose heartbeat lapsed is dropped', async () => {
    const { store, leaseMs, after } = await make()
    await store.checkPartitions(4)
    expect((await store.heartbeat('m-b', leaseMs, [])).members).toEqual(['m-b'])
    expect(await store.heartbeat('m-a', leaseMs * 50, [])).toEqual({ members: ['m-a', 'm-b'], renewed: [] })
    // m-b stops beating: m-a's heartbeat stops listing it once its lease lapsed.
    await after(leaseMs + 1, 'm-b dropped', async () => (await store.heartbeat('m-a', leaseMs * 50, [])).members.join() === 'm-a')
    await store.leave('m-a')
    expect((await store.heartbeat('m-c', leaseMs, [])).members).toEqual(['m-c'])
  })

  it('acquire: a free partition gets epoch 1, another member gets 0 while it is held, the holder its epoch again; after a lapse the other gets epoch 2', async () => {
    const { store, leaseMs, after } = await make()
    await store.checkPartitions(4)
    expect(await store.acquire('a', [0, 1], leaseMs)).toEqual([1, 1])
    expect(await store.acquire('b', [0, 1, 2], leaseMs)).toEqual([0, 0, 1])
    expect(await store.acquire('a', [0], leaseMs)).toEqual([1])
    let epochs: number[] = []
    await after(leaseMs + 1, "a's leases lapsed", async () => (epochs = await store.acquire('b', [0], leaseMs))[0] !== 0)
    expect(epochs).toEqual([2])
    expect(await store.epochOf(0)).toBe(2)
    expect(await store.epochOf(3)).toBe(0)
  })

  it('release frees only the leases still ours under that epoch; the next owner gets epoch + 1 at once', async () => {
    const { store } = await make()
    await store.checkPartitions(4)
    expect(await store.acquire('a', [0, 1], 60_000)).toEqual([1, 1])
    // A release under a wrong epoch, or by another member, frees nothing.
    await store.release('a', [{ partition: 0, epoch: 7 }])
    await store.release('b', [{ partition: 1, epoch: 1 }])
    expect(await store.acquire('b', [0, 1], 60_000)).toEqual([0, 0])
    await store.release('a', [
      { partition: 0, epoch: 1 },
      { partition: 1, epoch: 1 },
    ])
    expect(await store.acquire('b', [0, 1], 60_000)).toEqual([2, 2])
    expect(await store.epochOf(1)).toBe(2)
  })

  it('heartbeat renews the leases held, so they outlive their first lease; a lease taken over answers renewed false and is left to its new owner', async () => {
    const { store, leaseMs, pass, after } = await make()
    // Long enough on Redis that each wait below has slack against a busy machine.
    const lease = leaseMs * 5
    await store.checkPartitions(4)
    expect(await store.acquire('a', [0], lease)).toEqual([1])
    expect(await store.acquire('a', [1], leaseMs)).toEqual([1])
    await pass(lease * 0.6)
    expect((await store.heartbeat('a', lease, [{ partition: 0, epoch: 1 }])).renewed).toEqual([true])
    await pass(lease * 0.6)
    // 1.2 leases since the acquisition: held only thanks to the renewal.
    expect(await store.acquire('b', [0], lease)).toEqual([0])

    // Partition 1 was left to lapse: b takes it over, and a's heartbeat learns it lost it.
    let epochs: number[] = []
    await after(leaseMs + 1, "a's lease on 1 lapsed", async () => (epochs = await store.acquire('b', [1], lease))[0] !== 0)
    expect(epochs).toEqual([2])
    const beat = await store.heartbeat('a', lease, [
      { partition: 0, epoch: 1 },
      { partition: 1, epoch: 1 },
    ])
    expect(beat.renewed).toEqual([true, false])
    expect(await store.acquire('a', [1], lease)).toEqual([0])
    expect((await store.heartbeat('b', lease, [{ partition: 1, epoch: 2 }])).renewed).toEqual([true])
  })

  it('a group commit writes DONE and UNKNOWN records that read() answers: fingerprint, a long CJK result, token, expiry within the TTL', async () => {
    const { store } = await make()
    await store.checkPartitions(4)
    expect(await store.acquire('a', [0, 1], 60_000)).toEqual([1, 1])
    const cjk = JSON.stringify(`结果：已付款 ✓ ${'数据'.repeat(40_000)}`)
    const namespaced = 'tenant-7\u0000order-1'
    const parts = [
      part(0, 1, [done('order-1', JSON.stringify('fp-1'), cjk), done(namespaced, '', ''), { key: 'order-2', fingerprint: JSON.stringify('指纹'), result: '', unknown: true }]),
      part(1, 1, [done('order-3', '', '{"ok":true}')]),
    ]
    const replies = await store.groupCommit(parts, TTL)
    expect(replies.map((r) => [r.status, r.storeEpoch])).toEqual([
      ['ok', 1],
      ['ok', 1],
    ])
    expect(replies.every((r) => /^\d+-\d+$/.test(r.logId))).toBe(true)

    const records = await store.read(['order-1', namespaced, 'order-2', 'order-3', 'order-1\u0000', 'never'])
    expect(records.map((r) => r.state)).toEqual(['done', 'done', 'unknown', 'done', 'absent', 'absent'])
    expect(records[0]).toMatchObject({ fingerprint: JSON.stringify('fp-1'), result: cjk, token: 'p0e1' })
    expect(records[1]).toMatchObject({ fingerprint: '', result: '', token: 'p0e1' })
    expect(records[2]).toMatchObject({ fingerprint: JSON.stringify('指纹'), result: '', token: 'p0e1' })
    expect(records[3]).toMatchObject({ result: '{"ok":true}', token: 'p1e1' })
    for (const record of records.slice(0, 4)) {
      expect(record.expiresInMs).toBeGreaterThan(TTL - 5_000)
      expect(record.expiresInMs).toBeLessThanOrEqual(TTL)
    }
  })

  it('a stale epoch refuses its own part only: nothing of it is written or logged, the other parts of the same call are', async () => {
    const { store, leaseMs, after } = await make()
    await store.checkPartitions(4)
    expect(await store.acquire('a', [0], leaseMs)).toEqual([1])
    expect(await store.acquire('a', [1], 60_000)).toEqual([1])
    await after(leaseMs + 1, 'b took partition 0 over', async () => (await store.acquire('b', [0], 60_000))[0] === 2)

    const replies = await store.groupCommit([part(0, 1, [done('k-stale', '', '1')]), part(1, 1, [done('k-fresh', '', '2')])], TTL)
    expect(replies).toEqual([
      { status: 'stale', logId: '', storeEpoch: 2 },
      { status: 'ok', logId: replies[1].logId, storeEpoch: 1 },
    ])
    expect((await store.read(['k-stale', 'k-fresh'])).map((r) => r.state)).toEqual(['absent', 'done'])
    expect(await store.readLog(0, '0-0', 10)).toEqual([])
    expect((await store.readLog(1, '0-0', 10)).map((e) => e.id)).toEqual([replies[1].logId])
  })

  it("an epoch set back by hand answers 'regressed' with the store's epoch, and nothing is written or logged", async () => {
    const { store, setEpoch } = await make()
    await store.checkPartitions(4)
    expect(await store.acquire('a', [0], 60_000)).toEqual([1])
    await store.release('a', [{ partition: 0, epoch: 1 }])
    expect(await store.acquire('a', [0], 60_000)).toEqual([2])
    await setEpoch(0, 1)
    expect(await store.groupCommit([part(0, 2, [done('k', '', '1')])], TTL)).toEqual([{ status: 'regressed', logId: '', storeEpoch: 1 }])
    expect((await store.read(['k']))[0].state).toBe('absent')
    expect(await store.readLog(0, '0-0', 10)).toEqual([])
    expect(await store.writeSnapshot(0, { bytes: Buffer.from([1]), logId: '0-0', generationStartedAt: 5, epoch: 2 })).toBe(false)
  })

  it('the log: one entry per group commit per partition, with its hashes, read after an id (exclusive), in order, count at a time', async () => {
    const { store } = await make()
    await store.checkPartitions(4)
    expect(await store.acquire('a', [2], 60_000)).toEqual([1])
    const commits = [part(2, 1, [done('x1'), done('x2')]), part(2, 1, [done('x3')]), part(2, 1, [done('x4'), done('x5'), done('x6')])]
    const ids: string[] = []
    for (const commit of commits) ids.push((await store.groupCommit([commit], TTL))[0].logId)

    const all = await store.readLog(2, '0-0', 100)
    expect(all.map((e) => e.id)).toEqual(ids)
    expect(all.map((e) => e.hashes.toString('hex'))).toEqual(commits.map((c) => c.hashes.toString('hex')))
    expect(all[2].hashes.length).toBe(24)
    expect((await store.readLog(2, ids[0], 100)).map((e) => e.id)).toEqual(ids.slice(1))
    expect((await store.readLog(2, ids[0], 1)).map((e) => e.id)).toEqual([ids[1]])
    expect(await store.readLog(2, ids[2], 100)).toEqual([])
    expect(await store.readLog(3, '0-0', 100)).toEqual([])
  })

  it('the log is trimmed to the TTL window at the next append: the oldest entries go, the new one is there', async () => {
    const { store, pass } = await make()
    const ttl = 300
    await store.checkPartitions(4)
    expect(await store.acquire('a', [0], 60_000)).toEqual([1])
    // Redis trims a stream by whole nodes (MINID ~, 100 entries a node): 150 entries fill one.
    const old = await store.groupCommit(
      Array.from({ length: 150 }, (_, i) => part(0, 1, [done(`old-${i}`)])),
      ttl,
    )
    expect(old.every((r) => r.status === 'ok')).toBe(true)
    expect(await store.readLog(0, '0-0', 1_000)).toHaveLength(150)
    await pass(ttl + 50)
    const [fresh] = await store.groupCommit([part(0, 1, [done('fresh')])], ttl)
    const kept = (await store.readLog(0, '0-0', 1_000)).map((e) => e.id)
    expect(kept).not.toContain(old[0].logId)
    expect(kept.length).toBeLessThan(151)
    expect(kept.at(-1)).toBe(fresh.logId)
  })

  it('a snapshot round-trips byte for byte; a write under an epoch that moved on is refused and the stored one stays', async () => {
    const { store, leaseMs, after } = await make()
    await store.checkPartitions(4)
    expect(await store.readSnapshot(1)).toBeUndefined()
    expect(await store.acquire('a', [1], leaseMs)).toEqual([1])
    const bytes = Buffer.from([0, 255, 10, 13, 0, 0x80, ...Buffer.from('快照')])
    const snapshot = { bytes, logId: '1733300000000-3', generationStartedAt: 1_733_299_999_123, epoch: 1 }
    expect(await store.writeSnapshot(1, snapshot)).toBe(true)
    expect(await store.readSnapshot(1)).toEqual(snapshot)
    expect(await store.readSnapshot(0)).toBeUndefined()

    await after(leaseMs + 1, 'b took partition 1 over', async () => (await store.acquire('b', [1], 60_000))[0] === 2)
    expect(await store.writeSnapshot(1, { ...snapshot, bytes: Buffer.from([7]), epoch: 1 })).toBe(false)
    expect(await store.readSnapshot(1)).toEqual(snapshot)
    const next = { bytes: Buffer.from([9, 9]), logId: '1733300000001-0', generationStartedAt: 1_733_300_000_000, epoch: 2 }
    expect(await store.writeSnapshot(1, next)).toBe(true)
    expect(await store.readSnapshot(1)).toEqual(next)
  })
})

describe('partition store on Redis only', () => {
  function open(prefix = newPrefix(), options: Record<string, unknown> = {}): RedisPartitionStore {
    const store = new RedisPartitionStore(redisConfig(prefix, options), GROUP)
    opened.push(store)
    return store
  }

  it('the keys are the ones the README lists: partitions, members, lease, epoch, log, snap', async () => {
    const prefix = newPrefix()
    const store = open(prefix)
    await store.checkPartitions(8)
    await store.heartbeat('a', 60_000, [])
    await store.acquire('a', [3], 60_000)
    await store.groupCommit([part(3, 1, [done('k')])], TTL)
    await store.writeSnapshot(3, { bytes: Buffer.from([1]), logId: '0-0', generationStartedAt: 1, epoch: 1 })
    const base = `${prefix}own:${GROUP}:`
    expect(await admin.get(`${base}partitions`)).toBe('8')
    expect(await admin.zrange(`${base}members`, '0', '-1')).toEqual(['a'])
    expect(await admin.get(`${base}lease:3`)).toBe('a\n1')
    expect(await admin.pttl(`${base}lease:3`)).toBeGreaterThan(0)
    expect(await admin.get(`${base}epoch:3`)).toBe('1')
    expect(await admin.pttl(`${base}epoch:3`)).toBe(-1)
    expect(await admin.type(`${base}log:3`)).toBe('stream')
    expect(await admin.hkeys(`${base}snap:3`)).toEqual(expect.arrayContaining(['bytes', 'logId', 'generationStartedAt', 'epoch']))
  })

  it('records written by a group commit are the strict layout: RedisStore.inspect (what `idem keys show` prints) reads them', async () => {
    const prefix = newPrefix()
    const store = open(prefix)
    await store.checkPartitions(4)
    await store.acquire('a', [0], 60_000)
    const result = JSON.stringify({ 回执: '收到', n: 3 })
    await store.groupCommit([part(0, 1, [done('ns\u0000k1', JSON.stringify('fp'), result), { key: 'k2', fingerprint: '', result: 'ignored', unknown: true }])], TTL)

    const strict = new RedisStore(redisConfig(prefix))
    try {
      const [k1, k2, absent] = await strict.inspect(['ns\u0000k1', 'k2', 'k3'])
      expect(k1).toMatchObject({ state: 'done', token: 'p0e1', fingerprint: 'fp', result: { 回执: '收到', n: 3 } })
      expect(k1!.expiresInMs).toBeLessThanOrEqual(TTL)
      expect(k2).toMatchObject({ state: 'unknown', token: 'p0e1', fingerprint: undefined })
      expect(absent).toBeUndefined()
      // The UNKNOWN record's since is Redis's clock, as markUnknown.lua writes it, not the caller's text.
      const raw = await admin.get(recordKey(prefix, hashTagOf('k2', 64), 'k2'))
      const since = Number(raw!.split('\n')[2])
      expect(Math.abs(since - Date.now())).toBeLessThan(60_000)
    } finally {
      await strict.close()
    }
  })

  it('read() answers a strict claim (a p record) as in-progress', async () => {
    const prefix = newPrefix()
    const store = open(prefix)
    await store.checkPartitions(4)
    const strict = new RedisStore(redisConfig(prefix))
    try {
      await strict.claim(['claimed'], [undefined], 'T1', 60_000, TTL)
      expect((await store.read(['claimed']))[0]).toMatchObject({ state: 'in-progress', token: 'T1' })
    } finally {
      await strict.close()
    }
  })

  it('a partition count that is not an integer fails with PARTITIONS_MISMATCH saying what it found and where', async () => {
    const prefix = newPrefix()
    await admin.set(`${prefix}own:${GROUP}:partitions`, 'sixteen')
    const error = await failure(open(prefix).checkPartitions(16))
    expect(error.code).toBe(ErrorCode.PARTITIONS_MISMATCH)
    expect(error.message).toContain('"sixteen"')
    expect(error.message).toContain(`${prefix}own:${GROUP}:partitions`)
    expect(await admin.get(`${prefix}own:${GROUP}:partitions`)).toBe('sixteen')
  })

  it('a lost identity record (a flush) fails heartbeats and group commits closed with STORE_RESET, writes nothing, and leaves the reset marker for later starters', async () => {
    const prefix = newPrefix()
    const store = open(prefix)
    await store.checkPartitions(4)
    await store.acquire('a', [0], 60_000)
    await admin.del(identityKey(prefix))

    const commit = await failure(store.groupCommit([part(0, 1, [done('after-loss')])], TTL))
    expect(commit.code).toBe(ErrorCode.STORE_RESET)
    expect(commit.message).toContain('ack-reset')
    expect((await store.read(['after-loss']))[0].state).toBe('absent')
    expect(await store.readLog(0, '0-0', 10)).toEqual([])
    expect(JSON.parse((await admin.get(identityKey(prefix)))!)).toMatchObject({ state: 'reset' })
    expect((await failure(store.heartbeat('a', 60_000, [{ partition: 0, epoch: 1 }]))).code).toBe(ErrorCode.STORE_RESET)
    // An engine starting later on the prefix fails closed too, instead of creating a fresh identity.
    expect((await failure(open(prefix).checkPartitions(4))).code).toBe(ErrorCode.STORE_RESET)
  })

  it('a snapshot hash missing a field reads with empty bytes (the caller rebuilds from the log)', async () => {
    const prefix = newPrefix()
    const store = open(prefix)
    await store.checkPartitions(4)
    await store.acquire('a', [0], 60_000)
    expect(await store.writeSnapshot(0, { bytes: Buffer.from([1, 2, 3]), logId: '5-0', generationStartedAt: 1, epoch: 1 })).toBe(true)
    await admin.hdel(`${prefix}own:${GROUP}:snap:0`, 'logId')
    const snapshot = await store.readSnapshot(0)
    expect(snapshot?.bytes.length).toBe(0)
  })

  it('a server that cannot be reached fails with STORE_FAILED after the bounded retries, saying what failed', async () => {
    const store = new RedisPartitionStore(resolveRedisStore({ kind: 'redis', url: 'redis://127.0.0.1:1', prefix: newPrefix(), retries: 2, retryBackoffMs: 1, commandTimeoutMs: 200 }, 0, []), GROUP)
    opened.push(store)
    const error = await failure(store.acquire('a', [0], 1_000))
    expect(error.code).toBe(ErrorCode.STORE_FAILED)
    expect(error.message).toMatch(/^owned mode acquire failed after 3 attempts: /)
  })

  it('a server that evicts keys is refused with STORE_UNSAFE before anything is written; allowEviction: true accepts it', async () => {
    const server = await startRedis({ args: ['--maxmemory', '64mb', '--maxmemory-policy', 'allkeys-lru'] })
    const local = new Redis(server.url)
    try {
      const refusing = new RedisPartitionStore(resolveRedisStore({ kind: 'redis', url: server.url, prefix: 'p:', retries: 0 }, 0, []), GROUP)
      const error = await failure(refusing.checkPartitions(4))
      await refusing.close()
      expect(error.code).toBe(ErrorCode.STORE_UNSAFE)
      expect(await local.dbsize()).toBe(0)
      const accepting = new RedisPartitionStore(resolveRedisStore({ kind: 'redis', url: server.url, prefix: 'p:', allowEviction: true }, 0, []), GROUP)
      await accepting.checkPartitions(4)
      await accepting.close()
      expect(await local.get('p:own:g:partitions')).toBe('4')
    } finally {
      local.disconnect()
      await server.stop()
    }
  })
})
