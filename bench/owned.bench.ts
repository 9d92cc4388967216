/**
 * Owned suite: owned mode (DESIGN.md §5) against strict mode on the same
 * Redis and the same traffic, against Powertools idempotency, and what a new
 * owner pays to take a partition over. Uses the Redis at IDEM_BENCH_REDIS
 * (default redis://127.0.0.1:6379) under a fresh key prefix, deleted
 * afterwards (SCAN + UNLINK; nothing else is touched).
 *
 * Why owned mode should be faster: strict claims every key the LRU does not
 * answer (a store call before the handler, a commit after); an owned
 * partition's bloom filter answers "never seen" with no store call, reads
 * (no claim) only the "maybe seen" keys the LRU does not hold, and writes
 * DONE records behind in group commits, one per shard per flush.
 *
 * Traffic, as users have it (json-traffic.ts): keys read out of JSON bodies
 * by JSON.parse (fresh strings no one has hashed), mixed shapes and lengths,
 * 10% CJK, and 30% duplicates spread through the stream: every repeat is
 * drawn uniformly from all earlier keys (recentShare 0), not a resend right
 * behind its first copy, so the LRU (its default 100,000 keys) misses many
 * and the bloom filter and the store are what answer them. Each contender of
 * a round gets the same key texts parsed anew (the same seed), never the
 * strings another contender hashed.
 *
 * Compared, side by side in one run, rounds alternating (strict, owned,
 * strict, owned…; a warm-up round first, not reported), medians of 3 runs
 * (2 with --quick):
 *   1. the engine on the Redis store, trivial async handler, processBatch
 *      batches of 1024 with 4 in flight, threads 0, 8 shards (owned: 64
 *      partitions on the 8 shards, this process the only member of its
 *      group, so it owns them all): msgs/s, and per 1,000 messages the
 *      engine's store operations, bloom negatives (in owned mode each one a
 *      key that ran with no store call before it), LRU hits, group commits,
 *      the Redis server's commands (INFO stats total_commands_processed,
 *      commands inside scripts included), its CPU time and this process's.
 *   2. the same with a handler that awaits I/O (setTimeout 5–60 ms, a seeded
 *      draw per message), 8 batches in flight and maxInFlightPerShard 8192:
 *      the waits bound both modes, which should come out close.
 *   3. Powertools makeIdempotent (the runner of redis.bench.ts, 64 calls in
 *      flight), idem strict and idem owned (processBatch as in 1) on the same
 *      spread stream.
 *   4. warm start: an owned engine with partitions 1 settles 1,000,000
 *      distinct keys (100,000 with --quick) and closes (it snapshots its
 *      bloom filter at close); a new engine (another member of the same group
 *      and prefix) starts: its restore time (snapshot, then the log after
 *      it); then, the snapshot hash deleted, the restore from the whole log.
 *      After each restore a sample of 10,000 settled keys is sent again and
 *      must come back 10,000 duplicates with no handler run.
 *
 * Every run of every contender counts one effect per unique key (lost 0,
 * double 0): a check. In-flight verdicts (a copy of a key whose first copy is
 * still running) are delivered again after the stream, as a queue would.
 * Redis and node share the machine's cores, and the Redis server may be
 * shared: its command and CPU figures count every client of the server.
 */
import { randomUUID } from 'node:crypto'
import { Redis } from 'ioredis'
import { createEngine, type Engine } from '../src/engine.js'
import type { EngineOptions } from '../src/config.js'
import type { Handler, Message } from '../src/message.js'
import { deleteKeysUnder } from '../src/store/redis/delete-keys.js'
import { cpuMeter, connectBenchRedis } from './dup-stream.js'
import { seededRandom } from './fresh-keys.js'
import { JsonTraffic } from './json-traffic.js'
import { powertools, IN_FLIGHT_CALLS as POWERTOOLS_IN_FLIGHT } from './redis.bench.js'
import { formatNumber, median, progress, settleHeap, shortRate, withRatios, type BenchTable, type Check, type Row, type SuiteOptions, type SuiteResult, type Target } from './report.js'
import { warmEngine } from './warm-engine.js'

