/**
 * Streams suite: the Redis Streams transport (createStreamConsumer: XREADGROUP,
 * the engine on the redis store, XACK) against a raw consumer of the same
 * stream that does no dedup at all (XREADGROUP, the handler, XACK): what
 * idempotency costs a Redis Streams consumer. Uses the Redis at
 * IDEM_BENCH_REDIS (default redis://127.0.0.1:6379) under a fresh key prefix,
 * deleted afterwards.
 *
 * Rows, each pair with the same COUNT per read and the same batches in flight
 * (the next read sent while earlier batches are handled and acked):
 *   - raw vs idem with the transport's defaults (COUNT 256, 2 in flight): the target;
 *   - raw vs idem at COUNT 1024, 4 in flight: what larger batches buy both;
 *   - engine.processBatch alone on the same keys, no stream: the dedup cost
 *     without reads and acks, to show where the time goes.
 *
 * Workload: one stream of 200,000 entries (40,000 with --quick), each
 * `key <~45 bytes> payload <64 bytes>`, 30% duplicates (half a resend of one
 * of the last 100 keys, which the LRU answers; half a late copy of an old
 * key, which the store confirms). Every run fills a new stream, then each
 * consumer reads all of it in its own consumer group of that stream, so all
 * see the same entries from Redis. The order of the rows alternates from run to
 * run so that no row always runs on a warmer or busier Redis. msgs/s = entries
 * / wall time from the consumer's start until its last entry is acked; median
 * of 3 runs.
 *
 * The handler counts effects per key: the raw consumer runs it for every entry
 * (that is what no dedup means), idem once per unique key; both are checked.
 * Redis and node share the machine's cores: what idem adds per batch (a claim
 * and a commit per shard batch, sharing script calls, and the engine's own
 * work) is CPU taken from the reads and acks too.
 */
import { randomUUID } from 'node:crypto'
import { Redis } from 'ioredis'
import { createEngine } from '../src/engine.js'
import type { Message } from '../src/message.js'
import { createStreamConsumer } from '../src/transport/redis-streams/index.js'
import type { StreamEntry } from '../src/transport/redis-streams/entry.js'
import { markUnclean, median, progress, shortRate, withRatios, type BenchTable, type Check, type SuiteOptions, type SuiteResult, type Target } from './report.js'
import { deleteKeysUnder } from '../src/store/redis/delete-keys.js'
import { cpuMeter, dupStream, type CpuPerItem } from './dup-stream.js'
import { warmEngine } from './warm-engine.js'

const SUITE = 'streams'
const URL_ = process.env.IDEM_BENCH_REDIS ?? 'redis://127.0.0.1:6379'
const RUNS = 3
const DUP_RATE = 0.3
const SHARDS = 8
const TARGET_RATIO = 0.8
/** No entry acked for this long means a consumer is stuck, not slow. */
const STALL_MS = 30_000

interface Variant {
  label: string
  count: number
  batchesInFlight: number
}

const RAW: Variant = { label: 'raw XREADGROUP/XACK, no dedup, COUNT 256, 2 batches in flight', count: 256, batchesInFlight: 2 }
const IDEM: Variant = { label: 'idem createStreamConsumer, defaults (COUNT 256, 2 batches in flight)', count: 256, batchesInFlight: 2 }
const RAW_WIDE: Variant = { label: 'raw XREADGROUP/XACK, no dedup, COUNT 1024, 4 batches in flight', count: 1024, batchesInFlight: 4 }
const IDEM_WIDE: Variant = { label: 'idem createStreamConsumer, COUNT 1024, 4 batches in flight', count: 1024, batchesInFlight: 4 }
/** Not a stream consumer: the engine alone on the same keys, to show what dedup costs without reads and acks. */
const ENGINE_ONLY: Variant = { label: 'engine.processBatch alone, same keys, no stream (1024 per call, 4 in flight)', count: 1024, batchesInFlight: 4 }

