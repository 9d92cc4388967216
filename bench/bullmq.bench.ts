/**
 * BullMQ suite: what idem costs a BullMQ consumer, on the machine's Redis
 * (IDEM_BENCH_REDIS, default redis://127.0.0.1:6379; a fresh queue and key
 * prefix per row, deleted afterwards; nothing else is touched).
 *
 * Compared, on the same load and the same Worker concurrency (256, the
 * default of createConsumer), one process:
 *   1. a raw BullMQ Worker running the handler on every job (the baseline: no
 *      idempotency, so every duplicate is a second effect);
 *   2. the same Worker deduplicating by hand with SET key NX PX before the
 *      handler (what people write first; it loses a job whose handler fails or
 *      whose process dies after the SET, and cannot tell in-flight from done);
 *   3. createConsumer over an engine with the redis store (the real thing),
 *      with the default 8 shards;
 *   4. the same with 1 shard: one shard takes every job, so each store round
 *      trip carries more keys;
 *   5. createConsumer over the memory store (one process only: shows what the
 *      store round trips cost inside row 3).
 * The ratio depends on the concurrency: a raw Worker holds a job's slot for
 * one Redis round trip (BullMQ's completion, which fetches the next job), idem
 * for three (claim, commit, completion), so at a low concurrency idem runs out
 * of slots while Node and Redis idle; at 1024 the raw Worker itself slows
 * down. So a second table runs raw and idem at 64, 256 and 1024 in every
 * round: each one's rate by concurrency, the ratio at each, and idem at its
 * best against the raw Worker at its best, which is the comparison a user
 * choosing a concurrency for each would see.
 * A third table runs handlers that await 5–60 ms of I/O (a timer; spread
 * evenly over the range, the same wait for the same key in every row), as a
 * handler that calls a database or an API does. There the raw Worker is bound
 * by its 256 slots and the waits, not by CPU, so idem should cost little: a
 * message settles as soon as its own handler returns (DESIGN.md §4.8), batches
 * serve the store's round trips only, and a later copy of a key whose handler
 * is running waits for that key alone. A cycle that settled a batch when its
 * slowest handler returned would hold every job behind the slowest one of its
 * batch, which this table shows as a ratio well below 1; the 1-shard row, where
 * every job goes through one shard, is where such blocking would show most.
 * Its keys are what a consumer reads from real message bodies (json-traffic.ts):
 * mixed shapes and lengths (UUIDs, short ids, long paths), 30% of them CJK
 * (订单/…/支付确认), 30% of the jobs repeating an earlier key (half recent
 * resends, half late redeliveries, spread through the queue). Each key reaches
 * the handler as a fresh string anyway: BullMQ stores job data as JSON and
 * JSON.parses it when the Worker takes the job.
 * The first two tables' load is the demo's stream (30% duplicates: resends,
 * bursts, late copies). Every load is added to the queue before the Worker
 * starts, so the rate is the consumer's alone (jobs/s from the Worker's start
 * to its last completed job). Their handler is a counter: any real handler's
 * time would be the same in every row.
 *
 * The machine's speed drifts by a third within seconds (other tenants), so the
 * rows run in rounds, in alternating order, and the target is the median of
 * each round's own idem/raw ratio: rows a few seconds apart share the drift.
 */
import { randomUUID } from 'node:crypto'
import { Queue, Worker, type Job } from 'bullmq'
import { Redis } from 'ioredis'
import { demoStream } from '../src/cli/demo-stream.js'
import { createEngine } from '../src/engine.js'
import { createConsumer } from '../src/transport/bullmq/consumer.js'
import { createProducer } from '../src/transport/bullmq/producer.js'
import { partitionQueueOf } from '../src/transport/bullmq/partitioned-queue.js'
import { formatRatio, median, progress, withRatios, type BenchTable, type Check, type SuiteOptions, type SuiteResult, type Target } from './report.js'
import { deleteKeysUnder } from '../src/store/redis/delete-keys.js'
import { cpuMeter, type CpuPerItem, connectBenchRedis } from './dup-stream.js'
import { JsonTraffic } from './json-traffic.js'
import { warmEngine } from './warm-engine.js'