const SUITE = 'owned'
const URL_ = process.env.IDEM_BENCH_REDIS ?? 'redis://127.0.0.1:6379'
const DUP_RATE = 0.3
const CJK_SHARE = 0.1
/** Every repeat drawn uniformly from all earlier keys (dup-stream.ts). */
const RECENT_SHARE = 0
const SHARDS = 8
const PARTITIONS = 64
const BATCH = 1024
const IN_FLIGHT_BATCHES = 4
const GROUP = 'bench'
/** Shortest and longest simulated I/O of the I/O handler, in ms. */
const IO_MS = [5, 60] as const
const IO_IN_FLIGHT_BATCHES = 8
const IO_MAX_IN_FLIGHT_PER_SHARD = 8192
const WARM_START_SAMPLE = 10_000
const TARGET_VS_STRICT = 2
const TARGET_VS_POWERTOOLS = 20

type Mode = 'strict' | 'owned'
const MODES: readonly Mode[] = ['strict', 'owned']
const LABEL: Record<Mode, string> = { strict: `idem strict (${SHARDS} shards)`, owned: `idem owned (${PARTITIONS} partitions on ${SHARDS} shards)` }

/** One timed pass of one engine over one stream. */
interface EngineRun {
  rate: number
  messages: number
  unique: number
  effects: number
  lost: number
  double: number
  errors: string[]
  redeliveries: number
  /** Engine counters over the timed pass. */
  storeOperations: number
  bloomNegatives: number
  lruHits: number
  groupCommits: number
  /** Redis INFO over the timed pass. */
  redisCommands: number
  redisCpuUs: number
  nodeCpuUs: number
}

