/**
 * NATS suite: the JetStream transport (createJetStreamConsumer: fetches of up
 * to `batch`, the engine on the redis store, one ack per message once its
 * outcome is durable) against a raw pull consumer of the same stream with
 * the same batch size (fetches of what is free of `batch`, the handler, an
 * ack each), with no dedup at all: what idempotency costs a
 * JetStream consumer. Uses the server at IDEM_BENCH_NATS (default
 * 127.0.0.1:4222) with streams of its own, deleted after, and the Redis at
 * IDEM_BENCH_REDIS under a fresh prefix, deleted after.
 *
 * Two handlers, each its own stream per run (read by one durable consumer
 * per side):
 *   - trivial: parses the message's JSON body and counts the effect. 50,000
 *     messages.
 *   - I/O: the same, then awaits 5–60 ms (setTimeout); the delay of message n
 *     is the same seeded draw on both sides. 20,000 messages.
 * --quick takes a fifth of each.
 *
 * Workload: bodies `{"key":…,"n":…}` with the keys of json-traffic.ts (mixed
 * shapes, some CJK, 30% duplicates spread through the stream), the key also
 * in an `Idem-Key` header that idem's keyOf reads (not Nats-Msg-Id: the
 * stream would drop the duplicates itself, and there would be nothing for
 * idem to do). The stream is filled before either consumer starts. msgs/s =
 * messages / wall time from the consumer's start until its last ack; the
 * ratio of a row is the median of its runs' own idem/raw ratios; the order of
 * the two sides alternates from run to run. The handler counts effects per
 * key: the raw consumer runs it for every message, idem once per unique key;
 * both are checked. nats-server, Redis and node share the machine's cores.
 */
import { randomUUID } from 'node:crypto'
import { setTimeout as sleep } from 'node:timers/promises'
import { AckPolicy, jetstream, jetstreamManager, type JetStreamManager, type JsMsg } from '@nats-io/jetstream'
import { connect, headers, type NatsConnection } from '@nats-io/transport-node'
import { createEngine } from '../src/engine.js'
import { deleteKeysUnder } from '../src/store/redis/delete-keys.js'
import { createJetStreamConsumer } from '../src/transport/nats/index.js'
import { defaults } from '../src/transport/nats/options.js'
import { connectBenchRedis, cpuMeter, type CpuPerItem } from './dup-stream.js'
import { seededRandom } from './fresh-keys.js'
import { JsonTraffic } from './json-traffic.js'
import { formatRatio, markUnclean, median, progress, shortRate, type BenchTable, type Check, type SuiteOptions, type SuiteResult, type Target } from './report.js'
import { warmEngine } from './warm-engine.js'

const SUITE = 'nats'
const SERVERS = process.env.IDEM_BENCH_NATS ?? '127.0.0.1:4222'
const REDIS_URL = process.env.IDEM_BENCH_REDIS ?? 'redis://127.0.0.1:6379'
const RUNS = 3
const DUP_RATE = 0.3
const CJK_SHARE = 0.1
const SHARDS = 8
const BATCH = defaults.batch
const KEY_HEADER = 'Idem-Key'
const IO_MS = [5, 60] as const
/** No message acked for this long means a consumer is stuck, not slow. */
const STALL_MS = 30_000
const TARGET = 0.85

type HandlerKind = 'trivial' | 'io'
const HANDLERS: Record<HandlerKind, { title: string; messages: number }> = {
  trivial: { title: 'trivial handler', messages: 50_000 },
  io: { title: `handler awaiting ${IO_MS[0]}-${IO_MS[1]} ms of I/O`, messages: 20_000 },
}
const KINDS = Object.keys(HANDLERS) as HandlerKind[]
type Side = 'raw' | 'idem'

interface Body {
  key: string
  n: number
}

interface Load {
  bodies: string[]
  keys: string[]
  unique: number
  delays?: Uint8Array
}

