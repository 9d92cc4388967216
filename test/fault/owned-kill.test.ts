/**
 * Owned mode under real process faults, through the Redis Streams transport:
 * members are child processes (streams-owned-consumer.mjs) sharing one store
 * prefix and group, effects counted per key in Redis (HINCRBY in the handler).
 *  1. SIGKILL of a member under load, four times (each victim replaced by a
 *     new member): its partitions move after the lease; lost 0; doubles at
 *     most what the victim held unacked at its death; then every key is sent
 *     again and all are duplicates (the bloom filters restored across owners).
 *  2. SIGSTOP of a member past its lease, then SIGCONT: its late group
 *     commits are refused by epoch (fenced writes counted), its messages are
 *     not acked as done, and the new owners' records stand.
 * Bounded by count and progress (test/support/progress.ts), never by a
 * wall-clock budget; the times printed are reports, not assertions.
 */
import type { ChildProcess } from 'node:child_process'
import { randomUUID } from 'node:crypto'
import { Redis } from 'ioredis'
import { afterEach, describe, expect, it } from 'vitest'
import { deleteKeysUnder } from '../../dist/src/store/redis/delete-keys.js'
import { resolveRedisStore } from '../../dist/src/store/redis/redis-options.js'
import { RedisStore } from '../../dist/src/store/redis/redis-store.js'
import { createStreamProducer } from '../../dist/src/transport/redis-streams/index.js'
import { exited, PartitionedStream, produce, spreadKeys, startChild, type ChildMember, type ChildOptions } from '../support/owned-streams.js'
import { FAULT_TEST_TIMEOUT_MS, untilDone } from '../support/progress.js'

const url = 'redis://127.0.0.1:6379'
const PARTITIONS = 16
const LEASE_MS = 1500
const children = new Set<ChildProcess>()
const scopes: string[] = []
const redis = new Redis(url)

afterEach(async () => {
  // Only the processes this test forked, by their handles.
  for (const child of children) {
    child.kill('SIGCONT')
    child.kill('SIGKILL')
  }
  for (const scope of scopes.splice(0)) await deleteKeysUnder(redis, scope)
})

function scopeOf(name: string) {
  const scope = `test:${name}:${randomUUID()}`
  scopes.push(scope)
  const s = new PartitionedStream(redis, `${scope}:s`, PARTITIONS, `${scope}:effects`)
  const options: ChildOptions = { url, prefix: `${scope}:idem:`, leaseMs: LEASE_MS, claimIdleMs: 1000, count: 64, batchesInFlight: 2 }
  return { scope, s, options }
}

/** Polls until the members alive cover the partitions between them, disjointly. */
async function untilShared(s: PartitionedStream, members: ChildMember[], what: string): Promise<void> {
  await untilDone({ what, done: () => s.shareIsComplete(members.map((m) => m.owned)), progress: () => members.reduce((n, m) => n + m.owned.length, 0), pollMs: 10 })
}