export async function runOwnedSuite(options: SuiteOptions): Promise<SuiteResult> {
  const runs = options.quick ? 2 : 3
  const prefix = `idem-bench:${randomUUID()}:`
  const admin = await connectBenchRedis(SUITE, URL_)
  const checks: Check[] = []
  const targets: Target[] = []
  const tables: BenchTable[] = []
  try {
    // 1. trivial handler: where the store calls owned mode saves show
    const messages = options.quick ? 50_000 : 500_000
    const trivial = await alternateRounds(admin, prefix, 'trivial', runs, messages, { handlerOf: trivialHandler, inFlight: IN_FLIGHT_BATCHES })
    tables.push(rateTable(`owned vs strict on Redis, ${messages.toLocaleString('en-US')} messages, ${pct(DUP_RATE)} duplicates spread through the stream, trivial handler: msgs/s`, trivial, runs, [
      `processBatch batches of ${BATCH}, ${IN_FLIGHT_BATCHES} in flight, threads 0, bloom sized for 2× the unique keys at 1%, LRU at its default (100,000 keys); a warm-up round first (not reported), then rounds alternating strict, owned`,
      'ratio: the owned median over the strict median',
    ]))
    tables.push(costTable(`owned vs strict on Redis, trivial handler: work per 1,000 messages (medians of ${runs} runs)`, trivial))
    checks.push(...effectChecks('trivial handler', trivial))
    const [strictRate, ownedRate] = MODES.map((mode) => median(trivial[mode].map((r) => r.rate)))
    targets.push({
      name: 'owned vs strict msgs/s, Redis store, 30% spread duplicates, trivial handler',
      goal: `>= ${TARGET_VS_STRICT}x`,
      measured: `${(ownedRate / strictRate).toFixed(2)}x (${shortRate(ownedRate)} vs ${shortRate(strictRate)} msgs/s; runs ${trivial.owned.map((r) => shortRate(r.rate)).join(' / ')} vs ${trivial.strict.map((r) => shortRate(r.rate)).join(' / ')})`,
      met: ownedRate / strictRate >= TARGET_VS_STRICT,
    })

    // 2. a handler that awaits I/O: the waits bound both modes
    const ioMessages = options.quick ? 20_000 : 100_000
    const io = await alternateRounds(admin, prefix, 'io', runs, ioMessages, { handlerOf: ioHandler, inFlight: IO_IN_FLIGHT_BATCHES, maxInFlightPerShard: IO_MAX_IN_FLIGHT_PER_SHARD })
    const meanIoMs = (IO_MS[0] + IO_MS[1]) / 2
    tables.push(rateTable(`owned vs strict on Redis, ${ioMessages.toLocaleString('en-US')} messages, ${pct(DUP_RATE)} spread duplicates, handler awaiting I/O (${IO_MS[0]}–${IO_MS[1]} ms): msgs/s`, io, runs, [
      `processBatch batches of ${BATCH}, ${IO_IN_FLIGHT_BATCHES} in flight, maxInFlightPerShard ${IO_MAX_IN_FLIGHT_PER_SHARD}; a batch resolves when its slowest handler (~${IO_MS[1]} ms) has, so at most ~${shortRate((IO_IN_FLIGHT_BATCHES * BATCH) / (IO_MS[1] / 1000))} msgs/s can go through (${shortRate((IO_IN_FLIGHT_BATCHES * BATCH) / (meanIoMs / 1000))} with every handler at the mean ${meanIoMs} ms)`,
      'ratio: the owned median over the strict median; the waits, not the store calls, set the pace here',
    ]))
    checks.push(...effectChecks('I/O handler', io))

    // 3. against Powertools idempotency
    const peerMessages = options.quick ? 20_000 : 100_000
    const peer = { powertools: [] as number[], strict: [] as number[], owned: [] as number[] }
    const peerSingle = { strict: [] as number[], owned: [] as number[] }
    const peerProblems: string[] = []
    for (let run = 0; run < runs; run++) {
      const seed = 3000 + run
      const stream = trafficOf(seed, peerMessages)
      progress(SUITE, `peer run ${run + 1}/${runs}: powertools makeIdempotent, ${peerMessages.toLocaleString('en-US')} messages, ${POWERTOOLS_IN_FLIGHT} in flight`)
      const pt = await powertools({ keys: stream.keys, unique: stream.unique }, `${prefix}pt${run}:`)
      if (pt.effects !== stream.unique) peerProblems.push(`run ${run + 1}: ${pt.effects < 0 ? `some key ran twice (${-pt.effects} runs)` : `${pt.effects} effects`} for ${stream.unique} unique keys`)
      peer.powertools.push(pt.rate)
      progress(SUITE, `  ${shortRate(pt.rate)} msgs/s`)
      await deleteKeysUnder(admin, prefix)
      for (const mode of MODES) {
        progress(SUITE, `peer run ${run + 1}/${runs}: idem ${mode}, processBatch`)
        const result = await engineRun(admin, mode, `${prefix}pe${run}${mode[0]}:`, trafficOf(seed, peerMessages), { handlerOf: trivialHandler, inFlight: IN_FLIGHT_BATCHES }, `bench-peer-${run}`)
        peer[mode].push(result.rate)
        checks.push(effectCheck(`vs Powertools, idem ${mode} run ${run + 1}`, result))
        await deleteKeysUnder(admin, prefix)
        // Powertools' own shape: one call per message, as many in flight.
        progress(SUITE, `peer run ${run + 1}/${runs}: idem ${mode}, process(), ${POWERTOOLS_IN_FLIGHT} in flight`)
        const single = await engineRun(admin, mode, `${prefix}pp${run}${mode[0]}:`, trafficOf(seed, peerMessages), { handlerOf: trivialHandler, inFlight: POWERTOOLS_IN_FLIGHT, batch: 1 }, `bench-peer-single-${run}`)
        peerSingle[mode].push(single.rate)
        checks.push(effectCheck(`vs Powertools, idem ${mode} process() run ${run + 1}`, single))
        await deleteKeysUnder(admin, prefix)
      }
    }
    checks.push({
      name: 'vs Powertools, powertools: one effect per unique key in every run',
      ok: peerProblems.length === 0,
      detail: peerProblems.length === 0 ? `${runs} runs of ${peerMessages.toLocaleString('en-US')} messages` : peerProblems.join(' | '),
    })
    const ptRate = median(peer.powertools)
    const [peerStrict, peerOwned] = [median(peer.strict), median(peer.owned)]
    tables.push(
      withRatios({
        title: `owned and strict vs Powertools idempotency on the same Redis, ${peerMessages.toLocaleString('en-US')} messages, ${pct(DUP_RATE)} spread duplicates: msgs/s`,
        baseline: 'powertools makeIdempotent (CachePersistenceLayer)',
        ratioOf: 'rate',
        columns: [
          { key: 'runs', title: `msgs/s of ${runs} runs` },
          { key: 'rate', title: 'msgs/s (median)' },
        ],
        rows: [
          { label: 'powertools makeIdempotent (CachePersistenceLayer)', values: { runs: peer.powertools.map(shortRate).join(' / '), rate: ptRate } },
          { label: `${LABEL.strict}, processBatch`, values: { runs: peer.strict.map(shortRate).join(' / '), rate: peerStrict } },
          { label: `${LABEL.owned}, processBatch`, values: { runs: peer.owned.map(shortRate).join(' / '), rate: peerOwned } },
          { label: `${LABEL.strict}, process(), ${POWERTOOLS_IN_FLIGHT} in flight`, values: { runs: peerSingle.strict.map(shortRate).join(' / '), rate: median(peerSingle.strict) } },
          { label: `${LABEL.owned}, process(), ${POWERTOOLS_IN_FLIGHT} in flight`, values: { runs: peerSingle.owned.map(shortRate).join(' / '), rate: median(peerSingle.owned) } },
        ],
        notes: [
          `powertools: ${POWERTOOLS_IN_FLIGHT} calls in flight on @redis/client (redis.bench.ts's runner); idem: batches of ${BATCH}, ${IN_FLIGHT_BATCHES} in flight, threads 0; each run: powertools, strict, owned on the same key texts`,
        ],
      }),
    )
    targets.push({
      name: 'owned vs Powertools idempotency, same Redis and spread stream',
      goal: `>= ${TARGET_VS_POWERTOOLS}x`,
      measured: `${(peerOwned / ptRate).toFixed(1)}x with processBatch (${shortRate(peerOwned)} vs ${shortRate(ptRate)} msgs/s), ${(median(peerSingle.owned) / ptRate).toFixed(1)}x with process(); strict ${(peerStrict / ptRate).toFixed(1)}x and ${(median(peerSingle.strict) / ptRate).toFixed(1)}x`,
      met: Math.max(peerOwned, median(peerSingle.owned)) / ptRate >= TARGET_VS_POWERTOOLS,
    })

    // 4. warm start
    const settled = options.quick ? 100_000 : 1_000_000
    const warm = await warmStart(admin, `${prefix}ws:`, settled, runs, checks)
    tables.push(warm)
  } finally {
    await deleteKeysUnder(admin, prefix)
    admin.disconnect()
  }
  return { suite: SUITE, tables, checks, targets }
}

