/**
 * Redis suite: the redis store against the server's own ceiling, and idem
 * against the peer a Node user would pick, on the machine's Redis
 * (IDEM_BENCH_REDIS, default redis://127.0.0.1:6379; keys under a fresh
 * prefix, deleted afterwards; nothing else is touched).
 *
 * Compared:
 *   1. claim+commit throughput of fresh keys: `redis-benchmark -P 64` running
 *      `SET key val NX PX` (the cheapest possible claim, no commit, no fencing:
 *      the server's ceiling here) against the RedisStore, one store per shard
 *      (8) each driving batches of 1024 (a claim and a commit per batch, each
 *      a script call of its own at that size), and against ioredis pipelines
 *      of SET NX PX from Node.
 *   2. idem against @aws-lambda-powertools/idempotency (makeIdempotent over
 *      its CachePersistenceLayer on @redis/client, Lambda context registered
 *      as its docs require outside Lambda) on the same stream: 30% duplicates,
 *      a trivial async handler, 64 calls in flight for both; idem also fed by
 *      processBatch as a queue consumer would. A duplicate that arrives while
 *      its first copy is in flight gets "in progress" from both: it is
 *      delivered again after the stream, as a queue would. Each row checks one
 *      effect per unique key.
 *   3. Redis round trips per 1,000 messages for the engine, and how many the
 *      LRU saved (its hits would each have been a claim).
 */
import { execFile } from 'node:child_process'
import { randomUUID } from 'node:crypto'
import { promisify } from 'node:util'
import { IdempotencyConfig, makeIdempotent } from '@aws-lambda-powertools/idempotency'
import { CachePersistenceLayer } from '@aws-lambda-powertools/idempotency/cache'
import { createClient } from '@redis/client'
import { Redis } from 'ioredis'
import { createEngine } from '../src/engine.js'
import type { Message, Outcome } from '../src/message.js'
import { resolveRedisStore } from '../src/store/redis/redis-options.js'
import { RedisStore } from '../src/store/redis/redis-store.js'
import { median, progress, withRatios, type BenchTable, type Check, type SuiteOptions, type SuiteResult, type Target } from './report.js'
import { deleteKeysUnder } from '../src/store/redis/delete-keys.js'
import { dupStream, type DupStream as Stream, connectBenchRedis } from './dup-stream.js'
import { warmEngine } from './warm-engine.js'

const SUITE = 'redis'
const URL_ = process.env.IDEM_BENCH_REDIS ?? 'redis://127.0.0.1:6379'
const RUNS = 3
const BATCH = 1024
const SHARDS = 8
export const IN_FLIGHT_CALLS = 64
const DUP_RATE = 0.3

