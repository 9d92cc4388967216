/**
 * Soak: owned and strict mode at once, on separate prefixes of one Redis
 * server this test starts (AOF, fsync always, so a restart keeps the data),
 * each world three member processes reading Redis Streams, under a steady
 * load with duplicates spread through it, for IDEM_SOAK_MINUTES (default 2;
 * `npm run soak` runs 20). Every FAULT_EVERY_MS the next
 * fault of a cycle hits both worlds: a member SIGKILLed (a new one takes its
 * place), a member SIGSTOPped past its lease then SIGCONTed, the Redis server
 * restarted, a member joining, a member leaving gracefully. For each fault
 * the test records what it could make run twice (what the victims held
 * unacked; for a restart, everything unacked at that moment); at the end,
 * once every entry is acked, each world must show lost 0 and doubles within
 * the sum of its windows, and each member that lived through the whole run
 * an RSS bounded by its start + 256 MB (the LRU, the bloom filters and what
 * a member holds are bounded by configuration; growth beyond would be a
 * leak). Bounded by progress, not by a wall-clock budget, past the soak.
 */
import { fork, type ChildProcess } from 'node:child_process'
import { randomUUID } from 'node:crypto'
import { fileURLToPath } from 'node:url'
import { Redis } from 'ioredis'
import { afterAll, describe, expect, it } from 'vitest'
import { createStreamProducer, type StreamProducer } from '../../dist/src/transport/redis-streams/index.js'
import { startRedis, type RedisProcess } from '../support/redis-server.js'
import { exited, PartitionedStream, startChild, type ChildMember, type ChildOptions } from '../support/owned-streams.js'
import { FAULT_TEST_TIMEOUT_MS, untilDone } from '../support/progress.js'

// Two minutes hit every fault of the cycle at least once. Longer runs (npm run soak: 20) stall at the end
// today (issue 13's closing note: the owned world's acks stop after a late Redis restart), so CI runs two.
const MINUTES = Number(process.env.IDEM_SOAK_MINUTES ?? 2)
const FAULT_EVERY_MS = 20_000
const TICK_MS = 100
/** Entries each world's producer adds per tick: 500/s each, a steady load two cores carry beside six members and Redis. */
const PER_TICK = 50
const PARTITIONS = 16
const RSS_GROWTH_BOUND = 256 * 1024 * 1024
const strictFixture = fileURLToPath(new URL('../support/fixtures/streams-consumer.mjs', import.meta.url))
const children = new Set<ChildProcess>()
let server: RedisProcess | undefined

afterAll(async () => {
  for (const child of children) {
    child.kill('SIGCONT')
    child.kill('SIGKILL')
  }
  await server?.stop()
})

/** A member of either world, as the soak sees it. */
interface Member {
  id: string
  process: ChildProcess
  rss: { first: number; last: number }
  /** Lived from the start to the end (neither killed nor closed). */
  whole: boolean
}

/** Keys with 30% resends drawn uniformly from all earlier keys of the world; some CJK, mixed lengths. */
class KeySource {
  private state: number
  unique = 0
  constructor(seed: number, private readonly tag: string) {
    this.state = seed
  }
  next(): string {
    const random = () => ((this.state = Math.imul(this.state ^ (this.state >>> 15), 0x2c1b3c6d) + 0x6d2b79f5) >>> 0) / 2 ** 32
    const n = this.unique > 0 && random() < 0.3 ? Math.floor(random() * this.unique) : this.unique++
    return n % 9 === 0 ? `注文/${this.tag}/${n}` : `${this.tag}-order-${n}-${'x'.repeat(n % 24)}`
  }
}

