/**
 * Versions suite: version-aware keys (README "Versions and state machines")
 * against strict claims on the same Redis and the same status stream. Uses
 * the Redis at IDEM_BENCH_REDIS (default redis://127.0.0.1:6379) under a
 * fresh key prefix, deleted afterwards.
 *
 * The stream is `idem demo --versions`'s (cli/demo-versions.ts): parcels
 * with statuses 1..5, delivered out of order, 30% repeated up to 2,000
 * messages later, keys read by JSON.parse from each message's text (fresh
 * strings), mixed lengths, one in eight in CJK. The contenders:
 *   - strict: the dedup a user writes without versions, key = parcel + '#' +
 *     version, so each status runs once (an older one after a newer one
 *     still runs: strict keys cannot tell);
 *   - versions: key = parcel, versionOf = the status number (an older one is
 *     skipped as stale).
 * Both on the Redis store, threads 0, processBatch in batches of 1024 with 4
 * in flight; a trivial async handler, then one awaiting I/O (setTimeout
 * 5–60 ms, a seeded draw per message). Rounds alternate (strict, versions,
 * strict…) after a warm-up round; medians of 3 runs (2 with --quick). Checks:
 * strict runs each (parcel, status) once; versions leave every parcel at its
 * newest status, never run one backwards, never run a version twice.
 */
import { randomUUID } from 'node:crypto'
import { createEngine, type Engine } from '../src/engine.js'
import type { Message } from '../src/message.js'
import { deleteKeysUnder } from '../src/store/redis/delete-keys.js'
import { statusStream, type StatusPayload } from '../src/cli/demo-versions.js'
import { connectBenchRedis } from './dup-stream.js'
import { median, progress, withRatios, type BenchTable, type Check, type SuiteOptions, type SuiteResult, type Target } from './report.js'

const SUITE = 'versions'
const URL_ = process.env.IDEM_BENCH_REDIS ?? 'redis://127.0.0.1:6379'
const BATCH = 1024
const IN_FLIGHT = 4

type Contender = 'strict' | 'versions'

interface RunResult {
  rate: number
  runs: number
  storeOperations: number
  ok: boolean
  detail: string
}

export async function runVersionsSuite(options: SuiteOptions): Promise<SuiteResult> {
  const prefix = `idem-bench:${randomUUID()}:`
  const admin = await connectBenchRedis(SUITE, URL_)
  const checks: Check[] = []
  const targets: Target[] = []
  const tables: BenchTable[] = []
  const runs = options.quick ? 2 : 3
  try {
    for (const io of [false, true]) {
      const messages = io ? (options.quick ? 10_000 : 40_000) : options.quick ? 50_000 : 300_000
      const results: Record<Contender, RunResult[]> = { strict: [], versions: [] }
      for (let run = 0; run <= runs; run++) {
        for (const contender of ['strict', 'versions'] as const) {
          progress(SUITE, `${io ? 'I/O handler' : 'trivial handler'} ${run === 0 ? 'warm-up' : `run ${run}/${runs}`}: ${contender}, ${messages.toLocaleString('en-US')} messages`)
          const result = await runContender(contender, io, messages, run, `${prefix}${contender}${run}${io ? 'io' : ''}:`)
          await deleteKeysUnder(admin, prefix)
          if (run === 0) continue
          results[contender].push(result)
          checks.push({ name: `${contender}${io ? ' (I/O)' : ''} run ${run}`, ok: result.ok, detail: result.detail })
        }
      }
      const rate = (c: Contender) => median(results[c].map((r) => r.rate))
      const perK = (c: Contender, f: (r: RunResult) => number) => median(results[c].map((r) => (1000 * f(r)) / messages))
      tables.push(
        withRatios({
          title: `version-aware keys vs strict claims, Redis store, ${messages.toLocaleString('en-US')} status messages, ${io ? 'handler awaiting 5–60 ms' : 'trivial handler'}: msgs/s`,
          baseline: 'strict: key = parcel#version',
          ratioOf: 'rate',
          columns: [
            { key: 'runs', title: `msgs/s of ${runs} runs` },
            { key: 'rate', title: 'msgs/s (median)' },
            { key: 'handler', title: 'handler runs / 1,000' },
            { key: 'ops', title: 'store ops / 1,000' },
          ],
          rows: (['strict', 'versions'] as const).map((c) => ({
            label: c === 'strict' ? 'strict: key = parcel#version' : 'versions: key = parcel, versionOf = status number',
            values: { runs: results[c].map((r) => Math.round(r.rate).toLocaleString('en-US')).join(' / '), rate: rate(c), handler: perK(c, (r) => r.runs), ops: perK(c, (r) => r.storeOperations) },
          })),
          notes: [
            'threads 0, processBatch batches of 1024 with 4 in flight; strict answers repeats from its LRU, versions older and equal versions from their LRU of applied versions; every other message is a claim in Redis',
            'strict runs every status once, also an older one after a newer one; versions skip those as stale, so they run the handler less',
            "versions run one key's statuses one after another (the newer waits for the older's commit), strict runs them at once: with slow handlers a batch waits for its parcels' chains",
          ],
        }),
      )
      const ratio = rate('versions') / rate('strict')
      if (!io) targets.push({ name: 'version-aware claims on Redis vs strict claims, same stream', goal: '>= 0.8x', measured: `${ratio.toFixed(2)}x (${Math.round(rate('versions')).toLocaleString('en-US')} vs ${Math.round(rate('strict')).toLocaleString('en-US')} msgs/s)`, met: ratio >= 0.8 })
    }
  } finally {
    await deleteKeysUnder(admin, prefix)
    admin.disconnect()
  }
  return { suite: SUITE, tables, checks, targets }
}

