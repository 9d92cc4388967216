import { setTimeout as sleep } from 'node:timers/promises'
import { fork, type ChildProcess } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { fileURLToPath } from 'node:url'
import { Redis } from 'ioredis'
import type { LayerStats } from '../engine.js'
import { deleteKeysUnder } from '../store/redis/delete-keys.js'
import { createStreamProducer, partitionStreamOf } from '../transport/redis-streams/index.js'
import type { OwnedConsumeReport } from './consume-protocol.js'
import { effectCounts, effectTotals, onInterrupt, ready } from './demo-processes.js'
import type { DemoOptions, DemoSummary } from './demo.js'
import { demoStream } from './demo-stream.js'
import { Progress } from './progress.js'

export interface OwnedDemoOptions extends DemoOptions {
  redis: string
  /** Member processes. */
  consumers: number
  /** SIGKILL a member every this many seconds (0: never); a new member replaces it. */
  killEverySeconds: number
}

const PARTITIONS = 64
const LEASE_MS = 3000
const ADD_CHUNK = 1000
const POLL_MS = 100

interface Member {
  name: string
  process: ChildProcess
  last: Extract<OwnedConsumeReport, { type: 'progress' | 'done' }> | undefined
  done: boolean
  exited: Promise<void>
}

/**
 * `idem demo --redis URL --mode owned`: the generated stream goes through
 * partitioned Redis streams (createStreamProducer, 64 partitions) while
 * `consumers` member processes (`idem consume-owned`) share the partitions in
 * one group, each an owned engine with a stream consumer over its partitions.
 * With `killEverySeconds`, a member holding partitions is SIGKILLed that
 * often and a new one started: its partitions move after the lease and the
 * summary still shows lost 0. Every effect is an HINCRBY on a run-scoped
 * hash; the run's streams and keys are deleted at the end.
 */
export async function runOwnedDemo(options: OwnedDemoOptions): Promise<DemoSummary> {
  const run = randomBytes(6).toString('hex')
  const stream = `idem-demo-${run}`
  const prefix = `idem-demo:${run}:`
  const effectsKey = `${prefix}effects`
  const redis = new Redis(options.redis, { maxRetriesPerRequest: 3 })
  const producer = createStreamProducer({ stream, partitions: PARTITIONS, connection: options.redis, keyOf: (entry) => entry.fields.key })
  const members: Member[] = []
  const killed: Member[] = []
  let memberCount = 0
  // Windows of the kills: entries a victim held unacked when it died (what may run twice).
  let heldAtKills = 0

  // `finally` below deletes the run's streams and keys before an interruption reaches the CLI.
  const interruption = onInterrupt(() => members, `streams ${stream}:p*`, prefix)
  const checkInterrupted = interruption.check
  const startMember = (uniqueKeys: number): Member => {
    const member = spawnMember(options, `member-${++memberCount}`, stream, prefix, effectsKey, uniqueKeys)
    members.push(member)
    return member
  }

  try {
    await redis.ping()
    const messages = [...demoStream(options)]
    let uniqueKeys = 0
    for (const message of messages) uniqueKeys = Math.max(uniqueKeys, message.payload!.n + 1)
    for (let i = 0; i < options.consumers; i++) startMember(uniqueKeys)
    await Promise.all(members.map((m) => ready(m.process, m.name)))
    checkInterrupted()

    const progress = new Progress(options.messages, 'msgs', !options.json && process.stderr.isTTY === true)
    const acked = (): number => [...members, ...killed].reduce((sum, m) => sum + (m.last?.stats.acked ?? 0), 0)
    const started = performance.now()
    let nextKillAt = options.killEverySeconds > 0 ? started + options.killEverySeconds * 1000 : Infinity
    const killOne = async (): Promise<void> => {
      const victim = members.filter((m) => (m.last?.owned.length ?? 0) > 0).sort((a, b) => b.last!.owned.length - a.last!.owned.length)[0]
      if (victim === undefined) return
      victim.process.kill('SIGKILL')
      await victim.exited
      members.splice(members.indexOf(victim), 1)
      killed.push(victim)
      heldAtKills += await pendingOf(redis, stream, victim.name)
      if (!options.json) process.stderr.write(`idem demo: SIGKILLed ${victim.name} (it held ${victim.last!.owned.length} partitions); starting a new member\n`)
      const replacement = startMember(uniqueKeys)
      await ready(replacement.process, replacement.name)
    }
    for (let i = 0; i < messages.length; i += ADD_CHUNK) {
      checkInterrupted()
      await producer.addMany(messages.slice(i, i + ADD_CHUNK).map((m) => ({ key: m.key, n: String(m.payload!.n) })))
      progress.update(Math.min(acked(), options.messages))
      if (performance.now() >= nextKillAt) {
        await killOne()
        nextKillAt = performance.now() + options.killEverySeconds * 1000
      }
    }
    for (;;) {
      checkInterrupted()
      const { pending, lag } = await groupState(redis, stream)
      if (pending === 0 && lag === 0) break
      if (members.every((m) => m.process.exitCode !== null || m.process.signalCode !== null)) throw new Error('every member process exited with entries left in the streams')
      progress.update(Math.min(acked(), options.messages))
      if (performance.now() >= nextKillAt) {
        await killOne()
        nextKillAt = performance.now() + options.killEverySeconds * 1000
      }
      await sleep(POLL_MS)
    }
    const seconds = (performance.now() - started) / 1000
    progress.update(options.messages)
    progress.finish()

    for (const m of members) m.process.send({ type: 'drain' })
    await Promise.all(members.map((m) => m.exited))
    for (const m of members) if (!m.done) throw new Error(`${m.name} exited without its final report`)
    const perKey = await effectCounts(redis, effectsKey, uniqueKeys)
    return summarize(options, uniqueKeys, perKey, seconds, [...members, ...killed], killed.length, heldAtKills)
  } catch (error) {
    checkInterrupted()
    throw error
  } finally {
    interruption.dispose()
    for (const m of members) if (m.process.exitCode === null && m.process.signalCode === null) m.process.kill('SIGKILL')
    await Promise.all(members.map((m) => m.exited))
    await producer.close().catch(() => {})
    for (let p = 0; p < PARTITIONS; p++) await redis.unlink(partitionStreamOf(stream, p)).catch(() => {})
    await deleteKeysUnder(redis, stream).catch(() => {})
    await deleteKeysUnder(redis, prefix).catch(() => {})
    redis.disconnect()
  }
}