interface Run {
  rate: number
  cpu: CpuPerItem
  effects: number
  doubles: number
  /** For the stream consumer: what would stretch its tail (in-flight waits and take-overs wait out their delays). */
  detail?: string
}

export async function runStreamsSuite(options: SuiteOptions): Promise<SuiteResult> {
  const admin = new Redis(URL_)
  try {
    await admin.ping()
  } catch (error) {
    admin.disconnect()
    throw new Error(`the streams suite needs a Redis at ${URL_} (set IDEM_BENCH_REDIS): ${(error as Error).message}`)
  }
  const prefix = `idem-bench-streams:${randomUUID()}:`
  const entries = options.quick ? 40_000 : 200_000
  const checks: Check[] = []
  const targets: Target[] = []
  const tables: BenchTable[] = []
  const variants = [RAW, IDEM, RAW_WIDE, IDEM_WIDE, ENGINE_ONLY]
  const rates = new Map<Variant, number[]>(variants.map((v) => [v, []]))
  const cpus = new Map<Variant, CpuPerItem[]>(variants.map((v) => [v, []]))
  try {
    for (let run = 0; run < RUNS; run++) {
      const stream = `${prefix}s${run}`
      const keys = dupStream(entries, run, DUP_RATE)
      progress(SUITE, `run ${run + 1}/${RUNS}: filling ${stream.slice(prefix.length)} with ${entries.toLocaleString('en-US')} entries (${keys.unique.toLocaleString('en-US')} unique keys)`)
      await fill(admin, stream, keys.keys)
      const order = run % 2 === 0 ? variants : [...variants].reverse()
      for (const variant of order) {
        const group = `g-${variants.indexOf(variant)}`
        const isRaw = variant === RAW || variant === RAW_WIDE
        progress(SUITE, `run ${run + 1}/${RUNS}: ${variant.label}`)
        const storePrefix = `${prefix}idem${run}:${group}:`
        const result = isRaw
          ? await rawConsumer(admin, stream, group, variant, entries)
          : variant === ENGINE_ONLY
            ? await engineOnly(admin, keys.keys, variant, storePrefix)
            : await idemConsumer(admin, stream, group, variant, entries, storePrefix)
        rates.get(variant)!.push(result.rate)
        cpus.get(variant)!.push(result.cpu)
        const cpu = `CPU per entry: node ${result.cpu.node.toFixed(1)} µs, redis ${result.cpu.redis.toFixed(1)} µs`
        progress(SUITE, `  ${shortRate(result.rate)} msgs/s, ${cpu}${result.detail === undefined ? '' : ` (${result.detail})`}`)
        const expected = isRaw ? entries : keys.unique
        checks.push({
          name: `${variant.label}, run ${run + 1}: ${isRaw ? 'one effect per entry' : 'one effect per unique key'}`,
          ok: result.effects === expected && (isRaw || result.doubles === 0),
          detail: `${result.effects} effects for ${expected} ${isRaw ? 'entries' : 'unique keys'}${result.doubles > 0 ? `, ${result.doubles} keys ran twice` : ''}`,
        })
      }
      await deleteKeysUnder(admin, prefix)
    }
    tables.push(
      withRatios({
        title: `Redis Streams consumer, ${entries.toLocaleString('en-US')} entries with ${Math.round(DUP_RATE * 100)}% duplicates, same stream: msgs/s`,
        baseline: RAW.label,
        ratioOf: 'rate',
        columns: [
          { key: 'runs', title: 'msgs/s of 3 runs' },
          { key: 'rate', title: 'msgs/s (median)' },
          { key: 'nodeCpu', title: 'Node CPU µs/entry (median)' },
          { key: 'redisCpu', title: 'Redis CPU µs/entry (median)' },
        ],
        rows: variants.map((v) => ({
          label: v.label,
          values: {
            runs: rates.get(v)!.map(shortRate).join(' / '),
            rate: median(rates.get(v)!),
            nodeCpu: median(cpus.get(v)!.map((c) => c.node)),
            redisCpu: median(cpus.get(v)!.map((c) => c.redis)),
          },
        })),
        notes: [
          `idem: engine with ${SHARDS} shards, threads 0, redis store (a claim and a commit per shard batch; the small ones of one turn share a script call), LRU 100k keys; the raw consumer runs the handler for every entry, idem once per key`,
          'each consumer reads the whole stream in its own consumer group; the Redis server and node share the machine',
          'reading, dedup and acking share one Node thread, which is the limit: at 0.8x raw, idem could add a quarter of the raw consumer\'s Node CPU per entry; compare the engine row\'s Node CPU with that',
        ],
      }),
    )
    for (const [idem, raw] of [[IDEM, RAW], [IDEM_WIDE, RAW_WIDE]] as const) {
      const idemRate = median(rates.get(idem)!)
      const baseRate = median(rates.get(raw)!)
      targets.push({
        name: `Redis Streams transport vs raw XREADGROUP/XACK, no dedup (COUNT ${raw.count}, ${raw.batchesInFlight} in flight both)`,
        goal: `>= ${TARGET_RATIO}x`,
        measured: `${(idemRate / baseRate).toFixed(2)}x (${shortRate(idemRate)} vs ${shortRate(baseRate)} msgs/s)`,
        met: idemRate / baseRate >= TARGET_RATIO,
      })
    }
  } finally {
    await deleteKeysUnder(admin, prefix)
    admin.disconnect()
  }
  return { suite: SUITE, tables, checks, targets }
}


