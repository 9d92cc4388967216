/**
 * Streams suite: the Redis Streams transport (createStreamConsumer: XREADGROUP,
 * the engine on the redis store, XACK) against a raw consumer of the same
 * stream that does no dedup at all (XREADGROUP, the handler, XACK): what
 * idempotency costs a Redis Streams consumer. Uses the Redis at
 * IDEM_BENCH_REDIS (default redis://127.0.0.1:6379) under a fresh key prefix,
 * deleted afterwards.
 *
 * Each row is a pair run on the same stream with the same handler, the same
 * COUNT per read and the same batches in flight (the next read sent while
 * earlier batches are handled and acked; a batch holds its place until its
 * last handler has returned and it is acked, on both sides), and prints
 * idem/raw. Rows: the transport's defaults, and the same COUNT with half the
 * batches in flight (half the entries held per consumer, which a user wanting
 * a smaller SIGKILL bound would pick). IDEM_BENCH_STREAMS_GRID replaces them
 * with a sweep, e.g. "64x1,64x2,256x4,1024x8" (COUNT x batches in flight):
 * how the defaults were chosen. The trivial table also has the
 * engine alone (processBatch at the defaults' COUNT and in-flight, no
 * stream): the dedup cost without reads and acks, to show where the time goes.
 *
 * Two handlers, each on its own stream:
 *   - trivial: parses the entry's JSON body and counts the effect; the
 *     consumer's own cost is all there is to see. 200,000 entries.
 *   - I/O: the same, then awaits 5–60 ms (setTimeout), as a call to a
 *     database or an API does; the delay of entry n is the same seeded draw
 *     on both sides. Bound by waits rather than CPU, so 50,000 entries are
 *     enough (a run at COUNT 64, 1 in flight still takes a minute).
 * --quick takes a fifth of each.
 *
 * Workload: entries `body <JSON>`, `{"key":…,"n":…}`, with the keys of
 * json-traffic.ts: mixed shapes and lengths (UUIDs, short ids, long paths),
 * some CJK, and 30% duplicates spread through the stream (half a resend of one
 * of the last 100 keys, which the LRU answers; half a late copy of an old
 * key, which the store confirms). Both sides get the key by JSON.parse of the
 * body read off the wire, so every key is a fresh string no one has hashed,
 * as in production; idem parses it twice for a new key (keyOf, then the
 * handler), as its users would. Every run fills new streams, then each
 * consumer reads all of one in its own consumer group, so all see the same
 * entries from Redis. The order of the rows alternates from run to run so
 * that no row always runs on a warmer or busier Redis. msgs/s = entries / wall
 * time from the consumer's start until its last entry is acked; the ratio of
 * a row is the median of its runs' own idem/raw ratios (the two sides of a
 * run are seconds apart, and share the machine's drift).
 *
 * The handler counts effects per key: the raw consumer runs it for every entry
 * (that is what no dedup means), idem once per unique key; both are checked.
 * Redis and node share the machine's cores: what idem adds per batch (a claim
 * and a commit per shard batch, sharing script calls, and the engine's own
 * work) is CPU taken from the reads and acks too.
 *
 * Owned mode (issue 13's target, >= 0.9x raw with the trivial handler): the
 * same traffic put by createStreamProducer on 64 partition streams, read by a
 * raw consumer over all of them (one XREADGROUP, COUNT split among the
 * streams, one XACK per stream of a batch) and by idem's owned consumer, one
 * member owning every partition, at the transport's defaults; strict idem on
 * one plain stream of the same entries runs in the same rounds. Checked: one
 * effect per entry (raw) or per unique key (idem), nothing left pending.
 */