export async function runRedisSuite(options: SuiteOptions): Promise<SuiteResult> {
  const prefix = `idem-bench:${randomUUID()}:`
  const admin = await connectBenchRedis(SUITE, URL_)
  const checks: Check[] = []
  const targets: Target[] = []
  const tables: BenchTable[] = []
  try {
    // 1. claim+commit against the server's ceiling
    const claimKeys = options.quick ? 100_000 : 500_000
    const ceiling: number[] = []
    const store: number[] = []
    const pipelined: number[] = []
    for (let run = 0; run < RUNS; run++) {
      progress(SUITE, `claim+commit run ${run + 1}/${RUNS}: redis-benchmark -P 64 SET NX PX, ${claimKeys.toLocaleString('en-US')} requests`)
      ceiling.push(await redisBenchmark(claimKeys, `${prefix}rb:`))
      progress(SUITE, `claim+commit run ${run + 1}/${RUNS}: RedisStore, ${SHARDS} stores × batches of ${BATCH}`)
      store.push(await storeClaimCommit(claimKeys, `${prefix}s${run}:`))
      progress(SUITE, `claim+commit run ${run + 1}/${RUNS}: ioredis pipelines of SET NX PX`)
      pipelined.push(await ioredisPipelined(claimKeys, `${prefix}p${run}:`))
      await deleteKeysUnder(admin, prefix)
    }
    const [c, s, p] = [median(ceiling), median(store), median(pipelined)]
    tables.push(
      withRatios({
        title: `redis store claim+commit of fresh keys (${claimKeys.toLocaleString('en-US')} per run): keys/s`,
        baseline: 'redis-benchmark -P 64, SET NX PX (claim only)',
        ratioOf: 'rate',
        columns: [
          { key: 'runs', title: 'keys/s of 3 runs' },
          { key: 'rate', title: 'keys/s (median)' },
        ],
        rows: [
          { label: 'redis-benchmark -P 64, SET NX PX (claim only)', values: { runs: ceiling.map(short).join(' / '), rate: c } },
          { label: `idem RedisStore claim+commit, ${SHARDS} × batches of ${BATCH}`, values: { runs: store.map(short).join(' / '), rate: s } },
          { label: 'ioredis pipeline of 1000 SET NX PX (claim only)', values: { runs: pipelined.map(short).join(' / '), rate: p } },
        ],
        notes: [
          'redis-benchmark: 50 clients, -P 64, random keys from 10M; idem: a claim and a commit per batch, each a script call (fenced, with fingerprint and TTL)',
          'the Redis server and the client share the 2 cores',
        ],
      }),
    )
    targets.push({ name: 'redis store claim+commit vs redis-benchmark -P 64 SET NX PX', goal: '>= 0.5x', measured: `${(s / c).toFixed(2)}x (${short(s)} vs ${short(c)} keys/s)`, met: s / c >= 0.5 })

    // 2. idem against Powertools idempotency
    const messages = options.quick ? 20_000 : 100_000
    const rows = { powertools: [] as number[], process: [] as number[], batch: [] as number[] }
    let lastEngine: EngineRun | undefined
    for (let run = 0; run < RUNS; run++) {
      const stream = dupStream(messages, run, DUP_RATE)
      progress(SUITE, `peer run ${run + 1}/${RUNS}: powertools makeIdempotent, ${messages.toLocaleString('en-US')} messages, ${IN_FLIGHT_CALLS} in flight`)
      const peer = await powertools(stream, `${prefix}pt${run}:`)
      checks.push(countCheck(`powertools run ${run + 1}`, peer.effects, stream.unique))
      rows.powertools.push(peer.rate)
      progress(SUITE, `peer run ${run + 1}/${RUNS}: idem process(), ${IN_FLIGHT_CALLS} in flight`)
      const single = await idemProcess(stream, `${prefix}ip${run}:`)
      checks.push(countCheck(`idem process() run ${run + 1}`, single.effects, stream.unique))
      rows.process.push(single.rate)
      progress(SUITE, `peer run ${run + 1}/${RUNS}: idem processBatch(), batches of ${BATCH}`)
      lastEngine = await idemBatches(stream, `${prefix}ib${run}:`, admin)
      checks.push(countCheck(`idem processBatch() run ${run + 1}`, lastEngine.effects, stream.unique))
      rows.batch.push(lastEngine.rate)
      await deleteKeysUnder(admin, prefix)
    }
    const pt = median(rows.powertools)
    tables.push(
      withRatios({
        title: `idem vs Powertools idempotency on the same Redis, ${messages.toLocaleString('en-US')} messages, ${pct(DUP_RATE)} duplicates: msgs/s`,
        baseline: 'powertools makeIdempotent (CachePersistenceLayer)',
        ratioOf: 'rate',
        columns: [
          { key: 'runs', title: 'msgs/s of 3 runs' },
          { key: 'rate', title: 'msgs/s (median)' },
        ],
        rows: [
          { label: 'powertools makeIdempotent (CachePersistenceLayer)', values: { runs: rows.powertools.map(short).join(' / '), rate: pt } },
          { label: `idem process(), ${IN_FLIGHT_CALLS} in flight`, values: { runs: rows.process.map(short).join(' / '), rate: median(rows.process) } },
          { label: `idem processBatch(), batches of ${BATCH}`, values: { runs: rows.batch.map(short).join(' / '), rate: median(rows.batch) } },
        ],
        notes: [`both count one effect per unique key in every run (checks below); idem: ${SHARDS} shards, threads 0, redis store`],
      }),
    )
    const best = Math.max(median(rows.process), median(rows.batch))
    targets.push({ name: 'idem vs Powertools idempotency, same Redis and stream', goal: '>= 10x', measured: `${(median(rows.process) / pt).toFixed(1)}x with process(), ${(median(rows.batch) / pt).toFixed(1)}x with processBatch()`, met: best / pt >= 10 })

    // 3. round trips
    if (lastEngine !== undefined) {
      const perK = (n: number) => (1000 * n) / messages
      tables.push(
        withRatios({
          title: 'Redis round trips per 1,000 messages (idem processBatch, last run)',
          baseline: 'one claim + one commit per message (no batching, no LRU)',
          ratioOf: 'trips',
          columns: [{ key: 'trips', title: 'round trips / 1,000 msgs' }],
          rows: [
            { label: 'one claim + one commit per message (no batching, no LRU)', values: { trips: 2000 } },
            { label: 'idem, store operations (one per shard batch and step)', values: { trips: perK(lastEngine.storeOperations) } },
            { label: 'idem, Redis script calls (operations of one turn share a call)', values: { trips: perK(lastEngine.scriptCalls) } },
          ],
          notes: [
            'script calls are counted by Redis (INFO commandstats, EVALSHA + EVAL) over the run: another client of the same Redis running scripts meanwhile would be counted too',
            `the LRU answered ${perK(lastEngine.lruHits).toFixed(0)} of every 1,000 messages with no I/O (each a claim saved); bloom negatives save round trips only in owned mode, which does not exist yet`,
          ],
        }),
      )
    }
  } finally {
    await deleteKeysUnder(admin, prefix)
    admin.disconnect()
  }
  return { suite: SUITE, tables, checks, targets }
}