interface Feeding {
  /** The handler of one run, counting effects in `seen`. */
  handlerOf: (seen: Map<string, number>, seed: number) => Handler
  inFlight: number
  maxInFlightPerShard?: number
  /** Messages per call: BATCH (processBatch, a consumer's prefetch) or 1 (process(), one call per message as an HTTP handler or a Lambda makes). @default BATCH */
  batch?: number
}

const trivialHandler = (seen: Map<string, number>): Handler => async (m) => void seen.set(m.key, (seen.get(m.key) ?? 0) + 1)

/** Awaits a seeded 5–60 ms, then counts the effect: a call to a database or an API. */
function ioHandler(seen: Map<string, number>, seed: number): Handler {
  const random = seededRandom(seed)
  return async (m) => {
    await new Promise((resolve) => setTimeout(resolve, IO_MS[0] + (random() % (IO_MS[1] - IO_MS[0] + 1))))
    seen.set(m.key, (seen.get(m.key) ?? 0) + 1)
  }
}

/** The stream of one round: the same key texts for every contender of that round, parsed anew for each. */
function trafficOf(seed: number, messages: number): { keys: string[]; unique: number } {
  const { keys, repeats } = new JsonTraffic({ cjkShare: CJK_SHARE, dupRate: DUP_RATE, seed, recentShare: RECENT_SHARE }).next(messages)
  return { keys, unique: messages - repeats }
}

/** A warm-up round of both modes (not reported), then `runs` rounds of strict then owned on the same key texts. */
async function alternateRounds(admin: Redis, prefix: string, name: string, runs: number, messages: number, feeding: Feeding): Promise<Record<Mode, EngineRun[]>> {
  const results: Record<Mode, EngineRun[]> = { strict: [], owned: [] }
  const warmupMessages = Math.min(messages, 20_000)
  for (const mode of MODES) {
    progress(SUITE, `${name}: warm-up, ${mode}, ${warmupMessages.toLocaleString('en-US')} messages`)
    await engineRun(admin, mode, `${prefix}${name}w${mode[0]}:`, trafficOf(999, warmupMessages), feeding, `bench-${name}-warmup`)
    await deleteKeysUnder(admin, prefix)
  }
  for (let run = 0; run < runs; run++) {
    for (const mode of MODES) {
      progress(SUITE, `${name} run ${run + 1}/${runs}: ${mode}, ${messages.toLocaleString('en-US')} messages`)
      const result = await engineRun(admin, mode, `${prefix}${name}${run}${mode[0]}:`, trafficOf(1000 + run, messages), feeding, `bench-${name}-${run}`)
      results[mode].push(result)
      progress(
        SUITE,
        `  ${shortRate(result.rate)} msgs/s, ${result.effects.toLocaleString('en-US')} effects for ${result.unique.toLocaleString('en-US')} unique keys, store ops/1k ${perK(result.storeOperations, result.messages).toFixed(1)}, node CPU ${result.nodeCpuUs.toFixed(1)} µs/msg, redis CPU ${result.redisCpuUs.toFixed(1)} µs/msg`,
      )
      await deleteKeysUnder(admin, prefix)
    }
  }
  return results
}