async function fill(client: Redis, stream: string, keys: string[]): Promise<void> {
  const payload = 'p'.repeat(64)
  for (let i = 0; i < keys.length; i += 2000) {
    const pipeline = client.pipeline()
    for (const key of keys.slice(i, i + 2000)) pipeline.xadd(stream, '*', 'key', key, 'payload', payload)
    await pipeline.exec()
  }
}

/**
 * The consumer a user would write without idem, written as well as ours: a
 * blocking reader connection, acks on a second connection, the next read sent
 * while up to batchesInFlight batches are being handled and acked.
 */
async function rawConsumer(admin: Redis, stream: string, group: string, variant: Variant, total: number): Promise<Run> {
  const reader = new Redis(URL_)
  const commands = new Redis(URL_)
  await commands.xgroup('CREATE', stream, group, '0')
  await Promise.all([reader.ping(), commands.ping()])
  const effects = new Map<string, number>()
  let runs = 0
  let acked = 0
  const inFlight = new Set<Promise<void>>()
  const meter = await cpuMeter(admin)
  const started = performance.now()
  while (acked + sizeOf(inFlight) < total) {
    while (inFlight.size >= variant.batchesInFlight) await Promise.race(inFlight)
    const reply = (await reader.call('XREADGROUP', 'GROUP', group, 'raw', 'COUNT', variant.count, 'BLOCK', 1000, 'STREAMS', stream, '>')) as unknown[] | null
    if (reply === null) continue
    const items = (typeof reply[0] === 'string' ? reply[1] : (reply[0] as unknown[])[1]) as [string, string[]][]
    const ids = new Array<string>(items.length)
    for (let i = 0; i < items.length; i++) {
      const [id, pairs] = items[i]
      ids[i] = id
      const fields: Record<string, string> = {}
      for (let f = 0; f < pairs.length; f += 2) fields[pairs[f]] = pairs[f + 1]
      effects.set(fields.key, (effects.get(fields.key) ?? 0) + 1)
      runs++
    }
    const ack: Promise<void> = commands.call('XACK', stream, group, ...ids).then(() => {
      acked += ids.length
      inFlight.delete(ack)
    })
    Object.assign(ack, { size: ids.length })
    inFlight.add(ack)
  }
  await Promise.all(inFlight)
  const rate = total / ((performance.now() - started) / 1000)
  const cpu = await meter(total)
  reader.disconnect()
  commands.disconnect()
  return { rate, cpu, effects: runs, doubles: 0 }
}

