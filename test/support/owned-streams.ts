/**
 * What the owned-mode Redis Streams tests share (test/integration and
 * test/fault): keys with duplicates spread through the stream, a producer run,
 * the group's state summed over every partition stream, effects counted in a
 * Redis hash, and members in child processes (streams-owned-consumer.mjs) that
 * can be SIGKILLed or SIGSTOPped.
 */
import { fork, type ChildProcess } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import type { Redis } from 'ioredis'
import { partitionStreamOf, type StreamProducer } from '../../dist/src/transport/redis-streams/index.js'
import { STALL_MS, untilDone } from './progress.js'

/** 30% resends of earlier keys drawn uniformly, so duplicates are spread through the stream. */
export function spreadKeys(count: number, seed = 12345): { keys: string[]; unique: number } {
  let state = seed
  const random = () => ((state = Math.imul(state ^ (state >>> 15), 0x2c1b3c6d) + 0x6d2b79f5) >>> 0) / 2 ** 32
  const keys: string[] = []
  let unique = 0
  for (let i = 0; i < count; i++) {
    if (unique > 0 && random() < 0.3) keys.push(keyName(Math.floor(random() * unique)))
    else keys.push(keyName(unique++))
  }
  return { keys, unique }
}
const keyName = (n: number): string => (n % 7 === 0 ? `注文-${n}` : `order-${n}`)

/** Adds `keys` in chunks, `pauseMs` apart (a producer running beside the consumers). */
export async function produce(p: StreamProducer, keys: string[], chunk: number, pauseMs: number): Promise<void> {
  for (let i = 0; i < keys.length; i += chunk) {
    await p.addMany(keys.slice(i, i + chunk).map((key) => ({ key, amount: '10' })))
    if (pauseMs > 0) await new Promise((resolve) => setTimeout(resolve, pauseMs))
  }
}

/** One test's partitioned stream, its group 'g' and its effects hash. */
export class PartitionedStream {
  constructor(
    readonly redis: Redis,
    readonly stream: string,
    readonly partitions: number,
    readonly effectsKey: string,
  ) {}

  /** Pending (read, not acked) and lag (not read) summed over every partition stream. */
  async groupState(): Promise<{ pending: number; lag: number }> {
    let pending = 0
    let lag = 0
    for (let p = 0; p < this.partitions; p++) {
      const groups = (await this.redis.xinfo('GROUPS', partitionStreamOf(this.stream, p)).catch(() => [])) as unknown[][]
      if (groups.length === 0) continue
      const record = Object.fromEntries(Array.from({ length: groups[0].length / 2 }, (_, i) => [groups[0][2 * i], groups[0][2 * i + 1]]))
      pending += Number(record.pending)
      lag += Number(record.lag)
    }
    return { pending, lag }
  }

  /** Pending entries under one consumer name, over every partition stream. */
  async pendingOf(consumer: string): Promise<number> {
    let total = 0
    for (let p = 0; p < this.partitions; p++) {
      const rows = (await this.redis.xpending(partitionStreamOf(this.stream, p), 'g', '-', '+', 100_000, consumer).catch(() => [])) as unknown[]
      total += rows.length
    }
    return total
  }

  async effects(unique: number): Promise<{ lost: number; doubles: number; keys: number }> {
    const perKey = Object.values(await this.redis.hgetall(this.effectsKey)).map(Number)
    return { keys: perKey.length, lost: unique - perKey.length, doubles: perKey.reduce((sum, c) => sum + c - 1, 0) }
  }

  /** Waits until every entry of `total` is read and acked on every partition stream. */
  async untilAllAcked(total: number): Promise<void> {
    await untilDone({
      what: 'every entry acked',
      done: async () => {
        const { pending, lag } = await this.groupState()
        return pending === 0 && lag === 0 && (await this.entries()) === total
      },
      progress: async () => {
        const { pending, lag } = await this.groupState()
        return (await this.entries()) - pending - lag
      },
      pollMs: 50,
    })
  }

  async entries(): Promise<number> {
    let total = 0
    for (let p = 0; p < this.partitions; p++) total += await this.redis.xlen(partitionStreamOf(this.stream, p))
    return total
  }

  /** Whether the members' partitions are disjoint and cover all of them. */
  shareIsComplete(owned: number[][]): boolean {
    const all = owned.flat()
    return all.length === this.partitions && new Set(all).size === this.partitions
  }
}

export interface ChildMember {
  id: string
  process: ChildProcess
  /** Its partitions, as it last reported them. */
  owned: number[]
  /** Its consumer's and engine's counts, as it last reported them. */
  stats: Record<string, number>
  engine: { fencedWrites: number; notOwned: number }
  /** Its resident set size, first and last reported (bytes). */
  rss: { first: number; last: number }
}

export interface ChildOptions {
  url: string
  prefix: string
  leaseMs: number
  claimIdleMs: number
  count: number
  batchesInFlight: number
  /** Each handler awaits this long before it records its effect (0: none). */
  handlerDelayMs?: number
}

const fixture = fileURLToPath(new URL('./fixtures/streams-owned-consumer.mjs', import.meta.url))

/** A member in a child process (streams-owned-consumer.mjs), so it can be killed without a goodbye; `children` tracks it for the test's clean-up. */
export function startChild(s: PartitionedStream, memberId: string, options: ChildOptions, children: Set<ChildProcess>): Promise<ChildMember> {
  const args = [options.url, s.stream, options.prefix, s.effectsKey, memberId, s.partitions, options.leaseMs, options.claimIdleMs, options.count, options.batchesInFlight, options.handlerDelayMs ?? 0].map(String)
  const child = fork(fixture, args, { stdio: ['ignore', 'ignore', 'inherit', 'ipc'] })
  children.add(child)
  child.on('exit', () => children.delete(child))
  const handle: ChildMember = { id: memberId, process: child, owned: [], stats: {}, engine: { fencedWrites: 0, notOwned: 0 }, rss: { first: 0, last: 0 } }
  child.on('message', (message: { owned?: number[]; stats?: Record<string, number>; engine?: ChildMember['engine']; rss?: number }) => {
    if (message.owned !== undefined) handle.owned = message.owned
    if (message.stats !== undefined) handle.stats = message.stats
    if (message.engine !== undefined) handle.engine = message.engine
    if (message.rss !== undefined) {
      if (handle.rss.first === 0) handle.rss.first = message.rss
      handle.rss.last = message.rss
    }
  })
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`member ${memberId} not ready after ${STALL_MS / 1000} s`)), STALL_MS)
    child.once('message', () => {
      clearTimeout(timer)
      resolve(handle)
    })
    child.once('exit', (code, signal) => reject(new Error(`member ${memberId} exited before it was ready (${code ?? signal})`)))
  })
}

/** Resolves once the child has exited (at once if it already has). */
export function exited(child: ChildProcess): Promise<void> {
  return new Promise((resolve) => (child.exitCode !== null || child.signalCode !== null ? resolve() : child.once('exit', () => resolve())))
}