function engineOptions(mode: Mode, prefix: string, unique: number, memberId: string, maxInFlightPerShard?: number): EngineOptions {
  const common: EngineOptions = {
    shards: SHARDS,
    threads: 0,
    store: { kind: 'redis', url: URL_, prefix },
    bloom: { expectedItems: Math.max(1, unique * 2) },
    ...(maxInFlightPerShard === undefined ? {} : { maxInFlightPerShard }),
  }
  return mode === 'strict' ? common : { ...common, mode: 'owned', partitions: PARTITIONS, group: GROUP, ownership: { memberId } }
}

/** One engine, warmed up on other keys, fed the stream; the counters and CPU meters cover the stream only. */
async function engineRun(admin: Redis, mode: Mode, prefix: string, stream: { keys: string[]; unique: number }, feeding: Feeding, memberId: string): Promise<EngineRun> {
  const engine = await createEngine(engineOptions(mode, prefix, stream.unique, memberId, feeding.maxInFlightPerShard))
  try {
    if (mode === 'owned' && engine.ownedPartitions().length !== PARTITIONS) throw new Error(`the owned engine holds ${engine.ownedPartitions().length} of ${PARTITIONS} partitions; it should be alone in its group`)
    await warmEngine(engine)
    const seen = new Map<string, number>()
    const handler = feeding.handlerOf(seen, stream.keys.length)
    const messages: Message[] = stream.keys.map((key) => ({ key }))
    settleHeap()
    const before = engine.stats().totals
    const commandsBefore = await commandsOf(admin)
    const cpu = await cpuMeter(admin)
    const started = performance.now()
    const { errors, redeliveries } = await consume(engine, messages, handler, feeding.inFlight, feeding.batch ?? BATCH)
    const seconds = (performance.now() - started) / 1000
    const perItem = await cpu(messages.length)
    const redisCommands = (await commandsOf(admin)) - commandsBefore
    const after = engine.stats().totals
    let runs = 0
    for (const n of seen.values()) runs += n
    return {
      rate: messages.length / seconds,
      messages: messages.length,
      unique: stream.unique,
      effects: runs,
      lost: stream.unique - seen.size,
      double: runs - seen.size,
      errors,
      redeliveries,
      storeOperations: after.storeOperations - before.storeOperations,
      bloomNegatives: after.bloomNegatives - before.bloomNegatives,
      lruHits: after.lruHits - before.lruHits,
      groupCommits: after.groupCommits - before.groupCommits,
      redisCommands,
      redisCpuUs: perItem.redis,
      nodeCpuUs: perItem.node,
    }
  } finally {
    await engine.close()
  }
}

/**
 * Feeds the messages in batches of BATCH with `inFlight` processBatch calls
 * outstanding, as a consumer with that prefetch would; in-flight verdicts go
 * round again after the stream, as a queue redelivers them.
 */
async function consume(engine: Engine, messages: Message[], handler: Handler, inFlight: number, batchSize = BATCH): Promise<{ errors: string[]; redeliveries: number }> {
  const errors: string[] = []
  let redeliveries = 0
  let queue = messages
  while (queue.length > 0) {
    const again: Message[] = []
    let next = 0
    const lane = async (): Promise<void> => {
      while (next < queue.length) {
        const batch = queue.slice(next, next + batchSize)
        next += batch.length
        const outcomes = await engine.processBatch(batch, handler)
        for (let i = 0; i < outcomes.length; i++) {
          const outcome = outcomes[i]
          if (outcome.verdict === 'in-flight') again.push(batch[i])
          else if (outcome.verdict !== 'duplicate' && (outcome.verdict !== 'new' || outcome.error !== undefined)) {
            errors.push(`${JSON.stringify(outcome.key)}: ${outcome.verdict} ${outcome.error?.code ?? ''} ${outcome.error?.message ?? ''}`)
          }
        }
      }
    }
    await Promise.all(Array.from({ length: inFlight }, lane))
    redeliveries += again.length
    if (again.length === queue.length) {
      // Nothing settled in a whole pass: the engine is refusing, not busy; say why rather than spin.
      throw new Error(`every one of ${again.length} messages came back in-flight (first: ${JSON.stringify(again[0].key)})`)
    }
    queue = again
  }
  return { errors, redeliveries }
}