const SUITE = 'bullmq'
const URL_ = process.env.IDEM_BENCH_REDIS ?? 'redis://127.0.0.1:6379'
const RUNS = 5
const CONCURRENCY = 256
const SWEEP_CONCURRENCIES = [64, 256, 1024]
const SWEEP_RUNS = 3
const SWEEP_VARIANTS: Variant[] = ['raw', 'idem-redis']
/** Slow handlers: at 256, the raw Worker is bound by the handlers' waits, not by CPU. */
const SLOW_CONCURRENCY = 256
/** Short rows (a few seconds each), so more rounds for the same time. */
const SLOW_RUNS = 5
const MAIN_VARIANTS: Variant[] = ['raw', 'setnx', 'idem-redis', 'idem-redis-1', 'idem-memory']
const SLOW_VARIANTS: Variant[] = ['raw', 'idem-redis', 'idem-redis-1']
/** Rows by variant; a table fills only its own variants' rows. */
const rowsOf = (): Record<Variant, number[]> => ({ raw: [], setnx: [], 'idem-redis': [], 'idem-redis-1': [], 'idem-memory': [] })
const shardsOf: Partial<Record<Variant, number>> = { 'idem-redis-1': 1 }
const SLOW_MIN_MS = 5
const SLOW_MAX_MS = 60
/** 5–60 ms by key (7919 is prime to the 56 values, so consecutive keys cover the range evenly); a duplicate waits as long as its first copy. */
const slowHandlerMs = (n: number): number => SLOW_MIN_MS + ((n * 7919) % (SLOW_MAX_MS - SLOW_MIN_MS + 1))
const SLOW_RANGE = `${SLOW_MIN_MS}–${SLOW_MAX_MS} ms`
const DUP_RATE = 0.3
/** Share of the slow table's keys written in CJK. */
const CJK_SHARE = 0.3
const connection = { url: URL_ }

type JobData = { key: string; n: number }
interface Load {
  jobs: JobData[]
  unique: number
}
interface RowRun {
  rate: number
  /** CPU time per job of this Node process and of the Redis server: less sensitive than the rate to a busy machine. */
  cpu: CpuPerItem
  effects: number
}
type Variant = 'raw' | 'setnx' | 'idem-redis' | 'idem-redis-1' | 'idem-memory'

const labels: Record<Variant, string> = {
  raw: 'BullMQ Worker, no dedup',
  setnx: 'BullMQ Worker + SET NX PX per job',
  'idem-redis': 'idem createConsumer, redis store',
  'idem-redis-1': 'idem createConsumer, redis store, 1 shard',
  'idem-memory': 'idem createConsumer, memory store',
}