async function runContender(contender: Contender, io: boolean, messages: number, seed: number, prefix: string): Promise<RunResult> {
  const stream = statusStream({ messages, dupRate: 0.3, seed: seed + 1 })
  const engine = await createEngine({
    shards: 8,
    store: { kind: 'redis', url: URL_, prefix },
    ...(contender === 'versions' ? { versions: { versionOf: (m: Message<StatusPayload>) => m.payload!.version } } : { maxInFlightPerShard: 8192 }),
  })
  const ranStrict = new Set<string>()
  let doubles = 0
  let wentBack = 0
  const applied = new Map<string, number>()
  let handlerRuns = 0
  let drawState = seed * 7919 + 1
  const delay = () => 5 + (((drawState = Math.imul(drawState ^ (drawState >>> 13), 0x5bd1e995) >>> 0) % 56))
  const handler = async (message: Message<StatusPayload>): Promise<void> => {
    handlerRuns++
    if (contender === 'strict') {
      if (ranStrict.has(message.key)) doubles++
      ranStrict.add(message.key)
    } else {
      const last = applied.get(message.key) ?? 0
      if (message.payload!.version < last) wentBack++
      else if (message.payload!.version === last) doubles++
      applied.set(message.key, Math.max(last, message.payload!.version))
    }
    if (io) await new Promise((resolve) => setTimeout(resolve, delay()))
  }
  const parse = (text: string): Message<StatusPayload> => {
    const message = JSON.parse(text) as Message<StatusPayload>
    if (contender === 'strict') message.key = `${message.key}#${message.payload!.version}`
    return message
  }
  const pending = stream.texts.slice()
  let next = 0
  const started = performance.now()
  await drain(engine, pending, () => next, (n) => (next = n), parse, handler)
  const seconds = (performance.now() - started) / 1000
  const { storeOperations } = engine.stats().totals
  await engine.close()
  let ok: boolean
  let detail: string
  if (contender === 'strict') {
    const expected = new Set(stream.texts.map((text) => parse(text).key)).size
    ok = doubles === 0 && ranStrict.size === expected
    detail = `${ranStrict.size} of ${expected} (parcel, status) pairs ran, ${doubles} twice`
  } else {
    let atNewest = 0
    for (const [key, newest] of stream.newest) if (applied.get(key) === newest) atNewest++
    ok = doubles === 0 && wentBack === 0 && atNewest === stream.parcels
    detail = `${atNewest} of ${stream.parcels} parcels at their newest status, ${wentBack} went back, ${doubles} versions twice`
  }
  return { rate: stream.texts.length / seconds, runs: handlerRuns, storeOperations, ok, detail }
}

/** Feeds the texts in batches, IN_FLIGHT at once; in-flight verdicts are delivered again at the end, as a queue would. */
async function drain(engine: Engine, pending: string[], at: () => number, advance: (n: number) => void, parse: (text: string) => Message<StatusPayload>, handler: (m: Message<StatusPayload>) => Promise<void>): Promise<void> {
  await Promise.all(
    Array.from({ length: IN_FLIGHT }, async () => {
      while (at() < pending.length) {
        const from = at()
        const texts = pending.slice(from, from + BATCH)
        advance(from + texts.length)
        const outcomes = await engine.processBatch(texts.map(parse), handler)
        for (let i = 0; i < outcomes.length; i++) if (outcomes[i].verdict === 'in-flight' || outcomes[i].error !== undefined) pending.push(texts[i])
      }
    }),
  )
}