import { randomUUID } from 'node:crypto'
import { Redis } from 'ioredis'
import { createEngine } from '../src/engine.js'
import type { Message } from '../src/message.js'
import { createStreamConsumer, createStreamProducer, partitionStreamOf } from '../src/transport/redis-streams/index.js'
import { entriesOfRead, partsOfRead, type StreamEntry } from '../src/transport/redis-streams/entry.js'
import { defaults } from '../src/transport/redis-streams/options.js'
import { formatRatio, markUnclean, median, progress, shortRate, type BenchTable, type Check, type Row, type SuiteOptions, type SuiteResult, type Target } from './report.js'
import { deleteKeysUnder } from '../src/store/redis/delete-keys.js'
import { cpuMeter, type CpuPerItem, connectBenchRedis } from './dup-stream.js'
import { seededRandom } from './fresh-keys.js'
import { JsonTraffic } from './json-traffic.js'
import { warmEngine } from './warm-engine.js'
import { effectCounter, tally, type EffectCounter } from './broker-bench.js'

const SUITE = 'streams'
const URL_ = process.env.IDEM_BENCH_REDIS ?? 'redis://127.0.0.1:6379'
const RUNS = 3
const DUP_RATE = 0.3
/** A few CJK keys, as a service with some Chinese and Japanese tenants has. */
const CJK_SHARE = 0.1
const SHARDS = 8
/** Owned mode: partition streams of the owned table (one member owns them all). */
const PARTITIONS = 64
/** No entry acked for this long means a consumer is stuck, not slow. */
const STALL_MS = 30_000
/** Shortest and longest simulated I/O, in ms. */
const IO_MS = [5, 60] as const

interface Setting {
  count: number
  batchesInFlight: number
}

const DEFAULTS: Setting = { count: defaults.count, batchesInFlight: defaults.batchesInFlight }
const HALF_IN_FLIGHT: Setting = { count: DEFAULTS.count, batchesInFlight: Math.max(1, DEFAULTS.batchesInFlight >> 1) }

type HandlerKind = 'trivial' | 'io'

interface HandlerSpec {
  title: string
  entries: number
  /** idem / raw at the defaults that the issue asks for. */
  target: number
}

const HANDLERS: Record<HandlerKind, HandlerSpec> = {
  trivial: { title: 'trivial handler', entries: 200_000, target: 0.8 },
  io: { title: `handler awaiting ${IO_MS[0]}-${IO_MS[1]} ms of I/O`, entries: 50_000, target: 0.9 },
}
const KINDS = Object.keys(HANDLERS) as HandlerKind[]

type Side = 'raw' | 'idem' | 'engine'

interface Case {
  kind: HandlerKind
  setting: Setting
  side: Side
}

/** The JSON body of every entry: the idempotency key, and the entry's position (which picks its I/O delay). */
interface Body {
  key: string
  n: number
}

interface Run {
  rate: number
  cpu: CpuPerItem
  /** Handler runs. */
  effects: number
  /** Distinct keys the handler ran for. */
  keys: number
  /** Keys the handler ran for more than once. */
  doubles: number
  /** For the stream consumer: what would stretch its tail (in-flight waits and take-overs wait out their delays). */
  detail?: string
}

/** One stream of a run, filled before any consumer reads it. */
interface Load {
  stream: string
  bodies: string[]
  unique: number
  /** I/O delay of entry n, in ms; none for the trivial handler. */
  delays?: Uint8Array
}