/** Commands the server has processed since its start (commands run inside scripts included). */
async function commandsOf(admin: Redis): Promise<number> {
  const value = /^total_commands_processed:(\d+)/m.exec(await admin.info('stats'))?.[1]
  if (value === undefined) throw new Error('INFO stats of the Redis server has no total_commands_processed field')
  return Number(value)
}

function rateTable(title: string, results: Record<Mode, EngineRun[]>, runs: number, notes: string[]): BenchTable {
  return withRatios({
    title,
    baseline: LABEL.strict,
    ratioOf: 'rate',
    columns: [
      { key: 'unique', title: 'unique keys' },
      { key: 'runs', title: `msgs/s of ${runs} runs` },
      { key: 'rate', title: 'msgs/s (median)' },
    ],
    rows: MODES.map(
      (mode): Row => ({
        label: LABEL[mode],
        values: { unique: results[mode][0].unique, runs: results[mode].map((r) => shortRate(r.rate)).join(' / '), rate: median(results[mode].map((r) => r.rate)) },
        raw: { runs: results[mode] },
      }),
    ),
    notes,
  })
}

function costTable(title: string, results: Record<Mode, EngineRun[]>): BenchTable {
  const med = (mode: Mode, of: (r: EngineRun) => number) => median(results[mode].map(of))
  const oneDecimal = (value: number | string) => (typeof value === 'number' && Math.abs(value) < 100 ? value.toFixed(1) : formatNumber(value))
  return {
    title,
    columns: [
      { key: 'bloomNegatives', title: 'bloom negatives', format: oneDecimal },
      { key: 'lruHits', title: 'LRU hits', format: oneDecimal },
      { key: 'storeOperations', title: 'store ops', format: oneDecimal },
      { key: 'groupCommits', title: 'group commits', format: oneDecimal },
      { key: 'redisCommands', title: 'Redis commands', format: oneDecimal },
      { key: 'redisCpu', title: 'Redis CPU µs' },
      { key: 'nodeCpu', title: 'Node CPU µs' },
    ],
    rows: MODES.map((mode) => ({
      label: LABEL[mode],
      values: {
        bloomNegatives: med(mode, (r) => perK(r.bloomNegatives, r.messages)),
        lruHits: med(mode, (r) => perK(r.lruHits, r.messages)),
        storeOperations: med(mode, (r) => perK(r.storeOperations, r.messages)),
        groupCommits: med(mode, (r) => perK(r.groupCommits, r.messages)),
        redisCommands: med(mode, (r) => perK(r.redisCommands, r.messages)),
        redisCpu: med(mode, (r) => 1000 * r.redisCpuUs),
        nodeCpu: med(mode, (r) => 1000 * r.nodeCpuUs),
      },
    })),
    notes: [
      'every figure per 1,000 messages of the timed stream; store ops: the engine\'s (strict: claims and commits, one per shard batch and step; owned: record reads of maybe-seen keys the LRU missed, and group commits)',
      'bloom negatives: in owned mode each one ran its handler with no store call before it (a store call saved); in strict mode they are counted but every key the LRU misses is claimed all the same',
      'Redis commands: INFO stats total_commands_processed, which counts the commands run inside scripts (a group commit\'s SETs and XADD) as well as the script call; Redis and Node CPU: user + system time of the server (INFO cpu) and of this process',
      'why the Redis work comes out alike: a strict claim is one SET NX per key, and a strict commit of keys with no result to keep is one SET of the batch\'s lease record (commit.lua \'all\'); an owned group commit writes a SET per key plus an XADD per partition. Owned mode saves round trips, which batches of 1024 already make few',
      'the Redis figures are the whole server\'s: another client of a shared server counts too',
    ],
  }
}