async function redisBenchmark(requests: number, keyPrefix: string): Promise<number> {
  const { hostname, port } = new URL(URL_)
  const { stdout } = await promisify(execFile)('redis-benchmark', ['-h', hostname, '-p', port || '6379', '-P', '64', '-n', String(requests), '-r', '10000000', '-q', 'SET', `${keyPrefix}__rand_int__`, 'v', 'NX', 'PX', '60000'])
  const match = /([\d.]+) requests per second/.exec(stdout)
  if (match === null) throw new Error(`could not read redis-benchmark's output: ${stdout}`)
  return Number(match[1])
}

async function storeClaimCommit(total: number, prefix: string): Promise<number> {
  const stores = Array.from({ length: SHARDS }, () => new RedisStore(resolveRedisStore({ kind: 'redis', url: URL_, prefix }, 0, [])))
  await Promise.all(stores.map((s) => s.renew(['warmup'], 'none', 1, 1)))
  const perStore = Math.ceil(total / SHARDS)
  const started = performance.now()
  await Promise.all(
    stores.map(async (store, shard) => {
      for (let done = 0; done < perStore; done += BATCH) {
        const keys = Array.from({ length: Math.min(BATCH, perStore - done) }, (_, i) => `${shard}/${done + i}/bench-key-padding-to-45-bytes`)
        const token = `t${shard}.${done}`
        await store.claim(keys, keys.map(() => undefined), token, 30_000, 60_000)
        await store.commit(keys, undefined, token, 60_000)
      }
    }),
  )
  const rate = (perStore * SHARDS) / ((performance.now() - started) / 1000)
  await Promise.all(stores.map((s) => s.close()))
  return rate
}

async function ioredisPipelined(total: number, prefix: string): Promise<number> {
  const client = new Redis(URL_)
  await client.ping()
  const started = performance.now()
  const inFlight = 8
  let next = 0
  await Promise.all(
    Array.from({ length: inFlight }, async () => {
      while (next < total) {
        const first = next
        next += 1000
        const pipeline = client.pipeline()
        for (let i = first; i < Math.min(first + 1000, total); i++) pipeline.set(`${prefix}${i}/bench-key-padding-to-45-bytes`, 'v', 'PX', 60_000, 'NX')
        await pipeline.exec()
      }
    }),
  )
  const rate = total / ((performance.now() - started) / 1000)
  client.disconnect()
  return rate
}


export interface PeerRun {
  rate: number
  effects: number
}

/** Powertools makeIdempotent over its CachePersistenceLayer on @redis/client, IN_FLIGHT_CALLS in flight; also run by the owned suite. */
export async function powertools(stream: Stream, prefix: string): Promise<PeerRun> {
  const client = await createClient({ url: URL_ }).connect()
  const effects = new Set<string>()
  let effectCount = 0
  const config = new IdempotencyConfig({ eventKeyJmesPath: 'key', expiresAfterSeconds: 600 })
  // Outside Lambda the in-progress guard needs a context with a remaining time, or a second in-flight copy runs again.
  config.registerLambdaContext({ getRemainingTimeInMillis: () => 60_000 } as never)
  const handler = makeIdempotent(
    async (event: { key: string }) => {
      effectCount++
      effects.add(event.key)
      return { ok: event.key }
    },
    // Its records are named keyPrefix#hash: under the run's prefix, so the run's clean-up deletes them.
    { persistenceStore: new CachePersistenceLayer({ client }), config, keyPrefix: prefix },
  )
  const run = async (event: { key: string }) => handler({ key: `${prefix}${event.key}` })
  const rate = await drive(stream, IN_FLIGHT_CALLS, async (key) => {
    try {
      await run({ key })
      return true
    } catch (error) {
      if ((error as Error).name === 'IdempotencyAlreadyInProgressError') return false
      throw error
    }
  })
  await client.close()
  return { rate, effects: effectCount === effects.size ? effectCount : -effectCount }
}