export async function runStreamsSuite(options: SuiteOptions): Promise<SuiteResult> {
  const settings = settingsToRun()
  const admin = await connectBenchRedis(SUITE, URL_)
  const prefix = `idem-bench-streams:${randomUUID()}:`
  const entriesOf = (kind: HandlerKind): number => (options.quick ? HANDLERS[kind].entries / 5 : HANDLERS[kind].entries)
  const checks: Check[] = []
  const cases: Case[] = [
    ...KINDS.flatMap((kind) => settings.flatMap((setting) => (['raw', 'idem'] as const).map((side) => ({ kind, setting, side })))),
    { kind: 'trivial', setting: DEFAULTS, side: 'engine' },
  ]
  const runs = new Map<Case, Run[]>(cases.map((c) => [c, []]))
  try {
    for (let run = 0; run < RUNS; run++) {
      const loads = {} as Record<HandlerKind, Load>
      for (const kind of KINDS) {
        loads[kind] = makeLoad(`${prefix}${kind}${run}`, entriesOf(kind), run, kind === 'io')
        progress(SUITE, `run ${run + 1}/${RUNS}: filling the ${kind} stream with ${entriesOf(kind).toLocaleString('en-US')} entries (${loads[kind].unique.toLocaleString('en-US')} unique keys)`)
        await fill(admin, loads[kind])
      }
      const order = run % 2 === 0 ? cases : [...cases].reverse()
      for (const c of order) {
        const load = loads[c.kind]
        const total = load.bodies.length
        const group = `g${cases.indexOf(c)}`
        const label = `${c.kind}, ${c.side}, ${settingName(c.setting)}`
        progress(SUITE, `run ${run + 1}/${RUNS}: ${label}`)
        const storePrefix = `${prefix}idem${run}:${group}:`
        const counter = effectCounter(bodyOfEntry, load.delays)
        const result =
          c.side === 'raw'
            ? await rawConsumer(admin, load.stream, group, c.setting, total, counter)
            : c.side === 'idem'
              ? await idemConsumer(admin, load.stream, group, c.setting, total, storePrefix, counter)
              : await engineOnly(admin, load.bodies, c.setting, storePrefix, counter)
        runs.get(c)!.push(result)
        const cpu = `CPU per entry: node ${result.cpu.node.toFixed(1)} µs, redis ${result.cpu.redis.toFixed(1)} µs`
        progress(SUITE, `  ${shortRate(result.rate)} msgs/s, ${cpu}${result.detail === undefined ? '' : ` (${result.detail})`}`)
        const raw = c.side === 'raw'
        checks.push({
          name: `${label}, run ${run + 1}: ${raw ? 'one effect per entry' : 'one effect per unique key'}`,
          ok: raw ? result.effects === total : result.keys === load.unique && result.doubles === 0,
          detail: raw ? `${result.effects} effects for ${total} entries` : `${result.keys} keys run for ${load.unique} unique keys${result.doubles > 0 ? `, ${result.doubles} keys ran twice` : ''}`,
        })
      }
      await deleteKeysUnder(admin, prefix)
    }
  } finally {
    await deleteKeysUnder(admin, prefix)
    admin.disconnect()
  }

  const owned = await ownedPairs(options, checks)

  const find = (kind: HandlerKind, setting: Setting, side: Side): Run[] => runs.get(cases.find((c) => c.kind === kind && c.setting === setting && c.side === side)!)!
  const ratiosOf = (kind: HandlerKind, setting: Setting): number[] => {
    const raw = find(kind, setting, 'raw')
    return find(kind, setting, 'idem').map((idem, i) => idem.rate / raw[i].rate)
  }
  const tables = KINDS.map((kind) => pairTable(kind, entriesOf(kind), settings, find, ratiosOf))
  tables.push(owned.table)
  const targets: Target[] = [owned.target]
  if (settings.includes(DEFAULTS)) {
    for (const kind of KINDS) {
      const ratio = median(ratiosOf(kind, DEFAULTS))
      targets.push({
        name: `Redis Streams transport vs raw XREADGROUP/XACK, no dedup, ${HANDLERS[kind].title} (defaults: ${settingName(DEFAULTS, false)} both)`,
        goal: `>= ${HANDLERS[kind].target}x`,
        measured: `${ratio.toFixed(2)}x (${shortRate(median(find(kind, DEFAULTS, 'idem').map((r) => r.rate)))} vs ${shortRate(median(find(kind, DEFAULTS, 'raw').map((r) => r.rate)))} msgs/s)`,
        met: ratio >= HANDLERS[kind].target,
      })
    }
  }
  return { suite: SUITE, tables, checks, targets }
}

/** The rows: the defaults and half their batches in flight, or the sweep of IDEM_BENCH_STREAMS_GRID. The defaults' own object stays in the list, so targets and the engine row find it. */
function settingsToRun(): Setting[] {
  const grid = process.env.IDEM_BENCH_STREAMS_GRID
  if (grid === undefined || grid.trim() === '') return sameAs(DEFAULTS, HALF_IN_FLIGHT) ? [DEFAULTS] : [DEFAULTS, HALF_IN_FLIGHT]
  return grid.split(',').map((cell) => {
    const match = /^\s*(\d+)x(\d+)\s*$/.exec(cell)
    if (match === null) throw new Error(`IDEM_BENCH_STREAMS_GRID: "${cell}" is not COUNTxBATCHES_IN_FLIGHT (e.g. "64x1,256x2,1024x4")`)
    const setting = { count: Number(match[1]), batchesInFlight: Number(match[2]) }
    return sameAs(setting, DEFAULTS) ? DEFAULTS : setting
  })
}