function effectChecks(table: string, results: Record<Mode, EngineRun[]>): Check[] {
  return MODES.map((mode) => {
    const problems = results[mode].flatMap((r, run) => (r.lost === 0 && r.double === 0 && r.errors.length === 0 ? [] : [`run ${run + 1}: ${r.lost} lost, ${r.double} double, ${r.errors.length} errors${r.errors.length > 0 ? ` (${r.errors.slice(0, 2).join('; ')})` : ''}`]))
    const runs = results[mode]
    return {
      name: `${table}, idem ${mode}: one effect per unique key in every run (lost 0, double 0)`,
      ok: problems.length === 0,
      detail: problems.length === 0 ? `${runs.length} runs of ${runs[0].messages.toLocaleString('en-US')} messages, ${runs.map((r) => r.effects.toLocaleString('en-US')).join(' / ')} effects for as many unique keys` : problems.join(' | '),
    }
  })
}

function effectCheck(name: string, r: EngineRun): Check {
  const ok = r.lost === 0 && r.double === 0 && r.errors.length === 0
  return { name: `${name}: one effect per unique key (lost 0, double 0)`, ok, detail: `${r.effects} effects for ${r.unique} unique keys, ${r.lost} lost, ${r.double} double, ${r.errors.length} errors` }
}

/**
 * Settles `count` distinct keys in one partition, closes (a snapshot at
 * close), then restores it `runs` times from the snapshot and `runs` times
 * from the whole log (the snapshot hash deleted before each), each time in a
 * new engine with a new member id, and sends a sample of the settled keys
 * again after each restore.
 */