function spawnMember(options: OwnedDemoOptions, name: string, stream: string, prefix: string, effects: string, uniqueKeys: number): Member {
  const cli = fileURLToPath(new URL('./main.js', import.meta.url))
  const args = [
    'consume-owned',
    ['--redis', options.redis],
    ['--stream', stream],
    ['--prefix', prefix],
    ['--effects', effects],
    ['--member', name],
    ['--partitions', String(PARTITIONS)],
    ['--shards', String(options.shards)],
    ['--lease-ms', String(LEASE_MS)],
    ['--expected-keys', String(uniqueKeys)],
  ].flat()
  const child = fork(cli, args, { stdio: ['ignore', 'ignore', 'inherit', 'ipc'] })
  const member: Member = { name, process: child, last: undefined, done: false, exited: new Promise((resolve) => child.once('exit', () => resolve())) }
  child.on('message', (report: OwnedConsumeReport) => {
    if (report.type === 'ready') return
    member.last = report
    if (report.type === 'done') member.done = true
  })
  return member
}

/** Pending (read, not acked) and lag (not read) over every partition stream of the run. */
async function groupState(redis: Redis, stream: string): Promise<{ pending: number; lag: number }> {
  let pending = 0
  let lag = 0
  for (let p = 0; p < PARTITIONS; p++) {
    const groups = (await redis.xinfo('GROUPS', partitionStreamOf(stream, p)).catch(() => [])) as unknown[][]
    for (const group of groups) {
      const fields = Object.fromEntries(Array.from({ length: group.length / 2 }, (_, i) => [group[2 * i], group[2 * i + 1]]))
      pending += Number(fields.pending)
      lag += Number(fields.lag ?? 0)
    }
    // A partition stream no member has read yet has no group: its entries are all still to read.
    if (groups.length === 0) lag += await redis.xlen(partitionStreamOf(stream, p))
  }
  return { pending, lag }
}

async function pendingOf(redis: Redis, stream: string, consumer: string): Promise<number> {
  let total = 0
  for (let p = 0; p < PARTITIONS; p++) {
    const rows = (await redis.xpending(partitionStreamOf(stream, p), 'demo', '-', '+', 100_000, consumer).catch(() => [])) as unknown[]
    total += rows.length
  }
  return total
}

function summarize(options: OwnedDemoOptions, uniqueKeys: number, perKey: Uint32Array, seconds: number, members: Member[], kills: number, heldAtKills: number): DemoSummary {
  const { effects, lost, doubleEffects } = effectTotals(perKey)
  const reports = members.map((m) => m.last).filter((r) => r !== undefined)
  const sum = (pick: (r: (typeof reports)[number]) => number): number => reports.reduce((total, r) => total + pick(r), 0)
  const layer = (field: keyof Omit<LayerStats, 'verdicts'>): number => sum((r) => r.engine[field])
  const bloomNegatives = layer('bloomNegatives')
  const bloomFalsePositives = layer('bloomFalsePositives')
  const lruHits = layer('lruHits')
  return {
    messages: options.messages,
    uniqueKeys,
    effects,
    duplicates: sum((r) => r.stats.duplicates),
    lost,
    doubleEffects,
    failed: sum((r) => r.stats.deadLettered),
    redeliveries: sum((r) => r.stats.reclaimed),
    msgsPerSec: Math.round(options.messages / seconds),
    bloomFalsePositiveRate: bloomNegatives + bloomFalsePositives === 0 ? 0 : bloomFalsePositives / (bloomNegatives + bloomFalsePositives),
    layers: {
      lruHits,
      storeDuplicates: sum((r) => r.engine.verdicts.duplicate) - lruHits,
      bloomNegatives,
      bloomPositives: layer('bloomPositives'),
      bloomFalsePositives,
      storeOperations: layer('storeOperations'),
    },
    config: { shards: options.shards, threads: 0, store: 'redis', mode: 'owned' },
    ownership: {
      partitions: PARTITIONS,
      members: options.consumers,
      // Every acquisition after a partition's first is a move.
      moved: Math.max(0, sum((r) => r.ownership.acquired) - PARTITIONS),
      fencedWrites: layer('fencedWrites'),
      groupCommits: layer('groupCommits'),
      kills,
      heldAtKills,
    },
  }
}