function sameAs(a: Setting, b: Setting): boolean {
  return a.count === b.count && a.batchesInFlight === b.batchesInFlight
}

/** `COUNT 256, 2 in flight`, marked when it is the transport's defaults. */
function settingName(setting: Setting, markDefaults = true): string {
  return `COUNT ${setting.count}, ${setting.batchesInFlight} in flight${markDefaults && setting === DEFAULTS ? ' (defaults)' : ''}`
}

function pairTable(
  kind: HandlerKind,
  entries: number,
  settings: Setting[],
  find: (kind: HandlerKind, setting: Setting, side: Side) => Run[],
  ratiosOf: (kind: HandlerKind, setting: Setting) => number[],
): BenchTable {
  const medianOf = (list: Run[], pick: (run: Run) => number): number => median(list.map(pick))
  const rows: Row[] = settings.map((setting) => {
    const raw = find(kind, setting, 'raw')
    const idem = find(kind, setting, 'idem')
    const ratios = ratiosOf(kind, setting)
    return {
      label: settingName(setting),
      values: {
        raw: medianOf(raw, (r) => r.rate),
        idem: medianOf(idem, (r) => r.rate),
        ratios: ratios.map(formatRatio).join(' / '),
        ratio: median(ratios),
        nodeCpu: `${medianOf(raw, (r) => r.cpu.node).toFixed(1)} / ${medianOf(idem, (r) => r.cpu.node).toFixed(1)}`,
        redisCpu: `${medianOf(raw, (r) => r.cpu.redis).toFixed(1)} / ${medianOf(idem, (r) => r.cpu.redis).toFixed(1)}`,
      },
      raw: { rawRates: raw.map((r) => r.rate), idemRates: idem.map((r) => r.rate) },
    }
  })
  const notes = [
    `idem: engine with ${SHARDS} shards, threads 0, redis store (a claim and a commit per shard batch; the small ones of one turn share a script call), LRU 100k keys; the raw consumer runs the handler for every entry, idem once per key`,
    'each consumer reads the whole stream in its own consumer group; the Redis server and node share the machine',
  ]
  if (kind === 'trivial') {
    const engine = find(kind, DEFAULTS, 'engine')
    rows.push({
      label: `engine.processBatch alone, same keys, no stream (${DEFAULTS.count} per call, ${DEFAULTS.batchesInFlight} in flight)`,
      values: {
        idem: medianOf(engine, (r) => r.rate),
        nodeCpu: medianOf(engine, (r) => r.cpu.node).toFixed(1),
        redisCpu: medianOf(engine, (r) => r.cpu.redis).toFixed(1),
      },
    })
    notes.push("reading, dedup and acking share one Node thread, which is the limit: at 0.8x raw, idem could add a quarter of the raw consumer's Node CPU per entry; compare the engine row's Node CPU with that")
  } else {
    notes.push('a shard settles a batch when its slowest handler returns, so idem holds each batch for the slowest of its shard batches, and the shard batches queued behind them')
  }
  if (settings.length > 1) {
    const fastest = (side: Side): string => {
      const best = settings.reduce((a, b) => (median(find(kind, b, side).map((r) => r.rate)) > median(find(kind, a, side).map((r) => r.rate)) ? b : a))
      return `${settingName(best)} (${shortRate(median(find(kind, best, side).map((r) => r.rate)))} msgs/s)`
    }
    notes.push(`fastest idem: ${fastest('idem')}; fastest raw: ${fastest('raw')}`)
  }
  return {
    title: `Redis Streams consumer, ${HANDLERS[kind].title}, ${entries.toLocaleString('en-US')} entries with ${Math.round(DUP_RATE * 100)}% duplicates, same stream, same COUNT and batches in flight: msgs/s`,
    columns: [
      { key: 'raw', title: 'raw XREADGROUP/XACK (median)' },
      { key: 'idem', title: 'idem (median)' },
      { key: 'ratios', title: 'idem/raw of 3 runs' },
      { key: 'ratio', title: 'idem/raw (median)', format: formatRatio },
      { key: 'nodeCpu', title: 'Node CPU µs/entry raw / idem' },
      { key: 'redisCpu', title: 'Redis CPU µs/entry raw / idem' },
    ],
    rows,
    notes,
  }
}

