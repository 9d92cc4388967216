/**
 * AMQP suite: the RabbitMQ transport (createAmqpConsumer: the engine on the
 * redis store, one ack per delivery once its outcome is durable) against a
 * raw amqplib consumer of the same queue with the same prefetch that acks
 * each message after its handler, with no dedup at all: what idempotency
 * costs a RabbitMQ consumer. Uses the broker at IDEM_BENCH_AMQP (default
 * amqp://guest:guest@127.0.0.1:5672) with queues of its own, deleted after,
 * and the Redis at IDEM_BENCH_REDIS under a fresh prefix, deleted after.
 *
 * Two handlers, each its own pair of queues per run:
 *   - trivial: parses the message's JSON body and counts the effect, so the
 *     consumer's own cost is all there is to see. 50,000 messages.
 *   - I/O: the same, then awaits 5–60 ms (setTimeout), as a call to a
 *     database or an API does; the delay of message n is the same seeded draw
 *     on both sides. 20,000 messages.
 * --quick takes a fifth of each.
 *
 * Workload: bodies `{"key":…,"n":…}` with the keys of json-traffic.ts (mixed
 * shapes, some CJK, 30% duplicates spread through the queue); the key also
 * travels as messageId, as createAmqpPublisher sends it, and idem reads it
 * there (its default keyOf). Both queues of a run are filled before either
 * consumer starts, so both read a full queue from the broker. msgs/s =
 * messages / wall time from the consumer's start until its last ack; the
 * ratio of a row is the median of its runs' own idem/raw ratios; the order of
 * the two sides alternates from run to run. The handler counts effects per
 * key: the raw consumer runs it for every message, idem once per unique key;
 * both are checked. RabbitMQ, Redis and node share the machine's cores.
 */
import { randomUUID } from 'node:crypto'
import { setTimeout as sleep } from 'node:timers/promises'
import { connect, type ChannelModel, type ConsumeMessage } from 'amqplib'
import { createEngine } from '../src/engine.js'
import { deleteKeysUnder } from '../src/store/redis/delete-keys.js'
import { createAmqpConsumer, delayQueueOf } from '../src/transport/amqp/index.js'
import { defaults } from '../src/transport/amqp/options.js'
import { connectBenchRedis, cpuMeter, type CpuPerItem } from './dup-stream.js'
import { seededRandom } from './fresh-keys.js'
import { JsonTraffic } from './json-traffic.js'
import { formatRatio, markUnclean, median, progress, shortRate, type BenchTable, type Check, type SuiteOptions, type SuiteResult, type Target } from './report.js'
import { warmEngine } from './warm-engine.js'

const SUITE = 'amqp'
const AMQP_URL = process.env.IDEM_BENCH_AMQP ?? 'amqp://guest:guest@127.0.0.1:5672'
const REDIS_URL = process.env.IDEM_BENCH_REDIS ?? 'redis://127.0.0.1:6379'
const RUNS = 3
const DUP_RATE = 0.3
const CJK_SHARE = 0.1
const SHARDS = 8
const PREFETCH = defaults.prefetch
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