describe('owned mode: members SIGKILLed and SIGSTOPped', () => {
  it(
    'SIGKILL of a member under load, four times: partitions move after the lease, lost 0, doubles within what the victims held; every key sent again is a duplicate',
    async () => {
      const { s, options } = scopeOf('owned-kill')
      const { keys, unique } = spreadKeys(24_000, 2026)
      const producer = createStreamProducer({ stream: s.stream, partitions: PARTITIONS, connection: url })
      try {
        let members = [await startChild(s, 'm-0', options, children), await startChild(s, 'm-1', options, children), await startChild(s, 'm-2', options, children)]
        await untilShared(s, members, 'three members share the partitions')
        const producing = produce(producer, keys, 200, 5)
        const kills: { held: number; movedMs: number; partitions: number }[] = []
        for (let kill = 0; kill < 4; kill++) {
          await untilDone({ what: `${(kill + 1) * 20}% of the keys done`, done: async () => (await redis.hlen(s.effectsKey)) >= (unique * (kill + 1)) / 5, progress: () => redis.hlen(s.effectsKey), pollMs: 10 })
          // The member holding the most partitions: a replacement that has none yet would prove nothing.
          const victim = members.reduce((most, m) => (m.owned.length > most.owned.length ? m : most))
          const partitions = victim.owned.length
          victim.process.kill('SIGKILL')
          const killedAt = performance.now()
          await exited(victim.process)
          const held = await s.pendingOf(victim.id)
          const survivors = members.filter((m) => m !== victim)
          await untilShared(s, survivors, `the survivors take the partitions of ${victim.id}`)
          kills.push({ held, movedMs: performance.now() - killedAt, partitions })
          // A replacement joins under a new name, as a restarted pod would.
          members = [...survivors, await startChild(s, `m-${kill + 3}`, options, children)]
        }
        await producing
        await s.untilAllAcked(keys.length)
        const effects = await s.effects(unique)
        const bound = kills.reduce((n, k) => n + k.held, 0)
        console.log(
          `owned SIGKILL: ${keys.length} entries (${unique} keys), ${kills.length} kills; partitions moved after ${kills.map((k) => `${k.movedMs.toFixed(0)} ms (${k.partitions})`).join(', ')} (leaseMs ${LEASE_MS}, heartbeat every ${LEASE_MS / 3} ms); ` +
            `unacked under the victims at their kills ${kills.map((k) => k.held).join('/')}; lost ${effects.lost}, double ${effects.doubles} (bound ${bound})`,
        )
        expect(effects.lost).toBe(0)
        expect(effects.doubles).toBeLessThanOrEqual(bound)

        // Warm start across owners: every key again, and nothing runs.
        const before = await redis.hgetall(s.effectsKey)
        const uniqueKeys = [...new Set(keys)]
        await produce(producer, uniqueKeys, 500, 0)
        await s.untilAllAcked(keys.length + uniqueKeys.length)
        expect(await redis.hgetall(s.effectsKey)).toEqual(before)
        console.log(`owned SIGKILL: ${uniqueKeys.length} keys sent again after the run: all duplicates (no effect changed)`)
      } finally {
        await producer.close()
      }
    },
    FAULT_TEST_TIMEOUT_MS,
  )

  it(
    'SIGSTOP of a member past its lease, then SIGCONT: its group commits are refused by epoch, its messages not acked as done, the new owner records stand',
    async () => {
      const { s, options, scope } = scopeOf('owned-stop')
      const slow = { ...options, handlerDelayMs: 40 }
      const { keys, unique } = spreadKeys(6000, 7)
      const producer = createStreamProducer({ stream: s.stream, partitions: PARTITIONS, connection: url })
      try {
        const a = await startChild(s, 'm-a', slow, children)
        const victim = await startChild(s, 'm-victim', slow, children)
        await untilShared(s, [a, victim], 'two members share the partitions')
        const producing = produce(producer, keys, 200, 5)
        await untilDone({ what: 'a third of the keys done', done: async () => (await redis.hlen(s.effectsKey)) >= unique / 3, progress: () => redis.hlen(s.effectsKey), pollMs: 10 })
        const victimPartitions = victim.owned
        victim.process.kill('SIGSTOP')
        const stoppedAt = performance.now()
        const held = await s.pendingOf(victim.id)
        // The other member takes every partition once the stopped one's leases lapse.
        await untilDone({ what: 'the running member owns every partition', done: () => a.owned.length === PARTITIONS, progress: () => a.owned.length, pollMs: 10 })
        const movedMs = performance.now() - stoppedAt
        victim.process.kill('SIGCONT')
        // Woken, its handlers end and their group commits go out under the old epochs.
        await untilDone({ what: 'the woken member to report its refused commits', done: () => victim.engine.fencedWrites > 0, progress: () => victim.stats.read ?? 0, pollMs: 20 })
        await producing
        await s.untilAllAcked(keys.length)
        const effects = await s.effects(unique)
        console.log(
          `owned SIGSTOP: ${victimPartitions.length} partitions held by the stopped member moved ${movedMs.toFixed(0)} ms after SIGSTOP (leaseMs ${LEASE_MS}); ${held} entries unacked under it; ` +
            `after SIGCONT its fenced writes ${victim.engine.fencedWrites}, NOT_OWNER answers ${victim.engine.notOwned}; lost ${effects.lost}, double ${effects.doubles} (bound ${held})`,
        )
        expect(victim.engine.fencedWrites).toBeGreaterThan(0)
        expect(effects.lost).toBe(0)
        expect(effects.doubles).toBeLessThanOrEqual(held)
        // Every key is DONE in the store: the new owners' records stand (a refused commit wrote nothing over them).
        const inspector = new RedisStore(resolveRedisStore({ kind: 'redis', url, prefix: `${scope}:idem:` }, 0, []))
        try {
          const views = await inspector.inspect([...new Set(keys)])
          expect(views.filter((v) => v?.state !== 'done')).toEqual([])
        } finally {
          await inspector.close()
        }
      } finally {
        await producer.close()
      }
    },
    FAULT_TEST_TIMEOUT_MS,
  )
})