/** One run's entries: keys from JSON bodies (json-traffic.ts), each entry's body carrying its key and position; I/O delays drawn from the run's seed. */
function makeLoad(stream: string, entries: number, run: number, io: boolean): Load {
  const traffic = new JsonTraffic({ cjkShare: CJK_SHARE, dupRate: DUP_RATE, seed: 101 + run }).next(entries)
  const bodies = traffic.keys.map((key, n) => JSON.stringify({ key, n } satisfies Body))
  const load: Load = { stream, bodies, unique: entries - traffic.repeats }
  if (io) {
    const random = seededRandom(7 + run)
    load.delays = new Uint8Array(entries)
    for (let n = 0; n < entries; n++) load.delays[n] = IO_MS[0] + (random() % (IO_MS[1] - IO_MS[0] + 1))
  }
  return load
}

async function fill(client: Redis, load: Load): Promise<void> {
  for (let i = 0; i < load.bodies.length; i += 2000) {
    const pipeline = client.pipeline()
    for (const body of load.bodies.slice(i, i + 2000)) pipeline.xadd(load.stream, '*', 'body', body)
    await pipeline.exec()
  }
}

function bodyOfEntry(entry: StreamEntry): Body {
  return JSON.parse(entry.fields.body) as Body
}

/**
 * The consumer a user would write without idem, written as well as ours: a
 * blocking reader connection, acks on a second connection, the next read sent
 * while up to batchesInFlight batches are being handled and acked. A batch's
 * handlers run at once, and it is acked (one XACK) when the last has returned.
 */
async function rawConsumer(admin: Redis, stream: string, group: string, setting: Setting, total: number, counter: EffectCounter<StreamEntry>): Promise<Run> {
  const reader = new Redis(URL_)
  const commands = new Redis(URL_)
  await commands.xgroup('CREATE', stream, group, '0')
  await Promise.all([reader.ping(), commands.ping()])
  const { handler } = counter
  let taken = 0
  const inFlight = new Set<Promise<void>>()
  const meter = await cpuMeter(admin)
  const started = performance.now()
  while (taken < total) {
    while (inFlight.size >= setting.batchesInFlight) await Promise.race(inFlight)
    const entries = entriesOfRead(await reader.call('XREADGROUP', 'GROUP', group, 'raw', 'COUNT', setting.count, 'BLOCK', 1000, 'STREAMS', stream, '>'))
    if (entries.length === 0) continue
    taken += entries.length
    const ids = new Array<string>(entries.length)
    let waits: Promise<void>[] | undefined
    for (let i = 0; i < entries.length; i++) {
      ids[i] = entries[i].id
      const wait = handler(entries[i])
      if (wait !== undefined) (waits ??= []).push(wait)
    }
    const ack = async (): Promise<void> => void (await commands.call('XACK', stream, group, ...ids))
    const batch: Promise<void> = (waits === undefined ? ack() : Promise.all(waits).then(ack)).then(() => void inFlight.delete(batch))
    inFlight.add(batch)
  }
  await Promise.all(inFlight)
  const rate = total / ((performance.now() - started) / 1000)
  const cpu = await meter(total)
  reader.disconnect()
  commands.disconnect()
  return { rate, cpu, ...tally(counter.effects) }
}