async function idemProcess(stream: Stream, prefix: string): Promise<PeerRun> {
  const engine = await createEngine({ shards: SHARDS, store: { kind: 'redis', url: URL_, prefix }, bloom: { expectedItems: stream.unique * 2 } })
  await warmEngine(engine)
  const seen = new Map<string, number>()
  const handler = async (m: Message) => void seen.set(m.key, (seen.get(m.key) ?? 0) + 1)
  const rate = await drive(stream, IN_FLIGHT_CALLS, async (key) => (await engine.process({ key }, handler)).verdict !== 'in-flight')
  await engine.close()
  return { rate, effects: effectsOf(seen) }
}

interface EngineRun extends PeerRun {
  storeOperations: number
  scriptCalls: number
  lruHits: number
}

async function idemBatches(stream: Stream, prefix: string, admin: Redis): Promise<EngineRun> {
  const engine = await createEngine({ shards: SHARDS, store: { kind: 'redis', url: URL_, prefix }, bloom: { expectedItems: stream.unique * 2 } })
  await warmEngine(engine)
  const before = engine.stats().totals
  const scriptsBefore = await scriptCallsOf(admin)
  const seen = new Map<string, number>()
  const handler = async (m: Message) => void seen.set(m.key, (seen.get(m.key) ?? 0) + 1)
  const started = performance.now()
  let pending: Message[] = stream.keys.map((key) => ({ key }))
  while (pending.length > 0) {
    const retry: Message[] = []
    const batches: Promise<void>[] = []
    for (let i = 0; i < pending.length; i += BATCH) {
      const batch = pending.slice(i, i + BATCH)
      batches.push(engine.processBatch(batch, handler).then((outs: Outcome[]) => outs.forEach((o, j) => o.verdict === 'in-flight' && retry.push(batch[j]))))
      if (batches.length === 4) await batches.shift()
    }
    await Promise.all(batches)
    pending = retry
  }
  const rate = stream.keys.length / ((performance.now() - started) / 1000)
  const totals = engine.stats().totals
  const scriptCalls = (await scriptCallsOf(admin)) - scriptsBefore
  await engine.close()
  return { rate, effects: effectsOf(seen), storeOperations: totals.storeOperations - before.storeOperations, scriptCalls, lruHits: totals.lruHits - before.lruHits }
}

/** Script calls the server has run since its start (EVALSHA and EVAL, the fallback after NOSCRIPT). */
async function scriptCallsOf(admin: Redis): Promise<number> {
  const stats = await admin.info('commandstats')
  let calls = 0
  for (const match of stats.matchAll(/^cmdstat_(?:evalsha|eval):calls=(\d+)/gm)) calls += Number(match[1])
  return calls
}

/** Runs every key with `concurrency` calls in flight; keys whose call says "not now" go again after the stream. */
async function drive(stream: Stream, concurrency: number, call: (key: string) => Promise<boolean>): Promise<number> {
  const started = performance.now()
  let queue = stream.keys
  while (queue.length > 0) {
    const again: string[] = []
    let next = 0
    await Promise.all(
      Array.from({ length: concurrency }, async () => {
        while (next < queue.length) {
          const key = queue[next++]
          if (!(await call(key))) again.push(key)
        }
      }),
    )
    queue = again
  }
  return stream.keys.length / ((performance.now() - started) / 1000)
}

/** The number of keys that ran, or minus the number of runs when some key ran twice. */
function effectsOf(seen: Map<string, number>): number {
  let runs = 0
  for (const n of seen.values()) runs += n
  return runs === seen.size ? runs : -runs
}

function countCheck(name: string, effects: number, unique: number): Check {
  return { name: `${name}: one effect per unique key`, ok: effects === unique, detail: effects < 0 ? `some key ran twice (${-effects} runs for ${unique} keys)` : `${effects} effects for ${unique} unique keys` }
}


function short(rate: number): string {
  return rate >= 1e6 ? `${(rate / 1e6).toFixed(2)}M` : `${Math.round(rate / 1000)}k`
}

function pct(rate: number): string {
  return `${Math.round(rate * 100)}%`
}
