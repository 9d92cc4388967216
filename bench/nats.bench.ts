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
import { brokerResults, checkOf, DUP_RATE, effectCounter, emptyRuns, KINDS, makeLoad, messagesOf, RUNS, settledAt, SHARDS, sidesOf, tally, type Body, type EffectCounter, type Load, type Run } from './broker-bench.js'
import { connectBenchRedis, cpuMeter } from './dup-stream.js'
import { progress, shortRate, type Check, type SuiteOptions, type SuiteResult } from './report.js'
import { warmEngine } from './warm-engine.js'

const SUITE = 'nats'
const SERVERS = process.env.IDEM_BENCH_NATS ?? '127.0.0.1:4222'
const REDIS_URL = process.env.IDEM_BENCH_REDIS ?? 'redis://127.0.0.1:6379'
const BATCH = defaults.batch
const KEY_HEADER = 'Idem-Key'

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
  const runs = emptyRuns()
  try {
    for (let run = 0; run < RUNS; run++) {
      for (const kind of KINDS) {
        const load = makeLoad(messagesOf(kind, options.quick), run, kind === 'io')
        const stream = `${scope}-${kind}-${run}`
        streams.push(stream)
        progress(SUITE, `run ${run + 1}/${RUNS}: filling a ${kind} stream with ${load.bodies.length.toLocaleString('en-US')} messages (${load.unique.toLocaleString('en-US')} unique keys)`)
        await jsm.streams.add({ name: stream, subjects: [`${stream}.>`] })
        for (const side of ['raw', 'idem'] as const) await jsm.consumers.add(stream, { durable_name: side, ack_policy: AckPolicy.Explicit, max_ack_pending: 10_000 })
        await fill(nc, jsm, stream, load)
        for (const side of sidesOf(run)) {
          progress(SUITE, `run ${run + 1}/${RUNS}: ${kind}, ${side}`)
          const counter = effectCounter((message: JsMsg) => message.json<Body>(), load.delays)
          const result = side === 'raw' ? await rawConsumer(nc, stream, load, counter, redis) : await idemConsumer(nc, stream, load, counter, `${scope}:${kind}:${run}:`, redis)
          runs[kind][side].push(result)
          progress(SUITE, `  ${shortRate(result.rate)} msgs/s, CPU per message: node ${result.cpu.node.toFixed(1)} µs`)
          checks.push(checkOf(kind, side, run, load, result))
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

  const { table, targets } = brokerResults(runs, options.quick, {
    title: `JetStream consumer, ${Math.round(DUP_RATE * 100)}% duplicates, same stream, batch ${BATCH} both: msgs/s`,
    rawColumn: 'raw fetch loop, ack each (median)',
    notes: [
      `idem: engine with ${SHARDS} shards, threads 0, redis store; the messages of one turn of the event loop are one engine batch, each acked as soon as its outcome is durable, at most ${BATCH} held; the raw consumer (the same fetch loop, at most ${BATCH} held) runs the handler for every message and acks it when it returns, idem once per key`,
      'nats-server, Redis and node share the machine',
    ],
    targetName: (handler) => `JetStream transport vs raw pull consumer, no dedup, ${handler} (batch ${BATCH} both)`,
  })
  return { suite: SUITE, tables: [table], checks, targets }
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

/**
 * The consumer a user would write without idem, holding what idem holds: a
 * fetch of what is free of BATCH once half of it is free, the handler per
 * message as it arrives, an ack when it returns. (consume() would pull again
 * as messages arrive, not as they are acked: with slow handlers it holds up to
 * the consumer's max_ack_pending, so it would not be the same batch size.)
 */
async function rawConsumer(nc: NatsConnection, stream: string, load: Load, counter: EffectCounter<JsMsg>, redis: Parameters<typeof cpuMeter>[0]): Promise<Run> {
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

async function idemConsumer(nc: NatsConnection, stream: string, load: Load, counter: EffectCounter<JsMsg>, storePrefix: string, redis: Parameters<typeof cpuMeter>[0]): Promise<Run> {
  const total = load.bodies.length
  const engine = await createEngine({ shards: SHARDS, store: { kind: 'redis', url: REDIS_URL, prefix: storePrefix }, bloom: { expectedItems: total * 2 } })
  await warmEngine(engine)
  const meter = await cpuMeter(redis)
  const started = performance.now()
  const consumer = createJetStreamConsumer({ connection: nc, stream, consumer: 'idem', engine, batch: BATCH, keyOf: (message) => message.headers?.get(KEY_HEADER), handler: counter.handler })
  let finished: number
  try {
    finished = await settledAt(() => consumer.stats(), (stats) => stats.acked + stats.terminated, total, 'jetstream')
  } finally {
    await consumer.close()
    await engine.close()
  }
  const rate = total / ((finished - started) / 1000)
  const cpu = await meter(total)
  return { rate, cpu, perBatch: total / consumer.stats().batches, ...tally(counter.effects) }
}