export async function runBullmqSuite(options: SuiteOptions): Promise<SuiteResult> {
  const prefix = `idem-bench-bullmq:${randomUUID()}:`
  const admin = await connectBenchRedis(SUITE, URL_)
  const messages = options.quick ? 5_000 : 50_000
  const checks: Check[] = []
  const rates = rowsOf()
  const nodeCpu = rowsOf()
  const redisCpu = rowsOf()
  // At 256 slots and 32.5 ms a job on average, the raw Worker tops out near 7,900 jobs/s: 20,000 jobs last a few seconds, long enough that the start is not most of the row.
  const slowMessages = options.quick ? 2_000 : 20_000
  const slowRates = rowsOf()
  const sweepRates = SWEEP_CONCURRENCIES.map(() => rowsOf())
  /** One row of one round: measured, its effects checked, its keys deleted. `what` names the round (and the concurrency when it varies). */
  const row = async (what: string, variant: Variant, load: Load, keyTag: string, concurrency: number, handlerMs?: (n: number) => number): Promise<RowRun> => {
    progress(SUITE, `${what}: ${labels[variant]}, ${load.jobs.length.toLocaleString('en-US')} jobs`)
    const result = await measure(admin, variant, load, `${prefix}${keyTag}:`, concurrency, handlerMs)
    checks.push(effectCheck(variant, what, load, result))
    await deleteKeysUnder(admin, prefix)
    return result
  }
  try {
    for (let run = 0; run < RUNS; run++) {
      const load = makeLoad(messages, run)
      for (const variant of inRoundOrder(MAIN_VARIANTS, run)) {
        const result = await row(`run ${run + 1}/${RUNS}`, variant, load, `${variant}${run}`, CONCURRENCY)
        rates[variant].push(result.rate)
        nodeCpu[variant].push(result.cpu.node)
        redisCpu[variant].push(result.cpu.redis)
      }
    }
    for (let run = 0; run < SWEEP_RUNS; run++) {
      const load = makeLoad(messages, 200 + run)
      for (const index of inRoundOrder(SWEEP_CONCURRENCIES.map((_, index) => index), run)) {
        const concurrency = SWEEP_CONCURRENCIES[index]
        for (const variant of inRoundOrder(SWEEP_VARIANTS, run)) {
          const result = await row(`by concurrency, run ${run + 1}/${SWEEP_RUNS}, concurrency ${concurrency}`, variant, load, `c${concurrency}-${variant}${run}`, concurrency)
          sweepRates[index][variant].push(result.rate)
        }
      }
    }
    for (let run = 0; run < SLOW_RUNS; run++) {
      const load = makeJsonLoad(slowMessages, 100 + run)
      for (const variant of inRoundOrder(SLOW_VARIANTS, run)) {
        const result = await row(`handlers of ${SLOW_RANGE}, run ${run + 1}/${SLOW_RUNS}`, variant, load, `slow-${variant}${run}`, SLOW_CONCURRENCY, slowHandlerMs)
        slowRates[variant].push(result.rate)
      }
    }
  } finally {
    await deleteKeysUnder(admin, prefix)
    admin.disconnect()
  }
  const ratioIn = (table: Record<Variant, number[]>, variant: Variant): number => median(table[variant].map((rate, run) => rate / table.raw[run]))
  const roundRatio = (variant: Variant): number => ratioIn(rates, variant)
  const table: BenchTable = withRatios({
    title: `BullMQ consumer, ${messages.toLocaleString('en-US')} jobs with ${DUP_RATE * 100}% duplicates, one process: jobs/s`,
    baseline: labels.raw,
    ratioOf: 'rate',
    columns: [
      { key: 'runs', title: `jobs/s of ${RUNS} rounds` },
      { key: 'rate', title: 'jobs/s (median)' },
      { key: 'nodeCpu', title: 'Node CPU µs/job (median)' },
      { key: 'redisCpu', title: 'Redis CPU µs/job (median)' },
      { key: 'roundRatio', title: 'ratio to raw within each round (median)', format: formatRatio },
    ],
    rows: MAIN_VARIANTS.map((variant) => ({
      label: labels[variant],
      values: { runs: rates[variant].map(short).join(' / '), rate: median(rates[variant]), nodeCpu: median(nodeCpu[variant]), redisCpu: median(redisCpu[variant]), roundRatio: roundRatio(variant) },
    })),
    notes: [
      'the raw Worker runs every duplicate (its effect count is the job count); every other row makes one effect per unique key (checks below)',
      `every row: concurrency ${CONCURRENCY}, removeOnComplete, jobs added before the Worker starts; idem: 8 shards unless the row says 1, threads 0, lru 100,000 keys`,
      'BullMQ itself moves each job through several Lua scripts; the Redis server and Node share the machine, so on a busy machine compare the CPU columns (Redis CPU counts the whole server: the scripts of BullMQ and of idem)',
    ],
  })
  // Each round's best rate of a variant over the concurrencies, then idem's best over raw's best per round.
  const bestOf = (variant: Variant, run: number): number => Math.max(...sweepRates.map((table) => table[variant][run]))
  const bestRatio = median(Array.from({ length: SWEEP_RUNS }, (_, run) => bestOf('idem-redis', run) / bestOf('raw', run)))
  const sweepTable: BenchTable = {
    title: `BullMQ consumer by concurrency, ${messages.toLocaleString('en-US')} jobs with ${DUP_RATE * 100}% duplicates: jobs/s`,
    columns: [
      { key: 'raw', title: 'raw Worker jobs/s (median)' },
      { key: 'idem', title: 'idem redis store jobs/s (median)' },
      { key: 'roundRatio', title: 'idem/raw within each round (median)', format: formatRatio },
    ],
    rows: SWEEP_CONCURRENCIES.map((concurrency, index) => ({
      label: `concurrency ${concurrency}`,
      values: { raw: median(sweepRates[index].raw), idem: median(sweepRates[index]['idem-redis']), roundRatio: ratioIn(sweepRates[index], 'idem-redis') },
    })),
    notes: [
      `${SWEEP_RUNS} rounds, every concurrency in each (alternating order); idem: 8 shards, threads 0`,
      `idem at its best concurrency against the raw Worker at its best, within each round (median): ${formatRatio(bestRatio)}`,
      'a raw Worker holds a job for one Redis round trip, idem for three (claim, commit, then the completion of BullMQ): at a low concurrency idem runs out of slots while Node and Redis still have time to spare',
    ],
  }
  const slowTable: BenchTable = withRatios({
    title: `BullMQ consumer, handlers of ${SLOW_RANGE}, ${slowMessages.toLocaleString('en-US')} jobs with ${DUP_RATE * 100}% duplicates: jobs/s`,
    baseline: labels.raw,
    ratioOf: 'rate',
    columns: [
      { key: 'runs', title: `jobs/s of ${SLOW_RUNS} rounds` },
      { key: 'rate', title: 'jobs/s (median)' },
      { key: 'roundRatio', title: 'ratio to raw within each round (median)', format: formatRatio },
    ],
    rows: SLOW_VARIANTS.map((variant) => ({
      label: labels[variant],
      values: { runs: slowRates[variant].map((rate) => rate.toFixed(0)).join(' / '), rate: median(slowRates[variant]), roundRatio: ratioIn(slowRates, variant) },
    })),
    notes: [
      `concurrency ${SLOW_CONCURRENCY}; each job's handler awaits a ${SLOW_RANGE} timer (the same key the same wait in every row), the raw Worker's too`,
      `keys from JSON bodies: mixed shapes and lengths, ${CJK_SHARE * 100}% CJK; ${DUP_RATE * 100}% of the jobs repeat an earlier key (half recent, half late)`,
      'each message settles when its own handler returns, so a slow handler holds up no other key; the raw Worker also runs every duplicate\'s wait, idem completes a duplicate without it',
    ],
  })
  const [raw, idem] = [median(rates.raw), median(rates['idem-redis'])]
  const ratio = roundRatio('idem-redis')
  const target: Target = {
    name: `BullMQ createConsumer (redis store) vs raw Worker, trivial handler, concurrency ${CONCURRENCY} (the default)`,
    goal: '>= 0.85x',
    measured: `${ratio.toFixed(2)}x, median of ${RUNS} rounds' ratios (medians: ${short(idem)} vs ${short(raw)} jobs/s; 1 shard ${roundRatio('idem-redis-1').toFixed(2)}x; memory store ${roundRatio('idem-memory').toFixed(2)}x); best concurrency vs best ${bestRatio.toFixed(2)}x; same concurrency ${SWEEP_CONCURRENCIES.map((c, index) => `${c}: ${ratioIn(sweepRates[index], 'idem-redis').toFixed(2)}x`).join(', ')}`,
    met: ratio >= 0.85,
  }
  const slowRatio = ratioIn(slowRates, 'idem-redis')
  const slowTarget: Target = {
    name: `BullMQ createConsumer (redis store) vs raw Worker, handlers awaiting ${SLOW_RANGE}, concurrency ${SLOW_CONCURRENCY}`,
    goal: '>= 0.9x',
    measured: `${slowRatio.toFixed(2)}x, median of ${SLOW_RUNS} rounds' ratios (medians: ${median(slowRates['idem-redis']).toFixed(0)} vs ${median(slowRates.raw).toFixed(0)} jobs/s; 1 shard ${ratioIn(slowRates, 'idem-redis-1').toFixed(2)}x)`,
    met: slowRatio >= 0.9,
  }
  const owned = await ownedRows(prefix, messages, options.quick ? 2 : OWNED_RUNS, checks)
  return { suite: SUITE, tables: [table, sweepTable, slowTable, owned.table], checks, targets: [target, slowTarget, owned.target] }
}