/** idem's consumer until every entry is acked; `owned`: an owned engine alone in its group (it owns every partition), reading the partition streams. */
async function idemConsumer(admin: Redis, stream: string, group: string, setting: Setting, total: number, storePrefix: string, counter: EffectCounter<StreamEntry>, owned = false): Promise<Run> {
  const engine = await createEngine({
    shards: SHARDS,
    store: { kind: 'redis', url: URL_, prefix: storePrefix },
    bloom: { expectedItems: total * 2 },
    ...(owned ? { mode: 'owned' as const, partitions: PARTITIONS, group: 'bench', ownership: { memberId: 'bench-member' } } : {}),
  })
  await warmEngine(engine)
  const meter = await cpuMeter(admin)
  const started = performance.now()
  const consumer = createStreamConsumer({
    stream,
    group,
    consumer: 'idem',
    engine,
    handler: counter.handler,
    keyOf: (entry) => (JSON.parse(entry.fields.body) as Body).key,
    count: setting.count,
    batchesInFlight: setting.batchesInFlight,
  })
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
  return { rate, cpu, ...tally(counter.effects), detail }
}

/** The engine on the same keys with no stream: processBatch of COUNT messages, batchesInFlight calls at once, the trivial handler minus its parse. */
async function engineOnly(admin: Redis, bodies: readonly string[], setting: Setting, storePrefix: string, counter: EffectCounter<StreamEntry>): Promise<Run> {
  const engine = await createEngine({ shards: SHARDS, store: { kind: 'redis', url: URL_, prefix: storePrefix }, bloom: { expectedItems: bodies.length * 2 } })
  await warmEngine(engine)
  const { effects } = counter
  const handler = (message: Message): void => void effects.set(message.key, (effects.get(message.key) ?? 0) + 1)
  // Keys as the transport hands them over (fresh strings from JSON.parse), parsed before the clock starts.
  const messages: Message[] = bodies.map((body) => ({ key: (JSON.parse(body) as Body).key }))
  const meter = await cpuMeter(admin)
  const started = performance.now()
  const calls = new Set<Promise<unknown>>()
  for (let i = 0; i < messages.length; i += setting.count) {
    while (calls.size >= setting.batchesInFlight) await Promise.race(calls)
    const call: Promise<unknown> = engine.processBatch(messages.slice(i, i + setting.count), handler).then(() => calls.delete(call))
    calls.add(call)
  }
  await Promise.all(calls)
  const rate = bodies.length / ((performance.now() - started) / 1000)
  const cpu = await meter(bodies.length)
  await engine.close()
  return { rate, cpu, ...tally(effects) }
}

/**
 * Owned mode (issue 13): the same traffic on PARTITIONS partition streams
 * (createStreamProducer), read by a raw consumer that XREADGROUPs all of them
 * at once with the same COUNT per call (split among the streams, as the owned
 * consumer splits it) and the same batches in flight, and by idem's owned
 * consumer whose engine is the only member of its group (it owns every
 * partition). Strict idem reads the same entries from one unpartitioned
 * stream in the same run, so the table says what owned mode changes on this
 * machine, not only how far it is from the raw consumer. The sides of a run
 * alternate their order from run to run; a ratio is the median of each run's
 * own ratio. --quick takes two runs (one of each order) instead of three.
 */
type OwnedSide = 'raw' | 'owned' | 'strict'

const OWNED_SIDES: readonly OwnedSide[] = ['raw', 'owned', 'strict']

const OWNED_LABELS: Record<OwnedSide, string> = {
  raw: 'raw XREADGROUP/XACK over the partition streams',
  owned: `idem owned consumer (${PARTITIONS} partitions on ${SHARDS} shards, one member)`,
  strict: 'idem strict consumer, one unpartitioned stream',
}

