/**
 * What the audit log costs the engine: the same stream through the engine with
 * audit off and on (its defaults: aes-256-gcm, decisions 'all', digests of the
 * keys), side by side in one process, alternating, median of --runs (5).
 * Memory store, and the Redis store with --redis (a fresh prefix, deleted).
 *
 *   node dist/bench/audit-overhead.js [--messages N] [--runs N] [--redis URL] [--cipher sm4]
 *
 * Workload as bench:engine's: fresh ~45-byte keys, 30% duplicates (a recent
 * key or an old one), batches of 1024 with 4 in flight, shards 8, threads 0,
 * a trivial handler. A run with audit on ends when close() has sealed and
 * written every record; the time counted is the stream's (the tail the
 * sealing thread finishes after is reported apart, as "close ms").
 */
import { randomBytes, randomUUID } from 'node:crypto'
import { mkdtempSync, rmSync } from 'node:fs'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { parseArgs } from 'node:util'
import { Redis } from 'ioredis'
import { createEngine } from '../src/engine.js'
import type { EngineOptions } from '../src/config.js'
import type { Message } from '../src/message.js'
import { deleteKeysUnder } from '../src/store/redis/delete-keys.js'
import { KeySpace, seededRandom } from './fresh-keys.js'
import { median } from './report.js'

const { values } = parseArgs({ options: { messages: { type: 'string', default: '1000000' }, runs: { type: 'string', default: '5' }, redis: { type: 'string' }, cipher: { type: 'string', default: 'aes-256-gcm' } } })
const MESSAGES = Number(values.messages)
const RUNS = Number(values.runs)
const BATCH = 1024
const IN_FLIGHT = 4

function streamOf(seed: number, count: number): Message<number>[] {
  const space = new KeySpace('ascii', seed)
  const next32 = seededRandom(seed)
  const random = (): number => next32() / 2 ** 32
  const unique = Math.round(count * 0.7)
  const keys = space.fresh(unique)
  const messages: Message<number>[] = []
  let u = 0
  for (let i = 0; i < count; i++) {
    if (u === 0 || (random() >= 0.3 && u < unique)) messages.push({ key: keys[u++], payload: i })
    else {
      const back = random() < 0.5 ? Math.min(u, 1 + Math.floor(random() * 1000)) : 1 + Math.floor(random() * u)
      // A new string object for the old key, as a redelivery off the wire is.
      messages.push({ key: Buffer.from(keys[u - back]).toString(), payload: i })
    }
  }
  return messages
}

async function drive(options: EngineOptions, messages: Message<number>[]): Promise<{ msgsPerSecond: number; closeMs: number; audit?: unknown }> {
  const engine = await createEngine(options)
  const handler = async (): Promise<number> => 1
  const warm = streamOf(999, 50_000)
  for (let i = 0; i < warm.length; i += BATCH) await engine.processBatch(warm.slice(i, i + BATCH), handler)
  const start = performance.now()
  let next = 0
  const lane = async (): Promise<void> => {
    while (next < messages.length) {
      const from = next
      next += BATCH
      await engine.processBatch(messages.slice(from, from + BATCH), handler)
    }
  }
  await Promise.all(Array.from({ length: IN_FLIGHT }, lane))
  const seconds = (performance.now() - start) / 1000
  const closeStart = performance.now()
  await engine.close()
  return { msgsPerSecond: messages.length / seconds, closeMs: performance.now() - closeStart, audit: engine.stats().audit }
}

const dir = mkdtempSync(join(tmpdir(), 'idem-audit-bench-'))
const keyHex = randomBytes(values.cipher === 'sm4' ? 16 : 32).toString('hex')
const admin = values.redis === undefined ? undefined : new Redis(values.redis)
const prefix = `idem-bench:${randomUUID()}:`
try {
  const off: number[] = []
  const on: number[] = []
  for (let run = 0; run < RUNS; run++) {
    const messages = streamOf(run + 1, MESSAGES)
    const store: EngineOptions['store'] = values.redis === undefined ? { kind: 'memory' } : { kind: 'redis', url: values.redis, prefix: `${prefix}${run}off:` }
    const base: EngineOptions = { shards: 8, bloom: { expectedItems: MESSAGES * 2 }, store }
    const a = await drive(base, messages)
    off.push(a.msgsPerSecond)
    const onStore: EngineOptions['store'] = values.redis === undefined ? store : { kind: 'redis', url: values.redis, prefix: `${prefix}${run}on:` }
    const b = await drive({ ...base, store: onStore, audit: { file: join(dir, `run${run}.log`), key: keyHex, cipher: values.cipher as 'sm4' } }, streamOf(run + 1, MESSAGES))
    on.push(b.msgsPerSecond)
    console.error(`run ${run + 1}: off ${Math.round(a.msgsPerSecond)} msgs/s, on ${Math.round(b.msgsPerSecond)} msgs/s (${(b.msgsPerSecond / a.msgsPerSecond).toFixed(3)}x), close ${Math.round(b.closeMs)} ms, audit ${JSON.stringify(b.audit)}`)
    if (admin !== undefined) await deleteKeysUnder(admin, prefix)
  }
  const m = { store: values.redis === undefined ? 'memory' : 'redis', cipher: values.cipher, messages: MESSAGES, runs: RUNS, offMedian: Math.round(median(off)), onMedian: Math.round(median(on)), ratio: Number((median(on) / median(off)).toFixed(3)) }
  console.log(JSON.stringify(m))
} finally {
  rmSync(dir, { recursive: true, force: true })
  await admin?.quit()
}