async function warmStart(admin: Redis, prefix: string, count: number, runs: number, checks: Check[]): Promise<BenchTable> {
  const options = (memberId: string): EngineOptions => ({
    mode: 'owned',
    partitions: 1,
    shards: 1,
    threads: 0,
    group: GROUP,
    store: { kind: 'redis', url: URL_, prefix },
    bloom: { expectedItems: count },
    ownership: { memberId },
  })
  const snapshotKey = `${prefix}own:${GROUP}:snap:0`
  const logKey = `${prefix}own:${GROUP}:log:0`
  const { keys } = new JsonTraffic({ cjkShare: CJK_SHARE, dupRate: 0, seed: 4242 }).next(count)
  // Copies of the sample's texts as new strings, as a redelivery off the wire would be.
  const step = Math.max(1, Math.floor(count / WARM_START_SAMPLE))
  const sampleTexts = keys.filter((_, i) => i % step === 0).slice(0, WARM_START_SAMPLE)

  progress(SUITE, `warm start: settling ${count.toLocaleString('en-US')} distinct keys in one owned partition`)
  const first = await createEngine(options('bench-warm-first'))
  const seen = new Map<string, number>()
  const settleStarted = performance.now()
  let settleRate: number
  try {
    const { errors } = await consume(first, keys.map((key) => ({ key })), trivialHandler(seen), IN_FLIGHT_BATCHES)
    settleRate = count / ((performance.now() - settleStarted) / 1000)
    let effects = 0
    for (const n of seen.values()) effects += n
    checks.push({ name: 'warm start: settling, one effect per key', ok: effects === count && seen.size === count && errors.length === 0, detail: `${effects} effects for ${count} keys, ${errors.length} errors` })
  } finally {
    await first.close()
  }
  const snapshotBytes = await admin.hstrlen(snapshotKey, 'bytes')
  const logEntries = await admin.xlen(logKey)
  progress(SUITE, `  settled at ${shortRate(settleRate)} msgs/s; snapshot ${snapshotBytes.toLocaleString('en-US')} bytes, log ${logEntries.toLocaleString('en-US')} entries`)

  interface Restore {
    restoreMs: number
    startMs: number
    replayedKeys: number
    duplicates: number
    effects: number
  }
  const restoreOnce = async (memberId: string): Promise<Restore> => {
    const started = performance.now()
    const engine = await createEngine(options(memberId))
    const startMs = performance.now() - started
    try {
      const ownership = engine.stats().ownership!
      const sample: Message[] = sampleTexts.map((text) => ({ key: Buffer.from(text, 'utf8').toString('utf8') }))
      let effects = 0
      let duplicates = 0
      for (let i = 0; i < sample.length; i += BATCH) {
        const outcomes = await engine.processBatch(sample.slice(i, i + BATCH), () => void effects++)
        for (const outcome of outcomes) if (outcome.verdict === 'duplicate') duplicates++
      }
      return { restoreMs: ownership.lastRestoreMs, startMs, replayedKeys: ownership.replayedKeys, duplicates, effects }
    } finally {
      await engine.close()
    }
  }

  const fromSnapshot: Restore[] = []
  const fromLog: Restore[] = []
  for (let run = 0; run < runs; run++) {
    // Each member closes with a snapshot of its own: the next one restores from that.
    const s = await restoreOnce(`bench-warm-snap-${run}`)
    fromSnapshot.push(s)
    progress(SUITE, `  restore from the snapshot ${run + 1}/${runs}: ${s.restoreMs.toFixed(1)} ms (createEngine ${s.startMs.toFixed(1)} ms), ${s.replayedKeys} keys replayed from the log tail, ${s.duplicates} duplicates of ${sampleTexts.length} resent`)
  }
  for (let run = 0; run < runs; run++) {
    await admin.unlink(snapshotKey)
    const l = await restoreOnce(`bench-warm-log-${run}`)
    fromLog.push(l)
    progress(SUITE, `  restore from the whole log ${run + 1}/${runs}: ${l.restoreMs.toFixed(1)} ms (createEngine ${l.startMs.toFixed(1)} ms), ${l.replayedKeys.toLocaleString('en-US')} keys replayed, ${l.duplicates} duplicates of ${sampleTexts.length} resent`)
  }
  for (const [what, restores] of [
    ['snapshot', fromSnapshot],
    ['whole log', fromLog],
  ] as const) {
    const wrong = restores.filter((r) => r.duplicates !== sampleTexts.length || r.effects !== 0)
    checks.push({
      name: `warm start from the ${what}: ${sampleTexts.length.toLocaleString('en-US')} settled keys resent come back duplicates, no handler run`,
      ok: wrong.length === 0,
      detail: restores.map((r) => `${r.duplicates} duplicates, ${r.effects} effects`).join(' / '),
    })
  }
  const replayedAll = fromLog.every((r) => r.replayedKeys === count)
  checks.push({ name: 'warm start from the whole log: every settled key replayed', ok: replayedAll, detail: fromLog.map((r) => `${r.replayedKeys} of ${count}`).join(' / ') })

  const row = (label: string, restores: Restore[]): Row => ({
    label,
    values: {
      runs: restores.map((r) => r.restoreMs.toFixed(1)).join(' / '),
      restoreMs: median(restores.map((r) => r.restoreMs)),
      startMs: median(restores.map((r) => r.startMs)),
      replayed: median(restores.map((r) => r.replayedKeys)),
      resent: restores.map((r) => `${r.duplicates}/${sampleTexts.length}`).join(' '),
    },
    raw: { restores },
  })
  const ms = (value: number | string) => (typeof value === 'number' ? value.toFixed(1) : value)
  return {
    title: `owned warm start: one partition holding ${count.toLocaleString('en-US')} settled keys, a new member takes it over`,
    columns: [
      { key: 'runs', title: `restore ms of ${runs} runs` },
      { key: 'restoreMs', title: 'restore ms (median)', format: ms },
      { key: 'startMs', title: 'createEngine ms (median)', format: ms },
      { key: 'replayed', title: 'keys replayed from the log' },
      { key: 'resent', title: 'sample resent: duplicates' },
    ],
    rows: [row('from the snapshot (+ the log after it)', fromSnapshot), row('snapshot deleted: the whole log', fromLog)],
    notes: [
      `settled first by one member (partitions 1, shards 1, bloom for ${count.toLocaleString('en-US')} keys at 1%) at ${shortRate(settleRate)} msgs/s, batches of ${BATCH}, ${IN_FLIGHT_BATCHES} in flight; it closed with a snapshot of ${snapshotBytes.toLocaleString('en-US')} bytes, the log held ${logEntries.toLocaleString('en-US')} entries (one per group commit)`,
      'restore ms: stats().ownership.lastRestoreMs of the new member (read the snapshot, replay the log after it); createEngine ms also counts connecting, the partition count check, the heartbeat and the acquire',
      'every new member closes with a snapshot of its own, which the next restore from the snapshot reads; the log after a snapshot taken at close is empty, so nothing is replayed there',
      `after each restore ${sampleTexts.length.toLocaleString('en-US')} of the settled keys (new strings) are sent again: each must be a duplicate, with no handler run`,
    ],
  }
}

function perK(count: number, messages: number): number {
  return (1000 * count) / messages
}

function pct(rate: number): string {
  return `${Math.round(rate * 100)}%`
}