async function ownedPairs(options: SuiteOptions, checks: Check[]): Promise<{ table: BenchTable; target: Target }> {
  const admin = new Redis(URL_)
  const prefix = `idem-bench-streams-owned:${randomUUID()}:`
  const entries = options.quick ? HANDLERS.trivial.entries / 5 : HANDLERS.trivial.entries
  const runCount = options.quick ? 2 : RUNS
  const runs: Record<OwnedSide, Run[]> = { raw: [], owned: [], strict: [] }
  try {
    for (let run = 0; run < runCount; run++) {
      const load = makeLoad(`${prefix}s${run}`, entries, run, false)
      // The same bodies on one plain stream for strict idem (a key of its own: the partition streams are `${stream}:p${i}`).
      const plain: Load = { ...load, stream: `${prefix}plain${run}` }
      progress(SUITE, `owned run ${run + 1}/${runCount}: filling ${PARTITIONS} partition streams and one plain stream with ${entries.toLocaleString('en-US')} entries each`)
      const producer = createStreamProducer({ stream: load.stream, partitions: PARTITIONS, connection: admin, keyOf: (entry) => (JSON.parse(entry.fields.body) as Body).key })
      for (let i = 0; i < load.bodies.length; i += 2000) await producer.addMany(load.bodies.slice(i, i + 2000).map((body) => ({ body })))
      await producer.close()
      await fill(admin, plain)
      const partitionStreams = Array.from({ length: PARTITIONS }, (_, p) => partitionStreamOf(load.stream, p))
      for (const side of run % 2 === 0 ? OWNED_SIDES : [...OWNED_SIDES].reverse()) {
        progress(SUITE, `owned run ${run + 1}/${runCount}: ${side}`)
        const group = `g-${side}`
        const counter = effectCounter(bodyOfEntry, undefined)
        const storePrefix = `${prefix}${side}${run}:`
        const result =
          side === 'raw'
            ? await rawPartitioned(admin, load.stream, group, DEFAULTS, entries, counter)
            : side === 'owned'
              ? await idemConsumer(admin, load.stream, group, DEFAULTS, entries, storePrefix, counter, true)
              : await idemConsumer(admin, plain.stream, group, DEFAULTS, entries, storePrefix, counter)
        runs[side].push(result)
        progress(SUITE, `  ${shortRate(result.rate)} msgs/s, CPU per entry: node ${result.cpu.node.toFixed(1)} µs, redis ${result.cpu.redis.toFixed(1)} µs${result.detail === undefined ? '' : ` (${result.detail})`}`)
        const name = `owned streams, ${side}, run ${run + 1}`
        checks.push(
          side === 'raw'
            ? { name: `${name}: one effect per entry`, ok: result.effects === entries, detail: `${result.effects} effects for ${entries} entries` }
            : { name: `${name}: one effect per unique key`, ok: result.keys === load.unique && result.doubles === 0, detail: `${result.keys} keys run for ${load.unique} unique keys${result.doubles > 0 ? `, ${result.doubles} keys ran twice` : ''}` },
        )
        // Every entry acked, none left pending in the group: what a consumer that stopped early or lost an ack would show.
        const pending = await pendingOf(admin, side === 'strict' ? [plain.stream] : partitionStreams, group)
        checks.push({ name: `${name}: every entry acked`, ok: pending === 0, detail: `${pending} of ${entries} entries left pending in group ${group}` })
      }
      await deleteKeysUnder(admin, prefix)
    }
  } finally {
    await deleteKeysUnder(admin, prefix)
    admin.disconnect()
  }
  const rateOf = (side: OwnedSide): number => median(runs[side].map((r) => r.rate))
  const ratiosOf = (side: OwnedSide, base: OwnedSide): number[] => runs[side].map((r, i) => r.rate / runs[base][i].rate)
  const cpuOf = (side: OwnedSide, pick: (cpu: CpuPerItem) => number): string => median(runs[side].map((r) => pick(r.cpu))).toFixed(1)
  const ownedRatios = ratiosOf('owned', 'raw')
  const ratio = median(ownedRatios)
  const table: BenchTable = {
    title: `Redis Streams in owned mode, trivial handler, ${entries.toLocaleString('en-US')} entries with ${Math.round(DUP_RATE * 100)}% duplicates on ${PARTITIONS} partition streams, same COUNT and batches in flight: msgs/s`,
    columns: [
      { key: 'runs', title: `msgs/s of ${runCount} runs` },
      { key: 'rate', title: 'msgs/s (median)' },
      { key: 'ratios', title: `vs raw, ${runCount} runs` },
      { key: 'ratio', title: 'vs raw (median)', format: formatRatio },
      { key: 'nodeCpu', title: 'Node CPU µs/entry' },
      { key: 'redisCpu', title: 'Redis CPU µs/entry' },
    ],
    rows: OWNED_SIDES.map((side) => ({
      label: OWNED_LABELS[side],
      values: {
        runs: runs[side].map((r) => shortRate(r.rate)).join(' / '),
        rate: rateOf(side),
        ratios: ratiosOf(side, 'raw').map(formatRatio).join(' / '),
        ratio: median(ratiosOf(side, 'raw')),
        nodeCpu: cpuOf(side, (cpu) => cpu.node),
        redisCpu: cpuOf(side, (cpu) => cpu.redis),
      },
      raw: { rates: runs[side].map((r) => r.rate) },
    })),
    notes: [
      `${settingName(DEFAULTS, false)} for all three, COUNT split among the streams read; the raw consumer runs the handler for every entry, idem once per key`,
      `owned / strict per run: ${ratiosOf('owned', 'strict').map(formatRatio).join(' / ')}; the strict row reads one plain stream (the raw consumer over one stream is the strict tables' baseline above)`,
      'CPU per entry over the whole run; Redis CPU is the server\'s, which other clients of the shared Redis add to',
    ],
  }
  const target: Target = {
    name: 'Redis Streams in owned mode vs raw XREADGROUP/XACK over the same partition streams, trivial handler',
    goal: '>= 0.9x',
    measured: `${ratio.toFixed(2)}x (${shortRate(rateOf('owned'))} vs ${shortRate(rateOf('raw'))} msgs/s; runs ${ownedRatios.map(formatRatio).join(' / ')})`,
    met: ratio >= 0.9,
  }
  return { table, target }
}