interface Run {
  rate: number
  cpu: CpuPerItem
  /** idem: messages per engine batch (what arrived in one turn of the event loop). */
  perBatch?: number
  effects: number
  keys: number
  doubles: number
}

export async function runNatsSuite(options: SuiteOptions): Promise<SuiteResult> {
  const redis = await connectBenchRedis(SUITE, REDIS_URL)
  let nc: NatsConnection
  try {
    nc = await connect({ servers: SERVERS })
  } catch (error) {
    redis.disconnect()
    throw new Error(`the ${SUITE} suite needs NATS with JetStream at ${SERVERS} (set IDEM_BENCH_NATS): ${(error as Error).message}`)
  }
  const jsm = await jetstreamManager(nc)
  const scope = `idem-bench-nats-${randomUUID()}`
  const streams: string[] = []
  const checks: Check[] = []
  const runs: Record<HandlerKind, Record<Side, Run[]>> = { trivial: { raw: [], idem: [] }, io: { raw: [], idem: [] } }
  const messagesOf = (kind: HandlerKind): number => (options.quick ? HANDLERS[kind].messages / 5 : HANDLERS[kind].messages)
  try {
    for (let run = 0; run < RUNS; run++) {
      for (const kind of KINDS) {
        const load = makeLoad(messagesOf(kind), run, kind === 'io')
        const stream = `${scope}-${kind}-${run}`
        streams.push(stream)
        progress(SUITE, `run ${run + 1}/${RUNS}: filling a ${kind} stream with ${load.bodies.length.toLocaleString('en-US')} messages (${load.unique.toLocaleString('en-US')} unique keys)`)
        await jsm.streams.add({ name: stream, subjects: [`${stream}.>`] })
        for (const side of ['raw', 'idem'] as const) await jsm.consumers.add(stream, { durable_name: side, ack_policy: AckPolicy.Explicit, max_ack_pending: 10_000 })
        await fill(nc, jsm, stream, load)
        const sides: Side[] = run % 2 === 0 ? ['raw', 'idem'] : ['idem', 'raw']
        for (const side of sides) {
          progress(SUITE, `run ${run + 1}/${RUNS}: ${kind}, ${side}`)
          const counter = effectCounter(load.delays)
          const result = side === 'raw' ? await rawConsumer(nc, stream, load, counter, redis) : await idemConsumer(nc, stream, load, counter, `${scope}:${kind}:${run}:`, redis)
          runs[kind][side].push(result)
          progress(SUITE, `  ${shortRate(result.rate)} msgs/s, CPU per message: node ${result.cpu.node.toFixed(1)} µs`)
          const total = load.bodies.length
          checks.push({
            name: `${kind}, ${side}, run ${run + 1}: ${side === 'raw' ? 'one effect per message' : 'one effect per unique key'}`,
            ok: side === 'raw' ? result.effects === total : result.keys === load.unique && result.doubles === 0,
            detail: side === 'raw' ? `${result.effects} effects for ${total} messages` : `${result.keys} keys run for ${load.unique} unique keys${result.doubles > 0 ? `, ${result.doubles} keys ran twice` : ''}`,
          })
        }
        await jsm.streams.delete(stream)
      }
    }
  } finally {
    for (const stream of streams) await jsm.streams.delete(stream).catch(() => {})
    await nc.close().catch(() => {})
    await deleteKeysUnder(redis, scope)
    redis.disconnect()
  }

  const ratiosOf = (kind: HandlerKind): number[] => runs[kind].idem.map((idem, i) => idem.rate / runs[kind].raw[i].rate)
  const table: BenchTable = {
    title: `JetStream consumer, ${Math.round(DUP_RATE * 100)}% duplicates, same stream, batch ${BATCH} both: msgs/s`,
    columns: [
      { key: 'raw', title: 'raw fetch loop, ack each (median)' },
      { key: 'idem', title: 'idem (median)' },
      { key: 'ratios', title: `idem/raw of ${RUNS} runs` },
      { key: 'ratio', title: 'idem/raw (median)', format: formatRatio },
      { key: 'nodeCpu', title: 'Node CPU µs/message raw / idem' },
      { key: 'perBatch', title: 'idem messages per engine batch' },
    ],
    rows: KINDS.map((kind) => ({
      label: `${HANDLERS[kind].title}, ${messagesOf(kind).toLocaleString('en-US')} messages`,
      values: {
        raw: median(runs[kind].raw.map((r) => r.rate)),
        idem: median(runs[kind].idem.map((r) => r.rate)),
        ratios: ratiosOf(kind).map(formatRatio).join(' / '),
        ratio: median(ratiosOf(kind)),
        nodeCpu: `${median(runs[kind].raw.map((r) => r.cpu.node)).toFixed(1)} / ${median(runs[kind].idem.map((r) => r.cpu.node)).toFixed(1)}`,
        perBatch: median(runs[kind].idem.map((r) => r.perBatch!)).toFixed(0),
      },
      raw: { rawRates: runs[kind].raw.map((r) => r.rate), idemRates: runs[kind].idem.map((r) => r.rate) },
    })),
    notes: [
      `idem: engine with ${SHARDS} shards, threads 0, redis store; the messages of one turn of the event loop are one engine batch, each acked as soon as its outcome is durable, at most ${BATCH} held; the raw consumer (the same fetch loop, at most ${BATCH} held) runs the handler for every message and acks it when it returns, idem once per key`,
      'nats-server, Redis and node share the machine',
    ],
  }
  const targets: Target[] = KINDS.map((kind) => {
    const ratio = median(ratiosOf(kind))
    return {
      name: `JetStream transport vs raw pull consumer, no dedup, ${HANDLERS[kind].title} (batch ${BATCH} both)`,
      goal: `>= ${TARGET}x`,
      measured: `${ratio.toFixed(2)}x (${shortRate(median(runs[kind].idem.map((r) => r.rate)))} vs ${shortRate(median(runs[kind].raw.map((r) => r.rate)))} msgs/s)`,
      met: ratio >= TARGET,
    }
  })
  return { suite: SUITE, tables: [table], checks, targets }
}