function sizeOf(batches: Set<Promise<void>>): number {
  let n = 0
  for (const batch of batches) n += (batch as Promise<void> & { size: number }).size
  return n
}

async function idemConsumer(admin: Redis, stream: string, group: string, variant: Variant, total: number, storePrefix: string): Promise<Run> {
  const engine = await createEngine({ shards: SHARDS, store: { kind: 'redis', url: URL_, prefix: storePrefix }, bloom: { expectedItems: total * 2 } })
  await warmEngine(engine)
  const effects = new Map<string, number>()
  const handler = (entry: StreamEntry): void => void effects.set(entry.fields.key, (effects.get(entry.fields.key) ?? 0) + 1)
  const meter = await cpuMeter(admin)
  const started = performance.now()
  const consumer = createStreamConsumer({ stream, group, consumer: 'idem', engine, handler, keyOf: (entry) => entry.fields.key, count: variant.count, batchesInFlight: variant.batchesInFlight })
  let lastAcked = 0
  let lastProgress = performance.now()
  await new Promise<void>((resolve, reject) => {
    const poll = setInterval(() => {
      const { acked, deadLettered } = consumer.stats()
      if (acked + deadLettered >= total) {
        clearInterval(poll)
        resolve()
      } else if (acked !== lastAcked) {
        lastAcked = acked
        lastProgress = performance.now()
      } else if (performance.now() - lastProgress > STALL_MS) {
        clearInterval(poll)
        reject(new Error(`the streams consumer acked nothing for ${STALL_MS / 1000} s (${acked} of ${total} acked)`))
      }
    }, 2)
  })
  const rate = total / ((performance.now() - started) / 1000)
  const cpu = await meter(total)
  const stats = consumer.stats()
  const detail = `waits ${stats.inFlight}, retried ${stats.retried}, reclaimed ${stats.reclaimed}, transport errors ${stats.transportErrors}`
  await consumer.close()
  const closed = await Promise.race([engine.close().then(() => true), new Promise<boolean>((resolve) => setTimeout(() => resolve(false), 10_000).unref())])
  if (!closed) markUnclean()
  let runs = 0
  let doubles = 0
  for (const n of effects.values()) {
    runs += n
    if (n > 1) doubles++
  }
  return { rate, cpu, effects: runs === effects.size ? runs : effects.size, doubles, detail }
}

/** The engine on the same keys with no stream: processBatch of 1024 messages, 4 calls in flight. */
async function engineOnly(admin: Redis, keys: readonly string[], variant: Variant, storePrefix: string): Promise<Run> {
  const engine = await createEngine({ shards: SHARDS, store: { kind: 'redis', url: URL_, prefix: storePrefix }, bloom: { expectedItems: keys.length * 2 } })
  await warmEngine(engine)
  const effects = new Map<string, number>()
  const handler = (message: Message): void => void effects.set(message.key, (effects.get(message.key) ?? 0) + 1)
  // Messages shaped as the transport makes them (a fresh key string from the wire is what it would hash): copies, not the fill's strings.
  const messages: Message[] = keys.map((key) => ({ key: Buffer.from(key).toString() }))
  const meter = await cpuMeter(admin)
  const started = performance.now()
  const calls = new Set<Promise<unknown>>()
  for (let i = 0; i < messages.length; i += variant.count) {
    while (calls.size >= variant.batchesInFlight) await Promise.race(calls)
    const call: Promise<unknown> = engine.processBatch(messages.slice(i, i + variant.count), handler).then(() => calls.delete(call))
    calls.add(call)
  }
  await Promise.all(calls)
  const rate = keys.length / ((performance.now() - started) / 1000)
  const cpu = await meter(keys.length)
  await engine.close()
  let runs = 0
  let doubles = 0
  for (const n of effects.values()) {
    runs += n
    if (n > 1) doubles++
  }
  return { rate, cpu, effects: runs === effects.size ? runs : effects.size, doubles }
}