const short = (rate: number): string => `${(rate / 1000).toFixed(1)}k`

/** Owned mode: partition queues, and the rounds of its table (raw then idem, alternating). */
const OWNED_PARTITIONS = 8
const OWNED_RUNS = 3

/**
 * Owned mode (issue 13): the same jobs on OWNED_PARTITIONS partition queues
 * (createProducer), taken by raw Workers, one per partition queue, and by
 * idem's owned consumer (its engine alone in its group, so it runs a Worker
 * per partition queue), at the same total concurrency (CONCURRENCY split
 * among the Workers), trivial handler. A row runs from its Workers' start to
 * the last job completed.
 */
async function ownedRows(prefix: string, messages: number, runs: number, checks: Check[]): Promise<{ table: BenchTable; target: Target }> {
  const admin = new Redis(URL_)
  try {
    return await ownedRounds(admin, prefix, messages, runs, checks)
  } finally {
    await deleteKeysUnder(admin, prefix)
    admin.disconnect()
  }
}

async function ownedRounds(admin: Redis, prefix: string, messages: number, runs: number, checks: Check[]): Promise<{ table: BenchTable; target: Target }> {
  const rates = { raw: [] as number[], idem: [] as number[] }
  const ratios: number[] = []
  const perWorker = Math.max(1, CONCURRENCY / OWNED_PARTITIONS)
  for (let run = 0; run < runs; run++) {
    const load = makeLoad(messages, 500 + run)
    const pair: Partial<Record<'raw' | 'idem', number>> = {}
    for (const side of inRoundOrder(['raw', 'idem'] as const, run)) {
      progress(SUITE, `owned run ${run + 1}/${runs}: ${side}, ${load.jobs.length.toLocaleString('en-US')} jobs on ${OWNED_PARTITIONS} partition queues`)
      const queue = `${prefix}owned${run}${side}`.replace(/:/g, '-')
      const producer = createProducer<JobData>({ queue, connection, partitions: OWNED_PARTITIONS, keyOf: (job) => job.data.key })
      for (let i = 0; i < load.jobs.length; i += 1000) await producer.addBulk(load.jobs.slice(i, i + 1000).map((data) => ({ name: 'order', data, opts: { removeOnComplete: true } })))
      const effects = new Uint8Array(load.unique)
      let effectCount = 0
      const handler = (job: Job<JobData>): void => {
        effects[job.data.n]++
        effectCount++
      }
      let completed: () => number
      const stops: (() => Promise<unknown>)[] = []
      const started = performance.now()
      if (side === 'raw') {
        let count = 0
        for (let p = 0; p < OWNED_PARTITIONS; p++) {
          const worker = new Worker<JobData>(partitionQueueOf(queue, p), async (job) => handler(job), { connection, concurrency: perWorker })
          worker.on('completed', () => void count++)
          stops.push(() => worker.close())
        }
        completed = () => count
      } else {
        const engine = await createEngine({ mode: 'owned', partitions: OWNED_PARTITIONS, shards: 8, group: 'bench', bloom: { expectedItems: load.unique }, store: { kind: 'redis', url: URL_, prefix: `${prefix}owned${run}:` } })
        const consumer = createConsumer<JobData, void>({ queue, connection, engine, handler, keyOf: (job) => job.data.key, concurrency: perWorker })
        stops.push(() => consumer.close(), () => engine.close())
        completed = () => consumer.stats().completed
      }
      while (completed() < load.jobs.length) await new Promise((resolve) => setTimeout(resolve, 5))
      const rate = load.jobs.length / ((performance.now() - started) / 1000)
      for (const stop of stops) await stop()
      await producer.close()
      for (let p = 0; p < OWNED_PARTITIONS; p++) {
        const q = new Queue(partitionQueueOf(queue, p), { connection })
        await q.obliterate({ force: true })
        await q.close()
      }
      await deleteKeysUnder(admin, prefix)
      pair[side] = rate
      rates[side].push(rate)
      const unique = effects.reduce((n, e) => n + (e > 0 ? 1 : 0), 0)
      checks.push({
        name: `owned partition queues, ${side}, run ${run + 1}: ${side === 'raw' ? 'one effect per job' : 'one effect per unique key'}`,
        ok: side === 'raw' ? effectCount === load.jobs.length : effectCount === load.unique && unique === load.unique,
        detail: `${effectCount} effects for ${side === 'raw' ? `${load.jobs.length} jobs` : `${load.unique} unique keys`}`,
      })
      progress(SUITE, `  ${short(rate)} jobs/s`)
    }
    ratios.push(pair.idem! / pair.raw!)
  }
  const ratio = median(ratios)
  const table = withRatios({
    title: `BullMQ in owned mode, trivial handler, ${messages.toLocaleString('en-US')} jobs with ${DUP_RATE * 100}% duplicates on ${OWNED_PARTITIONS} partition queues, total concurrency ${CONCURRENCY}: jobs/s`,
    baseline: 'raw Workers, one per partition queue',
    ratioOf: 'rate',
    columns: [
      { key: 'runs', title: `jobs/s of ${runs} runs` },
      { key: 'rate', title: 'jobs/s (median)' },
    ],
    rows: [
      { label: 'raw Workers, one per partition queue', values: { runs: rates.raw.map(short).join(' / '), rate: median(rates.raw) } },
      { label: `idem owned createConsumer (one Worker per owned partition queue, ${OWNED_PARTITIONS} partitions on 8 shards)`, values: { runs: rates.idem.map(short).join(' / '), rate: median(rates.idem) } },
    ],
    notes: [`concurrency ${perWorker} per Worker on both sides; jobs added before the Workers start; ratio of each run's pair: ${ratios.map(formatRatio).join(' / ')}`],
  })
  const target: Target = {
    name: 'BullMQ in owned mode vs raw Workers over the same partition queues at the same total concurrency, trivial handler',
    goal: '>= 0.9x',
    measured: `${ratio.toFixed(2)}x (${short(median(rates.idem))} vs ${short(median(rates.raw))} jobs/s)`,
    met: ratio >= 0.9,
  }
  return { table, target }
}