function makeLoad(messages: number, run: number, io: boolean): Load {
  const traffic = new JsonTraffic({ cjkShare: CJK_SHARE, dupRate: DUP_RATE, seed: 301 + run }).next(messages)
  const load: Load = { keys: traffic.keys, bodies: traffic.keys.map((key, n) => JSON.stringify({ key, n } satisfies Body)), unique: messages - traffic.repeats }
  if (io) {
    const random = seededRandom(17 + run)
    load.delays = new Uint8Array(messages)
    for (let n = 0; n < messages; n++) load.delays[n] = IO_MS[0] + (random() % (IO_MS[1] - IO_MS[0] + 1))
  }
  return load
}

/** Core publishes with the key in an Idem-Key header, then a wait until the stream holds them all. */
async function fill(nc: NatsConnection, jsm: JetStreamManager, stream: string, load: Load): Promise<void> {
  for (let n = 0; n < load.bodies.length; n++) {
    const h = headers()
    h.set(KEY_HEADER, load.keys[n])
    nc.publish(`${stream}.orders`, load.bodies[n], { headers: h })
    if (n % 5000 === 4999) await nc.flush()
  }
  await nc.flush()
  while ((await jsm.streams.info(stream)).state.messages < load.bodies.length) await sleep(20)
}

interface EffectCounter {
  effects: Map<string, number>
  handler: (message: JsMsg) => Promise<void> | undefined
}

function effectCounter(delays: Uint8Array | undefined): EffectCounter {
  const effects = new Map<string, number>()
  const handler = (message: JsMsg): Promise<void> | undefined => {
    const body = message.json<Body>()
    effects.set(body.key, (effects.get(body.key) ?? 0) + 1)
    return delays === undefined ? undefined : sleep(delays[body.n])
  }
  return { effects, handler }
}