export async function runAmqpSuite(options: SuiteOptions): Promise<SuiteResult> {
  const redis = await connectBenchRedis(SUITE, REDIS_URL)
  let broker: ChannelModel
  try {
    broker = await connect(AMQP_URL)
  } catch (error) {
    redis.disconnect()
    throw new Error(`the ${SUITE} suite needs RabbitMQ at ${AMQP_URL} (set IDEM_BENCH_AMQP): ${(error as Error).message}`)
  }
  const scope = `idem-bench-amqp-${randomUUID()}`
  const queues: string[] = []
  const checks: Check[] = []
  const runs: Record<HandlerKind, Record<Side, Run[]>> = { trivial: { raw: [], idem: [] }, io: { raw: [], idem: [] } }
  const messagesOf = (kind: HandlerKind): number => (options.quick ? HANDLERS[kind].messages / 5 : HANDLERS[kind].messages)
  const admin = await broker.createConfirmChannel()
  try {
    for (let run = 0; run < RUNS; run++) {
      for (const kind of KINDS) {
        const load = makeLoad(messagesOf(kind), run, kind === 'io')
        const sides: Side[] = run % 2 === 0 ? ['raw', 'idem'] : ['idem', 'raw']
        const queueOf = (side: Side): string => `${scope}.${kind}.${run}.${side}`
        progress(SUITE, `run ${run + 1}/${RUNS}: filling two ${kind} queues with ${load.bodies.length.toLocaleString('en-US')} messages each (${load.unique.toLocaleString('en-US')} unique keys)`)
        for (const side of sides) {
          const queue = queueOf(side)
          queues.push(queue, delayQueueOf(queue, defaults.inFlightDelayMs), delayQueueOf(queue, defaults.retryDelayMs))
          await admin.assertQueue(queue, { durable: true })
          await fill(admin, queue, load)
        }
        for (const side of sides) {
          progress(SUITE, `run ${run + 1}/${RUNS}: ${kind}, ${side}`)
          const counter = effectCounter(load.delays)
          const result = side === 'raw' ? await rawConsumer(broker, queueOf(side), load, counter, redis) : await idemConsumer(queueOf(side), load, counter, `${scope}:${kind}:${run}:`, redis)
          runs[kind][side].push(result)
          progress(SUITE, `  ${shortRate(result.rate)} msgs/s, CPU per message: node ${result.cpu.node.toFixed(1)} µs`)
          const total = load.bodies.length
          checks.push({
            name: `${kind}, ${side}, run ${run + 1}: ${side === 'raw' ? 'one effect per message' : 'one effect per unique key'}`,
            ok: side === 'raw' ? result.effects === total : result.keys === load.unique && result.doubles === 0,
            detail: side === 'raw' ? `${result.effects} effects for ${total} messages` : `${result.keys} keys run for ${load.unique} unique keys${result.doubles > 0 ? `, ${result.doubles} keys ran twice` : ''}`,
          })
        }
      }
    }
  } finally {
    // A delay queue and its exchange share a name; deleting an exchange that was never declared is a no-op.
    for (const queue of queues) {
      await admin.deleteQueue(queue).catch(() => {})
      await admin.deleteExchange(queue).catch(() => {})
    }
    await broker.close().catch(() => {})
    await deleteKeysUnder(redis, scope)
    redis.disconnect()
  }

  const ratiosOf = (kind: HandlerKind): number[] => runs[kind].idem.map((idem, i) => idem.rate / runs[kind].raw[i].rate)
  const table: BenchTable = {
    title: `RabbitMQ consumer, ${Math.round(DUP_RATE * 100)}% duplicates, same queue contents, prefetch ${PREFETCH} both: msgs/s`,
    columns: [
      { key: 'raw', title: 'raw amqplib, ack each (median)' },
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
      `idem: engine with ${SHARDS} shards, threads 0, redis store; the deliveries of one turn of the event loop are one engine batch, each acked as soon as its outcome is durable; the raw consumer runs the handler for every message and acks it when it returns, idem once per key`,
      'RabbitMQ, Redis and node share the machine',
    ],
  }
  const targets: Target[] = KINDS.map((kind) => {
    const ratio = median(ratiosOf(kind))
    return {
      name: `RabbitMQ transport vs raw amqplib consumer, no dedup, ${HANDLERS[kind].title} (prefetch ${PREFETCH} both)`,
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

/** Persistent messages with the key as messageId, confirmed in chunks. */
async function fill(channel: Awaited<ReturnType<ChannelModel['createConfirmChannel']>>, queue: string, load: Load): Promise<void> {
  for (let i = 0; i < load.bodies.length; i += 5000) {
    for (let j = i; j < Math.min(i + 5000, load.bodies.length); j++) channel.sendToQueue(queue, Buffer.from(load.bodies[j]), { messageId: load.keys[j], persistent: true })
    await channel.waitForConfirms()
  }
}

interface EffectCounter {
  effects: Map<string, number>
  handler: (message: ConsumeMessage) => Promise<void> | undefined
}

function effectCounter(delays: Uint8Array | undefined): EffectCounter {
  const effects = new Map<string, number>()
  const handler = (message: ConsumeMessage): Promise<void> | undefined => {
    const body = JSON.parse(message.content.toString()) as Body
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

/** The consumer a user would write without idem: the same prefetch, the handler per delivery, an ack when it returns. */
async function rawConsumer(broker: ChannelModel, queue: string, load: Load, counter: EffectCounter, redis: Parameters<typeof cpuMeter>[0]): Promise<Run> {
  const channel = await broker.createChannel()
  await channel.prefetch(PREFETCH)
  const total = load.bodies.length
  let acked = 0
  const meter = await cpuMeter(redis)
  const started = performance.now()
  await new Promise<void>((resolve) => {
    const ack = (message: ConsumeMessage): void => {
      channel.ack(message)
      if (++acked === total) resolve()
    }
    void channel.consume(queue, (message) => {
      if (message === null) return
      const wait = counter.handler(message)
      if (wait === undefined) ack(message)
      else void wait.then(() => ack(message))
    })
  })
  const rate = total / ((performance.now() - started) / 1000)
  const cpu = await meter(total)
  await channel.close()
  return { rate, cpu, ...tally(counter.effects) }
}

async function idemConsumer(queue: string, load: Load, counter: EffectCounter, storePrefix: string, redis: Parameters<typeof cpuMeter>[0]): Promise<Run> {
  const total = load.bodies.length
  const engine = await createEngine({ shards: SHARDS, store: { kind: 'redis', url: REDIS_URL, prefix: storePrefix }, bloom: { expectedItems: total * 2 } })
  await warmEngine(engine)
  const meter = await cpuMeter(redis)
  const started = performance.now()
  const consumer = createAmqpConsumer({ url: AMQP_URL, queue, engine, prefetch: PREFETCH, handler: counter.handler })
  let lastAcked = 0
  let lastProgress = performance.now()
  let finished = 0
  try {
    await new Promise<void>((resolve, reject) => {
      const poll = setInterval(() => {
        const { acked, deadLettered } = consumer.stats()
        if (acked + deadLettered >= total) {
          finished = performance.now()
          clearInterval(poll)
          resolve()
        } else if (acked > lastAcked) {
          lastAcked = acked
          lastProgress = performance.now()
        } else if (performance.now() - lastProgress > STALL_MS) {
          clearInterval(poll)
          markUnclean()
          reject(new Error(`idem amqp consumer stuck at ${acked} of ${total} acked: ${JSON.stringify(consumer.stats())}`))
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