/** Rows in alternating order from round to round, so no row always runs first (or last) on a drifting machine. */
function inRoundOrder<T>(items: readonly T[], run: number): T[] {
  return run % 2 === 0 ? [...items] : [...items].reverse()
}

function effectCheck(variant: Variant, what: string, load: Load, result: RowRun): Check {
  const expected = variant === 'raw' ? load.jobs.length : load.unique
  return {
    name: `${labels[variant]} ${what}: ${variant === 'raw' ? 'one effect per job' : 'one effect per unique key'}`,
    ok: result.effects === expected,
    detail: `${result.effects} effects, expected ${expected}`,
  }
}

function makeLoad(messages: number, run: number): Load {
  const jobs: JobData[] = []
  let unique = 0
  for (const message of demoStream({ messages, dupRate: DUP_RATE, seed: 1000 + run })) {
    jobs.push({ key: message.key, n: message.payload!.n })
    unique = Math.max(unique, message.payload!.n + 1)
  }
  return { jobs, unique }
}

/**
 * Keys as json-traffic.ts makes them (mixed shapes, CJK_SHARE of them CJK), each job's `n` the index of
 * its key's first copy, so effects can be counted per unique key.
 */
function makeJsonLoad(messages: number, run: number): Load {
  const { keys, repeats } = new JsonTraffic({ cjkShare: CJK_SHARE, dupRate: DUP_RATE, seed: 1000 + run }).next(messages)
  const indexOf = new Map<string, number>()
  const jobs = keys.map((key) => {
    let n = indexOf.get(key)
    if (n === undefined) indexOf.set(key, (n = indexOf.size))
    return { key, n }
  })
  // Two ids with the same text would merge two keys and make the effect check wrong, not the consumer.
  if (indexOf.size !== messages - repeats) throw new Error(`json-traffic gave ${indexOf.size} distinct keys for ${messages - repeats} ids`)
  return { jobs, unique: indexOf.size }
}