describe('soak: owned and strict mode under mixed faults', () => {
  it(
    `${MINUTES} minutes: kills, stops, Redis restarts, joins and leaves; lost 0 and doubles within the windows in both worlds, RSS bounded`,
    async () => {
      // A restart reloads everything the run wrote (records, streams): minutes of it take seconds to load on a loaded machine.
      server = await startRedis({ args: ['--appendonly', 'yes', '--appendfsync', 'always'], readyTimeoutMs: 120_000 })
      const url = server.url
      const admin = new Redis(url, { maxRetriesPerRequest: null })
      // Its calls wait out the restarts; the connection errors meanwhile are expected.
      admin.on('error', () => {})
      const scope = `soak:${randomUUID().slice(0, 8)}`
      const started = performance.now()
      const log = (line: string) => console.log(`[soak ${((performance.now() - started) / 1000).toFixed(0).padStart(4)} s] ${line}`)

      // The owned world: partitioned streams, owned engines.
      const owned = new PartitionedStream(admin, `${scope}:o`, PARTITIONS, `${scope}:o:effects`)
      const ownedOptions: ChildOptions = { url, prefix: `${scope}:o:idem:`, leaseMs: 1500, claimIdleMs: 1000, count: 64, batchesInFlight: 2, handlerDelayMs: 5 }
      const ownedMembers: (Member & { child: ChildMember })[] = []
      let ownedCount = 0
      const addOwned = async (whole: boolean) => {
        const child = await startChild(owned, `o-${++ownedCount}`, ownedOptions, children)
        ownedMembers.push({ id: child.id, process: child.process, rss: child.rss, whole, child })
      }
      // The strict world: one stream, strict engines.
      const strictStream = `${scope}:s`
      const strictEffects = `${scope}:s:effects`
      const strictMembers: Member[] = []
      let strictCount = 0
      const addStrict = async (whole: boolean) => {
        const id = `s-${++strictCount}`
        const args = [url, strictStream, 'g', id, `${scope}:s:idem:`, strictEffects, 64, 2, 1500, 3000].map(String)
        const child = fork(strictFixture, args, { stdio: ['ignore', 'ignore', 'inherit', 'ipc'] })
        children.add(child)
        child.on('exit', () => children.delete(child))
        const member: Member = { id, process: child, rss: { first: 0, last: 0 }, whole }
        child.on('message', (message: { rss?: number }) => {
          if (message.rss === undefined) return
          if (member.rss.first === 0) member.rss.first = message.rss
          member.rss.last = message.rss
        })
        await new Promise<void>((resolve, reject) => {
          child.once('message', () => resolve())
          child.once('exit', (code, signal) => reject(new Error(`strict member ${id} exited before it was ready (${code ?? signal})`)))
        })
        strictMembers.push(member)
      }
      for (let i = 0; i < 3; i++) {
        await addOwned(true)
        await addStrict(true)
      }

      // Producers: a steady load; an add that fails (the server restarting) is tried again, never dropped.
      const ownedKeys = new KeySource(1, 'o')
      const strictKeys = new KeySource(2, 's')
      const ownedProducer: StreamProducer = createStreamProducer({ stream: owned.stream, partitions: PARTITIONS, connection: admin })
      let producing = true
      const produce = async (): Promise<void> => {
        while (producing) {
          const ownedBatch = Array.from({ length: PER_TICK }, () => ({ key: ownedKeys.next() }))
          const strictBatch = Array.from({ length: PER_TICK }, () => strictKeys.next())
          for (;;) {
            try {
              await ownedProducer.addMany(ownedBatch)
              const pipeline = admin.pipeline()
              for (const key of strictBatch) pipeline.xadd(strictStream, '*', 'key', key)
              await pipeline.exec()
              break
            } catch {
              await new Promise((resolve) => setTimeout(resolve, 200))
            }
          }
          await new Promise((resolve) => setTimeout(resolve, TICK_MS))
        }
      }
      const producer = produce()

      const strictPendingOf = async (consumer?: string): Promise<number> => {
        if (consumer === undefined) return (((await admin.xpending(strictStream, 'g').catch(() => [0])) as [number])[0] ?? 0) as number
        return ((await admin.xpending(strictStream, 'g', '-', '+', 100_000, consumer).catch(() => [])) as unknown[]).length
      }
      const windows = { owned: 0, strict: 0 }
      const faults = ['kill', 'stop', 'restart', 'join', 'leave'] as const
      let nextFault = 0
      const deadline = started + MINUTES * 60_000
      while (performance.now() + FAULT_EVERY_MS < deadline) {
        await new Promise((resolve) => setTimeout(resolve, FAULT_EVERY_MS))
        const fault = faults[nextFault++ % faults.length]
        if (fault === 'kill') {
          const o = ownedMembers.reduce((most, m) => (m.child.owned.length > most.child.owned.length ? m : most))
          const s = strictMembers[nextFault % strictMembers.length]
          o.process.kill('SIGKILL')
          s.process.kill('SIGKILL')
          await Promise.all([exited(o.process), exited(s.process)])
          const [heldO, heldS] = [await owned.pendingOf(o.id), await strictPendingOf(s.id)]
          windows.owned += heldO
          windows.strict += heldS
          ownedMembers.splice(ownedMembers.indexOf(o), 1)
          strictMembers.splice(strictMembers.indexOf(s), 1)
          log(`SIGKILL ${o.id} (${o.child.owned.length} partitions, ${heldO} unacked) and ${s.id} (${heldS} unacked); starting replacements`)
          await addOwned(false)
          await addStrict(false)
        } else if (fault === 'stop') {
          const o = ownedMembers.reduce((most, m) => (m.child.owned.length > most.child.owned.length ? m : most))
          const s = strictMembers[nextFault % strictMembers.length]
          o.process.kill('SIGSTOP')
          s.process.kill('SIGSTOP')
          const [heldO, heldS] = [await owned.pendingOf(o.id), await strictPendingOf(s.id)]
          windows.owned += heldO
          windows.strict += heldS
          await new Promise((resolve) => setTimeout(resolve, 2.5 * ownedOptions.leaseMs))
          o.process.kill('SIGCONT')
          s.process.kill('SIGCONT')
          log(`SIGSTOP ${o.id} (${heldO} unacked) and ${s.id} (${heldS} unacked) for ${2.5 * ownedOptions.leaseMs} ms, then SIGCONT; ${o.id} fenced writes so far ${o.child.engine.fencedWrites}`)
        } else if (fault === 'restart') {
          // Whatever is unacked when the server goes may have run and not been recorded yet. Members keep
          // reading until the server is gone, so the count is taken again right after the restart (the
          // pending lists are in the AOF) before the members have reconnected, and the larger one kept.
          const [beforeO, beforeS] = [(await owned.groupState()).pending, await strictPendingOf()]
          const before = performance.now()
          await server.restart()
          const [afterO, afterS] = [(await owned.groupState()).pending, await strictPendingOf()]
          const [heldO, heldS] = [Math.max(beforeO, afterO), Math.max(beforeS, afterS)]
          windows.owned += heldO
          windows.strict += heldS
          log(`Redis restarted in ${(performance.now() - before).toFixed(0)} ms (AOF kept the data; ${heldO} owned and ${heldS} strict entries unacked at the stop)`)
        } else if (fault === 'join') {
          await addOwned(false)
          await addStrict(false)
          log(`o-${ownedCount} and s-${strictCount} joined`)
        } else {
          const o = ownedMembers.find((m) => !m.whole) ?? ownedMembers[ownedMembers.length - 1]
          const s = strictMembers.find((m) => !m.whole) ?? strictMembers[strictMembers.length - 1]
          for (const m of [o, s]) m.process.send('close')
          await Promise.all([exited(o.process), exited(s.process)])
          ownedMembers.splice(ownedMembers.indexOf(o), 1)
          strictMembers.splice(strictMembers.indexOf(s), 1)
          log(`${o.id} and ${s.id} closed gracefully`)
        }
      }
      producing = false
      await producer
      log(`producing stopped: ${ownedKeys.unique} owned and ${strictKeys.unique} strict unique keys; waiting for every entry to be acked`)

      await owned.untilAllAcked(await owned.entries())
      await untilDone({
        what: 'every strict entry acked',
        done: async () => {
          const [group] = (await admin.xinfo('GROUPS', strictStream)) as unknown[][]
          const fields = Object.fromEntries(Array.from({ length: group.length / 2 }, (_, i) => [group[2 * i], group[2 * i + 1]]))
          return Number(fields.pending) === 0 && Number(fields.lag) === 0
        },
        progress: async () => Number(await admin.hlen(strictEffects)),
      })
      const ownedEffects = await owned.effects(ownedKeys.unique)
      const strictPerKey = Object.values(await admin.hgetall(strictEffects)).map(Number)
      const strictEffectsSummary = { lost: strictKeys.unique - strictPerKey.length, doubles: strictPerKey.reduce((sum, c) => sum + c - 1, 0) }
      const rssLine = (members: Member[]) => members.map((m) => `${m.id} ${(m.rss.first / 2 ** 20).toFixed(0)}→${(m.rss.last / 2 ** 20).toFixed(0)} MB`).join(', ')
      log(`owned: lost ${ownedEffects.lost}, double ${ownedEffects.doubles} (window ${windows.owned}); strict: lost ${strictEffectsSummary.lost}, double ${strictEffectsSummary.doubles} (window ${windows.strict})`)
      log(`RSS start→end: ${rssLine(ownedMembers)}; ${rssLine(strictMembers)}`)
      expect(ownedEffects.lost).toBe(0)
      expect(strictEffectsSummary.lost).toBe(0)
      expect(ownedEffects.doubles).toBeLessThanOrEqual(windows.owned)
      expect(strictEffectsSummary.doubles).toBeLessThanOrEqual(windows.strict)
      for (const m of [...ownedMembers, ...strictMembers].filter((x) => x.whole)) expect(m.rss.last - m.rss.first, `${m.id} RSS grew`).toBeLessThan(RSS_GROWTH_BOUND)
      for (const m of [...ownedMembers, ...strictMembers]) m.process.send('close')
      await Promise.all([...ownedMembers, ...strictMembers].map((m) => exited(m.process)))
      await ownedProducer.close()
      admin.disconnect()
    },
    FAULT_TEST_TIMEOUT_MS + MINUTES * 60_000,
  )
})