/** Entries delivered to `group` and not acked, summed over `streams` (XPENDING's summary count). */
async function pendingOf(client: Redis, streams: readonly string[], group: string): Promise<number> {
  const pipeline = client.pipeline()
  for (const stream of streams) pipeline.call('XPENDING', stream, group)
  let pending = 0
  for (const [error, reply] of (await pipeline.exec()) ?? []) {
    if (error !== null) throw error
    pending += Number((reply as [number | string, ...unknown[]])[0])
  }
  return pending
}

/** The raw consumer of rawConsumer over every partition stream at once: one XREADGROUP of all, one XACK per stream of a batch. */
async function rawPartitioned(admin: Redis, stream: string, group: string, setting: Setting, total: number, counter: EffectCounter<StreamEntry>): Promise<Run> {
  const reader = new Redis(URL_)
  const commands = new Redis(URL_)
  const streams = Array.from({ length: PARTITIONS }, (_, p) => partitionStreamOf(stream, p))
  for (const s of streams) await commands.xgroup('CREATE', s, group, '0', 'MKSTREAM')
  const perStream = Math.max(1, Math.ceil(setting.count / PARTITIONS))
  let taken = 0
  const inFlight = new Set<Promise<void>>()
  const meter = await cpuMeter(admin)
  const started = performance.now()
  while (taken < total) {
    while (inFlight.size >= setting.batchesInFlight) await Promise.race(inFlight)
    const parts = partsOfRead(await reader.call('XREADGROUP', 'GROUP', group, 'raw', 'COUNT', perStream, 'BLOCK', 1000, 'STREAMS', ...streams, ...streams.map(() => '>')))
    if (parts.length === 0) continue
    const acks: Promise<unknown>[] = []
    for (const part of parts) {
      taken += part.entries.length
      for (const entry of part.entries) counter.handler(entry)
      acks.push(commands.call('XACK', part.stream, group, ...part.entries.map((e) => e.id)))
    }
    const batch: Promise<void> = Promise.all(acks).then(() => void inFlight.delete(batch))
    inFlight.add(batch)
  }
  await Promise.all(inFlight)
  const rate = total / ((performance.now() - started) / 1000)
  const cpu = await meter(total)
  reader.disconnect()
  commands.disconnect()
  return { rate, cpu, ...tally(counter.effects) }
}