/** `handlerMs`: how long the handler of a job waits before its effect; undefined for a handler that returns at once. */
async function measure(admin: Redis, variant: Variant, load: Load, prefix: string, concurrency: number, handlerMs: ((n: number) => number) | undefined): Promise<RowRun> {
  const queue = new Queue<JobData>(`${prefix}q`.replace(/:/g, '-'), { connection })
  const effects = new Uint8Array(load.unique)
  let effectCount = 0
  const count = (job: Job<JobData>): void => {
    effects[job.data.n]++
    effectCount++
  }
  const effect =
    handlerMs === undefined
      ? count
      : async (job: Job<JobData>): Promise<void> => {
          await new Promise((resolve) => setTimeout(resolve, handlerMs(job.data.n)))
          count(job)
        }
  for (let i = 0; i < load.jobs.length; i += 1000) {
    await queue.addBulk(load.jobs.slice(i, i + 1000).map((data) => ({ name: 'order', data, opts: { removeOnComplete: true } })))
  }

  const cleanups: (() => Promise<void>)[] = []
  try {
    let worker: Worker<JobData>
    if (variant === 'raw' || variant === 'setnx') {
      const redis = new Redis(URL_)
      cleanups.push(async () => redis.disconnect())
      const processor =
        variant === 'raw'
          ? async (job: Job<JobData>) => effect(job)
          : async (job: Job<JobData>) => {
              if ((await redis.set(`${prefix}nx:${job.data.key}`, '1', 'PX', 600_000, 'NX')) === 'OK') effect(job)
            }
      const raw = new Worker<JobData>(queue.name, processor, { connection, concurrency, autorun: false })
      cleanups.unshift(() => raw.close())
      worker = raw
    } else {
      const store = variant === 'idem-memory' ? ({ kind: 'memory' } as const) : ({ kind: 'redis', url: URL_, prefix } as const)
      const engine = await createEngine({ shards: shardsOf[variant] ?? 8, threads: 0, bloom: { expectedItems: load.unique }, store })
      cleanups.push(() => engine.close())
      await warmEngine(engine)
      const consumer = createConsumer<JobData, void>({ queue: queue.name, connection, engine, handler: effect, keyOf: (job) => job.data.key, concurrency, autorun: false })
      cleanups.unshift(() => consumer.close())
      worker = consumer.worker!
    }
    await worker.waitUntilReady()
    let completed = 0
    const done = new Promise<void>((resolve) => {
      worker.on('completed', () => {
        if (++completed === load.jobs.length) resolve()
      })
    })
    const meter = await cpuMeter(admin)
    const started = performance.now()
    void worker.run()
    await done
    const rate = load.jobs.length / ((performance.now() - started) / 1000)
    const cpu = await meter(load.jobs.length)
    return { rate, cpu, effects: variant === 'raw' ? effectCount : effects.reduce((sum, n) => sum + n, 0) }
  } finally {
    for (const cleanup of cleanups) await cleanup()
    await queue.obliterate({ force: true })
    await queue.close()
  }
}