function tally(effects: Map<string, number>): Pick<Run, 'effects' | 'keys' | 'doubles'> {
  let runs = 0
  let doubles = 0
  for (const n of effects.values()) {
    runs += n
    if (n > 1) doubles++
  }
  return { effects: runs, keys: effects.size, doubles }
}

/**
 * The consumer a user would write without idem, holding what idem holds: a
 * fetch of what is free of BATCH once half of it is free, the handler per
 * message as it arrives, an ack when it returns. (consume() would pull again
 * as messages arrive, not as they are acked: with slow handlers it holds up to
 * the consumer's max_ack_pending, so it would not be the same batch size.)
 */
async function rawConsumer(nc: NatsConnection, stream: string, load: Load, counter: EffectCounter, redis: Parameters<typeof cpuMeter>[0]): Promise<Run> {
  const consumer = await jetstream(nc).consumers.get(stream, 'raw')
  const total = load.bodies.length
  let acked = 0
  let held = 0
  let room: (() => void) | undefined
  let finished = 0
  let fetching: Awaited<ReturnType<typeof consumer.fetch>> | undefined
  const ack = (message: JsMsg): void => {
    message.ack()
    held--
    // The last ack ends the run: the fetch still open waits out its expiry for messages that will not come.
    if (++acked === total) {
      finished = performance.now()
      void fetching?.close()
    }
    room?.()
  }
  const meter = await cpuMeter(redis)
  const started = performance.now()
  while (acked < total) {
    while (held > BATCH / 2) await new Promise<void>((resolve) => (room = resolve))
    if (acked + held >= total) {
      await new Promise<void>((resolve) => (room = resolve))
      continue
    }
    fetching = await consumer.fetch({ max_messages: BATCH - held, expires: 1000 })
    for await (const message of fetching) {
      held++
      const wait = counter.handler(message)
      if (wait === undefined) ack(message)
      else void wait.then(() => ack(message))
    }
  }
  const rate = total / ((finished - started) / 1000)
  const cpu = await meter(total)
  return { rate, cpu, ...tally(counter.effects) }
}

async function idemConsumer(nc: NatsConnection, stream: string, load: Load, counter: EffectCounter, storePrefix: string, redis: Parameters<typeof cpuMeter>[0]): Promise<Run> {
  const total = load.bodies.length
  const engine = await createEngine({ shards: SHARDS, store: { kind: 'redis', url: REDIS_URL, prefix: storePrefix }, bloom: { expectedItems: total * 2 } })
  await warmEngine(engine)
  const meter = await cpuMeter(redis)
  const started = performance.now()
  const consumer = createJetStreamConsumer({ connection: nc, stream, consumer: 'idem', engine, batch: BATCH, keyOf: (message) => message.headers?.get(KEY_HEADER), handler: counter.handler })
  let lastAcked = 0
  let lastProgress = performance.now()
  let finished = 0
  try {
    await new Promise<void>((resolve, reject) => {
      const poll = setInterval(() => {
        const { acked, terminated } = consumer.stats()
        if (acked + terminated >= total) {
          finished = performance.now()
          clearInterval(poll)
          resolve()
        } else if (acked > lastAcked) {
          lastAcked = acked
          lastProgress = performance.now()
        } else if (performance.now() - lastProgress > STALL_MS) {
          clearInterval(poll)
          markUnclean()
          reject(new Error(`idem jetstream consumer stuck at ${acked} of ${total} acked: ${JSON.stringify(consumer.stats())}`))
        }
      }, 5)
    })
  } finally {
    await consumer.close()
    await engine.close()
  }
  const rate = total / ((finished - started) / 1000)
  const cpu = await meter(total)
  return { rate, cpu, perBatch: total / consumer.stats().batches, ...tally(counter.effects) }
}
