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
import { connect, type ChannelModel, type ConsumeMessage } from 'amqplib'
import { createEngine } from '../src/engine.js'
import { deleteKeysUnder } from '../src/store/redis/delete-keys.js'
import { createAmqpConsumer, delayQueueOf } from '../src/transport/amqp/index.js'
import { defaults } from '../src/transport/amqp/options.js'
import { brokerResults, checkOf, DUP_RATE, effectCounter, emptyRuns, KINDS, makeLoad, messagesOf, RUNS, settledAt, SHARDS, sidesOf, tally, type Body, type EffectCounter, type Load, type Run, type Side } from './broker-bench.js'
import { connectBenchRedis, cpuMeter } from './dup-stream.js'
import { progress, shortRate, type Check, type SuiteOptions, type SuiteResult } from './report.js'
import { warmEngine } from './warm-engine.js'

const SUITE = 'amqp'
const AMQP_URL = process.env.IDEM_BENCH_AMQP ?? 'amqp://guest:guest@127.0.0.1:5672'
const REDIS_URL = process.env.IDEM_BENCH_REDIS ?? 'redis://127.0.0.1:6379'
const PREFETCH = defaults.prefetch

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
  const runs = emptyRuns()
  const admin = await broker.createConfirmChannel()
  try {
    for (let run = 0; run < RUNS; run++) {
      for (const kind of KINDS) {
        const load = makeLoad(messagesOf(kind, options.quick), run, kind === 'io')
        const sides = sidesOf(run)
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
          const counter = effectCounter((message: ConsumeMessage) => JSON.parse(message.content.toString()) as Body, load.delays)
          const result = side === 'raw' ? await rawConsumer(broker, queueOf(side), load, counter, redis) : await idemConsumer(queueOf(side), load, counter, `${scope}:${kind}:${run}:`, redis)
          runs[kind][side].push(result)
          progress(SUITE, `  ${shortRate(result.rate)} msgs/s, CPU per message: node ${result.cpu.node.toFixed(1)} µs`)
          checks.push(checkOf(kind, side, run, load, result))
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

  const { table, targets } = brokerResults(runs, options.quick, {
    title: `RabbitMQ consumer, ${Math.round(DUP_RATE * 100)}% duplicates, same queue contents, prefetch ${PREFETCH} both: msgs/s`,
    rawColumn: 'raw amqplib, ack each (median)',
    notes: [
      `idem: engine with ${SHARDS} shards, threads 0, redis store; the deliveries of one turn of the event loop are one engine batch, each acked as soon as its outcome is durable; the raw consumer runs the handler for every message and acks it when it returns, idem once per key`,
      'RabbitMQ, Redis and node share the machine',
    ],
    targetName: (handler) => `RabbitMQ transport vs raw amqplib consumer, no dedup, ${handler} (prefetch ${PREFETCH} both)`,
  })
  return { suite: SUITE, tables: [table], checks, targets }
}

/** Persistent messages with the key as messageId, confirmed in chunks. */
async function fill(channel: Awaited<ReturnType<ChannelModel['createConfirmChannel']>>, queue: string, load: Load): Promise<void> {
  for (let i = 0; i < load.bodies.length; i += 5000) {
    for (let j = i; j < Math.min(i + 5000, load.bodies.length); j++) channel.sendToQueue(queue, Buffer.from(load.bodies[j]), { messageId: load.keys[j], persistent: true })
    await channel.waitForConfirms()
  }
}

/** The consumer a user would write without idem: the same prefetch, the handler per delivery, an ack when it returns. */
async function rawConsumer(broker: ChannelModel, queue: string, load: Load, counter: EffectCounter<ConsumeMessage>, redis: Parameters<typeof cpuMeter>[0]): Promise<Run> {
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

async function idemConsumer(queue: string, load: Load, counter: EffectCounter<ConsumeMessage>, storePrefix: string, redis: Parameters<typeof cpuMeter>[0]): Promise<Run> {
  const total = load.bodies.length
  const engine = await createEngine({ shards: SHARDS, store: { kind: 'redis', url: REDIS_URL, prefix: storePrefix }, bloom: { expectedItems: total * 2 } })
  await warmEngine(engine)
  const meter = await cpuMeter(redis)
  const started = performance.now()
  const consumer = createAmqpConsumer({ url: AMQP_URL, queue, engine, prefetch: PREFETCH, handler: counter.handler })
  let finished: number
  try {
    finished = await settledAt(() => consumer.stats(), (stats) => stats.acked + stats.deadLettered, total, 'amqp')
  } finally {
    await consumer.close()
    await engine.close()
  }
  const rate = total / ((finished - started) / 1000)
  const cpu = await meter(total)
  return { rate, cpu, perBatch: total / consumer.stats().batches, ...tally(counter.effects) }
}
